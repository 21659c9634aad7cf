//! Loading and attaching the BPF programs and writing their maps.
//!
//! [`Probe`] owns the loaded object; only it writes maps ([`Probe::apply`] turns a compiled
//! [`MapImage`] into map updates).

pub mod btf;
pub mod procfs;

use std::{fs, path::Path};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, LpmTrie, MapData, MapError, PerCpuArray, RingBuf, lpm_trie::Key},
    programs::{BtfTracePoint, Lsm, ProgramError},
};
use lsm_shared::*;
use tracing::{debug, info, warn};

use crate::policy::compile::{AddrEntryKey, MapImage, StrEntryKey};

/// The BPF object built from `lsm-ebpf` by `build.rs`.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lsm-ebpf"));

pub const LSM_LIST: &str = "/sys/kernel/security/lsm";

#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error(
        "this lsm-agent was built without BPF programs (AYA_BUILD_SKIP); rebuild with bpf-linker installed"
    )]
    NoObject,
    #[error(
        "BPF LSM is not active on this kernel: {LSM_LIST} reads {active:?}. Boot with `lsm=...,bpf` (CONFIG_BPF_LSM=y is required)"
    )]
    LsmInactive { active: String },
    #[error("kernel BTF: {0}")]
    Btf(#[from] btf::BtfError),
    #[error("loading the BPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("program {name}: {source}")]
    Program {
        name: String,
        #[source]
        source: ProgramError,
    },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("counting possible CPUs: {0}")]
    Cpus(std::io::Error),
    #[error("map {0} is missing from the BPF object")]
    MissingMap(&'static str),
}

/// What the running kernel offers, probed once at start-up.
#[derive(Debug, Clone)]
pub struct Capabilities {
    /// Active LSMs, as the kernel lists them.
    pub lsms: String,
    pub bpf_lsm: bool,
    pub btf: bool,
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
        Capabilities {
            bpf_lsm: lsm_list_has_bpf(&lsms),
            lsms,
            btf: Path::new(btf::VMLINUX_BTF).exists(),
            kernel_release,
        }
    }
}

/// Whether a `/sys/kernel/security/lsm` list names the BPF LSM.
pub fn lsm_list_has_bpf(list: &str) -> bool {
    list.trim().split(',').any(|l| l == "bpf")
}

/// One attached program, for status reports.
#[derive(Debug, Clone)]
pub struct Attached {
    pub program: &'static str,
    pub target: &'static str,
}

/// The loaded object and typed handles on its maps.
pub struct Probe {
    // Owns the programs and their links; dropping it detaches everything.
    _ebpf: Ebpf,
    hook_cfg: Array<MapData, HookConfig>,
    sel_act: Array<MapData, SelectorAction>,
    num_filt: Array<MapData, NumFilter>,
    str_eq: HashMap<MapData, StrKey, SelMasks>,
    str_prefix: LpmTrie<MapData, LpmStr, SelMasks>,
    str_postfix: LpmTrie<MapData, LpmStr, SelMasks>,
    procs: HashMap<MapData, u32, ProcInfo>,
    pids: HashMap<MapData, PidKey, PidMasks>,
    addr4: LpmTrie<MapData, Addr4, SelMasks>,
    addr6: LpmTrie<MapData, Addr6, SelMasks>,
    ports: Array<MapData, SelMasks>,
    stats: PerCpuArray<MapData, u64>,
    counters: PerCpuArray<MapData, ActionCounters>,
    installed: MapImage,
    pub attached: Vec<Attached>,
}

fn take<T: TryFrom<aya::maps::Map, Error = MapError>>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<T, BpfError> {
    let map = ebpf.take_map(name).ok_or(BpfError::MissingMap(name))?;
    T::try_from(map).map_err(|source| BpfError::Map { name, source })
}

fn map_err(name: &'static str) -> impl Fn(MapError) -> BpfError {
    move |source| BpfError::Map { name, source }
}

impl Probe {
    /// Loads the programs, attaches them and returns the probe and the event ring buffer.
    /// Fails (never degrades silently) when BPF LSM is not active.
    pub fn load(caps: &Capabilities) -> Result<(Probe, RingBuf<MapData>), BpfError> {
        if EBPF_OBJECT.is_empty() {
            return Err(BpfError::NoObject);
        }
        if !caps.bpf_lsm {
            return Err(BpfError::LsmInactive {
                active: caps.lsms.clone(),
            });
        }
        let kconfig = btf::kernel_config(Path::new(btf::VMLINUX_BTF), std::process::id())?;
        debug!(?kconfig, "kernel offsets from BTF");
        let kernel_btf =
            aya::Btf::from_sys_fs().map_err(|e| BpfError::Load(aya::EbpfError::BtfError(e)))?;
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&kernel_btf))
            .override_global(KCONFIG_GLOBAL, &kconfig, true)
            .load(EBPF_OBJECT)?;

        let mut attached = Vec::new();
        // Tracepoints first, so processes are tracked before any policy can match.
        for (prog, tp) in [
            ("sched_process_exec", "sched_process_exec"),
            ("sched_process_fork", "sched_process_fork"),
            ("sched_process_exit", "sched_process_exit"),
        ] {
            attach_tp(&mut ebpf, &kernel_btf, prog, tp)?;
            attached.push(Attached {
                program: prog,
                target: tp,
            });
        }
        for (prog, hook) in [
            ("file_open", "file_open"),
            ("file_free_security", "file_free_security"),
            ("file_permission", "file_permission"),
            ("mmap_file", "mmap_file"),
            ("bprm_check_security", "bprm_check_security"),
            ("socket_connect", "socket_connect"),
        ] {
            attach_lsm(&mut ebpf, &kernel_btf, prog, hook)?;
            attached.push(Attached {
                program: prog,
                target: hook,
            });
        }
        // bpf_d_path is allowed at path_truncate on newer kernels only (6.12 yes, 6.1 no):
        // try it, fall back to the dentry walk.
        match attach_lsm(&mut ebpf, &kernel_btf, "path_truncate", "path_truncate") {
            Ok(()) => attached.push(Attached {
                program: "path_truncate",
                target: "path_truncate",
            }),
            Err(e) => {
                info!("path_truncate with bpf_d_path refused ({e}); using the dentry walk");
                attach_lsm(
                    &mut ebpf,
                    &kernel_btf,
                    "path_truncate_walk",
                    "path_truncate",
                )?;
                attached.push(Attached {
                    program: "path_truncate_walk",
                    target: "path_truncate",
                });
            }
        }
        // file_truncate exists from Linux 6.2 on.
        match attach_lsm(&mut ebpf, &kernel_btf, "file_truncate", "file_truncate") {
            Ok(()) => attached.push(Attached {
                program: "file_truncate",
                target: "file_truncate",
            }),
            Err(e) => warn!(
                "LSM hook file_truncate unavailable on kernel {}: policies on it cannot be enforced ({e})",
                caps.kernel_release
            ),
        }

        let ring = take::<RingBuf<MapData>>(&mut ebpf, EVENTS_MAP)?;
        let probe = Probe {
            hook_cfg: take(&mut ebpf, HOOK_CFG_MAP)?,
            sel_act: take(&mut ebpf, SEL_ACT_MAP)?,
            num_filt: take(&mut ebpf, NUM_FILT_MAP)?,
            str_eq: take(&mut ebpf, STR_EQ_MAP)?,
            str_prefix: take(&mut ebpf, STR_PREFIX_MAP)?,
            str_postfix: take(&mut ebpf, STR_POSTFIX_MAP)?,
            procs: take(&mut ebpf, PROCS_MAP)?,
            pids: take(&mut ebpf, PIDS_MAP)?,
            addr4: take(&mut ebpf, ADDR4_MAP)?,
            addr6: take(&mut ebpf, ADDR6_MAP)?,
            ports: take(&mut ebpf, PORTS_MAP)?,
            stats: take(&mut ebpf, STATS_MAP)?,
            counters: take(&mut ebpf, COUNTERS_MAP)?,
            _ebpf: ebpf,
            installed: MapImage::default(),
            attached,
        };
        Ok((probe, ring))
    }

    /// Records processes that were running before the agent started, so `matchBinaries`
    /// applies to them too. Exec events after attach keep the map current.
    pub fn seed_processes(&mut self) -> usize {
        let mut n = 0;
        for (tgid, info) in procfs::scan() {
            // Never overwrite what the exec tracepoint already recorded.
            if self.procs.get(&tgid, 0).is_ok() {
                continue;
            }
            if self.procs.insert(tgid, info, 0).is_ok() {
                n += 1;
            }
        }
        n
    }

    /// Sum over CPUs of each `STAT_*` counter.
    pub fn stats(&self) -> [u64; NUM_STATS as usize] {
        let mut out = [0u64; NUM_STATS as usize];
        for (i, slot) in out.iter_mut().enumerate() {
            if let Ok(values) = self.stats.get(&(i as u32), 0) {
                *slot = values.iter().sum();
            }
        }
        out
    }

    /// Action counters of every selector slot in use, summed over CPUs.
    pub fn counters(&self) -> std::collections::BTreeMap<u32, ActionCounters> {
        self.installed
            .slots
            .keys()
            .filter_map(|&idx| {
                let per_cpu = self.counters.get(&idx, 0).ok()?;
                let mut sum = ActionCounters::default();
                for c in per_cpu.iter() {
                    for (s, v) in sum.c.iter_mut().zip(c.c) {
                        *s += v;
                    }
                }
                Some((idx, sum))
            })
            .collect()
    }

    /// Makes the maps hold `img` (compiled by `compile_with` against the installed image)
    /// without a moment where neither the old nor the new policies enforce:
    ///
    /// 1. write everything the new plans need, keeping what the live plans need (string
    ///    entries get the union of old and new selector bits; new selectors use slots and a
    ///    numeric bank the live plans do not look at);
    /// 2. switch each hook's plan with one map update (atomic per hook);
    /// 3. drop what only the old plans needed.
    pub fn apply(&mut self, img: &MapImage) -> Result<(), BpfError> {
        let old = std::mem::take(&mut self.installed);
        let result = self.apply_phases(&old, img);
        // On failure the maps hold a mix that still enforces the old plans where step 2 did
        // not run; remember the new image only when everything was written.
        self.installed = if result.is_ok() { img.clone() } else { old };
        result
    }

    fn apply_phases(&mut self, old: &MapImage, img: &MapImage) -> Result<(), BpfError> {
        // 1. Additions.
        for (k, v) in &img.str_eq {
            let m = union(old.str_eq.get(k), v);
            if old.str_eq.get(k) != Some(&m) {
                self.str_eq
                    .insert(str_key(k), m, 0)
                    .map_err(map_err(STR_EQ_MAP))?;
            }
        }
        for (map, o, n, name) in [
            (
                &mut self.str_prefix,
                &old.str_prefix,
                &img.str_prefix,
                STR_PREFIX_MAP,
            ),
            (
                &mut self.str_postfix,
                &old.str_postfix,
                &img.str_postfix,
                STR_POSTFIX_MAP,
            ),
        ] {
            for (k, v) in n {
                let m = union(o.get(k), v);
                if o.get(k) != Some(&m) {
                    map.insert(&lpm_key(k), m, 0).map_err(map_err(name))?;
                }
            }
        }
        for (k, v) in &img.pids {
            let m = pid_union(old.pids.get(k), v);
            if old.pids.get(k) != Some(&m) {
                self.pids.insert(k, m, 0).map_err(map_err(PIDS_MAP))?;
            }
        }
        for (k, v) in &img.addr4 {
            let m = union(old.addr4.get(k), v);
            if old.addr4.get(k) != Some(&m) {
                self.addr4
                    .insert(&addr4_key(k), m, 0)
                    .map_err(map_err(ADDR4_MAP))?;
            }
        }
        for (k, v) in &img.addr6 {
            let m = union(old.addr6.get(k), v);
            if old.addr6.get(k) != Some(&m) {
                self.addr6
                    .insert(&addr6_key(k), m, 0)
                    .map_err(map_err(ADDR6_MAP))?;
            }
        }
        for (&i, v) in &img.ports {
            let m = union(old.ports.get(&i), v);
            if old.ports.get(&i) != Some(&m) {
                self.ports.set(i, m, 0).map_err(map_err(PORTS_MAP))?;
            }
        }
        self.clear_fresh_follow_bits(old, img);
        for (&i, v) in &img.num_filt {
            if old.num_filt.get(&i) != Some(v) {
                self.num_filt.set(i, *v, 0).map_err(map_err(NUM_FILT_MAP))?;
            }
        }
        for (&i, v) in &img.sel_act {
            if old.sel_act.get(&i) != Some(v) {
                self.sel_act.set(i, *v, 0).map_err(map_err(SEL_ACT_MAP))?;
            }
        }
        // A slot taken by a new group starts counting from zero.
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| BpfError::Cpus(e))?;
        for (&i, info) in &img.slots {
            let same = old
                .slots
                .get(&i)
                .is_some_and(|o| (o.policy_id, o.group) == (info.policy_id, info.group));
            if !same {
                let zeros =
                    aya::maps::PerCpuValues::try_from(vec![ActionCounters::default(); cpus])
                        .map_err(BpfError::Cpus)?;
                self.counters
                    .set(i, zeros, 0)
                    .map_err(map_err(COUNTERS_MAP))?;
            }
        }
        // 2. The switch.
        for hook in 0..NUM_HOOKS {
            let new = img
                .hook_cfg
                .get(&hook)
                .copied()
                .unwrap_or(HookConfig::empty());
            let prev = old
                .hook_cfg
                .get(&hook)
                .copied()
                .unwrap_or(HookConfig::empty());
            if new != prev {
                self.hook_cfg
                    .set(hook, new, 0)
                    .map_err(map_err(HOOK_CFG_MAP))?;
            }
        }
        // 3. Removals: exact new values, and entries only the old plans used.
        for (k, v) in &img.str_eq {
            if union(old.str_eq.get(k), v) != *v {
                self.str_eq
                    .insert(str_key(k), *v, 0)
                    .map_err(map_err(STR_EQ_MAP))?;
            }
        }
        for k in old.str_eq.keys().filter(|k| !img.str_eq.contains_key(*k)) {
            remove_ok(self.str_eq.remove(&str_key(k))).map_err(map_err(STR_EQ_MAP))?;
        }
        for (map, o, n, name) in [
            (
                &mut self.str_prefix,
                &old.str_prefix,
                &img.str_prefix,
                STR_PREFIX_MAP,
            ),
            (
                &mut self.str_postfix,
                &old.str_postfix,
                &img.str_postfix,
                STR_POSTFIX_MAP,
            ),
        ] {
            for (k, v) in n {
                if union(o.get(k), v) != *v {
                    map.insert(&lpm_key(k), *v, 0).map_err(map_err(name))?;
                }
            }
            for k in o.keys().filter(|k| !n.contains_key(*k)) {
                remove_ok(map.remove(&lpm_key(k))).map_err(map_err(name))?;
            }
        }
        for (k, v) in &img.pids {
            if pid_union(old.pids.get(k), v) != *v {
                self.pids.insert(k, *v, 0).map_err(map_err(PIDS_MAP))?;
            }
        }
        for k in old.pids.keys().filter(|k| !img.pids.contains_key(*k)) {
            remove_ok(self.pids.remove(k)).map_err(map_err(PIDS_MAP))?;
        }
        for (k, v) in &img.addr4 {
            if union(old.addr4.get(k), v) != *v {
                self.addr4
                    .insert(&addr4_key(k), *v, 0)
                    .map_err(map_err(ADDR4_MAP))?;
            }
        }
        for k in old.addr4.keys().filter(|k| !img.addr4.contains_key(*k)) {
            remove_ok(self.addr4.remove(&addr4_key(k))).map_err(map_err(ADDR4_MAP))?;
        }
        for (k, v) in &img.addr6 {
            if union(old.addr6.get(k), v) != *v {
                self.addr6
                    .insert(&addr6_key(k), *v, 0)
                    .map_err(map_err(ADDR6_MAP))?;
            }
        }
        for k in old.addr6.keys().filter(|k| !img.addr6.contains_key(*k)) {
            remove_ok(self.addr6.remove(&addr6_key(k))).map_err(map_err(ADDR6_MAP))?;
        }
        // Port entries are array slots: "removing" one writes empty masks.
        for (&i, v) in &img.ports {
            if union(old.ports.get(&i), v) != *v {
                self.ports.set(i, *v, 0).map_err(map_err(PORTS_MAP))?;
            }
        }
        for &i in old.ports.keys().filter(|i| !img.ports.contains_key(*i)) {
            self.ports
                .set(i, SelMasks::default(), 0)
                .map_err(map_err(PORTS_MAP))?;
        }
        // Array slots are not cleared: no plan refers to them any more.
        Ok(())
    }

    /// A slot that becomes a `followChildren` selector must not inherit the marks a former
    /// occupant left in [`ProcInfo::follow`]. New selectors take slots the live plans do
    /// not use, so no exec can set these bits again before the switch.
    fn clear_fresh_follow_bits(&mut self, old: &MapImage, img: &MapImage) {
        let mut fresh = [0u64; NUM_HOOKS as usize];
        for (h, f) in fresh.iter_mut().enumerate() {
            let new = img.hook_cfg.get(&(h as u32)).map_or(0, |c| c.follow);
            let prev = old.hook_cfg.get(&(h as u32)).map_or(0, |c| c.follow);
            *f = new & !prev;
        }
        if fresh.iter().all(|&f| f == 0) {
            return;
        }
        let stale: Vec<(u32, ProcInfo)> = self
            .procs
            .iter()
            .flatten()
            .filter(|(_, info)| info.follow.iter().zip(fresh).any(|(b, f)| b & f != 0))
            .collect();
        for (tgid, mut info) in stale {
            for (b, f) in info.follow.iter_mut().zip(fresh) {
                *b &= !f;
            }
            // The process may have exited meanwhile; BPF_EXIST keeps it gone.
            let _ = self.procs.insert(tgid, info, BPF_EXIST);
        }
    }
}

/// `BPF_EXIST` from `linux/bpf.h`: update only an existing element.
const BPF_EXIST: u64 = 2;

fn pid_union(old: Option<&PidMasks>, new: &PidMasks) -> PidMasks {
    let old = old.copied().unwrap_or_default();
    PidMasks {
        pos: old.pos | new.pos,
        neg: old.neg | new.neg,
        follow_pos: old.follow_pos | new.follow_pos,
        follow_neg: old.follow_neg | new.follow_neg,
    }
}

fn union(old: Option<&SelMasks>, new: &SelMasks) -> SelMasks {
    let old = old.copied().unwrap_or_default();
    SelMasks {
        pos: old.pos | new.pos,
        neg: old.neg | new.neg,
    }
}

fn remove_ok(r: Result<(), MapError>) -> Result<(), MapError> {
    match r {
        Err(MapError::KeyNotFound) => Ok(()),
        other => other,
    }
}

fn addr4_key((hook, field, bytes, len): &AddrEntryKey) -> Key<Addr4> {
    let mut addr = [0u8; 4];
    for (d, s) in addr.iter_mut().zip(bytes) {
        *d = *s;
    }
    Key::new(
        32 + u32::from(*len),
        Addr4 {
            scope: addr_scope(*hook, *field),
            addr,
        },
    )
}

fn addr6_key((hook, field, bytes, len): &AddrEntryKey) -> Key<Addr6> {
    let mut addr = [0u8; 16];
    for (d, s) in addr.iter_mut().zip(bytes) {
        *d = *s;
    }
    Key::new(
        32 + u32::from(*len),
        Addr6 {
            scope: addr_scope(*hook, *field),
            addr,
        },
    )
}

fn str_key((hook, subject, bytes): &StrEntryKey) -> StrKey {
    let mut key = StrKey {
        scope: str_scope(*hook, *subject),
        bytes: [0; STR_LEN],
    };
    let n = bytes.len().min(STR_LEN);
    key.bytes[..n].copy_from_slice(&bytes[..n]);
    key
}

fn lpm_key((hook, subject, bytes): &StrEntryKey) -> Key<LpmStr> {
    let mut data = LpmStr {
        scope: str_scope(*hook, *subject),
        bytes: [0; LPM_STR_LEN],
    };
    let n = bytes.len().min(LPM_STR_LEN);
    data.bytes[..n].copy_from_slice(&bytes[..n]);
    Key::new(SCOPE_BITS + 8 * n as u32, data)
}

fn attach_lsm(ebpf: &mut Ebpf, btf: &aya::Btf, prog: &str, hook: &str) -> Result<(), BpfError> {
    let perr = |source| BpfError::Program {
        name: prog.to_string(),
        source,
    };
    let p: &mut Lsm = ebpf
        .program_mut(prog)
        .ok_or_else(|| perr(ProgramError::NotLoaded))?
        .try_into()
        .map_err(perr)?;
    p.load(hook, btf).map_err(perr)?;
    p.attach().map_err(perr)?;
    Ok(())
}

fn attach_tp(ebpf: &mut Ebpf, btf: &aya::Btf, prog: &str, tp: &str) -> Result<(), BpfError> {
    let perr = |source| BpfError::Program {
        name: prog.to_string(),
        source,
    };
    let p: &mut BtfTracePoint = ebpf
        .program_mut(prog)
        .ok_or_else(|| perr(ProgramError::NotLoaded))?
        .try_into()
        .map_err(perr)?;
    p.load(tp, btf).map_err(perr)?;
    p.attach().map_err(perr)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsm_list_with_bpf_is_recognised() {
        assert!(lsm_list_has_bpf("lockdown,capability,landlock,yama,bpf\n"));
        assert!(!lsm_list_has_bpf("lockdown,capability,yama,apparmor"));
        assert!(!lsm_list_has_bpf("bpfx"));
    }

    #[test]
    fn lpm_keys_cover_scope_and_string_bits() {
        let k = lpm_key(&(HOOK_FILE_OPEN, SUBJECT_ARG, b"/etc".to_vec()));
        assert_eq!(k.prefix_len(), 32 + 32);
        assert_eq!(&k.data().bytes[..4], b"/etc");
        assert_eq!(k.data().scope, [HOOK_FILE_OPEN as u8, SUBJECT_ARG, 0, 0]);
    }
}
