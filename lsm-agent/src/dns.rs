//! `dns:<name>` address values: the agent resolves the names its policies use and keeps the
//! kernel's address maps in step with the answers (see `docs/dns.md`).
//!
//! * [`Watch`]: the pure state machine (what is known about each name, when to ask again),
//!   driven by an injected clock so it is tested without sleeping.
//! * [`Lookup`]: one A + AAAA resolution of a name; [`resolver`] builds the hickory-based one.
//! * [`run`]: the loop that syncs names from the agent, resolves what is due and installs
//!   the resulting table with [`AgentHandle::set_dns`].
//!
//! Semantics, in short: a definitive answer (addresses, or an authoritative "no such name" /
//! "no such record") replaces what was known, so addresses no longer returned are removed; a
//! failure (timeout, SERVFAIL, REFUSED, network error) keeps the last known addresses and
//! retries with a backoff. One name's failure never delays another's resolution.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    future::Future,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tracing::{debug, error, info, warn};

use crate::agent::{AgentError, AgentHandle};

/// Shortest time an answer is trusted: a record with a smaller TTL (including 0) is asked for
/// again after this long, not sooner. Also the first retry delay after a failure.
pub const MIN_TTL: Duration = Duration::from_secs(5);
/// Longest time an answer is trusted: a record with a larger TTL is still asked for again
/// after this long, so a changed record is picked up within an hour whatever its TTL.
pub const MAX_TTL: Duration = Duration::from_secs(3600);
/// When to ask again about a name that has no addresses (NXDOMAIN, or no A/AAAA records).
pub const NEGATIVE_TTL: Duration = Duration::from_secs(30);
/// Longest delay between retries of a failing name (the delay doubles from [`MIN_TTL`]).
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How long one resolution (A and AAAA together) may take before it counts as a failure.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// How many names are resolved at the same time.
pub const MAX_CONCURRENT: usize = 16;
/// How often the set of names is re-read from the loaded policies.
pub const POLL: Duration = Duration::from_secs(1);
/// How long to wait before installing the same table again after [`AgentHandle::set_dns`]
/// failed.
const PUBLISH_RETRY: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    #[error("invalid DNS name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The server answered with an error code (SERVFAIL, REFUSED, ...).
    #[error("server answered {0}")]
    Server(String),
    /// Transport or resolver failure (no answer at all).
    #[error("{0}")]
    Resolve(String),
    /// One family was answered and the other was not: the answered family's addresses
    /// replace that family's, the other family keeps its last known addresses.
    #[error("{} lookup failed: {error}", answered.other())]
    Partial {
        answered: Family,
        answers: Vec<(IpAddr, u32)>,
        error: Box<DnsError>,
    },
    #[error("resolver configuration: {0}")]
    Config(String),
    #[error(
        "{value:?}: expected IP or IP:PORT (e.g. 192.0.2.53, 192.0.2.53:5353, [2001:db8::53]:53)"
    )]
    BadServer { value: String },
}

/// An address family, by its record type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IPv4, A records.
    A,
    /// IPv6, AAAA records.
    Aaaa,
}

impl Family {
    pub fn of(ip: &IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::A,
            IpAddr::V6(_) => Family::Aaaa,
        }
    }

    pub fn other(self) -> Family {
        match self {
            Family::A => Family::Aaaa,
            Family::Aaaa => Family::A,
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Family::A => "A",
            Family::Aaaa => "AAAA",
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The pure core.

/// What is known about one name.
#[derive(Debug, Clone)]
struct Entry {
    /// The last good answer, sorted and deduplicated.
    addrs: Vec<IpAddr>,
    /// When the last good answer arrived.
    last_success: Option<Instant>,
    /// When the last good answer's (clamped) TTL runs out.
    expires: Option<Instant>,
    /// When to resolve the name next; `None`: now.
    next: Option<Instant>,
    last_error: Option<String>,
    failures: u32,
    in_flight: bool,
}

impl Entry {
    fn new() -> Self {
        Entry {
            addrs: Vec::new(),
            last_success: None,
            expires: None,
            next: None,
            last_error: None,
            failures: 0,
            in_flight: false,
        }
    }
}

/// One name's state, for status reporting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameStatus {
    pub name: String,
    /// The addresses the policies use for this name now (the last good answer).
    pub addresses: Vec<IpAddr>,
    /// When the last good answer arrived (`None`: never resolved).
    pub last_success: Option<Instant>,
    /// When that answer's clamped TTL ran or runs out; in the past while failures keep it.
    pub expires: Option<Instant>,
    /// When the name is resolved next (`None`: now, or a resolution is under way).
    pub next_attempt: Option<Instant>,
    /// The last failure, cleared by the next good answer.
    pub last_error: Option<String>,
    pub consecutive_failures: u32,
}

impl NameStatus {
    /// The addresses in use come from an answer whose TTL has run out (resolution failing).
    pub fn is_stale(&self, now: Instant) -> bool {
        self.expires.is_some_and(|e| e <= now)
    }
}

/// What a good answer changed, for logging.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Change {
    pub added: Vec<IpAddr>,
    pub removed: Vec<IpAddr>,
    /// The failures this answer ended (0 if the name was healthy).
    pub recovered_after: u32,
    /// The first good answer for the name.
    pub first: bool,
}

fn sorted(mut v: Vec<IpAddr>) -> Vec<IpAddr> {
    v.sort();
    v.dedup();
    v
}

/// What changed from `old` to `new` (both sorted).
fn diff(old: &[IpAddr], new: &[IpAddr]) -> Change {
    Change {
        added: new
            .iter()
            .filter(|a| old.binary_search(a).is_err())
            .copied()
            .collect(),
        removed: old
            .iter()
            .filter(|a| new.binary_search(a).is_err())
            .copied()
            .collect(),
        ..Change::default()
    }
}

/// Clamps a record TTL (seconds) into `[MIN_TTL, MAX_TTL]`.
pub fn clamp_ttl(ttl_secs: u32) -> Duration {
    Duration::from_secs(u64::from(ttl_secs)).clamp(MIN_TTL, MAX_TTL)
}

/// The retry delay after `failures` consecutive failures (≥ 1): `MIN_TTL * 2^(n-1)`, at most
/// [`MAX_BACKOFF`].
pub fn backoff(failures: u32) -> Duration {
    let factor = 1u32
        .checked_shl(failures.saturating_sub(1))
        .unwrap_or(u32::MAX);
    MIN_TTL.saturating_mul(factor).min(MAX_BACKOFF)
}

/// The state of every watched name. Pure: time is passed in.
#[derive(Debug, Default)]
pub struct Watch {
    names: BTreeMap<String, Entry>,
    /// Failed resolutions by name, since the watch was made; kept when a name is no longer
    /// watched, so that the count never goes down.
    failures_total: BTreeMap<String, u64>,
}

impl Watch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Watches exactly `names`: new ones are due at once, removed ones are forgotten (and so
    /// leave the [`table`](Self::table)). Returns the names added and removed.
    pub fn set_names(&mut self, names: BTreeSet<String>) -> (Vec<String>, Vec<String>) {
        let removed: Vec<String> = self
            .names
            .keys()
            .filter(|n| !names.contains(*n))
            .cloned()
            .collect();
        for n in &removed {
            self.names.remove(n);
        }
        let mut added = Vec::new();
        for n in names {
            if !self.names.contains_key(&n) {
                self.names.insert(n.clone(), Entry::new());
                added.push(n);
            }
        }
        (added, removed)
    }

    /// The names to resolve now: due and not already being resolved.
    pub fn due(&self, now: Instant) -> Vec<String> {
        self.names
            .iter()
            .filter(|(_, e)| !e.in_flight && e.next.is_none_or(|t| t <= now))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// The earliest time a name not being resolved becomes due (`None`: nothing waits).
    pub fn next_due(&self) -> Option<Instant> {
        self.names
            .values()
            .filter(|e| !e.in_flight)
            .filter_map(|e| e.next)
            .min()
    }

    /// Marks `name` as being resolved, so [`due`](Self::due) leaves it out until its result
    /// is recorded.
    pub fn begin(&mut self, name: &str) {
        if let Some(e) = self.names.get_mut(name) {
            e.in_flight = true;
        }
    }

    /// A definitive answer: `answers` (address, TTL in seconds) replace what was known; an
    /// empty answer (no such name, no A/AAAA records) means the name has no addresses now.
    /// The name is resolved again when the smallest TTL runs out, clamped to
    /// `[MIN_TTL, MAX_TTL]` ([`NEGATIVE_TTL`] for an empty answer). `None` if the name is
    /// not watched (removed while its resolution was under way).
    pub fn record_ok(
        &mut self,
        name: &str,
        answers: Vec<(IpAddr, u32)>,
        now: Instant,
    ) -> Option<Change> {
        let e = self.names.get_mut(name)?;
        let ttl = answers
            .iter()
            .map(|(_, t)| *t)
            .min()
            .map_or(NEGATIVE_TTL, clamp_ttl);
        let addrs = sorted(answers.into_iter().map(|(a, _)| a).collect());
        let change = Change {
            recovered_after: e.failures,
            first: e.last_success.is_none(),
            ..diff(&e.addrs, &addrs)
        };
        e.addrs = addrs;
        e.last_success = Some(now);
        e.expires = Some(now + ttl);
        e.next = Some(now + ttl);
        e.last_error = None;
        e.failures = 0;
        e.in_flight = false;
        Some(change)
    }

    /// A failure: the last known addresses stay; the name is retried after
    /// [`backoff`]`(consecutive failures)`. A [`DnsError::Partial`] failure replaces the
    /// answered family's addresses (and retries no later than their clamped TTL) and keeps
    /// the other family's. Returns the number of consecutive failures and what changed
    /// (`None` if the name is not watched).
    pub fn record_err(
        &mut self,
        name: &str,
        err: &DnsError,
        now: Instant,
    ) -> Option<(u32, Change)> {
        let e = self.names.get_mut(name)?;
        e.failures = e.failures.saturating_add(1);
        *self.failures_total.entry(name.to_owned()).or_default() += 1;
        let mut next = now + backoff(e.failures);
        let mut change = Change::default();
        if let DnsError::Partial {
            answered, answers, ..
        } = err
        {
            let mut addrs: Vec<IpAddr> = e
                .addrs
                .iter()
                .filter(|a| Family::of(a) != *answered)
                .copied()
                .collect();
            addrs.extend(
                answers
                    .iter()
                    .map(|(a, _)| *a)
                    .filter(|a| Family::of(a) == *answered),
            );
            let addrs = sorted(addrs);
            change = diff(&e.addrs, &addrs);
            e.addrs = addrs;
            if let Some(ttl) = answers.iter().map(|(_, t)| *t).min() {
                next = next.min(now + clamp_ttl(ttl));
            }
        }
        e.next = Some(next);
        e.last_error = Some(err.to_string());
        e.in_flight = false;
        Some((e.failures, change))
    }

    fn last_error(&self, name: &str) -> Option<String> {
        self.names.get(name).and_then(|e| e.last_error.clone())
    }

    /// The addresses to enforce, per name: sorted, deduplicated, IPv4 and IPv6 together.
    /// Names without a known address are left out (a missing name matches nothing).
    pub fn table(&self) -> BTreeMap<String, Vec<IpAddr>> {
        self.names
            .iter()
            .filter(|(_, e)| !e.addrs.is_empty())
            .map(|(n, e)| (n.clone(), e.addrs.clone()))
            .collect()
    }

    /// Failed resolutions by name since the watch was made, names no longer watched included
    /// (names that never failed are left out).
    pub fn failures_total(&self) -> &BTreeMap<String, u64> {
        &self.failures_total
    }

    /// Every watched name's state, in name order.
    pub fn status(&self) -> Vec<NameStatus> {
        self.names
            .iter()
            .map(|(n, e)| NameStatus {
                name: n.clone(),
                addresses: e.addrs.clone(),
                last_success: e.last_success,
                expires: e.expires,
                next_attempt: if e.in_flight { None } else { e.next },
                last_error: e.last_error.clone(),
                consecutive_failures: e.failures,
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Resolution.

/// One resolution's outcome: addresses with TTLs (seconds), or why there is no definitive
/// answer.
pub type Answer = Result<Vec<(IpAddr, u32)>, DnsError>;

/// Resolves one name's A and AAAA records.
///
/// `Ok(answers)` is definitive: the addresses with their TTLs (seconds), possibly none
/// (NXDOMAIN, or the name has no A/AAAA records). `Err` means no definitive answer was had
/// (timeout, SERVFAIL, REFUSED, network error), and the caller keeps what it knew.
pub trait Lookup: Send + Sync + 'static {
    fn lookup_ip(&self, name: &str) -> impl Future<Output = Answer> + Send;
}

/// The hickory stub resolver: system configuration or one given server.
pub struct HickoryLookup {
    resolver: hickory_resolver::TokioResolver,
}

impl std::fmt::Debug for HickoryLookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HickoryLookup").finish_non_exhaustive()
    }
}

/// Builds the resolver: `/etc/resolv.conf` (and `/etc/hosts`) by default, or only `server`
/// over UDP and TCP when it is given (`--dns-server`). Answers are not cached in the agent,
/// so every refresh asks the server.
pub fn resolver(server: Option<SocketAddr>) -> Result<HickoryLookup, DnsError> {
    use hickory_resolver::{
        Resolver, TokioResolver,
        config::{NameServerConfig, ResolveHosts, ResolverConfig},
        net::runtime::TokioRuntimeProvider,
    };
    let mut builder = match server {
        None => TokioResolver::builder_tokio().map_err(|e| DnsError::Config(e.to_string()))?,
        Some(addr) => {
            let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
            for c in &mut ns.connections {
                c.port = addr.port();
            }
            let mut b = Resolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![ns]),
                TokioRuntimeProvider::default(),
            );
            let opts = b.options_mut();
            opts.use_hosts_file = ResolveHosts::Never;
            // Two tries fit in QUERY_TIMEOUT, so one family's failure is seen as such.
            opts.timeout = Duration::from_secs(4);
            opts.attempts = 2;
            b
        }
    };
    builder.options_mut().cache_size = 0;
    let resolver = builder
        .build()
        .map_err(|e| DnsError::Config(e.to_string()))?;
    Ok(HickoryLookup { resolver })
}

/// `name` as a fully qualified name: policy names are never expanded with search domains.
fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    }
}

/// One family's answer: addresses with their TTLs, each limited by the smallest TTL of the
/// CNAME chain that led to it (the alias can change before the address records expire).
fn family(
    result: Result<hickory_resolver::lookup::Lookup, hickory_resolver::net::NetError>,
) -> Answer {
    use hickory_resolver::net::{DnsError as HDnsError, NetError};
    match result {
        Ok(lookup) => {
            let answers = lookup.answers();
            let chain_ttl = answers
                .iter()
                .filter(|r| r.data.ip_addr().is_none())
                .map(|r| r.ttl)
                .min()
                .unwrap_or(u32::MAX);
            Ok(answers
                .iter()
                .filter_map(|r| r.data.ip_addr().map(|ip| (ip, r.ttl.min(chain_ttl))))
                .collect())
        }
        // NXDOMAIN, or NOERROR without records of this type: the name has none.
        Err(e) if e.is_no_records_found() => Ok(Vec::new()),
        Err(NetError::Dns(HDnsError::ResponseCode(code))) => {
            Err(DnsError::Server(code.to_string()))
        }
        Err(e) => Err(DnsError::Resolve(e.to_string())),
    }
}

/// Joins the A and AAAA outcomes (see [`HickoryLookup::lookup_ip`]).
fn combine(a: Answer, aaaa: Answer) -> Answer {
    match (a, aaaa) {
        (Ok(mut a), Ok(aaaa)) => {
            a.extend(aaaa);
            Ok(a)
        }
        (Ok(answers), Err(error)) => Err(DnsError::Partial {
            answered: Family::A,
            answers,
            error: Box::new(error),
        }),
        (Err(error), Ok(answers)) => Err(DnsError::Partial {
            answered: Family::Aaaa,
            answers,
            error: Box::new(error),
        }),
        (Err(e), Err(_)) => Err(e),
    }
}

impl Lookup for HickoryLookup {
    /// A and AAAA are asked for in parallel. Both answered: `Ok`. One answered and the other
    /// failed: [`DnsError::Partial`] (the answered family is updated, the other keeps its
    /// last known addresses). Both failed: the A query's error.
    fn lookup_ip(&self, name: &str) -> impl Future<Output = Answer> + Send {
        use hickory_resolver::proto::rr::{Name, RecordType};
        let name = fqdn(name);
        async move {
            let parsed = Name::from_utf8(&name).map_err(|e| DnsError::InvalidName {
                name: name.clone(),
                reason: e.to_string(),
            })?;
            let (a, aaaa) = tokio::join!(
                self.resolver.lookup(parsed.clone(), RecordType::A),
                self.resolver.lookup(parsed, RecordType::AAAA),
            );
            combine(family(a), family(aaaa))
        }
    }
}

/// Parses `--dns-server`: `IP` or `IP:PORT` (`[v6]:PORT` for IPv6); the port defaults to 53.
pub fn parse_server(value: &str) -> Result<SocketAddr, DnsError> {
    let bad = || DnsError::BadServer {
        value: value.to_string(),
    };
    let v = value.trim();
    if let Ok(sa) = v.parse::<SocketAddr>() {
        return Ok(sa);
    }
    let bare = v
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(v);
    bare.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| bad())
}

// ---------------------------------------------------------------------------------------------
// The loop.

/// The latest per-name state, shared with whoever reports status. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct DnsStatus(Arc<Mutex<Reported>>);

#[derive(Debug, Default)]
struct Reported {
    names: Vec<NameStatus>,
    failures: BTreeMap<String, u64>,
}

impl DnsStatus {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Reported> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every watched name's state, in name order, as of the resolver's last step.
    pub fn snapshot(&self) -> Vec<NameStatus> {
        self.lock().names.clone()
    }

    /// Failed resolutions by name since the resolver started, as of its last step (see
    /// [`Watch::failures_total`]).
    pub fn failures(&self) -> BTreeMap<String, u64> {
        self.lock().failures.clone()
    }

    fn set(&self, watch: &Watch) {
        let mut r = self.lock();
        r.names = watch.status();
        r.failures.clone_from(watch.failures_total());
    }
}

/// Knobs of [`run`]; the defaults are the documented constants.
#[derive(Debug, Clone)]
pub struct Options {
    pub query_timeout: Duration,
    pub max_concurrent: usize,
    pub poll: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            query_timeout: QUERY_TIMEOUT,
            max_concurrent: MAX_CONCURRENT,
            poll: POLL,
        }
    }
}

/// Where the names come from and the answers go: the agent, or a fake in tests.
trait Target: Send + Sync + 'static {
    fn dns_names(&self) -> impl Future<Output = Result<BTreeSet<String>, AgentError>> + Send;
    fn set_dns(
        &self,
        table: BTreeMap<String, Vec<IpAddr>>,
    ) -> impl Future<Output = Result<(), AgentError>> + Send;
}

impl Target for AgentHandle {
    async fn dns_names(&self) -> Result<BTreeSet<String>, AgentError> {
        AgentHandle::dns_names(self).await
    }

    async fn set_dns(&self, table: BTreeMap<String, Vec<IpAddr>>) -> Result<(), AgentError> {
        AgentHandle::set_dns(self, table).await
    }
}

/// Keeps the agent's `dns:` answers current: every `opts.poll` (or when a name is due) the
/// names are re-read from the loaded policies, due names are resolved (at most
/// `opts.max_concurrent` at once, each within `opts.query_timeout`), and a changed table is
/// installed with [`AgentHandle::set_dns`]. `status` receives every name's state after each
/// step. Returns only when the agent is gone ([`AgentError::OwnerStopped`]).
pub async fn run(
    agent: AgentHandle,
    lookup: impl Lookup,
    status: DnsStatus,
    opts: Options,
) -> Result<(), AgentError> {
    run_with(agent, lookup, status, opts).await
}

type Outcome = (String, Answer);

async fn run_with<T: Target, L: Lookup>(
    target: T,
    lookup: L,
    status: DnsStatus,
    opts: Options,
) -> Result<(), AgentError> {
    use tokio::time::Instant as TokioInstant;
    let now = || TokioInstant::now().into_std();
    let lookup = Arc::new(lookup);
    let max_concurrent = opts.max_concurrent.max(1);
    let mut watch = Watch::new();
    let mut inflight: tokio::task::JoinSet<Outcome> = tokio::task::JoinSet::new();
    let mut inflight_names: HashMap<tokio::task::Id, String> = HashMap::new();
    // The table the agent has; and the last one it refused, with when.
    let mut published: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
    let mut refused: Option<(BTreeMap<String, Vec<IpAddr>>, Instant)> = None;

    loop {
        match target.dns_names().await {
            Ok(names) => {
                let (added, removed) = watch.set_names(names);
                for n in &added {
                    debug!(name = %n, "dns: watching name");
                }
                for n in &removed {
                    info!(name = %n, "dns: name no longer used by any policy");
                }
            }
            Err(AgentError::OwnerStopped) => return Err(AgentError::OwnerStopped),
            // The names stay as they were; asked again at the next step.
            Err(e) => warn!(error = %e, "dns: reading the names in use failed"),
        }
        let t = now();

        for name in watch.due(t) {
            if inflight.len() >= max_concurrent {
                break;
            }
            watch.begin(&name);
            let lookup = lookup.clone();
            let timeout = opts.query_timeout;
            let task_name = name.clone();
            let handle = inflight.spawn(async move {
                let r = match tokio::time::timeout(timeout, lookup.lookup_ip(&task_name)).await {
                    Ok(r) => r,
                    Err(_) => Err(DnsError::Timeout(timeout)),
                };
                (task_name, r)
            });
            inflight_names.insert(handle.id(), name);
        }

        let table = watch.table();
        let skip = refused
            .as_ref()
            .is_some_and(|(tb, at)| *tb == table && t < *at + PUBLISH_RETRY);
        if table != published && !skip {
            match target.set_dns(table.clone()).await {
                Ok(()) => {
                    published = table;
                    refused = None;
                }
                Err(AgentError::OwnerStopped) => return Err(AgentError::OwnerStopped),
                Err(e) => {
                    let again = refused.as_ref().is_some_and(|(tb, _)| *tb == table);
                    if again {
                        debug!(error = %e, "dns: installing the new answers failed again");
                    } else {
                        error!(error = %e, "dns: installing the new answers failed; the previous ones stay enforced");
                    }
                    refused = Some((table, t));
                }
            }
        }
        status.set(&watch);

        let wake = watch
            .next_due()
            .map_or(t + opts.poll, |d| d.min(t + opts.poll));
        tokio::select! {
            Some(joined) = inflight.join_next_with_id(), if !inflight.is_empty() => {
                let t = now();
                match joined {
                    Ok((id, (name, result))) => {
                        inflight_names.remove(&id);
                        record(&mut watch, &name, result, t);
                    }
                    Err(e) => {
                        if let Some(name) = inflight_names.remove(&e.id()) {
                            let err = DnsError::Resolve(format!("resolver task failed: {e}"));
                            record(&mut watch, &name, Err(err), t);
                        }
                    }
                }
            }
            _ = tokio::time::sleep_until(TokioInstant::from_std(wake)) => {}
        }
    }
}

/// Records one outcome in `watch` and logs it.
fn record(watch: &mut Watch, name: &str, result: Answer, now: Instant) {
    match result {
        Ok(answers) => {
            let Some(c) = watch.record_ok(name, answers, now) else {
                return;
            };
            if c.recovered_after > 0 {
                info!(
                    name,
                    failures = c.recovered_after,
                    "dns: name resolves again"
                );
            }
            if c.first || !c.added.is_empty() || !c.removed.is_empty() {
                info!(name, added = ?c.added, removed = ?c.removed, "dns: addresses changed");
            }
        }
        Err(err) => {
            let previous = watch.last_error(name);
            let Some((failures, c)) = watch.record_err(name, &err, now) else {
                return;
            };
            if !c.added.is_empty() || !c.removed.is_empty() {
                info!(name, added = ?c.added, removed = ?c.removed, "dns: addresses changed");
            }
            // Say so on the first failure, when the reason changes, and every 10th retry;
            // the status always has the latest.
            let message = err.to_string();
            if failures == 1 || previous.as_deref() != Some(message.as_str()) || failures % 10 == 0
            {
                warn!(name, error = %err, failures, retry_in = ?backoff(failures), "dns: resolution failed; keeping the last known addresses");
            } else {
                debug!(name, error = %err, failures, "dns: resolution failed again");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4(d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, d))
    }

    fn v6(d: u16) -> IpAddr {
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, d))
    }

    fn names(ns: &[&str]) -> BTreeSet<String> {
        ns.iter().map(|s| s.to_string()).collect()
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn timeout() -> DnsError {
        DnsError::Timeout(QUERY_TIMEOUT)
    }

    /// A watch over `name` with its first answer recorded at `t0`.
    fn watch_with(name: &str, answers: Vec<(IpAddr, u32)>, t0: Instant) -> Watch {
        let mut w = Watch::new();
        w.set_names(names(&[name]));
        assert_eq!(w.due(t0), vec![name.to_string()]);
        w.begin(name);
        w.record_ok(name, answers, t0).unwrap();
        w
    }

    #[test]
    fn ttl_is_clamped_at_both_ends() {
        assert_eq!(clamp_ttl(0), MIN_TTL);
        assert_eq!(clamp_ttl(1), MIN_TTL);
        assert_eq!(clamp_ttl(300), secs(300));
        assert_eq!(clamp_ttl(86_400), MAX_TTL);
        assert_eq!(clamp_ttl(u32::MAX), MAX_TTL);

        let t0 = Instant::now();
        let w = watch_with("short.example", vec![(v4(1), 0)], t0);
        assert!(w.due(t0 + MIN_TTL - Duration::from_millis(1)).is_empty());
        assert_eq!(w.due(t0 + MIN_TTL).len(), 1);

        let w = watch_with("long.example", vec![(v4(1), 7 * 86_400)], t0);
        assert!(w.due(t0 + MAX_TTL - secs(1)).is_empty());
        assert_eq!(w.next_due(), Some(t0 + MAX_TTL));
    }

    #[test]
    fn refreshes_when_the_smallest_ttl_expires() {
        let t0 = Instant::now();
        let mut w = watch_with("a.example", vec![(v4(1), 60), (v6(1), 30)], t0);
        assert!(w.due(t0 + secs(29)).is_empty());
        assert_eq!(w.due(t0 + secs(30)), vec!["a.example".to_string()]);
        let st = &w.status()[0];
        assert_eq!(st.expires, Some(t0 + secs(30)));
        assert!(!st.is_stale(t0 + secs(29)));

        // While it is being resolved it is not due again.
        w.begin("a.example");
        assert!(w.due(t0 + secs(31)).is_empty());
        assert_eq!(w.next_due(), None);
        assert_eq!(w.status()[0].next_attempt, None);
        w.record_ok("a.example", vec![(v4(1), 60), (v6(1), 60)], t0 + secs(31))
            .unwrap();
        assert_eq!(w.next_due(), Some(t0 + secs(91)));
    }

    #[test]
    fn addresses_no_longer_returned_are_removed() {
        let t0 = Instant::now();
        let mut w = watch_with("a.example", vec![(v4(1), 60), (v4(2), 60)], t0);
        let c = w
            .record_ok("a.example", vec![(v4(2), 60), (v4(3), 60)], t0 + secs(60))
            .unwrap();
        assert_eq!(c.added, vec![v4(3)]);
        assert_eq!(c.removed, vec![v4(1)]);
        assert!(!c.first);
        assert_eq!(w.table()["a.example"], vec![v4(2), v4(3)]);
    }

    #[test]
    fn failures_are_counted_per_name_for_good() {
        let t0 = Instant::now();
        let mut w = watch_with("a.example", vec![(v4(1), 10)], t0);
        w.set_names(names(&["a.example", "b.example"]));
        assert!(w.failures_total().is_empty());
        w.record_err("a.example", &timeout(), t0).unwrap();
        w.record_err("a.example", &timeout(), t0).unwrap();
        w.record_err("b.example", &timeout(), t0).unwrap();
        // Not watched: nothing to count.
        assert!(w.record_err("c.example", &timeout(), t0).is_none());
        // A good answer ends the streak, not the count; a removed name keeps its count.
        w.record_ok("a.example", vec![(v4(2), 10)], t0).unwrap();
        w.set_names(names(&["a.example"]));
        assert_eq!(
            w.failures_total(),
            &BTreeMap::from([("a.example".to_owned(), 2), ("b.example".to_owned(), 1)])
        );
    }

    #[test]
    fn failure_keeps_the_last_known_addresses_and_backs_off() {
        let t0 = Instant::now();
        let mut w = watch_with("a.example", vec![(v4(1), 10)], t0);
        let mut t = t0 + secs(10);
        let mut delays = Vec::new();
        for n in 1..=6 {
            assert_eq!(w.due(t), vec!["a.example".to_string()]);
            w.begin("a.example");
            let (failures, change) = w.record_err("a.example", &timeout(), t).unwrap();
            assert_eq!(failures, n);
            assert_eq!(change, Change::default());
            let next = w.next_due().unwrap();
            delays.push(next - t);
            t = next;
            assert_eq!(w.table()["a.example"], vec![v4(1)]);
        }
        assert_eq!(
            delays,
            vec![secs(5), secs(10), secs(20), secs(40), secs(60), secs(60)]
        );
        let st = &w.status()[0];
        assert_eq!(st.consecutive_failures, 6);
        assert_eq!(st.last_error.as_deref(), Some("timed out after 10s"));
        assert!(st.is_stale(t));
        assert_eq!(st.last_success, Some(t0));

        // The next good answer clears the failure state.
        let c = w.record_ok("a.example", vec![(v4(2), 10)], t).unwrap();
        assert_eq!(c.recovered_after, 6);
        let st = &w.status()[0];
        assert_eq!(st.consecutive_failures, 0);
        assert_eq!(st.last_error, None);
        assert_eq!(w.table()["a.example"], vec![v4(2)]);
        assert_eq!(backoff(1000), MAX_BACKOFF);
    }

    #[test]
    fn one_family_failing_updates_the_other_and_keeps_its_own() {
        let t0 = Instant::now();
        let mut w = watch_with("a.example", vec![(v4(1), 300), (v6(1), 300)], t0);
        let t = t0 + secs(300);
        // A answered with a new address, AAAA timed out.
        let err = DnsError::Partial {
            answered: Family::A,
            answers: vec![(v4(2), 20)],
            error: Box::new(timeout()),
        };
        assert_eq!(err.to_string(), "AAAA lookup failed: timed out after 10s");
        let (failures, change) = w.record_err("a.example", &err, t).unwrap();
        assert_eq!(failures, 1);
        assert_eq!(change.added, vec![v4(2)]);
        assert_eq!(change.removed, vec![v4(1)]);
        assert_eq!(w.table()["a.example"], vec![v4(2), v6(1)]);
        assert_eq!(w.next_due(), Some(t + backoff(1)));
        // Many failures later the retry still comes no later than the answered TTL.
        for _ in 0..5 {
            w.record_err("a.example", &timeout(), t);
        }
        w.record_err("a.example", &err, t).unwrap();
        assert_eq!(w.next_due(), Some(t + secs(20)));
        assert_eq!(w.status()[0].consecutive_failures, 7);

        // AAAA answered "none", A failed: the IPv6 address goes, the IPv4 one stays.
        let err = DnsError::Partial {
            answered: Family::Aaaa,
            answers: Vec::new(),
            error: Box::new(DnsError::Server("SERVFAIL".into())),
        };
        w.record_err("a.example", &err, t).unwrap();
        assert_eq!(w.table()["a.example"], vec![v4(2)]);
    }

    #[test]
    fn a_and_aaaa_outcomes_combine() {
        let fail = || Err(timeout());
        assert_eq!(
            combine(Ok(vec![(v4(1), 5)]), Ok(vec![(v6(1), 6)])),
            Ok(vec![(v4(1), 5), (v6(1), 6)])
        );
        assert_eq!(combine(Ok(Vec::new()), Ok(Vec::new())), Ok(Vec::new()));
        assert_eq!(
            combine(Ok(vec![(v4(1), 5)]), fail()),
            Err(DnsError::Partial {
                answered: Family::A,
                answers: vec![(v4(1), 5)],
                error: Box::new(timeout()),
            })
        );
        assert!(matches!(
            combine(fail(), Ok(Vec::new())),
            Err(DnsError::Partial {
                answered: Family::Aaaa,
                ..
            })
        ));
        assert_eq!(
            combine(Err(DnsError::Server("REFUSED".into())), fail()),
            Err(DnsError::Server("REFUSED".into()))
        );
    }

    #[test]
    fn a_failure_before_any_answer_leaves_the_name_out() {
        let t0 = Instant::now();
        let mut w = Watch::new();
        w.set_names(names(&["a.example"]));
        w.record_err("a.example", &DnsError::Server("SERVFAIL".into()), t0);
        assert!(w.table().is_empty());
        assert_eq!(w.status()[0].last_success, None);
        assert!(!w.status()[0].is_stale(t0));
    }

    #[test]
    fn no_such_name_empties_the_set_unlike_a_failure() {
        let t0 = Instant::now();
        let mut w = watch_with("gone.example", vec![(v4(1), 5), (v6(1), 5)], t0);
        // A timeout keeps the addresses...
        w.record_err("gone.example", &timeout(), t0 + secs(5));
        assert_eq!(w.table()["gone.example"], vec![v4(1), v6(1)]);
        // ...an authoritative "no such name" (an empty answer) removes them.
        let c = w
            .record_ok("gone.example", Vec::new(), t0 + secs(10))
            .unwrap();
        assert_eq!(c.removed, vec![v4(1), v6(1)]);
        assert!(!w.table().contains_key("gone.example"));
        assert_eq!(w.next_due(), Some(t0 + secs(10) + NEGATIVE_TTL));
        assert_eq!(w.status()[0].consecutive_failures, 0);
    }

    #[test]
    fn new_names_are_due_at_once_and_removed_names_dropped() {
        let t0 = Instant::now();
        let mut w = watch_with("a.example", vec![(v4(1), 300)], t0);
        let (added, removed) = w.set_names(names(&["a.example", "b.example"]));
        assert_eq!(added, vec!["b.example".to_string()]);
        assert!(removed.is_empty());
        assert_eq!(w.due(t0), vec!["b.example".to_string()]);
        assert_eq!(w.next_due(), Some(t0 + secs(300)));

        w.begin("b.example");
        let (added, removed) = w.set_names(names(&["b.example"]));
        assert!(added.is_empty());
        assert_eq!(removed, vec!["a.example".to_string()]);
        assert!(w.table().is_empty());
        assert_eq!(w.status().len(), 1);
        // An answer for a name no longer watched is dropped.
        assert_eq!(w.record_ok("a.example", vec![(v4(9), 60)], t0), None);
        assert_eq!(w.record_err("a.example", &timeout(), t0), None);
        assert!(!w.table().contains_key("a.example"));
    }

    #[test]
    fn table_is_sorted_and_deduplicated_with_both_families() {
        let t0 = Instant::now();
        let mut w = Watch::new();
        w.set_names(names(&["z.example", "a.example", "empty.example"]));
        w.record_ok(
            "z.example",
            vec![
                (v6(2), 60),
                (v4(2), 60),
                (v6(1), 60),
                (v4(2), 30),
                (v4(1), 60),
            ],
            t0,
        )
        .unwrap();
        w.record_ok("a.example", vec![(v6(1), 60)], t0).unwrap();
        w.record_ok("empty.example", Vec::new(), t0).unwrap();
        let table = w.table();
        assert_eq!(
            table.keys().collect::<Vec<_>>(),
            vec!["a.example", "z.example"]
        );
        assert_eq!(table["z.example"], vec![v4(1), v4(2), v6(1), v6(2)]);
        assert_eq!(table["a.example"], vec![v6(1)]);
        // The duplicate's smaller TTL counts.
        assert_eq!(w.status()[2].expires, Some(t0 + secs(30)));
    }

    #[test]
    fn dns_server_flag_accepts_ip_or_ip_port() {
        assert_eq!(
            parse_server("192.0.2.53").unwrap(),
            "192.0.2.53:53".parse().unwrap()
        );
        assert_eq!(
            parse_server("192.0.2.53:5353").unwrap(),
            "192.0.2.53:5353".parse().unwrap()
        );
        assert_eq!(
            parse_server("2001:db8::53").unwrap(),
            "[2001:db8::53]:53".parse().unwrap()
        );
        assert_eq!(
            parse_server("[2001:db8::53]").unwrap(),
            "[2001:db8::53]:53".parse().unwrap()
        );
        assert_eq!(
            parse_server("[2001:db8::53]:5353").unwrap(),
            "[2001:db8::53]:5353".parse().unwrap()
        );
        assert!(parse_server("dns.example").is_err());
        assert!(parse_server("192.0.2.53:x").is_err());
        assert!(parse_server("").is_err());
    }

    #[test]
    fn names_are_queried_fully_qualified() {
        assert_eq!(fqdn("a.example"), "a.example.");
        assert_eq!(fqdn("a.example."), "a.example.");
    }

    /// A tiny DNS server on the loopback (UDP), to check the hickory lookup's reading of
    /// answers, CNAME chains, NXDOMAIN, SERVFAIL and a port given with `--dns-server`.
    #[tokio::test]
    async fn hickory_lookup_against_a_loopback_server() {
        use hickory_resolver::proto::{
            op::{Message, OpCode, ResponseCode},
            rr::{
                Name, RData, Record, RecordType,
                rdata::{A, AAAA, CNAME},
            },
        };
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        let queries = Arc::new(Mutex::new(Vec::<String>::new()));
        let server = tokio::spawn({
            let queries = queries.clone();
            async move {
                let mut buf = vec![0u8; 4096];
                loop {
                    let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
                        return;
                    };
                    let Ok(req) = Message::from_vec(&buf[..n]) else {
                        continue;
                    };
                    let Some(q) = req.queries.first().cloned() else {
                        continue;
                    };
                    let qname = q.name().to_ascii().to_lowercase();
                    let qtype = q.query_type();
                    queries.lock().unwrap().push(format!("{qname} {qtype}"));
                    let mut resp = Message::response(req.metadata.id, OpCode::Query);
                    resp.metadata.recursion_available = true;
                    resp.metadata.recursion_desired = req.metadata.recursion_desired;
                    resp.add_query(q.clone());
                    let name = |s: &str| Name::from_ascii(s).unwrap();
                    let a = |s: &str, ttl, ip: [u8; 4]| {
                        Record::from_rdata(name(s), ttl, RData::A(A(ip.into())))
                    };
                    match (qname.as_str(), qtype) {
                        ("a.test.", RecordType::A) => {
                            resp.add_answer(a("a.test.", 300, [192, 0, 2, 1]));
                            resp.add_answer(a("a.test.", 100, [192, 0, 2, 2]));
                        }
                        ("a.test.", RecordType::AAAA) => {
                            let ip = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
                            resp.add_answer(Record::from_rdata(
                                name("a.test."),
                                200,
                                RData::AAAA(AAAA(ip)),
                            ));
                        }
                        ("alias.test.", RecordType::A) => {
                            resp.add_answer(Record::from_rdata(
                                name("alias.test."),
                                20,
                                RData::CNAME(CNAME(name("a.test."))),
                            ));
                            resp.add_answer(a("a.test.", 300, [192, 0, 2, 1]));
                        }
                        // NOERROR without records: the name exists, no address of the type.
                        ("alias.test.", RecordType::AAAA) => {}
                        ("half.test.", RecordType::A) => {
                            resp.add_answer(a("half.test.", 60, [192, 0, 2, 3]));
                        }
                        ("fail.test." | "half.test.", _) => {
                            resp.metadata.response_code = ResponseCode::ServFail
                        }
                        _ => resp.metadata.response_code = ResponseCode::NXDomain,
                    }
                    let _ = sock.send_to(&resp.to_vec().unwrap(), peer).await;
                }
            }
        });

        let lookup = resolver(Some(addr)).unwrap();
        let mut got = lookup.lookup_ip("a.test").await.unwrap();
        got.sort();
        assert_eq!(
            got,
            vec![(v4(1), 300), (v4(2), 100), (v6(1), 200)],
            "every A and AAAA answer, with its TTL"
        );
        // Not cached: a refresh asks the server again.
        lookup.lookup_ip("a.test").await.unwrap();
        let asked_a = |qs: &Vec<String>| qs.iter().filter(|q| *q == "a.test. A").count();
        assert_eq!(asked_a(&queries.lock().unwrap()), 2);

        // A CNAME's shorter TTL bounds the address's.
        assert_eq!(
            lookup.lookup_ip("alias.test").await.unwrap(),
            vec![(v4(1), 20)]
        );
        // NXDOMAIN: definitive and empty.
        assert_eq!(lookup.lookup_ip("nx.test").await.unwrap(), Vec::new());
        // SERVFAIL: a failure, so the last known addresses stay.
        assert_eq!(
            lookup.lookup_ip("fail.test").await,
            Err(DnsError::Server("Server Failure".into()))
        );
        // A answered, AAAA failing: a partial answer.
        assert_eq!(
            lookup.lookup_ip("half.test").await,
            Err(DnsError::Partial {
                answered: Family::A,
                answers: vec![(v4(3), 60)],
                error: Box::new(DnsError::Server("Server Failure".into())),
            })
        );
        server.abort();
    }

    // --- the loop, with a fake resolver and a fake agent, on tokio's paused clock ---

    type Table = BTreeMap<String, Vec<IpAddr>>;

    #[derive(Clone, Default)]
    struct FakeLookup {
        answers: Arc<Mutex<HashMap<String, Answer>>>,
        queries: Arc<Mutex<Vec<String>>>,
        /// Names whose lookup never finishes.
        hang: Arc<Mutex<BTreeSet<String>>>,
    }

    impl FakeLookup {
        fn answer(&self, name: &str, r: Answer) {
            self.answers.lock().unwrap().insert(name.to_string(), r);
        }

        fn count(&self, name: &str) -> usize {
            self.queries
                .lock()
                .unwrap()
                .iter()
                .filter(|q| *q == name)
                .count()
        }
    }

    impl Lookup for FakeLookup {
        fn lookup_ip(
            &self,
            name: &str,
        ) -> impl Future<Output = Result<Vec<(IpAddr, u32)>, DnsError>> + Send {
            self.queries.lock().unwrap().push(name.to_string());
            let hang = self.hang.lock().unwrap().contains(name);
            let r = self
                .answers
                .lock()
                .unwrap()
                .get(name)
                .cloned()
                .unwrap_or(Ok(Vec::new()));
            async move {
                if hang {
                    std::future::pending::<()>().await;
                }
                r
            }
        }
    }

    #[derive(Clone, Default)]
    struct FakeAgent {
        names: Arc<Mutex<BTreeSet<String>>>,
        installed: Arc<Mutex<Vec<Table>>>,
    }

    impl Target for FakeAgent {
        async fn dns_names(&self) -> Result<BTreeSet<String>, AgentError> {
            Ok(self.names.lock().unwrap().clone())
        }

        async fn set_dns(&self, table: BTreeMap<String, Vec<IpAddr>>) -> Result<(), AgentError> {
            self.installed.lock().unwrap().push(table);
            Ok(())
        }
    }

    impl FakeAgent {
        fn last(&self) -> BTreeMap<String, Vec<IpAddr>> {
            self.installed
                .lock()
                .unwrap()
                .last()
                .cloned()
                .unwrap_or_default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_loop_resolves_refreshes_and_survives_failures() {
        let lookup = FakeLookup::default();
        let agent = FakeAgent::default();
        let status = DnsStatus::new();
        lookup.answer("a.example", Ok(vec![(v4(1), 60), (v6(1), 60)]));
        lookup.answer("b.example", Err(DnsError::Server("SERVFAIL".into())));
        lookup.hang.lock().unwrap().insert("slow.example".into());
        *agent.names.lock().unwrap() = names(&["a.example", "b.example", "slow.example"]);

        let task = tokio::spawn(run_with(
            agent.clone(),
            lookup.clone(),
            status.clone(),
            Options::default(),
        ));
        tokio::time::sleep(Duration::from_millis(100)).await;
        // A hanging name and a failing one do not hold the good one back.
        assert_eq!(agent.last()["a.example"], vec![v4(1), v6(1)]);
        assert!(!agent.last().contains_key("b.example"));
        let snap = status.snapshot();
        assert_eq!(snap.len(), 3);
        assert_eq!(
            snap[1].last_error.as_deref(),
            Some("server answered SERVFAIL")
        );

        // The slow name times out, then is retried with backoff.
        tokio::time::sleep(QUERY_TIMEOUT).await;
        let slow = status.snapshot()[2].clone();
        assert_eq!(slow.consecutive_failures, 1);
        assert_eq!(slow.last_error.as_deref(), Some("timed out after 10s"));

        // At expiry the name is asked again; the new answer replaces the old one.
        lookup.answer("a.example", Ok(vec![(v4(2), 60)]));
        assert_eq!(lookup.count("a.example"), 1);
        tokio::time::sleep(secs(51)).await;
        assert_eq!(lookup.count("a.example"), 2);
        assert_eq!(agent.last()["a.example"], vec![v4(2)]);

        // A failure keeps it; a removed name leaves the table.
        lookup.answer("a.example", Err(timeout()));
        tokio::time::sleep(secs(61)).await;
        assert_eq!(agent.last()["a.example"], vec![v4(2)]);
        lookup.answer("b.example", Ok(vec![(v4(7), 60)]));
        tokio::time::sleep(MAX_BACKOFF).await;
        assert_eq!(agent.last()["b.example"], vec![v4(7)]);
        *agent.names.lock().unwrap() = names(&["b.example"]);
        tokio::time::sleep(secs(2)).await;
        assert_eq!(agent.last().keys().collect::<Vec<_>>(), vec!["b.example"]);
        // Failures stay counted after a name recovers or leaves the policies.
        let failures = status.failures();
        assert!(failures["b.example"] >= 1, "{failures:?}");
        assert!(failures["a.example"] >= 1, "{failures:?}");
        assert!(failures["slow.example"] >= 1, "{failures:?}");
        // Unchanged tables are not installed again.
        let n = agent.installed.lock().unwrap().len();
        tokio::time::sleep(secs(600)).await;
        assert_eq!(agent.installed.lock().unwrap().len(), n);
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn the_loop_bounds_concurrent_lookups() {
        let lookup = FakeLookup::default();
        let agent = FakeAgent::default();
        let all: Vec<String> = (0..10).map(|i| format!("n{i}.example")).collect();
        for n in &all {
            lookup.hang.lock().unwrap().insert(n.clone());
        }
        *agent.names.lock().unwrap() = all.iter().cloned().collect();
        let opts = Options {
            max_concurrent: 3,
            ..Options::default()
        };
        let task = tokio::spawn(run_with(agent, lookup.clone(), DnsStatus::new(), opts));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(lookup.queries.lock().unwrap().len(), 3);
        tokio::time::sleep(QUERY_TIMEOUT).await;
        assert_eq!(lookup.queries.lock().unwrap().len(), 6);
        task.abort();
    }
}
