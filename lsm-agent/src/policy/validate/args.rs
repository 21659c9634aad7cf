//! `args[]` of a hook: index, type and the options the agent does not implement.

use super::hooks::c_decl;
use super::{VResult, invalid, not_supported};
use crate::policy::hooks::{self, DeclaredType, HookInfo};
use crate::policy::ir;
use crate::policy::model as raw;

/// Highest `args[].index` (Tetragon's `MAX_POSSIBLE_ARGS` - 1).
const MAX_ARG_INDEX: u32 = 4;

pub(super) fn convert_arg(
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

#[cfg(test)]
mod tests {
    use crate::policy::ir::ArgType;
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
}
