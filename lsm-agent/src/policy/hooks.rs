//! The one translation table between Tetragon hook names and the LSM hooks the agent enforces
//! at: which `kprobes[].call` maps to which hook, how kprobe argument positions map to the
//! hook's arguments, and which YAML argument types fit each position.
//!
//! `docs/hooks.md` documents this table; keep the two in sync.

use super::ir::{ArgType, LsmHook};

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
) -> HookArg {
    HookArg {
        index,
        name,
        c_type,
        ty,
        type_name,
    }
}

/// Every LSM hook the agent enforces at, with its arguments.
pub const HOOKS: &[HookInfo] = &[
    HookInfo {
        hook: LsmHook::FileOpen,
        args: &[arg(0, "file", "struct file *", ArgType::File, "file")],
    },
    HookInfo {
        hook: LsmHook::FilePermission,
        args: &[
            arg(0, "file", "struct file *", ArgType::File, "file"),
            arg(1, "mask", "int", INT, "int"),
        ],
    },
    HookInfo {
        hook: LsmHook::MmapFile,
        args: &[
            arg(0, "file", "struct file *", ArgType::File, "file"),
            arg(1, "reqprot", "unsigned long", ULONG, "ulong"),
            arg(2, "prot", "unsigned long", ULONG, "ulong"),
            arg(3, "flags", "unsigned long", ULONG, "ulong"),
        ],
    },
    HookInfo {
        hook: LsmHook::PathTruncate,
        args: &[arg(0, "path", "const struct path *", ArgType::Path, "path")],
    },
    HookInfo {
        hook: LsmHook::FileTruncate,
        args: &[arg(0, "file", "struct file *", ArgType::File, "file")],
    },
    HookInfo {
        hook: LsmHook::BprmCheckSecurity,
        args: &[arg(
            0,
            "bprm",
            "struct linux_binprm *",
            ArgType::LinuxBinprm,
            "linux_binprm",
        )],
    },
    HookInfo {
        hook: LsmHook::SocketConnect,
        args: &[
            arg(0, "sock", "struct socket *", ArgType::Sock, "socket"),
            arg(
                1,
                "address",
                "struct sockaddr *",
                ArgType::Sockaddr,
                "sockaddr",
            ),
            arg(2, "addrlen", "int", INT, "int"),
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
    "string",
    "filename",
    "nop",
    "bpf_attr",
    "perf_event",
    "bpf_map",
    "user_namespace",
    "capability",
    "kiocb",
    "iov_iter",
    "cred",
    "const_buf",
    "load_info",
    "module",
    "syscall64",
    "kernel_cap_t",
    "cap_inheritable",
    "cap_permitted",
    "cap_effective",
    "data_loc",
    "net_device",
    "bpf_cmd",
    "bpf_prog",
];

/// Classifies a YAML type name; `None` if Tetragon does not know it either.
pub fn declared_type(name: &str) -> Option<DeclaredType> {
    match name {
        "auto" => return Some(DeclaredType::Auto),
        "file" | "fd" => return Some(DeclaredType::Supported(ArgType::File)),
        "path" | "dentry" => return Some(DeclaredType::Supported(ArgType::Path)),
        "linux_binprm" => return Some(DeclaredType::Supported(ArgType::LinuxBinprm)),
        "sock" | "socket" => return Some(DeclaredType::Supported(ArgType::Sock)),
        "sockaddr" => return Some(DeclaredType::Supported(ArgType::Sockaddr)),
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
