//! Slow consumers (invariant 3): a client that stops reading while large documents stream is
//! disconnected once its bounded queue is full, instead of being buffered without bound; it then
//! reads what it had received, resumes from its last complete id and gets everything exactly
//! once. A client that keeps reading is not held back by it.

use std::time::Duration;

use bson::doc;
use mongo_sse::hub::Stats;

use crate::common::*;

const BIG: usize = 16 * 1024;
const BATCH: usize = 10;
/// If backpressure never reaches the gateway's queue after this many 16 KiB documents (far more
/// than loopback socket buffers hold), the queue is not bounded.
const MAX_DOCS: usize = 4000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_disconnected_then_resumes() {
    let mongo = Mongo::start("slow_consumer").await;
    let gw = start_gateway(&mongo, &[("SSE_QUEUE_LEN", "32")]).await;
    let base = base_url(&gw);
    let hub = std::sync::Arc::clone(&gw.hub);

    let mut slow = Sse::subscribe(&base, &["logs:w1:f1"], None).await;
    let fast = Sse::subscribe(&base, &["logs:w1"], None).await;
    assert_eq!(Stats::get(&hub.stats.connections_open), 2);

    // The slow client's body is not polled from here on; the writer fills its pipe.
    let payload = "x".repeat(BIG);
    let mut written = 0usize;
    while Stats::get(&hub.stats.slow_consumer_disconnects) == 0 {
        assert!(
            written < MAX_DOCS,
            "{written} documents of {BIG} bytes and the client that stopped reading is still connected"
        );
        let docs: Vec<bson::Document> = (written..written + BATCH)
            .map(|i| doc! {"workspace_id": "w1", "workflow_id": "f1", "seq": i as i64, "pad": &payload})
            .collect();
        mongo.insert_many(docs).await;
        written += BATCH;
        // Let the gateway publish this batch before judging.
        let want = written as u64;
        eventually(WAIT, "the gateway to publish a batch", || {
            (Stats::get(&hub.stats.events_published) >= want).then_some(())
        })
        .await;
    }
    eprintln!("slow consumer disconnected after {written} documents of {BIG} bytes");
    let total = written;
    // A final marker, so the resumed stream's end is known.
    mongo.insert("w1", "f1", total as i64).await;

    // The client that kept up gets everything (reconnecting if it, too, was cut off by a burst).
    let fast_task = {
        let base = base.clone();
        tokio::spawn(async move {
            let marker = total as i64;
            read_resuming_until(&base, &["logs:w1"], fast, Duration::from_secs(60), |e| {
                e.seq() == marker
            })
            .await
        })
    };

    // The slow client's stream was closed by the gateway: what it still holds, then the end.
    let had = slow.drain_to_end(WAIT).await;
    let had_seqs: Vec<i64> = had.iter().map(|e| e.seq()).collect();
    assert_eq!(
        had_seqs,
        (0..had.len() as i64).collect::<Vec<_>>(),
        "what arrived before the disconnect is a prefix, in order"
    );
    assert!(
        had.len() < total,
        "the slow client was cut off before the end"
    );
    let last = slow.last_event_id().to_string();
    assert!(
        !last.is_empty(),
        "the slow client had received at least one event"
    );
    drop(slow);

    let mut resumed = Sse::subscribe(&base, &["logs:w1:f1"], Some(&last)).await;
    let rest = resumed
        .events_until(Duration::from_secs(60), |e| e.seq() == total as i64)
        .await;
    let rest_seqs: Vec<i64> = rest.iter().map(|e| e.seq()).collect();
    assert_eq!(
        rest_seqs,
        (had.len() as i64..=total as i64).collect::<Vec<_>>(),
        "the resumed stream continues exactly after the last complete event"
    );
    assert_eq!(rest[0].msg().doc["pad"].as_str().map(str::len), Some(BIG));

    let (fast_events, reconnects) = fast_task.await.expect("fast reader");
    let fast_seqs: Vec<i64> = fast_events.iter().map(|e| e.seq()).collect();
    assert_eq!(fast_seqs, (0..=total as i64).collect::<Vec<_>>());
    eprintln!("the reading client reconnected {reconnects} times");

    // Nothing is left registered but the resumed connection: the cut-off one and the reader's
    // (closed by the client) are gone, well before a heartbeat (15 s) would have found out.
    eventually(
        Duration::from_secs(5),
        "closed connections to be unregistered",
        || (Stats::get(&hub.stats.connections_open) == 1).then_some(()),
    )
    .await;
    drop(resumed);
    gw.shutdown().await;
}

/// A client that goes away is forgotten at once (its queue and its places in the connection
/// limits freed), not when a heartbeat write fails one or two intervals later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_is_unregistered_at_once() {
    let mongo = Mongo::start("client_leaves").await;
    let gw = start_gateway(&mongo, &[("SSE_HEARTBEAT_SECS", "60")]).await;
    let base = base_url(&gw);
    let a = Sse::subscribe(&base, &["logs:w1"], None).await;
    let b = Sse::subscribe(&base, &["logs:w1:f1"], None).await;
    assert_eq!(Stats::get(&gw.hub.stats.connections_open), 2);
    drop(a);
    eventually(
        Duration::from_secs(5),
        "the closed stream to be unregistered",
        || (Stats::get(&gw.hub.stats.connections_open) == 1).then_some(()),
    )
    .await;
    drop(b);
    eventually(
        Duration::from_secs(5),
        "the second closed stream to be unregistered",
        || (Stats::get(&gw.hub.stats.connections_open) == 0).then_some(()),
    )
    .await;
    gw.shutdown().await;
}
