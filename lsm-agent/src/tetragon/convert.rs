//! Our events → Tetragon `GetEventsResponse`s: the one place that builds event messages.
//!
//! Events of policies written as kprobes come out as `process_kprobe` with the policy's
//! `call` and Tetragon's argument shapes (so `tetra` prints `📚 read`, `📝 write`, ...);
//! events of `lsmhooks` policies come out as `process_lsm`.

use prost_types::Timestamp;

use super::proto::tetragon::{
    Container, GetEventsResponse, Image, KprobeAction, Pod, Process, ProcessExec, ProcessExit,
    ProcessKprobe, ProcessLsm, ProcessTracepoint, ProcessUprobe, ProcessUsdt, RateLimitInfo,
    get_events_response::Event,
};
use crate::events::model::{self, EventKind, HookOrigin};

mod args;
mod bpf;
pub use args::{abi_name, argument};

/// The wire form of `ev`.
pub fn to_response(ev: &model::Event) -> GetEventsResponse {
    let event = match &ev.kind {
        EventKind::Exec(e) => Event::ProcessExec(ProcessExec {
            process: Some(process(&e.process)),
            parent: e.parent.as_ref().map(process),
            ancestors: vec![],
        }),
        EventKind::Exit(e) => Event::ProcessExit(ProcessExit {
            process: Some(process(&e.process)),
            parent: e.parent.as_ref().map(process),
            signal: e.signal.map(signal_name).unwrap_or_default(),
            status: e.status,
            time: Some(timestamp(ev.time)),
            ancestors: vec![],
        }),
        EventKind::Hook(h) => hook(h),
    };
    GetEventsResponse {
        event: Some(event),
        node_name: ev.node_name.clone(),
        time: Some(timestamp(ev.time)),
        ..Default::default()
    }
}

/// The `rate_limit_info` event of the JSON export: `dropped` events left out by the export's
/// rate limit, reported at `unix_ms`.
pub fn rate_limit_info(dropped: u64, node_name: &str, unix_ms: i64) -> GetEventsResponse {
    GetEventsResponse {
        event: Some(Event::RateLimitInfo(RateLimitInfo {
            number_of_dropped_process_events: dropped,
        })),
        node_name: node_name.to_owned(),
        time: Some(Timestamp {
            seconds: unix_ms.div_euclid(1000),
            nanos: (unix_ms.rem_euclid(1000) * 1_000_000) as i32,
        }),
        ..Default::default()
    }
}

pub fn timestamp(t: model::Time) -> Timestamp {
    let ns = t.unix_nanos();
    Timestamp {
        seconds: (ns / 1_000_000_000) as i64,
        nanos: (ns % 1_000_000_000) as i32,
    }
}

/// Signal name for `ProcessExit.signal` (of a non-zero signal number).
pub fn signal_name(sig: u32) -> String {
    nix::sys::signal::Signal::try_from(sig as i32)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("SIG{sig}"))
}

/// Tetragon's names of the process flags.
fn flag_name(f: model::ProcessFlag) -> &'static str {
    match f {
        model::ProcessFlag::Execve => "execve",
        model::ProcessFlag::Clone => "clone",
        model::ProcessFlag::ProcFs => "procFS",
        model::ProcessFlag::TruncArgs => "truncArgs",
    }
}

/// Tetragon's `arguments` string: everything after argv[0], space-separated, an argument that
/// contains a space wrapped in double quotes (so `bash -c "curl https://x"` reads as it was
/// typed). As in Tetragon, a quoted argument is always preceded by a space, also when it is
/// the first one; `tetra` prints the string as it comes.
pub fn arguments(args: &[String]) -> String {
    let mut out = String::new();
    for a in args {
        if a.contains(' ') {
            out.push_str(" \"");
            out.push_str(a);
            out.push('"');
        } else {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(a);
        }
    }
    out
}

/// Tetragon's `docker` field: the container id without its runtime prefix (`containerd://`),
/// cut to the 31 characters Tetragon takes from the cgroup name.
fn docker_id(pod: Option<&model::Pod>) -> String {
    const TETRAGON_ID_LEN: usize = 31;
    let Some(c) = pod.and_then(|p| p.container.as_ref()) else {
        return String::new();
    };
    let id = c.id.split_once("://").map_or(c.id.as_str(), |(_, id)| id);
    id.chars().take(TETRAGON_ID_LEN).collect()
}

pub fn process(p: &model::Process) -> Process {
    Process {
        exec_id: p.exec_id.clone(),
        pid: Some(p.pid),
        uid: p.uid,
        cwd: p.cwd.clone().unwrap_or_default(),
        binary: p.binary.clone(),
        arguments: arguments(p.args()),
        flags: p
            .flags
            .iter()
            .map(|f| flag_name(*f))
            .collect::<Vec<_>>()
            .join(" "),
        start_time: p.start_time.map(timestamp),
        pod: p.pod.as_deref().map(pod),
        docker: docker_id(p.pod.as_deref()),
        parent_exec_id: p.parent_exec_id.clone().unwrap_or_default(),
        tid: p.tid,
        ..Default::default()
    }
}

fn pod(p: &model::Pod) -> Pod {
    Pod {
        namespace: p.namespace.clone(),
        name: p.name.clone(),
        uid: p.uid.clone(),
        container: p.container.as_ref().map(container),
        pod_labels: p.labels.clone().into_iter().collect(),
        workload: p.workload.clone(),
        workload_kind: p.workload_kind.clone(),
        ..Default::default()
    }
}

fn container(c: &model::Container) -> Container {
    Container {
        id: c.id.clone(),
        name: c.name.clone(),
        image: c.image.as_ref().map(|i| Image {
            id: i.id.clone(),
            name: i.name.clone(),
        }),
        start_time: c.start_time.map(timestamp),
        pid: c.pid,
        maybe_exec_probe: c.maybe_exec_probe,
        ..Default::default()
    }
}

fn hook(h: &model::Hook) -> Event {
    let process = Some(process(&h.process));
    let parent = h.parent.as_ref().map(self::process);
    let args = h.args.iter().map(argument).collect();
    let act = action(h.action) as i32;
    let policy_name = h.policy_name.clone();
    let message = h.message.clone().unwrap_or_default();
    let tags = h.tags.clone();
    match &h.origin {
        HookOrigin::Kprobe { call } => Event::ProcessKprobe(ProcessKprobe {
            process,
            parent,
            function_name: call.clone(),
            args,
            r#return: h.return_arg.as_deref().map(argument),
            data: h.data.iter().map(argument).collect(),
            action: act,
            policy_name,
            // Tetragon's number 0 is `Post`, so every kprobe event says `Post` here unless a
            // return probe ran another action.
            return_action: action(h.return_action.unwrap_or(model::Action::Post)) as i32,
            message,
            tags,
            ..Default::default()
        }),
        HookOrigin::Tracepoint { subsystem, event } => {
            Event::ProcessTracepoint(ProcessTracepoint {
                process,
                parent,
                subsys: subsystem.clone(),
                event: event.clone(),
                args,
                policy_name,
                action: act,
                message,
                tags,
                ..Default::default()
            })
        }
        HookOrigin::Uprobe(crate::policy::ir::UprobeTarget {
            path,
            usdt: Some(p),
            ..
        }) => Event::ProcessUsdt(ProcessUsdt {
            process,
            parent,
            path: path.clone(),
            provider: p.provider.clone(),
            name: p.name.clone(),
            policy_name,
            message,
            args,
            action: act,
            tags,
            ..Default::default()
        }),
        HookOrigin::Uprobe(u) => Event::ProcessUprobe(ProcessUprobe {
            process,
            parent,
            path: u.path.clone(),
            symbol: u.symbol().to_string(),
            offset: u.offset(),
            policy_name,
            message,
            args,
            action: act,
            tags,
            ..Default::default()
        }),
        HookOrigin::LsmHook => Event::ProcessLsm(ProcessLsm {
            process,
            parent,
            function_name: h.function_name().to_string(),
            policy_name,
            message,
            args,
            action: act,
            tags,
            ..Default::default()
        }),
    }
}

fn action(a: model::Action) -> KprobeAction {
    match a {
        model::Action::Post => KprobeAction::Post,
        model::Action::Sigkill => KprobeAction::Sigkill,
        model::Action::Signal => KprobeAction::Signal,
        model::Action::Override => KprobeAction::Override,
        model::Action::GetUrl => KprobeAction::Geturl,
        model::Action::DnsLookup => KprobeAction::Dnslookup,
        model::Action::Set => KprobeAction::Set,
        model::Action::NotifyEnforcer => KprobeAction::Notifyenforcer,
    }
}

#[cfg(test)]
mod tests {
    use lsm_shared::*;

    use super::*;
    use crate::{
        events::{
            decode::{ExitData, KernelEvent},
            enrich::fixtures::*,
        },
        policy::{
            compile::MapImage,
            ir::{ArgType, HookOrigin},
        },
        tetragon::{
            compact::{CompactOptions, encode_compact},
            proto::tetragon::{
                KprobeCapability, KprobeDns, KprobeFile, KprobeInt32List, KprobeSock,
                kprobe_argument::Arg,
            },
        },
    };

    /// What the daemon publishes for `ev`, on the wire.
    fn convert(
        c: &mut crate::events::enrich::ProcessCache,
        ev: &KernelEvent,
        img: &MapImage,
    ) -> Vec<GetEventsResponse> {
        c.convert(ev, img).iter().map(to_response).collect()
    }

    #[test]
    fn arguments_with_a_space_are_quoted_as_tetragon_quotes_them() {
        let s = |v: &[&str]| arguments(&v.iter().map(|a| a.to_string()).collect::<Vec<_>>());
        assert_eq!(s(&[]), "");
        assert_eq!(s(&["-c", "true"]), "-c true");
        assert_eq!(
            s(&["-c", "curl https://ebpf.io/applications/#tetragon"]),
            "-c \"curl https://ebpf.io/applications/#tetragon\""
        );
        // Tetragon's decoder puts the space before a quoted argument even when it comes first.
        assert_eq!(s(&["a b", "c"]), " \"a b\" c");
        assert_eq!(s(&["x", "a b", "c d"]), "x \"a b\" \"c d\"");
    }

    #[test]
    fn exec_becomes_process_exec_with_arguments_without_argv0() {
        let mut c = cache();
        let r = to_response(&exec_cat(&mut c));
        let Some(Event::ProcessExec(e)) = r.event else {
            panic!("not exec")
        };
        let p = e.process.unwrap();
        assert_eq!(p.binary, "/usr/bin/cat");
        assert_eq!(p.arguments, "/etc/shadow");
        assert_eq!(p.pid, Some(100));
        assert_eq!(r.node_name, "node1");
        assert!(r.time.is_some());
    }

    #[test]
    fn process_fields_keep_tetragons_shapes() {
        let t = model::Time::from_unix_nanos(1_700_000_000_123_456_789);
        let p = process(&model::Process {
            exec_id: "id".into(),
            pid: 7,
            tid: Some(8),
            uid: Some(1000),
            cwd: Some("/".into()),
            binary: "/bin/sh".into(),
            argv: vec!["sh".into(), "-c".into(), "true".into()],
            flags: vec![model::ProcessFlag::Execve, model::ProcessFlag::TruncArgs],
            start_time: Some(t),
            parent_exec_id: None,
            pod: Some(std::sync::Arc::new(model::Pod {
                namespace: "default".into(),
                name: "web-1".into(),
                labels: [("app".to_owned(), "web".to_owned())].into(),
                container: Some(model::Container {
                    id: "c0".into(),
                    maybe_exec_probe: true,
                    ..Default::default()
                }),
                ..Default::default()
            })),
        });
        assert_eq!(p.arguments, "-c true");
        assert_eq!(p.flags, "execve truncArgs");
        assert_eq!(p.parent_exec_id, "");
        assert_eq!((p.pid, p.tid, p.uid), (Some(7), Some(8), Some(1000)));
        assert_eq!(
            p.start_time,
            Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 123_456_789,
            })
        );
        let pod = p.pod.unwrap();
        assert_eq!(
            (pod.namespace.as_str(), pod.name.as_str()),
            ("default", "web-1")
        );
        assert_eq!(pod.pod_labels["app"], "web");
        assert!(pod.container.unwrap().maybe_exec_probe);
    }

    #[test]
    fn a_sigkill_exit_carries_the_signal_name() {
        let mut c = cache();
        exec_cat(&mut c);
        let r = convert(
            &mut c,
            &KernelEvent::Exit(ExitData {
                ktime: 20,
                cgroup_id: 0,
                pid: 100,
                tgid: 100,
                exit_code: 9,
            }),
            &MapImage::default(),
        )
        .remove(0);
        let Some(Event::ProcessExit(e)) = r.event else {
            panic!("not exit")
        };
        assert_eq!(e.signal, "SIGKILL");
        assert_eq!(e.status, 0);
        assert_eq!(e.process.unwrap().binary, "/usr/bin/cat");
        assert_eq!(e.time, r.time);
    }

    #[test]
    fn normal_exit_reports_the_status() {
        let mut c = cache();
        exec_cat(&mut c);
        let ev = KernelEvent::Exit(ExitData {
            ktime: 20,
            cgroup_id: 0,
            pid: 100,
            tgid: 100,
            exit_code: 1 << 8,
        });
        let Some(Event::ProcessExit(e)) =
            convert(&mut c, &ev, &MapImage::default()).remove(0).event
        else {
            panic!("not exit")
        };
        assert_eq!((e.signal.as_str(), e.status), ("", 1));
    }

    #[test]
    fn kprobe_written_policy_events_are_process_kprobe_in_tetragon_shape() {
        let mut c = cache();
        exec_cat(&mut c);
        let mut img = MapImage::default();
        img.slots.insert(
            HOOK_FILE_PERMISSION * MAX_SELECTORS,
            slot(HookOrigin::Kprobe {
                call: "security_file_permission".into(),
            }),
        );
        let r = convert(&mut c, &hook_event(), &img).remove(0);
        let Some(Event::ProcessKprobe(k)) = r.event else {
            panic!("not kprobe")
        };
        assert_eq!(k.function_name, "security_file_permission");
        assert_eq!(k.action, KprobeAction::Sigkill as i32);
        assert_eq!(k.policy_name, "file-monitoring-filtered");
        assert_eq!(
            k.args[0].arg,
            Some(Arg::FileArg(KprobeFile {
                path: "/etc/shadow".into(),
                ..Default::default()
            }))
        );
        assert_eq!(k.args[1].arg, Some(Arg::IntArg(4)));
        assert_eq!(k.process.unwrap().binary, "/usr/bin/cat");
    }

    #[test]
    fn lsmhook_policy_events_are_process_lsm() {
        let mut c = cache();
        exec_cat(&mut c);
        let mut img = MapImage::default();
        img.slots.insert(
            HOOK_FILE_PERMISSION * MAX_SELECTORS,
            slot(HookOrigin::LsmHook),
        );
        let Some(Event::ProcessLsm(l)) = convert(&mut c, &hook_event(), &img).remove(0).event
        else {
            panic!("not lsm")
        };
        assert_eq!(l.function_name, "file_permission");
    }

    #[test]
    fn integer_arguments_use_tetragons_member_for_their_type() {
        let arg = |value| {
            argument(&model::Arg {
                value,
                label: Some("n".into()),
            })
        };
        assert_eq!(arg(model::ArgValue::Uint(3)).arg, Some(Arg::UintArg(3)));
        assert_eq!(arg(model::ArgValue::Size(3)).arg, Some(Arg::SizeArg(3)));
        assert_eq!(arg(model::ArgValue::Long(-3)).arg, Some(Arg::LongArg(-3)));
        // The kernel's value packs the header and the question's type and class.
        let q = model::DnsQuery::from_raw(
            "www.example.test".into(),
            lsm_shared::dns_value(0x1234, 0x8180, 28, 1),
        );
        assert_eq!(
            arg(model::ArgValue::Dns(Some(q))).arg,
            Some(Arg::DnsArg(KprobeDns {
                query_name: "www.example.test".into(),
                query_type: 28,
                query_type_str: "AAAA".into(),
                query_class: 1,
                tx_id: 0x1234,
                flags: 0x8180,
                response: true,
                truncated: false,
                parsed: true,
            }))
        );
        // A type without a mnemonic has its number only.
        let private = model::DnsQuery {
            qtype: 65280,
            ..Default::default()
        };
        assert_eq!(private.type_name(), None);
        assert_eq!(
            arg(model::ArgValue::Dns(None)).arg,
            Some(Arg::DnsArg(KprobeDns::default()))
        );
        assert_eq!(
            arg(model::ArgValue::Int32List(vec![3, -4])).arg,
            Some(Arg::Int32ListArg(KprobeInt32List {
                values: vec![3, -4]
            }))
        );
        assert_eq!(
            arg(model::ArgValue::Capability(21)).arg,
            Some(Arg::CapabilityArg(KprobeCapability {
                value: Some(21),
                name: "CAP_SYS_ADMIN".into()
            }))
        );
        assert_eq!(
            arg(model::ArgValue::Capability(99)).arg,
            Some(Arg::CapabilityArg(KprobeCapability {
                value: Some(99),
                name: String::new()
            }))
        );
        assert_eq!(arg(model::ArgValue::Int(-3)).label, "n");
    }

    #[test]
    fn a_tcp_connect_policy_event_prints_as_tetras_connect_line() {
        let r = to_response(&convert_connect(
            HookOrigin::Kprobe {
                call: "tcp_connect".into(),
            },
            vec![net_arg(0, ArgType::Sock, "sock")],
            &connect_record([10, 0, 0, 5], 0, [198, 51, 100, 1], 443),
        ));
        assert_eq!(
            encode_compact(&r, &CompactOptions::default()).unwrap(),
            "🔌 connect node1 /usr/bin/curl tcp 10.0.0.5:0 -> 198.51.100.1:443"
        );
        let Some(Event::ProcessKprobe(k)) = &r.event else {
            panic!("not kprobe")
        };
        assert_eq!(k.function_name, "tcp_connect");
        assert_eq!(
            k.args[0].arg,
            Some(Arg::SockArg(KprobeSock {
                family: "AF_INET".into(),
                r#type: "SOCK_STREAM".into(),
                protocol: "IPPROTO_TCP".into(),
                saddr: "10.0.0.5".into(),
                daddr: "198.51.100.1".into(),
                sport: 0,
                dport: 443,
                ..Default::default()
            }))
        );
    }

    #[test]
    fn an_unbound_socket_connects_from_the_zero_address_and_port() {
        let r = to_response(&convert_connect(
            HookOrigin::Kprobe {
                call: "tcp_connect".into(),
            },
            vec![net_arg(0, ArgType::Sock, "sock")],
            &connect_record([0; 4], 0, [198, 51, 100, 1], 80),
        ));
        assert_eq!(
            encode_compact(&r, &CompactOptions::default()).unwrap(),
            "🔌 connect node1 /usr/bin/curl tcp 0.0.0.0:0 -> 198.51.100.1:80"
        );
    }

    #[test]
    fn socket_connect_json_has_sock_and_sockaddr_args_under_tetragons_proto_names() {
        let r = to_response(&convert_connect(
            HookOrigin::Kprobe {
                call: "security_socket_connect".into(),
            },
            vec![
                net_arg(0, ArgType::Sock, "socket"),
                net_arg(1, ArgType::Sockaddr, "sockaddr"),
            ],
            &connect_record([10, 0, 0, 5], 40000, [198, 51, 100, 1], 443),
        ));
        let v = crate::tetragon::json::event_to_value(&r);
        let args = &v["process_kprobe"]["args"];
        assert_eq!(
            args[0],
            serde_json::json!({"sock_arg": {
                "family": "AF_INET",
                "type": "SOCK_STREAM",
                "protocol": "IPPROTO_TCP",
                "saddr": "10.0.0.5",
                "daddr": "198.51.100.1",
                "sport": 40000,
                "dport": 443,
            }})
        );
        assert_eq!(
            args[1],
            serde_json::json!({"sockaddr_arg": {
                "family": "AF_INET",
                "addr": "198.51.100.1",
                "port": 443,
            }})
        );
        assert_eq!(
            v["process_kprobe"]["function_name"],
            "security_socket_connect"
        );
    }

    #[test]
    fn an_lsmhook_socket_connect_event_is_process_lsm_with_the_connection() {
        let r = to_response(&convert_connect(
            HookOrigin::LsmHook,
            vec![
                net_arg(0, ArgType::Sock, "socket"),
                net_arg(1, ArgType::Sockaddr, "sockaddr"),
            ],
            &connect_record([0; 4], 0, [192, 0, 2, 7], 22),
        ));
        let Some(Event::ProcessLsm(l)) = r.event else {
            panic!("not lsm")
        };
        assert_eq!(l.function_name, "socket_connect");
        let Some(Arg::SockArg(s)) = &l.args[0].arg else {
            panic!("not a sock_arg")
        };
        assert_eq!((s.daddr.as_str(), s.dport), ("192.0.2.7", 22));
        assert!(
            matches!(&l.args[1].arg, Some(Arg::SockaddrArg(a)) if a.addr == "192.0.2.7" && a.port == 22)
        );
    }

    #[test]
    fn a_missing_connection_gives_empty_socket_arguments() {
        assert_eq!(
            argument(&model::Arg {
                value: model::ArgValue::Sock(None),
                label: None,
            })
            .arg,
            Some(Arg::SockArg(KprobeSock::default()))
        );
    }

    /// cat in `default/xwing` (the enrichment fixtures): its exec, a `security_file_permission`
    /// kprobe event, the same as an `lsmhooks` event, and its SIGKILL exit, on the wire.
    fn xwing_cat_events() -> Vec<GetEventsResponse> {
        let mut c = cache_in_xwing();
        let mut out = vec![to_response(&exec_cat(&mut c))];
        let mut img = MapImage::default();
        img.slots.insert(
            HOOK_FILE_PERMISSION * MAX_SELECTORS,
            slot(HookOrigin::Kprobe {
                call: "security_file_permission".into(),
            }),
        );
        out.extend(convert(&mut c, &hook_event(), &img));
        img.slots.insert(
            HOOK_FILE_PERMISSION * MAX_SELECTORS,
            slot(HookOrigin::LsmHook),
        );
        out.extend(convert(&mut c, &hook_event(), &img));
        let exit = KernelEvent::Exit(ExitData {
            ktime: 20,
            cgroup_id: XWING_CGROUP,
            pid: 100,
            tgid: 100,
            exit_code: 9,
        });
        out.extend(convert(&mut c, &exit, &MapImage::default()));
        out
    }

    fn wire_process(r: &GetEventsResponse) -> &Process {
        match &r.event {
            Some(Event::ProcessExec(e)) => e.process.as_ref(),
            Some(Event::ProcessExit(e)) => e.process.as_ref(),
            Some(Event::ProcessKprobe(e)) => e.process.as_ref(),
            Some(Event::ProcessLsm(e)) => e.process.as_ref(),
            _ => None,
        }
        .expect("an event with a process")
    }

    #[test]
    fn every_event_kind_of_a_pod_process_carries_tetragons_pod_message() {
        let events = xwing_cat_events();
        assert_eq!(events.len(), 4);
        for r in &events {
            let p = wire_process(r);
            let pod = p.pod.as_ref().expect("pod on every event");
            assert_eq!(
                (pod.namespace.as_str(), pod.name.as_str()),
                ("default", "xwing")
            );
            assert_eq!(pod.uid, "5f0d5bd4-8c1e-4c36-9d8a-2f3c0e8c1a11");
            assert_eq!(
                (pod.workload.as_str(), pod.workload_kind.as_str()),
                ("xwing", "Pod")
            );
            assert_eq!(pod.pod_labels["class"], "xwing");
            assert_eq!(pod.pod_labels.len(), 3);
            let c = pod.container.as_ref().expect("container");
            assert_eq!(c.name, "spaceship");
            assert!(c.id.starts_with("containerd://4b0df5a1"));
            let image = c.image.as_ref().expect("image");
            assert_eq!(image.name, "quay.io/cilium/json-mock:v1.3.8");
            assert!(image.id.contains("@sha256:"));
            assert_eq!(
                c.start_time,
                Some(Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 0
                })
            );
            assert_eq!(c.pid, None);
            // Tetragon's `docker`: the bare id, 31 characters.
            assert_eq!(p.docker, "4b0df5a137260a6b95cbf6443bb2f4b");
        }
    }

    #[test]
    fn compact_lines_of_a_pod_process_show_namespace_slash_pod_where_tetra_does() {
        let lines: Vec<String> = xwing_cat_events()
            .iter()
            .map(|r| encode_compact(r, &CompactOptions::default()).unwrap())
            .collect();
        assert_eq!(
            lines,
            [
                "🚀 process default/xwing /usr/bin/cat /etc/shadow",
                "📚 read    default/xwing /usr/bin/cat /etc/shadow",
                "🔒 LSM     default/xwing /usr/bin/cat file_permission",
                "💥 exit    default/xwing /usr/bin/cat /etc/shadow SIGKILL",
            ]
        );
    }

    #[test]
    fn a_pod_processs_connect_prints_as_the_guides_line() {
        let mut c = cache_in_xwing();
        exec_curl(&mut c);
        let mut img = MapImage::default();
        img.slots.insert(
            HOOK_SOCKET_CONNECT * MAX_SELECTORS,
            connect_slot(
                HookOrigin::Kprobe {
                    call: "tcp_connect".into(),
                },
                vec![net_arg(0, ArgType::Sock, "sock")],
            ),
        );
        let record = connect_record([10, 32, 0, 28], 45200, [104, 198, 14, 52], 443);
        let ev = crate::events::decode::decode(&record).unwrap();
        let r = convert(&mut c, &ev, &img).remove(0);
        assert_eq!(
            encode_compact(&r, &CompactOptions::default()).unwrap(),
            "🔌 connect default/xwing /usr/bin/curl tcp 10.32.0.28:45200 -> 104.198.14.52:443"
        );
    }

    #[test]
    fn the_json_export_shows_the_pod_under_tetragons_names() {
        let v = crate::tetragon::json::event_to_value(&xwing_cat_events()[0]);
        let p = &v["process_exec"]["process"];
        assert_eq!(p["pod"]["namespace"], "default");
        assert_eq!(p["pod"]["name"], "xwing");
        assert_eq!(p["pod"]["workload_kind"], "Pod");
        assert_eq!(p["pod"]["pod_labels"]["org"], "alliance");
        assert_eq!(p["pod"]["container"]["name"], "spaceship");
        assert_eq!(
            p["pod"]["container"]["image"]["name"],
            "quay.io/cilium/json-mock:v1.3.8"
        );
        assert_eq!(p["docker"], "4b0df5a137260a6b95cbf6443bb2f4b");
    }

    #[test]
    fn a_host_process_has_no_pod_and_no_docker_id() {
        let mut c = cache();
        let r = to_response(&exec_cat(&mut c));
        let p = wire_process(&r);
        assert_eq!((p.pod.as_ref(), p.docker.as_str()), (None, ""));
        assert_eq!(
            encode_compact(&r, &CompactOptions::default()).unwrap(),
            "🚀 process node1 /usr/bin/cat /etc/shadow"
        );
    }

    #[test]
    fn rate_limit_info_is_stamped_at_the_report_time() {
        let r = rate_limit_info(30, "rl-node", 1_700_000_000_250);
        assert_eq!(
            r.time,
            Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 250_000_000,
            })
        );
        assert_eq!(r.node_name, "rl-node");
        assert!(matches!(
            r.event,
            Some(Event::RateLimitInfo(RateLimitInfo {
                number_of_dropped_process_events: 30
            }))
        ));
    }

    fn sys_enter_event(args: Vec<model::ArgValue>) -> model::Event {
        let mut c = cache_in_xwing();
        let mut ev = exec_cat(&mut c);
        let process = ev.process().clone();
        ev.kind = EventKind::Hook(model::Hook {
            process,
            parent: None,
            policy_name: "raw-syscalls".into(),
            policy_namespace: None,
            hook: model::Target::Tracepoint {
                subsystem: "raw_syscalls".into(),
                event: "sys_enter".into(),
            },
            origin: HookOrigin::Tracepoint {
                subsystem: "raw_syscalls".into(),
                event: "sys_enter".into(),
            },
            args: args
                .into_iter()
                .map(|value| model::Arg { value, label: None })
                .collect(),
            return_arg: None,
            action: model::Action::Post,
            return_action: None,
            message: Some("syscall seen".into()),
            tags: vec!["syscalls".into()],
            request: None,
            data: Vec::new(),
        });
        ev
    }

    #[test]
    fn a_tracepoint_event_is_process_tracepoint_with_subsystem_and_event() {
        let r = to_response(&sys_enter_event(vec![
            model::ArgValue::Long(257),
            model::ArgValue::Size(0xffff_ff9c),
        ]));
        let Some(Event::ProcessTracepoint(tp)) = &r.event else {
            panic!("not a tracepoint event: {r:?}")
        };
        assert_eq!(
            (tp.subsys.as_str(), tp.event.as_str()),
            ("raw_syscalls", "sys_enter")
        );
        assert_eq!(tp.policy_name, "raw-syscalls");
        assert_eq!(tp.action, KprobeAction::Post as i32);
        assert_eq!(tp.message, "syscall seen");
        assert_eq!(tp.tags, ["syscalls"]);
        assert_eq!(tp.args[0].arg, Some(Arg::LongArg(257)));
        assert_eq!(tp.args[1].arg, Some(Arg::SizeArg(0xffff_ff9c)));
        assert_eq!(
            tp.process.as_ref().map(|p| p.binary.as_str()),
            Some("/usr/bin/cat")
        );
        assert_eq!(
            crate::tetragon::proto::event_type(&r),
            crate::tetragon::proto::tetragon::EventType::ProcessTracepoint
        );
    }

    #[test]
    fn a_tracepoint_event_prints_as_tetragons_json_and_compact_line() {
        let r = to_response(&sys_enter_event(vec![model::ArgValue::Long(
            if cfg!(target_arch = "aarch64") {
                56
            } else {
                257
            },
        )]));
        let v = crate::tetragon::json::event_to_value(&r);
        let tp = &v["process_tracepoint"];
        assert_eq!(tp["subsys"], "raw_syscalls");
        assert_eq!(tp["event"], "sys_enter");
        assert_eq!(tp["policy_name"], "raw-syscalls");
        assert_eq!(tp["action"], "KPROBE_ACTION_POST");
        assert_eq!(tp["message"], "syscall seen");
        assert_eq!(tp["process"]["pod"]["name"], "xwing");
        let long = if cfg!(target_arch = "aarch64") {
            "56"
        } else {
            "257"
        };
        assert_eq!(tp["args"], serde_json::json!([{ "long_arg": long }]));
        assert!(v.get("process_kprobe").is_none());
        assert_eq!(
            encode_compact(&r, &CompactOptions::default()).unwrap(),
            "☎  syscall default/xwing /usr/bin/cat openat"
        );
    }
}
