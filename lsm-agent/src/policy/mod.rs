//! Policies: YAML → validated model ([`ir`]) → map entries ([`compile`]).
pub mod compile;
pub mod error;
pub mod hooks;
pub mod ir;
pub mod locate;
pub mod parse;
