//! Our events: what the kernel reported, enriched with what the agent knows about the
//! processes involved, in the agent's own types.
//!
//! The event bus carries these; every output converts them at its border (the Tetragon wire
//! format, the metrics), so no output's format leaks into the core and each can change without
//! the others.

use std::{collections::BTreeMap, net::IpAddr, sync::Arc};

pub use super::decode::NetData;
pub use crate::policy::ir::{HookOrigin, LsmHook, Target, UserRequest};

/// Wall-clock time, in nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(i128);

impl Time {
    pub const fn from_unix_nanos(nanos: i128) -> Self {
        Time(nanos)
    }

    pub const fn from_unix_secs(secs: i64) -> Self {
        Time(secs as i128 * 1_000_000_000)
    }

    pub const fn unix_nanos(self) -> i128 {
        self.0
    }
}

/// One event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The node (host) the agent runs on.
    pub node_name: String,
    /// When the kernel saw it.
    pub time: Time,
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq)]
#[expect(
    clippy::large_enum_variant,
    reason = "most events are hook events: boxing them would add an allocation to the common \
              case to save memory on the rarer exec and exit events"
)]
pub enum EventKind {
    /// A process called `execve`.
    Exec(Exec),
    /// A process ended.
    Exit(Exit),
    /// A policy's selector matched at a hook and posts an event.
    Hook(Hook),
}

impl Event {
    /// The process the event is about.
    pub fn process(&self) -> &Process {
        match &self.kind {
            EventKind::Exec(e) => &e.process,
            EventKind::Exit(e) => &e.process,
            EventKind::Hook(h) => &h.process,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Exec {
    pub process: Process,
    pub parent: Option<Process>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Exit {
    pub process: Process,
    pub parent: Option<Process>,
    /// The signal that ended the process; `None` when it exited by itself.
    pub signal: Option<u32>,
    /// The exit status (0 when killed by a signal).
    pub status: u32,
}

/// A process as the agent knows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Process {
    /// Unique across the node's processes and over time (pids are reused).
    pub exec_id: String,
    /// The thread group id.
    pub pid: u32,
    /// The thread that did what the event reports.
    pub tid: Option<u32>,
    pub uid: Option<u32>,
    pub cwd: Option<String>,
    /// The executable's path.
    pub binary: String,
    /// The command line, `argv[0]` included.
    pub argv: Vec<String>,
    /// How the agent learned about the process, and what is incomplete.
    pub flags: Vec<ProcessFlag>,
    pub start_time: Option<Time>,
    /// The parent's `exec_id`, when the parent is known.
    pub parent_exec_id: Option<String>,
    /// The Kubernetes pod the process runs in; `None` outside Kubernetes and until the agent
    /// knows the pod. Shared: every process of a container points to the same one.
    pub pod: Option<Arc<Pod>>,
}

impl Process {
    /// The arguments after `argv[0]`.
    pub fn args(&self) -> &[String] {
        self.argv.get(1..).unwrap_or_default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProcessFlag {
    /// Seen starting with `execve`.
    Execve,
    /// Forked and not exec'd (yet): it runs its parent's binary.
    Clone,
    /// Running before the agent started; read from `/proc`.
    ProcFs,
    /// `argv` is longer than the kernel copies; the tail is missing.
    TruncArgs,
}

/// A Kubernetes pod, with the container a process runs in (what Tetragon's `Pod` message
/// shows).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub labels: BTreeMap<String, String>,
    /// The controller the pod belongs to (a Deployment's name, ...), and its kind.
    pub workload: String,
    pub workload_kind: String,
    pub container: Option<Container>,
}

/// The container of a pod the process runs in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Container {
    pub id: String,
    pub name: String,
    pub image: Option<Image>,
    pub start_time: Option<Time>,
    /// The process's pid in the container's pid namespace.
    pub pid: Option<u32>,
    /// The process may be a Kubernetes exec probe.
    pub maybe_exec_probe: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Image {
    pub id: String,
    pub name: String,
}

/// A selector of a policy matched at an LSM hook.
#[derive(Debug, Clone, PartialEq)]
pub struct Hook {
    pub process: Process,
    pub parent: Option<Process>,
    pub policy_name: String,
    /// For a `TracingPolicyNamespaced`.
    pub policy_namespace: Option<String>,
    /// Where the agent enforced (an LSM hook) or observed (a kprobe or tracepoint).
    pub hook: Target,
    /// How the policy named the hook: a kprobe `call` or an `lsmhooks` entry.
    pub origin: HookOrigin,
    /// The arguments the policy lists, in its order.
    pub args: Vec<Arg>,
    /// A kretprobe's `returnArg`: the value the function returned (boxed: most events have
    /// none, and inline it would make every event as large).
    pub return_arg: Option<Box<Arg>>,
    /// The policy's `data` values (integers read from the task), in its order.
    pub data: Vec<Arg>,
    pub action: Action,
    /// The action that ran at the return probe; `None` when none ran (or no return probe),
    /// which Tetragon reports as `Post`, its action number 0.
    pub return_action: Option<Action>,
    pub message: Option<String>,
    pub tags: Vec<String>,
    /// `GetUrl`/`DnsLookup`: what the agent does in user space for this event.
    pub request: Option<UserRequest>,
}

impl Hook {
    /// The function as the policy named it: the kprobe's `call`, the LSM hook's name, or a
    /// tracepoint's event (its subsystem is in [`Hook::origin`]).
    pub fn function_name(&self) -> &str {
        match &self.origin {
            HookOrigin::Kprobe { call } => call,
            HookOrigin::LsmHook => self.hook.lsm().map_or("", |h| h.name()),
            HookOrigin::Tracepoint { event, .. } => event,
            HookOrigin::Uprobe(u) => match &u.usdt {
                Some(p) => &p.name,
                None => u.symbol(),
            },
        }
    }
}

/// The last action that ran for the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Post,
    Sigkill,
    Signal,
    Override,
    /// The agent fetches the selector's `argUrl` for this event ([`Hook::request`]).
    GetUrl,
    /// The agent looks the selector's `argFqdn` up for this event ([`Hook::request`]).
    DnsLookup,
    /// A USDT probe's argument was written (`Set`).
    Set,
    /// A `NotifyEnforcer` selector denied (or signalled) at the LSM hook.
    NotifyEnforcer,
}

/// One argument of a hook event.
#[derive(Debug, Clone, PartialEq)]
pub struct Arg {
    pub value: ArgValue,
    /// The policy's `label` for it.
    pub label: Option<String>,
}

/// An argument's value, by the type the policy declared.
#[derive(Debug, Clone, PartialEq)]
pub enum ArgValue {
    /// A `struct file *`, or a file descriptor (`fd`), which Tetragon also reports as the
    /// file it refers to.
    File {
        path: String,
    },
    /// A `struct path *`.
    Path {
        path: String,
    },
    /// A `struct linux_binprm *`: the program being executed.
    LinuxBinprm {
        path: String,
    },
    /// Signed 32-bit (`int`, `int32`, ...).
    Int(i32),
    /// Unsigned up to 32 bits (`uint8`, `uint16`, `uint32`).
    Uint(u32),
    /// Unsigned 64-bit (`uint64`, `size_t`, `ulong`).
    Size(u64),
    /// Signed 64-bit (`long`, `int64`).
    Long(i64),
    /// A capability number (`capability`: `CAP_*`).
    Capability(i32),
    String(String),
    /// A buffer (`char_buf`, `char_iovec`, ...) read whole.
    Bytes(Vec<u8>),
    /// A buffer of `orig_size` bytes of which only the first `bytes` were read (the kernel
    /// side copies at most a fixed amount).
    TruncatedBytes {
        bytes: Vec<u8>,
        orig_size: u64,
    },
    /// An array of 32-bit integers (`int32_arr`: a `pipe`'s file descriptors).
    Int32List(Vec<i32>),
    /// The DNS query of a UDP send (`dns`): `None` when the data was not one.
    Dns(Option<DnsQuery>),
    /// A socket and the connection it makes (`None`: the kernel's record carried no
    /// connection, which only a decoding bug would cause).
    Sock(Option<NetData>),
    /// The address a socket connects to (`None` as for [`ArgValue::Sock`]).
    Sockaddr(Option<Sockaddr>),
    /// A `struct sk_buff *`: a packet (boxed, as the credentials: rarer and larger than
    /// the other values, they would make every argument of every event that large).
    Skb(Box<Skb>),
    /// A `struct cred *`: a task's credentials.
    Cred(Box<Cred>),
    /// A `struct module *`: its name, and whether its signature checked out (`None` when the
    /// kernel does not check module signatures).
    Module {
        name: String,
        signature_ok: Option<bool>,
    },
    /// A BPF program being loaded (`bpf_attr`) or loaded (`bpf_prog`), a BPF map
    /// (`bpf_map`) or a perf event (`perf_event`); boxed as the credentials.
    BpfObj(Box<BpfObj>),
    /// A `struct user_namespace *`.
    UserNs(UserNs),
    /// A capability set (`kernel_cap_t`, `cap_inheritable`, `cap_permitted`,
    /// `cap_effective`): one bit per capability number.
    CapSet {
        kind: CapSetKind,
        caps: u64,
    },
    /// A syscall number with its ABI (`syscall64`); a 64-bit syscall id declared as
    /// `int64` is an [`ArgValue::Long`].
    SyscallId {
        id: u32,
        abi: SyscallAbi,
    },
}

/// A BPF object or perf event argument, with the kernel's numbers (the edges name them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BpfObj {
    /// `bpf_attr` (`attr`: a program being loaded) or `bpf_prog` (a loaded one).
    Prog {
        attr: bool,
        prog_type: u32,
        insn_cnt: u32,
        name: String,
    },
    Map {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        name: String,
    },
    /// `kprobe_func`: the probed function of a kprobe PMU event, else empty.
    PerfEvent {
        perf_type: u32,
        config: u64,
        probe_offset: u64,
        kprobe_func: String,
    },
}

/// Which capability set an [`ArgValue::CapSet`] argument was declared as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CapSetKind {
    /// `kernel_cap_t`: a set, not said which.
    KernelCapT,
    Inheritable,
    Permitted,
    Effective,
}

/// The system-call table a syscall number belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SyscallAbi {
    /// x86_64's 64-bit calls.
    X64,
    /// x86's 32-bit calls (a 32-bit program on an x86_64 kernel).
    I386,
    Arm64,
    /// 32-bit ARM calls on an arm64 kernel.
    Arm32,
}

/// A packet (`struct sk_buff`) as the kernel side reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Skb {
    pub hash: u32,
    pub len: u32,
    pub priority: u32,
    pub mark: u32,
    /// `AF_*` of the network header.
    pub family: u16,
    /// `None` outside IPv4/IPv6.
    pub saddr: Option<IpAddr>,
    pub daddr: Option<IpAddr>,
    pub sport: u32,
    pub dport: u32,
    /// `IPPROTO_*`.
    pub proto: u32,
    /// The IPsec security path's length and its outbound length.
    pub sec_path_len: u32,
    pub sec_path_olen: u32,
}

/// A task's credentials (`struct cred`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cred {
    pub uid: u32,
    pub gid: u32,
    pub euid: u32,
    pub egid: u32,
    pub suid: u32,
    pub sgid: u32,
    pub fsuid: u32,
    pub fsgid: u32,
    /// `SECBIT_*` flags.
    pub securebits: u32,
    pub caps: CapSets,
    /// The user namespace the credentials belong to.
    pub user_ns: UserNs,
}

/// The three capability sets of a task, one bit per capability number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct CapSets {
    pub permitted: u64,
    pub effective: u64,
    pub inheritable: u64,
}

/// A user namespace (`struct user_namespace`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct UserNs {
    /// Nesting depth; 0 is the initial (host) namespace.
    pub level: i32,
    /// The namespace's owner and group.
    pub uid: u32,
    pub gid: u32,
    /// The namespace's inode number.
    pub ns_inum: u32,
}

impl UserNs {
    /// Whether this is the host's namespace: Tetragon decides by the level alone.
    pub fn is_host(&self) -> bool {
        self.level == 0
    }
}

/// A socket address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sockaddr {
    /// `AF_*`.
    pub family: u16,
    /// `None` for a family other than `AF_INET`/`AF_INET6`.
    pub addr: Option<IpAddr>,
    pub port: u16,
}

/// The question of a DNS query (`dns` argument): its name, type and class, and the
/// message's id and flags.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DnsQuery {
    /// Lower case, labels joined by dots, no trailing dot.
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
    pub id: u16,
    pub flags: u16,
}

impl DnsQuery {
    /// What the kernel read: the record's name and [`lsm_shared::dns_value`].
    pub fn from_raw(name: String, value: u64) -> Self {
        DnsQuery {
            name,
            qtype: value as u16,
            qclass: (value >> 16) as u16,
            flags: (value >> 32) as u16,
            id: (value >> 48) as u16,
        }
    }

    /// The type's mnemonic (`A`, `AAAA`, ...), as hickory's record types name it; `None` for
    /// a type it does not know.
    pub fn type_name(&self) -> Option<&'static str> {
        use hickory_resolver::proto::rr::RecordType;
        match RecordType::from(self.qtype) {
            RecordType::Unknown(_) => None,
            t => Some(t.into()),
        }
    }
}
