//! The oplog: every write in commit order, bounded like a capped collection. Change streams
//! read it from any position still retained; a position that fell off the end cannot be
//! resumed (`ChangeStreamHistoryLost`), exactly the failure a real deployment shows when a
//! consumer falls behind its oplog window.
//!
//! Resume tokens are positions in this log. Their `_data` is uppercase hex: a fixed-width
//! prefix (`82`, cluster time seconds and increment, sequence number, kind) that alone orders
//! tokens in commit order as strings, as MongoDB's KeyString tokens do; then, for events that
//! have a `documentKey`, that key's BSON. MongoDB's event tokens embed the document key too, so
//! a document with a long `_id` has a long token, and a consumer that stores tokens must be
//! ready for that; the key also lets a resume check that the position still names the same
//! event.

use crate::error::{codes, CommandError, CommandResult};
use crate::query::diff::UpdateDescription;
use bson::{doc, Binary, Bson, DateTime, Document, Timestamp};
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
    /// A collection was created (explicitly, or implicitly by its first write or index).
    Create {
        options: Document,
    },
    /// Indexes were built (`createIndexes`); each as `listIndexes` shows it.
    CreateIndexes {
        indexes: Vec<Document>,
    },
    DropIndexes {
        indexes: Vec<Document>,
    },
    /// `collMod`: what changed, and the options before the change.
    Modify {
        description: Document,
        before: Document,
    },
}

impl OpKind {
    /// The DDL entries only streams with `showExpandedEvents` report.
    pub fn is_expanded(&self) -> bool {
        matches!(
            self,
            OpKind::Create { .. }
                | OpKind::CreateIndexes { .. }
                | OpKind::DropIndexes { .. }
                | OpKind::Modify { .. }
        )
    }
}

/// What a write records beside the change itself.
#[derive(Debug, Clone, Default)]
pub struct EntryExtra {
    /// The collection's UUID (expanded events report it as `collectionUUID`).
    pub uuid: Option<Binary>,
    /// The document before and after the change, recorded only while the collection has
    /// `changeStreamPreAndPostImages: {enabled: true}` (MongoDB's `config.system.preimages`).
    pub pre_image: Option<Document>,
    pub post_image: Option<Document>,
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
    pub extra: EntryExtra,
    /// The BSON size of the entry as `local.oplog.rs` shows it: what counts against the
    /// oplog's size (`replSetResizeOplog`).
    pub bytes: u64,
}

impl Entry {
    /// The `_id` of the change event for this entry: the only token that embeds a document key.
    pub fn event_token(&self) -> Document {
        token_doc(
            self.ts,
            self.seq,
            TokenKind::Event,
            self.document_key().map(document_key_bytes).as_deref(),
        )
    }

    /// A position just past this entry for a stream that reported no event for it.
    pub fn high_water_mark(&self) -> Document {
        token_doc(self.ts, self.seq, TokenKind::HighWaterMark, None)
    }

    /// The `_id` of the changed document, for the entries whose events carry a `documentKey`.
    pub fn document_key(&self) -> Option<&Bson> {
        match &self.op {
            OpKind::Insert { doc } => Some(doc.get("_id").unwrap_or(&Bson::Null)),
            OpKind::Update { key, .. } | OpKind::Replace { key, .. } | OpKind::Delete { key } => {
                Some(key)
            }
            _ => None,
        }
    }

    /// The entry as `local.oplog.rs` shows it (`ts`, `t`, `wall`, `op`, `ns`, `o`), enough for
    /// tools that read the oplog window.
    pub fn to_oplog_document(&self) -> Document {
        self.oplog_document_with(true)
    }

    /// The BSON size of [`Entry::to_oplog_document`], without copying an inserted document.
    fn oplog_size(&self) -> u64 {
        let shell = bson_size(&self.oplog_document_with(false));
        match &self.op {
            // The shell has an empty `o` (5 bytes) where the document goes.
            OpKind::Insert { doc } => shell + bson_size(doc) - 5,
            _ => shell,
        }
    }

    fn oplog_document_with(&self, full_insert: bool) -> Document {
        let (op, o) = match &self.op {
            OpKind::Noop => ("n", doc! {"msg": "initiating set"}),
            OpKind::Insert { doc } if full_insert => ("i", doc.clone()),
            OpKind::Insert { .. } => ("i", Document::new()),
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
            OpKind::Create { options } => {
                let mut o = doc! {"create": self.coll.clone()};
                o.extend(options.clone());
                ("c", o)
            }
            OpKind::CreateIndexes { indexes } => {
                let mut o = doc! {"createIndexes": self.coll.clone()};
                if let Some(first) = indexes.first() {
                    o.extend(first.clone());
                }
                ("c", o)
            }
            OpKind::DropIndexes { indexes } => {
                let name = indexes
                    .first()
                    .and_then(|i| i.get_str("name").ok())
                    .unwrap_or_default();
                ("c", doc! {"dropIndexes": self.coll.clone(), "index": name})
            }
            OpKind::Modify { description, .. } => {
                let mut o = doc! {"collMod": self.coll.clone()};
                o.extend(description.clone());
                ("c", o)
            }
        };
        let ns = if self.coll.is_empty() {
            self.db.clone()
        } else {
            format!("{}.{}", self.db, self.coll)
        };
        doc! {"ts": self.ts, "t": 1i64, "v": 2i64, "op": op, "ns": ns, "wall": self.wall, "o": o}
    }
}

/// A document's BSON size, counted without building the bytes.
pub fn bson_size(d: &Document) -> u64 {
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    let _ = d.to_writer(&mut c);
    c.0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Event = 1,
    /// The invalidate that follows a drop or rename sorts right after it.
    Invalidate = 2,
    /// A position reached without an event there (the `postBatchResumeToken` of a scan that
    /// passed over other collections' writes, or a `startAtOperationTime`). It sorts after
    /// everything at its sequence number, so "later in the log" is "greater" for every token.
    HighWaterMark = 3,
}

/// Hex digits before the document key: `82`, time, increment, sequence number, kind.
pub const TOKEN_PREFIX_LEN: usize = 2 + 8 + 8 + 16 + 2;

/// A decoded resume token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPos {
    pub ts: Timestamp,
    pub seq: u64,
    pub kind: TokenKind,
    /// The BSON of `{_id: ...}` for event tokens of document changes.
    pub document_key: Option<Vec<u8>>,
    /// For a fragment of a split event (`$changeStreamSplitLargeEvent`), its number (from 1).
    pub fragment: Option<u16>,
}

/// The token of fragment `n` of the event whose token is `event`: the event's token followed
/// by the fragment number (4 hex digits), so fragments sort after the event's position and in
/// their own order, and before anything later in the log.
pub fn fragment_token(event: &Document, n: u16) -> Document {
    let data = event.get_str("_data").unwrap_or_default();
    doc! {"_data": format!("{data}{n:04X}")}
}

/// The BSON a token embeds for a document key: `{_id: key}`, the shape of the event's
/// `documentKey` on an unsharded collection.
pub fn document_key_bytes(key: &Bson) -> Vec<u8> {
    let mut out = Vec::new();
    doc! {"_id": key.clone()}
        .to_writer(&mut out)
        .expect("a document of one field always serializes");
    out
}

pub fn token_doc(
    ts: Timestamp,
    seq: u64,
    kind: TokenKind,
    document_key: Option<&[u8]>,
) -> Document {
    use std::fmt::Write;
    let key = document_key.unwrap_or_default();
    let mut data = String::with_capacity(TOKEN_PREFIX_LEN + 2 * key.len());
    let _ = write!(
        data,
        "82{:08X}{:08X}{:016X}{:02X}",
        ts.time, ts.increment, seq, kind as u8
    );
    for b in key {
        let _ = write!(data, "{b:02X}");
    }
    doc! {"_data": data}
}

/// Parses a token this server issued. Anything else is a `BadValue`, as MongoDB answers for a
/// token it cannot decode.
pub fn decode_token(token: &Bson) -> CommandResult<TokenPos> {
    let bad = || CommandError::bad_value(format!("invalid resume token: {token}"));
    let data = match token {
        Bson::Document(d) => d.get_str("_data").map_err(|_| bad())?,
        _ => return Err(bad()),
    };
    if data.len() < TOKEN_PREFIX_LEN
        || data.len() % 2 != 0
        || !data.starts_with("82")
        || !data.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(bad());
    }
    let hex = |r: std::ops::Range<usize>| u64::from_str_radix(&data[r], 16).map_err(|_| bad());
    let kind = match hex(34..36)? {
        1 => TokenKind::Event,
        2 => TokenKind::Invalidate,
        3 => TokenKind::HighWaterMark,
        _ => return Err(bad()),
    };
    let mut fragment = None;
    let document_key = if data.len() == TOKEN_PREFIX_LEN {
        None
    } else {
        if kind != TokenKind::Event {
            return Err(bad());
        }
        let mut bytes = (TOKEN_PREFIX_LEN..data.len())
            .step_by(2)
            .map(|i| hex(i..i + 2).map(|b| b as u8))
            .collect::<CommandResult<Vec<u8>>>()?;
        // A split event's fragment number follows (2 bytes); a key is at least 5.
        let declared = bytes
            .get(..4)
            .map(|l| i32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize);
        let keyed_len = declared.filter(|d| *d >= 5).unwrap_or(0);
        if bytes.len() == 2 || (keyed_len > 0 && bytes.len() == keyed_len + 2) {
            let n = u16::from_be_bytes([bytes[bytes.len() - 2], bytes[bytes.len() - 1]]);
            if n == 0 {
                return Err(bad());
            }
            fragment = Some(n);
            bytes.truncate(bytes.len() - 2);
        }
        if bytes.is_empty() {
            None
        } else {
            // Exactly one well-formed document with an `_id`, and nothing after it.
            let parsed = Document::from_reader(bytes.as_slice()).ok();
            if declared != Some(bytes.len()) || !parsed.is_some_and(|d| d.contains_key("_id")) {
                return Err(bad());
            }
            Some(bytes)
        }
    };
    Ok(TokenPos {
        ts: Timestamp {
            time: hex(2..10)? as u32,
            increment: hex(10..18)? as u32,
        },
        seq: hex(18..34)?,
        kind,
        document_key,
        fragment,
    })
}

/// MongoDB's largest oplog (`replSetResizeOplog`'s upper bound, 1 PB), in megabytes.
pub const MAX_SIZE_MB: f64 = 1024.0 * 1024.0 * 1024.0;
/// The smallest oplog `replSetResizeOplog` accepts, in megabytes.
pub const MIN_SIZE_MB: f64 = 990.0;
/// The oplog size before any `replSetResizeOplog`: 50 GB, the largest default `mongod` picks
/// (5% of the disk, capped at 50 GB). In a sim, the entry cap bites long before.
pub const DEFAULT_MAX_BYTES: u64 = 50 * 1024 * 1024 * 1024;

#[derive(Debug)]
pub struct Oplog {
    entries: VecDeque<Entry>,
    max_events: usize,
    /// The oplog's size in bytes (`maxSize`), as `replSetResizeOplog` sets it.
    max_bytes: u64,
    /// `minRetentionHours`: entries younger than this are kept even beyond the size.
    min_retention_hours: f64,
    /// Sum of the retained entries' `bytes`.
    bytes: u64,
    /// Truncations that removed entries since the start (serverStatus
    /// `oplogTruncation.truncateCount`).
    truncations: u64,
    next_seq: u64,
}

impl Oplog {
    /// A new oplog holding the replica set's initiation entry, so there is always a position
    /// to start a change stream from.
    pub fn new(max_events: usize, ts: Timestamp) -> Self {
        let mut log = Oplog {
            entries: VecDeque::new(),
            max_events: max_events.max(1),
            max_bytes: DEFAULT_MAX_BYTES,
            min_retention_hours: 0.0,
            bytes: 0,
            truncations: 0,
            next_seq: 1,
        };
        log.append(ts, "admin", "", OpKind::Noop);
        log
    }

    pub fn max_events(&self) -> usize {
        self.max_events
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    pub fn min_retention_hours(&self) -> f64 {
        self.min_retention_hours
    }

    /// Total BSON size of the retained entries.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Truncations that removed entries so far.
    pub fn truncations(&self) -> u64 {
        self.truncations
    }

    /// `replSetResizeOplog`: new limits, applied at once. (MongoDB truncates in the
    /// background, by whole "truncate markers"; mongo-sim truncates exactly and immediately,
    /// so the effect is visible when the command returns.)
    pub fn resize(
        &mut self,
        max_bytes: Option<u64>,
        min_retention_hours: Option<f64>,
        max_events: Option<usize>,
    ) {
        if let Some(b) = max_bytes {
            self.max_bytes = b;
        }
        if let Some(h) = min_retention_hours {
            self.min_retention_hours = h;
        }
        if let Some(n) = max_events {
            self.max_events = n.max(1);
        }
        self.truncate();
    }

    /// Drops the oldest entries while the log is over its entry count or byte size, except
    /// the newest entry (there is always a position to read from) and entries younger than
    /// `minRetentionHours`, which MongoDB keeps even when that grows the oplog past its size.
    fn truncate(&mut self) {
        let keep_after = (self.min_retention_hours > 0.0).then(|| {
            let ms = (self.min_retention_hours * 3_600_000.0).min(i64::MAX as f64) as i64;
            DateTime::now().timestamp_millis().saturating_sub(ms)
        });
        let before = self.entries.len();
        while self.entries.len() > 1
            && (self.entries.len() > self.max_events || self.bytes > self.max_bytes)
        {
            let Some(front) = self.entries.front() else {
                break;
            };
            if keep_after.is_some_and(|t| front.wall.timestamp_millis() > t) {
                break;
            }
            self.bytes -= front.bytes;
            self.entries.pop_front();
        }
        if self.entries.len() < before {
            self.truncations += 1;
        }
    }

    pub fn append(&mut self, ts: Timestamp, db: &str, coll: &str, op: OpKind) -> u64 {
        self.append_with(ts, db, coll, op, EntryExtra::default())
    }

    pub fn append_with(
        &mut self,
        ts: Timestamp,
        db: &str,
        coll: &str,
        op: OpKind,
        extra: EntryExtra,
    ) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut entry = Entry {
            seq,
            ts,
            wall: DateTime::now(),
            db: db.to_string(),
            coll: coll.to_string(),
            op,
            extra,
            bytes: 0,
        };
        entry.bytes = entry.oplog_size();
        self.bytes += entry.bytes;
        self.entries.push_back(entry);
        self.truncate();
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

    /// The entry with sequence number `seq`, if it is still retained.
    pub fn get(&self, seq: u64) -> Option<&Entry> {
        let i = seq.checked_sub(self.first().seq)?;
        self.entries.get(usize::try_from(i).ok()?)
    }

    /// The sequence number to continue from after `pos`, or `ChangeStreamHistoryLost` when
    /// the entry at `pos` itself has been truncated away: MongoDB's oplog scan starts at the
    /// token's timestamp and fails when the oldest entry it finds is newer than that, even if
    /// nothing after the token was lost yet. (Sequence number 0, before the initiation entry,
    /// is lost only once something was truncated.)
    pub fn resume_after(&self, pos: &TokenPos) -> CommandResult<u64> {
        if pos.seq < self.first().seq && self.first().seq > 1 {
            return Err(history_lost());
        }
        match pos.kind {
            // A high-water mark from elsewhere may lie beyond this log's end; its time, not its
            // sequence number, says which later writes the stream still owes.
            TokenKind::HighWaterMark => Ok((pos.seq + 1).min(self.next_seq)),
            // A fragment: the rest of that event's fragments come first.
            TokenKind::Event if pos.fragment.is_some() => Ok(pos.seq),
            TokenKind::Event | TokenKind::Invalidate => Ok(pos.seq + 1),
        }
    }

    /// The first sequence number at or after `ts`, or history lost when `ts` predates the log.
    pub fn start_at(&self, ts: Timestamp) -> CommandResult<u64> {
        let first = self.first();
        if ts_before(ts, first.ts) && first.seq > 1 {
            return Err(history_lost());
        }
        let i = self.entries.partition_point(|e| ts_before(e.ts, ts));
        Ok(self.entries.get(i).map_or(self.next_seq, |e| e.seq))
    }
}

/// `a < b` in cluster-time order (`bson::Timestamp` has no `Ord`).
pub fn ts_before(a: Timestamp, b: Timestamp) -> bool {
    (a.time, a.increment) < (b.time, b.increment)
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

    fn data(d: &Document) -> &str {
        d.get_str("_data").unwrap()
    }

    #[test]
    fn tokens_round_trip_and_sort_in_commit_order() {
        let key_a = document_key_bytes(&Bson::String("z".repeat(50)));
        let key_b = document_key_bytes(&Bson::Int32(1));
        let a = token_doc(ts(9), 9, TokenKind::Event, Some(&key_a));
        let hwm_a = token_doc(ts(9), 9, TokenKind::HighWaterMark, None);
        let b = token_doc(ts(10), 10, TokenKind::Event, Some(&key_b));
        let inv = token_doc(ts(10), 10, TokenKind::Invalidate, None);
        let hwm_b = token_doc(ts(10), 10, TokenKind::HighWaterMark, None);
        let order = [&a, &hwm_a, &b, &inv, &hwm_b].map(data);
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
        // The prefix is fixed-width; the key follows as uppercase hex of its BSON.
        assert!(data(&b).starts_with("82000000640000000A000000000000000A01"));
        assert_eq!(data(&b).len(), TOKEN_PREFIX_LEN + 2 * key_b.len());
        assert_eq!(data(&hwm_b).len(), TOKEN_PREFIX_LEN);
        assert!(data(&a).bytes().all(|c| !c.is_ascii_lowercase()));

        let p = decode_token(&Bson::Document(b.clone())).unwrap();
        assert_eq!((p.seq, p.kind, p.ts), (10, TokenKind::Event, ts(10)));
        assert_eq!(p.document_key.as_deref(), Some(key_b.as_slice()));
        let p = decode_token(&Bson::Document(hwm_b.clone())).unwrap();
        assert_eq!((p.kind, p.document_key), (TokenKind::HighWaterMark, None));

        let bad = |d: String| decode_token(&Bson::Document(doc! {"_data": d})).is_err();
        assert!(bad("zz".into()));
        assert!(bad(format!("{}0", data(&b))), "odd length");
        assert!(bad(format!("{}00", data(&b))), "bytes after the key");
        assert!(
            bad(data(&b)[..data(&b).len() - 2].to_string()),
            "truncated key"
        );
        assert!(
            bad(format!("{}{}", data(&inv), &data(&b)[TOKEN_PREFIX_LEN..])),
            "keyed invalidate"
        );
        assert!(
            bad(format!("{}0500000000", data(&hwm_b))),
            "key without _id"
        );
        assert!(decode_token(&Bson::String("x".into())).is_err());

        // Fragments of a split event follow the event's token, in order, before the next position.
        let f1 = fragment_token(&b, 1);
        let f2 = fragment_token(&b, 2);
        let order = [&b, &f1, &f2, &inv, &hwm_b].map(data);
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
        let p = decode_token(&Bson::Document(f2)).unwrap();
        assert_eq!((p.seq, p.fragment), (10, Some(2)));
        assert_eq!(p.document_key.as_deref(), Some(key_b.as_slice()));
        assert_eq!(
            decode_token(&Bson::Document(b.clone())).unwrap().fragment,
            None
        );
        let keyless = token_doc(ts(10), 10, TokenKind::Event, None);
        let p = decode_token(&Bson::Document(fragment_token(&keyless, 3))).unwrap();
        assert_eq!((p.fragment, p.document_key), (Some(3), None));
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
            document_key: None,
            fragment: None,
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
            document_key: None,
            fragment: None,
        };
        assert_eq!(
            log.resume_after(&edge).unwrap_err().code,
            codes::CHANGE_STREAM_HISTORY_LOST
        );
        let oldest = TokenPos {
            ts: ts(4),
            seq: 4,
            kind: TokenKind::Event,
            document_key: None,
            fragment: None,
        };
        assert_eq!(log.resume_after(&oldest).unwrap(), 5);
        assert_eq!(
            log.from_seq(5).map(|e| e.seq).collect::<Vec<_>>(),
            vec![5, 6]
        );
        assert!(log.start_at(ts(1)).is_err());
        assert_eq!(log.start_at(ts(5)).unwrap(), 5);
        assert_eq!(
            log.start_at(ts(99)).unwrap(),
            7,
            "not reached yet: the next write"
        );
        assert_eq!(log.get(5).map(|e| e.seq), Some(5));
        assert!(log.get(3).is_none() && log.get(7).is_none());
        // A high-water mark beyond the end continues at the end; its time does the filtering.
        let ahead = TokenPos {
            ts: ts(50),
            seq: 40,
            kind: TokenKind::HighWaterMark,
            document_key: None,
            fragment: None,
        };
        assert_eq!(log.resume_after(&ahead).unwrap(), 7);
    }

    #[test]
    fn resizing_truncates_by_bytes_and_entries() {
        let mut log = Oplog::new(100, ts(1));
        for i in 2..=11 {
            log.append(
                ts(i),
                "d",
                "c",
                OpKind::Insert {
                    doc: doc! {"_id": i, "pad": "x".repeat(100)},
                },
            );
        }
        let sizes: Vec<u64> = log.from_seq(0).map(|e| e.bytes).collect();
        let exact: Vec<u64> = log
            .from_seq(0)
            .map(|e| bson::to_vec(&e.to_oplog_document()).unwrap().len() as u64)
            .collect();
        assert_eq!(
            sizes, exact,
            "entry sizes are the oplog documents' BSON sizes"
        );
        assert_eq!(log.bytes(), exact.iter().sum::<u64>());
        // A byte size that holds three inserts keeps the three newest.
        let three = exact[exact.len() - 3..].iter().sum::<u64>();
        log.resize(Some(three), None, None);
        assert_eq!((log.len(), log.first().seq, log.bytes()), (3, 9, three));
        log.resize(None, None, Some(1));
        assert_eq!((log.len(), log.first().seq), (1, 11));
        // Never below the newest entry, even with a size smaller than it.
        log.resize(Some(1), None, None);
        assert_eq!(log.len(), 1);
        assert_eq!(log.truncations(), 2);
    }

    #[test]
    fn a_fresh_log_starts_before_its_initiation_entry() {
        let log = Oplog::new(3, ts(5));
        assert_eq!(log.start_at(ts(1)).unwrap(), 1);
        let before = TokenPos {
            ts: ts(1),
            seq: 0,
            kind: TokenKind::HighWaterMark,
            document_key: None,
            fragment: None,
        };
        assert_eq!(log.resume_after(&before).unwrap(), 1);
    }
}
