//! `Post` with `rateLimit`: at most one event per interval for the same selector, the same
//! arguments and the same thread, process, or node (`rateLimitScope`).
//!
//! Tetragon drops the repeats in the kernel. Here the kernel still reports every match (the
//! enforcement and the action counters do not depend on posting) and the repeats are dropped
//! before any subscriber or export sees them, keyed the same way.

use std::{
    collections::HashMap,
    hash::{DefaultHasher, Hash, Hasher},
};

use super::decode::NetData;
use crate::policy::ir::RateLimitScope;

/// Remembered keys before old ones are pruned.
const MAX_KEYS: usize = 65536;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    policy_id: u32,
    hook_index: usize,
    selector_index: usize,
    /// Thread id, process id, or 0 (global), by scope.
    scope_id: u32,
    /// Hash of the event's argument values.
    args: u64,
}

#[derive(Default)]
pub struct RateLimiter {
    /// Key → (time of the last event let through, its interval), in boot-clock ns.
    last: HashMap<Key, (u64, u64)>,
}

/// What identifies one posted event for rate limiting.
pub struct Subject<'a> {
    pub policy_id: u32,
    pub hook_index: usize,
    pub selector_index: usize,
    pub pid: u32,
    pub tgid: u32,
    /// The argument values as the event shows them (path bytes, integers, connection).
    pub path: &'a [u8],
    pub ints: &'a [u64],
    pub net: Option<NetData>,
}

impl RateLimiter {
    /// Whether an event of `s` at `now_ns` may be posted under a limit of one per
    /// `interval_ms`.
    pub fn allow(
        &mut self,
        s: &Subject<'_>,
        scope: RateLimitScope,
        interval_ms: u64,
        now_ns: u64,
    ) -> bool {
        let mut h = DefaultHasher::new();
        s.path.hash(&mut h);
        s.ints.hash(&mut h);
        s.net.hash(&mut h);
        let key = Key {
            policy_id: s.policy_id,
            hook_index: s.hook_index,
            selector_index: s.selector_index,
            scope_id: match scope {
                RateLimitScope::Thread => s.pid,
                RateLimitScope::Process => s.tgid,
                RateLimitScope::Global => 0,
            },
            args: h.finish(),
        };
        let interval_ns = interval_ms.saturating_mul(1_000_000);
        if let Some(&(at, _)) = self.last.get(&key)
            && now_ns.saturating_sub(at) < interval_ns
        {
            return false;
        }
        if self.last.len() >= MAX_KEYS {
            self.last
                .retain(|_, (at, iv)| now_ns.saturating_sub(*at) < *iv);
        }
        self.last.insert(key, (now_ns, interval_ns));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn subject<'a>(pid: u32, tgid: u32, path: &'a [u8]) -> Subject<'a> {
        Subject {
            policy_id: 1,
            hook_index: 0,
            selector_index: 0,
            pid,
            tgid,
            path,
            ints: &[4],
            net: None,
        }
    }

    #[test]
    fn repeats_within_the_interval_are_dropped_and_the_next_interval_posts_again() {
        let mut r = RateLimiter::default();
        let s = subject(10, 10, b"/etc/shadow");
        assert!(r.allow(&s, RateLimitScope::Thread, 1000, 0));
        assert!(!r.allow(&s, RateLimitScope::Thread, 1000, 999 * MS));
        assert!(r.allow(&s, RateLimitScope::Thread, 1000, 1000 * MS));
    }

    #[test]
    fn different_arguments_are_limited_separately() {
        let mut r = RateLimiter::default();
        assert!(r.allow(&subject(10, 10, b"/a"), RateLimitScope::Thread, 1000, 0));
        assert!(r.allow(&subject(10, 10, b"/b"), RateLimitScope::Thread, 1000, 0));
    }

    #[test]
    fn different_connections_are_limited_separately() {
        let conn = |dport: u16| NetData {
            family: lsm_shared::AF_INET,
            sock_type: 1,
            protocol: lsm_shared::IPPROTO_TCP,
            sport: 0,
            dport,
            saddr: Some([0, 0, 0, 0].into()),
            daddr: Some([192, 0, 2, 1].into()),
        };
        let mut r = RateLimiter::default();
        let mut s = subject(10, 10, b"");
        s.net = Some(conn(443));
        assert!(r.allow(&s, RateLimitScope::Thread, 1000, 0));
        assert!(!r.allow(&s, RateLimitScope::Thread, 1000, 0));
        s.net = Some(conn(80));
        assert!(r.allow(&s, RateLimitScope::Thread, 1000, 0));
    }

    #[test]
    fn the_scope_decides_which_tasks_share_a_limit() {
        let mut r = RateLimiter::default();
        let (t1, t2) = (subject(11, 10, b"/a"), subject(12, 10, b"/a"));
        assert!(r.allow(&t1, RateLimitScope::Thread, 1000, 0));
        assert!(
            r.allow(&t2, RateLimitScope::Thread, 1000, 0),
            "other thread"
        );
        let mut r = RateLimiter::default();
        assert!(r.allow(&t1, RateLimitScope::Process, 1000, 0));
        assert!(
            !r.allow(&t2, RateLimitScope::Process, 1000, 0),
            "same process"
        );
        let mut r = RateLimiter::default();
        assert!(r.allow(&t1, RateLimitScope::Global, 1000, 0));
        assert!(
            !r.allow(&subject(99, 99, b"/a"), RateLimitScope::Global, 1000, 0),
            "global: any process"
        );
    }

    #[test]
    fn expired_keys_are_pruned_when_the_table_is_full() {
        let mut r = RateLimiter::default();
        for i in 0..MAX_KEYS as u32 {
            assert!(r.allow(&subject(i, i, b"/a"), RateLimitScope::Thread, 1, 0));
        }
        assert!(r.allow(
            &subject(u32::MAX, 1, b"/a"),
            RateLimitScope::Thread,
            1,
            10 * MS
        ));
        assert_eq!(r.last.len(), 1);
    }
}
