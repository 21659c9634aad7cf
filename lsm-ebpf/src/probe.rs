//! The generic kprobe, kretprobe, tracepoint and uprobe programs: one of each, attached by the
//! agent to every function or tracepoint a policy observes. Each finds the hook id of the call
//! in a map the loader wrote (by the function's address, or the tracepoint's event id), or in
//! the attachment's cookie (a uprobe: user addresses are not unique across files), collects
//! the raw arguments as that hook's plan says, and asks the one evaluator. They cannot deny:
//! matches post events, and `Sigkill` runs after the fact.
use aya_ebpf::{
    EbpfContext,
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{
            bpf_get_attach_cookie, bpf_get_func_arg, bpf_get_func_ip, bpf_override_return,
        },
    },
    macros::{fentry, kprobe, kretprobe, raw_tracepoint, tracepoint, uprobe},
    programs::{
        FEntryContext, ProbeContext, RawTracePointContext, RetProbeContext, TracePointContext,
    },
};
use lsm_shared::*;

use crate::{
    entry::{enter, ret},
    eval::{observe_probe, override_probe},
    kernel::{kconf_at, read_u64},
    maps::{FENTRY_IDS, PROBE_IDS, RET_STASH, TP_IDS, hook_cfg},
    scratch::Scratch,
};

/// The hooks of the probed function the program runs for.
#[inline(always)]
fn hooks_of(ctx: *mut core::ffi::c_void) -> Option<ProbeHooks> {
    // SAFETY: the helper reads the probe's own context: the function's entry address.
    let ip = unsafe { bpf_get_func_ip(ctx) };
    PROBE_IDS.get_ptr(&ip).map(|p| {
        // SAFETY: a live map value, copied out at once.
        unsafe { *p }
    })
}

/// Stores the call's raw arguments in `s.raw`, `arg(n)` being the probed function's argument
/// `n` as the entry point reads it (kprobe registers, fentry's saved arguments): the
/// function's own, or for a syscall wrapper, the argument registers of the user's
/// `struct pt_regs` its argument 0 points to. `SYSCALL` is a constant of each program, so the
/// verifier walks one way of collecting, not both.
#[inline(always)]
fn collect<const SYSCALL: bool>(s: &mut Scratch, arg: impl Fn(u32) -> u64) {
    if SYSCALL {
        let regs = arg(0);
        s.set_raw(0, read_u64(regs, kconf_at!(syscall_regs, 0)));
        s.set_raw(1, read_u64(regs, kconf_at!(syscall_regs, 1)));
        s.set_raw(2, read_u64(regs, kconf_at!(syscall_regs, 2)));
        s.set_raw(3, read_u64(regs, kconf_at!(syscall_regs, 3)));
        s.set_raw(4, read_u64(regs, kconf_at!(syscall_regs, 4)));
    } else {
        s.set_raw(0, arg(0));
        s.set_raw(1, arg(1));
        s.set_raw(2, arg(2));
        s.set_raw(3, arg(3));
        s.set_raw(4, arg(4));
    }
}

/// Argument `n` of a kprobe's or uprobe's function, from its registers.
#[inline(always)]
fn probe_arg(ctx: &ProbeContext, n: u32) -> u64 {
    ctx.arg::<u64>(n as usize).unwrap_or(0)
}

/// On an ordinary kernel function.
#[kprobe]
pub fn generic_kprobe(ctx: ProbeContext) -> u32 {
    ret(try_generic_kprobe::<false, false>(&ctx)) as u32
}

/// On a syscall wrapper (`syscall: true`).
#[kprobe]
pub fn generic_kprobe_syscall(ctx: ProbeContext) -> u32 {
    ret(try_generic_kprobe::<true, false>(&ctx)) as u32
}

/// On an ordinary kernel function whose policies `Override` its return. Loaded only for
/// them: the kernel refuses a program that calls `bpf_override_return` where it has no
/// `CONFIG_BPF_KPROBE_OVERRIDE`, and attaches one only to an error-injectable function.
#[kprobe]
pub fn generic_kprobe_override(ctx: ProbeContext) -> u32 {
    ret(try_generic_kprobe::<false, true>(&ctx)) as u32
}

/// On a syscall wrapper whose policies `Override` its return (syscalls are
/// error-injectable).
#[kprobe]
pub fn generic_kprobe_syscall_override(ctx: ProbeContext) -> u32 {
    ret(try_generic_kprobe::<true, true>(&ctx)) as u32
}

/// What every entry program does once the raw arguments are in `s.raw`: keeps them for the
/// kretprobe, if the function has one, and evaluates the entry hook, if any. False when the
/// entry has no hook of its own.
#[inline(always)]
fn entry_common(h: ProbeHooks, s: &mut Scratch) -> bool {
    if h.ret != 0 {
        // The kretprobe evaluates; it needs the arguments as they were at entry.
        let key = StashKey {
            pid_tgid: bpf_get_current_pid_tgid(),
            hook: h.ret,
            _pad: 0,
        };
        let _ = RET_STASH.insert(&key, &s.raw, 0);
    }
    h.entry != 0
}

#[inline(always)]
fn try_generic_kprobe<const SYSCALL: bool, const OVERRIDE: bool>(
    ctx: &ProbeContext,
) -> Result<i32, i32> {
    let Some(h) = hooks_of(ctx.as_ptr()) else {
        return Ok(0);
    };
    let (s, cur) = enter()?;
    collect::<SYSCALL>(s, |n| probe_arg(ctx, n));
    if !entry_common(h, s) {
        return Ok(0);
    }
    if OVERRIDE {
        let err = override_probe(s, cur, h.entry);
        if err != 0 {
            // SAFETY: the probe's own registers; the kernel makes the function return `err`
            // without running it (the program is attached to error-injectable functions only).
            unsafe { bpf_override_return(ctx.as_ptr() as *mut _, err as i64 as u64) };
        }
    } else {
        observe_probe(s, cur, h.entry, None);
    }
    Ok(0)
}

/// Argument `n` of the traced function at an fentry; 0 past its last argument (the helper
/// knows how many it has: reading the context past them directly fails verification).
#[inline(always)]
fn fentry_arg(ctx: &FEntryContext, n: u32) -> u64 {
    let mut v = 0u64;
    // SAFETY: the helper reads the trampoline's saved argument `n` into a local, or fails.
    let r = unsafe { bpf_get_func_arg(ctx.as_ptr(), n, &raw mut v) };
    if r == 0 { v } else { 0 }
}

/// The fentry entry point of the generic probe: the same work as [`generic_kprobe`], entered
/// through the function's BPF trampoline (as the LSM programs are) instead of a kprobe, which
/// costs far less per call. One copy of the program is loaded per function (an fentry
/// program is verified for its target), so the loader has a few slots and uses kprobes past
/// them, or where the function cannot be traced this way.
///
/// Each copy finds its function's hooks at its own key of `FENTRY_IDS` (an array lookup the
/// verifier inlines) rather than by the function's address in `PROBE_IDS` (a hash lookup):
/// the function runs it on every call, and most calls match nothing.
#[inline(always)]
fn try_generic_fentry<const SYSCALL: bool>(ctx: &FEntryContext, key: u32) -> Result<i32, i32> {
    let Some(&h) = FENTRY_IDS.get(key) else {
        return Ok(0);
    };
    if h.entry == 0 && h.ret == 0 {
        return Ok(0);
    }
    let (s, cur) = enter()?;
    collect::<SYSCALL>(s, |n| fentry_arg(ctx, n));
    if entry_common(h, s) {
        observe_probe(s, cur, h.entry, None);
    }
    Ok(0)
}

/// The fentry slots: `generic_fentry_<n>` for plain functions, `generic_fentry_syscall_<n>`
/// for syscall wrappers, `FENTRY_SLOTS` of each; `key` is the copy's key in `FENTRY_IDS`.
macro_rules! fentry_slots {
    ($($name:ident: $syscall:literal = $key:expr),* $(,)?) => {$(
        #[fentry]
        pub fn $name(ctx: FEntryContext) -> u32 {
            ret(try_generic_fentry::<$syscall>(&ctx, $key)) as u32
        }
    )*};
}

fentry_slots!(
    generic_fentry_0: false = 0,
    generic_fentry_1: false = 1,
    generic_fentry_2: false = 2,
    generic_fentry_3: false = 3,
    generic_fentry_4: false = 4,
    generic_fentry_5: false = 5,
    generic_fentry_syscall_0: true = FENTRY_SLOTS,
    generic_fentry_syscall_1: true = FENTRY_SLOTS + 1,
    generic_fentry_syscall_2: true = FENTRY_SLOTS + 2,
    generic_fentry_syscall_3: true = FENTRY_SLOTS + 3,
    generic_fentry_syscall_4: true = FENTRY_SLOTS + 4,
    generic_fentry_syscall_5: true = FENTRY_SLOTS + 5,
);
const _: () = assert!(FENTRY_SLOTS == 6);

/// On a function of an executable or library (a policy's `uprobes`): its arguments are in the
/// registers, and its pointers point into the process's memory (the plan's descriptors say
/// so).
#[uprobe]
pub fn generic_uprobe(ctx: ProbeContext) -> u32 {
    ret(try_generic_uprobe(&ctx)) as u32
}

#[inline(always)]
fn try_generic_uprobe(ctx: &ProbeContext) -> Result<i32, i32> {
    // SAFETY: the helper reads the cookie of the attachment the program runs for: the hook
    // id the loader gave it (0 if none, which no hook has).
    let cookie = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    // The low half is the hook id, the high half which of the hook's points this is.
    let hook = cookie as u32;
    if hook == 0 {
        return Ok(0);
    }
    let (s, cur) = enter()?;
    s.point = cookie >> 32;
    collect::<false>(s, |n| probe_arg(ctx, n));
    observe_probe(s, cur, hook, None);
    Ok(0)
}

#[kretprobe]
pub fn generic_kretprobe(ctx: RetProbeContext) -> u32 {
    ret(try_generic_kretprobe(&ctx)) as u32
}

#[inline(always)]
fn try_generic_kretprobe(ctx: &RetProbeContext) -> Result<i32, i32> {
    let Some(h) = hooks_of(ctx.as_ptr()) else {
        return Ok(0);
    };
    if h.ret == 0 {
        return Ok(0);
    }
    let key = StashKey {
        pid_tgid: bpf_get_current_pid_tgid(),
        hook: h.ret,
        _pad: 0,
    };
    let (s, cur) = enter()?;
    // A call that entered before the kretprobe's policy was loaded has no stash: nothing
    // to evaluate it with.
    let Some(stashed) = RET_STASH.get_ptr(&key) else {
        return Ok(0);
    };
    // SAFETY: a live map value of the same type as `raw`, copied out before it is removed.
    unsafe { crate::eval::kcopy(&mut s.raw, stashed) };
    let _ = RET_STASH.remove(&key);
    let rv: u64 = ctx.ret();
    observe_probe(s, cur, h.ret, Some(rv));
    Ok(0)
}

// A BPF program on a perf tracepoint cannot tell which tracepoint it runs for: the kernel
// overwrites the record's common fields (`common_type` included) with the `pt_regs`
// pointer before it runs the program, and aya 0.14 attaches tracepoints without a BPF
// cookie. So there are `TP_SLOTS` copies of the program, each reading the hook id of its
// own slot in `TP_IDS`; the loader gives each observed tracepoint a free copy.
macro_rules! tracepoint_slots {
    ($($name:ident = $slot:expr),* $(,)?) => {$(
        #[tracepoint]
        pub fn $name(ctx: TracePointContext) -> u32 {
            ret(try_generic_tracepoint(&ctx, $slot)) as u32
        }
    )*};
}
tracepoint_slots!(
    generic_tracepoint_0 = 0,
    generic_tracepoint_1 = 1,
    generic_tracepoint_2 = 2,
    generic_tracepoint_3 = 3,
);
const _: () = assert!(TP_SLOTS == 4);

/// A field of the record: `width` bytes at `off`, zero-extended. One 8-byte read and a
/// mask rather than a read per width, so every field is one path for the verifier.
#[inline(always)]
fn field(ctx: &TracePointContext, off: u16, width: u8) -> u64 {
    // SAFETY: `read_at` copies with bpf_probe_read, which reports rather than takes a fault.
    let v = unsafe { ctx.read_at::<u64>(off as usize) }.unwrap_or(0);
    int_of_width(v, width)
}

/// The hook id the loader gave slot `slot` of the (raw) tracepoint programs.
#[inline(always)]
fn slot_hook(slot: u32) -> Option<u32> {
    TP_IDS.get_ptr(&slot).map(|p| {
        // SAFETY: a live map value, copied out at once.
        unsafe { *p }
    })
}

#[inline(always)]
fn try_generic_tracepoint(ctx: &TracePointContext, slot: u32) -> Result<i32, i32> {
    let Some(hook) = slot_hook(slot) else {
        return Ok(0);
    };
    let Some(cfg) = hook_cfg(hook) else {
        return Ok(0);
    };
    let (s, cur) = enter()?;
    let mut i = 0usize;
    while i < MAX_ARGS {
        let d = cfg.args[i];
        let v = if d.kind == ARG_SKIP {
            0
        } else {
            field(ctx, cfg.tp_off[i], d.width)
        };
        s.set_raw(i, v);
        i += 1;
    }
    observe_probe(s, cur, hook, None);
    Ok(0)
}

// A raw tracepoint's program cannot tell which tracepoint it runs for either (the cookie of
// a raw tracepoint needs Linux 6.10): `RAW_TP_SLOTS` copies, copy `i` reading its hook id
// at key `TP_SLOTS + i` of `TP_IDS`.
macro_rules! raw_tracepoint_slots {
    ($($name:ident = $slot:expr),* $(,)?) => {$(
        #[raw_tracepoint]
        pub fn $name(ctx: RawTracePointContext) -> u32 {
            ret(try_generic_raw_tp(&ctx, TP_SLOTS + $slot)) as u32
        }
    )*};
}
raw_tracepoint_slots!(
    generic_raw_tp_0 = 0,
    generic_raw_tp_1 = 1,
    generic_raw_tp_2 = 2,
    generic_raw_tp_3 = 3,
);
const _: () = assert!(RAW_TP_SLOTS == 4);

/// Argument `n` of the tracepoint's `TP_PROTO`. Copied with a helper rather than read from
/// the context: a direct read of `args[n]` makes the kernel refuse to attach the program
/// to a tracepoint with `n` arguments or fewer, and one program serves every tracepoint.
#[inline(always)]
fn raw_tp_arg(ctx: &RawTracePointContext, n: u32) -> u64 {
    let mut v = 0u64;
    let src = (ctx.as_ptr() as *const u64).wrapping_add(n as usize);
    // SAFETY: the helper copies 8 bytes into a local and reports, rather than takes, a fault.
    let r = unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_kernel((&raw mut v).cast(), 8, src.cast())
    };
    if r == 0 { v } else { 0 }
}

#[inline(always)]
fn try_generic_raw_tp(ctx: &RawTracePointContext, slot: u32) -> Result<i32, i32> {
    let Some(hook) = slot_hook(slot) else {
        return Ok(0);
    };
    let (s, cur) = enter()?;
    collect::<false>(s, |n| raw_tp_arg(ctx, n));
    observe_probe(s, cur, hook, None);
    Ok(0)
}
