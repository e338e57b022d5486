//! The handshake and server-level commands: how a driver discovers that it talks to the primary
//! of replica set `rs0` running MongoDB 7.0 (wire version 21), and where benchmarks read load.

use super::Conn;
use crate::error::CommandResult;
use crate::query::filter::Filter;
use crate::state::Shared;
use crate::wire::{MAX_BSON_OBJECT_SIZE, MAX_MESSAGE_SIZE};
use bson::{doc, oid::ObjectId, Bson, DateTime, Document};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

pub const VERSION: &str = "7.0.0";
pub const MAX_WIRE_VERSION: i32 = 21;
pub const SET_NAME: &str = "rs0";

pub async fn hello(
    shared: &Arc<Shared>,
    conn: &Conn,
    body: &Document,
    legacy: bool,
) -> CommandResult<Document> {
    // Streaming monitoring: a hello carrying our topologyVersion and maxAwaitTimeMS is answered
    // when the topology changes or the wait ends. Ours never changes, so it waits (and is cut
    // short by shutdown); without this, drivers would heartbeat in a tight loop.
    if let (Ok(tv), Some(wait)) = (
        body.get_document("topologyVersion"),
        super::int_arg(body, "maxAwaitTimeMS")?,
    ) {
        if tv.get_object_id("processId").ok() == Some(shared.process_id) {
            let mut shutdown = shared.shutdown.clone();
            let wait = Duration::from_millis(wait.clamp(0, 60_000) as u64);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = crate::state::stopped(&mut shutdown) => {}
            }
        }
    }
    let (ts, wall) = {
        let st = shared.lock();
        let last = st.oplog.last();
        (last.ts, last.wall)
    };
    let mut d = doc! {
        "topologyVersion": {"processId": shared.process_id, "counter": 0i64},
    };
    if legacy {
        d.insert("ismaster", true);
    } else {
        d.insert("isWritablePrimary", true);
    }
    if body.get_bool("helloOk").unwrap_or(false) {
        d.insert("helloOk", true);
    }
    if !shared.standalone {
        let host = shared.host.clone();
        d.insert("hosts", vec![Bson::String(host.clone())]);
        d.insert("setName", SET_NAME);
        d.insert("setVersion", 1);
        d.insert("secondary", false);
        d.insert("primary", host.clone());
        d.insert("me", host);
        d.insert(
            "electionId",
            ObjectId::from_bytes([0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 1]),
        );
        d.insert(
            "lastWrite",
            doc! {
                "opTime": {"ts": ts, "t": 1i64},
                "lastWriteDate": wall,
                "majorityOpTime": {"ts": ts, "t": 1i64},
                "majorityWriteDate": wall,
            },
        );
    }
    d.insert("maxBsonObjectSize", MAX_BSON_OBJECT_SIZE as i32);
    d.insert("maxMessageSizeBytes", MAX_MESSAGE_SIZE as i32);
    d.insert("maxWriteBatchSize", 100_000);
    d.insert("localTime", DateTime::now());
    d.insert("logicalSessionTimeoutMinutes", 30);
    d.insert("connectionId", conn.id);
    d.insert("minWireVersion", 0);
    d.insert("maxWireVersion", MAX_WIRE_VERSION);
    d.insert("readOnly", false);
    Ok(d)
}

pub fn build_info() -> Document {
    doc! {
        "version": VERSION,
        "gitVersion": "mongo-sim",
        "versionArray": [7, 0, 0, 0],
        "bits": 64,
        "debug": false,
        "maxBsonObjectSize": MAX_BSON_OBJECT_SIZE as i32,
        "storageEngines": ["inMemory"],
        "modules": [],
    }
}

/// `connectionStatus`: mongo-sim runs without access control, as a `mongod` without
/// `--auth` does, so no user is authenticated and, with `showPrivileges: true`, the privilege
/// list is empty too (every action is allowed regardless). Tools that check privileges must
/// read an empty `authenticatedUsers` as "access control is off or nobody logged in".
pub fn connection_status(body: &Document) -> Document {
    let mut auth = doc! {"authenticatedUsers": [], "authenticatedUserRoles": []};
    if super::bool_arg(body, "showPrivileges") {
        auth.insert("authenticatedUserPrivileges", Vec::<Bson>::new());
    }
    doc! {"authInfo": auth}
}

pub fn server_status(shared: &Shared) -> Document {
    let c = &shared.counters;
    let load = |a: &std::sync::atomic::AtomicI64| a.load(Ordering::Relaxed);
    let uptime = shared.started.elapsed();
    let mut d = doc! {
        "host": shared.host.clone(),
        "version": VERSION,
        "process": "mongod",
        "pid": std::process::id() as i64,
        "uptime": uptime.as_secs_f64().floor(),
        "uptimeMillis": uptime.as_millis() as i64,
        "localTime": DateTime::now(),
        "connections": {
            "current": load(&shared.connections_current) as i32,
            "available": 838_860,
            "totalCreated": shared.connections_total.load(Ordering::Relaxed) as i64,
            "active": load(&shared.connections_current) as i32,
        },
        "opcounters": {
            "insert": load(&c.insert),
            "query": load(&c.query),
            "update": load(&c.update),
            "delete": load(&c.delete),
            "getmore": load(&c.getmore),
            "command": load(&c.command),
        },
    };
    if !shared.standalone {
        let st = shared.lock();
        d.insert(
            "oplogTruncation",
            doc! {
                "totalTimeProcessingMicros": 0i64,
                "processingMethod": "scanning",
                "oplogMinRetentionHours": st.oplog.min_retention_hours(),
                "totalTimeTruncatingMicros": 0i64,
                "truncateCount": st.oplog.truncations() as i64,
            },
        );
        drop(st);
        d.insert(
            "repl",
            doc! {"setName": SET_NAME, "isWritablePrimary": true, "hosts": [shared.host.clone()], "primary": shared.host.clone(), "me": shared.host.clone()},
        );
    }
    d
}

pub fn list_databases(shared: &Shared, body: &Document) -> CommandResult<Document> {
    let filter = match super::doc_arg(body, "filter")? {
        Some(f) => Some(Filter::parse(&f)?),
        None => None,
    };
    let name_only = super::bool_arg(body, "nameOnly");
    let st = shared.lock();
    let mut dbs = Vec::new();
    // A database exists while it has collections: dropping its last one makes it vanish from
    // listDatabases, as on a real server.
    let mut names: Vec<(String, bool)> = st
        .dbs
        .iter()
        .filter(|(_, db)| !db.collections.is_empty())
        .map(|(n, _)| (n.clone(), false))
        .collect();
    // `admin` (system.version) and `config` (system.sessions) always exist, and so does
    // `local` (the oplog on a replica-set member, startup_log on a standalone).
    for internal in ["admin", "config", "local"] {
        if !names.iter().any(|(n, _)| n == internal) {
            names.push((internal.into(), false));
        }
    }
    names.sort();
    for (name, empty) in names {
        let entry = if name_only {
            doc! {"name": name}
        } else {
            doc! {"name": name, "sizeOnDisk": 8192i64, "empty": empty}
        };
        if filter.as_ref().map(|f| f.matches(&entry)).unwrap_or(true) {
            dbs.push(entry);
        }
    }
    let mut reply = doc! {"databases": dbs};
    if !name_only {
        reply.insert("totalSize", 8192i64);
        reply.insert("totalSizeMb", 0i64);
    }
    Ok(reply)
}
