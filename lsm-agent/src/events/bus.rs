//! The event bus: every event the agent publishes goes to every subscriber (the `GetEvents`
//! streams, the JSON export).
//!
//! Publishing never blocks: each subscriber reads the shared ring at its own pace and skips
//! what it missed once it falls more than `capacity` events behind. What a client missed is
//! counted per client label and is readable as a [`BusSnapshot`].

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
};

use tokio::sync::broadcast;
pub use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use super::model::Event;

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
    tx: broadcast::Sender<Arc<Event>>,
    drops: Arc<Mutex<Drops>>,
}

impl EventBus {
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Self {
            tx,
            drops: Arc::new(Mutex::new(Drops {
                clients: BoundedLabel::new(MAX_CLIENTS),
                by_client: BTreeMap::new(),
                lost: 0,
            })),
        }
    }

    /// Returns how many subscribers will see the event (0 when nobody listens, which is fine).
    pub fn publish(&self, ev: impl Into<Arc<Event>>) -> usize {
        self.tx.send(ev.into()).unwrap_or(0)
    }

    /// A client of the agent (a `GetEvents` stream), whose losses are counted under `client`
    /// (its address, say). Everything published after this call is delivered or counted.
    pub fn subscribe_client(&self, client: &str) -> Subscriber {
        let label = self.lock().clients.admit(client).to_owned();
        Subscriber {
            rx: self.tx.subscribe(),
            client: Some(label),
            drops: self.drops.clone(),
        }
    }

    /// A consumer inside the agent (the JSON export) that accounts for its own losses; they
    /// are not in the snapshot.
    pub fn subscribe(&self) -> Subscriber {
        Subscriber {
            rx: self.tx.subscribe(),
            client: None,
            drops: self.drops.clone(),
        }
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
    rx: broadcast::Receiver<Arc<Event>>,
    client: Option<String>,
    drops: Arc<Mutex<Drops>>,
}

impl Subscriber {
    /// The next event. `Err(Lagged(n))`: `n` events were skipped (already counted); the
    /// following call returns the oldest event still held.
    pub async fn recv(&mut self) -> Result<Arc<Event>, RecvError> {
        let r = self.rx.recv().await;
        if let Err(RecvError::Lagged(n)) = r {
            self.missed(n);
        }
        r
    }

    /// [`recv`](Self::recv) without waiting.
    pub fn try_recv(&mut self) -> Result<Arc<Event>, TryRecvError> {
        let r = self.rx.try_recv();
        if let Err(TryRecvError::Lagged(n)) = r {
            self.missed(n);
        }
        r
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
