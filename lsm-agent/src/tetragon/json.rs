//! protojson rendering of events, as `tetra getevents -o json` and Tetragon's export file
//! print them (`UseProtoNames`): snake_case proto names, default values omitted, enums by
//! name, 64-bit integers as strings, wrappers unwrapped, timestamps in RFC 3339.
//!
//! Hand-written because prost has no reflection; it covers the messages declared in our
//! proto subset.

use base64::Engine as _;
use serde_json::{Map, Value};

use super::proto::tetragon::{
    Capabilities, CapabilitiesType, Container, GetEventsResponse, KprobeAction, KprobeArgument,
    Namespace, Namespaces, Pod, Process, ProcessCredentials, SecureBitsType, StackTraceEntry,
    ThrottleType, UserNamespace, get_events_response::Event, kprobe_argument::Arg,
};

#[derive(Default)]
struct Obj(Map<String, Value>);

impl Obj {
    fn str(mut self, k: &str, v: &str) -> Self {
        if !v.is_empty() {
            self.0.insert(k.into(), v.into());
        }
        self
    }
    fn u32(mut self, k: &str, v: u32) -> Self {
        if v != 0 {
            self.0.insert(k.into(), v.into());
        }
        self
    }
    /// protojson quotes 64-bit integers so JavaScript readers keep precision.
    fn u64(mut self, k: &str, v: u64) -> Self {
        if v != 0 {
            self.0.insert(k.into(), v.to_string().into());
        }
        self
    }
    fn bool(mut self, k: &str, v: bool) -> Self {
        if v {
            self.0.insert(k.into(), v.into());
        }
        self
    }
    /// Wrapper types and explicit presence: emitted whenever set, even when zero.
    fn opt(mut self, k: &str, v: Option<impl Into<Value>>) -> Self {
        if let Some(v) = v {
            self.0.insert(k.into(), v.into());
        }
        self
    }
    fn enm(mut self, k: &str, v: i32, name: Option<&str>) -> Self {
        if v != 0 {
            self.0
                .insert(k.into(), name.map_or_else(|| v.into(), Value::from));
        }
        self
    }
    fn val(mut self, k: &str, v: Option<Value>) -> Self {
        if let Some(v) = v {
            self.0.insert(k.into(), v);
        }
        self
    }
    fn list(mut self, k: &str, v: Vec<Value>) -> Self {
        if !v.is_empty() {
            self.0.insert(k.into(), Value::Array(v));
        }
        self
    }
    fn map(mut self, k: &str, v: &std::collections::HashMap<String, String>) -> Self {
        if !v.is_empty() {
            let m: Map<String, Value> = v
                .iter()
                .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
                .collect();
            self.0.insert(k.into(), Value::Object(m));
        }
        self
    }
    fn done(self) -> Value {
        Value::Object(self.0)
    }
}

/// One JSON line (without newline) for an event.
pub fn event_to_json(ev: &GetEventsResponse) -> String {
    event_to_value(ev).to_string()
}

pub fn event_to_value(ev: &GetEventsResponse) -> Value {
    let o = Obj::default();
    let o = match &ev.event {
        Some(Event::ProcessExec(e)) => o.val(
            "process_exec",
            Some(
                Obj::default()
                    .val("process", e.process.as_ref().map(process))
                    .val("parent", e.parent.as_ref().map(process))
                    .list("ancestors", e.ancestors.iter().map(process).collect())
                    .done(),
            ),
        ),
        Some(Event::ProcessExit(e)) => o.val(
            "process_exit",
            Some(
                Obj::default()
                    .val("process", e.process.as_ref().map(process))
                    .val("parent", e.parent.as_ref().map(process))
                    .str("signal", &e.signal)
                    .u32("status", e.status)
                    .val("time", e.time.as_ref().map(timestamp))
                    .list("ancestors", e.ancestors.iter().map(process).collect())
                    .done(),
            ),
        ),
        Some(Event::ProcessKprobe(e)) => o.val(
            "process_kprobe",
            Some(
                Obj::default()
                    .val("process", e.process.as_ref().map(process))
                    .val("parent", e.parent.as_ref().map(process))
                    .str("function_name", &e.function_name)
                    .list("args", e.args.iter().map(argument).collect())
                    .val("return", e.r#return.as_ref().map(argument))
                    .enm("action", e.action, action_name(e.action))
                    .list(
                        "kernel_stack_trace",
                        e.kernel_stack_trace.iter().map(stack_entry).collect(),
                    )
                    .str("policy_name", &e.policy_name)
                    .enm(
                        "return_action",
                        e.return_action,
                        action_name(e.return_action),
                    )
                    .str("message", &e.message)
                    .list(
                        "tags",
                        e.tags.iter().map(|t| Value::from(t.as_str())).collect(),
                    )
                    .list(
                        "user_stack_trace",
                        e.user_stack_trace.iter().map(stack_entry).collect(),
                    )
                    .list("ancestors", e.ancestors.iter().map(process).collect())
                    .list("data", e.data.iter().map(argument).collect())
                    .done(),
            ),
        ),
        Some(Event::ProcessTracepoint(e)) => o.val(
            "process_tracepoint",
            Some(
                Obj::default()
                    .val("process", e.process.as_ref().map(process))
                    .val("parent", e.parent.as_ref().map(process))
                    .str("subsys", &e.subsys)
                    .str("event", &e.event)
                    .list("args", e.args.iter().map(argument).collect())
                    .str("policy_name", &e.policy_name)
                    .enm("action", e.action, action_name(e.action))
                    .str("message", &e.message)
                    .list(
                        "tags",
                        e.tags.iter().map(|t| Value::from(t.as_str())).collect(),
                    )
                    .list("ancestors", e.ancestors.iter().map(process).collect())
                    .done(),
            ),
        ),
        Some(Event::ProcessLsm(e)) => o.val(
            "process_lsm",
            Some(
                Obj::default()
                    .val("process", e.process.as_ref().map(process))
                    .val("parent", e.parent.as_ref().map(process))
                    .str("function_name", &e.function_name)
                    .str("policy_name", &e.policy_name)
                    .str("message", &e.message)
                    .list("args", e.args.iter().map(argument).collect())
                    .enm("action", e.action, action_name(e.action))
                    .list(
                        "tags",
                        e.tags.iter().map(|t| Value::from(t.as_str())).collect(),
                    )
                    .list("ancestors", e.ancestors.iter().map(process).collect())
                    .str("ima_hash", &e.ima_hash)
                    .done(),
            ),
        ),
        Some(Event::ProcessUprobe(e)) => o.val(
            "process_uprobe",
            Some(
                Obj::default()
                    .val("process", e.process.as_ref().map(process))
                    .val("parent", e.parent.as_ref().map(process))
                    .str("path", &e.path)
                    .str("symbol", &e.symbol)
                    .str("policy_name", &e.policy_name)
                    .str("message", &e.message)
                    .list("args", e.args.iter().map(argument).collect())
                    .list(
                        "tags",
                        e.tags.iter().map(|t| Value::from(t.as_str())).collect(),
                    )
                    .list("ancestors", e.ancestors.iter().map(process).collect())
                    .u64("offset", e.offset)
                    .enm("action", e.action, action_name(e.action))
                    .done(),
            ),
        ),
        Some(Event::ProcessUsdt(e)) => o.val(
            "process_usdt",
            Some(
                Obj::default()
                    .val("process", e.process.as_ref().map(process))
                    .val("parent", e.parent.as_ref().map(process))
                    .str("path", &e.path)
                    .str("provider", &e.provider)
                    .str("name", &e.name)
                    .str("policy_name", &e.policy_name)
                    .str("message", &e.message)
                    .list("args", e.args.iter().map(argument).collect())
                    .list(
                        "tags",
                        e.tags.iter().map(|t| Value::from(t.as_str())).collect(),
                    )
                    .list("ancestors", e.ancestors.iter().map(process).collect())
                    .enm("action", e.action, action_name(e.action))
                    .str("flags", &e.flags)
                    .done(),
            ),
        ),
        Some(Event::ProcessThrottle(e)) => o.val(
            "process_throttle",
            Some(
                Obj::default()
                    .enm(
                        "type",
                        e.r#type,
                        ThrottleType::try_from(e.r#type)
                            .ok()
                            .map(|t| t.as_str_name()),
                    )
                    .str("cgroup", &e.cgroup)
                    .done(),
            ),
        ),
        Some(Event::Test(t)) => o.val(
            "test",
            Some(
                Obj::default()
                    .u64("arg0", t.arg0)
                    .u64("arg1", t.arg1)
                    .u64("arg2", t.arg2)
                    .u64("arg3", t.arg3)
                    .done(),
            ),
        ),
        Some(Event::RateLimitInfo(r)) => o.val(
            "rate_limit_info",
            Some(
                Obj::default()
                    .u64(
                        "number_of_dropped_process_events",
                        r.number_of_dropped_process_events,
                    )
                    .done(),
            ),
        ),
        None => o,
    };
    o.str("node_name", &ev.node_name)
        .val("time", ev.time.as_ref().map(timestamp))
        .val(
            "aggregation_info",
            ev.aggregation_info
                .as_ref()
                .map(|a| Obj::default().u64("count", a.count).done()),
        )
        .str("cluster_name", &ev.cluster_name)
        .map("node_labels", &ev.node_labels)
        .done()
}

fn action_name(a: i32) -> Option<&'static str> {
    KprobeAction::try_from(a).ok().map(|a| a.as_str_name())
}

fn caps_list(v: &[i32]) -> Vec<Value> {
    v.iter()
        .map(|c| {
            CapabilitiesType::try_from(*c)
                .map_or_else(|_| Value::from(*c), |c| Value::from(c.as_str_name()))
        })
        .collect()
}

fn capabilities(c: &Capabilities) -> Value {
    Obj::default()
        .list("permitted", caps_list(&c.permitted))
        .list("effective", caps_list(&c.effective))
        .list("inheritable", caps_list(&c.inheritable))
        .done()
}

fn user_namespace(n: &UserNamespace) -> Value {
    Obj::default()
        .opt("level", n.level)
        .opt("uid", n.uid)
        .opt("gid", n.gid)
        .val("ns", n.ns.as_ref().map(namespace))
        .done()
}

fn credentials(c: &ProcessCredentials) -> Value {
    let bits = c
        .securebits
        .iter()
        .map(|b| {
            SecureBitsType::try_from(*b)
                .map_or_else(|_| Value::from(*b), |t| Value::from(t.as_str_name()))
        })
        .collect();
    Obj::default()
        .opt("uid", c.uid)
        .opt("gid", c.gid)
        .opt("euid", c.euid)
        .opt("egid", c.egid)
        .opt("suid", c.suid)
        .opt("sgid", c.sgid)
        .opt("fsuid", c.fsuid)
        .opt("fsgid", c.fsgid)
        .list("securebits", bits)
        .val("caps", c.caps.as_ref().map(capabilities))
        .val("user_ns", c.user_ns.as_ref().map(user_namespace))
        .done()
}

fn namespace(n: &Namespace) -> Value {
    Obj::default()
        .u32("inum", n.inum)
        .bool("is_host", n.is_host)
        .done()
}

fn namespaces(n: &Namespaces) -> Value {
    Obj::default()
        .val("uts", n.uts.as_ref().map(namespace))
        .val("ipc", n.ipc.as_ref().map(namespace))
        .val("mnt", n.mnt.as_ref().map(namespace))
        .val("pid", n.pid.as_ref().map(namespace))
        .val(
            "pid_for_children",
            n.pid_for_children.as_ref().map(namespace),
        )
        .val("net", n.net.as_ref().map(namespace))
        .val("time", n.time.as_ref().map(namespace))
        .val(
            "time_for_children",
            n.time_for_children.as_ref().map(namespace),
        )
        .val("cgroup", n.cgroup.as_ref().map(namespace))
        .val("user", n.user.as_ref().map(namespace))
        .done()
}

fn container(c: &Container) -> Value {
    Obj::default()
        .str("id", &c.id)
        .str("name", &c.name)
        .val(
            "image",
            c.image
                .as_ref()
                .map(|i| Obj::default().str("id", &i.id).str("name", &i.name).done()),
        )
        .val("start_time", c.start_time.as_ref().map(timestamp))
        .opt("pid", c.pid)
        .bool("maybe_exec_probe", c.maybe_exec_probe)
        .val(
            "security_context",
            c.security_context
                .as_ref()
                .map(|s| Obj::default().bool("privileged", s.privileged).done()),
        )
        .done()
}

fn pod(p: &Pod) -> Value {
    Obj::default()
        .str("namespace", &p.namespace)
        .str("name", &p.name)
        .str("uid", &p.uid)
        .val("container", p.container.as_ref().map(container))
        .map("pod_labels", &p.pod_labels)
        .str("workload", &p.workload)
        .str("workload_kind", &p.workload_kind)
        .map("pod_annotations", &p.pod_annotations)
        .done()
}

fn process(p: &Process) -> Value {
    Obj::default()
        .str("exec_id", &p.exec_id)
        .opt("pid", p.pid)
        .opt("uid", p.uid)
        .str("cwd", &p.cwd)
        .str("binary", &p.binary)
        .str("arguments", &p.arguments)
        .str("flags", &p.flags)
        .val("start_time", p.start_time.as_ref().map(timestamp))
        .opt("auid", p.auid)
        .val("pod", p.pod.as_ref().map(pod))
        .str("docker", &p.docker)
        .str("parent_exec_id", &p.parent_exec_id)
        .u32("refcnt", p.refcnt)
        .val("cap", p.cap.as_ref().map(capabilities))
        .val("ns", p.ns.as_ref().map(namespaces))
        .opt("tid", p.tid)
        .val(
            "user",
            p.user
                .as_ref()
                .map(|u| Obj::default().str("name", &u.name).done()),
        )
        .opt("in_init_tree", p.in_init_tree)
        .done()
}

fn stack_entry(s: &StackTraceEntry) -> Value {
    Obj::default()
        .u64("address", s.address)
        .u64("offset", s.offset)
        .str("symbol", &s.symbol)
        .str("module", &s.module)
        .done()
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn argument(a: &KprobeArgument) -> Value {
    let file = |mount: &str, path: &str, flags: &str, perm: &str| {
        Obj::default()
            .str("mount", mount)
            .str("path", path)
            .str("flags", flags)
            .str("permission", perm)
            .done()
    };
    let (key, v): (&str, Value) = match &a.arg {
        None => return Obj::default().str("label", &a.label).done(),
        Some(Arg::StringArg(s)) => ("string_arg", s.as_str().into()),
        Some(Arg::IntArg(v)) => ("int_arg", (*v).into()),
        Some(Arg::SkbArg(s)) => (
            "skb_arg",
            Obj::default()
                .u32("hash", s.hash)
                .u32("len", s.len)
                .u32("priority", s.priority)
                .u32("mark", s.mark)
                .str("saddr", &s.saddr)
                .str("daddr", &s.daddr)
                .u32("sport", s.sport)
                .u32("dport", s.dport)
                .u32("proto", s.proto)
                .u32("sec_path_len", s.sec_path_len)
                .u32("sec_path_olen", s.sec_path_olen)
                .str("protocol", &s.protocol)
                .str("family", &s.family)
                .done(),
        ),
        Some(Arg::SizeArg(v)) => ("size_arg", v.to_string().into()),
        Some(Arg::BytesArg(b)) => ("bytes_arg", b64(b).into()),
        Some(Arg::PathArg(p)) => ("path_arg", file(&p.mount, &p.path, &p.flags, &p.permission)),
        Some(Arg::FileArg(f)) => ("file_arg", file(&f.mount, &f.path, &f.flags, &f.permission)),
        Some(Arg::TruncatedBytesArg(t)) => (
            "truncated_bytes_arg",
            Obj::default()
                .str("bytes_arg", &b64(&t.bytes_arg))
                .u64("orig_size", t.orig_size)
                .done(),
        ),
        Some(Arg::DnsArg(d)) => (
            "dns_arg",
            Obj::default()
                .str("query_name", &d.query_name)
                .u32("query_type", d.query_type)
                .str("query_type_str", &d.query_type_str)
                .u32("query_class", d.query_class)
                .u32("tx_id", d.tx_id)
                .u32("flags", d.flags)
                .bool("response", d.response)
                .bool("truncated", d.truncated)
                .bool("parsed", d.parsed)
                .done(),
        ),
        Some(Arg::Int32ListArg(l)) => (
            "int32_list_arg",
            Obj::default()
                .list("values", l.values.iter().map(|v| Value::from(*v)).collect())
                .done(),
        ),
        Some(Arg::SockArg(s)) => (
            "sock_arg",
            Obj::default()
                .str("family", &s.family)
                .str("type", &s.r#type)
                .str("protocol", &s.protocol)
                .u32("mark", s.mark)
                .u32("priority", s.priority)
                .str("saddr", &s.saddr)
                .str("daddr", &s.daddr)
                .u32("sport", s.sport)
                .u32("dport", s.dport)
                .u64("cookie", s.cookie)
                .str("state", &s.state)
                .done(),
        ),
        Some(Arg::CredArg(c)) => (
            "cred_arg",
            Obj::default()
                .list("permitted", caps_list(&c.permitted))
                .list("effective", caps_list(&c.effective))
                .list("inheritable", caps_list(&c.inheritable))
                .done(),
        ),
        Some(Arg::LongArg(v)) => ("long_arg", v.to_string().into()),
        Some(Arg::BpfAttrArg(b)) => (
            "bpf_attr_arg",
            Obj::default()
                .str("ProgType", &b.prog_type)
                .u32("InsnCnt", b.insn_cnt)
                .str("ProgName", &b.prog_name)
                .done(),
        ),
        Some(Arg::PerfEventArg(p)) => (
            "perf_event_arg",
            Obj::default()
                .str("KprobeFunc", &p.kprobe_func)
                .str("Type", &p.r#type)
                .u64("Config", p.config)
                .u64("ProbeOffset", p.probe_offset)
                .done(),
        ),
        Some(Arg::BpfMapArg(m)) => (
            "bpf_map_arg",
            Obj::default()
                .str("MapType", &m.map_type)
                .u32("KeySize", m.key_size)
                .u32("ValueSize", m.value_size)
                .u32("MaxEntries", m.max_entries)
                .str("MapName", &m.map_name)
                .done(),
        ),
        Some(Arg::UintArg(v)) => ("uint_arg", (*v).into()),
        Some(Arg::CapabilityArg(c)) => (
            "capability_arg",
            Obj::default()
                .opt("value", c.value)
                .str("name", &c.name)
                .done(),
        ),
        Some(Arg::ProcessCredentialsArg(c)) => ("process_credentials_arg", credentials(c)),
        Some(Arg::UserNsArg(n)) => ("user_ns_arg", user_namespace(n)),
        Some(Arg::ModuleArg(m)) => (
            "module_arg",
            Obj::default()
                .str("name", &m.name)
                .opt("signature_ok", m.signature_ok)
                .done(),
        ),
        Some(Arg::KernelCapTArg(s)) => ("kernel_cap_t_arg", s.as_str().into()),
        Some(Arg::CapInheritableArg(s)) => ("cap_inheritable_arg", s.as_str().into()),
        Some(Arg::CapPermittedArg(s)) => ("cap_permitted_arg", s.as_str().into()),
        Some(Arg::CapEffectiveArg(s)) => ("cap_effective_arg", s.as_str().into()),
        Some(Arg::LinuxBinprmArg(b)) => (
            "linux_binprm_arg",
            Obj::default()
                .str("path", &b.path)
                .str("flags", &b.flags)
                .str("permission", &b.permission)
                .done(),
        ),
        Some(Arg::NetDevArg(n)) => ("net_dev_arg", Obj::default().str("name", &n.name).done()),
        Some(Arg::SyscallId(s)) => (
            "syscall_id",
            Obj::default().u32("id", s.id).str("abi", &s.abi).done(),
        ),
        Some(Arg::SockaddrArg(s)) => (
            "sockaddr_arg",
            Obj::default()
                .str("family", &s.family)
                .str("addr", &s.addr)
                .u32("port", s.port)
                .done(),
        ),
        Some(Arg::BpfProgArg(b)) => (
            "bpf_prog_arg",
            Obj::default()
                .str("ProgType", &b.prog_type)
                .u32("InsnCnt", b.insn_cnt)
                .str("ProgName", &b.prog_name)
                .done(),
        ),
        Some(Arg::ErrorArg(e)) => (
            "error_arg",
            Obj::default().str("Message", &e.message).done(),
        ),
        Some(Arg::SockaddrunArg(s)) => (
            "sockaddrun_arg",
            Obj::default()
                .str("family", &s.family)
                .str("path", &s.path)
                .done(),
        ),
    };
    // A set oneof member is always emitted, even when it holds a zero value.
    let mut o = Obj::default();
    o.0.insert(key.into(), v);
    o.str("label", &a.label).done()
}

/// protojson's Timestamp: UTC, with 0, 3, 6 or 9 fractional digits.
fn timestamp(t: &prost_types::Timestamp) -> Value {
    // prost's Display already uses the shortest of those precisions.
    Value::from(t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tetragon::proto::tetragon::{
        KprobeFile, KprobeInt32List, ProcessExec, ProcessKprobe,
    };

    #[test]
    fn exec_json() {
        let ev = GetEventsResponse {
            event: Some(Event::ProcessExec(ProcessExec {
                process: Some(Process {
                    binary: "/bin/ls".into(),
                    pid: Some(0),
                    uid: Some(1000),
                    pod: Some(Pod {
                        namespace: "ns".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            })),
            node_name: "n1".into(),
            time: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 500_000_000,
            }),
            ..Default::default()
        };
        assert_eq!(
            event_to_json(&ev),
            r#"{"node_name":"n1","process_exec":{"process":{"binary":"/bin/ls","pid":0,"pod":{"namespace":"ns"},"uid":1000}},"time":"2023-11-14T22:13:20.500Z"}"#
        );
    }

    #[test]
    fn kprobe_args_json() {
        let ev = GetEventsResponse {
            event: Some(Event::ProcessKprobe(ProcessKprobe {
                function_name: "security_file_permission".into(),
                action: KprobeAction::Override as i32,
                args: vec![
                    KprobeArgument {
                        arg: Some(Arg::FileArg(KprobeFile {
                            path: "/etc/shadow".into(),
                            ..Default::default()
                        })),
                        label: String::new(),
                    },
                    KprobeArgument {
                        arg: Some(Arg::IntArg(0)),
                        label: "mask".into(),
                    },
                    KprobeArgument {
                        arg: Some(Arg::SizeArg(1 << 40)),
                        label: String::new(),
                    },
                    KprobeArgument {
                        arg: Some(Arg::Int32ListArg(KprobeInt32List {
                            values: vec![3, -4],
                        })),
                        label: "fds".into(),
                    },
                ],
                ..Default::default()
            })),
            ..Default::default()
        };
        assert_eq!(
            event_to_json(&ev),
            r#"{"process_kprobe":{"action":"KPROBE_ACTION_OVERRIDE","args":[{"file_arg":{"path":"/etc/shadow"}},{"int_arg":0,"label":"mask"},{"size_arg":"1099511627776"},{"int32_list_arg":{"values":[3,-4]},"label":"fds"}],"function_name":"security_file_permission"}}"#
        );
    }
}
