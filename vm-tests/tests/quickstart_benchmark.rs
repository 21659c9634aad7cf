//! Benchmark (reports numbers, asserts none of them): what the guide's two enforce policies
//! cost next to no agent at all, in one boot, and how long the agent takes from launch to
//! enforcing them; the baseline of issue 13's targets.
//!
//! * A 1-byte `pread` on an open file and `open` + 1-byte `read` + `close` of it (matching no
//!   selector; one file on the guest's /tmp, an overlayfs, where a read runs the file hooks
//!   for the overlay's file and its layer's as in a container, one on /dev/shm, a tmpfs), by
//!   `vmtest-readbench`, and a TCP `connect()` +
//!   close to 127.0.0.1 (which the egress policy lets through), and a fork + exec of a static
//!   busybox on tmpfs: first with no agent, then with the agent enforcing
//!   `file_monitoring_enforce.yaml` and `network_egress_cluster_enforce.yaml` (after
//!   `envsubst`), each as the median and the spread of 7 rounds, and with no agent again
//!   once it has stopped (the no-agent column is the mean of the two medians, so that the
//!   host's drift over the test weighs on both columns alike; beside the agent only once it
//!   has used no CPU for a second, its start's work done); then, with the kernel's
//!   per-program statistics on (they cost each run two clock reads, so not while measuring),
//!   which programs each operation ran and their mean time per run; and all of it again with
//!   a 10,000-value `Prefix` policy on the file hook and a 10,000-CIDR policy on connect
//!   added.
//! * From launch to enforcing: the agent's first log line to its last `policy enforcing` line,
//!   and to its answering `lsmctl status` with its event stream delivering; then
//!   `cat /etc/shadow` must be killed; and from `lsmctl tracingpolicy add` of a third policy,
//!   on a hook not yet attached, to its `mkdir` denied.
//! * Each program the agent loaded, with the verifier's processed-instruction count
//!   (`verified_insns`, the machine-independent measure of start-up cost) and its load time,
//!   from the agent's log; the agent's resident memory once the policies are loaded.
//!
//! The report goes to stdout and to `bench-quickstart.md` in the results directory. The test
//! fails only when something does not work (the agent, a policy, a read), never on a time.

use std::{
    fmt::Write as _,
    fs,
    io::ErrorKind,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use vm_tests::{
    bench::{
        BpfStats, ReadCost, connect_cost, connect_policy, fs_name, prefix_policy, program_costs,
        readbench, rss_kib, settle, verified_insns,
    },
    *,
};

/// Per round: 1-byte preads, and open+read+close; rounds per measurement.
const READS: &str = "50000";
const OPENS: &str = "10000";
const ROUNDS: &str = "7";
const CONNECTS: u32 = 2000;
const CONNECT_ROUNDS: usize = 7;
/// Per round: fork + exec of a static binary on tmpfs.
const EXECS: u32 = 200;
const EXEC_ROUNDS: usize = 7;
/// The agent's metrics address: the per-program breakdown reads the kernel's run statistics
/// there.
const METRICS: &str = "127.0.0.1:2113";
/// Before each measurement beside the agent: until it has used no CPU for a second, at most
/// 15 s (see `bench::settle`).
const SETTLE_WINDOW: Duration = Duration::from_secs(1);
const SETTLE_LIMIT: Duration = Duration::from_secs(15);

/// (median, min, max) nanoseconds per fork + exec + wait of `exe true` (busybox).
fn exec_cost(exe: &Path) -> [f64; 3] {
    let mut rounds: Vec<f64> = (0..EXEC_ROUNDS)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..EXECS {
                let status = Command::new(exe)
                    .arg("true")
                    .stdin(Stdio::null())
                    .status()
                    .expect("exec of the benchmark's busybox");
                assert!(status.success(), "busybox true: {status:?}");
            }
            start.elapsed().as_nanos() as f64 / f64::from(EXECS)
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    [rounds[EXEC_ROUNDS / 2], rounds[0], rounds[EXEC_ROUNDS - 1]]
}

/// A copy of the host's static busybox in `dir` (on tmpfs: the 9p root costs ~2 ms per
/// open, which would drown an exec's cost).
fn busybox_on_tmpfs(dir: &Path) -> PathBuf {
    let exe = dir.join("busybox");
    fs::copy("/bin/busybox", &exe).expect("copying /bin/busybox (Debian's busybox-static)");
    exe
}

/// The cost of `op` run `ops` times broken down by BPF program (runs per operation × mean
/// ns per run, of those that ran at least once per operation), with the kernel's run
/// statistics on.
fn breakdown(ops: u32, op: impl FnOnce()) -> String {
    let _stats = BpfStats::enable();
    let before = scrape_metrics(METRICS);
    op();
    program_costs(&before, &scrape_metrics(METRICS), ops)
}

/// Seconds since midnight of a log line's RFC 3339 timestamp (`...T00:42:43.662869Z`), after
/// its colour sequences; the benchmark's boot does not cross midnight.
fn log_seconds(line: &str) -> Option<f64> {
    let t = line.split('T').nth(1)?.split('Z').next()?;
    let mut parts = t.split(':');
    let (h, m, s): (f64, f64, f64) = (
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
    );
    Some(h * 3600.0 + m * 60.0 + s)
}

/// Seconds from the agent's first log line to its last `policy enforcing` line.
fn launch_to_enforcing(log: &str) -> Option<f64> {
    let first = log.lines().find_map(log_seconds)?;
    let last = log
        .lines()
        .rev()
        .filter(|l| l.contains("policy enforcing"))
        .find_map(log_seconds)?;
    Some(last - first)
}

fn spread(v: [f64; 3]) -> String {
    format!("{:.0} ({:.0}–{:.0})", v[0], v[1], v[2])
}

/// The no-agent measurement before the agent ran and after it stopped, as one: the mean of
/// the two medians, the lower minimum and the higher maximum.
fn before_and_after(before: [f64; 3], after: [f64; 3]) -> [f64; 3] {
    [
        (before[0] + after[0]) / 2.0,
        before[1].min(after[1]),
        before[2].max(after[2]),
    ]
}

#[test]
fn report_the_quickstart_enforce_policies_cost_and_start_up_next_to_no_agent() {
    let dir = scratch_dir("bench-quickstart");
    // The same 1-byte file on the guest's /tmp (an overlayfs there: a read runs the file
    // hooks for the overlay's file and for its layer's, as in a container) and on /dev/shm
    // (tmpfs: one call per read, as on a node's own file system).
    let shm = Path::new("/dev/shm/lsm-vmtest-bench-quickstart");
    let _ = fs::remove_dir_all(shm);
    fs::create_dir_all(shm).expect("a directory on /dev/shm");
    let files = [dir.join("data"), shm.join("data")];
    for f in &files {
        fs::write(f, "x").expect("data file");
    }
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for s in listener.incoming() {
            drop(s);
        }
    });
    let busybox = busybox_on_tmpfs(shm);
    let readbench = |file: &Path, reads: &str, opens: &str, rounds: &str| {
        readbench(
            Command::new(bin("vmtest-readbench")),
            file,
            reads,
            opens,
            rounds,
        )
    };
    let measure = || -> ([ReadCost; 2], [f64; 3], [f64; 3]) {
        (
            [
                readbench(&files[0], READS, OPENS, ROUNDS),
                readbench(&files[1], READS, OPENS, ROUNDS),
            ],
            connect_cost(addr, CONNECTS, CONNECT_ROUNDS),
            exec_cost(&busybox),
        )
    };

    let bare = measure();

    let network = dir.join("network-egress-cluster-enforce.yaml");
    let yaml = substitute(
        &quickstart("network_egress_cluster_enforce.yaml"),
        &[("PODCIDR", "10.0.0.0/16"), ("SERVICECIDR", "10.96.0.0/12")],
    );
    fs::write(&network, yaml).expect("network policy");
    let launch = Instant::now();
    let a = Agent::start(&[
        "--metrics-server".into(),
        METRICS.into(),
        "--tracing-policy".into(),
        quickstart("file_monitoring_enforce.yaml")
            .display()
            .to_string(),
        "--tracing-policy".into(),
        network.display().to_string(),
    ]);
    let ready = launch.elapsed();
    let log = fs::read_to_string(results_dir().join("agent.log")).expect("agent log");
    let cat = run(Path::new("/usr/bin/cat"), &["/etc/shadow"]);
    assert_eq!(
        exit_code(&cat),
        137,
        "the file policy is enforced once the agent is ready"
    );
    let settled = settle(a.pid(), SETTLE_WINDOW, SETTLE_LIMIT);
    let loaded = measure();
    let rss = rss_kib(a.pid());
    let reads: u32 = READS.parse().expect("READS");
    let opens: u32 = OPENS.parse().expect("OPENS");
    let costs = [
        breakdown(reads, || {
            readbench(&files[0], READS, "1", "1");
        }),
        breakdown(opens, || {
            readbench(&files[0], "1", OPENS, "1");
        }),
        breakdown(reads, || {
            readbench(&files[1], READS, "1", "1");
        }),
        breakdown(opens, || {
            readbench(&files[1], "1", OPENS, "1");
        }),
        breakdown(CONNECTS, || {
            connect_cost(addr, CONNECTS, 1);
        }),
        breakdown(EXECS, || {
            exec_cost(&busybox);
        }),
    ];

    // The same with a 10,000-value Prefix policy on the file hook and a 10,000-CIDR policy on
    // connect added: what large value sets cost on top.
    let large_sets: Vec<_> = [
        (
            "bench-prefix-10000",
            prefix_policy("bench-prefix-10000", 10_000),
        ),
        (
            "bench-cidr-10000",
            connect_policy("bench-cidr-10000", 10_000),
        ),
    ]
    .into_iter()
    .map(|(name, yaml)| {
        let p = dir.join(format!("{name}.yaml"));
        fs::write(&p, yaml).expect("policy");
        a.add_policy(&p)
    })
    .collect();
    let large_settled = settle(a.pid(), SETTLE_WINDOW, SETTLE_LIMIT);
    let large = measure();
    for p in large_sets {
        p.delete();
    }

    // A third policy added to the running agent, on a hook no policy uses yet (its program
    // is attached by the add): from `tracingpolicy add` to `mkdir` denied.
    let forbidden = dir.join("lsm-vmtest-forbidden-dir");
    let start = Instant::now();
    let added = a.add_policy(&fixture(
        "deny-mkdir-of-lsm-vmtest-forbidden-dir-eperm.yaml",
    ));
    let add_to_enforcing = start.elapsed();
    let denied = fs::create_dir(&forbidden).map_err(|e| e.kind());
    assert_eq!(
        denied,
        Err(ErrorKind::PermissionDenied),
        "mkdir is denied once `tracingpolicy add` returns"
    );
    added.delete();
    drop(a);
    // The no-agent column's second half: nothing of the agent may be left enforcing.
    let cat = run(Path::new("/usr/bin/cat"), &["/etc/shadow"]);
    assert_eq!(
        exit_code(&cat),
        0,
        "nothing enforces once the agent has stopped and its pins are lifted"
    );
    let after = measure();
    // Named while the files exist.
    let fs_names = [fs_name(&files[0]), fs_name(&files[1])];
    let _ = fs::remove_dir_all(shm);

    let mut report = format!(
        "# The guide's two enforce policies next to no agent ({}, BPF-LSM programs, QEMU TCG)\n\n\
         | operation, ns (median; min–max of {ROUNDS} rounds) | no agent (mean of the medians before and after the agent) | both enforce policies | ratio | plus 10,000-value Prefix and CIDR policies | ratio | BPF programs per operation (both enforce policies): runs per operation × mean ns per run |\n|---|---|---|---|---|---|---|\n",
        kernel_release()
    );
    let on = |i: usize| format!("{}, {}", files[i].display(), fs_names[i]);
    for ((name, b, l, g), programs) in [
        (
            format!("1-byte pread ({READS} per round), {}", on(0)),
            (bare.0[0].pread, after.0[0].pread),
            loaded.0[0].pread,
            large.0[0].pread,
        ),
        (
            format!("open + 1-byte read + close ({OPENS} per round), {}", on(0)),
            (bare.0[0].open_read_close, after.0[0].open_read_close),
            loaded.0[0].open_read_close,
            large.0[0].open_read_close,
        ),
        (
            format!("1-byte pread, {}", on(1)),
            (bare.0[1].pread, after.0[1].pread),
            loaded.0[1].pread,
            large.0[1].pread,
        ),
        (
            format!("open + 1-byte read + close, {}", on(1)),
            (bare.0[1].open_read_close, after.0[1].open_read_close),
            loaded.0[1].open_read_close,
            large.0[1].open_read_close,
        ),
        (
            format!("connect + close to 127.0.0.1 ({CONNECTS} per round)"),
            (bare.1, after.1),
            loaded.1,
            large.1,
        ),
        (
            format!(
                "fork + exec of busybox true, {} ({EXECS} per round)",
                fs_names[1]
            ),
            (bare.2, after.2),
            loaded.2,
            large.2,
        ),
    ]
    .into_iter()
    .zip(&costs)
    {
        let (before, after) = b;
        let b = before_and_after(before, after);
        let _ = writeln!(
            report,
            "| {name} | {} (before {:.0}, after {:.0}) | {} | {:.2} | {} | {:.2} | {programs} |",
            spread(b),
            before[0],
            after[0],
            spread(l),
            l[0] / b[0],
            spread(g),
            g[0] / b[0]
        );
    }
    let enforcing = launch_to_enforcing(&log)
        .map_or_else(|| "not in the log".to_string(), |s| format!("{s:.1} s"));
    let _ = writeln!(
        report,
        "\n- launch to both policies enforcing (the agent's log): {enforcing}\n\
         - launch to ready (`lsmctl status` answers, the event stream delivers): {:.1} s\n\
         - the agent idle (no CPU tick in {:.0} s) before the measurements beside it: {:.1} s after ready; {:.1} s after the 10,000-value policies were added\n\
         - `lsmctl tracingpolicy add` of a third policy (a hook not yet attached) to enforcing: {:.2} s\n\
         - agent resident memory with both policies loaded: {:.1} MiB\n\n\
         | program loaded | verified_insns | load time |\n|---|---|---|",
        ready.as_secs_f64(),
        SETTLE_WINDOW.as_secs_f64(),
        settled.as_secs_f64(),
        large_settled.as_secs_f64(),
        add_to_enforcing.as_secs_f64(),
        rss as f64 / 1024.0
    );
    let programs = verified_insns(&log);
    for (program, insns, elapsed) in &programs {
        let _ = writeln!(report, "| `{program}` | {insns} | {elapsed} |");
    }
    let total: u64 = programs.iter().map(|p| p.1).sum();
    let _ = writeln!(report, "| all | {total} | |");
    println!("{report}");
    fs::write(results_dir().join("bench-quickstart.md"), &report).expect("report");
}
