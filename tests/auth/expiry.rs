//! A stream ends when its token expires, after a named `auth_expired` event; reconnecting with
//! a fresh token and the last event id continues with nothing lost and nothing repeated, even
//! while a writer keeps writing across the expiry.

use std::time::Duration;

use crate::common::*;
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_mid_stream_then_lossless_resume() {
    let mongo = Mongo::start("auth_expiry").await;
    let gw = jwt_gateway(&mongo, &[("SSE_HEARTBEAT_SECS", "1")]).await;
    let base = base_url(&gw);
    const N: i64 = 120;

    // Expires in 2 to 3 seconds (exp has one-second resolution).
    let short = hs256(&claims("erin", &["logs:w1"], 3));
    let mut s = Stream::subscribe(&base, &["logs:w1"], &[bearer(&short)]).await;

    // A writer that spans the expiry: one document every 40 ms for about 5 s.
    let logs = mongo.logs();
    let writer = tokio::spawn(async move {
        for seq in 1..=N {
            logs.insert_one(log_doc("w1", "f1", seq))
                .await
                .expect("insert");
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    });

    let mut got: Vec<i64> = Vec::new();
    let expired = loop {
        match s.next_event(Duration::from_secs(15)).await {
            Ok(ev) if ev.event == "message" => got.push(ev.seq()),
            Ok(ev) => break ev,
            Err(e) => panic!("no auth_expired event: {e:?} after {} events", got.len()),
        }
    };
    assert_eq!(expired.event, "auth_expired", "{expired:?}");
    let body: serde_json::Value = serde_json::from_str(&expired.data).unwrap();
    assert_eq!(body["reason"], "token_expired");
    assert_eq!(body["last_event_id"].as_str(), Some(s.last_event_id()));
    assert!(body["expired_at"].as_u64().is_some());
    // ... and then the stream ends.
    let after = s.drain_to_end(Duration::from_secs(5)).await;
    assert!(after.is_empty(), "events after auth_expired: {after:?}");
    assert!(
        !got.is_empty() && (got.len() as i64) < N,
        "the writer should span the expiry ({} events before it)",
        got.len()
    );

    // The expired token no longer opens anything.
    let path = stream_path(&["logs:w1"], None, None);
    match Stream::open(&base, &path, &[bearer(&short)]).await {
        Ok(_) => panic!("the expired token was accepted"),
        Err(r) => {
            let v = assert_401("expired token", &r);
            assert!(v["message"].as_str().unwrap().contains("expired"), "{v}");
        }
    }

    // A fresh token (this time in the cookie) and the last id: the rest, exactly.
    let fresh = token("erin", &["logs:w1"]);
    let last = s.last_event_id().to_string();
    let mut s2 = Stream::subscribe(
        &base,
        &["logs:w1"],
        &[cookie(&fresh), ("last-event-id".into(), last)],
    )
    .await;
    let rest = (N as usize) - got.len();
    for ev in s2.events(rest, Duration::from_secs(60)).await {
        got.push(ev.seq());
    }
    within(Duration::from_secs(30), "the writer", writer)
        .await
        .expect("writer");
    assert_eq!(
        got,
        (1..=N).collect::<Vec<_>>(),
        "lost or repeated events across the expiry"
    );
    s2.expect_no_event(Duration::from_millis(300)).await;
}
