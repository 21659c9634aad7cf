//! What the kernel offers and, from it, how each hook is attached: the fallback ladder.
//!
//! 1. BPF LSM active: the LSM program (pre-operation deny).
//! 2. BPF LSM inactive and kprobes available: a kprobe on the hook's `security_*` function
//!    (events only; `Sigkill` after the fact with `--fallback-sigkill`), unless
//!    `--require-lsm` forbids degrading.
//! 3. Otherwise the agent refuses to start.
use std::{fs, path::Path};

use lsm_shared::*;

use super::{BpfError, LSM_LIST, btf};

/// Where the kernel lists its kprobe support (either is enough).
const KPROBE_PATHS: [&str; 3] = [
    "/sys/bus/event_source/devices/kprobe",
    "/sys/kernel/tracing/kprobe_events",
    "/sys/kernel/debug/tracing/kprobe_events",
];

/// What the running kernel offers, probed once at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// Active LSMs, as the kernel lists them.
    pub lsms: String,
    pub bpf_lsm: bool,
    pub btf: bool,
    pub kprobes: bool,
    /// `bpf_send_signal` callable from a kprobe program.
    pub send_signal: bool,
    /// `bpf_override_return` callable from a kprobe program (`CONFIG_BPF_KPROBE_OVERRIDE`;
    /// Debian's kernels lack it, so a kprobe can never deny there).
    pub override_return: bool,
    pub kernel_release: String,
}

impl Capabilities {
    pub fn probe() -> Capabilities {
        let lsms = fs::read_to_string(LSM_LIST)
            .unwrap_or_default()
            .trim()
            .to_string();
        let kernel_release = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        let send_signal = aya::sys::is_helper_supported(
            aya::programs::ProgramType::KProbe,
            aya::sys::BpfHelper::BPF_FUNC_send_signal,
        )
        .unwrap_or(false);
        let override_return = aya::sys::is_helper_supported(
            aya::programs::ProgramType::KProbe,
            aya::sys::BpfHelper::BPF_FUNC_override_return,
        )
        .unwrap_or(false);
        Capabilities {
            bpf_lsm: lsm_list_has_bpf(&lsms),
            lsms,
            btf: Path::new(btf::VMLINUX_BTF).exists(),
            kprobes: KPROBE_PATHS.iter().any(|p| Path::new(p).exists()),
            send_signal,
            override_return,
            kernel_release,
        }
    }

    /// `name=yes|no` pairs, for the log and `lsmctl status`.
    pub fn summary(&self) -> Vec<(&'static str, bool)> {
        vec![
            ("bpf_lsm", self.bpf_lsm),
            ("btf", self.btf),
            ("kprobes", self.kprobes),
            ("bpf_send_signal", self.send_signal),
            ("bpf_override_return", self.override_return),
        ]
    }
}

/// Whether a `/sys/kernel/security/lsm` list names the BPF LSM.
pub fn lsm_list_has_bpf(list: &str) -> bool {
    list.trim().split(',').any(|l| l == "bpf")
}

/// How the agent may attach, from its flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// `--require-lsm`: refuse to start rather than observe through kprobes.
    pub require_lsm: bool,
    /// `--fallback-sigkill`: kprobe entry points run `Sigkill` actions after the fact.
    pub fallback_sigkill: bool,
    /// The TCP port of the agent's gRPC API, exempt from connect denials on loopback
    /// (`None`: no TCP API, or a port the kernel picks).
    pub api_port: Option<u16>,
}

/// The entry point a hook got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AttachMode {
    /// The LSM program: denies before the operation.
    Lsm,
    /// A kprobe on the hook's `security_*` function: observes only.
    Kprobe,
}

impl AttachMode {
    /// The metric's and the list's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            AttachMode::Lsm => "lsm",
            AttachMode::Kprobe => "kprobe",
        }
    }
}

/// The rung of the ladder this kernel and these flags give every hook.
pub fn decide_mode(caps: &Capabilities, opts: LoadOptions) -> Result<AttachMode, BpfError> {
    if caps.bpf_lsm {
        return Ok(AttachMode::Lsm);
    }
    if opts.require_lsm {
        return Err(BpfError::LsmInactive {
            active: caps.lsms.clone(),
        });
    }
    if !caps.kprobes {
        return Err(BpfError::NoFallback {
            active: caps.lsms.clone(),
        });
    }
    Ok(AttachMode::Kprobe)
}

/// One enforced hook and its two entry points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HookEntry {
    /// `HOOK_*`.
    pub hook: u32,
    /// The LSM hook's name.
    pub lsm: &'static str,
    /// The kernel function that calls it, where the kprobe goes.
    pub function: &'static str,
    /// The kprobe program in the object.
    pub kprobe_prog: &'static str,
    /// Its LSM program resolves paths with `bpf_d_path` (the others walk dentries, which can
    /// miss a rename racing with the walk). `path_truncate` is decided at load: the kernel
    /// allows the helper there from 6.2 on.
    pub d_path: bool,
}

/// Every hook the policies can use, in `HOOK_*` order. From [`FIRST_TABLE_HOOK`] on, the
/// LSM program of a hook is named as the hook, and a hook (or its `security_*` function) the
/// kernel lacks leaves the policies on it unenforced with a warning rather than stopping the
/// agent.
pub const HOOKS: [HookEntry; 26] = [
    with_d_path(entry(
        HOOK_FILE_OPEN,
        "file_open",
        "security_file_open",
        "kprobe_file_open",
    )),
    entry(
        HOOK_FILE_PERMISSION,
        "file_permission",
        "security_file_permission",
        "kprobe_file_permission",
    ),
    with_d_path(entry(
        HOOK_MMAP_FILE,
        "mmap_file",
        "security_mmap_file",
        "kprobe_mmap_file",
    )),
    entry(
        HOOK_PATH_TRUNCATE,
        "path_truncate",
        "security_path_truncate",
        "kprobe_path_truncate",
    ),
    entry(
        HOOK_FILE_TRUNCATE,
        "file_truncate",
        "security_file_truncate",
        "kprobe_file_truncate",
    ),
    with_d_path(entry(
        HOOK_BPRM_CHECK,
        "bprm_check_security",
        "security_bprm_check",
        "kprobe_bprm_check",
    )),
    entry(
        HOOK_SOCKET_CONNECT,
        "socket_connect",
        "security_socket_connect",
        "kprobe_socket_connect",
    ),
    entry(
        HOOK_PATH_SYMLINK,
        "path_symlink",
        "security_path_symlink",
        "kprobe_path_symlink",
    ),
    entry(
        HOOK_INODE_MKDIR,
        "inode_mkdir",
        "security_inode_mkdir",
        "kprobe_inode_mkdir",
    ),
    entry(
        HOOK_PATH_LINK,
        "path_link",
        "security_path_link",
        "kprobe_path_link",
    ),
    entry(
        HOOK_SB_MOUNT,
        "sb_mount",
        "security_sb_mount",
        "kprobe_sb_mount",
    ),
    entry(
        HOOK_BPRM_CREDS_FROM_FILE,
        "bprm_creds_from_file",
        "security_bprm_creds_from_file",
        "kprobe_bprm_creds_from_file",
    ),
    entry(
        HOOK_CAPABLE,
        "capable",
        "security_capable",
        "kprobe_capable",
    ),
    entry(
        HOOK_USERNS_CREATE,
        "userns_create",
        "security_create_user_ns",
        "kprobe_userns_create",
    ),
    entry(
        HOOK_TASK_FIX_SETUID,
        "task_fix_setuid",
        "security_task_fix_setuid",
        "kprobe_task_fix_setuid",
    ),
    entry(
        HOOK_PTRACE_ACCESS_CHECK,
        "ptrace_access_check",
        "security_ptrace_access_check",
        "kprobe_ptrace_access_check",
    ),
    entry(
        HOOK_SETTIME,
        "settime",
        "security_settime64",
        "kprobe_settime",
    ),
    entry(HOOK_BPF, "bpf", "security_bpf", "kprobe_bpf"),
    entry(
        HOOK_KERNEL_MODULE_REQUEST,
        "kernel_module_request",
        "security_kernel_module_request",
        "kprobe_kernel_module_request",
    ),
    entry(
        HOOK_INODE_FOLLOW_LINK,
        "inode_follow_link",
        "security_inode_follow_link",
        "kprobe_inode_follow_link",
    ),
    entry(
        HOOK_SK_ALLOC,
        "sk_alloc_security",
        "security_sk_alloc",
        "kprobe_sk_alloc_security",
    ),
    entry(
        HOOK_SB_PIVOTROOT,
        "sb_pivotroot",
        "security_sb_pivotroot",
        "kprobe_sb_pivotroot",
    ),
    entry(
        HOOK_SOCKET_CREATE,
        "socket_create",
        "security_socket_create",
        "kprobe_socket_create",
    ),
    entry(
        HOOK_KERNEL_READ_FILE,
        "kernel_read_file",
        "security_kernel_read_file",
        "kprobe_kernel_read_file",
    ),
    entry(
        HOOK_KERNEL_LOAD_DATA,
        "kernel_load_data",
        "security_kernel_load_data",
        "kprobe_kernel_load_data",
    ),
    entry(HOOK_CAPSET, "capset", "security_capset", "kprobe_capset"),
];

/// The twins of the hand-written hooks (`lsm_shared::twin_hook`): the hook, its twin's LSM
/// program and its twin's kprobe program (on the hook's `security_*` function). Attached
/// when a policy first needs one.
pub const TWINS: [(u32, &str, &str); NUM_TWINS as usize] = [
    (
        HOOK_FILE_OPEN,
        "file_open_generic",
        "kprobe_file_open_generic",
    ),
    (
        HOOK_FILE_PERMISSION,
        "file_permission_generic",
        "kprobe_file_permission_generic",
    ),
    (
        HOOK_MMAP_FILE,
        "mmap_file_generic",
        "kprobe_mmap_file_generic",
    ),
    (
        HOOK_PATH_TRUNCATE,
        "path_truncate_generic",
        "kprobe_path_truncate_generic",
    ),
    (
        HOOK_FILE_TRUNCATE,
        "file_truncate_generic",
        "kprobe_file_truncate_generic",
    ),
    (
        HOOK_BPRM_CHECK,
        "bprm_check_security_generic",
        "kprobe_bprm_check_security_generic",
    ),
];

/// A program attached when a policy first needs its hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pending {
    /// The LSM program of this name, on the LSM hook `hook` (attach target).
    Lsm {
        program: &'static str,
        hook: &'static str,
    },
    /// The kprobe program of this name, on `function`.
    Kprobe {
        program: &'static str,
        function: &'static str,
    },
}

impl Pending {
    /// The program and what it is attached to.
    pub fn names(self) -> (&'static str, &'static str) {
        match self {
            Pending::Lsm { program, hook } => (program, hook),
            Pending::Kprobe { program, function } => (program, function),
        }
    }
}

/// Where the twins go, given the mode each hand-written hook got: the twin of an attached
/// hook waits in the same mode.
pub fn pending_twins(modes: &HookModes) -> Vec<(u32, Pending)> {
    TWINS
        .iter()
        .filter_map(|&(hook, lsm_prog, kprobe_prog)| {
            let e = hook_entry(hook)?;
            let twin = twin_hook(hook)?;
            let p = match modes.get(hook)? {
                AttachMode::Lsm => Pending::Lsm {
                    program: lsm_prog,
                    hook: e.lsm,
                },
                AttachMode::Kprobe => Pending::Kprobe {
                    program: kprobe_prog,
                    function: e.function,
                },
            };
            Some((twin, p))
        })
        .collect()
}

/// The first hook of the wider table: read by the generic reader, optional on a kernel.
pub const FIRST_TABLE_HOOK: u32 = HOOK_PATH_SYMLINK;

const fn entry(
    hook: u32,
    lsm: &'static str,
    function: &'static str,
    kprobe_prog: &'static str,
) -> HookEntry {
    HookEntry {
        hook,
        lsm,
        function,
        kprobe_prog,
        d_path: false,
    }
}

/// An entry whose LSM program resolves paths with `bpf_d_path`.
const fn with_d_path(e: HookEntry) -> HookEntry {
    HookEntry { d_path: true, ..e }
}

/// The entry of `HOOK_*` `hook`.
pub fn hook_entry(hook: u32) -> Option<&'static HookEntry> {
    HOOKS.iter().find(|e| e.hook == hook)
}

/// The mode each hook got, indexed by `HOOK_*` (`None`: not attached on this kernel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HookModes(pub [Option<AttachMode>; NUM_HOOKS as usize]);

impl Default for HookModes {
    fn default() -> Self {
        Self([None; NUM_HOOKS as usize])
    }
}

impl HookModes {
    /// Every hook in `mode` (tests, and writers without a kernel).
    pub fn all(mode: AttachMode) -> Self {
        let mut m = HookModes::default();
        for e in &HOOKS {
            m.0[e.hook as usize] = Some(mode);
        }
        m
    }

    pub fn get(&self, hook: u32) -> Option<AttachMode> {
        self.0.get(hook as usize).copied().flatten()
    }

    /// Whether any hook is only observed.
    pub fn degraded(&self) -> bool {
        self.0.contains(&Some(AttachMode::Kprobe))
    }
}

/// What `GetInfo` lists as its probes and `lsmctl status` prints: the kernel's capabilities,
/// then per hook `lsm:<hook>` (denies before the operation), `kprobe:<hook>:<function>`
/// (observes)
/// and `bpf_d_path:<hook>` (paths from `bpf_d_path` rather than the dentry walk).
pub fn feature_probes(
    caps: &Capabilities,
    modes: &HookModes,
    d_path: &[bool; NUM_HOOKS as usize],
) -> Vec<(String, bool)> {
    let mut out: Vec<(String, bool)> = caps
        .summary()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    for e in &HOOKS {
        let mode = modes.get(e.hook);
        out.push((format!("lsm:{}", e.lsm), mode == Some(AttachMode::Lsm)));
        out.push((
            format!("kprobe:{}:{}", e.lsm, e.function),
            mode == Some(AttachMode::Kprobe),
        ));
        out.push((
            format!("bpf_d_path:{}", e.lsm),
            d_path.get(e.hook as usize).copied().unwrap_or(false),
        ));
    }
    out
}

/// The warning logged once per hook observed by a kprobe.
pub fn degraded_warning(e: &HookEntry) -> String {
    format!(
        "observed by kprobe {}: BPF LSM is not active; no pre-operation deny for LSM hook {}",
        e.function, e.lsm
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(bpf_lsm: bool, kprobes: bool) -> Capabilities {
        Capabilities {
            lsms: if bpf_lsm {
                "lockdown,capability,bpf".into()
            } else {
                "lockdown,capability,landlock,yama".into()
            },
            bpf_lsm,
            btf: true,
            kprobes,
            send_signal: true,
            override_return: false,
            kernel_release: "6.12.0".into(),
        }
    }

    #[test]
    fn lsm_list_with_bpf_is_recognised() {
        assert!(lsm_list_has_bpf("lockdown,capability,landlock,yama,bpf\n"));
        assert!(!lsm_list_has_bpf("lockdown,capability,yama,apparmor"));
        assert!(!lsm_list_has_bpf("bpfx"));
    }

    #[test]
    fn an_active_bpf_lsm_gives_lsm_mode_whatever_the_flags() {
        let strict = LoadOptions {
            require_lsm: true,
            fallback_sigkill: true,
            api_port: None,
        };
        assert_eq!(
            decide_mode(&caps(true, false), strict).unwrap(),
            AttachMode::Lsm
        );
        assert_eq!(
            decide_mode(&caps(true, true), LoadOptions::default()).unwrap(),
            AttachMode::Lsm
        );
    }

    #[test]
    fn without_bpf_lsm_the_hooks_degrade_to_kprobes() {
        assert_eq!(
            decide_mode(&caps(false, true), LoadOptions::default()).unwrap(),
            AttachMode::Kprobe
        );
    }

    #[test]
    fn require_lsm_refuses_to_degrade_and_says_how_to_fix_it() {
        let opts = LoadOptions {
            require_lsm: true,
            ..Default::default()
        };
        let e = decide_mode(&caps(false, true), opts)
            .unwrap_err()
            .to_string();
        assert!(e.contains("BPF LSM is not active"), "{e}");
        assert!(e.contains("lsm=...,bpf"), "{e}");
        assert!(e.contains("--require-lsm"), "{e}");
    }

    #[test]
    fn without_bpf_lsm_or_kprobes_the_agent_refuses() {
        let e = decide_mode(&caps(false, false), LoadOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("kprobes are not available"), "{e}");
    }

    #[test]
    fn every_hook_has_one_entry_with_its_security_function() {
        for (i, e) in HOOKS.iter().enumerate() {
            assert_eq!(e.hook, i as u32);
            // The events name the same function (the policy IR owns that name).
            let h = crate::policy::ir::LsmHook::from_id(e.hook).expect("a policy hook");
            assert_eq!((h.name(), h.kprobe_function()), (e.lsm, e.function));
            assert!(e.function.starts_with("security_"), "{e:?}");
            assert_eq!(hook_entry(e.hook), Some(e));
        }
        assert_eq!(
            hook_entry(HOOK_BPRM_CHECK).map(|e| e.function),
            Some("security_bprm_check")
        );
    }

    #[test]
    fn hook_modes_report_degradation_per_hook() {
        let mut m = HookModes::all(AttachMode::Lsm);
        assert!(!m.degraded());
        m.0[HOOK_FILE_OPEN as usize] = Some(AttachMode::Kprobe);
        assert!(m.degraded());
        assert_eq!(m.get(HOOK_FILE_OPEN), Some(AttachMode::Kprobe));
        assert_eq!(m.get(NUM_HOOKS + 3), None);
    }

    #[test]
    fn feature_probes_list_the_kernel_then_what_each_hook_got() {
        let mut m = HookModes::all(AttachMode::Lsm);
        m.0[HOOK_FILE_TRUNCATE as usize] = None;
        let mut d_path = [false; NUM_HOOKS as usize];
        d_path[HOOK_FILE_OPEN as usize] = true;
        let p = feature_probes(&caps(true, true), &m, &d_path);
        let get = |k: &str| p.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
        assert_eq!(p[0], ("bpf_lsm".to_owned(), true));
        assert_eq!(get("bpf_override_return"), Some(false));
        assert_eq!(get("lsm:file_open"), Some(true));
        assert_eq!(get("kprobe:file_open:security_file_open"), Some(false));
        assert_eq!(get("bpf_d_path:file_open"), Some(true));
        assert_eq!(get("bpf_d_path:file_permission"), Some(false));
        assert_eq!(
            get("lsm:file_truncate"),
            Some(false),
            "not attached on this kernel"
        );
        assert_eq!(p.len(), 5 + 3 * HOOKS.len());
    }

    #[test]
    fn the_degraded_warning_names_the_function_and_the_missing_deny() {
        let w = degraded_warning(&HOOKS[0]);
        assert_eq!(
            w,
            "observed by kprobe security_file_open: BPF LSM is not active; no pre-operation deny for LSM hook file_open"
        );
    }
}
