//! Open cursors, by id. A find cursor holds the rest of its result set (a snapshot, as a real
//! cursor under snapshot isolation would see); a change-stream cursor holds its oplog position.
//! Cursors idle for longer than MongoDB's default `cursorTimeoutMillis` (10 minutes) are reaped,
//! so clients that vanish without `killCursors` cannot grow the server without bound.

use crate::changestream::ChangeStream;
use bson::Document;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

pub const IDLE_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug)]
pub enum CursorKind {
    Find { rest: VecDeque<Document> },
    Change(Box<ChangeStream>),
}

#[derive(Debug)]
pub struct Cursor {
    /// `db.collection`, as the reply's `cursor.ns` and getMore's `collection` check want it.
    pub ns: String,
    pub kind: CursorKind,
    pub batch_size: Option<usize>,
    pub last_used: Instant,
}

#[derive(Debug, Default)]
pub struct Cursors {
    map: HashMap<i64, Cursor>,
    next: i64,
}

impl Cursors {
    pub fn insert(&mut self, cursor: Cursor) -> i64 {
        // Ids start high and grow, so they look like MongoDB's (never 0, which means "exhausted").
        self.next += 1;
        let id = 7_000_000_000 + self.next;
        self.map.insert(id, cursor);
        id
    }

    pub fn get_mut(&mut self, id: i64) -> Option<&mut Cursor> {
        let c = self.map.get_mut(&id)?;
        c.last_used = Instant::now();
        Some(c)
    }

    pub fn remove(&mut self, id: i64) -> Option<Cursor> {
        self.map.remove(&id)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn reap_idle(&mut self, now: Instant) -> usize {
        let before = self.map.len();
        self.map
            .retain(|_, c| now.duration_since(c.last_used) < IDLE_TIMEOUT);
        before - self.map.len()
    }
}
