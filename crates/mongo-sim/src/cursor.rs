//! Open cursors, by id. A find cursor holds the rest of its result set (a snapshot, as a real
//! cursor under snapshot isolation would see); a change-stream cursor holds its oplog position.
//! Cursors idle for longer than MongoDB's default `cursorTimeoutMillis` (10 minutes) are reaped,
//! so clients that vanish without `killCursors` cannot grow the server without bound.

use crate::changestream::ChangeStream;
use bson::Document;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

pub const IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// The most document bytes one reply carries, MongoDB's `BSONObjMaxUserSize`, so a batch always
/// fits `maxMessageSizeBytes` (48 MB) with room to spare: drivers refuse larger replies.
pub const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;

/// How full a batch is, by MongoDB's rule (`FindCommon::haveSpaceForNext`): the first document
/// always goes, however large, so a cursor never gets stuck; later ones only while the total
/// stays within [`MAX_BATCH_BYTES`].
#[derive(Debug, Default)]
pub struct BatchBytes {
    docs: usize,
    bytes: usize,
}

impl BatchBytes {
    /// Counts a document of `len` bytes into the batch, or says it belongs in the next one.
    pub fn try_add(&mut self, len: usize) -> bool {
        if self.docs > 0 && self.bytes + len > MAX_BATCH_BYTES {
            return false;
        }
        self.docs += 1;
        self.bytes += len;
        true
    }
}

#[derive(Debug)]
pub enum CursorKind {
    /// `eof_known`: whether the query knows it has no more documents as soon as it has handed
    /// out the last one (a limit reached, a blocking sort). A collection or `_id` index scan
    /// does not: like MongoDB's, a batch that ends exactly at the last document leaves the
    /// cursor open, and the next `getMore` returns an empty batch with cursor id 0.
    Find {
        rest: VecDeque<Document>,
        eof_known: bool,
    },
    Change(Box<ChangeStream>),
}

#[derive(Debug)]
pub struct Cursor {
    /// `db.collection`, as the reply's `cursor.ns` and getMore's `collection` check want it.
    pub ns: String,
    pub kind: CursorKind,
    pub batch_size: Option<usize>,
    pub last_used: Instant,
    /// `noCursorTimeout`: never reaped for idleness.
    pub no_timeout: bool,
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
            .retain(|_, c| c.no_timeout || now.duration_since(c.last_used) < IDLE_TIMEOUT);
        before - self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_holds_16_mib_but_always_its_first_document() {
        let mut b = BatchBytes::default();
        assert!(
            b.try_add(MAX_BATCH_BYTES + 1),
            "the first document always fits"
        );
        assert!(!b.try_add(1));
        let mut b = BatchBytes::default();
        assert!(b.try_add(MAX_BATCH_BYTES / 2));
        assert!(b.try_add(MAX_BATCH_BYTES / 2));
        assert!(!b.try_add(1));
    }
}
