use std::time::Duration;

use super::*;

const UID: &str = "0f2b3c4d-1a2b-4c3d-9e8f-001122334455";
const UID_SYSTEMD: &str = "0f2b3c4d_1a2b_4c3d_9e8f_001122334455";
const UID2: &str = "11111111-2222-4333-8444-555555555555";
const ID: &str = "4c2d9a1b7e3f5a6b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d";
const ID2: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

fn mkdirs(root: &Path, rel: &str) -> PathBuf {
    let p = root.join(rel);
    std::fs::create_dir_all(&p).expect("mkdir");
    p
}

fn id_of(p: &Path) -> u64 {
    std::fs::metadata(p).expect("stat").ino()
}

fn by_rel(root: &Path, dirs: &[Dir]) -> BTreeMap<String, Found> {
    dirs.iter()
        .map(|d| {
            let rel = d.path.strip_prefix(root).expect("under root");
            (rel.to_string_lossy().into_owned(), d.found.clone())
        })
        .collect()
}

fn pod(uid: &str) -> Found {
    Found::Pod { uid: uid.into() }
}

fn child(uid: &str, id: Option<&str>) -> Found {
    Found::PodChild {
        uid: uid.into(),
        container: id.map(str::to_string),
    }
}

#[test]
fn the_kubelets_parents_are_recognised_under_both_drivers() {
    for parent in [
        "kubepods.slice",
        "kubepods.slice/kubepods-burstable.slice",
        "kubepods.slice/kubepods-besteffort.slice",
        "kubelet.slice/kubelet-kubepods.slice",
        "kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice",
        "kubepods",
        "kubepods/burstable",
        "kubepods/besteffort",
    ] {
        assert_eq!(classify(parent), Some(Found::PodParent), "{parent}");
    }
    for other in [
        "system.slice",
        "system.slice/containerd.service",
        "burstable",
        "user.slice/user-1000.slice",
        "kubepods-extra.slice",
    ] {
        assert_eq!(classify(other), None, "{other}");
    }
}

#[test]
fn pods_containers_and_other_children_of_pods_are_told_apart() {
    let pod_dir = format!(
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice"
    );
    assert_eq!(classify(&pod_dir), Some(pod(UID)));
    assert_eq!(
        classify(&format!("{pod_dir}/cri-containerd-{ID}.scope")),
        Some(child(UID, Some(ID)))
    );
    assert_eq!(
        classify(&format!("{pod_dir}/crio-conmon-{ID}.scope")),
        Some(child(UID, None))
    );
    assert_eq!(
        classify(&format!("{pod_dir}/cri-containerd-{ID}.scope/init")),
        None,
        "below a container: the container's entry stands for it"
    );
    assert_eq!(
        classify(&format!("kubepods/pod{UID}/{ID}")),
        Some(child(UID, Some(ID)))
    );
    assert_eq!(
        classify(&format!("kubepods/besteffort/pod{UID}")),
        Some(pod(UID))
    );
}

#[test]
fn a_scan_of_a_systemd_tree_finds_parents_pods_and_containers_with_their_inodes() {
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path();
    let pod_dir = format!(
        "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_SYSTEMD}.slice"
    );
    let c = mkdirs(root, &format!("{pod_dir}/cri-containerd-{ID}.scope"));
    mkdirs(root, &format!("{pod_dir}/cri-containerd-{ID}.scope/sub"));
    mkdirs(root, "kubepods.slice/kubepods-burstable.slice");
    mkdirs(root, "system.slice/containerd.service");
    // A file is not a cgroup.
    std::fs::write(root.join(&pod_dir).join("cgroup.procs"), "").expect("file");

    let dirs = scan(root, root);
    let found = by_rel(root, &dirs);
    let want: BTreeMap<String, Found> = [
        ("kubepods.slice".to_string(), Found::PodParent),
        (
            "kubepods.slice/kubepods-besteffort.slice".into(),
            Found::PodParent,
        ),
        (
            "kubepods.slice/kubepods-burstable.slice".into(),
            Found::PodParent,
        ),
        (pod_dir.clone(), pod(UID)),
        (
            format!("{pod_dir}/cri-containerd-{ID}.scope"),
            child(UID, Some(ID)),
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(found, want);
    let container = dirs.iter().find(|d| d.path == c).expect("container listed");
    assert_eq!(container.id, id_of(&c), "the id is the directory's inode");
}

#[test]
fn a_scan_of_a_cgroupfs_tree_with_crio_and_a_nested_kubelet_root() {
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path();
    mkdirs(root, &format!("kubepods/burstable/pod{UID}/crio-{ID}"));
    mkdirs(root, &format!("kubepods/pod{UID2}/{ID2}"));
    // kind and other nested layouts: the kubelet's root below another slice.
    let nested = format!(
        "kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod{}.slice",
        UID2.replace('-', "_")
    );
    mkdirs(root, &format!("{nested}/crio-{ID2}.scope"));
    let found = by_rel(root, &scan(root, root));
    assert_eq!(found["kubepods"], Found::PodParent);
    assert_eq!(found["kubepods/burstable"], Found::PodParent);
    assert_eq!(found[&format!("kubepods/burstable/pod{UID}")], pod(UID));
    assert_eq!(
        found[&format!("kubepods/burstable/pod{UID}/crio-{ID}")],
        child(UID, Some(ID))
    );
    assert_eq!(
        found[&format!("kubepods/pod{UID2}/{ID2}")],
        child(UID2, Some(ID2))
    );
    assert_eq!(
        found["kubelet.slice/kubelet-kubepods.slice"],
        Found::PodParent
    );
    assert_eq!(found[&nested], pod(UID2));
    assert_eq!(found.len(), 9, "{found:#?}");
}

#[test]
fn removing_a_pod_removes_its_containers_and_nothing_beside_it() {
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path();
    mkdirs(root, &format!("kubepods/pod{UID}/{ID}"));
    mkdirs(root, &format!("kubepods/pod{UID2}/{ID2}"));
    let mut cgroups = Cgroups::default();
    assert!(cgroups.insert(scan(root, root)));
    assert!(!cgroups.insert(scan(root, root)), "nothing new");
    assert_eq!(cgroups.len(), 5);
    assert!(cgroups.remove_under(&root.join(format!("kubepods/pod{UID}"))));
    assert_eq!(cgroups.len(), 3);
    let left: Vec<&Found> = cgroups.paths().map(|(_, f)| f).collect();
    assert!(left.contains(&&child(UID2, Some(ID2))));
    assert!(!left.iter().any(|f| **f == pod(UID)));
    assert!(!cgroups.remove_under(&root.join("nothing")));
}

#[test]
fn a_rescan_reports_a_change_only_when_the_tree_changed() {
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path();
    mkdirs(root, &format!("kubepods/pod{UID}"));
    let mut cgroups = Cgroups::default();
    assert!(cgroups.replace(scan(root, root)));
    assert!(!cgroups.replace(scan(root, root)));
    mkdirs(root, &format!("kubepods/pod{UID}/{ID}"));
    assert!(cgroups.replace(scan(root, root)));
}

async fn next(w: &mut CgroupWatcher) -> FsEvent {
    tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .expect("an inotify event")
}

#[tokio::test]
async fn the_watcher_sees_pods_and_containers_come_and_go() {
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path();
    let mut w = CgroupWatcher::new(root).expect("inotify");
    // The kubelet's root appears after the agent started.
    let kubepods = mkdirs(root, "kubepods.slice");
    assert_eq!(next(&mut w).await, FsEvent::Created(kubepods.clone()));
    let mut cgroups = Cgroups::default();
    cgroups.insert(scan(root, &kubepods));
    w.follow(&cgroups);

    let pod_dir = mkdirs(&kubepods, &format!("kubepods-pod{UID_SYSTEMD}.slice"));
    assert_eq!(next(&mut w).await, FsEvent::Created(pod_dir.clone()));
    cgroups.insert(scan(root, &pod_dir));
    w.follow(&cgroups);
    assert_eq!(w.watched(), 3, "root, kubepods.slice and the pod");

    // Files written in a watched directory are not events.
    std::fs::write(pod_dir.join("cgroup.procs"), "1").expect("write");
    let container = mkdirs(&pod_dir, &format!("cri-containerd-{ID}.scope"));
    assert_eq!(next(&mut w).await, FsEvent::Created(container.clone()));

    std::fs::remove_dir(&container).expect("rmdir");
    assert_eq!(next(&mut w).await, FsEvent::Removed(container));
    std::fs::remove_file(pod_dir.join("cgroup.procs")).expect("rm");
    std::fs::remove_dir(&pod_dir).expect("rmdir");
    assert_eq!(next(&mut w).await, FsEvent::Removed(pod_dir.clone()));
    cgroups.remove_under(&pod_dir);
    w.follow(&cgroups);
    assert_eq!(w.watched(), 2);
}

#[tokio::test]
async fn single_events_update_only_the_watches_they_concern() {
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path();
    let mut w = CgroupWatcher::new(root).expect("inotify");
    let kubepods = mkdirs(root, "kubepods.slice");
    let besteffort = mkdirs(&kubepods, "kubepods-besteffort.slice");
    let pod_dir = mkdirs(
        &besteffort,
        &format!("kubepods-besteffort-pod{UID_SYSTEMD}.slice"),
    );
    mkdirs(&pod_dir, &format!("cri-containerd-{ID}.scope"));
    // Parents and the pod are watched; the container (a leaf) is not.
    w.follow_created(&scan(root, &kubepods));
    assert_eq!(w.watched(), 4, "root, two parents, the pod");
    w.follow_created(&scan(root, &pod_dir));
    assert_eq!(w.watched(), 4, "watching twice is a no-op");

    w.follow_removed(&pod_dir);
    assert_eq!(w.watched(), 3);
    w.follow_removed(&kubepods);
    assert_eq!(w.watched(), 1, "the root stays watched");
}
