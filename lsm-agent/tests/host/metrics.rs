//! The Prometheus endpoint end to end, without root: the exporter on 127.0.0.1:0, events
//! recorded through the daemon's code path (ProcessCache::convert → EventMetrics::record), a
//! real GetEvents client that falls behind, the DNS resolver with a failing lookup, and an
//! agent whose "kernel" is a fake map writer. `/metrics` is scraped over HTTP.
//!
//! One test per binary: the recorder is process-global.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use lsm_agent::{
    agent::{self, Agent, MapWriter, Source},
    bpf::BpfError,
    dns::{self, Answer, DnsError, DnsStatus, Lookup},
    events::{
        bus::EventBus,
        decode::{HookData, KPath, KernelEvent},
        enrich::ProcessCache,
        model::{Event, EventKind, Exec, Process, Time},
        reader::ReaderStats,
    },
    grpc::{
        self, PolicyApi,
        proto::tetragon::{
            GetEventsRequest, fine_guidance_sensors_client::FineGuidanceSensorsClient,
        },
    },
    metrics::{self as m, Collector, EventMetrics, Sample, Sources, parse_exposition},
    policy::{compile::MapImage, ir::HostNs, parse::parse_policy},
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The kernel side: remembers the slots of the applied image and reports `override` and
/// `post` counts of `per_slot` for each, plus fixed `STAT_*` values.
struct FakeKernel {
    slots: Arc<Mutex<Vec<u32>>>,
    per_slot: Arc<AtomicU64>,
}

impl MapWriter for FakeKernel {
    fn apply(&mut self, img: &MapImage) -> Result<(), BpfError> {
        *self.slots.lock().unwrap() = img.slots.keys().copied().collect();
        Ok(())
    }

    fn kernel_stats(&self) -> Option<[u64; lsm_shared::NUM_STATS as usize]> {
        let mut s = [0; lsm_shared::NUM_STATS as usize];
        s[lsm_shared::STAT_RING_LOST as usize] = 7;
        s[lsm_shared::STAT_PATH_UNRESOLVED as usize] = 3;
        s[lsm_shared::STAT_PATH_WALKED as usize] = 11;
        s[lsm_shared::STAT_MATCHES as usize] = 13;
        s[lsm_shared::STAT_DENIED as usize] = 5;
        Some(s)
    }

    fn program_stats(&self) -> Vec<lsm_agent::agent::ProgramStats> {
        vec![lsm_agent::agent::ProgramStats {
            program: "file_open".into(),
            kind: "lsm",
            runs: 40,
            run_time: std::time::Duration::from_micros(3),
        }]
    }

    fn canary(&mut self) -> Vec<lsm_agent::agent::HookCanary> {
        use lsm_agent::agent::{HookCanary, Verdict};
        vec![
            HookCanary {
                hook: "file_open",
                verdict: Verdict::Denied,
            },
            HookCanary {
                hook: "file_permission",
                verdict: Verdict::Failed("not denied".into()),
            },
        ]
    }

    fn counters(&self) -> BTreeMap<u32, lsm_shared::ActionCounters> {
        let n = self.per_slot.load(Ordering::Relaxed);
        let mut c = lsm_shared::ActionCounters::default();
        c.c[lsm_shared::CNT_POST] = n;
        c.c[lsm_shared::CNT_OVERRIDE] = n;
        self.slots.lock().unwrap().iter().map(|&i| (i, c)).collect()
    }
}

struct FailingLookup;

impl Lookup for FailingLookup {
    async fn lookup_ip(&self, _name: &str) -> Answer {
        Err(DnsError::Server("SERVFAIL".into()))
    }
}

const DENY_SHADOW: &str = r#"
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: "deny-shadow"
spec:
  lsmhooks:
  - hook: "file_open"
    args:
    - index: 0
      type: "file"
    selectors:
    - matchArgs:
      - index: 0
        operator: "Equal"
        values:
        - "/etc/shadow"
      matchActions:
      - action: Override
        argError: -1
"#;

const DNS_EGRESS: &str = r#"
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: "dns-egress"
spec:
  kprobes:
  - call: "tcp_connect"
    syscall: false
    args:
    - index: 0
      type: "sock"
    selectors:
    - matchArgs:
      - index: 0
        operator: "DAddr"
        values:
        - "dns:fail.test"
      matchActions:
      - action: Sigkill
"#;

/// `GET path` over a fresh connection: status code, content type, body.
async fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_default();
    (status, content_type, body.to_owned())
}

async fn scrape(addr: SocketAddr) -> Vec<Sample> {
    let (status, content_type, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    parse_exposition(&body)
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    m::sample_value(samples, name, labels)
}

fn exec(i: usize) -> Event {
    Event {
        node_name: String::new(),
        time: Time::default(),
        kind: EventKind::Exec(Exec {
            process: Process {
                binary: format!("/bin/{i}"),
                ..Default::default()
            },
            parent: None,
        }),
    }
}

#[tokio::test]
async fn scrape_reports_what_the_daemon_records() {
    let handle = m::install().expect("first recorder of this process");

    // The agent, with two policies and a fake kernel.
    let slots = Arc::new(Mutex::new(Vec::new()));
    let per_slot = Arc::new(AtomicU64::new(4));
    let kernel = FakeKernel {
        slots: slots.clone(),
        per_slot: per_slot.clone(),
    };
    let (owner, agent) = agent::owner(Agent::new(Box::new(kernel), HostNs::default()));
    tokio::spawn(owner.run());
    for yaml in [DENY_SHADOW, DNS_EGRESS] {
        let p = parse_policy(yaml, std::path::Path::new("<test>")).unwrap();
        agent.add(p, Source::Grpc).await.unwrap();
    }
    agent.canary().await.unwrap();

    // DNS: the name the policies use fails to resolve.
    let dns_status = DnsStatus::new();
    let resolver = tokio::spawn(dns::run(
        agent.clone(),
        FailingLookup,
        dns_status.clone(),
        Default::default(),
    ));

    // The gRPC server with a client that never reads.
    let bus = EventBus::new(4);
    let listeners = grpc::bind("127.0.0.1:0").await.unwrap();
    let grpc_addr = listeners.local_addrs()[0];
    let control: Arc<dyn PolicyApi> = Arc::new(agent.clone());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(grpc::serve_listeners(
        listeners,
        bus.clone(),
        control,
        async {
            let _ = stop_rx.await;
        },
    ));
    let mut client = FineGuidanceSensorsClient::connect(format!("http://{grpc_addr}"))
        .await
        .unwrap();
    let stream = client
        .get_events(GetEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    // Published without yielding: the client's forwarder falls more than 4 events behind.
    for i in 0..100 {
        bus.publish(exec(i));
    }

    // The metrics endpoint, as the daemon starts it.
    let reader = Arc::new(ReaderStats::default());
    reader.received.store(1234, Ordering::Relaxed);
    reader.queue_lost.store(2, Ordering::Relaxed);
    let collector = Collector::new(Sources {
        agent: Some(agent.clone()),
        reader: Some(reader.clone()),
        bus: Some(bus.clone()),
        dns: Some(dns_status.clone()),
        export_lost: Some(Arc::new(|| 6)),
    });
    let metrics_listeners = m::bind("127.0.0.1:0").await.unwrap();
    let addr = metrics_listeners.local_addrs()[0];
    tokio::spawn(m::serve(
        metrics_listeners,
        handle,
        collector,
        std::future::pending(),
    ));

    // The event loop's path: a denied open of /etc/shadow by this process.
    let img = agent.image();
    let (&idx, _) = img
        .slots
        .iter()
        .find(|(_, s)| s.policy_name == "deny-shadow")
        .unwrap();
    let max = lsm_shared::MAX_SELECTORS;
    let ev = KernelEvent::Hook(HookData {
        ktime: 1,
        cgroup_id: 0,
        pid: std::process::id(),
        tgid: std::process::id(),
        hook: idx / max,
        fired: 1 << (idx % max),
        posted: 1 << (idx % max),
        retval: -1,
        flags: 0,
        owner: 0,
        point: 0,
        args: [0; lsm_shared::MAX_ARGS],
        retarg: 0,
        data: [0; lsm_shared::NUM_DATA],
        strs: [
            Some(KPath {
                path: "/etc/shadow".into(),
                unresolved: false,
                walked: false,
                bytes: Vec::new(),
            }),
            None,
            None,
            None,
            None,
        ],
        net: None,
    });
    let mut cache = ProcessCache::new("node".into(), None);
    let mut events = EventMetrics::new();
    let out = cache.convert(&ev, &img);
    assert_eq!(out.len(), 1);
    events.record(&ev, &out);
    events.set_process_cache_size(cache.len());
    let me = std::fs::read_link("/proc/self/exe").unwrap();
    let me = me.to_string_lossy();

    // Wait for the asynchronous parts (resolver failure, the client's lag being noticed).
    let mut samples = Vec::new();
    for _ in 0..100 {
        samples = scrape(addr).await;
        let dropped = value(&samples, m::SUBSCRIBER_DROPPED, &[("client", "127.0.0.1")]);
        let failed = value(&samples, m::DNS_FAILURES, &[("name", "fail.test")]);
        if dropped.is_some() && failed.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let v = |name: &str, labels: &[(&str, &str)]| value(&samples, name, labels);
    assert_eq!(v(m::EVENTS, &[("type", "PROCESS_LSM")]), Some(1.0));
    assert_eq!(v(m::EVENTS, &[("type", "PROCESS_EXEC")]), Some(0.0));
    assert_eq!(
        v(
            m::POLICY_EVENTS,
            &[("policy", "deny-shadow"), ("hook", "lsm:file_open")]
        ),
        Some(1.0)
    );
    assert_eq!(
        v(m::OPERATIONS_DENIED_BY_BINARY, &[("binary", &me)]),
        Some(1.0)
    );
    assert_eq!(v(m::PROCESS_CACHE_SIZE, &[]), Some(cache.len() as f64));
    let action = |policy: &str, action: &str, samples: &[Sample]| {
        value(
            samples,
            m::POLICY_ACTIONS,
            &[
                ("policy", policy),
                ("policy_namespace", ""),
                ("action", action),
            ],
        )
    };
    assert_eq!(action("deny-shadow", "override", &samples), Some(4.0));
    assert_eq!(action("deny-shadow", "post", &samples), Some(4.0));
    assert_eq!(action("deny-shadow", "signal", &samples), Some(0.0));
    assert_eq!(
        v(m::TRACINGPOLICY_LOADED, &[("state", "enabled")]),
        Some(2.0)
    );
    assert_eq!(
        v(m::TRACINGPOLICY_LOADED, &[("state", "disabled")]),
        Some(0.0)
    );
    assert_eq!(v(m::RINGBUF_LOST, &[]), Some(7.0));
    assert_eq!(v(m::RINGBUF_RECEIVED, &[]), Some(1234.0));
    assert_eq!(v(m::RINGBUF_QUEUE_LOST, &[]), Some(2.0));
    assert_eq!(v(m::RINGBUF_DECODE_ERRORS, &[]), Some(0.0));
    assert_eq!(v(m::PATHS_UNRESOLVED, &[]), Some(3.0));
    assert_eq!(v(m::PATHS_WALKED, &[]), Some(11.0));
    assert_eq!(v(m::SELECTOR_MATCHES, &[]), Some(13.0));
    assert_eq!(v(m::OPERATIONS_DENIED, &[]), Some(5.0));
    let program = [("program", "file_open"), ("kind", "lsm")];
    assert_eq!(v(m::PROGRAM_RUNS, &program), Some(40.0));
    assert_eq!(v(m::PROGRAM_NANOSECONDS, &program), Some(3000.0));
    assert_eq!(v(m::HOOK_ENFORCING, &[("hook", "file_open")]), Some(1.0));
    assert_eq!(v(m::EXPORT_LOST, &[]), Some(6.0));
    assert_eq!(
        v(m::HOOK_ENFORCING, &[("hook", "file_permission")]),
        Some(0.0)
    );
    assert_eq!(v(m::SUBSCRIBERS, &[]), Some(1.0));
    let dropped = v(m::SUBSCRIBER_DROPPED, &[("client", "127.0.0.1")]).unwrap();
    assert!(dropped >= 90.0, "{dropped}");
    assert_eq!(v(m::DNS_NAMES, &[]), Some(1.0));
    assert_eq!(v(m::DNS_NAMES_FAILING, &[]), Some(1.0));
    assert!(v(m::DNS_FAILURES, &[("name", "fail.test")]).unwrap() >= 1.0);
    assert_eq!(
        v(m::BUILD_INFO, &[("version", env!("CARGO_PKG_VERSION"))]),
        Some(1.0)
    );
    // By now every metric has a series, announced by its TYPE line.
    let (_, _, text) = get(addr, "/metrics").await;
    for metric in m::METRICS {
        assert!(
            text.contains(&format!("# TYPE {} ", metric.name)),
            "{} has no TYPE line",
            metric.name
        );
    }

    // The kernel counts on; the next scrape sees it.
    per_slot.store(9, Ordering::Relaxed);
    let samples = scrape(addr).await;
    assert_eq!(action("deny-shadow", "override", &samples), Some(9.0));

    // Disabled: the gauge moves, the counter keeps its value.
    agent.set_enabled("deny-shadow", "", false).await.unwrap();
    let samples = scrape(addr).await;
    assert_eq!(
        value(&samples, m::TRACINGPOLICY_LOADED, &[("state", "disabled")]),
        Some(1.0)
    );
    assert_eq!(action("deny-shadow", "override", &samples), Some(9.0));

    assert_eq!(get(addr, "/nope").await.0, 404);
    assert_eq!(get(addr, "/").await.0, 200);

    drop(stream);
    let _ = stop_tx.send(());
    let _ = server.await;
    resolver.abort();
}
