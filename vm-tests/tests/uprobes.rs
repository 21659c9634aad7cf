//! Uprobes and USDT probes: functions and statically defined probes of user-space programs,
//! observed by the generic uprobe and USDT programs with the same selectors and maps as the
//! other hooks. They post `process_uprobe` / `process_usdt` events and `Sigkill` after the
//! fact. Runs inside the VM only (vm-tests/run.sh); one agent serves every test.

use std::{fs, path::PathBuf, sync::MutexGuard, time::Duration};

use vm_tests::*;

fn agent() -> MutexGuard<'static, Agent> {
    shared_agent(&[])
}

/// A copy of the uprobe helper and the policy of fixture `stem` on it (`${HELPER}` filled
/// in), added. The copy is on the guest's tmpfs, like the other helpers these tests run:
/// whether the kernel can place a uprobe in a file of the 9p root was not tried.
fn uprobe_policy(a: &Agent, stem: &str) -> (PathBuf, PolicyGuard) {
    helper_policy(a, "vmtest-uprobe", stem)
}

/// A copy of helper `name` and the policy of fixture `stem` on it, added.
fn helper_policy(a: &Agent, name: &str, stem: &str) -> (PathBuf, PolicyGuard) {
    let helper = scratch_dir(stem).join(name);
    fs::copy(bin(name), &helper).expect("copying the helper");
    let yaml = substitute(
        &fixture(&format!("{stem}.yaml")),
        &[("HELPER", helper.to_str().expect("utf-8"))],
    );
    let policy = a.add_policy_yaml(stem, &yaml);
    (helper, policy)
}

/// `spec.uprobes`: a function of a user-space program, observed by the generic uprobe
/// program. The string argument is read from the process's memory and filters the call; a
/// posted call is a `process_uprobe` event with the file, the symbol and the arguments, and
/// `Sigkill` kills the caller after the fact (the function has been entered).
#[test]
fn a_uprobe_posts_and_kills_by_the_string_argument_of_a_user_space_function() {
    let a = agent();
    let events = a.json_stream();
    let (helper, policy) = uprobe_policy(&a, "observe-and-kill-at-vmtest-uprobe");
    let helper_path = helper.to_str().expect("utf-8");
    let posted = run(&helper, &["lsm-vmtest-uprobe-post-1"]);
    let other = run(&helper, &["lsm-vmtest-uprobe-other"]);
    let killed = run(&helper, &["lsm-vmtest-uprobe-kill-1"]);
    let line = events.expect("the uprobe event", |l| {
        l.contains("\"process_uprobe\"") && l.contains("lsm-vmtest-uprobe-post-1")
    });
    let kill_line = events.expect("the Sigkill event", |l| {
        l.contains("\"process_uprobe\"") && l.contains("lsm-vmtest-uprobe-kill-1")
    });
    let compact = a.lines();
    policy.delete();

    assert_eq!(exit_code(&posted), 0, "{posted:?}");
    assert_eq!(exit_code(&other), 0, "{other:?}");
    assert_eq!(exit_code(&killed), 137, "{killed:?}");
    assert!(
        killed.stdout.is_empty(),
        "killed before it returned: {killed:?}"
    );
    for want in [
        format!("\"path\":\"{helper_path}\""),
        "\"symbol\":\"lsm_vmtest_uprobe_target\"".to_string(),
        "{\"label\":\"text\",\"string_arg\":\"lsm-vmtest-uprobe-post-1\"}".to_string(),
        "{\"long_arg\":\"4242\"}".to_string(),
        "\"policy_name\":\"observe-vmtest-uprobe\"".to_string(),
        "\"action\":\"KPROBE_ACTION_POST\"".to_string(),
    ] {
        assert!(line.contains(&want), "{want} in {line}");
    }
    assert!(
        kill_line.contains("\"action\":\"KPROBE_ACTION_SIGKILL\""),
        "{kill_line}"
    );
    assert!(
        !events
            .lines()
            .iter()
            .any(|l| l.contains("lsm-vmtest-uprobe-other") && l.contains("process_uprobe")),
        "a call the selectors do not match posts nothing"
    );
    assert!(
        compact.iter().any(|l| l.contains("uprobe")
            && l.contains(helper_path)
            && l.contains("lsm_vmtest_uprobe_target")),
        "the compact line names the file and the symbol: {compact:?}"
    );
}

/// Uprobe entries of one file with one plan are one hook attached at each of their points,
/// so a policy may list more symbols than the agent has hook ids (Tetragon's `uprobe.yaml`
/// lists 1,618). Each event still names the symbol that ran: the helper passes each
/// function its own number, which the event carries beside the symbol.
#[test]
fn forty_uprobe_symbols_with_one_plan_load_and_each_event_names_its_own() {
    let a = agent();
    let events = a.json_stream();
    let (helper, policy) = uprobe_policy(&a, "observe-forty-vmtest-uprobe-points");
    let helper_path = helper.to_str().expect("utf-8");
    let ran = run(&helper, &["--points", "lsm-vmtest-uprobe-points"]);
    let other = run(&helper, &["--points", "lsm-vmtest-uprobe-other"]);
    let posted: Vec<String> = (0..40)
        .map(|k| {
            let symbol = format!("\"symbol\":\"lsm_vmtest_uprobe_p{k:02}\"");
            events.expect(&symbol, |l| {
                l.contains("\"process_uprobe\"") && l.contains(&symbol)
            })
        })
        .collect();
    events.settle(Duration::from_secs(2), Duration::from_secs(10));
    let all = events.lines();
    policy.delete();

    assert_eq!(exit_code(&ran), 0, "{ran:?}");
    assert_eq!(exit_code(&other), 0, "{other:?}");
    for (k, line) in posted.iter().enumerate() {
        for want in [
            format!("{{\"long_arg\":\"{k}\"}}"),
            "{\"string_arg\":\"lsm-vmtest-uprobe-points\"}".to_string(),
            format!("\"path\":\"{helper_path}\""),
        ] {
            assert!(line.contains(&want), "{want} in {line}");
        }
    }
    let uprobe_events = all
        .iter()
        .filter(|l| l.contains("\"process_uprobe\"") && l.contains("lsm_vmtest_uprobe_p"))
        .count();
    assert_eq!(
        uprobe_events, 40,
        "one event per call, none for the calls the selector does not match"
    );
}

/// `spec.usdts`: a statically defined probe of a user-space program (its `.note.stapsdt`
/// notes), attached at each of its two sites by the generic USDT program. The arguments are
/// computed as the notes locate them, not read from the calling convention's registers: the
/// string filters the hit, and the event carries the text, 4242 and -7 (a negative value
/// widened by its sign). Each site posts; `Sigkill` kills at the first site, before the
/// program prints.
#[test]
fn a_usdt_probe_posts_at_each_site_and_kills_by_its_notes_arguments() {
    let a = agent();
    let events = a.json_stream();
    let (helper, policy) = helper_policy(&a, "vmtest-usdt", "observe-and-kill-at-vmtest-usdt");
    let helper_path = helper.to_str().expect("utf-8");
    let posted = run(&helper, &["lsm-vmtest-usdt-post-1"]);
    let other = run(&helper, &["lsm-vmtest-usdt-other"]);
    let killed = run(&helper, &["lsm-vmtest-usdt-kill-1"]);
    let line = events.expect("the usdt event", |l| {
        l.contains("\"process_usdt\"") && l.contains("lsm-vmtest-usdt-post-1")
    });
    let kill_line = events.expect("the Sigkill event", |l| {
        l.contains("\"process_usdt\"") && l.contains("lsm-vmtest-usdt-kill-1")
    });
    events.settle(Duration::from_secs(2), Duration::from_secs(10));
    let all = events.lines();
    let compact = a.lines();
    policy.delete();

    assert_eq!(exit_code(&posted), 0, "{posted:?}");
    assert_eq!(exit_code(&other), 0, "{other:?}");
    assert_eq!(exit_code(&killed), 137, "{killed:?}");
    assert!(
        killed.stdout.is_empty(),
        "killed before it returned: {killed:?}"
    );
    for want in [
        format!("\"path\":\"{helper_path}\""),
        "\"provider\":\"lsm_vmtest\"".to_string(),
        "\"name\":\"hit\"".to_string(),
        "{\"label\":\"text\",\"string_arg\":\"lsm-vmtest-usdt-post-1\"}".to_string(),
        "{\"long_arg\":\"4242\"}".to_string(),
        "{\"int_arg\":-7}".to_string(),
        "\"policy_name\":\"observe-vmtest-usdt\"".to_string(),
        "\"action\":\"KPROBE_ACTION_POST\"".to_string(),
    ] {
        assert!(line.contains(&want), "{want} in {line}");
    }
    assert!(
        kill_line.contains("\"action\":\"KPROBE_ACTION_SIGKILL\""),
        "{kill_line}"
    );
    let of = |text: &str| {
        all.iter()
            .filter(|l| l.contains("\"process_usdt\"") && l.contains(text))
            .count()
    };
    assert_eq!(
        of("lsm-vmtest-usdt-post-1"),
        2,
        "one event per site: {all:?}"
    );
    assert_eq!(
        of("lsm-vmtest-usdt-other"),
        0,
        "the selectors match no other text"
    );
    assert!(
        compact
            .iter()
            .any(|l| l.contains("usdt") && l.contains(helper_path) && l.contains("lsm_vmtest hit")),
        "the compact line names the file, the provider and the name: {compact:?}"
    );
}

/// `Set` (Tetragon's `usdt-set.yaml`): the probe's argument 1 is an `int` in the process's
/// memory, which the agent writes when the selector matches, before the program goes on.
/// The helper prints the value it has after the probe: 32 for a matching text, 7 (untouched)
/// for another. The event reports the action as `KPROBE_ACTION_SET` with the value the
/// argument had when the probe fired.
#[test]
fn usdt_set_writes_the_probes_argument_in_the_process_memory() {
    let a = agent();
    let events = a.json_stream();
    let (helper, policy) = helper_policy(&a, "vmtest-usdt", "set-at-vmtest-usdt");
    let set = run(&helper, &["--set", "lsm-vmtest-usdt-set-1"]);
    let other = run(&helper, &["--set", "lsm-vmtest-usdt-other"]);
    let line = events.expect("the Set event", |l| {
        l.contains("\"process_usdt\"") && l.contains("lsm-vmtest-usdt-set-1")
    });
    policy.delete();
    let after = run(&helper, &["--set", "lsm-vmtest-usdt-set-2"]);

    assert_eq!(exit_code(&set), 0, "{set:?}");
    assert_eq!(String::from_utf8_lossy(&set.stdout).trim(), "value=32");
    assert_eq!(String::from_utf8_lossy(&other.stdout).trim(), "value=7");
    assert_eq!(
        String::from_utf8_lossy(&after.stdout).trim(),
        "value=7",
        "nothing is written once the policy is deleted"
    );
    for want in [
        "\"name\":\"set\"",
        "{\"int_arg\":7}",
        "\"action\":\"KPROBE_ACTION_SET\"",
    ] {
        assert!(line.contains(want), "{want} in {line}");
    }
}

/// `Set` on an argument a site passes in a register cannot be done (a uprobe program cannot
/// change the process's registers): the policy is refused when it is loaded, naming the
/// probe, the argument and the site, and nothing is attached.
#[test]
fn usdt_set_on_a_register_argument_is_refused_naming_the_site() {
    let a = agent();
    // One scratch dir: a second scratch_dir call would empty it, helper included.
    let dir = scratch_dir("usdt-set-refused");
    let helper = dir.join("vmtest-usdt");
    fs::copy(bin("vmtest-usdt"), &helper).expect("copying the helper");
    let yaml = substitute(
        &fixture("set-at-vmtest-usdt.yaml"),
        &[("HELPER", helper.to_str().expect("utf-8"))],
    )
    .replace("argIndex: 1", "argIndex: 0");
    let file = dir.join("policy.yaml");
    fs::write(&file, yaml).expect("writing the policy");
    let out = a.lsmctl(&["tracingpolicy", "add", file.to_str().expect("utf-8")]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(exit_code(&out), 0, "added: {text}");
    assert!(text.contains("lsm_vmtest:set"), "{text}");
    assert!(text.contains("Set writes argument 0"), "{text}");
    assert!(text.contains("in a register"), "{text}");
    let list = a.lsmctl(&["tracingpolicy", "list"]);
    assert!(
        !String::from_utf8_lossy(&list.stdout).contains("set-vmtest-usdt"),
        "the refused policy is not listed"
    );
}
