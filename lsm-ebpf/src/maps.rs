//! Every map of the probe. Names are the statics' names and match the `*_MAP` constants of
//! `lsm-shared`, which is how user space finds them.
use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    btf_maps,
    macros::{btf_map, map},
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use lsm_shared::*;

use crate::scratch::Scratch;

/// All events, kernel → user, in submission order.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

/// Per-CPU counters, indexed by `STAT_*`.
#[map]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(NUM_STATS, 0);

/// Index 0: the thread-group id of the agent that took over from this object's agent (0 until
/// one does), exempt like `agent_tgid`. Its layout never changes (see `AGENTS_MAP`).
#[map]
pub static AGENTS: Array<u32> = Array::with_max_entries(1, 0);

/// Index 0: the agent's thread and the hook its next canary operation must be denied at.
#[map]
pub static CANARY: Array<CanaryArm> = Array::with_max_entries(1, 0);

/// Per hook: how often the canary was denied there.
#[map]
pub static CANARY_HITS: Array<u64> = Array::with_max_entries(NUM_HOOKS, 0);

/// Per-hook evaluation plans, two banks, at `hook_cfg_index(bank, hook)`; read them through
/// [`hook_cfg`].
#[map]
pub static HOOK_CFG: Array<HookConfig> = Array::with_max_entries(2 * NUM_HOOKS, 0);

/// The live bank of `HOOK_CFG` (index 0).
#[map]
pub static PLAN_BANK: Array<u32> = Array::with_max_entries(1, 0);

/// The plan generation (index 0): see `PLAN_GEN_MAP`.
#[map]
pub static PLAN_GEN: Array<u64> = Array::with_max_entries(1, 0);

/// The string masks each open file's path last got at a file hook (see `FILE_VERDICTS_MAP`).
#[map]
pub static FILE_VERDICTS: LruHashMap<u64, FileVerdict> =
    LruHashMap::with_max_entries(FILES_ENTRIES, 0);

/// Passing `file_permission` verdicts per dentry (see `DENTRY_VERDICTS_MAP`, `dentry.rs`).
#[map]
pub static DENTRY_VERDICTS: LruHashMap<u64, DentryVerdict> =
    LruHashMap::with_max_entries(DENTRY_VERDICTS_ENTRIES, 0);

/// Removes `key` from `map` if it is there. Most calls find nothing (a socket's or a pipe's
/// file, a dentry no open kept): a lookup takes no lock, where a delete takes the bucket's
/// lock with interrupts off even to find nothing. The callers run as the key's object is freed
/// (a file) or given its inode (a dentry): nothing can add its key between the two calls.
#[inline(always)]
pub fn remove_if_present<V>(map: &LruHashMap<u64, V>, key: u64) {
    // SAFETY: only whether an element exists is read, not the element.
    if unsafe { map.get(&key) }.is_some() {
        let _ = map.remove(&key);
    }
}

/// Never read here: user space updates it to wait for running programs (see `SYNC_MAP`).
#[btf_map]
pub static SYNC: btf_maps::ArrayOfMaps<btf_maps::Array<u32, 1>, 1> = btf_maps::ArrayOfMaps::new();

/// The live plan of `hook`. It stays unchanged while the program runs: user space writes
/// new plans into the other bank and waits for running programs before reusing this one.
#[inline(always)]
pub fn hook_cfg(hook: u32) -> Option<&'static HookConfig> {
    hook_cfg_at(hook).map(|(_, c)| c)
}

/// [`hook_cfg`] and its index in `HOOK_CFG`, for a reader that looks the same plan up again
/// (a `bpf_loop` step cannot hold the map value).
#[inline(always)]
pub fn hook_cfg_at(hook: u32) -> Option<(u32, &'static HookConfig)> {
    let bank = PLAN_BANK.get(0).copied().unwrap_or(0);
    let at = hook_cfg_index(bank, hook);
    HOOK_CFG.get(at).map(|c| (at, c))
}

/// Whether the live plan has any selector at `hook`: a program with work to do before it
/// evaluates (a path to find) skips that work when there is none, as between a policy's
/// removal and its program's detach, and always for the programs attached at start.
#[inline(always)]
pub fn hook_has_selectors(hook: u32) -> bool {
    hook_cfg(hook).is_some_and(|c| c.selectors != 0)
}

/// Whether `file_open` has a use for the path of the file being opened: selectors of its
/// own, `file_permission`'s verdict to keep, or a later hook that reads the path back from
/// the cache ([`HookConfig::open_paths`]).
#[inline(always)]
pub fn open_wants_path() -> bool {
    hook_cfg(HOOK_FILE_OPEN).is_some_and(|c| c.selectors != 0 || c.open_paths != 0)
        || hook_has_selectors(HOOK_FILE_PERMISSION)
}

/// What each selector slot does, at `hook * MAX_SELECTORS + slot`.
#[map]
pub static SEL_ACT: Array<SelectorAction> = Array::with_max_entries(NUM_HOOKS * MAX_SELECTORS, 0);

/// Numeric filters, two banks per hook, at `num_filt_index(hook, bank, i)`.
#[map]
pub static NUM_FILT: Array<NumFilter> = Array::with_max_entries(NUM_HOOKS * 2 * MAX_NUM_FILTERS, 0);

/// The members of the `InMap`/`NotInMap` numeric filters' sets (the value is unused).
#[map]
pub static NUM_SET: HashMap<NumSetKey, u8> =
    HashMap::with_max_entries(NUM_SET_ENTRIES, BPF_F_NO_PREALLOC);

/// `Equal`/`In` values (and their negations) of every hook and subject.
#[map]
pub static STR_EQ: HashMap<StrKey, SelMasks> =
    HashMap::with_max_entries(STR_EQ_ENTRIES, BPF_F_NO_PREALLOC);

/// `Prefix` values: longest-prefix match over the string.
#[map]
pub static STR_PREFIX: LpmTrie<LpmStr, SelMasks> =
    LpmTrie::with_max_entries(STR_LPM_ENTRIES, BPF_F_NO_PREALLOC);

/// `Postfix` values: longest-prefix match over the reversed string.
#[map]
pub static STR_POSTFIX: LpmTrie<LpmStr, SelMasks> =
    LpmTrie::with_max_entries(STR_LPM_ENTRIES, BPF_F_NO_PREALLOC);

/// Known processes by tgid: the executable a `matchBinaries` filter looks at.
#[map]
pub static PROCS: LruHashMap<u32, ProcInfo> = LruHashMap::with_max_entries(PROCS_ENTRIES, 0);

/// `matchPIDs` values of every hook, by (hook, kind, pid).
#[map]
pub static PIDS: HashMap<PidKey, PidMasks> =
    HashMap::with_max_entries(PIDS_ENTRIES, BPF_F_NO_PREALLOC);

/// IPv4 networks of address filters: longest-prefix match per (hook, field).
#[map]
pub static ADDR4: LpmTrie<Addr4, SelMasks> =
    LpmTrie::with_max_entries(ADDR_ENTRIES, BPF_F_NO_PREALLOC);

/// IPv6 networks of address filters.
#[map]
pub static ADDR6: LpmTrie<Addr6, SelMasks> =
    LpmTrie::with_max_entries(ADDR_ENTRIES, BPF_F_NO_PREALLOC);

/// Port filters of every hook, at `port_key(hook, field, port)`.
#[map]
pub static PORTS: HashMap<u32, SelMasks> =
    HashMap::with_max_entries(PORT_ENTRIES, BPF_F_NO_PREALLOC);

/// Resolved path of every open `struct file`, keyed by its address. Filled at `file_open`
/// (where `bpf_d_path` works), read at hooks where it does not, dropped at
/// `file_free_security`. An evicted entry is rebuilt by the dentry walk.
#[map]
pub static FILES: LruHashMap<u64, PathRec> = LruHashMap::with_max_entries(FILES_ENTRIES, 0);

/// Executable path seen at `bprm_check_security`, keyed by thread id, until
/// `sched_process_exec` confirms the exec.
#[map]
pub static EXEC_PEND: LruHashMap<u32, PathRec> = LruHashMap::with_max_entries(4096, 0);

/// Per-selector action counters (per CPU), at `hook * MAX_SELECTORS + slot`.
#[map]
pub static COUNTERS: PerCpuArray<ActionCounters> =
    PerCpuArray::with_max_entries(NUM_HOOKS * MAX_SELECTORS, 0);

/// Workload scoping: per pod or container cgroup id (and `CGROUP_HOST`), the scoped
/// selectors of each hook that apply to its processes.
#[map]
pub static CGROUPS: HashMap<u64, CgroupScope> =
    HashMap::with_max_entries(CGROUPS_ENTRIES, BPF_F_NO_PREALLOC);

/// One scratch area per CPU: buffers too large for the 512-byte BPF stack.
#[map]
pub static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// Probed function address (what `bpf_get_func_ip` returns) → the hook ids of its generic
/// kprobe and kretprobe. Written by the loader from `/proc/kallsyms`.
#[map]
pub static PROBE_IDS: HashMap<u64, ProbeHooks> =
    HashMap::with_max_entries(PROBE_IDS_ENTRIES, BPF_F_NO_PREALLOC);

/// Copy of the generic fentry program → the hooks of the function it is attached to.
/// Written by the loader with [`PROBE_IDS`].
#[map]
pub static FENTRY_IDS: Array<ProbeHooks> = Array::with_max_entries(2 * FENTRY_SLOTS, 0);

/// Slot of a generic tracepoint program → hook id. Written by the loader.
#[map]
pub static TP_IDS: HashMap<u32, u32> =
    HashMap::with_max_entries(PROBE_IDS_ENTRIES, BPF_F_NO_PREALLOC);

/// `struct sock *` → the process that tracked it (`TrackSock`), until `UntrackSock`.
#[map]
pub static SOCK_OWNERS: LruHashMap<u64, SockOwner> =
    LruHashMap::with_max_entries(SOCK_OWNERS_ENTRIES, 0);

/// How the arguments of each attached USDT site are computed, by attachment cookie.
/// Written by the loader from the file's notes.
#[map]
pub static USDT_SPECS: HashMap<u64, UsdtSpec> =
    HashMap::with_max_entries(USDT_SPECS_ENTRIES, BPF_F_NO_PREALLOC);

/// The raw arguments of a call whose kretprobe evaluates, from its entry to its return.
#[map]
pub static RET_STASH: LruHashMap<StashKey, [u64; MAX_ARGS]> =
    LruHashMap::with_max_entries(RET_STASH_ENTRIES, 0);
