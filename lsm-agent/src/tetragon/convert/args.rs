//! Our hook arguments → Tetragon's `KprobeArgument`, one oneof member per declared type, as
//! Tetragon's gRPC layer picks them (so `tetra` and JSON consumers read the members they
//! expect).

use super::super::{
    net,
    proto::tetragon::{
        Capabilities, KernelModule, KprobeArgument, KprobeCapability, KprobeDns, KprobeFile,
        KprobeInt32List, KprobeLinuxBinprm, KprobePath, KprobeSkb, KprobeTruncatedBytes, Namespace,
        ProcessCredentials, SecureBitsType, SyscallId, UserNamespace, kprobe_argument::Arg,
    },
};
use crate::events::model::{self, CapSetKind, SyscallAbi};
use crate::policy::values::CAPABILITIES;

/// The wire form of one argument, its `label` included.
pub fn argument(a: &model::Arg) -> KprobeArgument {
    use model::ArgValue as V;
    let arg = match &a.value {
        V::File { path } => Arg::FileArg(KprobeFile {
            path: path.clone(),
            ..Default::default()
        }),
        V::Path { path } => Arg::PathArg(KprobePath {
            path: path.clone(),
            ..Default::default()
        }),
        V::LinuxBinprm { path } => Arg::LinuxBinprmArg(KprobeLinuxBinprm {
            path: path.clone(),
            ..Default::default()
        }),
        V::Int(v) => Arg::IntArg(*v),
        V::Uint(v) => Arg::UintArg(*v),
        V::Size(v) => Arg::SizeArg(*v),
        V::Long(v) => Arg::LongArg(*v),
        V::Capability(v) => Arg::CapabilityArg(KprobeCapability {
            value: Some(*v),
            name: usize::try_from(*v)
                .ok()
                .and_then(|i| CAPABILITIES.get(i))
                .map_or_else(String::new, |n| (*n).to_owned()),
        }),
        V::String(s) => Arg::StringArg(s.clone()),
        V::Bytes(b) => Arg::BytesArg(b.clone()),
        // Tetragon sends a plain `bytes_arg` when nothing was cut off, whatever the kernel
        // side said.
        V::TruncatedBytes { bytes, orig_size } if *orig_size <= bytes.len() as u64 => {
            Arg::BytesArg(bytes.clone())
        }
        V::TruncatedBytes { bytes, orig_size } => Arg::TruncatedBytesArg(KprobeTruncatedBytes {
            bytes_arg: bytes.clone(),
            orig_size: *orig_size,
        }),
        V::Int32List(v) => Arg::Int32ListArg(KprobeInt32List { values: v.clone() }),
        V::Dns(q) => Arg::DnsArg(q.as_ref().map_or_else(KprobeDns::default, |q| KprobeDns {
            query_name: q.name.clone(),
            query_type: q.qtype.into(),
            query_type_str: q.type_name().unwrap_or_default().to_owned(),
            query_class: q.qclass.into(),
            tx_id: q.id.into(),
            flags: q.flags.into(),
            response: q.flags & 0x8000 != 0,
            truncated: false,
            parsed: true,
        })),
        V::Sock(n) => Arg::SockArg(n.as_ref().map(net::sock_arg).unwrap_or_default()),
        V::Sockaddr(s) => Arg::SockaddrArg(s.as_ref().map(net::sockaddr_arg).unwrap_or_default()),
        V::Skb(s) => Arg::SkbArg(skb(s)),
        V::Cred(c) => Arg::ProcessCredentialsArg(credentials(c)),
        V::Module { name, signature_ok } => Arg::ModuleArg(KernelModule {
            name: name.clone(),
            signature_ok: *signature_ok,
        }),
        V::UserNs(n) => Arg::UserNsArg(user_namespace(n)),
        V::BpfObj(o) => super::bpf::bpf_obj_arg(o),
        V::CapSet { kind, caps } => {
            // Tetragon prints the raw set as 16 hex digits.
            let hex = format!("{caps:016x}");
            match kind {
                CapSetKind::KernelCapT => Arg::KernelCapTArg(hex),
                CapSetKind::Inheritable => Arg::CapInheritableArg(hex),
                CapSetKind::Permitted => Arg::CapPermittedArg(hex),
                CapSetKind::Effective => Arg::CapEffectiveArg(hex),
            }
        }
        V::SyscallId { id, abi } => Arg::SyscallId(SyscallId {
            id: *id,
            abi: abi_name(*abi).to_owned(),
        }),
    };
    KprobeArgument {
        arg: Some(arg),
        label: a.label.clone().unwrap_or_default(),
    }
}

/// Tetragon's names of the syscall ABIs (`SyscallId.abi`).
pub fn abi_name(abi: SyscallAbi) -> &'static str {
    match abi {
        SyscallAbi::X64 => "x64",
        SyscallAbi::I386 => "i386",
        SyscallAbi::Arm64 => "arm64",
        SyscallAbi::Arm32 => "arm32",
    }
}

fn skb(s: &model::Skb) -> KprobeSkb {
    KprobeSkb {
        hash: s.hash,
        len: s.len,
        priority: s.priority,
        mark: s.mark,
        saddr: net::ip_text(s.saddr),
        daddr: net::ip_text(s.daddr),
        sport: s.sport,
        dport: s.dport,
        proto: s.proto,
        sec_path_len: s.sec_path_len,
        sec_path_olen: s.sec_path_olen,
        // Tetragon names the protocol from the low 16 bits of `proto`.
        protocol: net::protocol_name(s.proto as u16),
        family: net::family_name(s.family),
    }
}

/// The numbers of the bits set in `set`, as Tetragon lists capabilities.
fn cap_list(set: u64) -> Vec<i32> {
    (0..64).filter(|b| set & (1 << b) != 0).collect()
}

/// The `SECBIT_*` flags set in `bits`, each as its `SecureBitsType` (whose value is the bit).
fn secure_bits(bits: u32) -> Vec<i32> {
    (0..8)
        .map(|b| 1u32 << b)
        .filter(|bit| bits & bit != 0)
        .filter_map(|bit| SecureBitsType::try_from(bit as i32).ok())
        .map(|t| t as i32)
        .collect()
}

fn credentials(c: &model::Cred) -> ProcessCredentials {
    ProcessCredentials {
        uid: Some(c.uid),
        gid: Some(c.gid),
        euid: Some(c.euid),
        egid: Some(c.egid),
        suid: Some(c.suid),
        sgid: Some(c.sgid),
        fsuid: Some(c.fsuid),
        fsgid: Some(c.fsgid),
        securebits: secure_bits(c.securebits),
        caps: Some(Capabilities {
            permitted: cap_list(c.caps.permitted),
            effective: cap_list(c.caps.effective),
            inheritable: cap_list(c.caps.inheritable),
        }),
        user_ns: Some(user_namespace(&c.user_ns)),
    }
}

fn user_namespace(n: &model::UserNs) -> UserNamespace {
    UserNamespace {
        level: Some(n.level),
        uid: Some(n.uid),
        gid: Some(n.gid),
        ns: Some(Namespace {
            inum: n.ns_inum,
            is_host: n.is_host(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::events::model::{
        Action, Arg as ModelArg, ArgValue as V, CapSets, Cred, Event, EventKind, Hook, HookOrigin,
        Process, Skb, Target, Time, UserNs,
    };
    use crate::policy::ir::KprobeTarget;
    use crate::tetragon::{convert::to_response, json::event_to_value};

    fn arg(value: V) -> KprobeArgument {
        argument(&ModelArg { value, label: None })
    }

    fn cred() -> Cred {
        Cred {
            uid: 1000,
            gid: 1000,
            euid: 0,
            egid: 1000,
            suid: 0,
            sgid: 1000,
            fsuid: 0,
            fsgid: 1000,
            securebits: 0x10 | 0x40,
            caps: CapSets {
                permitted: 1 | 1 << 21,
                effective: 1 << 21,
                inheritable: 0,
            },
            user_ns: UserNs {
                level: 0,
                uid: 0,
                gid: 0,
                ns_inum: 4_026_531_837,
            },
        }
    }

    fn child_ns() -> UserNs {
        UserNs {
            level: 1,
            uid: 1000,
            gid: 1000,
            ns_inum: 4_026_532_345,
        }
    }

    fn skb() -> Skb {
        Skb {
            hash: 7,
            len: 60,
            family: 2,
            saddr: Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))),
            daddr: Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2))),
            sport: 40000,
            dport: 53,
            proto: 17,
            ..Default::default()
        }
    }

    #[test]
    fn a_module_becomes_module_arg_with_its_name_and_signature_check() {
        let m = |signature_ok| V::Module {
            name: "dummy".into(),
            signature_ok,
        };
        let Some(Arg::ModuleArg(k)) = arg(m(Some(true))).arg else {
            panic!("not module_arg")
        };
        assert_eq!((k.name.as_str(), k.signature_ok), ("dummy", Some(true)));
        let Some(Arg::ModuleArg(k)) = arg(m(None)).arg else {
            panic!("not module_arg")
        };
        assert_eq!(k.signature_ok, None);
    }

    #[test]
    fn credentials_become_process_credentials_with_caps_bits_and_namespace() {
        let Some(Arg::ProcessCredentialsArg(c)) = arg(V::Cred(Box::new(cred()))).arg else {
            panic!("not process_credentials_arg")
        };
        assert_eq!((c.uid, c.euid, c.fsgid), (Some(1000), Some(0), Some(1000)));
        assert_eq!(
            c.securebits,
            [
                SecureBitsType::SecBitKeepCaps as i32,
                SecureBitsType::SecBitNoCapAmbientRaise as i32
            ]
        );
        let caps = c.caps.expect("caps");
        assert_eq!(caps.permitted, [0, 21]);
        assert_eq!(caps.effective, [21]);
        assert!(caps.inheritable.is_empty());
        let ns = c.user_ns.expect("user_ns");
        assert_eq!(ns.level, Some(0));
        assert_eq!(
            ns.ns,
            Some(Namespace {
                inum: 4_026_531_837,
                is_host: true
            })
        );
    }

    #[test]
    fn a_nested_user_namespace_is_not_the_hosts() {
        assert_eq!(
            arg(V::UserNs(child_ns())).arg,
            Some(Arg::UserNsArg(UserNamespace {
                level: Some(1),
                uid: Some(1000),
                gid: Some(1000),
                ns: Some(Namespace {
                    inum: 4_026_532_345,
                    is_host: false
                }),
            }))
        );
    }

    #[test]
    fn a_packet_names_its_protocol_and_family() {
        let Some(Arg::SkbArg(s)) = arg(V::Skb(Box::new(skb()))).arg else {
            panic!("not skb_arg")
        };
        assert_eq!(
            (s.saddr.as_str(), s.daddr.as_str()),
            ("10.0.0.1", "10.0.0.2")
        );
        assert_eq!((s.sport, s.dport, s.proto), (40000, 53, 17));
        assert_eq!(
            (s.protocol.as_str(), s.family.as_str()),
            ("IPPROTO_UDP", "AF_INET")
        );
        let Some(Arg::SkbArg(s)) = arg(V::Skb(Box::default())).arg else {
            panic!("not skb_arg")
        };
        // No addresses outside IPv4/IPv6: Go's nil IP.
        assert_eq!(s.saddr, "<nil>");
    }

    #[test]
    fn a_cut_buffer_is_truncated_bytes_and_a_whole_one_plain_bytes() {
        assert_eq!(
            arg(V::TruncatedBytes {
                bytes: b"hello".to_vec(),
                orig_size: 4096
            })
            .arg,
            Some(Arg::TruncatedBytesArg(KprobeTruncatedBytes {
                bytes_arg: b"hello".to_vec(),
                orig_size: 4096
            }))
        );
        assert_eq!(
            arg(V::TruncatedBytes {
                bytes: b"hi".to_vec(),
                orig_size: 2
            })
            .arg,
            Some(Arg::BytesArg(b"hi".to_vec()))
        );
    }

    #[test]
    fn capability_sets_are_sixteen_hex_digits_in_their_own_member() {
        let set = |kind| {
            arg(V::CapSet {
                kind,
                caps: 0x20_0001,
            })
            .arg
        };
        let hex = "0000000000200001".to_owned();
        assert_eq!(
            set(CapSetKind::KernelCapT),
            Some(Arg::KernelCapTArg(hex.clone()))
        );
        assert_eq!(
            set(CapSetKind::Inheritable),
            Some(Arg::CapInheritableArg(hex.clone()))
        );
        assert_eq!(
            set(CapSetKind::Permitted),
            Some(Arg::CapPermittedArg(hex.clone()))
        );
        assert_eq!(set(CapSetKind::Effective), Some(Arg::CapEffectiveArg(hex)));
    }

    #[test]
    fn a_syscall_id_carries_tetragons_abi_name() {
        let id = |abi| arg(V::SyscallId { id: 11, abi }).arg;
        for (abi, name) in [
            (SyscallAbi::X64, "x64"),
            (SyscallAbi::I386, "i386"),
            (SyscallAbi::Arm64, "arm64"),
            (SyscallAbi::Arm32, "arm32"),
        ] {
            assert_eq!(
                id(abi),
                Some(Arg::SyscallId(SyscallId {
                    id: 11,
                    abi: name.into()
                }))
            );
        }
    }

    /// A `commit_creds` kretprobe event carrying one argument of every shape added for
    /// generic kprobes.
    fn commit_creds_event() -> Event {
        let labeled = |value, label: &str| ModelArg {
            value,
            label: Some(label.into()),
        };
        let plain = |value| ModelArg { value, label: None };
        Event {
            node_name: "node1".into(),
            time: Time::from_unix_secs(1_700_000_000),
            kind: EventKind::Hook(Hook {
                process: Process {
                    pid: 4242,
                    binary: "/usr/bin/sudo".into(),
                    ..Default::default()
                },
                parent: None,
                policy_name: "creds".into(),
                policy_namespace: None,
                hook: Target::Kprobe(KprobeTarget {
                    function: "commit_creds".into(),
                    syscall: false,
                    ret: false,
                }),
                origin: HookOrigin::Kprobe {
                    call: "commit_creds".into(),
                },
                args: vec![
                    labeled(V::Cred(Box::new(cred())), "new"),
                    plain(V::UserNs(child_ns())),
                    plain(V::Skb(Box::new(skb()))),
                    plain(V::TruncatedBytes {
                        bytes: b"hello".to_vec(),
                        orig_size: 4096,
                    }),
                    plain(V::TruncatedBytes {
                        bytes: b"hi".to_vec(),
                        orig_size: 2,
                    }),
                    plain(V::CapSet {
                        kind: CapSetKind::Effective,
                        caps: 0x1f_ffff_ffff,
                    }),
                    plain(V::CapSet {
                        kind: CapSetKind::KernelCapT,
                        caps: 1 << 21,
                    }),
                    plain(V::SyscallId {
                        id: 59,
                        abi: SyscallAbi::X64,
                    }),
                    labeled(
                        V::File {
                            path: "/etc/shadow".into(),
                        },
                        "fd",
                    ),
                ],
                return_arg: Some(Box::new(plain(V::Int(0)))),
                data: Vec::new(),
                action: Action::Post,
                return_action: None,
                message: None,
                tags: vec![],
                request: None,
            }),
        }
    }

    #[test]
    fn every_generic_argument_shape_prints_as_tetragons_json() {
        let got = event_to_value(&to_response(&commit_creds_event()));
        let want: serde_json::Value =
            serde_json::from_str(include_str!("testdata/commit_creds_kprobe.json"))
                .expect("fixture is JSON");
        assert_eq!(got, want);
    }

    #[test]
    fn a_return_probe_action_other_than_post_is_reported() {
        let mut ev = commit_creds_event();
        let EventKind::Hook(h) = &mut ev.kind else {
            unreachable!()
        };
        h.return_action = Some(Action::Sigkill);
        let v = event_to_value(&to_response(&ev));
        assert_eq!(
            v["process_kprobe"]["return_action"],
            "KPROBE_ACTION_SIGKILL"
        );
    }

    #[test]
    fn a_generic_kprobe_prints_tetras_line_for_other_functions() {
        use crate::tetragon::compact::{CompactOptions, encode_compact};
        assert_eq!(
            encode_compact(
                &to_response(&commit_creds_event()),
                &CompactOptions::default()
            )
            .unwrap(),
            "❓ syscall node1 /usr/bin/sudo commit_creds"
        );
    }
}
