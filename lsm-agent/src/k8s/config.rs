//! Whether and how to reach the Kubernetes API, with Tetragon's conventions: the in-cluster
//! configuration (service account token, `KUBERNETES_SERVICE_HOST`) when running in a pod,
//! otherwise `--k8s-kubeconfig-path`; the node name from `--node-name`, `NODE_NAME` (the
//! downward API in the DaemonSet) or the host name.

use std::path::PathBuf;

use kube::config::{KubeConfigOptions, Kubeconfig};

use super::K8sError;

/// Set by the kubelet in every container; its presence means "running in a pod".
const SERVICE_HOST_ENV: &str = "KUBERNETES_SERVICE_HOST";
/// Set from `spec.nodeName` by the DaemonSet (downward API), as for Tetragon.
pub const NODE_NAME_ENV: &str = "NODE_NAME";

/// The agent's Kubernetes flags, to be flattened into its command line.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct K8sArgs {
    /// Watch the Kubernetes API (this node's pods, TracingPolicy CRDs): `--enable-k8s-api` or
    /// `--enable-k8s-api=false`. Default: on when running in a pod or with
    /// --k8s-kubeconfig-path, off otherwise.
    #[arg(
        long = "enable-k8s-api",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub enable_k8s_api: Option<bool>,
    /// kubeconfig file to reach the API server from outside a pod.
    #[arg(long = "k8s-kubeconfig-path", value_name = "FILE")]
    pub kubeconfig_path: Option<PathBuf>,
    /// This node's name, as in the pods' `spec.nodeName`. Default: $NODE_NAME, then the host
    /// name.
    #[arg(long = "node-name", value_name = "NAME")]
    pub node_name: Option<String>,
}

/// Where the client's configuration comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiSource {
    /// The pod's service account and `KUBERNETES_SERVICE_HOST`/`_PORT`.
    InCluster,
    Kubeconfig(PathBuf),
}

/// The resolved settings when the API is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct K8sSettings {
    pub source: ApiSource,
    pub node_name: String,
}

impl K8sArgs {
    /// `None` when the Kubernetes API is off. Reads the process environment and host name.
    pub fn settings(&self) -> Result<Option<K8sSettings>, K8sError> {
        self.resolve(
            |name| std::env::var(name).ok(),
            || {
                nix::unistd::gethostname()
                    .map_err(|e| e.to_string())
                    .and_then(|h| h.into_string().map_err(|_| "not UTF-8".to_string()))
            },
        )
    }

    /// [`Self::settings`] with the environment and host name given, so that it is testable.
    fn resolve(
        &self,
        env: impl Fn(&str) -> Option<String>,
        hostname: impl FnOnce() -> Result<String, String>,
    ) -> Result<Option<K8sSettings>, K8sError> {
        let in_cluster = env(SERVICE_HOST_ENV).is_some_and(|h| !h.is_empty());
        let kubeconfig = self
            .kubeconfig_path
            .clone()
            .filter(|p| !p.as_os_str().is_empty());
        let enabled = self
            .enable_k8s_api
            .unwrap_or(in_cluster || kubeconfig.is_some());
        if !enabled {
            return Ok(None);
        }
        // An explicit kubeconfig wins, as in Tetragon; without one only a pod has credentials.
        let source = match kubeconfig {
            Some(path) => ApiSource::Kubeconfig(path),
            None if in_cluster => ApiSource::InCluster,
            None => return Err(K8sError::NoApiOutsidePod),
        };
        let node_name = match self
            .node_name
            .clone()
            .filter(|n| !n.is_empty())
            .or_else(|| env(NODE_NAME_ENV).filter(|n| !n.is_empty()))
        {
            Some(name) => name,
            None => hostname().map_err(K8sError::NodeName)?,
        };
        Ok(Some(K8sSettings { source, node_name }))
    }
}

impl K8sSettings {
    /// A client for these settings. Reads the kubeconfig or the service account files; does
    /// not contact the API server yet.
    pub async fn client(&self) -> Result<kube::Client, K8sError> {
        let config = match &self.source {
            ApiSource::InCluster => kube::Config::incluster()?,
            ApiSource::Kubeconfig(path) => {
                let err = |source| K8sError::Kubeconfig {
                    path: path.clone(),
                    source,
                };
                let kubeconfig = Kubeconfig::read_from(path).map_err(err)?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                    .await
                    .map_err(err)?
            }
        };
        Ok(kube::Client::try_from(config)?)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        k8s: K8sArgs,
    }

    fn args(argv: &[&str]) -> K8sArgs {
        Cli::try_parse_from(std::iter::once("agent").chain(argv.iter().copied()))
            .expect("flags parse")
            .k8s
    }

    fn resolve(argv: &[&str], env: &[(&str, &str)]) -> Result<Option<K8sSettings>, K8sError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        args(argv).resolve(
            |name| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()),
            || Ok("host-a".to_string()),
        )
    }

    const POD: (&str, &str) = ("KUBERNETES_SERVICE_HOST", "10.0.0.1");

    #[test]
    fn outside_a_pod_the_api_is_off_by_default() {
        assert_eq!(resolve(&[], &[]).expect("resolves"), None);
    }

    #[test]
    fn in_a_pod_the_api_is_on_by_default_with_the_in_cluster_config() {
        let s = resolve(&[], &[POD, ("NODE_NAME", "node-1")])
            .expect("resolves")
            .expect("on");
        assert_eq!(s.source, ApiSource::InCluster);
        assert_eq!(s.node_name, "node-1");
    }

    #[test]
    fn enable_false_turns_the_api_off_even_in_a_pod() {
        assert_eq!(
            resolve(&["--enable-k8s-api=false"], &[POD]).expect("resolves"),
            None
        );
    }

    #[test]
    fn a_kubeconfig_path_is_used_and_wins_over_the_in_cluster_config() {
        let s = resolve(&["--k8s-kubeconfig-path", "/etc/kc"], &[POD])
            .expect("resolves")
            .expect("on");
        assert_eq!(s.source, ApiSource::Kubeconfig(PathBuf::from("/etc/kc")));
    }

    #[test]
    fn enabling_the_api_outside_a_pod_without_kubeconfig_is_an_error() {
        let err = resolve(&["--enable-k8s-api"], &[]).expect_err("no credentials");
        assert!(matches!(err, K8sError::NoApiOutsidePod), "{err}");
    }

    #[test]
    fn the_node_name_flag_wins_over_node_name_env_which_wins_over_the_host_name() {
        let flag = resolve(
            &["--node-name=from-flag"],
            &[POD, ("NODE_NAME", "from-env")],
        );
        assert_eq!(flag.expect("ok").expect("on").node_name, "from-flag");
        let env = resolve(&[], &[POD, ("NODE_NAME", "from-env")]);
        assert_eq!(env.expect("ok").expect("on").node_name, "from-env");
        let host = resolve(&[], &[POD, ("NODE_NAME", "")]);
        assert_eq!(host.expect("ok").expect("on").node_name, "host-a");
    }

    #[test]
    fn the_enable_flag_takes_no_separate_value() {
        // `--enable-k8s-api true` would swallow the next argument in Tetragon's Go flags too;
        // here `true` is left as a stray positional and rejected.
        assert!(
            Cli::try_parse_from(["agent", "--enable-k8s-api", "true"]).is_err(),
            "a bare value after the flag is not taken"
        );
        assert_eq!(args(&["--enable-k8s-api=true"]).enable_k8s_api, Some(true));
    }
}
