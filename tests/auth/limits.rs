//! Every limit trips with the right status: 429 with `Retry-After` for connection counts and
//! rates, 414 for the URL, 431 for headers, 400 for too many channels on one connection; each
//! with a JSON body. Places free up again when streams close.

use reqwest::Method;

use crate::common::*;
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn total_connections() {
    let mongo = Mongo::start("lim_total").await;
    // A closed stream's place is freed when the server notices, at the latest on the next
    // heartbeat write: keep that short.
    let gw = start_gateway(
        &mongo,
        &[("SSE_MAX_CONNECTIONS", "2"), ("SSE_HEARTBEAT_SECS", "1")],
    )
    .await;
    let base = base_url(&gw);
    let path = stream_path(&["logs"], None, None);
    let a = Stream::open(&base, &path, &[]).await.unwrap();
    let _b = Stream::open(&base, &path, &[]).await.unwrap();
    let r = Stream::open(&base, &path, &[])
        .await
        .err()
        .expect("a third stream");
    // The stream client accepts text/event-stream: a busy stream an EventSource survives.
    assert!(r.busy().is_some(), "{}: {}", r.status, r.body);
    let v = assert_429("third stream", &r);
    assert_eq!(v["error"], "too_many_connections");
    // A client that does not ask for an event stream gets the JSON 429.
    let plain = get(&base, &path, &[("accept", b"application/json")]).await;
    assert_eq!(plain.status, 429, "{}", plain.body);
    assert_eq!(
        assert_429("plain third", &plain)["error"],
        "too_many_connections"
    );
    assert!(v["message"]
        .as_str()
        .unwrap()
        .contains("SSE_MAX_CONNECTIONS"));
    // Other endpoints are not affected.
    assert_eq!(get(&base, "/healthz", &[]).await.status, 200);
    drop(a);
    let _c = open_eventually(&base, &path, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_subject() {
    let mongo = Mongo::start("lim_subject").await;
    let gw = jwt_gateway(
        &mongo,
        &[
            ("SSE_MAX_CONNECTIONS_PER_SUBJECT", "2"),
            ("SSE_CONNECT_RATE_PER_SUBJECT", "0"),
            ("SSE_HEARTBEAT_SECS", "1"),
        ],
    )
    .await;
    let base = base_url(&gw);
    let path = stream_path(&["logs:w1"], None, None);
    let alice = token("alice", &["logs"]);
    let a1 = Stream::open(&base, &path, &[bearer(&alice)]).await.unwrap();
    let _a2 = Stream::open(&base, &path, &[bearer(&token("alice", &["logs:w1"]))])
        .await
        .unwrap();
    let r = Stream::open(&base, &path, &[bearer(&alice)])
        .await
        .err()
        .expect("refused");
    assert_eq!(
        assert_429("alice's third", &r)["error"],
        "too_many_connections_for_subject"
    );
    // Someone else is not affected.
    let _b = Stream::open(&base, &path, &[bearer(&token("bob", &["logs"]))])
        .await
        .unwrap();
    drop(a1);
    let _a3 = open_eventually(&base, &path, &[bearer(&alice)]).await;
}

/// Opens streams (kept in `open`) until one is refused: how many were admitted, and the
/// refusal. Rates are whole tokens per second, so on a slow machine a token may be refilled
/// while the burst is used up: the limit must trip soon after the burst, not exactly at it.
async fn until_refused(
    base: &str,
    path: &str,
    headers: &[(String, String)],
    open: &mut Vec<Stream>,
) -> (usize, HttpError) {
    for admitted in 0..50 {
        match Stream::open(base, path, headers).await {
            Ok(s) => open.push(s),
            Err(e) => return (admitted, e),
        }
    }
    panic!("50 streams opened without a refusal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_connections_per_ip_and_per_subject() {
    let mongo = Mongo::start("lim_rate").await;
    let per_ip = start_gateway(
        &mongo,
        &[
            ("SSE_CONNECT_RATE_PER_IP", "1"),
            ("SSE_CONNECT_BURST_PER_IP", "3"),
        ],
    )
    .await;
    let base = base_url(&per_ip);
    let path = stream_path(&["logs"], None, None);
    let mut open = Vec::new();
    let (admitted, r) = until_refused(&base, &path, &[], &mut open).await;
    assert!(admitted >= 3, "the burst of 3 was not admitted: {admitted}");
    let v = assert_429("per-IP rate", &r);
    assert_eq!(v["error"], "rate_limited");
    assert!(v["message"]
        .as_str()
        .unwrap()
        .contains("SSE_CONNECT_RATE_PER_IP"));

    let per_subject = jwt_gateway(
        &mongo,
        &[
            ("SSE_CONNECT_RATE_PER_IP", "0"),
            ("SSE_CONNECT_RATE_PER_SUBJECT", "1"),
            ("SSE_CONNECT_BURST_PER_SUBJECT", "2"),
        ],
    )
    .await;
    let base = base_url(&per_subject);
    let tok = token("carol", &["logs"]);
    let (admitted, r) = until_refused(&base, &path, &[bearer(&tok)], &mut open).await;
    assert!(admitted >= 2, "the burst of 2 was not admitted: {admitted}");
    let v = assert_429("per-subject rate", &r);
    assert!(v["message"]
        .as_str()
        .unwrap()
        .contains("SSE_CONNECT_RATE_PER_SUBJECT"));
    // Another subject has its own bucket.
    open.push(
        Stream::open(&base, &path, &[bearer(&token("dan", &["logs"]))])
            .await
            .unwrap(),
    );
    // The session endpoint counts against the client's address too.
    let sess = jwt_gateway(
        &mongo,
        &[
            ("SSE_CONNECT_RATE_PER_IP", "1"),
            ("SSE_CONNECT_BURST_PER_IP", "1"),
        ],
    )
    .await;
    let hdr = [bearer(&tok)];
    let mut statuses = Vec::new();
    let refused = loop {
        let r = request(Method::POST, &base_url(&sess), "/v1/session", &hdr).await;
        if r.status != 204 || statuses.len() >= 50 {
            break r;
        }
        statuses.push(r.status);
    };
    assert!(
        !statuses.is_empty(),
        "the first session request was refused"
    );
    assert_429("session rate", &refused);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sizes_and_channel_count() {
    let mongo = Mongo::start("lim_sizes").await;
    let gw = start_gateway(
        &mongo,
        &[
            ("SSE_MAX_URL_BYTES", "1024"),
            ("SSE_MAX_HEADER_BYTES", "2048"),
            ("SSE_MAX_CHANNELS", "2"),
        ],
    )
    .await;
    let base = base_url(&gw);
    let long = format!("/v1/stream?channel=logs&pad={}", "x".repeat(1100));
    let r = get(&base, &long, &[]).await;
    assert_eq!(r.status, 414, "{}", r.body);
    assert_eq!(assert_json_4xx("414", &r)["error"], "url_too_long");

    let big = "y".repeat(2100);
    let r = get(
        &base,
        &stream_path(&["logs"], None, None),
        &[("x-padding", big.as_bytes())],
    )
    .await;
    assert_eq!(r.status, 431, "{}", r.body);
    assert_eq!(assert_json_4xx("431", &r)["error"], "headers_too_large");
    // Also on other endpoints, before anything else runs.
    let r = get(&base, "/nope", &[("x-padding", big.as_bytes())]).await;
    assert_eq!(r.status, 431);

    let r = get(
        &base,
        &stream_path(&["logs:a", "logs:b", "logs:c"], None, None),
        &[],
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        assert_json_4xx("channels", &r)["error"],
        "too_many_channels"
    );
    // Within the limits all is well.
    Stream::open(&base, &stream_path(&["logs:a", "logs:b"], None, None), &[])
        .await
        .unwrap();
}
