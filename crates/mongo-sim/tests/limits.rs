//! The limits and validation MongoDB enforces on writes, through the official Rust driver: the
//! 16 MiB document limit on every write path, `$`-prefixed names where they cannot be stored,
//! collection validators, TTL expiry and write concerns a one-member replica set cannot meet.

mod common;

use bson::{doc, Bson, DateTime, Document};
use common::{command_error, write_error_code, TestEnv};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{Acknowledgment, WriteConcern};
use std::time::Duration;

/// The `writeErrors` of a raw write command's reply, as `(code, errmsg)`.
fn write_errors(reply: &Document) -> Vec<(i32, String)> {
    reply
        .get_array("writeErrors")
        .map(|a| {
            a.iter()
                .filter_map(Bson::as_document)
                .map(|e| {
                    (
                        e.get_i32("code").unwrap_or_default(),
                        e.get_str("errmsg").unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn documents_over_16_mib_are_refused_on_every_write_path() {
    let env = TestEnv::start("lim_size").await;
    let coll = env.coll("c");
    let ten = "x".repeat(10 * 1024 * 1024);
    coll.insert_one(doc! {"_id": 1, "a": &ten}).await.unwrap();
    // An update whose result would be 20 MiB.
    let err = coll
        .update_one(doc! {"_id": 1}, doc! {"$set": {"b": &ten}})
        .await
        .unwrap_err();
    let code = write_error_code(&err);
    if env.is_sim() {
        assert_eq!(code, 17419, "{err}");
    } else {
        // 7.0's UpdateStage answers 17419; later servers name it BSONObjectTooLarge.
        assert!(code == 17419 || code == 10334, "{err}");
    }
    assert!(err.to_string().contains("larger than 16777216"), "{err}");
    let stored = coll.find_one(doc! {"_id": 1}).await.unwrap().unwrap();
    assert!(
        !stored.contains_key("b"),
        "the failed update changed nothing"
    );

    // An insert of a document just over 16 MiB, inside a command the server still accepts.
    let just_over = "y".repeat(16 * 1024 * 1024);
    let reply = env
        .db
        .run_command(doc! {"insert": "c", "documents": [{"_id": 2, "a": &just_over}]})
        .await
        .unwrap();
    let errors = write_errors(&reply);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].0, 2, "BadValue, as fixDocumentForInsert answers");
    assert!(
        errors[0].1.contains("object to insert too large"),
        "{errors:?}"
    );
    assert_eq!(reply.get_i32("n"), Ok(0));
    env.cleanup().await;
}

#[tokio::test]
async fn dollar_names_and_operator_ids_cannot_be_stored() {
    let env = TestEnv::start("lim_dollar").await;
    let coll = env.coll("c");
    coll.insert_one(doc! {"_id": 1, "a": 1}).await.unwrap();
    let reply = env
        .db
        .run_command(
            doc! {"update": "c", "updates": [{"q": {"_id": 1}, "u": {"a": 2, "$inc": {"a": 1}}}]},
        )
        .await
        .unwrap();
    let errors = write_errors(&reply);
    assert_eq!(errors.len(), 1, "{reply}");
    assert_eq!(errors[0].0, 52, "DollarPrefixedFieldName: {errors:?}");
    assert!(errors[0].1.contains("$inc"), "{errors:?}");

    let err = coll
        .insert_one(doc! {"_id": {"$gt": 1}, "a": 1})
        .await
        .unwrap_err();
    assert_eq!(write_error_code(&err), 53, "InvalidIdField: {err}");
    let err = coll
        .update_one(doc! {"_id": 9}, doc! {"$set": {"_id": {"$lt": 5}, "a": 1}})
        .upsert(true)
        .await
        .unwrap_err();
    assert_eq!(write_error_code(&err), 53, "{err}");
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 1);
    env.cleanup().await;
}

#[tokio::test]
async fn validators_refuse_invalid_documents_as_configured() {
    let env = TestEnv::start("lim_validator").await;
    env.db
        .run_command(doc! {"create": "c", "validator": {"a": {"$exists": true}}})
        .await
        .unwrap();
    let coll = env.coll("c");
    let err = coll.insert_one(doc! {"_id": 1}).await.unwrap_err();
    match &*err.kind {
        ErrorKind::Write(WriteFailure::WriteError(w)) => {
            assert_eq!(w.code, 121, "DocumentValidationFailure");
            assert_eq!(w.message, "Document failed validation");
            let info = w.details.as_ref().expect("errInfo");
            assert_eq!(info.get_i32("failingDocumentId"), Ok(1), "{info}");
        }
        other => panic!("expected a write error, got {other:?}"),
    }
    coll.insert_one(doc! {"_id": 2, "a": 1}).await.unwrap();
    let err = coll
        .update_one(doc! {"_id": 2}, doc! {"$unset": {"a": ""}})
        .await
        .unwrap_err();
    assert_eq!(write_error_code(&err), 121);
    // bypassDocumentValidation skips it.
    coll.insert_one(doc! {"_id": 3})
        .bypass_document_validation(true)
        .await
        .unwrap();
    // moderate: a document that already fails may still be updated; new ones are checked.
    env.db
        .run_command(doc! {"collMod": "c", "validationLevel": "moderate"})
        .await
        .unwrap();
    coll.update_one(doc! {"_id": 3}, doc! {"$set": {"b": 1}})
        .await
        .unwrap();
    assert_eq!(
        write_error_code(&coll.insert_one(doc! {"_id": 4}).await.unwrap_err()),
        121
    );
    // warn: written anyway.
    env.db
        .run_command(doc! {"collMod": "c", "validationAction": "warn"})
        .await
        .unwrap();
    coll.insert_one(doc! {"_id": 5}).await.unwrap();
    // off.
    env.db
        .run_command(doc! {"collMod": "c", "validationAction": "error", "validationLevel": "off"})
        .await
        .unwrap();
    coll.insert_one(doc! {"_id": 6}).await.unwrap();
    let bad = env
        .db
        .run_command(doc! {"collMod": "c", "validationLevel": "sometimes"})
        .await
        .unwrap_err();
    assert_eq!(command_error(&bad).0, 2);
    let listed = env
        .db
        .run_command(doc! {"listCollections": 1, "filter": {"name": "c"}})
        .await
        .unwrap();
    let options = listed
        .get_document("cursor")
        .unwrap()
        .get_array("firstBatch")
        .unwrap()[0]
        .as_document()
        .unwrap()
        .get_document("options")
        .unwrap()
        .clone();
    assert_eq!(options.get_str("validationLevel"), Ok("off"), "{options}");
    env.cleanup().await;
}

#[tokio::test]
async fn ttl_indexes_expire_documents_at_the_monitor_interval() {
    let env = TestEnv::start("lim_ttl").await;
    let Some(sim) = &env.sim else {
        eprintln!("SKIP: the TTL test shortens mongo-sim's monitor interval; a real server's is 60 s and MONGODB_URI is set");
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "under CI=true a SKIP is a failure"
        );
        return;
    };
    let coll = env.coll("c");
    coll.create_index(
        mongodb::IndexModel::builder()
            .keys(doc! {"at": 1})
            .options(
                mongodb::options::IndexOptions::builder()
                    .expire_after(Duration::from_secs(60))
                    .build(),
            )
            .build(),
    )
    .await
    .unwrap();
    let old = DateTime::from_millis(DateTime::now().timestamp_millis() - 120_000);
    let mut cs = coll.watch().await.unwrap();
    coll.insert_many([
        doc! {"_id": 1, "at": old},
        doc! {"_id": 2, "at": DateTime::now()},
        doc! {"_id": 3, "at": "not a date"},
        doc! {"_id": 4, "at": [DateTime::now(), old]},
    ])
    .await
    .unwrap();
    sim.set_ttl_monitor_interval(Duration::from_millis(50));
    // Await the deletion: bounded, never a fixed sleep standing in for it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while coll.count_documents(doc! {}).await.unwrap() > 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "TTL monitor deleted nothing"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut left: Vec<i32> = Vec::new();
    let mut cursor = coll.find(doc! {}).await.unwrap();
    while cursor.advance().await.unwrap() {
        left.push(
            cursor
                .deserialize_current()
                .unwrap()
                .get_i32("_id")
                .unwrap(),
        );
    }
    assert_eq!(left, [2, 3]);
    // The deletes are ordinary deletes in the oplog: change streams report them.
    let mut deleted = Vec::new();
    while deleted.len() < 2 {
        let ev = tokio::time::timeout(Duration::from_secs(10), futures::StreamExt::next(&mut cs))
            .await
            .expect("no event")
            .unwrap()
            .unwrap();
        if ev.operation_type == mongodb::change_stream::event::OperationType::Delete {
            deleted.push(ev.document_key.unwrap().get_i32("_id").unwrap());
        }
    }
    deleted.sort();
    assert_eq!(deleted, [1, 4]);
    // collMod changes the TTL of the index in place.
    let reply = env
        .db
        .run_command(
            doc! {"collMod": "c", "index": {"keyPattern": {"at": 1}, "expireAfterSeconds": 0}},
        )
        .await
        .unwrap();
    assert_eq!(reply.get_i64("expireAfterSeconds_new"), Ok(0), "{reply}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while coll.count_documents(doc! {"_id": 2}).await.unwrap() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new TTL was not applied"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    env.cleanup().await;
}

#[tokio::test]
async fn write_concerns_one_member_cannot_meet_are_reported() {
    let env = TestEnv::start("lim_wc").await;
    let members = |w| {
        env.db.collection_with_options::<Document>(
            "c",
            mongodb::options::CollectionOptions::builder()
                .write_concern(WriteConcern::builder().w(w).build())
                .build(),
        )
    };
    let err = members(Acknowledgment::Nodes(5))
        .insert_one(doc! {"_id": 1})
        .await
        .unwrap_err();
    match &*err.kind {
        ErrorKind::Write(WriteFailure::WriteConcernError(wce)) => {
            assert_eq!(
                (wce.code, wce.code_name.as_str()),
                (100, "UnsatisfiableWriteConcern")
            )
        }
        other => panic!("expected a write concern error, got {other:?}"),
    }
    // The write itself happened, as on MongoDB.
    assert_eq!(env.coll("c").count_documents(doc! {}).await.unwrap(), 1);
    let err = members(Acknowledgment::Custom("eastCoast".into()))
        .insert_one(doc! {"_id": 2})
        .await
        .unwrap_err();
    match &*err.kind {
        ErrorKind::Write(WriteFailure::WriteConcernError(wce)) => {
            assert_eq!(
                (wce.code, wce.code_name.as_str()),
                (79, "UnknownReplWriteConcern")
            )
        }
        other => panic!("expected a write concern error, got {other:?}"),
    }
    members(Acknowledgment::Majority)
        .insert_one(doc! {"_id": 3})
        .await
        .unwrap();
    members(Acknowledgment::Nodes(1))
        .insert_one(doc! {"_id": 4})
        .await
        .unwrap();
    env.cleanup().await;
}
