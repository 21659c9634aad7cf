//! `args[]` of a hook: index, type and the options the agent does not implement.

use lsm_shared::{MAX_ARGS, MAX_RESOLVE_DEPTH, NUM_DATA, SIZE_RETVAL};

use super::hooks::c_decl;
use super::{VResult, invalid, not_supported};
use crate::policy::hooks::{self, DeclaredType, HookInfo};
use crate::policy::ir;
use crate::policy::model as raw;

/// Highest `args[].index` (Tetragon's `MAX_POSSIBLE_ARGS` - 1).
pub(super) const MAX_ARG_INDEX: u32 = 4;

/// An argument of a kprobe, kretprobe or tracepoint target, read by the generic reader:
/// `None` for a `nop` argument (declared, never read). `position` is its place among the
/// values the reader produces; `user`: pointers are user memory.
/// Where a generic argument is read: what `returnCopy` and `sizeArgIndex` can mean there.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum ArgSite {
    /// A kprobe's (or kretprobe's) argument: the call has raw arguments and a return.
    Kprobe,
    /// A tracepoint field: no return, and raw positions are not the call's arguments.
    Tracepoint,
    /// A raw tracepoint's `TP_PROTO` argument: typed by BTF as a kernel function's, no
    /// return.
    RawTracepoint,
    /// An LSM hook's argument followed by `resolve` (read by the generic reader): typed by
    /// BTF, no return.
    Lsm,
    /// A kretprobe's `returnArg`.
    Return,
    /// A uprobe's argument: raw arguments (user memory), no return.
    Uprobe,
}

pub(super) fn convert_generic_arg(
    apath: &str,
    a: &raw::Arg,
    position: u32,
    user: bool,
    site: ArgSite,
    what: &str,
) -> VResult<Option<ir::ArgSpec>> {
    let resolve = resolve_path(apath, a)?;
    // Followed by the kernel's BTF: kernel functions' and raw tracepoints' arguments have
    // it; a syscall's user pointers, a tracepoint's record fields and a user-space
    // function's arguments do not.
    let resolvable = matches!(site, ArgSite::Kprobe if !user)
        || matches!(site, ArgSite::RawTracepoint | ArgSite::Lsm);
    // The current task is kernel memory wherever the probe is.
    let from_task = resolve.as_ref().is_some_and(|r| r.current_task);
    let user = user && !from_task;
    if resolve.is_some() && !resolvable && !from_task {
        return Err(invalid(
            format!("{apath}.{}", resolve_field(a)),
            format!(
                "not supported by lsm-agent at {what}: it follows struct members (by the \
                 kernel's BTF) from the arguments of kernel functions, raw tracepoints and LSM \
                 hooks"
            ),
        ));
    }
    let type_name = arg_type_name(a);
    let tpath = format!("{apath}.{}", type_field(a));
    let ty = match hooks::generic_type(type_name, user) {
        Some(hooks::GenericType::Read {
            ty: ir::ArgType::Buffer { .. },
            ..
        }) => buffer_type(apath, a, site, what)?,
        Some(hooks::GenericType::Read {
            ty: ir::ArgType::Int32Array { .. },
            ..
        }) => int32_array_type(apath, a, site, what)?,
        Some(hooks::GenericType::Read { ty, .. }) => ty,
        Some(hooks::GenericType::Nop) => return Ok(None),
        Some(hooks::GenericType::Unsupported) => {
            return Err(invalid(
                tpath,
                format!(
                    "type \"{type_name}\" is not read by lsm-agent at {what} yet (it reads {})",
                    hooks::GENERIC_TYPE_NAMES
                ),
            ));
        }
        None => return Err(invalid(tpath, format!("unknown arg type \"{type_name}\""))),
    };
    if resolve.is_some() && matches!(ty, ir::ArgType::Buffer { .. }) {
        return Err(invalid(
            tpath,
            format!(
                "type \"{type_name}\" with resolve is not supported yet by lsm-agent (a \
                 buffer's length is another argument of the call)"
            ),
        ));
    }
    // A user-space function has no kernel objects to read.
    if site == ArgSite::Uprobe
        && !matches!(
            ty,
            ir::ArgType::Int { .. } | ir::ArgType::String | ir::ArgType::Buffer { .. }
        )
    {
        return Err(invalid(
            tpath,
            format!(
                "type \"{type_name}\" is a kernel object: at {what} lsm-agent reads integers, \
                 string and char_buf from the process's memory"
            ),
        ));
    }
    Ok(Some(ir::ArgSpec {
        spec_index: a.index,
        lsm_index: position,
        ty,
        type_name: type_name.to_string(),
        label: a.label.clone().filter(|l| !l.is_empty()),
        resolve,
    }))
}

/// A hook's `data[]`: extra values Tetragon reads besides the arguments, which `matchData`
/// filters on by their position in the list and events carry as `data`. lsm-agent reads
/// integers from the current task (`source: current_task` with a `resolve` path, as in
/// Tetragon's CVE policies), in every program (the evaluator reads them as process
/// attributes), so also at hooks with a hand-written program. `pt_regs` (a uprobe's
/// registers) is refused at its field.
pub(super) fn convert_data(
    path: &str,
    data: &[raw::Arg],
    nargs: usize,
) -> VResult<Vec<ir::ArgSpec>> {
    if data.len() > NUM_DATA {
        return Err(invalid(
            format!("{path}.data"),
            format!("at most {NUM_DATA} data entries per hook are supported by lsm-agent"),
        ));
    }
    if nargs + data.len() > MAX_ARGS {
        return Err(invalid(
            format!("{path}.data"),
            format!("at most {MAX_ARGS} args and data per hook (Tetragon's limit)"),
        ));
    }
    let mut out = Vec::with_capacity(data.len());
    for (j, a) in data.iter().enumerate() {
        let dpath = format!("{path}.data[{j}]");
        let resolve = resolve_path(&dpath, a)?;
        let Some(resolve) = resolve.filter(|r| r.current_task) else {
            return Err(invalid(
                format!("{dpath}.source"),
                "lsm-agent reads data from the current task: set source: current_task and a \
                 resolve path (the member to read)",
            ));
        };
        let type_name = arg_type_name(a);
        let ty = match hooks::generic_type(type_name, false) {
            Some(hooks::GenericType::Read {
                ty: ty @ ir::ArgType::Int { .. },
                ..
            }) => ty,
            _ => {
                return Err(invalid(
                    format!("{dpath}.{}", type_field(a)),
                    format!(
                        "data of type \"{type_name}\" is not read by lsm-agent yet (it reads \
                         integer data: int, uint32, int64, uint64, ...)"
                    ),
                ));
            }
        };
        out.push(ir::ArgSpec {
            // matchData names an entry by its position in data[].
            spec_index: j as u32,
            lsm_index: ir::DATA_INDEX + j as u32,
            ty,
            type_name: type_name.to_string(),
            label: a.label.clone().filter(|l| !l.is_empty()),
            resolve: Some(resolve),
        });
    }
    Ok(out)
}

/// The argument's type: `overwriteType` when the older `extractParam` spelling of `resolve`
/// sets it (the type of the member reached), else `type`.
fn arg_type_name(a: &raw::Arg) -> &str {
    match (&a.extract_param, &a.overwrite_type) {
        (Some(e), Some(t)) if !e.is_empty() && !t.is_empty() => t,
        _ => a.ty.as_deref().unwrap_or("auto"),
    }
}

/// The YAML field [`arg_type_name`] came from, for error locations.
fn type_field(a: &raw::Arg) -> &'static str {
    match (&a.extract_param, &a.overwrite_type) {
        (Some(e), Some(t)) if !e.is_empty() && !t.is_empty() => "overwriteType",
        _ => "type",
    }
}

/// The YAML field that holds the argument's resolve path.
fn resolve_field(a: &raw::Arg) -> &'static str {
    if a.resolve.as_deref().is_some_and(|r| !r.is_empty()) {
        "resolve"
    } else {
        "extractParam"
    }
}

/// The argument's `resolve` path (`extractParam` is its older name), as member names: the
/// loader follows them through the kernel's BTF, from the argument or, with `source:
/// current_task`, from the current task. Array indexes (`a.b[2]`), which newer Tetragon
/// releases accept, are refused as not supported yet.
pub(super) fn resolve_path(apath: &str, a: &raw::Arg) -> VResult<Option<ir::Resolve>> {
    let source = a.source.as_deref().unwrap_or("");
    let text = match (&a.resolve, &a.extract_param) {
        (Some(r), _) if !r.is_empty() => r,
        (_, Some(e)) if !e.is_empty() => e,
        _ if source.is_empty() => return Ok(None),
        _ => {
            return Err(invalid(
                format!("{apath}.source"),
                format!("source \"{source}\" needs a resolve path (the member to read)"),
            ));
        }
    };
    let current_task = match source {
        "" => false,
        "current_task" => true,
        "pt_regs" => {
            return Err(invalid(
                format!("{apath}.source"),
                "source pt_regs (a uprobe's registers) is not supported yet by lsm-agent",
            ));
        }
        other => {
            return Err(invalid(
                format!("{apath}.source"),
                format!("unknown source \"{other}\" (Tetragon's are current_task and pt_regs)"),
            ));
        }
    };
    let fpath = format!("{apath}.{}", resolve_field(a));
    let members: Vec<String> = text.split('.').map(str::to_string).collect();
    for m in &members {
        if m.contains('[') {
            return Err(invalid(
                fpath,
                format!(
                    "\"{text}\": an array index in a resolve path is not supported yet by \
                     lsm-agent"
                ),
            ));
        }
        let ident = !m.is_empty()
            && !m.starts_with(|c: char| c.is_ascii_digit())
            && m.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ident {
            return Err(invalid(
                fpath,
                format!(
                    "\"{text}\": \"{m}\" is not a struct member name (write member names \
                     joined by dots, e.g. mm.owner.comm)"
                ),
            ));
        }
    }
    if members.len() > MAX_RESOLVE_DEPTH {
        return Err(invalid(
            fpath,
            format!(
                "\"{text}\" follows {} members: at most {MAX_RESOLVE_DEPTH}",
                members.len()
            ),
        ));
    }
    Ok(Some(ir::Resolve {
        members,
        current_task,
    }))
}

/// Where a `char_buf`'s length is: `returnCopy` (the return value, read when the call
/// returns), else `sizeArgIndex` (1-based, a raw argument of the call), else none (an empty
/// buffer, as Tetragon reads it).
fn buffer_type(apath: &str, a: &raw::Arg, site: ArgSite, what: &str) -> VResult<ir::ArgType> {
    if return_copy(apath, a, site, what)? {
        return Ok(ir::ArgType::Buffer { size: SIZE_RETVAL });
    }
    match a.size_arg_index.unwrap_or(0) {
        0 => Ok(ir::ArgType::Buffer { size: 0 }),
        n if matches!(
            site,
            ArgSite::Tracepoint | ArgSite::RawTracepoint | ArgSite::Lsm
        ) =>
        {
            Err(invalid(
                format!("{apath}.sizeArgIndex"),
                format!(
                    "sizeArgIndex {n}: not supported yet by lsm-agent at {what} (kprobes only)"
                ),
            ))
        }
        n if n as usize <= MAX_ARGS => Ok(ir::ArgType::Buffer { size: n as u8 }),
        n => Err(invalid(
            format!("{apath}.sizeArgIndex"),
            format!(
                "sizeArgIndex {n} is out of range: it counts the call's arguments from 1, at most \
                 {MAX_ARGS}"
            ),
        )),
    }
}

/// Whether the argument is read when the call returns (`returnCopy`), which only a kprobe's
/// call has.
fn return_copy(apath: &str, a: &raw::Arg, site: ArgSite, what: &str) -> VResult<bool> {
    if a.return_copy != Some(true) {
        return Ok(false);
    }
    if site != ArgSite::Kprobe {
        return Err(invalid(
            format!("{apath}.returnCopy"),
            format!("returnCopy reads the argument when the call returns: {what} has no return"),
        ));
    }
    Ok(true)
}

/// Largest `size` of an `int32_arr`: the elements fit a record, and the count its
/// descriptor's byte.
const MAX_INT32_ARR: u32 = 255;

/// An `int32_arr` of `size` elements (none without it, as in Tetragon), read where the call
/// starts or, with `returnCopy`, where it returns (an array the call fills, such as
/// `pipe`'s).
fn int32_array_type(apath: &str, a: &raw::Arg, site: ArgSite, what: &str) -> VResult<ir::ArgType> {
    return_copy(apath, a, site, what)?;
    match a.size.unwrap_or(0) {
        n if n <= MAX_INT32_ARR => Ok(ir::ArgType::Int32Array { count: n as u8 }),
        n => Err(invalid(
            format!("{apath}.size"),
            format!("size {n}: lsm-agent reads at most {MAX_INT32_ARR} elements of an int32_arr"),
        )),
    }
}

pub(super) fn convert_arg(
    apath: &str,
    a: &raw::Arg,
    info: &HookInfo,
    map_index: &dyn Fn(u32) -> Result<u32, String>,
) -> VResult<Option<ir::ArgSpec>> {
    check_arg_options(apath, a, MAX_ARG_INDEX)?;
    // `nop`: declared, never read or shown (Tetragon skips it the same way).
    if a.ty.as_deref() == Some("nop") {
        return Ok(None);
    }
    convert_lsm_arg(apath, a, info, map_index).map(Some)
}

/// The index range and the argument options the agent does not implement.
pub(super) fn check_arg_options(apath: &str, a: &raw::Arg, max_index: u32) -> VResult<()> {
    if a.index > max_index {
        return Err(invalid(
            format!("{apath}.index"),
            format!(
                "arg index {} is out of range (at most {max_index})",
                a.index
            ),
        ));
    }
    let set = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.is_empty());
    // A `char_buf`'s length options are read by `buffer_type` (generic probes only: an LSM
    // hook has no `char_buf` argument); `maxData` raises Tetragon's read cap, which the
    // agent's own cap (PATH_BUF_LEN - 1 bytes) bounds anyway.
    // An `iov_iter` is read as a buffer whose length is its own count: only `maxData`
    // applies to it.
    let ty = arg_type_name(a);
    let buffer = ty == "char_buf";
    for (is_set, field, applies) in [
        (
            a.size_arg_index.is_some_and(|n| n != 0),
            "sizeArgIndex",
            buffer,
        ),
        (
            a.return_copy == Some(true),
            "returnCopy",
            buffer || ty == "int32_arr",
        ),
        (
            a.max_data == Some(true),
            "maxData",
            buffer || ty == "iov_iter",
        ),
    ] {
        if is_set && !applies {
            return Err(invalid(
                format!("{apath}.{field}"),
                format!(
                    "{field} on a \"{ty}\" argument is not supported yet by lsm-agent (it \
                     applies it to char_buf arguments, returnCopy also to int32_arr, and \
                     maxData also to iov_iter)"
                ),
            ));
        }
    }
    if set(&a.btf_type) {
        return Err(not_supported(format!("{apath}.btfType")));
    }
    if set(&a.btf_type_module) {
        return Err(not_supported(format!("{apath}.btfTypeModule")));
    }
    // Each changes which value the argument is; ignoring one would filter on another value.
    for (is_set, field, what) in [
        (
            set(&a.overwrite_type) && !set(&a.extract_param),
            "overwriteType",
            "overwriteType without extractParam (it is the type of the member extractParam \
             reaches)",
        ),
        (
            a.size.is_some() && ty != "int32_arr",
            "size",
            "size on a type other than int32_arr",
        ),
    ] {
        if is_set {
            return Err(invalid(
                format!("{apath}.{field}"),
                format!("not supported yet by lsm-agent: {what}"),
            ));
        }
    }
    Ok(())
}

fn convert_lsm_arg(
    apath: &str,
    a: &raw::Arg,
    info: &HookInfo,
    map_index: &dyn Fn(u32) -> Result<u32, String>,
) -> VResult<ir::ArgSpec> {
    let lsm_index = map_index(a.index).map_err(|m| invalid(format!("{apath}.index"), m))?;
    let hook_arg = &info.args[lsm_index as usize];
    if resolve_path(apath, a)?.is_some() {
        // The member reached is read as its declared type: the hook argument is only the
        // root of the path (any pointer, opaque ones too).
        if info.hook.resolve_id().is_none() {
            return Err(invalid(
                format!("{apath}.{}", resolve_field(a)),
                format!(
                    "not supported yet by lsm-agent at LSM hook {}: its program reads the \
                     connection itself (resolve works at the other LSM hooks, kprobes and raw \
                     tracepoints)",
                    info.hook
                ),
            ));
        }
        let what = format!("LSM hook {}", info.hook);
        return convert_generic_arg(apath, a, lsm_index, false, ArgSite::Lsm, &what)?
            .ok_or_else(|| invalid(format!("{apath}.type"), "a resolved argument needs a type"));
    }
    if hook_arg.ty == ir::ArgType::Opaque {
        return Err(invalid(
            format!("{apath}.index"),
            format!(
                "argument {} of {} ({}) cannot be read by lsm-agent yet: leave it out of args",
                hook_arg.index,
                info.hook,
                c_decl(hook_arg)
            ),
        ));
    }

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
        resolve: None,
    })
}

#[cfg(test)]
mod tests {
    use crate::policy::ir::{ArgType, StrOp};
    use crate::policy::testutil::*;

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
    fn a_resolve_path_is_kept_as_member_names_where_btf_types_the_argument() {
        let yaml = with_selector("matchActions: [{action: Post}]").replace(
            "type: file\n",
            "type: string\n      resolve: f_path.dentry.d_iname\n",
        );
        let p = parse_ok(&yaml);
        let a = &p.hooks[0].args[0];
        let r = a.resolve.as_ref().expect("a resolve path");
        assert_eq!(r.members, ["f_path", "dentry", "d_iname"]);
        assert_eq!(a.ty, ArgType::String);
    }

    const DATA: &str = fixture!("notify-enforcer-for-non-root-at-socket-connect.yaml");

    #[test]
    fn data_is_an_integer_from_the_current_task_that_match_data_filters_on() {
        let p = parse_ok(DATA);
        let h = &p.hooks[0];
        let d = &h.data[0];
        assert_eq!(d.lsm_index, crate::policy::ir::DATA_INDEX);
        assert!(matches!(
            d.ty,
            ArgType::Int {
                width: 4,
                signed: false
            }
        ));
        assert_eq!(d.label.as_deref(), Some("euid"));
        let r = d.resolve.as_ref().expect("a resolve path");
        assert!(r.current_task);
        assert_eq!(r.members, ["cred", "euid", "val"]);
        let f = h.selectors[1]
            .match_args
            .iter()
            .find(|f| f.lsm_index == crate::policy::ir::DATA_INDEX)
            .expect("the matchData filter");
        assert!(matches!(f.kind, crate::policy::ir::FilterKind::Num { .. }));
        assert!(
            h.selectors[0]
                .match_args
                .iter()
                .all(|f| f.lsm_index < crate::policy::ir::DATA_INDEX),
            "the first selector has no matchData"
        );
    }

    #[test]
    fn data_entries_lsm_agent_cannot_read_are_refused_at_their_field() {
        for (from, to, path, why) in [
            (
                "      source: \"current_task\"\n",
                "",
                "spec.kprobes[0].data[0].source",
                "reads data from the current task",
            ),
            (
                "      resolve: \"cred.euid.val\"\n",
                "",
                "spec.kprobes[0].data[0].source",
                "needs a resolve path",
            ),
            (
                "      source: \"current_task\"\n",
                "      source: \"pt_regs\"\n",
                "spec.kprobes[0].data[0].source",
                "not supported yet",
            ),
            (
                "      type: \"uint32\"\n      resolve",
                "      type: \"string\"\n      resolve",
                "spec.kprobes[0].data[0].type",
                "integer data",
            ),
        ] {
            let yaml = DATA.replace(from, to);
            assert_ne!(yaml, DATA, "{from}");
            let e = parse_err(&yaml);
            assert_eq!(e.path, path, "{from} -> {to}: {e}");
            assert!(e.message.contains(why), "{from} -> {to}: {e}");
        }
        let entry = "    - index: 0\n      source: \"current_task\"\n      type: \"uint32\"\n      resolve: \"cred.euid.val\"\n      label: \"euid\"\n";
        assert!(DATA.contains(entry));
        let three = DATA.replace(entry, &entry.repeat(3));
        assert_eq!(parse_err(&three).path, "spec.kprobes[0].data");
        let on_a_kretprobe = DATA
            .replace("security_socket_connect", "tcp_close")
            .replace(
                "    syscall: false\n",
                "    syscall: false\n    return: true\n",
            );
        assert_eq!(parse_err(&on_a_kretprobe).path, "spec.kprobes[0].data");
        let no_data = DATA.replace(entry, "").replace("    data:\n", "");
        let e = parse_err(&no_data);
        assert_eq!(e.path, "spec.kprobes[0].selectors[1].matchData[0]", "{e}");
    }

    #[test]
    fn match_data_compiles_to_a_filter_on_the_data_attribute_the_loader_resolves() {
        use lsm_shared::*;
        let p = parse_ok(DATA);
        let img = crate::policy::compile::compile(&[(1, &p)]).expect("compiles");
        let cfg = img.hook_cfg[&HOOK_SOCKET_CONNECT];
        assert_ne!(cfg.attrs & (1 << ATTR_DATA_BASE), 0);
        assert_eq!(cfg.data_width[0], 4);
        let req = &img.resolve[&(
            HOOK_SOCKET_CONNECT,
            crate::policy::compile::DATA_RESOLVE_POS,
        )];
        assert_eq!(req.root, crate::policy::probes::BtfRoot::CurrentTask);
        assert_eq!(req.members, ["cred", "euid", "val"]);
        let f: Vec<_> = img
            .num_filt
            .values()
            .filter(|f| f.arg == ARG_ATTR_BASE + ATTR_DATA_BASE)
            .collect();
        assert_eq!(f.len(), 1);
        assert_eq!(
            (f[0].op, f[0].values[0], f[0].width),
            (NUM_OP_NOT_EQUAL, 0, 4)
        );
    }

    #[test]
    fn source_current_task_starts_the_path_at_the_task_even_where_arguments_are_user_memory() {
        let yaml = fixture!("observe-setuid-syscall.yaml").replace(
            "      label: uid\n",
            "      label: uid\n    - index: 1\n      type: string\n      source: current_task\n      \
             resolve: real_parent.comm\n",
        );
        let p = parse_ok(&yaml);
        let a = &p.hooks[0].args[1];
        let r = a.resolve.as_ref().expect("a resolve path");
        assert!(r.current_task);
        assert_eq!(r.members, ["real_parent", "comm"]);
        let img = crate::policy::compile::compile(&[(1, &p)]).expect("compiles");
        let d = img.hook_cfg[&lsm_shared::FIRST_DYNAMIC_HOOK].args[1];
        // A kernel string, not the user string a syscall's argument would be.
        assert_eq!(d.kind, lsm_shared::ARG_STR);
        assert_eq!(d.src, 1 | lsm_shared::SRC_RESOLVE | lsm_shared::SRC_CURRENT);
        for (source, why) in [("pt_regs", "not supported yet"), ("task", "unknown source")] {
            let e = parse_err(&yaml.replace("current_task", source));
            assert_eq!(e.path, "spec.kprobes[0].args[1].source");
            assert!(e.message.contains(why), "{}", e.message);
        }
        let e = parse_err(&yaml.replace("      resolve: real_parent.comm\n", ""));
        assert!(e.message.contains("needs a resolve path"), "{}", e.message);
    }

    #[test]
    fn resolve_is_refused_where_no_btf_types_the_argument_or_the_path_is_malformed() {
        let yaml = fixture!("observe-setuid-syscall.yaml")
            .replace("type: int\n", "type: int\n      resolve: a.b\n");
        let e = parse_err(&yaml);
        assert_eq!(e.path, "spec.kprobes[0].args[0].resolve");
        assert!(e.message.contains("at kprobe sys_setuid"), "{}", e.message);
        let yaml = with_selector("matchActions: [{action: Post}]");
        for (path, why) in [
            ("f_path.dentry[0]", "an array index"),
            ("f_path..dentry", "\"\" is not a struct member name"),
            ("a.b.c.d.e.f.g.h.i.j.k", "at most 10"),
        ] {
            let e = parse_err(&yaml.replace(
                "type: file\n",
                &format!("type: string\n      resolve: \"{path}\"\n"),
            ));
            assert_eq!(e.path, "spec.kprobes[0].args[0].resolve", "{path}");
            assert!(e.message.contains(why), "{path}: {}", e.message);
        }
        // socket_connect's program reads the connection itself and has no twin.
        let e = parse_err(
            &yaml
                .replace("security_file_permission", "security_socket_connect")
                .replace("type: file\n", "type: int\n      resolve: sk.sk_mark\n"),
        );
        assert_eq!(e.path, "spec.kprobes[0].args[0].resolve");
        assert!(e.message.contains("socket_connect"), "{}", e.message);
    }

    #[test]
    fn arg_features_the_agent_lacks_are_rejected() {
        let yaml = with_selector("matchActions: [{action: Post}]")
            .replace("type: file\n", "type: file\n      maxData: true\n");
        assert_eq!(parse_err(&yaml).path, "spec.kprobes[0].args[0].maxData");
    }

    #[test]
    fn path_symlink_args_take_their_path_dentry_and_string_types() {
        let p = parse_ok(fixture!("deny-symlink-to-lsm-vmtest-target-eperm.yaml"));
        let h = &p.hooks[0];
        let types: Vec<(ArgType, &str)> = h
            .args
            .iter()
            .map(|a| (a.ty, a.type_name.as_str()))
            .collect();
        assert_eq!(
            types,
            [
                (ArgType::Path, "path"),
                (ArgType::Path, "dentry"),
                (ArgType::String, "string")
            ]
        );
        let (op, negated, values) = str_filter(&h.selectors[0].match_args[0]);
        assert_eq!((op, negated), (StrOp::Equal, false));
        assert_eq!(values, ["/tmp/lsm-vmtest-symlink-target"]);
        let yaml = fixture!("deny-symlink-to-lsm-vmtest-target-eperm.yaml")
            .replace("operator: \"Equal\"", "operator: \"GT\"");
        let e = parse_err(&yaml);
        assert_eq!(e.path, "spec.kprobes[0].selectors[0].matchArgs[0].operator");
        assert!(
            e.message.starts_with(
                "operator GreaterThan is not supported on this argument (argument 2 is of type \
                 string; string operators"
            ),
            "{}",
            e.message
        );
    }

    #[test]
    fn a_string_type_on_a_dentry_is_rejected_at_the_type() {
        let e = parse_err(fixture!("path-symlink-dentry-as-string.yaml"));
        assert_eq!(e.path, "spec.lsmhooks[0].args[0].type");
        assert_eq!(
            e.message,
            "type \"string\" does not fit argument 1 of path_symlink (struct dentry *dentry): \
             use path, dentry or auto"
        );
    }

    #[test]
    fn an_argument_the_agent_cannot_read_is_rejected_at_its_index() {
        let e = parse_err(fixture!("inode-mkdir-dir-inode-declared.yaml"));
        assert_eq!(e.path, "spec.lsmhooks[0].args[0].index");
        assert_eq!(
            e.message,
            "argument 0 of inode_mkdir (struct inode *dir) cannot be read by lsm-agent yet: \
             leave it out of args"
        );
    }

    #[test]
    fn the_wider_tables_fixtures_take_their_declared_types() {
        let cases: [(&str, &[(ArgType, &str)]); 14] = [
            (
                fixture!("deny-mkdir-of-lsm-vmtest-forbidden-dir-eperm.yaml"),
                &[(ArgType::Path, "dentry"), (UINT16, "uint16")],
            ),
            (
                fixture!("deny-hardlink-into-lsm-vmtest-links-eperm.yaml"),
                &[
                    (ArgType::Path, "dentry"),
                    (ArgType::Path, "path"),
                    (ArgType::Path, "dentry"),
                ],
            ),
            (
                fixture!("deny-mount-of-lsm-vmtest-dev-eperm.yaml"),
                &[
                    (ArgType::String, "string"),
                    (ArgType::Path, "path"),
                    (ArgType::String, "string"),
                    (ULONG64, "ulong"),
                ],
            ),
            (
                fixture!("deny-exec-creds-of-lsm-vmtest-true-eperm.yaml"),
                &[
                    (ArgType::LinuxBinprm, "linux_binprm"),
                    (ArgType::File, "file"),
                ],
            ),
            (
                fixture!("deny-cap-sys-admin-of-hostname-eperm.yaml"),
                &[(INT32, "capability"), (UINT32, "uint32")],
            ),
            (fixture!("deny-userns-create-of-unshare-eperm.yaml"), &[]),
            (
                fixture!("deny-setresuid-of-setpriv-eperm.yaml"),
                &[(INT32, "int")],
            ),
            (
                fixture!("deny-ptrace-read-by-cat-eperm.yaml"),
                &[(UINT32, "uint32")],
            ),
            (fixture!("deny-settime-of-date-eperm.yaml"), &[]),
            (
                fixture!("deny-bpf-map-create-of-python-eperm.yaml"),
                &[(INT32, "int"), (UINT32, "uint32")],
            ),
            (
                fixture!("deny-module-request-net-pf-eperm.yaml"),
                &[(ArgType::String, "string")],
            ),
            (
                fixture!("deny-follow-of-lsm-vmtest-link-eperm.yaml"),
                &[(ArgType::Path, "dentry")],
            ),
            (
                fixture!("deny-inet6-socket-alloc-of-python.yaml"),
                &[(INT32, "int")],
            ),
            (
                fixture!("deny-pivot-root-into-lsm-vmtest-newroot-eperm.yaml"),
                &[(ArgType::Path, "path"), (ArgType::Path, "path")],
            ),
        ];
        for (yaml, want) in cases {
            let p = parse_ok(yaml);
            let got: Vec<(ArgType, &str)> = p.hooks[0]
                .args
                .iter()
                .map(|a| (a.ty, a.type_name.as_str()))
                .collect();
            assert_eq!(got, want, "{}", p.name);
        }
    }

    const UINT16: ArgType = ArgType::Int {
        width: 2,
        signed: false,
    };
    const ULONG64: ArgType = ArgType::Int {
        width: 8,
        signed: false,
    };

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
    fn nop_arguments_are_declared_but_not_read_on_translated_calls_and_probes() {
        let yaml =
            with_selector("matchActions: [{action: Post}]").replace("type: int", "type: nop");
        let p = parse_ok(&yaml);
        let idx: Vec<u32> = p.hooks[0].args.iter().map(|a| a.spec_index).collect();
        assert_eq!(idx, [0]);
        let p = parse_ok(&yaml.replace("security_file_permission", "vfs_read"));
        let idx: Vec<u32> = p.hooks[0].args.iter().map(|a| a.spec_index).collect();
        assert_eq!(idx, [0]);
    }
}
