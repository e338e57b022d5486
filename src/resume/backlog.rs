//! `?backlog=N`: the last N documents of the requested channels, oldest first, then live —
//! with no gap and no duplicate even while writers race the query, and with memory bounded
//! by a few documents whatever N and the documents' sizes.
//!
//! The connection subscribes first (head H: every later event reaches its queue), then asks
//! MongoDB for the `_id`s of the last N documents only. A document inserted after H may show
//! up in both that answer and the queue, so the mode's hand-over ([`super::ModeResume`])
//! says which of them the live feed delivers: those are left out of the backlog and arrive
//! once, live, with their exact positions. Then a task fetches the remaining documents in
//! `_id` order a few at a time and streams them as the client reads; the queue waits behind.

use std::cmp::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bson::{doc, Bson, Document, Timestamp};
use futures::TryStreamExt;
use mongodb::{Client, Database};

use super::replay::{Producer, Replay};
use super::slots::{NoSlot, Slots};
use crate::channel::Channel;
use crate::event::{document_key, Event, Op};
use crate::hub::Subscription;
use crate::routing::SourceSpecs;
use crate::tasks::Tasks;

pub const MAX_BACKLOG: usize = 1000;
/// How long a backlog waits for the live feed to pass the query before de-duplicating with
/// what it has (and logging that it did).
pub const HANDOFF_WAIT: Duration = Duration::from_secs(5);
/// `_id`s per fetch, and documents per batch of it: a batch is what the task holds at once.
const FETCH_IDS: usize = 128;
const FETCH_BATCH: u32 = 8;

pub struct Backlogs {
    pub client: Client,
    pub db: Database,
    pub sources: SourceSpecs,
    pub tasks: Tasks,
    pub stall: Duration,
    /// `SSE_BACKLOG_CONCURRENCY` backlogs query and stream at once.
    pub slots: Slots,
}

/// What a backlog found, before the hand-over.
pub struct Found {
    /// `(collection, _id)`, oldest first.
    pub ids: Vec<(String, Bson)>,
    /// The query's `operationTime`: everything it saw committed at or before this.
    pub operation_time: Option<Timestamp>,
}

#[derive(Debug)]
pub enum BacklogError {
    Busy,
    Failed(String),
}

impl From<NoSlot> for BacklogError {
    fn from(e: NoSlot) -> Self {
        match e {
            NoSlot::Busy => BacklogError::Busy,
            NoSlot::Closed => BacklogError::Failed("shutting down".into()),
        }
    }
}

/// Says whether a backlog row will also arrive live (so it is left out of the backlog).
pub type ArrivesLive = Box<dyn Fn(&str, &Bson) -> bool + Send>;

impl Backlogs {
    /// Serves `?backlog=n` for `sub`: finds the rows, hands over to the live queue with
    /// `handoff`, and returns the replay that streams them.
    pub async fn open<F, Fut>(
        &self,
        sub: &mut Subscription,
        n: usize,
        handoff: F,
    ) -> Result<Replay, BacklogError>
    where
        F: FnOnce(Option<Timestamp>) -> Fut,
        Fut: std::future::Future<Output = ArrivesLive>,
    {
        let permit = self.slots.take().await?;

        let found = {
            let (client, db, sources, channels) = (
                self.client.clone(),
                self.db.clone(),
                self.sources.clone(),
                sub.channels.to_vec(),
            );
            self.tasks
                .spawn(async move { find_ids(&client, &db, &sources, &channels, n).await })
                .await
                .map_err(|e| BacklogError::Failed(e.to_string()))?
                .map_err(BacklogError::Failed)?
        };
        let arrives_live = handoff(found.operation_time).await;
        // Everything queued so far is live and after H; the backlog must not repeat its
        // inserts.
        let mut queued = Vec::new();
        while let Ok(ev) = sub.rx.try_recv() {
            queued.push(ev);
        }
        let live_inserts: std::collections::HashSet<Arc<str>> = queued
            .iter()
            .filter(|e| e.op == Op::Insert)
            .filter_map(|e| e.key.clone())
            .collect();
        let ids: Vec<(String, Bson)> = found
            .ids
            .into_iter()
            .filter(|(coll, id)| {
                !live_inserts.contains(&document_key(coll, id)) && !arrives_live(coll, id)
            })
            .collect();
        let (mut replay, out) = Replay::channel(self.stall, self.tasks.shutdown_signal());
        replay.rows = true;
        replay.then = queued;
        let db = self.db.clone();
        let sources = self.sources.clone();
        let head = sub.head.clone();
        self.tasks.spawn(async move {
            let _permit = permit;
            stream_rows(&db, &sources, head, ids, out).await;
        });
        Ok(replay)
    }
}

/// The `_id`s of the last `n` documents routed to `channels` (or below them), across
/// sources, oldest first, and the operation time the queries saw.
async fn find_ids(
    client: &Client,
    db: &Database,
    sources: &SourceSpecs,
    channels: &[Channel],
    n: usize,
) -> Result<Found, String> {
    let n = n.min(MAX_BACKLOG);
    let mut queries: Vec<(String, Document)> = Vec::new();
    for spec in sources.iter() {
        if let Some(any_of) = spec.filter_for_any(channels, "") {
            queries.push((spec.collection.clone(), doc! {"$or": any_of}));
        }
    }
    if queries.is_empty() || n == 0 {
        return Ok(Found {
            ids: Vec::new(),
            operation_time: None,
        });
    }
    let mut session = client.start_session().await.map_err(|e| e.to_string())?;
    let mut ids: Vec<(String, Bson)> = Vec::new();
    for (coll, filter) in queries {
        let mut cursor = db
            .collection::<Document>(&coll)
            .find(filter)
            .sort(doc! {"_id": -1})
            .projection(doc! {"_id": 1})
            .limit(n as i64)
            .batch_size(n as u32)
            .session(&mut session)
            .await
            .map_err(|e| e.to_string())?;
        let docs: Vec<Document> = cursor
            .stream(&mut session)
            .try_collect()
            .await
            .map_err(|e| e.to_string())?;
        ids.extend(
            docs.into_iter()
                .filter_map(|mut d| Some((coll.clone(), d.remove("_id")?))),
        );
    }
    // Newest first across sources, keep n, then oldest first.
    ids.sort_by(|a, b| compare_ids(&b.1, &a.1));
    ids.truncate(n);
    ids.reverse();
    Ok(Found {
        ids,
        operation_time: session.operation_time(),
    })
}

/// Fetches the rows in order, a few at a time, and sends each as the client reads. Backlog
/// rows carry the subscription head as their id: resuming from any of them continues live
/// with nothing lost.
async fn stream_rows(
    db: &Database,
    sources: &SourceSpecs,
    head: crate::position::Position,
    ids: Vec<(String, Bson)>,
    mut out: Producer,
) {
    let mut rest = ids.as_slice();
    while let Some((coll, _)) = rest.first() {
        // The next run of one collection, at most FETCH_IDS long.
        let run = rest
            .iter()
            .take(FETCH_IDS)
            .take_while(|(c, _)| c == coll)
            .count();
        let (chunk, after) = rest.split_at(run);
        rest = after;
        let Some(spec) = sources.get(coll) else {
            continue;
        };
        let wanted: Vec<Bson> = chunk.iter().map(|(_, id)| id.clone()).collect();
        let cursor = db
            .collection::<Document>(coll)
            .find(doc! {"_id": {"$in": wanted}})
            .sort(doc! {"_id": 1})
            .batch_size(FETCH_BATCH)
            .await;
        let mut cursor = match cursor {
            Ok(c) => c,
            Err(e) => return out.fail(format!("backlog fetch failed: {e}")).await,
        };
        // `$in` sorted by `_id`: the order asked for (the ids were sorted the same way; a
        // document deleted since the query is simply not there).
        loop {
            let doc = tokio::select! {
                d = cursor.try_next() => d,
                _ = out.out.abandoned() => return,
            };
            let doc = match doc {
                Ok(Some(d)) => d,
                Ok(None) => break,
                Err(e) => return out.fail(format!("backlog fetch failed: {e}")).await,
            };
            if !out
                .send(Event::for_source(head.clone(), spec, Op::Insert, &doc))
                .await
            {
                return;
            }
        }
    }
    out.done();
}

/// `_id` order for merging sources: ObjectIds (the common case) by their bytes, which start
/// with their creation time; anything else by its display form, which is at least stable.
fn compare_ids(a: &Bson, b: &Bson) -> Ordering {
    match (a, b) {
        (Bson::ObjectId(a), Bson::ObjectId(b)) => a.bytes().cmp(&b.bytes()),
        (a, b) => a.to_string().cmp(&b.to_string()),
    }
}
