//! Processes that were running before the agent: read once from `/proc`.

use std::{fs, os::unix::ffi::OsStrExt};

use lsm_shared::{PROC_FROM_PROCFS, ProcInfo};

use crate::events::decode::rec_from_path;

/// The parent pid from the text of `/proc/PID/stat` (the field after the `)` of the comm).
pub fn ppid_from_stat(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Every process visible in `/proc` with its executable and parent.
pub fn scan() -> Vec<(u32, ProcInfo)> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Some(tgid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // Kernel threads have no exe link; they stay unknown (empty binary).
        let Ok(exe) = fs::read_link(entry.path().join("exe")) else {
            continue;
        };
        let ppid = fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|s| ppid_from_stat(&s))
            .unwrap_or(0);
        out.push((
            tgid,
            ProcInfo {
                ppid,
                flags: PROC_FROM_PROCFS,
                ktime: 0,
                exe: rec_from_path(exe.as_os_str().as_bytes()),
            },
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ppid_is_read_after_a_comm_with_spaces_and_parens() {
        assert_eq!(ppid_from_stat("42 (my (odd) cmd) S 7 42 42 0"), Some(7));
    }

    #[test]
    fn the_scan_finds_this_test_process() {
        let me = std::process::id();
        assert!(scan().iter().any(|(pid, _)| *pid == me));
    }
}
