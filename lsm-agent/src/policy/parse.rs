//! YAML text → [`ir::Policy`]: a strict serde model of Tetragon's `TracingPolicy` CRD, then
//! validation and translation to the LSM hooks the agent enforces at.
//!
//! The serde model accepts every field of the Tetragon schema (unknown fields are rejected,
//! as Tetragon does). Fields the agent does not implement are rejected during validation with
//! an error that names them, never silently dropped: a policy that loads must mean what it
//! says.

use std::path::Path;

use lsm_shared::{ADDR_ENTRIES, LPM_STR_LEN, MAX_ARGS, NUM_FILTER_VALUES, STR_LEN};

use super::env;
use super::error::PolicyError;
use super::hooks::{self, DeclaredType, HookInfo};
use super::ir::{self, AddrValue, ArgType, NetField, NumOp, SockAttr, StrOp};
use super::locate::Locator;

/// Parses and validates one policy document. `file` is only used in errors and warnings.
///
/// The text is taken as it is: `${VAR}` references are not expanded. This is what a server
/// receiving a policy over gRPC must do, since the client's environment is not its own.
pub fn parse_policy(source: &str, file: &Path) -> Result<ir::Policy, PolicyError> {
    parse_mapped(source, file, &|line, column| (line, column))
}

/// Like [`parse_policy`], but first expands `${NAME}` references with `lookup` (see
/// [`super::env`]). An unset variable is an error at its `${`; errors and warnings found
/// after expansion are reported at their position in `source`, not in the expanded text.
pub fn parse_policy_with_env(
    source: &str,
    file: &Path,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<ir::Policy, PolicyError> {
    let expansion = env::expand_env(source, file, lookup)?;
    if !expansion.changed() {
        return parse_policy(source, file);
    }
    parse_mapped(expansion.text(), file, &|line, column| {
        expansion.original_position(line, column)
    })
}

/// Reads a policy file and parses it with `${VAR}` expanded from the process environment,
/// as the agent's `--tracing-policy` and `lsmctl tracingpolicy check` load files.
pub fn parse_policy_file(path: &Path) -> Result<ir::Policy, PolicyError> {
    let source = std::fs::read_to_string(path)
        .map_err(|e| PolicyError::new(path, "", format!("cannot read policy file: {e}")))?;
    parse_policy_with_env(&source, path, |name| std::env::var(name).ok())
}

/// Maps a 1-based (line, column) of the parsed text to the one reported to the user.
type PosMap<'a> = &'a dyn Fn(usize, usize) -> (usize, usize);

fn remap(mut e: PolicyError, map: PosMap<'_>) -> PolicyError {
    if let (Some(line), Some(column)) = (e.line, e.column) {
        let (line, column) = map(line, column);
        e.line = Some(line);
        e.column = Some(column);
    }
    e
}

fn parse_mapped(source: &str, file: &Path, map: PosMap<'_>) -> Result<ir::Policy, PolicyError> {
    let (policy, warnings) = parse_located(source, file).map_err(|e| remap(e, map))?;
    let warnings = warnings
        .into_iter()
        .map(|w| remap(w, map).to_string())
        .collect();
    Ok(ir::Policy { warnings, ..policy })
}

/// The policy and its warnings, with positions in `source`.
fn parse_located(source: &str, file: &Path) -> Result<(ir::Policy, Vec<PolicyError>), PolicyError> {
    // Tetragon dispatches on `kind` before the strict parse, so an unknown kind is reported
    // as such even if the rest of the document would not parse.
    let head: raw::Head = serde_yaml::from_str(source).map_err(|e| {
        let mut e = serde_error(e, source, file);
        // serde names the helper struct; say what the document should have been instead.
        e.message = e.message.replace(
            "struct Head",
            "a mapping with apiVersion, kind, metadata and spec",
        );
        e
    })?;
    let kind = match head.kind.as_deref() {
        Some("TracingPolicy") => ir::PolicyKind::TracingPolicy,
        Some("TracingPolicyNamespaced") => ir::PolicyKind::TracingPolicyNamespaced,
        Some(other) => {
            return Err(located(
                source,
                file,
                "kind",
                format!("unknown CRD kind: {other}"),
            ));
        }
        None => {
            return Err(PolicyError::new(
                file,
                "kind",
                "missing kind (expected TracingPolicy or TracingPolicyNamespaced)",
            ));
        }
    };
    let doc: raw::Policy =
        serde_yaml::from_str(source).map_err(|e| serde_error(e, source, file))?;

    let mut warnings = Vec::new();
    let policy = convert(&doc, kind, &mut warnings)
        .map_err(|inv| located(source, file, &inv.path, inv.message))?;

    let locator = (!warnings.is_empty()).then(|| Locator::new(source));
    let warnings = warnings
        .into_iter()
        .map(|inv| {
            let mut e = PolicyError::new(file, inv.path, inv.message);
            if let Some(p) = locator.as_ref().and_then(|l| l.position(&e.path)) {
                e = e.at(p.line, p.column);
            }
            e
        })
        .collect();
    Ok((policy, warnings))
}

fn located(source: &str, file: &Path, path: &str, message: String) -> PolicyError {
    let e = PolicyError::new(file, path, message);
    match Locator::new(source).position(path) {
        Some(p) => e.at(p.line, p.column),
        None => e,
    }
}

/// serde_yaml renders errors as `<path>: <message> at line L column C`; split that back into
/// the parts of a [`PolicyError`].
fn serde_error(err: serde_yaml::Error, source: &str, file: &Path) -> PolicyError {
    let mut text = err.to_string();
    let mut e = PolicyError::new(file, "", "");
    if let Some(loc) = err.location() {
        let suffix = format!(" at line {} column {}", loc.line(), loc.column());
        if let Some(stripped) = text.strip_suffix(&suffix) {
            text = stripped.to_string();
        } else {
            // Syntax errors go on after the position ("..., while parsing a block mapping at
            // ..."); the position is already in front, so drop the repetition.
            text = text.replacen(&suffix, "", 1);
        }
        e = e.at(loc.line(), loc.column());
    }
    // A path has no spaces; messages such as "invalid type: ..." do.
    if let Some((path, msg)) = text.split_once(": ")
        && !path.is_empty()
        && !path.contains(char::is_whitespace)
        && !path.contains('`')
    {
        e.path = path.to_string();
        e.message = msg.to_string();
    } else {
        e.message = text;
        // A syntax error has no path from serde; name the collection it was found in.
        if e.line.is_some()
            && let Some(p) = Locator::new(source).syntax_error_path()
        {
            e.path = p.to_string();
        }
    }
    e
}

/// A validation failure at a YAML path, located in the source afterwards.
#[derive(Debug)]
struct Invalid {
    path: String,
    message: String,
}

fn invalid(path: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid {
        path: path.into(),
        message: message.into(),
    }
}

fn not_supported(path: impl Into<String>) -> Invalid {
    invalid(path, "not supported yet by lsm-agent")
}

type VResult<T> = Result<T, Invalid>;

/// Tetragon's CRD limit on `tags`.
const MAX_TAGS: usize = 16;
/// Tetragon truncates longer messages (`TpMaxMessageLen`).
const MAX_MESSAGE_CHARS: usize = 256;
/// Tetragon's `MAX_ACTIONS`.
const MAX_ACTIONS: usize = 3;
/// Tetragon's `MAX_MATCH_VALUES` for numeric operators.
const MAX_NUM_VALUES: usize = 4;
/// Highest `args[].index` (Tetragon's `MAX_POSSIBLE_ARGS` - 1).
const MAX_ARG_INDEX: u32 = 4;

fn convert(
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
                "TracingPolicyNamespaced without Kubernetes: the policy applies to every \
                 process on the node (as Tetragon does without the Kubernetes API)",
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
    let mode = policy_mode(spec)?;

    let mut hooks = Vec::new();
    for (i, kp) in spec.kprobes.iter().flatten().enumerate() {
        hooks.push(convert_kprobe(i, kp, warnings)?);
    }
    for (i, lh) in spec.lsmhooks.iter().flatten().enumerate() {
        hooks.push(convert_lsmhook(i, lh, warnings)?);
    }
    if hooks.is_empty() {
        warnings.push(invalid(
            "spec",
            "the policy has no kprobes or lsmhooks: it does nothing",
        ));
    }
    Ok(ir::Policy {
        name,
        kind,
        namespace,
        mode,
        hooks,
        warnings: Vec::new(),
    })
}

fn non_empty<T>(v: &Option<Vec<T>>) -> bool {
    v.as_ref().is_some_and(|v| !v.is_empty())
}

fn check_spec_unsupported(
    spec: &raw::Spec,
    kind: ir::PolicyKind,
    warnings: &mut Vec<Invalid>,
) -> VResult<()> {
    if non_empty(&spec.tracepoints) {
        return Err(not_supported("spec.tracepoints"));
    }
    if non_empty(&spec.uprobes) {
        return Err(not_supported("spec.uprobes"));
    }
    if non_empty(&spec.usdts) {
        return Err(not_supported("spec.usdts"));
    }
    if non_empty(&spec.fentries) {
        return Err(invalid(
            "spec.fentries",
            "not supported yet by lsm-agent (use kprobes or lsmhooks)",
        ));
    }
    if spec.loader == Some(true) {
        return Err(not_supported("spec.loader"));
    }
    if spec.pod_selector.is_some() {
        return Err(invalid(
            "spec.podSelector",
            "not supported yet by lsm-agent (pod filtering needs Kubernetes)",
        ));
    }
    if spec.container_selector.is_some() {
        return Err(invalid(
            "spec.containerSelector",
            "not supported yet by lsm-agent (container filtering needs Kubernetes)",
        ));
    }
    if let Some(hs) = &spec.host_selector {
        if kind == ir::PolicyKind::TracingPolicyNamespaced {
            return Err(invalid(
                "spec.hostSelector",
                "must be null in a TracingPolicyNamespaced",
            ));
        }
        if non_empty(&hs.match_expressions)
            || hs.match_labels.as_ref().is_some_and(|m| !m.is_empty())
        {
            return Err(invalid(
                "spec.hostSelector",
                "only null or {} is allowed (host workloads have no labels)",
            ));
        }
        return Err(not_supported("spec.hostSelector"));
    }
    if spec.node_selector.is_some() {
        warnings.push(invalid(
            "spec.nodeSelector",
            "ignored: nodeSelector only applies to policies managed through Kubernetes",
        ));
    }
    if non_empty(&spec.lists) {
        return Err(not_supported("spec.lists"));
    }
    if non_empty(&spec.enforcers) {
        return Err(not_supported("spec.enforcers"));
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

fn convert_kprobe(i: usize, kp: &raw::Kprobe, warnings: &mut Vec<Invalid>) -> VResult<ir::Hook> {
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

fn convert_lsmhook(
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
fn c_decl(a: &hooks::HookArg) -> String {
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

fn convert_arg(
    apath: &str,
    a: &raw::Arg,
    info: &HookInfo,
    map_index: &dyn Fn(u32) -> Result<u32, String>,
) -> VResult<ir::ArgSpec> {
    if a.index > MAX_ARG_INDEX {
        return Err(invalid(
            format!("{apath}.index"),
            format!(
                "arg index {} is out of range (at most {MAX_ARG_INDEX})",
                a.index
            ),
        ));
    }
    let set = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.is_empty());
    if set(&a.resolve) {
        return Err(not_supported(format!("{apath}.resolve")));
    }
    if a.size_arg_index.is_some_and(|n| n != 0) {
        return Err(not_supported(format!("{apath}.sizeArgIndex")));
    }
    if a.return_copy == Some(true) {
        return Err(not_supported(format!("{apath}.returnCopy")));
    }
    if a.max_data == Some(true) {
        return Err(not_supported(format!("{apath}.maxData")));
    }
    if set(&a.source) {
        return Err(not_supported(format!("{apath}.source")));
    }
    if set(&a.btf_type) {
        return Err(not_supported(format!("{apath}.btfType")));
    }
    if set(&a.btf_type_module) {
        return Err(not_supported(format!("{apath}.btfTypeModule")));
    }
    let lsm_index = map_index(a.index).map_err(|m| invalid(format!("{apath}.index"), m))?;
    let hook_arg = &info.args[lsm_index as usize];

    let type_name = a.ty.as_deref().unwrap_or("auto");
    let tpath = format!("{apath}.type");
    let (ty, type_name) = match hooks::declared_type(type_name) {
        Some(DeclaredType::Auto) => (hook_arg.ty, hook_arg.type_name.to_string()),
        Some(DeclaredType::Supported(ty)) if hooks::type_fits(ty, hook_arg.ty) => {
            (ty, type_name.to_string())
        }
        Some(DeclaredType::Supported(_)) => {
            return Err(invalid(
                tpath,
                format!(
                    "type \"{type_name}\" does not fit argument {} of {} ({}): use {}",
                    hook_arg.index,
                    info.hook,
                    c_decl(hook_arg),
                    hooks::accepted_type_names(hook_arg.ty)
                ),
            ));
        }
        Some(DeclaredType::Unsupported) => {
            return Err(invalid(
                tpath,
                format!(
                    "type \"{type_name}\" is not supported by lsm-agent here: argument {} of {} \
                     ({}) accepts {}",
                    hook_arg.index,
                    info.hook,
                    c_decl(hook_arg),
                    hooks::accepted_type_names(hook_arg.ty)
                ),
            ));
        }
        None => {
            return Err(invalid(tpath, format!("unknown arg type \"{type_name}\"")));
        }
    };
    Ok(ir::ArgSpec {
        spec_index: a.index,
        lsm_index,
        ty,
        type_name,
        label: a.label.clone().filter(|l| !l.is_empty()),
    })
}

/// Rejects the selector fields the agent does not implement yet.
fn check_selector_unsupported(spath: &str, s: &raw::Selector) -> VResult<()> {
    let unsupported: [(&str, bool); 6] = [
        ("matchData", non_empty(&s.match_data)),
        ("matchReturnActions", non_empty(&s.match_return_actions)),
        ("matchParentBinaries", non_empty(&s.match_parent_binaries)),
        (
            "matchNamespaceChanges",
            non_empty(&s.match_namespace_changes),
        ),
        (
            "matchCapabilityChanges",
            non_empty(&s.match_capability_changes),
        ),
        ("macros", non_empty(&s.macros)),
    ];
    if let Some((field, _)) = unsupported.iter().find(|(_, used)| *used) {
        return Err(not_supported(format!("{spath}.{field}")));
    }
    if s.match_workloads.is_some() {
        return Err(not_supported(format!("{spath}.matchWorkloads")));
    }
    if non_empty(&s.match_return_args) {
        return Err(invalid(
            format!("{spath}.matchReturnArgs"),
            "not supported at LSM hooks (the hook's return value is the verdict)",
        ));
    }
    Ok(())
}

/// String filters of one family share one kernel lookup per argument and selector.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    Equal,
    Prefix,
    Postfix,
}

fn family_of(op: StrOp) -> Family {
    match op {
        StrOp::Equal => Family::Equal,
        StrOp::Prefix => Family::Prefix,
        StrOp::Postfix => Family::Postfix,
    }
}

fn family_name(f: Family) -> &'static str {
    match f {
        Family::Equal => "Equal/NotEqual",
        Family::Prefix => "Prefix/NotPrefix",
        Family::Postfix => "Postfix/NotPostfix",
    }
}

/// Address and port filters: the kernel keeps one non-negated set of each per field and
/// selector (negated ones add up).
#[derive(Clone, Copy, PartialEq, Eq)]
enum NetClass {
    Addr,
    Port,
}

fn positive_net_set(kind: &ir::FilterKind) -> Option<(NetClass, NetField)> {
    match kind {
        ir::FilterKind::Addr {
            field,
            negated: false,
            ..
        } => Some((NetClass::Addr, *field)),
        ir::FilterKind::Port {
            field,
            negated: false,
            ..
        } => Some((NetClass::Port, *field)),
        _ => None,
    }
}

fn field_name(f: NetField) -> &'static str {
    match f {
        NetField::Dest => "destination",
        NetField::Source => "source",
    }
}

fn convert_selector(
    spath: &str,
    index: usize,
    s: &raw::Selector,
    args: &[ir::ArgSpec],
    warnings: &mut Vec<Invalid>,
) -> VResult<ir::Selector> {
    check_selector_unsupported(spath, s)?;

    let mut match_args = Vec::new();
    // (lsm arg index, family, position in matchArgs) of string filters seen so far.
    let mut families: Vec<(u32, Family, usize)> = Vec::new();
    // (class, field, position in matchArgs) of non-negated address and port filters.
    let mut net_sets: Vec<(NetClass, NetField, usize)> = Vec::new();
    for (k, m) in s.match_args.iter().flatten().enumerate() {
        let mpath = format!("{spath}.matchArgs[{k}]");
        let filter = convert_match_arg(&mpath, m, args, warnings)?;
        if let Some((class, field)) = positive_net_set(&filter.kind) {
            if let Some((_, _, first)) =
                net_sets.iter().find(|(c, f, _)| *c == class && *f == field)
            {
                let (what, values) = match class {
                    NetClass::Addr => ("address", "addresses"),
                    NetClass::Port => ("port", "ports"),
                };
                return Err(invalid(
                    mpath,
                    format!(
                        "a second {op} filter on the {field} {what} in the same selector (the \
                         first is matchArgs[{first}]) is not supported by lsm-agent: the \
                         kernel checks one set of {field} {values} per selector; merge the \
                         values into one filter that lists only the {values} both allow",
                        op = m
                            .operator
                            .as_deref()
                            .and_then(parse_operator)
                            .map_or("?", operator_name),
                        field = field_name(field),
                    ),
                ));
            }
            net_sets.push((class, field, k));
        }
        if let ir::FilterKind::Str { op, .. } = &filter.kind {
            let fam = family_of(*op);
            if let Some((_, _, first)) = families
                .iter()
                .find(|(arg, f, _)| *arg == filter.lsm_index && *f == fam)
            {
                return Err(invalid(
                    mpath,
                    format!(
                        "a second {} filter on argument {} in the same selector (the first is \
                         matchArgs[{first}]) is not supported by lsm-agent: merge the values \
                         into one filter",
                        family_name(fam),
                        filter.spec_index
                    ),
                ));
            }
            families.push((filter.lsm_index, fam, k));
        }
        match_args.push(filter);
    }

    let match_binaries = convert_match_binaries(spath, s.match_binaries.as_deref())?;
    let match_pids = convert_match_pids(spath, s.match_pids.as_deref())?;
    let match_namespaces = convert_match_namespaces(spath, s.match_namespaces.as_deref())?;
    let match_capabilities = convert_match_capabilities(spath, s.match_capabilities.as_deref())?;

    let raw_actions = s.match_actions.as_deref().unwrap_or_default();
    if raw_actions.len() > MAX_ACTIONS {
        return Err(invalid(
            format!("{spath}.matchActions[{MAX_ACTIONS}]"),
            format!("at most {MAX_ACTIONS} actions per selector"),
        ));
    }
    let mut actions = Vec::with_capacity(raw_actions.len());
    for (k, a) in raw_actions.iter().enumerate() {
        let apath = format!("{spath}.matchActions[{k}]");
        actions.push(convert_action(&apath, a, warnings)?);
    }

    Ok(ir::Selector {
        index,
        label: s.label.clone().filter(|l| !l.is_empty()),
        match_args,
        match_binaries,
        match_pids,
        match_namespaces,
        match_capabilities,
        actions,
    })
}

/// Every operator spelling Tetragon's `SelectorOp` accepts, with its canonical name first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operator {
    GreaterThan,
    LessThan,
    Equal,
    NotEqual,
    In,
    NotIn,
    Prefix,
    NotPrefix,
    Postfix,
    NotPostfix,
    InMap,
    NotInMap,
    Mask,
    SAddr,
    NotSAddr,
    DAddr,
    NotDAddr,
    SPort,
    NotSPort,
    DPort,
    NotDPort,
    SPortPriv,
    NotSPortPriv,
    DPortPriv,
    NotDPortPriv,
    Protocol,
    Family,
    State,
    CapabilitiesGained,
    InRange,
    NotInRange,
    SubString,
    SubStringIgnCase,
    CelExpr,
    FileType,
    NotFileType,
}

const OPERATOR_SPELLINGS: &[(&str, Operator)] = {
    use Operator::*;
    &[
        ("GreaterThan", GreaterThan),
        ("gt", GreaterThan),
        ("GT", GreaterThan),
        ("LessThan", LessThan),
        ("lt", LessThan),
        ("LT", LessThan),
        ("Equal", Equal),
        ("eq", Equal),
        ("NotEqual", NotEqual),
        ("neq", NotEqual),
        ("In", In),
        ("NotIn", NotIn),
        ("Prefix", Prefix),
        ("prefix", Prefix),
        ("NotPrefix", NotPrefix),
        ("notprefix", NotPrefix),
        ("Postfix", Postfix),
        ("postfix", Postfix),
        ("NotPostfix", NotPostfix),
        ("notpostfix", NotPostfix),
        ("InMap", InMap),
        ("NotInMap", NotInMap),
        ("Mask", Mask),
        ("mask", Mask),
        ("SAddr", SAddr),
        ("saddr", SAddr),
        ("Saddr", SAddr),
        ("NotSAddr", NotSAddr),
        ("notsaddr", NotSAddr),
        ("NotSaddr", NotSAddr),
        ("DAddr", DAddr),
        ("daddr", DAddr),
        ("Daddr", DAddr),
        ("NotDAddr", NotDAddr),
        ("notdaddr", NotDAddr),
        ("NotDaddr", NotDAddr),
        ("SPort", SPort),
        ("sport", SPort),
        ("Sport", SPort),
        ("NotSPort", NotSPort),
        ("notsport", NotSPort),
        ("NotSport", NotSPort),
        ("DPort", DPort),
        ("dport", DPort),
        ("Dport", DPort),
        ("NotDPort", NotDPort),
        ("notdport", NotDPort),
        ("NotDport", NotDPort),
        ("SPortPriv", SPortPriv),
        ("sportpriv", SPortPriv),
        ("SportPriv", SPortPriv),
        ("NotSPortPriv", NotSPortPriv),
        ("notsportpriv", NotSPortPriv),
        ("NotSportPriv", NotSPortPriv),
        ("DPortPriv", DPortPriv),
        ("dportpriv", DPortPriv),
        ("DportPriv", DPortPriv),
        ("NotDPortPriv", NotDPortPriv),
        ("notdportpriv", NotDPortPriv),
        ("NotDportPriv", NotDPortPriv),
        ("Protocol", Protocol),
        ("protocol", Protocol),
        ("Family", Family),
        ("family", Family),
        ("State", State),
        ("state", State),
        ("CapabilitiesGained", CapabilitiesGained),
        ("InRange", InRange),
        ("NotInRange", NotInRange),
        ("SubString", SubString),
        ("SubStringIgnCase", SubStringIgnCase),
        ("CelExpr", CelExpr),
        ("FileType", FileType),
        ("NotFileType", NotFileType),
    ]
};

/// The `matchArgs` operators lsm-agent implements, with their aliases, for error messages.
const SUPPORTED_ARG_OPERATORS: &str = "Equal (eq), NotEqual (neq), Prefix (prefix), \
     NotPrefix (notprefix), Postfix (postfix), NotPostfix (notpostfix), GreaterThan (GT, gt), \
     LessThan (LT, lt), Mask (mask), InRange, NotInRange, DAddr (daddr, Daddr), NotDAddr \
     (notdaddr, NotDaddr), SAddr (saddr, Saddr), NotSAddr (notsaddr, NotSaddr), DPort (dport, \
     Dport), NotDPort (notdport, NotDport), SPort (sport, Sport), NotSPort (notsport, NotSport), \
     DPortPriv (dportpriv, DportPriv), NotDPortPriv (notdportpriv, NotDportPriv), SPortPriv \
     (sportpriv, SportPriv), NotSPortPriv (notsportpriv, NotSportPriv), Protocol (protocol), \
     Family (family)";

fn parse_operator(s: &str) -> Option<Operator> {
    OPERATOR_SPELLINGS
        .iter()
        .find(|(name, _)| *name == s)
        .map(|(_, op)| *op)
}

fn operator_name(op: Operator) -> &'static str {
    OPERATOR_SPELLINGS
        .iter()
        .find(|(_, o)| *o == op)
        .map(|(name, _)| *name)
        .unwrap_or("?")
}

/// What an operator does to an argument of a given type.
enum ArgOp {
    Str(StrOp, bool),
    Num(NumOp),
    Addr(NetField, bool),
    /// `privileged`: a `*PortPriv` operator, ports 0-1023, which takes no values.
    Port {
        field: NetField,
        negated: bool,
        privileged: bool,
    },
    SockAttr(SockAttr),
}

/// Operators on a connection's socket, or a sockaddr's, with Tetragon's meaning.
fn is_network_op(op: Operator) -> bool {
    use Operator as O;
    matches!(
        op,
        O::SAddr
            | O::NotSAddr
            | O::DAddr
            | O::NotDAddr
            | O::SPort
            | O::NotSPort
            | O::DPort
            | O::NotDPort
            | O::SPortPriv
            | O::NotSPortPriv
            | O::DPortPriv
            | O::NotDPortPriv
            | O::Protocol
            | O::Family
            | O::State
    )
}

/// The reading of an address, port, protocol or family operator on a socket: `SAddr` and
/// `SPort` look at the socket's local end, `DAddr` and `DPort` at the peer.
fn sock_op(op: Operator) -> Option<ArgOp> {
    use Operator as O;
    let port = |field, negated, privileged| ArgOp::Port {
        field,
        negated,
        privileged,
    };
    Some(match op {
        O::DAddr => ArgOp::Addr(NetField::Dest, false),
        O::NotDAddr => ArgOp::Addr(NetField::Dest, true),
        O::SAddr => ArgOp::Addr(NetField::Source, false),
        O::NotSAddr => ArgOp::Addr(NetField::Source, true),
        O::DPort => port(NetField::Dest, false, false),
        O::NotDPort => port(NetField::Dest, true, false),
        O::SPort => port(NetField::Source, false, false),
        O::NotSPort => port(NetField::Source, true, false),
        O::DPortPriv => port(NetField::Dest, false, true),
        O::NotDPortPriv => port(NetField::Dest, true, true),
        O::SPortPriv => port(NetField::Source, false, true),
        O::NotSPortPriv => port(NetField::Source, true, true),
        O::Protocol => ArgOp::SockAttr(SockAttr::Protocol),
        O::Family => ArgOp::SockAttr(SockAttr::Family),
        _ => return None,
    })
}

/// The agent's reading of `op` on an argument of type `ty`, or why it cannot be used: a
/// sentence about the operator that the caller completes with the argument's type.
fn classify(op: Operator, ty: ArgType) -> Result<ArgOp, String> {
    use Operator as O;
    let name = operator_name(op);
    match ty {
        ArgType::Sock => {
            return match (sock_op(op), op) {
                (Some(a), _) => Ok(a),
                (None, O::State) => Err(format!(
                    "operator State is not supported at {} (the socket has no TCP state yet)",
                    ir::LsmHook::SocketConnect
                )),
                _ => Err(format!(
                    "operator {name} is not supported: sock, socket and sockaddr arguments do \
                     not support operator {name}"
                )),
            };
        }
        ArgType::Sockaddr => {
            // At connect, the sockaddr is the address connected to: Tetragon's `SAddr` and
            // `SPort` on it (the only address and port it has) are the destination.
            return match op {
                O::SAddr => Ok(ArgOp::Addr(NetField::Dest, false)),
                O::NotSAddr => Ok(ArgOp::Addr(NetField::Dest, true)),
                O::SPort | O::NotSPort | O::SPortPriv | O::NotSPortPriv => Ok(ArgOp::Port {
                    field: NetField::Dest,
                    negated: matches!(op, O::NotSPort | O::NotSPortPriv),
                    privileged: matches!(op, O::SPortPriv | O::NotSPortPriv),
                }),
                O::Family => Ok(ArgOp::SockAttr(SockAttr::Family)),
                _ if is_network_op(op) => Err(format!(
                    "operator {name} is not supported on a sockaddr argument: sockaddr only \
                     supports [Not]SAddr, [Not]SPort, [Not]SPortPriv and Family, which match \
                     the address connected to"
                )),
                _ => Err(format!(
                    "operator {name} is not supported: sock, socket and sockaddr arguments do \
                     not support operator {name}"
                )),
            };
        }
        _ => {}
    }
    if is_network_op(op) {
        return Err(format!(
            "operator {name} is only valid on sock, socket and sockaddr arguments"
        ));
    }
    let str_op = match op {
        O::Equal => Some((StrOp::Equal, false)),
        O::NotEqual => Some((StrOp::Equal, true)),
        O::Prefix => Some((StrOp::Prefix, false)),
        O::NotPrefix => Some((StrOp::Prefix, true)),
        O::Postfix => Some((StrOp::Postfix, false)),
        O::NotPostfix => Some((StrOp::Postfix, true)),
        _ => None,
    };
    let not_yet = format!("operator {name} is not supported yet by lsm-agent");
    let elsewhere = format!("operator {name} is not supported on this argument");
    if ty.is_path_like() {
        return match (str_op, op) {
            (Some((o, neg)), _) => Ok(ArgOp::Str(o, neg)),
            // Tetragon accepts these on file/path arguments; the agent does not have them.
            (
                None,
                O::SubString | O::SubStringIgnCase | O::FileType | O::NotFileType | O::CelExpr,
            ) => Err(not_yet),
            _ => Err(elsewhere),
        };
    }
    match op {
        O::Equal => Ok(ArgOp::Num(NumOp::Equal)),
        O::NotEqual => Ok(ArgOp::Num(NumOp::NotEqual)),
        O::GreaterThan => Ok(ArgOp::Num(NumOp::GreaterThan)),
        O::LessThan => Ok(ArgOp::Num(NumOp::LessThan)),
        O::Mask => Ok(ArgOp::Num(NumOp::Mask)),
        O::InRange => Ok(ArgOp::Num(NumOp::InRange)),
        O::NotInRange => Ok(ArgOp::Num(NumOp::NotInRange)),
        O::InMap | O::NotInMap | O::CelExpr => Err(not_yet),
        _ => Err(elsewhere),
    }
}

/// Which operators apply to an argument of type `ty`, to complete an operator error.
fn operator_hint(ty: ArgType) -> &'static str {
    match ty {
        ArgType::File | ArgType::Path | ArgType::LinuxBinprm => {
            "string operators Equal, NotEqual, Prefix, NotPrefix, Postfix, NotPostfix apply to \
             file, path and linux_binprm arguments"
        }
        ArgType::Int { .. } => {
            "numeric operators Equal, NotEqual, GreaterThan, LessThan, Mask, InRange, \
             NotInRange apply to integer arguments"
        }
        ArgType::Sock => {
            "network operators DAddr, NotDAddr, SAddr, NotSAddr, DPort, NotDPort, SPort, \
             NotSPort, DPortPriv, NotDPortPriv, SPortPriv, NotSPortPriv, Protocol and Family \
             apply to sock and socket arguments"
        }
        ArgType::Sockaddr => {
            "SAddr, NotSAddr, SPort, NotSPort, SPortPriv, NotSPortPriv and Family apply to \
             sockaddr arguments"
        }
    }
}

fn convert_match_arg(
    mpath: &str,
    m: &raw::ArgSelector,
    args: &[ir::ArgSpec],
    warnings: &mut Vec<Invalid>,
) -> VResult<ir::ArgFilter> {
    // `args` (positions in the hook's `args` list) takes precedence over `index`.
    let arg = match m.args.as_deref() {
        Some([]) | None => {
            let index = m.index.unwrap_or(0);
            args.iter().find(|a| a.spec_index == index).ok_or_else(|| {
                invalid(
                    format!("{mpath}.index"),
                    format!("arg index {index} is not declared in args"),
                )
            })?
        }
        Some([pos]) => args.get(*pos as usize).ok_or_else(|| {
            invalid(
                format!("{mpath}.args[0]"),
                format!(
                    "args position {pos} is out of range (the hook declares {} args)",
                    args.len()
                ),
            )
        })?,
        Some(_) => {
            return Err(invalid(
                format!("{mpath}.args"),
                "more than one entry in args is not supported yet by lsm-agent",
            ));
        }
    };

    let opath = format!("{mpath}.operator");
    let op_text = m
        .operator
        .as_deref()
        .ok_or_else(|| invalid(mpath, "missing operator"))?;
    let op = parse_operator(op_text).ok_or_else(|| {
        invalid(
            &opath,
            format!("unknown operator \"{op_text}\" (expected one of {SUPPORTED_ARG_OPERATORS})"),
        )
    })?;
    let kind = classify(op, arg.ty).map_err(|why| {
        invalid(
            &opath,
            format!(
                "{why} (argument {} is of type {}; {})",
                arg.spec_index,
                arg.type_name,
                operator_hint(arg.ty)
            ),
        )
    })?;

    let values = m.values.as_deref().unwrap_or_default();
    let vpath = format!("{mpath}.values");
    let privileged = matches!(
        kind,
        ArgOp::Port {
            privileged: true,
            ..
        }
    );
    if values.is_empty() && !privileged {
        return Err(invalid(
            if m.values.is_some() {
                vpath
            } else {
                mpath.to_string()
            },
            format!("operator {} needs at least one value", operator_name(op)),
        ));
    }
    let kind = match kind {
        ArgOp::Str(op, negated) => ir::FilterKind::Str {
            op,
            negated,
            values: string_values(&vpath, values, op)?,
        },
        ArgOp::Num(op) => ir::FilterKind::Num {
            op,
            values: numeric_values(&vpath, values, op, arg)?,
        },
        ArgOp::Addr(field, negated) => ir::FilterKind::Addr {
            field,
            negated,
            values: addr_values(&vpath, values)?,
        },
        ArgOp::Port {
            field,
            negated,
            privileged: true,
        } => {
            // Tetragon takes no values for these and ignores any given.
            if !values.is_empty() {
                warnings.push(invalid(
                    &vpath,
                    format!(
                        "values ignored: {} matches the privileged ports 0-1023 and takes no \
                         values",
                        operator_name(op)
                    ),
                ));
            }
            ir::FilterKind::Port {
                field,
                negated,
                ranges: vec![PRIVILEGED_PORTS],
            }
        }
        ArgOp::Port { field, negated, .. } => ir::FilterKind::Port {
            field,
            negated,
            ranges: port_values(&vpath, values)?,
        },
        ArgOp::SockAttr(attr) => ir::FilterKind::SockAttr {
            attr,
            values: sock_attr_values(&vpath, values, attr)?,
        },
    };
    Ok(ir::ArgFilter {
        spec_index: arg.spec_index,
        lsm_index: arg.lsm_index,
        ty: arg.ty,
        kind,
    })
}

/// The ports of Tetragon's `*PortPriv` operators.
const PRIVILEGED_PORTS: (u16, u16) = (0, 1023);

/// Address values: IPv4 or IPv6 addresses (a /32 or /128), CIDRs, or `dns:<name>`.
fn addr_values(vpath: &str, values: &[String]) -> VResult<Vec<AddrValue>> {
    let max = ADDR_ENTRIES as usize;
    if values.len() > max {
        return Err(invalid(
            format!("{vpath}[{max}]"),
            format!("at most {max} addresses per filter (the size of the kernel's address maps)"),
        ));
    }
    values
        .iter()
        .enumerate()
        .map(|(v, text)| addr_value(&format!("{vpath}[{v}]"), text))
        .collect()
}

fn addr_value(path: &str, text: &str) -> VResult<AddrValue> {
    if let Some(name) = text.strip_prefix("dns:") {
        return dns_name(name).map(AddrValue::Dns).ok_or_else(|| {
            invalid(
                path,
                format!(
                    "invalid DNS name \"{name}\" in \"{text}\" (expected dns:<name>, with \
                     dot-separated labels of 1 to 63 letters, digits, '-' or '_', at most 253 \
                     characters)"
                ),
            )
        });
    }
    if text.contains('/') {
        return text
            .parse::<ipnet::IpNet>()
            .map(AddrValue::Net)
            .map_err(|_| {
                invalid(
                    path,
                    format!(
                        "invalid CIDR \"{text}\" (expected an IPv4 or IPv6 network such as \
                     10.0.0.0/8 or fd00::/8)"
                    ),
                )
            });
    }
    text.parse::<std::net::IpAddr>()
        .map(|a| AddrValue::Net(ipnet::IpNet::from(a)))
        .map_err(|_| {
            invalid(
                path,
                format!(
                    "invalid address \"{text}\" (expected an IPv4 or IPv6 address, a CIDR such \
                     as 10.0.0.0/8, or dns:<name>)"
                ),
            )
        })
}

/// A `dns:` name, lowercased and without one trailing dot, if it is a valid DNS name.
fn dns_name(name: &str) -> Option<String> {
    let lower = name.to_ascii_lowercase();
    let name = lower.strip_suffix('.').unwrap_or(&lower);
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    (!name.is_empty() && name.len() <= 253 && name.split('.').all(label_ok))
        .then(|| name.to_string())
}

/// Port values: `N` or Tetragon's `min:max` range (inclusive, either order), decimal.
fn port_values(vpath: &str, values: &[String]) -> VResult<Vec<(u16, u16)>> {
    let port = |t: &str| {
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        t.parse::<u16>().ok()
    };
    values
        .iter()
        .enumerate()
        .map(|(v, text)| {
            let (lo, hi) = match text.split_once(':') {
                Some((a, b)) => (port(a), port(b)),
                None => (port(text), port(text)),
            };
            match (lo, hi) {
                (Some(lo), Some(hi)) => Ok((lo.min(hi), lo.max(hi))),
                _ => Err(invalid(
                    format!("{vpath}[{v}]"),
                    format!(
                        "invalid port \"{text}\" (expected a decimal port number 0-65535 or a \
                         range min:max)"
                    ),
                )),
            }
        })
        .collect()
}

/// Names Tetragon accepts for `Protocol` values (its `inetProtocol` table), plus
/// `IPPROTO_ICMPV6`.
const PROTOCOLS: &[(&str, u64)] = &[
    ("IPPROTO_IP", 0),
    ("IPPROTO_ICMP", 1),
    ("IPPROTO_IGMP", 2),
    ("IPPROTO_IPIP", 4),
    ("IPPROTO_TCP", 6),
    ("IPPROTO_EGP", 8),
    ("IPPROTO_PUP", 12),
    ("IPPROTO_UDP", 17),
    ("IPPROTO_IDP", 22),
    ("IPPROTO_TP", 29),
    ("IPPROTO_DCCP", 33),
    ("IPPROTO_IPV6", 41),
    ("IPPROTO_RSVP", 46),
    ("IPPROTO_GRE", 47),
    ("IPPROTO_ESP", 50),
    ("IPPROTO_AH", 51),
    ("IPPROTO_ICMPV6", 58),
    ("IPPROTO_MTP", 92),
    ("IPPROTO_BEETPH", 94),
    ("IPPROTO_ENCAP", 98),
    ("IPPROTO_PIM", 103),
    ("IPPROTO_COMP", 108),
    ("IPPROTO_SCTP", 132),
    ("IPPROTO_UDPLITE", 136),
    ("IPPROTO_MPLS", 137),
    ("IPPROTO_ETHERNET", 143),
    ("IPPROTO_RAW", 255),
    ("IPPROTO_MPTCP", 262),
];

/// Names Tetragon accepts for `Family` values (its `inetFamily` table), plus `AF_LOCAL`.
const FAMILIES: &[(&str, u64)] = &[
    ("AF_UNSPEC", 0),
    ("AF_UNIX", 1),
    ("AF_LOCAL", 1),
    ("AF_INET", 2),
    ("AF_AX25", 3),
    ("AF_IPX", 4),
    ("AF_APPLETALK", 5),
    ("AF_NETROM", 6),
    ("AF_BRIDGE", 7),
    ("AF_ATMPVC", 8),
    ("AF_X25", 9),
    ("AF_INET6", 10),
    ("AF_ROSE", 11),
    ("AF_DECnet", 12),
    ("AF_NETBEUI", 13),
    ("AF_SECURITY", 14),
    ("AF_KEY", 15),
    ("AF_NETLINK", 16),
    ("AF_PACKET", 17),
    ("AF_ASH", 18),
    ("AF_ECONET", 19),
    ("AF_ATMSVC", 20),
    ("AF_RDS", 21),
    ("AF_IRDA", 23),
    ("AF_PPPOX", 24),
    ("AF_WANPIPE", 25),
    ("AF_LLC", 26),
    ("AF_IB", 27),
    ("AF_MPLS", 28),
    ("AF_CAN", 29),
    ("AF_TIPC", 30),
    ("AF_BLUETOOTH", 31),
    ("AF_IUCV", 32),
    ("AF_RXRPC", 33),
    ("AF_ISDN", 34),
    ("AF_PHONET", 35),
    ("AF_IEEE802154", 36),
    ("AF_CAIF", 37),
    ("AF_ALG", 38),
    ("AF_NFC", 39),
    ("AF_VSOCK", 40),
    ("AF_KCM", 41),
    ("AF_QIPCRTR", 42),
    ("AF_SMC", 43),
    ("AF_XDP", 44),
    ("AF_MCTP", 45),
];

/// `Protocol` / `Family` values: decimal numbers (the kernel's fields are 16 bits), names,
/// or Tetragon's `min:max` ranges, which stand for every number in them.
fn sock_attr_values(vpath: &str, values: &[String], attr: SockAttr) -> VResult<Vec<u64>> {
    let (names, what, examples) = match attr {
        SockAttr::Protocol => (PROTOCOLS, "Protocol", "IPPROTO_TCP or IPPROTO_UDP"),
        SockAttr::Family => (FAMILIES, "Family", "AF_INET or AF_INET6"),
    };
    let number = |t: &str| {
        if let Some((_, n)) = names.iter().find(|(name, _)| name.eq_ignore_ascii_case(t)) {
            return Some(*n);
        }
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        t.parse::<u16>().ok().map(u64::from)
    };
    let mut out: Vec<u64> = Vec::new();
    for (v, text) in values.iter().enumerate() {
        let path = format!("{vpath}[{v}]");
        let (lo, hi) = match text.split_once(':') {
            Some((a, b)) => (number(a), number(b)),
            None => (number(text), number(text)),
        };
        let (Some(lo), Some(hi)) = (lo, hi) else {
            return Err(invalid(
                path,
                format!(
                    "invalid {what} value \"{text}\" (expected a decimal number 0-65535, a \
                     name such as {examples}, or a range min:max)"
                ),
            ));
        };
        for n in lo.min(hi)..=lo.max(hi) {
            if out.contains(&n) {
                continue;
            }
            if out.len() == NUM_FILTER_VALUES {
                return Err(invalid(
                    path,
                    format!(
                        "at most {NUM_FILTER_VALUES} different {what} values per filter \
                         (lsm-agent's limit; a range counts every number in it)"
                    ),
                ));
            }
            out.push(n);
        }
    }
    Ok(out)
}

/// Tetragon trims trailing NULs from string values; policies write them as a real NUL
/// (`"\0"` in double quotes) or as the two characters `\0`.
fn trim_nuls(mut s: &str) -> &str {
    loop {
        if let Some(t) = s.strip_suffix('\0') {
            s = t;
        } else if let Some(t) = s.strip_suffix("\\0") {
            s = t;
        } else {
            return s;
        }
    }
}

fn string_values(vpath: &str, values: &[String], op: StrOp) -> VResult<Vec<Vec<u8>>> {
    let (max, what) = match op {
        StrOp::Equal => (STR_LEN, "Equal/NotEqual"),
        StrOp::Prefix => (LPM_STR_LEN, "Prefix/NotPrefix"),
        StrOp::Postfix => (LPM_STR_LEN, "Postfix/NotPostfix"),
    };
    values
        .iter()
        .enumerate()
        .map(|(v, s)| {
            let s = trim_nuls(s);
            if s.len() > max {
                return Err(invalid(
                    format!("{vpath}[{v}]"),
                    format!(
                        "value is {} bytes long; {what} values are at most {max} bytes",
                        s.len()
                    ),
                ));
            }
            Ok(s.as_bytes().to_vec())
        })
        .collect()
}

fn numeric_values(
    vpath: &str,
    values: &[String],
    op: NumOp,
    arg: &ir::ArgSpec,
) -> VResult<Vec<u64>> {
    let ranges = matches!(op, NumOp::InRange | NumOp::NotInRange);
    if values.len() > MAX_NUM_VALUES {
        return Err(invalid(
            format!("{vpath}[{MAX_NUM_VALUES}]"),
            format!(
                "at most {MAX_NUM_VALUES} {} per numeric filter (Tetragon's limit)",
                if ranges { "ranges" } else { "values" }
            ),
        ));
    }
    let mut out = Vec::with_capacity(values.len() * if ranges { 2 } else { 1 });
    for (v, text) in values.iter().enumerate() {
        let path = format!("{vpath}[{v}]");
        if ranges {
            let (lo, hi) = text.split_once(':').ok_or_else(|| {
                invalid(&path, format!("range \"{text}\" must be written min:max"))
            })?;
            let lo = int_for_arg(&path, lo, arg)?;
            let hi = int_for_arg(&path, hi, arg)?;
            if lo > hi {
                return Err(invalid(
                    &path,
                    format!("range \"{text}\" has min greater than max"),
                ));
            }
            out.push(extend(lo, arg.ty));
            out.push(extend(hi, arg.ty));
        } else {
            let n = int_for_arg(&path, text, arg)?;
            out.push(extend(n, arg.ty));
        }
    }
    Ok(out)
}

/// Sign-extends signed values and zero-extends unsigned ones to 64 bits.
fn extend(n: i128, ty: ArgType) -> u64 {
    match ty {
        ArgType::Int { signed: true, .. } => (n as i64) as u64,
        _ => n as u64,
    }
}

fn int_for_arg(path: &str, text: &str, arg: &ir::ArgSpec) -> VResult<i128> {
    let ArgType::Int { width, signed } = arg.ty else {
        return Err(invalid(path, "numeric value on a non-integer argument"));
    };
    let n = parse_go_int(text).ok_or_else(|| {
        invalid(
            path,
            format!(
                "invalid integer \"{text}\" (expected decimal, 0x hex, 0o or leading-0 octal, \
                 or 0b binary)"
            ),
        )
    })?;
    let bits = u32::from(width) * 8;
    let (min, max): (i128, i128) = if signed {
        (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
    } else {
        (0, (1i128 << bits) - 1)
    };
    if n < min || n > max {
        return Err(invalid(
            path,
            format!(
                "value {text} does not fit argument {} of type {} ({min}..={max})",
                arg.spec_index, arg.type_name
            ),
        ));
    }
    Ok(n)
}

/// Go's `strconv.ParseInt(s, 0, 64)` syntax: optional sign, then decimal, `0x` hex, `0o` or
/// leading-`0` octal, or `0b` binary, with `_` allowed between digits. Range checks are the
/// caller's; anything beyond 64 bits is `None`.
fn parse_go_int(s: &str) -> Option<i128> {
    let (neg, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let lower = body.to_ascii_lowercase();
    let (radix, digits) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, &lower[1..])
    } else {
        (10, lower.as_str())
    };
    if digits.is_empty() || digits.starts_with('_') && radix == 10 || digits.ends_with('_') {
        return None;
    }
    if digits.contains("__") {
        return None;
    }
    let mut n: i128 = 0;
    for c in digits.chars().filter(|c| *c != '_') {
        let d = c.to_digit(radix)?;
        n = n * i128::from(radix) + i128::from(d);
        if n > i128::from(u64::MAX) {
            return None;
        }
    }
    Some(if neg { -n } else { n })
}

fn convert_match_binaries(
    spath: &str,
    entries: Option<&[raw::BinarySelector]>,
) -> VResult<Option<ir::BinaryFilter>> {
    let entries = entries.unwrap_or_default();
    if entries.len() > 1 {
        return Err(invalid(
            format!("{spath}.matchBinaries[1]"),
            "at most one matchBinaries entry per selector",
        ));
    }
    let Some(b) = entries.first() else {
        return Ok(None);
    };
    let bpath = format!("{spath}.matchBinaries[0]");
    let op_text = b.operator.as_deref().unwrap_or("");
    let (op, negated) = match parse_operator(op_text) {
        Some(Operator::In) => (StrOp::Equal, false),
        Some(Operator::NotIn) => (StrOp::Equal, true),
        Some(Operator::Prefix) => (StrOp::Prefix, false),
        Some(Operator::NotPrefix) => (StrOp::Prefix, true),
        Some(Operator::Postfix) => (StrOp::Postfix, false),
        Some(Operator::NotPostfix) => (StrOp::Postfix, true),
        _ => {
            return Err(invalid(
                format!("{bpath}.operator"),
                format!(
                    "unknown matchBinaries operator \"{op_text}\" (expected one of In, NotIn, \
                     Prefix, NotPrefix, Postfix, NotPostfix)"
                ),
            ));
        }
    };
    let follow_children = b.follow_children.unwrap_or(false);
    if follow_children && op != StrOp::Equal {
        return Err(invalid(
            format!("{bpath}.followChildren"),
            "followChildren is only valid with the In and NotIn operators",
        ));
    }
    let values = b.values.as_deref().unwrap_or_default();
    // Tetragon ignores an entry without values.
    if values.is_empty() {
        return Ok(None);
    }
    Ok(Some(ir::BinaryFilter {
        op,
        negated,
        values: string_values(&format!("{bpath}.values"), values, op)?,
        follow_children,
    }))
}

/// The operator of a `matchPIDs`, `matchNamespaces` or `matchCapabilities` entry at `epath`,
/// which must be `In` or `NotIn`: whether it is `NotIn`.
fn in_or_not_in(epath: &str, field: &str, operator: Option<&str>) -> VResult<bool> {
    let text = operator.ok_or_else(|| invalid(epath, "missing operator (expected In or NotIn)"))?;
    match parse_operator(text) {
        Some(Operator::In) => Ok(false),
        Some(Operator::NotIn) => Ok(true),
        Some(op) => Err(invalid(
            format!("{epath}.operator"),
            format!(
                "operator {} is not supported in {field} (expected In or NotIn)",
                operator_name(op)
            ),
        )),
        None => Err(invalid(
            format!("{epath}.operator"),
            format!("unknown {field} operator \"{text}\" (expected In or NotIn)"),
        )),
    }
}

/// The values of an entry at `epath`, which must not be missing or empty.
fn required_values<'a, T>(epath: &str, values: &'a Option<Vec<T>>) -> VResult<&'a [T]> {
    match values.as_deref() {
        Some([]) => Err(invalid(
            format!("{epath}.values"),
            "needs at least one value",
        )),
        None => Err(invalid(epath, "missing values (needs at least one value)")),
        Some(v) => Ok(v),
    }
}

fn convert_match_pids(
    spath: &str,
    entries: Option<&[raw::PidSelector]>,
) -> VResult<Vec<ir::PidFilter>> {
    let mut out: Vec<ir::PidFilter> = Vec::new();
    for (k, p) in entries.unwrap_or_default().iter().enumerate() {
        let epath = format!("{spath}.matchPIDs[{k}]");
        let negated = in_or_not_in(&epath, "matchPIDs", p.operator.as_deref())?;
        let values = required_values(&epath, &p.values)?.to_vec();
        let filter = ir::PidFilter {
            negated,
            values,
            namespace_pid: p.is_namespace_pid.unwrap_or(false),
            follow_forks: p.follow_forks.unwrap_or(false),
        };
        // The kernel follows one set of ancestors per kind of PID; two `In` sets would
        // have to be intersected, which it cannot do.
        let follows = |f: &ir::PidFilter| f.follow_forks && !f.negated;
        if follows(&filter)
            && let Some(first) = out
                .iter()
                .position(|f| follows(f) && f.namespace_pid == filter.namespace_pid)
        {
            return Err(invalid(
                epath,
                format!(
                    "at most one followForks In filter per kind (isNamespacePID: {}) in a \
                     selector; the first is matchPIDs[{first}] (merge the values into one \
                     filter)",
                    filter.namespace_pid
                ),
            ));
        }
        out.push(filter);
    }
    Ok(out)
}

/// Tetragon's limit on `matchNamespaces` entries per selector (one per namespace type).
const MAX_NS_FILTERS: usize = 10;

fn ns_type_names() -> String {
    ir::NsType::ALL.map(ir::NsType::name).join(", ")
}

fn convert_match_namespaces(
    spath: &str,
    entries: Option<&[raw::NamespaceSelector]>,
) -> VResult<Vec<ir::NamespaceFilter>> {
    let entries = entries.unwrap_or_default();
    if entries.len() > MAX_NS_FILTERS {
        return Err(invalid(
            format!("{spath}.matchNamespaces[{MAX_NS_FILTERS}]"),
            format!("at most {MAX_NS_FILTERS} matchNamespaces entries per selector"),
        ));
    }
    let mut out = Vec::with_capacity(entries.len());
    for (k, n) in entries.iter().enumerate() {
        let epath = format!("{spath}.matchNamespaces[{k}]");
        // Tetragon compares the names case-insensitively.
        let name = n.namespace.as_deref().ok_or_else(|| {
            invalid(
                &epath,
                format!("missing namespace (expected one of {})", ns_type_names()),
            )
        })?;
        let ns = ir::NsType::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                invalid(
                    format!("{epath}.namespace"),
                    format!(
                        "unknown namespace \"{name}\" (expected one of {})",
                        ns_type_names()
                    ),
                )
            })?;
        let negated = in_or_not_in(&epath, "matchNamespaces", n.operator.as_deref())?;
        let values = required_values(&epath, &n.values)?;
        let vpath = format!("{epath}.values");
        if values.len() > NUM_FILTER_VALUES {
            return Err(invalid(
                format!("{vpath}[{NUM_FILTER_VALUES}]"),
                format!("at most {NUM_FILTER_VALUES} values per matchNamespaces entry"),
            ));
        }
        let values = values
            .iter()
            .enumerate()
            .map(|(v, text)| ns_value(&format!("{vpath}[{v}]"), text))
            .collect::<VResult<_>>()?;
        out.push(ir::NamespaceFilter {
            ns,
            negated,
            values,
        });
    }
    Ok(out)
}

/// A namespace inode in decimal (no sign, as Go's `ParseUint(v, 10, 32)`), or `host_ns`.
fn ns_value(path: &str, text: &str) -> VResult<ir::NsValue> {
    if text == "host_ns" {
        return Ok(ir::NsValue::Host);
    }
    text.bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| text.parse::<u32>().ok())
        .flatten()
        .map(ir::NsValue::Inode)
        .ok_or_else(|| {
            invalid(
                path,
                format!(
                    "invalid namespace value \"{text}\" (expected host_ns or a decimal inode \
                     number up to {})",
                    u32::MAX
                ),
            )
        })
}

/// Linux capability names by number (`CAP_CHOWN` = 0 ... `CAP_CHECKPOINT_RESTORE` = 40).
const CAPABILITIES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The number of a capability name. Like Tetragon, surrounding spaces and case are ignored,
/// and capability 1 is also accepted as `DAC_OVERRIDE` (Tetragon's API enum spells it so).
fn capability_number(name: &str) -> Option<u32> {
    let name = name.trim();
    if name.eq_ignore_ascii_case("DAC_OVERRIDE") {
        return Some(1);
    }
    CAPABILITIES
        .iter()
        .position(|c| c.eq_ignore_ascii_case(name))
        .map(|n| n as u32)
}

fn convert_match_capabilities(
    spath: &str,
    entries: Option<&[raw::CapabilitiesSelector]>,
) -> VResult<Vec<ir::CapFilter>> {
    let mut out = Vec::new();
    for (k, c) in entries.unwrap_or_default().iter().enumerate() {
        let epath = format!("{spath}.matchCapabilities[{k}]");
        // Tetragon compares the set names case-insensitively; its CRD defaults to Effective.
        let set = match c.ty.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("effective") => ir::CapSet::Effective,
            Some("inheritable") => ir::CapSet::Inheritable,
            Some("permitted") => ir::CapSet::Permitted,
            Some(_) => {
                return Err(invalid(
                    format!("{epath}.type"),
                    format!(
                        "unknown capability type \"{}\" (expected Effective, Inheritable or \
                         Permitted)",
                        c.ty.as_deref().unwrap_or_default()
                    ),
                ));
            }
        };
        let negated = in_or_not_in(&epath, "matchCapabilities", c.operator.as_deref())?;
        let values = required_values(&epath, &c.values)?;
        let mut mask = 0u64;
        for (v, name) in values.iter().enumerate() {
            let n = capability_number(name).ok_or_else(|| {
                invalid(
                    format!("{epath}.values[{v}]"),
                    format!(
                        "unknown capability \"{name}\" (expected a Linux capability name, \
                         CAP_CHOWN ... CAP_CHECKPOINT_RESTORE)"
                    ),
                )
            })?;
            mask |= 1 << n;
        }
        out.push(ir::CapFilter {
            set,
            negated,
            namespace_capability: c.is_namespace_capability.unwrap_or(false),
            mask,
        });
    }
    Ok(out)
}

fn convert_action(
    apath: &str,
    a: &raw::Action,
    warnings: &mut Vec<Invalid>,
) -> VResult<ir::Action> {
    let name = a.action.to_ascii_lowercase();
    let rate_limit_set = a.rate_limit.as_deref().is_some_and(|r| !r.is_empty());
    if name != "post" && rate_limit_set {
        return Err(invalid(
            format!("{apath}.rateLimit"),
            "rateLimit is only valid with the Post action",
        ));
    }
    let action = match name.as_str() {
        "post" => {
            let rate_limit_ms = match a.rate_limit.as_deref() {
                None | Some("") => None,
                Some(r) => parse_rate_limit(r).ok_or_else(|| {
                    invalid(
                        format!("{apath}.rateLimit"),
                        format!(
                            "invalid rateLimit \"{r}\" (expected a number of seconds, \
                             optionally followed by s, m or h)"
                        ),
                    )
                })?,
            };
            let rate_limit_scope = match a
                .rate_limit_scope
                .as_deref()
                .map(str::to_ascii_lowercase)
                .as_deref()
            {
                None | Some("") | Some("thread") => ir::RateLimitScope::Thread,
                Some("process") => ir::RateLimitScope::Process,
                Some("global") => ir::RateLimitScope::Global,
                Some(other) => {
                    return Err(invalid(
                        format!("{apath}.rateLimitScope"),
                        format!(
                            "unknown rateLimitScope \"{other}\" (expected thread, process or global)"
                        ),
                    ));
                }
            };
            // kernelStackTrace, userStackTrace and imaHash only add data to the event; the
            // agent does not collect it yet but the Post itself is honoured.
            ir::Action::Post {
                rate_limit_ms,
                rate_limit_scope,
            }
        }
        "nopost" => ir::Action::NoPost,
        "sigkill" => ir::Action::Sigkill,
        "override" => {
            let err = a.arg_error.ok_or_else(|| {
                invalid(
                    apath,
                    "Override needs argError (e.g. argError: -1 for EPERM)",
                )
            })?;
            let error = if (-4095..=0).contains(&err) {
                err
            } else {
                warnings.push(invalid(
                    format!("{apath}.argError"),
                    format!(
                        "argError {err} is outside [-4095, 0]; using -1 (EPERM) as Tetragon \
                         does at LSM hooks"
                    ),
                ));
                -1
            };
            ir::Action::Override { error }
        }
        "signal" => {
            let sig = a
                .arg_sig
                .ok_or_else(|| invalid(apath, "Signal needs argSig (e.g. argSig: 9)"))?;
            if !(1..=64).contains(&sig) {
                return Err(invalid(
                    format!("{apath}.argSig"),
                    format!("argSig {sig} is not a signal number (1..=64)"),
                ));
            }
            ir::Action::Signal { signal: sig }
        }
        "geturl"
        | "dnslookup"
        | "tracksock"
        | "untracksock"
        | "notifyenforcer"
        | "cleanupenforcernotification"
        | "set"
        | "followfd"
        | "unfollowfd"
        | "copyfd" => {
            return Err(invalid(
                format!("{apath}.action"),
                format!(
                    "action {} is not supported at LSM hooks (supported: Post, NoPost, Sigkill, \
                     Override, Signal)",
                    a.action
                ),
            ));
        }
        _ => {
            return Err(invalid(
                format!("{apath}.action"),
                format!(
                    "unknown action \"{}\" (expected one of Post, NoPost, Sigkill, Override, \
                     Signal)",
                    a.action
                ),
            ));
        }
    };
    Ok(action)
}

/// Tetragon's `rateLimit`: a number of seconds, or a number with an `s`, `m` or `h` suffix.
/// Returns milliseconds; `Some(None)` for 0, which disables rate limiting.
fn parse_rate_limit(r: &str) -> Option<Option<u64>> {
    let (digits, secs_per_unit) = match r.as_bytes().last()? {
        b's' | b'S' => (&r[..r.len() - 1], 1),
        b'm' | b'M' => (&r[..r.len() - 1], 60),
        b'h' | b'H' => (&r[..r.len() - 1], 3600),
        _ => (r, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let ms = n.checked_mul(secs_per_unit)?.checked_mul(1000)?;
    Some((ms != 0).then_some(ms))
}

/// The serde model of the CRD. Field names are Tetragon's JSON names; every struct rejects
/// unknown fields. Many fields are only read to be rejected or are accepted and ignored.
#[allow(dead_code)]
mod raw {
    use std::collections::BTreeMap;

    use serde::Deserialize;
    use serde_yaml::Value;

    /// Just enough to dispatch on `kind` before the strict parse.
    #[derive(Deserialize)]
    pub struct Head {
        pub kind: Option<String>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Policy {
        #[serde(rename = "apiVersion")]
        pub api_version: Option<String>,
        pub kind: String,
        pub metadata: Option<Metadata>,
        pub spec: Option<Spec>,
    }

    /// Kubernetes `ObjectMeta`, as written in manifests and as returned by `kubectl get -o yaml`.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct Metadata {
        pub name: Option<String>,
        pub generate_name: Option<String>,
        pub namespace: Option<String>,
        pub self_link: Option<String>,
        pub uid: Option<String>,
        pub resource_version: Option<String>,
        pub generation: Option<i64>,
        pub creation_timestamp: Option<Value>,
        pub deletion_timestamp: Option<Value>,
        pub deletion_grace_period_seconds: Option<i64>,
        pub labels: Option<BTreeMap<String, String>>,
        pub annotations: Option<BTreeMap<String, String>>,
        pub owner_references: Option<Vec<Value>>,
        pub finalizers: Option<Vec<String>>,
        pub managed_fields: Option<Vec<Value>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct Spec {
        pub kprobes: Option<Vec<Kprobe>>,
        pub tracepoints: Option<Vec<Tracepoint>>,
        pub lsmhooks: Option<Vec<LsmHookSpec>>,
        pub uprobes: Option<Vec<Uprobe>>,
        pub usdts: Option<Vec<Usdt>>,
        pub fentries: Option<Vec<Kprobe>>,
        pub loader: Option<bool>,
        pub pod_selector: Option<LabelSelector>,
        pub container_selector: Option<LabelSelector>,
        pub host_selector: Option<LabelSelector>,
        pub node_selector: Option<LabelSelector>,
        pub lists: Option<Vec<List>>,
        pub enforcers: Option<Vec<Enforcer>>,
        pub options: Option<Vec<OptionSpec>>,
        pub selectors_macros: Option<BTreeMap<String, Selector>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct Kprobe {
        pub call: String,
        /// CRD default true; irrelevant for the `security_*` calls the agent translates.
        pub syscall: Option<bool>,
        #[serde(rename = "return")]
        pub ret: Option<bool>,
        pub message: Option<String>,
        pub args: Option<Vec<Arg>>,
        pub data: Option<Vec<Arg>>,
        pub return_arg: Option<Arg>,
        pub return_arg_action: Option<String>,
        pub selectors: Option<Vec<Selector>>,
        pub tags: Option<Vec<String>>,
        pub ignore: Option<KprobeIgnore>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct KprobeIgnore {
        pub call_not_found: Option<bool>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct Tracepoint {
        pub subsystem: Option<String>,
        pub event: Option<String>,
        pub message: Option<String>,
        pub args: Option<Vec<Arg>>,
        pub selectors: Option<Vec<Selector>>,
        pub tags: Option<Vec<String>>,
        pub raw: Option<bool>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct LsmHookSpec {
        pub hook: String,
        pub message: Option<String>,
        pub args: Option<Vec<Arg>>,
        pub selectors: Option<Vec<Selector>>,
        pub tags: Option<Vec<String>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct Uprobe {
        pub path: Option<String>,
        pub btf_path: Option<String>,
        pub symbols: Option<Vec<String>>,
        pub offsets: Option<Vec<Value>>,
        pub addrs: Option<Vec<Value>>,
        pub ref_ctr_offsets: Option<Vec<Value>>,
        pub message: Option<String>,
        pub selectors: Option<Vec<Selector>>,
        pub args: Option<Vec<Arg>>,
        pub data: Option<Vec<Arg>>,
        pub tags: Option<Vec<String>>,
        #[serde(rename = "return")]
        pub ret: Option<bool>,
        pub return_arg: Option<Arg>,
        pub binary_digests: Option<Vec<Value>>,
        pub ignore: Option<UprobeIgnore>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct UprobeIgnore {
        pub digest_verification_failure: Option<bool>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct Usdt {
        pub path: Option<String>,
        pub btf_path: Option<String>,
        pub provider: Option<String>,
        pub name: Option<String>,
        pub tags: Option<Vec<String>>,
        pub message: Option<String>,
        pub args: Option<Vec<Arg>>,
        pub selectors: Option<Vec<Selector>>,
    }

    /// `KProbeArg` (`args[]`, `data[]`, `returnArg`).
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct Arg {
        pub index: u32,
        /// CRD default `auto`.
        #[serde(rename = "type")]
        pub ty: Option<String>,
        pub resolve: Option<String>,
        pub size_arg_index: Option<u32>,
        pub return_copy: Option<bool>,
        pub max_data: Option<bool>,
        pub label: Option<String>,
        pub source: Option<String>,
        pub btf_type: Option<String>,
        pub btf_type_module: Option<String>,
    }

    /// The parts shared by `kprobes[]` and `lsmhooks[]` that become an `ir::Hook`.
    pub struct HookBody<'a> {
        pub args: &'a Option<Vec<Arg>>,
        pub selectors: &'a Option<Vec<Selector>>,
        pub message: &'a Option<String>,
        pub tags: &'a Option<Vec<String>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct Selector {
        pub label: Option<String>,
        #[serde(rename = "matchPIDs")]
        pub match_pids: Option<Vec<PidSelector>>,
        pub match_args: Option<Vec<ArgSelector>>,
        pub match_data: Option<Vec<ArgSelector>>,
        pub match_actions: Option<Vec<Action>>,
        pub match_return_args: Option<Vec<ArgSelector>>,
        pub match_return_actions: Option<Vec<Action>>,
        pub match_binaries: Option<Vec<BinarySelector>>,
        pub match_parent_binaries: Option<Vec<BinarySelector>>,
        pub match_namespaces: Option<Vec<NamespaceSelector>>,
        pub match_namespace_changes: Option<Vec<NamespaceChangesSelector>>,
        pub match_capabilities: Option<Vec<CapabilitiesSelector>>,
        pub match_capability_changes: Option<Vec<CapabilitiesSelector>>,
        pub match_workloads: Option<Workloads>,
        pub macros: Option<Vec<String>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct PidSelector {
        pub operator: Option<String>,
        pub values: Option<Vec<u32>>,
        #[serde(rename = "isNamespacePID")]
        pub is_namespace_pid: Option<bool>,
        pub follow_forks: Option<bool>,
    }

    /// `matchArgs`, `matchData`, `matchReturnArgs`. Values are strings in Tetragon; an
    /// unquoted YAML number is read as its text, so `- 4` and `- "4"` mean the same.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct ArgSelector {
        pub index: Option<u32>,
        pub args: Option<Vec<u32>>,
        pub operator: Option<String>,
        pub values: Option<Vec<String>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct BinarySelector {
        pub operator: Option<String>,
        pub values: Option<Vec<String>>,
        pub follow_children: Option<bool>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct NamespaceSelector {
        pub namespace: Option<String>,
        pub operator: Option<String>,
        pub values: Option<Vec<String>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct NamespaceChangesSelector {
        pub operator: Option<String>,
        pub values: Option<Vec<String>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct CapabilitiesSelector {
        #[serde(rename = "type")]
        pub ty: Option<String>,
        pub operator: Option<String>,
        pub is_namespace_capability: Option<bool>,
        pub values: Option<Vec<String>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct Workloads {
        pub pod_selector: Option<LabelSelector>,
        pub container_selector: Option<LabelSelector>,
        pub host_selector: Option<LabelSelector>,
    }

    /// `ActionSelector`.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct Action {
        pub action: String,
        pub arg_fd: Option<u32>,
        pub arg_name: Option<u32>,
        pub arg_url: Option<String>,
        pub arg_fqdn: Option<String>,
        pub arg_error: Option<i32>,
        pub arg_sig: Option<u32>,
        pub arg_sock: Option<u32>,
        pub rate_limit: Option<String>,
        pub rate_limit_scope: Option<String>,
        pub kernel_stack_trace: Option<bool>,
        pub user_stack_trace: Option<bool>,
        pub ima_hash: Option<bool>,
        pub arg_regs: Option<Vec<String>>,
        pub arg_new_symbol: Option<String>,
        pub arg_new_addr: Option<Value>,
        pub arg_new_offset: Option<Value>,
        pub arg_index: Option<u32>,
        pub arg_value: Option<Value>,
    }

    /// Kubernetes `LabelSelector`.
    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct LabelSelector {
        pub match_labels: Option<BTreeMap<String, String>>,
        pub match_expressions: Option<Vec<LabelSelectorRequirement>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct LabelSelectorRequirement {
        pub key: String,
        pub operator: String,
        pub values: Option<Vec<String>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct List {
        pub name: String,
        pub values: Option<Vec<String>>,
        #[serde(rename = "type")]
        pub ty: Option<String>,
        pub pattern: Option<String>,
        pub validated: Option<bool>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct Enforcer {
        pub calls: Vec<String>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct OptionSpec {
        pub name: String,
        pub value: Option<String>,
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::policy::ir::{
        Action, AddrValue, ArgType, BinaryFilter, CapFilter, CapSet, FilterKind, HookOrigin,
        LsmHook, NamespaceFilter, NetField, NsType, NsValue, PidFilter, PolicyKind, PolicyMode,
        RateLimitScope, SockAttr,
    };

    /// Tetragon's upstream example policies (read-only test data outside the workspace).
    fn quickstart(name: &str) -> PathBuf {
        let candidates = [
            std::env::var("TETRAGON_QUICKSTART_DIR")
                .ok()
                .map(PathBuf::from),
            Some(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../../shared/testdata/tetragon-quickstart"),
            ),
            Some(PathBuf::from("/work/shared/testdata/tetragon-quickstart")),
        ];
        let dir = candidates
            .into_iter()
            .flatten()
            .find(|d| d.join(name).is_file())
            .expect("tetragon-quickstart test data not found (set TETRAGON_QUICKSTART_DIR)");
        dir.join(name)
    }

    fn parse(yaml: &str) -> Result<ir::Policy, PolicyError> {
        parse_policy(yaml, Path::new("test.yaml"))
    }

    fn parse_ok(yaml: &str) -> ir::Policy {
        match parse(yaml) {
            Ok(p) => p,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    fn parse_err(yaml: &str) -> PolicyError {
        match parse(yaml) {
            Ok(p) => panic!("unexpected success: {p:?}"),
            Err(e) => e,
        }
    }

    /// A `security_file_permission` kprobe (file, int) with one selector given as YAML
    /// indented for a `selectors:` list item body (6 spaces).
    fn with_selector(selector: &str) -> String {
        format!(
            "\
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: t
spec:
  kprobes:
  - call: security_file_permission
    syscall: false
    args:
    - index: 0
      type: file
    - index: 1
      type: int
    selectors:
    - {}
",
            selector.trim_start()
        )
    }

    fn str_filter(f: &ir::ArgFilter) -> (StrOp, bool, Vec<String>) {
        match &f.kind {
            FilterKind::Str {
                op,
                negated,
                values,
            } => (
                *op,
                *negated,
                values
                    .iter()
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .collect(),
            ),
            other => panic!("not a string filter: {other:?}"),
        }
    }

    fn num_filter(f: &ir::ArgFilter) -> (NumOp, Vec<u64>) {
        match &f.kind {
            FilterKind::Num { op, values } => (*op, values.clone()),
            other => panic!("not a numeric filter: {other:?}"),
        }
    }

    const INT32: ArgType = ArgType::Int {
        width: 4,
        signed: true,
    };
    const UINT32: ArgType = ArgType::Int {
        width: 4,
        signed: false,
    };

    #[test]
    fn quickstart_file_monitoring_translates_three_kprobes_to_lsm_hooks() {
        let p = parse_policy_file(&quickstart("file_monitoring.yaml")).expect("parses");
        assert_eq!(p.name, "file-monitoring-filtered");
        assert_eq!(p.kind, PolicyKind::TracingPolicy);
        assert_eq!(p.namespace, None);
        assert_eq!(p.mode, PolicyMode::Enforce);
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        let lsm: Vec<LsmHook> = p.hooks.iter().map(|h| h.lsm).collect();
        assert_eq!(
            lsm,
            [
                LsmHook::FilePermission,
                LsmHook::MmapFile,
                LsmHook::PathTruncate
            ]
        );
        let counts: Vec<usize> = p.hooks.iter().map(|h| h.selectors.len()).collect();
        assert_eq!(counts, [3, 2, 1]);

        let perm = &p.hooks[0];
        assert_eq!(
            perm.origin,
            HookOrigin::Kprobe {
                call: "security_file_permission".into()
            }
        );
        assert_eq!(perm.spec_index, 0);
        assert_eq!(perm.args[0].ty, ArgType::File);
        assert_eq!(perm.args[1].ty, INT32);
        assert_eq!(perm.args[1].type_name, "int");
        let sel = &perm.selectors[0];
        assert_eq!(sel.index, 0);
        assert!(sel.actions.is_empty());
        assert_eq!(sel.match_binaries, None);
        let (op, neg, values) = str_filter(&sel.match_args[0]);
        assert_eq!((op, neg), (StrOp::Prefix, false));
        assert_eq!(values.len(), 9);
        assert_eq!(values[0], "/boot");
        assert_eq!(num_filter(&sel.match_args[1]), (NumOp::Equal, vec![4]));
        let (op, _, values) = str_filter(&perm.selectors[1].match_args[0]);
        assert_eq!((op, values.len()), (StrOp::Postfix, 10));
        assert_eq!(
            num_filter(&perm.selectors[2].match_args[1]),
            (NumOp::Equal, vec![2])
        );
    }

    #[test]
    fn quickstart_mmap_file_flags_move_to_lsm_argument_3() {
        let p = parse_policy_file(&quickstart("file_monitoring.yaml")).expect("parses");
        let mmap = &p.hooks[1];
        let idx: Vec<(u32, u32)> = mmap
            .args
            .iter()
            .map(|a| (a.spec_index, a.lsm_index))
            .collect();
        assert_eq!(idx, [(0, 0), (1, 1), (2, 3)]);
        assert_eq!(mmap.args[1].ty, UINT32);
        assert_eq!(mmap.args[2].ty, UINT32);
        let sel = &mmap.selectors[0];
        assert_eq!(sel.match_args.len(), 3);
        assert_eq!(str_filter(&sel.match_args[0]).2.len(), 19);
        assert_eq!(sel.match_args[1].lsm_index, 1);
        assert_eq!(num_filter(&sel.match_args[1]), (NumOp::Equal, vec![1]));
        assert_eq!(sel.match_args[2].spec_index, 2);
        assert_eq!(sel.match_args[2].lsm_index, 3);
        assert_eq!(num_filter(&sel.match_args[2]), (NumOp::Mask, vec![1]));
        assert_eq!(
            num_filter(&mmap.selectors[1].match_args[1]),
            (NumOp::Mask, vec![2])
        );
        let trunc = &p.hooks[2];
        assert_eq!(trunc.args[0].ty, ArgType::Path);
        assert_eq!(str_filter(&trunc.selectors[0].match_args[0]).2.len(), 13);
    }

    #[test]
    fn quickstart_file_monitoring_enforce_is_namespaced_and_sigkills_in_every_selector() {
        let p = parse_policy_file(&quickstart("file_monitoring_enforce.yaml")).expect("parses");
        assert_eq!(p.kind, PolicyKind::TracingPolicyNamespaced);
        assert_eq!(p.namespace, None);
        assert_eq!(p.warnings.len(), 1);
        assert!(
            p.warnings[0].contains("applies to every process on the node"),
            "{}",
            p.warnings[0]
        );
        assert!(p.warnings[0].starts_with(&format!(
            "{}:2:1: kind: ",
            quickstart("file_monitoring_enforce.yaml").display()
        )));
        let counts: Vec<usize> = p.hooks.iter().map(|h| h.selectors.len()).collect();
        assert_eq!(counts, [3, 2, 1]);
        for h in &p.hooks {
            for s in &h.selectors {
                assert_eq!(s.actions, [Action::Sigkill]);
            }
        }
    }

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
    fn quickstart_lsm_file_open_uses_the_lsm_hook_directly() {
        let p = parse_policy_file(&quickstart("lsm_file_open.yaml")).expect("parses");
        assert_eq!(p.name, "lsm-file-open");
        assert_eq!(p.hooks.len(), 1);
        let h = &p.hooks[0];
        assert_eq!(h.lsm, LsmHook::FileOpen);
        assert_eq!(h.origin, HookOrigin::LsmHook);
        assert_eq!(h.selectors.len(), 1);
        let s = &h.selectors[0];
        assert_eq!(
            s.match_binaries,
            Some(BinaryFilter {
                op: StrOp::Equal,
                negated: false,
                values: vec![b"/usr/bin/cat".to_vec()],
                follow_children: false,
            })
        );
        assert_eq!(
            str_filter(&s.match_args[0]),
            (
                StrOp::Equal,
                false,
                vec!["/etc/passwd".to_string(), "/etc/shadow".to_string()]
            )
        );
        assert!(s.actions.is_empty());
    }

    #[test]
    fn quickstart_lsm_bprm_check_overrides_and_posts() {
        let p = parse_policy_file(&quickstart("lsm_bprm_check.yaml")).expect("parses");
        let h = &p.hooks[0];
        assert_eq!(h.lsm, LsmHook::BprmCheckSecurity);
        assert_eq!(h.args[0].ty, ArgType::LinuxBinprm);
        let s = &h.selectors[0];
        let b = s.match_binaries.as_ref().expect("matchBinaries");
        assert_eq!(b.values.len(), 2);
        assert_eq!(
            str_filter(&s.match_args[0]),
            (
                StrOp::Postfix,
                false,
                vec!["contrib/tester-progs/nop".to_string()]
            )
        );
        assert_eq!(
            s.actions,
            [
                Action::Override { error: -1 },
                Action::Post {
                    rate_limit_ms: None,
                    rate_limit_scope: RateLimitScope::Thread,
                }
            ]
        );
    }

    #[test]
    fn unknown_operator_is_reported_at_its_key_with_the_accepted_spellings() {
        let yaml = with_selector(
            "
      matchArgs:
      - index: 0
        operator: \"Foo\"
        values: [\"/etc\"]",
        );
        let e = parse_err(&yaml);
        assert_eq!(e.path, "spec.kprobes[0].selectors[0].matchArgs[0].operator");
        assert_eq!((e.line, e.column), (Some(17), Some(9)));
        assert!(
            e.message
                .starts_with("unknown operator \"Foo\" (expected one of Equal")
        );
        assert!(e.message.contains("GreaterThan (GT, gt)"), "{}", e.message);
        assert_eq!(
            e.to_string(),
            format!(
                "test.yaml:17:9: spec.kprobes[0].selectors[0].matchArgs[0].operator: {}",
                e.message
            )
        );
    }

    #[test]
    fn match_arg_index_must_be_declared() {
        let yaml = with_selector(
            "
      matchArgs:
      - index: 3
        operator: Equal
        values: [\"1\"]",
        );
        let e = parse_err(&yaml);
        assert_eq!(e.path, "spec.kprobes[0].selectors[0].matchArgs[0].index");
        assert_eq!(e.message, "arg index 3 is not declared in args");
        assert_eq!((e.line, e.column), (Some(16), Some(9)));
    }

    #[test]
    fn unknown_kprobe_call_lists_the_supported_calls() {
        let yaml = with_selector("matchActions: [{action: Post}]")
            .replace("security_file_permission", "security_inode_mkdir");
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
    fn unknown_field_is_rejected_with_its_line() {
        let yaml = with_selector(
            "
      matchArgs:
      - index: 0
        operatr: Equal
        values: [\"/etc\"]",
        );
        let e = parse_err(&yaml);
        assert_eq!(e.line, Some(17));
        assert!(
            e.message.contains("unknown field `operatr`"),
            "{}",
            e.message
        );
        assert_eq!(e.path, "spec.kprobes[0].selectors[0].matchArgs[0]");
    }

    #[test]
    fn unknown_top_level_field_is_rejected() {
        let yaml =
            with_selector("matchActions: [{action: Post}]").replace("spec:\n", "spek: 1\nspec:\n");
        let e = parse_err(&yaml);
        assert_eq!(e.line, Some(5));
        assert!(e.message.contains("unknown field `spek`"), "{}", e.message);
    }

    #[test]
    fn a_document_that_is_not_a_mapping_is_rejected_clearly() {
        let e = parse_err("- a\n- b\n");
        assert_eq!(
            e.message,
            "invalid type: sequence, expected a mapping with apiVersion, kind, metadata and spec"
        );
    }

    #[test]
    fn yaml_syntax_errors_have_a_position() {
        let e = parse_err("kind: TracingPolicy\nspec: [\n");
        assert!(e.line.is_some(), "{e}");
        let e = parse_err(
            "kind: TracingPolicy\nspec:\n  lsmhooks:\n  - hook: file_open\n    args:\n    - \
             index: 0\n     type: file\n",
        );
        assert_eq!((e.line, e.column), (Some(7), Some(6)), "{e}");
        assert_eq!(e.path, "spec.lsmhooks[0]", "{e}");
        assert!(
            e.message
                .starts_with("did not find expected key, while parsing"),
            "{e}"
        );
    }

    #[test]
    fn unknown_kind_is_rejected_like_tetragon() {
        let yaml = with_selector("matchActions: [{action: Post}]")
            .replace("kind: TracingPolicy", "kind: NetworkPolicy");
        let e = parse_err(&yaml);
        assert_eq!(e.message, "unknown CRD kind: NetworkPolicy");
        assert_eq!((e.line, e.column), (Some(2), Some(1)));
    }

    #[test]
    fn wrong_api_version_is_rejected() {
        let yaml = with_selector("matchActions: [{action: Post}]").replace("v1alpha1", "v2");
        let e = parse_err(&yaml);
        assert_eq!(e.path, "apiVersion");
    }

    #[test]
    fn bad_integer_value_is_rejected_at_the_value() {
        let yaml = with_selector(
            "
      matchArgs:
      - index: 1
        operator: Equal
        values:
        - \"4\"
        - \"four\"",
        );
        let e = parse_err(&yaml);
        assert_eq!(
            e.path,
            "spec.kprobes[0].selectors[0].matchArgs[0].values[1]"
        );
        assert_eq!(e.line, Some(20));
        assert!(
            e.message.contains("invalid integer \"four\""),
            "{}",
            e.message
        );
    }

    #[test]
    fn integers_follow_go_parse_int_base_0() {
        assert_eq!(parse_go_int("42"), Some(42));
        assert_eq!(parse_go_int("-42"), Some(-42));
        assert_eq!(parse_go_int("+7"), Some(7));
        assert_eq!(parse_go_int("0x1F"), Some(31));
        assert_eq!(parse_go_int("0X1f"), Some(31));
        assert_eq!(parse_go_int("010"), Some(8));
        assert_eq!(parse_go_int("0o17"), Some(15));
        assert_eq!(parse_go_int("0b101"), Some(5));
        assert_eq!(parse_go_int("1_000"), Some(1000));
        assert_eq!(parse_go_int("0"), Some(0));
        assert_eq!(parse_go_int("08"), None);
        assert_eq!(parse_go_int("0x"), None);
        assert_eq!(parse_go_int(""), None);
        assert_eq!(parse_go_int("-"), None);
        assert_eq!(parse_go_int(" 1"), None);
        assert_eq!(parse_go_int("1_"), None);
        assert_eq!(parse_go_int("18446744073709551615"), Some(u64::MAX as i128));
        assert_eq!(parse_go_int("18446744073709551616"), None);
    }

    #[test]
    fn signed_values_are_sign_extended_and_checked_against_the_declared_width() {
        let yaml = with_selector(
            "
      matchArgs:
      - index: 1
        operator: Equal
        values: [\"-1\", \"0x10\", \"010\", \"2147483647\"]",
        );
        let p = parse_ok(&yaml);
        assert_eq!(
            num_filter(&p.hooks[0].selectors[0].match_args[0]),
            (NumOp::Equal, vec![u64::MAX, 16, 8, 2147483647])
        );
        let e = parse_err(&yaml.replace("2147483647", "2147483648"));
        assert!(
            e.message.contains("does not fit argument 1 of type int"),
            "{}",
            e.message
        );
    }

    #[test]
    fn unsigned_values_are_zero_extended_and_reject_negatives() {
        let yaml = with_selector(
            "
      matchArgs:
      - index: 1
        operator: Mask
        values: [\"0xffffffff\"]",
        )
        .replace("type: int", "type: uint32");
        let p = parse_ok(&yaml);
        assert_eq!(
            num_filter(&p.hooks[0].selectors[0].match_args[0]),
            (NumOp::Mask, vec![0xffff_ffff])
        );
        let e = parse_err(&yaml.replace("0xffffffff", "-1"));
        assert!(e.message.contains("does not fit"), "{}", e.message);
        let e = parse_err(
            &yaml
                .replace("type: uint32", "type: uint8")
                .replace("0xffffffff", "256"),
        );
        assert!(e.message.contains("(0..=255)"), "{}", e.message);
    }

    #[test]
    fn numeric_filters_take_at_most_four_values() {
        let yaml = with_selector(
            "
      matchArgs:
      - index: 1
        operator: NotEqual
        values: [\"1\", \"2\", \"3\", \"4\", \"5\"]",
        );
        let e = parse_err(&yaml);
        assert_eq!(
            e.path,
            "spec.kprobes[0].selectors[0].matchArgs[0].values[4]"
        );
    }

    #[test]
    fn ranges_become_min_max_pairs() {
        let yaml = with_selector(
            "
      matchArgs:
      - index: 1
        operator: InRange
        values: [\"1:3\", \"-5:-2\"]",
        );
        let p = parse_ok(&yaml);
        assert_eq!(
            num_filter(&p.hooks[0].selectors[0].match_args[0]),
            (NumOp::InRange, vec![1, 3, (-5i64) as u64, (-2i64) as u64])
        );
        let e = parse_err(&yaml.replace("1:3", "3:1"));
        assert!(e.message.contains("min greater than max"), "{}", e.message);
        let e = parse_err(&yaml.replace("1:3", "7"));
        assert!(e.message.contains("min:max"), "{}", e.message);
    }

    #[test]
    fn too_long_prefix_is_rejected_but_the_limit_itself_is_fine() {
        let ok = "/".repeat(LPM_STR_LEN);
        let yaml = with_selector(&format!(
            "
      matchArgs:
      - index: 0
        operator: Prefix
        values: [\"{ok}\"]"
        ));
        parse_ok(&yaml);
        let e = parse_err(&yaml.replace(&ok, &format!("{ok}x")));
        assert_eq!(
            e.path,
            "spec.kprobes[0].selectors[0].matchArgs[0].values[0]"
        );
        assert!(e.message.contains("at most 252 bytes"), "{}", e.message);

        let eq = "/".repeat(STR_LEN);
        let yaml = yaml.replace("Prefix", "Equal").replace(&ok, &eq);
        parse_ok(&yaml);
        let e = parse_err(&yaml.replace(&eq, &format!("{eq}x")));
        assert!(e.message.contains("at most 256 bytes"), "{}", e.message);
    }

    #[test]
    fn trailing_nuls_are_trimmed_from_string_values() {
        let yaml = with_selector(
            "
      matchArgs:
      - index: 0
        operator: Equal
        values: [\"/etc/passwd\\0\", '/etc/shadow\\0', \"/etc/group\"]",
        );
        let p = parse_ok(&yaml);
        assert_eq!(
            str_filter(&p.hooks[0].selectors[0].match_args[0]).2,
            ["/etc/passwd", "/etc/shadow", "/etc/group"]
        );
    }

    #[test]
    fn empty_value_list_is_rejected() {
        let yaml = with_selector(
            "
      matchArgs:
      - index: 0
        operator: Prefix
        values: []",
        );
        let e = parse_err(&yaml);
        assert!(
            e.message.contains("needs at least one value"),
            "{}",
            e.message
        );
    }

    #[test]
    fn override_arg_error_is_forced_into_errno_range_with_a_warning() {
        let yaml = with_selector("matchActions: [{action: Override, argError: -5000}]");
        let p = parse_ok(&yaml);
        assert_eq!(
            p.hooks[0].selectors[0].actions,
            [Action::Override { error: -1 }]
        );
        assert_eq!(p.warnings.len(), 1);
        assert!(
            p.warnings[0].contains("argError -5000"),
            "{}",
            p.warnings[0]
        );
        assert!(
            p.warnings[0].starts_with("test.yaml:15:"),
            "{}",
            p.warnings[0]
        );

        let p = parse_ok(&yaml.replace("-5000", "1"));
        assert_eq!(
            p.hooks[0].selectors[0].actions,
            [Action::Override { error: -1 }]
        );
        let p = parse_ok(&yaml.replace("-5000", "-13"));
        assert_eq!(
            p.hooks[0].selectors[0].actions,
            [Action::Override { error: -13 }]
        );
        assert!(p.warnings.is_empty());
        let e = parse_err(&yaml.replace(", argError: -5000", ""));
        assert!(e.message.contains("needs argError"), "{}", e.message);
    }

    #[test]
    fn operator_aliases_are_accepted() {
        let yaml = with_selector(
            "
      matchArgs:
      - index: 1
        operator: gt
        values: [\"1\"]
      - index: 1
        operator: LT
        values: [\"9\"]
      - index: 1
        operator: mask
        values: [\"4\"]
      - index: 1
        operator: neq
        values: [\"5\"]
      - index: 0
        operator: eq
        values: [\"/a\"]
      - index: 0
        operator: notprefix
        values: [\"/b\"]
      - index: 0
        operator: postfix
        values: [\"c\"]",
        );
        let p = parse_ok(&yaml);
        let m = &p.hooks[0].selectors[0].match_args;
        assert_eq!(num_filter(&m[0]).0, NumOp::GreaterThan);
        assert_eq!(num_filter(&m[1]).0, NumOp::LessThan);
        assert_eq!(num_filter(&m[2]).0, NumOp::Mask);
        assert_eq!(num_filter(&m[3]).0, NumOp::NotEqual);
        let (op, negated, _) = str_filter(&m[4]);
        assert_eq!((op, negated), (StrOp::Equal, false));
        let (op, negated, _) = str_filter(&m[5]);
        assert_eq!((op, negated), (StrOp::Prefix, true));
        assert_eq!(str_filter(&m[6]).0, StrOp::Postfix);
    }

    #[test]
    fn network_operator_alias_is_only_valid_on_sock_arguments() {
        let yaml = with_selector(
            "
      matchArgs:
      - index: 0
        operator: Saddr
        values: [\"127.0.0.1\"]",
        );
        let e = parse_err(&yaml);
        assert_eq!(e.path, "spec.kprobes[0].selectors[0].matchArgs[0].operator");
        assert!(
            e.message
                .starts_with("operator SAddr is only valid on sock, socket and sockaddr arguments"),
            "{}",
            e.message
        );
    }

    #[test]
    fn string_operator_on_int_and_numeric_operator_on_file_are_rejected() {
        let yaml = with_selector(
            "
      matchArgs:
      - index: 1
        operator: Prefix
        values: [\"1\"]",
        );
        let e = parse_err(&yaml);
        assert!(
            e.message.contains("operator Prefix is not supported"),
            "{}",
            e.message
        );
        let yaml = yaml.replace(
            "      - index: 1\n        operator: Prefix",
            "      - index: 0\n        operator: GT",
        );
        let e = parse_err(&yaml);
        assert!(
            e.message.contains("operator GreaterThan is not supported"),
            "{}",
            e.message
        );
    }

    #[test]
    fn tetragon_operators_the_agent_lacks_say_not_supported_yet() {
        for (index, op) in [(0, "SubString"), (0, "FileType"), (1, "InMap")] {
            let yaml = with_selector(&format!(
                "
      matchArgs:
      - index: {index}
        operator: {op}
        values: [\"x\"]"
            ));
            let e = parse_err(&yaml);
            assert!(
                e.message.contains("not supported yet"),
                "{op}: {}",
                e.message
            );
        }
    }

    #[test]
    fn two_prefix_filters_on_one_argument_must_be_merged() {
        let yaml = with_selector(
            "
      matchArgs:
      - index: 0
        operator: Prefix
        values: [\"/etc\"]
      - index: 0
        operator: NotPrefix
        values: [\"/etc/ssh\"]",
        );
        let e = parse_err(&yaml);
        assert_eq!(e.path, "spec.kprobes[0].selectors[0].matchArgs[1]");
        assert!(e.message.contains("merge the values"), "{}", e.message);
        // Different families on the same argument are fine.
        parse_ok(&yaml.replace("NotPrefix", "Postfix"));
    }

    #[test]
    fn action_names_are_case_insensitive() {
        let yaml = with_selector(
            "matchActions: [{action: sigkill}, {action: NOPOST}, {action: signal, argSig: 19}]",
        );
        let p = parse_ok(&yaml);
        assert_eq!(
            p.hooks[0].selectors[0].actions,
            [
                Action::Sigkill,
                Action::NoPost,
                Action::Signal { signal: 19 }
            ]
        );
        let p = parse_ok(&with_selector(
            "matchActions: [{action: oVeRrIdE, argError: -13}]",
        ));
        assert_eq!(
            p.hooks[0].selectors[0].actions,
            [Action::Override { error: -13 }]
        );
    }

    #[test]
    fn at_most_three_actions_per_selector() {
        let yaml = with_selector(
            "matchActions: [{action: Post}, {action: Sigkill}, {action: NoPost}, {action: Post}]",
        );
        let e = parse_err(&yaml);
        assert!(e.message.contains("at most 3 actions"), "{}", e.message);
    }

    #[test]
    fn signal_needs_a_valid_signal_number() {
        let e = parse_err(&with_selector("matchActions: [{action: Signal}]"));
        assert!(e.message.contains("needs argSig"), "{}", e.message);
        let e = parse_err(&with_selector(
            "matchActions: [{action: Signal, argSig: 65}]",
        ));
        assert_eq!(
            e.path,
            "spec.kprobes[0].selectors[0].matchActions[0].argSig"
        );
    }

    #[test]
    fn post_rate_limit_is_converted_to_milliseconds() {
        for (text, ms) in [
            ("5", 5_000),
            ("10s", 10_000),
            ("2m", 120_000),
            ("1h", 3_600_000),
        ] {
            let yaml = with_selector(&format!(
                "matchActions: [{{action: Post, rateLimit: \"{text}\", kernelStackTrace: true}}]"
            ));
            let p = parse_ok(&yaml);
            assert_eq!(
                p.hooks[0].selectors[0].actions,
                [Action::Post {
                    rate_limit_ms: Some(ms),
                    rate_limit_scope: RateLimitScope::Thread,
                }],
                "{text}"
            );
        }
        let e = parse_err(&with_selector(
            "matchActions: [{action: Post, rateLimit: 5d}]",
        ));
        assert!(e.message.contains("invalid rateLimit"), "{}", e.message);
        let e = parse_err(&with_selector(
            "matchActions: [{action: Sigkill, rateLimit: 5s}]",
        ));
        assert!(
            e.message.contains("only valid with the Post"),
            "{}",
            e.message
        );
    }

    #[test]
    fn rate_limit_scope_accepts_thread_process_and_global() {
        for (text, scope) in [
            ("thread", RateLimitScope::Thread),
            ("process", RateLimitScope::Process),
            ("Global", RateLimitScope::Global),
        ] {
            let p = parse_ok(&with_selector(&format!(
                "matchActions: [{{action: Post, rateLimit: 1m, rateLimitScope: {text}}}]"
            )));
            assert_eq!(
                p.hooks[0].selectors[0].actions,
                [Action::Post {
                    rate_limit_ms: Some(60_000),
                    rate_limit_scope: scope,
                }]
            );
        }
        let e = parse_err(&with_selector(
            "matchActions: [{action: Post, rateLimit: 1m, rateLimitScope: pod}]",
        ));
        assert_eq!(
            e.path,
            "spec.kprobes[0].selectors[0].matchActions[0].rateLimitScope"
        );
    }

    #[test]
    fn actions_that_make_no_sense_at_lsm_hooks_are_rejected() {
        let e = parse_err(&with_selector(
            "matchActions: [{action: GetUrl, argUrl: \"http://x\"}]",
        ));
        assert_eq!(
            e.path,
            "spec.kprobes[0].selectors[0].matchActions[0].action"
        );
        assert!(
            e.message
                .contains("action GetUrl is not supported at LSM hooks"),
            "{}",
            e.message
        );
        let e = parse_err(&with_selector("matchActions: [{action: Explode}]"));
        assert!(e.message.contains("unknown action"), "{}", e.message);
    }

    #[test]
    fn match_binaries_map_in_to_equal_and_notin_to_negated_equal() {
        let p = parse_ok(&with_selector(
            "matchBinaries: [{operator: NotIn, values: [/bin/sh], followChildren: true}]",
        ));
        assert_eq!(
            p.hooks[0].selectors[0].match_binaries,
            Some(BinaryFilter {
                op: StrOp::Equal,
                negated: true,
                values: vec![b"/bin/sh".to_vec()],
                follow_children: true,
            })
        );
        let p = parse_ok(&with_selector(
            "matchBinaries: [{operator: Postfix, values: [sh]}]",
        ));
        let b = p.hooks[0].selectors[0]
            .match_binaries
            .as_ref()
            .expect("set");
        assert_eq!((b.op, b.negated), (StrOp::Postfix, false));
    }

    #[test]
    fn match_binaries_without_values_is_ignored() {
        let p = parse_ok(&with_selector(
            "matchBinaries: [{operator: In, values: []}]",
        ));
        assert_eq!(p.hooks[0].selectors[0].match_binaries, None);
    }

    #[test]
    fn match_binaries_rules_are_checked() {
        let e = parse_err(&with_selector(
            "matchBinaries: [{operator: Prefix, values: [/usr], followChildren: true}]",
        ));
        assert!(e.message.contains("followChildren"), "{}", e.message);
        let e = parse_err(&with_selector(
            "matchBinaries: [{operator: In, values: [/a]}, {operator: In, values: [/b]}]",
        ));
        assert_eq!(e.path, "spec.kprobes[0].selectors[0].matchBinaries[1]");
        let e = parse_err(&with_selector(
            "matchBinaries: [{operator: Equal, values: [/a]}]",
        ));
        assert!(
            e.message.contains("unknown matchBinaries operator"),
            "{}",
            e.message
        );
    }

    #[test]
    fn unimplemented_selector_fields_are_named_in_the_error() {
        let e = parse_err(&with_selector(
            "matchNamespaceChanges: [{operator: In, values: [Mnt]}]",
        ));
        assert_eq!(e.path, "spec.kprobes[0].selectors[0].matchNamespaceChanges");
        assert_eq!(e.message, "not supported yet by lsm-agent");
        assert_eq!(e.line, Some(15));
        let e = parse_err(&with_selector(
            "matchCapabilityChanges: [{operator: In, values: [CAP_SYS_ADMIN]}]",
        ));
        assert_eq!(
            e.path,
            "spec.kprobes[0].selectors[0].matchCapabilityChanges"
        );
        let e = parse_err(&with_selector(
            "matchReturnArgs: [{index: 0, operator: Equal, values: [\"0\"]}]",
        ));
        assert!(
            e.message.contains("not supported at LSM hooks"),
            "{}",
            e.message
        );
    }

    #[test]
    fn unimplemented_spec_sections_are_named_in_the_error() {
        let yaml = with_selector("matchActions: [{action: Post}]").replace(
            "spec:\n",
            "spec:\n  tracepoints:\n  - subsystem: raw_syscalls\n    event: sys_enter\n",
        );
        let e = parse_err(&yaml);
        assert_eq!(e.path, "spec.tracepoints");
        assert_eq!(
            e.to_string(),
            "test.yaml:6:3: spec.tracepoints: not supported yet by lsm-agent"
        );
        let yaml = with_selector("matchActions: [{action: Post}]").replace(
            "spec:\n",
            "spec:\n  podSelector:\n    matchLabels: {app: x}\n",
        );
        assert_eq!(parse_err(&yaml).path, "spec.podSelector");
    }

    fn sel0(p: &ir::Policy) -> &ir::Selector {
        &p.hooks[0].selectors[0]
    }

    #[test]
    fn match_pids_parse_with_defaults_and_flags() {
        let p = parse_ok(&with_selector(
            "
      matchPIDs:
      - operator: In
        values: [1, 0, 4294967295]
      - operator: NotIn
        values: [42]
        isNamespacePID: true
        followForks: true",
        ));
        assert_eq!(
            sel0(&p).match_pids,
            vec![
                PidFilter {
                    negated: false,
                    values: vec![1, 0, u32::MAX],
                    namespace_pid: false,
                    follow_forks: false,
                },
                PidFilter {
                    negated: true,
                    values: vec![42],
                    namespace_pid: true,
                    follow_forks: true,
                },
            ]
        );
    }

    #[test]
    fn match_pids_operator_must_be_in_or_not_in() {
        let e = parse_err(&with_selector(
            "
      matchPIDs:
      - operator: Equal
        values: [1]",
        ));
        assert_eq!(e.path, "spec.kprobes[0].selectors[0].matchPIDs[0].operator");
        assert_eq!((e.line, e.column), (Some(16), Some(9)));
        assert_eq!(
            e.message,
            "operator Equal is not supported in matchPIDs (expected In or NotIn)"
        );
        let e = parse_err(&with_selector("matchPIDs: [{operator: in, values: [1]}]"));
        assert_eq!(e.path, "spec.kprobes[0].selectors[0].matchPIDs[0].operator");
        assert_eq!(
            e.message,
            "unknown matchPIDs operator \"in\" (expected In or NotIn)"
        );
        let e = parse_err(&with_selector("matchPIDs: [{values: [1]}]"));
        assert_eq!(e.path, "spec.kprobes[0].selectors[0].matchPIDs[0]");
        assert_eq!(e.message, "missing operator (expected In or NotIn)");
    }

    #[test]
    fn match_pids_need_at_least_one_value() {
        let e = parse_err(&with_selector("matchPIDs: [{operator: In, values: []}]"));
        assert_eq!(e.path, "spec.kprobes[0].selectors[0].matchPIDs[0].values");
        assert_eq!(e.message, "needs at least one value");
        let e = parse_err(&with_selector("matchPIDs: [{operator: NotIn}]"));
        assert_eq!(e.path, "spec.kprobes[0].selectors[0].matchPIDs[0]");
        assert_eq!(e.message, "missing values (needs at least one value)");
    }

    #[test]
    fn only_one_follow_forks_in_filter_per_pid_kind_in_a_selector() {
        let e = parse_err(&with_selector(
            "
      matchPIDs:
      - {operator: In, values: [1], followForks: true}
      - {operator: In, values: [2], followForks: true, isNamespacePID: true}
      - {operator: In, values: [3], followForks: true}",
        ));
        assert_eq!(e.path, "spec.kprobes[0].selectors[0].matchPIDs[2]");
        assert_eq!(e.line, Some(18));
        assert_eq!(
            e.message,
            "at most one followForks In filter per kind (isNamespacePID: false) in a selector; \
             the first is matchPIDs[0] (merge the values into one filter)"
        );
        // NotIn filters, filters without followForks and the other kind do not conflict.
        let p = parse_ok(&with_selector(
            "
      matchPIDs:
      - {operator: In, values: [1], followForks: true}
      - {operator: In, values: [2], followForks: true, isNamespacePID: true}
      - {operator: NotIn, values: [3], followForks: true}
      - {operator: In, values: [4]}",
        ));
        assert_eq!(sel0(&p).match_pids.len(), 4);
    }

    #[test]
    fn match_namespaces_parse_inodes_host_ns_and_names_in_any_case() {
        let p = parse_ok(&with_selector(
            "
      matchNamespaces:
      - namespace: Pid
        operator: In
        values: [host_ns, 4026531836, \"0\"]
      - namespace: pidforchildren
        operator: NotIn
        values: [\"4294967295\"]
      - namespace: MNT
        operator: In
        values: [host_ns]",
        ));
        assert_eq!(
            sel0(&p).match_namespaces,
            vec![
                NamespaceFilter {
                    ns: NsType::Pid,
                    negated: false,
                    values: vec![NsValue::Host, NsValue::Inode(4026531836), NsValue::Inode(0)],
                },
                NamespaceFilter {
                    ns: NsType::PidForChildren,
                    negated: true,
                    values: vec![NsValue::Inode(u32::MAX)],
                },
                NamespaceFilter {
                    ns: NsType::Mnt,
                    negated: false,
                    values: vec![NsValue::Host],
                },
            ]
        );
    }

    #[test]
    fn every_tetragon_namespace_name_is_known() {
        for ns in NsType::ALL {
            let p = parse_ok(&with_selector(&format!(
                "matchNamespaces: [{{namespace: {}, operator: In, values: [host_ns]}}]",
                ns.name()
            )));
            assert_eq!(sel0(&p).match_namespaces[0].ns, ns);
        }
    }

    #[test]
    fn unknown_namespace_type_lists_the_valid_names() {
        let e = parse_err(&with_selector(
            "
      matchNamespaces:
      - namespace: Network
        operator: In
        values: [host_ns]",
        ));
        assert_eq!(
            e.path,
            "spec.kprobes[0].selectors[0].matchNamespaces[0].namespace"
        );
        assert_eq!((e.line, e.column), (Some(16), Some(9)));
        assert_eq!(
            e.message,
            "unknown namespace \"Network\" (expected one of Uts, Ipc, Mnt, Pid, \
             PidForChildren, Net, Time, TimeForChildren, Cgroup, User)"
        );
        let e = parse_err(&with_selector(
            "matchNamespaces: [{operator: In, values: [host_ns]}]",
        ));
        assert_eq!(e.path, "spec.kprobes[0].selectors[0].matchNamespaces[0]");
        assert!(
            e.message
                .starts_with("missing namespace (expected one of Uts, ")
        );
    }

    #[test]
    fn match_namespaces_operator_must_be_in_or_not_in() {
        let e = parse_err(&with_selector(
            "matchNamespaces: [{namespace: Net, operator: Prefix, values: [host_ns]}]",
        ));
        assert_eq!(
            e.path,
            "spec.kprobes[0].selectors[0].matchNamespaces[0].operator"
        );
        assert_eq!(
            e.message,
            "operator Prefix is not supported in matchNamespaces (expected In or NotIn)"
        );
    }

    #[test]
    fn namespace_values_are_decimal_u32_inodes_or_host_ns() {
        for bad in [
            "HOST_NS",
            "-1",
            "+1",
            "0x10",
            "4294967296",
            "1_000",
            "",
            "12a",
        ] {
            let e = parse_err(&with_selector(&format!(
                "matchNamespaces: [{{namespace: Net, operator: In, values: [host_ns, \"{bad}\"]}}]"
            )));
            assert_eq!(
                e.path, "spec.kprobes[0].selectors[0].matchNamespaces[0].values[1]",
                "{bad}"
            );
            assert_eq!(
                e.message,
                format!(
                    "invalid namespace value \"{bad}\" (expected host_ns or a decimal inode \
                     number up to 4294967295)"
                )
            );
        }
        let e = parse_err(&with_selector(
            "matchNamespaces: [{namespace: Net, operator: In, values: []}]",
        ));
        assert_eq!(
            e.path,
            "spec.kprobes[0].selectors[0].matchNamespaces[0].values"
        );
        assert_eq!(e.message, "needs at least one value");
    }

    #[test]
    fn match_namespaces_take_at_most_eight_values_and_ten_entries() {
        let values = |n: usize| {
            (1..=n)
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let p = parse_ok(&with_selector(&format!(
            "matchNamespaces: [{{namespace: Net, operator: In, values: [{}]}}]",
            values(8)
        )));
        assert_eq!(sel0(&p).match_namespaces[0].values.len(), 8);
        let e = parse_err(&with_selector(&format!(
            "matchNamespaces: [{{namespace: Net, operator: In, values: [{}]}}]",
            values(9)
        )));
        assert_eq!(
            e.path,
            "spec.kprobes[0].selectors[0].matchNamespaces[0].values[8]"
        );
        assert_eq!(e.message, "at most 8 values per matchNamespaces entry");

        let entry = "{namespace: Net, operator: NotIn, values: [host_ns]}";
        let entries = |n: usize| vec![entry; n].join(", ");
        // The same namespace type may appear more than once (the filters are ANDed).
        let p = parse_ok(&with_selector(&format!(
            "matchNamespaces: [{}]",
            entries(10)
        )));
        assert_eq!(sel0(&p).match_namespaces.len(), 10);
        let e = parse_err(&with_selector(&format!(
            "matchNamespaces: [{}]",
            entries(11)
        )));
        assert_eq!(e.path, "spec.kprobes[0].selectors[0].matchNamespaces[10]");
        assert_eq!(e.message, "at most 10 matchNamespaces entries per selector");
    }

    #[test]
    fn match_capabilities_build_a_mask_and_default_to_the_effective_set() {
        let p = parse_ok(&with_selector(
            "
      matchCapabilities:
      - operator: In
        values: [CAP_CHOWN, CAP_SYS_ADMIN, CAP_CHECKPOINT_RESTORE]
      - type: Permitted
        operator: NotIn
        isNamespaceCapability: true
        values: [cap_net_raw, \" CAP_BPF \"]
      - type: inheritable
        operator: In
        values: [CAP_KILL]",
        ));
        assert_eq!(
            sel0(&p).match_capabilities,
            vec![
                CapFilter {
                    set: CapSet::Effective,
                    negated: false,
                    namespace_capability: false,
                    mask: 1 | 1 << 21 | 1 << 40,
                },
                CapFilter {
                    set: CapSet::Permitted,
                    negated: true,
                    namespace_capability: true,
                    mask: 1 << 13 | 1 << 39,
                },
                CapFilter {
                    set: CapSet::Inheritable,
                    negated: false,
                    namespace_capability: false,
                    mask: 1 << 5,
                },
            ]
        );
    }

    #[test]
    fn dac_override_is_accepted_with_and_without_the_cap_prefix() {
        // Tetragon's API enum spells capability 1 `DAC_OVERRIDE`.
        let p = parse_ok(&with_selector(
            "matchCapabilities: [{operator: In, values: [DAC_OVERRIDE, CAP_DAC_OVERRIDE]}]",
        ));
        assert_eq!(sel0(&p).match_capabilities[0].mask, 1 << 1);
    }

    #[test]
    fn every_linux_capability_up_to_checkpoint_restore_is_known() {
        for (n, name) in CAPABILITIES.iter().enumerate() {
            assert_eq!(capability_number(name), Some(n as u32), "{name}");
        }
        assert_eq!(capability_number("CAP_SYS_PTRACE"), Some(19));
        assert_eq!(capability_number("SYS_ADMIN"), None);
        assert_eq!(capability_number("CAP_41"), None);
    }

    #[test]
    fn unknown_capability_is_named_at_its_value() {
        let e = parse_err(&with_selector(
            "
      matchCapabilities:
      - operator: In
        values:
        - CAP_SYS_ADMIN
        - CAP_SYS_GOD",
        ));
        assert_eq!(
            e.path,
            "spec.kprobes[0].selectors[0].matchCapabilities[0].values[1]"
        );
        assert_eq!(e.line, Some(19));
        assert_eq!(
            e.message,
            "unknown capability \"CAP_SYS_GOD\" (expected a Linux capability name, CAP_CHOWN \
             ... CAP_CHECKPOINT_RESTORE)"
        );
    }

    #[test]
    fn match_capabilities_type_operator_and_values_are_checked() {
        let e = parse_err(&with_selector(
            "matchCapabilities: [{type: Bounding, operator: In, values: [CAP_KILL]}]",
        ));
        assert_eq!(
            e.path,
            "spec.kprobes[0].selectors[0].matchCapabilities[0].type"
        );
        assert_eq!(
            e.message,
            "unknown capability type \"Bounding\" (expected Effective, Inheritable or Permitted)"
        );
        let e = parse_err(&with_selector(
            "matchCapabilities: [{operator: Mask, values: [CAP_KILL]}]",
        ));
        assert_eq!(
            e.path,
            "spec.kprobes[0].selectors[0].matchCapabilities[0].operator"
        );
        assert_eq!(
            e.message,
            "operator Mask is not supported in matchCapabilities (expected In or NotIn)"
        );
        let e = parse_err(&with_selector(
            "matchCapabilities: [{operator: In, values: []}]",
        ));
        assert_eq!(
            e.path,
            "spec.kprobes[0].selectors[0].matchCapabilities[0].values"
        );
        assert_eq!(e.message, "needs at least one value");
    }

    #[test]
    fn empty_selector_lists_are_accepted() {
        let p = parse_ok(&with_selector("matchPIDs: []\n      matchActions: []"));
        assert!(p.hooks[0].selectors[0].actions.is_empty());
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

    #[test]
    fn declared_type_must_fit_the_hook_argument() {
        let yaml =
            with_selector("matchActions: [{action: Post}]").replace("type: file", "type: int");
        let e = parse_err(&yaml);
        assert_eq!(e.path, "spec.kprobes[0].args[0].type");
        assert!(e.message.contains("use file, fd or auto"), "{}", e.message);
        let e = parse_err(&yaml.replace("type: int\n    - index: 1", "type: skb\n    - index: 1"));
        assert!(
            e.message.contains("not supported by lsm-agent"),
            "{}",
            e.message
        );
        let e = parse_err(&yaml.replace("type: int\n    - index: 1", "type: sock\n    - index: 1"));
        assert!(
            e.message
                .starts_with("type \"sock\" does not fit argument 0 of file_permission"),
            "{}",
            e.message
        );
        let e = parse_err(&yaml.replace("type: int\n    - index: 1", "type: blob\n    - index: 1"));
        assert!(e.message.contains("unknown arg type"), "{}", e.message);
    }

    #[test]
    fn auto_and_omitted_types_take_the_hook_argument_type() {
        let yaml = with_selector("matchActions: [{action: Post}]")
            .replace("      type: file\n", "      type: auto\n")
            .replace("      type: int\n", "");
        let p = parse_ok(&yaml);
        assert_eq!(p.hooks[0].args[0].ty, ArgType::File);
        assert_eq!(p.hooks[0].args[0].type_name, "file");
        assert_eq!(p.hooks[0].args[1].ty, INT32);
        assert_eq!(p.hooks[0].args[1].type_name, "int");
    }

    #[test]
    fn arg_without_counterpart_or_out_of_range_is_rejected() {
        let yaml = with_selector("matchActions: [{action: Post}]")
            .replace("security_file_permission", "security_mmap_file")
            .replace("- index: 1\n      type: int", "- index: 3\n      type: int");
        let e = parse_err(&yaml);
        assert_eq!(e.path, "spec.kprobes[0].args[1].index");
        assert!(
            e.message.contains("no counterpart at LSM hook mmap_file"),
            "{}",
            e.message
        );
        let e = parse_err(&yaml.replace("index: 3", "index: 5"));
        assert!(e.message.contains("out of range"), "{}", e.message);
    }

    #[test]
    fn lsmhooks_use_the_hook_argument_positions_directly() {
        let yaml = "\
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: m
spec:
  lsmhooks:
  - hook: mmap_file
    message: mapping
    tags: [a]
    args:
    - index: 2
      type: ulong
      label: prot
    selectors:
    - label: s0
      matchArgs:
      - index: 2
        operator: Mask
        values: [\"4\"]
";
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
    fn match_args_args_form_picks_the_declared_arg_by_position() {
        let yaml = with_selector(
            "
      matchArgs:
      - args: [1]
        operator: Equal
        values: [\"4\"]",
        );
        let p = parse_ok(&yaml);
        assert_eq!(p.hooks[0].selectors[0].match_args[0].spec_index, 1);
        let e = parse_err(&yaml.replace("args: [1]", "args: [0, 1]"));
        assert!(e.message.contains("not supported yet"), "{}", e.message);
    }

    #[test]
    fn arg_features_the_agent_lacks_are_rejected() {
        let yaml = with_selector("matchActions: [{action: Post}]")
            .replace("type: file\n", "type: file\n      resolve: f_path.dentry\n");
        let e = parse_err(&yaml);
        assert_eq!(e.path, "spec.kprobes[0].args[0].resolve");
        assert_eq!(e.message, "not supported yet by lsm-agent");
        let yaml = with_selector("matchActions: [{action: Post}]")
            .replace("type: file\n", "type: file\n      maxData: true\n");
        assert_eq!(parse_err(&yaml).path, "spec.kprobes[0].args[0].maxData");
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
    fn unquoted_numbers_in_values_keep_their_text() {
        let yaml = with_selector(
            "
      matchArgs:
      - index: 1
        operator: Equal
        values: [010, 0x10]",
        );
        let p = parse_ok(&yaml);
        assert_eq!(
            num_filter(&p.hooks[0].selectors[0].match_args[0]),
            (NumOp::Equal, vec![8, 16])
        );
    }

    #[test]
    fn env_references_are_expanded_before_parsing() {
        let yaml = with_selector(
            "
      matchArgs:
      - index: 0
        operator: Prefix
        values:
        - \"${ROOT}/shadow\"",
        );
        let p = parse_policy_with_env(&yaml, Path::new("test.yaml"), |n| {
            (n == "ROOT").then(|| "/etc".to_string())
        })
        .expect("expands and parses");
        let FilterKind::Str { values, .. } = &p.hooks[0].selectors[0].match_args[0].kind else {
            panic!("string filter expected");
        };
        assert_eq!(values, &[b"/etc/shadow".to_vec()]);
    }

    #[test]
    fn parse_policy_does_not_expand_env_references() {
        // gRPC AddTracingPolicy: the server must not use its own environment.
        let yaml = with_selector(
            "
      matchArgs:
      - index: 0
        operator: Equal
        values:
        - \"${HOME}\"",
        );
        let p = parse_ok(&yaml);
        let FilterKind::Str { values, .. } = &p.hooks[0].selectors[0].match_args[0].kind else {
            panic!("string filter expected");
        };
        assert_eq!(values, &[b"${HOME}".to_vec()]);
    }

    #[test]
    fn unset_env_variable_is_an_error_at_its_position() {
        let src = std::fs::read_to_string(quickstart("network_egress_cluster_enforce.yaml"))
            .expect("quickstart file");
        let e = parse_policy_with_env(&src, Path::new("net.yaml"), |n| {
            (n == "SERVICECIDR").then(|| "10.96.0.0/12".to_string())
        })
        .expect_err("PODCIDR unset");
        assert_eq!(e.message, "environment variable PODCIDR is not set");
        assert_eq!((e.line, e.column), (Some(18), Some(11)));
        assert_eq!(
            e.path,
            "spec.kprobes[0].selectors[0].matchArgs[0].values[1]"
        );
        assert!(
            e.to_string().starts_with(
                "net.yaml:18:11: spec.kprobes[0].selectors[0].matchArgs[0].values[1]: \
                 environment variable PODCIDR is not set"
            ),
            "{e}"
        );
    }

    #[test]
    fn network_quickstart_parses_once_its_cidrs_are_expanded() {
        let src = std::fs::read_to_string(quickstart("network_egress_cluster_enforce.yaml"))
            .expect("quickstart file");
        let p = parse_policy_with_env(&src, Path::new("net.yaml"), quickstart_net_env)
            .unwrap_or_else(|e| panic!("{e}"));
        let FilterKind::Addr { values, .. } = &p.hooks[0].selectors[0].match_args[0].kind else {
            panic!("address filter expected");
        };
        assert_eq!(values[1], net("10.0.0.0/16"));
        assert_eq!(values[2], net("10.96.0.0/12"));
        // A bad expansion is reported at the reference in the file as written.
        let e = parse_policy_with_env(&src, Path::new("net.yaml"), |n| {
            (n == "PODCIDR" || n == "SERVICECIDR").then(|| "10.0.0.0/40".to_string())
        })
        .expect_err("bad CIDR");
        assert_eq!(
            e.path,
            "spec.kprobes[0].selectors[0].matchArgs[0].values[1]"
        );
        assert_eq!((e.line, e.column), (Some(18), Some(11)));
        assert!(e.message.starts_with("invalid CIDR \"10.0.0.0/40\""), "{e}");
    }

    #[test]
    fn errors_after_expansion_point_into_the_original_text() {
        // The value grows from 7 to 13 characters; the operator error is on a later line and
        // the bad value after the reference on the same line.
        let yaml = with_selector(
            "
      matchArgs:
      - index: 1
        operator: Equal
        values: [${N}, zz]",
        );
        let lookup = |n: &str| (n == "N").then(|| "0x00000000001".to_string());
        let e = parse_policy_with_env(&yaml, Path::new("test.yaml"), lookup)
            .expect_err("zz is not an integer");
        let raw = parse_err(&yaml.replace("${N}", "1")).line;
        assert_eq!(e.line, raw);
        let line = yaml.lines().nth(e.line.expect("line") - 1).expect("line");
        assert_eq!(e.column, line.find("zz").map(|c| c + 1), "{e}");
    }

    #[test]
    fn reading_a_missing_file_is_a_policy_error() {
        let e = parse_policy_file(Path::new("/nonexistent/policy.yaml")).expect_err("missing");
        assert_eq!(e.file, Path::new("/nonexistent/policy.yaml"));
        assert!(
            e.message.contains("cannot read policy file"),
            "{}",
            e.message
        );
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

    // ---- network policies (socket_connect) ----

    /// A `security_socket_connect` kprobe declaring `sock` (0), `sockaddr` (1) and `int` (2),
    /// with one selector given as YAML indented for a `selectors:` list item body.
    fn with_net_selector(selector: &str) -> String {
        format!(
            "\
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: net
spec:
  kprobes:
  - call: security_socket_connect
    syscall: false
    args:
    - index: 0
      type: sock
    - index: 1
      type: sockaddr
    - index: 2
      type: int
    selectors:
    - {}
",
            selector.trim_start()
        )
    }

    /// One matchArgs filter on argument `index` of the socket_connect policy.
    fn net_filter_yaml(index: u32, operator: &str, values: &[&str]) -> String {
        let values = values
            .iter()
            .map(|v| format!("\"{v}\""))
            .collect::<Vec<_>>()
            .join(", ");
        with_net_selector(&format!(
            "
      matchArgs:
      - index: {index}
        operator: \"{operator}\"
        values: [{values}]"
        ))
    }

    fn net_filter(index: u32, operator: &str, values: &[&str]) -> FilterKind {
        let p = parse_ok(&net_filter_yaml(index, operator, values));
        p.hooks[0].selectors[0].match_args[0].kind.clone()
    }

    fn net_err(index: u32, operator: &str, values: &[&str]) -> PolicyError {
        parse_err(&net_filter_yaml(index, operator, values))
    }

    fn net(s: &str) -> AddrValue {
        AddrValue::Net(s.parse().expect("test network"))
    }

    fn addr_filter(field: NetField, negated: bool, values: &[&str]) -> FilterKind {
        FilterKind::Addr {
            field,
            negated,
            values: values.iter().map(|v| net(v)).collect(),
        }
    }

    fn port_filter(field: NetField, negated: bool, ranges: &[(u16, u16)]) -> FilterKind {
        FilterKind::Port {
            field,
            negated,
            ranges: ranges.to_vec(),
        }
    }

    const MATCH_ARG0: &str = "spec.kprobes[0].selectors[0].matchArgs[0]";

    fn quickstart_net_env(name: &str) -> Option<String> {
        match name {
            "PODCIDR" => Some("10.0.0.0/16".to_string()),
            "SERVICECIDR" => Some("10.96.0.0/12".to_string()),
            _ => None,
        }
    }

    #[test]
    fn quickstart_network_policies_parse_into_tcp_only_socket_connect_with_not_daddr() {
        for (name, kind, actions) in [
            (
                "network_egress_cluster.yaml",
                PolicyKind::TracingPolicy,
                vec![],
            ),
            (
                "network_egress_cluster_enforce.yaml",
                PolicyKind::TracingPolicyNamespaced,
                vec![Action::Sigkill],
            ),
        ] {
            let src = std::fs::read_to_string(quickstart(name)).expect("quickstart file");
            let p = parse_policy_with_env(&src, &quickstart(name), quickstart_net_env)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(p.kind, kind, "{name}");
            assert_eq!(p.hooks.len(), 1, "{name}");
            let h = &p.hooks[0];
            assert_eq!(h.lsm, LsmHook::SocketConnect, "{name}");
            assert_eq!(
                h.origin,
                HookOrigin::Kprobe {
                    call: "tcp_connect".into()
                }
            );
            assert!(h.tcp_only, "{name}");
            assert_eq!(h.args.len(), 1);
            assert_eq!(h.args[0].ty, ArgType::Sock);
            assert_eq!(h.args[0].type_name, "sock");
            assert_eq!(h.args[0].lsm_index, 0);
            assert_eq!(h.selectors.len(), 1);
            let s = &h.selectors[0];
            assert_eq!(s.match_args.len(), 1);
            assert_eq!(
                s.match_args[0].kind,
                addr_filter(
                    NetField::Dest,
                    true,
                    &["127.0.0.1/32", "10.0.0.0/16", "10.96.0.0/12"]
                ),
                "{name}"
            );
            assert_eq!(s.actions, actions, "{name}");
        }
    }

    #[test]
    fn lsmhook_socket_connect_and_security_socket_connect_are_not_tcp_only() {
        let p = parse_ok(&with_net_selector("matchActions: [{action: Post}]"));
        assert_eq!(p.hooks[0].lsm, LsmHook::SocketConnect);
        assert!(!p.hooks[0].tcp_only);
        let p = parse_ok(
            "\
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: l
spec:
  lsmhooks:
  - hook: socket_connect
    args:
    - index: 0
    - index: 1
      type: auto
    - index: 2
",
        );
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
        let p = parse_ok(
            "\
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: t
spec:
  kprobes:
  - call: tcp_connect
    args:
    - index: 0
      type: socket
",
        );
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
        let e = parse_err(
            "\
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: t
spec:
  kprobes:
  - call: tcp_connect
    args:
    - index: 1
      type: sockaddr
",
        );
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
    fn sockaddr_type_does_not_fit_the_socket_argument() {
        let yaml = with_net_selector("matchActions: [{action: Post}]").replacen(
            "type: sock\n",
            "type: sockaddr\n",
            1,
        );
        let e = parse_err(&yaml);
        assert_eq!(e.path, "spec.kprobes[0].args[0].type");
        assert!(
            e.message
                .contains("does not fit argument 0 of socket_connect")
                && e.message.contains("use sock, socket or auto"),
            "{}",
            e.message
        );
        let yaml = with_net_selector("matchActions: [{action: Post}]").replacen(
            "type: int\n",
            "type: sock\n",
            1,
        );
        let e = parse_err(&yaml);
        assert_eq!(e.path, "spec.kprobes[0].args[2].type");
    }

    #[test]
    fn address_operators_on_sock_look_at_destination_or_source_with_every_alias() {
        for (spellings, field, negated) in [
            (["DAddr", "daddr", "Daddr"], NetField::Dest, false),
            (["NotDAddr", "notdaddr", "NotDaddr"], NetField::Dest, true),
            (["SAddr", "saddr", "Saddr"], NetField::Source, false),
            (["NotSAddr", "notsaddr", "NotSaddr"], NetField::Source, true),
        ] {
            for op in spellings {
                assert_eq!(
                    net_filter(0, op, &["10.1.2.3"]),
                    addr_filter(field, negated, &["10.1.2.3/32"]),
                    "{op}"
                );
            }
        }
    }

    #[test]
    fn port_operators_on_sock_look_at_destination_or_source_with_every_alias() {
        for (spellings, field, negated) in [
            (["DPort", "dport", "Dport"], NetField::Dest, false),
            (["NotDPort", "notdport", "NotDport"], NetField::Dest, true),
            (["SPort", "sport", "Sport"], NetField::Source, false),
            (["NotSPort", "notsport", "NotSport"], NetField::Source, true),
        ] {
            for op in spellings {
                assert_eq!(
                    net_filter(0, op, &["443"]),
                    port_filter(field, negated, &[(443, 443)]),
                    "{op}"
                );
            }
        }
    }

    #[test]
    fn privileged_port_operators_match_ports_0_to_1023_without_values() {
        for (spellings, field, negated) in [
            (
                ["DPortPriv", "dportpriv", "DportPriv"],
                NetField::Dest,
                false,
            ),
            (
                ["NotDPortPriv", "notdportpriv", "NotDportPriv"],
                NetField::Dest,
                true,
            ),
            (
                ["SPortPriv", "sportpriv", "SportPriv"],
                NetField::Source,
                false,
            ),
            (
                ["NotSPortPriv", "notsportpriv", "NotSportPriv"],
                NetField::Source,
                true,
            ),
        ] {
            for op in spellings {
                // No `values` key at all, as Tetragon's examples write it.
                let p = parse_ok(&with_net_selector(&format!(
                    "
      matchArgs:
      - index: 0
        operator: {op}"
                )));
                assert!(p.warnings.is_empty(), "{:?}", p.warnings);
                assert_eq!(
                    p.hooks[0].selectors[0].match_args[0].kind,
                    port_filter(field, negated, &[(0, 1023)]),
                    "{op}"
                );
            }
        }
    }

    #[test]
    fn values_of_a_privileged_port_operator_are_ignored_with_a_warning() {
        let p = parse_ok(&net_filter_yaml(0, "DPortPriv", &["8080"]));
        assert_eq!(
            p.hooks[0].selectors[0].match_args[0].kind,
            port_filter(NetField::Dest, false, &[(0, 1023)])
        );
        assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
        assert!(
            p.warnings[0].contains(&format!(
                "{MATCH_ARG0}.values: values ignored: DPortPriv matches the privileged ports \
                 0-1023 and takes no values"
            )),
            "{}",
            p.warnings[0]
        );
    }

    #[test]
    fn protocol_and_family_on_sock_are_socket_attribute_filters() {
        for op in ["Protocol", "protocol"] {
            assert_eq!(
                net_filter(0, op, &["IPPROTO_TCP"]),
                FilterKind::SockAttr {
                    attr: SockAttr::Protocol,
                    values: vec![6]
                }
            );
        }
        for op in ["Family", "family"] {
            assert_eq!(
                net_filter(0, op, &["AF_INET6"]),
                FilterKind::SockAttr {
                    attr: SockAttr::Family,
                    values: vec![10]
                }
            );
        }
    }

    #[test]
    fn sockaddr_saddr_and_sport_match_the_destination_connected_to() {
        for (op, want) in [
            (
                "SAddr",
                addr_filter(NetField::Dest, false, &["192.0.2.1/32"]),
            ),
            (
                "saddr",
                addr_filter(NetField::Dest, false, &["192.0.2.1/32"]),
            ),
            (
                "NotSAddr",
                addr_filter(NetField::Dest, true, &["192.0.2.1/32"]),
            ),
            (
                "NotSaddr",
                addr_filter(NetField::Dest, true, &["192.0.2.1/32"]),
            ),
        ] {
            assert_eq!(net_filter(1, op, &["192.0.2.1"]), want, "{op}");
        }
        for (op, want) in [
            ("SPort", port_filter(NetField::Dest, false, &[(53, 53)])),
            ("Sport", port_filter(NetField::Dest, false, &[(53, 53)])),
            ("NotSPort", port_filter(NetField::Dest, true, &[(53, 53)])),
            (
                "SPortPriv",
                port_filter(NetField::Dest, false, &[(0, 1023)]),
            ),
            (
                "NotSPortPriv",
                port_filter(NetField::Dest, true, &[(0, 1023)]),
            ),
            (
                "NotSportPriv",
                port_filter(NetField::Dest, true, &[(0, 1023)]),
            ),
        ] {
            assert_eq!(net_filter(1, op, &["53"]), want, "{op}");
        }
        assert_eq!(
            net_filter(1, "Family", &["AF_UNIX"]),
            FilterKind::SockAttr {
                attr: SockAttr::Family,
                values: vec![1]
            }
        );
    }

    #[test]
    fn sockaddr_rejects_destination_protocol_and_state_operators() {
        for op in [
            "DAddr",
            "NotDAddr",
            "DPort",
            "NotDPort",
            "DPortPriv",
            "NotDPortPriv",
            "Protocol",
            "State",
        ] {
            let e = net_err(1, op, &["1"]);
            assert_eq!(e.path, format!("{MATCH_ARG0}.operator"), "{op}");
            assert!(
                e.message.starts_with(&format!(
                    "operator {op} is not supported on a sockaddr argument: sockaddr only \
                     supports [Not]SAddr, [Not]SPort, [Not]SPortPriv and Family"
                )),
                "{}",
                e.message
            );
            assert!(
                e.message.contains("argument 1 is of type sockaddr"),
                "{}",
                e.message
            );
        }
    }

    #[test]
    fn state_on_sock_is_rejected_because_the_socket_has_no_tcp_state_yet() {
        for op in ["State", "state"] {
            let e = net_err(0, op, &["TCP_SYN_SENT"]);
            assert_eq!(e.path, format!("{MATCH_ARG0}.operator"));
            assert!(
                e.message.starts_with(
                    "operator State is not supported at socket_connect (the socket has no TCP \
                     state yet)"
                ),
                "{}",
                e.message
            );
        }
    }

    #[test]
    fn value_operators_on_sock_and_sockaddr_are_rejected_like_tetragon() {
        for index in [0, 1] {
            for op in [
                "Equal", "NotEqual", "Prefix", "Postfix", "GT", "LessThan", "Mask", "InRange",
                "InMap", "In",
            ] {
                let e = net_err(index, op, &["1"]);
                assert_eq!(e.path, format!("{MATCH_ARG0}.operator"), "{op}");
                let canonical = operator_name(parse_operator(op).expect("known"));
                assert!(
                    e.message.contains(&format!(
                        "sock, socket and sockaddr arguments do not support operator {canonical}"
                    )),
                    "{}",
                    e.message
                );
            }
        }
    }

    #[test]
    fn network_operators_on_other_arguments_are_rejected() {
        for op in ["DAddr", "SPort", "DPortPriv", "Protocol", "Family", "State"] {
            let e = net_err(2, op, &["1"]);
            assert_eq!(e.path, format!("{MATCH_ARG0}.operator"));
            assert!(
                e.message.starts_with(&format!(
                    "operator {op} is only valid on sock, socket and sockaddr arguments \
                     (argument 2 is of type int"
                )),
                "{}",
                e.message
            );
        }
        let e = parse_err(&with_selector(
            "
      matchArgs:
      - index: 0
        operator: NotDAddr
        values: [\"10.0.0.0/8\"]",
        ));
        assert!(
            e.message.starts_with(
                "operator NotDAddr is only valid on sock, socket and sockaddr arguments \
                 (argument 0 is of type file"
            ),
            "{}",
            e.message
        );
    }

    #[test]
    fn unknown_operator_error_lists_the_network_operators() {
        let e = net_err(0, "DestAddr", &["1.2.3.4"]);
        assert!(
            e.message.contains("DAddr (daddr, Daddr)")
                && e.message
                    .contains("NotSPortPriv (notsportpriv, NotSportPriv)")
                && e.message.contains("Family (family)"),
            "{}",
            e.message
        );
    }

    #[test]
    fn addresses_become_host_networks_and_cidrs_stay_as_written() {
        assert_eq!(
            net_filter(
                0,
                "DAddr",
                &[
                    "127.0.0.1",
                    "10.0.0.0/8",
                    "2001:db8::1",
                    "fd00::/8",
                    "::ffff:10.1.2.3",
                    "::ffff:10.0.0.0/104",
                    "0.0.0.0/0",
                ]
            ),
            addr_filter(
                NetField::Dest,
                false,
                &[
                    "127.0.0.1/32",
                    "10.0.0.0/8",
                    "2001:db8::1/128",
                    "fd00::/8",
                    "::ffff:10.1.2.3/128",
                    "::ffff:10.0.0.0/104",
                    "0.0.0.0/0",
                ]
            )
        );
    }

    #[test]
    fn dns_values_are_lowercased_without_the_trailing_dot() {
        assert_eq!(
            net_filter(
                0,
                "DAddr",
                &[
                    "dns:Example.COM.",
                    "dns:api.internal",
                    "dns:_svc.my-host",
                    "10.0.0.1"
                ]
            ),
            FilterKind::Addr {
                field: NetField::Dest,
                negated: false,
                values: vec![
                    AddrValue::Dns("example.com".into()),
                    AddrValue::Dns("api.internal".into()),
                    AddrValue::Dns("_svc.my-host".into()),
                    net("10.0.0.1/32"),
                ]
            }
        );
        let long_ok = format!(
            "dns:{}",
            vec!["a".repeat(63); 3].join(".") + "." + &"b".repeat(61)
        );
        assert_eq!(long_ok.len() - 4, 253);
        let FilterKind::Addr { values, .. } = net_filter(0, "NotDAddr", &[&long_ok]) else {
            panic!("address filter expected");
        };
        assert!(matches!(&values[0], AddrValue::Dns(n) if n.len() == 253));
    }

    #[test]
    fn invalid_dns_names_are_errors_at_their_value() {
        let too_long = format!("dns:{}", vec!["a".repeat(63); 4].join("."));
        let long_label = format!("dns:{}.com", "a".repeat(64));
        for bad in [
            "dns:",
            "dns:.",
            "dns:a..b",
            "dns:.example.com",
            "dns:exa mple.com",
            "dns:*.example.com",
            "dns:exämple.com",
            "dns:example.com..",
            &too_long,
            &long_label,
        ] {
            let e = net_err(0, "DAddr", &["10.0.0.1", bad]);
            assert_eq!(e.path, format!("{MATCH_ARG0}.values[1]"), "{bad}");
            assert!(e.message.starts_with("invalid DNS name"), "{}", e.message);
        }
    }

    #[test]
    fn invalid_addresses_and_cidrs_are_errors_at_their_value() {
        for (bad, what) in [
            ("10.0.0.0/33", "invalid CIDR \"10.0.0.0/33\""),
            ("10.0.0/8", "invalid CIDR"),
            ("fd00::/129", "invalid CIDR"),
            ("10.0.0.0/", "invalid CIDR"),
            ("300.1.1.1", "invalid address \"300.1.1.1\""),
            ("example.com", "invalid address"),
            ("", "invalid address"),
            ("10.0.0.1 ", "invalid address"),
        ] {
            let e = net_err(0, "NotDAddr", &["127.0.0.1", bad]);
            assert_eq!(e.path, format!("{MATCH_ARG0}.values[1]"), "{bad:?}");
            assert!(e.message.starts_with(what), "{bad:?}: {}", e.message);
        }
    }

    #[test]
    fn ports_are_numbers_or_min_max_ranges_in_either_order() {
        assert_eq!(
            net_filter(
                0,
                "DPort",
                &["0", "80", "8000:8080", "9090:9000", "65535", "080"]
            ),
            port_filter(
                NetField::Dest,
                false,
                &[
                    (0, 0),
                    (80, 80),
                    (8000, 8080),
                    (9000, 9090),
                    (65535, 65535),
                    (80, 80)
                ]
            )
        );
    }

    #[test]
    fn invalid_ports_are_errors_at_their_value() {
        for bad in [
            "65536", "-1", "+80", "80:", ":80", "1:2:3", "http", "0x50", "80-90", "", "1:70000",
        ] {
            let e = net_err(0, "NotSPort", &["22", bad]);
            assert_eq!(e.path, format!("{MATCH_ARG0}.values[1]"), "{bad:?}");
            assert!(
                e.message.starts_with(&format!("invalid port \"{bad}\"")),
                "{}",
                e.message
            );
        }
    }

    #[test]
    fn protocol_values_are_numbers_names_or_ranges() {
        let values = |v: &[&str]| match net_filter(0, "Protocol", v) {
            FilterKind::SockAttr {
                attr: SockAttr::Protocol,
                values,
            } => values,
            other => panic!("{other:?}"),
        };
        assert_eq!(values(&["6", "IPPROTO_UDP"]), [6, 17]);
        assert_eq!(
            values(&[
                "IPPROTO_ICMP",
                "IPPROTO_ICMPV6",
                "IPPROTO_RAW",
                "IPPROTO_SCTP",
                "IPPROTO_UDPLITE",
                "IPPROTO_MPTCP",
                "ipproto_tcp",
            ]),
            [1, 58, 255, 132, 136, 262, 6]
        );
        // A range stands for every number in it; repeats count once.
        assert_eq!(values(&["17:15", "16", "6"]), [15, 16, 17, 6]);
    }

    #[test]
    fn family_values_are_numbers_or_af_names() {
        let values = |v: &[&str]| match net_filter(0, "Family", v) {
            FilterKind::SockAttr {
                attr: SockAttr::Family,
                values,
            } => values,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            values(&[
                "AF_INET",
                "AF_INET6",
                "AF_UNIX",
                "AF_NETLINK",
                "AF_PACKET",
                "44"
            ]),
            [2, 10, 1, 16, 17, 44]
        );
        assert_eq!(values(&["AF_LOCAL", "af_decnet"]), [1, 12]);
    }

    #[test]
    fn invalid_protocol_and_family_values_are_errors_at_their_value() {
        for (op, bad, start) in [
            (
                "Protocol",
                "IPPROTO_FOO",
                "invalid Protocol value \"IPPROTO_FOO\"",
            ),
            ("Protocol", "65536", "invalid Protocol value"),
            ("Protocol", "-6", "invalid Protocol value"),
            ("Protocol", "6:", "invalid Protocol value"),
            ("Family", "AF_INET7", "invalid Family value \"AF_INET7\""),
            ("Family", "inet", "invalid Family value"),
        ] {
            let e = net_err(0, op, &["2", bad]);
            assert_eq!(e.path, format!("{MATCH_ARG0}.values[1]"), "{bad}");
            assert!(e.message.starts_with(start), "{}", e.message);
        }
    }

    #[test]
    fn more_than_eight_protocol_values_are_rejected() {
        let e = net_err(0, "Protocol", &["9", "0:7"]);
        assert_eq!(e.path, format!("{MATCH_ARG0}.values[1]"));
        assert!(
            e.message
                .starts_with("at most 8 different Protocol values per filter"),
            "{}",
            e.message
        );
        // Eight different ones fit.
        assert!(matches!(
            net_filter(0, "Protocol", &["0:7", "3"]),
            FilterKind::SockAttr { values, .. } if values.len() == 8
        ));
    }

    #[test]
    fn network_value_operators_need_at_least_one_value() {
        for op in [
            "DAddr", "NotSAddr", "DPort", "NotSPort", "Protocol", "Family",
        ] {
            let e = net_err(0, op, &[]);
            assert_eq!(e.path, format!("{MATCH_ARG0}.values"), "{op}");
            assert_eq!(e.message, format!("operator {op} needs at least one value"));
        }
        let e = parse_err(&with_net_selector(
            "
      matchArgs:
      - index: 1
        operator: SAddr",
        ));
        assert_eq!(e.path, MATCH_ARG0);
        assert_eq!(e.message, "operator SAddr needs at least one value");
    }

    #[test]
    fn more_addresses_than_the_kernel_maps_hold_are_rejected() {
        let n = ADDR_ENTRIES as usize + 1;
        let values: Vec<String> = (0..n)
            .map(|i| format!("10.{}.{}.0/24", i / 256 % 256, i % 256))
            .collect();
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        let e = net_err(0, "NotDAddr", &refs);
        assert_eq!(e.path, format!("{MATCH_ARG0}.values[{ADDR_ENTRIES}]"));
        assert!(
            e.message
                .starts_with(&format!("at most {ADDR_ENTRIES} addresses per filter")),
            "{}",
            e.message
        );
    }

    /// A selector with the given `(index, operator, value)` filters.
    fn net_filters_yaml(filters: &[(u32, &str, &str)]) -> String {
        let body: String = filters
            .iter()
            .map(|(i, op, v)| {
                format!(
                    "
      - index: {i}
        operator: {op}
        values: [\"{v}\"]"
                )
            })
            .collect();
        with_net_selector(&format!("\n      matchArgs:{body}"))
    }

    #[test]
    fn a_second_non_negated_address_filter_on_one_field_is_rejected_naming_the_first() {
        let e = parse_err(&net_filters_yaml(&[
            (0, "DAddr", "10.0.0.0/8"),
            (0, "DPort", "443"),
            (0, "daddr", "10.1.0.0/16"),
        ]));
        assert_eq!(e.path, "spec.kprobes[0].selectors[0].matchArgs[2]");
        assert_eq!(e.line, Some(24));
        assert!(
            e.message.starts_with(
                "a second DAddr filter on the destination address in the same selector (the \
                 first is matchArgs[0]) is not supported by lsm-agent"
            ) && e.message.contains("merge the values into one filter"),
            "{}",
            e.message
        );
        // sockaddr SAddr is the destination too.
        let e = parse_err(&net_filters_yaml(&[
            (0, "DAddr", "10.0.0.0/8"),
            (1, "SAddr", "10.1.0.0/16"),
        ]));
        assert_eq!(e.path, "spec.kprobes[0].selectors[0].matchArgs[1]");
        assert!(
            e.message
                .starts_with("a second SAddr filter on the destination address"),
            "{}",
            e.message
        );
        let e = parse_err(&net_filters_yaml(&[
            (0, "SAddr", "10.0.0.1"),
            (0, "SAddr", "10.0.0.2"),
        ]));
        assert!(
            e.message
                .starts_with("a second SAddr filter on the source address"),
            "{}",
            e.message
        );
    }

    #[test]
    fn a_second_non_negated_port_filter_on_one_field_is_rejected_naming_the_first() {
        let e = parse_err(&net_filters_yaml(&[
            (0, "DPort", "443"),
            (0, "DPortPriv", "0"),
        ]));
        assert_eq!(e.path, "spec.kprobes[0].selectors[0].matchArgs[1]");
        assert!(
            e.message.starts_with(
                "a second DPortPriv filter on the destination port in the same selector (the \
                 first is matchArgs[0])"
            ),
            "{}",
            e.message
        );
        let e = parse_err(&net_filters_yaml(&[
            (0, "DPort", "443"),
            (1, "SPort", "80"),
        ]));
        assert!(
            e.message
                .starts_with("a second SPort filter on the destination port"),
            "{}",
            e.message
        );
    }

    #[test]
    fn negated_and_different_field_network_filters_may_repeat_in_a_selector() {
        let p = parse_ok(&net_filters_yaml(&[
            (0, "NotDAddr", "10.0.0.0/8"),
            (0, "NotDAddr", "192.168.0.0/16"),
            (0, "DAddr", "0.0.0.0/0"),
            (0, "SAddr", "127.0.0.1"),
            (1, "NotSAddr", "172.16.0.0/12"),
        ]));
        assert_eq!(p.hooks[0].selectors[0].match_args.len(), 5);
        let p = parse_ok(&net_filters_yaml(&[
            (0, "NotDPort", "22"),
            (0, "NotDPortPriv", "0"),
            (0, "DPort", "1:65535"),
            (0, "SPort", "0"),
            (0, "Protocol", "6"),
        ]));
        assert_eq!(p.hooks[0].selectors[0].match_args.len(), 5);
        // Each selector has its own sets.
        let yaml = net_filters_yaml(&[(0, "DAddr", "10.0.0.0/8")]).replace(
            "    selectors:\n",
            "    selectors:\n    - matchArgs: [{index: 0, operator: DAddr, values: [\"1.1.1.1\"]}]\n",
        );
        assert_eq!(parse_ok(&yaml).hooks[0].selectors.len(), 2);
    }

    #[test]
    fn network_filters_keep_their_argument_positions() {
        let p = parse_ok(&net_filters_yaml(&[
            (1, "SAddr", "10.0.0.1"),
            (2, "eq", "16"),
        ]));
        let f = &p.hooks[0].selectors[0].match_args;
        assert_eq!(
            (f[0].spec_index, f[0].lsm_index, f[0].ty),
            (1, 1, ArgType::Sockaddr)
        );
        assert_eq!((f[1].spec_index, f[1].lsm_index), (2, 2));
        assert_eq!(num_filter(&f[1]), (NumOp::Equal, vec![16]));
    }
}
