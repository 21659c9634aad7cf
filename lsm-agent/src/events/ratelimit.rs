//! `Post` with `rateLimit`: at most one event per interval for the same selector, the same
//! arguments and the same thread, process, or node (`rateLimitScope`).
//!
//! Tetragon drops the repeats in the kernel. Here the kernel still reports every match (the
//! enforcement and the action counters do not depend on posting) and the repeats are dropped
//! before any subscriber or export sees them, keyed the same way.
//!
//! The limit is governor's keyed GCRA with a burst of one: the first event of a key passes and
//! the next one only once the interval has passed since the last one let through. Repeats are
//! judged by the kernel's time of each event, not by when the agent reads it.

use std::{
    collections::HashMap,
    hash::{DefaultHasher, Hash, Hasher},
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use governor::{Quota, clock::Clock, middleware::NoOpMiddleware, state::keyed::HashMapStateStore};

use super::decode::NetData;
use crate::policy::ir::RateLimitScope;

/// Remembered keys before old ones are pruned.
const MAX_KEYS: usize = 65536;
/// Longer intervals are cut to this (~146 years of boot time, so never reached): governor keeps
/// times as u64 nanoseconds and must not overflow on `rateLimit: 99999999999h`.
const MAX_INTERVAL_NS: u64 = 1 << 62;

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

/// The clock of one limiter: set to the event's boot-clock time before each decision. It reads
/// 0 when the limiter is made, so all limiters measure from boot, as the events' times do.
#[derive(Debug, Default)]
struct EventTime(AtomicU64);

impl EventTime {
    fn set(&self, ns: u64) {
        self.0.store(ns, Ordering::Relaxed);
    }
}

impl Clock for EventTime {
    type Instant = Duration;

    fn now(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::Relaxed))
    }
}

type KeyedLimiter =
    governor::RateLimiter<Key, HashMapStateStore<Key>, EventTime, NoOpMiddleware<Duration>>;

#[derive(Default)]
pub struct RateLimiter {
    /// A governor limiter has one quota: one limiter per interval in use, by interval in ns.
    by_interval: HashMap<u64, KeyedLimiter>,
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
        let interval_ns = interval_ms.saturating_mul(1_000_000).min(MAX_INTERVAL_NS);
        // No interval, no limit.
        let Some(quota) = Quota::with_period(Duration::from_nanos(interval_ns)) else {
            return true;
        };
        let limiter = self.by_interval.entry(interval_ns).or_insert_with(|| {
            KeyedLimiter::new(quota, HashMapStateStore::default(), EventTime::default())
        });
        limiter.clock().set(now_ns);
        if limiter.check_key(&key).is_err() {
            return false;
        }
        // Only an event let through can add a key.
        if self.len() > MAX_KEYS {
            self.prune(now_ns);
        }
        true
    }

    /// Keys remembered, over all intervals.
    fn len(&self) -> usize {
        self.by_interval.values().map(KeyedLimiter::len).sum()
    }

    /// Forgets the keys whose interval is long over (they would pass again anyway), and the
    /// limiters left without keys (intervals of removed policies).
    fn prune(&mut self, now_ns: u64) {
        self.by_interval.retain(|_, l| {
            l.clock().set(now_ns);
            l.retain_recent();
            !l.is_empty()
        });
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
    fn each_selector_keeps_its_own_interval() {
        let mut r = RateLimiter::default();
        let slow = subject(10, 10, b"/a");
        let mut fast = subject(10, 10, b"/a");
        fast.selector_index = 1;
        assert!(r.allow(&slow, RateLimitScope::Thread, 1000, 0));
        assert!(r.allow(&fast, RateLimitScope::Thread, 10, 0));
        assert!(!r.allow(&slow, RateLimitScope::Thread, 1000, 20 * MS));
        assert!(r.allow(&fast, RateLimitScope::Thread, 10, 20 * MS));
    }

    #[test]
    fn events_read_out_of_order_are_judged_by_their_own_time() {
        let mut r = RateLimiter::default();
        let (a, b) = (subject(10, 10, b"/a"), subject(10, 10, b"/b"));
        assert!(r.allow(&a, RateLimitScope::Thread, 1000, 5000 * MS));
        assert!(
            !r.allow(&a, RateLimitScope::Thread, 1000, 4000 * MS),
            "older than the one let through"
        );
        // Another CPU's earlier events, read after `a`.
        assert!(r.allow(&b, RateLimitScope::Thread, 1000, 1000 * MS));
        assert!(!r.allow(&b, RateLimitScope::Thread, 1000, 1500 * MS));
        assert!(r.allow(&b, RateLimitScope::Thread, 1000, 2500 * MS));
    }

    #[test]
    fn an_interval_beyond_any_uptime_drops_every_repeat() {
        let mut r = RateLimiter::default();
        let s = subject(10, 10, b"/a");
        assert!(r.allow(&s, RateLimitScope::Thread, u64::MAX, 5000 * MS));
        assert!(!r.allow(&s, RateLimitScope::Thread, u64::MAX, 1 << 61));
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
        assert_eq!(r.len(), 1);
    }
}
