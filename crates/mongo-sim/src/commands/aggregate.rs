//! `aggregate`: ordinary pipelines over a collection, and change streams when the first stage
//! is `$changeStream` (on a collection, a database with `aggregate: 1`, or the whole cluster
//! from `admin` with `allChangesForCluster`).

use super::{batch_size, collection_arg, cursor_reply, int_arg};
use crate::changestream::{ChangeStream, Scope};
use crate::cursor::{Cursor, CursorKind};
use crate::error::{codes, CommandError, CommandResult};
use crate::query::pipeline::Pipeline;
use crate::state::{Shared, State};
use bson::{Bson, Document};
use std::collections::VecDeque;
use std::time::Instant;

const DEFAULT_FIRST_BATCH: usize = 101;

pub fn aggregate(shared: &Shared, body: &Document, db: &str) -> CommandResult<Document> {
    let stages: Vec<Document> = body
        .get_array("pipeline")
        .map_err(|_| {
            CommandError::type_mismatch("'pipeline' option must be specified as an array")
        })?
        .iter()
        .map(|s| match s {
            Bson::Document(d) => Ok(d.clone()),
            _ => Err(CommandError::type_mismatch(
                "Each element of the 'pipeline' array must be an object",
            )),
        })
        .collect::<CommandResult<_>>()?;
    let cursor_opts =
        match body.get("cursor") {
            Some(Bson::Document(d)) => d.clone(),
            Some(_) => {
                return Err(CommandError::type_mismatch(
                    "cursor field must be missing or an object",
                ))
            }
            None => return Err(CommandError::failed_to_parse(
                "The 'cursor' option is required, except for aggregate with the explain argument",
            )),
        };
    let size = batch_size(int_arg(&cursor_opts, "batchSize")?)?;
    let collection = match body.get("aggregate") {
        Some(Bson::String(_)) => Some(collection_arg(body, "aggregate")?.to_string()),
        Some(Bson::Int32(1)) | Some(Bson::Int64(1)) => None,
        Some(Bson::Double(d)) if *d == 1.0 => None,
        _ => {
            return Err(CommandError::failed_to_parse(
                "Invalid {aggregate: ...} argument: must be a collection name or 1",
            ))
        }
    };
    for (i, s) in stages.iter().enumerate() {
        if i > 0 && s.contains_key("$changeStream") {
            return Err(CommandError::new(
                40602,
                "$changeStream is only valid as the first stage in a pipeline.",
            ));
        }
    }
    match stages.first().and_then(|s| s.get("$changeStream")) {
        Some(opts) => {
            let opts = match opts {
                Bson::Document(d) => d.clone(),
                _ => {
                    return Err(CommandError::failed_to_parse(
                        "the $changeStream stage must be an object",
                    ))
                }
            };
            check_change_stream_read_concern(body)?;
            change_stream(shared, db, collection, &opts, &stages[1..], size)
        }
        None => {
            let coll = collection.ok_or_else(|| {
                CommandError::invalid_namespace(
                    "{aggregate: 1} is not valid for '$match' or any other stage mongo-sim supports",
                )
            })?;
            plain(shared, body, db, &coll, &stages, size)
        }
    }
}

/// Change streams read majority-committed data only. MongoDB upconverts an absent read concern
/// (or one without a level) to `majority` and refuses any other level with 72 InvalidOptions
/// (`LiteParsedDocumentSourceChangeStream::supportsReadConcern`).
fn check_change_stream_read_concern(body: &Document) -> CommandResult<()> {
    let level = match body.get("readConcern") {
        None | Some(Bson::Null) => return Ok(()),
        Some(Bson::Document(rc)) => match rc.get("level") {
            None => return Ok(()),
            Some(Bson::String(l)) => l.clone(),
            Some(other) => {
                return Err(CommandError::type_mismatch(format!(
                "BSON field 'readConcern.level' is the wrong type '{:?}', expected type 'string'",
                other.element_type()
            )))
            }
        },
        Some(other) => {
            return Err(CommandError::type_mismatch(format!(
                "BSON field 'readConcern' is the wrong type '{:?}', expected type 'object'",
                other.element_type()
            )))
        }
    };
    match level.as_str() {
        "majority" => Ok(()),
        "local" | "available" | "linearizable" | "snapshot" => Err(CommandError::new(
            codes::INVALID_OPTIONS,
            format!("Aggregation stage $changeStream cannot run with a readConcern other than 'majority'. Current readConcern: {level}"),
        )),
        other => Err(CommandError::failed_to_parse(format!(
            "{other} is not a valid read concern level"
        ))),
    }
}

fn change_stream(
    shared: &Shared,
    db: &str,
    collection: Option<String>,
    opts: &Document,
    rest: &[Document],
    size: Option<usize>,
) -> CommandResult<Document> {
    if shared.standalone {
        return Err(CommandError::new(
            codes::CHANGE_STREAM_NOT_REPLICA_SET,
            "The $changeStream stage is only supported on replica sets",
        ));
    }
    let all_cluster = opts.get_bool("allChangesForCluster").unwrap_or(false);
    let (scope, ns) = match (&collection, all_cluster) {
        (Some(_), true) | (None, true) if db != "admin" => {
            return Err(CommandError::new(
                codes::INVALID_OPTIONS,
                "A $changeStream with 'allChangesForCluster:true' may only be opened on the 'admin' database, and with no collection name",
            ))
        }
        (Some(_), true) => {
            return Err(CommandError::new(
                codes::INVALID_OPTIONS,
                "A $changeStream with 'allChangesForCluster:true' may only be opened on the 'admin' database, and with no collection name",
            ))
        }
        (None, true) => (Scope::Cluster, "admin.$cmd.aggregate".to_string()),
        (None, false) if db == "admin" => {
            return Err(CommandError::new(
                codes::INVALID_NAMESPACE,
                "$changeStream may not be opened on the internal admin database",
            ))
        }
        (None, false) => (Scope::Database { db: db.to_string() }, format!("{db}.$cmd.aggregate")),
        (Some(c), false) => (Scope::Collection { db: db.to_string(), coll: c.clone() }, format!("{db}.{c}")),
    };
    let mut st = shared.lock();
    let mut cs = ChangeStream::open(scope, opts, rest, &st)?;
    let first = match size.unwrap_or(DEFAULT_FIRST_BATCH) {
        0 => Vec::new(),
        n => {
            let State { oplog, dbs, .. } = &*st;
            cs.next_batch(oplog, dbs, n).map_err(|e| {
                e.with_context(&format!(
                    "Executor error during aggregate command on namespace: {ns}"
                ))
            })?
        }
    };
    let pbrt = cs.post_batch_resume_token();
    let id = if cs.is_finished() {
        0
    } else {
        st.cursors.insert(Cursor {
            ns: ns.clone(),
            kind: CursorKind::Change(Box::new(cs)),
            batch_size: None,
            last_used: Instant::now(),
        })
    };
    Ok(cursor_reply(id, &ns, first, true, Some(pbrt)))
}

fn plain(
    shared: &Shared,
    body: &Document,
    db: &str,
    coll: &str,
    stages: &[Document],
    size: Option<usize>,
) -> CommandResult<Document> {
    let pipeline = Pipeline::parse(stages)?;
    let req = super::plan::PlanRequest::from_command(body, false, "aggregate")?;
    let mut st = shared.lock();
    let docs: Vec<Document> = if db == "local" && coll == "oplog.rs" {
        super::crud::oplog_documents(&st)
    } else {
        let c = st.collection(db, coll);
        let plan = super::plan::choose(c, &format!("{db}.{coll}"), &req)?;
        let all: Vec<&Document> = c.iter().flat_map(|c| c.iter().map(|(_, d)| d)).collect();
        plan.order(all).into_iter().cloned().collect()
    };
    let mut rest: VecDeque<Document> = pipeline.run(docs)?.into();
    let n = size.unwrap_or(DEFAULT_FIRST_BATCH);
    let first: Vec<Document> = rest.drain(..n.min(rest.len())).collect();
    let ns = format!("{db}.{coll}");
    let id = if rest.is_empty() {
        0
    } else {
        st.cursors.insert(Cursor {
            ns: ns.clone(),
            kind: CursorKind::Find {
                rest,
                // The pipeline ran to its end before the first batch.
                eof_known: true,
            },
            batch_size: None,
            last_used: Instant::now(),
        })
    };
    Ok(cursor_reply(id, &ns, first, true, None))
}
