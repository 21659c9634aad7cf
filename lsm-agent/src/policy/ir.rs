//! The validated model of a policy: what parsing produces and compiling consumes.
//!
//! Everything here is already checked: hooks exist, argument indices are declared, operators
//! fit the argument types, values are parsed. Compiling it can only fail on limits that depend
//! on the other loaded policies (selector slots, map capacity).

use std::fmt;

/// The LSM hooks the agent enforces at. Discriminants are the `HOOK_*` ids of `lsm-shared`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LsmHook {
    FileOpen,
    FilePermission,
    MmapFile,
    PathTruncate,
    FileTruncate,
    BprmCheckSecurity,
    SocketConnect,
    PathSymlink,
    InodeMkdir,
    PathLink,
    SbMount,
    BprmCredsFromFile,
    Capable,
    UsernsCreate,
    TaskFixSetuid,
    PtraceAccessCheck,
    Settime,
    Bpf,
    KernelModuleRequest,
    InodeFollowLink,
    SkAlloc,
    SbPivotroot,
    SocketCreate,
    KernelReadFile,
    KernelLoadData,
    Capset,
}

impl LsmHook {
    pub const ALL: [LsmHook; 26] = [
        LsmHook::FileOpen,
        LsmHook::FilePermission,
        LsmHook::MmapFile,
        LsmHook::PathTruncate,
        LsmHook::FileTruncate,
        LsmHook::BprmCheckSecurity,
        LsmHook::SocketConnect,
        LsmHook::PathSymlink,
        LsmHook::InodeMkdir,
        LsmHook::PathLink,
        LsmHook::SbMount,
        LsmHook::BprmCredsFromFile,
        LsmHook::Capable,
        LsmHook::UsernsCreate,
        LsmHook::TaskFixSetuid,
        LsmHook::PtraceAccessCheck,
        LsmHook::Settime,
        LsmHook::Bpf,
        LsmHook::KernelModuleRequest,
        LsmHook::InodeFollowLink,
        LsmHook::SkAlloc,
        LsmHook::SbPivotroot,
        LsmHook::SocketCreate,
        LsmHook::KernelReadFile,
        LsmHook::KernelLoadData,
        LsmHook::Capset,
    ];

    /// Where a hook entry that follows `resolve` paths runs: the hook itself when its
    /// program hands the raw arguments to the generic reader, else the hook's twin (the
    /// same LSM hook, a generic-reader program: `lsm_shared::twin_hook`). `None`: neither
    /// (`socket_connect`).
    pub fn resolve_id(self) -> Option<u32> {
        if self.id() >= lsm_shared::HOOK_PATH_SYMLINK {
            Some(self.id())
        } else {
            lsm_shared::twin_hook(self.id())
        }
    }

    /// The hook of id `id`, or of the twin `id` is.
    pub fn of_hook_id(id: u32) -> Option<(LsmHook, bool)> {
        if let Some(h) = LsmHook::from_id(id) {
            return Some((h, false));
        }
        let base = id.checked_sub(lsm_shared::HOOK_TWIN_BASE)?;
        (lsm_shared::twin_hook(base) == Some(id))
            .then(|| LsmHook::from_id(base).map(|h| (h, true)))
            .flatten()
    }

    /// The `HOOK_*` id shared with the BPF side.
    pub fn id(self) -> u32 {
        use lsm_shared::*;
        match self {
            LsmHook::FileOpen => HOOK_FILE_OPEN,
            LsmHook::FilePermission => HOOK_FILE_PERMISSION,
            LsmHook::MmapFile => HOOK_MMAP_FILE,
            LsmHook::PathTruncate => HOOK_PATH_TRUNCATE,
            LsmHook::FileTruncate => HOOK_FILE_TRUNCATE,
            LsmHook::BprmCheckSecurity => HOOK_BPRM_CHECK,
            LsmHook::SocketConnect => HOOK_SOCKET_CONNECT,
            LsmHook::PathSymlink => HOOK_PATH_SYMLINK,
            LsmHook::InodeMkdir => HOOK_INODE_MKDIR,
            LsmHook::PathLink => HOOK_PATH_LINK,
            LsmHook::SbMount => HOOK_SB_MOUNT,
            LsmHook::BprmCredsFromFile => HOOK_BPRM_CREDS_FROM_FILE,
            LsmHook::Capable => HOOK_CAPABLE,
            LsmHook::UsernsCreate => HOOK_USERNS_CREATE,
            LsmHook::TaskFixSetuid => HOOK_TASK_FIX_SETUID,
            LsmHook::PtraceAccessCheck => HOOK_PTRACE_ACCESS_CHECK,
            LsmHook::Settime => HOOK_SETTIME,
            LsmHook::Bpf => HOOK_BPF,
            LsmHook::KernelModuleRequest => HOOK_KERNEL_MODULE_REQUEST,
            LsmHook::InodeFollowLink => HOOK_INODE_FOLLOW_LINK,
            LsmHook::SkAlloc => HOOK_SK_ALLOC,
            LsmHook::SbPivotroot => HOOK_SB_PIVOTROOT,
            LsmHook::SocketCreate => HOOK_SOCKET_CREATE,
            LsmHook::KernelReadFile => HOOK_KERNEL_READ_FILE,
            LsmHook::KernelLoadData => HOOK_KERNEL_LOAD_DATA,
            LsmHook::Capset => HOOK_CAPSET,
        }
    }

    pub fn from_id(id: u32) -> Option<LsmHook> {
        LsmHook::ALL.into_iter().find(|h| h.id() == id)
    }

    /// The kernel function that calls the hook, where the kprobe fallback attaches when BPF
    /// LSM is not active (and the `function_name` of the events it observes).
    pub fn kprobe_function(self) -> &'static str {
        match self {
            LsmHook::FileOpen => "security_file_open",
            LsmHook::FilePermission => "security_file_permission",
            LsmHook::MmapFile => "security_mmap_file",
            LsmHook::PathTruncate => "security_path_truncate",
            LsmHook::FileTruncate => "security_file_truncate",
            LsmHook::BprmCheckSecurity => "security_bprm_check",
            LsmHook::SocketConnect => "security_socket_connect",
            LsmHook::PathSymlink => "security_path_symlink",
            LsmHook::InodeMkdir => "security_inode_mkdir",
            LsmHook::PathLink => "security_path_link",
            LsmHook::SbMount => "security_sb_mount",
            LsmHook::BprmCredsFromFile => "security_bprm_creds_from_file",
            LsmHook::Capable => "security_capable",
            LsmHook::UsernsCreate => "security_create_user_ns",
            LsmHook::TaskFixSetuid => "security_task_fix_setuid",
            LsmHook::PtraceAccessCheck => "security_ptrace_access_check",
            LsmHook::Settime => "security_settime64",
            LsmHook::Bpf => "security_bpf",
            LsmHook::KernelModuleRequest => "security_kernel_module_request",
            LsmHook::InodeFollowLink => "security_inode_follow_link",
            LsmHook::SkAlloc => "security_sk_alloc",
            LsmHook::SbPivotroot => "security_sb_pivotroot",
            LsmHook::SocketCreate => "security_socket_create",
            LsmHook::KernelReadFile => "security_kernel_read_file",
            LsmHook::KernelLoadData => "security_kernel_load_data",
            LsmHook::Capset => "security_capset",
        }
    }

    /// The hook's name as written in `lsmhooks[].hook` (no `security_` prefix).
    pub fn name(self) -> &'static str {
        match self {
            LsmHook::FileOpen => "file_open",
            LsmHook::FilePermission => "file_permission",
            LsmHook::MmapFile => "mmap_file",
            LsmHook::PathTruncate => "path_truncate",
            LsmHook::FileTruncate => "file_truncate",
            LsmHook::BprmCheckSecurity => "bprm_check_security",
            LsmHook::SocketConnect => "socket_connect",
            LsmHook::PathSymlink => "path_symlink",
            LsmHook::InodeMkdir => "inode_mkdir",
            LsmHook::PathLink => "path_link",
            LsmHook::SbMount => "sb_mount",
            LsmHook::BprmCredsFromFile => "bprm_creds_from_file",
            LsmHook::Capable => "capable",
            LsmHook::UsernsCreate => "userns_create",
            LsmHook::TaskFixSetuid => "task_fix_setuid",
            LsmHook::PtraceAccessCheck => "ptrace_access_check",
            LsmHook::Settime => "settime",
            LsmHook::Bpf => "bpf",
            LsmHook::KernelModuleRequest => "kernel_module_request",
            LsmHook::InodeFollowLink => "inode_follow_link",
            LsmHook::SkAlloc => "sk_alloc_security",
            LsmHook::SbPivotroot => "sb_pivotroot",
            LsmHook::SocketCreate => "socket_create",
            LsmHook::KernelReadFile => "kernel_read_file",
            LsmHook::KernelLoadData => "kernel_load_data",
            LsmHook::Capset => "capset",
        }
    }

    pub fn from_name(name: &str) -> Option<LsmHook> {
        LsmHook::ALL.into_iter().find(|h| h.name() == name)
    }
}

impl fmt::Display for LsmHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    TracingPolicy,
    TracingPolicyNamespaced,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PolicyMode {
    #[default]
    Enforce,
    Monitor,
}

/// A parsed and validated `TracingPolicy` or `TracingPolicyNamespaced`.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub name: String,
    pub kind: PolicyKind,
    /// `metadata.namespace` (namespaced policies only).
    pub namespace: Option<String>,
    /// The workloads it applies to (namespace, `podSelector`, `containerSelector`,
    /// `hostSelector`), enforced in the kernel by cgroup when Kubernetes is on.
    pub scope: super::scope::Scope,
    pub mode: PolicyMode,
    pub hooks: Vec<Hook>,
    /// Non-fatal remarks for the log (e.g. "namespaced policy applies to all processes").
    pub warnings: Vec<String>,
}

/// Where a hook came from in the YAML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookOrigin {
    /// `spec.kprobes[i]` with `call`: translated to an LSM hook, or observed by a kprobe.
    Kprobe { call: String },
    /// `spec.lsmhooks[i]`, used directly.
    LsmHook,
    /// `spec.tracepoints[i]`: observed at the tracepoint.
    Tracepoint { subsystem: String, event: String },
    /// `spec.uprobes[i]` (with the entries of the same file and plan that follow it, see
    /// [`UprobeTarget`]): observed by a uprobe. An event's names the point that ran.
    Uprobe(UprobeTarget),
}

/// A kernel function observed by the generic kprobe (or kretprobe) program.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KprobeTarget {
    /// The symbol as the policy names it. For a syscall this is the portable `sys_<name>`;
    /// the loader turns it into the node's wrapper (`__x64_sys_<name>`, ...).
    pub function: String,
    /// `syscall: true`: the function is a syscall wrapper whose only argument is the
    /// user's `struct pt_regs *`, so the arguments are read from there and pointers are user
    /// memory.
    pub syscall: bool,
    /// `return: true`: the call is evaluated at its return, with its return value.
    pub ret: bool,
}

/// Locations in one executable or library observed by the generic uprobe program with one
/// plan (the same arguments and selectors): they share a hook id, and each attachment's
/// cookie carries its index in [`UprobeTarget::points`] so that an event names the one that
/// ran. A policy listing hundreds of symbols with no selectors (Tetragon's `uprobe.yaml`)
/// is one hook, not hundreds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UprobeTarget {
    /// The file as the policy names it (absolute).
    pub path: String,
    /// In policy order; never empty for a uprobe. Empty for a USDT probe: its sites are
    /// read from the file's notes when it is attached.
    pub points: Vec<UprobePoint>,
    /// `spec.usdts[i]`: a statically defined probe of the file (`provider:name`), attached at
    /// each of its sites, its arguments computed as its notes say. An event names the probe.
    pub usdt: Option<UsdtProbe>,
    /// `resolvePathInContainer`: `path` names the file inside each selected container (its
    /// root as `/proc/<pid>/root` of its processes), not on the node. The loader attaches at
    /// the file of every selected container with a process, and follows them as they come
    /// and go; `MapImage::containers` lists the cgroups.
    pub in_container: bool,
}

/// A USDT (SystemTap SDT) probe, as a policy's `usdts` entry names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UsdtProbe {
    pub provider: String,
    pub name: String,
}

/// Where in the file a uprobe is placed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UprobePoint {
    /// The symbol, or `None` for a bare offset.
    pub symbol: Option<String>,
    /// From the symbol's address, or from the start of the file without a symbol.
    pub offset: u64,
}

impl UprobeTarget {
    /// The target of point `i` alone: what an event of that point reports.
    /// A USDT probe is one point wherever it fires: its sites are not the policy's.
    pub fn at(&self, i: usize) -> Option<UprobeTarget> {
        if self.usdt.is_some() {
            return Some(self.clone());
        }
        self.points.get(i).map(|p| UprobeTarget {
            path: self.path.clone(),
            points: vec![p.clone()],
            usdt: None,
            in_container: self.in_container,
        })
    }

    /// The symbol of the first point ("" for an offset): an event's, once narrowed by
    /// [`UprobeTarget::at`].
    pub fn symbol(&self) -> &str {
        self.points
            .first()
            .and_then(|p| p.symbol.as_deref())
            .unwrap_or("")
    }

    /// The offset of the first point.
    pub fn offset(&self) -> u64 {
        self.points.first().map_or(0, |p| p.offset)
    }
}

impl fmt::Display for UprobePoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.symbol, self.offset) {
            (Some(s), 0) => write!(f, "{s}"),
            (Some(s), o) => write!(f, "{s}+{o:#x}"),
            (None, o) => write!(f, "{o:#x}"),
        }
    }
}

/// How many points a target's name lists before it only counts the others.
const POINTS_SHOWN: usize = 3;

impl fmt::Display for UprobeTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(u) = &self.usdt {
            return write!(f, "{}:{}:{}", self.path, u.provider, u.name);
        }
        write!(f, "{}:", self.path)?;
        for (k, p) in self.points.iter().take(POINTS_SHOWN).enumerate() {
            if k > 0 {
                f.write_str(",")?;
            }
            write!(f, "{p}")?;
        }
        if self.points.len() > POINTS_SHOWN {
            write!(f, " and {} more", self.points.len() - POINTS_SHOWN)?;
        }
        Ok(())
    }
}

/// Where the agent attaches for a hook: an LSM hook (enforced before the operation) or a
/// probe that observes it (events, and signals after the fact).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    Lsm(LsmHook),
    Kprobe(KprobeTarget),
    Tracepoint {
        subsystem: String,
        event: String,
    },
    /// A tracepoint with `raw: true` (or in `spec.rawtracepoints`): its `TP_PROTO` arguments,
    /// as a kprobe has its function's.
    RawTracepoint {
        subsystem: String,
        event: String,
    },
    Uprobe(UprobeTarget),
}

impl Target {
    /// The LSM hook, for a hook enforced at one.
    pub fn lsm(&self) -> Option<LsmHook> {
        match self {
            Target::Lsm(h) => Some(*h),
            _ => None,
        }
    }
}

impl fmt::Display for Target {
    /// How `check` and the logs say where a hook runs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Lsm(h) => write!(f, "enforced at LSM hook {h}"),
            Target::Kprobe(k) if k.ret => write!(f, "observed by kretprobe {}", k.function),
            Target::Kprobe(k) => write!(f, "observed by kprobe {}", k.function),
            Target::Tracepoint { subsystem, event } => {
                write!(f, "observed by tracepoint {subsystem}/{event}")
            }
            Target::RawTracepoint { subsystem, event } => {
                write!(f, "observed by raw tracepoint {subsystem}/{event}")
            }
            Target::Uprobe(u) if u.usdt.is_some() => write!(f, "observed by usdt {u}"),
            Target::Uprobe(u) if u.in_container => {
                write!(f, "observed by uprobe {u} in each selected container")
            }
            Target::Uprobe(u) => write!(f, "observed by uprobe {u}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Hook {
    pub target: Target,
    pub origin: HookOrigin,
    /// Index in `spec.kprobes`, `spec.lsmhooks` or `spec.tracepoints`.
    pub spec_index: usize,
    /// Where the policy declares it (`spec.kprobes[2]`, `spec.rawtracepoints[0]`), for
    /// messages: the section as well as the index.
    pub spec_path: String,
    /// Declared `args`, in YAML order.
    pub args: Vec<ArgSpec>,
    /// `returnArg` of a `return: true` kprobe: the function's return value, shown in the
    /// event and matched by `matchReturnArgs`.
    pub return_arg: Option<ArgSpec>,
    /// `data`: integers read from the current task (`lsm_index` = [`DATA_INDEX`] + d),
    /// matched by `matchData` and shown in the event's `data`.
    pub data: Vec<ArgSpec>,
    pub message: Option<String>,
    pub tags: Vec<String>,
    /// Only TCP connections over IPv4/IPv6 match (a `tcp_connect` kprobe): every selector,
    /// and the implicit one of a hook without selectors, gets that condition.
    pub tcp_only: bool,
    /// Empty means "no selectors": every call is posted.
    pub selectors: Vec<Selector>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgType {
    /// `struct file *` (types `file`, `fd`): matched on its full path.
    File,
    /// `struct path *` (types `path`, `dentry`): matched on its full path.
    Path,
    /// `struct linux_binprm *`: matched on the path of the executable.
    LinuxBinprm,
    /// The connecting socket (`sock` for `tcp_connect`, `socket` at `socket_connect`):
    /// matched on the connection's addresses, ports, protocol and family.
    Sock,
    /// The `struct sockaddr *` being connected to: its address and port are the connection's
    /// destination, which Tetragon's `SAddr`/`SPort` operators on a `sockaddr` refer to.
    Sockaddr,
    /// A `struct sk_buff *` (type `skb`, probes only): matched on the packet's IP addresses,
    /// protocol and family.
    Skb,
    /// An integer of `width` bytes (1, 2, 4, 8).
    Int { width: u8, signed: bool },
    /// A kernel `char *` (type `string`): matched on its text.
    String,
    /// A buffer (`char_buf`): its bytes, as many as the value [`lsm_shared::ArgDesc::size`]
    /// locates (`size`: 1-based raw argument, `SIZE_RETVAL`, or 0 for none); matched with the
    /// string operators.
    Buffer { size: u8 },
    /// An array of `count` 32-bit integers (`int32_arr` with its `size`): shown as its
    /// values; no operator applies to it (Tetragon has none either).
    Int32Array { count: u8 },
    /// The DNS query a `struct msghdr *` of a UDP send carries (type `dns`): matched with the
    /// string operators on the question's name (lower case, dotted, no trailing dot).
    Dns,
    /// A `struct cred *` (type `cred`): shown as Tetragon's `process_credentials_arg`; no
    /// operator applies to it.
    Cred,
    /// A `struct module *` (type `module`): shown as Tetragon's `module_arg` (name, signature
    /// check); no operator applies to it.
    Module,
    /// A capability set, 64 bits, one per capability number (types `kernel_cap_t`,
    /// `cap_inheritable`, `cap_permitted`, `cap_effective`): matched by `CapabilityMask`
    /// (any of the listed capabilities) and the numeric operators on the bits.
    Caps,
    /// A BPF program load's `union bpf_attr *`, a `struct perf_event *`, a `struct bpf_map *`
    /// or a `struct bpf_prog *` (types `bpf_attr`, `perf_event`, `bpf_map`, `bpf_prog`):
    /// shown as Tetragon's argument of that name; no operator applies to them.
    BpfObj(BpfObjKind),
    /// A pointer the agent cannot read yet (a `struct cred *`, a `union bpf_attr *`, ...):
    /// such an argument cannot be declared.
    Opaque,
}

/// Which object an [`ArgType::BpfObj`] argument is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BpfObjKind {
    BpfAttr,
    PerfEvent,
    BpfMap,
    BpfProg,
}

impl BpfObjKind {
    /// The YAML type name.
    pub fn type_name(self) -> &'static str {
        match self {
            BpfObjKind::BpfAttr => "bpf_attr",
            BpfObjKind::PerfEvent => "perf_event",
            BpfObjKind::BpfMap => "bpf_map",
            BpfObjKind::BpfProg => "bpf_prog",
        }
    }
}

impl ArgType {
    /// Matched on a path (`File`, `Path`, `LinuxBinprm`).
    pub fn is_path_like(self) -> bool {
        matches!(self, ArgType::File | ArgType::Path | ArgType::LinuxBinprm)
    }

    /// Matched with the string operators: a path or a `string`.
    pub fn is_string_like(self) -> bool {
        self.is_path_like()
            || matches!(
                self,
                ArgType::String | ArgType::Buffer { .. } | ArgType::Dns
            )
    }
}

/// Field index (Tetragon's tracepoint arg `index`, counting the `format` file's fields) of
/// the first field after the `common_type`, `common_flags`, `common_preempt_count` and
/// `common_pid` every record starts with. A tracepoint argument's position among the values
/// the kernel reads is its index minus this, so that every policy on the tracepoint agrees.
pub const TP_FIRST_FIELD: u32 = 4;

/// [`ArgSpec::lsm_index`] of a kretprobe's return value (`returnArg`): it has no position
/// among the arguments; filters on it (`matchReturnArgs`) read the call's return value.
pub const RETURN_INDEX: u32 = u32::MAX;
/// [`ArgSpec::lsm_index`] (and [`ArgFilter::lsm_index`]) of a hook's `data[d]` entry:
/// `DATA_INDEX + d`. The kernel reads it as process attribute `ATTR_DATA_BASE + d`.
pub const DATA_INDEX: u32 = 0x8000_0000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgSpec {
    /// `index` as written in the YAML (position in the kprobe'd function).
    pub spec_index: u32,
    /// Position of the same value among the LSM hook's arguments.
    pub lsm_index: u32,
    pub ty: ArgType,
    /// The YAML `type` string, for events (`file`, `int`, `uint32`, ...).
    pub type_name: String,
    pub label: Option<String>,
    /// `resolve`: the struct members followed to the value read, by the kernel's BTF when
    /// the policy is loaded.
    pub resolve: Option<Resolve>,
}

/// A `resolve` path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolve {
    /// The members followed (`["mm", "owner", "comm"]`).
    pub members: Vec<String>,
    /// `source: current_task`: they start at the current task, not at the raw argument.
    pub current_task: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrOp {
    Equal,
    Prefix,
    Postfix,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumOp {
    Equal,
    NotEqual,
    GreaterThan,
    LessThan,
    Mask,
    InRange,
    NotInRange,
    /// `InMap`: one of a set of any size (values, ranges and syscall lists, expanded).
    InMap,
    NotInMap,
}

#[derive(Debug, Clone, PartialEq)]
pub enum FilterKind {
    /// A string operator on a path-like argument; `negated` for `NotEqual`/`NotPrefix`/
    /// `NotPostfix`. Values are raw bytes (trailing NULs trimmed).
    Str {
        op: StrOp,
        negated: bool,
        values: Vec<Vec<u8>>,
    },
    /// A numeric operator on an integer argument. Values are already converted to the
    /// argument's width and sign-extended (signed) or zero-extended (unsigned) to 64 bits;
    /// `InRange`/`NotInRange` values come in `[min, max]` pairs.
    Num { op: NumOp, values: Vec<u64> },
    /// `DAddr`/`SAddr` (and `Not*`) on a sock or sockaddr argument.
    Addr {
        field: NetField,
        negated: bool,
        values: Vec<AddrValue>,
    },
    /// `DPort`/`SPort`/`DPortPriv`/`SPortPriv` (and `Not*`): inclusive port ranges.
    Port {
        field: NetField,
        negated: bool,
        ranges: Vec<(u16, u16)>,
    },
    /// `Protocol` / `Family` on a sock or sockaddr argument: equal to one of `values`
    /// (`IPPROTO_*` / `AF_*` numbers).
    SockAttr { attr: SockAttr, values: Vec<u64> },
}

impl FilterKind {
    /// Whether the filter matches a connection (address, port, protocol, family).
    pub fn is_network(&self) -> bool {
        matches!(
            self,
            FilterKind::Addr { .. } | FilterKind::Port { .. } | FilterKind::SockAttr { .. }
        )
    }
}

/// Which end of a connection an address or port filter looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NetField {
    /// The address connected to.
    Dest,
    /// The socket's local address (0.0.0.0 / :: and port 0 while unbound).
    Source,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SockAttr {
    Protocol,
    Family,
    /// The TCP state of a probe's `sock` (`State`); a socket at `socket_connect` has none yet.
    State,
}

/// An address filter value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddrValue {
    /// An address (a /32 or /128) or a CIDR; v4-mapped IPv6 is stored as IPv4.
    Net(ipnet::IpNet),
    /// `dns:<name>`: the name's current A/AAAA answers (lsm-agent extension).
    Dns(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ArgFilter {
    /// The `index` from the YAML.
    pub spec_index: u32,
    /// The argument's position at the LSM hook.
    pub lsm_index: u32,
    /// The declared type of that argument.
    pub ty: ArgType,
    pub kind: FilterKind,
}

/// `matchBinaries`: `In`/`NotIn` map to `Equal`, with `negated` for `NotIn`.
#[derive(Debug, Clone, PartialEq)]
pub struct BinaryFilter {
    pub op: StrOp,
    pub negated: bool,
    pub values: Vec<Vec<u8>>,
    pub follow_children: bool,
}

/// `matchPIDs`: the process's tgid (or its pid in its own pid namespace) against `values`.
/// With `follow_forks`, the process also matches when one of its ancestors (up to
/// `lsm_shared::LINEAGE_LEN - 1` generations up) does.
#[derive(Debug, Clone, PartialEq)]
pub struct PidFilter {
    /// `NotIn`.
    pub negated: bool,
    pub values: Vec<u32>,
    pub namespace_pid: bool,
    pub follow_forks: bool,
}

/// Namespace types in Tetragon's order (`ns_*` in its BPF code); `index()` is the position
/// in `HostNs` and the kernel's attribute table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NsType {
    Uts,
    Ipc,
    Mnt,
    Pid,
    PidForChildren,
    Net,
    Time,
    TimeForChildren,
    Cgroup,
    User,
}

impl NsType {
    pub const ALL: [NsType; 10] = [
        NsType::Uts,
        NsType::Ipc,
        NsType::Mnt,
        NsType::Pid,
        NsType::PidForChildren,
        NsType::Net,
        NsType::Time,
        NsType::TimeForChildren,
        NsType::Cgroup,
        NsType::User,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    /// The name written in `matchNamespaces[].namespace`.
    pub fn name(self) -> &'static str {
        match self {
            NsType::Uts => "Uts",
            NsType::Ipc => "Ipc",
            NsType::Mnt => "Mnt",
            NsType::Pid => "Pid",
            NsType::PidForChildren => "PidForChildren",
            NsType::Net => "Net",
            NsType::Time => "Time",
            NsType::TimeForChildren => "TimeForChildren",
            NsType::Cgroup => "Cgroup",
            NsType::User => "User",
        }
    }

    /// The file under `/proc/PID/ns/`.
    pub fn proc_name(self) -> &'static str {
        match self {
            NsType::Uts => "uts",
            NsType::Ipc => "ipc",
            NsType::Mnt => "mnt",
            NsType::Pid => "pid",
            NsType::PidForChildren => "pid_for_children",
            NsType::Net => "net",
            NsType::Time => "time",
            NsType::TimeForChildren => "time_for_children",
            NsType::Cgroup => "cgroup",
            NsType::User => "user",
        }
    }
}

/// A `matchNamespaces` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NsValue {
    Inode(u32),
    /// `host_ns`: the namespace of that type of PID 1, known only when compiling on the node.
    Host,
}

/// `matchNamespaces`: the inode of one of the process's namespaces against `values`.
#[derive(Debug, Clone, PartialEq)]
pub struct NamespaceFilter {
    pub ns: NsType,
    /// `NotIn`.
    pub negated: bool,
    pub values: Vec<NsValue>,
}

/// Capability sets, in Tetragon's order (`caps_effective` ... ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapSet {
    Effective,
    Inheritable,
    Permitted,
}

/// `matchCapabilities`: `In` matches when the set holds any capability of `mask`, `NotIn`
/// when it holds none of them.
#[derive(Debug, Clone, PartialEq)]
pub struct CapFilter {
    pub set: CapSet,
    pub negated: bool,
    /// `isNamespaceCapability`: only processes outside the host user namespace match.
    pub namespace_capability: bool,
    /// OR of `1 << CAP_*` of the values.
    pub mask: u64,
}

/// The namespace inodes of PID 1, by `NsType::index()`, to compile `host_ns` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HostNs(pub [u32; 10]);

/// `rateLimitScope` of a rate-limited `Post`: whose repeats count together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RateLimitScope {
    #[default]
    Thread,
    Process,
    Global,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// `rate_limit_ms` from `rateLimit` ("10s" = 10000).
    Post {
        rate_limit_ms: Option<u64>,
        /// `rateLimitScope`: whose repeats count together.
        rate_limit_scope: RateLimitScope,
    },
    NoPost,
    Sigkill,
    /// `argError`: at an LSM hook forced into [-4095, 0]; at a function's entry as written
    /// (non-zero).
    Override {
        error: i32,
    },
    Signal {
        signal: u32,
    },
    /// `TrackSock` (`track`): the socket at argument position `pos` (an
    /// [`ArgSpec::lsm_index`]) is the current process's; later events on it, in whatever
    /// task, name that process. `UntrackSock` (`!track`): forget its owner.
    SockTrack {
        pos: u32,
        track: bool,
    },
    /// `GetUrl` / `DnsLookup`: done by the agent, in user space, for each posted event.
    Request(UserRequest),
    /// `Set` (USDT probes only): write `value` into the probe's argument `pos` (`argIndex`,
    /// the note's argument number), which must be in the process's memory at every site.
    Set {
        pos: u32,
        value: u64,
    },
    /// `NotifyEnforcer` (with the policy's `enforcers`): at an LSM hook, the operation is
    /// denied with `error` there and then (and `signal` sent), where Tetragon's enforcer makes
    /// the listed calls return `argError` afterwards. Reported as `NotifyEnforcer`.
    NotifyEnforcer {
        error: i32,
        signal: Option<u32>,
    },
}

/// What the agent does in user space when a selector with `GetUrl` or `DnsLookup` posts: an
/// HTTP(S) GET of `argUrl`, or a DNS lookup of `argFqdn` (Tetragon's "canary" notifications).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserRequest {
    GetUrl(String),
    DnsLookup(String),
}

impl Selector {
    /// A selector without filters or actions: it matches every call and posts it (the
    /// implicit selector of a hook that lists none).
    pub fn match_all() -> Selector {
        Selector {
            index: 0,
            label: None,
            match_args: Vec::new(),
            match_binaries: None,
            match_pids: Vec::new(),
            match_namespaces: Vec::new(),
            match_capabilities: Vec::new(),
            actions: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    /// Position in the hook's `selectors` list.
    pub index: usize,
    pub label: Option<String>,
    pub match_args: Vec<ArgFilter>,
    pub match_binaries: Option<BinaryFilter>,
    pub match_pids: Vec<PidFilter>,
    pub match_namespaces: Vec<NamespaceFilter>,
    pub match_capabilities: Vec<CapFilter>,
    /// Empty means the default action, `Post`.
    pub actions: Vec<Action>,
}
