//! Routing: a document reaches its workflow channel and its workspace channel (and the
//! source-wide channel), nothing else; several channels share one connection and an event
//! covered by two of them arrives once; the compatibility route; headers and the first frame.

use std::time::Duration;

use crate::common::*;

/// Long enough for an event that was going to arrive to have arrived: the sim delivers in
/// milliseconds. Only used to assert that something does *not* happen.
const QUIET: Duration = Duration::from_millis(700);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insert_reaches_its_channels_and_nothing_else() {
    let mongo = Mongo::start("routing").await;
    let gw = start_gateway(&mongo, &[]).await;
    let base = base_url(&gw);

    let mut wf = Sse::subscribe(&base, &["logs:w1:f1"], None).await;
    let mut ws = Sse::subscribe(&base, &["logs:w1"], None).await;
    let mut all = Sse::subscribe(&base, &["logs"], None).await;
    let mut other_wf = Sse::subscribe(&base, &["logs:w1:f2"], None).await;
    let mut other_ws = Sse::subscribe(&base, &["logs:w2"], None).await;
    let mut prefix_lookalike = Sse::subscribe(&base, &["logs:w1:f1x"], None).await;

    mongo.insert("w1", "f1", 1).await;

    for (name, sse) in [
        ("workflow", &mut wf),
        ("workspace", &mut ws),
        ("source", &mut all),
    ] {
        let ev = sse
            .next_event(WAIT)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!(
            ev.event, "message",
            "{name}: data events use the default type"
        );
        assert!(ev.id.starts_with("c."), "{name}: id {:?}", ev.id);
        let m = ev.msg();
        assert_eq!(m.channel, "logs:w1:f1", "{name}");
        assert_eq!(m.op, "insert", "{name}");
        assert_eq!(m.doc["workspace_id"], "w1");
        assert_eq!(m.doc["workflow_id"], "f1");
        assert_eq!(m.doc["seq"], 1);
        assert!(
            m.doc["_id"].is_string(),
            "ObjectId as its hex string: {}",
            m.doc
        );
    }
    // The same event, so the same position, on every channel.
    assert_eq!(wf.last_event_id(), ws.last_event_id());
    assert_eq!(wf.last_event_id(), all.last_event_id());

    // A later event on another workflow reaches the workspace but not f1's subscribers; the
    // negative checks below would also catch the first insert leaking.
    mongo.insert("w1", "f2", 2).await;
    assert_eq!(
        ws.next_event(WAIT).await.unwrap().wf_seq(),
        ("f2".into(), 2)
    );
    assert_eq!(other_wf.next_event(WAIT).await.unwrap().seq(), 2);
    assert_eq!(all.next_event(WAIT).await.unwrap().seq(), 2);
    wf.expect_no_event(QUIET).await;
    other_ws.expect_no_event(Duration::from_millis(1)).await;
    prefix_lookalike
        .expect_no_event(Duration::from_millis(1))
        .await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_channels_on_one_connection_each_event_once() {
    let mongo = Mongo::start("routing_multi").await;
    let gw = start_gateway(&mongo, &[]).await;
    let base = base_url(&gw);

    // A workspace and one of its workflows (overlapping), plus an unrelated workflow.
    let mut sse = Sse::subscribe(&base, &["logs:w1", "logs:w1:f1", "logs:w3:f9"], None).await;
    let writes = [
        ("w1", "f1", 1),
        ("w2", "f1", 2),
        ("w1", "f2", 3),
        ("w3", "f9", 4),
        ("w3", "f8", 5),
        ("w1", "f1", 6),
    ];
    for (ws, wf, seq) in writes {
        mongo.insert(ws, wf, seq).await;
    }
    let got: Vec<(String, i64)> = sse
        .events(4, WAIT)
        .await
        .iter()
        .map(|e| {
            let m = e.msg();
            (m.channel, e.seq())
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("logs:w1:f1".to_string(), 1),
            ("logs:w1:f2".to_string(), 3),
            ("logs:w3:f9".to_string(), 4),
            ("logs:w1:f1".to_string(), 6),
        ]
    );
    sse.expect_no_event(QUIET).await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compat_route_headers_and_retry_first() {
    let mongo = Mongo::start("routing_compat").await;
    let gw = start_gateway(&mongo, &[("SSE_RETRY_MS", "1234")]).await;
    let base = base_url(&gw);

    let mut sse = Sse::open(
        &base,
        "/wfm/workflow/workspace/w1/workflow/f1/logs/stream",
        None,
    )
    .await
    .expect("compat route");
    assert_eq!(sse.status, 200);
    let h = |name: &str| {
        sse.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        h("content-type").starts_with("text/event-stream"),
        "{:?}",
        sse.headers
    );
    assert_eq!(h("cache-control"), "no-cache");
    assert_eq!(h("x-accel-buffering"), "no");
    assert_eq!(sse.expect_retry().await, 1234);

    mongo.insert("w1", "f2", 1).await;
    mongo.insert("w1", "f1", 2).await;
    let ev = sse.next_event(WAIT).await.unwrap();
    assert_eq!(ev.msg().channel, "logs:w1:f1");
    assert_eq!(ev.seq(), 2);

    // The same headers and first frame on /v1/stream.
    let mut v1 = Sse::open(&base, &stream_path(&["logs:w1"], None, None), None)
        .await
        .expect("v1 stream");
    assert_eq!(
        v1.headers.get("content-type").unwrap().to_str().unwrap(),
        "text/event-stream"
    );
    assert_eq!(v1.headers.get("cache-control").unwrap(), "no-cache");
    assert_eq!(v1.headers.get("x-accel-buffering").unwrap(), "no");
    assert_eq!(v1.expect_retry().await, 1234);
    gw.shutdown().await;
}

/// Updates and replaces are streamed with their op; deletes are not; types are plain JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_replaces_and_document_json() {
    use bson::doc;
    let mongo = Mongo::start("routing_ops").await;
    let gw = start_gateway(&mongo, &[]).await;
    let base = base_url(&gw);
    let mut sse = Sse::subscribe(&base, &["logs:w1:f1"], None).await;

    let when = bson::DateTime::from_millis(1_700_000_000_123);
    let bin = bson::Binary {
        subtype: bson::spec::BinarySubtype::Generic,
        bytes: vec![1, 2, 3],
    };
    let logs = mongo.logs();
    // Each change is read before the next one is made: `updateLookup` returns the document
    // as it is when the event is read, so a later write (or a delete) would show through.
    logs.insert_one(doc! {
        "_id": 7, "workspace_id": "w1", "workflow_id": "f1", "seq": 1_i64,
        "at": when, "big": 1_i64 << 40, "bin": bin,
    })
    .await
    .unwrap();
    let mut evs = sse.events(1, WAIT).await;
    logs.update_one(doc! {"_id": 7}, doc! {"$set": {"seq": 2}})
        .await
        .unwrap();
    evs.extend(sse.events(1, WAIT).await);
    logs.replace_one(
        doc! {"_id": 7},
        doc! {"workspace_id": "w1", "workflow_id": "f1", "seq": 3},
    )
    .await
    .unwrap();
    evs.extend(sse.events(1, WAIT).await);
    logs.delete_one(doc! {"_id": 7}).await.unwrap();
    mongo.insert("w1", "f1", 4).await;
    evs.extend(sse.events(1, WAIT).await);

    let ops: Vec<(String, i64)> = evs.iter().map(|e| (e.msg().op, e.seq())).collect();
    assert_eq!(
        ops,
        vec![
            ("insert".into(), 1),
            ("update".into(), 2),
            ("replace".into(), 3),
            ("insert".into(), 4)
        ]
    );
    let d = &evs[0].msg().doc;
    assert_eq!(d["_id"], 7);
    assert_eq!(d["at"], "2023-11-14T22:13:20.123Z");
    assert_eq!(d["big"], 1_i64 << 40);
    assert_eq!(d["bin"], "AQID");
    let ids: Vec<&str> = evs.iter().map(|e| e.id.as_str()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
    gw.shutdown().await;
}
