//! The file stories of Tetragon's getting-started guide, enforced at BPF-LSM hooks.
//! Runs inside the VM only (vm-tests/run.sh); one agent serves every test.

use std::{
    fs,
    path::{Path, PathBuf},
};

use vm_tests::*;

const METRICS: &str = "127.0.0.1:2116";

fn agent() -> std::sync::MutexGuard<'static, Agent> {
    shared_agent_with_args(&[
        "--tracing-policy".to_string(),
        quickstart("file_monitoring_enforce.yaml")
            .display()
            .to_string(),
        "--metrics-server".to_string(),
        METRICS.to_string(),
    ])
}

fn cat() -> PathBuf {
    PathBuf::from("/usr/bin/cat")
}

#[test]
fn bpf_lsm_is_active_in_the_guest() {
    assert_bpf_lsm_active();
}

#[test]
fn reading_etc_shadow_kills_cat_with_the_three_compact_lines() {
    let mut a = agent();
    let out = run(&cat(), &["/etc/shadow"]);
    assert_eq!(exit_code(&out), 137, "cat /etc/shadow must be killed");
    assert!(out.stdout.is_empty(), "no byte of /etc/shadow may be read");
    a.expect_lines(&[
        "🚀 process | /usr/bin/cat /etc/shadow".into(),
        "📚 read    | /usr/bin/cat /etc/shadow".into(),
        "💥 exit    | /usr/bin/cat /etc/shadow SIGKILL".into(),
    ]);
}

#[test]
fn appending_and_reading_in_a_scratch_dir_is_allowed() {
    let _a = agent();
    let dir = scratch_dir("append");
    let out = sh(&dir, "bash -c 'echo foo >> bar; cat bar'");
    assert_eq!(
        exit_code(&out),
        0,
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "foo\n");
}

#[test]
fn appending_to_a_file_under_etc_is_killed_and_the_file_is_unchanged() {
    let mut a = agent();
    // Created by guest.sh before the agent started (a write under /etc is now forbidden).
    let target = "/etc/lsm-vmtest-append.conf";
    let before = fs::read_to_string(target).expect("guest.sh creates the target file");
    let out = sh(
        &scratch_dir("etc"),
        &format!("bash -c 'echo evil >> {target}'"),
    );
    assert_eq!(exit_code(&out), 137);
    assert_eq!(
        fs::read_to_string(target).unwrap(),
        before,
        "the write must not land"
    );
    a.expect_lines(&[
        format!("📝 write   | /usr/bin/bash {target}"),
        "💥 exit    | /usr/bin/bash -c \"echo evil >> /etc/lsm-vmtest-append.conf\" SIGKILL".into(),
    ]);
}

#[test]
fn reading_a_bashrc_is_killed_by_the_postfix_selector() {
    let mut a = agent();
    let dir = scratch_dir("rc");
    fs::write(dir.join(".bashrc"), "alias x=y\n").expect("writing outside the sensitive dirs");
    let path = dir.join(".bashrc").display().to_string();
    let out = run(&cat(), &[&path]);
    assert_eq!(exit_code(&out), 137);
    a.expect_lines(&[format!("📚 read    | /usr/bin/cat {path}")]);
}

#[test]
fn a_shared_read_mapping_of_etc_shadow_is_killed() {
    let mut a = agent();
    let out = run(&bin("vmtest-mmap"), &["/etc/shadow"]);
    assert_eq!(
        exit_code(&out),
        137,
        "stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    a.expect_lines(&["💥 exit    | ".to_string()
        + &bin("vmtest-mmap").display().to_string()
        + " /etc/shadow SIGKILL"]);
}

#[test]
fn a_private_mapping_of_a_library_is_allowed() {
    let _a = agent();
    let out = run(&bin("vmtest-mmap"), &["/etc/hostname"]);
    // MAP_SHARED + PROT_READ of /etc/hostname matches no selector (not a sensitive file).
    assert_eq!(
        exit_code(&out),
        0,
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `argError: -1` is -EPERM, as in Tetragon: the open fails with "Operation not permitted"
/// and cat exits 1 instead of being killed.
#[test]
fn override_minus_one_makes_cat_fail_with_eperm_and_live() {
    let mut a = agent();
    let policy = a.add_policy(&fixture("deny-cat-open-etc-passwd-and-shadow-eperm.yaml"));
    let out = run(&cat(), &["/etc/passwd"]);
    let head = run(&PathBuf::from("/usr/bin/head"), &["-n1", "/etc/passwd"]);
    policy.delete();
    assert_eq!(exit_code(&out), 1, "cat must exit 1, not be killed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Operation not permitted"),
        "stderr: {stderr}"
    );
    assert_eq!(exit_code(&head), 0, "head is not cat: allowed");
    a.expect_lines(&["🔒 LSM     | /usr/bin/cat file_open".into()]);
}

/// `argError: -13` is -EACCES: "Permission denied".
#[test]
fn override_minus_thirteen_makes_cat_fail_with_permission_denied() {
    let mut a = agent();
    let policy = a.add_policy(&fixture("deny-cat-open-etc-group-eacces.yaml"));
    let out = run(&cat(), &["/etc/group"]);
    policy.delete();
    assert_eq!(exit_code(&out), 1, "cat must exit 1, not be killed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Permission denied"), "stderr: {stderr}");
    a.expect_lines(&["🔒 LSM     | /usr/bin/cat file_open".into()]);
}

#[test]
fn without_actions_the_open_succeeds_and_is_posted() {
    let mut a = agent();
    let policy = a.add_policy(&quickstart("lsm_file_open.yaml"));
    let out = run(&cat(), &["/etc/passwd"]);
    a.expect_lines(&[
        "🔒 LSM     | /usr/bin/cat file_open".into(),
        "💥 exit    | /usr/bin/cat /etc/passwd 0".into(),
    ]);
    policy.delete();
    assert_eq!(exit_code(&out), 0);
    assert!(!out.stdout.is_empty());
    // Deleted: the next cat is seen (exec, exit) but posts no file_open event.
    let mark = a.mark();
    let _ = run(&cat(), &["/etc/passwd"]);
    a.expect_lines(&["💥 exit    | /usr/bin/cat /etc/passwd 0".into()]);
    let after: Vec<String> = a.lines_since(mark);
    assert!(
        !after.iter().any(|l| l.contains("file_open")),
        "events after the policy was deleted:\n{}",
        after.join("\n")
    );
}

#[test]
fn status_shows_the_capability_probe_with_every_hook_an_lsm_program() {
    let a = agent();
    let out = a.lsmctl(&["status"]);
    assert!(out.status.success());
    let status = String::from_utf8_lossy(&out.stdout).into_owned();
    let lsm = "LSM program, denies before the operation";
    assert!(
        status.contains("Kernel: bpf_lsm yes, btf yes, kprobes yes, bpf_send_signal yes"),
        "{status}"
    );
    for line in [
        format!("Hook file_open: {lsm}, paths by bpf_d_path"),
        format!("Hook file_permission: {lsm}\n"),
        format!("Hook bprm_check_security: {lsm}, paths by bpf_d_path"),
        format!("Hook socket_connect: {lsm}\n"),
    ] {
        assert!(status.contains(&line), "missing {line:?} in:\n{status}");
    }
    // What differs between the two kernels of the suite: bpf_d_path at path_truncate and
    // the file_truncate hook exist from 6.2 on.
    let (path_truncate, file_truncate) = if kernel_version() < (6, 2) {
        (format!("{lsm}\n"), "unavailable on this kernel".to_owned())
    } else {
        (format!("{lsm}, paths by bpf_d_path"), lsm.to_owned())
    };
    for line in [
        format!("Hook path_truncate: {path_truncate}"),
        format!("Hook file_truncate: {file_truncate}"),
    ] {
        assert!(status.contains(&line), "missing {line:?} in:\n{status}");
    }
}

/// `/etc` in the guest is an overlayfs (`--overlay-rwdir /etc`), as a container's root is.
/// Overlayfs opens and reads the layer's file on its own, and the kernel runs the file hooks
/// again for that file: on 6.1 under the overlay's own path (a duplicate event), on 6.12 as a
/// "backing file" under a path of the layer's private mount. Each open and each read of a
/// file, lower (`/etc/passwd`) or upper (`/etc/lsm-vmtest-append.conf`), is one event with
/// the path the process used.
#[test]
fn an_open_and_a_read_through_overlayfs_post_one_event_each_under_the_overlay_path() {
    one_event_per_overlayfs_operation(
        "post-dd-open-and-read-by-file-name.yaml",
        "vmtest-overlay-hooks",
    );
}

/// The same at the twins of the hand-written hooks (a hook entry that follows a `resolve`
/// path runs at a generic-reader program on the same LSM hook): they pass overlayfs' own
/// file of a layer as the hand-written programs do.
#[test]
fn at_the_hooks_twins_an_overlayfs_operation_posts_one_event_too() {
    one_event_per_overlayfs_operation(
        "post-dd-open-and-read-by-file-name-at-the-twins.yaml",
        "vmtest-overlay-twins",
    );
}

/// From 6.6 overlayfs opens and reads a layer's file as a backing file, and the file hooks
/// run for it besides the overlay's file; they pass it at their start, without a lookup, on
/// the kernel's `FMODE_BACKING` mark. That mark is a `#define` the agent knows by release,
/// and a wrong one would not change a verdict, only lose the shortcut (as Debian's 6.12,
/// whose mark a backport moved, once did): this counts the shortcut's passes. Before 6.6
/// (6.1 here) there are no backing files (layer files go another way) and none may be counted.
#[test]
fn from_6_6_overlayfs_layer_files_pass_at_the_file_hooks_start_and_before_none_do() {
    let a = agent();
    let passed = || {
        metric_sample(
            &scrape_metrics(METRICS),
            "lsm_agent_layer_files_passed_total",
            &[],
        )
    };
    let reads = 20;
    let before = passed();
    for _ in 0..reads {
        // One open and one read of a lower file of the /etc overlay.
        let out = run(
            Path::new("/usr/bin/dd"),
            &[
                "if=/etc/passwd",
                "of=/dev/null",
                "bs=1",
                "count=1",
                "status=none",
            ],
        );
        assert_eq!(exit_code(&out), 0, "dd: {out:?}");
    }
    // A scrape reads the kernel's counters anew.
    let grew = passed() - before;
    let release = kernel_release();
    if kernel_version() < (6, 6) {
        assert_eq!(grew, 0.0, "layer files passed early on {release}");
    } else {
        assert!(
            grew >= f64::from(2 * reads),
            "{grew} layer files passed early for {reads} opens and reads on the /etc overlay \
             of {release}; want at least {}",
            2 * reads
        );
    }
    drop(a);
}

fn one_event_per_overlayfs_operation(fixture_file: &str, policy_name: &str) {
    let a = agent();
    let fence = "/tmp/lsm-vmtest-overlay-fence";
    fs::write(fence, "fence").expect("fence file");
    let policy = a.add_policy(&fixture(fixture_file));
    let events = a.json_stream_filtered(&["--policy-names", policy_name]);
    let dd = |file: &str| {
        let out = run(
            Path::new("/usr/bin/dd"),
            &[
                &format!("if={file}"),
                "of=/dev/null",
                "bs=1",
                "count=1",
                "status=none",
            ],
        );
        assert_eq!(exit_code(&out), 0, "dd {file}: {out:?}");
    };
    let fence_reads = |lines: &[String]| {
        lines
            .iter()
            .filter(|l| l.contains("\"function_name\":\"file_permission\"") && l.contains(fence))
            .count()
    };
    // The stream is live once it shows a read of the fence; the next fence read closes the
    // window (events come in order, and a hook's second run is inside the same syscall).
    events.wait_for(
        "a read of the fence file",
        || dd(fence),
        |l| l.contains("\"function_name\":\"file_permission\"") && l.contains(fence),
    );
    let start = events.lines().len();
    let fences = fence_reads(&events.lines());
    for file in ["/etc/passwd", "/etc/lsm-vmtest-append.conf"] {
        dd(file);
    }
    dd(fence);
    let waiting = std::time::Instant::now();
    while fence_reads(&events.lines()) <= fences {
        assert!(
            waiting.elapsed() < std::time::Duration::from_secs(60),
            "the stream never showed the closing read of the fence file:\n{}",
            events.lines().join("\n")
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let window = events.lines()[start..].to_vec();
    policy.delete();
    let _ = fs::remove_file(fence);
    for (file, name) in [
        ("/etc/passwd", "passwd\""),
        ("/etc/lsm-vmtest-append.conf", "lsm-vmtest-append.conf\""),
    ] {
        for hook in ["file_open", "file_permission"] {
            let seen: Vec<&String> = window
                .iter()
                .filter(|l| {
                    l.contains(&format!("\"function_name\":\"{hook}\"")) && l.contains(name)
                })
                .collect();
            assert_eq!(
                seen.len(),
                1,
                "one {hook} event for one dd of {file}; the stream had:\n{}",
                window.join("\n")
            );
            assert!(
                seen[0].contains(&format!("\"path\":\"{file}\"")),
                "the {hook} event names {file}: {}",
                seen[0]
            );
        }
    }
}

// `file_open` keeps a passing read verdict per dentry, so that the next open of a file no
// read selector can match resolves no path (lsm-ebpf's dentry.rs). A dentry's path changes
// without the dentry: a rename above it, a mount moved, another root. Each test reads a file
// twice (the first open keeps its verdict, the second finds it), changes how it is reached,
// and expects the read under its new path to be denied.

/// A policy denying reads (EPERM) of files under `prefix`, deleted when dropped.
fn deny_reads_under(a: &Agent, name: &str, prefix: &str) -> PolicyGuard {
    let yaml = substitute(
        &fixture("deny-reads-under-lsm-vmtest-verdict-eperm.yaml"),
        &[("NAME", name), ("PREFIX", prefix)],
    );
    a.add_policy_yaml(name, &yaml)
}

fn read_twice(file: &Path) {
    for _ in 0..2 {
        let out = run(&cat(), &[&file.display().to_string()]);
        assert_eq!(exit_code(&out), 0, "reading {}: {out:?}", file.display());
    }
}

fn assert_read_denied(out: &std::process::Output, what: &str) {
    assert_eq!(exit_code(out), 1, "{what} must fail: {out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"),
        "{what} fails with EPERM: {out:?}"
    );
}

#[test]
fn a_file_read_before_its_directory_is_renamed_into_a_denied_prefix_is_denied_there() {
    read_then_rename_then_denied("dentry-rename-dir", "allow", "allow/f", ("allow", "deny"));
}

#[test]
fn a_file_read_before_it_is_renamed_into_a_denied_directory_is_denied_there() {
    read_then_rename_then_denied("dentry-rename-file", "deny", "f", ("f", "deny/f"));
}

/// In a scratch dir `name` with a directory `dir`: `file` is read twice, `from` is renamed
/// to `to`, and the read of the file, now `deny/f`, under the denied prefix `deny/`, fails.
fn read_then_rename_then_denied(name: &str, dir: &str, file: &str, (from, to): (&str, &str)) {
    let a = agent();
    let root = scratch_dir(name);
    let policy = deny_reads_under(&a, name, &format!("{}/deny/", root.display()));
    fs::create_dir(root.join(dir)).expect("the scratch dir's directory");
    fs::write(root.join(file), "x").expect("the file");
    read_twice(&root.join(file));
    fs::rename(root.join(from), root.join(to)).expect("renaming");
    let out = run(&cat(), &[&root.join("deny/f").display().to_string()]);
    policy.delete();
    assert_read_denied(
        &out,
        &format!("a read of deny/f after renaming {from} to {to}"),
    );
}

/// `mount --move` keeps the mount (the same `struct vfsmount`) and every dentry under it: only
/// the mount tree's change tells that the paths changed. In a mount namespace of its own, so
/// that the guest's shared mounts neither refuse the move nor see it.
#[test]
fn a_file_read_before_its_mount_is_moved_under_a_denied_prefix_is_denied_there() {
    let a = agent();
    let root = scratch_dir("dentry-mount-move");
    let policy = deny_reads_under(
        &a,
        "dentry-mount-move",
        &format!("{}/deny/", root.display()),
    );
    fs::create_dir_all(root.join("deny/here")).expect("the mount point under the prefix");
    fs::create_dir(root.join("mnt")).expect("the first mount point");
    let script = "mount -t tmpfs lsm-vmtest mnt && echo x > mnt/f \
        && cat mnt/f && cat mnt/f && mount --move mnt deny/here && echo moved \
        && { cat deny/here/f || echo denied; }";
    let out = std::process::Command::new("/usr/bin/unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "/bin/sh",
            "-c",
            script,
        ])
        .current_dir(&root)
        .output()
        .expect("running unshare");
    policy.delete();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout, "x\nx\nmoved\ndenied\n", "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"),
        "the read under the moved mount fails with EPERM: {out:?}"
    );
}

/// The same dentry and mount from another root: the path a chrooted process sees.
#[test]
fn a_file_read_outside_a_chroot_is_denied_inside_by_the_path_seen_there() {
    let a = agent();
    let seen = "/tmp/lsm-vmtest-dentry-root/f";
    let jail = busybox_chroot("dentry-jail", seen);
    let policy = deny_reads_under(&a, "dentry-jail", "/tmp/lsm-vmtest-dentry-root/");
    read_twice(&jail.join(seen.trim_start_matches('/')));
    let out = std::process::Command::new("/usr/sbin/chroot")
        .arg(&jail)
        .args(["/bin/busybox", "cat", seen])
        .output()
        .expect("running chroot");
    policy.delete();
    assert_read_denied(&out, "the chrooted read");
}
