//! Every action, exec blocking, binary filters and monitor mode, each through a policy of
//! `testdata/policies/` added over gRPC (`lsmctl tracingpolicy add`) to one running agent.
//! Each policy names the file `target(NAME)` creates: `/tmp/lsm-vmtest-NAME`.

use std::{
    fs,
    panic::{self, AssertUnwindSafe},
    path::{Path, PathBuf},
    process::Command,
};

use vm_tests::*;

fn agent() -> std::sync::MutexGuard<'static, Agent> {
    shared_agent_with_args(&[])
}

/// NPOST, NENFORCE and NMONITOR of `name` in `lsmctl tracingpolicy list` (the last three
/// columns).
fn counters(a: &Agent, name: &str) -> [u64; 3] {
    let out = a.lsmctl(&["tracingpolicy", "list"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let row = text
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(name))
        .unwrap_or_else(|| panic!("{name} not listed:\n{text}"));
    let cols: Vec<u64> = row
        .split_whitespace()
        .rev()
        .take(3)
        .map(|c| {
            c.parse()
                .unwrap_or_else(|_| panic!("bad counter column in {row:?}"))
        })
        .collect();
    [cols[2], cols[1], cols[0]]
}

/// Whether `name` is in `lsmctl tracingpolicy list`.
fn listed(a: &Agent, name: &str) -> bool {
    let out = a.lsmctl(&["tracingpolicy", "list"]);
    assert!(out.status.success(), "tracingpolicy list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(name))
}

fn target(name: &str) -> String {
    let p = format!("/tmp/lsm-vmtest-{name}");
    fs::write(&p, "data\n").expect("target file");
    p
}

fn cat(path: &str) -> std::process::Output {
    run(Path::new("/usr/bin/cat"), &[path])
}

#[test]
fn signal_sends_the_given_signal_and_does_not_deny() {
    let mut a = agent();
    let t = target("signal");
    let policy = a.add_policy(&fixture(
        "signal-sigusr1-on-open-of-tmp-lsm-vmtest-signal.yaml",
    ));
    let out = cat(&t);
    policy.delete();
    assert_eq!(exit_code(&out), 128 + 10, "cat must die of SIGUSR1");
    a.expect_lines(&[
        "🔒 LSM     | /usr/bin/cat file_open".into(),
        format!("💥 exit    | /usr/bin/cat {t} SIGUSR1"),
    ]);
}

#[test]
fn nopost_enforces_without_an_event() {
    let mut a = agent();
    let t = target("nopost");
    let policy = a.add_policy(&fixture(
        "deny-open-of-tmp-lsm-vmtest-nopost-eperm-without-event.yaml",
    ));
    let mark = a.mark();
    let out = cat(&t);
    a.expect_lines(&[format!("💥 exit    | /usr/bin/cat {t} 1")]);
    let [post, enforce, monitor] = counters(&a, policy.name());
    policy.delete();
    assert_eq!(post, 0, "NoPost: nothing posted");
    assert!(enforce >= 1, "the override is counted");
    assert_eq!(monitor, 0);
    assert_eq!(exit_code(&out), 1);
    let lines = a.lines_since(mark);
    assert!(
        !lines.iter().any(|l| l.contains("file_open")),
        "NoPost posted:\n{}",
        lines.join("\n")
    );
}

#[test]
fn monitor_mode_posts_but_does_not_kill() {
    let mut a = agent();
    let t = target("monitor");
    let policy = a.add_policy(&fixture(
        "monitor-only-sigkill-on-open-of-tmp-lsm-vmtest-monitor.yaml",
    ));
    let out = cat(&t);
    a.expect_lines(&[
        "🔒 LSM     | /usr/bin/cat file_open".into(),
        format!("💥 exit    | /usr/bin/cat {t} 0"),
    ]);
    let [post, enforce, monitor] = counters(&a, policy.name());
    policy.delete();
    assert_eq!(exit_code(&out), 0, "monitor mode must not enforce");
    assert!(post >= 1 && monitor >= 1, "post {post}, monitor {monitor}");
    assert_eq!(enforce, 0, "nothing enforced in monitor mode");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "data\n");
}

#[test]
fn bprm_check_security_override_makes_exec_fail_with_eperm() {
    let mut a = agent();
    let dir = scratch_dir("bprm");
    let blocked = dir.join("lsm-vmtest-blocked");
    fs::copy("/usr/bin/true", &blocked).expect("copy true");
    let policy = a.add_policy(&fixture("deny-exec-of-lsm-vmtest-blocked-eperm.yaml"));
    let err = Command::new(&blocked).status();
    let other = Command::new("/usr/bin/true").status();
    // The exec was attempted by a fork of this test binary, which never became anything else.
    let me = std::env::current_exe().expect("own path");
    a.expect_lines(&[format!("🔒 LSM     | {} bprm_check_security", me.display())]);
    policy.delete();
    let err = err.expect_err("the exec must fail");
    assert_eq!(
        err.raw_os_error(),
        Some(nix::errno::Errno::EPERM as i32),
        "{err}"
    );
    assert!(
        other.expect("true runs").success(),
        "other binaries still run"
    );
}

#[test]
fn match_binaries_not_in_spares_the_listed_binary() {
    let a = agent();
    let t = target("notin");
    let policy = a.add_policy(&fixture(
        "deny-open-of-tmp-lsm-vmtest-notin-eacces-except-cat.yaml",
    ));
    let by_cat = cat(&t);
    let by_head = run(&PathBuf::from("/usr/bin/head"), &[&t]);
    policy.delete();
    assert_eq!(exit_code(&by_cat), 0, "cat is in the NotIn list");
    assert_eq!(exit_code(&by_head), 1, "head is not");
    assert!(String::from_utf8_lossy(&by_head.stderr).contains("Permission denied"));
}

#[test]
fn match_binaries_prefix_selects_by_directory() {
    let a = agent();
    let t = target("binprefix");
    let policy = a.add_policy(&fixture(
        "deny-open-of-tmp-lsm-vmtest-binprefix-by-usr-bin-eperm.yaml",
    ));
    let by_cat = cat(&t);
    let mine = fs::read(&t);
    policy.delete();
    assert_eq!(exit_code(&by_cat), 1, "/usr/bin/cat is under the prefix");
    assert!(mine.is_ok(), "this test binary is not under /usr/bin/");
}

/// The guard of a policy deletes it when a test panics while the policy is loaded.
#[test]
fn a_test_that_panics_leaves_no_policy_behind() {
    let a = agent();
    let t = target("signal");
    let mut was_listed = false;
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
        let _policy = a.add_policy(&fixture(
            "signal-sigusr1-on-open-of-tmp-lsm-vmtest-signal.yaml",
        ));
        was_listed = listed(&a, "vmtest-signal");
        panic!("a test failing while its policy is loaded");
    }));
    assert!(outcome.is_err());
    assert!(was_listed, "the policy was loaded");
    assert!(!listed(&a, "vmtest-signal"), "the guard deleted it");
    assert_eq!(exit_code(&cat(&t)), 0, "and it no longer enforces");
}

/// A guard that cannot delete its policy while the test unwinds reports that on stderr: a
/// second panic would abort the whole test binary, and this test with it.
#[test]
fn a_failed_cleanup_during_a_panic_does_not_abort() {
    let a = agent();
    let mut deleted_behind_the_guard = false;
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
        let _policy = a.add_policy(&fixture(
            "signal-sigusr1-on-open-of-tmp-lsm-vmtest-signal.yaml",
        ));
        deleted_behind_the_guard = a
            .lsmctl(&["tracingpolicy", "delete", "vmtest-signal"])
            .status
            .success();
        panic!("a test failing after its policy went away");
    }));
    assert!(outcome.is_err());
    assert!(deleted_behind_the_guard);
    assert!(
        !a.lsmctl(&["tracingpolicy", "delete", "vmtest-signal"])
            .status
            .success(),
        "deleting a policy that is not loaded fails, as the guard's delete did"
    );
}
