//! The loaded policies and the kernel maps they compile to.
//!
//! * [`state`]: the synchronous state machine ([`Agent`]): add, replace, remove, enable,
//!   mode, `dns:` answers, status. Every change recompiles the whole set and applies it.
//! * [`owner`]: the one task that owns the [`Agent`] (and the kernel behind its
//!   [`MapWriter`]); everything else holds an [`AgentHandle`] and sends it commands.
//! * [`status`]: what the agent reports about its policies, in its own types.
//! * [`dir`]: the `--tracing-policy-dir` lister and watcher.
pub mod dir;
pub mod owner;
pub mod state;
pub mod status;

/// What the kernel counts of each loaded program; metrics read it through the agent.
pub use crate::bpf::ProgramStats;
pub use crate::bpf::canary::{HookCanary, Verdict};
pub use owner::{AgentHandle, Owner, owner};
pub use state::{
    Agent, AgentError, CrdKind, KernelStats, KubeObject, LoadedPolicy, MapWriter, Prepared, Source,
    SourceError,
};
pub use status::{
    ActionCounts, EffectiveMode, Health, HealthState, HookStatus, PolicyState, PolicyStatus, Sensor,
};
