//! Heartbeats: with `SSE_HEARTBEAT_SECS=1`, a connection whose channels are quiet while others
//! are busy gets a comment and an `id:`-only frame; that id, used to reconnect, loses nothing.

use std::time::Duration;

use mongo_sse::hub::Stats;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn id_only_heartbeat_keeps_last_event_id_fresh() {
    let mongo = Mongo::start("heartbeat").await;
    let gw = start_gateway(&mongo, &[("SSE_HEARTBEAT_SECS", "1")]).await;
    let base = base_url(&gw);

    let mut sse = Sse::subscribe(&base, &["logs:w1"], None).await;
    // Only another workspace is written to: this connection gets no event, yet the head moves.
    for i in 0..5 {
        mongo.insert("w2", "f1", i).await;
    }
    let (mut comment, mut id_only) = (false, None);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !(comment && id_only.is_some()) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match sse.next(left).await {
            Ok(Item::Comment(_)) => comment = true,
            Ok(Item::IdOnly(id)) => {
                assert!(comment, "the id:-only frame follows the heartbeat comment");
                id_only = Some(id)
            }
            Ok(Item::Event(ev)) => panic!("no event was for this connection: {ev:?}"),
            Ok(Item::Retry(_)) => panic!("retry: is sent once, first"),
            Err(e) => panic!(
                "expected a heartbeat comment and an id:-only frame within 10 s \
                 (comment seen: {comment}): {e:?}"
            ),
        }
    }
    let id = id_only.unwrap();
    assert!(id.starts_with("c."), "{id}");
    assert_eq!(
        sse.last_event_id(),
        id,
        "an id:-only message updates lastEventId"
    );
    drop(sse);

    // Reconnecting from that id: what follows it on the channel, nothing before, nothing lost.
    mongo.insert("w2", "f1", 100).await;
    mongo.insert("w1", "f1", 101).await;
    mongo.insert("w1", "f2", 102).await;
    let resumes = Stats::get(&gw.hub.stats.resumes_from_history);
    let catchups = Stats::get(&gw.hub.stats.catchups_started);
    let mut sse = Sse::subscribe(&base, &["logs:w1"], Some(&id)).await;
    let seqs: Vec<i64> = sse.events(2, WAIT).await.iter().map(|e| e.seq()).collect();
    assert_eq!(seqs, vec![101, 102]);
    assert_eq!(
        Stats::get(&gw.hub.stats.resumes_from_history),
        resumes + 1,
        "a fresh heartbeat id is answered from memory"
    );
    assert_eq!(Stats::get(&gw.hub.stats.catchups_started), catchups);

    // Idle: heartbeats keep coming (an id:-only frame may join them if MongoDB's cluster time
    // moves, as a real replica set's periodic no-op writes make it do).
    let mut comments = 0;
    while comments < 2 {
        match sse.next(Duration::from_secs(5)).await {
            Ok(Item::Comment(_)) => comments += 1,
            Ok(Item::IdOnly(_)) => {}
            other => panic!("expected heartbeats, got {other:?}"),
        }
    }
    gw.shutdown().await;
}
