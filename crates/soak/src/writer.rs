//! The writers. W tasks insert numbered documents through the official driver, each owning its
//! channels (`logs:soak:c<k>`, routed by `workspace_id`/`workflow_id`) and writing one
//! document at a time, so per channel the commit order is the sequence order. A failed insert
//! is retried with the same `_id` (a duplicate-key answer means the first attempt committed),
//! so a sequence number is committed at most once. One more task publishes through
//! `POST /v1/publish` of a random gateway into `pub:soak:p<k>`; a failed publish is not
//! retried (its outcome may be unknown: a 503 may have written) and the sequence moves on.
//!
//! What counts is what MongoDB holds after the run ([`committed`]), not what writers believe.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::{doc, oid::ObjectId, Document};
use futures::TryStreamExt;
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::ClientOptions;
use mongodb::{Client, Collection};
use tokio::sync::watch;

use crate::rng::Rng;

pub const WORKSPACE: &str = "soak";

pub fn log_channel(k: usize) -> String {
    format!("logs:{WORKSPACE}:c{k}")
}

pub fn pub_channel(k: usize) -> String {
    format!("pub:{WORKSPACE}:p{k}")
}

#[derive(Debug, Default)]
pub struct WriteStats {
    pub inserted: AtomicU64,
    pub insert_retries: AtomicU64,
    pub insert_given_up: AtomicU64,
    pub published: AtomicU64,
    pub publish_failed: AtomicU64,
    /// Publishes whose answer was not a 202: they may or may not have committed, and if they
    /// did, later than the publishes after them (a gateway killed mid-request), so their
    /// order is not checked.
    pub uncertain: std::sync::Mutex<std::collections::HashSet<(String, u64)>>,
    /// The `_id` each accepted publish got (its 202 answer's `id`), by channel and sequence:
    /// a published event's data does not carry it, and the checker needs it to judge the
    /// order of polled events.
    pub pub_ids: std::sync::Mutex<std::collections::HashMap<(String, u64), String>>,
}

pub async fn client(uri: &str, app: &str) -> anyhow::Result<Client> {
    let mut opts = ClientOptions::parse(uri).await?;
    opts.app_name = Some(app.to_string());
    opts.server_selection_timeout = Some(Duration::from_secs(10));
    Ok(Client::with_options(opts)?)
}

fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(we)) => we.code == 11000,
        ErrorKind::Command(ce) => ce.code == 11000,
        _ => false,
    }
}

/// Inserts into `channels` round-robin, one document per `interval`, until `stop` or until the
/// shared `budget` of events is spent.
pub async fn mongo_writer(
    coll: Collection<Document>,
    channels: Vec<usize>,
    interval: Duration,
    budget: Arc<AtomicU64>,
    stats: Arc<WriteStats>,
    mut stop: watch::Receiver<bool>,
) {
    let mut seqs = vec![0u64; channels.len()];
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next = 0usize;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() || !take_budget(&budget) {
            return;
        }
        let i = next % channels.len();
        next += 1;
        let d = doc! {
            "_id": ObjectId::new(),
            "workspace_id": WORKSPACE,
            "workflow_id": format!("c{}", channels[i]),
            "seq": seqs[i] as i64,
        };
        seqs[i] += 1;
        // At most 30 s and 50 attempts for one document.
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            match coll.insert_one(d.clone()).await {
                Ok(_) => {
                    stats.inserted.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(e) if is_duplicate_key(&e) => {
                    stats.inserted.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(e) => {
                    stats.insert_retries.fetch_add(1, Ordering::Relaxed);
                    if attempt >= 50 || started.elapsed() > Duration::from_secs(30) {
                        eprintln!("soak: insert given up after {attempt} attempts: {e}");
                        stats.insert_given_up.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

fn take_budget(budget: &AtomicU64) -> bool {
    budget
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_sub(1))
        .is_ok()
}

/// Publishes one event per `interval` to a random gateway, channels round-robin.
#[allow(clippy::too_many_arguments)]
pub async fn publisher(
    http: reqwest::Client,
    ports: Vec<u16>,
    channels: usize,
    interval: Duration,
    budget: Arc<AtomicU64>,
    stats: Arc<WriteStats>,
    mut rng: Rng,
    mut stop: watch::Receiver<bool>,
) {
    let mut seqs = vec![0u64; channels];
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next = 0usize;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() || !take_budget(&budget) {
            return;
        }
        let k = next % channels;
        next += 1;
        let body = serde_json::json!({"channel": pub_channel(k), "data": {"seq": seqs[k]}});
        seqs[k] += 1;
        let port = ports[rng.below(ports.len() as u64) as usize];
        let r = http
            .post(format!("http://127.0.0.1:{port}/v1/publish"))
            .header("content-type", "application/json")
            .timeout(Duration::from_secs(15))
            .body(body.to_string())
            .send()
            .await;
        match r {
            Ok(r) if r.status().as_u16() == 202 => {
                stats.published.fetch_add(1, Ordering::Relaxed);
                let answer: Option<serde_json::Value> = r
                    .bytes()
                    .await
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok());
                if let Some(id) = answer.as_ref().and_then(|a| a.get("id")?.as_str()) {
                    crate::reader::lock(&stats.pub_ids)
                        .insert((pub_channel(k), seqs[k] - 1), id.to_ascii_lowercase());
                }
            }
            _ => {
                stats.publish_failed.fetch_add(1, Ordering::Relaxed);
                crate::reader::lock(&stats.uncertain).insert((pub_channel(k), seqs[k] - 1));
            }
        }
    }
}

/// When each committed event was written: its ObjectId's seconds, by channel and sequence.
pub type WrittenAt = HashMap<(String, u64), u32>;

/// What MongoDB holds: per channel, the sorted sequence numbers committed.
pub async fn committed(
    client: &Client,
    db: &str,
) -> anyhow::Result<(HashMap<String, Vec<u64>>, WrittenAt)> {
    let mut out: HashMap<String, Vec<u64>> = HashMap::new();
    let mut at = WrittenAt::new();
    let logs = client.database(db).collection::<Document>("logs");
    let mut cur = logs
        .find(doc! {"workspace_id": WORKSPACE})
        .projection(doc! {"workflow_id": 1, "seq": 1})
        .await?;
    while let Some(d) = cur.try_next().await? {
        if let (Ok(wf), Some(seq)) = (d.get_str("workflow_id"), int(d.get("seq"))) {
            let ch = format!("logs:{WORKSPACE}:{wf}");
            if let Ok(id) = d.get_object_id("_id") {
                let secs = id.timestamp().timestamp_millis() / 1000;
                at.insert((ch.clone(), seq), secs as u32);
            }
            out.entry(ch).or_default().push(seq);
        }
    }
    let events = client.database(db).collection::<Document>("sse_events");
    let mut cur = events
        .find(doc! {})
        .projection(doc! {"channel": 1, "data": 1})
        .await?;
    while let Some(d) = cur.try_next().await? {
        let seq = d.get_document("data").ok().and_then(|x| int(x.get("seq")));
        if let (Ok(ch), Some(seq)) = (d.get_str("channel"), seq) {
            if let Ok(id) = d.get_object_id("_id") {
                let secs = id.timestamp().timestamp_millis() / 1000;
                at.insert((ch.to_string(), seq), secs as u32);
            }
            out.entry(ch.to_string()).or_default().push(seq);
        }
    }
    for v in out.values_mut() {
        v.sort_unstable();
        v.dedup();
    }
    Ok((out, at))
}

fn int(b: Option<&bson::Bson>) -> Option<u64> {
    match b? {
        bson::Bson::Int32(i) => u64::try_from(*i).ok(),
        bson::Bson::Int64(i) => u64::try_from(*i).ok(),
        bson::Bson::Double(f) if *f >= 0.0 => Some(*f as u64),
        _ => None,
    }
}
