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
    decode_token, document_key_bytes, fragment_token, token_doc, ts_before, Entry, OpKind, Oplog,
    TokenKind, TokenPos,
};
use crate::query::pipeline::Pipeline;
use crate::state::State;
use crate::store::Database;
use crate::wire::MAX_INTERNAL_BSON_OBJECT_SIZE;
use bson::{doc, Bson, Document, Timestamp};
use std::collections::{BTreeMap, VecDeque};

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

/// `fullDocumentBeforeChange`: the pre-image recorded while the collection had
/// `changeStreamPreAndPostImages` enabled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BeforeChange {
    Off,
    WhenAvailable,
    Required,
}

/// The name of the stage that splits events over 16 MiB into fragments.
pub const SPLIT_STAGE: &str = "$changeStreamSplitLargeEvent";

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
    before_change: BeforeChange,
    show_expanded: bool,
    /// The pipeline ends with `$changeStreamSplitLargeEvent`.
    split: bool,
    /// Fragments of a split event not yet delivered (the batch filled up).
    pending_fragments: VecDeque<Document>,
    /// Resuming from fragment `n` of the event at this sequence number: skip its first `n`.
    skip_fragments: Option<(u64, u16)>,
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
        let before_change = match options.get("fullDocumentBeforeChange") {
            None => BeforeChange::Off,
            Some(Bson::String(s)) => match s.as_str() {
                "off" => BeforeChange::Off,
                "whenAvailable" => BeforeChange::WhenAvailable,
                "required" => BeforeChange::Required,
                other => {
                    return Err(CommandError::bad_value(format!(
                        "Enumeration value '{other}' for field '$changeStream.fullDocumentBeforeChange' is not a valid value."
                    )))
                }
            },
            Some(other) => {
                return Err(CommandError::type_mismatch(format!(
                    "BSON field '$changeStream.fullDocumentBeforeChange' is the wrong type '{:?}', expected type 'string'",
                    other.element_type()
                )))
            }
        };
        let show_expanded = match options.get("showExpandedEvents") {
            None => false,
            Some(Bson::Boolean(b)) => *b,
            Some(other) => {
                return Err(CommandError::type_mismatch(format!(
                    "BSON field '$changeStream.showExpandedEvents' is the wrong type '{:?}', expected type 'bool'",
                    other.element_type()
                )))
            }
        };
        let mut split = false;
        let mut rest = rest;
        if let Some((last, before)) = rest.split_last() {
            if last.keys().next().map(String::as_str) == Some(SPLIT_STAGE) {
                match last.get(SPLIT_STAGE) {
                    Some(Bson::Document(d)) if d.is_empty() => {}
                    _ => {
                        return Err(CommandError::new(
                            7182800,
                            "$changeStreamSplitLargeEvent spec should be an empty object",
                        ))
                    }
                }
                split = true;
                rest = before;
            }
        }
        for stage in rest {
            if let Some(name) = stage.keys().next() {
                if name == SPLIT_STAGE {
                    return Err(CommandError::new(
                        7182802,
                        "$changeStreamSplitLargeEvent must be the last stage in the pipeline",
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
        let mut skip_fragments = None;
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
                if pos.fragment.is_some() && !split {
                    return Err(CommandError::new(
                        codes::CHANGE_STREAM_FATAL_ERROR,
                        "To resume from a split event, the $changeStream pipeline must include a $changeStreamSplitLargeEvent stage",
                    )
                    .with_label("NonResumableChangeStreamError"));
                }
                let next = oplog.resume_after(&pos)?;
                if let Some(n) = pos.fragment {
                    skip_fragments = Some((pos.seq, n));
                }
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
            None => {
                // MongoDB starts one tick past the newest write and reports that as the
                // initial high-water mark, so a resume from it (or a startAtOperationTime at
                // its time) never replays the write before the stream opened, such as the
                // drop of the collection it watches.
                let start = next_tick(oplog.last().ts);
                min_ts = start;
                (
                    oplog.head_seq() + 1,
                    token_doc(start, oplog.head_seq(), TokenKind::HighWaterMark, None),
                )
            }
        };
        let mut stream = ChangeStream {
            scope,
            full_document,
            before_change,
            show_expanded,
            split,
            pending_fragments: VecDeque::new(),
            skip_fragments,
            pipeline,
            next_seq,
            min_ts,
            last_token,
            finished: false,
            pending_invalidate: None,
            verify: None,
        };
        if let Some(pos) = verify
            .as_ref()
            .filter(|p| p.kind == TokenKind::Event && p.fragment.is_none())
        {
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
        while let Some(f) = self.pending_fragments.front() {
            if out.len() >= max.max(1) || !bytes.try_add(bson_size(f)) {
                return Ok(out);
            }
            if let Some(f) = self.pending_fragments.pop_front() {
                self.last_token = f.get_document("_id").cloned().unwrap_or_default();
                out.push(f);
            }
        }
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
                Some(e) if self.split && bson_size(&e) > MAX_INTERNAL_BSON_OBJECT_SIZE => {
                    let skip = match self.skip_fragments.take() {
                        Some((seq, n)) if seq == entry.seq => n,
                        _ => 0,
                    };
                    let mut fragments: VecDeque<Document> = split_event(&e)?.into();
                    if fragments.len() <= skip as usize {
                        return Err(CommandError::new(
                            codes::CHANGE_STREAM_FATAL_ERROR,
                            "Attempted to resume from a split event, but the resumed stream produced a different split. Ensure that the pipeline used to resume is the same as the original",
                        )
                        .with_label("NonResumableChangeStreamError"));
                    }
                    fragments.drain(..skip as usize);
                    if !bytes.try_add(fragments.front().map_or(0, bson_size)) {
                        break;
                    }
                    if let Some(f) = fragments.pop_front() {
                        self.last_token = f.get_document("_id").cloned().unwrap_or_default();
                        out.push(f);
                    }
                    self.next_seq = entry.seq + 1;
                    self.pending_fragments = fragments;
                    // The other fragments follow in this batch if they fit, else in the next.
                    while let Some(f) = self.pending_fragments.front() {
                        if out.len() >= max.max(1) || !bytes.try_add(bson_size(f)) {
                            return Ok(out);
                        }
                        if let Some(f) = self.pending_fragments.pop_front() {
                            self.last_token = f.get_document("_id").cloned().unwrap_or_default();
                            out.push(f);
                        }
                    }
                    continue;
                }
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
        if e.op.is_expanded() && !self.show_expanded {
            return Ok(None);
        }
        let ns = if e.coll.is_empty() {
            doc! {"db": e.db.clone()}
        } else {
            doc! {"db": e.db.clone(), "coll": e.coll.clone()}
        };
        let mut ev = doc! {"_id": e.event_token()};
        let invalidates = match &e.op {
            OpKind::Noop => return Ok(None),
            OpKind::Insert { doc } => {
                self.head(&mut ev, "insert", e);
                ev.insert("fullDocument", doc.clone());
                ev.insert("ns", ns);
                ev.insert(
                    "documentKey",
                    doc! {"_id": doc.get("_id").cloned().unwrap_or(Bson::Null)},
                );
                false
            }
            OpKind::Update { key, desc } => {
                self.head(&mut ev, "update", e);
                ev.insert("ns", ns);
                ev.insert("documentKey", doc! {"_id": key.clone()});
                ev.insert("updateDescription", desc.to_document());
                let post = match self.full_document {
                    FullDocument::Default => None,
                    // The document as it is now, whatever happened since.
                    FullDocument::UpdateLookup => Some(
                        dbs.get(&e.db)
                            .and_then(|d| d.collections.get(&e.coll))
                            .and_then(|c| c.find_by_id(key))
                            .map(|(_, d)| d.clone()),
                    ),
                    // The post-image recorded with the write (changeStreamPreAndPostImages).
                    FullDocument::WhenAvailable | FullDocument::Required => {
                        Some(e.extra.post_image.clone())
                    }
                };
                match post {
                    None => {}
                    Some(Some(d)) => {
                        ev.insert("fullDocument", d);
                    }
                    Some(None) if self.full_document == FullDocument::Required => {
                        return Err(CommandError::new(
                            codes::NO_MATCHING_DOCUMENT,
                            format!(
                                "Change stream was configured to require a post-image for all update events, but the post-image was not found for event: {}",
                                image_not_found(&ev)
                            ),
                        ))
                    }
                    Some(None) => {
                        ev.insert("fullDocument", Bson::Null);
                    }
                }
                self.add_pre_image(&mut ev, e)?;
                false
            }
            OpKind::Replace { key, doc } => {
                self.head(&mut ev, "replace", e);
                ev.insert("fullDocument", doc.clone());
                ev.insert("ns", ns);
                ev.insert("documentKey", doc! {"_id": key.clone()});
                self.add_pre_image(&mut ev, e)?;
                false
            }
            OpKind::Delete { key } => {
                self.head(&mut ev, "delete", e);
                ev.insert("ns", ns);
                ev.insert("documentKey", doc! {"_id": key.clone()});
                self.add_pre_image(&mut ev, e)?;
                false
            }
            OpKind::Drop => {
                self.head(&mut ev, "drop", e);
                ev.insert("ns", ns);
                self.invalidated_by(&e.op)
            }
            OpKind::Rename { to_db, to_coll } => {
                self.head(&mut ev, "rename", e);
                ev.insert("ns", ns);
                let to = doc! {"db": to_db.clone(), "coll": to_coll.clone()};
                ev.insert("to", to.clone());
                if self.show_expanded {
                    ev.insert("operationDescription", doc! {"to": to});
                }
                self.invalidated_by(&e.op)
            }
            OpKind::DropDatabase => {
                self.head(&mut ev, "dropDatabase", e);
                ev.insert("ns", ns);
                self.invalidated_by(&e.op)
            }
            OpKind::Create { options } => {
                self.head(&mut ev, "create", e);
                ev.insert("ns", ns);
                let mut desc = options.clone();
                desc.insert("idIndex", doc! {"v": 2, "key": {"_id": 1}, "name": "_id_"});
                ev.insert("operationDescription", desc);
                false
            }
            OpKind::CreateIndexes { indexes } | OpKind::DropIndexes { indexes } => {
                let op = match e.op {
                    OpKind::CreateIndexes { .. } => "createIndexes",
                    _ => "dropIndexes",
                };
                self.head(&mut ev, op, e);
                ev.insert("ns", ns);
                ev.insert("operationDescription", doc! {"indexes": indexes.clone()});
                false
            }
            OpKind::Modify {
                description,
                before,
            } => {
                self.head(&mut ev, "modify", e);
                ev.insert("ns", ns);
                ev.insert("operationDescription", description.clone());
                ev.insert("stateBeforeChange", before.clone());
                false
            }
        };
        Ok(Some((ev, invalidates)))
    }

    /// `fullDocumentBeforeChange` of an update, replace or delete event.
    fn add_pre_image(&self, ev: &mut Document, e: &Entry) -> CommandResult<()> {
        match (self.before_change, &e.extra.pre_image) {
            (BeforeChange::Off, _) => {}
            (_, Some(pre)) => {
                ev.insert("fullDocumentBeforeChange", pre.clone());
            }
            (BeforeChange::Required, None) => {
                return Err(CommandError::new(
                    codes::NO_MATCHING_DOCUMENT,
                    format!(
                        "Change stream was configured to require a pre-image for all update, delete and replace events, but the pre-image was not found for event: {}",
                        image_not_found(ev)
                    ),
                ))
            }
            (BeforeChange::WhenAvailable, None) => {
                ev.insert("fullDocumentBeforeChange", Bson::Null);
            }
        }
        Ok(())
    }

    /// `operationType`, `clusterTime`, `wallTime` and, with expanded events, `collectionUUID`.
    fn head(&self, ev: &mut Document, op: &str, e: &Entry) {
        ev.insert("operationType", op);
        ev.insert("clusterTime", e.ts);
        ev.insert("wallTime", e.wall);
        if self.show_expanded {
            if let Some(uuid) = &e.extra.uuid {
                ev.insert("collectionUUID", uuid.clone());
            }
        }
    }
}

/// What MongoDB's missing-image errors say about the event.
fn image_not_found(ev: &Document) -> String {
    let ns = ev
        .get_document("ns")
        .map(|n| n.to_string())
        .unwrap_or_default();
    let key = ev
        .get_document("documentKey")
        .map(|k| k.to_string())
        .unwrap_or_default();
    format!("{{ns: {ns}, documentKey: {key}}}")
}

/// The one tick after `ts` in cluster-time order (MongoDB's `LogicalTime::addTicks(1)`).
pub fn next_tick(ts: Timestamp) -> Timestamp {
    match ts.increment.checked_add(1) {
        Some(increment) => Timestamp {
            time: ts.time,
            increment,
        },
        None => Timestamp {
            time: ts.time.saturating_add(1),
            increment: 0,
        },
    }
}

/// Splits an event larger than MongoDB's limit into fragments, as `$changeStreamSplitLargeEvent`
/// does: the top-level fields in order, as many to a fragment as fit, each fragment carrying its
/// own resume token and `splitEvent: {fragment, of}`. A single field too large for a fragment
/// fails with `BSONObjectTooLarge`, as on MongoDB.
fn split_event(event: &Document) -> CommandResult<Vec<Document>> {
    let token = event.get_document("_id").cloned().unwrap_or_default();
    // Room for the postBatchResumeToken in the reply, as MongoDB leaves.
    let limit = MAX_INTERNAL_BSON_OBJECT_SIZE.saturating_sub(bson_size(&token));
    let header = bson_size(&doc! {
        "_id": fragment_token(&token, 1),
        "splitEvent": {"fragment": 1, "of": 1},
    });
    let mut groups: Vec<Vec<(String, Bson)>> = vec![Vec::new()];
    let mut size = header;
    for (k, v) in event.iter().filter(|(k, _)| k.as_str() != "_id") {
        let field = bson_size(&doc! {k.clone(): v.clone()}) - 5;
        if header + field > limit {
            return Err(too_large(event, bson_size(event)));
        }
        let current = groups.last().map_or(0, Vec::len);
        if size + field > limit && current > 0 {
            groups.push(Vec::new());
            size = header;
        }
        size += field;
        if let Some(g) = groups.last_mut() {
            g.push((k.clone(), v.clone()));
        }
    }
    let of = groups.len() as i32;
    Ok(groups
        .into_iter()
        .enumerate()
        .map(|(i, fields)| {
            let n = i as u16 + 1;
            let mut d = doc! {
                "_id": fragment_token(&token, n),
                "splitEvent": {"fragment": n as i32, "of": of},
            };
            d.extend(fields);
            d
        })
        .collect())
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
