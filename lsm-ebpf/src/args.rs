//! The generic argument reader: raw arguments (whatever the entry point collected: an LSM
//! hook's context slots, a kprobe's registers) → the values the evaluator and the event need,
//! following the hook's [`ArgDesc`]s. One reader for every hook without a hand-written
//! program, so adding a hook adds a table row in user space and a thin entry here, never a
//! new reader.
use aya_ebpf::helpers::generated::{
    bpf_get_current_task, bpf_probe_read_kernel_str, bpf_probe_read_user_str,
};
use lsm_shared::*;

use crate::{
    eval::kcopy,
    kernel::{kconf, read_u32, read_u64},
    maps::FILES,
    path::{finish, resolve_walk, unresolved},
    scratch::Scratch,
};

/// Reads the first `nargs` arguments `cfg.args` describes out of `s.raw` into `s.vals` and
/// `s.strs`, and marks in `s.str_mask()` the positions whose string record it filled.
/// Bounded: one pass over at most [`MAX_ARGS`] descriptors, at most one string read or one
/// dentry walk each. `nargs` is the hook's argument count, a constant at every call site, so
/// the verifier only walks the positions a hook has.
#[inline(always)]
pub fn read(s: &mut Scratch, cfg: &HookConfig, nargs: usize) {
    s.set_str_mask(0);
    let mut i = 0usize;
    while i < MAX_ARGS && i < nargs {
        let d = cfg.args[i];
        let v = s.raw.get(d.src as usize).copied().unwrap_or(0);
        let val = if d.kind == ARG_INT {
            int_of_width(v, d.width)
        } else if arg_is_string(d.kind) {
            // SAFETY: `i < MAX_ARGS`, the length of `strs`.
            let rec = unsafe { s.strs.as_mut_ptr().add(i) };
            read_string(s, d.kind, v, rec);
            let bits = s.str_mask() | (1 << i);
            s.set_str_mask(bits);
            v
        } else {
            0
        };
        // SAFETY: `i < MAX_ARGS`, the length of `vals`; a plain store into the scratch area.
        unsafe { core::ptr::write_volatile(s.vals.as_mut_ptr().add(i), val) };
        i += 1;
    }
}

/// Fills `rec` with the string, path or file `v` of kind `kind` points to. One walk call
/// site for every path-like kind, so the verifier checks the walk once per argument.
#[inline(always)]
fn read_string(s: &mut Scratch, kind: u8, v: u64, rec: *mut PathRec) {
    if kind == ARG_STR || kind == ARG_USTR {
        read_str(s, v, rec, kind == ARG_USTR);
        return;
    }
    let (mnt, dentry) = if kind == ARG_PATH {
        (
            read_u64(v, kconf!(path_mnt)),
            read_u64(v, kconf!(path_dentry)),
        )
    } else if kind == ARG_DENTRY {
        (0, v)
    } else {
        let file = if kind == ARG_BINPRM {
            read_u64(v, kconf!(binprm_file))
        } else if kind == ARG_FD {
            fd_file(v)
        } else {
            v
        };
        if file == 0 {
            unresolved(s, rec);
            return;
        }
        if let Some(cached) = FILES.get_ptr(&file) {
            // SAFETY: a live map value of the same type; `rec` is a scratch record.
            unsafe { kcopy(rec, cached) };
            return;
        }
        let fp = file + kconf!(file_f_path);
        (
            read_u64(fp, kconf!(path_mnt)),
            read_u64(fp, kconf!(path_dentry)),
        )
    };
    resolve_walk(s, mnt, dentry, rec);
}

/// The `struct file *` of descriptor `fd` in the current task's table; 0 when there is
/// none (closed, out of range, or unreadable).
#[inline(always)]
fn fd_file(fd: u64) -> u64 {
    // Descriptors are C ints: a negative one (an error passed along) has no file.
    let fd = fd as u32;
    if fd > i32::MAX as u32 {
        return 0;
    }
    // SAFETY: a helper without arguments; it only returns the current task's address.
    let task = unsafe { bpf_get_current_task() };
    let files = read_u64(task, kconf!(task_files));
    let fdt = read_u64(files, kconf!(files_fdt));
    if fd >= read_u32(fdt, kconf!(fdt_max_fds)) {
        return 0;
    }
    let array = read_u64(fdt, kconf!(fdt_fd));
    read_u64(array, u64::from(fd) * 8)
}

/// A `char *` in kernel or (`user`) user memory: its first `PATH_BUF_LEN - 1` bytes (the
/// rest is cut); NULL is the empty string, an unreadable pointer an unresolved record
/// (string filters fail closed).
#[inline(always)]
fn read_str(s: &mut Scratch, ptr: u64, rec: *mut PathRec, user: bool) {
    if ptr == 0 {
        finish(s, rec, 0, 0, PATH_RESOLVED);
        return;
    }
    // SAFETY: the buffer is PATH_BUF_LEN bytes of the scratch area; the helpers stop there,
    // NUL-terminate, and report (rather than take) a fault on the source.
    let n = unsafe {
        if user {
            bpf_probe_read_user_str(
                s.buf.as_mut_ptr() as *mut _,
                PATH_BUF_LEN as u32,
                ptr as *const _,
            )
        } else {
            bpf_probe_read_kernel_str(
                s.buf.as_mut_ptr() as *mut _,
                PATH_BUF_LEN as u32,
                ptr as *const _,
            )
        }
    };
    if n <= 0 || n as usize > PATH_BUF_LEN {
        unresolved(s, rec);
        return;
    }
    // `n` counts the terminating NUL.
    finish(s, rec, 0, (n - 1) as usize, PATH_RESOLVED);
}
