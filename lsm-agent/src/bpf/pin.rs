//! Pinned enforcement: the links of the agent's programs are pinned under bpffs, so that the
//! programs keep enforcing while no agent runs (killed, crashed, upgraded, stopped).
//!
//! Each agent pins its own *generation*: `<root>/v<ABI>-<pid>-<start>/` with `links/` (one
//! pinned link per attached program) and `maps/` (the event ring and the kernel counters, for
//! the accounting below). A starting agent never touches the maps of an earlier generation:
//! it loads its own object, attaches its programs (both generations enforce meanwhile), loads
//! its policies from their sources and only then *retires* the earlier generations whose agent
//! is gone: their links are unpinned (the kernel detaches them) and what their ring held is
//! counted. One procedure for the same and another ABI version, and no moment without
//! enforcement: at every instant one of the two generations is attached for every hook.
//!
//! `lsm-agent --unload` retires every generation ([`unload_all`]).

use std::{
    io,
    path::{Path, PathBuf},
};

use aya::{
    maps::{Array, Map, MapData, PerCpuArray, RingBuf},
    pin::PinError,
    programs::{
        kprobe::KProbeLink,
        links::{FdLink, PinnedLink},
    },
};
use lsm_shared::{ABI_VERSION, AGENTS_MAP, EVENTS_MAP, STAT_RING_LOST, STATS_MAP};
use tracing::{debug, info, warn};

/// Where the generations are pinned unless `--bpffs-dir` says otherwise.
pub const DEFAULT_ROOT: &str = "/sys/fs/bpf/lsm-agent";

/// `statfs` magic of bpffs.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// The ABI version as text in the binary, so that it can be read from an `lsm-agent` file
/// without running it; the upgrade test makes its "newer agent" by changing these digits.
/// A unit test holds it equal to [`ABI_VERSION`], the one source of truth.
#[used]
static ABI_TAG: [u8; 26] = *b"lsm-agent-abi-version:0001";
const ABI_TAG_PREFIX: usize = 22;

/// This binary's ABI version, read from [`ABI_TAG`] (volatile: the test patches the file).
pub fn abi_version() -> u32 {
    let mut v = 0u32;
    for digit in ABI_TAG.iter().skip(ABI_TAG_PREFIX) {
        // SAFETY: a read of an initialised static.
        let c = unsafe { std::ptr::read_volatile(digit) };
        v = v * 10 + u32::from(c.wrapping_sub(b'0') % 10);
    }
    v
}

#[derive(Debug, thiserror::Error)]
pub enum PinDirError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not on a BPF filesystem (bpffs), and mounting one failed: {reason}")]
    NotBpffs { path: PathBuf, reason: String },
    #[error("pinning {name} at {path}: {source}")]
    Pin {
        name: String,
        path: PathBuf,
        #[source]
        source: PinError,
    },
    #[error("cannot pin: {0}")]
    Unpinnable(String),
}

fn io_err(path: &Path) -> impl Fn(io::Error) -> PinDirError + '_ {
    move |source| PinDirError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One agent's pinned set, named by the ABI version and the process (pid and start time,
/// which together name one process since boot; bpffs does not survive a reboot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    pub dir: PathBuf,
    pub abi: u32,
    pub pid: u32,
    pub start: u64,
}

impl Generation {
    fn name(abi: u32, pid: u32, start: u64) -> String {
        format!("v{abi}-{pid}-{start}")
    }

    /// `None` for a directory that is not a generation (left alone).
    pub fn parse(dir: PathBuf) -> Option<Self> {
        let name = dir.file_name()?.to_str()?;
        let mut parts = name.strip_prefix('v')?.split('-');
        let abi = parts.next()?.parse().ok()?;
        let pid = parts.next()?.parse().ok()?;
        let start = parts.next()?.parse().ok()?;
        if parts.next().is_some() {
            return None;
        }
        Some(Generation {
            dir,
            abi,
            pid,
            start,
        })
    }

    /// Whether the agent that pinned it still runs.
    pub fn owner_alive(&self) -> bool {
        process_start(self.pid) == Some(self.start)
    }

    fn links(&self) -> PathBuf {
        self.dir.join("links")
    }

    fn maps(&self) -> PathBuf {
        self.dir.join("maps")
    }
}

/// The start time of process `pid` (clock ticks after boot), `None` when there is none.
pub(crate) fn process_start(pid: u32) -> Option<u64> {
    let p = procfs::process::Process::new(i32::try_from(pid).ok()?).ok()?;
    p.stat().ok().map(|s| s.starttime)
}

/// The generations under `root`, oldest process first; none when `root` does not exist.
pub fn list(root: &Path) -> Result<Vec<Generation>, PinDirError> {
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(root)(e)),
    };
    let mut gens: Vec<Generation> = entries
        .filter_map(Result::ok)
        .filter_map(|e| Generation::parse(e.path()))
        .collect();
    gens.sort_by_key(|g| (g.start, g.pid));
    Ok(gens)
}

/// Mounts bpffs at `/sys/fs/bpf` when `root` is below it and it is not mounted (a DaemonSet
/// mounts the host's; a plain host may not have it).
fn ensure_bpffs(root: &Path) -> Result<(), PinDirError> {
    let base = Path::new("/sys/fs/bpf");
    let is_bpffs =
        |p: &Path| nix::sys::statfs::statfs(p).is_ok_and(|s| s.filesystem_type().0 == BPF_FS_MAGIC);
    let probe = if root.exists() {
        root
    } else {
        root.parent().unwrap_or(root)
    };
    if is_bpffs(probe) {
        return Ok(());
    }
    let not = |reason: String| PinDirError::NotBpffs {
        path: root.to_path_buf(),
        reason,
    };
    if !root.starts_with(base) {
        return Err(not("only /sys/fs/bpf is mounted by the agent".into()));
    }
    nix::mount::mount(
        Some("bpf"),
        base,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| not(e.to_string()))?;
    info!("mounted bpffs at /sys/fs/bpf");
    Ok(())
}

/// A link the agent holds when it does not pin. A pinned link is not here: only its pin
/// holds it, so removing that file detaches the program, whoever does it (the canary then
/// finds the hook no longer denies).
#[derive(Debug)]
enum Held {
    Owned(#[allow(dead_code)] FdLink),
    /// A kprobe attached through perf_event_open alone (kernels before 5.15): not a BPF link,
    /// so it cannot be pinned.
    Perf(#[allow(dead_code)] KProbeLink),
}

/// This agent's generation and the links it holds. Dropping it closes the owned links, which
/// detaches them; a pinned one is held by its pin alone and stays attached.
#[derive(Debug, Default)]
pub struct Pins {
    generation: Option<Generation>,
    /// The links held (not pinned), by pin name (`<program>@<target>`).
    links: Vec<(String, Held)>,
}

impl Pins {
    /// No pinning: the programs are detached when the agent exits.
    pub fn none() -> Self {
        Pins::default()
    }

    /// Creates this process's generation under `root` (mounting bpffs if needed).
    pub fn create(root: &Path) -> Result<Self, PinDirError> {
        ensure_bpffs(root)?;
        let pid = std::process::id();
        let start = process_start(pid).ok_or_else(|| {
            PinDirError::Unpinnable("this process's start time is not readable in /proc".into())
        })?;
        let dir = root.join(Generation::name(abi_version(), pid, start));
        let generation = Generation {
            dir,
            abi: abi_version(),
            pid,
            start,
        };
        for d in [generation.links(), generation.maps()] {
            std::fs::create_dir_all(&d).map_err(io_err(&d))?;
        }
        info!(dir = %generation.dir.display(), "pinning enforcement: it outlives this process until `lsm-agent --unload`");
        Ok(Pins {
            generation: Some(generation),
            links: Vec::new(),
        })
    }

    pub fn generation(&self) -> Option<&Generation> {
        self.generation.as_ref()
    }

    /// Where this generation pins links (none when not pinning): for the links of the
    /// policies' probes, which come and go with the policies.
    pub fn links_dir(&self) -> Option<PathBuf> {
        self.generation.as_ref().map(Generation::links)
    }

    /// Takes `link` (the program `name` attached at `target`): pins it, or owns it.
    pub fn keep(&mut self, name: &str, target: &str, link: FdLink) -> Result<(), PinDirError> {
        let Some(g) = &self.generation else {
            self.links.push((pin_name(name, target), Held::Owned(link)));
            return Ok(());
        };
        pin_link(&g.links(), name, target, link)?;
        Ok(())
    }

    /// Detaches the program `name` attached at `target` that [`Pins::keep`] took: removes its
    /// pin, or closes the link held.
    pub fn release(&mut self, name: &str, target: &str) -> Result<(), PinDirError> {
        let key = pin_name(name, target);
        if let Some(g) = &self.generation {
            let path = g.links().join(&key);
            return std::fs::remove_file(&path).map_err(io_err(&path));
        }
        self.links.retain(|(k, _)| *k != key);
        Ok(())
    }

    /// As [`Pins::keep`], for a kprobe's link, which only kernels from 5.15 on make a BPF link
    /// (aya uses `perf_event_open` alone before): there pinning is refused with a way out.
    pub fn keep_kprobe(
        &mut self,
        name: &str,
        target: &str,
        link: KProbeLink,
    ) -> Result<(), PinDirError> {
        if self.generation.is_none() {
            self.links.push((pin_name(name, target), Held::Perf(link)));
            return Ok(());
        }
        let fd = FdLink::try_from(link).map_err(|e| {
            PinDirError::Unpinnable(format!(
                "the kprobe of {name} on {target} is not a BPF link ({e}): Linux 5.15 or later is needed, or --bpf-dir '' to run without pinning"
            ))
        })?;
        self.keep(name, target, fd)
    }

    /// Pins `map` under `name`, for the agent after this one.
    pub fn pin_map(&self, name: &str, map: &Map) -> Result<(), PinDirError> {
        let Some(g) = &self.generation else {
            return Ok(());
        };
        let path = g.maps().join(name);
        map.pin(&path).map_err(|source| PinDirError::Pin {
            name: name.to_string(),
            path,
            source,
        })
    }
}

/// The file name of the pin of program `name`'s link at `target`. The BPF file system refuses
/// names with a `/`, and also with a `.` (reserved, `bpf_dname_reserved`), which kernel
/// symbols such as `foo.isra.0` have: they become `:` and `,`.
fn pin_name(name: &str, target: &str) -> String {
    let target: String = target
        .chars()
        .map(|c| match c {
            '/' => ':',
            '.' => ',',
            c => c,
        })
        .collect();
    format!("{name}@{target}")
}

/// Pins `link` (the program `name` attached at `target`) as `dir/<name>@<target>` and closes
/// its fd: the pin alone keeps the program attached. Returns the pin's path.
pub fn pin_link(
    dir: &Path,
    name: &str,
    target: &str,
    link: FdLink,
) -> Result<PathBuf, PinDirError> {
    let path = dir.join(pin_name(name, target));
    drop(link.pin(&path).map_err(|source| PinDirError::Pin {
        name: name.to_string(),
        path: path.clone(),
        source,
    })?);
    Ok(path)
}

/// Exempts process `tgid` (the agent taking over) from the programs of `earlier` generations,
/// which would otherwise apply their policies to it until they are retired: an egress policy
/// could kill it on its way to the API server. Returns how many generations it was written to.
pub fn exempt_from(earlier: &[Generation], tgid: u32) -> usize {
    let mut n = 0;
    for g in earlier {
        let path = g.maps().join(AGENTS_MAP);
        let written = MapData::from_pin(&path)
            .and_then(Map::from_map_data)
            .and_then(Array::<MapData, u32>::try_from)
            .and_then(|mut a| a.set(0, tgid, 0));
        match written {
            Ok(()) => n += 1,
            Err(e) => warn!(
                generation = %g.dir.display(),
                "cannot exempt this agent from an earlier agent's programs: {e}"
            ),
        }
    }
    n
}

/// What a retired generation left undelivered: the events still in its ring, and (same ABI
/// only: the counter's index is ABI) those its programs could not write into the full ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retired {
    pub generation: Generation,
    pub unread: u64,
    pub lost: Option<u64>,
}

impl Retired {
    pub fn undelivered(&self) -> u64 {
        self.unread + self.lost.unwrap_or(0)
    }
}

/// Detaches generation `g` (its links unpinned first, so its programs stop adding events), then
/// counts what its ring holds and its lost counter, and removes the rest of it.
pub fn retire(g: &Generation) -> Result<Retired, PinDirError> {
    let links = g.links();
    let entries = match std::fs::read_dir(&links) {
        Ok(e) => e.filter_map(Result::ok).map(|e| e.path()).collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io_err(&links)(e)),
    };
    for link in entries {
        // The last reference to a pinned link is its file: removing it detaches the program.
        match PinnedLink::from_pin(&link) {
            Ok(p) => {
                p.unpin().map_err(io_err(&link))?;
            }
            Err(e) => {
                warn!(link = %link.display(), "not a pinned link, removed: {e}");
                std::fs::remove_file(&link).map_err(io_err(&link))?;
            }
        }
    }
    let maps = g.maps();
    let unread = count_ring(&maps.join(EVENTS_MAP));
    let lost = (g.abi == ABI_VERSION)
        .then(|| ring_lost(&maps.join(STATS_MAP)))
        .flatten();
    remove_tree(&g.dir)?;
    Ok(Retired {
        generation: g.clone(),
        unread,
        lost,
    })
}

fn count_ring(path: &Path) -> u64 {
    let ring = MapData::from_pin(path)
        .and_then(Map::from_map_data)
        .and_then(RingBuf::try_from);
    let mut ring = match ring {
        Ok(r) => r,
        Err(e) => {
            debug!(map = %path.display(), "no ring to count: {e}");
            return 0;
        }
    };
    let mut n = 0;
    while ring.next().is_some() {
        n += 1;
    }
    n
}

fn ring_lost(path: &Path) -> Option<u64> {
    let stats = MapData::from_pin(path)
        .and_then(Map::from_map_data)
        .and_then(PerCpuArray::<MapData, u64>::try_from)
        .ok()?;
    stats.get(&STAT_RING_LOST, 0).ok().map(|v| v.iter().sum())
}

/// Removes a retired generation's directory: its pinned maps and empty directories.
fn remove_tree(dir: &Path) -> Result<(), PinDirError> {
    for sub in ["maps", "links"] {
        let d = dir.join(sub);
        if let Ok(entries) = std::fs::read_dir(&d) {
            for e in entries.filter_map(Result::ok) {
                let p = e.path();
                std::fs::remove_file(&p).map_err(io_err(&p))?;
            }
            std::fs::remove_dir(&d).map_err(io_err(&d))?;
        }
    }
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(dir)(e)),
        _ => Ok(()),
    }
}

/// The earlier generations under `root` whose agent is gone, retired, with what each left
/// undelivered. Those of a live agent (two agents on one node) are left to it.
pub fn retire_orphans(root: &Path, own: Option<&Generation>) -> Vec<Retired> {
    let gens = match list(root) {
        Ok(g) => g,
        Err(e) => {
            warn!("listing pinned generations: {e}");
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for g in gens {
        if Some(&g) == own || g.owner_alive() {
            continue;
        }
        match retire(&g) {
            Ok(r) => out.push(r),
            Err(e) => warn!(generation = %g.dir.display(), "retiring a pinned generation: {e}"),
        }
    }
    out
}

/// Removes every generation under `root` (uninstall), a live agent's too, and `root` itself.
pub fn unload_all(root: &Path) -> Result<Vec<Retired>, PinDirError> {
    let mut out = Vec::new();
    for g in list(root)? {
        if g.owner_alive() {
            warn!(
                pid = g.pid,
                "its agent still runs: its programs stay attached until it exits"
            );
        }
        out.push(retire(&g)?);
    }
    match std::fs::remove_dir(root) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err(root)(e)),
        _ => {}
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_name_has_no_slash_or_dot_which_bpffs_refuses() {
        assert_eq!(
            pin_name("generic_kprobe", "tcp_v4_connect.cold"),
            "generic_kprobe@tcp_v4_connect,cold"
        );
        assert_eq!(
            pin_name("generic_tracepoint_0", "sched/sched_process_exec"),
            "generic_tracepoint_0@sched:sched_process_exec"
        );
        assert_eq!(
            pin_name("generic_uprobe", "hook32-7"),
            "generic_uprobe@hook32-7"
        );
    }

    #[test]
    fn the_abi_tag_in_the_binary_is_the_shared_crates_version() {
        assert_eq!(abi_version(), ABI_VERSION);
    }

    #[test]
    fn generation_names_round_trip_and_other_directories_are_not_generations() {
        let name = Generation::name(3, 4242, 987654);
        let g = Generation::parse(PathBuf::from("/r").join(&name)).unwrap();
        assert_eq!((g.abi, g.pid, g.start), (3, 4242, 987654));
        for other in ["x", "v1-2", "v1-2-3-4", "va-2-3", "1-2-3"] {
            assert_eq!(
                Generation::parse(PathBuf::from("/r").join(other)),
                None,
                "{other}"
            );
        }
    }

    #[test]
    fn this_process_owns_a_generation_named_by_it_and_a_gone_one_is_not_alive() {
        let pid = std::process::id();
        let start = process_start(pid).unwrap();
        let me = Generation::parse(PathBuf::from(Generation::name(1, pid, start))).unwrap();
        assert!(me.owner_alive());
        let reused = Generation::parse(PathBuf::from(Generation::name(1, pid, start + 1))).unwrap();
        assert!(!reused.owner_alive(), "same pid, another process");
    }

    #[test]
    fn a_missing_root_lists_no_generation() {
        assert_eq!(list(Path::new("/nonexistent/lsm-agent")).unwrap(), vec![]);
    }
}
