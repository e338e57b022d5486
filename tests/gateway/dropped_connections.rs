//! Found by the chaos soak (`crates/soak`, `--faults close-connections`): MongoDB drops the
//! gateway's connections (`failCommand` + `closeConnection`) on the change stream's `getMore`
//! *and* on the `aggregate` that resumes it. Every connected client must still get every
//! document once, in order (DESIGN.md invariant 1).

use std::time::Duration;

use bson::doc;

use crate::common::*;

async fn lossless_through_dropped_connections(
    test: &str,
    commands: &[&str],
    times: i32,
    uri_options: &str,
) {
    let mongo = Mongo::start(test).await;
    let app = unique_name("gwdc");
    let uri = format!("{}{uri_options}", mongo.uri_with_app_name(&app));
    let gw = start_gateway_named(&mongo, &app, &[("MONGODB_URI", uri.as_str())]).await;
    let base = base_url(&gw);
    let sse = Sse::subscribe(&base, &["logs:w1"], None).await;
    let n: i64 = 300;
    let coll = mongo.logs();
    let writer = tokio::spawn(async move {
        for seq in 0..n {
            coll.insert_one(log_doc("w1", "f1", seq))
                .await
                .expect("writer insert");
            // Pacing, not synchronization: the drops must happen mid-stream.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let mut sse = sse;
    let mut got = sse.events(20, WAIT).await;
    mongo
        .fail_point(doc! {
            "configureFailPoint": "failCommand",
            "mode": {"times": times},
            "data": {"failCommands": commands, "closeConnection": true, "appName": &app},
        })
        .await;
    within(Duration::from_secs(60), "the writer", writer)
        .await
        .expect("writer task");
    let (rest, _) = read_resuming_until(&base, &["logs:w1"], sse, Duration::from_secs(60), |ev| {
        ev.event == "message" && ev.seq() == n - 1
    })
    .await;
    got.extend(rest);
    let seqs: Vec<i64> = got
        .iter()
        .filter(|e| e.event == "message")
        .map(Ev::seq)
        .collect();
    let fired = mongo
        .fail_point(doc! {"configureFailPoint": "failCommand", "mode": "off"})
        .await;
    assert_eq!(
        seqs,
        (0..n).collect::<Vec<_>>(),
        "lost or repeated with {commands:?} dropped {times} times ({fired} fired)"
    );
    gw.shutdown().await;
}

/// The driver (mongodb 3.9.1) resumes the stream after the dropped `getMore` with an
/// `aggregate` carrying `resumeAfter: <cached token>`; that `aggregate`'s connection is dropped
/// too, and its retryable-read retry is built again by `ChangeStreamAggregate::build`, which
/// *took* the cached token on the first attempt (`data.resume_token.take()`): the retry has no
/// `resumeAfter` (nor `startAtOperationTime`, the first `aggregate` having returned a
/// `postBatchResumeToken`) and opens the stream at "now". Everything written between the last
/// event and the retry (about a second here: the driver waits for its monitor after a network
/// error) is skipped silently — the gateway never sees an error, so it cannot reopen from its
/// own last token, and no `gap` is sent. On a real replica set this is a failover (the
/// primary's connections drop under the getMore and under the resume).
///
/// The gateway's client therefore never retries reads (`src/gateway.rs`): a failed resume
/// reaches the supervisor, which reopens from the token it tracks. This test failed reliably
/// before that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_getmore_and_resume_aggregate_lose_nothing() {
    lossless_through_dropped_connections("dropped_gm_agg", &["getMore", "aggregate"], 2, "").await;
}

/// `retryReads=false` in the URI, which operators were told to set before the gateway set it
/// itself, still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_retryable_reads_dropped_resumes_lose_nothing() {
    lossless_through_dropped_connections(
        "dropped_noretry",
        &["getMore", "aggregate"],
        2,
        "&retryReads=false",
    )
    .await;
}
