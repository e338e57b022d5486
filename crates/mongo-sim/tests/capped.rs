//! Capped collections through the official Rust driver: insertion order kept, the oldest
//! documents removed beyond `size` (bytes) or `max` (documents), each removal a replicated
//! delete that change streams see; user deletes allowed, as in MongoDB 7.0.

mod common;

use bson::{doc, Bson, Document};
use common::{command_error, ids, write_error_code, TestEnv};
use futures::{StreamExt, TryStreamExt};
use std::time::Duration;

async fn all(coll: &mongodb::Collection<Document>) -> Vec<i32> {
    let docs: Vec<Document> = coll
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    ids(&docs)
}

#[tokio::test]
async fn max_keeps_the_newest_documents_in_insertion_order() {
    let env = TestEnv::start("capped_max").await;
    env.db
        .create_collection("c")
        .capped(true)
        .size(100_000)
        .max(3)
        .await
        .unwrap();
    let coll = env.coll("c");
    let mut cs = coll.watch().await.unwrap();
    // Inserted out of _id order: the collection keeps insertion order.
    for i in [5, 1, 4, 2, 3] {
        coll.insert_one(doc! {"_id": i}).await.unwrap();
    }
    assert_eq!(all(&coll).await, [4, 2, 3]);
    let reversed: Vec<Document> = coll
        .find(doc! {})
        .sort(doc! {"$natural": -1})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(ids(&reversed), [3, 2, 4]);
    // The removals are deletes in the change history.
    let mut seen = Vec::new();
    while seen.len() < 7 {
        let ev = tokio::time::timeout(Duration::from_secs(10), cs.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let key = ev
            .document_key
            .as_ref()
            .and_then(|k| k.get("_id"))
            .and_then(Bson::as_i32)
            .unwrap();
        seen.push((format!("{:?}", ev.operation_type), key));
    }
    let deletes: Vec<i32> = seen
        .iter()
        .filter(|(op, _)| op == "Delete")
        .map(|(_, k)| *k)
        .collect();
    assert_eq!(deletes, [5, 1]);

    let stats = env.db.run_command(doc! {"collStats": "c"}).await.unwrap();
    assert_eq!(stats.get_bool("capped"), Ok(true));
    assert_eq!(stats.get_i64("max"), Ok(3));
    assert_eq!(stats.get_i64("maxSize"), Ok(100_000));
    // User deletes are allowed on a capped collection since MongoDB 5.0.
    coll.delete_one(doc! {"_id": 2}).await.unwrap();
    assert_eq!(all(&coll).await, [4, 3]);
    env.cleanup().await;
}

#[tokio::test]
async fn size_removes_the_oldest_documents() {
    let env = TestEnv::start("capped_size").await;
    env.db
        .create_collection("c")
        .capped(true)
        .size(4096)
        .await
        .unwrap();
    let coll = env.coll("c");
    let pad = "x".repeat(1000);
    for i in 0..10 {
        coll.insert_one(doc! {"_id": i, "pad": &pad}).await.unwrap();
    }
    // About 1 KB each: the newest ones that fit in 4096 bytes remain.
    let left = all(&coll).await;
    assert!(left.len() < 10 && left.len() >= 3, "{left:?}");
    assert_eq!(*left.last().unwrap(), 9);
    assert!(left.windows(2).all(|w| w[1] == w[0] + 1), "{left:?}");
    // A document larger than the whole collection cannot go in.
    let e = coll
        .insert_one(doc! {"_id": 100, "pad": "y".repeat(5000)})
        .await
        .unwrap_err();
    assert_eq!(write_error_code(&e), 2);
    // Missing size: 72.
    let e = env
        .db
        .run_command(doc! {"create": "nosize", "capped": true})
        .await
        .unwrap_err();
    assert_eq!(command_error(&e).0, 72);
    env.cleanup().await;
}
