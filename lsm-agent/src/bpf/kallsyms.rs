//! Kernel symbol addresses from `/proc/kallsyms`: the functions a kprobe may name (a static
//! function may have several) and the kernel's `rename_lock` and `mount_lock`, whose sequence
//! counts tell `file_open` that no dentry's path changed (`KernelConfig::rename_lock`).

use std::io::{BufRead, BufReader};

const KALLSYMS: &str = "/proc/kallsyms";

/// Every address of each of `symbols` in the lines of `text`, in `symbols`' order. Stops
/// after the first address of each when `first_only` (the locks: one each, in the kernel
/// image, listed before any module).
fn scan(text: impl BufRead, symbols: &[&str], first_only: bool) -> Vec<Vec<u64>> {
    let mut out = vec![Vec::new(); symbols.len()];
    for line in text.lines() {
        let Ok(line) = line else { break };
        let mut f = line.split_whitespace();
        let (Some(addr), Some(_), Some(name)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if let Some(i) = symbols.iter().position(|s| *s == name)
            && let Ok(a) = u64::from_str_radix(addr, 16)
        {
            out[i].push(a);
            if first_only && out.iter().all(|v| !v.is_empty()) {
                break;
            }
        }
    }
    out
}

fn open() -> Result<BufReader<std::fs::File>, String> {
    std::fs::File::open(KALLSYMS)
        .map(BufReader::new)
        .map_err(|e| format!("reading {KALLSYMS}: {e}"))
}

/// Every address of `symbol`; an error when kallsyms hides addresses (`kptr_restrict`).
pub fn addrs(symbol: &str) -> Result<Vec<u64>, String> {
    let out = scan(open()?, &[symbol], false).swap_remove(0);
    if out.iter().all(|&a| a == 0) && !out.is_empty() {
        return Err(format!(
            "{KALLSYMS} hides addresses (kptr_restrict): run as root"
        ));
    }
    Ok(out)
}

/// The first address of each of `symbols`, 0 for one not listed or hidden.
pub fn first_addrs(symbols: &[&str]) -> Result<Vec<u64>, String> {
    Ok(scan(open()?, symbols, true)
        .into_iter()
        .map(|v| v.first().copied().unwrap_or(0))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "ffffffff81000000 T _stext\n\
        ffffffff81234560 t fd_install.isra.0\n\
        ffffffff81234570 T fd_install\n\
        ffffffff82a01040 D rename_lock\n\
        ffffffff82a01100 d mount_lock\n\
        ffffffffc0001000 t fd_install\t[some_module]\n";

    #[test]
    fn every_address_of_a_symbol_is_found_module_ones_included() {
        let found = scan(TEXT.as_bytes(), &["fd_install"], false);
        assert_eq!(found, [vec![0xffff_ffff_8123_4570, 0xffff_ffff_c000_1000]]);
    }

    #[test]
    fn the_first_address_of_each_symbol_is_found_in_the_order_asked() {
        let found = scan(
            TEXT.as_bytes(),
            &["mount_lock", "rename_lock", "nope"],
            true,
        );
        assert_eq!(
            found,
            [
                vec![0xffff_ffff_82a0_1100],
                vec![0xffff_ffff_82a0_1040],
                vec![]
            ]
        );
    }
}
