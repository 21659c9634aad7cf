//! Hook ids of the kprobe, kretprobe and tracepoint targets, and how the generic reader
//! reads their arguments. LSM hooks have fixed ids; every other distinct target of the
//! loaded policies gets one of the ids from `FIRST_DYNAMIC_HOOK` on, kept across reloads
//! while some policy still uses it.

use std::collections::{BTreeMap, BTreeSet};

use lsm_shared::{
    ARG_SKIP, ArgDesc, FIRST_DYNAMIC_HOOK, MAX_ARGS, NUM_HOOKS, SRC_CURRENT, SRC_RESOLVE,
};

use super::compile::{CompileError, MapImage};
use super::hooks::{self, GenericType};
use super::ir::{ArgSpec, ArgType, Policy, Target};

/// How a hook is named in compile errors: its LSM hook, or its probe.
pub fn hook_label(t: &Target) -> String {
    match t {
        Target::Lsm(h) => h.name().to_string(),
        Target::Kprobe(k) if k.ret => format!("kretprobe {}", k.function),
        Target::Kprobe(k) => format!("kprobe {}", k.function),
        Target::Tracepoint { subsystem, event } => format!("tracepoint {subsystem}/{event}"),
        Target::RawTracepoint { subsystem, event } => {
            format!("raw tracepoint {subsystem}/{event}")
        }
        Target::Uprobe(u) if u.usdt.is_some() => format!("usdt {u}"),
        Target::Uprobe(u) => format!("uprobe {u}"),
    }
}

/// The id of every target of `policies`: LSM hooks their own, the others the id they have
/// in `prev` (the image the maps hold now), else the lowest id no target of `prev` or of
/// this compile holds. An id freed by this compile is not reused by it, so the loader can
/// attach new probes before the switch and detach old ones after it.
pub fn assign_ids(
    policies: &[(u32, &Policy)],
    prev: &MapImage,
) -> Result<BTreeMap<Target, u32>, CompileError> {
    let mut ids: BTreeMap<Target, u32> = BTreeMap::new();
    let prev_ids: BTreeMap<&Target, u32> = prev.probes.iter().map(|(&id, t)| (t, id)).collect();
    let mut taken: BTreeSet<u32> = prev.probes.keys().copied().collect();
    for &(_, policy) in policies {
        for hook in &policy.hooks {
            let t = &hook.target;
            if ids.contains_key(t) {
                continue;
            }
            if let Target::Lsm(h) = t {
                ids.insert(t.clone(), h.id());
                continue;
            }
            if let Target::Kprobe(k) = t {
                // One function, one way of reading it: its kprobe and kretprobe are found by
                // the function's address alone.
                let clash = ids.keys().any(|o| {
                    matches!(o, Target::Kprobe(o) if o.function == k.function
                        && o.ret == k.ret && o.syscall != k.syscall)
                });
                if clash {
                    return Err(CompileError::SyscallClash {
                        policy: policy.name.clone(),
                        function: k.function.clone(),
                    });
                }
            }
            let id = match prev_ids.get(t) {
                Some(&id) => id,
                None => {
                    let id = (FIRST_DYNAMIC_HOOK..NUM_HOOKS)
                        .find(|id| !taken.contains(id))
                        .ok_or_else(|| CompileError::TooManyProbes {
                            policy: policy.name.clone(),
                        })?;
                    taken.insert(id);
                    id
                }
            };
            ids.insert(t.clone(), id);
        }
    }
    Ok(ids)
}

/// The descriptor of argument `a` of a probe target.
pub fn generic_desc(target: &Target, a: &ArgSpec) -> ArgDesc {
    let user = match target {
        Target::Kprobe(k) => k.syscall,
        Target::Tracepoint { subsystem, .. } => subsystem == "syscalls",
        // Kernel objects, as a kernel function's arguments.
        Target::RawTracepoint { .. } => false,
        // A user-space function's pointers point into its process.
        Target::Uprobe(_) => true,
        Target::Lsm(_) => false,
    } && !a.resolve.as_ref().is_some_and(|r| r.current_task);
    match hooks::generic_type(&a.type_name, user) {
        Some(GenericType::Read { read, width, .. }) => ArgDesc {
            kind: read,
            src: a.lsm_index as u8,
            width,
            size: match a.ty {
                ArgType::Buffer { size } => size,
                ArgType::Int32Array { count } => count,
                _ => 0,
            },
        },
        _ => ArgDesc {
            kind: ARG_SKIP,
            src: 0,
            width: 0,
            size: 0,
        },
    }
}

/// Where a `resolve` path starts, as the kernel's BTF names it: parameter `param` of a
/// function's prototype.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BtfRoot {
    /// A kernel function (a kprobe's, or `bpf_lsm_<hook>` for an LSM hook).
    Func { name: String, param: u32 },
    /// A raw tracepoint: its `btf_trace_<event>` prototype, whose parameter 0 is the
    /// tracing context (`param` counts the `TP_PROTO` arguments, from 0).
    Tracepoint { event: String, param: u32 },
    /// The current task (`source: current_task`): a `struct task_struct`.
    CurrentTask,
}

/// A `resolve` path the loader turns into the kernel's [`lsm_shared::ResolvePath`]: the
/// members to follow from `root`, read at the end as descriptor kind `kind`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResolveReq {
    pub root: BtfRoot,
    pub members: Vec<String>,
    pub kind: u8,
}

/// The resolve request of argument `a` of `target`, if it has a path; the descriptor then
/// takes the [`SRC_RESOLVE`] bit.
pub fn resolve_req(target: &Target, a: &ArgSpec, desc: &mut ArgDesc) -> Option<ResolveReq> {
    let r = a.resolve.as_ref()?;
    let members = r.members.clone();
    let root = match target {
        _ if r.current_task => BtfRoot::CurrentTask,
        Target::Lsm(h) => BtfRoot::Func {
            name: format!("bpf_lsm_{}", h.name()),
            param: a.lsm_index,
        },
        Target::Kprobe(k) if !k.syscall => BtfRoot::Func {
            name: k.function.clone(),
            param: a.lsm_index,
        },
        Target::RawTracepoint { event, .. } => BtfRoot::Tracepoint {
            event: event.clone(),
            param: a.lsm_index,
        },
        // Validation refuses resolve elsewhere.
        _ => return None,
    };
    desc.src |= SRC_RESOLVE;
    if root == BtfRoot::CurrentTask {
        desc.src |= SRC_CURRENT;
    }
    Some(ResolveReq {
        root,
        members,
        kind: desc.kind,
    })
}

/// Puts `d` at position `pos` of a probe's descriptors, unless another loaded policy reads
/// that position another way.
pub fn set_desc(
    descs: &mut [ArgDesc; MAX_ARGS],
    pos: u32,
    d: ArgDesc,
    policy: &Policy,
    target: &Target,
) -> Result<(), CompileError> {
    let Some(slot) = descs.get_mut(pos as usize) else {
        return Ok(());
    };
    if slot.kind != ARG_SKIP && *slot != d {
        return Err(CompileError::ArgClash {
            policy: policy.name.clone(),
            hook: hook_label(target),
            index: pos,
        });
    }
    *slot = d;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::compile::compile;
    use crate::policy::testutil::*;

    #[test]
    fn probe_targets_get_dynamic_ids_shared_across_policies_and_lsm_hooks_keep_theirs() {
        let a = parse_ok(fixture!("observe-setuid-syscall.yaml"));
        let b = parse_ok(fixture!("observe-commit-creds-and-setuid.yaml"));
        let img = compile(&[(1, &a), (2, &b)]).expect("compiles");
        let ids: Vec<(u32, String)> = img
            .probes
            .iter()
            .map(|(id, t)| (*id, hook_label(t)))
            .collect();
        assert_eq!(
            ids,
            [
                (FIRST_DYNAMIC_HOOK, "kprobe sys_setuid".to_string()),
                (FIRST_DYNAMIC_HOOK + 1, "kprobe commit_creds".to_string())
            ]
        );
        // Both policies' selectors sit on the one id of sys_setuid.
        let on_setuid = img
            .slots
            .values()
            .filter(|s| hook_label(&s.target) == "kprobe sys_setuid")
            .count();
        assert_eq!(on_setuid, 2);
    }

    #[test]
    fn a_kept_target_keeps_its_id_and_a_new_one_does_not_take_a_freed_id() {
        let a = parse_ok(fixture!("observe-setuid-syscall.yaml"));
        let b = parse_ok(fixture!("observe-commit-creds-and-setuid.yaml"));
        let both = compile(&[(1, &a), (2, &b)]).expect("compiles");
        let c = parse_ok(fixture!("observe-raw-sys-enter-getpid.yaml"));
        // b leaves (commit_creds frees FIRST+1), c arrives.
        let img =
            crate::policy::compile::compile_with(&[(1, &a), (3, &c)], &both, &Default::default())
                .expect("compiles");
        let ids: Vec<(u32, String)> = img
            .probes
            .iter()
            .map(|(id, t)| (*id, hook_label(t)))
            .collect();
        assert_eq!(
            ids,
            [
                (FIRST_DYNAMIC_HOOK, "kprobe sys_setuid".to_string()),
                (
                    FIRST_DYNAMIC_HOOK + 2,
                    "tracepoint raw_syscalls/sys_enter".to_string()
                )
            ]
        );
    }

    #[test]
    fn a_char_buf_descriptor_says_where_its_length_is() {
        let p = parse_ok(fixture!("observe-write-and-read-buffers.yaml"));
        let img = compile(&[(1, &p)]).expect("compiles");
        let descs: Vec<(String, ArgDesc)> = img
            .probes
            .iter()
            .map(|(id, t)| (hook_label(t), img.hook_cfg[id].args[1]))
            .collect();
        let buf = |size| ArgDesc {
            kind: lsm_shared::ARG_BUF,
            src: 1,
            width: 8,
            size,
        };
        assert_eq!(
            descs,
            [
                ("kprobe sys_write".to_string(), buf(3)),
                (
                    "kretprobe sys_read".to_string(),
                    buf(lsm_shared::SIZE_RETVAL)
                ),
            ]
        );
    }

    #[test]
    fn a_usdt_set_selector_carries_its_argument_and_value_to_the_kernel() {
        use lsm_shared::{ACT_SET, MAX_SELECTORS};
        let p = parse_ok(fixture!("set-usdt-argument.yaml"));
        let img = compile(&[(1, &p)]).expect("compiles");
        let (&id, _) = img.probes.iter().next().expect("one probe");
        let act = img.sel_act[&(id * MAX_SELECTORS)];
        assert_eq!(act.flags & ACT_SET, ACT_SET);
        assert_eq!((act.set_pos, act.set_value), (0, 32));
        assert_eq!(img.hook_cfg[&id].set_, 1);
    }

    #[test]
    fn a_returned_socket_is_read_in_a_free_position_and_tracked_by_the_selectors() {
        use lsm_shared::{ACT_POST, ACT_TRACK_SOCK, ACT_UNTRACK_SOCK, ARG_SOCK, SRC_RET};
        let p = parse_ok(fixture!("observe-udp-sends-of-tracked-sockets.yaml"));
        let img = compile(&[(1, &p)]).expect("compiles");
        let id_of = |label: &str| {
            img.probes
                .iter()
                .find(|(_, t)| hook_label(t) == label)
                .map(|(id, _)| *id)
                .expect(label)
        };
        let alloc = id_of("kretprobe sk_alloc");
        // The declared argument keeps its position; the returned socket takes the last free one.
        assert_eq!(img.hook_cfg[&alloc].args[1].src, 1);
        assert_eq!(
            img.hook_cfg[&alloc].args[4],
            ArgDesc {
                kind: ARG_SOCK,
                src: SRC_RET,
                width: 0,
                size: 0
            }
        );
        let act = img.sel_act[&(alloc * lsm_shared::MAX_SELECTORS)];
        assert_eq!(act.flags & (ACT_TRACK_SOCK | ACT_POST), ACT_TRACK_SOCK);
        assert_eq!(act.sock_pos, 4);
        assert_eq!(img.hook_cfg[&alloc].sock_acts, 1);

        let free = id_of("kprobe __sk_free");
        let act = img.sel_act[&(free * lsm_shared::MAX_SELECTORS)];
        assert_eq!(act.flags & ACT_UNTRACK_SOCK, ACT_UNTRACK_SOCK);
        assert_eq!(act.sock_pos, 0);
        // The socket the datagram goes out on tracks nothing.
        assert_eq!(img.hook_cfg[&id_of("kprobe udp_sendmsg")].sock_acts, 0);
    }

    #[test]
    fn running_out_of_probe_ids_names_the_policy() {
        let yaml = fixture!("observe-commit-creds-and-setuid.yaml");
        let mut policies = Vec::new();
        for i in 0..=(NUM_HOOKS - FIRST_DYNAMIC_HOOK) {
            let y = yaml.replace("commit_creds", &format!("fn_{i}"));
            let mut p = parse_ok(&y);
            p.name = format!("p{i}");
            policies.push(p);
        }
        let refs: Vec<(u32, &Policy)> = policies
            .iter()
            .enumerate()
            .map(|(i, p)| (i as u32, p))
            .collect();
        let e = compile(&refs).expect_err("out of ids");
        // sys_setuid takes one id, and each policy's own function one more.
        let last = format!("p{}", NUM_HOOKS - FIRST_DYNAMIC_HOOK - 1);
        assert!(
            matches!(&e, CompileError::TooManyProbes { policy } if *policy == last),
            "{e}"
        );
    }

    #[test]
    fn a_resolved_argument_has_the_resolve_bit_and_a_request_rooted_at_its_functions_btf() {
        use lsm_shared::{ARG_STR, HOOK_BPRM_CREDS_FROM_FILE};
        let p = parse_ok(fixture!("deny-exec-by-child-of-lsmvt-resolve-eperm.yaml"));
        let img = compile(&[(1, &p)]).expect("compiles");
        let lsm = img.hook_cfg[&HOOK_BPRM_CREDS_FROM_FILE].args[0];
        assert_eq!((lsm.kind, lsm.src), (ARG_STR, SRC_RESOLVE));
        assert_eq!(
            img.resolve[&(HOOK_BPRM_CREDS_FROM_FILE, 0)],
            ResolveReq {
                root: BtfRoot::Func {
                    name: "bpf_lsm_bprm_creds_from_file".into(),
                    param: 0
                },
                members: ["mm", "owner", "real_parent", "comm"]
                    .map(String::from)
                    .to_vec(),
                kind: ARG_STR,
            }
        );
        let kp = FIRST_DYNAMIC_HOOK;
        assert_eq!(img.hook_cfg[&kp].args[0].src, SRC_RESOLVE);
        assert_eq!(
            img.resolve[&(kp, 0)].root,
            BtfRoot::Func {
                name: "wake_up_new_task".into(),
                param: 0
            }
        );
    }

    #[test]
    fn resolve_at_a_hand_written_hook_runs_at_its_twin_and_the_hook_keeps_the_others() {
        use lsm_shared::{HOOK_BPRM_CHECK, twin_hook};
        let twin = twin_hook(HOOK_BPRM_CHECK).expect("bprm_check_security has a twin");
        let resolved = parse_ok(fixture!(
            "observe-exec-by-child-of-lsmvt-resolve-at-bprm-check.yaml"
        ));
        let plain = parse_ok(fixture!("deny-exec-of-lsm-vmtest-blocked-eperm.yaml"));
        let img = compile(&[(1, &resolved), (2, &plain)]).expect("compiles");
        assert_eq!(img.hook_cfg[&twin].selectors, 1);
        assert_eq!(img.hook_cfg[&twin].args[0].src, SRC_RESOLVE);
        assert!(img.resolve.contains_key(&(twin, 0)));
        assert_eq!(img.hook_cfg[&HOOK_BPRM_CHECK].selectors, 1);
        assert!(!img.resolve.contains_key(&(HOOK_BPRM_CHECK, 0)));
    }

    #[test]
    fn two_policies_reading_one_position_through_different_paths_clash() {
        let a = parse_ok(fixture!("deny-exec-by-child-of-lsmvt-resolve-eperm.yaml"));
        let b = parse_ok(
            &fixture!("deny-exec-by-child-of-lsmvt-resolve-eperm.yaml")
                .replace("mm.owner.real_parent.comm", "mm.owner.comm")
                .replace("name: deny-exec-by-child", "name: other-deny-exec-by-child"),
        );
        assert!(matches!(
            compile(&[(1, &a), (2, &b)]),
            Err(CompileError::ArgClash { index: 0, .. })
        ));
    }
}
