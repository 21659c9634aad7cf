//! `spec.lists`: named lists of functions or syscalls that a policy references as
//! `call: "list:NAME"` (one hook per member) and as `InMap`/`NotInMap` values
//! `"list:NAME"` (the members' syscall numbers).
//!
//! List types, as Tetragon has them:
//! - none (`""`): the values are used as written.
//! - `syscalls`: syscall names (`sys_dup`, `__ia32_sys_dup`, `i386/sys_dup`); each gets the
//!   node's architecture prefix as a call, and its number (the 32-bit flag for ia32) in maps.
//! - `generated_syscalls`: every syscall of the node's architecture; no values.
//! - `generated_ftrace`: the functions of the node's `available_filter_functions` that match
//!   the regular expression `pattern`; only known when the policy is loaded on the node.

use std::collections::HashMap;

use super::model as raw;
use super::syscalls::{self, SyscallArch};
use super::validate::{VResult, invalid};

/// The prefix that makes a `call` or an `InMap` value a reference to a list.
pub const LIST_PREFIX: &str = "list:";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListKind {
    /// No type: the values are used as written.
    Plain,
    Syscalls,
    GeneratedSyscalls,
    GeneratedFtrace,
}

impl ListKind {
    fn parse(ty: Option<&str>) -> Option<Self> {
        match ty.map(str::to_ascii_lowercase).as_deref() {
            None | Some("") => Some(Self::Plain),
            Some("syscalls") => Some(Self::Syscalls),
            Some("generated_syscalls") => Some(Self::GeneratedSyscalls),
            Some("generated_ftrace") => Some(Self::GeneratedFtrace),
            Some(_) => None,
        }
    }

    fn holds_syscalls(self) -> bool {
        matches!(self, Self::Syscalls | Self::GeneratedSyscalls)
    }
}

/// One validated list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyList {
    pub name: String,
    pub kind: ListKind,
    /// Its YAML path (`spec.lists[2]`), for errors about its use.
    pub path: String,
    /// The members as calls: the values of a plain list, kernel symbols with the node's
    /// prefix for syscall lists; empty for `generated_ftrace`.
    pub calls: Vec<String>,
    /// Syscall numbers of the members, as the kernel reports them (syscall lists only).
    pub syscall_ids: Vec<u64>,
    /// The regular expression of a `generated_ftrace` list.
    pub pattern: Option<String>,
}

/// The lists of one policy, by name.
#[derive(Debug, Default)]
pub struct Lists {
    lists: Vec<PolicyList>,
    by_name: HashMap<String, usize>,
}

/// Where one kprobe entry's call comes from after `list:` expansion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallSource {
    /// `call` named the function itself.
    Direct,
    /// A member of list `list` (a `type: syscalls`, `generated_syscalls` or plain list).
    List { list: String },
    /// A `generated_ftrace` list: the functions are those of the node matching `pattern`,
    /// known only at load; `call` holds the pattern.
    FtracePattern { list: String },
}

/// One hook to create from `spec.kprobes[spec_index]`: the function to attach to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpandedCall {
    pub spec_index: usize,
    pub call: String,
    pub source: CallSource,
}

impl Lists {
    /// Validates `spec.lists`. Syscall names are resolved for `host` (see
    /// [`SyscallArch::host`]); `None` makes syscall lists an error, since their numbers and
    /// symbols are per architecture.
    pub fn parse(spec: &raw::Spec, host: Option<SyscallArch>) -> VResult<Self> {
        let mut out = Lists::default();
        for (i, l) in spec.lists.iter().flatten().enumerate() {
            let path = format!("spec.lists[{i}]");
            if l.name.is_empty() {
                return Err(invalid(format!("{path}.name"), "a list needs a name"));
            }
            if out.by_name.contains_key(&l.name) {
                return Err(invalid(
                    format!("{path}.name"),
                    format!("list \"{}\" is defined twice", l.name),
                ));
            }
            let list = parse_list(&path, l, host)?;
            out.by_name.insert(l.name.clone(), out.lists.len());
            out.lists.push(list);
        }
        Ok(out)
    }

    pub fn get(&self, name: &str) -> Option<&PolicyList> {
        self.by_name.get(name).map(|&i| &self.lists[i])
    }

    pub fn iter(&self) -> impl Iterator<Item = &PolicyList> {
        self.lists.iter()
    }

    /// The list a `list:NAME` reference at `path` names.
    fn lookup(&self, path: &str, reference: &str) -> VResult<&PolicyList> {
        let name = reference.strip_prefix(LIST_PREFIX).unwrap_or(reference);
        self.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.lists.iter().map(|l| l.name.as_str()).collect();
            invalid(
                path,
                format!(
                    "list \"{name}\" is not defined in spec.lists{}",
                    if known.is_empty() {
                        String::new()
                    } else {
                        format!(" (defined: {})", known.join(", "))
                    }
                ),
            )
        })
    }

    /// The calls one `call` value stands for: itself, or the members of the list it
    /// references. `path` is the YAML path of the `call` field.
    pub fn expand_call(&self, path: &str, call: &str) -> VResult<Vec<(String, CallSource)>> {
        if !call.starts_with(LIST_PREFIX) {
            return Ok(vec![(call.to_string(), CallSource::Direct)]);
        }
        let list = self.lookup(path, call)?;
        if list.kind == ListKind::GeneratedFtrace {
            let pattern = list.pattern.clone().unwrap_or_default();
            return Ok(vec![(
                pattern,
                CallSource::FtracePattern {
                    list: list.name.clone(),
                },
            )]);
        }
        if list.calls.is_empty() {
            return Err(invalid(
                path,
                format!(
                    "list \"{}\" has no values: the hook would attach nowhere",
                    list.name
                ),
            ));
        }
        Ok(list
            .calls
            .iter()
            .map(|c| {
                (
                    c.clone(),
                    CallSource::List {
                        list: list.name.clone(),
                    },
                )
            })
            .collect())
    }

    /// The syscall numbers an `InMap`/`NotInMap` value `list:NAME` at `path` stands for.
    /// Only lists of syscalls have numbers.
    pub fn syscall_ids(&self, path: &str, reference: &str) -> VResult<&[u64]> {
        let list = self.lookup(path, reference)?;
        if !list.kind.holds_syscalls() {
            return Err(invalid(
                path,
                format!(
                    "list \"{}\" is not a list of syscalls (type syscalls or \
                     generated_syscalls): InMap can only use its members as syscall numbers",
                    list.name
                ),
            ));
        }
        Ok(&list.syscall_ids)
    }
}

fn parse_list(path: &str, l: &raw::List, host: Option<SyscallArch>) -> VResult<PolicyList> {
    let kind = ListKind::parse(l.ty.as_deref()).ok_or_else(|| {
        invalid(
            format!("{path}.type"),
            format!(
                "unknown list type \"{}\" (expected syscalls, generated_syscalls or \
                 generated_ftrace, or no type)",
                l.ty.as_deref().unwrap_or("")
            ),
        )
    })?;
    let values = l.values.as_deref().unwrap_or(&[]);
    let generated = matches!(
        kind,
        ListKind::GeneratedSyscalls | ListKind::GeneratedFtrace
    );
    if generated && !values.is_empty() {
        return Err(invalid(
            format!("{path}.values"),
            "a generated list takes no values: its members come from the node",
        ));
    }
    match (kind, &l.pattern) {
        (ListKind::GeneratedFtrace, None) => {
            return Err(invalid(
                path,
                "a generated_ftrace list needs a pattern (a regular expression over the \
                 node's available_filter_functions)",
            ));
        }
        (ListKind::GeneratedFtrace, Some(p)) => {
            regex::Regex::new(p).map_err(|e| {
                invalid(
                    format!("{path}.pattern"),
                    format!("invalid regular expression: {e}"),
                )
            })?;
        }
        (_, Some(_)) => {
            return Err(invalid(
                format!("{path}.pattern"),
                "pattern is only valid in a generated_ftrace list",
            ));
        }
        (_, None) => {}
    }
    let mut list = PolicyList {
        name: l.name.clone(),
        kind,
        path: path.to_string(),
        calls: Vec::new(),
        syscall_ids: Vec::new(),
        pattern: l.pattern.clone(),
    };
    if !kind.holds_syscalls() {
        list.calls = values.to_vec();
        return Ok(list);
    }
    let host = host.ok_or_else(|| {
        invalid(
            format!("{path}.type"),
            "syscall lists need an x86_64 or arm64 node: their symbols and numbers are per \
             architecture",
        )
    })?;
    let members: Vec<String> = if kind == ListKind::GeneratedSyscalls {
        syscalls::all_syscalls(host)
            .into_iter()
            .map(|n| format!("sys_{n}"))
            .collect()
    } else {
        values.to_vec()
    };
    for (v, value) in members.iter().enumerate() {
        let s = syscalls::resolve_list_value(value, host)
            .map_err(|e| invalid(format!("{path}.values[{v}]"), e.to_string()))?;
        list.calls.push(s.symbol);
        list.syscall_ids.push(s.id);
    }
    Ok(list)
}

/// Expands `spec.kprobes`: one entry per call, with `call: "list:NAME"` replaced by one
/// entry per member of the list (in list order), each with the index of the kprobe spec it
/// comes from. The calls of a syscall list carry the `host` prefix (`__x64_sys_pipe`), as
/// Tetragon attaches them.
// The entry point for the generic kprobe translation; validation uses the parts.
#[allow(dead_code)]
pub fn expand_calls(spec: &raw::Spec, host: Option<SyscallArch>) -> VResult<Vec<ExpandedCall>> {
    let lists = Lists::parse(spec, host)?;
    expand_kprobe_calls(
        spec.kprobes.as_deref().unwrap_or(&[]),
        "spec.kprobes",
        &lists,
    )
}

/// [`expand_calls`] over any list of kprobe-like specs (`kprobes`, `fentries`) at YAML path
/// `section`, with lists already parsed.
pub fn expand_kprobe_calls(
    specs: &[raw::Kprobe],
    section: &str,
    lists: &Lists,
) -> VResult<Vec<ExpandedCall>> {
    let mut out = Vec::new();
    for (i, kp) in specs.iter().enumerate() {
        for (call, source) in lists.expand_call(&format!("{section}[{i}].call"), &kp.call)? {
            out.push(ExpandedCall {
                spec_index: i,
                call,
                source,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::syscalls::IS_32BIT;
    use crate::policy::testutil::fixture;

    fn spec_of(yaml: &str) -> raw::Spec {
        let doc: raw::Policy = serde_yaml::from_str(yaml).unwrap();
        doc.spec.unwrap()
    }

    #[test]
    fn a_list_call_becomes_one_call_per_member_with_the_host_prefix() {
        let spec = spec_of(fixture!("tetragon-quirks/pipe-list-call.yaml"));
        let calls = expand_calls(&spec, Some(SyscallArch::X86_64)).unwrap();
        let got: Vec<(usize, &str)> = calls
            .iter()
            .map(|c| (c.spec_index, c.call.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (0, "__x64_sys_pipe"),
                (0, "__x64_sys_pipe2"),
                (1, "fd_install")
            ]
        );
        assert_eq!(
            calls[0].source,
            CallSource::List {
                list: "pipes".into()
            }
        );
        assert_eq!(calls[2].source, CallSource::Direct);
        let arm = expand_calls(&spec, Some(SyscallArch::Arm64));
        // arm64 has pipe2 only: the list cannot be resolved there.
        let e = arm.unwrap_err();
        assert_eq!(e.path, "spec.lists[0].values[0]");
    }

    #[test]
    fn syscall_lists_give_numbers_with_the_32bit_flag_for_ia32_members() {
        let spec = spec_of(fixture!("tetragon-quirks/syscall-numbers.yaml"));
        let lists = Lists::parse(&spec, Some(SyscallArch::X86_64)).unwrap();
        let ids = lists.syscall_ids("p", "list:dups").unwrap();
        assert_eq!(ids, [32, 33, 41 | IS_32BIT]);
        let e = lists.syscall_ids("p", "list:funcs").unwrap_err();
        assert!(
            e.message.contains("not a list of syscalls"),
            "{}",
            e.message
        );
        let e = lists.syscall_ids("p", "list:nope").unwrap_err();
        assert_eq!(
            e.message,
            "list \"nope\" is not defined in spec.lists (defined: dups, funcs, all, ftrace)"
        );
    }

    #[test]
    fn generated_syscall_lists_hold_every_syscall_and_ftrace_lists_wait_for_the_node() {
        let spec = spec_of(fixture!("tetragon-quirks/syscall-numbers.yaml"));
        let lists = Lists::parse(&spec, Some(SyscallArch::X86_64)).unwrap();
        let all = lists.get("all").unwrap();
        assert!(all.calls.contains(&"__x64_sys_openat".to_string()));
        assert_eq!(all.calls.len(), all.syscall_ids.len());
        let calls = lists.expand_call("c", "list:ftrace").unwrap();
        assert_eq!(
            calls,
            [(
                "^security_inode_.*".to_string(),
                CallSource::FtracePattern {
                    list: "ftrace".into()
                }
            )]
        );
        let plain = lists.expand_call("c", "list:funcs").unwrap();
        assert_eq!(plain.len(), 2);
        assert_eq!(plain[1].0, "security_file_open");
    }

    #[test]
    fn malformed_lists_are_rejected_at_the_faulty_field() {
        for (yaml, path, needle) in [
            (
                "- {name: a, type: files, values: [x]}",
                "spec.lists[0].type",
                "unknown list type",
            ),
            (
                "- {name: a, values: [x]}\n  - {name: a, values: [y]}",
                "spec.lists[1].name",
                "defined twice",
            ),
            (
                "- {name: a, type: generated_ftrace}",
                "spec.lists[0]",
                "needs a pattern",
            ),
            (
                "- {name: a, type: generated_ftrace, pattern: '('}",
                "spec.lists[0].pattern",
                "invalid regular",
            ),
            (
                "- {name: a, type: syscalls, pattern: x}",
                "spec.lists[0].pattern",
                "only valid",
            ),
            (
                "- {name: a, type: generated_syscalls, values: [sys_dup]}",
                "spec.lists[0].values",
                "takes no values",
            ),
            (
                "- {name: a, type: syscalls, values: [sys_nonesuch]}",
                "spec.lists[0].values[0]",
                "no syscall named",
            ),
        ] {
            let spec: raw::Spec = serde_yaml::from_str(&format!("lists:\n  {yaml}\n")).unwrap();
            let e = Lists::parse(&spec, Some(SyscallArch::X86_64)).unwrap_err();
            assert_eq!(e.path, path, "{yaml}");
            assert!(e.message.contains(needle), "{yaml}: {}", e.message);
        }
    }

    #[test]
    fn syscall_lists_need_a_known_architecture_but_plain_lists_do_not() {
        let spec: raw::Spec =
            serde_yaml::from_str("lists:\n- {name: a, type: syscalls, values: [sys_dup]}\n")
                .unwrap();
        assert!(Lists::parse(&spec, None).is_err());
        let spec: raw::Spec = serde_yaml::from_str("lists:\n- {name: a, values: [f]}\n").unwrap();
        assert!(Lists::parse(&spec, None).is_ok());
    }

    #[test]
    fn a_call_naming_an_undefined_or_empty_list_is_rejected_at_the_call() {
        let spec: raw::Spec = serde_yaml::from_str(
            "lists:\n- {name: empty}\nkprobes:\n- {call: fd_install}\n- {call: \"list:empty\"}\n",
        )
        .unwrap();
        let e = expand_calls(&spec, Some(SyscallArch::X86_64)).unwrap_err();
        assert_eq!(e.path, "spec.kprobes[1].call");
        assert!(e.message.contains("has no values"), "{}", e.message);
        let spec: raw::Spec = serde_yaml::from_str("kprobes:\n- {call: \"list:x\"}\n").unwrap();
        let e = expand_calls(&spec, Some(SyscallArch::X86_64)).unwrap_err();
        assert_eq!(e.message, "list \"x\" is not defined in spec.lists");
    }
}
