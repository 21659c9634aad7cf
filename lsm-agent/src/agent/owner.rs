//! The one task that owns the kernel: it holds the [`Agent`] (and through it the map writer)
//! and runs the commands that every other part of the daemon sends through an
//! [`AgentHandle`], one at a time, in the order they arrive.
//!
//! Senders: gRPC, the policy directory watcher, the Kubernetes TracingPolicy loader, the
//! `dns:` resolver and the metrics collector. The image the kernel enforces is published on a `watch` channel, so that
//! the event decoder reads it without ever waiting for the owner.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::PathBuf,
    sync::Arc,
};

use tokio::sync::{mpsc, oneshot, watch};

use super::{
    state::{Agent, AgentError, KernelStats, Source, SourceError},
    status::{Health, PolicyStatus},
};
use crate::bpf::canary::HookCanary;
use crate::policy::{
    compile::MapImage,
    ir::{Policy, PolicyMode},
    workloads::Workloads,
};

/// Commands waiting for the owner. Small: a sender that finds it full waits, which is the
/// back-pressure we want (changes are applied one by one anyway).
const QUEUE: usize = 64;

/// How often the `resolvePathInContainer` uprobes look for new and gone container roots (only
/// while such a policy is loaded).
const FOLLOW_CONTAINERS: std::time::Duration = std::time::Duration::from_secs(2);

type Reply<T> = oneshot::Sender<Result<T, AgentError>>;

/// One request to the owner, with where its answer goes.
enum Command {
    Add {
        policy: Box<Policy>,
        source: Source,
        reply: Reply<()>,
    },
    Upsert {
        source: Source,
        policy: Box<Policy>,
        reply: Reply<()>,
    },
    Remove {
        source: Source,
        reply: Reply<()>,
    },
    SetSourceError {
        source: Source,
        error: Option<SourceError>,
        reply: Reply<()>,
    },
    Reject {
        source: Source,
        message: String,
        reply: Reply<()>,
    },
    Withhold {
        source: Source,
        why: SourceError,
        reply: Reply<()>,
    },
    LoadErrors {
        reply: Reply<BTreeMap<&'static str, u64>>,
    },
    Delete {
        name: String,
        namespace: String,
        reply: Reply<()>,
    },
    SetEnabled {
        name: String,
        namespace: String,
        enabled: bool,
        reply: Reply<()>,
    },
    SetMode {
        name: String,
        namespace: String,
        mode: PolicyMode,
        reply: Reply<()>,
    },
    SetDns {
        table: BTreeMap<String, Vec<IpAddr>>,
        reply: Reply<()>,
    },
    SetWorkloads {
        workloads: Box<Workloads>,
        reply: Reply<()>,
    },
    DnsNames {
        reply: Reply<BTreeSet<String>>,
    },
    Status {
        reply: Reply<Vec<PolicyStatus>>,
    },
    KernelStats {
        reply: Reply<Option<KernelStats>>,
    },
    ProgramStats {
        reply: Reply<Vec<crate::bpf::ProgramStats>>,
    },
    Canary {
        reply: Reply<Arc<Vec<HookCanary>>>,
    },
}

/// Runs one command against the state machine and answers it. A requester that stopped
/// waiting does not undo the change.
fn execute(agent: &mut Agent, cmd: Command, canary: &watch::Sender<Option<Arc<Vec<HookCanary>>>>) {
    fn answer<T>(reply: Reply<T>, r: Result<T, AgentError>) {
        let _ = reply.send(r);
    }
    match cmd {
        Command::Add {
            policy,
            source,
            reply,
        } => answer(reply, agent.add(*policy, source)),
        Command::Upsert {
            source,
            policy,
            reply,
        } => answer(reply, agent.upsert(source, *policy)),
        Command::Remove { source, reply } => answer(reply, agent.remove(&source)),
        Command::SetSourceError {
            source,
            error,
            reply,
        } => {
            agent.set_source_error(source, error);
            answer(reply, Ok(()));
        }
        Command::Reject {
            source,
            message,
            reply,
        } => {
            agent.reject(source, message);
            answer(reply, Ok(()));
        }
        Command::Withhold { source, why, reply } => answer(reply, agent.withhold(source, why)),
        Command::LoadErrors { reply } => answer(reply, Ok(agent.load_errors())),
        Command::Delete {
            name,
            namespace,
            reply,
        } => answer(reply, agent.delete(&name, &namespace)),
        Command::SetEnabled {
            name,
            namespace,
            enabled,
            reply,
        } => answer(reply, agent.set_enabled(&name, &namespace, enabled)),
        Command::SetMode {
            name,
            namespace,
            mode,
            reply,
        } => answer(reply, agent.set_mode(&name, &namespace, mode)),
        Command::SetDns { table, reply } => answer(reply, agent.set_dns(table)),
        Command::SetWorkloads { workloads, reply } => {
            answer(reply, agent.set_workloads(*workloads))
        }
        Command::DnsNames { reply } => answer(reply, Ok(agent.dns_names())),
        Command::Status { reply } => answer(reply, Ok(agent.status())),
        Command::KernelStats { reply } => answer(reply, Ok(agent.kernel_stats())),
        Command::ProgramStats { reply } => answer(reply, Ok(agent.program_stats())),
        Command::Canary { reply } => {
            let report = Arc::new(agent.canary());
            canary.send_replace(Some(report.clone()));
            answer(reply, Ok(report));
        }
    }
}

/// The owner task: run it once (see [`Owner::run`]).
pub struct Owner {
    agent: Agent,
    commands: mpsc::Receiver<Command>,
    image: watch::Sender<Arc<MapImage>>,
    canary: watch::Sender<Option<Arc<Vec<HookCanary>>>>,
}

/// Puts `agent` behind an owner; the handle is how everything else reaches it.
pub fn owner(agent: Agent) -> (Owner, AgentHandle) {
    let (tx, commands) = mpsc::channel(QUEUE);
    let (image, images) = watch::channel(agent.image().clone());
    let modes = agent.hook_modes();
    let features = Arc::new(agent.features());
    let (canary, canaries) = watch::channel(None);
    let handle = AgentHandle {
        tx,
        images,
        modes,
        features,
        canaries,
    };
    let owner = Owner {
        agent,
        commands,
        image,
        canary,
    };
    (owner, handle)
}

impl Owner {
    /// Runs commands until every handle is gone. Dropping the future (shutdown) drops the
    /// agent and with it the map writer.
    pub async fn run(mut self) {
        let multi_thread = tokio::runtime::Handle::current().runtime_flavor()
            == tokio::runtime::RuntimeFlavor::MultiThread;
        let mut follow = tokio::time::interval(FOLLOW_CONTAINERS);
        follow.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let cmd = tokio::select! {
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => cmd,
                    None => break,
                },
                _ = follow.tick(), if self.agent.follows_containers() => {
                    // A container's process, and with it its root, appears after its cgroup
                    // (which is what changes the policies' workloads): look again.
                    if multi_thread {
                        tokio::task::block_in_place(|| self.agent.follow_containers());
                    } else {
                        self.agent.follow_containers();
                    }
                    continue;
                }
            };
            if multi_thread {
                // A plan switch waits for the kernel (one RCU grace period, milliseconds):
                // the runtime moves this worker's other tasks elsewhere meanwhile.
                tokio::task::block_in_place(|| execute(&mut self.agent, cmd, &self.canary));
            } else {
                execute(&mut self.agent, cmd, &self.canary);
            }
            let now = self.agent.image();
            // Published only when it changed, so that readers' `changed()` means something.
            self.image.send_if_modified(|img| {
                let changed = !Arc::ptr_eq(img, now);
                if changed {
                    *img = now.clone();
                }
                changed
            });
        }
    }
}

/// A cheap, cloneable way to the owner: every method sends one command and waits for its
/// answer. Fails with [`AgentError::OwnerStopped`] once the owner is gone.
#[derive(Clone)]
pub struct AgentHandle {
    tx: mpsc::Sender<Command>,
    images: watch::Receiver<Arc<MapImage>>,
    /// Fixed at start-up: the kernel's entry points do not change while the agent runs.
    modes: crate::bpf::HookModes,
    /// Fixed at start-up too: see [`crate::bpf::modes::feature_probes`].
    features: Arc<Vec<(String, bool)>>,
    /// The last canary's verdicts (`None` before the first).
    canaries: watch::Receiver<Option<Arc<Vec<HookCanary>>>>,
}

impl std::fmt::Debug for AgentHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentHandle")
            .field("closed", &self.tx.is_closed())
            .finish()
    }
}

impl AgentHandle {
    async fn request<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, AgentError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| AgentError::OwnerStopped)?;
        answer.await.map_err(|_| AgentError::OwnerStopped)?
    }

    /// Adds one policy (a name already loaded is refused).
    pub async fn add(&self, policy: Policy, source: Source) -> Result<(), AgentError> {
        let policy = Box::new(policy);
        self.request(|reply| Command::Add {
            policy,
            source,
            reply,
        })
        .await
    }

    /// Loads `policy` as the content of `source` (a file or a Kubernetes object), replacing
    /// its previous version without a gap (see [`Agent::upsert`]).
    pub async fn upsert(&self, source: Source, policy: Policy) -> Result<(), AgentError> {
        let policy = Box::new(policy);
        self.request(|reply| Command::Upsert {
            source,
            policy,
            reply,
        })
        .await
    }

    /// Loads `policy` as the content of the file `path`, replacing its previous version
    /// without a gap.
    pub async fn upsert_file(&self, path: PathBuf, policy: Policy) -> Result<(), AgentError> {
        self.upsert(Source::File(path), policy).await
    }

    /// Unloads the policy of `source` (the file or object is gone).
    pub async fn remove(&self, source: Source) -> Result<(), AgentError> {
        self.request(|reply| Command::Remove { source, reply })
            .await
    }

    /// Unloads the policy of the file `path` (gone from its directory).
    pub async fn remove_file(&self, path: PathBuf) -> Result<(), AgentError> {
        self.remove(Source::File(path)).await
    }

    /// Records (`None`: clears) why the latest content of `source` is not loaded; shown in
    /// the policy list.
    pub async fn set_source_error(
        &self,
        source: Source,
        error: Option<SourceError>,
    ) -> Result<(), AgentError> {
        self.request(|reply| Command::SetSourceError {
            source,
            error,
            reply,
        })
        .await
    }

    /// Records (`None`: clears) why the latest content of `path` is not loaded; shown in the
    /// policy list.
    pub async fn set_file_error(
        &self,
        path: PathBuf,
        error: Option<SourceError>,
    ) -> Result<(), AgentError> {
        self.set_source_error(Source::File(path), error).await
    }

    /// A new version of `source` was rejected: listed, counted, the loaded one kept (see
    /// [`Agent::reject`]).
    pub async fn reject(&self, source: Source, message: String) -> Result<(), AgentError> {
        self.request(|reply| Command::Reject {
            source,
            message,
            reply,
        })
        .await
    }

    /// Unloads any version of `source` and lists it with `why` (see [`Agent::withhold`]).
    pub async fn withhold(&self, source: Source, why: SourceError) -> Result<(), AgentError> {
        self.request(|reply| Command::Withhold { source, why, reply })
            .await
    }

    /// Rejected policy versions per source kind, since the start.
    pub async fn load_errors(&self) -> Result<BTreeMap<&'static str, u64>, AgentError> {
        self.request(|reply| Command::LoadErrors { reply }).await
    }

    pub async fn delete(&self, name: &str, namespace: &str) -> Result<(), AgentError> {
        let (name, namespace) = (name.to_owned(), namespace.to_owned());
        self.request(|reply| Command::Delete {
            name,
            namespace,
            reply,
        })
        .await
    }

    pub async fn set_enabled(
        &self,
        name: &str,
        namespace: &str,
        enabled: bool,
    ) -> Result<(), AgentError> {
        let (name, namespace) = (name.to_owned(), namespace.to_owned());
        self.request(|reply| Command::SetEnabled {
            name,
            namespace,
            enabled,
            reply,
        })
        .await
    }

    pub async fn set_mode(
        &self,
        name: &str,
        namespace: &str,
        mode: PolicyMode,
    ) -> Result<(), AgentError> {
        let (name, namespace) = (name.to_owned(), namespace.to_owned());
        self.request(|reply| Command::SetMode {
            name,
            namespace,
            mode,
            reply,
        })
        .await
    }

    /// Installs new answers for `dns:` names (see [`Agent::set_dns`]).
    pub async fn set_dns(&self, table: BTreeMap<String, Vec<IpAddr>>) -> Result<(), AgentError> {
        self.request(|reply| Command::SetDns { table, reply }).await
    }

    /// Installs the node's pods and containers by cgroup (see [`Agent::set_workloads`]).
    pub async fn set_workloads(&self, workloads: Workloads) -> Result<(), AgentError> {
        let workloads = Box::new(workloads);
        self.request(|reply| Command::SetWorkloads { workloads, reply })
            .await
    }

    /// Every `dns:` name the loaded policies use.
    pub async fn dns_names(&self) -> Result<BTreeSet<String>, AgentError> {
        self.request(|reply| Command::DnsNames { reply }).await
    }

    pub async fn status(&self) -> Result<Vec<PolicyStatus>, AgentError> {
        self.request(|reply| Command::Status { reply }).await
    }

    pub async fn kernel_stats(&self) -> Result<Option<KernelStats>, AgentError> {
        self.request(|reply| Command::KernelStats { reply }).await
    }

    pub async fn program_stats(&self) -> Result<Vec<crate::bpf::ProgramStats>, AgentError> {
        self.request(|reply| Command::ProgramStats { reply }).await
    }

    /// Runs the canary of every enforcing hook (in the owner's thread, which the kernel
    /// denies) and returns its verdicts; health reflects them from now on.
    pub async fn canary(&self) -> Result<Arc<Vec<HookCanary>>, AgentError> {
        self.request(|reply| Command::Canary { reply }).await
    }

    /// The last canary's verdicts, `None` before the first.
    pub fn last_canary(&self) -> Option<Arc<Vec<HookCanary>>> {
        self.canaries.borrow().clone()
    }

    pub fn health(&self) -> Health {
        let canary = self.last_canary();
        super::status::health(
            !self.tx.is_closed(),
            &self.modes,
            canary.as_deref().map(|v| v.as_slice()),
        )
    }

    /// The entry point each hook got on this kernel.
    pub fn hook_modes(&self) -> crate::bpf::HookModes {
        self.modes
    }

    /// What the kernel offers and what each hook got, `(name, yes)`.
    pub fn features(&self) -> Arc<Vec<(String, bool)>> {
        self.features.clone()
    }

    /// The image the kernel enforces now; never waits for the owner.
    pub fn image(&self) -> Arc<MapImage> {
        self.images.borrow().clone()
    }

    /// The image the kernel enforces, as it changes.
    pub fn images(&self) -> watch::Receiver<Arc<MapImage>> {
        self.images.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::{
        agent::{
            state::tests::Recorder,
            status::{HealthState, PolicyState},
        },
        policy::{ir::HostNs, parse::parse_policy},
    };

    fn policy() -> Policy {
        parse_policy(super::super::state::tests::YAML, Path::new("<test>")).unwrap()
    }

    #[tokio::test]
    async fn commands_reach_the_owner_and_the_new_image_is_published() {
        let (r, images) = Recorder::new();
        let (owner, handle) = owner(Agent::new(Box::new(r), HostNs::default()));
        let task = tokio::spawn(owner.run());
        let mut published = handle.images();
        assert!(handle.image().str_eq.is_empty());

        handle.add(policy(), Source::Grpc).await.unwrap();
        assert!(published.has_changed().unwrap());
        assert_eq!(published.borrow_and_update().str_eq.len(), 1);
        assert_eq!(handle.image().str_eq.len(), 1);
        assert_eq!(images.lock().unwrap().len(), 1);

        // A refused change publishes nothing and answers with its typed error.
        let err = handle.add(policy(), Source::Grpc).await.unwrap_err();
        assert!(matches!(err, AgentError::Duplicate(_)));
        assert!(!published.has_changed().unwrap());

        handle
            .set_enabled("lsm-file-open", "", false)
            .await
            .unwrap();
        assert!(published.borrow_and_update().str_eq.is_empty());
        let st = handle.status().await.unwrap();
        assert_eq!(st[0].state, PolicyState::Disabled);
        assert_eq!(handle.health().state, HealthState::Running);

        drop(published);
        drop(handle);
        // Every handle gone: the owner ends by itself.
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_stopped_owner_is_a_typed_error_not_a_hang() {
        let (r, _) = Recorder::new();
        let (owner, handle) = owner(Agent::new(Box::new(r), HostNs::default()));
        drop(owner);
        assert!(matches!(
            handle.status().await,
            Err(AgentError::OwnerStopped)
        ));
        assert!(matches!(
            handle.add(policy(), Source::Grpc).await,
            Err(AgentError::OwnerStopped)
        ));
        assert_eq!(handle.health().state, HealthState::Stopped);
        // The last image stays readable for the decoder.
        assert!(handle.image().str_eq.is_empty());
    }
}
