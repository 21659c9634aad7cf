//! Processes that were running before the agent: read once from `/proc`.

use std::{
    collections::HashMap,
    fs,
    os::unix::{ffi::OsStrExt, fs::MetadataExt},
};

use lsm_shared::{LINEAGE_LEN, NUM_HOOKS, PROC_FROM_PROCFS, ProcInfo};

use crate::{
    events::decode::rec_from_path,
    policy::ir::{HostNs, NsType},
};

/// The parent pid from the text of `/proc/PID/stat` (the field after the `)` of the comm).
pub fn ppid_from_stat(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The pid in the process's own pid namespace: the last `NSpid:` field of
/// `/proc/PID/status`.
pub fn nspid_from_status(status: &str) -> Option<u32> {
    let line = status.lines().find(|l| l.starts_with("NSpid:"))?;
    line.split_whitespace().last()?.parse().ok()
}

/// `[pid, parent, grandparent, ...]` from a pid → parent map, 0-padded.
pub fn lineage(pid: u32, parents: &HashMap<u32, u32>) -> [u32; LINEAGE_LEN] {
    let mut out = [0; LINEAGE_LEN];
    let mut cur = pid;
    for slot in out.iter_mut() {
        if cur == 0 {
            break;
        }
        *slot = cur;
        cur = parents.get(&cur).copied().unwrap_or(0);
    }
    out
}

/// The namespace inodes of PID 1 (`host_ns` in `matchNamespaces`). A type the kernel lacks,
/// or an unreadable link, gives 0.
pub fn host_namespaces() -> HostNs {
    let mut out = HostNs::default();
    for t in NsType::ALL {
        let path = format!("/proc/1/ns/{}", t.proc_name());
        if let Ok(md) = fs::metadata(&path) {
            out.0[t.index()] = md.ino() as u32;
        }
    }
    out
}

/// Every process visible in `/proc` with its executable and parent.
pub fn scan() -> Vec<(u32, ProcInfo)> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut parents = HashMap::new();
    let mut nspids = HashMap::new();
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
        let nspid = fs::read_to_string(entry.path().join("status"))
            .ok()
            .and_then(|s| nspid_from_status(&s))
            .unwrap_or(0);
        parents.insert(tgid, ppid);
        nspids.insert(tgid, nspid);
        out.push((
            tgid,
            ProcInfo {
                ppid,
                flags: PROC_FROM_PROCFS,
                ktime: 0,
                lineage: [0; LINEAGE_LEN],
                ns_lineage: [0; LINEAGE_LEN],
                // Processes started before a followChildren policy are not its children
                // (as in Tetragon).
                follow: [0; NUM_HOOKS as usize],
                exe: rec_from_path(exe.as_os_str().as_bytes()),
            },
        ));
    }
    for (tgid, info) in out.iter_mut() {
        info.lineage = lineage(*tgid, &parents);
        for (ns, pid) in info.ns_lineage.iter_mut().zip(info.lineage) {
            *ns = nspids.get(&pid).copied().unwrap_or(0);
        }
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
    fn the_scan_finds_this_test_process_with_its_parent_in_the_lineage() {
        let me = std::process::id();
        let all = scan();
        let (_, info) = all.iter().find(|(pid, _)| *pid == me).expect("self");
        assert_eq!(info.lineage[0], me);
        assert_eq!(info.lineage[1], info.ppid);
        assert_ne!(info.ns_lineage[0], 0);
    }

    #[test]
    fn nspid_is_the_innermost_pid() {
        let status = "Name:\tsh\nNSpid:\t4242\t17\t1\nNSsid:\t1\n";
        assert_eq!(nspid_from_status(status), Some(1));
        assert_eq!(nspid_from_status("Name: x\n"), None);
    }

    #[test]
    fn lineage_follows_parents_until_the_chain_ends() {
        let parents = HashMap::from([(30, 20), (20, 1), (1, 0)]);
        let l = lineage(30, &parents);
        assert_eq!(&l[..4], &[30, 20, 1, 0]);
        let long: HashMap<u32, u32> = (2..100).map(|p| (p, p - 1)).collect();
        assert_eq!(
            lineage(99, &long)[LINEAGE_LEN - 1],
            99 - LINEAGE_LEN as u32 + 1
        );
    }
}
