//! The one translation table between Tetragon hook names and the LSM hooks the agent enforces
//! at: which `kprobes[].call` maps to which hook, how kprobe argument positions map to the
//! hook's arguments, and which YAML argument types fit each position.
//!
//! `docs/hooks.md` documents this table; keep the two in sync.

use lsm_shared::{
    ARG_BINPRM, ARG_BPF_ATTR, ARG_BPF_MAP, ARG_BPF_PROG, ARG_BUF, ARG_CRED, ARG_DENTRY, ARG_DNS,
    ARG_FD, ARG_FILE, ARG_I32_ARR, ARG_INT, ARG_IOV_ITER, ARG_KCAP, ARG_KIOCB, ARG_MODULE,
    ARG_PATH, ARG_PERF_EVENT, ARG_SKB, ARG_SKIP, ARG_SOCK, ARG_STR, ARG_USTR, ArgDesc,
};

use super::ir::{ArgType, BpfObjKind, LsmHook};

/// One argument of an LSM hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HookArg {
    /// Position among the LSM hook's arguments.
    pub index: u32,
    /// Parameter name in the kernel's `LSM_HOOK` definition.
    pub name: &'static str,
    /// The C type, for error messages and docs.
    pub c_type: &'static str,
    /// The type the argument is matched as when the YAML says `type: auto`.
    pub ty: ArgType,
    /// The YAML type name reported for `type: auto`.
    pub type_name: &'static str,
    /// How the kernel's generic reader reads it (`lsm_shared::ARG_*`).
    pub read: u8,
}

impl HookArg {
    /// The descriptor the compiler writes for this argument when a policy declares it.
    pub fn desc(&self) -> ArgDesc {
        let width = match self.ty {
            ArgType::Int { width, .. } => width,
            _ => 8,
        };
        ArgDesc {
            kind: self.read,
            src: self.index as u8,
            width,
            size: 0,
        }
    }
}

/// An LSM hook and its arguments, in kernel order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HookInfo {
    pub hook: LsmHook,
    pub args: &'static [HookArg],
}

/// A kprobe'd `security_*` function that the agent enforces at an LSM hook instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KprobeCall {
    /// The `call` as written in `spec.kprobes[].call`.
    pub call: &'static str,
    pub hook: LsmHook,
    /// `(kprobe argument index, LSM hook argument index)` for every argument that has a
    /// counterpart at the hook. Kprobe arguments missing here cannot be declared.
    pub arg_map: &'static [(u32, u32)],
    /// Parameter names of the kprobe'd function, in order, for error messages.
    pub params: &'static [&'static str],
    /// The call only sees TCP connections over IPv4/IPv6 (`tcp_connect`), while its LSM
    /// hook sees every connect: the hook gets that condition (`ir::Hook::tcp_only`).
    pub tcp_only: bool,
}

impl KprobeCall {
    /// The LSM hook position of kprobe argument `kprobe_index`.
    pub fn lsm_index(&self, kprobe_index: u32) -> Option<u32> {
        self.arg_map
            .iter()
            .find(|(k, _)| *k == kprobe_index)
            .map(|(_, l)| *l)
    }
}

const INT: ArgType = ArgType::Int {
    width: 4,
    signed: true,
};
const ULONG: ArgType = ArgType::Int {
    width: 8,
    signed: false,
};

const fn arg(
    index: u32,
    name: &'static str,
    c_type: &'static str,
    ty: ArgType,
    type_name: &'static str,
    read: u8,
) -> HookArg {
    HookArg {
        index,
        name,
        c_type,
        ty,
        type_name,
        read,
    }
}

const fn file(index: u32, name: &'static str) -> HookArg {
    arg(
        index,
        name,
        "struct file *",
        ArgType::File,
        "file",
        ARG_FILE,
    )
}

const fn path(index: u32, name: &'static str) -> HookArg {
    arg(
        index,
        name,
        "const struct path *",
        ArgType::Path,
        "path",
        ARG_PATH,
    )
}

/// A `struct dentry *`: shown and matched as the path within its own mount.
const fn dentry(index: u32, name: &'static str) -> HookArg {
    arg(
        index,
        name,
        "struct dentry *",
        ArgType::Path,
        "dentry",
        ARG_DENTRY,
    )
}

const fn string(index: u32, name: &'static str) -> HookArg {
    arg(
        index,
        name,
        "const char *",
        ArgType::String,
        "string",
        ARG_STR,
    )
}

/// An integer; `type_name` is the YAML type `auto` stands for.
const fn int(
    index: u32,
    name: &'static str,
    c_type: &'static str,
    ty: ArgType,
    type_name: &'static str,
) -> HookArg {
    arg(index, name, c_type, ty, type_name, ARG_INT)
}

/// A pointer the agent does not read (yet): it cannot be declared. `type_name` is the
/// Tetragon type that would stand for it, for messages.
const fn opaque(
    index: u32,
    name: &'static str,
    c_type: &'static str,
    type_name: &'static str,
) -> HookArg {
    arg(index, name, c_type, ArgType::Opaque, type_name, ARG_SKIP)
}

/// A `const kernel_cap_t *`: the capability set it points to.
const fn caps(index: u32, name: &'static str) -> HookArg {
    arg(
        index,
        name,
        "const kernel_cap_t *",
        ArgType::Caps,
        "kernel_cap_t",
        ARG_KCAP,
    )
}

const UMODE: ArgType = ArgType::Int {
    width: 2,
    signed: false,
};
const UINT: ArgType = ArgType::Int {
    width: 4,
    signed: false,
};
const BOOL: ArgType = ArgType::Int {
    width: 1,
    signed: false,
};

/// Every LSM hook the agent enforces at, with its arguments.
pub const HOOKS: &[HookInfo] = &[
    HookInfo {
        hook: LsmHook::FileOpen,
        args: &[file(0, "file")],
    },
    HookInfo {
        hook: LsmHook::FilePermission,
        args: &[file(0, "file"), int(1, "mask", "int", INT, "int")],
    },
    HookInfo {
        hook: LsmHook::MmapFile,
        args: &[
            file(0, "file"),
            int(1, "reqprot", "unsigned long", ULONG, "ulong"),
            int(2, "prot", "unsigned long", ULONG, "ulong"),
            int(3, "flags", "unsigned long", ULONG, "ulong"),
        ],
    },
    HookInfo {
        hook: LsmHook::PathTruncate,
        args: &[path(0, "path")],
    },
    HookInfo {
        hook: LsmHook::FileTruncate,
        args: &[file(0, "file")],
    },
    HookInfo {
        hook: LsmHook::BprmCheckSecurity,
        args: &[arg(
            0,
            "bprm",
            "struct linux_binprm *",
            ArgType::LinuxBinprm,
            "linux_binprm",
            ARG_BINPRM,
        )],
    },
    HookInfo {
        hook: LsmHook::SocketConnect,
        // Read by socket_connect's own program (the connection), not the generic reader.
        args: &[
            arg(
                0,
                "sock",
                "struct socket *",
                ArgType::Sock,
                "socket",
                ARG_SKIP,
            ),
            arg(
                1,
                "address",
                "struct sockaddr *",
                ArgType::Sockaddr,
                "sockaddr",
                ARG_SKIP,
            ),
            int(2, "addrlen", "int", INT, "int"),
        ],
    },
    HookInfo {
        hook: LsmHook::PathSymlink,
        args: &[path(0, "dir"), dentry(1, "dentry"), string(2, "old_name")],
    },
    HookInfo {
        hook: LsmHook::InodeMkdir,
        args: &[
            opaque(0, "dir", "struct inode *", "nop"),
            dentry(1, "dentry"),
            int(2, "mode", "umode_t", UMODE, "uint16"),
        ],
    },
    HookInfo {
        hook: LsmHook::PathLink,
        args: &[
            dentry(0, "old_dentry"),
            path(1, "new_dir"),
            dentry(2, "new_dentry"),
        ],
    },
    HookInfo {
        hook: LsmHook::SbMount,
        args: &[
            string(0, "dev_name"),
            path(1, "path"),
            string(2, "type"),
            int(3, "flags", "unsigned long", ULONG, "ulong"),
            opaque(4, "data", "void *", "nop"),
        ],
    },
    HookInfo {
        hook: LsmHook::BprmCredsFromFile,
        args: &[
            arg(
                0,
                "bprm",
                "struct linux_binprm *",
                ArgType::LinuxBinprm,
                "linux_binprm",
                ARG_BINPRM,
            ),
            file(1, "file"),
        ],
    },
    HookInfo {
        hook: LsmHook::Capable,
        args: &[
            opaque(0, "cred", "const struct cred *", "cred"),
            opaque(1, "ns", "struct user_namespace *", "user_namespace"),
            int(2, "cap", "int", INT, "int"),
            int(3, "opts", "unsigned int", UINT, "uint32"),
        ],
    },
    HookInfo {
        hook: LsmHook::UsernsCreate,
        args: &[opaque(0, "cred", "const struct cred *", "cred")],
    },
    HookInfo {
        hook: LsmHook::TaskFixSetuid,
        args: &[
            opaque(0, "new", "struct cred *", "cred"),
            opaque(1, "old", "const struct cred *", "cred"),
            int(2, "flags", "int", INT, "int"),
        ],
    },
    HookInfo {
        hook: LsmHook::PtraceAccessCheck,
        args: &[
            opaque(0, "child", "struct task_struct *", "nop"),
            int(1, "mode", "unsigned int", UINT, "uint32"),
        ],
    },
    HookInfo {
        hook: LsmHook::Settime,
        args: &[
            opaque(0, "ts", "const struct timespec64 *", "nop"),
            opaque(1, "tz", "const struct timezone *", "nop"),
        ],
    },
    HookInfo {
        hook: LsmHook::Bpf,
        args: &[
            int(0, "cmd", "int", INT, "int"),
            arg(
                1,
                "attr",
                "union bpf_attr *",
                ArgType::BpfObj(BpfObjKind::BpfAttr),
                "bpf_attr",
                ARG_BPF_ATTR,
            ),
            int(2, "size", "unsigned int", UINT, "uint32"),
        ],
    },
    HookInfo {
        hook: LsmHook::KernelModuleRequest,
        args: &[arg(
            0,
            "kmod_name",
            "char *",
            ArgType::String,
            "string",
            ARG_STR,
        )],
    },
    HookInfo {
        hook: LsmHook::InodeFollowLink,
        args: &[
            dentry(0, "dentry"),
            opaque(1, "inode", "struct inode *", "nop"),
            int(2, "rcu", "bool", BOOL, "uint8"),
        ],
    },
    HookInfo {
        hook: LsmHook::SkAlloc,
        args: &[
            opaque(0, "sk", "struct sock *", "sock"),
            int(1, "family", "int", INT, "int"),
            int(2, "priority", "gfp_t", UINT, "uint32"),
        ],
    },
    HookInfo {
        hook: LsmHook::SbPivotroot,
        args: &[path(0, "old_path"), path(1, "new_path")],
    },
    HookInfo {
        hook: LsmHook::SocketCreate,
        args: &[
            int(0, "family", "int", INT, "int"),
            int(1, "type", "int", INT, "int"),
            int(2, "protocol", "int", INT, "int"),
            int(3, "kern", "int", INT, "int"),
        ],
    },
    HookInfo {
        hook: LsmHook::KernelReadFile,
        args: &[
            file(0, "file"),
            int(1, "id", "enum kernel_read_file_id", INT, "int"),
            int(2, "contents", "bool", BOOL, "uint8"),
        ],
    },
    HookInfo {
        hook: LsmHook::Capset,
        args: &[
            opaque(0, "new", "struct cred *", "cred"),
            opaque(1, "old", "const struct cred *", "cred"),
            caps(2, "effective"),
            caps(3, "inheritable"),
            caps(4, "permitted"),
        ],
    },
    HookInfo {
        hook: LsmHook::KernelLoadData,
        args: &[
            int(0, "id", "enum kernel_load_data_id", INT, "int"),
            int(1, "contents", "bool", BOOL, "uint8"),
        ],
    },
];

/// The kprobe calls the agent translates to LSM hooks.
pub const KPROBE_CALLS: &[KprobeCall] = &[
    KprobeCall {
        call: "security_file_open",
        hook: LsmHook::FileOpen,
        arg_map: &[(0, 0)],
        params: &["file"],
        tcp_only: false,
    },
    KprobeCall {
        call: "security_file_permission",
        hook: LsmHook::FilePermission,
        arg_map: &[(0, 0), (1, 1)],
        params: &["file", "mask"],
        tcp_only: false,
    },
    // security_mmap_file(file, prot, flags) calls the hook as mmap_file(file, reqprot, prot,
    // flags) where the kprobe's `prot` is what the caller asked for, i.e. the hook's
    // `reqprot`; the hook's own `prot` is derived and has no kprobe counterpart.
    KprobeCall {
        call: "security_mmap_file",
        hook: LsmHook::MmapFile,
        arg_map: &[(0, 0), (1, 1), (2, 3)],
        params: &["file", "prot", "flags"],
        tcp_only: false,
    },
    KprobeCall {
        call: "security_path_truncate",
        hook: LsmHook::PathTruncate,
        arg_map: &[(0, 0)],
        params: &["path"],
        tcp_only: false,
    },
    KprobeCall {
        call: "security_file_truncate",
        hook: LsmHook::FileTruncate,
        arg_map: &[(0, 0)],
        params: &["file"],
        tcp_only: false,
    },
    KprobeCall {
        call: "security_bprm_check",
        hook: LsmHook::BprmCheckSecurity,
        arg_map: &[(0, 0)],
        params: &["bprm"],
        tcp_only: false,
    },
    KprobeCall {
        call: "security_path_symlink",
        hook: LsmHook::PathSymlink,
        arg_map: &[(0, 0), (1, 1), (2, 2)],
        params: &["dir", "dentry", "old_name"],
        tcp_only: false,
    },
    KprobeCall {
        call: "security_inode_mkdir",
        hook: LsmHook::InodeMkdir,
        arg_map: &[(0, 0), (1, 1), (2, 2)],
        params: &["dir", "dentry", "mode"],
        tcp_only: false,
    },
    KprobeCall {
        call: "security_path_link",
        hook: LsmHook::PathLink,
        arg_map: &[(0, 0), (1, 1), (2, 2)],
        params: &["old_dentry", "new_dir", "new_dentry"],
        tcp_only: false,
    },
    KprobeCall {
        call: "security_sb_mount",
        hook: LsmHook::SbMount,
        arg_map: &[(0, 0), (1, 1), (2, 2), (3, 3), (4, 4)],
        params: &["dev_name", "path", "type", "flags", "data"],
        tcp_only: false,
    },
    KprobeCall {
        call: "security_bprm_creds_from_file",
        hook: LsmHook::BprmCredsFromFile,
        arg_map: &[(0, 0), (1, 1)],
        params: &["bprm", "file"],
        tcp_only: false,
    },
    KprobeCall {
        call: "cap_capable",
        hook: LsmHook::Capable,
        arg_map: &[(0, 0), (1, 1), (2, 2), (3, 3)],
        params: &["cred", "targ_ns", "cap", "opts"],
        tcp_only: false,
    },
    KprobeCall {
        call: "security_capable",
        hook: LsmHook::Capable,
        arg_map: &[(0, 0), (1, 1), (2, 2), (3, 3)],
        params: &["cred", "ns", "cap", "opts"],
        tcp_only: false,
    },
    KprobeCall {
        call: "security_create_user_ns",
        hook: LsmHook::UsernsCreate,
        arg_map: &[(0, 0)],
        params: &["cred"],
        tcp_only: false,
    },
    KprobeCall {
        call: "security_task_fix_setuid",
        hook: LsmHook::TaskFixSetuid,
        arg_map: &[(0, 0), (1, 1), (2, 2)],
        params: &["new", "old", "flags"],
        tcp_only: false,
    },
    KprobeCall {
        call: "security_ptrace_access_check",
        hook: LsmHook::PtraceAccessCheck,
        arg_map: &[(0, 0), (1, 1)],
        params: &["child", "mode"],
        tcp_only: false,
    },
    KprobeCall {
        call: "security_settime64",
        hook: LsmHook::Settime,
        arg_map: &[(0, 0), (1, 1)],
        params: &["ts", "tz"],
        tcp_only: false,
    },
    KprobeCall {
        call: "security_bpf",
        hook: LsmHook::Bpf,
        arg_map: &[(0, 0), (1, 1), (2, 2)],
        params: &["cmd", "attr", "size"],
        tcp_only: false,
    },
    KprobeCall {
        call: "security_kernel_module_request",
        hook: LsmHook::KernelModuleRequest,
        arg_map: &[(0, 0)],
        params: &["kmod_name"],
        tcp_only: false,
    },
    KprobeCall {
        call: "security_inode_follow_link",
        hook: LsmHook::InodeFollowLink,
        arg_map: &[(0, 0), (1, 1), (2, 2)],
        params: &["dentry", "inode", "rcu"],
        tcp_only: false,
    },
    KprobeCall {
        call: "security_sk_alloc",
        hook: LsmHook::SkAlloc,
        arg_map: &[(0, 0), (1, 1), (2, 2)],
        params: &["sk", "family", "priority"],
        tcp_only: false,
    },
    KprobeCall {
        call: "security_sb_pivotroot",
        hook: LsmHook::SbPivotroot,
        arg_map: &[(0, 0), (1, 1)],
        params: &["old_path", "new_path"],
        tcp_only: false,
    },
    KprobeCall {
        call: "security_socket_create",
        hook: LsmHook::SocketCreate,
        arg_map: &[(0, 0), (1, 1), (2, 2), (3, 3)],
        params: &["family", "type", "protocol", "kern"],
        tcp_only: false,
    },
    KprobeCall {
        call: "security_kernel_read_file",
        hook: LsmHook::KernelReadFile,
        arg_map: &[(0, 0), (1, 1), (2, 2)],
        params: &["file", "id", "contents"],
        tcp_only: false,
    },
    KprobeCall {
        call: "security_kernel_load_data",
        hook: LsmHook::KernelLoadData,
        arg_map: &[(0, 0), (1, 1)],
        params: &["id", "contents"],
        tcp_only: false,
    },
    KprobeCall {
        call: "security_capset",
        hook: LsmHook::Capset,
        arg_map: &[(0, 0), (1, 1), (2, 2), (3, 3), (4, 4)],
        params: &["new", "old", "effective", "inheritable", "permitted"],
        tcp_only: false,
    },
    KprobeCall {
        call: "security_socket_connect",
        hook: LsmHook::SocketConnect,
        arg_map: &[(0, 0), (1, 1), (2, 2)],
        params: &["sock", "address", "addrlen"],
        tcp_only: false,
    },
    // tcp_connect(sk) runs for TCP connects only, with the `struct sock` of the hook's
    // `struct socket`; at socket_connect the same connect is seen before it starts.
    KprobeCall {
        call: "tcp_connect",
        hook: LsmHook::SocketConnect,
        arg_map: &[(0, 0)],
        params: &["sk"],
        tcp_only: true,
    },
];

/// The syscalls (`syscall: true` calls, by their `sys_` name) the agent enforces at an LSM
/// hook that every call of the syscall passes with the same arguments.
///
/// `socket(2)` reaches `socket_create` with its three arguments (and `kern` = 0); the hook
/// also sees `socketpair(2)`'s sockets and the kernel's own (`kern` = 1), which a kprobe
/// on the syscall does not.
pub const SYSCALL_CALLS: &[KprobeCall] = &[KprobeCall {
    call: "sys_socket",
    hook: LsmHook::SocketCreate,
    arg_map: &[(0, 0), (1, 1), (2, 2)],
    params: &["family", "type", "protocol"],
    tcp_only: false,
}];

/// The translation of a `syscall: true` call (`sys_socket`, or the entry point of this
/// node's architecture, `__x64_sys_socket`), if the agent enforces that syscall at an LSM
/// hook. Another architecture's entry point (`__ia32_sys_socket`) is observed by its
/// kprobe: the hook cannot tell the two ABIs apart.
pub fn syscall_call(call: &str) -> Option<&'static KprobeCall> {
    let p = super::syscalls::portable_name(call);
    if !p.had_sys || (p.arch.is_some() && p.arch != super::syscalls::SyscallArch::host()) {
        return None;
    }
    SYSCALL_CALLS
        .iter()
        .find(|k| k.call.strip_prefix("sys_") == Some(p.name))
}

/// The argument table of `hook`.
pub fn hook_info(hook: LsmHook) -> &'static HookInfo {
    // HOOKS lists every LsmHook variant; the test below keeps it that way.
    HOOKS.iter().find(|h| h.hook == hook).unwrap_or(&HOOKS[0])
}

/// The translation of `spec.kprobes[].call`, if the agent supports that call.
pub fn kprobe_call(call: &str) -> Option<&'static KprobeCall> {
    KPROBE_CALLS.iter().find(|k| k.call == call)
}

/// `security_file_open, security_file_permission, ...` for error messages.
pub fn supported_calls() -> String {
    KPROBE_CALLS
        .iter()
        .map(|k| k.call)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `file_open, file_permission, ...` for error messages.
pub fn supported_hooks() -> String {
    HOOKS
        .iter()
        .map(|h| h.hook.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a YAML `args[].type` means to the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeclaredType {
    /// `auto`: the hook argument's own type.
    Auto,
    /// A type the agent can match on.
    Supported(ArgType),
    /// A valid Tetragon type that the agent has no matching support for.
    Unsupported,
}

/// Integer type names and their width and signedness (Tetragon's CRD enum).
const INT_TYPES: &[(&str, u8, bool)] = &[
    ("int", 4, true),
    ("sint32", 4, true),
    ("int32", 4, true),
    ("uint32", 4, false),
    ("sint8", 1, true),
    ("int8", 1, true),
    ("uint8", 1, false),
    ("sint16", 2, true),
    ("int16", 2, true),
    ("uint16", 2, false),
    ("uint64", 8, false),
    ("ulong", 8, false),
    // Not in the CRD enum, but Tetragon's type table takes it, and its own examples use it.
    ("unsigned long", 8, false),
    ("size_t", 8, false),
    ("long", 8, true),
    ("int64", 8, true),
    ("sint64", 8, true),
];

/// Types of Tetragon's CRD enum that the agent does not handle.
const OTHER_TETRAGON_TYPES: &[&str] = &[
    "char_buf",
    "char_iovec",
    "skb",
    "sockaddr_un",
    "filename",
    "nop",
    "user_namespace",
    "cred",
    "const_buf",
    "load_info",
    "module",
    "syscall64",
    "data_loc",
    "net_device",
    "bpf_cmd",
];

/// Classifies a YAML type name; `None` if Tetragon does not know it either.
pub fn declared_type(name: &str) -> Option<DeclaredType> {
    match name {
        "auto" => return Some(DeclaredType::Auto),
        "file" | "fd" => return Some(DeclaredType::Supported(ArgType::File)),
        "path" | "dentry" => return Some(DeclaredType::Supported(ArgType::Path)),
        "string" => return Some(DeclaredType::Supported(ArgType::String)),
        // A capability number: an `int` shown as Tetragon's capability_arg (value and name).
        "capability" => {
            return Some(DeclaredType::Supported(ArgType::Int {
                width: 4,
                signed: true,
            }));
        }
        "linux_binprm" => return Some(DeclaredType::Supported(ArgType::LinuxBinprm)),
        "sock" | "socket" => return Some(DeclaredType::Supported(ArgType::Sock)),
        "sockaddr" => return Some(DeclaredType::Supported(ArgType::Sockaddr)),
        "kernel_cap_t" | "cap_inheritable" | "cap_permitted" | "cap_effective" => {
            return Some(DeclaredType::Supported(ArgType::Caps));
        }
        "bpf_attr" => {
            return Some(DeclaredType::Supported(ArgType::BpfObj(
                BpfObjKind::BpfAttr,
            )));
        }
        "perf_event" => {
            return Some(DeclaredType::Supported(ArgType::BpfObj(
                BpfObjKind::PerfEvent,
            )));
        }
        "bpf_map" => return Some(DeclaredType::Supported(ArgType::BpfObj(BpfObjKind::BpfMap))),
        "bpf_prog" => {
            return Some(DeclaredType::Supported(ArgType::BpfObj(
                BpfObjKind::BpfProg,
            )));
        }
        // No LSM hook takes these: only the generic probes read them.
        "kiocb" | "iov_iter" => return Some(DeclaredType::Unsupported),
        _ => {}
    }
    if let Some((_, width, signed)) = INT_TYPES.iter().find(|(n, _, _)| *n == name) {
        return Some(DeclaredType::Supported(ArgType::Int {
            width: *width,
            signed: *signed,
        }));
    }
    OTHER_TETRAGON_TYPES
        .contains(&name)
        .then_some(DeclaredType::Unsupported)
}

/// How the generic probes read an argument of a declared type (kprobe/kretprobe arguments,
/// tracepoint fields, a kretprobe's return value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenericType {
    /// Read with `ARG_*` kind `read`, matched as `ty`.
    Read { ty: ArgType, read: u8, width: u8 },
    /// `nop`: declared, never read or shown.
    Nop,
    /// A Tetragon type the generic reader does not read yet.
    Unsupported,
}

/// The generic reading of YAML type `name`; `user`: pointers are user memory (the
/// arguments of a syscall). `None` if Tetragon does not know the type either.
pub fn generic_type(name: &str, user: bool) -> Option<GenericType> {
    let read = |ty, read| Some(GenericType::Read { ty, read, width: 8 });
    match name {
        "nop" => return Some(GenericType::Nop),
        "file" => return read(ArgType::File, ARG_FILE),
        "fd" => return read(ArgType::File, ARG_FD),
        "path" => return read(ArgType::Path, ARG_PATH),
        "dentry" => return read(ArgType::Path, ARG_DENTRY),
        "linux_binprm" => return read(ArgType::LinuxBinprm, ARG_BINPRM),
        "string" if user => return read(ArgType::String, ARG_USTR),
        "string" => return read(ArgType::String, ARG_STR),
        // The length comes from `sizeArgIndex` or `returnCopy` (see `convert_generic_arg`).
        "char_buf" => return read(ArgType::Buffer { size: 0 }, ARG_BUF),
        "cred" => return read(ArgType::Cred, ARG_CRED),
        "kiocb" => return read(ArgType::File, ARG_KIOCB),
        // Matched and shown as a buffer whose length is the iterator's count.
        "iov_iter" => return read(ArgType::Buffer { size: 0 }, ARG_IOV_ITER),
        // The count comes from `size` (see `convert_generic_arg`).
        "int32_arr" => return read(ArgType::Int32Array { count: 0 }, ARG_I32_ARR),
        "dns" => return read(ArgType::Dns, ARG_DNS),
        "bpf_attr" => return read(ArgType::BpfObj(BpfObjKind::BpfAttr), ARG_BPF_ATTR),
        "perf_event" => return read(ArgType::BpfObj(BpfObjKind::PerfEvent), ARG_PERF_EVENT),
        "bpf_map" => return read(ArgType::BpfObj(BpfObjKind::BpfMap), ARG_BPF_MAP),
        "bpf_prog" => return read(ArgType::BpfObj(BpfObjKind::BpfProg), ARG_BPF_PROG),
        "module" => return read(ArgType::Module, ARG_MODULE),
        "sock" => return read(ArgType::Sock, ARG_SOCK),
        "skb" => return read(ArgType::Skb, ARG_SKB),
        "kernel_cap_t" | "cap_inheritable" | "cap_permitted" | "cap_effective" => {
            return read(ArgType::Caps, ARG_KCAP);
        }
        "capability" => {
            return Some(GenericType::Read {
                ty: INT,
                read: ARG_INT,
                width: 4,
            });
        }
        _ => {}
    }
    if let Some((_, width, signed)) = INT_TYPES.iter().find(|(n, _, _)| *n == name) {
        return Some(GenericType::Read {
            ty: ArgType::Int {
                width: *width,
                signed: *signed,
            },
            read: ARG_INT,
            width: *width,
        });
    }
    (OTHER_TETRAGON_TYPES.contains(&name) || matches!(name, "auto" | "socket" | "sockaddr"))
        .then_some(GenericType::Unsupported)
}

/// The YAML types the generic probes read, for error messages.
pub const GENERIC_TYPE_NAMES: &str = "int, int8..int64, uint8..uint64, size_t, long, ulong, \
     capability, string, char_buf, iov_iter, int32_arr, dns, fd, file, kiocb, path, dentry, linux_binprm, cred, \
     kernel_cap_t, cap_inheritable, cap_permitted, cap_effective, sock, skb, module, bpf_attr, \
     perf_event, bpf_map, bpf_prog, nop";

/// Whether a declared type can stand for a hook argument of type `natural`. Integers fit any
/// integer position: the compiler reads the declared width.
pub fn type_fits(declared: ArgType, natural: ArgType) -> bool {
    match (declared, natural) {
        (ArgType::Int { .. }, ArgType::Int { .. }) => true,
        (a, b) => a == b,
    }
}

/// The YAML type names accepted for a hook argument of type `natural`, for error messages.
pub fn accepted_type_names(natural: ArgType) -> String {
    match natural {
        ArgType::File => "file, fd or auto".to_string(),
        ArgType::Path => "path, dentry or auto".to_string(),
        ArgType::LinuxBinprm => "linux_binprm or auto".to_string(),
        ArgType::Sock => "sock, socket or auto".to_string(),
        ArgType::Sockaddr => "sockaddr or auto".to_string(),
        ArgType::Skb => "skb".to_string(),
        ArgType::String => "string or auto".to_string(),
        ArgType::Buffer { .. } => "char_buf".to_string(),
        ArgType::Int32Array { .. } => "int32_arr".to_string(),
        ArgType::Dns => "dns".to_string(),
        ArgType::Cred => "cred".to_string(),
        ArgType::Module => "module".to_string(),
        ArgType::BpfObj(k) => k.type_name().to_string(),
        ArgType::Caps => {
            "kernel_cap_t, cap_inheritable, cap_permitted, cap_effective or auto".to_string()
        }
        ArgType::Opaque => "nothing: lsm-agent cannot read this argument yet".to_string(),
        ArgType::Int { .. } => {
            let mut names: Vec<&str> = INT_TYPES.iter().map(|(n, _, _)| *n).collect();
            names.push("auto");
            names.join(", ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_lsm_hook_has_an_argument_table() {
        for hook in LsmHook::ALL {
            assert_eq!(hook_info(hook).hook, hook);
        }
        assert_eq!(HOOKS.len(), LsmHook::ALL.len());
    }

    #[test]
    fn argument_tables_are_numbered_in_order() {
        for info in HOOKS {
            for (i, a) in info.args.iter().enumerate() {
                assert_eq!(a.index as usize, i, "{}", info.hook);
            }
        }
    }

    #[test]
    fn kprobe_translations_point_at_existing_hook_arguments() {
        for k in KPROBE_CALLS {
            let info = hook_info(k.hook);
            assert_eq!(k.arg_map.len(), k.params.len(), "{}", k.call);
            for (kp, lsm) in k.arg_map {
                assert!((*kp as usize) < k.params.len());
                assert!((*lsm as usize) < info.args.len(), "{}", k.call);
            }
        }
    }

    #[test]
    fn mmap_file_prot_maps_to_reqprot_and_flags_to_arg_3() {
        let k = kprobe_call("security_mmap_file").expect("in table");
        assert_eq!(k.hook, LsmHook::MmapFile);
        assert_eq!(k.lsm_index(0), Some(0));
        assert_eq!(k.lsm_index(1), Some(1));
        assert_eq!(k.lsm_index(2), Some(3));
        assert_eq!(k.lsm_index(3), None);
        assert_eq!(hook_info(LsmHook::MmapFile).args[1].name, "reqprot");
    }

    #[test]
    fn bprm_check_translates_to_bprm_check_security() {
        let k = kprobe_call("security_bprm_check").expect("in table");
        assert_eq!(k.hook.name(), "bprm_check_security");
        assert!(kprobe_call("sys_openat").is_none());
    }

    #[test]
    fn tcp_connect_translates_to_socket_connect_with_its_sock_as_argument_0_and_tcp_only() {
        let k = kprobe_call("tcp_connect").expect("in table");
        assert_eq!(k.hook, LsmHook::SocketConnect);
        assert_eq!(k.lsm_index(0), Some(0));
        assert_eq!(k.lsm_index(1), None);
        assert_eq!(k.params, &["sk"]);
        assert!(k.tcp_only);
        assert_eq!(hook_info(LsmHook::SocketConnect).args[0].ty, ArgType::Sock);
    }

    #[test]
    fn security_socket_connect_maps_all_three_arguments_and_is_not_tcp_only() {
        let k = kprobe_call("security_socket_connect").expect("in table");
        assert_eq!(k.hook, LsmHook::SocketConnect);
        for i in 0..3 {
            assert_eq!(k.lsm_index(i), Some(i));
        }
        assert!(!k.tcp_only);
        let args = hook_info(LsmHook::SocketConnect).args;
        assert_eq!(
            args.iter().map(|a| a.ty).collect::<Vec<_>>(),
            [ArgType::Sock, ArgType::Sockaddr, INT]
        );
        assert_eq!(
            args.iter().map(|a| a.type_name).collect::<Vec<_>>(),
            ["socket", "sockaddr", "int"]
        );
    }

    #[test]
    fn path_symlink_translates_one_to_one_and_reads_a_path_a_dentry_and_a_string() {
        let k = kprobe_call("security_path_symlink").expect("in table");
        assert_eq!(k.hook, LsmHook::PathSymlink);
        for i in 0..3 {
            assert_eq!(k.lsm_index(i), Some(i));
        }
        let args = hook_info(LsmHook::PathSymlink).args;
        let shape: Vec<(ArgType, &str, u8)> =
            args.iter().map(|a| (a.ty, a.type_name, a.read)).collect();
        assert_eq!(
            shape,
            [
                (ArgType::Path, "path", ARG_PATH),
                (ArgType::Path, "dentry", ARG_DENTRY),
                (ArgType::String, "string", ARG_STR)
            ]
        );
        assert_eq!(
            args[2].desc(),
            ArgDesc {
                kind: ARG_STR,
                src: 2,
                width: 8,
                size: 0
            }
        );
    }

    #[test]
    fn the_security_functions_of_the_wider_table_map_every_argument_one_to_one() {
        for (call, hook) in [
            ("security_path_symlink", LsmHook::PathSymlink),
            ("security_inode_mkdir", LsmHook::InodeMkdir),
            ("security_path_link", LsmHook::PathLink),
            ("security_sb_mount", LsmHook::SbMount),
            ("security_bprm_creds_from_file", LsmHook::BprmCredsFromFile),
            ("security_capable", LsmHook::Capable),
            ("security_create_user_ns", LsmHook::UsernsCreate),
            ("security_task_fix_setuid", LsmHook::TaskFixSetuid),
            ("security_ptrace_access_check", LsmHook::PtraceAccessCheck),
            ("security_settime64", LsmHook::Settime),
            ("security_bpf", LsmHook::Bpf),
            (
                "security_kernel_module_request",
                LsmHook::KernelModuleRequest,
            ),
            ("security_inode_follow_link", LsmHook::InodeFollowLink),
            ("security_sk_alloc", LsmHook::SkAlloc),
            ("security_sb_pivotroot", LsmHook::SbPivotroot),
        ] {
            let k = kprobe_call(call).expect(call);
            assert_eq!((k.hook, hook.kprobe_function()), (hook, call));
            let args = hook_info(hook).args;
            assert_eq!(k.params.len(), args.len(), "{call}");
            for (i, a) in args.iter().enumerate() {
                assert_eq!(k.lsm_index(i as u32), Some(i as u32), "{call}");
                assert_eq!(k.params[i], a.name, "{call}");
            }
        }
    }

    #[test]
    fn cap_capable_and_security_capable_both_translate_to_capable() {
        for call in ["cap_capable", "security_capable"] {
            let k = kprobe_call(call).expect(call);
            assert_eq!(k.hook, LsmHook::Capable);
            assert_eq!(k.lsm_index(2), Some(2));
        }
        assert_eq!(kprobe_call("cap_capable").unwrap().params[1], "targ_ns");
        // The kprobe fallback probes the function that calls the hook.
        assert_eq!(LsmHook::Capable.kprobe_function(), "security_capable");
        let args = hook_info(LsmHook::Capable).args;
        assert_eq!(
            args.iter().map(|a| a.ty).collect::<Vec<_>>(),
            [
                ArgType::Opaque,
                ArgType::Opaque,
                INT,
                ArgType::Int {
                    width: 4,
                    signed: false
                }
            ]
        );
        assert_eq!(
            declared_type("capability"),
            Some(DeclaredType::Supported(INT))
        );
    }

    #[test]
    fn every_security_function_of_the_table_has_a_kprobe_call_of_its_own_name() {
        for hook in LsmHook::ALL {
            let f = hook.kprobe_function();
            let k = kprobe_call(f).unwrap_or_else(|| panic!("{f} is not translated"));
            assert_eq!(k.hook, hook, "{f}");
        }
    }

    #[test]
    fn sb_mount_reads_two_strings_a_path_and_the_flags_but_not_the_data() {
        let kinds: Vec<u8> = hook_info(LsmHook::SbMount)
            .args
            .iter()
            .map(|a| a.read)
            .collect();
        assert_eq!(kinds, [ARG_STR, ARG_PATH, ARG_STR, ARG_INT, ARG_SKIP]);
        assert_eq!(hook_info(LsmHook::SbMount).args[4].ty, ArgType::Opaque);
        let mode = hook_info(LsmHook::InodeMkdir).args[2];
        assert_eq!((mode.read, mode.desc().width), (ARG_INT, 2));
    }

    #[test]
    fn integer_descriptors_carry_the_c_width_and_their_own_position() {
        let d = hook_info(LsmHook::FilePermission).args[1].desc();
        assert_eq!((d.kind, d.src, d.width), (ARG_INT, 1, 4));
        let d = hook_info(LsmHook::MmapFile).args[3].desc();
        assert_eq!((d.kind, d.src, d.width), (ARG_INT, 3, 8));
    }

    #[test]
    fn every_string_like_argument_is_read_as_a_string_and_no_other() {
        for info in HOOKS {
            for a in info.args {
                // socket_connect's program reads its connection itself.
                if info.hook == LsmHook::SocketConnect && !matches!(a.ty, ArgType::Int { .. }) {
                    continue;
                }
                // A BPF object fills a record too, but no string operator applies to it.
                assert_eq!(
                    lsm_shared::arg_is_string(a.read) && !lsm_shared::arg_is_obj(a.read),
                    a.ty.is_string_like(),
                    "{} arg {}",
                    info.hook,
                    a.index
                );
            }
        }
    }

    #[test]
    fn only_tcp_connect_is_tcp_only() {
        let tcp: Vec<&str> = KPROBE_CALLS
            .iter()
            .filter(|k| k.tcp_only)
            .map(|k| k.call)
            .collect();
        assert_eq!(tcp, ["tcp_connect"]);
    }

    #[test]
    fn declared_types_have_tetragon_widths() {
        assert_eq!(
            declared_type("uint8"),
            Some(DeclaredType::Supported(ArgType::Int {
                width: 1,
                signed: false
            }))
        );
        assert_eq!(
            declared_type("long"),
            Some(DeclaredType::Supported(ArgType::Int {
                width: 8,
                signed: true
            }))
        );
        assert_eq!(
            declared_type("fd"),
            Some(DeclaredType::Supported(ArgType::File))
        );
        assert_eq!(
            declared_type("dentry"),
            Some(DeclaredType::Supported(ArgType::Path))
        );
        assert_eq!(
            declared_type("sock"),
            Some(DeclaredType::Supported(ArgType::Sock))
        );
        assert_eq!(
            declared_type("socket"),
            Some(DeclaredType::Supported(ArgType::Sock))
        );
        assert_eq!(
            declared_type("sockaddr"),
            Some(DeclaredType::Supported(ArgType::Sockaddr))
        );
        assert_eq!(
            declared_type("sockaddr_un"),
            Some(DeclaredType::Unsupported)
        );
        assert_eq!(declared_type("skb"), Some(DeclaredType::Unsupported));
        assert_eq!(
            declared_type("string"),
            Some(DeclaredType::Supported(ArgType::String))
        );
        // Tetragon's type table (not its CRD enum) spells uint64 this way too.
        assert_eq!(
            declared_type("unsigned long"),
            Some(DeclaredType::Supported(ArgType::Int {
                width: 8,
                signed: false
            }))
        );
        assert_eq!(declared_type("bogus"), None);
    }

    #[test]
    fn integer_types_fit_any_integer_position_but_not_files() {
        assert!(type_fits(
            ArgType::Int {
                width: 4,
                signed: false
            },
            ULONG
        ));
        assert!(!type_fits(INT, ArgType::File));
        assert!(!type_fits(ArgType::Path, ArgType::File));
        assert!(type_fits(ArgType::Sock, ArgType::Sock));
        assert!(!type_fits(ArgType::Sockaddr, ArgType::Sock));
        assert!(!type_fits(INT, ArgType::Sockaddr));
    }
}
