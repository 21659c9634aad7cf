//! The passing `file_permission` verdicts `file_open` keeps per dentry (`DENTRY_VERDICTS`).
//!
//! An open of a file no read selector can match costs the path's `bpf_d_path` and its
//! lookups in the prefix tries, to find a verdict that passes. The next open of the same
//! file, through the same mount and from the same root, finds that verdict here instead:
//! what makes it still true is that nothing that could change the path has happened since,
//! and the kernel counts those things itself. `rename_lock`'s sequence count changes with
//! every `d_move` (a rename of the file or of any directory above it), `mount_lock`'s with
//! every change of the mount tree (a mount, a move, an unmount, a namespace's end); the plan
//! generation changes with the policies. A dentry freed and allocated again for another file
//! loses its entry when it gets its inode (the `d_instantiate` program), before any open of
//! it. Only passing verdicts are kept: a file some selector may match resolves its path at
//! every open, as its reads need it.
use aya_ebpf::helpers::generated::bpf_get_current_task_btf;
use lsm_shared::*;

use crate::{
    eval::keep_passing,
    kernel::{kconf, load_u32, load_u64, read_u32},
    maps::{DENTRY_VERDICTS, PLAN_GEN, hook_cfg, hook_has_selectors, remove_if_present},
    scratch::Scratch,
};

/// The sequence count of the seqlock at `addr`; odd (as while a writer holds it) when the
/// address is unknown, which keeps nothing.
#[inline(always)]
fn seq(addr: u64) -> u32 {
    if addr == 0 {
        return 1;
    }
    // The count is `seqlock_t`'s first field (`seqcount.seqcount.sequence`). A failed read
    // gives 0, an even count: then both reads around the resolution give 0 and nothing
    // tells a change, so a failed read keeps nothing either.
    match read_u32(addr, 0) {
        0 => 1,
        v => v,
    }
}

/// The current task's `fs_struct` (its root and working directory) and that struct's sequence
/// count, which `chroot`, `pivot_root`, `setns` and `chdir` change: `bpf_d_path` resolves from
/// the root as it is when it runs, which may not be the root read before it.
#[inline(always)]
fn task_fs() -> (u64, u64) {
    // SAFETY: a helper without arguments; it returns the current task as a BTF pointer.
    let task = unsafe { bpf_get_current_task_btf() } as u64;
    let fs = load_u64(task, kconf!(task_fs));
    (fs, u64::from(load_u32(fs, kconf!(fs_struct_seq))))
}

/// Whether `file_open` may answer `file_permission`'s verdict from this map: the read hook
/// has selectors (else there is nothing to decide), `file_open` has none of its own (they
/// need the path) and no later hook reads the open file's path back (`open_paths`).
#[inline(always)]
fn usable() -> bool {
    hook_cfg(HOOK_FILE_OPEN).is_some_and(|c| c.selectors == 0 && c.open_paths == 0)
        && hook_has_selectors(HOOK_FILE_PERMISSION)
}

/// At `file_open` (an LSM program: `file` is its BTF-typed argument), before the path is
/// resolved: notes what identifies this open of `file`
/// now (for [`keep_pass`]) and returns whether a passing verdict kept for its dentry is still
/// true; then the file gets it as its `file_permission` verdict, and its reads end at
/// `file_passes` with no path resolved at all.
#[inline(always)]
pub fn open_passes(s: &mut Scratch, file: u64) -> bool {
    if !usable() {
        // SAFETY: a field of the scratch area, which this program alone uses (see below).
        unsafe { core::ptr::write_volatile(&mut s.dentry_key, 0) };
        return false;
    }
    // The counts first: a change after them, while the rest is read, tells at the lookup.
    let rename_seq = seq(kconf!(rename_lock));
    let mount_seq = seq(kconf!(mount_lock));
    // Plain loads through BTF pointers (`file` is the hook's argument), no helper calls.
    let fp = file + kconf!(file_f_path);
    let dentry = load_u64(fp, kconf!(path_dentry));
    let (fs, fs_seq) = task_fs();
    let root = fs + kconf!(fs_struct_root);
    s.dentry = DentryVerdict {
        generation: PLAN_GEN.get(0).copied().unwrap_or(0),
        mnt: load_u64(fp, kconf!(path_mnt)),
        root_mnt: load_u64(root, kconf!(path_mnt)),
        root_dentry: load_u64(root, kconf!(path_dentry)),
        inode: load_u64(dentry, kconf!(dentry_d_inode)),
        rename_seq,
        mount_seq,
    };
    // SAFETY: a field of the scratch area, which this program alone uses; volatile as
    // `dentry_key` below.
    unsafe { core::ptr::write_volatile(&mut s.dentry_fs, [fs, fs_seq]) };
    let key = if (rename_seq | mount_seq | fs_seq as u32) & 1 == 0 && dentry != 0 {
        dentry
    } else {
        0
    };
    // SAFETY: a field of the scratch area, which this program alone uses; volatile, so that
    // `keep_pass` reads it from memory after the path's resolution (no register kept
    // across it, see `try_file_open`).
    unsafe { core::ptr::write_volatile(&mut s.dentry_key, key) };
    if key == 0 {
        return false;
    }
    // SAFETY: the program runs under RCU, so the element stays valid until it returns; it
    // is compared at once.
    let Some(kept) = (unsafe { DENTRY_VERDICTS.get(&key) }) else {
        return false;
    };
    if *kept != s.dentry {
        return false;
    }
    keep_passing(s, file, s.dentry.generation, HOOK_FILE_PERMISSION);
    true
}

/// At `file_open`, once the resolved path gave `file_permission` a passing verdict under the
/// generation [`open_passes`] read (or a later one): keeps it for the dentry, unless a rename,
/// a mount change or a change of the process's root ran while the path was resolved (the
/// path may be either side of it).
#[inline(always)]
pub fn keep_pass(s: &mut Scratch) {
    // SAFETY: as in `open_passes`.
    let key = unsafe { core::ptr::read_volatile(&s.dentry_key) };
    if key == 0
        || seq(kconf!(rename_lock)) != s.dentry.rename_seq
        || seq(kconf!(mount_lock)) != s.dentry.mount_seq
        // SAFETY: as above.
        || task_fs() != unsafe { core::ptr::read_volatile(&s.dentry_fs) }.into()
    {
        return;
    }
    let _ = DENTRY_VERDICTS.insert(&key, &s.dentry, 0);
}

/// At `d_instantiate`: `dentry` is given an inode, as a new file's or one looked up again;
/// its address may have been another file's, whose verdict must not pass for this one.
#[inline(always)]
pub fn forget(dentry: u64) {
    remove_if_present(&DENTRY_VERDICTS, dentry);
}
