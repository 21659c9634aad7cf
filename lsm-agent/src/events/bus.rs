//! The event bus: every event the agent publishes goes to every subscriber (the `GetEvents`
//! streams, the JSON export).
//!
//! Publishing never blocks: each subscriber reads the shared ring at its own pace and skips
//! what it missed once it falls more than `capacity` events behind. What a client missed is
//! counted per client label and is readable as a [`BusSnapshot`].
//!
//! Enforcement events (a denial, a kill, a signal) are not skipped: they also go into a
//! second, larger ring of their own, from which a subscriber that lagged takes back, in
//! order, those it would have missed (every event carries a sequence number, so none is
//! delivered twice).

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio::sync::broadcast;
pub use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use super::model::{Action, Event, EventKind};

/// Enforcement events the bus keeps for subscribers that lag.
pub const ENFORCEMENT_CAPACITY: usize = 16384;

/// An event and its place in the order of publication.
type Seq = (u64, Arc<Event>);

/// Whether `ev` records a denial, a kill or a signal: an event no subscriber may skip.
pub fn is_enforcement(ev: &Event) -> bool {
    matches!(&ev.kind, EventKind::Hook(h) if matches!(h.action, Action::Sigkill | Action::Override | Action::Signal | Action::NotifyEnforcer))
}

/// Distinct client labels counted separately.
pub const MAX_CLIENTS: usize = 32;
/// The label that stands for every value past a bound.
pub const OTHER: &str = "other";

/// Admits the first `max` distinct values of a label; later ones become [`OTHER`].
#[derive(Debug)]
pub struct BoundedLabel {
    max: usize,
    seen: BTreeSet<String>,
}

impl BoundedLabel {
    pub const fn new(max: usize) -> Self {
        Self {
            max,
            seen: BTreeSet::new(),
        }
    }

    /// `value` itself while there is room (or it was admitted before), else [`OTHER`].
    pub fn admit<'a>(&mut self, value: &'a str) -> &'a str {
        if self.seen.contains(value) {
            return value;
        }
        if self.seen.len() < self.max {
            self.seen.insert(value.to_owned());
            return value;
        }
        OTHER
    }
}

/// Losses of the counted subscribers.
#[derive(Debug)]
struct Drops {
    clients: BoundedLabel,
    by_client: BTreeMap<String, u64>,
    lost: u64,
}

/// What the bus has seen, as of one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BusSnapshot {
    /// Subscribers now, counted or not.
    pub subscribers: usize,
    /// Events each client missed since the bus was made, by client label; only clients that
    /// missed some. At most [`MAX_CLIENTS`] labels, the others summed under [`OTHER`].
    pub dropped_by_client: BTreeMap<String, u64>,
    /// Events the clients missed, summed over clients.
    pub lost: u64,
}

/// Cheap to clone; every clone publishes to the same subscribers.
#[derive(Clone, Debug)]
pub struct EventBus {
    tx: broadcast::Sender<Seq>,
    enforcement: broadcast::Sender<Seq>,
    next: Arc<AtomicU64>,
    drops: Arc<Mutex<Drops>>,
}

impl EventBus {
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        let (enforcement, _) = broadcast::channel(ENFORCEMENT_CAPACITY);
        Self {
            tx,
            enforcement,
            next: Arc::new(AtomicU64::new(1)),
            drops: Arc::new(Mutex::new(Drops {
                clients: BoundedLabel::new(MAX_CLIENTS),
                by_client: BTreeMap::new(),
                lost: 0,
            })),
        }
    }

    /// Returns how many subscribers will see the event (0 when nobody listens, which is fine).
    pub fn publish(&self, ev: impl Into<Arc<Event>>) -> usize {
        let ev = ev.into();
        // One publisher (the decoder): the numbers follow the order of the sends.
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        if is_enforcement(&ev) {
            let _ = self.enforcement.send((seq, ev.clone()));
        }
        self.tx.send((seq, ev)).unwrap_or(0)
    }

    fn subscriber(&self, client: Option<String>) -> Subscriber {
        Subscriber {
            enforcement: self.enforcement.subscribe(),
            rx: self.tx.subscribe(),
            client,
            drops: self.drops.clone(),
            last: 0,
            held: VecDeque::new(),
            ready: VecDeque::new(),
        }
    }

    /// A client of the agent (a `GetEvents` stream), whose losses are counted under `client`
    /// (its address, say). Everything published after this call is delivered or counted.
    pub fn subscribe_client(&self, client: &str) -> Subscriber {
        let label = self.lock().clients.admit(client).to_owned();
        self.subscriber(Some(label))
    }

    /// A consumer inside the agent (the JSON export) that accounts for its own losses; they
    /// are not in the snapshot.
    pub fn subscribe(&self) -> Subscriber {
        self.subscriber(None)
    }

    pub fn subscriber_count(&self) -> usize {
        self.tx.receiver_count()
    }

    /// Events that clients missed because they lagged, summed over clients.
    pub fn lost_events(&self) -> u64 {
        self.lock().lost
    }

    pub fn snapshot(&self) -> BusSnapshot {
        let drops = self.lock();
        BusSnapshot {
            subscribers: self.tx.receiver_count(),
            dropped_by_client: drops.by_client.clone(),
            lost: drops.lost,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Drops> {
        self.drops.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One subscription; dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscriber {
    rx: broadcast::Receiver<Seq>,
    enforcement: broadcast::Receiver<Seq>,
    client: Option<String>,
    drops: Arc<Mutex<Drops>>,
    /// The number of the last event returned.
    last: u64,
    /// Enforcement events taken from their ring and not yet passed by `rx`.
    held: VecDeque<Seq>,
    /// Events to return before reading `rx` again (enforcement events taken back after a
    /// lag, then the event that ended it).
    ready: VecDeque<Seq>,
}

impl Subscriber {
    /// The next event. `Err(Lagged(n))`: `n` events were skipped (already counted), none of
    /// them an enforcement event the bus still held; the following calls return those, then
    /// the oldest event still held.
    pub async fn recv(&mut self) -> Result<Arc<Event>, RecvError> {
        if let Some(ev) = self.next_ready() {
            return Ok(ev);
        }
        match self.rx.recv().await {
            Ok(next) => Ok(self.deliver(next)),
            Err(RecvError::Lagged(n)) => {
                // The oldest event still held tells which ones were skipped.
                match self.rx.recv().await {
                    Ok(next) => self.after_lag(n, next),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// [`recv`](Self::recv) without waiting.
    pub fn try_recv(&mut self) -> Result<Arc<Event>, TryRecvError> {
        if let Some(ev) = self.next_ready() {
            return Ok(ev);
        }
        match self.rx.try_recv() {
            Ok(next) => Ok(self.deliver(next)),
            Err(TryRecvError::Lagged(n)) => match self.rx.try_recv() {
                Ok(next) => match self.after_lag(n, next) {
                    Ok(ev) => Ok(ev),
                    Err(RecvError::Lagged(n)) => Err(TryRecvError::Lagged(n)),
                    Err(RecvError::Closed) => Err(TryRecvError::Closed),
                },
                Err(TryRecvError::Empty) => {
                    self.missed(n);
                    Err(TryRecvError::Lagged(n))
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    fn next_ready(&mut self) -> Option<Arc<Event>> {
        let (seq, ev) = self.ready.pop_front()?;
        self.last = seq;
        Some(ev)
    }

    /// Returns `next` (in order), forgetting the enforcement events it passed.
    fn deliver(&mut self, next: Seq) -> Arc<Event> {
        self.take_enforcement(next.0);
        self.held.retain(|(s, _)| *s > next.0);
        self.last = next.0;
        next.1
    }

    /// After `n` skipped events, `next` being the oldest left: queues the enforcement events
    /// among the skipped ones (still held by their ring), then `next`, and counts the rest.
    /// `Err(Lagged)` with that count, or the first queued event when nothing was lost.
    fn after_lag(&mut self, n: u64, next: Seq) -> Result<Arc<Event>, RecvError> {
        self.take_enforcement(next.0);
        let last = self.last;
        let (skipped, later): (VecDeque<Seq>, VecDeque<Seq>) = std::mem::take(&mut self.held)
            .into_iter()
            .filter(|(s, _)| *s > last)
            .partition(|(s, _)| *s < next.0);
        self.held = later.into_iter().filter(|(s, _)| *s > next.0).collect();
        let recovered = skipped.len() as u64;
        self.ready.extend(skipped);
        self.ready.push_back(next);
        let lost = n.saturating_sub(recovered);
        if lost == 0 {
            return self.next_ready().ok_or(RecvError::Lagged(0));
        }
        self.missed(lost);
        Err(RecvError::Lagged(lost))
    }

    /// Moves the enforcement events published up to `upto` from their ring to `held`.
    fn take_enforcement(&mut self, upto: u64) {
        loop {
            match self.enforcement.try_recv() {
                Ok(e) => {
                    let past = e.0 >= upto;
                    self.held.push_back(e);
                    if past {
                        return;
                    }
                }
                // Enforcement events skipped here were delivered by `rx` unless it lagged
                // too, which `after_lag` counts.
                Err(TryRecvError::Lagged(_)) => {}
                Err(_) => return,
            }
        }
    }

    /// The label this subscriber's losses are counted under.
    pub fn client(&self) -> Option<&str> {
        self.client.as_deref()
    }

    fn missed(&self, n: u64) {
        let Some(client) = &self.client else {
            return;
        };
        let mut drops = self.drops.lock().unwrap_or_else(|p| p.into_inner());
        drops.lost += n;
        *drops.by_client.entry(client.clone()).or_default() += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::model::{EventKind, Exec, Process, Time};

    fn exec(pid: u32) -> Event {
        Event {
            node_name: "node".into(),
            time: Time::from_unix_secs(1),
            kind: EventKind::Exec(Exec {
                process: Process {
                    pid,
                    ..Default::default()
                },
                parent: None,
            }),
        }
    }

    #[test]
    fn bounded_label_admits_the_first_values() {
        let mut b = BoundedLabel::new(2);
        assert_eq!(b.admit("a"), "a");
        assert_eq!(b.admit("b"), "b");
        assert_eq!(b.admit("c"), OTHER);
        assert_eq!(b.admit("a"), "a");
    }

    #[tokio::test]
    async fn every_subscriber_gets_every_event_in_order() {
        let bus = EventBus::new(8);
        let mut a = bus.subscribe_client("10.0.0.1");
        let mut b = bus.subscribe();
        assert_eq!(bus.publish(exec(1)), 2);
        assert_eq!(bus.publish(exec(2)), 2);
        for s in [&mut a, &mut b] {
            assert_eq!(s.recv().await.unwrap().process().pid, 1);
            assert_eq!(s.try_recv().unwrap().process().pid, 2);
            assert!(matches!(s.try_recv(), Err(TryRecvError::Empty)));
        }
        drop(a);
        assert_eq!(bus.snapshot().subscribers, 1);
    }

    #[tokio::test]
    async fn a_lagging_client_skips_and_its_losses_are_counted_under_its_label() {
        let bus = EventBus::new(4);
        let mut slow = bus.subscribe_client("10.0.0.1");
        let mut unix = bus.subscribe_client("unix");
        let mut export = bus.subscribe();
        for pid in 0..10 {
            bus.publish(exec(pid));
        }
        assert!(matches!(slow.recv().await, Err(RecvError::Lagged(6))));
        assert_eq!(slow.recv().await.unwrap().process().pid, 6);
        assert!(matches!(unix.try_recv(), Err(TryRecvError::Lagged(6))));
        // The export counts its own losses.
        assert!(matches!(export.recv().await, Err(RecvError::Lagged(6))));
        let s = bus.snapshot();
        assert_eq!(s.subscribers, 3);
        assert_eq!(s.lost, 12);
        assert_eq!(bus.lost_events(), 12);
        assert_eq!(
            s.dropped_by_client,
            BTreeMap::from([("10.0.0.1".to_owned(), 6), ("unix".to_owned(), 6)])
        );
    }

    fn denial(pid: u32) -> Event {
        use crate::{
            events::model::{Action, Hook, HookOrigin},
            policy::ir::{LsmHook, Target},
        };
        Event {
            node_name: "node".into(),
            time: Time::from_unix_secs(1),
            kind: EventKind::Hook(Hook {
                process: Process {
                    pid,
                    ..Default::default()
                },
                parent: None,
                policy_name: "deny".into(),
                policy_namespace: None,
                hook: Target::Lsm(LsmHook::FileOpen),
                origin: HookOrigin::LsmHook,
                args: Vec::new(),
                return_arg: None,
                data: Vec::new(),
                action: Action::Override,
                return_action: None,
                message: None,
                tags: Vec::new(),
                request: None,
            }),
        }
    }

    #[tokio::test]
    async fn a_lagging_client_still_gets_every_denial_in_order_and_counts_only_the_rest() {
        let bus = EventBus::new(4);
        let mut slow = bus.subscribe_client("10.0.0.1");
        for pid in 0..10 {
            if pid == 2 || pid == 4 {
                bus.publish(denial(pid));
            } else {
                bus.publish(exec(pid));
            }
        }
        // Skipped: 0..6; denials 2 and 4 come back first, then 6 onwards.
        assert!(matches!(slow.recv().await, Err(RecvError::Lagged(4))));
        let mut got = Vec::new();
        for _ in 0..6 {
            got.push(slow.recv().await.unwrap().process().pid);
        }
        assert_eq!(got, [2, 4, 6, 7, 8, 9]);
        assert_eq!(bus.snapshot().lost, 4);
        // A denial delivered in order is not delivered again.
        bus.publish(denial(10));
        bus.publish(exec(11));
        assert_eq!(slow.recv().await.unwrap().process().pid, 10);
        assert_eq!(slow.try_recv().unwrap().process().pid, 11);
        assert!(matches!(slow.try_recv(), Err(TryRecvError::Empty)));
    }

    #[tokio::test]
    async fn clients_past_the_bound_are_counted_as_other() {
        let bus = EventBus::new(1);
        let mut subs: Vec<Subscriber> = (0..MAX_CLIENTS + 2)
            .map(|i| bus.subscribe_client(&format!("10.0.0.{i}")))
            .collect();
        // An admitted client keeps its label on a new connection.
        subs.push(bus.subscribe_client("10.0.0.0"));
        assert_eq!(subs[MAX_CLIENTS - 1].client(), Some("10.0.0.31"));
        assert_eq!(subs[MAX_CLIENTS].client(), Some(OTHER));
        bus.publish(exec(1));
        bus.publish(exec(2));
        for s in &mut subs {
            assert!(matches!(s.recv().await, Err(RecvError::Lagged(1))));
        }
        let s = bus.snapshot();
        assert_eq!(s.dropped_by_client.len(), MAX_CLIENTS + 1);
        assert_eq!(s.dropped_by_client[OTHER], 2);
        assert_eq!(s.dropped_by_client["10.0.0.0"], 2);
        assert_eq!(s.lost, MAX_CLIENTS as u64 + 3);
    }
}
