//! Live reload from --tracing-policy-dir: replacing a policy never leaves a gap, a broken new
//! version keeps the old one enforcing, removing the file removes the policy, an unreadable
//! directory keeps every policy enforcing.
//!
//! The agent of this suite runs without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (it needs
//! neither), so that `chmod 000` makes its policy directory really unreadable to it: root
//! with those capabilities reads any directory.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use vm_tests::*;

const DIR: &str = "/tmp/lsm-vmtest-tp.d";
const TARGET: &str = "/tmp/lsm-vmtest-reload-target";

/// Version `version` of the policy. Every version forbids `cat TARGET` (Override, so cat lives
/// and tries again); versions differ in a second value so that every rewrite is a real change.
fn policy_text(version: u32) -> String {
    let file = fixture("deny-cat-open-of-reload-target-eperm-without-event.yaml");
    let text = fs::read_to_string(&file).expect("reload policy");
    let v0 = "\"/tmp/lsm-vmtest-other-0\"";
    assert!(
        text.contains(&format!("\"{TARGET}\"")) && text.contains(v0),
        "{} must name {TARGET} and {v0}",
        file.display()
    );
    text.replace(v0, &format!("\"/tmp/lsm-vmtest-other-{version}\""))
}

fn policy_file() -> PathBuf {
    Path::new(DIR).join("reload-guard.yaml")
}

fn agent() -> std::sync::MutexGuard<'static, Agent> {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        let _ = fs::remove_dir_all(DIR);
        fs::create_dir_all(DIR).expect("policy dir");
        fs::write(policy_file(), policy_text(0)).expect("policy file");
        fs::write(TARGET, "secret\n").expect("target");
    });
    shared_agent_wrapped(
        &[
            "/usr/bin/setpriv",
            "--bounding-set=-dac_override,-dac_read_search",
            "--inh-caps=-dac_override,-dac_read_search",
            "--",
        ],
        &["--tracing-policy-dir".into(), DIR.into()],
    )
}

/// What the agent has logged so far.
fn agent_log() -> String {
    fs::read_to_string(results_dir().join("agent.log")).expect("agent log")
}

/// Gives the policy directory its mode back when dropped, also when the test fails, so the
/// tests after it find a readable directory.
struct RestoreMode(u32);

impl Drop for RestoreMode {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        if let Err(e) = fs::set_permissions(DIR, fs::Permissions::from_mode(self.0)) {
            eprintln!("restoring the mode of {DIR}: {e}");
        }
    }
}

fn cat_target() -> i32 {
    exit_code(&run(Path::new("/usr/bin/cat"), &[TARGET]))
}

/// The policy's id changes on every reload (each version gets a new one).
fn policy_row(a: &Agent) -> String {
    let out = a.lsmctl(&["tracingpolicy", "list"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.contains("reload-guard"))
        .unwrap_or_default()
        .to_string()
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn two_hundred_rewrites_never_let_a_forbidden_open_through() {
    let a = agent();
    assert_eq!(
        cat_target(),
        1,
        "the policy from the directory enforces at start"
    );
    let first_row = policy_row(&a);

    let done = Arc::new(AtomicBool::new(false));
    let attempts = Arc::new(AtomicU32::new(0));
    let leaks = Arc::new(AtomicU32::new(0));
    let reader = thread::spawn({
        let (done, attempts, leaks) = (done.clone(), attempts.clone(), leaks.clone());
        move || {
            while !done.load(Ordering::Relaxed) {
                attempts.fetch_add(1, Ordering::Relaxed);
                if cat_target() == 0 {
                    leaks.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    });
    for i in 0..200u32 {
        // A plain rewrite (truncate, then write): the watcher may even see it half-written.
        fs::write(policy_file(), policy_text(i % 2 + 1)).expect("rewrite");
        thread::sleep(Duration::from_millis(25));
    }
    thread::sleep(Duration::from_secs(2));
    done.store(true, Ordering::Relaxed);
    reader.join().expect("reader");

    let attempts = attempts.load(Ordering::Relaxed);
    eprintln!("{attempts} forbidden opens attempted during 200 rewrites");
    assert!(attempts >= 20, "the reader made only {attempts} attempts");
    assert_eq!(
        leaks.load(Ordering::Relaxed),
        0,
        "a forbidden open succeeded during reload"
    );
    assert_ne!(policy_row(&a), first_row, "the policy was never reloaded");
}

#[test]
fn a_broken_new_version_keeps_the_old_one_enforcing_and_is_reported() {
    let a = agent();
    fs::write(
        policy_file(),
        "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nspec: [",
    )
    .expect("write");
    wait_until("the error to be reported", || {
        policy_row(&a).contains("error")
    });
    assert_eq!(cat_target(), 1, "the previous version must keep enforcing");
    let status = a.lsmctl(&["status"]);
    assert!(
        !status.status.success(),
        "status must not report healthy with a refused policy"
    );
    fs::write(policy_file(), policy_text(7)).expect("fix");
    wait_until("the fixed version to load", || {
        policy_row(&a).contains("enabled")
    });
    assert_eq!(cat_target(), 1);
}

/// Where the verdict test's files are; its two policies deny reads under `other/` and
/// `denied/`.
const VERDICT_DIR: &str = "/tmp/lsm-vmtest-verdict";

/// A read policy of the verdict test, written into the policy directory as `NAME.yaml`.
fn write_read_policy(name: &str, prefix: &str) -> PathBuf {
    let text = substitute(
        &fixture("deny-reads-under-lsm-vmtest-verdict-eperm.yaml"),
        &[("NAME", name), ("PREFIX", prefix)],
    );
    let file = Path::new(DIR).join(format!("{name}.yaml"));
    fs::write(&file, text).expect("read policy");
    file
}

/// Removes the verdict test's policy files when dropped, also when the test fails, and waits
/// until the agent has unloaded them.
struct RemovePolicies<'a>(&'a Agent, Vec<PathBuf>);

impl Drop for RemovePolicies<'_> {
    fn drop(&mut self) {
        for f in &self.1 {
            let _ = fs::remove_file(f);
        }
        let start = Instant::now();
        while listed(self.0, "vmtest-verdict") && start.elapsed() < Duration::from_secs(60) {
            thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Whether `lsmctl tracingpolicy list` shows a policy whose name contains `name`.
fn listed(a: &Agent, name: &str) -> bool {
    let out = a.lsmctl(&["tracingpolicy", "list"]);
    String::from_utf8_lossy(&out.stdout).contains(name)
}

/// 1-byte read of `f` at offset 0: the errno when it fails.
fn read_errno(f: &fs::File) -> Option<i32> {
    use std::os::unix::fs::FileExt;
    f.read_at(&mut [0u8; 1], 0)
        .err()
        .and_then(|e| e.raw_os_error())
}

/// A file hook keeps, per open file, what its path's string filters let through; a policy
/// change must reach the next read of a file opened before it, in both directions.
#[test]
fn reads_of_a_file_opened_before_a_policy_change_follow_the_new_policies() {
    let a = agent();
    let dir = Path::new(VERDICT_DIR).join("denied");
    fs::create_dir_all(&dir).expect("verdict dir");
    let target = dir.join("file");
    fs::write(&target, "x").expect("target");
    let other = write_read_policy("vmtest-verdict-other", &format!("{VERDICT_DIR}/other/"));
    let mut cleanup = RemovePolicies(&a, vec![other]);
    wait_until("the other-prefix policy to load", || {
        listed(&a, "vmtest-verdict-other")
    });
    let file = fs::File::open(&target).expect("open the target");
    // Judged (allowed) under a plan with a read filter that does not name it.
    assert_eq!(read_errno(&file), None, "no policy names the file");
    assert_eq!(read_errno(&file), None, "no policy names the file, again");

    let denying = write_read_policy("vmtest-verdict-denied", &format!("{VERDICT_DIR}/denied/"));
    cleanup.1.push(denying.clone());
    wait_until("the denying policy to load", || {
        listed(&a, "vmtest-verdict-denied")
    });
    assert_eq!(
        read_errno(&file),
        Some(1),
        "the new policy denies the next read of the open file (EPERM)"
    );
    assert_eq!(read_errno(&file), Some(1), "and the one after");

    fs::remove_file(&denying).expect("remove the denying policy");
    wait_until("the denying policy to unload", || {
        !listed(&a, "vmtest-verdict-denied")
    });
    assert_eq!(
        read_errno(&file),
        None,
        "without the denying policy the open file reads again"
    );
    drop(cleanup);
}

#[test]
fn removing_the_file_removes_the_policy_and_adding_it_back_restores_it() {
    let a = agent();
    fs::remove_file(policy_file()).expect("remove");
    wait_until("the policy to be unloaded", || policy_row(&a).is_empty());
    assert_eq!(cat_target(), 0, "no policy: cat reads the file");
    fs::write(policy_file(), policy_text(3)).expect("add back");
    wait_until("the policy to load again", || !policy_row(&a).is_empty());
    assert_eq!(cat_target(), 1);
}

#[test]
fn an_unreadable_policy_directory_keeps_every_policy_enforcing() {
    use std::os::unix::fs::PermissionsExt;
    let a = agent();
    wait_until("the policy to be loaded", || {
        policy_row(&a).contains("enabled")
    });
    assert_eq!(
        cat_target(),
        1,
        "the policy enforces before the directory turns unreadable"
    );
    let seen = agent_log().len();
    let mode = fs::metadata(DIR).expect("policy dir").permissions().mode() & 0o7777;
    let _restore = RestoreMode(mode);
    fs::set_permissions(DIR, fs::Permissions::from_mode(0o000)).expect("chmod 000");
    // Logged only when the agent really failed to list it: without the dropped capabilities
    // the directory would stay readable and this would time out.
    wait_until("the agent to report the unreadable directory", || {
        agent_log()
            .get(seen..)
            .is_some_and(|l| l.contains("policy directory unreadable, keeping 1 loaded policies"))
    });
    // The watcher retries every second; several retries later the policy still enforces.
    let until = Instant::now() + Duration::from_secs(5);
    let mut attempts = 0;
    while Instant::now() < until {
        attempts += 1;
        assert_eq!(
            cat_target(),
            1,
            "attempt {attempts}: a forbidden open succeeded"
        );
        thread::sleep(Duration::from_millis(100));
    }
    let row = policy_row(&a);
    assert!(
        row.contains("error"),
        "the list must show the unreadable file: {row:?}"
    );

    fs::set_permissions(DIR, fs::Permissions::from_mode(mode)).expect("chmod back");
    wait_until("the agent to read the directory again", || {
        agent_log()
            .get(seen..)
            .is_some_and(|l| l.contains("policy directory readable again"))
    });
    wait_until("the policy to be listed as enabled", || {
        policy_row(&a).contains("enabled")
    });
    assert_eq!(cat_target(), 1);
}
