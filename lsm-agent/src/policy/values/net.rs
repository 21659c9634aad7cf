//! Network values: addresses, CIDRs and `dns:` names, ports, and `Protocol`/`Family` values.

use lsm_shared::{ADDR_ENTRIES, NUM_FILTER_VALUES};

use crate::policy::ir::{AddrValue, SockAttr};
use crate::policy::validate::{VResult, invalid};

/// Address values: IPv4 or IPv6 addresses (a /32 or /128), CIDRs, or `dns:<name>`.
pub(crate) fn addr_values(vpath: &str, values: &[String]) -> VResult<Vec<AddrValue>> {
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
pub(crate) fn port_values(vpath: &str, values: &[String]) -> VResult<Vec<(u16, u16)>> {
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
pub(crate) fn sock_attr_values(
    vpath: &str,
    values: &[String],
    attr: SockAttr,
) -> VResult<Vec<u64>> {
    let (names, what, examples) = match attr {
        SockAttr::Protocol => (PROTOCOLS, "Protocol", "IPPROTO_TCP or IPPROTO_UDP"),
        SockAttr::Family => (FAMILIES, "Family", "AF_INET or AF_INET6"),
        SockAttr::State => return tcp_state_values(vpath, values),
    };
    named_values(vpath, values, names, what, examples)
}

/// The kernel's TCP states (`include/net/tcp_states.h`), the names Tetragon's `State`
/// operator takes.
const TCP_STATES: &[(&str, u64)] = &[
    ("TCP_ESTABLISHED", 1),
    ("TCP_SYN_SENT", 2),
    ("TCP_SYN_RECV", 3),
    ("TCP_FIN_WAIT1", 4),
    ("TCP_FIN_WAIT2", 5),
    ("TCP_TIME_WAIT", 6),
    ("TCP_CLOSE", 7),
    ("TCP_CLOSE_WAIT", 8),
    ("TCP_LAST_ACK", 9),
    ("TCP_LISTEN", 10),
    ("TCP_CLOSING", 11),
    ("TCP_NEW_SYN_RECV", 12),
    ("TCP_BOUND_INACTIVE", 13),
];

/// `State` values (`TCP_SYN_RECV`, `3`, `1:3`) as TCP state numbers.
pub(crate) fn tcp_state_values(vpath: &str, values: &[String]) -> VResult<Vec<u64>> {
    named_values(
        vpath,
        values,
        TCP_STATES,
        "State",
        "TCP_ESTABLISHED or TCP_SYN_RECV",
    )
}

/// Values given as a name of `names`, a decimal number up to 65535, or a `min:max` range of
/// either, each distinct number once.
fn named_values(
    vpath: &str,
    values: &[String],
    names: &[(&str, u64)],
    what: &str,
    examples: &str,
) -> VResult<Vec<u64>> {
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

#[cfg(test)]
mod state_tests {
    use super::tcp_state_values;

    #[test]
    fn tcp_states_are_taken_by_name_number_or_range() {
        let v = |s: &[&str]| {
            let owned: Vec<String> = s.iter().map(|s| s.to_string()).collect();
            tcp_state_values("v", &owned)
        };
        assert_eq!(v(&["TCP_SYN_RECV"]).unwrap(), [3]);
        assert_eq!(v(&["tcp_listen", "1"]).unwrap(), [10, 1]);
        assert_eq!(v(&["TCP_ESTABLISHED:TCP_SYN_RECV"]).unwrap(), [1, 2, 3]);
        let e = v(&["TCP_OPEN"]).unwrap_err();
        assert_eq!(e.path, "v[0]");
        assert!(e.message.contains("invalid State value"), "{}", e.message);
    }
}

#[cfg(test)]
mod tests {
    use crate::policy::ir::{AddrValue, FilterKind, NetField, SockAttr};
    use crate::policy::testutil::*;
    use lsm_shared::ADDR_ENTRIES;

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
}
