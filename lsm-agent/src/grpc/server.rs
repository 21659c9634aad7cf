//! The `tetragon.FineGuidanceSensors` gRPC server: event streaming with Tetragon's filter
//! semantics, and policy management delegated to a [`PolicyApi`].

use std::{
    future::Future,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    pin::Pin,
    sync::Arc,
    time::Duration,
};

use tokio::{
    net::{TcpListener, UnixListener},
    sync::{mpsc, watch},
};
use tokio_stream::{
    Stream, StreamExt as _,
    wrappers::{ReceiverStream, TcpListenerStream, UnixListenerStream},
};
use tonic::{Request, Response, Status};
use tracing::{debug, info, warn};

use super::{policy::PolicyApi, tls::ServerTls};
use crate::events::bus::{EventBus, RecvError, Subscriber};
use crate::tetragon::proto::tetragon::{
    AddTracingPolicyRequest, AddTracingPolicyResponse, ConfigureTracingPolicyRequest,
    ConfigureTracingPolicyResponse, DeleteTracingPolicyRequest, DeleteTracingPolicyResponse,
    DisableTracingPolicyRequest, DisableTracingPolicyResponse, EnableTracingPolicyRequest,
    EnableTracingPolicyResponse, GetEventsRequest, GetEventsResponse, GetHealthStatusRequest,
    GetHealthStatusResponse, GetInfoRequest, GetInfoResponse, GetVersionRequest,
    GetVersionResponse, HealthStatus, HealthStatusType, ListTracingPoliciesRequest,
    ListTracingPoliciesResponse, TracingPolicyMode,
    fine_guidance_sensors_server::{FineGuidanceSensors, FineGuidanceSensorsServer},
    get_info_response::Probe,
};
use crate::tetragon::{convert::to_response, filter::EventFilter};

/// Tetragon's default port, appended when an address has none.
pub const DEFAULT_PORT: u16 = 54321;

/// Per-client queue between the bus and the HTTP/2 stream. Small on purpose: a client that
/// cannot keep up should lag on the bus (and lose events there, counted) rather than buffer.
const CLIENT_QUEUE: usize = 256;

/// How long a stopping server waits for open streams to end before dropping them. A client
/// that stopped reading keeps its stream's last frames stuck behind HTTP/2 flow control and
/// would otherwise hold the shutdown forever.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);

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

/// The `client` label of a `GetEvents` peer: its IP address (not the port, which changes with
/// every connection), `"unix"` without one (Unix socket).
pub fn client_label(peer: Option<SocketAddr>) -> String {
    match peer {
        Some(a) => a.ip().to_canonical().to_string(),
        None => "unix".to_owned(),
    }
}

async fn forward_events(
    mut rx: Subscriber,
    tx: mpsc::Sender<Result<GetEventsResponse, Status>>,
    filter: EventFilter,
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
                // Our events convert to exec, exit, kprobe and lsm events only, never to one
                // that tetra's compact encoder rejects (it would exit).
                let ev = to_response(&ev);
                if !filter.matches(&ev) {
                    continue;
                }
                // A filter that cannot be applied ends the stream rather than leak a field
                // the client asked to drop.
                let out = filter.project(ev);
                let failed = out.is_err();
                // A client that stopped reading blocks this send; the stop must still end it.
                let sent = tokio::select! {
                    r = tx.send(out) => r.is_ok(),
                    _ = stop.wait_for(|s| *s) => false,
                };
                if !sent || failed {
                    break;
                }
            }
            // Counted by the bus, under the client's label.
            Err(RecvError::Lagged(n)) => {
                missed += n;
                warn!(
                    missed = n,
                    total_missed = missed,
                    "GetEvents client too slow; events dropped"
                );
            }
            Err(RecvError::Closed) => break,
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
        let rx = self.bus.subscribe_client(&client_label(peer));
        let (tx, out) = mpsc::channel(CLIENT_QUEUE);
        tokio::spawn(forward_events(rx, tx, filter, self.stop.clone()));
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
        let probes = self
            .control
            .probes()
            .into_iter()
            .map(|(name, enabled)| Probe {
                name,
                enabled: Some(enabled),
            })
            .collect();
        Ok(Response::new(GetInfoResponse {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            name: "lsm-agent".to_owned(),
            probes,
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
        // A socket left behind by a previous run would make bind fail with EADDRINUSE; one a
        // running agent still serves is not taken from it.
        if let Ok(meta) = std::fs::symlink_metadata(&path) {
            use std::os::unix::fs::FileTypeExt as _;
            if meta.file_type().is_socket() {
                if std::os::unix::net::UnixStream::connect(&path).is_ok() {
                    return Err(GrpcError::Bind {
                        addr: addr.to_owned(),
                        source: io::Error::new(
                            io::ErrorKind::AddrInUse,
                            "another server is listening on this socket",
                        ),
                    });
                }
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

/// The TCP port `addr` (as [`bind`] takes it) names; `None` for a unix socket, an invalid
/// address, or port 0 (the kernel picks one).
pub fn tcp_port(addr: &str) -> Option<u16> {
    if addr.starts_with("unix:") {
        return None;
    }
    split_host_port(addr)
        .ok()
        .map(|(_, p)| p)
        .filter(|&p| p != 0)
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
    let mut stopping = stop_rx.clone();
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
    // The unix socket's file is removed however the server ends.
    let unix_path = match &listeners {
        Listeners::Unix { path, .. } => Some(path.clone()),
        Listeners::Tcp(_) => None,
    };
    let serving = async {
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
                router.serve_with_incoming_shutdown(incoming, signal).await
            }
            Listeners::Unix { listener, path } => {
                info!(path = %path.display(), "gRPC server listening");
                let incoming = UnixListenerStream::new(listener);
                router.serve_with_incoming_shutdown(incoming, signal).await
            }
        }
    };
    let drain_limit = async move {
        if stopping.wait_for(|stop| *stop).await.is_err() {
            // The signal never fired: only `serving` can end this select.
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(DRAIN_LIMIT).await;
    };
    let result = tokio::select! {
        r = serving => r,
        () = drain_limit => {
            warn!("gRPC clients still connected {DRAIN_LIMIT:?} after shutdown began; dropping them");
            Ok(())
        }
    };
    if let Some(path) = unix_path {
        let _ = std::fs::remove_file(&path);
    }
    result?;
    info!("gRPC server stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_labels_drop_the_port() {
        let a: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:4001".parse().unwrap();
        assert_eq!(client_label(Some(a)), "127.0.0.1");
        assert_eq!(client_label(Some(b)), "127.0.0.1");
        let mapped: SocketAddr = "[::ffff:10.0.0.1]:4000".parse().unwrap();
        assert_eq!(client_label(Some(mapped)), "10.0.0.1");
        assert_eq!(client_label(None), "unix");
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

    #[test]
    fn the_tcp_port_of_an_address_is_known_unless_the_kernel_picks_it() {
        assert_eq!(tcp_port("localhost:54321"), Some(54321));
        assert_eq!(tcp_port("[::1]"), Some(DEFAULT_PORT));
        assert_eq!(tcp_port("localhost:0"), None);
        assert_eq!(tcp_port("unix:///run/x.sock"), None);
    }

    #[tokio::test]
    async fn a_unix_socket_a_live_server_holds_is_not_taken_but_a_stale_one_is() {
        // Removed when the test ends, passed or failed.
        let dir = tempfile::Builder::new()
            .prefix("lsm-grpc-sock-")
            .tempdir()
            .expect("tmpdir");
        let path = dir.path().join("api.sock");
        let addr = format!("unix://{}", path.display());
        let live = bind(&addr).await.expect("first bind");
        let err = bind(&addr).await.expect_err("held by a live listener");
        assert!(
            matches!(&err, GrpcError::Bind { source, .. } if source.kind() == io::ErrorKind::AddrInUse),
            "{err}"
        );
        drop(live);
        // The file is left behind by the dropped listener: a later agent binds over it.
        assert!(path.exists());
        bind(&addr).await.expect("stale socket replaced");
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
