//! The pods of this node, by UID and by container ID: the store [`super::pods`] keeps in sync
//! with the API server, and that answers "which pod and container is this cgroup".
//!
//! It holds our own types only; [`super::pods`] converts the API's `Pod` objects.

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use super::cgroup::{self, PodChild};

/// What the agent knows of a pod (the fields of Tetragon's `Pod` message and more).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    /// `metadata.uid`.
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// The owning workload's name (Deployment, DaemonSet, CronJob, …), or the pod's own name.
    pub workload: String,
    /// `Deployment`, `ReplicaSet`, `DaemonSet`, `StatefulSet`, `Job`, `CronJob`, … or `Pod`.
    pub workload_kind: String,
    /// For a static pod's mirror: the kubelet's config hash, which names the pod's cgroup in
    /// place of `metadata.uid`.
    pub static_hash: Option<String>,
    /// Init, regular and ephemeral containers, in that order.
    pub containers: Vec<ContainerInfo>,
}

/// One container of a pod, from its spec and (once the runtime reports it) its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub name: String,
    /// The runtime's ID without its `containerd://` (or `cri-o://`, `docker://`) prefix;
    /// `None` until the kubelet reports it in the pod's status.
    pub id: Option<String>,
    /// The status `containerID` as reported, with its runtime (`containerd://…`): the ID
    /// Tetragon's events carry. `None` with `id`.
    pub status_id: Option<String>,
    /// The image as reported in the status, or as written in the spec before that.
    pub image: String,
    /// The status `imageID` (`repo@sha256:…`), empty until reported.
    pub image_id: String,
    /// When the current instance started running.
    pub started_at: Option<SystemTime>,
}

impl PodInfo {
    pub fn container_by_id(&self, id: &str) -> Option<&ContainerInfo> {
        self.containers.iter().find(|c| c.id.as_deref() == Some(id))
    }

    pub fn container_by_name(&self, name: &str) -> Option<&ContainerInfo> {
        self.containers.iter().find(|c| c.name == name)
    }

    /// The UID the kubelet writes into this pod's cgroup name.
    pub fn cgroup_uid(&self) -> &str {
        self.static_hash.as_deref().unwrap_or(&self.uid)
    }

    fn container_ids(&self) -> impl Iterator<Item = &str> {
        self.containers.iter().filter_map(|c| c.id.as_deref())
    }
}

/// A change reported by the pod watcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodEvent {
    /// Added or modified: the pod as it is now.
    Applied(PodInfo),
    Deleted {
        uid: String,
    },
    /// The initial list (or a re-list after a lost watch) is complete: the store now holds
    /// every pod of the node.
    Synced,
}

/// What one event changed in the store: the pod before and after (`None` when absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodChange {
    pub old: Option<PodInfo>,
    pub new: Option<PodInfo>,
}

impl PodChange {
    /// The pod's labels differ (also true when the pod came or went).
    pub fn labels_changed(&self) -> bool {
        self.old.as_ref().map(|p| &p.labels) != self.new.as_ref().map(|p| &p.labels)
    }

    /// Container IDs the new state has and the old had not.
    pub fn containers_added(&self) -> Vec<&str> {
        ids_missing_from(self.new.as_ref(), self.old.as_ref())
    }

    /// Container IDs the old state had and the new has not.
    pub fn containers_removed(&self) -> Vec<&str> {
        ids_missing_from(self.old.as_ref(), self.new.as_ref())
    }
}

fn ids_missing_from<'a>(from: Option<&'a PodInfo>, other: Option<&PodInfo>) -> Vec<&'a str> {
    from.into_iter()
        .flat_map(PodInfo::container_ids)
        .filter(|id| other.is_none_or(|o| o.container_by_id(id).is_none()))
        .collect()
}

/// The pod (and container, when known) a cgroup belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity<'a> {
    pub pod: &'a PodInfo,
    /// `None` for the pod's own cgroup, CRI-O's monitor, the sandbox (pause) container, and a
    /// container whose ID the kubelet has not reported yet.
    pub container: Option<&'a ContainerInfo>,
}

/// This node's pods.
#[derive(Debug, Default)]
pub struct IdentityStore {
    pods: HashMap<String, PodInfo>,
    /// Cgroup UID (differs from `metadata.uid` for static pods only) → `metadata.uid`.
    by_cgroup_uid: HashMap<String, String>,
    /// Container ID → `metadata.uid`.
    by_container: HashMap<String, String>,
}

impl IdentityStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.pods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    pub fn pods(&self) -> impl Iterator<Item = &PodInfo> {
        self.pods.values()
    }

    /// Applies a watcher event; `None` when it changed nothing.
    pub fn apply(&mut self, event: PodEvent) -> Option<PodChange> {
        let change = match event {
            PodEvent::Applied(pod) => {
                let old = self.remove(&pod.uid);
                if old.as_ref() == Some(&pod) {
                    self.insert(pod);
                    return None;
                }
                self.insert(pod.clone());
                PodChange {
                    old,
                    new: Some(pod),
                }
            }
            PodEvent::Deleted { uid } => PodChange {
                old: Some(self.remove(&uid)?),
                new: None,
            },
            PodEvent::Synced => return None,
        };
        Some(change)
    }

    fn insert(&mut self, pod: PodInfo) {
        if pod.static_hash.is_some() {
            self.by_cgroup_uid
                .insert(pod.cgroup_uid().to_string(), pod.uid.clone());
        }
        for id in pod.container_ids() {
            self.by_container.insert(id.to_string(), pod.uid.clone());
        }
        self.pods.insert(pod.uid.clone(), pod);
    }

    fn remove(&mut self, uid: &str) -> Option<PodInfo> {
        let pod = self.pods.remove(uid)?;
        if pod.static_hash.is_some() {
            self.by_cgroup_uid.remove(pod.cgroup_uid());
        }
        for id in pod.container_ids() {
            // A container ID moves between pods only if a runtime reuses it; keep the newer.
            if self.by_container.get(id).map(String::as_str) == Some(uid) {
                self.by_container.remove(id);
            }
        }
        Some(pod)
    }

    /// By `metadata.uid`.
    pub fn pod(&self, uid: &str) -> Option<&PodInfo> {
        self.pods.get(uid)
    }

    /// By the UID in a cgroup name: `metadata.uid`, or a static pod's config hash.
    pub fn pod_by_cgroup_uid(&self, uid: &str) -> Option<&PodInfo> {
        let uid = self.by_cgroup_uid.get(uid).map_or(uid, String::as_str);
        self.pods.get(uid)
    }

    /// By container ID (without the runtime's `…://` prefix).
    pub fn container(&self, id: &str) -> Option<(&PodInfo, &ContainerInfo)> {
        let pod = self.pods.get(self.by_container.get(id)?)?;
        Some((pod, pod.container_by_id(id)?))
    }

    /// Which pod and container a cgroup path (`/proc/<pid>/cgroup` or a cgroupfs directory)
    /// belongs to; `None` outside pods and for pods this store does not know (yet).
    pub fn resolve_cgroup(&self, path: &str) -> Option<Identity<'_>> {
        let parsed = cgroup::parse(path)?;
        let pod = self.pod_by_cgroup_uid(&parsed.uid)?;
        let container = match parsed.child {
            PodChild::Container { id, .. } => pod.container_by_id(id),
            _ => None,
        };
        Some(Identity { pod, container })
    }
}

#[cfg(test)]
mod tests;
