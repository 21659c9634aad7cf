//! `resolve` paths → [`ResolvePath`]s: the struct members a policy follows from an argument
//! (`mm.owner.real_parent.comm`), looked up in the running kernel's BTF as byte offsets and
//! pointer loads, the way Tetragon's loader does it. The kernel then walks them with no
//! knowledge of the types.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use btf_rs::{Btf, Type};
use lsm_shared::{
    ARG_BUF, ARG_DNS, ARG_I32_ARR, ARG_INT, ARG_IOV_ITER, ARG_KCAP, ARG_STR, ARG_USTR,
    MAX_RESOLVE_DEPTH, ResolvePath,
};

use crate::policy::compile::{DATA_RESOLVE_POS, MapImage};
use crate::policy::probes::{BtfRoot, ResolveReq, hook_label};

/// A `resolve` path the running kernel does not have.
#[derive(Debug, thiserror::Error)]
#[error("{hook}: {place}: resolve \"{path}\": {reason}", place = place(*.pos))]
pub struct ResolveError {
    pub hook: String,
    pub pos: u32,
    pub path: String,
    pub reason: String,
}

/// Where resolve position `pos` is in the policy: an argument, or a `data` entry past them.
fn place(pos: u32) -> String {
    match pos.checked_sub(DATA_RESOLVE_POS) {
        Some(d) => format!("data[{d}]"),
        None => format!("argument {pos}"),
    }
}

/// The walks of an image's `resolve` paths, `(hook, position)` → the walk and the width of
/// the integer it ends on (0: not an integer).
pub type Plans = BTreeMap<(u32, u32), (ResolvePath, u8)>;

/// Turns `resolve` paths into walks, remembering each: the kernel's BTF is parsed only when a
/// path is new (seconds under emulation), and not kept (tens of MiB).
#[derive(Default)]
pub struct Resolver {
    done: HashMap<ResolveReq, (ResolvePath, u8)>,
}

impl Resolver {
    /// The walks of every path of `img`, or the first one the kernel does not have.
    pub fn plans(&mut self, img: &MapImage) -> Result<Plans, ResolveError> {
        let fail = |hook: u32, pos: u32, req: &ResolveReq, reason: String| ResolveError {
            hook: img
                .probes
                .get(&hook)
                .map(hook_label)
                .or_else(|| {
                    crate::policy::ir::LsmHook::of_hook_id(hook).map(|(h, _)| h.name().to_string())
                })
                .unwrap_or_else(|| format!("hook {hook}")),
            pos,
            path: req.members.join("."),
            reason,
        };
        let mut btf: Option<Btf> = None;
        let mut out = Plans::new();
        for (&(hook, pos), req) in &img.resolve {
            if !self.done.contains_key(req) {
                if btf.is_none() {
                    let b = super::btf::open(Path::new(super::btf::VMLINUX_BTF))
                        .map_err(|e| fail(hook, pos, req, e.to_string()))?;
                    btf = Some(b);
                }
                let Some(b) = btf.as_ref() else { continue };
                let walk = resolve(b, req).map_err(|r| fail(hook, pos, req, r))?;
                self.done.insert(req.clone(), walk);
            }
            if let Some(w) = self.done.get(req) {
                out.insert((hook, pos), *w);
            }
        }
        Ok(out)
    }
}

/// The walk of `req` in `btf`, and the width of the integer it ends on (0 for anything
/// else), or why the kernel has no such path.
pub fn resolve(btf: &Btf, req: &ResolveReq) -> Result<(ResolvePath, u8), String> {
    let cur = root_type(btf, &req.root)?;
    // The raw argument is a pointer: the first member is at an offset from where it points.
    // The current task's address is that of the struct itself.
    let mut cur = match strip(btf, cur)? {
        s @ Type::Struct(_) if req.root == BtfRoot::CurrentTask => s,
        Type::Ptr(p) => strip(btf, chained(btf, &p)?)?,
        other => {
            return Err(format!(
                "{} is a {}, not a pointer to a struct",
                root_name(&req.root),
                other.name()
            ));
        }
    };
    let mut path = ResolvePath::empty();
    let mut done: Vec<&str> = Vec::new();
    let mut member_ty = Type::Void;
    for (j, name) in req.members.iter().enumerate() {
        if j >= MAX_RESOLVE_DEPTH {
            return Err(format!(
                "at most {MAX_RESOLVE_DEPTH} members can be followed"
            ));
        }
        let (Type::Struct(s) | Type::Union(s)) = &cur else {
            return Err(format!(
                "{} is a {}, which has no member {name}",
                where_(&req.root, &done),
                cur.name()
            ));
        };
        let Some((bits, ty, bitfield)) = find_member(btf, &s.members, name, 0)? else {
            let sname = btf.resolve_name(s).unwrap_or_default();
            return Err(format!(
                "{}: struct {sname} has no member {name}",
                where_(&req.root, &done)
            ));
        };
        if bitfield || bits % 8 != 0 {
            return Err(format!("member {name} is a bit field"));
        }
        path.off[j] = u32::try_from(bits / 8).map_err(|_| format!("member {name}: offset"))?;
        path.steps = j as u8 + 1;
        done.push(name);
        member_ty = strip(btf, ty)?;
        // A pointer member is loaded before the next member's offset is added.
        cur = match &member_ty {
            Type::Ptr(p) if j + 1 < req.members.len() => {
                path.load |= 1 << j;
                strip(btf, chained(btf, p)?)?
            }
            other => other.clone(),
        };
    }
    let last = req.members.len().saturating_sub(1);
    let width = final_read(btf, &member_ty, req.kind, &req.members.join("."))?;
    // An integer (or a pointer read as one) ends on its address: the reader reads exactly
    // its `width` bytes there. Any other pointer is loaded for its kind's reader.
    if width.is_none() && matches!(member_ty, Type::Ptr(_)) {
        path.load |= 1 << last;
    }
    Ok((path, width.unwrap_or(0)))
}

/// Whether a value of `ty` can be read as descriptor kind `kind`: `Some(width)` when the
/// member is read as an integer of that width at its address, `None` when the walk ends on a
/// pointer (loaded) or on the member's address (an array or embedded struct).
fn final_read(btf: &Btf, ty: &Type, kind: u8, path: &str) -> Result<Option<u8>, String> {
    let int_width = match ty {
        Type::Int(i) => Some(i.size()),
        Type::Enum(e) => Some(e.size()),
        Type::Enum64(e) => Some(e.size()),
        _ => None,
    };
    let numeric = kind == ARG_INT;
    match (ty, int_width) {
        (_, Some(w)) if numeric && matches!(w, 1 | 2 | 4 | 8) => Ok(Some(w as u8)),
        // A pointer's value as a number: its 8 bytes.
        (Type::Ptr(_), _) if numeric => Ok(Some(8)),
        // A capability set is read where it is (its kind takes a pointer to the 64 bits).
        (_, Some(8)) if kind == ARG_KCAP => Ok(None),
        (_, Some(_)) => Err(format!(
            "{path} is an integer: declare an integer type for it"
        )),
        (Type::Ptr(_), _) => Ok(None),
        (Type::Array(a), _) if kind == ARG_STR || kind == ARG_USTR => {
            match strip(btf, chained(btf, a)?)? {
                Type::Int(i) if i.size() == 1 => Ok(None),
                other => Err(format!(
                    "{path} is an array of {}, not of characters",
                    other.name()
                )),
            }
        }
        (Type::Struct(_) | Type::Union(_), _)
            if !numeric
                && !matches!(
                    kind,
                    ARG_STR | ARG_USTR | ARG_BUF | ARG_I32_ARR | ARG_DNS | ARG_IOV_ITER
                ) =>
        {
            // An embedded struct (a file's `f_path`): its address is the pointer the kind reads.
            Ok(None)
        }
        (other, _) => Err(format!(
            "{path} is a {}, which the declared type cannot read",
            other.name()
        )),
    }
}

/// The type of the root parameter.
fn root_type(btf: &Btf, root: &BtfRoot) -> Result<Type, String> {
    let (name, param) = match root {
        BtfRoot::CurrentTask => {
            let types = btf
                .resolve_types_by_name("task_struct")
                .map_err(|_| "the kernel's BTF has no struct task_struct".to_string())?;
            return types
                .into_iter()
                .find(|t| matches!(t, Type::Struct(s) if !s.members.is_empty()))
                .ok_or_else(|| "the kernel's BTF has no struct task_struct".to_string());
        }
        BtfRoot::Func { name, param } => (name.clone(), *param as usize),
        // Parameter 0 of a tracepoint's prototype is the tracing context.
        BtfRoot::Tracepoint { event, param } => (format!("btf_trace_{event}"), *param as usize + 1),
    };
    let types = btf
        .resolve_types_by_name(&name)
        .map_err(|_| format!("the kernel's BTF has no {name}"))?;
    for t in types {
        let mut cur = match &t {
            Type::Func(f) => chained(btf, f)?,
            Type::Typedef(td) => chained(btf, td)?,
            _ => continue,
        };
        // Bounded: a (qualified) pointer to the prototype, for a tracepoint's typedef.
        for _ in 0..4 {
            cur = match cur {
                Type::FuncProto(p) => {
                    let Some(prm) = p.parameters.get(param) else {
                        // A tracepoint's first parameter is its context, not an argument.
                        let skip = usize::from(matches!(root, BtfRoot::Tracepoint { .. }));
                        return Err(format!(
                            "{} does not exist: it has {} argument(s), counted from 0",
                            root_name(root),
                            p.parameters.len().saturating_sub(skip)
                        ));
                    };
                    return chained(btf, prm);
                }
                Type::Ptr(p) => chained(btf, &p)?,
                Type::Const(c) | Type::Volatile(c) | Type::Restrict(c) => chained(btf, &c)?,
                Type::Typedef(t) => chained(btf, &t)?,
                _ => break,
            };
        }
    }
    Err(format!("the kernel's BTF has no function {name}"))
}

fn root_name(root: &BtfRoot) -> String {
    match root {
        BtfRoot::Func { name, param } => format!("argument {param} of {name}"),
        BtfRoot::Tracepoint { event, param } => format!("argument {param} of tracepoint {event}"),
        BtfRoot::CurrentTask => "the current task".to_string(),
    }
}

fn where_(root: &BtfRoot, done: &[&str]) -> String {
    if done.is_empty() {
        root_name(root)
    } else {
        done.join(".")
    }
}

fn chained<T: btf_rs::BtfType + ?Sized>(btf: &Btf, t: &T) -> Result<Type, String> {
    btf.resolve_chained_type(t)
        .map_err(|e| format!("kernel BTF: {e}"))
}

/// `ty` without typedefs and qualifiers (bounded: BTF chains them a few deep at most).
fn strip(btf: &Btf, mut ty: Type) -> Result<Type, String> {
    for _ in 0..16 {
        ty = match ty {
            Type::Typedef(t) => chained(btf, &t)?,
            Type::Const(c) | Type::Volatile(c) | Type::Restrict(c) => chained(btf, &c)?,
            Type::TypeTag(t) => chained(btf, &t)?,
            other => return Ok(other),
        };
    }
    Err("kernel BTF: a type chain too deep".to_string())
}

/// Member `field` of a struct's `members`, looking through anonymous structs and unions:
/// its bit offset from `base_bits`, its type, and whether it is a bit field.
fn find_member(
    btf: &Btf,
    members: &[btf_rs::Member],
    field: &str,
    base_bits: u64,
) -> Result<Option<(u64, Type, bool)>, String> {
    for m in members {
        let name = btf.resolve_name(m).unwrap_or_default();
        let bits = base_bits + u64::from(m.bit_offset());
        if name == field {
            let bitfield = m.bitfield_size().is_some_and(|b| b != 0);
            return Ok(Some((bits, chained(btf, m)?, bitfield)));
        }
        if name.is_empty()
            && let Type::Struct(s) | Type::Union(s) = strip(btf, chained(btf, m)?)?
            && let Some(found) = find_member(btf, &s.members, field, bits)?
        {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use lsm_shared::ARG_FILE;

    use super::*;

    fn req(root: BtfRoot, path: &str, kind: u8) -> ResolveReq {
        ResolveReq {
            root,
            members: path.split('.').map(str::to_string).collect(),
            kind,
        }
    }

    #[test]
    fn an_error_names_the_argument_or_the_data_entry() {
        let e = |pos| ResolveError {
            hook: "socket_connect".into(),
            pos,
            path: "cred.nope".into(),
            reason: "no member nope".into(),
        };
        assert_eq!(
            e(1).to_string(),
            "socket_connect: argument 1: resolve \"cred.nope\": no member nope"
        );
        assert_eq!(
            e(DATA_RESOLVE_POS + 1).to_string(),
            "socket_connect: data[1]: resolve \"cred.nope\": no member nope"
        );
    }

    fn lsm(hook: &str, param: u32) -> BtfRoot {
        BtfRoot::Func {
            name: format!("bpf_lsm_{hook}"),
            param,
        }
    }

    /// The host's BTF (the tests of `btf.rs` read it too): offsets are checked against
    /// `field_offset`, which the agent's own kernel reads rely on.
    fn host() -> Option<Btf> {
        let p = Path::new(super::super::btf::VMLINUX_BTF);
        p.exists().then(|| Btf::from_file(p).expect("host BTF"))
    }

    #[test]
    fn a_path_through_pointers_loads_each_pointer_and_ends_on_a_char_array() {
        let Some(btf) = host() else { return };
        let off = |s: &str, f: &str| super::super::btf::field_offset(&btf, s, f).unwrap() as u32;
        let r = req(
            lsm("bprm_check_security", 0),
            "mm.owner.real_parent.comm",
            ARG_STR,
        );
        let (p, width) = resolve(&btf, &r).expect("resolves");
        assert_eq!(p.steps, 4);
        assert_eq!(
            &p.off[..4],
            &[
                off("linux_binprm", "mm"),
                off("mm_struct", "owner"),
                off("task_struct", "real_parent"),
                off("task_struct", "comm")
            ]
        );
        // Three pointers loaded; the array's address is the string.
        assert_eq!(p.load, 0b0111);
        assert_eq!(width, 0);
    }

    #[test]
    fn an_integer_member_is_read_at_its_address_with_its_width_and_an_embedded_struct_is_its_address()
     {
        let Some(btf) = host() else { return };
        let (p, width) =
            resolve(&btf, &req(lsm("file_open", 0), "f_flags", ARG_INT)).expect("resolves");
        assert_eq!((p.steps, p.load, width), (1, 0, 4));
        let (p, _) = resolve(
            &btf,
            &req(lsm("file_open", 0), "f_path", lsm_shared::ARG_PATH),
        )
        .expect("resolves");
        assert_eq!((p.steps, p.load), (1, 0));
    }

    #[test]
    fn a_capability_set_in_a_struct_is_read_at_its_address() {
        let Some(btf) = host() else { return };
        let (p, width) = resolve(
            &btf,
            &req(
                BtfRoot::CurrentTask,
                "cred.cap_effective",
                lsm_shared::ARG_KCAP,
            ),
        )
        .expect("resolves");
        // The cred pointer is loaded; the set embedded in it is not.
        assert_eq!((p.steps, p.load, width), (2, 0b01, 0));
    }

    #[test]
    fn a_path_from_the_current_task_starts_at_the_struct_itself() {
        let Some(btf) = host() else { return };
        let (p, _) = resolve(
            &btf,
            &req(BtfRoot::CurrentTask, "real_parent.comm", ARG_STR),
        )
        .expect("resolves");
        assert_eq!((p.steps, p.load), (2, 0b01));
    }

    #[test]
    fn a_missing_member_or_a_type_that_cannot_be_read_is_named() {
        let Some(btf) = host() else { return };
        let e = resolve(&btf, &req(lsm("file_open", 0), "f_nope", ARG_INT)).unwrap_err();
        assert!(e.contains("struct file has no member f_nope"), "{e}");
        let e = resolve(&btf, &req(lsm("file_open", 0), "f_flags", ARG_STR)).unwrap_err();
        assert!(e.contains("f_flags is an integer"), "{e}");
        let e = resolve(&btf, &req(lsm("file_open", 0), "f_flags.x", ARG_FILE)).unwrap_err();
        assert!(e.contains("f_flags is a"), "{e}");
        let e = resolve(&btf, &req(lsm("file_open", 3), "f_flags", ARG_INT)).unwrap_err();
        assert!(
            e.contains("argument 3 of bpf_lsm_file_open does not exist"),
            "{e}"
        );
    }
}
