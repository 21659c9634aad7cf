//! `kprobes[]` and `lsmhooks[]`: the call or hook, and the parts of a hook body (args,
//! message, tags, selectors).

use lsm_shared::MAX_ARGS;

use super::args::{
    ArgSite, MAX_ARG_INDEX, check_arg_options, convert_arg, convert_data, convert_generic_arg,
};
use super::selectors::{SelectorContext, convert_selector};
use super::{Invalid, VResult, invalid};
use crate::policy::hooks::{self, HookInfo};
use crate::policy::ir::{self, NetField};
use crate::policy::lists::Lists;
use crate::policy::model as raw;
use crate::policy::syscalls::{self, SyscallArch};

/// Tetragon's CRD limit on `tags`.
const MAX_TAGS: usize = 16;

/// Tetragon truncates longer messages (`TpMaxMessageLen`).
const MAX_MESSAGE_CHARS: usize = 256;

pub(super) fn convert_kprobe(
    i: usize,
    kp: &raw::Kprobe,
    lists: &Lists,
    warnings: &mut Vec<Invalid>,
) -> VResult<ir::Hook> {
    let path = format!("spec.kprobes[{i}]");
    if kp.call.starts_with("list:") {
        return Err(invalid(
            format!("{path}.call"),
            "list: calls are not supported yet by lsm-agent",
        ));
    }
    // `Post` is what every matching call does anyway (a kretprobe's event carries the return
    // value); TrackSock/UntrackSock act on a returned socket.
    let ret_action = match kp
        .return_arg_action
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("") | Some("post") => None,
        Some("tracksock") => Some(true),
        Some("untracksock") => Some(false),
        Some(_) => {
            return Err(invalid(
                format!("{path}.returnArgAction"),
                format!(
                    "unknown returnArgAction \"{}\" (expected TrackSock, UntrackSock or Post)",
                    kp.return_arg_action.as_deref().unwrap_or_default()
                ),
            ));
        }
    };
    let data = convert_data(
        &path,
        kp.data.as_deref().unwrap_or_default(),
        kp.args.as_ref().map_or(0, Vec::len),
    )?;
    let syscall = kp.syscall == Some(true);
    let translated = if syscall {
        hooks::syscall_call(&kp.call)
    } else {
        hooks::kprobe_call(&kp.call)
    };
    let Some(tr) = translated else {
        return convert_generic_kprobe(&path, i, kp, lists, ret_action, data, warnings);
    };
    if ret_action.is_some() {
        return Err(invalid(
            format!("{path}.returnArgAction"),
            format!(
                "socket tracking is done at kretprobes; {} is enforced at LSM hook {}",
                kp.call, tr.hook
            ),
        ));
    }
    // Events name the function as Tetragon does: a syscall by this node's entry point.
    let call = match SyscallArch::host() {
        Some(arch) if syscall => syscalls::attach_symbol(&kp.call, arch).unwrap_or(kp.call.clone()),
        _ => kp.call.clone(),
    };
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
    let info = hooks::hook_info(tr.hook);
    let arg = |apath: &str, a: &raw::Arg| convert_arg(apath, a, info, &map_index);
    convert_hook_body(
        &path,
        HookSource {
            target: ir::Target::Lsm(tr.hook),
            origin: ir::HookOrigin::Kprobe { call },
            spec_index: i,
            tcp_only: tr.tcp_only,
            convert_arg: &arg,
            return_arg: None,
            data,
            lists,
        },
        &kp.body(),
        warnings,
    )
}

pub(super) fn convert_lsmhook(
    i: usize,
    lh: &raw::LsmHookSpec,
    lists: &Lists,
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
    let arg = |apath: &str, a: &raw::Arg| convert_arg(apath, a, info, &map_index);
    convert_hook_body(
        &path,
        HookSource {
            target: ir::Target::Lsm(lsm),
            origin: ir::HookOrigin::LsmHook,
            spec_index: i,
            tcp_only: false,
            convert_arg: &arg,
            return_arg: None,
            data: Vec::new(),
            lists,
        },
        &lh.body(),
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

/// An argument converter: `None` for an argument that is declared but not read (`nop`).
pub(super) type ArgConverter<'a> = &'a dyn Fn(&str, &raw::Arg) -> VResult<Option<ir::ArgSpec>>;

pub(super) struct HookSource<'a> {
    pub target: ir::Target,
    pub origin: ir::HookOrigin,
    pub spec_index: usize,
    /// See `ir::Hook::tcp_only`.
    pub tcp_only: bool,
    /// Turns `args[j]` (at the given path) into the hook's argument.
    pub convert_arg: ArgConverter<'a>,
    /// See `ir::Hook::return_arg`.
    pub return_arg: Option<ir::ArgSpec>,
    /// See `ir::Hook::data`.
    pub data: Vec<ir::ArgSpec>,
    /// The policy's `lists`, for `InMap` values that name one.
    pub lists: &'a Lists,
}

/// The syscall a `syscall: true` call names, as the portable `sys_<name>`: Tetragon accepts
/// `sys_<name>` and an architecture's wrapper (`__x64_sys_<name>`, `__arm64_sys_<name>`);
/// the loader picks the node's wrapper.
pub(crate) fn portable_syscall(call: &str) -> Option<String> {
    if let Some(rest) = call.strip_prefix("sys_") {
        return (!rest.is_empty()).then(|| call.to_string());
    }
    let rest = call.strip_prefix("__")?;
    let (arch, name) = rest.split_once("_sys_")?;
    (!arch.is_empty() && !name.is_empty() && arch.chars().all(|c| c.is_ascii_alphanumeric()))
        .then(|| format!("sys_{name}"))
}

/// A kernel symbol: what kallsyms can list (`fd_install`, `foo.isra.0`).
fn is_symbol(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// A kretprobe whose selectors `Override` the call, as two hooks: the kretprobe, where they
/// post (the event has the return value, the override's error when it applied), and a kprobe
/// on the function's entry, where the override applies, as in Tetragon (at the return the
/// function has run). The entry hook has the same selectors in the same order, so the same
/// one is the first to match, without their `matchReturnArgs` (nothing has returned yet), and
/// with only their `Override` actions; it posts nothing. Any other hook is returned as it is.
pub(super) fn split_return_override(hook: ir::Hook) -> Vec<ir::Hook> {
    let is_override = |a: &ir::Action| matches!(a, ir::Action::Override { .. });
    let ir::Target::Kprobe(k) = &hook.target else {
        return vec![hook];
    };
    if !k.ret
        || !hook
            .selectors
            .iter()
            .any(|s| s.actions.iter().any(is_override))
    {
        return vec![hook];
    }
    let entry = ir::Hook {
        target: ir::Target::Kprobe(ir::KprobeTarget {
            ret: false,
            ..k.clone()
        }),
        return_arg: None,
        selectors: hook
            .selectors
            .iter()
            .map(|s| {
                let mut actions: Vec<ir::Action> = s
                    .actions
                    .iter()
                    .filter(|a| is_override(a))
                    .cloned()
                    .collect();
                actions.push(ir::Action::NoPost);
                ir::Selector {
                    match_args: s
                        .match_args
                        .iter()
                        .filter(|f| f.lsm_index != ir::RETURN_INDEX)
                        .cloned()
                        .collect(),
                    actions,
                    ..s.clone()
                }
            })
            .collect(),
        ..hook.clone()
    };
    let ret = ir::Hook {
        selectors: hook
            .selectors
            .into_iter()
            .map(|mut s| {
                let had = s.actions.len();
                s.actions.retain(|a| !is_override(a));
                // A selector whose only action was the override still posts its call.
                if s.actions.is_empty() && had > 0 {
                    s.actions.push(ir::Action::Post {
                        rate_limit_ms: None,
                        rate_limit_scope: ir::RateLimitScope::default(),
                    });
                }
                s
            })
            .collect(),
        ..hook
    };
    vec![entry, ret]
}

/// A `kprobes[]` entry whose call has no LSM hook: observed by the generic kprobe (or, with
/// `return: true`, kretprobe) on the function itself.
fn convert_generic_kprobe(
    path: &str,
    i: usize,
    kp: &raw::Kprobe,
    lists: &Lists,
    ret_action: Option<bool>,
    data: Vec<ir::ArgSpec>,
    warnings: &mut Vec<Invalid>,
) -> VResult<ir::Hook> {
    if kp.ret == Some(true) && !data.is_empty() {
        // The kretprobe program does not read data: its evaluator's stack is at the
        // verifier's budget on 6.1.
        return Err(invalid(
            format!("{path}.data"),
            "data at a kretprobe (return: true) is not supported yet by lsm-agent",
        ));
    }
    let syscall = kp.syscall == Some(true);
    // A `returnCopy` buffer is read when the call returns: as in Tetragon, it puts the
    // kprobe on the return (one event, at the return, with every argument).
    // (`check_arg_options` refuses returnCopy on the types it does not apply to.)
    let return_copy = kp
        .args
        .iter()
        .flatten()
        .any(|a| a.return_copy == Some(true));
    let ret = kp.ret == Some(true) || return_copy;
    let function = if syscall {
        portable_syscall(&kp.call).ok_or_else(|| {
            invalid(
                format!("{path}.call"),
                format!(
                    "\"{}\" is not a syscall name: with syscall: true, write sys_<name> (or an \
                     architecture's __<arch>_sys_<name>)",
                    kp.call
                ),
            )
        })?
    } else {
        kp.call.clone()
    };
    if !is_symbol(&function) {
        return Err(invalid(
            format!("{path}.call"),
            format!("\"{}\" is not a kernel function name", kp.call),
        ));
    }
    let return_arg = match (&kp.return_arg, kp.ret == Some(true)) {
        (Some(a), true) => {
            let apath = format!("{path}.returnArg");
            check_arg_options(&apath, a, MAX_ARG_INDEX)?;
            match convert_generic_arg(
                &apath,
                a,
                ir::RETURN_INDEX,
                false,
                ArgSite::Return,
                "a return value",
            )? {
                Some(spec) if matches!(spec.ty, ir::ArgType::Int { .. }) => Some(spec),
                // A returned socket is read like an argument, in a position no declared
                // argument takes (the highest free one).
                Some(spec) if spec.ty == ir::ArgType::Sock => {
                    let taken = |p: u32| kp.args.iter().flatten().any(|a| a.index == p);
                    let Some(pos) = (0..MAX_ARGS as u32).rev().find(|&p| !taken(p)) else {
                        return Err(invalid(
                            format!("{apath}.type"),
                            format!(
                                "a sock returnArg needs one of the {MAX_ARGS} argument \
                                 positions free: this kprobe declares all of them"
                            ),
                        ));
                    };
                    Some(ir::ArgSpec {
                        lsm_index: pos,
                        ..spec
                    })
                }
                Some(spec) => {
                    return Err(invalid(
                        format!("{apath}.type"),
                        format!(
                            "type \"{}\": lsm-agent reads integer and sock return values only",
                            spec.type_name
                        ),
                    ));
                }
                None => None,
            }
        }
        // Without `return: true` there is no return probe: Tetragon ignores it too.
        _ => None,
    };
    // `returnArgAction` acts on the returned socket whenever the kretprobe's selectors match
    // (every call when it has none).
    let ret_sock = match (ret_action, &return_arg) {
        (None, _) => None,
        (Some(track), Some(r)) if r.ty == ir::ArgType::Sock => Some((track, r.lsm_index)),
        (Some(_), _) => {
            return Err(invalid(
                format!("{path}.returnArgAction"),
                "TrackSock and UntrackSock need return: true and a returnArg of type sock",
            ));
        }
    };
    let what = format!("kprobe {}", kp.call);
    let arg = |apath: &str, a: &raw::Arg| {
        check_arg_options(apath, a, MAX_ARG_INDEX)?;
        convert_generic_arg(apath, a, a.index, syscall, ArgSite::Kprobe, &what)
    };
    let mut hook = convert_hook_body(
        path,
        HookSource {
            target: ir::Target::Kprobe(ir::KprobeTarget {
                function,
                syscall,
                ret,
            }),
            origin: ir::HookOrigin::Kprobe {
                call: kp.call.clone(),
            },
            spec_index: i,
            tcp_only: false,
            convert_arg: &arg,
            return_arg,
            data,
            lists,
        },
        &kp.body(),
        warnings,
    )?;
    if let Some((track, pos)) = ret_sock {
        let action = ir::Action::SockTrack { pos, track };
        if hook.selectors.is_empty() {
            hook.selectors.push(ir::Selector::match_all());
        }
        for s in &mut hook.selectors {
            s.actions.push(action.clone());
        }
    }
    Ok(hook)
}

/// A `tracepoints[]` entry: observed by the generic tracepoint program. Argument `index`
/// counts the fields of the tracepoint's `format` file, `common_*` fields included. With
/// `raw: true` (or in `section` `spec.rawtracepoints`, `raw_section`), by the generic raw
/// tracepoint program: `index` counts the tracepoint's `TP_PROTO` arguments, read as a
/// kernel function's.
pub(super) fn convert_tracepoint(
    section: &str,
    i: usize,
    tp: &raw::Tracepoint,
    raw_section: bool,
    lists: &Lists,
    warnings: &mut Vec<Invalid>,
) -> VResult<ir::Hook> {
    let path = format!("{section}[{i}]");
    let name = |v: &Option<String>, field: &str| {
        v.clone().filter(|s| is_symbol(s)).ok_or_else(|| {
            invalid(
                format!("{path}.{field}"),
                format!("missing or invalid {field}"),
            )
        })
    };
    let subsystem = name(&tp.subsystem, "subsystem")?;
    let event = name(&tp.event, "event")?;
    let raw = raw_section || tp.raw == Some(true);
    // The `syscalls` events' pointer fields point into the caller's memory.
    let user = subsystem == "syscalls" && !raw;
    let what = if raw {
        format!("raw tracepoint {subsystem}/{event}")
    } else {
        format!("tracepoint {subsystem}/{event}")
    };
    let last = ir::TP_FIRST_FIELD + MAX_ARGS as u32 - 1;
    let arg = |apath: &str, a: &raw::Arg| {
        if raw {
            check_arg_options(apath, a, MAX_ARG_INDEX)?;
            return convert_generic_arg(apath, a, a.index, false, ArgSite::RawTracepoint, &what);
        }
        check_arg_options(apath, a, last)?;
        if a.index < ir::TP_FIRST_FIELD {
            return Err(invalid(
                format!("{apath}.index"),
                format!(
                    "field {} is a common_* field of every tracepoint record; lsm-agent reads \
                     the event's own fields, {} to {last}",
                    a.index,
                    ir::TP_FIRST_FIELD
                ),
            ));
        }
        let spec = convert_generic_arg(
            apath,
            a,
            a.index - ir::TP_FIRST_FIELD,
            user,
            ArgSite::Tracepoint,
            &what,
        )?;
        if spec
            .as_ref()
            .is_some_and(|s| s.ty == ir::ArgType::String && s.resolve.is_none())
            && !user
        {
            return Err(invalid(
                format!("{apath}.type"),
                format!(
                    "string fields of {what} are not read by lsm-agent yet (only the \
                     syscalls tracepoints' string pointers are; with raw: true a char * \
                     argument is)"
                ),
            ));
        }
        Ok(spec)
    };
    let target = if raw {
        ir::Target::RawTracepoint {
            subsystem: subsystem.clone(),
            event: event.clone(),
        }
    } else {
        ir::Target::Tracepoint {
            subsystem: subsystem.clone(),
            event: event.clone(),
        }
    };
    convert_hook_body(
        &path,
        HookSource {
            target,
            origin: ir::HookOrigin::Tracepoint { subsystem, event },
            spec_index: i,
            tcp_only: false,
            convert_arg: &arg,
            return_arg: None,
            data: Vec::new(),
            lists,
        },
        &tp.body(),
        warnings,
    )
}

pub(super) fn convert_hook_body(
    path: &str,
    src: HookSource<'_>,
    body: &raw::HookBody<'_>,
    warnings: &mut Vec<Invalid>,
) -> VResult<ir::Hook> {
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
        let Some(spec) = (src.convert_arg)(&apath, a)? else {
            continue;
        };
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
    let cx = SelectorContext {
        args: &args,
        target: &src.target,
        ret: src.return_arg.as_ref(),
        data: &src.data,
        lists: src.lists,
    };
    for (k, s) in body.selectors.iter().flatten().enumerate() {
        let spath = format!("{path}.selectors[{k}]");
        selectors.push(convert_selector(&spath, k, s, &cx, warnings)?);
    }
    if src.tcp_only {
        warn_tcp_connect_source_filters(path, &selectors, warnings);
    }

    Ok(ir::Hook {
        target: src.target,
        origin: src.origin,
        spec_index: src.spec_index,
        spec_path: path.to_string(),
        args,
        return_arg: src.return_arg,
        data: src.data,
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
    use super::portable_syscall;
    use crate::policy::ir::{ArgType, HookOrigin, KprobeTarget, LsmHook, RETURN_INDEX, Target};
    use crate::policy::testutil::*;

    #[test]
    fn a_call_without_an_lsm_hook_is_observed_by_a_kprobe_on_the_function_itself() {
        let yaml = with_selector("matchActions: [{action: Post}]")
            .replace("security_file_permission", "security_inode_copy_up_xattr");
        let p = parse_ok(&yaml);
        let h = &p.hooks[0];
        assert_eq!(
            h.target,
            Target::Kprobe(KprobeTarget {
                function: "security_inode_copy_up_xattr".into(),
                syscall: false,
                ret: false
            })
        );
        assert_eq!(
            h.target.to_string(),
            "observed by kprobe security_inode_copy_up_xattr"
        );
        // Kprobe arguments keep their own positions.
        let pos: Vec<(u32, u32)> = h.args.iter().map(|a| (a.spec_index, a.lsm_index)).collect();
        assert_eq!(pos, [(0, 0), (1, 1)]);
    }

    #[test]
    fn a_call_that_is_no_kernel_symbol_is_a_located_error() {
        let yaml = with_selector("matchActions: [{action: Post}]")
            .replace("security_file_permission", "\"not a symbol\"");
        let e = parse_err(&yaml);
        assert_eq!(e.path, "spec.kprobes[0].call");
        assert_eq!(e.line, Some(7));
        assert!(
            e.message.contains("not a kernel function name"),
            "{}",
            e.message
        );
    }

    #[test]
    fn syscall_calls_keep_the_portable_sys_name_whatever_the_arch_prefix() {
        assert_eq!(
            portable_syscall("sys_setuid").as_deref(),
            Some("sys_setuid")
        );
        assert_eq!(
            portable_syscall("__x64_sys_linkat").as_deref(),
            Some("sys_linkat")
        );
        assert_eq!(
            portable_syscall("__arm64_sys_openat").as_deref(),
            Some("sys_openat")
        );
        assert_eq!(portable_syscall("fd_install"), None);
        assert_eq!(portable_syscall("sys_"), None);
        let p = parse_ok(fixture!("observe-commit-creds-and-setuid.yaml"));
        let Target::Kprobe(k) = &p.hooks[0].target else {
            panic!("{:?}", p.hooks[0].target)
        };
        assert_eq!((k.function.as_str(), k.syscall), ("sys_setuid", true));
    }

    #[test]
    fn sys_socket_with_syscall_true_is_enforced_at_socket_create_and_named_by_its_entry_point() {
        let p = parse_ok(fixture!("deny-af-alg-sockets-of-python.yaml"));
        let h = &p.hooks[0];
        assert_eq!(h.target, Target::Lsm(LsmHook::SocketCreate));
        if cfg!(target_arch = "x86_64") {
            assert_eq!(
                h.origin,
                HookOrigin::Kprobe {
                    call: "__x64_sys_socket".into()
                }
            );
        }
        let pos: Vec<(u32, u32)> = h.args.iter().map(|a| (a.spec_index, a.lsm_index)).collect();
        assert_eq!(pos, [(0, 0), (1, 1), (2, 2)]);
        // Without `syscall: true` the name is a kernel function of its own, observed as such.
        let yaml = fixture!("deny-af-alg-sockets-of-python.yaml")
            .replace("syscall: true", "syscall: false")
            .replace("action: Override\n        argError: -1", "action: Post");
        let p = parse_ok(&yaml);
        assert_eq!(
            p.hooks[0].target.to_string(),
            "observed by kprobe sys_socket"
        );
    }

    #[test]
    fn module_reads_and_loads_are_enforced_at_their_lsm_hooks() {
        let p = parse_ok(fixture!("deny-module-loading-of-python.yaml"));
        assert_eq!(p.hooks[0].target, Target::Lsm(LsmHook::KernelReadFile));
        assert_eq!(p.hooks[1].target, Target::Lsm(LsmHook::KernelLoadData));
        assert_eq!(p.hooks[0].args[0].ty, ArgType::File);
    }

    #[test]
    fn syscall_string_arguments_are_user_strings_and_unread_types_name_the_type() {
        let p = parse_ok(fixture!("observe-openat-return.yaml"));
        let h = &p.hooks[0];
        assert_eq!(h.target.to_string(), "observed by kretprobe sys_openat");
        assert_eq!(h.args[0].ty, ArgType::String);
        let ret = h.return_arg.as_ref().expect("returnArg");
        assert_eq!(
            (ret.lsm_index, ret.type_name.as_str()),
            (RETURN_INDEX, "int")
        );
        // matchReturnArgs becomes a numeric filter on the return value.
        let f = h.selectors[0].match_args.last().expect("return filter");
        assert_eq!(f.lsm_index, RETURN_INDEX);
        let yaml =
            fixture!("observe-openat-return.yaml").replace("type: string", "type: net_device");
        let e = parse_err(&yaml);
        assert_eq!(e.path, "spec.kprobes[0].args[0].type");
        assert!(
            e.message.contains("\"net_device\" is not read"),
            "{}",
            e.message
        );
    }

    #[test]
    fn char_buf_lengths_come_from_size_arg_index_or_the_return_value_which_moves_the_probe_to_the_return()
     {
        let p = parse_ok(fixture!("observe-write-and-read-buffers.yaml"));
        let (write, read) = (&p.hooks[0], &p.hooks[1]);
        assert_eq!(write.target.to_string(), "observed by kprobe sys_write");
        assert_eq!(write.args[1].ty, ArgType::Buffer { size: 3 });
        assert_eq!(read.target.to_string(), "observed by kretprobe sys_read");
        assert_eq!(
            read.args[1].ty,
            ArgType::Buffer {
                size: lsm_shared::SIZE_RETVAL
            }
        );
        // returnCopy alone makes no return value an argument.
        assert!(read.return_arg.is_none());
    }

    #[test]
    fn an_int32_array_has_its_size_and_with_return_copy_moves_the_probe_to_the_return() {
        let yaml = fixture!("observe-pipe2-fds.yaml");
        let p = parse_ok(yaml);
        assert_eq!(
            p.hooks[0].target.to_string(),
            "observed by kretprobe sys_pipe2"
        );
        assert_eq!(p.hooks[0].args[0].ty, ArgType::Int32Array { count: 2 });
        // Read where the call starts without returnCopy.
        let p = parse_ok(&yaml.replace("      returnCopy: true\n", ""));
        assert_eq!(
            p.hooks[0].target.to_string(),
            "observed by kprobe sys_pipe2"
        );
        for (from, to, path, says) in [
            ("size: 2", "size: 256", "args[0].size", "at most 255"),
            (
                "      - index: 1\n",
                "      - index: 0\n",
                "selectors[0].matchArgs[0].operator",
                "not supported on this argument",
            ),
            (
                "      label: flags",
                "      label: flags\n      size: 4",
                "args[1].size",
                "size on a type other than int32_arr",
            ),
        ] {
            let e = parse_err(&yaml.replacen(from, to, 1));
            assert_eq!(e.path, format!("spec.kprobes[0].{path}"), "{to}");
            assert!(e.message.contains(says), "{}", e.message);
        }
    }

    #[test]
    fn an_override_at_a_kretprobe_applies_at_the_entry_and_the_kretprobe_posts() {
        use crate::policy::ir::{Action, RETURN_INDEX};
        let p = parse_ok(fixture!(
            "override-hardlinks-to-lsm-vmtest-secret-return.yaml"
        ));
        assert!(
            p.warnings.is_empty(),
            "argError 1 is kept: {:?}",
            p.warnings
        );
        let [entry, ret] = &p.hooks[..] else {
            panic!("two hooks: {:?}", p.hooks)
        };
        assert_eq!(entry.target.to_string(), "observed by kprobe sys_linkat");
        assert_eq!(ret.target.to_string(), "observed by kretprobe sys_linkat");
        // The entry: the argument filter, not the return's; the override, no event.
        let s = &entry.selectors[0];
        assert_eq!(s.match_args.len(), 1);
        assert_ne!(s.match_args[0].lsm_index, RETURN_INDEX);
        assert_eq!(
            s.actions,
            vec![Action::Override { error: 1 }, Action::NoPost]
        );
        assert!(entry.return_arg.is_none());
        // The return: both filters, and it posts.
        let s = &ret.selectors[0];
        assert_eq!(s.match_args.len(), 2);
        assert!(
            matches!(s.actions[..], [Action::Post { .. }]),
            "{:?}",
            s.actions
        );
        assert!(ret.return_arg.is_some());
        // At an LSM hook the kernel takes errnos only.
        let lsm = fixture!("deny-cap-sys-admin-capset-of-python.yaml");
        let p = parse_ok(&lsm.replacen("argError: -1", "argError: 1", 1));
        assert!(
            p.warnings.iter().any(|w| w.contains("outside [-4095, 0]")),
            "{:?}",
            p.warnings
        );
    }

    #[test]
    fn a_raw_tracepoint_reads_its_tp_proto_arguments_by_position() {
        use crate::policy::ir::Target;
        let yaml = fixture!("observe-exec-raw-tracepoint.yaml");
        let p = parse_ok(yaml);
        let raw = Target::RawTracepoint {
            subsystem: "sched".into(),
            event: "sched_process_exec".into(),
        };
        assert_eq!(p.hooks[0].target, raw);
        assert_eq!(p.hooks[0].args[0].lsm_index, 2);
        assert_eq!(p.hooks[0].args[0].ty, ArgType::LinuxBinprm);
        // Tetragon's first spelling, its rawtp.yaml example: a section of its own.
        let section = yaml
            .replace("  tracepoints:", "  rawtracepoints:")
            .replace("    raw: true\n", "");
        assert_eq!(parse_ok(&section).hooks[0].target, raw);
        // Indexes count TP_PROTO's arguments, at most 5 of them; errors name the section.
        let e = parse_err(&section.replace("index: 2", "index: 5"));
        assert_eq!(e.path, "spec.rawtracepoints[0].args[0].index");
        // Without raw, index 2 is a common_* field of the record.
        let e = parse_err(&yaml.replace("    raw: true\n", ""));
        assert!(e.message.contains("common_* field"), "{}", e.message);
    }

    #[test]
    fn a_dns_argument_is_matched_with_the_string_operators() {
        let yaml = fixture!("observe-dns-queries-for-lsm-vmtest.yaml");
        let p = parse_ok(yaml);
        assert_eq!(p.hooks[0].args[1].ty, ArgType::Dns);
        let e = parse_err(&yaml.replace("operator: Postfix", "operator: GreaterThan"));
        assert_eq!(e.path, "spec.kprobes[0].selectors[0].matchArgs[1].operator");
        assert!(e.message.contains("string operators"), "{}", e.message);
    }

    #[test]
    fn a_cred_argument_is_read_at_a_kprobe_and_takes_no_operator() {
        let p = parse_ok(fixture!("observe-commit-creds-cred.yaml"));
        assert_eq!(p.hooks[0].args[0].ty, ArgType::Cred);
        let yaml = fixture!("observe-commit-creds-cred.yaml").replace(
            "    selectors:\n",
            "    selectors:\n    - matchArgs:\n      - index: 0\n        operator: Equal\n        values: [\"0\"]\n",
        );
        let e = parse_err(&yaml);
        assert_eq!(e.path, "spec.kprobes[0].selectors[0].matchArgs[0].operator");
        assert!(e.message.contains("no operator applies"), "{}", e.message);
    }

    #[test]
    fn buffer_options_are_refused_where_they_cannot_apply() {
        let yaml = fixture!("observe-write-and-read-buffers.yaml");
        let tp = fixture!("observe-raw-sys-enter-getpid.yaml");
        for (to, field, says) in [
            (
                "type: char_buf\n      returnCopy: true",
                "returnCopy",
                "has no return",
            ),
            (
                "type: char_buf\n      sizeArgIndex: 2",
                "sizeArgIndex",
                "kprobes only",
            ),
        ] {
            let e = parse_err(&tp.replacen("type: int64", to, 1));
            assert_eq!(e.path, format!("spec.tracepoints[0].args[0].{field}"));
            assert!(e.message.contains(says), "{}", e.message);
        }
        for (from, to, path, says) in [
            (
                "sizeArgIndex: 3",
                "sizeArgIndex: 6",
                "spec.kprobes[0].args[1].sizeArgIndex",
                "out of range",
            ),
            (
                "      type: size_t\n    selectors:\n    - matchArgs:\n      - index: 1",
                "      type: size_t\n      sizeArgIndex: 1\n    selectors:\n    - matchArgs:\n      - index: 1",
                "spec.kprobes[0].args[2].sizeArgIndex",
                "on a \"size_t\" argument is not supported yet",
            ),
            (
                "    - index: 0\n      type: int\n    - index: 1\n      type: char_buf\n      returnCopy",
                "    - index: 0\n      type: int\n      returnCopy: true\n    - index: 1\n      type: char_buf\n      returnCopy",
                "spec.kprobes[1].args[0].returnCopy",
                "on a \"int\" argument is not supported yet",
            ),
        ] {
            let e = parse_err(&yaml.replacen(from, to, 1));
            assert_eq!(e.path, path, "{from}");
            assert!(e.message.contains(says), "{}", e.message);
        }
    }

    #[test]
    fn match_return_args_need_return_and_a_return_arg() {
        let yaml = fixture!("observe-openat-return.yaml").replace("    return: true\n", "");
        let e = parse_err(&yaml);
        assert_eq!(e.path, "spec.kprobes[0].selectors[0].matchReturnArgs");
        assert!(e.message.contains("return: true"), "{}", e.message);
    }

    #[test]
    fn tracepoint_fields_count_the_common_fields_and_take_positions_after_them() {
        let p = parse_ok(fixture!("observe-raw-sys-enter-getpid.yaml"));
        let h = &p.hooks[0];
        assert_eq!(
            h.origin,
            HookOrigin::Tracepoint {
                subsystem: "raw_syscalls".into(),
                event: "sys_enter".into()
            }
        );
        assert_eq!(
            h.target.to_string(),
            "observed by tracepoint raw_syscalls/sys_enter"
        );
        assert_eq!((h.args[0].spec_index, h.args[0].lsm_index), (4, 0));
        let yaml = fixture!("observe-raw-sys-enter-getpid.yaml").replace("index: 4", "index: 2");
        let e = parse_err(&yaml);
        assert_eq!(e.path, "spec.tracepoints[0].args[0].index");
        assert!(e.message.contains("common_*"), "{}", e.message);
    }

    #[test]
    fn lsmhooks_use_the_hook_argument_positions_directly() {
        let yaml = fixture!("mmap-file-prot-mask.yaml");
        let p = parse_ok(yaml);
        let h = &p.hooks[0];
        assert_eq!(h.target, Target::Lsm(LsmHook::MmapFile));
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
        assert_eq!(p.hooks[0].target, Target::Lsm(LsmHook::SocketConnect));
        assert!(!p.hooks[0].tcp_only);
        let p = parse_ok(fixture!("socket-connect-lsmhook-args.yaml"));
        let h = &p.hooks[0];
        assert_eq!(h.target, Target::Lsm(LsmHook::SocketConnect));
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

    #[test]
    fn socket_tracking_is_refused_where_the_call_is_enforced_at_an_lsm_hook() {
        let e = parse_err(&with_selector(
            "matchActions: [{action: TrackSock, argSock: 0}]",
        ));
        assert!(
            e.message.contains("socket tracking is done at kprobes"),
            "{}",
            e.message
        );
        let yaml = with_selector("matchActions: [{action: Post}]").replace(
            "    syscall: false\n",
            "    syscall: false\n    returnArgAction: TrackSock\n",
        );
        let e = parse_err(&yaml);
        assert!(e.message.contains("done at kretprobes"), "{}", e.message);
    }

    #[test]
    fn untrack_sock_must_name_a_declared_sock_argument() {
        let yaml = fixture!("observe-udp-sends-of-tracked-sockets.yaml")
            .replace("argSock: 0", "argSock: 1");
        let e = parse_err(&yaml);
        assert!(
            e.message
                .contains("argSock 1 is not a declared argument of type sock"),
            "{}",
            e.message
        );
        assert!(e.message.contains("argSock"), "{}", e.message);
    }
}
