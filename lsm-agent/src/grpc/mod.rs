//! Tetragon-compatible gRPC API.
pub mod fieldfilter;
pub mod json;
pub mod proto;
pub mod server;
pub mod tls;

pub use server::{
    EventBus, EventFilter, GrpcError, Listeners, PolicyControl, bind, serve, serve_listeners,
    serve_listeners_tls,
};
