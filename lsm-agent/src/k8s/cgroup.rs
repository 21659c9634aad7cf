//! Which pod and container a cgroup v2 path belongs to, from the names the kubelet and the
//! container runtimes give their cgroups. No API call is needed: the pod's UID is in its
//! cgroup's name, which exists before any of its containers starts.
//!
//! Layouts recognised (any prefix, e.g. a `--cgroup-root` or `..` components of a path seen
//! from inside a cgroup namespace, is skipped):
//!
//! * kubelet, systemd driver: `kubepods.slice/kubepods-burstable.slice/`
//!   `kubepods-burstable-pod<uid with _ for ->.slice/<container>` (no QoS slice for
//!   Guaranteed pods; nested roots such as `kubelet-kubepods-…` too);
//! * kubelet, cgroupfs driver: `kubepods/[burstable|besteffort/]pod<uid>/<container>`;
//! * containers: containerd `cri-containerd-<id>.scope`, CRI-O `crio-<id>.scope`, docker
//!   `docker-<id>.scope`, and under the cgroupfs driver the same names without `.scope` or a
//!   bare `<id>`; CRI-O's monitor `crio-conmon-<id>.scope` is not a container.
//!
//! Cgroups below the container's (the container's own sub-cgroups) belong to that container.

/// The pod's QoS class, as the kubelet names the cgroup parent of its pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

/// The runtime whose naming a container cgroup follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    Containerd,
    CriO,
    Docker,
    /// A bare `<id>` directory (cgroupfs driver with containerd or docker).
    Unnamed,
}

/// What the cgroup below a pod's cgroup is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodChild<'a> {
    /// The pod's own cgroup: no container component.
    None,
    Container {
        runtime: Runtime,
        id: &'a str,
    },
    /// CRI-O's `conmon`: a runtime helper in the pod's cgroup, not one of its containers.
    RuntimeMonitor {
        id: &'a str,
    },
    /// A child the kubelet or runtime did not name in a known way.
    Unknown,
}

/// A cgroup path inside a pod's cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodCgroup<'a> {
    /// The pod's UID as written in the path, with `-` restored under the systemd driver. For a
    /// static pod it is the kubelet's config hash, which the API server shows in the mirror
    /// pod's `kubernetes.io/config.mirror` annotation (its `metadata.uid` differs).
    pub uid: String,
    pub qos: QosClass,
    /// The input up to and including the pod's component: the pod's cgroup.
    pub pod_dir: &'a str,
    pub child: PodChild<'a>,
}

impl PodCgroup<'_> {
    /// The container ID, when the path is in a container's cgroup.
    pub fn container_id(&self) -> Option<&str> {
        match self.child {
            PodChild::Container { id, .. } => Some(id),
            _ => None,
        }
    }
}

/// The cgroup v2 path in the text of `/proc/<pid>/cgroup` (its `0::` line).
pub fn unified_path(proc_cgroup: &str) -> Option<&str> {
    proc_cgroup
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(str::trim_end)
}

/// The pod (and container) of a cgroup path: a `/proc/<pid>/cgroup` path or a directory under
/// the cgroup2 mount. `None` when the path is not inside a pod's cgroup.
pub fn parse(path: &str) -> Option<PodCgroup<'_>> {
    let components = components(path);
    let (i, uid, qos) = components.iter().enumerate().find_map(|(i, &(_, name))| {
        pod_component(name, &components[..i]).map(|(uid, qos)| (i, uid, qos))
    })?;
    let (start, name) = components[i];
    let pod_dir = &path[..start + name.len()];
    let child = components
        .get(i + 1)
        .map_or(PodChild::None, |&(_, name)| container_component(name));
    Some(PodCgroup {
        uid,
        qos,
        pod_dir,
        child,
    })
}

/// Non-empty path components with their byte offset in `path`.
fn components(path: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = 0;
    for part in path.split('/') {
        if !part.is_empty() && part != "." && part != ".." {
            out.push((start, part));
        }
        start += part.len() + 1;
    }
    out
}

/// `Some((uid, qos))` when `name` is a pod's cgroup; `parents` are the components above it.
fn pod_component(name: &str, parents: &[(usize, &str)]) -> Option<(String, QosClass)> {
    if let Some(stem) = name.strip_suffix(".slice") {
        // systemd: the slice name spells its whole ancestry, `-` separated.
        let segments: Vec<&str> = stem.split('-').collect();
        let (last, before) = segments.split_last()?;
        let uid = last.strip_prefix("pod")?.replace('_', "-");
        let (qos, rest) = match before.split_last() {
            Some((&"burstable", rest)) => (QosClass::Burstable, rest),
            Some((&"besteffort", rest)) => (QosClass::BestEffort, rest),
            _ => (QosClass::Guaranteed, before),
        };
        return (rest.last() == Some(&"kubepods") && is_pod_uid(&uid)).then_some((uid, qos));
    }
    // cgroupfs: the hierarchy is in the directories.
    let uid = name.strip_prefix("pod")?;
    let parent = |k: usize| parents.len().checked_sub(k).map(|j| parents[j].1);
    let qos = match (parent(1), parent(2)) {
        (Some("kubepods"), _) => QosClass::Guaranteed,
        (Some("burstable"), Some("kubepods")) => QosClass::Burstable,
        (Some("besteffort"), Some("kubepods")) => QosClass::BestEffort,
        _ => return None,
    };
    is_pod_uid(uid).then(|| (uid.to_string(), qos))
}

fn container_component(name: &str) -> PodChild<'_> {
    let stem = name.strip_suffix(".scope").unwrap_or(name);
    if let Some(id) = stem.strip_prefix("crio-conmon-") {
        return match is_container_id(id) {
            true => PodChild::RuntimeMonitor { id },
            false => PodChild::Unknown,
        };
    }
    let (runtime, id) = if let Some(id) = stem.strip_prefix("cri-containerd-") {
        (Runtime::Containerd, id)
    } else if let Some(id) = stem.strip_prefix("crio-") {
        (Runtime::CriO, id)
    } else if let Some(id) = stem.strip_prefix("docker-") {
        (Runtime::Docker, id)
    } else if stem.len() == name.len() {
        // A bare ID never carries `.scope`: that suffix only comes with a runtime's prefix.
        (Runtime::Unnamed, stem)
    } else {
        return PodChild::Unknown;
    };
    match is_container_id(id) {
        true => PodChild::Container { runtime, id },
        false => PodChild::Unknown,
    }
}

/// A UUID (`8-4-4-4-12` hex digits), or the 32 hex digits of a static pod's config hash.
fn is_pod_uid(s: &str) -> bool {
    let hex = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit());
    let parts: Vec<&str> = s.split('-').collect();
    match parts.as_slice() {
        [a, b, c, d, e] => hex(a, 8) && hex(b, 4) && hex(c, 4) && hex(d, 4) && hex(e, 12),
        [hash] => hex(hash, 32),
        _ => false,
    }
}

/// The 64 lowercase hex digits the CRI runtimes and docker use for container IDs.
pub fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests;
