//! Selector evaluation: a few map lookups give the set of matching selectors; the first
//! matching selector of each policy runs its actions. The bit arithmetic is `lsm-shared`'s
//! (host-tested there); this module adds the lookups and the helper calls.
use aya_ebpf::{
    helpers::generated::{
        bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_loop,
        bpf_probe_read_kernel, bpf_send_signal,
    },
    maps::LpmTrie,
};
use core::ffi::c_void;

use lsm_shared::*;

use crate::{
    args,
    entry::{Current, now},
    event::emit,
    kernel::{kconf, read_attrs},
    maps::{
        ADDR4, ADDR6, AGENTS, CGROUPS, COUNTERS, FILE_VERDICTS, NUM_FILT, NUM_SET, PIDS, PLAN_GEN,
        PORTS, PROCS, SCRATCH, SEL_ACT, SOCK_OWNERS, STR_EQ, STR_POSTFIX, STR_PREFIX, hook_cfg_at,
    },
    path::count,
    scratch::Scratch,
};

const SIGKILL: u32 = 9;

/// Copies a `T` between kernel buffers with one helper call (no unrolled loop).
///
/// # Safety
/// `dst` must be valid for writes and `src` for reads of `size_of::<T>()` bytes.
#[inline(always)]
pub unsafe fn kcopy<T>(dst: *mut T, src: *const T) {
    // SAFETY: the caller passes valid pointers to `T`s; the helper copies exactly one `T`
    // and reports (rather than faults on) an unreadable source.
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
    s.lpm.prefix_len = str_prefix_bits(len);
    s.lpm.data.scope = scope;
    // SAFETY: copies LPM_STR_LEN bytes into the key, out of a STR_LEN-byte field of a live
    // record (STR_LEN > LPM_STR_LEN).
    unsafe {
        bpf_probe_read_kernel(
            s.lpm.data.bytes.as_mut_ptr() as *mut _,
            LPM_STR_LEN as u32,
            src as *const _,
        )
    };
    trie.get(&s.lpm).copied().unwrap_or(SelMasks::NONE)
}

/// A string record to match. The generic reader leaves a cached file's record in the
/// cache: then its length and flags are in the scratch record and its bytes at the address
/// in [`Scratch::str_at`] (a number to the verifier, read with helpers only).
#[derive(Clone, Copy)]
enum RecRef {
    /// One record, header and bytes.
    Whole(*const PathRec),
    /// The generic reader's record of the subject's argument: the header here, the bytes
    /// where `str_at` says. The address is read again at each use rather than kept in a
    /// register: that would cost the evaluator's frame the 16 bytes that 6.1's stack budget
    /// does not have (see `args::read_data`).
    Read,
}

impl RecRef {
    #[inline(always)]
    fn hdr(self, s: &Scratch, subject: u8) -> *const PathRec {
        match self {
            RecRef::Whole(r) => r,
            // SAFETY: address arithmetic in `strs`; the caller reads a subject below MAX_ARGS.
            RecRef::Read => unsafe { s.strs.as_ptr().add(subject as usize) },
        }
    }

    #[inline(always)]
    fn bytes(self, s: &Scratch, subject: u8) -> *const PathRec {
        match self {
            RecRef::Whole(r) => r,
            RecRef::Read => s.str_addr(subject as usize),
        }
    }
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
    rec: RecRef,
    inherited: u64,
) -> u64 {
    if cfg.str_uses(subject) == 0 {
        return cand;
    }
    let hdr = rec.hdr(s, subject);
    // SAFETY: `hdr` points to a live map value or scratch record.
    let (len, flags) = unsafe { ((*hdr).len as usize, (*hdr).flags) };
    if flags & PATH_UNRESOLVED != 0 && subject != SUBJECT_BINARY {
        return cfg.fail_closed(cand, subject);
    }
    let scope = str_scope(hook, subject);

    let uses = cfg.str_uses_of(subject, FAMILY_EQUAL);
    if uses.any() != 0 {
        let mut m = SelMasks::NONE;
        // A longer path cannot equal any value (values are at most STR_LEN bytes).
        if len <= STR_LEN {
            s.key.scope = scope;
            let at = rec.bytes(s, subject);
            // SAFETY: both are STR_LEN-byte arrays; `at` is the address of a live record.
            unsafe { kcopy(&mut s.key.bytes, &raw const (*at).head) };
            // SAFETY: the program runs under RCU, so the element stays valid until it returns
            // even if user space deletes it; it is copied out at once, and an update racing
            // with the copy gives the old or the new bitmaps of a policy being replaced.
            if let Some(v) = unsafe { STR_EQ.get(&s.key) } {
                m = *v;
            }
        }
        m.pos |= inherited & uses.pos;
        m.neg |= inherited & uses.neg;
        cand = narrow(cand, m, uses);
    }

    // One call per family rather than a loop over a local array, whose bounds check would
    // leave a panic path the verifier refuses.
    let lpm_len = if len > LPM_STR_LEN { LPM_STR_LEN } else { len };
    let uses = cfg.str_uses_of(subject, FAMILY_PREFIX);
    if uses.any() != 0 {
        let at = rec.bytes(s, subject);
        // SAFETY: address arithmetic only; `head` is STR_LEN bytes, read by the helper.
        let head = unsafe { (&raw const (*at).head).cast::<u8>() };
        cand = narrow(cand, lpm_lookup(s, &STR_PREFIX, scope, head, lpm_len), uses);
    }
    let uses = cfg.str_uses_of(subject, FAMILY_POSTFIX);
    if uses.any() != 0 {
        let at = rec.bytes(s, subject);
        // SAFETY: as above, for `tail_rev`.
        let tail = unsafe { (&raw const (*at).tail_rev).cast::<u8>() };
        cand = narrow(
            cand,
            lpm_lookup(s, &STR_POSTFIX, scope, tail, lpm_len),
            uses,
        );
    }
    cand
}

/// [`match_strings`] on the file argument `file` of a hand-written file hook, through the
/// file's verdict: string narrowing is `cand & keep` with `keep` what it leaves of the hook's
/// selectors (`narrow` and `fail_closed` only clear bits), and the cached path of an open file
/// does not change; so `keep` is computed once per file, hook and plan generation, and a
/// later call on the file costs one lookup instead of the path's prefix and equality lookups.
/// The lookup is [`file_passes`]'s, which every file hook makes first: this uses what it
/// found, or computes the verdict and stores it under the generation it read.
#[inline(always)]
fn match_file(
    s: &mut Scratch,
    hook: u32,
    cfg: &HookConfig,
    cand: u64,
    rec: *const PathRec,
    file: u64,
) -> u64 {
    if cfg.str_uses(SUBJECT_ARG) == 0 || cand == 0 {
        return cand;
    }
    // SAFETY: a field of the scratch area; volatile, as `file_passes` stored it.
    if unsafe { core::ptr::read_volatile(&s.verdict_known) } != 0 {
        return cand & s.verdict.keep;
    }
    // No file (an anonymous mapping) has nothing to key a verdict by; a path that could not
    // be resolved fails closed this time, and a later call may resolve it.
    // SAFETY: `rec` points to a live map value or scratch record.
    let keeps = file != 0 && unsafe { (*rec).flags } & PATH_UNRESOLVED == 0;
    // One copy of the matching for both cases, so the verifier walks it once. Kept: what the
    // filters leave of the hook's selectors, not of all 64 bits, so that a file no selector
    // can match keeps 0 and `file_passes` decides its next calls alone.
    let from = if keeps { cfg.selectors } else { cand };
    let keep = match_strings(s, hook, cfg, from, SUBJECT_ARG, RecRef::Whole(rec), 0);
    if keeps {
        s.verdict.keep = keep;
        let _ = FILE_VERDICTS.insert(&file, &s.verdict, 0);
    }
    cand & keep
}

/// The arguments of one call, as the entry point hands them over.
#[derive(Clone, Copy)]
pub enum Input<'a> {
    /// Read by a hand-written program: the string record of argument 0 (its file or path),
    /// if the hook has one, and the argument values.
    Ready {
        rec: Option<*const PathRec>,
        args: &'a [u64; MAX_ARGS],
        /// `args[0]` is the open file `rec` is the path of (a file hook): its verdict is kept
        /// ([`match_file`]).
        file: bool,
    },
    /// The hook's first `nargs` raw arguments in `Scratch::raw`, read by [`args::read`]
    /// following the hook's descriptors, and only once the cheap checks leave a candidate
    /// selector.
    Raw { nargs: usize },
}

/// Evaluates every selector of `hook` for the current task `cur`; returns the hook's verdict
/// (0, or the negative errno of the first denying selector). `rec` is the hook's file or
/// path argument, when it has one.
#[inline(always)]
pub fn evaluate(
    s: &mut Scratch,
    cur: Current,
    hook: u32,
    rec: Option<*const PathRec>,
    args: &[u64; MAX_ARGS],
) -> i32 {
    let input = Input::Ready {
        rec,
        args,
        file: false,
    };
    evaluate_at(s, cur, hook, input, Mode::Lsm, None)
}

/// [`evaluate`] for a file hook (`mode` is [`Mode::Lsm`] or [`Mode::Fallback`]): `args[0]`
/// is the open file `rec` is the path of, whose verdict is kept ([`match_file`]).
#[inline(always)]
pub fn evaluate_file(
    s: &mut Scratch,
    cur: Current,
    hook: u32,
    rec: *const PathRec,
    args: &[u64; MAX_ARGS],
    mode: Mode,
) -> i32 {
    let input = Input::Ready {
        rec: Some(rec),
        args,
        file: true,
    };
    evaluate_at(s, cur, hook, input, mode, None)
}

/// Whether `file`'s kept verdict at `hook` ([`match_file`]), under the live plan, lets no
/// selector through: then the call is allowed, with no event, on this lookup alone. A file
/// hook asks first, before it looks the path up or reads the plan, which is what makes the
/// second read of a file that no selector names cost one lookup. What it found (or that it
/// found nothing current) stays in `s.verdict` for [`match_file`].
#[inline(always)]
pub fn file_passes(s: &mut Scratch, file: u64, hook: u32) -> bool {
    s.verdict = FileVerdict {
        generation: PLAN_GEN.get(0).copied().unwrap_or(0),
        hook,
        _pad: 0,
        keep: 0,
    };
    let mut known = 0u64;
    // No verdict is kept for no file (an anonymous mapping).
    if file != 0
        // SAFETY: the program runs under RCU, so the element stays valid until it returns;
        // its fields are read at once.
        && let Some(v) = unsafe { FILE_VERDICTS.get(&file) }
        && v.generation == s.verdict.generation
        && v.hook == hook
    {
        s.verdict.keep = v.keep;
        known = 1;
    }
    // SAFETY: a field of the scratch area, which this program alone uses.
    unsafe { core::ptr::write_volatile(&mut s.verdict_known, known) };
    known != 0 && s.verdict.keep == 0
}

/// Keeps the verdict of a file just opened at the file hook `hook`, as [`match_file`] would
/// keep it at the file's first call there: `file_open` has the path in hand (`bpf_d_path`),
/// so the first read of a file no selector names ends at [`file_passes`] like every later one,
/// and its path need not be cached at all. Returns whether that verdict passes every call
/// (then no call at `hook` will want the path); false also when nothing was kept: no plan at
/// `hook`, or a path that could not be resolved (which fails closed at each call instead).
///
/// A `bool`, not the verdict in an `Option`: the compiler reads an `Option`'s payload without
/// its tag where the result would not depend on it, and the verifier refuses that read of a
/// register never written.
#[inline(always)]
pub fn open_verdict_passes(s: &mut Scratch, file: u64, hook: u32, rec: *const PathRec) -> bool {
    // SAFETY: `rec` points to the scratch record the caller filled.
    if unsafe { (*rec).flags } & PATH_UNRESOLVED != 0 {
        return false;
    }
    // The generation before the plan, as `file_passes` reads them: a plan replaced in between
    // leaves a verdict of the old generation, which the next call recomputes.
    let generation = PLAN_GEN.get(0).copied().unwrap_or(0);
    let Some((_, cfg)) = hook_cfg_at(hook) else {
        return false;
    };
    let keep = if cfg.str_uses(SUBJECT_ARG) == 0 {
        cfg.selectors
    } else {
        match_strings(
            s,
            hook,
            cfg,
            cfg.selectors,
            SUBJECT_ARG,
            RecRef::Whole(rec),
            0,
        )
    };
    s.verdict = FileVerdict {
        generation,
        hook,
        _pad: 0,
        keep,
    };
    let _ = FILE_VERDICTS.insert(&file, &s.verdict, 0);
    keep == 0
}

/// Keeps, for `file`, a verdict that lets no selector of the current file hook through,
/// under the generation [`file_passes`] read (it must have run): for overlayfs' own file of a
/// layer, which the hooks pass (`path::is_layer_file`), so that the second hook call of every
/// read of a file in a container costs one lookup, not the lookups and reads of that test.
/// `file_free_security` drops it with the file, as any verdict.
#[inline(always)]
pub fn pass_file(s: &mut Scratch, file: u64) {
    keep_passing(s, file, s.verdict.generation, s.verdict.hook);
}

/// Keeps, for `file`, a verdict that lets no selector of the file hook `hook` through under
/// plan generation `generation`: [`pass_file`], and `file_open`'s verdicts for
/// `file_permission` that need no path (a layer's file, a dentry's kept verdict).
#[inline(always)]
pub fn keep_passing(s: &mut Scratch, file: u64, generation: u64, hook: u32) {
    s.verdict = FileVerdict {
        generation,
        hook,
        _pad: 0,
        keep: 0,
    };
    let _ = FILE_VERDICTS.insert(&file, &s.verdict, 0);
}

/// Which kind of entry point asks, which decides what a match can do.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// An LSM program: the verdict denies.
    Lsm,
    /// The kprobe on an LSM hook's `security_*` function (BPF LSM inactive): events, and
    /// `Sigkill` after the fact only with `--fallback-sigkill`.
    Fallback,
    /// The generic kprobe, kretprobe or tracepoint of a policy's own target: events, and
    /// `Sigkill` after the fact, as Tetragon does there.
    Probe,
    /// The generic kprobe of a target whose policies `Override`: as [`Mode::Probe`], and the
    /// verdict is the error the entry point makes the function return
    /// (`bpf_override_return`), so the function body does not run.
    ProbeOverride,
    /// The USDT program of a probe whose policies `Set` an argument: as [`Mode::Probe`], and
    /// the verdict is the slot + 1 of the first `Set` selector that fired (0: none), whose
    /// write the program does.
    ProbeSet,
}

impl Mode {
    /// A policy's own probe (not an LSM hook, nor its kprobe fallback).
    #[inline(always)]
    fn own_probe(self) -> bool {
        matches!(self, Mode::Probe | Mode::ProbeOverride | Mode::ProbeSet)
    }
}

/// [`evaluate`] for a hook whose raw arguments the entry stored in `s.raw`.
#[inline(always)]
pub fn evaluate_raw(s: &mut Scratch, cur: Current, hook: u32, nargs: usize) -> i32 {
    evaluate_at(s, cur, hook, Input::Raw { nargs }, Mode::Lsm, None)
}

/// [`evaluate`] for a kprobe entry point, which cannot deny: the same selectors match and
/// post the same events (marked [`HOOK_FLAG_KPROBE`]), `Override` is not applied, and
/// `Sigkill` only runs (after the fact) when the agent was started with `--fallback-sigkill`.
#[inline(always)]
pub fn observe(
    s: &mut Scratch,
    cur: Current,
    hook: u32,
    rec: Option<*const PathRec>,
    args: &[u64; MAX_ARGS],
) {
    let input = Input::Ready {
        rec,
        args,
        file: false,
    };
    evaluate_at(s, cur, hook, input, Mode::Fallback, None);
}

/// [`observe`] for a hook whose raw arguments the entry stored in `s.raw`.
#[inline(always)]
pub fn observe_raw(s: &mut Scratch, cur: Current, hook: u32, nargs: usize) {
    evaluate_at(s, cur, hook, Input::Raw { nargs }, Mode::Fallback, None);
}

/// The generic probes: the raw arguments are in `s.raw`; `ret` is the return value at a
/// kretprobe (matched as [`ATTR_RETVAL`] and carried by the event).
#[inline(always)]
pub fn observe_probe(s: &mut Scratch, cur: Current, hook: u32, ret: Option<u64>) {
    evaluate_at(
        s,
        cur,
        hook,
        Input::Raw { nargs: MAX_ARGS },
        Mode::Probe,
        ret,
    );
}

/// [`observe_probe`] at a USDT site whose policies `Set` an argument: the slot + 1 of the
/// first `Set` selector that fired, or 0.
#[inline(always)]
pub fn set_probe(s: &mut Scratch, cur: Current, hook: u32) -> i32 {
    evaluate_at(
        s,
        cur,
        hook,
        Input::Raw { nargs: MAX_ARGS },
        Mode::ProbeSet,
        None,
    )
}

/// [`observe_probe`] at the entry of a function whose policies `Override` its return: the
/// error to return instead of running the function, or 0.
#[inline(always)]
pub fn override_probe(s: &mut Scratch, cur: Current, hook: u32) -> i32 {
    evaluate_at(
        s,
        cur,
        hook,
        Input::Raw { nargs: MAX_ARGS },
        Mode::ProbeOverride,
        None,
    )
}

/// `mode`, `ret`'s variant and the kind of `input` are constants at every call site, so
/// each entry point keeps only its branches.
#[inline(always)]
fn evaluate_at(
    s: &mut Scratch,
    cur: Current,
    hook: u32,
    input: Input,
    mode: Mode,
    ret: Option<u64>,
) -> i32 {
    let tgid = cur.tgid();
    if tgid == kconf!(agent_tgid) && cur.is_agent() {
        return 0;
    }
    // The return value waits in the scratch area, read again where it is used: kept in a
    // register for the whole evaluation it was spilled, and the kretprobe's frame is at
    // 6.1's stack budget (see `args::read_data`).
    if let Some(v) = ret {
        // SAFETY: a field of the scratch area, which this program alone uses.
        unsafe { core::ptr::write_volatile(&mut s.read.ret, v) };
    }
    let has_ret = ret.is_some();
    let Some((cfg_at, cfg)) = hook_cfg_at(hook) else {
        return 0;
    };
    let mut cand = cfg.selectors;
    // A file hook's verdict before the pod scope: it is usually kept (one lookup done), and
    // a file that no selector's path filters let through is decided without the cgroup
    // walk's lookups.
    if let Input::Ready {
        rec: Some(rec),
        args,
        file: true,
    } = input
    {
        cand = match_file(s, hook, cfg, cand, rec, args[0]);
    }
    if cand & cfg.scoped != 0 {
        cand = cfg.narrow_scope(cand, cgroup_scope(hook));
    }
    if cand == 0 {
        return 0;
    }
    // A newer agent taking over while this object's programs are still attached (pinned) must
    // not be denied by them: it loads its policies under them. Read only when some selector
    // is a candidate.
    if AGENTS.get(0).is_some_and(|&t| t != 0 && t == tgid) {
        return 0;
    }
    s.owner = 0;
    let (rec, nargs, args, file) = match input {
        Input::Ready { rec, args, file } => (rec, 0, args as *const [u64; MAX_ARGS], file),
        Input::Raw { nargs } => {
            args::read(s, cfg, cfg_at, nargs, has_ret);
            (None, nargs, &raw const s.vals, false)
        }
    };
    // SAFETY: the caller's array, or `s.vals`, which nothing writes until the program ends.
    let args = unsafe { &*args };
    if let Some(rec) = rec
        && !file
    {
        cand = match_strings(s, hook, cfg, cand, SUBJECT_ARG, RecRef::Whole(rec), 0);
    }
    let mut i = 0usize;
    while i < MAX_ARGS && i < nargs {
        if cand != 0 && s.str_mask() & (1 << i) != 0 {
            // The reader filled this record (`i < MAX_ARGS`).
            cand = match_strings(s, hook, cfg, cand, subject_arg(i as u32), RecRef::Read, 0);
        }
        i += 1;
    }
    // The process's entry only when a selector is still a candidate: most calls are decided
    // by their arguments, and this lookup was a hash lookup on every one of them.
    if cand != 0 {
        let info = PROCS.get_ptr(tgid);
        let (exe, inherited): (*const PathRec, u64) = match info {
            // SAFETY: pointer to a live map value.
            Some(p) => unsafe { (&(*p).exe, (*p).follow_bits(hook, cfg.follow)) },
            None => {
                // Unknown process (e.g. a kernel thread): an empty, resolved binary path.
                // SAFETY: the zero area is larger than a PathRec.
                unsafe { kcopy(&mut s.exe, s.zero.as_ptr() as *const PathRec) };
                s.exe.flags = PATH_RESOLVED;
                (&s.exe, 0)
            }
        };
        cand = match_strings(
            s,
            hook,
            cfg,
            cand,
            SUBJECT_BINARY,
            RecRef::Whole(exe),
            inherited,
        );
        if cand != 0 {
            cand = match_pids(s, hook, cfg, cand, info, tgid);
        }
    }
    // socket_connect carries its connection (a constant after inlining: a probe's hook id is
    // not one); a probe, the `sock`/`skb` argument its plan names, which the reader copied.
    let net = (!mode.own_probe() && hook == HOOK_SOCKET_CONNECT) || (nargs > 0 && cfg.net_arg != 0);
    if net && cand != 0 {
        cand = match_net(s, hook, cfg, cand);
    }
    if cand != 0 && cfg.attrs != 0 {
        read_attrs(cur.task(), cfg.attrs, &mut s.attrs);
    }
    // Also where no data is read: it clears the values the event copies. Not at a kretprobe
    // or a USDT Set program (constants at each call site, so those programs have no call):
    // their evaluator frames are at the verifier's 512-byte budget with the reader's
    // callbacks, which 6.1 enforces, and the policy compiler refuses `data` on them.
    if cand != 0 && !has_ret && !matches!(mode, Mode::ProbeSet) {
        args::read_data(cur.task(), cfg_at);
    }
    if has_ret {
        s.attrs[ATTR_RETVAL as usize] = s.ret();
    }
    let nf = cfg.num_filters;
    if nf != 0 && cand != 0 {
        cand = match_numbers(s, hook, cfg.num_bank, nf, cand, args);
    }
    if cand == 0 {
        return 0;
    }
    let conn: Option<*const NetInfo> = if net { Some(&s.net) } else { None };
    let strs = Strs {
        first: rec,
        read: nargs > 0,
    };
    fire(s, cur, hook, cfg, cand, strs, conn, args, mode, has_ret)
}

/// The loop state of [`match_numbers`], on the caller's stack, where `bpf_loop` hands it to
/// each step.
#[repr(C)]
struct NumLoop {
    hook: u32,
    bank: u32,
    cand: u64,
}

/// Narrows the candidate set by the first `nf` numeric filters of `hook`. A `bpf_loop`, not an
/// open-coded loop: the verifier walks [`num_filter_step`] once, where it walked an open-coded
/// body once per index (64 of them), in every program.
#[inline(always)]
fn match_numbers(
    s: &mut Scratch,
    hook: u32,
    bank: u32,
    nf: u32,
    cand: u64,
    args: *const [u64; MAX_ARGS],
) -> u64 {
    let mut l = NumLoop { hook, bank, cand };
    // The callback reads the arguments from the scratch area (where the generic reader put
    // them already; a hand-written hook's are copied there), not from this frame: the
    // evaluator's frame is on the verifier's 512-byte stack budget with the deepest callback.
    let vals = s.vals.as_mut_ptr();
    let mut i = 0usize;
    while i < MAX_ARGS {
        // SAFETY: `i < MAX_ARGS`, the length of both arrays; `args` is the caller's array or
        // `s.vals` itself (then each value is stored where it is read from).
        unsafe {
            let v = core::ptr::read_volatile((args as *const u64).add(i));
            core::ptr::write_volatile(vals.add(i), v);
        }
        i += 1;
    }
    let n = if nf > MAX_NUM_FILTERS {
        MAX_NUM_FILTERS
    } else {
        nf
    };
    // SAFETY: the callback is a static function of this object that takes bpf_loop's
    // (index, context) and reads the context as the `NumLoop` passed here, which lives on
    // this frame until the helper returns.
    unsafe {
        bpf_loop(
            n,
            num_filter_step as *mut c_void,
            &raw mut l as *mut c_void,
            0,
        )
    };
    // SAFETY: a local the callback wrote through its pointer; volatile so that the compiler
    // does not assume it still holds `cand`.
    unsafe { core::ptr::read_volatile(&l.cand) }
}

/// One numeric filter of [`match_numbers`]: 0 goes on, 1 stops (no candidate left).
#[inline(never)]
extern "C" fn num_filter_step(i: u64, ctx: *mut c_void) -> i64 {
    let l = ctx as *mut NumLoop;
    // SAFETY: bpf_loop passes the `NumLoop` of match_numbers' frame.
    let (hook, bank, cand) = unsafe { ((*l).hook, (*l).bank, (*l).cand) };
    if cand == 0 {
        return 1;
    }
    let Some(s) = SCRATCH.get_ptr(0) else {
        return 1;
    };
    let idx = num_filt_index(hook, bank, i as u32);
    if let Some(f) = NUM_FILT.get(idx) {
        let bit = 1u64 << (f.selector & 63);
        // SAFETY: `l` as above; `s` is this CPU's scratch slot, read only.
        let raw = unsafe { filter_operand(f.arg, &(*s).vals, &(*s).attrs) };
        let pass = if f.op == NUM_OP_IN_SET || f.op == NUM_OP_NOT_IN_SET {
            let key = NumSetKey {
                filter: idx,
                _pad: 0,
                value: f.operand(raw),
            };
            // SAFETY: the value is only tested for presence.
            let member = unsafe { NUM_SET.get(&key) }.is_some();
            member == (f.op == NUM_OP_IN_SET)
        } else {
            f.matches(raw)
        };
        if cand & bit != 0 && !pass {
            // SAFETY: `l` as above.
            unsafe { (*l).cand = cand & !bit };
        }
    }
    0
}

/// The scoped selectors of `hook` that apply to the current task: those of its deepest
/// cgroup listed in `CGROUPS` (its own, else the nearest listed ancestor, e.g. the pod's
/// cgroup for a container the agent has not seen yet), or of the host entry when none is.
/// At most `MAX_CGROUP_LEVEL` lookups, whatever the number of pods or policies.
#[inline(always)]
fn cgroup_scope(hook: u32) -> u64 {
    // SAFETY: a helper without arguments; it reads the current task's cgroup id.
    let own = unsafe { bpf_get_current_cgroup_id() };
    if let Some(m) = listed(own, hook) {
        return m;
    }
    let mut found: Option<u64> = None;
    let mut level = 1u32;
    while level < MAX_CGROUP_LEVEL {
        // SAFETY: a helper without pointer arguments; 0 means the task's cgroup is shallower
        // than `level`.
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) };
        if id == 0 || id == own {
            break;
        }
        if let Some(m) = listed(id, hook) {
            found = Some(m);
        }
        level += 1;
    }
    match found {
        Some(m) => m,
        None => listed(CGROUP_HOST, hook).unwrap_or(0),
    }
}

/// The scoped selectors of `hook` listed for cgroup `id`, if it has an entry.
#[inline(always)]
fn listed(id: u64, hook: u32) -> Option<u64> {
    // SAFETY: the program runs under RCU, so the element stays valid until it returns; the
    // mask is copied out at once.
    let v = unsafe { CGROUPS.get(&id) }?;
    Some(v.selectors[hook_slot(hook)])
}

/// Narrows the candidate set by the address and port filters of `socket_connect`: one trie
/// lookup per address field and one array lookup per port field, whatever the number of
/// networks or ports listed. Connections that are not IPv4/IPv6 match no such filter.
#[inline(always)]
fn match_net(s: &mut Scratch, hook: u32, cfg: &HookConfig, cand: u64) -> u64 {
    let uses = cfg.net_uses();
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
    let cand = match_port(hook, cfg, cand, NET_DEST, dport);
    match_port(hook, cfg, cand, NET_SOURCE, sport)
}

#[inline(always)]
fn match_addr(s: &mut Scratch, hook: u32, cfg: &HookConfig, cand: u64, field: u32) -> u64 {
    let uses = cfg.addr_uses_of(field);
    if uses.any() & cand == 0 {
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
    narrow(cand, found.unwrap_or(SelMasks::NONE), uses)
}

#[inline(always)]
fn match_port(hook: u32, cfg: &HookConfig, cand: u64, field: u32, port: u16) -> u64 {
    let uses = cfg.port_uses_of(field);
    if uses.any() & cand == 0 {
        return cand;
    }
    let found = PORTS.get_ptr(&port_key(hook, field, port)).map(|m| {
        // SAFETY: a live map value, copied out at once.
        unsafe { *m }
    });
    narrow(cand, found.unwrap_or(SelMasks::NONE), uses)
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
    let uses = cfg.pid_uses_of(kind, false);
    let follow_uses = cfg.pid_uses_of(kind, true);
    if (uses.any() | follow_uses.any()) & cand == 0 {
        return cand;
    }
    let follow = follow_uses.any() != 0;
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
        // SAFETY: as for STR_EQ in match_strings: valid under RCU, only read, plain bitmaps.
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
    let cand = narrow(cand, SelMasks { pos, neg }, uses);
    narrow(
        cand,
        SelMasks {
            pos: fpos,
            neg: fneg,
        },
        follow_uses,
    )
}

/// The string records of a call's arguments, for its event.
#[derive(Clone, Copy)]
struct Strs {
    /// Argument 0's record, from a hand-written program.
    first: Option<*const PathRec>,
    /// The generic reader ran: `Scratch::str_mask` says which records it filled.
    read: bool,
}

impl Strs {
    #[inline(always)]
    fn get(self, s: &Scratch, i: usize) -> Option<*const PathRec> {
        if i == 0
            && let Some(r) = self.first
        {
            return Some(r);
        }
        if self.read && i < MAX_ARGS && s.str_mask() & (1 << i) != 0 {
            return Some(s.str_addr(i));
        }
        None
    }
}

/// Runs the actions of the selectors in `cand`: the first match of each group fires. All
/// bitmap arithmetic, no loop: the verifier sees a handful of paths.
#[inline(always)]
#[expect(
    clippy::too_many_arguments,
    reason = "inlined into each entry point; a struct would go through the 512-byte stack"
)]
fn fire(
    s: &Scratch,
    cur: Current,
    hook: u32,
    cfg: &HookConfig,
    cand: u64,
    strs: Strs,
    conn: Option<*const NetInfo>,
    args: &[u64; MAX_ARGS],
    mode: Mode,
    has_ret: bool,
) -> i32 {
    let fired = cfg.fired(cand);
    if fired == 0 {
        return 0;
    }
    count(STAT_MATCHES);
    let observed = mode != Mode::Lsm;
    // Whether an observing entry point applies Sigkill (after the fact).
    let kills = mode.own_probe() || kconf!(fallback_sigkill) != 0;
    count_actions(hook, fired, observed, kills);
    let mut verdict = 0i32;
    let mut flags = 0u32;
    if observed {
        flags = if mode.own_probe() {
            HOOK_FLAG_PROBE
        } else {
            HOOK_FLAG_KPROBE
        };
        if has_ret {
            flags |= HOOK_FLAG_RETURN;
        }
        if fired & cfg.kill != 0 && kills {
            // SAFETY: signals the current task's process: the after-the-fact Sigkill of a
            // probe's policy, or the one the agent was asked for with --fallback-sigkill.
            unsafe { bpf_send_signal(SIGKILL) };
            flags |= HOOK_FLAG_KILL_SENT;
        }
    } else if fired & cfg.kill != 0 {
        // SAFETY: signals the current task's process, which is what a Sigkill action means.
        unsafe { bpf_send_signal(SIGKILL) };
        verdict = -EPERM;
    }
    let socks = fired & cfg.sock_acts;
    if socks != 0
        && let Some(act) = SEL_ACT.get(hook * MAX_SELECTORS + lowest_slot(socks))
        && let Some(&sock) = args.get(act.sock_pos as usize)
        && sock != 0
    {
        if act.flags & ACT_TRACK_SOCK != 0 {
            let owner = SockOwner {
                tgid: cur.tgid(),
                pid: cur.pid(),
            };
            let _ = SOCK_OWNERS.insert(&sock, &owner, 0);
        } else {
            let _ = SOCK_OWNERS.remove(&sock);
        }
    }
    let sig = fired & cfg.signal;
    if sig != 0
        && let Some(act) = SEL_ACT.get(hook * MAX_SELECTORS + lowest_slot(sig))
    {
        // SAFETY: signals the current task's process with the selector's signal.
        unsafe { bpf_send_signal(act.signal) };
    }
    // A kprobe's return value is ignored: no Override there, except at the entry of a
    // function whose policies override it.
    let ovr = fired & cfg.override_;
    if ovr != 0 && verdict == 0 && (!observed || mode == Mode::ProbeOverride) {
        // A missing action reads as error 0, which denies with -EPERM. At a function's
        // entry the value is returned as the policy wrote it (Tetragon's `argError: 1` on
        // `security_inode_copy_up_xattr` means "skip this attribute"); an LSM hook takes
        // errnos only.
        let act = SEL_ACT.get(hook * MAX_SELECTORS + lowest_slot(ovr));
        let error = act.map_or(0, |a| a.error);
        verdict = if mode == Mode::ProbeOverride && error != 0 {
            error
        } else {
            deny_errno(error)
        };
    }
    if verdict != 0 {
        count(STAT_DENIED);
    }
    // The write itself is the program's: it knows where the argument is at this site.
    let set = if mode == Mode::ProbeSet {
        fired & cfg.set_
    } else {
        0
    };
    if set != 0 {
        flags |= HOOK_FLAG_SET;
    }
    let posted = fired & cfg.post;
    if posted != 0 {
        // Denials, kills and signals may use the ring's reserve.
        let enforcement = verdict != 0 || flags & HOOK_FLAG_KILL_SENT != 0 || sig != 0;
        emit::<HookEvent>(cur.pid(), cur.tgid(), now(), enforcement, |ev| {
            // SAFETY: `ev` is the reserved record, ours alone until submitted, and `i` stays
            // below the length of its `strs`; the string records and `conn` are live
            // records of the copied types.
            unsafe {
                (*ev).hook = hook;
                (*ev).retval = verdict;
                (*ev).flags = flags;
                (*ev).owner = s.owner as u32;
                (*ev).point = s.point as u32;
                (*ev).fired = fired;
                (*ev).posted = posted;
                (*ev).retarg = if has_ret { s.ret() } else { 0 };
                // One 8-byte store per value: a plain copy of the array may become a byte
                // loop over the stack, which the verifier refuses for spilled registers.
                let mut i = 0usize;
                while i < MAX_ARGS {
                    core::ptr::write_volatile((*ev).args.as_mut_ptr().add(i), args[i]);
                    i += 1;
                }
                let mut i = 0usize;
                while i < MAX_ARGS {
                    let dst = (*ev).strs.as_mut_ptr().add(i);
                    match strs.get(s, i) {
                        Some(r) => kcopy(dst, r),
                        None => {
                            (*dst).len = 0;
                            (*dst).flags = 0;
                        }
                    }
                    i += 1;
                }
                match conn {
                    Some(n) => kcopy(&mut (*ev).net, n),
                    None => (*ev).net = NetInfo::default(),
                }
                let data = (*ev).data.as_mut_ptr();
                core::ptr::write_volatile(data, s.attrs[ATTR_DATA_BASE as usize]);
                core::ptr::write_volatile(data.add(1), s.attrs[ATTR_DATA_BASE as usize + 1]);
            }
        });
    }
    if set != 0 {
        return lowest_slot(set) as i32 + 1;
    }
    verdict
}

/// Adds one to the action counters of every fired selector. The loop body only touches
/// memory, so its paths converge and the verifier walks each slot once.
#[inline(always)]
fn count_actions(hook: u32, fired: u64, observed: bool, kills: bool) {
    let mut slot = 0u32;
    while slot < MAX_SELECTORS {
        if fired >> slot == 0 {
            break;
        }
        if fired & (1u64 << slot) != 0 {
            let idx = hook * MAX_SELECTORS + slot;
            if let (Some(act), Some(c)) = (SEL_ACT.get(idx), COUNTERS.get_ptr_mut(idx)) {
                // SAFETY: this CPU's counters; nothing else writes them while we run.
                unsafe {
                    if observed {
                        (*c).record_observed(act.flags, kills);
                    } else {
                        (*c).record(act.flags)
                    }
                };
            }
        }
        slot += 1;
    }
}
