//! Selector evaluation: a few map lookups give the set of matching selectors; the first
//! matching selector of each policy runs its actions.
use aya_ebpf::helpers::{
    bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_boot_ns,
    generated::{bpf_probe_read_kernel, bpf_send_signal},
};
use lsm_shared::*;

use crate::{
    kernel::kconf,
    maps::{EVENTS, HOOK_CFG, NUM_FILT, PROCS, SEL_ACT, STR_EQ, STR_POSTFIX, STR_PREFIX},
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

/// Narrows the candidate set by the string filters of one subject.
#[inline(always)]
fn match_strings(
    s: &mut Scratch,
    hook: u32,
    cfg: &HookConfig,
    mut cand: u64,
    subject: u8,
    rec: *const PathRec,
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
        cand &= (m.pos | !u_pos) & (!m.neg | !u_neg);
    }

    let lpm_len = if len > LPM_STR_LEN { LPM_STR_LEN } else { len };
    let u_pos = cfg.uses[str_class(subject, FAMILY_PREFIX, false)];
    let u_neg = cfg.uses[str_class(subject, FAMILY_PREFIX, true)];
    if u_pos | u_neg != 0 {
        s.lpm.prefix_len = SCOPE_BITS + 8 * lpm_len as u32;
        s.lpm.data.scope = scope;
        // SAFETY: copies LPM_STR_LEN bytes out of the STR_LEN-byte head.
        unsafe {
            bpf_probe_read_kernel(
                s.lpm.data.bytes.as_mut_ptr() as *mut _,
                LPM_STR_LEN as u32,
                (*rec).head.as_ptr() as *const _,
            )
        };
        let m = STR_PREFIX
            .get(&s.lpm)
            .copied()
            .unwrap_or(SelMasks { pos: 0, neg: 0 });
        cand &= (m.pos | !u_pos) & (!m.neg | !u_neg);
    }

    let u_pos = cfg.uses[str_class(subject, FAMILY_POSTFIX, false)];
    let u_neg = cfg.uses[str_class(subject, FAMILY_POSTFIX, true)];
    if u_pos | u_neg != 0 {
        s.lpm.prefix_len = SCOPE_BITS + 8 * lpm_len as u32;
        s.lpm.data.scope = scope;
        // SAFETY: as above, from the reversed tail.
        unsafe {
            bpf_probe_read_kernel(
                s.lpm.data.bytes.as_mut_ptr() as *mut _,
                LPM_STR_LEN as u32,
                (*rec).tail_rev.as_ptr() as *const _,
            )
        };
        let m = STR_POSTFIX
            .get(&s.lpm)
            .copied()
            .unwrap_or(SelMasks { pos: 0, neg: 0 });
        cand &= (m.pos | !u_pos) & (!m.neg | !u_neg);
    }
    cand
}

#[inline(always)]
fn num_match(f: &NumFilter, raw: u64) -> bool {
    let v = match f.width {
        1 => {
            if f.flags & NUM_SIGNED != 0 {
                raw as i8 as i64 as u64
            } else {
                raw as u8 as u64
            }
        }
        2 => {
            if f.flags & NUM_SIGNED != 0 {
                raw as i16 as i64 as u64
            } else {
                raw as u16 as u64
            }
        }
        4 => {
            if f.flags & NUM_SIGNED != 0 {
                raw as i32 as i64 as u64
            } else {
                raw as u32 as u64
            }
        }
        _ => raw,
    };
    let signed = f.flags & NUM_SIGNED != 0;
    let n = f.nvalues as usize;
    let mut i = 0usize;
    let mut any = false;
    let mut all_outside = true;
    while i < NUM_FILTER_VALUES {
        if i >= n {
            break;
        }
        let x = f.values[i];
        match f.op {
            NUM_OP_EQUAL => any |= v == x,
            NUM_OP_NOT_EQUAL => any |= v == x,
            NUM_OP_GT => {
                any |= if signed {
                    (v as i64) > (x as i64)
                } else {
                    v > x
                }
            }
            NUM_OP_LT => {
                any |= if signed {
                    (v as i64) < (x as i64)
                } else {
                    v < x
                }
            }
            NUM_OP_MASK => any |= v & x != 0,
            NUM_OP_IN_RANGE | NUM_OP_NOT_IN_RANGE => {
                if i + 1 < NUM_FILTER_VALUES {
                    let hi = f.values[i + 1];
                    let inside = if signed {
                        (v as i64) >= (x as i64) && (v as i64) <= (hi as i64)
                    } else {
                        v >= x && v <= hi
                    };
                    any |= inside;
                    all_outside &= !inside;
                }
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    match f.op {
        NUM_OP_NOT_EQUAL => !any,
        NUM_OP_NOT_IN_RANGE => all_outside,
        _ => any,
    }
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
        cand = match_strings(s, hook, cfg, cand, SUBJECT_ARG, rec);
    }
    if cand != 0 {
        let exe: *const PathRec = match PROCS.get_ptr(tgid) {
            // SAFETY: pointer to a live map value.
            Some(p) => unsafe { &(*p).exe },
            None => {
                // Unknown process (e.g. a kernel thread): an empty, resolved binary path.
                // SAFETY: zero is at least as large as a PathRec's flags/len prefix.
                unsafe { kcopy(&mut s.exe, s.zero.as_ptr() as *const PathRec) };
                s.exe.flags = PATH_RESOLVED;
                &s.exe
            }
        };
        cand = match_strings(s, hook, cfg, cand, SUBJECT_BINARY, exe);
    }
    let nf = cfg.num_filters;
    let mut i = 0u32;
    while i < MAX_NUM_FILTERS {
        if i >= nf || cand == 0 {
            break;
        }
        if let Some(f) = NUM_FILT.get(hook * MAX_NUM_FILTERS + i) {
            let bit = 1u64 << (f.selector & 63);
            if cand & bit != 0 {
                let raw = args[(f.arg as usize) % MAX_ARGS];
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
    fire(s, hook, cand, rec, args, pid_tgid)
}

#[inline(always)]
fn fire(
    s: &mut Scratch,
    hook: u32,
    mut cand: u64,
    rec: Option<*const PathRec>,
    args: &[u64; MAX_ARGS],
    pid_tgid: u64,
) -> i32 {
    let mut verdict = 0i32;
    let mut slot = 0u32;
    while slot < MAX_SELECTORS {
        if cand == 0 {
            break;
        }
        let bit = 1u64 << slot;
        if cand & bit != 0 {
            if let Some(act) = SEL_ACT.get(hook * MAX_SELECTORS + slot) {
                cand &= !(act.policy_slots | bit);
                count(STAT_MATCHES);
                let mut ret = 0i32;
                if act.flags & ACT_MONITOR == 0 {
                    if act.flags & ACT_SIGKILL != 0 {
                        // SAFETY: signals the current task's process.
                        unsafe { bpf_send_signal(SIGKILL) };
                        ret = -EPERM;
                    }
                    if act.flags & ACT_SIGNAL != 0 {
                        // SAFETY: as above.
                        unsafe { bpf_send_signal(act.signal) };
                    }
                    if act.flags & ACT_OVERRIDE != 0 && ret == 0 {
                        ret = act.error;
                    }
                }
                if ret != 0 {
                    count(STAT_DENIED);
                    if verdict == 0 {
                        verdict = ret;
                    }
                }
                if act.flags & ACT_POST != 0 {
                    post(s, hook, slot, act, ret, rec, args, pid_tgid);
                }
            } else {
                cand &= !bit;
            }
        }
        slot += 1;
    }
    verdict
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn post(
    _s: &mut Scratch,
    hook: u32,
    slot: u32,
    act: &SelectorAction,
    ret: i32,
    rec: Option<*const PathRec>,
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
        (*ev).selector = slot;
        (*ev).policy_id = act.policy_id;
        (*ev).actions = act.flags;
        (*ev).retval = ret;
        (*ev)._pad = 0;
        (*ev).args = *args;
        match rec {
            Some(r) => kcopy(&mut (*ev).path, r),
            None => {
                (*ev).path.len = 0;
                (*ev).path.flags = 0;
            }
        }
    }
    entry.submit(0);
}
