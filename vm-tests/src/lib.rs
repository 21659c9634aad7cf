//! Harness for tests that run inside the BPF-LSM VM (see `vm-tests/run.sh`).
//!
//! One agent serves all tests of a test binary: starting it verifies every BPF program,
//! which takes tens of seconds under QEMU TCG. Tests change policies through `lsmctl`,
//! exactly as a user would, and read the compact event stream of `lsmctl getevents`.
//! Nothing here skips: a missing BPF LSM, a failed start or a timeout panics.

use std::{
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{
        Arc, Mutex, MutexGuard, OnceLock,
        atomic::{AtomicU32, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

pub mod bench;
pub mod k8s;
mod stream;

pub use stream::{EventStream, settle};

/// How long the agent may take to verify and attach everything under TCG.
pub const AGENT_START_TIMEOUT: Duration = Duration::from_secs(600);
/// How long an expected event may take to show up in the stream.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(60);

/// The repository root (the VM sees it at the same path: `vm-tests/run.sh` shares it).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("vm-tests sits in the repository")
        .to_path_buf()
}

/// The binaries a test may exec while one of its policies is loaded: they run from
/// [`STAGING_DIR`], never from the build directory.
const STAGED: [&str; 5] = [
    "lsmctl",
    "vmtest-connect",
    "vmtest-flood",
    "vmtest-mmap",
    "vmtest-readbench",
];

/// A guest-local directory (virtme-ng mounts a fresh tmpfs on `/run`) that no test policy
/// names. The build directory can be anywhere, e.g. under `/tmp/`, where `exec-from-tmp`
/// forbids every exec: the `lsmctl` that deletes that policy again has to run from elsewhere.
pub const STAGING_DIR: &str = "/run/lsm-vmtest/bin";

/// The release directory `vm-tests/run.sh` built into: `LSM_TARGET_DIR`, or the one holding
/// this test binary (`<target>/release/deps/<test>-<hash>`), wherever the target dir is.
fn build_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("LSM_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("own path");
    exe.parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("{} is not in <target>/release/deps", exe.display()))
        .to_path_buf()
}

/// Copies every [`STAGED`] binary into [`STAGING_DIR`], once per test binary and before its
/// agent starts, so that nothing is copied while a policy is loaded.
fn stage() -> &'static Path {
    static STAGED_DIR: OnceLock<PathBuf> = OnceLock::new();
    STAGED_DIR.get_or_init(|| {
        let dir = PathBuf::from(STAGING_DIR);
        std::fs::create_dir_all(&dir).expect("staging dir");
        for name in STAGED {
            let src = build_dir().join(name);
            assert!(
                src.exists(),
                "{} is missing: build with vm-tests/run.sh",
                src.display()
            );
            // Copy, then rename over the old copy: a process of the previous test binary may
            // still be running it (ETXTBSY on an in-place rewrite).
            let tmp = dir.join(format!(".{name}.{}", std::process::id()));
            std::fs::copy(&src, &tmp)
                .unwrap_or_else(|e| panic!("copying {} to {}: {e}", src.display(), tmp.display()));
            std::fs::rename(&tmp, dir.join(name)).expect("renaming the staged copy");
        }
        dir
    })
}

/// The path to exec `name` (built by `vm-tests/run.sh`, release profile) from: the staged
/// copy for [`STAGED`] binaries, the build directory for `lsm-agent` (which starts before
/// any policy is loaded).
pub fn bin(name: &str) -> PathBuf {
    if STAGED.contains(&name) {
        return stage().join(name);
    }
    let p = build_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: build with vm-tests/run.sh",
        p.display()
    );
    p
}

/// The upstream quickstart policies, beside the repository.
pub fn quickstart(name: &str) -> PathBuf {
    let dir = std::env::var_os("TETRAGON_QUICKSTART_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("../shared/testdata/tetragon-quickstart"));
    let p = dir.join(name);
    assert!(p.exists(), "{} is missing", p.display());
    p
}

/// A policy file written for the tests, in `testdata/policies/`.
pub fn fixture(name: &str) -> PathBuf {
    let p = repo().join("testdata/policies").join(name);
    assert!(p.exists(), "{} is missing", p.display());
    p
}

/// The text of `file` with every `${KEY}` of `vars` replaced by its value (as `envsubst`
/// does for the quickstart policies). Panics if a `${` is left over.
pub fn substitute(file: &Path, vars: &[(&str, &str)]) -> String {
    let text =
        std::fs::read_to_string(file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
    let text = substitute_text(&text, vars);
    assert!(
        !text.contains("${"),
        "{} has a placeholder not in {vars:?}",
        file.display()
    );
    text
}

fn substitute_text(text: &str, vars: &[(&str, &str)]) -> String {
    vars.iter().fold(text.to_string(), |t, (key, value)| {
        t.replace(&format!("${{{key}}}"), value)
    })
}

/// `metadata.name` of a policy.
pub fn policy_name(yaml: &str) -> Option<String> {
    let doc: serde_yaml::Value = serde_yaml::from_str(yaml).ok()?;
    doc.get("metadata")?
        .get("name")?
        .as_str()
        .map(str::to_string)
}

/// The running kernel's release (`uname -r`), e.g. `6.12.118+deb12-amd64`.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .expect("/proc/sys/kernel/osrelease")
        .trim()
        .to_string()
}

/// `(major, minor)` of the running kernel, for what differs between releases.
pub fn kernel_version() -> (u32, u32) {
    let release = kernel_release();
    let mut it = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().expect("numeric kernel version"));
    (it.next().expect("major"), it.next().expect("minor"))
}

/// Fails loudly unless the BPF LSM is active: these tests must never pass vacuously.
pub fn assert_bpf_lsm_active() {
    let lsms = std::fs::read_to_string("/sys/kernel/security/lsm")
        .expect("/sys/kernel/security/lsm unreadable: not inside the BPF-LSM VM?");
    assert!(
        lsms.trim().split(',').any(|l| l == "bpf"),
        "BPF LSM is not active in this kernel (lsm = {lsms:?}): boot with lsm=...,bpf"
    );
}

/// Fails loudly unless the BPF LSM is inactive: the fallback tests must never run (and pass
/// vacuously) on a kernel that enforces.
pub fn assert_bpf_lsm_inactive() {
    let lsms = std::fs::read_to_string("/sys/kernel/security/lsm")
        .expect("/sys/kernel/security/lsm unreadable: not inside a test VM?");
    assert!(
        !lsms.trim().split(',').any(|l| l == "bpf"),
        "BPF LSM is active in this kernel (lsm = {lsms:?}): the fallback suite needs the 6.12-nolsm configuration"
    );
}

/// Shell-style exit code: the status, or 128 + the signal that killed the process.
pub fn exit_code(out: &Output) -> i32 {
    out.status
        .code()
        .unwrap_or_else(|| 128 + out.status.signal().unwrap_or(0))
}

/// Runs `sh -c script` in `dir` and returns its output.
pub fn sh(dir: &Path, script: &str) -> Output {
    Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .expect("spawning /bin/sh")
}

/// Runs a program with arguments.
pub fn run(program: &Path, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("spawning {}: {e}", program.display()))
}

/// Panics unless `r` failed with `errno` (e.g. `libc`'s `EPERM` = 1).
pub fn assert_os_error<T: std::fmt::Debug>(what: &str, r: std::io::Result<T>, errno: i32) {
    match r {
        Err(e) => assert_eq!(e.raw_os_error(), Some(errno), "{what}: {e}"),
        Ok(v) => panic!("{what} must fail with errno {errno}, got {v:?}"),
    }
}

/// The errno a system call made from a `python3` one-liner (`script`, which prints it),
/// optionally inside `unshare FLAGS` (e.g. `-m` for a private mount namespace).
pub fn python_errno(unshare: Option<&str>, script: &str) -> i32 {
    let out = match unshare {
        Some(flags) => run(
            Path::new("/usr/bin/unshare"),
            &[flags, "/usr/bin/python3", "-c", script],
        ),
        None => run(Path::new("/usr/bin/python3"), &["-c", script]),
    };
    assert_eq!(
        exit_code(&out),
        0,
        "python3 {script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("python3 printed no errno: {out:?}"))
}

/// `lsmctl` talking to one agent.
#[derive(Clone)]
pub struct Lsmctl {
    address: String,
}

impl Lsmctl {
    /// Runs `lsmctl --server-address <agent> ARGS`.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(bin("lsmctl"))
            .arg("--server-address")
            .arg(&self.address)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("spawning lsmctl")
    }

    /// `lsmctl tracingpolicy delete NAME`; the error says what went wrong.
    fn delete_policy(&self, name: &str) -> Result<(), String> {
        let out = self.run(&["tracingpolicy", "delete", name]);
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "deleting policy {name}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }
}

/// A policy added by [`Agent::add_policy`]. Dropping it deletes the policy, also when the test
/// panics, so that a failed test never leaves its policy enforcing on the tests after it.
/// [`PolicyGuard::delete`] deletes it at a chosen point (before the test's assertions).
#[must_use = "dropping the guard deletes the policy at once"]
pub struct PolicyGuard {
    ctl: Lsmctl,
    name: String,
    deleted: bool,
}

impl PolicyGuard {
    /// `metadata.name` of the policy.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Deletes the policy now, asserting success.
    pub fn delete(mut self) {
        self.deleted = true;
        if let Err(e) = self.ctl.delete_policy(&self.name) {
            panic!("{e}");
        }
    }
}

impl Drop for PolicyGuard {
    fn drop(&mut self) {
        if self.deleted {
            return;
        }
        if let Err(e) = self.ctl.delete_policy(&self.name) {
            // A second panic while unwinding would abort the whole test binary: report it.
            if thread::panicking() {
                eprintln!("cleaning up after a failed test: {e}");
            } else {
                panic!("{e}");
            }
        }
    }
}

/// The running agent and its event stream.
pub struct Agent {
    agent: Child,
    stream: Child,
    lines: Arc<Mutex<Vec<String>>>,
    /// Lines already consumed by [`Agent::expect_lines`].
    seen: usize,
    ctl: Lsmctl,
    marker: AtomicU32,
}

static AGENT: OnceLock<Mutex<Agent>> = OnceLock::new();

/// The agent shared by the tests of this binary, started on first use with
/// `--tracing-policy` for each of `policies`.
pub fn shared_agent(policies: &[PathBuf]) -> MutexGuard<'static, Agent> {
    let args: Vec<String> = policies
        .iter()
        .flat_map(|p| ["--tracing-policy".to_string(), p.display().to_string()])
        .collect();
    shared_agent_with_args(&args)
}

/// The agent shared by the tests of this binary, started on first use with `args`.
pub fn shared_agent_with_args(args: &[String]) -> MutexGuard<'static, Agent> {
    shared_agent_wrapped(&[], args)
}

/// Like [`shared_agent_with_args`], with the agent started through `wrapper` (a program and
/// its arguments, e.g. `setpriv ... --`), for tests that need it to run with fewer rights.
pub fn shared_agent_wrapped(wrapper: &[&str], args: &[String]) -> MutexGuard<'static, Agent> {
    let m = AGENT.get_or_init(|| Mutex::new(Agent::start_wrapped(wrapper, args)));
    let mut g = m.lock().unwrap_or_else(|p| p.into_inner());
    g.skip_to_end();
    g
}

/// The shared agent for suites that run in both kinds of configuration (the benchmarks):
/// it enforces where BPF LSM is active and observes through kprobes where it is not. Such a
/// suite must say which one it measured.
pub fn shared_agent_any_mode(args: &[String]) -> MutexGuard<'static, Agent> {
    let m = AGENT.get_or_init(|| Mutex::new(Agent::spawn(&[], args)));
    let mut g = m.lock().unwrap_or_else(|p| p.into_inner());
    g.skip_to_end();
    g
}

impl Agent {
    pub fn start(args: &[String]) -> Agent {
        Agent::start_wrapped(&[], args)
    }

    /// Starts the agent as `wrapper… lsm-agent ARGS` (no wrapper: the agent itself).
    pub fn start_wrapped(wrapper: &[&str], args: &[String]) -> Agent {
        assert_bpf_lsm_active();
        Agent::spawn(wrapper, args)
    }

    /// Starts the agent on a kernel booted without `bpf` in `lsm=` (the fallback
    /// configuration), where its hooks are observed through kprobes.
    pub fn start_without_bpf_lsm(args: &[String]) -> Agent {
        assert_bpf_lsm_inactive();
        Agent::spawn(&[], args)
    }

    fn spawn(wrapper: &[&str], args: &[String]) -> Agent {
        let address = format!("unix:///tmp/lsm-agent-vmtest-{}.sock", std::process::id());
        // Before the agent loads anything: see `stage`.
        stage();
        let log = std::fs::File::create(results_dir().join("agent.log")).expect("agent log");
        let mut cmd = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(bin("lsm-agent"));
                c
            }
            None => Command::new(bin("lsm-agent")),
        };
        // The tests talk to the agent on a unix socket of their own: its --server-address,
        // or, when a suite gives the agent a TCP address, its --server-unix-socket.
        let tcp = args
            .iter()
            .any(|a| a == "--server-address" || a.starts_with("--server-address="));
        let path = address.trim_start_matches("unix://");
        if tcp {
            cmd.arg("--server-unix-socket").arg(path);
        } else {
            cmd.arg("--server-address").arg(&address);
        }
        cmd.args(args);
        let agent = cmd
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("spawning lsm-agent");
        let mut a = Agent {
            agent,
            stream: Command::new("/bin/true").spawn().expect("placeholder"),
            lines: Arc::new(Mutex::new(Vec::new())),
            seen: 0,
            ctl: Lsmctl { address },
            marker: AtomicU32::new(0),
        };
        a.wait_ready();
        a.start_stream();
        a
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.agent.try_wait() {
                panic!(
                    "lsm-agent exited during start-up ({status}); log:\n{}",
                    std::fs::read_to_string(results_dir().join("agent.log")).unwrap_or_default()
                );
            }
            let out = self.lsmctl(&["status"]);
            if out.status.success() {
                eprintln!("agent ready after {:?}", start.elapsed());
                return;
            }
            // A failed canary will not heal by waiting.
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                !text.contains("canary failed"),
                "the agent's canary failed at start:\n{text}"
            );
            assert!(
                start.elapsed() < AGENT_START_TIMEOUT,
                "lsm-agent not ready after {AGENT_START_TIMEOUT:?}"
            );
            thread::sleep(Duration::from_millis(500));
        }
    }

    fn start_stream(&mut self) {
        let sink = stream::keep_lines(&[], self.lines.clone());
        let child = stream::spawn_getevents(&self.ctl.address, "compact", &[], sink);
        let _ = self.stream.kill();
        self.stream = child;
        // The stream is live once an exec we make shows up in it.
        let n = self.marker.fetch_add(1, Ordering::Relaxed);
        let tag = format!("lsm-vmtest-stream-{n}");
        let start = Instant::now();
        loop {
            let _ = Command::new("/bin/true").arg(&tag).status();
            if self.lines().iter().any(|l| l.contains(&tag)) {
                return;
            }
            assert!(
                start.elapsed() < EVENT_TIMEOUT,
                "event stream never delivered a marker exec"
            );
            thread::sleep(Duration::from_millis(500));
        }
    }

    /// The agent's process id (benchmarks read its memory from `/proc`).
    pub fn pid(&self) -> u32 {
        self.agent.id()
    }

    /// The agent's gRPC address (`unix://...`), for a benchmark's own subscribers.
    pub fn address(&self) -> &str {
        &self.ctl.address
    }

    /// Ends the test's own event stream, so that a benchmark's subscribers are the only ones;
    /// [`Agent::expect_lines`] sees nothing new after it.
    pub fn stop_stream(&mut self) {
        let _ = self.stream.kill();
        let _ = self.stream.wait();
    }

    /// Runs `lsmctl --server-address <agent> ARGS`.
    pub fn lsmctl(&self, args: &[&str]) -> Output {
        self.ctl.run(args)
    }

    /// `lsmctl tracingpolicy add FILE`, asserting success; the guard deletes the policy.
    pub fn add_policy(&self, file: &Path) -> PolicyGuard {
        let text = std::fs::read_to_string(file)
            .unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
        let name =
            policy_name(&text).unwrap_or_else(|| panic!("{} has no metadata.name", file.display()));
        let out = self.lsmctl(&["tracingpolicy", "add", &file.display().to_string()]);
        assert!(
            out.status.success(),
            "adding {}: {}{}",
            file.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        PolicyGuard {
            ctl: self.ctl.clone(),
            name,
            deleted: false,
        }
    }

    /// Writes `yaml` to `/tmp/lsm-vmtest-policies/FILE_STEM.yaml` and adds it (see
    /// [`Agent::add_policy`]).
    pub fn add_policy_yaml(&self, file_stem: &str, yaml: &str) -> PolicyGuard {
        let dir = Path::new("/tmp/lsm-vmtest-policies");
        std::fs::create_dir_all(dir).expect("policy dir");
        let file = dir.join(format!("{file_stem}.yaml"));
        std::fs::write(&file, yaml).expect("policy file");
        self.add_policy(&file)
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Forgets the events so far: later expectations only look at new ones.
    pub fn skip_to_end(&mut self) {
        self.seen = self.lines().len();
    }

    /// Waits until the new events contain, in this order, lines ending with each of
    /// `expected` (the node name in the source column varies, so only line ends are
    /// compared, after the emoji and label at the start). Panics with the stream on timeout.
    pub fn expect_lines(&mut self, expected: &[String]) {
        self.expect_lines_where(None, expected);
    }

    /// Like [`Agent::expect_lines`], with the source column equal to `source` (a pod's
    /// `namespace/name`) in every expected line.
    pub fn expect_lines_from(&mut self, source: &str, expected: &[String]) {
        self.expect_lines_where(Some(source), expected);
    }

    fn expect_lines_where(&mut self, source: Option<&str>, expected: &[String]) {
        let start = Instant::now();
        loop {
            let lines = self.lines();
            let new = &lines[self.seen.min(lines.len())..];
            let mut it = new.iter().enumerate();
            let mut last = None;
            let all = expected.iter().all(|want| {
                it.by_ref()
                    .find(|(_, l)| {
                        source.is_none_or(|s| compact_source(l) == Some(s))
                            && compact_matches(l, want)
                    })
                    .map(|(i, _)| last = Some(i))
                    .is_some()
            });
            if all {
                if let Some(i) = last {
                    self.seen += i + 1;
                }
                return;
            }
            if start.elapsed() > EVENT_TIMEOUT {
                panic!(
                    "expected events{} {expected:#?} in order; the stream had:\n{}",
                    source.map(|s| format!(" from {s}")).unwrap_or_default(),
                    new.join("\n")
                );
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// Starts `lsmctl getevents -o compact ARGS` against this agent (e.g. with filters).
    pub fn stream(&self, args: &[&str]) -> EventStream {
        EventStream::start(&self.ctl.address, "compact", args)
    }

    /// Starts `lsmctl getevents -o json ARGS` (filters) against this agent, without waiting
    /// for it to be live: the caller proves that with an event its filters pass.
    pub fn json_stream_filtered(&self, args: &[&str]) -> EventStream {
        EventStream::start(&self.ctl.address, "json", args)
    }

    /// Starts `lsmctl getevents -o json` against this agent: one Tetragon JSON event a line,
    /// to check what an event's arguments carry. Returns once the stream is live (an exec
    /// made after it started shows up in it), so no event of the caller's is missed.
    pub fn json_stream(&self) -> EventStream {
        let stream = EventStream::start(&self.ctl.address, "json", &[]);
        let n = self.marker.fetch_add(1, Ordering::Relaxed);
        let tag = format!("lsm-vmtest-json-{n}");
        stream.wait_for(
            "a marker exec",
            || {
                let _ = Command::new("/bin/true").arg(&tag).status();
            },
            |l| l.contains(&tag),
        );
        stream
    }

    /// A position in the stream, for [`Agent::lines_since`].
    pub fn mark(&self) -> usize {
        self.lines().len()
    }

    /// Every line received after `mark`.
    pub fn lines_since(&self, mark: usize) -> Vec<String> {
        let lines = self.lines();
        lines[mark.min(lines.len())..].to_vec()
    }
}

/// `line` is `<emoji label> <source> <rest>`; `want` is `<emoji label> | <rest>`, where `|`
/// stands for the source column.
pub fn compact_matches(line: &str, want: &str) -> bool {
    let Some((label, rest)) = want.split_once(" | ") else {
        return line == want;
    };
    let Some(after_label) = line.strip_prefix(label) else {
        return false;
    };
    let after_label = after_label.trim_start_matches(' ');
    // Skip the source column (one word).
    match after_label.split_once(' ') {
        Some((_source, tail)) => tail == rest,
        None => false,
    }
}

/// The source column of a compact line (`<emoji> <label> <source> <rest>`): the node name
/// for a host process, `namespace/name` for a pod's.
pub fn compact_source(line: &str) -> Option<&str> {
    let mut words = line.split_whitespace();
    // The emoji, then the label.
    words.next()?;
    words.next()?;
    words.next()
}

/// Where the guest writes logs and results (`--rwdir` of the VM).
pub fn results_dir() -> PathBuf {
    let p = std::env::var_os("LSM_VMTEST_RESULTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("lsm-vmtest"));
    let _ = std::fs::create_dir_all(&p);
    p
}

/// A fresh scratch directory on the guest's tmpfs.
pub fn scratch_dir(name: &str) -> PathBuf {
    let p = Path::new("/tmp/lsm-vmtest").join(name);
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).expect("scratch dir");
    p
}

/// A chroot directory (a scratch dir named `name`) with a static busybox at `/bin/busybox`
/// and a one-byte file at `file`, a path as seen inside it.
pub fn busybox_chroot(name: &str, file: &str) -> PathBuf {
    let jail = scratch_dir(name);
    std::fs::create_dir_all(jail.join("bin")).expect("the chroot's bin");
    std::fs::copy("/bin/busybox", jail.join("bin/busybox"))
        .expect("copying /bin/busybox (Debian's busybox-static)");
    let inside = jail.join(file.trim_start_matches('/'));
    std::fs::create_dir_all(inside.parent().expect("a parent")).expect("the chroot's dirs");
    std::fs::write(&inside, "x").expect("the chroot's file");
    jail
}

/// A spawned process that is killed and reaped when dropped, also when the test panics.
pub struct Reaped(pub std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.stream.kill();
        // SIGTERM first so the agent removes its socket and info file.
        let _ = kill(Pid::from_raw(self.agent.id() as i32), Signal::SIGTERM);
        let _ = self.agent.wait();
        // A stopped agent's programs stay pinned and enforcing (by design): lift them.
        unload_pinned();
    }
}

/// `lsm-agent --unload`: detaches every program an agent left pinned under the default
/// `--bpf-dir`. Panics when it fails, unless the thread is already panicking.
pub fn unload_pinned() {
    let out = Command::new(bin("lsm-agent"))
        .arg("--unload")
        .output()
        .expect("running lsm-agent --unload");
    if !out.status.success() && !thread::panicking() {
        panic!(
            "lsm-agent --unload failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The body of `GET /metrics` from the agent's metrics server at `addr`.
pub fn scrape_metrics(addr: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).expect("metrics endpoint");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .expect("request");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("response");
    assert!(out.starts_with("HTTP/1.1 200"), "scrape failed: {out}");
    out
}

/// The sum of the samples of metric `name` whose labels include `labels`, 0 when absent.
pub fn metric_sample(body: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| {
            let (series, _) = l.rsplit_once(' ').unwrap_or((l, ""));
            let base = series.split('{').next().unwrap_or("");
            base == name
                && labels
                    .iter()
                    .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_lines_match_with_any_source_column() {
        assert!(compact_matches(
            "🚀 process virtme-ng /usr/bin/cat /etc/shadow",
            "🚀 process | /usr/bin/cat /etc/shadow"
        ));
        assert!(compact_matches(
            "💥 exit    virtme-ng /usr/bin/cat /etc/shadow SIGKILL",
            "💥 exit    | /usr/bin/cat /etc/shadow SIGKILL"
        ));
        assert!(!compact_matches(
            "💥 exit    virtme-ng /usr/bin/cat /etc/shadow 0",
            "💥 exit    | /usr/bin/cat /etc/shadow SIGKILL"
        ));
    }

    #[test]
    fn the_source_column_is_the_third_word_whatever_the_label_padding() {
        assert_eq!(
            compact_source("💥 exit    default/xwing /usr/bin/cat /etc/shadow SIGKILL"),
            Some("default/xwing")
        );
        assert_eq!(
            compact_source("🚀 process virtme-ng /usr/bin/true x"),
            Some("virtme-ng")
        );
        assert_eq!(compact_source("🚀 process"), None);
    }

    #[test]
    fn substitution_replaces_every_occurrence_of_each_placeholder() {
        assert_eq!(
            substitute_text(
                "- ${A}\n- ${B}\n- ${A}/x\n",
                &[("A", "10.0.0.0/16"), ("B", "1")]
            ),
            "- 10.0.0.0/16\n- 1\n- 10.0.0.0/16/x\n"
        );
        assert_eq!(substitute_text("- ${C}\n", &[("A", "1")]), "- ${C}\n");
    }

    #[test]
    fn the_policy_name_is_read_from_metadata() {
        let yaml = "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: \"deny-x\"\nspec:\n  lsmhooks: []\n";
        assert_eq!(policy_name(yaml).as_deref(), Some("deny-x"));
        assert_eq!(policy_name("kind: TracingPolicy\nspec: {}\n"), None);
        assert_eq!(policy_name("spec: ["), None);
    }
}
