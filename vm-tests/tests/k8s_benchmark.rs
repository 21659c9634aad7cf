//! Benchmark (reports numbers, asserts none of them): the hook cost of a pod's and of a host
//! process's file reads while the agent scopes policies per pod, with 0 and with 1,000 pods
//! bound to this node and 10 namespaced policies loaded. Scoping is a lookup keyed by cgroup
//! id (docs/kubernetes.md, "In the kernel"), so the cost should not grow with the pods.
//!
//! In one boot, against the guest's own API server, the agent watching it: a measuring pod in
//! namespace `lsm-bench-0`, then four setups, each measured from that pod's container and from
//! the host by `vmtest-readbench` (a 1-byte `pread` on an open file that matches no selector,
//! and `open` + 1-byte `read` + `close` of it):
//! 1. no policy, no other pod;
//! 2. the guide's file policy (`file_monitoring_enforce.yaml`, a `TracingPolicyNamespaced`,
//!    unchanged) applied with `kubectl apply -n` in each of the 10 namespaces `lsm-bench-N`
//!    (then deleted again);
//! 3. no policy, 1,000 pods (100 per namespace) created by a few `kubectl create` of `List`s,
//!    with their cgroups;
//! 4. the 10 policies applied again, with the 1,000 pods; reported: how long until the agent
//!    scoped them (the guide's policy kills `cat /etc/shadow` in the last pod of each
//!    namespace).
//!
//! The agent's resident memory is reported with each setup. The report goes to stdout and to
//! `bench-k8s.md` in the results directory. The test fails only when something does not work
//! (the cluster, the agent, a policy load, scoping), never on a time.

use std::{
    fmt::Write as _,
    fs,
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use vm_tests::{
    bench::{ReadCost, readbench, rss_kib},
    k8s::{Applied, Cluster, FakePod, Fleet, FleetPod, NODE, cluster, fleet::ensure_namespaces},
    *,
};

const NAMESPACES: usize = 10;
const PODS_PER_NAMESPACE: usize = 100;
/// kubectl processes creating the pods side by side (the guest has 2 vCPUs).
const CREATORS: usize = 2;
/// Per round: 1-byte preads, and open+read+close; rounds per measurement.
const READS: &str = "50000";
const OPENS: &str = "10000";
const ROUNDS: &str = "7";
/// The guide's file policy, a `TracingPolicyNamespaced`, and its name.
const POLICY_FILE: &str = "file_monitoring_enforce.yaml";
const POLICY_NAME: &str = "file-monitoring-filtered";
/// A read the guide's policy kills in the pods of the namespaces it is applied in.
const GUARDED: &str = "/etc/shadow";
/// How long the agent may take to load (or unload) the policies, and to scope 1,000 pods.
const POLICY_TIMEOUT: Duration = Duration::from_secs(180);
const SCOPE_TIMEOUT: Duration = Duration::from_secs(300);

fn namespaces() -> Vec<String> {
    (0..NAMESPACES).map(|i| format!("lsm-bench-{i}")).collect()
}

/// The shared agent, watching the guest's API server as node [`NODE`].
fn agent(c: &Cluster) -> std::sync::MutexGuard<'static, Agent> {
    shared_agent_with_args(&[
        // `workloads installed … latency_us` in agent.log: how each pod change reached the maps.
        "--log-level".into(),
        "info,lsm_agent::k8s::workloads=debug".into(),
        "--enable-k8s-api".into(),
        "--k8s-kubeconfig-path".into(),
        c.kubeconfig().display().to_string(),
        "--node-name".into(),
        NODE.into(),
    ])
}

/// How many of the guide's policies the agent lists as enabled.
fn enabled(a: &Agent) -> usize {
    let out = a.lsmctl(&["tracingpolicy", "list"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.get(1) == Some(&POLICY_NAME) && cols.get(2) == Some(&"enabled")
        })
        .count()
}

fn listed(a: &Agent) -> usize {
    let out = a.lsmctl(&["tracingpolicy", "list"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some(POLICY_NAME))
        .count()
}

fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(300));
    }
    start.elapsed()
}

/// Whether the guide's policy covers `cmd`'s process: `cat /etc/shadow` is killed (137).
fn guarded_read_killed(mut cmd: Command) -> bool {
    let out = cmd
        .arg(GUARDED)
        .stdin(Stdio::null())
        .output()
        .expect("running cat");
    exit_code(&out) == 137
}

fn fleet_cat(p: &FleetPod) -> Command {
    p.command("/usr/bin/cat", &[])
}

struct Row {
    setup: String,
    process: &'static str,
    cost: ReadCost,
    rss_kib: u64,
}

fn measure_both(a: &Agent, meter: &FakePod, data: &Path, setup: &str, rows: &mut Vec<Row>) {
    for process in ["pod", "host"] {
        let cmd = if process == "pod" {
            meter.command(bin("vmtest-readbench"))
        } else {
            Command::new(bin("vmtest-readbench"))
        };
        let cost = readbench(cmd, data, READS, OPENS, ROUNDS);
        rows.push(Row {
            setup: setup.to_string(),
            process,
            cost,
            rss_kib: rss_kib(a.pid()),
        });
    }
}

fn report(rows: &[Row], notes: &[String]) -> String {
    let mut r = format!(
        "# read() cost with pod scoping, 0 and {} pods ({}, QEMU TCG)\n\n\
         | setup | process | ns per 1-byte pread (median; min–max of {ROUNDS} x {READS}) | ns per open+read+close (median; min–max of {ROUNDS} x {OPENS}) | agent RSS (MiB) |\n\
         |---|---|---|---|---|\n",
        NAMESPACES * PODS_PER_NAMESPACE,
        kernel_release()
    );
    for row in rows {
        let [p, p_min, p_max] = row.cost.pread;
        let [o, o_min, o_max] = row.cost.open_read_close;
        let _ = writeln!(
            r,
            "| {} | {} | {p:.0} ({p_min:.0}–{p_max:.0}) | {o:.0} ({o_min:.0}–{o_max:.0}) | {:.1} |",
            row.setup,
            row.process,
            row.rss_kib as f64 / 1024.0
        );
    }
    r.push('\n');
    for n in notes {
        let _ = writeln!(r, "- {n}");
    }
    r
}

/// Waits until the agent's CPU use over a 1 s window stays under 5 % twice in a row (it has
/// processed what it was sent); returns how long that took, or `None` after `timeout` (not a
/// failure: the numbers are reported as they are).
fn wait_agent_idle(pid: u32, timeout: Duration) -> Option<Duration> {
    let ticks = || -> u64 {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("agent's stat");
        // utime and stime, the 14th and 15th fields, after the `(comm)` that may hold spaces.
        let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<u64> = after
            .split_whitespace()
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)
    };
    let start = Instant::now();
    let mut quiet = 0;
    let mut last = ticks();
    while start.elapsed() < timeout {
        thread::sleep(Duration::from_secs(1));
        let now = ticks();
        // USER_HZ is 100 on Debian's kernels: 5 ticks a second is 5 %.
        quiet = if now - last < 5 { quiet + 1 } else { 0 };
        last = now;
        if quiet == 2 {
            return Some(start.elapsed());
        }
    }
    None
}

fn secs(d: Option<Duration>) -> String {
    d.map_or_else(
        || "not within the timeout".into(),
        |d| format!("{:.1} s", d.as_secs_f64()),
    )
}

/// Applies the guide's policy in every namespace and waits until all are enabled.
fn apply_policies<'c>(
    c: &'c Cluster,
    a: &Agent,
    names: &[String],
    policy: &str,
) -> (Vec<Applied<'c>>, Duration) {
    let start = Instant::now();
    let applied: Vec<Applied> = names.iter().map(|ns| c.apply(Some(ns), policy)).collect();
    wait_for(
        &format!("{NAMESPACES} policies {POLICY_NAME} enabled"),
        POLICY_TIMEOUT,
        || enabled(a) == NAMESPACES,
    );
    (applied, start.elapsed())
}

fn delete_policies(a: &Agent, applied: Vec<Applied>) {
    for p in applied {
        p.delete();
    }
    wait_for("the policies to be unloaded", POLICY_TIMEOUT, || {
        listed(a) == 0
    });
}

#[test]
fn report_read_cost_of_pod_and_host_processes_with_0_and_1000_pods_and_10_namespaced_policies() {
    let c = cluster();
    let names = namespaces();
    ensure_namespaces(c, &names);
    let mut a = agent(c);
    let dir = scratch_dir("k8s-bench");
    let data = dir.join("data");
    fs::write(&data, "x").expect("data file");
    let policy = fs::read_to_string(quickstart(POLICY_FILE)).expect("the guide's file policy");
    let pods = NAMESPACES * PODS_PER_NAMESPACE;

    let meter = FakePod::running(c, &names[0], "bench-meter");
    meter.wait_until_known(&mut a);
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    measure_both(&a, &meter, &data, "no policy, no other pod", &mut rows);

    let (applied, took) = apply_policies(c, &a, &names, &policy);
    notes.push(format!(
        "{NAMESPACES} × `kubectl apply -n lsm-bench-N -f {POLICY_FILE}` until all enabled, no other pod: {:.1} s",
        took.as_secs_f64()
    ));
    // The setup is what it claims: the policy covers the measuring pod, not the host.
    assert!(
        guarded_read_killed(meter.command("/usr/bin/cat")),
        "the guide's policy in {} does not cover its pod {}",
        names[0],
        meter.source()
    );
    assert!(
        !guarded_read_killed(Command::new("/usr/bin/cat")),
        "a namespaced policy killed a host process"
    );
    measure_both(
        &a,
        &meter,
        &data,
        &format!("{NAMESPACES} namespaced policies, no other pod"),
        &mut rows,
    );
    // The pods arrive without policies: how long the agent takes to learn 1,000 new pods and
    // cgroups is reported apart from how long loading the policies over them takes.
    delete_policies(&a, applied);

    let start = Instant::now();
    let (fleet, timings) = Fleet::create(c, &names, PODS_PER_NAMESPACE, CREATORS);
    let idle = wait_agent_idle(a.pid(), SCOPE_TIMEOUT);
    notes.push(format!(
        "{} pods: `kubectl create` of {CREATORS} `List`s {:.1} s, {} cgroup `mkdir`s {:.2} s; \
         agent idle (CPU < 5 %) {} after the cgroups were made, {:.1} s after the create began",
        fleet.pods.len(),
        timings.api.as_secs_f64(),
        2 * fleet.pods.len(),
        timings.cgroups.as_secs_f64(),
        secs(idle),
        start.elapsed().as_secs_f64()
    ));
    measure_both(
        &a,
        &meter,
        &data,
        &format!("no policy, {pods} pods"),
        &mut rows,
    );

    let start = Instant::now();
    let (applied, took) = apply_policies(c, &a, &names, &policy);
    // The last pod of each namespace: the last ones each kubectl created.
    let mut waiting: Vec<&FleetPod> = names
        .iter()
        .filter_map(|ns| fleet.pods.iter().rev().find(|p| &p.namespace == ns))
        .collect();
    wait_for(
        "the agent to scope the last pod of each namespace",
        SCOPE_TIMEOUT,
        || {
            waiting.retain(|p| !guarded_read_killed(fleet_cat(p)));
            waiting.is_empty()
        },
    );
    let scoped = start.elapsed();
    let idle = wait_agent_idle(a.pid(), SCOPE_TIMEOUT);
    notes.push(format!(
        "{NAMESPACES} × `kubectl apply -n` with {pods} pods: all enabled after {:.1} s, \
         the last pod of every namespace in scope after {:.1} s (probed by `cat {GUARDED}` \
         every ~0.3 s), agent idle {} later",
        took.as_secs_f64(),
        scoped.as_secs_f64(),
        secs(idle)
    ));
    measure_both(
        &a,
        &meter,
        &data,
        &format!("{NAMESPACES} namespaced policies, {pods} pods"),
        &mut rows,
    );

    let start = Instant::now();
    delete_policies(&a, applied);
    fleet.delete();
    notes.push(format!(
        "deleting the policies, then the pods (one DELETE per namespace) and their cgroups: {:.1} s",
        start.elapsed().as_secs_f64()
    ));

    let report = report(&rows, &notes);
    println!("{report}");
    fs::write(results_dir().join("bench-k8s.md"), &report).expect("report");
}
