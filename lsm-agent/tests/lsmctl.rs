//! Runs the real `lsmctl` binary against an in-process gRPC server.

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use lsm_agent::grpc::{
    EventBus, PolicyControl, bind,
    proto::tetragon::{
        GetEventsResponse, HealthStatusResult, KprobeArgument, KprobeFile, KprobeSock, Pod,
        Process, ProcessExec, ProcessExit, ProcessKprobe, ProcessLsm, TracingPolicyMode,
        TracingPolicyState, TracingPolicyStatus, get_events_response::Event, kprobe_argument::Arg,
    },
    serve_listeners,
};
use tokio::sync::oneshot;

struct FakeControl {
    policies: Mutex<Vec<TracingPolicyStatus>>,
}

impl PolicyControl for FakeControl {
    fn list(&self) -> Vec<TracingPolicyStatus> {
        self.policies.lock().unwrap().clone()
    }
    fn add(&self, _yaml: String) -> Result<(), String> {
        Err("not supported".into())
    }
    fn delete(&self, _name: &str, _namespace: &str) -> Result<(), String> {
        Err("not supported".into())
    }
    fn set_enabled(&self, _name: &str, _namespace: &str, _enabled: bool) -> Result<(), String> {
        Err("not supported".into())
    }
    fn set_mode(
        &self,
        _name: &str,
        _namespace: &str,
        _mode: TracingPolicyMode,
    ) -> Result<(), String> {
        Err("not supported".into())
    }
    fn health(&self) -> (HealthStatusResult, String) {
        (HealthStatusResult::HealthStatusRunning, "running".into())
    }
}

fn policy(name: &str, state: TracingPolicyState) -> TracingPolicyStatus {
    TracingPolicyStatus {
        id: 1,
        name: name.into(),
        state: state as i32,
        mode: TracingPolicyMode::TpModeEnforce as i32,
        sensors: vec!["generic_lsm".into()],
        error: if state == TracingPolicyState::TpStateLoadError {
            "BTF mismatch".into()
        } else {
            String::new()
        },
        ..Default::default()
    }
}

struct Server {
    port: u16,
    bus: EventBus,
    stop: Option<oneshot::Sender<()>>,
}

impl Server {
    async fn start(policies: Vec<TracingPolicyStatus>) -> Self {
        let listeners = bind("127.0.0.1:0").await.unwrap();
        let port = listeners.local_addrs()[0].port();
        let bus = EventBus::new(64);
        let control = Arc::new(FakeControl {
            policies: Mutex::new(policies),
        });
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(serve_listeners(listeners, bus.clone(), control, async {
            let _ = rx.await;
        }));
        Self {
            port,
            bus,
            stop: Some(tx),
        }
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

fn lsmctl(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lsmctl"));
    c.args(args).stdin(Stdio::null());
    c
}

async fn run_status(address: &str) -> (i32, String, Duration) {
    let address = address.to_owned();
    tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        let out = lsmctl(&["--server-address", &address, "status"])
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            start.elapsed(),
        )
    })
    .await
    .unwrap()
}

fn proc(binary: &str, args: &str, pod: Option<(&str, &str)>) -> Process {
    Process {
        binary: binary.into(),
        arguments: args.into(),
        pid: Some(1234),
        pod: pod.map(|(ns, name)| Pod {
            namespace: ns.into(),
            name: name.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn events() -> Vec<GetEventsResponse> {
    let xwing = || {
        proc(
            "/usr/bin/curl",
            "https://ebpf.io/applications/#tetragon",
            Some(("default", "xwing")),
        )
    };
    let ev = |e: Event, node: &str| GetEventsResponse {
        event: Some(e),
        node_name: node.into(),
        ..Default::default()
    };
    vec![
        ev(
            Event::ProcessExec(ProcessExec {
                process: Some(xwing()),
                ..Default::default()
            }),
            "n1",
        ),
        ev(
            Event::ProcessKprobe(ProcessKprobe {
                process: Some(xwing()),
                function_name: "tcp_connect".into(),
                args: vec![KprobeArgument {
                    arg: Some(Arg::SockArg(KprobeSock {
                        saddr: "10.32.0.28".into(),
                        sport: 45200,
                        daddr: "104.198.14.52".into(),
                        dport: 443,
                        ..Default::default()
                    })),
                    label: String::new(),
                }],
                ..Default::default()
            }),
            "n1",
        ),
        ev(
            Event::ProcessExit(ProcessExit {
                process: Some(xwing()),
                signal: "SIGKILL".into(),
                ..Default::default()
            }),
            "n1",
        ),
        ev(
            Event::ProcessKprobe(ProcessKprobe {
                process: Some(proc("/bin/cat", "/etc/shadow", Some(("default", "xwing")))),
                function_name: "security_file_permission".into(),
                args: vec![
                    KprobeArgument {
                        arg: Some(Arg::FileArg(KprobeFile {
                            path: "/etc/shadow".into(),
                            ..Default::default()
                        })),
                        label: String::new(),
                    },
                    KprobeArgument {
                        arg: Some(Arg::IntArg(4)),
                        label: String::new(),
                    },
                ],
                ..Default::default()
            }),
            "n1",
        ),
        ev(
            Event::ProcessLsm(ProcessLsm {
                process: Some(proc("/usr/bin/zsh", "", None)),
                function_name: "bprm_check_security".into(),
                ..Default::default()
            }),
            "user-nix",
        ),
        ev(
            Event::ProcessExec(ProcessExec {
                process: Some(proc("/usr/bin/curl", "cilium.io", None)),
                ..Default::default()
            }),
            "my-node",
        ),
    ]
}

const EXPECTED: &[&str] = &[
    "🚀 process default/xwing /usr/bin/curl https://ebpf.io/applications/#tetragon",
    "🔌 connect default/xwing /usr/bin/curl tcp 10.32.0.28:45200 -> 104.198.14.52:443",
    "💥 exit    default/xwing /usr/bin/curl https://ebpf.io/applications/#tetragon SIGKILL",
    "📚 read    default/xwing /bin/cat /etc/shadow",
    "🔒 LSM     user-nix /usr/bin/zsh bprm_check_security",
    "🚀 process my-node /usr/bin/curl cilium.io",
];

/// Starts `lsmctl getevents`, waits until it subscribed, publishes, and returns the lines.
async fn getevents_lines(
    server: &Server,
    extra: &[&str],
    publish: Vec<GetEventsResponse>,
    n: usize,
) -> Vec<String> {
    let mut args = vec![
        "--server-address".to_owned(),
        server.address(),
        "getevents".into(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let mut child = lsmctl(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.bus.subscriber_count() == 0 {
        assert!(Instant::now() < deadline, "lsmctl did not subscribe");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for ev in publish {
        server.bus.publish(ev);
    }
    let stdout = child.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .take(n)
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
    });
    let lines = tokio::time::timeout(Duration::from_secs(10), lines)
        .await
        .expect("lines in time")
        .unwrap();
    // The stream never ends by itself, like tetra's.
    assert!(child.try_wait().unwrap().is_none(), "lsmctl exited early");
    child.kill().unwrap();
    child.wait().unwrap();
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn getevents_compact_prints_exact_lines() {
    let server = Server::start(vec![]).await;
    let lines = getevents_lines(&server, &["-o", "compact"], events(), EXPECTED.len()).await;
    assert_eq!(lines, EXPECTED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn getevents_filters_and_json() {
    let server = Server::start(vec![]).await;
    let lines = getevents_lines(
        &server,
        &["-o", "compact", "--host", "-e", "PROCESS_EXEC"],
        events(),
        1,
    )
    .await;
    assert_eq!(lines, ["🚀 process my-node /usr/bin/curl cilium.io"]);

    let server = Server::start(vec![]).await;
    let lines = getevents_lines(&server, &["-o", "json", "--process", "zsh"], events(), 1).await;
    let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(v["process_lsm"]["function_name"], "bprm_check_security");
    assert_eq!(v["process_lsm"]["process"]["pid"], 1234);
    assert_eq!(v["node_name"], "user-nix");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_exit_codes() {
    let ok = Server::start(vec![
        policy("a", TracingPolicyState::TpStateEnabled),
        policy("b", TracingPolicyState::TpStateEnabled),
    ])
    .await;
    let (code, out, _) = run_status(&ok.address()).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("Health Status: running\n"), "{out}");

    let bad = Server::start(vec![
        policy("a", TracingPolicyState::TpStateEnabled),
        policy("b", TracingPolicyState::TpStateLoadError),
    ])
    .await;
    let (code, out, _) = run_status(&bad.address()).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("policy b is load_error: BTF mismatch"),
        "{out}"
    );

    // A port that nothing listens on any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (code, _, took) = run_status(&format!("127.0.0.1:{port}")).await;
    assert_eq!(code, 1);
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracingpolicy_list_and_version() {
    let server = Server::start(vec![policy(
        "block-shadow",
        TracingPolicyState::TpStateEnabled,
    )])
    .await;
    let address = server.address();
    let out = tokio::task::spawn_blocking(move || {
        let list = lsmctl(&["--server-address", &address, "tracingpolicy", "list"])
            .output()
            .unwrap();
        let version = lsmctl(&["--server-address", &address, "version"])
            .output()
            .unwrap();
        (list, version)
    })
    .await
    .unwrap();
    let list = String::from_utf8(out.0.stdout).unwrap();
    let mut rows = list.lines();
    let header: Vec<&str> = rows.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "ID",
            "NAME",
            "STATE",
            "FILTERID",
            "NAMESPACE",
            "SENSORS",
            "KERNELMEMORY",
            "MODE",
            "NPOST",
            "NENFORCE",
            "NMONITOR"
        ]
    );
    let row: Vec<&str> = rows.next().unwrap().split_whitespace().collect();
    assert_eq!(
        row,
        [
            "1",
            "block-shadow",
            "enabled",
            "0",
            "(global)",
            "generic_lsm",
            "0",
            "B",
            "enforce",
            "0",
            "0",
            "0"
        ]
    );
    let version = String::from_utf8(out.1.stdout).unwrap();
    let v = env!("CARGO_PKG_VERSION");
    assert_eq!(version, format!("CLI version: {v}\nServer version: {v}\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_over_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let address = format!("unix://{}/agent.sock", dir.path().display());
    let listeners = bind(&address).await.unwrap();
    let control = Arc::new(FakeControl {
        policies: Mutex::new(vec![]),
    });
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(serve_listeners(
        listeners,
        EventBus::new(8),
        control,
        async {
            let _ = rx.await;
        },
    ));
    let (code, out, _) = run_status(&address).await;
    assert_eq!(code, 0, "{out}");
    let _ = tx.send(());
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        !dir.path().join("agent.sock").exists(),
        "socket removed on shutdown"
    );
}
