//! Hostile or broken input gets a 4xx with a JSON body `{error, message}`: never a 500, a
//! panic or a hang (invariant 5). The gateway keeps serving afterwards.

use crate::common::*;

fn q(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    format!("/v1/stream?{}", s.finish())
}

/// What, path, headers, expected status, expected error code (or "" for any).
type Case<'a> = (&'a str, String, Vec<(&'a str, Vec<u8>)>, u16, &'a str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_json_4xx() {
    let mongo = Mongo::start("bad_input").await;
    let gw = start_gateway(&mongo, &[]).await;
    let base = base_url(&gw);
    // A real position, so that well-formed ids can be compared with it.
    mongo.insert("w1", "f1", 1).await;

    let long_id = "c.".to_string() + &"A".repeat(5000);
    let seg129 = "a".repeat(129);
    let too_many: Vec<(&str, String)> =
        (0..33).map(|i| ("channel", format!("logs:w{i}"))).collect();
    let too_many: Vec<(&str, &str)> = too_many.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let cases: Vec<Case> = vec![
        (
            "id nope",
            q(&[("channel", "logs"), ("lastEventId", "nope")]),
            vec![],
            400,
            "invalid_last_event_id",
        ),
        (
            "id c.zz",
            q(&[("channel", "logs"), ("lastEventId", "c.zz")]),
            vec![],
            400,
            "invalid_last_event_id",
        ),
        (
            "id lowercase hex",
            q(&[("channel", "logs"), ("lastEventId", "c.82ab")]),
            vec![],
            400,
            "invalid_last_event_id",
        ),
        (
            "id odd hex",
            q(&[("channel", "logs"), ("lastEventId", "c.82A")]),
            vec![],
            400,
            "invalid_last_event_id",
        ),
        (
            "id 5000 chars (query)",
            q(&[("channel", "logs"), ("lastEventId", &long_id)]),
            vec![],
            400,
            "invalid_last_event_id",
        ),
        (
            "id 5000 chars (header)",
            q(&[("channel", "logs")]),
            vec![("last-event-id", long_id.clone().into_bytes())],
            400,
            "invalid_last_event_id",
        ),
        (
            "id nope (header)",
            q(&[("channel", "logs")]),
            vec![("last-event-id", b"nope".to_vec())],
            400,
            "invalid_last_event_id",
        ),
        (
            "non-ASCII header",
            q(&[("channel", "logs")]),
            vec![("last-event-id", "c.\u{e9}\u{e9}".as_bytes().to_vec())],
            400,
            "invalid_last_event_id",
        ),
        (
            "no channel",
            "/v1/stream".into(),
            vec![],
            400,
            "missing_channel",
        ),
        (
            "empty channel",
            q(&[("channel", "")]),
            vec![],
            400,
            "invalid_channel",
        ),
        (
            "channel with spaces",
            q(&[("channel", "logs:w 1")]),
            vec![],
            400,
            "invalid_channel",
        ),
        (
            "channel with 5 segments",
            q(&[("channel", "a:b:c:d:e")]),
            vec![],
            400,
            "invalid_channel",
        ),
        (
            "channel with an empty segment",
            q(&[("channel", "logs::f1")]),
            vec![],
            400,
            "invalid_channel",
        ),
        (
            "channel with a 129-byte segment",
            q(&[("channel", &format!("logs:{seg129}"))]),
            vec![],
            400,
            "invalid_channel",
        ),
        (
            "channel with non-ASCII",
            q(&[("channel", "logs:w\u{e9}")]),
            vec![],
            400,
            "invalid_channel",
        ),
        (
            "channel with a NUL",
            q(&[("channel", "logs:w\0")]),
            vec![],
            400,
            "invalid_channel",
        ),
        (
            "33 channels",
            q(&too_many),
            vec![],
            400,
            "too_many_channels",
        ),
        (
            "backlog abc",
            q(&[("channel", "logs"), ("backlog", "abc")]),
            vec![],
            400,
            "invalid_backlog",
        ),
        (
            "backlog 1001",
            q(&[("channel", "logs"), ("backlog", "1001")]),
            vec![],
            400,
            "invalid_backlog",
        ),
        (
            "backlog -1",
            q(&[("channel", "logs"), ("backlog", "-1")]),
            vec![],
            400,
            "invalid_backlog",
        ),
        (
            "backlog 1e3",
            q(&[("channel", "logs"), ("backlog", "1e3")]),
            vec![],
            400,
            "invalid_backlog",
        ),
        (
            "backlog huge",
            q(&[("channel", "logs"), ("backlog", "99999999999999999999999")]),
            vec![],
            400,
            "invalid_backlog",
        ),
        (
            "compat: space in workspace",
            "/wfm/workflow/workspace/a%20b/workflow/f1/logs/stream".into(),
            vec![],
            400,
            "invalid_channel",
        ),
        (
            // Decoded, `w1:x` would make the 4-segment channel `logs:w1:x:f1`.
            "compat: encoded separator in workspace",
            "/wfm/workflow/workspace/w1%3Ax/workflow/f1/logs/stream".into(),
            vec![],
            400,
            "invalid_channel",
        ),
        (
            "compat: 129-byte workflow",
            format!("/wfm/workflow/workspace/w1/workflow/{seg129}/logs/stream"),
            vec![],
            400,
            "invalid_channel",
        ),
        (
            "compat: bad id",
            "/wfm/workflow/workspace/w1/workflow/f1/logs/stream?lastEventId=nope".into(),
            vec![],
            400,
            "invalid_last_event_id",
        ),
        ("unknown path", "/nope".into(), vec![], 404, "not_found"),
        (
            "unknown path under /v1",
            "/v1/streams?channel=logs".into(),
            vec![],
            404,
            "not_found",
        ),
        (
            "bad percent-encoding",
            "/v1/stream?channel=%ZZ%E9".into(),
            vec![],
            400,
            "invalid_channel",
        ),
        // Well-formed ids that MongoDB cannot resume from: a foreign or forged token.
        (
            "forged short token",
            q(&[("channel", "logs"), ("lastEventId", "c.00")]),
            vec![],
            400,
            "",
        ),
        (
            "forged long token",
            q(&[
                ("channel", "logs"),
                ("lastEventId", &format!("c.{}", "0".repeat(2000))),
            ]),
            vec![],
            400,
            "",
        ),
    ];
    let mut ran = 0;
    for (what, path, headers, status, code) in &cases {
        ran += 1;
        let headers: Vec<(&str, &[u8])> = headers.iter().map(|(k, v)| (*k, v.as_slice())).collect();
        let r = get(&base, path, &headers).await;
        let v = assert_json_4xx(what, &r);
        assert_eq!(r.status, *status, "{what}: {} {}", r.status, r.body);
        if !code.is_empty() {
            assert_eq!(v["error"], *code, "{what}: {v}");
        }
        assert!(
            r.body.len() < 1024,
            "{what}: error bodies do not echo input at length ({} bytes)",
            r.body.len()
        );
    }

    // A runner over cases says how many it ran: a table that lost rows must not pass.
    assert!(ran >= 31, "ran only {ran} hostile-input cases");

    // Other methods on a stream path are refused the same way.
    let r = http()
        .post(format!("{base}/v1/stream?channel=logs"))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.text().await.unwrap();
    assert_json_4xx(
        "POST /v1/stream",
        &HttpError {
            status,
            headers,
            body,
        },
    );

    // An empty id is no id at all (what a browser sends before its first event).
    let mut ok = Sse::open(&base, &q(&[("channel", "logs"), ("lastEventId", "")]), None)
        .await
        .expect("an empty lastEventId is accepted");
    ok.expect_retry().await;
    drop(ok);

    // Still serving.
    let mut sse = Sse::subscribe(&base, &["logs:w1"], None).await;
    mongo.insert("w1", "f1", 2).await;
    assert_eq!(sse.next_event(WAIT).await.unwrap().seq(), 2);
    gw.shutdown().await;
}
