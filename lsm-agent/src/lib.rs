//! lsm-agent: Tetragon-compatible policies enforced at BPF-LSM hooks.
//!
//! * [`policy`]: parse, validate and compile `TracingPolicy` YAML into map entries (pure).
//! * [`bpf`]: load and attach the programs, write compiled policies into their maps.
//! * [`events`]: read the ring buffer, decode, enrich with process data, format.
//! * [`dns`]: resolve the `dns:<name>` address values and keep their answers current.
//! * [`grpc`]: the Tetragon-compatible `FineGuidanceSensors` API.
//! * [`export`]: the JSON export file (`--export-filename`), with rotation and filters.
//! * [`metrics`]: Prometheus metrics (`--metrics-server`).
//! * [`listen`]: binding the TCP listeners of the servers.
pub mod agent;
pub mod bpf;
pub mod dns;
pub mod events;
pub mod export;
pub mod grpc;
pub mod k8s;
pub mod listen;
pub mod metrics;
pub mod policy;
