//! Reading kernel memory at offsets that user space took from the running kernel's BTF.
use aya_ebpf::helpers::bpf_probe_read_kernel;
use lsm_shared::{
    ATTR_CAP_BASE, KernelConfig, NS_PID, NS_USER, NUM_ATTRS, NUM_CAP_SETS, NUM_NS_TYPES,
};

/// Filled in by the agent before loading (`override_global`). It lives in `.rodata`, which
/// the loader freezes, so the verifier knows every field as a constant: pointer arithmetic on
/// BTF pointers with these offsets stays verifiable. `agent_tgid` starts non-zero so the
/// static is never placed in `.bss`.
#[unsafe(no_mangle)]
pub static KCONFIG: KernelConfig = KernelConfig {
    agent_tgid: u32::MAX,
    valid: 0,
    file_f_path: 0,
    path_mnt: 0,
    path_dentry: 0,
    dentry_d_parent: 0,
    dentry_d_name: 0,
    qstr_name: 0,
    qstr_len: 0,
    vfsmount_mnt_root: 0,
    mount_mnt: 0,
    mount_mnt_parent: 0,
    mount_mnt_mountpoint: 0,
    binprm_file: 0,
    task_mm: 0,
    task_tgid: 0,
    task_pid: 0,
    task_real_parent: 0,
    task_exit_code: 0,
    mm_arg_start: 0,
    mm_arg_end: 0,
    task_nsproxy: 0,
    task_cred: 0,
    task_thread_pid: 0,
    pid_level: 0,
    pid_numbers: 0,
    upid_size: 0,
    upid_nr: 0,
    upid_ns: 0,
    ns_member: [0; NUM_NS_TYPES as usize],
    ns_inum: [0; NUM_NS_TYPES as usize],
    cred_caps: [0; NUM_CAP_SETS as usize],
    socket_sk: 0,
    socket_type: 0,
    sock_family: 0,
    sock_num: 0,
    sock_rcv_saddr: 0,
    sock_v6_rcv_saddr: 0,
    sock_protocol: 0,
    ns_present: 0,
    fallback_sigkill: 0,
    task_files: 0,
    files_fdt: 0,
    fdt_fd: 0,
    fdt_max_fds: 0,
    syscall_regs: [0; 6],
    cred_ids: [0; 8],
    cred_securebits: 0,
    userns_level: 0,
    userns_owner: 0,
    userns_group: 0,
    sock_type: 0,
    sock_dport: 0,
    sock_daddr: 0,
    sock_v6_daddr: 0,
    sock_state: 0,
    sock_mark: 0,
    sock_priority: 0,
    skb_head: 0,
    skb_network_header: 0,
    skb_transport_header: 0,
    skb_len: 0,
    skb_hash: 0,
    skb_mark: 0,
    skb_priority: 0,
    module_name: 0,
    module_taints: 0,
    module_sig_ok: 0,
    map_fields: [0; 5],
    prog_fields: [0; 4],
    perf_event_attr: 0,
    kiocb_filp: 0,
    iov_fields: [0; 4],
    iter_types: [0; 3],
    api_port: 0,
    file_f_inode: 0,
    dentry_d_inode: 0,
    mount_mnt_ns: 0,
    vfsmount_mnt_flags: 0,
    agent_start_ns: 0,
    agent_start_end_ns: 0,
    task_group_leader: 0,
    task_start_boottime: 0,
    msghdr_msg_iter: 0,
    task_fs: 0,
    fs_struct_root: 0,
    fs_struct_seq: 0,
    rename_lock: 0,
    mount_lock: 0,
    file_f_mode: 0,
    fmode_backing: 0,
};

/// Reads one field of [`KCONFIG`]; volatile so that the compiler does not fold the
/// compile-time zero into the code.
macro_rules! kconf {
    ($field:ident) => {{
        // SAFETY: KCONFIG is a plain static; reading a field of it is always valid.
        #[allow(unused_unsafe)]
        let v = unsafe { core::ptr::read_volatile(&$crate::kernel::KCONFIG.$field) };
        v
    }};
}
pub(crate) use kconf;

/// Reads element `$i` of an array field of [`KCONFIG`] (see [`kconf!`]).
macro_rules! kconf_at {
    ($field:ident, $i:expr) => {{
        // SAFETY: as for kconf!; callers pass an index below the array's length.
        #[allow(unused_unsafe)]
        let v = unsafe { core::ptr::read_volatile(&$crate::kernel::KCONFIG.$field[$i]) };
        v
    }};
}
pub(crate) use kconf_at;

/// Deepest pid namespace nesting the kernel allows (`MAX_PID_NS_LEVEL`).
const MAX_PID_NS_LEVEL: u64 = 32;

/// The pid of `task` in its own (innermost) pid namespace, and that namespace's inode.
#[inline(always)]
pub fn task_ns_pid(task: u64) -> (u32, u32) {
    let pid = read_u64(task, kconf!(task_thread_pid));
    if pid == 0 {
        return (0, 0);
    }
    let mut level = read_u32(pid, kconf!(pid_level)) as u64;
    if level > MAX_PID_NS_LEVEL {
        level = MAX_PID_NS_LEVEL;
    }
    let upid = pid + kconf!(pid_numbers) + level * kconf!(upid_size);
    let nr = read_u32(upid, kconf!(upid_nr));
    let ns = read_u64(upid, kconf!(upid_ns));
    (nr, read_u32(ns, kconf_at!(ns_inum, NS_PID as usize)))
}

/// Reads the process attributes in `need` (bit `i` = attribute `i`) of `task` into `out`.
#[inline(always)]
pub fn read_attrs(task: u64, need: u32, out: &mut [u64; NUM_ATTRS as usize]) {
    let present = kconf!(ns_present);
    let nsproxy = read_u64(task, kconf!(task_nsproxy));
    let cred = read_u64(task, kconf!(task_cred));
    let mut t = 0usize;
    while t < NUM_NS_TYPES as usize {
        let bit = 1u32 << t;
        if need & bit != 0 {
            out[t] = if present & bit == 0 {
                0
            } else if t == NS_PID as usize {
                task_ns_pid(task).1 as u64
            } else {
                let base = if t == NS_USER as usize { cred } else { nsproxy };
                let ns = read_u64(base, kconf_at!(ns_member, t));
                read_u32(ns, kconf_at!(ns_inum, t)) as u64
            };
        }
        t += 1;
    }
    let mut c = 0usize;
    while c < NUM_CAP_SETS as usize {
        if need & (1u32 << (ATTR_CAP_BASE as usize + c)) != 0 {
            out[ATTR_CAP_BASE as usize + c] = read_u64(cred, kconf_at!(cred_caps, c));
        }
        c += 1;
    }
}

/// Reads a `u64`/pointer at `base + off` in kernel memory; 0 when unreadable.
#[inline(always)]
pub fn read_u64(base: u64, off: u64) -> u64 {
    // SAFETY: bpf_probe_read_kernel copes with any address: it reports a fault instead of
    // taking it, and the value is copied into a local.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(off) as *const u64) }.unwrap_or(0)
}

/// Reads a `u16` at `base + off` in kernel memory; 0 when unreadable.
#[inline(always)]
pub fn read_u16(base: u64, off: u64) -> u16 {
    // SAFETY: bpf_probe_read_kernel reports a fault instead of taking it (see read_u64).
    unsafe { bpf_probe_read_kernel((base + off) as *const u16) }.unwrap_or(0)
}

/// Reads a `u8` at `base + off` in kernel memory; 0 when unreadable.
#[inline(always)]
pub fn read_u8(base: u64, off: u64) -> u8 {
    // SAFETY: bpf_probe_read_kernel reports a fault instead of taking it (see read_u64).
    unsafe { bpf_probe_read_kernel((base + off) as *const u8) }.unwrap_or(0)
}

/// Reads a `u32` at `base + off` in kernel memory; 0 when unreadable.
#[inline(always)]
pub fn read_u32(base: u64, off: u64) -> u32 {
    // SAFETY: bpf_probe_read_kernel reports a fault instead of taking it (see read_u64).
    unsafe { bpf_probe_read_kernel((base + off) as *const u32) }.unwrap_or(0)
}

/// Reads the pointer or `u64` field at `base + off` of a BTF-typed kernel object with a plain
/// load, no helper call: `base` must be such a pointer (an LSM program's argument, a pointer
/// field loaded from one, `bpf_get_current_task_btf`), never an address computed or read by
/// `read_u64`. The verifier knows `off` (a field of the frozen `KCONFIG`), checks the field
/// against the object's type and makes the load read 0 where it would fault. An LSM program
/// runs one of these in a few instructions where `read_u64` costs a helper call.
#[inline(always)]
pub fn load_u64(base: u64, off: u64) -> u64 {
    // SAFETY: the verifier checks the access against BTF and guards it against faults.
    unsafe { core::ptr::read_volatile((base + off) as *const u64) }
}

/// [`load_u64`] for a 32-bit field.
#[inline(always)]
pub fn load_u32(base: u64, off: u64) -> u32 {
    // SAFETY: as in `load_u64`.
    unsafe { core::ptr::read_volatile((base + off) as *const u32) }
}
