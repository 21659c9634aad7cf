//! What the benchmark suites share: running `vmtest-readbench`, timing connects, the
//! kernel's per-program run statistics, and reading the agent's memory and log.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    net::{SocketAddr, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// What `vmtest-readbench` prints: (median, min, max) over its rounds, in ns per operation.
pub struct ReadCost {
    pub pread: [f64; 3],
    pub open_read_close: [f64; 3],
}

/// Runs `cmd` (`vmtest-readbench`, possibly wrapped) on `data` with `reads` preads and
/// `opens` open+read+close per round, `rounds` rounds. Panics with its output if it fails.
pub fn readbench(
    mut cmd: Command,
    data: &Path,
    reads: &str,
    opens: &str,
    rounds: &str,
) -> ReadCost {
    let out = cmd
        .args([&data.display().to_string(), reads, opens, rounds])
        .stdin(Stdio::null())
        .output()
        .expect("running vmtest-readbench");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "vmtest-readbench failed ({:?}): {text}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let words: Vec<&str> = text.split_whitespace().collect();
    let value = |key: &str| -> f64 {
        words
            .iter()
            .position(|w| *w == key)
            .and_then(|i| words.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in vmtest-readbench's output {text:?}"))
    };
    ReadCost {
        pread: [value("pread"), value("pread_min"), value("pread_max")],
        open_read_close: [value("open_read_close"), value("orc_min"), value("orc_max")],
    }
}

/// (median, min, max) nanoseconds per TCP `connect()` + close to `addr`, over `rounds`
/// rounds of `connects`.
///
/// Each socket lingers 0 s, so its close resets the connection instead of leaving it in
/// TIME_WAIT for a minute: else every round finds the thousands of connections of the rounds
/// before still there (the port search and the hash lookups of a connect grow with them), and
/// whatever is measured later (the agent's column) pays for what was measured first.
pub fn connect_cost(addr: SocketAddr, connects: u32, rounds: usize) -> [f64; 3] {
    let mut per_op: Vec<f64> = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..connects {
                let s = TcpStream::connect(addr).expect("connect to the benchmark's listener");
                socket2::SockRef::from(&s)
                    .set_linger(Some(Duration::ZERO))
                    .expect("SO_LINGER on the benchmark's socket");
            }
            start.elapsed().as_nanos() as f64 / f64::from(connects)
        })
        .collect();
    per_op.sort_by(f64::total_cmp);
    [per_op[rounds / 2], per_op[0], per_op[rounds - 1]]
}

/// Turns on the kernel's per-program run statistics (`kernel.bpf_stats_enabled`) while it
/// lives, and back off when dropped, even if the benchmark fails. The statistics cost each
/// program run two clock reads: measure with them off, break the cost down with them on.
pub struct BpfStats;

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    pub fn enable() -> BpfStats {
        fs::write(BPF_STATS, "1").expect("enabling kernel.bpf_stats_enabled");
        BpfStats
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = fs::write(BPF_STATS, "0");
    }
}

/// Each program's (runs, nanoseconds) in a scrape of the agent's metrics.
fn program_totals(body: &str) -> BTreeMap<String, (f64, f64)> {
    let mut out: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for (metric, runs) in [
        ("lsm_agent_overhead_program_runs_total{", true),
        ("lsm_agent_overhead_program_nanoseconds_total{", false),
    ] {
        for line in body.lines().filter(|l| l.starts_with(metric)) {
            let Some(program) = line
                .split("program=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
            else {
                continue;
            };
            let v: f64 = line
                .rsplit_once(' ')
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0.0);
            let e = out.entry(program.to_string()).or_default();
            if runs { e.0 = v } else { e.1 = v }
        }
    }
    out
}

/// The programs that ran at least once per operation between two scrapes (`ops`
/// operations), with their runs per operation and mean nanoseconds per run, e.g.
/// `file_permission 2.0×812` (overlayfs runs the file hooks for the layer's file too), and
/// how many of those runs per operation were layer files passed at their start, e.g.
/// `layer files passed early 2.0` (one at the open and one at the read of the layer's file).
pub fn program_costs(before: &str, after: &str, ops: u32) -> String {
    const LAYER: &str = "lsm_agent_layer_files_passed_total";
    let layer = crate::metric_sample(after, LAYER, &[]) - crate::metric_sample(before, LAYER, &[]);
    let before = program_totals(before);
    let mut parts = Vec::new();
    for (program, (runs, ns)) in program_totals(after) {
        let (runs0, ns0) = before.get(&program).copied().unwrap_or_default();
        let runs = runs - runs0;
        if runs >= f64::from(ops) {
            parts.push(format!(
                "{program} {:.1}×{:.0}",
                runs / f64::from(ops),
                (ns - ns0) / runs
            ));
        }
    }
    if layer >= f64::from(ops) {
        parts.push(format!(
            "layer files passed early {:.1}",
            layer / f64::from(ops)
        ));
    }
    if parts.is_empty() {
        "–".to_string()
    } else {
        parts.join(", ")
    }
}

/// A `GetEvents` subscriber (`lsmctl getevents -o compact`) that counts the lines
/// containing a marker and keeps none: a benchmark's client, as cheap as a reader can be.
pub struct Subscriber {
    child: Child,
    count: Arc<AtomicU64>,
}

impl Subscriber {
    pub fn start(address: &str, marker: &str) -> Subscriber {
        let count = Arc::new(AtomicU64::new(0));
        let (c, marker) = (count.clone(), marker.to_string());
        let child = crate::stream::spawn_getevents(address, "compact", &[], move |line| {
            if line.contains(&marker) {
                c.fetch_add(1, Ordering::Relaxed);
            }
        });
        Subscriber { child, count }
    }

    /// Lines with the marker so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU time (user + system) process `pid` has used, in clock ticks (`USER_HZ`, 100 per
/// second on Linux), from `/proc/PID/stat`.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = procfs::process::Process::new(pid as i32)
        .and_then(|p| p.stat())
        .expect("the process's stat");
    stat.utime + stat.stime
}

/// Waits until process `pid` has used no CPU time over a whole `window` (its start-up or
/// compile work done), at most `limit`, and returns how long it waited: what a benchmark
/// measures beside the agent is its steady cost, not its start. Never fails: a process still
/// busy at `limit` is measured as it is, and the report says how long the wait was.
pub fn settle(pid: u32, window: Duration, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let before = cpu_ticks(pid);
        std::thread::sleep(window);
        if cpu_ticks(pid) == before || start.elapsed() >= limit {
            return start.elapsed();
        }
    }
}

/// The file system `path` is on, as a report names it: on overlayfs a read runs the file
/// hooks twice (the overlay's file and its layer's), which a benchmark must say.
pub fn fs_name(path: &Path) -> &'static str {
    use nix::sys::statfs::{OVERLAYFS_SUPER_MAGIC, TMPFS_MAGIC, statfs};
    match statfs(path).map(|s| s.filesystem_type()) {
        Ok(t) if t == TMPFS_MAGIC => "tmpfs",
        Ok(t) if t == OVERLAYFS_SUPER_MAGIC => "overlayfs",
        Ok(_) => "another file system",
        Err(_) => "an unknown file system",
    }
}

/// A policy named `name` with one `Prefix` filter of `values` values on
/// `security_file_permission`'s file, none of which a benchmark's file matches, and Sigkill.
pub fn prefix_policy(name: &str, values: usize) -> String {
    let mut y = format!(
        "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: \"{name}\"\nspec:\n  kprobes:\n  - call: \"security_file_permission\"\n    syscall: false\n    args:\n    - index: 0\n      type: \"file\"\n    - index: 1\n      type: \"int\"\n    selectors:\n    - matchArgs:\n      - index: 0\n        operator: \"Prefix\"\n        values:\n",
    );
    for i in 0..values {
        let _ = writeln!(y, "        - \"/bench/never/{i:05}/\"");
    }
    y.push_str("      matchActions:\n      - action: Sigkill\n");
    y
}

/// A policy named `name` with one `DAddr` filter of `cidrs` networks on `tcp_connect`, none
/// containing 127.0.0.1, and Sigkill.
pub fn connect_policy(name: &str, cidrs: usize) -> String {
    let mut y = format!(
        "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: \"{name}\"\nspec:\n  kprobes:\n  - call: \"tcp_connect\"\n    syscall: false\n    args:\n    - index: 0\n      type: \"sock\"\n    selectors:\n    - matchArgs:\n      - index: 0\n        operator: \"DAddr\"\n        values:\n",
    );
    // Distinct /24 networks inside 10.0.0.0/8.
    for i in 0..cidrs {
        let _ = writeln!(y, "        - \"10.{}.{}.0/24\"", i / 256, i % 256);
    }
    y.push_str("      matchActions:\n      - action: Sigkill\n");
    y
}

/// The resident set (`VmRSS`) of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("agent's status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in the agent's status")
}

/// Each program the agent's log says it loaded, with the verifier's processed-instruction
/// count (`verified_insns`) and the load time, in load order.
pub fn verified_insns(log: &str) -> Vec<(String, u64, String)> {
    let field = |line: &str, key: &str| -> Option<String> {
        let rest = line.split(&format!("{key}=")).nth(1)?;
        Some(
            rest.split_whitespace()
                .next()?
                .trim_matches('"')
                .to_string(),
        )
    };
    log.lines()
        .map(strip_ansi)
        .filter(|l| l.contains("program loaded"))
        .filter_map(|l| {
            let insns = field(&l, "verified_insns")?.parse().ok()?;
            Some((field(&l, "program")?, insns, field(&l, "elapsed")?))
        })
        .collect()
}

/// `line` without its terminal colour sequences (`ESC [ ... m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settle_returns_once_a_process_uses_no_cpu_and_waits_while_it_does() {
        let mut idle = Command::new("sleep").arg("10").spawn().expect("sleep");
        let waited = settle(
            idle.id(),
            Duration::from_millis(200),
            Duration::from_secs(5),
        );
        let _ = idle.kill();
        let _ = idle.wait();
        assert!(
            waited < Duration::from_secs(2),
            "an idle process: {waited:?}"
        );

        // This process, spinning on another thread, is never idle: the limit ends the wait.
        let stop = Arc::new(AtomicU64::new(0));
        let spinner = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while stop.load(Ordering::Relaxed) == 0 {
                    std::hint::spin_loop();
                }
            })
        };
        let waited = settle(
            std::process::id(),
            Duration::from_millis(200),
            Duration::from_millis(800),
        );
        stop.store(1, Ordering::Relaxed);
        let _ = spinner.join();
        assert!(
            waited >= Duration::from_millis(800),
            "a busy process: {waited:?}"
        );
    }

    #[test]
    fn cpu_ticks_of_this_process_are_read_from_its_stat() {
        let spin = Instant::now();
        while spin.elapsed().as_millis() < 50 {
            std::hint::black_box(spin.elapsed());
        }
        assert!(cpu_ticks(std::process::id()) > 0);
    }

    #[test]
    fn program_costs_give_runs_per_operation_and_mean_per_run_of_programs_run_per_operation() {
        let before = "lsm_agent_overhead_program_runs_total{program=\"file_open\",kind=\"lsm\"} 10\n\
                      lsm_agent_overhead_program_nanoseconds_total{program=\"file_open\",kind=\"lsm\"} 1000\n";
        let after = "lsm_agent_overhead_program_runs_total{program=\"file_open\",kind=\"lsm\"} 110\n\
                     lsm_agent_overhead_program_nanoseconds_total{program=\"file_open\",kind=\"lsm\"} 51000\n\
                     lsm_agent_overhead_program_runs_total{program=\"sched_process_exec\",kind=\"tracepoint\"} 3\n\
                     lsm_agent_overhead_program_nanoseconds_total{program=\"sched_process_exec\",kind=\"tracepoint\"} 900\n";
        assert_eq!(program_costs(before, after, 100), "file_open 1.0×500");
        assert_eq!(program_costs(before, after, 50), "file_open 2.0×500");
        assert_eq!(program_costs(after, after, 100), "–");
        let layer = format!("{after}lsm_agent_layer_files_passed_total 210\n");
        assert_eq!(
            program_costs(before, &layer, 100),
            "file_open 1.0×500, layer files passed early 2.1"
        );
    }

    #[test]
    fn verified_insns_are_read_from_coloured_and_plain_log_lines() {
        let log = "\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m lsm_agent::bpf: program loaded \u{1b}[3mprogram\u{1b}[0m\u{1b}[2m=\u{1b}[0m\"file_open\" \u{1b}[3melapsed\u{1b}[0m\u{1b}[2m=\u{1b}[0m606.6ms \u{1b}[3mverified_insns\u{1b}[0m\u{1b}[2m=\u{1b}[0m112656\n\
                   INFO lsm_agent: policy enforcing policy=x\n\
                   INFO lsm_agent::bpf: program loaded program=\"mmap_file\" elapsed=773.5ms verified_insns=136509\n";
        assert_eq!(
            verified_insns(log),
            vec![
                ("file_open".to_string(), 112656, "606.6ms".to_string()),
                ("mmap_file".to_string(), 136509, "773.5ms".to_string()),
            ]
        );
    }
}
