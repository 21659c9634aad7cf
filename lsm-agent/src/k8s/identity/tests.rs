use super::*;

const UID: &str = "0f2b3c4d-1a2b-4c3d-9e8f-001122334455";
const UID2: &str = "9a8b7c6d-5e4f-4a3b-8c2d-ffeeddccbbaa";
const HASH: &str = "8f3e0b9d2c7a41e6b5d4c3a2918f7e6d";
const MAIN: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const SIDE: &str = "2222222222222222222222222222222222222222222222222222222222222222";
const PAUSE: &str = "3333333333333333333333333333333333333333333333333333333333333333";

fn container(name: &str, id: Option<&str>) -> ContainerInfo {
    ContainerInfo {
        name: name.to_string(),
        id: id.map(str::to_string),
        status_id: id.map(|id| format!("containerd://{id}")),
        image: format!("{name}:1"),
        image_id: String::new(),
        started_at: None,
    }
}

fn pod(uid: &str, name: &str, containers: Vec<ContainerInfo>) -> PodInfo {
    PodInfo {
        uid: uid.to_string(),
        namespace: "default".to_string(),
        name: name.to_string(),
        labels: BTreeMap::from([("app".to_string(), name.to_string())]),
        annotations: BTreeMap::new(),
        workload: name.to_string(),
        workload_kind: "Pod".to_string(),
        static_hash: None,
        containers,
    }
}

fn systemd_path(uid: &str, leaf: &str) -> String {
    format!(
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice{leaf}",
        uid.replace('-', "_")
    )
}

#[test]
fn an_added_pod_is_found_by_uid_and_by_container_id() {
    let mut store = IdentityStore::new();
    let xwing = pod(UID, "xwing", vec![container("main", Some(MAIN))]);
    let change = store
        .apply(PodEvent::Applied(xwing.clone()))
        .expect("a change");
    assert_eq!(change.old, None);
    assert_eq!(change.containers_added(), vec![MAIN]);
    assert!(change.labels_changed());
    assert_eq!(store.pod(UID).map(|p| p.name.as_str()), Some("xwing"));
    let (p, c) = store.container(MAIN).expect("by container");
    assert_eq!((p.name.as_str(), c.name.as_str()), ("xwing", "main"));
    assert_eq!(store.len(), 1);
}

#[test]
fn a_cgroup_path_resolves_to_its_pod_and_container() {
    let mut store = IdentityStore::new();
    store.apply(PodEvent::Applied(pod(
        UID,
        "xwing",
        vec![container("main", Some(MAIN)), container("side", Some(SIDE))],
    )));
    let id = store
        .resolve_cgroup(&systemd_path(UID, &format!("/cri-containerd-{SIDE}.scope")))
        .expect("resolved");
    assert_eq!(id.pod.name, "xwing");
    assert_eq!(id.container.map(|c| c.name.as_str()), Some("side"));
    let proc_line = format!("/kubepods/besteffort/pod{UID}/{MAIN}");
    let id = store.resolve_cgroup(&proc_line).expect("cgroupfs layout");
    assert_eq!(id.container.map(|c| c.name.as_str()), Some("main"));
}

#[test]
fn the_pod_is_known_before_the_container_id_is_reported() {
    let mut store = IdentityStore::new();
    store.apply(PodEvent::Applied(pod(
        UID,
        "xwing",
        vec![container("main", None)],
    )));
    let path = systemd_path(UID, &format!("/cri-containerd-{MAIN}.scope"));
    let id = store.resolve_cgroup(&path).expect("the pod is known");
    assert_eq!(id.pod.name, "xwing");
    assert_eq!(id.container, None, "no container ID in the status yet");
    // The status patch arrives.
    let change = store
        .apply(PodEvent::Applied(pod(
            UID,
            "xwing",
            vec![container("main", Some(MAIN))],
        )))
        .expect("a change");
    assert_eq!(change.containers_added(), vec![MAIN]);
    assert!(!change.labels_changed());
    let id = store.resolve_cgroup(&path).expect("resolved");
    assert_eq!(id.container.map(|c| c.name.as_str()), Some("main"));
}

#[test]
fn sandbox_and_pod_level_cgroups_resolve_to_the_pod_without_container() {
    let mut store = IdentityStore::new();
    store.apply(PodEvent::Applied(pod(
        UID,
        "xwing",
        vec![container("main", Some(MAIN))],
    )));
    let pause = systemd_path(UID, &format!("/cri-containerd-{PAUSE}.scope"));
    assert_eq!(store.resolve_cgroup(&pause).expect("pod").container, None);
    assert_eq!(
        store
            .resolve_cgroup(&systemd_path(UID, ""))
            .expect("pod")
            .container,
        None
    );
}

#[test]
fn unknown_pods_and_host_cgroups_do_not_resolve() {
    let mut store = IdentityStore::new();
    store.apply(PodEvent::Applied(pod(UID, "xwing", vec![])));
    assert_eq!(store.resolve_cgroup(&systemd_path(UID2, "")), None);
    assert_eq!(
        store.resolve_cgroup("/system.slice/containerd.service"),
        None
    );
    // A container ID known in one pod does not make another pod's cgroup resolve to it.
    store.apply(PodEvent::Applied(pod(
        UID2,
        "tie",
        vec![container("main", Some(MAIN))],
    )));
    let wrong_pod = systemd_path(UID, &format!("/cri-containerd-{MAIN}.scope"));
    let id = store.resolve_cgroup(&wrong_pod).expect("pod xwing");
    assert_eq!((id.pod.name.as_str(), id.container), ("xwing", None));
}

#[test]
fn a_label_change_is_reported_and_an_identical_update_is_not() {
    let mut store = IdentityStore::new();
    let p = pod(UID, "xwing", vec![container("main", Some(MAIN))]);
    store.apply(PodEvent::Applied(p.clone()));
    assert_eq!(store.apply(PodEvent::Applied(p.clone())), None);
    let mut relabelled = p.clone();
    relabelled
        .labels
        .insert("class".to_string(), "fighter".to_string());
    let change = store
        .apply(PodEvent::Applied(relabelled))
        .expect("a change");
    assert!(change.labels_changed());
    assert!(change.containers_added().is_empty());
    assert!(change.containers_removed().is_empty());
    assert_eq!(
        store
            .pod(UID)
            .and_then(|p| p.labels.get("class"))
            .map(String::as_str),
        Some("fighter")
    );
}

#[test]
fn a_restarted_container_replaces_its_old_id() {
    let mut store = IdentityStore::new();
    store.apply(PodEvent::Applied(pod(
        UID,
        "xwing",
        vec![container("main", Some(MAIN))],
    )));
    let change = store
        .apply(PodEvent::Applied(pod(
            UID,
            "xwing",
            vec![container("main", Some(SIDE))],
        )))
        .expect("a change");
    assert_eq!(change.containers_added(), vec![SIDE]);
    assert_eq!(change.containers_removed(), vec![MAIN]);
    assert!(store.container(MAIN).is_none());
    assert!(store.container(SIDE).is_some());
}

#[test]
fn deleting_a_pod_forgets_it_and_its_containers() {
    let mut store = IdentityStore::new();
    store.apply(PodEvent::Applied(pod(
        UID,
        "xwing",
        vec![container("main", Some(MAIN))],
    )));
    let change = store
        .apply(PodEvent::Deleted {
            uid: UID.to_string(),
        })
        .expect("a change");
    assert_eq!(change.new, None);
    assert_eq!(change.containers_removed(), vec![MAIN]);
    assert!(store.is_empty());
    assert!(store.container(MAIN).is_none());
    assert_eq!(
        store.apply(PodEvent::Deleted {
            uid: UID.to_string()
        }),
        None,
        "deleting an unknown pod changes nothing"
    );
}

#[test]
fn a_static_pod_resolves_through_its_config_hash() {
    let mut store = IdentityStore::new();
    let mut etcd = pod(UID, "etcd-node1", vec![container("etcd", Some(MAIN))]);
    etcd.static_hash = Some(HASH.to_string());
    store.apply(PodEvent::Applied(etcd));
    let path = systemd_path(HASH, &format!("/cri-containerd-{MAIN}.scope"));
    let id = store.resolve_cgroup(&path).expect("mirror pod");
    assert_eq!(id.pod.uid, UID);
    assert_eq!(id.container.map(|c| c.name.as_str()), Some("etcd"));
    assert_eq!(
        store.pod_by_cgroup_uid(UID).map(|p| p.uid.as_str()),
        Some(UID)
    );
    store.apply(PodEvent::Deleted {
        uid: UID.to_string(),
    });
    assert_eq!(store.pod_by_cgroup_uid(HASH), None);
}
