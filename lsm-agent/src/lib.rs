//! lsm-agent: Tetragon-compatible policies enforced at BPF-LSM hooks.
//!
//! Data flows one way (policy → compile → maps → BPF hook → ring buffer → decode → enrich →
//! event bus → outputs) and a module imports only modules earlier in that flow. The core
//! knows nothing of any output format; the edges convert its types at their border.
//!
//! The core, in flow order:
//!
//! * [`policy`]: parse, validate and compile `TracingPolicy` YAML into map entries (pure).
//! * [`procfs`]: processes as `/proc` shows them (for the seeding and the enrichment).
//! * [`bpf`]: load and attach the programs, write compiled policies into their maps, seed the
//!   kernel's process table.
//! * [`agent`]: the loaded policies, the one task that owns the kernel maps, the policy
//!   directory watcher.
//! * [`dns`]: resolve the `dns:<name>` address values and keep their answers current.
//! * [`events`]: read the ring buffer, decode, enrich with process data into our own event
//!   model, and publish on the event bus.
//!
//! The edges, which convert the core's types at their border:
//!
//! * [`tetragon`]: the Tetragon wire format: protobuf messages, the conversion of our events,
//!   protojson, compact lines, `GetEvents` filters.
//! * [`grpc`]: the Tetragon-compatible `FineGuidanceSensors` API.
//! * [`export`]: the JSON export file (`--export-filename`), with rotation and filters.
//! * [`metrics`]: Prometheus metrics (`--metrics-server`), read from core types only.
//! * [`requests`]: the `GetUrl`/`DnsLookup` actions, performed for the events that carry them.
//! * [`listen`]: binding the TCP listeners of the servers.
//! * [`supervise`]: the daemon's tasks under one shutdown signal.
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
pub mod procfs;
pub mod requests;
pub mod supervise;
pub mod tetragon;
