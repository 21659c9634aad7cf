//! Kernel events: ring-buffer reader, decoding, enrichment, output formats.
pub mod compact;
pub mod decode;
pub mod net;
pub mod ratelimit;
pub mod reader;
pub mod tetragon;
