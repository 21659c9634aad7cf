//! Kernel events: read from the ring buffer, decoded, enriched with what the agent knows about
//! the processes into our own [`model`] events, and published on the [`bus`].
pub mod bus;
pub mod decode;
pub mod enrich;
pub mod model;
pub mod ratelimit;
pub mod reader;
