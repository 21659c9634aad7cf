//! The process-level filters of a selector: `matchBinaries`, `matchPIDs`, `matchNamespaces`
//! and `matchCapabilities`.

use lsm_shared::NUM_FILTER_VALUES;

use super::operators::{Operator, operator_name, parse_operator};
use super::{VResult, invalid};
use crate::policy::ir::{self, StrOp};
use crate::policy::model as raw;
use crate::policy::values::{capability_number, ns_value, string_values};

pub(super) fn convert_match_binaries(
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

pub(super) fn convert_match_pids(
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

pub(super) fn convert_match_namespaces(
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

pub(super) fn convert_match_capabilities(
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

#[cfg(test)]
mod tests {
    use crate::policy::ir::{
        BinaryFilter, CapFilter, CapSet, NamespaceFilter, NsType, NsValue, PidFilter, StrOp,
    };
    use crate::policy::testutil::*;

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
}
