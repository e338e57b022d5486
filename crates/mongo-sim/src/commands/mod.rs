//! Command dispatch. A command is a document whose first key names it; the reply is a document
//! with `ok`. Around every command the dispatcher applies the `failCommand` fail point, counts
//! it in `opcounters`, stamps `$clusterTime`/`operationTime` as a replica-set member does, and
//! wakes change streams when the oplog grew.

mod admin;
mod aggregate;
mod crud;
mod ddl;
mod explain;
mod handshake;
mod plan;

use crate::error::{codes, CommandError, CommandResult};
use crate::state::{OpCounters, Shared};
use bson::{doc, spec::BinarySubtype, Binary, Bson, Document};
use std::sync::Arc;

/// Per-connection facts some commands need.
#[derive(Debug, Default)]
pub struct Conn {
    pub id: i64,
    /// `client.application.name` from the handshake: `failCommand` can target it (`appName`).
    pub app_name: Option<String>,
}

pub enum Outcome {
    Reply(Document),
    /// Close the connection without replying (a fail point's `closeConnection`).
    Close,
}

const WRITE_COMMANDS: &[&str] = &["insert", "update", "delete", "findAndModify"];

pub async fn execute(shared: &Arc<Shared>, conn: &mut Conn, body: Document, db: &str) -> Outcome {
    let Some(name) = body.keys().next().cloned() else {
        return Outcome::Reply(finish(
            shared,
            CommandError::failed_to_parse("no command name").to_document(),
        ));
    };
    if matches!(name.as_str(), "hello" | "isMaster" | "ismaster") {
        if let Ok(app) = body
            .get_document("client")
            .and_then(|c| c.get_document("application"))
        {
            conn.app_name = app.get_str("name").ok().map(str::to_string);
        }
    }
    count(shared, &name);

    let injected = {
        let mut st = shared.lock();
        st.failpoints.fail_command(
            &name,
            conn.app_name.as_deref(),
            WRITE_COMMANDS.contains(&name.as_str()),
        )
    };
    let mut write_concern_error = None;
    if let Some(inj) = injected {
        if let Some(d) = inj.block {
            tokio::time::sleep(d).await;
        }
        if inj.close_connection {
            return Outcome::Close;
        }
        if let Some(err) = inj.error {
            return Outcome::Reply(finish(shared, err.to_document()));
        }
        write_concern_error = inj.write_concern_error;
    }

    if name != "getMore"
        && has_time_limit(&body)
        && shared.lock().failpoints.max_time_always_time_out()
    {
        let err = CommandError::new(codes::MAX_TIME_MS_EXPIRED, "operation exceeded time limit");
        return Outcome::Reply(finish(shared, err.to_document()));
    }

    let started = std::time::Instant::now();
    let (opid, kill) = register_op(shared, conn, &name, &body, db);
    let result = tokio::select! {
        r = run(shared, conn, &name, &body, db) => r,
        _ = kill.notified() => Err(interrupted(shared, &name, &body)),
    };
    shared.ops().remove(&opid);
    record_latency(shared, &name, &body, db, started.elapsed());
    let mut reply = match result {
        Ok(mut d) => {
            if !d.contains_key("ok") {
                d.insert("ok", 1.0);
            }
            d
        }
        Err(e) => e.to_document(),
    };
    if let Some(wce) = write_concern_error {
        reply.insert("writeConcernError", wce);
    } else if reply.get_f64("ok") == Ok(1.0) && ACKNOWLEDGED_COMMANDS.contains(&name.as_str()) {
        if let Some(wce) = unsatisfiable_write_concern(&body) {
            reply.insert("writeConcernError", wce);
        }
    }
    Outcome::Reply(finish(shared, reply))
}

/// Every command `run` answers, as `listCommands` lists them.
const COMMANDS: &[&str] = &[
    "aggregate",
    "buildInfo",
    "collMod",
    "collStats",
    "configureFailPoint",
    "connectionStatus",
    "count",
    "create",
    "createIndexes",
    "currentOp",
    "dataSize",
    "dbStats",
    "delete",
    "dropIndexes",
    "drop",
    "dropDatabase",
    "explain",
    "endSessions",
    "find",
    "findAndModify",
    "getCmdLineOpts",
    "getMore",
    "getParameter",
    "hello",
    "hostInfo",
    "insert",
    "isMaster",
    "killCursors",
    "killOp",
    "killSessions",
    "listCollections",
    "listCommands",
    "listDatabases",
    "listIndexes",
    "ping",
    "profile",
    "refreshSessions",
    "renameCollection",
    "replSetGetStatus",
    "replSetResizeOplog",
    "serverStatus",
    "update",
    "validate",
    "whatsmyuri",
];

/// Commands that wait for their `writeConcern`.
const ACKNOWLEDGED_COMMANDS: &[&str] = &[
    "insert",
    "update",
    "delete",
    "findAndModify",
    "findandmodify",
    "create",
    "drop",
    "dropDatabase",
    "renameCollection",
    "createIndexes",
    "dropIndexes",
    "deleteIndexes",
    "collMod",
];

/// The `writeConcernError` a one-member replica set answers after the write: `w` above the
/// member count (100 UnsatisfiableWriteConcern) or a tag no member has (79
/// UnknownReplWriteConcern). The write itself is applied, as on MongoDB.
fn unsatisfiable_write_concern(body: &Document) -> Option<Document> {
    let wc = body.get_document("writeConcern").ok()?;
    let w = wc.get("w")?;
    let members = |n: i64| {
        (n > 1).then(|| {
            (
                codes::UNSATISFIABLE_WRITE_CONCERN,
                "Not enough data-bearing nodes".to_string(),
            )
        })
    };
    let (code, errmsg) = match w {
        Bson::Int32(n) => members(*n as i64)?,
        Bson::Int64(n) => members(*n)?,
        Bson::Double(n) => members(*n as i64)?,
        Bson::String(s) if s == "majority" => return None,
        Bson::String(s) => (
            codes::UNKNOWN_REPL_WRITE_CONCERN,
            format!("No write concern mode named '{s}' found in replica set configuration"),
        ),
        _ => return None,
    };
    Some(doc! {
        "code": code,
        "codeName": crate::error::code_name(code),
        "errmsg": errmsg,
        "errInfo": {"writeConcern": {"w": w.clone(), "wtimeout": 0, "provenance": "clientSupplied"}},
    })
}

/// A command with a `maxTimeMS` above 0 (0 means no limit).
fn has_time_limit(body: &Document) -> bool {
    match body.get("maxTimeMS") {
        Some(Bson::Int32(n)) => *n > 0,
        Some(Bson::Int64(n)) => *n > 0,
        Some(Bson::Double(n)) => *n > 0.0,
        _ => false,
    }
}

async fn run(
    shared: &Arc<Shared>,
    conn: &mut Conn,
    name: &str,
    body: &Document,
    db: &str,
) -> CommandResult<Document> {
    match name {
        "hello" | "isMaster" | "ismaster" => {
            handshake::hello(shared, conn, body, name != "hello").await
        }
        "ping" => Ok(Document::new()),
        "buildInfo" | "buildinfo" => Ok(handshake::build_info()),
        "serverStatus" => Ok(handshake::server_status(shared)),
        "endSessions" | "killSessions" | "refreshSessions" => Ok(Document::new()),
        "connectionStatus" => Ok(handshake::connection_status(body)),
        "whatsmyuri" => Ok(doc! {"you": "127.0.0.1"}),
        "listDatabases" => handshake::list_databases(shared, body),
        "configureFailPoint" => {
            if db != "admin" {
                return Err(CommandError::new(
                    codes::UNAUTHORIZED,
                    "configureFailPoint may only be run against the admin database.",
                ));
            }
            let count = shared.lock().failpoints.configure(body)?;
            Ok(doc! {"count": count})
        }
        "insert" => crud::insert(shared, body, db),
        "find" => crud::find(shared, body, db),
        "getMore" => crud::get_more(shared, body, db).await,
        "killCursors" => crud::kill_cursors(shared, body, db),
        "update" => crud::update(shared, body, db),
        "delete" => crud::delete(shared, body, db),
        "findAndModify" | "findandmodify" => crud::find_and_modify(shared, body, db, name),
        "count" => crud::count(shared, body, db),
        "aggregate" if bool_arg(body, "explain") => explain::aggregate_explain(shared, body, db),
        "aggregate" => aggregate::aggregate(shared, body, db),
        "explain" => explain::explain(shared, body, db),
        "create" => ddl::create(shared, body, db),
        "drop" => ddl::drop(shared, body, db),
        "dropDatabase" => ddl::drop_database(shared, db),
        "renameCollection" => ddl::rename(shared, body, db),
        "listCollections" => ddl::list_collections(shared, body, db),
        "createIndexes" => ddl::create_indexes(shared, body, db),
        "listIndexes" => ddl::list_indexes(shared, body, db),
        "dropIndexes" | "deleteIndexes" => ddl::drop_indexes(shared, body, db),
        "collMod" => ddl::coll_mod(shared, body, db),
        "getCmdLineOpts" => admin::get_cmd_line_opts(shared, db),
        "getParameter" => admin::get_parameter(shared, body, db),
        "hostInfo" => Ok(admin::host_info(shared)),
        "replSetGetStatus" => admin::repl_set_get_status(shared, db),
        "replSetResizeOplog" => admin::repl_set_resize_oplog(shared, body, db),
        "dbStats" | "dbstats" => admin::db_stats(shared, body, db),
        "collStats" | "collstats" => admin::coll_stats(shared, body, db),
        "dataSize" | "datasize" => admin::data_size(shared, body),
        "validate" => admin::validate(shared, body, db),
        "profile" => admin::profile(body),
        "listCommands" => Ok(admin::list_commands(COMMANDS)),
        "currentOp" => admin::current_op(shared, body, db),
        "killOp" => admin::kill_op(shared, body, db),
        other => Err(CommandError::new(
            codes::COMMAND_NOT_FOUND,
            format!("no such command: '{other}'"),
        )),
    }
}

/// Lists the command for `currentOp` until it ends; `killOp` of its opid interrupts it.
fn register_op(
    shared: &Shared,
    conn: &Conn,
    name: &str,
    body: &Document,
    db: &str,
) -> (u32, Arc<tokio::sync::Notify>) {
    let opid = shared
        .next_opid
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut command = Document::new();
    if let Some((k, v)) = body.iter().next() {
        command.insert(k.clone(), v.clone());
    }
    let coll = match name {
        "getMore" => body.get_str("collection").ok(),
        _ => body.get_str(name).ok(),
    };
    if name == "getMore" {
        if let Some(c) = coll {
            command.insert("collection", c);
        }
    }
    command.insert("$db", db);
    let ns = match coll {
        Some(c) => format!("{db}.{c}"),
        None => format!("{db}.$cmd"),
    };
    let kill = Arc::new(tokio::sync::Notify::new());
    shared.ops().insert(
        opid,
        crate::state::RunningOp {
            conn: conn.id,
            app_name: conn.app_name.clone(),
            ns,
            command,
            started: std::time::Instant::now(),
            kill: kill.clone(),
        },
    );
    (opid, kill)
}

/// A command ended by `killOp`: 11601 Interrupted. An interrupted `getMore` takes its cursor
/// with it, as on MongoDB.
fn interrupted(shared: &Shared, name: &str, body: &Document) -> CommandError {
    if name == "getMore" {
        let id = match body.get("getMore") {
            Some(Bson::Int64(i)) => Some(*i),
            Some(Bson::Int32(i)) => Some(*i as i64),
            _ => None,
        };
        if let Some(id) = id {
            shared.lock().cursors.remove(id);
        }
    }
    CommandError::new(codes::INTERRUPTED, "operation was interrupted")
}

/// Counts a command against its collection, as MongoDB's `Top` does for `latencyStats`:
/// reads (`find`, `getMore`, `aggregate`, `count`), writes (`insert`, `update`, `delete`,
/// `findAndModify`) and other commands naming a collection.
fn record_latency(
    shared: &Shared,
    name: &str,
    body: &Document,
    db: &str,
    took: std::time::Duration,
) {
    let coll = match name {
        "getMore" => body.get_str("collection").ok(),
        _ => body.get_str(name).ok(),
    };
    let Some(coll) = coll.filter(|c| !c.is_empty()) else {
        return;
    };
    let micros = took.as_micros().min(u64::MAX as u128) as u64;
    let mut st = shared.lock();
    let l = st.latency.entry(format!("{db}.{coll}")).or_default();
    let slot = match name {
        "find" | "getMore" | "aggregate" | "count" => &mut l.reads,
        "insert" | "update" | "delete" | "findAndModify" | "findandmodify" => &mut l.writes,
        _ => &mut l.commands,
    };
    slot.0 += micros;
    slot.1 += 1;
}

fn count(shared: &Shared, name: &str) {
    let c = &shared.counters;
    // insert/update/delete are counted per document by the commands themselves.
    match name {
        "find" => OpCounters::add(&c.query, 1),
        "getMore" => OpCounters::add(&c.getmore, 1),
        "insert" | "update" | "delete" => {}
        _ => OpCounters::add(&c.command, 1),
    }
}

/// Stamps the reply as a replica-set member does, and wakes change streams if a write landed.
fn finish(shared: &Shared, mut reply: Document) -> Document {
    let (now, head) = {
        let st = shared.lock();
        (st.clock.now(), st.oplog.head_seq())
    };
    shared.publish_head(head);
    if !shared.standalone {
        // A replica-set member puts its topologyVersion on every NotPrimaryError-category
        // error. Drivers compare it with the one from hello and ignore the error as stale when
        // it is not newer, instead of marking the server Unknown (and stalling the next
        // operation until a heartbeat rediscovers it).
        let code = |d: &Document| d.get_i32("code").ok();
        if (reply.get_f64("ok") == Ok(0.0) && code(&reply).is_some_and(is_not_primary_error))
            || reply
                .get_document("writeConcernError")
                .ok()
                .and_then(code)
                .is_some_and(is_not_primary_error)
        {
            reply.insert(
                "topologyVersion",
                doc! {"processId": shared.process_id, "counter": 0i64},
            );
        }
        reply.insert(
            "$clusterTime",
            doc! {
                "clusterTime": now,
                "signature": {
                    "hash": Binary { subtype: BinarySubtype::Generic, bytes: vec![0; 20] },
                    "keyId": 0i64,
                },
            },
        );
        reply.insert("operationTime", now);
    }
    reply
}

/// MongoDB's `NotPrimaryError` error category (`error_codes.yml`).
fn is_not_primary_error(code: i32) -> bool {
    matches!(
        code,
        codes::PRIMARY_STEPPED_DOWN
            | codes::NOT_WRITABLE_PRIMARY
            | 11602 // InterruptedDueToReplStateChange
            | 13435 // NotPrimaryNoSecondaryOk
            | 13436 // NotPrimaryOrSecondary
    )
}

// ---- small shared helpers for the command modules ----

/// The generic arguments every command accepts beside its own fields (MongoDB's
/// `generic_argument.idl`).
pub(crate) fn is_generic_argument(key: &str) -> bool {
    key.starts_with('$')
        || matches!(
            key,
            "lsid"
                | "txnNumber"
                | "autocommit"
                | "startTransaction"
                | "stmtId"
                | "comment"
                | "maxTimeMS"
                | "readConcern"
                | "writeConcern"
                | "apiVersion"
                | "apiStrict"
                | "apiDeprecationErrors"
                | "maxTimeMSOpOnly"
                | "clientOperationKey"
                | "mayBypassWriteBlocking"
                | "allowImplicitCollectionCreation"
        )
}

/// Checks the fields of a command (or of one `updates`/`deletes` statement, `skip_first` false)
/// so nothing is accepted and silently ignored: `implemented` fields are honoured; `unsupported`
/// are MongoDB options mongo-sim does not implement, refused with 2 BadValue naming them (a
/// `collation` of `{locale: "simple"}`, the default, is accepted); anything else that is not a
/// generic argument is MongoDB's 40415 for an unknown field.
pub(crate) fn check_fields(
    body: &Document,
    ctx: &str,
    skip_first: bool,
    implemented: &[&str],
    unsupported: &[&str],
) -> CommandResult<()> {
    for (key, value) in body.iter().skip(usize::from(skip_first)) {
        if implemented.contains(&key.as_str()) || (skip_first && is_generic_argument(key)) {
            continue;
        }
        if key == "collation" {
            if let Bson::Document(c) = value {
                if c.is_empty() || (c.len() == 1 && c.get_str("locale") == Ok("simple")) {
                    continue;
                }
            }
        }
        if unsupported.contains(&key.as_str()) {
            return Err(CommandError::bad_value(format!(
                "'{key}' ({ctx}.{key}) is not supported by mongo-sim"
            )));
        }
        return Err(CommandError::new(
            codes::LOCATION_40415,
            format!("BSON field '{ctx}.{key}' is an unknown field."),
        ));
    }
    Ok(())
}

/// The collection name a command addresses (`{find: "c"}`), validated.
pub(crate) fn collection_arg<'a>(body: &'a Document, name: &str) -> CommandResult<&'a str> {
    match body.get(name) {
        Some(Bson::String(s)) if !s.is_empty() => Ok(s),
        Some(Bson::String(_)) => Err(CommandError::new(
            codes::INVALID_NAMESPACE,
            "Invalid namespace specified: empty collection name",
        )),
        _ => Err(CommandError::type_mismatch(format!(
            "collection name has invalid type {}",
            body.get(name)
                .map(|v| format!("{:?}", v.element_type()))
                .unwrap_or_else(|| "missing".into())
        ))),
    }
}

pub(crate) fn int_arg(body: &Document, key: &str) -> CommandResult<Option<i64>> {
    match body.get(key) {
        None | Some(Bson::Null) => Ok(None),
        Some(Bson::Int32(i)) => Ok(Some(*i as i64)),
        Some(Bson::Int64(i)) => Ok(Some(*i)),
        Some(Bson::Double(d)) if d.fract() == 0.0 => Ok(Some(*d as i64)),
        Some(other) => Err(CommandError::type_mismatch(format!(
            "BSON field '{key}' is the wrong type '{:?}'",
            other.element_type()
        ))),
    }
}

pub(crate) fn doc_arg(body: &Document, key: &str) -> CommandResult<Option<Document>> {
    match body.get(key) {
        None | Some(Bson::Null) => Ok(None),
        Some(Bson::Document(d)) => Ok(Some(d.clone())),
        Some(other) => Err(CommandError::type_mismatch(format!(
            "BSON field '{key}' is the wrong type '{:?}', expected type 'object'",
            other.element_type()
        ))),
    }
}

pub(crate) fn bool_arg(body: &Document, key: &str) -> bool {
    match body.get(key) {
        Some(Bson::Boolean(b)) => *b,
        Some(Bson::Int32(i)) => *i != 0,
        Some(Bson::Int64(i)) => *i != 0,
        Some(Bson::Double(d)) => *d != 0.0,
        _ => false,
    }
}

/// `cursor.batchSize` of an aggregate, or a find's `batchSize`.
pub(crate) fn batch_size(v: Option<i64>) -> CommandResult<Option<usize>> {
    match v {
        Some(n) if n < 0 => Err(CommandError::bad_value("batchSize must be non-negative")),
        Some(n) => Ok(Some(n as usize)),
        None => Ok(None),
    }
}

pub(crate) fn cursor_reply(
    id: i64,
    ns: &str,
    batch: Vec<Document>,
    first: bool,
    pbrt: Option<Document>,
) -> Document {
    let key = if first { "firstBatch" } else { "nextBatch" };
    let mut cursor = doc! {key: batch, "id": id, "ns": ns};
    if let Some(t) = pbrt {
        cursor.insert("postBatchResumeToken", t);
    }
    doc! {"cursor": cursor}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::State;

    #[test]
    fn not_primary_errors_carry_the_topology_version() {
        let (_stop, rx) = tokio::sync::watch::channel(false);
        let shared = Shared::new(State::new(10), false, "127.0.0.1:1".into(), rx);
        let err = |code| finish(&shared, CommandError::new(code, "injected").to_document());

        let reply = err(codes::NOT_WRITABLE_PRIMARY);
        let tv = reply
            .get_document("topologyVersion")
            .expect("topologyVersion");
        assert_eq!(tv.get_object_id("processId"), Ok(shared.process_id));
        assert_eq!(tv.get_i64("counter"), Ok(0));
        // Shutdown errors carry one only in quiesce mode, which mongo-sim never enters.
        assert!(!err(codes::SHUTDOWN_IN_PROGRESS).contains_key("topologyVersion"));
        assert!(!err(codes::HOST_UNREACHABLE).contains_key("topologyVersion"));
    }
}
