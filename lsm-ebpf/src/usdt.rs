//! The generic USDT programs: a uprobe at each site of a statically defined probe
//! (`spec.usdts`). A site's arguments are not in the calling convention's registers but
//! wherever the compiler put them, which the probe's `.note.stapsdt` note says per site
//! ("-4@-8(%rbp)"); the loader turns that into a [`UsdtSpec`] under the attachment's cookie.
//! Once the arguments are in the raw slots, the hook is evaluated as a uprobe's.
//!
//! `generic_usdt_set` is the same program for probes whose policies `Set` an argument: it
//! writes the argument in the process's memory. It is a program of its own because the kernel
//! warns in its log about every program that may write user memory (`bpf_probe_write_user`):
//! probes that only observe never load it.
use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_probe_read_user, bpf_probe_write_user, generated::bpf_get_attach_cookie},
    macros::uprobe,
    programs::ProbeContext,
};
use lsm_shared::*;

use crate::{
    entry::{enter, ret},
    eval::{observe_probe, set_probe},
    kernel::read_u64,
    maps::{SEL_ACT, USDT_SPECS},
};

#[uprobe]
pub fn generic_usdt(ctx: ProbeContext) -> u32 {
    ret(try_generic_usdt::<false>(&ctx)) as u32
}

#[uprobe]
pub fn generic_usdt_set(ctx: ProbeContext) -> u32 {
    ret(try_generic_usdt::<true>(&ctx)) as u32
}

#[inline(always)]
fn try_generic_usdt<const SET: bool>(ctx: &ProbeContext) -> Result<i32, i32> {
    // SAFETY: the helper reads the cookie of the attachment the program runs for.
    let cookie = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    // The low half is the hook id, the high half which site of the probe this is.
    let hook = cookie as u32;
    if hook == 0 {
        return Ok(0);
    }
    let Some(spec) = USDT_SPECS.get_ptr(&cookie) else {
        return Ok(0);
    };
    let (s, cur) = enter()?;
    s.point = cookie >> 32;
    let regs = ctx.as_ptr() as u64;
    let mut i = 0usize;
    while i < MAX_ARGS {
        // SAFETY: a live map value; one argument is copied out at a time.
        let a = unsafe { (*spec).args[i] };
        s.set_raw(i, arg_value(regs, &a));
        i += 1;
    }
    if !SET {
        observe_probe(s, cur, hook, None);
        return Ok(0);
    }
    let slot = set_probe(s, cur, hook);
    if slot <= 0 {
        return Ok(0);
    }
    let Some(act) = SEL_ACT.get(hook * MAX_SELECTORS + (slot as u32 - 1)) else {
        return Ok(0);
    };
    let pos = act.set_pos as usize;
    if pos < MAX_ARGS {
        // SAFETY: a live map value; `pos` is below the length of `args`.
        let a = unsafe { (*spec).args[pos] };
        write_arg(regs, &a, act.set_value);
    }
    Ok(0)
}

/// Where argument `a` lives in the process's memory; 0 when it is not in memory (a register
/// or a constant: the loader refuses `Set` on those).
#[inline(always)]
fn arg_address(regs: u64, a: &UsdtArg) -> u64 {
    // `& 0xff` is every offset within `struct pt_regs` (168 bytes) and tells the verifier.
    let reg = |off: u8| read_u64(regs, u64::from(off) & 0xff);
    match a.kind {
        USDT_DEREF => reg(a.reg).wrapping_add(a.off),
        USDT_SIB => reg(a.reg)
            .wrapping_add(reg(a.index) << (a.scale & 3))
            .wrapping_add(a.off),
        _ => 0,
    }
}

/// Argument `a` at the site the program runs at, narrowed to its width (sign-extended when
/// signed); 0 when it has none or its memory cannot be read.
#[inline(always)]
fn arg_value(regs: u64, a: &UsdtArg) -> u64 {
    let v = match a.kind {
        USDT_CONST => a.off,
        USDT_REG => read_u64(regs, u64::from(a.reg) & 0xff),
        USDT_DEREF | USDT_SIB => read_user(arg_address(regs, a), a.size),
        _ => return 0,
    };
    usdt_value(v, a.size, a.signed != 0)
}

/// The `size` bytes at user address `at` (a little-endian value), 0 when unreadable. Exactly
/// its width: the bytes after a one-byte argument may be unmapped.
#[inline(always)]
fn read_user(at: u64, size: u8) -> u64 {
    // SAFETY: bpf_probe_read_user reports a fault instead of taking it; each value is
    // copied into a local.
    unsafe {
        match size {
            1 => bpf_probe_read_user(at as *const u8).map_or(0, u64::from),
            2 => bpf_probe_read_user(at as *const u16).map_or(0, u64::from),
            4 => bpf_probe_read_user(at as *const u32).map_or(0, u64::from),
            _ => bpf_probe_read_user(at as *const u64).unwrap_or(0),
        }
    }
}

/// `Set`: writes `value`, cut to the argument's width, where argument `a` lives in the
/// process's memory. A page the process has not touched cannot be written from here (no
/// fault is taken): the write is then lost, as in Tetragon's non-sleepable path.
#[inline(always)]
fn write_arg(regs: u64, a: &UsdtArg, value: u64) {
    let at = arg_address(regs, a);
    if at == 0 {
        return;
    }
    // SAFETY: bpf_probe_write_user writes the current process's own memory and reports a
    // fault instead of taking it; the sources are locals.
    let _ = unsafe {
        match a.size {
            1 => bpf_probe_write_user(at as *mut u8, &(value as u8)),
            2 => bpf_probe_write_user(at as *mut u16, &(value as u16)),
            4 => bpf_probe_write_user(at as *mut u32, &(value as u32)),
            _ => bpf_probe_write_user(at as *mut u64, &value),
        }
    };
}
