//! Offline check of policy files (`lsmctl tracingpolicy check`): parse each file as the agent
//! would load it, compile them together, and describe what each policy uses.
//!
//! Everything here is pure apart from reading the files, so the report can be tested without
//! running the binary.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use lsm_shared::{
    ADDR_ENTRIES, MAX_NUM_FILTERS, MAX_SELECTORS, PIDS_ENTRIES, PORT_ENTRIES, STR_EQ_ENTRIES,
    STR_LPM_ENTRIES, num_filt_index,
};

use super::compile::{CompileError, MapImage, compile};
use super::error::PolicyError;
use super::ir::{HookOrigin, LsmHook, Policy, PolicyKind, PolicyMode, Target};
use super::parse::parse_policy_with_env;

/// Entries a map image uses in each policy map. Selector actions and numeric filters have a
/// fixed number of slots per hook, so they are counted per hook id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MapUsage {
    pub str_eq: usize,
    pub str_prefix: usize,
    pub str_postfix: usize,
    pub pids: usize,
    pub addr4: usize,
    pub addr6: usize,
    pub ports: usize,
    /// Hook id → `SEL_ACT` entries.
    pub sel_act: BTreeMap<u32, usize>,
    /// Hook id → `NUM_FILT` entries.
    pub num_filt: BTreeMap<u32, usize>,
    /// Names of the image's probe hooks (their ids are handed out per compile).
    pub probe_names: BTreeMap<u32, String>,
}

impl MapUsage {
    pub fn of(img: &MapImage) -> Self {
        let mut sel_act = BTreeMap::new();
        for idx in img.sel_act.keys() {
            *sel_act.entry(idx / MAX_SELECTORS).or_insert(0) += 1;
        }
        // Records are laid out hook-major (each hook owns a fixed block, currently two banks
        // of MAX_NUM_FILTERS); the block size is taken from the shared index function so the
        // count follows layout changes.
        let per_hook_block = num_filt_index(1, 0, 0).max(1);
        let mut num_filt = BTreeMap::new();
        for idx in img.num_filt.keys() {
            *num_filt.entry(idx / per_hook_block).or_insert(0) += 1;
        }
        MapUsage {
            str_eq: img.str_eq.len(),
            str_prefix: img.str_prefix.len(),
            str_postfix: img.str_postfix.len(),
            pids: img.pids.len(),
            addr4: img.addr4.len(),
            addr6: img.addr6.len(),
            ports: img.ports.len(),
            sel_act,
            num_filt,
            probe_names: img
                .probes
                .iter()
                .map(|(id, t)| (*id, super::probes::hook_label(t)))
                .collect(),
        }
    }

    /// An LSM hook's name, or a probe's target (`kprobe sys_setuid`).
    fn hook_name(&self, id: u32) -> String {
        LsmHook::of_hook_id(id)
            .map(|(h, twin)| {
                if twin {
                    format!("{h} (resolve)")
                } else {
                    h.name().to_string()
                }
            })
            .or_else(|| self.probe_names.get(&id).cloned())
            .unwrap_or_else(|| format!("hook{id}"))
    }

    fn per_hook(&self, counts: &BTreeMap<u32, usize>, limit: u32) -> String {
        if counts.is_empty() {
            return format!("0 / {limit} per hook");
        }
        counts
            .iter()
            .map(|(h, n)| format!("{} {n} / {limit}", self.hook_name(*h)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// One `NAME  used / limit` line per map, indented by `indent`.
    pub fn render(&self, out: &mut String, indent: &str) {
        let _ = writeln!(
            out,
            "{indent}STR_EQ       {} / {STR_EQ_ENTRIES}",
            self.str_eq
        );
        let _ = writeln!(
            out,
            "{indent}STR_PREFIX   {} / {STR_LPM_ENTRIES}",
            self.str_prefix
        );
        let _ = writeln!(
            out,
            "{indent}STR_POSTFIX  {} / {STR_LPM_ENTRIES}",
            self.str_postfix
        );
        let _ = writeln!(out, "{indent}PIDS         {} / {PIDS_ENTRIES}", self.pids);
        let _ = writeln!(out, "{indent}ADDR4        {} / {ADDR_ENTRIES}", self.addr4);
        let _ = writeln!(out, "{indent}ADDR6        {} / {ADDR_ENTRIES}", self.addr6);
        // A switch holds both plans' port keys: a plan may use half of the map.
        let _ = writeln!(
            out,
            "{indent}PORTS        {} / {}",
            self.ports,
            PORT_ENTRIES / 2
        );
        let _ = writeln!(
            out,
            "{indent}SEL_ACT      {}",
            self.per_hook(&self.sel_act, MAX_SELECTORS)
        );
        let _ = writeln!(
            out,
            "{indent}NUM_FILT     {}",
            self.per_hook(&self.num_filt, MAX_NUM_FILTERS)
        );
    }
}

/// Whether a selector of `h` overrides the call's return value (not in monitor mode it
/// would; `check` does not know the mode here, so any `Override` counts).
fn overrides(h: &super::ir::Hook) -> bool {
    h.selectors.iter().any(|s| {
        s.actions
            .iter()
            .any(|a| matches!(a, super::ir::Action::Override { .. }))
    })
}

/// Why the agent would refuse to load `p` although it parses: an `Override` (enforce mode) at
/// a kretprobe (the function has run; validation moves a kprobe's override to its entry, so
/// only a hand-built policy has one) or a tracepoint (no return value). One message per
/// selector, located by its path in the policy. At a kprobe's entry it depends on the node
/// (the hook's line says so).
fn load_refusals(p: &Policy) -> Vec<String> {
    if p.mode == PolicyMode::Monitor {
        return Vec::new();
    }
    let mut out = Vec::new();
    for h in p.hooks.iter().filter(|h| match &h.target {
        Target::Lsm(_) => false,
        Target::Kprobe(k) => k.ret,
        Target::Tracepoint { .. } | Target::RawTracepoint { .. } => true,
        // Refused when the policy is validated.
        Target::Uprobe(_) => false,
    }) {
        let section = match &h.origin {
            HookOrigin::Kprobe { .. } => "kprobes",
            HookOrigin::LsmHook => "lsmhooks",
            HookOrigin::Tracepoint { .. } => "tracepoints",
            HookOrigin::Uprobe(u) if u.usdt.is_some() => "usdts",
            HookOrigin::Uprobe(_) => "uprobes",
        };
        for s in h.selectors.iter().filter(|s| {
            s.actions
                .iter()
                .any(|a| matches!(a, super::ir::Action::Override { .. }))
        }) {
            out.push(format!(
                "spec.{section}[{}].selectors[{}].matchActions: Override on {} is not possible \
                 (it applies at a function's entry): loading this policy fails (use Override at \
                 the kprobe, Sigkill, an LSM hook, or mode monitor)",
                h.spec_index,
                s.index,
                super::probes::hook_label(&h.target)
            ));
        }
    }
    out
}

/// One file given to the check.
#[derive(Debug)]
pub struct FileResult {
    pub file: PathBuf,
    /// The id it is compiled with: its 1-based position among the files.
    pub id: u32,
    pub policy: Result<Policy, PolicyError>,
    /// What this policy alone puts in the maps (`None` if it did not parse, or an error if it
    /// does not even fit alone).
    pub usage: Option<Result<MapUsage, CompileError>>,
}

/// The outcome of checking a set of files.
#[derive(Debug)]
pub struct CheckReport {
    pub files: Vec<FileResult>,
    /// The parsed policies compiled together (`None` when none parsed).
    pub combined: Option<Result<MapUsage, CompileError>>,
}

impl CheckReport {
    /// True when every file parsed and the set compiles.
    pub fn ok(&self) -> bool {
        self.files
            .iter()
            .all(|f| f.policy.as_ref().is_ok_and(|p| load_refusals(p).is_empty()))
            && self.combined.as_ref().is_none_or(|c| c.is_ok())
    }

    /// Problems, one `error: ...` line each (file errors first, in argument order), then the
    /// policies' warnings as `warning: ...` lines.
    pub fn diagnostics(&self) -> Vec<String> {
        let mut out = Vec::new();
        for f in &self.files {
            match &f.policy {
                Err(e) => out.push(format!("error: {e}")),
                Ok(p) => out.extend(
                    load_refusals(p)
                        .into_iter()
                        .map(|r| format!("error: {}: {r}", f.file.display())),
                ),
            }
        }
        if let Some(Err(e)) = &self.combined {
            out.push(format!("error: compiling the policies together: {e}"));
        }
        for f in &self.files {
            if let Ok(p) = &f.policy {
                out.extend(p.warnings.iter().map(|w| format!("warning: {w}")));
            }
        }
        out
    }

    /// The human-readable report of the policies that parsed.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for f in &self.files {
            let Ok(p) = &f.policy else { continue };
            render_policy(&mut out, &f.file, p, f.usage.as_ref());
            out.push('\n');
        }
        let parsed = self.files.iter().filter(|f| f.policy.is_ok()).count();
        let refused = self
            .files
            .iter()
            .filter(|f| {
                f.policy
                    .as_ref()
                    .is_ok_and(|p| !load_refusals(p).is_empty())
            })
            .count();
        if let Some(Ok(u)) = &self.combined {
            let _ = writeln!(
                out,
                "all {parsed} parsed policies together, map entries (used / limit):"
            );
            u.render(&mut out, "  ");
        }
        let failed = self.files.len() - parsed + refused;
        if self.ok() {
            let _ = writeln!(out, "{} policy file(s) OK", self.files.len());
        } else {
            let _ = writeln!(
                out,
                "{failed} of {} policy file(s) rejected{}",
                self.files.len(),
                if matches!(self.combined, Some(Err(_))) {
                    "; the set does not compile"
                } else {
                    ""
                }
            );
        }
        out
    }
}

fn render_policy(
    out: &mut String,
    file: &Path,
    p: &Policy,
    usage: Option<&Result<MapUsage, CompileError>>,
) {
    let _ = writeln!(out, "{}: policy {}", file.display(), p.name);
    let kind = match p.kind {
        PolicyKind::TracingPolicy => "TracingPolicy".to_string(),
        PolicyKind::TracingPolicyNamespaced => match &p.namespace {
            Some(ns) => format!("TracingPolicyNamespaced (namespace {ns})"),
            None => "TracingPolicyNamespaced".to_string(),
        },
    };
    let _ = writeln!(out, "  kind: {kind}");
    let mode = match p.mode {
        PolicyMode::Enforce => "enforce",
        PolicyMode::Monitor => "monitor",
    };
    let _ = writeln!(out, "  mode: {mode}");
    if p.hooks.is_empty() {
        let _ = writeln!(out, "  hooks: none");
    } else {
        let _ = writeln!(out, "  hooks:");
    }
    for h in &p.hooks {
        let origin = match &h.origin {
            HookOrigin::Kprobe { call } => format!("{} {call}", h.spec_path),
            HookOrigin::LsmHook => format!(
                "{} {}",
                h.spec_path,
                h.target.lsm().map_or("", |l| l.name())
            ),
            HookOrigin::Tracepoint { subsystem, event } => {
                format!("{} {subsystem}/{event}", h.spec_path)
            }
            HookOrigin::Uprobe(u) => format!("{} {u}", h.spec_path),
        };
        let tcp = if h.tcp_only {
            ", TCP over IPv4/IPv6 only"
        } else {
            ""
        };
        let selectors = match h.selectors.len() {
            0 => "no selectors (every call is posted)".to_string(),
            1 => "1 selector".to_string(),
            n => format!("{n} selectors"),
        };
        let Target::Lsm(lsm) = &h.target else {
            let needs = if overrides(h) {
                "; Override makes the function return the error without running it where the \
                 kernel allows it (bpf_override_return: CONFIG_BPF_KPROBE_OVERRIDE and a \
                 function on its error-injection list); elsewhere loading fails"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "    {origin}: {} (events; Sigkill after the fact, nothing denied){needs}; {selectors}",
                h.target
            );
            continue;
        };
        let _ = writeln!(
            out,
            "    {origin}: enforced at LSM hook {lsm}{tcp} (observed by kprobe {} where BPF LSM is inactive); {selectors}",
            lsm.kprobe_function()
        );
    }
    match usage {
        Some(Ok(u)) => {
            let _ = writeln!(out, "  map entries (used / limit):");
            u.render(out, "    ");
        }
        Some(Err(e)) => {
            let _ = writeln!(out, "  map entries: does not compile: {e}");
        }
        None => {}
    }
}

/// Parses every file with `${VAR}` expanded by `lookup`, then compiles the parsed policies
/// together with ids 1..n in argument order (a file that fails keeps its id unused, so ids
/// still say which argument a policy came from).
pub fn check_files(files: &[PathBuf], lookup: impl Fn(&str) -> Option<String>) -> CheckReport {
    let mut results = Vec::with_capacity(files.len());
    for (i, file) in files.iter().enumerate() {
        let policy = std::fs::read_to_string(file)
            .map_err(|e| PolicyError::new(file, "", format!("cannot read policy file: {e}")))
            .and_then(|source| parse_policy_with_env(&source, file, &lookup));
        let id = u32::try_from(i + 1).unwrap_or(u32::MAX);
        // Compiled alone, a policy's map image holds exactly the entries its own values
        // create; in the combined image prefix entries also carry other policies' bits,
        // which would make attributing them by selector bits overcount.
        let usage = policy
            .as_ref()
            .ok()
            .map(|p| compile(&[(id, p)]).map(|img| MapUsage::of(&img)));
        results.push(FileResult {
            file: file.clone(),
            id,
            policy,
            usage,
        });
    }
    let set: Vec<(u32, &Policy)> = results
        .iter()
        .filter_map(|f| f.policy.as_ref().ok().map(|p| (f.id, p)))
        .collect();
    let combined = (!set.is_empty()).then(|| compile(&set).map(|img| MapUsage::of(&img)));
    CheckReport {
        files: results,
        combined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::testutil::fixture;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write test policy");
        p
    }

    /// Removed when the test ends, passed or failed.
    fn tmpdir(tag: &str) -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix(&format!("lsm-check-{tag}-"))
            .tempdir()
            .expect("tmpdir")
    }

    /// Kills reads under `${DIR}` and `/boot`; also hooks file_open without selectors.
    const GOOD: &str = fixture!("sigkill-reads-under-env-dir.yaml");

    fn env(name: &str) -> Option<String> {
        (name == "DIR").then(|| "/etc".to_string())
    }

    #[test]
    fn map_usage_names_probe_hooks_by_their_target() {
        let d = tmpdir("probe-names");
        let d = d.path();
        let f = write(
            d,
            "setuid.yaml",
            fixture!("observe-commit-creds-and-setuid.yaml"),
        );
        let text = check_files(&[f], |_| None).render();
        assert!(text.contains("kprobe sys_setuid 1 / 64"), "{text}");
        assert!(text.contains("kprobe commit_creds 1 / 64"), "{text}");
        assert!(
            !text.contains(" hook2"),
            "no probe is named by its id: {text}"
        );
    }

    #[test]
    fn report_lists_hooks_selectors_and_map_entries() {
        let d = tmpdir("good");
        let d = d.path();
        let f = write(d, "good.yaml", GOOD);
        let r = check_files(&[f.clone(), f], env);
        assert!(r.ok(), "{:?}", r.diagnostics());
        let u = r.files[0]
            .usage
            .as_ref()
            .expect("parsed")
            .as_ref()
            .expect("compiles");
        assert_eq!((u.str_eq, u.str_prefix, u.str_postfix), (0, 2, 0));
        let fp = LsmHook::FilePermission.id();
        let fo = LsmHook::FileOpen.id();
        assert_eq!(u.sel_act, BTreeMap::from([(fp, 1), (fo, 1)]));
        assert_eq!(u.num_filt, BTreeMap::from([(fp, 1)]));
        let text = r.render();
        assert!(text.contains("policy good"), "{text}");
        assert!(
            text.contains(
                "spec.kprobes[0] security_file_permission: enforced at LSM hook file_permission (observed by kprobe security_file_permission where BPF LSM is inactive); 1 selector"
            ),
            "{text}"
        );
        assert!(
            text.contains("spec.lsmhooks[0] file_open: enforced at LSM hook file_open (observed by kprobe security_file_open where BPF LSM is inactive); no selectors"),
            "{text}"
        );
        assert!(text.contains("STR_PREFIX   2 / 65536"), "{text}");
        // Each policy alone, then both together.
        assert!(
            text.contains("SEL_ACT      file_open 1 / 64, file_permission 1 / 64"),
            "{text}"
        );
        assert!(
            text.contains("SEL_ACT      file_open 2 / 64, file_permission 2 / 64"),
            "{text}"
        );
        assert!(
            text.contains("NUM_FILT     file_permission 2 / 64"),
            "{text}"
        );
        assert!(text.contains("2 policy file(s) OK"), "{text}");
    }

    #[test]
    fn bad_files_are_errors_and_the_rest_is_still_reported() {
        let d = tmpdir("bad");
        let d = d.path();
        let good = write(d, "good.yaml", GOOD);
        let bad = write(d, "bad.yaml", &GOOD.replace("Prefix", "StartsWith"));
        let r = check_files(&[bad, good], env);
        assert!(!r.ok());
        let diags = r.diagnostics();
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert!(
            diags[0].starts_with("error: ") && diags[0].contains("bad.yaml:17:9: "),
            "{diags:?}"
        );
        assert_eq!(r.files[1].id, 2);
        assert!(r.render().contains("1 of 2 policy file(s) rejected"));
    }

    #[test]
    fn unset_variables_fail_the_check() {
        let d = tmpdir("unset");
        let d = d.path();
        let f = write(d, "p.yaml", GOOD);
        let r = check_files(&[f], |_| None);
        assert!(!r.ok());
        assert!(
            r.diagnostics()[0].contains("environment variable DIR is not set"),
            "{:?}",
            r.diagnostics()
        );
    }

    #[test]
    fn a_set_that_does_not_fit_together_fails() {
        let d = tmpdir("full");
        let d = d.path();
        // 40 selectors on one hook: each file fits alone, two do not fit together.
        let mut yaml = String::from(
            "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: big\nspec:\n  \
             lsmhooks:\n  - hook: file_open\n    selectors:\n",
        );
        for _ in 0..40 {
            yaml.push_str("    - matchActions: [{action: Post}]\n");
        }
        let f = write(d, "big.yaml", &yaml);
        let r = check_files(&[f.clone(), f], env);
        assert!(!r.ok());
        assert!(
            r.diagnostics()
                .iter()
                .any(|l| l.starts_with("error: compiling the policies together: ")),
            "{:?}",
            r.diagnostics()
        );
    }

    #[test]
    fn report_says_which_hooks_are_observed_by_kprobe_kretprobe_or_tracepoint() {
        let d = tmpdir("observed");
        let d = d.path();
        let files = [
            write(
                d,
                "creds.yaml",
                fixture!("observe-commit-creds-and-setuid.yaml"),
            ),
            write(d, "open.yaml", fixture!("observe-openat-return.yaml")),
            write(d, "tp.yaml", fixture!("observe-raw-sys-enter-getpid.yaml")),
            write(
                d,
                "rawtp.yaml",
                fixture!("tetragon-quirks/rawtracepoints.yaml"),
            ),
        ];
        let r = check_files(&files, |_| None);
        assert!(r.ok(), "{:?}", r.diagnostics());
        let text = r.render();
        for want in [
            "spec.kprobes[0] __x64_sys_setuid: observed by kprobe sys_setuid (events; Sigkill after the fact, nothing denied); no selectors",
            "spec.kprobes[1] commit_creds: observed by kprobe commit_creds",
            "spec.kprobes[0] sys_openat: observed by kretprobe sys_openat",
            "spec.tracepoints[0] raw_syscalls/sys_enter: observed by tracepoint raw_syscalls/sys_enter",
            "spec.rawtracepoints[0] sched/sched_process_exec: observed by raw tracepoint sched/sched_process_exec",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
    }

    #[test]
    fn override_at_a_kprobe_depends_on_the_node_and_at_a_tracepoint_fails_the_check() {
        let d = tmpdir("override");
        let d = d.path();
        let yaml = fixture!("kill-on-setuid-4243.yaml")
            .replace("action: Sigkill", "action: Override\n        argError: -1");
        let entry = write(d, "entry.yaml", &yaml);
        let r = check_files(std::slice::from_ref(&entry), |_| None);
        assert!(r.ok(), "{:?}", r.diagnostics());
        let says = "Override makes the function return the error without running it";
        assert!(r.render().contains(says), "{}", r.render());
        // With return: true the override applies at the entry, and the kretprobe posts.
        let ret = yaml.replace(
            "    syscall: true\n",
            "    syscall: true\n    return: true\n    returnArg:\n      type: int\n",
        );
        let f = write(d, "return.yaml", &ret);
        let r = check_files(std::slice::from_ref(&f), |_| None);
        assert!(r.ok(), "{:?}", r.diagnostics());
        let text = r.render();
        assert!(
            text.contains(&format!("observed by kprobe sys_setuid (events; Sigkill after the fact, nothing denied); {says}"))
                && text.contains("observed by kretprobe sys_setuid"),
            "{text}"
        );
        // A tracepoint has no function to override.
        let tp = fixture!("observe-raw-sys-enter-getpid.yaml").replace(
            "      matchBinaries:",
            "      matchActions:\n      - action: Override\n        argError: -1\n      matchBinaries:",
        );
        let f = write(d, "override.yaml", &tp);
        let r = check_files(std::slice::from_ref(&f), |_| None);
        assert!(!r.ok());
        let diags = r.diagnostics();
        assert!(
            diags.iter().any(|l| l.starts_with("error: ")
                && l.contains("override.yaml: spec.tracepoints[0].selectors[0].matchActions: Override on tracepoint raw_syscalls/sys_enter is not possible")),
            "{diags:?}"
        );
        assert!(
            r.render().contains("1 of 1 policy file(s) rejected"),
            "{}",
            r.render()
        );
        // The same policy in monitor mode only reports what it would have done.
        let monitor = write(
            d,
            "monitor.yaml",
            &tp.replace(
                "spec:\n",
                "spec:\n  options:\n  - name: policy-mode\n    value: monitor\n",
            ),
        );
        let r = check_files(&[monitor], |_| None);
        assert!(r.ok(), "{:?}", r.diagnostics());
    }
}
