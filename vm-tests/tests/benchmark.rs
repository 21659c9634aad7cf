//! Benchmarks (report numbers, assert none of them):
//! * the cost of a `read()` of a file that matches no selector, with no policy, with a
//!   `Prefix` filter of 1 value and with one of 10,000 values on `security_file_permission`
//!   (on tmpfs: the guest's 9p root is slow), and with the same 1-value filter on `vfs_read`,
//!   a call without an LSM hook, observed by the generic kprobe: what an observation-only
//!   kprobe costs next to the LSM program in the same boot;
//! * the cost of a TCP `connect()` to 127.0.0.1 with no policy and with a `tcp_connect`
//!   `DAddr` filter of 1 CIDR and of 10,000 CIDRs, none of which matches.
//!
//! The reports go to stdout and to `bench-*.md` in the results directory. The suite also runs
//! in the `6.12-nolsm` configuration, where the same hooks are observed by kprobes
//! (`bench-*-kprobe.md`), so the two entry points' costs can be compared.

use std::{
    fmt::Write as _,
    fs::{self, File},
    os::unix::fs::FileExt,
    time::Instant,
};

use vm_tests::{
    bench::{BpfStats, connect_cost, connect_policy, prefix_policy, program_costs},
    *,
};

const READS: u32 = 50_000;
const ROUNDS: usize = 5;

/// The entry point the agent uses on this boot (title words and report file suffix).
fn entry_point() -> (&'static str, &'static str) {
    let lsms = fs::read_to_string("/sys/kernel/security/lsm").unwrap_or_default();
    if lsms.trim().split(',').any(|l| l == "bpf") {
        ("BPF-LSM programs", "")
    } else {
        ("kprobes, BPF LSM inactive", "-kprobe")
    }
}

/// The report's title: what was measured, the kernel and the entry point.
fn title(what: &str) -> String {
    format!(
        "# {what} ({}, {}, QEMU TCG)",
        kernel_release(),
        entry_point().0
    )
}

/// A generic kprobe on `vfs_read` (no LSM hook) with a 1-value `Prefix` filter on its file.
fn generic_policy() -> String {
    prefix_policy("bench", 1)
        .replace("name: \"bench\"", "name: \"bench-generic\"")
        .replace("security_file_permission", "vfs_read")
        .replace("action: Sigkill", "action: Post")
}

/// Median nanoseconds per 1-byte `pread` over ROUNDS rounds of READS reads.
fn measure(file: &File) -> f64 {
    let mut buf = [0u8; 1];
    let mut rounds: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..READS {
                file.read_at(&mut buf, 0).expect("read");
            }
            start.elapsed().as_nanos() as f64 / f64::from(READS)
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    rounds[ROUNDS / 2]
}

/// The agent's metrics address: the benchmarks read the kernel's per-program run time there.
const METRICS: &str = "127.0.0.1:2113";

fn agent() -> std::sync::MutexGuard<'static, Agent> {
    shared_agent_any_mode(&["--metrics-server".to_string(), METRICS.to_string()])
}

/// One row: the median cost per read, and what the BPF programs took of it.
fn measure_row(file: &File) -> (f64, String) {
    let before = scrape_metrics(METRICS);
    let ns = measure(file);
    let after = scrape_metrics(METRICS);
    (ns, program_costs(&before, &after, READS * ROUNDS as u32))
}

#[test]
fn report_read_cost_with_1_and_10000_prefix_values() {
    let a = agent();
    let _stats = BpfStats::enable();
    let dir = scratch_dir("bench");
    let data = dir.join("data");
    fs::write(&data, "x").expect("data file");
    let file = File::open(&data).expect("open");

    let mut rows = vec![("no policy".to_string(), measure_row(&file))];
    for values in [1usize, 10_000] {
        let p = dir.join(format!("bench-{values}.yaml"));
        fs::write(&p, prefix_policy("bench", values)).expect("policy");
        let start = Instant::now();
        let policy = a.add_policy(&p);
        let load = start.elapsed();
        rows.push((format!("Prefix, {values} value(s)"), measure_row(&file)));
        policy.delete();
        eprintln!("policy with {values} values added in {load:?}");
    }
    let p = dir.join("bench-generic.yaml");
    fs::write(&p, generic_policy()).expect("policy");
    let start = Instant::now();
    let policy = a.add_policy(&p);
    let load = start.elapsed();
    rows.push((
        "Prefix, 1 value, generic kprobe on vfs_read (observe only)".to_string(),
        measure_row(&file),
    ));
    policy.delete();
    eprintln!("generic kprobe policy added in {load:?}");

    let mut report = format!(
        "{}\n\n| policy | ns per read (median of {ROUNDS} x {READS}) | BPF programs run per read: runs per read × mean ns per run (kernel.bpf_stats_enabled) |\n|---|---|---|\n",
        title("read() cost on a non-matching file")
    );
    for (name, (ns, programs)) in &rows {
        let _ = writeln!(report, "| {name} | {ns:.0} | {programs} |");
    }
    println!("{report}");
    // No timing is asserted: this fails only if the agent, a policy load or a read fails.
    let file = format!("bench-report{}.md", entry_point().1);
    fs::write(results_dir().join(file), &report).expect("report");
}

const CONNECTS: u32 = 2_000;

#[test]
fn report_connect_cost_with_1_and_10000_cidrs() {
    let a = agent();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for s in listener.incoming() {
            drop(s);
        }
    });
    let dir = scratch_dir("bench-connect");
    let mut rows = vec![(
        "no policy".to_string(),
        connect_cost(addr, CONNECTS, ROUNDS)[0],
    )];
    for cidrs in [1usize, 10_000] {
        let p = dir.join(format!("bench-connect-{cidrs}.yaml"));
        fs::write(&p, connect_policy("bench-connect", cidrs)).expect("policy");
        let start = Instant::now();
        let policy = a.add_policy(&p);
        let load = start.elapsed();
        rows.push((
            format!("DAddr, {cidrs} CIDR(s)"),
            connect_cost(addr, CONNECTS, ROUNDS)[0],
        ));
        policy.delete();
        eprintln!("policy with {cidrs} CIDRs added in {load:?}");
    }
    let mut report = format!(
        "{}\n\n| policy | ns per connect+close (median of {ROUNDS} x {CONNECTS}) |\n|---|---|\n",
        title("connect() cost to 127.0.0.1, no match")
    );
    for (name, ns) in &rows {
        let _ = writeln!(report, "| {name} | {ns:.0} |");
    }
    println!("{report}");
    let file = format!("bench-connect{}.md", entry_point().1);
    fs::write(results_dir().join(file), &report).expect("report");
}
