//! Floods the agent with events.
//!
//! `vmtest-flood FILE CANARY ROUNDS READS` does, ROUNDS times, READS 1-byte `pread`s of FILE
//! (each posted by a policy on every read) and one open of CANARY (which a policy denies).
//! Prints `denied N` (opens that failed with EPERM) and exits 0; 1 if FILE cannot be read.
//!
//! `vmtest-flood procs SECONDS FILE` runs, for SECONDS, short processes (itself as
//! `vmtest-flood child FILE`, which opens FILE once and exits), `PARALLEL` at a time, and
//! opens FILE itself between them, while a thread reads FILE 1 byte at a time without pause.
//! Prints `children N opens M reads R` (M counts every open of FILE that succeeded, the
//! children's included) and exits 0.
use std::{
    fs::File,
    io::ErrorKind,
    os::unix::fs::FileExt as _,
    process::{Child, Command, exit},
    time::{Duration, Instant},
};

/// Children running at once in `procs` mode.
const PARALLEL: usize = 8;
/// Opens of FILE by the parent after each child it starts.
const OPENS_PER_CHILD: u64 = 20;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match &args[..] {
        [_, mode, file] if mode == "child" => exit(i32::from(File::open(file).is_err())),
        [_, mode, seconds, file] if mode == "procs" => {
            let Ok(seconds) = seconds.parse::<u64>() else {
                eprintln!("SECONDS is a number");
                exit(2);
            };
            procs(Duration::from_secs(seconds), file);
            return;
        }
        _ => {}
    }
    let [_, file, canary, rounds, reads] = &args[..] else {
        eprintln!("usage: vmtest-flood FILE CANARY ROUNDS READS");
        exit(2);
    };
    let (Ok(rounds), Ok(reads)) = (rounds.parse::<u32>(), reads.parse::<u32>()) else {
        eprintln!("ROUNDS and READS are numbers");
        exit(2);
    };
    let f = File::open(file).unwrap_or_else(|e| {
        eprintln!("{file}: {e}");
        exit(1)
    });
    let mut buf = [0u8; 1];
    let mut denied = 0;
    for _ in 0..rounds {
        for _ in 0..reads {
            if let Err(e) = f.read_at(&mut buf, 0) {
                eprintln!("{file}: {e}");
                exit(1);
            }
        }
        match File::open(canary) {
            Err(e) if e.kind() == ErrorKind::PermissionDenied => denied += 1,
            Err(e) => eprintln!("{canary}: {e}"),
            Ok(_) => eprintln!("{canary}: opened"),
        }
    }
    println!("denied {denied}");
}

fn procs(length: Duration, file: &str) {
    let own = std::env::current_exe().unwrap_or_else(|e| {
        eprintln!("own path: {e}");
        exit(1)
    });
    let start = Instant::now();
    let reader = {
        let f = File::open(file).unwrap_or_else(|e| {
            eprintln!("{file}: {e}");
            exit(1)
        });
        std::thread::spawn(move || {
            let (mut buf, mut reads) = ([0u8; 1], 0u64);
            while start.elapsed() < length {
                if f.read_at(&mut buf, 0).is_ok() {
                    reads += 1;
                }
            }
            reads
        })
    };
    let (mut children, mut opens) = (0u64, 0u64);
    let mut running: Vec<Child> = Vec::new();
    let reap = |c: &mut Child, opens: &mut u64| match c.wait() {
        Ok(s) if s.success() => *opens += 1,
        Ok(s) => eprintln!("a child failed: {s}"),
        Err(e) => eprintln!("waiting for a child: {e}"),
    };
    while start.elapsed() < length {
        if running.len() >= PARALLEL {
            let mut c = running.remove(0);
            reap(&mut c, &mut opens);
        }
        match Command::new(&own).args(["child", file]).spawn() {
            Ok(c) => {
                running.push(c);
                children += 1;
            }
            Err(e) => {
                eprintln!("spawning a child: {e}");
                exit(1);
            }
        }
        for _ in 0..OPENS_PER_CHILD {
            match File::open(file) {
                Ok(_) => opens += 1,
                Err(e) => {
                    eprintln!("{file}: {e}");
                    exit(1);
                }
            }
        }
    }
    for mut c in running {
        reap(&mut c, &mut opens);
    }
    let reads = reader.join().unwrap_or(0);
    println!("children {children} opens {opens} reads {reads}");
}
