//! Maps a file with `mmap(PROT_READ, MAP_SHARED)` and reads its first byte: the operation the
//! quickstart policy's `security_mmap_file` selector forbids on sensitive files.
use std::{fs::File, num::NonZeroUsize};

use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: vmtest-mmap FILE");
        std::process::exit(2);
    };
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("open {path}: {e}");
            std::process::exit(1);
        }
    };
    let page = NonZeroUsize::new(4096).expect("not zero");
    // SAFETY: a read-only shared mapping of one page of a file we keep open; unmapped below.
    let p = match unsafe {
        mmap(
            None,
            page,
            ProtFlags::PROT_READ,
            MapFlags::MAP_SHARED,
            &file,
            0,
        )
    } {
        Ok(p) => p,
        Err(e) => {
            eprintln!("mmap {path}: {e}");
            std::process::exit(1);
        }
    };
    // SAFETY: p maps at least one readable page.
    let first = unsafe { *p.cast::<u8>().as_ptr() };
    println!("mapped {path}, first byte {first}");
    // SAFETY: unmapping what we mapped, not used afterwards.
    let _ = unsafe { munmap(p, page.get()) };
}
