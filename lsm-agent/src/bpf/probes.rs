//! Attaching the generic kprobe, kretprobe, tracepoint and uprobe programs to the targets of the
//! loaded policies, driven by [`MapImage::probes`]: what the image lists gets attached (before
//! its plans go live), what it no longer lists gets detached (after). The kernel facts the
//! pure image leaves out are found here: a function's addresses in `/proc/kallsyms` (which
//! `bpf_get_func_ip` returns in the programs), a syscall's wrapper name on this architecture,
//! a tracepoint's event id and the offsets of its fields in tracefs, a raw tracepoint's
//! argument count in BTF. A uprobe carries its
//! hook id as the attachment's cookie (`bpf_get_attach_cookie`): addresses in user space are
//! not unique across files.
//!
//! With pinning, each link is pinned in the agent's generation and held by its pin alone, as
//! the LSM programs are: a `Sigkill` or `Override` kprobe keeps acting while no agent runs.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use super::program;
use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData},
    programs::{
        FEntry, KProbe, ProgramError, RawTracePoint, TracePoint, UProbe, fentry::FEntryLinkId,
        kprobe::KProbeLinkId, links::FdLink, raw_trace_point::RawTracePointLinkId,
        trace_point::TracePointLinkId,
    },
};
use lsm_shared::{
    ACT_MONITOR, ACT_OVERRIDE, ACT_SET, ARG_SKIP, FENTRY_SLOTS, MAX_ARGS, MAX_SELECTORS,
    ProbeHooks, RAW_TP_SLOTS, TP_SLOTS,
};
use tracing::{info, warn};

use crate::policy::{
    compile::MapImage,
    ir::{KprobeTarget, TP_FIRST_FIELD, Target},
    probes::hook_label,
};

pub const KPROBE_PROG: &str = "generic_kprobe";
pub const KPROBE_SYSCALL_PROG: &str = "generic_kprobe_syscall";
pub const KRETPROBE_PROG: &str = "generic_kretprobe";
pub const UPROBE_PROG: &str = "generic_uprobe";
/// The program attached at each site of a USDT probe.
pub const USDT_PROG: &str = "generic_usdt";
/// The program attached at each site of a USDT probe whose policies `Set` an argument.
pub const USDT_SET_PROG: &str = "generic_usdt_set";
/// The entry programs of a function whose policies `Override` its return.
pub const KPROBE_OVERRIDE_PROG: &str = "generic_kprobe_override";
pub const KPROBE_SYSCALL_OVERRIDE_PROG: &str = "generic_kprobe_syscall_override";

/// The fentry copies of the entry program, per flavor (see `lsm-ebpf/src/probe.rs`): the first
/// functions observed are entered through their BPF trampoline, the others by kprobe.
const FENTRY_PROGS: [&str; FENTRY_SLOTS as usize] = [
    "generic_fentry_0",
    "generic_fentry_1",
    "generic_fentry_2",
    "generic_fentry_3",
    "generic_fentry_4",
    "generic_fentry_5",
];
const FENTRY_SYSCALL_PROGS: [&str; FENTRY_SLOTS as usize] = [
    "generic_fentry_syscall_0",
    "generic_fentry_syscall_1",
    "generic_fentry_syscall_2",
    "generic_fentry_syscall_3",
    "generic_fentry_syscall_4",
    "generic_fentry_syscall_5",
];

fn fentry_prog(syscall: bool, slot: usize) -> &'static str {
    let progs = if syscall {
        &FENTRY_SYSCALL_PROGS
    } else {
        &FENTRY_PROGS
    };
    progs[slot % FENTRY_SLOTS as usize]
}

/// A link of a probe: owned through its program (detached through it), or pinned in the
/// agent's generation and held by its pin alone (detached by removing the pin).
enum Held<Id> {
    Owned(Id),
    Pinned(PathBuf),
}

/// Takes the link `id` out of its program (`take`) and pins it at `dir/<name>@<target>`;
/// without `dir`, leaves it with its program.
fn hold<Id, L>(
    dir: Option<&Path>,
    name: &str,
    target: &str,
    id: Id,
    take: impl FnOnce(Id) -> Result<L, ProgramError>,
) -> Result<Held<Id>, String>
where
    FdLink: TryFrom<L>,
    <FdLink as TryFrom<L>>::Error: std::fmt::Display,
{
    let Some(dir) = dir else {
        return Ok(Held::Owned(id));
    };
    // Dropped on any error below: the link is detached, the attachment fails.
    let link = take(id).map_err(|e| format!("taking the link of {name}: {e}"))?;
    let fd = FdLink::try_from(link)
        .map_err(|e| format!("{name} on {target} is not a BPF link ({e}): it cannot be pinned"))?;
    super::pin::pin_link(dir, name, target, fd)
        .map(Held::Pinned)
        .map_err(|e| e.to_string())
}

/// Detaches a held link: through its program (`detach`), or by removing its pin.
fn release<Id>(
    link: Held<Id>,
    detach: impl FnOnce(Id) -> Result<(), ProgramError>,
) -> Result<(), String> {
    match link {
        Held::Owned(id) => detach(id).map_err(|e| e.to_string()),
        Held::Pinned(path) => {
            std::fs::remove_file(&path).map_err(|e| format!("removing {}: {e}", path.display()))
        }
    }
}

/// How a probed function's entry is attached.
enum EntryLink {
    /// The entry program on a kprobe (every function kprobes can reach; the overriding one).
    Kprobe(Held<KProbeLinkId>),
    /// Fentry slot `slot` of the function's flavor, loaded for this function.
    Fentry {
        slot: usize,
        link: Held<FEntryLinkId>,
    },
}

/// The functions whose return a kprobe may override (`ALLOW_ERROR_INJECTION`), one per line
/// with its error type; in debugfs.
const ERROR_INJECTION_LIST: &str = "/sys/kernel/debug/error_injection/list";
/// The copies of the tracepoint program, one per slot (see `lsm-ebpf/src/probe.rs`).
pub const TRACEPOINT_PROGS: [&str; TP_SLOTS as usize] = [
    "generic_tracepoint_0",
    "generic_tracepoint_1",
    "generic_tracepoint_2",
    "generic_tracepoint_3",
];

/// The copies of the generic raw tracepoint program; copy `i` reads its hook id at key
/// `TP_SLOTS + i` of `TP_IDS`.
pub const RAW_TP_PROGS: [&str; RAW_TP_SLOTS as usize] = [
    "generic_raw_tp_0",
    "generic_raw_tp_1",
    "generic_raw_tp_2",
    "generic_raw_tp_3",
];

/// Where tracefs is mounted, newest first.
const TRACEFS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// Why a target cannot be observed; the message names the target.
#[derive(Debug, thiserror::Error)]
#[error("{target}: {reason}")]
pub struct ProbeError {
    pub target: String,
    pub reason: String,
}

fn perr(target: &Target, reason: impl Into<String>) -> ProbeError {
    ProbeError {
        target: hook_label(target),
        reason: reason.into(),
    }
}

/// A probed function: its addresses and the hooks of its kprobe and kretprobe.
/// The maps in which the generic entry programs find the hook ids they run for.
pub struct IdMaps {
    /// A probed function's address (`bpf_get_func_ip`) → its hooks: for the kprobes and the
    /// kretprobe.
    pub fns: HashMap<MapData, u64, ProbeHooks>,
    /// An fentry copy (plain copy `i` at `i`, syscall copy `i` at `FENTRY_SLOTS + i`) → the
    /// hooks of the function it is attached to: an array lookup, where the address needs a
    /// hash lookup on every call of the function.
    pub fentry: Array<MapData, ProbeHooks>,
    /// A tracepoint copy → its hook id.
    pub tps: HashMap<MapData, u32, u32>,
}

impl IdMaps {
    /// Writes `f`'s hooks under each of its addresses and its fentry copy's slot, or removes
    /// them once it has none.
    fn write(&mut self, f: &FnProbe) -> Result<(), String> {
        let none = f.hooks == ProbeHooks::default();
        for a in &f.addrs {
            if none {
                // Already gone is as good.
                let _ = self.fns.remove(a);
            } else {
                self.fns
                    .insert(a, f.hooks, 0)
                    .map_err(|e| format!("PROBE_IDS: {e}"))?;
            }
        }
        if let Some(EntryLink::Fentry { slot, .. }) = &f.entry {
            let key = *slot as u32 + if f.syscall { FENTRY_SLOTS } else { 0 };
            self.fentry
                .set(key, f.hooks, 0)
                .map_err(|e| format!("FENTRY_IDS: {e}"))?;
        }
        Ok(())
    }
}

struct FnProbe {
    addrs: Vec<u64>,
    /// Probed as a syscall wrapper (arguments from the user's registers).
    syscall: bool,
    /// Its entry program overrides the return (`bpf_override_return`).
    override_: bool,
    hooks: ProbeHooks,
    entry: Option<EntryLink>,
    kretprobe: Option<Held<KProbeLinkId>>,
}

struct TpProbe {
    slot: u32,
    link: Held<TracePointLinkId>,
}

struct RawTpProbe {
    /// Index into [`RAW_TP_PROGS`].
    slot: u32,
    link: Held<RawTracePointLinkId>,
}

/// What is attached, by resolved symbol and by hook id.
#[derive(Default)]
pub struct Probes {
    fns: BTreeMap<String, FnProbe>,
    /// Hook id → the symbol its kprobe or kretprobe is on.
    fn_of: BTreeMap<u32, String>,
    tps: BTreeMap<u32, TpProbe>,
    raw_tps: BTreeMap<u32, RawTpProbe>,
    /// Per raw tracepoint event: its `TP_PROTO` argument count (`None`: no such event), read
    /// from the kernel's BTF the first time a policy names it.
    raw_tp_args: BTreeMap<String, Option<usize>>,
    /// Uprobe and USDT hook id → its attachments, one per point or site.
    ups: BTreeMap<u32, uprobes::UpLinks>,
    /// Per tracepoint hook: the byte offsets of its arguments' fields.
    pub tp_off: BTreeMap<u32, [u16; MAX_ARGS]>,
    /// Where links are pinned (the generation's `links/`), when the agent pins.
    links_dir: Option<PathBuf>,
}

mod containers;
mod uprobes;

/// `sys_<name>` → this architecture's syscall wrapper.
fn syscall_symbol(function: &str) -> String {
    let prefix = if cfg!(target_arch = "aarch64") {
        "__arm64_"
    } else {
        "__x64_"
    };
    format!("{prefix}{function}")
}

fn tracefs_file(subsystem: &str, event: &str, file: &str) -> Result<String, String> {
    let mut last = String::new();
    for root in TRACEFS {
        let p = format!("{root}/events/{subsystem}/{event}/{file}");
        match std::fs::read_to_string(&p) {
            Ok(s) => return Ok(s),
            Err(e) => last = format!("{p}: {e}"),
        }
    }
    Err(format!("tracepoint not found ({last})"))
}

/// The byte offsets of the fields of a tracepoint `format` file, in order (`common_*`
/// included): Tetragon's argument `index` counts them.
pub fn parse_format(format: &str) -> Vec<(String, u16)> {
    let mut out = Vec::new();
    for line in format.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("field:") else {
            continue;
        };
        let mut decl = "";
        let mut offset = None;
        for part in rest.split(';') {
            let part = part.trim();
            if let Some(o) = part.strip_prefix("offset:") {
                offset = o.trim().parse::<u16>().ok();
            } else if decl.is_empty() {
                decl = part;
            }
        }
        // "unsigned long args[6]" -> "args"
        let name = decl
            .split_whitespace()
            .last()
            .unwrap_or("")
            .split('[')
            .next()
            .unwrap_or("")
            .to_string();
        if let Some(o) = offset {
            out.push((name, o));
        }
    }
    out
}

impl Probes {
    /// No probe yet; links pinned in `links_dir` when given.
    pub fn pinned_in(links_dir: Option<PathBuf>) -> Self {
        Probes {
            links_dir,
            ..Probes::default()
        }
    }

    /// Attaches what `img` lists and `old` does not. On error, what this call attached is
    /// detached again and nothing live changes.
    #[allow(clippy::too_many_arguments)]
    pub fn attach_new(
        &mut self,
        ebpf: &mut Ebpf,
        btf: &aya::Btf,
        ids: &mut IdMaps,
        old: &MapImage,
        img: &MapImage,
        override_ok: bool,
    ) -> Result<(), ProbeError> {
        let mut done = Vec::new();
        // A function's entry hooks before its returns: the first hook on a function picks
        // its entry program, which must be the overriding one if an entry hook overrides (a
        // kretprobe with Override has its override on the entry, see `split_return_override`).
        let mut order: Vec<(&u32, &Target)> = img.probes.iter().collect();
        order.sort_by_key(|(id, t)| (matches!(t, Target::Kprobe(k) if k.ret), **id));
        for (&id, t) in order {
            if old.probes.get(&id) == Some(t) {
                // Kept as attached: its program cannot change from observing to overriding.
                if overrides(old, id) != overrides(img, id) {
                    return Err(perr(
                        t,
                        "the loaded policies probe this function without Override: a function \
                         is probed one way; load the Override policy before, or instead of, \
                         the others",
                    ));
                }
                if set_positions(old, id).is_empty() != set_positions(img, id).is_empty() {
                    return Err(perr(
                        t,
                        "the loaded policies observe this USDT probe without Set: a probe is \
                         attached one way; load the Set policy before, or instead of, the \
                         others",
                    ));
                }
                continue;
            }
            let r = check_override(img, id, t, override_ok).and_then(|ovr| match t {
                Target::Kprobe(k) => self.attach_fn(ebpf, btf, ids, id, t, k, ovr),
                Target::Tracepoint { subsystem, event } => {
                    self.attach_tp(ebpf, ids, id, t, subsystem, event)
                }
                Target::RawTracepoint { event, .. } => {
                    self.attach_raw_tp(ebpf, ids, img, id, t, event)
                }
                Target::Uprobe(u) => self.attach_up(ebpf, id, t, u, &usdt_use(img, id)),
                Target::Lsm(_) => Ok(()),
            });
            match r {
                Ok(()) => done.push((id, t.clone())),
                Err(e) => {
                    for (id, t) in done {
                        self.detach(ebpf, ids, id, &t);
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Detaches what `old` lists and `img` does not (after the switch).
    pub fn detach_old(
        &mut self,
        ebpf: &mut Ebpf,
        ids: &mut IdMaps,
        old: &MapImage,
        img: &MapImage,
    ) {
        for (&id, t) in &old.probes {
            if img.probes.get(&id) != Some(t) {
                self.detach(ebpf, ids, id, t);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn attach_fn(
        &mut self,
        ebpf: &mut Ebpf,
        btf: &aya::Btf,
        ids: &mut IdMaps,
        id: u32,
        t: &Target,
        k: &KprobeTarget,
        override_: bool,
    ) -> Result<(), ProbeError> {
        let (ret, syscall) = (k.ret, k.syscall);
        let symbol = &if syscall {
            syscall_symbol(&k.function)
        } else {
            k.function.clone()
        };
        if !self.fns.contains_key(symbol) {
            let addrs = super::kallsyms::addrs(symbol).map_err(|r| perr(t, r))?;
            if addrs.is_empty() {
                return Err(perr(
                    t,
                    format!("no kernel function {symbol} in /proc/kallsyms"),
                ));
            }
            self.fns.insert(
                symbol.to_string(),
                FnProbe {
                    addrs,
                    syscall,
                    override_,
                    hooks: ProbeHooks::default(),
                    entry: None,
                    kretprobe: None,
                },
            );
        }
        let taken: Vec<(bool, usize)> = self
            .fns
            .values()
            .filter_map(|f| match f.entry {
                Some(EntryLink::Fentry { slot, .. }) => Some((f.syscall, slot)),
                _ => None,
            })
            .collect();
        let Some(f) = self.fns.get_mut(symbol) else {
            return Err(perr(t, "internal: function state lost"));
        };
        if f.syscall != syscall {
            return Err(perr(
                t,
                format!("{symbol} is already probed with syscall: {}", f.syscall),
            ));
        }
        // Only an entry hook overrides; its kretprobe shares the entry program.
        if override_ != f.override_ && !ret {
            return Err(perr(
                t,
                format!(
                    "{symbol} is already probed {} Override: a function is probed one way",
                    if f.override_ { "with" } else { "without" }
                ),
            ));
        }
        // The entry program runs for a kretprobe too: it keeps the arguments for the return.
        if f.entry.is_none() {
            let free = (0..FENTRY_SLOTS as usize).find(|s| !taken.contains(&(f.syscall, *s)));
            let fentry = match free {
                // An overriding entry needs a kprobe (bpf_override_return).
                Some(slot) if !f.override_ => match fentry(ebpf, btf, f.syscall, slot, symbol) {
                    Ok(id) => {
                        let prog = fentry_prog(f.syscall, slot);
                        let link = hold(self.links_dir.as_deref(), prog, symbol, id, |id| {
                            program::<FEntry>(ebpf, prog)?.take_link(id)
                        })
                        .map_err(|r| perr(t, r))?;
                        Some(EntryLink::Fentry { slot, link })
                    }
                    Err(r) => {
                        info!("{symbol}: no fentry ({r}); observing it by kprobe");
                        None
                    }
                },
                _ => None,
            };
            f.entry = match fentry {
                Some(e) => Some(e),
                None => {
                    let prog = entry_prog(f.syscall, f.override_);
                    let id = kprobe(ebpf, prog, symbol).map_err(|r| perr(t, r))?;
                    let link = hold(self.links_dir.as_deref(), prog, symbol, id, |id| {
                        program::<KProbe>(ebpf, prog)?.take_link(id)
                    })
                    .map_err(|r| perr(t, r))?;
                    Some(EntryLink::Kprobe(link))
                }
            };
        }
        if ret && f.kretprobe.is_none() {
            let id = kprobe(ebpf, KRETPROBE_PROG, symbol).map_err(|r| perr(t, r))?;
            let link = hold(
                self.links_dir.as_deref(),
                KRETPROBE_PROG,
                symbol,
                id,
                |id| program::<KProbe>(ebpf, KRETPROBE_PROG)?.take_link(id),
            )
            .map_err(|r| perr(t, r))?;
            f.kretprobe = Some(link);
        }
        if ret {
            f.hooks.ret = id;
        } else {
            f.hooks.entry = id;
        }
        ids.write(f).map_err(|r| perr(t, r))?;
        self.fn_of.insert(id, symbol.to_string());
        info!("observing {} (hook {id})", hook_label(t));
        Ok(())
    }

    fn attach_tp(
        &mut self,
        ebpf: &mut Ebpf,
        ids: &mut IdMaps,
        id: u32,
        t: &Target,
        subsystem: &str,
        event: &str,
    ) -> Result<(), ProbeError> {
        let slot = (0..TP_SLOTS)
            .find(|s| !self.tps.values().any(|p| p.slot == *s))
            .ok_or_else(|| {
                perr(
                    t,
                    format!("lsm-agent observes at most {TP_SLOTS} tracepoints at once"),
                )
            })?;
        let prog_name = TRACEPOINT_PROGS[slot as usize];
        let fields =
            parse_format(&tracefs_file(subsystem, event, "format").map_err(|r| perr(t, r))?);
        let mut off = [0u16; MAX_ARGS];
        for (i, o) in off.iter_mut().enumerate() {
            // Positions no policy declares are never read; a missing field reads offset 0.
            if let Some((_, fo)) = fields.get(TP_FIRST_FIELD as usize + i) {
                *o = *fo;
            }
        }
        ensure_loaded(ebpf, prog_name, load_tracepoint).map_err(|r| perr(t, r))?;
        let prog: &mut TracePoint =
            program(ebpf, prog_name).map_err(|e| perr(t, format!("{prog_name}: {e}")))?;
        let link_id = prog
            .attach(subsystem, event)
            .map_err(|e| perr(t, format!("attaching: {e}")))?;
        let target = format!("{subsystem}:{event}");
        let link = hold(
            self.links_dir.as_deref(),
            prog_name,
            &target,
            link_id,
            |l| prog.take_link(l),
        )
        .map_err(|r| perr(t, r))?;
        ids.tps
            .insert(slot, id, 0)
            .map_err(|e| perr(t, format!("TP_IDS: {e}")))?;
        self.tps.insert(id, TpProbe { slot, link });
        self.tp_off.insert(id, off);
        info!("observing {} (hook {id}, {prog_name})", hook_label(t));
        Ok(())
    }

    /// A raw tracepoint: the arguments the policies read must be among its `TP_PROTO`
    /// arguments (the program would read past them unchecked), and it needs a free copy of
    /// the program.
    fn attach_raw_tp(
        &mut self,
        ebpf: &mut Ebpf,
        ids: &mut IdMaps,
        img: &MapImage,
        id: u32,
        t: &Target,
        event: &str,
    ) -> Result<(), ProbeError> {
        let nargs = match self.raw_tp_args.get(event) {
            Some(n) => *n,
            None => {
                let btf = super::btf::open(Path::new(super::btf::VMLINUX_BTF))
                    .map_err(|e| perr(t, e.to_string()))?;
                let n = super::btf::raw_tracepoint_args(&btf, event);
                self.raw_tp_args.insert(event.to_string(), n);
                n
            }
        };
        let Some(nargs) = nargs else {
            return Err(perr(
                t,
                format!("the kernel has no tracepoint {event} (no btf_trace_{event} in its BTF)"),
            ));
        };
        if let Some(cfg) = img.hook_cfg.get(&id)
            && let Some(d) = cfg
                .args
                .iter()
                .find(|d| d.kind != ARG_SKIP && usize::from(d.src) >= nargs)
        {
            return Err(perr(
                t,
                format!(
                    "argument index {} is past its {nargs} TP_PROTO argument(s) (counted from 0)",
                    d.src
                ),
            ));
        }
        let slot = (0..RAW_TP_SLOTS)
            .find(|s| !self.raw_tps.values().any(|p| p.slot == *s))
            .ok_or_else(|| {
                perr(
                    t,
                    format!("lsm-agent observes at most {RAW_TP_SLOTS} raw tracepoints at once"),
                )
            })?;
        let prog_name = RAW_TP_PROGS[slot as usize];
        ensure_loaded(ebpf, prog_name, load_raw_tp).map_err(|r| perr(t, r))?;
        let prog: &mut RawTracePoint =
            program(ebpf, prog_name).map_err(|e| perr(t, format!("{prog_name}: {e}")))?;
        let link_id = prog
            .attach(event)
            .map_err(|e| perr(t, format!("attaching: {e}")))?;
        let link = hold(self.links_dir.as_deref(), prog_name, event, link_id, |l| {
            prog.take_link(l)
        })
        .map_err(|r| perr(t, r))?;
        ids.tps
            .insert(TP_SLOTS + slot, id, 0)
            .map_err(|e| perr(t, format!("TP_IDS: {e}")))?;
        self.raw_tps.insert(id, RawTpProbe { slot, link });
        info!("observing {} (hook {id}, {prog_name})", hook_label(t));
        Ok(())
    }

    fn detach(&mut self, ebpf: &mut Ebpf, ids: &mut IdMaps, id: u32, t: &Target) {
        if let Some(tp) = self.tps.remove(&id) {
            self.tp_off.remove(&id);
            let _ = ids.tps.remove(&tp.slot);
            let prog = TRACEPOINT_PROGS[tp.slot as usize % TRACEPOINT_PROGS.len()];
            if let Err(e) = release(tp.link, |l| program::<TracePoint>(ebpf, prog)?.detach(l)) {
                warn!("detaching {}: {e}", hook_label(t));
            }
            return;
        }
        if let Some(tp) = self.raw_tps.remove(&id) {
            let _ = ids.tps.remove(&(TP_SLOTS + tp.slot));
            let prog = RAW_TP_PROGS[tp.slot as usize % RAW_TP_PROGS.len()];
            if let Err(e) = release(tp.link, |l| program::<RawTracePoint>(ebpf, prog)?.detach(l)) {
                warn!("detaching {}: {e}", hook_label(t));
            }
            return;
        }
        if self.detach_up(ebpf, id, t) {
            return;
        }
        let Some(symbol) = self.fn_of.remove(&id) else {
            return;
        };
        let Some(f) = self.fns.get_mut(&symbol) else {
            return;
        };
        if f.hooks.entry == id {
            f.hooks.entry = 0;
        }
        if f.hooks.ret == id {
            f.hooks.ret = 0;
            if let Some(l) = f.kretprobe.take() {
                detach_kprobe(ebpf, KRETPROBE_PROG, l, t);
            }
        }
        if let Err(r) = ids.write(f) {
            warn!("detaching {}: {r}", hook_label(t));
        }
        if f.hooks == ProbeHooks::default() {
            match f.entry.take() {
                Some(EntryLink::Kprobe(l)) => {
                    detach_kprobe(ebpf, entry_prog(f.syscall, f.override_), l, t);
                }
                Some(EntryLink::Fentry { slot, link }) => {
                    let prog = fentry_prog(f.syscall, slot);
                    if let Err(e) = release(link, |l| program::<FEntry>(ebpf, prog)?.detach(l)) {
                        warn!("detaching {prog} of {}: {e}", hook_label(t));
                    }
                    // The slot's program was verified for this function: unloaded, the slot
                    // can serve another.
                    if let Ok(p) = program::<FEntry>(ebpf, prog)
                        && let Err(e) = p.unload()
                    {
                        warn!("unloading {prog}: {e}");
                    }
                }
                None => {}
            }
            self.fns.remove(&symbol);
        }
    }
}

/// The entry program of a function probed as a syscall wrapper or not, overriding or not.
fn entry_prog(syscall: bool, override_: bool) -> &'static str {
    match (syscall, override_) {
        (false, false) => KPROBE_PROG,
        (true, false) => KPROBE_SYSCALL_PROG,
        (false, true) => KPROBE_OVERRIDE_PROG,
        (true, true) => KPROBE_SYSCALL_OVERRIDE_PROG,
    }
}

/// Whether a selector of hook `id` in `img` overrides the return (not in monitor mode).
/// What the policies of USDT hook `id` need of every site's arguments.
fn usdt_use(img: &MapImage, id: u32) -> uprobes::UsdtUse {
    let read = img.hook_cfg.get(&id).map_or(0, |c| {
        c.args
            .iter()
            .rposition(|d| d.kind != ARG_SKIP)
            .map_or(0, |i| i + 1)
    });
    uprobes::UsdtUse {
        read,
        sets: set_positions(img, id),
    }
}

/// The probe arguments the `Set` selectors of USDT hook `id` write (none in monitor mode).
fn set_positions(img: &MapImage, id: u32) -> Vec<u32> {
    let base = id * MAX_SELECTORS;
    let mut out: Vec<u32> = img
        .sel_act
        .range(base..base + MAX_SELECTORS)
        .filter(|(_, a)| a.flags & ACT_SET != 0 && a.flags & ACT_MONITOR == 0)
        .map(|(_, a)| a.set_pos)
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

fn overrides(img: &MapImage, id: u32) -> bool {
    let base = id * MAX_SELECTORS;
    img.sel_act
        .range(base..base + MAX_SELECTORS)
        .any(|(_, a)| a.flags & ACT_OVERRIDE != 0 && a.flags & ACT_MONITOR == 0)
}

/// Whether target `id` is probed by the overriding entry program, or why it cannot be:
/// `bpf_override_return` runs at a function's entry (a kretprobe's function has returned, a
/// tracepoint has no return value), needs the kernel's `CONFIG_BPF_KPROBE_OVERRIDE`
/// (`override_ok`, probed at start) and a function on its error-injection list (checked
/// when debugfs shows the list; the kernel refuses the attachment otherwise).
fn check_override(
    img: &MapImage,
    id: u32,
    t: &Target,
    override_ok: bool,
) -> Result<bool, ProbeError> {
    if !overrides(img, id) {
        return Ok(false);
    }
    let k = match t {
        Target::Kprobe(k) if !k.ret => k,
        Target::Kprobe(_) => {
            return Err(perr(
                t,
                "Override at a kretprobe: the function has already run (Override applies at \
                 the kprobe of its entry)",
            ));
        }
        _ => return Err(perr(t, "Override at a tracepoint: it has no return value")),
    };
    if !override_ok {
        return Err(perr(
            t,
            "Override on a call without an LSM hook needs bpf_override_return, which this \
             kernel does not offer (CONFIG_BPF_KPROBE_OVERRIDE, CONFIG_FUNCTION_ERROR_INJECTION): \
             use Sigkill, or an LSM hook",
        ));
    }
    let symbol = if k.syscall {
        syscall_symbol(&k.function)
    } else {
        k.function.clone()
    };
    if let Ok(list) = std::fs::read_to_string(ERROR_INJECTION_LIST)
        && !injectable(&list, &symbol)
    {
        return Err(perr(
            t,
            format!(
                "Override needs a function on the kernel's error-injection list \
                 ({ERROR_INJECTION_LIST}); {symbol} is not on it"
            ),
        ));
    }
    Ok(true)
}

/// Whether `symbol` is on the error-injection list `list` (`<symbol>\t<type>` lines).
fn injectable(list: &str, symbol: &str) -> bool {
    list.lines()
        .any(|l| l.split_whitespace().next() == Some(symbol))
}

/// Attaches the uprobe program at point `k` of uprobe hook `id` in `file`. The cookie is
/// the hook id in its low 32 bits and `k` in its high ones: one program run knows both the
/// hook (selectors, arguments) and which of its points ran.
fn kprobe(ebpf: &mut Ebpf, prog: &str, symbol: &str) -> Result<KProbeLinkId, String> {
    ensure_loaded(ebpf, prog, load_kprobe)?;
    let p: &mut KProbe = program(ebpf, prog).map_err(|e| format!("{prog}: {e}"))?;
    p.attach(symbol, 0)
        .map_err(|e| format!("attaching {prog} to {symbol}: {e}"))
}

/// Loads fentry slot `slot` of the flavor for `symbol` and attaches it; on failure the slot
/// is left unloaded for the next function.
fn fentry(
    ebpf: &mut Ebpf,
    btf: &aya::Btf,
    syscall: bool,
    slot: usize,
    symbol: &str,
) -> Result<FEntryLinkId, String> {
    let prog = fentry_prog(syscall, slot);
    let p: &mut FEntry = program(ebpf, prog).map_err(|e| format!("{prog}: {e}"))?;
    let start = std::time::Instant::now();
    p.load(symbol, btf).map_err(|e| load_error(prog, &e))?;
    super::log_loaded(prog, start, p.info().ok());
    p.attach().map_err(|e| {
        let _ = p.unload();
        format!("attaching {prog} to {symbol}: {e}")
    })
}

fn detach_kprobe(ebpf: &mut Ebpf, prog: &str, link: Held<KProbeLinkId>, t: &Target) {
    if let Err(e) = release(link, |l| program::<KProbe>(ebpf, prog)?.detach(l)) {
        warn!("detaching {prog} of {}: {e}", hook_label(t));
    }
}

/// Loads one generic program the first time a target needs it: verifying them takes long
/// under emulation, and a node whose policies need only some of them (or only LSM hooks)
/// never pays for the others. A program the kernel refused is tried again by the next
/// policy that needs it, and refuses only that policy.
fn ensure_loaded(
    ebpf: &mut Ebpf,
    prog: &str,
    load: fn(&mut Ebpf, &str) -> Result<(), aya::programs::ProgramError>,
) -> Result<(), String> {
    if super::is_loaded(ebpf, prog) {
        return Ok(());
    }
    let start = std::time::Instant::now();
    load(ebpf, prog).map_err(|e| load_error(prog, &e))?;
    super::log_loaded(prog, start, super::program_info(ebpf, prog));
    Ok(())
}

fn load_kprobe(ebpf: &mut Ebpf, prog: &str) -> Result<(), aya::programs::ProgramError> {
    program::<KProbe>(ebpf, prog)?.load()
}

fn load_tracepoint(ebpf: &mut Ebpf, prog: &str) -> Result<(), aya::programs::ProgramError> {
    program::<TracePoint>(ebpf, prog)?.load()
}

fn load_raw_tp(ebpf: &mut Ebpf, prog: &str) -> Result<(), aya::programs::ProgramError> {
    program::<RawTracePoint>(ebpf, prog)?.load()
}

fn load_uprobe(ebpf: &mut Ebpf, prog: &str) -> Result<(), aya::programs::ProgramError> {
    program::<UProbe>(ebpf, prog)?.load()
}

/// An error with its sources (aya's uprobe errors say which file or symbol in a source).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

/// Why a program did not load, without the verifier's log (which can be megabytes: it goes
/// to the agent's log once, not into every policy error).
pub(crate) fn load_error(prog: &str, e: &aya::programs::ProgramError) -> String {
    let full = e.to_string();
    warn!("loading {prog}: {full}");
    let short = full.split(". Verifier output").next().unwrap_or(&full);
    format!(
        "loading {prog}: {}",
        short.chars().take(300).collect::<String>()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_fields_are_counted_with_the_common_ones_and_keep_their_offsets() {
        let f = parse_format(include_str!("testdata/raw-syscalls-sys-enter.format"));
        let names: Vec<(&str, u16)> = f.iter().map(|(n, o)| (n.as_str(), *o)).collect();
        assert_eq!(
            names,
            [
                ("common_type", 0),
                ("common_flags", 2),
                ("common_preempt_count", 3),
                ("common_pid", 4),
                ("id", 8),
                ("args", 16)
            ]
        );
        assert_eq!(f[TP_FIRST_FIELD as usize].0, "id");
    }

    #[test]
    fn override_needs_the_kernels_helper_a_kprobe_entry_and_an_injectable_function() {
        use crate::policy::ir::KprobeTarget;
        use lsm_shared::{ACT_OVERRIDE, ACT_POST, SelectorAction};
        let k = |ret| {
            Target::Kprobe(KprobeTarget {
                function: "sys_linkat".into(),
                syscall: true,
                ret,
            })
        };
        let mut img = MapImage::default();
        assert!(!check_override(&img, 30, &k(false), false).expect("nothing to override"));
        img.sel_act.insert(
            30 * MAX_SELECTORS,
            SelectorAction {
                flags: ACT_POST | ACT_OVERRIDE,
                error: -1,
                ..Default::default()
            },
        );
        let e = check_override(&img, 30, &k(false), false).expect_err("no helper");
        assert!(e.reason.contains("CONFIG_BPF_KPROBE_OVERRIDE"), "{e}");
        let e = check_override(&img, 30, &k(true), true).expect_err("kretprobe");
        assert!(e.reason.contains("already run"), "{e}");
        let list = "__x64_sys_linkat\tERRNO\nshould_failslab\tERRNO\n";
        assert!(injectable(list, "__x64_sys_linkat"));
        assert!(!injectable(list, "__x64_sys_link"));
        assert_eq!(entry_prog(true, true), KPROBE_SYSCALL_OVERRIDE_PROG);
        assert_eq!(entry_prog(false, false), KPROBE_PROG);
    }

    #[test]
    fn syscalls_are_probed_at_this_architectures_wrapper() {
        #[cfg(target_arch = "x86_64")]
        assert_eq!(syscall_symbol("sys_setuid"), "__x64_sys_setuid");
    }
}
