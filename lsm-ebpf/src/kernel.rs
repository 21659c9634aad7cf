//! Reading kernel memory at offsets that user space took from the running kernel's BTF.
use aya_ebpf::helpers::bpf_probe_read_kernel;
use lsm_shared::KernelConfig;

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

/// Reads a `u64`/pointer at `base + off` in kernel memory; 0 when unreadable.
#[inline(always)]
pub fn read_u64(base: u64, off: u64) -> u64 {
    // SAFETY: bpf_probe_read_kernel copes with any address and reports faults.
    unsafe { bpf_probe_read_kernel((base + off) as *const u64) }.unwrap_or(0)
}

/// Reads a `u32` at `base + off` in kernel memory; 0 when unreadable.
#[inline(always)]
pub fn read_u32(base: u64, off: u64) -> u32 {
    // SAFETY: as above.
    unsafe { bpf_probe_read_kernel((base + off) as *const u32) }.unwrap_or(0)
}
