//! `mongo-sse migrate`: through the binary (exit codes, output), and two runs at once through
//! the library; the indexes exist afterwards (`listIndexes`), and `serve` warns while
//! migrations are pending.

use std::process::Stdio;

use bson::{doc, Bson, Document};
use futures::TryStreamExt;
use mongo_sse::config::Config;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_mongo-sse");

fn command(mongo: &Mongo, args: &[&str], vars: &[(&str, &str)]) -> Command {
    let mut c = Command::new(BIN);
    c.env_clear()
        .env("NO_COLOR", "1")
        .env("MONGODB_URI", &mongo.uri)
        .env("MONGODB_DB", &mongo.db_name)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in vars {
        c.env(k, v);
    }
    c
}

/// Runs `mongo-sse migrate [args]`: exit code, stdout, stderr.
async fn migrate(mongo: &Mongo, args: &[&str]) -> (Option<i32>, String, String) {
    let mut all = vec!["migrate"];
    all.extend_from_slice(args);
    let child = command(mongo, &all, &[("SSE_EVENTS_TTL_SECS", "600")])
        .spawn()
        .expect("spawn mongo-sse migrate");
    let out = within(WAIT, "mongo-sse migrate to exit", child.wait_with_output())
        .await
        .expect("wait for mongo-sse migrate");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn records(mongo: &Mongo) -> Vec<Document> {
    mongo
        .db
        .collection::<Document>("_migrations")
        .find(doc! {})
        .sort(doc! {"version": 1})
        .await
        .expect("find _migrations")
        .try_collect()
        .await
        .expect("read _migrations")
}

/// `listIndexes` of `coll`: (name, key, expireAfterSeconds); empty when it does not exist.
async fn indexes(mongo: &Mongo, coll: &str) -> Vec<(String, Document, Option<i64>)> {
    let Ok(reply) = mongo.db.run_command(doc! {"listIndexes": coll}).await else {
        return Vec::new();
    };
    let batch = reply
        .get_document("cursor")
        .and_then(|c| c.get_array("firstBatch"))
        .cloned()
        .unwrap_or_default();
    batch
        .iter()
        .filter_map(Bson::as_document)
        .map(|d| {
            let ttl = match d.get("expireAfterSeconds") {
                Some(Bson::Int32(n)) => Some(i64::from(*n)),
                Some(Bson::Int64(n)) => Some(*n),
                Some(Bson::Double(f)) => Some(*f as i64),
                _ => None,
            };
            (
                d.get_str("name").unwrap_or_default().to_owned(),
                d.get_document("key").cloned().unwrap_or_default(),
                ttl,
            )
        })
        .collect()
}

fn names(idx: &[(String, Document, Option<i64>)]) -> Vec<&str> {
    idx.iter().map(|(n, _, _)| n.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_applies_in_order_records_and_is_idempotent() {
    let mongo = Mongo::start("migrate_basic").await;
    mongo.insert("w1", "f1", 1).await;

    // --dry-run: says what it would do, changes nothing.
    let (code, out, err) = migrate(&mongo, &["--dry-run"]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("0001_source_indexes.json: would apply"),
        "{out}"
    );
    assert!(out.contains("0002_events_ttl.json: would apply"), "{out}");
    assert!(
        out.contains("expireAfterSeconds=600"),
        "templated from the configuration: {out}"
    );
    assert!(records(&mongo).await.is_empty());
    assert_eq!(names(&indexes(&mongo, "logs").await), ["_id_"]);
    assert!(indexes(&mongo, "sse_events").await.is_empty());
    assert!(
        indexes(&mongo, "_migrations").await.is_empty(),
        "not even the collection"
    );

    let (code, out, err) = migrate(&mongo, &[]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    let a = out.find("0001_source_indexes.json: applied").expect(&out);
    let b = out.find("0002_events_ttl.json: applied").expect(&out);
    assert!(a < b, "in version order: {out}");
    let recs = records(&mongo).await;
    assert_eq!(recs.len(), 2, "{recs:?}");
    for (r, (v, name)) in recs.iter().zip([(1, "source_indexes"), (2, "events_ttl")]) {
        assert_eq!(r.get_i64("version").unwrap(), v, "{r}");
        assert_eq!(r.get_str("name").unwrap(), name);
        assert_eq!(r.get_str("state").unwrap(), "applied");
        assert!(r.get_str("checksum").unwrap().starts_with("sha256:"));
        assert!(r.get_datetime("applied_at").is_ok(), "{r}");
        assert!(
            !r.get_array("indexes").unwrap().is_empty(),
            "derived specs recorded: {r}"
        );
    }
    let logs = indexes(&mongo, "logs").await;
    assert!(
        logs.iter()
            .any(|(n, k, _)| n == "workspace_id_1_workflow_id_1__id_1"
                && *k == doc! {"workspace_id": 1, "workflow_id": 1, "_id": 1}),
        "{logs:?}"
    );
    let events = indexes(&mongo, "sse_events").await;
    assert!(names(&events).contains(&"channels_1__id_1"), "{events:?}");
    assert!(
        events
            .iter()
            .any(|(n, _, ttl)| n == "published_at_ttl" && *ttl == Some(600)),
        "{events:?}"
    );
    let version = indexes(&mongo, "_migrations").await;
    assert!(names(&version).contains(&"version_unique"), "{version:?}");

    // Second run: nothing to do, nothing rewritten.
    let (code, out, err) = migrate(&mongo, &[]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("0001_source_indexes.json: already applied"),
        "{out}"
    );
    assert!(
        out.contains("0002_events_ttl.json: already applied"),
        "{out}"
    );
    assert!(!out.contains(": applied\n"), "{out}");
    assert_eq!(records(&mongo).await, recs, "records unchanged");
    assert_eq!(indexes(&mongo, "sse_events").await, events);

    // An applied file whose bytes differ from what was recorded: refused, naming the file.
    mongo
        .db
        .collection::<Document>("_migrations")
        .update_one(
            doc! {"version": 2_i64},
            doc! {"$set": {"checksum": "sha256:0000"}},
        )
        .await
        .unwrap();
    let (code, out, err) = migrate(&mongo, &[]).await;
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("migrations/0002_events_ttl.json"), "{err}");
    assert!(err.contains("changed"), "{err}");
    let (code, _, err) = migrate(&mongo, &["--dry-run"]).await;
    assert_eq!(code, Some(1), "a dry run refuses too: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_runs_apply_each_file_once() {
    let mongo = Mongo::start("migrate_race").await;
    let config = Config::from_iter([
        ("SSE_AUTH".to_owned(), "none".to_owned()),
        ("MONGODB_URI".to_owned(), mongo.uri.clone()),
        ("MONGODB_DB".to_owned(), mongo.db_name.clone()),
    ])
    .unwrap();
    let files = mongo_sse::migrate::embedded().unwrap();
    // Two instances: two clients, two connection pools, started together.
    let c1 = mongodb::Client::with_uri_str(&mongo.uri).await.unwrap();
    let c2 = mongodb::Client::with_uri_str(&mongo.uri).await.unwrap();
    let (d1, d2) = (c1.database(&mongo.db_name), c2.database(&mongo.db_name));
    let (r1, r2) = tokio::join!(
        mongo_sse::migrate::run(&d1, &config, &files, false),
        mongo_sse::migrate::run(&d2, &config, &files, false),
    );
    let (r1, r2) = (r1.expect("first run"), r2.expect("second run"));
    for f in ["0001_source_indexes.json", "0002_events_ttl.json"] {
        let applied = |lines: &[String]| {
            lines
                .iter()
                .filter(|l| **l == format!("{f}: applied"))
                .count()
        };
        assert_eq!(
            applied(&r1) + applied(&r2),
            1,
            "{f} applied by exactly one run:\n{r1:#?}\n{r2:#?}"
        );
    }
    assert_eq!(records(&mongo).await.len(), 2);
    // The unique index is what made that safe: a second record for a version is refused.
    let dup = mongo
        .db
        .collection::<Document>("_migrations")
        .insert_one(doc! {"version": 1_i64})
        .await
        .unwrap_err();
    assert_eq!(mongo_sse::source::server_code(&dup), Some(11000), "{dup}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_warns_while_migrations_are_pending() {
    let mongo = Mongo::start("migrate_warn").await;
    let serve = |filter: &'static str| {
        let mut c = command(
            &mongo,
            &["serve"],
            &[
                ("SSE_AUTH", "none"),
                ("SSE_BIND", "127.0.0.1:0"),
                ("RUST_LOG", filter),
            ],
        );
        c.spawn().expect("spawn mongo-sse serve")
    };
    let await_line = |mut child: tokio::process::Child, want: &'static str| async move {
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let line = within(WAIT, want, async {
            while let Ok(Some(l)) = lines.next_line().await {
                if l.contains(want) {
                    return l;
                }
            }
            panic!("mongo-sse serve ended without logging {want:?}");
        })
        .await;
        let _ = child.start_kill();
        let _ = child.wait().await;
        line
    };
    let line = await_line(serve("info"), "migrations pending").await;
    assert!(line.contains("0001_source_indexes.json"), "{line}");
    assert!(line.contains("0002_events_ttl.json"), "{line}");
    assert!(line.contains("WARN"), "a warning, not a failure: {line}");

    let (code, out, err) = migrate(&mongo, &[]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    await_line(
        serve("info,mongo_sse::gateway=debug"),
        "migrations: all applied",
    )
    .await;
}
