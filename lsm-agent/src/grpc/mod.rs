//! Tetragon-compatible gRPC API.
pub mod fieldfilter;
pub mod json;
pub mod policy;
pub mod proto;
pub mod server;
pub mod tls;

pub use policy::{PolicyApi, PolicyControl};
pub use server::{
    EventBus, EventFilter, GrpcError, Listeners, bind, serve, serve_listeners, serve_listeners_tls,
};
