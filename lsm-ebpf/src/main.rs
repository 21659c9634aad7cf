//! BPF-LSM programs of lsm-agent. Each hook resolves its file or path argument, then asks
//! [`eval::evaluate`] what the loaded policies say. No policy logic lives here: the maps
//! written by the agent's compiler decide everything.
//!
//! The same hooks have kprobe entry points in [`kprobe`], for kernels without BPF LSM.
//!
//! Every program is a thin entry that returns `ret(try_<name>(&ctx))`: the `try_` function
//! starts with the shared prologue ([`entry::enter_lsm`] or [`entry::enter`]) and leaves
//! early with `?`. Events go out through [`event::emit`] only.
#![no_std]
#![no_main]
#![expect(
    clippy::needless_borrows_for_generic_args,
    reason = "map keys and values stay borrowed: most live in the per-CPU scratch area, and \
              passing them by value would copy hundreds of bytes onto the 512-byte BPF stack"
)]

mod args;
mod dentry;
mod entry;
mod eval;
mod event;
mod kernel;
mod kprobe;
mod maps;
mod path;
mod probe;
mod scratch;
mod table;
mod usdt;

use aya_ebpf::{
    bindings::path as kpath,
    helpers::{
        bpf_get_current_uid_gid,
        generated::{bpf_probe_read_kernel, bpf_probe_read_user},
    },
    macros::{btf_tracepoint, lsm},
    programs::{BtfTracePointContext, LsmContext},
};
use lsm_shared::*;

use crate::{
    entry::{enter, enter_lsm, now, previous, ret},
    eval::{
        Mode, evaluate, evaluate_file, file_passes, kcopy, keep_passing, open_verdict_passes,
        pass_file,
    },
    event::emit,
    kernel::{kconf, read_u16, read_u32, read_u64, task_ns_pid},
    maps::{
        EXEC_PEND, FILE_VERDICTS, FILES, PLAN_GEN, PROCS, STR_EQ, hook_cfg, hook_has_selectors,
        open_wants_path, remove_if_present,
    },
    path::{
        count, is_backing_layer_file, is_layer_file, is_layer_file_btf, resolve_d_path,
        resolve_file_walk, resolve_walk,
    },
    scratch::Scratch,
};

/// The cached path of `file`, or a freshly walked one (cached for next time); `None` for
/// overlayfs' own file of a layer, which the hooks pass (see [`is_layer_file`]), and which
/// gets a passing verdict ([`pass_file`]) so that its next calls end at `file_passes`. The
/// cache never holds such a file, so a read of a cached file costs no check. For the file
/// hooks, after `file_passes`.
#[inline(always)]
pub(crate) fn file_rec(s: &mut Scratch, file: u64) -> Option<*const PathRec> {
    if let Some(r) = FILES.get_ptr(&file) {
        return Some(r);
    }
    if is_layer_file(file) {
        pass_file(s, file);
        return None;
    }
    let rec = &raw mut s.rec;
    resolve_file_walk(s, file, rec);
    if s.rec.flags & PATH_RESOLVED != 0 {
        let _ = FILES.insert(&file, &s.rec, 0);
    }
    Some(&s.rec)
}

/// Whether `p` can be a kernel object: in the kernel's half of the address space and not an
/// error value (`IS_ERR_OR_NULL` and user addresses are not).
#[inline(always)]
fn is_kernel_object(p: u64) -> bool {
    const KERNEL_HALF: u64 = 1 << 63;
    const MAX_ERRNO_VALUE: u64 = 4095;
    p >= KERNEL_HALF && p < 0u64.wrapping_sub(MAX_ERRNO_VALUE)
}

#[lsm(hook = "file_open")]
pub fn file_open(ctx: LsmContext) -> i32 {
    ret(try_file_open(&ctx))
}

/// The path of the file, for three uses: this hook's own selectors, `file_permission`'s
/// verdict (decided here, so that no read of a file no selector names needs the path), and
/// the cache of paths (`FILES`) for the hooks that read it back ([`HookConfig::open_paths`]).
/// With none of them (no file policy loaded), an open costs this hook's entry only.
#[inline(always)]
fn try_file_open(ctx: &LsmContext) -> Result<i32, i32> {
    let file: u64 = ctx.arg(0);
    // Overlayfs' backing file of a layer: passed as at `file_permission`, which needs no
    // verdict kept for it.
    if is_backing_layer_file(file) {
        previous(ctx, 1)?;
        count(STAT_LAYER_PASSED);
        return Ok(0);
    }
    let (s, cur) = enter_lsm(ctx, 1, HOOK_FILE_OPEN)?;
    if !open_wants_path() {
        return Ok(0);
    }
    // A file no read selector can match, opened before under the same path: its verdict is
    // known without the path (see `dentry.rs`). Before the layer test, which a hit needs
    // not: only files that passed that test keep a dentry's verdict, and a layer file's mount
    // (a private one, or on 6.1 the overlay's own, whose verdict its reads share) tells.
    if dentry::open_passes(s, file) {
        return Ok(0);
    }
    if is_layer_file_btf(file) {
        // Its reads pass (see `file_rec`): kept as its verdict now (Linux 6.1's layer files,
        // overlayfs' copy-up opens), so that the first read ends at `file_passes` too.
        if hook_has_selectors(HOOK_FILE_PERMISSION) {
            let generation = PLAN_GEN.get(0).copied().unwrap_or(0);
            keep_passing(s, file, generation, HOOK_FILE_PERMISSION);
        }
        return Ok(0);
    }
    let p = (file + kconf!(file_f_path)) as *const kpath;
    let rec = &raw mut s.rec;
    resolve_d_path(s, p, rec);
    // Two separate ways on, so that the verifier walks the evaluator after one of them only.
    // The plan is read again below rather than kept from the test above: values kept across
    // the path's resolution would make the verifier walk what follows once per combination.
    // With selectors here, the path is cached for the later hooks, and their first call
    // keeps its verdict.
    if hook_has_selectors(HOOK_FILE_OPEN) {
        let _ = FILES.insert(&file, &s.rec, 0);
        let args = [file, 0, 0, 0, 0];
        return Ok(evaluate(s, cur, HOOK_FILE_OPEN, Some(rec), &args));
    }
    // Otherwise the path is cached when a later call will want it: a read some selector may
    // match (its event carries the path; a verdict of 0 ends every read without it), a hook
    // that reads it back, or no verdict kept. A hook that misses it resolves the path itself.
    let passes = hook_has_selectors(HOOK_FILE_PERMISSION)
        && open_verdict_passes(s, file, HOOK_FILE_PERMISSION, rec);
    if passes {
        dentry::keep_pass(s);
    }
    if !passes || hook_cfg(HOOK_FILE_OPEN).is_some_and(|c| c.open_paths != 0) {
        let _ = FILES.insert(&file, &s.rec, 0);
    }
    Ok(0)
}

#[lsm(hook = "file_permission")]
pub fn file_permission(ctx: LsmContext) -> i32 {
    ret(try_file_permission(&ctx))
}

#[inline(always)]
fn try_file_permission(ctx: &LsmContext) -> Result<i32, i32> {
    let file: u64 = ctx.arg(0);
    // Overlayfs' backing file of a layer (the second call of every read in a container)
    // passes before anything else: a few loads, no lookup, and no verdict to keep for it at
    // its open or to drop at its free. No process reaches it but the kernel, serving a call
    // of the overlay's file (which the canary's denial at that call stops first).
    if is_backing_layer_file(file) {
        previous(ctx, 2)?;
        count(STAT_LAYER_PASSED);
        return Ok(0);
    }
    let (s, cur) = enter_lsm(ctx, 2, HOOK_FILE_PERMISSION)?;
    // Every read and write runs this: without a selector here, not even the path lookup.
    if !hook_has_selectors(HOOK_FILE_PERMISSION) {
        return Ok(0);
    }
    if file_passes(s, file, HOOK_FILE_PERMISSION) {
        return Ok(0);
    }
    let mask: u64 = ctx.arg::<u32>(1) as u64;
    let Some(rec) = file_rec(s, file) else {
        return Ok(0);
    };
    let args = [file, mask, 0, 0, 0];
    Ok(evaluate_file(
        s,
        cur,
        HOOK_FILE_PERMISSION,
        rec,
        &args,
        Mode::Lsm,
    ))
}

#[lsm(hook = "mmap_file")]
pub fn mmap_file(ctx: LsmContext) -> i32 {
    ret(try_mmap_file(&ctx))
}

#[inline(always)]
fn try_mmap_file(ctx: &LsmContext) -> Result<i32, i32> {
    let (s, cur) = enter_lsm(ctx, 4, HOOK_MMAP_FILE)?;
    if !hook_has_selectors(HOOK_MMAP_FILE) {
        return Ok(0);
    }
    let file: u64 = ctx.arg(0);
    if file_passes(s, file, HOOK_MMAP_FILE) {
        return Ok(0);
    }
    let args = [file, ctx.arg(1), ctx.arg(2), ctx.arg(3), 0];
    // Anonymous mappings have no file: only selectors without string filters can match.
    // Debian's 6.12 also calls the hook, about three times per exec on an overlayfs /usr,
    // with a "file" that is not a kernel address (bpf_d_path refuses it with -ERANGE, the
    // walk reads nothing): that is no file either, not a path to fail closed on. Its verdict
    // is kept under that value like a file's: the same empty path each time, never freed,
    // dropped by the cache's LRU.
    let rec = if !is_kernel_object(file) {
        s.rec.len = 0;
        s.rec.flags = PATH_RESOLVED;
        &s.rec as *const PathRec
    } else if let Some(r) = FILES.get_ptr(&file) {
        r
    } else {
        let p = (file + kconf!(file_f_path)) as *const kpath;
        let rec = &raw mut s.rec;
        resolve_d_path(s, p, rec);
        &s.rec
    };
    Ok(evaluate_file(s, cur, HOOK_MMAP_FILE, rec, &args, Mode::Lsm))
}

/// `path_truncate` where the kernel allows `bpf_d_path` there (6.12).
#[lsm(hook = "path_truncate")]
pub fn path_truncate(ctx: LsmContext) -> i32 {
    ret(try_path_truncate(&ctx))
}

#[inline(always)]
fn try_path_truncate(ctx: &LsmContext) -> Result<i32, i32> {
    let (s, cur) = enter_lsm(ctx, 1, HOOK_PATH_TRUNCATE)?;
    let p: u64 = ctx.arg(0);
    let rec = &raw mut s.rec;
    resolve_d_path(s, p as *const kpath, rec);
    Ok(evaluate(
        s,
        cur,
        HOOK_PATH_TRUNCATE,
        Some(rec),
        &[p, 0, 0, 0, 0],
    ))
}

/// `path_truncate` for kernels that refuse `bpf_d_path` there (6.1): the dentry walk.
#[lsm(hook = "path_truncate")]
pub fn path_truncate_walk(ctx: LsmContext) -> i32 {
    ret(try_path_truncate_walk(&ctx))
}

#[inline(always)]
fn try_path_truncate_walk(ctx: &LsmContext) -> Result<i32, i32> {
    let (s, cur) = enter_lsm(ctx, 1, HOOK_PATH_TRUNCATE)?;
    let p: u64 = ctx.arg(0);
    let mnt = read_u64(p, kconf!(path_mnt));
    let dentry = read_u64(p, kconf!(path_dentry));
    let rec = &raw mut s.rec;
    resolve_walk(s, mnt, dentry, rec);
    Ok(evaluate(
        s,
        cur,
        HOOK_PATH_TRUNCATE,
        Some(rec),
        &[p, 0, 0, 0, 0],
    ))
}

/// `file_truncate` (Linux 6.2+: ftruncate and O_TRUNC opens of an open file).
#[lsm(hook = "file_truncate")]
pub fn file_truncate(ctx: LsmContext) -> i32 {
    ret(try_file_truncate(&ctx))
}

#[inline(always)]
fn try_file_truncate(ctx: &LsmContext) -> Result<i32, i32> {
    let (s, cur) = enter_lsm(ctx, 1, HOOK_FILE_TRUNCATE)?;
    if !hook_has_selectors(HOOK_FILE_TRUNCATE) {
        return Ok(0);
    }
    let file: u64 = ctx.arg(0);
    if file_passes(s, file, HOOK_FILE_TRUNCATE) {
        return Ok(0);
    }
    let Some(rec) = file_rec(s, file) else {
        return Ok(0);
    };
    Ok(evaluate_file(
        s,
        cur,
        HOOK_FILE_TRUNCATE,
        rec,
        &[file, 0, 0, 0, 0],
        Mode::Lsm,
    ))
}

#[lsm(hook = "bprm_check_security")]
pub fn bprm_check_security(ctx: LsmContext) -> i32 {
    ret(try_bprm_check_security(&ctx))
}

#[inline(always)]
fn try_bprm_check_security(ctx: &LsmContext) -> Result<i32, i32> {
    let (s, cur) = enter_lsm(ctx, 1, HOOK_BPRM_CHECK)?;
    let bprm: *const u8 = ctx.arg(0);
    // A direct load (not bpf_probe_read) keeps the result a BTF pointer, which bpf_d_path
    // requires.
    // SAFETY: `bprm` is the hook's trusted `struct linux_binprm *` and the offset of its
    // `file` field comes from the running kernel's BTF.
    let file = unsafe {
        core::ptr::read_volatile(bprm.add(kconf!(binprm_file) as usize) as *const *const u8)
    };
    if file.is_null() {
        return Ok(0);
    }
    // SAFETY: pointer arithmetic only: the offset of `f_path` inside `struct file`, from BTF.
    let p = unsafe { file.add(kconf!(file_f_path) as usize) } as *const kpath;
    let rec = &raw mut s.rec;
    resolve_d_path(s, p, rec);
    // For scripts this runs again for the interpreter; the last one wins, which is the
    // binary Tetragon reports too.
    let _ = EXEC_PEND.insert(&cur.pid(), &s.rec, 0);
    Ok(evaluate(
        s,
        cur,
        HOOK_BPRM_CHECK,
        Some(rec),
        &[bprm as u64, 0, 0, 0, 0],
    ))
}

/// `socket_connect(struct socket *sock, struct sockaddr *address, int addrlen)`: runs before
/// the protocol's connect, so a denial means no packet is sent.
#[lsm(hook = "socket_connect")]
pub fn socket_connect(ctx: LsmContext) -> i32 {
    ret(try_socket_connect(&ctx))
}

#[inline(always)]
fn try_socket_connect(ctx: &LsmContext) -> Result<i32, i32> {
    let (s, cur) = enter_lsm(ctx, 3, HOOK_SOCKET_CONNECT)?;
    let sock: u64 = ctx.arg(0);
    let address: u64 = ctx.arg(1);
    let addrlen: i32 = ctx.arg(2);
    read_connection(s, sock, address);
    if is_local_api(&s.net, kconf!(api_port)) {
        return Ok(0);
    }
    let args = [sock, address, addrlen as u64, 0, 0];
    Ok(evaluate(s, cur, HOOK_SOCKET_CONNECT, None, &args))
}

/// Fills `s.net` (and the socket attributes) for a connect of `sock` to `address`, which
/// the kernel has already copied from user memory.
#[inline(always)]
pub(crate) fn read_connection(s: &mut Scratch, sock: u64, address: u64) {
    let sk = read_u64(sock, kconf!(socket_sk));
    let sock_family = read_u16(sk, kconf!(sock_family));
    let dest_family = read_u16(address, 0);
    s.net = NetInfo::default();
    s.net.sock_type = read_u16(sock, kconf!(socket_type));
    s.net.protocol = read_u16(sk, kconf!(sock_protocol));
    s.net.sport = read_u16(sk, kconf!(sock_num));
    // An AF_UNSPEC connect dissolves a datagram association: no destination to match.
    s.net.family = if dest_family == 0 { 0 } else { sock_family };
    // sockaddr_in and sockaddr_in6 both keep the port (network order) at offset 2.
    s.net.dport = u16::from_be(read_u16(address, 2));
    if s.net.family == AF_INET {
        // SAFETY: 4-byte reads into 16-byte fields; the helper reports an unreadable source
        // instead of faulting.
        unsafe {
            bpf_probe_read_kernel(
                s.net.daddr.as_mut_ptr() as *mut _,
                4,
                (address + 4) as *const _,
            );
            bpf_probe_read_kernel(
                s.net.saddr.as_mut_ptr() as *mut _,
                4,
                (sk + kconf!(sock_rcv_saddr)) as *const _,
            );
        }
    } else if s.net.family == AF_INET6 {
        // SAFETY: 16-byte reads into 16-byte fields, as above.
        unsafe {
            bpf_probe_read_kernel(
                s.net.daddr.as_mut_ptr() as *mut _,
                16,
                (address + 8) as *const _,
            );
            bpf_probe_read_kernel(
                s.net.saddr.as_mut_ptr() as *mut _,
                16,
                (sk + kconf!(sock_v6_rcv_saddr)) as *const _,
            );
        }
    }
    // A v4-mapped destination (::ffff:a.b.c.d) is an IPv4 connection.
    s.net.unmap_v4();
    s.net.write_attrs(&mut s.attrs);
}

#[lsm(hook = "file_free_security")]
pub fn file_free_security(ctx: LsmContext) -> i32 {
    ret(try_file_free_security(&ctx))
}

/// Not a decision (the hook returns nothing): forgets the file's cached path.
#[inline(always)]
fn try_file_free_security(ctx: &LsmContext) -> Result<i32, i32> {
    let file: u64 = ctx.arg(0);
    remove_if_present(&FILES, file);
    // Its address may be a new file's next: no verdict of this one may outlive it.
    remove_if_present(&FILE_VERDICTS, file);
    Ok(0)
}

#[lsm(hook = "d_instantiate")]
pub fn d_instantiate(ctx: LsmContext) -> i32 {
    let dentry: u64 = ctx.arg(0);
    dentry::forget(dentry);
    0
}

#[btf_tracepoint(function = "sched_process_exec")]
pub fn sched_process_exec(ctx: BtfTracePointContext) -> i32 {
    ret(try_sched_process_exec(&ctx))
}

#[inline(always)]
fn try_sched_process_exec(ctx: &BtfTracePointContext) -> Result<i32, i32> {
    let (s, cur) = enter()?;
    let old_pid: u32 = ctx.arg::<i32>(1) as u32;
    let tgid = cur.tgid();
    let task = cur.task();
    let parent = read_u64(task, kconf!(task_real_parent));
    let ppid = read_u32(parent, kconf!(task_tgid));
    let ktime = now();

    // The lineage and the inherited followChildren bits survive the exec.
    match PROCS.get_ptr(&tgid) {
        // SAFETY: pointer to a live map value of the same type.
        Some(p) => unsafe { kcopy(&mut s.proc_info, p) },
        None => {
            // SAFETY: the zero area is larger than a ProcInfo.
            unsafe { kcopy(&mut s.proc_info, s.zero.as_ptr() as *const ProcInfo) };
            s.proc_info.lineage[0] = tgid;
            s.proc_info.lineage[1] = ppid;
            s.proc_info.ns_lineage[0] = task_ns_pid(task).0;
        }
    }
    s.proc_info.ppid = ppid;
    s.proc_info.flags = 0;
    s.proc_info.ktime = ktime;
    match EXEC_PEND.get_ptr(&old_pid) {
        // SAFETY: pointer to a live map value of the same type.
        Some(p) => unsafe { kcopy(&mut s.proc_info.exe, p) },
        None => {
            // SAFETY: the zero area is larger than a PathRec.
            unsafe { kcopy(&mut s.proc_info.exe, s.zero.as_ptr() as *const PathRec) };
            s.proc_info.exe.flags = PATH_RESOLVED;
        }
    }
    let _ = EXEC_PEND.remove(&old_pid);
    add_follow_bits(s);
    let _ = PROCS.insert(&tgid, &s.proc_info, 0);

    let mm = read_u64(task, kconf!(task_mm));
    let start = read_u64(mm, kconf!(mm_arg_start));
    let (total, n) = exec_args_len(start, read_u64(mm, kconf!(mm_arg_end)));
    let exe = &raw const s.proc_info.exe;
    emit::<ExecEvent>(cur.pid(), tgid, ktime, false, |ev| {
        // SAFETY: `ev` is the reserved record, ours alone until submitted; the argv copy is
        // at most ARGS_LEN bytes (its field's size) and the helper reports a fault instead
        // of taking it; `exe` points into the scratch area.
        unsafe {
            (*ev).ppid = ppid;
            (*ev).uid = bpf_get_current_uid_gid() as u32;
            (*ev).args_total = total as u32;
            let got = if n > 0 {
                bpf_probe_read_user(
                    (*ev).args.as_mut_ptr() as *mut _,
                    n as u32,
                    start as *const _,
                )
            } else {
                0
            };
            (*ev).args_len = if got == 0 { n as u32 } else { 0 };
            kcopy(&mut (*ev).exe, exe);
        }
    });
    Ok(0)
}

/// Marks, per hook, the `followChildren` selectors whose `In`/`NotIn` list holds the binary
/// that `s.proc_info` now runs; its descendants inherit the bits at fork.
#[inline(always)]
fn add_follow_bits(s: &mut Scratch) {
    if s.proc_info.exe.len as usize > STR_LEN {
        return;
    }
    let mut h = 0u32;
    while h < NUM_HOOKS {
        if let Some(cfg) = hook_cfg(h)
            && cfg.follow != 0
        {
            s.key.scope = str_scope(h, SUBJECT_BINARY);
            // SAFETY: both are STR_LEN-byte arrays of the scratch area.
            unsafe { kcopy(&mut s.key.bytes, &s.proc_info.exe.head) };
            // SAFETY: the program runs under RCU, so the element stays valid while it is
            // read here; its bitmaps are plain integers whatever user space writes.
            if let Some(m) = unsafe { STR_EQ.get(&s.key) }
                && let Some(f) = s.proc_info.follow.get_mut(h as usize)
            {
                *f |= m.any() & cfg.follow;
            }
        }
        h += 1;
    }
}

#[btf_tracepoint(function = "sched_process_fork")]
pub fn sched_process_fork(ctx: BtfTracePointContext) -> i32 {
    ret(try_sched_process_fork(&ctx))
}

#[inline(always)]
fn try_sched_process_fork(ctx: &BtfTracePointContext) -> Result<i32, i32> {
    let (s, cur) = enter()?;
    let child: u64 = ctx.arg(1);
    let child_pid = read_u32(child, kconf!(task_pid));
    let child_tgid = read_u32(child, kconf!(task_tgid));
    if child_pid != child_tgid {
        return Ok(0); // a new thread, not a new process
    }
    let parent_tgid = cur.tgid();
    match PROCS.get_ptr(&parent_tgid) {
        // SAFETY: pointer to a live map value of the same type.
        Some(p) => unsafe { kcopy(&mut s.proc_info, p) },
        None => {
            // A parent the agent never saw exec: no binary, but a lineage.
            // SAFETY: the zero area is larger than a ProcInfo.
            unsafe { kcopy(&mut s.proc_info, s.zero.as_ptr() as *const ProcInfo) };
            s.proc_info.ns_lineage[0] = task_ns_pid(cur.task()).0;
            s.proc_info.exe.flags = PATH_RESOLVED;
            s.proc_info.lineage[0] = parent_tgid;
        }
    }
    // The child's lineage is the parent's, one generation further down.
    s.proc_info
        .descend(child_tgid, task_ns_pid(child).0, parent_tgid);
    let _ = PROCS.insert(&child_tgid, &s.proc_info, 0);
    emit::<ForkEvent>(child_pid, child_tgid, now(), false, |ev| {
        // SAFETY: `ev` is the reserved record, ours alone until submitted.
        unsafe {
            (*ev).ppid = parent_tgid;
            (*ev)._pad = 0;
        }
    });
    Ok(0)
}

#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit(_ctx: BtfTracePointContext) -> i32 {
    ret(try_sched_process_exit())
}

#[inline(always)]
fn try_sched_process_exit() -> Result<i32, i32> {
    let (_, cur) = enter()?;
    let tgid = cur.tgid();
    if cur.pid() != tgid {
        return Ok(0); // a thread, not the process
    }
    let exit_code = read_u32(cur.task(), kconf!(task_exit_code));
    let _ = PROCS.remove(&tgid);
    emit::<ExitEvent>(cur.pid(), tgid, now(), false, |ev| {
        // SAFETY: `ev` is the reserved record, ours alone until submitted.
        unsafe {
            (*ev).exit_code = exit_code;
            (*ev)._pad = 0;
        }
    });
    Ok(0)
}

// Only for the BPF target: a host `cargo clippy --workspace` checks this crate with `std`
// linked in (through lsm-shared's `user` feature), which brings its own panic handler.
#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
