//! The ABI between the BPF programs in `lsm-ebpf` and the agent in `lsm-agent`.
//!
//! Every type that crosses the kernel boundary lives here, once: map keys and values, the
//! load-time kernel configuration, and the ring-buffer event records. All types are
//! `#[repr(C)]`, `Copy`, use explicit padding and no `bool`/enums, and have their size pinned
//! by a compile-time assertion so that both sides agree byte for byte.
//!
//! The pure steps of the kernel-side evaluation (bitmap arithmetic, numeric operators) live
//! here too, in `eval`, so that they are unit-tested on the host and inlined into the BPF
//! programs.
//!
//! # How selectors are evaluated in the kernel
//!
//! The user-space compiler gives every selector of a hook a slot `0..MAX_SELECTORS` (across all
//! loaded policies). Every string filter value becomes one map entry whose value is a pair of
//! selector bitmaps ([`SelMasks`]); a hook does at most one lookup per (subject, family), so
//! its cost does not depend on how many values a filter has:
//!
//! * `Equal`/`NotEqual`/`In`/`NotIn`: hash map [`STR_EQ_MAP`], key = [`StrKey`];
//! * `Prefix`/`NotPrefix`: LPM trie [`STR_PREFIX_MAP`] over the path bytes;
//! * `Postfix`/`NotPostfix`: LPM trie [`STR_POSTFIX_MAP`] over the reversed path bytes.
//!
//! For the tries the compiler stores in each entry the union of the bitmaps of every entry that
//! is a prefix of it, so the single longest-prefix match answers for all shorter ones too.
//! Numeric filters (few values each) are records in [`NUM_FILT_MAP`], evaluated in a bounded
//! loop. The per-hook [`HookConfig`] says which selectors use which filter class, so a selector
//! without a filter of some class is not constrained by it.
#![no_std]

use core::mem::size_of;

mod eval;
pub use eval::*;

// ---------------------------------------------------------------------------------------------
// Hooks

/// `file_open(struct file *file)`.
pub const HOOK_FILE_OPEN: u32 = 0;
/// `file_permission(struct file *file, int mask)`.
pub const HOOK_FILE_PERMISSION: u32 = 1;
/// `mmap_file(struct file *file, unsigned long reqprot, unsigned long prot, unsigned long flags)`.
pub const HOOK_MMAP_FILE: u32 = 2;
/// `path_truncate(const struct path *path)`.
pub const HOOK_PATH_TRUNCATE: u32 = 3;
/// `file_truncate(struct file *file)` (Linux 6.2 and later).
pub const HOOK_FILE_TRUNCATE: u32 = 4;
/// `bprm_check_security(struct linux_binprm *bprm)`.
pub const HOOK_BPRM_CHECK: u32 = 5;
/// `socket_connect(struct socket *sock, struct sockaddr *address, int addrlen)`.
pub const HOOK_SOCKET_CONNECT: u32 = 6;
// The hooks below have no hand-written program: their arguments are read by the generic
// reader, following the [`ArgDesc`]s of their plan.
/// `path_symlink(const struct path *dir, struct dentry *dentry, const char *old_name)`.
pub const HOOK_PATH_SYMLINK: u32 = 7;
/// `inode_mkdir(struct inode *dir, struct dentry *dentry, umode_t mode)`.
pub const HOOK_INODE_MKDIR: u32 = 8;
/// `path_link(struct dentry *old_dentry, const struct path *new_dir, struct dentry *new_dentry)`.
pub const HOOK_PATH_LINK: u32 = 9;
/// `sb_mount(const char *dev_name, const struct path *path, const char *type, unsigned long flags, void *data)`.
pub const HOOK_SB_MOUNT: u32 = 10;
/// `bprm_creds_from_file(struct linux_binprm *bprm, const struct file *file)`.
pub const HOOK_BPRM_CREDS_FROM_FILE: u32 = 11;
/// `capable(const struct cred *cred, struct user_namespace *ns, int cap, unsigned int opts)`.
pub const HOOK_CAPABLE: u32 = 12;
/// `userns_create(const struct cred *cred)`.
pub const HOOK_USERNS_CREATE: u32 = 13;
/// `task_fix_setuid(struct cred *new, const struct cred *old, int flags)`.
pub const HOOK_TASK_FIX_SETUID: u32 = 14;
/// `ptrace_access_check(struct task_struct *child, unsigned int mode)`.
pub const HOOK_PTRACE_ACCESS_CHECK: u32 = 15;
/// `settime(const struct timespec64 *ts, const struct timezone *tz)`.
pub const HOOK_SETTIME: u32 = 16;
/// `bpf(int cmd, union bpf_attr *attr, unsigned int size)`.
pub const HOOK_BPF: u32 = 17;
/// `kernel_module_request(char *kmod_name)`.
pub const HOOK_KERNEL_MODULE_REQUEST: u32 = 18;
/// `inode_follow_link(struct dentry *dentry, struct inode *inode, bool rcu)`.
pub const HOOK_INODE_FOLLOW_LINK: u32 = 19;
/// `sk_alloc_security(struct sock *sk, int family, gfp_t priority)`.
pub const HOOK_SK_ALLOC: u32 = 20;
/// `sb_pivotroot(const struct path *old_path, const struct path *new_path)`.
pub const HOOK_SB_PIVOTROOT: u32 = 21;
/// `socket_create(int family, int type, int protocol, int kern)`.
pub const HOOK_SOCKET_CREATE: u32 = 22;
/// `kernel_read_file(struct file *file, enum kernel_read_file_id id, bool contents)`.
pub const HOOK_KERNEL_READ_FILE: u32 = 23;
/// `kernel_load_data(enum kernel_load_data_id id, bool contents)`.
pub const HOOK_KERNEL_LOAD_DATA: u32 = 24;
/// `capset(struct cred *new, const struct cred *old, const kernel_cap_t *effective,
/// const kernel_cap_t *inheritable, const kernel_cap_t *permitted)`.
pub const HOOK_CAPSET: u32 = 25;
/// The hooks with a hand-written program from [`HOOK_FILE_OPEN`] on (`socket_connect`
/// excluded) have a twin: the same LSM hook served by a generic-reader program, for the
/// hook entries that follow a `resolve` path from an argument, which the hand-written
/// program does not read. The twin of hook `h` is `HOOK_TWIN_BASE + h`.
pub const HOOK_TWIN_BASE: u32 = 26;
/// Number of twins: `HOOK_FILE_OPEN..=HOOK_BPRM_CHECK`.
pub const NUM_TWINS: u32 = HOOK_BPRM_CHECK + 1;

/// The twin of hand-written hook `hook`, if it has one.
#[inline(always)]
pub const fn twin_hook(hook: u32) -> Option<u32> {
    if hook < NUM_TWINS {
        Some(HOOK_TWIN_BASE + hook)
    } else {
        None
    }
}

/// First hook id the compiler hands out to kprobe, kretprobe and tracepoint targets (one id
/// per distinct target across all loaded policies); the ids below are the LSM hooks' and
/// their twins'.
pub const FIRST_DYNAMIC_HOOK: u32 = HOOK_TWIN_BASE + NUM_TWINS;
/// Number of hook slots in the per-hook maps. Each slot costs 8 bytes in every
/// [`CgroupScope`] and [`ProcInfo`] (one selector bitmap per hook).
pub const NUM_HOOKS: u32 = 64;

const _: () = assert!(NUM_HOOKS.is_power_of_two());

/// The index of `hook` in a per-hook array, by a mask rather than a bounds check: the hook
/// id of a generic probe comes from a map, and an older verifier (6.1) loses a checked bound
/// when the compiler reloads the value from the stack, but keeps a masked one.
#[inline(always)]
pub const fn hook_slot(hook: u32) -> usize {
    (hook & (NUM_HOOKS - 1)) as usize
}

/// Selector slots per hook, across all loaded policies (one bit each in a `u64`).
/// Several policies may fire on one operation: each fired selector gets its own event.
pub const MAX_SELECTORS: u32 = 64;
/// Numeric filter records per hook.
pub const MAX_NUM_FILTERS: u32 = 64;
/// Arguments a hook event carries (Tetragon's `MAX_POSSIBLE_ARGS`).
pub const MAX_ARGS: usize = 5;

// ---------------------------------------------------------------------------------------------
// Strings and paths

/// Bytes of a string that take part in matching: an `Equal` value, a `Prefix` or a `Postfix`
/// is at most this long (Tetragon allows 256 for prefixes).
pub const STR_LEN: usize = 256;
/// Size of the buffer a path is resolved into (`PATH_MAX`).
pub const PATH_BUF_LEN: usize = 4096;
/// Dentry components the fallback walk follows before it gives up (fail-closed).
pub const MAX_WALK_DEPTH: u32 = 64;

/// The path was resolved completely (by `bpf_d_path` or the dentry walk).
pub const PATH_RESOLVED: u32 = 1 << 0;
/// The path came from the bounded dentry walk (the file was opened before the agent started,
/// or the cache entry was evicted). Such a path is relative to the initial mount namespace.
pub const PATH_WALKED: u32 = 1 << 1;
/// The path could not be resolved (too deep, longer than [`PATH_BUF_LEN`], or a helper
/// error). Enforcing selectors treat every string filter on it as matching (fail-closed).
pub const PATH_UNRESOLVED: u32 = 1 << 2;
/// The record holds a buffer's bytes ([`ARG_BUF`]), not text: its length is the number of
/// bytes read.
pub const PATH_BYTES: u32 = 1 << 3;
/// The record holds a [`CredRec`] ([`ARG_CRED`]) at its head; its length is the struct's size.
pub const PATH_CRED: u32 = 1 << 4;
/// The record holds a [`SockRec`] (an [`ARG_SOCK`] argument).
pub const PATH_NET: u32 = 1 << 5;
/// The record holds a [`SkbRec`] (an [`ARG_SKB`] argument).
pub const PATH_SKB: u32 = 1 << 6;
/// The record holds a [`BpfObjRec`] (an [`ARG_BPF_ATTR`], [`ARG_PERF_EVENT`], [`ARG_BPF_MAP`]
/// or [`ARG_BPF_PROG`] argument).
pub const PATH_OBJ: u32 = 1 << 7;

/// A BPF object or perf event as the `bpf_attr`, `perf_event`, `bpf_map` and `bpf_prog`
/// arguments read it, at the head of its string record. Which fields are set depends on the
/// kind: a program (`bpf_attr`, `bpf_prog`) has `ty` (its `BPF_PROG_TYPE_*`), `count` (its
/// instruction count) and `name`; a map has `ty` (`BPF_MAP_TYPE_*`), `count` (key size),
/// `value_size`, `max_entries` and `name`; a perf event has `ty` (`PERF_TYPE_*` or a dynamic
/// PMU's number), `config`, `probe_offset` and, for a kprobe PMU event, the probed function
/// in `name`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BpfObjRec {
    pub ty: u32,
    pub count: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub config: u64,
    pub probe_offset: u64,
    /// NUL-terminated (a kernel symbol name is at most 127 bytes, a BPF object's 15).
    pub name: [u8; OBJ_NAME_LEN],
}
/// Bytes of [`BpfObjRec::name`]: the kernel's `KSYM_NAME_LEN`.
pub const OBJ_NAME_LEN: usize = 128;
const _: () = assert!(size_of::<BpfObjRec>() == 160 && size_of::<BpfObjRec>() <= STR_LEN);

impl Default for BpfObjRec {
    fn default() -> Self {
        Self {
            ty: 0,
            count: 0,
            value_size: 0,
            max_entries: 0,
            config: 0,
            probe_offset: 0,
            name: [0; OBJ_NAME_LEN],
        }
    }
}

/// A task's credentials as an [`ARG_CRED`] reads them, at the head of its string record.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct CredRec {
    /// `uid`, `gid`, `suid`, `sgid`, `euid`, `egid`, `fsuid`, `fsgid`: the order of
    /// `struct cred` and of [`KernelConfig::cred_ids`].
    pub ids: [u32; 8],
    pub securebits: u32,
    /// The user namespace's nesting level (0: the initial one).
    pub userns_level: u32,
    /// `cap_effective`, `cap_inheritable`, `cap_permitted`, as [`KernelConfig::cred_caps`].
    pub caps: [u64; 3],
    pub userns_owner: u32,
    pub userns_group: u32,
    pub userns_inum: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<CredRec>() == 80 && size_of::<CredRec>() <= STR_LEN);

/// A resolved path as kept in the kernel: its full length, its first [`STR_LEN`] bytes and
/// its last [`STR_LEN`] bytes reversed. That is all that matching needs for any path up to
/// [`PATH_BUF_LEN`]: `Equal` values and prefixes fit in `head`, postfixes in `tail_rev`, and a
/// path longer than `STR_LEN` cannot equal any value. User space rebuilds paths up to
/// `2 * STR_LEN` bytes exactly; longer ones are shown as head, `...`, tail.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PathRec {
    /// Length of the whole path in bytes, without the terminating NUL.
    pub len: u32,
    /// `PATH_*` flags.
    pub flags: u32,
    /// The first bytes of the path, zero-padded.
    pub head: [u8; STR_LEN],
    /// The last bytes of the path in reverse order, zero-padded.
    pub tail_rev: [u8; STR_LEN],
}
const _: () = assert!(size_of::<PathRec>() == 8 + 2 * STR_LEN);

/// Subject of a string filter: one per argument position (its string, path or file), and
/// the process's binary. `SUBJECT_ARG` is argument 0, the file or path of the hooks with a
/// hand-written program.
pub const SUBJECT_ARG: u8 = 0;
/// The executable of the current process (`matchBinaries`).
pub const SUBJECT_BINARY: u8 = MAX_ARGS as u8;
/// Number of string subjects: one per argument, and the binary.
pub const NUM_SUBJECTS: usize = MAX_ARGS + 1;

/// The string subject of argument `index` (0-based, below [`MAX_ARGS`]).
#[inline(always)]
pub const fn subject_arg(index: u32) -> u8 {
    index as u8
}

/// Key of [`STR_EQ_MAP`]. `scope` is [`str_scope`]; `bytes` holds the string, zero-padded.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct StrKey {
    pub scope: [u8; 4],
    pub bytes: [u8; STR_LEN],
}
const _: () = assert!(size_of::<StrKey>() == 4 + STR_LEN);

/// Scope bytes of a string key: hook, subject, and 0 padding. All four bytes are always part
/// of the LPM prefix, so tries never match across hooks or subjects.
#[inline(always)]
pub const fn str_scope(hook: u32, subject: u8) -> [u8; 4] {
    [hook as u8, subject, 0, 0]
}

/// Bits of the LPM prefix taken by the scope bytes.
pub const SCOPE_BITS: u32 = 32;

/// String bytes in an LPM trie key: the kernel caps trie data at 256 bytes, 4 of which are
/// the scope. So a `Prefix` or `Postfix` value is at most this long.
pub const LPM_STR_LEN: usize = 252;

/// Data of an LPM trie key in [`STR_PREFIX_MAP`] and [`STR_POSTFIX_MAP`] (aya's
/// `lpm_trie::Key` puts the prefix length in front). The prefix length in bits is
/// `SCOPE_BITS + 8 * string length`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct LpmStr {
    pub scope: [u8; 4],
    pub bytes: [u8; LPM_STR_LEN],
}
const _: () = assert!(size_of::<LpmStr>() == 256);

/// The value of every string map entry: which selectors list this string in a positive
/// filter (`Equal`, `In`, `Prefix`, `Postfix`) and which in a negated one.
#[repr(C)]
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct SelMasks {
    pub pos: u64,
    pub neg: u64,
}

/// Value of [`FILE_VERDICTS_MAP`]: the candidates the string filters of `hook` on its file
/// argument let through for this file (`keep`: narrowing is `cand & keep`, whatever `cand`
/// is), under plan generation `generation` ([`PLAN_GEN_MAP`]). The cached path of an open file does
/// not change, so the next call on the file narrows with `keep` instead of looking its path
/// up again.
#[repr(C)]
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct FileVerdict {
    pub generation: u64,
    pub hook: u32,
    pub _pad: u32,
    pub keep: u64,
}
const _: () = assert!(size_of::<FileVerdict>() == 24);

/// Value of [`DENTRY_VERDICTS_MAP`] (key: the `struct dentry *`): `file_open` found that no
/// `file_permission` selector of plan generation `generation` can match the path of this
/// dentry as seen through mount `mnt` from the root (`root_mnt`, `root_dentry`) of the
/// process that opened it, while the kernel's `rename_lock` and `mount_lock` sequence counts
/// were `rename_seq` and `mount_seq`. Those counts change with every rename and every change
/// of the mount tree, which are the only ways the path of a live dentry changes; `inode` is
/// the dentry's inode then. An open that finds all of it unchanged keeps the passing verdict
/// without resolving the path.
#[repr(C)]
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct DentryVerdict {
    pub generation: u64,
    pub mnt: u64,
    pub root_mnt: u64,
    pub root_dentry: u64,
    pub inode: u64,
    pub rename_seq: u32,
    pub mount_seq: u32,
}
const _: () = assert!(size_of::<DentryVerdict>() == 48);

// Filter classes: index into [`HookConfig::uses`]. `class(subject, family, negated)`.
pub const FAMILY_EQUAL: usize = 0;
pub const FAMILY_PREFIX: usize = 1;
pub const FAMILY_POSTFIX: usize = 2;
pub const NUM_FAMILIES: usize = 3;
/// Number of string filter classes: every subject x 3 families x {positive, negated}.
pub const NUM_STR_CLASSES: usize = NUM_SUBJECTS * NUM_FAMILIES * 2;

/// Index of a string filter class in [`HookConfig::uses`].
#[inline(always)]
pub const fn str_class(subject: u8, family: usize, negated: bool) -> usize {
    (subject as usize) * 6 + family * 2 + if negated { 1 } else { 0 }
}

// Argument kinds of [`ArgDesc::kind`]: how the generic reader turns a raw argument (a
// register, a hook's context slot) into what the evaluator and the event need.
/// Not read (no policy declares it): costs nothing.
pub const ARG_SKIP: u8 = 0;
/// An integer of [`ArgDesc::width`] bytes, zero-extended (numeric filters sign-extend it
/// themselves when the declared type is signed).
pub const ARG_INT: u8 = 1;
/// A NUL-terminated kernel string (`char *`): a string record of its first
/// [`PATH_BUF_LEN`] bytes. A NULL pointer is the empty string.
pub const ARG_STR: u8 = 2;
/// A `struct path *`: its full path, by the dentry walk.
pub const ARG_PATH: u8 = 3;
/// A `struct dentry *`: its path within its own mount (a dentry carries no mount).
pub const ARG_DENTRY: u8 = 4;
/// A `struct file *`: its full path (the `FILES` cache, else the dentry walk).
pub const ARG_FILE: u8 = 5;
/// A `struct linux_binprm *`: the full path of its `file`.
pub const ARG_BINPRM: u8 = 6;
/// A NUL-terminated string in USER memory (a syscall's `const char __user *`), read as
/// [`ARG_STR`] is.
pub const ARG_USTR: u8 = 7;
/// A file descriptor of the current task: the full path of its `struct file`.
pub const ARG_FD: u8 = 8;
/// A buffer (`char_buf`) whose length [`ArgDesc::size`] locates: its first
/// [`PATH_BUF_LEN`]` - 1` bytes go into a string record flagged [`PATH_BYTES`] (kernel memory,
/// else user memory), and its value is the length, not the pointer.
pub const ARG_BUF: u8 = 9;

/// A `struct cred *`: its ids, securebits, capability sets and user namespace, as a
/// [`CredRec`] at the head of a string record flagged [`PATH_CRED`].
pub const ARG_CRED: u8 = 10;
/// A pointer to a capability set (`kernel_cap_t *`): the 64 bits it points to (a `u64` on
/// Linux 6.3+, two `u32`s in the same order before), as an integer.
pub const ARG_KCAP: u8 = 11;
/// A `struct sock *`: its connection as a [`SockRec`] at the head of a string record flagged
/// [`PATH_NET`]; the argument [`HookConfig::net_arg`] names also fills the connection the
/// network operators match.
pub const ARG_SOCK: u8 = 12;
/// A `struct sk_buff *`: the packet's IP addresses, protocol and ports as a [`SkbRec`]
/// flagged [`PATH_SKB`]; as [`ARG_SOCK`] for the network operators.
pub const ARG_SKB: u8 = 13;
/// A `struct module *`: its name (an array inside the struct) as the string record; the
/// value is [`module_value`] of its taint flags and signature check.
pub const ARG_MODULE: u8 = 14;
/// A `union bpf_attr *` of a program load (UAPI layout): its type, instruction count and
/// name as a [`BpfObjRec`] flagged [`PATH_OBJ`].
pub const ARG_BPF_ATTR: u8 = 15;
/// A `struct perf_event *`: its attribute's type, config and probe offset, and a kprobe PMU
/// event's function name, as a [`BpfObjRec`].
pub const ARG_PERF_EVENT: u8 = 16;
/// A `struct bpf_map *`: its type, key and value sizes, capacity and name, as a
/// [`BpfObjRec`].
pub const ARG_BPF_MAP: u8 = 17;
/// A `struct bpf_prog *`: its type, instruction count and name, as a [`BpfObjRec`].
pub const ARG_BPF_PROG: u8 = 18;
/// A `struct kiocb *`: the full path of its file (`ki_filp`), as [`ARG_FILE`].
pub const ARG_KIOCB: u8 = 19;
/// A `struct iov_iter *`: the first bytes of its data (a user buffer, or the first segment
/// of an iovec or kvec array) as [`ARG_BUF`] reads a buffer; its value is the iterator's
/// `count`.
pub const ARG_IOV_ITER: u8 = 20;
/// A pointer to an array of [`ArgDesc::size`] 32-bit integers (`int32_arr`: a `pipe`'s or
/// `socketpair`'s `int[2]`), in kernel or user memory: its bytes as [`ARG_BUF`] reads a
/// buffer; its value is the element count.
pub const ARG_I32_ARR: u8 = 21;

/// A `struct msghdr *` of a UDP send (`dns`): the DNS query in the first bytes of its data,
/// as a string record of the question's name (lower case, labels joined by dots, no trailing
/// dot; empty when the data is not a DNS query); its value is [`dns_value`] of the header
/// and the question's type and class (class 0: not a query).
pub const ARG_DNS: u8 = 22;

/// The value of an [`ARG_DNS`] argument: the message's id and flags, and the question's
/// type and class, each 16 bits.
#[inline(always)]
pub const fn dns_value(id: u16, flags: u16, qtype: u16, qclass: u16) -> u64 {
    (id as u64) << 48 | (flags as u64) << 32 | (qclass as u64) << 16 | qtype as u64
}

/// Whether arguments of `kind` are a [`BpfObjRec`].
#[inline(always)]
pub const fn arg_is_obj(kind: u8) -> bool {
    matches!(
        kind,
        ARG_BPF_ATTR | ARG_PERF_EVENT | ARG_BPF_MAP | ARG_BPF_PROG
    )
}

/// Bit of an [`ARG_MODULE`] value: the kernel checked the module's signature (`sig_ok` is
/// in the struct: `CONFIG_MODULE_SIG`).
pub const MODULE_SIG_KNOWN: u64 = 1 << 63;
/// Bit of an [`ARG_MODULE`] value: the signature was good.
pub const MODULE_SIG_OK: u64 = 1 << 62;
/// The taint bits of an [`ARG_MODULE`] value (the kernel's `TAINT_*` numbers).
pub const MODULE_TAINTS: u64 = (1 << 62) - 1;

/// The value of an [`ARG_MODULE`] argument: its taints, and its signature check when known.
#[inline(always)]
pub const fn module_value(taints: u64, sig: Option<bool>) -> u64 {
    let s = match sig {
        None => 0,
        Some(false) => MODULE_SIG_KNOWN,
        Some(true) => MODULE_SIG_KNOWN | MODULE_SIG_OK,
    };
    (taints & MODULE_TAINTS) | s
}

/// [`KernelConfig::module_sig_ok`] of a kernel without module signatures.
pub const NO_FIELD: u64 = u64::MAX;

/// [`ArgDesc::size`] of an [`ARG_BUF`] whose length is the call's return value (`returnCopy`:
/// read when the call returns).
pub const SIZE_RETVAL: u8 = 0xff;

/// [`ArgDesc::src`] of a kretprobe's `returnArg` read as a struct (a `sock`): the call's
/// return value instead of a raw argument.
pub const SRC_RET: u8 = 0xff;

/// [`ArgDesc::src`] bit (never set together with [`SRC_RET`]): the raw argument
/// `src & SRC_POS` (or the current task, with [`SRC_CURRENT`]) is the root of a `resolve` path, which [`HookConfig::resolve`] at the
/// same position walks before the argument is read as its kind.
pub const SRC_RESOLVE: u8 = 0x40;

/// [`ArgDesc::src`] bit, with [`SRC_RESOLVE`]: the path starts at the current task
/// (`source: current_task`), not at a raw argument.
pub const SRC_CURRENT: u8 = 0x20;
/// The raw argument position in an [`ArgDesc::src`] with [`SRC_RESOLVE`].
pub const SRC_POS: u8 = 0x1f;

/// Most steps of a `resolve` path (Tetragon's limit too).
pub const MAX_RESOLVE_DEPTH: usize = 10;

/// How the kernel walks one argument's `resolve` path (Tetragon's `resolve: "a.b.c"`): from
/// the raw argument, for each step `j < steps`, add `off[j]`, then, when bit `j` of `load` is
/// set, load the 8 bytes there (a pointer field). A walk to an integer ends on its address,
/// where the reader reads exactly the integer's width ([`ArgDesc::width`]). A NULL on the
/// way ends the walk with 0. The agent computes it from the kernel's BTF.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResolvePath {
    pub off: [u32; MAX_RESOLVE_DEPTH],
    pub load: u16,
    pub steps: u8,
    pub _pad: u8,
}
const _: () = assert!(size_of::<ResolvePath>() == 4 * MAX_RESOLVE_DEPTH + 4);

impl ResolvePath {
    pub const fn empty() -> Self {
        Self {
            off: [0; MAX_RESOLVE_DEPTH],
            load: 0,
            steps: 0,
            _pad: 0,
        }
    }
}

/// Whether arguments of `kind` are read into a string record (matched by string filters).
#[inline(always)]
pub const fn arg_is_string(kind: u8) -> bool {
    matches!(
        kind,
        ARG_STR
            | ARG_PATH
            | ARG_DENTRY
            | ARG_FILE
            | ARG_BINPRM
            | ARG_USTR
            | ARG_FD
            | ARG_BUF
            | ARG_CRED
            | ARG_SOCK
            | ARG_SKB
            | ARG_MODULE
            | ARG_BPF_ATTR
            | ARG_PERF_EVENT
            | ARG_BPF_MAP
            | ARG_BPF_PROG
            | ARG_KIOCB
            | ARG_IOV_ITER
            | ARG_I32_ARR
            | ARG_DNS
    )
}

/// Whether the generic reader finds an argument of `kind` through an open file, whose path
/// it takes from the path cache ([`FILES_MAP`]) when `file_open` put it there.
#[inline(always)]
pub const fn arg_reads_open_file(kind: u8) -> bool {
    matches!(kind, ARG_FILE | ARG_BINPRM | ARG_FD | ARG_KIOCB)
}

/// [`HookConfig::probe`]: the hook's kprobe is on a syscall wrapper, whose one argument is
/// the user's `struct pt_regs *`: the raw arguments are that struct's argument registers.
pub const PROBE_SYSCALL: u16 = 1 << 0;
/// [`HookConfig::probe`]: the hook is a tracepoint; raw argument `i` is the record field at
/// byte offset [`HookConfig::tp_off`]`[i]`, [`ArgDesc::width`] bytes wide.
pub const PROBE_TRACEPOINT: u16 = 1 << 1;

/// [`UsdtArg::kind`]: no such argument at this site (it reads as 0).
pub const USDT_NONE: u8 = 0;
/// `$imm`: the value is [`UsdtArg::off`].
pub const USDT_CONST: u8 = 1;
/// `%reg`: the register at byte [`UsdtArg::reg`] of `struct pt_regs`.
pub const USDT_REG: u8 = 2;
/// `off(%reg)`: the user memory at that register plus [`UsdtArg::off`].
pub const USDT_DEREF: u8 = 3;
/// `off(%base,%index,scale)`: the user memory at base + (index << [`UsdtArg::scale`]) + off.
pub const USDT_SIB: u8 = 4;

/// How the generic USDT program computes one argument at one site of a probe, from the
/// site's `.note.stapsdt` argument string (`-4@-8(%rbp)`). Written by the loader per
/// attachment into [`USDT_SPECS_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct UsdtArg {
    /// The constant, or the memory operand's displacement (two's complement).
    pub off: u64,
    pub kind: u8,
    /// Byte offset in `struct pt_regs` of the register (the base register for `USDT_SIB`).
    pub reg: u8,
    /// Byte offset in `struct pt_regs` of the index register (`USDT_SIB`).
    pub index: u8,
    /// log2 of the index's scale (`USDT_SIB`).
    pub scale: u8,
    /// The argument's width in bytes: 1, 2, 4 or 8. Registers are read whole and narrowed.
    pub size: u8,
    /// 1 when the argument is signed (negative size in the note): narrowed with sign
    /// extension.
    pub signed: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<UsdtArg>() == 16);

/// Value of [`USDT_SPECS_MAP`]: the arguments of one site, in the policy's argument positions.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct UsdtSpec {
    pub args: [UsdtArg; MAX_ARGS],
}
const _: () = assert!(size_of::<UsdtSpec>() == 16 * MAX_ARGS);

/// Value of [`PROBE_IDS_MAP`] (keyed by a probed function's address, as
/// `bpf_get_func_ip` returns it): the hook ids of its kprobe and its kretprobe, 0 for none
/// (0 is an LSM hook's id, never a probe's).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct ProbeHooks {
    pub entry: u32,
    pub ret: u32,
}
const _: () = assert!(size_of::<ProbeHooks>() == 8);

/// Key of [`RET_STASH_MAP`]: a thread in a probed call whose kretprobe evaluates.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct StashKey {
    pub pid_tgid: u64,
    pub hook: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<StashKey>() == 16);

/// How to read argument `i` of a hook: [`HookConfig::args`]`[i]`, filled by the compiler from
/// the translation table, so the kernel side has one reader for every hook.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct ArgDesc {
    /// `ARG_*`.
    pub kind: u8,
    /// Position among the raw arguments the entry point collected (for an LSM hook, the
    /// hook's own argument position).
    pub src: u8,
    /// Bytes of an [`ARG_INT`] (1, 2, 4 or 8).
    pub width: u8,
    /// Where an [`ARG_BUF`]'s length is: `1 + ` the raw argument that holds it (Tetragon's
    /// 1-based `sizeArgIndex`), [`SIZE_RETVAL`], or 0 for none (an empty buffer, as in
    /// Tetragon). 0 for every other kind.
    pub size: u8,
}
const _: () = assert!(size_of::<ArgDesc>() == 4);

/// Per-hook evaluation plan, at [`hook_cfg_index`]`(bank, hook)` of [`HOOK_CFG_MAP`].
///
/// Actions are bitmaps over selector slots so the kernel applies them without a loop:
/// the first matching selector of each group (one group = the selectors of one hook entry of
/// one policy, which occupy consecutive slots starting at a bit of `group_starts`) fires.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HookConfig {
    /// Selector slots in use on this hook.
    pub selectors: u64,
    /// Selectors whose actions enforce (Sigkill, Signal, Override) and are not in monitor
    /// mode: they match when the path is unresolved (fail-closed).
    pub enforcing: u64,
    /// First slot of every group.
    pub group_starts: u64,
    /// Selectors that SIGKILL and deny with -EPERM.
    pub kill: u64,
    /// Selectors that deny with their `SelectorAction::error`.
    pub override_: u64,
    /// Selectors that send their `SelectorAction::signal`.
    pub signal: u64,
    /// Selectors that post an event.
    pub post: u64,
    /// Selectors that track or untrack a socket (`TrackSock`, `UntrackSock`, a kretprobe's
    /// `returnArgAction`).
    pub sock_acts: u64,
    /// Selectors that `Set` a USDT probe's argument (not in monitor mode).
    pub set_: u64,
    /// For each string class, the selectors that have a filter of that class.
    pub uses: [u64; NUM_STR_CLASSES],
    /// For each pid class ([`pid_class`]), the selectors that have a `matchPIDs` filter of
    /// that class.
    pub pid_uses: [u64; NUM_PID_CLASSES],
    /// Selectors whose `matchBinaries` filter has `followChildren`: a process whose
    /// [`ProcInfo::follow`] has their bit counts as running a listed binary.
    pub follow: u64,
    /// Per address class ([`net_class`]): the selectors with an address filter of it.
    pub addr_uses: [u64; 4],
    /// Per port class ([`net_class`]): the selectors with a port filter of it.
    pub port_uses: [u64; 4],
    /// Process attributes (bit `i` = attribute `i`, see [`ATTR_NS_BASE`]) that numeric
    /// filters of this hook read, so the kernel reads only those.
    pub attrs: u32,
    /// Number of valid records for this hook in [`NUM_FILT_MAP`].
    pub num_filters: u32,
    /// Which of the hook's two banks of numeric filters is live. A new policy set is written
    /// into the other bank and this field flips with the rest of the config, so a reload
    /// never shows a half-written filter list.
    pub num_bank: u32,
    /// Position + 1 of the `sock`/`skb` argument of a probe whose connection the hook's
    /// network operators match (one per hook; 0: none). `socket_connect` reads its own.
    pub net_arg: u32,
    /// Selectors of policies that apply to some workloads only (a namespace, `podSelector`,
    /// `containerSelector`, `hostSelector`): they stay candidates only for a process whose
    /// cgroup's [`CgroupScope`] lists them.
    pub scoped: u64,
    /// How to read each argument (hooks without a hand-written program).
    pub args: [ArgDesc; MAX_ARGS],
    /// Per argument whose [`ArgDesc::src`] has [`SRC_RESOLVE`]: the path from the raw
    /// argument to the value (filled by the loader from the kernel's BTF).
    pub resolve: [ResolvePath; MAX_ARGS],
    /// Tracepoints: byte offset of each argument's field in the record (filled by the
    /// loader from the tracepoint's `format` file).
    pub tp_off: [u16; MAX_ARGS],
    /// `PROBE_*`: how a probe entry point collects the raw arguments.
    pub probe: u16,
    /// Per `data` entry: the walk from the current task to its integer (filled by the loader
    /// from the kernel's BTF), read when [`HookConfig::attrs`] has its `ATTR_DATA_BASE + d`.
    pub data: [ResolvePath; NUM_DATA],
    /// The width in bytes of each `data` entry's integer (1, 2, 4 or 8).
    pub data_width: [u8; NUM_DATA],
    /// On [`HOOK_FILE_OPEN`]'s config only: 1 when a later hook reads the paths of open
    /// files back from the path cache ([`FILES_MAP`]): `file_truncate`, or a generic reader's
    /// argument of a kind [`arg_reads_open_file`]. `file_open` then caches every path it
    /// resolves; otherwise only those a later call of `file_permission` will want.
    pub open_paths: u8,
    /// Explicit, so the struct has no hidden padding (it is compared and copied as bytes).
    pub _pad: u8,
}
const _: () = assert!(
    size_of::<HookConfig>()
        == 72
            + 8 * NUM_STR_CLASSES
            + 8 * NUM_PID_CLASSES
            + 8
            + 64
            + 16
            + 8
            + 4 * MAX_ARGS
            + size_of::<ResolvePath>() * MAX_ARGS
            + 2 * MAX_ARGS
            + 2
            + size_of::<ResolvePath>() * NUM_DATA
            + NUM_DATA
            + 2
);

// ---------------------------------------------------------------------------------------------
// Workload scoping (Kubernetes pods and containers, by cgroup v2 id)

/// Key of [`CGROUPS_MAP`] for processes in no listed cgroup: the host's own processes.
pub const CGROUP_HOST: u64 = 0;
/// Deepest cgroup level the kernel looks at for a listed ancestor (the root is level 0).
pub const MAX_CGROUP_LEVEL: u32 = 16;

/// Value of [`CGROUPS_MAP`] (keyed by cgroup id, the inode of its cgroupfs directory): per
/// hook, the [`HookConfig::scoped`] selectors that apply to the processes of this cgroup and
/// of its descendants that are not listed themselves. The deepest listed cgroup of a process
/// decides; a process with none takes the [`CGROUP_HOST`] entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgroupScope {
    pub selectors: [u64; NUM_HOOKS as usize],
}

impl Default for CgroupScope {
    fn default() -> Self {
        Self {
            selectors: [0; NUM_HOOKS as usize],
        }
    }
}
const _: () = assert!(size_of::<CgroupScope>() == 8 * NUM_HOOKS as usize);

// ---------------------------------------------------------------------------------------------
// matchPIDs

/// Generations a process remembers: itself, its parent, ... ([`ProcInfo::lineage`]). A
/// `followForks` filter matches descendants up to `LINEAGE_LEN - 1` generations down.
pub const LINEAGE_LEN: usize = 12;
/// [`PidKey::kind`]: the pid as seen from the initial pid namespace (the tgid).
pub const PID_HOST: u32 = 0;
/// [`PidKey::kind`]: the pid in the process's own pid namespace (`isNamespacePID`).
pub const PID_NS: u32 = 1;
/// Pid filter classes: 2 kinds x {plain, followForks} x {In, NotIn}.
pub const NUM_PID_CLASSES: usize = 8;

/// Index of a pid filter class in [`HookConfig::pid_uses`].
#[inline(always)]
pub const fn pid_class(kind: u32, follow: bool, negated: bool) -> usize {
    (kind as usize) * 4 + if follow { 2 } else { 0 } + if negated { 1 } else { 0 }
}

/// Key of [`PIDS_MAP`]: one entry per (hook, kind, pid) listed by any `matchPIDs` filter.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PidKey {
    pub hook: u32,
    /// `PID_HOST` or `PID_NS`.
    pub kind: u32,
    pub pid: u32,
}
const _: () = assert!(size_of::<PidKey>() == 12);

/// Value of [`PIDS_MAP`]: the selectors listing this pid, by class. `pos`/`neg` apply to the
/// process itself; `follow_pos`/`follow_neg` (followForks) to it and its ancestors.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct PidMasks {
    pub pos: u64,
    pub neg: u64,
    pub follow_pos: u64,
    pub follow_neg: u64,
}
const _: () = assert!(size_of::<PidMasks>() == 32);

// ---------------------------------------------------------------------------------------------
// Process attributes (matchNamespaces, matchCapabilities)

/// A [`NumFilter::arg`] at or above this reads process attribute `arg - ARG_ATTR_BASE`
/// instead of a hook argument.
pub const ARG_ATTR_BASE: u32 = 16;
/// Attributes `ATTR_NS_BASE + t`: inode of the process's namespace of type `t` (Tetragon's
/// order: uts, ipc, mnt, pid, pid_for_children, net, time, time_for_children, cgroup, user).
pub const ATTR_NS_BASE: u32 = 0;
pub const NUM_NS_TYPES: u32 = 10;
pub const NS_PID: u32 = 3;
pub const NS_USER: u32 = 9;
/// Attributes `ATTR_CAP_BASE + s`: capability set `s` (effective, inheritable, permitted).
pub const ATTR_CAP_BASE: u32 = 10;
pub const NUM_CAP_SETS: u32 = 3;
/// Attributes of the socket at `socket_connect`, filled by that program (not read from the
/// task): address family (v4-mapped IPv6 counts as `AF_INET`), protocol, socket type.
pub const ATTR_SOCK_FAMILY: u32 = 13;
pub const ATTR_SOCK_PROTOCOL: u32 = 14;
pub const ATTR_SOCK_TYPE: u32 = 15;
/// The return value of a kretprobe'd call (`matchReturnArgs`), set by that program.
pub const ATTR_RETVAL: u32 = 16;
/// The TCP state (`sk_state`) of a probe's `sock` argument the network operators match.
pub const ATTR_SOCK_STATE: u32 = 17;
/// Attributes `ATTR_DATA_BASE + d`: a hook's `data[d]` value (an integer its
/// [`HookConfig::data`] walk reaches from the current task), for `matchData` and the event.
pub const ATTR_DATA_BASE: u32 = 18;
/// `data` entries a hook can have (Tetragon allows `args` + `data` to be 5 in all).
pub const NUM_DATA: usize = 2;
pub const NUM_ATTRS: u32 = ATTR_DATA_BASE + NUM_DATA as u32;
const _: () = assert!(
    NUM_DATA == 2,
    "the evaluator clears and copies two data attributes"
);

// ---------------------------------------------------------------------------------------------
// Network (socket_connect)

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
pub const IPPROTO_TCP: u16 = 6;
pub const IPPROTO_UDP: u16 = 17;

/// Whether a connect to `net` goes to the agent's own API: TCP to `api_port` (non-zero) on
/// the loopback addresses `localhost` names (127.0.0.1, `::1`, or IPv4-mapped 127.0.0.1).
#[inline(always)]
pub fn is_local_api(net: &NetInfo, api_port: u64) -> bool {
    if api_port == 0 || u64::from(net.dport) != api_port || net.protocol != IPPROTO_TCP {
        return false;
    }
    let a = &net.daddr;
    let v4 = |b: &[u8]| b[0] == 127 && b[1] == 0 && b[2] == 0 && b[3] == 1;
    if net.family == AF_INET {
        return v4(&a[..4]);
    }
    if net.family != AF_INET6 {
        return false;
    }
    let mut i = 0;
    let mut zero_head = true;
    while i < 10 {
        zero_head &= a[i] == 0;
        i += 1;
    }
    if !zero_head {
        return false;
    }
    let loopback6 =
        a[10] == 0 && a[11] == 0 && a[12] == 0 && a[13] == 0 && a[14] == 0 && a[15] == 1;
    let mapped = a[10] == 0xff && a[11] == 0xff && v4(&a[12..]);
    loopback6 || mapped
}

/// Address and port fields of a connection: the destination (the address connected to) and
/// the source (the socket's bound local address, 0 when unbound).
pub const NET_DEST: u32 = 0;
pub const NET_SOURCE: u32 = 1;

/// Index of an address or port filter class in [`HookConfig::addr_uses`] /
/// [`HookConfig::port_uses`].
#[inline(always)]
pub const fn net_class(field: u32, negated: bool) -> usize {
    (field as usize) * 2 + if negated { 1 } else { 0 }
}

/// Data of an [`ADDR4_MAP`] LPM key: scope (`[hook, field, 0, 0]`, always fully in the
/// prefix) then the address in network order. Prefix length = 32 + CIDR bits.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct Addr4 {
    pub scope: [u8; 4],
    pub addr: [u8; 4],
}
const _: () = assert!(size_of::<Addr4>() == 8);

/// Data of an [`ADDR6_MAP`] LPM key (see [`Addr4`]).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct Addr6 {
    pub scope: [u8; 4],
    pub addr: [u8; 16],
}
const _: () = assert!(size_of::<Addr6>() == 20);

/// Scope bytes of an address key.
#[inline(always)]
pub const fn addr_scope(hook: u32, field: u32) -> [u8; 4] {
    [hook as u8, field as u8, 0, 0]
}

/// Entries of [`PORTS_MAP`], a hash map of the ports filters name, per (hook, field, port):
/// a switch holds the old and the new plans' entries side by side, so a plan may use half.
pub const PORT_ENTRIES: u32 = 4 * 65536;

/// Key of a port of `hook`'s filters on `field` in [`PORTS_MAP`].
#[inline(always)]
pub const fn port_key(hook: u32, field: u32, port: u16) -> u32 {
    (hook << 17) | (field << 16) | port as u32
}

/// The connection a `socket_connect` call asks for, as matched and reported.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct NetInfo {
    /// `AF_*` of the socket; `AF_INET` for an IPv6 socket connecting to a v4-mapped address.
    pub family: u16,
    /// `SOCK_*` type of the socket.
    pub sock_type: u16,
    /// `IPPROTO_*` of the socket.
    pub protocol: u16,
    /// Ports in host order; `sport` is 0 for a socket not bound yet.
    pub sport: u16,
    pub dport: u16,
    pub _pad: [u16; 3],
    /// Addresses in network order (the first 4 bytes for `AF_INET`).
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}
const _: () = assert!(size_of::<NetInfo>() == 48);

/// A `struct sock *` argument as the generic reader keeps it ([`ARG_SOCK`]).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct SockRec {
    /// Family, type, protocol, local and peer address and port (ports in host order).
    pub net: NetInfo,
    pub mark: u32,
    pub priority: u32,
    /// `TCP_*` state (`skc_state`).
    pub state: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<SockRec>() == 64);

/// A `struct sk_buff *` argument as the generic reader keeps it ([`ARG_SKB`]): the IPv4 or
/// IPv6 header's family, addresses and protocol, and the TCP/UDP ports (0 otherwise).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct SkbRec {
    pub net: NetInfo,
    pub len: u32,
    pub hash: u32,
    pub mark: u32,
    pub priority: u32,
}
const _: () = assert!(size_of::<SkbRec>() == 64);

// Numeric operators of [`NumFilter::op`].
pub const NUM_OP_EQUAL: u32 = 1;
pub const NUM_OP_NOT_EQUAL: u32 = 2;
pub const NUM_OP_GT: u32 = 3;
pub const NUM_OP_LT: u32 = 4;
/// Matches when `arg & value != 0` for any value.
pub const NUM_OP_MASK: u32 = 5;
/// Values are inclusive `[min, max]` pairs.
pub const NUM_OP_IN_RANGE: u32 = 6;
pub const NUM_OP_NOT_IN_RANGE: u32 = 7;
/// Matches when `arg & value == 0` for every value (`matchCapabilities` `NotIn`).
pub const NUM_OP_NOT_MASK: u32 = 8;
/// Values in a numeric filter (4 plain values or 4 ranges).
pub const NUM_FILTER_VALUES: usize = 8;
/// [`NumFilter::flags`]: compare as signed 64-bit integers.
pub const NUM_SIGNED: u32 = 1;
/// `InMap`: matches when the argument is a member of the filter's set, the entries of
/// [`NUM_SET_MAP`] keyed by the filter's [`num_filt_index`] (`values` unused).
pub const NUM_OP_IN_SET: u32 = 9;
/// `NotInMap`: matches when the argument is no member of the filter's set.
pub const NUM_OP_NOT_IN_SET: u32 = 10;

/// Key of [`NUM_SET_MAP`]: one member of the set of an `InMap`/`NotInMap` filter. Keyed by
/// the filter's place in its bank, so a new plan's sets are written beside the live ones.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct NumSetKey {
    /// [`num_filt_index`] of the filter.
    pub filter: u32,
    pub _pad: u32,
    /// The member, as [`NumFilter::operand`] makes an argument (cut to the filter's width,
    /// then sign- or zero-extended).
    pub value: u64,
}
const _: () = assert!(size_of::<NumSetKey>() == 16);

/// One numeric `matchArgs` filter, at [`num_filt_index`] of [`NUM_FILT_MAP`].
/// Argument values are sign- or zero-extended to 64 bits by the compiler's choice of `width`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct NumFilter {
    /// Selector slot this filter belongs to.
    pub selector: u32,
    /// Hook argument index.
    pub arg: u32,
    /// `NUM_OP_*`.
    pub op: u32,
    /// Number of used entries in `values` (pairs count twice for ranges).
    pub nvalues: u32,
    /// `NUM_SIGNED`.
    pub flags: u32,
    /// Width of the argument in bytes (1, 2, 4 or 8); the value is truncated to it first.
    pub width: u32,
    pub values: [u64; NUM_FILTER_VALUES],
}
const _: () = assert!(size_of::<NumFilter>() == 24 + 8 * NUM_FILTER_VALUES);

/// Index in [`HOOK_CFG_MAP`] of the plan of `hook` in `bank` (0 or 1).
///
/// The map holds two banks of plans; [`PLAN_BANK_MAP`] says which one is live. User space
/// writes a new set of plans into the other bank, flips the bank with one 4-byte write, and
/// waits for every running program to finish ([`SYNC_MAP`]) before it touches the old bank
/// again. So a program that looked up its plan reads one consistent plan to its end, while
/// an array map would otherwise be rewritten in place under it.
#[inline(always)]
pub const fn hook_cfg_index(bank: u32, hook: u32) -> u32 {
    (bank & 1) * NUM_HOOKS + hook
}

/// Index in [`NUM_FILT_MAP`] of filter `i` of `hook` in `bank` (0 or 1).
#[inline(always)]
pub const fn num_filt_index(hook: u32, bank: u32, i: u32) -> u32 {
    ((hook * 2 + (bank & 1)) * MAX_NUM_FILTERS) + i
}

// Actions of [`SelectorAction::flags`].
/// Emit an event.
pub const ACT_POST: u32 = 1 << 0;
/// Send SIGKILL to the process and deny the operation with `-EPERM`.
pub const ACT_SIGKILL: u32 = 1 << 1;
/// Deny the operation with `error`.
pub const ACT_OVERRIDE: u32 = 1 << 2;
/// Send `signal` to the process.
pub const ACT_SIGNAL: u32 = 1 << 3;
/// `TrackSock`: the `struct sock *` at position [`SelectorAction::sock_pos`] is owned by the
/// current process from now on ([`SockOwner`]): events of other tasks on it name that process.
pub const ACT_TRACK_SOCK: u32 = 1 << 4;
/// `UntrackSock`: forget the owner of the socket at [`SelectorAction::sock_pos`].
pub const ACT_UNTRACK_SOCK: u32 = 1 << 5;
/// `Set` (USDT probes): write [`SelectorAction::set_value`] into the probe's argument
/// [`SelectorAction::set_pos`], in the process's memory.
pub const ACT_SET: u32 = 1 << 6;
/// `NotifyEnforcer`: the selector's `Override` (and `Signal`) came from a `NotifyEnforcer`
/// action; the kernel does as for those, the agent reports the action as Tetragon does.
pub const ACT_NOTIFY_ENFORCER: u32 = 1 << 7;
/// Policy in monitor mode: enforcement actions are counted, not performed.
pub const ACT_MONITOR: u32 = 1 << 8;
/// Enforcement actions (skipped, and counted, in monitor mode).
pub const ACT_ENFORCING: u32 = ACT_SIGKILL | ACT_OVERRIDE | ACT_SIGNAL | ACT_SET;

/// What a selector does when it matches, at `hook * MAX_SELECTORS + slot` of [`SEL_ACT_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct SelectorAction {
    /// `ACT_*`.
    pub flags: u32,
    /// Errno for `Override` (negative, within `[-4095, 0]`).
    pub error: i32,
    /// Signal number for `Signal`.
    pub signal: u32,
    /// Agent-assigned id of the policy this selector belongs to.
    pub policy_id: u32,
    /// Argument position of the socket of [`ACT_TRACK_SOCK`]/[`ACT_UNTRACK_SOCK`].
    pub sock_pos: u32,
    /// The probe argument [`ACT_SET`] writes.
    pub set_pos: u32,
    /// What [`ACT_SET`] writes (the argument's width of it).
    pub set_value: u64,
}
const _: () = assert!(size_of::<SelectorAction>() == 32);

/// Value of [`SOCK_OWNERS_MAP`] (keyed by the `struct sock *`): the process that tracked it.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct SockOwner {
    pub tgid: u32,
    pub pid: u32,
}

// ---------------------------------------------------------------------------------------------
// Processes

/// Bytes of `argv` an exec event carries (NUL-separated, as in `/proc/PID/cmdline`).
pub const ARGS_LEN: usize = 1024;

/// A process as tracked in [`PROCS_MAP`] (keyed by tgid).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ProcInfo {
    pub ppid: u32,
    pub flags: u32,
    /// Boot-time nanoseconds of the exec that started the current image.
    pub ktime: u64,
    /// Tgids of the process, its parent, grandparent, ... (0 past the known end).
    pub lineage: [u32; LINEAGE_LEN],
    /// The same processes' pids in their own pid namespaces.
    pub ns_lineage: [u32; LINEAGE_LEN],
    /// Per hook, the `followChildren` selectors an ancestor (or this process) matched at
    /// exec: inherited at fork, kept across exec.
    pub follow: [u64; NUM_HOOKS as usize],
    /// Path of the executable (the interpreter, for scripts).
    pub exe: PathRec,
}
const _: () = assert!(
    size_of::<ProcInfo>() == 16 + 8 * LINEAGE_LEN + 8 * NUM_HOOKS as usize + size_of::<PathRec>()
);

/// [`ProcInfo::flags`]: entry written by the agent's `/proc` scan at start-up.
pub const PROC_FROM_PROCFS: u32 = 1 << 0;

// ---------------------------------------------------------------------------------------------
// Events (one ring buffer: [`EVENTS_MAP`])

pub const EVENT_EXEC: u32 = 1;
pub const EVENT_EXIT: u32 = 2;
pub const EVENT_HOOK: u32 = 3;
pub const EVENT_FORK: u32 = 4;

/// First field of every ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct EventHeader {
    /// `EVENT_*`.
    pub kind: u32,
    /// CPU the event was produced on.
    pub cpu: u32,
    /// `bpf_ktime_get_boot_ns()` when it happened.
    pub ktime: u64,
    /// Thread id and thread-group id of the task.
    pub pid: u32,
    pub tgid: u32,
    /// `bpf_get_current_cgroup_id()`: the cgroup v2 id (the inode number of the cgroup's
    /// directory in cgroupfs) of the task that produced the record. User space maps it to the
    /// Kubernetes pod and container. For a fork it is the parent's, which the child inherits
    /// unless it was cloned into another cgroup (`CLONE_INTO_CGROUP`); 0 when unknown.
    pub cgroup_id: u64,
}
const _: () = assert!(size_of::<EventHeader>() == 32);

/// A successful `execve`, emitted at `sched_process_exec`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExecEvent {
    pub header: EventHeader,
    pub ppid: u32,
    pub uid: u32,
    /// Bytes used in `args` (all of argv, NUL-separated, possibly cut at `ARGS_LEN`).
    pub args_len: u32,
    /// Full length of argv in user memory.
    pub args_total: u32,
    pub exe: PathRec,
    pub args: [u8; ARGS_LEN],
}
const _: () = assert!(
    size_of::<ExecEvent>() == size_of::<EventHeader>() + 16 + size_of::<PathRec>() + ARGS_LEN
);

/// A process (thread-group leader) exited, emitted at `sched_process_exit`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct ExitEvent {
    pub header: EventHeader,
    /// `task->exit_code`: `status << 8 | signal`.
    pub exit_code: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<ExitEvent>() == size_of::<EventHeader>() + 8);

/// A new process (not a thread) was forked; `header` describes the child. Lets user space
/// attribute events of a child that never execs to the parent's binary.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct ForkEvent {
    pub header: EventHeader,
    /// Thread-group id of the parent.
    pub ppid: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<ForkEvent>() == size_of::<EventHeader>() + 8);

/// [`HookEvent::flags`]: the call was observed by the kprobe on the hook's `security_*`
/// function (BPF LSM inactive), not by the LSM program: nothing was denied.
pub const HOOK_FLAG_KPROBE: u32 = 1 << 0;
/// [`HookEvent::flags`]: a kprobe sent SIGKILL after the fact (`--fallback-sigkill`, or a
/// `Sigkill` of a policy on a kprobe or tracepoint target).
pub const HOOK_FLAG_KILL_SENT: u32 = 1 << 1;
/// [`HookEvent::flags`]: the call was observed by the generic kprobe, kretprobe or
/// tracepoint program of a policy's own target (not an LSM hook): nothing was denied.
pub const HOOK_FLAG_PROBE: u32 = 1 << 2;
/// [`HookEvent::flags`]: seen at the function's return; [`HookEvent::retarg`] is its
/// return value.
pub const HOOK_FLAG_RETURN: u32 = 1 << 3;
/// [`HookEvent::flags`]: a `Set` selector fired at a USDT site; the program writes the
/// argument once the event is posted.
pub const HOOK_FLAG_SET: u32 = 1 << 4;

/// Selectors fired at an LSM hook: one record per hook call, however many policies fired.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct HookEvent {
    pub header: EventHeader,
    /// `HOOK_*`.
    pub hook: u32,
    /// Value the hook returned (0 or a negative errno; always 0 from a kprobe).
    pub retval: i32,
    /// `HOOK_FLAG_*`: which entry point saw the call and what it could do about it.
    pub flags: u32,
    /// The tgid of the process that tracked (`TrackSock`) a socket argument of the call, 0
    /// for none: the event is that process's, whichever task the kernel ran the call in.
    pub owner: u32,
    /// At a uprobe, which of its hook's points ran (the high half of the attachment's
    /// cookie); 0 elsewhere.
    pub point: u32,
    pub _pad: u32,
    /// Selector slots that fired (first match of each group).
    pub fired: u64,
    /// The fired slots that post an event: user space emits one Tetragon event for each.
    pub posted: u64,
    /// Raw hook arguments (pointers are not meaningful to user space).
    pub args: [u64; MAX_ARGS],
    /// The return value, with [`HOOK_FLAG_RETURN`].
    pub retarg: u64,
    /// The connection, at `socket_connect` (zero elsewhere).
    pub net: NetInfo,
    /// Per argument position, its string, path or file (`len` and `flags` 0 for an argument
    /// that is not one, or was not read). Strings and paths up to `2 * STR_LEN` bytes are
    /// kept whole, longer ones as head and tail ([`PathRec`]).
    pub strs: [PathRec; MAX_ARGS],
    /// The hook's `data` values ([`ATTR_DATA_BASE`]), 0 where it has none.
    pub data: [u64; NUM_DATA],
}
const _: () = assert!(
    size_of::<HookEvent>()
        == size_of::<EventHeader>()
            + 40
            + 8 * MAX_ARGS
            + 8
            + size_of::<NetInfo>()
            + MAX_ARGS * size_of::<PathRec>()
            + 8 * NUM_DATA
);

// ---------------------------------------------------------------------------------------------
// Counters

/// Index in [`STATS_MAP`] (per-CPU `u64` counters).
pub const STAT_RING_LOST: u32 = 0;
/// Paths that could not be resolved at all (treated fail-closed).
pub const STAT_PATH_UNRESOLVED: u32 = 1;
/// Paths that needed the dentry walk (file opened before the agent, or cache eviction).
pub const STAT_PATH_WALKED: u32 = 2;
/// Selector matches, all hooks.
pub const STAT_MATCHES: u32 = 3;
/// Operations denied (Sigkill or Override).
pub const STAT_DENIED: u32 = 4;
/// `bpf_d_path` failed; the dentry walk took over (and may have failed too).
pub const STAT_DPATH_FAILED: u32 = 5;
/// Of [`STAT_PATH_UNRESOLVED`]: the dentry walk gave up (a NULL or unreadable dentry,
/// deeper than [`MAX_WALK_DEPTH`], longer than [`PATH_BUF_LEN`]).
pub const STAT_WALK_FAILED: u32 = 6;
/// Overlayfs' own accesses of a layer's file (its backing file, 6.6+) that `file_open` and
/// `file_permission` passed at their start, on the `FMODE_BACKING` mark and the mount test.
/// In a container every open and read makes one besides its own check; none on a kernel
/// where the mark is unknown (`KernelConfig::fmode_backing` 0), which takes the longer way.
pub const STAT_LAYER_PASSED: u32 = 7;
pub const NUM_STATS: u32 = 8;

/// How often each selector's actions ran, per CPU, at `hook * MAX_SELECTORS + slot` of
/// [`COUNTERS_MAP`]; indexed by `CNT_*` (Tetragon's `TracingPolicyActionCounters`).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct ActionCounters {
    pub c: [u64; NUM_COUNTERS],
}
pub const NUM_COUNTERS: usize = 8;
pub const CNT_POST: usize = 0;
pub const CNT_NOPOST: usize = 1;
/// Sigkill or Signal sent.
pub const CNT_SIGNAL: usize = 2;
pub const CNT_OVERRIDE: usize = 3;
/// Monitor mode: a signal that would have been sent.
pub const CNT_MONITOR_SIGNAL: usize = 4;
pub const CNT_MONITOR_OVERRIDE: usize = 5;

// ---------------------------------------------------------------------------------------------
// Load-time kernel configuration

/// Offsets of kernel struct fields, read from the running kernel's BTF by the agent and
/// written into the program's read-only data before loading. The verifier sees them as
/// constants, so pointer arithmetic on BTF pointers stays verifiable and the same object
/// runs on kernels with different struct layouts.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct KernelConfig {
    /// Thread-group id of the agent: its own operations are never matched.
    pub agent_tgid: u32,
    /// 1 once filled in by the agent (an object loaded without it refuses to run).
    pub valid: u32,
    pub file_f_path: u64,
    pub path_mnt: u64,
    pub path_dentry: u64,
    pub dentry_d_parent: u64,
    pub dentry_d_name: u64,
    pub qstr_name: u64,
    pub qstr_len: u64,
    pub vfsmount_mnt_root: u64,
    pub mount_mnt: u64,
    pub mount_mnt_parent: u64,
    pub mount_mnt_mountpoint: u64,
    pub binprm_file: u64,
    pub task_mm: u64,
    pub task_tgid: u64,
    pub task_pid: u64,
    pub task_real_parent: u64,
    pub task_exit_code: u64,
    pub mm_arg_start: u64,
    pub mm_arg_end: u64,
    pub task_nsproxy: u64,
    /// Offset of `real_cred` (the task's own, objective credentials).
    pub task_cred: u64,
    pub task_thread_pid: u64,
    pub pid_level: u64,
    pub pid_numbers: u64,
    pub upid_size: u64,
    pub upid_nr: u64,
    pub upid_ns: u64,
    /// Per namespace type: offset of the namespace pointer in `struct nsproxy` (in
    /// `struct cred` for the user namespace; unused for the pid namespace, which comes from
    /// `task->thread_pid`).
    pub ns_member: [u64; NUM_NS_TYPES as usize],
    /// Per namespace type: offset of `ns.inum` in that namespace's struct.
    pub ns_inum: [u64; NUM_NS_TYPES as usize],
    /// Offsets of `cap_effective`, `cap_inheritable`, `cap_permitted` in `struct cred`.
    pub cred_caps: [u64; NUM_CAP_SETS as usize],
    /// `struct socket`: `sk`, `type`; `struct sock`: `__sk_common.skc_family`, `skc_num`,
    /// `skc_rcv_saddr`, `skc_v6_rcv_saddr`, `sk_protocol`.
    pub socket_sk: u64,
    pub socket_type: u64,
    pub sock_family: u64,
    pub sock_num: u64,
    pub sock_rcv_saddr: u64,
    pub sock_v6_rcv_saddr: u64,
    pub sock_protocol: u64,
    /// Namespace types this kernel has (bit per type; e.g. no time namespaces before 5.6).
    pub ns_present: u32,
    /// 1: the kprobe entry points (BPF LSM inactive) run `Sigkill` actions after the fact
    /// with `bpf_send_signal`; 0: they only report them.
    pub fallback_sigkill: u32,
    /// File descriptors (`ARG_FD`): `task_struct.files`, `files_struct.fdt`,
    /// `fdtable.fd`, `fdtable.max_fds`.
    pub task_files: u64,
    pub files_fdt: u64,
    pub fdt_fd: u64,
    pub fdt_max_fds: u64,
    /// Offsets in `struct pt_regs` of a syscall's six argument registers, in order (the
    /// syscall ABI of the node's architecture: di, si, dx, r10, r8, r9 on x86_64).
    pub syscall_regs: [u64; 6],
    /// `struct cred`: the ids in [`CredRec::ids`]' order, and `securebits`.
    pub cred_ids: [u64; 8],
    pub cred_securebits: u64,
    /// `struct user_namespace`: `level`, `owner`, `group`.
    pub userns_level: u64,
    pub userns_owner: u64,
    pub userns_group: u64,
    /// `struct sock` (`ARG_SOCK`): `sk_type`, `skc_dport`, `skc_daddr`, `skc_v6_daddr`,
    /// `skc_state`, `sk_mark`, `sk_priority`.
    pub sock_type: u64,
    pub sock_dport: u64,
    pub sock_daddr: u64,
    pub sock_v6_daddr: u64,
    pub sock_state: u64,
    pub sock_mark: u64,
    pub sock_priority: u64,
    /// `struct sk_buff` (`ARG_SKB`): `head`, `network_header`, `transport_header`, `len`,
    /// `hash`, `mark`, `priority`.
    pub skb_head: u64,
    pub skb_network_header: u64,
    pub skb_transport_header: u64,
    pub skb_len: u64,
    pub skb_hash: u64,
    pub skb_mark: u64,
    pub skb_priority: u64,
    /// `struct module` (`ARG_MODULE`): `name`, `taints`, `sig_ok` ([`NO_FIELD`] without
    /// `CONFIG_MODULE_SIG`).
    pub module_name: u64,
    pub module_taints: u64,
    pub module_sig_ok: u64,
    /// `struct bpf_map` (`ARG_BPF_MAP`): `map_type`, `key_size`, `value_size`,
    /// `max_entries`, `name`.
    pub map_fields: [u64; 5],
    /// `struct bpf_prog` (`ARG_BPF_PROG`): `type`, `len`, `aux`; `struct bpf_prog_aux`:
    /// `name`.
    pub prog_fields: [u64; 4],
    /// `struct perf_event`: `attr` (`ARG_PERF_EVENT`).
    pub perf_event_attr: u64,
    /// `struct kiocb`: `ki_filp` (`ARG_KIOCB`).
    pub kiocb_filp: u64,
    /// `struct iov_iter` (`ARG_IOV_ITER`): `iter_type`, `iov_offset`, `count`, and the union
    /// of its `ubuf`, `iov`/`__iov` and `kvec` pointers.
    pub iov_fields: [u64; 4],
    /// This kernel's `ITER_UBUF`, `ITER_IOVEC`, `ITER_KVEC` (`enum iter_type` changed its
    /// order across versions); [`NO_FIELD`] for one it does not have.
    pub iter_types: [u64; 3],
    /// The TCP port of the agent's gRPC API (0: none): a connect to it on a loopback
    /// address is never denied, so that no egress policy can lock the node's own clients
    /// (`lsmctl`, `tetra`, the readiness probe) out of the agent.
    pub api_port: u64,
    /// Overlayfs' own opens of a layer's file (see `is_layer_file` in the BPF object):
    /// `file.f_inode`, `dentry.d_inode`, `mount.mnt_ns`, `vfsmount.mnt_flags`.
    pub file_f_inode: u64,
    pub dentry_d_inode: u64,
    pub mount_mnt_ns: u64,
    pub vfsmount_mnt_flags: u64,
    /// The agent's start as `/proc/PID/stat` gives it (a clock tick since boot), as the
    /// range of boot-time nanoseconds `[agent_start_ns, agent_start_end_ns)` that tick covers:
    /// a task of `agent_tgid` is the agent only if its group leader's `start_boottime` is in
    /// it, so that a process given the pid of an agent that is gone is not exempt from that
    /// agent's pinned programs. `task_struct.group_leader`, `task_struct.start_boottime`.
    pub agent_start_ns: u64,
    pub agent_start_end_ns: u64,
    pub task_group_leader: u64,
    pub task_start_boottime: u64,
    /// `struct msghdr`: `msg_iter` (`ARG_DNS`).
    pub msghdr_msg_iter: u64,
    /// The process's root, where the dentry walk stops as `d_path` does (a `chroot`):
    /// `task_struct.fs`, `fs_struct.root` (a `struct path`).
    pub task_fs: u64,
    pub fs_struct_root: u64,
    /// `fs_struct.seq`, whose count (its first `u32`) changes with every change of the
    /// process's root or working directory: a root changed while `file_open` resolved a path
    /// keeps no [`DentryVerdict`].
    pub fs_struct_seq: u64,
    /// Addresses of the kernel's `rename_lock` and `mount_lock` (`seqlock_t`, whose sequence
    /// count is their first `u32`), from `/proc/kallsyms`; 0 when it hides them: then no
    /// [`DentryVerdict`] is kept.
    pub rename_lock: u64,
    pub mount_lock: u64,
    /// `file.f_mode`, and this kernel's `FMODE_BACKING` (0 when it has none or the agent does
    /// not know its value): the mark of overlayfs' backing files of a layer (6.6+), tested
    /// before anything else at `file_open` and `file_permission`. Only a hint: the layer test
    /// decides.
    pub file_f_mode: u64,
    pub fmode_backing: u64,
}
const _: () = assert!(
    size_of::<KernelConfig>()
        == 8 + 48 * 8 + 8 * (2 * NUM_NS_TYPES as usize + 3) + 8 + 4 * 8 + 6 * 8 + 50 * 8
);

/// The canary (see `CANARY_MAP`): every LSM program denies the agent's thread `tid` at hook
/// `hook` with -EPERM before anything else, and counts it in `CANARY_HITS_MAP`. `tid` 0 arms
/// nothing.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct CanaryArm {
    pub tid: u32,
    pub hook: u32,
}
const _: () = assert!(size_of::<CanaryArm>() == 8);

/// Version of this ABI: bump it whenever a map's key or value layout, a map's name or the
/// meaning of a counter index changes. Pinned enforcement ([`EVENTS_MAP`] and [`STATS_MAP`]
/// of an earlier agent) is only read with the layouts of the same version.
pub const ABI_VERSION: u32 = 1;

// ---------------------------------------------------------------------------------------------
// Names (the kernel truncates map names to 15 bytes; these fit)

pub const EVENTS_MAP: &str = "EVENTS";
pub const STATS_MAP: &str = "STATS";
/// One `u32` at index 0: the agent that took over from this object's agent (exempt as
/// `KernelConfig::agent_tgid` is). An agent writes it into the pinned maps of agents of any
/// ABI version, so its name, key and value never change.
pub const AGENTS_MAP: &str = "AGENTS";
/// One [`CanaryArm`]: which agent thread is denied at which hook (the canary).
pub const CANARY_MAP: &str = "CANARY";
/// Per hook (`u64`): how often the canary was denied there.
pub const CANARY_HITS_MAP: &str = "CANARY_HITS";
pub const HOOK_CFG_MAP: &str = "HOOK_CFG";
/// One `u32`: the live bank of [`HOOK_CFG_MAP`] (see [`hook_cfg_index`]).
pub const PLAN_BANK_MAP: &str = "PLAN_BANK";
/// One `u64` the loader increments when it flips [`PLAN_BANK_MAP`] and when an apply ends:
/// a [`FileVerdict`] computed under another value is computed again.
pub const PLAN_GEN_MAP: &str = "PLAN_GEN";
/// An open file (`struct file *`) → the string masks its path last got ([`FileVerdict`]).
/// Emptied for a file when it is freed, as `FILES` is.
pub const FILE_VERDICTS_MAP: &str = "FILE_VERDICTS";
/// A dentry (`struct dentry *`) → the passing `file_permission` verdict an open of it found
/// ([`DentryVerdict`]). Emptied for a dentry when it is given an inode (the `d_instantiate`
/// program), so that a dentry freed and allocated again for another name never matches.
pub const DENTRY_VERDICTS_MAP: &str = "DENTRY_VERDICTS";
/// An array of maps used by user space only: updating it makes the kernel wait for every
/// running non-sleepable BPF program to finish (`synchronize_rcu` in `maybe_wait_bpf_programs`
/// of `kernel/bpf/syscall.c`), the barrier between flipping [`PLAN_BANK_MAP`] and removing
/// what only the old plans used.
pub const SYNC_MAP: &str = "SYNC";
pub const SEL_ACT_MAP: &str = "SEL_ACT";
pub const NUM_FILT_MAP: &str = "NUM_FILT";
pub const NUM_SET_MAP: &str = "NUM_SET";
pub const STR_EQ_MAP: &str = "STR_EQ";
pub const STR_PREFIX_MAP: &str = "STR_PREFIX";
pub const STR_POSTFIX_MAP: &str = "STR_POSTFIX";
pub const PROCS_MAP: &str = "PROCS";
pub const FILES_MAP: &str = "FILES";
pub const COUNTERS_MAP: &str = "COUNTERS";
pub const PIDS_MAP: &str = "PIDS";
pub const ADDR4_MAP: &str = "ADDR4";
pub const ADDR6_MAP: &str = "ADDR6";
pub const PORTS_MAP: &str = "PORTS";
pub const CGROUPS_MAP: &str = "CGROUPS";
pub const PROBE_IDS_MAP: &str = "PROBE_IDS";
/// Copy of the generic fentry program → the [`ProbeHooks`] of the function it is attached
/// to: `generic_fentry_<i>` at key `i`, `generic_fentry_syscall_<i>` at
/// [`FENTRY_SLOTS`]` + i`.
pub const FENTRY_IDS_MAP: &str = "FENTRY_IDS";
/// Copies of each flavor of the generic fentry program: the first functions observed are
/// entered through their BPF trampoline, the others by kprobe.
pub const FENTRY_SLOTS: u32 = 6;
/// Slot of a `generic_tracepoint_<slot>` program → the hook id of the tracepoint it is
/// attached to.
pub const TP_IDS_MAP: &str = "TP_IDS";
/// Copies of the generic tracepoint program: tracepoints observed at once.
pub const TP_SLOTS: u32 = 4;
/// Copies of the generic raw tracepoint program (`generic_raw_tp_<i>`): raw tracepoints
/// observed at once. Copy `i` reads its hook id at key [`TP_SLOTS`]` + i` of [`TP_IDS_MAP`].
pub const RAW_TP_SLOTS: u32 = 4;
pub const RET_STASH_MAP: &str = "RET_STASH";
/// An attachment's cookie (hook id | site index << 32) → how its arguments are computed
/// ([`UsdtSpec`]).
pub const USDT_SPECS_MAP: &str = "USDT_SPECS";
/// Sites of USDT probes attached at once.
pub const USDT_SPECS_ENTRIES: u32 = 4096;
/// Entries of [`PROBE_IDS_MAP`]: addresses of probed functions (a name may have several).
pub const PROBE_IDS_ENTRIES: u32 = 1024;
/// Threads inside a kretprobe'd call at once.
pub const RET_STASH_ENTRIES: u32 = 16384;
pub const SOCK_OWNERS_MAP: &str = "SOCK_OWNERS";
/// Sockets tracked at once (least recently used forgotten first, so missed frees cannot fill
/// it).
pub const SOCK_OWNERS_ENTRIES: u32 = 32768;
/// Name of the [`KernelConfig`] global in the object's `.rodata`.
pub const KCONFIG_GLOBAL: &str = "KCONFIG";

/// Default capacities (user space may raise them at load time).
pub const STR_EQ_ENTRIES: u32 = 65536;
/// Members of all `InMap`/`NotInMap` sets, in both banks.
pub const NUM_SET_ENTRIES: u32 = 65536;
pub const STR_LPM_ENTRIES: u32 = 65536;
pub const PROCS_ENTRIES: u32 = 32768;
pub const PIDS_ENTRIES: u32 = 16384;
pub const ADDR_ENTRIES: u32 = 65536;
pub const FILES_ENTRIES: u32 = 32768;
/// Dentries whose passing verdict is kept ([`DENTRY_VERDICTS_MAP`], least recently used
/// forgotten first).
pub const DENTRY_VERDICTS_ENTRIES: u32 = 32768;
/// Pod and container cgroups of one node (a few hundred pods with a few containers each, and
/// the kubelet's parents of pod cgroups).
pub const CGROUPS_ENTRIES: u32 = 16384;
pub const EVENTS_BYTES: u32 = 1 << 22;
/// The part of the ring buffer only enforcement events (a denial, a kill, a signal) may
/// use: an observation event is dropped (and counted lost) rather than written past
/// `EVENTS_BYTES - EVENTS_ENFORCEMENT_RESERVE` of unread data, so that a flood of
/// observation events cannot crowd out the record of a denial.
pub const EVENTS_ENFORCEMENT_RESERVE: u32 = EVENTS_BYTES / 4;

#[cfg(feature = "user")]
mod user {
    use super::*;

    macro_rules! pod {
        ($($t:ty),* $(,)?) => {$(
            // SAFETY: `$t` is #[repr(C)] and Copy, holds only integers and byte arrays, and
            // has no implicit padding (its size is asserted above), so every bit pattern is
            // a valid value and every byte is initialised.
            unsafe impl aya::Pod for $t {}
        )*};
    }
    pod!(
        UsdtArg,
        UsdtSpec,
        CanaryArm,
        PathRec,
        StrKey,
        LpmStr,
        SelMasks,
        HookConfig,
        NumFilter,
        SelectorAction,
        ProcInfo,
        KernelConfig,
        ActionCounters,
        PidKey,
        PidMasks,
        Addr4,
        Addr6,
        NetInfo,
        CgroupScope,
        ArgDesc,
        ProbeHooks,
        StashKey,
        NumSetKey,
        SockRec,
        SkbRec,
    );
}

impl PathRec {
    pub const fn empty() -> Self {
        Self {
            len: 0,
            flags: 0,
            head: [0; STR_LEN],
            tail_rev: [0; STR_LEN],
        }
    }
}

impl HookConfig {
    pub const fn empty() -> Self {
        Self {
            selectors: 0,
            enforcing: 0,
            group_starts: 0,
            kill: 0,
            override_: 0,
            signal: 0,
            post: 0,
            sock_acts: 0,
            set_: 0,
            uses: [0; NUM_STR_CLASSES],
            pid_uses: [0; NUM_PID_CLASSES],
            follow: 0,
            addr_uses: [0; 4],
            port_uses: [0; 4],
            attrs: 0,
            num_filters: 0,
            num_bank: 0,
            net_arg: 0,
            scoped: 0,
            args: [ArgDesc {
                kind: ARG_SKIP,
                src: 0,
                width: 0,
                size: 0,
            }; MAX_ARGS],
            resolve: [ResolvePath::empty(); MAX_ARGS],
            tp_off: [0; MAX_ARGS],
            probe: 0,
            data: [ResolvePath::empty(); NUM_DATA],
            data_width: [0; NUM_DATA],
            open_paths: 0,
            _pad: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_and_pid_classes_are_distinct_and_in_range() {
        let mut seen = [false; NUM_STR_CLASSES];
        for subject in (0..MAX_ARGS as u32)
            .map(subject_arg)
            .chain([SUBJECT_BINARY])
        {
            for family in [FAMILY_EQUAL, FAMILY_PREFIX, FAMILY_POSTFIX] {
                for negated in [false, true] {
                    let c = str_class(subject, family, negated);
                    assert!(!seen[c], "class {c} twice");
                    seen[c] = true;
                }
            }
        }
        assert!(seen.iter().all(|&s| s));
        let mut seen = [false; NUM_PID_CLASSES];
        for kind in [PID_HOST, PID_NS] {
            for follow in [false, true] {
                for negated in [false, true] {
                    let c = pid_class(kind, follow, negated);
                    assert!(!seen[c], "class {c} twice");
                    seen[c] = true;
                }
            }
        }
        assert!(seen.iter().all(|&s| s));
    }

    #[test]
    fn net_classes_fill_the_four_address_and_port_slots() {
        assert_eq!(net_class(NET_DEST, false), 0);
        assert_eq!(net_class(NET_DEST, true), 1);
        assert_eq!(net_class(NET_SOURCE, false), 2);
        assert_eq!(net_class(NET_SOURCE, true), 3);
    }

    #[test]
    fn only_tcp_to_the_api_port_on_loopback_is_the_local_api() {
        let net = |family, daddr: &[u8], dport, protocol| {
            let mut n = NetInfo {
                family,
                dport,
                protocol,
                ..NetInfo::default()
            };
            n.daddr[..daddr.len()].copy_from_slice(daddr);
            n
        };
        let mut v6 = [0u8; 16];
        v6[15] = 1;
        let mut mapped = [0u8; 16];
        mapped[10..].copy_from_slice(&[0xff, 0xff, 127, 0, 0, 1]);
        for n in [
            net(AF_INET, &[127, 0, 0, 1], 54321, IPPROTO_TCP),
            net(AF_INET6, &v6, 54321, IPPROTO_TCP),
            net(AF_INET6, &mapped, 54321, IPPROTO_TCP),
        ] {
            assert!(is_local_api(&n, 54321), "{n:?}");
        }
        let mut other6 = v6;
        other6[0] = 0xfd;
        for n in [
            net(AF_INET, &[127, 0, 0, 1], 54322, IPPROTO_TCP),
            net(AF_INET, &[10, 0, 0, 1], 54321, IPPROTO_TCP),
            net(AF_INET, &[127, 0, 0, 2], 54321, IPPROTO_TCP),
            net(AF_INET, &[127, 0, 0, 1], 54321, IPPROTO_UDP),
            net(AF_INET6, &other6, 54321, IPPROTO_TCP),
        ] {
            assert!(!is_local_api(&n, 54321), "{n:?}");
        }
        assert!(!is_local_api(
            &net(AF_INET, &[127, 0, 0, 1], 0, IPPROTO_TCP),
            0
        ));
    }

    #[test]
    fn a_module_value_keeps_its_taints_apart_from_its_signature_check() {
        let v = module_value(1 << 12 | 1, Some(true));
        assert_eq!(v & MODULE_TAINTS, 1 << 12 | 1);
        assert_eq!(
            v & (MODULE_SIG_KNOWN | MODULE_SIG_OK),
            MODULE_SIG_KNOWN | MODULE_SIG_OK
        );
        assert_eq!(module_value(0, Some(false)), MODULE_SIG_KNOWN);
        assert_eq!(module_value(u64::MAX, None), MODULE_TAINTS);
    }

    #[test]
    fn port_keys_of_hooks_and_fields_are_distinct() {
        assert_eq!(port_key(0, NET_DEST, 0), 0);
        assert_eq!(port_key(0, NET_DEST, u16::MAX), 65535);
        assert_eq!(port_key(0, NET_SOURCE, 0), 65536);
        assert_eq!(port_key(1, NET_DEST, 0), 131072);
        assert_eq!(
            port_key(NUM_HOOKS - 1, NET_SOURCE, u16::MAX),
            (NUM_HOOKS << 17) - 1
        );
    }

    #[test]
    fn num_filt_index_keeps_hooks_and_banks_apart() {
        let last = num_filt_index(NUM_HOOKS - 1, 1, MAX_NUM_FILTERS - 1);
        assert_eq!(last, NUM_HOOKS * 2 * MAX_NUM_FILTERS - 1);
        assert_eq!(num_filt_index(0, 1, 0), MAX_NUM_FILTERS);
        assert_eq!(num_filt_index(1, 0, 0), 2 * MAX_NUM_FILTERS);
        // Only the low bit of the bank counts, so a stray value cannot leave the hook's range.
        assert_eq!(num_filt_index(0, 3, 0), num_filt_index(0, 1, 0));
    }

    #[test]
    fn scopes_put_hook_and_subject_or_field_first() {
        assert_eq!(str_scope(HOOK_BPRM_CHECK, SUBJECT_BINARY), [5, 5, 0, 0]);
        assert_eq!(str_scope(HOOK_PATH_SYMLINK, subject_arg(2)), [7, 2, 0, 0]);
        assert_eq!(addr_scope(HOOK_SOCKET_CONNECT, NET_SOURCE), [6, 1, 0, 0]);
    }
}
