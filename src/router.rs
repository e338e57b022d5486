//! The channel index: which connections receive an event.
//!
//! A connection subscribes to a set of channels; an event on `logs:w1:f1` goes to subscribers
//! of `logs:w1:f1`, `logs:w1` and `logs`. The index maps each channel name to its subscribers,
//! so publishing looks up at most four keys and touches only the connections that want the
//! event: the cost grows with interested subscribers, not with all connections.
//!
//! Each connection owns a bounded queue. Publishing never waits: a full queue means the
//! browser (or its network) cannot keep up, and holding the event for it would either stall
//! everyone or grow memory without bound. That connection is dropped from the index and
//! reported; the caller closes it and the browser reconnects with its last event id, losing
//! nothing (invariant 3).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::mpsc::Sender;

use crate::channel::Channel;
use crate::event::Event;

/// Identifies one SSE connection within this process.
pub type ConnId = u64;

struct Subscriber {
    tx: Sender<Arc<Event>>,
    channels: Box<[Channel]>,
}

/// Outcome of [`Router::publish`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Publish {
    /// Connections the event was queued for.
    pub delivered: usize,
    /// Connections whose queue was full. They have been removed from the router; the caller
    /// must close them (and count them).
    pub overflowed: Vec<ConnId>,
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
    pub fn subscribe(&mut self, conn: ConnId, channels: &[Channel], tx: Sender<Arc<Event>>) {
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
                tx,
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

    /// Queues `ev` for every connection subscribed to its channel or an ancestor of it, each
    /// connection at most once. Never blocks.
    ///
    /// A full queue removes the connection and reports it in `overflowed`; a closed queue
    /// (the connection's task has ended) removes it silently.
    pub fn publish(&mut self, ev: &Arc<Event>) -> Publish {
        let mut out = Publish::default();
        let mut closed: Vec<ConnId> = Vec::new();
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
                self.offer(conn, ev, &mut out, &mut closed);
            }
        }
        self.drop_failed(&out, &closed);
        out
    }

    /// Queues a control event (a mode switch) for every connection, whatever its channels.
    /// Full queues are treated as in [`Router::publish`].
    pub fn broadcast(&mut self, ev: &Arc<Event>) -> Publish {
        let mut out = Publish::default();
        let mut closed = Vec::new();
        let conns: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in conns {
            self.offer(conn, ev, &mut out, &mut closed);
        }
        self.drop_failed(&out, &closed);
        out
    }

    /// Queues `ev` for `conn` without waiting, sorting the connection into delivered,
    /// overflowed (a slow consumer) or closed (gone).
    fn offer(&self, conn: ConnId, ev: &Arc<Event>, out: &mut Publish, closed: &mut Vec<ConnId>) {
        let Some(sub) = self.conns.get(&conn) else {
            return;
        };
        match sub.tx.try_send(Arc::clone(ev)) {
            Ok(()) => out.delivered += 1,
            Err(TrySendError::Full(_)) => out.overflowed.push(conn),
            Err(TrySendError::Closed(_)) => closed.push(conn),
        }
    }

    fn drop_failed(&mut self, out: &Publish, closed: &[ConnId]) {
        for conn in out.overflowed.iter().chain(closed) {
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
        self.conns
            .get(&conn)
            .map(|s| s.tx.max_capacity() - s.tx.capacity())
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
    use tokio::sync::mpsc::{self, Receiver};

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

    fn conn(r: &mut Router, id: ConnId, channels: &[&str], cap: usize) -> Receiver<Arc<Event>> {
        let (tx, rx) = mpsc::channel(cap);
        let cs: Vec<Channel> = channels.iter().map(|c| ch(c)).collect();
        r.subscribe(id, &cs, tx);
        rx
    }

    fn drain(rx: &mut Receiver<Arc<Event>>) -> Vec<String> {
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
                overflowed: vec![]
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
                overflowed: vec![1]
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

    #[test]
    fn closed_queue_is_removed_silently() {
        let mut r = Router::new();
        let rx = conn(&mut r, 1, &["logs:w1"], 4);
        drop(rx);
        assert_eq!(r.publish(&ev(1, "logs:w1")), Publish::default());
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
        let (tx, mut rx2) = mpsc::channel(4);
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
}
