//! `matchArgs[].operator`: every spelling Tetragon accepts, and what each means on an
//! argument of a given type.

use crate::policy::ir::{ArgType, NetField, NumOp, SockAttr, StrOp};

/// Every operator spelling Tetragon's `SelectorOp` accepts, with its canonical name first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Operator {
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
    CapabilityMask,
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
        ("CapabilityMask", CapabilityMask),
        // The first spelling of CapabilityMask in Tetragon's own deny-privileged-containers
        // example (renamed in a later commit of the same file, with the same meaning).
        ("Capability", CapabilityMask),
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
pub(super) const SUPPORTED_ARG_OPERATORS: &str = "Equal (eq), NotEqual (neq), Prefix (prefix), \
     NotPrefix (notprefix), Postfix (postfix), NotPostfix (notpostfix), GreaterThan (GT, gt), \
     LessThan (LT, lt), Mask (mask), InRange, NotInRange, DAddr (daddr, Daddr), NotDAddr \
     (notdaddr, NotDaddr), SAddr (saddr, Saddr), NotSAddr (notsaddr, NotSaddr), DPort (dport, \
     Dport), NotDPort (notdport, NotDport), SPort (sport, Sport), NotSPort (notsport, NotSport), \
     DPortPriv (dportpriv, DportPriv), NotDPortPriv (notdportpriv, NotDportPriv), SPortPriv \
     (sportpriv, SportPriv), NotSPortPriv (notsportpriv, NotSportPriv), Protocol (protocol), \
     Family (family), InMap, NotInMap, CapabilityMask (Capability)";

pub(super) fn parse_operator(s: &str) -> Option<Operator> {
    OPERATOR_SPELLINGS
        .iter()
        .find(|(name, _)| *name == s)
        .map(|(_, op)| *op)
}

pub(super) fn operator_name(op: Operator) -> &'static str {
    OPERATOR_SPELLINGS
        .iter()
        .find(|(_, o)| *o == op)
        .map(|(name, _)| *name)
        .unwrap_or("?")
}

/// What an operator does to an argument of a given type.
pub(super) enum ArgOp {
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
        O::State => ArgOp::SockAttr(SockAttr::State),
        _ => return None,
    })
}

/// The agent's reading of `op` on an argument of type `ty`, or why it cannot be used: a
/// sentence about the operator that the caller completes with the argument's type.
pub(super) fn classify(op: Operator, ty: ArgType) -> Result<ArgOp, String> {
    use Operator as O;
    let name = operator_name(op);
    match ty {
        ArgType::Sock => {
            return match (sock_op(op), op) {
                (Some(a), _) => Ok(a),
                _ => Err(format!(
                    "operator {name} is not supported: sock, socket and sockaddr arguments do \
                     not support operator {name}"
                )),
            };
        }
        ArgType::Skb => {
            return sock_op(op)
                .filter(|a| !matches!(a, ArgOp::SockAttr(SockAttr::State)))
                .ok_or_else(|| {
                    format!("operator {name} is not supported: skb arguments do not support it")
                });
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
            "operator {name} is only valid on sock, socket, skb and sockaddr arguments"
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
    if ty == ArgType::Caps {
        // A set of capabilities: any of the listed ones, or exactly the listed set.
        return match op {
            O::CapabilityMask => Ok(ArgOp::Num(NumOp::Mask)),
            O::Equal => Ok(ArgOp::Num(NumOp::Equal)),
            O::NotEqual => Ok(ArgOp::Num(NumOp::NotEqual)),
            _ => Err(format!(
                "operator {name} is not supported on a capability set"
            )),
        };
    }
    if op == O::CapabilityMask {
        return Err(format!(
            "operator {name} is only valid on capability sets (kernel_cap_t, cap_inheritable, \
             cap_permitted, cap_effective)"
        ));
    }
    let not_yet = format!("operator {name} is not supported yet by lsm-agent");
    let elsewhere = format!("operator {name} is not supported on this argument");
    if matches!(
        ty,
        ArgType::Opaque
            | ArgType::Cred
            | ArgType::Module
            | ArgType::BpfObj(_)
            | ArgType::Int32Array { .. }
    ) {
        return Err(elsewhere);
    }
    if ty.is_string_like() {
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
        O::InMap => Ok(ArgOp::Num(NumOp::InMap)),
        O::NotInMap => Ok(ArgOp::Num(NumOp::NotInMap)),
        O::CelExpr => Err(not_yet),
        _ => Err(elsewhere),
    }
}

/// Which operators apply to an argument of type `ty`, to complete an operator error.
pub(super) fn operator_hint(ty: ArgType) -> &'static str {
    match ty {
        ArgType::File
        | ArgType::Path
        | ArgType::LinuxBinprm
        | ArgType::String
        | ArgType::Buffer { .. }
        | ArgType::Dns => {
            "string operators Equal, NotEqual, Prefix, NotPrefix, Postfix, NotPostfix apply to \
             file, path, dentry, linux_binprm, string, char_buf and dns arguments"
        }
        ArgType::Opaque
        | ArgType::Cred
        | ArgType::Module
        | ArgType::BpfObj(_)
        | ArgType::Int32Array { .. } => "no operator applies to this argument",
        ArgType::Caps => {
            "CapabilityMask (any of the capabilities), Equal and NotEqual (exactly the set) \
             apply to capability sets, with CAP_* names (comma-separated) or numeric masks"
        }
        ArgType::Int { .. } => {
            "numeric operators Equal, NotEqual, GreaterThan, LessThan, Mask, InRange, \
             NotInRange, InMap, NotInMap apply to integer arguments"
        }
        ArgType::Sock => {
            "network operators DAddr, NotDAddr, SAddr, NotSAddr, DPort, NotDPort, SPort, \
             NotSPort, DPortPriv, NotDPortPriv, SPortPriv, NotSPortPriv, Protocol, Family and \
             State (at kprobes) apply to sock and socket arguments"
        }
        ArgType::Skb => {
            "network operators DAddr, NotDAddr, SAddr, NotSAddr, Protocol and Family apply to \
             skb arguments"
        }
        ArgType::Sockaddr => {
            "SAddr, NotSAddr, SPort, NotSPort, SPortPriv, NotSPortPriv and Family apply to \
             sockaddr arguments"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::ir::{FilterKind, NetField, NumOp, SockAttr, StrOp};
    use crate::policy::testutil::*;

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
            e.message.starts_with(
                "operator SAddr is only valid on sock, socket, skb and sockaddr arguments"
            ),
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
    fn capability_sets_take_capability_mask_and_equal_with_names_or_masks() {
        use crate::policy::ir::{LsmHook, Target};
        let yaml = fixture!("deny-cap-sys-admin-capset-of-python.yaml");
        let p = parse_ok(yaml);
        assert_eq!(p.hooks[0].target, Target::Lsm(LsmHook::Capset));
        assert_eq!(p.hooks[0].args[0].ty, ArgType::Caps);
        let f = &p.hooks[0].selectors[0].match_args[0];
        assert_eq!(num_filter(f), (NumOp::Mask, vec![1 << 21]));

        let listed = yaml.replace(
            "- \"CAP_SYS_ADMIN\"",
            "- \"CAP_CHOWN, cap_kill\"\n        - \"0x10\"",
        );
        let equal = listed.replace("operator: CapabilityMask", "operator: Equal");
        let f = &parse_ok(&equal).hooks[0].selectors[0].match_args[0];
        assert_eq!(num_filter(f), (NumOp::Equal, vec![1 | 1 << 5, 0x10]));

        // The example's first spelling means the same.
        let old = yaml.replace("operator: CapabilityMask", "operator: Capability");
        let f = &parse_ok(&old).hooks[0].selectors[0].match_args[0];
        assert_eq!(num_filter(f), (NumOp::Mask, vec![1 << 21]));

        let e = parse_err(&yaml.replace("CAP_SYS_ADMIN", "CAP_NOPE"));
        assert!(e.path.ends_with("values[0]"), "{}", e.path);
        assert!(e.message.contains("CAP_NOPE"), "{}", e.message);
        let e = parse_err(&yaml.replace("CapabilityMask", "Prefix"));
        assert!(e.message.contains("capability set"), "{}", e.message);
        // CapabilityMask belongs to capability sets only.
        let on_int = yaml
            .replace("type: \"kernel_cap_t\"", "type: \"int\"")
            .replace("hook: \"capset\"", "hook: \"capable\"");
        let e = parse_err(&on_int);
        assert!(
            e.message.contains("only valid on capability sets"),
            "{}",
            e.message
        );
    }

    #[test]
    fn tetragon_operators_the_agent_lacks_say_not_supported_yet() {
        for (index, op) in [(0, "SubString"), (0, "FileType"), (1, "CelExpr")] {
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
                    "operator {op} is only valid on sock, socket, skb and sockaddr arguments \
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
                "operator NotDAddr is only valid on sock, socket, skb and sockaddr arguments \
                 (argument 0 is of type file"
            ),
            "{}",
            e.message
        );
    }
}
