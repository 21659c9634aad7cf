//! The fallback ladder on a kernel booted without `bpf` in `lsm=` (configuration
//! `6.12-nolsm` of vm-tests/kernels): the same quickstart policy loads unchanged, its hooks
//! are observed through kprobes on the `security_*` functions, the degraded mode shows in
//! `lsmctl`, `--require-lsm` refuses to start, `--fallback-sigkill` kills after the fact, and
//! the hooks of the wider LSM table are observed through their `security_*` functions.
//! Each test starts (and stops) its own agent: the flags differ.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use vm_tests::*;

fn cat() -> PathBuf {
    PathBuf::from("/usr/bin/cat")
}

fn policy_args(extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "--tracing-policy".to_string(),
        quickstart("file_monitoring_enforce.yaml")
            .display()
            .to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn bpf_lsm_is_inactive_in_the_guest() {
    assert_bpf_lsm_inactive();
}

#[test]
fn the_quickstart_file_policy_is_observed_through_kprobes_and_shown_as_degraded() {
    let mut a = Agent::start_without_bpf_lsm(&policy_args(&[]));

    // Observed, not denied: the read happens and the event says what it was.
    let out = run(&cat(), &["/etc/shadow"]);
    assert_eq!(
        exit_code(&out),
        0,
        "without --fallback-sigkill nothing is killed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    a.expect_lines(&[
        "🚀 process | /usr/bin/cat /etc/shadow".into(),
        "📚 read    | /usr/bin/cat /etc/shadow".into(),
    ]);

    let list = a.lsmctl(&["tracingpolicy", "list"]);
    assert!(list.status.success());
    let list = stdout(&list);
    let row = list
        .lines()
        .find(|l| l.contains("file-monitoring-filtered"))
        .unwrap_or_else(|| panic!("policy not listed:\n{list}"));
    assert!(
        row.contains("observe:security_file_permission"),
        "the list must mark the hook as observed by kprobe:\n{list}"
    );

    let status = a.lsmctl(&["status"]);
    assert!(status.status.success(), "degraded is not an error");
    let status = stdout(&status);
    assert!(
        status.contains("Health Status: running (degraded: BPF LSM is not active"),
        "{status}"
    );
    assert!(
        status.contains(
            "policy file-monitoring-filtered: observed by kprobe security_file_permission"
        ),
        "{status}"
    );
    // The capability probe: Debian's kernels have no bpf_override_return.
    assert!(
        status.contains(
            "Kernel: bpf_lsm no, btf yes, kprobes yes, bpf_send_signal yes, bpf_override_return no"
        ),
        "{status}"
    );
    assert!(
        status.contains(
            "Hook file_permission: kprobe security_file_permission, observes only (BPF LSM is not active)"
        ),
        "{status}"
    );

    let log = std::fs::read_to_string(results_dir().join("agent.log")).unwrap_or_default();
    assert!(
        log.contains(
            "observed by kprobe security_file_permission: BPF LSM is not active; no pre-operation deny"
        ),
        "one warning per degraded hook; log:\n{log}"
    );
}

#[test]
fn require_lsm_refuses_to_start_with_a_clear_message() {
    let address = format!("unix:///tmp/lsm-agent-require-{}.sock", std::process::id());
    let mut child = Command::new(bin("lsm-agent"))
        .args(policy_args(&[
            "--require-lsm",
            "--server-address",
            &address,
        ]))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning lsm-agent");
    let start = Instant::now();
    while child.try_wait().expect("waiting").is_none() {
        if start.elapsed() > AGENT_START_TIMEOUT {
            let _ = child.kill();
            panic!("lsm-agent --require-lsm kept running without BPF LSM");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = child.wait_with_output().expect("output");
    assert!(!out.status.success(), "--require-lsm must refuse to start");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("BPF LSM is not active on this kernel"),
        "{err}"
    );
    assert!(err.contains("--require-lsm"), "{err}");
    assert!(err.contains("lsm=...,bpf"), "{err}");
}

#[test]
fn fallback_sigkill_kills_cat_after_the_fact() {
    let mut a = Agent::start_without_bpf_lsm(&policy_args(&["--fallback-sigkill"]));
    let out = run(&cat(), &["/etc/shadow"]);
    assert_eq!(exit_code(&out), 137, "cat /etc/shadow must be killed");
    a.expect_lines(&[
        "🚀 process | /usr/bin/cat /etc/shadow".into(),
        "📚 read    | /usr/bin/cat /etc/shadow".into(),
        "💥 exit    | /usr/bin/cat /etc/shadow SIGKILL".into(),
    ]);
}

/// The wider LSM table degrades the same way: a kprobe on `security_inode_mkdir` feeds the
/// generic reader, so the mkdir the policy would deny happens, and the event carries the
/// arguments and says it was only observed.
#[test]
fn a_wider_table_hook_is_observed_with_its_arguments_through_its_security_function() {
    let policy = fixture("deny-mkdir-of-lsm-vmtest-forbidden-dir-eperm.yaml");
    let a = Agent::start_without_bpf_lsm(&[
        "--tracing-policy".to_string(),
        policy.display().to_string(),
    ]);
    let events = a.json_stream();
    let dir = scratch_dir("fallback-mkdir");
    std::fs::create_dir(dir.join("lsm-vmtest-forbidden-dir"))
        .expect("observed, not denied: the mkdir happens");
    let line = events.expect("the observed inode_mkdir event", |l| {
        l.contains("\"function_name\":\"security_inode_mkdir\"")
    });
    assert!(line.contains("observed-by-kprobe"), "{line}");
    assert!(
        line.contains("fallback-mkdir/lsm-vmtest-forbidden-dir\"}}"),
        "arg 1 is the new directory: {line}"
    );
    assert!(
        !line.contains("KPROBE_ACTION_OVERRIDE"),
        "a kprobe cannot override: {line}"
    );
    let list = a.lsmctl(&["tracingpolicy", "list"]);
    let list = stdout(&list);
    assert!(
        list.contains("observe:security_inode_mkdir"),
        "the list marks the hook as observed:\n{list}"
    );
}

/// `resolve` at a hook whose program is hand-written (`bprm_check_security`): without BPF
/// LSM the hook entry is observed by the twin's kprobe on `security_bprm_check`, which
/// follows the path with the generic reader: the exec by a child of `lsmvt-resolve` posts
/// the parent's name, marked as observed (a `process_kprobe` on `security_bprm_check`, as
/// every hook observed by the fallback).
#[test]
fn a_resolved_argument_at_a_hand_written_hook_is_observed_by_its_twin_kprobe() {
    let policy = fixture("observe-exec-by-child-of-lsmvt-resolve-at-bprm-check.yaml");
    let a = Agent::start_without_bpf_lsm(&[
        "--tracing-policy".to_string(),
        policy.display().to_string(),
    ]);
    let events = a.json_stream();
    let dir = scratch_dir("fallback-resolve");
    let shell = dir.join("lsmvt-resolve");
    std::fs::copy("/usr/bin/dash", &shell).expect("copy dash");
    let out = run(&shell, &["-c", "/usr/bin/true; echo status=$?"]);
    assert!(stdout(&out).contains("status=0"), "{out:?}");
    let line = events.expect("the observed bprm_check_security event", |l| {
        l.contains("\"function_name\":\"security_bprm_check\"")
            && l.contains("\"policy_name\":\"observe-exec-by-child-of-lsmvt-resolve\"")
    });
    assert!(line.contains("observed-by-kprobe"), "{line}");
    assert!(
        line.contains("{\"string_arg\":\"lsmvt-resolve\"}"),
        "the event carries the resolved name: {line}"
    );
}
