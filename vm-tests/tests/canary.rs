//! The canary (issue 12): health says a hook enforces only once its canary was denied, and a
//! hook detached behind the agent's back turns health to error within one canary period.
//!
//! "Behind its back": the agent holds its LSM links by their bpffs pins alone, so removing a
//! pin (a stray `rm -rf /sys/fs/bpf/...`, a broken uninstall script) detaches the program
//! without the agent doing anything. (LSM links do not support `BPF_LINK_DETACH`.)

use std::{
    thread,
    time::{Duration, Instant},
};

use vm_tests::*;

const METRICS: &str = "127.0.0.1:2113";
/// Seconds between canary rounds in this test.
const PERIOD: u64 = 5;

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `lsm_agent_hook_enforcing{hook}` in a scrape.
fn enforcing(body: &str, hook: &str) -> f64 {
    metric_sample(body, "lsm_agent_hook_enforcing", &[("hook", hook)])
}

#[test]
fn a_hook_detached_behind_the_agents_back_turns_health_to_error_within_one_canary_period() {
    let a = Agent::start(&[
        "--tracing-policy".into(),
        quickstart("file_monitoring_enforce.yaml")
            .display()
            .to_string(),
        "--canary-interval".into(),
        PERIOD.to_string(),
        "--metrics-server".into(),
        METRICS.into(),
    ]);
    // Ready means `lsmctl status` succeeded: the first canary ran before the API answered.
    let status = a.lsmctl(&["status"]);
    let text = stdout(&status);
    assert!(status.status.success(), "{text}");
    let proved = text
        .lines()
        .find(|l| l.contains("canary denied at:"))
        .unwrap_or_else(|| panic!("no canary in the health:\n{text}"));
    for hook in ["file_open", "file_permission", "bprm_check_security"] {
        assert!(proved.contains(hook), "{hook} not proved: {proved}");
    }
    let body = scrape_metrics(METRICS);
    assert_eq!(enforcing(&body, "file_permission"), 1.0, "{body}");

    let pins: Vec<_> = std::fs::read_dir("/sys/fs/bpf/lsm-agent")
        .expect("the agent's pins")
        .filter_map(Result::ok)
        .map(|g| g.path().join("links/file_permission@file_permission"))
        .filter(|p| p.exists())
        .collect();
    assert_eq!(pins.len(), 1, "one pinned file_permission link: {pins:?}");
    std::fs::remove_file(&pins[0]).expect("removing the pin");
    let detached = Instant::now();
    // The next round is at most one period away; the round itself and lsmctl under
    // emulation take a few seconds more.
    let deadline = Duration::from_secs(PERIOD + 8);
    let text = loop {
        let status = a.lsmctl(&["status"]);
        let text = stdout(&status);
        if !status.status.success() {
            break text;
        }
        assert!(
            detached.elapsed() < deadline,
            "health still running {:?} after the detach:\n{text}",
            detached.elapsed()
        );
        thread::sleep(Duration::from_millis(500));
    };
    let _ = std::fs::write(
        results_dir().join("canary-summary.txt"),
        format!(
            "health turned to error {:?} after the pin was removed (period {PERIOD} s)\n",
            detached.elapsed()
        ),
    );
    assert!(
        text.contains("canary failed: file_permission: not denied"),
        "the error names the hook and why:\n{text}"
    );
    let body = scrape_metrics(METRICS);
    assert_eq!(enforcing(&body, "file_permission"), 0.0, "{body}");
    assert_eq!(
        enforcing(&body, "file_open"),
        1.0,
        "the other hooks still enforce: {body}"
    );
}
