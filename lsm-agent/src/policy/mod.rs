//! Policies: YAML → validated model ([`ir`]) → map entries ([`compile`]).
pub mod check;
pub mod compile;
pub mod env;
pub mod error;
pub mod hooks;
pub mod ir;
pub(crate) mod lists;
pub mod locate;
mod model;
pub mod parse;
pub mod probes;
pub mod scope;
pub mod syscalls;
#[cfg(test)]
mod testutil;
mod validate;
pub(crate) mod values;
pub mod workloads;
