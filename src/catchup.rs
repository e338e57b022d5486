//! Catch-up streams: a reconnect whose position is older than the history ring reads what it
//! missed from MongoDB with its own change stream (`resumeAfter` its position, narrowed to its
//! channels), up to the head it subscribed at; from there the live queue continues with no gap
//! and no duplicate. They are bounded: after a gateway restart every browser reconnects at
//! once, and one change stream per browser is exactly the load this design exists to avoid.

use std::cmp::Ordering as CmpOrdering;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bson::oid::ObjectId;
use bson::{doc, Bson, Document};
use futures::TryStreamExt;
use mongodb::Database;
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};

use crate::channel::Channel;
use crate::delivered::Snapshot;
use crate::event::{document_key, Event, Op};
use crate::position::{PollCursor, Position, ResumePoint};
use crate::routing::{SourceSpec, SourceSpecs};
use crate::source::{self, change_stream, polling};
use crate::tasks::Tasks;

const BATCH: usize = 256;

/// The most documents a polling catch-up replays (it must sort late documents, so it holds
/// them); a position further behind gets a `gap` (`too_far_behind`).
pub const MAX_POLL_CATCHUP: usize = 10_000;

/// Where a catch-up stream (re)opens.
enum Resume {
    After(mongodb::change_stream::event::ResumeToken),
    StartAfter(mongodb::change_stream::event::ResumeToken),
    AtOperationTime(bson::Timestamp),
}

pub struct CatchUps {
    db: Database,
    sources: SourceSpecs,
    slots: Arc<Semaphore>,
    concurrency: usize,
    waiting: AtomicUsize,
    max_waiting: usize,
    /// The polling overlap window (see `source::polling`).
    poll_overlap: Duration,
    /// Catch-ups run as tracked tasks that stop at shutdown.
    tasks: Tasks,
    stall: Duration,
}

#[derive(Debug)]
pub enum CatchUpError {
    /// Every slot is busy and the waiting line is full.
    Busy,
    /// The position is no longer in the oplog: tell the client about the gap.
    HistoryLost,
    /// MongoDB cannot resume from this position at all (a foreign or corrupt id).
    Unusable(String),
    /// The position is of the other mode and older than memory: it cannot be replayed.
    ModeChanged,
    /// MongoDB is unreachable or failed otherwise.
    Failed(String),
    /// A polling position more than [`MAX_POLL_CATCHUP`] documents behind: replaying it
    /// would hold that many documents at once, so the client is told a gap instead.
    TooFarBehind,
}

/// A running catch-up: events after the position, in order, ending at the subscription head.
pub struct CatchUp {
    pub events: mpsc::Receiver<Result<Arc<Event>, String>>,
    /// Set when the catch-up reached the subscription head. Its channel closing without this
    /// means it was cut short (the reader stalled, shutdown): the connection must end, never
    /// continue live over the hole.
    pub complete: Arc<AtomicBool>,
}

impl CatchUp {
    fn new(events: mpsc::Receiver<Result<Arc<Event>, String>>) -> (CatchUp, Arc<AtomicBool>) {
        let complete = Arc::new(AtomicBool::new(false));
        (
            CatchUp {
                events,
                complete: Arc::clone(&complete),
            },
            complete,
        )
    }

    /// Nothing to catch up on.
    fn empty(events: mpsc::Receiver<Result<Arc<Event>, String>>) -> CatchUp {
        let (c, complete) = CatchUp::new(events);
        complete.store(true, Ordering::SeqCst);
        c
    }
}

/// Invalidates (a dropped database) a catch-up continues across before giving up.
const MAX_INVALIDATES: usize = 16;

/// The end of a catch-up's channel, with how long it waits for its reader to take the next
/// event (`SSE_CATCHUP_STALL_SECS`). A client that asks for a long catch-up and then reads
/// nothing would otherwise hold a slot for ever, and a few dozen of them would refuse every
/// other reconnect.
struct Out {
    tx: mpsc::Sender<Result<Arc<Event>, String>>,
    stall: Duration,
    shutdown: watch::Receiver<bool>,
}

impl Out {
    /// Sends `ev` to the reader, or says why not: gone, stalled, or shutting down.
    async fn offer(&mut self, ev: Result<Arc<Event>, String>) -> bool {
        tokio::select! {
            r = tokio::time::timeout(self.stall, self.tx.send(ev)) => match r {
                Ok(Ok(())) => true,
                Ok(Err(_)) => false, // the client went away
                Err(_) => {
                    tracing::info!("catch-up reader stalled for {:?}; releasing its slot", self.stall);
                    false
                }
            },
            _ = self.shutdown.wait_for(|s| *s) => false,
        }
    }
}

impl CatchUps {
    pub fn new(
        db: Database,
        sources: SourceSpecs,
        concurrency: usize,
        max_waiting: usize,
        poll_overlap: Duration,
        tasks: Tasks,
        stall: Duration,
    ) -> Self {
        CatchUps {
            db,
            sources,
            slots: Arc::new(Semaphore::new(concurrency.max(1))),
            concurrency: concurrency.max(1),
            waiting: AtomicUsize::new(0),
            max_waiting,
            poll_overlap,
            tasks,
            stall,
        }
    }

    /// A catch-up in polling mode: every document delivered after `from` up to `until`, at
    /// the position it was delivered at, one query per source.
    ///
    /// `_id` alone cannot say which documents those are: a late document (committed after
    /// newer ones) delivered after `from` has an `_id` below `from`'s cursor, and a document
    /// inside the overlap window may not have been delivered yet (it arrives live, after
    /// `until`). So the query starts one window below `from`'s cursor, and `delivered` (taken
    /// atomically with `until`) decides: a document it places is sent if it was delivered
    /// after `from`; one it does not place was delivered in `_id` order — or, inside the
    /// window, is still to come.
    pub async fn start_polling(
        &self,
        from: &PollCursor,
        until: &PollCursor,
        channels: &[Channel],
        delivered: Snapshot,
    ) -> Result<CatchUp, CatchUpError> {
        if from.fingerprint() != until.fingerprint() {
            return Err(CatchUpError::Unusable(
                "a polling position from a gateway watching other collections".into(),
            ));
        }
        let from_pos = Position::Polling(from.clone());
        if let Some(start) = &delivered.switched_at {
            // From before the last switch: the change stream's stretch in between cannot be
            // replayed by polling.
            if matches!(
                from_pos.cmp_same_kind(start),
                None | Some(CmpOrdering::Less)
            ) {
                return Err(CatchUpError::ModeChanged);
            }
        }
        if let Some(forgotten) = &delivered.late_forgotten {
            // A late document delivered after `from` may have been forgotten.
            if forgotten.cmp_same_kind(&from_pos) == Some(CmpOrdering::Greater) {
                return Err(CatchUpError::HistoryLost);
            }
        }
        let permit = self.slot().await?;
        let (tx, rx) = mpsc::channel(BATCH);
        let Some(high) = until.high() else {
            return Ok(CatchUp::empty(rx));
        };
        let overlap = self.poll_overlap;
        let window_below = |id: &ObjectId| polling::window_start(polling::oid_secs(id), overlap);
        let mut range = doc! {"$lte": high};
        if let Some(low) = from.high() {
            range.insert("$gte", window_below(&low));
        }
        let window_low = window_below(&high);
        let mut queries = Vec::new();
        for (idx, spec) in self.sources.iter().enumerate() {
            if let Some(any_of) = spec.filter_for_any(channels, "") {
                queries.push((
                    idx,
                    spec.clone(),
                    doc! {"_id": range.clone(), "$or": any_of},
                ));
            }
        }
        let db = self.db.clone();
        let fingerprint = until.fingerprint();
        let (opened_tx, opened_rx) = oneshot::channel();
        let (catchup, complete) = CatchUp::new(rx);
        let mut out = Out {
            tx,
            stall: self.stall,
            shutdown: self.tasks.shutdown_signal(),
        };
        self.tasks.spawn(async move {
            let _permit = permit;
            let mut rows: Vec<(ObjectId, usize, SourceSpec, Document)> = Vec::new();
            for (idx, spec, filter) in queries {
                // One more than allowed: enough to know the position is too far behind, never
                // the whole collection (a forged `p.<fp>.-.0` once read all of it).
                let room = (MAX_POLL_CATCHUP + 1).saturating_sub(rows.len());
                let found: mongodb::error::Result<Vec<Document>> = async {
                    db.collection::<Document>(&spec.collection)
                        .find(filter)
                        .sort(doc! {"_id": 1})
                        .limit(room as i64)
                        .await?
                        .try_collect()
                        .await
                }
                .await;
                match found {
                    Ok(docs) => rows.extend(docs.into_iter().filter_map(|d| {
                        Some((d.get_object_id("_id").ok()?, idx, spec.clone(), d))
                    })),
                    Err(e) => {
                        let _ = opened_tx.send(Err(CatchUpError::Failed(e.to_string())));
                        return;
                    }
                }
                if rows.len() > MAX_POLL_CATCHUP {
                    let _ = opened_tx.send(Err(CatchUpError::TooFarBehind));
                    return;
                }
            }
            let _ = opened_tx.send(Ok(()));
            let mut placed: Vec<(Position, SourceSpec, Document)> = Vec::with_capacity(rows.len());
            for (id, _, spec, doc) in rows {
                let key = document_key(&spec.collection, &Bson::ObjectId(id));
                if delivered.before_switch.contains(&key) {
                    continue; // delivered before this segment began, so before `from`
                }
                let pos = match delivered.positions.get(&key) {
                    Some(p) => p.clone(),
                    None if id >= window_low => continue, // not delivered yet: arrives live
                    None => Position::Polling(PollCursor::new(fingerprint, Some(id), 0)),
                };
                if pos.cmp_same_kind(&from_pos) == Some(CmpOrdering::Greater) {
                    placed.push((pos, spec, doc));
                }
            }
            placed.sort_by(|a, b| a.0.cmp_same_kind(&b.0).unwrap_or(CmpOrdering::Equal));
            for (pos, spec, doc) in placed {
                let ev = Event::for_source(pos, &spec, Op::Insert, &doc);
                if !out.offer(Ok(Arc::new(ev))).await {
                    return;
                }
            }
            complete.store(true, Ordering::SeqCst);
        });
        match opened_rx.await {
            Ok(Ok(())) => Ok(catchup),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(CatchUpError::Failed("catch-up task ended".into())),
        }
    }

    /// Catch-ups running and waiting for a slot, for the metrics.
    pub fn running_and_queued(&self) -> (usize, usize) {
        let running = self
            .concurrency
            .saturating_sub(self.slots.available_permits());
        (running, self.waiting.load(Ordering::SeqCst))
    }

    async fn slot(&self) -> Result<OwnedSemaphorePermit, CatchUpError> {
        if let Ok(p) = Arc::clone(&self.slots).try_acquire_owned() {
            return Ok(p);
        }
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(CatchUpError::Busy);
        }
        let permit = Arc::clone(&self.slots).acquire_owned().await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        permit.map_err(|_| CatchUpError::Failed("shutting down".into()))
    }

    /// Opens a catch-up from `from` to `until` for `channels`. Returns once MongoDB accepted
    /// the resume (so a bad position can still be answered with a 4xx before streaming).
    pub async fn start(
        &self,
        from: &Position,
        until: &Position,
        channels: &[Channel],
    ) -> Result<CatchUp, CatchUpError> {
        let permit = self.slot().await?;
        let Some(point) = from.resume_point() else {
            return Err(CatchUpError::Unusable(
                "not a change-stream position".into(),
            ));
        };
        let (tx, rx) = mpsc::channel(BATCH);
        let Some(pipeline) = source::pipeline::for_channels(&self.sources, channels) else {
            // No source routes to these channels: nothing to catch up on.
            return Ok(CatchUp::empty(rx));
        };
        let (opened_tx, opened_rx) = oneshot::channel();
        let db = self.db.clone();
        let sources = self.sources.clone();
        let until = until.clone();
        let channels: Vec<Channel> = channels.to_vec();
        let (catchup, complete) = CatchUp::new(rx);
        let mut out = Out {
            tx,
            stall: self.stall,
            shutdown: self.tasks.shutdown_signal(),
        };
        self.tasks.spawn(async move {
            let _permit = permit;
            let open = |resume: Resume| {
                let watch = db
                    .watch()
                    .pipeline(pipeline.clone())
                    .full_document(mongodb::options::FullDocumentType::UpdateLookup)
                    .max_await_time(Duration::from_millis(200))
                    .batch_size(BATCH as u32);
                async move {
                    match resume {
                        Resume::After(t) => watch.resume_after(t).await,
                        Resume::StartAfter(t) => watch.start_after(t).await,
                        Resume::AtOperationTime(ts) => watch.start_at_operation_time(ts).await,
                    }
                }
            };
            let first = match point {
                ResumePoint::After(d) => match bson::from_document(d) {
                    Ok(t) => Resume::After(t),
                    Err(e) => {
                        let _ = opened_tx.send(Err(mongodb::error::Error::custom(format!(
                            "not a resume token: {e}"
                        ))));
                        return;
                    }
                },
                ResumePoint::AtOperationTime(ts) => Resume::AtOperationTime(ts),
            };
            let mut stream = match open(first).await {
                Ok(s) => {
                    let _ = opened_tx.send(Ok(()));
                    s.with_type::<Document>()
                }
                Err(e) => {
                    let _ = opened_tx.send(Err(e));
                    return;
                }
            };
            let mut invalidates = 0;
            loop {
                // Done once MongoDB's position has reached the subscription head.
                if let Some(p) = stream
                    .resume_token()
                    .as_ref()
                    .and_then(change_stream::position_of)
                {
                    if p >= until {
                        complete.store(true, Ordering::SeqCst);
                        return;
                    }
                }
                if change_stream::is_over(&stream) {
                    // Replayed into an invalidate (a dropped database): continue after it, as
                    // the live watcher did.
                    invalidates += 1;
                    let reopened = match stream.resume_token() {
                        Some(t) if invalidates <= MAX_INVALIDATES => {
                            open(Resume::StartAfter(t)).await
                        }
                        _ => Err(mongodb::error::Error::custom(
                            "the catch-up stream ended at an invalidate",
                        )),
                    };
                    match reopened {
                        Ok(s) => stream = s.with_type::<Document>(),
                        Err(e) => {
                            let _ = out.offer(Err(e.to_string())).await;
                            return;
                        }
                    }
                    continue;
                }
                let next = tokio::select! {
                    n = stream.next_if_any() => n,
                    _ = out.shutdown.wait_for(|s| *s) => return,
                    _ = out.tx.closed() => return, // the client went away
                };
                let raw = match next {
                    Ok(Some(raw)) => raw,
                    Ok(None) => continue,
                    Err(e) => {
                        let _ = out.offer(Err(e.to_string())).await;
                        return;
                    }
                };
                let ev = match change_stream::to_event(&sources, &raw) {
                    Ok(Some(ev)) => ev,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!("catch-up skipping a change event: {e}");
                        continue;
                    }
                };
                if ev.position > until {
                    complete.store(true, Ordering::SeqCst);
                    return;
                }
                if !channels.iter().any(|c| ev.channel.is_within(c)) {
                    continue;
                }
                if !out.offer(Ok(Arc::new(ev))).await {
                    return;
                }
            }
        });
        match opened_rx.await {
            Ok(Ok(())) => Ok(catchup),
            Ok(Err(e)) if source::is_history_lost(&e) => Err(CatchUpError::HistoryLost),
            Ok(Err(e)) if source::is_unusable_token(&e) => {
                Err(CatchUpError::Unusable(e.to_string()))
            }
            Ok(Err(e)) => Err(CatchUpError::Failed(e.to_string())),
            Err(_) => Err(CatchUpError::Failed("catch-up task ended".into())),
        }
    }
}
