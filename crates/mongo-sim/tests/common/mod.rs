//! Shared setup for the driver-level tests: an in-process mongo-sim per test, or the real
//! server named by `MONGODB_URI` (then every test works in a database of its own, and tests
//! that reconfigure the server itself — fail points — take a process-wide lock).

#![allow(dead_code)]

use bson::{Bson, Document};
use mongo_sim::{Sim, SimConfig};
use mongodb::error::{Error, ErrorKind, WriteFailure};
use mongodb::options::ClientOptions;
use mongodb::{Client, Collection, Database};
use std::sync::atomic::{AtomicU32, Ordering};

/// The real server to test against instead of mongo-sim, if any.
pub fn real_uri() -> Option<String> {
    std::env::var("MONGODB_URI").ok().filter(|u| !u.is_empty())
}

/// A database name no other test (or earlier run) uses.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let prefix: String = prefix.chars().take(40).collect();
    format!("{prefix}_{}_{n}_{nanos:x}", std::process::id())
}

pub struct TestEnv {
    pub uri: String,
    pub client: Client,
    pub db: Database,
    /// `None` when testing a real server.
    pub sim: Option<Sim>,
}

impl TestEnv {
    pub async fn start(name: &str) -> TestEnv {
        Self::with_config(name, SimConfig::default()).await
    }

    pub async fn with_config(name: &str, config: SimConfig) -> TestEnv {
        let (uri, sim) = match real_uri() {
            Some(uri) => (uri, None),
            None => {
                let sim = Sim::start(config).await.expect("start mongo-sim");
                (sim.uri(), Some(sim))
            }
        };
        let client = Client::with_uri_str(&uri).await.expect("client");
        let db = client.database(&unique_name(name));
        TestEnv {
            uri,
            client,
            db,
            sim,
        }
    }

    pub fn is_sim(&self) -> bool {
        self.sim.is_some()
    }

    pub fn coll(&self, name: &str) -> Collection<Document> {
        self.db.collection(name)
    }

    /// Another client to the same server, with options adjusted.
    pub async fn client_with(&self, adjust: impl FnOnce(&mut ClientOptions)) -> Client {
        let mut opts = ClientOptions::parse(&self.uri).await.expect("parse uri");
        adjust(&mut opts);
        Client::with_options(opts).expect("client")
    }

    /// Runs a command against `admin`.
    pub async fn admin(&self, cmd: Document) -> mongodb::error::Result<Document> {
        self.client.database("admin").run_command(cmd).await
    }

    /// Drops the test's database on a real server (mongo-sim simply goes away).
    pub async fn cleanup(self) {
        if self.sim.is_none() {
            let _ = self.db.drop().await;
        }
    }
}

/// `(code, codeName)` of a command error.
pub fn command_error(e: &Error) -> (i32, String) {
    match &*e.kind {
        ErrorKind::Command(c) => (c.code, c.code_name.clone()),
        other => panic!("expected a command error, got {other:?}"),
    }
}

/// The code of a single-document write error.
pub fn write_error_code(e: &Error) -> i32 {
    match &*e.kind {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code,
        other => panic!("expected a write error, got {other:?}"),
    }
}

/// The `_id`s of documents, as i32s.
pub fn ids(docs: &[Document]) -> Vec<i32> {
    docs.iter()
        .map(|d| match d.get("_id") {
            Some(Bson::Int32(i)) => *i,
            Some(Bson::Int64(i)) => *i as i32,
            Some(Bson::Double(f)) => *f as i32,
            other => panic!("unexpected _id {other:?} in {d}"),
        })
        .collect()
}

/// The `_data` string of a resume token, which sorts in commit order.
pub fn token_data(token: &mongodb::change_stream::event::ResumeToken) -> String {
    match bson::to_bson(token).expect("serialize token") {
        Bson::Document(d) => d.get_str("_data").expect("_data").to_string(),
        other => panic!("unexpected resume token {other:?}"),
    }
}

/// Serializes fail-point tests against a real server, where `failCommand` is global.
pub async fn fail_point_lock() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}
