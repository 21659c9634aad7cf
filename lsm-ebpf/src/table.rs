//! The LSM hooks of the wider translation table: thin entries that collect the hook's raw
//! arguments and hand them to the generic reader and the evaluator ([`evaluate_raw`]). What
//! each argument is, and whether it is read at all, comes from the plan the agent wrote
//! (`HookConfig::args`), not from code here.
use aya_ebpf::{macros::lsm, programs::LsmContext};
use lsm_shared::*;

use crate::{
    entry::{enter_lsm, ret},
    eval::evaluate_raw,
    path::is_uncached_layer_file,
    scratch::Scratch,
};

/// The whole program of a hook with `N` arguments: the first `N` context slots are the
/// hook's arguments (slot `N` holds the verdict of the LSMs that ran before). Constant
/// indices only, as the verifier requires for context reads.
#[inline(always)]
fn try_hook<const N: usize>(ctx: &LsmContext, hook: u32) -> Result<i32, i32> {
    let (s, cur) = enter_lsm(ctx, N, hook)?;
    Ok(evaluate_args::<N>(ctx, s, cur, hook))
}

/// [`try_hook`] for the twin of a hand-written file hook (argument 0 a `struct file *`): it
/// passes overlayfs' own file of a layer as the hand-written program does
/// ([`crate::path::is_layer_file`]), so that a policy posts once per operation, under the path the
/// process used.
#[inline(always)]
fn try_file_hook<const N: usize>(ctx: &LsmContext, hook: u32) -> Result<i32, i32> {
    let (s, cur) = enter_lsm(ctx, N, hook)?;
    if is_uncached_layer_file(ctx.arg(0)) {
        return Ok(0);
    }
    Ok(evaluate_args::<N>(ctx, s, cur, hook))
}

/// Collects the hook's `N` arguments and evaluates them.
#[inline(always)]
fn evaluate_args<const N: usize>(
    ctx: &LsmContext,
    s: &mut Scratch,
    cur: crate::entry::Current,
    hook: u32,
) -> i32 {
    s.set_raw(0, if N > 0 { ctx.arg(0) } else { 0 });
    s.set_raw(1, if N > 1 { ctx.arg(1) } else { 0 });
    s.set_raw(2, if N > 2 { ctx.arg(2) } else { 0 });
    s.set_raw(3, if N > 3 { ctx.arg(3) } else { 0 });
    s.set_raw(4, if N > 4 { ctx.arg(4) } else { 0 });
    evaluate_raw(s, cur, hook, N)
}

#[lsm(hook = "path_symlink")]
pub fn path_symlink(ctx: LsmContext) -> i32 {
    ret(try_hook::<3>(&ctx, HOOK_PATH_SYMLINK))
}

#[lsm(hook = "inode_mkdir")]
pub fn inode_mkdir(ctx: LsmContext) -> i32 {
    ret(try_hook::<3>(&ctx, HOOK_INODE_MKDIR))
}

#[lsm(hook = "path_link")]
pub fn path_link(ctx: LsmContext) -> i32 {
    ret(try_hook::<3>(&ctx, HOOK_PATH_LINK))
}

#[lsm(hook = "sb_mount")]
pub fn sb_mount(ctx: LsmContext) -> i32 {
    ret(try_hook::<5>(&ctx, HOOK_SB_MOUNT))
}

#[lsm(hook = "bprm_creds_from_file")]
pub fn bprm_creds_from_file(ctx: LsmContext) -> i32 {
    ret(try_hook::<2>(&ctx, HOOK_BPRM_CREDS_FROM_FILE))
}

#[lsm(hook = "capable")]
pub fn capable(ctx: LsmContext) -> i32 {
    ret(try_hook::<4>(&ctx, HOOK_CAPABLE))
}

#[lsm(hook = "userns_create")]
pub fn userns_create(ctx: LsmContext) -> i32 {
    ret(try_hook::<1>(&ctx, HOOK_USERNS_CREATE))
}

#[lsm(hook = "task_fix_setuid")]
pub fn task_fix_setuid(ctx: LsmContext) -> i32 {
    ret(try_hook::<3>(&ctx, HOOK_TASK_FIX_SETUID))
}

#[lsm(hook = "ptrace_access_check")]
pub fn ptrace_access_check(ctx: LsmContext) -> i32 {
    ret(try_hook::<2>(&ctx, HOOK_PTRACE_ACCESS_CHECK))
}

#[lsm(hook = "settime")]
pub fn settime(ctx: LsmContext) -> i32 {
    ret(try_hook::<2>(&ctx, HOOK_SETTIME))
}

#[lsm(hook = "bpf")]
pub fn bpf(ctx: LsmContext) -> i32 {
    ret(try_hook::<3>(&ctx, HOOK_BPF))
}

#[lsm(hook = "kernel_module_request")]
pub fn kernel_module_request(ctx: LsmContext) -> i32 {
    ret(try_hook::<1>(&ctx, HOOK_KERNEL_MODULE_REQUEST))
}

#[lsm(hook = "inode_follow_link")]
pub fn inode_follow_link(ctx: LsmContext) -> i32 {
    ret(try_hook::<3>(&ctx, HOOK_INODE_FOLLOW_LINK))
}

#[lsm(hook = "sk_alloc_security")]
pub fn sk_alloc_security(ctx: LsmContext) -> i32 {
    ret(try_hook::<3>(&ctx, HOOK_SK_ALLOC))
}

#[lsm(hook = "sb_pivotroot")]
pub fn sb_pivotroot(ctx: LsmContext) -> i32 {
    ret(try_hook::<2>(&ctx, HOOK_SB_PIVOTROOT))
}

#[lsm(hook = "socket_create")]
pub fn socket_create(ctx: LsmContext) -> i32 {
    ret(try_hook::<4>(&ctx, HOOK_SOCKET_CREATE))
}

#[lsm(hook = "kernel_read_file")]
pub fn kernel_read_file(ctx: LsmContext) -> i32 {
    ret(try_hook::<3>(&ctx, HOOK_KERNEL_READ_FILE))
}

#[lsm(hook = "capset")]
pub fn capset(ctx: LsmContext) -> i32 {
    ret(try_hook::<5>(&ctx, HOOK_CAPSET))
}

#[lsm(hook = "kernel_load_data")]
pub fn kernel_load_data(ctx: LsmContext) -> i32 {
    ret(try_hook::<2>(&ctx, HOOK_KERNEL_LOAD_DATA))
}

// The twins of the hand-written hooks (`twin_hook`): loaded only when a policy follows a
// `resolve` path at one of them; the hand-written program keeps serving the others.

#[lsm(hook = "file_open")]
pub fn file_open_generic(ctx: LsmContext) -> i32 {
    ret(try_file_hook::<1>(&ctx, HOOK_TWIN_BASE + HOOK_FILE_OPEN))
}

#[lsm(hook = "file_permission")]
pub fn file_permission_generic(ctx: LsmContext) -> i32 {
    ret(try_file_hook::<2>(
        &ctx,
        HOOK_TWIN_BASE + HOOK_FILE_PERMISSION,
    ))
}

#[lsm(hook = "mmap_file")]
pub fn mmap_file_generic(ctx: LsmContext) -> i32 {
    ret(try_file_hook::<4>(&ctx, HOOK_TWIN_BASE + HOOK_MMAP_FILE))
}

#[lsm(hook = "path_truncate")]
pub fn path_truncate_generic(ctx: LsmContext) -> i32 {
    ret(try_hook::<1>(&ctx, HOOK_TWIN_BASE + HOOK_PATH_TRUNCATE))
}

#[lsm(hook = "file_truncate")]
pub fn file_truncate_generic(ctx: LsmContext) -> i32 {
    ret(try_file_hook::<1>(
        &ctx,
        HOOK_TWIN_BASE + HOOK_FILE_TRUNCATE,
    ))
}

#[lsm(hook = "bprm_check_security")]
pub fn bprm_check_security_generic(ctx: LsmContext) -> i32 {
    ret(try_hook::<1>(&ctx, HOOK_TWIN_BASE + HOOK_BPRM_CHECK))
}
