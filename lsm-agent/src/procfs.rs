//! Processes as `/proc` shows them: the one reader of `/proc/PID` for both the BPF process
//! table (processes that were running before the agent) and the event enrichment (a process
//! an event names that the agent has not seen start).
//!
//! Parsing is the `procfs` crate's. Both callers treat a detail they cannot read (the process
//! exited meanwhile, a kernel thread has no executable, a file is not readable) as unknown, so
//! the accessors return `None`/empty instead of an error.

use std::{io::Read as _, path::PathBuf};

use procfs::process::{Process, Stat, Status};

/// One process's `/proc/PID` directory, held open; every accessor reads its file anew.
#[derive(Debug)]
pub struct Proc(Process);

impl Proc {
    /// `None` when there is no such process (any more).
    pub fn open(pid: u32) -> Option<Self> {
        Process::new(i32::try_from(pid).ok()?).ok().map(Proc)
    }

    pub fn pid(&self) -> u32 {
        self.0.pid().unsigned_abs()
    }

    /// The executable's path; `None` for kernel threads, which have none.
    pub fn exe(&self) -> Option<PathBuf> {
        self.0.exe().ok()
    }

    /// The command line, split at its NULs; empty arguments are left out. Bytes that are not
    /// UTF-8 are replaced rather than losing the whole command line.
    pub fn argv(&self) -> Vec<String> {
        let mut raw = Vec::new();
        let read = self
            .0
            .open_relative("cmdline")
            .ok()
            .and_then(|mut f| f.read_to_end(&mut raw).ok());
        if read.is_none() {
            return Vec::new();
        }
        raw.split(|&c| c == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect()
    }

    /// The parent's pid; 0 when unknown.
    pub fn ppid(&self) -> u32 {
        self.0.stat().ok().and_then(|s| ppid(&s)).unwrap_or(0)
    }

    /// The pid in the process's own pid namespace; 0 when unknown.
    pub fn nspid(&self) -> u32 {
        self.0
            .status()
            .ok()
            .and_then(|s| innermost_pid(&s))
            .unwrap_or(0)
    }
}

/// Every process in `/proc` that could be opened.
pub fn all() -> impl Iterator<Item = Proc> {
    procfs::process::all_processes()
        .into_iter()
        .flatten()
        .filter_map(|p| p.ok().map(Proc))
}

fn ppid(stat: &Stat) -> Option<u32> {
    u32::try_from(stat.ppid).ok()
}

/// The last `NSpid:` entry: the pid as the innermost pid namespace numbers it.
fn innermost_pid(status: &Status) -> Option<u32> {
    let last = *status.nspid.as_ref()?.last()?;
    u32::try_from(last).ok()
}

#[cfg(test)]
mod tests {
    use procfs::FromRead as _;

    use super::*;

    #[test]
    fn ppid_is_read_after_a_comm_with_spaces_and_parens() {
        let stat = Stat::from_read(&include_bytes!("../testdata/proc/stat-odd-comm")[..])
            .expect("a valid stat line");
        assert_eq!(stat.comm, "my (odd) cmd");
        assert_eq!(ppid(&stat), Some(7));
    }

    #[test]
    fn nspid_is_the_innermost_pid() {
        let text = include_str!("../testdata/proc/status-nested-pidns");
        let status = Status::from_read(text.as_bytes()).expect("a valid status");
        assert_eq!(innermost_pid(&status), Some(1));
        // Kernels before 4.1 have no NSpid line.
        let old: String = text
            .lines()
            .filter(|l| !l.starts_with("NSpid:"))
            .map(|l| format!("{l}\n"))
            .collect();
        let status = Status::from_read(old.as_bytes()).expect("a valid status");
        assert_eq!(innermost_pid(&status), None);
    }

    #[test]
    fn this_process_reads_back_with_its_parent_and_executable() {
        let me = Proc::open(std::process::id()).expect("self");
        assert_eq!(me.pid(), std::process::id());
        assert_eq!(me.ppid(), std::os::unix::process::parent_id());
        assert_eq!(me.exe(), std::env::current_exe().ok());
        assert_eq!(
            me.argv().first().map(String::as_str),
            std::env::args().next().as_deref()
        );
        assert_ne!(me.nspid(), 0);
        assert!(all().any(|p| p.pid() == std::process::id()));
    }

    #[test]
    fn a_process_that_does_not_exist_cannot_be_opened() {
        // Above the kernel's PID_MAX_LIMIT (2^22).
        assert!(Proc::open(5_000_000).is_none());
    }
}
