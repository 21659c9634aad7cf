//! Compact lines of `process_tracepoint` events: `raw_syscalls/sys_enter` names the syscall
//! (`☎  syscall`), every other tracepoint prints its subsystem and event (`⁉️ tracepoint`).

use super::{Color, CompactError, Painter, caps_trailer, process_info};
use crate::tetragon::proto::tetragon::{ProcessTracepoint, kprobe_argument::Arg};

pub(super) fn tracepoint_to_string(
    tp: &ProcessTracepoint,
    node: &str,
    p: &Painter,
) -> Result<String, CompactError> {
    let proc = tp.process.as_ref().ok_or(CompactError::MissingProcess)?;
    let (info, caps) = process_info(p, node, proc);
    let line = if tp.subsys == "raw_syscalls" && tp.event == "sys_enter" {
        let event = p.label(Color::Blue, "☎ ", "syscall");
        // tetra leaves the name uncolored, unlike kprobe details.
        format!("{event} {info} {}", syscall_name(tp, DEFAULT_ABI))
    } else {
        let event = p.label(Color::Blue, "⁉️", "tracepoint");
        format!("{event} {info} {} {}", tp.subsys, tp.event)
    };
    Ok(caps_trailer(line, &caps))
}

/// The ABI tetra assumes for a bare syscall number: its own machine's.
const DEFAULT_ABI: &str = if cfg!(target_arch = "aarch64") {
    "arm64"
} else {
    "x64"
};

/// The syscall of a `sys_enter` event, by the number in its first argument (an `int64`
/// `long_arg`, or a `syscall64` `syscall_id` that also names its ABI), as tetra names it:
/// `unknown` when it cannot, prefixed with the ABI when that is not `default_abi`.
///
/// tetra also appends the syscall's parameters (`openat(int dfd=..., ...)`) from a signature
/// table of its own; no maintained crate carries those signatures, so we print the name only.
fn syscall_name(tp: &ProcessTracepoint, default_abi: &str) -> String {
    let (id, abi) = match tp.args.first().and_then(|a| a.arg.as_ref()) {
        Some(Arg::LongArg(id)) => (*id, default_abi),
        Some(Arg::SyscallId(s)) => (i64::from(s.id), s.abi.as_str()),
        _ => (-1, default_abi),
    };
    match name_in_abi(abi, id) {
        Some(name) if abi == default_abi => name.to_owned(),
        Some(name) => format!("{abi}/{name}"),
        None => "unknown".to_owned(),
    }
}

fn name_in_abi(abi: &str, id: i64) -> Option<&'static str> {
    let id = usize::try_from(id).ok()?;
    match abi {
        "x64" => syscalls::x86_64::Sysno::new(id).map(|s| s.name()),
        "i386" => syscalls::x86::Sysno::new(id).map(|s| s.name()),
        "arm64" => syscalls::aarch64::Sysno::new(id).map(|s| s.name()),
        "arm32" => syscalls::arm::Sysno::new(id).map(|s| s.name()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tetragon::proto::tetragon::{KprobeArgument, SyscallId};

    fn sys_enter(first: Option<Arg>) -> ProcessTracepoint {
        ProcessTracepoint {
            subsys: "raw_syscalls".into(),
            event: "sys_enter".into(),
            args: first.into_iter().map(KprobeArgument::from).collect(),
            ..Default::default()
        }
    }

    fn syscall_id(id: u32, abi: &str) -> Option<Arg> {
        Some(Arg::SyscallId(SyscallId {
            id,
            abi: abi.into(),
        }))
    }

    #[test]
    fn an_int64_id_is_named_in_the_default_abi() {
        let tp = sys_enter(Some(Arg::LongArg(257)));
        assert_eq!(syscall_name(&tp, "x64"), "openat");
        assert_eq!(syscall_name(&tp, "arm64"), "unknown");
        assert_eq!(
            syscall_name(&sys_enter(Some(Arg::LongArg(56))), "arm64"),
            "openat"
        );
    }

    #[test]
    fn a_syscall64_id_of_another_abi_is_prefixed_with_it() {
        assert_eq!(
            syscall_name(&sys_enter(syscall_id(59, "x64")), "x64"),
            "execve"
        );
        assert_eq!(
            syscall_name(&sys_enter(syscall_id(11, "i386")), "x64"),
            "i386/execve"
        );
        assert_eq!(
            syscall_name(&sys_enter(syscall_id(11, "arm32")), "arm64"),
            "arm32/execve"
        );
    }

    #[test]
    fn a_missing_negative_or_unassigned_id_is_unknown() {
        assert_eq!(syscall_name(&sys_enter(None), "x64"), "unknown");
        assert_eq!(
            syscall_name(&sys_enter(Some(Arg::LongArg(-1))), "x64"),
            "unknown"
        );
        assert_eq!(
            syscall_name(&sys_enter(Some(Arg::LongArg(100_000))), "x64"),
            "unknown"
        );
        assert_eq!(
            syscall_name(&sys_enter(Some(Arg::IntArg(0))), "x64"),
            "unknown"
        );
        assert_eq!(
            syscall_name(&sys_enter(syscall_id(0, "mips")), "x64"),
            "unknown"
        );
    }
}
