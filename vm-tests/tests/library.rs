//! The policy library in `policies/`: each test adds one library file, unchanged, to one
//! agent started without policies, triggers what the policy is about, checks the outcome and
//! the compact events, and deletes the policy again.
//!
//! Every test runs its actions first and deletes its policy before asserting, so that the
//! assertions see the system as the policy left it; if the test panics earlier, the policy's
//! guard deletes it, and no enforcing policy is left behind for the next test.

use std::{
    fs,
    io::Write,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use vm_tests::*;

fn agent() -> std::sync::MutexGuard<'static, Agent> {
    shared_agent_with_args(&[])
}

fn library(file: &str) -> PathBuf {
    let p = repo().join("policies").join(file);
    assert!(p.exists(), "{} is missing", p.display());
    p
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `program args` with `input` on its stdin (a pipe, never a terminal).
fn run_with_stdin(program: &Path, args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {}: {e}", program.display()));
    // The child may be killed before it reads: a broken pipe is fine.
    let _ = child.stdin.take().expect("piped stdin").write_all(input);
    child.wait_with_output().expect("waiting for the child")
}

/// sensitive-files-read.yaml: `cat /etc/gshadow` is killed at `file_open` before reading,
/// files that are not listed stay readable, and a binary in the `NotIn` list is spared
/// while the same program under another path is killed.
#[test]
fn sensitive_files_read_kills_cat_of_gshadow_and_spares_the_listed_binaries() {
    let mut a = agent();
    assert!(
        Path::new("/etc/gshadow").exists(),
        "the guest has no /etc/gshadow to protect"
    );
    let chkpwd = Path::new("/usr/sbin/unix_chkpwd");
    assert!(chkpwd.exists(), "{} is missing", chkpwd.display());
    // The same helper outside the exception list: it reads /etc/shadow to check a password.
    let dir = scratch_dir("library-sensitive");
    let copy = dir.join("unix_chkpwd");
    fs::copy(chkpwd, &copy).expect("copying unix_chkpwd");

    let policy = a.add_policy(&library("sensitive-files-read.yaml"));
    let gshadow = run(Path::new("/usr/bin/cat"), &["/etc/gshadow"]);
    let passwd = run(Path::new("/usr/bin/cat"), &["/etc/passwd"]);
    let listed = run_with_stdin(chkpwd, &["root", "nullok"], b"wrong-password\0");
    let unlisted = run_with_stdin(&copy, &["root", "nullok"], b"wrong-password\0");
    policy.delete();

    assert_eq!(exit_code(&gshadow), 137, "cat /etc/gshadow must be killed");
    assert!(
        gshadow.stdout.is_empty(),
        "no byte of /etc/gshadow may be read"
    );
    assert_eq!(
        exit_code(&passwd),
        0,
        "/etc/passwd is not listed: {}",
        stderr(&passwd)
    );
    assert!(!passwd.stdout.is_empty());
    assert_eq!(
        exit_code(&unlisted),
        137,
        "a copy of unix_chkpwd outside the NotIn list reads /etc/shadow and must be killed"
    );
    assert_ne!(
        exit_code(&listed),
        137,
        "/usr/sbin/unix_chkpwd is in the NotIn list (it exits 7 for a wrong password)"
    );
    assert!(
        listed.status.code().is_some(),
        "unix_chkpwd must exit normally, not by a signal: {:?}",
        listed.status
    );
    a.expect_lines(&[
        "🔒 LSM     | /usr/bin/cat file_open".into(),
        "💥 exit    | /usr/bin/cat /etc/gshadow SIGKILL".into(),
        format!("🔒 LSM     | {} file_open", copy.display()),
    ]);
}

/// shell-rc-read-monitor.yaml: reading a `.bashrc` or `.zshrc` posts a read event and is
/// allowed; a shell sourcing it and other files post nothing.
#[test]
fn shell_rc_read_monitor_posts_reads_by_non_shells_and_blocks_nothing() {
    let mut a = agent();
    let dir = scratch_dir("library-rc");
    let bashrc = dir.join(".bashrc");
    let zshrc = dir.join(".zshrc");
    let notes = dir.join("notes.txt");
    fs::write(&bashrc, "alias ll='ls -l'\n").expect("writing .bashrc");
    fs::write(&zshrc, "export EDITOR=vi\n").expect("writing .zshrc");
    fs::write(&notes, "not a start-up file\n").expect("writing notes.txt");
    let (bashrc_s, zshrc_s, notes_s) = (
        bashrc.display().to_string(),
        zshrc.display().to_string(),
        notes.display().to_string(),
    );

    let policy = a.add_policy(&library("shell-rc-read-monitor.yaml"));
    let by_cat = run(Path::new("/usr/bin/cat"), &[&bashrc_s]);
    a.expect_lines(&[format!("📚 read    | /usr/bin/cat {bashrc_s}")]);
    let mark = a.mark();
    // bash is in the NotIn list; notes.txt matches no Postfix.
    let by_bash = run(
        Path::new("/usr/bin/bash"),
        &["-c", &format!(". {bashrc_s}")],
    );
    let other = run(Path::new("/usr/bin/cat"), &[&notes_s]);
    let by_head = run(Path::new("/usr/bin/head"), &["-n1", &zshrc_s]);
    // head runs last: once its read is in the stream, the earlier ones would be too.
    a.expect_lines(&[format!("📚 read    | /usr/bin/head {zshrc_s}")]);
    policy.delete();

    assert_eq!(
        exit_code(&by_cat),
        0,
        "monitoring only: {}",
        stderr(&by_cat)
    );
    assert_eq!(
        String::from_utf8_lossy(&by_cat.stdout),
        "alias ll='ls -l'\n"
    );
    assert_eq!(exit_code(&by_bash), 0, "{}", stderr(&by_bash));
    assert_eq!(exit_code(&other), 0, "{}", stderr(&other));
    assert_eq!(exit_code(&by_head), 0, "{}", stderr(&by_head));
    assert_eq!(
        String::from_utf8_lossy(&by_head.stdout),
        "export EDITOR=vi\n"
    );
    let lines = a.lines_since(mark);
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with("📚 read") && l.contains("/usr/bin/bash")),
        "the shell itself must not be reported:\n{}",
        lines.join("\n")
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("notes.txt") && l.contains("read")),
        "notes.txt is not a start-up file:\n{}",
        lines.join("\n")
    );
}

/// system-dirs-write.yaml: appending to a file under /etc fails with EPERM, the shell
/// lives and exits 1, the file keeps its content; reading it and writing elsewhere work.
#[test]
fn system_dirs_write_refuses_a_write_under_etc_and_the_writer_lives() {
    let mut a = agent();
    // Created before the policy forbids writes under /etc (the guest's /etc is an overlay).
    let target = "/etc/lsm-library-test.conf";
    fs::write(target, "original\n").expect("the guest's /etc must be writable");
    let dir = scratch_dir("library-write");
    let elsewhere = dir.join("allowed.conf");
    let script = format!("echo x >> {target}");

    let policy = a.add_policy(&library("system-dirs-write.yaml"));
    let denied = run(Path::new("/usr/bin/bash"), &["-c", &script]);
    let content = fs::read_to_string(target);
    let read_back = run(Path::new("/usr/bin/cat"), &[target]);
    let allowed = run(
        Path::new("/usr/bin/bash"),
        &["-c", &format!("echo y >> {}", elsewhere.display())],
    );
    policy.delete();
    let _ = fs::remove_file(target);

    assert_eq!(
        exit_code(&denied),
        1,
        "the write fails and bash lives: {}",
        stderr(&denied)
    );
    assert!(
        stderr(&denied).contains("Operation not permitted"),
        "argError -1 is EPERM: {}",
        stderr(&denied)
    );
    assert_eq!(
        content.expect("reading the target"),
        "original\n",
        "the write must not land"
    );
    assert_eq!(exit_code(&read_back), 0, "reads are not refused");
    assert_eq!(String::from_utf8_lossy(&read_back.stdout), "original\n");
    assert_eq!(exit_code(&allowed), 0, "{}", stderr(&allowed));
    assert_eq!(fs::read_to_string(&elsewhere).unwrap(), "y\n");
    a.expect_lines(&[
        format!("📝 write   | /usr/bin/bash {target}"),
        // Tetragon quotes an argument that contains a space.
        format!("💥 exit    | /usr/bin/bash -c \"{script}\" 1"),
    ]);
}

/// exec-from-tmp.yaml: executing a copy of `true` from /tmp, /var/tmp or /dev/shm, or a
/// `#!` script from /tmp, fails with EPERM; /usr/bin/true still runs.
#[test]
fn exec_from_tmp_makes_execs_from_temporary_directories_fail_with_eperm() {
    let mut a = agent();
    let dir = scratch_dir("library-exec");
    let script = dir.join("script.sh");
    fs::write(&script, "#!/bin/sh\nexit 0\n").expect("writing the script");
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut targets = vec![dir.join("true")];
    for d in ["/var/tmp", "/dev/shm"] {
        assert!(Path::new(d).is_dir(), "the guest has no {d}");
        targets.push(Path::new(d).join("lsm-library-true"));
    }
    for t in &targets {
        fs::copy("/usr/bin/true", t).unwrap_or_else(|e| panic!("copying true to {t:?}: {e}"));
    }
    targets.push(script);
    // Without the policy every one of them runs (no noexec mount makes the test vacuous).
    for t in &targets {
        let st = Command::new(t)
            .status()
            .unwrap_or_else(|e| panic!("{} does not run without the policy: {e}", t.display()));
        assert!(st.success(), "{}: {st}", t.display());
    }

    let policy = a.add_policy(&library("exec-from-tmp.yaml"));
    let results: Vec<_> = targets.iter().map(|t| Command::new(t).status()).collect();
    let system = Command::new("/usr/bin/true").status();
    policy.delete();
    for t in &targets[1..3] {
        let _ = fs::remove_file(t);
    }

    for (t, r) in targets.iter().zip(&results) {
        match r {
            Ok(st) => panic!("{} ran ({st}): the exec must fail", t.display()),
            Err(e) => assert_eq!(
                e.raw_os_error(),
                Some(nix::errno::Errno::EPERM as i32),
                "{}: {e}",
                t.display()
            ),
        }
    }
    assert!(
        system.expect("/usr/bin/true runs").success(),
        "binaries outside the temporary directories still run"
    );
    // Each exec was attempted by a fork of this test binary, which never became anything else.
    let me = std::env::current_exe().expect("own path");
    let line = format!("🔒 LSM     | {} bprm_check_security", me.display());
    a.expect_lines(&vec![line; targets.len()]);
}

/// truncate-logs.yaml: truncating a log by path (truncate(2): path_truncate) or through a
/// descriptor (`truncate -s 0` uses ftruncate(2): file_truncate from Linux 6.2 on,
/// path_truncate before) kills the process and the log keeps its content; appending works.
#[test]
fn truncate_logs_kills_truncation_under_var_log_and_allows_appending() {
    let mut a = agent();
    // virtme-ng mounts a tmpfs on /var/log, so the guest can create files there.
    let log = "/var/log/lsm-library-test.log";
    fs::write(log, "line 1\n").expect("/var/log must be writable in the guest");
    let fd_hook = if kernel_version() >= (6, 2) {
        "file_truncate"
    } else {
        "path_truncate"
    };

    let policy = a.add_policy(&library("truncate-logs.yaml"));
    let by_fd = run(Path::new("/usr/bin/truncate"), &["-s", "0", log]);
    let after_fd = fs::read_to_string(log);
    let by_path = run(
        Path::new("/usr/bin/perl"),
        &["-e", "truncate($ARGV[0], 0) or exit 3", log],
    );
    let after_path = fs::read_to_string(log);
    let append = run(
        Path::new("/usr/bin/bash"),
        &["-c", &format!("echo line 2 >> {log}")],
    );
    let after_append = fs::read_to_string(log);
    policy.delete();
    let _ = fs::remove_file(log);

    assert_eq!(
        exit_code(&by_fd),
        137,
        "truncate -s 0 must be killed: {}",
        stderr(&by_fd)
    );
    assert_eq!(after_fd.expect("reading the log"), "line 1\n");
    assert_eq!(
        exit_code(&by_path),
        137,
        "truncate(2) by path must be killed: {}",
        stderr(&by_path)
    );
    assert_eq!(after_path.expect("reading the log"), "line 1\n");
    assert_eq!(
        exit_code(&append),
        0,
        "appending is allowed: {}",
        stderr(&append)
    );
    assert_eq!(after_append.expect("reading the log"), "line 1\nline 2\n");
    a.expect_lines(&[
        format!("🔒 LSM     | /usr/bin/truncate {fd_hook}"),
        format!("💥 exit    | /usr/bin/truncate -s 0 {log} SIGKILL"),
        "🔒 LSM     | /usr/bin/perl path_truncate".into(),
    ]);
}
