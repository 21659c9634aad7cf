//! Ring-buffer records → owned Rust values. Pure: unit-tested on hand-built byte arrays.

use std::mem::size_of;

use lsm_shared::*;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than an event header")]
    Short(usize),
    #[error("record of kind {kind} has {got} bytes, expected {want}")]
    Size { kind: u32, got: usize, want: usize },
    #[error("unknown event kind {0}")]
    UnknownKind(u32),
}

/// A file or path as the kernel reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KPath {
    pub path: String,
    /// The kernel could not resolve it (the event was handled fail-closed).
    pub unresolved: bool,
    /// Resolved by the dentry walk rather than `bpf_d_path`.
    pub walked: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecData {
    pub ktime: u64,
    pub pid: u32,
    pub tgid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub exe: KPath,
    /// argv, split at NULs.
    pub argv: Vec<String>,
    /// argv was longer than the kernel copies.
    pub args_truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitData {
    pub ktime: u64,
    pub pid: u32,
    pub tgid: u32,
    pub exit_code: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookData {
    pub ktime: u64,
    pub pid: u32,
    pub tgid: u32,
    pub hook: u32,
    /// Selector slots that fired.
    pub fired: u64,
    /// Fired slots that post: one Tetragon event each.
    pub posted: u64,
    pub retval: i32,
    pub args: [u64; MAX_ARGS],
    pub path: Option<KPath>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForkData {
    pub ktime: u64,
    /// The child.
    pub tgid: u32,
    pub ppid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelEvent {
    Fork(ForkData),
    Exec(ExecData),
    Exit(ExitData),
    Hook(HookData),
}

fn read<T: Copy>(buf: &[u8], kind: u32) -> Result<T, DecodeError> {
    if buf.len() < size_of::<T>() {
        return Err(DecodeError::Size {
            kind,
            got: buf.len(),
            want: size_of::<T>(),
        });
    }
    // SAFETY: the length is checked above and T is a plain-old-data ABI struct (any bit
    // pattern is valid); read_unaligned copes with the ring buffer's 8-byte alignment.
    Ok(unsafe { std::ptr::read_unaligned(buf.as_ptr() as *const T) })
}

/// Rebuilds the path text from a [`PathRec`]: exact up to `2 * STR_LEN` bytes, beyond that
/// the head, `...` and the tail.
pub fn path_from_rec(rec: &PathRec) -> KPath {
    let len = rec.len as usize;
    let head_n = len.min(STR_LEN);
    let tail_n = len.min(STR_LEN);
    let mut bytes: Vec<u8> = rec.head[..head_n].to_vec();
    if len > STR_LEN {
        let tail: Vec<u8> = rec.tail_rev[..tail_n].iter().rev().copied().collect();
        if len <= 2 * STR_LEN {
            // Head and tail overlap or touch: take the missing middle from the tail.
            let missing = len - STR_LEN;
            bytes.extend_from_slice(&tail[tail_n - missing..]);
        } else {
            bytes.extend_from_slice(b"...");
            bytes.extend_from_slice(&tail);
        }
    }
    KPath {
        path: String::from_utf8_lossy(&bytes).into_owned(),
        unresolved: rec.flags & PATH_UNRESOLVED != 0,
        walked: rec.flags & PATH_WALKED != 0,
    }
}

/// The record the kernel would build for `path` (for the `/proc` scan and tests).
pub fn rec_from_path(path: &[u8]) -> PathRec {
    let mut rec = PathRec::empty();
    rec.len = path.len() as u32;
    rec.flags = PATH_RESOLVED;
    let n = path.len().min(STR_LEN);
    rec.head[..n].copy_from_slice(&path[..n]);
    for (i, b) in path.iter().rev().take(STR_LEN).enumerate() {
        rec.tail_rev[i] = *b;
    }
    rec
}

fn split_argv(args: &[u8]) -> Vec<String> {
    let args = args.strip_suffix(&[0]).unwrap_or(args);
    if args.is_empty() {
        return Vec::new();
    }
    args.split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// Decodes one ring-buffer record.
pub fn decode(buf: &[u8]) -> Result<KernelEvent, DecodeError> {
    if buf.len() < size_of::<EventHeader>() {
        return Err(DecodeError::Short(buf.len()));
    }
    let header: EventHeader = read(buf, 0)?;
    match header.kind {
        EVENT_EXEC => {
            let e: ExecEvent = read(buf, header.kind)?;
            let n = (e.args_len as usize).min(ARGS_LEN);
            Ok(KernelEvent::Exec(ExecData {
                ktime: header.ktime,
                pid: header.pid,
                tgid: header.tgid,
                ppid: e.ppid,
                uid: e.uid,
                exe: path_from_rec(&e.exe),
                argv: split_argv(&e.args[..n]),
                args_truncated: e.args_total as usize > n,
            }))
        }
        EVENT_FORK => {
            let e: ForkEvent = read(buf, header.kind)?;
            Ok(KernelEvent::Fork(ForkData {
                ktime: header.ktime,
                tgid: header.tgid,
                ppid: e.ppid,
            }))
        }
        EVENT_EXIT => {
            let e: ExitEvent = read(buf, header.kind)?;
            Ok(KernelEvent::Exit(ExitData {
                ktime: header.ktime,
                pid: header.pid,
                tgid: header.tgid,
                exit_code: e.exit_code,
            }))
        }
        EVENT_HOOK => {
            let e: HookEvent = read(buf, header.kind)?;
            let has_path = e.path.len > 0 || e.path.flags != 0;
            Ok(KernelEvent::Hook(HookData {
                ktime: header.ktime,
                pid: header.pid,
                tgid: header.tgid,
                hook: e.hook,
                fired: e.fired,
                posted: e.posted,
                retval: e.retval,
                args: e.args,
                path: has_path.then(|| path_from_rec(&e.path)),
            }))
        }
        other => Err(DecodeError::UnknownKind(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of<T>(v: &T) -> Vec<u8> {
        // SAFETY: reading the bytes of a plain ABI struct.
        unsafe { std::slice::from_raw_parts(v as *const T as *const u8, size_of::<T>()) }.to_vec()
    }

    fn header(kind: u32) -> EventHeader {
        EventHeader {
            kind,
            cpu: 1,
            ktime: 1234,
            pid: 42,
            tgid: 40,
        }
    }

    #[test]
    fn exec_record_decodes_binary_and_argv() {
        let mut args = [0u8; ARGS_LEN];
        let argv = b"/usr/bin/cat\0/etc/shadow\0";
        args[..argv.len()].copy_from_slice(argv);
        let ev = ExecEvent {
            header: header(EVENT_EXEC),
            ppid: 1,
            uid: 0,
            args_len: argv.len() as u32,
            args_total: argv.len() as u32,
            exe: rec_from_path(b"/usr/bin/cat"),
            args,
        };
        let KernelEvent::Exec(e) = decode(&bytes_of(&ev)).unwrap() else {
            panic!("not an exec")
        };
        assert_eq!(e.exe.path, "/usr/bin/cat");
        assert_eq!(e.argv, vec!["/usr/bin/cat", "/etc/shadow"]);
        assert!(!e.args_truncated);
        assert_eq!((e.pid, e.tgid, e.ppid), (42, 40, 1));
    }

    #[test]
    fn hook_record_carries_path_and_actions() {
        let ev = HookEvent {
            header: header(EVENT_HOOK),
            hook: HOOK_FILE_PERMISSION,
            retval: -1,
            fired: 0b101,
            posted: 0b100,
            args: [0xffff, 4, 0, 0, 0],
            net: NetInfo::default(),
            path: rec_from_path(b"/etc/shadow"),
        };
        let KernelEvent::Hook(h) = decode(&bytes_of(&ev)).unwrap() else {
            panic!("not a hook event")
        };
        assert_eq!(h.path.unwrap().path, "/etc/shadow");
        assert_eq!(
            (h.fired, h.posted, h.retval, h.args[1]),
            (0b101, 0b100, -1, 4)
        );
    }

    #[test]
    fn truncated_and_unknown_records_are_errors() {
        let ev = ExitEvent {
            header: header(EVENT_EXIT),
            exit_code: 9,
            _pad: 0,
        };
        let b = bytes_of(&ev);
        assert!(matches!(decode(&b[..20]), Err(DecodeError::Short(20))));
        assert!(matches!(decode(&b[..28]), Err(DecodeError::Size { .. })));
        let mut bad = b.clone();
        bad[0] = 77;
        assert_eq!(decode(&bad), Err(DecodeError::UnknownKind(77)));
    }

    #[test]
    fn long_paths_are_rebuilt_exactly_up_to_twice_the_stored_length() {
        for len in [1usize, 255, 256, 257, 400, 512] {
            let p: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            assert_eq!(
                path_from_rec(&rec_from_path(&p)).path.as_bytes(),
                &p[..],
                "len {len}"
            );
        }
        let p: Vec<u8> = (0..600).map(|i| b'a' + (i % 26) as u8).collect();
        let shown = path_from_rec(&rec_from_path(&p)).path;
        assert!(shown.starts_with(std::str::from_utf8(&p[..256]).unwrap()));
        assert!(shown.contains("..."));
        assert!(shown.ends_with(std::str::from_utf8(&p[344..]).unwrap()));
    }
}
