//! What the benchmark suites share: running `vmtest-readbench` and reading the agent's
//! memory.

use std::{
    fs,
    path::Path,
    process::{Command, Stdio},
};

/// What `vmtest-readbench` prints: (median, min, max) over its rounds, in ns per operation.
pub struct ReadCost {
    pub pread: [f64; 3],
    pub open_read_close: [f64; 3],
}

/// Runs `cmd` (`vmtest-readbench`, possibly wrapped) on `data` with `reads` preads and
/// `opens` open+read+close per round, `rounds` rounds. Panics with its output if it fails.
pub fn readbench(
    mut cmd: Command,
    data: &Path,
    reads: &str,
    opens: &str,
    rounds: &str,
) -> ReadCost {
    let out = cmd
        .args([&data.display().to_string(), reads, opens, rounds])
        .stdin(Stdio::null())
        .output()
        .expect("running vmtest-readbench");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "vmtest-readbench failed ({:?}): {text}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let words: Vec<&str> = text.split_whitespace().collect();
    let value = |key: &str| -> f64 {
        words
            .iter()
            .position(|w| *w == key)
            .and_then(|i| words.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in vmtest-readbench's output {text:?}"))
    };
    ReadCost {
        pread: [value("pread"), value("pread_min"), value("pread_max")],
        open_read_close: [value("open_read_close"), value("orc_min"), value("orc_max")],
    }
}

/// The resident set (`VmRSS`) of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("agent's status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in the agent's status")
}

/// Each program the agent's log says it loaded, with the verifier's processed-instruction
/// count (`verified_insns`) and the load time, in load order.
pub fn verified_insns(log: &str) -> Vec<(String, u64, String)> {
    let field = |line: &str, key: &str| -> Option<String> {
        let rest = line.split(&format!("{key}=")).nth(1)?;
        Some(
            rest.split_whitespace()
                .next()?
                .trim_matches('"')
                .to_string(),
        )
    };
    log.lines()
        .map(strip_ansi)
        .filter(|l| l.contains("program loaded"))
        .filter_map(|l| {
            let insns = field(&l, "verified_insns")?.parse().ok()?;
            Some((field(&l, "program")?, insns, field(&l, "elapsed")?))
        })
        .collect()
}

/// `line` without its terminal colour sequences (`ESC [ ... m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verified_insns_are_read_from_coloured_and_plain_log_lines() {
        let log = "\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m lsm_agent::bpf: program loaded \u{1b}[3mprogram\u{1b}[0m\u{1b}[2m=\u{1b}[0m\"file_open\" \u{1b}[3melapsed\u{1b}[0m\u{1b}[2m=\u{1b}[0m606.6ms \u{1b}[3mverified_insns\u{1b}[0m\u{1b}[2m=\u{1b}[0m112656\n\
                   INFO lsm_agent: policy enforcing policy=x\n\
                   INFO lsm_agent::bpf: program loaded program=\"mmap_file\" elapsed=773.5ms verified_insns=136509\n";
        assert_eq!(
            verified_insns(log),
            vec![
                ("file_open".to_string(), 112656, "606.6ms".to_string()),
                ("mmap_file".to_string(), 136509, "773.5ms".to_string()),
            ]
        );
    }
}
