//! The commands tools run when they connect (shells, Compass, monitoring agents, `mongo-sse
//! check`): `getCmdLineOpts`, `getParameter`, `hostInfo`, `replSetGetStatus`, `dbStats`,
//! `collStats`, `dataSize`, `validate`, `profile`, `listCommands`, in MongoDB 7.0's shapes.
//! Sizes are the BSON sizes of the stored documents (there is no storage engine to ask).

use super::{bool_arg, collection_arg, int_arg, is_generic_argument};
use crate::error::{codes, CommandError, CommandResult};
use crate::state::Shared;
use crate::store::Collection;
use bson::{doc, Bson, DateTime, Document};

fn admin_only(db: &str, name: &str) -> CommandResult<()> {
    if db != "admin" {
        return Err(CommandError::new(
            codes::UNAUTHORIZED,
            format!("{name} may only be run against the admin database."),
        ));
    }
    Ok(())
}

fn port(shared: &Shared) -> i64 {
    shared
        .host
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(27017)
}

/// `getCmdLineOpts`: the command line a `mongod` in mongo-sim's role would have been given.
pub fn get_cmd_line_opts(shared: &Shared, db: &str) -> CommandResult<Document> {
    admin_only(db, "getCmdLineOpts")?;
    let port = port(shared);
    let bind = shared
        .host
        .rsplit_once(':')
        .map_or("127.0.0.1", |(h, _)| h)
        .to_string();
    let mut argv = vec![
        "mongod".to_string(),
        "--bind_ip".into(),
        bind.clone(),
        "--port".into(),
        port.to_string(),
    ];
    let mut parsed = doc! {
        "net": {"bindIp": bind, "port": port as i32},
        "setParameter": {"enableTestCommands": "1"},
        "storage": {"engine": "inMemory"},
    };
    argv.extend(["--setParameter".into(), "enableTestCommands=1".into()]);
    if !shared.standalone {
        argv.extend([
            "--replSet".into(),
            crate::commands::handshake::SET_NAME.into(),
        ]);
        parsed.insert(
            "replication",
            doc! {"replSet": crate::commands::handshake::SET_NAME},
        );
    }
    Ok(doc! {"argv": argv, "parsed": parsed})
}

/// The server parameters mongo-sim has, with their values.
fn parameters(shared: &Shared) -> Document {
    let ttl = shared.ttl_interval.borrow().as_secs().max(1) as i32;
    doc! {
        "authenticationMechanisms": ["SCRAM-SHA-1", "SCRAM-SHA-256"],
        "cursorTimeoutMillis": crate::cursor::IDLE_TIMEOUT.as_millis() as i64,
        "enableTestCommands": true,
        "featureCompatibilityVersion": {"version": "7.0"},
        "maxBSONDepth": 200,
        "ttlMonitorEnabled": true,
        "ttlMonitorSleepSecs": ttl,
    }
}

/// `getParameter`: `{getParameter: 1, <name>: 1, ...}`, `{getParameter: "*"}`, and
/// `{getParameter: {showDetails: true}, ...}`. A name mongo-sim does not have is MongoDB's 72.
pub fn get_parameter(shared: &Shared, body: &Document, db: &str) -> CommandResult<Document> {
    admin_only(db, "getParameter")?;
    let all = parameters(shared);
    let (everything, details) = match body.get("getParameter") {
        Some(Bson::String(s)) if s == "*" => (true, false),
        Some(Bson::Document(d)) => (
            d.get_bool("allParameters").unwrap_or(false),
            d.get_bool("showDetails").unwrap_or(false),
        ),
        _ => (false, false),
    };
    let shape = |v: &Bson| match details {
        true => Bson::Document(
            doc! {"value": v.clone(), "settableAtRuntime": false, "settableAtStartup": true},
        ),
        false => v.clone(),
    };
    let mut out = Document::new();
    if everything {
        for (k, v) in &all {
            out.insert(k.clone(), shape(v));
        }
        return Ok(out);
    }
    for k in body.keys().skip(1) {
        if k.starts_with('$') || matches!(k.as_str(), "lsid" | "comment" | "apiVersion") {
            continue;
        }
        if let Some(v) = all.get(k) {
            out.insert(k.clone(), shape(v));
        }
    }
    if out.is_empty() {
        return Err(CommandError::new(
            codes::INVALID_OPTIONS,
            "no option found to get",
        ));
    }
    Ok(out)
}

pub fn host_info(shared: &Shared) -> Document {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as i32;
    let hostname = shared
        .host
        .rsplit_once(':')
        .map_or("localhost", |(h, _)| h)
        .to_string();
    doc! {
        "system": {
            "currentTime": DateTime::now(),
            "hostname": hostname,
            "cpuAddrSize": 64,
            "numCores": cores,
            "cpuArch": std::env::consts::ARCH,
            "numaEnabled": false,
        },
        "os": {"type": std::env::consts::OS, "name": std::env::consts::OS},
        "extra": {},
    }
}

/// `replSetGetStatus`: one healthy PRIMARY, every optime the last write's.
pub fn repl_set_get_status(shared: &Shared, db: &str) -> CommandResult<Document> {
    admin_only(db, "replSetGetStatus")?;
    if shared.standalone {
        return Err(CommandError::new(76, "not running with --replSet"));
    }
    let (ts, wall, first) = {
        let st = shared.lock();
        (
            st.oplog.last().ts,
            st.oplog.last().wall,
            st.oplog.first().wall,
        )
    };
    let optime = doc! {"ts": ts, "t": 1i64};
    let uptime = shared.started.elapsed().as_secs() as i32;
    Ok(doc! {
        "set": crate::commands::handshake::SET_NAME,
        "date": DateTime::now(),
        "myState": 1,
        "term": 1i64,
        "syncSourceHost": "",
        "syncSourceId": -1,
        "heartbeatIntervalMillis": 2000i64,
        "majorityVoteCount": 1,
        "writeMajorityCount": 1,
        "votingMembersCount": 1,
        "writableVotingMembersCount": 1,
        "optimes": {
            "lastCommittedOpTime": optime.clone(),
            "lastCommittedWallTime": wall,
            "readConcernMajorityOpTime": optime.clone(),
            "appliedOpTime": optime.clone(),
            "durableOpTime": optime.clone(),
            "lastAppliedWallTime": wall,
            "lastDurableWallTime": wall,
        },
        "members": [{
            "_id": 0,
            "name": shared.host.clone(),
            "health": 1.0,
            "state": 1,
            "stateStr": "PRIMARY",
            "uptime": uptime,
            "optime": optime.clone(),
            "optimeDate": wall,
            "lastAppliedWallTime": wall,
            "lastDurableWallTime": wall,
            "syncSourceHost": "",
            "syncSourceId": -1,
            "infoMessage": "",
            "electionTime": bson::Timestamp { time: (first.timestamp_millis() / 1000) as u32, increment: 1 },
            "electionDate": first,
            "configVersion": 1,
            "configTerm": 1i64,
            "self": true,
            "lastHeartbeatMessage": "",
        }],
    })
}

fn bson_len(d: &Document) -> i64 {
    bson::to_vec(d).map_or(0, |v| v.len() as i64)
}

/// `(count, data bytes)` of a collection.
fn sizes(c: &Collection) -> (i64, i64) {
    c.iter()
        .fold((0, 0), |(n, b), (_, d)| (n + 1, b + bson_len(d)))
}

fn scale_arg(body: &Document) -> CommandResult<i64> {
    match int_arg(body, "scale")? {
        None => Ok(1),
        Some(s) if s >= 1 => Ok(s),
        Some(_) => Err(CommandError::bad_value(
            "Scale factor must be greater than zero",
        )),
    }
}

pub fn db_stats(shared: &Shared, body: &Document, db: &str) -> CommandResult<Document> {
    let scale = scale_arg(body)?;
    let st = shared.lock();
    let (mut colls, mut objects, mut data, mut indexes) = (0i64, 0i64, 0i64, 0i64);
    for c in st.dbs.get(db).iter().flat_map(|d| d.collections.values()) {
        let (n, b) = sizes(c);
        colls += 1;
        objects += n;
        data += b;
        indexes += c.indexes.len() as i64;
    }
    let avg = if objects > 0 {
        data as f64 / objects as f64
    } else {
        0.0
    };
    Ok(doc! {
        "db": db,
        "collections": colls,
        "views": 0i64,
        "objects": objects,
        "avgObjSize": avg,
        "dataSize": (data / scale) as f64,
        "storageSize": (data / scale) as f64,
        "indexes": indexes,
        "indexSize": 0.0,
        "totalSize": (data / scale) as f64,
        "scaleFactor": scale,
        "fsUsedSize": 0.0,
        "fsTotalSize": 0.0,
    })
}

fn not_found(db: &str, coll: &str) -> CommandError {
    CommandError::new(
        codes::NAMESPACE_NOT_FOUND,
        format!("Collection [{db}.{coll}] not found."),
    )
}

pub fn coll_stats(shared: &Shared, body: &Document, db: &str) -> CommandResult<Document> {
    let coll = collection_arg(body, "collStats")?;
    let scale = scale_arg(body)?;
    if db == "local" && coll == "oplog.rs" {
        return oplog_stats(shared, scale);
    }
    let st = shared.lock();
    let c = st.collection(db, coll).ok_or_else(|| not_found(db, coll))?;
    let (n, b) = sizes(c);
    let capped = matches!(c.options.get("capped"), Some(Bson::Boolean(true)));
    let limits = capped
        .then(|| super::ddl::capped_limits_of(&c.options).ok())
        .flatten();
    let index_sizes: Document = c
        .indexes
        .iter()
        .map(|i| (i.name.clone(), Bson::Int64(0)))
        .collect();
    let mut out = doc! {
        "ns": format!("{db}.{coll}"),
        "size": b / scale,
        "count": n,
        "avgObjSize": if n > 0 { b / n } else { 0 },
        "storageSize": b / scale,
        "freeStorageSize": 0i64,
        "capped": capped,
        "nindexes": c.indexes.len() as i32,
        "indexBuilds": [],
        "totalIndexSize": 0i64,
        "totalSize": b / scale,
        "indexSizes": index_sizes,
        "scaleFactor": scale,
    };
    if let Some((size, max)) = limits {
        out.insert("max", max.unwrap_or(0) as i64);
        out.insert("maxSize", size as i64 / scale);
    }
    Ok(out)
}

/// `dataSize: "db.coll"`.
pub fn data_size(shared: &Shared, body: &Document) -> CommandResult<Document> {
    let ns = body
        .get_str("dataSize")
        .map_err(|_| CommandError::type_mismatch("dataSize must be a namespace string"))?;
    for k in ["keyPattern", "min", "max"] {
        if body.contains_key(k) {
            return Err(CommandError::new(
                codes::INVALID_OPTIONS,
                format!("dataSize with '{k}' (a range) is not supported by mongo-sim"),
            ));
        }
    }
    let (db, coll) = ns.split_once('.').ok_or_else(|| {
        CommandError::invalid_namespace(format!("Invalid namespace specified '{ns}'"))
    })?;
    let st = shared.lock();
    let (n, b) = st.collection(db, coll).map_or((0, 0), sizes);
    Ok(doc! {"estimate": bool_arg(body, "estimate"), "size": b, "numObjects": n, "millis": 0i64})
}

pub fn validate(shared: &Shared, body: &Document, db: &str) -> CommandResult<Document> {
    let coll = collection_arg(body, "validate")?;
    let st = shared.lock();
    let c = st.collection(db, coll).ok_or_else(|| not_found(db, coll))?;
    let n = c.len() as i64;
    let keys: Document = c
        .indexes
        .iter()
        .map(|i| (i.name.clone(), Bson::Int64(n)))
        .collect();
    let details: Document = c
        .indexes
        .iter()
        .map(|i| (i.name.clone(), Bson::Document(doc! {"valid": true})))
        .collect();
    Ok(doc! {
        "ns": format!("{db}.{coll}"),
        "uuid": c.uuid.clone(),
        "nInvalidDocuments": 0i64,
        "nNonCompliantDocuments": 0i64,
        "nrecords": n,
        "nIndexes": c.indexes.len() as i32,
        "keysPerIndex": keys,
        "indexDetails": details,
        "valid": true,
        "repaired": false,
        "warnings": [],
        "errors": [],
        "extraIndexEntries": [],
        "missingIndexEntries": [],
        "corruptRecords": [],
    })
}

/// `profile`: mongo-sim never profiles, so level 0 (and `-1`, which reads the level) is all it
/// answers; turning profiling on is refused rather than accepted with nothing recorded.
pub fn profile(body: &Document) -> CommandResult<Document> {
    let level = int_arg(body, "profile")?.unwrap_or(-1);
    match level {
        -1 | 0 => Ok(doc! {"was": 0, "slowms": 100, "sampleRate": 1.0}),
        1 | 2 => Err(CommandError::new(
            codes::INVALID_OPTIONS,
            "mongo-sim does not profile operations: only profiling level 0 is supported",
        )),
        other => Err(CommandError::bad_value(format!(
            "Invalid profiling level: {other}"
        ))),
    }
}

pub fn list_commands(names: &[&str]) -> Document {
    let commands: Document = names
        .iter()
        .map(|n| {
            (
                n.to_string(),
                Bson::Document(doc! {"help": "", "requiresAuth": false, "secondaryOk": true, "adminOnly": false, "apiVersions": []}),
            )
        })
        .collect();
    doc! {"commands": commands}
}

/// A `safeDouble` field: any number, as a double; anything else is 14 TypeMismatch.
fn number_field(body: &Document, cmd: &str, key: &str) -> CommandResult<Option<f64>> {
    match body.get(key) {
        None => Ok(None),
        Some(Bson::Double(d)) => Ok(Some(*d)),
        Some(Bson::Int32(i)) => Ok(Some(*i as f64)),
        Some(Bson::Int64(i)) => Ok(Some(*i as f64)),
        Some(Bson::Decimal128(d)) => d
            .to_string()
            .parse::<f64>()
            .map(Some)
            .map_err(|_| CommandError::bad_value(format!("BSON field '{cmd}.{key}' is not a number"))),
        Some(other) => Err(CommandError::type_mismatch(format!(
            "BSON field '{cmd}.{key}' is the wrong type '{}', expected types '[long, int, decimal, double]'",
            type_alias(other)
        ))),
    }
}

fn type_alias(v: &Bson) -> &'static str {
    match v {
        Bson::String(_) => "string",
        Bson::Boolean(_) => "bool",
        Bson::Document(_) => "object",
        Bson::Array(_) => "array",
        Bson::Null => "null",
        Bson::ObjectId(_) => "objectId",
        Bson::DateTime(_) => "date",
        Bson::Timestamp(_) => "timestamp",
        Bson::Binary(_) => "binData",
        _ => "unknown",
    }
}

/// An IDL validator failure (`gte`/`lte`), which MongoDB 7.0 answers with code 51024.
fn out_of_range(key: &str, rule: &str, actual: f64) -> CommandError {
    CommandError::new(
        51024,
        format!("BSON field '{key}' value must be {rule}, actual value '{actual}'"),
    )
}

/// `replSetResizeOplog: 1, size: <MB>, minRetentionHours: <h>`, as MongoDB 7.0 parses it
/// (`size` 990 MB to 1 PB, `minRetentionHours` >= 0, both optional; unknown fields 40415),
/// plus one mongo-sim extension, `simMaxEvents: <n >= 1>`, which caps the number of entries
/// (what `--oplog-max-events` sets at start), because a sim's oplog never reaches 990 MB.
/// Truncation happens before the reply, oldest entries first, down to the new limits, keeping
/// entries younger than `minRetentionHours` and always the newest entry.
pub fn repl_set_resize_oplog(
    shared: &Shared,
    body: &Document,
    db: &str,
) -> CommandResult<Document> {
    const CMD: &str = "replSetResizeOplog";
    admin_only(db, CMD)?;
    if shared.standalone {
        return Err(CommandError::new(
            codes::NAMESPACE_NOT_FOUND,
            "oplog does not exist",
        ));
    }
    for key in body.keys().skip(1) {
        if !matches!(key.as_str(), "size" | "minRetentionHours" | "simMaxEvents")
            && !is_generic_argument(key)
        {
            return Err(CommandError::new(
                codes::LOCATION_40415,
                format!("BSON field '{CMD}.{key}' is an unknown field."),
            ));
        }
    }
    let size = number_field(body, CMD, "size")?;
    if let Some(mb) = size {
        // NaN fails both comparisons, as in MongoDB's generated validators.
        if mb.is_nan() || mb < crate::oplog::MIN_SIZE_MB {
            return Err(out_of_range("size", ">= 990", mb));
        }
        if mb > crate::oplog::MAX_SIZE_MB {
            return Err(out_of_range("size", "<= 1073741824", mb));
        }
    }
    let hours = number_field(body, CMD, "minRetentionHours")?;
    if let Some(h) = hours {
        if h.is_nan() || h < 0.0 {
            return Err(out_of_range("minRetentionHours", ">= 0", h));
        }
    }
    let max_events = match body.get("simMaxEvents") {
        None => None,
        Some(_) => match int_arg(body, "simMaxEvents")? {
            Some(n) if n >= 1 => Some(usize::try_from(n).unwrap_or(usize::MAX)),
            other => {
                return Err(out_of_range(
                    "simMaxEvents",
                    ">= 1",
                    other.unwrap_or(0) as f64,
                ))
            }
        },
    };
    let bytes = size.map(|mb| (mb * 1024.0 * 1024.0) as u64);
    let mut st = shared.lock();
    let before = st.oplog.first().seq;
    st.oplog.resize(bytes, hours, max_events);
    tracing::info!(
        size = st.oplog.max_bytes(),
        min_retention_hours = st.oplog.min_retention_hours(),
        max_events = st.oplog.max_events(),
        truncated = st.oplog.first().seq - before,
        "replSetResizeOplog success"
    );
    Ok(Document::new())
}

/// `collStats` of `local.oplog.rs`: a capped collection of the retained entries.
pub fn oplog_stats(shared: &Shared, scale: i64) -> CommandResult<Document> {
    if shared.standalone {
        return Err(not_found("local", "oplog.rs"));
    }
    let st = shared.lock();
    let (n, b) = (st.oplog.len() as i64, st.oplog.bytes() as i64);
    Ok(doc! {
        "ns": "local.oplog.rs",
        "size": b / scale,
        "count": n,
        "avgObjSize": if n > 0 { b / n } else { 0 },
        "storageSize": b / scale,
        "freeStorageSize": 0i64,
        "capped": true,
        "max": st.oplog.max_events() as i64,
        "maxSize": st.oplog.max_bytes() as i64 / scale,
        "nindexes": 0,
        "indexBuilds": [],
        "totalIndexSize": 0i64,
        "totalSize": b / scale,
        "indexSizes": {},
        "scaleFactor": scale,
    })
}

/// `currentOp`: every command in progress (this one included), as `inprog` entries; the fields
/// other than `currentOp`, `$all`, `$ownOps` and generic arguments filter them, as on MongoDB.
pub fn current_op(shared: &Shared, body: &Document, db: &str) -> CommandResult<Document> {
    admin_only(db, "currentOp")?;
    let mut filter = Document::new();
    for (k, v) in body.iter().skip(1) {
        if k == "$all" || k == "$ownOps" || is_generic_argument(k) {
            continue;
        }
        filter.insert(k.clone(), v.clone());
    }
    let filter = crate::query::filter::Filter::parse(&filter)?;
    let now = std::time::Instant::now();
    let ops: Vec<Document> = shared
        .ops()
        .iter()
        .map(|(opid, op)| {
            let running = now.saturating_duration_since(op.started);
            let mut d = doc! {
                "type": "op",
                "host": shared.host.clone(),
                "desc": format!("conn{}", op.conn),
                "connectionId": op.conn,
                "client": "127.0.0.1:0",
                "active": true,
                "currentOpTime": DateTime::now().try_to_rfc3339_string().unwrap_or_default(),
                "opid": *opid as i32,
                "secs_running": running.as_secs() as i64,
                "microsecs_running": running.as_micros().min(i64::MAX as u128) as i64,
                "op": if op.command.contains_key("getMore") { "getmore" } else { "command" },
                "ns": op.ns.clone(),
                "command": op.command.clone(),
                "numYields": 0,
                "waitingForLock": false,
            };
            if let Some(app) = &op.app_name {
                d.insert("appName", app.clone());
            }
            d
        })
        .filter(|d| filter.matches(d))
        .collect();
    Ok(doc! {"inprog": ops})
}

/// `killOp: 1, op: <opid>`: interrupts that command (11601 `Interrupted`); a `getMore` loses
/// its cursor too. An opid that is not running is not an error, as on MongoDB.
pub fn kill_op(shared: &Shared, body: &Document, db: &str) -> CommandResult<Document> {
    admin_only(db, "killOp")?;
    let opid = match body.get("op") {
        Some(Bson::Int32(n)) => *n as i64,
        Some(Bson::Int64(n)) => *n,
        Some(Bson::Double(n)) if n.fract() == 0.0 => *n as i64,
        Some(_) => return Err(CommandError::type_mismatch("op must be a number")),
        None => return Err(CommandError::new(4, "Did not provide \"op\" field")),
    };
    if let Some(op) = u32::try_from(opid)
        .ok()
        .and_then(|id| shared.ops().get(&id).map(|o| o.kill.clone()))
    {
        op.notify_one();
    }
    Ok(doc! {"info": "attempting to kill op"})
}
