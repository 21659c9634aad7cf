//! What the agent reports about its policies and itself, in its own terms. The edges (gRPC's
//! `TracingPolicyStatus`, the metrics) convert these at their border.

use super::state::Source;

/// One policy as the agent sees it (Tetragon's `TracingPolicyStatus` carries the same facts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyStatus {
    /// `None` for a policy file that could not be loaded at all.
    pub id: Option<u32>,
    pub name: String,
    pub namespace: String,
    /// Where it came from: the file (Tetragon's `info`) and its domain.
    pub source: Source,
    /// One per hook entry, consecutive duplicates left out.
    pub sensors: Vec<Sensor>,
    pub enabled: bool,
    pub state: PolicyState,
    /// `None` when nothing is loaded.
    pub mode: Option<EffectiveMode>,
    /// The kernel's counters summed over the policy's selectors; `None` when it has no
    /// selectors in the kernel (disabled, not loaded).
    pub actions: Option<ActionCounts>,
    pub error: Option<String>,
}

/// Tetragon's policy states. The agent reports `Enabled`, `Disabled`, `Error` (a loaded
/// policy whose file's latest content is not loaded) and `LoadError` (a file that never
/// loaded); the others are Tetragon's vocabulary, kept so that every edge can name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyState {
    Enabled,
    Disabled,
    Error,
    LoadError,
    PartiallyEnabled,
    Skipped,
}

/// How a loaded policy acts on what its selectors match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EffectiveMode {
    /// Its enforcing actions (Sigkill, Override, Signal) run.
    Enforce,
    /// Switched to monitor: enforcing actions are only counted.
    Monitor,
    /// It has no enforcing action at all.
    MonitorOnly,
}

/// Which kind of hook entry a policy uses (Tetragon's sensor).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sensor {
    /// `spec.kprobes`.
    Kprobe,
    /// `spec.lsmhooks`.
    Lsm,
}

/// Per-action counters of one policy, as the kernel counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ActionCounts {
    pub post: u64,
    pub nopost: u64,
    pub signal: u64,
    pub monitor_signal: u64,
    pub r#override: u64,
    pub monitor_override: u64,
}

impl ActionCounts {
    pub fn from_kernel(c: &lsm_shared::ActionCounters) -> Self {
        use lsm_shared::*;
        ActionCounts {
            post: c.c[CNT_POST],
            nopost: c.c[CNT_NOPOST],
            signal: c.c[CNT_SIGNAL],
            monitor_signal: c.c[CNT_MONITOR_SIGNAL],
            r#override: c.c[CNT_OVERRIDE],
            monitor_override: c.c[CNT_MONITOR_OVERRIDE],
        }
    }
}

/// The agent's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub state: HealthState,
    pub details: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthState {
    /// Policies can be changed and are enforced.
    Running,
    /// The policy owner is gone: the agent is stopping.
    Stopped,
}
