//! History lost (invariant 2): a client resuming from a position that fell off the oplog is
//! told so with a named `gap` event before anything else, then gets live events.

use std::sync::Arc;

use mongo_sim::SimConfig;
use mongo_sse::hub::{Hub, Stats};

use crate::common::*;

/// Inserts `docs` in batches, each only after the gateway has published the previous ones, so
/// the gateway's own change stream never falls off the small oplog (that is another test).
async fn write_in_step(mongo: &Mongo, hub: &Arc<Hub>, docs: Vec<bson::Document>) {
    for batch in docs.chunks(10) {
        let before = Stats::get(&hub.stats.events_published);
        mongo.insert_many(batch.to_vec()).await;
        let want = before + batch.len() as u64;
        eventually(WAIT, "the gateway to publish a batch", || {
            (Stats::get(&hub.stats.events_published) >= want).then_some(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_before_the_oplog_gets_a_gap_then_live() {
    if skip_unless_sim(
        "history_lost",
        "needs mongo-sim's small oplog (a real server's oplog size is its own)",
    ) {
        return;
    }
    let mongo = Mongo::with_sim_config(
        "history_lost",
        SimConfig {
            oplog_max_events: 50,
            ..SimConfig::default()
        },
    )
    .await;
    let gw = start_gateway(&mongo, &[("SSE_HISTORY_EVENTS", "5")]).await;
    let base = base_url(&gw);

    let mut sse = Sse::subscribe(&base, &["logs:w1:f1"], None).await;
    mongo.insert("w1", "f1", 1).await;
    let first = sse.next_event(WAIT).await.unwrap();
    assert_eq!(first.seq(), 1);
    let old_id = first.id.clone();
    drop(sse);

    // Far past the oplog (50) and the ring (5), half of it on the client's own channel.
    let docs = (2..=201)
        .map(|i| log_doc("w1", if i % 2 == 0 { "f1" } else { "f2" }, i))
        .collect();
    write_in_step(&mongo, &gw.hub, docs).await;

    // The header and the query parameter both resume; try the query (the page-reload case).
    let path = stream_path(&["logs:w1:f1"], Some(&old_id), None);
    let mut sse = Sse::open(&base, &path, None)
        .await
        .unwrap_or_else(|e| panic!("resume with a lost id: {} {}", e.status, e.body));
    sse.expect_retry().await;
    let gap = sse.next_event(WAIT).await.expect("a gap event");
    assert_eq!(
        gap.event, "gap",
        "the first event after a lost position is `gap`: {gap:?}"
    );
    let reason: serde_json::Value = serde_json::from_str(&gap.data).expect("gap data is JSON");
    assert_eq!(reason["reason"], "history_lost", "{reason}");
    assert!(reason["message"].is_string(), "{reason}");
    assert_eq!(reason["last_event_id"], old_id.as_str(), "{reason}");
    assert!(
        gap.id > old_id,
        "the gap moves lastEventId forward: {}",
        gap.id
    );
    assert_eq!(Stats::get(&gw.hub.stats.gaps_sent), 1);

    // Then live, and nothing of the lost stretch is replayed.
    mongo.insert("w1", "f1", 1000).await;
    let live = sse.next_event(WAIT).await.unwrap();
    assert_eq!((live.event.as_str(), live.seq()), ("message", 1000));

    // The gap's id is an ordinary position: resuming from it loses nothing after it.
    drop(sse);
    mongo.insert("w1", "f1", 1001).await;
    let mut sse = Sse::subscribe(&base, &["logs:w1:f1"], Some(&gap.id)).await;
    let seqs: Vec<i64> = sse.events(2, WAIT).await.iter().map(|e| e.seq()).collect();
    assert_eq!(seqs, vec![1000, 1001]);
    assert_eq!(Stats::get(&gw.hub.stats.gaps_sent), 1);
    gw.shutdown().await;
}
