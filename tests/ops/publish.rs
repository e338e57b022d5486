//! `POST /v1/publish`: events written through one gateway reach the subscribers of every
//! gateway, in the same shape as any other event, resumably, in both modes; every refusal is
//! a JSON error and writes nothing.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bson::doc;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mongo_sim::SimConfig;
use serde_json::{json, Value};

use crate::common::*;

const SECRET: &str = "test-only-hs256-secret-0123456789abcdef";

/// `POST /v1/publish` with `body`, `content_type` and more headers.
async fn post(
    base: &str,
    body: Vec<u8>,
    content_type: &str,
    headers: &[(&str, &str)],
) -> HttpError {
    let mut req = http()
        .post(format!("{base}/v1/publish"))
        .header("content-type", content_type)
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = within(WAIT, "POST /v1/publish", req.send())
        .await
        .unwrap_or_else(|e| panic!("POST /v1/publish: {}", error_chain(&e)));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = within(WAIT, "the body of POST /v1/publish", resp.text())
        .await
        .unwrap_or_default();
    HttpError {
        status,
        headers,
        body,
    }
}

async fn publish_json(base: &str, body: &Value, headers: &[(&str, &str)]) -> HttpError {
    post(
        base,
        body.to_string().into_bytes(),
        "application/json",
        headers,
    )
    .await
}

/// A publish that must be accepted; its JSON answer.
async fn published(base: &str, body: &Value) -> Value {
    let r = publish_json(base, body, &[]).await;
    assert_eq!(r.status, 202, "publish {body}: {}", r.body);
    serde_json::from_str(&r.body).expect("a JSON answer")
}

async fn stored(mongo: &Mongo) -> u64 {
    mongo
        .db
        .collection::<bson::Document>("sse_events")
        .count_documents(doc! {})
        .await
        .expect("count the events collection")
}

async fn data_event(sse: &mut Sse) -> Ev {
    loop {
        let ev = sse.next_event(WAIT).await.expect("a data event");
        if ev.event == "message" {
            return ev;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_and_batch_reach_the_subscribers_of_every_instance() {
    let mongo = Mongo::start("publish_basic").await;
    let gw1 = start_gateway(&mongo, &[]).await;
    let gw2 = start_gateway(&mongo, &[]).await;
    let (b1, b2) = (base_url(&gw1), base_url(&gw2));
    let mut on1 = Sse::subscribe(&b1, &["jobs:w1"], None).await;
    let mut on2 = Sse::subscribe(&b2, &["jobs:w1"], None).await;
    let mut logs = Sse::subscribe(&b2, &["logs:w1"], None).await;

    let one = published(
        &b1,
        &json!({"channel": "jobs:w1:a", "data": {"n": 1, "s": "x"}}),
    )
    .await;
    assert_eq!(one["channel"], "jobs:w1:a");
    let id = one["id"].as_str().expect("an id");
    assert_eq!(id.len(), 24, "the inserted ObjectId as hex: {one}");

    let batch = published(
        &b1,
        &json!([
            {"channel": "jobs:w1:b", "data": [1, "two", null]},
            {"channel": "jobs:w2", "data": "not for w1"},
            {"channel": "jobs:w1", "data": null},
            {"channel": "logs:w1:f1", "data": {"level": "info"}},
        ]),
    )
    .await;
    let answers = batch.as_array().expect("a batch answers an array");
    assert_eq!(answers.len(), 4);
    assert_eq!(answers[1]["channel"], "jobs:w2");
    assert!(answers
        .iter()
        .all(|a| a["id"].as_str().map(str::len) == Some(24)));

    let want = [
        ("jobs:w1:a", json!({"n": 1, "s": "x"})),
        ("jobs:w1:b", json!([1, "two", null])),
        ("jobs:w1", Value::Null),
    ];
    for sse in [&mut on1, &mut on2] {
        for (channel, doc) in &want {
            let ev = data_event(sse).await;
            let v: Value = serde_json::from_str(&ev.data).expect("JSON data");
            assert_eq!(
                v,
                json!({"channel": channel, "op": "insert", "doc": doc}),
                "exactly the published data, on its channel"
            );
        }
        sse.expect_no_event(Duration::from_millis(300)).await;
    }
    // Published into a channel of another source's prefix: its subscribers get it too.
    let ev = data_event(&mut logs).await;
    assert_eq!(ev.msg().channel, "logs:w1:f1");
    assert_eq!(ev.msg().doc, json!({"level": "info"}));

    // Stored with the channel explicit.
    let d = mongo
        .db
        .collection::<bson::Document>("sse_events")
        .find_one(doc! {"_id": bson::oid::ObjectId::parse_str(id).unwrap()})
        .await
        .unwrap()
        .expect("the published document");
    assert_eq!(d.get_str("channel").unwrap(), "jobs:w1:a");
    assert_eq!(stored(&mongo).await, 5);
    gw1.shutdown().await;
    gw2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_events_resume_from_memory_catch_up_and_backlog() {
    let mongo = Mongo::start("publish_resume").await;
    // No ring: every resume goes through a catch-up change stream filtered in MongoDB.
    let gw = start_gateway(&mongo, &[("SSE_HISTORY_EVENTS", "0")]).await;
    let with_ring = start_gateway(&mongo, &[]).await;
    let base = base_url(&gw);
    let mut sse = Sse::subscribe(&base, &["ev:a"], None).await;
    let mut ring = Sse::subscribe(&base_url(&with_ring), &["ev:a"], None).await;
    published(&base, &json!({"channel": "ev:a:1", "data": 1})).await;
    let first = data_event(&mut sse).await;
    let first_ring = data_event(&mut ring).await;
    drop(sse);
    drop(ring);
    published(&base, &json!({"channel": "ev:b", "data": "other"})).await;
    published(
        &base,
        &json!([{"channel": "ev:a", "data": 2}, {"channel": "ev:a:2", "data": 3}]),
    )
    .await;

    for (what, b, from) in [
        ("catch-up", &base, &first.id),
        ("ring", &base_url(&with_ring), &first_ring.id),
    ] {
        let mut r = Sse::resume(b, &stream_path(&["ev:a"], None, None), from).await;
        let evs: Vec<Value> = [data_event(&mut r).await, data_event(&mut r).await]
            .iter()
            .map(|e| e.msg().doc)
            .collect();
        assert_eq!(evs, [json!(2), json!(3)], "{what}: exactly what was missed");
        r.expect_no_event(Duration::from_millis(300)).await;
    }

    // A backlog reads the events collection by its stored channels.
    let path = stream_path(&["ev:a"], None, Some(2));
    let mut b = Sse::open(&base, &path, None).await.expect("backlog stream");
    b.expect_retry().await;
    let docs: Vec<Value> = [data_event(&mut b).await, data_event(&mut b).await]
        .iter()
        .map(|e| e.msg().doc)
        .collect();
    assert_eq!(
        docs,
        [json!(2), json!(3)],
        "the last two of ev:a, oldest first"
    );
    gw.shutdown().await;
    with_ring.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_json_and_insert_nothing() {
    let mongo = Mongo::start("publish_errors").await;
    let gw = start_gateway(&mongo, &[]).await;
    let base = base_url(&gw);
    let ok = |c: &str| json!({"channel": c, "data": 1});
    let many: Vec<Value> = (0..101).map(|i| ok(&format!("a:{i}"))).collect();
    let big = json!({"channel": "a", "data": "x".repeat(70 * 1024)}).to_string();
    let cases: Vec<(&str, Vec<u8>, &str, u16, &str)> = vec![
        (
            "not JSON",
            b"{nope".to_vec(),
            "application/json",
            400,
            "invalid_json",
        ),
        (
            "empty body",
            Vec::new(),
            "application/json",
            400,
            "invalid_json",
        ),
        (
            "a number",
            b"3".to_vec(),
            "application/json",
            400,
            "invalid_json",
        ),
        (
            "empty batch",
            b"[]".to_vec(),
            "application/json",
            400,
            "invalid_json",
        ),
        (
            "bad channel",
            json!({"channel": "a b", "data": 1})
                .to_string()
                .into_bytes(),
            "application/json",
            400,
            "invalid_channel",
        ),
        (
            "no channel",
            json!({"data": 1}).to_string().into_bytes(),
            "application/json",
            400,
            "invalid_channel",
        ),
        (
            "five segments",
            json!({"channel": "a:b:c:d:e", "data": 1})
                .to_string()
                .into_bytes(),
            "application/json",
            400,
            "invalid_channel",
        ),
        (
            "no data",
            json!({"channel": "a"}).to_string().into_bytes(),
            "application/json",
            400,
            "missing_data",
        ),
        (
            "one bad item in a batch",
            json!([ok("a"), ok("b"), {"channel": "c"}])
                .to_string()
                .into_bytes(),
            "application/json",
            400,
            "missing_data",
        ),
        (
            "101 items",
            Value::Array(many).to_string().into_bytes(),
            "application/json",
            400,
            "too_many_events",
        ),
        (
            "over 64 KiB",
            big.into_bytes(),
            "application/json",
            413,
            "body_too_large",
        ),
        (
            "text/plain",
            ok("a").to_string().into_bytes(),
            "text/plain",
            415,
            "unsupported_media_type",
        ),
        (
            "form",
            ok("a").to_string().into_bytes(),
            "application/x-www-form-urlencoded",
            415,
            "unsupported_media_type",
        ),
    ];
    for (what, body, ct, status, code) in cases {
        let r = post(&base, body, ct, &[]).await;
        assert_eq!(r.status, status, "{what}: {}", r.body);
        let v = assert_json_4xx(what, &r);
        assert_eq!(v["error"], code, "{what}: {v}");
    }
    let v = assert_json_4xx(
        "batch index",
        &publish_json(&base, &json!([ok("a"), {"channel": 5, "data": 1}]), &[]).await,
    );
    assert_eq!(v["index"], 1, "{v}");
    assert_eq!(
        stored(&mongo).await,
        0,
        "nothing was inserted by any refusal"
    );
    // And the gateway still publishes.
    published(&base, &ok("a")).await;
    assert_eq!(stored(&mongo).await, 1);
    gw.shutdown().await;
}

fn token(publish: &[&str]) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let claims = json!({"sub": "svc", "exp": now + 600, "iat": now, "channels": ["jobs"], "publish": publish});
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign HS256")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_grants_are_checked_with_jwt() {
    let mongo = Mongo::start("publish_grants").await;
    let gw = start_gateway(&mongo, &[("SSE_AUTH", "jwt"), ("SSE_JWT_SECRET", SECRET)]).await;
    let base = base_url(&gw);
    let body = json!([
        {"channel": "jobs:w1:x", "data": 1},
        {"channel": "jobs:w2", "data": 2},
        {"channel": "other", "data": 3},
    ]);

    let r = publish_json(&base, &body, &[]).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(assert_json_4xx("no token", &r)["error"], "unauthorized");
    assert!(r.headers.contains_key("www-authenticate"));
    let r = publish_json(&base, &body, &[("authorization", "Bearer nope")]).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(assert_json_4xx("bad token", &r)["error"], "invalid_token");

    let auth = format!("Bearer {}", token(&["jobs:w1"]));
    let r = publish_json(&base, &body, &[("authorization", &auth)]).await;
    assert_eq!(r.status, 403, "{}", r.body);
    let v = assert_json_4xx("not granted", &r);
    assert_eq!(v["error"], "forbidden_channels");
    assert_eq!(v["channels"], json!(["jobs:w2", "other"]), "{v}");
    // `channels` (subscribe) grants do not allow publishing.
    let sub_only = format!("Bearer {}", token(&[]));
    let r = publish_json(
        &base,
        &json!({"channel": "jobs", "data": 1}),
        &[("authorization", &sub_only)],
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(stored(&mongo).await, 0, "a refused batch writes nothing");

    let wide = format!("Bearer {}", token(&["jobs:*", "other"]));
    let r = publish_json(&base, &body, &[("authorization", &wide)]).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(stored(&mongo).await, 3);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_mode_delivers_and_resumes_publishes() {
    if skip_unless_sim(
        "polling_mode_delivers_and_resumes_publishes",
        "needs a standalone mongo-sim",
    ) {
        return;
    }
    let mongo = Mongo::with_sim_config(
        "publish_polling",
        SimConfig {
            standalone: true,
            ..SimConfig::default()
        },
    )
    .await;
    let gw = start_gateway(&mongo, &[("SSE_POLL_INTERVAL_MS", "100")]).await;
    let base = base_url(&gw);
    let mut sse = Sse::subscribe(&base, &["ev"], None).await;
    published(&base, &json!({"channel": "ev:x", "data": {"k": "v"}})).await;
    let ev = data_event(&mut sse).await;
    assert!(ev.id.starts_with("p."), "a polling id: {}", ev.id);
    assert_eq!(
        serde_json::from_str::<Value>(&ev.data).unwrap(),
        json!({"channel": "ev:x", "op": "insert", "doc": {"k": "v"}})
    );
    drop(sse);
    published(
        &base,
        &json!([{"channel": "ev", "data": 2}, {"channel": "nope", "data": 0}]),
    )
    .await;
    let mut r = Sse::resume(&base, &stream_path(&["ev"], None, None), &ev.id).await;
    let next = data_event(&mut r).await;
    assert_eq!(next.msg().doc, json!(2));
    r.expect_no_event(Duration::from_millis(400)).await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_failure_is_a_503_with_retry_after() {
    let mongo = Mongo::start("publish_503").await;
    let app = unique_name("pub503");
    // Error 91 (ShutdownInProgress) marks the server unknown; the driver finds it again at its
    // next heartbeat (10 s by default, as long as the publish timeout). The gateway never
    // retries reads, so nothing else asks for an earlier check: a short heartbeat keeps the
    // publish after the failure from waiting for it.
    let uri = format!("{}&heartbeatFrequencyMS=500", mongo.uri_with_app_name(&app));
    let gw = start_gateway_named(&mongo, &app, &[("MONGODB_URI", uri.as_str())]).await;
    let base = base_url(&gw);
    mongo
        .fail_point(doc! {
            "configureFailPoint": "failCommand",
            "mode": "alwaysOn",
            "data": {"failCommands": ["insert"], "errorCode": 91, "appName": &app},
        })
        .await;
    let r = publish_json(&base, &json!({"channel": "a", "data": 1}), &[]).await;
    mongo
        .fail_point(doc! {"configureFailPoint": "failCommand", "mode": "off"})
        .await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.headers.contains_key("retry-after"), "{:?}", r.headers);
    let v: Value = serde_json::from_str(&r.body).expect("a JSON body");
    assert_eq!(v["error"], "mongodb_unavailable", "{v}");
    assert_eq!(stored(&mongo).await, 0);
    published(&base, &json!({"channel": "a", "data": 1})).await;
    gw.shutdown().await;
}
