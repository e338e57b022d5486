//! Restart: the gateway is stopped mid-stream while a writer keeps inserting; another starts
//! on the same MongoDB; clients resume there with their last ids and lose nothing. Their
//! positions predate the new gateway's memory, so the resumes go through catch-up streams.

use std::time::Duration;

use mongo_sse::hub::Stats;
use tokio::sync::watch;

use crate::common::*;

const DOCS: i64 = 1500;
/// The first gateway is stopped once this many documents are written; the writer goes on.
const STOP_AT: i64 = 500;
/// Written only after the first gateway has stopped (so no gateway sees them live) ...
const GAP_FROM: i64 = 1000;
/// ... and these only once the second one is up.
const SECOND_FROM: i64 = 1200;

fn ws(seq: i64) -> String {
    format!("w{}", (seq % 6) / 3)
}

fn wf(seq: i64) -> String {
    format!("f{}", seq % 3)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_resume_on_a_new_gateway_without_loss() {
    let mongo = Mongo::start("restart").await;
    let first = start_gateway(&mongo, &[]).await;
    let (base_tx, base_rx) = watch::channel(base_url(&first));

    let channel_sets: Vec<Vec<&str>> = vec![
        vec!["logs:w0:f0"],
        vec!["logs:w0:f1", "logs:w1:f2"],
        vec!["logs:w1"],
        vec!["logs:w0", "logs:w0:f2"],
        vec!["logs"],
        vec!["logs:w1:f0"],
    ];
    let mut clients = Vec::new();
    for chans in &channel_sets {
        let expected: Vec<i64> = (0..DOCS)
            .filter(|&s| {
                chans.iter().any(|c| {
                    *c == "logs"
                        || *c == format!("logs:{}", ws(s))
                        || *c == format!("logs:{}:{}", ws(s), wf(s))
                })
            })
            .collect();
        let mut sse = Sse::subscribe(base_rx.borrow().as_str(), chans, None).await;
        let chans: Vec<String> = chans.iter().map(|c| c.to_string()).collect();
        let mut base_rx = base_rx.clone();
        clients.push(tokio::spawn(async move {
            let chans: Vec<&str> = chans.iter().map(String::as_str).collect();
            let mut got = Vec::new();
            let mut ends = 0;
            while got.len() < expected.len() {
                match sse.next_event(WAIT).await {
                    Ok(ev) => got.push(ev.seq()),
                    Err(End::Timeout) => {
                        panic!("{chans:?}: stalled at {}/{}", got.len(), expected.len())
                    }
                    Err(End::Ended(_)) => {
                        // The gateway stopped: reconnect to its successor with the last id.
                        ends += 1;
                        let old = sse.last_event_id().to_string();
                        assert!(!old.is_empty(), "{chans:?}: no event before the restart");
                        let base = within(
                            WAIT,
                            "the next gateway",
                            base_rx.wait_for(|b| !b.is_empty()),
                        )
                        .await
                        .unwrap()
                        .clone();
                        base_rx.mark_unchanged();
                        sse = loop {
                            match Sse::open(&base, &stream_path(&chans, None, None), Some(&old))
                                .await
                            {
                                Ok(mut s) => {
                                    s.expect_retry().await;
                                    break s;
                                }
                                Err(e) if e.is_load() => {
                                    tokio::time::sleep(Duration::from_millis(50)).await
                                }
                                Err(e) => {
                                    panic!("{chans:?}: resume on {base}: {} {}", e.status, e.body)
                                }
                            }
                        };
                    }
                }
            }
            assert_eq!(got, expected, "{chans:?}: everything, once, in order");
            ends
        }));
    }

    let (written_tx, mut written_rx) = watch::channel(0i64);
    // 0: first gateway serving, 1: it has stopped, 2: the second one serves.
    let (phase_tx, phase_rx) = watch::channel(0u8);
    let writer = {
        let logs = mongo.logs();
        let mut phase_rx = phase_rx.clone();
        tokio::spawn(async move {
            for seq in 0..DOCS {
                if seq == GAP_FROM || seq == SECOND_FROM {
                    let want = if seq == GAP_FROM { 1 } else { 2 };
                    within(WAIT, "the restart", phase_rx.wait_for(|p| *p >= want))
                        .await
                        .unwrap();
                }
                logs.insert_one(log_doc(&ws(seq), &wf(seq), seq))
                    .await
                    .expect("insert");
                written_tx.send_replace(seq + 1);
            }
        })
    };

    within(
        WAIT,
        "the writer to reach the restart point",
        written_rx.wait_for(|w| *w >= STOP_AT),
    )
    .await
    .unwrap();
    // Clients see the old gateway go away before the new one exists (a rolling restart's worst
    // case), and writes continue throughout.
    base_tx.send_replace(String::new());
    within(
        Duration::from_secs(15),
        "the first gateway to shut down",
        first.shutdown(),
    )
    .await;
    phase_tx.send_replace(1);
    within(
        WAIT,
        "the writes while no gateway runs",
        written_rx.wait_for(|w| *w >= SECOND_FROM),
    )
    .await
    .unwrap();
    let second = start_gateway(&mongo, &[]).await;
    base_tx.send_replace(base_url(&second));
    phase_tx.send_replace(2);

    writer.await.expect("writer");
    for c in clients {
        let ends = match c.await {
            Ok(n) => n,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("{e}"),
        };
        assert_eq!(ends, 1, "each stream ended once, at the restart");
    }
    let catchups = Stats::get(&second.hub.stats.catchups_started);
    assert_eq!(
        catchups,
        channel_sets.len() as u64,
        "every resume on the new gateway predates its memory"
    );
    second.shutdown().await;
}
