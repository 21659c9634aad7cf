//! Turning a `struct path` into a [`PathRec`]: `bpf_d_path` where the kernel allows it, a
//! bounded dentry walk elsewhere.
use aya_ebpf::{
    bindings::path,
    helpers::{
        bpf_probe_read_kernel_buf,
        generated::{bpf_d_path, bpf_get_current_task, bpf_probe_read_kernel},
    },
};
use lsm_shared::*;

use crate::{
    kernel::{kconf, load_u32, load_u64, read_u32, read_u64},
    maps::{FILES, STATS},
    scratch::{BUF_MASK, Scratch},
};

#[inline(always)]
pub fn count(stat: u32) {
    if let Some(c) = STATS.get_ptr_mut(stat) {
        // SAFETY: per-CPU slot of this CPU; no other writer while the program runs.
        unsafe { *c += 1 };
    }
}

/// Fills `rec` from the `len` path bytes at `s.buf[start..]`.
#[inline(always)]
pub fn finish(s: &mut Scratch, rec: *mut PathRec, start: usize, len: usize, flags: u32) {
    // SAFETY: `rec` points into a map value or the scratch area, both writable and large
    // enough; the helper copies are bounded by the field sizes.
    unsafe {
        (*rec).len = len as u32;
        (*rec).flags = flags;
        let zero = s.zero.as_ptr() as *const core::ffi::c_void;
        bpf_probe_read_kernel(
            (*rec).head.as_mut_ptr() as *mut _,
            (2 * STR_LEN) as u32,
            zero,
        );
        let n = if len > STR_LEN { STR_LEN } else { len };
        if n > 0 {
            let src = s.buf.as_ptr().add(start & BUF_MASK) as *const core::ffi::c_void;
            bpf_probe_read_kernel((*rec).head.as_mut_ptr() as *mut _, n as u32, src);
        }
        let end = start + len;
        let mut i = 0usize;
        while i < STR_LEN {
            if i >= n {
                break;
            }
            let b = *s.buf.get_unchecked((end - 1 - i) & BUF_MASK);
            *(*rec).tail_rev.get_unchecked_mut(i) = b;
            i += 1;
        }
    }
}

/// Marks `rec` unresolved: string filters on it fail closed.
#[inline(always)]
pub fn unresolved(s: &mut Scratch, rec: *mut PathRec) {
    finish(s, rec, 0, 0, PATH_UNRESOLVED);
    count(STAT_PATH_UNRESOLVED);
}

/// Resolves `p` (a trusted `struct path *` from the hook's arguments) with `bpf_d_path`, or,
/// where that fails, with the dentry walk (a path it could not resolve would fail closed).
/// Only valid in programs attached where the kernel allows that helper.
#[inline(always)]
pub fn resolve_d_path(s: &mut Scratch, p: *const path, rec: *mut PathRec) {
    // SAFETY: `p` comes from the hook's BTF arguments; the buffer is PATH_BUF_LEN bytes of
    // the scratch area.
    let ret = unsafe {
        bpf_d_path(
            p as *mut path,
            s.buf.as_mut_ptr() as *mut _,
            PATH_BUF_LEN as u32,
        )
    };
    if ret <= 0 || ret as usize > PATH_BUF_LEN {
        count(STAT_DPATH_FAILED);
        let p = p as u64;
        let (mnt, dentry) = (
            read_u64(p, kconf!(path_mnt)),
            read_u64(p, kconf!(path_dentry)),
        );
        resolve_walk(s, mnt, dentry, rec);
        return;
    }
    // `ret` counts the terminating NUL.
    finish(s, rec, 0, (ret - 1) as usize, PATH_RESOLVED);
}

/// Walks from `dentry` on mount `vfsmnt` up to the current process's root, or, for a path
/// outside it, to the root of the mount tree (as `d_path` does), writing the path backwards
/// into the first half of the buffer. For files whose path was not captured at open time
/// (opened before the agent started or before a policy wanted it, or evicted from the
/// cache), and for hooks where `bpf_d_path` is refused.
///
/// `vfsmnt` 0 (a bare `struct dentry *`, which carries no mount) stops at the root of the
/// dentry's own file system: the path within its mount. That falls out of the mount step
/// (the "parent mount" of no mount reads as 0, the end), so both cases share one loop.
#[inline(always)]
pub fn resolve_walk(s: &mut Scratch, vfsmnt: u64, dentry: u64, rec: *mut PathRec) {
    count(STAT_PATH_WALKED);
    // SAFETY: a helper without arguments; it only returns the current task's address.
    let task = unsafe { bpf_get_current_task() };
    let root = read_u64(task, kconf!(task_fs)) + kconf!(fs_struct_root);
    // SAFETY: fields of the scratch area, which this program alone uses; volatile keeps
    // them in memory (see `Scratch::walk_root`).
    unsafe {
        core::ptr::write_volatile(&mut s.walk_root[0], read_u64(root, kconf!(path_mnt)));
        core::ptr::write_volatile(&mut s.walk_root[1], read_u64(root, kconf!(path_dentry)));
    }
    let off_root = kconf!(vfsmount_mnt_root);
    let off_parent = kconf!(dentry_d_parent);
    let off_name = kconf!(dentry_d_name) + kconf!(qstr_name);
    let off_len = kconf!(dentry_d_name) + kconf!(qstr_len);
    let off_mnt = kconf!(mount_mnt);
    let off_mnt_parent = kconf!(mount_mnt_parent);
    let off_mountpoint = kconf!(mount_mnt_mountpoint);

    let end = PATH_BUF_LEN;
    set_walk_pos(s, end as u64);
    let mut mnt = vfsmnt;
    let mut d = dentry;
    let mut done = false;
    let mut depth = 0u32;
    while depth < MAX_WALK_DEPTH {
        depth += 1;
        if d == 0 {
            break;
        }
        // SAFETY: as above.
        let at_root = unsafe {
            d == core::ptr::read_volatile(&s.walk_root[1])
                && mnt == core::ptr::read_volatile(&s.walk_root[0])
        };
        if at_root {
            done = true;
            break;
        }
        // With no mount (0) both mount reads fault and read as 0 (the helper reports a bad
        // address instead of taking it): no branch on it, so the verifier's states of the two
        // cases stay alike.
        let mnt_root = read_u64(mnt, off_root);
        let parent = read_u64(d, off_parent);
        if d == mnt_root || d == parent {
            let m = mnt.wrapping_sub(off_mnt);
            let mp = read_u64(m, off_mnt_parent);
            if mp == m || mp == 0 {
                done = true;
                break;
            }
            d = read_u64(m, off_mountpoint);
            mnt = mp + off_mnt;
            continue;
        }
        let name = read_u64(d, off_name);
        // Names are at most NAME_MAX (255) bytes; the mask also tells the verifier so.
        let nlen = (read_u32(d, off_len) & 0xff) as u64;
        let pos = walk_pos(s);
        if pos > end as u64 || pos < nlen + 1 {
            break; // longer than PATH_BUF_LEN: unresolved
        }
        let pos = pos - nlen;
        // SAFETY: the offset is masked into the buffer and nlen < 256, so the write stays
        // inside it (the buffer is twice PATH_BUF_LEN long).
        unsafe {
            let dst = s.buf.as_mut_ptr().add(pos as usize & BUF_MASK);
            let _ = bpf_probe_read_kernel_buf(
                name as *const u8,
                core::slice::from_raw_parts_mut(dst, nlen as usize & 0xff),
            );
        }
        let pos = pos - 1;
        // SAFETY: masked index within the buffer.
        unsafe { *s.buf.get_unchecked_mut(pos as usize & BUF_MASK) = b'/' };
        set_walk_pos(s, pos);
        d = parent;
    }
    if !done {
        count(STAT_WALK_FAILED);
        unresolved(s, rec);
        return;
    }
    let mut pos = walk_pos(s);
    if pos >= end as u64 {
        pos = end as u64 - 1;
        // SAFETY: masked index within the buffer.
        unsafe { *s.buf.get_unchecked_mut(pos as usize & BUF_MASK) = b'/' };
    }
    finish(
        s,
        rec,
        pos as usize,
        end - pos as usize,
        PATH_RESOLVED | PATH_WALKED,
    );
}

#[inline(always)]
fn walk_pos(s: &Scratch) -> u64 {
    // SAFETY: a field of the scratch area; volatile keeps it in memory (see Scratch).
    unsafe { core::ptr::read_volatile(&s.walk_pos) }
}

#[inline(always)]
fn set_walk_pos(s: &mut Scratch, pos: u64) {
    // SAFETY: a field of the scratch area, which this program alone uses; volatile keeps
    // it in memory (see Scratch).
    unsafe { core::ptr::write_volatile(&mut s.walk_pos, pos) }
}

/// Resolves a `struct file *` through the walk (any hook).
#[inline(always)]
pub fn resolve_file_walk(s: &mut Scratch, file: u64, rec: *mut PathRec) {
    let fp = file + kconf!(file_f_path);
    let mnt = read_u64(fp, kconf!(path_mnt));
    let dentry = read_u64(fp, kconf!(path_dentry));
    resolve_walk(s, mnt, dentry, rec);
}

/// `MNT_NS_INTERNAL`, the `mnt_ns` of mounts that belong to no namespace: `ERR_PTR(-EINVAL)`.
const MNT_NS_INTERNAL: u64 = (-22i64) as u64;
/// `MNT_INTERNAL` in `vfsmount.mnt_flags`: set on `kern_mount`s (pipes, sockets, memfds),
/// cleared on clones.
const MNT_INTERNAL: u32 = 0x4000;

/// Whether `file` is overlayfs' own open of a layer's file, made while it serves an open or
/// read of its own file: the file hooks already ran for that one, under the path the process
/// used. Linux 6.1 opens the layer's file under the overlay's path with the layer's inode
/// (`open_with_fake_path`); from 6.6 on it is a backing file on the layer's private clone
/// mount, which belongs to no namespace (`clone_private_mount`) and, unlike a `kern_mount`,
/// is not `MNT_INTERNAL`.
#[inline(always)]
pub fn is_layer_file(file: u64) -> bool {
    layer_file(file, false)
}

/// [`is_layer_file`] for an LSM program's BTF-typed `file` argument: plain loads where
/// `read_u64` would call a helper (see `load_u64`).
#[inline(always)]
pub fn is_layer_file_btf(file: u64) -> bool {
    layer_file(file, true)
}

/// Whether `file`, an LSM program's BTF-typed argument, has a bit of this kernel's `FMODE_BACKING`
/// mask (`KernelConfig::fmode_backing`; never with none): overlayfs opens a layer's file as a
/// backing file from 6.6 on. One load; only a hint, for [`is_backing_layer_file`].
#[inline(always)]
fn has_backing_mark(file: u64) -> bool {
    let mark = kconf!(fmode_backing);
    mark != 0 && u64::from(load_u32(file, kconf!(file_f_mode))) & mark != 0
}

/// [`is_layer_file_btf`] for a file with the backing mark: `file_permission` passes it before
/// any lookup, so `file_open` keeps no verdict for it and a read in a container costs no
/// hash lookup for the layer's file. Every other file pays one load for the test. A backing
/// file is opened on its real path, so only the mount test can tell it.
#[inline(always)]
pub fn is_backing_layer_file(file: u64) -> bool {
    has_backing_mark(file) && on_private_mount(file, true)
}

#[inline(always)]
fn layer_file(file: u64, btf: bool) -> bool {
    has_fake_path(file, btf) || on_private_mount(file, btf)
}

/// Linux 6.1's layer file: the overlay's path with the layer's inode.
#[inline(always)]
fn has_fake_path(file: u64, btf: bool) -> bool {
    let read = if btf { load_u64 } else { read_u64 };
    let dentry = read(file + kconf!(file_f_path), kconf!(path_dentry));
    read(dentry, kconf!(dentry_d_inode)) != read(file, kconf!(file_f_inode))
}

/// A file on overlayfs' private clone of a layer's mount (6.6+'s backing files, copy-up
/// opens): a mount of no namespace that is not a `kern_mount`.
#[inline(always)]
fn on_private_mount(file: u64, btf: bool) -> bool {
    let vfsmount =
        if btf { load_u64 } else { read_u64 }(file + kconf!(file_f_path), kconf!(path_mnt));
    let flags = if btf {
        load_u32(vfsmount, kconf!(vfsmount_mnt_flags))
    } else {
        read_u32(vfsmount, kconf!(vfsmount_mnt_flags))
    };
    // `container_of` of the mount: an address below the BTF pointer, read by the helper.
    let mount = vfsmount.wrapping_sub(kconf!(mount_mnt));
    flags & MNT_INTERNAL == 0 && read_u64(mount, kconf!(mount_mnt_ns)) == MNT_NS_INTERNAL
}

/// [`is_layer_file`] for a file that may be in the open-file cache, which never holds one: a
/// cached file costs one lookup, NULL (an anonymous `mmap`) none.
#[inline(always)]
pub fn is_uncached_layer_file(file: u64) -> bool {
    file != 0 && FILES.get_ptr(&file).is_none() && is_layer_file(file)
}
