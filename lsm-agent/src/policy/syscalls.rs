//! Syscall names as policies write them, and their numbers.
//!
//! A policy names a syscall `sys_X` (portable) or by the kernel symbol of one architecture's
//! entry point: `__x64_sys_X`, `__arm64_sys_X` or `__ia32_sys_X` (32-bit x86 programs on an
//! x86_64 kernel). Tetragon's rule (`pkg/arch`): a symbol that already carries a prefix is used
//! as it is, but only on the architecture of that prefix; any other name gets the running
//! architecture's prefix. Lists of `type: syscalls` may also write `ABI/name` (`i386/sys_dup`).
//!
//! Numbers come from the `syscalls` crate's tables (generated from the kernel's own), not
//! from a table of ours.

use std::fmt;
use std::str::FromStr;

/// The architectures whose syscall entry symbols Tetragon knows by prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SyscallArch {
    X86_64,
    Arm64,
    /// 32-bit x86 programs on an x86_64 kernel (`__ia32_sys_*`, `int 0x80` numbers).
    Ia32,
}

impl SyscallArch {
    /// All of them, in the order prefixes are tried.
    pub const ALL: [SyscallArch; 3] = [Self::X86_64, Self::Arm64, Self::Ia32];

    /// The prefix of this architecture's syscall entry symbols.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::X86_64 => "__x64_",
            Self::Arm64 => "__arm64_",
            Self::Ia32 => "__ia32_",
        }
    }

    /// The 64-bit architecture this agent was built for, if it is one with prefixed syscall
    /// symbols. The agent runs on the kernel of its own architecture.
    pub fn host() -> Option<Self> {
        if cfg!(target_arch = "x86_64") {
            Some(Self::X86_64)
        } else if cfg!(target_arch = "aarch64") {
            Some(Self::Arm64)
        } else {
            None
        }
    }

    /// Whether syscall numbers of this architecture are those of a 32-bit ABI, which
    /// Tetragon marks with [`IS_32BIT`] in syscall-number maps.
    pub fn is_32bit(self) -> bool {
        self == Self::Ia32
    }
}

impl fmt::Display for SyscallArch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::X86_64 => "x86_64",
            Self::Arm64 => "arm64",
            Self::Ia32 => "ia32",
        })
    }
}

/// The bit Tetragon sets in a syscall number of a 32-bit ABI (`raw_syscalls` events of
/// compat tasks carry it too), so that `dup` on ia32 (41) and `pipe` on x86_64 (22) differ.
pub const IS_32BIT: u64 = 0x8000_0000;

/// A syscall name with its architecture prefix and `sys_` taken off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortableSyscall<'a> {
    /// The syscall's name (`openat`), as in the kernel's syscall tables.
    pub name: &'a str,
    /// The architecture the symbol was written for, if it had a prefix.
    pub arch: Option<SyscallArch>,
    /// Whether the name had the `sys_` of a kernel symbol (`sys_openat`, `__x64_sys_openat`)
    /// rather than being a bare syscall name (`openat`).
    pub had_sys: bool,
}

/// Splits a symbol as written in a policy into its architecture prefix and the rest
/// (`__x64_sys_openat` → x86_64, `sys_openat`). Tetragon's `CutSyscallPrefix`.
pub fn cut_prefix(symbol: &str) -> (Option<SyscallArch>, &str) {
    for arch in SyscallArch::ALL {
        if let Some(rest) = symbol.strip_prefix(arch.prefix()) {
            return (Some(arch), rest);
        }
    }
    (None, symbol)
}

/// `sys_X`, `__x64_sys_X`, `__arm64_sys_X`, `__ia32_sys_X` (and a bare `X`) → `X` and the
/// architecture of the prefix, if any.
pub fn portable_name(symbol: &str) -> PortableSyscall<'_> {
    let (arch, rest) = cut_prefix(symbol);
    match rest.strip_prefix("sys_") {
        Some(name) => PortableSyscall {
            name,
            arch,
            had_sys: true,
        },
        None => PortableSyscall {
            name: rest,
            arch,
            had_sys: false,
        },
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyscallNameError {
    #[error(
        "\"{symbol}\" is the {written} entry point of a syscall; this node is {target} (write sys_{name} to attach on any architecture)"
    )]
    WrongArch {
        symbol: String,
        name: String,
        written: SyscallArch,
        target: SyscallArch,
    },
    #[error("unknown syscall ABI \"{0}\" (expected x64, i386, arm64 or arm32)")]
    UnknownAbi(String),
    #[error("no syscall named \"{name}\" on {arch}")]
    UnknownSyscall { name: String, arch: SyscallArch },
    #[error("ABI {abi} does not match the prefix of \"{symbol}\"")]
    AbiMismatch { abi: String, symbol: String },
}

/// The kernel symbol to attach to for a `syscall: true` call on `target` (Tetragon's
/// `AddSyscallPrefix`): a name with `target`'s prefix is kept, one with another
/// architecture's prefix is an error, anything else gets `target`'s prefix. An ia32 symbol
/// is accepted on x86_64, whose kernel has those entry points too.
pub fn attach_symbol(symbol: &str, target: SyscallArch) -> Result<String, SyscallNameError> {
    match cut_prefix(symbol) {
        (Some(arch), _) if arch == target => Ok(symbol.to_string()),
        (Some(SyscallArch::Ia32), _) if target == SyscallArch::X86_64 => Ok(symbol.to_string()),
        (Some(written), rest) => Err(SyscallNameError::WrongArch {
            symbol: symbol.to_string(),
            name: rest.strip_prefix("sys_").unwrap_or(rest).to_string(),
            written,
            target,
        }),
        (None, _) => Ok(format!("{}{symbol}", target.prefix())),
    }
}

/// The number of syscall `name` (without `sys_`) on `arch`, or `None` if that architecture
/// has no such syscall.
pub fn syscall_number(name: &str, arch: SyscallArch) -> Option<u32> {
    let id = match arch {
        SyscallArch::X86_64 => syscalls::x86_64::Sysno::from_str(name).ok()?.id(),
        SyscallArch::Arm64 => syscalls::aarch64::Sysno::from_str(name).ok()?.id(),
        SyscallArch::Ia32 => syscalls::x86::Sysno::from_str(name).ok()?.id(),
    };
    u32::try_from(id).ok()
}

/// Every syscall name of `arch`, for lists of `type: generated_syscalls`.
pub fn all_syscalls(arch: SyscallArch) -> Vec<&'static str> {
    match arch {
        SyscallArch::X86_64 => syscalls::x86_64::Sysno::iter().map(|s| s.name()).collect(),
        SyscallArch::Arm64 => syscalls::aarch64::Sysno::iter().map(|s| s.name()).collect(),
        SyscallArch::Ia32 => syscalls::x86::Sysno::iter().map(|s| s.name()).collect(),
    }
}

/// A syscall of a `type: syscalls` list, resolved for a node of architecture `host`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListSyscall {
    /// The syscall's name without prefix or `sys_`.
    pub name: String,
    /// The ABI the number is in (ia32 for `__ia32_sys_X` or `i386/sys_X` on x86_64).
    pub arch: SyscallArch,
    /// The kernel symbol of its entry point (`__x64_sys_dup`).
    pub symbol: String,
    /// The number as the kernel reports it in `raw_syscalls` events: [`IS_32BIT`] set for
    /// 32-bit ABIs.
    pub id: u64,
}

/// Resolves a value of a `type: syscalls` list (`sys_dup`, `__ia32_sys_dup`, `i386/sys_dup`,
/// `dup`) for a node of architecture `host`. Follows Tetragon's `SyscallVal`: the ABI comes
/// from the `ABI/` part, else from the prefix, else it is the host's.
pub fn resolve_list_value(value: &str, host: SyscallArch) -> Result<ListSyscall, SyscallNameError> {
    let (abi, symbol) = match value.split_once('/') {
        Some((abi, symbol)) => {
            let abi_arch = match abi {
                "x64" => SyscallArch::X86_64,
                "i386" => SyscallArch::Ia32,
                "arm64" => SyscallArch::Arm64,
                // 32-bit arm programs enter through the arm64 entry points; their numbers
                // are not in the tables we have.
                other => return Err(SyscallNameError::UnknownAbi(other.to_string())),
            };
            if let (Some(prefix), _) = cut_prefix(symbol) {
                let compatible = prefix == abi_arch
                    || (prefix == SyscallArch::X86_64 && abi_arch == SyscallArch::Ia32);
                if !compatible {
                    return Err(SyscallNameError::AbiMismatch {
                        abi: abi.to_string(),
                        symbol: symbol.to_string(),
                    });
                }
            }
            (abi_arch, symbol)
        }
        None => (cut_prefix(value).0.unwrap_or(host), value),
    };
    let portable = portable_name(symbol);
    // An x86_64 kernel also runs 32-bit x86 programs; no other cross-ABI entry is known here.
    if abi != host && !(abi == SyscallArch::Ia32 && host == SyscallArch::X86_64) {
        return Err(SyscallNameError::WrongArch {
            symbol: value.to_string(),
            name: portable.name.to_string(),
            written: abi,
            target: host,
        });
    }
    let number =
        syscall_number(portable.name, abi).ok_or_else(|| SyscallNameError::UnknownSyscall {
            name: portable.name.to_string(),
            arch: abi,
        })?;
    let id = u64::from(number) | if abi.is_32bit() { IS_32BIT } else { 0 };
    Ok(ListSyscall {
        name: portable.name.to_string(),
        arch: abi,
        symbol: format!("{}sys_{}", abi.prefix(), portable.name),
        id,
    })
}

#[cfg(test)]
mod tests {
    use super::SyscallArch::{Arm64, Ia32, X86_64};
    use super::*;

    #[test]
    fn prefixed_and_portable_names_give_the_same_syscall() {
        for (symbol, arch) in [
            ("sys_openat", None),
            ("__x64_sys_openat", Some(X86_64)),
            ("__arm64_sys_openat", Some(Arm64)),
            ("__ia32_sys_openat", Some(Ia32)),
        ] {
            let p = portable_name(symbol);
            assert_eq!(
                (p.name, p.arch, p.had_sys),
                ("openat", arch, true),
                "{symbol}"
            );
        }
        let bare = portable_name("openat");
        assert_eq!(
            (bare.name, bare.arch, bare.had_sys),
            ("openat", None, false)
        );
        // Not a syscall symbol: left as it is.
        assert_eq!(
            portable_name("security_file_open").name,
            "security_file_open"
        );
    }

    #[test]
    fn attach_symbol_adds_the_host_prefix_and_refuses_another_architecture() {
        assert_eq!(
            attach_symbol("sys_ptrace", X86_64).unwrap(),
            "__x64_sys_ptrace"
        );
        assert_eq!(
            attach_symbol("sys_ptrace", Arm64).unwrap(),
            "__arm64_sys_ptrace"
        );
        assert_eq!(
            attach_symbol("__x64_sys_ptrace", X86_64).unwrap(),
            "__x64_sys_ptrace"
        );
        assert_eq!(
            attach_symbol("__ia32_sys_dup", X86_64).unwrap(),
            "__ia32_sys_dup"
        );
        let e = attach_symbol("__arm64_sys_openat", X86_64).unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"__arm64_sys_openat\" is the arm64 entry point of a syscall; this node is x86_64 \
             (write sys_openat to attach on any architecture)"
        );
        assert!(attach_symbol("__x64_sys_openat", Arm64).is_err());
    }

    #[test]
    fn syscall_numbers_come_from_each_architectures_table() {
        assert_eq!(syscall_number("dup", X86_64), Some(32));
        assert_eq!(syscall_number("dup2", X86_64), Some(33));
        assert_eq!(syscall_number("dup", Ia32), Some(41));
        assert_eq!(syscall_number("dup", Arm64), Some(23));
        // arm64 has only dup3.
        assert_eq!(syscall_number("dup2", Arm64), None);
        assert_eq!(syscall_number("no_such_call", X86_64), None);
    }

    #[test]
    fn list_values_resolve_to_symbol_and_number_with_the_32bit_flag_for_ia32() {
        let dup = resolve_list_value("sys_dup", X86_64).unwrap();
        assert_eq!(
            (dup.symbol.as_str(), dup.id, dup.arch),
            ("__x64_sys_dup", 32, X86_64)
        );
        let ia32 = resolve_list_value("__ia32_sys_dup", X86_64).unwrap();
        assert_eq!(ia32.symbol, "__ia32_sys_dup");
        assert_eq!(ia32.id, 41 | IS_32BIT);
        let abi = resolve_list_value("i386/sys_dup", X86_64).unwrap();
        assert_eq!(abi, ia32);
        let arm = resolve_list_value("sys_dup", Arm64).unwrap();
        assert_eq!((arm.symbol.as_str(), arm.id), ("__arm64_sys_dup", 23));
    }

    #[test]
    fn list_values_for_another_architecture_or_unknown_syscalls_are_errors() {
        assert!(matches!(
            resolve_list_value("__arm64_sys_dup", X86_64),
            Err(SyscallNameError::WrongArch { .. })
        ));
        assert!(matches!(
            resolve_list_value("sys_dup2", Arm64),
            Err(SyscallNameError::UnknownSyscall { .. })
        ));
        assert!(matches!(
            resolve_list_value("mips/sys_dup", X86_64),
            Err(SyscallNameError::UnknownAbi(_))
        ));
        assert!(matches!(
            resolve_list_value("i386/__arm64_sys_dup", X86_64),
            Err(SyscallNameError::AbiMismatch { .. })
        ));
    }

    #[test]
    fn generated_syscall_lists_hold_every_syscall_of_the_architecture() {
        let all = all_syscalls(X86_64);
        assert!(all.contains(&"openat") && all.contains(&"dup2"));
        assert!(all.len() > 300, "{}", all.len());
        assert!(!all_syscalls(Arm64).contains(&"dup2"));
    }
}
