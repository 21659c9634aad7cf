//! `uprobes[]`: functions of an executable or library, observed by the generic uprobe
//! program. Tetragon makes each symbol (or offset) a probe of its own; here the locations
//! of one file with one plan (an entry's symbols, and the later entries on the same file
//! with the same arguments and selectors) are one hook, which the loader attaches at each
//! of them (see [`ir::UprobeTarget`]). The events are the same: one per call, naming its
//! symbol.

use serde_yaml::Value;

use super::args::{ArgSite, MAX_ARG_INDEX, check_arg_options, convert_generic_arg};
use super::hooks::{HookSource, convert_hook_body};
use super::{Invalid, VResult, invalid, not_supported};
use crate::policy::ir;
use crate::policy::lists::Lists;
use crate::policy::model as raw;

/// The hook of `spec.uprobes[i]`, at each of its symbols or offsets.
pub(super) fn convert_uprobe(
    i: usize,
    up: &raw::Uprobe,
    spec: &raw::Spec,
    lists: &Lists,
    warnings: &mut Vec<Invalid>,
) -> VResult<ir::Hook> {
    let path = format!("spec.uprobes[{i}]");
    refuse_unsupported(&path, up)?;
    let file = absolute_path(&path, up.path.as_deref())?;
    let in_container = up.resolve_path_in_container == Some(true);
    if in_container {
        check_in_container(&path, spec)?;
    }
    let target = ir::UprobeTarget {
        path: file,
        points: locations(&path, up)?,
        usdt: None,
        in_container,
    };
    uprobe_hook(i, &path, target, &up.body(), lists, warnings)
}

/// The hook of `spec.usdts[i]`: the generic uprobe flow, attached at each site of the probe
/// in the file (found by the loader in its `.note.stapsdt` notes), its arguments computed as
/// the notes describe them rather than read from the calling convention's registers.
pub(super) fn convert_usdt(
    i: usize,
    u: &raw::Usdt,
    lists: &Lists,
    warnings: &mut Vec<Invalid>,
) -> VResult<ir::Hook> {
    let path = format!("spec.usdts[{i}]");
    if u.btf_path.is_some() {
        return Err(not_supported(format!("{path}.btfPath")));
    }
    let file = absolute_path(&path, u.path.as_deref())?;
    let name_of = |field: &str, v: Option<&str>| match v {
        Some(s) if !s.is_empty() && !s.contains(|c: char| c.is_whitespace() || c == '\0') => {
            Ok(s.to_string())
        }
        Some(s) => Err(invalid(
            format!("{path}.{field}"),
            format!("{s:?} is not a USDT {field}"),
        )),
        None => Err(invalid(
            format!("{path}.{field}"),
            format!("missing {field}"),
        )),
    };
    let target = ir::UprobeTarget {
        path: file,
        points: Vec::new(),
        usdt: Some(ir::UsdtProbe {
            provider: name_of("provider", u.provider.as_deref())?,
            name: name_of("name", u.name.as_deref())?,
        }),
        in_container: false,
    };
    uprobe_hook(i, &path, target, &u.body(), lists, warnings)
}

/// Tetragon's rules for `resolvePathInContainer`: the containers are the ones the policy's
/// `podSelector` selects, so it needs one, and a `hostSelector` (the node's own processes,
/// which have no container root) cannot go with it.
fn check_in_container(path: &str, spec: &raw::Spec) -> VResult<()> {
    if spec.pod_selector.is_none() {
        return Err(invalid(
            format!("{path}.resolvePathInContainer"),
            "needs a spec.podSelector: the path is resolved in each container of the pods it \
             selects (`podSelector: {}` for every pod)",
        ));
    }
    if spec.host_selector.is_some() {
        return Err(invalid(
            "spec.hostSelector",
            format!(
                "cannot go with {path}.resolvePathInContainer: the node's own processes have \
                 no container to resolve the path in"
            ),
        ));
    }
    Ok(())
}

fn absolute_path(path: &str, file: Option<&str>) -> VResult<String> {
    match file {
        Some(p) if p.starts_with('/') => Ok(p.to_string()),
        Some(p) => Err(invalid(
            format!("{path}.path"),
            format!("\"{p}\" is not an absolute path"),
        )),
        None => Err(invalid(format!("{path}.path"), "missing path")),
    }
}

/// The hook of a uprobe or USDT entry at `path` (`spec.uprobes[i]`, `spec.usdts[i]`).
fn uprobe_hook(
    i: usize,
    path: &str,
    target: ir::UprobeTarget,
    body: &raw::HookBody<'_>,
    lists: &Lists,
    warnings: &mut Vec<Invalid>,
) -> VResult<ir::Hook> {
    let what = if target.usdt.is_some() {
        format!("usdt {target}")
    } else {
        format!("uprobe {target}")
    };
    let arg = |apath: &str, a: &raw::Arg| {
        check_arg_options(apath, a, MAX_ARG_INDEX)?;
        convert_generic_arg(apath, a, a.index, true, ArgSite::Uprobe, &what)
    };
    let hook = convert_hook_body(
        path,
        HookSource {
            target: ir::Target::Uprobe(target.clone()),
            origin: ir::HookOrigin::Uprobe(target),
            spec_index: i,
            tcp_only: false,
            convert_arg: &arg,
            return_arg: None,
            data: Vec::new(),
            lists,
        },
        body,
        warnings,
    )?;
    refuse_actions(path, &hook)?;
    Ok(hook)
}

/// The uprobe hooks of one policy with the entries of one file and one plan merged into the
/// first of them: its points, then theirs, in policy order.
pub(super) fn merge_same_plan(hooks: Vec<ir::Hook>) -> Vec<ir::Hook> {
    let mut out: Vec<ir::Hook> = Vec::with_capacity(hooks.len());
    for h in hooks {
        let (ir::Target::Uprobe(u), Some(first)) = (
            &h.target,
            out.iter_mut().position(|o| same_file_and_plan(o, &h)),
        ) else {
            out.push(h);
            continue;
        };
        let o = &mut out[first];
        if let ir::Target::Uprobe(ou) = &mut o.target {
            ou.points.extend(u.points.iter().cloned());
        }
        if let ir::HookOrigin::Uprobe(ou) = &mut o.origin {
            ou.points.extend(u.points.iter().cloned());
        }
    }
    out
}

/// Whether `b` observes the same file as uprobe hook `a`, with the same arguments,
/// selectors, message and tags: everything but where in the file.
fn same_file_and_plan(a: &ir::Hook, b: &ir::Hook) -> bool {
    matches!((&a.target, &b.target),
        (ir::Target::Uprobe(x), ir::Target::Uprobe(y))
            if x.path == y.path && x.usdt.is_none() && y.usdt.is_none())
        && a.args == b.args
        && a.return_arg == b.return_arg
        && a.message == b.message
        && a.tags == b.tags
        && a.tcp_only == b.tcp_only
        && a.selectors == b.selectors
}

/// The fields of Tetragon's uprobes that lsm-agent does not implement: each is refused at
/// its own path rather than ignored, since ignoring would change what the policy means.
fn refuse_unsupported(path: &str, up: &raw::Uprobe) -> VResult<()> {
    let set = |b: bool, field: &str| {
        if b {
            Err(not_supported(format!("{path}.{field}")))
        } else {
            Ok(())
        }
    };
    set(up.btf_path.is_some(), "btfPath")?;
    set(up.addrs.as_ref().is_some_and(|a| !a.is_empty()), "addrs")?;
    set(
        up.ref_ctr_offsets.as_ref().is_some_and(|a| !a.is_empty()),
        "refCtrOffsets",
    )?;
    set(up.data.as_ref().is_some_and(|d| !d.is_empty()), "data")?;
    set(up.ret == Some(true), "return")?;
    set(up.return_arg.is_some(), "returnArg")?;
    set(
        up.binary_digests.as_ref().is_some_and(|d| !d.is_empty()),
        "binaryDigests",
    )?;
    set(up.ignore.is_some(), "ignore")?;
    Ok(())
}

/// Where to attach: `symbols` (or the older `symbol`), else `offsets` from the start of the
/// file. Tetragon takes one of them, not both.
fn locations(path: &str, up: &raw::Uprobe) -> VResult<Vec<ir::UprobePoint>> {
    let mut symbols: Vec<String> = up.symbols.clone().unwrap_or_default();
    symbols.extend(up.symbol.clone());
    let offsets = up.offsets.as_deref().unwrap_or_default();
    if !symbols.is_empty() && !offsets.is_empty() {
        return Err(invalid(
            format!("{path}.offsets"),
            "symbols and offsets cannot both be set",
        ));
    }
    if symbols.is_empty() && offsets.is_empty() {
        return Err(invalid(
            format!("{path}.symbols"),
            "a uprobe needs symbols (or offsets)",
        ));
    }
    let mut out = Vec::new();
    for (k, s) in symbols.into_iter().enumerate() {
        if s.is_empty() || s.contains(|c: char| c.is_whitespace() || c == '\0') {
            return Err(invalid(
                format!("{path}.symbols[{k}]"),
                format!("{s:?} is not a symbol name"),
            ));
        }
        out.push(ir::UprobePoint {
            symbol: Some(s),
            offset: 0,
        });
    }
    for (k, v) in offsets.iter().enumerate() {
        let off = offset_value(v).ok_or_else(|| {
            invalid(
                format!("{path}.offsets[{k}]"),
                "an offset is a non-negative integer (decimal or 0x hex)",
            )
        })?;
        out.push(ir::UprobePoint {
            symbol: None,
            offset: off,
        });
    }
    Ok(out)
}

fn offset_value(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => s.parse().ok(),
        },
        _ => None,
    }
}

/// Actions that need a kernel hook's return or a socket: a uprobe has neither. Tetragon's
/// uprobe `Override` rewrites user registers, which these kernels do not allow a uprobe
/// program to do.
fn refuse_actions(path: &str, hook: &ir::Hook) -> VResult<()> {
    for (k, s) in hook.selectors.iter().enumerate() {
        for a in &s.actions {
            let name = match a {
                ir::Action::Override { .. } => "Override",
                ir::Action::SockTrack { track: true, .. } => "TrackSock",
                ir::Action::SockTrack { track: false, .. } => "UntrackSock",
                _ => continue,
            };
            return Err(invalid(
                format!("{path}.selectors[{k}].matchActions"),
                format!("{name} is not supported by lsm-agent at uprobes"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::policy::ir::{ArgType, HookOrigin, Target, UprobePoint, UprobeTarget};
    use crate::policy::testutil::*;

    fn targets(p: &crate::policy::ir::Policy) -> Vec<String> {
        p.hooks
            .iter()
            .map(|h| match &h.target {
                Target::Uprobe(u) => u.to_string(),
                t => panic!("{t}"),
            })
            .collect()
    }

    #[test]
    fn the_symbols_of_an_entry_are_one_hook_with_user_memory_arguments() {
        let p = parse_ok(fixture!("observe-bash-readline-uprobe.yaml"));
        assert_eq!(targets(&p), ["/bin/bash:readline,main"]);
        let h = &p.hooks[0];
        assert!(matches!(&h.origin, HookOrigin::Uprobe(u) if u.points.len() == 2));
        assert_eq!(h.args[0].ty, ArgType::String);
        assert_eq!(
            h.target.to_string(),
            "observed by uprobe /bin/bash:readline,main"
        );
    }

    #[test]
    fn entries_on_one_file_with_one_plan_merge_into_the_first() {
        let p = parse_ok(fixture!("uprobe-entries-sharing-a-plan.yaml"));
        assert_eq!(
            targets(&p),
            [
                "/bin/bash:readline,main,_start",
                "/bin/bash:readline",
                "/usr/bin/dash:main"
            ]
        );
        assert_eq!(p.hooks[0].spec_index, 0);
        assert_eq!(p.hooks[1].selectors.len(), 1);
        assert_eq!(p.hooks[2].spec_index, 3);
        assert_eq!(
            p.hooks[0].origin,
            HookOrigin::Uprobe(match &p.hooks[0].target {
                Target::Uprobe(u) => u.clone(),
                t => panic!("{t}"),
            })
        );
    }

    #[test]
    fn a_usdt_entry_is_a_probe_of_its_file_never_merged_with_another() {
        let p = parse_ok(fixture!("observe-usdt-probe.yaml"));
        assert_eq!(
            targets(&p),
            [
                "/usr/lib/lsm-vmtest/usdt:test:usdt3",
                "/usr/lib/lsm-vmtest/usdt:test:usdt3"
            ],
            "each entry is attached at every site of its probe: merging adds nothing"
        );
        let h = &p.hooks[0];
        assert_eq!(h.spec_path, "spec.usdts[0]");
        assert_eq!(
            h.target.to_string(),
            "observed by usdt /usr/lib/lsm-vmtest/usdt:test:usdt3"
        );
        assert!(matches!(&h.origin, HookOrigin::Uprobe(u)
            if u.points.is_empty() && u.usdt.as_ref().is_some_and(|p| p.name == "usdt3")));
        assert_eq!(
            h.args[0].ty,
            ArgType::Int {
                width: 8,
                signed: false
            }
        );
    }

    #[test]
    fn a_usdt_entry_without_a_provider_is_refused_at_its_field() {
        let e = parse_err(fixture!("usdt-without-provider.yaml"));
        assert_eq!(e.path, "spec.usdts[0].provider");
        assert!(e.message.contains("missing provider"), "{}", e.message);
    }

    #[test]
    fn usdts_are_refused_in_a_namespaced_policy() {
        let e = parse_err(fixture!("usdt-in-a-namespaced-policy.yaml"));
        assert_eq!(e.path, "spec.usdts");
        assert!(
            e.message.contains("TracingPolicyNamespaced"),
            "{}",
            e.message
        );
    }

    #[test]
    fn a_target_of_many_points_names_three_and_counts_the_others() {
        let points = (0..5)
            .map(|k| UprobePoint {
                symbol: Some(format!("f{k}")),
                offset: 0,
            })
            .chain([UprobePoint {
                symbol: None,
                offset: 0x40,
            }])
            .collect();
        let u = UprobeTarget {
            path: "/x".into(),
            points,
            usdt: None,
            in_container: false,
        };
        assert_eq!(u.to_string(), "/x:f0,f1,f2 and 3 more");
        let last = u.at(5).expect("point 5");
        assert_eq!(last.to_string(), "/x:0x40");
        assert_eq!((last.symbol(), last.offset()), ("", 0x40));
        assert_eq!(u.at(1).map(|t| t.symbol().to_string()), Some("f1".into()));
        assert!(u.at(6).is_none());
    }

    #[test]
    fn uprobe_fields_lsm_agent_does_not_implement_are_refused_where_they_are() {
        for (yaml, field) in [
            (
                "  - path: /bin/bash\n    symbols: [main]\n    refCtrOffsets: [4]\n",
                "spec.uprobes[0].refCtrOffsets",
            ),
            (
                "  - path: /bin/bash\n    symbols: [main]\n    return: true\n",
                "spec.uprobes[0].return",
            ),
            (
                "  - path: bash\n    symbols: [main]\n",
                "spec.uprobes[0].path",
            ),
            (
                "  - path: /bin/bash\n    symbols: [main]\n    offsets: [16]\n",
                "spec.uprobes[0].offsets",
            ),
            (
                "  - path: /bin/bash\n    symbols: [main]\n    args:\n    - index: 0\n      type: file\n",
                "spec.uprobes[0].args[0].type",
            ),
            (
                "  - path: /bin/bash\n    symbols: [main]\n    selectors:\n    - matchActions:\n      - action: Override\n        argError: -1\n",
                "spec.uprobes[0].selectors[0].matchActions",
            ),
        ] {
            let doc = format!(
                "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: u\nspec:\n  uprobes:\n{yaml}"
            );
            let e = parse_err(&doc);
            assert!(e.to_string().contains(field), "{yaml}: {e}");
        }
    }

    #[test]
    fn a_path_resolved_in_containers_loads_with_a_pod_selector_and_says_where() {
        let p = parse_ok(fixture!("uprobe-in-each-alliance-container.yaml"));
        let h = &p.hooks[0];
        assert!(matches!(&h.target, Target::Uprobe(u) if u.in_container));
        assert_eq!(
            h.target.to_string(),
            "observed by uprobe /lsm-vmtest-app/vmtest-uprobe:lsm_vmtest_uprobe_target in each \
             selected container"
        );
    }

    #[test]
    fn a_path_resolved_in_containers_needs_a_pod_selector_and_no_host_selector() {
        let yaml = fixture!("uprobe-in-each-alliance-container.yaml");
        let without_pods = yaml.replace(
            "  podSelector:\n    matchLabels:\n      org: alliance\n",
            "",
        );
        assert_ne!(without_pods, yaml);
        let e = parse_err(&without_pods).to_string();
        assert!(
            e.contains("spec.uprobes[0].resolvePathInContainer: needs a spec.podSelector"),
            "{e}"
        );
        let with_host = yaml.replace("  podSelector:", "  hostSelector: {}\n  podSelector:");
        let e = parse_err(&with_host).to_string();
        assert!(
            e.contains("spec.hostSelector: cannot go with spec.uprobes[0].resolvePathInContainer"),
            "{e}"
        );
    }

    #[test]
    fn offsets_are_decimal_or_hex() {
        let doc = "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: u\nspec:\n  uprobes:\n  - path: /bin/bash\n    offsets: [16, \"0x20\"]\n";
        let p = parse_ok(doc);
        let offs: Vec<Option<u64>> = match &p.hooks[..] {
            [h] => match &h.target {
                Target::Uprobe(u) => u
                    .points
                    .iter()
                    .map(|pt| pt.symbol.is_none().then_some(pt.offset))
                    .collect(),
                t => panic!("{t}"),
            },
            hs => panic!("{hs:?}"),
        };
        assert_eq!(offs, [Some(16), Some(32)]);
    }
}
