//! Pod and container cgroups laid out as the kubelet's systemd cgroup driver and containerd
//! lay them out on cgroup v2:
//! `/sys/fs/cgroup/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid with _>.slice/cri-containerd-<64 hex>.scope`.

use std::{
    fs::File,
    io,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
    thread,
    time::{Duration, Instant},
};

/// Where cgroup v2 is mounted in the guest.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Mounts cgroup v2 on [`CGROUP_ROOT`] unless it is there already, once.
pub fn ensure_cgroup2() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let root = Path::new(CGROUP_ROOT);
        if root.join("cgroup.controllers").exists() {
            return;
        }
        let out = Command::new("mount")
            .args(["-t", "cgroup2", "none", CGROUP_ROOT])
            .output()
            .expect("mount");
        assert!(
            out.status.success() && root.join("cgroup.controllers").exists(),
            "cannot mount cgroup v2 on {CGROUP_ROOT}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// The pod's cgroup (systemd driver, QoS class BestEffort: no requests in the fixture).
pub fn pod_cgroup(uid: &str) -> PathBuf {
    Path::new(CGROUP_ROOT)
        .join("kubepods.slice/kubepods-besteffort.slice")
        .join(format!(
            "kubepods-besteffort-pod{}.slice",
            uid.replace('-', "_")
        ))
}

/// A container's scope under its pod's cgroup, as containerd's systemd cgroup driver names it.
pub fn container_cgroup(pod_cgroup: &Path, container_id: &str) -> PathBuf {
    pod_cgroup.join(format!("cri-containerd-{container_id}.scope"))
}

/// The path `/proc/<pid>/cgroup` shows for `cgroup` (the part below [`CGROUP_ROOT`]).
pub fn proc_path(cgroup: &Path) -> String {
    let rel = cgroup
        .strip_prefix(CGROUP_ROOT)
        .expect("a cgroup under the cgroup root");
    format!("/{}", rel.display())
}

/// Creates `cgroup` and any missing parent (the QoS slices stay, as on a node).
pub fn create(cgroup: &Path) {
    ensure_cgroup2();
    std::fs::create_dir_all(cgroup)
        .unwrap_or_else(|e| panic!("creating cgroup {}: {e}", cgroup.display()));
}

/// Makes `cmd`'s process join `cgroup` between fork and exec, so that its very first exec
/// already runs in it, as a container's entry point does (runc places the process before it
/// execs). Writing "0" to `cgroup.procs` moves the writer.
pub fn place_in(cmd: &mut Command, cgroup: &Path) {
    let procs = File::options()
        .write(true)
        .open(cgroup.join("cgroup.procs"))
        .unwrap_or_else(|e| panic!("opening {}/cgroup.procs: {e}", cgroup.display()));
    // SAFETY: the closure runs in the forked child before exec; it only calls write(2) on a
    // descriptor opened before the fork and builds an io::Error from an errno, neither of
    // which allocates or takes a lock.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::write(&procs, b"0")
                .map(|_| ())
                .map_err(|e| io::Error::from_raw_os_error(e as i32))
        });
    }
}

/// The pids in `cgroup` (not its children).
pub fn pids(cgroup: &Path) -> Vec<i32> {
    std::fs::read_to_string(cgroup.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Kills every process in `cgroup` (`cgroup.kill`, since 5.14) and removes it, as containerd
/// does when a container is deleted. Errors are returned, not raised: this runs in `Drop`.
pub fn remove(cgroup: &Path) -> Result<(), String> {
    if !cgroup.exists() {
        return Ok(());
    }
    if !pids(cgroup).is_empty() {
        std::fs::write(cgroup.join("cgroup.kill"), "1")
            .map_err(|e| format!("killing {}: {e}", cgroup.display()))?;
    }
    let start = Instant::now();
    loop {
        match std::fs::remove_dir(cgroup) {
            Ok(()) => return Ok(()),
            // Busy until the killed processes are reaped.
            Err(e) if start.elapsed() > Duration::from_secs(10) => {
                return Err(format!(
                    "removing {} (pids {:?}): {e}",
                    cgroup.display(),
                    pids(cgroup)
                ));
            }
            Err(_) => thread::sleep(Duration::from_millis(100)),
        }
    }
}
