//! Compact lines of `process_kprobe` events: tetra picks the line by the probed function
//! (arch prefix removed), each with its own argument shapes.

use super::{Color, CompactError, Painter, caps_trailer, process_info};
use crate::tetragon::proto::tetragon::{
    KprobeArgument, KprobeFile, KprobeSock, ProcessKprobe, kprobe_argument::Arg,
};

fn file_arg(args: &[KprobeArgument], i: usize) -> Option<&KprobeFile> {
    match args.get(i)?.arg.as_ref()? {
        Arg::FileArg(f) => Some(f),
        _ => None,
    }
}

fn string_arg(args: &[KprobeArgument], i: usize) -> &str {
    match args.get(i).and_then(|a| a.arg.as_ref()) {
        Some(Arg::StringArg(s)) => s,
        _ => "",
    }
}

/// Go's proto getters return the zero value for a different oneof member.
fn int_arg(args: &[KprobeArgument], i: usize) -> i32 {
    match args.get(i).and_then(|a| a.arg.as_ref()) {
        Some(Arg::IntArg(v)) => *v,
        _ => 0,
    }
}

fn sock_arg<'a>(k: &'a ProcessKprobe, f: &str) -> Result<Option<&'a KprobeSock>, CompactError> {
    match k.args.first() {
        None => Ok(None),
        Some(KprobeArgument {
            arg: Some(Arg::SockArg(s)),
            ..
        }) => Ok(Some(s)),
        Some(_) => Err(malformed(f, "args[0] is not a sock_arg")),
    }
}

fn malformed(function: &str, reason: &'static str) -> CompactError {
    CompactError::MalformedArgs {
        function: function.to_owned(),
        reason,
    }
}

fn strip_arch_prefix(name: &str) -> &str {
    ["__x64_", "__arm64_", "__ia32_"]
        .iter()
        .find_map(|prefix| name.strip_prefix(prefix))
        .unwrap_or(name)
}

pub(super) fn kprobe_to_string(
    k: &ProcessKprobe,
    node: &str,
    p: &Painter,
) -> Result<String, CompactError> {
    let proc = k.process.as_ref().ok_or(CompactError::MissingProcess)?;
    let (info, caps) = process_info(p, node, proc);
    let args = k.args.as_slice();
    let f = k.function_name.as_str();
    let line = match strip_arch_prefix(f) {
        sc @ ("sys_write" | "sys_read") => {
            let event = if sc == "sys_write" {
                p.label(Color::Blue, "📝", "write")
            } else {
                p.label(Color::Blue, "📚", "read")
            };
            let file = file_arg(args, 0)
                .map(|f| p.paint(Color::Cyan, &f.path))
                .unwrap_or_default();
            let bytes = match args.get(2) {
                Some(a) => {
                    let n = match a.arg {
                        Some(Arg::SizeArg(n)) => n,
                        _ => 0,
                    };
                    p.paint(Color::Cyan, &format!("{n} bytes"))
                }
                None => String::new(),
            };
            format!("{event} {info} {file} {bytes}")
        }
        "fd_install" => {
            let event = p.label(Color::Blue, "📬", "open");
            let file = file_arg(args, 1)
                .map(|f| p.paint(Color::Cyan, &f.path))
                .unwrap_or_default();
            format!("{event} {info} {file}")
        }
        sc @ ("sys_openat" | "sys_open") => {
            let name = if sc == "sys_openat" { "openat" } else { "open" };
            let event = p.label(Color::Blue, "📬\u{fe0f}", name);
            let file = if args.len() > 1 {
                p.paint(Color::Cyan, string_arg(args, 1))
            } else {
                String::new()
            };
            format!("{event} {info} {file}")
        }
        "sys_close" => {
            let event = p.label(Color::Blue, "📪", "close");
            let file = file_arg(args, 0)
                .map(|f| p.paint(Color::Cyan, &f.path))
                .unwrap_or_default();
            format!("{event} {info} {file}")
        }
        sc @ ("sys_mount" | "sys_pivot_root") => {
            let name = if sc == "sys_mount" {
                "mount"
            } else {
                "pivot_root"
            };
            let event = p.label(Color::Blue, "💾", name);
            let src = if !args.is_empty() {
                p.paint(Color::Cyan, string_arg(args, 0))
            } else {
                String::new()
            };
            let dst = if args.len() > 1 {
                p.paint(Color::Cyan, string_arg(args, 1))
            } else {
                String::new()
            };
            format!("{event} {info} {src} {dst}")
        }
        "sys_setuid" => {
            let event = p.label(Color::Blue, "🔑", "setuid");
            let uid = if !args.is_empty() {
                p.paint(Color::Cyan, &int_arg(args, 0).to_string())
            } else {
                String::new()
            };
            format!("{event} {info} {uid}")
        }
        "sys_clock_settime" => format!("{} {info}", p.label(Color::Blue, "⏰", "clock_settime")),
        "proc_exec_connector" => format!(
            "{} {info}",
            p.label(Color::Blue, "🔧", "proc_exec_connector")
        ),
        "sys_setns" => {
            let event = p.label(Color::Blue, "🔧", "setns");
            let ns = if args.len() > 1 {
                ns_name(int_arg(args, 1))
            } else {
                ""
            };
            format!("{event} {info} {ns}")
        }
        sc @ ("tcp_connect" | "tcp_close" | "tcp_sendmsg") => {
            let event = match sc {
                "tcp_connect" => p.label(Color::Blue, "🔌", "connect"),
                "tcp_close" => p.label(Color::Blue, "🧹", "close"),
                _ => p.label(Color::Blue, "📤", "sendmsg"),
            };
            let sock = sock_arg(k, f)?
                .map(|s| {
                    p.paint(
                        Color::Cyan,
                        &format!("tcp {}:{} -> {}:{}", s.saddr, s.sport, s.daddr, s.dport),
                    )
                })
                .unwrap_or_default();
            if sc == "tcp_sendmsg" {
                let bytes = if args.len() > 1 { int_arg(args, 1) } else { 0 };
                format!("{event} {info} {sock} bytes {bytes}")
            } else {
                format!("{event} {info} {sock}")
            }
        }
        "bpf_check" => {
            let event = p.label(Color::Blue, "🐝", "bpf_load");
            let attr = match args.first().map(|a| &a.arg) {
                None => String::new(),
                Some(Some(Arg::BpfAttrArg(b))) => p.paint(
                    Color::Cyan,
                    &format!(
                        "{} {} instruction count {}",
                        b.prog_type, b.prog_name, b.insn_cnt
                    ),
                ),
                Some(_) => return Err(malformed(f, "args[0] is not a bpf_attr_arg")),
            };
            format!("{event} {info} {attr}")
        }
        "security_perf_event_alloc" => {
            let event = p.label(Color::Blue, "🐝", "perf_event_alloc");
            let attr = match args.first().map(|a| &a.arg) {
                None => String::new(),
                Some(Some(Arg::PerfEventArg(e))) => {
                    p.paint(Color::Cyan, &format!("{} {}", e.r#type, e.kprobe_func))
                }
                Some(_) => return Err(malformed(f, "args[0] is not a perf_event_arg")),
            };
            format!("{event} {info} {attr}")
        }
        "security_bpf_map_alloc" | "security_bpf_map_create" => {
            let event = p.label(Color::Blue, "🗺", "bpf_map_create");
            let attr = match args.first().map(|a| &a.arg) {
                None => String::new(),
                Some(Some(Arg::BpfMapArg(m))) => p.paint(
                    Color::Cyan,
                    &format!(
                        "{} {} key size {} value size {} max entries {}",
                        m.map_type, m.map_name, m.key_size, m.value_size, m.max_entries
                    ),
                ),
                Some(_) => return Err(malformed(f, "args[0] is not a bpf_map_arg")),
            };
            format!("{event} {info} {attr}")
        }
        "security_file_permission" => {
            let mut event = p.label(Color::Blue, "❓", "security_file_permission");
            let mut attr = String::new();
            if args.len() > 1 {
                let file =
                    file_arg(args, 0).ok_or_else(|| malformed(f, "args[0] is not a file_arg"))?;
                match int_arg(args, 1) {
                    0x02 => event = p.label(Color::Blue, "📝", "write"),
                    0x04 => event = p.label(Color::Blue, "📚", "read"),
                    _ => {}
                }
                attr = p.paint(Color::Cyan, &file.path);
            }
            format!("{event} {info} {attr}")
        }
        "security_mmap_file" => {
            let mut event = p.label(Color::Blue, "❓", "security_mmap_file");
            let mut attr = String::new();
            if args.len() > 1 {
                let file =
                    file_arg(args, 0).ok_or_else(|| malformed(f, "args[0] is not a file_arg"))?;
                let prot = match args[1].arg {
                    Some(Arg::UintArg(v)) => v,
                    _ => 0,
                };
                let mut tag = String::from("mmap-");
                for (bit, c) in [(0x01, 'r'), (0x02, 'w'), (0x04, 'x')] {
                    if prot & bit != 0 {
                        tag.push(c);
                    }
                }
                event = p.label(Color::Blue, "📝", &tag);
                attr = p.paint(Color::Cyan, &file.path);
            }
            format!("{event} {info} {attr}")
        }
        sc @ ("security_path_truncate" | "security_file_truncate") => {
            let mut event = p.label(Color::Blue, "❓", sc);
            let mut attr = String::new();
            if let Some(a) = args.first() {
                let path = match (&a.arg, sc) {
                    (Some(Arg::PathArg(pa)), "security_path_truncate") => &pa.path,
                    (Some(Arg::FileArg(fa)), "security_file_truncate") => &fa.path,
                    _ => {
                        return Err(malformed(
                            f,
                            "args[0] has the wrong type for a truncate hook",
                        ));
                    }
                };
                attr = p.paint(Color::Cyan, path);
                event = p.label(Color::Blue, "📝", "truncate");
            }
            format!("{event} {info} {attr}")
        }
        _ => format!("{} {info} {f}", p.label(Color::Blue, "❓", "syscall")),
    };
    Ok(caps_trailer(line, &caps))
}

fn ns_name(flag: i32) -> &'static str {
    match flag {
        0 => "any",
        0x0200_0000 => "cgroup",
        0x0800_0000 => "ipc",
        0x4000_0000 => "net",
        0x0002_0000 => "mnt",
        0x2000_0000 => "pid",
        0x80 => "time",
        0x1000_0000 => "user",
        0x0400_0000 => "uts",
        _ => "",
    }
}
