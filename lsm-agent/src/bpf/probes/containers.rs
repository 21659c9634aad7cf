//! Uprobes whose file is resolved in containers (`resolvePathInContainer`): the policy's path
//! names a file inside each selected container, which the node may not have at all. The
//! compiler lists the cgroup directories the policy selects ([`MapImage::containers`]); here
//! their processes are found (`cgroup.procs`), each distinct root (`/proc/<pid>/root`) resolves
//! the path, and the uprobe is attached once per distinct file. [`Probes::follow_containers`]
//! runs after every change of the policies or workloads and periodically, since a container's
//! process (and with it its root) appears after its cgroup, and detaches from files no
//! selected container has any more.
//!
//! The path is resolved with `openat2(RESOLVE_IN_ROOT)`: a container controls what sits at the
//! path, and an absolute symlink or `..` must not lead it to a file of the node. The file is
//! opened `O_PATH` and attached through `/proc/self/fd/N`, so what is attached is the inode
//! that was resolved, not whatever the path names a moment later. Files are told apart by the
//! inode a uprobe lands on: under overlayfs that is the layer's file, which the containers of
//! one image share, so they share one attachment (two would post each call twice).
//!
//! The program itself is the node-wide uprobe program: the policy's scope (its cgroups) decides
//! in the kernel whose calls count, as for every other hook. A file attached in one container
//! is therefore also observed, and filtered out, in another container or on the node if they
//! share it.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    num::NonZeroUsize,
    os::fd::{AsRawFd as _, OwnedFd},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use aya::{Ebpf, programs::uprobe::UProbeLinkId};
use nix::{
    fcntl::{OFlag, OpenHow, ResolveFlag, open, openat2},
    sys::{
        mman::{MapFlags, ProtFlags, mmap, munmap},
        stat::{Mode, SFlag, fstat, makedev},
    },
};
use tracing::{debug, info, warn};

use super::{Held, Probes, UPROBE_PROG, uprobes::point_location};
use crate::policy::{
    compile::MapImage,
    ir::{Target, UprobeTarget},
    probes::hook_label,
};

/// How deep below a selected cgroup processes are looked for: a pod's containers, and the
/// sub-cgroups a container may create for itself.
const MAX_DEPTH: usize = 3;

/// A file as a uprobe is placed on it: its device and inode.
pub(super) type FileKey = (u64, u64);

/// A file some container's root resolves the path to, open (`O_PATH`).
#[derive(Debug)]
pub(super) struct Resolved {
    fd: OwnedFd,
    /// A process whose root resolved it (for the log).
    pub pid: u32,
}

impl Resolved {
    /// The path the agent attaches at: the open file itself.
    fn fd_path(&self) -> String {
        format!("/proc/self/fd/{}", self.fd.as_raw_fd())
    }
}

/// The pids of the processes in `dirs` and their sub-cgroups (down to [`MAX_DEPTH`]).
/// Directories that vanish meanwhile are skipped: their pods are gone.
pub(super) fn pids_in(dirs: &BTreeSet<PathBuf>) -> BTreeSet<u32> {
    fn walk(dir: &Path, depth: usize, out: &mut BTreeSet<u32>) {
        if let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) {
            out.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
        if depth >= MAX_DEPTH {
            return;
        }
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&e.path(), depth + 1, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    for d in dirs {
        walk(d, 0, &mut out);
    }
    out
}

/// The identity (device, inode) of the directory `root` leads to.
fn dir_key(root: &Path) -> Option<FileKey> {
    fs::metadata(root).ok().map(|m| (m.dev(), m.ino()))
}

/// The roots that are the node's, not a container's: the agent's own and the host's (pid 1's,
/// seen with the host's pid namespace). A process in a container's cgroup with one of them has
/// not entered its container yet (the runtime's init before `pivot_root`), or never does.
pub(super) fn node_roots(proc: &Path) -> BTreeSet<FileKey> {
    ["self", "1"]
        .iter()
        .filter_map(|p| dir_key(&proc.join(p).join("root")))
        .collect()
}

/// Opens `path` inside the directory `root` as its root: `..` and symlinks, absolute ones
/// too, stay inside it. A regular file only.
fn open_in_root(root: &Path, path: &str) -> Result<(OwnedFd, FileKey), String> {
    let dir = open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("opening {}: {e}", root.display()))?;
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = openat2(&dir, path, how).map_err(|e| format!("{path}: {e}"))?;
    let st = fstat(&fd).map_err(|e| format!("{path}: {e}"))?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err(format!("{path} is not a regular file"));
    }
    let key = mapped_key(&fd).unwrap_or((st.st_dev, st.st_ino));
    Ok((fd, key))
}

/// The file a uprobe on `fd` lands on, as the kernel sees it: mapped, its `/proc/self/maps`
/// line names the inode under any stacking (overlayfs maps the layer's file, and places
/// uprobes there too), so that two containers of one image share one key. `None` when the
/// file cannot be mapped (empty); the caller keeps `fstat`'s key then.
fn mapped_key(fd: &OwnedFd) -> Option<FileKey> {
    let file = fs::File::open(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
    let page = NonZeroUsize::new(4096)?;
    // SAFETY: a private read-only mapping of a file this function owns; nothing reads
    // through it, and it is unmapped before returning.
    let map = unsafe {
        mmap(
            None,
            page,
            ProtFlags::PROT_READ,
            MapFlags::MAP_PRIVATE,
            &file,
            0,
        )
    }
    .ok()?;
    let addr = map.as_ptr() as usize as u64;
    let maps = procfs::process::Process::myself().and_then(|p| p.maps());
    // SAFETY: the mapping made above, of `page` bytes.
    let _ = unsafe { munmap(map, page.get()) };
    let m = maps.ok()?.0.into_iter().find(|m| m.address.0 == addr)?;
    let (major, minor) = (u64::try_from(m.dev.0).ok()?, u64::try_from(m.dev.1).ok()?);
    Some((makedev(major, minor), m.inode))
}

/// The distinct files `path` resolves to in the roots of `pids` (read from `proc`), each
/// root tried once; roots in `skip` (the node's) are not tried. A root without the file is
/// left out (a pod's sandbox, a container of another image).
pub(super) fn resolve_in_roots(
    path: &str,
    pids: &BTreeSet<u32>,
    proc: &Path,
    skip: &BTreeSet<FileKey>,
) -> BTreeMap<FileKey, Resolved> {
    let mut tried: BTreeSet<FileKey> = BTreeSet::new();
    let mut out = BTreeMap::new();
    for &pid in pids {
        let root = proc.join(pid.to_string()).join("root");
        let Some(key) = dir_key(&root) else {
            continue;
        };
        if skip.contains(&key) || !tried.insert(key) {
            continue;
        }
        match open_in_root(&root, path) {
            Ok((fd, file)) => {
                out.entry(file).or_insert(Resolved { fd, pid });
            }
            Err(why) => debug!("the root of pid {pid} has no file to probe: {why}"),
        }
    }
    out
}

impl Probes {
    /// Attaches each `resolvePathInContainer` hook of `img` at the files the roots of its
    /// selected containers' processes resolve its path to, and detaches it from files none
    /// resolves to any more. A file that cannot be attached (the symbol is missing in that
    /// container's version) is logged once and left alone until it is gone; the policy stays.
    pub fn follow_containers(&mut self, ebpf: &mut Ebpf, img: &MapImage) {
        let proc = Path::new("/proc");
        let skip = node_roots(proc);
        for (&id, dirs) in &img.containers {
            let Some(t @ Target::Uprobe(u)) = img.probes.get(&id) else {
                continue;
            };
            let Some(mut up) = self.ups.remove(&id) else {
                continue;
            };
            let found = resolve_in_roots(&u.path, &pids_in(dirs), proc, &skip);
            let gone: Vec<FileKey> = up
                .files
                .keys()
                .filter(|k| !found.contains_key(k))
                .copied()
                .collect();
            for key in gone {
                if let Some(links) = up.files.remove(&key) {
                    super::uprobes::release_links(ebpf, up.prog, links, t);
                    info!(
                        "{}: detached from file {}:{} (no selected container has it now)",
                        hook_label(t),
                        key.0,
                        key.1
                    );
                }
            }
            up.failed.retain(|k| found.contains_key(k));
            for (key, r) in &found {
                if up.files.contains_key(key) || up.failed.contains(key) {
                    continue;
                }
                match self.attach_file(ebpf, id, t, u, *key, r) {
                    Ok(links) => {
                        info!(
                            "observing {} in the container of pid {} (file {}:{}, hook {id})",
                            hook_label(t),
                            r.pid,
                            key.0,
                            key.1
                        );
                        up.files.insert(*key, links);
                    }
                    Err(why) => {
                        warn!(
                            "{} in the container of pid {}: {why}; not retried for this file",
                            hook_label(t),
                            r.pid
                        );
                        up.failed.insert(*key);
                    }
                }
            }
            self.ups.insert(id, up);
        }
    }

    /// Each point of `u` at the resolved file `r`; all or none.
    fn attach_file(
        &self,
        ebpf: &mut Ebpf,
        id: u32,
        t: &Target,
        u: &UprobeTarget,
        key: FileKey,
        r: &Resolved,
    ) -> Result<Vec<Held<UProbeLinkId>>, String> {
        let file = r.fd_path();
        let mut links = Vec::with_capacity(u.points.len());
        for (k, p) in u.points.iter().enumerate() {
            let res = point_location(k, p).and_then(|(location, k)| {
                let pin = format!("hook{id}-{k}-f{:x}-{}", key.0, key.1);
                self.attach_at(ebpf, UPROBE_PROG, id, k, &file, location, &pin)
            });
            match res {
                Ok(l) => links.push(l),
                Err(why) => {
                    super::uprobes::release_links(ebpf, UPROBE_PROG, links, t);
                    return Err(format!("at {p}: {why}"));
                }
            }
        }
        Ok(links)
    }
}

#[cfg(test)]
mod tests;
