//! A fake kubelet + containerd: a Pod object bound to this node, its cgroups laid out as the
//! real ones lay them out, its status reported as the kubelet reports it, and commands run
//! inside its container. There is no container image or mount namespace: a "container" is a
//! cgroup, which is all the agent uses to tell a pod's processes from the node's.
//!
//! The order follows a real pod start: the kubelet creates the pod's cgroup when it admits the
//! pod, containerd starts the sandbox ("pause") in a scope of its own, then the app container
//! in another; only after that does the kubelet write the container ID into the status.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::Duration,
};

use super::{
    cgroup,
    cluster::{Cluster, NODE, k8s_fixture},
};
use crate::Agent;

/// How long the agent may take to learn a new pod (watch event ~2 s under TCG, more when VMs
/// share the host).
pub const POD_KNOWN_TIMEOUT: Duration = Duration::from_secs(90);

static MARKER: AtomicU32 = AtomicU32::new(0);

/// One pod of this node. Dropping it kills its processes, removes its cgroups and deletes the
/// Pod object, also when the test panics.
pub struct FakePod<'c> {
    cluster: &'c Cluster,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The app container's ID (64 hex), as containerd would report it.
    pub container_id: String,
    pod_cgroup: PathBuf,
    sandbox_cgroup: PathBuf,
    container_cgroup: PathBuf,
}

impl<'c> FakePod<'c> {
    /// The Pod `namespace/name` (from `vm-tests/fixtures/k8s/pod.yaml`, `spec.nodeName` =
    /// [`NODE`]), its pod cgroup and its sandbox scope: admitted, no container yet, `Pending`.
    pub fn create(cluster: &'c Cluster, namespace: &str, name: &str) -> FakePod<'c> {
        cluster.ensure_namespace(namespace);
        let manifest = std::fs::read_to_string(k8s_fixture("pod.yaml"))
            .expect("pod fixture")
            .replace("NAME", name)
            .replace("NODE", NODE);
        let uid = cluster
            .kubectl_ok(
                &[
                    "create",
                    "--validate=false",
                    "-n",
                    namespace,
                    "-f",
                    "-",
                    "-o",
                    "jsonpath={.metadata.uid}",
                ],
                Some(&manifest),
            )
            .trim()
            .to_string();
        assert_eq!(uid.len(), 36, "pod {namespace}/{name}: odd uid {uid:?}");
        // Unique per pod, 64 hex as containerd's: the UID's 32 hex digits, for the sandbox
        // and the app container with different halves.
        let hex: String = uid.chars().filter(|c| *c != '-').collect();
        let container_id = format!("{hex}{}", "c".repeat(32));
        let sandbox_id = format!("{hex}{}", "5".repeat(32));
        let pod_cgroup = cgroup::pod_cgroup(&uid);
        let pod = FakePod {
            cluster,
            namespace: namespace.to_string(),
            name: name.to_string(),
            sandbox_cgroup: cgroup::container_cgroup(&pod_cgroup, &sandbox_id),
            container_cgroup: cgroup::container_cgroup(&pod_cgroup, &container_id),
            container_id,
            pod_cgroup,
            uid,
        };
        cgroup::create(&pod.pod_cgroup);
        cgroup::create(&pod.sandbox_cgroup);
        pod
    }

    /// A pod whose container runs and is reported in the status: [`Self::create`],
    /// [`Self::start_container`], [`Self::report_running`].
    pub fn running(cluster: &'c Cluster, namespace: &str, name: &str) -> FakePod<'c> {
        let pod = FakePod::create(cluster, namespace, name);
        pod.start_container();
        pod.report_running();
        pod
    }

    /// `namespace/name`, the source column of the pod's compact events.
    pub fn source(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// containerd creates the app container's scope (its process is started by
    /// [`Self::command`]).
    pub fn start_container(&self) {
        cgroup::create(&self.container_cgroup);
    }

    /// The kubelet's status update: `Running`, with the container's ID, name and image.
    pub fn report_running(&self) {
        let status = std::fs::read_to_string(k8s_fixture("status-running.json"))
            .expect("status fixture")
            .replace("CONTAINER_ID", &self.container_id);
        self.cluster.kubectl_ok(
            &[
                "patch",
                "pod",
                &self.name,
                "-n",
                &self.namespace,
                "--subresource=status",
                "--type=merge",
                "-p",
                &status,
            ],
            None,
        );
    }

    /// `kubectl label pod NAME -n NAMESPACE --overwrite LABEL` (`key=value`, or `key-` to
    /// remove it).
    pub fn label(&self, label: &str) {
        self.cluster.kubectl_ok(
            &[
                "label",
                "pod",
                &self.name,
                "-n",
                &self.namespace,
                "--overwrite",
                label,
            ],
            None,
        );
    }

    /// The app container's cgroup.
    pub fn container_cgroup(&self) -> &Path {
        &self.container_cgroup
    }

    /// The pod's cgroup.
    pub fn pod_cgroup(&self) -> &Path {
        &self.pod_cgroup
    }

    /// `program` as a process of the app container: it joins the container's cgroup before
    /// its first exec. Panics if the container was not started.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        assert!(
            self.container_cgroup.is_dir(),
            "{}: start_container first",
            self.source()
        );
        let mut cmd = Command::new(program);
        cmd.stdin(Stdio::null());
        cgroup::place_in(&mut cmd, &self.container_cgroup);
        cmd
    }

    /// Runs `program args…` in the app container and returns its output.
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        self.command(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running {program} in {}: {e}", self.source()))
    }

    /// Runs `sh -c script` in the app container.
    pub fn sh(&self, script: &str) -> Output {
        self.run("/bin/sh", &["-c", script])
    }

    /// Spawns `program args…` in the app container.
    pub fn spawn(&self, program: &str, args: &[&str]) -> Child {
        self.command(program)
            .args(args)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {program} in {}: {e}", self.source()))
    }

    /// Waits until the agent attributes a process of this pod to it: an exec in the sandbox
    /// scope (as the pause container's) shows up with `namespace/name` in the compact stream.
    /// Only then is a test's first operation in the pod meaningful.
    pub fn wait_until_known(&self, agent: &mut Agent) {
        let mark = agent.mark();
        let tag = format!(
            "lsm-vmtest-pod-known-{}",
            MARKER.fetch_add(1, Ordering::Relaxed)
        );
        let source = self.source();
        let start = std::time::Instant::now();
        loop {
            let mut cmd = Command::new("/bin/true");
            cmd.arg(&tag);
            cgroup::place_in(&mut cmd, &self.sandbox_cgroup);
            let _ = cmd.status();
            let seen = agent.lines_since(mark);
            if seen
                .iter()
                .any(|l| crate::compact_source(l) == Some(source.as_str()) && l.ends_with(&tag))
            {
                eprintln!("{source} known to the agent after {:?}", start.elapsed());
                return;
            }
            if start.elapsed() > POD_KNOWN_TIMEOUT {
                let marks: Vec<&String> = seen.iter().filter(|l| l.contains(&tag)).collect();
                panic!(
                    "the agent never attributed an exec in the sandbox scope {} to {source} \
                     within {POD_KNOWN_TIMEOUT:?}; the last of its {} events:\n{}",
                    cgroup::proc_path(&self.sandbox_cgroup),
                    marks.len(),
                    marks[marks.len().saturating_sub(2)..]
                        .iter()
                        .map(|l| l.as_str())
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
            thread::sleep(Duration::from_millis(500));
        }
    }

    fn teardown(&self) -> Vec<String> {
        let mut errors = Vec::new();
        for cg in [
            &self.container_cgroup,
            &self.sandbox_cgroup,
            &self.pod_cgroup,
        ] {
            if let Err(e) = cgroup::remove(cg) {
                errors.push(e);
            }
        }
        // No kubelet confirms a graceful deletion: remove the object at once.
        let out = self.cluster.kubectl(
            &[
                "delete",
                "pod",
                &self.name,
                "-n",
                &self.namespace,
                "--grace-period=0",
                "--force",
                "--ignore-not-found",
                "--wait=false",
            ],
            None,
        );
        if !out.status.success() {
            errors.push(format!(
                "deleting pod {}: {}",
                self.source(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        errors
    }
}

impl Drop for FakePod<'_> {
    fn drop(&mut self) {
        let errors = self.teardown();
        if errors.is_empty() {
            return;
        }
        let msg = errors.join("; ");
        if thread::panicking() {
            eprintln!("cleaning up after a failed test: {msg}");
        } else {
            panic!("{msg}");
        }
    }
}
