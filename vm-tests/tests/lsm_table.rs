//! The wider LSM table: Tetragon kprobe calls on `security_*` functions that have an LSM hook
//! of the same meaning are enforced at that hook, their arguments read by the generic reader
//! and carried by the event. One test per translation: the operation the selector names is
//! denied, the event shows the argument values, and an operation it does not name is allowed.
//! Runs inside the VM only (vm-tests/run.sh); one agent serves every test.

use std::{
    fs::{self, DirBuilder},
    io,
    os::unix::fs::{DirBuilderExt, symlink},
    path::Path,
    process::Command,
    sync::MutexGuard,
};

use vm_tests::*;

fn agent() -> MutexGuard<'static, Agent> {
    shared_agent(&[])
}

const EPERM: i32 = 1;

fn assert_eperm<T: std::fmt::Debug>(what: &str, r: io::Result<T>) {
    assert_os_error(what, r, EPERM);
}

#[test]
fn bpf_lsm_is_active_in_the_guest() {
    assert_bpf_lsm_active();
}

/// `security_path_symlink` → `path_symlink(dir, dentry, old_name)`: the selector names the
/// link's target text (a `string`); the event carries the directory (full path), the new
/// link (a dentry: its path within its mount) and the target.
#[test]
fn a_symlink_to_the_named_target_is_denied_with_eperm_and_the_event_carries_its_arguments() {
    let a = agent();
    let events = a.json_stream();
    let dir = scratch_dir("symlink");
    let target = "/tmp/lsm-vmtest-symlink-target";
    let policy = a.add_policy(&fixture("deny-symlink-to-lsm-vmtest-target-eperm.yaml"));
    let denied = symlink(target, dir.join("denied"));
    let allowed = symlink("/etc/hostname", dir.join("allowed"));
    let line = events.expect("the path_symlink event", |l| {
        l.contains("\"function_name\":\"security_path_symlink\"")
    });
    policy.delete();

    assert_eperm("symlink to the named target", denied);
    allowed.expect("a symlink to another target is allowed");
    assert!(
        !dir.join("denied").exists() && dir.join("allowed").exists(),
        "only the allowed link exists"
    );
    assert!(
        line.contains("\"action\":\"KPROBE_ACTION_OVERRIDE\""),
        "{line}"
    );
    assert!(
        line.contains(&format!(
            "{{\"path_arg\":{{\"path\":\"{}\"}}}}",
            dir.display()
        )),
        "arg 0 is the directory's full path: {line}"
    );
    assert!(
        line.contains("symlink/denied\"}}"),
        "arg 1 is the new link's path within its mount: {line}"
    );
    assert!(
        line.contains(&format!("{{\"string_arg\":\"{target}\"}}")),
        "arg 2 is the target text: {line}"
    );
    assert!(
        !events
            .lines()
            .iter()
            .any(|l| l.contains("security_path_symlink") && l.contains("symlink/allowed")),
        "the allowed link posts no event"
    );
}

/// `security_inode_mkdir` → `inode_mkdir(dir, dentry, mode)`: the selector names the new
/// directory (a dentry, by a postfix); the event carries it and the mode.
#[test]
fn a_mkdir_of_the_named_directory_is_denied_with_eperm_and_the_event_carries_its_mode() {
    let a = agent();
    let events = a.json_stream();
    let dir = scratch_dir("mkdir");
    let mut builder = DirBuilder::new();
    builder.mode(0o700);
    let policy = a.add_policy(&fixture(
        "deny-mkdir-of-lsm-vmtest-forbidden-dir-eperm.yaml",
    ));
    let denied = builder.create(dir.join("lsm-vmtest-forbidden-dir"));
    let allowed = builder.create(dir.join("allowed-dir"));
    let line = events.expect("the inode_mkdir event", |l| {
        l.contains("\"function_name\":\"security_inode_mkdir\"")
    });
    policy.delete();

    assert_eperm("mkdir of the named directory", denied);
    allowed.expect("another directory may be made");
    assert!(
        line.contains("mkdir/lsm-vmtest-forbidden-dir\"}}"),
        "arg 1 is the new directory's path within its mount: {line}"
    );
    assert!(
        line.contains("{\"label\":\"mode\",\"uint_arg\":448}"),
        "arg 2 is the mode 0700 with its label: {line}"
    );
    assert!(
        !events
            .lines()
            .iter()
            .any(|l| l.contains("security_inode_mkdir") && l.contains("allowed-dir")),
        "the allowed mkdir posts no event"
    );
}

/// Whether the agent's generation has a pin named `name` (`<program>@<target>`): the link
/// of a program it attached (the shared agent pins under the default `--bpf-dir`).
fn pinned(a: &Agent, name: &str) -> bool {
    let infix = format!("-{}-", a.pid());
    fs::read_dir("/sys/fs/bpf/lsm-agent")
        .expect("the agent's pin directory")
        .flatten()
        .filter(|g| g.file_name().to_string_lossy().contains(&infix))
        .any(|g| g.path().join("links").join(name).exists())
}

/// A hook's program is attached while a loaded policy has a selector on it and detached when
/// the last such policy goes, so that the hook's calls cost nothing again; the next policy on
/// the hook attaches it again (without a second verification) and is enforced.
#[test]
fn the_last_policy_on_a_hook_going_detaches_its_program_and_the_next_one_attaches_it_again() {
    let a = agent();
    let dir = scratch_dir("mkdir-detach");
    let target = dir.join("lsm-vmtest-forbidden-dir");
    let file = fixture("deny-mkdir-of-lsm-vmtest-forbidden-dir-eperm.yaml");
    let pin = "inode_mkdir@inode_mkdir";

    let policy = a.add_policy(&file);
    assert!(
        pinned(&a, pin),
        "a policy on inode_mkdir attaches its program"
    );
    assert_eperm("mkdir under the first policy", fs::create_dir(&target));
    policy.delete();
    assert!(
        !pinned(&a, pin),
        "the last policy on inode_mkdir deleted, its program is detached"
    );
    fs::create_dir(&target).expect("without a policy the directory may be made");
    fs::remove_dir(&target).expect("cleanup");

    let policy = a.add_policy(&file);
    assert!(
        pinned(&a, pin),
        "the next policy attaches the program again"
    );
    assert_eperm("mkdir under the next policy", fs::create_dir(&target));
    policy.delete();
}

/// `security_path_link` → `path_link(old_dentry, new_dir, new_dentry)`: the selector names
/// the directory the link is made in (a full path); the event carries all three.
#[test]
fn a_hard_link_into_the_named_directory_is_denied_with_eperm_and_the_event_carries_both_names() {
    let a = agent();
    let events = a.json_stream();
    let dir = scratch_dir("hardlink");
    let links = dir.join("lsm-vmtest-links");
    fs::create_dir(&links).expect("links dir");
    let file = dir.join("original");
    fs::write(&file, "x").expect("original file");
    let policy = a.add_policy(&fixture("deny-hardlink-into-lsm-vmtest-links-eperm.yaml"));
    let denied = fs::hard_link(&file, links.join("copy"));
    let allowed = fs::hard_link(&file, dir.join("beside"));
    let line = events.expect("the path_link event", |l| {
        l.contains("\"function_name\":\"security_path_link\"")
    });
    policy.delete();

    assert_eperm("hard link into the named directory", denied);
    allowed.expect("a hard link elsewhere is allowed");
    assert!(
        line.contains("hardlink/original\"}}"),
        "arg 0 is the linked file (within its mount): {line}"
    );
    assert!(
        line.contains(&format!(
            "{{\"path_arg\":{{\"path\":\"{}\"}}}}",
            links.display()
        )),
        "arg 1 is the directory's full path: {line}"
    );
    assert!(
        line.contains("lsm-vmtest-links/copy\"}}"),
        "arg 2 is the new name (within its mount): {line}"
    );
}

/// mount(2) of a tmpfs from `device` on `dir`, in a private mount namespace of its own;
/// returns the errno (0: mounted).
fn mount_tmpfs_in_private_ns(device: &str, dir: &Path) -> i32 {
    python_errno(
        Some("-m"),
        &format!(
            "import ctypes; l = ctypes.CDLL(None, use_errno=True); \
             r = l.mount(b'{device}', b'{}', b'tmpfs', 0, None); \
             print(ctypes.get_errno() if r else 0)",
            dir.display()
        ),
    )
}

/// `security_sb_mount` → `sb_mount(dev_name, path, type, flags, data)`: the selector names
/// the device and the file system type (strings); the event carries them and the mount point.
#[test]
fn a_mount_of_the_named_device_is_denied_with_eperm_and_the_event_carries_device_type_and_path() {
    let a = agent();
    let events = a.json_stream();
    let dir = scratch_dir("mount");
    let policy = a.add_policy(&fixture("deny-mount-of-lsm-vmtest-dev-eperm.yaml"));
    let denied = mount_tmpfs_in_private_ns("lsm-vmtest-dev", &dir);
    let allowed = mount_tmpfs_in_private_ns("lsm-vmtest-other", &dir);
    let line = events.expect("the sb_mount event", |l| {
        l.contains("\"function_name\":\"security_sb_mount\"")
    });
    policy.delete();

    assert_eq!(denied, EPERM, "mount of the named device");
    assert_eq!(allowed, 0, "a mount of another device is allowed");
    for want in [
        "{\"string_arg\":\"lsm-vmtest-dev\"}".to_string(),
        format!("{{\"path_arg\":{{\"path\":\"{}\"}}}}", dir.display()),
        "{\"string_arg\":\"tmpfs\"}".to_string(),
        "{\"size_arg\":".to_string(),
    ] {
        assert!(line.contains(&want), "{want} missing: {line}");
    }
    assert!(
        !events.lines().iter().any(|l| {
            l.contains("security_sb_mount") && l.contains("{\"string_arg\":\"lsm-vmtest-other\"}")
        }),
        "the allowed mount posts no event (other events, e.g. its exec, name it too)"
    );
}

/// `security_bprm_creds_from_file` → `bprm_creds_from_file(bprm, file)`: the selector names
/// the executable (a file, by a postfix); execve fails with EPERM and the event carries it.
#[test]
fn an_exec_of_the_named_file_is_denied_with_eperm_at_bprm_creds_from_file() {
    let a = agent();
    let events = a.json_stream();
    let dir = scratch_dir("creds");
    let exe = dir.join("lsm-vmtest-true");
    fs::copy("/usr/bin/true", &exe).expect("copying true");
    let policy = a.add_policy(&fixture("deny-exec-creds-of-lsm-vmtest-true-eperm.yaml"));
    let denied = Command::new(&exe).status();
    let allowed = Command::new("/usr/bin/true").status();
    let line = events.expect("the bprm_creds_from_file event", |l| {
        l.contains("\"function_name\":\"security_bprm_creds_from_file\"")
    });
    policy.delete();

    assert_eperm("exec of the named file", denied);
    assert!(allowed.expect("true runs").success());
    let path = exe.display().to_string();
    assert!(
        line.contains(&format!("{{\"linux_binprm_arg\":{{\"path\":\"{path}\"")),
        "arg 0 is the program: {line}"
    );
    assert!(
        line.contains(&format!("{{\"file_arg\":{{\"path\":\"{path}\"")),
        "arg 1 is its file: {line}"
    );
}

/// `security_inode_follow_link` → `inode_follow_link(dentry, inode, rcu)`: the selector names
/// the symlink (a dentry, by a postfix); following it fails with EPERM, the event carries it.
#[test]
fn following_the_named_symlink_is_denied_with_eperm_and_the_event_carries_the_link() {
    let a = agent();
    let events = a.json_stream();
    let dir = scratch_dir("follow");
    symlink("/etc/hostname", dir.join("lsm-vmtest-link")).expect("link");
    symlink("/etc/hostname", dir.join("other-link")).expect("other link");
    let policy = a.add_policy(&fixture("deny-follow-of-lsm-vmtest-link-eperm.yaml"));
    let denied = fs::read(dir.join("lsm-vmtest-link"));
    let allowed = fs::read(dir.join("other-link"));
    let line = events.expect("the inode_follow_link event", |l| {
        l.contains("\"function_name\":\"security_inode_follow_link\"")
    });
    policy.delete();

    assert_eperm("following the named link", denied);
    allowed.expect("another link is followed");
    assert!(
        line.contains("follow/lsm-vmtest-link\"}}"),
        "arg 0 is the link (within its mount): {line}"
    );
}

/// `security_sb_pivotroot` → `sb_pivotroot(old_path, new_path)`: the selector names the new
/// root (a full path); pivot_root(2) fails with EPERM and the event carries both paths.
#[test]
fn a_pivot_root_into_the_named_root_is_denied_with_eperm_and_the_event_carries_both_paths() {
    let a = agent();
    let events = a.json_stream();
    let dir = scratch_dir("pivot");
    // pivot_root(2) wants the new root to be a mount point: a tmpfs, in a private mount
    // namespace that ends with the python process.
    let pivot = |name: &str| {
        let root = dir.join(name);
        fs::create_dir_all(root.join("old")).expect("new root");
        python_errno(
            Some("-m"),
            &format!(
                "import ctypes, os; l = ctypes.CDLL(None, use_errno=True); \
                 r = l.mount(b'none', b'{root}', b'tmpfs', 0, None); \
                 os.mkdir('{root}/old') if r == 0 else None; \
                 r = l.syscall(155, b'{root}', b'{root}/old') if r == 0 else -1; \
                 print(ctypes.get_errno() if r else 0)",
                root = root.display()
            ),
        )
    };
    let policy = a.add_policy(&fixture(
        "deny-pivot-root-into-lsm-vmtest-newroot-eperm.yaml",
    ));
    let denied = pivot("lsm-vmtest-newroot");
    let other = pivot("other-root");
    let line = events.expect("the sb_pivotroot event", |l| {
        l.contains("\"function_name\":\"security_sb_pivotroot\"")
    });
    policy.delete();

    assert_eq!(denied, EPERM, "pivot_root into the named root");
    assert_ne!(
        other, EPERM,
        "a pivot_root elsewhere is not denied by the policy"
    );
    let root = dir.join("lsm-vmtest-newroot");
    assert!(
        line.contains(&format!(
            "{{\"path_arg\":{{\"path\":\"{}/old\"}}}}",
            root.display()
        )),
        "arg 0 is the put_old path: {line}"
    );
    assert!(
        line.contains(&format!(
            "{{\"path_arg\":{{\"path\":\"{}\"}}}}",
            root.display()
        )),
        "arg 1 is the new root: {line}"
    );
}
