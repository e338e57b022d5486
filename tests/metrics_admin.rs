//! Operations (issue 9): `/metrics` scraped and parsed with a Prometheus text-format parser,
//! and the admin endpoints, through the real gateway against mongo-sim.

#[path = "common/mod.rs"]
mod common;

use std::time::Duration;

use bson::doc;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mongo_sse::hub::Stats;
use prometheus_parse::{Scrape, Value};
use serde_json::json;

const ADMIN: &str = "ops-admin-token-0123456789";
const SECRET: &str = "test-only-hs256-secret-0123456789abcdef";

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

fn token(sub: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": sub, "exp": now + 3600, "channels": ["logs"]}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign a test token")
}

/// `GET path` with the admin token.
async fn admin_get(base: &str, path: &str) -> serde_json::Value {
    let auth = bearer(ADMIN);
    let r = get(base, path, &[("authorization", auth.as_bytes())]).await;
    assert_eq!(r.status, 200, "GET {path}: {}", r.body);
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("GET {path}: {e}: {}", r.body))
}

async fn scrape_with(base: &str, token: Option<&str>) -> Scrape {
    let auth = token.map(bearer);
    let headers: Vec<(&str, &[u8])> = auth
        .iter()
        .map(|a| ("authorization", a.as_bytes()))
        .collect();
    let r = get(base, "/metrics", &headers).await;
    assert_eq!(r.status, 200, "GET /metrics: {}", r.body);
    let ct = r
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    Scrape::parse(r.body.lines().map(|l| Ok(l.to_string()))).expect("Prometheus text format")
}

async fn scrape(base: &str) -> Scrape {
    scrape_with(base, None).await
}

/// The value of a counter, gauge or untyped sample with these labels; for a histogram, its
/// observation count (the `+Inf` bucket).
fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples
        .iter()
        .find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match &x.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(b) => b.iter().map(|c| c.count).fold(0.0, f64::max),
            Value::Summary(_) => f64::NAN,
        })
}

fn must(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    value(s, name, labels).unwrap_or_else(|| panic!("no sample {name}{labels:?} in the scrape"))
}

/// Scrapes until `pred` holds for the metric (it moves in another task), failing after
/// [`WAIT`] with the last value.
async fn until_metric(
    base: &str,
    name: &str,
    labels: &[(&str, &str)],
    pred: impl Fn(f64) -> bool,
) -> Scrape {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let s = scrape(base).await;
        let v = value(&s, name, labels);
        if v.is_some_and(&pred) {
            return s;
        }
        if std::time::Instant::now() >= deadline {
            panic!("{name}{labels:?} is {v:?} after {WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_deliveries_and_closes() {
    let mongo = Mongo::start("ops_metrics").await;
    let gw = start_gateway(&mongo, &[("SSE_ADMIN_TOKEN", ADMIN)]).await;
    let base = base_url(&gw);

    let before = scrape(&base).await;
    assert_eq!(must(&before, "mongo_sse_connections_open", &[]), 0.0);
    assert_eq!(
        must(&before, "mongo_sse_mode", &[("mode", "change_stream")]),
        1.0
    );
    assert_eq!(must(&before, "mongo_sse_mode", &[("mode", "polling")]), 0.0);
    assert_eq!(
        must(
            &before,
            "mongo_sse_connections_closed_total",
            &[("reason", "client")]
        ),
        0.0
    );

    let mut sse = Sse::subscribe(&base, &["logs:w1"], None).await;
    for seq in 0..3 {
        mongo.insert("w1", "f1", seq).await;
    }
    let evs = sse.events(3, WAIT).await;
    assert_eq!(
        evs.iter().map(|e| e.seq()).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );

    let s = scrape(&base).await;
    assert_eq!(must(&s, "mongo_sse_connections_open", &[]), 1.0);
    assert_eq!(must(&s, "mongo_sse_connections_opened_total", &[]), 1.0);
    assert!(must(&s, "mongo_sse_events_in_total", &[("source", "logs")]) >= 3.0);
    assert!(must(&s, "mongo_sse_deliveries_total", &[]) >= 3.0);
    assert!(must(&s, "mongo_sse_bytes_out_total", &[]) > 0.0);
    assert!(
        must(&s, "mongo_sse_fanout_latency_seconds", &[]) >= 3.0,
        "the fan-out histogram has an observation per live delivery"
    );
    let lag = must(&s, "mongo_sse_watcher_lag_seconds", &[]);
    assert!((0.0..60.0).contains(&lag), "watcher lag {lag}");
    // mongo-sim serves `local.oplog.rs`: the headroom is a real number of seconds.
    let headroom = must(&s, "mongo_sse_resume_headroom_seconds", &[]);
    let window = must(&s, "mongo_sse_oplog_window_seconds", &[]);
    assert!(headroom >= 0.0, "headroom {headroom}");
    assert!(window >= headroom, "window {window} headroom {headroom}");
    assert_eq!(must(&s, "mongo_sse_catchups_running", &[]), 0.0);
    assert_eq!(must(&s, "mongo_sse_backlogs_running", &[]), 0.0);

    // Resuming from the first event is answered from the ring.
    let resumed = Sse::subscribe(&base, &["logs:w1"], Some(&evs[0].id)).await;
    let s = scrape(&base).await;
    assert_eq!(
        must(&s, "mongo_sse_resumes_total", &[("path", "ring")]),
        1.0
    );
    drop(resumed);

    // The client goes away: closed with reason `client`.
    drop(sse);
    let s = until_metric(
        &base,
        "mongo_sse_connections_closed_total",
        &[("reason", "client")],
        |v| v == 2.0,
    )
    .await;
    assert_eq!(must(&s, "mongo_sse_connections_open", &[]), 0.0);
    assert_eq!(
        must(
            &s,
            "mongo_sse_connections_closed_total",
            &[("reason", "admin")]
        ),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_require_the_admin_token() {
    let mongo = Mongo::start("ops_private").await;
    let gw = start_gateway(
        &mongo,
        &[("SSE_ADMIN_TOKEN", ADMIN), ("SSE_METRICS_PUBLIC", "false")],
    )
    .await;
    let base = base_url(&gw);
    let none = get(&base, "/metrics", &[]).await;
    assert_eq!(none.status, 401, "{}", none.body);
    assert_eq!(assert_json_4xx("no token", &none)["error"], "unauthorized");
    let wrong = bearer("not-the-admin-token-at-all");
    let wrong = get(&base, "/metrics", &[("authorization", wrong.as_bytes())]).await;
    assert_eq!(wrong.status, 401);
    assert_eq!(
        assert_json_4xx("wrong token", &wrong)["error"],
        "invalid_token"
    );
    let s = scrape_with(&base, Some(ADMIN)).await;
    assert_eq!(
        must(
            &s,
            "mongo_sse_auth_failures_total",
            &[("reason", "admin_token")]
        ),
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_counted_by_reason_and_limit() {
    let mongo = Mongo::start("ops_refusals").await;
    let gw = start_gateway(
        &mongo,
        &[
            ("SSE_AUTH", "jwt"),
            ("SSE_JWT_SECRET", SECRET),
            ("SSE_MAX_CONNECTIONS_PER_SUBJECT", "1"),
        ],
    )
    .await;
    let base = base_url(&gw);
    let path = stream_path(&["logs:w1"], None, None);
    let r = get(&base, &path, &[]).await;
    assert_eq!(r.status, 401);
    let t = bearer(&token("carol"));
    let hdr = vec![("authorization".to_string(), t.clone())];
    let mut first = Sse::open_with_headers(&base, &path, &hdr)
        .await
        .unwrap_or_else(|e| panic!("{} {}", e.status, e.body));
    first.expect_retry().await;
    let second = get(&base, &path, &[("authorization", t.as_bytes())]).await;
    assert_eq!(second.status, 429, "{}", second.body);
    let s = scrape(&base).await;
    assert_eq!(
        must(
            &s,
            "mongo_sse_auth_failures_total",
            &[("reason", "unauthorized")]
        ),
        1.0
    );
    assert_eq!(
        must(
            &s,
            "mongo_sse_limit_rejections_total",
            &[("limit", "connections_per_subject")]
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_closed_with_its_reason() {
    let mongo = Mongo::start("ops_slow").await;
    let gw = start_gateway(&mongo, &[("SSE_QUEUE_LEN", "4")]).await;
    let base = base_url(&gw);
    let hub = std::sync::Arc::clone(&gw.hub);
    // Subscribed and never read: the socket buffers fill, then its queue.
    let _slow = Sse::subscribe(&base, &["logs:w1"], None).await;
    let pad = "x".repeat(16 * 1024);
    let mut written = 0i64;
    while Stats::get(&hub.stats.slow_consumer_disconnects) == 0 {
        assert!(
            written < 4000,
            "the client that stopped reading is still connected"
        );
        let docs = (written..written + 10)
            .map(|i| doc! {"workspace_id": "w1", "workflow_id": "f1", "seq": i, "pad": &pad})
            .collect();
        mongo.insert_many(docs).await;
        written += 10;
        let want = written as u64;
        eventually(WAIT, "the gateway to publish a batch", || {
            (Stats::get(&hub.stats.events_published) >= want).then_some(())
        })
        .await;
    }
    let s = until_metric(
        &base,
        "mongo_sse_connections_closed_total",
        &[("reason", "slow_consumer")],
        |v| v == 1.0,
    )
    .await;
    assert_eq!(
        must(
            &s,
            "mongo_sse_connections_closed_total",
            &[("reason", "client")]
        ),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mode_gauge_says_polling_on_a_standalone_server() {
    if skip_unless_sim(
        "the_mode_gauge_says_polling",
        "needs a standalone mongo-sim",
    ) {
        return;
    }
    let mongo = Mongo::with_sim_config(
        "ops_polling",
        mongo_sim::SimConfig {
            standalone: true,
            ..Default::default()
        },
    )
    .await;
    let gw = start_gateway(&mongo, &[("SSE_POLL_INTERVAL_MS", "100")]).await;
    let base = base_url(&gw);
    let s = until_metric(&base, "mongo_sse_mode", &[("mode", "polling")], |v| {
        v == 1.0
    })
    .await;
    assert_eq!(
        must(&s, "mongo_sse_mode", &[("mode", "change_stream")]),
        0.0
    );
    assert!(must(&s, "mongo_sse_mode_switches_total", &[]) >= 0.0);
    let mut sse = Sse::subscribe(&base, &["logs:w1"], None).await;
    mongo.insert("w1", "f1", 1).await;
    let evs = sse.events_until(WAIT, |e| e.event == "message").await;
    assert_eq!(evs.first().map(|e| e.event.as_str()), Some("mode"));
    assert_eq!(evs.last().map(|e| e.seq()), Some(1));
    let s = scrape(&base).await;
    assert!(must(&s, "mongo_sse_events_in_total", &[("source", "logs")]) >= 1.0);
    assert!(must(&s, "mongo_sse_deliveries_total", &[]) >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_lists_closes_and_the_client_resumes_losslessly() {
    let mongo = Mongo::start("ops_admin").await;
    let gw = start_gateway(
        &mongo,
        &[
            ("SSE_AUTH", "jwt"),
            ("SSE_JWT_SECRET", SECRET),
            ("SSE_ADMIN_TOKEN", ADMIN),
        ],
    )
    .await;
    let base = base_url(&gw);

    // Refusals: no token, a wrong one, an unknown id; JSON bodies.
    for auth in [None, Some(bearer("wrong-admin-token-0123456789"))] {
        let headers: Vec<(&str, &[u8])> = auth
            .iter()
            .map(|a| ("authorization", a.as_bytes()))
            .collect();
        for path in ["/admin/connections", "/admin/channels"] {
            let r = get(&base, path, &headers).await;
            assert_eq!(r.status, 401, "{path}: {}", r.body);
            assert_json_4xx(path, &r);
        }
        let mut req = http().delete(format!("{base}/admin/connections/1"));
        if let Some(a) = &auth {
            req = req.header("authorization", a);
        }
        let r = req.send().await.expect("DELETE");
        assert_eq!(r.status(), 401);
    }

    let path = stream_path(&["logs:w1:f1", "logs:w2"], None, None);
    let hdr = vec![("authorization".to_string(), bearer(&token("alice")))];
    let mut sse = Sse::open_with_headers(&base, &path, &hdr)
        .await
        .unwrap_or_else(|e| panic!("{} {}", e.status, e.body));
    sse.expect_retry().await;
    for seq in 0..3 {
        mongo.insert("w1", "f1", seq).await;
    }
    let first = sse.events(3, WAIT).await;

    let list = admin_get(&base, "/admin/connections").await;
    let rows = list["connections"].as_array().expect("connections");
    assert_eq!(rows.len(), 1, "{list}");
    let row = &rows[0];
    assert_eq!(row["subject"], "alice");
    assert_eq!(row["channels"], json!(["logs:w1:f1", "logs:w2"]));
    assert_eq!(row["events_sent"], 3);
    assert_eq!(row["resume"], "live");
    assert!(row["remote_addr"]
        .as_str()
        .is_some_and(|a| a.starts_with("127.0.0.1:")));
    assert!(row["connected_since"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    assert!(row["queue_depth"].is_u64());
    assert_eq!(list["next"], serde_json::Value::Null);
    let id = row["id"].as_str().expect("id").to_string();

    let channels = admin_get(&base, "/admin/channels").await;
    let w1f1 = channels["channels"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["channel"] == "logs:w1:f1"))
        .cloned()
        .unwrap_or_else(|| panic!("logs:w1:f1 in {channels}"));
    assert_eq!(w1f1["subscribers"], 1);
    assert_eq!(w1f1["events_last_minute"], 3);

    // Unknown ids: 404 with a JSON body.
    for bad in ["999999", "not-a-number"] {
        let r = http()
            .delete(format!("{base}/admin/connections/{bad}"))
            .header("authorization", bearer(ADMIN))
            .send()
            .await
            .expect("DELETE");
        assert_eq!(r.status(), 404);
        let text = r.text().await.unwrap_or_default();
        let body: serde_json::Value = serde_json::from_str(&text).expect("a JSON error");
        assert_eq!(body["error"], "unknown_connection");
    }

    // Closing it ends its stream; what is written meanwhile reaches it on resume.
    let r = http()
        .delete(format!("{base}/admin/connections/{id}"))
        .header("authorization", bearer(ADMIN))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(r.status(), 200);
    let rest = sse.drain_to_end(WAIT).await;
    assert!(rest.is_empty(), "nothing new was written: {rest:?}");
    for seq in 3..6 {
        mongo.insert("w1", "f1", seq).await;
    }
    let last = sse.last_event_id().to_string();
    assert_eq!(last, first[2].id);
    let mut hdr = hdr.clone();
    hdr.push(("last-event-id".to_string(), last));
    let mut again = Sse::open_with_headers(&base, &path, &hdr)
        .await
        .unwrap_or_else(|e| panic!("{} {}", e.status, e.body));
    again.expect_retry().await;
    mongo.insert("w1", "f1", 6).await;
    let after = again.events(4, WAIT).await;
    assert!(after.iter().all(|e| e.event == "message"), "{after:?}");
    assert_eq!(
        after.iter().map(|e| e.seq()).collect::<Vec<_>>(),
        vec![3, 4, 5, 6]
    );
    again.expect_no_event(Duration::from_millis(200)).await;

    // Counted once, as `admin`, whichever of the admin handler and the stream's own end
    // comes first. (The stream used to read the reason before the admin had recorded it:
    // its queue ends as soon as the router drops it, a moment before the reason is set.)
    let closes = |s: &Scrape, reason: &str| {
        must(
            s,
            "mongo_sse_connections_closed_total",
            &[("reason", reason)],
        )
    };
    let s = until_metric(
        &base,
        "mongo_sse_connections_closed_total",
        &[("reason", "admin")],
        |v| v >= 1.0,
    )
    .await;
    assert_eq!(closes(&s, "admin"), 1.0);
    assert_eq!(closes(&s, "client"), 0.0);
    assert_eq!(
        must(&s, "mongo_sse_resumes_total", &[("path", "ring")]),
        1.0
    );
    let list = admin_get(&base, "/admin/connections").await;
    assert_eq!(list["connections"][0]["resume"], "ring");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_lists_are_paginated() {
    let mongo = Mongo::start("ops_pages").await;
    let gw = start_gateway(&mongo, &[("SSE_ADMIN_TOKEN", ADMIN)]).await;
    let base = base_url(&gw);

    // Connections, two on pages of one.
    let _a = Sse::subscribe(&base, &["logs:a"], None).await;
    let _b = Sse::subscribe(&base, &["logs:b"], None).await;
    let p1 = admin_get(&base, "/admin/connections?limit=1").await;
    assert_eq!(p1["connections"].as_array().map(Vec::len), Some(1));
    assert_eq!(p1["connections"][0]["channels"], json!(["logs:a"]));
    let next = p1["next"].as_str().expect("a next page").to_string();
    let p2 = admin_get(&base, &format!("/admin/connections?limit=1&after={next}")).await;
    assert_eq!(p2["connections"][0]["channels"], json!(["logs:b"]));
    assert_eq!(p2["next"], serde_json::Value::Null);
    let bad = get(
        &base,
        "/admin/connections?limit=0",
        &[("authorization", bearer(ADMIN).as_bytes())],
    )
    .await;
    assert_eq!(assert_json_4xx("limit=0", &bad)["error"], "invalid_limit");

    // Channels: 1100 workflows of one workspace are 1102 channels with events (with `logs`
    // and `logs:w1`), past the 1000-row page.
    const N: usize = 1100;
    let docs = (0..N)
        .map(|i| doc! {"workspace_id": "w1", "workflow_id": format!("f{i:04}"), "seq": i as i64})
        .collect();
    mongo.insert_many(docs).await;
    let hub = std::sync::Arc::clone(&gw.hub);
    eventually(WAIT, "the gateway to publish every document", || {
        (Stats::get(&hub.stats.events_published) >= N as u64).then_some(())
    })
    .await;
    let p1 = admin_get(&base, "/admin/channels").await;
    let rows1 = p1["channels"].as_array().cloned().unwrap_or_default();
    assert_eq!(rows1.len(), 1000);
    let next = p1["next"].as_str().expect("a second page").to_string();
    let q = form_urlencoded::Serializer::new(String::new())
        .append_pair("after", &next)
        .finish();
    let p2 = admin_get(&base, &format!("/admin/channels?{q}")).await;
    let rows2 = p2["channels"].as_array().cloned().unwrap_or_default();
    assert_eq!(p2["next"], serde_json::Value::Null);
    let names: Vec<String> = rows1
        .iter()
        .chain(rows2.iter())
        .filter_map(|r| r["channel"].as_str().map(String::from))
        .collect();
    let unique: std::collections::BTreeSet<&String> = names.iter().collect();
    assert_eq!(unique.len(), names.len(), "no row twice");
    // The two subscribed channels without events, plus every channel with events.
    assert_eq!(names.len(), N + 2 + 2);
    let w1 = rows1
        .iter()
        .chain(rows2.iter())
        .find(|r| r["channel"] == "logs:w1")
        .cloned()
        .unwrap_or_default();
    assert_eq!(w1["events_last_minute"], N as u64);
    assert!(rows2.iter().any(|r| r["channel"] == "logs:w1:f1099"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_ups_and_gaps_are_counted_by_path() {
    if skip_unless_sim("catch_ups_and_gaps_are_counted", "needs a small oplog") {
        return;
    }
    let mongo = Mongo::with_sim_config(
        "ops_paths",
        mongo_sim::SimConfig {
            oplog_max_events: 20,
            ..Default::default()
        },
    )
    .await;
    // No ring: every resume is a catch-up (or a gap).
    let gw = start_gateway(
        &mongo,
        &[("SSE_HISTORY_EVENTS", "0"), ("SSE_ADMIN_TOKEN", ADMIN)],
    )
    .await;
    let base = base_url(&gw);
    let mut sse = Sse::subscribe(&base, &["logs:w1"], None).await;
    mongo.insert("w1", "f1", 0).await;
    mongo.insert("w1", "f1", 1).await;
    let evs = sse.events(2, WAIT).await;
    drop(sse);

    let mut resumed = Sse::subscribe(&base, &["logs:w1"], Some(&evs[0].id)).await;
    assert_eq!(resumed.events(1, WAIT).await[0].seq(), 1);
    let s = scrape(&base).await;
    assert_eq!(
        must(&s, "mongo_sse_resumes_total", &[("path", "catch_up")]),
        1.0
    );
    let list = admin_get(&base, "/admin/connections").await;
    assert_eq!(list["connections"][0]["resume"], "catch_up");
    drop(resumed);

    // Push the first event off the 20-entry oplog: resuming from it is a gap.
    let docs = (2..40).map(|i| log_doc("w1", "f2", i)).collect();
    mongo.insert_many(docs).await;
    let mut gap = Sse::subscribe(&base, &["logs:w1"], Some(&evs[0].id)).await;
    let first = gap.next_event(WAIT).await.expect("a gap event");
    assert_eq!(first.event, "gap", "{first:?}");
    let s = scrape(&base).await;
    assert_eq!(must(&s, "mongo_sse_resumes_total", &[("path", "gap")]), 1.0);
    // The headroom is what is left of the window for the oldest connected client (this one
    // holds the head since its gap), never more than the window itself.
    let headroom = must(&s, "mongo_sse_resume_headroom_seconds", &[]);
    assert!(
        (0.0..=must(&s, "mongo_sse_oplog_window_seconds", &[])).contains(&headroom),
        "{headroom}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_connections_with_its_reason() {
    let mongo = Mongo::start("ops_shutdown").await;
    let gw = start_gateway(&mongo, &[]).await;
    let base = base_url(&gw);
    let hub = std::sync::Arc::clone(&gw.hub);
    let mut sse = Sse::subscribe(&base, &["logs:w1"], None).await;
    within(WAIT, "shutdown", gw.shutdown()).await;
    let _ = sse.drain_to_end(WAIT).await;
    // The server is gone: read this gateway's registry directly, through the same parser.
    let text = hub.metrics.render(&Default::default());
    let s = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("text format");
    assert_eq!(
        must(
            &s,
            "mongo_sse_connections_closed_total",
            &[("reason", "shutdown")]
        ),
        1.0
    );
    assert_eq!(must(&s, "mongo_sse_connections_open", &[]), 0.0);
}
