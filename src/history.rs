//! Recent events in memory, to answer reconnects without asking MongoDB.
//!
//! Most reconnects are seconds old (a tab switch, a Wi-Fi blip, a slow-consumer disconnect),
//! so the last few thousand events cover them. The ring knows exactly which stretch of history
//! it covers: everything strictly after `floor` up to `head`. A position in that stretch is
//! answered from memory, even one that matches no retained event (an id sent for a
//! `postBatchResumeToken`, or an event on a channel the client does not see). A position before
//! `floor` is too old: the caller opens a catch-up change stream instead.
//!
//! Memory is bounded twice: by a number of events and by their bytes ([`Budget`]). A count
//! alone let 600 one-megabyte documents keep 643 MB resident; the byte budget evicts the
//! oldest events while the retained ones weigh more than it. An event that alone weighs more
//! than the whole budget is published live but not kept: the ring empties and the floor moves
//! to it, so a resume from before it is a catch-up from MongoDB, never a silent skip.
//!
//! Events are stored in chunks of [`CHUNK`] behind `Arc`s, so that [`History::snapshot`] is a
//! few reference-count increments. The hub takes a snapshot under its lock (atomically with
//! registering the subscriber's queue) and searches and filters it after releasing the lock,
//! so a reconnect replaying thousands of events never holds up publishing.

use std::cmp::Ordering;
use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use crate::event::Event;
use crate::position::Position;

/// Events per chunk: a snapshot clones one `Arc` per chunk (about 40 for 10 000 events), and
/// appending to a chunk a snapshot still shares copies at most this many `Arc`s once.
pub const CHUNK: usize = 256;

/// What one event is counted as, beyond its frame: the `Event` itself, its `Arc`, its
/// position, channel and key allocations, and the slot that holds it. An estimate (a
/// change-stream position is a ~100-byte token, a key an `_id`), but one that keeps a flood of
/// tiny events from looking free.
pub const EVENT_OVERHEAD: usize = 256;

/// The bytes an event is counted as by the ring and by the connection queues.
pub fn footprint(ev: &Event) -> usize {
    ev.frame.len().saturating_add(EVENT_OVERHEAD)
}

/// At most `events` events weighing at most `bytes` bytes (see [`footprint`]), whichever
/// bound is reached first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub events: usize,
    pub bytes: usize,
}

impl Budget {
    pub const fn new(events: usize, bytes: usize) -> Budget {
        Budget { events, bytes }
    }

    /// Whether `events` events weighing `bytes` are more than the budget allows.
    pub fn exceeded_by(&self, events: usize, bytes: usize) -> bool {
        events > self.events || bytes > self.bytes
    }
}

/// A count alone, with no bound on bytes.
impl From<usize> for Budget {
    fn from(events: usize) -> Budget {
        Budget::new(events, usize::MAX)
    }
}

type Chunk = Arc<VecDeque<Arc<Event>>>;

/// The stretch of history of one kind of position: events strictly after `floor`, oldest
/// first, in chunks. Cloning it is the snapshot: `Arc` clones of the chunks.
#[derive(Debug, Clone)]
struct Segment {
    chunks: VecDeque<Chunk>,
    /// Events at the front of `chunks[0]` that were evicted while a snapshot shared that
    /// chunk. They are no longer part of the segment; they are freed as soon as no snapshot
    /// holds the chunk (the next push or eviction).
    evicted: usize,
    len: usize,
    bytes: usize,
    /// Every event after this position is in the segment.
    floor: Position,
    /// The latest position seen (an event or an advance).
    head: Position,
    /// Where this segment began; while `floor == start` nothing has been evicted.
    start: Position,
}

impl Segment {
    fn new(start: Position) -> Segment {
        Segment {
            chunks: VecDeque::new(),
            evicted: 0,
            len: 0,
            bytes: 0,
            floor: start.clone(),
            head: start.clone(),
            start,
        }
    }

    fn iter(&self) -> impl Iterator<Item = &Arc<Event>> {
        let skip = self.evicted;
        self.chunks
            .iter()
            .enumerate()
            .flat_map(move |(i, c)| c.iter().skip(if i == 0 { skip } else { 0 }))
    }

    /// Frees the evicted events a snapshot was holding, once none does.
    fn compact(&mut self) {
        if self.evicted == 0 {
            return;
        }
        if let Some(front) = self.chunks.front_mut().and_then(Arc::get_mut) {
            front.drain(..self.evicted);
            self.evicted = 0;
            if front.is_empty() {
                self.chunks.pop_front();
            }
        }
    }

    fn append(&mut self, ev: Arc<Event>, size: usize) {
        self.compact();
        match self.chunks.back_mut() {
            // Copies the chunk only if a snapshot shares it.
            Some(last) if last.len() < CHUNK => Arc::make_mut(last).push_back(ev),
            _ => {
                let mut chunk = VecDeque::with_capacity(CHUNK);
                chunk.push_back(ev);
                self.chunks.push_back(Arc::new(chunk));
            }
        }
        self.len += 1;
        self.bytes = self.bytes.saturating_add(size);
    }

    /// Evicts the oldest event; its position becomes the floor.
    fn evict_oldest(&mut self) -> bool {
        let Some(front) = self.chunks.front_mut() else {
            return false;
        };
        let Some(ev) = front.get(self.evicted).cloned() else {
            return false;
        };
        match Arc::get_mut(front) {
            Some(chunk) => {
                chunk.drain(..=self.evicted);
                self.evicted = 0;
            }
            None => self.evicted += 1,
        }
        if front.len() == self.evicted {
            self.chunks.pop_front();
            self.evicted = 0;
        }
        self.len -= 1;
        self.bytes = self.bytes.saturating_sub(footprint(&ev));
        self.floor = ev.position.clone();
        true
    }

    /// Drops every event: nothing up to `floor` is retained any more.
    fn clear_to(&mut self, floor: Position) {
        self.chunks.clear();
        self.evicted = 0;
        self.len = 0;
        self.bytes = 0;
        self.floor = floor;
    }

    /// Events after `pos` (which is at or after the floor and before the head) that pass
    /// `filter`: a binary search for the first chunk with a later event, then within it.
    fn after(&self, pos: &Position, filter: &dyn Fn(&Event) -> bool) -> Vec<Arc<Event>> {
        let not_after = |e: &Arc<Event>| e.position.cmp_same_kind(pos) != Some(Ordering::Greater);
        let first = self
            .chunks
            .partition_point(|c| c.back().is_none_or(&not_after));
        let mut out = Vec::new();
        for (i, chunk) in self.chunks.iter().enumerate().skip(first) {
            let mut from = if i == first {
                chunk.partition_point(&not_after)
            } else {
                0
            };
            if i == 0 {
                from = from.max(self.evicted);
            }
            out.extend(chunk.range(from..).filter(|e| filter(e)).cloned());
        }
        out
    }
}

/// Bounded ring of the most recent events, in commit order.
#[derive(Debug)]
pub struct History {
    budget: Budget,
    current: Segment,
    /// The history before the last source switch (change stream <-> polling), so a client
    /// holding a position of the previous kind still resumes exactly from memory. It shares
    /// the budget (its events are the oldest, evicted first), and its events are dropped as
    /// soon as the current segment evicts: a position of the previous kind can then no longer
    /// be completed from memory.
    previous: Option<Segment>,
}

/// The history as it was at one instant (see [`History::snapshot`]): answers
/// [`Snapshot::since`] exactly as the history did then, without a lock.
#[derive(Debug, Clone)]
pub struct Snapshot {
    current: Segment,
    previous: Option<Segment>,
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
    /// before it is known, everything after it will be pushed. A budget of 0 events keeps
    /// none; only positions at or after the head are then answered from memory. A plain
    /// number is a budget of that many events with no bound on bytes.
    pub fn new(budget: impl Into<Budget>, start: Position) -> History {
        History {
            budget: budget.into(),
            current: Segment::new(start),
            previous: None,
        }
    }

    /// The source switched kind (change stream <-> polling) and continues at `start`: the
    /// current history becomes the previous segment, and a new one begins. A position of the
    /// previous kind is still answered from memory, by the previous segment's events after it
    /// followed by everything since the switch — as long as nothing since the switch has been
    /// evicted.
    pub fn switch(&mut self, start: Position) {
        let old = std::mem::replace(&mut self.current, Segment::new(start));
        self.previous = Some(old);
    }

    /// Forgets everything and starts again at `start` (the watcher restarted from a position
    /// it cannot connect to the ring, or switched source kind).
    pub fn reset(&mut self, start: Position) {
        self.current = Segment::new(start);
        self.previous = None;
    }

    /// Appends an event, which must be strictly after the head. Then, while the retained
    /// events are over the budget (in number or in bytes), the oldest is evicted and its
    /// position becomes the floor. An event over the whole byte budget is not kept: the ring
    /// empties and its position becomes the floor.
    pub fn push(&mut self, ev: Arc<Event>) -> Result<(), HistoryError> {
        match ev.position.cmp_same_kind(&self.current.head) {
            None => return Err(HistoryError::Incomparable),
            Some(Ordering::Greater) => {}
            Some(_) => return Err(HistoryError::NotAfterHead),
        }
        self.current.head = ev.position.clone();
        let size = footprint(&ev);
        if self.budget.exceeded_by(1, size) {
            self.current.clear_to(ev.position.clone());
            self.forget_previous_events();
            return Ok(());
        }
        self.current.append(ev, size);
        while self.budget.exceeded_by(self.total_len(), self.bytes()) {
            if let Some(prev) = self.previous.as_mut() {
                if prev.evict_oldest() {
                    continue;
                }
            }
            if !self.current.evict_oldest() {
                break;
            }
            self.forget_previous_events();
        }
        Ok(())
    }

    /// The current segment has evicted: a position of the previous kind can no longer be
    /// completed from memory, so the previous segment's events are dropped. Its positions are
    /// kept, so that such a position is still told apart from a foreign one (`TooOld`, not
    /// `Incomparable`).
    fn forget_previous_events(&mut self) {
        if let Some(prev) = self.previous.as_mut() {
            let head = prev.head.clone();
            prev.clear_to(head);
        }
    }

    /// Moves the head without an event (e.g. a `postBatchResumeToken` on a quiet database).
    /// Returns whether it moved: positions at or behind the head are ignored.
    pub fn advance(&mut self, pos: Position) -> Result<bool, HistoryError> {
        match pos.cmp_same_kind(&self.current.head) {
            None => Err(HistoryError::Incomparable),
            Some(Ordering::Greater) => {
                self.current.head = pos;
                Ok(true)
            }
            Some(_) => Ok(false),
        }
    }

    /// The latest known position.
    pub fn head(&self) -> &Position {
        &self.current.head
    }

    /// The ring answers every position at or after this one.
    pub fn floor(&self) -> &Position {
        &self.current.floor
    }

    /// The history as it is now, for [`Snapshot::since`] without holding whatever guards
    /// this history: one `Arc` clone per chunk of [`CHUNK`] events. Events evicted later stay
    /// alive until the snapshot is dropped.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            current: self.current.clone(),
            previous: self.previous.clone(),
        }
    }

    /// Events after `pos` that pass `filter` (typically "is within one of the connection's
    /// channels"), found by binary search.
    pub fn since(&self, pos: &Position, filter: impl Fn(&Event) -> bool) -> Since {
        since(&self.current, self.previous.as_ref(), pos, &filter)
    }

    /// The retained events of the current segment, oldest first.
    pub fn events(&self) -> impl Iterator<Item = &Arc<Event>> {
        self.current.iter()
    }

    /// Number of retained events of the current segment.
    pub fn len(&self) -> usize {
        self.current.len
    }

    pub fn is_empty(&self) -> bool {
        self.current.len == 0
    }

    /// The bytes the retained events count as (see [`footprint`]), both segments.
    pub fn bytes(&self) -> usize {
        self.current.bytes + self.previous.as_ref().map_or(0, |p| p.bytes)
    }

    fn total_len(&self) -> usize {
        self.current.len + self.previous.as_ref().map_or(0, |p| p.len)
    }

    pub fn capacity(&self) -> usize {
        self.budget.events
    }

    pub fn budget(&self) -> Budget {
        self.budget
    }
}

impl Snapshot {
    /// What [`History::since`] answered when the snapshot was taken.
    pub fn since(&self, pos: &Position, filter: impl Fn(&Event) -> bool) -> Since {
        since(&self.current, self.previous.as_ref(), pos, &filter)
    }

    /// Whether [`Snapshot::since`] answers `pos` from memory (with events, possibly none)
    /// rather than `TooOld` or `Incomparable`: a few comparisons, no search.
    pub fn reaches(&self, pos: &Position) -> bool {
        reaches(&self.current, self.previous.as_ref(), pos)
    }

    pub fn head(&self) -> &Position {
        &self.current.head
    }

    pub fn floor(&self) -> &Position {
        &self.current.floor
    }
}

fn reaches(cur: &Segment, prev: Option<&Segment>, pos: &Position) -> bool {
    match pos.cmp_same_kind(&cur.floor) {
        None => prev.is_some_and(|p| cur.floor == cur.start && reaches(p, None, pos)),
        Some(Ordering::Less) => false,
        Some(_) => true,
    }
}

fn since(
    cur: &Segment,
    prev: Option<&Segment>,
    pos: &Position,
    filter: &dyn Fn(&Event) -> bool,
) -> Since {
    if pos.cmp_same_kind(&cur.floor).is_none() {
        let Some(prev) = prev else {
            return Since::Incomparable;
        };
        return match since(prev, None, pos, filter) {
            Since::Events(mut evs) if cur.floor == cur.start => {
                evs.extend(cur.iter().filter(|e| filter(e)).cloned());
                Since::Events(evs)
            }
            Since::Events(_) | Since::TooOld => Since::TooOld,
            Since::Incomparable => Since::Incomparable,
        };
    }
    match pos.cmp_same_kind(&cur.floor) {
        None => return Since::Incomparable,
        Some(Ordering::Less) => return Since::TooOld,
        Some(_) => {}
    }
    if pos.cmp_same_kind(&cur.head) != Some(Ordering::Less) {
        return Since::Events(Vec::new());
    }
    // All retained positions are of the head's kind (push enforces it).
    Since::Events(cur.after(pos, filter))
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

    /// An event at `pos(n)` whose frame carries `pad` bytes of padding.
    fn sized(n: u8, pad: usize) -> Arc<Event> {
        Arc::new(Event::new(
            pos(n),
            Channel::parse("logs:a").unwrap(),
            Op::Insert,
            &doc! {"pad": "x".repeat(pad)},
        ))
    }

    #[test]
    fn bytes_evict_the_oldest_events_before_the_count_does() {
        let one = footprint(&sized(2, 1000));
        // Room for 100 events but the bytes of three.
        let mut h = History::new(Budget::new(100, 3 * one), pos(0));
        for n in [2, 4, 6] {
            h.push(sized(n, 1000)).unwrap();
        }
        assert_eq!((h.len(), h.bytes()), (3, 3 * one));
        assert_eq!(h.floor(), &pos(0));
        h.push(sized(8, 1000)).unwrap();
        assert_eq!((h.len(), h.bytes()), (3, 3 * one));
        assert_eq!(h.floor(), &pos(2));
        // A bigger event evicts as many as it takes.
        h.push(sized(10, 2000)).unwrap();
        assert!(h.bytes() <= 3 * one, "{} > {}", h.bytes(), 3 * one);
        assert_eq!(h.floor(), &pos(6));
        assert_eq!(ids(h.since(&pos(6), all)), [pos(8), pos(10)]);
        assert_eq!(h.since(&pos(5), all), Since::TooOld);
        // Small events are not free: the overhead counts.
        assert!(footprint(&sized(2, 0)) >= EVENT_OVERHEAD);
    }

    #[test]
    fn an_event_over_the_whole_budget_is_not_kept_and_moves_the_floor() {
        let small = footprint(&sized(2, 10));
        let mut h = History::new(Budget::new(100, 4 * small), pos(0));
        h.push(sized(2, 10)).unwrap();
        h.push(sized(4, 10)).unwrap();
        h.push(sized(6, 10_000)).unwrap();
        // Not kept, and nothing before it is either: the ring must stay contiguous.
        assert!(h.is_empty());
        assert_eq!(h.bytes(), 0);
        assert_eq!((h.floor(), h.head()), (&pos(6), &pos(6)));
        // From before it: too old (a catch-up reads it from MongoDB), never a silent skip.
        assert_eq!(h.since(&pos(4), all), Since::TooOld);
        assert_eq!(h.since(&pos(5), all), Since::TooOld);
        // From it: nothing is missing.
        assert_eq!(ids(h.since(&pos(6), all)), []);
        h.push(sized(8, 10)).unwrap();
        assert_eq!(ids(h.since(&pos(6), all)), [pos(8)]);
        assert_eq!(ids(h.since(&pos(7), all)), [pos(8)]);
        // A byte budget of 0 keeps nothing, like a count of 0.
        let mut none = History::new(Budget::new(100, 0), pos(0));
        none.push(sized(2, 0)).unwrap();
        assert!(none.is_empty());
        assert_eq!(none.floor(), &pos(2));
    }

    #[test]
    fn a_switch_shares_the_byte_budget_with_the_previous_segment() {
        let pad = |n: u8| {
            Arc::new(Event::new(
                ppos(n),
                Channel::parse("logs:a").unwrap(),
                Op::Insert,
                &doc! {"pad": "x".repeat(100)},
            ))
        };
        // A polling event weighs a little more (its id is longer): room for three of them.
        let one = footprint(&pad(2));
        assert!(one >= footprint(&sized(2, 100)));
        let mut h = History::new(Budget::new(100, 3 * one), pos(0));
        h.push(sized(2, 100)).unwrap();
        h.push(sized(4, 100)).unwrap();
        h.switch(ppos(1));
        h.push(pad(2)).unwrap();
        assert_eq!(ids(h.since(&pos(0), all)), [pos(2), pos(4), ppos(2)]);
        // Over budget: the previous segment's oldest goes first, its floor moves.
        h.push(pad(3)).unwrap();
        assert!(h.bytes() <= 3 * one);
        assert_eq!(h.since(&pos(0), all), Since::TooOld);
        assert_eq!(ids(h.since(&pos(2), all)), [pos(4), ppos(2), ppos(3)]);
        h.push(pad(4)).unwrap();
        assert_eq!(ids(h.since(&pos(4), all)), [ppos(2), ppos(3), ppos(4)]);
        // Once the current segment evicts, previous-kind positions are too old and the
        // previous events are freed.
        h.push(pad(5)).unwrap();
        assert_eq!(h.since(&pos(4), all), Since::TooOld);
        assert_eq!(h.bytes(), 3 * one);
        assert_eq!(ids(h.since(&ppos(2), all)), [ppos(3), ppos(4), ppos(5)]);
    }

    #[test]
    fn a_snapshot_answers_as_the_history_did_when_it_was_taken() {
        let mut h = History::new(Budget::new(600, usize::MAX), pos(0));
        let mut n = 0u8;
        let mut next = |h: &mut History| {
            n += 1;
            h.push(ev(n, if n % 3 == 0 { "logs:b" } else { "logs:a" }))
                .unwrap();
        };
        for _ in 0..200 {
            next(&mut h);
        }
        let snap = h.snapshot();
        let b = Channel::parse("logs:b").unwrap();
        let within_b = |e: &Event| e.channel.is_within(&b);
        let before: Vec<Since> = (0..=255).map(|p| h.since(&pos(p), within_b)).collect();
        // The history moves on (and, with a small budget, evicts) after the snapshot.
        h.budget = Budget::new(10, usize::MAX);
        for _ in 0..50 {
            next(&mut h);
        }
        assert_eq!(h.len(), 10);
        for p in 0..=255u8 {
            assert_eq!(snap.since(&pos(p), within_b), before[p as usize], "at {p}");
            assert_eq!(
                snap.reaches(&pos(p)),
                matches!(before[p as usize], Since::Events(_))
            );
        }
        assert_eq!(snap.head(), &pos(200));
        drop(snap);
        // Evictions made while the snapshot shared a chunk are freed afterwards.
        next(&mut h);
        assert_eq!(h.current.chunks.iter().map(|c| c.len()).sum::<usize>(), 10);
    }

    /// The ring before chunks and byte budgets: a `VecDeque` bounded by a count, searched
    /// under the lock. A snapshot of the new one must answer exactly as it did.
    mod before {
        use super::*;

        pub struct Old {
            pub capacity: usize,
            pub ring: VecDeque<Arc<Event>>,
            pub floor: Position,
            pub head: Position,
        }

        impl Old {
            pub fn push(&mut self, ev: Arc<Event>) -> bool {
                if ev.position.cmp_same_kind(&self.head) != Some(Ordering::Greater) {
                    return false;
                }
                self.head = ev.position.clone();
                if self.capacity == 0 {
                    self.floor = ev.position.clone();
                    return true;
                }
                if self.ring.len() == self.capacity {
                    if let Some(old) = self.ring.pop_front() {
                        self.floor = old.position.clone();
                    }
                }
                self.ring.push_back(ev);
                true
            }

            pub fn since(&self, pos: &Position, filter: impl Fn(&Event) -> bool) -> Since {
                match pos.cmp_same_kind(&self.floor) {
                    None => return Since::Incomparable,
                    Some(Ordering::Less) => return Since::TooOld,
                    Some(_) => {}
                }
                if pos.cmp_same_kind(&self.head) != Some(Ordering::Less) {
                    return Since::Events(Vec::new());
                }
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
        }
    }

    fn wide(n: u32) -> Position {
        Position::decode(&format!("c.82{n:08X}")).unwrap()
    }

    /// Deterministic pseudo-random numbers (xorshift), so a failure is reproducible.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    #[test]
    fn snapshot_since_equals_the_old_since() {
        let channels = ["logs:a", "logs:a:x", "logs:b"];
        for seed in 1..=20u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let capacity = [0, 1, 3, CHUNK - 1, CHUNK, CHUNK + 7, 700][seed as usize % 7];
            let mut new = History::new(capacity, wide(0));
            let mut old = before::Old {
                capacity,
                ring: VecDeque::new(),
                floor: wide(0),
                head: wide(0),
            };
            let mut n = 0u32;
            let mut snaps = Vec::new();
            for step in 0..1500 {
                n += 1 + rng.below(2) as u32;
                if rng.below(10) == 0 {
                    // A quiet advance.
                    let _ = new.advance(wide(n));
                    old.head = wide(n);
                } else {
                    let c = channels[rng.below(3) as usize];
                    let e = Arc::new(Event::new(
                        wide(n),
                        Channel::parse(c).unwrap(),
                        Op::Insert,
                        &doc! {},
                    ));
                    assert!(old.push(Arc::clone(&e)));
                    new.push(e).unwrap();
                }
                if step % 97 == 0 {
                    // Kept (with what the old ring answered then) and checked later, after
                    // the history has moved on.
                    let probes: Vec<u32> =
                        (0..8).map(|_| rng.below(u64::from(n) + 3) as u32).collect();
                    let a = Channel::parse("logs:a").unwrap();
                    let answers: Vec<Since> = probes
                        .iter()
                        .map(|p| old.since(&wide(*p), |e| e.channel.is_within(&a)))
                        .collect();
                    snaps.push((new.snapshot(), probes, answers));
                }
            }
            let a = Channel::parse("logs:a").unwrap();
            for (snap, probes, answers) in &snaps {
                for (p, want) in probes.iter().zip(answers) {
                    let got = snap.since(&wide(*p), |e| e.channel.is_within(&a));
                    assert_eq!(&got, want, "seed {seed}, capacity {capacity}, at {p}");
                    assert_eq!(snap.reaches(&wide(*p)), matches!(want, Since::Events(_)));
                }
            }
            let tail = n.saturating_sub(capacity as u32 * 2 + 4)..=n + 2;
            for p in tail.chain((0..100).map(|_| rng.below(u64::from(n) + 3) as u32)) {
                assert_eq!(
                    new.snapshot().since(&wide(p), all),
                    old.since(&wide(p), all),
                    "seed {seed}, capacity {capacity}, at {p}"
                );
            }
        }
    }

    /// Whatever the budgets and sizes: everything after the floor is retained, nothing before
    /// it is claimed, and the retained events stay within the budget.
    #[test]
    fn the_floor_holds_under_byte_budgets() {
        for seed in 1..=30u64 {
            let mut rng = Rng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D));
            let events = 1 + rng.below(600) as usize;
            let bytes = rng.below(40_000) as usize;
            let mut h = History::new(Budget::new(events, bytes), wide(0));
            let mut all_events: Vec<Arc<Event>> = Vec::new();
            let mut n = 0u32;
            for _ in 0..800 {
                n += 1;
                // Mostly small, sometimes large, now and then over the whole budget.
                let pad = match rng.below(20) {
                    0 => 50_000,
                    1..=3 => rng.below(8_000) as usize,
                    _ => rng.below(300) as usize,
                };
                let e = Arc::new(Event::new(
                    wide(n),
                    Channel::parse("logs:a").unwrap(),
                    Op::Insert,
                    &doc! {"pad": "x".repeat(pad)},
                ));
                all_events.push(Arc::clone(&e));
                h.push(e).unwrap();
                assert!(h.len() <= events && h.bytes() <= bytes, "seed {seed}");
                assert_eq!(h.bytes(), h.events().map(|e| footprint(e)).sum::<usize>());
                if n % 50 == 0 {
                    let floor = h.floor().clone();
                    let snap = h.snapshot();
                    // Around the floor, and a sample of the rest.
                    let f = (0..=n).find(|p| wide(*p) == floor).unwrap_or(0);
                    let probes = (f.saturating_sub(3)..=(f + 3).min(n))
                        .chain((0..20).map(|_| rng.below(u64::from(n) + 1) as u32));
                    for p in probes {
                        let at = wide(p);
                        let got = snap.since(&at, all);
                        if at < floor {
                            assert_eq!(got, Since::TooOld, "seed {seed}, at {p}");
                        } else {
                            let want: Vec<Position> = all_events
                                .iter()
                                .filter(|e| e.position > at)
                                .map(|e| e.position.clone())
                                .collect();
                            assert_eq!(ids(got), want, "seed {seed}, at {p}");
                        }
                    }
                }
            }
        }
    }
}
