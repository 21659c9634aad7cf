//! `uprobes[]`: functions of an executable or library, observed by the generic uprobe
//! program. Each symbol (or offset) of an entry is a hook of its own, as in Tetragon.

use serde_yaml::Value;

use super::args::{ArgSite, MAX_ARG_INDEX, check_arg_options, convert_generic_arg};
use super::hooks::{HookSource, convert_hook_body};
use super::{Invalid, VResult, invalid, not_supported};
use crate::policy::ir;
use crate::policy::lists::Lists;
use crate::policy::model as raw;

/// The hooks of `spec.uprobes[i]`: one per symbol or offset.
pub(super) fn convert_uprobe(
    i: usize,
    up: &raw::Uprobe,
    lists: &Lists,
    warnings: &mut Vec<Invalid>,
) -> VResult<Vec<ir::Hook>> {
    let path = format!("spec.uprobes[{i}]");
    refuse_unsupported(&path, up)?;
    let file = match up.path.as_deref() {
        Some(p) if p.starts_with('/') => p.to_string(),
        Some(p) => {
            return Err(invalid(
                format!("{path}.path"),
                format!("\"{p}\" is not an absolute path"),
            ));
        }
        None => return Err(invalid(format!("{path}.path"), "missing path")),
    };
    let locations = locations(&path, up)?;
    let mut hooks = Vec::with_capacity(locations.len());
    for (symbol, offset) in locations {
        let target = ir::UprobeTarget {
            path: file.clone(),
            symbol,
            offset,
        };
        let what = format!("uprobe {target}");
        let arg = |apath: &str, a: &raw::Arg| {
            check_arg_options(apath, a, MAX_ARG_INDEX)?;
            convert_generic_arg(apath, a, a.index, true, ArgSite::Uprobe, &what)
        };
        let hook = convert_hook_body(
            &path,
            HookSource {
                target: ir::Target::Uprobe(target.clone()),
                origin: ir::HookOrigin::Uprobe(target),
                spec_index: i,
                tcp_only: false,
                convert_arg: &arg,
                return_arg: None,
                lists,
            },
            &up.body(),
            warnings,
        )?;
        refuse_actions(&path, &hook)?;
        hooks.push(hook);
    }
    Ok(hooks)
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
    set(
        up.resolve_path_in_container == Some(true),
        "resolvePathInContainer",
    )?;
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
fn locations(path: &str, up: &raw::Uprobe) -> VResult<Vec<(Option<String>, u64)>> {
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
        out.push((Some(s), 0));
    }
    for (k, v) in offsets.iter().enumerate() {
        let off = offset_value(v).ok_or_else(|| {
            invalid(
                format!("{path}.offsets[{k}]"),
                "an offset is a non-negative integer (decimal or 0x hex)",
            )
        })?;
        out.push((None, off));
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
    use crate::policy::ir::{ArgType, HookOrigin, Target, UprobeTarget};
    use crate::policy::testutil::*;

    #[test]
    fn each_symbol_of_a_uprobe_is_a_hook_with_user_memory_arguments() {
        let p = parse_ok(fixture!("observe-bash-readline-uprobe.yaml"));
        let targets: Vec<String> = p
            .hooks
            .iter()
            .map(|h| match &h.target {
                Target::Uprobe(u) => u.to_string(),
                t => panic!("{t}"),
            })
            .collect();
        assert_eq!(targets, ["/bin/bash:readline", "/bin/bash:main"]);
        let h = &p.hooks[0];
        assert!(matches!(h.origin, HookOrigin::Uprobe(UprobeTarget { .. })));
        assert_eq!(h.args[0].ty, ArgType::String);
        assert_eq!(
            h.target.to_string(),
            "observed by uprobe /bin/bash:readline"
        );
    }

    #[test]
    fn uprobe_fields_lsm_agent_does_not_implement_are_refused_where_they_are() {
        for (yaml, field) in [
            (
                "  - path: /bin/bash\n    symbols: [main]\n    resolvePathInContainer: true\n",
                "spec.uprobes[0].resolvePathInContainer",
            ),
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
    fn offsets_are_decimal_or_hex() {
        let doc = "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: u\nspec:\n  uprobes:\n  - path: /bin/bash\n    offsets: [16, \"0x20\"]\n";
        let p = parse_ok(doc);
        let offs: Vec<Option<u64>> = p
            .hooks
            .iter()
            .map(|h| match &h.target {
                Target::Uprobe(u) if u.symbol.is_none() => Some(u.offset),
                _ => None,
            })
            .collect();
        assert_eq!(offs, [Some(16), Some(32)]);
    }
}
