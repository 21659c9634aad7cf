//! Metrics read from the policy list at every scrape: policy states, each hook's entry
//! point, and the per-policy action counters.

use std::collections::{BTreeSet, HashMap, HashSet};

use ::metrics::{counter, gauge};

use super::{ACTIONS, POLICY_ACTIONS, POLICY_MODE, POLICY_STATES, TRACINGPOLICY_LOADED};
use crate::agent::PolicyStatus;

/// Sets `lsm_agent_tracingpolicy_loaded{state}` from the policy list.
pub fn record_policy_states(status: &[PolicyStatus]) {
    for (state, label) in POLICY_STATES {
        let n = status.iter().filter(|p| p.state == *state).count();
        gauge!(TRACINGPOLICY_LOADED, "state" => *label).set(n as f64);
    }
}

/// Keeps `lsm_agent_policy_mode{policy,hook,mode}` at 1 for every loaded policy's hooks and
/// sets the series of policies (or hooks) no longer loaded to 0: the exporter cannot drop a
/// series, and a 1 left behind would claim a deleted policy still observes or enforces.
#[derive(Debug, Default)]
pub struct PolicyModeTracker {
    last: BTreeSet<(String, String, &'static str)>,
}

impl PolicyModeTracker {
    pub fn record(&mut self, status: &[PolicyStatus]) {
        let now: BTreeSet<(String, String, &'static str)> = status
            .iter()
            .filter(|p| p.id.is_some())
            .flat_map(|p| {
                p.hooks
                    .iter()
                    .map(|h| (p.name.clone(), h.lsm_name().to_owned(), h.mode_name()))
            })
            .collect();
        for (policy, hook, mode) in self.last.difference(&now) {
            gauge!(POLICY_MODE, "policy" => policy.clone(), "hook" => hook.clone(), "mode" => *mode)
                .set(0.0);
        }
        for (policy, hook, mode) in &now {
            gauge!(POLICY_MODE, "policy" => policy.clone(), "hook" => hook.clone(), "mode" => *mode)
                .set(1.0);
        }
        self.last = now;
    }
}

/// A policy's action counters in [`ACTIONS`] order.
pub fn action_counts(p: &PolicyStatus) -> Option<[u64; 6]> {
    let c = p.actions?;
    Some([
        c.post,
        c.nopost,
        c.signal,
        c.r#override,
        c.monitor_signal,
        c.monitor_override,
    ])
}

/// Turns the per-policy action counters of the policy list into monotonic counters.
///
/// The kernel counts per selector slot, and a slot taken by a new version of a policy (a
/// reload gives it a new id) starts from zero, so the values are tracked per policy id: a new
/// id starts from zero, a value that went down (a slot reassigned) counts from zero again.
#[derive(Debug, Default)]
pub struct ActionTracker {
    last: HashMap<u32, [u64; 6]>,
}

impl ActionTracker {
    pub fn record(&mut self, status: &[PolicyStatus]) {
        let mut seen = HashSet::new();
        for p in status {
            let (Some(id), Some(now)) = (p.id, action_counts(p)) else {
                continue;
            };
            let last = self.last.get(&id).copied().unwrap_or_default();
            for (i, action) in ACTIONS.iter().enumerate() {
                let delta = if now[i] >= last[i] {
                    now[i] - last[i]
                } else {
                    now[i]
                };
                counter!(
                    POLICY_ACTIONS,
                    "policy" => p.name.clone(),
                    "policy_namespace" => p.namespace.clone(),
                    "action" => *action
                )
                .increment(delta);
            }
            self.last.insert(id, now);
            seen.insert(id);
        }
        // Disabled or removed: the slots are gone, a re-enabled policy counts from zero.
        self.last.retain(|id, _| seen.contains(id));
    }
}
