//! `aggregate`: ordinary pipelines over a collection, and change streams when the first stage
//! is `$changeStream` (on a collection, a database with `aggregate: 1`, or the whole cluster
//! from `admin` with `allChangesForCluster`).

use super::{batch_size, collection_arg, cursor_reply, int_arg};
use crate::changestream::{ChangeStream, Scope};
use crate::cursor::{Cursor, CursorKind};
use crate::error::{codes, CommandError, CommandResult};
use crate::query::pipeline::Pipeline;
use crate::state::{Shared, State};
use bson::{doc, Bson, Document};
use std::collections::VecDeque;
use std::time::Instant;

const DEFAULT_FIRST_BATCH: usize = 101;

pub fn aggregate(shared: &Shared, body: &Document, db: &str) -> CommandResult<Document> {
    super::check_fields(
        body,
        "aggregate",
        true,
        &[
            "pipeline",
            "cursor",
            "explain",
            "allowDiskUse",
            "hint",
            "bypassDocumentValidation",
        ],
        &["collation", "let"],
    )?;
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
            no_timeout: false,
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
    let coll_stats = match stages.first().and_then(|s| s.get("$collStats")) {
        Some(spec) => Some(coll_stats_stage(shared, db, coll, spec)?),
        None => None,
    };
    let stages = if coll_stats.is_some() {
        &stages[1..]
    } else {
        stages
    };
    let pipeline = Pipeline::parse(stages)?;
    let req = super::plan::PlanRequest::from_command(body, false, "aggregate")?;
    let mut st = shared.lock();
    let docs: Vec<Document> = if let Some(d) = coll_stats {
        vec![d]
    } else if db == "local" && coll == "oplog.rs" {
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
            no_timeout: false,
        })
    };
    Ok(cursor_reply(id, &ns, first, true, None))
}

/// `$collStats: {latencyStats: {histograms}, storageStats: {scale}, count: {}, queryExecStats: {}}`:
/// one document with the sections asked for, in MongoDB 7.0's shapes. `storageStats` and `count`
/// of a collection that does not exist are 26, as on MongoDB.
fn coll_stats_stage(shared: &Shared, db: &str, coll: &str, spec: &Bson) -> CommandResult<Document> {
    let Bson::Document(spec) = spec else {
        return Err(CommandError::failed_to_parse(format!(
            "$collStats must take a nested object but found: {spec}"
        )));
    };
    let ns = format!("{db}.{coll}");
    let mut out = doc! {
        "ns": ns.clone(),
        "host": shared.host.clone(),
        "localTime": bson::DateTime::now(),
    };
    let section = |key: &str| -> CommandResult<Document> {
        match spec.get(key) {
            Some(Bson::Document(d)) => Ok(d.clone()),
            Some(other) => Err(CommandError::type_mismatch(format!(
                "BSON field '$collStats.{key}' is the wrong type '{:?}', expected type 'object'",
                other.element_type()
            ))),
            None => Ok(Document::new()),
        }
    };
    for (key, _) in spec {
        match key.as_str() {
            "latencyStats" => {
                let opts = section(key)?;
                for k in opts.keys() {
                    if k != "histograms" {
                        return Err(CommandError::new(
                            codes::LOCATION_40415,
                            format!(
                                "BSON field '$collStats.latencyStats.{k}' is an unknown field."
                            ),
                        ));
                    }
                }
                let histograms = opts.get_bool("histograms").unwrap_or(false);
                let l = shared.lock().latency.get(&ns).copied().unwrap_or_default();
                let one = |(latency, ops): (u64, u64)| {
                    let mut d = doc! {"latency": latency as i64, "ops": ops as i64};
                    if histograms {
                        d.insert("histogram", Vec::<Bson>::new());
                    }
                    d
                };
                out.insert(
                    "latencyStats",
                    doc! {
                        "reads": one(l.reads),
                        "writes": one(l.writes),
                        "commands": one(l.commands),
                        "transactions": one((0, 0)),
                    },
                );
            }
            "storageStats" => {
                let opts = section(key)?;
                let mut cmd = doc! {"collStats": coll};
                for (k, v) in &opts {
                    match k.as_str() {
                        "scale" => {
                            cmd.insert("scale", v.clone());
                        }
                        "verbose" | "waitForLock" | "numericOnly" => {}
                        other => {
                            return Err(CommandError::new(
                                codes::LOCATION_40415,
                                format!(
                                "BSON field '$collStats.storageStats.{other}' is an unknown field."
                            ),
                            ))
                        }
                    }
                }
                let mut stats = super::admin::coll_stats(shared, &cmd, db).map_err(|e| {
                    e.with_context("Unable to retrieve storageStats in $collStats stage")
                })?;
                stats.remove("ns");
                out.insert("storageStats", stats);
            }
            "count" => {
                section(key)?;
                let st = shared.lock();
                let n = match st.collection(db, coll) {
                    Some(c) => c.len() as i64,
                    None => {
                        return Err(CommandError::new(
                            codes::NAMESPACE_NOT_FOUND,
                            format!("Unable to retrieve count in $collStats stage :: caused by :: Collection [{ns}] not found."),
                        ))
                    }
                };
                out.insert("count", n);
            }
            "queryExecStats" => {
                section(key)?;
                let scans = shared.lock().latency.get(&ns).map_or(0, |l| l.reads.1) as i64;
                out.insert(
                    "queryExecStats",
                    doc! {"collectionScans": {"total": scans, "nonTailable": scans}},
                );
            }
            other => {
                return Err(CommandError::new(
                    codes::LOCATION_40415,
                    format!("BSON field '$collStats.{other}' is an unknown field."),
                ))
            }
        }
    }
    Ok(out)
}
