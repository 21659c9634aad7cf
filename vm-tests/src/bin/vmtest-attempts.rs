//! Attempts a forbidden operation over and over, each time in a forked child, for the restart
//! VM test: `vmtest-attempts shadow|connect|setuid STOP_FILE` runs until STOP_FILE exists, then
//! prints `attempts=N denied=D killed=K succeeded=S`; `vmtest-attempts OP once`
//! makes one attempt and exits 0 when the operation happened, 1 when it was denied.
//!
//! - `shadow` reads `/etc/shadow`: it happened when the read returned bytes.
//! - `connect` connects over TCP to 198.51.100.1:443 (TEST-NET-2, outside every CIDR the
//!   egress policy allows): it happened when the connect reached the network stack, whatever
//!   its outcome there (the guest has no route: "Network is unreachable"). EPERM/EACCES is a
//!   denial.
//!
//! - `setuid` calls `setuid(4243)`, which a kprobe policy (no LSM hook: after the fact)
//!   answers with Sigkill: it happened when the call returned to the child.
//!
//! A child killed by SIGKILL (the policies' Sigkill) is counted as `killed`. Forking without
//! exec keeps each attempt cheap under emulation.
use std::{
    io::Read as _,
    net::{SocketAddr, TcpStream},
    path::Path,
    time::Duration,
};

use nix::{
    sys::wait::{WaitStatus, waitpid},
    unistd::{ForkResult, fork},
};

const HAPPENED: i32 = 0;
const DENIED: i32 = 1;

fn attempt(op: &str) -> i32 {
    // EPERM, EACCES.
    let denied = |e: &std::io::Error| matches!(e.raw_os_error(), Some(1 | 13));
    match op {
        "shadow" => {
            let mut buf = [0u8; 64];
            match std::fs::File::open("/etc/shadow").and_then(|mut f| f.read(&mut buf)) {
                Ok(n) if n > 0 => HAPPENED,
                Ok(_) => DENIED,
                Err(e) if denied(&e) => DENIED,
                Err(_) => HAPPENED,
            }
        }
        "connect" => {
            let addr: SocketAddr = "198.51.100.1:443".parse().expect("address");
            match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
                Err(e) if denied(&e) => DENIED,
                _ => HAPPENED,
            }
        }
        "setuid" => match nix::unistd::setuid(nix::unistd::Uid::from_raw(4243)) {
            Err(nix::errno::Errno::EPERM | nix::errno::Errno::EACCES) => DENIED,
            _ => HAPPENED,
        },
        other => {
            eprintln!("unknown operation {other}");
            std::process::exit(2);
        }
    }
}

/// One attempt in a forked child: `Some(code)` when it exited, `None` when SIGKILL killed it.
fn forked(op: &str) -> Option<i32> {
    // SAFETY: this program is single-threaded; the child only runs `attempt` and exits.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => std::process::exit(attempt(op)),
        ForkResult::Parent { child } => match waitpid(child, None).expect("waitpid") {
            WaitStatus::Exited(_, code) => Some(code),
            WaitStatus::Signaled(_, nix::sys::signal::Signal::SIGKILL, _) => None,
            other => panic!("attempt ended as {other:?}"),
        },
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(op), Some(stop)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: vmtest-attempts shadow|connect|setuid STOP_FILE|once");
        std::process::exit(2);
    };
    if stop == "once" {
        std::process::exit(attempt(op));
    }
    let (mut attempts, mut denied, mut killed, mut succeeded) = (0u64, 0u64, 0u64, 0u64);
    while !Path::new(stop).exists() {
        attempts += 1;
        match forked(op) {
            None => killed += 1,
            Some(HAPPENED) => succeeded += 1,
            Some(_) => denied += 1,
        }
        // Room for the agents starting beside three such loops on two emulated CPUs (the
        // loops still make thousands of attempts over the test).
        std::thread::sleep(Duration::from_millis(15));
    }
    println!("attempts={attempts} denied={denied} killed={killed} succeeded={succeeded}");
}
