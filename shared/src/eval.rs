//! The pure steps of the kernel-side evaluation: bit arithmetic over selector bitmaps, the
//! numeric operators, and the small rewrites of hook data that need no kernel access.
//!
//! `lsm-ebpf` inlines these into its programs; here they are plain functions with host tests.
//! Rules that keep them loadable: no map, no helper, bounded loops only, and no indexing that
//! could reach a panic (the verifier rejects the panic path), hence `get()` where an index is
//! not obviously in range. Everything is `#[inline(always)]`, so when a program passes a
//! constant (a hook, a subject, a family) the verifier sees a constant too.
use crate::{
    ACT_MONITOR, ACT_OVERRIDE, ACT_POST, ACT_SIGKILL, ACT_SIGNAL, AF_INET, AF_INET6, ARG_ATTR_BASE,
    ARGS_LEN, ATTR_SOCK_FAMILY, ATTR_SOCK_PROTOCOL, ATTR_SOCK_TYPE, ActionCounters,
    CNT_MONITOR_OVERRIDE, CNT_MONITOR_SIGNAL, CNT_NOPOST, CNT_OVERRIDE, CNT_POST, CNT_SIGNAL,
    HookConfig, LINEAGE_LEN, MAX_ARGS, NUM_ATTRS, NUM_FILTER_VALUES, NUM_OP_EQUAL, NUM_OP_GT,
    NUM_OP_IN_RANGE, NUM_OP_LT, NUM_OP_MASK, NUM_OP_NOT_EQUAL, NUM_OP_NOT_IN_RANGE,
    NUM_OP_NOT_MASK, NUM_SIGNED, NetInfo, NumFilter, ProcInfo, SCOPE_BITS, SelMasks, net_class,
    pid_class, str_class,
};

/// `EPERM`: the errno of a SIGKILL denial and of an `Override` without a usable error.
pub const EPERM: i32 = 1;
/// Largest errno the kernel accepts from an LSM program (`MAX_ERRNO`).
pub const MAX_ERRNO: i32 = 4095;

/// Element `i` of a `uses` array; out of range reads as "no selector uses this class".
#[inline(always)]
fn uses_at(uses: &[u64], i: usize) -> u64 {
    uses.get(i).copied().unwrap_or(0)
}

impl SelMasks {
    /// No selector at all.
    pub const NONE: Self = Self { pos: 0, neg: 0 };

    /// Every selector in either mask.
    #[inline(always)]
    pub const fn any(self) -> u64 {
        self.pos | self.neg
    }
}

/// What is left of the candidate selectors `cand` after one filter class: `found` is what a
/// lookup returned for the value at hand (selectors listing it, positively or negated) and
/// `uses` which selectors have a filter of this class at all (positive or negated). A
/// selector without such a filter is not constrained; one with a positive filter must list
/// the value; one with a negated filter must not.
#[inline(always)]
pub const fn narrow(cand: u64, found: SelMasks, uses: SelMasks) -> u64 {
    cand & (found.pos | !uses.pos) & (!found.neg | !uses.neg)
}

/// The first set bit of `cand` in each group, where groups are runs of consecutive bits that
/// start at the bits of `starts` (bit 0 always starts a group). Branch-free (a segmented
/// prefix-OR by doubling), so the verifier walks it once.
#[inline(always)]
pub const fn first_in_groups(cand: u64, starts: u64) -> u64 {
    let starts = starts | 1;
    let mut y = cand;
    let mut f = starts;
    y |= (y << 1) & !f;
    f |= f << 1;
    y |= (y << 2) & !f;
    f |= f << 2;
    y |= (y << 4) & !f;
    f |= f << 4;
    y |= (y << 8) & !f;
    f |= f << 8;
    y |= (y << 16) & !f;
    f |= f << 16;
    y |= (y << 32) & !f;
    // y: inclusive prefix-OR of cand within each group; a bit fires if nothing below it in
    // its group was set.
    let below = (y << 1) & !starts;
    cand & !below
}

/// Index of the lowest set bit of a non-zero `x`, branch-free (population count of the bits
/// below it).
#[inline(always)]
pub const fn lowest_slot(x: u64) -> u32 {
    let mut v = (x & x.wrapping_neg()).wrapping_sub(1);
    v -= (v >> 1) & 0x5555_5555_5555_5555;
    v = (v & 0x3333_3333_3333_3333) + ((v >> 2) & 0x3333_3333_3333_3333);
    v = (v + (v >> 4)) & 0x0f0f_0f0f_0f0f_0f0f;
    (v.wrapping_mul(0x0101_0101_0101_0101) >> 56) as u32
}

/// The value an `Override` denies with: its `error` when that is an errno the kernel takes
/// from an LSM program (`-MAX_ERRNO..0`), otherwise `-EPERM` (the compiler clamps already;
/// this is the kernel side not trusting the map).
#[inline(always)]
pub const fn deny_errno(error: i32) -> i32 {
    if error >= -MAX_ERRNO && error < 0 {
        error
    } else {
        -EPERM
    }
}

/// Prefix length in bits of an LPM string key holding `len` string bytes.
#[inline(always)]
pub const fn str_prefix_bits(len: usize) -> u32 {
    SCOPE_BITS + 8 * len as u32
}

impl HookConfig {
    /// Selectors with a string filter of `subject`, of any family, positive or negated.
    #[inline(always)]
    pub fn str_uses(&self, subject: u8) -> u64 {
        let base = str_class(subject, 0, false);
        let mut any = 0u64;
        let mut c = 0;
        while c < 6 {
            any |= uses_at(&self.uses, base + c);
            c += 1;
        }
        any
    }

    /// Selectors with a string filter of (`subject`, `family`): `pos` positive, `neg` negated.
    #[inline(always)]
    pub fn str_uses_of(&self, subject: u8, family: usize) -> SelMasks {
        SelMasks {
            pos: uses_at(&self.uses, str_class(subject, family, false)),
            neg: uses_at(&self.uses, str_class(subject, family, true)),
        }
    }

    /// `cand` when the string of `subject` could not be resolved: fail closed, so enforcing
    /// selectors keep matching whatever their string filters say, and the others drop out
    /// if they have any string filter of `subject`.
    #[inline(always)]
    pub fn fail_closed(&self, cand: u64, subject: u8) -> u64 {
        cand & (self.enforcing | !self.str_uses(subject))
    }

    /// Selectors with a `matchPIDs` filter of `kind` (`PID_*`), plain or `followForks`.
    #[inline(always)]
    pub fn pid_uses_of(&self, kind: u32, follow: bool) -> SelMasks {
        SelMasks {
            pos: uses_at(&self.pid_uses, pid_class(kind, follow, false)),
            neg: uses_at(&self.pid_uses, pid_class(kind, follow, true)),
        }
    }

    /// Selectors with an address filter of `field` (`NET_*`).
    #[inline(always)]
    pub fn addr_uses_of(&self, field: u32) -> SelMasks {
        SelMasks {
            pos: uses_at(&self.addr_uses, net_class(field, false)),
            neg: uses_at(&self.addr_uses, net_class(field, true)),
        }
    }

    /// Selectors with a port filter of `field` (`NET_*`).
    #[inline(always)]
    pub fn port_uses_of(&self, field: u32) -> SelMasks {
        SelMasks {
            pos: uses_at(&self.port_uses, net_class(field, false)),
            neg: uses_at(&self.port_uses, net_class(field, true)),
        }
    }

    /// Selectors with any address or port filter.
    #[inline(always)]
    pub fn net_uses(&self) -> u64 {
        let mut uses = 0u64;
        let mut c = 0;
        while c < 4 {
            uses |= uses_at(&self.addr_uses, c) | uses_at(&self.port_uses, c);
            c += 1;
        }
        uses
    }

    /// The selectors of `cand` whose actions run: the first match of each group.
    #[inline(always)]
    pub const fn fired(&self, cand: u64) -> u64 {
        first_in_groups(cand, self.group_starts)
    }

    /// Narrows `cand` to the selectors that apply to the current process's workload:
    /// unscoped selectors always, scoped ones when `in_scope` (its cgroup's
    /// [`CgroupScope`] entry for this hook) lists them.
    #[inline(always)]
    pub const fn narrow_scope(&self, cand: u64, in_scope: u64) -> u64 {
        cand & (!self.scoped | in_scope)
    }
}

impl NumFilter {
    /// `raw` cut to the filter's width, then sign- or zero-extended back to 64 bits.
    #[inline(always)]
    pub const fn operand(&self, raw: u64) -> u64 {
        let signed = self.flags & NUM_SIGNED != 0;
        match self.width {
            1 if signed => raw as i8 as i64 as u64,
            1 => raw as u8 as u64,
            2 if signed => raw as i16 as i64 as u64,
            2 => raw as u16 as u64,
            4 if signed => raw as i32 as i64 as u64,
            4 => raw as u32 as u64,
            _ => raw,
        }
    }

    /// Whether an argument passes this filter. Every value test returns early, so the
    /// verifier sees one path per value rather than one per combination of outcomes.
    #[inline(always)]
    pub fn matches(&self, raw: u64) -> bool {
        let signed = self.flags & NUM_SIGNED != 0;
        let v = self.operand(raw);
        let n = self.nvalues as usize;
        let op = self.op;
        let ranges = op == NUM_OP_IN_RANGE || op == NUM_OP_NOT_IN_RANGE;
        // A hit means: Equal/GT/LT/Mask/InRange match; NotEqual/NotInRange/NotMask fail.
        let negated = op == NUM_OP_NOT_EQUAL || op == NUM_OP_NOT_IN_RANGE || op == NUM_OP_NOT_MASK;
        let mut i = 0usize;
        while i < NUM_FILTER_VALUES {
            if i >= n {
                break;
            }
            let x = self.values[i];
            let hit = if ranges {
                let hi = if i + 1 < NUM_FILTER_VALUES {
                    self.values[i + 1]
                } else {
                    x
                };
                i += 1;
                if signed {
                    (v as i64) >= (x as i64) && (v as i64) <= (hi as i64)
                } else {
                    v >= x && v <= hi
                }
            } else if op == NUM_OP_EQUAL || op == NUM_OP_NOT_EQUAL {
                v == x
            } else if op == NUM_OP_GT {
                if signed {
                    (v as i64) > (x as i64)
                } else {
                    v > x
                }
            } else if op == NUM_OP_LT {
                if signed {
                    (v as i64) < (x as i64)
                } else {
                    v < x
                }
            } else if op == NUM_OP_MASK || op == NUM_OP_NOT_MASK {
                v & x != 0
            } else {
                false
            };
            if hit {
                return !negated;
            }
            i += 1;
        }
        negated
    }
}

/// `raw` cut to its low `width` bytes (1, 2 or 4; anything else keeps all 8): what the generic
/// reader stores for an [`ARG_INT`] argument. A register or context slot holding a narrower
/// C integer may carry garbage in its upper bits.
#[inline(always)]
pub const fn int_of_width(raw: u64, width: u8) -> u64 {
    match width {
        1 => raw as u8 as u64,
        2 => raw as u16 as u64,
        4 => raw as u32 as u64,
        _ => raw,
    }
}

/// A USDT argument `size` bytes wide read as 8 ([`int_of_width`]), sign-extended to 64 bits
/// when `signed`: the note's `-4@...` is an `int`, which a policy may declare `int64`.
#[inline(always)]
pub const fn usdt_value(raw: u64, size: u8, signed: bool) -> u64 {
    let v = int_of_width(raw, size);
    if !signed {
        return v;
    }
    match size {
        1 => v as u8 as i8 as i64 as u64,
        2 => v as u16 as i16 as i64 as u64,
        4 => v as u32 as i32 as i64 as u64,
        _ => v,
    }
}

/// The value a numeric filter on `arg` looks at: hook argument `arg`, or process attribute
/// `arg - ARG_ATTR_BASE`; 0 for an index that is neither. Explicit bounds rather than `%`,
/// so that the verifier can see every index is in range.
#[inline(always)]
pub fn filter_operand(arg: u32, args: &[u64; MAX_ARGS], attrs: &[u64; NUM_ATTRS as usize]) -> u64 {
    let idx = arg as usize;
    let attr = idx.wrapping_sub(ARG_ATTR_BASE as usize);
    if idx < MAX_ARGS {
        args[idx]
    } else if attr < NUM_ATTRS as usize {
        attrs[attr]
    } else {
        0
    }
}

impl ActionCounters {
    /// Counts one run of a selector whose `SelectorAction::flags` are `flags`.
    #[inline(always)]
    pub fn record(&mut self, flags: u32) {
        let monitor = if flags & ACT_MONITOR != 0 {
            u32::MAX
        } else {
            0
        };
        self.record_split(flags, monitor);
    }

    /// Counts one run of a selector seen by a kprobe (BPF LSM inactive): Override is never
    /// applied there and Sigkill only when `sigkill_applied` (`--fallback-sigkill`); what was
    /// not applied is counted as monitor mode counts it, as what would have happened.
    #[inline(always)]
    pub fn record_observed(&mut self, flags: u32, sigkill_applied: bool) {
        let mut not_applied = ACT_OVERRIDE;
        if !sigkill_applied {
            not_applied |= ACT_SIGKILL;
        }
        if flags & ACT_MONITOR != 0 {
            not_applied = u32::MAX;
        }
        self.record_split(flags, not_applied);
    }

    /// `flags` ran; the enforcement actions in `not_applied` were only "would have".
    #[inline(always)]
    fn record_split(&mut self, flags: u32, not_applied: u32) {
        let c = &mut self.c;
        let post = if flags & ACT_POST != 0 {
            CNT_POST
        } else {
            CNT_NOPOST
        };
        c[post] = c[post].wrapping_add(1);
        let signals = flags & (ACT_SIGKILL | ACT_SIGNAL);
        if signals != 0 {
            // A selector sends one signal; it counts as sent if it was.
            let i = if signals & !not_applied != 0 {
                CNT_SIGNAL
            } else {
                CNT_MONITOR_SIGNAL
            };
            c[i] = c[i].wrapping_add(1);
        }
        if flags & ACT_OVERRIDE != 0 {
            let i = if not_applied & ACT_OVERRIDE != 0 {
                CNT_MONITOR_OVERRIDE
            } else {
                CNT_OVERRIDE
            };
            c[i] = c[i].wrapping_add(1);
        }
    }
}

/// Whether `a` is an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`).
#[inline(always)]
pub const fn is_v4_mapped(a: &[u8; 16]) -> bool {
    let mut i = 0;
    while i < 10 {
        if a[i] != 0 {
            return false;
        }
        i += 1;
    }
    a[10] == 0xff && a[11] == 0xff
}

impl NetInfo {
    /// An IPv6 connection to a v4-mapped destination is an IPv4 connection: family
    /// `AF_INET`, the addresses in their first four bytes. The source keeps its IPv4 part
    /// when it is mapped too (bytes 10 and 11 are `0xff`), and is zero otherwise.
    #[inline(always)]
    pub fn unmap_v4(&mut self) {
        let d = self.daddr;
        if self.family != AF_INET6 || !is_v4_mapped(&d) {
            return;
        }
        let src = self.saddr;
        self.family = AF_INET;
        self.daddr = [0; 16];
        self.daddr[0] = d[12];
        self.daddr[1] = d[13];
        self.daddr[2] = d[14];
        self.daddr[3] = d[15];
        self.saddr = [0; 16];
        if src[10] == 0xff && src[11] == 0xff {
            self.saddr[0] = src[12];
            self.saddr[1] = src[13];
            self.saddr[2] = src[14];
            self.saddr[3] = src[15];
        }
    }

    /// Writes the socket attributes (`ATTR_SOCK_*`) of this connection into `attrs`.
    #[inline(always)]
    pub fn write_attrs(&self, attrs: &mut [u64; NUM_ATTRS as usize]) {
        attrs[ATTR_SOCK_FAMILY as usize] = u64::from(self.family);
        attrs[ATTR_SOCK_PROTOCOL as usize] = u64::from(self.protocol);
        attrs[ATTR_SOCK_TYPE as usize] = u64::from(self.sock_type);
    }
}

impl ProcInfo {
    /// This process's `followChildren` selectors of `hook` that `follow` (the hook's
    /// [`HookConfig::follow`]) still has.
    #[inline(always)]
    pub fn follow_bits(&self, hook: u32, follow: u64) -> u64 {
        self.follow[crate::hook_slot(hook)] & follow
    }

    /// Turns the parent's record into its child's: the lineage moves one generation down
    /// (the oldest ancestor drops off) and the child heads it.
    #[inline(always)]
    pub fn descend(&mut self, child_tgid: u32, child_ns_pid: u32, parent_tgid: u32) {
        let mut i = LINEAGE_LEN - 1;
        while i > 0 {
            self.lineage[i] = self.lineage[i - 1];
            self.ns_lineage[i] = self.ns_lineage[i - 1];
            i -= 1;
        }
        self.lineage[0] = child_tgid;
        self.ns_lineage[0] = child_ns_pid;
        self.ppid = parent_tgid;
    }
}

/// Bytes of argv an exec event copies out of `[start, end)`: the full length and the part
/// that fits in `ARGS_LEN`.
#[inline(always)]
pub const fn exec_args_len(start: u64, end: u64) -> (u64, u64) {
    let total = end.saturating_sub(start);
    let n = if total > ARGS_LEN as u64 {
        ARGS_LEN as u64
    } else {
        total
    };
    (total, n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        ATTR_CAP_BASE, FAMILY_EQUAL, FAMILY_POSTFIX, FAMILY_PREFIX, IPPROTO_TCP, NET_DEST,
        NET_SOURCE, NUM_HOOKS, NUM_STR_CLASSES, PID_HOST, PID_NS, PathRec, SUBJECT_ARG,
        SUBJECT_BINARY,
    };

    fn masks(pos: u64, neg: u64) -> SelMasks {
        SelMasks { pos, neg }
    }

    #[test]
    fn narrow_scope_keeps_unscoped_selectors_and_the_scoped_ones_listed_for_the_cgroup() {
        let cfg = HookConfig {
            scoped: 0b1100,
            ..HookConfig::empty()
        };
        // Selectors 0 and 1 apply everywhere; 2 and 3 only where listed.
        assert_eq!(cfg.narrow_scope(0b1111, 0), 0b0011);
        assert_eq!(cfg.narrow_scope(0b1111, 0b0100), 0b0111);
        assert_eq!(cfg.narrow_scope(0b1111, 0b1100), 0b1111);
        // The scope entry never adds a selector that is not a candidate.
        assert_eq!(cfg.narrow_scope(0b0001, 0b1100), 0b0001);
    }

    #[test]
    fn narrow_leaves_selectors_without_a_filter_of_the_class_alone() {
        assert_eq!(narrow(0b1111, SelMasks::NONE, SelMasks::NONE), 0b1111);
    }

    #[test]
    fn narrow_keeps_positive_filters_only_when_the_value_is_listed() {
        // Selectors 0 and 1 have a positive filter; only 0 lists the value.
        assert_eq!(narrow(0b111, masks(0b001, 0), masks(0b011, 0)), 0b101);
    }

    #[test]
    fn narrow_drops_negated_filters_that_list_the_value() {
        // Selectors 0 and 1 have a negated filter; 1 lists the value.
        assert_eq!(narrow(0b111, masks(0, 0b010), masks(0, 0b011)), 0b101);
    }

    #[test]
    fn narrow_never_adds_selectors_outside_the_candidates() {
        assert_eq!(narrow(0b001, masks(u64::MAX, 0), masks(u64::MAX, 0)), 0b001);
    }

    #[test]
    fn first_in_groups_picks_the_lowest_match_of_each_group() {
        // Groups: slots 0-2, 3-4, 5-63.
        let starts = 0b10_1001;
        assert_eq!(first_in_groups(0b00_0110, starts), 0b00_0010);
        assert_eq!(first_in_groups(0b11_1110, starts), 0b10_1010);
        assert_eq!(first_in_groups(0, starts), 0);
        assert_eq!(first_in_groups(u64::MAX, 0), 1);
        assert_eq!(first_in_groups(1 << 63, 1 << 63), 1 << 63);
        // Every slot its own group: everything fires.
        assert_eq!(first_in_groups(0xdead_beef, u64::MAX), 0xdead_beef);
    }

    #[test]
    fn first_in_groups_matches_a_plain_scan_of_every_group() {
        let starts = 0x8000_0100_0010_0005u64;
        let mut cand = 0x0123_4567_89ab_cdefu64;
        for _ in 0..64 {
            let mut expected = 0u64;
            let mut seen = false;
            for bit in 0..64 {
                if bit == 0 || starts & (1 << bit) != 0 {
                    seen = false;
                }
                if cand & (1 << bit) != 0 && !seen {
                    expected |= 1 << bit;
                    seen = true;
                }
            }
            assert_eq!(first_in_groups(cand, starts), expected, "cand {cand:#x}");
            cand = cand.rotate_left(7) ^ (cand >> 3);
        }
    }

    #[test]
    fn lowest_slot_is_the_index_of_the_lowest_bit() {
        for i in 0..64 {
            assert_eq!(lowest_slot(1 << i), i);
            assert_eq!(lowest_slot((1 << i) | (1 << 63)), i);
        }
    }

    #[test]
    fn deny_errno_keeps_errnos_the_kernel_accepts() {
        assert_eq!(deny_errno(-13), -13);
        assert_eq!(deny_errno(-1), -1);
        assert_eq!(deny_errno(-MAX_ERRNO), -MAX_ERRNO);
    }

    #[test]
    fn deny_errno_falls_back_to_eperm_for_anything_else() {
        assert_eq!(deny_errno(0), -EPERM);
        assert_eq!(deny_errno(13), -EPERM);
        assert_eq!(deny_errno(-MAX_ERRNO - 1), -EPERM);
        assert_eq!(deny_errno(i32::MIN), -EPERM);
    }

    #[test]
    fn a_usdt_value_keeps_its_width_and_its_sign() {
        // -7 as a 4-byte int in a register whose upper half is garbage.
        let raw = 0xdead_beef_ffff_fff9u64;
        assert_eq!(usdt_value(raw, 4, true) as i64, -7);
        assert_eq!(usdt_value(raw, 4, false), 0xffff_fff9);
        assert_eq!(usdt_value(0x80, 1, true) as i64, -128);
        assert_eq!(usdt_value(0xffff, 2, false), 0xffff);
        assert_eq!(usdt_value(raw, 8, true), raw);
    }

    #[test]
    fn int_of_width_keeps_only_the_low_bytes_of_narrow_integers() {
        let raw = 0xdead_beef_8000_ff01u64;
        assert_eq!(int_of_width(raw, 1), 0x01);
        assert_eq!(int_of_width(raw, 2), 0xff01);
        assert_eq!(int_of_width(raw, 4), 0x8000_ff01);
        assert_eq!(int_of_width(raw, 8), raw);
        assert_eq!(int_of_width(raw, 0), raw);
    }

    #[test]
    fn str_prefix_bits_counts_the_scope_and_eight_bits_per_byte() {
        assert_eq!(str_prefix_bits(0), SCOPE_BITS);
        assert_eq!(str_prefix_bits(5), SCOPE_BITS + 40);
    }

    fn config_with_string_uses() -> HookConfig {
        let mut cfg = HookConfig::empty();
        cfg.uses[str_class(SUBJECT_ARG, FAMILY_EQUAL, false)] = 0b0001;
        cfg.uses[str_class(SUBJECT_ARG, FAMILY_POSTFIX, true)] = 0b0010;
        cfg.uses[str_class(SUBJECT_BINARY, FAMILY_PREFIX, false)] = 0b0100;
        cfg
    }

    #[test]
    fn str_uses_collects_every_family_of_one_subject_only() {
        let cfg = config_with_string_uses();
        assert_eq!(cfg.str_uses(SUBJECT_ARG), 0b0011);
        assert_eq!(cfg.str_uses(SUBJECT_BINARY), 0b0100);
    }

    #[test]
    fn str_uses_of_splits_positive_and_negated_filters() {
        let cfg = config_with_string_uses();
        assert_eq!(cfg.str_uses_of(SUBJECT_ARG, FAMILY_EQUAL), masks(0b0001, 0));
        assert_eq!(
            cfg.str_uses_of(SUBJECT_ARG, FAMILY_POSTFIX),
            masks(0, 0b0010)
        );
        assert_eq!(cfg.str_uses_of(SUBJECT_ARG, FAMILY_PREFIX), SelMasks::NONE);
    }

    #[test]
    fn string_uses_of_an_unknown_subject_are_empty_rather_than_a_panic() {
        let mut cfg = config_with_string_uses();
        cfg.uses = [u64::MAX; NUM_STR_CLASSES];
        assert_eq!(cfg.str_uses(7), 0);
        assert_eq!(cfg.str_uses_of(7, FAMILY_EQUAL), SelMasks::NONE);
    }

    #[test]
    fn fail_closed_keeps_enforcing_selectors_and_those_without_string_filters() {
        let mut cfg = config_with_string_uses();
        cfg.enforcing = 0b0010;
        // 0: non-enforcing with an arg filter (drops); 1: enforcing (stays); 2: binary filter
        // only (stays); 3: no string filter (stays).
        assert_eq!(cfg.fail_closed(0b1111, SUBJECT_ARG), 0b1110);
    }

    #[test]
    fn pid_addr_and_port_uses_read_their_own_classes() {
        let mut cfg = HookConfig::empty();
        cfg.pid_uses[pid_class(PID_NS, true, true)] = 0b1;
        cfg.pid_uses[pid_class(PID_HOST, false, false)] = 0b10;
        cfg.addr_uses[net_class(NET_SOURCE, false)] = 0b100;
        cfg.port_uses[net_class(NET_DEST, true)] = 0b1000;
        assert_eq!(cfg.pid_uses_of(PID_NS, true), masks(0, 0b1));
        assert_eq!(cfg.pid_uses_of(PID_NS, false), SelMasks::NONE);
        assert_eq!(cfg.pid_uses_of(PID_HOST, false), masks(0b10, 0));
        assert_eq!(cfg.addr_uses_of(NET_SOURCE), masks(0b100, 0));
        assert_eq!(cfg.addr_uses_of(NET_DEST), SelMasks::NONE);
        assert_eq!(cfg.port_uses_of(NET_DEST), masks(0, 0b1000));
        assert_eq!(cfg.net_uses(), 0b1100);
        assert_eq!(cfg.pid_uses_of(9, false), SelMasks::NONE);
    }

    #[test]
    fn fired_is_the_first_candidate_of_each_group() {
        let mut cfg = HookConfig::empty();
        cfg.group_starts = 0b100;
        assert_eq!(cfg.fired(0b1110), 0b0110);
    }

    fn filter(op: u32, width: u32, signed: bool, values: &[u64]) -> NumFilter {
        let mut f = NumFilter {
            op,
            width,
            flags: if signed { NUM_SIGNED } else { 0 },
            nvalues: values.len() as u32,
            ..NumFilter::default()
        };
        f.values[..values.len()].copy_from_slice(values);
        f
    }

    #[test]
    fn operand_truncates_to_the_width_and_extends_by_signedness() {
        let raw = 0xffff_ffff_ffff_ff80;
        assert_eq!(filter(NUM_OP_EQUAL, 1, false, &[]).operand(raw), 0x80);
        assert_eq!(
            filter(NUM_OP_EQUAL, 1, true, &[]).operand(raw),
            -128i64 as u64
        );
        assert_eq!(filter(NUM_OP_EQUAL, 2, false, &[]).operand(raw), 0xff80);
        assert_eq!(
            filter(NUM_OP_EQUAL, 2, true, &[]).operand(0x8000),
            -32768i64 as u64
        );
        assert_eq!(
            filter(NUM_OP_EQUAL, 4, false, &[]).operand(raw),
            0xffff_ff80
        );
        assert_eq!(
            filter(NUM_OP_EQUAL, 4, true, &[]).operand(0x8000_0000),
            i32::MIN as u64
        );
        assert_eq!(filter(NUM_OP_EQUAL, 8, false, &[]).operand(raw), raw);
    }

    #[test]
    fn equal_matches_any_listed_value_and_not_equal_none_of_them() {
        let eq = filter(NUM_OP_EQUAL, 8, false, &[3, 5]);
        assert!(eq.matches(5));
        assert!(!eq.matches(4));
        let ne = filter(NUM_OP_NOT_EQUAL, 8, false, &[3, 5]);
        assert!(!ne.matches(3));
        assert!(ne.matches(4));
    }

    #[test]
    fn greater_and_less_than_compare_signed_values_as_signed() {
        let gt = filter(NUM_OP_GT, 4, true, &[(-1i64) as u64]);
        assert!(gt.matches(0));
        assert!(!gt.matches(0xffff_fffe)); // -2 at width 4
        let gt_unsigned = filter(NUM_OP_GT, 4, false, &[1]);
        assert!(gt_unsigned.matches(0xffff_fffe));
        let lt = filter(NUM_OP_LT, 8, true, &[0]);
        assert!(lt.matches((-5i64) as u64));
        assert!(!filter(NUM_OP_LT, 8, false, &[0]).matches((-5i64) as u64));
    }

    #[test]
    fn mask_matches_a_shared_bit_and_not_mask_requires_none() {
        let mask = filter(NUM_OP_MASK, 8, false, &[0b100, 0b1000]);
        assert!(mask.matches(0b1100));
        assert!(mask.matches(0b0100));
        assert!(!mask.matches(0b0011));
        let not_mask = filter(NUM_OP_NOT_MASK, 8, false, &[0b100]);
        assert!(not_mask.matches(0b011));
        assert!(!not_mask.matches(0b110));
    }

    #[test]
    fn ranges_are_inclusive_pairs() {
        let r = filter(NUM_OP_IN_RANGE, 8, false, &[10, 20, 100, 100]);
        assert!(r.matches(10));
        assert!(r.matches(20));
        assert!(r.matches(100));
        assert!(!r.matches(21));
        assert!(!r.matches(99));
        let nr = filter(NUM_OP_NOT_IN_RANGE, 8, false, &[10, 20]);
        assert!(nr.matches(9));
        assert!(!nr.matches(15));
        let signed = filter(NUM_OP_IN_RANGE, 8, true, &[(-5i64) as u64, 5]);
        assert!(signed.matches((-3i64) as u64));
        assert!(!filter(NUM_OP_IN_RANGE, 8, false, &[(-5i64) as u64, 5]).matches(0));
    }

    #[test]
    fn values_past_nvalues_are_ignored() {
        let mut f = filter(NUM_OP_EQUAL, 8, false, &[1]);
        f.values[1] = 7;
        assert!(!f.matches(7));
    }

    #[test]
    fn an_oversized_nvalues_stops_at_the_last_value() {
        let mut f = filter(NUM_OP_EQUAL, 8, false, &[]);
        f.nvalues = u32::MAX;
        f.values[NUM_FILTER_VALUES - 1] = 9;
        assert!(f.matches(9));
        assert!(!f.matches(10));
    }

    #[test]
    fn an_unknown_operator_matches_nothing() {
        assert!(!filter(0, 8, false, &[1]).matches(1));
        assert!(!filter(99, 8, false, &[1]).matches(1));
    }

    #[test]
    fn filter_operand_reads_an_argument_or_an_attribute() {
        let args = [10, 11, 12, 13, 14];
        let mut attrs = [0u64; NUM_ATTRS as usize];
        attrs[ATTR_CAP_BASE as usize] = 0xcafe;
        attrs[NUM_ATTRS as usize - 1] = 0xbeef;
        assert_eq!(filter_operand(0, &args, &attrs), 10);
        assert_eq!(filter_operand(MAX_ARGS as u32 - 1, &args, &attrs), 14);
        assert_eq!(
            filter_operand(ARG_ATTR_BASE + ATTR_CAP_BASE, &args, &attrs),
            0xcafe
        );
        assert_eq!(
            filter_operand(ARG_ATTR_BASE + NUM_ATTRS - 1, &args, &attrs),
            0xbeef
        );
    }

    #[test]
    fn filter_operand_is_zero_for_an_index_that_is_neither() {
        let args = [1; MAX_ARGS];
        let attrs = [1; NUM_ATTRS as usize];
        assert_eq!(filter_operand(MAX_ARGS as u32, &args, &attrs), 0);
        assert_eq!(filter_operand(ARG_ATTR_BASE - 1, &args, &attrs), 0);
        assert_eq!(filter_operand(ARG_ATTR_BASE + NUM_ATTRS, &args, &attrs), 0);
        assert_eq!(filter_operand(u32::MAX, &args, &attrs), 0);
    }

    #[test]
    fn a_kprobe_counts_what_it_could_not_apply_as_monitor_mode_does() {
        let mut c = ActionCounters::default();
        // Sigkill (kill + deny) without --fallback-sigkill: neither happened.
        c.record_observed(ACT_POST | ACT_SIGKILL | ACT_OVERRIDE, false);
        assert_eq!(
            (c.c[CNT_POST], c.c[CNT_SIGNAL], c.c[CNT_OVERRIDE]),
            (1, 0, 0)
        );
        assert_eq!((c.c[CNT_MONITOR_SIGNAL], c.c[CNT_MONITOR_OVERRIDE]), (1, 1));
        // With it, the kill was sent; the deny still was not.
        c.record_observed(ACT_SIGKILL | ACT_OVERRIDE, true);
        assert_eq!((c.c[CNT_SIGNAL], c.c[CNT_OVERRIDE]), (1, 0));
        assert_eq!(c.c[CNT_MONITOR_OVERRIDE], 2);
        // Signal works from a kprobe.
        c.record_observed(ACT_SIGNAL, false);
        assert_eq!(c.c[CNT_SIGNAL], 2);
        // A policy in monitor mode stays monitor.
        c.record_observed(ACT_MONITOR | ACT_SIGNAL, true);
        assert_eq!((c.c[CNT_SIGNAL], c.c[CNT_MONITOR_SIGNAL]), (2, 2));
        assert_eq!(c.c[CNT_NOPOST], 3);
    }

    #[test]
    fn record_counts_post_and_each_enforcement_action() {
        let mut c = ActionCounters::default();
        c.record(ACT_POST | ACT_SIGKILL);
        c.record(ACT_OVERRIDE);
        c.record(ACT_SIGNAL | ACT_OVERRIDE);
        assert_eq!(c.c[CNT_POST], 1);
        assert_eq!(c.c[CNT_NOPOST], 2);
        assert_eq!(c.c[CNT_SIGNAL], 2);
        assert_eq!(c.c[CNT_OVERRIDE], 2);
        assert_eq!(c.c[CNT_MONITOR_SIGNAL], 0);
        assert_eq!(c.c[CNT_MONITOR_OVERRIDE], 0);
    }

    #[test]
    fn record_counts_monitor_mode_actions_apart() {
        let mut c = ActionCounters::default();
        c.record(ACT_MONITOR | ACT_SIGKILL | ACT_OVERRIDE);
        assert_eq!(c.c[CNT_MONITOR_SIGNAL], 1);
        assert_eq!(c.c[CNT_MONITOR_OVERRIDE], 1);
        assert_eq!(c.c[CNT_SIGNAL], 0);
        assert_eq!(c.c[CNT_OVERRIDE], 0);
    }

    fn v6(prefix: [u8; 12], v4: [u8; 4]) -> [u8; 16] {
        let mut a = [0; 16];
        a[..12].copy_from_slice(&prefix);
        a[12..].copy_from_slice(&v4);
        a
    }

    const MAPPED: [u8; 12] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];

    #[test]
    fn is_v4_mapped_needs_zeros_then_ffff() {
        assert!(is_v4_mapped(&v6(MAPPED, [10, 0, 0, 1])));
        let mut other = MAPPED;
        other[0] = 0x20;
        assert!(!is_v4_mapped(&v6(other, [10, 0, 0, 1])));
        assert!(!is_v4_mapped(&v6([0; 12], [0, 0, 0, 1]))); // ::1
    }

    fn v6_conn(daddr: [u8; 16], saddr: [u8; 16]) -> NetInfo {
        NetInfo {
            family: AF_INET6,
            daddr,
            saddr,
            dport: 443,
            ..NetInfo::default()
        }
    }

    #[test]
    fn a_v4_mapped_destination_makes_an_ipv4_connection() {
        let mut n = v6_conn(v6(MAPPED, [10, 1, 2, 3]), v6(MAPPED, [192, 168, 0, 1]));
        n.unmap_v4();
        assert_eq!(n.family, AF_INET);
        assert_eq!(n.daddr[..4], [10, 1, 2, 3]);
        assert_eq!(n.daddr[4..], [0; 12]);
        assert_eq!(n.saddr[..4], [192, 168, 0, 1]);
        assert_eq!(n.saddr[4..], [0; 12]);
        assert_eq!(n.dport, 443);
    }

    #[test]
    fn an_unmapped_source_of_a_v4_mapped_connection_reads_as_unbound() {
        let mut n = v6_conn(v6(MAPPED, [10, 1, 2, 3]), [0; 16]);
        n.unmap_v4();
        assert_eq!(n.family, AF_INET);
        assert_eq!(n.saddr, [0; 16]);
    }

    #[test]
    fn plain_ipv6_and_ipv4_connections_are_left_alone() {
        let ula = v6([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff], [1, 2, 3, 4]);
        let mut n = v6_conn(ula, ula);
        n.unmap_v4();
        assert_eq!(n, v6_conn(ula, ula));
        let mut v4 = NetInfo {
            family: AF_INET,
            ..NetInfo::default()
        };
        v4.daddr[..4].copy_from_slice(&[10, 0, 0, 1]);
        let before = v4;
        v4.unmap_v4();
        assert_eq!(v4, before);
    }

    #[test]
    fn write_attrs_fills_the_socket_attributes_only() {
        let n = NetInfo {
            family: AF_INET,
            protocol: IPPROTO_TCP,
            sock_type: 1,
            ..NetInfo::default()
        };
        let mut attrs = [7u64; NUM_ATTRS as usize];
        n.write_attrs(&mut attrs);
        assert_eq!(attrs[ATTR_SOCK_FAMILY as usize], u64::from(AF_INET));
        assert_eq!(attrs[ATTR_SOCK_PROTOCOL as usize], u64::from(IPPROTO_TCP));
        assert_eq!(attrs[ATTR_SOCK_TYPE as usize], 1);
        assert_eq!(attrs[0], 7);
    }

    fn proc_info() -> ProcInfo {
        ProcInfo {
            ppid: 0,
            flags: 0,
            ktime: 0,
            lineage: [0; LINEAGE_LEN],
            ns_lineage: [0; LINEAGE_LEN],
            follow: [0; NUM_HOOKS as usize],
            exe: PathRec::empty(),
        }
    }

    #[test]
    fn follow_bits_are_the_hooks_inherited_bits_still_followed() {
        let mut p = proc_info();
        p.follow[2] = 0b1011;
        assert_eq!(p.follow_bits(2, 0b0011), 0b0011);
        assert_eq!(p.follow_bits(1, u64::MAX), 0);
        assert_eq!(p.follow_bits(NUM_HOOKS, u64::MAX), 0);
    }

    #[test]
    fn descend_moves_the_lineage_one_generation_down() {
        let mut p = proc_info();
        for i in 0..LINEAGE_LEN {
            p.lineage[i] = 100 + i as u32;
            p.ns_lineage[i] = 200 + i as u32;
        }
        p.descend(42, 7, 100);
        assert_eq!(p.lineage[0], 42);
        assert_eq!(p.ns_lineage[0], 7);
        assert_eq!(p.ppid, 100);
        for i in 1..LINEAGE_LEN {
            assert_eq!(p.lineage[i], 100 + i as u32 - 1);
            assert_eq!(p.ns_lineage[i], 200 + i as u32 - 1);
        }
    }

    #[test]
    fn exec_args_len_caps_the_copy_and_keeps_the_full_length() {
        assert_eq!(exec_args_len(1000, 1010), (10, 10));
        assert_eq!(exec_args_len(0, 5000), (5000, ARGS_LEN as u64));
        assert_eq!(exec_args_len(10, 5), (0, 0));
    }
}
