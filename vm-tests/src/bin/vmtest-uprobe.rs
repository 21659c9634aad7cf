//! A user-space function to observe with a uprobe, for the uprobe VM test:
//! `vmtest-uprobe TEXT` calls `lsm_vmtest_uprobe_target(TEXT, 4242)`, then prints `returned`.
//! A policy with `Sigkill` on the function kills it before it prints.
//! `vmtest-uprobe --points TEXT` calls each of the forty `lsm_vmtest_uprobe_pNN(TEXT, NN)`
//! once, in order: more symbols than the agent has hook ids, each telling by its argument
//! which one it is.
use std::{
    ffi::{CString, c_char},
    hint::black_box,
};

/// The observed function: a symbol of its own (`no_mangle`, never inlined) that takes a C
/// string and a 64-bit integer in the first two argument registers.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn lsm_vmtest_uprobe_target(text: *const c_char, n: i64) -> i64 {
    // black_box: the call and its arguments stay as written.
    black_box(text);
    black_box(n) + 1
}

/// Functions `$name(text, n)` returning `n + $k`: distinct code (no two fold into one
/// address), each a symbol of its own.
macro_rules! points {
    ($($name:ident = $k:literal),* $(,)?) => {
        $(
            #[unsafe(no_mangle)]
            #[inline(never)]
            pub extern "C" fn $name(text: *const c_char, n: i64) -> i64 {
                black_box(text);
                black_box(n) + $k
            }
        )*
        const POINTS: &[extern "C" fn(*const c_char, i64) -> i64] = &[$($name),*];
    };
}

points!(
    lsm_vmtest_uprobe_p00 = 0,
    lsm_vmtest_uprobe_p01 = 1,
    lsm_vmtest_uprobe_p02 = 2,
    lsm_vmtest_uprobe_p03 = 3,
    lsm_vmtest_uprobe_p04 = 4,
    lsm_vmtest_uprobe_p05 = 5,
    lsm_vmtest_uprobe_p06 = 6,
    lsm_vmtest_uprobe_p07 = 7,
    lsm_vmtest_uprobe_p08 = 8,
    lsm_vmtest_uprobe_p09 = 9,
    lsm_vmtest_uprobe_p10 = 10,
    lsm_vmtest_uprobe_p11 = 11,
    lsm_vmtest_uprobe_p12 = 12,
    lsm_vmtest_uprobe_p13 = 13,
    lsm_vmtest_uprobe_p14 = 14,
    lsm_vmtest_uprobe_p15 = 15,
    lsm_vmtest_uprobe_p16 = 16,
    lsm_vmtest_uprobe_p17 = 17,
    lsm_vmtest_uprobe_p18 = 18,
    lsm_vmtest_uprobe_p19 = 19,
    lsm_vmtest_uprobe_p20 = 20,
    lsm_vmtest_uprobe_p21 = 21,
    lsm_vmtest_uprobe_p22 = 22,
    lsm_vmtest_uprobe_p23 = 23,
    lsm_vmtest_uprobe_p24 = 24,
    lsm_vmtest_uprobe_p25 = 25,
    lsm_vmtest_uprobe_p26 = 26,
    lsm_vmtest_uprobe_p27 = 27,
    lsm_vmtest_uprobe_p28 = 28,
    lsm_vmtest_uprobe_p29 = 29,
    lsm_vmtest_uprobe_p30 = 30,
    lsm_vmtest_uprobe_p31 = 31,
    lsm_vmtest_uprobe_p32 = 32,
    lsm_vmtest_uprobe_p33 = 33,
    lsm_vmtest_uprobe_p34 = 34,
    lsm_vmtest_uprobe_p35 = 35,
    lsm_vmtest_uprobe_p36 = 36,
    lsm_vmtest_uprobe_p37 = 37,
    lsm_vmtest_uprobe_p38 = 38,
    lsm_vmtest_uprobe_p39 = 39,
);

fn main() {
    let mut args = std::env::args().skip(1);
    let (points, text) = match (args.next(), args.next()) {
        (Some(flag), Some(text)) if flag == "--points" => (true, text),
        (Some(text), None) => (false, text),
        _ => {
            eprintln!("usage: vmtest-uprobe [--points] TEXT");
            std::process::exit(2);
        }
    };
    let Ok(text) = CString::new(text) else {
        eprintln!("TEXT has a NUL byte");
        std::process::exit(2);
    };
    if points {
        for (k, f) in (0i64..).zip(POINTS) {
            black_box(f(text.as_ptr(), k));
        }
    } else {
        black_box(lsm_vmtest_uprobe_target(text.as_ptr(), 4242));
    }
    println!("returned");
}
