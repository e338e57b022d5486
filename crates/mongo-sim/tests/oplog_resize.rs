//! `replSetResizeOplog` through the official Rust driver: MongoDB 7.0's argument rules, and
//! what a shrink does to the oplog window and to change streams (history lost, 286). The sim
//! extension `simMaxEvents` makes a shrink bite in a sim whose oplog is far below 990 MB.

mod common;

use bson::{doc, Bson, Document};
use common::{command_error, TestEnv};
use futures::StreamExt;
use futures::TryStreamExt;
use mongo_sim::SimConfig;
use std::time::Duration;

const EVENT_DEADLINE: Duration = Duration::from_secs(10);

fn num(d: &Document, key: &str) -> i64 {
    match d.get(key) {
        Some(Bson::Int32(i)) => *i as i64,
        Some(Bson::Int64(i)) => *i,
        Some(Bson::Double(f)) => *f as i64,
        other => panic!("{key} is not a number: {other:?} in {d}"),
    }
}

async fn oplog_first_ts(env: &TestEnv) -> bson::Timestamp {
    let oplog = env
        .client
        .database("local")
        .collection::<Document>("oplog.rs");
    let first: Vec<Document> = oplog
        .find(doc! {})
        .sort(doc! {"$natural": 1})
        .limit(1)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    first[0].get_timestamp("ts").unwrap()
}

#[tokio::test]
async fn arguments_follow_mongodb_7_0() {
    let env = TestEnv::start("resize_args").await;
    let err = |cmd: Document| {
        let env = &env;
        async move { command_error(&env.admin(cmd).await.unwrap_err()) }
    };
    // Too small, too big, negative retention: the IDL validators' 51024 (7.0).
    assert_eq!(
        err(doc! {"replSetResizeOplog": 1, "size": 900.0}).await.0,
        51024
    );
    assert_eq!(
        err(doc! {"replSetResizeOplog": 1, "size": -1024.0}).await.0,
        51024
    );
    let eight_eb = 8.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0;
    assert_eq!(
        err(doc! {"replSetResizeOplog": 1, "size": eight_eb})
            .await
            .0,
        51024
    );
    assert_eq!(
        err(doc! {"replSetResizeOplog": 1, "size": 990.0, "minRetentionHours": -1.0})
            .await
            .0,
        51024
    );
    assert_eq!(
        err(doc! {"replSetResizeOplog": 1, "size": "big"}).await.0,
        14
    );
    assert_eq!(
        err(doc! {"replSetResizeOplog": 1, "sizeMB": 990}).await.0,
        40415
    );
    // Only on admin.
    let e = env
        .db
        .run_command(doc! {"replSetResizeOplog": 1, "size": 990.0})
        .await
        .unwrap_err();
    assert_eq!(command_error(&e).0, 13);

    // The maximum (1 PB), size with retention, retention alone: all accepted and visible.
    let pb_mb = 1024.0 * 1024.0 * 1024.0;
    env.admin(doc! {"replSetResizeOplog": 1, "size": pb_mb})
        .await
        .unwrap();
    env.admin(doc! {"replSetResizeOplog": 1, "size": pb_mb, "minRetentionHours": 5})
        .await
        .unwrap();
    let status = env.admin(doc! {"serverStatus": 1}).await.unwrap();
    let trunc = status.get_document("oplogTruncation").unwrap();
    assert_eq!(trunc.get_f64("oplogMinRetentionHours"), Ok(5.0));
    env.admin(doc! {"replSetResizeOplog": 1, "minRetentionHours": 1})
        .await
        .unwrap();
    let stats = env
        .client
        .database("local")
        .run_command(doc! {"collStats": "oplog.rs"})
        .await
        .unwrap();
    assert_eq!(num(&stats, "maxSize"), 1024 * 1024 * 1024 * 1024 * 1024);
    assert_eq!(stats.get_bool("capped"), Ok(true));
    let status = env.admin(doc! {"serverStatus": 1}).await.unwrap();
    let trunc = status.get_document("oplogTruncation").unwrap();
    assert_eq!(trunc.get_f64("oplogMinRetentionHours"), Ok(1.0));
    env.admin(doc! {"replSetResizeOplog": 1, "minRetentionHours": 0})
        .await
        .unwrap();

    if env.is_sim() {
        // The sim's extension: a positive entry count.
        assert_eq!(
            err(doc! {"replSetResizeOplog": 1, "simMaxEvents": 0})
                .await
                .0,
            51024
        );
        assert_eq!(
            err(doc! {"replSetResizeOplog": 1, "simMaxEvents": "x"})
                .await
                .0,
            14
        );
    }
    env.cleanup().await;
}

#[tokio::test]
async fn a_standalone_server_has_no_oplog_to_resize() {
    let config = SimConfig {
        standalone: true,
        ..SimConfig::default()
    };
    let env = TestEnv::with_config("resize_standalone", config).await;
    if !env.is_sim() {
        return;
    }
    let e = env
        .admin(doc! {"replSetResizeOplog": 1, "size": 990.0})
        .await
        .unwrap_err();
    assert_eq!(command_error(&e), (26, "NamespaceNotFound".into()));
}

#[tokio::test]
async fn shrinking_the_oplog_truncates_history_and_resumes_fail_with_286() {
    let env = TestEnv::start("resize_shrink").await;
    if !env.is_sim() {
        return; // A real oplog cannot be shrunk below 990 MB, far above what a test writes.
    }
    let coll = env.coll("c");
    let mut cs = coll.watch().await.unwrap();
    coll.insert_one(doc! {"_id": 0}).await.unwrap();
    let first = tokio::time::timeout(EVENT_DEADLINE, cs.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let at = first.cluster_time.unwrap();
    coll.insert_many((1..=20).map(|i| doc! {"_id": i}))
        .await
        .unwrap();
    // Nothing lost yet.
    let window_before = oplog_first_ts(&env).await;
    let mut ok = coll.watch().resume_after(first.id.clone()).await.unwrap();
    let ev = tokio::time::timeout(EVENT_DEADLINE, ok.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(ev.document_key, Some(doc! {"_id": 1}));
    drop(ok);
    let stats = |env: &TestEnv| {
        let local = env.client.database("local");
        async move {
            local
                .run_command(doc! {"collStats": "oplog.rs"})
                .await
                .unwrap()
        }
    };
    let before = stats(&env).await;

    // Keep the 5 newest entries: the window moves forward past the reader's position.
    env.admin(doc! {"replSetResizeOplog": 1, "size": 990.0, "simMaxEvents": 5})
        .await
        .unwrap();
    let after = stats(&env).await;
    assert_eq!(num(&after, "count"), 5, "{after}");
    assert!(num(&after, "size") < num(&before, "size"));
    assert_eq!(num(&after, "maxSize"), 990 * 1024 * 1024);
    let window_after = oplog_first_ts(&env).await;
    assert!(
        (window_after.time, window_after.increment) > (window_before.time, window_before.increment)
    );
    let status = env.admin(doc! {"serverStatus": 1}).await.unwrap();
    let trunc = status.get_document("oplogTruncation").unwrap();
    assert!(num(trunc, "truncateCount") >= 1, "{trunc}");

    let err = coll
        .watch()
        .resume_after(first.id.clone())
        .await
        .unwrap_err();
    assert_eq!(command_error(&err), (286, "ChangeStreamHistoryLost".into()));
    let err = coll
        .watch()
        .start_after(first.id.clone())
        .await
        .unwrap_err();
    assert_eq!(command_error(&err).0, 286);
    let err = coll.watch().start_at_operation_time(at).await.unwrap_err();
    assert_eq!(command_error(&err).0, 286);
    // The stream still open at that position fails its next getMore (CappedPositionLost).
    let err = tokio::time::timeout(EVENT_DEADLINE, cs.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(command_error(&err).0, 136);

    // The new cap keeps holding: later writes push the window on.
    coll.insert_many((21..=30).map(|i| doc! {"_id": i}))
        .await
        .unwrap();
    assert_eq!(num(&stats(&env).await, "count"), 5);
    // A stream from a retained position still works.
    let oplog = env
        .client
        .database("local")
        .collection::<Document>("oplog.rs");
    assert_eq!(oplog.count_documents(doc! {}).await.unwrap(), 5);
}

#[tokio::test]
async fn min_retention_hours_keeps_young_entries_beyond_the_size() {
    let env = TestEnv::start("resize_retention").await;
    if !env.is_sim() {
        return;
    }
    let coll = env.coll("c");
    coll.insert_many((0..10).map(|i| doc! {"_id": i}))
        .await
        .unwrap();
    let count = |env: &TestEnv| {
        let local = env.client.database("local");
        async move {
            num(
                &local
                    .run_command(doc! {"collStats": "oplog.rs"})
                    .await
                    .unwrap(),
                "count",
            )
        }
    };
    let n = count(&env).await;
    // Every entry is younger than an hour: none may go, whatever the size.
    env.admin(doc! {"replSetResizeOplog": 1, "minRetentionHours": 1.0, "simMaxEvents": 2})
        .await
        .unwrap();
    assert_eq!(count(&env).await, n);
    coll.insert_one(doc! {"_id": 10}).await.unwrap();
    assert_eq!(count(&env).await, n + 1);
    // Retention back to 0: the size rules again, at once.
    env.admin(doc! {"replSetResizeOplog": 1, "minRetentionHours": 0})
        .await
        .unwrap();
    assert_eq!(count(&env).await, 2);
}
