//! The node's workloads as the compiler needs them: which cgroups are pods and containers,
//! with the labels and names policy scopes select on. From them and each policy's
//! [`Scope`] the compiler writes one [`CgroupScope`] per cgroup: per hook, the scoped
//! selectors that apply there. The kernel looks up the deepest listed cgroup of the current
//! task (falling back to [`CGROUP_HOST`]), so a hook's cost does not depend on how many pods
//! or policies there are.
//!
//! Who fills this in (the Kubernetes side, from the API and cgroupfs) is not the compiler's
//! concern: it is an input like the `dns:` answers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use lsm_shared::{CGROUP_HOST, CgroupScope};

use super::ir::Target;
use super::scope::Scope;

/// The pod a cgroup belongs to, as scopes see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    pub namespace: String,
    pub name: String,
    /// The pod's own labels (the namespace label is added when matching).
    pub labels: BTreeMap<String, String>,
}

/// What a listed cgroup is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupOwner {
    /// A parent of pod cgroups (`kubepods.slice`, its QoS slices): a process there, or in a
    /// pod cgroup below it that the agent does not know yet, is not a host process, and no
    /// pod-selecting policy can tell whether it applies. Only unscoped policies do.
    PodParent,
    /// A pod's own cgroup: stands for its containers whose cgroups are not listed (yet).
    Pod(Arc<PodView>),
    /// A container's cgroup.
    Container {
        pod: Arc<PodView>,
        /// `spec.containers[].name`.
        name: String,
        /// The status `imageID` (`repo@sha256:…`), empty until the runtime reports it.
        image_id: String,
    },
}

/// The input of scoping.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Workloads {
    /// Scoping is on: the agent knows the node's pods (Kubernetes API). Off, every policy
    /// applies to every process of the node, as Tetragon does without the API.
    pub enabled: bool,
    /// Listed cgroups by id (the inode number of the cgroup's directory).
    pub cgroups: BTreeMap<u64, CgroupOwner>,
    /// Where listed cgroups are (their cgroupfs directory): the loader reads the processes
    /// of the selected ones to resolve a `resolvePathInContainer` uprobe's file in their
    /// roots. Scoping itself needs only the ids.
    pub dirs: BTreeMap<u64, PathBuf>,
}

impl Workloads {
    /// Whether a policy of this scope is restricted to some workloads on this node.
    pub fn restricts(&self, scope: &Scope) -> bool {
        self.enabled && *scope != Scope::Everything
    }

    /// Whether `scope` covers the processes of cgroup `owner` (`None`: a host process).
    pub fn covers(scope: &Scope, owner: Option<&CgroupOwner>) -> bool {
        match owner {
            None => scope.covers_host(),
            Some(CgroupOwner::PodParent) => false,
            Some(CgroupOwner::Pod(pod)) => {
                scope.covers_pod(&pod.namespace, &pod.labels) && scope.covers_all_containers()
            }
            Some(CgroupOwner::Container {
                pod,
                name,
                image_id,
            }) => {
                scope.covers_pod(&pod.namespace, &pod.labels)
                    && scope.covers_container(name, image_id)
            }
        }
    }
}

/// The scoped selector bits of one hook entry of one policy: (hook id, selector bits, scope).
pub type ScopedGroup<'a> = (u32, u64, &'a Scope);

/// The [`CGROUPS_MAP`](lsm_shared::CGROUPS_MAP) content for `groups`: an entry for the host
/// ([`CGROUP_HOST`]) and for every listed cgroup, also where no selector applies (the entry's
/// presence is what tells a pod's process from a host process). Empty when nothing is scoped,
/// so the kernel never looks.
pub fn cgroup_scopes(
    workloads: &Workloads,
    groups: &[ScopedGroup<'_>],
) -> BTreeMap<u64, CgroupScope> {
    let mut out = BTreeMap::new();
    if groups.is_empty() {
        return out;
    }
    let owners = std::iter::once((CGROUP_HOST, None))
        .chain(workloads.cgroups.iter().map(|(&id, o)| (id, Some(o))));
    for (id, owner) in owners {
        let mut entry = CgroupScope::default();
        for &(hook, bits, scope) in groups {
            if Workloads::covers(scope, owner)
                && let Some(m) = entry.selectors.get_mut(hook as usize)
            {
                *m |= bits;
            }
        }
        out.insert(id, entry);
    }
    out
}

/// Per uprobe hook of `probes` with `resolvePathInContainer`: the directories of the listed
/// cgroups (not the host) where `cgroups` gives it a selector. Every such hook has an entry,
/// empty when no selected container is on the node or nothing is scoped (without the
/// Kubernetes API no container is known, so the hook attaches nowhere).
pub fn container_cgroups(
    workloads: &Workloads,
    probes: &BTreeMap<u32, Target>,
    cgroups: &BTreeMap<u64, CgroupScope>,
) -> BTreeMap<u32, BTreeSet<PathBuf>> {
    probes
        .iter()
        .filter(|(_, t)| matches!(t, Target::Uprobe(u) if u.in_container))
        .map(|(&hook, _)| {
            let ids = cgroups
                .iter()
                .filter(|(id, scope)| {
                    **id != CGROUP_HOST
                        && scope
                            .selectors
                            .get(hook as usize)
                            .is_some_and(|bits| *bits != 0)
                })
                .filter_map(|(id, _)| workloads.dirs.get(id).cloned())
                .collect();
            (hook, ids)
        })
        .collect()
}

#[cfg(test)]
mod tests;
