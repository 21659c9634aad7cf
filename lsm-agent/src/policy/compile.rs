//! Validated policies → the exact content of the BPF maps (pure: no fds, no syscalls).
//!
//! The whole set of loaded policies compiles into one [`MapImage`]; applying an image is a
//! diff against the previous one (see `bpf::maps`). How the kernel side reads the maps is
//! described in `lsm-shared`'s crate documentation.

use std::collections::{BTreeMap, BTreeSet};

use lsm_shared::*;

use std::net::IpAddr;

use ipnet::IpNet;

use super::hooks;
use super::ir::{
    Action, AddrValue, ArgFilter, ArgSpec, CapSet, DATA_INDEX, FilterKind, HookOrigin, HostNs,
    NetField, NsValue, NumOp, Policy, PolicyMode, RETURN_INDEX, RateLimitScope, Selector, SockAttr,
    StrOp, Target, UserRequest,
};
use super::probes::{self, hook_label};
use super::workloads::{ScopedGroup, Workloads, cgroup_scopes, container_cgroups};

/// What compiling depends on besides the policies: facts about the node and the current
/// answers for `dns:` names. Kept out of the compiler so it stays pure.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompileEnv {
    pub host_ns: HostNs,
    /// Name → the addresses it resolves to now (a name missing here matches nothing yet).
    pub dns: BTreeMap<String, Vec<IpAddr>>,
    /// The node's pods and containers by cgroup, for policies scoped to some of them.
    pub workloads: Workloads,
}

/// Key of an address entry: hook id, `NET_*` field, the network's address bytes (4 or 16,
/// host bits zero) and its prefix length.
pub type AddrEntryKey = (u32, u32, Vec<u8>, u8);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CompileError {
    #[error(
        "policy {policy}: hook {hook} would need more than {MAX_SELECTORS} selectors across all loaded policies"
    )]
    TooManySelectors { policy: String, hook: String },
    #[error(
        "policy {policy}: hook {hook} would need more than {MAX_NUM_FILTERS} numeric filters (numeric matchArgs, matchNamespaces, matchCapabilities) across all loaded policies"
    )]
    TooManyNumFilters { policy: String, hook: String },
    #[error(
        "policy {policy}: more than {} kprobe, kretprobe and tracepoint targets across all loaded policies",
        NUM_HOOKS - FIRST_DYNAMIC_HOOK
    )]
    TooManyProbes { policy: String },
    #[error(
        "policy {policy}: {function} is probed with syscall: true by one loaded policy and syscall: false by another; a function is read one way"
    )]
    SyscallClash { policy: String, function: String },
    #[error(
        "policy {policy}: {hook} argument at position {index} is read with another type by another loaded policy"
    )]
    ArgClash {
        policy: String,
        hook: String,
        index: u32,
    },
    #[error(
        "policy {policy}: its network operators at {hook} match argument {index}, another loaded \
         policy's match argument {other}; lsm-agent matches one sock or skb argument per probe"
    )]
    NetArgClash {
        policy: String,
        hook: String,
        index: u32,
        other: u32,
    },
    #[error("policy {policy}: more than {max} {map} entries across all loaded policies")]
    MapFull {
        policy: String,
        map: &'static str,
        max: u32,
    },
}

/// Key of a string entry: hook id, subject (`SUBJECT_*`) and the stored bytes (reversed for
/// postfixes).
pub type StrEntryKey = (u32, u8, Vec<u8>);

/// Everything the kernel side needs to know about one selector slot, kept in user space to
/// turn hook events back into Tetragon events.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotInfo {
    pub policy_id: u32,
    pub policy_name: String,
    pub policy_namespace: Option<String>,
    /// Position of the hook entry in the policy (its selectors form one first-match group).
    pub group: usize,
    /// Where the hook runs: an LSM hook, or the probe that observes it.
    pub target: Target,
    pub origin: HookOrigin,
    /// Index of the hook in `spec.kprobes`/`spec.lsmhooks`/`spec.tracepoints`.
    pub hook_index: usize,
    /// Index of the selector in the hook (0 for the implicit selector of a hook without any).
    pub selector_index: usize,
    pub args: Vec<ArgSpec>,
    /// A kretprobe's `returnArg`.
    pub return_arg: Option<ArgSpec>,
    /// The hook's `data` entries (values in [`lsm_shared::HookEvent::data`]).
    pub data: Vec<ArgSpec>,
    pub message: Option<String>,
    pub tags: Vec<String>,
    pub flags: u32,
    /// `Post` with `rateLimit`: at most one event per this many milliseconds, per scope.
    pub rate_limit: Option<(u64, RateLimitScope)>,
    /// `GetUrl`/`DnsLookup`: what the agent does for each event the selector posts.
    pub request: Option<UserRequest>,
}

/// Records the resolve path of argument `pos` of hook `hid`: two loaded policies may read a
/// position through one path only (the kernel reads each position once).
fn add_resolve(
    img: &mut MapImage,
    hid: u32,
    pos: u32,
    req: Option<probes::ResolveReq>,
    policy: &Policy,
    target: &Target,
) -> Result<(), CompileError> {
    let Some(req) = req else {
        return Ok(());
    };
    match img.resolve.get(&(hid, pos)) {
        Some(r) if *r != req => Err(CompileError::ArgClash {
            policy: policy.name.clone(),
            hook: hook_label(target),
            index: pos,
        }),
        _ => {
            img.resolve.insert((hid, pos), req);
            Ok(())
        }
    }
}

/// The position in [`MapImage::resolve`] of a hook's `data[0]` (`data[d]` at `+ d`): past
/// the arguments'; the loader writes its walk into `HookConfig::data`.
pub const DATA_RESOLVE_POS: u32 = MAX_ARGS as u32;

/// The content of every policy map, for one set of loaded policies.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MapImage {
    /// Index: hook id. Hooks without selectors are absent (= empty config).
    pub hook_cfg: BTreeMap<u32, HookConfig>,
    /// Index: `hook * MAX_SELECTORS + slot`.
    pub sel_act: BTreeMap<u32, SelectorAction>,
    /// Index: `num_filt_index(hook, bank, i)`.
    pub num_filt: BTreeMap<u32, NumFilter>,
    /// The members of the `InMap`/`NotInMap` filters' sets (`filter` as `num_filt`'s index).
    pub num_set: BTreeSet<NumSetKey>,
    pub str_eq: BTreeMap<StrEntryKey, SelMasks>,
    pub str_prefix: BTreeMap<StrEntryKey, SelMasks>,
    pub str_postfix: BTreeMap<StrEntryKey, SelMasks>,
    pub pids: BTreeMap<PidKey, PidMasks>,
    /// IPv4 (4-byte keys) and IPv6 networks of address filters.
    pub addr4: BTreeMap<AddrEntryKey, SelMasks>,
    pub addr6: BTreeMap<AddrEntryKey, SelMasks>,
    /// Key: `port_key(hook, field, port)`.
    pub ports: BTreeMap<u32, SelMasks>,
    /// Index: `hook * MAX_SELECTORS + slot`.
    pub slots: BTreeMap<u32, SlotInfo>,
    /// Per cgroup id (and [`CGROUP_HOST`]): the scoped selectors that apply there.
    pub cgroups: BTreeMap<u64, CgroupScope>,
    /// What the loader attaches for the hook ids from [`FIRST_DYNAMIC_HOOK`] on: the
    /// generic kprobe, kretprobe or tracepoint program on this target. Kernel facts (the
    /// function's addresses, the tracepoint's id and field offsets) are the loader's.
    pub probes: BTreeMap<u32, Target>,
    /// Key: `(hook, argument position)` of each descriptor with `SRC_RESOLVE`: the path the
    /// loader turns into offsets with the kernel's BTF (`HookConfig::resolve`).
    pub resolve: BTreeMap<(u32, u32), probes::ResolveReq>,
    /// Per uprobe hook with `resolvePathInContainer`: the directories of the listed cgroups
    /// (pods, containers) where one of its selectors applies. The loader attaches at the file
    /// as the roots of their processes resolve it. Empty: no selected container on this node.
    pub containers: BTreeMap<u32, BTreeSet<std::path::PathBuf>>,
}

impl MapImage {
    /// The slot description for a hook event.
    /// `hook` and `slot` come from kernel records: out of range is `None`, never an
    /// overflow onto another hook's slot (found by the fuzz test).
    pub fn slot(&self, hook: u32, slot: u32) -> Option<&SlotInfo> {
        if slot >= MAX_SELECTORS {
            return None;
        }
        self.slots
            .get(&hook.checked_mul(MAX_SELECTORS)?.checked_add(slot)?)
    }
}

fn family(op: StrOp) -> usize {
    match op {
        StrOp::Equal => FAMILY_EQUAL,
        StrOp::Prefix => FAMILY_PREFIX,
        StrOp::Postfix => FAMILY_POSTFIX,
    }
}

fn num_op(op: NumOp) -> u32 {
    match op {
        NumOp::Equal => NUM_OP_EQUAL,
        NumOp::NotEqual => NUM_OP_NOT_EQUAL,
        NumOp::GreaterThan => NUM_OP_GT,
        NumOp::LessThan => NUM_OP_LT,
        NumOp::Mask => NUM_OP_MASK,
        NumOp::InRange => NUM_OP_IN_RANGE,
        NumOp::NotInRange => NUM_OP_NOT_IN_RANGE,
        NumOp::InMap => NUM_OP_IN_SET,
        NumOp::NotInMap => NUM_OP_NOT_IN_SET,
    }
}

/// The selector's [`SelectorAction`] (without its policy id) from its actions.
fn action_flags(actions: &[Action], mode: PolicyMode) -> SelectorAction {
    let mut flags = ACT_POST;
    let mut act = SelectorAction::default();
    for a in actions {
        match *a {
            Action::Post { .. } => flags |= ACT_POST,
            Action::NoPost => flags &= !ACT_POST,
            Action::Sigkill => flags |= ACT_SIGKILL,
            Action::Override { error: e } => {
                flags |= ACT_OVERRIDE;
                act.error = e;
            }
            Action::Signal { signal: s } => {
                flags |= ACT_SIGNAL;
                act.signal = s;
            }
            Action::NotifyEnforcer {
                error: e,
                signal: s,
            } => {
                flags |= ACT_NOTIFY_ENFORCER;
                if e != 0 {
                    flags |= ACT_OVERRIDE;
                    act.error = e;
                }
                if let Some(s) = s {
                    flags |= ACT_SIGNAL;
                    act.signal = s;
                }
            }
            Action::Set { pos, value } => {
                flags |= ACT_SET;
                act.set_pos = pos;
                act.set_value = value;
            }
            // One socket action per selector: the kernel applies the last one written.
            Action::SockTrack { pos, track } => {
                let act_flag = if track {
                    ACT_TRACK_SOCK
                } else {
                    ACT_UNTRACK_SOCK
                };
                flags = (flags & !(ACT_TRACK_SOCK | ACT_UNTRACK_SOCK)) | act_flag;
                act.sock_pos = pos;
            }
            // Done in user space for each posted event: the kernel only posts.
            Action::Request(_) => {}
        }
    }
    // NoPost wins over Post wherever it appears (Tetragon).
    if actions.iter().any(|a| matches!(a, Action::NoPost)) {
        flags &= !ACT_POST;
    }
    if mode == PolicyMode::Monitor {
        flags |= ACT_MONITOR;
    }
    act.flags = flags;
    act
}

fn rate_limit_of(actions: &[Action]) -> Option<(u64, RateLimitScope)> {
    actions.iter().find_map(|a| match a {
        Action::Post {
            rate_limit_ms: Some(ms),
            rate_limit_scope,
        } => Some((*ms, *rate_limit_scope)),
        _ => None,
    })
}

fn str_map(img: &mut MapImage, op: StrOp) -> &mut BTreeMap<StrEntryKey, SelMasks> {
    match op {
        StrOp::Equal => &mut img.str_eq,
        StrOp::Prefix => &mut img.str_prefix,
        StrOp::Postfix => &mut img.str_postfix,
    }
}

fn add_str_values(
    img: &mut MapImage,
    hook: u32,
    subject: u8,
    op: StrOp,
    negated: bool,
    values: &[Vec<u8>],
    bit: u64,
) {
    let map = str_map(img, op);
    for v in values {
        let bytes = if op == StrOp::Postfix {
            v.iter().rev().copied().collect()
        } else {
            v.clone()
        };
        let m = map.entry((hook, subject, bytes)).or_default();
        if negated {
            m.neg |= bit;
        } else {
            m.pos |= bit;
        }
    }
}

/// The longest-prefix lookup returns one entry; give it the selectors of every entry that is
/// a prefix of it, so that it answers for all of them.
fn close_over_prefixes(map: &mut BTreeMap<StrEntryKey, SelMasks>) {
    let snapshot: BTreeMap<StrEntryKey, SelMasks> = map.clone();
    for ((hook, subject, bytes), masks) in map.iter_mut() {
        for l in 1..bytes.len() {
            if let Some(shorter) = snapshot.get(&(*hook, *subject, bytes[..l].to_vec())) {
                masks.pos |= shorter.pos;
                masks.neg |= shorter.neg;
            }
        }
    }
}

/// As [`close_over_prefixes`], for networks: each entry also carries the selectors of every
/// entry whose network contains it.
fn close_over_networks(map: &mut BTreeMap<AddrEntryKey, SelMasks>) {
    let lengths: BTreeSet<u8> = map.keys().map(|k| k.3).collect();
    let snapshot = map.clone();
    for ((hook, field, bytes, len), masks) in map.iter_mut() {
        for &l in lengths.iter().filter(|&&l| l < *len) {
            let key = (*hook, *field, truncate_bits(bytes, l), l);
            if let Some(wider) = snapshot.get(&key) {
                masks.pos |= wider.pos;
                masks.neg |= wider.neg;
            }
        }
    }
}

/// `bytes` with every bit after the first `len` cleared.
fn truncate_bits(bytes: &[u8], len: u8) -> Vec<u8> {
    bytes
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let keep = (len as usize).saturating_sub(8 * i).min(8);
            if keep == 0 {
                0
            } else {
                b & (0xffu8 << (8 - keep))
            }
        })
        .collect()
}

/// An address value as (IPv4?, network bytes, prefix length); v4-mapped IPv6 as IPv4.
fn network_key(net: &IpNet) -> (bool, Vec<u8>, u8) {
    match net.trunc() {
        IpNet::V4(n) => (true, n.network().octets().to_vec(), n.prefix_len()),
        IpNet::V6(n) => match n.network().to_ipv4_mapped() {
            Some(v4) if n.prefix_len() >= 96 => (true, v4.octets().to_vec(), n.prefix_len() - 96),
            _ => (false, n.network().octets().to_vec(), n.prefix_len()),
        },
    }
}

fn net_field(f: NetField) -> u32 {
    match f {
        NetField::Dest => NET_DEST,
        NetField::Source => NET_SOURCE,
    }
}

fn check_capacity(img: &MapImage, policy: &str) -> Result<(), CompileError> {
    let checks: [(&'static str, usize, u32); 8] = [
        ("STR_EQ", img.str_eq.len(), STR_EQ_ENTRIES),
        // A switch holds the old and the new plans' sets side by side.
        ("NUM_SET", img.num_set.len(), NUM_SET_ENTRIES / 2),
        ("PORTS", img.ports.len(), PORT_ENTRIES / 2),
        ("PIDS", img.pids.len(), PIDS_ENTRIES),
        ("ADDR4", img.addr4.len(), ADDR_ENTRIES),
        ("ADDR6", img.addr6.len(), ADDR_ENTRIES),
        ("STR_PREFIX", img.str_prefix.len(), STR_LPM_ENTRIES),
        ("STR_POSTFIX", img.str_postfix.len(), STR_LPM_ENTRIES),
    ];
    for (map, n, max) in checks {
        if n > max as usize {
            return Err(CompileError::MapFull {
                policy: policy.to_string(),
                map,
                max,
            });
        }
    }
    Ok(())
}

/// Compiles the loaded policies (with their agent-assigned ids, in load order) into one map
/// image, for maps that are empty. `host_ns` values compile to inode 0 (matching nothing):
/// this is for offline checks; the agent uses [`compile_with`] with the node's namespaces.
pub fn compile(policies: &[(u32, &Policy)]) -> Result<MapImage, CompileError> {
    compile_with(policies, &MapImage::default(), &CompileEnv::default())
}

/// Selector slots of one group (the selectors of one hook entry of one policy), per hook.
type Groups = BTreeMap<(u32, u32, usize), (u32, u32)>;

/// Where each (hook, policy id, hook entry) group sits in `img`: first slot and count.
fn groups_of(img: &MapImage) -> Groups {
    let mut g: Groups = BTreeMap::new();
    for (&idx, info) in &img.slots {
        let (hook, slot) = (idx / MAX_SELECTORS, idx % MAX_SELECTORS);
        let e = g
            .entry((hook, info.policy_id, info.group))
            .or_insert((slot, 0));
        e.0 = e.0.min(slot);
        e.1 += 1;
    }
    g
}

/// Bits `first .. first + count`.
fn run_mask(first: u32, count: u32) -> u64 {
    let ones = if count >= 64 {
        u64::MAX
    } else {
        (1u64 << count) - 1
    };
    ones << first
}

/// The lowest run of `count` consecutive slots free in `used`.
fn free_run(used: u64, count: u32) -> Option<u32> {
    (0..=MAX_SELECTORS.checked_sub(count)?).find(|&first| used & run_mask(first, count) == 0)
}

/// Compiles `policies` into the image that replaces `prev` (what the maps hold now), such
/// that the switch can be made without a gap (see `bpf::Probe::apply`):
///
/// * a group that stays keeps its slots;
/// * a new group (a new policy, or the new version of a replaced one, which has a new id) gets
///   slots that `prev` does not use, so the old version keeps enforcing until the switch;
/// * numeric filters go to the bank of each hook that `prev` does not use.
pub fn compile_with(
    policies: &[(u32, &Policy)],
    prev: &MapImage,
    env: &CompileEnv,
) -> Result<MapImage, CompileError> {
    let mut img = MapImage::default();
    let mut next_num: BTreeMap<u32, u32> = BTreeMap::new();
    let prev_groups = groups_of(prev);
    // Slots in use now, per hook: neither kept nor new groups may take another group's.
    let mut used: BTreeMap<u32, u64> = BTreeMap::new();
    for (&(hook, _, _), &(first, count)) in &prev_groups {
        *used.entry(hook).or_default() |= run_mask(first, count);
    }

    let ids = probes::assign_ids(policies, prev)?;
    for (t, &id) in &ids {
        if t.lsm().is_none() {
            img.probes.insert(id, t.clone());
        }
    }
    let mut scoped: Vec<ScopedGroup<'_>> = Vec::new();
    // Per hook, how the kernel reads the arguments some policy declares (the rest is skipped).
    let mut descs: BTreeMap<u32, [ArgDesc; MAX_ARGS]> = BTreeMap::new();
    for &(policy_id, policy) in policies {
        let restricted = env.workloads.restricts(&policy.scope);
        for (group, hook) in policy.hooks.iter().enumerate() {
            // `assign_ids` saw every hook of these policies.
            let hid = match hook.target.lsm().and_then(|l| l.resolve_id()) {
                // A hand-written program does not follow resolve paths: its twin does.
                Some(id) if hook.args.iter().any(|a| a.resolve.is_some()) => id,
                _ => ids.get(&hook.target).copied().unwrap_or_default(),
            };
            let hname = hook_label(&hook.target);
            let d = descs.entry(hid).or_insert_with(|| HookConfig::empty().args);
            match &hook.target {
                Target::Lsm(lsm) => {
                    let info = hooks::hook_info(*lsm);
                    for a in &hook.args {
                        if a.resolve.is_some() {
                            let mut desc = probes::generic_desc(&hook.target, a);
                            let req = probes::resolve_req(&hook.target, a, &mut desc);
                            probes::set_desc(d, a.lsm_index, desc, policy, &hook.target)?;
                            add_resolve(&mut img, hid, a.lsm_index, req, policy, &hook.target)?;
                        } else if let Some(ha) = info.args.get(a.lsm_index as usize) {
                            // The same for every policy, unless another one resolves a path
                            // from this argument.
                            probes::set_desc(d, a.lsm_index, ha.desc(), policy, &hook.target)?;
                        }
                    }
                }
                t => {
                    for a in &hook.args {
                        let mut desc = probes::generic_desc(t, a);
                        let req = probes::resolve_req(t, a, &mut desc);
                        probes::set_desc(d, a.lsm_index, desc, policy, t)?;
                        add_resolve(&mut img, hid, a.lsm_index, req, policy, t)?;
                    }
                    if let Some(r) = hook
                        .return_arg
                        .as_ref()
                        .filter(|r| r.ty == super::ir::ArgType::Sock)
                    {
                        let desc = ArgDesc {
                            kind: ARG_SOCK,
                            src: SRC_RET,
                            width: 0,
                            size: 0,
                        };
                        probes::set_desc(d, r.lsm_index, desc, policy, t)?;
                    }
                }
            }
            for a in &hook.data {
                let d = a.lsm_index - DATA_INDEX;
                let mut desc = probes::generic_desc(&hook.target, a);
                let req = probes::resolve_req(&hook.target, a, &mut desc);
                add_resolve(
                    &mut img,
                    hid,
                    DATA_RESOLVE_POS + d,
                    req,
                    policy,
                    &hook.target,
                )?;
                let cfg = img.hook_cfg.entry(hid).or_insert_with(HookConfig::empty);
                cfg.attrs |= 1 << (ATTR_DATA_BASE + d);
                if let (Some(w), super::ir::ArgType::Int { width, .. }) =
                    (cfg.data_width.get_mut(d as usize), a.ty)
                {
                    *w = width;
                }
            }
            // A hook without selectors posts every call: one selector with no filters.
            let implicit = [Selector::match_all()];
            let selectors: &[Selector] = if hook.selectors.is_empty() {
                &implicit
            } else {
                &hook.selectors
            };
            let count = selectors.len() as u32;
            let first = match prev_groups.get(&(hid, policy_id, group)) {
                Some(&(first, n)) if n == count => first,
                _ => {
                    let taken = used.entry(hid).or_default();
                    let first =
                        free_run(*taken, count).ok_or_else(|| CompileError::TooManySelectors {
                            policy: policy.name.clone(),
                            hook: hname.clone(),
                        })?;
                    *taken |= run_mask(first, count);
                    first
                }
            };
            if restricted {
                let bits = run_mask(first, count);
                img.hook_cfg
                    .entry(hid)
                    .or_insert_with(HookConfig::empty)
                    .scoped |= bits;
                scoped.push((hid, bits, &policy.scope));
            }

            for (i, sel) in selectors.iter().enumerate() {
                let slot = first + i as u32;
                let bit = 1u64 << slot;
                let act = action_flags(&sel.actions, policy.mode);
                let flags = act.flags;
                let idx = hid * MAX_SELECTORS + slot;
                img.sel_act.insert(idx, SelectorAction { policy_id, ..act });
                img.slots.insert(
                    idx,
                    SlotInfo {
                        policy_id,
                        policy_name: policy.name.clone(),
                        policy_namespace: policy.namespace.clone(),
                        group,
                        target: hook.target.clone(),
                        origin: hook.origin.clone(),
                        hook_index: hook.spec_index,
                        selector_index: sel.index,
                        args: hook.args.clone(),
                        return_arg: hook.return_arg.clone(),
                        data: hook.data.clone(),
                        message: hook.message.clone(),
                        tags: hook.tags.clone(),
                        flags,
                        rate_limit: rate_limit_of(&sel.actions),
                        request: sel.actions.iter().find_map(|a| match a {
                            Action::Request(r) => Some(r.clone()),
                            _ => None,
                        }),
                    },
                );
                let cfg = img.hook_cfg.entry(hid).or_insert_with(HookConfig::empty);
                cfg.selectors |= bit;
                if i == 0 {
                    cfg.group_starts |= bit;
                }
                if flags & ACT_POST != 0 {
                    cfg.post |= bit;
                }
                if flags & (ACT_TRACK_SOCK | ACT_UNTRACK_SOCK) != 0 {
                    cfg.sock_acts |= bit;
                }
                if flags & ACT_MONITOR == 0 {
                    if flags & ACT_ENFORCING != 0 {
                        cfg.enforcing |= bit;
                    }
                    if flags & ACT_SIGKILL != 0 {
                        cfg.kill |= bit;
                    }
                    if flags & ACT_OVERRIDE != 0 {
                        cfg.override_ |= bit;
                    }
                    if flags & ACT_SIGNAL != 0 {
                        cfg.signal |= bit;
                    }
                    if flags & ACT_SET != 0 {
                        cfg.set_ |= bit;
                    }
                }
                for f in &sel.match_args {
                    if !matches!(hook.target, Target::Lsm(_)) && f.kind.is_network() {
                        // A probe's network filters match the connection of one argument,
                        // the same for every policy on the probe.
                        let cfg = img.hook_cfg.entry(hid).or_insert_with(HookConfig::empty);
                        let pos = f.lsm_index + 1;
                        if cfg.net_arg != 0 && cfg.net_arg != pos {
                            return Err(CompileError::NetArgClash {
                                policy: policy.name.clone(),
                                hook: hname.clone(),
                                index: f.lsm_index,
                                other: cfg.net_arg - 1,
                            });
                        }
                        cfg.net_arg = pos;
                    }
                    compile_arg_filter(&mut img, &mut next_num, policy, hid, &hname, slot, f, env)?;
                }
                compile_process_filters(
                    &mut img,
                    &mut next_num,
                    policy,
                    hid,
                    &hname,
                    slot,
                    sel,
                    &env.host_ns,
                )?;
                if hook.tcp_only {
                    // tcp_connect: TCP over IPv4/IPv6 only, whatever the selector says.
                    let family = [u64::from(AF_INET), u64::from(AF_INET6)];
                    let nf =
                        attr_filter(&mut img, hid, slot, ATTR_SOCK_FAMILY, NUM_OP_EQUAL, &family);
                    push_num(&mut img, &mut next_num, policy, hid, &hname, nf)?;
                    let tcp = [u64::from(IPPROTO_TCP)];
                    let nf =
                        attr_filter(&mut img, hid, slot, ATTR_SOCK_PROTOCOL, NUM_OP_EQUAL, &tcp);
                    push_num(&mut img, &mut next_num, policy, hid, &hname, nf)?;
                }
                if let Some(b) = &sel.match_binaries {
                    let cfg = img.hook_cfg.entry(hid).or_insert_with(HookConfig::empty);
                    cfg.uses[str_class(SUBJECT_BINARY, family(b.op), b.negated)] |= bit;
                    if b.follow_children {
                        cfg.follow |= bit;
                    }
                    add_str_values(
                        &mut img,
                        hid,
                        SUBJECT_BINARY,
                        b.op,
                        b.negated,
                        &b.values,
                        bit,
                    );
                }
            }
        }
        check_capacity(&img, &policy.name)?;
    }
    img.cgroups = cgroup_scopes(&env.workloads, &scoped);
    img.containers = container_cgroups(&env.workloads, &img.probes, &img.cgroups);
    if img.cgroups.len() > CGROUPS_ENTRIES as usize {
        return Err(CompileError::MapFull {
            policy: policies
                .iter()
                .rev()
                .find(|(_, p)| env.workloads.restricts(&p.scope))
                .map_or_else(String::new, |(_, p)| p.name.clone()),
            map: "CGROUPS",
            max: CGROUPS_ENTRIES,
        });
    }
    close_over_prefixes(&mut img.str_prefix);
    close_over_prefixes(&mut img.str_postfix);
    close_over_networks(&mut img.addr4);
    close_over_networks(&mut img.addr6);
    for (hid, cfg) in img.hook_cfg.iter_mut() {
        if let Some(d) = descs.get(hid) {
            cfg.args = *d;
        }
        cfg.num_filters = next_num.get(hid).copied().unwrap_or(0);
        cfg.probe = match img.probes.get(hid) {
            Some(Target::Kprobe(k)) if k.syscall => PROBE_SYSCALL,
            Some(Target::Tracepoint { .. }) => PROBE_TRACEPOINT,
            _ => 0,
        };
        cfg.num_bank = prev.hook_cfg.get(hid).map_or(0, |p| 1 - (p.num_bank & 1));
    }
    // Records were numbered per hook; place them (and their sets) in the bank chosen above.
    let banks: BTreeMap<u32, u32> = img.hook_cfg.iter().map(|(h, c)| (*h, c.num_bank)).collect();
    let place = |idx: u32| {
        let (hid, i) = (idx / MAX_NUM_FILTERS, idx % MAX_NUM_FILTERS);
        num_filt_index(hid, banks.get(&hid).copied().unwrap_or(0), i)
    };
    let num_filt = std::mem::take(&mut img.num_filt)
        .into_iter()
        .map(|(idx, f)| (place(idx), f))
        .collect();
    let num_set = std::mem::take(&mut img.num_set)
        .into_iter()
        .map(|k| NumSetKey {
            filter: place(k.filter),
            ..k
        })
        .collect();
    img.num_filt = num_filt;
    img.num_set = num_set;
    if reads_open_paths(&img.hook_cfg) {
        img.hook_cfg
            .entry(HOOK_FILE_OPEN)
            .or_insert_with(HookConfig::empty)
            .open_paths = 1;
    }
    Ok(img)
}

/// Whether a hook with selectors reads the path of an open file back from the path cache
/// that `file_open` fills ([`HookConfig::open_paths`]): `file_truncate`'s program, or a
/// program of the generic reader (the LSM table, the twins, the probes) with a file argument.
/// The other hand-written programs do not: `file_permission` ends at the verdict `file_open`
/// kept unless a selector may match (and then the path is cached), `mmap_file` and
/// `bprm_check_security` call `bpf_d_path` themselves, `path_truncate` and `socket_connect`
/// have no file.
fn reads_open_paths(hook_cfg: &BTreeMap<u32, HookConfig>) -> bool {
    hook_cfg.iter().any(|(&hook, cfg)| {
        cfg.selectors != 0
            && (hook == HOOK_FILE_TRUNCATE
                || (hook > HOOK_SOCKET_CONNECT
                    && cfg.args.iter().any(|d| arg_reads_open_file(d.kind))))
    })
}

#[expect(
    clippy::too_many_arguments,
    reason = "the compiler's state and the filter's place; a struct would only rename them"
)]
fn compile_arg_filter(
    img: &mut MapImage,
    next_num: &mut BTreeMap<u32, u32>,
    policy: &Policy,
    hid: u32,
    hook: &str,
    slot: u32,
    f: &ArgFilter,
    env: &CompileEnv,
) -> Result<(), CompileError> {
    let bit = 1u64 << slot;
    match &f.kind {
        FilterKind::Str {
            op,
            negated,
            values,
        } => {
            let cfg = img.hook_cfg.entry(hid).or_insert_with(HookConfig::empty);
            let subject = subject_arg(f.lsm_index);
            cfg.uses[str_class(subject, family(*op), *negated)] |= bit;
            add_str_values(img, hid, subject, *op, *negated, values, bit);
        }
        FilterKind::Num { op, values } => {
            let (width, signed) = match f.ty {
                super::ir::ArgType::Int { width, signed } => (width, signed),
                _ => (8, false),
            };
            // A kretprobe's return value is an attribute its program sets for the call, and
            // so is each `data` value (the evaluator reads it from the current task).
            let arg = if f.lsm_index == RETURN_INDEX {
                ARG_ATTR_BASE + ATTR_RETVAL
            } else if f.lsm_index >= DATA_INDEX {
                ARG_ATTR_BASE + ATTR_DATA_BASE + (f.lsm_index - DATA_INDEX)
            } else {
                f.lsm_index
            };
            let set = matches!(op, NumOp::InMap | NumOp::NotInMap);
            let mut nf = NumFilter {
                selector: slot,
                arg,
                op: num_op(*op),
                nvalues: if set {
                    0
                } else {
                    values.len().min(NUM_FILTER_VALUES) as u32
                },
                flags: if signed { NUM_SIGNED } else { 0 },
                width: u32::from(width),
                values: [0; NUM_FILTER_VALUES],
            };
            if !set {
                for (dst, v) in nf.values.iter_mut().zip(values) {
                    *dst = *v;
                }
            }
            let filter = push_num(img, next_num, policy, hid, hook, nf)?;
            if set {
                // Members as the kernel sees the argument: `operand` of the value.
                img.num_set.extend(values.iter().map(|&v| NumSetKey {
                    filter,
                    _pad: 0,
                    value: nf.operand(v),
                }));
            }
        }
        FilterKind::Addr {
            field,
            negated,
            values,
        } => {
            let field = net_field(*field);
            let cfg = img.hook_cfg.entry(hid).or_insert_with(HookConfig::empty);
            cfg.addr_uses[net_class(field, *negated)] |= bit;
            let mut nets: Vec<IpNet> = Vec::new();
            for v in values {
                match v {
                    AddrValue::Net(n) => nets.push(*n),
                    AddrValue::Dns(name) => {
                        for ip in env.dns.get(name).into_iter().flatten() {
                            nets.push(IpNet::from(*ip));
                        }
                    }
                }
            }
            for n in nets {
                let (v4, bytes, len) = network_key(&n);
                let map = if v4 { &mut img.addr4 } else { &mut img.addr6 };
                let m = map.entry((hid, field, bytes, len)).or_default();
                if *negated {
                    m.neg |= bit;
                } else {
                    m.pos |= bit;
                }
            }
        }
        FilterKind::Port {
            field,
            negated,
            ranges,
        } => {
            let field = net_field(*field);
            let cfg = img.hook_cfg.entry(hid).or_insert_with(HookConfig::empty);
            cfg.port_uses[net_class(field, *negated)] |= bit;
            for &(lo, hi) in ranges {
                for port in lo..=hi {
                    let m = img.ports.entry(port_key(hid, field, port)).or_default();
                    if *negated {
                        m.neg |= bit;
                    } else {
                        m.pos |= bit;
                    }
                }
            }
        }
        FilterKind::SockAttr { attr, values } => {
            let attr = match attr {
                SockAttr::Protocol => ATTR_SOCK_PROTOCOL,
                SockAttr::Family => ATTR_SOCK_FAMILY,
                SockAttr::State => ATTR_SOCK_STATE,
            };
            let nf = attr_filter(img, hid, slot, attr, NUM_OP_EQUAL, values);
            push_num(img, next_num, policy, hid, hook, nf)?;
        }
    }
    Ok(())
}

/// Appends a numeric filter record to `hook`'s list (placed in its bank at the end), and
/// returns its number in the meantime, `hook * MAX_NUM_FILTERS + i`.
fn push_num(
    img: &mut MapImage,
    next_num: &mut BTreeMap<u32, u32>,
    policy: &Policy,
    hid: u32,
    hook: &str,
    nf: NumFilter,
) -> Result<u32, CompileError> {
    let n = next_num.entry(hid).or_insert(0);
    if *n >= MAX_NUM_FILTERS {
        return Err(CompileError::TooManyNumFilters {
            policy: policy.name.clone(),
            hook: hook.to_string(),
        });
    }
    let index = hid * MAX_NUM_FILTERS + *n;
    img.num_filt.insert(index, nf);
    *n += 1;
    Ok(index)
}

/// A numeric filter on process attribute `attr` (`ATTR_*`), and the attribute marked as
/// needed by the hook.
fn attr_filter(
    img: &mut MapImage,
    hid: u32,
    slot: u32,
    attr: u32,
    op: u32,
    values: &[u64],
) -> NumFilter {
    let cfg = img.hook_cfg.entry(hid).or_insert_with(HookConfig::empty);
    cfg.attrs |= 1 << attr;
    let mut nf = NumFilter {
        selector: slot,
        arg: ARG_ATTR_BASE + attr,
        op,
        nvalues: values.len().min(NUM_FILTER_VALUES) as u32,
        flags: 0,
        width: 8,
        values: [0; NUM_FILTER_VALUES],
    };
    for (dst, v) in nf.values.iter_mut().zip(values) {
        *dst = *v;
    }
    nf
}

/// `matchPIDs` (PIDS entries), `matchNamespaces` and `matchCapabilities` (numeric filters on
/// process attributes).
#[expect(
    clippy::too_many_arguments,
    reason = "the compiler's state and the selector's place; a struct would only rename them"
)]
fn compile_process_filters(
    img: &mut MapImage,
    next_num: &mut BTreeMap<u32, u32>,
    policy: &Policy,
    hid: u32,
    hook: &str,
    slot: u32,
    sel: &Selector,
    host: &HostNs,
) -> Result<(), CompileError> {
    let bit = 1u64 << slot;
    // Several plain `In` filters of one kind in a selector must all hold: the process's pid
    // has to be in their intersection. (NotIn filters simply add up; followForks `In`
    // filters are at most one per kind, which the parser enforces.)
    let mut plain_in: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for f in &sel.match_pids {
        let kind = if f.namespace_pid { PID_NS } else { PID_HOST };
        let cfg = img.hook_cfg.entry(hid).or_insert_with(HookConfig::empty);
        cfg.pid_uses[pid_class(kind, f.follow_forks, f.negated)] |= bit;
        if !f.follow_forks && !f.negated {
            match plain_in.get_mut(&kind) {
                Some(set) => set.retain(|p| f.values.contains(p)),
                None => {
                    plain_in.insert(kind, f.values.clone());
                }
            }
            continue;
        }
        for &pid in &f.values {
            let m = img
                .pids
                .entry(PidKey {
                    hook: hid,
                    kind,
                    pid,
                })
                .or_default();
            match (f.follow_forks, f.negated) {
                (false, _) => m.neg |= bit,
                (true, false) => m.follow_pos |= bit,
                (true, true) => m.follow_neg |= bit,
            }
        }
    }
    for (kind, pids) in plain_in {
        for pid in pids {
            img.pids
                .entry(PidKey {
                    hook: hid,
                    kind,
                    pid,
                })
                .or_default()
                .pos |= bit;
        }
    }

    for f in &sel.match_namespaces {
        let t = f.ns.index() as u32;
        let values: Vec<u64> = f
            .values
            .iter()
            .map(|v| match v {
                NsValue::Inode(i) => u64::from(*i),
                NsValue::Host => u64::from(host.0[t as usize]),
            })
            .collect();
        let op = if f.negated {
            NUM_OP_NOT_EQUAL
        } else {
            NUM_OP_EQUAL
        };
        let nf = attr_filter(img, hid, slot, ATTR_NS_BASE + t, op, &values);
        push_num(img, next_num, policy, hid, hook, nf)?;
    }

    for f in &sel.match_capabilities {
        let set = match f.set {
            CapSet::Effective => 0,
            CapSet::Inheritable => 1,
            CapSet::Permitted => 2,
        };
        let op = if f.negated {
            NUM_OP_NOT_MASK
        } else {
            NUM_OP_MASK
        };
        let nf = attr_filter(img, hid, slot, ATTR_CAP_BASE + set, op, &[f.mask]);
        push_num(img, next_num, policy, hid, hook, nf)?;
        if f.namespace_capability {
            // Tetragon: only processes outside the host user namespace.
            let host_user = u64::from(host.0[NS_USER as usize]);
            let nf = attr_filter(
                img,
                hid,
                slot,
                ATTR_NS_BASE + NS_USER,
                NUM_OP_NOT_EQUAL,
                &[host_user],
            );
            push_num(img, next_num, policy, hid, hook, nf)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::ir::*;

    fn file_arg() -> ArgSpec {
        ArgSpec {
            spec_index: 0,
            lsm_index: 0,
            ty: ArgType::File,
            type_name: "file".into(),
            label: None,
            resolve: None,
        }
    }

    fn str_filter(op: StrOp, negated: bool, values: &[&str]) -> ArgFilter {
        ArgFilter {
            spec_index: 0,
            lsm_index: 0,
            ty: ArgType::File,
            kind: FilterKind::Str {
                op,
                negated,
                values: values.iter().map(|v| v.as_bytes().to_vec()).collect(),
            },
        }
    }

    fn policy(name: &str, mode: PolicyMode, selectors: Vec<Selector>) -> Policy {
        Policy {
            name: name.into(),
            kind: PolicyKind::TracingPolicy,
            namespace: None,
            scope: crate::policy::scope::Scope::Everything,
            mode,
            hooks: vec![Hook {
                target: Target::Lsm(LsmHook::FilePermission),
                return_arg: None,
                origin: HookOrigin::Kprobe {
                    call: "security_file_permission".into(),
                },
                spec_index: 0,
                spec_path: "spec.kprobes[0]".into(),
                args: vec![file_arg()],
                message: None,
                tags: vec![],
                tcp_only: false,
                selectors,
                data: Vec::new(),
            }],
            warnings: vec![],
        }
    }

    fn sel(index: usize, match_args: Vec<ArgFilter>, actions: Vec<Action>) -> Selector {
        Selector {
            index,
            label: None,
            match_args,
            match_binaries: None,
            match_pids: Vec::new(),
            match_namespaces: Vec::new(),
            match_capabilities: Vec::new(),
            actions,
        }
    }

    const H: u32 = HOOK_FILE_PERMISSION;

    #[test]
    fn in_map_sets_are_written_beside_the_filter_in_its_bank_and_move_with_it() {
        use crate::policy::testutil::{fixture, parse_ok};
        let p = parse_ok(fixture!("observe-dup-syscalls-in-a-list.yaml"));
        let first = compile_with(&[(1, &p)], &MapImage::default(), &CompileEnv::default()).unwrap();
        let members = |img: &MapImage| {
            let (&idx, f) = img.num_filt.iter().next().expect("one filter");
            assert_eq!((f.op, f.nvalues), (NUM_OP_IN_SET, 0));
            assert!(img.num_set.iter().all(|k| k.filter == idx));
            (idx, img.num_set.iter().map(|k| k.value).collect::<Vec<_>>())
        };
        let (idx0, values) = members(&first);
        assert_eq!(values.len(), 2, "dup and dup2");
        // The next plan of the same policy is written into the other bank: its set too.
        let second = compile_with(&[(1, &p)], &first, &CompileEnv::default()).unwrap();
        let (idx1, again) = members(&second);
        assert_ne!(idx0, idx1);
        assert_eq!(values, again);
    }

    #[test]
    fn file_open_caches_open_files_paths_only_for_the_hooks_that_read_them_back() {
        use crate::policy::parse::parse_policy_file;
        use crate::policy::testutil::{fixture, parse_ok, quickstart};
        let open_paths = |img: &MapImage| img.hook_cfg.get(&HOOK_FILE_OPEN).map(|c| c.open_paths);
        // The quickstart's file policy: file_permission, mmap_file and path_truncate resolve or
        // decide without the cache.
        let file = parse_policy_file(&quickstart("file_monitoring_enforce.yaml")).expect("parses");
        assert_eq!(open_paths(&compile(&[(1, &file)]).unwrap()), None);
        // file_truncate's program and a generic reader's file argument read it back.
        for yaml in [
            fixture!("deny-truncate.yaml"),
            fixture!("observe-fd-install-file.yaml"),
        ] {
            let p = parse_ok(yaml);
            assert_eq!(open_paths(&compile(&[(1, &p)]).unwrap()), Some(1), "{yaml}");
            let both = compile(&[(1, &file), (2, &p)]).unwrap();
            assert_eq!(open_paths(&both), Some(1), "{yaml}");
            assert_eq!(both.hook_cfg[&HOOK_FILE_OPEN].selectors, 0);
        }
    }

    #[test]
    fn declared_arguments_get_readers_and_string_filters_the_subject_of_their_position() {
        use crate::policy::testutil::{fixture, parse_ok};
        let yaml = fixture!("deny-symlink-to-lsm-vmtest-target-eperm.yaml");
        let img = compile(&[(1, &parse_ok(yaml))]).unwrap();
        let cfg = img.hook_cfg[&HOOK_PATH_SYMLINK];
        assert_eq!(
            cfg.args.map(|d| (d.kind, d.src)),
            [
                (ARG_PATH, 0),
                (ARG_DENTRY, 1),
                (ARG_STR, 2),
                (ARG_SKIP, 0),
                (ARG_SKIP, 0)
            ]
        );
        assert_eq!(cfg.uses[str_class(subject_arg(2), FAMILY_EQUAL, false)], 1);
        assert_eq!(cfg.str_uses(SUBJECT_ARG), 0);
        let key = (
            HOOK_PATH_SYMLINK,
            subject_arg(2),
            b"/tmp/lsm-vmtest-symlink-target".to_vec(),
        );
        assert_eq!(img.str_eq[&key].pos, 1);

        // Arguments no policy declares are not read at all.
        let only_target = yaml.replace(
            "    - index: 0\n      type: \"path\"\n    - index: 1\n      type: \"dentry\"\n",
            "",
        );
        assert_ne!(only_target, yaml);
        let img = compile(&[(1, &parse_ok(&only_target))]).unwrap();
        assert_eq!(
            img.hook_cfg[&HOOK_PATH_SYMLINK].args.map(|d| d.kind),
            [ARG_SKIP, ARG_SKIP, ARG_STR, ARG_SKIP, ARG_SKIP]
        );
    }

    #[test]
    fn prefix_entries_carry_the_selectors_of_shorter_prefixes() {
        let p = policy(
            "p",
            PolicyMode::Enforce,
            vec![
                sel(0, vec![str_filter(StrOp::Prefix, false, &["/etc"])], vec![]),
                sel(
                    1,
                    vec![str_filter(StrOp::Prefix, false, &["/etc/shadow", "/boot"])],
                    vec![Action::Sigkill],
                ),
            ],
        );
        let img = compile(&[(7, &p)]).unwrap();
        let get = |s: &str| img.str_prefix[&(H, SUBJECT_ARG, s.as_bytes().to_vec())];
        assert_eq!(get("/etc").pos, 0b01);
        assert_eq!(get("/etc/shadow").pos, 0b11);
        assert_eq!(get("/boot").pos, 0b10);
        let cfg = img.hook_cfg[&H];
        assert_eq!(cfg.selectors, 0b11);
        assert_eq!(cfg.enforcing, 0b10);
        assert_eq!(cfg.uses[str_class(SUBJECT_ARG, FAMILY_PREFIX, false)], 0b11);
    }

    #[test]
    fn postfix_values_are_stored_reversed() {
        let p = policy(
            "p",
            PolicyMode::Enforce,
            vec![sel(
                0,
                vec![str_filter(StrOp::Postfix, false, &[".bashrc"])],
                vec![],
            )],
        );
        let img = compile(&[(1, &p)]).unwrap();
        assert!(
            img.str_postfix
                .contains_key(&(H, SUBJECT_ARG, b"crhsab.".to_vec()))
        );
    }

    #[test]
    fn negated_values_set_the_neg_mask() {
        let p = policy(
            "p",
            PolicyMode::Enforce,
            vec![sel(
                0,
                vec![str_filter(StrOp::Equal, true, &["/etc/passwd"])],
                vec![],
            )],
        );
        let img = compile(&[(1, &p)]).unwrap();
        let m = img.str_eq[&(H, SUBJECT_ARG, b"/etc/passwd".to_vec())];
        assert_eq!((m.pos, m.neg), (0, 1));
        assert_eq!(
            img.hook_cfg[&H].uses[str_class(SUBJECT_ARG, FAMILY_EQUAL, true)],
            1
        );
    }

    #[test]
    fn actions_default_to_post_and_nopost_suppresses_it() {
        let p = policy(
            "p",
            PolicyMode::Enforce,
            vec![
                sel(0, vec![], vec![]),
                sel(1, vec![], vec![Action::Sigkill]),
                sel(
                    2,
                    vec![],
                    vec![Action::NoPost, Action::Override { error: -13 }],
                ),
            ],
        );
        let img = compile(&[(1, &p)]).unwrap();
        let a = |s: u32| img.sel_act[&(H * MAX_SELECTORS + s)];
        assert_eq!(a(0).flags, ACT_POST);
        assert_eq!(a(1).flags, ACT_POST | ACT_SIGKILL);
        assert_eq!(a(2).flags, ACT_OVERRIDE);
        assert_eq!(a(2).error, -13);
        let cfg = img.hook_cfg[&H];
        assert_eq!((cfg.post, cfg.kill, cfg.override_), (0b011, 0b010, 0b100));
        assert_eq!(cfg.group_starts, 0b001);
    }

    #[test]
    fn monitor_mode_marks_actions_and_does_not_fail_closed() {
        let p = policy(
            "p",
            PolicyMode::Monitor,
            vec![sel(0, vec![], vec![Action::Sigkill])],
        );
        let img = compile(&[(1, &p)]).unwrap();
        assert_eq!(
            img.sel_act[&(H * MAX_SELECTORS)].flags,
            ACT_POST | ACT_SIGKILL | ACT_MONITOR
        );
        let cfg = img.hook_cfg[&H];
        assert_eq!((cfg.enforcing, cfg.kill, cfg.post), (0, 0, 1));
    }

    #[test]
    fn policies_get_consecutive_slots_and_separate_first_match_groups() {
        let a = policy("a", PolicyMode::Enforce, vec![sel(0, vec![], vec![])]);
        let b = policy(
            "b",
            PolicyMode::Enforce,
            vec![sel(0, vec![], vec![]), sel(1, vec![], vec![])],
        );
        let img = compile(&[(1, &a), (2, &b)]).unwrap();
        assert_eq!(img.hook_cfg[&H].group_starts, 0b011);
        assert_eq!(img.sel_act[&(H * MAX_SELECTORS + 1)].policy_id, 2);
        assert_eq!(img.slot(H, 2).unwrap().policy_name, "b");
        assert_eq!(img.slot(H, 2).unwrap().selector_index, 1);
    }

    #[test]
    fn a_hook_without_selectors_posts_every_call() {
        let p = policy("p", PolicyMode::Enforce, vec![]);
        let img = compile(&[(1, &p)]).unwrap();
        assert_eq!(img.hook_cfg[&H].selectors, 1);
        assert_eq!(img.sel_act[&(H * MAX_SELECTORS)].flags, ACT_POST);
    }

    #[test]
    fn more_than_64_selectors_on_a_hook_is_an_error() {
        let sels = (0..65).map(|i| sel(i, vec![], vec![])).collect();
        let p = policy("big", PolicyMode::Enforce, sels);
        assert_eq!(
            compile(&[(1, &p)]),
            Err(CompileError::TooManySelectors {
                policy: "big".into(),
                hook: "file_permission".into()
            })
        );
    }

    #[test]
    fn numeric_filters_become_records_with_width_and_sign() {
        let f = ArgFilter {
            spec_index: 1,
            lsm_index: 1,
            ty: ArgType::Int {
                width: 4,
                signed: true,
            },
            kind: FilterKind::Num {
                op: NumOp::Equal,
                values: vec![4],
            },
        };
        let p = policy("p", PolicyMode::Enforce, vec![sel(0, vec![f], vec![])]);
        let img = compile(&[(1, &p)]).unwrap();
        let nf = img.num_filt[&num_filt_index(H, 0, 0)];
        assert_eq!(
            (nf.selector, nf.arg, nf.op, nf.nvalues, nf.flags, nf.width),
            (0, 1, NUM_OP_EQUAL, 1, NUM_SIGNED, 4)
        );
        assert_eq!(nf.values[0], 4);
        assert_eq!(img.hook_cfg[&H].num_filters, 1);
    }

    #[test]
    fn a_replacement_gets_slots_and_a_bank_the_installed_image_does_not_use() {
        let p = policy(
            "p",
            PolicyMode::Enforce,
            vec![
                sel(0, vec![str_filter(StrOp::Prefix, false, &["/etc"])], vec![]),
                sel(1, vec![], vec![]),
            ],
        );
        let v1 = compile(&[(1, &p)]).unwrap();
        assert_eq!(v1.hook_cfg[&H].selectors, 0b11);
        // Version 2 of the same policy has a new id; version 1 is still installed.
        let v2 = compile_with(&[(2, &p)], &v1, &CompileEnv::default()).unwrap();
        assert_eq!(v2.hook_cfg[&H].selectors, 0b1100);
        assert_eq!(v2.hook_cfg[&H].group_starts, 0b0100);
        assert_ne!(v2.hook_cfg[&H].num_bank, v1.hook_cfg[&H].num_bank);
        assert_eq!(
            v2.str_prefix[&(H, SUBJECT_ARG, b"/etc".to_vec())].pos,
            0b0100
        );
        // Once version 2 is installed, recompiling keeps its slots.
        let again = compile_with(&[(2, &p)], &v2, &CompileEnv::default()).unwrap();
        assert_eq!(again.hook_cfg[&H].selectors, 0b1100);
    }

    #[test]
    fn a_replacement_that_does_not_fit_beside_the_old_version_is_refused() {
        let sels: Vec<Selector> = (0..40).map(|i| sel(i, vec![], vec![])).collect();
        let p = policy("big", PolicyMode::Enforce, sels);
        let v1 = compile(&[(1, &p)]).unwrap();
        assert!(matches!(
            compile_with(&[(2, &p)], &v1, &CompileEnv::default()),
            Err(CompileError::TooManySelectors { .. })
        ));
    }

    #[test]
    fn ten_thousand_prefixes_compile_quickly_into_one_entry_each() {
        let values: Vec<String> = (0..10_000).map(|i| format!("/data/{i:05}/")).collect();
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        let p = policy(
            "p",
            PolicyMode::Enforce,
            vec![sel(
                0,
                vec![str_filter(StrOp::Prefix, false, &refs)],
                vec![],
            )],
        );
        let img = compile(&[(1, &p)]).unwrap();
        assert_eq!(img.str_prefix.len(), 10_000);
    }

    fn pids(negated: bool, follow_forks: bool, namespace_pid: bool, values: &[u32]) -> PidFilter {
        PidFilter {
            negated,
            values: values.to_vec(),
            namespace_pid,
            follow_forks,
        }
    }

    fn pkey(kind: u32, pid: u32) -> PidKey {
        PidKey { hook: H, kind, pid }
    }

    #[test]
    fn match_pids_become_pid_entries_by_kind_and_class() {
        let mut s0 = sel(0, vec![], vec![]);
        s0.match_pids = vec![
            pids(false, false, false, &[10, 20, 30]),
            pids(false, false, false, &[20, 30, 40]),
            pids(true, false, false, &[30]),
        ];
        let mut s1 = sel(1, vec![], vec![]);
        s1.match_pids = vec![pids(false, true, false, &[7]), pids(true, true, true, &[1])];
        let p = policy("p", PolicyMode::Enforce, vec![s0, s1]);
        let img = compile(&[(1, &p)]).unwrap();
        // Two plain In filters: only their intersection is listed.
        assert_eq!(img.pids.get(&pkey(PID_HOST, 10)), None);
        assert_eq!(img.pids[&pkey(PID_HOST, 20)].pos, 0b01);
        assert_eq!(
            img.pids[&pkey(PID_HOST, 30)],
            PidMasks {
                pos: 0b01,
                neg: 0b01,
                ..Default::default()
            }
        );
        assert_eq!(img.pids[&pkey(PID_HOST, 7)].follow_pos, 0b10);
        assert_eq!(img.pids[&pkey(PID_NS, 1)].follow_neg, 0b10);
        let cfg = img.hook_cfg[&H];
        assert_eq!(cfg.pid_uses[pid_class(PID_HOST, false, false)], 0b01);
        assert_eq!(cfg.pid_uses[pid_class(PID_HOST, false, true)], 0b01);
        assert_eq!(cfg.pid_uses[pid_class(PID_HOST, true, false)], 0b10);
        assert_eq!(cfg.pid_uses[pid_class(PID_NS, true, true)], 0b10);
        assert_eq!(cfg.attrs, 0);
    }

    #[test]
    fn match_namespaces_compile_to_attribute_filters_with_host_ns_resolved() {
        let mut s0 = sel(0, vec![], vec![]);
        s0.match_namespaces = vec![NamespaceFilter {
            ns: NsType::Net,
            negated: true,
            values: vec![NsValue::Host, NsValue::Inode(4026531999)],
        }];
        let p = policy("p", PolicyMode::Enforce, vec![s0]);
        let mut host = HostNs::default();
        host.0[NsType::Net.index()] = 4026531840;
        let env = CompileEnv {
            host_ns: host,
            ..Default::default()
        };
        let img = compile_with(&[(1, &p)], &MapImage::default(), &env).unwrap();
        let cfg = img.hook_cfg[&H];
        assert_eq!(cfg.attrs, 1 << (ATTR_NS_BASE + 5));
        let f = img.num_filt.values().next().unwrap();
        assert_eq!(f.arg, ARG_ATTR_BASE + ATTR_NS_BASE + 5);
        assert_eq!(f.op, NUM_OP_NOT_EQUAL);
        assert_eq!(&f.values[..f.nvalues as usize], &[4026531840, 4026531999]);
    }

    #[test]
    fn match_capabilities_compile_to_mask_filters_and_namespace_capability_adds_a_user_ns_check() {
        let mut s0 = sel(0, vec![], vec![]);
        s0.match_capabilities = vec![
            CapFilter {
                set: CapSet::Effective,
                negated: false,
                namespace_capability: false,
                mask: 1 << 21,
            },
            CapFilter {
                set: CapSet::Permitted,
                negated: true,
                namespace_capability: true,
                mask: (1 << 12) | (1 << 13),
            },
        ];
        let p = policy("p", PolicyMode::Enforce, vec![s0]);
        let mut host = HostNs::default();
        host.0[NsType::User.index()] = 4026531837;
        let env = CompileEnv {
            host_ns: host,
            ..Default::default()
        };
        let img = compile_with(&[(1, &p)], &MapImage::default(), &env).unwrap();
        let f: Vec<&NumFilter> = img.num_filt.values().collect();
        assert_eq!(f.len(), 3);
        assert_eq!(
            (f[0].arg, f[0].op, f[0].values[0]),
            (ARG_ATTR_BASE + ATTR_CAP_BASE, NUM_OP_MASK, 1 << 21)
        );
        assert_eq!(
            (f[1].arg, f[1].op, f[1].values[0]),
            (ARG_ATTR_BASE + ATTR_CAP_BASE + 2, NUM_OP_NOT_MASK, 0x3000)
        );
        assert_eq!(
            (f[2].arg, f[2].op, f[2].values[0]),
            (ARG_ATTR_BASE + NS_USER, NUM_OP_NOT_EQUAL, 4026531837)
        );
        let cfg = img.hook_cfg[&H];
        assert_eq!(
            cfg.attrs,
            (1 << ATTR_CAP_BASE) | (1 << (ATTR_CAP_BASE + 2)) | (1 << NS_USER)
        );
    }

    #[test]
    fn follow_children_marks_the_selector_as_inheritable() {
        let mut s0 = sel(0, vec![], vec![]);
        s0.match_binaries = Some(BinaryFilter {
            op: StrOp::Equal,
            negated: false,
            values: vec![b"/bin/bash".to_vec()],
            follow_children: false,
        });
        let mut s1 = s0.clone();
        s1.index = 1;
        if let Some(b) = s1.match_binaries.as_mut() {
            b.follow_children = true;
        }
        let p = policy("p", PolicyMode::Enforce, vec![s0, s1]);
        let img = compile(&[(1, &p)]).unwrap();
        assert_eq!(img.hook_cfg[&H].follow, 0b10);
        assert_eq!(
            img.str_eq[&(H, SUBJECT_BINARY, b"/bin/bash".to_vec())].pos,
            0b11
        );
    }

    fn sock_filter(kind: FilterKind) -> ArgFilter {
        ArgFilter {
            spec_index: 0,
            lsm_index: 0,
            ty: ArgType::Sock,
            kind,
        }
    }

    fn connect_policy(tcp_only: bool, selectors: Vec<Selector>) -> Policy {
        let mut p = policy("net", PolicyMode::Enforce, selectors);
        p.hooks[0].target = Target::Lsm(LsmHook::SocketConnect);
        p.hooks[0].tcp_only = tcp_only;
        p
    }

    const C: u32 = HOOK_SOCKET_CONNECT;

    fn nets(v: &[&str]) -> Vec<AddrValue> {
        v.iter()
            .map(|s| AddrValue::Net(s.parse().expect("cidr")))
            .collect()
    }

    #[test]
    fn address_filters_become_trie_entries_that_carry_their_containing_networks() {
        let s0 = sel(
            0,
            vec![sock_filter(FilterKind::Addr {
                field: NetField::Dest,
                negated: true,
                values: nets(&["127.0.0.1/32", "10.0.0.0/16", "::1/128"]),
            })],
            vec![Action::Sigkill],
        );
        let s1 = sel(
            1,
            vec![sock_filter(FilterKind::Addr {
                field: NetField::Dest,
                negated: false,
                values: nets(&["10.0.5.0/24", "::ffff:198.51.100.1/128"]),
            })],
            vec![],
        );
        let img = compile(&[(1, &connect_policy(false, vec![s0, s1]))]).unwrap();
        let k = |b: &[u8], l: u8| (C, NET_DEST, b.to_vec(), l);
        assert_eq!(img.addr4[&k(&[127, 0, 0, 1], 32)].neg, 0b01);
        assert_eq!(img.addr4[&k(&[10, 0, 0, 0], 16)].neg, 0b01);
        // The /24 inside the /16: its own selector, plus the /16's.
        assert_eq!(
            img.addr4[&k(&[10, 0, 5, 0], 24)],
            SelMasks {
                pos: 0b10,
                neg: 0b01
            }
        );
        // v4-mapped IPv6 is stored as IPv4.
        assert_eq!(img.addr4[&k(&[198, 51, 100, 1], 32)].pos, 0b10);
        assert_eq!(img.addr6.len(), 1);
        let cfg = img.hook_cfg[&C];
        assert_eq!(cfg.addr_uses[net_class(NET_DEST, true)], 0b01);
        assert_eq!(cfg.addr_uses[net_class(NET_DEST, false)], 0b10);
    }

    #[test]
    fn dns_values_compile_to_the_current_answers_and_to_nothing_before_the_first() {
        let s0 = sel(
            0,
            vec![sock_filter(FilterKind::Addr {
                field: NetField::Dest,
                negated: false,
                values: vec![AddrValue::Dns("blocked.test".into())],
            })],
            vec![Action::Sigkill],
        );
        let p = connect_policy(false, vec![s0]);
        let img = compile(&[(1, &p)]).unwrap();
        assert!(img.addr4.is_empty() && img.addr6.is_empty());
        assert_eq!(img.hook_cfg[&C].addr_uses[net_class(NET_DEST, false)], 1);
        let mut env = CompileEnv::default();
        env.dns.insert(
            "blocked.test".into(),
            vec![
                "203.0.113.7".parse().unwrap(),
                "2001:db8::7".parse().unwrap(),
            ],
        );
        let img = compile_with(&[(1, &p)], &MapImage::default(), &env).unwrap();
        assert_eq!(img.addr4[&(C, NET_DEST, vec![203, 0, 113, 7], 32)].pos, 1);
        assert_eq!(img.addr6.len(), 1);
    }

    #[test]
    fn port_ranges_fill_the_port_map_per_hook_and_field() {
        let s0 = sel(
            0,
            vec![
                sock_filter(FilterKind::Port {
                    field: NetField::Dest,
                    negated: false,
                    ranges: vec![(443, 443), (8000, 8002)],
                }),
                sock_filter(FilterKind::Port {
                    field: NetField::Source,
                    negated: true,
                    ranges: vec![(0, 1023)],
                }),
            ],
            vec![],
        );
        let img = compile(&[(1, &connect_policy(false, vec![s0]))]).unwrap();
        assert_eq!(img.ports.len(), 4 + 1024);
        let key = |field, port| port_key(HOOK_SOCKET_CONNECT, field, port);
        assert_eq!(img.ports[&key(NET_DEST, 8001)].pos, 1);
        assert_eq!(img.ports[&key(NET_SOURCE, 22)].neg, 1);
        assert!(!img.ports.contains_key(&key(NET_DEST, 22)));
    }

    #[test]
    fn tcp_connect_selectors_only_match_tcp_over_ip() {
        let img = compile(&[(1, &connect_policy(true, vec![]))]).unwrap();
        let f: Vec<&NumFilter> = img.num_filt.values().collect();
        assert_eq!(
            f.len(),
            2,
            "the implicit selector gets the TCP condition too"
        );
        assert_eq!(f[0].arg, ARG_ATTR_BASE + ATTR_SOCK_FAMILY);
        assert_eq!(&f[0].values[..2], &[2, 10]);
        assert_eq!(f[1].arg, ARG_ATTR_BASE + ATTR_SOCK_PROTOCOL);
        assert_eq!(f[1].values[0], 6);
    }
}
