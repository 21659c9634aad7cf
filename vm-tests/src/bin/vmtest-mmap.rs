//! Maps a file with `mmap(PROT_READ, MAP_SHARED)` and reads its first byte: the operation the
//! quickstart policy's `security_mmap_file` selector forbids on sensitive files.
use std::{fs::File, os::fd::AsRawFd};

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
    // SAFETY: a read-only shared mapping of one page of a file we keep open; unmapped below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        eprintln!("mmap {path}: {}", std::io::Error::last_os_error());
        std::process::exit(1);
    }
    // SAFETY: p maps at least one readable page.
    let first = unsafe { *(p as *const u8) };
    println!("mapped {path}, first byte {first}");
    // SAFETY: unmapping what we mapped.
    unsafe { libc::munmap(p, 4096) };
}
