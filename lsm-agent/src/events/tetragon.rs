//! Kernel events + process cache → Tetragon `GetEventsResponse`s.
//!
//! Events of policies written as kprobes come out as `process_kprobe` with the policy's
//! `call` and Tetragon's argument shapes (so `tetra` prints `📚 read`, `📝 write`, ...);
//! events of `lsmhooks` policies come out as `process_lsm`.

use std::{collections::HashMap, sync::Arc};

use base64::Engine as _;
use lsm_shared::*;
use prost_types::Timestamp;

use super::{
    decode::{ExecData, ExitData, ForkData, HookData, KernelEvent},
    ratelimit::{RateLimiter, Subject},
};
use crate::{
    policy::{
        compile::{MapImage, SlotInfo},
        ir::{ArgType, HookOrigin},
    },
    tetragon::net,
    tetragon::proto::tetragon::{
        GetEventsResponse, KprobeAction, KprobeArgument, KprobeFile, KprobeLinuxBinprm, KprobePath,
        Process, ProcessExec, ProcessExit, ProcessKprobe, ProcessLsm, get_events_response::Event,
        kprobe_argument::Arg,
    },
};

/// Processes by tgid, as Tetragon `Process` messages.
pub struct ProcessCache {
    node: String,
    /// Wall-clock nanoseconds minus boot-clock nanoseconds, to timestamp kernel events.
    boot_to_wall_ns: i128,
    procs: HashMap<u32, Arc<Process>>,
    parents: HashMap<u32, u32>,
    limiter: RateLimiter,
}

fn clock_ns(id: nix::time::ClockId) -> i128 {
    nix::time::clock_gettime(id)
        .map(|t| i128::from(t.tv_sec()) * 1_000_000_000 + i128::from(t.tv_nsec()))
        .unwrap_or(0)
}

/// The node name Tetragon would use: `NODE_NAME`, `HUBBLE_NODE_NAME`, else the hostname.
pub fn node_name() -> String {
    std::env::var("NODE_NAME")
        .or_else(|_| std::env::var("HUBBLE_NODE_NAME"))
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| {
            nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
}

/// Signal name for `ProcessExit.signal` (empty when the process was not killed).
pub fn signal_name(sig: u32) -> String {
    if sig == 0 {
        return String::new();
    }
    nix::sys::signal::Signal::try_from(sig as i32)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("SIG{sig}"))
}

impl ProcessCache {
    pub fn new(node: String) -> Self {
        let wall = clock_ns(nix::time::ClockId::CLOCK_REALTIME);
        let boot = clock_ns(nix::time::ClockId::CLOCK_BOOTTIME);
        ProcessCache {
            node,
            boot_to_wall_ns: wall - boot,
            procs: HashMap::new(),
            parents: HashMap::new(),
            limiter: RateLimiter::default(),
        }
    }

    pub fn timestamp(&self, ktime: u64) -> Timestamp {
        let ns = i128::from(ktime) + self.boot_to_wall_ns;
        Timestamp {
            seconds: (ns / 1_000_000_000) as i64,
            nanos: (ns % 1_000_000_000) as i32,
        }
    }

    fn exec_id(&self, ktime: u64, pid: u32) -> String {
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}:{}", self.node, ktime, pid))
    }

    /// A process we have no exec event for (started before the agent): from `/proc`.
    fn scan_procfs(&mut self, tgid: u32) -> Arc<Process> {
        let proc = crate::procfs::Proc::open(tgid);
        let binary = proc
            .as_ref()
            .and_then(|p| p.exe())
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let argv = proc.as_ref().map(|p| p.argv()).unwrap_or_default();
        let ppid = proc.as_ref().map_or(0, |p| p.ppid());
        let p = Arc::new(Process {
            exec_id: self.exec_id(0, tgid),
            pid: Some(tgid),
            binary,
            arguments: argv.get(1..).unwrap_or_default().join(" "),
            flags: "procFS".into(),
            parent_exec_id: self.parents_exec_id(ppid),
            ..Default::default()
        });
        self.procs.insert(tgid, p.clone());
        self.parents.insert(tgid, ppid);
        p
    }

    fn parents_exec_id(&self, ppid: u32) -> String {
        self.procs
            .get(&ppid)
            .map(|p| p.exec_id.clone())
            .unwrap_or_default()
    }

    pub fn get_or_scan(&mut self, tgid: u32) -> Arc<Process> {
        match self.procs.get(&tgid) {
            Some(p) => p.clone(),
            None => self.scan_procfs(tgid),
        }
    }

    /// Processes in the cache (the `lsm_agent_process_cache_size` metric).
    pub fn len(&self) -> usize {
        self.procs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    fn parent_of(&self, tgid: u32) -> Option<Process> {
        let ppid = self.parents.get(&tgid)?;
        self.procs.get(ppid).map(|p| (**p).clone())
    }

    fn exec(&mut self, e: &ExecData) -> GetEventsResponse {
        let p = Process {
            exec_id: self.exec_id(e.ktime, e.tgid),
            pid: Some(e.tgid),
            uid: Some(e.uid),
            binary: e.exe.path.clone(),
            arguments: e.argv.get(1..).unwrap_or_default().join(" "),
            flags: if e.args_truncated {
                "execve truncArgs"
            } else {
                "execve"
            }
            .into(),
            start_time: Some(self.timestamp(e.ktime)),
            parent_exec_id: self.parents_exec_id(e.ppid),
            tid: Some(e.tgid),
            ..Default::default()
        };
        self.procs.insert(e.tgid, Arc::new(p.clone()));
        self.parents.insert(e.tgid, e.ppid);
        let parent = self.parent_of(e.tgid);
        self.response(
            e.ktime,
            Event::ProcessExec(ProcessExec {
                process: Some(p),
                parent,
                ancestors: vec![],
            }),
        )
    }

    /// A child that has not exec'd runs its parent's binary (Tetragon's `clone` flag).
    fn fork(&mut self, f: &ForkData) {
        // A parent started before the agent is not cached yet; it is alive now, so /proc
        // still knows it.
        let parent = self.get_or_scan(f.ppid);
        let child = Process {
            exec_id: self.exec_id(f.ktime, f.tgid),
            pid: Some(f.tgid),
            tid: Some(f.tgid),
            flags: "clone".into(),
            start_time: Some(self.timestamp(f.ktime)),
            parent_exec_id: parent.exec_id.clone(),
            ..(*parent).clone()
        };
        self.procs.insert(f.tgid, Arc::new(child));
        self.parents.insert(f.tgid, f.ppid);
    }

    fn exit(&mut self, e: &ExitData) -> GetEventsResponse {
        let process = (*self.get_or_scan(e.tgid)).clone();
        let parent = self.parent_of(e.tgid);
        self.procs.remove(&e.tgid);
        self.parents.remove(&e.tgid);
        let signal = e.exit_code & 0x7f;
        self.response(
            e.ktime,
            Event::ProcessExit(ProcessExit {
                process: Some(process),
                parent,
                signal: signal_name(signal),
                status: (e.exit_code >> 8) & 0xff,
                time: Some(self.timestamp(e.ktime)),
                ancestors: vec![],
            }),
        )
    }

    fn hook(&mut self, h: &HookData, slot: &SlotInfo) -> GetEventsResponse {
        let mut process = (*self.get_or_scan(h.tgid)).clone();
        process.tid = Some(h.pid);
        let parent = self.parent_of(h.tgid);
        let args: Vec<KprobeArgument> = slot
            .args
            .iter()
            .map(|a| {
                let raw = h.args.get(a.lsm_index as usize).copied().unwrap_or(0);
                let path = h.path.as_ref().map(|p| p.path.clone()).unwrap_or_default();
                let arg = match a.ty {
                    ArgType::File => Arg::FileArg(KprobeFile {
                        path,
                        ..Default::default()
                    }),
                    ArgType::Path => Arg::PathArg(KprobePath {
                        path,
                        ..Default::default()
                    }),
                    ArgType::LinuxBinprm => Arg::LinuxBinprmArg(KprobeLinuxBinprm {
                        path,
                        ..Default::default()
                    }),
                    ArgType::Int { .. } => int_arg(&a.type_name, raw),
                    // Only `socket_connect` has these arguments, and its events always carry
                    // the connection; an empty one would mean a decode bug, not bad input.
                    ArgType::Sock => {
                        Arg::SockArg(h.net.as_ref().map(net::sock_arg).unwrap_or_default())
                    }
                    ArgType::Sockaddr => {
                        Arg::SockaddrArg(h.net.as_ref().map(net::sockaddr_arg).unwrap_or_default())
                    }
                };
                KprobeArgument {
                    arg: Some(arg),
                    label: a.label.clone().unwrap_or_default(),
                }
            })
            .collect();
        let action = action_of(slot.flags) as i32;
        let policy_name = slot.policy_name.clone();
        let message = slot.message.clone().unwrap_or_default();
        let tags = slot.tags.clone();
        let event = match &slot.origin {
            HookOrigin::Kprobe { call } => Event::ProcessKprobe(ProcessKprobe {
                process: Some(process),
                parent,
                function_name: call.clone(),
                args,
                action,
                policy_name,
                message,
                tags,
                ..Default::default()
            }),
            HookOrigin::LsmHook => Event::ProcessLsm(ProcessLsm {
                process: Some(process),
                parent,
                function_name: slot.hook.name().to_string(),
                policy_name,
                message,
                args,
                action,
                tags,
                ..Default::default()
            }),
        };
        self.response(h.ktime, event)
    }

    /// Whether a rate-limited `Post` lets this event through (always, without a limit).
    fn rate_allows(&mut self, h: &HookData, slot: &SlotInfo) -> bool {
        let Some((interval_ms, scope)) = slot.rate_limit else {
            return true;
        };
        let ints: Vec<u64> = slot
            .args
            .iter()
            .filter(|a| matches!(a.ty, ArgType::Int { .. }))
            .map(|a| h.args.get(a.lsm_index as usize).copied().unwrap_or(0))
            .collect();
        let path = h
            .path
            .as_ref()
            .map(|p| p.path.as_bytes())
            .unwrap_or_default();
        // The connection is part of the event's arguments only when the policy shows it.
        let shows_net = slot
            .args
            .iter()
            .any(|a| matches!(a.ty, ArgType::Sock | ArgType::Sockaddr));
        let subject = Subject {
            policy_id: slot.policy_id,
            hook_index: slot.hook_index,
            selector_index: slot.selector_index,
            pid: h.pid,
            tgid: h.tgid,
            path,
            ints: &ints,
            net: h.net.filter(|_| shows_net),
        };
        self.limiter.allow(&subject, scope, interval_ms, h.ktime)
    }

    fn response(&self, ktime: u64, event: Event) -> GetEventsResponse {
        GetEventsResponse {
            event: Some(event),
            node_name: self.node.clone(),
            time: Some(self.timestamp(ktime)),
            ..Default::default()
        }
    }

    /// Turns one kernel event into Tetragon events (one per posting selector of a hook
    /// event), updating the cache. Slots that no longer exist (the policy was removed
    /// meanwhile) are skipped.
    pub fn convert(&mut self, ev: &KernelEvent, img: &MapImage) -> Vec<GetEventsResponse> {
        match ev {
            KernelEvent::Fork(f) => {
                self.fork(f);
                Vec::new()
            }
            KernelEvent::Exec(e) => vec![self.exec(e)],
            KernelEvent::Exit(e) => vec![self.exit(e)],
            KernelEvent::Hook(h) => {
                let mut out = Vec::new();
                for s in (0..MAX_SELECTORS).filter(|s| h.posted & (1u64 << s) != 0) {
                    if let Some(slot) = img.slot(h.hook, s)
                        && self.rate_allows(h, slot)
                    {
                        out.push(self.hook(h, slot));
                    }
                }
                out
            }
        }
    }
}

/// The event's `action`: the last action that ran, as Tetragon reports it.
fn action_of(flags: u32) -> KprobeAction {
    if flags & ACT_OVERRIDE != 0 {
        KprobeAction::Override
    } else if flags & ACT_SIGKILL != 0 {
        KprobeAction::Sigkill
    } else if flags & ACT_SIGNAL != 0 {
        KprobeAction::Signal
    } else {
        KprobeAction::Post
    }
}

/// The argument member Tetragon uses for each integer type.
fn int_arg(type_name: &str, raw: u64) -> Arg {
    match type_name {
        "uint32" | "uint8" | "uint16" => Arg::UintArg(raw as u32),
        "uint64" | "ulong" | "size_t" => Arg::SizeArg(raw),
        "long" | "int64" | "sint64" => Arg::LongArg(raw as i64),
        _ => Arg::IntArg(raw as u32 as i32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::decode::KPath;
    use crate::policy::ir::{ArgSpec, LsmHook};
    use crate::tetragon::proto::tetragon::KprobeSock;

    fn cache() -> ProcessCache {
        ProcessCache::new("node1".into())
    }

    fn exec_cat(c: &mut ProcessCache) -> GetEventsResponse {
        c.convert(
            &KernelEvent::Exec(ExecData {
                ktime: 10,
                pid: 100,
                tgid: 100,
                ppid: 1,
                uid: 0,
                exe: KPath {
                    path: "/usr/bin/cat".into(),
                    unresolved: false,
                    walked: false,
                },
                argv: vec!["cat".into(), "/etc/shadow".into()],
                args_truncated: false,
            }),
            &MapImage::default(),
        )
        .remove(0)
    }

    #[test]
    fn exec_becomes_process_exec_with_arguments_without_argv0() {
        let mut c = cache();
        let r = exec_cat(&mut c);
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
    fn sigkill_exit_reports_the_signal_name_and_drops_the_process() {
        let mut c = cache();
        exec_cat(&mut c);
        let r = c
            .convert(
                &KernelEvent::Exit(ExitData {
                    ktime: 20,
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
        assert!(!c.procs.contains_key(&100));
    }

    #[test]
    fn normal_exit_reports_the_status() {
        let mut c = cache();
        exec_cat(&mut c);
        let ev = KernelEvent::Exit(ExitData {
            ktime: 20,
            pid: 100,
            tgid: 100,
            exit_code: 1 << 8,
        });
        let Some(Event::ProcessExit(e)) = c.convert(&ev, &MapImage::default()).remove(0).event
        else {
            panic!("not exit")
        };
        assert_eq!((e.signal.as_str(), e.status), ("", 1));
    }

    fn slot(origin: HookOrigin) -> SlotInfo {
        SlotInfo {
            policy_id: 3,
            policy_name: "file-monitoring-filtered".into(),
            policy_namespace: None,
            group: 0,
            hook: LsmHook::FilePermission,
            origin,
            hook_index: 0,
            selector_index: 0,
            args: vec![
                ArgSpec {
                    spec_index: 0,
                    lsm_index: 0,
                    ty: ArgType::File,
                    type_name: "file".into(),
                    label: None,
                },
                ArgSpec {
                    spec_index: 1,
                    lsm_index: 1,
                    ty: ArgType::Int {
                        width: 4,
                        signed: true,
                    },
                    type_name: "int".into(),
                    label: None,
                },
            ],
            message: None,
            tags: vec![],
            flags: ACT_POST | ACT_SIGKILL,
            rate_limit: None,
        }
    }

    #[test]
    fn a_rate_limited_post_drops_repeats_within_its_interval() {
        use crate::policy::ir::RateLimitScope;
        let mut c = cache();
        exec_cat(&mut c);
        let mut img = MapImage::default();
        let mut s = slot(HookOrigin::LsmHook);
        s.rate_limit = Some((1000, RateLimitScope::Thread));
        img.slots.insert(HOOK_FILE_PERMISSION * MAX_SELECTORS, s);
        assert_eq!(c.convert(&hook_event(), &img).len(), 1);
        assert_eq!(
            c.convert(&hook_event(), &img).len(),
            0,
            "same ktime: dropped"
        );
        let KernelEvent::Hook(mut later) = hook_event() else {
            unreachable!()
        };
        later.ktime += 1_000_000_000;
        assert_eq!(c.convert(&KernelEvent::Hook(later), &img).len(), 1);
    }

    fn hook_event() -> KernelEvent {
        KernelEvent::Hook(HookData {
            ktime: 15,
            pid: 100,
            tgid: 100,
            hook: HOOK_FILE_PERMISSION,
            fired: 1,
            posted: 1,
            retval: -1,
            args: [0xdead, 4, 0, 0, 0],
            path: Some(KPath {
                path: "/etc/shadow".into(),
                unresolved: false,
                walked: false,
            }),
            net: None,
        })
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
        let r = c.convert(&hook_event(), &img).remove(0);
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
        let Some(Event::ProcessLsm(l)) = c.convert(&hook_event(), &img).remove(0).event else {
            panic!("not lsm")
        };
        assert_eq!(l.function_name, "file_permission");
    }

    #[test]
    fn a_forked_child_carries_its_parents_binary_until_it_execs() {
        let mut c = cache();
        exec_cat(&mut c);
        let fork = KernelEvent::Fork(ForkData {
            ktime: 12,
            tgid: 101,
            ppid: 100,
        });
        assert!(c.convert(&fork, &MapImage::default()).is_empty());
        let child = c.get_or_scan(101);
        assert_eq!(child.binary, "/usr/bin/cat");
        assert_eq!(child.pid, Some(101));
        assert_eq!(child.flags, "clone");
        assert_eq!(child.parent_exec_id, c.get_or_scan(100).exec_id);
    }

    fn exec_curl(c: &mut ProcessCache) {
        c.convert(
            &KernelEvent::Exec(ExecData {
                ktime: 10,
                pid: 200,
                tgid: 200,
                ppid: 1,
                uid: 1000,
                exe: KPath {
                    path: "/usr/bin/curl".into(),
                    unresolved: false,
                    walked: false,
                },
                argv: vec!["curl".into(), "https://198.51.100.1".into()],
                args_truncated: false,
            }),
            &MapImage::default(),
        );
    }

    /// The ring-buffer record the kernel writes for a connect from `saddr:sport` to
    /// `daddr:dport` over TCP/IPv4.
    fn connect_record(saddr: [u8; 4], sport: u16, daddr: [u8; 4], dport: u16) -> Vec<u8> {
        let mut net = NetInfo {
            family: AF_INET,
            sock_type: 1,
            protocol: IPPROTO_TCP,
            sport,
            dport,
            ..Default::default()
        };
        net.saddr[..4].copy_from_slice(&saddr);
        net.daddr[..4].copy_from_slice(&daddr);
        let ev = HookEvent {
            header: EventHeader {
                kind: EVENT_HOOK,
                cpu: 0,
                ktime: 20,
                pid: 200,
                tgid: 200,
            },
            hook: HOOK_SOCKET_CONNECT,
            retval: 0,
            fired: 1,
            posted: 1,
            args: [0xffff_8880_0000_1000, 0xffff_c900_0000_2000, 16, 0, 0],
            net,
            path: PathRec::empty(),
        };
        // SAFETY: the bytes of a plain ABI struct, as the ring buffer hands them over.
        unsafe {
            std::slice::from_raw_parts(
                &ev as *const HookEvent as *const u8,
                std::mem::size_of::<HookEvent>(),
            )
        }
        .to_vec()
    }

    fn net_arg(index: u32, ty: ArgType, type_name: &str) -> ArgSpec {
        ArgSpec {
            spec_index: index,
            lsm_index: index,
            ty,
            type_name: type_name.into(),
            label: None,
        }
    }

    fn connect_slot(origin: HookOrigin, args: Vec<ArgSpec>) -> SlotInfo {
        SlotInfo {
            policy_name: "connect".into(),
            hook: LsmHook::SocketConnect,
            args,
            flags: ACT_POST,
            ..slot(origin)
        }
    }

    fn convert_connect(origin: HookOrigin, args: Vec<ArgSpec>, record: &[u8]) -> GetEventsResponse {
        let mut c = cache();
        exec_curl(&mut c);
        let mut img = MapImage::default();
        img.slots.insert(
            HOOK_SOCKET_CONNECT * MAX_SELECTORS,
            connect_slot(origin, args),
        );
        let ev = crate::events::decode::decode(record).expect("valid record");
        let mut out = c.convert(&ev, &img);
        assert_eq!(out.len(), 1);
        out.remove(0)
    }

    #[test]
    fn a_tcp_connect_policy_event_prints_as_tetras_connect_line() {
        use crate::tetragon::compact::{CompactOptions, encode_compact};
        let r = convert_connect(
            HookOrigin::Kprobe {
                call: "tcp_connect".into(),
            },
            vec![net_arg(0, ArgType::Sock, "sock")],
            &connect_record([10, 0, 0, 5], 0, [198, 51, 100, 1], 443),
        );
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
        use crate::tetragon::compact::{CompactOptions, encode_compact};
        let r = convert_connect(
            HookOrigin::Kprobe {
                call: "tcp_connect".into(),
            },
            vec![net_arg(0, ArgType::Sock, "sock")],
            &connect_record([0; 4], 0, [198, 51, 100, 1], 80),
        );
        assert_eq!(
            encode_compact(&r, &CompactOptions::default()).unwrap(),
            "🔌 connect node1 /usr/bin/curl tcp 0.0.0.0:0 -> 198.51.100.1:80"
        );
    }

    #[test]
    fn socket_connect_json_has_sock_and_sockaddr_args_under_tetragons_proto_names() {
        let r = convert_connect(
            HookOrigin::Kprobe {
                call: "security_socket_connect".into(),
            },
            vec![
                net_arg(0, ArgType::Sock, "socket"),
                net_arg(1, ArgType::Sockaddr, "sockaddr"),
            ],
            &connect_record([10, 0, 0, 5], 40000, [198, 51, 100, 1], 443),
        );
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
        let r = convert_connect(
            HookOrigin::LsmHook,
            vec![
                net_arg(0, ArgType::Sock, "socket"),
                net_arg(1, ArgType::Sockaddr, "sockaddr"),
            ],
            &connect_record([0; 4], 0, [192, 0, 2, 7], 22),
        );
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
    fn a_rate_limited_connect_post_limits_each_destination_separately() {
        use crate::policy::ir::RateLimitScope;
        let mut c = cache();
        exec_curl(&mut c);
        let mut s = connect_slot(
            HookOrigin::Kprobe {
                call: "tcp_connect".into(),
            },
            vec![net_arg(0, ArgType::Sock, "sock")],
        );
        s.rate_limit = Some((1000, RateLimitScope::Thread));
        let mut img = MapImage::default();
        img.slots.insert(HOOK_SOCKET_CONNECT * MAX_SELECTORS, s);
        let decode = |b: &[u8]| crate::events::decode::decode(b).unwrap();
        let a = decode(&connect_record([0; 4], 0, [198, 51, 100, 1], 443));
        let b = decode(&connect_record([0; 4], 0, [198, 51, 100, 2], 443));
        assert_eq!(c.convert(&a, &img).len(), 1);
        assert_eq!(c.convert(&a, &img).len(), 0, "same destination: dropped");
        assert_eq!(c.convert(&b, &img).len(), 1, "other destination: posted");
    }

    #[test]
    fn events_of_a_removed_policy_are_dropped() {
        let mut c = cache();
        assert!(c.convert(&hook_event(), &MapImage::default()).is_empty());
    }
}
