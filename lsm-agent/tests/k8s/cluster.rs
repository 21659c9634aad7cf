//! The shared cluster: started on first use, stopped by a watchdog when this process exits.

use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use lsm_agent::k8s::config::{ApiSource, K8sSettings};

/// Where the repository's files are.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `../shared/tools/k8s`, beside the workspace root.
fn tools() -> PathBuf {
    let dir = workspace().join("../shared/tools/k8s");
    assert!(
        dir.join("start.sh").is_file(),
        "{} not found: the Kubernetes tests need shared/ beside the workspace root",
        dir.display()
    );
    dir
}

pub struct Cluster {
    /// Admin (system:masters) kubeconfig.
    pub kubeconfig: PathBuf,
    /// The agent's ServiceAccount (namespace lsm-agent, deploy/kubernetes/lsm-agent.yaml).
    pub agent_kubeconfig: PathBuf,
}

static CLUSTER: LazyLock<Cluster> = LazyLock::new(start);

pub fn cluster() -> &'static Cluster {
    &CLUSTER
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

fn require(tool: &str, hint: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(found, "`{tool}` not found: {hint}");
}

fn start() -> Cluster {
    require("etcd", "install Debian's etcd-server (scripts/setup.sh)");
    require("kubectl", "kubectl is expected on the machine image");
    require("zstd", "install zstd (scripts/setup.sh)");
    let run_dir = tempfile::Builder::new()
        .prefix("lsm-k8s-test-")
        .tempdir()
        .expect("temp dir")
        .keep();
    let tools = tools();
    // The watchdog: stops etcd and the API server and removes the run dir once this test
    // process is gone, however it ends (it ignores the signals a Ctrl-C sends the group).
    let script = format!(
        "trap '' INT TERM HUP; while kill -0 {pid} 2>/dev/null; do sleep 0.2; done; \
         RUN_DIR='{run}' '{stop}' --purge; rm -rf '{run}'",
        pid = std::process::id(),
        run = run_dir.display(),
        stop = tools.join("stop.sh").display(),
    );
    #[expect(
        clippy::zombie_processes,
        reason = "the watchdog must outlive this process; init reaps it"
    )]
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting the cluster watchdog");

    // start.sh runs the API server with AlwaysAllow; a wrapper swaps in RBAC so that the
    // agent's ClusterRole is what grants its access.
    let real = run_dir.join("kube-apiserver.real");
    let unpacked = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "zstd -dcq '{}' > '{}' && chmod +x '{}'",
            tools.join("kube-apiserver.zst").display(),
            real.display(),
            real.display()
        ))
        .status()
        .expect("zstd");
    assert!(unpacked.success(), "cannot unpack kube-apiserver");
    let wrapper = run_dir.join("kube-apiserver");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nfor a; do shift; case \"$a\" in --authorization-mode=*) a=--authorization-mode=RBAC;; esac; set -- \"$@\" \"$a\"; done\nexec '{}' \"$@\"\n",
            real.display()
        ),
    )
    .expect("wrapper");
    chmod_x(&wrapper);

    let started = Command::new(tools.join("start.sh"))
        .env("RUN_DIR", &run_dir)
        .env("APISERVER_PORT", free_port().to_string())
        .env("ETCD_PORT", free_port().to_string())
        .env("ETCD_PEER_PORT", free_port().to_string())
        .env("KUBE_APISERVER_BIN", &wrapper)
        .env("LEAN", "1")
        // LEAN serves core, CRDs, authn/z...; the chart also has apps and RBAC objects.
        .env(
            "APISERVER_EXTRA_ARGS",
            "--runtime-config=apps/v1=true,rbac.authorization.k8s.io/v1=true",
        )
        .env("READY_TIMEOUT", "120")
        .stdin(Stdio::null())
        .output()
        .expect("running start.sh");
    assert!(
        started.status.success(),
        "etcd + kube-apiserver did not start:\n{}{}\n--- kube-apiserver.log (tail) ---\n{}",
        String::from_utf8_lossy(&started.stdout),
        String::from_utf8_lossy(&started.stderr),
        tail(&run_dir.join("kube-apiserver.log")),
    );
    let kubeconfig = run_dir.join("kubeconfig");
    let mut cluster = Cluster {
        agent_kubeconfig: run_dir.join("agent-kubeconfig"),
        kubeconfig,
    };
    cluster.install();
    cluster
}

fn chmod_x(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

impl Cluster {
    /// The CRDs, then the agent's manifest (ServiceAccount, RBAC, DaemonSet, ...) for real,
    /// and a token of the agent's ServiceAccount.
    fn install(&mut self) {
        let crds = workspace().join("deploy/helm/lsm-agent/crds");
        self.kubectl_ok(
            &["apply", "--validate=false", "-f", &crds.to_string_lossy()],
            None,
        );
        self.kubectl_ok(
            &[
                "wait",
                "--for=condition=established",
                "--timeout=60s",
                "crd/tracingpolicies.cilium.io",
                "crd/tracingpoliciesnamespaced.cilium.io",
            ],
            None,
        );
        let manifest = workspace().join("deploy/kubernetes/lsm-agent.yaml");
        self.kubectl_ok(
            &[
                "apply",
                "--validate=false",
                "-f",
                &manifest.to_string_lossy(),
            ],
            None,
        );
        let token = self.kubectl_ok(
            &[
                "create",
                "token",
                "lsm-agent",
                "-n",
                "lsm-agent",
                "--duration=2h",
            ],
            None,
        );
        let admin = std::fs::read_to_string(&self.kubeconfig).expect("kubeconfig");
        let server = admin
            .lines()
            .find_map(|l| l.trim().strip_prefix("server: "))
            .expect("server in kubeconfig");
        let ca = admin
            .lines()
            .find_map(|l| l.trim().strip_prefix("certificate-authority-data: "))
            .expect("CA in kubeconfig");
        let agent = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: agent\n  user:\n    token: {}\ncontexts:\n- name: agent\n  context: {{cluster: c, user: agent}}\ncurrent-context: agent\n",
            token.trim()
        );
        std::fs::write(&self.agent_kubeconfig, agent).expect("agent kubeconfig");
    }

    /// Runs kubectl as admin with `stdin`.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new("kubectl")
            .env("KUBECONFIG", &self.kubeconfig)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running kubectl");
        let mut input = child.stdin.take().expect("stdin");
        input
            .write_all(stdin.unwrap_or("").as_bytes())
            .expect("kubectl stdin");
        drop(input);
        child.wait_with_output().expect("kubectl output")
    }

    /// Runs kubectl and returns its stdout; panics with its stderr when it fails.
    pub fn kubectl_ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// An admin client.
    pub async fn admin_client(&self) -> kube::Client {
        settings(&self.kubeconfig)
            .client()
            .await
            .expect("admin client")
    }

    /// The agent's client, built as the agent builds it from --k8s-kubeconfig-path.
    pub async fn agent_client(&self) -> kube::Client {
        settings(&self.agent_kubeconfig)
            .client()
            .await
            .expect("agent client")
    }
}

fn settings(kubeconfig: &Path) -> K8sSettings {
    K8sSettings {
        source: ApiSource::Kubeconfig(kubeconfig.to_path_buf()),
        node_name: "unused".into(),
    }
}

/// Receives until `pred` accepts an item; panics after `timeout` with what was seen.
pub async fn recv_until<T: std::fmt::Debug>(
    rx: &mut tokio::sync::mpsc::Receiver<T>,
    seen: &mut Vec<T>,
    what: &str,
    mut pred: impl FnMut(&T) -> bool,
) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(item)) => {
                let hit = pred(&item);
                seen.push(item);
                if hit {
                    return seen.len() - 1;
                }
            }
            Ok(None) => panic!("channel closed while waiting for {what}; seen: {seen:#?}"),
            Err(_) => panic!("timed out waiting for {what}; seen: {seen:#?}"),
        }
    }
}
