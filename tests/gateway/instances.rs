//! Several instances on one MongoDB, as behind a load balancer: a client streams from gateway A,
//! A is killed with SIGKILL while a writer is mid-burst (no chance to flush or say goodbye), the
//! client reconnects to gateway B with its last event id and gets every document exactly once.
//! In change-stream mode and, on a standalone sim, in polling mode, where the README promises
//! exact resumes across gateways for documents that commit in `_id` order (as here: one writer,
//! one insert at a time).

use bson::doc;
use mongo_sim::SimConfig;
use tokio::sync::oneshot;

use crate::common::*;
use crate::process::Served;

/// Written while A is alive, one insert at a time ...
const BEFORE_KILL: i64 = 300;
/// ... A is killed once the client has read this many ...
const READ_FROM_A: usize = 120;
/// ... and these are written after A is gone.
const DOCS: i64 = 450;

async fn killed_gateway_then_resume_on_another(
    mongo: Mongo,
    vars: &[(&str, &str)],
    id_prefix: &str,
) {
    let a = Served::start(&mongo, vars).await;
    let b = Served::start(&mongo, vars).await;
    let channels = ["logs:w1"];
    let mut sse = Sse::subscribe(&a.base, &channels, None).await;

    let (killed_tx, killed_rx) = oneshot::channel::<()>();
    let logs = mongo.logs();
    let writer = tokio::spawn(async move {
        let mut killed_rx = Some(killed_rx);
        for seq in 1..=DOCS {
            if seq == BEFORE_KILL + 1 {
                // The rest are written once A is gone: no gateway but B ever sees them live.
                let _ = killed_rx.take().expect("once").await;
            }
            logs.insert_one(log_doc("w1", "f1", seq))
                .await
                .expect("insert");
        }
    });

    let mut got = sse.events(READ_FROM_A, WAIT).await;
    // Polling streams start with an (id-less) `mode` event; the rest are documents.
    got.retain(|e| e.event == "message");
    assert!(
        got[0].id.starts_with(id_prefix),
        "ids from A should be {id_prefix}… positions: {:?}",
        &got[..3]
    );
    a.signal(libc::SIGKILL);
    let (status, log) = a.wait(WAIT).await;
    assert_eq!(
        status.code(),
        None,
        "A should have died of SIGKILL; stderr:\n{log}"
    );
    // Whatever A had written to the socket before it died still arrives, then the stream ends.
    got.extend(sse.drain_to_end(WAIT).await);
    got.retain(|e| e.event == "message");
    let from_a = got.len();
    let _ = killed_tx.send(());
    let from = sse.last_event_id().to_string();
    assert!(!from.is_empty());

    let path = stream_path(&channels, None, None);
    let on_b = Sse::resume(&b.base, &path, &from).await;
    let (rest, _) = read_resuming_until(&b.base, &channels, on_b, WAIT, |e| {
        e.event == "message" && e.seq() == DOCS
    })
    .await;
    got.extend(rest);
    got.retain(|e| e.event == "message");
    within(WAIT, "the writer to finish", writer)
        .await
        .expect("writer");

    eprintln!(
        "{} events from A before SIGKILL, {} from B",
        from_a,
        got.len() - from_a
    );
    let seqs: Vec<i64> = got.iter().map(Ev::seq).collect();
    let expected: Vec<i64> = (1..=DOCS).collect();
    if seqs != expected {
        let mut seen = std::collections::BTreeMap::new();
        for s in &seqs {
            *seen.entry(*s).or_insert(0) += 1;
        }
        let missing: Vec<_> = expected.iter().filter(|s| !seen.contains_key(s)).collect();
        let repeated: Vec<_> = seen
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(s, _)| s)
            .collect();
        panic!(
            "resumed from {from} on B: {} events, missing {missing:?}, repeated {repeated:?}",
            seqs.len()
        );
    }
    b.signal(libc::SIGTERM);
    let (status, log) = b.wait(WAIT).await;
    assert_eq!(status.code(), Some(0), "B stderr:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_gateway_change_streams_resume_on_another_exactly() {
    let mongo = Mongo::start("instances_cs").await;
    killed_gateway_then_resume_on_another(mongo, &[], "c.").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_gateway_polling_resume_on_another_exactly() {
    if skip_unless_sim("instances_poll", "needs a standalone mongo-sim") {
        return;
    }
    let config = SimConfig {
        standalone: true,
        ..SimConfig::default()
    };
    let mongo = Mongo::with_sim_config("instances_poll", config).await;
    let vars = [("SSE_POLL_INTERVAL_MS", "100")];
    killed_gateway_then_resume_on_another(mongo, &vars, "p.").await;
}

/// Found by the chaos soak (seed 77): a reader moved with a change-stream id to a gateway whose
/// stream lagged more than 2 s (a blocked `getMore`) was told `position_ahead` after the wait
/// and continued from that gateway's head, so whatever lay between the head and its id could
/// come again. Every gateway names an event by the same resume token: the client has exactly
/// the events up to its id, and the lagging gateway sends the ones after it when it gets there,
/// with no wait, no gap, and the client's id kept meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_change_stream_id_from_a_gateway_further_along_needs_no_gap() {
    let mongo = Mongo::start("cs_ahead_elsewhere").await;
    let (app_a, app_b) = (unique_name("gwcsa"), unique_name("gwcsb"));
    let a = start_gateway_named(&mongo, &app_a, &[]).await;
    let b = start_gateway_named(&mongo, &app_b, &[("SSE_HEARTBEAT_SECS", "1")]).await;
    let (base_a, base_b) = (base_url(&a), base_url(&b));
    let mut on_a = Sse::subscribe(&base_a, &["logs:w1"], None).await;
    let mut probe_b = Sse::subscribe(&base_b, &["logs:w1"], None).await;

    // From here every `getMore` of B's takes 4 s. Once B has delivered 1 (the `getMore` that
    // was already waiting returns it), its next one is blocked: 2..=5 reach A only.
    mongo
        .fail_point(doc! {
            "configureFailPoint": "failCommand",
            "mode": "alwaysOn",
            "data": {
                "failCommands": ["getMore"],
                "blockConnection": true,
                "blockTimeMS": 4000,
                "appName": app_b.as_str(),
            },
        })
        .await;
    mongo.insert("w1", "f1", 1).await;
    assert_eq!(probe_b.next_event(WAIT).await.unwrap().seq(), 1);
    for seq in 2..=5 {
        mongo.insert("w1", "f1", seq).await;
    }
    let got = on_a.events(5, WAIT).await;
    assert_eq!(got.iter().map(Ev::seq).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    let asked = got[4].id.clone();

    let mut resumed = Sse::subscribe(&base_b, &["logs:w1"], Some(&asked)).await;
    let asked_pos: mongo_sse::position::Position = asked.parse().unwrap();
    assert!(
        b.hub.head().is_some_and(|h| h < asked_pos),
        "the test needs B behind A's id when the client arrives"
    );
    // Longer than the 2 s an id ahead used to be waited for: heartbeats only, no gap, and no
    // id behind A's (a reconnect elsewhere would be sent 2..=5 again).
    let mut heartbeats = 0;
    while heartbeats < 3 {
        match within(WAIT, "heartbeats", resumed.next(WAIT)).await {
            Ok(Item::Comment(c)) if c == "heartbeat" => heartbeats += 1,
            Ok(Item::Retry(_)) => {}
            Ok(Item::IdOnly(id)) => {
                let pos: mongo_sse::position::Position = id.parse().unwrap();
                assert!(
                    pos >= asked_pos,
                    "an id behind the client's: {id}, asked {asked}"
                );
            }
            other => panic!("B behind A's id: expected heartbeats only, got {other:?}"),
        }
    }

    // B catches up: none of 2..=5 again, then what is new.
    mongo
        .fail_point(doc! {"configureFailPoint": "failCommand", "mode": "off"})
        .await;
    mongo.insert("w1", "f1", 6).await;
    assert_eq!(
        resumed.next_event(WAIT).await.unwrap().seq(),
        6,
        "B must send what comes after the client's id, and nothing before it"
    );
    a.shutdown().await;
    b.shutdown().await;
}
