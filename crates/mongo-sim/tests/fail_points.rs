//! MongoDB's test fail points (`configureFailPoint`) through the official Rust driver. Against a
//! real server these need `--setParameter enableTestCommands=1`; fail points are global there,
//! so these tests take a lock.

mod common;

use bson::{doc, Bson, Document};
use common::{command_error, fail_point_lock, TestEnv};
use futures::{StreamExt, TryStreamExt};
use mongodb::change_stream::event::ChangeStreamEvent;
use mongodb::change_stream::ChangeStream;
use mongodb::error::{ErrorKind, WriteFailure};
use std::time::Duration;

async fn configure(env: &TestEnv, name: &str, mode: Bson, data: Document) -> i64 {
    let reply = env
        .admin(doc! {"configureFailPoint": name, "mode": mode, "data": data})
        .await
        .unwrap();
    count(&reply)
}

/// Turns the fail point off; returns how many times it fired.
async fn off(env: &TestEnv, name: &str) -> i64 {
    let reply = env
        .admin(doc! {"configureFailPoint": name, "mode": "off"})
        .await
        .unwrap();
    count(&reply)
}

fn count(reply: &Document) -> i64 {
    match reply.get("count") {
        Some(Bson::Int32(i)) => *i as i64,
        Some(Bson::Int64(i)) => *i,
        other => panic!("configureFailPoint answered no count: {other:?} in {reply}"),
    }
}

fn times(n: i32) -> Bson {
    Bson::Document(doc! {"times": n})
}

#[tokio::test]
async fn fail_command_answers_the_error_code_and_its_name() {
    let _lock = fail_point_lock().await;
    let env = TestEnv::start("fp_code").await;
    let coll = env.coll("c");
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    configure(
        &env,
        "failCommand",
        times(1),
        doc! {"failCommands": ["find"], "errorCode": 2},
    )
    .await;
    let err = coll.find_one(doc! {}).await.unwrap_err();
    assert_eq!(command_error(&err), (2, "BadValue".into()));
    // `times: 1` fired once; the next find works.
    assert_eq!(coll.find_one(doc! {}).await.unwrap(), Some(doc! {"_id": 1}));
    assert_eq!(off(&env, "failCommand").await, 1);
    // A code without a name in error_codes.yml is named after its location, as mongod does.
    configure(
        &env,
        "failCommand",
        times(1),
        doc! {"failCommands": ["find"], "errorCode": 54321},
    )
    .await;
    let err = coll.find_one(doc! {}).await.unwrap_err();
    assert_eq!(command_error(&err), (54321, "Location54321".into()));
    assert_eq!(off(&env, "failCommand").await, 1);
    env.cleanup().await;
}

#[tokio::test]
async fn configure_fail_point_answers_how_often_it_fired() {
    let _lock = fail_point_lock().await;
    let env = TestEnv::start("fp_count").await;
    let err = env
        .db
        .run_command(doc! {"configureFailPoint": "failCommand", "mode": "off"})
        .await
        .unwrap_err();
    assert_eq!(command_error(&err).0, 13, "admin only");

    configure(
        &env,
        "failCommand",
        Bson::String("alwaysOn".into()),
        doc! {"failCommands": ["ping"], "errorCode": 2},
    )
    .await;
    for _ in 0..3 {
        let err = env.db.run_command(doc! {"ping": 1}).await.unwrap_err();
        assert_eq!(command_error(&err).0, 2);
    }
    // Other commands are untouched.
    env.db.run_command(doc! {"buildInfo": 1}).await.unwrap();
    assert_eq!(off(&env, "failCommand").await, 3);
    assert_eq!(off(&env, "failCommand").await, 0);
    env.db.run_command(doc! {"ping": 1}).await.unwrap();
    env.cleanup().await;
}

#[tokio::test]
async fn error_labels_are_attached_and_drive_retries() {
    let _lock = fail_point_lock().await;
    let env = TestEnv::start("fp_labels").await;
    let coll = env.coll("c");
    configure(
        &env,
        "failCommand",
        times(1),
        doc! {"failCommands": ["insert"], "errorCode": 2, "errorLabels": ["CustomLabel"]},
    )
    .await;
    let err = coll.insert_one(doc! {"_id": 1}).await.unwrap_err();
    assert!(err.contains_label("CustomLabel"), "{err:?}");
    assert_eq!(command_error(&err).0, 2);

    // A RetryableWriteError is retried once by the driver, transparently. (HostUnreachable,
    // unlike ShutdownInProgress, does not make the driver rediscover the server first.)
    configure(
        &env,
        "failCommand",
        times(1),
        doc! {"failCommands": ["insert"], "errorCode": 6, "errorLabels": ["RetryableWriteError"]},
    )
    .await;
    coll.insert_one(doc! {"_id": 2}).await.unwrap();
    assert_eq!(off(&env, "failCommand").await, 1);
    let docs: Vec<Document> = coll
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(docs, [doc! {"_id": 2}]);
    env.cleanup().await;
}

#[tokio::test]
async fn close_connection_is_a_network_error_then_the_next_command_works() {
    let _lock = fail_point_lock().await;
    let env = TestEnv::start("fp_close").await;
    let coll_name = "c";
    env.coll(coll_name)
        .insert_one(doc! {"_id": 1})
        .await
        .unwrap();
    let no_retry = env
        .client_with(|o| {
            o.retry_reads = Some(false);
            o.retry_writes = Some(false);
        })
        .await;
    let coll = no_retry
        .database(env.db.name())
        .collection::<Document>(coll_name);
    coll.find_one(doc! {}).await.unwrap();
    configure(
        &env,
        "failCommand",
        times(1),
        doc! {"failCommands": ["find"], "closeConnection": true},
    )
    .await;
    let err = coll.find_one(doc! {}).await.unwrap_err();
    assert!(matches!(*err.kind, ErrorKind::Io(_)), "{err:?}");
    assert_eq!(coll.find_one(doc! {}).await.unwrap(), Some(doc! {"_id": 1}));

    // With retryable reads (the default) the driver retries the read on a new connection.
    configure(
        &env,
        "failCommand",
        times(1),
        doc! {"failCommands": ["find"], "closeConnection": true},
    )
    .await;
    let found = env.coll(coll_name).find_one(doc! {}).await.unwrap();
    assert_eq!(found, Some(doc! {"_id": 1}));
    assert_eq!(off(&env, "failCommand").await, 1);
    env.cleanup().await;
}

#[tokio::test]
async fn times_and_skip_modes() {
    let _lock = fail_point_lock().await;
    let env = TestEnv::start("fp_modes").await;
    let coll = env.coll("c");
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    let data = doc! {"failCommands": ["find"], "errorCode": 2};

    configure(&env, "failCommand", times(2), data.clone()).await;
    let mut outcomes = Vec::new();
    for _ in 0..4 {
        outcomes.push(coll.find_one(doc! {}).await.is_ok());
    }
    assert_eq!(outcomes, [false, false, true, true]);
    assert_eq!(off(&env, "failCommand").await, 2);

    configure(&env, "failCommand", Bson::Document(doc! {"skip": 2}), data).await;
    let mut outcomes = Vec::new();
    for _ in 0..4 {
        outcomes.push(coll.find_one(doc! {}).await.is_ok());
    }
    assert_eq!(outcomes, [true, true, false, false]);
    assert_eq!(off(&env, "failCommand").await, 2);
    env.cleanup().await;
}

#[tokio::test]
async fn block_connection_delays_but_the_command_succeeds() {
    let _lock = fail_point_lock().await;
    let env = TestEnv::start("fp_block").await;
    let coll = env.coll("c");
    configure(
        &env,
        "failCommand",
        times(1),
        doc! {"failCommands": ["insert"], "blockConnection": true, "blockTimeMS": 50},
    )
    .await;
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    assert_eq!(off(&env, "failCommand").await, 1);
    assert_eq!(coll.find_one(doc! {}).await.unwrap(), Some(doc! {"_id": 1}));
    env.cleanup().await;
}

#[tokio::test]
async fn write_concern_errors_are_reported_after_the_write() {
    let _lock = fail_point_lock().await;
    let env = TestEnv::start("fp_wce").await;
    let coll = env.coll("c");
    configure(
        &env,
        "failCommand",
        times(1),
        doc! {
            "failCommands": ["insert"],
            "writeConcernError": {
                "code": 100,
                "codeName": "UnsatisfiableWriteConcern",
                "errmsg": "Not enough data-bearing nodes",
            },
        },
    )
    .await;
    let err = coll.insert_one(doc! {"_id": 1}).await.unwrap_err();
    let ErrorKind::Write(WriteFailure::WriteConcernError(wce)) = &*err.kind else {
        panic!("expected a write concern error, got {err:?}")
    };
    assert_eq!(
        (wce.code, wce.code_name.as_str()),
        (100, "UnsatisfiableWriteConcern")
    );
    // The write itself happened.
    assert_eq!(coll.find_one(doc! {}).await.unwrap(), Some(doc! {"_id": 1}));
    assert_eq!(off(&env, "failCommand").await, 1);
    env.cleanup().await;
}

#[tokio::test]
async fn app_name_targets_one_client() {
    let _lock = fail_point_lock().await;
    let env = TestEnv::start("fp_app").await;
    let app = common::unique_name("fp_target");
    let target = env.client_with(|o| o.app_name = Some(app.clone())).await;
    let targeted = target.database(env.db.name()).collection::<Document>("c");
    let untargeted = env.coll("c");
    untargeted.insert_one(doc! {"_id": 1}).await.unwrap();
    configure(
        &env,
        "failCommand",
        Bson::String("alwaysOn".into()),
        doc! {"failCommands": ["find"], "errorCode": 2, "appName": app.clone()},
    )
    .await;
    let err = targeted.find_one(doc! {}).await.unwrap_err();
    assert_eq!(command_error(&err).0, 2);
    assert!(untargeted.find_one(doc! {}).await.unwrap().is_some());
    assert!(targeted.find_one(doc! {}).await.is_err());
    assert_eq!(off(&env, "failCommand").await, 2);
    assert!(targeted.find_one(doc! {}).await.unwrap().is_some());
    env.cleanup().await;
}

async fn next_key(cs: &mut ChangeStream<ChangeStreamEvent<Document>>) -> i32 {
    let ev = tokio::time::timeout(Duration::from_secs(10), cs.next())
        .await
        .expect("no change event arrived")
        .expect("change stream ended")
        .expect("change stream error");
    ev.document_key.unwrap().get_i32("_id").unwrap()
}

#[tokio::test]
async fn a_failed_change_stream_get_more_is_resumed_without_loss_or_duplicates() {
    let _lock = fail_point_lock().await;
    let env = TestEnv::start("fp_getmore").await;
    let coll = env.coll("c");
    let mut cs = coll.watch().await.unwrap();
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    assert_eq!(next_key(&mut cs).await, 1);
    configure(
        &env,
        "failGetMoreAfterCursorCheckout",
        times(1),
        doc! {"errorCode": 6},
    )
    .await;
    coll.insert_many([doc! {"_id": 2}, doc! {"_id": 3}])
        .await
        .unwrap();
    assert_eq!(next_key(&mut cs).await, 2);
    assert_eq!(next_key(&mut cs).await, 3);
    coll.insert_one(doc! {"_id": 4}).await.unwrap();
    assert_eq!(next_key(&mut cs).await, 4);
    assert_eq!(off(&env, "failGetMoreAfterCursorCheckout").await, 1);
    env.cleanup().await;
}

#[tokio::test]
async fn only_a_resumable_label_makes_the_driver_resume_a_failed_get_more() {
    let _lock = fail_point_lock().await;
    let env = TestEnv::start("fp_labels_cs").await;
    let coll = env.coll("c");

    // An explicit ResumableChangeStreamError label: resumed, nothing lost.
    let mut cs = coll.watch().await.unwrap();
    configure(
        &env,
        "failCommand",
        times(1),
        doc! {"failCommands": ["getMore"], "errorCode": 50, "errorLabels": ["ResumableChangeStreamError"]},
    )
    .await;
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    assert_eq!(next_key(&mut cs).await, 1);
    assert_eq!(off(&env, "failCommand").await, 1);

    // failCommand adds no label by itself (MongoDB 4.4+): the error reaches the application.
    let mut cs = coll.watch().await.unwrap();
    configure(
        &env,
        "failCommand",
        times(1),
        doc! {"failCommands": ["getMore"], "errorCode": 6},
    )
    .await;
    coll.insert_one(doc! {"_id": 2}).await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(10), cs.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(command_error(&err).0, 6);
    assert_eq!(off(&env, "failCommand").await, 1);
    env.cleanup().await;
}
