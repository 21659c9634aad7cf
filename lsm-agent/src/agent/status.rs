//! What the agent reports about its policies and itself, in its own terms. The edges (gRPC's
//! `TracingPolicyStatus`, the metrics) convert these at their border.

use super::state::Source;
use crate::bpf::{
    AttachMode, HookModes,
    canary::{HookCanary, Verdict},
    modes::hook_entry,
};

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
    /// The LSM hooks the policy uses and the entry point each got on this kernel.
    pub hooks: Vec<HookStatus>,
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

/// One hook of a policy: an LSM hook, enforced by its LSM program or (BPF LSM inactive) only
/// observed by a kprobe on its `security_*` function; or a call or tracepoint without an LSM
/// hook, observed by a generic kprobe, kretprobe or tracepoint on every node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookStatus {
    /// `HOOK_*` of an LSM hook (0 for a probe target, whose id is the compiler's).
    pub hook: u32,
    /// `None`: the kernel has neither entry point for it (e.g. file_truncate before 6.2).
    pub mode: Option<AttachMode>,
    /// Set for a target without an LSM hook.
    pub probe: Option<ProbeTarget>,
}

/// A kprobe, kretprobe or tracepoint target of a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeTarget {
    /// `kprobe`, `kretprobe`, `tracepoint` or `uprobe`.
    pub kind: &'static str,
    /// The function (`sys_setuid`, `fd_install`) or the tracepoint (`raw_syscalls/sys_enter`).
    pub name: String,
}

impl ProbeTarget {
    pub fn of(t: &crate::policy::ir::Target) -> Option<ProbeTarget> {
        use crate::policy::ir::Target;
        match t {
            Target::Lsm(_) => None,
            Target::Kprobe(k) => Some(ProbeTarget {
                kind: if k.ret { "kretprobe" } else { "kprobe" },
                name: k.function.clone(),
            }),
            Target::Tracepoint { subsystem, event } => Some(ProbeTarget {
                kind: "tracepoint",
                name: format!("{subsystem}/{event}"),
            }),
            Target::RawTracepoint { subsystem, event } => Some(ProbeTarget {
                kind: "raw_tracepoint",
                name: format!("{subsystem}/{event}"),
            }),
            Target::Uprobe(u) => Some(ProbeTarget {
                kind: if u.usdt.is_some() { "usdt" } else { "uprobe" },
                name: u.to_string(),
            }),
        }
    }
}

impl HookStatus {
    /// Every distinct hook of `hooks` (`HOOK_*` ids, in the policy's order) with its mode.
    pub fn of(hooks: impl IntoIterator<Item = u32>, modes: &HookModes) -> Vec<HookStatus> {
        let mut out: Vec<HookStatus> = Vec::new();
        for hook in hooks {
            if !out.iter().any(|h| h.hook == hook && h.probe.is_none()) {
                out.push(HookStatus {
                    hook,
                    mode: modes.get(hook),
                    probe: None,
                });
            }
        }
        out
    }

    /// Every hook of `targets`, in order, once each: LSM hooks with the mode this kernel
    /// gave them, probe targets as what observes them.
    pub fn of_targets<'a>(
        targets: impl IntoIterator<Item = &'a crate::policy::ir::Target>,
        modes: &HookModes,
    ) -> Vec<HookStatus> {
        let mut out: Vec<HookStatus> = Vec::new();
        for t in targets {
            let h = match (t.lsm(), ProbeTarget::of(t)) {
                (Some(l), _) => HookStatus {
                    hook: l.id(),
                    mode: modes.get(l.id()),
                    probe: None,
                },
                (None, Some(p)) => HookStatus {
                    hook: 0,
                    mode: None,
                    probe: Some(p),
                },
                (None, None) => continue,
            };
            if !out.contains(&h) {
                out.push(h);
            }
        }
        out
    }

    /// The hook's name: the LSM hook's, or the probe target's.
    pub fn lsm_name(&self) -> &str {
        match &self.probe {
            Some(p) => &p.name,
            None => hook_entry(self.hook).map_or("?", |e| e.lsm),
        }
    }

    /// The kernel function (or tracepoint) a kprobe (or tracepoint) observes for it.
    pub fn function(&self) -> &str {
        match &self.probe {
            Some(p) => &p.name,
            None => hook_entry(self.hook).map_or("?", |e| e.function),
        }
    }

    /// Whether it is only observed (no pre-operation deny): a probe target, or an LSM hook
    /// observed by a kprobe because BPF LSM is inactive.
    pub fn observed(&self) -> bool {
        self.probe.is_some() || self.mode == Some(AttachMode::Kprobe)
    }

    /// The word the metric uses: `lsm`, `kprobe` or `none` for an LSM hook; the generic
    /// program's name (`generic_kprobe`, `generic_kretprobe`, `generic_tracepoint`,
    /// `generic_raw_tp`, `generic_uprobe`, `generic_usdt`) for a probe target, so that
    /// `mode="kprobe"` keeps meaning "an LSM hook degraded".
    pub fn mode_name(&self) -> &'static str {
        match self.probe.as_ref().map(|p| p.kind) {
            Some("kretprobe") => "generic_kretprobe",
            Some("tracepoint") => "generic_tracepoint",
            Some("raw_tracepoint") => "generic_raw_tp",
            Some("uprobe") => "generic_uprobe",
            Some("usdt") => "generic_usdt",
            Some(_) => "generic_kprobe",
            None => self.mode.map_or("none", AttachMode::as_str),
        }
    }
}

/// The health details: `running`, and how the hooks are attached when not all by LSM.
pub fn health_details(running: bool, modes: &HookModes) -> String {
    if !running {
        return "stopped".into();
    }
    if !modes.degraded() {
        return "running".into();
    }
    let observed: Vec<&str> = modes
        .0
        .iter()
        .enumerate()
        .filter(|(_, m)| **m == Some(AttachMode::Kprobe))
        .filter_map(|(h, _)| hook_entry(h as u32).map(|e| e.function))
        .collect();
    format!(
        "running (degraded: BPF LSM is not active; observed by kprobe, no pre-operation deny: {})",
        observed.join(",")
    )
}

/// Which kind of hook entry a policy uses (Tetragon's sensor).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sensor {
    /// `spec.kprobes`.
    Kprobe,
    /// `spec.lsmhooks`.
    Lsm,
    /// `spec.tracepoints`.
    Tracepoint,
    /// `spec.uprobes`.
    Uprobe,
    /// `spec.usdts`.
    Usdt,
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
    /// A hook's canary was not denied: a hook that should enforce does not.
    Error,
}

/// The health from whether the owner runs, the hooks' entry points and the last canary
/// (`None` before the first): the canary's failures make it an error, naming each hook and
/// what was seen; the hooks it proved are named too.
pub fn health(running: bool, modes: &HookModes, canary: Option<&[HookCanary]>) -> Health {
    if !running {
        return Health {
            state: HealthState::Stopped,
            details: "stopped".into(),
        };
    }
    let base = health_details(true, modes);
    let Some(canary) = canary else {
        return Health {
            state: HealthState::Running,
            details: format!("{base}; canary: not run yet"),
        };
    };
    let failed: Vec<String> = canary
        .iter()
        .filter_map(|c| match &c.verdict {
            Verdict::Failed(why) => Some(format!("{}: {why}", c.hook)),
            _ => None,
        })
        .collect();
    if !failed.is_empty() {
        return Health {
            state: HealthState::Error,
            details: format!("error: canary failed: {}", failed.join("; ")),
        };
    }
    let denied: Vec<&str> = canary
        .iter()
        .filter(|c| c.verdict == Verdict::Denied)
        .map(|c| c.hook)
        .collect();
    let details = if denied.is_empty() {
        format!("{base}; canary: no LSM program to prove")
    } else {
        format!("{base}; canary denied at: {}", denied.join(","))
    };
    Health {
        state: HealthState::Running,
        details,
    }
}

#[cfg(test)]
mod tests {
    use lsm_shared::*;

    use super::*;

    #[test]
    fn a_policys_hooks_are_listed_once_each_with_the_mode_they_got() {
        let mut modes = HookModes::all(AttachMode::Lsm);
        modes.0[HOOK_FILE_PERMISSION as usize] = Some(AttachMode::Kprobe);
        modes.0[HOOK_FILE_TRUNCATE as usize] = None;
        let hooks = HookStatus::of(
            [
                HOOK_FILE_PERMISSION,
                HOOK_FILE_OPEN,
                HOOK_FILE_PERMISSION,
                HOOK_FILE_TRUNCATE,
            ],
            &modes,
        );
        let shown: Vec<(&str, &str, &str)> = hooks
            .iter()
            .map(|h| (h.lsm_name(), h.function(), h.mode_name()))
            .collect();
        assert_eq!(
            shown,
            [
                ("file_permission", "security_file_permission", "kprobe"),
                ("file_open", "security_file_open", "lsm"),
                ("file_truncate", "security_file_truncate", "none"),
            ]
        );
    }

    #[test]
    fn probe_targets_are_listed_as_what_observes_them_beside_the_lsm_hooks() {
        use crate::policy::ir::{KprobeTarget, LsmHook, Target, UprobePoint, UprobeTarget};
        let kprobe = |function: &str, ret| {
            Target::Kprobe(KprobeTarget {
                function: function.into(),
                syscall: true,
                ret,
            })
        };
        let targets = [
            Target::Lsm(LsmHook::FileOpen),
            kprobe("sys_openat", true),
            kprobe("sys_setuid", false),
            kprobe("sys_openat", true),
            Target::Tracepoint {
                subsystem: "raw_syscalls".into(),
                event: "sys_enter".into(),
            },
            Target::Uprobe(UprobeTarget {
                path: "/bin/bash".into(),
                points: vec![UprobePoint {
                    symbol: Some("readline".into()),
                    offset: 0,
                }],
                usdt: None,
                in_container: false,
            }),
        ];
        let hooks = HookStatus::of_targets(&targets, &HookModes::all(AttachMode::Lsm));
        let shown: Vec<(&str, &str, bool)> = hooks
            .iter()
            .map(|h| (h.lsm_name(), h.mode_name(), h.observed()))
            .collect();
        assert_eq!(
            shown,
            [
                ("file_open", "lsm", false),
                ("sys_openat", "generic_kretprobe", true),
                ("sys_setuid", "generic_kprobe", true),
                ("raw_syscalls/sys_enter", "generic_tracepoint", true),
                ("/bin/bash:readline", "generic_uprobe", true),
            ]
        );
    }

    #[test]
    fn a_failed_canary_is_an_error_naming_the_hook_and_a_denied_one_is_listed() {
        let modes = HookModes::all(AttachMode::Lsm);
        let c = |hook, verdict| HookCanary { hook, verdict };
        let pending = health(true, &modes, None);
        assert_eq!(pending.state, HealthState::Running);
        assert!(
            pending.details.contains("canary: not run yet"),
            "{pending:?}"
        );
        let ok = [
            c("file_open", Verdict::Denied),
            c("inode_mkdir", Verdict::Unverified("no operation".into())),
        ];
        let h = health(true, &modes, Some(&ok));
        assert_eq!(h.state, HealthState::Running);
        assert_eq!(h.details, "running; canary denied at: file_open");
        let bad = [
            c("file_open", Verdict::Denied),
            c("file_permission", Verdict::Failed("not denied".into())),
        ];
        let h = health(true, &modes, Some(&bad));
        assert_eq!(h.state, HealthState::Error);
        assert_eq!(
            h.details,
            "error: canary failed: file_permission: not denied"
        );
        assert_eq!(
            health(false, &modes, Some(&bad)).state,
            HealthState::Stopped
        );
    }

    #[test]
    fn health_details_name_the_observed_functions_only_when_degraded() {
        assert_eq!(
            health_details(true, &HookModes::all(AttachMode::Lsm)),
            "running"
        );
        assert_eq!(
            health_details(false, &HookModes::all(AttachMode::Kprobe)),
            "stopped"
        );
        let mut modes = HookModes::default();
        modes.0[HOOK_FILE_OPEN as usize] = Some(AttachMode::Kprobe);
        modes.0[HOOK_SOCKET_CONNECT as usize] = Some(AttachMode::Kprobe);
        assert_eq!(
            health_details(true, &modes),
            "running (degraded: BPF LSM is not active; observed by kprobe, no pre-operation deny: security_file_open,security_socket_connect)"
        );
    }
}
