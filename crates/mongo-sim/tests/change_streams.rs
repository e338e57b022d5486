//! Change streams through the official Rust driver: scopes, event shapes, invalidation,
//! resuming, the postBatchResumeToken, lost history, awaitData getMores, and MongoDB's size
//! limits (long resume tokens, 16 MiB batches, events too large to send).

mod common;

use bson::{doc, Bson, Document, Timestamp};
use common::{command_error, token_data, TestEnv};
use futures::StreamExt;
use mongo_sim::SimConfig;
use mongodb::change_stream::event::{ChangeStreamEvent, OperationType, ResumeToken};
use mongodb::change_stream::ChangeStream;
use mongodb::error::{Error, ErrorKind};
use mongodb::event::command::CommandEvent;
use mongodb::event::EventHandler;
use mongodb::options::FullDocumentType;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A guard against a hang, not a timing assertion: events here arrive in milliseconds.
const EVENT_DEADLINE: Duration = Duration::from_secs(10);
/// How long a getMore waits when a test checks that nothing more arrives.
const QUIET: Duration = Duration::from_millis(100);

async fn next<T>(cs: &mut ChangeStream<T>) -> T
where
    T: serde::de::DeserializeOwned + Unpin + Send + Sync,
{
    tokio::time::timeout(EVENT_DEADLINE, cs.next())
        .await
        .expect("no change event arrived")
        .expect("change stream ended")
        .expect("change stream error")
}

async fn next_n<T>(cs: &mut ChangeStream<T>, n: usize) -> Vec<T>
where
    T: serde::de::DeserializeOwned + Unpin + Send + Sync,
{
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(next(cs).await);
    }
    out
}

fn op(ev: &Document) -> &str {
    ev.get_str("operationType").unwrap()
}

fn key_ids(events: &[ChangeStreamEvent<Document>]) -> Vec<i32> {
    events
        .iter()
        .map(|e| e.document_key.as_ref().unwrap().get_i32("_id").unwrap())
        .collect()
}

#[tokio::test]
async fn collection_stream_reports_insert_update_replace_delete() {
    let env = TestEnv::start("cs_shapes").await;
    let coll = env.coll("c");
    let mut cs = coll
        .watch()
        .max_await_time(QUIET)
        .await
        .unwrap()
        .with_type::<Document>();
    coll.insert_one(doc! {"_id": 1, "a": 1, "n": {"k": 1}})
        .await
        .unwrap();
    coll.update_one(
        doc! {"_id": 1},
        doc! {"$set": {"b": 2, "n.k": 5}, "$unset": {"a": ""}},
    )
    .await
    .unwrap();
    coll.replace_one(doc! {"_id": 1}, doc! {"r": 1})
        .await
        .unwrap();
    coll.delete_one(doc! {"_id": 1}).await.unwrap();
    env.coll("other").insert_one(doc! {"_id": 9}).await.unwrap();

    let ns = doc! {"db": env.db.name(), "coll": "c"};
    let events = next_n(&mut cs, 4).await;
    for ev in &events {
        assert!(
            ev.get_document("_id").unwrap().contains_key("_data"),
            "{ev}"
        );
        assert!(
            matches!(ev.get("clusterTime"), Some(Bson::Timestamp(_))),
            "{ev}"
        );
        assert!(
            matches!(ev.get("wallTime"), Some(Bson::DateTime(_))),
            "{ev}"
        );
        assert_eq!(ev.get_document("ns").unwrap(), &ns);
        assert_eq!(ev.get_document("documentKey").unwrap(), &doc! {"_id": 1});
    }
    let [ins, upd, rep, del] = &events[..] else {
        unreachable!()
    };
    assert_eq!(op(ins), "insert");
    assert_eq!(
        ins.get_document("fullDocument").unwrap(),
        &doc! {"_id": 1, "a": 1, "n": {"k": 1}}
    );
    assert_eq!(op(upd), "update");
    assert_eq!(
        upd.get_document("updateDescription").unwrap(),
        &doc! {"updatedFields": {"b": 2, "n.k": 5}, "removedFields": ["a"], "truncatedArrays": []}
    );
    assert!(!upd.contains_key("fullDocument"), "{upd}");
    assert_eq!(op(rep), "replace");
    assert_eq!(
        rep.get_document("fullDocument").unwrap(),
        &doc! {"_id": 1, "r": 1}
    );
    assert_eq!(op(del), "delete");
    assert!(!del.contains_key("fullDocument"), "{del}");
    let tokens: Vec<String> = events
        .iter()
        .map(|e| {
            e.get_document("_id")
                .unwrap()
                .get_str("_data")
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "{tokens:?}");
    // The write to another collection is not an event of this stream.
    assert_eq!(cs.next_if_any().await.unwrap(), None);
    env.cleanup().await;
}

#[tokio::test]
async fn typed_events_parse_in_the_driver() {
    let env = TestEnv::start("cs_typed").await;
    let coll = env.coll("c");
    let mut cs = coll.watch().await.unwrap();
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    coll.update_one(doc! {"_id": 1}, doc! {"$set": {"x": 1}})
        .await
        .unwrap();
    let events = next_n(&mut cs, 2).await;
    assert_eq!(events[0].operation_type, OperationType::Insert);
    assert_eq!(events[0].full_document, Some(doc! {"_id": 1}));
    assert_eq!(events[1].operation_type, OperationType::Update);
    let desc = events[1].update_description.as_ref().unwrap();
    assert_eq!(desc.updated_fields, doc! {"x": 1});
    assert!(desc.removed_fields.is_empty());
    assert_eq!(
        events[1].ns.as_ref().unwrap().coll.as_deref(),
        Some("c"),
        "{:?}",
        events[1].ns
    );
    env.cleanup().await;
}

#[tokio::test]
async fn update_lookup_returns_the_current_document() {
    let env = TestEnv::start("cs_lookup").await;
    let coll = env.coll("c");
    let mut cs = coll
        .watch()
        .full_document(FullDocumentType::UpdateLookup)
        .await
        .unwrap()
        .with_type::<Document>();
    coll.insert_one(doc! {"_id": 1, "a": 1}).await.unwrap();
    coll.update_one(doc! {"_id": 1}, doc! {"$set": {"a": 2}})
        .await
        .unwrap();
    coll.update_one(doc! {"_id": 1}, doc! {"$set": {"a": 3}})
        .await
        .unwrap();
    let events = next_n(&mut cs, 3).await;
    assert_eq!(
        events[1].get_document("updateDescription").unwrap(),
        &doc! {"updatedFields": {"a": 2}, "removedFields": [], "truncatedArrays": []}
    );
    // The lookup happens when the event is read: both updates see the latest document.
    assert_eq!(
        events[1].get_document("fullDocument").unwrap(),
        &doc! {"_id": 1, "a": 3}
    );
    assert_eq!(
        events[2].get_document("fullDocument").unwrap(),
        &doc! {"_id": 1, "a": 3}
    );
    // A document deleted before the update event is read has no post-image.
    coll.update_one(doc! {"_id": 1}, doc! {"$set": {"a": 4}})
        .await
        .unwrap();
    coll.delete_one(doc! {"_id": 1}).await.unwrap();
    let events = next_n(&mut cs, 2).await;
    assert_eq!(op(&events[0]), "update");
    assert_eq!(events[0].get("fullDocument"), Some(&Bson::Null));
    assert_eq!(op(&events[1]), "delete");
    env.cleanup().await;
}

#[tokio::test]
async fn drop_ends_a_collection_stream_with_invalidate() {
    let env = TestEnv::start("cs_drop").await;
    let coll = env.coll("c");
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    let mut cs = coll.watch().await.unwrap().with_type::<Document>();
    coll.drop().await.unwrap();
    let drop = next(&mut cs).await;
    assert_eq!(op(&drop), "drop");
    assert_eq!(
        drop.get_document("ns").unwrap(),
        &doc! {"db": env.db.name(), "coll": "c"}
    );
    let inv = next(&mut cs).await;
    assert_eq!(op(&inv), "invalidate");
    assert!(matches!(inv.get("clusterTime"), Some(Bson::Timestamp(_))));
    assert!(!inv.contains_key("ns"), "{inv}");
    assert!(cs.next().await.is_none(), "an invalidated stream ends");
    assert!(!cs.is_alive());

    // Resuming from the drop itself cannot step past the invalidate it causes.
    let drop_token: ResumeToken = bson::from_bson(drop.get("_id").unwrap().clone()).unwrap();
    let mut resumed = coll
        .watch()
        .resume_after(drop_token)
        .await
        .unwrap()
        .with_type::<Document>();
    let again = next(&mut resumed).await;
    assert_eq!(op(&again), "invalidate");
    assert_eq!(again.get("_id"), inv.get("_id"));
    assert!(resumed.next().await.is_none());

    // startAfter an invalidate opens a new stream on the collection; resumeAfter may not.
    let inv_token: ResumeToken = bson::from_bson(inv.get("_id").unwrap().clone()).unwrap();
    let err = coll
        .watch()
        .resume_after(inv_token.clone())
        .await
        .unwrap_err();
    assert_eq!(command_error(&err).0, 260);
    let mut after = coll.watch().start_after(inv_token).await.unwrap();
    coll.insert_one(doc! {"_id": 2}).await.unwrap();
    assert_eq!(key_ids(&[next(&mut after).await]), [2]);
    env.cleanup().await;
}

#[tokio::test]
async fn rename_ends_a_collection_stream_with_invalidate() {
    let env = TestEnv::start("cs_rename").await;
    let coll = env.coll("c");
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    let mut cs = coll.watch().await.unwrap().with_type::<Document>();
    let name = env.db.name();
    env.admin(doc! {"renameCollection": format!("{name}.c"), "to": format!("{name}.d")})
        .await
        .unwrap();
    let rename = next(&mut cs).await;
    assert_eq!(op(&rename), "rename");
    assert_eq!(
        rename.get_document("ns").unwrap(),
        &doc! {"db": name, "coll": "c"}
    );
    assert_eq!(
        rename.get_document("to").unwrap(),
        &doc! {"db": name, "coll": "d"}
    );
    assert_eq!(op(&next(&mut cs).await), "invalidate");
    assert!(cs.next().await.is_none());
    env.cleanup().await;
}

#[tokio::test]
async fn database_stream_sees_every_collection_and_ends_at_drop_database() {
    let env = TestEnv::start("cs_db").await;
    let mut cs = env.db.watch().await.unwrap().with_type::<Document>();
    env.coll("a").insert_one(doc! {"_id": 1}).await.unwrap();
    env.coll("b").insert_one(doc! {"_id": 2}).await.unwrap();
    env.coll("a").drop().await.unwrap();
    env.coll("b").insert_one(doc! {"_id": 3}).await.unwrap();
    env.db.drop().await.unwrap();

    let mut seen = Vec::new();
    while let Some(ev) = tokio::time::timeout(EVENT_DEADLINE, cs.next())
        .await
        .expect("no change event arrived")
    {
        let ev = ev.unwrap();
        let coll = ev
            .get_document("ns")
            .ok()
            .and_then(|ns| ns.get_str("coll").ok())
            .unwrap_or("")
            .to_string();
        seen.push((op(&ev).to_string(), coll));
    }
    let want: Vec<(String, String)> = [
        ("insert", "a"),
        ("insert", "b"),
        ("drop", "a"),
        ("insert", "b"),
        ("drop", "b"),
        ("dropDatabase", ""),
        ("invalidate", ""),
    ]
    .iter()
    .map(|(o, c)| (o.to_string(), c.to_string()))
    .collect();
    assert_eq!(seen, want);
}

#[tokio::test]
async fn cluster_stream_sees_every_database() {
    let env = TestEnv::start("cs_cluster").await;
    let other = env.client.database(&common::unique_name("cs_cluster_b"));
    let dbs = [env.db.name(), other.name()];
    let mut cs = env
        .client
        .watch()
        .pipeline([doc! {"$match": {"ns.db": {"$in": dbs.to_vec()}}}])
        .await
        .unwrap()
        .with_type::<Document>();
    env.coll("c").insert_one(doc! {"_id": 1}).await.unwrap();
    other
        .collection::<Document>("c")
        .insert_one(doc! {"_id": 2})
        .await
        .unwrap();
    env.coll("d").insert_one(doc! {"_id": 3}).await.unwrap();
    let events = next_n(&mut cs, 3).await;
    let seen: Vec<(String, String, i32)> = events
        .iter()
        .map(|e| {
            let ns = e.get_document("ns").unwrap();
            (
                ns.get_str("db").unwrap().to_string(),
                ns.get_str("coll").unwrap().to_string(),
                e.get_document("documentKey")
                    .unwrap()
                    .get_i32("_id")
                    .unwrap(),
            )
        })
        .collect();
    let want = vec![
        (dbs[0].to_string(), "c".to_string(), 1),
        (dbs[1].to_string(), "c".to_string(), 2),
        (dbs[0].to_string(), "d".to_string(), 3),
    ];
    assert_eq!(seen, want);
    if !env.is_sim() {
        let _ = other.drop().await;
    }
    env.cleanup().await;
}

#[tokio::test]
async fn resume_after_and_start_after_return_exactly_the_later_events() {
    let env = TestEnv::start("cs_resume").await;
    let coll = env.coll("c");
    let mut cs = coll.watch().await.unwrap();
    coll.insert_many((1..=3).map(|i| doc! {"_id": i}))
        .await
        .unwrap();
    let events = next_n(&mut cs, 3).await;
    assert_eq!(key_ids(&events), [1, 2, 3]);
    coll.insert_one(doc! {"_id": 4}).await.unwrap();

    let mut resumed = coll
        .watch()
        .resume_after(events[0].id.clone())
        .max_await_time(QUIET)
        .await
        .unwrap();
    assert_eq!(key_ids(&next_n(&mut resumed, 3).await), [2, 3, 4]);
    assert!(resumed.next_if_any().await.unwrap().is_none());

    let mut started = coll
        .watch()
        .start_after(events[1].id.clone())
        .max_await_time(QUIET)
        .await
        .unwrap();
    assert_eq!(key_ids(&next_n(&mut started, 2).await), [3, 4]);
    assert!(started.next_if_any().await.unwrap().is_none());

    env.cleanup().await;
}

#[tokio::test]
async fn start_at_operation_time_includes_the_event_at_that_time() {
    let env = TestEnv::start("cs_optime").await;
    let coll = env.coll("c");
    let mut cs = coll.watch().await.unwrap();
    for i in 1..=3 {
        coll.insert_one(doc! {"_id": i}).await.unwrap();
    }
    let events = next_n(&mut cs, 3).await;
    let at = events[1].cluster_time.unwrap();
    let mut from = coll
        .watch()
        .start_at_operation_time(at)
        .max_await_time(QUIET)
        .await
        .unwrap();
    assert_eq!(key_ids(&next_n(&mut from, 2).await), [2, 3]);
    assert!(from.next_if_any().await.unwrap().is_none());
    env.cleanup().await;
}

#[tokio::test]
async fn post_batch_resume_token_advances_past_other_collections_writes() {
    let env = TestEnv::start("cs_pbrt").await;
    let a = env.coll("a");
    let mut cs = a.watch().max_await_time(QUIET).await.unwrap();
    let t0 = cs.resume_token().expect("initial postBatchResumeToken");
    env.coll("b")
        .insert_many((0..3).map(|i| doc! {"_id": i}))
        .await
        .unwrap();
    // The driver hands out the aggregate's (empty) first batch before its first getMore, so
    // give it a few rounds; each is one getMore that ends after QUIET with no event.
    let mut t1 = t0.clone();
    for _ in 0..3 {
        assert!(cs.next_if_any().await.unwrap().is_none());
        t1 = cs.resume_token().unwrap();
        if t1 != t0 {
            break;
        }
    }
    assert!(
        token_data(&t1) > token_data(&t0),
        "{} !> {}",
        token_data(&t1),
        token_data(&t0)
    );

    // Resuming from the advanced token yields exactly what happens in A afterwards.
    a.insert_one(doc! {"_id": 1}).await.unwrap();
    let mut resumed = a.watch().resume_after(t1).await.unwrap();
    assert_eq!(key_ids(&[next(&mut resumed).await]), [1]);
    assert_eq!(key_ids(&[next(&mut cs).await]), [1]);
    env.cleanup().await;
}

#[tokio::test]
async fn a_filtering_pipeline_still_advances_the_resume_token() {
    let env = TestEnv::start("cs_filter").await;
    let logs = env.coll("logs");
    let mut cs = env
        .db
        .watch()
        .pipeline([doc! {"$match": {"operationType": "insert", "fullDocument.w": "w1"}}])
        .max_await_time(QUIET)
        .await
        .unwrap()
        .with_type::<Document>();
    let t0 = cs.resume_token().unwrap();
    logs.insert_many((0..3).map(|i| doc! {"_id": i, "w": "w2"}))
        .await
        .unwrap();
    let mut t1 = t0.clone();
    for _ in 0..3 {
        assert_eq!(cs.next_if_any().await.unwrap(), None);
        t1 = cs.resume_token().unwrap();
        if t1 != t0 {
            break;
        }
    }
    assert!(token_data(&t1) > token_data(&t0));
    logs.insert_one(doc! {"_id": 10, "w": "w1"}).await.unwrap();
    let ev = next(&mut cs).await;
    assert_eq!(
        ev.get_document("fullDocument").unwrap(),
        &doc! {"_id": 10, "w": "w1"}
    );
    env.cleanup().await;
}

#[tokio::test]
async fn a_pipeline_that_changes_the_id_is_a_fatal_error() {
    let env = TestEnv::start("cs_fatal").await;
    let coll = env.coll("c");
    let mut cs = coll
        .watch()
        .pipeline([doc! {"$project": {"_id": 0}}])
        .await
        .unwrap();
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    let err = tokio::time::timeout(EVENT_DEADLINE, cs.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(command_error(&err).0, 280);
    env.cleanup().await;
}

#[tokio::test]
async fn small_batches_deliver_every_event_in_order() {
    let env = TestEnv::start("cs_batches").await;
    let coll = env.coll("c");
    let mut cs = coll.watch().batch_size(4).await.unwrap();
    coll.insert_many((0..30).map(|i| doc! {"_id": i}))
        .await
        .unwrap();
    assert_eq!(
        key_ids(&next_n(&mut cs, 30).await),
        (0..30).collect::<Vec<_>>()
    );
    env.cleanup().await;
}

#[tokio::test]
async fn resuming_from_a_truncated_position_loses_history() {
    let config = SimConfig {
        oplog_max_events: 8,
        ..SimConfig::default()
    };
    let env = TestEnv::with_config("cs_lost", config).await;
    if !env.is_sim() {
        return; // The oplog size of a real server is not ours to shrink.
    }
    let coll = env.coll("c");
    let mut cs = coll.watch().await.unwrap();
    coll.insert_one(doc! {"_id": 0}).await.unwrap();
    let first = next(&mut cs).await;
    let at = first.cluster_time.unwrap();
    coll.insert_many((1..=20).map(|i| doc! {"_id": i}))
        .await
        .unwrap();

    let err = coll
        .watch()
        .resume_after(first.id.clone())
        .await
        .unwrap_err();
    assert_eq!(command_error(&err), (286, "ChangeStreamHistoryLost".into()));
    let err = coll.watch().start_at_operation_time(at).await.unwrap_err();
    assert_eq!(command_error(&err).0, 286);
    // The open stream fell behind too: like MongoDB's tailable oplog scan its getMore fails
    // with CappedPositionLost (jstests/change_streams/oplog_rollover.js), which the driver does
    // not resume.
    let err = tokio::time::timeout(EVENT_DEADLINE, cs.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(command_error(&err), (136, "CappedPositionLost".into()));
}

#[tokio::test]
async fn a_standalone_server_has_no_change_streams() {
    let config = SimConfig {
        standalone: true,
        ..SimConfig::default()
    };
    let env = TestEnv::with_config("cs_standalone", config).await;
    if !env.is_sim() {
        return;
    }
    let hello = env.admin(doc! {"hello": 1}).await.unwrap();
    assert!(!hello.contains_key("setName"), "{hello}");
    env.coll("c").insert_one(doc! {"_id": 1}).await.unwrap();
    let err = env.coll("c").watch().await.unwrap_err();
    assert_eq!(command_error(&err).0, 40573);
    let err = env.db.watch().await.unwrap_err();
    assert_eq!(command_error(&err).0, 40573);
}

#[tokio::test]
async fn a_waiting_get_more_is_woken_by_a_write() {
    let env = TestEnv::start("cs_wake").await;
    let coll = env.coll("c");
    // maxAwaitTime far beyond the test's patience: the event must come from the wake-up.
    let mut cs = coll
        .watch()
        .max_await_time(Duration::from_secs(60))
        .await
        .unwrap();
    let admin = env.client.database("admin");
    let getmores = |d: Document| {
        d.get_document("opcounters")
            .unwrap()
            .get("getmore")
            .and_then(Bson::as_i64)
            .or_else(|| {
                d.get_document("opcounters")
                    .unwrap()
                    .get_i32("getmore")
                    .ok()
                    .map(i64::from)
            })
            .unwrap()
    };
    let before = getmores(admin.run_command(doc! {"serverStatus": 1}).await.unwrap());
    let writer = {
        let coll = coll.clone();
        tokio::spawn(async move {
            // Write once the stream's getMore has reached the server and is waiting.
            loop {
                let now = getmores(admin.run_command(doc! {"serverStatus": 1}).await.unwrap());
                if now > before {
                    break;
                }
                tokio::task::yield_now().await;
            }
            coll.insert_one(doc! {"_id": 1}).await.unwrap();
        })
    };
    let ev = next(&mut cs).await;
    assert_eq!(key_ids(&[ev]), [1]);
    writer.await.unwrap();
    env.cleanup().await;
}

/// The message of a command error.
fn error_message(e: &Error) -> String {
    match &*e.kind {
        ErrorKind::Command(c) => c.message.clone(),
        other => panic!("expected a command error, got {other:?}"),
    }
}

/// The error a stream fails with, whether the server reports it to the `aggregate` that opens
/// the stream or to a later `getMore` (MongoDB does either, depending on when it meets it).
async fn stream_error<T>(opened: mongodb::error::Result<ChangeStream<T>>) -> Error
where
    T: serde::de::DeserializeOwned + Unpin + Send + Sync,
{
    match opened {
        Err(e) => e,
        Ok(mut cs) => tokio::time::timeout(EVENT_DEADLINE, cs.next())
            .await
            .expect("the stream neither failed nor delivered")
            .expect("change stream ended")
            .err()
            .expect("the stream delivered an event instead of failing"),
    }
}

/// The cluster-time prefix every resume token starts with, MongoDB's and mongo-sim's alike:
/// `82`, then the time's seconds and increment as 8 uppercase hex digits each.
fn time_prefix(ts: Timestamp) -> String {
    format!("82{:08X}{:08X}", ts.time, ts.increment)
}

fn is_upper_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'A'..=b'F'))
}

fn token(data: &str) -> ResumeToken {
    bson::from_bson(Bson::Document(doc! {"_data": data})).unwrap()
}

#[tokio::test]
async fn a_long_id_makes_a_long_token_that_resumes_only_to_the_same_event() {
    let env = TestEnv::start("cs_long_id").await;
    let coll = env.coll("c");
    let mut cs = coll.watch().await.unwrap();
    let long_id = "x".repeat(3000);
    coll.insert_one(doc! {"_id": &long_id}).await.unwrap();
    coll.insert_one(doc! {"_id": 2}).await.unwrap();
    let events = next_n(&mut cs, 2).await;
    assert_eq!(
        events[0].document_key,
        Some(doc! {"_id": &long_id}),
        "the event names the long id"
    );
    let (long, short) = (token_data(&events[0].id), token_data(&events[1].id));
    // The token embeds the document key, about two hex digits per byte of _id.
    assert!(long.len() > 6000, "token of {} hex digits", long.len());
    assert!(short.len() < 200, "{short}");
    for (ev, data) in events.iter().zip([&long, &short]) {
        assert!(is_upper_hex(data), "{data}");
        assert!(
            data.starts_with(&time_prefix(ev.cluster_time.unwrap())),
            "{data}"
        );
    }
    // Length does not disturb the order: the time prefix decides.
    assert!(long < short);

    let mut resumed = coll
        .watch()
        .resume_after(events[0].id.clone())
        .max_await_time(QUIET)
        .await
        .unwrap();
    assert_eq!(key_ids(&[next(&mut resumed).await]), [2]);
    assert!(resumed.next_if_any().await.unwrap().is_none());

    // One byte of the id changed ('x' to 'y', in the middle of the key): the position holds
    // another event now, so the token was not found, and resuming must not guess.
    let run = long
        .find(&"78".repeat(1000))
        .expect("the id's bytes in the token");
    let at = run + 1000;
    let tampered = format!("{}79{}", &long[..at], &long[at + 2..]);
    let err = stream_error(coll.watch().resume_after(token(&tampered)).await).await;
    assert_eq!(command_error(&err), (280, "ChangeStreamFatalError".into()));
    let msg = error_message(&err);
    assert!(
        msg.contains("cannot resume stream; the resume token was not found"),
        "{msg}"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn a_token_is_checked_against_the_event_at_its_position() {
    let env = TestEnv::start("cs_token_check").await;
    if !env.is_sim() {
        return; // Builds tokens in mongo-sim's own format.
    }
    let coll = env.coll("c");
    let mut cs = coll.watch().await.unwrap();
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    coll.insert_one(doc! {"_id": 2}).await.unwrap();
    let events = next_n(&mut cs, 2).await;
    let (one, two) = (token_data(&events[0].id), token_data(&events[1].id));
    // Event 2's key at event 1's position, as a token from another server would be.
    let mixed = format!("{}{}", &one[..36], &two[36..]);
    let err = stream_error(coll.watch().resume_after(token(&mixed)).await).await;
    assert_eq!(command_error(&err).0, 280);
    // Event 1's key with a cluster time that is not event 1's.
    let mut wrong_time = one.clone();
    wrong_time.replace_range(10..18, "0000FFFF");
    let err = stream_error(coll.watch().resume_after(token(&wrong_time)).await).await;
    assert_eq!(command_error(&err).0, 280);
    // A position this server never reached.
    let ahead = format!("{}00000000000F424001{}", &one[..18], &one[36..]);
    let err = stream_error(coll.watch().resume_after(token(&ahead)).await).await;
    assert_eq!(command_error(&err).0, 280);
    // A key that is not BSON is not a token at all.
    let garbage = format!("{}0500000000", &one[..36]);
    let err = coll
        .watch()
        .resume_after(token(&garbage))
        .await
        .unwrap_err();
    assert_eq!(command_error(&err).0, 2);
    // The fixed-width prefix alone (the shape of a high-water mark, kind 03) still resumes.
    let hwm = format!("{}03", &one[..34]);
    let mut resumed = coll.watch().resume_after(token(&hwm)).await.unwrap();
    assert_eq!(key_ids(&[next(&mut resumed).await]), [2]);
}

/// `(command, documents, bytes)` of every change-stream batch the client receives.
type Batches = Arc<Mutex<Vec<(String, usize, usize)>>>;

async fn batch_recording_client(env: &TestEnv) -> (mongodb::Client, Batches) {
    let batches: Batches = Arc::default();
    let sink = batches.clone();
    let client = env
        .client_with(|o| {
            o.command_event_handler = Some(EventHandler::callback(move |ev: CommandEvent| {
                let CommandEvent::Succeeded(s) = ev else {
                    return;
                };
                let Ok(cursor) = s.reply.get_document("cursor") else {
                    return;
                };
                let batch = cursor
                    .get_array("firstBatch")
                    .or_else(|_| cursor.get_array("nextBatch"));
                if let Ok(batch) = batch {
                    let bytes = batch
                        .iter()
                        .map(|d| bson::to_vec(d.as_document().unwrap()).unwrap().len())
                        .sum();
                    sink.lock()
                        .unwrap()
                        .push((s.command_name.clone(), batch.len(), bytes));
                }
            }));
        })
        .await;
    (client, batches)
}

#[tokio::test]
async fn one_megabyte_events_arrive_in_batches_of_at_most_16_mib() {
    let env = TestEnv::start("cs_big_batches").await;
    let (client, batches) = batch_recording_client(&env).await;
    let coll = client.database(env.db.name()).collection::<Document>("c");
    // Reads the events through getMores as they are written...
    let mut live = coll.watch().await.unwrap();
    let before = live.resume_token().unwrap();
    let pad = "p".repeat(1_000_000);
    coll.insert_many((0..60).map(|i| doc! {"_id": i, "pad": &pad}))
        .await
        .unwrap();
    let all: Vec<i32> = (0..60).collect();
    assert_eq!(key_ids(&next_n(&mut live, 60).await), all);
    // ...and from the history at once, where the aggregate's first batch could hold them all.
    let mut resumed = coll.watch().resume_after(before).await.unwrap();
    assert_eq!(key_ids(&next_n(&mut resumed, 60).await), all);

    let batches = batches.lock().unwrap().clone();
    let limit = 16 * 1024 * 1024;
    assert!(
        batches.iter().all(|(_, _, bytes)| *bytes <= limit),
        "{batches:?}"
    );
    let delivered: usize = batches.iter().map(|(_, n, _)| n).sum();
    assert_eq!(delivered, 120, "{batches:?}");
    assert!(
        batches
            .iter()
            .any(|(cmd, n, _)| cmd == "aggregate" && *n > 0),
        "the resumed stream's first batch carries events: {batches:?}"
    );
    assert!(
        batches.iter().filter(|(_, n, _)| *n > 0).count() >= 8,
        "60 MB in 16 MiB batches, twice: {batches:?}"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn an_event_over_16_mib_fails_the_stream_with_bson_object_too_large() {
    let env = TestEnv::start("cs_too_large").await;
    let coll = env.coll("c");
    let mut lookup = coll
        .watch()
        .full_document(FullDocumentType::UpdateLookup)
        .await
        .unwrap()
        .with_type::<Document>();
    let mut plain = coll.watch().await.unwrap().with_type::<Document>();
    let half = "h".repeat(8_000_000);
    coll.insert_one(doc! {"_id": 1, "a": &half}).await.unwrap();
    let insert = next(&mut lookup).await;
    assert_eq!(op(&insert), "insert");
    assert_eq!(op(&next(&mut plain).await), "insert");

    // An 8 MB change to a 16 MB document: with the looked-up document the event is 24 MB.
    coll.update_one(doc! {"_id": 1}, doc! {"$set": {"b": &half}})
        .await
        .unwrap();
    coll.insert_one(doc! {"_id": 2}).await.unwrap();
    let err = tokio::time::timeout(EVENT_DEADLINE, lookup.next())
        .await
        .expect("no answer")
        .expect("change stream ended")
        .unwrap_err();
    assert_eq!(command_error(&err), (10334, "BSONObjectTooLarge".into()));
    let msg = error_message(&err);
    assert!(msg.contains("BSONObj size: "), "{msg}");

    // Without the post-image the same update is 8 MB and arrives.
    let update = next(&mut plain).await;
    assert_eq!(op(&update), "update");
    assert_eq!(op(&next(&mut plain).await), "insert");
    let at = match update.get("clusterTime") {
        Some(Bson::Timestamp(t)) => *t,
        other => panic!("clusterTime {other:?}"),
    };
    if env.is_sim() {
        // The message names the event, so a consumer can tell which one to step over.
        assert!(
            msg.contains(&format!("_data: \"{}", time_prefix(at))),
            "{msg}"
        );
    }

    // Resuming runs into it again: the driver does not resume this error by itself.
    let insert_token: ResumeToken = bson::from_bson(insert.get("_id").unwrap().clone()).unwrap();
    let again = coll
        .watch()
        .full_document(FullDocumentType::UpdateLookup)
        .resume_after(insert_token)
        .await;
    assert_eq!(command_error(&stream_error(again).await).0, 10334);
    // Starting just past it skips exactly that event.
    let mut past = coll
        .watch()
        .full_document(FullDocumentType::UpdateLookup)
        .start_at_operation_time(Timestamp {
            time: at.time,
            increment: at.increment + 1,
        })
        .await
        .unwrap();
    assert_eq!(key_ids(&[next(&mut past).await]), [2]);

    // MongoDB 7.0's way out: $changeStreamSplitLargeEvent delivers the same event in fragments,
    // each with its own resume token and `splitEvent: {fragment, of}`.
    let insert_token: ResumeToken = bson::from_bson(insert.get("_id").unwrap().clone()).unwrap();
    let split_stream = || {
        coll.watch()
            .full_document(FullDocumentType::UpdateLookup)
            .pipeline([doc! {"$changeStreamSplitLargeEvent": {}}])
    };
    let mut split = split_stream()
        .resume_after(insert_token.clone())
        .await
        .unwrap()
        .with_type::<Document>();
    let first = next(&mut split).await;
    let second = next(&mut split).await;
    assert_eq!(
        first.get_document("splitEvent").unwrap(),
        &doc! {"fragment": 1, "of": 2}
    );
    assert_eq!(
        second.get_document("splitEvent").unwrap(),
        &doc! {"fragment": 2, "of": 2}
    );
    assert_eq!(op(&first), "update");
    assert!(first.contains_key("updateDescription") && !first.contains_key("fullDocument"));
    let full = second.get_document("fullDocument").unwrap();
    assert_eq!(full.get_str("b").unwrap().len(), half.len());
    let (t1, t2) = (
        first.get_document("_id").unwrap().clone(),
        second.get_document("_id").unwrap().clone(),
    );
    assert!(t1.get_str("_data").unwrap() < t2.get_str("_data").unwrap());
    let after = next(&mut split).await;
    assert_eq!(op(&after), "insert");
    assert!(!after.contains_key("splitEvent"));

    // Resuming from the first fragment delivers the second, then what follows.
    let t1: ResumeToken = bson::from_bson(Bson::Document(t1)).unwrap();
    let mut resumed = split_stream()
        .resume_after(t1.clone())
        .await
        .unwrap()
        .with_type::<Document>();
    let again = next(&mut resumed).await;
    assert_eq!(
        again.get_document("splitEvent").unwrap(),
        &doc! {"fragment": 2, "of": 2}
    );
    assert_eq!(op(&next(&mut resumed).await), "insert");
    // A fragment's token resumes only a stream that splits.
    let unsplit = coll.watch().resume_after(t1).await;
    assert_eq!(
        command_error(&stream_error(unsplit).await).0,
        280,
        "ChangeStreamFatalError"
    );
    // The stage must come last.
    let misplaced = coll
        .watch()
        .pipeline([
            doc! {"$changeStreamSplitLargeEvent": {}},
            doc! {"$match": {"operationType": "update"}},
        ])
        .await;
    assert_eq!(command_error(&misplaced.unwrap_err()).0, 7182802);
    env.cleanup().await;
}

#[tokio::test]
async fn start_at_operation_time_just_after_an_event_skips_exactly_that_event() {
    let env = TestEnv::start("cs_optime_after").await;
    let coll = env.coll("c");
    let mut cs = coll.watch().await.unwrap();
    for i in 1..=3 {
        coll.insert_one(doc! {"_id": i}).await.unwrap();
    }
    let events = next_n(&mut cs, 3).await;
    let t = events[1].cluster_time.unwrap();
    let mut from = coll
        .watch()
        .start_at_operation_time(Timestamp {
            time: t.time,
            increment: t.increment + 1,
        })
        .max_await_time(QUIET)
        .await
        .unwrap();
    assert_eq!(key_ids(&[next(&mut from).await]), [3]);
    assert!(from.next_if_any().await.unwrap().is_none());
    coll.insert_one(doc! {"_id": 4}).await.unwrap();
    assert_eq!(key_ids(&[next(&mut from).await]), [4]);
    env.cleanup().await;
}

#[tokio::test]
async fn start_at_an_operation_time_not_yet_reached_waits_for_it() {
    let env = TestEnv::start("cs_optime_ahead").await;
    let coll = env.coll("c");
    let mut cs = coll.watch().await.unwrap();
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    let t = next(&mut cs).await.cluster_time.unwrap();

    // Just past the newest write: nothing yet, then exactly the writes that follow.
    let mut next_up = coll
        .watch()
        .start_at_operation_time(Timestamp {
            time: t.time,
            increment: t.increment + 1,
        })
        .max_await_time(QUIET)
        .await
        .unwrap();
    // Two rounds: the driver hands out the aggregate's batch before its first getMore.
    for _ in 0..2 {
        assert!(next_up.next_if_any().await.unwrap().is_none());
    }
    // An hour ahead: writes before that time are not this stream's, however late they come.
    let mut hour = coll
        .watch()
        .start_at_operation_time(Timestamp {
            time: t.time + 3600,
            increment: 0,
        })
        .max_await_time(QUIET)
        .await
        .unwrap();
    coll.insert_one(doc! {"_id": 2}).await.unwrap();
    assert_eq!(key_ids(&[next(&mut next_up).await]), [2]);
    for _ in 0..2 {
        assert!(hour.next_if_any().await.unwrap().is_none());
    }
    // Resuming from where the early stream got to keeps its start time.
    let mut resumed = coll
        .watch()
        .resume_after(hour.resume_token().unwrap())
        .max_await_time(QUIET)
        .await
        .unwrap();
    coll.insert_one(doc! {"_id": 3}).await.unwrap();
    for _ in 0..2 {
        assert!(resumed.next_if_any().await.unwrap().is_none());
    }
    assert_eq!(key_ids(&[next(&mut next_up).await]), [3]);
    env.cleanup().await;
}

#[tokio::test]
async fn resume_after_a_high_water_mark_returns_exactly_the_later_events() {
    let env = TestEnv::start("cs_hwm").await;
    let (a, b) = (env.coll("a"), env.coll("b"));
    let mut cs = a.watch().max_await_time(QUIET).await.unwrap();
    a.insert_one(doc! {"_id": 1}).await.unwrap();
    let first = next(&mut cs).await;
    let first_data = token_data(&first.id);
    if env.is_sim() {
        // A batch that ends on an event reports that event's token, as MongoDB does.
        assert_eq!(token_data(&cs.resume_token().unwrap()), first_data);
    }
    b.insert_many((0..3).map(|i| doc! {"_id": i}))
        .await
        .unwrap();
    let mut hwm = cs.resume_token().unwrap();
    for _ in 0..3 {
        assert!(cs.next_if_any().await.unwrap().is_none());
        hwm = cs.resume_token().unwrap();
        if token_data(&hwm) != first_data {
            break;
        }
    }
    let hwm_data = token_data(&hwm);
    assert!(hwm_data > first_data, "{hwm_data} !> {first_data}");
    assert!(
        is_upper_hex(&hwm_data) && hwm_data.starts_with("82"),
        "{hwm_data}"
    );
    if env.is_sim() {
        // Prefix only: a high-water mark names no document.
        assert_eq!(hwm_data.len(), 36, "{hwm_data}");
        assert!(hwm_data.ends_with("03"), "{hwm_data}");
    }

    a.insert_many([doc! {"_id": 2}, doc! {"_id": 3}])
        .await
        .unwrap();
    let mut resumed = a
        .watch()
        .resume_after(hwm.clone())
        .max_await_time(QUIET)
        .await
        .unwrap();
    let later = next_n(&mut resumed, 2).await;
    assert_eq!(key_ids(&later), [2, 3]);
    assert!(later.iter().all(|e| token_data(&e.id) > hwm_data));
    assert!(resumed.next_if_any().await.unwrap().is_none());
    // startAfter accepts it too.
    let mut started = a.watch().start_after(hwm).await.unwrap();
    assert_eq!(key_ids(&next_n(&mut started, 2).await), [2, 3]);
    env.cleanup().await;
}

#[tokio::test]
async fn a_stream_opened_after_a_drop_and_re_create_resumes_from_its_first_token() {
    let env = TestEnv::start("cs_recreate").await;
    let c = env.coll("c");
    c.insert_one(doc! {"_id": 0}).await.unwrap();
    c.drop().await.unwrap();
    env.db.create_collection("c").await.unwrap();
    let cs = c.watch().max_await_time(QUIET).await.unwrap();
    let first = cs.resume_token().expect("an initial postBatchResumeToken");
    drop(cs);
    c.insert_many([doc! {"_id": 1}, doc! {"_id": 2}])
        .await
        .unwrap();
    let mut resumed = c
        .watch()
        .resume_after(first.clone())
        .max_await_time(QUIET)
        .await
        .unwrap();
    let events = next_n(&mut resumed, 2).await;
    assert_eq!(
        events
            .iter()
            .map(|e| e.operation_type.clone())
            .collect::<Vec<_>>(),
        [OperationType::Insert, OperationType::Insert]
    );
    assert_eq!(key_ids(&events), [1, 2]);
    // The initial token is a high-water mark one tick past the newest write, as MongoDB's: its
    // time, read from the token, is a startAtOperationTime that does not replay the drop.
    let data = token_data(&first);
    let time = u32::from_str_radix(&data[2..10], 16).unwrap();
    let inc = u32::from_str_radix(&data[10..18], 16).unwrap();
    let mut started = c
        .watch()
        .start_at_operation_time(Timestamp {
            time,
            increment: inc,
        })
        .max_await_time(QUIET)
        .await
        .unwrap();
    assert_eq!(key_ids(&next_n(&mut started, 2).await), [1, 2]);
    env.cleanup().await;
}

#[tokio::test]
async fn read_concern_other_than_majority_is_refused() {
    use mongodb::options::{CollectionOptions, ReadConcern};
    let env = TestEnv::start("cs_read_concern").await;
    let with = |rc: ReadConcern| {
        env.db.collection_with_options::<Document>(
            "c",
            CollectionOptions::builder().read_concern(rc).build(),
        )
    };
    let err = with(ReadConcern::local()).watch().await.unwrap_err();
    assert_eq!(command_error(&err), (72, "InvalidOptions".into()));
    assert!(error_message(&err).contains("readConcern"), "{err}");
    assert_eq!(
        command_error(&with(ReadConcern::available()).watch().await.unwrap_err()).0,
        72
    );
    let mut majority = with(ReadConcern::majority()).watch().await.unwrap();
    let mut absent = env.coll("c").watch().await.unwrap();
    env.coll("c").insert_one(doc! {"_id": 1}).await.unwrap();
    assert_eq!(key_ids(&[next(&mut majority).await]), [1]);
    assert_eq!(key_ids(&[next(&mut absent).await]), [1]);
    env.cleanup().await;
}

#[tokio::test]
async fn pre_and_post_images_follow_change_stream_pre_and_post_images() {
    use mongodb::options::FullDocumentBeforeChangeType as Before;
    let env = TestEnv::start("cs_images").await;
    env.db
        .run_command(doc! {"create": "with", "changeStreamPreAndPostImages": {"enabled": true}})
        .await
        .unwrap();
    let with = env.coll("with");
    with.insert_one(doc! {"_id": 1, "v": 1}).await.unwrap();
    let mut cs = with
        .watch()
        .full_document(FullDocumentType::Required)
        .full_document_before_change(Before::Required)
        .await
        .unwrap()
        .with_type::<Document>();
    with.update_one(doc! {"_id": 1}, doc! {"$set": {"v": 2}})
        .await
        .unwrap();
    // The post-image is the document right after this update, not as it is later.
    with.replace_one(doc! {"_id": 1}, doc! {"v": 3})
        .await
        .unwrap();
    with.delete_one(doc! {"_id": 1}).await.unwrap();
    let update = next(&mut cs).await;
    assert_eq!(op(&update), "update");
    assert_eq!(
        update.get_document("fullDocumentBeforeChange").unwrap(),
        &doc! {"_id": 1, "v": 1}
    );
    assert_eq!(
        update.get_document("fullDocument").unwrap(),
        &doc! {"_id": 1, "v": 2}
    );
    let replace = next(&mut cs).await;
    assert_eq!(
        replace.get_document("fullDocumentBeforeChange").unwrap(),
        &doc! {"_id": 1, "v": 2}
    );
    let delete = next(&mut cs).await;
    assert_eq!(op(&delete), "delete");
    assert_eq!(
        delete.get_document("fullDocumentBeforeChange").unwrap(),
        &doc! {"_id": 1, "v": 3}
    );

    // Without pre-images: whenAvailable gives null, required fails with NoMatchingDocument.
    let without = env.coll("without");
    without.insert_one(doc! {"_id": 1, "v": 1}).await.unwrap();
    let mut maybe = without
        .watch()
        .full_document(FullDocumentType::WhenAvailable)
        .full_document_before_change(Before::WhenAvailable)
        .await
        .unwrap()
        .with_type::<Document>();
    let mut strict = without
        .watch()
        .full_document_before_change(Before::Required)
        .await
        .unwrap()
        .with_type::<Document>();
    let mut off = without.watch().await.unwrap().with_type::<Document>();
    without
        .update_one(doc! {"_id": 1}, doc! {"$set": {"v": 2}})
        .await
        .unwrap();
    let ev = next(&mut maybe).await;
    assert_eq!(ev.get("fullDocumentBeforeChange"), Some(&Bson::Null));
    assert_eq!(ev.get("fullDocument"), Some(&Bson::Null));
    let ev = next(&mut off).await;
    assert!(!ev.contains_key("fullDocumentBeforeChange") && !ev.contains_key("fullDocument"));
    let err = tokio::time::timeout(EVENT_DEADLINE, strict.next())
        .await
        .expect("no answer")
        .expect("change stream ended")
        .unwrap_err();
    assert_eq!(command_error(&err), (47, "NoMatchingDocument".into()));
    assert!(error_message(&err).contains("pre-image"), "{err}");

    // collMod turns them on for the writes that follow.
    env.db
        .run_command(doc! {"collMod": "without", "changeStreamPreAndPostImages": {"enabled": true}})
        .await
        .unwrap();
    let mut now = without
        .watch()
        .full_document_before_change(Before::Required)
        .await
        .unwrap()
        .with_type::<Document>();
    without.delete_one(doc! {"_id": 1}).await.unwrap();
    assert_eq!(
        next(&mut now)
            .await
            .get_document("fullDocumentBeforeChange")
            .unwrap(),
        &doc! {"_id": 1, "v": 2}
    );
    let bad = env
        .db
        .run_command(doc! {"collMod": "without", "changeStreamPreAndPostImages": true})
        .await
        .unwrap_err();
    assert_eq!(command_error(&bad).0, 14);
    let bad = env
        .db
        .run_command(doc! {
            "aggregate": "without",
            "pipeline": [{"$changeStream": {"fullDocumentBeforeChange": "sometimes"}}],
            "cursor": {},
        })
        .await
        .unwrap_err();
    assert_eq!(command_error(&bad).0, 2);
    env.cleanup().await;
}

#[tokio::test]
async fn show_expanded_events_reports_ddl() {
    let env = TestEnv::start("cs_expanded").await;
    // Something in the database first, so it exists for the database stream.
    env.coll("other").insert_one(doc! {"_id": 0}).await.unwrap();
    let mut expanded = env
        .db
        .watch()
        .show_expanded_events(true)
        .await
        .unwrap()
        .with_type::<Document>();
    let mut plain = env.db.watch().await.unwrap().with_type::<Document>();
    env.db.create_collection("c").await.unwrap();
    let c = env.coll("c");
    c.create_index(mongodb::IndexModel::builder().keys(doc! {"a": 1}).build())
        .await
        .unwrap();
    env.db
        .run_command(doc! {"collMod": "c", "validator": {"a": {"$exists": true}}})
        .await
        .unwrap();
    c.drop_index("a_1").await.unwrap();
    c.insert_one(doc! {"_id": 1, "a": 1}).await.unwrap();

    let events = next_n(&mut expanded, 5).await;
    let ops: Vec<&str> = events.iter().map(op).collect();
    assert_eq!(
        ops,
        ["create", "createIndexes", "modify", "dropIndexes", "insert"]
    );
    let uuid = events[0]
        .get("collectionUUID")
        .expect("collectionUUID")
        .clone();
    assert!(
        events
            .iter()
            .all(|e| e.get("collectionUUID") == Some(&uuid)),
        "{events:?}"
    );
    let indexes = events[1]
        .get_document("operationDescription")
        .unwrap()
        .get_array("indexes")
        .unwrap();
    let index = indexes[0].as_document().unwrap();
    assert_eq!(index.get_str("name").unwrap(), "a_1");
    assert_eq!(index.get_document("key").unwrap(), &doc! {"a": 1});
    let modify = events[2].get_document("operationDescription").unwrap();
    assert_eq!(
        modify.get_document("validator").unwrap(),
        &doc! {"a": {"$exists": true}}
    );
    assert!(events[2].contains_key("stateBeforeChange"));
    // Without the option only the insert is reported.
    let ev = next(&mut plain).await;
    assert_eq!(op(&ev), "insert");
    assert!(!ev.contains_key("collectionUUID"));
    env.cleanup().await;
}
