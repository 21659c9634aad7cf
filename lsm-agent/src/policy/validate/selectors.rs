//! One entry of `selectors[]`: its filters and actions, and the rules that span several
//! filters of a selector (one string family, one address and port set per argument).

use super::actions::convert_action;
use super::match_args::convert_match_arg;
use super::operators::{operator_name, parse_operator};
use super::process::{
    convert_match_binaries, convert_match_capabilities, convert_match_namespaces,
    convert_match_pids,
};
use super::{Invalid, VResult, invalid, non_empty, not_supported};
use crate::policy::ir::{self, NetField, StrOp};
use crate::policy::lists::Lists;
use crate::policy::model as raw;

/// Tetragon's `MAX_ACTIONS`.
const MAX_ACTIONS: usize = 3;

/// Rejects the selector fields the agent does not implement yet.
fn check_selector_unsupported(spath: &str, s: &raw::Selector) -> VResult<()> {
    let unsupported: [(&str, bool); 5] = [
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
    Ok(())
}

/// `matchReturnArgs`: numeric filters on a kretprobe's `returnArg`.
fn convert_return_args(
    spath: &str,
    s: &raw::Selector,
    target: &ir::Target,
    ret: Option<&ir::ArgSpec>,
    lists: &Lists,
    warnings: &mut Vec<Invalid>,
) -> VResult<Vec<ir::ArgFilter>> {
    if !non_empty(&s.match_return_args) {
        return Ok(Vec::new());
    }
    let rpath = format!("{spath}.matchReturnArgs");
    let ret = match (target, ret) {
        (ir::Target::Lsm(_), _) => {
            return Err(invalid(
                rpath,
                "not supported at LSM hooks (the hook's return value is the verdict)",
            ));
        }
        (_, Some(r)) if matches!(r.ty, ir::ArgType::Int { .. }) => r,
        _ => {
            return Err(invalid(
                rpath,
                "needs return: true and an integer returnArg on the kprobe",
            ));
        }
    };
    // Tetragon's index of the return value is 0, whatever the returnArg says.
    let as_arg = ir::ArgSpec {
        spec_index: 0,
        ..ret.clone()
    };
    let mut out = Vec::new();
    for (k, m) in s.match_return_args.iter().flatten().enumerate() {
        let mpath = format!("{rpath}[{k}]");
        let mut f = convert_match_arg(&mpath, m, std::slice::from_ref(&as_arg), lists, warnings)?;
        f.lsm_index = ir::RETURN_INDEX;
        out.push(f);
    }
    Ok(out)
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

/// At a probe the network operators match the connection of one `sock` or `skb` argument
/// (the reader copies that one for them), and without port filters: those are compiled
/// for `socket_connect` only.
fn check_probe_net_filter(
    mpath: &str,
    target: &ir::Target,
    filter: &ir::ArgFilter,
    earlier: &[ir::ArgFilter],
) -> VResult<()> {
    if let (
        ir::Target::Lsm(h),
        ir::FilterKind::SockAttr {
            attr: ir::SockAttr::State,
            ..
        },
    ) = (target, &filter.kind)
    {
        return Err(invalid(
            format!("{mpath}.operator"),
            format!(
                "operator State is not supported at {} (the socket has no TCP state yet): \
                 State applies to the sock arguments of kprobes",
                h.name()
            ),
        ));
    }
    if matches!(target, ir::Target::Lsm(_)) || !filter.kind.is_network() {
        return Ok(());
    }
    if let Some(other) = earlier
        .iter()
        .find(|f| f.kind.is_network() && f.lsm_index != filter.lsm_index)
    {
        return Err(invalid(
            format!("{mpath}.index"),
            format!(
                "network operators on argument {} and on argument {} of one probe are not \
                 supported yet: lsm-agent matches the connection of one sock or skb argument \
                 per probe",
                other.spec_index, filter.spec_index
            ),
        ));
    }
    Ok(())
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

/// `TrackSock`/`UntrackSock` name a declared `sock` argument of a probe by its index: the
/// action gets that argument's position. Other actions pass through.
fn sock_action_position(
    apath: &str,
    a: ir::Action,
    args: &[ir::ArgSpec],
    target: &ir::Target,
) -> VResult<ir::Action> {
    let ir::Action::SockTrack { pos: index, track } = a else {
        return Ok(a);
    };
    if let ir::Target::Lsm(h) = target {
        return Err(invalid(
            format!("{apath}.action"),
            format!(
                "socket tracking is done at kprobes; this call is enforced at LSM hook {}",
                h.name()
            ),
        ));
    }
    let Some(arg) = args
        .iter()
        .find(|s| s.spec_index == index && s.ty == ir::ArgType::Sock)
    else {
        return Err(invalid(
            format!("{apath}.argSock"),
            format!("argSock {index} is not a declared argument of type sock"),
        ));
    };
    Ok(ir::Action::SockTrack {
        pos: arg.lsm_index,
        track,
    })
}

/// What a hook's selectors are converted against: its declared arguments, where it runs,
/// its `returnArg`, and the policy's `lists`.
pub(super) struct SelectorContext<'a> {
    pub args: &'a [ir::ArgSpec],
    pub target: &'a ir::Target,
    pub ret: Option<&'a ir::ArgSpec>,
    /// The hook's `data` entries, which `matchData` names by position.
    pub data: &'a [ir::ArgSpec],
    pub lists: &'a Lists,
}

pub(super) fn convert_selector(
    spath: &str,
    index: usize,
    s: &raw::Selector,
    cx: &SelectorContext<'_>,
    warnings: &mut Vec<Invalid>,
) -> VResult<ir::Selector> {
    let SelectorContext {
        args,
        target,
        ret,
        data,
        lists,
    } = *cx;
    check_selector_unsupported(spath, s)?;
    let return_filters = convert_return_args(spath, s, target, ret, lists, warnings)?;

    let mut match_args = Vec::new();
    // (lsm arg index, family, position in matchArgs) of string filters seen so far.
    let mut families: Vec<(u32, Family, usize)> = Vec::new();
    // (class, field, position in matchArgs) of non-negated address and port filters.
    let mut net_sets: Vec<(NetClass, NetField, usize)> = Vec::new();
    for (k, m) in s.match_args.iter().flatten().enumerate() {
        let mpath = format!("{spath}.matchArgs[{k}]");
        let filter = convert_match_arg(&mpath, m, args, lists, warnings)?;
        check_probe_net_filter(&mpath, target, &filter, &match_args)?;
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
    match_args.extend(return_filters);
    for (k, m) in s.match_data.iter().flatten().enumerate() {
        let mpath = format!("{spath}.matchData[{k}]");
        if data.is_empty() {
            return Err(invalid(mpath, "the hook has no data entries to match"));
        }
        let f = convert_match_arg(&mpath, m, data, lists, warnings)?;
        if !matches!(f.kind, ir::FilterKind::Num { .. }) {
            return Err(invalid(
                format!("{mpath}.operator"),
                "data are integers: use Equal, NotEqual, GT, LT, Mask, InRange, NotInRange, \
                 InMap or NotInMap",
            ));
        }
        match_args.push(f);
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
        let at_lsm = matches!(target, ir::Target::Lsm(_));
        let action = convert_action(&apath, a, at_lsm, warnings)?;
        if matches!(action, Some(ir::Action::NotifyEnforcer { .. })) && !at_lsm {
            return Err(invalid(
                format!("{apath}.action"),
                format!(
                    "NotifyEnforcer denies at the call's LSM hook, and this hook is {target}: \
                     lsm-agent cannot make the enforcer's calls fail later (use Sigkill, or a \
                     call with an LSM hook)"
                ),
            ));
        }
        let usdt = matches!(target, ir::Target::Uprobe(u) if u.usdt.is_some());
        if matches!(action, Some(ir::Action::Set { .. })) && !usdt {
            return Err(invalid(
                format!("{apath}.action"),
                "Set writes an argument of a USDT probe: it is only valid in spec.usdts",
            ));
        }
        actions.extend(
            action
                .map(|a| sock_action_position(&apath, a, args, target))
                .transpose()?,
        );
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

#[cfg(test)]
mod tests {
    use crate::policy::testutil::*;

    #[test]
    fn probes_match_addresses_ports_protocols_and_families_of_one_sock_or_skb_argument() {
        use crate::policy::compile::{CompileError, compile};
        use crate::policy::ir::{ArgType, FilterKind};
        let yaml = fixture!("observe-udp-packets-to-127-0-0-2.yaml");
        let p = parse_ok(yaml);
        assert_eq!(p.hooks[0].args[0].ty, ArgType::Sock);
        assert_eq!(p.hooks[0].args[1].ty, ArgType::Skb);
        let f = &p.hooks[0].selectors[0].match_args;
        assert!(matches!(f[0].kind, FilterKind::Addr { .. }));
        assert!(matches!(f[1].kind, FilterKind::SockAttr { .. }));
        // The plan names the skb (position 2) as the connection the filters match.
        let img = compile(&[(1, &p)]).expect("compiles");
        let cfg = img
            .hook_cfg
            .values()
            .find(|c| c.net_arg != 0)
            .expect("a net_arg");
        assert_eq!(cfg.net_arg, 3);

        // Ports are kept per hook: the probe's do not mix with socket_connect's.
        let ports = yaml
            .replace("operator: \"Protocol\"", "operator: \"DPort\"")
            .replace("\"IPPROTO_UDP\"", "\"53\"");
        let img = compile(&[(1, &parse_ok(&ports))]).expect("compiles");
        let (&hid, _) = img.probes.iter().next().expect("a probe");
        let key = lsm_shared::port_key(hid, lsm_shared::NET_DEST, 53);
        assert_eq!(img.ports.keys().copied().collect::<Vec<_>>(), [key]);
        let two = yaml.replace(
            "      - index: 2\n        operator: \"Protocol\"",
            "      - index: 1\n        operator: \"Protocol\"",
        );
        let e = parse_err(&two);
        assert!(
            e.message.contains("one sock or skb argument"),
            "{}",
            e.message
        );
        // Two policies on one probe must agree on the argument.
        let other =
            parse_ok(&yaml.replace("index: 2\n        operator", "index: 1\n        operator"));
        let e = compile(&[(1, &p), (2, &other)]).expect_err("clash");
        assert!(matches!(e, CompileError::NetArgClash { .. }), "{e}");
    }

    #[test]
    fn state_matches_the_tcp_state_of_a_probes_sock_and_not_of_a_packet() {
        use crate::policy::compile::compile;
        use crate::policy::ir::{FilterKind, SockAttr};
        let yaml = fixture!("observe-tcp-accepts-on-loopback.yaml");
        let p = parse_ok(yaml);
        let f = &p.hooks[0].selectors[0].match_args;
        assert_eq!(
            f[0].kind,
            FilterKind::SockAttr {
                attr: SockAttr::State,
                values: vec![3]
            }
        );
        let img = compile(&[(1, &p)]).expect("compiles");
        let filters: Vec<u32> = img.num_filt.values().map(|n| n.arg).collect();
        assert!(
            filters.contains(&(lsm_shared::ARG_ATTR_BASE + lsm_shared::ATTR_SOCK_STATE)),
            "{filters:?}"
        );
        assert_eq!(img.hook_cfg.values().map(|c| c.net_arg).max(), Some(1));

        let skb = fixture!("observe-udp-packets-to-127-0-0-2.yaml")
            .replace("operator: \"Protocol\"", "operator: \"State\"")
            .replace("\"IPPROTO_UDP\"", "\"TCP_SYN_RECV\"");
        let e = parse_err(&skb);
        assert!(e.message.contains("operator State"), "{}", e.message);
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
    fn empty_selector_lists_are_accepted() {
        let p = parse_ok(&with_selector("matchPIDs: []\n      matchActions: []"));
        assert!(p.hooks[0].selectors[0].actions.is_empty());
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
}
