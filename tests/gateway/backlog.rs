//! `?backlog=N` while writers race: each client gets the last N documents of its channels and
//! then live ones, with no gap and no duplicate across the boundary, and the ids it received
//! resume correctly.

use mongo_sse::hub::Stats;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

use crate::common::*;

/// The racing writers: one sequential writer per workflow, each numbering its own documents.
const WRITERS: [(&str, &str); 3] = [("w1", "f1"), ("w1", "f2"), ("w2", "f1")];
const LIVE: usize = 20;

type PathFor = Box<dyn Fn(usize) -> String>;

fn v1(ch: &'static str) -> impl Fn(usize) -> String {
    move |n| stream_path(&[ch], None, Some(n))
}

/// Per workflow, received seqs must be consecutive; returns the first seq of each.
fn assert_contiguous(what: &str, evs: &[Ev]) -> HashMap<String, i64> {
    let mut next: HashMap<String, i64> = HashMap::new();
    let mut first = HashMap::new();
    for ev in evs {
        let m = ev.msg();
        let key = format!(
            "{}:{}",
            m.doc["workspace_id"].as_str().unwrap(),
            ev.wf_seq().0
        );
        let seq = ev.seq();
        if let Some(want) = next.get(&key) {
            assert_eq!(
                seq,
                *want,
                "{what}: {key} jumps from {} to {seq} (gap or duplicate); events {:?}",
                want - 1,
                evs.iter().map(|e| e.wf_seq()).collect::<Vec<_>>()
            );
        } else {
            first.insert(key.clone(), seq);
        }
        next.insert(key, seq + 1);
    }
    first
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_then_live_while_writers_race() {
    let mongo = Mongo::start("backlog").await;
    let gw = start_gateway(&mongo, &[]).await;
    let base = base_url(&gw);

    let stop = Arc::new(AtomicBool::new(false));
    let mut progress = Vec::new();
    let mut writers = Vec::new();
    for (ws, wf) in WRITERS {
        let (tx, rx) = watch::channel(0i64);
        progress.push(rx);
        let logs = mongo.logs();
        let stop = Arc::clone(&stop);
        writers.push(tokio::spawn(async move {
            let mut seq = 0i64;
            while !stop.load(Ordering::Relaxed) {
                logs.insert_one(log_doc(ws, wf, seq)).await.expect("insert");
                seq += 1;
                tx.send_replace(seq);
            }
        }));
    }

    // (what, path for a backlog of n, workflows it covers, n, start after this many writes)
    let cases: Vec<(&str, PathFor, &[&str], usize, i64)> = vec![
        // Everything so far (fewer than 1000 exist): backlogs start at seq 0.
        ("w1 all", Box::new(v1("logs:w1")), &["f1", "f2"], 1000, 50),
        ("f1 all", Box::new(v1("logs:w1:f1")), &["f1"], 1000, 60),
        ("f1 last 1", Box::new(v1("logs:w1:f1")), &["f1"], 1, 80),
        (
            "f2 last 10 (compat)",
            Box::new(|n| format!("/wfm/workflow/workspace/w1/workflow/f2/logs/stream?backlog={n}")),
            &["f2"],
            10,
            100,
        ),
        (
            "w1 last 25",
            Box::new(v1("logs:w1")),
            &["f1", "f2"],
            25,
            120,
        ),
        ("f1 last 100", Box::new(v1("logs:w1:f1")), &["f1"], 100, 150),
        ("w1 last 7", Box::new(v1("logs:w1")), &["f1", "f2"], 7, 170),
        ("f2 last 50", Box::new(v1("logs:w1:f2")), &["f2"], 50, 200),
        ("f1 last 0", Box::new(v1("logs:w1:f1")), &["f1"], 0, 220),
        (
            "w1 last 300",
            Box::new(v1("logs:w1")),
            &["f1", "f2"],
            300,
            250,
        ),
    ];
    let index = |wf: &str| {
        WRITERS
            .iter()
            .position(|(w, f)| *w == "w1" && *f == wf)
            .unwrap()
    };

    for (i, (what, path, workflows, n, after)) in cases.iter().enumerate() {
        within(
            WAIT,
            "the writers",
            progress[0].clone().wait_for(|w| *w >= *after),
        )
        .await
        .unwrap();
        let path = path(*n);
        let mut sse = Sse::open(&base, &path, None)
            .await
            .unwrap_or_else(|e| panic!("{what}: {} {}", e.status, e.body));
        sse.expect_retry().await;

        // The backlog (all carrying the subscription's head as id), then LIVE live events.
        let mut evs: Vec<Ev> = Vec::new();
        let mut live = 0;
        // How many documents each workflow's writer had written once the first event was here
        // (the backlog query was over by then; a writer has one insert in flight at most).
        let mut written_at_first: HashMap<&str, i64> = HashMap::new();
        while live < LIVE {
            let ev = sse
                .next_event(WAIT)
                .await
                .unwrap_or_else(|e| panic!("{what}: after {} events: {e:?}", evs.len()));
            if evs.is_empty() {
                written_at_first = workflows
                    .iter()
                    .map(|wf| (*wf, *progress[index(wf)].borrow()))
                    .collect();
            }
            if evs.first().is_some_and(|f| f.id != ev.id) || (*n == 0) {
                live += 1;
            }
            evs.push(ev);
        }
        let head = evs[0].id.clone();
        let backlog_len = if *n == 0 {
            0
        } else {
            evs.iter().take_while(|e| e.id == head).count()
        };
        assert!(
            backlog_len <= *n,
            "{what}: {backlog_len} backlog rows for backlog={n}"
        );
        let live_ids: Vec<&str> = evs[backlog_len..].iter().map(|e| e.id.as_str()).collect();
        assert!(
            live_ids.windows(2).all(|w| w[0] < w[1])
                && (backlog_len == 0 || live_ids.first().is_none_or(|f| *f > head.as_str())),
            "{what}: live ids increase, after the backlog's"
        );
        let first = assert_contiguous(what, &evs);
        for wf in workflows.iter() {
            let key = format!("w1:{wf}");
            let first = first
                .get(&key)
                .copied()
                .unwrap_or_else(|| panic!("{what}: nothing from {key}"));
            if *n >= 1000 {
                assert_eq!(first, 0, "{what}: backlog={n} covers all of {key}");
            } else if workflows.len() == 1 {
                // At least the last n at query time: the stream starts no later than n before
                // the newest document the query could have seen. (It may start earlier: live
                // delivery begins at the gateway's head, which can lag the writer.)
                assert!(
                    first + *n as i64 <= written_at_first[wf] + 1,
                    "{what}: starts at {first}, so the backlog misses some of the last {n} of {}",
                    written_at_first[wf] + 1
                );
            }
        }

        // Resume from the backlog's id: what followed the backlog, exactly (from the ring).
        if backlog_len > 0 && i % 2 == 0 {
            drop(sse);
            sse = Sse::resume(&base, &path_without_backlog(&path), &head).await;
            let again = sse.events(LIVE, WAIT).await;
            assert_eq!(
                again.iter().map(|e| (&e.id, e.seq())).collect::<Vec<_>>(),
                evs[backlog_len..backlog_len + LIVE]
                    .iter()
                    .map(|e| (&e.id, e.seq()))
                    .collect::<Vec<_>>(),
                "{what}: resuming from the backlog's id continues right after the backlog"
            );
        }
        // Resume from the last id: continues without gap or duplicate.
        let last = sse.last_event_id().to_string();
        drop(sse);
        let mut sse = Sse::resume(&base, &path_without_backlog(&path), &last).await;
        let more = sse.events(10, WAIT).await;
        let mut all = evs.clone();
        all.extend(more);
        assert_contiguous(&format!("{what} (resumed)"), &all);
    }

    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }
    gw.shutdown().await;
}

/// The same stream without `backlog=` (a browser reconnecting keeps its URL, but backlog is
/// only served to fresh connections anyway; this checks resume on its own).
fn path_without_backlog(path: &str) -> String {
    let (p, q) = path.split_once('?').unwrap_or((path, ""));
    let kept: Vec<&str> = q
        .split('&')
        .filter(|kv| !kv.starts_with("backlog="))
        .collect();
    format!("{p}?{}", kept.join("&"))
}

/// On a channel nobody writes to during the request, the backlog is exactly the last N.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_of_a_quiet_channel_is_exact() {
    let mongo = Mongo::start("backlog_exact").await;
    mongo
        .insert_many((0..50).map(|i| log_doc("w3", "f9", i)).collect())
        .await;
    mongo.insert("w3", "f8", 1000).await;
    let gw = start_gateway(&mongo, &[]).await;
    let base = base_url(&gw);

    let mut stored: Vec<i64> = (0..50).collect();
    for n in [10usize, 1000, 1] {
        let want: Vec<i64> = stored[stored.len().saturating_sub(n)..].to_vec();
        let mut sse = Sse::open(&base, &stream_path(&["logs:w3:f9"], None, Some(n)), None)
            .await
            .expect("backlog stream");
        sse.expect_retry().await;
        let evs = sse.events(want.len(), WAIT).await;
        let seqs: Vec<i64> = evs.iter().map(|e| e.seq()).collect();
        assert_eq!(seqs, want, "backlog={n}");
        assert!(evs
            .iter()
            .all(|e| e.id == evs[0].id && e.event == "message"));
        assert!(evs.iter().all(|e| e.msg().op == "insert"));
        sse.expect_no_event(std::time::Duration::from_millis(300))
            .await;
        // Then live, after the backlog's id.
        let seq = 100 + n as i64;
        mongo.insert("w3", "f9", seq).await;
        stored.push(seq);
        let live = sse.next_event(WAIT).await.unwrap();
        assert_eq!(live.seq(), seq);
        assert!(live.id > evs[0].id);
    }
    // The workspace channel's backlog merges its workflows, oldest first.
    let mut sse = Sse::open(&base, &stream_path(&["logs:w3"], None, Some(3)), None)
        .await
        .expect("backlog stream");
    sse.expect_retry().await;
    let seqs: Vec<i64> = sse.events(3, WAIT).await.iter().map(|e| e.seq()).collect();
    assert_eq!(seqs, vec![110, 1100, 101]);
    gw.shutdown().await;
}

/// `mongo_sse_backlogs_running` as `/metrics` shows it.
async fn backlogs_running(base: &str) -> Option<f64> {
    let text = get(base, "/metrics", &[]).await.body;
    text.lines()
        .find_map(|l| l.strip_prefix("mongo_sse_backlogs_running "))
        .and_then(|v| v.trim().parse().ok())
}

/// #11: 300 simultaneous `?backlog=1000` used to make 300 queries at once, each collecting its
/// documents in memory. Now at most `SSE_BACKLOG_CONCURRENCY` run, more are told `busy`
/// (`backlog_busy`), and a backlog's slot is given up as soon as its client goes — here one
/// that asked for a large backlog and read nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlogs_are_bounded_and_a_gone_client_gives_its_slot_up() {
    use std::io::Write;
    let mongo = Mongo::start("backlog_slots").await;
    let gw = start_gateway(
        &mongo,
        &[
            ("SSE_BACKLOG_CONCURRENCY", "1"),
            ("SSE_CATCHUP_QUEUE", "0"),
            // Longer than the test: only the client leaving may free the slot.
            ("SSE_CATCHUP_STALL_SECS", "300"),
        ],
    )
    .await;
    let base = base_url(&gw);
    // 1000 documents of 32 KiB: many times what the backlog's channel and both sockets'
    // buffers hold, so a client that reads nothing keeps its backlog streaming.
    let pad = "x".repeat(32 * 1024);
    for chunk in 0..10 {
        let docs = (0..100)
            .map(|i| {
                let mut d = log_doc("w1", "f1", chunk * 100 + i);
                d.insert("pad", pad.as_str());
                d
            })
            .collect();
        mongo.insert_many(docs).await;
    }

    // The live feed has passed every insert: from here on, backlogs are rows only (what a
    // lagging feed has not published yet is left out of a backlog, to arrive live).
    eventually(WAIT, "the live feed to publish the inserts", || {
        (Stats::get(&gw.hub.stats.events_published) >= 1000).then_some(())
    })
    .await;
    let mut silent = std::net::TcpStream::connect(gw.addr).unwrap();
    write!(
        silent,
        "GET {} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n",
        stream_path(&["logs:w1"], None, Some(1000))
    )
    .unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while backlogs_running(&base).await != Some(1.0) {
        assert!(
            std::time::Instant::now() < deadline,
            "the silent client's backlog never showed as running"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // While it holds the only slot, another backlog is told to come back.
    let path = stream_path(&["logs:w1"], None, Some(5));
    match Sse::open(&base, &path, None).await {
        Ok(_) => panic!("a second backlog ran beside the first (SSE_BACKLOG_CONCURRENCY=1)"),
        Err(e) => {
            let busy = e
                .busy()
                .unwrap_or_else(|| panic!("not a busy stream: {} {}", e.status, e.body));
            assert_eq!(busy["reason"], "backlog_busy", "{busy}");
        }
    }
    let plain = get(&base, &path, &[]).await;
    assert_eq!(plain.status, 503, "{}", plain.body);
    assert!(plain.body.contains("backlog_busy"), "{}", plain.body);

    // The silent client goes: its backlog stops and the next one is served.
    drop(silent);
    let deadline = std::time::Instant::now() + WAIT;
    while backlogs_running(&base).await != Some(0.0) {
        assert!(
            std::time::Instant::now() < deadline,
            "the gone client's backlog kept its slot"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mut served = Sse::open(&base, &path, None)
        .await
        .unwrap_or_else(|e| panic!("{} {}", e.status, e.body));
    served.expect_retry().await;
    for want in 995..1000 {
        assert_eq!(served.next_event(WAIT).await.unwrap().seq(), want);
    }
    gw.shutdown().await;
}
