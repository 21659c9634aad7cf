//! USDT (SystemTap SDT) probes of an ELF file, read on the loader side.
//!
//! A USDT probe is a `nop` in the traced program plus a note in its `.note.stapsdt` section
//! that gives the `nop`'s address and how to find each argument at that point (a register, a
//! constant or a memory operand, as the compiler chose). To trace probe `provider:name` the
//! agent attaches a uprobe at the file offset of every such `nop` and has the BPF program
//! compute the arguments from `struct pt_regs`; this module turns the notes into those file
//! offsets and argument locations. It only parses: no BPF, no privileges. Only 64-bit
//! little-endian x86_64 files are supported, because the register offsets are x86_64's.
//!
//! The note format is SystemTap's (version 3 notes, what `sys/sdt.h` emits): owner
//! `stapsdt`, type 3, and a descriptor of three 64-bit addresses (probe pc, link-time address
//! of `.stapsdt.base`, semaphore) followed by NUL-terminated provider, name and argument
//! string.

use std::{fs::File, path::Path};

use object::{
    LittleEndian as LE, ReadRef,
    elf::{self, FileHeader64, ProgramHeader64},
    read::{
        ReadCache,
        elf::{FileHeader, ProgramHeader, SectionHeader},
    },
};

/// The section holding the probes' notes.
const NOTE_SECTION: &[u8] = b".note.stapsdt";
/// A one-byte section whose address each note records at link time: the difference to its
/// address now is how far prelink (or a similar rewrite) moved the file.
const BASE_SECTION: &[u8] = b".stapsdt.base";
const NOTE_OWNER: &[u8] = b"stapsdt";
/// Version 3 notes; earlier versions have a different descriptor and are not emitted anymore.
const NOTE_TYPE: u32 = 3;
/// The most arguments a probe may have, as `sys/sdt.h` and libbpf's BPF side allow.
pub const MAX_ARGS: usize = 12;
/// How many `provider:name` pairs an unknown-probe error lists.
const LISTED_PROBES: usize = 10;

/// Where an argument lives at the probe site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsdtLoc {
    /// `$imm`: a constant.
    Const(i64),
    /// `%reg`: the register's value. `reg` is the byte offset of that register in x86_64
    /// `struct pt_regs`.
    Reg { reg: u16 },
    /// `off(%reg)`: memory at register + off.
    Deref { reg: u16, off: i64 },
    /// `off(%base,%index,scale)`: memory at base + index*scale + off. `scale_shift` is
    /// log2(scale) (scale 1,2,4,8).
    Sib {
        base: u16,
        index: u16,
        scale_shift: u8,
        off: i64,
    },
}

/// One argument of a probe: where it is and how the BPF side narrows the 8 bytes it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsdtArgSpec {
    /// 1, 2, 4 or 8 bytes.
    pub size: u8,
    /// Sign-extended from `size` bytes when set, zero-extended otherwise.
    pub signed: bool,
    pub loc: UsdtLoc,
}

/// One place in the file where a probe fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsdtSite {
    /// File offset of the probe's instruction: what a uprobe attaches at.
    pub offset: u64,
    /// File offset of the probe's semaphore (reference counter), 0 when it has none.
    pub semaphore: u64,
    pub args: Vec<UsdtArgSpec>,
    /// The argument string as written in the note, for messages.
    pub spec: String,
}

/// Why a probe's sites cannot be had; each message names the file and, once the probe is
/// found, the probe, so that a policy's author can tell which uprobe spec to fix.
#[derive(Debug, thiserror::Error)]
pub enum UsdtError {
    #[error("{file}: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: not an ELF file")]
    NotElf { file: String },
    #[error(
        "{file}: {what}; USDT probes are supported in 64-bit little-endian x86_64 ELF files only"
    )]
    Unsupported { file: String, what: String },
    #[error("{file}: malformed ELF file: {reason}")]
    Malformed { file: String, reason: String },
    #[error("{file}: no USDT probes: the file has no .note.stapsdt section")]
    NoNotes { file: String },
    #[error("{file}: no USDT probe {provider}:{name}; {available}")]
    NoSuchProbe {
        file: String,
        provider: String,
        name: String,
        /// Which probes the file has, in words.
        available: String,
    },
    #[error("{file}: probe {probe}: no {segment} segment maps its {what} address {addr:#x}")]
    NoSegment {
        file: String,
        probe: String,
        /// "instruction" or "semaphore".
        what: &'static str,
        addr: u64,
        /// "executable PT_LOAD" for the instruction, where the uprobe goes.
        segment: &'static str,
    },
    #[error("{file}: probe {probe} at {pc:#x}: arguments {spec:?}: {source}")]
    Args {
        file: String,
        probe: String,
        pc: u64,
        spec: String,
        #[source]
        source: Box<UsdtError>,
    },
    #[error("argument {arg:?}: {reason}")]
    Arg { arg: String, reason: String },
    #[error("{count} arguments in {spec:?}: a USDT probe has at most {MAX_ARGS}")]
    TooManyArgs { spec: String, count: usize },
}

/// Every site of probe `provider:name` in the ELF file at `path`, in note order. An empty Vec
/// is never returned: no site is an error naming the probes the file does have, or saying it
/// has no `.note.stapsdt` section.
///
/// The file is read through a cache of the ranges parsed (headers, the note section), not
/// whole: traced libraries can be hundreds of megabytes.
pub fn sites(path: &Path, provider: &str, name: &str) -> Result<Vec<UsdtSite>, UsdtError> {
    let file = path.display().to_string();
    let f = File::open(path).map_err(|source| UsdtError::Read {
        file: file.clone(),
        source,
    })?;
    let cache = ReadCache::new(f);
    sites_from(&cache, &file, provider, name)
}

/// The same from the bytes of an ELF file, by the parser [`sites`] runs over the file (unit
/// tests use this). `file` is only for messages.
pub fn sites_in(
    data: &[u8],
    file: &str,
    provider: &str,
    name: &str,
) -> Result<Vec<UsdtSite>, UsdtError> {
    sites_from(data, file, provider, name)
}

/// One stapsdt note, as written (addresses not yet adjusted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Note<'d> {
    pc: u64,
    base: u64,
    semaphore: u64,
    provider: &'d [u8],
    name: &'d [u8],
    args: &'d [u8],
}

fn sites_from<'d, R: ReadRef<'d>>(
    data: R,
    file: &str,
    provider: &str,
    name: &str,
) -> Result<Vec<UsdtSite>, UsdtError> {
    let malformed = |reason: &dyn std::fmt::Display| UsdtError::Malformed {
        file: file.to_string(),
        reason: reason.to_string(),
    };
    let header = elf_header(data, file)?;
    let sections = header.sections(LE, data).map_err(|e| malformed(&e))?;
    let segments = header
        .program_headers(LE, data)
        .map_err(|e| malformed(&e))?;
    let base_now = sections
        .section_by_name(LE, BASE_SECTION)
        .map(|(_, s)| s.sh_addr(LE));

    let mut notes = Vec::new();
    let mut note_sections = 0;
    for section in sections.iter() {
        if sections.section_name(LE, section) != Ok(NOTE_SECTION) {
            continue;
        }
        let Some(mut it) = section.notes(LE, data).map_err(|e| malformed(&e))? else {
            continue;
        };
        note_sections += 1;
        while let Some(note) = it.next().map_err(|e| malformed(&e))? {
            if note.name() != NOTE_OWNER || note.n_type(LE) != NOTE_TYPE {
                continue;
            }
            let parsed = parse_desc(note.desc()).ok_or_else(|| {
                malformed(&format_args!(
                    "stapsdt note {} is truncated or lacks its NUL-terminated strings",
                    notes.len() + 1
                ))
            })?;
            notes.push(parsed);
        }
    }
    if note_sections == 0 {
        return Err(UsdtError::NoNotes { file: file.into() });
    }

    let probe = format!("{provider}:{name}");
    let mut sites = Vec::new();
    for note in notes
        .iter()
        .filter(|n| n.provider == provider.as_bytes() && n.name == name.as_bytes())
    {
        // Prelink moves the file's sections but not the notes (they are not loaded): the
        // move is what .stapsdt.base moved by.
        let adjust = |addr: u64| match base_now {
            Some(now) if note.base != 0 => addr.wrapping_add(now.wrapping_sub(note.base)),
            _ => addr,
        };
        let no_segment = |what, addr, segment| UsdtError::NoSegment {
            file: file.into(),
            probe: probe.clone(),
            what,
            addr,
            segment,
        };
        let pc = adjust(note.pc);
        let offset = file_offset(segments, pc, true)
            .ok_or_else(|| no_segment("instruction", pc, "executable PT_LOAD"))?;
        let semaphore = match note.semaphore {
            0 => 0,
            addr => {
                let addr = adjust(addr);
                file_offset(segments, addr, false)
                    .ok_or_else(|| no_segment("semaphore", addr, "PT_LOAD"))?
            }
        };
        let spec = String::from_utf8_lossy(note.args).into_owned();
        let args = parse_args(&spec).map_err(|e| UsdtError::Args {
            file: file.into(),
            probe: probe.clone(),
            pc,
            spec: spec.clone(),
            source: Box::new(e),
        })?;
        sites.push(UsdtSite {
            offset,
            semaphore,
            args,
            spec,
        });
    }
    if sites.is_empty() {
        return Err(UsdtError::NoSuchProbe {
            file: file.into(),
            provider: provider.into(),
            name: name.into(),
            available: available(&notes),
        });
    }
    Ok(sites)
}

/// The file header, once the file is known to be one this module reads: checked by hand
/// first so that a 32-bit, big-endian or foreign file gets a message saying which it is.
fn elf_header<'d, R: ReadRef<'d>>(data: R, file: &str) -> Result<&'d FileHeader64<LE>, UsdtError> {
    let unsupported = |what: String| UsdtError::Unsupported {
        file: file.into(),
        what,
    };
    let ident = data
        .read_bytes_at(0, 16)
        .map_err(|()| UsdtError::NotElf { file: file.into() })?;
    if ident[..4] != elf::ELFMAG {
        return Err(UsdtError::NotElf { file: file.into() });
    }
    if ident[4] != elf::ELFCLASS64 {
        return Err(unsupported("a 32-bit ELF file".into()));
    }
    if ident[5] != elf::ELFDATA2LSB {
        return Err(unsupported("a big-endian ELF file".into()));
    }
    let header = FileHeader64::<LE>::parse(data).map_err(|e| UsdtError::Malformed {
        file: file.into(),
        reason: e.to_string(),
    })?;
    let machine = header.e_machine(LE);
    if machine != elf::EM_X86_64 {
        return Err(unsupported(format!(
            "an ELF file for machine {machine} (e_machine; x86_64 is {})",
            elf::EM_X86_64
        )));
    }
    // A relocatable object's addresses are section-relative and it has no segments.
    let kind = header.e_type(LE);
    if kind != elf::ET_EXEC && kind != elf::ET_DYN {
        return Err(unsupported(format!(
            "ELF type {kind} (e_type), not an executable or shared object"
        )));
    }
    Ok(header)
}

/// Reads a note's descriptor; `None` when it is too short or a string is unterminated.
fn parse_desc(desc: &[u8]) -> Option<Note<'_>> {
    let word = |i: usize| -> Option<u64> {
        let bytes = desc.get(i * 8..i * 8 + 8)?;
        Some(u64::from_le_bytes(bytes.try_into().ok()?))
    };
    let (pc, base, semaphore) = (word(0)?, word(1)?, word(2)?);
    let mut rest = desc.get(24..)?;
    let mut cstr = || -> Option<&[u8]> {
        let end = rest.iter().position(|&b| b == 0)?;
        let s = &rest[..end];
        rest = &rest[end + 1..];
        Some(s)
    };
    Some(Note {
        pc,
        base,
        semaphore,
        provider: cstr()?,
        name: cstr()?,
        args: cstr()?,
    })
}

/// Converts a virtual address to a file offset with the loadable segment that maps it (an
/// executable one for probe instructions, where uprobes go).
fn file_offset(segments: &[ProgramHeader64<LE>], addr: u64, exec: bool) -> Option<u64> {
    segments
        .iter()
        .filter(|p| p.p_type(LE) == elf::PT_LOAD && (!exec || p.p_flags(LE) & elf::PF_X != 0))
        .find(|p| {
            let start = p.p_vaddr(LE);
            addr >= start && addr - start < p.p_memsz(LE)
        })
        .and_then(|p| (addr - p.p_vaddr(LE)).checked_add(p.p_offset(LE)))
}

/// "the file has probes a:b, c:d (and 3 more)", distinct pairs in note order.
fn available(notes: &[Note<'_>]) -> String {
    let mut pairs: Vec<(&[u8], &[u8])> = Vec::new();
    for n in notes {
        if !pairs.contains(&(n.provider, n.name)) {
            pairs.push((n.provider, n.name));
        }
    }
    if pairs.is_empty() {
        return "the file's .note.stapsdt section has no probes".into();
    }
    let listed: Vec<String> = pairs
        .iter()
        .take(LISTED_PROBES)
        .map(|(p, n)| {
            format!(
                "{}:{}",
                String::from_utf8_lossy(p),
                String::from_utf8_lossy(n)
            )
        })
        .collect();
    let mut text = format!("the file has probes {}", listed.join(", "));
    if pairs.len() > LISTED_PROBES {
        text += &format!(" (and {} more)", pairs.len() - LISTED_PROBES);
    }
    text
}

/// Parses a note's argument string, e.g. "-4@%edi 8@-8(%rbp) -4@$5 -1@-96(%rbp,%rax,8)":
/// space-separated `[-]SIZE@OPERAND`, where a negative size means signed. An empty string
/// means no arguments.
pub fn parse_args(spec: &str) -> Result<Vec<UsdtArgSpec>, UsdtError> {
    let args: Vec<&str> = spec.split_ascii_whitespace().collect();
    if args.len() > MAX_ARGS {
        return Err(UsdtError::TooManyArgs {
            spec: spec.into(),
            count: args.len(),
        });
    }
    args.into_iter()
        .map(|arg| {
            parse_arg(arg).map_err(|reason| UsdtError::Arg {
                arg: arg.into(),
                reason,
            })
        })
        .collect()
}

fn parse_arg(arg: &str) -> Result<UsdtArgSpec, String> {
    let (size, operand) = arg
        .split_once('@')
        .ok_or("expected SIZE@OPERAND, e.g. -4@%edi")?;
    let (signed, digits) = match size.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, size),
    };
    let size = match digits {
        "1" => 1,
        "2" => 2,
        "4" => 4,
        "8" => 8,
        _ => {
            return Err(format!(
                "size {size:?} is not 1, 2, 4 or 8 bytes (negative when signed)"
            ));
        }
    };
    Ok(UsdtArgSpec {
        size,
        signed,
        loc: parse_operand(operand)?,
    })
}

/// One AT&T operand. The forms the BPF side can compute from `struct pt_regs` alone; a
/// symbol, `%rip` or a segment base would need the process's load address or TLS base.
fn parse_operand(op: &str) -> Result<UsdtLoc, String> {
    if op.is_empty() {
        return Err("no operand after '@'".into());
    }
    if op.contains(':') {
        return Err(format!(
            "segment-prefixed operand {op:?}: %fs/%gs-relative memory (TLS) is not supported"
        ));
    }
    if let Some(imm) = op.strip_prefix('$') {
        return parse_int(imm).map(UsdtLoc::Const).ok_or_else(|| {
            format!("constant {imm:?} is not a decimal or 0x-hex number (a symbol's address?)")
        });
    }
    if op.starts_with('%') {
        return Ok(UsdtLoc::Reg { reg: register(op)? });
    }
    let (disp, rest) = op
        .split_once('(')
        .ok_or_else(|| format!("operand {op:?} is not %reg, $imm or off(%reg)"))?;
    let inner = rest
        .strip_suffix(')')
        .ok_or_else(|| format!("operand {op:?} has no closing ')'"))?;
    let parts: Vec<&str> = inner.split(',').collect();
    // The registers first: `sym(%rip)` is refused for %rip, the more telling reason.
    let regs = parts
        .iter()
        .take(2)
        .enumerate()
        .map(|(i, r)| match (i, r.is_empty()) {
            (0, true) => Err(format!("operand {op:?} has no base register")),
            (_, true) => Err(format!("operand {op:?} has an empty index register")),
            _ => register(r),
        })
        .collect::<Result<Vec<u16>, String>>()?;
    let off = if disp.is_empty() {
        0
    } else {
        parse_int(disp).ok_or_else(|| {
            format!("offset {disp:?} in {op:?} is not a number (symbolic offsets need relocation)")
        })?
    };
    match (regs.as_slice(), parts.get(2)) {
        (&[reg], None) => Ok(UsdtLoc::Deref { reg, off }),
        (&[base, index], scale) => {
            let scale_shift = match scale.copied().unwrap_or("1") {
                "1" => 0,
                "2" => 1,
                "4" => 2,
                "8" => 3,
                s => return Err(format!("scale {s:?} in {op:?} is not 1, 2, 4 or 8")),
            };
            if parts.len() > 3 {
                return Err(format!(
                    "operand {op:?} has more than base, index and scale"
                ));
            }
            Ok(UsdtLoc::Sib {
                base,
                index,
                scale_shift,
                off,
            })
        }
        _ => Err(format!(
            "operand {op:?} is not off(%reg) or off(%base,%index,scale)"
        )),
    }
}

/// `%name` → the register's byte offset in x86_64 `struct pt_regs`. Every width of a register
/// names the same slot: the BPF side reads all 8 bytes and narrows by the argument's size.
fn register(name: &str) -> Result<u16, String> {
    let bare = name
        .strip_prefix('%')
        .ok_or_else(|| format!("{name:?} is not a register (no '%')"))?;
    let lower = bare.to_ascii_lowercase();
    let off = match lower.as_str() {
        "rax" | "eax" | "ax" | "al" => 80,
        "rbx" | "ebx" | "bx" | "bl" => 40,
        "rcx" | "ecx" | "cx" | "cl" => 88,
        "rdx" | "edx" | "dx" | "dl" => 96,
        "rsi" | "esi" | "si" | "sil" => 104,
        "rdi" | "edi" | "di" | "dil" => 112,
        "rbp" | "ebp" | "bp" | "bpl" => 32,
        "rsp" | "esp" | "sp" | "spl" => 152,
        "ah" | "bh" | "ch" | "dh" => {
            return Err(format!(
                "{name} is a high-byte register (bits 8-15), not the low bytes the BPF side \
                 narrows the register to"
            ));
        }
        "rip" | "eip" => {
            return Err(format!(
                "{name}-relative operands (globals in position-independent code) are not supported"
            ));
        }
        _ => return numbered(&lower).ok_or_else(|| format!("unknown register {name}")),
    };
    Ok(off)
}

/// `r8`..`r15` with an optional `d`, `w` or `b` width suffix.
fn numbered(name: &str) -> Option<u16> {
    let digits = name.strip_prefix('r')?.trim_end_matches(['d', 'w', 'b']);
    // At most one suffix: "r8dd" is not a register.
    if name.len() > digits.len() + 2 {
        return None;
    }
    Some(match digits {
        "8" => 72,
        "9" => 64,
        "10" => 56,
        "11" => 48,
        "12" => 24,
        "13" => 16,
        "14" => 8,
        "15" => 0,
        _ => return None,
    })
}

/// A decimal or `0x` hex integer with an optional sign. Positive values up to `u64::MAX` are
/// accepted and kept as the same 64 bits (an unsigned constant printed as such).
fn parse_int(s: &str) -> Option<i64> {
    let (neg, unsigned) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (radix, digits) = match unsigned
        .strip_prefix("0x")
        .or_else(|| unsigned.strip_prefix("0X"))
    {
        Some(hex) => (16, hex),
        None => (10, unsigned),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = u64::from_str_radix(digits, radix).ok()?;
    if neg {
        i64::try_from(-i128::from(magnitude)).ok()
    } else {
        Some(magnitude as i64)
    }
}

#[cfg(test)]
mod tests {
    use object::read::elf::Sym;

    use super::*;

    fn one(arg: &str) -> UsdtArgSpec {
        let args = parse_args(arg).unwrap();
        assert_eq!(args.len(), 1, "{arg}");
        args[0]
    }

    fn loc(arg: &str) -> UsdtLoc {
        one(arg).loc
    }

    fn sib(base: u16, index: u16, scale_shift: u8, off: i64) -> UsdtLoc {
        UsdtLoc::Sib {
            base,
            index,
            scale_shift,
            off,
        }
    }

    /// Asserts that `spec` is refused with a message naming it and saying `why`.
    fn refused(spec: &str, why: &str) {
        match parse_args(spec) {
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains(spec) && msg.contains(why), "{spec}: {msg}");
            }
            Ok(a) => panic!("{spec:?} was accepted as {a:?}"),
        }
    }

    #[test]
    fn a_register_operand_reads_the_register() {
        let want = UsdtArgSpec {
            size: 8,
            signed: false,
            loc: UsdtLoc::Reg { reg: 112 },
        };
        assert_eq!(one("8@%rdi"), want);
    }

    #[test]
    fn every_register_maps_to_its_pt_regs_offset() {
        let regs = [
            ("r15", 0),
            ("r14", 8),
            ("r13", 16),
            ("r12", 24),
            ("rbp", 32),
            ("rbx", 40),
            ("r11", 48),
            ("r10", 56),
            ("r9", 64),
            ("r8", 72),
            ("rax", 80),
            ("rcx", 88),
            ("rdx", 96),
            ("rsi", 104),
            ("rdi", 112),
            ("rsp", 152),
        ];
        for (name, reg) in regs {
            assert_eq!(loc(&format!("8@%{name}")), UsdtLoc::Reg { reg }, "{name}");
        }
    }

    #[test]
    fn every_width_of_a_register_selects_the_same_register() {
        for names in [
            ["rax", "eax", "ax", "al"],
            ["rbx", "ebx", "bx", "bl"],
            ["rcx", "ecx", "cx", "cl"],
            ["rdx", "edx", "dx", "dl"],
            ["rsi", "esi", "si", "sil"],
            ["rdi", "edi", "di", "dil"],
            ["rbp", "ebp", "bp", "bpl"],
            ["rsp", "esp", "sp", "spl"],
            ["r8", "r8d", "r8w", "r8b"],
            ["r15", "r15d", "r15w", "r15b"],
        ] {
            let want = loc(&format!("8@%{}", names[0]));
            for n in names {
                assert_eq!(loc(&format!("1@%{n}")), want, "{n}");
            }
        }
        assert_eq!(loc("4@%r11d"), UsdtLoc::Reg { reg: 48 });
        assert_eq!(loc("2@%r12w"), UsdtLoc::Reg { reg: 24 });
    }

    #[test]
    fn a_negative_size_is_a_signed_argument() {
        for (spec, size) in [("-1@%al", 1), ("-2@%ax", 2), ("-4@%edi", 4), ("-8@%rax", 8)] {
            assert_eq!((one(spec).size, one(spec).signed), (size, true), "{spec}");
        }
    }

    #[test]
    fn a_positive_size_is_an_unsigned_argument() {
        for (spec, size) in [("1@%al", 1), ("2@%ax", 2), ("4@%eax", 4), ("8@%rax", 8)] {
            assert_eq!((one(spec).size, one(spec).signed), (size, false), "{spec}");
        }
    }

    #[test]
    fn a_constant_is_decimal_negative_or_hex() {
        assert_eq!(loc("-4@$5"), UsdtLoc::Const(5));
        assert_eq!(loc("-4@$-7"), UsdtLoc::Const(-7));
        assert_eq!(loc("8@$0x10"), UsdtLoc::Const(16));
        assert_eq!(loc("8@$-0x10"), UsdtLoc::Const(-16));
        assert_eq!(loc("8@$-9223372036854775808"), UsdtLoc::Const(i64::MIN));
        assert_eq!(loc("8@$0xffffffffffffffff"), UsdtLoc::Const(-1));
    }

    #[test]
    fn an_offset_from_a_register_is_a_deref() {
        assert_eq!(loc("8@-8(%rbp)"), UsdtLoc::Deref { reg: 32, off: -8 });
        assert_eq!(loc("-4@24(%rsp)"), UsdtLoc::Deref { reg: 152, off: 24 });
        assert_eq!(loc("8@0x18(%r12)"), UsdtLoc::Deref { reg: 24, off: 24 });
    }

    #[test]
    fn a_register_in_parentheses_alone_is_a_deref_at_offset_zero() {
        assert_eq!(loc("8@(%rsp)"), UsdtLoc::Deref { reg: 152, off: 0 });
    }

    #[test]
    fn base_index_and_scale_are_a_sib_operand() {
        assert_eq!(loc("-1@-96(%rbp,%rax,8)"), sib(32, 80, 3, -96));
        assert_eq!(loc("8@(%rdi,%rsi,8)"), sib(112, 104, 3, 0));
        for (scale, shift) in [(1, 0), (2, 1), (4, 2), (8, 3)] {
            assert_eq!(
                loc(&format!("4@4(%rax,%r9,{scale})")),
                sib(80, 64, shift, 4)
            );
        }
    }

    #[test]
    fn a_sib_operand_without_a_scale_has_scale_one() {
        assert_eq!(loc("2@16(%rax,%rbx)"), sib(80, 40, 0, 16));
    }

    #[test]
    fn an_empty_spec_has_no_arguments() {
        assert_eq!(parse_args("").unwrap(), vec![]);
        assert_eq!(parse_args("  ").unwrap(), vec![]);
    }

    #[test]
    fn arguments_are_read_in_order_across_any_spacing() {
        let args = parse_args(" -4@%edi  8@-8(%rbp) -4@$5 -1@-96(%rbp,%rax,8) ").unwrap();
        let locs: Vec<UsdtLoc> = args.iter().map(|a| a.loc).collect();
        let want = [
            UsdtLoc::Reg { reg: 112 },
            UsdtLoc::Deref { reg: 32, off: -8 },
            UsdtLoc::Const(5),
            sib(32, 80, 3, -96),
        ];
        assert_eq!(locs, want);
    }

    #[test]
    fn twelve_arguments_are_accepted_and_thirteen_refused() {
        let twelve = ["8@%rax"; 12].join(" ");
        assert_eq!(parse_args(&twelve).unwrap().len(), 12);
        refused(&format!("{twelve} 8@%rax"), "13 arguments");
    }

    #[test]
    fn sizes_other_than_1_2_4_8_are_refused() {
        for spec in ["3@%rax", "-16@%rax", "0@%rax", "@%rax", "x@%rax"] {
            refused(spec, "is not 1, 2, 4 or 8 bytes");
        }
    }

    #[test]
    fn an_argument_without_a_size_is_refused() {
        refused("%rax", "expected SIZE@OPERAND");
    }

    #[test]
    fn a_symbolic_offset_is_refused() {
        refused(
            "8@foo(%rbx)",
            "offset \"foo\" in \"foo(%rbx)\" is not a number",
        );
        refused("8@sym+4(%rax,%rbx,2)", "is not a number");
    }

    #[test]
    fn rip_relative_operands_are_refused() {
        for spec in ["8@foo(%rip)", "8@sym+4(%rip)", "4@8(%rip)", "8@%rip"] {
            refused(spec, "%rip-relative operands");
        }
    }

    #[test]
    fn segment_prefixes_are_refused() {
        for spec in ["8@%fs:0x28", "8@%fs:-8(%rax)", "4@%gs:(%rbx)"] {
            refused(spec, "segment-prefixed operand");
        }
    }

    #[test]
    fn high_byte_registers_are_refused() {
        for r in ["ah", "bh", "ch", "dh"] {
            refused(&format!("1@%{r}"), &format!("%{r} is a high-byte register"));
        }
    }

    #[test]
    fn malformed_operands_are_refused_with_the_reason() {
        for (spec, why) in [
            ("8@%xmm0", "unknown register %xmm0"),
            ("8@%r16", "unknown register %r16"),
            ("8@%r8dd", "unknown register %r8dd"),
            ("8@$foo", "not a decimal or 0x-hex"),
            ("8@$", "not a decimal or 0x-hex"),
            ("8@", "no operand"),
            ("8@8(%rax", "no closing"),
            ("8@16", "is not %reg, $imm or off(%reg)"),
            ("8@(%rax,%rbx,3)", "scale \"3\""),
            ("8@(%rax,%rbx,)", "scale \"\""),
            ("8@(%rax,%rbx,2,1)", "more than base, index and scale"),
            ("8@table(,%rdi,8)", "has no base register"),
            ("8@(%rax,)", "has an empty index register"),
            ("8@(rax)", "not a register"),
        ] {
            refused(spec, why);
        }
    }

    // The ELF part, on testdata/usdt/probes (see its README.md).

    static FIXTURE: &[u8] = include_bytes!("testdata/usdt/probes");
    const FILE: &str = "testdata/usdt/probes";

    /// The file offset of the fixture's symbol `name`, computed through the section it is in
    /// (not the segments `sites` uses).
    fn symbol_offset(data: &[u8], name: &str) -> u64 {
        let header = FileHeader64::<LE>::parse(data).unwrap();
        let sections = header.sections(LE, data).unwrap();
        let symbols = sections.symbols(LE, data, elf::SHT_SYMTAB).unwrap();
        let sym = symbols
            .iter()
            .find(|s| symbols.symbol_name(LE, s) == Ok(name.as_bytes()))
            .unwrap();
        let section = sections
            .section(object::SectionIndex(usize::from(sym.st_shndx(LE))))
            .unwrap();
        sym.st_value(LE) - section.sh_addr(LE) + section.sh_offset(LE)
    }

    /// File offsets of the descriptors of the fixture's stapsdt notes, for patching.
    fn desc_offsets(data: &[u8]) -> Vec<usize> {
        let header = FileHeader64::<LE>::parse(data).unwrap();
        let sections = header.sections(LE, data).unwrap();
        let (_, section) = sections.section_by_name(LE, NOTE_SECTION).unwrap();
        let mut notes = section.notes(LE, data).unwrap().unwrap();
        let mut offsets = Vec::new();
        while let Some(note) = notes.next().unwrap() {
            offsets.push(note.desc().as_ptr() as usize - data.as_ptr() as usize);
        }
        offsets
    }

    /// Asserts that looking `provider:name` up in `data` fails with a message holding `parts`.
    fn fails(data: &[u8], provider: &str, name: &str, parts: &[&str]) {
        match sites_in(data, FILE, provider, name) {
            Err(e) => {
                let msg = e.to_string();
                assert!(parts.iter().all(|p| msg.contains(p)), "{parts:?}: {msg}");
            }
            Ok(s) => panic!("{provider}:{name} found: {s:?}"),
        }
    }

    #[test]
    fn a_probe_with_two_sites_gives_both_in_note_order() {
        let sites = sites_in(FIXTURE, FILE, "demo", "tick").unwrap();
        assert_eq!(sites.len(), 2);
        assert_eq!(sites[0].spec, "-4@%edi 8@%rsi 8@8(%rdx) -4@$5");
        assert_eq!(sites[0].args, parse_args(&sites[0].spec).unwrap());
        assert_eq!(sites[1].spec, "-4@%esi 8@(%rdi,%rsi,8) -4@$-7");
        let locs: Vec<UsdtLoc> = sites[1].args.iter().map(|a| a.loc).collect();
        assert_eq!(
            locs,
            [
                UsdtLoc::Reg { reg: 104 },
                sib(112, 104, 3, 0),
                UsdtLoc::Const(-7)
            ]
        );
        assert!(sites.iter().all(|s| s.semaphore == 0));
    }

    #[test]
    fn site_offsets_are_the_file_offsets_of_the_probe_instructions() {
        let sites = sites_in(FIXTURE, FILE, "demo", "tick").unwrap();
        let offsets: Vec<u64> = sites.iter().map(|s| s.offset).collect();
        let symbols = ["site_tick_a", "site_tick_b"].map(|s| symbol_offset(FIXTURE, s));
        assert_eq!(offsets, symbols);
        for o in offsets {
            assert_eq!(FIXTURE[o as usize], 0x90, "a nop at {o:#x}");
        }
    }

    #[test]
    fn a_semaphore_is_reported_as_a_file_offset() {
        let sites = sites_in(FIXTURE, FILE, "demo", "ready").unwrap();
        assert_eq!(sites.len(), 1);
        assert_eq!(sites[0].offset, symbol_offset(FIXTURE, "site_ready"));
        let semaphore = symbol_offset(FIXTURE, "demo_ready_semaphore");
        assert_eq!(sites[0].semaphore, semaphore);
        // In the data segment, mapped at another distance from its file offset than the text.
        assert_ne!(semaphore, 0x401160 - 0x400000);
        assert_eq!(sites[0].args, parse_args("1@%dil").unwrap());
    }

    #[test]
    fn a_probe_without_arguments_has_an_empty_argument_list() {
        let sites = sites_in(FIXTURE, FILE, "demo", "idle").unwrap();
        assert_eq!((sites.len(), sites[0].spec.as_str()), (1, ""));
        assert!(sites[0].args.is_empty());
    }

    #[test]
    fn an_unknown_probe_names_the_probes_the_file_has() {
        let has = "the file has probes demo:tick, demo:ready, demo:idle, other:bad";
        fails(
            FIXTURE,
            "demo",
            "nope",
            &[FILE, "no USDT probe demo:nope", has],
        );
        // The provider and the name must both match.
        fails(FIXTURE, "other", "tick", &["no USDT probe other:tick", has]);
    }

    #[test]
    fn a_long_list_of_probes_is_cut_short() {
        let names = [
            b"a", b"b", b"c", b"d", b"e", b"f", b"g", b"h", b"i", b"j", b"k", b"l", b"a",
        ];
        let notes: Vec<Note<'_>> = names
            .iter()
            .map(|n| Note {
                pc: 0,
                base: 0,
                semaphore: 0,
                provider: b"p",
                name: *n,
                args: b"",
            })
            .collect();
        let text = available(&notes);
        assert!(text.ends_with("p:i, p:j (and 2 more)"), "{text}");
    }

    #[test]
    fn a_probe_with_an_unsupported_argument_names_the_file_probe_and_operand() {
        let parts = [
            FILE,
            "probe other:bad",
            "argument \"8@sym+4(%rip)\"",
            "%rip-relative",
        ];
        fails(FIXTURE, "other", "bad", &parts);
    }

    #[test]
    fn a_moved_stapsdt_base_moves_the_sites_and_the_semaphore() {
        // As if prelink had moved the file down by 0x10 after the notes were written.
        let mut data = FIXTURE.to_vec();
        for desc in desc_offsets(FIXTURE) {
            let field = &mut data[desc + 8..desc + 16];
            let base = u64::from_le_bytes(field.try_into().unwrap());
            field.copy_from_slice(&(base + 0x10).to_le_bytes());
        }
        let before = sites_in(FIXTURE, FILE, "demo", "ready").unwrap();
        let after = sites_in(&data, FILE, "demo", "ready").unwrap();
        assert_eq!(after[0].offset, before[0].offset - 0x10);
        assert_eq!(after[0].semaphore, before[0].semaphore - 0x10);
    }

    #[test]
    fn a_site_outside_the_executable_segments_is_an_error() {
        let mut data = FIXTURE.to_vec();
        let desc = desc_offsets(FIXTURE)[0];
        data[desc..desc + 8].copy_from_slice(&0x401140u64.to_le_bytes());
        let parts = [
            "probe demo:tick",
            "no executable PT_LOAD segment",
            "0x401140",
        ];
        fails(&data, "demo", "tick", &parts);
    }

    #[test]
    fn a_file_without_stapsdt_notes_says_so() {
        let mut data = FIXTURE.to_vec();
        let name = data
            .windows(NOTE_SECTION.len())
            .position(|w| w == NOTE_SECTION)
            .unwrap();
        data[name + NOTE_SECTION.len() - 1] = b'X';
        fails(&data, "demo", "tick", &[FILE, "no .note.stapsdt section"]);
    }

    #[test]
    fn only_x86_64_elf64_little_endian_executables_are_read() {
        let patched = |at: usize, bytes: &[u8], why: &str| {
            let mut data = FIXTURE.to_vec();
            data[at..at + bytes.len()].copy_from_slice(bytes);
            fails(&data, "demo", "tick", &[FILE, why]);
        };
        // e_machine 183 is aarch64.
        patched(18, &183u16.to_le_bytes(), "for machine 183");
        patched(4, &[elf::ELFCLASS32], "a 32-bit ELF file");
        patched(5, &[elf::ELFDATA2MSB], "a big-endian ELF file");
        patched(
            16,
            &elf::ET_REL.to_le_bytes(),
            "not an executable or shared object",
        );
        fails(b"#!/bin/sh\n", "demo", "tick", &["not an ELF file"]);
        fails(b"", "demo", "tick", &["not an ELF file"]);
    }

    #[test]
    fn a_truncated_note_descriptor_is_refused() {
        assert_eq!(parse_desc(&[0; 23]), None);
        let mut desc = vec![0; 24];
        desc.extend_from_slice(b"demo\0tick\0-4@%edi");
        assert_eq!(parse_desc(&desc), None, "the argument string lacks its NUL");
        desc.push(0);
        let note = parse_desc(&desc).unwrap();
        let strings: [&[u8]; 3] = [note.provider, note.name, note.args];
        assert_eq!(strings, [&b"demo"[..], b"tick", b"-4@%edi"]);
    }

    #[test]
    fn sites_reads_the_file_at_the_path() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/bpf/testdata/usdt/probes");
        let from_bytes = sites_in(FIXTURE, FILE, "demo", "tick").unwrap();
        assert_eq!(sites(&path, "demo", "tick").unwrap(), from_bytes);
        let missing = path.with_file_name("missing");
        let msg = sites(&missing, "demo", "tick").unwrap_err().to_string();
        assert!(msg.contains("testdata/usdt/missing"), "{msg}");
    }
}
