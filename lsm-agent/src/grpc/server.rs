//! The `tetragon.FineGuidanceSensors` gRPC server: event streaming with Tetragon's filter
//! semantics, and policy management delegated to a [`PolicyApi`].

use std::{
    future::Future,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use regex::Regex;
use tokio::{
    net::{TcpListener, UnixListener},
    sync::{broadcast, mpsc, watch},
};
use tokio_stream::{
    Stream, StreamExt as _,
    wrappers::{ReceiverStream, TcpListenerStream, UnixListenerStream},
};
use tonic::{Request, Response, Status};
use tracing::{debug, info, warn};

use super::fieldfilter::{FieldFilterError, FieldFilters};
use super::proto::tetragon::{
    AddTracingPolicyRequest, AddTracingPolicyResponse, ConfigureTracingPolicyRequest,
    ConfigureTracingPolicyResponse, DeleteTracingPolicyRequest, DeleteTracingPolicyResponse,
    DisableTracingPolicyRequest, DisableTracingPolicyResponse, EnableTracingPolicyRequest,
    EnableTracingPolicyResponse, EventType, Filter, GetEventsRequest, GetEventsResponse,
    GetHealthStatusRequest, GetHealthStatusResponse, GetInfoRequest, GetInfoResponse,
    GetVersionRequest, GetVersionResponse, HealthStatus, HealthStatusType,
    ListTracingPoliciesRequest, ListTracingPoliciesResponse, Process, TracingPolicyMode,
    fine_guidance_sensors_server::{FineGuidanceSensors, FineGuidanceSensorsServer},
    get_events_response::Event,
};
use super::{policy::PolicyApi, tls::ServerTls};

/// Tetragon's default port, appended when an address has none.
pub const DEFAULT_PORT: u16 = 54321;

/// Per-client queue between the bus and the HTTP/2 stream. Small on purpose: a client that
/// cannot keep up should lag on the bus (and lose events there, counted) rather than buffer.
const CLIENT_QUEUE: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    #[error("invalid server address {0:?}")]
    InvalidAddress(String),
    #[error("resolving {addr}: {source}")]
    Resolve { addr: String, source: io::Error },
    #[error("binding {addr}: {source}")]
    Bind { addr: String, source: io::Error },
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("TLS is for TCP listeners; {0} is a unix socket")]
    TlsOnUnixSocket(String),
}

/// Fan-out of events to every `GetEvents` client. Publishing never blocks: each subscriber
/// reads the shared ring at its own pace and skips what it missed once it falls more than
/// `capacity` events behind.
#[derive(Clone, Debug)]
pub struct EventBus {
    tx: broadcast::Sender<Arc<GetEventsResponse>>,
    lost: Arc<AtomicU64>,
}

impl EventBus {
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Self {
            tx,
            lost: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Returns how many subscribers will see the event (0 when nobody listens, which is fine).
    pub fn publish(&self, ev: impl Into<Arc<GetEventsResponse>>) -> usize {
        self.tx.send(ev.into()).unwrap_or(0)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<GetEventsResponse>> {
        self.tx.subscribe()
    }

    pub fn subscriber_count(&self) -> usize {
        self.tx.receiver_count()
    }

    /// Events that some `GetEvents` client missed because it lagged, summed over clients.
    pub fn lost_events(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }
}

/// Filter fields of a `Filter`, compiled once per `GetEvents` call.
#[derive(Debug, Default)]
struct CompiledFilter {
    binary: Vec<Regex>,
    namespace: Vec<String>,
    health_check: Option<bool>,
    pid: Vec<u32>,
    event_set: Vec<i32>,
    pod: Vec<Regex>,
    arguments: Vec<Regex>,
    policy_names: Vec<String>,
    parent_binary: Vec<Regex>,
    parent_arguments: Vec<Regex>,
    container_id: Vec<Regex>,
    in_init_tree: Option<bool>,
    ancestor_binary: Vec<Regex>,
    container_name: Vec<Regex>,
    namespace_regex: Vec<Regex>,
}

fn compile_regexes(field: &str, patterns: &[String]) -> Result<Vec<Regex>, Status> {
    patterns
        .iter()
        .map(|p| {
            Regex::new(p)
                .map_err(|e| Status::invalid_argument(format!("invalid {field} {p:?}: {e}")))
        })
        .collect()
}

impl CompiledFilter {
    fn new(f: &Filter) -> Result<Self, Status> {
        // Silently ignoring these would stream events the client asked not to see.
        let unsupported = [
            ("pid_set", !f.pid_set.is_empty()),
            ("labels", !f.labels.is_empty()),
            ("capabilities", f.capabilities.is_some()),
            ("cel_expression", !f.cel_expression.is_empty()),
        ];
        if let Some((name, _)) = unsupported.iter().find(|(_, set)| *set) {
            return Err(Status::unimplemented(format!(
                "filter field {name} is not supported"
            )));
        }
        Ok(Self {
            binary: compile_regexes("binary_regex", &f.binary_regex)?,
            namespace: f.namespace.clone(),
            health_check: f.health_check,
            pid: f.pid.clone(),
            event_set: f.event_set.clone(),
            pod: compile_regexes("pod_regex", &f.pod_regex)?,
            arguments: compile_regexes("arguments_regex", &f.arguments_regex)?,
            policy_names: f.policy_names.clone(),
            parent_binary: compile_regexes("parent_binary_regex", &f.parent_binary_regex)?,
            parent_arguments: compile_regexes("parent_arguments_regex", &f.parent_arguments_regex)?,
            container_id: compile_regexes("container_id", &f.container_id)?,
            in_init_tree: f.in_init_tree,
            ancestor_binary: compile_regexes("ancestor_binary_regex", &f.ancestor_binary_regex)?,
            container_name: compile_regexes("container_name_regex", &f.container_name_regex)?,
            namespace_regex: compile_regexes("namespace_regex", &f.namespace_regex)?,
        })
    }

    /// Set fields are ANDed, values within a field ORed; an empty filter matches everything.
    fn matches(&self, ev: &GetEventsResponse) -> bool {
        let process = event_process(ev);
        let any = |res: &[Regex], s: Option<&str>| {
            res.is_empty() || s.is_some_and(|s| res.iter().any(|r| r.is_match(s)))
        };
        let pod = process.and_then(|p| p.pod.as_ref());
        let parent = event_parent(ev);
        (self.event_set.is_empty() || self.event_set.contains(&(event_type(ev) as i32)))
            && any(&self.binary, process.map(|p| p.binary.as_str()))
            && (self.namespace.is_empty()
                || process.is_some_and(|_| {
                    let ns = pod.map_or("", |p| p.namespace.as_str());
                    self.namespace.iter().any(|n| n == ns)
                }))
            && (self.pid.is_empty()
                || process
                    .and_then(|p| p.pid)
                    .is_some_and(|pid| self.pid.contains(&pid)))
            && any(&self.pod, pod.map(|p| p.name.as_str()))
            && any(&self.arguments, process.map(|p| p.arguments.as_str()))
            && (self.policy_names.is_empty()
                || event_policy_name(ev).is_some_and(|n| self.policy_names.iter().any(|p| p == n)))
            && any(&self.parent_binary, parent.map(|p| p.binary.as_str()))
            && any(&self.parent_arguments, parent.map(|p| p.arguments.as_str()))
            && any(&self.container_id, process.map(|p| p.docker.as_str()))
            && self
                .in_init_tree
                .is_none_or(|want| process.and_then(|p| p.in_init_tree).unwrap_or(false) == want)
            && (self.ancestor_binary.is_empty()
                || event_ancestors(ev)
                    .iter()
                    .any(|a| self.ancestor_binary.iter().any(|r| r.is_match(&a.binary))))
            && any(
                &self.container_name,
                pod.and_then(|p| p.container.as_ref())
                    .map(|c| c.name.as_str()),
            )
            && any(&self.namespace_regex, pod.map(|p| p.namespace.as_str()))
            // Tetragon's heuristic: the process or its parent runs in a container that may be an
            // exec probe (always false without Kubernetes).
            && self.health_check.is_none_or(|want| {
                let probe = |p: Option<&Process>| {
                    p.and_then(|p| p.pod.as_ref())
                        .and_then(|p| p.container.as_ref())
                        .is_some_and(|c| c.maybe_exec_probe)
                };
                (probe(process) || probe(parent)) == want
            })
    }
}

/// A `GetEventsRequest` ready to apply: allow list (empty = everything) minus deny list.
#[derive(Debug, Default)]
pub struct EventFilter {
    allow: Vec<CompiledFilter>,
    deny: Vec<CompiledFilter>,
    /// `field_filters`: what is left of the events that match.
    fields: FieldFilters,
}

impl EventFilter {
    /// Fails with `InvalidArgument`/`Unimplemented` for bad regexes or unsupported fields.
    pub fn new(req: &GetEventsRequest) -> Result<Self, Status> {
        let fields = FieldFilters::new(&req.field_filters).map_err(|e| match e {
            FieldFilterError::Descriptors(_) => Status::internal(e.to_string()),
            _ => Status::invalid_argument(e.to_string()),
        })?;
        Ok(Self {
            fields,
            allow: req
                .allow_list
                .iter()
                .map(CompiledFilter::new)
                .collect::<Result<_, _>>()?,
            deny: req
                .deny_list
                .iter()
                .map(CompiledFilter::new)
                .collect::<Result<_, _>>()?,
        })
    }

    pub fn matches(&self, ev: &GetEventsResponse) -> bool {
        (self.allow.is_empty() || self.allow.iter().any(|f| f.matches(ev)))
            && !self.deny.iter().any(|f| f.matches(ev))
    }

    /// A matching event as the client asked to see it: masked by the `field_filters`.
    pub fn project(&self, ev: &GetEventsResponse) -> Result<GetEventsResponse, Status> {
        match self.fields.apply(ev) {
            Ok(masked) => Ok(masked.unwrap_or_else(|| ev.clone())),
            Err(e) => Err(Status::internal(e.to_string())),
        }
    }
}

/// The oneof field number, which is what `EventType` values mean.
pub fn event_type(ev: &GetEventsResponse) -> EventType {
    match &ev.event {
        Some(Event::ProcessExec(_)) => EventType::ProcessExec,
        Some(Event::ProcessExit(_)) => EventType::ProcessExit,
        Some(Event::ProcessKprobe(_)) => EventType::ProcessKprobe,
        Some(Event::ProcessTracepoint(_)) => EventType::ProcessTracepoint,
        Some(Event::ProcessThrottle(_)) => EventType::ProcessThrottle,
        Some(Event::ProcessLsm(_)) => EventType::ProcessLsm,
        Some(Event::Test(_)) => EventType::Test,
        Some(Event::RateLimitInfo(_)) => EventType::RateLimitInfo,
        None => EventType::Undef,
    }
}

fn event_process(ev: &GetEventsResponse) -> Option<&Process> {
    match ev.event.as_ref()? {
        Event::ProcessExec(e) => e.process.as_ref(),
        Event::ProcessExit(e) => e.process.as_ref(),
        Event::ProcessKprobe(e) => e.process.as_ref(),
        Event::ProcessTracepoint(e) => e.process.as_ref(),
        Event::ProcessLsm(e) => e.process.as_ref(),
        Event::ProcessThrottle(_) | Event::Test(_) | Event::RateLimitInfo(_) => None,
    }
}

fn event_parent(ev: &GetEventsResponse) -> Option<&Process> {
    match ev.event.as_ref()? {
        Event::ProcessExec(e) => e.parent.as_ref(),
        Event::ProcessExit(e) => e.parent.as_ref(),
        Event::ProcessKprobe(e) => e.parent.as_ref(),
        Event::ProcessTracepoint(e) => e.parent.as_ref(),
        Event::ProcessLsm(e) => e.parent.as_ref(),
        Event::ProcessThrottle(_) | Event::Test(_) | Event::RateLimitInfo(_) => None,
    }
}

fn event_ancestors(ev: &GetEventsResponse) -> &[Process] {
    match &ev.event {
        Some(Event::ProcessExec(e)) => &e.ancestors,
        Some(Event::ProcessExit(e)) => &e.ancestors,
        Some(Event::ProcessKprobe(e)) => &e.ancestors,
        Some(Event::ProcessTracepoint(e)) => &e.ancestors,
        Some(Event::ProcessLsm(e)) => &e.ancestors,
        _ => &[],
    }
}

fn event_policy_name(ev: &GetEventsResponse) -> Option<&str> {
    match ev.event.as_ref()? {
        Event::ProcessKprobe(e) => Some(&e.policy_name),
        Event::ProcessTracepoint(e) => Some(&e.policy_name),
        Event::ProcessLsm(e) => Some(&e.policy_name),
        _ => None,
    }
}

/// The service implementation; usually used through [`serve`].
pub struct Service {
    bus: EventBus,
    control: Arc<dyn PolicyApi>,
    /// Flips to `true` on shutdown so that endless `GetEvents` streams end and the server can
    /// finish its graceful shutdown.
    stop: watch::Receiver<bool>,
}

impl Service {
    pub fn new(bus: EventBus, control: Arc<dyn PolicyApi>, stop: watch::Receiver<bool>) -> Self {
        Self { bus, control, stop }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<GetEventsResponse, Status>> + Send>>;

async fn forward_events(
    mut rx: broadcast::Receiver<Arc<GetEventsResponse>>,
    tx: mpsc::Sender<Result<GetEventsResponse, Status>>,
    filter: EventFilter,
    lost: Arc<AtomicU64>,
    client: String,
    mut stop: watch::Receiver<bool>,
) {
    let mut missed = 0u64;
    loop {
        let ev = tokio::select! {
            ev = rx.recv() => ev,
            _ = stop.wait_for(|s| *s) => break,
            // The client went away: stop holding a bus slot.
            _ = tx.closed() => break,
        };
        match ev {
            Ok(ev) => {
                // Never forward what tetra's compact encoder rejects (it would exit).
                if matches!(ev.event, None | Some(Event::RateLimitInfo(_))) || !filter.matches(&ev)
                {
                    continue;
                }
                // A filter that cannot be applied ends the stream rather than leak a field
                // the client asked to drop.
                let out = filter.project(&ev);
                let failed = out.is_err();
                if tx.send(out).await.is_err() || failed {
                    break;
                }
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                missed += n;
                lost.fetch_add(n, Ordering::Relaxed);
                crate::metrics::subscriber_events_dropped(&client, n);
                warn!(
                    missed = n,
                    total_missed = missed,
                    "GetEvents client too slow; events dropped"
                );
            }
            Err(broadcast::error::RecvError::Closed) => break,
        }
    }
    debug!(missed, "GetEvents stream finished");
}

#[tonic::async_trait]
impl FineGuidanceSensors for Service {
    type GetEventsStream = EventStream;

    async fn get_events(
        &self,
        request: Request<GetEventsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let peer = request.remote_addr();
        let filter = EventFilter::new(request.get_ref())?;
        info!(?peer, "GetEvents client connected");
        // Subscribe before returning so that nothing published after this call is missed.
        let rx = self.bus.subscribe();
        let (tx, out) = mpsc::channel(CLIENT_QUEUE);
        tokio::spawn(forward_events(
            rx,
            tx,
            filter,
            self.bus.lost.clone(),
            crate::metrics::client_label(peer),
            self.stop.clone(),
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(out))))
    }

    async fn get_health(
        &self,
        _request: Request<GetHealthStatusRequest>,
    ) -> Result<Response<GetHealthStatusResponse>, Status> {
        let (status, details) = self.control.health().await;
        Ok(Response::new(GetHealthStatusResponse {
            health_status: vec![HealthStatus {
                event: HealthStatusType::Status as i32,
                status: status as i32,
                details,
            }],
        }))
    }

    async fn add_tracing_policy(
        &self,
        request: Request<AddTracingPolicyRequest>,
    ) -> Result<Response<AddTracingPolicyResponse>, Status> {
        self.control.add(request.into_inner().yaml).await?;
        Ok(Response::new(AddTracingPolicyResponse {}))
    }

    async fn delete_tracing_policy(
        &self,
        request: Request<DeleteTracingPolicyRequest>,
    ) -> Result<Response<DeleteTracingPolicyResponse>, Status> {
        let r = request.into_inner();
        self.control.delete(&r.name, &r.namespace).await?;
        Ok(Response::new(DeleteTracingPolicyResponse {}))
    }

    async fn list_tracing_policies(
        &self,
        _request: Request<ListTracingPoliciesRequest>,
    ) -> Result<Response<ListTracingPoliciesResponse>, Status> {
        Ok(Response::new(ListTracingPoliciesResponse {
            policies: self.control.list().await?,
        }))
    }

    async fn enable_tracing_policy(
        &self,
        request: Request<EnableTracingPolicyRequest>,
    ) -> Result<Response<EnableTracingPolicyResponse>, Status> {
        let r = request.into_inner();
        self.control
            .set_enabled(&r.name, &r.namespace, true)
            .await?;
        Ok(Response::new(EnableTracingPolicyResponse {}))
    }

    async fn disable_tracing_policy(
        &self,
        request: Request<DisableTracingPolicyRequest>,
    ) -> Result<Response<DisableTracingPolicyResponse>, Status> {
        let r = request.into_inner();
        self.control
            .set_enabled(&r.name, &r.namespace, false)
            .await?;
        Ok(Response::new(DisableTracingPolicyResponse {}))
    }

    async fn configure_tracing_policy(
        &self,
        request: Request<ConfigureTracingPolicyRequest>,
    ) -> Result<Response<ConfigureTracingPolicyResponse>, Status> {
        let r = request.into_inner();
        // Validate everything before changing anything, so a bad mode does not half-apply.
        let mode = r
            .mode
            .map(|m| match TracingPolicyMode::try_from(m) {
                Ok(m @ (TracingPolicyMode::TpModeEnforce | TracingPolicyMode::TpModeMonitor)) => {
                    Ok(m)
                }
                _ => Err(Status::invalid_argument(format!(
                    "unsupported policy mode {m}"
                ))),
            })
            .transpose()?;
        if let Some(mode) = mode {
            self.control.set_mode(&r.name, &r.namespace, mode).await?;
        }
        if let Some(enable) = r.enable {
            self.control
                .set_enabled(&r.name, &r.namespace, enable)
                .await?;
        }
        Ok(Response::new(ConfigureTracingPolicyResponse {}))
    }

    async fn get_version(
        &self,
        _request: Request<GetVersionRequest>,
    ) -> Result<Response<GetVersionResponse>, Status> {
        Ok(Response::new(GetVersionResponse {
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }))
    }

    async fn get_info(
        &self,
        _request: Request<GetInfoRequest>,
    ) -> Result<Response<GetInfoResponse>, Status> {
        Ok(Response::new(GetInfoResponse {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            name: "lsm-agent".to_owned(),
            ..Default::default()
        }))
    }
}

/// Bound sockets, before serving. Split from [`serve`] so that callers can learn the actual
/// port when binding port 0.
#[derive(Debug)]
pub enum Listeners {
    Tcp(Vec<TcpListener>),
    Unix {
        listener: UnixListener,
        path: PathBuf,
    },
}

impl Listeners {
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        match self {
            Listeners::Tcp(ls) => ls.iter().filter_map(|l| l.local_addr().ok()).collect(),
            Listeners::Unix { .. } => Vec::new(),
        }
    }
}

/// Binds `addr`: `unix:///path`, `localhost:PORT` (both 127.0.0.1 and ::1, ::1 skipped when
/// IPv6 is unavailable), `:PORT` (all IPv4 interfaces), `host:PORT`, or a host without port
/// (Tetragon's default port is appended).
pub async fn bind(addr: &str) -> Result<Listeners, GrpcError> {
    if let Some(path) = addr
        .strip_prefix("unix://")
        .or_else(|| addr.strip_prefix("unix:"))
    {
        if path.is_empty() {
            return Err(GrpcError::InvalidAddress(addr.to_owned()));
        }
        let path = PathBuf::from(path);
        // A socket left behind by a previous run would make bind fail with EADDRINUSE.
        if let Ok(meta) = std::fs::symlink_metadata(&path) {
            use std::os::unix::fs::FileTypeExt as _;
            if meta.file_type().is_socket() {
                let _ = std::fs::remove_file(&path);
            }
        }
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let listener = UnixListener::bind(&path).map_err(|source| GrpcError::Bind {
            addr: addr.to_owned(),
            source,
        })?;
        return Ok(Listeners::Unix { listener, path });
    }

    let (host, port) = split_host_port(addr)?;
    let candidates: Vec<SocketAddr> = match host {
        "localhost" => vec![
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port),
        ],
        "" => vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)],
        h => {
            let h = h.trim_start_matches('[').trim_end_matches(']');
            let mut v: Vec<SocketAddr> = tokio::net::lookup_host((h, port))
                .await
                .map_err(|source| GrpcError::Resolve {
                    addr: addr.to_owned(),
                    source,
                })?
                .collect();
            v.dedup();
            v
        }
    };
    let listeners = crate::listen::bind_all(candidates)
        .await
        .map_err(|(sa, source)| GrpcError::Bind {
            addr: sa.to_string(),
            source,
        })?;
    if listeners.is_empty() {
        return Err(GrpcError::InvalidAddress(addr.to_owned()));
    }
    Ok(Listeners::Tcp(listeners))
}

fn split_host_port(addr: &str) -> Result<(&str, u16), GrpcError> {
    let invalid = || GrpcError::InvalidAddress(addr.to_owned());
    // Bracketed IPv6 ("[::1]:54321" or "[::1]"), else the last colon splits host and port
    // unless the host is a bare IPv6 literal.
    if let Some(rest) = addr.strip_prefix('[') {
        let (host, tail) = rest.split_once(']').ok_or_else(invalid)?;
        let port = match tail.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| invalid())?,
            None if tail.is_empty() => DEFAULT_PORT,
            None => return Err(invalid()),
        };
        return Ok((host, port));
    }
    if addr.parse::<Ipv6Addr>().is_ok() {
        return Ok((addr, DEFAULT_PORT));
    }
    match addr.rsplit_once(':') {
        Some((host, port)) => Ok((host, port.parse().map_err(|_| invalid())?)),
        None if !addr.is_empty() => Ok((addr, DEFAULT_PORT)),
        None => Err(invalid()),
    }
}

/// Binds `addr` (see [`bind`]) and serves until `shutdown` completes.
pub async fn serve(
    addr: &str,
    bus: EventBus,
    control: Arc<dyn PolicyApi>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), GrpcError> {
    let listeners = bind(addr).await?;
    serve_listeners(listeners, bus, control, shutdown).await
}

/// Serves on already bound sockets until `shutdown` completes. Open `GetEvents` streams are
/// ended at shutdown so that it does not wait for clients forever.
pub async fn serve_listeners(
    listeners: Listeners,
    bus: EventBus,
    control: Arc<dyn PolicyApi>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), GrpcError> {
    serve_listeners_tls(listeners, bus, control, None, shutdown).await
}

/// [`serve_listeners`], with TLS (see [`ServerTls`]) on TCP listeners when `tls` is set.
pub async fn serve_listeners_tls(
    listeners: Listeners,
    bus: EventBus,
    control: Arc<dyn PolicyApi>,
    tls: Option<&ServerTls>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), GrpcError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let service = FineGuidanceSensorsServer::new(Service::new(bus, control, stop_rx));
    let signal = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        if let Listeners::Unix { path, .. } = &listeners {
            return Err(GrpcError::TlsOnUnixSocket(path.display().to_string()));
        }
        builder = builder.tls_config(tls.config())?;
    }
    let router = builder.add_service(service);
    match listeners {
        Listeners::Tcp(ls) => {
            let addrs: Vec<_> = ls.iter().filter_map(|l| l.local_addr().ok()).collect();
            let tls_mode = tls.map_or("off", |t| if t.mutual() { "mutual" } else { "on" });
            info!(?addrs, tls = tls_mode, "gRPC server listening");
            if tls.is_none() && addrs.iter().any(|a| !a.ip().is_loopback()) {
                warn!(
                    ?addrs,
                    "the gRPC API (policy changes included) is reachable from the network without TLS; see --server-tls-cert-file"
                );
            }
            let mut incoming: Pin<
                Box<dyn Stream<Item = io::Result<tokio::net::TcpStream>> + Send>,
            > = Box::pin(tokio_stream::empty());
            for l in ls {
                incoming = Box::pin(incoming.merge(TcpListenerStream::new(l)));
            }
            // gRPC streams are latency-sensitive and small; Nagle only adds delay.
            let incoming = incoming.map(|s| {
                s.inspect(|s| {
                    let _ = s.set_nodelay(true);
                })
            });
            router
                .serve_with_incoming_shutdown(incoming, signal)
                .await?;
        }
        Listeners::Unix { listener, path } => {
            info!(path = %path.display(), "gRPC server listening");
            router
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), signal)
                .await?;
            let _ = std::fs::remove_file(&path);
        }
    }
    info!("gRPC server stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::proto::tetragon::{Pod, ProcessExec, ProcessKprobe, ProcessLsm};

    fn exec(binary: &str, ns: Option<&str>) -> GetEventsResponse {
        GetEventsResponse {
            event: Some(Event::ProcessExec(ProcessExec {
                process: Some(Process {
                    binary: binary.into(),
                    arguments: "-a -b".into(),
                    pid: Some(42),
                    pod: ns.map(|ns| Pod {
                        namespace: ns.into(),
                        name: "web-1".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn filter(allow: Vec<Filter>, deny: Vec<Filter>) -> EventFilter {
        EventFilter::new(&GetEventsRequest {
            allow_list: allow,
            deny_list: deny,
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn empty_allow_matches_all() {
        assert!(filter(vec![], vec![]).matches(&exec("/bin/ls", None)));
        assert!(filter(vec![Filter::default()], vec![]).matches(&exec("/bin/ls", None)));
    }

    #[test]
    fn binary_namespace_pod_pid() {
        let f = filter(
            vec![Filter {
                binary_regex: vec!["ls".into()],
                ..Default::default()
            }],
            vec![],
        );
        assert!(f.matches(&exec("/bin/ls", None)));
        assert!(!f.matches(&exec("/bin/cat", None)));
        let host = filter(
            vec![Filter {
                namespace: vec!["".into()],
                ..Default::default()
            }],
            vec![],
        );
        assert!(host.matches(&exec("/bin/ls", None)));
        assert!(!host.matches(&exec("/bin/ls", Some("default"))));
        let pod = filter(
            vec![Filter {
                pod_regex: vec!["^web".into()],
                ..Default::default()
            }],
            vec![],
        );
        assert!(pod.matches(&exec("/bin/ls", Some("default"))));
        assert!(!pod.matches(&exec("/bin/ls", None)));
        let pid = filter(
            vec![Filter {
                pid: vec![7, 42],
                ..Default::default()
            }],
            vec![],
        );
        assert!(pid.matches(&exec("/bin/ls", None)));
        let args = filter(
            vec![Filter {
                arguments_regex: vec!["-b$".into()],
                ..Default::default()
            }],
            vec![],
        );
        assert!(args.matches(&exec("/bin/ls", None)));
    }

    #[test]
    fn and_within_or_across_and_deny() {
        let f = filter(
            vec![
                Filter {
                    binary_regex: vec!["ls".into()],
                    namespace: vec!["kube-system".into()],
                    ..Default::default()
                },
                Filter {
                    binary_regex: vec!["cat".into()],
                    ..Default::default()
                },
            ],
            vec![Filter {
                namespace: vec!["secret".into()],
                ..Default::default()
            }],
        );
        assert!(!f.matches(&exec("/bin/ls", Some("default"))));
        assert!(f.matches(&exec("/bin/ls", Some("kube-system"))));
        assert!(f.matches(&exec("/bin/cat", None)));
        assert!(!f.matches(&exec("/bin/cat", Some("secret"))));
    }

    #[test]
    fn event_set_and_policy_names() {
        let lsm = GetEventsResponse {
            event: Some(Event::ProcessLsm(ProcessLsm {
                process: Some(Process::default()),
                policy_name: "p1".into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        let kprobe = GetEventsResponse {
            event: Some(Event::ProcessKprobe(ProcessKprobe {
                process: Some(Process::default()),
                policy_name: "p2".into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        let f = filter(
            vec![Filter {
                event_set: vec![EventType::ProcessLsm as i32],
                ..Default::default()
            }],
            vec![],
        );
        assert!(f.matches(&lsm));
        assert!(!f.matches(&kprobe));
        assert!(!f.matches(&exec("/bin/ls", None)));
        let f = filter(
            vec![Filter {
                policy_names: vec!["p2".into()],
                ..Default::default()
            }],
            vec![],
        );
        assert!(!f.matches(&lsm));
        assert!(f.matches(&kprobe));
        assert!(!f.matches(&exec("/bin/ls", None)));
    }

    #[test]
    fn bad_regex_and_unsupported_fields_are_rejected() {
        let req = GetEventsRequest {
            allow_list: vec![Filter {
                binary_regex: vec!["(".into()],
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(
            EventFilter::new(&req).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        let req = GetEventsRequest {
            allow_list: vec![Filter {
                labels: vec!["app=x".into()],
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(
            EventFilter::new(&req).unwrap_err().code(),
            tonic::Code::Unimplemented
        );
    }

    #[test]
    fn host_port_parsing() {
        assert_eq!(
            split_host_port("localhost:54321").unwrap(),
            ("localhost", 54321)
        );
        assert_eq!(split_host_port(":1234").unwrap(), ("", 1234));
        assert_eq!(split_host_port("[::1]:80").unwrap(), ("::1", 80));
        assert_eq!(split_host_port("[::1]").unwrap(), ("::1", DEFAULT_PORT));
        assert_eq!(split_host_port("::1").unwrap(), ("::1", DEFAULT_PORT));
        assert_eq!(
            split_host_port("example").unwrap(),
            ("example", DEFAULT_PORT)
        );
        assert!(split_host_port("h:notaport").is_err());
    }

    #[tokio::test]
    async fn localhost_port_zero_binds_one_port() {
        let ls = bind("localhost:0").await.unwrap();
        let addrs = ls.local_addrs();
        assert!(!addrs.is_empty());
        assert!(
            addrs
                .iter()
                .all(|a| a.port() == addrs[0].port() && a.port() != 0)
        );
    }
}
