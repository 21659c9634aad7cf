//! Validation of the deserialized CRD and its translation to [`ir::Policy`]. This file holds
//! the document level (apiVersion, metadata, `spec` sections and options); each part of a hook
//! is checked in its own module below. Every problem is an [`Invalid`]: a YAML path and a
//! message, placed in the source afterwards by [`super::locate`].

mod actions;
mod args;
mod hooks;
mod match_args;
mod operators;
mod process;
mod selectors;
mod uprobes;

use hooks::{convert_kprobe, convert_lsmhook, convert_tracepoint};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

use super::ir;
use super::lists::{self, CallSource, ExpandedCall, Lists};
use super::model as raw;
use super::scope::{PolicySelectors, Scope, Selector, SelectorError};
use super::syscalls::SyscallArch;

/// A validation failure at a YAML path, located in the source afterwards.
#[derive(Debug)]
pub(crate) struct Invalid {
    pub(crate) path: String,
    pub(crate) message: String,
}

pub(crate) fn invalid(path: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid {
        path: path.into(),
        message: message.into(),
    }
}

fn not_supported(path: impl Into<String>) -> Invalid {
    invalid(path, "not supported yet by lsm-agent")
}

pub(crate) type VResult<T> = Result<T, Invalid>;

/// Whether an optional list is there with at least one entry.
fn non_empty<T>(v: &Option<Vec<T>>) -> bool {
    v.as_ref().is_some_and(|v| !v.is_empty())
}

/// Validates a deserialized policy of the given `kind` and translates it to the agent's
/// model. Problems that do not stop the policy from loading go to `warnings`.
pub(crate) fn convert(
    doc: &raw::Policy,
    kind: ir::PolicyKind,
    warnings: &mut Vec<Invalid>,
) -> VResult<ir::Policy> {
    match doc.api_version.as_deref() {
        Some("cilium.io/v1alpha1") => {}
        Some(other) => {
            return Err(invalid(
                "apiVersion",
                format!("unsupported apiVersion \"{other}\" (expected cilium.io/v1alpha1)"),
            ));
        }
        None => {
            return Err(invalid(
                "",
                "missing apiVersion (expected cilium.io/v1alpha1)",
            ));
        }
    }
    let meta = doc
        .metadata
        .as_ref()
        .ok_or_else(|| invalid("", "missing metadata (metadata.name is required)"))?;
    let name = match meta.name.as_deref() {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => return Err(invalid("metadata", "metadata.name is required")),
    };
    let namespace = match kind {
        ir::PolicyKind::TracingPolicyNamespaced => {
            warnings.push(invalid(
                "kind",
                "TracingPolicyNamespaced: with the Kubernetes API the policy applies to the \
                 pods of its namespace only; without it, it applies to every process on the \
                 node (as Tetragon does without the Kubernetes API)",
            ));
            meta.namespace.clone().filter(|n| !n.is_empty())
        }
        // Kubernetes ignores the namespace of cluster-scoped objects.
        ir::PolicyKind::TracingPolicy => None,
    };
    let spec = doc
        .spec
        .as_ref()
        .ok_or_else(|| invalid("", "missing spec"))?;

    check_spec_unsupported(spec, kind, warnings)?;
    let scope = policy_scope(spec, namespace.as_deref())?;
    if kind == ir::PolicyKind::TracingPolicy && scope != Scope::Everything {
        warnings.push(invalid(
            "spec",
            "podSelector/containerSelector/hostSelector apply with the Kubernetes API only; \
             without it the policy applies to every process on the node (and a \
             resolvePathInContainer uprobe, finding no container, to none)",
        ));
    }
    let mode = policy_mode(spec)?;

    let lists = Lists::parse(spec, SyscallArch::host())?;
    list_warnings(&lists, warnings);
    let mut hooks = Vec::new();
    for (section, specs) in [
        ("spec.kprobes", &spec.kprobes),
        ("spec.fentries", &spec.fentries),
    ] {
        let specs = specs.as_deref().unwrap_or(&[]);
        for call in lists::expand_kprobe_calls(specs, section, &lists)? {
            let hook = convert_expanded(section, &specs[call.spec_index], &call, &lists, warnings)?;
            hooks.extend(hooks::split_return_override(hook));
        }
    }
    for (i, lh) in spec.lsmhooks.iter().flatten().enumerate() {
        hooks.push(convert_lsmhook(i, lh, &lists, warnings)?);
    }
    for (i, tp) in spec.tracepoints.iter().flatten().enumerate() {
        hooks.push(convert_tracepoint(
            "spec.tracepoints",
            i,
            tp,
            false,
            &lists,
            warnings,
        )?);
    }
    // The first form of Tetragon's raw tracepoints (its own rawtp.yaml example): the same as
    // a tracepoint with `raw: true`.
    for (i, tp) in spec.rawtracepoints.iter().flatten().enumerate() {
        hooks.push(convert_tracepoint(
            "spec.rawtracepoints",
            i,
            tp,
            true,
            &lists,
            warnings,
        )?);
    }
    let mut ups = Vec::new();
    for (i, up) in spec.uprobes.iter().flatten().enumerate() {
        ups.push(uprobes::convert_uprobe(i, up, spec, &lists, warnings)?);
    }
    for (i, u) in spec.usdts.iter().flatten().enumerate() {
        ups.push(uprobes::convert_usdt(i, u, &lists, warnings)?);
    }
    hooks.extend(uprobes::merge_same_plan(ups));
    check_enforcers(spec, &hooks, warnings)?;
    if hooks.is_empty() {
        warnings.push(invalid(
            "spec",
            "the policy has no kprobes, tracepoints, uprobes, usdts or lsmhooks: it does nothing",
        ));
    }
    Ok(ir::Policy {
        name,
        kind,
        namespace,
        scope,
        mode,
        hooks,
        warnings: Vec::new(),
    })
}

/// One hook of a kprobe-like spec (`kprobes[i]` or `fentries[i]`) after `list:` expansion:
/// validated as that kprobe with `call` replaced by the list member.
fn convert_expanded(
    section: &str,
    kp: &raw::Kprobe,
    call: &ExpandedCall,
    lists: &Lists,
    warnings: &mut Vec<Invalid>,
) -> VResult<ir::Hook> {
    let i = call.spec_index;
    let member;
    let kp = match &call.source {
        CallSource::Direct => kp,
        CallSource::List { .. } => {
            member = raw::Kprobe {
                call: call.call.clone(),
                ..kp.clone()
            };
            &member
        }
        CallSource::FtracePattern { list } => {
            return Err(invalid(
                format!("{section}[{i}].call"),
                format!(
                    "not supported yet by lsm-agent: kprobes over generated_ftrace list \
                     \"{list}\" (its functions are only known on the node)"
                ),
            ));
        }
    };
    // The kprobe validation names `spec.kprobes[i]`; fentries are reported where written.
    let rebase = |mut inv: Invalid| {
        if let Some(rest) = inv.path.strip_prefix("spec.kprobes") {
            inv.path = format!("{section}{rest}");
        }
        inv
    };
    let mut local = Vec::new();
    let hook = convert_kprobe(i, kp, lists, &mut local).map_err(rebase);
    warnings.extend(local.into_iter().map(rebase));
    hook
}

/// What `check` should know about lists that only the node can resolve.
fn list_warnings(lists: &Lists, warnings: &mut Vec<Invalid>) {
    for l in lists.iter() {
        if l.kind == lists::ListKind::GeneratedFtrace {
            warnings.push(invalid(
                &l.path,
                format!(
                    "generated_ftrace list \"{}\": its functions are resolved when the policy \
                     is loaded, from the node's available_filter_functions",
                    l.name
                ),
            ));
        }
    }
}

/// The workloads the policy applies to, by Tetragon's rules (`tetragon-compat.md` §1.10).
fn policy_scope(spec: &raw::Spec, namespace: Option<&str>) -> VResult<Scope> {
    let pod = spec.pod_selector.as_ref().map(label_selector);
    let container = spec.container_selector.as_ref().map(label_selector);
    let host = spec.host_selector.as_ref().map(label_selector);
    let selectors = PolicySelectors {
        pod: pod.as_ref(),
        container: container.as_ref(),
        host: host.as_ref(),
    };
    Scope::new(namespace, selectors).map_err(|e| {
        let field = match e {
            SelectorError::HostSelectorLabels | SelectorError::HostSelectorNamespaced => {
                "spec.hostSelector"
            }
            // Only a malformed pod or container selector is left; name the one that is.
            _ if pod
                .as_ref()
                .is_some_and(|p| Selector::new(Some(p)).is_err()) =>
            {
                "spec.podSelector"
            }
            _ => "spec.containerSelector",
        };
        invalid(field, e.to_string())
    })
}

/// The model's selector as the Kubernetes type the matcher takes.
fn label_selector(s: &raw::LabelSelector) -> LabelSelector {
    LabelSelector {
        match_labels: s.match_labels.clone(),
        match_expressions: s.match_expressions.as_ref().map(|reqs| {
            reqs.iter()
                .map(|r| LabelSelectorRequirement {
                    key: r.key.clone(),
                    operator: r.operator.clone(),
                    values: r.values.clone(),
                })
                .collect()
        }),
    }
}

fn check_spec_unsupported(
    spec: &raw::Spec,
    kind: ir::PolicyKind,
    warnings: &mut Vec<Invalid>,
) -> VResult<()> {
    let namespace_kind = kind == ir::PolicyKind::TracingPolicyNamespaced;
    // Sections missing from Tetragon's current CRD come first: they stay refused even when
    // the hook kinds below are supported.
    if non_empty(&spec.killers) {
        return Err(invalid(
            "spec.killers",
            "not supported by lsm-agent: killers (the old name of enforcers, which Tetragon \
             no longer accepts either: write it as enforcers, with calls for syscalls)",
        ));
    }
    if non_empty(&spec.uprobes) && namespace_kind {
        return Err(invalid(
            "spec.uprobes",
            "uprobes are not allowed in a TracingPolicyNamespaced (as in Tetragon): a \
             binary's functions are the node's, not a namespace's",
        ));
    }
    if non_empty(&spec.usdts) && namespace_kind {
        return Err(invalid(
            "spec.usdts",
            "usdts are not allowed in a TracingPolicyNamespaced (as in Tetragon): a \
             binary's probes are the node's, not a namespace's",
        ));
    }
    if spec.loader == Some(true) {
        return Err(not_supported("spec.loader"));
    }
    if spec.node_selector.is_some() {
        warnings.push(invalid(
            "spec.nodeSelector",
            "ignored: nodeSelector only applies to policies managed through Kubernetes",
        ));
    }
    if spec
        .selectors_macros
        .as_ref()
        .is_some_and(|m| !m.is_empty())
    {
        return Err(not_supported("spec.selectorsMacros"));
    }
    Ok(())
}

/// `enforcers` and the `NotifyEnforcer` actions that need them. Tetragon's enforcer makes its
/// `calls` return `argError` once a hook of the thread notified it; lsm-agent denies at the
/// notifying hook's LSM hook itself, before the operation. The same outcome when the enforcer
/// is on that call; otherwise earlier, which the policy's author is told.
fn check_enforcers(
    spec: &raw::Spec,
    hooks: &[ir::Hook],
    warnings: &mut Vec<Invalid>,
) -> VResult<()> {
    let enforcers = spec.enforcers.as_deref().unwrap_or_default();
    for (i, e) in enforcers.iter().enumerate() {
        if e.calls.is_empty() || e.calls.iter().any(|c| c.trim().is_empty()) {
            return Err(invalid(
                format!("spec.enforcers[{i}].calls"),
                "an enforcer lists the calls it makes fail (e.g. [sys_openat])",
            ));
        }
    }
    let calls: Vec<&str> = enforcers
        .iter()
        .flat_map(|e| e.calls.iter().map(|c| c.trim()))
        .collect();
    let mut elsewhere = Vec::new();
    for h in hooks {
        let Some(k) = h.selectors.iter().position(|s| {
            s.actions
                .iter()
                .any(|a| matches!(a, ir::Action::NotifyEnforcer { .. }))
        }) else {
            continue;
        };
        if enforcers.is_empty() {
            return Err(invalid(
                format!("{}.selectors[{k}].matchActions", h.spec_path),
                "NotifyEnforcer needs spec.enforcers (the calls it makes fail)",
            ));
        }
        if let ir::HookOrigin::Kprobe { call } = &h.origin
            && !calls.contains(&call.as_str())
        {
            elsewhere.push(format!("{call} ({})", h.target));
        }
    }
    if !elsewhere.is_empty() {
        warnings.push(invalid(
            "spec.enforcers",
            format!(
                "lsm-agent denies at the notifying hooks themselves, before the operation: \
                 {}; the enforcers' calls ({}) are not made to fail afterwards",
                elsewhere.join(", "),
                calls.join(", ")
            ),
        ));
    }
    Ok(())
}

/// Option names Tetragon understands that do not change anything at LSM hooks.
const IGNORED_OPTIONS: &[&str] = &[
    "disable-kprobe-multi",
    "disable-uprobe-multi",
    "override-method",
    "sleepable-preload-size",
];

fn policy_mode(spec: &raw::Spec) -> VResult<ir::PolicyMode> {
    let mut mode = ir::PolicyMode::default();
    for (i, opt) in spec.options.iter().flatten().enumerate() {
        let path = format!("spec.options[{i}]");
        match opt.name.as_str() {
            "policy-mode" => {
                mode = match opt.value.as_deref() {
                    Some("enforce") => ir::PolicyMode::Enforce,
                    Some("monitor") => ir::PolicyMode::Monitor,
                    other => {
                        return Err(invalid(
                            format!("{path}.value"),
                            format!(
                                "invalid policy-mode \"{}\" (expected enforce or monitor)",
                                other.unwrap_or("")
                            ),
                        ));
                    }
                }
            }
            n if IGNORED_OPTIONS.contains(&n) => {}
            n => {
                return Err(invalid(
                    format!("{path}.name"),
                    format!(
                        "unknown option \"{n}\" (expected one of policy-mode, {})",
                        IGNORED_OPTIONS.join(", ")
                    ),
                ));
            }
        }
    }
    Ok(mode)
}

#[cfg(test)]
mod tests {
    use crate::policy::ir::PolicyMode;
    use crate::policy::testutil::*;

    #[test]
    fn namespaced_policy_records_metadata_namespace() {
        let yaml = with_selector("matchActions: [{action: Sigkill}]")
            .replace("kind: TracingPolicy", "kind: TracingPolicyNamespaced")
            .replace("  name: t\n", "  name: t\n  namespace: default\n");
        let p = parse_ok(&yaml);
        assert_eq!(p.namespace.as_deref(), Some("default"));
        assert_eq!(p.warnings.len(), 1);
    }

    #[test]
    fn wrong_api_version_is_rejected() {
        let yaml = with_selector("matchActions: [{action: Post}]").replace("v1alpha1", "v2");
        let e = parse_err(&yaml);
        assert_eq!(e.path, "apiVersion");
    }

    #[test]
    fn missing_metadata_name_is_rejected() {
        let yaml = with_selector("matchActions: [{action: Post}]")
            .replace("  name: t\n", "  labels: {a: b}\n");
        let e = parse_err(&yaml);
        assert!(
            e.message.contains("metadata.name is required"),
            "{}",
            e.message
        );
    }

    #[test]
    fn unimplemented_spec_sections_are_named_in_the_error() {
        let yaml = with_selector("matchActions: [{action: Post}]")
            .replace("spec:\n", "spec:\n  selectorsMacros:\n    m: {}\n");
        let e = parse_err(&yaml);
        assert_eq!(e.path, "spec.selectorsMacros");
        assert_eq!(
            e.to_string(),
            "test.yaml:6:3: spec.selectorsMacros: not supported yet by lsm-agent"
        );
    }

    #[test]
    fn notify_enforcer_denies_at_the_lsm_hook_and_is_reported_as_itself() {
        use lsm_shared::{ACT_NOTIFY_ENFORCER, ACT_OVERRIDE, MAX_SELECTORS};
        let p = parse_ok(fixture!("notify-enforcer-at-socket-connect.yaml"));
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        assert_eq!(
            p.hooks[0].selectors[0].actions[1],
            crate::policy::ir::Action::NotifyEnforcer {
                error: -1,
                signal: None
            }
        );
        let img = crate::policy::compile::compile(&[(1, &p)]).expect("compiles");
        let hook = lsm_shared::HOOK_SOCKET_CONNECT;
        let act = img.sel_act[&(hook * MAX_SELECTORS)];
        assert_eq!(
            act.flags & (ACT_OVERRIDE | ACT_NOTIFY_ENFORCER),
            ACT_OVERRIDE | ACT_NOTIFY_ENFORCER
        );
        assert_eq!(act.error, -1);
    }

    #[test]
    fn notify_enforcer_needs_enforcers_and_an_lsm_hook() {
        let yaml = fixture!("notify-enforcer-at-socket-connect.yaml");
        let without = yaml.split("  enforcers:").next().unwrap_or_default();
        let e = parse_err(without);
        assert_eq!(e.path, "spec.kprobes[0].selectors[0].matchActions");
        assert!(e.message.contains("needs spec.enforcers"), "{}", e.message);
        let e = parse_err(fixture!("notify-enforcer-at-an-observed-kprobe.yaml"));
        assert!(e.path.ends_with("matchActions[0].action"), "{}", e.path);
        assert!(
            e.message.contains("observed by kprobe fd_install"),
            "{}",
            e.message
        );
    }

    #[test]
    fn an_enforcer_on_other_calls_is_accepted_with_a_warning_that_the_hook_denies() {
        let yaml = fixture!("notify-enforcer-at-socket-connect.yaml").replace(
            "    - \"security_socket_connect\"\n",
            "    - \"sys_connect\"\n",
        );
        let p = parse_ok(&yaml);
        assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
        assert!(
            p.warnings[0].contains("denies at the notifying hooks themselves"),
            "{}",
            p.warnings[0]
        );
    }

    #[test]
    fn workload_selectors_parse_and_malformed_ones_name_their_field() {
        let with_spec = |extra: &str| {
            with_selector("matchActions: [{action: Post}]")
                .replace("spec:\n", &format!("spec:\n{extra}"))
        };
        let p = parse_ok(&with_spec("  podSelector:\n    matchLabels: {app: x}\n"));
        assert!(
            p.scope
                .covers_pod("any", &[("app".into(), "x".into())].into())
        );
        assert!(!p.scope.covers_host());
        let bad_pod = "  podSelector:\n    matchExpressions: [{key: app, operator: In}]\n";
        assert_eq!(parse_err(&with_spec(bad_pod)).path, "spec.podSelector");
        let bad_container =
            "  containerSelector:\n    matchExpressions: [{key: name, operator: Is}]\n";
        assert_eq!(
            parse_err(&with_spec(bad_container)).path,
            "spec.containerSelector"
        );
        let bad_host = "  hostSelector:\n    matchLabels: {a: b}\n";
        assert_eq!(parse_err(&with_spec(bad_host)).path, "spec.hostSelector");
    }

    #[test]
    fn policy_mode_option_is_honoured_and_unknown_options_rejected() {
        let base = with_selector("matchActions: [{action: Sigkill}]");
        let yaml = format!(
            "{base}  options:\n  - name: policy-mode\n    value: monitor\n  - name: \
             disable-kprobe-multi\n    value: \"1\"\n"
        );
        assert_eq!(parse_ok(&yaml).mode, PolicyMode::Monitor);
        let e = parse_err(&yaml.replace("monitor", "audit"));
        assert_eq!(e.path, "spec.options[0].value");
        let e = parse_err(&yaml.replace("disable-kprobe-multi", "turbo"));
        assert_eq!(e.path, "spec.options[1].name");
        assert!(
            e.message.contains("unknown option \"turbo\""),
            "{}",
            e.message
        );
    }
}
