//! Reads and writes: insert, find/getMore/killCursors, update, delete, findAndModify, count.
//! Every write appends to the oplog under the same lock that changes the data, so change
//! streams see writes in exactly the order they committed.

use super::plan::{self, Plan, PlanRequest};
use super::{batch_size, bool_arg, check_fields, collection_arg, cursor_reply, doc_arg, int_arg};
use crate::cursor::{BatchBytes, Cursor, CursorKind};
use crate::error::{codes, is_resumable_change_stream_code, CommandError, CommandResult};
use crate::oplog::{EntryExtra, OpKind};
use crate::query::diff::update_description;
use crate::query::filter::Filter;
use crate::query::projection::Projection;
use crate::query::sort::SortSpec;
use crate::query::update::{upsert_seed, Update};
use crate::state::{OpCounters, Shared, State};
use bson::{doc, oid::ObjectId, Bson, Document};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

const DEFAULT_FIRST_BATCH: usize = 101;
/// A change-stream getMore without maxTimeMS waits this long, as an awaitData cursor does.
const DEFAULT_AWAIT: Duration = Duration::from_secs(1);

fn array_of_docs<'a>(body: &'a Document, key: &str) -> CommandResult<Vec<&'a Document>> {
    let arr = body.get_array(key).map_err(|_| {
        CommandError::failed_to_parse(format!("BSON field '{key}' is missing or not an array"))
    })?;
    arr.iter()
        .map(|v| match v {
            Bson::Document(d) => Ok(d),
            _ => Err(CommandError::type_mismatch(format!(
                "BSON field '{key}' must contain objects"
            ))),
        })
        .collect()
}

/// Puts `_id` first, generating an ObjectId when absent, as mongod does on insert.
fn with_id_first(doc: &Document) -> Document {
    let id = doc
        .get("_id")
        .cloned()
        .unwrap_or_else(|| Bson::ObjectId(ObjectId::new()));
    let mut out = Document::new();
    out.insert("_id", id);
    for (k, v) in doc {
        if k != "_id" {
            out.insert(k.clone(), v.clone());
        }
    }
    out
}

/// The `_id` types mongod refuses on insert (`fixDocumentForInsert`): they cannot be indexed as
/// a single unique key.
fn check_insertable_id(doc: &Document) -> CommandResult<()> {
    let what = match doc.get("_id") {
        Some(Bson::Array(_)) => "an array",
        Some(Bson::RegularExpression(_)) => "a regex",
        Some(Bson::Undefined) => "a undefined",
        _ => return Ok(()),
    };
    Err(CommandError::bad_value(format!("can't use {what} for _id")))
}

/// MongoDB's `BSONObjMaxUserSize`: no stored document may be larger.
const MAX_DOCUMENT_SIZE: usize = crate::wire::MAX_BSON_OBJECT_SIZE;

fn bson_len(d: &Document) -> usize {
    bson::to_vec(d).map(|v| v.len()).unwrap_or(0)
}

/// What mongod refuses to store (`fixDocumentForInsert`, the update and upsert stages): an
/// `_id` that is an operator object (53 InvalidIdField) and documents over 16 MiB, each with the
/// code of the path that meets it (`code`: 2 on insert, 17419 after an update, 17420 on upsert).
fn check_storable(doc: &Document, code: i32) -> CommandResult<()> {
    if let Some(Bson::Document(id)) = doc.get("_id") {
        if let Some(k) = id.keys().find(|k| k.starts_with('$')) {
            return Err(CommandError::new(
                codes::INVALID_ID_FIELD,
                format!(
                    "_id fields may not contain '$'-prefixed fields: {k} is not valid for storage."
                ),
            ));
        }
    }
    let len = bson_len(doc);
    if len > MAX_DOCUMENT_SIZE {
        let message = match code {
            codes::BAD_VALUE => format!(
                "object to insert too large. size in bytes: {len}, max size: {MAX_DOCUMENT_SIZE}"
            ),
            17420 => format!("Document to upsert is larger than {MAX_DOCUMENT_SIZE}"),
            _ => format!("Resulting document after update is larger than {MAX_DOCUMENT_SIZE}"),
        };
        return Err(CommandError::new(code, message));
    }
    Ok(())
}

/// Validation against the collection's validator, unless the command bypasses it.
fn check_valid(
    st: &State,
    db: &str,
    coll: &str,
    new: &Document,
    old: Option<&Document>,
    bypass: bool,
) -> CommandResult<()> {
    match st.collection(db, coll) {
        Some(c) if !bypass => c.validate(new, old),
        _ => Ok(()),
    }
}

fn write_error(index: usize, e: &CommandError) -> Document {
    let mut d = doc! {"index": index as i32, "code": e.code, "errmsg": e.message.clone()};
    for (k, v) in e.extra.iter().flat_map(|x| x.iter()) {
        d.insert(k.clone(), v.clone());
    }
    d
}

pub fn insert(shared: &Shared, body: &Document, db: &str) -> CommandResult<Document> {
    let coll = collection_arg(body, "insert")?;
    check_fields(
        body,
        "insert",
        true,
        &["documents", "ordered", "bypassDocumentValidation"],
        &[],
    )?;
    let docs = array_of_docs(body, "documents")?;
    let ordered = body.get_bool("ordered").unwrap_or(true);
    let bypass = bool_arg(body, "bypassDocumentValidation");
    let mut n = 0i32;
    let mut errors = Vec::new();
    {
        let mut st = shared.lock();
        for (i, d) in docs.iter().enumerate() {
            let doc = with_id_first(d);
            let res = check_insertable_id(&doc)
                .and_then(|()| check_storable(&doc, codes::BAD_VALUE))
                .and_then(|()| st.collection_or_create(db, coll).map(|_| ()))
                .and_then(|()| check_valid(&st, db, coll, &doc, None, bypass))
                .and_then(|()| check_capped_fits(&st, db, coll, &doc))
                .and_then(|()| {
                    st.collection_or_create(db, coll)
                        .and_then(|c| c.insert(doc.clone()))
                });
            match res {
                Ok(_) => {
                    st.log(db, coll, OpKind::Insert { doc });
                    trim_capped(&mut st, db, coll);
                    n += 1;
                }
                Err(e) => {
                    errors.push(write_error(i, &e));
                    if ordered {
                        break;
                    }
                }
            }
        }
    }
    OpCounters::add(&shared.counters.insert, n as i64);
    let mut reply = doc! {"n": n};
    if !errors.is_empty() {
        reply.insert("writeErrors", errors);
    }
    Ok(reply)
}

/// Matching documents in natural order (or reversed), then sorted, skipped, limited.
/// Runs a query: the plan's scan (collection or hinted index, see [`plan::choose`]), the filter,
/// then the sort, skip and limit.
#[allow(clippy::too_many_arguments)]
pub(crate) fn query(
    st: &State,
    db: &str,
    coll: &str,
    filter: &Filter,
    sort: Option<&Document>,
    skip: usize,
    limit: Option<usize>,
    req: &PlanRequest,
) -> CommandResult<Vec<Document>> {
    let is_oplog = db == "local" && coll == "oplog.rs";
    let ns = format!("{db}.{coll}");
    let plan = plan::choose(
        if is_oplog {
            None
        } else {
            st.collection(db, coll)
        },
        &ns,
        req,
    )?;
    let oplog;
    let source: Box<dyn DoubleEndedIterator<Item = &Document>> = if is_oplog {
        oplog = oplog_documents(st);
        Box::new(oplog.iter())
    } else {
        let Some(c) = st.collection(db, coll) else {
            return Ok(Vec::new());
        };
        Box::new(c.iter().map(|(_, d)| d))
    };
    let natural = sort.and_then(|s| s.get("$natural")).map(|v| {
        v.as_f64().unwrap_or(1.0) < 0.0 || v.as_i32() == Some(-1) || v.as_i64() == Some(-1)
    });
    let sort_spec = match sort {
        Some(s) if natural.is_none() && !s.is_empty() => Some(SortSpec::parse(s)?),
        _ => None,
    };
    let index_scan = matches!(plan, Plan::IxScan { .. });
    // Without a sort, a collection scan stops as soon as skip + limit documents matched.
    let enough = if sort_spec.is_none() && !index_scan {
        limit.map(|l| l + skip)
    } else {
        None
    };
    let reverse = natural == Some(true) || matches!(plan, Plan::CollScan { reverse: true });
    let iter: Box<dyn Iterator<Item = &Document>> = if reverse {
        Box::new(source.rev())
    } else {
        source
    };
    let mut found: Vec<&Document> = Vec::new();
    for d in iter {
        if filter.matches(d) {
            found.push(d);
            if enough.is_some_and(|e| found.len() >= e) {
                break;
            }
        }
    }
    if index_scan {
        found = plan.order(found);
    }
    let mut out: Vec<Document> = found.into_iter().cloned().collect();
    if let Some(spec) = sort_spec {
        out.sort_by(|a, b| spec.compare(a, b));
    }
    let out: Vec<Document> = out
        .into_iter()
        .skip(skip)
        .take(limit.unwrap_or(usize::MAX))
        .collect();
    Ok(out)
}

/// Splits off one batch: at most `size` documents and about 16 MiB.
fn take_batch(rest: &mut VecDeque<Document>, size: Option<usize>) -> Vec<Document> {
    let max = size.filter(|s| *s > 0).unwrap_or(usize::MAX);
    let mut out = Vec::new();
    let mut bytes = BatchBytes::default();
    while out.len() < max {
        let Some(d) = rest.front() else { break };
        let len = bson::to_vec(d).map(|v| v.len()).unwrap_or(0);
        if !bytes.try_add(len) {
            break;
        }
        if let Some(d) = rest.pop_front() {
            out.push(d);
        }
    }
    out
}

pub fn find(shared: &Shared, body: &Document, db: &str) -> CommandResult<Document> {
    let coll = collection_arg(body, "find")?;
    check_fields(
        body,
        "find",
        true,
        &[
            "filter",
            "sort",
            "projection",
            "hint",
            "skip",
            "limit",
            "batchSize",
            "singleBatch",
            "min",
            "max",
            "allowDiskUse",
            "noCursorTimeout",
            "allowPartialResults",
            "oplogReplay",
        ],
        &[
            "collation",
            "let",
            "returnKey",
            "showRecordId",
            "tailable",
            "awaitData",
        ],
    )?;
    let filter_doc = doc_arg(body, "filter")?.unwrap_or_default();
    let filter = Filter::parse(&filter_doc)?;
    let sort = doc_arg(body, "sort")?;
    let projection = match doc_arg(body, "projection")? {
        Some(p) if !p.is_empty() => Some(Projection::parse(&p)?),
        _ => None,
    };
    let skip = int_arg(body, "skip")?.unwrap_or(0);
    if skip < 0 {
        return Err(CommandError::bad_value("skip value must be non-negative"));
    }
    let limit = int_arg(body, "limit")?;
    let mut single_batch = bool_arg(body, "singleBatch");
    let limit = match limit {
        Some(l) if l < 0 => {
            single_batch = true;
            Some((-l) as usize)
        }
        Some(0) | None => None,
        Some(l) => Some(l as usize),
    };
    let size = batch_size(int_arg(body, "batchSize")?)?;
    let ns = format!("{db}.{coll}");
    let plan_req = PlanRequest::from_command(body, true, "find")?;

    let mut st = shared.lock();
    let docs = query(
        &st,
        db,
        coll,
        &filter,
        sort.as_ref(),
        skip as usize,
        limit,
        &plan_req,
    )?;
    let docs: VecDeque<Document> = match &projection {
        Some(p) => docs.iter().map(|d| p.apply(d)).collect(),
        None => docs.into(),
    };
    // A reached limit or a blocking sort (anything but `_id`, which its index provides) knows
    // its end; a scan only finds it by looking for one more document.
    let eof_known = limit.is_some_and(|l| docs.len() >= l)
        || sort
            .as_ref()
            .is_some_and(|s| s.keys().any(|k| k != "_id" && k != "$natural"));
    let mut rest = docs;
    let first_size = size.unwrap_or(DEFAULT_FIRST_BATCH);
    let first = take_batch(
        &mut rest,
        Some(first_size).filter(|s| *s > 0).or(Some(usize::MAX)),
    );
    let filled = first_size > 0 && first.len() == first_size;
    let first = if size == Some(0) {
        // batchSize 0: open the cursor and return nothing yet.
        let mut all: VecDeque<Document> = first.into();
        all.extend(rest.drain(..));
        rest = all;
        Vec::new()
    } else {
        first
    };
    // batchSize 0 opens the cursor without running the query yet, so it cannot know its end.
    let exhausted = size != Some(0) && rest.is_empty() && (eof_known || !filled);
    let id = if exhausted || single_batch {
        0
    } else {
        st.cursors.insert(Cursor {
            ns: ns.clone(),
            kind: CursorKind::Find { rest, eof_known },
            batch_size: size,
            last_used: Instant::now(),
            no_timeout: bool_arg(body, "noCursorTimeout"),
        })
    };
    Ok(cursor_reply(id, &ns, first, true, None))
}

/// `local.oplog.rs` as a collection, oldest entry first, for tools that read the oplog window
/// (`find` with filters, sort, `$natural`; `aggregate`). A standalone `mongod` keeps no oplog:
/// the collection does not exist there.
pub(crate) fn oplog_documents(st: &State) -> Vec<Document> {
    if st.standalone {
        return Vec::new();
    }
    st.oplog
        .from_seq(0)
        .map(|e| e.to_oplog_document())
        .collect()
}

pub async fn get_more(shared: &Arc<Shared>, body: &Document, db: &str) -> CommandResult<Document> {
    let id = match body.get("getMore") {
        Some(Bson::Int64(i)) => *i,
        Some(Bson::Int32(i)) => *i as i64,
        _ => {
            return Err(CommandError::type_mismatch(
                "getMore must be a 64-bit integer cursor id",
            ))
        }
    };
    let coll = collection_arg(body, "collection")?;
    let size = batch_size(int_arg(body, "batchSize")?)?;
    let max_time = int_arg(body, "maxTimeMS")?.map(|ms| Duration::from_millis(ms.max(0) as u64));
    let ns = format!("{db}.{coll}");
    let deadline = Instant::now() + max_time.unwrap_or(DEFAULT_AWAIT);
    let not_found =
        || CommandError::new(codes::CURSOR_NOT_FOUND, format!("cursor id {id} not found"));

    {
        let mut st = shared.lock();
        let cursor = st.cursors.get_mut(id).ok_or_else(not_found)?;
        if cursor.ns != ns {
            return Err(CommandError::new(
                codes::UNAUTHORIZED,
                format!("Requested getMore on namespace '{ns}', but cursor belongs to a different namespace {}", cursor.ns),
            ));
        }
        let is_change = matches!(cursor.kind, CursorKind::Change(_));
        if let Some(code) = st.failpoints.fail_get_more() {
            let mut err = CommandError::new(
                code,
                "Failing getMore via 'failGetMoreAfterCursorCheckout' failpoint",
            );
            if is_change && is_resumable_change_stream_code(code) {
                err = err.with_label("ResumableChangeStreamError");
            }
            return Err(err);
        }
    }
    loop {
        // The guard lives in this block so it is never held across the wait below.
        let mut head = {
            let mut st = shared.lock();
            let State {
                oplog,
                dbs,
                cursors,
                ..
            } = &mut *st;
            let Some(cursor) = cursors.get_mut(id) else {
                return Err(not_found());
            };
            let size = size.or(cursor.batch_size);
            match &mut cursor.kind {
                CursorKind::Find { rest, eof_known } => {
                    let batch = take_batch(rest, size);
                    let filled = size.is_some_and(|n| n > 0 && batch.len() == n);
                    let done = rest.is_empty() && (*eof_known || !filled);
                    if done {
                        cursors.remove(id);
                    }
                    return Ok(cursor_reply(
                        if done { 0 } else { id },
                        &ns,
                        batch,
                        false,
                        None,
                    ));
                }
                CursorKind::Change(cs) => {
                    let batch = match cs.next_batch(oplog, dbs, size.unwrap_or(usize::MAX)) {
                        Ok(b) => b,
                        Err(e) => {
                            cursors.remove(id);
                            return Err(e.with_context("Executor error during getMore"));
                        }
                    };
                    let finished = cs.is_finished();
                    if !batch.is_empty() || finished || Instant::now() >= deadline {
                        let pbrt = cs.post_batch_resume_token();
                        let out_id = if finished {
                            cursors.remove(id);
                            0
                        } else {
                            id
                        };
                        return Ok(cursor_reply(out_id, &ns, batch, false, Some(pbrt)));
                    }
                }
            }
            // Subscribed while still holding the lock, so a write that lands after we unlock
            // is seen as a change.
            shared.head.subscribe()
        };
        // Nothing yet: wait for the oplog to grow, the deadline, or shutdown.
        let mut shutdown = shared.shutdown.clone();
        let remaining = deadline.saturating_duration_since(Instant::now());
        tokio::select! {
            _ = tokio::time::sleep(remaining) => {}
            _ = head.changed() => {}
            _ = crate::state::stopped(&mut shutdown) => {
                return Err(CommandError::new(codes::SHUTDOWN_IN_PROGRESS, "The server is in quiesce mode and will shut down")
                    .with_label("ResumableChangeStreamError"));
            }
        }
    }
}

pub fn kill_cursors(shared: &Shared, body: &Document, _db: &str) -> CommandResult<Document> {
    collection_arg(body, "killCursors")?;
    let ids = body.get_array("cursors").map_err(|_| {
        CommandError::failed_to_parse("BSON field 'cursors' is missing or not an array")
    })?;
    let mut killed = Vec::new();
    let mut not_found = Vec::new();
    let mut st = shared.lock();
    for v in ids {
        let id = match v {
            Bson::Int64(i) => *i,
            Bson::Int32(i) => *i as i64,
            _ => {
                return Err(CommandError::type_mismatch(
                    "cursor ids must be 64-bit integers",
                ))
            }
        };
        if st.cursors.remove(id).is_some() {
            killed.push(Bson::Int64(id));
        } else {
            not_found.push(Bson::Int64(id));
        }
    }
    Ok(
        doc! {"cursorsKilled": killed, "cursorsNotFound": not_found, "cursorsAlive": [], "cursorsUnknown": []},
    )
}

/// Applies one update to one stored document and logs it. Returns whether it changed.
fn apply_update(
    st: &mut State,
    db: &str,
    coll: &str,
    record: u64,
    update: &Update,
    bypass: bool,
) -> CommandResult<Option<Document>> {
    let Some(old) = st.collection(db, coll).and_then(|c| c.get(record)).cloned() else {
        return Ok(None);
    };
    let mut new = update.apply(&old, false)?;
    if let Update::Replacement(_) = update {
        // A replacement keeps the stored `_id`; one that names a different `_id` is an error.
        let old_id = old.get("_id").cloned().unwrap_or(Bson::Null);
        if let Some(id) = new.get("_id") {
            if !crate::query::compare::equal(id, &old_id) {
                return Err(immutable_id(&old_id));
            }
        }
        new.insert("_id", old_id);
        new = with_id_first(&new);
    } else if !new
        .get("_id")
        .zip(old.get("_id"))
        .is_some_and(|(a, b)| crate::query::compare::equal(a, b))
    {
        return Err(immutable_id(old.get("_id").unwrap_or(&Bson::Null)));
    }
    if new == old {
        return Ok(None);
    }
    check_storable(&new, 17419)?;
    check_valid(st, db, coll, &new, Some(&old), bypass)?;
    let key = old.get("_id").cloned().unwrap_or(Bson::Null);
    let mut images = false;
    if let Some(c) = st.collection_mut(db, coll) {
        c.replace(record, new.clone())?;
        images = c.pre_images_enabled();
    }
    let op = match update {
        Update::Replacement(_) => OpKind::Replace {
            key,
            doc: new.clone(),
        },
        _ => OpKind::Update {
            key,
            desc: update_description(&old, &new),
        },
    };
    let extra = match images {
        true => EntryExtra {
            pre_image: Some(old),
            post_image: Some(new.clone()),
            ..EntryExtra::default()
        },
        false => EntryExtra::default(),
    };
    st.log_with(db, coll, op, extra);
    Ok(Some(new))
}

/// Logs the delete of `doc`, with its pre-image when the collection records them.
fn log_delete(st: &mut State, db: &str, coll: &str, doc: Document) {
    let key = doc.get("_id").cloned().unwrap_or(Bson::Null);
    let images = st
        .collection(db, coll)
        .is_some_and(|c| c.pre_images_enabled());
    let extra = EntryExtra {
        pre_image: images.then_some(doc),
        ..EntryExtra::default()
    };
    st.log_with(db, coll, OpKind::Delete { key }, extra);
}

fn immutable_id(old: &Bson) -> CommandError {
    CommandError::new(
        codes::IMMUTABLE_FIELD,
        format!("Performing an update on the path '_id' would modify the immutable field '_id' (was {old})"),
    )
}

/// Inserts the document an upsert creates; returns it.
fn upsert_insert(
    st: &mut State,
    db: &str,
    coll: &str,
    filter: &Document,
    update: &Update,
    bypass: bool,
) -> CommandResult<Document> {
    let doc = match update {
        Update::Replacement(r) => {
            let mut d = r.clone();
            if !d.contains_key("_id") {
                if let Some(id) = upsert_seed(filter).get("_id") {
                    d.insert("_id", id.clone());
                }
            }
            d
        }
        _ => update.apply(&upsert_seed(filter), true)?,
    };
    let doc = with_id_first(&doc);
    check_insertable_id(&doc)?;
    check_storable(&doc, 17420)?;
    st.collection_or_create(db, coll)?;
    check_valid(st, db, coll, &doc, None, bypass)?;
    check_capped_fits(st, db, coll, &doc)?;
    st.collection_or_create(db, coll)?.insert(doc.clone())?;
    st.log(db, coll, OpKind::Insert { doc: doc.clone() });
    trim_capped(st, db, coll);
    Ok(doc)
}

/// A capped collection's limits, if it is one.
fn capped_limits(st: &State, db: &str, coll: &str) -> Option<(u64, Option<u64>)> {
    let c = st.collection(db, coll)?;
    if !matches!(c.options.get("capped"), Some(Bson::Boolean(true))) {
        return None;
    }
    super::ddl::capped_limits_of(&c.options).ok()
}

/// A document larger than a capped collection's whole size cannot be inserted.
fn check_capped_fits(st: &State, db: &str, coll: &str, doc: &Document) -> CommandResult<()> {
    match capped_limits(st, db, coll) {
        Some((size, _)) if crate::oplog::bson_size(doc) > size => Err(CommandError::bad_value(
            "object to insert exceeds cappedMaxSize",
        )),
        _ => Ok(()),
    }
}

/// After an insert into a capped collection: removes the oldest documents (never the newest)
/// until it is within its size and document count, each removal a replicated delete (an oplog
/// entry, so change streams see it), as MongoDB 7.0 does.
fn trim_capped(st: &mut State, db: &str, coll: &str) {
    let Some((size, max)) = capped_limits(st, db, coll) else {
        return;
    };
    loop {
        let Some(c) = st.collection(db, coll) else {
            return;
        };
        let count = c.len() as u64;
        let bytes: u64 = c.iter().map(|(_, d)| crate::oplog::bson_size(d)).sum();
        if count <= 1 || (bytes <= size && max.is_none_or(|m| count <= m)) {
            return;
        }
        let Some(oldest) = c.iter().next().map(|(r, _)| r) else {
            return;
        };
        match st.collection_mut(db, coll).and_then(|c| c.remove(oldest)) {
            Some(doc) => log_delete(st, db, coll, doc),
            None => return,
        }
    }
}

fn matching_records(
    st: &State,
    db: &str,
    coll: &str,
    filter: &Filter,
    sort: Option<&SortSpec>,
    first_only: bool,
    req: &PlanRequest,
) -> CommandResult<Vec<u64>> {
    let plan = plan::choose(st.collection(db, coll), &format!("{db}.{coll}"), req)?;
    let Some(c) = st.collection(db, coll) else {
        return Ok(Vec::new());
    };
    let in_order = matches!(plan, Plan::CollScan { reverse: false });
    let mut recs: Vec<(u64, &Document)> = Vec::new();
    for (r, d) in c.iter() {
        if filter.matches(d) {
            recs.push((r, d));
            if first_only && sort.is_none() && in_order {
                break;
            }
        }
    }
    let mut recs = plan.order_by(recs, |(_, d)| *d);
    if let Some(s) = sort {
        recs.sort_by(|a, b| s.compare(a.1, b.1));
    }
    let mut out: Vec<u64> = recs.into_iter().map(|(r, _)| r).collect();
    if first_only {
        out.truncate(1);
    }
    Ok(out)
}

pub fn update(shared: &Shared, body: &Document, db: &str) -> CommandResult<Document> {
    let coll = collection_arg(body, "update")?;
    let updates = array_of_docs(body, "updates")?;
    check_fields(
        body,
        "update",
        true,
        &["updates", "ordered", "bypassDocumentValidation"],
        &["let"],
    )?;
    for u in &updates {
        check_fields(
            u,
            "update.updates",
            false,
            &["q", "u", "multi", "upsert", "hint"],
            &["collation", "arrayFilters", "c", "sort"],
        )?;
    }
    let ordered = body.get_bool("ordered").unwrap_or(true);
    let bypass = bool_arg(body, "bypassDocumentValidation");
    let (mut n, mut modified) = (0i32, 0i32);
    let mut upserted = Vec::new();
    let mut errors = Vec::new();
    let mut st = shared.lock();
    for (i, u) in updates.iter().enumerate() {
        let res = (|| -> CommandResult<()> {
            let q = doc_arg(u, "q")?.unwrap_or_default();
            let filter = Filter::parse(&q)?;
            let spec = u.get("u").ok_or_else(|| {
                CommandError::failed_to_parse("BSON field 'update.updates.u' is missing")
            })?;
            let update = Update::parse(spec)?;
            let multi = bool_arg(u, "multi");
            if multi && matches!(update, Update::Replacement(_)) {
                return Err(CommandError::failed_to_parse(
                    "multi update is not supported for replacement-style update",
                ));
            }
            let req = PlanRequest::from_command(u, false, "update.updates")?;
            let recs = matching_records(&st, db, coll, &filter, None, !multi, &req)?;
            if recs.is_empty() && bool_arg(u, "upsert") {
                let doc = upsert_insert(&mut st, db, coll, &q, &update, bypass)?;
                upserted.push(
                    doc! {"index": i as i32, "_id": doc.get("_id").cloned().unwrap_or(Bson::Null)},
                );
                n += 1;
                return Ok(());
            }
            for rec in recs {
                n += 1;
                if apply_update(&mut st, db, coll, rec, &update, bypass)?.is_some() {
                    modified += 1;
                }
            }
            Ok(())
        })();
        if let Err(e) = res {
            errors.push(write_error(i, &e));
            if ordered {
                break;
            }
        }
    }
    drop(st);
    OpCounters::add(&shared.counters.update, updates.len() as i64);
    let mut reply = doc! {"n": n, "nModified": modified};
    if !upserted.is_empty() {
        reply.insert("upserted", upserted);
    }
    if !errors.is_empty() {
        reply.insert("writeErrors", errors);
    }
    Ok(reply)
}

pub fn delete(shared: &Shared, body: &Document, db: &str) -> CommandResult<Document> {
    let coll = collection_arg(body, "delete")?;
    let deletes = array_of_docs(body, "deletes")?;
    check_fields(body, "delete", true, &["deletes", "ordered"], &["let"])?;
    for d in &deletes {
        check_fields(
            d,
            "delete.deletes",
            false,
            &["q", "limit", "hint"],
            &["collation"],
        )?;
    }
    let ordered = body.get_bool("ordered").unwrap_or(true);
    let mut n = 0i32;
    let mut errors = Vec::new();
    let mut st = shared.lock();
    for (i, d) in deletes.iter().enumerate() {
        let res = (|| -> CommandResult<()> {
            let q = doc_arg(d, "q")?.unwrap_or_default();
            let filter = Filter::parse(&q)?;
            let limit = int_arg(d, "limit")?.unwrap_or(0);
            if limit != 0 && limit != 1 {
                return Err(CommandError::failed_to_parse(
                    "The limit field in delete objects must be 0 or 1",
                ));
            }
            let req = PlanRequest::from_command(d, false, "delete.deletes")?;
            for rec in matching_records(&st, db, coll, &filter, None, limit == 1, &req)? {
                if let Some(doc) = st.collection_mut(db, coll).and_then(|c| c.remove(rec)) {
                    log_delete(&mut st, db, coll, doc);
                    n += 1;
                }
            }
            Ok(())
        })();
        if let Err(e) = res {
            errors.push(write_error(i, &e));
            if ordered {
                break;
            }
        }
    }
    drop(st);
    OpCounters::add(&shared.counters.delete, deletes.len() as i64);
    let mut reply = doc! {"n": n};
    if !errors.is_empty() {
        reply.insert("writeErrors", errors);
    }
    Ok(reply)
}

pub fn find_and_modify(
    shared: &Shared,
    body: &Document,
    db: &str,
    name: &str,
) -> CommandResult<Document> {
    let coll = collection_arg(body, name)?;
    let q = doc_arg(body, "query")?.unwrap_or_default();
    check_fields(
        body,
        name,
        true,
        &[
            "query",
            "sort",
            "remove",
            "update",
            "new",
            "fields",
            "upsert",
            "bypassDocumentValidation",
            "hint",
        ],
        &["collation", "arrayFilters", "let"],
    )?;
    let filter = Filter::parse(&q)?;
    let sort = match doc_arg(body, "sort")? {
        Some(s) if !s.is_empty() => Some(SortSpec::parse(&s)?),
        _ => None,
    };
    let fields = match doc_arg(body, "fields")? {
        Some(f) if !f.is_empty() => Some(Projection::parse(&f)?),
        _ => None,
    };
    let remove = bool_arg(body, "remove");
    let bypass = bool_arg(body, "bypassDocumentValidation");
    let return_new = bool_arg(body, "new");
    let upsert = bool_arg(body, "upsert");
    let update = match body.get("update") {
        Some(u) if !remove => Some(Update::parse(u)?),
        Some(_) => {
            return Err(CommandError::failed_to_parse(
                "Cannot specify both an update and remove=true",
            ))
        }
        None if remove => None,
        None => {
            return Err(CommandError::failed_to_parse(
                "Either an update or remove=true must be specified",
            ))
        }
    };
    let project = |d: Document| match &fields {
        Some(p) => p.apply(&d),
        None => d,
    };
    let req = PlanRequest::from_command(body, false, name)?;
    let mut st = shared.lock();
    let rec = matching_records(&st, db, coll, &filter, sort.as_ref(), true, &req)?
        .first()
        .copied();
    let reply = match (rec, update) {
        (Some(rec), None) => {
            let doc = st.collection_mut(db, coll).and_then(|c| c.remove(rec));
            if let Some(d) = &doc {
                log_delete(&mut st, db, coll, d.clone());
            }
            OpCounters::add(&shared.counters.delete, 1);
            doc! {"lastErrorObject": {"n": 1}, "value": doc.map(|d| Bson::Document(project(d))).unwrap_or(Bson::Null)}
        }
        (None, None) => doc! {"lastErrorObject": {"n": 0}, "value": Bson::Null},
        (Some(rec), Some(update)) => {
            let old = st.collection(db, coll).and_then(|c| c.get(rec)).cloned();
            let new = apply_update(&mut st, db, coll, rec, &update, bypass)?;
            let current = new.or_else(|| st.collection(db, coll).and_then(|c| c.get(rec)).cloned());
            let value = if return_new { current } else { old };
            OpCounters::add(&shared.counters.update, 1);
            doc! {"lastErrorObject": {"n": 1, "updatedExisting": true}, "value": value.map(|d| Bson::Document(project(d))).unwrap_or(Bson::Null)}
        }
        (None, Some(update)) if upsert => {
            let doc = upsert_insert(&mut st, db, coll, &q, &update, bypass)?;
            let id = doc.get("_id").cloned().unwrap_or(Bson::Null);
            OpCounters::add(&shared.counters.update, 1);
            let value = if return_new {
                Bson::Document(project(doc))
            } else {
                Bson::Null
            };
            doc! {"lastErrorObject": {"n": 1, "updatedExisting": false, "upserted": id}, "value": value}
        }
        (None, Some(_)) => {
            doc! {"lastErrorObject": {"n": 0, "updatedExisting": false}, "value": Bson::Null}
        }
    };
    Ok(reply)
}

pub fn count(shared: &Shared, body: &Document, db: &str) -> CommandResult<Document> {
    let coll = collection_arg(body, "count")?;
    check_fields(
        body,
        "count",
        true,
        &["query", "limit", "skip", "hint", "fields"],
        &["collation"],
    )?;
    let q = doc_arg(body, "query")?.unwrap_or_default();
    let filter = Filter::parse(&q)?;
    let skip = int_arg(body, "skip")?.unwrap_or(0).max(0) as usize;
    let limit = int_arg(body, "limit")?
        .filter(|l| *l != 0)
        .map(|l| l.unsigned_abs() as usize);
    let req = PlanRequest::from_command(body, false, "count")?;
    let st = shared.lock();
    let n = match st.collection(db, coll) {
        None => 0,
        Some(c) if q.is_empty() && req.hint.is_none() => c.len(),
        Some(_) => query(&st, db, coll, &filter, None, 0, None, &req)?.len(),
    };
    let n = n.saturating_sub(skip).min(limit.unwrap_or(usize::MAX));
    Ok(doc! {"n": n as i64})
}
