//! A user-space function to observe with a uprobe, for the uprobe VM test:
//! `vmtest-uprobe TEXT` calls `lsm_vmtest_uprobe_target(TEXT, 4242)`, then prints `returned`.
//! A policy with `Sigkill` on the function kills it before it prints.
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

fn main() {
    let Some(text) = std::env::args().nth(1) else {
        eprintln!("usage: vmtest-uprobe TEXT");
        std::process::exit(2);
    };
    let Ok(text) = CString::new(text) else {
        eprintln!("TEXT has a NUL byte");
        std::process::exit(2);
    };
    black_box(lsm_vmtest_uprobe_target(text.as_ptr(), 4242));
    println!("returned");
}
