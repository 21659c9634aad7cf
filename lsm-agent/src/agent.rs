//! The set of loaded policies and the one place that turns it into map contents.
//!
//! Every change (add, delete, enable, disable, mode) recompiles the whole set and applies the
//! resulting image; a change that fails to compile or apply leaves what was enforcing before.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use tracing::{error, info, warn};

use crate::{
    grpc::{
        PolicyControl,
        proto::tetragon::{
            HealthStatusResult, TracingPolicyActionCounters, TracingPolicyMode, TracingPolicyState,
            TracingPolicyStats, TracingPolicyStatus,
        },
    },
    policy::{
        compile::{CompileEnv, CompileError, MapImage, compile_with},
        ir::{HookOrigin, HostNs, Policy, PolicyMode},
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

    /// Action counters per selector slot index (`hook * MAX_SELECTORS + slot`).
    fn counters(&self) -> BTreeMap<u32, lsm_shared::ActionCounters> {
        BTreeMap::new()
    }
}

impl MapWriter for crate::bpf::Probe {
    fn apply(&mut self, img: &MapImage) -> Result<(), String> {
        crate::bpf::Probe::apply(self, img).map_err(|e| e.to_string())
    }

    fn kernel_stats(&self) -> Option<[u64; lsm_shared::NUM_STATS as usize]> {
        Some(self.stats())
    }

    fn counters(&self) -> BTreeMap<u32, lsm_shared::ActionCounters> {
        crate::bpf::Probe::counters(self)
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
    /// Policy files whose latest content could not be loaded, with the reason. The version
    /// loaded before (if any) keeps enforcing.
    file_errors: BTreeMap<PathBuf, String>,
    /// Node facts and `dns:` answers the policies compile against.
    env: CompileEnv,
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
    /// An agent without knowledge of the node's namespaces (`host_ns` matches nothing).
    pub fn new(writer: Box<dyn MapWriter>) -> Self {
        Self::with_host_ns(writer, HostNs::default())
    }

    pub fn with_host_ns(writer: Box<dyn MapWriter>, host_ns: HostNs) -> Self {
        Agent {
            state: Arc::new(Mutex::new(State {
                writer,
                policies: Vec::new(),
                next_id: 1,
                file_errors: BTreeMap::new(),
                env: CompileEnv {
                    host_ns,
                    ..Default::default()
                },
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
        let installed = self.image();
        let img = compile_with(&enabled, &installed, &st.env)?;
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

    /// Loads `policy` as the content of `path`: replaces the version loaded from that file in
    /// one switch (the old version enforces until the new one does), or adds it.
    pub fn upsert_file(&self, path: &Path, policy: Policy) -> Result<(), AgentError> {
        let mut st = self.lock();
        let mut candidate = st.policies.clone();
        let source = Source::File(path.to_path_buf());
        let pos = candidate.iter().position(|p| p.source == source);
        if candidate.iter().enumerate().any(|(i, p)| {
            Some(i) != pos && p.policy.name == policy.name && p.policy.namespace == policy.namespace
        }) {
            return Err(AgentError::Duplicate(policy.name));
        }
        for w in &policy.warnings {
            warn!(policy = %policy.name, "{w}");
        }
        let id = st.next_id;
        let loaded = LoadedPolicy {
            id,
            enabled: pos.is_none_or(|i| candidate[i].enabled),
            policy,
            source,
        };
        match pos {
            Some(i) => candidate[i] = loaded,
            None => candidate.push(loaded),
        }
        self.commit(&mut st, candidate)?;
        st.next_id = id + 1;
        st.file_errors.remove(path);
        Ok(())
    }

    /// Unloads the policy that came from `path` (the file was removed).
    pub fn remove_file(&self, path: &Path) -> Result<(), AgentError> {
        let mut st = self.lock();
        st.file_errors.remove(path);
        let source = Source::File(path.to_path_buf());
        if !st.policies.iter().any(|p| p.source == source) {
            return Ok(());
        }
        let candidate = st
            .policies
            .iter()
            .filter(|p| p.source != source)
            .cloned()
            .collect();
        self.commit(&mut st, candidate)
    }

    /// Records that the latest content of `path` was refused.
    pub fn set_file_error(&self, path: &Path, message: String) {
        self.lock().file_errors.insert(path.to_path_buf(), message);
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
    /// Every `dns:` name the loaded policies use, for the resolver to watch.
    pub fn dns_names(&self) -> std::collections::BTreeSet<String> {
        let st = self.lock();
        st.policies
            .iter()
            .flat_map(|p| p.policy.hooks.iter())
            .flat_map(|h| h.selectors.iter())
            .flat_map(|s| s.match_args.iter())
            .filter_map(|f| match &f.kind {
                crate::policy::ir::FilterKind::Addr { values, .. } => Some(values),
                _ => None,
            })
            .flatten()
            .filter_map(|v| match v {
                crate::policy::ir::AddrValue::Dns(name) => Some(name.clone()),
                _ => None,
            })
            .collect()
    }

    /// Installs new answers for `dns:` names: the policies are recompiled against them and
    /// applied without a gap. Unchanged answers are a no-op.
    pub fn set_dns(&self, dns: BTreeMap<String, Vec<std::net::IpAddr>>) -> Result<(), AgentError> {
        let mut st = self.lock();
        if st.env.dns == dns {
            return Ok(());
        }
        let previous = std::mem::replace(&mut st.env.dns, dns);
        let candidate = st.policies.clone();
        let result = self.commit(&mut st, candidate);
        if result.is_err() {
            st.env.dns = previous;
        }
        result
    }

    pub fn status(&self) -> Vec<TracingPolicyStatus> {
        let st = self.lock();
        let image = self.image();
        // Per policy id: the sum of its selectors' counters.
        let mut per_policy: BTreeMap<u32, lsm_shared::ActionCounters> = BTreeMap::new();
        for (idx, c) in st.writer.counters() {
            if let Some(info) = image.slots.get(&idx) {
                let sum = per_policy.entry(info.policy_id).or_default();
                for (s, v) in sum.c.iter_mut().zip(c.c) {
                    *s += v;
                }
            }
        }
        let mut out: Vec<TracingPolicyStatus> = st
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
                let mut status = TracingPolicyStatus {
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
                    stats: per_policy.get(&p.id).map(|c| {
                        use lsm_shared::*;
                        TracingPolicyStats {
                            action_counters: Some(TracingPolicyActionCounters {
                                post: c.c[CNT_POST],
                                nopost: c.c[CNT_NOPOST],
                                signal: c.c[CNT_SIGNAL],
                                monitor_signal: c.c[CNT_MONITOR_SIGNAL],
                                r#override: c.c[CNT_OVERRIDE],
                                monitor_override: c.c[CNT_MONITOR_OVERRIDE],
                                ..Default::default()
                            }),
                        }
                    }),
                    domain: match p.source {
                        Source::File(_) => "static".into(),
                        Source::Grpc => "grpc".into(),
                    },
                    ..Default::default()
                };
                // A refused new version: the old one still enforces, but say so loudly.
                if let Source::File(f) = &p.source
                    && let Some(e) = st.file_errors.get(f)
                {
                    status.state = TracingPolicyState::TpStateError as i32;
                    status.error = format!("new version not loaded, previous one enforcing: {e}");
                }
                status
            })
            .collect();
        for (f, e) in &st.file_errors {
            let loaded = st
                .policies
                .iter()
                .any(|p| p.source == Source::File(f.clone()));
            if !loaded {
                out.push(TracingPolicyStatus {
                    name: f
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    info: f.display().to_string(),
                    state: TracingPolicyState::TpStateLoadError as i32,
                    error: e.clone(),
                    domain: "static".into(),
                    ..Default::default()
                });
            }
        }
        out
    }
}

/// The policy files of `dir` (`*.yaml`, `*.yml`) and their contents.
pub fn read_policy_dir(dir: &Path) -> BTreeMap<PathBuf, String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
        })
        .filter_map(|p| std::fs::read_to_string(&p).ok().map(|t| (p, t)))
        .collect()
}

/// Keeps the loaded policies in step with `dir`: a new file is added, a changed file replaces
/// its policy without a gap, a removed file removes it. A file that fails to load leaves its
/// previous version enforcing and is reported (log and policy list). `known` holds what was
/// loaded at start-up.
pub async fn watch_dir(
    agent: Agent,
    dir: PathBuf,
    mut known: BTreeMap<PathBuf, String>,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let current = read_policy_dir(&dir);
        for (path, text) in &current {
            if known.get(path) == Some(text) {
                continue;
            }
            known.insert(path.clone(), text.clone());
            let result = crate::policy::parse::parse_policy_file(path)
                .map_err(|e| e.to_string())
                .and_then(|p| {
                    let name = p.name.clone();
                    agent
                        .upsert_file(path, p)
                        .map(|()| name)
                        .map_err(|e| e.to_string())
                });
            match result {
                Ok(name) => info!(policy = %name, file = %path.display(), "policy (re)loaded"),
                Err(e) => {
                    error!(file = %path.display(), "policy not loaded, previous version kept: {e}");
                    agent.set_file_error(path, e);
                }
            }
        }
        let gone: Vec<PathBuf> = known
            .keys()
            .filter(|p| !current.contains_key(*p))
            .cloned()
            .collect();
        for path in gone {
            known.remove(&path);
            match agent.remove_file(&path) {
                Ok(()) => info!(file = %path.display(), "policy file removed, policy unloaded"),
                Err(e) => error!(file = %path.display(), "unloading policy: {e}"),
            }
        }
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

    /// Denies opening /etc/passwd (Override -1, EPERM) at file_open.
    const YAML: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testdata/policies/deny-etc-passwd-open.yaml"
    ));

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
    fn replacing_a_file_policy_switches_to_new_slots_and_a_broken_version_is_reported() {
        let (a, images) = agent();
        let path = Path::new("/tp/p.yaml");
        let p = parse_policy(YAML, path).unwrap();
        a.upsert_file(path, p.clone()).unwrap();
        a.upsert_file(path, p).unwrap();
        let imgs = images.lock().unwrap();
        let h = lsm_shared::HOOK_FILE_OPEN;
        assert_eq!(imgs[0].hook_cfg[&h].selectors, 0b01);
        assert_eq!(
            imgs[1].hook_cfg[&h].selectors, 0b10,
            "the new version gets a fresh slot"
        );
        drop(imgs);
        assert_eq!(a.status().len(), 1);
        a.set_file_error(path, "bad".into());
        let st = a.status();
        assert_eq!(st[0].state, TracingPolicyState::TpStateError as i32);
        assert!(st[0].error.contains("previous one enforcing"));
        a.remove_file(path).unwrap();
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
