//! Kubernetes: the agent's view of the cluster, converted to our own types at this border.
//!
//! * [`config`]: Tetragon's flags (`--enable-k8s-api`, `--k8s-kubeconfig-path`, `--node-name`),
//!   in-cluster or kubeconfig client configuration, the node name.
//! * [`cgroup`]: which pod and container a cgroup v2 path belongs to (kubelet's systemd and
//!   cgroupfs drivers; containerd, CRI-O and docker scopes). Pure.
//! * label selectors and the scoping rules are the policy's own ([`crate::policy::scope`]): the
//!   compiler needs them, and `policy` comes first in the flow.
//! * [`cgroupfs`]: the kubelet's cgroups on this node (parents of pods, pods, containers)
//!   with their ids, kept current with inotify.
//! * [`identity`]: the pods of this node by UID and by container ID; answers "which pod and
//!   container is this cgroup". Pure.
//! * [`pods`]: the watcher that keeps [`identity`] in sync with the API server.
//! * [`policies`]: the watcher of the `TracingPolicy` and `TracingPolicyNamespaced` CRDs, which
//!   turns objects into policy text for the parser and honours `nodeSelector`.
//! * [`workloads`]: pods (API) joined with cgroups (cgroupfs): the scoping input sent to the
//!   policy owner when it changes, and the index that tells events which pod a cgroup is.
//! * [`loader`]: turns the CRD watcher's changes into commands to the policy owner
//!   (`Source::Kubernetes` policies), the only part here that changes the loaded policies.
//!
//! Watchers send their changes on tokio channels; nothing here touches the kernel: the
//! loader and the workloads sender go through the owner's `AgentHandle` like every other
//! source of change.

pub mod cgroup;
pub mod cgroupfs;
pub mod config;
pub mod identity;
pub mod loader;
pub mod pods;
pub mod policies;
pub mod workloads;

/// Errors of the API-facing parts (configuration and watchers).
#[derive(Debug, thiserror::Error)]
pub enum K8sError {
    #[error("in-cluster Kubernetes configuration: {0}")]
    InCluster(#[from] kube::config::InClusterError),
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        path: std::path::PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("Kubernetes client: {0}")]
    Client(#[from] kube::Error),
    #[error(
        "--enable-k8s-api outside a pod needs --k8s-kubeconfig-path (no in-cluster configuration)"
    )]
    NoApiOutsidePod,
    #[error("no node name: set NODE_NAME or --node-name (the host name is not readable: {0})")]
    NodeName(String),
}
