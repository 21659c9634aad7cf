//! Creates the kernel objects the BPF-object argument test observes, through the raw
//! syscalls (no BPF library: the point is the exact attributes):
//! `vmtest-bpfobj bpf` creates an array map `lsm_vmtest_map` (key 4, value 8, 3 entries) and
//! loads a two-instruction socket filter `lsm_vmtest_prog`; `vmtest-bpfobj perf` opens a
//! kprobe PMU perf event on `vfs_read`; `vmtest-bpfobj tty TEXT` writes TEXT to a new pty's
//! master. Each prints `done` when the kernel accepted it.
use std::{fs, io::Write, process::exit};

use nix::libc;

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_PROG_LOAD: libc::c_long = 5;
/// `union bpf_attr` is at most this big for the commands used here; the kernel takes a
/// shorter attribute when the rest would be zero.
const ATTR_LEN: usize = 128;

fn put_u32(attr: &mut [u8], at: usize, v: u32) {
    attr[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put_u64(attr: &mut [u8], at: usize, v: u64) {
    attr[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}

fn put_name(attr: &mut [u8], at: usize, name: &str) {
    attr[at..at + name.len()].copy_from_slice(name.as_bytes());
}

fn bpf(cmd: libc::c_long, attr: &[u8; ATTR_LEN], what: &str) {
    // SAFETY: the attribute is ATTR_LEN initialised bytes, and the kernel reads that many.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_ptr(), ATTR_LEN as u32) };
    if fd < 0 {
        eprintln!("{what}: {}", std::io::Error::last_os_error());
        exit(1);
    }
}

fn bpf_objects() {
    // BPF_MAP_CREATE: map_type, key_size, value_size, max_entries, then map_name at 28.
    let mut attr = [0u8; ATTR_LEN];
    put_u32(&mut attr, 0, 2); // BPF_MAP_TYPE_ARRAY
    put_u32(&mut attr, 4, 4);
    put_u32(&mut attr, 8, 8);
    put_u32(&mut attr, 12, 3);
    put_name(&mut attr, 28, "lsm_vmtest_map");
    bpf(BPF_MAP_CREATE, &attr, "BPF_MAP_CREATE");

    // r0 = 0; exit.
    let insns: [u64; 2] = [0xb7, 0x95];
    let license = c"GPL";
    // BPF_PROG_LOAD: prog_type, insn_cnt, insns, license, ..., prog_name at 48.
    let mut attr = [0u8; ATTR_LEN];
    put_u32(&mut attr, 0, 1); // BPF_PROG_TYPE_SOCKET_FILTER
    put_u32(&mut attr, 4, insns.len() as u32);
    put_u64(&mut attr, 8, insns.as_ptr() as u64);
    put_u64(&mut attr, 16, license.as_ptr() as u64);
    put_name(&mut attr, 48, "lsm_vmtest_prog");
    bpf(BPF_PROG_LOAD, &attr, "BPF_PROG_LOAD");
}

fn kprobe_perf_event() {
    let pmu = fs::read_to_string("/sys/bus/event_source/devices/kprobe/type")
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
        .unwrap_or_else(|| {
            eprintln!("no kprobe PMU");
            exit(1)
        });
    let func = c"vfs_read";
    // struct perf_event_attr: type, size, config, ..., config1 (kprobe_func) at 56,
    // config2 (probe_offset) at 64.
    let mut attr = [0u8; ATTR_LEN];
    put_u32(&mut attr, 0, pmu);
    put_u32(&mut attr, 4, ATTR_LEN as u32);
    put_u64(&mut attr, 56, func.as_ptr() as u64);
    // SAFETY: the attribute is ATTR_LEN initialised bytes, its `size` says so, and the
    // function name outlives the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr.as_ptr(),
            -1 as libc::pid_t,
            0 as libc::c_int,
            -1 as libc::c_int,
            0 as libc::c_ulong,
        )
    };
    if fd < 0 {
        eprintln!("perf_event_open: {}", std::io::Error::last_os_error());
        exit(1);
    }
}

fn tty_write(text: &str) {
    let mut master = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/ptmx")
        .unwrap_or_else(|e| {
            eprintln!("/dev/ptmx: {e}");
            exit(1)
        });
    if let Err(e) = master.write_all(text.as_bytes()) {
        eprintln!("writing the pty: {e}");
        exit(1);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["bpf"] => bpf_objects(),
        ["perf"] => kprobe_perf_event(),
        ["tty", text] => tty_write(text),
        _ => {
            eprintln!("usage: vmtest-bpfobj bpf | perf | tty TEXT");
            exit(2);
        }
    }
    println!("done");
}
