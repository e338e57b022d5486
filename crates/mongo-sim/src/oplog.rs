//! The oplog: every write in commit order, bounded like a capped collection. Change streams
//! read it from any position still retained; a position that fell off the end cannot be
//! resumed (`ChangeStreamHistoryLost`), exactly the failure a real deployment shows when a
//! consumer falls behind its oplog window.
//!
//! Resume tokens are positions in this log. Their `_data` is uppercase hex of fixed width
//! (`82`, cluster time seconds and increment, sequence number, kind), so tokens compare in
//! commit order as strings, as MongoDB's KeyString tokens do.

use crate::error::{codes, CommandError, CommandResult};
use crate::query::diff::UpdateDescription;
use bson::{doc, Bson, DateTime, Document, Timestamp};
use std::collections::VecDeque;

/// What a write did, as a change stream reports it.
#[derive(Debug, Clone)]
pub enum OpKind {
    /// Oplog bookkeeping with no user-visible change (replica-set initiation).
    Noop,
    Insert {
        doc: Document,
    },
    Update {
        key: Bson,
        desc: UpdateDescription,
    },
    Replace {
        key: Bson,
        doc: Document,
    },
    Delete {
        key: Bson,
    },
    Drop,
    Rename {
        to_db: String,
        to_coll: String,
    },
    DropDatabase,
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub seq: u64,
    pub ts: Timestamp,
    pub wall: DateTime,
    pub db: String,
    /// Empty for database-level entries (dropDatabase, noop).
    pub coll: String,
    pub op: OpKind,
}

impl Entry {
    pub fn token(&self) -> Document {
        token_doc(self.ts, self.seq, TokenKind::Event)
    }

    /// The entry as `local.oplog.rs` shows it (`ts`, `t`, `wall`, `op`, `ns`, `o`), enough for
    /// tools that read the oplog window.
    pub fn to_oplog_document(&self) -> Document {
        let (op, o) = match &self.op {
            OpKind::Noop => ("n", doc! {"msg": "initiating set"}),
            OpKind::Insert { doc } => ("i", doc.clone()),
            OpKind::Update { key, .. } | OpKind::Replace { key, .. } => {
                ("u", doc! {"_id": key.clone()})
            }
            OpKind::Delete { key } => ("d", doc! {"_id": key.clone()}),
            OpKind::Drop => ("c", doc! {"drop": self.coll.clone()}),
            OpKind::Rename { to_db, to_coll } => (
                "c",
                doc! {"renameCollection": format!("{}.{}", self.db, self.coll), "to": format!("{to_db}.{to_coll}")},
            ),
            OpKind::DropDatabase => ("c", doc! {"dropDatabase": 1}),
        };
        let ns = if self.coll.is_empty() {
            self.db.clone()
        } else {
            format!("{}.{}", self.db, self.coll)
        };
        doc! {"ts": self.ts, "t": 1i64, "v": 2i64, "op": op, "ns": ns, "wall": self.wall, "o": o}
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Event = 1,
    /// The invalidate that follows a drop or rename sorts right after it.
    Invalidate = 2,
}

/// A decoded resume token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenPos {
    pub ts: Timestamp,
    pub seq: u64,
    pub kind: TokenKind,
}

pub fn token_doc(ts: Timestamp, seq: u64, kind: TokenKind) -> Document {
    doc! {"_data": format!("82{:08X}{:08X}{:016X}{:02X}", ts.time, ts.increment, seq, kind as u8)}
}

/// Parses a token this server issued. Anything else is a `BadValue`, as MongoDB answers for a
/// token it cannot decode.
pub fn decode_token(token: &Bson) -> CommandResult<TokenPos> {
    let bad = || CommandError::bad_value(format!("invalid resume token: {token}"));
    let data = match token {
        Bson::Document(d) => d.get_str("_data").map_err(|_| bad())?,
        _ => return Err(bad()),
    };
    if data.len() != 36 || !data.starts_with("82") || !data.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let hex = |r: std::ops::Range<usize>| u64::from_str_radix(&data[r], 16).map_err(|_| bad());
    let kind = match hex(34..36)? {
        1 => TokenKind::Event,
        2 => TokenKind::Invalidate,
        _ => return Err(bad()),
    };
    Ok(TokenPos {
        ts: Timestamp {
            time: hex(2..10)? as u32,
            increment: hex(10..18)? as u32,
        },
        seq: hex(18..34)?,
        kind,
    })
}

#[derive(Debug)]
pub struct Oplog {
    entries: VecDeque<Entry>,
    max_events: usize,
    next_seq: u64,
}

impl Oplog {
    /// A new oplog holding the replica set's initiation entry, so there is always a position
    /// to start a change stream from.
    pub fn new(max_events: usize, ts: Timestamp) -> Self {
        let mut log = Oplog {
            entries: VecDeque::new(),
            max_events: max_events.max(1),
            next_seq: 1,
        };
        log.append(ts, "admin", "", OpKind::Noop);
        log
    }

    pub fn append(&mut self, ts: Timestamp, db: &str, coll: &str, op: OpKind) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.entries.push_back(Entry {
            seq,
            ts,
            wall: DateTime::now(),
            db: db.to_string(),
            coll: coll.to_string(),
            op,
        });
        while self.entries.len() > self.max_events {
            self.entries.pop_front();
        }
        seq
    }

    /// The newest entry (there is always one: the initiation entry is only evicted by newer ones).
    pub fn last(&self) -> &Entry {
        self.entries.back().expect("oplog is never empty")
    }

    pub fn first(&self) -> &Entry {
        self.entries.front().expect("oplog is never empty")
    }

    pub fn head_seq(&self) -> u64 {
        self.last().seq
    }

    /// Entries with `seq >= from`, oldest first.
    pub fn from_seq(&self, from: u64) -> impl Iterator<Item = &Entry> {
        let first = self.first().seq;
        let skip = from.saturating_sub(first) as usize;
        self.entries.iter().skip(skip)
    }

    /// The sequence number to continue from after `pos`, or `ChangeStreamHistoryLost` when
    /// the entry at `pos` itself has been truncated away: MongoDB's oplog scan starts at the
    /// token's timestamp and fails when the oldest entry it finds is newer than that, even if
    /// nothing after the token was lost yet.
    pub fn resume_after(&self, pos: &TokenPos) -> CommandResult<u64> {
        if pos.seq < self.first().seq {
            return Err(history_lost());
        }
        Ok(pos.seq + 1)
    }

    /// The first sequence number at or after `ts`, or history lost when `ts` predates the log.
    pub fn start_at(&self, ts: Timestamp) -> CommandResult<u64> {
        let first = self.first();
        if (ts.time, ts.increment) < (first.ts.time, first.ts.increment) && first.seq > 1 {
            return Err(history_lost());
        }
        Ok(self
            .entries
            .iter()
            .find(|e| (e.ts.time, e.ts.increment) >= (ts.time, ts.increment))
            .map(|e| e.seq)
            .unwrap_or(self.next_seq))
    }
}

fn history_lost() -> CommandError {
    CommandError::new(
        codes::CHANGE_STREAM_HISTORY_LOST,
        "Resume of change stream was not possible, as the resume point may no longer be in the oplog.",
    )
    .with_label("NonResumableChangeStreamError")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(i: u32) -> Timestamp {
        Timestamp {
            time: 100,
            increment: i,
        }
    }

    #[test]
    fn tokens_round_trip_and_sort_in_commit_order() {
        let a = token_doc(ts(9), 9, TokenKind::Event);
        let b = token_doc(ts(10), 10, TokenKind::Event);
        let inv = token_doc(ts(10), 10, TokenKind::Invalidate);
        let (sa, sb, si) = (
            a.get_str("_data").unwrap(),
            b.get_str("_data").unwrap(),
            inv.get_str("_data").unwrap(),
        );
        assert!(sa < sb && sb < si);
        let p = decode_token(&Bson::Document(b.clone())).unwrap();
        assert_eq!((p.seq, p.kind, p.ts), (10, TokenKind::Event, ts(10)));
        assert!(decode_token(&Bson::Document(doc! {"_data": "zz"})).is_err());
        assert!(decode_token(&Bson::String("x".into())).is_err());
    }

    #[test]
    fn truncation_loses_history() {
        let mut log = Oplog::new(3, ts(1));
        for i in 2..=6 {
            log.append(
                ts(i),
                "d",
                "c",
                OpKind::Insert {
                    doc: doc! {"_id": i},
                },
            );
        }
        assert_eq!(log.first().seq, 4);
        let old = TokenPos {
            ts: ts(2),
            seq: 2,
            kind: TokenKind::Event,
        };
        assert_eq!(
            log.resume_after(&old).unwrap_err().code,
            codes::CHANGE_STREAM_HISTORY_LOST
        );
        // The token's own entry is gone: history lost, though nothing after it was dropped yet.
        let edge = TokenPos {
            ts: ts(3),
            seq: 3,
            kind: TokenKind::Event,
        };
        assert_eq!(
            log.resume_after(&edge).unwrap_err().code,
            codes::CHANGE_STREAM_HISTORY_LOST
        );
        let oldest = TokenPos {
            ts: ts(4),
            seq: 4,
            kind: TokenKind::Event,
        };
        assert_eq!(log.resume_after(&oldest).unwrap(), 5);
        assert_eq!(
            log.from_seq(5).map(|e| e.seq).collect::<Vec<_>>(),
            vec![5, 6]
        );
        assert!(log.start_at(ts(1)).is_err());
        assert_eq!(log.start_at(ts(5)).unwrap(), 5);
    }
}
