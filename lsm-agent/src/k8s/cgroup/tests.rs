use super::*;

const UID: &str = "0f2b3c4d-1a2b-4c3d-9e8f-001122334455";
const UID_SYSTEMD: &str = "0f2b3c4d_1a2b_4c3d_9e8f_001122334455";
const ID: &str = "4c2d9a1b7e3f5a6b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d";
const STATIC_HASH: &str = "8f3e0b9d2c7a41e6b5d4c3a2918f7e6d";

fn container(path: &str) -> (String, QosClass, PodChild<'_>) {
    let p = parse(path).unwrap_or_else(|| panic!("{path} is a pod cgroup"));
    (p.uid, p.qos, p.child)
}

#[test]
fn systemd_driver_burstable_containerd_container() {
    let path = format!(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice/cri-containerd-{ID}.scope"
    );
    let p = parse(&path).expect("pod");
    assert_eq!(p.uid, UID, "underscores become dashes again");
    assert_eq!(p.qos, QosClass::Burstable);
    assert_eq!(
        p.child,
        PodChild::Container {
            runtime: Runtime::Containerd,
            id: ID
        }
    );
    assert_eq!(p.container_id(), Some(ID));
    assert_eq!(
        p.pod_dir,
        format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice"
        )
    );
}

#[test]
fn systemd_driver_besteffort_crio_container() {
    let path = format!(
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_SYSTEMD}.slice/crio-{ID}.scope"
    );
    let (uid, qos, child) = container(&path);
    assert_eq!((uid.as_str(), qos), (UID, QosClass::BestEffort));
    assert_eq!(
        child,
        PodChild::Container {
            runtime: Runtime::CriO,
            id: ID
        }
    );
}

#[test]
fn systemd_driver_guaranteed_pod_has_no_qos_slice() {
    let path = format!("/kubepods.slice/kubepods-pod{UID_SYSTEMD}.slice/docker-{ID}.scope");
    let (uid, qos, child) = container(&path);
    assert_eq!((uid.as_str(), qos), (UID, QosClass::Guaranteed));
    assert_eq!(
        child,
        PodChild::Container {
            runtime: Runtime::Docker,
            id: ID
        }
    );
}

#[test]
fn crio_conmon_is_a_runtime_monitor_not_a_container() {
    let path = format!(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice/crio-conmon-{ID}.scope"
    );
    let p = parse(&path).expect("in the pod's cgroup");
    assert_eq!(p.child, PodChild::RuntimeMonitor { id: ID });
    assert_eq!(p.container_id(), None);
}

#[test]
fn the_pod_cgroup_itself_has_no_child() {
    let path = format!(
        "/sys/fs/cgroup/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice"
    );
    let p = parse(&path).expect("pod");
    assert_eq!(p.child, PodChild::None);
    assert_eq!(
        p.pod_dir, path,
        "a cgroupfs directory keeps its mount prefix"
    );
    let with_slash = format!("{path}/");
    assert_eq!(
        parse(&with_slash).expect("pod").child,
        PodChild::None,
        "a trailing slash changes nothing"
    );
}

#[test]
fn nested_kubelet_root_slices_are_recognised() {
    // kubelet with --cgroup-root=/kubelet.slice (e.g. kind nodes).
    let path = format!(
        "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_SYSTEMD}.slice/cri-containerd-{ID}.scope"
    );
    let (uid, qos, child) = container(&path);
    assert_eq!((uid.as_str(), qos), (UID, QosClass::BestEffort));
    assert!(matches!(child, PodChild::Container { id: ID, .. }));
}

#[test]
fn cgroupfs_driver_all_qos_classes_with_bare_ids() {
    for (dir, qos) in [
        (format!("/kubepods/pod{UID}"), QosClass::Guaranteed),
        (format!("/kubepods/burstable/pod{UID}"), QosClass::Burstable),
        (
            format!("/kubepods/besteffort/pod{UID}"),
            QosClass::BestEffort,
        ),
    ] {
        let path = format!("{dir}/{ID}");
        let p = parse(&path).unwrap_or_else(|| panic!("{path}"));
        assert_eq!((p.uid.as_str(), p.qos), (UID, qos), "{path}");
        assert_eq!(
            p.child,
            PodChild::Container {
                runtime: Runtime::Unnamed,
                id: ID
            },
            "{path}"
        );
        assert_eq!(p.pod_dir, dir);
    }
}

#[test]
fn cgroupfs_driver_runtime_prefixed_names_without_scope() {
    for (name, runtime) in [
        (format!("crio-{ID}"), Runtime::CriO),
        (format!("cri-containerd-{ID}"), Runtime::Containerd),
        (format!("docker-{ID}"), Runtime::Docker),
    ] {
        let path = format!("/kubepods/burstable/pod{UID}/{name}");
        assert_eq!(
            container(&path).2,
            PodChild::Container { runtime, id: ID },
            "{path}"
        );
    }
    let conmon = format!("/kubepods/besteffort/pod{UID}/crio-conmon-{ID}");
    assert_eq!(container(&conmon).2, PodChild::RuntimeMonitor { id: ID });
}

#[test]
fn cgroups_below_the_container_belong_to_it() {
    // CRI-O's `container` sub-cgroup, or cgroups a container (systemd in it) makes itself.
    let path = format!(
        "/kubepods.slice/kubepods-pod{UID_SYSTEMD}.slice/crio-{ID}.scope/container/init.scope"
    );
    assert_eq!(parse(&path).expect("pod").container_id(), Some(ID));
}

#[test]
fn paths_seen_from_inside_a_cgroup_namespace_keep_their_pod() {
    // /proc/<pid>/cgroup read by a process in another cgroup namespace starts with `..`.
    let path =
        format!("/../../kubepods-besteffort-pod{UID_SYSTEMD}.slice/cri-containerd-{ID}.scope");
    let p = parse(&path).expect("pod");
    assert_eq!((p.uid.as_str(), p.container_id()), (UID, Some(ID)));
}

#[test]
fn static_pods_carry_the_config_hash_as_uid() {
    let systemd = format!(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{STATIC_HASH}.slice/cri-containerd-{ID}.scope"
    );
    assert_eq!(container(&systemd).0, STATIC_HASH);
    let cgroupfs = format!("/kubepods/pod{STATIC_HASH}/{ID}");
    assert_eq!(container(&cgroupfs).0, STATIC_HASH);
}

#[test]
fn unknown_children_of_a_pod_keep_the_pod_but_name_no_container() {
    for child in [
        "something.scope".to_string(),
        format!("cri-containerd-{}.scope", &ID[..12]),
        format!("cri-containerd-{}.scope", ID.to_uppercase()),
        format!("{ID}.scope"),
        "crio-conmon-xyz.scope".to_string(),
    ] {
        let path = format!("/kubepods/burstable/pod{UID}/{child}");
        let p = parse(&path).unwrap_or_else(|| panic!("{path} is in a pod"));
        assert_eq!(p.child, PodChild::Unknown, "{path}");
        assert_eq!(p.container_id(), None);
    }
}

#[test]
fn host_and_non_pod_cgroups_are_not_pods() {
    for path in [
        "/",
        "",
        "/init.scope",
        "/system.slice/containerd.service",
        "/system.slice/kubelet.service",
        "/user.slice/user-1000.slice/session-3.scope",
        "/kubepods.slice",
        "/kubepods.slice/kubepods-burstable.slice",
        "/kubepods",
        "/kubepods/burstable",
        &format!("/system.slice/docker-{ID}.scope"),
        &format!("/docker/{ID}"),
    ] {
        assert_eq!(parse(path), None, "{path}");
    }
}

#[test]
fn pod_names_out_of_place_or_malformed_are_not_pods() {
    for path in [
        // cgroupfs pod dirs must sit under kubepods[/qos].
        format!("/pod{UID}/{ID}"),
        format!("/burstable/pod{UID}/{ID}"),
        format!("/kubepods/guaranteed/pod{UID}/{ID}"),
        // systemd pod slices must name kubepods right before the QoS and pod.
        format!("/kubepods.slice/other-pod{UID_SYSTEMD}.slice"),
        format!("/kubepods.slice/kubepods-burstable-extra-pod{UID_SYSTEMD}.slice"),
        // Not a UID.
        "/kubepods/podnotauid/x".to_string(),
        format!("/kubepods/pod{}/x", &UID[..35]),
        format!("/kubepods.slice/kubepods-pod{UID}x.slice"),
        format!("/kubepods.slice/kubepods-pod{}.slice", &STATIC_HASH[..31]),
    ] {
        assert_eq!(parse(&path), None, "{path}");
    }
}

#[test]
fn the_unified_line_of_proc_pid_cgroup_is_found_in_hybrid_and_pure_v2_layouts() {
    let v2 = format!("0::/kubepods/pod{UID}/{ID}\n");
    assert_eq!(
        unified_path(&v2),
        Some(format!("/kubepods/pod{UID}/{ID}").as_str())
    );
    let hybrid = "12:memory:/foo\n1:name=systemd:/init.scope\n0::/init.scope\n";
    assert_eq!(unified_path(hybrid), Some("/init.scope"));
    assert_eq!(unified_path("3:cpu:/x\n"), None, "v1 only");
    assert_eq!(unified_path(""), None);
}

#[test]
fn container_ids_are_64_lowercase_hex_digits() {
    assert!(is_container_id(ID));
    assert!(!is_container_id(&ID[1..]));
    assert!(!is_container_id(&format!("{ID}0")));
    assert!(!is_container_id(&ID.to_uppercase()));
    assert!(!is_container_id(&ID.replace('c', "g")));
}
