//! Measures, in its own process (so that a test can start it in a pod's container cgroup or
//! on the host), the cost of reading a file that matches no selector:
//! `vmtest-readbench FILE READS OPENS ROUNDS` prints one line of medians over ROUNDS rounds,
//! `pread <ns> open_read_close <ns> pread_min <ns> pread_max <ns> orc_min <ns> orc_max <ns>`:
//! a 1-byte `pread` on FILE kept open (READS per round) and `open` + 1-byte `read` + `close`
//! (OPENS per round). Exits 1 with a message if an argument or a file operation fails.
use std::{fs::File, io::Read as _, os::unix::fs::FileExt as _, process::exit, time::Instant};

/// (median, min, max) nanoseconds per operation over `rounds` rounds of `ops` calls of `op`.
fn rounds(rounds: usize, ops: u32, mut op: impl FnMut()) -> (f64, f64, f64) {
    let mut per_op: Vec<f64> = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..ops {
                op();
            }
            start.elapsed().as_nanos() as f64 / f64::from(ops)
        })
        .collect();
    per_op.sort_by(f64::total_cmp);
    (per_op[rounds / 2], per_op[0], per_op[rounds - 1])
}

fn fail(msg: &str) -> ! {
    eprintln!("vmtest-readbench: {msg}");
    exit(1)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, path, reads, opens, n] = args.as_slice() else {
        fail("usage: vmtest-readbench FILE READS OPENS ROUNDS");
    };
    let number = |s: &str| -> u32 {
        s.parse()
            .ok()
            .filter(|n| *n > 0)
            .unwrap_or_else(|| fail(&format!("not a positive number: {s}")))
    };
    let (reads, opens, n) = (number(reads), number(opens), number(n) as usize);
    let file = File::open(path).unwrap_or_else(|e| fail(&format!("opening {path}: {e}")));
    let mut buf = [0u8; 1];
    let pread = rounds(n, reads, || {
        if let Err(e) = file.read_at(&mut buf, 0) {
            fail(&format!("pread {path}: {e}"));
        }
    });
    let orc = rounds(n, opens, || {
        let read = File::open(path).and_then(|mut f| f.read(&mut buf));
        if let Err(e) = read {
            fail(&format!("open+read {path}: {e}"));
        }
    });
    println!(
        "pread {:.0} open_read_close {:.0} pread_min {:.0} pread_max {:.0} orc_min {:.0} orc_max {:.0}",
        pread.0, orc.0, pread.1, pread.2, orc.1, orc.2
    );
}
