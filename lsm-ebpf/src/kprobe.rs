//! Kprobe entry points on the `security_*` functions that call the LSM hooks of
//! `main.rs`, for kernels where BPF LSM is not active. They read the same arguments and ask
//! the same evaluator ([`observe`]), which cannot deny from here: matches become events
//! marked as observed, and `Sigkill` runs after the fact only when the agent asks for it.
//!
//! `bpf_d_path` is refused to kprobes, so every path comes from the dentry walk (or the
//! `FILES` cache, which these programs fill and `security_file_free` empties).
use aya_ebpf::{macros::kprobe, programs::ProbeContext};
use lsm_shared::*;

use crate::{
    entry::{enter, ret},
    eval::observe,
    file_rec,
    kernel::{kconf, read_u64},
    maps::{EXEC_PEND, FILES},
    path::{resolve_file_walk, resolve_walk},
    read_connection,
};

/// Argument `n` of the probed function (0 when the registers cannot be read).
#[inline(always)]
fn arg(ctx: &ProbeContext, n: usize) -> u64 {
    ctx.arg::<u64>(n).unwrap_or(0)
}

#[kprobe]
pub fn kprobe_file_open(ctx: ProbeContext) -> u32 {
    ret(try_kprobe_file_open(&ctx)) as u32
}

/// `security_file_open(struct file *file)`.
#[inline(always)]
fn try_kprobe_file_open(ctx: &ProbeContext) -> Result<i32, i32> {
    let (s, cur) = enter()?;
    let file = arg(ctx, 0);
    let rec = &raw mut s.rec;
    resolve_file_walk(s, file, rec);
    if s.rec.flags & PATH_RESOLVED != 0 {
        let _ = FILES.insert(&file, &s.rec, 0);
    }
    observe(s, cur, HOOK_FILE_OPEN, Some(rec), &[file, 0, 0, 0, 0]);
    Ok(0)
}

#[kprobe]
pub fn kprobe_file_permission(ctx: ProbeContext) -> u32 {
    ret(try_kprobe_file_permission(&ctx)) as u32
}

/// `security_file_permission(struct file *file, int mask)`.
#[inline(always)]
fn try_kprobe_file_permission(ctx: &ProbeContext) -> Result<i32, i32> {
    let (s, cur) = enter()?;
    let file = arg(ctx, 0);
    let mask = arg(ctx, 1) as u32 as u64;
    let rec = file_rec(s, file);
    observe(
        s,
        cur,
        HOOK_FILE_PERMISSION,
        Some(rec),
        &[file, mask, 0, 0, 0],
    );
    Ok(0)
}

#[kprobe]
pub fn kprobe_mmap_file(ctx: ProbeContext) -> u32 {
    ret(try_kprobe_mmap_file(&ctx)) as u32
}

/// `security_mmap_file(struct file *file, unsigned long prot, unsigned long flags)`: the hook
/// gets `(file, reqprot, prot, flags)` where `prot` may add `PROT_EXEC` for READ_IMPLIES_EXEC
/// personalities; the kprobe sees the requested protection in both places.
#[inline(always)]
fn try_kprobe_mmap_file(ctx: &ProbeContext) -> Result<i32, i32> {
    let (s, cur) = enter()?;
    let file = arg(ctx, 0);
    let prot = arg(ctx, 1);
    let args = [file, prot, prot, arg(ctx, 2), 0];
    let rec = if file == 0 {
        s.rec.len = 0;
        s.rec.flags = PATH_RESOLVED;
        &s.rec as *const PathRec
    } else {
        file_rec(s, file)
    };
    observe(s, cur, HOOK_MMAP_FILE, Some(rec), &args);
    Ok(0)
}

#[kprobe]
pub fn kprobe_path_truncate(ctx: ProbeContext) -> u32 {
    ret(try_kprobe_path_truncate(&ctx)) as u32
}

/// `security_path_truncate(const struct path *path)`.
#[inline(always)]
fn try_kprobe_path_truncate(ctx: &ProbeContext) -> Result<i32, i32> {
    let (s, cur) = enter()?;
    let p = arg(ctx, 0);
    let mnt = read_u64(p, kconf!(path_mnt));
    let dentry = read_u64(p, kconf!(path_dentry));
    let rec = &raw mut s.rec;
    resolve_walk(s, mnt, dentry, rec);
    observe(s, cur, HOOK_PATH_TRUNCATE, Some(rec), &[p, 0, 0, 0, 0]);
    Ok(0)
}

#[kprobe]
pub fn kprobe_file_truncate(ctx: ProbeContext) -> u32 {
    ret(try_kprobe_file_truncate(&ctx)) as u32
}

/// `security_file_truncate(struct file *file)` (Linux 6.2+).
#[inline(always)]
fn try_kprobe_file_truncate(ctx: &ProbeContext) -> Result<i32, i32> {
    let (s, cur) = enter()?;
    let file = arg(ctx, 0);
    let rec = file_rec(s, file);
    observe(s, cur, HOOK_FILE_TRUNCATE, Some(rec), &[file, 0, 0, 0, 0]);
    Ok(0)
}

#[kprobe]
pub fn kprobe_bprm_check(ctx: ProbeContext) -> u32 {
    ret(try_kprobe_bprm_check(&ctx)) as u32
}

/// `security_bprm_check(struct linux_binprm *bprm)`. Also records the executable for
/// `sched_process_exec`, as the LSM program does, so `matchBinaries` works in this mode too.
#[inline(always)]
fn try_kprobe_bprm_check(ctx: &ProbeContext) -> Result<i32, i32> {
    let (s, cur) = enter()?;
    let bprm = arg(ctx, 0);
    let file = read_u64(bprm, kconf!(binprm_file));
    if file == 0 {
        return Ok(0);
    }
    let rec = &raw mut s.rec;
    resolve_file_walk(s, file, rec);
    let _ = EXEC_PEND.insert(&cur.pid(), &s.rec, 0);
    observe(s, cur, HOOK_BPRM_CHECK, Some(rec), &[bprm, 0, 0, 0, 0]);
    Ok(0)
}

#[kprobe]
pub fn kprobe_socket_connect(ctx: ProbeContext) -> u32 {
    ret(try_kprobe_socket_connect(&ctx)) as u32
}

/// `security_socket_connect(struct socket *sock, struct sockaddr *address, int addrlen)`.
#[inline(always)]
fn try_kprobe_socket_connect(ctx: &ProbeContext) -> Result<i32, i32> {
    let (s, cur) = enter()?;
    let sock = arg(ctx, 0);
    let address = arg(ctx, 1);
    let addrlen = arg(ctx, 2) as i32;
    read_connection(s, sock, address);
    let args = [sock, address, addrlen as u64, 0, 0];
    observe(s, cur, HOOK_SOCKET_CONNECT, None, &args);
    Ok(0)
}

#[kprobe]
pub fn kprobe_file_free(ctx: ProbeContext) -> u32 {
    let file = arg(&ctx, 0);
    let _ = FILES.remove(&file);
    0
}
