//! Ring-buffer records → owned Rust values. Pure: unit-tested on hand-built byte arrays.

use std::{
    mem::size_of,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

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
    /// A buffer's bytes (`char_buf`, the record flagged `PATH_BYTES`), as many as the record
    /// carries, a `CredRec` (`PATH_CRED`), a `SockRec` (`PATH_NET`) or a `SkbRec`
    /// (`PATH_SKB`); `path` is then empty. Empty for every other
    /// record.
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecData {
    pub ktime: u64,
    /// The task's cgroup v2 id ([`EventHeader::cgroup_id`]); 0 when unknown.
    pub cgroup_id: u64,
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
    /// The task's cgroup v2 id ([`EventHeader::cgroup_id`]); 0 when unknown.
    pub cgroup_id: u64,
    pub pid: u32,
    pub tgid: u32,
    pub exit_code: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookData {
    pub ktime: u64,
    /// The task's cgroup v2 id ([`EventHeader::cgroup_id`]); 0 when unknown.
    pub cgroup_id: u64,
    pub pid: u32,
    pub tgid: u32,
    pub hook: u32,
    /// Selector slots that fired.
    pub fired: u64,
    /// Fired slots that post: one Tetragon event each.
    pub posted: u64,
    pub retval: i32,
    /// `HOOK_FLAG_*`: observed by a kprobe (nothing denied), SIGKILL sent after the fact.
    pub flags: u32,
    /// The process that tracked (`TrackSock`) a socket argument of the call, 0 for none.
    pub owner: u32,
    /// At a uprobe, the index of the point that ran in its target's points.
    pub point: u32,
    pub args: [u64; MAX_ARGS],
    /// The return value of a kretprobe'd call (meaningful with `HOOK_FLAG_RETURN` in
    /// `flags`, 0 otherwise).
    pub retarg: u64,
    /// Per argument position, its string, path or file, when the kernel read one.
    pub strs: [Option<KPath>; MAX_ARGS],
    /// The connection, for `socket_connect` events only.
    pub net: Option<NetData>,
    /// The hook's `data` values ([`HookEvent::data`]).
    pub data: [u64; NUM_DATA],
}

/// The connection a `socket_connect` call asked for, from [`NetInfo`].
///
/// Addresses exist only for the IP families: `AF_INET` takes the first 4 address bytes,
/// `AF_INET6` all 16. For any other family (`AF_UNIX`, `AF_NETLINK`, ...) the kernel's bytes
/// are not an IP address and both are `None`, which is also how Tetragon sees them (its
/// `GetIP` returns a nil address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NetData {
    /// `AF_*`; `AF_INET` also for an IPv6 socket connecting to a v4-mapped address.
    pub family: u16,
    /// `SOCK_*`.
    pub sock_type: u16,
    /// `IPPROTO_*`.
    pub protocol: u16,
    /// Local port; 0 while the socket is not bound.
    pub sport: u16,
    pub dport: u16,
    /// Local address; the unspecified address (`0.0.0.0`, `::`) while not bound.
    pub saddr: Option<IpAddr>,
    pub daddr: Option<IpAddr>,
}

impl NetData {
    pub fn from_info(n: &NetInfo) -> Self {
        NetData {
            family: n.family,
            sock_type: n.sock_type,
            protocol: n.protocol,
            sport: n.sport,
            dport: n.dport,
            saddr: ip_from_bytes(n.family, &n.saddr),
            daddr: ip_from_bytes(n.family, &n.daddr),
        }
    }
}

/// The address in `bytes` (network order) for an IP `family`, `None` for any other family.
pub fn ip_from_bytes(family: u16, bytes: &[u8; 16]) -> Option<IpAddr> {
    match family {
        AF_INET => Some(IpAddr::V4(Ipv4Addr::new(
            bytes[0], bytes[1], bytes[2], bytes[3],
        ))),
        AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(*bytes))),
        _ => None,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForkData {
    pub ktime: u64,
    /// The task's cgroup v2 id ([`EventHeader::cgroup_id`]); 0 when unknown.
    pub cgroup_id: u64,
    /// The child.
    pub tgid: u32,
    pub ppid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[expect(
    clippy::large_enum_variant,
    reason = "one decoded record at a time goes from the ring buffer to the enrichment; a hook \
              record's strings and return value are read in place"
)]
pub enum KernelEvent {
    Fork(ForkData),
    Exec(ExecData),
    Exit(ExitData),
    Hook(HookData),
}

impl KernelEvent {
    /// The record of an operation denied, or of a process killed for one: never dropped on
    /// the way to the subscribers.
    pub fn is_enforcement(&self) -> bool {
        matches!(self, KernelEvent::Hook(h) if h.retval != 0 || h.flags & HOOK_FLAG_KILL_SENT != 0)
    }
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
    let (mut bytes, whole) = rec_bytes(rec);
    let (unresolved, walked) = (
        rec.flags & PATH_UNRESOLVED != 0,
        rec.flags & PATH_WALKED != 0,
    );
    // A buffer's or credentials' record is data, not text: kept as bytes, no path.
    if rec.flags & (PATH_CRED | PATH_NET | PATH_SKB | PATH_OBJ) != 0
        || (rec.flags & PATH_BYTES != 0 && whole)
    {
        return KPath {
            path: String::new(),
            unresolved,
            walked,
            bytes,
        };
    }
    if rec.flags & PATH_BYTES != 0 {
        // Longer than the record keeps whole: its first STR_LEN bytes.
        bytes.truncate(STR_LEN);
        return KPath {
            path: String::new(),
            unresolved,
            walked,
            bytes,
        };
    }
    if !whole {
        bytes.extend_from_slice(b"...");
        bytes.extend(rec.tail_rev.iter().rev());
    }
    KPath {
        path: String::from_utf8_lossy(&bytes).into_owned(),
        unresolved,
        walked,
        bytes: Vec::new(),
    }
}

/// The bytes a record keeps: all of them up to `2 * STR_LEN` (head and reversed tail overlap
/// or touch; `true`), else only the head (`false`).
fn rec_bytes(rec: &PathRec) -> (Vec<u8>, bool) {
    let len = rec.len as usize;
    let mut bytes: Vec<u8> = rec.head[..len.min(STR_LEN)].to_vec();
    if len <= STR_LEN {
        return (bytes, true);
    }
    if len > 2 * STR_LEN {
        return (bytes, false);
    }
    let missing = len - STR_LEN;
    bytes.extend(rec.tail_rev[..missing].iter().rev());
    (bytes, true)
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
                cgroup_id: header.cgroup_id,
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
                cgroup_id: header.cgroup_id,
                tgid: header.tgid,
                ppid: e.ppid,
            }))
        }
        EVENT_EXIT => {
            let e: ExitEvent = read(buf, header.kind)?;
            Ok(KernelEvent::Exit(ExitData {
                ktime: header.ktime,
                cgroup_id: header.cgroup_id,
                pid: header.pid,
                tgid: header.tgid,
                exit_code: e.exit_code,
            }))
        }
        EVENT_HOOK => {
            let e: HookEvent = read(buf, header.kind)?;
            Ok(KernelEvent::Hook(HookData {
                ktime: header.ktime,
                cgroup_id: header.cgroup_id,
                pid: header.pid,
                tgid: header.tgid,
                hook: e.hook,
                fired: e.fired,
                posted: e.posted,
                retval: e.retval,
                flags: e.flags,
                owner: e.owner,
                point: e.point,
                args: e.args,
                retarg: e.retarg,
                strs: e
                    .strs
                    .map(|r| (r.len > 0 || r.flags != 0).then(|| path_from_rec(&r))),
                net: (e.hook == HOOK_SOCKET_CONNECT).then(|| NetData::from_info(&e.net)),
                data: e.data,
            }))
        }
        other => Err(DecodeError::UnknownKind(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::procfs::rec_from_path;

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
            cgroup_id: 0x1_0000_2a2b,
        }
    }

    #[test]
    fn a_buffer_record_keeps_its_bytes_exactly_up_to_twice_the_head_then_the_head() {
        let data: Vec<u8> = (0..700u32).map(|i| (i % 251) as u8).collect();
        for (len, want) in [
            (0, 0),
            (5, 5),
            (STR_LEN, STR_LEN),
            (300, 300),
            (2 * STR_LEN, 2 * STR_LEN),
            (700, STR_LEN),
        ] {
            let mut rec = rec_from_path(&data[..len]);
            rec.flags |= PATH_BYTES;
            let p = path_from_rec(&rec);
            assert_eq!(p.bytes, data[..want], "{len}");
            assert!(p.path.is_empty(), "a buffer is not text: {len}");
        }
        // Text records carry no bytes.
        assert!(
            path_from_rec(&rec_from_path(b"/etc/passwd"))
                .bytes
                .is_empty()
        );
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
        assert_eq!(e.cgroup_id, 0x1_0000_2a2b);
    }

    #[test]
    fn every_record_kind_carries_the_cgroup_id_of_its_header() {
        let exit = ExitEvent {
            header: header(EVENT_EXIT),
            exit_code: 0,
            _pad: 0,
        };
        let fork = ForkEvent {
            header: header(EVENT_FORK),
            ppid: 1,
            _pad: 0,
        };
        let ids = [
            decode(&bytes_of(&exit)),
            decode(&bytes_of(&fork)),
            decode(&bytes_of(&connect_event(NetInfo::default()))),
        ]
        .map(|ev| match ev {
            Ok(KernelEvent::Exit(e)) => e.cgroup_id,
            Ok(KernelEvent::Fork(f)) => f.cgroup_id,
            Ok(KernelEvent::Hook(h)) => h.cgroup_id,
            other => panic!("unexpected {other:?}"),
        });
        assert_eq!(ids, [0x1_0000_2a2b; 3]);
    }

    #[test]
    fn hook_record_carries_path_and_actions() {
        let ev = HookEvent {
            header: header(EVENT_HOOK),
            hook: HOOK_FILE_PERMISSION,
            retval: -1,
            flags: HOOK_FLAG_KPROBE,
            owner: 0,
            point: 0,
            _pad: 0,
            fired: 0b101,
            posted: 0b100,
            args: [0xffff, 4, 0, 0, 0],
            retarg: 0,
            net: NetInfo::default(),
            strs: [
                rec_from_path(b"/etc/shadow"),
                PathRec::empty(),
                PathRec::empty(),
                PathRec::empty(),
                PathRec::empty(),
            ],
            data: [0; lsm_shared::NUM_DATA],
        };
        let KernelEvent::Hook(h) = decode(&bytes_of(&ev)).unwrap() else {
            panic!("not a hook event")
        };
        assert_eq!(h.net, None);
        let [first, rest @ ..] = h.strs;
        assert_eq!(first.unwrap().path, "/etc/shadow");
        assert!(rest.iter().all(Option::is_none), "{rest:?}");
        assert_eq!(h.flags, HOOK_FLAG_KPROBE);
        assert_eq!(
            (h.fired, h.posted, h.retval, h.args[1]),
            (0b101, 0b100, -1, 4)
        );
    }

    #[test]
    fn hook_record_carries_the_string_of_each_argument_position() {
        let mut ev = connect_event(NetInfo::default());
        ev.hook = HOOK_PATH_SYMLINK;
        ev.strs[0] = rec_from_path(b"/tmp/dir");
        ev.strs[2] = rec_from_path(b"../target");
        // A resolved empty string (a NULL `char *`) is there, just empty.
        ev.strs[3].flags = PATH_RESOLVED;
        let h = decode_hook(&ev);
        let shown: Vec<Option<&str>> = h
            .strs
            .iter()
            .map(|p| p.as_ref().map(|p| p.path.as_str()))
            .collect();
        assert_eq!(
            shown,
            [Some("/tmp/dir"), None, Some("../target"), Some(""), None]
        );
        assert_eq!(h.net, None);
    }

    fn connect_event(net: NetInfo) -> HookEvent {
        HookEvent {
            header: header(EVENT_HOOK),
            hook: HOOK_SOCKET_CONNECT,
            retval: 0,
            flags: 0,
            owner: 0,
            point: 0,
            _pad: 0,
            fired: 1,
            posted: 1,
            args: [0; MAX_ARGS],
            retarg: 0,
            net,
            strs: [PathRec::empty(); MAX_ARGS],
            data: [0; lsm_shared::NUM_DATA],
        }
    }

    fn decode_hook(ev: &HookEvent) -> HookData {
        match decode(&bytes_of(ev)) {
            Ok(KernelEvent::Hook(h)) => h,
            other => panic!("not a hook event: {other:?}"),
        }
    }

    #[test]
    fn socket_connect_record_decodes_an_ipv4_connection_from_the_first_four_bytes() {
        let mut net = NetInfo {
            family: AF_INET,
            sock_type: 1,
            protocol: IPPROTO_TCP,
            sport: 0,
            dport: 443,
            ..Default::default()
        };
        net.saddr[..4].copy_from_slice(&[10, 0, 0, 5]);
        net.daddr[..4].copy_from_slice(&[198, 51, 100, 1]);
        // Bytes past the first four are not part of an IPv4 address.
        net.daddr[4..].fill(0xee);
        let h = decode_hook(&connect_event(net));
        assert!(h.strs.iter().all(Option::is_none));
        assert_eq!(
            h.net,
            Some(NetData {
                family: AF_INET,
                sock_type: 1,
                protocol: IPPROTO_TCP,
                sport: 0,
                dport: 443,
                saddr: Some("10.0.0.5".parse().unwrap()),
                daddr: Some("198.51.100.1".parse().unwrap()),
            })
        );
    }

    #[test]
    fn socket_connect_record_decodes_an_ipv6_connection_from_all_sixteen_bytes() {
        let daddr: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let net = NetInfo {
            family: AF_INET6,
            sock_type: 2,
            protocol: IPPROTO_UDP,
            sport: 5353,
            dport: 53,
            saddr: [0; 16],
            daddr: daddr.octets(),
            ..Default::default()
        };
        let n = decode_hook(&connect_event(net)).net.unwrap();
        assert_eq!(n.saddr, Some(IpAddr::V6(Ipv6Addr::UNSPECIFIED)));
        assert_eq!(n.daddr, Some(IpAddr::V6(daddr)));
        assert_eq!((n.sport, n.dport, n.protocol), (5353, 53, IPPROTO_UDP));
    }

    #[test]
    fn socket_connect_of_a_non_ip_family_has_no_addresses() {
        let net = NetInfo {
            family: 1, // AF_UNIX
            sock_type: 1,
            saddr: [0xab; 16],
            daddr: [0xcd; 16],
            ..Default::default()
        };
        let n = decode_hook(&connect_event(net)).net.unwrap();
        assert_eq!((n.family, n.saddr, n.daddr), (1, None, None));
    }

    #[test]
    fn hooks_other_than_socket_connect_carry_no_connection() {
        let mut ev = connect_event(NetInfo {
            family: AF_INET,
            dport: 80,
            ..Default::default()
        });
        ev.hook = HOOK_FILE_OPEN;
        assert_eq!(decode_hook(&ev).net, None);
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
        // A whole header (the cgroup id included) but not the whole record.
        assert!(matches!(decode(&b[..28]), Err(DecodeError::Short(28))));
        assert!(matches!(decode(&b[..36]), Err(DecodeError::Size { .. })));
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
