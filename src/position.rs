//! Positions in MongoDB's change history: the SSE event id.
//!
//! Every event a browser receives carries a position as its `id:`; on reconnect the browser
//! sends it back as `Last-Event-ID`, possibly to another gateway instance. So a position must
//! be self-contained (no server-side state), ASCII without whitespace (it travels in a header
//! and in `id:` lines), and bounded in length (it is untrusted input on the way back).
//!
//! This module is the one codec for that format. Each kind of position has a short prefix:
//!
//! - `c.<HEX>`: change-stream mode. `<HEX>` is the `_data` string of MongoDB's resume token
//!   `{_data: "<HEX>"}`, the only token shape since MongoDB 4.2. `_data` is a hex-encoded
//!   KeyString, and KeyStrings compare bytewise in commit order, so the hex strings themselves
//!   order positions without decoding anything.
//!
//! - `p.<FP>.<OID|->.<N>`: polling mode. `<FP>` fingerprints the configured source
//!   collections (a position from a differently configured gateway is foreign), `<OID>` is the
//!   polling cursor — the highest `_id` delivered so far across sources, ObjectIds ordering
//!   documents by creation time — and `<N>` counts documents delivered late (an `_id` below the
//!   cursor, from a writer that committed after a newer one) since the cursor last moved.
//!   Positions of one gateway are totally ordered by `(OID, N)`.
//!
//!   A late count means something only to the poller that counted: another gateway (or a
//!   later poller of the same one) sees late documents at other moments, in another order.
//!   And a cursor alone means "every document up to this `_id`" only on the gateway that
//!   delivered it: another one may have delivered some of those documents late, at later
//!   cursors of its own. So a polling position names its poller: `p.<FP>.<OID>.<N>.<ORIGIN>`,
//!   `<ORIGIN>` 8 hex digits drawn when a poller starts. A gateway resuming another poller's
//!   position never sends a document at or below its cursor again, and one with a late count
//!   gets a `gap` (`late_order_unknown`): which late documents the client has is unknown.
//!   Positions without an origin (`p.<FP>.<OID>.<N>`, from versions that wrote none when
//!   `N = 0`) are another poller's everywhere.
//!
//! Positions of different kinds are incomparable ([`Position::cmp_same_kind`] returns `None`):
//! crossing modes is handled on purpose by the history and the stream, never by comparison.
//!
//! Canonical form: hex digits must be uppercase, as MongoDB emits them. Lowercase is rejected
//! rather than normalized so that every position has exactly one spelling: ids are only ever
//! echoed back by clients, never typed by hand.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use bson::{Bson, Document};

/// Upper bound on an encoded position, in bytes. Real resume tokens are a few hundred hex
/// digits; the bound keeps a hostile `Last-Event-ID` from costing anything.
pub const MAX_LEN: usize = 2048;

/// Prefix of change-stream positions.
const CHANGE_STREAM_PREFIX: &str = "c.";
/// Prefix of polling positions.
const POLLING_PREFIX: &str = "p.";

/// A position in the change history. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Position {
    /// A change-stream resume token.
    ChangeStream(ResumeToken),
    /// A polling cursor.
    Polling(PollCursor),
}

/// What kind of position this is; positions compare only within a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PositionKind {
    ChangeStream,
    Polling,
}

/// Where the poller is: see the module documentation for the encoding.
///
/// Equal when they are the same point of the `_id` order, `(fingerprint, cursor, late count)`,
/// as [`Position::cmp_same_kind`] orders them: the origin says who counted, not where.
#[derive(Clone)]
pub struct PollCursor {
    encoded: Arc<str>,
    fingerprint: u32,
    high: Option<bson::oid::ObjectId>,
    late: u32,
    /// The poller that counted `late` (see the module documentation); `None` when unknown.
    origin: Option<u32>,
}

impl PartialEq for PollCursor {
    fn eq(&self, other: &Self) -> bool {
        (self.fingerprint, self.high, self.late) == (other.fingerprint, other.high, other.late)
    }
}

impl Eq for PollCursor {}

impl std::hash::Hash for PollCursor {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (self.fingerprint, self.high, self.late).hash(state);
    }
}

impl PollCursor {
    /// A cursor without an origin: another poller's everywhere (see the module
    /// documentation).
    pub fn new(fingerprint: u32, high: Option<bson::oid::ObjectId>, late: u32) -> PollCursor {
        PollCursor::counted_by(fingerprint, high, late, None)
    }

    /// A cursor of the poller `origin`.
    pub fn counted_by(
        fingerprint: u32,
        high: Option<bson::oid::ObjectId>,
        late: u32,
        origin: Option<u32>,
    ) -> PollCursor {
        let oid = match high {
            Some(o) => o.to_hex().to_ascii_uppercase(),
            None => "-".to_owned(),
        };
        let encoded = match origin {
            Some(o) => format!("{POLLING_PREFIX}{fingerprint:08X}.{oid}.{late:X}.{o:08X}"),
            None => format!("{POLLING_PREFIX}{fingerprint:08X}.{oid}.{late:X}"),
        };
        PollCursor {
            encoded: Arc::from(encoded),
            fingerprint,
            high,
            late,
            origin,
        }
    }

    /// The poller that delivered this position, when known.
    pub fn origin(&self) -> Option<u32> {
        self.origin
    }

    /// Whether the poller `origin` delivered this position: only then are its cursor and
    /// late count exact there.
    pub fn is_from(&self, origin: Option<u32>) -> bool {
        self.origin.is_some() && self.origin == origin
    }

    pub fn fingerprint(&self) -> u32 {
        self.fingerprint
    }

    /// The highest `_id` delivered; `None` before the first document.
    pub fn high(&self) -> Option<bson::oid::ObjectId> {
        self.high
    }

    pub fn late(&self) -> u32 {
        self.late
    }

    fn decode(s: &str) -> Result<PollCursor, PositionError> {
        let body = &s[POLLING_PREFIX.len()..];
        let bad = || {
            PositionError::TokenShape(
                "polling position must be p.<8 hex>.<24 hex or ->.<hex>[.<8 hex>]".into(),
            )
        };
        let mut parts = body.split('.');
        let (Some(fp), Some(oid), Some(late), origin, None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(bad());
        };
        let upper_hex =
            |t: &str| !t.is_empty() && t.bytes().all(|b| matches!(b, b'0'..=b'9' | b'A'..=b'F'));
        if fp.len() != 8 || !upper_hex(fp) || !upper_hex(late) || late.len() > 8 {
            return Err(bad());
        }
        let high = match oid {
            "-" => None,
            o if o.len() == 24 && upper_hex(o) => {
                Some(bson::oid::ObjectId::parse_str(o.to_ascii_lowercase()).map_err(|_| bad())?)
            }
            _ => return Err(bad()),
        };
        let fingerprint = u32::from_str_radix(fp, 16).map_err(|_| bad())?;
        let late = u32::from_str_radix(late, 16).map_err(|_| bad())?;
        let origin = match origin {
            None => None,
            Some(o) if o.len() == 8 && upper_hex(o) => {
                Some(u32::from_str_radix(o, 16).map_err(|_| bad())?)
            }
            Some(_) => return Err(bad()),
        };
        let cursor = PollCursor::counted_by(fingerprint, high, late, origin);
        // One spelling per position: "0A" and "A" are the same counter, only "A" is canonical.
        if &*cursor.encoded != s {
            return Err(bad());
        }
        Ok(cursor)
    }
}

/// The fingerprint of a source configuration, for polling positions: FNV-1a over the
/// collection names in order. Stable across processes and versions, unlike `Hash`.
pub fn sources_fingerprint<'a>(collections: impl IntoIterator<Item = &'a str>) -> u32 {
    let mut h: u32 = 0x811C_9DC5;
    for (i, c) in collections.into_iter().enumerate() {
        if i > 0 {
            h ^= u32::from(b',');
            h = h.wrapping_mul(0x0100_0193);
        }
        for b in c.bytes() {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
    }
    h
}

/// A MongoDB 4.2+ resume token, `{_data: "<uppercase hex>"}`, kept in its encoded form
/// (`c.<hex>`) so that encoding a position is free.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ResumeToken {
    encoded: Arc<str>,
}

impl ResumeToken {
    /// The `_data` hex string.
    pub fn data(&self) -> &str {
        &self.encoded[CHANGE_STREAM_PREFIX.len()..]
    }

    /// The token as MongoDB expects it in `resumeAfter` / `startAfter`.
    pub fn to_document(&self) -> Document {
        let mut d = Document::new();
        d.insert("_data", self.data());
        d
    }
}

/// How a change stream continues after a position.
#[derive(Debug, Clone, PartialEq)]
pub enum ResumePoint {
    /// `resumeAfter` this token.
    After(Document),
    /// `startAtOperationTime` this cluster time (the position stood for "after every event
    /// just before it").
    AtOperationTime(bson::Timestamp),
}

/// The marker ending an "after this cluster time" token, and that token's length in hex.
const AFTER_TIME_MARK: &str = "FF";
const AFTER_TIME_LEN: usize = 2 + 16 + 2;

/// The cluster time a KeyString token begins with: type `82` (Timestamp), then the seconds
/// and the increment, big-endian.
fn cluster_time_of(data: &str) -> Option<bson::Timestamp> {
    if data.len() < 18 || !data.starts_with("82") {
        return None;
    }
    let time = u32::from_str_radix(data.get(2..10)?, 16).ok()?;
    let increment = u32::from_str_radix(data.get(10..18)?, 16).ok()?;
    Some(bson::Timestamp { time, increment })
}

/// Why a resume token or an encoded position was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PositionError {
    /// The encoded position is empty.
    Empty,
    /// Longer than [`MAX_LEN`] bytes.
    TooLong { len: usize },
    /// Does not start with a known kind prefix.
    UnknownKind,
    /// The token data is empty.
    EmptyToken,
    /// A character that is not an uppercase hex digit (lowercase is rejected, see module doc).
    NotHex { index: usize },
    /// Hex with an odd number of digits cannot be whole bytes.
    OddLength { len: usize },
    /// A resume token document that is not `{_data: <string>}`.
    TokenShape(String),
}

impl fmt::Display for PositionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PositionError::Empty => write!(f, "event id is empty"),
            PositionError::TooLong { len } => {
                write!(
                    f,
                    "event id is {len} bytes long, at most {MAX_LEN} are allowed"
                )
            }
            PositionError::UnknownKind => {
                write!(f, "event id is not a position issued by this service")
            }
            PositionError::EmptyToken => write!(f, "event id has an empty resume token"),
            PositionError::NotHex { index } => write!(
                f,
                "event id has a character that is not an uppercase hex digit at byte {index}"
            ),
            PositionError::OddLength { len } => {
                write!(
                    f,
                    "event id resume token has an odd number of hex digits ({len})"
                )
            }
            PositionError::TokenShape(why) => write!(f, "unsupported resume token: {why}"),
        }
    }
}

impl std::error::Error for PositionError {}

/// Checks `_data` hex; `offset` is where it starts in the encoded id, for error messages.
fn check_hex(data: &str, offset: usize) -> Result<(), PositionError> {
    if data.is_empty() {
        return Err(PositionError::EmptyToken);
    }
    if let Some(i) = data
        .bytes()
        .position(|b| !matches!(b, b'0'..=b'9' | b'A'..=b'F'))
    {
        return Err(PositionError::NotHex { index: offset + i });
    }
    if data.len() % 2 != 0 {
        return Err(PositionError::OddLength { len: data.len() });
    }
    if offset + data.len() > MAX_LEN {
        return Err(PositionError::TooLong {
            len: offset + data.len(),
        });
    }
    Ok(())
}

impl Position {
    /// Builds a position from a change stream's resume token (an event's `_id` or a
    /// `postBatchResumeToken`). Only the MongoDB 4.2+ shape `{_data: "<uppercase hex>"}` is
    /// accepted; anything else would not order correctly.
    pub fn from_resume_token(token: &Document) -> Result<Position, PositionError> {
        if token.len() != 1 {
            return Err(PositionError::TokenShape(format!(
                "expected exactly one field _data, got {} fields",
                token.len()
            )));
        }
        let data = match token.get("_data") {
            Some(Bson::String(s)) => s,
            Some(other) => {
                return Err(PositionError::TokenShape(format!(
                    "_data is {:?}, expected a hex string (MongoDB 4.2 or later)",
                    other.element_type()
                )))
            }
            None => return Err(PositionError::TokenShape("missing _data field".to_owned())),
        };
        match check_hex(data, CHANGE_STREAM_PREFIX.len()) {
            Ok(()) => {}
            // MongoDB's event tokens embed the document key, so a long `_id` makes a token
            // longer than an event id may be. Such an event is still delivered, with the id
            // "just after its cluster time" (see [`Position::after_cluster_time`]).
            Err(PositionError::TooLong { .. }) => {
                if let Some(ts) = cluster_time_of(data) {
                    return Ok(Position::after_cluster_time(ts));
                }
                return Err(PositionError::TooLong {
                    len: CHANGE_STREAM_PREFIX.len() + data.len(),
                });
            }
            Err(e) => return Err(e),
        }
        let mut encoded = String::with_capacity(CHANGE_STREAM_PREFIX.len() + data.len());
        encoded.push_str(CHANGE_STREAM_PREFIX);
        encoded.push_str(data);
        Ok(Position::ChangeStream(ResumeToken {
            encoded: Arc::from(encoded),
        }))
    }

    /// The position right after every event at cluster time `ts`: the id of an event whose
    /// own resume token is too long to be an event id.
    ///
    /// Encoded as a token that is `82`, the timestamp and `FF`: it sorts after every real
    /// token at `ts` (KeyString continues the timestamp with a type byte below `FF`) and
    /// before every token at a later time, so it orders correctly among real positions, and
    /// no real token is that short. A change stream resumes from it with
    /// `startAtOperationTime` `(ts.time, ts.increment + 1)`. Exact for every write outside a
    /// multi-document transaction, each of which has a cluster time of its own; see the
    /// README's known limits for transactions.
    pub fn after_cluster_time(ts: bson::Timestamp) -> Position {
        let encoded = format!(
            "{CHANGE_STREAM_PREFIX}82{:08X}{:08X}{AFTER_TIME_MARK}",
            ts.time, ts.increment
        );
        Position::ChangeStream(ResumeToken {
            encoded: Arc::from(encoded),
        })
    }

    /// Where a change stream opened to continue after this position starts.
    pub fn resume_point(&self) -> Option<ResumePoint> {
        let Position::ChangeStream(t) = self else {
            return None;
        };
        let data = t.data();
        if data.len() == AFTER_TIME_LEN && data.ends_with(AFTER_TIME_MARK) {
            let ts = cluster_time_of(data)?;
            // The increment is 32 bits; at its end the next second begins.
            let next = match ts.increment.checked_add(1) {
                Some(increment) => bson::Timestamp {
                    time: ts.time,
                    increment,
                },
                None => bson::Timestamp {
                    time: ts.time.checked_add(1)?,
                    increment: 0,
                },
            };
            return Some(ResumePoint::AtOperationTime(next));
        }
        Some(ResumePoint::After(t.to_document()))
    }

    /// The resume token to pass as `resumeAfter`, if this is a change-stream position that
    /// has one (see [`Position::resume_point`] for those that resume by time).
    pub fn to_resume_token(&self) -> Option<Document> {
        match self.resume_point()? {
            ResumePoint::After(d) => Some(d),
            ResumePoint::AtOperationTime(_) => None,
        }
    }

    pub fn polling(&self) -> Option<&PollCursor> {
        match self {
            Position::Polling(p) => Some(p),
            Position::ChangeStream(_) => None,
        }
    }

    /// The SSE event id.
    pub fn encode(&self) -> &str {
        match self {
            Position::ChangeStream(t) => &t.encoded,
            Position::Polling(p) => &p.encoded,
        }
    }

    /// Parses an event id (typically a `Last-Event-ID` header). Untrusted input: every
    /// rejection is a value, and the length is checked before anything else is looked at.
    pub fn decode(s: &str) -> Result<Position, PositionError> {
        if s.is_empty() {
            return Err(PositionError::Empty);
        }
        if s.len() > MAX_LEN {
            return Err(PositionError::TooLong { len: s.len() });
        }
        if let Some(data) = s.strip_prefix(CHANGE_STREAM_PREFIX) {
            check_hex(data, CHANGE_STREAM_PREFIX.len())?;
            return Ok(Position::ChangeStream(ResumeToken {
                encoded: Arc::from(s),
            }));
        }
        if s.starts_with(POLLING_PREFIX) {
            return Ok(Position::Polling(PollCursor::decode(s)?));
        }
        Err(PositionError::UnknownKind)
    }

    /// The cluster time a change-stream token begins with. MongoDB's resume tokens are
    /// KeyStrings whose first value is the event's cluster time (type byte `0x82`, then the
    /// timestamp's seconds and increment, big-endian), which is what lets the gateway compare
    /// a position with a read's `operationTime`.
    pub fn cluster_time(&self) -> Option<bson::Timestamp> {
        let Position::ChangeStream(t) = self else {
            return None;
        };
        cluster_time_of(t.data())
    }

    pub fn kind(&self) -> PositionKind {
        match self {
            Position::ChangeStream(_) => PositionKind::ChangeStream,
            Position::Polling(_) => PositionKind::Polling,
        }
    }

    /// Commit order between two positions of the same kind; `None` across kinds.
    pub fn cmp_same_kind(&self, other: &Position) -> Option<Ordering> {
        match (self, other) {
            // Uppercase hex compares like the bytes it encodes ('0'-'9' < 'A'-'F' in ASCII,
            // two digits per byte), and KeyStrings compare bytewise.
            (Position::ChangeStream(a), Position::ChangeStream(b)) => Some(a.data().cmp(b.data())),
            (Position::Polling(a), Position::Polling(b)) if a.fingerprint == b.fingerprint => {
                Some((a.high.map(|o| o.bytes()), a.late).cmp(&(b.high.map(|o| o.bytes()), b.late)))
            }
            _ => None,
        }
    }
}

impl PartialOrd for Position {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        self.cmp_same_kind(other)
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.encode())
    }
}

impl fmt::Debug for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Position({})", self.encode())
    }
}

impl fmt::Debug for ResumeToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ResumeToken({})", self.data())
    }
}

impl std::str::FromStr for Position {
    type Err = PositionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Position::decode(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    // Shaped like a MongoDB 6 insert-event resume token (KeyString hex).
    const REAL: &str = "8265A1B2C3000000012B022C0100296E5A1004A1B2C3D4E5F6071829304A5B6C7D8E9F46645F6964006465A1B2C3D4E5F60718293A4B0004";

    fn pos(hex: &str) -> Position {
        Position::from_resume_token(&doc! {"_data": hex}).unwrap()
    }

    #[test]
    fn polling_positions_round_trip_and_order() {
        let fp = sources_fingerprint(["logs", "audit"]);
        assert_ne!(fp, sources_fingerprint(["logs"]));
        let a = bson::oid::ObjectId::parse_str("65a1b2c3d4e5f60718293a4b").unwrap();
        let b = bson::oid::ObjectId::parse_str("65a1b2c3d4e5f60718293a4c").unwrap();
        let p0 = Position::Polling(PollCursor::new(fp, None, 0));
        let p1 = Position::Polling(PollCursor::new(fp, Some(a), 0));
        let p2 = Position::Polling(PollCursor::new(fp, Some(a), 11));
        let p3 = Position::Polling(PollCursor::new(fp, Some(b), 0));
        assert!(p0 < p1 && p1 < p2 && p2 < p3);
        for p in [&p0, &p1, &p2, &p3] {
            assert_eq!(&Position::decode(p.encode()).unwrap(), p);
            assert_eq!(p.kind(), PositionKind::Polling);
        }
        assert_eq!(
            p2.encode(),
            format!("p.{fp:08X}.65A1B2C3D4E5F60718293A4B.B")
        );
        // A position names the poller that delivered it, with or without late documents.
        let counted = Position::Polling(PollCursor::counted_by(fp, Some(a), 11, Some(0xA1)));
        assert_eq!(
            counted.encode(),
            format!("p.{fp:08X}.65A1B2C3D4E5F60718293A4B.B.000000A1")
        );
        let uncounted = Position::Polling(PollCursor::counted_by(fp, Some(a), 0, Some(0xA1)));
        assert_eq!(
            uncounted.encode(),
            format!("p.{fp:08X}.65A1B2C3D4E5F60718293A4B.0.000000A1")
        );
        for p in [&counted, &uncounted] {
            let back = Position::decode(p.encode()).unwrap();
            assert_eq!(back.encode(), p.encode());
            assert_eq!(back.polling().unwrap().origin(), Some(0xA1));
        }
        // The same point of the `_id` order whoever delivered it: equal and ordered alike.
        assert_eq!(counted, p2);
        assert_eq!(uncounted, p1);
        assert_eq!(counted.cmp_same_kind(&p2), Some(std::cmp::Ordering::Equal));
        let hash = |p: &Position| {
            use std::hash::{BuildHasher, BuildHasherDefault};
            BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(p)
        };
        assert_eq!(hash(&counted), hash(&p2));
        assert!(counted.polling().unwrap().is_from(Some(0xA1)));
        assert!(uncounted.polling().unwrap().is_from(Some(0xA1)));
        assert!(!counted.polling().unwrap().is_from(Some(0xA2)));
        assert!(!counted.polling().unwrap().is_from(None));
        // Without an origin a position is no poller's own.
        assert!(!p1.polling().unwrap().is_from(Some(0xA1)));
        assert!(!p1.polling().unwrap().is_from(None));
        let other = Position::Polling(PollCursor::new(fp ^ 1, Some(a), 0));
        assert_eq!(p1.cmp_same_kind(&other), None);
        assert_eq!(p1.cmp_same_kind(&pos(REAL)), None);
        assert_eq!(p1.cluster_time(), None);
        for bad in [
            "p.",
            "p.1.2.3",
            "p.0000000G.-.0",
            "p.00000000.-.0A",
            "p.00000000.65a1b2c3d4e5f60718293a4b.0",
            "p.00000000.-.0.1",
            "p.00000000.-.123456789",
            "p.00000000.-.1.A1",
            "p.00000000.-.1.000000a1",
            "p.00000000.-.1.000000A1.0",
        ] {
            assert!(Position::decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn round_trips() {
        let p = pos(REAL);
        assert_eq!(p.encode(), format!("c.{REAL}"));
        assert_eq!(p.to_string(), p.encode());
        assert_eq!(p.to_resume_token(), Some(doc! {"_data": REAL}));
        let q = Position::decode(p.encode()).unwrap();
        assert_eq!(p, q);
        assert_eq!(q.kind(), PositionKind::ChangeStream);
        assert!(p.encode().bytes().all(|b| b.is_ascii_graphic()));
    }

    #[test]
    fn rejects_other_token_shapes() {
        let bad = [
            doc! {},
            doc! {"_data": ""},
            doc! {"_data": "abc1"},
            doc! {"_data": "ABC"},
            doc! {"_data": 5},
            doc! {"_data": bson::Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: vec![1] }},
            doc! {"_data": "AB", "_typeBits": "00"},
            doc! {"data": "AB"},
        ];
        for d in bad {
            assert!(Position::from_resume_token(&d).is_err(), "{d}");
        }
        let long = "A".repeat(MAX_LEN);
        assert!(matches!(
            Position::from_resume_token(&doc! {"_data": long}),
            Err(PositionError::TooLong { .. })
        ));
    }

    /// Hardening #8.10: a token too long to be an event id (a long `_id` inside it) becomes
    /// "right after its cluster time", which orders among real tokens and resumes by time.
    #[test]
    fn too_long_tokens_become_after_their_cluster_time() {
        let at = |t: u32, i: u32, rest: &str| pos(&format!("82{t:08X}{i:08X}{rest}"));
        let long = format!("82{:08X}{:08X}2B02{}", 100, 7, "AB".repeat(MAX_LEN));
        let p = Position::from_resume_token(&doc! {"_data": long.as_str()}).unwrap();
        assert!(p.encode().len() < 32, "{p}");
        assert_eq!(
            p.cluster_time(),
            Some(bson::Timestamp {
                time: 100,
                increment: 7
            })
        );
        // After every token at (100, 7), before every later one.
        assert!(p > at(100, 7, "2B0229296E04"));
        assert!(p > at(100, 7, &long[18..60]));
        assert!(p < at(100, 8, "2B02"));
        assert!(p < at(101, 0, "00"));
        assert_eq!(
            p.resume_point(),
            Some(ResumePoint::AtOperationTime(bson::Timestamp {
                time: 100,
                increment: 8
            }))
        );
        assert_eq!(p.to_resume_token(), None);
        // It round-trips as an id, and ordinary tokens still resume after themselves.
        assert_eq!(Position::decode(p.encode()).unwrap(), p);
        let q = at(100, 8, "2B02");
        assert_eq!(
            q.resume_point(),
            Some(ResumePoint::After(doc! {"_data": &q.encode()[2..]}))
        );
        let end = Position::after_cluster_time(bson::Timestamp {
            time: 5,
            increment: u32::MAX,
        });
        assert_eq!(
            end.resume_point(),
            Some(ResumePoint::AtOperationTime(bson::Timestamp {
                time: 6,
                increment: 0
            }))
        );
        // A too-long string that is not a KeyString timestamp is still refused.
        assert!(Position::from_resume_token(&doc! {"_data": "AB".repeat(MAX_LEN)}).is_err());
    }

    #[test]
    fn decode_rejections() {
        assert_eq!(Position::decode(""), Err(PositionError::Empty));
        assert_eq!(
            Position::decode(&"c.".repeat(MAX_LEN)),
            Err(PositionError::TooLong { len: 2 * MAX_LEN })
        );
        assert_eq!(Position::decode("x.AB"), Err(PositionError::UnknownKind));
        assert_eq!(Position::decode("AB"), Err(PositionError::UnknownKind));
        assert_eq!(Position::decode("c."), Err(PositionError::EmptyToken));
        assert_eq!(
            Position::decode("c.ABC"),
            Err(PositionError::OddLength { len: 3 })
        );
        assert_eq!(
            Position::decode("c.ab"),
            Err(PositionError::NotHex { index: 2 })
        );
        assert_eq!(
            Position::decode("c.A G"),
            Err(PositionError::NotHex { index: 3 })
        );
        assert_eq!(
            Position::decode("c.AB\n"),
            Err(PositionError::NotHex { index: 4 })
        );
        assert_eq!(
            Position::decode("c.ÄB"),
            Err(PositionError::NotHex { index: 2 })
        );
        let max = format!("c.{}", "A".repeat(MAX_LEN - 2));
        assert!(Position::decode(&max).is_ok());
        let over = format!("c.{}", "A".repeat(MAX_LEN));
        assert!(matches!(
            Position::decode(&over),
            Err(PositionError::TooLong { .. })
        ));
        // Messages are meant for clients.
        assert_eq!(
            Position::decode("c.ab").unwrap_err().to_string(),
            "event id has a character that is not an uppercase hex digit at byte 2"
        );
    }

    #[test]
    fn orders_like_keystring_bytes() {
        let a = pos("8265A1B2C3000000012B");
        let b = pos("8265A1B2C3000000022B");
        let c = pos("8265A1B2C4000000012B");
        assert!(a < b && b < c);
        assert_eq!(a.cmp_same_kind(&a), Some(Ordering::Equal));
        // Digits sort before letters, as the bytes 0x09 < 0x0A.
        assert!(pos("09") < pos("0A"));
        // A prefix sorts first, like a shorter KeyString.
        assert!(pos("82") < pos("8200"));
        assert!(pos("8265") > pos("82"));
    }

    #[test]
    fn clone_shares_the_buffer() {
        let p = pos(REAL);
        let q = p.clone();
        assert_eq!(p.encode().as_ptr(), q.encode().as_ptr());
    }
}
