//! Processes that were running before the agent: read once from `/proc` into the kernel's
//! process table.

use std::{
    collections::HashMap,
    fs,
    os::unix::{ffi::OsStrExt, fs::MetadataExt},
};

use lsm_shared::{
    LINEAGE_LEN, NUM_HOOKS, PATH_RESOLVED, PROC_FROM_PROCFS, PathRec, ProcInfo, STR_LEN,
};

use crate::policy::ir::{HostNs, NsType};

/// A resolved path as the kernel records it: its length, its first [`STR_LEN`] bytes and its
/// last [`STR_LEN`] bytes reversed.
pub fn rec_from_path(path: &[u8]) -> PathRec {
    let mut rec = PathRec::empty();
    rec.len = path.len() as u32;
    rec.flags = PATH_RESOLVED;
    let n = path.len().min(STR_LEN);
    rec.head[..n].copy_from_slice(&path[..n]);
    for (i, b) in path.iter().rev().take(STR_LEN).enumerate() {
        rec.tail_rev[i] = *b;
    }
    rec
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
    let mut out = Vec::new();
    let mut parents = HashMap::new();
    let mut nspids = HashMap::new();
    for p in crate::procfs::all() {
        // Kernel threads have no exe link; they stay unknown (empty binary).
        let Some(exe) = p.exe() else {
            continue;
        };
        let tgid = p.pid();
        let ppid = p.ppid();
        parents.insert(tgid, ppid);
        nspids.insert(tgid, p.nspid());
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
    fn the_scan_finds_this_test_process_with_its_parent_in_the_lineage() {
        let me = std::process::id();
        let all = scan();
        let (_, info) = all.iter().find(|(pid, _)| *pid == me).expect("self");
        assert_eq!(info.lineage[0], me);
        assert_eq!(info.lineage[1], info.ppid);
        assert_ne!(info.ns_lineage[0], 0);
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
