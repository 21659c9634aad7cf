//! Detaches, behind the agent's back, every BPF link whose program is named PROGRAM (the
//! kernel's name: the first 15 bytes): `vmtest-detach PROGRAM`. Prints how many it detached
//! and exits 1 when there was none. For the canary VM test; the raw `bpf(2)` commands below
//! are all it needs (BPF_LINK_DETACH makes a link defunct whoever holds it).
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

use nix::libc;

const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_GET_FD_BY_ID: libc::c_long = 30;
const BPF_LINK_GET_NEXT_ID: libc::c_long = 31;
const BPF_LINK_DETACH: libc::c_long = 34;
/// `offsetof(struct bpf_prog_info, name)`.
const PROG_INFO_NAME: usize = 64;
/// `offsetof(struct bpf_link_info, prog_id)`.
const LINK_INFO_PROG_ID: usize = 8;

/// `bpf(cmd, attr)` with `attr` a zeroed `union bpf_attr` whose first words are `words`.
fn bpf(cmd: libc::c_long, words: &[u64]) -> std::io::Result<i64> {
    let mut attr = [0u64; 16];
    attr[..words.len()].copy_from_slice(words);
    bpf_attr(cmd, &mut attr)
}

/// `bpf(cmd, attr)`, leaving what the kernel wrote back in `attr`.
fn bpf_attr(cmd: libc::c_long, attr: &mut [u64; 16]) -> std::io::Result<i64> {
    // SAFETY: `attr` is a valid, large enough `union bpf_attr`; the kernel writes at most the
    // info buffers the commands name, which outlive the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of::<[u64; 16]>(),
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn fd(r: i64) -> OwnedFd {
    // SAFETY: a file descriptor the kernel just returned to this process.
    unsafe { OwnedFd::from_raw_fd(r as i32) }
}

/// `BPF_OBJ_GET_INFO_BY_FD` into a 256-byte buffer.
fn info(fd: &OwnedFd) -> std::io::Result<[u8; 256]> {
    let mut buf = [0u8; 256];
    let words = [
        u64::from(fd.as_raw_fd() as u32) | ((buf.len() as u64) << 32),
        buf.as_mut_ptr() as u64,
    ];
    bpf(BPF_OBJ_GET_INFO_BY_FD, &words)?;
    Ok(buf)
}

fn main() {
    let Some(want) = std::env::args().nth(1) else {
        eprintln!("usage: vmtest-detach PROGRAM");
        std::process::exit(2);
    };
    let want = &want.as_bytes()[..want.len().min(15)];
    let (mut id, mut detached) = (0u32, 0);
    loop {
        // start_id in, next_id (the second u32) out; ENOENT after the last link.
        let mut attr = [0u64; 16];
        attr[0] = u64::from(id);
        if bpf_attr(BPF_LINK_GET_NEXT_ID, &mut attr).is_err() {
            break;
        }
        id = (attr[0] >> 32) as u32;
        let Ok(link) = bpf(BPF_LINK_GET_FD_BY_ID, &[u64::from(id)]).map(fd) else {
            continue;
        };
        let Ok(link_info) = info(&link) else { continue };
        let prog_id = u32::from_ne_bytes(
            link_info[LINK_INFO_PROG_ID..LINK_INFO_PROG_ID + 4]
                .try_into()
                .expect("4 bytes"),
        );
        let Ok(prog) = bpf(BPF_PROG_GET_FD_BY_ID, &[u64::from(prog_id)]).map(fd) else {
            continue;
        };
        let Ok(prog_info) = info(&prog) else { continue };
        let name = &prog_info[PROG_INFO_NAME..PROG_INFO_NAME + 16];
        let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(16)];
        if name == want {
            match bpf(BPF_LINK_DETACH, &[u64::from(link.as_raw_fd() as u32)]) {
                Ok(_) => detached += 1,
                Err(e) => eprintln!("detaching link {id}: {e}"),
            }
        }
    }
    println!(
        "detached {detached} link(s) of program {}",
        String::from_utf8_lossy(want)
    );
    if detached == 0 {
        std::process::exit(1);
    }
}
