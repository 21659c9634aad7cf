//! Tetragon-compatible gRPC API.
pub mod policy;
pub mod server;
pub mod tls;

/// The API's messages (defined by the [`tetragon`](crate::tetragon) wire format).
pub use crate::tetragon::proto;
pub use policy::{PolicyApi, PolicyControl};
pub use server::{
    GrpcError, Listeners, bind, serve, serve_listeners, serve_listeners_tls, tcp_port,
};
