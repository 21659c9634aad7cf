use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::sync::Arc;

use super::*;

const UID: &str = "0f2b3c4d-1a2b-4c3d-9e8f-001122334455";
const UID_SYSTEMD: &str = "0f2b3c4d_1a2b_4c3d_9e8f_001122334455";
const UID2: &str = "11111111-2222-4333-8444-555555555555";
const MAIN: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const PAUSE: &str = "3333333333333333333333333333333333333333333333333333333333333333";

fn container(name: &str, id: Option<&str>) -> ContainerInfo {
    ContainerInfo {
        name: name.to_string(),
        id: id.map(str::to_string),
        status_id: id.map(|id| format!("containerd://{id}")),
        image: format!("docker.io/library/{name}:1"),
        image_id: format!("docker.io/library/{name}@sha256:00"),
        started_at: id.map(|_| SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
    }
}

fn pod(uid: &str, name: &str, labels: &[(&str, &str)], main: Option<&str>) -> PodInfo {
    PodInfo {
        uid: uid.to_string(),
        namespace: "default".to_string(),
        name: name.to_string(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        annotations: BTreeMap::new(),
        workload: name.to_string(),
        workload_kind: "Pod".to_string(),
        static_hash: None,
        containers: vec![container("main", main)],
    }
}

fn pod_dir(uid: &str) -> String {
    format!(
        "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice",
        uid.replace('-', "_")
    )
}

fn container_dir(uid: &str, id: &str) -> String {
    format!("{}/cri-containerd-{id}.scope", pod_dir(uid))
}

fn mkdir(root: &Path, rel: &str) -> u64 {
    let p = root.join(rel);
    std::fs::create_dir_all(&p).expect("mkdir");
    std::fs::metadata(&p).expect("stat").ino()
}

fn cgroups_of(root: &Path) -> Cgroups {
    let mut c = Cgroups::default();
    c.insert(cgroupfs::scan(root, root));
    c
}

fn store_of(pods: Vec<PodInfo>) -> IdentityStore {
    let mut s = IdentityStore::new();
    for p in pods {
        s.apply(PodEvent::Applied(p));
    }
    s
}

#[test]
fn parents_pods_and_reported_containers_are_listed_and_the_rest_left_to_the_pod_entry() {
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path();
    let parent = mkdir(root, "kubepods.slice/kubepods-besteffort.slice");
    let pod_id = mkdir(root, &pod_dir(UID));
    let main_id = mkdir(root, &container_dir(UID, MAIN));
    // The sandbox: a container the status never lists.
    let pause_id = mkdir(root, &container_dir(UID, PAUSE));
    let conmon = mkdir(root, &format!("{}/crio-conmon-{MAIN}.scope", pod_dir(UID)));
    // A pod the API has not told about.
    let stranger = mkdir(root, &pod_dir(UID2));

    let store = store_of(vec![pod(UID, "xwing", &[("class", "xwing")], Some(MAIN))]);
    let w = workloads_of(&store, &cgroups_of(root));
    assert!(w.enabled);
    assert_eq!(w.cgroups.get(&parent), Some(&CgroupOwner::PodParent));
    let Some(CgroupOwner::Pod(view)) = w.cgroups.get(&pod_id) else {
        panic!("the pod's cgroup is a Pod: {w:#?}");
    };
    assert_eq!(
        (view.namespace.as_str(), view.name.as_str()),
        ("default", "xwing")
    );
    assert_eq!(view.labels["class"], "xwing");
    assert_eq!(
        w.cgroups.get(&main_id),
        Some(&CgroupOwner::Container {
            pod: view.clone(),
            name: "main".into(),
            image_id: "docker.io/library/main@sha256:00".into(),
        })
    );
    for left_out in [pause_id, conmon, stranger] {
        assert!(
            !w.cgroups.contains_key(&left_out),
            "{left_out} listed: {w:#?}"
        );
    }
    assert_eq!(
        w.cgroups.len(),
        4,
        "kubepods.slice, besteffort, pod, container"
    );
}

#[test]
fn a_container_is_listed_once_its_id_is_in_the_status_and_left_out_when_it_leaves() {
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path();
    let main_id = mkdir(root, &container_dir(UID, MAIN));
    let cgroups = cgroups_of(root);
    let mut store = store_of(vec![pod(UID, "xwing", &[], None)]);
    assert!(
        !workloads_of(&store, &cgroups)
            .cgroups
            .contains_key(&main_id)
    );
    store.apply(PodEvent::Applied(pod(UID, "xwing", &[], Some(MAIN))));
    assert!(
        workloads_of(&store, &cgroups)
            .cgroups
            .contains_key(&main_id)
    );
    // Restarted: the status has another ID; the old cgroup (still there) is the pod's again.
    store.apply(PodEvent::Applied(pod(UID, "xwing", &[], Some(PAUSE))));
    assert!(
        !workloads_of(&store, &cgroups)
            .cgroups
            .contains_key(&main_id)
    );
}

#[test]
fn a_static_pod_is_found_by_the_config_hash_in_its_cgroup_name() {
    let hash = "8f3e0b9d2c7a41e6b5d4c3a2918f7e6d";
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path();
    let id = mkdir(root, &format!("kubepods/burstable/pod{hash}"));
    let mut mirror = pod(UID, "etcd-node", &[], None);
    mirror.static_hash = Some(hash.into());
    let w = workloads_of(&store_of(vec![mirror]), &cgroups_of(root));
    assert!(matches!(w.cgroups.get(&id), Some(CgroupOwner::Pod(v)) if v.name == "etcd-node"));
}

fn index_with(root: &Path, proc_root: &Path, pods: Vec<PodInfo>) -> PodIndex {
    let index = PodIndex::new(proc_root);
    {
        let mut s = index.write();
        s.store = store_of(pods);
        s.cgroups = cgroups_of(root);
    }
    index
}

#[test]
fn pod_of_names_the_pod_and_the_container_with_tetragons_fields() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (root, proc) = (tmp.path().join("cg"), tmp.path().join("proc"));
    let parent = mkdir(&root, "kubepods.slice");
    let pod_id = mkdir(&root, &pod_dir(UID));
    let main_id = mkdir(&root, &container_dir(UID, MAIN));
    let pause_id = mkdir(&root, &container_dir(UID, PAUSE));
    let index = index_with(
        &root,
        &proc,
        vec![pod(UID, "xwing", &[("class", "xwing")], Some(MAIN))],
    );

    let p = index.pod_of(main_id, 1).expect("in a pod");
    assert_eq!(
        (p.namespace.as_str(), p.name.as_str(), p.uid.as_str()),
        ("default", "xwing", UID)
    );
    assert_eq!(
        (p.workload.as_str(), p.workload_kind.as_str()),
        ("xwing", "Pod")
    );
    assert_eq!(p.labels["class"], "xwing");
    let c = p.container.expect("container");
    assert_eq!(
        c.id,
        format!("containerd://{MAIN}"),
        "as the status reports it"
    );
    assert_eq!(c.name, "main");
    let image = c.image.expect("image");
    assert_eq!(image.name, "docker.io/library/main:1");
    assert_eq!(image.id, "docker.io/library/main@sha256:00");
    assert_eq!(
        c.start_time,
        Some(model::Time::from_unix_secs(1_700_000_000))
    );
    assert_eq!(index.pod_of(pod_id, 1).expect("pod").container, None);
    assert_eq!(
        index
            .pod_of(pause_id, 1)
            .expect("the sandbox is the pod's")
            .container,
        None
    );
    assert_eq!(index.pod_of(parent, 1), None, "not a pod");
}

#[test]
fn the_enrichment_gets_the_same_arc_while_the_pod_is_unchanged_and_a_new_one_after_a_change() {
    use crate::events::enrich::PodLookup;
    let tmp = tempfile::tempdir().expect("tmp");
    let (root, proc) = (tmp.path().join("cg"), tmp.path().join("proc"));
    mkdir(&root, "kubepods.slice");
    mkdir(&root, &pod_dir(UID));
    let main_id = mkdir(&root, &container_dir(UID, MAIN));
    let index = index_with(
        &root,
        &proc,
        vec![pod(UID, "xwing", &[("class", "xwing")], Some(MAIN))],
    );
    let lookup: &dyn PodLookup = &index;
    let first = lookup.pod_of(main_id, 1).expect("in a pod");
    let again = lookup.pod_of(main_id, 2).expect("in a pod");
    assert!(Arc::ptr_eq(&first, &again));

    index.write().store = store_of(vec![pod(UID, "xwing", &[("class", "tie")], Some(MAIN))]);
    let relabelled = lookup.pod_of(main_id, 1).expect("in a pod");
    assert!(!Arc::ptr_eq(&first, &relabelled));
    assert_eq!(relabelled.labels["class"], "tie");
}

#[test]
fn an_unlisted_cgroup_is_resolved_from_proc_once_and_host_processes_have_no_pod() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (root, proc) = (tmp.path().join("cg"), tmp.path().join("proc"));
    mkdir(&root, "kubepods.slice");
    let index = index_with(&root, &proc, vec![pod(UID, "xwing", &[], Some(MAIN))]);
    let write = |pid: u32, path: &str| {
        let dir = proc.join(pid.to_string());
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("cgroup"), format!("0::/{path}\n")).expect("write");
    };
    // In a sub-cgroup of the container (not listed by the scan).
    write(40, &format!("{}/init", container_dir(UID, MAIN)));
    write(41, "system.slice/containerd.service");
    let p = index.pod_of(9_000, 40).expect("from /proc");
    assert_eq!(p.name, "xwing");
    assert_eq!(p.container.expect("container").name, "main");
    assert_eq!(index.pod_of(9_001, 41), None, "a host process");
    // Remembered by cgroup id: /proc is not read again.
    std::fs::remove_dir_all(&proc).expect("rm");
    assert!(index.pod_of(9_000, 40).is_some());
    assert_eq!(index.pod_of(9_002, 42), None, "no such process");
}

fn sync_state(root: &Path) -> Sync {
    Sync {
        index: PodIndex::new(root.join("proc")),
        opts: Options {
            cgroup_root: root.to_path_buf(),
            proc_root: root.join("proc"),
            ..Options::default()
        },
        synced: false,
        pending: None,
        last: None,
    }
}

#[tokio::test]
async fn a_burst_of_changes_is_sent_once_after_a_quiet_window_capped_by_the_max_delay() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut s = sync_state(tmp.path());
    let (out, mut rx) = watch::channel(None);
    let t0 = Instant::now();
    s.pod_event(PodEvent::Synced, t0);
    for (i, uid) in [UID, UID2].into_iter().enumerate() {
        s.pod_event(
            PodEvent::Applied(pod(uid, &format!("p{i}"), &[], None)),
            t0 + Duration::from_millis(1),
        );
    }
    let p = s.pending.expect("pending");
    assert_eq!((p.first, p.due), (t0, t0 + Duration::from_millis(6)));
    // Changes every 4 ms keep it waiting, but not beyond the max delay.
    for ms in (5..300).step_by(4) {
        s.changed(t0 + Duration::from_millis(ms));
    }
    assert_eq!(
        s.pending.expect("pending").due,
        t0 + Duration::from_millis(100)
    );
    s.publish(&out);
    assert!(rx.has_changed().expect("open"));
    let sent = rx.borrow_and_update().clone().expect("published");
    assert_eq!(sent.since, t0);
    assert!(sent.workloads.enabled);
    // Nothing new: nothing sent.
    s.changed(t0 + Duration::from_millis(400));
    s.publish(&out);
    assert!(!rx.has_changed().expect("open"));
    assert!(s.pending.is_none());
}

#[tokio::test]
async fn nothing_is_sent_before_the_pods_are_listed() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut s = sync_state(tmp.path());
    let (out, rx) = watch::channel(None);
    s.pod_event(PodEvent::Applied(pod(UID, "a", &[], None)), Instant::now());
    s.publish(&out);
    assert!(rx.borrow().is_none());
    s.pod_event(PodEvent::Synced, Instant::now());
    s.publish(&out);
    assert!(rx.borrow().is_some(), "the first one follows the listing");
}

/// Waits for a published [`Workloads`] that satisfies `pred`.
async fn published(
    rx: &mut watch::Receiver<Option<Published>>,
    what: &str,
    pred: impl Fn(&Workloads) -> bool,
) -> Published {
    let found = {
        let wait = rx.wait_for(|p| p.as_ref().is_some_and(|p| pred(&p.workloads)));
        match tokio::time::timeout(Duration::from_secs(5), wait).await {
            Ok(Ok(p)) => p.clone(),
            _ => None,
        }
    };
    found.unwrap_or_else(|| panic!("timed out waiting for {what}; last: {:#?}", *rx.borrow()))
}

fn owner_of(w: &Workloads, id: u64) -> Option<&CgroupOwner> {
    w.cgroups.get(&id)
}

#[tokio::test]
async fn a_pod_is_listed_whether_its_cgroup_appears_before_or_after_its_pod_event() {
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path().join("cg");
    mkdir(&root, "kubepods.slice/kubepods-besteffort.slice");
    let index = PodIndex::new(tmp.path().join("proc"));
    let opts = Options {
        cgroup_root: root.clone(),
        proc_root: tmp.path().join("proc"),
        ..Options::default()
    };
    let (tx, rx) = mpsc::channel(16);
    let (out, mut published_rx) = watch::channel(None);
    let task = tokio::spawn(sync(index.clone(), opts, rx, out));
    tx.send(PodEvent::Synced).await.expect("send");
    published(&mut published_rx, "the first workloads", |w| {
        w.cgroups.len() == 2
    })
    .await;

    // Cgroup first (the kubelet was quicker than our watch), pod event second.
    let early = mkdir(&root, &pod_dir(UID));
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert!(
        owner_of(&index.workloads(), early).is_none(),
        "unknown pod: not listed"
    );
    tx.send(PodEvent::Applied(pod(UID, "early", &[], None)))
        .await
        .expect("send");
    published(
        &mut published_rx,
        "early's pod cgroup",
        |w| matches!(owner_of(w, early), Some(CgroupOwner::Pod(v)) if v.name == "early"),
    )
    .await;

    // Pod event first (the usual order), then the kubelet creates the cgroup.
    tx.send(PodEvent::Applied(pod(UID2, "late", &[], Some(MAIN))))
        .await
        .expect("send");
    let late = mkdir(&root, &pod_dir(UID2));
    let p = published(&mut published_rx, "late's pod cgroup", |w| {
        matches!(owner_of(w, late), Some(CgroupOwner::Pod(_)))
    })
    .await;
    assert!(p.since.elapsed() < Duration::from_secs(1));
    let main = mkdir(&root, &container_dir(UID2, MAIN));
    published(&mut published_rx, "late's container", |w| {
        matches!(owner_of(w, main), Some(CgroupOwner::Container { name, .. }) if name == "main")
    })
    .await;
    assert_eq!(index.pod_of(main, 1).expect("pod").name, "late");

    // The pod goes: its entries with it, whether the event or the rmdir comes first.
    tx.send(PodEvent::Deleted { uid: UID2.into() })
        .await
        .expect("send");
    published(&mut published_rx, "late gone", |w| {
        owner_of(w, late).is_none() && owner_of(w, main).is_none()
    })
    .await;
    std::fs::remove_dir(root.join(pod_dir(UID))).expect("rmdir");
    published(&mut published_rx, "early's cgroup gone", |w| {
        owner_of(w, early).is_none()
    })
    .await;
    drop(tx);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the sync ends with the pod watcher")
        .expect("no panic");
}

#[test]
fn a_guaranteed_pod_under_the_systemd_driver_is_matched_by_its_uid() {
    // The systemd driver writes `_` for `-`; the UID matches once restored.
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path();
    let id = mkdir(
        root,
        &format!("kubepods.slice/kubepods-pod{UID_SYSTEMD}.slice"),
    );
    let w = workloads_of(&store_of(vec![pod(UID, "g", &[], None)]), &cgroups_of(root));
    assert!(matches!(owner_of(&w, id), Some(CgroupOwner::Pod(_))));
}
