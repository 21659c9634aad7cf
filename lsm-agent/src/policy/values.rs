//! Parsers for the values written in a policy: Go-syntax integers, string values, ranges,
//! namespace inodes, capability names and rate limits ([`net`] has the network ones). Each
//! takes the YAML path of the value list so that a bad value is reported at its item.

pub(crate) mod net;

use lsm_shared::{LPM_STR_LEN, STR_LEN};

use super::ir::{self, ArgType, NumOp, StrOp};
use super::lists::Lists;
use super::validate::{VResult, invalid};

/// Tetragon's `MAX_MATCH_VALUES` for numeric operators.
const MAX_NUM_VALUES: usize = 4;

/// String values of a string operator `op`: at most as long as the kernel's keys for it.
pub(crate) fn string_values(vpath: &str, values: &[String], op: StrOp) -> VResult<Vec<Vec<u8>>> {
    let (max, what) = match op {
        StrOp::Equal => (STR_LEN, "Equal/NotEqual"),
        StrOp::Prefix => (LPM_STR_LEN, "Prefix/NotPrefix"),
        StrOp::Postfix => (LPM_STR_LEN, "Postfix/NotPostfix"),
    };
    values
        .iter()
        .enumerate()
        .map(|(v, s)| {
            let s = trim_nuls(s);
            if s.len() > max {
                return Err(invalid(
                    format!("{vpath}[{v}]"),
                    format!(
                        "value is {} bytes long; {what} values are at most {max} bytes",
                        s.len()
                    ),
                ));
            }
            Ok(s.as_bytes().to_vec())
        })
        .collect()
}

/// Integer values (or `min:max` ranges for `InRange`/`NotInRange`) of a numeric filter on
/// `arg`, extended to 64 bits as the kernel compares them.
pub(crate) fn numeric_values(
    vpath: &str,
    values: &[String],
    op: NumOp,
    arg: &ir::ArgSpec,
) -> VResult<Vec<u64>> {
    let ranges = matches!(op, NumOp::InRange | NumOp::NotInRange);
    if values.len() > MAX_NUM_VALUES {
        return Err(invalid(
            format!("{vpath}[{MAX_NUM_VALUES}]"),
            format!(
                "at most {MAX_NUM_VALUES} {} per numeric filter (Tetragon's limit)",
                if ranges { "ranges" } else { "values" }
            ),
        ));
    }
    let mut out = Vec::with_capacity(values.len() * if ranges { 2 } else { 1 });
    for (v, text) in values.iter().enumerate() {
        let path = format!("{vpath}[{v}]");
        if ranges {
            let (lo, hi) = text.split_once(':').ok_or_else(|| {
                invalid(&path, format!("range \"{text}\" must be written min:max"))
            })?;
            let lo = int_for_arg(&path, lo, arg)?;
            let hi = int_for_arg(&path, hi, arg)?;
            if lo > hi {
                return Err(invalid(
                    &path,
                    format!("range \"{text}\" has min greater than max"),
                ));
            }
            out.push(extend(lo, arg.ty));
            out.push(extend(hi, arg.ty));
        } else {
            let n = int_for_arg(&path, text, arg)?;
            out.push(extend(n, arg.ty));
        }
    }
    Ok(out)
}

/// Values of a filter on a capability set: each a numeric mask (Go integer syntax) or a
/// comma-separated list of `CAP_*` names, as the 64-bit set they stand for.
pub(crate) fn cap_values(vpath: &str, values: &[String]) -> VResult<Vec<u64>> {
    if values.len() > MAX_NUM_VALUES {
        return Err(invalid(
            format!("{vpath}[{MAX_NUM_VALUES}]"),
            format!("at most {MAX_NUM_VALUES} values per numeric filter (Tetragon's limit)"),
        ));
    }
    values
        .iter()
        .enumerate()
        .map(|(v, text)| {
            let path = format!("{vpath}[{v}]");
            if let Some(n) = parse_go_int(text.trim()) {
                return u64::try_from(n)
                    .map_err(|_| invalid(&path, format!("mask {text} is not a 64-bit set")));
            }
            text.split(',').try_fold(0u64, |mask, name| {
                capability_number(name)
                    .map(|n| mask | (1u64 << n))
                    .ok_or_else(|| {
                        invalid(
                            &path,
                            format!(
                                "unknown capability \"{}\" (expected CAP_* names, \
                                 comma-separated, or a numeric mask)",
                                name.trim()
                            ),
                        )
                    })
            })
        })
        .collect()
}

/// Members of one `InMap`/`NotInMap` set at most: a quarter of the kernel's set map, which
/// holds every filter's members, twice during a switch.
pub(crate) const MAX_SET_MEMBERS: usize = (lsm_shared::NUM_SET_ENTRIES / 4) as usize;

/// The members of an `InMap`/`NotInMap` filter on `arg`: integers, `min:max` ranges, and
/// `list:NAME` references to a list of syscalls (their numbers), as Tetragon takes them;
/// extended to 64 bits as the kernel compares them, without repeats.
pub(crate) fn set_values(
    vpath: &str,
    values: &[String],
    arg: &ir::ArgSpec,
    lists: &Lists,
) -> VResult<Vec<u64>> {
    let mut out = std::collections::BTreeSet::new();
    for (v, text) in values.iter().enumerate() {
        let path = format!("{vpath}[{v}]");
        if text.starts_with("list:") {
            for &id in lists.syscall_ids(&path, text)? {
                out.insert(extend(i128::from(id), arg.ty));
            }
        } else if let Some((lo, hi)) = text.split_once(':') {
            let lo = int_for_arg(&path, lo, arg)?;
            let hi = int_for_arg(&path, hi, arg)?;
            if lo > hi {
                return Err(invalid(
                    &path,
                    format!("range \"{text}\" has min greater than max"),
                ));
            }
            if hi - lo >= MAX_SET_MEMBERS as i128 {
                return Err(invalid(
                    &path,
                    format!(
                        "range \"{text}\" has {} members; an InMap set holds at most \
                         {MAX_SET_MEMBERS} (use InRange for wide ranges)",
                        hi - lo + 1
                    ),
                ));
            }
            out.extend((lo..=hi).map(|n| extend(n, arg.ty)));
        } else {
            out.insert(extend(int_for_arg(&path, text, arg)?, arg.ty));
        }
        if out.len() > MAX_SET_MEMBERS {
            return Err(invalid(
                &path,
                format!("the set has more than {MAX_SET_MEMBERS} members"),
            ));
        }
    }
    Ok(out.into_iter().collect())
}

/// Tetragon trims trailing NULs from string values; policies write them as a real NUL
/// (`"\0"` in double quotes) or as the two characters `\0`.
fn trim_nuls(mut s: &str) -> &str {
    loop {
        if let Some(t) = s.strip_suffix('\0') {
            s = t;
        } else if let Some(t) = s.strip_suffix("\\0") {
            s = t;
        } else {
            return s;
        }
    }
}

/// Sign-extends signed values and zero-extends unsigned ones to 64 bits.
fn extend(n: i128, ty: ArgType) -> u64 {
    match ty {
        ArgType::Int { signed: true, .. } => (n as i64) as u64,
        _ => n as u64,
    }
}

fn int_for_arg(path: &str, text: &str, arg: &ir::ArgSpec) -> VResult<i128> {
    let ArgType::Int { width, signed } = arg.ty else {
        return Err(invalid(path, "numeric value on a non-integer argument"));
    };
    let n = parse_go_int(text).ok_or_else(|| {
        invalid(
            path,
            format!(
                "invalid integer \"{text}\" (expected decimal, 0x hex, 0o or leading-0 octal, \
                 or 0b binary)"
            ),
        )
    })?;
    let bits = u32::from(width) * 8;
    let (min, max): (i128, i128) = if signed {
        (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
    } else {
        (0, (1i128 << bits) - 1)
    };
    if n < min || n > max {
        return Err(invalid(
            path,
            format!(
                "value {text} does not fit argument {} of type {} ({min}..={max})",
                arg.spec_index, arg.type_name
            ),
        ));
    }
    Ok(n)
}

/// Go's `strconv.ParseInt(s, 0, 64)` syntax: optional sign, then decimal, `0x` hex, `0o` or
/// leading-`0` octal, or `0b` binary, with `_` allowed between digits. Range checks are the
/// caller's; anything beyond 64 bits is `None`.
fn parse_go_int(s: &str) -> Option<i128> {
    let (neg, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let lower = body.to_ascii_lowercase();
    let (radix, digits) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, &lower[1..])
    } else {
        (10, lower.as_str())
    };
    if digits.is_empty() || digits.starts_with('_') && radix == 10 || digits.ends_with('_') {
        return None;
    }
    if digits.contains("__") {
        return None;
    }
    let mut n: i128 = 0;
    for c in digits.chars().filter(|c| *c != '_') {
        let d = c.to_digit(radix)?;
        n = n * i128::from(radix) + i128::from(d);
        if n > i128::from(u64::MAX) {
            return None;
        }
    }
    Some(if neg { -n } else { n })
}

/// A namespace inode in decimal (no sign, as Go's `ParseUint(v, 10, 32)`), or `host_ns`.
pub(crate) fn ns_value(path: &str, text: &str) -> VResult<ir::NsValue> {
    if text == "host_ns" {
        return Ok(ir::NsValue::Host);
    }
    text.bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| text.parse::<u32>().ok())
        .flatten()
        .map(ir::NsValue::Inode)
        .ok_or_else(|| {
            invalid(
                path,
                format!(
                    "invalid namespace value \"{text}\" (expected host_ns or a decimal inode \
                     number up to {})",
                    u32::MAX
                ),
            )
        })
}

/// Linux capability names by number (`CAP_CHOWN` = 0 ... `CAP_CHECKPOINT_RESTORE` = 40).
pub(crate) const CAPABILITIES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The number of a capability name. Like Tetragon, surrounding spaces and case are ignored,
/// and capability 1 is also accepted as `DAC_OVERRIDE` (Tetragon's API enum spells it so).
pub(crate) fn capability_number(name: &str) -> Option<u32> {
    let name = name.trim();
    if name.eq_ignore_ascii_case("DAC_OVERRIDE") {
        return Some(1);
    }
    CAPABILITIES
        .iter()
        .position(|c| c.eq_ignore_ascii_case(name))
        .map(|n| n as u32)
}

/// Tetragon's `rateLimit`: a number of seconds, or a number with an `s`, `m` or `h` suffix.
/// Returns milliseconds; `Some(None)` for 0, which disables rate limiting.
pub(crate) fn parse_rate_limit(r: &str) -> Option<Option<u64>> {
    let (digits, secs_per_unit) = match r.as_bytes().last()? {
        b's' | b'S' => (&r[..r.len() - 1], 1),
        b'm' | b'M' => (&r[..r.len() - 1], 60),
        b'h' | b'H' => (&r[..r.len() - 1], 3600),
        _ => (r, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let ms = n.checked_mul(secs_per_unit)?.checked_mul(1000)?;
    Some((ms != 0).then_some(ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::ir::NumOp;
    use crate::policy::testutil::*;
    use lsm_shared::{LPM_STR_LEN, STR_LEN};

    #[test]
    fn in_map_sets_take_numbers_ranges_and_syscall_lists_beyond_four_values() {
        let yaml = fixture!("observe-dup-syscalls-in-a-list.yaml");
        let p = parse_ok(yaml);
        let (op, ids) = num_filter(&p.hooks[0].selectors[0].match_args[0]);
        assert_eq!(op, NumOp::InMap);
        if cfg!(target_arch = "x86_64") {
            assert_eq!(ids, [32, 33], "dup and dup2 on x86_64");
        }
        let wide = yaml.replace(
            r#"values: ["list:dups"]"#,
            r#"values: ["9", "100:104", "-1", "1", "2", "3", "9"]"#,
        );
        let (_, v) = num_filter(&parse_ok(&wide).hooks[0].selectors[0].match_args[0]);
        assert_eq!(v, [1, 2, 3, 9, 100, 101, 102, 103, 104, u64::MAX]);
        let not_in = wide.replace("operator: InMap", "operator: NotInMap");
        let (op, _) = num_filter(&parse_ok(&not_in).hooks[0].selectors[0].match_args[0]);
        assert_eq!(op, NumOp::NotInMap);

        for (values, path, says) in [
            (r#"["1", "list:nope"]"#, "values[1]", "nope"),
            (r#"["5:1"]"#, "values[0]", "min greater than max"),
            (r#"["0:100000"]"#, "values[0]", "InRange"),
            (r#"["x"]"#, "values[0]", "invalid integer"),
        ] {
            let bad = yaml.replace(r#"["list:dups"]"#, values);
            let e = parse_err(&bad);
            assert!(e.path.ends_with(path), "{values}: {}", e.path);
            assert!(e.message.contains(says), "{values}: {}", e.message);
        }
    }

    #[test]
    fn integers_follow_go_parse_int_base_0() {
        assert_eq!(parse_go_int("42"), Some(42));
        assert_eq!(parse_go_int("-42"), Some(-42));
        assert_eq!(parse_go_int("+7"), Some(7));
        assert_eq!(parse_go_int("0x1F"), Some(31));
        assert_eq!(parse_go_int("0X1f"), Some(31));
        assert_eq!(parse_go_int("010"), Some(8));
        assert_eq!(parse_go_int("0o17"), Some(15));
        assert_eq!(parse_go_int("0b101"), Some(5));
        assert_eq!(parse_go_int("1_000"), Some(1000));
        assert_eq!(parse_go_int("0"), Some(0));
        assert_eq!(parse_go_int("08"), None);
        assert_eq!(parse_go_int("0x"), None);
        assert_eq!(parse_go_int(""), None);
        assert_eq!(parse_go_int("-"), None);
        assert_eq!(parse_go_int(" 1"), None);
        assert_eq!(parse_go_int("1_"), None);
        assert_eq!(parse_go_int("18446744073709551615"), Some(u64::MAX as i128));
        assert_eq!(parse_go_int("18446744073709551616"), None);
    }

    #[test]
    fn signed_values_are_sign_extended_and_checked_against_the_declared_width() {
        let yaml = with_selector(
            "
      matchArgs:
      - index: 1
        operator: Equal
        values: [\"-1\", \"0x10\", \"010\", \"2147483647\"]",
        );
        let p = parse_ok(&yaml);
        assert_eq!(
            num_filter(&p.hooks[0].selectors[0].match_args[0]),
            (NumOp::Equal, vec![u64::MAX, 16, 8, 2147483647])
        );
        let e = parse_err(&yaml.replace("2147483647", "2147483648"));
        assert!(
            e.message.contains("does not fit argument 1 of type int"),
            "{}",
            e.message
        );
    }

    #[test]
    fn unsigned_values_are_zero_extended_and_reject_negatives() {
        let yaml = with_selector(
            "
      matchArgs:
      - index: 1
        operator: Mask
        values: [\"0xffffffff\"]",
        )
        .replace("type: int", "type: uint32");
        let p = parse_ok(&yaml);
        assert_eq!(
            num_filter(&p.hooks[0].selectors[0].match_args[0]),
            (NumOp::Mask, vec![0xffff_ffff])
        );
        let e = parse_err(&yaml.replace("0xffffffff", "-1"));
        assert!(e.message.contains("does not fit"), "{}", e.message);
        let e = parse_err(
            &yaml
                .replace("type: uint32", "type: uint8")
                .replace("0xffffffff", "256"),
        );
        assert!(e.message.contains("(0..=255)"), "{}", e.message);
    }

    #[test]
    fn numeric_filters_take_at_most_four_values() {
        let yaml = with_selector(
            "
      matchArgs:
      - index: 1
        operator: NotEqual
        values: [\"1\", \"2\", \"3\", \"4\", \"5\"]",
        );
        let e = parse_err(&yaml);
        assert_eq!(
            e.path,
            "spec.kprobes[0].selectors[0].matchArgs[0].values[4]"
        );
    }

    #[test]
    fn ranges_become_min_max_pairs() {
        let yaml = with_selector(
            "
      matchArgs:
      - index: 1
        operator: InRange
        values: [\"1:3\", \"-5:-2\"]",
        );
        let p = parse_ok(&yaml);
        assert_eq!(
            num_filter(&p.hooks[0].selectors[0].match_args[0]),
            (NumOp::InRange, vec![1, 3, (-5i64) as u64, (-2i64) as u64])
        );
        let e = parse_err(&yaml.replace("1:3", "3:1"));
        assert!(e.message.contains("min greater than max"), "{}", e.message);
        let e = parse_err(&yaml.replace("1:3", "7"));
        assert!(e.message.contains("min:max"), "{}", e.message);
    }

    #[test]
    fn too_long_prefix_is_rejected_but_the_limit_itself_is_fine() {
        let ok = "/".repeat(LPM_STR_LEN);
        let yaml = with_selector(&format!(
            "
      matchArgs:
      - index: 0
        operator: Prefix
        values: [\"{ok}\"]"
        ));
        parse_ok(&yaml);
        let e = parse_err(&yaml.replace(&ok, &format!("{ok}x")));
        assert_eq!(
            e.path,
            "spec.kprobes[0].selectors[0].matchArgs[0].values[0]"
        );
        assert!(e.message.contains("at most 252 bytes"), "{}", e.message);

        let eq = "/".repeat(STR_LEN);
        let yaml = yaml.replace("Prefix", "Equal").replace(&ok, &eq);
        parse_ok(&yaml);
        let e = parse_err(&yaml.replace(&eq, &format!("{eq}x")));
        assert!(e.message.contains("at most 256 bytes"), "{}", e.message);
    }

    #[test]
    fn trailing_nuls_are_trimmed_from_string_values() {
        let yaml = with_selector(
            "
      matchArgs:
      - index: 0
        operator: Equal
        values: [\"/etc/passwd\\0\", '/etc/shadow\\0', \"/etc/group\"]",
        );
        let p = parse_ok(&yaml);
        assert_eq!(
            str_filter(&p.hooks[0].selectors[0].match_args[0]).2,
            ["/etc/passwd", "/etc/shadow", "/etc/group"]
        );
    }

    #[test]
    fn namespace_values_are_decimal_u32_inodes_or_host_ns() {
        for bad in [
            "HOST_NS",
            "-1",
            "+1",
            "0x10",
            "4294967296",
            "1_000",
            "",
            "12a",
        ] {
            let e = parse_err(&with_selector(&format!(
                "matchNamespaces: [{{namespace: Net, operator: In, values: [host_ns, \"{bad}\"]}}]"
            )));
            assert_eq!(
                e.path, "spec.kprobes[0].selectors[0].matchNamespaces[0].values[1]",
                "{bad}"
            );
            assert_eq!(
                e.message,
                format!(
                    "invalid namespace value \"{bad}\" (expected host_ns or a decimal inode \
                     number up to 4294967295)"
                )
            );
        }
        let e = parse_err(&with_selector(
            "matchNamespaces: [{namespace: Net, operator: In, values: []}]",
        ));
        assert_eq!(
            e.path,
            "spec.kprobes[0].selectors[0].matchNamespaces[0].values"
        );
        assert_eq!(e.message, "needs at least one value");
    }

    #[test]
    fn every_linux_capability_up_to_checkpoint_restore_is_known() {
        for (n, name) in CAPABILITIES.iter().enumerate() {
            assert_eq!(capability_number(name), Some(n as u32), "{name}");
        }
        assert_eq!(capability_number("CAP_SYS_PTRACE"), Some(19));
        assert_eq!(capability_number("SYS_ADMIN"), None);
        assert_eq!(capability_number("CAP_41"), None);
    }
}
