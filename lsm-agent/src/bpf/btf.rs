//! Kernel struct offsets from the running kernel's BTF, for [`lsm_shared::KernelConfig`].
//!
//! Rust BPF has no CO-RE field relocations, so the agent does the relocation itself: it looks
//! each field up here and writes the offsets into the program's read-only data before load.

use std::path::Path;

use btf_rs::{Btf, Type};
use lsm_shared::{KernelConfig, NO_FIELD, NUM_NS_TYPES};

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read kernel BTF {path}: {source}")]
    Read { path: String, source: btf_rs::Error },
    #[error("cannot read kernel BTF {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("kernel BTF has no struct {0}")]
    NoStruct(String),
    #[error("kernel BTF: struct {0} has no field {1}")]
    NoField(String, String),
    #[error("kernel BTF: {0}")]
    Btf(#[from] btf_rs::Error),
}

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

fn find_struct(btf: &Btf, name: &str) -> Result<btf_rs::Struct, BtfError> {
    let types = btf.resolve_types_by_name(name).unwrap_or_default();
    types
        .into_iter()
        .find_map(|t| match t {
            Type::Struct(s) if !s.members.is_empty() => Some(s),
            _ => None,
        })
        .ok_or_else(|| BtfError::NoStruct(name.to_string()))
}

/// Size in bytes of `struct name`.
pub fn struct_size(btf: &Btf, name: &str) -> Result<u64, BtfError> {
    Ok(find_struct(btf, name)?.size() as u64)
}

/// Byte offset of `field` in `struct name`, looking through anonymous structs and unions.
pub fn field_offset(btf: &Btf, name: &str, field: &str) -> Result<u64, BtfError> {
    let st = find_struct(btf, name)?;
    find_member(btf, &st.members, field, 0)?
        .map(|bits| bits / 8)
        .ok_or_else(|| BtfError::NoField(name.to_string(), field.to_string()))
}

fn find_member(
    btf: &Btf,
    members: &[btf_rs::Member],
    field: &str,
    base_bits: u64,
) -> Result<Option<u64>, BtfError> {
    for m in members {
        let name = btf.resolve_name(m).unwrap_or_default();
        let bits = base_bits + u64::from(m.bit_offset());
        if name == field {
            return Ok(Some(bits));
        }
        if name.is_empty()
            && let Type::Struct(s) | Type::Union(s) = btf.resolve_chained_type(m)?
            && let Some(found) = find_member(btf, &s.members, field, bits)?
        {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// The kernel's BTF at `path`, parsed once for [`kernel_config`] and [`functions`] (a parse
/// takes seconds under emulation). Read whole first: btf-rs parses a byte slice in about
/// 60 % of the time it takes through a buffered file reader, whose many small reads cost.
pub fn open(path: &Path) -> Result<Btf, BtfError> {
    let bytes = std::fs::read(path).map_err(|source| BtfError::Io {
        path: path.display().to_string(),
        source,
    })?;
    Btf::from_bytes(&bytes).map_err(|source| BtfError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// For each name, whether the kernel has a function of that name (e.g.
/// `bpf_lsm_file_truncate`: the LSM hooks this kernel offers).
pub fn functions(btf: &Btf, names: impl IntoIterator<Item = String>) -> Vec<bool> {
    names
        .into_iter()
        .map(|n| {
            btf.resolve_types_by_name(&n)
                .unwrap_or_default()
                .iter()
                .any(|t| matches!(t, Type::Func(_)))
        })
        .collect()
}

/// All offsets the probe needs, for the kernel whose BTF `btf` is.
pub fn kernel_config(btf: &Btf, agent_tgid: u32) -> Result<KernelConfig, BtfError> {
    let off = |s: &str, f: &str| field_offset(btf, s, f);
    // Namespace types in the order of `lsm_shared::ATTR_NS_BASE`: (holder of the pointer,
    // its field, the namespace's struct). The pid namespace comes from `task->thread_pid`.
    const NAMESPACES: [(&str, &str, &str); NUM_NS_TYPES as usize] = [
        ("nsproxy", "uts_ns", "uts_namespace"),
        ("nsproxy", "ipc_ns", "ipc_namespace"),
        ("nsproxy", "mnt_ns", "mnt_namespace"),
        ("", "", "pid_namespace"),
        ("nsproxy", "pid_ns_for_children", "pid_namespace"),
        ("nsproxy", "net_ns", "net"),
        ("nsproxy", "time_ns", "time_namespace"),
        ("nsproxy", "time_ns_for_children", "time_namespace"),
        ("nsproxy", "cgroup_ns", "cgroup_namespace"),
        ("cred", "user_ns", "user_namespace"),
    ];
    let inum = off("ns_common", "inum")?;
    let mut ns_member = [0; NUM_NS_TYPES as usize];
    let mut ns_inum = [0; NUM_NS_TYPES as usize];
    let mut ns_present = 0u32;
    for (t, (holder, field, ns_struct)) in NAMESPACES.iter().enumerate() {
        // A kernel without a namespace type (e.g. no CONFIG_TIME_NS) reports inode 0 for it.
        let member = if holder.is_empty() {
            Ok(0)
        } else {
            off(holder, field)
        };
        if let (Ok(m), Ok(ns)) = (member, off(ns_struct, "ns")) {
            ns_member[t] = m;
            ns_inum[t] = ns + inum;
            ns_present |= 1 << t;
        }
    }
    Ok(KernelConfig {
        agent_tgid,
        valid: 1,
        file_f_path: off("file", "f_path")?,
        path_mnt: off("path", "mnt")?,
        path_dentry: off("path", "dentry")?,
        dentry_d_parent: off("dentry", "d_parent")?,
        dentry_d_name: off("dentry", "d_name")?,
        qstr_name: off("qstr", "name")?,
        qstr_len: off("qstr", "len")?,
        vfsmount_mnt_root: off("vfsmount", "mnt_root")?,
        mount_mnt: off("mount", "mnt")?,
        mount_mnt_parent: off("mount", "mnt_parent")?,
        mount_mnt_mountpoint: off("mount", "mnt_mountpoint")?,
        binprm_file: off("linux_binprm", "file")?,
        task_mm: off("task_struct", "mm")?,
        task_tgid: off("task_struct", "tgid")?,
        task_pid: off("task_struct", "pid")?,
        task_real_parent: off("task_struct", "real_parent")?,
        task_exit_code: off("task_struct", "exit_code")?,
        mm_arg_start: off("mm_struct", "arg_start")?,
        mm_arg_end: off("mm_struct", "arg_end")?,
        task_nsproxy: off("task_struct", "nsproxy")?,
        // The objective credentials: `cred` is temporarily replaced while the kernel acts for
        // the task with other credentials (overlayfs opens the lower file with its mounter's
        // creds), and a policy is about the process, not about whom the kernel borrowed.
        task_cred: off("task_struct", "real_cred")?,
        task_thread_pid: off("task_struct", "thread_pid")?,
        pid_level: off("pid", "level")?,
        pid_numbers: off("pid", "numbers")?,
        upid_size: struct_size(btf, "upid")?,
        upid_nr: off("upid", "nr")?,
        upid_ns: off("upid", "ns")?,
        ns_member,
        ns_inum,
        cred_caps: [
            off("cred", "cap_effective")?,
            off("cred", "cap_inheritable")?,
            off("cred", "cap_permitted")?,
        ],
        socket_sk: off("socket", "sk")?,
        socket_type: off("socket", "type")?,
        sock_family: off("sock_common", "skc_family")? + off("sock", "__sk_common")?,
        sock_num: off("sock_common", "skc_num")? + off("sock", "__sk_common")?,
        sock_rcv_saddr: off("sock_common", "skc_rcv_saddr")? + off("sock", "__sk_common")?,
        sock_v6_rcv_saddr: off("sock_common", "skc_v6_rcv_saddr")? + off("sock", "__sk_common")?,
        sock_protocol: off("sock", "sk_protocol")?,
        ns_present,
        fallback_sigkill: 0,
        task_files: off("task_struct", "files")?,
        files_fdt: off("files_struct", "fdt")?,
        fdt_fd: off("fdtable", "fd")?,
        fdt_max_fds: off("fdtable", "max_fds")?,
        syscall_regs: syscall_regs(&off)?,
        cred_ids: [
            off("cred", "uid")?,
            off("cred", "gid")?,
            off("cred", "suid")?,
            off("cred", "sgid")?,
            off("cred", "euid")?,
            off("cred", "egid")?,
            off("cred", "fsuid")?,
            off("cred", "fsgid")?,
        ],
        cred_securebits: off("cred", "securebits")?,
        userns_level: off("user_namespace", "level")?,
        userns_owner: off("user_namespace", "owner")?,
        userns_group: off("user_namespace", "group")?,
        sock_type: off("sock", "sk_type")?,
        sock_dport: off("sock_common", "skc_dport")? + off("sock", "__sk_common")?,
        sock_daddr: off("sock_common", "skc_daddr")? + off("sock", "__sk_common")?,
        sock_v6_daddr: off("sock_common", "skc_v6_daddr")? + off("sock", "__sk_common")?,
        sock_state: off("sock_common", "skc_state")? + off("sock", "__sk_common")?,
        sock_mark: off("sock", "sk_mark")?,
        sock_priority: off("sock", "sk_priority")?,
        skb_head: off("sk_buff", "head")?,
        skb_network_header: off("sk_buff", "network_header")?,
        skb_transport_header: off("sk_buff", "transport_header")?,
        skb_len: off("sk_buff", "len")?,
        skb_hash: off("sk_buff", "hash")?,
        skb_mark: off("sk_buff", "mark")?,
        skb_priority: off("sk_buff", "priority")?,
        module_name: off("module", "name")?,
        module_taints: off("module", "taints")?,
        module_sig_ok: off("module", "sig_ok").unwrap_or(NO_FIELD),
        map_fields: [
            off("bpf_map", "map_type")?,
            off("bpf_map", "key_size")?,
            off("bpf_map", "value_size")?,
            off("bpf_map", "max_entries")?,
            off("bpf_map", "name")?,
        ],
        prog_fields: [
            off("bpf_prog", "type")?,
            off("bpf_prog", "len")?,
            off("bpf_prog", "aux")?,
            off("bpf_prog_aux", "name")?,
        ],
        perf_event_attr: off("perf_event", "attr")?,
        kiocb_filp: off("kiocb", "ki_filp")?,
        iov_fields: [
            off("iov_iter", "iter_type")?,
            off("iov_iter", "iov_offset")?,
            off("iov_iter", "count")?,
            off("iov_iter", "kvec")?,
        ],
        iter_types: ["ITER_UBUF", "ITER_IOVEC", "ITER_KVEC"]
            .map(|n| enum_value(btf, "iter_type", n).unwrap_or(NO_FIELD)),
        api_port: 0,
        file_f_inode: off("file", "f_inode")?,
        dentry_d_inode: off("dentry", "d_inode")?,
        mount_mnt_ns: off("mount", "mnt_ns")?,
        vfsmount_mnt_flags: off("vfsmount", "mnt_flags")?,
        agent_start_ns: 0,
        agent_start_end_ns: 0,
        task_group_leader: off("task_struct", "group_leader")?,
        task_start_boottime: off("task_struct", "start_boottime")?,
        msghdr_msg_iter: off("msghdr", "msg_iter")?,
        task_fs: off("task_struct", "fs")?,
        fs_struct_root: off("fs_struct", "root")?,
        fs_struct_seq: off("fs_struct", "seq")?,
        rename_lock: 0,
        mount_lock: 0,
        file_f_mode: off("file", "f_mode")?,
        fmode_backing: 0,
    })
}

/// The number of `TP_PROTO` arguments of tracepoint `event`: the parameters of the function
/// its `btf_trace_<event>` typedef points to, less the first (the tracing context). `None`
/// if the kernel has no such tracepoint.
pub fn raw_tracepoint_args(btf: &Btf, event: &str) -> Option<usize> {
    let types = btf
        .resolve_types_by_name(&format!("btf_trace_{event}"))
        .ok()?;
    types.iter().find_map(|t| {
        let Type::Typedef(td) = t else {
            return None;
        };
        let mut cur = btf.resolve_chained_type(td).ok()?;
        // Bounded: a pointer (maybe qualified) to the prototype.
        for _ in 0..4 {
            cur = match cur {
                Type::FuncProto(p) => return Some(p.parameters.len().saturating_sub(1)),
                Type::Ptr(p) => btf.resolve_chained_type(&p).ok()?,
                Type::Const(c) => btf.resolve_chained_type(&c).ok()?,
                Type::Volatile(v) => btf.resolve_chained_type(&v).ok()?,
                Type::Typedef(t) => btf.resolve_chained_type(&t).ok()?,
                _ => return None,
            };
        }
        None
    })
}

/// The value of `member` of `enum name`, if the kernel has both.
pub fn enum_value(btf: &Btf, name: &str, member: &str) -> Option<u64> {
    let types = btf.resolve_types_by_name(name).unwrap_or_default();
    types.iter().find_map(|t| match t {
        Type::Enum(e) => e
            .members
            .iter()
            .find(|m| btf.resolve_name(*m).is_ok_and(|n| n == member))
            .map(|m| u64::from(m.val())),
        _ => None,
    })
}

/// Where a syscall wrapper (`__<arch>_sys_<name>(const struct pt_regs *regs)`) finds the
/// syscall's arguments: the registers of the architecture's syscall ABI.
#[cfg(target_arch = "x86_64")]
fn syscall_regs(off: &dyn Fn(&str, &str) -> Result<u64, BtfError>) -> Result<[u64; 6], BtfError> {
    Ok([
        off("pt_regs", "di")?,
        off("pt_regs", "si")?,
        off("pt_regs", "dx")?,
        off("pt_regs", "r10")?,
        off("pt_regs", "r8")?,
        off("pt_regs", "r9")?,
    ])
}

/// arm64: `regs[0..6]` of `struct pt_regs`.
#[cfg(target_arch = "aarch64")]
fn syscall_regs(off: &dyn Fn(&str, &str) -> Result<u64, BtfError>) -> Result<[u64; 6], BtfError> {
    let base = off("pt_regs", "regs")?;
    Ok([0, 1, 2, 3, 4, 5].map(|i| base + 8 * i))
}

/// `FMODE_BACKING` of the kernel `release` (`uname -r`), which BTF cannot give (a `#define`),
/// as the mask of the bits it may be: bit 25 from 6.6, where backing files came, to 6.11;
/// bit 24 from 6.14, which moved it there; both for 6.12 and 6.13, since stable series took
/// the move back (Debian's 6.12.118 has 24, upstream 6.12 has 25). 0 (no hint) for anything
/// else, an unparsable release included. A wrong value costs speed, never a verdict: the BPF
/// side tests the bits only to go on to the layer test, which decides. The mask stays as
/// narrow as it can because a foreign bit sends every file carrying it to that test: on
/// 6.6–6.11 bit 24 is `FMODE_DIO_PARALLEL_WRITE` (every ext4 and xfs file), from 6.14 bit 25
/// is `FMODE_NONOTIFY` (every pipe and socket).
pub fn fmode_backing(release: &str) -> u64 {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(6), Some(minor)) if (6..=11).contains(&minor) => 1 << 25,
        (Some(6), Some(12 | 13)) => (1 << 24) | (1 << 25),
        (Some(major), Some(minor)) if (major, minor) >= (6, 14) => 1 << 24,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fmode_backing_follows_the_kernels_release() {
        // Seen: Debian's 6.12.118 marks its backing files with bit 24 (upstream 6.12: 25).
        assert_eq!(fmode_backing("6.12.118+deb12-amd64"), (1 << 24) | (1 << 25));
        assert_eq!(fmode_backing("6.6.0"), 1 << 25);
        assert_eq!(fmode_backing("6.11.9"), 1 << 25);
        assert_eq!(fmode_backing("6.13.2-arch1-1"), (1 << 24) | (1 << 25));
        assert_eq!(fmode_backing("6.14.0-29-generic"), 1 << 24);
        assert_eq!(fmode_backing("7.0.1"), 1 << 24);
        // No backing files before 6.6; no guess for a release that does not parse.
        assert_eq!(fmode_backing("6.1.0-57-amd64"), 0);
        assert_eq!(fmode_backing("5.14.0-427.el9.x86_64"), 0);
        assert_eq!(fmode_backing(""), 0);
        assert_eq!(fmode_backing("linux"), 0);
    }

    /// The host kernel's BTF is readable without root; its layout must resolve completely.
    #[test]
    fn every_offset_resolves_from_the_running_kernels_btf() {
        let path = Path::new(VMLINUX_BTF);
        if !path.exists() {
            panic!("{VMLINUX_BTF} is missing: the agent needs a kernel with BTF");
        }
        let cfg = kernel_config(&open(path).expect("BTF"), 1).expect("offsets");
        assert_eq!(
            cfg.path_dentry,
            cfg.path_mnt + 8,
            "struct path is {{mnt, dentry}}"
        );
        assert_eq!(cfg.qstr_name, 8, "qstr.name follows the 64-bit hash_len");
        assert_eq!(
            cfg.qstr_len, 4,
            "qstr.len is the high half of hash_len on little endian"
        );
        assert!(cfg.mm_arg_end == cfg.mm_arg_start + 8);
        assert_eq!(
            cfg.upid_size, 16,
            "struct upid is {{int nr; struct pid_namespace *ns}}"
        );
        assert_eq!(
            cfg.sock_family, 16,
            "skc_family follows the address and port pairs"
        );
        assert_eq!(
            cfg.iov_fields[1] + 8,
            cfg.iov_fields[3].min(cfg.iov_fields[2]),
            "iov_iter's pointers or count follow iov_offset"
        );
        assert!(
            cfg.iter_types.iter().all(|&t| t != NO_FIELD),
            "iter_type has ITER_UBUF, ITER_IOVEC and ITER_KVEC: {:?}",
            cfg.iter_types
        );
        let always = [0, 1, 2, 3, 4, 5, 8, 9];
        for t in always {
            assert!(cfg.ns_present & (1 << t) != 0, "namespace type {t} missing");
        }
    }

    #[test]
    fn functions_tells_which_lsm_hooks_the_running_kernel_has() {
        let names = ["bpf_lsm_file_open", "bpf_lsm_no_such_hook", "file"];
        let btf = open(Path::new(VMLINUX_BTF)).expect("BTF");
        let found = functions(&btf, names.map(String::from));
        // `file` names a struct, not a function.
        assert_eq!(found, [true, false, false]);
    }
}
