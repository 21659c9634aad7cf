//! A minute of flood (issue 12): many short processes and opens, and reads without pause,
//! every open and read posted by a policy: more than the ring buffer and the stream can take.
//! The agent must live through it, stay within a memory bound, forget the processes that
//! ended, and count every event it did not deliver.
//!
//! The numbers go to `flood-summary.txt` in the results.

use std::{
    fs,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use vm_tests::*;

const METRICS: &str = "127.0.0.1:2114";
const SECONDS: u64 = 60;
/// Half the memory limit that the DaemonSet and the chart give the agent (512Mi).
const RSS_BOUND_KIB: u64 = 256 * 1024;
const FILE: &str = "/run/lsm-vmtest-procflood";

/// The agent's resident memory, from `/proc/PID/status`.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Every event some stage of the agent counted as not delivered (kernel ring, decoder
/// queue, a `GetEvents` client).
fn counted_drops(body: &str) -> f64 {
    [
        "lsm_agent_ringbuf_events_lost_total",
        "lsm_agent_ringbuf_queue_events_lost_total",
        "lsm_agent_subscriber_events_dropped_total",
    ]
    .iter()
    .map(|m| metric_sample(body, m, &[]))
    .sum()
}

fn cache_size(body: &str) -> f64 {
    metric_sample(body, "lsm_agent_process_cache_size", &[])
}

/// "children N opens M reads R" from the helper.
fn helper_counts(out: &std::process::Output) -> (u64, u64, u64) {
    let text = String::from_utf8_lossy(&out.stdout);
    let words: Vec<&str> = text.split_whitespace().collect();
    match words[..] {
        ["children", n, "opens", m, "reads", r] => (
            n.parse().expect("children count"),
            m.parse().expect("opens count"),
            r.parse().expect("reads count"),
        ),
        _ => panic!("unexpected helper output: {out:?}"),
    }
}

/// The stream's posted opens (its other lines are the reads).
fn opens_seen(lines: &[String]) -> u64 {
    lines.iter().filter(|l| l.ends_with("file_open")).count() as u64
}

#[test]
fn a_minute_of_short_processes_and_opens_leaves_the_agent_alive_bounded_and_every_drop_counted() {
    fs::write(FILE, "x").expect("flood file");
    let a = Agent::start(&[
        "--tracing-policy".into(),
        fixture("post-open-of-run-lsm-vmtest-procflood.yaml")
            .display()
            .to_string(),
        "--metrics-server".into(),
        METRICS.into(),
    ]);
    let helper = bin("vmtest-flood");
    let events = a.stream(&["--policy-names", "vmtest-procflood"]);
    events.wait_for(
        "a posted open",
        || {
            let _ = run(&helper, &["child", FILE]);
        },
        |l| l.contains("file_open"),
    );
    let (pid, base) = (a.pid(), opens_seen(&events.lines()));
    let before = scrape_metrics(METRICS);

    // Resident memory once a second while the flood runs.
    let samples = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = thread::spawn({
        let (samples, done) = (samples.clone(), done.clone());
        move || {
            while !done.load(Ordering::Relaxed) {
                if let Some(kib) = rss_kib(pid) {
                    samples.lock().unwrap_or_else(|p| p.into_inner()).push(kib);
                }
                thread::sleep(Duration::from_secs(1));
            }
        }
    });
    let out = run(&helper, &["procs", &SECONDS.to_string(), FILE]);
    done.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    assert_eq!(exit_code(&out), 0, "{out:?}");
    let (children, opens, reads) = helper_counts(&out);

    // Drained: the stream's count has not moved for 5 s.
    events.settle(Duration::from_secs(5), Duration::from_secs(120));
    let received = opens_seen(&events.lines()) - base;
    let after = scrape_metrics(METRICS);
    let dropped = (counted_drops(&after) - counted_drops(&before)) as u64;
    // Ended processes leave the cache: by their exit events, or, for an exit event that was
    // lost, by the check against /proc (every 30 s, gone twice in a row).
    let start = Instant::now();
    let mut cache = cache_size(&after);
    while cache > cache_size(&before) + 16.0 && start.elapsed() < Duration::from_secs(75) {
        thread::sleep(Duration::from_secs(2));
        cache = cache_size(&scrape_metrics(METRICS));
    }
    let rss = samples.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let status = a.lsmctl(&["status"]);
    let _ = fs::remove_file(FILE);

    let max_rss = rss.iter().copied().max().unwrap_or(0);
    let summary = format!(
        "flood of {SECONDS} s: {children} short processes, {opens} opens and {reads} reads posted\n\
         opens delivered to the filtered stream: {received}; not delivered: {}; drops counted \
         by the agent (all events): {dropped}\n\
         agent RSS (KiB, once a second): {rss:?}\n\
         max RSS {max_rss} KiB (bound {RSS_BOUND_KIB}); process cache {} before, {cache} after\n",
        opens.saturating_sub(received),
        cache_size(&before),
    );
    let _ = fs::write(results_dir().join("flood-summary.txt"), &summary);
    print!("{summary}");

    assert!(
        status.status.success(),
        "the agent answers after the flood: {status:?}"
    );
    assert!(rss.len() as u64 >= SECONDS / 2, "RSS samples: {rss:?}");
    assert!(
        max_rss < RSS_BOUND_KIB,
        "the agent stayed under {RSS_BOUND_KIB} KiB:\n{summary}"
    );
    assert!(children >= 100, "many short processes:\n{summary}");
    assert!(
        dropped > 0,
        "the flood was more than the agent could deliver (else no drop is tested):\n{summary}"
    );
    assert!(received <= opens, "no open was posted twice:\n{summary}");
    assert!(
        opens - received <= dropped,
        "every open that was not delivered is counted as dropped:\n{summary}"
    );
    assert!(
        cache <= cache_size(&before) + 16.0,
        "the ended processes left the process cache:\n{summary}"
    );
}
