//! `tetra getevents -o compact` output, byte for byte as tetra v1.7.0 prints it.
//!
//! Users compare our output with Tetragon's docs and scripts grep it, so every space, padding
//! width and color escape follows tetra's `pkg/encoder` (fatih/color), including its quirks:
//! empty fields still leave their separating space, and with colors on an (empty) magenta caps
//! trailer pads each line to 120 bytes. Strings are printed raw (v1.7.0 does not quote).

use std::fmt::Write as _;

use super::proto::tetragon::{
    GetEventsResponse, Process, ProcessLsm, ThrottleType, get_events_response::Event,
    kprobe_argument::Arg,
};

mod kprobe;
mod tracepoint;

use kprobe::kprobe_to_string;

/// Why an event cannot be rendered. tetra stops `getevents` on these, so callers should treat
/// them as fatal for the stream or at least report them.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CompactError {
    #[error("process field is not set")]
    MissingProcess,
    #[error("unknown event type: {0}")]
    UnknownEventType(&'static str),
    /// tetra would dereference a nil argument here and crash; we report it instead.
    #[error("{function}: {reason}")]
    MalformedArgs {
        function: String,
        reason: &'static str,
    },
}

/// How `--color` was given; [`ColorMode::enabled`] resolves `auto` like fatih/color does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ColorMode {
    #[default]
    Auto,
    Always,
    Never,
}

impl ColorMode {
    /// `auto` means colors only on a terminal, unless `NO_COLOR` is set or `TERM=dumb`.
    pub fn enabled(self) -> bool {
        use std::io::IsTerminal as _;
        match self {
            ColorMode::Always => true,
            ColorMode::Never => false,
            ColorMode::Auto => {
                let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
                let dumb = std::env::var_os("TERM").is_some_and(|v| v == "dumb");
                !no_color && !dumb && std::io::stdout().is_terminal()
            }
        }
    }
}

impl std::str::FromStr for ColorMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(ColorMode::Auto),
            "always" => Ok(ColorMode::Always),
            "never" => Ok(ColorMode::Never),
            other => Err(format!(
                "invalid color mode {other:?} (auto, always, never)"
            )),
        }
    }
}

/// Output switches, matching tetra's `--color`, `--timestamps`, `--stack-traces`, `--ima-hash`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactOptions {
    /// Already resolved (see [`ColorMode::enabled`]).
    pub color: bool,
    pub timestamps: bool,
    pub stack_traces: bool,
    pub ima_hash: bool,
}

impl Default for CompactOptions {
    /// tetra's defaults, with colors off.
    fn default() -> Self {
        Self {
            color: false,
            timestamps: false,
            stack_traces: true,
            ima_hash: true,
        }
    }
}

#[derive(Clone, Copy)]
enum Color {
    Red = 31,
    Green = 32,
    Yellow = 33,
    Blue = 34,
    Magenta = 35,
    Cyan = 36,
}

struct Painter {
    enabled: bool,
}

impl Painter {
    /// fatih/color wraps even empty strings, which matters for the caps trailer.
    fn paint(&self, color: Color, s: &str) -> String {
        if self.enabled {
            format!("\x1b[{}m{s}\x1b[0m", color as u8)
        } else {
            s.to_owned()
        }
    }

    /// Go's `%-7s`: pads to 7 code points, never truncates.
    fn label(&self, color: Color, emoji: &str, name: &str) -> String {
        self.paint(color, &format!("{emoji} {name:<7}"))
    }
}

const CAPS_PAD: usize = 120;
const CAP_SYS_ADMIN: usize = 21;

/// Renders one event. The result has no trailing newline; stack-trace and IMA lines, when
/// present, follow the main line separated by `\n`.
pub fn encode_compact(
    ev: &GetEventsResponse,
    opts: &CompactOptions,
) -> Result<String, CompactError> {
    let p = Painter {
        enabled: opts.color,
    };
    let mut out = event_to_string(ev, &p)?;
    if opts.timestamps {
        let (secs, nanos) = ev
            .time
            .as_ref()
            .map_or((0, 0), |t| (t.seconds, i64::from(t.nanos)));
        out = format!("{} {out}", format_rfc3339_nano(secs, nanos));
    }
    let mut extra = String::new();
    if opts.stack_traces {
        stack_traces(ev, &p, &mut extra);
    }
    if opts.ima_hash {
        ima_hash(ev, &p, &mut extra);
    }
    if !extra.is_empty() {
        out.push('\n');
        out.push_str(extra.trim_end_matches('\n'));
    }
    Ok(out)
}

fn event_to_string(ev: &GetEventsResponse, p: &Painter) -> Result<String, CompactError> {
    let node = ev.node_name.as_str();
    match &ev.event {
        Some(Event::Test(_)) => Ok("TEST EVENT".to_owned()),
        Some(Event::ProcessExec(exec)) => {
            let proc = exec.process.as_ref().ok_or(CompactError::MissingProcess)?;
            let event = p.label(Color::Blue, "🚀", "process");
            let (info, caps) = process_info(p, node, proc);
            let args = p.paint(Color::Cyan, &proc.arguments);
            Ok(caps_trailer(format!("{event} {info} {args}"), &caps))
        }
        Some(Event::ProcessExit(exit)) => {
            let proc = exit.process.as_ref().ok_or(CompactError::MissingProcess)?;
            let event = p.label(Color::Blue, "💥", "exit");
            let (info, caps) = process_info(p, node, proc);
            let args = p.paint(Color::Cyan, &proc.arguments);
            let status = if exit.signal.is_empty() {
                p.paint(Color::Red, &exit.status.to_string())
            } else {
                p.paint(Color::Red, &exit.signal)
            };
            Ok(caps_trailer(
                format!("{event} {info} {args} {status}"),
                &caps,
            ))
        }
        Some(Event::ProcessThrottle(t)) => {
            let event = p.label(Color::Red, "🧬", "throttle");
            let typ = match ThrottleType::try_from(t.r#type) {
                Ok(ThrottleType::ThrottleStart) => p.paint(Color::Red, "START"),
                Ok(ThrottleType::ThrottleStop) => p.paint(Color::Green, "STOP "),
                _ => String::new(),
            };
            Ok(format!("{event} {typ} {}", t.cgroup))
        }
        Some(Event::ProcessKprobe(k)) => kprobe_to_string(k, node, p),
        Some(Event::ProcessTracepoint(tp)) => tracepoint::tracepoint_to_string(tp, node, p),
        Some(Event::ProcessLsm(lsm)) => {
            let proc = lsm.process.as_ref().ok_or(CompactError::MissingProcess)?;
            let (info, caps) = process_info(p, node, proc);
            let event = p.label(Color::Blue, "🔒", "LSM");
            Ok(caps_trailer(
                format!("{event} {info} {}", lsm.function_name),
                &caps,
            ))
        }
        Some(Event::ProcessUprobe(u)) => {
            let proc = u.process.as_ref().ok_or(CompactError::MissingProcess)?;
            let (info, caps) = process_info(p, node, proc);
            let event = p.label(Color::Blue, "🕵️", "uprobe");
            Ok(caps_trailer(
                format!("{event} {info} {} {}", u.path, u.symbol),
                &caps,
            ))
        }
        Some(Event::ProcessUsdt(u)) => {
            let proc = u.process.as_ref().ok_or(CompactError::MissingProcess)?;
            let (info, caps) = process_info(p, node, proc);
            let event = p.label(Color::Blue, "🕵️", "usdt");
            Ok(caps_trailer(
                format!("{event} {info} {} {} {}", u.path, u.provider, u.name),
                &caps,
            ))
        }
        Some(Event::RateLimitInfo(_)) => Err(CompactError::UnknownEventType("RATE_LIMIT_INFO")),
        None => Err(CompactError::UnknownEventType("UNDEF")),
    }
}

/// Source column and binary, plus the (possibly color-wrapped, possibly empty) caps trailer.
fn process_info(p: &Painter, node: &str, proc: &Process) -> (String, String) {
    let source = match &proc.pod {
        Some(pod) => p.paint(Color::Green, &format!("{}/{}", pod.namespace, pod.name)),
        None => p.paint(Color::Green, node),
    };
    let binary = p.paint(Color::Magenta, &proc.binary);
    // tetra iterates the *indices* of the effective set, so CAP_SYS_ADMIN shows whenever the
    // list has at least 22 entries, whatever they are. Reproduced deliberately.
    let caps = match &proc.cap {
        Some(c) if c.effective.len() > CAP_SYS_ADMIN => "🛑 CAP_SYS_ADMIN",
        _ => "",
    };
    (format!("{source} {binary}"), p.paint(Color::Magenta, caps))
}

/// Go's `fmt.Sprintf("%s %*s", str, 120-len(str), caps)`: width in bytes of `str`, padding
/// in code points of `caps`.
fn caps_trailer(line: String, caps: &str) -> String {
    if caps.is_empty() {
        return line;
    }
    let width = CAPS_PAD.saturating_sub(line.len());
    let pad = width.saturating_sub(caps.chars().count());
    format!("{line} {}{caps}", " ".repeat(pad))
}

fn stack_traces(ev: &GetEventsResponse, p: &Painter, out: &mut String) {
    let Some(Event::ProcessKprobe(k)) = &ev.event else {
        return;
    };
    if !k.kernel_stack_trace.is_empty() {
        out.push_str("Kernel:\n");
        for st in &k.kernel_stack_trace {
            out.push_str(&p.paint(Color::Green, &format!("   0x{:x}:", st.address)));
            out.push_str(&p.paint(Color::Blue, &format!(" {}", st.symbol)));
            out.push('+');
            out.push_str(&p.paint(Color::Yellow, &format!("0x{:x}\n", st.offset)));
        }
    }
    if !k.user_stack_trace.is_empty() {
        out.push_str("User:\n");
        for st in &k.user_stack_trace {
            out.push_str(&p.paint(Color::Green, &format!("   0x{:x}:", st.address)));
            if !st.symbol.is_empty() {
                out.push_str(&p.paint(Color::Blue, &format!(" {}", st.symbol)));
            }
            out.push_str(&p.paint(
                Color::Yellow,
                &format!(" ({}+0x{:x})\n", st.module, st.offset),
            ));
        }
    }
}

fn ima_hash(ev: &GetEventsResponse, p: &Painter, out: &mut String) {
    let Some(Event::ProcessLsm(lsm)) = &ev.event else {
        return;
    };
    if lsm.ima_hash.is_empty() {
        return;
    }
    let Some(path) = ima_path(lsm) else { return };
    if !path.is_empty() {
        out.push_str(&p.paint(Color::Green, &format!("   {path}")));
        out.push_str(&p.paint(Color::Blue, &format!(" {}\n", lsm.ima_hash)));
    }
}

/// tetra would crash on a missing or mistyped args[0]; we just omit the line.
fn ima_path(lsm: &ProcessLsm) -> Option<&str> {
    let arg = lsm.args.first()?.arg.as_ref()?;
    match (lsm.function_name.as_str(), arg) {
        (
            "bprm_check_security"
            | "bprm_committed_creds"
            | "bprm_committing_creds"
            | "bprm_creds_for_exec"
            | "bprm_creds_from_file",
            Arg::LinuxBinprmArg(b),
        ) => Some(&b.path),
        (
            "file_ioctl" | "file_lock" | "file_open" | "file_post_open" | "file_receive"
            | "mmap_file",
            Arg::FileArg(f),
        ) => Some(&f.path),
        _ => None,
    }
}

/// Go layout `2006-01-02T15:04:05.000000000Z07:00` in UTC (always ends in `Z`).
fn format_rfc3339_nano(secs: i64, nanos: i64) -> String {
    let total = i128::from(secs) * 1_000_000_000 + i128::from(nanos);
    let secs = total.div_euclid(1_000_000_000);
    let nanos = total.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let mut s = String::with_capacity(30);
    let _ = write!(
        s,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        sod / 3600,
        (sod % 3600) / 60,
        sod % 60
    );
    s
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i128) -> (i128, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tetragon::proto::tetragon::{
        Capabilities, KprobeArgument, KprobeFile, KprobePath, KprobeSock, Pod, ProcessExec,
        ProcessExit, ProcessKprobe, ProcessThrottle, ProcessTracepoint, ProcessUsdt, RateLimitInfo,
        StackTraceEntry, Test,
    };

    fn proc(binary: &str, args: &str, pod: Option<(&str, &str)>) -> Process {
        Process {
            binary: binary.into(),
            arguments: args.into(),
            pod: pod.map(|(ns, name)| Pod {
                namespace: ns.into(),
                name: name.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn resp(event: Event, node: &str) -> GetEventsResponse {
        GetEventsResponse {
            event: Some(event),
            node_name: node.into(),
            ..Default::default()
        }
    }

    fn xwing() -> Process {
        proc(
            "/usr/bin/curl",
            "https://ebpf.io/applications/#tetragon",
            Some(("default", "xwing")),
        )
    }

    fn kprobe(function: &str, process: Process, args: Vec<Arg>) -> Event {
        Event::ProcessKprobe(ProcessKprobe {
            process: Some(process),
            function_name: function.into(),
            args: args.into_iter().map(KprobeArgument::from).collect(),
            ..Default::default()
        })
    }

    fn file(path: &str) -> Arg {
        Arg::FileArg(KprobeFile {
            path: path.into(),
            ..Default::default()
        })
    }

    fn plain(ev: &GetEventsResponse) -> String {
        encode_compact(ev, &CompactOptions::default()).unwrap()
    }

    #[test]
    fn exec_in_pod_and_on_host() {
        let ev = resp(
            Event::ProcessExec(ProcessExec {
                process: Some(xwing()),
                ..Default::default()
            }),
            "n1",
        );
        assert_eq!(
            plain(&ev),
            "🚀 process default/xwing /usr/bin/curl https://ebpf.io/applications/#tetragon"
        );
        let ev = resp(
            Event::ProcessExec(ProcessExec {
                process: Some(proc("/usr/bin/curl", "cilium.io", None)),
                ..Default::default()
            }),
            "my-node",
        );
        assert_eq!(plain(&ev), "🚀 process my-node /usr/bin/curl cilium.io");
    }

    #[test]
    fn empty_node_name_leaves_double_space() {
        let ev = resp(
            Event::ProcessExec(ProcessExec {
                process: Some(proc("/bin/true", "", None)),
                ..Default::default()
            }),
            "",
        );
        assert_eq!(plain(&ev), "🚀 process  /bin/true ");
    }

    #[test]
    fn exit_with_signal_and_status() {
        let ev = resp(
            Event::ProcessExit(ProcessExit {
                process: Some(xwing()),
                signal: "SIGKILL".into(),
                ..Default::default()
            }),
            "n1",
        );
        assert_eq!(
            plain(&ev),
            "💥 exit    default/xwing /usr/bin/curl https://ebpf.io/applications/#tetragon SIGKILL"
        );
        let ev = resp(
            Event::ProcessExit(ProcessExit {
                process: Some(proc("/bin/false", "", None)),
                status: 1,
                ..Default::default()
            }),
            "host",
        );
        assert_eq!(plain(&ev), "💥 exit    host /bin/false  1");
    }

    #[test]
    fn kprobe_connect() {
        let sock = Arg::SockArg(KprobeSock {
            saddr: "10.32.0.28".into(),
            sport: 45200,
            daddr: "104.198.14.52".into(),
            dport: 443,
            ..Default::default()
        });
        let ev = resp(kprobe("tcp_connect", xwing(), vec![sock]), "n1");
        assert_eq!(
            plain(&ev),
            "🔌 connect default/xwing /usr/bin/curl tcp 10.32.0.28:45200 -> 104.198.14.52:443"
        );
    }

    #[test]
    fn kprobe_file_permission_read_write_other() {
        let cat = proc("/bin/cat", "/etc/shadow", Some(("default", "xwing")));
        let ev = resp(
            kprobe(
                "security_file_permission",
                cat.clone(),
                vec![file("/etc/shadow"), Arg::IntArg(4)],
            ),
            "",
        );
        assert_eq!(plain(&ev), "📚 read    default/xwing /bin/cat /etc/shadow");
        let ev = resp(
            kprobe(
                "security_file_permission",
                cat.clone(),
                vec![file("/etc/shadow"), Arg::IntArg(2)],
            ),
            "",
        );
        assert_eq!(plain(&ev), "📝 write   default/xwing /bin/cat /etc/shadow");
        let ev = resp(
            kprobe(
                "security_file_permission",
                cat.clone(),
                vec![file("/etc/shadow"), Arg::IntArg(8)],
            ),
            "",
        );
        assert_eq!(
            plain(&ev),
            "❓ security_file_permission default/xwing /bin/cat /etc/shadow"
        );
        let ev = resp(
            kprobe(
                "security_file_permission",
                cat.clone(),
                vec![Arg::IntArg(1), Arg::IntArg(4)],
            ),
            "",
        );
        assert!(matches!(
            encode_compact(&ev, &CompactOptions::default()),
            Err(CompactError::MalformedArgs { .. })
        ));
    }

    #[test]
    fn kprobe_mmap_and_truncate() {
        let p = proc("/usr/bin/python3", "x.py", None);
        let ev = resp(
            kprobe(
                "security_mmap_file",
                p.clone(),
                vec![file("/tmp/lib.so"), Arg::UintArg(5)],
            ),
            "node",
        );
        assert_eq!(plain(&ev), "📝 mmap-rx node /usr/bin/python3 /tmp/lib.so");
        let ev = resp(
            kprobe(
                "security_mmap_file",
                p.clone(),
                vec![file("/tmp/lib.so"), Arg::UintArg(7)],
            ),
            "node",
        );
        assert_eq!(plain(&ev), "📝 mmap-rwx node /usr/bin/python3 /tmp/lib.so");
        let path = Arg::PathArg(KprobePath {
            path: "/tmp/f".into(),
            ..Default::default()
        });
        let ev = resp(
            kprobe("security_path_truncate", p.clone(), vec![path]),
            "node",
        );
        assert_eq!(plain(&ev), "📝 truncate node /usr/bin/python3 /tmp/f");
        let ev = resp(
            kprobe("security_file_truncate", p.clone(), vec![file("/tmp/g")]),
            "node",
        );
        assert_eq!(plain(&ev), "📝 truncate node /usr/bin/python3 /tmp/g");
    }

    #[test]
    fn kprobe_syscalls_with_arch_prefix() {
        let p = proc("/bin/dd", "", None);
        let ev = resp(
            kprobe(
                "__x64_sys_write",
                p.clone(),
                vec![file("/dev/null"), Arg::IntArg(0), Arg::SizeArg(512)],
            ),
            "h",
        );
        assert_eq!(plain(&ev), "📝 write   h /bin/dd /dev/null 512 bytes");
        let ev = resp(
            kprobe("__arm64_sys_read", p.clone(), vec![file("/dev/zero")]),
            "h",
        );
        assert_eq!(plain(&ev), "📚 read    h /bin/dd /dev/zero ");
        let ev = resp(
            kprobe(
                "fd_install",
                p.clone(),
                vec![Arg::IntArg(3), file("/etc/passwd")],
            ),
            "h",
        );
        assert_eq!(plain(&ev), "📬 open    h /bin/dd /etc/passwd");
        let ev = resp(
            kprobe(
                "__x64_sys_openat",
                p.clone(),
                vec![Arg::IntArg(-100), Arg::StringArg("/etc/hosts".into())],
            ),
            "h",
        );
        assert_eq!(plain(&ev), "📬\u{fe0f} openat  h /bin/dd /etc/hosts");
    }

    #[test]
    fn kprobe_unknown_function() {
        let ev = resp(
            kprobe("__x64_sys_unlinkat", proc("/bin/rm", "-f x", None), vec![]),
            "h",
        );
        assert_eq!(plain(&ev), "❓ syscall h /bin/rm __x64_sys_unlinkat");
    }

    #[test]
    fn lsm() {
        let ev = resp(
            Event::ProcessLsm(ProcessLsm {
                process: Some(proc("/usr/bin/zsh", "", None)),
                function_name: "bprm_check_security".into(),
                ..Default::default()
            }),
            "user-nix",
        );
        assert_eq!(
            plain(&ev),
            "🔒 LSM     user-nix /usr/bin/zsh bprm_check_security"
        );
    }

    #[test]
    fn usdt_names_the_file_the_provider_and_the_probe() {
        let ev = resp(
            Event::ProcessUsdt(ProcessUsdt {
                process: Some(proc("/usr/bin/python3", "app.py", None)),
                path: "/usr/bin/python3".into(),
                provider: "python".into(),
                name: "function__entry".into(),
                ..Default::default()
            }),
            "n1",
        );
        assert_eq!(
            plain(&ev),
            "🕵️ usdt    n1 /usr/bin/python3 /usr/bin/python3 python function__entry"
        );
    }

    #[test]
    fn lsm_ima_hash_line() {
        let ev = resp(
            Event::ProcessLsm(ProcessLsm {
                process: Some(proc("/usr/bin/cat", "", None)),
                function_name: "file_open".into(),
                args: vec![KprobeArgument {
                    arg: Some(file("/etc/passwd")),
                    label: String::new(),
                }],
                ima_hash: "sha256:abcd".into(),
                ..Default::default()
            }),
            "n",
        );
        assert_eq!(
            plain(&ev),
            "🔒 LSM     n /usr/bin/cat file_open\n   /etc/passwd sha256:abcd"
        );
        let opts = CompactOptions {
            ima_hash: false,
            ..Default::default()
        };
        assert_eq!(
            encode_compact(&ev, &opts).unwrap(),
            "🔒 LSM     n /usr/bin/cat file_open"
        );
    }

    #[test]
    fn kprobe_stack_traces() {
        let mut ev = resp(kprobe("foo", proc("/b", "", None), vec![]), "n");
        if let Some(Event::ProcessKprobe(k)) = &mut ev.event {
            k.kernel_stack_trace = vec![StackTraceEntry {
                address: 0xffff_0001,
                offset: 0x1a,
                symbol: "do_sys".into(),
                module: "".into(),
            }];
            k.user_stack_trace = vec![StackTraceEntry {
                address: 0x4000,
                offset: 0x10,
                symbol: "".into(),
                module: "/lib/libc.so".into(),
            }];
        }
        assert_eq!(
            plain(&ev),
            "❓ syscall n /b foo\nKernel:\n   0xffff0001: do_sys+0x1a\nUser:\n   0x4000: (/lib/libc.so+0x10)"
        );
    }

    #[test]
    fn timestamps_prefix() {
        let mut ev = resp(
            Event::ProcessExec(ProcessExec {
                process: Some(proc("/bin/ls", "-l", None)),
                ..Default::default()
            }),
            "n",
        );
        ev.time = Some(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 123_456,
        });
        let opts = CompactOptions {
            timestamps: true,
            ..Default::default()
        };
        assert_eq!(
            encode_compact(&ev, &opts).unwrap(),
            "2023-11-14T22:13:20.000123456Z 🚀 process n /bin/ls -l"
        );
        ev.time = None;
        assert_eq!(
            encode_compact(&ev, &opts).unwrap(),
            "1970-01-01T00:00:00.000000000Z 🚀 process n /bin/ls -l"
        );
        assert_eq!(
            format_rfc3339_nano(951_782_400, 0),
            "2000-02-29T00:00:00.000000000Z"
        );
    }

    #[test]
    fn colors_match_fatih_color() {
        let ev = resp(
            Event::ProcessExit(ProcessExit {
                process: Some(proc("/bin/x", "a", Some(("ns", "p")))),
                signal: "SIGKILL".into(),
                ..Default::default()
            }),
            "n",
        );
        let opts = CompactOptions {
            color: true,
            ..Default::default()
        };
        let line = "\x1b[34m💥 exit   \x1b[0m \x1b[32mns/p\x1b[0m \x1b[35m/bin/x\x1b[0m \x1b[36ma\x1b[0m \x1b[31mSIGKILL\x1b[0m";
        // The colored, empty caps string is non-empty, so tetra pads the line to 120 bytes.
        let caps = "\x1b[35m\x1b[0m";
        let pad = 120 - line.len() - caps.chars().count();
        let expected = format!("{line} {}{caps}", " ".repeat(pad));
        assert_eq!(encode_compact(&ev, &opts).unwrap(), expected);
    }

    #[test]
    fn caps_trailer_quirk() {
        let mut p = proc("/bin/x", "", None);
        p.cap = Some(Capabilities {
            effective: vec![0; 22],
            ..Default::default()
        });
        let ev = resp(
            Event::ProcessExec(ProcessExec {
                process: Some(p),
                ..Default::default()
            }),
            "n",
        );
        let line = "🚀 process n /bin/x ";
        let caps = "🛑 CAP_SYS_ADMIN";
        let expected = format!(
            "{line} {}{caps}",
            " ".repeat(120 - line.len() - caps.chars().count())
        );
        assert_eq!(plain(&ev), expected);
    }

    #[test]
    fn throttle_and_test() {
        let ev = resp(
            Event::ProcessThrottle(ProcessThrottle {
                r#type: 1,
                cgroup: "/sys/fs/cgroup/x".into(),
            }),
            "n",
        );
        assert_eq!(plain(&ev), "🧬 throttle START /sys/fs/cgroup/x");
        let ev = resp(Event::Test(Test::default()), "n");
        assert_eq!(plain(&ev), "TEST EVENT");
    }

    #[test]
    fn errors_like_tetra() {
        let ev = resp(Event::ProcessExec(ProcessExec::default()), "n");
        let err = encode_compact(&ev, &CompactOptions::default()).unwrap_err();
        assert_eq!(err.to_string(), "process field is not set");
        let ev = resp(Event::RateLimitInfo(RateLimitInfo::default()), "n");
        let err = encode_compact(&ev, &CompactOptions::default()).unwrap_err();
        assert_eq!(err.to_string(), "unknown event type: RATE_LIMIT_INFO");
        let ev = GetEventsResponse::default();
        assert_eq!(
            encode_compact(&ev, &CompactOptions::default()).unwrap_err(),
            CompactError::UnknownEventType("UNDEF")
        );
    }

    fn tracepoint(subsys: &str, event: &str, process: Process, args: Vec<Arg>) -> Event {
        Event::ProcessTracepoint(ProcessTracepoint {
            process: Some(process),
            subsys: subsys.into(),
            event: event.into(),
            args: args.into_iter().map(KprobeArgument::from).collect(),
            ..Default::default()
        })
    }

    #[test]
    fn raw_syscalls_sys_enter_prints_the_syscall_by_name() {
        let ev = resp(
            tracepoint(
                "raw_syscalls",
                "sys_enter",
                proc("/usr/bin/cat", "/etc/shadow", None),
                vec![Arg::LongArg(if cfg!(target_arch = "aarch64") {
                    56
                } else {
                    257
                })],
            ),
            "node1",
        );
        assert_eq!(plain(&ev), "☎  syscall node1 /usr/bin/cat openat");
        let colored = encode_compact(
            &ev,
            &CompactOptions {
                color: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(
            colored.starts_with("\x1b[34m☎  syscall\x1b[0m "),
            "{colored}"
        );
        // Then the (empty, magenta) caps trailer pads the line, as on every process line.
        assert!(
            colored.contains(" \x1b[35m/usr/bin/cat\x1b[0m openat "),
            "{colored}"
        );
    }

    #[test]
    fn other_tracepoints_print_subsystem_and_event() {
        let ev = resp(
            tracepoint("sched", "sched_process_fork", xwing(), vec![]),
            "node1",
        );
        assert_eq!(
            plain(&ev),
            "⁉️ tracepoint default/xwing /usr/bin/curl sched sched_process_fork"
        );
        // Only the raw_syscalls subsystem's sys_enter is a syscall line.
        let ev = resp(
            tracepoint("syscalls", "sys_enter", proc("/bin/sh", "", None), vec![]),
            "n",
        );
        assert_eq!(plain(&ev), "⁉️ tracepoint n /bin/sh syscalls sys_enter");
    }

    #[test]
    fn a_tracepoint_without_process_is_an_error() {
        let ev = resp(Event::ProcessTracepoint(ProcessTracepoint::default()), "n");
        assert_eq!(
            encode_compact(&ev, &CompactOptions::default()).unwrap_err(),
            CompactError::MissingProcess
        );
    }
}
