//! A container's own root filesystem, for the tests of what is resolved inside containers
//! (`resolvePathInContainer`): a directory on the guest's tmpfs with the node's `/usr`
//! bind-mounted in (and the merged-usr links `bin`, `lib`, `lib64`, `sbin`), so that the
//! node's programs run there under `chroot`, plus files of its own that the node does not
//! have at those paths. A process of a fake pod that `chroot`s into it has the root a real
//! container's processes have: another directory than the node's `/`.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    thread,
};

use crate::bin;

/// The root; dropping it unmounts `/usr` and removes what it added, also when the test
/// panics. It never removes recursively: a failed unmount must not reach the node's `/usr`.
pub struct ContainerRoot {
    dir: PathBuf,
    added: Vec<PathBuf>,
}

impl ContainerRoot {
    /// A fresh root at `/tmp/lsm-vmtest-roots/NAME`.
    pub fn new(name: &str) -> ContainerRoot {
        let dir = Path::new("/tmp/lsm-vmtest-roots").join(name);
        assert!(
            !dir.exists(),
            "{} exists: a test did not clean up",
            dir.display()
        );
        fs::create_dir_all(dir.join("usr")).expect("root dir");
        let root = ContainerRoot {
            dir,
            added: Vec::new(),
        };
        let out = Command::new("mount")
            .args(["--bind", "/usr"])
            .arg(root.dir.join("usr"))
            .output()
            .expect("running mount");
        assert!(out.status.success(), "bind-mounting /usr: {out:?}");
        for link in ["bin", "lib", "lib64", "sbin"] {
            std::os::unix::fs::symlink(format!("usr/{link}"), root.dir.join(link))
                .expect("merged-usr link");
        }
        root
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Copies the test helper `name` to `at` (absolute, as the container sees it) and returns
    /// its path on the node.
    pub fn install(&mut self, name: &str, at: &str) -> PathBuf {
        let rel = at.trim_start_matches('/');
        let on_node = self.dir.join(rel);
        let parent = on_node.parent().expect("a file in a directory");
        if !parent.exists() {
            fs::create_dir_all(parent).expect("the file's directory");
            self.added.push(parent.to_path_buf());
        }
        fs::copy(bin(name), &on_node).expect("copying the helper");
        self.added.push(on_node.clone());
        on_node
    }

    fn teardown(&mut self) -> Result<(), String> {
        let out = Command::new("umount")
            .arg("--lazy")
            .arg(self.dir.join("usr"))
            .output()
            .map_err(|e| format!("running umount: {e}"))?;
        if !out.status.success() {
            return Err(format!("unmounting {}/usr: {out:?}", self.dir.display()));
        }
        // Files first, then their directories (in reverse order of creation).
        for p in self.added.drain(..).rev() {
            let _ = fs::remove_file(&p).or_else(|_| fs::remove_dir(&p));
        }
        for link in ["bin", "lib", "lib64", "sbin"] {
            let _ = fs::remove_file(self.dir.join(link));
        }
        fs::remove_dir(self.dir.join("usr"))
            .and_then(|()| fs::remove_dir(&self.dir))
            .map_err(|e| format!("removing {}: {e}", self.dir.display()))
    }
}

impl Drop for ContainerRoot {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            if thread::panicking() {
                eprintln!("cleaning up after a failed test: {e}");
            } else {
                panic!("{e}");
            }
        }
    }
}
