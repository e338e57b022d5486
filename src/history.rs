//! Recent events in memory, to answer reconnects without asking MongoDB.
//!
//! Most reconnects are seconds old (a tab switch, a Wi-Fi blip, a slow-consumer disconnect),
//! so the last few thousand events cover them. The ring knows exactly which stretch of history
//! it covers: everything strictly after `floor` up to `head`. A position in that stretch is
//! answered from memory, even one that matches no retained event (an id sent for a
//! `postBatchResumeToken`, or an event on a channel the client does not see). A position before
//! `floor` is too old: the caller opens a catch-up change stream instead.

use std::cmp::Ordering;
use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use crate::event::Event;
use crate::position::Position;

/// Bounded ring of the most recent events, in commit order.
#[derive(Debug)]
pub struct History {
    capacity: usize,
    ring: VecDeque<Arc<Event>>,
    /// Every event after this position is in the ring.
    floor: Position,
    /// The latest position seen (an event or an advance).
    head: Position,
    /// Where this history began; while `floor == start` nothing has been evicted.
    start: Position,
    /// The history before the last source switch (change stream <-> polling), so a client
    /// holding a position of the previous kind still resumes exactly from memory.
    previous: Option<Box<History>>,
}

/// Answer to [`History::since`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Since {
    /// Every matching event strictly after the position, oldest first. Empty when the position
    /// is the head or ahead of it (another instance can be slightly ahead).
    Events(Vec<Arc<Event>>),
    /// The position is older than the ring's floor; events may be missing from memory.
    TooOld,
    /// The position is of another kind than the history (e.g. a polling position while
    /// tailing a change stream); it cannot be placed in this history.
    Incomparable,
}

/// Why [`History::push`] or [`History::advance`] refused a position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryError {
    /// An event at or before the head: a duplicate or out-of-order delivery. The ring is
    /// unchanged.
    NotAfterHead,
    /// A position of another kind than the head. Use [`History::reset`] when the source
    /// changes kind.
    Incomparable,
}

impl fmt::Display for HistoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HistoryError::NotAfterHead => write!(f, "event is not after the history head"),
            HistoryError::Incomparable => {
                write!(f, "position is of another kind than the history")
            }
        }
    }
}

impl std::error::Error for HistoryError {}

impl History {
    /// An empty history starting at `start`, the position the watcher began from: nothing
    /// before it is known, everything after it will be pushed. `capacity` 0 keeps no events;
    /// only positions at or after the head are then answered from memory.
    pub fn new(capacity: usize, start: Position) -> History {
        History {
            capacity,
            ring: VecDeque::with_capacity(capacity.min(4096)),
            floor: start.clone(),
            head: start.clone(),
            start,
            previous: None,
        }
    }

    /// The source switched kind (change stream <-> polling) and continues at `start`: the
    /// current history becomes the previous segment, and a new one begins. A position of the
    /// previous kind is still answered from memory, by the previous segment's events after it
    /// followed by everything since the switch — as long as nothing since the switch has been
    /// evicted.
    pub fn switch(&mut self, start: Position) {
        let mut old = std::mem::replace(self, History::new(self.capacity, start));
        old.previous = None;
        self.previous = Some(Box::new(old));
    }

    /// Forgets everything and starts again at `start` (the watcher restarted from a position
    /// it cannot connect to the ring, or switched source kind).
    pub fn reset(&mut self, start: Position) {
        self.ring.clear();
        self.floor = start.clone();
        self.head = start.clone();
        self.start = start;
        self.previous = None;
    }

    /// Appends an event, which must be strictly after the head. When full, the oldest event
    /// is evicted and its position becomes the floor.
    pub fn push(&mut self, ev: Arc<Event>) -> Result<(), HistoryError> {
        match ev.position.cmp_same_kind(&self.head) {
            None => return Err(HistoryError::Incomparable),
            Some(Ordering::Greater) => {}
            Some(_) => return Err(HistoryError::NotAfterHead),
        }
        self.head = ev.position.clone();
        if self.capacity == 0 {
            self.floor = ev.position.clone();
            return Ok(());
        }
        if self.ring.len() == self.capacity {
            if let Some(old) = self.ring.pop_front() {
                self.floor = old.position.clone();
            }
        }
        self.ring.push_back(ev);
        Ok(())
    }

    /// Moves the head without an event (e.g. a `postBatchResumeToken` on a quiet database).
    /// Returns whether it moved: positions at or behind the head are ignored.
    pub fn advance(&mut self, pos: Position) -> Result<bool, HistoryError> {
        match pos.cmp_same_kind(&self.head) {
            None => Err(HistoryError::Incomparable),
            Some(Ordering::Greater) => {
                self.head = pos;
                Ok(true)
            }
            Some(_) => Ok(false),
        }
    }

    /// The latest known position.
    pub fn head(&self) -> &Position {
        &self.head
    }

    /// The ring answers every position at or after this one.
    pub fn floor(&self) -> &Position {
        &self.floor
    }

    /// Events after `pos` that pass `filter` (typically "is within one of the connection's
    /// channels"), found by binary search.
    pub fn since(&self, pos: &Position, filter: impl Fn(&Event) -> bool) -> Since {
        self.since_dyn(pos, &filter)
    }

    fn since_dyn(&self, pos: &Position, filter: &dyn Fn(&Event) -> bool) -> Since {
        if pos.cmp_same_kind(&self.floor).is_none() {
            let Some(prev) = self.previous.as_deref() else {
                return Since::Incomparable;
            };
            return match prev.since_dyn(pos, filter) {
                Since::Events(mut evs) if self.floor == self.start => {
                    evs.extend(self.ring.iter().filter(|e| filter(e)).cloned());
                    Since::Events(evs)
                }
                Since::Events(_) | Since::TooOld => Since::TooOld,
                Since::Incomparable => Since::Incomparable,
            };
        }
        match pos.cmp_same_kind(&self.floor) {
            None => return Since::Incomparable,
            Some(Ordering::Less) => return Since::TooOld,
            Some(_) => {}
        }
        if pos.cmp_same_kind(&self.head) != Some(Ordering::Less) {
            return Since::Events(Vec::new());
        }
        // All retained positions are of the head's kind (push enforces it).
        let start = self
            .ring
            .partition_point(|e| e.position.cmp_same_kind(pos) != Some(Ordering::Greater));
        Since::Events(
            self.ring
                .range(start..)
                .filter(|e| filter(e))
                .cloned()
                .collect(),
        )
    }

    /// The retained events of the current segment, oldest first.
    pub fn events(&self) -> impl Iterator<Item = &Arc<Event>> {
        self.ring.iter()
    }

    /// Number of retained events.
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::Channel;
    use crate::event::Op;
    use bson::doc;

    /// Positions with an even byte get events; odd ones are "between" events.
    fn pos(n: u8) -> Position {
        Position::decode(&format!("c.82{n:02X}")).unwrap()
    }

    fn ev(n: u8, channel: &str) -> Arc<Event> {
        Arc::new(Event::new(
            pos(n),
            Channel::parse(channel).unwrap(),
            Op::Insert,
            &doc! {},
        ))
    }

    fn ids(s: Since) -> Vec<Position> {
        match s {
            Since::Events(v) => v.iter().map(|e| e.position.clone()).collect(),
            other => panic!("expected events, got {other:?}"),
        }
    }

    fn all(_: &Event) -> bool {
        true
    }

    fn ppos(n: u8) -> Position {
        let oid = bson::oid::ObjectId::from_bytes([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, n]);
        Position::Polling(crate::position::PollCursor::new(7, Some(oid), 0))
    }

    fn pev(n: u8) -> Arc<Event> {
        Arc::new(Event::new(
            ppos(n),
            Channel::parse("logs:a").unwrap(),
            Op::Insert,
            &doc! {},
        ))
    }

    #[test]
    fn a_switch_keeps_the_previous_kind_answerable() {
        let mut h = History::new(3, pos(0));
        h.push(ev(2, "logs:a")).unwrap();
        h.push(ev(4, "logs:a")).unwrap();
        h.switch(ppos(1));
        h.push(pev(2)).unwrap();
        assert_eq!(ids(h.since(&pos(2), all)), vec![pos(4), ppos(2)]);
        assert_eq!(ids(h.since(&ppos(1), all)), vec![ppos(2)]);
        assert_eq!(
            h.since(&pos(0), all),
            Since::Events(vec![ev(2, "logs:a"), ev(4, "logs:a"), pev(2)])
        );
        // Older than the previous segment: too old.
        let mut old = History::new(1, pos(0));
        old.push(ev(2, "logs:a")).unwrap();
        old.push(ev(4, "logs:a")).unwrap();
        old.switch(ppos(1));
        assert_eq!(old.since(&pos(1), all), Since::TooOld);
        // Once the new segment evicts, a previous-kind position can no longer be completed.
        h.push(pev(3)).unwrap();
        h.push(pev(4)).unwrap();
        h.push(pev(5)).unwrap();
        assert_eq!(h.since(&pos(2), all), Since::TooOld);
        // A third kind of position (another fingerprint) is incomparable.
        let foreign = Position::Polling(crate::position::PollCursor::new(8, None, 0));
        h.switch(pos(9));
        assert_eq!(h.since(&foreign, all), Since::Incomparable);
    }

    /// Ring of capacity 3 starting at 0, with events 2, 4, 6, 8, 10: retains 6, 8, 10,
    /// floor 4.
    fn filled() -> History {
        let mut h = History::new(3, pos(0));
        for n in [2, 4, 6, 8, 10] {
            h.push(ev(n, "logs:a")).unwrap();
        }
        h
    }

    #[test]
    fn fresh_history_answers_from_start() {
        let h = History::new(3, pos(5));
        assert_eq!(ids(h.since(&pos(5), all)), []);
        assert_eq!(ids(h.since(&pos(9), all)), []);
        assert_eq!(h.since(&pos(4), all), Since::TooOld);
    }

    #[test]
    fn eviction_moves_floor_to_evicted_position() {
        let h = filled();
        assert_eq!(h.len(), 3);
        assert_eq!(h.floor(), &pos(4));
        assert_eq!(h.head(), &pos(10));
        // Exactly at the floor: everything after it is retained.
        assert_eq!(ids(h.since(&pos(4), all)), [pos(6), pos(8), pos(10)]);
        // Just below: event 4 is gone.
        assert_eq!(h.since(&pos(3), all), Since::TooOld);
        assert_eq!(h.since(&pos(2), all), Since::TooOld);
    }

    #[test]
    fn positions_between_events() {
        let h = filled();
        assert_eq!(ids(h.since(&pos(5), all)), [pos(6), pos(8), pos(10)]);
        assert_eq!(ids(h.since(&pos(6), all)), [pos(8), pos(10)]);
        assert_eq!(ids(h.since(&pos(7), all)), [pos(8), pos(10)]);
        assert_eq!(ids(h.since(&pos(9), all)), [pos(10)]);
    }

    #[test]
    fn head_and_ahead_are_empty() {
        let mut h = filled();
        assert_eq!(ids(h.since(&pos(10), all)), []);
        assert_eq!(ids(h.since(&pos(200), all)), []);
        // A longer token that extends the head sorts after it.
        let longer = Position::decode("c.820A00").unwrap();
        assert_eq!(ids(h.since(&longer, all)), []);
        // After a quiet advance, positions between the last event and the head are answered.
        assert_eq!(h.advance(pos(20)), Ok(true));
        assert_eq!(h.head(), &pos(20));
        assert_eq!(ids(h.since(&pos(15), all)), []);
        assert_eq!(ids(h.since(&pos(9), all)), [pos(10)]);
    }

    #[test]
    fn filter_applies() {
        let mut h = History::new(10, pos(0));
        h.push(ev(1, "logs:a:x")).unwrap();
        h.push(ev(2, "logs:b")).unwrap();
        h.push(ev(3, "logs:a")).unwrap();
        let a = Channel::parse("logs:a").unwrap();
        assert_eq!(
            ids(h.since(&pos(0), |e| e.channel.is_within(&a))),
            [pos(1), pos(3)]
        );
    }

    #[test]
    fn rejects_out_of_order() {
        let mut h = filled();
        assert_eq!(h.push(ev(10, "logs")), Err(HistoryError::NotAfterHead));
        assert_eq!(h.push(ev(9, "logs")), Err(HistoryError::NotAfterHead));
        assert_eq!(h.len(), 3);
        assert_eq!(h.advance(pos(9)), Ok(false));
        assert_eq!(h.advance(pos(10)), Ok(false));
        assert_eq!(h.head(), &pos(10));
        // An advance then makes earlier events stale too.
        h.advance(pos(12)).unwrap();
        assert_eq!(h.push(ev(11, "logs")), Err(HistoryError::NotAfterHead));
        h.push(ev(13, "logs")).unwrap();
        assert_eq!(h.floor(), &pos(6));
    }

    #[test]
    fn zero_capacity_keeps_only_the_head() {
        let mut h = History::new(0, pos(0));
        h.push(ev(2, "logs")).unwrap();
        assert!(h.is_empty());
        assert_eq!(h.floor(), &pos(2));
        assert_eq!(ids(h.since(&pos(2), all)), []);
        assert_eq!(h.since(&pos(1), all), Since::TooOld);
    }

    #[test]
    fn reset_starts_over() {
        let mut h = filled();
        h.reset(pos(50));
        assert!(h.is_empty());
        assert_eq!((h.floor(), h.head()), (&pos(50), &pos(50)));
        assert_eq!(h.since(&pos(10), all), Since::TooOld);
    }
}
