//! Binding TCP listeners for the agent's servers (gRPC, metrics).

use std::{io, net::SocketAddr};

use tokio::net::TcpListener;
use tracing::debug;

/// Binds every address in `candidates` (the addresses one `HOST:PORT` resolves to), all on
/// the same port. The first must bind: if it is taken, silently serving only on another one
/// would let clients reach whatever holds the first. Later ones may fail (typically `::1` on
/// a host without IPv6). Returns the address that failed and why otherwise.
pub async fn bind_all(
    candidates: Vec<SocketAddr>,
) -> Result<Vec<TcpListener>, (SocketAddr, io::Error)> {
    let mut listeners: Vec<TcpListener> = Vec::new();
    for mut sa in candidates {
        // With port 0 every family must share the port the first bind picked, or clients
        // resolving the name to the other family would miss us.
        if let Some(first) = listeners.first().and_then(|l| l.local_addr().ok()) {
            sa.set_port(first.port());
        }
        match TcpListener::bind(sa).await {
            Ok(l) => listeners.push(l),
            Err(e) if listeners.is_empty() => return Err((sa, e)),
            Err(e) => debug!(%sa, error = %e, "skipping additional listen address"),
        }
    }
    Ok(listeners)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn all_candidates_share_the_port_the_first_bind_picked() {
        let cands: Vec<SocketAddr> = vec![
            "127.0.0.1:0".parse().unwrap(),
            "127.0.0.2:0".parse().unwrap(),
        ];
        let l = bind_all(cands).await.expect("bind");
        let ports: Vec<u16> = l.iter().map(|l| l.local_addr().unwrap().port()).collect();
        assert_eq!(ports.len(), 2);
        assert_eq!(ports[0], ports[1]);
    }

    #[tokio::test]
    async fn a_taken_first_address_is_an_error() {
        let held = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = held.local_addr().unwrap();
        let err = bind_all(vec![addr]).await.expect_err("taken");
        assert_eq!(err.0, addr);
    }
}
