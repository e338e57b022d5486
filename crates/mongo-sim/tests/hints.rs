//! `hint`, `min`/`max` and `explain` through the official Rust driver: a hint names an index or
//! fails with 2 BadValue, a hinted index scan returns documents in index order, `min`/`max`
//! bound it (and need a hint), and `explain` reports the COLLSCAN or IXSCAN that ran.

mod common;

use bson::{doc, Bson, Document};
use common::{command_error, ids, TestEnv};
use futures::TryStreamExt;
use mongodb::options::Hint;
use mongodb::IndexModel;

async fn setup(env: &TestEnv) -> mongodb::Collection<Document> {
    let coll = env.coll("c");
    // Inserted out of `a` order, so index order differs from insertion order.
    coll.insert_many([
        doc! {"_id": 1, "a": 30},
        doc! {"_id": 2, "a": 10},
        doc! {"_id": 3, "a": 20},
        doc! {"_id": 4},
    ])
    .await
    .unwrap();
    coll.create_index(IndexModel::builder().keys(doc! {"a": 1}).build())
        .await
        .unwrap();
    coll.create_index(
        IndexModel::builder()
            .keys(doc! {"a": -1})
            .options(
                mongodb::options::IndexOptions::builder()
                    .name("a_desc".to_string())
                    .sparse(true)
                    .build(),
            )
            .build(),
    )
    .await
    .unwrap();
    coll
}

async fn run_find(env: &TestEnv, cmd: Document) -> mongodb::error::Result<Vec<i32>> {
    let reply = env.db.run_command(cmd).await?;
    let batch: Vec<Document> = reply
        .get_document("cursor")
        .unwrap()
        .get_array("firstBatch")
        .unwrap()
        .iter()
        .filter_map(|d| d.as_document().cloned())
        .collect();
    Ok(ids(&batch))
}

#[tokio::test]
async fn a_hint_must_name_an_index() {
    let env = TestEnv::start("hint_missing").await;
    let coll = setup(&env).await;
    let e = coll
        .find(doc! {})
        .hint(Hint::Name("nope".into()))
        .await
        .unwrap_err();
    assert_eq!(command_error(&e), (2, "BadValue".into()));
    let e = coll
        .find(doc! {})
        .hint(Hint::Keys(doc! {"b": 1}))
        .await
        .unwrap_err();
    assert_eq!(command_error(&e).0, 2);
    let e = coll
        .count_documents(doc! {})
        .hint(Hint::Name("nope".into()))
        .await
        .unwrap_err();
    assert_eq!(command_error(&e).0, 2);
    let e = coll
        .aggregate([doc! {"$match": {}}])
        .hint(Hint::Name("nope".into()))
        .await
        .unwrap_err();
    assert_eq!(command_error(&e).0, 2);
    let e = coll
        .delete_one(doc! {})
        .hint(Hint::Name("nope".into()))
        .await
        .unwrap_err();
    assert!(
        format!("{e}").contains("hint provided does not correspond"),
        "{e}"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn a_hinted_index_scan_returns_index_order() {
    let env = TestEnv::start("hint_order").await;
    let coll = setup(&env).await;
    let all = |h: Hint| {
        let coll = coll.clone();
        async move {
            let docs: Vec<Document> = coll
                .find(doc! {})
                .hint(h)
                .await
                .unwrap()
                .try_collect()
                .await
                .unwrap();
            ids(&docs)
        }
    };
    // No hint: a collection scan, insertion order.
    let plain: Vec<Document> = coll
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(ids(&plain), [1, 2, 3, 4]);
    // The missing field sorts as null, first in an ascending index.
    assert_eq!(all(Hint::Keys(doc! {"a": 1})).await, [4, 2, 3, 1]);
    assert_eq!(all(Hint::Name("a_1".into())).await, [4, 2, 3, 1]);
    // A sparse index has no key for the document without `a`.
    assert_eq!(all(Hint::Name("a_desc".into())).await, [1, 3, 2]);
    assert_eq!(all(Hint::Keys(doc! {"$natural": -1})).await, [4, 3, 2, 1]);
    // The first document in index order is the one a hinted delete_one removes.
    coll.delete_one(doc! {"a": {"$gte": 10}})
        .hint(Hint::Name("a_1".into()))
        .await
        .unwrap();
    assert_eq!(all(Hint::Name("a_1".into())).await, [4, 3, 1]);
    env.cleanup().await;
}

#[tokio::test]
async fn min_and_max_bound_a_hinted_scan() {
    let env = TestEnv::start("hint_minmax").await;
    let coll = setup(&env).await;
    let ns = coll.name().to_string();
    // min inclusive, max exclusive, in index order.
    let got = run_find(
        &env,
        doc! {"find": &ns, "hint": {"a": 1}, "min": {"a": 10}, "max": {"a": 30}},
    )
    .await
    .unwrap();
    assert_eq!(got, [2, 3]);
    let got = run_find(&env, doc! {"find": &ns, "hint": "a_desc", "min": {"a": 25}})
        .await
        .unwrap();
    assert_eq!(got, [3, 2]);
    // Without a hint: MongoDB 7.0's planner error.
    let e = run_find(&env, doc! {"find": &ns, "min": {"a": 10}})
        .await
        .unwrap_err();
    assert_eq!(command_error(&e).0, 51173);
    // Bounds that are not the index's key pattern.
    let e = run_find(&env, doc! {"find": &ns, "hint": {"a": 1}, "max": {"b": 1}})
        .await
        .unwrap_err();
    assert_eq!(command_error(&e).0, 51174);
    // min after max.
    let e = run_find(
        &env,
        doc! {"find": &ns, "hint": {"a": 1}, "min": {"a": 30}, "max": {"a": 10}},
    )
    .await
    .unwrap_err();
    assert_eq!(command_error(&e).0, 51175);
    env.cleanup().await;
}

fn winning_plan(explain: &Document) -> &Document {
    explain
        .get_document("queryPlanner")
        .unwrap()
        .get_document("winningPlan")
        .unwrap()
}

fn scan_stage(plan: &Document) -> &Document {
    match plan.get_document("inputStage") {
        Ok(inner) => scan_stage(inner),
        Err(_) => plan,
    }
}

#[tokio::test]
async fn explain_names_the_plan_that_ran() {
    let env = TestEnv::start("explain").await;
    let coll = setup(&env).await;
    let ns = coll.name().to_string();
    let explain = |cmd: Document| {
        let db = env.db.clone();
        async move {
            db.run_command(doc! {"explain": cmd, "verbosity": "executionStats"})
                .await
        }
    };
    let e = explain(doc! {"find": &ns, "filter": {"a": {"$gt": 5}}, "hint": {"$natural": 1}})
        .await
        .unwrap();
    assert_eq!(
        scan_stage(winning_plan(&e)).get_str("stage"),
        Ok("COLLSCAN")
    );
    let stats = e.get_document("executionStats").unwrap();
    assert_eq!(stats.get("nReturned"), Some(&Bson::Int64(3)));

    let e = explain(doc! {"find": &ns, "filter": {"a": {"$gt": 5}}, "hint": "a_1"})
        .await
        .unwrap();
    let scan = scan_stage(winning_plan(&e));
    assert_eq!(scan.get_str("stage"), Ok("IXSCAN"));
    assert_eq!(scan.get_str("indexName"), Ok("a_1"));
    assert_eq!(scan.get_document("keyPattern"), Ok(&doc! {"a": 1}));

    let e = explain(doc! {"find": &ns, "hint": "nope"})
        .await
        .unwrap_err();
    assert_eq!(command_error(&e).0, 2);

    // aggregate, as `explain: {aggregate}` and as `aggregate` with `explain: true`.
    let agg = doc! {"aggregate": &ns, "pipeline": [{"$match": {"a": 10}}, {"$count": "n"}], "cursor": {}, "hint": "a_desc"};
    let e = explain(agg.clone()).await.unwrap();
    let mut inline = agg.clone();
    inline.insert("explain", true);
    inline.remove("cursor");
    let e2 = env.db.run_command(inline).await.unwrap();
    for e in [e, e2] {
        let stages = e.get_array("stages").unwrap();
        let cursor = stages[0]
            .as_document()
            .unwrap()
            .get_document("$cursor")
            .unwrap();
        let scan = scan_stage(winning_plan(cursor));
        assert_eq!(scan.get_str("indexName"), Ok("a_desc"), "{e}");
        assert!(stages[1].as_document().unwrap().contains_key("$count"));
    }
    env.cleanup().await;
}
