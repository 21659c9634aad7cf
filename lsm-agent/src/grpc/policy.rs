//! Policy management at the gRPC edge: the agent's own types become Tetragon's messages and
//! its typed errors become gRPC statuses here, and only here.

use std::path::Path;

use tonic::Status;
use tracing::info;

use super::proto::tetragon::{
    HealthStatusResult, TracingPolicyActionCounters, TracingPolicyMode, TracingPolicyState,
    TracingPolicyStats, TracingPolicyStatus,
};
use crate::{
    agent::{
        ActionCounts, AgentError, AgentHandle, EffectiveMode, HealthState, PolicyState,
        PolicyStatus, Sensor, Source,
    },
    policy::{ir::PolicyMode, parse::parse_policy},
};

/// What the service needs from the policy manager, as the service calls it: async, answers
/// in Tetragon's messages, errors as gRPC statuses. The agent implements it through its
/// [`AgentHandle`]; anything implementing the simpler [`PolicyControl`] gets it for free.
#[tonic::async_trait]
pub trait PolicyApi: Send + Sync + 'static {
    async fn list(&self) -> Result<Vec<TracingPolicyStatus>, Status>;
    async fn add(&self, yaml: String) -> Result<(), Status>;
    async fn delete(&self, name: &str, namespace: &str) -> Result<(), Status>;
    async fn set_enabled(&self, name: &str, namespace: &str, enabled: bool) -> Result<(), Status>;
    async fn set_mode(
        &self,
        name: &str,
        namespace: &str,
        mode: TracingPolicyMode,
    ) -> Result<(), Status>;
    async fn health(&self) -> (HealthStatusResult, String);
    /// `(name, enabled)` probes for `GetInfo`: what the kernel offers and what each hook got.
    fn probes(&self) -> Vec<(String, bool)> {
        Vec::new()
    }
}

/// A synchronous policy manager in Tetragon's messages, with errors as text (sent as
/// `Unknown`, as Tetragon's plain Go errors are): for in-memory implementations such as the
/// stand-ins of tests. Methods must not block for long.
pub trait PolicyControl: Send + Sync + 'static {
    fn list(&self) -> Vec<TracingPolicyStatus>;
    fn add(&self, yaml: String) -> Result<(), String>;
    fn delete(&self, name: &str, namespace: &str) -> Result<(), String>;
    fn set_enabled(&self, name: &str, namespace: &str, enabled: bool) -> Result<(), String>;
    fn set_mode(&self, name: &str, namespace: &str, mode: TracingPolicyMode) -> Result<(), String>;
    fn health(&self) -> (HealthStatusResult, String);
}

#[tonic::async_trait]
impl<T: PolicyControl> PolicyApi for T {
    async fn list(&self) -> Result<Vec<TracingPolicyStatus>, Status> {
        Ok(PolicyControl::list(self))
    }

    async fn add(&self, yaml: String) -> Result<(), Status> {
        PolicyControl::add(self, yaml).map_err(Status::unknown)
    }

    async fn delete(&self, name: &str, namespace: &str) -> Result<(), Status> {
        PolicyControl::delete(self, name, namespace).map_err(Status::unknown)
    }

    async fn set_enabled(&self, name: &str, namespace: &str, enabled: bool) -> Result<(), Status> {
        PolicyControl::set_enabled(self, name, namespace, enabled).map_err(Status::unknown)
    }

    async fn set_mode(
        &self,
        name: &str,
        namespace: &str,
        mode: TracingPolicyMode,
    ) -> Result<(), Status> {
        PolicyControl::set_mode(self, name, namespace, mode).map_err(Status::unknown)
    }

    async fn health(&self) -> (HealthStatusResult, String) {
        PolicyControl::health(self)
    }
}

/// Tetragon returns plain Go errors, which grpc-go sends as `Unknown`; tetra prints the text.
/// An agent that is stopping is `Unavailable`, so that clients may retry elsewhere or later.
pub fn status_of(e: AgentError) -> Status {
    match e {
        AgentError::OwnerStopped => Status::unavailable(e.to_string()),
        e => Status::unknown(e.to_string()),
    }
}

#[tonic::async_trait]
impl PolicyApi for AgentHandle {
    fn probes(&self) -> Vec<(String, bool)> {
        self.features().as_ref().clone()
    }

    async fn list(&self) -> Result<Vec<TracingPolicyStatus>, Status> {
        let st = self.status().await.map_err(status_of)?;
        Ok(st.iter().map(tracing_policy_status).collect())
    }

    async fn add(&self, yaml: String) -> Result<(), Status> {
        // The text is taken as it is: the client's environment is not the agent's.
        let policy = parse_policy(&yaml, Path::new("<grpc>"))
            .map_err(|e| status_of(AgentError::Parse(e)))?;
        let name = policy.name.clone();
        AgentHandle::add(self, policy, Source::Grpc)
            .await
            .map_err(status_of)?;
        info!(policy = %name, "policy added over gRPC");
        Ok(())
    }

    async fn delete(&self, name: &str, namespace: &str) -> Result<(), Status> {
        AgentHandle::delete(self, name, namespace)
            .await
            .map_err(status_of)
    }

    async fn set_enabled(&self, name: &str, namespace: &str, enabled: bool) -> Result<(), Status> {
        AgentHandle::set_enabled(self, name, namespace, enabled)
            .await
            .map_err(status_of)
    }

    async fn set_mode(
        &self,
        name: &str,
        namespace: &str,
        mode: TracingPolicyMode,
    ) -> Result<(), Status> {
        let mode = policy_mode(mode).map_err(status_of)?;
        AgentHandle::set_mode(self, name, namespace, mode)
            .await
            .map_err(status_of)
    }

    async fn health(&self) -> (HealthStatusResult, String) {
        let h = AgentHandle::health(self);
        let result = match h.state {
            HealthState::Running => HealthStatusResult::HealthStatusRunning,
            HealthState::Stopped => HealthStatusResult::HealthStatusStopped,
            HealthState::Error => HealthStatusResult::HealthStatusError,
        };
        (result, h.details)
    }
}

/// The modes a client may switch a policy to.
fn policy_mode(mode: TracingPolicyMode) -> Result<PolicyMode, AgentError> {
    match mode {
        TracingPolicyMode::TpModeMonitor => Ok(PolicyMode::Monitor),
        TracingPolicyMode::TpModeEnforce => Ok(PolicyMode::Enforce),
        other => Err(AgentError::UnsupportedMode(other.as_str_name().to_owned())),
    }
}

/// The one conversion of a policy's status into Tetragon's message.
pub fn tracing_policy_status(p: &PolicyStatus) -> TracingPolicyStatus {
    TracingPolicyStatus {
        id: p.id.map_or(0, u64::from),
        name: p.name.clone(),
        namespace: p.namespace.clone(),
        info: match &p.source {
            Source::File(f) => f.display().to_string(),
            Source::Grpc => String::new(),
            // The object, as its parse errors name it: `<TracingPolicyNamespaced ns/name>`.
            Source::Kubernetes(o) => o.pseudo_path().display().to_string(),
        },
        sensors: sensors(p),
        enabled: p.enabled,
        state: policy_state(p.state) as i32,
        mode: p
            .mode
            .map_or(TracingPolicyMode::TpModeUnknown, effective_mode) as i32,
        stats: p.actions.map(|c| TracingPolicyStats {
            action_counters: Some(action_counters(c)),
        }),
        // Tetragon's domains: `static` for files, `grpc`, `k8s` for CRD objects.
        domain: match p.source {
            Source::File(_) => "static".into(),
            Source::Grpc => "grpc".into(),
            Source::Kubernetes(_) => "k8s".into(),
        },
        error: p.error.clone().unwrap_or_default(),
        ..Default::default()
    }
}

/// Tetragon's sensor names, then one `observe:<function>` entry per hook that only a kprobe
/// observes (BPF LSM inactive): `tetra tracingpolicy list` shows them in its SENSORS column.
fn sensors(p: &PolicyStatus) -> Vec<String> {
    let names = p.sensors.iter().map(|s| sensor_name(*s).to_owned());
    let observed = p
        .hooks
        .iter()
        .filter(|h| h.observed())
        .map(|h| match &h.probe {
            // A call or tracepoint without an LSM hook: `observe:kretprobe:sys_openat`.
            Some(p) => format!("{OBSERVE_PREFIX}{}:{}", p.kind, p.name),
            // An LSM hook a kprobe observes (BPF LSM inactive): `observe:security_file_open`.
            None => format!("{OBSERVE_PREFIX}{}", h.function()),
        });
    names.chain(observed).collect()
}

/// Prefix of the sensor entry of a hook observed by a kprobe.
pub const OBSERVE_PREFIX: &str = "observe:";

fn sensor_name(s: Sensor) -> &'static str {
    match s {
        Sensor::Kprobe => "generic_kprobe",
        Sensor::Lsm => "generic_lsm",
        Sensor::Tracepoint => "generic_tracepoint",
        Sensor::Uprobe => "generic_uprobe",
        Sensor::Usdt => "generic_usdt",
    }
}

fn policy_state(s: PolicyState) -> TracingPolicyState {
    match s {
        PolicyState::Enabled => TracingPolicyState::TpStateEnabled,
        PolicyState::Disabled => TracingPolicyState::TpStateDisabled,
        PolicyState::Error => TracingPolicyState::TpStateError,
        PolicyState::LoadError => TracingPolicyState::TpStateLoadError,
        PolicyState::PartiallyEnabled => TracingPolicyState::TpStatePartiallyEnabled,
        PolicyState::Skipped => TracingPolicyState::TpStateSkipped,
    }
}

fn effective_mode(m: EffectiveMode) -> TracingPolicyMode {
    match m {
        EffectiveMode::Enforce => TracingPolicyMode::TpModeEnforce,
        EffectiveMode::Monitor => TracingPolicyMode::TpModeMonitor,
        EffectiveMode::MonitorOnly => TracingPolicyMode::TpModeMonitorOnly,
    }
}

fn action_counters(c: ActionCounts) -> TracingPolicyActionCounters {
    TracingPolicyActionCounters {
        post: c.post,
        nopost: c.nopost,
        signal: c.signal,
        monitor_signal: c.monitor_signal,
        r#override: c.r#override,
        monitor_override: c.monitor_override,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn loaded() -> PolicyStatus {
        PolicyStatus {
            id: Some(7),
            name: "p".into(),
            namespace: "ns".into(),
            source: Source::File(PathBuf::from("/tp/p.yaml")),
            sensors: vec![Sensor::Lsm, Sensor::Kprobe],
            hooks: Vec::new(),
            enabled: true,
            state: PolicyState::Enabled,
            mode: Some(EffectiveMode::MonitorOnly),
            actions: Some(ActionCounts {
                post: 1,
                nopost: 2,
                signal: 3,
                monitor_signal: 4,
                r#override: 5,
                monitor_override: 6,
            }),
            error: None,
        }
    }

    #[test]
    fn a_loaded_policy_becomes_tetragons_message() {
        let m = tracing_policy_status(&loaded());
        assert_eq!(
            m,
            TracingPolicyStatus {
                id: 7,
                name: "p".into(),
                namespace: "ns".into(),
                info: "/tp/p.yaml".into(),
                sensors: vec!["generic_lsm".into(), "generic_kprobe".into()],
                enabled: true,
                state: TracingPolicyState::TpStateEnabled as i32,
                mode: TracingPolicyMode::TpModeMonitorOnly as i32,
                stats: Some(TracingPolicyStats {
                    action_counters: Some(TracingPolicyActionCounters {
                        post: 1,
                        nopost: 2,
                        signal: 3,
                        monitor_signal: 4,
                        r#override: 5,
                        monitor_override: 6,
                        ..Default::default()
                    }),
                }),
                domain: "static".into(),
                ..Default::default()
            }
        );
    }

    #[test]
    fn hooks_observed_by_kprobe_show_in_the_sensors_tetra_prints() {
        use crate::{
            agent::HookStatus,
            bpf::{AttachMode, HookModes},
        };
        let mut modes = HookModes::all(AttachMode::Lsm);
        modes.0[lsm_shared::HOOK_FILE_PERMISSION as usize] = Some(AttachMode::Kprobe);
        let p = PolicyStatus {
            sensors: vec![Sensor::Kprobe],
            hooks: HookStatus::of(
                [lsm_shared::HOOK_FILE_PERMISSION, lsm_shared::HOOK_FILE_OPEN],
                &modes,
            ),
            ..loaded()
        };
        assert_eq!(
            tracing_policy_status(&p).sensors,
            ["generic_kprobe", "observe:security_file_permission"]
        );
        let all_lsm = PolicyStatus {
            hooks: HookStatus::of([lsm_shared::HOOK_FILE_OPEN], &modes),
            ..p
        };
        assert_eq!(tracing_policy_status(&all_lsm).sensors, ["generic_kprobe"]);
        let probe = PolicyStatus {
            hooks: HookStatus::of_targets(
                &[crate::policy::ir::Target::Tracepoint {
                    subsystem: "raw_syscalls".into(),
                    event: "sys_enter".into(),
                }],
                &modes,
            ),
            sensors: vec![Sensor::Tracepoint],
            ..all_lsm
        };
        assert_eq!(
            tracing_policy_status(&probe).sensors,
            [
                "generic_tracepoint",
                "observe:tracepoint:raw_syscalls/sys_enter"
            ]
        );
    }

    #[test]
    fn a_file_that_never_loaded_has_no_id_mode_or_counters() {
        let p = PolicyStatus {
            id: None,
            namespace: String::new(),
            sensors: Vec::new(),
            enabled: false,
            state: PolicyState::LoadError,
            mode: None,
            actions: None,
            error: Some("bad".into()),
            ..loaded()
        };
        let m = tracing_policy_status(&p);
        assert_eq!((m.id, m.mode, m.stats), (0, 0, None));
        assert_eq!(m.state, TracingPolicyState::TpStateLoadError as i32);
        assert_eq!((m.error.as_str(), m.domain.as_str()), ("bad", "static"));
        let grpc = tracing_policy_status(&PolicyStatus {
            source: Source::Grpc,
            ..loaded()
        });
        assert_eq!((grpc.info.as_str(), grpc.domain.as_str()), ("", "grpc"));
    }

    #[test]
    fn a_kubernetes_policy_has_the_k8s_domain_its_namespace_and_the_object_as_info() {
        use crate::agent::{CrdKind, KubeObject};
        let p = PolicyStatus {
            id: None,
            name: "egress".into(),
            namespace: "default".into(),
            source: Source::Kubernetes(KubeObject {
                kind: CrdKind::TracingPolicyNamespaced,
                namespace: Some("default".into()),
                name: "egress".into(),
            }),
            state: PolicyState::Skipped,
            mode: None,
            actions: None,
            error: Some("not for this node".into()),
            ..loaded()
        };
        let m = tracing_policy_status(&p);
        assert_eq!(m.domain, "k8s");
        assert_eq!(m.namespace, "default");
        assert_eq!(m.info, "<TracingPolicyNamespaced default/egress>");
        assert_eq!(m.state, TracingPolicyState::TpStateSkipped as i32);
        assert_eq!(m.error, "not for this node");
    }

    #[test]
    fn agent_errors_keep_their_text_as_unknown_and_a_stopped_agent_is_unavailable() {
        let s = status_of(AgentError::Duplicate("p".into()));
        assert_eq!(s.code(), tonic::Code::Unknown);
        assert_eq!(s.message(), "a policy named \"p\" is already loaded");
        assert_eq!(
            status_of(AgentError::OwnerStopped).code(),
            tonic::Code::Unavailable
        );
        let e = policy_mode(TracingPolicyMode::TpModeMonitorOnly).unwrap_err();
        assert_eq!(e.to_string(), "unsupported mode TP_MODE_MONITOR_ONLY");
    }
}
