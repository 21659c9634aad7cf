//! Optional TLS for the gRPC API, with Tetragon's flags and rules.
//!
//! Server (`lsm-agent`): `--server-tls-cert-file` + `--server-tls-key-file` turn TLS on for the
//! TCP listener; `--server-tls-require-client-cert` + `--server-tls-client-ca-files` make it
//! mutual (a client without a certificate signed by one of those CAs is refused during the
//! handshake). As in Tetragon, the flags come in those pairs, client CAs without
//! `--server-tls-require-client-cert` are refused rather than silently unused, and TLS on a
//! `unix://` address is refused (the socket is protected by its file permissions instead).
//! Unlike Tetragon, certificates are read once at start-up: rotating them needs a restart.
//!
//! Client (`lsmctl`, like `tetra`): `--tls-ca-cert-files`, `--tls-cert-file` + `--tls-key-file`
//! turn TLS on; `--tls-server-name` overrides the name the server certificate is checked
//! against (and SNI); `--tls-skip-verify` accepts any server certificate (development only,
//! exclusive with `--tls-ca-cert-files`). Without CA files the system roots are used.

use std::{
    fmt, io,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use rustls::{
    DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{CryptoProvider, WebPkiSupportedAlgorithms},
    pki_types::{CertificateDer, ServerName, UnixTime},
};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

/// A client that connects but never finishes the handshake must not hold a task forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("--{0}-cert-file and --{0}-key-file must be set together")]
    CertWithoutKey(&'static str),
    #[error("--server-tls-require-client-cert needs --server-tls-client-ca-files")]
    RequireWithoutCa,
    #[error(
        "--server-tls-client-ca-files needs --server-tls-require-client-cert (client certificates are only checked when required)"
    )]
    CaWithoutRequire,
    #[error(
        "--server-tls-require-client-cert needs --server-tls-cert-file and --server-tls-key-file"
    )]
    MtlsWithoutTls,
    #[error("TLS applies to a TCP --server-address, not {0:?}")]
    UnixAddress(String),
    #[error("--tls-skip-verify makes --tls-ca-cert-files a no-op; pick one")]
    SkipVerifyWithCa,
    /// The cause is in the message (not a `source()`), so that it is printed once.
    #[error("reading {}: {error}", path.display())]
    Read { path: PathBuf, error: io::Error },
    #[error("{}: no PEM certificate in it", .0.display())]
    NoCertificate(PathBuf),
    #[error("{}: no PEM private key in it", .0.display())]
    NoKey(PathBuf),
    #[error("invalid TLS configuration: {0}")]
    Config(String),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read {
        path: path.to_owned(),
        error,
    })
}

fn read_certs(path: &Path) -> Result<Vec<u8>, TlsError> {
    let pem = read(path)?;
    if !contains(&pem, b"-----BEGIN CERTIFICATE-----") {
        return Err(TlsError::NoCertificate(path.to_owned()));
    }
    Ok(pem)
}

fn read_key(path: &Path) -> Result<Vec<u8>, TlsError> {
    let pem = read(path)?;
    // PKCS#8, RSA or SEC1 ("BEGIN PRIVATE KEY", "BEGIN RSA PRIVATE KEY", "BEGIN EC ...").
    if !(contains(&pem, b"-----BEGIN ") && contains(&pem, b"PRIVATE KEY-----")) {
        return Err(TlsError::NoKey(path.to_owned()));
    }
    Ok(pem)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// All CA bundles as one PEM (certificates are concatenated; each file must hold one).
fn read_bundles(paths: &[PathBuf]) -> Result<Vec<u8>, TlsError> {
    let mut all = Vec::new();
    for p in paths {
        all.extend(read_certs(p)?);
        all.push(b'\n');
    }
    Ok(all)
}

/// The agent's `--server-tls-*` flags (Tetragon's names).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServerTlsOptions {
    /// PEM server certificate. With --server-tls-key-file, the TCP gRPC listener serves TLS.
    #[arg(long = "server-tls-cert-file", value_name = "FILE")]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of --server-tls-cert-file.
    #[arg(long = "server-tls-key-file", value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// PEM CA bundles that client certificates must chain to (comma-separated or repeated).
    /// Needs --server-tls-require-client-cert.
    #[arg(
        long = "server-tls-client-ca-files",
        value_name = "FILES",
        value_delimiter = ','
    )]
    pub client_ca_files: Vec<PathBuf>,
    /// Mutual TLS: refuse clients without a certificate from --server-tls-client-ca-files.
    #[arg(long = "server-tls-require-client-cert")]
    pub require_client_cert: bool,
}

/// Certificates loaded and checked, ready for the TCP listener.
#[derive(Clone)]
pub struct ServerTls {
    config: ServerTlsConfig,
    mutual: bool,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("mutual", &self.mutual)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// `None` when TLS is off. Validates the flag combination for `server_address` and loads
    /// the files, so that a bad certificate stops the agent at start-up.
    pub fn load(opts: &ServerTlsOptions, server_address: &str) -> Result<Option<Self>, TlsError> {
        let (cert, key) = match (&opts.cert_file, &opts.key_file) {
            (None, None) => {
                return if opts.require_client_cert {
                    Err(TlsError::MtlsWithoutTls)
                } else if !opts.client_ca_files.is_empty() {
                    Err(TlsError::CaWithoutRequire)
                } else {
                    Ok(None)
                };
            }
            (Some(c), Some(k)) => (c, k),
            _ => return Err(TlsError::CertWithoutKey("server-tls")),
        };
        match (opts.require_client_cert, opts.client_ca_files.is_empty()) {
            (true, true) => return Err(TlsError::RequireWithoutCa),
            (false, false) => return Err(TlsError::CaWithoutRequire),
            _ => {}
        }
        if server_address.starts_with("unix:") {
            return Err(TlsError::UnixAddress(server_address.to_owned()));
        }
        let identity = Identity::from_pem(read_certs(cert)?, read_key(key)?);
        let mut config = ServerTlsConfig::new()
            .identity(identity)
            .timeout(HANDSHAKE_TIMEOUT);
        if opts.require_client_cert {
            config = config
                .client_ca_root(Certificate::from_pem(read_bundles(&opts.client_ca_files)?))
                .client_auth_optional(false);
        }
        // Builds the rustls configuration once: a key that does not match, or CA files
        // without a usable certificate, fail here.
        tonic::transport::Server::builder()
            .tls_config(config.clone())
            .map_err(|e| TlsError::Config(error_chain(&e)))?;
        Ok(Some(Self {
            config,
            mutual: opts.require_client_cert,
        }))
    }

    pub fn config(&self) -> ServerTlsConfig {
        self.config.clone()
    }

    /// Whether clients must present a certificate.
    pub fn mutual(&self) -> bool {
        self.mutual
    }
}

/// `lsmctl`'s (and tetra's) `--tls-*` flags.
#[derive(Debug, Clone, Default)]
pub struct ClientTlsOptions {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub ca_files: Vec<PathBuf>,
    pub server_name: Option<String>,
    pub skip_verify: bool,
}

impl ClientTlsOptions {
    /// tetra's rule: a certificate, a key or CA files turn TLS on; the server name and
    /// skip-verify only refine it.
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some() || self.key_file.is_some() || !self.ca_files.is_empty()
    }

    /// Configures `endpoint` (whose URI must be `https://`) for TLS; unchanged when TLS is
    /// off.
    pub fn apply(&self, endpoint: Endpoint) -> Result<Endpoint, TlsError> {
        if !self.enabled() {
            return Ok(endpoint);
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(TlsError::CertWithoutKey("tls"));
        }
        if self.skip_verify && !self.ca_files.is_empty() {
            return Err(TlsError::SkipVerifyWithCa);
        }
        let mut config = ClientTlsConfig::new().timeout(HANDSHAKE_TIMEOUT);
        if let Some(name) = self.server_name.as_deref().filter(|n| !n.is_empty()) {
            config = config.domain_name(name);
        }
        if let (Some(cert), Some(key)) = (&self.cert_file, &self.key_file) {
            config = config.identity(Identity::from_pem(read_certs(cert)?, read_key(key)?));
        }
        let config_error = |e: tonic::transport::Error| TlsError::Config(error_chain(&e));
        if self.skip_verify {
            return endpoint
                .tls_config_with_verifier(config, Arc::new(NoVerify::new()))
                .map_err(config_error);
        }
        config = if self.ca_files.is_empty() {
            config.with_native_roots()
        } else {
            let cas = self
                .ca_files
                .iter()
                .map(|p| read_certs(p).map(Certificate::from_pem))
                .collect::<Result<Vec<_>, _>>()?;
            config.ca_certificates(cas)
        };
        endpoint.tls_config(config).map_err(config_error)
    }
}

/// `error: source: source...`, since tonic's transport errors hide the cause in `source()`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        // Some errors already print their source.
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}

/// `--tls-skip-verify`: any server certificate is accepted, but the handshake signature is
/// still checked against it (as Go's `InsecureSkipVerify` does).
#[derive(Debug)]
struct NoVerify {
    algorithms: WebPkiSupportedAlgorithms,
}

impl NoVerify {
    fn new() -> Self {
        let provider = CryptoProvider::get_default()
            .cloned()
            .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
        Self {
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(cert: bool, key: bool, cas: usize, require: bool) -> ServerTlsOptions {
        ServerTlsOptions {
            cert_file: cert.then(|| "/nonexistent/cert.pem".into()),
            key_file: key.then(|| "/nonexistent/key.pem".into()),
            client_ca_files: vec!["/nonexistent/ca.pem".into(); cas],
            require_client_cert: require,
        }
    }

    #[test]
    fn server_flag_combinations() {
        let tcp = "localhost:54321";
        assert!(
            ServerTls::load(&server(false, false, 0, false), tcp)
                .unwrap()
                .is_none()
        );
        assert!(matches!(
            ServerTls::load(&server(true, false, 0, false), tcp),
            Err(TlsError::CertWithoutKey(_))
        ));
        assert!(matches!(
            ServerTls::load(&server(false, true, 0, false), tcp),
            Err(TlsError::CertWithoutKey(_))
        ));
        assert!(matches!(
            ServerTls::load(&server(true, true, 0, true), tcp),
            Err(TlsError::RequireWithoutCa)
        ));
        assert!(matches!(
            ServerTls::load(&server(true, true, 1, false), tcp),
            Err(TlsError::CaWithoutRequire)
        ));
        assert!(matches!(
            ServerTls::load(&server(false, false, 1, true), tcp),
            Err(TlsError::MtlsWithoutTls)
        ));
        assert!(matches!(
            ServerTls::load(&server(true, true, 0, false), "unix:///run/x.sock"),
            Err(TlsError::UnixAddress(_))
        ));
        // Valid combination: now the files are read.
        assert!(matches!(
            ServerTls::load(&server(true, true, 1, true), tcp),
            Err(TlsError::Read { .. })
        ));
    }

    #[test]
    fn client_flag_combinations() {
        let ep = || Endpoint::from_static("https://localhost:54321");
        let off = ClientTlsOptions {
            server_name: Some("x".into()),
            skip_verify: true,
            ..Default::default()
        };
        assert!(!off.enabled());
        assert!(off.apply(ep()).is_ok());
        let half = ClientTlsOptions {
            cert_file: Some("/nonexistent".into()),
            ..Default::default()
        };
        assert!(matches!(half.apply(ep()), Err(TlsError::CertWithoutKey(_))));
        let both = ClientTlsOptions {
            ca_files: vec!["/nonexistent".into()],
            skip_verify: true,
            ..Default::default()
        };
        assert!(matches!(both.apply(ep()), Err(TlsError::SkipVerifyWithCa)));
        let missing = ClientTlsOptions {
            ca_files: vec!["/nonexistent".into()],
            ..Default::default()
        };
        assert!(matches!(missing.apply(ep()), Err(TlsError::Read { .. })));
    }

    #[test]
    fn pem_checks() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "hello").unwrap();
        assert!(matches!(read_certs(&junk), Err(TlsError::NoCertificate(_))));
        assert!(matches!(read_key(&junk), Err(TlsError::NoKey(_))));
    }
}
