//! The channel index: which connections receive an event.
//!
//! A connection subscribes to a set of channels; an event on `logs:w1:f1` goes to subscribers
//! of `logs:w1:f1`, `logs:w1` and `logs`. The index maps each channel name to its subscribers,
//! so publishing looks up at most four keys and touches only the connections that want the
//! event: the cost grows with interested subscribers, not with all connections.
//!
//! Each connection owns a bounded queue ([`queue`]), bounded twice: by a number of events and
//! by the bytes they count as ([`footprint`]). A count alone let a slow reader of one-megabyte
//! documents hold a gigabyte. Publishing never waits: a full queue means the browser (or its
//! network) cannot keep up, and holding the event for it would either stall everyone or grow
//! memory without bound. That connection is dropped from the index and reported; the caller
//! closes it and the browser reconnects with its last event id, losing nothing (invariant 3).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc::error::{TryRecvError, TrySendError};
use tokio::sync::mpsc::{self, Receiver, Sender};

use crate::channel::Channel;
use crate::event::Event;
use crate::history::{footprint, Budget};

/// Identifies one SSE connection within this process.
pub type ConnId = u64;

struct Subscriber {
    tx: Arc<QueueSender>,
    channels: Box<[Channel]>,
}

/// A connection's queue of events, bounded by `budget`: its sending half stays in the
/// router, its receiving half goes to the connection's stream.
pub fn queue(budget: Budget) -> (QueueSender, QueueReceiver) {
    let (tx, rx) = mpsc::channel(budget.events.max(1));
    let bytes = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicBool::new(false));
    (
        QueueSender {
            tx,
            bytes: Arc::clone(&bytes),
            max_bytes: budget.bytes,
            refused: Arc::clone(&refused),
        },
        QueueReceiver { rx, bytes, refused },
    )
}

/// The router's end of a connection's queue: counts the bytes of what it queues.
pub struct QueueSender {
    tx: Sender<Arc<Event>>,
    /// The bytes queued and not yet taken by the connection's stream.
    bytes: Arc<AtomicUsize>,
    max_bytes: usize,
    /// It refused an event for being full: it takes nothing more, or the connection could
    /// receive a later event after missing that one. (Events are offered outside the hub
    /// lock, so another one may reach the queue before the router drops it.) Shared with the
    /// receiver, whose stream must not tell its client it is at a head past the refused
    /// event (see [`QueueReceiver::refused`]).
    refused: Arc<AtomicBool>,
}

/// Why [`QueueSender::offer`] did not queue an event.
enum Refused {
    /// The queue is over its budget: a slow consumer.
    Full,
    /// The stream has gone.
    Closed,
}

impl QueueSender {
    /// Queues `ev` unless that would take the queue over its budget. An event alone larger
    /// than the byte budget is still queued when nothing else is waiting: the budget bounds
    /// what a slow reader holds, it must not keep a fast one from ever receiving a large
    /// document.
    fn offer(&self, ev: &Arc<Event>) -> Result<(), Refused> {
        if self.refused.load(Ordering::Acquire) {
            return Err(Refused::Closed); // reported once, as full, when it happened
        }
        let size = footprint(ev);
        let queued = self.bytes.load(Ordering::Relaxed);
        if queued > 0 && queued.saturating_add(size) > self.max_bytes {
            return if self.tx.is_closed() {
                Err(Refused::Closed)
            } else {
                self.refused.store(true, Ordering::Release);
                Err(Refused::Full)
            };
        }
        // Counted before it can be received, so the receiver never subtracts first.
        self.bytes.fetch_add(size, Ordering::Relaxed);
        match self.tx.try_send(Arc::clone(ev)) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.bytes.fetch_sub(size, Ordering::Relaxed);
                match e {
                    TrySendError::Full(_) => {
                        self.refused.store(true, Ordering::Release);
                        Err(Refused::Full)
                    }
                    TrySendError::Closed(_) => Err(Refused::Closed),
                }
            }
        }
    }

    fn depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}

/// The connection's end of its queue. Taking an event (`recv`, `try_recv`) gives its bytes
/// back to the queue's budget; both are drop-in replacements for `mpsc::Receiver`'s, and
/// `recv` is cancel-safe like it (usable in `select!`).
pub struct QueueReceiver {
    rx: Receiver<Arc<Event>>,
    bytes: Arc<AtomicUsize>,
    refused: Arc<AtomicBool>,
}

impl QueueReceiver {
    /// The next event; `None` once the router has dropped the connection (a slow consumer,
    /// an admin close, a gap restart) and the queue is drained.
    pub async fn recv(&mut self) -> Option<Arc<Event>> {
        let ev = self.rx.recv().await?;
        self.taken(&ev);
        Some(ev)
    }

    /// The next event if one is queued.
    pub fn try_recv(&mut self) -> Result<Arc<Event>, TryRecvError> {
        let ev = self.rx.try_recv()?;
        self.taken(&ev);
        Ok(ev)
    }

    /// Whether the queue refused an event (a slow consumer, about to be closed). Set before
    /// the hub's head moves past that event, so a stream that read the head and then finds
    /// this false has every event up to that head in its queue.
    pub fn refused(&self) -> bool {
        self.refused.load(Ordering::Acquire)
    }

    /// The bytes queued and not yet taken.
    pub fn queued_bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Events queued and not yet taken.
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    fn taken(&self, ev: &Event) {
        self.bytes.fetch_sub(footprint(ev), Ordering::Relaxed);
    }
}

/// Outcome of offering an event to its subscribers.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Publish {
    /// Connections the event was queued for.
    pub delivered: usize,
    /// Connections whose queue was full (in events or in bytes). They must be removed from
    /// the router ([`Router::drop_failed`] does) and closed (and counted).
    pub overflowed: Vec<ConnId>,
    /// Connections whose stream has ended; removed silently.
    pub closed: Vec<ConnId>,
}

/// The queues an event goes to, collected under the hub lock and offered after it is
/// released ([`Targets::offer`]): waking thousands of streams is most of a broadcast's cost,
/// and a reconnect or a heartbeat should not wait for it. The buffer is kept between events,
/// so routing allocates nothing per subscriber.
#[derive(Default)]
pub struct Targets {
    queues: Vec<(ConnId, Arc<QueueSender>)>,
}

impl Targets {
    /// Offers `ev` to every collected queue, without waiting, and forgets them.
    pub fn offer(&mut self, ev: &Arc<Event>) -> Publish {
        let mut out = Publish::default();
        for (conn, tx) in self.queues.drain(..) {
            match tx.offer(ev) {
                Ok(()) => out.delivered += 1,
                Err(Refused::Full) => out.overflowed.push(conn),
                Err(Refused::Closed) => out.closed.push(conn),
            }
        }
        out
    }

    pub fn len(&self) -> usize {
        self.queues.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }
}

/// Channel name -> subscribed connections, plus each connection's queue.
#[derive(Default)]
pub struct Router {
    /// Keyed by `Box<str>` so that `&str` ancestor slices of an event's channel can be looked
    /// up without building a `Channel`.
    index: HashMap<Box<str>, HashSet<ConnId>>,
    conns: HashMap<ConnId, Subscriber>,
}

impl Router {
    pub fn new() -> Router {
        Router::default()
    }

    /// Registers `conn` for `channels` (duplicates ignored), replacing any previous
    /// subscription of the same id. A connection may subscribe to both a channel and its
    /// ancestor; it still receives each event once.
    pub fn subscribe(&mut self, conn: ConnId, channels: &[Channel], tx: QueueSender) {
        self.unsubscribe(conn);
        let mut unique: Vec<Channel> = Vec::with_capacity(channels.len());
        for c in channels {
            if !unique.contains(c) {
                unique.push(c.clone());
            }
        }
        for c in &unique {
            self.index
                .entry(Box::from(c.as_str()))
                .or_default()
                .insert(conn);
        }
        self.conns.insert(
            conn,
            Subscriber {
                tx: Arc::new(tx),
                channels: unique.into_boxed_slice(),
            },
        );
    }

    /// Removes `conn` from every channel. Returns whether it was subscribed.
    pub fn unsubscribe(&mut self, conn: ConnId) -> bool {
        let Some(sub) = self.conns.remove(&conn) else {
            return false;
        };
        for c in sub.channels.iter() {
            if let Some(set) = self.index.get_mut(c.as_str()) {
                set.remove(&conn);
                if set.is_empty() {
                    self.index.remove(c.as_str());
                }
            }
        }
        true
    }

    /// Collects into `targets` the queue of every connection subscribed to `ev`'s channel or
    /// an ancestor of it, each connection at most once.
    pub fn targets(&self, ev: &Event, targets: &mut Targets) {
        // At most four levels, most specific first.
        let mut levels: [Option<&HashSet<ConnId>>; 4] = [None; 4];
        for (i, name) in ev.channel.ancestors_and_self().take(4).enumerate() {
            levels[i] = self.index.get(name);
        }
        for (i, set) in levels.iter().enumerate() {
            let Some(set) = *set else { continue };
            for &conn in set {
                // Delivered already via a more specific channel?
                if levels[..i].iter().flatten().any(|s| s.contains(&conn)) {
                    continue;
                }
                if let Some(sub) = self.conns.get(&conn) {
                    targets.queues.push((conn, Arc::clone(&sub.tx)));
                }
            }
        }
    }

    /// Collects every connection's queue, whatever its channels: for control events (a mode
    /// switch).
    pub fn everyone(&self, targets: &mut Targets) {
        for (conn, sub) in &self.conns {
            targets.queues.push((*conn, Arc::clone(&sub.tx)));
        }
    }

    /// Queues `ev` for its subscribers here and now (under the caller's lock, as tests and
    /// benchmarks do), dropping the connections that failed.
    pub fn publish(&mut self, ev: &Arc<Event>) -> Publish {
        let mut targets = Targets::default();
        self.targets(ev, &mut targets);
        let out = targets.offer(ev);
        self.drop_failed(&out);
        out
    }

    /// Removes the connections whose queue refused an event (full, or its stream gone).
    pub fn drop_failed(&mut self, out: &Publish) {
        for conn in out.overflowed.iter().chain(&out.closed) {
            self.unsubscribe(*conn);
        }
    }

    /// Whether `conn` is subscribed.
    pub fn contains(&self, conn: ConnId) -> bool {
        self.conns.contains_key(&conn)
    }

    /// The channels `conn` is subscribed to, deduplicated, in subscription order.
    pub fn subscriptions(&self, conn: ConnId) -> Option<&[Channel]> {
        self.conns.get(&conn).map(|s| &*s.channels)
    }

    /// Events waiting in `conn`'s queue.
    pub fn queue_depth(&self, conn: ConnId) -> Option<usize> {
        self.conns.get(&conn).map(|s| s.tx.depth())
    }

    /// The bytes waiting in `conn`'s queue (see [`footprint`]).
    pub fn queue_bytes(&self, conn: ConnId) -> Option<usize> {
        self.conns
            .get(&conn)
            .map(|s| s.tx.bytes.load(Ordering::Relaxed))
    }

    /// Every channel with subscribers, and how many.
    pub fn subscribed(&self) -> impl Iterator<Item = (&str, usize)> {
        self.index.iter().map(|(c, s)| (&**c, s.len()))
    }

    /// Number of subscribed connections.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Number of channels with at least one subscriber.
    pub fn channels(&self) -> usize {
        self.index.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Op;
    use crate::position::Position;
    use bson::doc;

    fn ch(s: &str) -> Channel {
        Channel::parse(s).unwrap()
    }

    fn ev(n: u8, channel: &str) -> Arc<Event> {
        let pos = Position::decode(&format!("c.{n:02X}")).unwrap();
        Arc::new(Event::new(
            pos,
            ch(channel),
            Op::Insert,
            &doc! {"n": n as i32},
        ))
    }

    fn conn(r: &mut Router, id: ConnId, channels: &[&str], cap: usize) -> QueueReceiver {
        let (tx, rx) = queue(Budget::from(cap));
        let cs: Vec<Channel> = channels.iter().map(|c| ch(c)).collect();
        r.subscribe(id, &cs, tx);
        rx
    }

    fn drain(rx: &mut QueueReceiver) -> Vec<String> {
        let mut v = Vec::new();
        while let Ok(e) = rx.try_recv() {
            v.push(e.position.to_string());
        }
        v
    }

    #[test]
    fn delivers_to_channel_and_ancestors_once() {
        let mut r = Router::new();
        let mut exact = conn(&mut r, 1, &["logs:w1:f1"], 8);
        let mut ws = conn(&mut r, 2, &["logs:w1"], 8);
        let mut all = conn(&mut r, 3, &["logs"], 8);
        let mut both = conn(&mut r, 4, &["logs:w1", "logs:w1:f1", "logs"], 8);
        let mut other = conn(&mut r, 5, &["logs:w2", "logs:w1:f2"], 8);
        assert_eq!(r.connections(), 5);
        assert_eq!(r.channels(), 5);

        let p = r.publish(&ev(1, "logs:w1:f1"));
        assert_eq!(
            p,
            Publish {
                delivered: 4,
                ..Publish::default()
            }
        );
        let p = r.publish(&ev(2, "logs:w1"));
        assert_eq!(p.delivered, 3);
        let p = r.publish(&ev(3, "logs:w1:f1:x"));
        assert_eq!(p.delivered, 4);

        assert_eq!(drain(&mut exact), ["c.01", "c.03"]);
        assert_eq!(drain(&mut ws), ["c.01", "c.02", "c.03"]);
        assert_eq!(drain(&mut all), ["c.01", "c.02", "c.03"]);
        assert_eq!(drain(&mut both), ["c.01", "c.02", "c.03"]);
        assert!(drain(&mut other).is_empty());
    }

    #[test]
    fn no_subscribers_is_cheap_and_empty() {
        let mut r = Router::new();
        let _rx = conn(&mut r, 1, &["jobs"], 1);
        assert_eq!(r.publish(&ev(1, "logs:w1")), Publish::default());
    }

    #[test]
    fn full_queue_overflows_and_removes() {
        let mut r = Router::new();
        let mut slow = conn(&mut r, 1, &["logs"], 1);
        let mut fast = conn(&mut r, 2, &["logs"], 8);
        assert_eq!(r.publish(&ev(1, "logs:a")).delivered, 2);
        let p = r.publish(&ev(2, "logs:a"));
        assert_eq!(
            p,
            Publish {
                delivered: 1,
                overflowed: vec![1],
                ..Publish::default()
            }
        );
        assert!(!r.contains(1));
        assert_eq!(r.connections(), 1);
        // Later events are not queued for it even once it has room.
        assert_eq!(drain(&mut slow), ["c.01"]);
        assert_eq!(r.publish(&ev(3, "logs:a")).delivered, 1);
        assert!(drain(&mut slow).is_empty());
        assert_eq!(drain(&mut fast), ["c.01", "c.02", "c.03"]);
    }

    /// Offers happen outside the hub lock: between a queue refusing an event and the router
    /// dropping it, another event may be offered. Taking it after the reader made room would
    /// deliver a later event after a missing one.
    #[test]
    fn a_queue_that_refused_an_event_takes_nothing_more() {
        let mut r = Router::new();
        let mut slow = conn(&mut r, 1, &["logs"], 1);
        let mut targets = Targets::default();
        r.targets(&ev(1, "logs:a"), &mut targets);
        assert_eq!(targets.offer(&ev(1, "logs:a")).delivered, 1);
        // Full: refused, reported once as overflowed.
        r.targets(&ev(2, "logs:a"), &mut targets);
        assert_eq!(targets.offer(&ev(2, "logs:a")).overflowed, vec![1]);
        // The reader makes room before the router has dropped it: still refused, as closed.
        assert_eq!(drain(&mut slow), ["c.01"]);
        r.targets(&ev(3, "logs:a"), &mut targets);
        let p = targets.offer(&ev(3, "logs:a"));
        assert_eq!((p.delivered, p.closed), (0, vec![1]));
        assert!(drain(&mut slow).is_empty());
    }

    #[test]
    fn closed_queue_is_removed_silently() {
        let mut r = Router::new();
        let rx = conn(&mut r, 1, &["logs:w1"], 4);
        drop(rx);
        assert_eq!(
            r.publish(&ev(1, "logs:w1")),
            Publish {
                closed: vec![1],
                ..Publish::default()
            }
        );
        assert_eq!(r.connections(), 0);
        assert_eq!(r.channels(), 0);
    }

    #[test]
    fn unsubscribe_and_resubscribe() {
        let mut r = Router::new();
        let mut rx = conn(&mut r, 1, &["logs:w1", "logs:w1"], 4);
        assert_eq!(r.subscriptions(1).unwrap(), [ch("logs:w1")]);
        let _other = conn(&mut r, 2, &["logs:w1"], 4);
        assert_eq!(r.channels(), 1);
        // Re-subscribing replaces the old channel set.
        let (tx, mut rx2) = queue(Budget::from(4));
        r.subscribe(1, &[ch("logs:w2")], tx);
        assert_eq!(r.channels(), 2);
        assert_eq!(r.publish(&ev(1, "logs:w1")).delivered, 1);
        assert_eq!(r.publish(&ev(2, "logs:w2")).delivered, 1);
        assert!(drain(&mut rx).is_empty());
        assert_eq!(drain(&mut rx2), ["c.02"]);
        assert!(r.unsubscribe(1));
        assert!(!r.unsubscribe(1));
        assert!(r.unsubscribe(2));
        assert_eq!((r.connections(), r.channels()), (0, 0));
    }

    #[test]
    fn frames_are_shared_not_copied() {
        let mut r = Router::new();
        let mut a = conn(&mut r, 1, &["logs"], 1);
        let mut b = conn(&mut r, 2, &["logs"], 1);
        let e = ev(1, "logs");
        r.publish(&e);
        let (x, y) = (a.try_recv().unwrap(), b.try_recv().unwrap());
        assert!(Arc::ptr_eq(&x, &e) && Arc::ptr_eq(&y, &e));
    }

    fn padded(n: u8, pad: usize) -> Arc<Event> {
        let pos = Position::decode(&format!("c.{n:02X}")).unwrap();
        Arc::new(Event::new(
            pos,
            ch("logs:a"),
            Op::Insert,
            &doc! {"pad": "x".repeat(pad)},
        ))
    }

    #[test]
    fn a_queue_over_its_byte_budget_overflows_and_is_removed() {
        let one = footprint(&padded(1, 1000));
        let mut r = Router::new();
        let (tx, mut slow) = queue(Budget::new(1000, 2 * one + 10));
        r.subscribe(1, &[ch("logs")], tx);
        let mut fast = conn(&mut r, 2, &["logs"], 1000);
        assert_eq!(r.publish(&padded(1, 1000)).delivered, 2);
        assert_eq!(r.publish(&padded(2, 1000)).delivered, 2);
        assert_eq!(r.queue_bytes(1), Some(2 * one));
        assert_eq!(slow.queued_bytes(), 2 * one);
        // The third would take it over its bytes, far below its count.
        let p = r.publish(&padded(3, 1000));
        assert_eq!(
            p,
            Publish {
                delivered: 1,
                overflowed: vec![1],
                ..Publish::default()
            }
        );
        assert!(!r.contains(1));
        assert_eq!(drain(&mut slow), ["c.01", "c.02"]);
        assert_eq!(slow.queued_bytes(), 0);
        assert_eq!(drain(&mut fast), ["c.01", "c.02", "c.03"]);
    }

    #[test]
    fn a_reader_that_keeps_up_is_never_over_the_byte_budget() {
        let one = footprint(&padded(1, 1000));
        let mut r = Router::new();
        let (tx, mut rx) = queue(Budget::new(1000, 2 * one));
        r.subscribe(1, &[ch("logs")], tx);
        for n in 1..=50 {
            assert_eq!(r.publish(&padded(n, 1000)).delivered, 1);
            if n % 2 == 0 {
                assert_eq!(drain(&mut rx).len(), 2);
                assert_eq!(rx.queued_bytes(), 0);
            }
        }
        assert!(r.contains(1));
    }

    #[test]
    fn an_event_larger_than_the_byte_budget_reaches_an_empty_queue() {
        let mut r = Router::new();
        let (tx, mut rx) = queue(Budget::new(1000, 100));
        r.subscribe(1, &[ch("logs")], tx);
        // Alone in the queue: delivered, however large.
        assert_eq!(r.publish(&padded(1, 10_000)).delivered, 1);
        assert_eq!(drain(&mut rx), ["c.01"]);
        assert_eq!(r.publish(&padded(2, 10_000)).delivered, 1);
        // Behind another one: over the budget.
        assert_eq!(r.publish(&padded(3, 10)).overflowed, vec![1]);
    }

    #[tokio::test]
    async fn recv_gives_the_bytes_back() {
        let mut r = Router::new();
        let (tx, mut rx) = queue(Budget::new(10, 1 << 20));
        r.subscribe(1, &[ch("logs")], tx);
        let e = padded(1, 500);
        r.publish(&e);
        assert_eq!((rx.len(), rx.queued_bytes()), (1, footprint(&e)));
        assert!(Arc::ptr_eq(&rx.recv().await.unwrap(), &e));
        assert_eq!((rx.len(), rx.queued_bytes()), (0, 0));
        assert!(rx.is_empty());
        r.unsubscribe(1);
        assert!(rx.recv().await.is_none());
    }
}
