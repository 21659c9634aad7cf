//! The set of loaded policies and the one place that turns it into map contents.
//!
//! Every change (add, delete, enable, disable, mode) recompiles the whole set and applies the
//! resulting image; a change that fails to compile or apply leaves what was enforcing before.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex, RwLock},
};

use tracing::{info, warn};

use crate::{
    grpc::{
        PolicyControl,
        proto::tetragon::{
            HealthStatusResult, TracingPolicyMode, TracingPolicyState, TracingPolicyStatus,
        },
    },
    policy::{
        compile::{CompileError, MapImage, compile},
        ir::{HookOrigin, Policy, PolicyMode},
        parse::parse_policy,
    },
};

/// Where map images go: the loaded BPF object, or a recorder in tests.
pub trait MapWriter: Send {
    fn apply(&mut self, img: &MapImage) -> Result<(), String>;

    /// The kernel's `STAT_*` counters, summed over CPUs (none without a kernel).
    fn kernel_stats(&self) -> Option<[u64; lsm_shared::NUM_STATS as usize]> {
        None
    }
}

impl MapWriter for crate::bpf::Probe {
    fn apply(&mut self, img: &MapImage) -> Result<(), String> {
        crate::bpf::Probe::apply(self, img).map_err(|e| e.to_string())
    }

    fn kernel_stats(&self) -> Option<[u64; lsm_shared::NUM_STATS as usize]> {
        Some(self.stats())
    }
}

/// Where a policy came from (Tetragon's "domain").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `--tracing-policy` or `--tracing-policy-dir`.
    File(PathBuf),
    /// `AddTracingPolicy`.
    Grpc,
}

#[derive(Debug, Clone)]
pub struct LoadedPolicy {
    pub id: u32,
    pub policy: Policy,
    pub source: Source,
    pub enabled: bool,
}

impl LoadedPolicy {
    fn namespace(&self) -> &str {
        self.policy.namespace.as_deref().unwrap_or("")
    }

    fn has_enforcement(&self) -> bool {
        self.policy.hooks.iter().any(|h| {
            h.selectors.iter().any(|s| {
                s.actions.iter().any(|a| {
                    use crate::policy::ir::Action::*;
                    matches!(a, Sigkill | Override { .. } | Signal { .. })
                })
            })
        })
    }
}

struct State {
    writer: Box<dyn MapWriter>,
    policies: Vec<LoadedPolicy>,
    next_id: u32,
}

/// Loaded policies plus the map image they compile to. Cheap to clone.
#[derive(Clone)]
pub struct Agent {
    state: Arc<Mutex<State>>,
    image: Arc<RwLock<Arc<MapImage>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Compile(#[from] CompileError),
    #[error("writing BPF maps: {0}")]
    Apply(String),
    #[error("a policy named {0:?} is already loaded")]
    Duplicate(String),
    #[error("no policy named {0:?}")]
    NotFound(String),
}

impl Agent {
    pub fn new(writer: Box<dyn MapWriter>) -> Self {
        Agent {
            state: Arc::new(Mutex::new(State {
                writer,
                policies: Vec::new(),
                next_id: 1,
            })),
            image: Arc::new(RwLock::new(Arc::new(MapImage::default()))),
        }
    }

    /// The image the kernel enforces now (for decoding events).
    pub fn image(&self) -> Arc<MapImage> {
        match self.image.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data (changes are all-or-nothing).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Recompiles `candidate` and applies it; on success it becomes the loaded set.
    fn commit(&self, st: &mut State, candidate: Vec<LoadedPolicy>) -> Result<(), AgentError> {
        let enabled: Vec<(u32, &Policy)> = candidate
            .iter()
            .filter(|p| p.enabled)
            .map(|p| (p.id, &p.policy))
            .collect();
        let img = compile(&enabled)?;
        st.writer.apply(&img).map_err(AgentError::Apply)?;
        st.policies = candidate;
        match self.image.write() {
            Ok(mut g) => *g = Arc::new(img),
            Err(p) => *p.into_inner() = Arc::new(img),
        }
        Ok(())
    }

    /// Adds a batch of policies at once (start-up): all or nothing.
    pub fn add_all(&self, batch: Vec<(Policy, Source)>) -> Result<(), AgentError> {
        let mut st = self.lock();
        let mut candidate = st.policies.clone();
        let mut next = st.next_id;
        for (policy, source) in batch {
            if candidate
                .iter()
                .any(|p| p.policy.name == policy.name && p.policy.namespace == policy.namespace)
            {
                return Err(AgentError::Duplicate(policy.name));
            }
            for w in &policy.warnings {
                warn!(policy = %policy.name, "{w}");
            }
            candidate.push(LoadedPolicy {
                id: next,
                policy,
                source,
                enabled: true,
            });
            next += 1;
        }
        self.commit(&mut st, candidate)?;
        st.next_id = next;
        Ok(())
    }

    pub fn add(&self, policy: Policy, source: Source) -> Result<(), AgentError> {
        self.add_all(vec![(policy, source)])
    }

    fn modify(
        &self,
        name: &str,
        namespace: &str,
        f: impl FnOnce(&mut Vec<LoadedPolicy>, usize),
    ) -> Result<(), AgentError> {
        let mut st = self.lock();
        let mut candidate = st.policies.clone();
        let idx = candidate
            .iter()
            .position(|p| p.policy.name == name && p.namespace() == namespace)
            .ok_or_else(|| AgentError::NotFound(name.to_string()))?;
        f(&mut candidate, idx);
        self.commit(&mut st, candidate)
    }

    pub fn delete(&self, name: &str, namespace: &str) -> Result<(), AgentError> {
        self.modify(name, namespace, |c, i| {
            c.remove(i);
        })
    }

    pub fn set_enabled(&self, name: &str, namespace: &str, on: bool) -> Result<(), AgentError> {
        self.modify(name, namespace, |c, i| c[i].enabled = on)
    }

    pub fn set_mode(
        &self,
        name: &str,
        namespace: &str,
        mode: PolicyMode,
    ) -> Result<(), AgentError> {
        self.modify(name, namespace, |c, i| c[i].policy.mode = mode)
    }

    pub fn kernel_stats(&self) -> Option<[u64; lsm_shared::NUM_STATS as usize]> {
        self.lock().writer.kernel_stats()
    }

    pub fn policies(&self) -> Vec<LoadedPolicy> {
        self.lock().policies.clone()
    }

    // `enabled` is deprecated in the API but older tetra versions still read it.
    #[allow(deprecated)]
    pub fn status(&self) -> Vec<TracingPolicyStatus> {
        self.lock()
            .policies
            .iter()
            .map(|p| {
                let mut sensors: Vec<String> = p
                    .policy
                    .hooks
                    .iter()
                    .map(|h| match h.origin {
                        HookOrigin::Kprobe { .. } => "generic_kprobe".to_string(),
                        HookOrigin::LsmHook => "generic_lsm".to_string(),
                    })
                    .collect();
                sensors.dedup();
                let mode = if !p.has_enforcement() {
                    TracingPolicyMode::TpModeMonitorOnly
                } else if p.policy.mode == PolicyMode::Monitor {
                    TracingPolicyMode::TpModeMonitor
                } else {
                    TracingPolicyMode::TpModeEnforce
                };
                TracingPolicyStatus {
                    id: u64::from(p.id),
                    name: p.policy.name.clone(),
                    namespace: p.namespace().to_string(),
                    info: match &p.source {
                        Source::File(f) => f.display().to_string(),
                        Source::Grpc => String::new(),
                    },
                    sensors,
                    enabled: p.enabled,
                    state: if p.enabled {
                        TracingPolicyState::TpStateEnabled
                    } else {
                        TracingPolicyState::TpStateDisabled
                    } as i32,
                    mode: mode as i32,
                    domain: match p.source {
                        Source::File(_) => "static".into(),
                        Source::Grpc => "grpc".into(),
                    },
                    ..Default::default()
                }
            })
            .collect()
    }
}

impl PolicyControl for Agent {
    fn list(&self) -> Vec<TracingPolicyStatus> {
        self.status()
    }

    fn add(&self, yaml: String) -> Result<(), String> {
        let policy =
            parse_policy(&yaml, std::path::Path::new("<grpc>")).map_err(|e| e.to_string())?;
        let name = policy.name.clone();
        Agent::add(self, policy, Source::Grpc).map_err(|e| e.to_string())?;
        info!(policy = %name, "policy added over gRPC");
        Ok(())
    }

    fn delete(&self, name: &str, namespace: &str) -> Result<(), String> {
        Agent::delete(self, name, namespace).map_err(|e| e.to_string())
    }

    fn set_enabled(&self, name: &str, namespace: &str, enabled: bool) -> Result<(), String> {
        Agent::set_enabled(self, name, namespace, enabled).map_err(|e| e.to_string())
    }

    fn set_mode(&self, name: &str, namespace: &str, mode: TracingPolicyMode) -> Result<(), String> {
        let mode = match mode {
            TracingPolicyMode::TpModeMonitor => PolicyMode::Monitor,
            TracingPolicyMode::TpModeEnforce => PolicyMode::Enforce,
            other => return Err(format!("unsupported mode {}", other.as_str_name())),
        };
        Agent::set_mode(self, name, namespace, mode).map_err(|e| e.to_string())
    }

    fn health(&self) -> (HealthStatusResult, String) {
        (HealthStatusResult::HealthStatusRunning, "running".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records every image it is asked to write; can be told to fail.
    pub struct Recorder {
        pub images: Arc<Mutex<Vec<MapImage>>>,
        pub fail: bool,
    }

    impl MapWriter for Recorder {
        fn apply(&mut self, img: &MapImage) -> Result<(), String> {
            if self.fail {
                return Err("injected".into());
            }
            self.images.lock().unwrap().push(img.clone());
            Ok(())
        }
    }

    const YAML: &str = r#"
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: "lsm-file-open"
spec:
  lsmhooks:
  - hook: "file_open"
    args:
      - index: 0
        type: "file"
    selectors:
    - matchArgs:
      - index: 0
        operator: "Equal"
        values:
        - "/etc/passwd"
      matchActions:
      - action: Override
        argError: -1
"#;

    fn agent() -> (Agent, Arc<Mutex<Vec<MapImage>>>) {
        let images = Arc::new(Mutex::new(Vec::new()));
        let a = Agent::new(Box::new(Recorder {
            images: images.clone(),
            fail: false,
        }));
        (a, images)
    }

    #[test]
    fn adding_a_policy_writes_its_entries_and_lists_it_enabled() {
        let (a, images) = agent();
        PolicyControl::add(&a, YAML.into()).unwrap();
        assert_eq!(images.lock().unwrap().len(), 1);
        assert_eq!(a.image().str_eq.len(), 1);
        let st = a.status();
        assert_eq!(st[0].name, "lsm-file-open");
        assert_eq!(st[0].state, TracingPolicyState::TpStateEnabled as i32);
        assert_eq!(st[0].mode, TracingPolicyMode::TpModeEnforce as i32);
        assert_eq!(st[0].sensors, vec!["generic_lsm"]);
    }

    #[test]
    fn disabling_removes_entries_and_deleting_forgets_the_policy() {
        let (a, _) = agent();
        PolicyControl::add(&a, YAML.into()).unwrap();
        a.set_enabled("lsm-file-open", "", false).unwrap();
        assert!(a.image().str_eq.is_empty());
        assert_eq!(
            a.status()[0].state,
            TracingPolicyState::TpStateDisabled as i32
        );
        a.delete("lsm-file-open", "").unwrap();
        assert!(a.status().is_empty());
        assert!(a.delete("lsm-file-open", "").is_err());
    }

    #[test]
    fn a_failed_apply_keeps_the_previous_set() {
        let a = Agent::new(Box::new(Recorder {
            images: Arc::new(Mutex::new(Vec::new())),
            fail: true,
        }));
        assert!(PolicyControl::add(&a, YAML.into()).is_err());
        assert!(a.status().is_empty());
    }

    #[test]
    fn the_same_name_cannot_be_loaded_twice() {
        let (a, _) = agent();
        PolicyControl::add(&a, YAML.into()).unwrap();
        assert!(
            PolicyControl::add(&a, YAML.into())
                .unwrap_err()
                .contains("already loaded")
        );
    }
}
