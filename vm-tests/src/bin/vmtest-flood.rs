//! Floods the ring buffer with observation events and makes denials in the middle of it:
//! `vmtest-flood FILE CANARY ROUNDS READS` does, ROUNDS times, READS 1-byte `pread`s of FILE
//! (each posted by a policy on every read) and one open of CANARY (which a policy denies).
//! Prints `denied N` (opens that failed with EPERM) and exits 0; 1 if FILE cannot be read.
use std::{fs::File, io::ErrorKind, os::unix::fs::FileExt as _, process::exit};

fn main() {
    let args: Vec<String> = std::env::args().collect();
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
