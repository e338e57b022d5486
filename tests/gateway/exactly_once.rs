//! Exactly once (invariant 1): a writer inserts 5000 numbered documents over 20 workflows while
//! 50 clients, each on 1 to 3 channels, drop and reconnect at random with their last id. A
//! small ring (200 events) makes some resumes come from memory and forces others through
//! catch-up change streams. Every client must end with exactly its channels' documents, in
//! commit order, each once. The second run does the same while fail points break the
//! gateway's MongoDB traffic mid-stream: closed connections, resumable errors, a
//! non-resumable one.

use std::sync::Arc;
use std::time::Duration;

use bson::{doc, Document};
use mongo_sse::hub::{Hub, Stats};
use tokio::sync::watch;

use crate::common::*;

const DOCS: usize = 5000;
const WORKFLOWS: usize = 20;
const CLIENTS: usize = 50;
const RING: &str = "200";
/// Drops (and resumes) per client, on average.
const DROPS: u64 = 8;
/// A client that waits for this many more writes before reconnecting is past the ring.
const PAST_THE_RING: usize = 400;

fn workspace(k: usize) -> String {
    format!("w{}", k / 5)
}

fn workflow(k: usize) -> String {
    format!("f{}", k % 5)
}

/// Whether a document of workflow `k` is delivered on `channel`.
fn routed(channel: &str, k: usize) -> bool {
    channel == "logs"
        || channel == format!("logs:{}", workspace(k))
        || channel == format!("logs:{}:{}", workspace(k), workflow(k))
}

fn pick_channels(i: usize, rng: &mut Rng) -> Vec<String> {
    // Two fixed overlapping sets: a workspace with one of its workflows, the whole source
    // with a workflow. Every event must still arrive once.
    match i {
        0 => return vec!["logs:w1".into(), "logs:w1:f2".into()],
        1 => return vec!["logs".into(), "logs:w0:f0".into()],
        _ => {}
    }
    let n = rng.range(1, 3);
    let mut out: Vec<String> = Vec::new();
    while out.len() < n as usize {
        let k = rng.range(0, WORKFLOWS as u64 - 1) as usize;
        let ch = match rng.range(0, 99) {
            0..=59 => format!("logs:{}:{}", workspace(k), workflow(k)),
            60..=94 => format!("logs:{}", workspace(k)),
            _ => "logs".to_string(),
        };
        if !out.contains(&ch) {
            out.push(ch);
        }
    }
    out
}

#[derive(Debug, Default)]
struct ClientReport {
    connections: u64,
    retried_busy: u64,
    ended_by_server: u64,
    closed_before_response: u64,
    waited_past_ring: u64,
}

struct Client {
    i: usize,
    base: String,
    channels: Vec<String>,
    expected: Vec<i64>,
    rng: Rng,
    written: watch::Receiver<usize>,
}

impl Client {
    /// Reads, drops, reconnects with the last id, until it has as many events as expected.
    async fn run(mut self, mut sse: Sse) -> (Vec<i64>, Vec<String>, ClientReport) {
        let mut got: Vec<i64> = Vec::new();
        let mut ids: Vec<String> = Vec::new();
        let mut report = ClientReport::default();
        let mut last: Option<String> = None;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(100);
        let chans: Vec<&str> = self.channels.iter().map(String::as_str).collect();
        loop {
            // Read k events (at least one before the first drop: a connection that never saw
            // an id has nothing to resume from, as in a browser). About DROPS drops per client
            // whatever its volume: each is a ring resume or a catch-up stream.
            let mean = (self.expected.len() as u64 / DROPS).max(2);
            let k = self.rng.range(u64::from(last.is_none()), 2 * mean);
            let mut read = 0;
            while read < k && got.len() < self.expected.len() {
                match sse.next_event(WAIT).await {
                    Ok(ev) => {
                        assert_eq!(ev.event, "message", "client {}: {ev:?}", self.i);
                        got.push(ev.seq());
                        ids.push(ev.id);
                        read += 1;
                    }
                    Err(End::Ended(_)) => {
                        report.ended_by_server += 1;
                        break;
                    }
                    Err(End::Timeout) => panic!(
                        "client {} on {:?}: no event for {WAIT:?} with {}/{} received (last seq {:?}, {report:?})",
                        self.i,
                        self.channels,
                        got.len(),
                        self.expected.len(),
                        got.last()
                    ),
                }
            }
            if !sse.last_event_id().is_empty() {
                last = Some(sse.last_event_id().to_string());
            }
            drop(sse);
            report.connections += 1;
            if got.len() >= self.expected.len() {
                return (got, ids, report);
            }
            if self.rng.chance(30) {
                // Stay away until the ring has certainly moved past this position (or the
                // writer is done): the resume must go through a catch-up.
                let at = *self.written.borrow();
                report.waited_past_ring += 1;
                within(
                    Duration::from_secs(60),
                    "the writer to move on",
                    self.written
                        .wait_for(|w| *w >= (at + PAST_THE_RING).min(DOCS)),
                )
                .await
                .expect("writer progress");
            }
            sse = loop {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "client {} did not finish: {}/{} ({report:?})",
                    self.i,
                    got.len(),
                    self.expected.len()
                );
                // Both ways a browser sends its id: the header (EventSource's reconnect) and
                // the query parameter (a page that stored it).
                let via_query = self.rng.chance(50);
                let path =
                    stream_path(&chans, if via_query { last.as_deref() } else { None }, None);
                let header = if via_query { None } else { last.as_deref() };
                match Sse::open(&self.base, &path, header).await {
                    Ok(mut s) => match s.next(WAIT).await {
                        Ok(Item::Retry(_)) => break s,
                        // Cut off right after the headers: as good as closed before them.
                        Err(End::Ended(_)) => report.closed_before_response += 1,
                        other => panic!("client {}: the first frame is {other:?}", self.i),
                    },
                    Err(e) if e.is_load() => {
                        // Catch-ups are bounded; a browser retries after `retry:`. This is a
                        // reconnect delay, not a synchronization.
                        report.retried_busy += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    // Closed before the response (a queue that overflowed while its catch-up
                    // was starting): EventSource reconnects after a network error too.
                    Err(e) if e.status == 0 => {
                        report.closed_before_response += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(e) => panic!(
                        "client {} reconnecting from {last:?}: {} {}",
                        self.i, e.status, e.body
                    ),
                }
            };
        }
    }
}

/// A fail point to set before the writer inserts document `at`.
struct Chaos {
    at: usize,
    name: &'static str,
    command: Document,
}

async fn run(test: &str, chaos: Vec<Chaos>) {
    let seed = seed(test);
    let mut rng = Rng::new(seed);
    let mongo = Mongo::start(test).await;
    let app = unique_name("gw");
    let gw = start_gateway_named(&mongo, &app, &[("SSE_HISTORY_EVENTS", RING)]).await;
    let base = base_url(&gw);
    let hub: Arc<Hub> = Arc::clone(&gw.hub);

    // The plan: document `seq` goes to workflow plan[seq].
    let plan: Vec<usize> = (0..DOCS)
        .map(|_| rng.range(0, WORKFLOWS as u64 - 1) as usize)
        .collect();
    let (written_tx, written_rx) = watch::channel(0usize);

    // Everyone subscribes before the first write (the retry frame confirms the subscription).
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let channels = pick_channels(i, &mut rng);
        let expected: Vec<i64> = (0..DOCS)
            .filter(|&s| channels.iter().any(|c| routed(c, plan[s])))
            .map(|s| s as i64)
            .collect();
        let chans: Vec<&str> = channels.iter().map(String::as_str).collect();
        let sse = Sse::subscribe(&base, &chans, None).await;
        let client = Client {
            i,
            base: base.clone(),
            channels,
            expected,
            rng: Rng::new(rng.next_u64()),
            written: written_rx.clone(),
        };
        clients.push((client, sse));
    }

    let writer = {
        let logs = mongo.logs();
        let admin = mongo.client.database("admin");
        let plan = plan.clone();
        let app = app.clone();
        let mut batch_rng = Rng::new(rng.next_u64());
        let hub_w = Arc::clone(&hub);
        tokio::spawn(async move {
            let began = std::time::Instant::now();
            let mut chaos = chaos.into_iter().peekable();
            let mut fired: Vec<(&'static str, i64)> = Vec::new();
            // The configuration in force for each fail point, by point name.
            let mut previous: std::collections::HashMap<String, &'static str> = Default::default();
            let count = |reply: Document| match reply.get("count") {
                Some(bson::Bson::Int32(n)) => i64::from(*n),
                Some(bson::Bson::Int64(n)) => *n,
                _ => 0,
            };
            let mut seq = 0;
            let mut armed_at: Option<usize> = None;
            while seq < DOCS {
                // Ordered batches of 1 to 20: commit order is still seq order, with fewer
                // round trips than one insert per document.
                let end = (seq + batch_rng.range(1, 20) as usize).min(DOCS);
                while chaos.peek().is_some_and(|c| c.at < end) {
                    let c = chaos.next().unwrap();
                    // One fault at a time: the gateway must have published well past the
                    // previous one (so its stream recovered) before the next is armed.
                    if let Some(prev) = armed_at {
                        let want = (prev + 50) as u64;
                        let published = || Stats::get(&hub_w.stats.events_published);
                        let deadline = std::time::Instant::now() + Duration::from_secs(30);
                        while published() < want {
                            assert!(
                                std::time::Instant::now() < deadline,
                                "the gateway did not recover from the fault armed at {prev}: {} published",
                                published()
                            );
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                    armed_at = Some(seq);
                    eprintln!("{:?}: arming {} at {seq}", began.elapsed(), c.name);
                    let mut cmd = c.command;
                    let point = cmd.get_str("configureFailPoint").unwrap().to_string();
                    if point == "failCommand" {
                        // Only the gateway's connections, not the writer's (or other tests').
                        cmd.get_document_mut("data")
                            .expect("failCommand data")
                            .insert("appName", app.clone());
                    }
                    let reply = admin.run_command(cmd).await.expect("configureFailPoint");
                    // The reply counts how often the previous configuration fired.
                    if let Some(p) = previous.insert(point, c.name) {
                        fired.push((p, count(reply)));
                    }
                }
                let docs: Vec<Document> = (seq..end)
                    .map(|s| {
                        doc! {
                            "workspace_id": workspace(plan[s]),
                            "workflow_id": workflow(plan[s]),
                            "seq": s as i64,
                        }
                    })
                    .collect();
                logs.insert_many(docs).await.expect("insert");
                seq = end;
                written_tx.send_replace(seq);
            }
            eprintln!("writer: {DOCS} documents in {:?}", began.elapsed());
            for (point, name) in previous {
                let reply = admin
                    .run_command(doc! {"configureFailPoint": point, "mode": "off"})
                    .await
                    .expect("turn the fail point off");
                fired.push((name, count(reply)));
            }
            fired
        })
    };

    let started = std::time::Instant::now();
    let mut expectations = Vec::new();
    let mut tasks = Vec::new();
    for (client, sse) in clients {
        expectations.push((client.i, client.channels.clone(), client.expected.clone()));
        tasks.push(tokio::spawn(client.run(sse)));
    }
    let fired = join(writer).await;
    let mut totals = ClientReport::default();
    for ((i, channels, expected), task) in expectations.into_iter().zip(tasks) {
        let (got, ids, report) = join(task).await;
        if got != expected {
            let dups = got.len() - got.iter().collect::<std::collections::HashSet<_>>().len();
            let missing: Vec<&i64> = expected
                .iter()
                .filter(|s| !got.contains(s))
                .take(10)
                .collect();
            let first_diff = got.iter().zip(&expected).position(|(a, b)| a != b);
            panic!(
                "client {i} on {channels:?} (seed {seed}): got {} events, expected {}; \
                 {dups} duplicates, missing (first 10) {missing:?}, first difference at {first_diff:?}; {report:?}",
                got.len(),
                expected.len()
            );
        }
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "client {i}: event ids must increase (commit order)"
        );
        totals.connections += report.connections;
        totals.retried_busy += report.retried_busy;
        totals.ended_by_server += report.ended_by_server;
        totals.waited_past_ring += report.waited_past_ring;
        totals.closed_before_response += report.closed_before_response;
    }
    let elapsed = started.elapsed();

    // What MongoDB holds is what the plan says (so the expectations above are MongoDB's).
    let stored = mongo.all_logs().await;
    assert_eq!(stored.len(), DOCS);
    for (seq, d) in stored.iter().enumerate() {
        assert_eq!(d.get_i64("seq").unwrap(), seq as i64);
        assert_eq!(d.get_str("workflow_id").unwrap(), workflow(plan[seq]));
        assert_eq!(d.get_str("workspace_id").unwrap(), workspace(plan[seq]));
    }

    let stats = &hub.stats;
    eprintln!(
        "{test}: {elapsed:?}, clients {totals:?}, resumes from the ring {}, catch-ups {} (rejected {}), \
         slow-consumer disconnects {}, fail points fired {fired:?}",
        Stats::get(&stats.resumes_from_history),
        Stats::get(&stats.catchups_started),
        Stats::get(&stats.catchups_rejected),
        Stats::get(&stats.slow_consumer_disconnects),
    );
    assert!(
        Stats::get(&stats.resumes_from_history) > 0,
        "some resumes from the ring"
    );
    assert!(
        Stats::get(&stats.catchups_started) > 0,
        "some resumes through catch-up"
    );
    assert_eq!(
        Stats::get(&stats.gaps_sent),
        0,
        "nothing fell off the oplog"
    );
    for (name, count) in &fired {
        assert!(*count >= 1, "fail point {name} never fired");
    }
    gw.shutdown().await;
}

async fn join<T>(task: tokio::task::JoinHandle<T>) -> T {
    match task.await {
        Ok(v) => v,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("task failed: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_across_random_reconnects() {
    run("exactly_once", Vec::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_through_mongodb_faults() {
    let resumable = |code: i32, times: i32| {
        doc! {
            "configureFailPoint": "failCommand",
            "mode": {"times": times},
            "data": {
                "failCommands": ["getMore"],
                "errorCode": code,
                "errorLabels": ["ResumableChangeStreamError"],
            },
        }
    };
    let mut chaos = vec![
        Chaos {
            at: 600,
            name: "failCommand closeConnection",
            command: doc! {
                "configureFailPoint": "failCommand",
                "mode": {"times": 3},
                "data": {"failCommands": ["getMore"], "closeConnection": true},
            },
        },
        Chaos {
            at: 1500,
            name: "failCommand 91 (ShutdownInProgress)",
            // A shutdown error makes the driver wait for its server monitor's next answer,
            // which a streaming monitor gets only after heartbeatFrequencyMS (10 s) when the
            // topology did not really change: one is enough.
            command: resumable(91, 1),
        },
        Chaos {
            at: 2400,
            name: "failCommand 10107 (NotWritablePrimary)",
            command: resumable(10107, 2),
        },
        // Not resumable: the driver gives up and the gateway reopens from its last token.
        Chaos {
            at: 3300,
            name: "failCommand 1 (InternalError, not resumable)",
            command: doc! {
                "configureFailPoint": "failCommand",
                "mode": {"times": 1},
                "data": {"failCommands": ["getMore"], "errorCode": 1},
            },
        },
    ];
    if real_uri().is_none() {
        // Not scoped to one application: only on the test's own sim.
        chaos.push(Chaos {
            at: 4200,
            name: "failGetMoreAfterCursorCheckout 6 (HostUnreachable)",
            command: doc! {
                "configureFailPoint": "failGetMoreAfterCursorCheckout",
                "mode": {"times": 2},
                "data": {"errorCode": 6},
            },
        });
    }
    run("exactly_once_faults", chaos).await;
}
