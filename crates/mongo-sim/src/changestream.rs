//! Change-stream cursors: a position in the oplog plus the stream's scope, options and user
//! pipeline. Each batch scans the oplog forward from the cursor's position and turns entries
//! into change events shaped like MongoDB 7.0's. The position advances over entries that do not
//! match, and `postBatchResumeToken` reports it, so a consumer of a quiet collection in a busy
//! database still makes progress it can resume from.
//!
//! Batches and events obey MongoDB's size limits, because drivers enforce them too: a batch
//! carries at most 16 MiB of events (the rest waits for the next `getMore`), so a reply never
//! exceeds the 48 MB message limit; and an event larger than the server's own BSON limit fails
//! the stream with `BSONObjectTooLarge`, as it does on MongoDB, where it cannot be sent at all.

use crate::cursor::BatchBytes;
use crate::error::{codes, CommandError, CommandResult};
use crate::oplog::{
    decode_token, document_key_bytes, token_doc, ts_before, Entry, OpKind, Oplog, TokenKind,
    TokenPos,
};
use crate::query::pipeline::Pipeline;
use crate::state::State;
use crate::store::Database;
use crate::wire::MAX_INTERNAL_BSON_OBJECT_SIZE;
use bson::{doc, Bson, Document, Timestamp};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub enum Scope {
    Collection { db: String, coll: String },
    Database { db: String },
    Cluster,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FullDocument {
    Default,
    UpdateLookup,
    WhenAvailable,
    Required,
}

/// Stages MongoDB allows after `$changeStream`: they transform events one at a time.
const ALLOWED_STAGES: &[&str] = &[
    "$match",
    "$project",
    "$addFields",
    "$set",
    "$unset",
    "$replaceRoot",
    "$replaceWith",
];

const OPTIONS: &[&str] = &[
    "resumeAfter",
    "startAfter",
    "startAtOperationTime",
    "fullDocument",
    "fullDocumentBeforeChange",
    "allChangesForCluster",
    "showExpandedEvents",
    "allowToRunOnConfigDB",
    "allowToRunOnSystemNS",
    "showSystemEvents",
    "showMigrationEvents",
];

#[derive(Debug)]
pub struct ChangeStream {
    scope: Scope,
    full_document: FullDocument,
    pipeline: Pipeline,
    /// The next oplog sequence number to read.
    next_seq: u64,
    /// Entries before this cluster time are not this stream's (`startAtOperationTime`, or a
    /// resume from a high-water mark), even when they come after `next_seq`.
    min_ts: Timestamp,
    /// The resume token of the last position scanned (the postBatchResumeToken).
    last_token: Document,
    /// An invalidate was delivered: the cursor is exhausted.
    finished: bool,
    /// The invalidate owed to a stream resumed from the very event that invalidates it (a
    /// drop or rename): MongoDB delivers it first thing, so a resume cannot step past it.
    pending_invalidate: Option<Document>,
    /// The token this stream resumed from, when it names an event: the first batch checks that
    /// the event is still there, as MongoDB only resumes from a token it finds in the oplog.
    verify: Option<TokenPos>,
}

impl ChangeStream {
    /// Opens a stream from the `$changeStream` stage's options and the stages after it.
    pub fn open(
        scope: Scope,
        options: &Document,
        rest: &[Document],
        state: &State,
    ) -> CommandResult<ChangeStream> {
        for key in options.keys() {
            if !OPTIONS.contains(&key.as_str()) {
                return Err(CommandError::new(
                    codes::LOCATION_40415,
                    format!("BSON field '$changeStream.{key}' is an unknown field."),
                ));
            }
        }
        let full_document = match options.get("fullDocument") {
            None => FullDocument::Default,
            Some(Bson::String(s)) => match s.as_str() {
                "default" => FullDocument::Default,
                "updateLookup" => FullDocument::UpdateLookup,
                "whenAvailable" => FullDocument::WhenAvailable,
                "required" => FullDocument::Required,
                other => {
                    return Err(CommandError::bad_value(format!(
                        "Enumeration value '{other}' for field '$changeStream.fullDocument' is not a valid value."
                    )))
                }
            },
            Some(_) => return Err(CommandError::type_mismatch("fullDocument must be a string")),
        };
        for stage in rest {
            if let Some(name) = stage.keys().next() {
                if name == "$changeStreamSplitLargeEvent" {
                    // Accepting it and never splitting would turn a large event into a silent
                    // BSONObjectTooLarge later; refusing says so up front, as a server without
                    // the stage (before 6.0.9) does.
                    return Err(CommandError::new(
                        codes::UNRECOGNIZED_PIPELINE_STAGE,
                        "Unrecognized pipeline stage name: '$changeStreamSplitLargeEvent' (mongo-sim does not split large change events; an event over 16MB fails the stream with BSONObjectTooLarge)",
                    ));
                }
                if name.starts_with('$')
                    && !ALLOWED_STAGES.contains(&name.as_str())
                    && is_known_stage(name)
                {
                    return Err(CommandError::new(
                        codes::ILLEGAL_OPERATION,
                        format!("{name} is not permitted in a $changeStream pipeline"),
                    ));
                }
            }
        }
        let pipeline = Pipeline::parse(rest)?;

        let resume_options = ["resumeAfter", "startAfter", "startAtOperationTime"];
        let given: Vec<&str> = resume_options
            .iter()
            .copied()
            .filter(|k| options.contains_key(*k))
            .collect();
        if given.len() > 1 {
            return Err(CommandError::new(
                40674,
                "Only one type of resume option is allowed, but multiple were found.",
            ));
        }
        let oplog = &state.oplog;
        let mut verify = None;
        let mut min_ts = Timestamp {
            time: 0,
            increment: 0,
        };
        let (next_seq, last_token) = match given.first().copied() {
            Some(key @ ("resumeAfter" | "startAfter")) => {
                let raw = options.get(key).cloned().unwrap_or(Bson::Null);
                let pos = decode_token(&raw)?;
                if pos.kind == TokenKind::Invalidate && key == "resumeAfter" {
                    return Err(CommandError::new(
                        260,
                        "Attempting to resume a change stream using 'resumeAfter' is not allowed from an invalidate notification.",
                    ));
                }
                let token = match raw {
                    Bson::Document(d) => d,
                    _ => Document::new(),
                };
                let next = oplog.resume_after(&pos)?;
                match pos.kind {
                    TokenKind::HighWaterMark => min_ts = pos.ts,
                    TokenKind::Event | TokenKind::Invalidate => verify = Some(pos),
                }
                (next, token)
            }
            Some(_) => {
                let ts = match options.get("startAtOperationTime") {
                    Some(Bson::Timestamp(ts)) => *ts,
                    _ => {
                        return Err(CommandError::type_mismatch(
                            "startAtOperationTime must be a timestamp",
                        ))
                    }
                };
                let next = oplog.start_at(ts)?;
                min_ts = ts;
                (
                    next,
                    token_doc(ts, next.saturating_sub(1), TokenKind::HighWaterMark, None),
                )
            }
            None => (oplog.head_seq() + 1, oplog.last().high_water_mark()),
        };
        let mut stream = ChangeStream {
            scope,
            full_document,
            pipeline,
            next_seq,
            min_ts,
            last_token,
            finished: false,
            pending_invalidate: None,
            verify: None,
        };
        if let Some(pos) = verify.as_ref().filter(|p| p.kind == TokenKind::Event) {
            let entry = oplog.get(pos.seq);
            if let Some(e) = entry.filter(|e| stream.in_scope(e) && stream.invalidated_by(&e.op)) {
                stream.pending_invalidate = Some(invalidate_event(e));
            }
        }
        stream.verify = verify;
        Ok(stream)
    }

    /// Whether an event of this kind ends this stream: a drop or rename of a watched
    /// collection, or the drop of a watched database.
    fn invalidated_by(&self, op: &OpKind) -> bool {
        matches!(
            (op, &self.scope),
            (
                OpKind::Drop | OpKind::Rename { .. },
                Scope::Collection { .. }
            ) | (OpKind::DropDatabase, Scope::Database { .. })
        )
    }

    pub fn post_batch_resume_token(&self) -> Document {
        self.last_token.clone()
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Reads up to `max` events and at most 16 MiB of them (an entry that ends in an
    /// invalidate may add one more).
    pub fn next_batch(
        &mut self,
        oplog: &Oplog,
        dbs: &BTreeMap<String, Database>,
        max: usize,
    ) -> CommandResult<Vec<Document>> {
        if self.finished {
            return Ok(Vec::new());
        }
        if self.next_seq < oplog.first().seq {
            // An open stream whose oplog position was overwritten fails as MongoDB's tailable
            // oplog scan does (jstests/change_streams/oplog_rollover.js): CappedPositionLost,
            // which drivers do not resume; reopening from the last token then reports
            // ChangeStreamHistoryLost.
            return Err(CommandError::new(
                codes::CAPPED_POSITION_LOST,
                format!(
                    "CollectionScan died due to position in capped collection being deleted. Last seen record id: RecordId({})",
                    self.next_seq.saturating_sub(1)
                ),
            ));
        }
        if let Some(pos) = self.verify.take() {
            check_resume_token(oplog, &pos)?;
        }
        if let Some(inv) = self.pending_invalidate.take() {
            self.last_token = inv.get_document("_id").cloned().unwrap_or_default();
            self.finished = true;
            return Ok(self.through_pipeline(inv)?.into_iter().collect());
        }
        let mut out = Vec::new();
        let mut bytes = BatchBytes::default();
        for entry in oplog.from_seq(self.next_seq) {
            if out.len() >= max.max(1) {
                break;
            }
            if ts_before(entry.ts, self.min_ts) {
                self.next_seq = entry.seq + 1;
                continue;
            }
            let event = match self.in_scope(entry) {
                true => self.event_for(entry, dbs)?,
                false => None,
            };
            let Some((event, invalidates)) = event else {
                self.next_seq = entry.seq + 1;
                self.last_token = entry.high_water_mark();
                continue;
            };
            match self.through_pipeline(event)? {
                Some(e) => {
                    let len = bson_size(&e);
                    if len > MAX_INTERNAL_BSON_OBJECT_SIZE {
                        return Err(too_large(&e, len));
                    }
                    if !bytes.try_add(len) {
                        // Not consumed: the next batch starts with this entry.
                        break;
                    }
                    // A batch that ends on an event reports that event's own token, as
                    // MongoDB does; a high-water mark only once the scan has moved past it.
                    self.last_token = e.get_document("_id").cloned().unwrap_or_default();
                    out.push(e);
                }
                None => self.last_token = entry.high_water_mark(),
            }
            self.next_seq = entry.seq + 1;
            if invalidates {
                let inv = invalidate_event(entry);
                self.last_token = token_doc(entry.ts, entry.seq, TokenKind::Invalidate, None);
                self.finished = true;
                if let Some(e) = self.through_pipeline(inv)? {
                    out.push(e);
                }
                break;
            }
        }
        Ok(out)
    }

    fn through_pipeline(&self, event: Document) -> CommandResult<Option<Document>> {
        let id = event.get("_id").cloned();
        let Some(out) = self.pipeline.apply_one(event)? else {
            return Ok(None);
        };
        if out.get("_id") != id.as_ref() {
            return Err(CommandError::new(
                codes::CHANGE_STREAM_FATAL_ERROR,
                "Encountered an event whose _id field, which contains the resume token, was modified by the pipeline. Modifying the _id field of an event makes it impossible to resume the stream from that point. Only transformations that retain the unmodified _id field are allowed.",
            )
            .with_label("NonResumableChangeStreamError"));
        }
        Ok(Some(out))
    }

    fn in_scope(&self, e: &Entry) -> bool {
        if matches!(e.op, OpKind::Noop) {
            return false;
        }
        match &self.scope {
            Scope::Collection { db, coll } => &e.db == db && &e.coll == coll,
            Scope::Database { db } => &e.db == db && !e.coll.starts_with("system."),
            Scope::Cluster => {
                !matches!(e.db.as_str(), "admin" | "config" | "local")
                    && !e.coll.starts_with("system.")
            }
        }
    }

    /// The event for an entry, and whether it invalidates this stream.
    fn event_for(
        &self,
        e: &Entry,
        dbs: &BTreeMap<String, Database>,
    ) -> CommandResult<Option<(Document, bool)>> {
        let ns = if e.coll.is_empty() {
            doc! {"db": e.db.clone()}
        } else {
            doc! {"db": e.db.clone(), "coll": e.coll.clone()}
        };
        let mut ev = doc! {"_id": e.event_token()};
        let invalidates = match &e.op {
            OpKind::Noop => return Ok(None),
            OpKind::Insert { doc } => {
                head(&mut ev, "insert", e.ts, e);
                ev.insert("fullDocument", doc.clone());
                ev.insert("ns", ns);
                ev.insert(
                    "documentKey",
                    doc! {"_id": doc.get("_id").cloned().unwrap_or(Bson::Null)},
                );
                false
            }
            OpKind::Update { key, desc } => {
                head(&mut ev, "update", e.ts, e);
                ev.insert("ns", ns);
                ev.insert("documentKey", doc! {"_id": key.clone()});
                ev.insert("updateDescription", desc.to_document());
                if self.full_document != FullDocument::Default {
                    let current = dbs
                        .get(&e.db)
                        .and_then(|d| d.collections.get(&e.coll))
                        .and_then(|c| c.find_by_id(key))
                        .map(|(_, d)| Bson::Document(d.clone()));
                    match (current, self.full_document) {
                        (Some(d), _) => {
                            ev.insert("fullDocument", d);
                        }
                        (None, FullDocument::Required) => {
                            return Err(CommandError::new(
                                47,
                                "Change stream was configured to require a post-image for all update, delete and replace events, but the post-image was not found",
                            ))
                        }
                        (None, _) => {
                            ev.insert("fullDocument", Bson::Null);
                        }
                    }
                }
                false
            }
            OpKind::Replace { key, doc } => {
                head(&mut ev, "replace", e.ts, e);
                ev.insert("fullDocument", doc.clone());
                ev.insert("ns", ns);
                ev.insert("documentKey", doc! {"_id": key.clone()});
                false
            }
            OpKind::Delete { key } => {
                head(&mut ev, "delete", e.ts, e);
                ev.insert("ns", ns);
                ev.insert("documentKey", doc! {"_id": key.clone()});
                false
            }
            OpKind::Drop => {
                head(&mut ev, "drop", e.ts, e);
                ev.insert("ns", ns);
                self.invalidated_by(&e.op)
            }
            OpKind::Rename { to_db, to_coll } => {
                head(&mut ev, "rename", e.ts, e);
                ev.insert("ns", ns);
                ev.insert("to", doc! {"db": to_db.clone(), "coll": to_coll.clone()});
                self.invalidated_by(&e.op)
            }
            OpKind::DropDatabase => {
                head(&mut ev, "dropDatabase", e.ts, e);
                ev.insert("ns", ns);
                self.invalidated_by(&e.op)
            }
        };
        Ok(Some((ev, invalidates)))
    }
}

/// MongoDB resumes only from a token it finds again in the oplog (its
/// `$_internalChangeStreamEnsureResumeTokenPresent` stage); a token whose position now holds
/// another event (another server's token, or a tampered one) fails rather than resuming at a
/// position that means something else.
fn check_resume_token(oplog: &Oplog, pos: &TokenPos) -> CommandResult<()> {
    let entry = oplog.get(pos.seq);
    let named = entry.is_some_and(|e| {
        e.ts == pos.ts
            && e.document_key().map(document_key_bytes) == pos.document_key
            && (pos.kind == TokenKind::Event
                || matches!(
                    e.op,
                    OpKind::Drop | OpKind::Rename { .. } | OpKind::DropDatabase
                ))
    });
    if named {
        return Ok(());
    }
    let found = entry.map_or_else(
        || token_doc(pos.ts, pos.seq, pos.kind, pos.document_key.as_deref()),
        Entry::event_token,
    );
    Err(CommandError::new(
        codes::CHANGE_STREAM_FATAL_ERROR,
        format!(
            "cannot resume stream; the resume token was not found. {{_data: \"{}\"}}",
            found.get_str("_data").unwrap_or_default()
        ),
    )
    .with_label("NonResumableChangeStreamError"))
}

fn bson_size(d: &Document) -> usize {
    let mut buf = Vec::new();
    d.to_writer(&mut buf).map_or(0, |_| buf.len())
}

/// MongoDB's failure for an event it cannot serialize: the message names the event's token, so
/// a consumer can tell which event to skip (for instance by `startAtOperationTime` just past it).
fn too_large(event: &Document, len: usize) -> CommandError {
    let data = event
        .get_document("_id")
        .ok()
        .and_then(|t| t.get_str("_data").ok())
        .unwrap_or_default();
    CommandError::new(
        codes::BSON_OBJECT_TOO_LARGE,
        format!(
            "BSONObj size: {len} ({len:#X}) is invalid. Size must be between 0 and {MAX_INTERNAL_BSON_OBJECT_SIZE}(16MB) First element: _id: {{ _data: \"{data}\" }}"
        ),
    )
}

/// The invalidate that follows `entry` (a drop, rename or dropDatabase); its token sorts right
/// after the entry's own.
fn invalidate_event(entry: &Entry) -> Document {
    doc! {
        "_id": token_doc(entry.ts, entry.seq, TokenKind::Invalidate, None),
        "operationType": "invalidate",
        "clusterTime": entry.ts,
        "wallTime": entry.wall,
    }
}

fn head(ev: &mut Document, op: &str, ts: Timestamp, e: &Entry) {
    ev.insert("operationType", op);
    ev.insert("clusterTime", ts);
    ev.insert("wallTime", e.wall);
}

fn is_known_stage(name: &str) -> bool {
    matches!(
        name,
        "$sort"
            | "$limit"
            | "$skip"
            | "$count"
            | "$group"
            | "$lookup"
            | "$out"
            | "$merge"
            | "$facet"
            | "$unwind"
            | "$sample"
            | "$changeStream"
            | "$bucket"
            | "$graphLookup"
            | "$geoNear"
            | "$indexStats"
    )
}
