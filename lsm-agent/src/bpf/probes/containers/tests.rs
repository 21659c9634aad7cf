use std::os::unix::fs::symlink;

use super::*;

/// A stand-in for `/proc`: `<pid>/root` links to the given directory.
fn proc_with(roots: &[(u32, &Path)]) -> tempfile::TempDir {
    let proc = tempfile::tempdir().expect("tempdir");
    for (pid, root) in roots {
        let dir = proc.path().join(pid.to_string());
        fs::create_dir(&dir).expect("pid dir");
        symlink(root, dir.join("root")).expect("root link");
    }
    proc
}

/// A container root with the probed file at `app/bin`.
fn container_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("tempdir");
    fs::create_dir(root.path().join("app")).expect("app");
    fs::write(root.path().join("app/bin"), b"\x7fELF").expect("file");
    root
}

#[test]
fn the_processes_of_selected_cgroups_and_their_sub_cgroups_are_found() {
    let cg = tempfile::tempdir().expect("tempdir");
    let pod = cg.path().join("pod");
    let container = pod.join("container");
    let nested = container.join("nested");
    fs::create_dir_all(&nested).expect("dirs");
    fs::write(pod.join("cgroup.procs"), "").expect("procs");
    fs::write(container.join("cgroup.procs"), "12\n13\n").expect("procs");
    fs::write(nested.join("cgroup.procs"), "14\n").expect("procs");
    let other = cg.path().join("other");
    fs::create_dir(&other).expect("dir");
    fs::write(other.join("cgroup.procs"), "99\n").expect("procs");
    let gone = cg.path().join("gone");
    assert_eq!(
        pids_in(&BTreeSet::from([pod, gone])),
        BTreeSet::from([12, 13, 14])
    );
}

#[test]
fn each_distinct_file_is_resolved_once_and_roots_without_it_are_left_out() {
    let a = container_root();
    let b = container_root();
    let empty = tempfile::tempdir().expect("tempdir");
    let proc = proc_with(&[
        (10, a.path()),
        (11, a.path()),
        (20, b.path()),
        (30, empty.path()),
    ]);
    let found = resolve_in_roots(
        "/app/bin",
        &BTreeSet::from([10, 11, 20, 30, 40]),
        proc.path(),
        &BTreeSet::new(),
    );
    let want: BTreeSet<FileKey> = [a.path(), b.path()]
        .iter()
        .map(|r| {
            let m = fs::metadata(r.join("app/bin")).expect("file");
            (m.dev(), m.ino())
        })
        .collect();
    assert_eq!(found.keys().copied().collect::<BTreeSet<_>>(), want);
    let pids: BTreeSet<u32> = found.values().map(|r| r.pid).collect();
    assert_eq!(pids, BTreeSet::from([10, 20]), "a root is tried once");
}

#[test]
fn a_root_that_is_the_nodes_is_not_tried() {
    let a = container_root();
    let proc = proc_with(&[(10, a.path())]);
    let skip = BTreeSet::from([dir_key(a.path()).expect("root")]);
    assert!(resolve_in_roots("/app/bin", &BTreeSet::from([10]), proc.path(), &skip).is_empty());
}

#[test]
fn symlinks_and_dotdot_in_a_container_stay_inside_its_root() {
    // The node's file that an escaping link would reach.
    let node = tempfile::tempdir().expect("tempdir");
    fs::write(node.path().join("secret"), b"node").expect("file");
    let root = container_root();
    let outside = node.path().join("secret");
    symlink(&outside, root.path().join("app/abs")).expect("link");
    let dotdots = format!("../../../../../../..{}", outside.display());
    symlink(&dotdots, root.path().join("app/rel")).expect("link");
    let proc = proc_with(&[(10, root.path())]);
    for path in ["/app/abs", "/app/rel", &dotdots] {
        let found = resolve_in_roots(path, &BTreeSet::from([10]), proc.path(), &BTreeSet::new());
        assert!(found.is_empty(), "{path} left the root: {found:?}");
    }
    // A link that stays inside resolves as in the container.
    symlink("/app/bin", root.path().join("app/inside")).expect("link");
    let found = resolve_in_roots(
        "/app/inside",
        &BTreeSet::from([10]),
        proc.path(),
        &BTreeSet::new(),
    );
    assert_eq!(found.len(), 1);
}

#[test]
fn a_directory_at_the_path_is_not_a_file_to_probe() {
    let root = container_root();
    let proc = proc_with(&[(10, root.path())]);
    assert!(
        resolve_in_roots("/app", &BTreeSet::from([10]), proc.path(), &BTreeSet::new()).is_empty()
    );
    assert!(matches!(
        open_in_root(root.path(), "/app"),
        Err(e) if e.contains("not a regular file")
    ));
}

#[test]
fn a_plain_files_mapped_key_is_its_device_and_inode() {
    let root = container_root();
    let (fd, key) = open_in_root(root.path(), "/app/bin").expect("resolves");
    let m = fs::metadata(root.path().join("app/bin")).expect("file");
    assert_eq!(key, (m.dev(), m.ino()));
    assert_eq!(mapped_key(&fd), Some((m.dev(), m.ino())));
}
