//! Start-up behaviour that needs no kernel: policy files are parsed and compiled before any
//! BPF is loaded, so these run without root.

use std::{fs, path::PathBuf, process::Command};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The corpus file `unset-env-var.yaml` relies on this variable being unset.
const CORPUS_UNSET_VAR: &str = "LSM_AGENT_CORPUS_UNSET_VAR";

fn agent(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lsm-agent"))
        .args(args)
        .env_remove(CORPUS_UNSET_VAR)
        .output()
        .expect("running lsm-agent")
}

/// Each file in integration/broken-policies starts with `# expect: <text>`; the agent must
/// refuse to start and print that text (file, line, column, YAML path, reason).
#[test]
fn broken_policies_stop_the_agent_with_file_line_and_field() {
    let dir = repo().join("integration/broken-policies");
    let mut n = 0;
    for entry in fs::read_dir(&dir).expect("corpus dir") {
        let path = entry.expect("entry").path();
        let text = fs::read_to_string(&path).expect("policy");
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} lacks an `# expect:` first line", path.display()));
        let out = agent(&["--tracing-policy", &path.display().to_string()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{} was accepted", path.display());
        assert!(
            stderr.contains(expect),
            "{}: expected {expect:?} in:\n{stderr}",
            path.display()
        );
        n += 1;
    }
    assert!(n >= 20, "the corpus has only {n} files");
}

/// Every upstream quickstart policy loads unchanged; the network ones with `PODCIDR` and
/// `SERVICECIDR` set, as the getting-started guide's `envsubst` does.
#[test]
fn every_quickstart_policy_passes_the_check() {
    let q = repo().join("../shared/testdata/tetragon-quickstart");
    let mut n = 0;
    for entry in fs::read_dir(&q).expect("quickstart dir") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let out = Command::new(env!("CARGO_BIN_EXE_lsm-agent"))
            .args(["--check", "--tracing-policy", &path.display().to_string()])
            .env("PODCIDR", "10.0.0.0/16")
            .env("SERVICECIDR", "10.96.0.0/12")
            .output()
            .expect("running lsm-agent");
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        n += 1;
    }
    assert!(n >= 6, "only {n} quickstart policies found");
}

#[test]
fn env_references_in_policy_files_are_expanded_by_the_agent() {
    // Removed when the test ends, passed or failed.
    let tmp = tempfile::Builder::new()
        .prefix("lsm-startup-env-")
        .tempdir()
        .expect("tmpdir");
    let dir = tmp.path();
    let f = dir.join("env.yaml");
    fs::write(
        &f,
        "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: env\nspec:\n  \
         lsmhooks:\n  - hook: file_open\n    args:\n    - index: 0\n      type: file\n    \
         selectors:\n    - matchArgs:\n      - index: 0\n        operator: Prefix\n        \
         values: [\"${LSM_TEST_DIR}/x\"]\n",
    )
    .expect("write policy");
    let run = |value: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_lsm-agent"));
        c.args(["--check", "--tracing-policy", &f.display().to_string()]);
        match value {
            Some(v) => c.env("LSM_TEST_DIR", v),
            None => c.env_remove("LSM_TEST_DIR"),
        };
        c.output().expect("running lsm-agent")
    };
    let out = run(Some("/etc"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("env.yaml:15:19: spec.lsmhooks[0].selectors[0].matchArgs[0].values[0]: environment variable LSM_TEST_DIR is not set"),
        "{stderr}"
    );
}

#[test]
fn one_broken_file_among_good_ones_still_stops_the_agent() {
    let q = repo().join("../shared/testdata/tetragon-quickstart/file_monitoring_enforce.yaml");
    let bad = repo().join("integration/broken-policies/unknown-operator.yaml");
    let out = agent(&[
        "--check",
        "--tracing-policy",
        &q.display().to_string(),
        "--tracing-policy",
        &bad.display().to_string(),
    ]);
    assert!(!out.status.success());
}

/// `--server-unix-socket ''` and `--bpf-dir ''` are the documented way to turn the unix
/// socket and pinning off: the parser must accept the empty value.
#[test]
fn empty_unix_socket_and_bpf_dir_are_accepted_as_off() {
    let out = agent(&["--check", "--server-unix-socket", "", "--bpf-dir", ""]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
