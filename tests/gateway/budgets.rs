//! Byte budgets (invariant 3 for large documents): the ring keeps at most `SSE_HISTORY_BYTES`
//! of events and a connection's queue at most `SSE_QUEUE_BYTES`, whatever the event counts
//! allow. What falls out of the ring is answered by an exact catch-up; a connection over its
//! queue budget is closed as a slow consumer and resumes losslessly.

use std::time::Duration;

use bson::doc;
use mongo_sse::hub::Stats;

use crate::common::*;

fn padded(seq: i64, pad: usize) -> bson::Document {
    doc! {"workspace_id": "w1", "workflow_id": "f1", "seq": seq, "pad": "x".repeat(pad)}
}

fn seqs(evs: &[Ev]) -> Vec<i64> {
    evs.iter().map(|e| e.seq()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_documents_evicted_by_bytes_are_resumed_through_an_exact_catch_up() {
    let mongo = Mongo::start("history_bytes").await;
    // Room for 10 000 events but only about three of the 64 KiB documents.
    let gw = start_gateway(&mongo, &[("SSE_HISTORY_BYTES", "200000")]).await;
    let base = base_url(&gw);
    let hub = std::sync::Arc::clone(&gw.hub);
    let mut live = Sse::subscribe(&base, &["logs:w1"], None).await;

    mongo.insert("w1", "f1", 0).await;
    let first = live.next_event(WAIT).await.unwrap();
    assert_eq!(first.seq(), 0);
    mongo
        .insert_many((1..=10).map(|i| padded(i, 64 * 1024)).collect())
        .await;
    let big = live.events(10, WAIT).await;
    assert_eq!(seqs(&big), (1..=10).collect::<Vec<_>>());

    // From before the evicted documents: a catch-up, exact.
    let catchups = Stats::get(&hub.stats.catchups_started);
    let mut resumed = Sse::subscribe(&base, &["logs:w1"], Some(&first.id)).await;
    let got = resumed.events(10, WAIT).await;
    assert_eq!(seqs(&got), (1..=10).collect::<Vec<_>>());
    assert_eq!(
        got[0].msg().doc["pad"].as_str().map(str::len),
        Some(64 * 1024)
    );
    assert_eq!(
        Stats::get(&hub.stats.catchups_started),
        catchups + 1,
        "the ring no longer holds them: a catch-up, not a replay"
    );
    // It continues live with nothing repeated or missing.
    mongo.insert("w1", "f1", 11).await;
    assert_eq!(resumed.next_event(WAIT).await.unwrap().seq(), 11);
    let eleven = live.events(1, WAIT).await.remove(0);
    assert_eq!(eleven.seq(), 11);

    // A document larger than the whole ring budget is delivered live but not kept: from
    // before it is a catch-up (never a silent skip), from it is memory.
    mongo.insert_many(vec![padded(12, 300_000)]).await;
    mongo.insert("w1", "f1", 13).await;
    let after = live.events(2, WAIT).await;
    assert_eq!(seqs(&after), [12, 13]);
    let catchups = Stats::get(&hub.stats.catchups_started);
    let mut before_big = Sse::subscribe(&base, &["logs:w1"], Some(&eleven.id)).await;
    assert_eq!(seqs(&before_big.events(2, WAIT).await), [12, 13]);
    assert_eq!(Stats::get(&hub.stats.catchups_started), catchups + 1);
    let from_memory = Stats::get(&hub.stats.resumes_from_history);
    let mut at_big = Sse::subscribe(&base, &["logs:w1"], Some(&after[0].id)).await;
    assert_eq!(seqs(&at_big.events(1, WAIT).await), [13]);
    assert_eq!(Stats::get(&hub.stats.resumes_from_history), from_memory + 1);
    assert_eq!(Stats::get(&hub.stats.catchups_started), catchups + 1);

    // Every stream continues live, each exactly once.
    mongo.insert("w1", "f1", 14).await;
    for (sse, want) in [
        (&mut live, vec![14]),
        (&mut resumed, vec![12, 13, 14]),
        (&mut before_big, vec![14]),
        (&mut at_big, vec![14]),
    ] {
        assert_eq!(seqs(&sse.events(want.len(), WAIT).await), want);
    }
    drop((live, resumed, before_big, at_big));
    gw.shutdown().await;
}

const BIG: usize = 64 * 1024;
const BATCH: usize = 10;
/// A queue of 100 000 events would never fill within this many documents: if the client that
/// stopped reading is still connected after them, the byte budget did not apply.
const MAX_DOCS: usize = 2000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_over_its_queue_bytes_is_closed_and_resumes_losslessly() {
    let mongo = Mongo::start("queue_bytes").await;
    // The count would allow 100 000 events; the bytes allow about sixteen of these documents.
    let gw = start_gateway(
        &mongo,
        &[("SSE_QUEUE_LEN", "100000"), ("SSE_QUEUE_BYTES", "1048576")],
    )
    .await;
    let base = base_url(&gw);
    let hub = std::sync::Arc::clone(&gw.hub);
    let mut slow = Sse::subscribe(&base, &["logs:w1:f1"], None).await;

    // Not read from here on: the socket buffers fill, then the queue.
    let mut written = 0usize;
    while Stats::get(&hub.stats.slow_consumer_disconnects) == 0 {
        assert!(
            written < MAX_DOCS,
            "{written} documents of {BIG} bytes and the client that stopped reading is still connected"
        );
        mongo
            .insert_many(
                (written..written + BATCH)
                    .map(|i| padded(i as i64, BIG))
                    .collect(),
            )
            .await;
        written += BATCH;
        let want = written as u64;
        eventually(WAIT, "the gateway to publish a batch", || {
            (Stats::get(&hub.stats.events_published) >= want).then_some(())
        })
        .await;
    }
    eprintln!("closed over its queue bytes after {written} documents of {BIG} bytes");
    let total = written as i64;
    mongo.insert("w1", "f1", total).await;

    let had = slow.drain_to_end(WAIT).await;
    assert_eq!(
        seqs(&had),
        (0..had.len() as i64).collect::<Vec<_>>(),
        "what arrived before the close is a prefix, in order"
    );
    assert!((had.len() as i64) < total, "cut off before the end");
    let last = slow.last_event_id().to_string();
    assert!(!last.is_empty(), "it had received at least one event");
    drop(slow);

    let mut resumed = Sse::subscribe(&base, &["logs:w1:f1"], Some(&last)).await;
    let rest = resumed
        .events_until(Duration::from_secs(60), |e| e.seq() == total)
        .await;
    assert_eq!(
        seqs(&rest),
        (had.len() as i64..=total).collect::<Vec<_>>(),
        "the resumed stream continues exactly after the last complete event"
    );
    assert_eq!(Stats::get(&hub.stats.slow_consumer_disconnects), 1);
    drop(resumed);
    gw.shutdown().await;
}
