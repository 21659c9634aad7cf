//! Turns the CRD watcher's [`PolicyEvent`]s into commands to the policy owner: the
//! `TracingPolicy` objects of the cluster become loaded policies of [`Source::Kubernetes`].
//!
//! * Apply: parsed (errors at `<TracingPolicy name>:line:col`) and loaded, replacing the
//!   object's previous version in one switch. A version that fails to parse or compile is
//!   logged, listed as `ERROR` (the previous version keeps enforcing) or `LOAD_ERROR` (none
//!   loaded) and counted; nothing that enforces changes.
//! * Skip (`nodeSelector` does not select this node): unloaded, listed as skipped.
//! * Delete: unloaded.
//! * Synced: policies of that kind the agent holds but the listing no longer has are unloaded.
//!
//! Policies meant for some workloads (a `TracingPolicyNamespaced`, `podSelector`,
//! `containerSelector`, `hostSelector`) load like any other: the compiler narrows them to
//! the cgroups of the pods they select ([`super::workloads`] keeps those current), and the
//! kernel checks the process's cgroup at the hook.

use std::collections::HashSet;

use kube::Client;
use tokio::sync::{mpsc, watch};
use tracing::{error, info};

use super::policies::{PolicyEvent, PolicyKey, PolicyKind, watch_policies};
use crate::agent::{AgentError, AgentHandle, CrdKind, KubeObject, Source, SourceError};
use crate::policy::parse::parse_policy;

/// Events waiting for the loader; the watcher waits when it is full.
const QUEUE: usize = 64;

/// Watches the TracingPolicy CRDs and keeps the agent's Kubernetes policies in step with them,
/// until the agent is gone.
/// `synced` turns true once every kind has been listed and applied (the agent then holds
/// what the API server has: an earlier agent's pinned programs can be retired).
pub async fn watch_and_load(
    client: Client,
    node_name: String,
    agent: AgentHandle,
    synced: watch::Sender<bool>,
) -> Result<(), AgentError> {
    let (tx, rx) = mpsc::channel(QUEUE);
    let watch = async move { watch_policies(client, &node_name, tx).await };
    tokio::select! {
        // The watcher only ends when the loader stopped receiving.
        () = watch => Ok(()),
        r = run_until_synced(agent, rx, synced) => r,
    }
}

/// Applies `events` to the agent until the channel closes. Fails only when the agent is gone.
pub async fn run(
    agent: AgentHandle,
    events: mpsc::Receiver<PolicyEvent>,
) -> Result<(), AgentError> {
    run_until_synced(agent, events, watch::channel(false).0).await
}

async fn run_until_synced(
    agent: AgentHandle,
    mut events: mpsc::Receiver<PolicyEvent>,
    synced: watch::Sender<bool>,
) -> Result<(), AgentError> {
    let mut loader = Loader::default();
    let mut listed = HashSet::new();
    while let Some(event) = events.recv().await {
        let kind = match &event {
            PolicyEvent::Synced { kind } => Some(*kind),
            _ => None,
        };
        loader.handle(event, &agent).await?;
        if let Some(kind) = kind {
            listed.insert(kind);
            if listed.len() == PolicyKind::ALL.len() {
                synced.send_replace(true);
            }
        }
    }
    Ok(())
}

/// What the loader knows: the objects it has been told exist (applied, skipped or rejected),
/// to find the ones a re-list no longer has.
#[derive(Debug, Default)]
struct Loader {
    known: HashSet<PolicyKey>,
}

/// The agent's name for a watcher key.
pub fn object_of(key: &PolicyKey) -> KubeObject {
    KubeObject {
        kind: match key.kind {
            PolicyKind::TracingPolicy => CrdKind::TracingPolicy,
            PolicyKind::TracingPolicyNamespaced => CrdKind::TracingPolicyNamespaced,
        },
        namespace: key.namespace.clone(),
        name: key.name.clone(),
    }
}

impl Loader {
    async fn handle(&mut self, event: PolicyEvent, agent: &AgentHandle) -> Result<(), AgentError> {
        match event {
            PolicyEvent::Apply { key, yaml } => {
                self.known.insert(key.clone());
                self.apply(&key, &yaml, agent).await
            }
            PolicyEvent::Skip { key, reason } => {
                self.known.insert(key.clone());
                let source = Source::Kubernetes(object_of(&key));
                match agent
                    .withhold(source, SourceError::Skipped(reason.clone()))
                    .await
                {
                    Ok(()) => info!(policy = %key, "policy skipped on this node: {reason}"),
                    Err(AgentError::OwnerStopped) => return Err(AgentError::OwnerStopped),
                    Err(e) => error!(policy = %key, "unloading a skipped policy failed: {e}"),
                }
                Ok(())
            }
            PolicyEvent::Delete { key } => {
                self.known.remove(&key);
                self.remove(Source::Kubernetes(object_of(&key)), agent)
                    .await
            }
            PolicyEvent::Synced { kind } => self.synced(kind, agent).await,
        }
    }

    async fn apply(
        &mut self,
        key: &PolicyKey,
        yaml: &str,
        agent: &AgentHandle,
    ) -> Result<(), AgentError> {
        let object = object_of(key);
        let source = Source::Kubernetes(object.clone());
        // No `${VAR}` expansion: the object is what the API server holds (kubectl users run
        // envsubst before applying, as the guide does).
        let loaded = match parse_policy(yaml, &object.pseudo_path()) {
            Ok(mut policy) => {
                // Honoured by the watcher; the parser's "ignored" warning is for files.
                policy.warnings.retain(|w| !w.contains("spec.nodeSelector"));
                agent.upsert(source.clone(), policy).await
            }
            Err(e) => Err(AgentError::Parse(e)),
        };
        match loaded {
            Ok(()) => {
                info!(policy = %key, "policy (re)loaded from Kubernetes");
                Ok(())
            }
            Err(AgentError::OwnerStopped) => Err(AgentError::OwnerStopped),
            Err(e) => {
                error!(policy = %key, "policy not loaded, previous version (if any) kept: {e}");
                agent.reject(source, e.to_string()).await
            }
        }
    }

    async fn remove(&mut self, source: Source, agent: &AgentHandle) -> Result<(), AgentError> {
        match agent.remove(source.clone()).await {
            Ok(()) => {
                if let Source::Kubernetes(o) = &source {
                    info!(policy = %o, "policy object gone, policy unloaded");
                }
                Ok(())
            }
            Err(AgentError::OwnerStopped) => Err(AgentError::OwnerStopped),
            Err(e) => {
                error!(source = ?source, "unloading policy: {e}");
                Ok(())
            }
        }
    }

    /// After a complete listing of `kind`: the agent's policies of that kind that the loader
    /// was not told about (e.g. deleted while a previous watcher was down) are unloaded.
    async fn synced(&mut self, kind: PolicyKind, agent: &AgentHandle) -> Result<(), AgentError> {
        let known: HashSet<KubeObject> = self.known.iter().map(object_of).collect();
        let kind = object_of(&PolicyKey {
            kind,
            namespace: None,
            name: String::new(),
        })
        .kind;
        let mut gone: Vec<Source> = agent
            .status()
            .await?
            .into_iter()
            .map(|p| p.source)
            .filter(|s| matches!(s, Source::Kubernetes(o) if o.kind == kind && !known.contains(o)))
            .collect();
        gone.sort();
        gone.dedup();
        for source in gone {
            self.remove(source, agent).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::{Agent, PolicyState, owner, state::tests::Recorder};
    use crate::policy::ir::HostNs;

    fn key(name: &str) -> PolicyKey {
        PolicyKey {
            kind: PolicyKind::TracingPolicy,
            namespace: None,
            name: name.into(),
        }
    }

    fn apply(name: &str, yaml: &str) -> PolicyEvent {
        PolicyEvent::Apply {
            key: key(name),
            yaml: yaml.replace("loader-file-open", name),
        }
    }

    async fn loaded(events: Vec<PolicyEvent>, agent: &AgentHandle) {
        let (tx, rx) = mpsc::channel(16);
        for e in events {
            tx.send(e).await.unwrap();
        }
        drop(tx);
        run(agent.clone(), rx).await.unwrap();
    }

    #[tokio::test]
    async fn a_relist_unloads_what_a_previous_watcher_loaded_and_the_new_one_did_not_list() {
        let (r, _) = Recorder::new();
        let (owner, agent) = owner(Agent::new(Box::new(r), HostNs::default()));
        tokio::spawn(owner.run());
        let sync = PolicyEvent::Synced {
            kind: PolicyKind::TracingPolicy,
        };
        loaded(vec![apply("a", CLUSTER), apply("b", CLUSTER)], &agent).await;
        assert_eq!(agent.status().await.unwrap().len(), 2);
        // A new loader (the watcher restarted) is told about `a` only.
        loaded(vec![apply("a", CLUSTER), sync], &agent).await;
        let st = agent.status().await.unwrap();
        let names: Vec<&str> = st.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a"]);
    }

    #[tokio::test]
    async fn a_broken_version_is_an_error_with_the_objects_position_and_keeps_the_old_one() {
        let (r, _) = Recorder::new();
        let (owner, agent) = owner(Agent::new(Box::new(r), HostNs::default()));
        tokio::spawn(owner.run());
        let broken = CLUSTER.replace("operator: \"Equal\"", "operator: \"Equals\"");
        loaded(vec![apply("a", CLUSTER), apply("a", &broken)], &agent).await;
        let st = agent.status().await.unwrap();
        assert_eq!(st[0].state, PolicyState::Error);
        let error = st[0].error.as_deref().unwrap();
        assert!(error.contains("<TracingPolicy a>:"), "{error}");
        assert!(!agent.image().str_eq.is_empty(), "the old version enforces");
        assert_eq!(
            agent.load_errors().await.unwrap().get("kubernetes"),
            Some(&1)
        );
    }

    const CLUSTER: &str = include_str!("testdata/tp-lsm-file-open.yaml");
    const POD_SELECTED: &str = include_str!("testdata/tp-pod-selector.yaml");

    #[tokio::test]
    async fn a_pod_selected_policy_loads_and_applies_only_to_the_cgroups_of_the_pods_it_selects() {
        use std::sync::Arc;

        use crate::policy::workloads::{CgroupOwner, PodView, Workloads};

        let (r, _) = Recorder::new();
        let (owner, agent) = owner(Agent::new(Box::new(r), HostNs::default()));
        tokio::spawn(owner.run());
        let pod = |app: &str| {
            CgroupOwner::Pod(Arc::new(PodView {
                namespace: "default".into(),
                name: app.into(),
                labels: [("app".to_string(), app.to_string())].into(),
            }))
        };
        let workloads = Workloads {
            enabled: true,
            cgroups: [(100, pod("xwing")), (200, pod("tiefighter"))].into(),
            ..Workloads::default()
        };
        agent.set_workloads(workloads).await.unwrap();
        loaded(vec![apply("p", POD_SELECTED)], &agent).await;
        let st = agent.status().await.unwrap();
        assert_eq!(st[0].state, PolicyState::Enabled, "{st:#?}");
        let img = agent.image();
        let bits = |id: u64| img.cgroups[&id].selectors.iter().fold(0, |a, b| a | b);
        assert_ne!(bits(100), 0, "the xwing pod is in scope");
        assert_eq!(bits(200), 0, "the tiefighter pod is not");
        assert_eq!(bits(lsm_shared::CGROUP_HOST), 0, "host processes are not");
    }
}
