//! The set of loaded policies and the one place that turns it into map contents: a plain,
//! synchronous state machine. Only the owner task ([`super::owner`]) drives it in the daemon;
//! tests drive it directly.
//!
//! Every change (add, delete, enable, disable, mode, `dns:` answers) recompiles the whole set
//! and applies the resulting image; a change that fails to compile or apply leaves what was
//! enforcing before.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use tracing::warn;

use super::status::{ActionCounts, EffectiveMode, HookStatus, PolicyState, PolicyStatus, Sensor};
use crate::{
    bpf::BpfError,
    policy::{
        compile::{CompileEnv, CompileError, MapImage, compile_with},
        error::PolicyError,
        ir::{HookOrigin, HostNs, Policy, PolicyMode},
        workloads::Workloads,
    },
};

/// The kernel's `STAT_*` counters, summed over CPUs.
pub type KernelStats = [u64; lsm_shared::NUM_STATS as usize];

/// Where map images go: the loaded BPF object, or a recorder in tests.
pub trait MapWriter: Send {
    fn apply(&mut self, img: &MapImage) -> Result<(), BpfError>;

    /// The kernel's `STAT_*` counters (none without a kernel).
    fn kernel_stats(&self) -> Option<KernelStats> {
        None
    }

    /// Follows the containers of `resolvePathInContainer` uprobes (nothing without a kernel).
    fn follow_containers(&mut self) {}

    /// Each loaded program's run statistics (none without a kernel).
    fn program_stats(&self) -> Vec<crate::bpf::ProgramStats> {
        Vec::new()
    }

    /// Action counters per selector slot index (`hook * MAX_SELECTORS + slot`).
    fn counters(&self) -> BTreeMap<u32, lsm_shared::ActionCounters> {
        BTreeMap::new()
    }

    /// The entry point each hook got (every hook an LSM program without a kernel).
    fn hook_modes(&self) -> crate::bpf::HookModes {
        crate::bpf::HookModes::all(crate::bpf::AttachMode::Lsm)
    }

    /// What the kernel offers and what each hook got, as `GetInfo` lists it (nothing
    /// without a kernel).
    fn features(&self) -> Vec<(String, bool)> {
        Vec::new()
    }

    /// Runs the canary of every enforcing hook (none without a kernel).
    fn canary(&mut self) -> Vec<crate::bpf::canary::HookCanary> {
        Vec::new()
    }
}

impl MapWriter for crate::bpf::Probe {
    fn apply(&mut self, img: &MapImage) -> Result<(), BpfError> {
        crate::bpf::Probe::apply(self, img)
    }

    fn follow_containers(&mut self) {
        crate::bpf::Probe::follow_containers(self)
    }

    fn kernel_stats(&self) -> Option<KernelStats> {
        Some(self.stats())
    }

    fn program_stats(&self) -> Vec<crate::bpf::ProgramStats> {
        crate::bpf::Probe::program_stats(self)
    }

    fn counters(&self) -> BTreeMap<u32, lsm_shared::ActionCounters> {
        crate::bpf::Probe::counters(self)
    }

    fn hook_modes(&self) -> crate::bpf::HookModes {
        self.modes
    }

    fn features(&self) -> Vec<(String, bool)> {
        self.features.clone()
    }

    fn canary(&mut self) -> Vec<crate::bpf::canary::HookCanary> {
        crate::bpf::Probe::canary(self)
    }
}

/// Where a policy came from (Tetragon's "domain").
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    /// `--tracing-policy` or `--tracing-policy-dir`.
    File(PathBuf),
    /// `AddTracingPolicy`.
    Grpc,
    /// A `TracingPolicy` or `TracingPolicyNamespaced` object of the Kubernetes API.
    Kubernetes(KubeObject),
}

impl Source {
    /// The source's kind, as the `source` label of the load-error metric names it.
    pub fn label(&self) -> &'static str {
        match self {
            Source::File(_) => "file",
            Source::Grpc => "grpc",
            Source::Kubernetes(_) => "kubernetes",
        }
    }
}

/// The kinds of policy object of the Kubernetes API (the `k8s` module converts its own
/// watcher's keys into these at its border).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CrdKind {
    TracingPolicy,
    TracingPolicyNamespaced,
}

impl CrdKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CrdKind::TracingPolicy => "TracingPolicy",
            CrdKind::TracingPolicyNamespaced => "TracingPolicyNamespaced",
        }
    }
}

/// One policy object of the Kubernetes API: kind, namespace (namespaced kind only), name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KubeObject {
    pub kind: CrdKind,
    pub namespace: Option<String>,
    pub name: String,
}

impl std::fmt::Display for KubeObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind.as_str(), self.name),
            None => write!(f, "{} {}", self.kind.as_str(), self.name),
        }
    }
}

impl KubeObject {
    /// The pseudo file name its policy text is parsed under, so that errors read
    /// `<TracingPolicy name>:line:col: ...`.
    pub fn pseudo_path(&self) -> PathBuf {
        PathBuf::from(format!("<{self}>"))
    }
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

/// Why the latest version of a policy from a file or a Kubernetes object is not what
/// enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceError {
    /// The content was read but failed to parse, compile or apply.
    Rejected(String),
    /// The file, or its directory, could not be read.
    Unreadable(String),
    /// Not for this node (`spec.nodeSelector`); nothing of it is loaded.
    Skipped(String),
    /// Valid, but it cannot be enforced as written (e.g. it needs pod scoping); nothing of
    /// it is loaded.
    NotApplied(String),
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Parse(#[from] PolicyError),
    #[error(transparent)]
    Compile(#[from] CompileError),
    #[error("writing BPF maps: {0}")]
    Apply(#[source] BpfError),
    #[error("a policy named {0:?} is already loaded")]
    Duplicate(String),
    #[error("no policy named {0:?}")]
    NotFound(String),
    #[error("unsupported mode {0}")]
    UnsupportedMode(String),
    /// The owner task is gone (the agent is stopping, or it died).
    #[error("the policy owner task has stopped")]
    OwnerStopped,
}

/// Appends `batch` to `existing` with ids from `next_id`; refuses a name loaded twice.
/// Returns the candidate set and the next free id.
fn with_batch(
    existing: &[LoadedPolicy],
    batch: Vec<(Policy, Source)>,
    mut next_id: u32,
) -> Result<(Vec<LoadedPolicy>, u32), AgentError> {
    let mut candidate = existing.to_vec();
    for (policy, source) in batch {
        if candidate
            .iter()
            .any(|p| p.policy.name == policy.name && p.policy.namespace == policy.namespace)
        {
            return Err(AgentError::Duplicate(policy.name));
        }
        candidate.push(LoadedPolicy {
            id: next_id,
            policy,
            source,
            enabled: true,
        });
        next_id += 1;
    }
    Ok((candidate, next_id))
}

fn enabled_policies(policies: &[LoadedPolicy]) -> Vec<(u32, &Policy)> {
    policies
        .iter()
        .filter(|p| p.enabled)
        .map(|p| (p.id, &p.policy))
        .collect()
}

fn log_warnings(policies: &[LoadedPolicy]) {
    for p in policies {
        for w in &p.policy.warnings {
            warn!(policy = %p.policy.name, "{w}");
        }
    }
}

/// The start-up policy set, checked and compiled before the kernel is touched (so that a set
/// that cannot fit is refused before anything is loaded); [`Agent::start`] applies it as is.
#[derive(Debug)]
pub struct Prepared {
    policies: Vec<LoadedPolicy>,
    image: MapImage,
    env: CompileEnv,
    next_id: u32,
}

impl Prepared {
    /// `env` holds the node's namespaces and, with Kubernetes, `workloads.enabled` (the pods
    /// themselves follow with [`Agent::set_workloads`]).
    pub fn compile(batch: Vec<(Policy, Source)>, env: CompileEnv) -> Result<Self, AgentError> {
        let (policies, next_id) = with_batch(&[], batch, 1)?;
        let image = compile_with(&enabled_policies(&policies), &MapImage::default(), &env)?;
        Ok(Prepared {
            policies,
            image,
            env,
            next_id,
        })
    }

    pub fn policies(&self) -> &[LoadedPolicy] {
        &self.policies
    }
}

/// Loaded policies plus the map image they compile to, and the writer that enforces it.
pub struct Agent {
    writer: Box<dyn MapWriter>,
    policies: Vec<LoadedPolicy>,
    next_id: u32,
    /// Files and objects whose latest content is not loaded, with the reason. For
    /// `Rejected` and `Unreadable` the version loaded before (if any) keeps enforcing.
    source_errors: BTreeMap<Source, SourceError>,
    /// Rejected policy versions per source kind ([`Source::label`]), since the start.
    load_errors: BTreeMap<&'static str, u64>,
    /// Node facts and `dns:` answers the policies compile against.
    env: CompileEnv,
    /// What the kernel enforces now.
    image: Arc<MapImage>,
}

impl Agent {
    /// An agent without policies (`host_ns` matches nothing unless given).
    pub fn new(writer: Box<dyn MapWriter>, host_ns: HostNs) -> Self {
        Agent {
            writer,
            policies: Vec::new(),
            next_id: 1,
            source_errors: BTreeMap::new(),
            load_errors: BTreeMap::new(),
            env: CompileEnv {
                host_ns,
                ..Default::default()
            },
            image: Arc::new(MapImage::default()),
        }
    }

    /// An agent enforcing `prepared`, applied as it was compiled.
    /// The entry point each hook got on this kernel.
    pub fn hook_modes(&self) -> crate::bpf::HookModes {
        self.writer.hook_modes()
    }

    pub fn features(&self) -> Vec<(String, bool)> {
        self.writer.features()
    }

    pub fn start(mut writer: Box<dyn MapWriter>, prepared: Prepared) -> Result<Self, AgentError> {
        log_warnings(&prepared.policies);
        writer.apply(&prepared.image).map_err(AgentError::Apply)?;
        Ok(Agent {
            writer,
            policies: prepared.policies,
            next_id: prepared.next_id,
            source_errors: BTreeMap::new(),
            load_errors: BTreeMap::new(),
            env: prepared.env,
            image: Arc::new(prepared.image),
        })
    }

    /// The image the kernel enforces now (for decoding events).
    pub fn image(&self) -> &Arc<MapImage> {
        &self.image
    }

    /// Recompiles `candidate` and applies it; on success it becomes the loaded set.
    fn commit(&mut self, candidate: Vec<LoadedPolicy>) -> Result<(), AgentError> {
        let img = compile_with(&enabled_policies(&candidate), &self.image, &self.env)?;
        self.writer.apply(&img).map_err(AgentError::Apply)?;
        self.policies = candidate;
        self.image = Arc::new(img);
        Ok(())
    }

    /// Adds a batch of policies at once: all or nothing.
    pub fn add_all(&mut self, batch: Vec<(Policy, Source)>) -> Result<(), AgentError> {
        let (candidate, next) = with_batch(&self.policies, batch, self.next_id)?;
        log_warnings(&candidate[self.policies.len()..]);
        self.commit(candidate)?;
        self.next_id = next;
        Ok(())
    }

    pub fn add(&mut self, policy: Policy, source: Source) -> Result<(), AgentError> {
        self.add_all(vec![(policy, source)])
    }

    fn modify(
        &mut self,
        name: &str,
        namespace: &str,
        f: impl FnOnce(&mut Vec<LoadedPolicy>, usize),
    ) -> Result<(), AgentError> {
        let mut candidate = self.policies.clone();
        let idx = candidate
            .iter()
            .position(|p| p.policy.name == name && p.namespace() == namespace)
            .ok_or_else(|| AgentError::NotFound(name.to_string()))?;
        f(&mut candidate, idx);
        self.commit(candidate)
    }

    /// Loads `policy` as the content of `source` (a file or a Kubernetes object): replaces
    /// the version loaded from it in one switch (the old version enforces until the new one
    /// does), or adds it. Clears what was recorded about the source.
    pub fn upsert(&mut self, source: Source, policy: Policy) -> Result<(), AgentError> {
        let mut candidate = self.policies.clone();
        let pos = candidate.iter().position(|p| p.source == source);
        if candidate.iter().enumerate().any(|(i, p)| {
            Some(i) != pos && p.policy.name == policy.name && p.policy.namespace == policy.namespace
        }) {
            return Err(AgentError::Duplicate(policy.name));
        }
        for w in &policy.warnings {
            warn!(policy = %policy.name, "{w}");
        }
        let id = self.next_id;
        let loaded = LoadedPolicy {
            id,
            enabled: pos.is_none_or(|i| candidate[i].enabled),
            policy,
            source: source.clone(),
        };
        match pos {
            Some(i) => candidate[i] = loaded,
            None => candidate.push(loaded),
        }
        self.commit(candidate)?;
        self.next_id = id + 1;
        self.source_errors.remove(&source);
        Ok(())
    }

    /// [`Self::upsert`] for the file `path`.
    pub fn upsert_file(&mut self, path: &Path, policy: Policy) -> Result<(), AgentError> {
        self.upsert(Source::File(path.to_path_buf()), policy)
    }

    /// Unloads the policy that came from `source` (the file or object is gone) and forgets
    /// what was recorded about it.
    pub fn remove(&mut self, source: &Source) -> Result<(), AgentError> {
        self.source_errors.remove(source);
        self.unload(source)
    }

    fn unload(&mut self, source: &Source) -> Result<(), AgentError> {
        if !self.policies.iter().any(|p| p.source == *source) {
            return Ok(());
        }
        let candidate = self
            .policies
            .iter()
            .filter(|p| p.source != *source)
            .cloned()
            .collect();
        self.commit(candidate)
    }

    /// Unloads the policy that came from `path` (the file was removed).
    pub fn remove_file(&mut self, path: &Path) -> Result<(), AgentError> {
        self.remove(&Source::File(path.to_path_buf()))
    }

    /// Records (or, with `None`, clears) why the latest content of `source` is not loaded.
    pub fn set_source_error(&mut self, source: Source, error: Option<SourceError>) {
        match error {
            Some(e) => self.source_errors.insert(source, e),
            None => self.source_errors.remove(&source),
        };
    }

    /// Records (or, with `None`, clears) why the latest content of `path` is not loaded.
    pub fn set_file_error(&mut self, path: &Path, error: Option<SourceError>) {
        self.set_source_error(Source::File(path.to_path_buf()), error);
    }

    /// A new version of `source` was rejected (parse, compile or apply): recorded for the
    /// policy list, counted, and whatever version was loaded keeps enforcing.
    pub fn reject(&mut self, source: Source, message: String) {
        *self.load_errors.entry(source.label()).or_default() += 1;
        self.source_errors
            .insert(source, SourceError::Rejected(message));
    }

    /// `source` must not be enforced here (`Skipped`, `NotApplied`): any version of it is
    /// unloaded and it is listed with `why`. If unloading fails nothing changes.
    pub fn withhold(&mut self, source: Source, why: SourceError) -> Result<(), AgentError> {
        self.unload(&source)?;
        self.source_errors.insert(source, why);
        Ok(())
    }

    /// Rejected policy versions per source kind ([`Source::label`]).
    pub fn load_errors(&self) -> BTreeMap<&'static str, u64> {
        self.load_errors.clone()
    }

    pub fn delete(&mut self, name: &str, namespace: &str) -> Result<(), AgentError> {
        self.modify(name, namespace, |c, i| {
            c.remove(i);
        })
    }

    pub fn set_enabled(&mut self, name: &str, namespace: &str, on: bool) -> Result<(), AgentError> {
        self.modify(name, namespace, |c, i| c[i].enabled = on)
    }

    pub fn set_mode(
        &mut self,
        name: &str,
        namespace: &str,
        mode: PolicyMode,
    ) -> Result<(), AgentError> {
        self.modify(name, namespace, |c, i| c[i].policy.mode = mode)
    }

    pub fn kernel_stats(&self) -> Option<KernelStats> {
        self.writer.kernel_stats()
    }

    /// Runs the canary of every enforcing hook, from this thread.
    pub fn canary(&mut self) -> Vec<crate::bpf::canary::HookCanary> {
        self.writer.canary()
    }

    pub fn program_stats(&self) -> Vec<crate::bpf::ProgramStats> {
        self.writer.program_stats()
    }

    pub fn policies(&self) -> &[LoadedPolicy] {
        &self.policies
    }

    /// Every `dns:` name the loaded policies use, for the resolver to watch.
    pub fn dns_names(&self) -> BTreeSet<String> {
        self.policies
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

    /// Installs the node's pods and containers by cgroup: policies scoped to workloads are
    /// recompiled against them and applied without a gap. Unchanged workloads are a no-op.
    /// Whether a loaded policy has a uprobe resolved in containers, which the kernel side
    /// follows as their processes come and go ([`Self::follow_containers`]).
    pub fn follows_containers(&self) -> bool {
        !self.image.containers.is_empty()
    }

    /// Attaches `resolvePathInContainer` uprobes in the selected containers' current roots.
    pub fn follow_containers(&mut self) {
        if self.follows_containers() {
            self.writer.follow_containers();
        }
    }

    pub fn set_workloads(&mut self, workloads: Workloads) -> Result<(), AgentError> {
        self.recompile_with(|env| &mut env.workloads, workloads)
    }

    /// Installs new answers for `dns:` names: the policies are recompiled against them and
    /// applied without a gap. Unchanged answers are a no-op.
    pub fn set_dns(&mut self, dns: BTreeMap<String, Vec<IpAddr>>) -> Result<(), AgentError> {
        self.recompile_with(|env| &mut env.dns, dns)
    }

    /// Replaces one input of the compilation (`field` of the environment) and applies the
    /// recompiled set without a gap; on failure the old value stays, as does what enforces.
    /// An unchanged value is a no-op.
    fn recompile_with<T: PartialEq>(
        &mut self,
        field: impl Fn(&mut CompileEnv) -> &mut T,
        value: T,
    ) -> Result<(), AgentError> {
        if *field(&mut self.env) == value {
            return Ok(());
        }
        let previous = std::mem::replace(field(&mut self.env), value);
        let candidate = self.policies.clone();
        let result = self.commit(candidate);
        if result.is_err() {
            *field(&mut self.env) = previous;
        }
        result
    }

    /// Every loaded policy, then every policy file that could not be loaded at all.
    pub fn status(&self) -> Vec<PolicyStatus> {
        let modes = self.writer.hook_modes();
        // Per policy id: the sum of its selectors' counters.
        let mut per_policy: BTreeMap<u32, lsm_shared::ActionCounters> = BTreeMap::new();
        for (idx, c) in self.writer.counters() {
            if let Some(info) = self.image.slots.get(&idx) {
                let sum = per_policy.entry(info.policy_id).or_default();
                for (s, v) in sum.c.iter_mut().zip(c.c) {
                    *s += v;
                }
            }
        }
        let mut out: Vec<PolicyStatus> = self
            .policies
            .iter()
            .map(|p| {
                let mut sensors: Vec<Sensor> = p
                    .policy
                    .hooks
                    .iter()
                    .map(|h| match &h.origin {
                        HookOrigin::Kprobe { .. } => Sensor::Kprobe,
                        HookOrigin::LsmHook => Sensor::Lsm,
                        HookOrigin::Tracepoint { .. } => Sensor::Tracepoint,
                        HookOrigin::Uprobe(u) if u.usdt.is_some() => Sensor::Usdt,
                        HookOrigin::Uprobe(_) => Sensor::Uprobe,
                    })
                    .collect();
                sensors.dedup();
                let mode = if !p.has_enforcement() {
                    EffectiveMode::MonitorOnly
                } else if p.policy.mode == PolicyMode::Monitor {
                    EffectiveMode::Monitor
                } else {
                    EffectiveMode::Enforce
                };
                let mut status = PolicyStatus {
                    id: Some(p.id),
                    name: p.policy.name.clone(),
                    namespace: p.namespace().to_string(),
                    source: p.source.clone(),
                    sensors,
                    hooks: HookStatus::of_targets(p.policy.hooks.iter().map(|h| &h.target), &modes),
                    enabled: p.enabled,
                    state: if p.enabled {
                        PolicyState::Enabled
                    } else {
                        PolicyState::Disabled
                    },
                    mode: Some(mode),
                    actions: per_policy.get(&p.id).map(ActionCounts::from_kernel),
                    error: None,
                };
                // The file or object changed and the new version is not loaded: the old one
                // still enforces, but say so loudly.
                if let Some(e) = self.source_errors.get(&p.source) {
                    status.state = PolicyState::Error;
                    status.error = Some(match e {
                        SourceError::Rejected(e) => {
                            format!("new version not loaded, previous one enforcing: {e}")
                        }
                        SourceError::Unreadable(e) => {
                            format!("cannot read the policy file, loaded version enforcing: {e}")
                        }
                        SourceError::Skipped(e) | SourceError::NotApplied(e) => e.clone(),
                    });
                }
                status
            })
            .collect();
        for (source, e) in &self.source_errors {
            if self.policies.iter().any(|p| p.source == *source) {
                continue;
            }
            let (name, namespace) = match source {
                Source::File(f) => (
                    f.file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    String::new(),
                ),
                Source::Grpc => (String::new(), String::new()),
                Source::Kubernetes(o) => (o.name.clone(), o.namespace.clone().unwrap_or_default()),
            };
            let (state, error) = match e {
                SourceError::Rejected(e)
                | SourceError::Unreadable(e)
                | SourceError::NotApplied(e) => (PolicyState::LoadError, e.clone()),
                SourceError::Skipped(e) => (PolicyState::Skipped, e.clone()),
            };
            out.push(PolicyStatus {
                id: None,
                name,
                namespace,
                source: source.clone(),
                sensors: Vec::new(),
                hooks: Vec::new(),
                enabled: false,
                state,
                mode: None,
                actions: None,
                error: Some(error),
            });
        }
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::policy::parse::parse_policy;

    /// Records every image it is asked to write; can be told to fail.
    pub struct Recorder {
        pub images: Arc<Mutex<Vec<MapImage>>>,
        pub fail: bool,
    }

    impl Recorder {
        pub fn new() -> (Self, Arc<Mutex<Vec<MapImage>>>) {
            let images = Arc::new(Mutex::new(Vec::new()));
            let r = Recorder {
                images: images.clone(),
                fail: false,
            };
            (r, images)
        }
    }

    /// A map update the kernel refused, as `Probe::apply` reports it.
    pub fn map_write_error() -> BpfError {
        BpfError::Map {
            name: "STR_EQ",
            source: aya::maps::MapError::SyscallError(aya::sys::SyscallError {
                call: "bpf_map_update_elem",
                io_error: std::io::Error::from_raw_os_error(nix::errno::Errno::E2BIG as i32),
            }),
        }
    }

    impl MapWriter for Recorder {
        fn apply(&mut self, img: &MapImage) -> Result<(), BpfError> {
            if self.fail {
                return Err(map_write_error());
            }
            self.images.lock().unwrap().push(img.clone());
            Ok(())
        }
    }

    pub const YAML: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testdata/policies/deny-etc-passwd-open.yaml"
    ));

    fn policy() -> Policy {
        parse_policy(YAML, Path::new("<test>")).unwrap()
    }

    fn agent() -> (Agent, Arc<Mutex<Vec<MapImage>>>) {
        let (r, images) = Recorder::new();
        (Agent::new(Box::new(r), HostNs::default()), images)
    }

    #[test]
    fn adding_a_policy_writes_its_entries_and_lists_it_enabled() {
        let (mut a, images) = agent();
        a.add(policy(), Source::Grpc).unwrap();
        assert_eq!(images.lock().unwrap().len(), 1);
        assert_eq!(a.image().str_eq.len(), 1);
        let st = a.status();
        assert_eq!(st[0].name, "lsm-file-open");
        assert_eq!(st[0].state, PolicyState::Enabled);
        assert_eq!(st[0].mode, Some(EffectiveMode::Enforce));
        assert_eq!(st[0].sensors, vec![Sensor::Lsm]);
    }

    #[test]
    fn disabling_removes_entries_and_deleting_forgets_the_policy() {
        let (mut a, _) = agent();
        a.add(policy(), Source::Grpc).unwrap();
        a.set_enabled("lsm-file-open", "", false).unwrap();
        assert!(a.image().str_eq.is_empty());
        assert_eq!(a.status()[0].state, PolicyState::Disabled);
        a.delete("lsm-file-open", "").unwrap();
        assert!(a.status().is_empty());
        assert!(matches!(
            a.delete("lsm-file-open", ""),
            Err(AgentError::NotFound(_))
        ));
    }

    #[test]
    fn a_failed_apply_keeps_the_previous_set_and_carries_the_kernel_error() {
        let (mut r, images) = Recorder::new();
        r.fail = true;
        let mut a = Agent::new(Box::new(r), HostNs::default());
        let err = a.add(policy(), Source::Grpc).unwrap_err();
        assert!(matches!(
            err,
            AgentError::Apply(BpfError::Map { name: "STR_EQ", .. })
        ));
        assert!(a.status().is_empty());
        assert!(a.image().str_eq.is_empty());
        assert!(images.lock().unwrap().is_empty());
    }

    #[test]
    fn replacing_a_file_policy_switches_to_new_slots_and_a_broken_version_is_reported() {
        let (mut a, images) = agent();
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
        a.set_file_error(path, Some(SourceError::Rejected("bad".into())));
        let st = a.status();
        assert_eq!(st[0].state, PolicyState::Error);
        assert!(
            st[0]
                .error
                .as_deref()
                .unwrap()
                .contains("previous one enforcing")
        );
        a.remove_file(path).unwrap();
        assert!(a.status().is_empty());
    }

    #[test]
    fn a_file_that_never_loaded_is_listed_as_a_load_error_until_cleared() {
        let (mut a, _) = agent();
        let path = Path::new("/tp/broken.yaml");
        a.set_file_error(path, Some(SourceError::Unreadable("EIO".into())));
        let st = a.status();
        assert_eq!(st.len(), 1);
        assert_eq!(st[0].name, "broken");
        assert_eq!(st[0].state, PolicyState::LoadError);
        assert_eq!(st[0].error.as_deref(), Some("EIO"));
        assert_eq!(st[0].source, Source::File(path.into()));
        a.set_file_error(path, None);
        assert!(a.status().is_empty());
    }

    fn crd(name: &str) -> Source {
        Source::Kubernetes(KubeObject {
            kind: CrdKind::TracingPolicy,
            namespace: None,
            name: name.into(),
        })
    }

    #[test]
    fn a_rejected_object_version_keeps_the_loaded_one_is_listed_as_error_and_counted() {
        let (mut a, _) = agent();
        a.upsert(crd("lsm-file-open"), policy()).unwrap();
        let before = a.image().clone();
        a.reject(
            crd("lsm-file-open"),
            "<TracingPolicy lsm-file-open>:3:5: bad".into(),
        );
        assert_eq!(*a.image(), before, "nothing enforcing changes");
        let st = a.status();
        assert_eq!(st.len(), 1);
        assert_eq!(st[0].state, PolicyState::Error);
        assert!(st[0].error.as_deref().unwrap().contains(":3:5: bad"));
        assert_eq!(a.load_errors().get("kubernetes"), Some(&1));
        // A good version clears the error.
        a.upsert(crd("lsm-file-open"), policy()).unwrap();
        assert_eq!(a.status()[0].state, PolicyState::Enabled);
        assert_eq!(a.status()[0].error, None);
    }

    #[test]
    fn a_rejected_object_that_never_loaded_is_a_load_error_named_after_the_object() {
        let (mut a, _) = agent();
        let ns = Source::Kubernetes(KubeObject {
            kind: CrdKind::TracingPolicyNamespaced,
            namespace: Some("default".into()),
            name: "egress".into(),
        });
        a.reject(ns.clone(), "bad".into());
        let st = a.status();
        assert_eq!(
            (st[0].name.as_str(), st[0].namespace.as_str()),
            ("egress", "default")
        );
        assert_eq!(st[0].state, PolicyState::LoadError);
        assert_eq!(st[0].id, None);
        a.remove(&ns).unwrap();
        assert!(a.status().is_empty());
    }

    #[test]
    fn a_withheld_object_is_unloaded_and_listed_as_skipped_or_not_applied() {
        let (mut a, _) = agent();
        a.upsert(crd("lsm-file-open"), policy()).unwrap();
        assert!(!a.image().str_eq.is_empty());
        a.withhold(
            crd("lsm-file-open"),
            SourceError::Skipped("not this node".into()),
        )
        .unwrap();
        assert!(
            a.image().str_eq.is_empty(),
            "a skipped policy does not enforce"
        );
        let st = a.status();
        assert_eq!(st.len(), 1);
        assert_eq!(st[0].state, PolicyState::Skipped);
        assert_eq!(st[0].error.as_deref(), Some("not this node"));
        a.withhold(crd("other"), SourceError::NotApplied("needs pods".into()))
            .unwrap();
        assert_eq!(a.status()[1].state, PolicyState::LoadError);
        assert!(
            a.load_errors().is_empty(),
            "withholding is not a load error"
        );
    }

    #[test]
    fn the_same_name_cannot_be_loaded_twice() {
        let (mut a, _) = agent();
        a.add(policy(), Source::Grpc).unwrap();
        let err = a.add(policy(), Source::Grpc).unwrap_err();
        assert!(err.to_string().contains("already loaded"), "{err}");
    }

    #[test]
    fn a_prepared_set_is_applied_exactly_as_compiled() {
        let prepared = Prepared::compile(
            vec![(policy(), Source::File("/tp/a.yaml".into()))],
            CompileEnv::default(),
        )
        .unwrap();
        let compiled = prepared.image.clone();
        let (r, images) = Recorder::new();
        let mut a = Agent::start(Box::new(r), prepared).unwrap();
        assert_eq!(
            images.lock().unwrap().as_slice(),
            std::slice::from_ref(&compiled)
        );
        assert_eq!(**a.image(), compiled);
        assert_eq!(a.status()[0].id, Some(1));
        // Ids continue after the prepared ones.
        a.upsert_file(Path::new("/tp/a.yaml"), policy()).unwrap();
        assert_eq!(a.status()[0].id, Some(2));
    }

    #[test]
    fn a_prepared_set_refuses_a_name_given_twice_before_any_kernel_write() {
        let err = Prepared::compile(
            vec![(policy(), Source::Grpc), (policy(), Source::Grpc)],
            CompileEnv::default(),
        )
        .unwrap_err();
        assert!(matches!(err, AgentError::Duplicate(n) if n == "lsm-file-open"));
    }
}
