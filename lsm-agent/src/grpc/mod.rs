//! Tetragon-compatible gRPC API.
pub mod proto;
