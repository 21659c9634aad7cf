//! The user's view: policies managed live with `lsmctl tracingpolicy add/list/delete`, the
//! quickstart stories in `lsmctl getevents -o compact`, and a `/metrics` scrape showing the
//! counters those stories moved.

use std::{os::unix::process::ExitStatusExt, path::Path};

use vm_tests::*;

const METRICS: &str = "127.0.0.1:2112";

fn agent() -> std::sync::MutexGuard<'static, Agent> {
    shared_agent_with_args(&["--metrics-server".to_string(), METRICS.to_string()])
}

/// The body of `GET /metrics`.
fn scrape() -> String {
    scrape_metrics(METRICS)
}

fn policy_names(a: &Agent) -> String {
    let out = a.lsmctl(&["tracingpolicy", "list"]);
    assert!(out.status.success(), "tracingpolicy list");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn tracingpolicy_add_list_delete_changes_enforcement_live_and_metrics_follow() {
    let mut a = agent();
    let before = scrape();
    let denied_before = metric_sample(&before, "lsm_agent_operations_denied_total", &[]);

    // Nothing loaded: reading /etc/shadow works.
    let free = run(Path::new("/usr/bin/cat"), &["/etc/shadow"]);
    assert!(free.status.success(), "no policy yet");

    let policy = a.add_policy(&quickstart("file_monitoring_enforce.yaml"));
    assert!(policy_names(&a).contains("file-monitoring-filtered"));
    let killed = run(Path::new("/usr/bin/cat"), &["/etc/shadow"]);
    assert_eq!(killed.status.signal(), Some(9), "cat /etc/shadow is killed");
    a.expect_lines(&[
        "🚀 process | /usr/bin/cat /etc/shadow".into(),
        "📚 read    | /usr/bin/cat /etc/shadow".into(),
        "💥 exit    | /usr/bin/cat /etc/shadow SIGKILL".into(),
    ]);

    let during = scrape();
    policy.delete();
    assert!(!policy_names(&a).contains("file-monitoring-filtered"));
    let free_again = run(Path::new("/usr/bin/cat"), &["/etc/shadow"]);
    assert!(free_again.status.success(), "deleted: reading works again");

    let policy = [("policy", "file-monitoring-filtered")];
    assert!(
        metric_sample(
            &during,
            "lsm_agent_policy_actions_total",
            &[policy[0], ("action", "signal")]
        ) >= 1.0,
        "the Sigkill is counted for the policy:\n{during}"
    );
    assert!(
        metric_sample(&during, "lsm_agent_policy_events_total", &policy) >= 1.0,
        "the read event is counted for the policy"
    );
    assert!(
        metric_sample(
            &during,
            "lsm_agent_events_total",
            &[("type", "PROCESS_KPROBE")]
        ) >= 1.0
    );
    assert!(
        metric_sample(
            &during,
            "lsm_agent_events_total",
            &[("type", "PROCESS_EXIT")]
        ) >= 1.0
    );
    assert!(metric_sample(&during, "lsm_agent_operations_denied_total", &[]) > denied_before);
    assert!(
        metric_sample(
            &during,
            "lsm_agent_operations_denied_by_binary_total",
            &[("binary", "/usr/bin/cat")]
        ) >= 1.0
    );
    assert!(
        metric_sample(
            &during,
            "lsm_agent_tracingpolicy_loaded",
            &[("state", "enabled")]
        ) >= 1.0
    );
    assert_eq!(
        metric_sample(&during, "lsm_agent_build_info", &[]),
        1.0,
        "build info is exported"
    );
}

#[test]
fn the_network_story_shows_connect_and_kill_and_moves_the_counters() {
    let mut a = agent();
    let text = substitute(
        &quickstart("network_egress_cluster_enforce.yaml"),
        &[("PODCIDR", "10.0.0.0/16"), ("SERVICECIDR", "10.96.0.0/12")],
    );
    let policy = a.add_policy_yaml("obs-egress", &text);
    let out = run(&bin("vmtest-connect"), &["tcp", "198.51.100.1:443"]);
    let body = scrape();
    policy.delete();
    assert_eq!(out.status.signal(), Some(9), "the connect is killed");
    let exe = bin("vmtest-connect").display().to_string();
    a.expect_lines(&[
        format!("🔌 connect | {exe} tcp 0.0.0.0:0 -> 198.51.100.1:443"),
        format!("💥 exit    | {exe} tcp 198.51.100.1:443 SIGKILL"),
    ]);
    assert!(
        metric_sample(
            &body,
            "lsm_agent_policy_events_total",
            &[
                (
                    "policy",
                    "enforce-network-activity-outside-cluster-cidr-range"
                ),
                ("hook", "kprobe:tcp_connect")
            ]
        ) >= 1.0,
        "the connect event is counted under Tetragon's hook label:\n{body}"
    );
    assert!(
        metric_sample(
            &body,
            "lsm_agent_policy_actions_total",
            &[
                (
                    "policy",
                    "enforce-network-activity-outside-cluster-cidr-range"
                ),
                ("action", "signal")
            ]
        ) >= 1.0
    );
}
