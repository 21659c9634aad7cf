//! TLS and mutual TLS on the gRPC server, with certificates made by each test, through the
//! client configuration `lsmctl` uses (`grpc::tls::ClientTlsOptions`).

use std::{path::PathBuf, sync::Arc, time::Duration};

use lsm_agent::{
    events::{
        bus::EventBus,
        model::{Event, EventKind, Exec, Process, Time},
    },
    grpc::{
        GrpcError, PolicyControl, bind,
        proto::tetragon::{
            GetEventsRequest, GetVersionRequest, HealthStatusResult, TracingPolicyMode,
            TracingPolicyStatus, fine_guidance_sensors_client::FineGuidanceSensorsClient,
        },
        serve_listeners_tls,
        tls::{ClientTlsOptions, ServerTls, ServerTlsOptions, TlsError, error_chain},
    },
    tetragon::convert::to_response,
};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tonic::transport::Endpoint;

struct NoPolicies;

impl PolicyControl for NoPolicies {
    fn list(&self) -> Vec<TracingPolicyStatus> {
        Vec::new()
    }
    fn add(&self, _yaml: String) -> Result<(), String> {
        Err("read-only".into())
    }
    fn delete(&self, _name: &str, _namespace: &str) -> Result<(), String> {
        Err("read-only".into())
    }
    fn set_enabled(&self, _name: &str, _namespace: &str, _enabled: bool) -> Result<(), String> {
        Err("read-only".into())
    }
    fn set_mode(&self, _: &str, _: &str, _: TracingPolicyMode) -> Result<(), String> {
        Err("read-only".into())
    }
    fn health(&self) -> (HealthStatusResult, String) {
        (HealthStatusResult::HealthStatusRunning, "running".into())
    }
}

/// A CA, and leaf certificates it signs, written as PEM files into a temporary directory.
struct Pki {
    dir: TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
    name: &'static str,
}

impl Pki {
    fn new(name: &'static str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let pki = Self {
            dir: tempfile::tempdir().unwrap(),
            ca,
            name,
        };
        std::fs::write(pki.ca_file(), pki.ca.pem()).unwrap();
        pki
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.path().join(format!("{}-ca.pem", self.name))
    }

    /// Writes `<file>.pem` and `<file>.key`; returns their paths.
    fn leaf(
        &self,
        file: &str,
        names: &[&str],
        usage: ExtendedKeyUsagePurpose,
    ) -> (PathBuf, PathBuf) {
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, file);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let (c, k) = (
            self.dir.path().join(format!("{file}.pem")),
            self.dir.path().join(format!("{file}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    fn server_leaf(&self, names: &[&str]) -> (PathBuf, PathBuf) {
        self.leaf("server", names, ExtendedKeyUsagePurpose::ServerAuth)
    }

    fn client_leaf(&self) -> (PathBuf, PathBuf) {
        self.leaf("client", &[], ExtendedKeyUsagePurpose::ClientAuth)
    }
}

struct Server {
    port: u16,
    bus: EventBus,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(tls: ServerTls) -> Self {
        // Both 127.0.0.1 and ::1 (when available), on one port, like the agent's default.
        let listeners = bind("localhost:0").await.unwrap();
        let port = listeners.local_addrs()[0].port();
        let bus = EventBus::new(16);
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn({
            let bus = bus.clone();
            async move {
                serve_listeners_tls(listeners, bus, Arc::new(NoPolicies), Some(&tls), async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
            }
        });
        Self {
            port,
            bus,
            stop: Some(tx),
            task,
        }
    }

    /// Connects and makes one call, as `lsmctl version` does; the error text otherwise.
    async fn version(&self, host: &str, opts: &ClientTlsOptions) -> Result<String, String> {
        let mut client = self.client(host, opts).await?;
        client
            .get_version(GetVersionRequest {})
            .await
            .map(|r| r.into_inner().version)
            .map_err(|s| format!("{s}"))
    }

    async fn client(
        &self,
        host: &str,
        opts: &ClientTlsOptions,
    ) -> Result<FineGuidanceSensorsClient<tonic::transport::Channel>, String> {
        let scheme = if opts.enabled() { "https" } else { "http" };
        let endpoint = Endpoint::from_shared(format!("{scheme}://{host}:{}", self.port))
            .unwrap()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5));
        let endpoint = opts.apply(endpoint).map_err(|e| e.to_string())?;
        let channel = tokio::time::timeout(Duration::from_secs(10), endpoint.connect())
            .await
            .map_err(|_| "connect timed out".to_owned())?
            .map_err(|e| error_chain(&e))?;
        Ok(FineGuidanceSensorsClient::new(channel))
    }

    async fn shutdown(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("server shuts down")
            .unwrap();
    }
}

fn server_tls(opts: ServerTlsOptions) -> ServerTls {
    ServerTls::load(&opts, "localhost:0")
        .unwrap()
        .expect("TLS on")
}

fn trusting(pki: &Pki) -> ClientTlsOptions {
    ClientTlsOptions {
        ca_files: vec![pki.ca_file()],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_server_accepts_clients_that_trust_it() {
    let pki = Pki::new("agent");
    let (cert, key) = pki.server_leaf(&["localhost", "127.0.0.1", "::1"]);
    let server = Server::start(server_tls(ServerTlsOptions {
        cert_file: Some(cert),
        key_file: Some(key),
        ..Default::default()
    }))
    .await;

    // Verified against the CA, by name and by IP address.
    for host in ["localhost", "127.0.0.1"] {
        let v = server.version(host, &trusting(&pki)).await;
        assert!(v.is_ok_and(|v| !v.is_empty()), "{host}");
    }

    // Events stream over TLS too.
    let mut client = server.client("localhost", &trusting(&pki)).await.unwrap();
    let mut stream = client
        .get_events(GetEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let ev = Event {
        node_name: "node".into(),
        time: Time::default(),
        kind: EventKind::Exec(Exec {
            process: Process {
                binary: "/bin/true".into(),
                ..Default::default()
            },
            parent: None,
        }),
    };
    server.bus.publish(ev.clone());
    let got = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("event in time")
        .unwrap()
        .unwrap();
    assert_eq!(got, to_response(&ev));

    // A plaintext client gets nowhere.
    let plain = server
        .version("localhost", &ClientTlsOptions::default())
        .await;
    assert!(plain.is_err(), "plaintext must fail: {plain:?}");

    // Nor does a client that trusts another CA.
    let other = Pki::new("other");
    let untrusted = server.version("localhost", &trusting(&other)).await;
    assert!(
        untrusted.is_err(),
        "untrusted server must fail: {untrusted:?}"
    );

    // A client certificate is not required, but may be presented.
    let (ccert, ckey) = pki.client_leaf();
    let with_cert = ClientTlsOptions {
        cert_file: Some(ccert),
        key_file: Some(ckey),
        ..trusting(&pki)
    };
    assert!(server.version("localhost", &with_cert).await.is_ok());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_name_override() {
    let pki = Pki::new("agent");
    // Like the Helm chart's certificates: a name that is not the address connected to.
    let (cert, key) = pki.server_leaf(&["node1.tetragon-grpc.example"]);
    let server = Server::start(server_tls(ServerTlsOptions {
        cert_file: Some(cert),
        key_file: Some(key),
        ..Default::default()
    }))
    .await;
    let mismatch = server.version("127.0.0.1", &trusting(&pki)).await;
    assert!(mismatch.is_err(), "name mismatch must fail: {mismatch:?}");
    let named = ClientTlsOptions {
        server_name: Some("node1.tetragon-grpc.example".into()),
        ..trusting(&pki)
    };
    assert!(server.version("127.0.0.1", &named).await.is_ok());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_requires_a_client_certificate_from_the_ca() {
    let pki = Pki::new("agent");
    let (cert, key) = pki.server_leaf(&["localhost", "127.0.0.1", "::1"]);
    let clients = Pki::new("clients");
    let server = Server::start(server_tls(ServerTlsOptions {
        cert_file: Some(cert),
        key_file: Some(key),
        client_ca_files: vec![clients.ca_file()],
        require_client_cert: true,
    }))
    .await;

    let (ccert, ckey) = clients.client_leaf();
    let authenticated = ClientTlsOptions {
        cert_file: Some(ccert.clone()),
        key_file: Some(ckey.clone()),
        ..trusting(&pki)
    };
    let v = server.version("localhost", &authenticated).await;
    assert!(v.is_ok(), "{v:?}");

    let anonymous = server.version("localhost", &trusting(&pki)).await;
    assert!(
        anonymous.is_err(),
        "a client without a certificate is refused"
    );

    // A certificate from a CA the server does not list is refused as well.
    let (scert, skey) = pki.client_leaf();
    let wrong_ca = ClientTlsOptions {
        cert_file: Some(scert),
        key_file: Some(skey),
        ..trusting(&pki)
    };
    let v = server.version("localhost", &wrong_ca).await;
    assert!(v.is_err(), "foreign client certificate must fail: {v:?}");

    // --tls-skip-verify (with a client certificate, which is what turns TLS on): the server's
    // certificate is not checked, the client's still is.
    let skip = ClientTlsOptions {
        cert_file: Some(ccert),
        key_file: Some(ckey),
        skip_verify: true,
        ..Default::default()
    };
    let v = server.version("127.0.0.1", &skip).await;
    assert!(v.is_ok(), "{v:?}");

    assert!(
        server
            .version("localhost", &ClientTlsOptions::default())
            .await
            .is_err()
    );
    server.shutdown().await;
}

#[tokio::test]
async fn bad_tls_material_is_refused_at_start() {
    let pki = Pki::new("agent");
    let (cert, _) = pki.server_leaf(&["localhost"]);
    let (_, other_key) = pki.client_leaf();
    // A key that does not belong to the certificate.
    let err = ServerTls::load(
        &ServerTlsOptions {
            cert_file: Some(cert.clone()),
            key_file: Some(other_key),
            ..Default::default()
        },
        "localhost:54321",
    )
    .unwrap_err();
    assert!(matches!(err, TlsError::Config(_)), "{err}");
    // A client CA file that is not a certificate.
    let (_, key) = pki.server_leaf(&["localhost"]);
    let err = ServerTls::load(
        &ServerTlsOptions {
            cert_file: Some(cert.clone()),
            key_file: Some(key.clone()),
            client_ca_files: vec![key.clone()],
            require_client_cert: true,
        },
        "localhost:54321",
    )
    .unwrap_err();
    assert!(matches!(err, TlsError::NoCertificate(_)), "{err}");

    // TLS is for TCP: a unix socket listener is refused.
    let tls = server_tls(ServerTlsOptions {
        cert_file: Some(cert),
        key_file: Some(key),
        ..Default::default()
    });
    let sock = pki.dir.path().join("agent.sock");
    let listeners = bind(&format!("unix://{}", sock.display())).await.unwrap();
    let err = serve_listeners_tls(
        listeners,
        EventBus::new(1),
        Arc::new(NoPolicies),
        Some(&tls),
        async {},
    )
    .await
    .unwrap_err();
    assert!(matches!(err, GrpcError::TlsOnUnixSocket(_)), "{err}");
}
