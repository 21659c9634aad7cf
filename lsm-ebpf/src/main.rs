//! BPF-LSM programs of lsm-agent. Each hook resolves its file or path argument, then asks
//! [`eval::evaluate`] what the loaded policies say. No policy logic lives here: the maps
//! written by the agent's compiler decide everything.
#![no_std]
#![no_main]

mod eval;
mod kernel;
mod maps;
mod path;
mod scratch;

use aya_ebpf::{
    bindings::path as kpath,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_uid_gid, bpf_get_smp_processor_id,
        bpf_ktime_get_boot_ns, generated::bpf_get_current_task, generated::bpf_probe_read_kernel,
        generated::bpf_probe_read_user,
    },
    macros::{btf_tracepoint, lsm},
    programs::{BtfTracePointContext, LsmContext},
};
use lsm_shared::*;

use crate::{
    eval::{evaluate, kcopy},
    kernel::{kconf, read_u16, read_u32, read_u64, task_ns_pid},
    maps::{EVENTS, EXEC_PEND, FILES, HOOK_CFG, PROCS, SCRATCH, STR_EQ},
    path::{count, resolve_d_path, resolve_file_walk, resolve_walk},
    scratch::Scratch,
};

#[inline(always)]
fn scratch() -> Option<&'static mut Scratch> {
    // SAFETY: the per-CPU slot belongs to this CPU for the duration of the program.
    SCRATCH.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

/// The cached path of `file`, or a freshly walked one (cached for next time).
#[inline(always)]
fn file_rec(s: &mut Scratch, file: u64) -> *const PathRec {
    if let Some(r) = FILES.get_ptr(&file) {
        return r;
    }
    let rec = &raw mut s.rec;
    resolve_file_walk(s, file, rec);
    if s.rec.flags & PATH_RESOLVED != 0 {
        let _ = FILES.insert(&file, &s.rec, 0);
    }
    &s.rec
}

#[lsm(hook = "file_open")]
pub fn file_open(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(1);
    if prev != 0 {
        return prev;
    }
    let file: u64 = ctx.arg(0);
    let Some(s) = scratch() else { return 0 };
    let p = (file + kconf!(file_f_path)) as *const kpath;
    let rec = &raw mut s.rec;
    resolve_d_path(s, p, rec);
    let _ = FILES.insert(&file, &s.rec, 0);
    let args = [file, 0, 0, 0, 0];
    evaluate(s, HOOK_FILE_OPEN, Some(rec), &args)
}

#[lsm(hook = "file_permission")]
pub fn file_permission(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(2);
    if prev != 0 {
        return prev;
    }
    let file: u64 = ctx.arg(0);
    let mask: u64 = ctx.arg::<u32>(1) as u64;
    let Some(s) = scratch() else { return 0 };
    let rec = file_rec(s, file);
    let args = [file, mask, 0, 0, 0];
    evaluate(s, HOOK_FILE_PERMISSION, Some(rec), &args)
}

#[lsm(hook = "mmap_file")]
pub fn mmap_file(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(4);
    if prev != 0 {
        return prev;
    }
    let file: u64 = ctx.arg(0);
    let args = [file, ctx.arg(1), ctx.arg(2), ctx.arg(3), 0];
    let Some(s) = scratch() else { return 0 };
    // Anonymous mappings have no file: only selectors without string filters can match.
    let rec = if file == 0 {
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
    evaluate(s, HOOK_MMAP_FILE, Some(rec), &args)
}

/// `path_truncate` where the kernel allows `bpf_d_path` there (6.12).
#[lsm(hook = "path_truncate")]
pub fn path_truncate(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(1);
    if prev != 0 {
        return prev;
    }
    let p: u64 = ctx.arg(0);
    let Some(s) = scratch() else { return 0 };
    let rec = &raw mut s.rec;
    resolve_d_path(s, p as *const kpath, rec);
    evaluate(s, HOOK_PATH_TRUNCATE, Some(rec), &[p, 0, 0, 0, 0])
}

/// `path_truncate` for kernels that refuse `bpf_d_path` there (6.1): the dentry walk.
#[lsm(hook = "path_truncate")]
pub fn path_truncate_walk(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(1);
    if prev != 0 {
        return prev;
    }
    let p: u64 = ctx.arg(0);
    let Some(s) = scratch() else { return 0 };
    let mnt = read_u64(p, kconf!(path_mnt));
    let dentry = read_u64(p, kconf!(path_dentry));
    let rec = &raw mut s.rec;
    resolve_walk(s, mnt, dentry, rec);
    evaluate(s, HOOK_PATH_TRUNCATE, Some(rec), &[p, 0, 0, 0, 0])
}

/// `file_truncate` (Linux 6.2+: ftruncate and O_TRUNC opens of an open file).
#[lsm(hook = "file_truncate")]
pub fn file_truncate(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(1);
    if prev != 0 {
        return prev;
    }
    let file: u64 = ctx.arg(0);
    let Some(s) = scratch() else { return 0 };
    let rec = file_rec(s, file);
    evaluate(s, HOOK_FILE_TRUNCATE, Some(rec), &[file, 0, 0, 0, 0])
}

#[lsm(hook = "bprm_check_security")]
pub fn bprm_check_security(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(1);
    if prev != 0 {
        return prev;
    }
    let bprm: *const u8 = ctx.arg(0);
    let Some(s) = scratch() else { return 0 };
    // A direct load (not bpf_probe_read) keeps the result a BTF pointer, which bpf_d_path
    // requires.
    // SAFETY: `bprm` is the hook's trusted argument and the offset comes from its BTF.
    let file = unsafe {
        core::ptr::read_volatile(bprm.add(kconf!(binprm_file) as usize) as *const *const u8)
    };
    if file.is_null() {
        return 0;
    }
    // SAFETY: offset of `f_path` inside `struct file`, from BTF.
    let p = unsafe { file.add(kconf!(file_f_path) as usize) } as *const kpath;
    let rec = &raw mut s.rec;
    resolve_d_path(s, p, rec);
    // For scripts this runs again for the interpreter; the last one wins, which is the
    // binary Tetragon reports too.
    let tid = bpf_get_current_pid_tgid() as u32;
    let _ = EXEC_PEND.insert(&tid, &s.rec, 0);
    evaluate(s, HOOK_BPRM_CHECK, Some(rec), &[bprm as u64, 0, 0, 0, 0])
}

/// `socket_connect(struct socket *sock, struct sockaddr *address, int addrlen)`: runs before
/// the protocol's connect, so a denial means no packet is sent.
#[lsm(hook = "socket_connect")]
pub fn socket_connect(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(3);
    if prev != 0 {
        return prev;
    }
    let sock: u64 = ctx.arg(0);
    let address: u64 = ctx.arg(1);
    let addrlen: i32 = ctx.arg(2);
    let Some(s) = scratch() else { return 0 };
    read_connection(s, sock, address);
    evaluate(
        s,
        HOOK_SOCKET_CONNECT,
        None,
        &[sock, address, addrlen as u64, 0, 0],
    )
}

/// Fills `s.net` (and the socket attributes) for a connect of `sock` to `address`, which
/// the kernel has already copied from user memory.
#[inline(always)]
fn read_connection(s: &mut Scratch, sock: u64, address: u64) {
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
        // SAFETY (all copies here): fixed-size reads into fields of the same size.
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
        // A v4-mapped destination (::ffff:a.b.c.d) is an IPv4 connection.
        let d = s.net.daddr;
        let mapped = d[..10].iter().all(|&b| b == 0) && d[10] == 0xff && d[11] == 0xff;
        if mapped {
            let src = s.net.saddr;
            let src_mapped = src[10] == 0xff && src[11] == 0xff;
            s.net.family = AF_INET;
            s.net.daddr = [0; 16];
            s.net.daddr[..4].copy_from_slice(&d[12..16]);
            s.net.saddr = [0; 16];
            if src_mapped {
                s.net.saddr[..4].copy_from_slice(&src[12..16]);
            }
        }
    }
    s.attrs[ATTR_SOCK_FAMILY as usize] = u64::from(s.net.family);
    s.attrs[ATTR_SOCK_PROTOCOL as usize] = u64::from(s.net.protocol);
    s.attrs[ATTR_SOCK_TYPE as usize] = u64::from(s.net.sock_type);
}

#[lsm(hook = "file_free_security")]
pub fn file_free_security(ctx: LsmContext) -> i32 {
    let file: u64 = ctx.arg(0);
    let _ = FILES.remove(&file);
    0
}

#[btf_tracepoint(function = "sched_process_exec")]
pub fn sched_process_exec(ctx: BtfTracePointContext) -> i32 {
    let old_pid: u32 = ctx.arg::<i32>(1) as u32;
    let Some(s) = scratch() else { return 0 };
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: plain helper call.
    let task = unsafe { bpf_get_current_task() };
    let parent = read_u64(task, kconf!(task_real_parent));
    let ppid = read_u32(parent, kconf!(task_tgid));
    // SAFETY: plain helper call.
    let ktime = unsafe { bpf_ktime_get_boot_ns() };

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

    let Some(mut entry) = EVENTS.reserve::<ExecEvent>(0) else {
        count(STAT_RING_LOST);
        return 0;
    };
    let ev = entry.as_mut_ptr();
    let mm = read_u64(task, kconf!(task_mm));
    let start = read_u64(mm, kconf!(mm_arg_start));
    let end = read_u64(mm, kconf!(mm_arg_end));
    let total = if end > start { end - start } else { 0 };
    let n = if total > ARGS_LEN as u64 {
        ARGS_LEN as u64
    } else {
        total
    };
    // SAFETY: `ev` is a reserved record we own; copies are bounded by the field sizes.
    unsafe {
        (*ev).header = EventHeader {
            kind: EVENT_EXEC,
            cpu: bpf_get_smp_processor_id(),
            ktime,
            pid: pid_tgid as u32,
            tgid,
        };
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
        kcopy(&mut (*ev).exe, &s.proc_info.exe);
    }
    entry.submit(0);
    0
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
        if let Some(cfg) = HOOK_CFG.get(h) {
            if cfg.follow != 0 {
                s.key.scope = str_scope(h, SUBJECT_BINARY);
                // SAFETY: both are STR_LEN-byte arrays.
                unsafe { kcopy(&mut s.key.bytes, &s.proc_info.exe.head) };
                // SAFETY: plain lookup; the value is only read.
                if let Some(m) = unsafe { STR_EQ.get(&s.key) } {
                    let bits = (m.pos | m.neg) & cfg.follow;
                    if (h as usize) < NUM_HOOKS as usize {
                        s.proc_info.follow[h as usize] |= bits;
                    }
                }
            }
        }
        h += 1;
    }
}

#[btf_tracepoint(function = "sched_process_fork")]
pub fn sched_process_fork(ctx: BtfTracePointContext) -> i32 {
    let child: u64 = ctx.arg(1);
    let child_pid = read_u32(child, kconf!(task_pid));
    let child_tgid = read_u32(child, kconf!(task_tgid));
    if child_pid != child_tgid {
        return 0; // a new thread, not a new process
    }
    let parent_tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let Some(s) = scratch() else { return 0 };
    match PROCS.get_ptr(&parent_tgid) {
        // SAFETY: pointer to a live map value of the same type.
        Some(p) => unsafe { kcopy(&mut s.proc_info, p) },
        None => {
            // A parent the agent never saw exec: no binary, but a lineage.
            // SAFETY: the zero area is larger than a ProcInfo; plain helper call.
            unsafe {
                kcopy(&mut s.proc_info, s.zero.as_ptr() as *const ProcInfo);
                s.proc_info.ns_lineage[0] = task_ns_pid(bpf_get_current_task()).0;
            }
            s.proc_info.exe.flags = PATH_RESOLVED;
            s.proc_info.lineage[0] = parent_tgid;
        }
    }
    // The child's lineage is the parent's, one generation further down.
    let mut i = LINEAGE_LEN - 1;
    while i > 0 {
        s.proc_info.lineage[i] = s.proc_info.lineage[i - 1];
        s.proc_info.ns_lineage[i] = s.proc_info.ns_lineage[i - 1];
        i -= 1;
    }
    s.proc_info.lineage[0] = child_tgid;
    s.proc_info.ns_lineage[0] = task_ns_pid(child).0;
    s.proc_info.ppid = parent_tgid;
    let _ = PROCS.insert(&child_tgid, &s.proc_info, 0);
    let Some(mut entry) = EVENTS.reserve::<ForkEvent>(0) else {
        count(STAT_RING_LOST);
        return 0;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` is a reserved record we own.
    unsafe {
        (*ev).header = EventHeader {
            kind: EVENT_FORK,
            cpu: bpf_get_smp_processor_id(),
            ktime: bpf_ktime_get_boot_ns(),
            pid: child_pid,
            tgid: child_tgid,
        };
        (*ev).ppid = parent_tgid;
        (*ev)._pad = 0;
    }
    entry.submit(0);
    0
}

#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit(_ctx: BtfTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if pid_tgid as u32 != tgid {
        return 0; // a thread, not the process
    }
    // SAFETY: plain helper call.
    let task = unsafe { bpf_get_current_task() };
    let exit_code = read_u32(task, kconf!(task_exit_code));
    let _ = PROCS.remove(&tgid);
    let Some(mut entry) = EVENTS.reserve::<ExitEvent>(0) else {
        count(STAT_RING_LOST);
        return 0;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` is a reserved record we own.
    unsafe {
        (*ev).header = EventHeader {
            kind: EVENT_EXIT,
            cpu: bpf_get_smp_processor_id(),
            ktime: bpf_ktime_get_boot_ns(),
            pid: pid_tgid as u32,
            tgid,
        };
        (*ev).exit_code = exit_code;
        (*ev)._pad = 0;
    }
    entry.submit(0);
    0
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
