//! Which documents the source delivered recently, and at which position — whatever the
//! history ring's capacity.
//!
//! The polling source re-reads an overlap window (see `source::polling`), and documents do not
//! commit in `_id` order, so several things need to know what inside that window was
//! delivered already:
//! - a poller taking over from a change stream, which must not repeat what the stream sent;
//! - a polling backlog, which must not send a document the poller has not delivered yet (it
//!   arrives live, after the head);
//! - a polling catch-up, which in addition must place every document at the position it was
//!   delivered at: a late document (an `_id` below the cursor, committed after newer ones)
//!   delivered after the client's position is below that position's cursor, so `_id` alone
//!   cannot tell whether the client has it.
//!
//! The ring cannot answer that: it is bounded by count, and a busy window evicts it. This is
//! bounded by the window instead: a document whose ObjectId `_id` is more than the window
//! older than the head is forgotten — the poller no longer reads it either — except late
//! deliveries, which move to a log bounded by count ([`LATE_LOG`]). Only documents with an
//! ObjectId `_id` are kept (the poller skips the others), and nothing is kept unless polling
//! can take over ([`Delivered::track`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bson::oid::ObjectId;

use crate::event::{key_object_id, Event};
use crate::position::Position;
use crate::source::polling::{oid_secs, window_start};

/// Late deliveries remembered after they leave the window.
pub const LATE_LOG: usize = 10_000;

#[derive(Debug, Default)]
pub struct Delivered {
    /// The window; `None`: not tracking.
    window: Option<Duration>,
    /// This segment's deliveries within the window, by `_id`, with their positions.
    recent: BTreeMap<(ObjectId, Arc<str>), Position>,
    /// This segment's late deliveries that left the window, oldest first.
    late: VecDeque<(Arc<str>, Position)>,
    /// The newest late delivery dropped from a full `late` log.
    late_forgotten: Option<Position>,
    /// Delivered by the source before the last switch (its window at that moment), including
    /// what earlier segments delivered that was still inside the window at the switch: a
    /// poller that takes over after a change stream, polling, change stream within one
    /// window re-reads what the first of them delivered.
    before_switch: BTreeSet<(ObjectId, Arc<str>)>,
    /// Where the current segment began, if it began with a source switch.
    switched_at: Option<Position>,
}

/// What a polling catch-up needs, taken atomically with the head.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Documents of the current segment and the positions they were delivered at: every
    /// delivery within the window, and late deliveries before it.
    pub positions: HashMap<Arc<str>, Position>,
    /// Documents delivered before the current segment began.
    pub before_switch: HashSet<Arc<str>>,
    /// Where the current segment began, if with a switch: positions before it cannot be
    /// caught up by polling.
    pub switched_at: Option<Position>,
    /// Late deliveries at or before this position may have been forgotten.
    pub late_forgotten: Option<Position>,
}

impl Delivered {
    /// Starts keeping the documents delivered within `window` of the head.
    pub fn track(&mut self, window: Duration) {
        self.window = Some(window);
    }

    pub fn is_tracking(&self) -> bool {
        self.window.is_some()
    }

    /// Records a published event.
    pub fn record(&mut self, ev: &Event) {
        if self.window.is_none() {
            return;
        }
        if let Some(key) = &ev.key {
            if let Some(id) = key_object_id(key) {
                self.recent
                    .insert((id, Arc::clone(key)), ev.position.clone());
            }
        }
    }

    /// Records a document delivered at `pos` without an event (a starting poller's window).
    pub fn record_key(&mut self, key: Arc<str>, pos: Position) {
        if self.window.is_none() {
            return;
        }
        if let Some(id) = key_object_id(&key) {
            self.recent.insert((id, key), pos);
        }
    }

    /// The oldest `_id` inside the window before `head` (its cursor's time when polling, its
    /// cluster time on a change stream).
    fn window_low(&self, head: &Position) -> Option<ObjectId> {
        let window = self.window?;
        let secs = match head.polling() {
            Some(cursor) => cursor.high().map(|h| oid_secs(&h)),
            None => head.cluster_time().map(|t| t.time),
        }?;
        Some(window_start(secs, window))
    }

    /// Forgets what is older than the window before `head` (its cursor's time when polling,
    /// its cluster time on a change stream); late deliveries move to the late log.
    pub fn forget_before(&mut self, head: &Position) {
        let Some(low) = self.window_low(head) else {
            return;
        };
        while let Some(entry) = self.recent.first_entry() {
            if entry.key().0 >= low {
                break;
            }
            let ((_, key), pos) = entry.remove_entry();
            if pos.polling().is_some_and(|c| c.late() > 0) {
                if self.late.len() >= LATE_LOG {
                    if let Some((_, dropped)) = self.late.pop_front() {
                        self.late_forgotten = Some(dropped);
                    }
                }
                self.late.push_back((key, pos));
            }
        }
    }

    /// The source switched kind and continues at `start`: what it delivered so far belongs to
    /// the previous segment.
    pub fn switched(&mut self, start: Position) {
        // What earlier segments delivered stays remembered while it is inside the window at
        // `start`: a switch and a switch back within one window must not forget it.
        let earlier = std::mem::take(&mut self.before_switch);
        let mut before = match self.window_low(&start) {
            Some(low) => earlier.into_iter().filter(|(id, _)| *id >= low).collect(),
            None => BTreeSet::new(),
        };
        before.extend(std::mem::take(&mut self.recent).into_keys());
        self.before_switch = before;
        self.late.clear();
        self.late_forgotten = None;
        self.switched_at = Some(start);
    }

    /// The keys (collection and `_id`) of the documents delivered recently.
    pub fn keys(&self) -> HashSet<Arc<str>> {
        self.recent
            .keys()
            .map(|(_, k)| Arc::clone(k))
            .chain(self.late.iter().map(|(k, _)| Arc::clone(k)))
            .chain(self.before_switch.iter().map(|(_, k)| Arc::clone(k)))
            .collect()
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            positions: self
                .late
                .iter()
                .map(|(k, p)| (Arc::clone(k), p.clone()))
                .chain(
                    self.recent
                        .iter()
                        .map(|((_, k), p)| (Arc::clone(k), p.clone())),
                )
                .collect(),
            before_switch: self
                .before_switch
                .iter()
                .map(|(_, k)| Arc::clone(k))
                .collect(),
            switched_at: self.switched_at.clone(),
            late_forgotten: self.late_forgotten.clone(),
        }
    }

    pub fn len(&self) -> usize {
        self.recent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.recent.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::Channel;
    use crate::event::Op;
    use crate::position::PollCursor;
    use bson::doc;

    fn oid(secs: u32, n: u8) -> ObjectId {
        let mut b = [0u8; 12];
        b[..4].copy_from_slice(&secs.to_be_bytes());
        b[11] = n;
        ObjectId::from_bytes(b)
    }

    /// Document `(secs, n)` delivered at cursor `(high_secs, high_n)` with `late`.
    fn ev(secs: u32, n: u8, at: (u32, u8), late: u32) -> Event {
        let pos = Position::Polling(PollCursor::new(1, Some(oid(at.0, at.1)), late));
        let id = oid(secs, n);
        Event::for_document(
            pos,
            "logs",
            Channel::parse("logs:a").unwrap(),
            Op::Insert,
            &doc! {"_id": id},
        )
    }

    fn key(secs: u32, n: u8) -> Arc<str> {
        crate::event::document_key("logs", &bson::Bson::ObjectId(oid(secs, n)))
    }

    #[test]
    fn keeps_the_window_before_the_head_and_late_deliveries_beyond() {
        let mut d = Delivered::default();
        d.record(&ev(100, 1, (100, 1), 0));
        assert!(d.is_empty() && !d.is_tracking());
        d.track(Duration::from_secs(10));
        for e in [
            ev(100, 1, (100, 1), 0),
            ev(105, 2, (105, 2), 0),
            ev(99, 9, (105, 2), 1),
            ev(110, 3, (110, 3), 0),
            ev(111, 4, (111, 4), 0),
        ] {
            d.record(&e);
            d.forget_before(&e.position);
        }
        assert_eq!(d.len(), 3, "100 and 99 are more than 10 s before 111");
        let keys = d.keys();
        assert!(keys.contains(&key(105, 2)));
        assert!(!keys.contains(&key(100, 1)));
        // The late one left the window but keeps its position.
        assert!(keys.contains(&key(99, 9)));
        let snap = d.snapshot();
        assert_eq!(snap.positions[&key(99, 9)], ev(99, 9, (105, 2), 1).position);
        assert_eq!(snap.positions.len(), 4);
        // A document without an ObjectId `_id` is not kept.
        let pos = Position::Polling(PollCursor::new(1, Some(oid(111, 5)), 0));
        d.record(&Event::for_document(
            pos,
            "logs",
            Channel::parse("logs:a").unwrap(),
            Op::Insert,
            &doc! {"_id": 7},
        ));
        assert_eq!(d.len(), 3);
        // A head without a time forgets nothing.
        d.forget_before(&Position::Polling(PollCursor::new(1, None, 0)));
        assert_eq!(d.len(), 3);
        // A switch: everything so far belongs to the previous segment.
        let start = Position::decode("c.8200").unwrap();
        d.switched(start.clone());
        let snap = d.snapshot();
        assert!(snap.positions.is_empty());
        assert_eq!(snap.before_switch.len(), 3);
        assert_eq!(snap.switched_at, Some(start));
        assert_eq!(d.keys().len(), 3);
    }

    #[test]
    fn what_earlier_segments_delivered_survives_switches_within_the_window() {
        let mut d = Delivered::default();
        d.track(Duration::from_secs(10));
        let at = |secs| Position::Polling(PollCursor::new(1, Some(oid(secs, 0)), 0));
        d.record(&ev(100, 1, (100, 1), 0));
        d.switched(at(101));
        d.record(&ev(102, 1, (102, 1), 0));
        d.switched(at(103));
        // The first segment's delivery is still inside the window at the second switch.
        assert_eq!(d.keys().len(), 2);
        assert_eq!(d.snapshot().before_switch.len(), 2);
        // Outside it at a later switch: forgotten, as the poller no longer reads it.
        d.switched(at(150));
        assert!(d.keys().is_empty());
    }

    #[test]
    fn a_full_late_log_says_what_it_forgot() {
        let mut d = Delivered::default();
        d.track(Duration::from_secs(0));
        for i in 0..=LATE_LOG as u32 {
            let e = ev(1000 + i, 0, (1000 + i, 1), 1);
            d.record(&e);
            let next = Position::Polling(PollCursor::new(1, Some(oid(1001 + i, 0)), 0));
            d.forget_before(&next);
        }
        assert_eq!(
            d.snapshot().late_forgotten,
            Some(ev(1000, 0, (1000, 1), 1).position)
        );
        assert_eq!(d.snapshot().positions.len(), LATE_LOG);
    }
}
