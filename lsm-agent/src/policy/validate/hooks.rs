//! `kprobes[]` and `lsmhooks[]`: the call or hook, and the parts of a hook body (args,
//! message, tags, selectors).

use lsm_shared::MAX_ARGS;

use super::args::convert_arg;
use super::selectors::convert_selector;
use super::{Invalid, VResult, invalid, non_empty, not_supported};
use crate::policy::hooks::{self, HookInfo};
use crate::policy::ir::{self, NetField};
use crate::policy::model as raw;

/// Tetragon's CRD limit on `tags`.
const MAX_TAGS: usize = 16;

/// Tetragon truncates longer messages (`TpMaxMessageLen`).
const MAX_MESSAGE_CHARS: usize = 256;

pub(super) fn convert_kprobe(
    i: usize,
    kp: &raw::Kprobe,
    warnings: &mut Vec<Invalid>,
) -> VResult<ir::Hook> {
    let path = format!("spec.kprobes[{i}]");
    if kp.call.starts_with("list:") {
        return Err(invalid(
            format!("{path}.call"),
            "list: calls are not supported yet by lsm-agent",
        ));
    }
    let Some(tr) = hooks::kprobe_call(&kp.call) else {
        return Err(invalid(
            format!("{path}.call"),
            format!(
                "unsupported call \"{}\": lsm-agent enforces at LSM hooks and translates only \
                 these kprobe calls: {}",
                kp.call,
                hooks::supported_calls()
            ),
        ));
    };
    if kp
        .return_arg_action
        .as_deref()
        .is_some_and(|a| !a.is_empty())
    {
        return Err(not_supported(format!("{path}.returnArgAction")));
    }
    if non_empty(&kp.data) {
        return Err(not_supported(format!("{path}.data")));
    }
    // `return`/`returnArg` are accepted and ignored: at an LSM hook the program's return
    // value is the verdict, there is no separate return probe.
    let map_index = |index: u32| {
        tr.lsm_index(index).ok_or_else(|| {
            let known: Vec<String> = tr
                .arg_map
                .iter()
                .map(|(k, _)| format!("{k} ({})", tr.params[*k as usize]))
                .collect();
            format!(
                "argument {index} of {} has no counterpart at LSM hook {} (usable arguments: {})",
                tr.call,
                tr.hook,
                known.join(", ")
            )
        })
    };
    convert_hook_body(
        &path,
        HookSource {
            lsm: tr.hook,
            origin: ir::HookOrigin::Kprobe {
                call: kp.call.clone(),
            },
            spec_index: i,
            tcp_only: tr.tcp_only,
            map_index: &map_index,
        },
        &raw::HookBody {
            args: &kp.args,
            selectors: &kp.selectors,
            message: &kp.message,
            tags: &kp.tags,
        },
        warnings,
    )
}

pub(super) fn convert_lsmhook(
    i: usize,
    lh: &raw::LsmHookSpec,
    warnings: &mut Vec<Invalid>,
) -> VResult<ir::Hook> {
    let path = format!("spec.lsmhooks[{i}]");
    let Some(lsm) = ir::LsmHook::from_name(&lh.hook) else {
        let hint = match lh.hook.strip_prefix("security_") {
            Some(rest) if ir::LsmHook::from_name(rest).is_some() => {
                format!(" (write \"{rest}\": lsmhooks names have no security_ prefix)")
            }
            _ => String::new(),
        };
        return Err(invalid(
            format!("{path}.hook"),
            format!(
                "unsupported LSM hook \"{}\"{hint}: lsm-agent supports {}",
                lh.hook,
                hooks::supported_hooks()
            ),
        ));
    };
    let info = hooks::hook_info(lsm);
    let map_index = |index: u32| {
        if (index as usize) < info.args.len() {
            Ok(index)
        } else {
            Err(format!(
                "hook {lsm} has no argument {index} (arguments: {})",
                describe_args(info)
            ))
        }
    };
    convert_hook_body(
        &path,
        HookSource {
            lsm,
            origin: ir::HookOrigin::LsmHook,
            spec_index: i,
            tcp_only: false,
            map_index: &map_index,
        },
        &raw::HookBody {
            args: &lh.args,
            selectors: &lh.selectors,
            message: &lh.message,
            tags: &lh.tags,
        },
        warnings,
    )
}

/// `struct file *file`, `int mask`.
pub(super) fn c_decl(a: &hooks::HookArg) -> String {
    if a.c_type.ends_with('*') {
        format!("{}{}", a.c_type, a.name)
    } else {
        format!("{} {}", a.c_type, a.name)
    }
}

fn describe_args(info: &HookInfo) -> String {
    info.args
        .iter()
        .map(|a| format!("{} ({})", a.index, c_decl(a)))
        .collect::<Vec<_>>()
        .join(", ")
}

struct HookSource<'a> {
    lsm: ir::LsmHook,
    origin: ir::HookOrigin,
    spec_index: usize,
    /// See `ir::Hook::tcp_only`.
    tcp_only: bool,
    /// YAML argument index → LSM hook argument index, or why there is none.
    map_index: &'a dyn Fn(u32) -> Result<u32, String>,
}

fn convert_hook_body(
    path: &str,
    src: HookSource<'_>,
    body: &raw::HookBody<'_>,
    warnings: &mut Vec<Invalid>,
) -> VResult<ir::Hook> {
    let info = hooks::hook_info(src.lsm);

    let raw_args = body.args.as_deref().unwrap_or_default();
    if raw_args.len() > MAX_ARGS {
        return Err(invalid(
            format!("{path}.args"),
            format!("at most {MAX_ARGS} args per hook (Tetragon's limit)"),
        ));
    }
    let mut args: Vec<ir::ArgSpec> = Vec::with_capacity(raw_args.len());
    for (j, a) in raw_args.iter().enumerate() {
        let apath = format!("{path}.args[{j}]");
        let spec = convert_arg(&apath, a, info, src.map_index)?;
        if args.iter().any(|other| other.spec_index == spec.spec_index) {
            return Err(invalid(
                format!("{apath}.index"),
                format!("arg index {} is declared twice", spec.spec_index),
            ));
        }
        args.push(spec);
    }

    let message = match body.message.as_deref() {
        None | Some("") => None,
        Some(m) if m.chars().count() > MAX_MESSAGE_CHARS => {
            warnings.push(invalid(
                format!("{path}.message"),
                format!("message longer than {MAX_MESSAGE_CHARS} characters, truncated"),
            ));
            Some(m.chars().take(MAX_MESSAGE_CHARS).collect())
        }
        Some(m) => Some(m.to_string()),
    };
    let tags = body.tags.clone().unwrap_or_default();
    if tags.len() > MAX_TAGS {
        return Err(invalid(
            format!("{path}.tags"),
            format!("at most {MAX_TAGS} tags per hook"),
        ));
    }

    let mut selectors = Vec::new();
    for (k, s) in body.selectors.iter().flatten().enumerate() {
        let spath = format!("{path}.selectors[{k}]");
        selectors.push(convert_selector(&spath, k, s, &args, warnings)?);
    }
    if src.tcp_only {
        warn_tcp_connect_source_filters(path, &selectors, warnings);
    }

    Ok(ir::Hook {
        lsm: src.lsm,
        origin: src.origin,
        spec_index: src.spec_index,
        args,
        message,
        tags,
        tcp_only: src.tcp_only,
        selectors,
    })
}

/// A `tcp_connect` kprobe runs after the kernel picked the connection's source address and
/// port; the LSM hook it is enforced at runs before, when a socket that was not bound has
/// `0.0.0.0` (`::`) and port 0 as its source. Source filters then mean something else.
fn warn_tcp_connect_source_filters(
    path: &str,
    selectors: &[ir::Selector],
    warnings: &mut Vec<Invalid>,
) {
    for (k, sel) in selectors.iter().enumerate() {
        for (j, f) in sel.match_args.iter().enumerate() {
            let what = match f.kind {
                ir::FilterKind::Addr {
                    field: NetField::Source,
                    ..
                } => "address",
                ir::FilterKind::Port {
                    field: NetField::Source,
                    ..
                } => "port",
                _ => continue,
            };
            warnings.push(invalid(
                format!("{path}.selectors[{k}].matchArgs[{j}].operator"),
                format!(
                    "source {what} filter on tcp_connect: lsm-agent enforces it at \
                     socket_connect, before the kernel picks the source, so a socket not bound \
                     before connect has source 0.0.0.0 (::) port 0 there, not the address and \
                     port tcp_connect would see"
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::policy::ir::{ArgType, LsmHook};
    use crate::policy::testutil::*;

    #[test]
    fn unknown_kprobe_call_lists_the_supported_calls() {
        let yaml = with_selector("matchActions: [{action: Post}]")
            .replace("security_file_permission", "security_inode_copy_up_xattr");
        let e = parse_err(&yaml);
        assert_eq!(e.path, "spec.kprobes[0].call");
        assert_eq!(e.line, Some(7));
        for call in [
            "security_file_open",
            "security_file_permission",
            "security_mmap_file",
            "security_path_truncate",
            "security_file_truncate",
            "security_bprm_check",
        ] {
            assert!(e.message.contains(call), "{}", e.message);
        }
    }

    #[test]
    fn lsmhooks_use_the_hook_argument_positions_directly() {
        let yaml = fixture!("mmap-file-prot-mask.yaml");
        let p = parse_ok(yaml);
        let h = &p.hooks[0];
        assert_eq!(h.lsm, LsmHook::MmapFile);
        assert_eq!((h.args[0].spec_index, h.args[0].lsm_index), (2, 2));
        assert_eq!(h.args[0].label.as_deref(), Some("prot"));
        assert_eq!(h.message.as_deref(), Some("mapping"));
        assert_eq!(h.tags, ["a"]);
        assert_eq!(h.selectors[0].label.as_deref(), Some("s0"));
        let e = parse_err(&yaml.replace("hook: mmap_file", "hook: security_file_open"));
        assert_eq!(e.path, "spec.lsmhooks[0].hook");
        assert!(e.message.contains("write \"file_open\""), "{}", e.message);
        let e = parse_err(&yaml.replace("hook: mmap_file", "hook: file_open"));
        assert!(
            e.message.contains("hook file_open has no argument 2"),
            "{}",
            e.message
        );
    }

    #[test]
    fn lsmhook_socket_connect_and_security_socket_connect_are_not_tcp_only() {
        let p = parse_ok(&with_net_selector("matchActions: [{action: Post}]"));
        assert_eq!(p.hooks[0].lsm, LsmHook::SocketConnect);
        assert!(!p.hooks[0].tcp_only);
        let p = parse_ok(fixture!("socket-connect-lsmhook-args.yaml"));
        let h = &p.hooks[0];
        assert_eq!(h.lsm, LsmHook::SocketConnect);
        assert!(!h.tcp_only);
        let types: Vec<(ArgType, &str)> = h
            .args
            .iter()
            .map(|a| (a.ty, a.type_name.as_str()))
            .collect();
        assert_eq!(
            types,
            [
                (ArgType::Sock, "socket"),
                (ArgType::Sockaddr, "sockaddr"),
                (INT32, "int")
            ]
        );
    }

    #[test]
    fn tcp_connect_without_selectors_is_tcp_only_and_accepts_type_socket() {
        let p = parse_ok(fixture!("tcp-connect-socket-arg.yaml"));
        assert!(p.hooks[0].tcp_only);
        assert!(p.hooks[0].selectors.is_empty());
        assert_eq!(p.hooks[0].args[0].ty, ArgType::Sock);
    }

    #[test]
    fn source_filters_on_tcp_connect_warn_that_unbound_sources_are_zero() {
        let yaml = net_filters_yaml(&[
            (0, "DAddr", "10.0.0.0/8"),
            (0, "SPort", "40000:50000"),
            (0, "NotSAddr", "10.0.0.1"),
        ]);
        // security_socket_connect runs before the source is picked in Tetragon too.
        assert!(parse_ok(&yaml).warnings.is_empty());
        let yaml = yaml
            .replace("security_socket_connect", "tcp_connect")
            .replace(
                "    - index: 1\n      type: sockaddr\n    - index: 2\n      type: int\n",
                "",
            );
        let p = parse_ok(&yaml);
        assert_eq!(p.warnings.len(), 2, "{:?}", p.warnings);
        for (w, (j, what)) in p.warnings.iter().zip([(1, "port"), (2, "address")]) {
            assert!(
                w.contains(&format!(
                    "spec.kprobes[0].selectors[0].matchArgs[{j}].operator: source {what} \
                     filter on tcp_connect: lsm-agent enforces it at socket_connect"
                )),
                "{w}"
            );
        }
    }

    #[test]
    fn tcp_connect_has_no_argument_1() {
        let e = parse_err(fixture!("tcp-connect-sockaddr-arg-1.yaml"));
        assert_eq!(e.path, "spec.kprobes[0].args[0].index");
        assert!(
            e.message.contains(
                "argument 1 of tcp_connect has no counterpart at LSM hook socket_connect"
            ),
            "{}",
            e.message
        );
        assert!(e.message.contains("0 (sk)"), "{}", e.message);
    }

    #[test]
    fn return_arg_on_a_translated_kprobe_is_accepted_and_ignored() {
        let yaml = with_selector("matchActions: [{action: Post}]").replace(
            "    syscall: false\n",
            "    syscall: false\n    return: true\n    returnArg:\n      index: 0\n      type: int\n",
        );
        assert!(parse_ok(&yaml).warnings.is_empty());
    }

    #[test]
    fn return_arg_without_index_loads_as_tetragons_examples_write_it() {
        let yaml = with_selector("matchActions: [{action: Post}]").replace(
            "    syscall: false\n",
            "    syscall: false\n    return: true\n    returnArg:\n      type: int\n",
        );
        assert!(parse_ok(&yaml).warnings.is_empty());
    }
}
