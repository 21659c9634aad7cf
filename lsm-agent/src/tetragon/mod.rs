//! The Tetragon wire format, the one edge that knows it: the generated protobuf messages, the
//! conversion of our events into them, and what works on wire events (protojson, `tetra`'s
//! compact lines, `GetEvents` filters and field masks with the label-selector strings of their
//! `labels` field, Tetragon's names for socket fields).
//! The gRPC server and the JSON export use it; the core (policy, bpf, agent, events, dns)
//! does not.
pub mod compact;
pub mod convert;
pub mod fieldfilter;
pub mod filter;
pub mod json;
pub mod labels;
pub mod net;
pub mod proto;
