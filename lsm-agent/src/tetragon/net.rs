//! Connections as Tetragon shows them in `sock_arg` / `sockaddr_arg`: the names of address
//! families, socket types and protocols, and addresses as text.
//!
//! The tables are Tetragon's (`pkg/reader/network/inet.go`), quirks included, so the strings
//! are the ones scripts written against Tetragon's events expect: a value missing from a
//! table is printed as its decimal number, `SOCK_PACKET` is listed under 7 (Linux uses 10),
//! and `AF_SNA` (22) has no name.

use std::net::IpAddr;

use super::proto::tetragon::{KprobeSock, KprobeSockaddr};
use crate::events::model::{NetData, Sockaddr};

const FAMILIES: &[(u16, &str)] = &[
    (0, "AF_UNSPEC"),
    (1, "AF_UNIX"),
    (2, "AF_INET"),
    (3, "AF_AX25"),
    (4, "AF_IPX"),
    (5, "AF_APPLETALK"),
    (6, "AF_NETROM"),
    (7, "AF_BRIDGE"),
    (8, "AF_ATMPVC"),
    (9, "AF_X25"),
    (10, "AF_INET6"),
    (11, "AF_ROSE"),
    (12, "AF_DECnet"),
    (13, "AF_NETBEUI"),
    (14, "AF_SECURITY"),
    (15, "AF_KEY"),
    (16, "AF_NETLINK"),
    (17, "AF_PACKET"),
    (18, "AF_ASH"),
    (19, "AF_ECONET"),
    (20, "AF_ATMSVC"),
    (21, "AF_RDS"),
    (23, "AF_IRDA"),
    (24, "AF_PPPOX"),
    (25, "AF_WANPIPE"),
    (26, "AF_LLC"),
    (27, "AF_IB"),
    (28, "AF_MPLS"),
    (29, "AF_CAN"),
    (30, "AF_TIPC"),
    (31, "AF_BLUETOOTH"),
    (32, "AF_IUCV"),
    (33, "AF_RXRPC"),
    (34, "AF_ISDN"),
    (35, "AF_PHONET"),
    (36, "AF_IEEE802154"),
    (37, "AF_CAIF"),
    (38, "AF_ALG"),
    (39, "AF_NFC"),
    (40, "AF_VSOCK"),
    (41, "AF_KCM"),
    (42, "AF_QIPCRTR"),
    (43, "AF_SMC"),
    (44, "AF_XDP"),
    (45, "AF_MCTP"),
];

const SOCK_TYPES: &[(u16, &str)] = &[
    (1, "SOCK_STREAM"),
    (2, "SOCK_DGRAM"),
    (3, "SOCK_RAW"),
    (4, "SOCK_RDM"),
    (5, "SOCK_SEQPACKET"),
    (6, "SOCK_DCCP"),
    (7, "SOCK_PACKET"),
];

const PROTOCOLS: &[(u16, &str)] = &[
    (0, "IPPROTO_IP"),
    (1, "IPPROTO_ICMP"),
    (2, "IPPROTO_IGMP"),
    (4, "IPPROTO_IPIP"),
    (6, "IPPROTO_TCP"),
    (8, "IPPROTO_EGP"),
    (12, "IPPROTO_PUP"),
    (17, "IPPROTO_UDP"),
    (22, "IPPROTO_IDP"),
    (29, "IPPROTO_TP"),
    (33, "IPPROTO_DCCP"),
    (41, "IPPROTO_IPV6"),
    (46, "IPPROTO_RSVP"),
    (47, "IPPROTO_GRE"),
    (50, "IPPROTO_ESP"),
    (51, "IPPROTO_AH"),
    (92, "IPPROTO_MTP"),
    (94, "IPPROTO_BEETPH"),
    (98, "IPPROTO_ENCAP"),
    (103, "IPPROTO_PIM"),
    (108, "IPPROTO_COMP"),
    (132, "IPPROTO_SCTP"),
    (136, "IPPROTO_UDPLITE"),
    (137, "IPPROTO_MPLS"),
    (143, "IPPROTO_ETHERNET"),
    (255, "IPPROTO_RAW"),
    (262, "IPPROTO_MPTCP"),
];

fn name_in(table: &[(u16, &str)], v: u16) -> String {
    table
        .iter()
        .find(|(n, _)| *n == v)
        .map_or_else(|| v.to_string(), |(_, name)| (*name).to_owned())
}

/// `AF_INET`, `AF_INET6`, ... (Tetragon's `network.InetFamily`).
pub fn family_name(family: u16) -> String {
    name_in(FAMILIES, family)
}

/// `SOCK_STREAM`, `SOCK_DGRAM`, ... (Tetragon's `network.InetType`).
pub fn sock_type_name(sock_type: u16) -> String {
    name_in(SOCK_TYPES, sock_type)
}

/// `IPPROTO_TCP`, `IPPROTO_UDP`, ... (Tetragon's `network.InetProtocol`).
pub fn protocol_name(protocol: u16) -> String {
    name_in(PROTOCOLS, protocol)
}

/// An address as Go's `net.IP.String()` prints it, which is what Tetragon puts in events:
/// dotted IPv4, RFC 5952 IPv6 (`2001:db8::1`, `::`), a v4-mapped IPv6 address as plain dotted
/// IPv4, and `<nil>` when there is no address (a family other than `AF_INET`/`AF_INET6`).
pub fn ip_text(ip: Option<IpAddr>) -> String {
    match ip {
        None => "<nil>".to_owned(),
        Some(IpAddr::V4(a)) => a.to_string(),
        Some(IpAddr::V6(a)) => match a.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => a.to_string(),
        },
    }
}

/// The connecting socket as Tetragon's `sock_arg`.
///
/// At `socket_connect` the socket is usually not bound yet, so `saddr` is `0.0.0.0` (`::`)
/// and `sport` 0, exactly what Tetragon prints for an unbound socket (Go renders the zero
/// address as `0.0.0.0`/`::`). A socket bound before `connect` shows its local address and
/// port. Unlike a `tcp_connect` kprobe, which runs after the kernel picked the source, the LSM
/// hook runs before, so an unbound socket's source stays empty even for `tcp_connect`-written
/// policies.
///
/// `state` is left empty (omitted in JSON): the kernel record does not carry `sk_state`, and
/// at this hook it is whatever the socket had before this `connect` (`TCP_CLOSE` for a fresh
/// socket, `TCP_SYN_SENT` for a repeated non-blocking connect, `TCP_ESTABLISHED` for a
/// connected UDP socket). Tetragon's `tcp_connect` events say `TCP_SYN_SENT`, but that state
/// is reached only after the hook allowed the connect, so claiming it for a denied connect
/// would be wrong. `mark`, `priority` and `cookie` are not recorded either and stay 0.
pub fn sock_arg(n: &NetData) -> KprobeSock {
    KprobeSock {
        family: family_name(n.family),
        r#type: sock_type_name(n.sock_type),
        protocol: protocol_name(n.protocol),
        saddr: ip_text(n.saddr),
        daddr: ip_text(n.daddr),
        sport: u32::from(n.sport),
        dport: u32::from(n.dport),
        ..Default::default()
    }
}

/// The address connected to as Tetragon's `sockaddr_arg`.
pub fn sockaddr_arg(a: &Sockaddr) -> KprobeSockaddr {
    KprobeSockaddr {
        family: family_name(a.family),
        addr: ip_text(a.addr),
        port: u32::from(a.port),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lsm_shared::{AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP};

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn names_are_tetragons_and_unknown_values_print_as_numbers() {
        assert_eq!(family_name(AF_INET), "AF_INET");
        assert_eq!(family_name(AF_INET6), "AF_INET6");
        assert_eq!(family_name(1), "AF_UNIX");
        assert_eq!(family_name(12), "AF_DECnet");
        assert_eq!(family_name(22), "22", "Tetragon has no AF_SNA");
        assert_eq!(family_name(46), "46");
        assert_eq!(sock_type_name(1), "SOCK_STREAM");
        assert_eq!(sock_type_name(2), "SOCK_DGRAM");
        assert_eq!(sock_type_name(7), "SOCK_PACKET", "Tetragon's table");
        assert_eq!(sock_type_name(10), "10");
        assert_eq!(protocol_name(IPPROTO_TCP), "IPPROTO_TCP");
        assert_eq!(protocol_name(IPPROTO_UDP), "IPPROTO_UDP");
        assert_eq!(protocol_name(0), "IPPROTO_IP");
        assert_eq!(protocol_name(262), "IPPROTO_MPTCP");
        assert_eq!(protocol_name(58), "58", "no ICMPv6 in Tetragon's table");
    }

    #[test]
    fn addresses_print_like_go_net_ip() {
        assert_eq!(ip_text(ip("10.0.0.5")), "10.0.0.5");
        assert_eq!(ip_text(ip("0.0.0.0")), "0.0.0.0");
        assert_eq!(ip_text(ip("::")), "::");
        assert_eq!(ip_text(ip("::1")), "::1");
        assert_eq!(ip_text(ip("2001:DB8:0:0:0:0:0:1")), "2001:db8::1");
        // The longest run of zero groups is compressed, the first one on a tie, never a
        // single group.
        assert_eq!(ip_text(ip("2001:db8:0:0:1:0:0:1")), "2001:db8::1:0:0:1");
        assert_eq!(ip_text(ip("2001:0:0:1:0:0:0:1")), "2001:0:0:1::1");
        assert_eq!(ip_text(ip("2001:db8:0:1:1:1:1:1")), "2001:db8:0:1:1:1:1:1");
        // Go prints v4-mapped addresses as IPv4, v4-compatible ones as IPv6.
        assert_eq!(ip_text(ip("::ffff:192.0.2.1")), "192.0.2.1");
        assert_eq!(ip_text(ip("::192.0.2.1")), "::c000:201");
        assert_eq!(ip_text(None), "<nil>");
    }

    fn net(family: u16, saddr: &str, sport: u16, daddr: &str, dport: u16) -> NetData {
        NetData {
            family,
            sock_type: 1,
            protocol: IPPROTO_TCP,
            sport,
            dport,
            saddr: ip(saddr),
            daddr: ip(daddr),
        }
    }

    #[test]
    fn an_unbound_tcp_socket_shows_the_zero_source_and_no_state() {
        let s = sock_arg(&net(AF_INET, "0.0.0.0", 0, "198.51.100.1", 443));
        assert_eq!(
            s,
            KprobeSock {
                family: "AF_INET".into(),
                r#type: "SOCK_STREAM".into(),
                protocol: "IPPROTO_TCP".into(),
                saddr: "0.0.0.0".into(),
                daddr: "198.51.100.1".into(),
                sport: 0,
                dport: 443,
                state: String::new(),
                ..Default::default()
            }
        );
        let s = sock_arg(&net(AF_INET6, "::", 0, "2001:db8::53", 53));
        assert_eq!(
            (s.family.as_str(), s.saddr.as_str(), s.daddr.as_str()),
            ("AF_INET6", "::", "2001:db8::53")
        );
    }

    #[test]
    fn sockaddr_is_the_address_with_the_familys_name() {
        let a = sockaddr_arg(&Sockaddr {
            family: AF_INET,
            addr: ip("198.51.100.1"),
            port: 443,
        });
        assert_eq!(
            a,
            KprobeSockaddr {
                family: "AF_INET".into(),
                addr: "198.51.100.1".into(),
                port: 443,
            }
        );
    }

    #[test]
    fn a_non_ip_socket_has_nil_addresses_like_tetragon() {
        let n = NetData {
            family: 1,
            sock_type: 1,
            protocol: 0,
            sport: 0,
            dport: 0,
            saddr: None,
            daddr: None,
        };
        let s = sock_arg(&n);
        assert_eq!(
            (s.family.as_str(), s.saddr.as_str(), s.daddr.as_str()),
            ("AF_UNIX", "<nil>", "<nil>")
        );
        let a = Sockaddr {
            family: n.family,
            addr: n.daddr,
            port: n.dport,
        };
        assert_eq!(sockaddr_arg(&a).addr, "<nil>");
    }
}
