//! Selector evaluation: a few map lookups give the set of matching selectors; the first
//! matching selector of each policy runs its actions.
use aya_ebpf::helpers::{
    bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_boot_ns,
    generated::{bpf_get_current_task, bpf_probe_read_kernel, bpf_send_signal},
};
use aya_ebpf::maps::LpmTrie;
use lsm_shared::*;

use crate::{
    kernel::{kconf, read_attrs},
    maps::{
        ADDR4, ADDR6, COUNTERS, EVENTS, HOOK_CFG, NUM_FILT, PIDS, PORTS, PROCS, SEL_ACT, STR_EQ,
        STR_POSTFIX, STR_PREFIX,
    },
    path::count,
    scratch::Scratch,
};

const EPERM: i32 = 1;
const SIGKILL: u32 = 9;

/// Copies `size` bytes between kernel buffers with one helper call (no unrolled loop).
#[inline(always)]
pub unsafe fn kcopy<T>(dst: *mut T, src: *const T) {
    // SAFETY: caller passes valid pointers to `T`s.
    unsafe {
        bpf_probe_read_kernel(
            dst as *mut _,
            core::mem::size_of::<T>() as u32,
            src as *const _,
        );
    }
}

/// The selector masks of the longest entry of `trie` that is a prefix of the first `len`
/// bytes at `src` (the path for `Prefix`, the reversed path for `Postfix`).
#[inline(always)]
fn lpm_lookup(
    s: &mut Scratch,
    trie: &LpmTrie<LpmStr, SelMasks>,
    scope: [u8; 4],
    src: *const u8,
    len: usize,
) -> SelMasks {
    s.lpm.prefix_len = SCOPE_BITS + 8 * len as u32;
    s.lpm.data.scope = scope;
    // SAFETY: copies LPM_STR_LEN bytes out of a STR_LEN-byte field of a live record.
    unsafe {
        bpf_probe_read_kernel(
            s.lpm.data.bytes.as_mut_ptr() as *mut _,
            LPM_STR_LEN as u32,
            src as *const _,
        )
    };
    trie.get(&s.lpm)
        .copied()
        .unwrap_or(SelMasks { pos: 0, neg: 0 })
}

/// Narrows the candidate set by the string filters of one subject. `inherited` are the
/// `followChildren` selectors whose binary an ancestor ran: they count as listing this one.
#[inline(always)]
fn match_strings(
    s: &mut Scratch,
    hook: u32,
    cfg: &HookConfig,
    mut cand: u64,
    subject: u8,
    rec: *const PathRec,
    inherited: u64,
) -> u64 {
    let base = str_class(subject, 0, false);
    let mut any = 0u64;
    let mut c = 0;
    while c < 6 {
        any |= cfg.uses[base + c];
        c += 1;
    }
    if any == 0 {
        return cand;
    }
    // SAFETY: `rec` points to a live map value or scratch record.
    let (len, flags) = unsafe { ((*rec).len as usize, (*rec).flags) };
    if flags & PATH_UNRESOLVED != 0 && subject == SUBJECT_ARG {
        // Fail closed: enforcing selectors match whatever their string filters say.
        let mut c = 0;
        while c < 6 {
            cand &= cfg.enforcing | !cfg.uses[base + c];
            c += 1;
        }
        return cand;
    }
    let scope = str_scope(hook, subject);

    let u_pos = cfg.uses[str_class(subject, FAMILY_EQUAL, false)];
    let u_neg = cfg.uses[str_class(subject, FAMILY_EQUAL, true)];
    if u_pos | u_neg != 0 {
        let mut m = SelMasks { pos: 0, neg: 0 };
        // A longer path cannot equal any value (values are at most STR_LEN bytes).
        if len <= STR_LEN {
            s.key.scope = scope;
            // SAFETY: both are STR_LEN-byte arrays.
            unsafe { kcopy(&mut s.key.bytes, &(*rec).head) };
            // SAFETY: plain lookup; the value is copied out.
            if let Some(v) = unsafe { STR_EQ.get(&s.key) } {
                m = *v;
            }
        }
        m.pos |= inherited & u_pos;
        m.neg |= inherited & u_neg;
        cand &= (m.pos | !u_pos) & (!m.neg | !u_neg);
    }

    let lpm_len = if len > LPM_STR_LEN { LPM_STR_LEN } else { len };
    // SAFETY (both): `rec` points to a live record; head and tail_rev are STR_LEN bytes.
    let families = [
        (FAMILY_PREFIX, &STR_PREFIX, unsafe { (*rec).head.as_ptr() }),
        (FAMILY_POSTFIX, &STR_POSTFIX, unsafe {
            (*rec).tail_rev.as_ptr()
        }),
    ];
    for (family, trie, src) in families {
        let u_pos = cfg.uses[str_class(subject, family, false)];
        let u_neg = cfg.uses[str_class(subject, family, true)];
        if u_pos | u_neg != 0 {
            let m = lpm_lookup(s, trie, scope, src, lpm_len);
            cand &= (m.pos | !u_pos) & (!m.neg | !u_neg);
        }
    }
    cand
}

/// Whether an argument passes a numeric filter. Every value test returns early, so the
/// verifier sees one path per value rather than one per combination of outcomes.
#[inline(always)]
fn num_match(f: &NumFilter, raw: u64) -> bool {
    let signed = f.flags & NUM_SIGNED != 0;
    let v = match f.width {
        1 if signed => raw as i8 as i64 as u64,
        1 => raw as u8 as u64,
        2 if signed => raw as i16 as i64 as u64,
        2 => raw as u16 as u64,
        4 if signed => raw as i32 as i64 as u64,
        4 => raw as u32 as u64,
        _ => raw,
    };
    let n = f.nvalues as usize;
    let op = f.op;
    let ranges = op == NUM_OP_IN_RANGE || op == NUM_OP_NOT_IN_RANGE;
    // A hit means: Equal/GT/LT/Mask/InRange match; NotEqual/NotInRange fail.
    let negated = op == NUM_OP_NOT_EQUAL || op == NUM_OP_NOT_IN_RANGE || op == NUM_OP_NOT_MASK;
    let mut i = 0usize;
    while i < NUM_FILTER_VALUES {
        if i >= n {
            break;
        }
        let x = f.values[i];
        let hit = if ranges {
            let hi = if i + 1 < NUM_FILTER_VALUES {
                f.values[i + 1]
            } else {
                x
            };
            i += 1;
            if signed {
                (v as i64) >= (x as i64) && (v as i64) <= (hi as i64)
            } else {
                v >= x && v <= hi
            }
        } else if op == NUM_OP_EQUAL || op == NUM_OP_NOT_EQUAL {
            v == x
        } else if op == NUM_OP_GT {
            if signed {
                (v as i64) > (x as i64)
            } else {
                v > x
            }
        } else if op == NUM_OP_LT {
            if signed {
                (v as i64) < (x as i64)
            } else {
                v < x
            }
        } else if op == NUM_OP_MASK || op == NUM_OP_NOT_MASK {
            v & x != 0
        } else {
            false
        };
        if hit {
            return !negated;
        }
        i += 1;
    }
    negated
}

/// Evaluates every selector of `hook` for the current task; returns the hook's verdict
/// (0, or the negative errno of the first denying selector). `rec` is the hook's file or
/// path argument, when it has one.
#[inline(always)]
pub fn evaluate(
    s: &mut Scratch,
    hook: u32,
    rec: Option<*const PathRec>,
    args: &[u64; MAX_ARGS],
) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if tgid == kconf!(agent_tgid) {
        return 0;
    }
    let Some(cfg) = HOOK_CFG.get(hook) else {
        return 0;
    };
    let mut cand = cfg.selectors;
    if cand == 0 {
        return 0;
    }
    if let Some(rec) = rec {
        cand = match_strings(s, hook, cfg, cand, SUBJECT_ARG, rec, 0);
    }
    let info = PROCS.get_ptr(tgid);
    if cand != 0 {
        let (exe, inherited): (*const PathRec, u64) = match info {
            // SAFETY: pointer to a live map value; `hook` is below NUM_HOOKS.
            Some(p) => unsafe {
                let h = hook as usize;
                let f = if h < NUM_HOOKS as usize {
                    (*p).follow[h]
                } else {
                    0
                };
                (&(*p).exe, f & cfg.follow)
            },
            None => {
                // Unknown process (e.g. a kernel thread): an empty, resolved binary path.
                // SAFETY: zero is at least as large as a PathRec's flags/len prefix.
                unsafe { kcopy(&mut s.exe, s.zero.as_ptr() as *const PathRec) };
                s.exe.flags = PATH_RESOLVED;
                (&s.exe, 0)
            }
        };
        cand = match_strings(s, hook, cfg, cand, SUBJECT_BINARY, exe, inherited);
    }
    if cand != 0 {
        cand = match_pids(s, hook, cfg, cand, info, tgid);
    }
    // Constant after inlining: only socket_connect carries a connection.
    let net = hook == HOOK_SOCKET_CONNECT;
    if net && cand != 0 {
        cand = match_net(s, hook, cfg, cand);
    }
    if cand != 0 && cfg.attrs != 0 {
        // SAFETY: plain helper call.
        let task = unsafe { bpf_get_current_task() };
        read_attrs(task, cfg.attrs, &mut s.attrs);
    }
    let nf = cfg.num_filters;
    let bank = cfg.num_bank;
    let mut i = 0u32;
    while i < MAX_NUM_FILTERS {
        if i >= nf || cand == 0 {
            break;
        }
        if let Some(f) = NUM_FILT.get(num_filt_index(hook, bank, i)) {
            let bit = 1u64 << (f.selector & 63);
            if cand & bit != 0 {
                // An explicit bound (not `%`) so the verifier can see the index is in range.
                let idx = f.arg as usize;
                let attr = idx.wrapping_sub(ARG_ATTR_BASE as usize);
                let raw = if idx < MAX_ARGS {
                    args[idx]
                } else if attr < NUM_ATTRS as usize {
                    s.attrs[attr]
                } else {
                    0
                };
                if !num_match(f, raw) {
                    cand &= !bit;
                }
            }
        }
        i += 1;
    }
    if cand == 0 {
        return 0;
    }
    let conn: Option<*const NetInfo> = if net { Some(&s.net) } else { None };
    fire(hook, cfg, cand, rec, conn, args, pid_tgid)
}

/// Narrows the candidate set by the address and port filters of `socket_connect`: one trie
/// lookup per address field and one array lookup per port field, whatever the number of
/// networks or ports listed. Connections that are not IPv4/IPv6 match no such filter.
#[inline(always)]
fn match_net(s: &mut Scratch, hook: u32, cfg: &HookConfig, cand: u64) -> u64 {
    let mut uses = 0u64;
    let mut c = 0;
    while c < 4 {
        uses |= cfg.addr_uses[c] | cfg.port_uses[c];
        c += 1;
    }
    if uses & cand == 0 {
        return cand;
    }
    let family = s.net.family;
    if family != AF_INET && family != AF_INET6 {
        return cand & !uses;
    }
    let cand = match_addr(s, hook, cfg, cand, NET_DEST);
    let cand = match_addr(s, hook, cfg, cand, NET_SOURCE);
    let (dport, sport) = (s.net.dport, s.net.sport);
    let cand = match_port(cfg, cand, NET_DEST, dport);
    match_port(cfg, cand, NET_SOURCE, sport)
}

#[inline(always)]
fn match_addr(s: &mut Scratch, hook: u32, cfg: &HookConfig, cand: u64, field: u32) -> u64 {
    let u_pos = cfg.addr_uses[net_class(field, false)];
    let u_neg = cfg.addr_uses[net_class(field, true)];
    if (u_pos | u_neg) & cand == 0 {
        return cand;
    }
    let addr = if field == NET_DEST {
        s.net.daddr
    } else {
        s.net.saddr
    };
    let found = if s.net.family == AF_INET {
        s.lpm4.prefix_len = 32 + 32;
        s.lpm4.data.scope = addr_scope(hook, field);
        s.lpm4.data.addr = [addr[0], addr[1], addr[2], addr[3]];
        ADDR4.get(&s.lpm4).copied()
    } else {
        s.lpm6.prefix_len = 32 + 128;
        s.lpm6.data.scope = addr_scope(hook, field);
        s.lpm6.data.addr = addr;
        ADDR6.get(&s.lpm6).copied()
    };
    let m = found.unwrap_or(SelMasks { pos: 0, neg: 0 });
    cand & (m.pos | !u_pos) & (!m.neg | !u_neg)
}

#[inline(always)]
fn match_port(cfg: &HookConfig, cand: u64, field: u32, port: u16) -> u64 {
    let u_pos = cfg.port_uses[net_class(field, false)];
    let u_neg = cfg.port_uses[net_class(field, true)];
    if (u_pos | u_neg) & cand == 0 {
        return cand;
    }
    let m = PORTS
        .get(port_index(field, port))
        .copied()
        .unwrap_or(SelMasks { pos: 0, neg: 0 });
    cand & (m.pos | !u_pos) & (!m.neg | !u_neg)
}

/// Narrows the candidate set by the `matchPIDs` filters: one hash lookup for the process
/// itself and, for `followForks` filters, one per remembered ancestor.
#[inline(always)]
fn match_pids(
    s: &mut Scratch,
    hook: u32,
    cfg: &HookConfig,
    cand: u64,
    info: Option<*const ProcInfo>,
    tgid: u32,
) -> u64 {
    // Called once per kind with a constant, so every class index is a constant too.
    let cand = match_pid_kind(s, hook, cfg, cand, info, tgid, PID_HOST);
    match_pid_kind(s, hook, cfg, cand, info, tgid, PID_NS)
}

#[inline(always)]
fn match_pid_kind(
    s: &mut Scratch,
    hook: u32,
    cfg: &HookConfig,
    cand: u64,
    info: Option<*const ProcInfo>,
    tgid: u32,
    kind: u32,
) -> u64 {
    let u_pos = cfg.pid_uses[pid_class(kind, false, false)];
    let u_neg = cfg.pid_uses[pid_class(kind, false, true)];
    let uf_pos = cfg.pid_uses[pid_class(kind, true, false)];
    let uf_neg = cfg.pid_uses[pid_class(kind, true, true)];
    if (u_pos | u_neg | uf_pos | uf_neg) & cand == 0 {
        return cand;
    }
    let follow = uf_pos | uf_neg != 0;
    // Plain locals rather than a struct: a zeroed struct becomes a memset call.
    let (mut pos, mut neg, mut fpos, mut fneg) = (0u64, 0u64, 0u64, 0u64);
    let mut i = 0usize;
    while i < LINEAGE_LEN {
        let pid = match info {
            // SAFETY: pointer to a live map value; `i` is below LINEAGE_LEN.
            Some(p) => unsafe {
                if kind == PID_HOST {
                    (*p).lineage[i]
                } else {
                    (*p).ns_lineage[i]
                }
            },
            None if i == 0 && kind == PID_HOST => tgid,
            None => 0,
        };
        if pid == 0 {
            break;
        }
        s.pid_key = PidKey { hook, kind, pid };
        // SAFETY: plain lookup; the value is only read.
        if let Some(m) = unsafe { PIDS.get(&s.pid_key) } {
            if i == 0 {
                pos |= m.pos;
                neg |= m.neg;
            }
            fpos |= m.follow_pos;
            fneg |= m.follow_neg;
        }
        if !follow {
            break;
        }
        i += 1;
    }
    cand & (pos | !u_pos) & (!neg | !u_neg) & (fpos | !uf_pos) & (!fneg | !uf_neg)
}

/// Runs the actions of the selectors in `cand`: the first match of each group fires. All
/// bitmap arithmetic, no loop: the verifier sees a handful of paths.
#[inline(always)]
fn fire(
    hook: u32,
    cfg: &HookConfig,
    cand: u64,
    rec: Option<*const PathRec>,
    conn: Option<*const NetInfo>,
    args: &[u64; MAX_ARGS],
    pid_tgid: u64,
) -> i32 {
    let fired = first_in_groups(cand, cfg.group_starts);
    if fired == 0 {
        return 0;
    }
    count(STAT_MATCHES);
    count_actions(hook, fired);
    let mut verdict = 0i32;
    if fired & cfg.kill != 0 {
        // SAFETY: signals the current task's process.
        unsafe { bpf_send_signal(SIGKILL) };
        verdict = -EPERM;
    }
    let sig = fired & cfg.signal;
    if sig != 0 {
        if let Some(act) = SEL_ACT.get(hook * MAX_SELECTORS + lowest_slot(sig)) {
            // SAFETY: as above.
            unsafe { bpf_send_signal(act.signal) };
        }
    }
    let ovr = fired & cfg.override_;
    if ovr != 0 && verdict == 0 {
        verdict = -EPERM;
        if let Some(act) = SEL_ACT.get(hook * MAX_SELECTORS + lowest_slot(ovr)) {
            // The kernel takes only errnos from an LSM program; the compiler already clamps.
            if act.error >= -4095 && act.error < 0 {
                verdict = act.error;
            }
        }
    }
    if verdict != 0 {
        count(STAT_DENIED);
    }
    let posted = fired & cfg.post;
    if posted != 0 {
        post(hook, fired, posted, verdict, rec, conn, args, pid_tgid);
    }
    verdict
}

/// Adds one to the action counters of every fired selector. The loop body only touches
/// memory, so its paths converge and the verifier walks each slot once.
#[inline(always)]
fn count_actions(hook: u32, fired: u64) {
    let mut slot = 0u32;
    while slot < MAX_SELECTORS {
        if fired >> slot == 0 {
            break;
        }
        if fired & (1u64 << slot) != 0 {
            let idx = hook * MAX_SELECTORS + slot;
            if let (Some(act), Some(c)) = (SEL_ACT.get(idx), COUNTERS.get_ptr_mut(idx)) {
                let f = act.flags;
                let monitor = f & ACT_MONITOR != 0;
                // SAFETY: this CPU's counters; nothing else writes them while we run.
                unsafe {
                    let c = &mut (*c).c;
                    if f & ACT_POST != 0 {
                        c[CNT_POST] += 1;
                    } else {
                        c[CNT_NOPOST] += 1;
                    }
                    if f & (ACT_SIGKILL | ACT_SIGNAL) != 0 {
                        c[if monitor {
                            CNT_MONITOR_SIGNAL
                        } else {
                            CNT_SIGNAL
                        }] += 1;
                    }
                    if f & ACT_OVERRIDE != 0 {
                        c[if monitor {
                            CNT_MONITOR_OVERRIDE
                        } else {
                            CNT_OVERRIDE
                        }] += 1;
                    }
                }
            }
        }
        slot += 1;
    }
}

#[inline(always)]
fn post(
    hook: u32,
    fired: u64,
    posted: u64,
    verdict: i32,
    rec: Option<*const PathRec>,
    conn: Option<*const NetInfo>,
    args: &[u64; MAX_ARGS],
    pid_tgid: u64,
) {
    let Some(mut entry) = EVENTS.reserve::<HookEvent>(0) else {
        count(STAT_RING_LOST);
        return;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` is a reserved, exclusively owned ring-buffer record of the right size.
    unsafe {
        (*ev).header = EventHeader {
            kind: EVENT_HOOK,
            cpu: bpf_get_smp_processor_id(),
            ktime: bpf_ktime_get_boot_ns(),
            pid: pid_tgid as u32,
            tgid: (pid_tgid >> 32) as u32,
        };
        (*ev).hook = hook;
        (*ev).retval = verdict;
        (*ev).fired = fired;
        (*ev).posted = posted;
        (*ev).args = *args;
        match rec {
            Some(r) => kcopy(&mut (*ev).path, r),
            None => {
                (*ev).path.len = 0;
                (*ev).path.flags = 0;
            }
        }
        match conn {
            Some(n) => kcopy(&mut (*ev).net, n),
            None => (*ev).net = NetInfo::default(),
        }
    }
    entry.submit(0);
}
