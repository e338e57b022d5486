//! The failure modes found from outside (issue "Hardening"), each reproduced: a dropped
//! database, a getMore that keeps failing, a resume id ahead of the head, a silent client
//! holding a catch-up slot, and a long `_id`.

use std::io::Write;
use std::time::Duration;

use bson::doc;
use mongo_sse::hub::Stats;

use crate::common::*;

/// #1: `dropDatabase` invalidates the watcher's database-level stream. It used to spin at
/// 97 % CPU with `/readyz` still ready and deliver nothing after; now it continues right
/// after the invalidate, and a catch-up that replays through the drop continues past it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_database_is_continued_after_not_spun_on() {
    let mongo = Mongo::start("invalidate").await;
    // No ring: every resume is a catch-up, which must cross the invalidate as well.
    let gw = start_gateway(&mongo, &[("SSE_HISTORY_EVENTS", "0")]).await;
    let base = base_url(&gw);
    let mut live = Sse::subscribe(&base, &["logs:w1"], None).await;
    mongo.insert("w1", "f1", 1).await;
    let first = live.next_event(WAIT).await.unwrap();
    assert_eq!(first.seq(), 1);

    mongo.db.drop().await.expect("dropDatabase");
    // The collection comes back with the next insert.
    mongo.insert("w1", "f1", 2).await;
    mongo.insert("w1", "f1", 3).await;
    let after: Vec<i64> = live.events(2, WAIT).await.iter().map(|e| e.seq()).collect();
    assert_eq!(
        after,
        vec![2, 3],
        "inserts after the drop reach the open stream"
    );
    assert_eq!(get(&base, "/readyz", &[]).await.status, 200);

    // A new client, and one resuming from before the drop (a catch-up across it).
    let mut fresh = Sse::subscribe(&base, &["logs:w1"], None).await;
    let mut resumed = Sse::subscribe(&base, &["logs:w1"], Some(&first.id)).await;
    mongo.insert("w1", "f1", 4).await;
    assert_eq!(fresh.next_event(WAIT).await.unwrap().seq(), 4);
    let seqs: Vec<i64> = resumed
        .events(3, WAIT)
        .await
        .iter()
        .map(|e| e.seq())
        .collect();
    assert_eq!(
        seqs,
        vec![2, 3, 4],
        "the catch-up continues past the invalidate"
    );
    assert!(Stats::get(&gw.hub.stats.catchups_started) >= 1);
    drop((live, fresh, resumed));
    gw.shutdown().await;
}

/// #2: a getMore that fails at once, every time (error 2 here; 10334 for an event over
/// 16 MiB), used to be retried ~1 700 times a second with `/readyz` still ready. Now the
/// reopens back off, `/readyz` turns 503 after a bounded time, and once MongoDB recovers
/// everything written meanwhile is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_more_that_keeps_failing_backs_off_and_is_not_ready() {
    if skip_unless_sim("getmore_backoff", "counts fail-point hits of one gateway") {
        return;
    }
    let mongo = Mongo::start("getmore_backoff").await;
    let app = unique_name("backoff");
    let gw = start_gateway_named(&mongo, &app, &[]).await;
    let base = base_url(&gw);
    let mut sse = Sse::subscribe(&base, &["logs:w1"], None).await;

    for code in [2, 10334] {
        mongo
            .fail_point(doc! {
                "configureFailPoint": "failCommand",
                "mode": "alwaysOn",
                "data": {"failCommands": ["getMore"], "errorCode": code, "appName": &app},
            })
            .await;
        mongo.insert("w1", "f1", i64::from(code)).await;
        // Not ready within a bounded time (a readiness probe has nothing to await but its
        // answer).
        let why = within(WAIT, "/readyz to turn 503 while getMore fails", async {
            loop {
                let r = get(&base, "/readyz", &[]).await;
                if r.status == 503 {
                    return r.body;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        assert!(why.contains("keeps failing"), "{why}");
        // Turning the fail point off says how often it fired: a backoff doubling from 100 ms
        // makes a handful of attempts in those seconds, not thousands.
        let fired = mongo
            .fail_point(doc! {"configureFailPoint": "failCommand", "mode": "off"})
            .await;
        assert!(
            (1..=60).contains(&fired),
            "error {code}: getMore was retried {fired} times"
        );
        // Recovered: the document written while failing arrives, once.
        let ev = sse.next_event(WAIT).await.unwrap();
        assert_eq!(ev.seq(), i64::from(code));
        wait_ready(&base).await;
    }
    gw.shutdown().await;
}

/// #8: a `Last-Event-ID` ahead of everything the gateway has seen (a restored cluster, a
/// clock step) used to get 200 and then silence. Now: a `gap` (`position_ahead`) after a
/// short wait, then live events. An id only slightly ahead (another instance) is waited for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_ahead_of_the_head_gets_a_gap_not_silence() {
    let mongo = Mongo::start("ahead").await;
    let gw = start_gateway(&mongo, &[]).await;
    let base = base_url(&gw);
    let mut sse = Sse::subscribe(&base, &["logs:w1"], None).await;
    mongo.insert("w1", "f1", 1).await;
    let real = sse.next_event(WAIT).await.unwrap().id;
    drop(sse);
    // The same position an hour later: `c.82` + seconds (8 hex digits) + the rest.
    let secs = u32::from_str_radix(&real[4..12], 16).unwrap() + 3600;
    let ahead = format!("c.82{secs:08X}{}", &real[12..]);

    let mut sse = Sse::subscribe(&base, &["logs:w1"], Some(&ahead)).await;
    mongo.insert("w1", "f1", 2).await;
    let gap = sse.next_event(WAIT).await.unwrap();
    assert_eq!(gap.event, "gap", "{gap:?}");
    let v: serde_json::Value = serde_json::from_str(&gap.data).unwrap();
    assert_eq!(v["reason"], "position_ahead", "{v}");
    assert_eq!(v["last_event_id"], ahead.as_str());
    // Nothing after `resumed_at` is lost: the insert made while waiting follows.
    assert_eq!(sse.next_event(WAIT).await.unwrap().seq(), 2);
    drop(sse);

    // The same in polling mode, on a standalone sim.
    if skip_unless_sim("ahead_polling", "needs a standalone mongo-sim") {
        gw.shutdown().await;
        return;
    }
    gw.shutdown().await;
    let standalone = Mongo::with_sim_config(
        "ahead_poll",
        mongo_sim::SimConfig {
            standalone: true,
            ..Default::default()
        },
    )
    .await;
    let gw = start_gateway(&standalone, &[("SSE_POLL_INTERVAL_MS", "100")]).await;
    let base = base_url(&gw);
    let mut sse = Sse::subscribe(&base, &["logs:w1"], None).await;
    standalone.insert("w1", "f1", 1).await;
    let real = next_data(&mut sse).await.id;
    drop(sse);
    // `p.<fingerprint>.<oid>.<late>`: the same cursor an hour later.
    let parts: Vec<&str> = real.split('.').collect();
    let secs = u32::from_str_radix(&parts[2][..8], 16).unwrap() + 3600;
    let ahead = format!("p.{}.{secs:08X}{}.0", parts[1], &parts[2][8..]);
    let mut sse = Sse::subscribe(&base, &["logs:w1"], Some(&ahead)).await;
    let gap = loop {
        let ev = sse.next_event(WAIT).await.unwrap();
        if ev.event != "mode" {
            break ev;
        }
    };
    assert_eq!(gap.event, "gap", "{gap:?}");
    assert!(gap.data.contains("position_ahead"), "{}", gap.data);
    standalone.insert("w1", "f1", 2).await;
    assert_eq!(next_data(&mut sse).await.seq(), 2);
    gw.shutdown().await;
}

/// #6: clients that ask for a long catch-up and then read nothing used to keep their slots for
/// ever, and everyone else resuming got 503. Now a stalled catch-up gives its slot up after
/// `SSE_CATCHUP_STALL_SECS`, and the next resume is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_gives_its_catch_up_slot_up() {
    let mongo = Mongo::start("silent").await;
    let gw = start_gateway(
        &mongo,
        &[
            ("SSE_HISTORY_EVENTS", "0"),
            ("SSE_CATCHUP_CONCURRENCY", "1"),
            ("SSE_CATCHUP_QUEUE", "0"),
            ("SSE_CATCHUP_STALL_SECS", "1"),
        ],
    )
    .await;
    let base = base_url(&gw);
    let mut sse = Sse::subscribe(&base, &["logs:w1"], None).await;
    mongo.insert("w1", "f1", 0).await;
    let from = sse.next_event(WAIT).await.unwrap().id;
    drop(sse);
    // Enough to fill the catch-up's channel and both sockets' buffers many times over.
    let pad = "x".repeat(4096);
    for chunk in 0..8 {
        let docs = (0..500)
            .map(|i| {
                let mut d = log_doc("w1", "f1", 1 + chunk * 500 + i);
                d.insert("pad", pad.as_str());
                d
            })
            .collect();
        mongo.insert_many(docs).await;
    }

    // A client that asks for the catch-up and never reads.
    let mut silent = std::net::TcpStream::connect(gw.addr).unwrap();
    write!(
        silent,
        "GET {} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nLast-Event-ID: {from}\r\n\r\n",
        stream_path(&["logs:w1"], None, None)
    )
    .unwrap();
    eventually(WAIT, "the silent client's catch-up to start", || {
        (Stats::get(&gw.hub.stats.catchups_started) == 1).then_some(())
    })
    .await;

    // Another resume is refused while the slot is held, then served once it is given up.
    let path = stream_path(&["logs:w1"], Some(&from), None);
    let mut refused = 0;
    let mut served = loop {
        match Sse::open(&base, &path, None).await {
            Ok(s) => break s,
            // Refused while the slot is held (or closed before a response, as a connection
            // is when its catch-up cannot start): a browser retries after either.
            Err(e) if e.is_load() || e.status == 0 => {
                refused += 1;
                // A browser's reconnection delay, not a synchronization.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("{} {}", e.status, e.body),
        }
        assert!(refused < 150, "the slot was never given up");
    };
    assert!(
        refused >= 1,
        "the silent client held the only slot at first"
    );
    served.expect_retry().await;
    assert_eq!(served.next_event(WAIT).await.unwrap().seq(), 1);
    drop(silent);
    gw.shutdown().await;
}

/// The next data event, past `mode` announcements.
async fn next_data(sse: &mut Sse) -> Ev {
    loop {
        let ev = sse.next_event(WAIT).await.unwrap();
        if ev.event == "message" {
            return ev;
        }
        assert_eq!(ev.event, "mode", "{ev:?}");
    }
}

/// #10: MongoDB's resume tokens embed the document key, so an `_id` over about 1 KB makes a
/// token longer than an event id may be. Such an event used to be skipped with a warning (and
/// the feed stayed down if it came last before a failed getMore). Now it is delivered with an
/// id "right after its cluster time", from which both memory and a catch-up resume exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_id_is_delivered_and_resumable() {
    let mongo = Mongo::start("long_id").await;
    let gw = start_gateway(&mongo, &[("SSE_HISTORY_EVENTS", "2")]).await;
    let base = base_url(&gw);
    let mut sse = Sse::subscribe(&base, &["logs:w1"], None).await;
    let long_id = "L".repeat(3000);
    let mut doc = log_doc("w1", "f1", 1);
    doc.insert("_id", long_id.as_str());
    mongo.logs().insert_one(doc).await.unwrap();
    let ev = sse.next_event(WAIT).await.unwrap();
    assert_eq!(ev.seq(), 1);
    assert_eq!(ev.msg().doc["_id"], long_id.as_str());
    assert!(ev.id.len() < 64, "a short id: {}", ev.id);
    for seq in 2..=6 {
        mongo.insert("w1", "f1", seq).await;
    }
    let rest: Vec<i64> = sse.events(5, WAIT).await.iter().map(|e| e.seq()).collect();
    assert_eq!(rest, vec![2, 3, 4, 5, 6]);
    // The ring holds two events: resuming from the long one's id is a catch-up, by time.
    let mut resumed = Sse::subscribe(&base, &["logs:w1"], Some(&ev.id)).await;
    let seqs: Vec<i64> = resumed
        .events(5, WAIT)
        .await
        .iter()
        .map(|e| e.seq())
        .collect();
    assert_eq!(seqs, vec![2, 3, 4, 5, 6]);
    assert!(Stats::get(&gw.hub.stats.catchups_started) >= 1);
    assert_eq!(get(&base, "/readyz", &[]).await.status, 200);
    gw.shutdown().await;
}
