//! etcd and the real kube-apiserver of `../shared/tools/k8s`, started inside the guest once
//! per test binary and shared by its tests. Under TCG it takes 10–40 s to be ready, so one
//! start serves the whole suite; a watchdog stops it and purges its data when the test binary
//! exits, however it exits (a static is never dropped).

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::OnceLock,
    thread,
    time::{Duration, Instant},
};

use crate::repo;

/// On a tmpfs (virtme-ng mounts a fresh one on `/dev/shm`): etcd's fsyncs and the 111 MiB
/// binary stay in memory; read from the 9p root, the binary alone takes up to a minute to load.
pub const RUN_DIR: &str = "/dev/shm/lsm-vmtest-k8s";
/// The Node the agent runs as (`--node-name`); the fake kubelet binds pods to it.
pub const NODE: &str = "lsm-vmtest-node";
/// How long start.sh may wait for `/readyz` (several VMs may share the host's two cores).
const READY_TIMEOUT_SECS: u32 = 300;

/// The running API server.
pub struct Cluster {
    run_dir: PathBuf,
    kubeconfig: PathBuf,
}

/// The cluster of this test binary, started on first use. Panics (never skips) when it cannot
/// start.
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(start)
}

/// `../shared/tools/k8s`, beside the repository.
fn tools() -> PathBuf {
    let dir = repo().join("../shared/tools/k8s");
    assert!(
        dir.join("start.sh").is_file(),
        "{} not found: the kubernetes suite needs shared/ beside the repository",
        dir.display()
    );
    dir
}

/// A file of `vm-tests/fixtures/k8s/`.
pub fn k8s_fixture(name: &str) -> PathBuf {
    let p = repo().join("vm-tests/fixtures/k8s").join(name);
    assert!(p.exists(), "{} is missing", p.display());
    p
}

fn require(tool: &str, hint: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(found, "`{tool}` not found in the guest: {hint}");
}

fn start() -> Cluster {
    require("etcd", "install Debian's etcd-server (scripts/setup.sh)");
    require("kubectl", "kubectl is expected on the machine image");
    require("zstd", "install zstd (scripts/setup.sh)");
    let run_dir = PathBuf::from(RUN_DIR);
    let tools = tools();
    let _ = std::fs::remove_dir_all(&run_dir);
    std::fs::create_dir_all(&run_dir).expect("cluster run dir");
    spawn_watchdog(&run_dir, &tools);

    let started_at = Instant::now();
    // LEAN=1: core v1, CRDs, coordination... is all the suite needs, for ~40 % less CPU.
    // start.sh unpacks the binary into RUN_DIR (tmpfs) itself.
    let out = Command::new(tools.join("start.sh"))
        .env("RUN_DIR", &run_dir)
        .env("LEAN", "1")
        .env("READY_TIMEOUT", READY_TIMEOUT_SECS.to_string())
        .stdin(Stdio::null())
        .output()
        .expect("running start.sh");
    assert!(
        out.status.success(),
        "etcd + kube-apiserver did not start in the guest:\n{}{}\n--- kube-apiserver.log ---\n{}\n--- etcd.log ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        tail(&run_dir.join("kube-apiserver.log")),
        tail(&run_dir.join("etcd.log")),
    );
    // Kept with the results: the start time under TCG is worth watching.
    let timing = format!(
        "kube-apiserver ready after {:?}: {}\n",
        started_at.elapsed(),
        String::from_utf8_lossy(&out.stdout).trim()
    );
    eprint!("{timing}");
    let _ = std::fs::write(
        crate::results_dir().join("kube-apiserver-start.txt"),
        timing,
    );
    let c = Cluster {
        kubeconfig: run_dir.join("kubeconfig"),
        run_dir,
    };
    c.install();
    c
}

/// Stops etcd and the API server and removes their data once this test process is gone
/// (it ignores the signals a Ctrl-C sends the group).
fn spawn_watchdog(run_dir: &Path, tools: &Path) {
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
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

impl Cluster {
    /// The admin kubeconfig (the API server runs with AlwaysAllow: the agent uses it too).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The CRDs from `deploy/`, and this node.
    fn install(&self) {
        let crds = repo().join("deploy/helm/lsm-agent/crds");
        self.kubectl_ok(
            &["apply", "--validate=false", "-f", &crds.to_string_lossy()],
            None,
        );
        self.kubectl_ok(
            &[
                "wait",
                "--for=condition=established",
                "--timeout=120s",
                "crd/tracingpolicies.cilium.io",
                "crd/tracingpoliciesnamespaced.cilium.io",
            ],
            None,
        );
        self.kubectl_ok(
            &[
                "apply",
                "--validate=false",
                "-f",
                &k8s_fixture("node.yaml").to_string_lossy(),
            ],
            None,
        );
    }

    /// Runs kubectl as admin, with `stdin` as its input.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new("kubectl")
            .env("KUBECONFIG", &self.kubeconfig)
            // $HOME/.kube is on the read-only root in the guest.
            .env("KUBECACHEDIR", self.run_dir.join("kube-cache"))
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

    /// Creates namespace `name` unless it exists.
    pub fn ensure_namespace(&self, name: &str) {
        let out = self.kubectl(&["create", "namespace", name], None);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() || err.contains("AlreadyExists"),
            "creating namespace {name}: {err}"
        );
    }

    /// `kubectl apply -n NAMESPACE -f -` of `yaml` (no namespace: a cluster-scoped object).
    /// The returned guard deletes the object again.
    pub fn apply(&self, namespace: Option<&str>, yaml: &str) -> Applied<'_> {
        let mut args = vec!["apply", "--validate=false", "-o", "name", "-f", "-"];
        if let Some(ns) = namespace {
            args.extend(["-n", ns]);
        }
        let name = self.kubectl_ok(&args, Some(yaml)).trim().to_string();
        assert!(!name.is_empty(), "kubectl apply printed no object name");
        Applied {
            cluster: self,
            namespace: namespace.map(str::to_string),
            name,
            deleted: false,
        }
    }

    /// Applies `yaml` again over an object applied before (an edit, as `kubectl apply` of a
    /// changed file does).
    pub fn reapply(&self, applied: &Applied<'_>, yaml: &str) {
        let mut args = vec!["apply", "--validate=false", "-o", "name", "-f", "-"];
        if let Some(ns) = &applied.namespace {
            args.extend(["-n", ns]);
        }
        let name = self.kubectl_ok(&args, Some(yaml));
        assert_eq!(name.trim(), applied.name, "the edit names another object");
    }
}

/// An object created by [`Cluster::apply`]: dropping it deletes it, also when the test
/// panics, so that a failed test never leaves its policy enforcing on the tests after it.
#[must_use = "dropping the guard deletes the object at once"]
pub struct Applied<'c> {
    cluster: &'c Cluster,
    namespace: Option<String>,
    /// `kind.group/name`, as `kubectl apply -o name` prints it.
    name: String,
    deleted: bool,
}

impl Applied<'_> {
    /// `kind.group/name`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Deletes the object now, asserting success.
    pub fn delete(mut self) {
        self.deleted = true;
        if let Err(e) = self.try_delete() {
            panic!("{e}");
        }
    }

    fn try_delete(&self) -> Result<(), String> {
        let mut args = vec!["delete", "--wait=false", self.name.as_str()];
        if let Some(ns) = &self.namespace {
            args.extend(["-n", ns]);
        }
        let out = self.cluster.kubectl(&args, None);
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "kubectl delete {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }
}

impl Drop for Applied<'_> {
    fn drop(&mut self) {
        if self.deleted {
            return;
        }
        if let Err(e) = self.try_delete() {
            if thread::panicking() {
                eprintln!("cleaning up after a failed test: {e}");
            } else {
                panic!("{e}");
            }
        }
    }
}

/// Polls `cond` every 200 ms until it holds; panics after `timeout` naming `what`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(200));
    }
}
