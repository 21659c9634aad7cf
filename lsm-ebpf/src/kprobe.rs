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
    eval::{Mode, evaluate_file, file_passes, observe, observe_raw},
    file_rec,
    kernel::{kconf, read_u64},
    maps::{EXEC_PEND, FILE_VERDICTS, FILES, hook_has_selectors},
    path::{is_layer_file, is_uncached_layer_file, resolve_file_walk, resolve_walk},
    read_connection,
    scratch::Scratch,
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
    if is_layer_file(file) {
        return Ok(0);
    }
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
    // Every read and write runs this: without a selector here, not even the path lookup.
    if !hook_has_selectors(HOOK_FILE_PERMISSION) {
        return Ok(0);
    }
    let (s, cur) = enter()?;
    let file = arg(ctx, 0);
    if file_passes(s, file, HOOK_FILE_PERMISSION) {
        return Ok(0);
    }
    let mask = arg(ctx, 1) as u32 as u64;
    let Some(rec) = file_rec(s, file) else {
        return Ok(0);
    };
    evaluate_file(
        s,
        cur,
        HOOK_FILE_PERMISSION,
        rec,
        &[file, mask, 0, 0, 0],
        Mode::Fallback,
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
    if !hook_has_selectors(HOOK_MMAP_FILE) {
        return Ok(0);
    }
    let (s, cur) = enter()?;
    let file = arg(ctx, 0);
    if file_passes(s, file, HOOK_MMAP_FILE) {
        return Ok(0);
    }
    let prot = arg(ctx, 1);
    let args = [file, prot, prot, arg(ctx, 2), 0];
    let rec = if file == 0 {
        s.rec.len = 0;
        s.rec.flags = PATH_RESOLVED;
        &s.rec as *const PathRec
    } else if let Some(rec) = file_rec(s, file) {
        rec
    } else {
        return Ok(0);
    };
    evaluate_file(s, cur, HOOK_MMAP_FILE, rec, &args, Mode::Fallback);
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
    if !hook_has_selectors(HOOK_FILE_TRUNCATE) {
        return Ok(0);
    }
    let (s, cur) = enter()?;
    let file = arg(ctx, 0);
    if file_passes(s, file, HOOK_FILE_TRUNCATE) {
        return Ok(0);
    }
    let Some(rec) = file_rec(s, file) else {
        return Ok(0);
    };
    evaluate_file(
        s,
        cur,
        HOOK_FILE_TRUNCATE,
        rec,
        &[file, 0, 0, 0, 0],
        Mode::Fallback,
    );
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
    if is_local_api(&s.net, kconf!(api_port)) {
        return Ok(0);
    }
    let args = [sock, address, addrlen as u64, 0, 0];
    observe(s, cur, HOOK_SOCKET_CONNECT, None, &args);
    Ok(0)
}

#[kprobe]
pub fn kprobe_file_free(ctx: ProbeContext) -> u32 {
    let file = arg(&ctx, 0);
    let _ = FILES.remove(&file);
    // Its address may be a new file's next: no verdict of this one may outlive it.
    let _ = FILE_VERDICTS.remove(&file);
    0
}

/// The whole program of a kprobe on the `security_*` function of a hook whose arguments the
/// generic reader reads: the function's first `N` arguments are the hook's.
#[inline(always)]
fn try_generic<const N: usize>(ctx: &ProbeContext, hook: u32) -> Result<i32, i32> {
    let (s, cur) = enter()?;
    observe_args::<N>(ctx, s, cur, hook);
    Ok(0)
}

/// [`try_generic`] for the twin of a hand-written file hook (argument 0 a `struct file *`):
/// it passes overlayfs' own file of a layer, as the hand-written kprobes do.
#[inline(always)]
fn try_generic_file<const N: usize>(ctx: &ProbeContext, hook: u32) -> Result<i32, i32> {
    let (s, cur) = enter()?;
    if is_uncached_layer_file(arg(ctx, 0)) {
        return Ok(0);
    }
    observe_args::<N>(ctx, s, cur, hook);
    Ok(0)
}

/// Collects the function's first `N` arguments and evaluates them.
#[inline(always)]
fn observe_args<const N: usize>(
    ctx: &ProbeContext,
    s: &mut Scratch,
    cur: crate::entry::Current,
    hook: u32,
) {
    let mut i = 0usize;
    while i < MAX_ARGS {
        s.set_raw(i, if i < N { arg(ctx, i) } else { 0 });
        i += 1;
    }
    observe_raw(s, cur, hook, N);
}

/// `security_path_symlink(const struct path *dir, struct dentry *dentry, const char *old_name)`.
#[kprobe]
pub fn kprobe_path_symlink(ctx: ProbeContext) -> u32 {
    ret(try_generic::<3>(&ctx, HOOK_PATH_SYMLINK)) as u32
}

/// `security_inode_mkdir`: the arguments of `inode_mkdir`.
#[kprobe]
pub fn kprobe_inode_mkdir(ctx: ProbeContext) -> u32 {
    ret(try_generic::<3>(&ctx, HOOK_INODE_MKDIR)) as u32
}

/// `security_path_link`: the arguments of `path_link`.
#[kprobe]
pub fn kprobe_path_link(ctx: ProbeContext) -> u32 {
    ret(try_generic::<3>(&ctx, HOOK_PATH_LINK)) as u32
}

/// `security_sb_mount`: the arguments of `sb_mount`.
#[kprobe]
pub fn kprobe_sb_mount(ctx: ProbeContext) -> u32 {
    ret(try_generic::<5>(&ctx, HOOK_SB_MOUNT)) as u32
}

/// `security_bprm_creds_from_file`: the arguments of `bprm_creds_from_file`.
#[kprobe]
pub fn kprobe_bprm_creds_from_file(ctx: ProbeContext) -> u32 {
    ret(try_generic::<2>(&ctx, HOOK_BPRM_CREDS_FROM_FILE)) as u32
}

/// `security_capable`: the arguments of `capable`.
#[kprobe]
pub fn kprobe_capable(ctx: ProbeContext) -> u32 {
    ret(try_generic::<4>(&ctx, HOOK_CAPABLE)) as u32
}

/// `security_create_user_ns`: the arguments of `userns_create`.
#[kprobe]
pub fn kprobe_userns_create(ctx: ProbeContext) -> u32 {
    ret(try_generic::<1>(&ctx, HOOK_USERNS_CREATE)) as u32
}

/// `security_task_fix_setuid`: the arguments of `task_fix_setuid`.
#[kprobe]
pub fn kprobe_task_fix_setuid(ctx: ProbeContext) -> u32 {
    ret(try_generic::<3>(&ctx, HOOK_TASK_FIX_SETUID)) as u32
}

/// `security_ptrace_access_check`: the arguments of `ptrace_access_check`.
#[kprobe]
pub fn kprobe_ptrace_access_check(ctx: ProbeContext) -> u32 {
    ret(try_generic::<2>(&ctx, HOOK_PTRACE_ACCESS_CHECK)) as u32
}

/// `security_settime64`: the arguments of `settime`.
#[kprobe]
pub fn kprobe_settime(ctx: ProbeContext) -> u32 {
    ret(try_generic::<2>(&ctx, HOOK_SETTIME)) as u32
}

/// `security_bpf`: the arguments of `bpf`.
#[kprobe]
pub fn kprobe_bpf(ctx: ProbeContext) -> u32 {
    ret(try_generic::<3>(&ctx, HOOK_BPF)) as u32
}

/// `security_kernel_module_request`: the arguments of `kernel_module_request`.
#[kprobe]
pub fn kprobe_kernel_module_request(ctx: ProbeContext) -> u32 {
    ret(try_generic::<1>(&ctx, HOOK_KERNEL_MODULE_REQUEST)) as u32
}

/// `security_inode_follow_link`: the arguments of `inode_follow_link`.
#[kprobe]
pub fn kprobe_inode_follow_link(ctx: ProbeContext) -> u32 {
    ret(try_generic::<3>(&ctx, HOOK_INODE_FOLLOW_LINK)) as u32
}

/// `security_sk_alloc`: the arguments of `sk_alloc_security`.
#[kprobe]
pub fn kprobe_sk_alloc_security(ctx: ProbeContext) -> u32 {
    ret(try_generic::<3>(&ctx, HOOK_SK_ALLOC)) as u32
}

/// `security_sb_pivotroot`: the arguments of `sb_pivotroot`.
#[kprobe]
pub fn kprobe_sb_pivotroot(ctx: ProbeContext) -> u32 {
    ret(try_generic::<2>(&ctx, HOOK_SB_PIVOTROOT)) as u32
}

/// `security_socket_create`: the arguments of `socket_create`.
#[kprobe]
pub fn kprobe_socket_create(ctx: ProbeContext) -> u32 {
    ret(try_generic::<4>(&ctx, HOOK_SOCKET_CREATE)) as u32
}

/// `security_kernel_read_file`: the arguments of `kernel_read_file`.
#[kprobe]
pub fn kprobe_kernel_read_file(ctx: ProbeContext) -> u32 {
    ret(try_generic::<3>(&ctx, HOOK_KERNEL_READ_FILE)) as u32
}

/// `security_kernel_load_data`: the arguments of `kernel_load_data`.
#[kprobe]
pub fn kprobe_kernel_load_data(ctx: ProbeContext) -> u32 {
    ret(try_generic::<2>(&ctx, HOOK_KERNEL_LOAD_DATA)) as u32
}

/// `security_capset`: the arguments of `capset`.
#[kprobe]
pub fn kprobe_capset(ctx: ProbeContext) -> u32 {
    ret(try_generic::<5>(&ctx, HOOK_CAPSET)) as u32
}

// The kprobe twins of the hand-written hooks (see `table.rs`), for nodes without BPF LSM.

/// `security_file_open(struct file *file)`, for the twin of `file_open`.
#[kprobe]
pub fn kprobe_file_open_generic(ctx: ProbeContext) -> u32 {
    ret(try_generic_file::<1>(&ctx, HOOK_TWIN_BASE + HOOK_FILE_OPEN)) as u32
}

/// `security_file_permission(struct file *file, int mask)`.
#[kprobe]
pub fn kprobe_file_permission_generic(ctx: ProbeContext) -> u32 {
    ret(try_generic_file::<2>(
        &ctx,
        HOOK_TWIN_BASE + HOOK_FILE_PERMISSION,
    )) as u32
}

/// `security_mmap_file(struct file *file, unsigned long prot, unsigned long flags)`: the
/// hook's `reqprot` is not among them (the hook gets it computed), so the twin reads the
/// function's three arguments as the hook's first, third and fourth.
#[kprobe]
pub fn kprobe_mmap_file_generic(ctx: ProbeContext) -> u32 {
    ret(try_mmap_generic(&ctx)) as u32
}

#[inline(always)]
fn try_mmap_generic(ctx: &ProbeContext) -> Result<i32, i32> {
    let (s, cur) = enter()?;
    if is_uncached_layer_file(arg(ctx, 0)) {
        return Ok(0);
    }
    s.set_raw(0, arg(ctx, 0));
    s.set_raw(1, arg(ctx, 1));
    s.set_raw(2, arg(ctx, 1));
    s.set_raw(3, arg(ctx, 2));
    s.set_raw(4, 0);
    observe_raw(s, cur, HOOK_TWIN_BASE + HOOK_MMAP_FILE, 4);
    Ok(0)
}

/// `security_path_truncate(const struct path *path)`.
#[kprobe]
pub fn kprobe_path_truncate_generic(ctx: ProbeContext) -> u32 {
    ret(try_generic::<1>(&ctx, HOOK_TWIN_BASE + HOOK_PATH_TRUNCATE)) as u32
}

/// `security_file_truncate(struct file *file)`.
#[kprobe]
pub fn kprobe_file_truncate_generic(ctx: ProbeContext) -> u32 {
    ret(try_generic_file::<1>(
        &ctx,
        HOOK_TWIN_BASE + HOOK_FILE_TRUNCATE,
    )) as u32
}

/// `security_bprm_check(struct linux_binprm *bprm)`.
#[kprobe]
pub fn kprobe_bprm_check_security_generic(ctx: ProbeContext) -> u32 {
    ret(try_generic::<1>(&ctx, HOOK_TWIN_BASE + HOOK_BPRM_CHECK)) as u32
}
