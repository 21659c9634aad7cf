//! The node's workloads, from the API (this node's pods, [`super::pods`]) and cgroupfs
//! ([`super::cgroupfs`]): the [`Workloads`] the compiler scopes policies with, sent to the
//! policy owner when they change, and the [`PodIndex`] that tells the events which pod and
//! container a cgroup is.
//!
//! * a parent of pod cgroups is a [`CgroupOwner::PodParent`];
//! * a pod cgroup whose UID (or static pod hash) is a known pod is a [`CgroupOwner::Pod`]: it
//!   stands for all its containers, also those that have no ID in the pod's status yet;
//! * a container cgroup whose ID is in the pod's status is a [`CgroupOwner::Container`]; one
//!   whose ID is not (yet) there is left out, so that the pod's entry stands for it.
//!
//! The kubelet creates a pod's cgroup before its containers; the pod is known from the API
//! by then (it is bound to this node before the kubelet acts on it), so its entry reaches
//! the kernel before the first process of the pod runs. The path from "pod cgroup created"
//! (an inotify event) to the owner is: one scan of the new directory, a short quiet window
//! that coalesces bursts, one compile; its latency is logged at debug level.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime};

use kube::Client;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::cgroup;
use super::cgroupfs::{self, CgroupWatcher, Cgroups, Found, FsEvent};
use super::identity::{ContainerInfo, IdentityStore, PodEvent, PodInfo};
use super::pods::watch_pods;
use crate::agent::{AgentError, AgentHandle};
use crate::events::model;
use crate::policy::workloads::{CgroupOwner, PodView, Workloads};

/// Pod events waiting for the sync; the pod watcher waits when it is full.
const QUEUE: usize = 256;
/// Cgroups parsed from `/proc/<pid>/cgroup` that are remembered (then forgotten at once).
const PARSED_MAX: usize = 16 * 1024;

/// Where and how often.
#[derive(Debug, Clone)]
pub struct Options {
    /// The cgroup v2 mount.
    pub cgroup_root: PathBuf,
    /// `/proc`, for processes in cgroups the scan does not list.
    pub proc_root: PathBuf,
    /// Full rescan of the cgroup tree, the safety net under inotify.
    pub rescan: Duration,
    /// A change is sent once nothing else changed for this long…
    pub quiet: Duration,
    /// …or at the latest this long after the first unsent change.
    pub max_delay: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            cgroup_root: PathBuf::from(cgroupfs::DEFAULT_ROOT),
            proc_root: PathBuf::from("/proc"),
            rescan: Duration::from_secs(30),
            quiet: Duration::from_millis(5),
            max_delay: Duration::from_millis(100),
        }
    }
}

/// What the pod watcher and the cgroup watcher know, shared with the readers.
#[derive(Debug, Default)]
struct Shared {
    store: IdentityStore,
    cgroups: Cgroups,
}

/// The pod a cgroup path names, as `/proc/<pid>/cgroup` showed it.
#[derive(Debug, Clone)]
struct Named {
    uid: String,
    container: Option<String>,
}

/// Which pod and container a cgroup is: cheap to clone and to ask from any thread.
#[derive(Debug, Clone)]
pub struct PodIndex {
    shared: Arc<RwLock<Shared>>,
    proc_root: PathBuf,
    /// By cgroup id: what `/proc/<pid>/cgroup` said of cgroups the scan does not list (host
    /// cgroups, those below a container's); a cgroup id is never reused, so this stays true.
    named: Arc<Mutex<HashMap<u64, Option<Named>>>>,
    /// By cgroup id: the pod last handed to the enrichment, handed again while it is equal
    /// (the process cache then sees "unchanged" by pointer).
    handed: Arc<Mutex<HashMap<u64, Arc<model::Pod>>>>,
}

/// The enrichment's view: every event of a process in a pod carries the pod.
impl crate::events::enrich::PodLookup for PodIndex {
    fn pod_of(&self, cgroup_id: u64, tgid: u32) -> Option<Arc<model::Pod>> {
        let pod = PodIndex::pod_of(self, cgroup_id, tgid)?;
        if cgroup_id == 0 {
            return Some(Arc::new(pod));
        }
        let mut handed = self.handed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(same) = handed.get(&cgroup_id).filter(|p| ***p == pod) {
            return Some(same.clone());
        }
        if handed.len() >= PARSED_MAX {
            handed.clear();
        }
        let pod = Arc::new(pod);
        handed.insert(cgroup_id, pod.clone());
        Some(pod)
    }
}

impl PodIndex {
    pub fn new(proc_root: impl Into<PathBuf>) -> Self {
        PodIndex {
            shared: Arc::default(),
            proc_root: proc_root.into(),
            named: Arc::default(),
            handed: Arc::default(),
        }
    }

    // A panic while holding the lock leaves data that is still consistent enough to read:
    // every writer replaces whole entries.
    fn read(&self) -> RwLockReadGuard<'_, Shared> {
        self.shared.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Shared> {
        self.shared.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The pod (and container, when known) of a process in cgroup `cgroup_id`; `None` for a
    /// host process and for pods this node's API view does not have. For a pod's own cgroup,
    /// or a child of it that is no known container, the pod without container. A cgroup the
    /// scan does not list (the process may have started before the agent, or be in a
    /// container's sub-cgroup) is looked up from `/proc/<tgid>/cgroup`.
    pub fn pod_of(&self, cgroup_id: u64, tgid: u32) -> Option<model::Pod> {
        {
            let s = self.read();
            match s.cgroups.get(cgroup_id) {
                Some(Found::PodParent) => return None,
                Some(Found::Pod { uid }) => {
                    return s.store.pod_by_cgroup_uid(uid).map(|p| model_pod(p, None));
                }
                Some(Found::PodChild { uid, container }) => {
                    let pod = s.store.pod_by_cgroup_uid(uid)?;
                    let c = container.as_deref().and_then(|id| pod.container_by_id(id));
                    return Some(model_pod(pod, c));
                }
                None => {}
            }
        }
        let named = self.named(cgroup_id, tgid)?;
        let s = self.read();
        let pod = s.store.pod_by_cgroup_uid(&named.uid)?;
        let c = named
            .container
            .as_deref()
            .and_then(|id| pod.container_by_id(id));
        Some(model_pod(pod, c))
    }

    fn named(&self, cgroup_id: u64, tgid: u32) -> Option<Named> {
        let lock = || self.named.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(hit) = lock().get(&cgroup_id) {
            return hit.clone();
        }
        // Outside the lock: a read of /proc can be slow.
        let path = self.proc_root.join(tgid.to_string()).join("cgroup");
        let text = std::fs::read_to_string(path).ok()?;
        let named = cgroup::unified_path(&text)
            .and_then(cgroup::parse)
            .map(|p| Named {
                container: p.container_id().map(str::to_string),
                uid: p.uid,
            });
        // 0: the kernel could not tell; the answer is this process's only.
        if cgroup_id != 0 {
            let mut cache = lock();
            if cache.len() >= PARSED_MAX {
                cache.clear();
            }
            cache.insert(cgroup_id, named.clone());
        }
        named
    }

    /// The scoping input for what is known now.
    pub fn workloads(&self) -> Workloads {
        let s = self.read();
        workloads_of(&s.store, &s.cgroups)
    }

    /// The pods known now.
    pub fn pod_count(&self) -> usize {
        self.read().store.len()
    }
}

/// The scoping input: the kubelet's parents, the known pods' cgroups and their containers
/// with an ID in the status (see the module documentation).
pub fn workloads_of(store: &IdentityStore, cgroups: &Cgroups) -> Workloads {
    let mut views: HashMap<&str, Arc<PodView>> = HashMap::new();
    let mut out = Workloads {
        enabled: true,
        ..Default::default()
    };
    for (id, found) in cgroups.iter() {
        let owner = match found {
            Found::PodParent => Some(CgroupOwner::PodParent),
            Found::Pod { uid } => store
                .pod_by_cgroup_uid(uid)
                .map(|p| CgroupOwner::Pod(view(&mut views, p))),
            Found::PodChild {
                uid,
                container: Some(cid),
            } => store.pod_by_cgroup_uid(uid).and_then(|p| {
                let c = p.container_by_id(cid)?;
                Some(CgroupOwner::Container {
                    pod: view(&mut views, p),
                    name: c.name.clone(),
                    image_id: c.image_id.clone(),
                })
            }),
            Found::PodChild {
                container: None, ..
            } => None,
        };
        if let Some(owner) = owner {
            out.cgroups.insert(id, owner);
        }
    }
    for (path, id) in cgroups.dirs() {
        if out.cgroups.contains_key(&id) {
            out.dirs.insert(id, path.to_path_buf());
        }
    }
    out
}

/// One shared view per pod, for all its cgroups.
fn view<'a>(views: &mut HashMap<&'a str, Arc<PodView>>, p: &'a PodInfo) -> Arc<PodView> {
    views
        .entry(p.uid.as_str())
        .or_insert_with(|| {
            Arc::new(PodView {
                namespace: p.namespace.clone(),
                name: p.name.clone(),
                labels: p.labels.clone(),
            })
        })
        .clone()
}

/// A pod as events carry it.
pub fn model_pod(pod: &PodInfo, container: Option<&ContainerInfo>) -> model::Pod {
    model::Pod {
        namespace: pod.namespace.clone(),
        name: pod.name.clone(),
        uid: pod.uid.clone(),
        labels: pod.labels.clone(),
        workload: pod.workload.clone(),
        workload_kind: pod.workload_kind.clone(),
        container: container.map(|c| model::Container {
            id: c
                .status_id
                .clone()
                .or_else(|| c.id.clone())
                .unwrap_or_default(),
            name: c.name.clone(),
            image: Some(model::Image {
                id: c.image_id.clone(),
                name: c.image.clone(),
            }),
            start_time: c.started_at.and_then(time),
            pid: None,
            maybe_exec_probe: false,
        }),
    }
}

fn time(t: SystemTime) -> Option<model::Time> {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).ok()?;
    Some(model::Time::from_unix_nanos(
        i128::try_from(d.as_nanos()).ok()?,
    ))
}

/// A [`Workloads`] ready for the owner, with the time of the oldest change it carries.
#[derive(Debug, Clone)]
pub struct Published {
    pub workloads: Arc<Workloads>,
    pub since: Instant,
}

/// When the next send is due.
#[derive(Debug, Clone, Copy)]
struct Pending {
    first: Instant,
    due: Instant,
}

/// The sync's state: applies pod and cgroup changes to the index and decides when to publish.
struct Sync {
    index: PodIndex,
    opts: Options,
    /// The initial pod list is complete.
    synced: bool,
    pending: Option<Pending>,
    last: Option<Workloads>,
}

impl Sync {
    fn changed(&mut self, at: Instant) {
        let (quiet, max) = (self.opts.quiet, self.opts.max_delay);
        self.pending = Some(match self.pending {
            None => Pending {
                first: at,
                due: at + quiet,
            },
            Some(p) => Pending {
                first: p.first,
                due: (at + quiet).min(p.first + max),
            },
        });
    }

    fn pod_event(&mut self, event: PodEvent, at: Instant) {
        if event == PodEvent::Synced {
            if !self.synced {
                info!(pods = self.index.pod_count(), "pods of this node listed");
            }
            self.synced = true;
            self.changed(at);
            return;
        }
        if self.index.write().store.apply(event).is_some() {
            self.changed(at);
        }
    }

    fn rescan(&mut self, watcher: &mut Option<CgroupWatcher>, at: Instant) {
        let root = &self.opts.cgroup_root;
        let dirs = cgroupfs::scan(root, root);
        let changed = {
            let mut s = self.index.write();
            let changed = s.cgroups.replace(dirs);
            if let Some(w) = watcher {
                w.follow(&s.cgroups);
            }
            changed
        };
        if changed {
            self.changed(at);
        }
    }

    fn fs_event(&mut self, event: FsEvent, watcher: &mut Option<CgroupWatcher>, at: Instant) {
        let changed = match &event {
            FsEvent::Created(path) => {
                // The new directory and what was created in it before its watch was added.
                let dirs = cgroupfs::scan(&self.opts.cgroup_root, path);
                if let Some(d) = dirs
                    .first()
                    .filter(|d| matches!(d.found, Found::Pod { .. }))
                {
                    debug!(cgroup = %d.path.display(), id = d.id, "pod cgroup created");
                }
                if let Some(w) = watcher {
                    w.follow_created(&dirs);
                }
                self.index.write().cgroups.insert(dirs)
            }
            FsEvent::Removed(path) => {
                if let Some(w) = watcher {
                    w.follow_removed(path);
                }
                self.index.write().cgroups.remove_under(path)
            }
            FsEvent::Lost => {
                warn!("cgroup events lost; rescanning");
                return self.rescan(watcher, at);
            }
        };
        if changed {
            self.changed(at);
        }
    }

    /// Sends the workloads when due and different from the last ones sent. Nothing before
    /// the pods are listed: until then the agent's are those of start-up (no pod listed).
    fn publish(&mut self, out: &watch::Sender<Option<Published>>) {
        let Some(p) = self.pending.take() else {
            return;
        };
        if !self.synced {
            return;
        }
        let now = self.index.workloads();
        if self.last.as_ref() == Some(&now) {
            return;
        }
        self.last = Some(now.clone());
        out.send_replace(Some(Published {
            workloads: Arc::new(now),
            since: p.first,
        }));
    }
}

async fn until(due: Option<Instant>) {
    match due {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

async fn next_fs(watcher: &mut Option<CgroupWatcher>) -> FsEvent {
    match watcher {
        Some(w) => w.next().await,
        None => std::future::pending().await,
    }
}

/// Keeps `index` in step with `pods` and the cgroup tree, and publishes the workloads on
/// `out` when they change (after the initial pod list). Ends when `pods` closes.
pub async fn sync(
    index: PodIndex,
    opts: Options,
    mut pods: mpsc::Receiver<PodEvent>,
    out: watch::Sender<Option<Published>>,
) {
    let root = opts.cgroup_root.clone();
    let mut watcher = match CgroupWatcher::new(&root) {
        Ok(w) => Some(w),
        Err(e) => {
            warn!(root = %root.display(), error = %e, rescan = ?opts.rescan, "cannot watch the cgroup tree; new pods are found by rescans only");
            None
        }
    };
    let mut rescan = tokio::time::interval_at(Instant::now() + opts.rescan, opts.rescan);
    rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut state = Sync {
        index,
        opts,
        synced: false,
        pending: None,
        last: None,
    };
    // After the watches are in place, so that nothing created meanwhile is missed.
    state.rescan(&mut watcher, Instant::now());
    let listed = state.index.read().cgroups.len();
    info!(root = %root.display(), cgroups = listed, "kubelet cgroups listed");
    loop {
        let due = state.pending.map(|p| p.due);
        tokio::select! {
            event = pods.recv() => match event {
                Some(e) => state.pod_event(e, Instant::now()),
                None => return,
            },
            event = next_fs(&mut watcher) => state.fs_event(event, &mut watcher, Instant::now()),
            _ = rescan.tick() => state.rescan(&mut watcher, Instant::now()),
            () = until(due) => state.publish(&out),
        }
    }
}

/// Installs every published [`Workloads`] in the agent; while the owner compiles, newer ones
/// replace the waiting one. Fails only when the owner is gone.
/// `installed` turns true once the first workloads after the pod listing are installed.
pub async fn forward(
    mut published: watch::Receiver<Option<Published>>,
    agent: AgentHandle,
    installed: watch::Sender<bool>,
) -> Result<(), AgentError> {
    while published.changed().await.is_ok() {
        let Some(p) = published.borrow_and_update().clone() else {
            continue;
        };
        let cgroups = p.workloads.cgroups.len();
        match agent.set_workloads((*p.workloads).clone()).await {
            Ok(()) => {
                installed.send_replace(true);
                debug!(
                    cgroups,
                    latency_us = p.since.elapsed().as_micros() as u64,
                    "workloads installed (latency: from the first change they carry)"
                )
            }
            Err(AgentError::OwnerStopped) => return Err(AgentError::OwnerStopped),
            Err(e) => error!(
                cgroups,
                "workloads not installed, the previous ones stay: {e}"
            ),
        }
    }
    Ok(())
}

/// The pod watcher, the sync and the forwarder, until the agent is gone. `installed` as in
/// [`forward`].
pub async fn watch_and_send(
    client: Client,
    node_name: String,
    agent: AgentHandle,
    index: PodIndex,
    opts: Options,
    installed: watch::Sender<bool>,
) -> Result<(), AgentError> {
    let (tx, rx) = mpsc::channel(QUEUE);
    let (out, published) = watch::channel(None);
    tokio::select! {
        // The watcher ends only when the sync stopped receiving, the sync when the watcher
        // stopped: either way the task is over.
        () = watch_pods(client, &node_name, tx) => Ok(()),
        () = sync(index, opts, rx, out) => Ok(()),
        r = forward(published, agent, installed) => r,
    }
}

#[cfg(test)]
mod tests;
