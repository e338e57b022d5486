//! Everything the server knows, behind one lock: databases, the oplog, open cursors and fail
//! points. One lock makes commit order trivially the oplog's order, which is the property
//! change streams are about; commands are short, and the only long wait (a change-stream
//! `getMore`) happens outside it, on the `head` watch channel.

use crate::clock::Clock;
use crate::cursor::Cursors;
use crate::error::{codes, CommandError, CommandResult};
use crate::failpoint::FailPoints;
use crate::oplog::{EntryExtra, OpKind, Oplog};
use crate::store::{Collection, Database};
use bson::{oid::ObjectId, Document, Timestamp};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;
use tokio::sync::watch;

#[derive(Debug)]
pub struct State {
    pub dbs: BTreeMap<String, Database>,
    pub oplog: Oplog,
    pub clock: Clock,
    pub cursors: Cursors,
    pub failpoints: FailPoints,
    /// A standalone server has no oplog to show (`local.oplog.rs` does not exist).
    pub standalone: bool,
    /// Per namespace, MongoDB's `Top` counters behind `$collStats: {latencyStats}`.
    pub latency: BTreeMap<String, Latency>,
}

/// `(total latency in microseconds, operations)` for reads, writes and other commands.
#[derive(Debug, Default, Clone, Copy)]
pub struct Latency {
    pub reads: (u64, u64),
    pub writes: (u64, u64),
    pub commands: (u64, u64),
}

impl State {
    pub fn new(oplog_max_events: usize) -> Self {
        let mut clock = Clock::new();
        let ts = clock.tick();
        State {
            dbs: BTreeMap::new(),
            oplog: Oplog::new(oplog_max_events, ts),
            clock,
            cursors: Cursors::default(),
            failpoints: FailPoints::default(),
            standalone: false,
            latency: BTreeMap::new(),
        }
    }

    pub fn collection(&self, db: &str, coll: &str) -> Option<&Collection> {
        self.dbs.get(db)?.collections.get(coll)
    }

    pub fn collection_mut(&mut self, db: &str, coll: &str) -> Option<&mut Collection> {
        self.dbs.get_mut(db)?.collections.get_mut(coll)
    }

    /// The collection, created implicitly as MongoDB does on first write (which logs a
    /// `create` entry, as MongoDB's implicit creation does).
    pub fn collection_or_create(&mut self, db: &str, coll: &str) -> CommandResult<&mut Collection> {
        validate_namespace(db, coll)?;
        if self.collection(db, coll).is_none() {
            self.create_collection(db, coll, Document::new())?;
        }
        self.collection_mut(db, coll).ok_or_else(|| {
            CommandError::new(codes::INTERNAL_ERROR, "collection vanished while created")
        })
    }

    /// Creates a collection that does not exist yet, with `create`'s options, and logs it.
    pub fn create_collection(
        &mut self,
        db: &str,
        coll: &str,
        options: Document,
    ) -> CommandResult<()> {
        validate_namespace(db, coll)?;
        let mut c = Collection::new();
        c.options = options.clone();
        self.dbs
            .entry(db.to_string())
            .or_default()
            .collections
            .insert(coll.to_string(), c);
        self.log(db, coll, OpKind::Create { options });
        Ok(())
    }

    /// Records a write in the oplog at a fresh cluster time.
    pub fn log(&mut self, db: &str, coll: &str, op: OpKind) -> Timestamp {
        self.log_with(db, coll, op, EntryExtra::default())
    }

    /// Records a write with its pre/post images; the collection's UUID is filled in when the
    /// caller did not give one and the collection still exists.
    pub fn log_with(
        &mut self,
        db: &str,
        coll: &str,
        op: OpKind,
        mut extra: EntryExtra,
    ) -> Timestamp {
        if extra.uuid.is_none() {
            extra.uuid = self.collection(db, coll).map(|c| c.uuid.clone());
        }
        let ts = self.clock.tick();
        self.oplog.append_with(ts, db, coll, op, extra);
        ts
    }
}

pub fn validate_namespace(db: &str, coll: &str) -> CommandResult<()> {
    let bad_db =
        db.is_empty() || db.len() > 63 || db.contains(['/', '\\', '.', ' ', '"', '$', '\0']);
    let bad_coll =
        coll.is_empty() || coll.contains('\0') || coll.starts_with('$') || coll.len() > 255;
    if bad_db || bad_coll {
        return Err(CommandError::new(
            codes::INVALID_NAMESPACE,
            format!("Invalid namespace specified '{db}.{coll}'"),
        ));
    }
    Ok(())
}

/// MongoDB's `serverStatus.opcounters`: benchmarks read database load from these.
#[derive(Debug, Default)]
pub struct OpCounters {
    pub insert: AtomicI64,
    pub query: AtomicI64,
    pub update: AtomicI64,
    pub delete: AtomicI64,
    pub getmore: AtomicI64,
    pub command: AtomicI64,
}

impl OpCounters {
    pub fn add(counter: &AtomicI64, n: i64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// A command in progress, as `currentOp` lists it; `killOp` wakes `kill`.
#[derive(Debug)]
pub struct RunningOp {
    pub conn: i64,
    pub app_name: Option<String>,
    pub ns: String,
    /// The command's first element (and `collection` of a getMore), not its whole body.
    pub command: Document,
    pub started: Instant,
    pub kill: std::sync::Arc<tokio::sync::Notify>,
}

#[derive(Debug)]
pub struct Shared {
    state: Mutex<State>,
    /// Commands in progress by opid (`currentOp`, `killOp`).
    pub ops: Mutex<BTreeMap<u32, RunningOp>>,
    pub next_opid: std::sync::atomic::AtomicU32,
    /// The newest oplog sequence number; change-stream getMores wait on it.
    pub head: watch::Sender<u64>,
    pub standalone: bool,
    /// `host:port` as hello reports it (hosts, primary, me).
    pub host: String,
    pub started: Instant,
    pub process_id: ObjectId,
    pub counters: OpCounters,
    pub connections_current: AtomicI64,
    pub connections_total: AtomicU64,
    pub shutdown: watch::Receiver<bool>,
    /// The TTL monitor's interval (`ttlMonitorSleepSecs`).
    pub ttl_interval: watch::Sender<std::time::Duration>,
}

impl Shared {
    pub fn new(
        mut state: State,
        standalone: bool,
        host: String,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        state.standalone = standalone;
        let (head, _) = watch::channel(state.oplog.head_seq());
        Shared {
            state: Mutex::new(state),
            ops: Mutex::new(BTreeMap::new()),
            next_opid: std::sync::atomic::AtomicU32::new(1),
            head,
            standalone,
            host,
            started: Instant::now(),
            process_id: ObjectId::new(),
            counters: OpCounters::default(),
            connections_current: AtomicI64::new(0),
            connections_total: AtomicU64::new(0),
            shutdown,
            ttl_interval: watch::channel(crate::ttl::DEFAULT_INTERVAL).0,
        }
    }

    /// The state lock. A panic while holding it would poison it; commands do not panic on
    /// input, but if one ever did, the data is still consistent enough to keep serving tests.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn ops(&self) -> MutexGuard<'_, BTreeMap<u32, RunningOp>> {
        self.ops.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes change-stream getMores if the oplog grew.
    pub fn publish_head(&self, seq: u64) {
        self.head.send_if_modified(|h| {
            if seq > *h {
                *h = seq;
                true
            } else {
                false
            }
        });
    }
}

/// Resolves when shutdown has been signalled. Wrapping `wait_for` keeps its borrow guard (which
/// is not `Send`) out of callers' futures.
pub async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}
