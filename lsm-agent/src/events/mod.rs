//! Kernel events: ring-buffer reader, decoding, enrichment, output formats.
pub mod decode;
pub mod ratelimit;
pub mod reader;
pub mod tetragon;
