//! Statically defined probes (USDT) to observe, for the USDT VM tests:
//! - `vmtest-usdt TEXT` fires probe `lsm_vmtest:hit(TEXT, 4242, -7)` at two sites, then prints
//!   `returned`. A policy with `Sigkill` on the probe kills it at the first site, before it
//!   prints.
//! - `vmtest-usdt --set TEXT` fires probe `lsm_vmtest:set(TEXT, value)` once, `value` an
//!   `int` 7 in memory, and prints `value=N` with the value it has afterwards: a policy's
//!   `Set` on argument 1 changes it.
use std::{ffi::CString, hint::black_box};

fn main() {
    let mut args = std::env::args().skip(1);
    let (set, text) = match (args.next(), args.next()) {
        (Some(flag), Some(text)) if flag == "--set" => (true, text),
        (Some(text), None) => (false, text),
        _ => {
            eprintln!("usage: vmtest-usdt [--set] TEXT");
            std::process::exit(2);
        }
    };
    let Ok(text) = CString::new(text) else {
        eprintln!("TEXT has a NUL byte");
        std::process::exit(2);
    };
    // black_box: the values are computed at run time, so the notes locate them in registers
    // or memory rather than as constants.
    let p = black_box(text.as_ptr());
    if set {
        let mut value: i32 = black_box(7);
        set_probe(p, &mut value);
        // Volatile: the probe's write happened behind the compiler's back.
        // SAFETY: a live local.
        let now = unsafe { std::ptr::read_volatile(&value) };
        println!("value={now}");
        return;
    }
    let n: i64 = black_box(4242);
    let m: i32 = black_box(-7);
    // Two sites of one probe: the agent attaches at each, and each posts.
    probe::probe!(lsm_vmtest, hit, p, n, m);
    probe::probe!(lsm_vmtest, hit, p, n, m);
    println!("returned");
}

/// Probe `lsm_vmtest:set(text, *value)`: its second argument is the `int` in memory at
/// `value` ("-4@0(%reg)"), which `Set` can write. The `probe` crate passes every argument
/// in a register (its operands are values), so this note is written out by hand, as
/// `sys/sdt.h` lays it out: a `nop` at the site, a `.note.stapsdt` note naming it, and the
/// `.stapsdt.base` anchor the note's addresses are relative to.
#[cfg(target_arch = "x86_64")]
#[inline(never)]
fn set_probe(text: *const std::ffi::c_char, value: &mut i32) {
    // SAFETY: the code is one `nop`; the rest only adds sections. The asm may read and write
    // memory (no `nomem`), so the compiler keeps `*value` in memory across it.
    unsafe {
        std::arch::asm!(
            "990: nop",
            ".pushsection .note.stapsdt,\"\",\"note\"",
            ".balign 4",
            ".4byte 992f-991f, 994f-993f, 3",
            "991: .asciz \"stapsdt\"",
            "992: .balign 4",
            "993: .8byte 990b",
            ".8byte _.stapsdt.base",
            ".8byte 0",
            ".asciz \"lsm_vmtest\"",
            ".asciz \"set\"",
            ".asciz \"8@{text} -4@0({value})\"",
            "994: .balign 4",
            ".popsection",
            ".ifndef _.stapsdt.base",
            ".pushsection .stapsdt.base,\"aG\",\"progbits\",.stapsdt.base,comdat",
            ".weak _.stapsdt.base",
            ".hidden _.stapsdt.base",
            "_.stapsdt.base: .space 1",
            ".size _.stapsdt.base, 1",
            ".popsection",
            ".endif",
            text = in(reg) text,
            value = in(reg) value as *mut i32,
            options(att_syntax, nostack, preserves_flags),
        );
    }
}
