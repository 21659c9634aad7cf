//! The kubelet's cgroups as they are on this node: the parents of pod cgroups, the pod cgroups
//! and their direct children (containers), found under the cgroup v2 mount with their ids, and
//! kept current with inotify.
//!
//! A cgroup's id (what the kernel's `bpf_get_current_cgroup_id` returns) is the inode number of
//! its directory. Only names and inode numbers matter, so a tree of plain directories stands in
//! for cgroupfs in tests.
//!
//! Watches: the mount's root (a `kubepods` root created after the agent), every parent of pod
//! cgroups (new pods) and every pod cgroup (new containers), for `mkdir` and `rmdir` only. The
//! kubelet creates a pod's cgroup before any of its containers, so a new pod dir is seen
//! before a process can run in it. A periodic rescan (the caller's) covers what inotify cannot:
//! a queue overflow, a kubelet root nested deeper than the mount's root level.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::io;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use futures_util::StreamExt as _;
use inotify::{EventMask, EventStream, Inotify, WatchDescriptor, WatchMask, Watches};

use super::cgroup;

/// The cgroup v2 mount.
pub const DEFAULT_ROOT: &str = "/sys/fs/cgroup";

/// How deep below the root a kubelet root (`kubepods`, `kubepods.slice`) is looked for.
const MAX_ROOT_DEPTH: usize = 4;

/// What a listed cgroup directory is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Found {
    /// `kubepods.slice`, `kubepods-burstable.slice`, `kubepods`, `kubepods/besteffort`, …
    PodParent,
    /// A pod's cgroup; `uid` as in its name (a static pod's config hash for a mirror pod).
    Pod { uid: String },
    /// A direct child of a pod's cgroup: a container (`container` is its id), or something
    /// else of the pod (CRI-O's conmon, an unknown name).
    PodChild {
        uid: String,
        container: Option<String>,
    },
}

impl Found {
    /// Whether new children of this directory matter (and it is watched).
    fn has_listed_children(&self) -> bool {
        matches!(self, Found::PodParent | Found::Pod { .. })
    }
}

/// What the path of a directory relative to the cgroup root is; `None` when it is none of the
/// kubelet's (also for cgroups below a container's).
pub fn classify(rel: &str) -> Option<Found> {
    if let Some(p) = cgroup::parse(rel) {
        let below = rel[p.pod_dir.len()..]
            .split('/')
            .filter(|c| !c.is_empty())
            .count();
        return match below {
            0 => Some(Found::Pod { uid: p.uid }),
            1 => Some(Found::PodChild {
                container: p.container_id().map(str::to_string),
                uid: p.uid,
            }),
            _ => None,
        };
    }
    is_pod_parent(rel).then_some(Found::PodParent)
}

/// The kubelet's roots and QoS parents, under the systemd driver (the slice's name spells its
/// ancestry: `kubepods-burstable.slice`, `kubelet-kubepods.slice`) or the cgroupfs driver
/// (`kubepods`, `kubepods/burstable`).
fn is_pod_parent(rel: &str) -> bool {
    let mut parts = rel.rsplit('/').filter(|c| !c.is_empty());
    let Some(name) = parts.next() else {
        return false;
    };
    if let Some(stem) = name.strip_suffix(".slice") {
        let segments: Vec<&str> = stem.split('-').collect();
        return matches!(
            segments.as_slice(),
            [.., "kubepods"] | [.., "kubepods", "burstable" | "besteffort"]
        );
    }
    match name {
        "kubepods" => true,
        "burstable" | "besteffort" => parts.next() == Some("kubepods"),
        _ => false,
    }
}

/// One listed directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dir {
    pub path: PathBuf,
    pub id: u64,
    pub found: Found,
}

/// The kubelet's directories at and below `from` (a directory under `root`, or `root`
/// itself). Directories that vanish during the walk are skipped.
pub fn scan(root: &Path, from: &Path) -> Vec<Dir> {
    let mut out = Vec::new();
    let depth = from
        .strip_prefix(root)
        .map_or(0, |rel| rel.components().count());
    if let Some(dir) = (from != root).then(|| listed(root, from)).flatten() {
        let descend = dir.found.has_listed_children();
        out.push(dir);
        if !descend {
            return out;
        }
    }
    walk(root, from, depth, &mut out);
    out
}

/// `path` as a listed directory, if it is one and still exists.
pub fn listed(root: &Path, path: &Path) -> Option<Dir> {
    let found = classify(path.strip_prefix(root).ok()?.to_str()?)?;
    let meta = std::fs::symlink_metadata(path).ok()?;
    meta.is_dir().then(|| Dir {
        path: path.to_path_buf(),
        id: meta.ino(),
        found,
    })
}

fn walk(root: &Path, dir: &Path, depth: usize, out: &mut Vec<Dir>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let path = entry.path();
        let Some(rel) = path.strip_prefix(root).ok().and_then(Path::to_str) else {
            continue;
        };
        match classify(rel) {
            Some(found) => {
                let Ok(meta) = entry.metadata() else {
                    continue;
                };
                let descend = found.has_listed_children();
                out.push(Dir {
                    path: path.clone(),
                    id: meta.ino(),
                    found,
                });
                if descend {
                    walk(root, &path, depth + 1, out);
                }
            }
            None if depth + 1 < MAX_ROOT_DEPTH => walk(root, &path, depth + 1, out),
            None => {}
        }
    }
}

/// The listed directories, by path and by id.
#[derive(Debug, Default, Clone)]
pub struct Cgroups {
    by_path: BTreeMap<PathBuf, (u64, Found)>,
    by_id: HashMap<u64, Found>,
}

impl Cgroups {
    pub fn get(&self, id: u64) -> Option<&Found> {
        self.by_id.get(&id)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (u64, &Found)> {
        self.by_id.iter().map(|(&id, f)| (id, f))
    }

    /// Each listed directory with its id.
    pub fn dirs(&self) -> impl Iterator<Item = (&Path, u64)> {
        self.by_path.iter().map(|(p, (id, _))| (p.as_path(), *id))
    }

    pub fn paths(&self) -> impl Iterator<Item = (&Path, &Found)> {
        self.by_path.iter().map(|(p, (_, f))| (p.as_path(), f))
    }

    /// Adds or updates entries; true when something changed.
    pub fn insert(&mut self, dirs: impl IntoIterator<Item = Dir>) -> bool {
        let mut changed = false;
        for d in dirs {
            let entry = (d.id, d.found.clone());
            if self.by_path.get(&d.path) == Some(&entry) {
                continue;
            }
            if let Some((old, _)) = self.by_path.insert(d.path, entry) {
                self.by_id.remove(&old);
            }
            self.by_id.insert(d.id, d.found);
            changed = true;
        }
        changed
    }

    /// Removes `path` and everything below it; true when something was listed there.
    pub fn remove_under(&mut self, path: &Path) -> bool {
        let gone: Vec<PathBuf> = self
            .by_path
            .range(path.to_path_buf()..)
            .take_while(|(p, _)| p.starts_with(path))
            .map(|(p, _)| p.clone())
            .collect();
        for p in &gone {
            if let Some((id, _)) = self.by_path.remove(p) {
                self.by_id.remove(&id);
            }
        }
        !gone.is_empty()
    }

    /// Replaces everything with a full scan; true when something changed.
    pub fn replace(&mut self, dirs: Vec<Dir>) -> bool {
        let mut next = Cgroups::default();
        next.insert(dirs);
        let changed = next.by_path != self.by_path;
        *self = next;
        changed
    }
}

/// What a directory event means for the listed cgroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FsEvent {
    Created(PathBuf),
    Removed(PathBuf),
    /// Events were lost (queue overflow) or the watch failed: rescan.
    Lost,
}

/// The inotify watches on the directories whose new children matter.
pub struct CgroupWatcher {
    root: PathBuf,
    stream: EventStream<Vec<u8>>,
    watches: Watches,
    /// Watch descriptor id → watched directory.
    paths: HashMap<i32, PathBuf>,
    /// Ordered, so that a removed directory's watches below it are one range.
    by_path: BTreeMap<PathBuf, WatchDescriptor>,
}

/// Only directories' creation and removal: the kubelet and the runtimes read and write files
/// in these directories all the time, none of which matters here.
fn mask() -> WatchMask {
    WatchMask::CREATE | WatchMask::DELETE | WatchMask::ONLYDIR
}

impl CgroupWatcher {
    /// An inotify instance watching `root` (not yet the kubelet's directories: see
    /// [`Self::follow`]).
    pub fn new(root: &Path) -> io::Result<Self> {
        let inotify = Inotify::init()?;
        let stream = inotify.into_event_stream(vec![0u8; 16 * 1024])?;
        let watches = stream.watches();
        let mut w = CgroupWatcher {
            root: root.to_path_buf(),
            stream,
            watches,
            paths: HashMap::new(),
            by_path: BTreeMap::new(),
        };
        w.watch(root)?;
        Ok(w)
    }

    fn watch(&mut self, dir: &Path) -> io::Result<()> {
        if self.by_path.contains_key(dir) {
            return Ok(());
        }
        let wd = self.watches.add(dir, mask())?;
        self.paths
            .insert(wd.get_watch_descriptor_id(), dir.to_path_buf());
        self.by_path.insert(dir.to_path_buf(), wd);
        Ok(())
    }

    /// Watches every listed directory whose children matter, and stops watching those no
    /// longer listed. A directory that vanished meanwhile is not an error: its removal event
    /// follows.
    /// Linear in the number of listed cgroups: for a full rescan. Single events use
    /// [`Self::follow_created`] and [`Self::follow_removed`], which touch only what changed, so
    /// a burst of pods costs linear, not quadratic, time.
    pub fn follow(&mut self, cgroups: &Cgroups) {
        let want: HashSet<&Path> = cgroups
            .paths()
            .filter(|(_, f)| f.has_listed_children())
            .map(|(p, _)| p)
            .collect();
        for dir in &want {
            self.try_watch(dir);
        }
        let stale: Vec<PathBuf> = self
            .by_path
            .keys()
            .filter(|p| **p != self.root && !want.contains(p.as_path()))
            .cloned()
            .collect();
        for p in stale {
            self.forget(&p);
        }
    }

    /// Watches the directories of `dirs` (just found) whose children matter.
    pub fn follow_created(&mut self, dirs: &[Dir]) {
        for d in dirs.iter().filter(|d| d.found.has_listed_children()) {
            self.try_watch(&d.path);
        }
    }

    /// Stops watching `path` and everything below it (removed).
    pub fn follow_removed(&mut self, path: &Path) {
        let gone: Vec<PathBuf> = self
            .by_path
            .range(path.to_path_buf()..)
            .map(|(p, _)| p)
            .take_while(|p| p.starts_with(path))
            .filter(|p| **p != self.root)
            .cloned()
            .collect();
        for p in gone {
            self.forget(&p);
        }
    }

    fn try_watch(&mut self, dir: &Path) {
        if let Err(e) = self.watch(dir) {
            tracing::debug!(dir = %dir.display(), error = %e, "cgroup not watched");
        }
    }

    fn forget(&mut self, dir: &Path) {
        if let Some(wd) = self.by_path.remove(dir) {
            self.paths.remove(&wd.get_watch_descriptor_id());
            // Fails when the kernel already dropped it (the directory is gone).
            let _ = self.watches.remove(wd);
        }
    }

    /// Watched directories (the root included).
    pub fn watched(&self) -> usize {
        self.by_path.len()
    }

    /// The next event. Cancel-safe: nothing is lost when the future is dropped.
    pub async fn next(&mut self) -> FsEvent {
        loop {
            let event = match self.stream.next().await {
                Some(Ok(e)) => e,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "reading cgroup inotify events failed; rescanning");
                    return FsEvent::Lost;
                }
                None => return FsEvent::Lost,
            };
            if let Some(e) = self.meaning(event.wd, event.mask, event.name) {
                return e;
            }
        }
    }

    fn meaning(
        &mut self,
        wd: WatchDescriptor,
        mask: EventMask,
        name: Option<OsString>,
    ) -> Option<FsEvent> {
        if mask.contains(EventMask::Q_OVERFLOW) {
            return Some(FsEvent::Lost);
        }
        let id = wd.get_watch_descriptor_id();
        if mask.contains(EventMask::IGNORED) {
            // The kernel dropped the watch (the directory is gone).
            if let Some(p) = self.paths.remove(&id) {
                self.by_path.remove(&p);
            }
            return None;
        }
        if !mask.contains(EventMask::ISDIR) {
            return None;
        }
        let path = self.paths.get(&id)?.join(name?);
        if mask.contains(EventMask::CREATE) {
            Some(FsEvent::Created(path))
        } else if mask.contains(EventMask::DELETE) {
            Some(FsEvent::Removed(path))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests;
