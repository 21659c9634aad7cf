//! Loading and attaching the BPF programs and writing their maps.
//!
//! [`Probe`] owns the loaded object; only it writes maps ([`Probe::apply`] turns a compiled
//! [`MapImage`] into map updates).

pub mod btf;
pub mod canary;
mod kallsyms;
pub mod modes;
pub mod pin;
pub mod probes;
pub mod procfs;
pub mod resolve;
pub mod usdt;

pub use modes::{AttachMode, Capabilities, HookModes, LoadOptions, lsm_list_has_bpf};

use std::{collections::BTreeMap, path::Path};

use aya::{
    Ebpf, EbpfLoader,
    maps::{
        Array, ArrayOfMaps, HashMap, LpmTrie, MapData, MapError, PerCpuArray, RingBuf,
        lpm_trie::Key,
    },
    programs::{BtfTracePoint, KProbe, Lsm, ProgramError},
};
use lsm_shared::*;
use tracing::{debug, info, warn};

use crate::policy::compile::{AddrEntryKey, DATA_RESOLVE_POS, MapImage, StrEntryKey};

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
        "BPF LSM is not active on this kernel: {LSM_LIST} reads {active:?}, and --require-lsm forbids observing through kprobes instead. Boot with `lsm=...,bpf` (CONFIG_BPF_LSM=y is required), or drop --require-lsm"
    )]
    LsmInactive { active: String },
    #[error(
        "BPF LSM is not active on this kernel ({LSM_LIST} reads {active:?}) and kprobes are not available for the fallback. Boot with `lsm=...,bpf` (CONFIG_BPF_LSM=y is required)"
    )]
    NoFallback { active: String },
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
    #[error("parsing the kernel BTF for the loader: {0}")]
    Thread(std::io::Error),
    #[error("map {0} is missing from the BPF object")]
    MissingMap(&'static str),
    #[error("cannot observe {0}")]
    Probe(#[from] probes::ProbeError),
    #[error("LSM hook {hook}: {reason}")]
    HookLoad { hook: String, reason: String },
    #[error("pinning: {0}")]
    Pin(#[from] pin::PinDirError),
    #[error("this process's start time: {0}")]
    OwnStart(String),
    #[error("{0}")]
    Resolve(#[from] resolve::ResolveError),
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
    ebpf: Ebpf,
    ids: probes::IdMaps,
    /// The generic probes attached for the installed image's kprobe and tracepoint targets.
    probes: probes::Probes,
    /// Hooks this kernel has whose program no policy has needed yet (the wider table's LSM
    /// programs, the twins' LSM programs or kprobes): hook id → what to attach.
    lsm_pending: BTreeMap<u32, modes::Pending>,
    /// Those a policy needed: attached now, detached (and pending again) when no loaded
    /// policy has a selector on their hook, so that a hook nobody watches any more costs its
    /// calls nothing.
    lsm_used: BTreeMap<u32, modes::Pending>,
    /// For loading those programs.
    kernel_btf: aya::Btf,
    /// The links of the programs attached here (not the generic probes').
    pins: pin::Pins,
    canary: canary::CanaryMaps,
    hook_cfg: Array<MapData, HookConfig>,
    plan_bank: Array<MapData, u32>,
    /// The plan generation the programs key their file verdicts by (`PLAN_GEN`), and its
    /// value.
    plan_gen: Array<MapData, u64>,
    generation: u64,
    /// The live bank of `hook_cfg` (what `plan_bank` holds).
    bank: u32,
    sync: ArrayOfMaps<MapData, Array<MapData, u32>>,
    /// What `sync` is updated with: any map of its inner type.
    sync_inner: Array<MapData, u32>,
    sel_act: Array<MapData, SelectorAction>,
    num_filt: Array<MapData, NumFilter>,
    num_set: HashMap<MapData, NumSetKey, u8>,
    str_eq: HashMap<MapData, StrKey, SelMasks>,
    str_prefix: LpmTrie<MapData, LpmStr, SelMasks>,
    str_postfix: LpmTrie<MapData, LpmStr, SelMasks>,
    procs: HashMap<MapData, u32, ProcInfo>,
    pids: HashMap<MapData, PidKey, PidMasks>,
    addr4: LpmTrie<MapData, Addr4, SelMasks>,
    addr6: LpmTrie<MapData, Addr6, SelMasks>,
    ports: HashMap<MapData, u32, SelMasks>,
    cgroups: HashMap<MapData, u64, CgroupScope>,
    stats: PerCpuArray<MapData, u64>,
    counters: PerCpuArray<MapData, ActionCounters>,
    installed: MapImage,
    /// The installed image's `resolve` walks, and the ones computed before.
    resolver: resolve::Resolver,
    resolved: resolve::Plans,
    pub attached: Vec<Attached>,
    /// The entry point each hook got.
    pub modes: HookModes,
    /// What the kernel offers and what each hook got ([`modes::feature_probes`]).
    pub features: Vec<(String, bool)>,
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
    /// The hooks get their LSM programs when BPF LSM is active, else kprobes (see
    /// [`modes::decide_mode`]); a refusal is an error, never a silent degradation.
    /// `pins` takes every link: pinned in its generation, or owned.
    pub fn load(
        caps: &Capabilities,
        opts: LoadOptions,
        mut pins: pin::Pins,
    ) -> Result<(Probe, RingBuf<MapData>), BpfError> {
        if EBPF_OBJECT.is_empty() {
            return Err(BpfError::NoObject);
        }
        let mode = modes::decide_mode(caps, opts)?;
        let start = std::time::Instant::now();
        // aya parses the same BTF for the loader on another thread meanwhile: the two
        // parses are the longest steps of a start under emulation, and independent.
        let loader_btf = std::thread::Builder::new()
            .name("loader-btf".into())
            .spawn(|| {
                let start = std::time::Instant::now();
                (aya::Btf::from_sys_fs(), start.elapsed())
            })
            .map_err(BpfError::Thread)?;
        let vmlinux = btf::open(Path::new(btf::VMLINUX_BTF))?;
        let mut kconfig = btf::kernel_config(&vmlinux, std::process::id())?;
        info!(elapsed = ?start.elapsed(), "kernel offsets read from BTF");
        (kconfig.agent_start_ns, kconfig.agent_start_end_ns) = own_start()?;
        kconfig.fallback_sigkill = u32::from(opts.fallback_sigkill);
        kconfig.api_port = opts.api_port.map_or(0, u64::from);
        kconfig.fmode_backing = btf::fmode_backing(&caps.kernel_release);
        // Only the LSM `file_open` keeps verdicts per dentry: no kallsyms scan without it.
        if mode == AttachMode::Lsm {
            (kconfig.rename_lock, kconfig.mount_lock) = seqlocks();
        }
        debug!(?kconfig, "kernel offsets from BTF");
        let (kernel_btf, elapsed) = loader_btf
            .join()
            .map_err(|_| BpfError::Thread(std::io::Error::other("the BTF parser panicked")))?;
        let kernel_btf = kernel_btf.map_err(|e| BpfError::Load(aya::EbpfError::BtfError(e)))?;
        info!(
            ?elapsed,
            "kernel BTF parsed for the loader (beside the offsets)"
        );
        let start = std::time::Instant::now();
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&kernel_btf))
            .override_global(KCONFIG_GLOBAL, &kconfig, true)
            .load(EBPF_OBJECT)?;
        info!(elapsed = ?start.elapsed(), "BPF object opened and maps created");

        let mut attached = Vec::new();
        let mut lsm_pending = BTreeMap::new();
        // Tracepoints first, so processes are tracked before any policy can match.
        for (prog, tp) in [
            ("sched_process_exec", "sched_process_exec"),
            ("sched_process_fork", "sched_process_fork"),
            ("sched_process_exit", "sched_process_exit"),
        ] {
            attach_tp(&mut ebpf, &kernel_btf, &mut pins, prog, tp)?;
            attached.push(Attached {
                program: prog,
                target: tp,
            });
        }
        let modes = match mode {
            AttachMode::Lsm => attach_lsm_hooks(
                &mut ebpf,
                &kernel_btf,
                &mut pins,
                &vmlinux,
                caps,
                &mut attached,
                &mut lsm_pending,
            )?,
            AttachMode::Kprobe => {
                if opts.fallback_sigkill && !caps.send_signal {
                    warn!(
                        "--fallback-sigkill: bpf_send_signal is not available to kprobes on this kernel; Sigkill actions stay unapplied"
                    );
                }
                attach_kprobe_hooks(&mut ebpf, &mut pins, caps, &mut attached)?
            }
        };
        lsm_pending.extend(modes::pending_twins(&modes));

        // Which hooks resolve paths with bpf_d_path ([`modes::HookEntry::d_path`]), and
        // path_truncate where its bpf_d_path variant was accepted.
        let mut d_path = [false; NUM_HOOKS as usize];
        if mode == AttachMode::Lsm {
            for e in modes::HOOKS.iter().filter(|e| e.d_path) {
                d_path[e.hook as usize] = true;
            }
            d_path[HOOK_PATH_TRUNCATE as usize] =
                attached.iter().any(|a| a.program == "path_truncate");
        }
        let features = modes::feature_probes(caps, &modes, &d_path);

        // The ring and the counters, for the agent after this one to count what it missed;
        // AGENTS, for it to exempt itself from these programs while it takes over.
        for name in [EVENTS_MAP, STATS_MAP, AGENTS_MAP] {
            let map = ebpf.map(name).ok_or(BpfError::MissingMap(name))?;
            pins.pin_map(name, map)?;
        }
        let ring = take::<RingBuf<MapData>>(&mut ebpf, EVENTS_MAP)?;
        let mut probe = Probe {
            hook_cfg: take(&mut ebpf, HOOK_CFG_MAP)?,
            plan_bank: take(&mut ebpf, PLAN_BANK_MAP)?,
            plan_gen: take(&mut ebpf, PLAN_GEN_MAP)?,
            generation: 0,
            bank: 0,
            sync: take(&mut ebpf, SYNC_MAP)?,
            sync_inner: Array::create(1, 0).map_err(map_err(SYNC_MAP))?,
            sel_act: take(&mut ebpf, SEL_ACT_MAP)?,
            num_filt: take(&mut ebpf, NUM_FILT_MAP)?,
            num_set: take(&mut ebpf, NUM_SET_MAP)?,
            str_eq: take(&mut ebpf, STR_EQ_MAP)?,
            str_prefix: take(&mut ebpf, STR_PREFIX_MAP)?,
            str_postfix: take(&mut ebpf, STR_POSTFIX_MAP)?,
            procs: take(&mut ebpf, PROCS_MAP)?,
            pids: take(&mut ebpf, PIDS_MAP)?,
            addr4: take(&mut ebpf, ADDR4_MAP)?,
            addr6: take(&mut ebpf, ADDR6_MAP)?,
            ports: take(&mut ebpf, PORTS_MAP)?,
            cgroups: take(&mut ebpf, CGROUPS_MAP)?,
            stats: take(&mut ebpf, STATS_MAP)?,
            counters: take(&mut ebpf, COUNTERS_MAP)?,
            ids: probes::IdMaps {
                fns: take(&mut ebpf, PROBE_IDS_MAP)?,
                fentry: take(&mut ebpf, FENTRY_IDS_MAP)?,
                tps: take(&mut ebpf, TP_IDS_MAP)?,
            },
            probes: probes::Probes::pinned_in(pins.links_dir()),
            lsm_pending,
            lsm_used: BTreeMap::new(),
            kernel_btf,
            pins,
            canary: canary::CanaryMaps::take(&mut ebpf)?,
            ebpf,
            installed: MapImage::default(),
            resolver: resolve::Resolver::default(),
            resolved: resolve::Plans::new(),
            attached,
            modes,
            features,
        };
        // Every switch relies on this wait; a kernel that refused it could not switch
        // plans safely, so find out now rather than at the first policy.
        probe.wait_for_programs()?;
        Ok((probe, ring))
    }

    /// Runs the canary of every hook whose LSM program is attached (none in kprobe mode,
    /// where nothing denies), from the calling thread.
    pub fn canary(&mut self) -> Vec<canary::HookCanary> {
        let hooks: Vec<(u32, &'static str)> = modes::HOOKS
            .iter()
            .filter(|e| self.modes.0[e.hook as usize] == Some(AttachMode::Lsm))
            .filter(|e| self.attached.iter().any(|a| a.target == e.lsm))
            .map(|e| (e.hook, e.lsm))
            .collect();
        canary::run(&mut self.canary, &hooks)
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

    /// Each loaded program's runs and run time, as the kernel counts them while
    /// `kernel.bpf_stats_enabled` is 1 (they stay 0 otherwise).
    pub fn program_stats(&self) -> Vec<ProgramStats> {
        self.ebpf
            .programs()
            .filter_map(|(name, prog)| {
                // Programs no hook has needed yet are not loaded and have no info.
                let info = prog.info().ok()?;
                Some(ProgramStats {
                    program: name.to_string(),
                    kind: program_kind(prog),
                    runs: info.run_count(),
                    run_time: info.run_time(),
                })
            })
            .collect()
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
    pub fn counters(&self) -> BTreeMap<u32, ActionCounters> {
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
    /// 2. write the new plans into the bank of `HOOK_CFG` that no program reads, flip the
    ///    live bank (one write, all hooks at once) and wait until no program runs with the
    ///    old plans any more;
    /// 3. drop what only the old plans needed.
    ///
    /// Without the bank and the wait, a program that looked its plan up just before the
    /// switch would read a plan rewritten under it, or entries step 3 already removed: a
    /// forbidden open slipped through that way in the reload VM test.
    pub fn apply(&mut self, img: &MapImage) -> Result<(), BpfError> {
        // A path this kernel does not have fails the policy before anything is attached.
        let resolved = self.resolver.plans(img)?;
        let old = std::mem::take(&mut self.installed);
        // New hooks and probe targets are attached first: one that cannot be attached fails
        // the policy before anything live changes. Their hook ids have no plan yet, so the
        // programs do nothing on them until the switch.
        if let Err(e) = self.attach_used_hooks(img) {
            self.installed = old;
            return Err(e);
        }
        let override_ok = self
            .features
            .iter()
            .any(|(name, yes)| name == "bpf_override_return" && *yes);
        if let Err(e) = self.probes.attach_new(
            &mut self.ebpf,
            &self.kernel_btf,
            &mut self.ids,
            &old,
            img,
            override_ok,
        ) {
            self.installed = old;
            return Err(e.into());
        }
        let old_resolved = std::mem::replace(&mut self.resolved, resolved);
        // A new generation once the string maps are final (also after a failure part way):
        // the file verdicts computed while they changed are computed again.
        let mut result = self.apply_phases(&old, img);
        let bumped = self.next_generation();
        if result.is_ok() {
            result = bumped;
        } else if let Err(e) = bumped {
            warn!("starting a new plan generation after a failed apply: {e}");
        }
        if result.is_err() {
            self.resolved = old_resolved;
        }
        // On failure the maps hold a mix that still enforces the old plans where step 2 did
        // not run; remember the new image only when everything was written.
        let (done, gone) = if result.is_ok() {
            (img.clone(), old)
        } else {
            (old, img.clone())
        };
        // Targets only the image given up on used: nothing runs with their plans any more.
        self.probes
            .detach_old(&mut self.ebpf, &mut self.ids, &gone, &done);
        self.installed = done;
        if result.is_ok() {
            self.detach_unused_hooks();
            self.follow_containers();
        }
        result
    }

    /// Detaches the programs [`Probe::attach_used_hooks`] attached whose hook the installed
    /// plans no longer use (after the switch: nothing runs with a plan for them). The program
    /// stays loaded, so attaching it again costs no verification. A link that cannot be
    /// released stays attached, doing nothing without a plan.
    fn detach_unused_hooks(&mut self) {
        let unused: Vec<(u32, modes::Pending)> = self
            .lsm_used
            .iter()
            .filter(|(h, _)| !uses_hook(&self.installed, **h))
            .map(|(&h, &p)| (h, p))
            .collect();
        for (hook, p) in unused {
            let (program, target) = p.names();
            if let Err(e) = self.pins.release(program, target) {
                warn!("detaching {program} from {target}: {e}");
                continue;
            }
            info!("detached {program} from {target}: no loaded policy uses it");
            self.attached
                .retain(|a| !(a.program == program && a.target == target));
            self.lsm_used.remove(&hook);
            self.lsm_pending.insert(hook, p);
        }
    }

    /// Attaches the `resolvePathInContainer` uprobes of the installed policies in the
    /// containers their pods have now, and detaches them from files no container has any
    /// more ([`probes::Probes::follow_containers`]). Nothing to do without such a policy.
    pub fn follow_containers(&mut self) {
        if !self.installed.containers.is_empty() {
            self.probes
                .follow_containers(&mut self.ebpf, &self.installed);
        }
    }

    /// Loads and attaches the program of each hook `img` has a plan for and that has no
    /// program yet (an LSM hook of the wider table, a twin); detached again by
    /// [`Probe::detach_unused_hooks`].
    fn attach_used_hooks(&mut self, img: &MapImage) -> Result<(), BpfError> {
        let used: Vec<(u32, modes::Pending)> = self
            .lsm_pending
            .iter()
            .filter(|(h, _)| uses_hook(img, **h))
            .map(|(&h, &p)| (h, p))
            .collect();
        let lsm: Vec<(&str, &str)> = used
            .iter()
            .filter_map(|(_, p)| match *p {
                modes::Pending::Lsm { program, hook } => Some((program, hook)),
                modes::Pending::Kprobe { .. } => None,
            })
            .collect();
        // A program the kernel refused here is not verified (nor its log written) again.
        let failed = preload_lsm(&mut self.ebpf, &self.kernel_btf, &lsm);
        for (hook, p) in used {
            let (program, target) = match p {
                modes::Pending::Lsm { program, hook } => {
                    if let Some(reason) = failed.get(program) {
                        return Err(BpfError::HookLoad {
                            hook: hook.to_string(),
                            reason: reason.clone(),
                        });
                    }
                    attach_lsm(
                        &mut self.ebpf,
                        &self.kernel_btf,
                        &mut self.pins,
                        program,
                        hook,
                    )?;
                    (program, hook)
                }
                modes::Pending::Kprobe { program, function } => {
                    attach_kprobe(&mut self.ebpf, &mut self.pins, program, function)?;
                    (program, function)
                }
            };
            self.lsm_pending.remove(&hook);
            self.lsm_used.insert(hook, p);
            self.attached.push(Attached { program, target });
        }
        Ok(())
    }

    fn apply_phases(&mut self, old: &MapImage, img: &MapImage) -> Result<(), BpfError> {
        // 1. Additions.
        stage(&old.str_eq, &img.str_eq, |k, m| {
            self.str_eq.insert(str_key(k), m, 0)
        })
        .map_err(map_err(STR_EQ_MAP))?;
        stage(&old.str_prefix, &img.str_prefix, |k, m| {
            self.str_prefix.insert(&lpm_key(k), m, 0)
        })
        .map_err(map_err(STR_PREFIX_MAP))?;
        stage(&old.str_postfix, &img.str_postfix, |k, m| {
            self.str_postfix.insert(&lpm_key(k), m, 0)
        })
        .map_err(map_err(STR_POSTFIX_MAP))?;
        stage(&old.pids, &img.pids, |k, m| self.pids.insert(k, m, 0)).map_err(map_err(PIDS_MAP))?;
        stage(&old.addr4, &img.addr4, |k, m| {
            self.addr4.insert(&addr4_key(k), m, 0)
        })
        .map_err(map_err(ADDR4_MAP))?;
        stage(&old.addr6, &img.addr6, |k, m| {
            self.addr6.insert(&addr6_key(k), m, 0)
        })
        .map_err(map_err(ADDR6_MAP))?;
        stage(&old.ports, &img.ports, |k, m| self.ports.insert(k, m, 0))
            .map_err(map_err(PORTS_MAP))?;
        stage(&old.cgroups, &img.cgroups, |id, m| {
            self.cgroups.insert(id, m, 0)
        })
        .map_err(map_err(CGROUPS_MAP))?;
        self.clear_fresh_follow_bits(old, img);
        // Sets are keyed by the filter's place in its bank: the new plan's are written
        // beside the live plan's, which step 3 removes.
        for k in img.num_set.difference(&old.num_set) {
            self.num_set.insert(k, 1, 0).map_err(map_err(NUM_SET_MAP))?;
        }
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
        // 2. The switch: the whole new plan goes into the bank no program reads, then one
        // write makes it live for every hook at once, then the wait for programs still
        // running with the old plans, whose map entries step 3 removes.
        let hook_cfg = |im: &MapImage, hook| {
            im.hook_cfg
                .get(&hook)
                .copied()
                .unwrap_or(HookConfig::empty())
        };
        if (0..NUM_HOOKS).any(|h| hook_cfg(img, h) != hook_cfg(old, h))
            || img.resolve != old.resolve
        {
            let next = 1 - self.bank;
            for hook in 0..NUM_HOOKS {
                let mut cfg = hook_cfg(img, hook);
                // Kernel facts the pure image leaves out: where a tracepoint's fields are.
                if let Some(off) = self.probes.tp_off.get(&hook) {
                    cfg.tp_off = *off;
                }
                // And the walks of its resolve paths, with the width of the integer each
                // ends on.
                for (&(_, pos), &(walk, width)) in self.resolved.range((hook, 0)..(hook + 1, 0)) {
                    let p = pos as usize;
                    if let (Some(r), Some(d)) = (cfg.resolve.get_mut(p), cfg.args.get_mut(p)) {
                        *r = walk;
                        if width != 0 {
                            d.width = width;
                        }
                    } else if let Some(d) = p.checked_sub(DATA_RESOLVE_POS as usize) {
                        // A `data` entry's walk, from the current task.
                        if let (Some(r), Some(w)) = (cfg.data.get_mut(d), cfg.data_width.get_mut(d))
                        {
                            *r = walk;
                            if width != 0 {
                                *w = width;
                            }
                        }
                    }
                }
                self.hook_cfg
                    .set(hook_cfg_index(next, hook), cfg, 0)
                    .map_err(map_err(HOOK_CFG_MAP))?;
            }
            // The generation first: a program that reads the new bank reads the new
            // generation too, and keeps no verdict of the old plans under it.
            self.next_generation()?;
            self.plan_bank
                .set(0, next, 0)
                .map_err(map_err(PLAN_BANK_MAP))?;
            self.bank = next;
            if let Err(e) = self.wait_for_programs() {
                // Never seen (the wait worked at load); a pause is the best left to do.
                warn!("waiting for running BPF programs failed ({e}); pausing instead");
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
        // 3. Removals: exact new values, and entries only the old plans used.
        for k in old.num_set.difference(&img.num_set) {
            remove_ok(self.num_set.remove(k)).map_err(map_err(NUM_SET_MAP))?;
        }
        settle(&old.str_eq, &img.str_eq, |k, m| match m {
            Some(m) => self.str_eq.insert(str_key(k), m, 0),
            None => remove_ok(self.str_eq.remove(&str_key(k))),
        })
        .map_err(map_err(STR_EQ_MAP))?;
        settle(&old.str_prefix, &img.str_prefix, |k, m| match m {
            Some(m) => self.str_prefix.insert(&lpm_key(k), m, 0),
            None => remove_ok(self.str_prefix.remove(&lpm_key(k))),
        })
        .map_err(map_err(STR_PREFIX_MAP))?;
        settle(&old.str_postfix, &img.str_postfix, |k, m| match m {
            Some(m) => self.str_postfix.insert(&lpm_key(k), m, 0),
            None => remove_ok(self.str_postfix.remove(&lpm_key(k))),
        })
        .map_err(map_err(STR_POSTFIX_MAP))?;
        settle(&old.pids, &img.pids, |k, m| match m {
            Some(m) => self.pids.insert(k, m, 0),
            None => remove_ok(self.pids.remove(k)),
        })
        .map_err(map_err(PIDS_MAP))?;
        settle(&old.addr4, &img.addr4, |k, m| match m {
            Some(m) => self.addr4.insert(&addr4_key(k), m, 0),
            None => remove_ok(self.addr4.remove(&addr4_key(k))),
        })
        .map_err(map_err(ADDR4_MAP))?;
        settle(&old.addr6, &img.addr6, |k, m| match m {
            Some(m) => self.addr6.insert(&addr6_key(k), m, 0),
            None => remove_ok(self.addr6.remove(&addr6_key(k))),
        })
        .map_err(map_err(ADDR6_MAP))?;
        settle(&old.ports, &img.ports, |k, m| match m {
            Some(m) => self.ports.insert(k, m, 0),
            None => remove_ok(self.ports.remove(k)),
        })
        .map_err(map_err(PORTS_MAP))?;
        settle(&old.cgroups, &img.cgroups, |id, m| match m {
            Some(m) => self.cgroups.insert(id, m, 0),
            None => remove_ok(self.cgroups.remove(id)),
        })
        .map_err(map_err(CGROUPS_MAP))?;
        // Array slots are not cleared: no plan refers to them any more.
        Ok(())
    }

    /// Starts a new plan generation (`PLAN_GEN`): the programs compute every file verdict
    /// kept under an earlier one again.
    fn next_generation(&mut self) -> Result<(), BpfError> {
        self.generation += 1;
        self.plan_gen
            .set(0, self.generation, 0)
            .map_err(map_err(PLAN_GEN_MAP))
    }

    /// Returns once every BPF program that was running has finished, so none still uses
    /// the plans of the bank just left. Updating an array of maps makes the kernel wait
    /// for that (`synchronize_rcu`); the probe's programs are all non-sleepable.
    fn wait_for_programs(&mut self) -> Result<(), BpfError> {
        self.sync
            .set(0, &self.sync_inner, 0)
            .map_err(map_err(SYNC_MAP))
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

/// Map values that are selector bitmaps: during a switch an entry holds the bits of both
/// the live and the new plans.
trait Masks: Copy + PartialEq + Default {
    fn or(self, other: Self) -> Self;
}

impl Masks for SelMasks {
    fn or(self, o: Self) -> Self {
        SelMasks {
            pos: self.pos | o.pos,
            neg: self.neg | o.neg,
        }
    }
}

impl Masks for CgroupScope {
    fn or(mut self, o: Self) -> Self {
        for (m, o) in self.selectors.iter_mut().zip(o.selectors) {
            *m |= o;
        }
        self
    }
}

impl Masks for PidMasks {
    fn or(self, o: Self) -> Self {
        PidMasks {
            pos: self.pos | o.pos,
            neg: self.neg | o.neg,
            follow_pos: self.follow_pos | o.follow_pos,
            follow_neg: self.follow_neg | o.follow_neg,
        }
    }
}

/// Phase 1 for one bitmap map: writes every entry the new plans need, ORed with what the
/// live plans need, skipping entries that already hold exactly that.
fn stage<K: Ord, V: Masks>(
    old: &BTreeMap<K, V>,
    new: &BTreeMap<K, V>,
    mut put: impl FnMut(&K, V) -> Result<(), MapError>,
) -> Result<(), MapError> {
    for (k, v) in new {
        let prev = old.get(k).copied();
        let m = v.or(prev.unwrap_or_default());
        if prev != Some(m) {
            put(k, m)?;
        }
    }
    Ok(())
}

/// Phase 3 for one bitmap map, after the switch: the exact new values (`Some`) where phase 1
/// left extra bits, and removal (`None`) of entries only the old plans used.
fn settle<K: Ord, V: Masks>(
    old: &BTreeMap<K, V>,
    new: &BTreeMap<K, V>,
    mut write: impl FnMut(&K, Option<V>) -> Result<(), MapError>,
) -> Result<(), MapError> {
    for (k, v) in new {
        if v.or(old.get(k).copied().unwrap_or_default()) != *v {
            write(k, Some(*v))?;
        }
    }
    for k in old.keys().filter(|k| !new.contains_key(*k)) {
        write(k, None)?;
    }
    Ok(())
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

/// The addresses of the kernel's `rename_lock` and `mount_lock` (see
/// [`lsm_shared::KernelConfig::rename_lock`]); zeros, and `file_open` keeps no verdict per
/// dentry, when `/proc/kallsyms` does not give them.
fn seqlocks() -> (u64, u64) {
    match kallsyms::first_addrs(&["rename_lock", "mount_lock"]).as_deref() {
        Ok(&[rename, mount]) if rename != 0 && mount != 0 => (rename, mount),
        Ok(_) => {
            warn!(
                "/proc/kallsyms gives no address of rename_lock and mount_lock: every open of a file resolves its path"
            );
            (0, 0)
        }
        Err(e) => {
            warn!("{e}: every open of a file resolves its path");
            (0, 0)
        }
    }
}

/// Whether `img` has a plan for `hook`.
fn uses_hook(img: &MapImage, hook: u32) -> bool {
    img.hook_cfg
        .get(&hook)
        .is_some_and(|c| *c != HookConfig::empty())
}

/// The LSM programs: every hook denies before the operation.
///
/// Only the programs the others rely on are loaded now: `file_open` and `file_free_security`
/// keep the path cache of open files, `bprm_check_security` records each exec's binary for
/// the exec tracepoint, and `path_truncate` is where the kernel tells whether `bpf_d_path`
/// is allowed there. Every other hook whose `bpf_lsm_*` function this kernel has is given
/// its mode now and its program when a policy first uses it ([`Probe::attach_used_hooks`]):
/// the verifier walks the whole evaluator in each program, which took over a minute at start
/// under emulation for hooks no policy used.
fn attach_lsm_hooks(
    ebpf: &mut Ebpf,
    kernel_btf: &aya::Btf,
    pins: &mut pin::Pins,
    vmlinux: &btf_rs::Btf,
    caps: &Capabilities,
    attached: &mut Vec<Attached>,
    pending: &mut BTreeMap<u32, modes::Pending>,
) -> Result<HookModes, BpfError> {
    let mut modes = HookModes::default();
    let failed = preload_lsm(
        ebpf,
        kernel_btf,
        &[
            ("file_open", "file_open"),
            ("bprm_check_security", "bprm_check_security"),
            ("path_truncate", "path_truncate"),
        ],
    );
    // d_instantiate before file_open: no verdict may be kept for a dentry before the program
    // that forgets a dentry's verdict when the dentry is reused runs.
    for (prog, id) in [
        ("d_instantiate", None),
        ("file_open", Some(HOOK_FILE_OPEN)),
        ("file_free_security", None),
        ("bprm_check_security", Some(HOOK_BPRM_CHECK)),
    ] {
        attach_lsm(ebpf, kernel_btf, pins, prog, prog)?;
        attached.push(Attached {
            program: prog,
            target: prog,
        });
        if let Some(id) = id {
            modes.0[id as usize] = Some(AttachMode::Lsm);
        }
    }
    // bpf_d_path is allowed at path_truncate on newer kernels only (6.12 yes, 6.1 no):
    // try it, fall back to the dentry walk.
    let with_d_path = match failed.get("path_truncate") {
        Some(reason) => Err(BpfError::HookLoad {
            hook: "path_truncate".to_string(),
            reason: reason.clone(),
        }),
        None => attach_lsm(ebpf, kernel_btf, pins, "path_truncate", "path_truncate"),
    };
    match with_d_path {
        Ok(()) => attached.push(Attached {
            program: "path_truncate",
            target: "path_truncate",
        }),
        Err(e) => {
            info!("path_truncate with bpf_d_path refused ({e}); using the dentry walk");
            attach_lsm(
                ebpf,
                kernel_btf,
                pins,
                "path_truncate_walk",
                "path_truncate",
            )?;
            attached.push(Attached {
                program: "path_truncate_walk",
                target: "path_truncate",
            });
        }
    }
    modes.0[HOOK_PATH_TRUNCATE as usize] = Some(AttachMode::Lsm);
    // The others, each program named as its hook. file_truncate exists from Linux 6.2 on.
    let functions = btf::functions(
        vmlinux,
        modes::HOOKS.iter().map(|e| format!("bpf_lsm_{}", e.lsm)),
    );
    for (e, present) in modes::HOOKS.iter().zip(functions) {
        if modes.0[e.hook as usize].is_some() {
            continue;
        }
        if present {
            modes.0[e.hook as usize] = Some(AttachMode::Lsm);
            pending.insert(
                e.hook,
                modes::Pending::Lsm {
                    program: e.lsm,
                    hook: e.lsm,
                },
            );
        } else {
            warn!(
                "LSM hook {} unavailable on kernel {}: policies on it cannot be enforced (no bpf_lsm_{} in the kernel's BTF)",
                e.lsm, caps.kernel_release, e.lsm
            );
        }
    }
    Ok(modes)
}

/// The kprobe entry points (BPF LSM inactive): every hook is observed, none denies. Each
/// degraded hook is logged once; a `security_*` function this kernel lacks leaves its hook
/// unattached, as on the LSM side.
fn attach_kprobe_hooks(
    ebpf: &mut Ebpf,
    pins: &mut pin::Pins,
    caps: &Capabilities,
    attached: &mut Vec<Attached>,
) -> Result<HookModes, BpfError> {
    // The path cache must forget freed files before any entry point fills it.
    attach_kprobe(ebpf, pins, "kprobe_file_free", "security_file_free")?;
    attached.push(Attached {
        program: "kprobe_file_free",
        target: "security_file_free",
    });
    let mut modes = HookModes::default();
    for e in &modes::HOOKS {
        match attach_kprobe(ebpf, pins, e.kprobe_prog, e.function) {
            Ok(()) => {
                warn!("{}", modes::degraded_warning(e));
                attached.push(Attached {
                    program: e.kprobe_prog,
                    target: e.function,
                });
                modes.0[e.hook as usize] = Some(AttachMode::Kprobe);
            }
            // security_file_truncate exists from Linux 6.2 on; the wider table's functions
            // depend on the kernel's configuration.
            Err(err) if e.hook == HOOK_FILE_TRUNCATE || e.hook >= modes::FIRST_TABLE_HOOK => warn!(
                "kprobe {} unavailable on kernel {}: policies on LSM hook {} are neither enforced nor observed ({err})",
                e.function, caps.kernel_release, e.lsm
            ),
            Err(err) => return Err(err),
        }
    }
    Ok(modes)
}

/// One loaded program's run statistics (see [`Probe::program_stats`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramStats {
    pub program: String,
    /// `lsm`, `kprobe`, `kretprobe`, `tracepoint` or `other`.
    pub kind: &'static str,
    pub runs: u64,
    pub run_time: std::time::Duration,
}

fn program_kind(prog: &aya::programs::Program) -> &'static str {
    use aya::programs::{ProbeKind, Program};
    match prog {
        Program::Lsm(_) => "lsm",
        Program::KProbe(p) if matches!(p.kind(), ProbeKind::Return) => "kretprobe",
        Program::KProbe(_) => "kprobe",
        Program::TracePoint(_) | Program::BtfTracePoint(_) => "tracepoint",
        _ => "other",
    }
}

/// The boot-time nanoseconds `[start, end)` of the clock tick this process started in
/// (`/proc/self/stat`), for [`lsm_shared::KernelConfig::agent_start_ns`].
fn own_start() -> Result<(u64, u64), BpfError> {
    let starttime = pin::process_start(std::process::id())
        .ok_or_else(|| BpfError::OwnStart("/proc/self/stat is not readable".into()))?;
    let ticks = ::procfs::ticks_per_second();
    // The kernel converts with an exact division in that case only (nsec_to_clock_t).
    if ticks == 0 || 1_000_000_000 % ticks != 0 {
        return Err(BpfError::OwnStart(format!(
            "{ticks} clock ticks per second"
        )));
    }
    let tick = 1_000_000_000 / ticks;
    let start = starttime.saturating_mul(tick);
    Ok((start, start.saturating_add(tick)))
}

/// The object's program `name` as its kind `T` (`KProbe`, `Lsm`, `TracePoint`, ...): the
/// one lookup behind every load, attach and detach. A program the object lacks is
/// `NotLoaded`, as aya reports a program it does not have.
pub(crate) fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, ProgramError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(ProgramError::NotLoaded)?
        .try_into()
}

/// Logs how long the kernel took to load (verify) a program and how many instructions its
/// verifier processed: the machine-independent measure of start-up cost.
pub(crate) fn log_loaded(
    prog: &str,
    start: std::time::Instant,
    info: Option<aya::programs::ProgramInfo>,
) {
    let insns = info.and_then(|i| i.verified_instruction_count());
    info!(
        program = prog,
        elapsed = ?start.elapsed(),
        verified_insns = insns,
        "program loaded"
    );
}

/// The kernel's information on the object's loaded program `name`.
pub(crate) fn program_info(ebpf: &Ebpf, name: &str) -> Option<aya::programs::ProgramInfo> {
    ebpf.program(name)?.info().ok()
}

/// Whether the object's program `name` has been loaded into the kernel.
pub(crate) fn is_loaded(ebpf: &Ebpf, name: &str) -> bool {
    ebpf.program(name).is_some_and(|p| p.fd().is_ok())
}

fn attach_kprobe(
    ebpf: &mut Ebpf,
    pins: &mut pin::Pins,
    prog: &str,
    function: &str,
) -> Result<(), BpfError> {
    let perr = |source| BpfError::Program {
        name: prog.to_string(),
        source,
    };
    let p: &mut KProbe = program(ebpf, prog).map_err(perr)?;
    let start = std::time::Instant::now();
    p.load().map_err(perr)?;
    log_loaded(prog, start, p.info().ok());
    let id = p.attach(function, 0).map_err(perr)?;
    let link = p.take_link(id).map_err(perr)?;
    pins.keep_kprobe(prog, function, link)?;
    Ok(())
}

/// Loads the LSM programs `progs` (program, hook) side by side, a thread each: the verifier's
/// walk of each program is most of the agent's start, and the kernel verifies the programs of
/// privileged threads in parallel. Attaching stays [`attach_lsm`]'s, which loads what is
/// still unloaded; the programs that failed here are returned with their reason (also
/// logged in full), so that a caller with a fallback need not verify them a second time.
fn preload_lsm(
    ebpf: &mut Ebpf,
    btf: &aya::Btf,
    progs: &[(&str, &str)],
) -> BTreeMap<String, String> {
    let failed = std::sync::Mutex::new(BTreeMap::new());
    std::thread::scope(|scope| {
        for (name, program) in ebpf.programs_mut() {
            let Some(&(_, hook)) = progs.iter().find(|(p, _)| *p == name) else {
                continue;
            };
            let Ok(p) = <&mut Lsm>::try_from(program) else {
                continue;
            };
            if p.fd().is_ok() {
                continue;
            }
            let failed = &failed;
            scope.spawn(move || {
                let start = std::time::Instant::now();
                match p.load(hook, btf) {
                    Ok(()) => log_loaded(name, start, p.info().ok()),
                    Err(e) => {
                        let reason = probes::load_error(name, &e);
                        failed
                            .lock()
                            .unwrap_or_else(|poisoned| poisoned.into_inner())
                            .insert(name.to_string(), reason);
                    }
                }
            });
        }
    });
    failed
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Loads (unless an earlier attempt whose attach failed did) and attaches the LSM program
/// `prog` at `hook`. A refusal names the hook with the verifier's reason cut short; the full
/// log goes to the agent log once ([`probes::load_error`]).
fn attach_lsm(
    ebpf: &mut Ebpf,
    btf: &aya::Btf,
    pins: &mut pin::Pins,
    prog: &str,
    hook: &str,
) -> Result<(), BpfError> {
    let herr = |reason: String| BpfError::HookLoad {
        hook: hook.to_string(),
        reason,
    };
    let p: &mut Lsm = program(ebpf, prog).map_err(|e| herr(e.to_string()))?;
    if p.fd().is_err() {
        let start = std::time::Instant::now();
        p.load(hook, btf)
            .map_err(|e| herr(probes::load_error(prog, &e)))?;
        log_loaded(prog, start, p.info().ok());
    }
    let id = p
        .attach()
        .map_err(|e| herr(format!("attaching {prog}: {e}")))?;
    let link = p.take_link(id).map_err(|e| herr(e.to_string()))?;
    pins.keep(prog, hook, link.into())?;
    Ok(())
}

fn attach_tp(
    ebpf: &mut Ebpf,
    btf: &aya::Btf,
    pins: &mut pin::Pins,
    prog: &str,
    tp: &str,
) -> Result<(), BpfError> {
    let perr = |source| BpfError::Program {
        name: prog.to_string(),
        source,
    };
    let p: &mut BtfTracePoint = program(ebpf, prog).map_err(perr)?;
    let start = std::time::Instant::now();
    p.load(tp, btf).map_err(perr)?;
    log_loaded(prog, start, p.info().ok());
    let id = p.attach().map_err(perr)?;
    let link = p.take_link(id).map_err(perr)?;
    pins.keep(prog, tp, link.into())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pos: u64) -> SelMasks {
        SelMasks { pos, neg: 0 }
    }

    #[test]
    fn staging_keeps_both_plans_and_settling_leaves_exactly_the_new_one() {
        let old = BTreeMap::from([(1u32, m(0b01)), (2, m(0b01)), (3, m(0b11))]);
        let new = BTreeMap::from([(2u32, m(0b10)), (3, m(0b11)), (4, m(0b10))]);
        // The kernel map holds `old` exactly.
        let mut kernel = old.clone();
        let mut writes = 0;
        stage(&old, &new, |k, v| {
            writes += 1;
            kernel.insert(*k, v);
            Ok(())
        })
        .unwrap();
        assert_eq!(writes, 2, "entry 3 already held the union");
        // Between the phases both plans find their bits.
        assert_eq!(
            kernel,
            BTreeMap::from([(1, m(0b01)), (2, m(0b11)), (3, m(0b11)), (4, m(0b10))])
        );
        settle(&old, &new, |k, v| {
            match v {
                Some(v) => kernel.insert(*k, v),
                None => kernel.remove(k),
            };
            Ok(())
        })
        .unwrap();
        assert_eq!(kernel, new);
    }

    #[test]
    fn lpm_keys_cover_scope_and_string_bits() {
        let k = lpm_key(&(HOOK_FILE_OPEN, SUBJECT_ARG, b"/etc".to_vec()));
        assert_eq!(k.prefix_len(), 32 + 32);
        assert_eq!(&k.data().bytes[..4], b"/etc");
        assert_eq!(k.data().scope, [HOOK_FILE_OPEN as u8, SUBJECT_ARG, 0, 0]);
    }
}
