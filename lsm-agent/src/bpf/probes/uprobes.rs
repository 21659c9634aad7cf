//! Attaching uprobes (`spec.uprobes`: at each symbol or offset of a hook) and USDT probes
//! (`spec.usdts`: at each site of the probe its file's notes list, with how to compute the
//! site's arguments written under the attachment's cookie).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use aya::{
    Ebpf,
    maps::{HashMap, MapData},
    programs::{
        UProbe,
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLinkId, UProbeScope},
    },
};
use lsm_shared::{
    MAX_ARGS, USDT_CONST, USDT_DEREF, USDT_REG, USDT_SIB, USDT_SPECS_MAP, UsdtArg, UsdtSpec,
};
use tracing::{info, warn};

use super::containers::FileKey;
use super::{
    Held, ProbeError, Probes, UPROBE_PROG, USDT_PROG, USDT_SET_PROG, ensure_loaded, error_chain,
    hold, load_uprobe, perr, program, release,
};
use crate::bpf::usdt::{self, UsdtArgSpec, UsdtLoc, UsdtSite};
use crate::policy::{
    ir::{Target, UprobePoint, UprobeTarget, UsdtProbe},
    probes::hook_label,
};

/// What the policies of a USDT hook need of each site's arguments.
pub(super) struct UsdtUse {
    /// The arguments read: every site must have at least this many.
    pub read: usize,
    /// The arguments `Set` writes: in memory at every site.
    pub sets: Vec<u32>,
}

/// The attachments of one uprobe or USDT hook.
pub(super) struct UpLinks {
    /// `generic_uprobe` or `generic_usdt`.
    pub(super) prog: &'static str,
    links: Vec<Held<UProbeLinkId>>,
    /// USDT sites whose [`UsdtSpec`] is written under cookie `id | k << 32`, `k < sites`.
    sites: u32,
    /// `resolvePathInContainer`: per file a selected container resolves the path to, the
    /// attachments of each point there (see `containers.rs`). Empty otherwise.
    pub(super) files: BTreeMap<FileKey, Vec<Held<UProbeLinkId>>>,
    /// Files that could not be attached: not tried again while a container still has them.
    pub(super) failed: BTreeSet<FileKey>,
}

/// The attachment cookie of point (or site) `k` of hook `id`: what the program reads back.
fn cookie(id: u32, k: u32) -> u64 {
    u64::from(k) << 32 | u64::from(id)
}

impl Probes {
    pub(super) fn attach_up(
        &mut self,
        ebpf: &mut Ebpf,
        id: u32,
        t: &Target,
        u: &UprobeTarget,
        need: &UsdtUse,
    ) -> Result<(), ProbeError> {
        if let Some(probe) = &u.usdt {
            return self.attach_usdt(ebpf, id, t, u, probe, need);
        }
        ensure_loaded(ebpf, UPROBE_PROG, load_uprobe).map_err(|r| perr(t, r))?;
        let mut up = UpLinks {
            prog: UPROBE_PROG,
            links: Vec::with_capacity(u.points.len()),
            sites: 0,
            files: BTreeMap::new(),
            failed: BTreeSet::new(),
        };
        if u.in_container {
            // Attached per container file by `follow_containers`, right after the switch.
            self.ups.insert(id, up);
            info!(
                "observing {} in each selected container (hook {id})",
                hook_label(t)
            );
            return Ok(());
        }
        for (k, p) in u.points.iter().enumerate() {
            let r = point_location(k, p).and_then(|(location, k)| {
                let pin = format!("hook{id}-{k}");
                self.attach_at(ebpf, UPROBE_PROG, id, k, &u.path, location, &pin)
            });
            match r {
                Ok(link) => up.links.push(link),
                Err(r) => {
                    release_all(ebpf, up, t);
                    return Err(perr(t, format!("at {p}: {r}")));
                }
            }
        }
        self.ups.insert(id, up);
        info!("observing {} (hook {id})", hook_label(t));
        Ok(())
    }

    /// A USDT probe: its sites are read from the file's notes now, not when the policy was
    /// checked (the file may change between policy and node). Each site's argument spec is
    /// written before it is attached, so the program never runs at a site without one.
    /// `need`: what its policies read and `Set`, which every site must have.
    fn attach_usdt(
        &mut self,
        ebpf: &mut Ebpf,
        id: u32,
        t: &Target,
        u: &UprobeTarget,
        probe: &UsdtProbe,
        need: &UsdtUse,
    ) -> Result<(), ProbeError> {
        let sites = usdt::sites(Path::new(&u.path), &probe.provider, &probe.name)
            .map_err(|e| perr(t, e.to_string()))?;
        if let Some(s) = sites.iter().find(|s| s.semaphore != 0) {
            return Err(perr(
                t,
                format!(
                    "the probe is guarded by a semaphore (file offset {:#x}), which lsm-agent \
                     does not raise yet (aya 0.14 attaches uprobes without a reference counter \
                     offset): the probe would never fire",
                    s.semaphore
                ),
            ));
        }
        let specs = sites
            .iter()
            .map(spec_of)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|r| perr(t, r))?;
        for site in &sites {
            check_site(site, need).map_err(|r| perr(t, r))?;
        }
        let prog = if need.sets.is_empty() {
            USDT_PROG
        } else {
            USDT_SET_PROG
        };
        ensure_loaded(ebpf, prog, load_uprobe).map_err(|r| perr(t, r))?;
        let mut up = UpLinks {
            prog,
            links: Vec::with_capacity(sites.len()),
            sites: 0,
            files: BTreeMap::new(),
            failed: BTreeSet::new(),
        };
        for (k, (site, spec)) in sites.iter().zip(&specs).enumerate() {
            let r = u32::try_from(k)
                .map_err(|_| "more than 2^32 sites".to_string())
                .and_then(|k| {
                    specs_map(ebpf)?
                        .insert(cookie(id, k), spec, 0)
                        .map_err(|e| format!("{USDT_SPECS_MAP}: {e}"))?;
                    up.sites = k + 1;
                    let at = UProbeAttachLocation::AbsoluteOffset(site.offset);
                    self.attach_at(ebpf, prog, id, k, &u.path, at, &format!("hook{id}-{k}"))
                });
            match r {
                Ok(link) => up.links.push(link),
                Err(r) => {
                    release_all(ebpf, up, t);
                    return Err(perr(
                        t,
                        format!("at the site at file offset {:#x}: {r}", site.offset),
                    ));
                }
            }
        }
        info!(
            "observing {} at {} site(s) (hook {id})",
            hook_label(t),
            sites.len()
        );
        self.ups.insert(id, up);
        Ok(())
    }

    /// Attaches `prog` at `location` of `file` for point `k` of hook `id`, and pins it as
    /// `pin` (unique per attachment).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn attach_at(
        &self,
        ebpf: &mut Ebpf,
        prog_name: &'static str,
        id: u32,
        k: u32,
        file: &str,
        location: UProbeAttachLocation<'_>,
        pin: &str,
    ) -> Result<Held<UProbeLinkId>, String> {
        let prog: &mut UProbe =
            program(ebpf, prog_name).map_err(|e| format!("{prog_name}: {e}"))?;
        let link_id = prog
            .attach(
                UProbeAttachPoint {
                    location,
                    cookie: Some(cookie(id, k)),
                },
                file,
                UProbeScope::AllProcesses,
            )
            .map_err(|e| format!("attaching: {}", error_chain(&e)))?;
        hold(self.links_dir.as_deref(), prog_name, pin, link_id, |l| {
            prog.take_link(l)
        })
    }

    /// Detaches uprobe or USDT hook `id`, if it is one.
    pub(super) fn detach_up(&mut self, ebpf: &mut Ebpf, id: u32, t: &Target) -> bool {
        let Some(up) = self.ups.remove(&id) else {
            return false;
        };
        let sites = up.sites;
        release_all(ebpf, up, t);
        if sites > 0
            && let Ok(mut m) = specs_map(ebpf)
        {
            for k in 0..sites {
                let _ = m.remove(&cookie(id, k));
            }
        }
        true
    }
}

/// Where point `k` of a uprobe is, and `k` as the cookie's half.
pub(super) fn point_location(
    k: usize,
    p: &UprobePoint,
) -> Result<(UProbeAttachLocation<'_>, u32), String> {
    let location = match &p.symbol {
        Some(s) if p.offset == 0 => UProbeAttachLocation::Symbol(s),
        Some(s) => UProbeAttachLocation::SymbolOffset(s, p.offset),
        None => UProbeAttachLocation::AbsoluteOffset(p.offset),
    };
    let k = u32::try_from(k).map_err(|_| "more than 2^32 points".to_string())?;
    Ok((location, k))
}

/// Detaches every link of `up` (and, for a USDT hook, leaves its specs to the caller).
fn release_all(ebpf: &mut Ebpf, up: UpLinks, t: &Target) {
    release_links(ebpf, up.prog, up.links, t);
    for links in up.files.into_values() {
        release_links(ebpf, up.prog, links, t);
    }
}

/// Detaches `links` of program `prog` (of hook `t`).
pub(super) fn release_links(
    ebpf: &mut Ebpf,
    prog: &'static str,
    links: Vec<Held<UProbeLinkId>>,
    t: &Target,
) {
    for link in links {
        if let Err(e) = release(link, |l| program::<UProbe>(ebpf, prog)?.detach(l)) {
            warn!("detaching {}: {e}", hook_label(t));
        }
    }
}

/// Whether `site` passes what the policies need: as many arguments as they read, and those
/// they `Set` in the process's memory (a uprobe program cannot change a register, and a
/// constant is nowhere).
fn check_site(site: &UsdtSite, need: &UsdtUse) -> Result<(), String> {
    if site.args.len() < need.read {
        return Err(format!(
            "the policies read argument {}, and the site at file offset {:#x} passes {} \
             ({:?})",
            need.read - 1,
            site.offset,
            site.args.len(),
            site.spec
        ));
    }
    for &pos in &need.sets {
        match site.args.get(pos as usize).map(|a| a.loc) {
            Some(UsdtLoc::Deref { .. } | UsdtLoc::Sib { .. }) => {}
            Some(_) => {
                return Err(format!(
                    "Set writes argument {pos}, which the site at file offset {:#x} passes \
                     in a register or as a constant ({:?}), not in memory: it cannot be set",
                    site.offset, site.spec
                ));
            }
            None => {
                return Err(format!(
                    "Set writes argument {pos}, which the site at file offset {:#x} does not \
                     have ({:?})",
                    site.offset, site.spec
                ));
            }
        }
    }
    Ok(())
}

fn specs_map(ebpf: &mut Ebpf) -> Result<HashMap<&mut MapData, u64, UsdtSpec>, String> {
    let map = ebpf
        .map_mut(USDT_SPECS_MAP)
        .ok_or_else(|| format!("no map {USDT_SPECS_MAP}"))?;
    HashMap::try_from(map).map_err(|e| format!("{USDT_SPECS_MAP}: {e}"))
}

/// How the program computes a site's arguments: its first [`MAX_ARGS`] (a policy's argument
/// index is at most 4; the others cannot be named).
fn spec_of(site: &UsdtSite) -> Result<UsdtSpec, String> {
    let mut spec = UsdtSpec::default();
    for (slot, a) in spec.args.iter_mut().zip(&site.args).take(MAX_ARGS) {
        *slot = arg_of(a).map_err(|r| format!("argument spec {:?}: {r}", site.spec))?;
    }
    Ok(spec)
}

fn arg_of(a: &UsdtArgSpec) -> Result<UsdtArg, String> {
    let reg = |off: u16| u8::try_from(off).map_err(|_| format!("register offset {off}"));
    let mut arg = UsdtArg {
        size: a.size,
        signed: u8::from(a.signed),
        ..UsdtArg::default()
    };
    match a.loc {
        UsdtLoc::Const(v) => {
            arg.kind = USDT_CONST;
            arg.off = v as u64;
        }
        UsdtLoc::Reg { reg: r } => {
            arg.kind = USDT_REG;
            arg.reg = reg(r)?;
        }
        UsdtLoc::Deref { reg: r, off } => {
            arg.kind = USDT_DEREF;
            arg.reg = reg(r)?;
            arg.off = off as u64;
        }
        UsdtLoc::Sib {
            base,
            index,
            scale_shift,
            off,
        } => {
            arg.kind = USDT_SIB;
            arg.reg = reg(base)?;
            arg.index = reg(index)?;
            arg.scale = scale_shift;
            arg.off = off as u64;
        }
    }
    Ok(arg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(spec: &str) -> UsdtSite {
        UsdtSite {
            offset: 0x1000,
            semaphore: 0,
            args: usdt::parse_args(spec).unwrap(),
            spec: spec.to_string(),
        }
    }

    #[test]
    fn a_sites_arguments_become_the_programs_specs_in_order() {
        let s = spec_of(&site("-4@%edi 8@-8(%rbp) -2@$-3 1@16(%rax,%rcx,4)")).unwrap();
        assert_eq!(
            s.args[0],
            UsdtArg {
                kind: USDT_REG,
                reg: 112,
                size: 4,
                signed: 1,
                ..UsdtArg::default()
            }
        );
        assert_eq!(
            s.args[1],
            UsdtArg {
                kind: USDT_DEREF,
                reg: 32,
                off: (-8i64) as u64,
                size: 8,
                ..UsdtArg::default()
            }
        );
        assert_eq!(
            s.args[2],
            UsdtArg {
                kind: USDT_CONST,
                off: (-3i64) as u64,
                size: 2,
                signed: 1,
                ..UsdtArg::default()
            }
        );
        assert_eq!(
            s.args[3],
            UsdtArg {
                kind: USDT_SIB,
                reg: 80,
                index: 88,
                scale: 2,
                off: 16,
                size: 1,
                ..UsdtArg::default()
            }
        );
        assert_eq!(s.args[4], UsdtArg::default(), "no fifth argument: none");
    }

    #[test]
    fn arguments_past_the_fifth_are_left_out() {
        let s = spec_of(&site("8@%rdi 8@%rsi 8@%rdx 8@%rcx 8@%r8 8@%r9")).unwrap();
        assert_eq!(s.args[4].reg, 72, "the fifth is %r8");
    }

    fn sets(sets: &[u32]) -> UsdtUse {
        UsdtUse {
            read: 0,
            sets: sets.to_vec(),
        }
    }

    #[test]
    fn set_needs_its_argument_in_memory_at_every_site() {
        let s = site("-4@%edi 8@-8(%rbp) -4@$5 1@16(%rax,%rcx,4)");
        assert!(check_site(&s, &sets(&[1, 3])).is_ok());
        let e = check_site(&s, &sets(&[0])).unwrap_err();
        assert!(e.contains("in a register or as a constant"), "{e}");
        assert!(
            check_site(&s, &sets(&[2])).is_err(),
            "a constant cannot be set"
        );
        let e = check_site(&s, &sets(&[4])).unwrap_err();
        assert!(e.contains("does not have"), "{e}");
    }

    #[test]
    fn a_site_with_fewer_arguments_than_the_policies_read_is_refused() {
        let s = site("-4@%edi 8@%rsi");
        let read = |n| UsdtUse {
            read: n,
            sets: Vec::new(),
        };
        assert!(check_site(&s, &read(2)).is_ok());
        let e = check_site(&s, &read(3)).unwrap_err();
        assert!(e.contains("read argument 2"), "{e}");
        assert!(e.contains("passes 2"), "{e}");
    }

    #[test]
    fn cookies_carry_the_hook_id_low_and_the_site_high() {
        assert_eq!(cookie(33, 2), 0x0000_0002_0000_0021);
    }
}
