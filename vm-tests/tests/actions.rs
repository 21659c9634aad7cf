//! Every action, exec blocking, binary filters and monitor mode, each through a policy added
//! over gRPC (`lsmctl tracingpolicy add`) to one running agent.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use vm_tests::*;

fn agent() -> std::sync::MutexGuard<'static, Agent> {
    shared_agent_with_args(&[])
}

/// Writes `yaml` to a file and adds it; returns the policy name for deletion.
fn add(a: &Agent, name: &str, yaml: &str) -> String {
    a.add_policy_yaml(name, yaml);
    name.to_string()
}

/// A `file_open` policy for `path` with the given selector extras (already indented).
fn file_open_policy(name: &str, path: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: "{name}"
spec:
  lsmhooks:
  - hook: "file_open"
    args:
    - index: 0
      type: "file"
    selectors:
    - matchArgs:
      - index: 0
        operator: "Equal"
        values:
        - "{path}"
{extra}"#
    )
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
    let name = add(
        &a,
        "vmtest-signal",
        &file_open_policy(
            "vmtest-signal",
            &t,
            "      matchActions:\n      - action: Signal\n        argSig: 10\n",
        ),
    );
    let out = cat(&t);
    a.delete_policy(&name);
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
    let name = add(
        &a,
        "vmtest-nopost",
        &file_open_policy(
            "vmtest-nopost",
            &t,
            "      matchActions:\n      - action: Override\n        argError: -1\n      - action: NoPost\n",
        ),
    );
    let mark = a.mark();
    let out = cat(&t);
    a.expect_lines(&[format!("💥 exit    | /usr/bin/cat {t} 1")]);
    let [post, enforce, monitor] = counters(&a, &name);
    a.delete_policy(&name);
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
    let yaml = file_open_policy(
        "vmtest-monitor",
        &t,
        "      matchActions:\n      - action: Sigkill\n",
    )
    .replace(
        "spec:\n",
        "spec:\n  options:\n  - name: policy-mode\n    value: monitor\n",
    );
    let name = add(&a, "vmtest-monitor", &yaml);
    let out = cat(&t);
    a.expect_lines(&[
        "🔒 LSM     | /usr/bin/cat file_open".into(),
        format!("💥 exit    | /usr/bin/cat {t} 0"),
    ]);
    let [post, enforce, monitor] = counters(&a, &name);
    a.delete_policy(&name);
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
    let name = add(
        &a,
        "vmtest-bprm",
        r#"apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: "vmtest-bprm"
spec:
  lsmhooks:
  - hook: "bprm_check_security"
    args:
    - index: 0
      type: "linux_binprm"
    selectors:
    - matchArgs:
      - index: 0
        operator: "Postfix"
        values:
        - "/lsm-vmtest-blocked"
      matchActions:
      - action: Override
        argError: -1
"#,
    );
    let err = Command::new(&blocked).status();
    let other = Command::new("/usr/bin/true").status();
    // The exec was attempted by a fork of this test binary, which never became anything else.
    let me = std::env::current_exe().expect("own path");
    a.expect_lines(&[format!("🔒 LSM     | {} bprm_check_security", me.display())]);
    a.delete_policy(&name);
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
    let name = add(
        &a,
        "vmtest-notin",
        &file_open_policy(
            "vmtest-notin",
            &t,
            "      matchBinaries:\n      - operator: \"NotIn\"\n        values:\n        - \"/usr/bin/cat\"\n      matchActions:\n      - action: Override\n        argError: -13\n",
        ),
    );
    let by_cat = cat(&t);
    let by_head = run(&PathBuf::from("/usr/bin/head"), &[&t]);
    a.delete_policy(&name);
    assert_eq!(exit_code(&by_cat), 0, "cat is in the NotIn list");
    assert_eq!(exit_code(&by_head), 1, "head is not");
    assert!(String::from_utf8_lossy(&by_head.stderr).contains("Permission denied"));
}

#[test]
fn match_binaries_prefix_selects_by_directory() {
    let a = agent();
    let t = target("binprefix");
    let name = add(
        &a,
        "vmtest-binprefix",
        &file_open_policy(
            "vmtest-binprefix",
            &t,
            "      matchBinaries:\n      - operator: \"Prefix\"\n        values:\n        - \"/usr/bin/\"\n      matchActions:\n      - action: Override\n        argError: -1\n",
        ),
    );
    let by_cat = cat(&t);
    let mine = fs::read(&t);
    a.delete_policy(&name);
    assert_eq!(exit_code(&by_cat), 1, "/usr/bin/cat is under the prefix");
    assert!(mine.is_ok(), "this test binary is not under /usr/bin/");
}
