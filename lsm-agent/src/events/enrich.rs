//! Kernel events + process cache → our [`model`](super::model) events.
//!
//! The cache knows every process the agent saw start (exec and fork events) and reads the
//! others from `/proc` when an event first names them; each event carries its process and
//! parent as the cache knows them at that moment.
//!
//! The Kubernetes pod of a process comes from a [`PodLookup`], asked with the cgroup id every
//! kernel record carries; the Kubernetes edge implements it, and without Kubernetes there is
//! none and no process has a pod.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use base64::Engine as _;
use lsm_shared::*;

use super::{
    decode::{ExecData, ExitData, ForkData, HookData, KernelEvent, NetData},
    model::{
        Action, Arg, ArgValue, BpfObj, CapSetKind, CapSets, Cred, DnsQuery, Event, EventKind, Exec,
        Exit, Hook, Pod, Process, ProcessFlag, Skb, Sockaddr, Time, UserNs,
    },
    ratelimit::{RateLimiter, Subject},
};
use crate::policy::{
    compile::{MapImage, SlotInfo},
    ir::{ArgType, BpfObjKind, HookOrigin, Target},
};

/// Which Kubernetes pod (and container) a process runs in.
///
/// Asked once per kernel event, on the decoder's task: an implementation answers from memory
/// (a map lookup), never from the API server, and hands out the same `Arc` while a pod is
/// unchanged (the cache then sees that nothing changed without comparing the pods).
pub trait PodLookup: Send + Sync {
    /// The pod of the process `tgid` whose task is in the cgroup v2 `cgroup_id` (the inode
    /// number of the cgroup's directory); `None` for a process outside any known pod. A
    /// `cgroup_id` of 0 means the kernel did not report one (a process read from `/proc`):
    /// the implementation may read `/proc/<tgid>/cgroup` instead.
    fn pod_of(&self, cgroup_id: u64, tgid: u32) -> Option<Arc<Pod>>;
}

/// Processes by tgid.
pub struct ProcessCache {
    node: String,
    /// `None` without Kubernetes.
    pods: Option<Arc<dyn PodLookup>>,
    /// Wall-clock nanoseconds minus boot-clock nanoseconds, to timestamp kernel events.
    boot_to_wall_ns: i128,
    procs: HashMap<u32, Arc<Process>>,
    parents: HashMap<u32, u32>,
    limiter: RateLimiter,
    /// Cached processes [`ProcessCache::reconcile`] found gone last time: dropped if they
    /// are still gone the next time (their exit event was lost).
    suspects: HashSet<u32>,
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

impl ProcessCache {
    /// A cache for the node `node`; `pods` resolves processes to pods (`None` without
    /// Kubernetes).
    pub fn new(node: String, pods: Option<Arc<dyn PodLookup>>) -> Self {
        let wall = clock_ns(nix::time::ClockId::CLOCK_REALTIME);
        let boot = clock_ns(nix::time::ClockId::CLOCK_BOOTTIME);
        ProcessCache {
            node,
            pods,
            boot_to_wall_ns: wall - boot,
            procs: HashMap::new(),
            parents: HashMap::new(),
            limiter: RateLimiter::default(),
            suspects: HashSet::new(),
        }
    }

    /// Drops the processes whose exit event never came (the ring buffer was full): those
    /// `alive` has said are gone twice in a row, so that an exit still on its way through the
    /// queue is not raced. Returns how many were dropped.
    pub fn reconcile(&mut self, alive: impl Fn(u32) -> bool) -> usize {
        let gone: HashSet<u32> = self.procs.keys().copied().filter(|&t| !alive(t)).collect();
        let drop: Vec<u32> = gone.intersection(&self.suspects).copied().collect();
        for t in &drop {
            self.procs.remove(t);
            self.parents.remove(t);
        }
        self.suspects = gone.difference(&self.suspects).copied().collect();
        drop.len()
    }

    /// The wall-clock time of a kernel (boot-clock) timestamp.
    pub fn timestamp(&self, ktime: u64) -> Time {
        Time::from_unix_nanos(i128::from(ktime) + self.boot_to_wall_ns)
    }

    /// Tetragon's exec id: unique per node, boot time and pid.
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
        let pod = self.pod_of(0, tgid, None);
        let p = Arc::new(Process {
            exec_id: self.exec_id(0, tgid),
            pid: tgid,
            binary,
            argv,
            flags: vec![ProcessFlag::ProcFs],
            parent_exec_id: self.parents_exec_id(ppid),
            pod,
            ..Default::default()
        });
        self.procs.insert(tgid, p.clone());
        self.parents.insert(tgid, ppid);
        p
    }

    /// The pod of `tgid`, now in `cgroup_id`: the lookup's answer, else what was known before
    /// (`cached`), so that a process keeps its pod on events the lookup cannot place (its
    /// cgroup is gone at exit, the pod was deleted before its last processes ended).
    fn pod_of(&self, cgroup_id: u64, tgid: u32, cached: Option<&Arc<Pod>>) -> Option<Arc<Pod>> {
        self.pods
            .as_ref()
            .and_then(|l| l.pod_of(cgroup_id, tgid))
            .or_else(|| cached.cloned())
    }

    /// The cached process `tgid` with its pod brought up to date from the event's cgroup id;
    /// the cache keeps the update, so that its children and its exit show it too.
    fn with_current_pod(&mut self, tgid: u32, cgroup_id: u64) -> Arc<Process> {
        let p = self.get_or_scan(tgid);
        let pod = self.pod_of(cgroup_id, tgid, p.pod.as_ref());
        let same = match (&pod, &p.pod) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
            (None, None) => true,
            _ => false,
        };
        if same {
            return p;
        }
        let p = Arc::new(Process {
            pod,
            ..(*p).clone()
        });
        self.procs.insert(tgid, p.clone());
        p
    }

    fn parents_exec_id(&self, ppid: u32) -> Option<String> {
        self.procs.get(&ppid).map(|p| p.exec_id.clone())
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

    fn exec(&mut self, e: &ExecData) -> Event {
        let mut flags = vec![ProcessFlag::Execve];
        if e.args_truncated {
            flags.push(ProcessFlag::TruncArgs);
        }
        // The forked process this exec replaces was in the same cgroup.
        let before = self.procs.get(&e.tgid).and_then(|p| p.pod.clone());
        let p = Process {
            exec_id: self.exec_id(e.ktime, e.tgid),
            pid: e.tgid,
            uid: Some(e.uid),
            pod: self.pod_of(e.cgroup_id, e.tgid, before.as_ref()),
            binary: e.exe.path.clone(),
            argv: e.argv.clone(),
            flags,
            start_time: Some(self.timestamp(e.ktime)),
            parent_exec_id: self.parents_exec_id(e.ppid),
            tid: Some(e.tgid),
            ..Default::default()
        };
        self.procs.insert(e.tgid, Arc::new(p.clone()));
        self.parents.insert(e.tgid, e.ppid);
        let parent = self.parent_of(e.tgid);
        self.event(e.ktime, EventKind::Exec(Exec { process: p, parent }))
    }

    /// A child that has not exec'd runs its parent's binary (Tetragon's `clone` flag).
    fn fork(&mut self, f: &ForkData) {
        // A parent started before the agent is not cached yet; it is alive now, so /proc
        // still knows it.
        let parent = self.get_or_scan(f.ppid);
        // The record's cgroup is the parent's, which the child starts in (but for
        // `CLONE_INTO_CGROUP`, which its exec or first hook event then corrects).
        let pod = self.pod_of(f.cgroup_id, f.tgid, parent.pod.as_ref());
        let child = Process {
            pod,
            exec_id: self.exec_id(f.ktime, f.tgid),
            pid: f.tgid,
            tid: Some(f.tgid),
            flags: vec![ProcessFlag::Clone],
            start_time: Some(self.timestamp(f.ktime)),
            parent_exec_id: Some(parent.exec_id.clone()),
            ..(*parent).clone()
        };
        self.procs.insert(f.tgid, Arc::new(child));
        self.parents.insert(f.tgid, f.ppid);
    }

    fn exit(&mut self, e: &ExitData) -> Event {
        let process = (*self.with_current_pod(e.tgid, e.cgroup_id)).clone();
        let parent = self.parent_of(e.tgid);
        self.procs.remove(&e.tgid);
        self.parents.remove(&e.tgid);
        let signal = e.exit_code & 0x7f;
        self.event(
            e.ktime,
            EventKind::Exit(Exit {
                process,
                parent,
                signal: (signal != 0).then_some(signal),
                status: (e.exit_code >> 8) & 0xff,
            }),
        )
    }

    fn hook(&mut self, h: &HookData, slot: &SlotInfo) -> Event {
        // A tracked socket's event is its owner's (as in Tetragon), whichever task the
        // kernel ran the call in (a softirq's, a kernel thread's); that task's cgroup says
        // nothing about the owner's pod.
        let (tgid, tid, cgroup_id) = if h.owner != 0 && h.owner != h.tgid {
            (h.owner, None, 0)
        } else {
            (h.tgid, Some(h.pid), h.cgroup_id)
        };
        let mut process = (*self.with_current_pod(tgid, cgroup_id)).clone();
        process.tid = tid.or(process.tid);
        let parent = self.parent_of(tgid);
        let args = slot
            .args
            .iter()
            .map(|a| {
                let raw = h.args.get(a.lsm_index as usize).copied().unwrap_or(0);
                let rec = h.strs.get(a.lsm_index as usize).and_then(Option::as_ref);
                let path = rec.map(|p| p.path.clone()).unwrap_or_default();
                let value = match a.ty {
                    ArgType::Cred => {
                        ArgValue::Cred(Box::new(rec.map(|p| cred_of(&p.bytes)).unwrap_or_default()))
                    }
                    // The value is the buffer's length; the record, its first bytes.
                    ArgType::Buffer { .. } => {
                        let bytes = rec.map(|p| p.bytes.clone()).unwrap_or_default();
                        if bytes.len() as u64 == raw {
                            ArgValue::Bytes(bytes)
                        } else {
                            ArgValue::TruncatedBytes {
                                bytes,
                                orig_size: raw,
                            }
                        }
                    }
                    // A query has a class (IN is 1); the kernel gives 0 for data that is
                    // not one.
                    ArgType::Dns => ArgValue::Dns(
                        rec.map(|p| DnsQuery::from_raw(p.path.clone(), raw))
                            .filter(|q| q.qclass != 0),
                    ),
                    // Whole elements of the bytes read (an unreadable array reads as none).
                    ArgType::Int32Array { .. } => ArgValue::Int32List(
                        rec.map(|p| {
                            p.bytes
                                .chunks_exact(4)
                                .map(|c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
                                .collect()
                        })
                        .unwrap_or_default(),
                    ),
                    ArgType::Module => ArgValue::Module {
                        name: path,
                        signature_ok: (raw & MODULE_SIG_KNOWN != 0)
                            .then_some(raw & MODULE_SIG_OK != 0),
                    },
                    ArgType::BpfObj(kind) => ArgValue::BpfObj(Box::new(bpf_obj_of(
                        kind,
                        rec.and_then(|p| pod_of::<BpfObjRec>(&p.bytes))
                            .unwrap_or_default(),
                    ))),
                    ArgType::File => ArgValue::File { path },
                    ArgType::Path => ArgValue::Path { path },
                    ArgType::LinuxBinprm => ArgValue::LinuxBinprm { path },
                    ArgType::String => ArgValue::String(path),
                    // Validation never lets a policy declare one.
                    ArgType::Opaque => ArgValue::Bytes(Vec::new()),
                    ArgType::Int { .. } => int_value(&a.type_name, raw),
                    ArgType::Caps => ArgValue::CapSet {
                        kind: match a.type_name.as_str() {
                            "cap_inheritable" => CapSetKind::Inheritable,
                            "cap_permitted" => CapSetKind::Permitted,
                            "cap_effective" => CapSetKind::Effective,
                            _ => CapSetKind::KernelCapT,
                        },
                        caps: raw,
                    },
                    // Only `socket_connect` has these arguments, and its events always carry
                    // the connection; an empty one would mean a decode bug, not bad input.
                    // A probe's `sock` argument has its own record; socket_connect's socket
                    // is the event's connection.
                    ArgType::Sock => match rec.and_then(|p| pod_of::<SockRec>(&p.bytes)) {
                        Some(r) => ArgValue::Sock(Some(NetData::from_info(&r.net))),
                        None => ArgValue::Sock(h.net),
                    },
                    ArgType::Skb => ArgValue::Skb(Box::new(
                        rec.and_then(|p| pod_of::<SkbRec>(&p.bytes))
                            .map(|r| skb_of(&r))
                            .unwrap_or_default(),
                    )),
                    // The destination. Its family is the socket's: the kernel record keeps no
                    // separate `sa_family` (for a v4-mapped destination on an IPv6 socket it
                    // is `AF_INET`).
                    ArgType::Sockaddr => ArgValue::Sockaddr(h.net.map(|n| Sockaddr {
                        family: n.family,
                        addr: n.daddr,
                        port: n.dport,
                    })),
                };
                Arg {
                    value,
                    label: a.label.clone(),
                }
            })
            .collect();
        let return_arg = match &slot.return_arg {
            Some(a) if h.flags & HOOK_FLAG_RETURN != 0 => Some(Arg {
                // A returned socket was read into the record of its position.
                value: if a.ty == ArgType::Sock {
                    ArgValue::Sock(
                        h.strs
                            .get(a.lsm_index as usize)
                            .and_then(Option::as_ref)
                            .and_then(|p| pod_of::<SockRec>(&p.bytes))
                            .map(|r| NetData::from_info(&r.net)),
                    )
                } else {
                    int_value(&a.type_name, h.retarg)
                },
                label: a.label.clone(),
            }),
            _ => None,
        };
        let data = slot
            .data
            .iter()
            .map(|a| Arg {
                value: int_value(
                    &a.type_name,
                    a.lsm_index
                        .checked_sub(crate::policy::ir::DATA_INDEX)
                        .and_then(|d| h.data.get(d as usize))
                        .copied()
                        .unwrap_or(0),
                ),
                label: a.label.clone(),
            })
            .collect();
        let (target, origin) = reported(slot, h.point);
        let (origin, action, tags) = if h.flags & HOOK_FLAG_KPROBE != 0 {
            observed(slot, origin, h.flags)
        } else if h.flags & HOOK_FLAG_PROBE != 0 {
            // The policy's own probe: Sigkill ran when the kernel says so; an Override made
            // the function return its error (the kernel reports it as the verdict).
            let action = if slot.flags & ACT_SIGKILL != 0 && h.flags & HOOK_FLAG_KILL_SENT != 0 {
                Action::Sigkill
            } else if slot.flags & ACT_OVERRIDE != 0 && h.retval != 0 {
                Action::Override
            } else if slot.flags & ACT_SET != 0 && h.flags & HOOK_FLAG_SET != 0 {
                Action::Set
            } else if slot.flags & ACT_SIGNAL != 0 {
                Action::Signal
            } else {
                Action::Post
            };
            (origin, action, slot.tags.clone())
        } else {
            (origin, action_of(slot.flags), slot.tags.clone())
        };
        // A request is the action Tetragon reports when no enforcement ran.
        let action = match (action, &slot.request) {
            (Action::Post, Some(crate::policy::ir::UserRequest::GetUrl(_))) => Action::GetUrl,
            (Action::Post, Some(crate::policy::ir::UserRequest::DnsLookup(_))) => Action::DnsLookup,
            (a, _) => a,
        };
        self.event(
            h.ktime,
            EventKind::Hook(Hook {
                process,
                parent,
                policy_name: slot.policy_name.clone(),
                policy_namespace: slot.policy_namespace.clone(),
                hook: target,
                origin,
                args,
                return_arg: return_arg.map(Box::new),
                data,
                action,
                return_action: None,
                message: slot.message.clone(),
                tags,
                request: slot.request.clone(),
            }),
        )
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
        // Every string or buffer the event shows, NUL-separated by position.
        let mut path = Vec::new();
        for (i, p) in h.strs.iter().enumerate() {
            if i > 0 {
                path.push(0);
            }
            if let Some(p) = p {
                // A text record's path, or a buffer's or credentials' bytes (one is empty).
                path.extend_from_slice(p.path.as_bytes());
                path.extend_from_slice(&p.bytes);
            }
        }
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
            path: &path,
            ints: &ints,
            net: h.net.filter(|_| shows_net),
        };
        self.limiter.allow(&subject, scope, interval_ms, h.ktime)
    }

    fn event(&self, ktime: u64, kind: EventKind) -> Event {
        Event {
            node_name: self.node.clone(),
            time: self.timestamp(ktime),
            kind,
        }
    }

    /// Turns one kernel event into our events (one per posting selector of a hook event),
    /// updating the cache. Slots that no longer exist (the policy was removed meanwhile) are
    /// skipped.
    pub fn convert(&mut self, ev: &KernelEvent, img: &MapImage) -> Vec<Event> {
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
fn action_of(flags: u32) -> Action {
    if flags & ACT_NOTIFY_ENFORCER != 0 && flags & (ACT_OVERRIDE | ACT_SIGNAL) != 0 {
        Action::NotifyEnforcer
    } else if flags & ACT_OVERRIDE != 0 {
        Action::Override
    } else if flags & ACT_SIGKILL != 0 {
        Action::Sigkill
    } else if flags & ACT_SIGNAL != 0 {
        Action::Signal
    } else {
        Action::Post
    }
}

/// The hook an event reports, and how its policy named it. A uprobe hook lists all the points
/// of one plan ([`crate::policy::ir::UprobeTarget`]); its event reports the one that ran, and copies only that.
fn reported(slot: &SlotInfo, point: u32) -> (Target, HookOrigin) {
    if let (Target::Uprobe(t), HookOrigin::Uprobe(_)) = (&slot.target, &slot.origin)
        && let Some(at) = t.at(point as usize)
    {
        return (Target::Uprobe(at.clone()), HookOrigin::Uprobe(at));
    }
    (slot.target.clone(), slot.origin.clone())
}

/// Tag of every event a kprobe observed (BPF LSM inactive): nothing was denied.
pub const OBSERVED_TAG: &str = "observed-by-kprobe";

/// How an event a kprobe observed is reported: as Tetragon reports a kprobe (the `security_*`
/// function that was probed, whatever the policy wrote), tagged [`OBSERVED_TAG`], with the
/// action that really ran. A kprobe cannot deny, so `Override` never ran; `Sigkill` ran only
/// when the kernel says it sent the signal (`--fallback-sigkill`).
fn observed(
    slot: &SlotInfo,
    origin: HookOrigin,
    hook_flags: u32,
) -> (HookOrigin, Action, Vec<String>) {
    let origin = match (origin, &slot.target) {
        (HookOrigin::LsmHook, Target::Lsm(h)) => HookOrigin::Kprobe {
            call: h.kprobe_function().to_owned(),
        },
        // Already observed where the policy asked: nothing to translate.
        (o, _) => o,
    };
    let action = if slot.flags & ACT_SIGKILL != 0 && hook_flags & HOOK_FLAG_KILL_SENT != 0 {
        Action::Sigkill
    } else if slot.flags & ACT_SIGNAL != 0 {
        Action::Signal
    } else {
        Action::Post
    };
    let mut tags = slot.tags.clone();
    tags.push(OBSERVED_TAG.to_owned());
    (origin, action, tags)
}

/// The `T` at the head of a record's bytes, if they are long enough to hold one.
fn pod_of<T: Copy>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: the length is checked above; the records' types are plain old data (any bit
    // pattern is valid) and read_unaligned copes with the Vec's alignment.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr() as *const T) })
}

fn skb_of(r: &SkbRec) -> Skb {
    let n = NetData::from_info(&r.net);
    Skb {
        hash: r.hash,
        len: r.len,
        priority: r.priority,
        mark: r.mark,
        family: n.family,
        saddr: n.saddr,
        daddr: n.daddr,
        sport: u32::from(n.sport),
        dport: u32::from(n.dport),
        proto: u32::from(n.protocol),
        sec_path_len: 0,
        sec_path_olen: 0,
    }
}

/// The object a `bpf_attr`, `bpf_prog`, `bpf_map` or `perf_event` record describes (all
/// zero when the kernel could not read it).
fn bpf_obj_of(kind: BpfObjKind, r: BpfObjRec) -> BpfObj {
    let end = r.name.iter().position(|&b| b == 0).unwrap_or(r.name.len());
    let name = String::from_utf8_lossy(&r.name[..end]).into_owned();
    match kind {
        BpfObjKind::BpfAttr | BpfObjKind::BpfProg => BpfObj::Prog {
            attr: kind == BpfObjKind::BpfAttr,
            prog_type: r.ty,
            insn_cnt: r.count,
            name,
        },
        BpfObjKind::BpfMap => BpfObj::Map {
            map_type: r.ty,
            key_size: r.count,
            value_size: r.value_size,
            max_entries: r.max_entries,
            name,
        },
        BpfObjKind::PerfEvent => BpfObj::PerfEvent {
            perf_type: r.ty,
            config: r.config,
            probe_offset: r.probe_offset,
            kprobe_func: name,
        },
    }
}

/// The credentials a `cred` argument's record carries (a `CredRec`); all zero when the kernel
/// could not read them (a NULL `struct cred *`).
fn cred_of(bytes: &[u8]) -> Cred {
    if bytes.len() < size_of::<CredRec>() {
        return Cred::default();
    }
    // SAFETY: the length is checked above; CredRec is plain old data (any bit pattern is
    // valid) and read_unaligned copes with the Vec's alignment.
    let c: CredRec = unsafe { std::ptr::read_unaligned(bytes.as_ptr() as *const CredRec) };
    let [uid, gid, suid, sgid, euid, egid, fsuid, fsgid] = c.ids;
    Cred {
        uid,
        gid,
        euid,
        egid,
        suid,
        sgid,
        fsuid,
        fsgid,
        securebits: c.securebits,
        caps: CapSets {
            effective: c.caps[0],
            inheritable: c.caps[1],
            permitted: c.caps[2],
        },
        user_ns: UserNs {
            level: c.userns_level as i32,
            uid: c.userns_owner,
            gid: c.userns_group,
            ns_inum: c.userns_inum,
        },
    }
}

/// An integer argument by its declared type (Tetragon's choice of member for each).
fn int_value(type_name: &str, raw: u64) -> ArgValue {
    match type_name {
        "uint32" | "uint8" | "uint16" => ArgValue::Uint(raw as u32),
        "uint64" | "ulong" | "size_t" => ArgValue::Size(raw),
        "long" | "int64" | "sint64" => ArgValue::Long(raw as i64),
        "capability" => ArgValue::Capability(raw as u32 as i32),
        _ => ArgValue::Int(raw as u32 as i32),
    }
}

/// Kernel events and policy slots for the tests of the enrichment and of the outputs that
/// convert its events.
#[cfg(test)]
pub(crate) mod fixtures {
    use std::{
        collections::HashMap,
        sync::{Arc, Mutex},
    };

    use lsm_shared::*;

    use super::{PodLookup, ProcessCache};
    use crate::{
        events::{
            decode::{ExecData, HookData, KPath, KernelEvent},
            model::{Container, Event, Image, Pod, Time},
        },
        policy::{
            compile::{MapImage, SlotInfo},
            ir::{ArgSpec, ArgType, HookOrigin, LsmHook, Target},
        },
    };

    /// The cgroup of the `spaceship` container of pod `default/xwing`: every fixture record
    /// (cat's, curl's) comes from it.
    pub const XWING_CGROUP: u64 = 0x2f41;

    /// Pod `default/xwing` as the Kubernetes edge would describe it.
    pub fn xwing() -> Arc<Pod> {
        Arc::new(Pod {
            namespace: "default".into(),
            name: "xwing".into(),
            uid: "5f0d5bd4-8c1e-4c36-9d8a-2f3c0e8c1a11".into(),
            labels: [
                ("app.kubernetes.io/name".to_owned(), "xwing".to_owned()),
                ("class".to_owned(), "xwing".to_owned()),
                ("org".to_owned(), "alliance".to_owned()),
            ]
            .into(),
            workload: "xwing".into(),
            workload_kind: "Pod".into(),
            container: Some(Container {
                id: "containerd://4b0df5a137260a6b95cbf6443bb2f4b0c9309e6ccb3d8afdbc3da8fff40c0778"
                    .into(),
                name: "spaceship".into(),
                image: Some(Image {
                    id: "quay.io/cilium/json-mock@sha256:5aad04835eda9025fe4561ad31be77fd55309af8158ca8663a72f6abb78c2603".into(),
                    name: "quay.io/cilium/json-mock:v1.3.8".into(),
                }),
                start_time: Some(Time::from_unix_secs(1_700_000_000)),
                pid: None,
                maybe_exec_probe: false,
            }),
        })
    }

    /// A [`PodLookup`] test double: pods by cgroup id, changeable while the cache runs, and
    /// the questions it was asked.
    #[derive(Default)]
    pub struct FakePods {
        pub by_cgroup: Mutex<HashMap<u64, Arc<Pod>>>,
        pub asked: Mutex<Vec<(u64, u32)>>,
    }

    impl FakePods {
        pub fn with(cgroup_id: u64, pod: Arc<Pod>) -> Arc<Self> {
            let f = FakePods::default();
            f.by_cgroup.lock().unwrap().insert(cgroup_id, pod);
            Arc::new(f)
        }
    }

    impl PodLookup for FakePods {
        fn pod_of(&self, cgroup_id: u64, tgid: u32) -> Option<Arc<Pod>> {
            self.asked.lock().unwrap().push((cgroup_id, tgid));
            self.by_cgroup.lock().unwrap().get(&cgroup_id).cloned()
        }
    }

    pub fn cache() -> ProcessCache {
        ProcessCache::new("node1".into(), None)
    }

    /// A cache whose pod lookup places [`XWING_CGROUP`] in `default/xwing`.
    pub fn cache_in_xwing() -> ProcessCache {
        ProcessCache::new("node1".into(), Some(FakePods::with(XWING_CGROUP, xwing())))
    }

    /// `cat /etc/shadow` (pid 100) starts.
    pub fn exec_cat(c: &mut ProcessCache) -> Event {
        c.convert(
            &KernelEvent::Exec(ExecData {
                ktime: 10,
                cgroup_id: XWING_CGROUP,
                pid: 100,
                tgid: 100,
                ppid: 1,
                uid: 0,
                exe: KPath {
                    path: "/usr/bin/cat".into(),
                    unresolved: false,
                    walked: false,
                    bytes: Vec::new(),
                },
                argv: vec!["cat".into(), "/etc/shadow".into()],
                args_truncated: false,
            }),
            &MapImage::default(),
        )
        .remove(0)
    }

    /// Slot 0 of `file_permission`: a file and an int argument, `Sigkill`.
    pub fn slot(origin: HookOrigin) -> SlotInfo {
        SlotInfo {
            policy_id: 3,
            policy_name: "file-monitoring-filtered".into(),
            policy_namespace: None,
            group: 0,
            target: Target::Lsm(LsmHook::FilePermission),
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
                    resolve: None,
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
                    resolve: None,
                },
            ],
            return_arg: None,
            message: None,
            tags: vec![],
            flags: ACT_POST | ACT_SIGKILL,
            rate_limit: None,
            request: None,
            data: Vec::new(),
        }
    }

    /// pid 100 at `file_permission` on /etc/shadow, slot 0 posting.
    pub fn hook_event() -> KernelEvent {
        KernelEvent::Hook(HookData {
            ktime: 15,
            cgroup_id: XWING_CGROUP,
            pid: 100,
            tgid: 100,
            hook: HOOK_FILE_PERMISSION,
            fired: 1,
            posted: 1,
            retval: -1,
            flags: 0,
            owner: 0,
            point: 0,
            args: [0xdead, 4, 0, 0, 0],
            retarg: 0,
            strs: [
                Some(KPath {
                    path: "/etc/shadow".into(),
                    unresolved: false,
                    walked: false,
                    bytes: Vec::new(),
                }),
                None,
                None,
                None,
                None,
            ],
            net: None,
            data: [0; lsm_shared::NUM_DATA],
        })
    }

    /// `curl https://198.51.100.1` (pid 200, uid 1000) starts.
    pub fn exec_curl(c: &mut ProcessCache) {
        c.convert(
            &KernelEvent::Exec(ExecData {
                ktime: 10,
                cgroup_id: XWING_CGROUP,
                pid: 200,
                tgid: 200,
                ppid: 1,
                uid: 1000,
                exe: KPath {
                    path: "/usr/bin/curl".into(),
                    unresolved: false,
                    walked: false,
                    bytes: Vec::new(),
                },
                argv: vec!["curl".into(), "https://198.51.100.1".into()],
                args_truncated: false,
            }),
            &MapImage::default(),
        );
    }

    /// The ring-buffer record the kernel writes for a connect from `saddr:sport` to
    /// `daddr:dport` over TCP/IPv4.
    pub fn connect_record(saddr: [u8; 4], sport: u16, daddr: [u8; 4], dport: u16) -> Vec<u8> {
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
                cgroup_id: XWING_CGROUP,
            },
            hook: HOOK_SOCKET_CONNECT,
            retval: 0,
            flags: 0,
            owner: 0,
            point: 0,
            _pad: 0,
            fired: 1,
            posted: 1,
            args: [0xffff_8880_0000_1000, 0xffff_c900_0000_2000, 16, 0, 0],
            retarg: 0,
            net,
            strs: [PathRec::empty(); MAX_ARGS],
            data: [0; lsm_shared::NUM_DATA],
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

    pub fn net_arg(index: u32, ty: ArgType, type_name: &str) -> ArgSpec {
        ArgSpec {
            spec_index: index,
            lsm_index: index,
            ty,
            type_name: type_name.into(),
            label: None,
            resolve: None,
        }
    }

    pub fn connect_slot(origin: HookOrigin, args: Vec<ArgSpec>) -> SlotInfo {
        SlotInfo {
            policy_name: "connect".into(),
            target: Target::Lsm(LsmHook::SocketConnect),
            args,
            flags: ACT_POST,
            ..slot(origin)
        }
    }

    /// curl's connect `record`, seen by a `socket_connect` policy showing `args`.
    pub fn convert_connect(origin: HookOrigin, args: Vec<ArgSpec>, record: &[u8]) -> Event {
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
}

#[cfg(test)]
mod tests {
    use super::{fixtures::*, *};
    use crate::{
        events::model::{HookOrigin, LsmHook},
        policy::ir::RateLimitScope,
    };

    #[test]
    fn a_process_whose_exit_was_lost_is_dropped_when_found_gone_twice() {
        let mut c = cache();
        let (a, b) = (c.get_or_scan(u32::MAX - 1), c.get_or_scan(u32::MAX - 2));
        assert_eq!((a.pid, b.pid, c.len()), (u32::MAX - 1, u32::MAX - 2, 2));
        let alive = |t: u32| t == u32::MAX - 1;
        assert_eq!(
            c.reconcile(alive),
            0,
            "gone once: its exit may still be queued"
        );
        assert_eq!(c.reconcile(alive), 1);
        assert_eq!(c.len(), 1);
        // Seen alive in between: suspected afresh.
        let _ = c.get_or_scan(u32::MAX - 3);
        assert_eq!(c.reconcile(|t| t != u32::MAX - 3), 0);
        assert_eq!(c.reconcile(|_| true), 0);
        assert_eq!(c.reconcile(|t| t != u32::MAX - 3), 0);
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn a_cred_record_becomes_the_credentials_and_a_short_one_zeros() {
        let rec = CredRec {
            ids: [1, 2, 3, 4, 5, 6, 7, 8],
            securebits: 0x2f,
            userns_level: 1,
            caps: [0xa, 0xb, 0xc],
            userns_owner: 1000,
            userns_group: 1001,
            userns_inum: 4026531837,
            _pad: 0,
        };
        // SAFETY: a plain-old-data struct viewed as its bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts(&rec as *const CredRec as *const u8, size_of::<CredRec>())
        };
        let c = cred_of(bytes);
        assert_eq!(
            (
                c.uid, c.gid, c.suid, c.sgid, c.euid, c.egid, c.fsuid, c.fsgid
            ),
            (1, 2, 3, 4, 5, 6, 7, 8)
        );
        assert_eq!(c.securebits, 0x2f);
        assert_eq!(
            c.caps,
            CapSets {
                effective: 0xa,
                inheritable: 0xb,
                permitted: 0xc
            }
        );
        assert_eq!(
            c.user_ns,
            UserNs {
                level: 1,
                uid: 1000,
                gid: 1001,
                ns_inum: 4026531837
            }
        );
        assert_eq!(cred_of(&bytes[..10]), Cred::default());
    }

    #[test]
    fn exec_records_the_process_with_its_whole_argv() {
        let mut c = cache();
        let ev = exec_cat(&mut c);
        let EventKind::Exec(e) = &ev.kind else {
            panic!("not exec")
        };
        assert_eq!(e.process.binary, "/usr/bin/cat");
        assert_eq!(e.process.argv, ["cat", "/etc/shadow"]);
        assert_eq!(e.process.args(), ["/etc/shadow"]);
        assert_eq!((e.process.pid, e.process.tid), (100, Some(100)));
        assert_eq!(e.process.flags, [ProcessFlag::Execve]);
        assert_eq!(e.process.start_time, Some(c.timestamp(10)));
        assert_eq!(ev.time, c.timestamp(10));
        assert_eq!(ev.node_name, "node1");
        assert_eq!(e.process.pod, None);
    }

    #[test]
    fn sigkill_exit_reports_the_signal_and_drops_the_process() {
        let mut c = cache();
        exec_cat(&mut c);
        let ev = c
            .convert(
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
        let EventKind::Exit(e) = ev.kind else {
            panic!("not exit")
        };
        assert_eq!((e.signal, e.status), (Some(9), 0));
        assert_eq!(e.process.binary, "/usr/bin/cat");
        assert!(!c.procs.contains_key(&100));
    }

    #[test]
    fn normal_exit_reports_the_status_without_a_signal() {
        let mut c = cache();
        exec_cat(&mut c);
        let ev = KernelEvent::Exit(ExitData {
            ktime: 20,
            cgroup_id: 0,
            pid: 100,
            tgid: 100,
            exit_code: 1 << 8,
        });
        let EventKind::Exit(e) = c.convert(&ev, &MapImage::default()).remove(0).kind else {
            panic!("not exit")
        };
        assert_eq!((e.signal, e.status), (None, 1));
    }

    #[test]
    fn a_hook_event_carries_the_policy_the_thread_and_typed_arguments() {
        let mut c = cache();
        exec_cat(&mut c);
        let mut img = MapImage::default();
        let mut s = slot(HookOrigin::Kprobe {
            call: "security_file_permission".into(),
        });
        s.policy_namespace = Some("team-a".into());
        s.args[1].label = Some("mask".into());
        img.slots.insert(HOOK_FILE_PERMISSION * MAX_SELECTORS, s);
        let KernelEvent::Hook(mut h) = hook_event() else {
            unreachable!()
        };
        h.pid = 101;
        let EventKind::Hook(k) = c.convert(&KernelEvent::Hook(h), &img).remove(0).kind else {
            panic!("not a hook event")
        };
        assert_eq!(k.policy_name, "file-monitoring-filtered");
        assert_eq!(k.policy_namespace.as_deref(), Some("team-a"));
        assert_eq!(k.hook, Target::Lsm(LsmHook::FilePermission));
        assert_eq!(k.function_name(), "security_file_permission");
        assert_eq!(k.action, Action::Sigkill);
        assert_eq!((k.process.pid, k.process.tid), (100, Some(101)));
        assert_eq!(k.process.binary, "/usr/bin/cat");
        assert_eq!(
            k.args,
            [
                Arg {
                    value: ArgValue::File {
                        path: "/etc/shadow".into()
                    },
                    label: None,
                },
                Arg {
                    value: ArgValue::Int(4),
                    label: Some("mask".into()),
                },
            ]
        );
    }

    #[test]
    fn a_hook_event_on_a_tracked_socket_is_its_owners() {
        let mut c = cache();
        exec_cat(&mut c);
        let mut img = MapImage::default();
        img.slots.insert(
            HOOK_FILE_PERMISSION * MAX_SELECTORS,
            slot(HookOrigin::Kprobe {
                call: "security_file_permission".into(),
            }),
        );
        let KernelEvent::Hook(mut h) = hook_event() else {
            unreachable!()
        };
        // Run in task 555 (a softirq's, another process's) on a socket cat (100) tracked.
        (h.pid, h.tgid, h.owner) = (555, 555, 100);
        let EventKind::Hook(k) = c.convert(&KernelEvent::Hook(h), &img).remove(0).kind else {
            panic!("not a hook event")
        };
        assert_eq!(k.process.pid, 100);
        assert_eq!(k.process.binary, "/usr/bin/cat");
        assert_ne!(k.process.tid, Some(555));
    }

    #[test]
    fn a_get_url_selectors_event_carries_its_request_and_reports_the_action() {
        use crate::policy::ir::UserRequest;
        let mut c = cache();
        exec_cat(&mut c);
        let mut img = MapImage::default();
        let mut s = slot(HookOrigin::Kprobe {
            call: "security_file_permission".into(),
        });
        s.flags = ACT_POST;
        s.request = Some(UserRequest::GetUrl("http://canary.example/".into()));
        img.slots.insert(HOOK_FILE_PERMISSION * MAX_SELECTORS, s);
        let EventKind::Hook(k) = c.convert(&hook_event(), &img).remove(0).kind else {
            panic!("not a hook event")
        };
        assert_eq!(k.action, Action::GetUrl);
        assert_eq!(
            k.request,
            Some(UserRequest::GetUrl("http://canary.example/".into()))
        );
    }

    #[test]
    fn integer_arguments_take_the_width_and_sign_of_their_declared_type() {
        assert_eq!(int_value("int", u64::MAX), ArgValue::Int(-1));
        assert_eq!(int_value("uint32", 7), ArgValue::Uint(7));
        assert_eq!(int_value("size_t", 1 << 40), ArgValue::Size(1 << 40));
        assert_eq!(int_value("int64", u64::MAX), ArgValue::Long(-1));
        assert_eq!(int_value("capability", 21), ArgValue::Capability(21));
    }

    #[test]
    fn a_rate_limited_post_drops_repeats_within_its_interval() {
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

    fn observed_event(origin: HookOrigin, kernel_flags: u32) -> Hook {
        let mut c = cache();
        exec_cat(&mut c);
        let mut img = MapImage::default();
        img.slots
            .insert(HOOK_FILE_PERMISSION * MAX_SELECTORS, slot(origin));
        let KernelEvent::Hook(mut h) = hook_event() else {
            unreachable!()
        };
        h.flags = kernel_flags;
        h.retval = 0;
        match c.convert(&KernelEvent::Hook(h), &img).remove(0).kind {
            EventKind::Hook(k) => k,
            other => panic!("not a hook event: {other:?}"),
        }
    }

    #[test]
    fn a_kprobe_observed_lsmhook_event_is_a_kprobe_on_the_security_function_tagged_observed() {
        let k = observed_event(HookOrigin::LsmHook, HOOK_FLAG_KPROBE);
        assert_eq!(
            k.origin,
            HookOrigin::Kprobe {
                call: "security_file_permission".into()
            }
        );
        assert_eq!(k.tags, [OBSERVED_TAG]);
        // The slot Sigkills, but without --fallback-sigkill nothing was sent.
        assert_eq!(k.action, Action::Post);
    }

    #[test]
    fn a_kprobe_observed_event_reports_sigkill_only_when_the_kernel_sent_it() {
        let call = HookOrigin::Kprobe {
            call: "security_file_permission".into(),
        };
        let k = observed_event(call.clone(), HOOK_FLAG_KPROBE | HOOK_FLAG_KILL_SENT);
        assert_eq!((k.origin, k.action), (call, Action::Sigkill));
        assert_eq!(k.tags, [OBSERVED_TAG]);
    }

    #[test]
    fn an_lsm_event_keeps_its_origin_action_and_tags() {
        let k = observed_event(HookOrigin::LsmHook, 0);
        assert_eq!((k.origin, k.action), (HookOrigin::LsmHook, Action::Sigkill));
        assert!(k.tags.is_empty());
    }

    #[test]
    fn a_forked_child_carries_its_parents_binary_until_it_execs() {
        let mut c = cache();
        exec_cat(&mut c);
        let fork = KernelEvent::Fork(ForkData {
            ktime: 12,
            cgroup_id: 0,
            tgid: 101,
            ppid: 100,
        });
        assert!(c.convert(&fork, &MapImage::default()).is_empty());
        let child = c.get_or_scan(101);
        assert_eq!(child.binary, "/usr/bin/cat");
        assert_eq!(child.pid, 101);
        assert_eq!(child.flags, [ProcessFlag::Clone]);
        assert_eq!(
            child.parent_exec_id,
            Some(c.get_or_scan(100).exec_id.clone())
        );
    }

    #[test]
    fn a_connect_shows_the_connection_and_its_destination() {
        let ev = convert_connect(
            HookOrigin::LsmHook,
            vec![
                net_arg(0, ArgType::Sock, "socket"),
                net_arg(1, ArgType::Sockaddr, "sockaddr"),
            ],
            &connect_record([10, 0, 0, 5], 40000, [198, 51, 100, 1], 443),
        );
        let EventKind::Hook(h) = ev.kind else {
            panic!("not a hook event")
        };
        let ArgValue::Sock(Some(n)) = h.args[0].value else {
            panic!("not a sock")
        };
        assert_eq!((n.sport, n.dport), (40000, 443));
        assert_eq!(n.daddr, Some([198, 51, 100, 1].into()));
        assert_eq!(
            h.args[1].value,
            ArgValue::Sockaddr(Some(Sockaddr {
                family: lsm_shared::AF_INET,
                addr: Some([198, 51, 100, 1].into()),
                port: 443,
            }))
        );
    }

    #[test]
    fn a_rate_limited_connect_post_limits_each_destination_separately() {
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

    fn file_permission_image() -> MapImage {
        let mut img = MapImage::default();
        img.slots.insert(
            HOOK_FILE_PERMISSION * MAX_SELECTORS,
            slot(HookOrigin::Kprobe {
                call: "security_file_permission".into(),
            }),
        );
        img
    }

    fn exit_of(tgid: u32, cgroup_id: u64) -> KernelEvent {
        KernelEvent::Exit(ExitData {
            ktime: 30,
            cgroup_id,
            pid: tgid,
            tgid,
            exit_code: 9,
        })
    }

    fn pod_name(p: &Process) -> Option<String> {
        p.pod
            .as_ref()
            .map(|p| format!("{}/{}", p.namespace, p.name))
    }

    #[test]
    fn exec_hook_and_exit_of_a_pod_process_carry_its_pod_and_a_host_parent_none() {
        let mut c = cache_in_xwing();
        // The parent, pid 1, runs on the host (read from /proc: no pod cgroup).
        c.get_or_scan(1);
        let EventKind::Exec(e) = exec_cat(&mut c).kind else {
            panic!("not exec")
        };
        assert_eq!(e.process.pod, Some(xwing()));
        assert_eq!(pod_name(&e.parent.expect("pid 1 is cached")), None);
        let EventKind::Hook(h) = c
            .convert(&hook_event(), &file_permission_image())
            .remove(0)
            .kind
        else {
            panic!("not a hook event")
        };
        assert_eq!(pod_name(&h.process).as_deref(), Some("default/xwing"));
        let EventKind::Exit(x) = c
            .convert(&exit_of(100, XWING_CGROUP), &MapImage::default())
            .remove(0)
            .kind
        else {
            panic!("not exit")
        };
        let pod = x.process.pod.expect("exit carries the pod");
        assert_eq!(pod.container.as_ref().unwrap().name, "spaceship");
        assert_eq!(pod.labels["org"], "alliance");
    }

    #[test]
    fn a_process_outside_any_pod_cgroup_has_no_pod() {
        let mut c = ProcessCache::new("node1".into(), Some(FakePods::with(0x9999, xwing())));
        let EventKind::Exec(e) = exec_cat(&mut c).kind else {
            panic!("not exec")
        };
        assert_eq!(e.process.pod, None);
    }

    #[test]
    fn exit_keeps_the_cached_pod_when_the_lookup_no_longer_knows_the_cgroup() {
        let pods = FakePods::with(XWING_CGROUP, xwing());
        let mut c = ProcessCache::new("node1".into(), Some(pods.clone()));
        exec_cat(&mut c);
        // The pod was deleted (and its cgroup removed) before its last process ended.
        pods.by_cgroup.lock().unwrap().clear();
        let EventKind::Exit(x) = c
            .convert(&exit_of(100, XWING_CGROUP), &MapImage::default())
            .remove(0)
            .kind
        else {
            panic!("not exit")
        };
        assert_eq!(x.process.pod, Some(xwing()));
    }

    #[test]
    fn a_pod_learned_after_the_exec_shows_on_later_events_and_on_the_childrens_parent() {
        let pods = Arc::new(FakePods::default());
        let mut c = ProcessCache::new("node1".into(), Some(pods.clone()));
        let EventKind::Exec(e) = exec_cat(&mut c).kind else {
            panic!("not exec")
        };
        assert_eq!(
            e.process.pod, None,
            "the lookup did not know the cgroup yet"
        );
        pods.by_cgroup.lock().unwrap().insert(XWING_CGROUP, xwing());
        let EventKind::Hook(h) = c
            .convert(&hook_event(), &file_permission_image())
            .remove(0)
            .kind
        else {
            panic!("not a hook event")
        };
        assert_eq!(h.process.pod, Some(xwing()));
        // cat's child: the fork record has cat's cgroup; the child's parent is cat, in xwing.
        let fork = KernelEvent::Fork(ForkData {
            ktime: 16,
            cgroup_id: XWING_CGROUP,
            tgid: 101,
            ppid: 100,
        });
        assert!(c.convert(&fork, &MapImage::default()).is_empty());
        assert_eq!(c.get_or_scan(101).pod, Some(xwing()));
        let EventKind::Exit(x) = c
            .convert(&exit_of(101, XWING_CGROUP), &MapImage::default())
            .remove(0)
            .kind
        else {
            panic!("not exit")
        };
        assert_eq!(x.parent.and_then(|p| p.pod), Some(xwing()));
    }

    #[test]
    fn a_forked_child_starts_in_its_parents_pod_even_if_the_lookup_cannot_place_it() {
        let pods = FakePods::with(XWING_CGROUP, xwing());
        let mut c = ProcessCache::new("node1".into(), Some(pods));
        exec_cat(&mut c);
        let fork = KernelEvent::Fork(ForkData {
            ktime: 12,
            cgroup_id: 0,
            tgid: 101,
            ppid: 100,
        });
        c.convert(&fork, &MapImage::default());
        assert_eq!(c.get_or_scan(101).pod, Some(xwing()));
    }

    #[test]
    fn a_process_read_from_proc_is_looked_up_by_its_tgid_without_a_cgroup_id() {
        let pods = Arc::new(FakePods::default());
        let mut c = ProcessCache::new("node1".into(), Some(pods.clone()));
        let me = std::process::id();
        c.get_or_scan(me);
        assert_eq!(*pods.asked.lock().unwrap(), [(0, me)]);
    }
}
