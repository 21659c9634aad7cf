//! Runs the real `lsmctl` binary against an in-process gRPC server.

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use lsm_agent::{
    events::{
        bus::EventBus,
        model::{
            Action, Arg, ArgValue, Event, EventKind, Exec, Exit, Hook, HookOrigin, LsmHook,
            NetData, Pod, Process, Time,
        },
    },
    grpc::{
        PolicyControl, bind,
        proto::tetragon::{
            HealthStatusResult, TracingPolicyMode, TracingPolicyState, TracingPolicyStatus,
        },
        serve_listeners,
    },
};
use tokio::sync::oneshot;

struct FakeControl {
    policies: Mutex<Vec<TracingPolicyStatus>>,
    /// YAML received by AddTracingPolicy.
    added: Arc<Mutex<Vec<String>>>,
}

impl PolicyControl for FakeControl {
    fn list(&self) -> Vec<TracingPolicyStatus> {
        self.policies.lock().unwrap().clone()
    }
    fn add(&self, yaml: String) -> Result<(), String> {
        self.added.lock().unwrap().push(yaml);
        Ok(())
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
    added: Arc<Mutex<Vec<String>>>,
    stop: Option<oneshot::Sender<()>>,
}

impl Server {
    async fn start(policies: Vec<TracingPolicyStatus>) -> Self {
        let listeners = bind("127.0.0.1:0").await.unwrap();
        let port = listeners.local_addrs()[0].port();
        let bus = EventBus::new(64);
        let added = Arc::new(Mutex::new(Vec::new()));
        let control = Arc::new(FakeControl {
            policies: Mutex::new(policies),
            added: added.clone(),
        });
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(serve_listeners(listeners, bus.clone(), control, async {
            let _ = rx.await;
        }));
        Self {
            port,
            bus,
            added,
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
    let mut argv = vec![binary.to_owned()];
    if !args.is_empty() {
        argv.push(args.to_owned());
    }
    Process {
        binary: binary.into(),
        argv,
        pid: 1234,
        pod: pod.map(|(ns, name)| {
            std::sync::Arc::new(Pod {
                namespace: ns.into(),
                name: name.into(),
                ..Default::default()
            })
        }),
        ..Default::default()
    }
}

fn hook(process: Process, hook: LsmHook, origin: HookOrigin, args: Vec<ArgValue>) -> EventKind {
    EventKind::Hook(Hook {
        process,
        parent: None,
        policy_name: String::new(),
        policy_namespace: None,
        hook: lsm_agent::events::model::Target::Lsm(hook),
        origin,
        args: args
            .into_iter()
            .map(|value| Arg { value, label: None })
            .collect(),
        return_arg: None,
        data: vec![],
        action: Action::Post,
        return_action: None,
        message: None,
        tags: vec![],
        request: None,
    })
}

fn events() -> Vec<Event> {
    let xwing = || {
        proc(
            "/usr/bin/curl",
            "https://ebpf.io/applications/#tetragon",
            Some(("default", "xwing")),
        )
    };
    let ev = |kind: EventKind, node: &str| Event {
        node_name: node.into(),
        time: Time::default(),
        kind,
    };
    let kprobe = |call: &str| HookOrigin::Kprobe { call: call.into() };
    vec![
        ev(
            EventKind::Exec(Exec {
                process: xwing(),
                parent: None,
            }),
            "n1",
        ),
        ev(
            hook(
                xwing(),
                LsmHook::SocketConnect,
                kprobe("tcp_connect"),
                vec![ArgValue::Sock(Some(NetData {
                    family: lsm_shared::AF_INET,
                    sock_type: 1,
                    protocol: lsm_shared::IPPROTO_TCP,
                    saddr: Some([10, 32, 0, 28].into()),
                    sport: 45200,
                    daddr: Some([104, 198, 14, 52].into()),
                    dport: 443,
                }))],
            ),
            "n1",
        ),
        ev(
            EventKind::Exit(Exit {
                process: xwing(),
                parent: None,
                signal: Some(9),
                status: 0,
            }),
            "n1",
        ),
        ev(
            hook(
                proc("/bin/cat", "/etc/shadow", Some(("default", "xwing"))),
                LsmHook::FilePermission,
                kprobe("security_file_permission"),
                vec![
                    ArgValue::File {
                        path: "/etc/shadow".into(),
                    },
                    ArgValue::Int(4),
                ],
            ),
            "n1",
        ),
        ev(
            hook(
                proc("/usr/bin/zsh", "", None),
                LsmHook::BprmCheckSecurity,
                HookOrigin::LsmHook,
                vec![],
            ),
            "user-nix",
        ),
        ev(
            EventKind::Exec(Exec {
                process: proc("/usr/bin/curl", "cilium.io", None),
                parent: None,
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
    publish: Vec<Event>,
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
async fn getevents_pods_and_namespace_show_only_that_pods_events() {
    // Host events first: a filter that let them through would print them first.
    let host_first = || events().into_iter().rev().collect::<Vec<_>>();
    let xwing_lines: Vec<&str> = EXPECTED[..4].iter().rev().copied().collect();
    for flags in [
        &["-o", "compact", "--pods", "xwing"][..],
        &["-o", "compact", "--namespace", "default"],
        &["-o", "compact", "--pod", "^xw", "-n", "default"],
    ] {
        let server = Server::start(vec![]).await;
        let lines = getevents_lines(&server, flags, host_first(), xwing_lines.len()).await;
        assert_eq!(lines, xwing_lines, "{flags:?}");
    }
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
        added: Arc::default(),
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

// ---- `tracingpolicy check`: offline, no server ----

fn repo() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The corpus file `unset-env-var.yaml` relies on this variable being unset.
const CORPUS_UNSET_VAR: &str = "LSM_AGENT_CORPUS_UNSET_VAR";

fn check(files: &[&std::path::Path]) -> (i32, String, String) {
    let mut c = lsmctl(&["tracingpolicy", "check"]);
    // A server address nobody listens on: the check must not try to connect.
    c.args(files).args(["--server-address", "127.0.0.1:1"]);
    c.env_remove(CORPUS_UNSET_VAR);
    let out = c.output().expect("running lsmctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn tracingpolicy_check_reports_hooks_selectors_and_map_entries() {
    let q = repo().join("../shared/testdata/tetragon-quickstart");
    let (code, out, err) = check(&[
        &q.join("file_monitoring_enforce.yaml"),
        &q.join("lsm_file_open.yaml"),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    for want in [
        "policy file-monitoring-filtered",
        "kind: TracingPolicyNamespaced",
        "mode: enforce",
        "spec.kprobes[0] security_file_permission: enforced at LSM hook file_permission (observed by kprobe security_file_permission where BPF LSM is inactive); 3 selectors",
        "spec.kprobes[1] security_mmap_file: enforced at LSM hook mmap_file (observed by kprobe security_mmap_file where BPF LSM is inactive); 2 selectors",
        "spec.kprobes[2] security_path_truncate: enforced at LSM hook path_truncate (observed by kprobe security_path_truncate where BPF LSM is inactive); 1 selector",
        "policy lsm-file-open",
        "spec.lsmhooks[0] file_open: enforced at LSM hook file_open (observed by kprobe security_file_open where BPF LSM is inactive); 1 selector",
        // lsm_file_open.yaml: /etc/passwd and /etc/shadow as the argument, /usr/bin/cat as
        // the binary.
        "STR_EQ       3 / 65536",
        "SEL_ACT      file_permission 3 / 64, mmap_file 2 / 64, path_truncate 1 / 64",
        "all 2 parsed policies together",
        "SEL_ACT      file_open 1 / 64, file_permission 3 / 64, mmap_file 2 / 64, path_truncate 1 / 64",
        "2 policy file(s) OK",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    assert!(out.contains("NUM_FILT     file_permission "), "{out}");
    // The namespaced policy's warning goes to stderr, not the report.
    assert!(err.contains("warning: "), "{err}");
}

#[test]
fn tracingpolicy_check_fails_on_a_bad_file_and_still_reports_the_good_one() {
    let q = repo().join("../shared/testdata/tetragon-quickstart/lsm_file_open.yaml");
    let bad = repo().join("integration/broken-policies/unknown-operator.yaml");
    let (code, out, err) = check(&[&q, &bad]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains(&format!(
            "error: {}:15:9: spec.lsmhooks[0].selectors[0].matchArgs[0].operator: unknown \
             operator \"StartsWith\"",
            bad.display()
        )),
        "{err}"
    );
    assert!(out.contains("policy lsm-file-open"), "{out}");
    assert!(out.contains("1 of 2 policy file(s) rejected"), "{out}");
}

#[test]
fn tracingpolicy_check_expands_env_and_reports_unset_variables() {
    let net = repo().join("../shared/testdata/tetragon-quickstart/network_egress_cluster.yaml");
    let mut c = lsmctl(&["tracingpolicy", "check"]);
    c.arg(&net).env_remove("PODCIDR").env_remove("SERVICECIDR");
    let out = c.output().expect("running lsmctl");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains("environment variable PODCIDR is not set"),
        "{err}"
    );
    // With the variables set, the tcp_connect kprobe loads at socket_connect.
    let mut c = lsmctl(&["tracingpolicy", "check"]);
    c.arg(&net)
        .env("PODCIDR", "10.0.0.0/8")
        .env("SERVICECIDR", "10.96.0.0/12");
    let out = c.output().expect("running lsmctl");
    let (code, out, err) = (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(err.is_empty(), "{err}");
    assert!(
        out.contains("spec.kprobes[0] tcp_connect: enforced at LSM hook socket_connect, TCP over IPv4/IPv6 only (observed by kprobe security_socket_connect where BPF LSM is inactive); 1 selector"),
        "{out}"
    );
    assert!(out.contains("1 policy file(s) OK"), "{out}");
    // A bad value from the environment is reported where the reference is written.
    let mut c = lsmctl(&["tracingpolicy", "check"]);
    c.arg(&net)
        .env("PODCIDR", "10.0.0.0/40")
        .env("SERVICECIDR", "10.96.0.0/12");
    let out = c.output().expect("running lsmctl");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains(
            "network_egress_cluster.yaml:27:11: spec.kprobes[0].selectors[0].matchArgs[0].\
             values[1]: invalid CIDR \"10.0.0.0/40\""
        ),
        "{err}"
    );
}

#[test]
fn tracingpolicy_check_rejects_every_file_of_the_broken_policy_corpus() {
    let dir = repo().join("integration/broken-policies");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("corpus dir") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("policy");
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} lacks an `# expect:` first line", path.display()));
        let (code, out, err) = check(&[&path]);
        assert_eq!(code, 1, "{} was accepted:\n{out}", path.display());
        assert!(
            err.contains(&format!("error: {}", path.display())) && err.contains(expect),
            "{}: expected {expect:?} in:\n{err}",
            path.display()
        );
        n += 1;
    }
    assert!(n >= 20, "the corpus has only {n} files");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracingpolicy_add_expands_env_from_the_callers_environment() {
    let server = Server::start(vec![]).await;
    let file = repo().join("../shared/testdata/tetragon-quickstart/network_egress_cluster.yaml");
    let out = lsmctl(&[
        "--server-address",
        &server.address(),
        "tracingpolicy",
        "add",
        &file.display().to_string(),
    ])
    .env("PODCIDR", "10.0.0.0/16")
    .env("SERVICECIDR", "10.96.0.0/12")
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let added = server.added.lock().unwrap().clone();
    assert_eq!(added.len(), 1);
    assert!(added[0].contains("- 10.0.0.0/16") && !added[0].contains("${"));

    let out = lsmctl(&[
        "--server-address",
        &server.address(),
        "tracingpolicy",
        "add",
        &file.display().to_string(),
    ])
    .env_remove("PODCIDR")
    .env("SERVICECIDR", "10.96.0.0/12")
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("network_egress_cluster.yaml:") && err.contains("PODCIDR"),
        "{err}"
    );
    assert_eq!(server.added.lock().unwrap().len(), 1, "nothing sent");
}
