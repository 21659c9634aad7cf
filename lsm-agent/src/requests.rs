//! The user-space actions of fired selectors: `GetUrl` fetches `argUrl` and `DnsLookup`
//! resolves `argFqdn` once for each event such a selector posts, as Tetragon does (a
//! "canary" that tells an outside service the selector fired). An edge: a subscriber of the
//! event bus that acts on our own events; nothing earlier in the flow waits for it.
//!
//! Requests run concurrently, at most [`MAX_IN_FLIGHT`] at once, each bounded by
//! [`TIMEOUT`]; one that finds no room is dropped and logged, so a flood of matching events
//! cannot pile up connections. The response (status, body) is not used: fetching it is the
//! notification.
use std::{sync::Arc, time::Duration};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use crate::dns::Lookup;
use crate::events::bus::{RecvError, Subscriber};
use crate::events::model::{EventKind, UserRequest};

/// Requests under way at once.
pub const MAX_IN_FLIGHT: usize = 16;
/// How long one request may take, connection and DNS included.
pub const TIMEOUT: Duration = Duration::from_secs(10);

type HttpsClient = Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Empty<Bytes>,
>;

/// An HTTP/1 client for `http://` and `https://` URLs, trusting the system's roots.
fn http_client() -> std::io::Result<HttpsClient> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()?
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(https))
}

/// Performs the request of every posted event that carries one, until the bus closes.
pub async fn run<L: Lookup>(mut events: Subscriber, lookup: L) {
    let client = match http_client() {
        Ok(c) => Some(c),
        Err(e) => {
            warn!("GetUrl: no TLS roots ({e}): GetUrl actions will not be performed");
            None
        }
    };
    let lookup = Arc::new(lookup);
    let room = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    loop {
        let ev = match events.recv().await {
            Ok(ev) => ev,
            // Counted by the bus as this subscriber's loss.
            Err(RecvError::Lagged(n)) => {
                warn!(
                    missed = n,
                    "GetUrl/DnsLookup: events missed, their requests not made"
                );
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        let EventKind::Hook(h) = &ev.kind else {
            continue;
        };
        let Some(request) = h.request.clone() else {
            continue;
        };
        let Ok(permit) = room.clone().try_acquire_owned() else {
            warn!(policy = %h.policy_name, ?request, "request dropped: {MAX_IN_FLIGHT} already under way");
            continue;
        };
        let policy = h.policy_name.clone();
        let client = client.clone();
        let lookup = lookup.clone();
        tokio::spawn(async move {
            let outcome =
                tokio::time::timeout(TIMEOUT, perform(&request, client.as_ref(), &*lookup)).await;
            match outcome {
                Ok(Ok(done)) => info!(%policy, ?request, "{done}"),
                Ok(Err(e)) => warn!(%policy, ?request, "request failed: {e}"),
                Err(_) => warn!(%policy, ?request, "request timed out after {TIMEOUT:?}"),
            }
            drop(permit);
        });
    }
}

/// Makes one request; `Ok` says what came back.
async fn perform<L: Lookup>(
    request: &UserRequest,
    client: Option<&HttpsClient>,
    lookup: &L,
) -> Result<String, String> {
    match request {
        UserRequest::GetUrl(url) => {
            let client = client.ok_or("no HTTP client")?;
            let uri: hyper::Uri = url.parse().map_err(|e| format!("{e}"))?;
            let resp = client.get(uri).await.map_err(|e| format!("{e}"))?;
            let status = resp.status();
            // Read to the end so the connection is reused or closed cleanly.
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("{e}"))?;
            debug!(bytes = body.to_bytes().len(), "GetUrl response body");
            Ok(format!("GetUrl: HTTP {status}"))
        }
        UserRequest::DnsLookup(name) => match lookup.lookup_ip(name).await {
            Ok(answers) => Ok(format!("DnsLookup: {} address(es)", answers.len())),
            Err(e) => Err(e.to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::Answer;
    use std::net::IpAddr;

    struct Fixed;
    impl Lookup for Fixed {
        async fn lookup_ip(&self, name: &str) -> Answer {
            assert_eq!(name, "canary.example");
            Ok(vec![(
                "192.0.2.1"
                    .parse::<IpAddr>()
                    .unwrap_or(IpAddr::from([0; 4])),
                60,
            )])
        }
    }

    #[tokio::test]
    async fn a_get_url_request_fetches_the_url_and_reports_the_status() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("listener");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.expect("read");
            s.write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                .await
                .expect("write");
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        let client = http_client().expect("client");
        let url = format!("http://{addr}/canary?x=1");
        let done = perform(&UserRequest::GetUrl(url), Some(&client), &Fixed)
            .await
            .expect("fetched");
        assert_eq!(done, "GetUrl: HTTP 204 No Content");
        let request = server.await.expect("server");
        assert!(
            request.starts_with("GET /canary?x=1 HTTP/1.1\r\n"),
            "{request}"
        );
    }

    #[tokio::test]
    async fn a_dns_lookup_request_resolves_the_name() {
        let done = perform(
            &UserRequest::DnsLookup("canary.example".into()),
            None,
            &Fixed,
        )
        .await
        .expect("resolved");
        assert_eq!(done, "DnsLookup: 1 address(es)");
    }
}
