//! `$collStats`, `currentOp` and `killOp` through the official Rust driver.

mod common;

use bson::{doc, Bson, Document};
use common::{command_error, TestEnv};
use futures::TryStreamExt;

fn num(d: &Document, key: &str) -> i64 {
    match d.get(key) {
        Some(Bson::Int32(i)) => *i as i64,
        Some(Bson::Int64(i)) => *i,
        Some(Bson::Double(f)) => *f as i64,
        other => panic!("{key} is not a number: {other:?} in {d}"),
    }
}

#[tokio::test]
async fn coll_stats_stage_reports_count_storage_and_latency() {
    let env = TestEnv::start("collstats_stage").await;
    let coll = env.coll("c");
    coll.insert_many((0..5).map(|i| doc! {"_id": i, "v": "x"}))
        .await
        .unwrap();
    let _: Vec<Document> = coll
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let out: Vec<Document> = coll
        .aggregate([
            doc! {"$collStats": {"count": {}, "storageStats": {"scale": 1}, "latencyStats": {"histograms": true}}},
        ])
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(out.len(), 1);
    let s = &out[0];
    assert_eq!(num(s, "count"), 5);
    let storage = s.get_document("storageStats").unwrap();
    assert_eq!(num(storage, "count"), 5);
    assert!(num(storage, "size") > 0);
    let lat = s.get_document("latencyStats").unwrap();
    assert!(
        num(lat.get_document("writes").unwrap(), "ops") >= 1,
        "{lat}"
    );
    assert!(num(lat.get_document("reads").unwrap(), "ops") >= 1, "{lat}");
    assert!(lat.get_document("reads").unwrap().contains_key("histogram"));
    assert!(s.get_str("ns").unwrap().ends_with(".c"));

    // Stages after it see its document.
    let out: Vec<Document> = coll
        .aggregate([
            doc! {"$collStats": {"count": {}}},
            doc! {"$project": {"count": 1, "_id": 0}},
        ])
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(out, [doc! {"count": 5i64}]);
    // Not first: 40602. Unknown section: 40415. storageStats of a missing collection: 26.
    let e = coll
        .aggregate([doc! {"$match": {}}, doc! {"$collStats": {}}])
        .await
        .unwrap_err();
    assert_eq!(command_error(&e).0, 40602);
    let e = coll
        .aggregate([doc! {"$collStats": {"bogus": {}}}])
        .await
        .unwrap_err();
    assert_eq!(command_error(&e).0, 40415);
    let e = env
        .coll("missing")
        .aggregate([doc! {"$collStats": {"storageStats": {}}}])
        .await
        .unwrap_err();
    assert_eq!(command_error(&e).0, 26);
    env.cleanup().await;
}

#[tokio::test]
async fn current_op_lists_itself_and_kill_op_ends_a_waiting_get_more() {
    let env = TestEnv::start("killop").await;
    let coll = env.coll("c");
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    let reply = env.admin(doc! {"currentOp": 1}).await.unwrap();
    let inprog = reply.get_array("inprog").unwrap();
    assert!(
        inprog.iter().any(|o| o
            .as_document()
            .and_then(|o| o.get_document("command").ok())
            .is_some_and(|c| c.contains_key("currentOp"))),
        "{reply}"
    );
    let e = env.db.run_command(doc! {"currentOp": 1}).await.unwrap_err();
    assert_eq!(command_error(&e).0, 13);

    // A change-stream cursor whose getMore waits a minute for the next write.
    let reply = env
        .db
        .run_command(doc! {"aggregate": "c", "pipeline": [{"$changeStream": {}}], "cursor": {}})
        .await
        .unwrap();
    let id = reply.get_document("cursor").unwrap().get_i64("id").unwrap();
    let waiting = {
        let db = env.db.clone();
        tokio::spawn(async move {
            db.run_command(doc! {"getMore": id, "collection": "c", "maxTimeMS": 60_000i64})
                .await
        })
    };
    // Find it in currentOp (the getMore is registered once the server received it).
    let opid = loop {
        let reply = env
            .admin(doc! {"currentOp": 1, "command.getMore": id})
            .await
            .unwrap();
        if let Some(op) = reply.get_array("inprog").unwrap().first() {
            let op = op.as_document().unwrap();
            assert_eq!(op.get_str("op"), Ok("getmore"));
            break num(op, "opid");
        }
        tokio::task::yield_now().await;
    };
    let reply = env.admin(doc! {"killOp": 1, "op": opid}).await.unwrap();
    assert_eq!(reply.get_str("info"), Ok("attempting to kill op"));
    let e = waiting.await.unwrap().unwrap_err();
    assert_eq!(command_error(&e), (11601, "Interrupted".into()));
    // The cursor went with it.
    let e = env
        .db
        .run_command(doc! {"getMore": id, "collection": "c"})
        .await
        .unwrap_err();
    assert_eq!(command_error(&e).0, 43);
    env.cleanup().await;
}
