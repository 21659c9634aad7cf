//! An extra `lsmctl getevents` stream, compact (e.g. with `--pods` or `--namespace` filters)
//! or JSON (to check argument values), read line by line in the background.

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use crate::{EVENT_TIMEOUT, bin};

/// Starts `lsmctl --server-address ADDRESS getevents -o OUTPUT ARGS`; a thread hands each
/// line to `on_line` (a test keeps them, a benchmark counts them).
pub(crate) fn spawn_getevents(
    address: &str,
    output: &str,
    args: &[&str],
    mut on_line: impl FnMut(String) + Send + 'static,
) -> Child {
    let mut child = Command::new(bin("lsmctl"))
        .args(["--server-address", address, "getevents", "-o", output])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawning lsmctl getevents");
    let stdout = child.stdout.take().expect("piped stdout");
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            on_line(line);
        }
    });
    child
}

/// A line handler for [`spawn_getevents`] that appends each line to `sink` and echoes it to
/// stderr, labelled with the stream's `args`.
pub(crate) fn keep_lines(
    args: &[&str],
    sink: Arc<Mutex<Vec<String>>>,
) -> impl FnMut(String) + Send + 'static {
    let label = if args.is_empty() {
        String::new()
    } else {
        format!(" [{}]", args.join(" "))
    };
    move |line| {
        eprintln!("  event{label}: {line}");
        sink.lock().unwrap_or_else(|p| p.into_inner()).push(line);
    }
}

/// Waits until `count` has not changed for `quiet` (or `max` has passed); returns its last
/// value. For a stream of events still arriving after the operations that caused them.
pub fn settle(mut count: impl FnMut() -> u64, quiet: Duration, max: Duration) -> u64 {
    let start = Instant::now();
    let (mut last, mut since) = (count(), Instant::now());
    while since.elapsed() < quiet && start.elapsed() < max {
        thread::sleep(Duration::from_millis(200));
        let now = count();
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    last
}

pub struct EventStream {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl EventStream {
    /// `lsmctl --server-address ADDRESS getevents -o OUTPUT ARGS`.
    pub(crate) fn start(address: &str, output: &str, args: &[&str]) -> EventStream {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let child = spawn_getevents(address, output, args, keep_lines(args, lines.clone()));
        EventStream { child, lines }
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits until a line satisfies `pred` and returns it; panics with the stream after
    /// [`EVENT_TIMEOUT`].
    pub fn expect(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            if let Some(l) = self.lines().into_iter().find(|l| pred(l)) {
                return l;
            }
            assert!(
                start.elapsed() < EVENT_TIMEOUT,
                "the stream never showed {what}; it had:\n{}",
                self.lines().join("\n")
            );
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// Calls `poke` (e.g. an exec the stream should show) every 500 ms until a line
    /// satisfies `pred`; panics with the stream after [`EVENT_TIMEOUT`].
    pub fn wait_for(&self, what: &str, mut poke: impl FnMut(), pred: impl Fn(&str) -> bool) {
        let start = Instant::now();
        loop {
            poke();
            if self.lines().iter().any(|l| pred(l)) {
                return;
            }
            assert!(
                start.elapsed() < EVENT_TIMEOUT,
                "the stream never showed {what}; it had:\n{}",
                self.lines().join("\n")
            );
            thread::sleep(Duration::from_millis(500));
        }
    }

    /// Waits until no line has come for `quiet` (at most `max` in all) and returns the
    /// number of lines then: events of operations already made are all in.
    pub fn settle(&self, quiet: Duration, max: Duration) -> usize {
        settle(|| self.lines().len() as u64, quiet, max) as usize
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
