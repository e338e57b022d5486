//! Options MongoDB has and mongo-sim does not implement are refused with an error naming them
//! (2 BadValue), and fields MongoDB does not know are 40415, instead of being accepted and
//! silently ignored (a different result than a real server's).

mod common;

use bson::doc;
use common::{command_error, TestEnv};
use mongodb::options::Collation;

#[tokio::test]
async fn unimplemented_options_are_refused_not_ignored() {
    let env = TestEnv::start("unsupported").await;
    if !env.is_sim() {
        return; // A real server implements these.
    }
    let coll = env.coll("c");
    coll.insert_one(doc! {"_id": 1, "a": "x"}).await.unwrap();
    let collation = Collation::builder()
        .locale("en")
        .strength(mongodb::options::CollationStrength::Secondary)
        .build();
    let e = coll
        .find(doc! {"a": "X"})
        .collation(collation.clone())
        .await
        .unwrap_err();
    let (code, _) = command_error(&e);
    assert_eq!(code, 2);
    assert!(format!("{e}").contains("collation"), "{e}");
    let e = coll
        .aggregate([doc! {"$match": {}}])
        .collation(collation.clone())
        .await
        .unwrap_err();
    assert_eq!(command_error(&e).0, 2);
    let e = coll
        .update_one(doc! {}, doc! {"$set": {"b": 1}})
        .collation(collation.clone())
        .await
        .unwrap_err();
    assert!(format!("{e}").contains("collation"), "{e}");
    let e = coll
        .delete_many(doc! {})
        .collation(collation)
        .await
        .unwrap_err();
    assert!(format!("{e}").contains("collation"), "{e}");
    let e = coll
        .update_one(doc! {}, doc! {"$set": {"arr.$[x]": 1}})
        .array_filters(vec![doc! {"x": 1}])
        .await
        .unwrap_err();
    assert!(format!("{e}").contains("arrayFilters"), "{e}");
    // The default collation is the simple one: accepted.
    env.db
        .run_command(doc! {"find": "c", "collation": {"locale": "simple"}})
        .await
        .unwrap();
    // $where is refused by the filter parser.
    let e = env
        .db
        .run_command(doc! {"find": "c", "filter": {"$where": "true"}})
        .await
        .unwrap_err();
    assert_eq!(command_error(&e).0, 2);
    // A field MongoDB does not know: 40415, as its strict command parsers answer.
    let e = env
        .db
        .run_command(doc! {"find": "c", "filtr": {}})
        .await
        .unwrap_err();
    assert_eq!(command_error(&e).0, 40415);
    let e = env
        .db
        .run_command(doc! {"delete": "c", "deletes": [{"q": {}, "limit": 0, "bogus": 1}]})
        .await
        .unwrap_err();
    assert_eq!(command_error(&e).0, 40415);
    // An unknown stage is still 40324.
    let e = coll.aggregate([doc! {"$lookupX": {}}]).await.unwrap_err();
    assert_eq!(command_error(&e).0, 40324);
}
