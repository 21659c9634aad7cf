//! Process-level selectors: `matchPIDs` (with `followForks` and `isNamespacePID`),
//! `matchNamespaces`, `matchCapabilities` and `matchBinaries` with `followChildren`. Each test
//! adds a `file_open` policy that denies (Override -1) opens under its own directory for the
//! processes the filter selects, and checks who can still read.

use std::{
    fs,
    io::Write,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use vm_tests::*;

fn agent() -> std::sync::MutexGuard<'static, Agent> {
    shared_agent_with_args(&[])
}

/// A world-readable file in a fresh directory for test `name`; returns (dir, file).
fn target(name: &str) -> (PathBuf, String) {
    let dir = scratch_dir(&format!("pf-{name}"));
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod dir");
    let file = dir.join("data");
    fs::write(&file, "data\n").expect("target file");
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).expect("chmod file");
    (dir, file.display().to_string())
}

/// Adds a policy denying `file_open` under `dir` for the processes `filters` (selector
/// entries, already indented by six spaces) select. The policies are built here, not kept in
/// files: each one names a scratch directory and a pid, inode or path known only at run time.
fn add(a: &Agent, name: &str, dir: &Path, filters: &str) -> PolicyGuard {
    let yaml = format!(
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
        operator: "Prefix"
        values:
        - "{}/"
{filters}      matchActions:
      - action: Override
        argError: -1
"#,
        dir.display()
    );
    a.add_policy_yaml(name, &yaml)
}

/// Whether `program args...` succeeded, asserting that a failure was the policy's
/// "Operation not permitted".
fn reads(program: &str, args: &[&str]) -> bool {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("spawning {program}: {e}"));
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        return true;
    }
    assert!(
        err.contains("Operation not permitted"),
        "{program} {args:?} failed for another reason: {err}"
    );
    false
}

/// A shell that waits for a line on stdin, then reports whether it can open a file itself
/// and whether a child `cat` can. Started before the policy so its pid can go into it.
struct Waiter {
    child: std::process::Child,
}

impl Waiter {
    fn start(file: &str) -> Waiter {
        let script = format!(
            "read go\n\
             if read l < {file}; then echo self-ok; else echo self-denied; fi\n\
             if /usr/bin/cat {file} >/dev/null; then echo child-ok; else echo child-denied; fi\n"
        );
        let child = Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning sh");
        Waiter { child }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Releases the shell and returns its two report lines.
    fn report(mut self) -> (String, String) {
        if let Some(mut stdin) = self.child.stdin.take() {
            stdin.write_all(b"go\n").expect("releasing sh");
        }
        let out = self.child.wait_with_output().expect("sh output");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut lines = text.lines().map(str::to_string);
        (
            lines.next().unwrap_or_default(),
            lines.next().unwrap_or_default(),
        )
    }
}

#[test]
fn match_pids_in_without_follow_forks_selects_only_that_process() {
    let a = agent();
    let (dir, file) = target("pid-in");
    let w = Waiter::start(&file);
    let policy = add(
        &a,
        "vmtest-pid-in",
        &dir,
        &format!(
            "      matchPIDs:\n      - operator: In\n        values: [{}]\n",
            w.pid()
        ),
    );
    let report = w.report();
    let me = reads("/usr/bin/cat", &[&file]);
    policy.delete();
    assert_eq!(report, ("self-denied".into(), "child-ok".into()));
    assert!(me, "another process must not be selected");
}

#[test]
fn match_pids_follow_forks_selects_the_children_too() {
    let a = agent();
    let (dir, file) = target("pid-follow");
    let w = Waiter::start(&file);
    let policy = add(
        &a,
        "vmtest-pid-follow",
        &dir,
        &format!(
            "      matchPIDs:\n      - operator: In\n        followForks: true\n        values: [{}]\n",
            w.pid()
        ),
    );
    let report = w.report();
    let me = reads("/usr/bin/cat", &[&file]);
    policy.delete();
    assert_eq!(report, ("self-denied".into(), "child-denied".into()));
    assert!(me, "the test process is not a descendant of the shell");
}

#[test]
fn match_pids_not_in_with_follow_forks_spares_the_whole_process_tree() {
    let a = agent();
    let (dir, file) = target("pid-notin");
    let w = Waiter::start(&file);
    let policy = add(
        &a,
        "vmtest-pid-notin",
        &dir,
        &format!(
            "      matchPIDs:\n      - operator: NotIn\n        followForks: true\n        values: [{}]\n",
            w.pid()
        ),
    );
    let report = w.report();
    let me = reads("/usr/bin/cat", &[&file]);
    policy.delete();
    assert_eq!(report, ("self-ok".into(), "child-ok".into()));
    assert!(!me, "everyone outside the tree is denied");
}

#[test]
fn is_namespace_pid_matches_the_pid_inside_a_new_pid_namespace() {
    let a = agent();
    let (dir, file) = target("nspid");
    let policy = add(
        &a,
        "vmtest-nspid",
        &dir,
        "      matchPIDs:\n      - operator: In\n        isNamespacePID: true\n        values: [1]\n",
    );
    // unshare forks a child that is pid 1 of the new namespace and execs cat.
    let inside = reads(
        "/usr/bin/unshare",
        &["--pid", "--fork", "/usr/bin/cat", &file],
    );
    let outside = reads("/usr/bin/cat", &[&file]);
    policy.delete();
    assert!(!inside, "pid 1 of a new pid namespace is selected");
    assert!(
        outside,
        "a process in the initial pid namespace is not pid 1 there"
    );
}

#[test]
fn match_namespaces_net_not_in_host_ns_selects_only_processes_in_another_network_namespace() {
    let a = agent();
    let (dir, file) = target("netns");
    let policy = add(
        &a,
        "vmtest-netns",
        &dir,
        "      matchNamespaces:\n      - namespace: Net\n        operator: NotIn\n        values: [host_ns]\n",
    );
    let inside = reads("/usr/bin/unshare", &["--net", "/usr/bin/cat", &file]);
    let outside = reads("/usr/bin/cat", &[&file]);
    policy.delete();
    assert!(!inside, "cat in a new network namespace is denied");
    assert!(outside, "cat in the host network namespace reads");
}

#[test]
fn match_namespaces_mnt_in_an_explicit_inode_selects_that_namespace() {
    let a = agent();
    let (dir, file) = target("mntns");
    let ino = fs::metadata("/proc/self/ns/mnt")
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .expect("own mount namespace");
    let policy = add(
        &a,
        "vmtest-mntns",
        &dir,
        &format!(
            "      matchNamespaces:\n      - namespace: Mnt\n        operator: In\n        values: [\"{ino}\"]\n"
        ),
    );
    let here = reads("/usr/bin/cat", &[&file]);
    let elsewhere = reads("/usr/bin/unshare", &["--mount", "/usr/bin/cat", &file]);
    policy.delete();
    assert!(!here, "cat in the listed mount namespace is denied");
    assert!(elsewhere, "cat in a new mount namespace reads");
}

/// cat as uid/gid 65534 with no capabilities.
fn unprivileged_cat(file: &str) -> bool {
    reads(
        "/usr/bin/setpriv",
        &[
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/cat",
            file,
        ],
    )
}

#[test]
fn match_capabilities_in_selects_processes_holding_the_capability() {
    let a = agent();
    let (dir, file) = target("cap-in");
    let policy = add(
        &a,
        "vmtest-cap-in",
        &dir,
        "      matchCapabilities:\n      - type: Effective\n        operator: In\n        values: [CAP_SYS_ADMIN]\n",
    );
    let root = reads("/usr/bin/cat", &[&file]);
    let nobody = unprivileged_cat(&file);
    policy.delete();
    assert!(!root, "root holds CAP_SYS_ADMIN and is denied");
    assert!(nobody, "an unprivileged process reads");
}

#[test]
fn match_capabilities_not_in_selects_processes_without_the_capability() {
    let a = agent();
    let (dir, file) = target("cap-notin");
    let policy = add(
        &a,
        "vmtest-cap-notin",
        &dir,
        "      matchCapabilities:\n      - operator: NotIn\n        values: [CAP_SYS_ADMIN, CAP_DAC_OVERRIDE]\n",
    );
    let root = reads("/usr/bin/cat", &[&file]);
    let nobody = unprivileged_cat(&file);
    policy.delete();
    assert!(root, "root holds the capabilities and reads");
    assert!(!nobody, "an unprivileged process is denied");
}

#[test]
fn match_binaries_follow_children_selects_descendants_of_the_binary() {
    let a = agent();
    let (dir, file) = target("follow-children");
    // A launcher binary of its own (a copy of the shell), outside the denied directory.
    let tools = scratch_dir("pf-launcher");
    let launcher = tools.join("launcher");
    fs::copy("/bin/sh", &launcher).expect("copy sh");
    fs::set_permissions(&launcher, fs::Permissions::from_mode(0o755)).expect("chmod");
    let launcher = launcher.display().to_string();
    let policy = add(
        &a,
        "vmtest-follow-children",
        &dir,
        &format!(
            "      matchBinaries:\n      - operator: In\n        followChildren: true\n        values: [\"{launcher}\"]\n"
        ),
    );
    let script = format!("/usr/bin/cat {file} >/dev/null && echo child-ok || echo child-denied");
    let via_launcher = Command::new(&launcher)
        .args(["-c", &script])
        .output()
        .expect("launcher");
    let via_sh = sh(Path::new("/"), &script);
    policy.delete();
    assert_eq!(
        String::from_utf8_lossy(&via_launcher.stdout).trim(),
        "child-denied",
        "cat started by the launcher is its child"
    );
    assert_eq!(
        String::from_utf8_lossy(&via_sh.stdout).trim(),
        "child-ok",
        "cat started by another shell is not"
    );
}
