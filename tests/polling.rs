//! The polling fallback (issue 4): where change streams are unavailable (a standalone
//! `mongod`, a user without the `changeStream` privilege) the gateway polls, one query per
//! source per interval whatever the number of browsers, and switches back to change streams
//! when they return — losing and repeating nothing for connected and reconnecting clients.
//!
//! Every test runs with short intervals (`SSE_POLL_INTERVAL_MS=100`,
//! `SSE_PROBE_INTERVAL_SECS=1`) and asserts that things arrive, never how fast. Tests that need a
//! standalone server or query counts run against mongo-sim only (`MONGODB_URI` skips them);
//! fail-point tests also run against a real replica set started with `enableTestCommands=1`.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bson::oid::ObjectId;
use bson::{doc, Bson, Document};
use futures::StreamExt;
use mongo_sim::SimConfig;
use mongo_sse::config::Config;
use mongo_sse::gateway::Gateway;
use mongo_sse::hub::{SourceState, Stats};
use mongo_sse::position::{sources_fingerprint, Position, PositionKind};
use mongo_sse::source::Mode;
use mongodb::Collection;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use common::*;

const INTERVAL_MS: u64 = 100;

/// Short intervals for tests, plus `extra`.
fn vars<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut v = vec![
        ("SSE_POLL_INTERVAL_MS", "100"),
        ("SSE_PROBE_INTERVAL_SECS", "1"),
    ];
    v.extend_from_slice(extra);
    v
}

fn polling_json() -> Value {
    json!({"mode": "polling", "interval_ms": INTERVAL_MS})
}

/// A standalone mongo-sim (`$changeStream` fails with 40573), or `None` against a real server.
async fn standalone(test: &str) -> Option<Mongo> {
    if skip_unless_sim(test, "needs a standalone mongo-sim") {
        return None;
    }
    let config = SimConfig {
        standalone: true,
        ..SimConfig::default()
    };
    Some(Mongo::with_sim_config(test, config).await)
}

/// Starts a gateway on `uri` without waiting for `/readyz`.
async fn start_unready(mongo: &Mongo, uri: &str, extra: &[(&str, &str)]) -> Gateway {
    let mut all: Vec<(String, String)> = vec![
        ("SSE_AUTH".into(), "none".into()),
        ("MONGODB_URI".into(), uri.to_string()),
        ("MONGODB_DB".into(), mongo.db_name.clone()),
        ("SSE_BIND".into(), "127.0.0.1:0".into()),
    ];
    all.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let config = Config::from_iter(all).expect("gateway configuration");
    Gateway::start(config).await.expect("start the gateway")
}

/// `serverStatus.opcounters.query`: the finds MongoDB has answered.
async fn finds(mongo: &Mongo) -> i64 {
    let status = mongo
        .client
        .database("admin")
        .run_command(doc! {"serverStatus": 1})
        .await
        .expect("serverStatus");
    match status
        .get_document("opcounters")
        .ok()
        .and_then(|o| o.get("query"))
    {
        Some(Bson::Int32(n)) => i64::from(*n),
        Some(Bson::Int64(n)) => *n,
        other => panic!("serverStatus.opcounters.query: {other:?}"),
    }
}

/// Makes the gateway's (`app`) `commands` fail with `Unauthorized` (13): what MongoDB answers
/// a user without the `changeStream` privilege.
async fn unauthorized(mongo: &Mongo, app: &str, commands: &[&str]) {
    mongo
        .fail_point(doc! {
            "configureFailPoint": "failCommand",
            "mode": "alwaysOn",
            "data": {"failCommands": commands, "errorCode": 13, "appName": app},
        })
        .await;
}

/// Turns `failCommand` off; returns how often it fired.
async fn fail_point_off(mongo: &Mongo) -> i64 {
    mongo
        .fail_point(doc! {"configureFailPoint": "failCommand", "mode": "off"})
        .await
}

/// Makes gateway `gw`'s (application name `app`) finds fail until [`fail_point_off`], and
/// waits until its polls have failed: from here it sees nothing new.
async fn block_polls(mongo: &Mongo, gw: &Gateway, app: &str) {
    mongo
        .fail_point(doc! {
            "configureFailPoint": "failCommand",
            "mode": "alwaysOn",
            "data": {"failCommands": ["find"], "errorCode": 6, "appName": app},
        })
        .await;
    eventually(WAIT, "the gateway's polls to fail", || {
        matches!(gw.hub.state(), SourceState::Down(_)).then_some(())
    })
    .await;
}

/// The next frame, which must be a named `mode` event: its id and JSON.
async fn expect_mode(sse: &mut Sse) -> (String, Value) {
    match sse.next(WAIT).await {
        Ok(Item::Event(ev)) if ev.event == "mode" => {
            let body = json_of(&ev);
            (ev.id, body)
        }
        other => panic!("expected a `mode` event, got {other:?}"),
    }
}

fn json_of(ev: &Ev) -> Value {
    serde_json::from_str(&ev.data).unwrap_or_else(|e| panic!("{} is not JSON: {e}", ev.data))
}

/// The next data message, skipping comments, `id:`-only frames and `mode` events; a `gap` or
/// any other named event fails the test.
async fn next_data(sse: &mut Sse) -> Result<Ev, End> {
    loop {
        let ev = sse.next_event(WAIT).await?;
        match ev.event.as_str() {
            "message" => return Ok(ev),
            "mode" => continue,
            other => panic!("unexpected `{other}` event: {ev:?}"),
        }
    }
}

/// Exactly `n` data messages, with no named event among them.
async fn data(sse: &mut Sse, n: usize) -> Vec<Ev> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match sse.next_event(WAIT).await {
            Ok(ev) if ev.event == "message" => out.push(ev),
            Ok(ev) => panic!(
                "expected data, got a `{}` event after {} messages: {ev:?}",
                ev.event,
                out.len()
            ),
            Err(e) => panic!("expected {n} messages, got {} then {e:?}", out.len()),
        }
    }
    out
}

/// Data messages up to the next `mode` event, and that event.
async fn until_mode(sse: &mut Sse) -> (Vec<Ev>, Ev) {
    let mut out = Vec::new();
    loop {
        match sse.next_event(WAIT).await {
            Ok(ev) if ev.event == "message" => out.push(ev),
            Ok(ev) if ev.event == "mode" => return (out, ev),
            Ok(ev) => panic!("unexpected `{}` event: {ev:?}", ev.event),
            Err(e) => panic!(
                "waiting for a `mode` event after {} messages: {e:?}",
                out.len()
            ),
        }
    }
}

fn seqs(evs: &[Ev]) -> Vec<i64> {
    evs.iter().map(Ev::seq).collect()
}

fn position(id: &str) -> Position {
    Position::decode(id).unwrap_or_else(|e| panic!("event id {id:?} is not a position: {e}"))
}

/// Ids strictly increase within each kind of position (a `mode` event starts a new run).
fn assert_ids_increase(evs: &[Ev]) {
    for w in evs.windows(2) {
        let (a, b) = (position(&w[0].id), position(&w[1].id));
        if a.kind() == b.kind() {
            assert_eq!(
                b.cmp_same_kind(&a),
                Some(std::cmp::Ordering::Greater),
                "ids do not increase: {} then {}",
                w[0].id,
                w[1].id
            );
        }
    }
}

/// A sequential writer inserting `{workspace_id: w1, workflow_id: f1, seq}` until stopped.
struct Writer {
    stop: Arc<AtomicBool>,
    task: JoinHandle<i64>,
}

impl Writer {
    fn spawn(coll: Collection<Document>, pace: Duration) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let mut seq = 0;
            while !s.load(Ordering::Relaxed) {
                coll.insert_one(log_doc("w1", "f1", seq))
                    .await
                    .expect("writer insert");
                seq += 1;
                // Pacing, not synchronization: the switches must happen mid-stream.
                tokio::time::sleep(pace).await;
            }
            seq
        });
        Writer { stop, task }
    }

    /// Stops and returns how many documents were written.
    async fn stop(self) -> i64 {
        self.stop.store(true, Ordering::Relaxed);
        within(WAIT, "the writer to stop", self.task)
            .await
            .expect("writer task")
    }
}

// ---------------------------------------------------------------------------------------------
// Standalone: polling from the start

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn standalone_streams_by_polling_with_polling_ids() {
    let Some(mongo) = standalone("poll_basic").await else {
        return;
    };
    let gw = start_gateway(&mongo, &vars(&[])).await;
    let base = base_url(&gw);
    assert_eq!(
        gw.hub.mode(),
        Some(Mode::Polling {
            interval_ms: INTERVAL_MS
        })
    );

    let mut sse = Sse::subscribe(&base, &["logs:w1"], None).await;
    let (id, mode) = expect_mode(&mut sse).await;
    assert_eq!(mode, polling_json());
    assert_eq!(id, "", "the connect-time mode event carries no id");

    for seq in 0..10 {
        mongo.insert("w1", "f1", seq).await;
    }
    mongo.insert("w2", "f1", 99).await; // another workspace: not for this client
    let evs = data(&mut sse, 10).await;
    assert_eq!(seqs(&evs), (0..10).collect::<Vec<_>>());
    let fp = sources_fingerprint(["logs", "sse_events"]);
    for ev in &evs {
        let p = position(&ev.id);
        assert_eq!(p.kind(), PositionKind::Polling, "{}", ev.id);
        assert_eq!(p.polling().map(|c| c.fingerprint()), Some(fp));
        assert!(p.polling().and_then(|c| c.high()).is_some());
    }
    assert_ids_increase(&evs);
    sse.expect_no_event(Duration::from_millis(5 * INTERVAL_MS))
        .await;

    let stats = &gw.source_stats;
    assert!(Stats::get(&stats.poll.polls) > 0);
    assert_eq!(Stats::get(&stats.poll.documents_found), 11);
    // Auto mode found change streams unavailable once, and has not left polling since.
    assert_eq!(Stats::get(&stats.switches), 1);
    assert_eq!(get(&base, "/readyz", &[]).await.status, 200);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn polling_resumes_from_memory_and_by_catch_up_exactly_once() {
    let Some(mongo) = standalone("poll_resume").await else {
        return;
    };
    let gw = start_gateway(&mongo, &vars(&[("SSE_HISTORY_EVENTS", "5")])).await;
    let base = base_url(&gw);
    let mut observer = Sse::subscribe(&base, &["logs:w1"], None).await;
    expect_mode(&mut observer).await;
    for seq in 0..24 {
        mongo.insert("w1", "f1", seq).await;
    }
    let all = data(&mut observer, 24).await;
    assert_eq!(seqs(&all), (0..24).collect::<Vec<_>>());

    // From memory: the ring holds the last five events.
    let mut r = Sse::subscribe(&base, &["logs:w1"], Some(&all[20].id)).await;
    assert_eq!(expect_mode(&mut r).await.1, polling_json());
    assert_eq!(seqs(&data(&mut r, 3).await), vec![21, 22, 23]);
    assert!(Stats::get(&gw.hub.stats.resumes_from_history) >= 1);

    // Older than memory: a polling catch-up from MongoDB, then live.
    let mut c = Sse::subscribe(&base, &["logs:w1"], Some(&all[1].id)).await;
    assert_eq!(expect_mode(&mut c).await.1, polling_json());
    let caught = data(&mut c, 22).await;
    assert_eq!(seqs(&caught), (2..24).collect::<Vec<_>>());
    assert_ids_increase(&caught);
    assert_eq!(Stats::get(&gw.hub.stats.catchups_started), 1);

    // From the head: nothing to replay.
    let mut h = Sse::subscribe(&base, &["logs:w1"], Some(&all[23].id)).await;
    expect_mode(&mut h).await;

    mongo.insert("w1", "f1", 24).await;
    for s in [&mut observer, &mut r, &mut c, &mut h] {
        assert_eq!(seqs(&data(s, 1).await), vec![24]);
    }
    for s in [&mut observer, &mut r, &mut c, &mut h] {
        s.expect_no_event(Duration::from_millis(5 * INTERVAL_MS))
            .await;
    }
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Out-of-order ObjectIds

const WRITERS: usize = 20;
const PER_WRITER: usize = 15;
/// Longest delay between making an `_id` and inserting it: well inside the overlap window.
const MAX_DELAY_MS: u64 = 1200;

/// 20 writers, each making an ObjectId, sleeping a random while, then inserting it: documents
/// commit out of `_id` order. Returns every key (`k`).
async fn out_of_order_writers(mongo: &Mongo, seed: u64) -> HashSet<String> {
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let coll = mongo.logs();
        let mut rng = Rng::new(seed ^ (w as u64 + 1));
        tasks.push(tokio::spawn(async move {
            let mut keys = Vec::new();
            for i in 0..PER_WRITER {
                let id = ObjectId::new();
                // Deliberately late: other writers' newer ids commit meanwhile.
                tokio::time::sleep(Duration::from_millis(rng.range(0, MAX_DELAY_MS))).await;
                let k = format!("{w}-{i}");
                coll.insert_one(doc! {
                    "_id": id, "workspace_id": "w1", "workflow_id": format!("f{}", w % 4), "seq": i as i64, "k": &k,
                })
                .await
                .expect("insert");
                keys.push(k);
            }
            keys
        }));
    }
    let mut all = HashSet::new();
    for t in tasks {
        all.extend(within(WAIT, "the writers", t).await.expect("writer"));
    }
    all
}

fn key(ev: &Ev) -> String {
    ev.msg().doc["k"]
        .as_str()
        .unwrap_or_else(|| panic!("no k in {}", ev.data))
        .to_string()
}

/// Reads `n` messages from a connection held open throughout.
async fn read_connected(mut sse: Sse, n: usize) -> Vec<Ev> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match next_data(&mut sse).await {
            Ok(ev) => out.push(ev),
            Err(e) => panic!(
                "connected client: {} of {n} messages, then {e:?}",
                out.len()
            ),
        }
    }
    sse.expect_no_event(Duration::from_millis(5 * INTERVAL_MS))
        .await;
    out
}

/// Reads `n` messages starting from `last`, closing the connection after a random few and
/// reconnecting with the last event id, as a browser does after a network blip. Then checks
/// that one more resume has nothing left to send.
async fn read_reconnecting(
    base: String,
    channel: &'static str,
    mut last: Option<String>,
    n: usize,
    mut rng: Rng,
) -> (Vec<Ev>, u32) {
    let mut out: Vec<Ev> = Vec::with_capacity(n);
    let mut reconnects = 0;
    while out.len() < n {
        let mut sse = Sse::subscribe(&base, &[channel], last.as_deref()).await;
        let take = rng.range(1, 25) as usize;
        for _ in 0..take.min(n - out.len()) {
            match next_data(&mut sse).await {
                Ok(ev) => out.push(ev),
                Err(e) => panic!(
                    "reconnecting client: {} of {n} messages, then {e:?}",
                    out.len()
                ),
            }
        }
        let id = sse.last_event_id().to_string();
        last = (!id.is_empty()).then_some(id);
        drop(sse);
        reconnects += 1;
        if rng.chance(30) {
            // Away for a while: more is written meanwhile (a choice of scenario, not a wait);
            // now and then longer than the overlap window.
            let away = if rng.chance(10) {
                rng.range(4500, 6000)
            } else {
                rng.range(50, 800)
            };
            tokio::time::sleep(Duration::from_millis(away)).await;
        }
    }
    let mut sse = Sse::subscribe(&base, &[channel], last.as_deref()).await;
    match sse.next_event(Duration::from_millis(5 * INTERVAL_MS)).await {
        Err(End::Timeout) => {}
        Ok(ev) if ev.event == "mode" => {
            sse.expect_no_event(Duration::from_millis(5 * INTERVAL_MS))
                .await
        }
        other => panic!("after all {n} messages: {other:?}"),
    }
    (out, reconnects)
}

/// Reads from `sse`, then keeps closing the connection after a random few messages and
/// resuming with the last event id, until it has the `target` number of messages (known once
/// the writer stopped). Returns the messages and the number of reconnects.
async fn read_reconnecting_until(
    base: String,
    mut sse: Sse,
    mut target: tokio::sync::watch::Receiver<Option<usize>>,
    mut rng: Rng,
) -> (Vec<Ev>, u32) {
    let mut out: Vec<Ev> = Vec::new();
    let mut reconnects = 0;
    loop {
        for _ in 0..rng.range(1, 25) {
            if target.borrow().is_some_and(|t| out.len() >= t) {
                return (out, reconnects);
            }
            tokio::select! {
                ev = next_data(&mut sse) => match ev {
                    Ok(ev) => out.push(ev),
                    Err(e) => panic!("reconnecting client: {} messages, then {e:?}", out.len()),
                },
                // The writer stopped: the target is known.
                _ = target.changed() => {}
            }
        }
        let id = sse.last_event_id().to_string();
        drop(sse);
        reconnects += 1;
        sse = Sse::subscribe(&base, &["logs:w1"], (!id.is_empty()).then_some(id.as_str())).await;
    }
}

fn assert_exactly(who: &str, evs: &[Ev], expected: &HashSet<String>) {
    let mut seen = HashMap::new();
    for ev in evs {
        *seen.entry(key(ev)).or_insert(0) += 1;
    }
    let dups: Vec<_> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(k, _)| k.clone())
        .collect();
    let missing: Vec<_> = expected
        .iter()
        .filter(|k| !seen.contains_key(*k))
        .cloned()
        .collect();
    assert!(
        dups.is_empty() && missing.is_empty(),
        "{who}: duplicated {dups:?}, missing {missing:?}"
    );
    assert_eq!(evs.len(), expected.len(), "{who}");
    assert_ids_increase(evs);
}

async fn out_of_order(test: &str, history: &str, expect_catch_ups: bool) {
    let Some(mongo) = standalone(test).await else {
        return;
    };
    let seed = seed(test);
    let gw = start_gateway(
        &mongo,
        &vars(&[
            ("SSE_POLL_OVERLAP_MS", "4000"),
            // Unsettled polls, so that out-of-order commits arrive late: the late-document
            // machinery is what these tests exercise (settled, only slow commits are late).
            ("SSE_POLL_SETTLE_MS", "0"),
            ("SSE_HISTORY_EVENTS", history),
        ]),
    )
    .await;
    let base = base_url(&gw);
    let n = WRITERS * PER_WRITER;
    let mut readers = Vec::new();
    for channel in ["logs:w1", "logs"] {
        let sse = Sse::subscribe(&base, &[channel], None).await;
        readers.push(tokio::spawn(
            async move { (read_connected(sse, n).await, 0) },
        ));
    }
    // Reconnecting clients start before the writers, so every document is theirs to get.
    let mut firsts = Vec::new();
    for (i, channel) in ["logs:w1", "logs", "logs:w1", "logs"]
        .into_iter()
        .enumerate()
    {
        let sse = Sse::subscribe(&base, &[channel], None).await;
        firsts.push((i, channel, sse));
    }
    for (i, channel, mut sse) in firsts {
        let base = base.clone();
        let mut rng = Rng::new(seed.wrapping_add(100 + i as u64));
        readers.push(tokio::spawn(async move {
            // The first connection reads a few, then the client starts reconnecting.
            let mut out = Vec::new();
            for _ in 0..rng.range(1, 10) {
                out.push(next_data(&mut sse).await.expect("first connection"));
            }
            let id = sse.last_event_id().to_string();
            drop(sse);
            let (rest, reconnects) =
                read_reconnecting(base, channel, Some(id), n - out.len(), rng).await;
            out.extend(rest);
            (out, reconnects + 1)
        }));
    }
    let expected = out_of_order_writers(&mongo, seed).await;
    assert_eq!(expected.len(), n);
    let mut late = 0;
    for (i, r) in readers.into_iter().enumerate() {
        let (evs, reconnects) = within(Duration::from_secs(120), "a reader", r)
            .await
            .expect("reader");
        assert_exactly(
            &format!("client {i} ({reconnects} reconnects)"),
            &evs,
            &expected,
        );
        if i == 0 {
            // Documents that committed after one with a newer `_id`: their position counts them.
            late = evs
                .iter()
                .filter(|e| position(&e.id).polling().is_some_and(|c| c.late() > 0))
                .count();
        }
    }
    eprintln!(
        "{test}: {late} documents arrived after a newer _id; catch-ups {}",
        Stats::get(&gw.hub.stats.catchups_started)
    );
    assert!(
        late > 0,
        "the writers did not produce a single out-of-order commit (seed {seed})"
    );
    let catch_ups = Stats::get(&gw.hub.stats.catchups_started);
    assert_eq!(
        catch_ups > 0,
        expect_catch_ups,
        "{catch_ups} catch-ups (seed {seed})"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn out_of_order_writers_lose_nothing_from_memory() {
    out_of_order("poll_ooo_ring", "10000", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn out_of_order_writers_lose_nothing_through_catch_ups() {
    out_of_order("poll_ooo_catchup", "8", true).await;
}

// ---------------------------------------------------------------------------------------------
// Load: one query per source per interval, whatever the number of clients

/// Finds MongoDB answered per poll over `polls` poll intervals, counting intervals with the
/// gateway's own `source_stats.poll.polls`.
async fn finds_per_poll(mongo: &Mongo, gw: &Gateway, polls: u64) -> (u64, i64) {
    let counter = &gw.source_stats.poll.polls;
    let p0 = Stats::get(counter);
    let q0 = finds(mongo).await;
    eventually(WAIT, &format!("{polls} polls"), || {
        (Stats::get(counter) >= p0 + polls).then_some(())
    })
    .await;
    let q1 = finds(mongo).await;
    let p1 = Stats::get(counter);
    (p1 - p0, q1 - q0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_clients_cost_the_same_queries_as_one() {
    let Some(mongo) = standalone("poll_load").await else {
        return;
    };
    let gw = start_gateway(
        &mongo,
        &vars(&[
            ("SSE_CONNECT_RATE_PER_IP", "0"),
            ("SSE_CONNECT_RATE_PER_SUBJECT", "0"),
            ("SSE_MAX_CONNECTIONS_PER_SUBJECT", "100000"),
            ("SSE_HEARTBEAT_SECS", "3600"),
        ]),
    )
    .await;
    let base = base_url(&gw);
    const POLLS: u64 = 20;

    let mut first = Sse::subscribe(&base, &["logs:w1"], None).await;
    expect_mode(&mut first).await;
    let mut clients = vec![first];
    mongo.insert("w1", "f1", 0).await;
    assert_eq!(seqs(&data(&mut clients[0], 1).await), vec![0]);
    let (polls_1, finds_1) = finds_per_poll(&mongo, &gw, POLLS).await;

    let more: Vec<Sse> = futures::stream::iter(1..1000)
        .map(|i| {
            let base = base.clone();
            async move {
                let channel = format!("logs:w1:f{}", i % 50);
                let mut sse =
                    Sse::subscribe(&base, &["logs:w1", channel.as_str()][..1 + i % 2], None).await;
                expect_mode(&mut sse).await;
                sse
            }
        })
        .buffer_unordered(50)
        .collect()
        .await;
    clients.extend(more);
    assert_eq!(Stats::get(&gw.hub.stats.connections_open), 1000);
    mongo.insert("w1", "f1", 1).await;
    for c in clients.iter_mut() {
        assert_eq!(seqs(&data(c, 1).await), vec![1]);
    }
    let (polls_1000, finds_1000) = finds_per_poll(&mongo, &gw, POLLS).await;
    eprintln!(
        "1 client: {finds_1} finds in {polls_1} polls; 1000 clients: {finds_1000} finds in {polls_1000} polls"
    );
    // Two sources (`logs` and the publish API's events collection), one find each per poll.
    // The counters are read a moment apart, so a poll in flight at either end may be counted
    // on one side only.
    const SOURCES: i64 = 2;
    for (clients, polls, found) in [(1, polls_1, finds_1), (1000, polls_1000, finds_1000)] {
        assert!(
            (found - SOURCES * polls as i64).abs() <= 2 * SOURCES,
            "{clients} clients: {found} finds in {polls} polls"
        );
    }
    assert!(
        (finds_1000 - finds_1).abs() <= 3 * SOURCES,
        "{finds_1} vs {finds_1000}"
    );
    drop(clients);
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Switching modes at run time

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn auto_mode_switches_both_ways_mid_stream_losing_nothing() {
    let mongo = Mongo::start("poll_switch").await;
    let app = unique_name("gwsw");
    // A user without the changeStream privilege: the gateway's aggregates fail with 13.
    unauthorized(&mongo, &app, &["aggregate"]).await;
    let gw = start_gateway_named(&mongo, &app, &vars(&[])).await;
    let base = base_url(&gw);
    assert_eq!(
        gw.hub.mode(),
        Some(Mode::Polling {
            interval_ms: INTERVAL_MS
        })
    );
    assert_eq!(Stats::get(&gw.source_stats.switches), 1);

    let mut sse = Sse::subscribe(&base, &["logs:w1"], None).await;
    assert_eq!(expect_mode(&mut sse).await.1, polling_json());
    // Two more clients keep reconnecting with their last id throughout the switches.
    let (target_tx, target) = tokio::sync::watch::channel(None);
    let seed = seed("poll_switch");
    let mut reconnecting = Vec::new();
    for i in 0..2 {
        let first = Sse::subscribe(&base, &["logs:w1"], None).await;
        let (base, target) = (base.clone(), target.clone());
        let rng = Rng::new(seed.wrapping_add(i));
        reconnecting.push(tokio::spawn(read_reconnecting_until(
            base, first, target, rng,
        )));
    }
    let writer = Writer::spawn(mongo.logs(), Duration::from_millis(15));
    let mut got = data(&mut sse, 10).await;

    // The privilege is granted: back to change streams within a probe interval.
    assert!(
        fail_point_off(&mongo).await > 0,
        "the fail point never fired"
    );
    let (evs, mode) = until_mode(&mut sse).await;
    got.extend(evs);
    assert_eq!(json_of(&mode), json!({"mode": "change_stream"}));
    assert_eq!(position(&mode.id).kind(), PositionKind::ChangeStream);
    assert_eq!(gw.hub.mode(), Some(Mode::ChangeStream));
    let after_back = got.len();
    got.extend(data(&mut sse, 10).await);
    assert!(got[after_back..]
        .iter()
        .all(|e| position(&e.id).kind() == PositionKind::ChangeStream));

    // Revoked while streaming: the getMore fails, so does the reopen; polling again.
    unauthorized(&mongo, &app, &["getMore", "aggregate"]).await;
    let (evs, mode) = until_mode(&mut sse).await;
    got.extend(evs);
    assert_eq!(json_of(&mode), polling_json());
    // The end of the stream's last second, counting one late batch (see
    // `leaving_right_after_a_switch_to_polling_repeats_nothing_elsewhere`).
    let start = position(&mode.id);
    assert_eq!(start.kind(), PositionKind::Polling);
    assert_eq!(start.polling().map(|c| c.late()), Some(1), "{}", mode.id);
    let after_poll = got.len();
    got.extend(data(&mut sse, 10).await);
    assert!(got[after_poll..]
        .iter()
        .all(|e| position(&e.id).kind() == PositionKind::Polling));

    let written = writer.stop().await;
    let rest = data(&mut sse, (written as usize).saturating_sub(got.len())).await;
    got.extend(rest);
    assert_eq!(
        seqs(&got),
        (0..written).collect::<Vec<_>>(),
        "lost or repeated across the switches"
    );
    assert_ids_increase(&got);
    sse.expect_no_event(Duration::from_millis(5 * INTERVAL_MS))
        .await;
    target_tx.send_replace(Some(written as usize));
    for (i, r) in reconnecting.into_iter().enumerate() {
        let (evs, reconnects) = within(Duration::from_secs(120), "a reconnecting client", r)
            .await
            .expect("reconnecting client");
        assert_eq!(
            seqs(&evs),
            (0..written).collect::<Vec<_>>(),
            "reconnecting client {i} ({reconnects} reconnects, seed {seed})"
        );
    }
    assert_eq!(Stats::get(&gw.source_stats.switches), 3);
    fail_point_off(&mongo).await;
    gw.shutdown().await;
}

/// Found by the chaos soak (seed 2026, 40 minutes: defect 10): a gateway restarted and nine
/// seconds later switched to polling. Its poller re-read the overlap window and delivered what
/// the change stream had not sent — including what was committed before the gateway started,
/// which every connection already had: a second of documents twice, on every reader. (The
/// `_id`s are a few seconds old here, as a writer's are whose insert was in flight.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_switch_to_polling_soon_after_start_sends_nothing_from_before_the_start() {
    let mongo = Mongo::start("poll_switch_fresh").await;
    let before = (ObjectId::new().timestamp().timestamp_millis() / 1000) as u32 - 3;
    for seq in 1..=5u8 {
        let id = oid_in(before, 0x20, seq);
        mongo
            .logs()
            .insert_one(log_at(id, i64::from(seq)))
            .await
            .unwrap();
    }
    let app = unique_name("gwsf");
    let gw = start_gateway_named(&mongo, &app, &vars(&[])).await;
    assert_eq!(gw.hub.mode(), Some(Mode::ChangeStream));
    let mut sse = Sse::subscribe(&base_url(&gw), &["logs:w1"], None).await;
    mongo.insert("w1", "f1", 6).await;
    assert_eq!(seqs(&data(&mut sse, 1).await), [6]);

    unauthorized(&mongo, &app, &["getMore", "aggregate"]).await;
    let (more, _mode) = until_mode(&mut sse).await;
    assert!(more.is_empty(), "{more:?}");
    mongo.insert("w1", "f1", 7).await;
    assert_eq!(
        seqs(&data(&mut sse, 1).await),
        [7],
        "the poller sent what was committed before the gateway started"
    );
    fail_point_off(&mongo).await;
    gw.shutdown().await;
}

/// Found by the chaos soak (seed 77, 4 minutes): a reader left a gateway right after its
/// switch to polling, with the `mode` event's id — then the poller's start, "every document
/// up to the first `_id` of the change stream's last second" — and resumed on a polling
/// gateway, which sent again the documents of that second the change stream had delivered.
/// (The earlier code failed this whenever the switch fell in the second of the inserts.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leaving_right_after_a_switch_to_polling_repeats_nothing_elsewhere() {
    let mongo = Mongo::start("poll_switch_leave").await;
    let app_a = unique_name("gwsla");
    let a = start_gateway_named(&mongo, &app_a, &vars(&[])).await;
    let b = start_gateway(&mongo, &vars(&[("SSE_MODE", "polling")])).await;
    let (base_a, base_b) = (base_url(&a), base_url(&b));
    assert_eq!(a.hub.mode(), Some(Mode::ChangeStream));
    let mut on_a = Sse::subscribe(&base_a, &["logs:w1"], None).await;
    for seq in 1..=5 {
        mongo.insert("w1", "f1", seq).await;
    }
    assert_eq!(seqs(&data(&mut on_a, 5).await), [1, 2, 3, 4, 5]);
    unauthorized(&mongo, &app_a, &["getMore", "aggregate"]).await;
    let (more, mode) = until_mode(&mut on_a).await;
    assert!(more.is_empty(), "{more:?}");
    let left = on_a.last_event_id().to_string();
    assert_eq!(left, mode.id);
    drop(on_a);
    let switched_at = position(&left)
        .polling()
        .and_then(|c| c.high())
        .map(|h| (h.timestamp().timestamp_millis() / 1000) as u32)
        .expect("a polling cursor");

    // B: none of 1..=5 again (a `late_order_unknown` gap may say that documents committed
    // after A's switch, up to its cursor, could be missing), then what is new.
    let mut on_b = Sse::subscribe(&base_b, &["logs:w1"], Some(&left)).await;
    let six = oid_in(switched_at + 1, 0x10, 6);
    mongo.logs().insert_one(log_at(six, 6)).await.unwrap();
    let mut got = Vec::new();
    while !got.contains(&6) {
        match within(WAIT, "B's stream", on_b.next_event(WAIT)).await {
            Ok(ev) if ev.event == "message" => got.push(ev.seq()),
            Ok(ev) if ev.event == "mode" => {}
            Ok(ev) if ev.event == "gap" => {
                assert_eq!(json_of(&ev)["reason"], "late_order_unknown", "{ev:?}");
                // Not B's head, if that lags: a reconnect elsewhere would repeat from there.
                let cursor = |id: &str| position(id).polling().and_then(|c| c.high());
                assert_eq!(
                    cursor(&ev.id),
                    cursor(&left),
                    "the gap's id keeps A's cursor"
                );
            }
            other => panic!("B: {other:?}"),
        }
    }
    assert_eq!(
        got,
        [6],
        "B sent again what A's change stream had delivered"
    );
    fail_point_off(&mongo).await;
    a.shutdown().await;
    b.shutdown().await;
}

/// Found by the chaos soak (`crates/soak`, seed 21 with only the change-streams-unavailable
/// fault): change stream, polling, change stream, polling again, all within one overlap
/// window. The last poller starts from what the gateway remembers as delivered — what the
/// change stream just sent and what the previous poller sent — and re-read the documents the
/// *first* change stream had delivered, which were still inside its window: every connected
/// client got them twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn switching_back_and_forth_within_one_window_repeats_nothing() {
    let mongo = Mongo::start("poll_flipflop").await;
    let app = unique_name("gwff");
    let gw = start_gateway_named(&mongo, &app, &vars(&[])).await;
    let base = base_url(&gw);
    assert_eq!(gw.hub.mode(), Some(Mode::ChangeStream));
    let mut sse = Sse::subscribe(&base, &["logs:w1"], None).await;
    let writer = Writer::spawn(mongo.logs(), Duration::from_millis(15));
    let mut got = data(&mut sse, 10).await;
    for (i, to_polling) in [true, false, true].into_iter().enumerate() {
        if to_polling {
            unauthorized(&mongo, &app, &["getMore", "aggregate"]).await;
        } else {
            fail_point_off(&mongo).await;
        }
        let (evs, mode) = until_mode(&mut sse).await;
        got.extend(evs);
        let want = if to_polling {
            polling_json()
        } else {
            json!({"mode": "change_stream"})
        };
        assert_eq!(json_of(&mode), want, "switch {i}");
        got.extend(data(&mut sse, 10).await);
    }
    let written = writer.stop().await;
    let rest = data(&mut sse, (written as usize).saturating_sub(got.len())).await;
    got.extend(rest);
    assert_eq!(
        seqs(&got),
        (0..written).collect::<Vec<_>>(),
        "lost or repeated across three switches within one window"
    );
    sse.expect_no_event(Duration::from_millis(5 * INTERVAL_MS))
        .await;
    fail_point_off(&mongo).await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cross_mode_resume_is_exact_from_memory_and_a_gap_beyond() {
    let mongo = Mongo::start("poll_cross").await;
    let app = unique_name("gwx");
    let gw = start_gateway_named(&mongo, &app, &vars(&[("SSE_HISTORY_EVENTS", "8")])).await;
    let base = base_url(&gw);
    assert_eq!(gw.hub.mode(), Some(Mode::ChangeStream));
    let mut observer = Sse::subscribe(&base, &["logs:w1"], None).await;
    let mut all = Vec::new();
    for seq in 0..3 {
        mongo.insert("w1", "f1", seq).await;
    }
    all.extend(data(&mut observer, 3).await);
    let cs_id = all[1].id.clone();
    assert_eq!(position(&cs_id).kind(), PositionKind::ChangeStream);

    unauthorized(&mongo, &app, &["getMore", "aggregate"]).await;
    let (evs, mode) = until_mode(&mut observer).await;
    assert!(evs.is_empty());
    assert_eq!(json_of(&mode), polling_json());
    for seq in 3..5 {
        mongo.insert("w1", "f1", seq).await;
    }
    all.extend(data(&mut observer, 2).await);
    let p_id = all[3].id.clone();
    assert_eq!(position(&p_id).kind(), PositionKind::Polling);

    // A change-stream id while polling, memory covering it: exact.
    let mut r = Sse::subscribe(&base, &["logs:w1"], Some(&cs_id)).await;
    assert_eq!(expect_mode(&mut r).await.1, polling_json());
    assert_eq!(seqs(&data(&mut r, 3).await), vec![2, 3, 4]);
    r.expect_no_event(Duration::from_millis(5 * INTERVAL_MS))
        .await;
    drop(r);

    fail_point_off(&mongo).await;
    let (evs, mode) = until_mode(&mut observer).await;
    assert!(evs.is_empty());
    assert_eq!(json_of(&mode), json!({"mode": "change_stream"}));
    for seq in 5..7 {
        mongo.insert("w1", "f1", seq).await;
    }
    all.extend(data(&mut observer, 2).await);

    // A polling id after switching back, memory covering it: exact, no `mode` frame first.
    let mut r = Sse::subscribe(&base, &["logs:w1"], Some(&p_id)).await;
    assert_eq!(seqs(&data(&mut r, 3).await), vec![4, 5, 6]);
    r.expect_no_event(Duration::from_millis(5 * INTERVAL_MS))
        .await;
    drop(r);

    // Past memory (the ring holds 8): the polling id can no longer be placed: a `gap`.
    for seq in 7..17 {
        mongo.insert("w1", "f1", seq).await;
    }
    all.extend(data(&mut observer, 10).await);
    let mut r = Sse::subscribe(&base, &["logs:w1"], Some(&p_id)).await;
    let gap = match r.next(WAIT).await {
        Ok(Item::Event(ev)) if ev.event == "gap" => ev,
        other => panic!("expected a gap, got {other:?}"),
    };
    let body = json_of(&gap);
    assert_eq!(body["reason"], "mode_changed");
    assert_eq!(body["last_event_id"], p_id.as_str());
    assert_eq!(body["resumed_at"], gap.id.as_str());
    r.expect_no_event(Duration::from_millis(5 * INTERVAL_MS))
        .await;
    mongo.insert("w1", "f1", 17).await;
    all.extend(data(&mut observer, 1).await);
    assert_eq!(seqs(&data(&mut r, 1).await), vec![17]);
    assert!(Stats::get(&gw.hub.stats.gaps_sent) >= 1);

    // A change-stream id from before both switches: MongoDB's oplog still has everything.
    let mut r = Sse::subscribe(&base, &["logs:w1"], Some(&cs_id)).await;
    assert_eq!(seqs(&data(&mut r, 16).await), (2..18).collect::<Vec<_>>());
    r.expect_no_event(Duration::from_millis(5 * INTERVAL_MS))
        .await;

    // A polling id from a gateway watching other collections: 400, not a gap.
    let foreign = format!(
        "p.{:08X}.{}.0",
        sources_fingerprint(["audit"]),
        ObjectId::new().to_hex().to_uppercase()
    );
    let e = Sse::open(
        &base,
        &stream_path(&["logs:w1"], None, None),
        Some(&foreign),
    )
    .await
    .err()
    .expect("a foreign polling id is refused");
    assert_json_4xx("a foreign polling id while on change streams", &e);
    assert_eq!(seqs(&all), (0..18).collect::<Vec<_>>());
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn foreign_and_other_mode_ids_while_polling() {
    let Some(mongo) = standalone("poll_ids").await else {
        return;
    };
    let gw = start_gateway(&mongo, &vars(&[])).await;
    let base = base_url(&gw);
    let path = stream_path(&["logs:w1"], None, None);
    let oid = ObjectId::new().to_hex().to_uppercase();
    let foreign = format!("p.{:08X}.{oid}.0", sources_fingerprint(["audit"]));
    for (what, id) in [
        ("a polling id of other collections", foreign.as_str()),
        (
            "a lowercase polling id",
            &*format!(
                "p.{:08X}.{}.0",
                sources_fingerprint(["logs", "sse_events"]),
                oid.to_lowercase()
            ),
        ),
        ("a polling id with four parts", "p.00000000.-.0.1"),
        ("a truncated polling id", "p.0000"),
    ] {
        let e = Sse::open(&base, &path, Some(id))
            .await
            .err()
            .unwrap_or_else(|| panic!("{what} accepted"));
        assert_json_4xx(what, &e);
    }
    // A change-stream id while polling from the start: nothing to place it in, a `gap`.
    let mut observer = Sse::subscribe(&base, &["logs:w1"], None).await;
    expect_mode(&mut observer).await;
    mongo.insert("w1", "f1", 0).await;
    mongo.insert("w1", "f1", 1).await;
    assert_eq!(seqs(&data(&mut observer, 2).await), vec![0, 1]);
    let cs = "c.8265A1B2C3000000012B022C0100296E5A1004";
    let mut r = Sse::subscribe(&base, &["logs:w1"], Some(cs)).await;
    assert_eq!(expect_mode(&mut r).await.1, polling_json());
    let gap = match r.next(WAIT).await {
        Ok(Item::Event(ev)) if ev.event == "gap" => json_of(&ev),
        other => panic!("expected a gap, got {other:?}"),
    };
    assert_eq!(gap["reason"], "mode_changed");
    mongo.insert("w1", "f1", 2).await;
    assert_eq!(seqs(&data(&mut r, 1).await), vec![2]);
    // A polling id of this gateway's own collections with no cursor yet resumes from the start.
    let mut s = Sse::subscribe(
        &base,
        &["logs:w1"],
        Some(&format!(
            "p.{:08X}.-.0",
            sources_fingerprint(["logs", "sse_events"])
        )),
    )
    .await;
    expect_mode(&mut s).await;
    assert_eq!(seqs(&data(&mut s, 3).await), vec![0, 1, 2]);
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Forced modes and transient errors

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forced_change_stream_mode_never_polls_on_a_standalone() {
    let Some(mongo) = standalone("poll_forced_cs").await else {
        return;
    };
    let gw = start_unready(&mongo, &mongo.uri, &vars(&[("SSE_MODE", "change_stream")])).await;
    let base = base_url(&gw);
    let why = eventually(WAIT, "the source to report why it is down", || {
        match gw.hub.state() {
            SourceState::Down(why) => Some(why),
            _ => None,
        }
    })
    .await;
    assert!(
        why.contains("40573") || why.to_lowercase().contains("replica set"),
        "{why}"
    );
    // Several reconnection rounds (a chosen length for a negative check): never ready, never
    // polling.
    for _ in 0..10 {
        let r = get(&base, "/readyz", &[]).await;
        assert_eq!(r.status, 503, "{}", r.body);
        assert!(r.body.contains("change feed down"), "{}", r.body);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(gw.hub.mode(), None);
    assert_eq!(Stats::get(&gw.source_stats.poll.polls), 0);
    assert_eq!(Stats::get(&gw.source_stats.switches), 0);
    let e = Sse::open(&base, &stream_path(&["logs:w1"], None, None), None)
        .await
        .err()
        .expect("not ready");
    // An EventSource is told to come back (a busy stream), anything else gets the JSON 503.
    assert_eq!(
        e.busy().expect("a busy stream")["reason"],
        "not_ready",
        "{}",
        e.body
    );
    let r = get(&base, &stream_path(&["logs:w1"], None, None), &[]).await;
    assert_eq!(r.status, 503, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).expect("a JSON body");
    assert_eq!(v["error"], "not_ready", "{v}");
    assert!(r.headers.contains_key("retry-after"));
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forced_polling_mode_polls_a_replica_set() {
    let mongo = Mongo::start("poll_forced_poll").await;
    let gw = start_gateway(&mongo, &vars(&[("SSE_MODE", "polling")])).await;
    let base = base_url(&gw);
    assert_eq!(
        gw.hub.mode(),
        Some(Mode::Polling {
            interval_ms: INTERVAL_MS
        })
    );
    let mut sse = Sse::subscribe(&base, &["logs:w1"], None).await;
    assert_eq!(expect_mode(&mut sse).await.1, polling_json());
    for seq in 0..5 {
        mongo.insert("w1", "f1", seq).await;
    }
    let evs = data(&mut sse, 5).await;
    assert_eq!(seqs(&evs), (0..5).collect::<Vec<_>>());
    assert!(evs
        .iter()
        .all(|e| position(&e.id).kind() == PositionKind::Polling));
    // Past a probe interval (a chosen length for a negative check): still polling, no probe.
    let polls = Stats::get(&gw.source_stats.poll.polls);
    eventually(WAIT, "two probe intervals of polls", || {
        (Stats::get(&gw.source_stats.poll.polls) >= polls + 20).then_some(())
    })
    .await;
    sse.expect_no_event(Duration::from_millis(5 * INTERVAL_MS))
        .await;
    assert_eq!(
        gw.hub.mode(),
        Some(Mode::Polling {
            interval_ms: INTERVAL_MS
        })
    );
    assert_eq!(Stats::get(&gw.source_stats.switches), 0);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transient_errors_do_not_switch_to_polling() {
    let mongo = Mongo::start("poll_transient").await;
    let app = unique_name("gwtr");
    // State-change errors (10107, 91, 11600) make the driver re-check the server before its
    // next command: check often, so each recovery takes a moment rather than 10 s.
    let uri = format!("{}&heartbeatFrequencyMS=500", mongo.uri_with_app_name(&app));
    let gw = start_unready(&mongo, &uri, &vars(&[])).await;
    let base = base_url(&gw);
    wait_ready(&base).await;
    assert_eq!(gw.hub.mode(), Some(Mode::ChangeStream));
    let mut sse = Sse::subscribe(&base, &["logs:w1"], None).await;
    let mut seq = 0;
    let mut got = Vec::new();
    let faults = [
        // Dropped connections under the change stream's getMore: the driver resumes.
        doc! {"failCommands": ["getMore"], "closeConnection": true, "appName": &app},
        // A step-down: NotWritablePrimary on getMore and on the reopen.
        doc! {"failCommands": ["getMore", "aggregate"], "errorCode": 10107, "appName": &app},
        // Shutting down, then interrupted.
        doc! {"failCommands": ["getMore", "aggregate"], "errorCode": 91, "appName": &app},
        doc! {"failCommands": ["getMore", "aggregate"], "errorCode": 11600, "appName": &app},
    ];
    for data_doc in faults {
        mongo
            .fail_point(doc! {"configureFailPoint": "failCommand", "mode": {"times": 3}, "data": data_doc.clone()})
            .await;
        // One at a time: each document needs a getMore issued after the fail point was set.
        for _ in 0..5 {
            mongo.insert("w1", "f1", seq).await;
            seq += 1;
            got.extend(data(&mut sse, 1).await);
        }
        assert!(fail_point_off(&mongo).await > 0, "{data_doc} never fired");
    }
    assert_eq!(seqs(&got), (0..seq).collect::<Vec<_>>());
    sse.expect_no_event(Duration::from_millis(5 * INTERVAL_MS))
        .await;
    assert_eq!(gw.hub.mode(), Some(Mode::ChangeStream));
    assert_eq!(Stats::get(&gw.source_stats.switches), 0);
    assert_eq!(Stats::get(&gw.source_stats.poll.polls), 0);
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Hardening

/// #3: writes made while a polling gateway restarts used to be lost for every client resuming
/// with its id (the new poller counted its first window as delivered, and the catch-up left
/// those documents out as "still to come live"). Now the catch-up sends them, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_during_a_polling_restart_reach_resuming_clients() {
    let Some(mongo) = standalone("poll_restart").await else {
        return;
    };
    let gw = start_gateway(&mongo, &vars(&[])).await;
    let base = base_url(&gw);
    let mut sse = Sse::subscribe(&base, &["logs:w1"], None).await;
    expect_mode(&mut sse).await;
    mongo.insert("w1", "f1", 0).await;
    let last = data(&mut sse, 1).await.remove(0).id;
    drop(sse);
    gw.shutdown().await;

    // Twenty writes while no gateway polls, inside the next gateway's overlap window.
    for seq in 1..=20 {
        mongo.insert("w1", "f1", seq).await;
    }
    let gw = start_gateway(&mongo, &vars(&[])).await;
    let base = base_url(&gw);
    let mut resumed = Sse::subscribe(&base, &["logs:w1"], Some(&last)).await;
    expect_mode(&mut resumed).await;
    let got = data(&mut resumed, 20).await;
    assert_eq!(seqs(&got), (1..=20).collect::<Vec<_>>());
    assert_ids_increase(&got);
    // A client without an id starts from now, and both continue live, once.
    let mut fresh = Sse::subscribe(&base, &["logs:w1"], None).await;
    expect_mode(&mut fresh).await;
    mongo.insert("w1", "f1", 21).await;
    assert_eq!(seqs(&data(&mut resumed, 1).await), vec![21]);
    assert_eq!(seqs(&data(&mut fresh, 1).await), vec![21]);
    for s in [&mut resumed, &mut fresh] {
        s.expect_no_event(Duration::from_millis(5 * INTERVAL_MS))
            .await;
    }
    gw.shutdown().await;
}

/// #4: one document from a writer whose clock runs an hour ahead used to stop live polling
/// until the clock caught up (the cursor jumped an hour, and every normal insert was below
/// its window). Now it is delivered, and so is everything after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_future_dated_object_id_does_not_stop_polling() {
    let Some(mongo) = standalone("poll_future").await else {
        return;
    };
    let gw = start_gateway(&mongo, &vars(&[])).await;
    let base = base_url(&gw);
    let mut sse = Sse::subscribe(&base, &["logs:w1"], None).await;
    expect_mode(&mut sse).await;
    let hour_ahead = bson::oid::ObjectId::from_bytes({
        let mut b = bson::oid::ObjectId::new().bytes();
        let secs = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) + 3600;
        b[..4].copy_from_slice(&secs.to_be_bytes());
        b
    });
    let mut doc = log_doc("w1", "f1", 0);
    doc.insert("_id", hour_ahead);
    mongo.logs().insert_one(doc).await.unwrap();
    assert_eq!(seqs(&data(&mut sse, 1).await), vec![0]);
    for seq in 1..=5 {
        mongo.insert("w1", "f1", seq).await;
    }
    let got = data(&mut sse, 5).await;
    assert_eq!(seqs(&got), (1..=5).collect::<Vec<_>>());
    assert_ids_increase(&got);
    // And a resume from the future document's id misses nothing after it.
    let mut resumed = Sse::subscribe(&base, &["logs:w1"], Some(&got[0].id)).await;
    expect_mode(&mut resumed).await;
    assert_eq!(seqs(&data(&mut resumed, 4).await), vec![2, 3, 4, 5]);
    sse.expect_no_event(Duration::from_millis(5 * INTERVAL_MS))
        .await;
    gw.shutdown().await;
}

/// #5: a forged `p.<fingerprint>.-.0` (the fingerprint is in every id a client sees) used to
/// read the whole collection into memory for one request. Now a polling catch-up replays at
/// most 10 000 documents and a position further behind gets a `gap`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forged_polling_id_from_the_beginning_is_a_gap_not_the_collection() {
    let Some(mongo) = standalone("poll_forged").await else {
        return;
    };
    let gw = start_gateway(&mongo, &vars(&[("SSE_HISTORY_EVENTS", "10")])).await;
    let base = base_url(&gw);
    for chunk in 0..11 {
        let docs = (0..1000)
            .map(|i| log_doc("w1", "f1", chunk * 1000 + i))
            .collect();
        mongo.insert_many(docs).await;
    }
    eventually(WAIT, "the poller to deliver all 11 000", || {
        (Stats::get(&gw.hub.stats.events_published) >= 11_000).then_some(())
    })
    .await;
    let forged = format!("p.{:08X}.-.0", sources_fingerprint(["logs", "sse_events"]));
    let mut r = Sse::subscribe(&base, &["logs:w1"], Some(&forged)).await;
    expect_mode(&mut r).await;
    let gap = r.next_event(WAIT).await.unwrap();
    assert_eq!(gap.event, "gap", "{gap:?}");
    let v = json_of(&gap);
    assert_eq!(v["reason"], "too_far_behind", "{v}");
    mongo.insert("w1", "f1", 99_999).await;
    assert_eq!(seqs(&data(&mut r, 1).await), vec![99_999]);
    gw.shutdown().await;
}

/// Hardening #5: every poll used to read the whole overlap window's documents (396 MB of RSS
/// while 200 000 documents were inserted with no client connected). Now a poll reads the
/// window's `_id`s and fetches whole documents only for the ones it has not seen: over many
/// polls of a window holding thousands, the documents read are exactly the new ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poll_fetches_only_new_documents_not_the_whole_window() {
    let mongo = Mongo::start("poll_ids_only").await;
    const BEFORE: i64 = 3000;
    const LIVE: i64 = 500;
    // Already stored when the gateway starts: its first window, counted as delivered.
    mongo
        .insert_many((0..BEFORE).map(|seq| log_doc("w1", "f1", seq)).collect())
        .await;
    // A ten-minute window: every document stays in it for the whole test.
    let gw = start_gateway(
        &mongo,
        &vars(&[("SSE_MODE", "polling"), ("SSE_POLL_OVERLAP_MS", "600000")]),
    )
    .await;
    let stats = &gw.source_stats.poll;
    let mut sse = Sse::subscribe(&base_url(&gw), &["logs:w1"], None).await;
    expect_mode(&mut sse).await;

    mongo
        .insert_many(
            (BEFORE..BEFORE + LIVE)
                .map(|seq| log_doc("w1", "f1", seq))
                .collect(),
        )
        .await;
    let got = data(&mut sse, LIVE as usize).await;
    assert_eq!(seqs(&got), (BEFORE..BEFORE + LIVE).collect::<Vec<_>>());
    assert_ids_increase(&got);

    // Several more polls re-read the window (now 3500 `_id`s), and find nothing new.
    let polls = Stats::get(&stats.polls);
    let scanned = Stats::get(&stats.ids_scanned);
    eventually(WAIT, "five more polls", || {
        (Stats::get(&stats.polls) >= polls + 5).then_some(())
    })
    .await;
    sse.expect_no_event(Duration::from_millis(2 * INTERVAL_MS))
        .await;
    let found = Stats::get(&stats.documents_found);
    let fetched = Stats::get(&stats.documents_fetched);
    eprintln!(
        "{found} found, {fetched} fetched, {} ids scanned in {} polls",
        Stats::get(&stats.ids_scanned) - scanned,
        Stats::get(&stats.polls) - polls
    );
    assert!(
        Stats::get(&stats.ids_scanned) - scanned >= 4 * (BEFORE + LIVE) as u64,
        "each poll re-reads the window's ids"
    );
    assert_eq!(found, LIVE as u64);
    assert_eq!(
        fetched, found,
        "whole documents were read for documents already delivered"
    );
    gw.shutdown().await;
}

/// The next `n` data messages, skipping `mode` events (a `gap` fails the test).
async fn read_connected_n(sse: &mut Sse, n: usize) -> Vec<Ev> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match next_data(sse).await {
            Ok(ev) => out.push(ev),
            Err(e) => panic!("{} of {n} messages, then {e:?}", out.len()),
        }
    }
    out
}

/// Two gateways whose finds fail points can target by name (`app_a`, `app_b`), with a 30 s
/// overlap, and a client of `logs:w1` on each, past its `mode` event.
struct Pair {
    a: Gateway,
    b: Gateway,
    app_a: String,
    app_b: String,
    base_a: String,
    base_b: String,
    on_a: Sse,
    on_b: Sse,
}

async fn two_gateways(mongo: &Mongo, tag: &str) -> Pair {
    let extra = vars(&[("SSE_POLL_OVERLAP_MS", "30000")]);
    let (app_a, app_b) = (
        unique_name(&format!("gw{tag}a")),
        unique_name(&format!("gw{tag}b")),
    );
    let a = start_gateway_named(mongo, &app_a, &extra).await;
    let b = start_gateway_named(mongo, &app_b, &extra).await;
    let (base_a, base_b) = (base_url(&a), base_url(&b));
    let mut on_a = Sse::subscribe(&base_a, &["logs:w1"], None).await;
    let mut on_b = Sse::subscribe(&base_b, &["logs:w1"], None).await;
    expect_mode(&mut on_a).await;
    expect_mode(&mut on_b).await;
    Pair {
        a,
        b,
        app_a,
        app_b,
        base_a,
        base_b,
        on_a,
        on_b,
    }
}

/// A `logs:w1` document with `_id` `id`.
fn log_at(id: ObjectId, seq: i64) -> Document {
    let mut d = log_doc("w1", "f1", seq);
    d.insert("_id", id);
    d
}

/// A document `_id` in second `secs` whose middle bytes are `process`: writers in different
/// processes make ObjectIds that sort by process, not by time, within a second.
fn oid_in(secs: u32, process: u8, counter: u8) -> ObjectId {
    let mut b = [process; 12];
    b[..4].copy_from_slice(&secs.to_be_bytes());
    b[9] = 0;
    b[10] = 0;
    b[11] = counter;
    ObjectId::from_bytes(b)
}

/// Found by the chaos soak (seed 2026 and seed 12): a polling id counts the documents
/// delivered late since the cursor last moved, in the order *its* gateway saw them. Another
/// gateway saw them at other moments: the same count names other documents there. Resumed
/// on it, the client got documents twice and lost others — seconds of them after a switch to
/// polling, when the change stream's tail arrives late. Here gateway A sees two batches of
/// late documents one after the other, B (whose polls fail meanwhile) both at once, in
/// `_id` order: A's "15 late documents" are B's *other* 15. Resumed on B, the id must get a
/// `gap` (`late_order_unknown`) and nothing repeated; resumed on A it stays exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_late_count_from_another_gateway_is_a_gap_not_a_guess() {
    let Some(mongo) = standalone("poll_late_count").await else {
        return;
    };
    let Pair {
        a,
        b,
        app_b,
        base_a,
        base_b,
        mut on_a,
        mut on_b,
        ..
    } = two_gateways(&mongo, "lc").await;

    let cursor = ObjectId::new();
    let mut first = log_doc("w1", "f1", 0);
    first.insert("_id", cursor);
    mongo.insert_many(vec![first]).await;
    assert_eq!(seqs(&data(&mut on_a, 1).await), [0]);
    assert_eq!(seqs(&data(&mut on_b, 1).await), [0]);

    // B's polls fail from here on.
    block_polls(&mongo, &b, &app_b).await;
    // Two batches of documents made a second before the cursor (late), the second batch
    // from a "process" whose ObjectIds sort first.
    let secs = cursor.timestamp().timestamp_millis() / 1000 - 1;
    let batch = |process: u8, seqs: std::ops::Range<i64>| -> Vec<Document> {
        seqs.enumerate()
            .map(|(i, seq)| {
                let mut d = log_doc("w1", "f1", seq);
                d.insert("_id", oid_in(secs as u32, process, i as u8));
                d
            })
            .collect()
    };
    mongo.insert_many(batch(0xEE, 1..16)).await;
    let on_a_first = data(&mut on_a, 15).await;
    assert_eq!(seqs(&on_a_first), (1..16).collect::<Vec<_>>());
    let asked = on_a_first[14].id.clone();
    assert_eq!(
        position(&asked).polling().map(|c| c.late()),
        Some(15),
        "{asked}"
    );
    mongo.insert_many(batch(0x11, 16..31)).await;
    assert_eq!(
        seqs(&data(&mut on_a, 15).await),
        (16..31).collect::<Vec<_>>()
    );

    assert!(fail_point_off(&mongo).await > 0);
    // B sees both batches in one poll, in `_id` order: the second batch first.
    let on_b_late = data(&mut on_b, 30).await;
    let mut want: Vec<i64> = (16..31).collect();
    want.extend(1..16);
    assert_eq!(seqs(&on_b_late), want);

    // On B, A's count means nothing: a gap first, then only what is new.
    let mut resumed_b = Sse::subscribe(&base_b, &["logs:w1"], Some(&asked)).await;
    let gap = loop {
        let ev = within(WAIT, "the gap", resumed_b.next_event(WAIT))
            .await
            .unwrap_or_else(|e| panic!("resumed on B: {e:?}"));
        match ev.event.as_str() {
            "mode" => continue,
            "gap" => break json_of(&ev),
            _ => panic!("resumed on B with another gateway's late count: {ev:?} before a gap"),
        }
    };
    assert_eq!(gap["reason"], "late_order_unknown", "{gap}");
    assert_eq!(gap["last_event_id"], asked.as_str());
    // On A, its own count: exact.
    let mut resumed_a = Sse::subscribe(&base_a, &["logs:w1"], Some(&asked)).await;
    assert_eq!(
        seqs(&read_connected_n(&mut resumed_a, 15).await),
        (16..31).collect::<Vec<_>>()
    );

    mongo.insert("w1", "f1", 31).await;
    assert_eq!(
        seqs(&read_connected_n(&mut resumed_b, 1).await),
        [31],
        "nothing repeated on B"
    );
    assert_eq!(seqs(&read_connected_n(&mut resumed_a, 1).await), [31]);
    for sse in [&mut resumed_a, &mut resumed_b] {
        sse.expect_no_event(Duration::from_millis(5 * INTERVAL_MS))
            .await;
    }
    a.shutdown().await;
    b.shutdown().await;
}

/// Found by the chaos soak (seed 12, 200 readers): ObjectIds made in different processes
/// sort by process within a second, so a poll that ran between two writers' inserts of one
/// second delivered the second writer's documents "late" — most polls did, with several
/// writers — and a late count is only meaningful on the gateway that counted it: resumed
/// elsewhere, documents were repeated. Polls now deliver a second only once it has settled
/// (`SSE_POLL_SETTLE_MS`), whole and in `_id` order, the same on every gateway: here a
/// document of a "later" process commits first and one of an "earlier" process after it,
/// and the ids still resume exactly on the other gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn polls_deliver_settled_seconds_in_id_order_so_ids_resume_anywhere() {
    let Some(mongo) = standalone("poll_settled").await else {
        return;
    };
    let a = start_gateway(&mongo, &vars(&[])).await;
    let b = start_gateway(&mongo, &vars(&[])).await;
    let (base_a, base_b) = (base_url(&a), base_url(&b));
    let mut on_a = Sse::subscribe(&base_a, &["logs:w1"], None).await;
    expect_mode(&mut on_a).await;

    // A second just ahead of the clock (within its 2 s tolerance), so it cannot settle
    // while the test writes it.
    let secs = (ObjectId::new().timestamp().timestamp_millis() / 1000 + 1) as u32;
    let batch = |process: u8, seqs: std::ops::Range<i64>| -> Vec<Document> {
        seqs.enumerate()
            .map(|(i, seq)| {
                let mut d = log_doc("w1", "f1", seq);
                d.insert("_id", oid_in(secs, process, i as u8));
                d
            })
            .collect()
    };
    mongo.insert_many(batch(0xEE, 0..10)).await;
    // Two polls of A see the first batch before the second commits.
    let polls = Stats::get(&a.source_stats.poll.polls);
    eventually(WAIT, "two more polls", || {
        (Stats::get(&a.source_stats.poll.polls) >= polls + 2).then_some(())
    })
    .await;
    mongo.insert_many(batch(0x11, 10..20)).await;

    let got = read_connected_n(&mut on_a, 20).await;
    let mut in_id_order: Vec<i64> = (10..20).collect();
    in_id_order.extend(0..10);
    assert_eq!(seqs(&got), in_id_order, "one settled second, in _id order");
    for ev in &got {
        assert_eq!(
            position(&ev.id).polling().map(|c| c.late()),
            Some(0),
            "{}",
            ev.id
        );
    }
    // Every id resumes exactly on the other gateway: the rest, no gap, nothing repeated.
    for k in [4, 9, 14] {
        let mut resumed = Sse::subscribe(&base_b, &["logs:w1"], Some(&got[k].id)).await;
        let rest = read_connected_n(&mut resumed, 19 - k).await;
        assert_eq!(
            seqs(&rest),
            in_id_order[k + 1..],
            "resumed on B after event {k}"
        );
        resumed
            .expect_no_event(Duration::from_millis(5 * INTERVAL_MS))
            .await;
    }
    a.shutdown().await;
    b.shutdown().await;
}

/// After a `late_order_unknown` gap the connection continues after every late document of
/// the id's cursor — but the other gateway may have delivered some of them late at a *later*
/// cursor (the soak, seed 12: reader 19 got them twice). Here B sees the new document H1
/// before the late batch (placing the batch at H1), A sees them in one poll (the batch at the
/// old cursor H0): resumed on B from A's id, the batch must not come again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_late_order_gap_no_document_up_to_the_cursor_is_repeated() {
    let Some(mongo) = standalone("poll_late_later").await else {
        return;
    };
    let Pair {
        a,
        b,
        app_a,
        base_b,
        mut on_a,
        mut on_b,
        ..
    } = two_gateways(&mongo, "ll").await;
    let h0 = ObjectId::new();
    mongo.insert_many(vec![log_at(h0, 0)]).await;
    assert_eq!(seqs(&read_connected_n(&mut on_a, 1).await), [0]);
    assert_eq!(seqs(&read_connected_n(&mut on_b, 1).await), [0]);

    // A's polls fail; B sees H1, then the late batch.
    block_polls(&mongo, &a, &app_a).await;
    mongo.insert_many(vec![log_at(ObjectId::new(), 1)]).await;
    assert_eq!(seqs(&read_connected_n(&mut on_b, 1).await), [1]);
    let secs = (h0.timestamp().timestamp_millis() / 1000 - 1) as u32;
    let late: Vec<Document> = (2..12)
        .map(|seq| log_at(oid_in(secs, 0x11, seq as u8), seq))
        .collect();
    mongo.insert_many(late).await;
    assert_eq!(
        seqs(&read_connected_n(&mut on_b, 10).await),
        (2..12).collect::<Vec<_>>()
    );

    // A sees all of it in one poll, in `_id` order: the batch late at H0, then H1.
    fail_point_off(&mongo).await;
    let got = read_connected_n(&mut on_a, 11).await;
    let mut want: Vec<i64> = (2..12).collect();
    want.push(1);
    assert_eq!(seqs(&got), want);
    let asked = got[5].id.clone(); // six of the batch
    assert!(
        position(&asked).polling().is_some_and(|c| c.late() == 6),
        "{asked}"
    );

    let mut resumed = Sse::subscribe(&base_b, &["logs:w1"], Some(&asked)).await;
    let first = loop {
        match within(WAIT, "the gap", resumed.next_event(WAIT)).await {
            Ok(ev) if ev.event == "mode" => continue,
            Ok(ev) => break ev,
            Err(e) => panic!("resumed on B: {e:?}"),
        }
    };
    assert_eq!(first.event, "gap", "{first:?}");
    assert_eq!(json_of(&first)["reason"], "late_order_unknown");
    // H1 is new to the client; the batch is not sent again (the gap covers the four it lacks).
    assert_eq!(seqs(&read_connected_n(&mut resumed, 1).await), [1]);
    mongo.insert("w1", "f1", 12).await;
    assert_eq!(
        seqs(&read_connected_n(&mut resumed, 1).await),
        [12],
        "nothing repeated"
    );
    a.shutdown().await;
    b.shutdown().await;
}

/// Found by the chaos soak (seed 2026, 10 minutes: 2 014 duplicates): a polling id without a
/// late count means "every document up to this `_id`" on the gateway that sent it, but the
/// gateway resuming it may have delivered some of those documents *late*, at later cursors
/// of its own (typically the tail of its own switch from a change stream), and replayed them.
/// Here B sees H1, then documents made between H0 and H1 (late at H1 there); A, whose polls
/// failed meanwhile, sees all of them at once in `_id` order, none late. Resumed on B from
/// A's H1, nothing is repeated, and no gap is needed: the client has all of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_gateways_cursor_gets_none_of_what_this_one_delivered_late_below_it() {
    let Some(mongo) = standalone("poll_foreign_cursor").await else {
        return;
    };
    let Pair {
        a,
        b,
        app_a,
        base_b,
        mut on_a,
        mut on_b,
        ..
    } = two_gateways(&mongo, "fc").await;
    // H0 three seconds ago, the batch in the second after it, H1 now.
    let now = (ObjectId::new().timestamp().timestamp_millis() / 1000) as u32;
    mongo
        .insert_many(vec![log_at(oid_in(now - 3, 0x11, 0), 0)])
        .await;
    assert_eq!(seqs(&read_connected_n(&mut on_a, 1).await), [0]);
    assert_eq!(seqs(&read_connected_n(&mut on_b, 1).await), [0]);

    block_polls(&mongo, &a, &app_a).await;
    mongo.insert_many(vec![log_at(ObjectId::new(), 1)]).await;
    assert_eq!(seqs(&read_connected_n(&mut on_b, 1).await), [1]);
    let batch: Vec<Document> = (2..12)
        .map(|seq| log_at(oid_in(now - 2, 0x11, seq as u8), seq))
        .collect();
    mongo.insert_many(batch).await;
    let late_on_b = read_connected_n(&mut on_b, 10).await;
    assert_eq!(seqs(&late_on_b), (2..12).collect::<Vec<_>>());
    assert!(
        late_on_b
            .iter()
            .all(|ev| position(&ev.id).polling().is_some_and(|c| c.late() > 0)),
        "B delivers the batch late: {:?}",
        late_on_b.iter().map(|ev| &ev.id).collect::<Vec<_>>()
    );

    // A sees the batch and H1 in one poll, in `_id` order, none of them late.
    fail_point_off(&mongo).await;
    let got = read_connected_n(&mut on_a, 11).await;
    assert_eq!(seqs(&got), (2..12).chain([1]).collect::<Vec<_>>());
    let asked = got[10].id.clone();
    assert!(
        position(&asked).polling().is_some_and(|c| c.late() == 0),
        "{asked}"
    );

    let mut resumed = Sse::subscribe(&base_b, &["logs:w1"], Some(&asked)).await;
    mongo.insert("w1", "f1", 12).await;
    assert_eq!(
        seqs(&read_connected_n(&mut resumed, 1).await),
        [12],
        "B must not repeat what it delivered late below A's cursor"
    );
    // B's own id still resumes exactly on B, late documents and all.
    let mut own = Sse::subscribe(&base_b, &["logs:w1"], Some(&late_on_b[4].id)).await;
    assert_eq!(
        seqs(&read_connected_n(&mut own, 6).await),
        [7, 8, 9, 10, 11, 12]
    );
    a.shutdown().await;
    b.shutdown().await;
}

/// Found by the chaos soak twice. Seed 2026, 40 minutes: a reader moved to a gateway whose
/// polls were failing, its id ahead of that gateway's head; after the `position_ahead` gap
/// the connection continued from the head, and the documents between the head and the id —
/// which the client had from the other gateway — came again (455 duplicates). Seed 77,
/// 4 minutes, after that was fixed: the gap's id (the head) became the client's id, and its
/// next reconnect, elsewhere, was sent them again. Another poller's cursor says the client
/// has every document up to it, so no gap is needed at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_pollers_id_ahead_of_the_head_needs_no_gap_and_stays_the_clients_id() {
    let Some(mongo) = standalone("poll_ahead_foreign").await else {
        return;
    };
    let (app_a, app_b) = (unique_name("gwpaa"), unique_name("gwpab"));
    let a = start_gateway_named(&mongo, &app_a, &vars(&[])).await;
    let b = start_gateway_named(&mongo, &app_b, &vars(&[("SSE_HEARTBEAT_SECS", "1")])).await;
    let (base_a, base_b) = (base_url(&a), base_url(&b));
    let mut on_a = Sse::subscribe(&base_a, &["logs:w1"], None).await;
    expect_mode(&mut on_a).await;

    block_polls(&mongo, &b, &app_b).await;
    for seq in 1..=5 {
        mongo.insert("w1", "f1", seq).await;
    }
    let got = read_connected_n(&mut on_a, 5).await;
    assert_eq!(seqs(&got), [1, 2, 3, 4, 5]);
    let asked = got[4].id.clone();

    // B's head is behind A's id and stays there. The id is another poller's: no gap is
    // needed and none comes, and nothing B sends meanwhile (heartbeats) moves the client's
    // id back below A's cursor — a reconnect elsewhere would be sent 1..=5 again.
    let mut resumed = Sse::subscribe(&base_b, &["logs:w1"], Some(&asked)).await;
    let mut heartbeats = 0;
    while heartbeats < 3 {
        match within(WAIT, "heartbeats", resumed.next(WAIT)).await {
            Ok(Item::Comment(c)) if c == "heartbeat" => heartbeats += 1,
            Ok(Item::Event(ev)) if ev.event == "mode" => {}
            Ok(Item::Retry(_)) => {}
            other => panic!("B behind A's id: expected heartbeats only, got {other:?}"),
        }
    }
    assert_eq!(
        resumed.last_event_id(),
        asked,
        "B must leave the client at A's id while its own head is behind it"
    );

    // B catches up: none of 1..=5 again, then what is new.
    fail_point_off(&mongo).await;
    mongo.insert("w1", "f1", 6).await;
    assert_eq!(
        seqs(&read_connected_n(&mut resumed, 1).await),
        [6],
        "B must not repeat what the client had up to A's cursor"
    );
    a.shutdown().await;
    b.shutdown().await;
}
