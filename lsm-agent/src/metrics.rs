//! Prometheus metrics, served on `--metrics-server ADDR` at `/metrics`.
//!
//! Values are recorded through the [`metrics`](::metrics) facade and rendered by the
//! Prometheus recorder of `metrics-exporter-prometheus`. Two kinds of sources feed them:
//!
//! * the event loop records our events as they are published ([`EventMetrics`]);
//! * state owned elsewhere (policy states and action counters, the kernel's `STAT_*`
//!   counters, the ring-buffer reader's counters, the event bus's subscribers and per-client
//!   losses, the DNS resolver's status and failures) is read by a [`Collector`] at every
//!   scrape, so a scrape always sees current values.
//!
//! Only core types are read; nothing here knows the Tetragon wire format.
//!
//! [`METRICS`] lists every metric; registration, `docs/metrics.md` and the Grafana dashboard
//! test all go by it.

use std::{
    collections::{BTreeMap, HashMap},
    convert::Infallible,
    future::Future,
    io,
    net::{Ipv4Addr, SocketAddr},
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use ::metrics::{Counter, Gauge, counter, describe_counter, describe_gauge, gauge};
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::{CONTENT_TYPE, HeaderValue},
};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

mod policy;

pub use crate::events::bus::{BoundedLabel, OTHER};
use crate::{
    agent::{AgentHandle, PolicyState, ProgramStats},
    dns::{DnsStatus, NameStatus},
    events::{
        bus::{BusSnapshot, EventBus},
        decode::KernelEvent,
        model::{Event, EventKind, HookOrigin},
        reader::ReaderStats,
    },
};
pub use policy::{ActionTracker, PolicyModeTracker, action_counts, record_policy_states};

/// Counter or gauge (no histograms are exported).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// One exported metric.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    /// Label names, in the order the series carry them.
    pub labels: &'static [&'static str],
    pub help: &'static str,
    /// The Tetragon metric this one corresponds to, or `"none"`.
    pub tetragon: &'static str,
}

pub const EVENTS: &str = "lsm_agent_events_total";
pub const POLICY_EVENTS: &str = "lsm_agent_policy_events_total";
pub const POLICY_ACTIONS: &str = "lsm_agent_policy_actions_total";
pub const TRACINGPOLICY_LOADED: &str = "lsm_agent_tracingpolicy_loaded";
pub const POLICY_MODE: &str = "lsm_agent_policy_mode";
pub const POLICY_LOAD_ERRORS: &str = "lsm_agent_policy_load_errors_total";
pub const OPERATIONS_DENIED: &str = "lsm_agent_operations_denied_total";
pub const OPERATIONS_DENIED_BY_BINARY: &str = "lsm_agent_operations_denied_by_binary_total";
pub const SELECTOR_MATCHES: &str = "lsm_agent_selector_matches_total";
pub const PATHS_UNRESOLVED: &str = "lsm_agent_paths_unresolved_total";
pub const PATHS_WALKED: &str = "lsm_agent_paths_walked_total";
pub const LAYER_FILES_PASSED: &str = "lsm_agent_layer_files_passed_total";
pub const RINGBUF_RECEIVED: &str = "lsm_agent_ringbuf_events_received_total";
pub const RINGBUF_LOST: &str = "lsm_agent_ringbuf_events_lost_total";
pub const RINGBUF_QUEUE_LOST: &str = "lsm_agent_ringbuf_queue_events_lost_total";
pub const EXPORT_LOST: &str = "lsm_agent_export_events_lost_total";
pub const HOOK_ENFORCING: &str = "lsm_agent_hook_enforcing";
pub const HANDOVER_LOST: &str = "lsm_agent_handover_events_lost_total";
pub const RINGBUF_DECODE_ERRORS: &str = "lsm_agent_ringbuf_decode_errors_total";
pub const SUBSCRIBERS: &str = "lsm_agent_event_subscribers";
pub const SUBSCRIBER_DROPPED: &str = "lsm_agent_subscriber_events_dropped_total";
pub const PROCESS_CACHE_SIZE: &str = "lsm_agent_process_cache_size";
pub const DNS_NAMES: &str = "lsm_agent_dns_names";
pub const DNS_NAMES_FAILING: &str = "lsm_agent_dns_names_failing";
pub const DNS_NAMES_STALE: &str = "lsm_agent_dns_names_stale";
pub const DNS_FAILURES: &str = "lsm_agent_dns_resolution_failures_total";
pub const BUILD_INFO: &str = "lsm_agent_build_info";
pub const PROGRAM_RUNS: &str = "lsm_agent_overhead_program_runs_total";
pub const PROGRAM_NANOSECONDS: &str = "lsm_agent_overhead_program_nanoseconds_total";

/// Every exported metric.
pub const METRICS: &[Metric] = &[
    Metric {
        name: EVENTS,
        kind: Kind::Counter,
        labels: &["type"],
        help: "Events sent to GetEvents subscribers, by Tetragon event type (PROCESS_EXEC, PROCESS_EXIT, PROCESS_KPROBE, PROCESS_TRACEPOINT, PROCESS_UPROBE, PROCESS_LSM).",
        tetragon: "tetragon_events_total",
    },
    Metric {
        name: POLICY_EVENTS,
        kind: Kind::Counter,
        labels: &["policy", "hook"],
        help: "Policy events (process_kprobe, process_tracepoint, process_lsm) by policy and hook (kprobe:<call>, tracepoint:<subsystem>/<event> or lsm:<hook>).",
        tetragon: "tetragon_policy_events_total",
    },
    Metric {
        name: POLICY_ACTIONS,
        kind: Kind::Counter,
        labels: &["policy", "policy_namespace", "action"],
        help: "Selector actions run in the kernel, by policy and action (post, nopost, signal, override, monitor_signal, monitor_override).",
        tetragon: "tetragon_tracingpolicy_selector_actions_total",
    },
    Metric {
        name: TRACINGPOLICY_LOADED,
        kind: Kind::Gauge,
        labels: &["state"],
        help: "Tracing policies by state (enabled, disabled, error, load_error, partially_enabled, skipped).",
        tetragon: "tetragon_tracingpolicy_loaded",
    },
    Metric {
        name: POLICY_MODE,
        kind: Kind::Gauge,
        labels: &["policy", "hook", "mode"],
        help: "1 per loaded policy and LSM hook it uses, labelled with the entry point the hook got: lsm (pre-operation deny) or kprobe (observed only: BPF LSM inactive).",
        tetragon: "none",
    },
    Metric {
        name: POLICY_LOAD_ERRORS,
        kind: Kind::Counter,
        labels: &["source"],
        help: "Policy versions that failed to parse or compile and were not loaded, by source (kubernetes); what enforced before keeps enforcing.",
        tetragon: "none",
    },
    Metric {
        name: OPERATIONS_DENIED,
        kind: Kind::Counter,
        labels: &[],
        help: "Operations denied in the kernel (Sigkill or Override), all policies, whether or not an event was posted.",
        tetragon: "none",
    },
    Metric {
        name: OPERATIONS_DENIED_BY_BINARY,
        kind: Kind::Counter,
        labels: &["binary"],
        help: "Denied operations that posted an event, by binary; at most 128 binaries, the others as binary=\"other\".",
        tetragon: "none",
    },
    Metric {
        name: SELECTOR_MATCHES,
        kind: Kind::Counter,
        labels: &[],
        help: "Selector matches in the kernel, all hooks.",
        tetragon: "none",
    },
    Metric {
        name: PATHS_UNRESOLVED,
        kind: Kind::Counter,
        labels: &[],
        help: "Paths the kernel could not resolve (enforcing selectors treated them as matching).",
        tetragon: "none",
    },
    Metric {
        name: PATHS_WALKED,
        kind: Kind::Counter,
        labels: &[],
        help: "Paths resolved by the bounded dentry walk instead of bpf_d_path.",
        tetragon: "none",
    },
    Metric {
        name: LAYER_FILES_PASSED,
        kind: Kind::Counter,
        labels: &[],
        help: "Overlayfs' own opens and reads of a layer's file (backing files) passed at the file hooks' start.",
        tetragon: "none",
    },
    Metric {
        name: RINGBUF_RECEIVED,
        kind: Kind::Counter,
        labels: &[],
        help: "Records read from the BPF ring buffer.",
        tetragon: "tetragon_observer_ringbuf_events_received_total",
    },
    Metric {
        name: RINGBUF_LOST,
        kind: Kind::Counter,
        labels: &[],
        help: "Events the kernel could not write because the ring buffer was full.",
        tetragon: "tetragon_observer_ringbuf_events_lost_total",
    },
    Metric {
        name: RINGBUF_QUEUE_LOST,
        kind: Kind::Counter,
        labels: &[],
        help: "Decoded events dropped because the queue to the event processing was full.",
        tetragon: "tetragon_observer_ringbuf_queue_events_lost_total",
    },
    Metric {
        name: EXPORT_LOST,
        kind: Kind::Counter,
        labels: &[],
        help: "Events that matched the JSON export's filters but are not in its file: the exporter fell behind on the event bus, its queue was full, or a write failed (rate-limited events aside).",
        tetragon: "none",
    },
    Metric {
        name: HOOK_ENFORCING,
        kind: Kind::Gauge,
        labels: &["hook"],
        help: "1 when the hook's last canary was denied (the hook enforces), 0 when it was not or could not run.",
        tetragon: "none",
    },
    Metric {
        name: HANDOVER_LOST,
        kind: Kind::Counter,
        labels: &[],
        help: "Events of an earlier agent's pinned programs that no agent delivered: produced while no agent ran, counted when this agent took over.",
        tetragon: "none",
    },
    Metric {
        name: RINGBUF_DECODE_ERRORS,
        kind: Kind::Counter,
        labels: &[],
        help: "Ring-buffer records that could not be decoded.",
        tetragon: "tetragon_handler_errors_total",
    },
    Metric {
        name: SUBSCRIBERS,
        kind: Kind::Gauge,
        labels: &[],
        help: "GetEvents streams open.",
        tetragon: "none",
    },
    Metric {
        name: SUBSCRIBER_DROPPED,
        kind: Kind::Counter,
        labels: &["client"],
        help: "Events a GetEvents client missed because it fell behind, by client address (\"unix\" for the Unix socket; at most 32 addresses, the others as client=\"other\").",
        tetragon: "tetragon_notify_overflowed_events_total",
    },
    Metric {
        name: PROCESS_CACHE_SIZE,
        kind: Kind::Gauge,
        labels: &[],
        help: "Processes in the user-space process cache.",
        tetragon: "tetragon_process_cache_size",
    },
    Metric {
        name: DNS_NAMES,
        kind: Kind::Gauge,
        labels: &[],
        help: "dns: names the loaded policies use.",
        tetragon: "none",
    },
    Metric {
        name: DNS_NAMES_FAILING,
        kind: Kind::Gauge,
        labels: &[],
        help: "dns: names whose last resolution failed (their last known addresses stay in use).",
        tetragon: "none",
    },
    Metric {
        name: DNS_NAMES_STALE,
        kind: Kind::Gauge,
        labels: &[],
        help: "dns: names whose addresses in use come from an answer whose TTL ran out.",
        tetragon: "none",
    },
    Metric {
        name: DNS_FAILURES,
        kind: Kind::Counter,
        labels: &["name"],
        help: "Failed resolutions of dns: names (timeouts, server errors, partial answers), by name.",
        tetragon: "none",
    },
    Metric {
        name: PROGRAM_RUNS,
        kind: Kind::Counter,
        labels: &["program", "kind"],
        help: "Runs of each loaded BPF program (kind lsm, kprobe, kretprobe, tracepoint), counted by the kernel while the sysctl kernel.bpf_stats_enabled is 1.",
        tetragon: "tetragon_overhead_program_runs_total",
    },
    Metric {
        name: PROGRAM_NANOSECONDS,
        kind: Kind::Counter,
        labels: &["program", "kind"],
        help: "Time spent in each loaded BPF program, in nanoseconds, counted by the kernel while the sysctl kernel.bpf_stats_enabled is 1.",
        tetragon: "tetragon_overhead_program_seconds_total",
    },
    Metric {
        name: BUILD_INFO,
        kind: Kind::Gauge,
        labels: &["version", "commit", "rustc"],
        help: "Build information; always 1.",
        tetragon: "tetragon_build_info",
    },
];

/// Every [`PolicyState`] with its `state` label value (Tetragon's names).
pub(crate) const POLICY_STATES: &[(PolicyState, &str)] = &[
    (PolicyState::Enabled, "enabled"),
    (PolicyState::Disabled, "disabled"),
    (PolicyState::Error, "error"),
    (PolicyState::LoadError, "load_error"),
    (PolicyState::PartiallyEnabled, "partially_enabled"),
    (PolicyState::Skipped, "skipped"),
];

/// `source` label values of [`POLICY_LOAD_ERRORS`] whose series exist from the start.
const LOAD_ERROR_SOURCES: &[&str] = &["kubernetes"];

/// `action` label values, in the order of [`action_counts`].
pub const ACTIONS: [&str; 6] = [
    "post",
    "nopost",
    "signal",
    "override",
    "monitor_signal",
    "monitor_override",
];

/// The event types the agent emits, whose series exist from the start.
const EVENT_TYPES: &[&str] = &[
    "PROCESS_EXEC",
    "PROCESS_EXIT",
    "PROCESS_KPROBE",
    "PROCESS_TRACEPOINT",
    "PROCESS_UPROBE",
    "PROCESS_LSM",
];

/// Distinct `binary` values of [`OPERATIONS_DENIED_BY_BINARY`].
pub const MAX_BINARIES: usize = 128;
/// Distinct `client` values of [`SUBSCRIBER_DROPPED`] (the event bus bounds them).
pub const MAX_CLIENTS: usize = crate::events::bus::MAX_CLIENTS;

/// The exported metric named `name`.
pub fn find(name: &str) -> Option<&'static Metric> {
    METRICS.iter().find(|m| m.name == name)
}

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("invalid metrics server address {0:?} (expected HOST:PORT or :PORT)")]
    InvalidAddress(String),
    #[error("resolving {addr}: {source}")]
    Resolve { addr: String, source: io::Error },
    #[error("binding {addr}: {source}")]
    Bind { addr: String, source: io::Error },
    #[error("a metrics recorder is already installed")]
    AlreadyInstalled,
}

/// Installs the Prometheus recorder as the global `metrics` recorder and registers every
/// metric. Returns the handle that renders the exposition text.
pub fn install() -> Result<PrometheusHandle, MetricsError> {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    ::metrics::set_global_recorder(recorder).map_err(|_| MetricsError::AlreadyInstalled)?;
    register();
    Ok(handle)
}

/// Describes every metric to the current recorder and creates the series that exist from the
/// start (unlabelled metrics, event types and policy states at 0, build info at 1), so that
/// dashboards and `rate()` see them before anything happens.
pub fn register() {
    for m in METRICS {
        match m.kind {
            Kind::Counter => describe_counter!(m.name, m.help),
            Kind::Gauge => describe_gauge!(m.name, m.help),
        }
        if m.labels.is_empty() {
            match m.kind {
                Kind::Counter => counter!(m.name).increment(0),
                Kind::Gauge => gauge!(m.name).set(0.0),
            }
        }
    }
    for ty in EVENT_TYPES {
        counter!(EVENTS, "type" => *ty).increment(0);
    }
    for (_, state) in POLICY_STATES {
        gauge!(TRACINGPOLICY_LOADED, "state" => *state).set(0.0);
    }
    for source in LOAD_ERROR_SOURCES {
        counter!(POLICY_LOAD_ERRORS, "source" => *source).increment(0);
    }
    let (version, commit, rustc) = build_info();
    gauge!(BUILD_INFO, "version" => version, "commit" => commit, "rustc" => rustc).set(1.0);
}

/// Version, commit (`LSM_AGENT_COMMIT` at build time, set by `make build`) and rustc version.
pub fn build_info() -> (&'static str, &'static str, &'static str) {
    (
        env!("CARGO_PKG_VERSION"),
        option_env!("LSM_AGENT_COMMIT")
            .filter(|c| !c.is_empty())
            .unwrap_or("unknown"),
        option_env!("LSM_AGENT_RUSTC")
            .filter(|c| !c.is_empty())
            .unwrap_or("unknown"),
    )
}

// ---------------------------------------------------------------------------------------------
// The event path

/// Counts the events the daemon publishes. Holds the counter handles, so the recorder must be
/// installed before this is created.
pub struct EventMetrics {
    by_type: HashMap<&'static str, Counter>,
    /// policy → hook → counter.
    by_policy: HashMap<String, HashMap<String, Counter>>,
    binaries: BoundedLabel,
    denied_by_binary: HashMap<String, Counter>,
    cache_size: Gauge,
}

impl Default for EventMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl EventMetrics {
    pub fn new() -> Self {
        Self {
            by_type: HashMap::new(),
            by_policy: HashMap::new(),
            binaries: BoundedLabel::new(MAX_BINARIES),
            denied_by_binary: HashMap::new(),
            cache_size: gauge!(PROCESS_CACHE_SIZE),
        }
    }

    /// Records one kernel event and the events it became (`out`, about to be published).
    pub fn record(&mut self, ev: &KernelEvent, out: &[Event]) {
        for e in out {
            let ty = event_type(e);
            self.by_type
                .entry(ty)
                .or_insert_with(|| counter!(EVENTS, "type" => ty))
                .increment(1);
            if let Some((policy, hook)) = policy_hook(e) {
                if !self.by_policy.contains_key(policy) {
                    self.by_policy.insert(policy.to_owned(), HashMap::new());
                }
                let Some(hooks) = self.by_policy.get_mut(policy) else {
                    continue;
                };
                hooks
                    .entry(hook)
                    .or_insert_with_key(|hook| {
                        counter!(POLICY_EVENTS, "policy" => policy.to_owned(), "hook" => hook.clone())
                    })
                    .increment(1);
            }
        }
        // One denied operation, however many selectors posted an event about it.
        if let KernelEvent::Hook(h) = ev
            && h.retval < 0
            && let Some(binary) = out.iter().find_map(event_binary)
        {
            let label = self.binaries.admit(binary);
            match self.denied_by_binary.get(label) {
                Some(c) => c.increment(1),
                None => {
                    let c = counter!(OPERATIONS_DENIED_BY_BINARY, "binary" => label.to_owned());
                    c.increment(1);
                    self.denied_by_binary.insert(label.to_owned(), c);
                }
            }
        }
    }

    pub fn set_process_cache_size(&self, n: usize) {
        self.cache_size.set(n as f64);
    }
}

/// The `type` label: the Tetragon event type the event is published as.
fn event_type(e: &Event) -> &'static str {
    match &e.kind {
        EventKind::Exec(_) => "PROCESS_EXEC",
        EventKind::Exit(_) => "PROCESS_EXIT",
        EventKind::Hook(h) => match &h.origin {
            HookOrigin::Kprobe { .. } => "PROCESS_KPROBE",
            HookOrigin::LsmHook => "PROCESS_LSM",
            HookOrigin::Tracepoint { .. } => "PROCESS_TRACEPOINT",
            HookOrigin::Uprobe(u) if u.usdt.is_some() => "PROCESS_USDT",
            HookOrigin::Uprobe(_) => "PROCESS_UPROBE",
        },
    }
}

/// Policy name and hook label of a policy event (Tetragon's `hook` label is
/// `kind:function`; a tracepoint's function is `subsystem/event`).
fn policy_hook(e: &Event) -> Option<(&str, String)> {
    let EventKind::Hook(h) = &e.kind else {
        return None;
    };
    let hook = match &h.origin {
        HookOrigin::Kprobe { call } => format!("kprobe:{call}"),
        HookOrigin::LsmHook => format!("lsm:{}", h.function_name()),
        HookOrigin::Tracepoint { subsystem, event } => format!("tracepoint:{subsystem}/{event}"),
        HookOrigin::Uprobe(u) if u.usdt.is_some() => format!("usdt:{u}"),
        HookOrigin::Uprobe(u) => format!("uprobe:{u}"),
    };
    Some((&h.policy_name, hook))
}

fn event_binary(e: &Event) -> Option<&str> {
    match &e.kind {
        EventKind::Hook(h) => Some(h.process.binary.as_str()),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// State read at scrape time

/// What the [`Collector`] reads; any part may be missing (tests, `--check`).
#[derive(Default, Clone)]
pub struct Sources {
    pub agent: Option<AgentHandle>,
    pub reader: Option<Arc<ReaderStats>>,
    pub bus: Option<EventBus>,
    pub dns: Option<DnsStatus>,
    /// The JSON export's lost events (a function, so that this edge does not import the
    /// export, another edge).
    pub export_lost: Option<Arc<dyn Fn() -> u64 + Send + Sync>>,
}

/// Turns state owned elsewhere into metric values; [`refresh`](Self::refresh) runs at every
/// scrape.
pub struct Collector {
    sources: Sources,
    actions: ActionTracker,
    modes: PolicyModeTracker,
}

impl Collector {
    pub fn new(sources: Sources) -> Self {
        Self {
            sources,
            actions: ActionTracker::default(),
            modes: PolicyModeTracker::default(),
        }
    }

    /// Reads every source and updates the metrics (in the current recorder). The policy
    /// state comes from the agent's owner, so this waits for a policy change in progress; a
    /// stopped agent leaves the policy metrics as they were.
    pub async fn refresh(&mut self) {
        if let Some(agent) = &self.sources.agent {
            if let Ok(status) = agent.status().await {
                record_policy_states(&status);
                self.modes.record(&status);
                self.actions.record(&status);
            }
            if let Ok(errors) = agent.load_errors().await {
                record_load_errors(&errors);
            }
            if let Ok(Some(stats)) = agent.kernel_stats().await {
                record_kernel_stats(&stats);
            }
            if let Ok(programs) = agent.program_stats().await {
                record_program_stats(&programs);
            }
            if let Some(canary) = agent.last_canary() {
                for c in canary.iter() {
                    let denied = c.verdict == crate::agent::Verdict::Denied;
                    gauge!(HOOK_ENFORCING, "hook" => c.hook).set(if denied { 1.0 } else { 0.0 });
                }
            }
        }
        if let Some(r) = &self.sources.reader {
            counter!(RINGBUF_RECEIVED).absolute(r.received.load(Ordering::Relaxed));
            counter!(RINGBUF_QUEUE_LOST).absolute(r.queue_lost.load(Ordering::Relaxed));
            counter!(RINGBUF_DECODE_ERRORS).absolute(r.decode_errors.load(Ordering::Relaxed));
            counter!(HANDOVER_LOST).absolute(r.handover_lost.load(Ordering::Relaxed));
        }
        if let Some(bus) = &self.sources.bus {
            record_bus(&bus.snapshot());
        }
        if let Some(lost) = &self.sources.export_lost {
            counter!(EXPORT_LOST).absolute(lost());
        }
        if let Some(dns) = &self.sources.dns {
            record_dns(&dns.snapshot(), Instant::now());
            record_dns_failures(&dns.failures());
        }
    }
}

/// Rejected policy versions by source, as the agent counts them.
pub fn record_load_errors(errors: &BTreeMap<&'static str, u64>) {
    for (source, n) in errors {
        counter!(POLICY_LOAD_ERRORS, "source" => *source).absolute(*n);
    }
}

/// The kernel's `STAT_*` counters (summed over CPUs; they only grow while the agent runs).
pub fn record_kernel_stats(stats: &[u64; lsm_shared::NUM_STATS as usize]) {
    use lsm_shared::{
        STAT_DENIED, STAT_LAYER_PASSED, STAT_MATCHES, STAT_PATH_UNRESOLVED, STAT_PATH_WALKED,
        STAT_RING_LOST,
    };
    let at = |i: u32| stats[i as usize];
    counter!(RINGBUF_LOST).absolute(at(STAT_RING_LOST));
    counter!(PATHS_UNRESOLVED).absolute(at(STAT_PATH_UNRESOLVED));
    counter!(PATHS_WALKED).absolute(at(STAT_PATH_WALKED));
    counter!(LAYER_FILES_PASSED).absolute(at(STAT_LAYER_PASSED));
    counter!(SELECTOR_MATCHES).absolute(at(STAT_MATCHES));
    counter!(OPERATIONS_DENIED).absolute(at(STAT_DENIED));
}

/// The kernel's run statistics of each loaded program.
pub fn record_program_stats(programs: &[ProgramStats]) {
    for p in programs {
        let labels = [("program", p.program.clone()), ("kind", p.kind.to_owned())];
        counter!(PROGRAM_RUNS, &labels).absolute(p.runs);
        let ns = u64::try_from(p.run_time.as_nanos()).unwrap_or(u64::MAX);
        counter!(PROGRAM_NANOSECONDS, &labels).absolute(ns);
    }
}

/// The DNS gauges from the resolver's status.
pub fn record_dns(names: &[NameStatus], now: Instant) {
    gauge!(DNS_NAMES).set(names.len() as f64);
    let failing = names.iter().filter(|n| n.consecutive_failures > 0).count();
    gauge!(DNS_NAMES_FAILING).set(failing as f64);
    let stale = names.iter().filter(|n| n.is_stale(now)).count();
    gauge!(DNS_NAMES_STALE).set(stale as f64);
}

/// The subscriber gauge and each client's losses.
pub fn record_bus(bus: &BusSnapshot) {
    gauge!(SUBSCRIBERS).set(bus.subscribers as f64);
    for (client, n) in &bus.dropped_by_client {
        counter!(SUBSCRIBER_DROPPED, "client" => client.clone()).absolute(*n);
    }
}

/// Failed resolutions by name, since the resolver started.
pub fn record_dns_failures(failures: &BTreeMap<String, u64>) {
    for (name, n) in failures {
        counter!(DNS_FAILURES, "name" => name.clone()).absolute(*n);
    }
}

// ---------------------------------------------------------------------------------------------
// The HTTP endpoint

/// Bound metrics sockets, before serving.
#[derive(Debug)]
pub struct Listeners(Vec<TcpListener>);

impl Listeners {
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.0.iter().filter_map(|l| l.local_addr().ok()).collect()
    }
}

/// Binds `addr`: `:PORT` (all IPv4 interfaces, as Tetragon's `--metrics-server :2112`),
/// `IP:PORT`, `[IPv6]:PORT` or `HOST:PORT` (every address the name resolves to, e.g. both
/// loopbacks for `localhost`; all on the same port when PORT is 0).
pub async fn bind(addr: &str) -> Result<Listeners, MetricsError> {
    let invalid = || MetricsError::InvalidAddress(addr.to_owned());
    let mut candidates: Vec<SocketAddr> = if let Some(port) = addr.strip_prefix(':') {
        let port: u16 = port.parse().map_err(|_| invalid())?;
        vec![SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))]
    } else {
        match addr.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
            _ => return Err(invalid()),
        }
        tokio::net::lookup_host(addr)
            .await
            .map_err(|source| MetricsError::Resolve {
                addr: addr.to_owned(),
                source,
            })?
            .collect()
    };
    candidates.dedup();
    let listeners = crate::listen::bind_all(candidates)
        .await
        .map_err(|(sa, source)| MetricsError::Bind {
            addr: sa.to_string(),
            source,
        })?;
    if listeners.is_empty() {
        return Err(invalid());
    }
    Ok(Listeners(listeners))
}

struct Scrape {
    handle: PrometheusHandle,
    collector: tokio::sync::Mutex<Collector>,
}

impl Scrape {
    async fn render(&self) -> String {
        self.collector.lock().await.refresh().await;
        self.handle.render()
    }
}

/// Serves `GET /metrics` on `listeners` until `shutdown` completes; each scrape refreshes
/// `collector` first. `handle` must belong to the installed global recorder ([`install`]).
pub async fn serve(
    listeners: Listeners,
    handle: PrometheusHandle,
    collector: Collector,
    shutdown: impl Future<Output = ()>,
) {
    let scrape = Arc::new(Scrape {
        handle,
        collector: tokio::sync::Mutex::new(collector),
    });
    info!(addrs = ?listeners.local_addrs(), "metrics server listening");
    let mut tasks = tokio::task::JoinSet::new();
    for l in listeners.0 {
        tasks.spawn(accept_loop(l, scrape.clone()));
    }
    shutdown.await;
    tasks.abort_all();
}

async fn accept_loop(listener: TcpListener, scrape: Arc<Scrape>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let scrape = scrape.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let scrape = scrape.clone();
                        async move { Ok::<_, Infallible>(respond(&scrape, &req).await) }
                    });
                    if let Err(e) = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await
                    {
                        debug!(error = %e, "metrics: connection ended with an error");
                    }
                });
            }
            // Out of file descriptors and the like: do not spin.
            Err(e) => {
                warn!(error = %e, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

async fn respond(scrape: &Arc<Scrape>, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics") => text(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            scrape.render().await,
        ),
        (&Method::GET | &Method::HEAD, "/") => text(
            StatusCode::OK,
            PLAIN,
            "lsm-agent: Prometheus metrics at /metrics\n".into(),
        ),
        (_, "/metrics" | "/") => text(
            StatusCode::METHOD_NOT_ALLOWED,
            PLAIN,
            "method not allowed\n".into(),
        ),
        _ => text(StatusCode::NOT_FOUND, PLAIN, "not found\n".into()),
    }
}

// ---------------------------------------------------------------------------------------------
// Reading the exposition text back (tests, tools)

/// One sample of the Prometheus text format.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses the samples of a text exposition (comments skipped; lines that do not parse are
/// left out).
pub fn parse_exposition(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => line.split_at(i),
        None => return None,
    };
    let mut labels = Vec::new();
    let rest = if let Some(mut r) = rest.strip_prefix('{') {
        loop {
            r = r.trim_start_matches(',');
            if let Some(after) = r.strip_prefix('}') {
                break after;
            }
            let (key, after) = r.split_once("=\"")?;
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                let (i, c) = chars.next()?;
                match c {
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    '"' => break i,
                    c => value.push(c),
                }
            };
            labels.push((key.to_owned(), value));
            r = &after[end + 1..];
        }
    } else {
        rest
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// The value of the series `name` whose labels include `labels` (`None`: no such series).
pub fn sample_value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == Some(*v)))
        .map(|s| s.value)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::{
        agent::{ActionCounts, Agent, MapWriter, PolicyStatus, Source},
        bpf::BpfError,
        events::{
            decode::{ExecData, HookData, KPath},
            model::{Action, Exec, Hook, LsmHook, Process, Target, Time},
        },
        policy::{compile::MapImage, ir::HostNs},
    };
    use metrics_exporter_prometheus::PrometheusRecorder;

    fn recorder() -> (PrometheusRecorder, PrometheusHandle) {
        let r = PrometheusBuilder::new().build_recorder();
        let h = r.handle();
        (r, h)
    }

    fn value(h: &PrometheusHandle, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        sample_value(&parse_exposition(&h.render()), name, labels)
    }

    fn policy_event(policy: &str, binary: &str, hook: LsmHook, origin: HookOrigin) -> Event {
        Event {
            node_name: String::new(),
            time: Time::default(),
            kind: EventKind::Hook(Hook {
                process: Process {
                    binary: binary.into(),
                    ..Default::default()
                },
                parent: None,
                policy_name: policy.into(),
                policy_namespace: None,
                hook: Target::Lsm(hook),
                origin,
                args: vec![],
                return_arg: None,
                data: Vec::new(),
                action: Action::Override,
                return_action: None,
                message: None,
                tags: vec![],
                request: None,
            }),
        }
    }

    fn lsm(policy: &str, binary: &str) -> Event {
        policy_event(policy, binary, LsmHook::FileOpen, HookOrigin::LsmHook)
    }

    fn kprobe(policy: &str) -> Event {
        policy_event(
            policy,
            "/usr/bin/cat",
            LsmHook::FilePermission,
            HookOrigin::Kprobe {
                call: "security_file_permission".into(),
            },
        )
    }

    fn hook(retval: i32) -> KernelEvent {
        KernelEvent::Hook(HookData {
            ktime: 1,
            cgroup_id: 0,
            pid: 7,
            tgid: 7,
            hook: lsm_shared::HOOK_FILE_OPEN,
            fired: 1,
            posted: 1,
            retval,
            flags: 0,
            owner: 0,
            point: 0,
            args: [0; lsm_shared::MAX_ARGS],
            retarg: 0,
            strs: Default::default(),
            net: None,
            data: [0; lsm_shared::NUM_DATA],
        })
    }

    fn exec() -> (KernelEvent, Event) {
        (
            KernelEvent::Exec(ExecData {
                ktime: 1,
                cgroup_id: 0,
                pid: 7,
                tgid: 7,
                ppid: 1,
                uid: 0,
                exe: KPath {
                    path: "/usr/bin/cat".into(),
                    unresolved: false,
                    walked: false,
                    bytes: Vec::new(),
                },
                argv: vec![],
                args_truncated: false,
            }),
            Event {
                node_name: String::new(),
                time: Time::default(),
                kind: EventKind::Exec(Exec {
                    process: Process::default(),
                    parent: None,
                }),
            },
        )
    }

    #[test]
    fn the_table_is_consistent() {
        let mut names = BTreeSet::new();
        for m in METRICS {
            assert!(names.insert(m.name), "{} listed twice", m.name);
            assert!(m.name.starts_with("lsm_agent_"), "{}", m.name);
            let is_total = m.name.ends_with("_total");
            assert_eq!(
                is_total,
                m.kind == Kind::Counter,
                "{}: counters, and only counters, end in _total",
                m.name
            );
            assert!(!m.help.is_empty() && !m.tetragon.is_empty());
            assert!(
                m.tetragon == "none" || m.tetragon.starts_with("tetragon_"),
                "{}",
                m.name
            );
        }
    }

    #[test]
    fn register_creates_the_initial_series_with_help() {
        let (r, h) = recorder();
        ::metrics::with_local_recorder(&r, register);
        let text = h.render();
        for m in METRICS.iter().filter(|m| m.labels.is_empty()) {
            assert!(
                text.contains(&format!("# HELP {} ", m.name)),
                "{} not described",
                m.name
            );
            assert_eq!(value(&h, m.name, &[]), Some(0.0), "{}", m.name);
        }
        assert_eq!(value(&h, EVENTS, &[("type", "PROCESS_LSM")]), Some(0.0));
        assert_eq!(
            value(&h, TRACINGPOLICY_LOADED, &[("state", "load_error")]),
            Some(0.0)
        );
        assert_eq!(
            value(&h, POLICY_LOAD_ERRORS, &[("source", "kubernetes")]),
            Some(0.0)
        );
        assert_eq!(
            value(&h, BUILD_INFO, &[("version", env!("CARGO_PKG_VERSION"))]),
            Some(1.0)
        );
    }

    #[test]
    fn tracepoint_events_count_as_process_tracepoint_under_subsystem_and_event() {
        let (r, h) = recorder();
        ::metrics::with_local_recorder(&r, || {
            register();
            let mut m = EventMetrics::new();
            let tp = policy_event(
                "raw-syscalls",
                "/usr/bin/cat",
                LsmHook::FileOpen,
                HookOrigin::Tracepoint {
                    subsystem: "raw_syscalls".into(),
                    event: "sys_enter".into(),
                },
            );
            m.record(&hook(0), &[tp.clone(), tp]);
        });
        assert_eq!(
            value(&h, EVENTS, &[("type", "PROCESS_TRACEPOINT")]),
            Some(2.0)
        );
        assert_eq!(value(&h, EVENTS, &[("type", "PROCESS_KPROBE")]), Some(0.0));
        assert_eq!(
            value(
                &h,
                POLICY_EVENTS,
                &[
                    ("policy", "raw-syscalls"),
                    ("hook", "tracepoint:raw_syscalls/sys_enter")
                ]
            ),
            Some(2.0)
        );
    }

    #[test]
    fn events_are_counted_by_type_policy_hook_and_denied_binary() {
        let (r, h) = recorder();
        ::metrics::with_local_recorder(&r, || {
            let mut m = EventMetrics::new();
            let (ev, resp) = exec();
            m.record(&ev, &[resp]);
            // One denied operation that two selectors of two policies posted about.
            m.record(
                &hook(-1),
                &[lsm("p1", "/usr/bin/cat"), lsm("p2", "/usr/bin/cat")],
            );
            // Posted, not denied (monitor mode, or Post only).
            m.record(&hook(0), &[kprobe("p3")]);
            // Denied without a posted event: nothing to attribute it to.
            m.record(&hook(-1), &[]);
            m.set_process_cache_size(42);
        });
        assert_eq!(value(&h, EVENTS, &[("type", "PROCESS_EXEC")]), Some(1.0));
        assert_eq!(value(&h, EVENTS, &[("type", "PROCESS_LSM")]), Some(2.0));
        assert_eq!(value(&h, EVENTS, &[("type", "PROCESS_KPROBE")]), Some(1.0));
        assert_eq!(
            value(
                &h,
                POLICY_EVENTS,
                &[("policy", "p1"), ("hook", "lsm:file_open")]
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &h,
                POLICY_EVENTS,
                &[
                    ("policy", "p3"),
                    ("hook", "kprobe:security_file_permission")
                ]
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &h,
                OPERATIONS_DENIED_BY_BINARY,
                &[("binary", "/usr/bin/cat")]
            ),
            Some(1.0)
        );
        assert_eq!(value(&h, PROCESS_CACHE_SIZE, &[]), Some(42.0));
    }

    #[test]
    fn denied_binaries_are_bounded() {
        let (r, h) = recorder();
        ::metrics::with_local_recorder(&r, || {
            let mut m = EventMetrics::new();
            for i in 0..MAX_BINARIES + 5 {
                m.record(&hook(-1), &[lsm("p", &format!("/bin/b{i}"))]);
            }
            m.record(&hook(-1), &[lsm("p", "/bin/b0")]);
        });
        let samples = parse_exposition(&h.render());
        let series: Vec<_> = samples
            .iter()
            .filter(|s| s.name == OPERATIONS_DENIED_BY_BINARY)
            .collect();
        assert_eq!(series.len(), MAX_BINARIES + 1);
        assert_eq!(
            sample_value(&samples, OPERATIONS_DENIED_BY_BINARY, &[("binary", OTHER)]),
            Some(5.0)
        );
        assert_eq!(
            sample_value(
                &samples,
                OPERATIONS_DENIED_BY_BINARY,
                &[("binary", "/bin/b0")]
            ),
            Some(2.0)
        );
    }

    fn status(id: u32, name: &str, state: PolicyState, c: [u64; 6]) -> PolicyStatus {
        PolicyStatus {
            id: Some(id),
            name: name.into(),
            namespace: String::new(),
            source: Source::Grpc,
            sensors: Vec::new(),
            hooks: Vec::new(),
            enabled: state == PolicyState::Enabled,
            state,
            mode: None,
            actions: Some(ActionCounts {
                post: c[0],
                nopost: c[1],
                signal: c[2],
                r#override: c[3],
                monitor_signal: c[4],
                monitor_override: c[5],
            }),
            error: None,
        }
    }

    #[test]
    fn action_counters_stay_monotonic_across_reloads() {
        let (r, h) = recorder();
        let get = |action: &str| {
            value(
                &h,
                POLICY_ACTIONS,
                &[
                    ("policy", "p"),
                    ("policy_namespace", ""),
                    ("action", action),
                ],
            )
        };
        let mut t = ActionTracker::default();
        let on = PolicyState::Enabled;
        ::metrics::with_local_recorder(&r, || t.record(&[status(1, "p", on, [3, 0, 2, 0, 0, 0])]));
        assert_eq!(get("post"), Some(3.0));
        assert_eq!(get("signal"), Some(2.0));
        assert_eq!(get("monitor_override"), Some(0.0));
        ::metrics::with_local_recorder(&r, || t.record(&[status(1, "p", on, [5, 0, 2, 0, 0, 0])]));
        assert_eq!(get("post"), Some(5.0));
        // Reloaded from its file: a new id, counting from zero in new slots.
        ::metrics::with_local_recorder(&r, || t.record(&[status(2, "p", on, [1, 0, 0, 0, 0, 0])]));
        assert_eq!(get("post"), Some(6.0));
        // Disabled (no counters), then enabled again in fresh slots.
        let mut off = status(2, "p", PolicyState::Disabled, [0; 6]);
        off.actions = None;
        ::metrics::with_local_recorder(&r, || t.record(&[off]));
        ::metrics::with_local_recorder(&r, || t.record(&[status(2, "p", on, [4, 0, 0, 0, 0, 0])]));
        assert_eq!(get("post"), Some(10.0));
        // A slot reassigned under the same id: the lower value counts from zero.
        ::metrics::with_local_recorder(&r, || t.record(&[status(2, "p", on, [1, 0, 0, 0, 0, 0])]));
        assert_eq!(get("post"), Some(11.0));
    }

    #[test]
    fn policy_states_cover_tetragons_label_values() {
        let (r, h) = recorder();
        ::metrics::with_local_recorder(&r, || {
            record_policy_states(&[
                status(1, "a", PolicyState::Enabled, [0; 6]),
                status(2, "b", PolicyState::Enabled, [0; 6]),
                status(3, "c", PolicyState::LoadError, [0; 6]),
            ])
        });
        let get = |s: &str| value(&h, TRACINGPOLICY_LOADED, &[("state", s)]);
        assert_eq!(get("enabled"), Some(2.0));
        assert_eq!(get("load_error"), Some(1.0));
        assert_eq!(get("disabled"), Some(0.0));
        assert_eq!(get("skipped"), Some(0.0));
    }

    #[test]
    fn each_policy_hook_reports_the_mode_it_got() {
        use crate::{
            agent::HookStatus,
            bpf::{AttachMode, HookModes},
        };
        let mut modes = HookModes::all(AttachMode::Kprobe);
        modes.0[lsm_shared::HOOK_FILE_OPEN as usize] = Some(AttachMode::Lsm);
        let mut p = status(1, "files", PolicyState::Enabled, [0; 6]);
        p.hooks = HookStatus::of(
            [lsm_shared::HOOK_FILE_PERMISSION, lsm_shared::HOOK_FILE_OPEN],
            &modes,
        );
        let (r, h) = recorder();
        let mut tracker = PolicyModeTracker::default();
        ::metrics::with_local_recorder(&r, || tracker.record(std::slice::from_ref(&p)));
        let get = |hook: &str, mode: &str| {
            value(
                &h,
                POLICY_MODE,
                &[("policy", "files"), ("hook", hook), ("mode", mode)],
            )
        };
        assert_eq!(get("file_permission", "kprobe"), Some(1.0));
        assert_eq!(get("file_open", "lsm"), Some(1.0));
        assert_eq!(get("file_open", "kprobe"), None);

        // The policy loses a hook, then is deleted: its series drop to 0, not stay at 1.
        p.hooks.retain(|h| h.lsm_name() == "file_open");
        ::metrics::with_local_recorder(&r, || tracker.record(std::slice::from_ref(&p)));
        assert_eq!(get("file_permission", "kprobe"), Some(0.0));
        assert_eq!(get("file_open", "lsm"), Some(1.0));
        ::metrics::with_local_recorder(&r, || tracker.record(&[]));
        assert_eq!(get("file_open", "lsm"), Some(0.0));
    }

    struct FakeKernel;

    impl MapWriter for FakeKernel {
        fn apply(&mut self, _img: &MapImage) -> Result<(), BpfError> {
            Ok(())
        }

        fn kernel_stats(&self) -> Option<[u64; lsm_shared::NUM_STATS as usize]> {
            let mut s = [0; lsm_shared::NUM_STATS as usize];
            s[lsm_shared::STAT_RING_LOST as usize] = 7;
            s[lsm_shared::STAT_PATH_UNRESOLVED as usize] = 1;
            s[lsm_shared::STAT_PATH_WALKED as usize] = 2;
            s[lsm_shared::STAT_MATCHES as usize] = 3;
            s[lsm_shared::STAT_DENIED as usize] = 4;
            s[lsm_shared::STAT_LAYER_PASSED as usize] = 5;
            Some(s)
        }
    }

    #[tokio::test]
    async fn the_collector_reads_kernel_reader_bus_and_dns_state() {
        let (r, h) = recorder();
        let mut agent = Agent::new(Box::new(FakeKernel), HostNs::default());
        let policy = crate::policy::parse::parse_policy(
            "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: p\nspec:\n  lsmhooks:\n  - hook: file_open\n    args:\n    - index: 0\n      type: file\n    selectors:\n    - matchActions:\n      - action: Post\n",
            std::path::Path::new("p.yaml"),
        )
        .unwrap();
        agent.add(policy, Source::Grpc).unwrap();
        let object = crate::agent::KubeObject {
            kind: crate::agent::CrdKind::TracingPolicy,
            namespace: None,
            name: "broken".into(),
        };
        agent.reject(Source::Kubernetes(object), "bad".into());
        let (owner, agent) = crate::agent::owner(agent);
        tokio::spawn(owner.run());
        let reader = Arc::new(ReaderStats::default());
        reader.received.store(100, Ordering::Relaxed);
        reader.queue_lost.store(2, Ordering::Relaxed);
        let bus = EventBus::new(4);
        let _sub = bus.subscribe();
        let mut c = Collector::new(Sources {
            agent: Some(agent),
            reader: Some(reader),
            bus: Some(bus),
            dns: Some(DnsStatus::new()),
            export_lost: None,
        });
        {
            // The test runtime has one thread: everything the refresh records lands here.
            let _local = ::metrics::set_default_local_recorder(&r);
            c.refresh().await;
        }
        assert_eq!(value(&h, RINGBUF_LOST, &[]), Some(7.0));
        assert_eq!(value(&h, PATHS_UNRESOLVED, &[]), Some(1.0));
        assert_eq!(value(&h, PATHS_WALKED, &[]), Some(2.0));
        assert_eq!(value(&h, SELECTOR_MATCHES, &[]), Some(3.0));
        assert_eq!(value(&h, OPERATIONS_DENIED, &[]), Some(4.0));
        assert_eq!(value(&h, LAYER_FILES_PASSED, &[]), Some(5.0));
        assert_eq!(value(&h, RINGBUF_RECEIVED, &[]), Some(100.0));
        assert_eq!(value(&h, RINGBUF_QUEUE_LOST, &[]), Some(2.0));
        assert_eq!(value(&h, SUBSCRIBERS, &[]), Some(1.0));
        assert_eq!(value(&h, DNS_NAMES, &[]), Some(0.0));
        assert_eq!(
            value(&h, TRACINGPOLICY_LOADED, &[("state", "enabled")]),
            Some(1.0)
        );
        assert_eq!(
            value(&h, TRACINGPOLICY_LOADED, &[("state", "load_error")]),
            Some(1.0)
        );
        assert_eq!(
            value(&h, POLICY_LOAD_ERRORS, &[("source", "kubernetes")]),
            Some(1.0)
        );
    }

    #[test]
    fn bus_losses_and_dns_failures_become_counters_at_scrape_time() {
        let (r, h) = recorder();
        let bus = BusSnapshot {
            subscribers: 2,
            dropped_by_client: BTreeMap::from([
                ("127.0.0.1".to_owned(), 90),
                (OTHER.to_owned(), 3),
            ]),
            lost: 93,
        };
        let failures = BTreeMap::from([("fail.test".to_owned(), 4)]);
        ::metrics::with_local_recorder(&r, || {
            record_bus(&bus);
            record_dns_failures(&failures);
        });
        let dropped = |client| value(&h, SUBSCRIBER_DROPPED, &[("client", client)]);
        assert_eq!(value(&h, SUBSCRIBERS, &[]), Some(2.0));
        assert_eq!(dropped("127.0.0.1"), Some(90.0));
        assert_eq!(dropped(OTHER), Some(3.0));
        assert_eq!(value(&h, DNS_FAILURES, &[("name", "fail.test")]), Some(4.0));
        // The sources count since they started: the next scrape shows their new totals.
        let mut later = bus.clone();
        later.dropped_by_client.insert("127.0.0.1".to_owned(), 95);
        ::metrics::with_local_recorder(&r, || record_bus(&later));
        assert_eq!(dropped("127.0.0.1"), Some(95.0));
        assert_eq!(dropped(OTHER), Some(3.0));
    }

    #[test]
    fn exposition_parsing_handles_escapes() {
        let s = parse_exposition(
            "# HELP x y\nx_total{a=\"q\\\"uote\",b=\"back\\\\slash\"} 3\nplain 1.5\nbad\n",
        );
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].label("a"), Some("q\"uote"));
        assert_eq!(s[0].label("b"), Some("back\\slash"));
        assert_eq!(s[0].value, 3.0);
        assert_eq!(s[1].name, "plain");
        assert_eq!(s[1].value, 1.5);
    }

    #[tokio::test]
    async fn bind_accepts_port_only_and_host_port() {
        assert!(matches!(
            bind("2112").await,
            Err(MetricsError::InvalidAddress(_))
        ));
        assert!(matches!(
            bind(":notaport").await,
            Err(MetricsError::InvalidAddress(_))
        ));
        let l = bind("127.0.0.1:0").await.unwrap();
        let addrs = l.local_addrs();
        assert_eq!(addrs.len(), 1);
        assert!(addrs[0].ip().is_loopback() && addrs[0].port() != 0);
        let l = bind("localhost:0").await.unwrap();
        let addrs = l.local_addrs();
        assert!(addrs.iter().all(|a| a.port() == addrs[0].port()));
    }
}
