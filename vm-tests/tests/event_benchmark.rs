//! Benchmark (reports numbers, asserts none of them): how many events a second the agent
//! delivers to 1 and to 8 `GetEvents` subscribers and to its JSON export file, and what it
//! loses on the way; its CPU use idle and under that flood; its resident memory.
//!
//! The flood: `vmtest-readbench` opens (and reads) a file under the policy's prefix as fast as
//! it can, each open posted by `post-opens-under-tmp-lsm-vmtest-evbench.yaml`. The test's own
//! event stream is stopped, so the subscribers counted are the only ones; the export file is
//! one more consumer in every row. Lost events are the agent's own counters (kernel ring,
//! decoder queue, a subscriber's queue, the export).
//!
//! The report goes to stdout and to `bench-events.md` in the results directory.

use std::{
    fmt::Write as _,
    fs,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use vm_tests::{
    bench::{Subscriber, cpu_ticks, readbench, rss_kib},
    *,
};

const METRICS: &str = "127.0.0.1:2115";
/// Opens of the flood per row (each one event).
const OPENS: &str = "40000";
/// What every compact line of the flood's events contains (the compact form of a kprobe
/// event names the function, not its arguments; nothing else opens files under the prefix).
const MARKER: &str = "security_file_open";
/// What every exported line of the flood's events contains.
const EXPORT_MARKER: &str = "/tmp/lsm-vmtest/evbench/data";
/// The idle measurement.
const IDLE: Duration = Duration::from_secs(10);
/// Clock ticks per second of `/proc/PID/stat` (`USER_HZ`).
const TICKS: f64 = 100.0;

/// The agent's counter `name` in a metrics scrape (summed over its labels).
fn counter(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

/// Events the agent counted as lost, by where: kernel ring, decoder queue, subscribers,
/// export.
fn losses(body: &str) -> [f64; 4] {
    [
        "lsm_agent_ringbuf_events_lost_total",
        "lsm_agent_ringbuf_queue_events_lost_total",
        "lsm_agent_subscriber_events_dropped_total",
        "lsm_agent_export_events_lost_total",
    ]
    .map(|n| counter(body, n))
}

/// Lines of the export file (and its rotated files, if any) with the marker.
fn exported(dir: &std::path::Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("events"))
        .map(|e| {
            fs::read_to_string(e.path())
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains(EXPORT_MARKER))
                .count() as u64
        })
        .sum()
}

#[test]
fn report_events_per_second_to_1_and_8_subscribers_and_the_export_with_loss_and_cpu() {
    let dir = scratch_dir("evbench");
    let data = dir.join("data");
    fs::write(&data, "x").expect("data file");
    let export_dir = scratch_dir("evbench-export");
    let export = export_dir.join("events.json");
    let mut a = Agent::start(&[
        "--metrics-server".into(),
        METRICS.into(),
        "--export-filename".into(),
        export.display().to_string(),
        "--tracing-policy".into(),
        fixture("post-opens-under-tmp-lsm-vmtest-evbench.yaml")
            .display()
            .to_string(),
    ]);
    a.stop_stream();
    let pid = a.pid();

    let t0 = cpu_ticks(pid);
    thread::sleep(IDLE);
    let idle_cpu = (cpu_ticks(pid) - t0) as f64 / TICKS / IDLE.as_secs_f64() * 100.0;
    let idle_rss = rss_kib(pid);

    let mut report = format!(
        "# Events delivered under a flood of posted opens ({}, QEMU TCG)\n\n\
         | subscribers | opens/s (events made) | events/s to each subscriber (slowest) | events delivered per subscriber (min–max) | exported | lost (ring, queue, subscribers, export) | agent CPU | agent RSS |\n\
         |---|---|---|---|---|---|---|---|\n",
        kernel_release()
    );
    let opens: u64 = OPENS.parse().expect("OPENS");
    for n in [1usize, 8] {
        let subscribers: Vec<Subscriber> = (0..n)
            .map(|_| Subscriber::start(a.address(), MARKER))
            .collect();
        // Every subscriber is live once it has seen an event of ours.
        let start = Instant::now();
        while subscribers.iter().any(|s| s.count() == 0) {
            let _ = fs::read(&data);
            assert!(
                start.elapsed() < EVENT_TIMEOUT,
                "a subscriber never saw an event"
            );
            thread::sleep(Duration::from_millis(200));
        }
        let base: Vec<u64> = subscribers.iter().map(Subscriber::count).collect();
        let export_base = exported(&export_dir);
        let lost_base = losses(&scrape_metrics(METRICS));
        let ticks = cpu_ticks(pid);
        let start = Instant::now();
        readbench(
            Command::new(bin("vmtest-readbench")),
            &data,
            "1",
            OPENS,
            "1",
        );
        let flood = start.elapsed();
        // What was sent is in once the counts stop changing for two seconds.
        settle(
            || subscribers.iter().map(Subscriber::count).sum::<u64>() + exported(&export_dir),
            Duration::from_secs(2),
            Duration::from_secs(60),
        );
        let busy = start.elapsed();
        let cpu = (cpu_ticks(pid) - ticks) as f64 / TICKS / busy.as_secs_f64() * 100.0;
        let got: Vec<u64> = subscribers
            .iter()
            .zip(&base)
            .map(|(s, b)| s.count() - b)
            .collect();
        let lost = losses(&scrape_metrics(METRICS));
        let lost: Vec<String> = lost
            .iter()
            .zip(lost_base)
            .map(|(l, b)| format!("{:.0}", l - b))
            .collect();
        let pct = |v: u64| 100.0 * v as f64 / opens as f64;
        let (min, max) = (
            got.iter().copied().min().unwrap_or(0),
            got.iter().copied().max().unwrap_or(0),
        );
        let _ = writeln!(
            report,
            "| {n} | {:.0} | {:.0} | {:.1} % – {:.1} % of {opens} | {:.1} % | {} | {:.0} % of a CPU | {:.0} MiB |",
            opens as f64 / flood.as_secs_f64(),
            min as f64 / busy.as_secs_f64(),
            pct(min),
            pct(max),
            pct(exported(&export_dir) - export_base),
            lost.join(", "),
            cpu,
            rss_kib(pid) as f64 / 1024.0
        );
        drop(subscribers);
    }
    let _ = writeln!(
        report,
        "\n- agent idle (policy loaded, no event): {idle_cpu:.1} % of a CPU over {} s, {:.0} MiB resident",
        IDLE.as_secs(),
        idle_rss as f64 / 1024.0
    );
    println!("{report}");
    fs::write(results_dir().join("bench-events.md"), &report).expect("report");
}
