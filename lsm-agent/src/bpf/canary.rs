//! The canary: proof that each LSM hook with a program attached denies, run at start and
//! periodically. For each such hook the agent arms the `CANARY` map with its own thread and
//! the hook, performs one harmless operation that reaches the hook, and disarms it. The
//! program's shared prologue (`enter_lsm`) denies exactly that thread at exactly that hook
//! with -EPERM and counts the hit in `CANARY_HITS`. Only an -EPERM *and* a counted hit prove
//! that the program is attached, runs, and that its verdict reaches the caller; a program
//! detached behind the agent's back lets the operation through and counts nothing.
//!
//! The operations are harmless even when the hook does not deny: they open, read, map or
//! truncate an empty file of the agent's own, connect a UDP socket (which sends nothing), or
//! exec an empty file (which the kernel refuses with ENOEXEC after the hook, before the point
//! of no return). Hooks without such an operation are reported as not verified.

use std::{
    fs::{File, OpenOptions},
    io::Read as _,
    net::UdpSocket,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    maps::{Array, MapData},
};
use lsm_shared::*;

use super::{BpfError, map_err, take};

/// The agent's own files for the canary operations (root only).
pub const CANARY_DIR: &str = "/var/run/lsm-agent/canary";

/// What one hook's canary showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Denied with -EPERM and counted: the hook enforces.
    Denied,
    /// The hook did not deny its canary: not enforcing (the reason says what was seen).
    Failed(String),
    /// No canary operation reaches this hook, or the operation was refused before it.
    Unverified(String),
}

/// One hook's canary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookCanary {
    /// The LSM hook's name.
    pub hook: &'static str,
    pub verdict: Verdict,
}

/// The canary's maps.
pub(super) struct CanaryMaps {
    arm: Array<MapData, CanaryArm>,
    hits: Array<MapData, u64>,
}

impl CanaryMaps {
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Self, BpfError> {
        Ok(CanaryMaps {
            arm: take(ebpf, CANARY_MAP)?,
            hits: take(ebpf, CANARY_HITS_MAP)?,
        })
    }

    fn set(&mut self, tid: u32, hook: u32) -> Result<(), BpfError> {
        self.arm
            .set(0, CanaryArm { tid, hook }, 0)
            .map_err(map_err(CANARY_MAP))
    }

    fn hits(&self, hook: u32) -> u64 {
        self.hits.get(&hook, 0).unwrap_or(0)
    }
}

/// The operation that reaches a hook: prepared unarmed, performed armed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Open,
    Read,
    Mmap,
    Truncate,
    Ftruncate,
    Exec,
    Connect,
}

fn op_for(hook: u32) -> Option<Op> {
    Some(match hook {
        HOOK_FILE_OPEN => Op::Open,
        HOOK_FILE_PERMISSION => Op::Read,
        HOOK_MMAP_FILE => Op::Mmap,
        HOOK_PATH_TRUNCATE => Op::Truncate,
        HOOK_FILE_TRUNCATE => Op::Ftruncate,
        HOOK_BPRM_CHECK => Op::Exec,
        HOOK_SOCKET_CONNECT => Op::Connect,
        _ => return None,
    })
}

/// What an operation needs opened before it is armed.
enum Prepared {
    Nothing,
    File(File),
    Socket(UdpSocket),
}

fn prepare(op: Op, file: &Path) -> std::io::Result<Prepared> {
    Ok(match op {
        Op::Read | Op::Mmap => Prepared::File(File::open(file)?),
        Op::Ftruncate => Prepared::File(OpenOptions::new().write(true).open(file)?),
        Op::Connect => Prepared::Socket(UdpSocket::bind("127.0.0.1:0")?),
        Op::Open | Op::Truncate | Op::Exec => Prepared::Nothing,
    })
}

fn perform(op: Op, prepared: &mut Prepared, file: &Path, exe: &Path) -> std::io::Result<()> {
    let errno = |e: nix::errno::Errno| std::io::Error::from_raw_os_error(e as i32);
    match (op, prepared) {
        (Op::Open, _) => File::open(file).map(drop),
        (Op::Read, Prepared::File(f)) => f.read(&mut [0u8; 1]).map(drop),
        (Op::Mmap, Prepared::File(f)) => {
            let len = std::num::NonZeroUsize::MIN.saturating_add(4095);
            // SAFETY: a fresh private read-only mapping nothing else refers to; unmapped at
            // once.
            let mapped = unsafe {
                nix::sys::mman::mmap(
                    None,
                    len,
                    nix::sys::mman::ProtFlags::PROT_READ,
                    nix::sys::mman::MapFlags::MAP_PRIVATE,
                    &*f,
                    0,
                )
            }
            .map_err(errno)?;
            // SAFETY: the mapping made just above, of `len` bytes.
            unsafe { nix::sys::mman::munmap(mapped, len.get()) }.map_err(errno)
        }
        (Op::Truncate, _) => nix::unistd::truncate(file, 0).map_err(errno),
        (Op::Ftruncate, Prepared::File(f)) => nix::unistd::ftruncate(&*f, 0).map_err(errno),
        (Op::Exec, _) => {
            let path = std::ffi::CString::new(exe.as_os_str().as_encoded_bytes())
                .map_err(|_| std::io::Error::from_raw_os_error(nix::libc::EINVAL))?;
            // An empty file: the kernel runs bprm_check_security, then finds no binary format
            // (ENOEXEC) and returns, before the point of no return.
            match nix::unistd::execv(&path, std::slice::from_ref(&path)) {
                Err(e) => Err(errno(e)),
            }
        }
        (Op::Connect, Prepared::Socket(s)) => s.connect("127.0.0.1:9"),
        _ => Err(std::io::Error::from_raw_os_error(nix::libc::EINVAL)),
    }
}

/// The canary's files, made anew (empty) before every round.
fn files(dir: &Path) -> std::io::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir)?;
    let file = dir.join("file");
    let exe = dir.join("exec");
    for (p, mode) in [(&file, 0o600), (&exe, 0o700)] {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(p)?;
    }
    Ok((file, exe))
}

/// Runs the canary of each hook in `hooks` (id and name) from this thread.
pub(super) fn run(maps: &mut CanaryMaps, hooks: &[(u32, &'static str)]) -> Vec<HookCanary> {
    let tid = nix::unistd::gettid().as_raw().unsigned_abs();
    let files = files(Path::new(CANARY_DIR));
    hooks
        .iter()
        .map(|&(hook, name)| {
            let verdict = match (&files, op_for(hook)) {
                (_, None) => Verdict::Unverified("no canary operation reaches this hook".into()),
                (Err(e), _) => Verdict::Unverified(format!("cannot create {CANARY_DIR}: {e}")),
                (Ok((file, exe)), Some(op)) => one(maps, tid, hook, op, file, exe),
            };
            HookCanary {
                hook: name,
                verdict,
            }
        })
        .collect()
}

fn one(maps: &mut CanaryMaps, tid: u32, hook: u32, op: Op, file: &Path, exe: &Path) -> Verdict {
    let mut prepared = match prepare(op, file) {
        Ok(p) => p,
        Err(e) => return Verdict::Unverified(format!("preparing the canary operation: {e}")),
    };
    let before = maps.hits(hook);
    if let Err(e) = maps.set(tid, hook) {
        return Verdict::Unverified(format!("arming: {e}"));
    }
    let result = perform(op, &mut prepared, file, exe);
    let disarmed = maps.set(0, 0);
    let hit = maps.hits(hook) > before;
    if let Err(e) = disarmed {
        return Verdict::Failed(format!("disarming the canary failed: {e}"));
    }
    classify(op, &result, hit)
}

/// The verdict from what the operation returned and whether the program counted a hit.
fn classify(op: Op, result: &std::io::Result<()>, hit: bool) -> Verdict {
    let errno = result.as_ref().err().and_then(std::io::Error::raw_os_error);
    match (errno, hit) {
        (Some(nix::libc::EPERM), true) => Verdict::Denied,
        (_, true) => Verdict::Failed(format!(
            "the program ran but the operation returned {result:?}, not EPERM"
        )),
        // A mount with noexec refuses the exec before the hook.
        (Some(nix::libc::EACCES), false) if op == Op::Exec => Verdict::Unverified(format!(
            "the canary exec was refused before the hook (noexec {CANARY_DIR}?)"
        )),
        (Some(nix::libc::EPERM), false) => Verdict::Failed(
            "denied, but not by this program (another LSM?): its program did not run".into(),
        ),
        (_, false) => Verdict::Failed(format!(
            "not denied ({}): the program did not run (not attached, or detached)",
            match result {
                Ok(()) => "the operation succeeded".to_string(),
                Err(e) => e.to_string(),
            }
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(errno: i32) -> std::io::Result<()> {
        Err(std::io::Error::from_raw_os_error(errno))
    }

    #[test]
    fn only_an_eperm_the_program_counted_is_a_denial() {
        assert_eq!(
            classify(Op::Open, &err(nix::libc::EPERM), true),
            Verdict::Denied
        );
        assert!(
            matches!(classify(Op::Open, &Ok(()), false), Verdict::Failed(m) if m.contains("did not run"))
        );
        assert!(
            matches!(classify(Op::Open, &err(nix::libc::EPERM), false), Verdict::Failed(m) if m.contains("not by this program"))
        );
        assert!(
            matches!(classify(Op::Read, &Ok(()), true), Verdict::Failed(m) if m.contains("not EPERM"))
        );
        // An exec that never reached the hook proves nothing either way.
        assert!(matches!(
            classify(Op::Exec, &err(nix::libc::EACCES), false),
            Verdict::Unverified(_)
        ));
        assert!(matches!(
            classify(Op::Exec, &err(nix::libc::ENOEXEC), false),
            Verdict::Failed(_)
        ));
    }

    #[test]
    fn the_file_and_network_hooks_have_a_canary_and_the_wider_table_does_not() {
        for h in [
            HOOK_FILE_OPEN,
            HOOK_FILE_PERMISSION,
            HOOK_MMAP_FILE,
            HOOK_PATH_TRUNCATE,
            HOOK_FILE_TRUNCATE,
            HOOK_BPRM_CHECK,
            HOOK_SOCKET_CONNECT,
        ] {
            assert!(op_for(h).is_some(), "hook {h}");
        }
        assert_eq!(op_for(super::super::modes::FIRST_TABLE_HOOK), None);
    }
}
