//! The polling source, for deployments without change streams (a standalone `mongod`, or a
//! user without the `changeStream` privilege). One query per source per interval, whatever
//! the number of browsers (invariant 4).
//!
//! ObjectIds order documents by creation time, but writers do not commit in `_id` order: a
//! document made before another can be inserted after it. So each query re-reads an overlap
//! window (`_id` from `high - overlap` on) and a set of the `_id`s already delivered within
//! that window keeps re-reads from becoming duplicates. A late document is delivered when it
//! is first seen, with a position that counts it as late (`PollCursor::late`). The one
//! remaining loss: a write whose `_id` is older than the window when it finally commits.
//!
//! A busy window holds many thousands of documents, nearly all delivered already, so the
//! re-read asks for `_id`s only (served from the `_id` index) and whole documents are fetched
//! just for the `_id`s not seen yet, as ranges of consecutive unseen ones: usually one range
//! (what arrived since the last poll), one more per late document. Reading the whole window's
//! documents every poll cost hundreds of megabytes while a large insert went on. Of what a
//! range returns, only the `_id`s the re-read listed are delivered: one committed since may
//! have been committed after a document outside every range, which this poll does not see.
//!
//! Polling sees inserts only (that is what a log is); updates need change streams. Documents
//! whose `_id` is not an ObjectId are skipped and counted.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bson::oid::ObjectId;
use bson::raw::RawBsonRef;
use bson::{doc, Bson, Document, RawDocumentBuf};
use mongodb::Database;

use crate::event::{document_key, Event, Op};
use crate::position::{sources_fingerprint, PollCursor, Position};
use crate::routing::SourceSpecs;

/// Counters for the metrics endpoint.
#[derive(Debug, Default)]
pub struct PollStats {
    pub polls: AtomicU64,
    pub queries: AtomicU64,
    pub documents_found: AtomicU64,
    pub non_objectid_skipped: AtomicU64,
    /// `_id`s read while re-reading overlap windows: what a busy window costs each poll.
    pub ids_scanned: AtomicU64,
    /// Whole documents read from MongoDB: the memory and bytes a poll costs.
    pub documents_fetched: AtomicU64,
}

pub struct Poller {
    db: Database,
    sources: SourceSpecs,
    overlap: Duration,
    /// See [`Poller::poll`]; whole seconds.
    settle: Duration,
    fingerprint: u32,
    high: Option<ObjectId>,
    late: u32,
    /// Names this poller in its positions (see `position`): drawn at random, so that no other
    /// poller, here or on another gateway, reads them as its own.
    origin: u32,
    /// `(_id, source index)` delivered within the overlap window.
    seen: BTreeSet<(ObjectId, usize)>,
    /// See [`Poller::take_baseline`].
    baseline: Vec<(Arc<str>, Position)>,
    /// See [`Poller::not_before`]: documents below this `_id` that were not delivered are
    /// not this gateway's to deliver.
    not_before: Option<ObjectId>,
    stats: Arc<PollStats>,
    /// Awaited once, after the next re-read and before its fetch: where a test commits
    /// documents in between.
    /// (In a mutex only so that `&Poller` stays `Send`.)
    #[cfg(test)]
    after_scan: std::sync::Mutex<Option<futures::future::BoxFuture<'static, ()>>>,
    /// Like `after_scan`, before the re-read: where a test lets time pass during a poll.
    #[cfg(test)]
    before_scan: std::sync::Mutex<Option<futures::future::BoxFuture<'static, ()>>>,
    /// Seconds added to this poller's clock: a test's way of making a poll slow.
    #[cfg(test)]
    clock_ahead: Arc<AtomicU64>,
}

/// How far ahead of this gateway's clock an `_id` may move the polling cursor.
const FUTURE_TOLERANCE_SECS: u32 = 2;

/// `_id`s per reply of a window re-read: about 300 KB, where a default batch may be 16 MB held
/// whole. A window of a million documents then costs a hundred `getMore`s a poll.
const ID_BATCH: u32 = 10_000;

/// Ranges of unseen `_id`s per fetch query. Each late document makes a range of its own;
/// this bounds a query's size while a flood of late documents still costs few queries.
const FETCH_RANGES: usize = 256;

/// Whether a poller could have moved its cursor to `id` by now: not past this gateway's
/// clock horizon.
pub fn within_horizon(id: &ObjectId) -> bool {
    secs_within_horizon(oid_secs(id))
}

/// A time (seconds) no further ahead of this gateway's clock than [`FUTURE_TOLERANCE_SECS`]:
/// one another gateway, or MongoDB, may already have reached.
pub fn secs_within_horizon(secs: u32) -> bool {
    secs <= now_secs().saturating_add(FUTURE_TOLERANCE_SECS)
}

fn now_secs() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs().min(u64::from(u32::MAX)) as u32)
        .unwrap_or(0)
}

/// The smallest ObjectId of a second: the lower bound of a time window.
pub fn oid_at(secs: u32) -> ObjectId {
    let mut b = [0u8; 12];
    b[..4].copy_from_slice(&secs.to_be_bytes());
    ObjectId::from_bytes(b)
}

/// The lower bound of the overlap window of a cursor at `high_secs`: the first ObjectId of
/// the second `overlap` before it. The poller, the polling catch-up, the polling backlog and
/// the delivered-documents record all read the same window, so they all use this.
pub fn window_start(high_secs: u32, overlap: Duration) -> ObjectId {
    let overlap = overlap.as_secs().min(u64::from(u32::MAX)) as u32;
    oid_at(high_secs.saturating_sub(overlap))
}

/// A poller's origin: 32 random bits from the standard library's per-process hash seed and
/// the clock (no `rand` needed for a tag that must only differ between pollers).
fn random_origin() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(NEXT.fetch_add(1, Ordering::Relaxed));
    if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(d.as_nanos());
    }
    let x = h.finish();
    (x ^ (x >> 32)) as u32
}

/// The largest ObjectId of a second.
pub fn oid_last(secs: u32) -> ObjectId {
    let mut b = [0xffu8; 12];
    b[..4].copy_from_slice(&secs.to_be_bytes());
    ObjectId::from_bytes(b)
}

pub fn oid_secs(oid: &ObjectId) -> u32 {
    let b = oid.bytes();
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

impl Poller {
    fn new(db: Database, sources: SourceSpecs, overlap: Duration, stats: Arc<PollStats>) -> Poller {
        let fingerprint = sources_fingerprint(sources.collections());
        Poller {
            db,
            sources,
            overlap,
            settle: Duration::ZERO,
            fingerprint,
            high: None,
            late: 0,
            origin: random_origin(),
            seen: BTreeSet::new(),
            baseline: Vec::new(),
            not_before: None,
            stats,
            #[cfg(test)]
            after_scan: std::sync::Mutex::new(None),
            #[cfg(test)]
            before_scan: std::sync::Mutex::new(None),
            #[cfg(test)]
            clock_ahead: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Starts from now: everything already stored counts as delivered.
    pub async fn start_now(
        db: Database,
        sources: SourceSpecs,
        overlap: Duration,
        stats: Arc<PollStats>,
    ) -> mongodb::error::Result<Poller> {
        let mut p = Poller::new(db, sources, overlap, stats);
        // Not past the horizon: a far-future `_id` must not place the window there.
        let horizon = oid_at(now_secs().saturating_add(FUTURE_TOLERANCE_SECS + 1));
        for spec in p.sources.iter() {
            let newest =
                p.db.collection::<Document>(&spec.collection)
                    .find_one(doc! {"_id": {"$type": "objectId", "$lt": horizon}})
                    .sort(doc! {"_id": -1})
                    .projection(doc! {"_id": 1})
                    .await?;
            if let Some(Ok(id)) = newest.map(|d| d.get_object_id("_id")) {
                if p.high.is_none_or(|h| id > h) {
                    p.high = Some(id);
                }
            }
        }
        // Everything inside the window is already "seen": a client connecting now starts
        // after it. But a client resuming from an earlier gateway's id may not have it — it
        // may have been written while no gateway polled — so these documents are reported as
        // delivered at their own `_id` ([`Poller::take_baseline`]): a catch-up then sends each
        // one that is after the client's position, instead of leaving it out as "not polled
        // yet, it will arrive live" (it never would).
        let mut found = Vec::new();
        for idx in 0..p.sources.iter().count() {
            p.scan_window(idx, |id| found.extend(id.map(|id| (id, idx))))
                .await?;
        }
        for (id, idx) in found {
            let Some(spec) = p.sources.iter().nth(idx) else {
                continue;
            };
            let key = document_key(&spec.collection, &Bson::ObjectId(id));
            p.seen.insert((id, idx));
            let cursor = PollCursor::counted_by(p.fingerprint, Some(id), 0, Some(p.origin));
            p.baseline.push((key, Position::Polling(cursor)));
        }
        Ok(p)
    }

    /// What [`Poller::start_now`] counted as delivered without delivering it, each at the
    /// position of its own `_id`.
    pub fn take_baseline(&mut self) -> Vec<(Arc<str>, Position)> {
        std::mem::take(&mut self.baseline)
    }

    /// Continues after a change stream that reached cluster time `secs`: the window is re-read
    /// and documents the change stream already delivered (`delivered`, keys from the history
    /// ring) are not repeated.
    pub async fn after_change_stream(
        db: Database,
        sources: SourceSpecs,
        overlap: Duration,
        stats: Arc<PollStats>,
        secs: u32,
        delivered: &HashSet<Arc<str>>,
    ) -> mongodb::error::Result<Poller> {
        let mut p = Poller::new(db, sources, overlap, stats);
        // The cursor stays at the change stream's time: starting it at the highest `_id` the
        // stream delivered (fewer late documents) re-delivered documents once the window moved
        // below what the hub still remembered (the chaos soak, seed 2026).
        //
        // At the end of that second, counting one late batch: the client has what the stream
        // sent, by commit time — every document of that second committed so far, whatever
        // its `_id`, and none committed later, whatever its `_id`. No polling cursor says
        // that. "Everything up to the first `_id` of the second" made another gateway send
        // that second's documents again (the chaos soak, seed 77); the end of the second with
        // a late count makes it filter them all out and say, with a `late_order_unknown`
        // gap, that later commits up to there may be missing. Here, what the stream did not
        // send is delivered as late.
        p.high = Some(oid_last(secs));
        p.late = 1;
        p.scan_delivered(delivered).await?;
        Ok(p)
    }

    /// Marks as seen every document of the window that `delivered` holds.
    async fn scan_delivered(
        &mut self,
        delivered: &HashSet<Arc<str>>,
    ) -> mongodb::error::Result<()> {
        let mut found = Vec::new();
        for (idx, spec) in self.sources.iter().enumerate() {
            self.scan_window(idx, |id| {
                found.extend(id.filter(|id| {
                    delivered.contains(&document_key(&spec.collection, &Bson::ObjectId(*id)))
                }))
            })
            .await?;
            for id in found.drain(..) {
                self.seen.insert((id, idx));
            }
        }
        Ok(())
    }

    /// Taking over from a change stream that began streaming at cluster time `began` (this
    /// process's start, or its last gap) and reached `head`: a document of the window that
    /// the stream did not deliver and whose `_id` is from before `began` was committed before
    /// it — the gateway never had it; connections that need it were caught up — and is not
    /// delivered now. A gateway restarted less than a window before such a switch sent every
    /// connection the second before its start again (the chaos soak, seed 2026: defect 10).
    /// `began`'s own second counts as before it once the stream ran more than a second past
    /// it: a document of that second committed after the stream's head would have to take
    /// longer to commit than that.
    pub fn not_before(mut self, began: Option<u32>, head: u32) -> Poller {
        self.not_before = began.map(|b| {
            if head > b.saturating_add(1) {
                oid_at(b.saturating_add(1))
            } else {
                oid_at(b)
            }
        });
        self
    }

    /// Delivers a document only once its `_id` is `settle` old (whole seconds; see
    /// [`Poller::poll`]).
    pub fn settling(mut self, settle: Duration) -> Poller {
        self.settle = settle;
        self
    }

    /// This gateway's clock, in seconds (a test may move it ahead).
    fn now(&self) -> u32 {
        #[cfg(test)]
        {
            let ahead = self
                .clock_ahead
                .load(Ordering::Relaxed)
                .min(u64::from(u32::MAX)) as u32;
            now_secs().saturating_add(ahead)
        }
        #[cfg(not(test))]
        now_secs()
    }

    /// The clock horizon now (see [`FUTURE_TOLERANCE_SECS`]).
    fn horizon(&self) -> u32 {
        self.now().saturating_add(FUTURE_TOLERANCE_SECS)
    }

    pub fn position(&self) -> Position {
        Position::Polling(PollCursor::counted_by(
            self.fingerprint,
            self.high,
            self.late,
            Some(self.origin),
        ))
    }

    pub fn fingerprint(&self) -> u32 {
        self.fingerprint
    }

    /// The keys of the documents delivered within the window: after switching back to a
    /// change stream, its first events may repeat them.
    pub fn delivered_keys(&self) -> HashSet<Arc<str>> {
        self.seen
            .iter()
            .filter_map(|(id, idx)| {
                let spec = self.sources.iter().nth(*idx)?;
                Some(document_key(&spec.collection, &Bson::ObjectId(*id)))
            })
            .collect()
    }

    fn window_low(&self) -> Option<ObjectId> {
        let high = self.high?;
        Some(window_start(oid_secs(&high), self.overlap))
    }

    /// Re-reads source `idx`'s window, `_id`s only, in `_id` order: `each` gets every one
    /// (`None` for an `_id` that is not an ObjectId). One query per source, in batches of
    /// [`ID_BATCH`], nothing held but the batch being read.
    async fn scan_window(
        &self,
        idx: usize,
        mut each: impl FnMut(Option<ObjectId>),
    ) -> mongodb::error::Result<()> {
        let Some(spec) = self.sources.iter().nth(idx) else {
            return Ok(());
        };
        let filter = match self.window_low() {
            Some(low) => doc! {"_id": {"$gte": low}},
            None => doc! {},
        };
        self.stats.queries.fetch_add(1, Ordering::Relaxed);
        let mut cursor = self
            .db
            .collection::<RawDocumentBuf>(&spec.collection)
            .find(filter)
            .sort(doc! {"_id": 1})
            .projection(doc! {"_id": 1})
            .batch_size(ID_BATCH)
            .await?;
        let mut scanned = 0u64;
        while cursor.advance().await? {
            scanned += 1;
            match cursor.current().get("_id") {
                Ok(Some(RawBsonRef::ObjectId(id))) => each(Some(id)),
                _ => each(None),
            }
        }
        self.stats.ids_scanned.fetch_add(scanned, Ordering::Relaxed);
        Ok(())
    }

    /// The whole documents of source `idx` with `_id`s in `runs` (inclusive ranges), in `_id`
    /// order, leaving out any already seen.
    async fn fetch(
        &self,
        idx: usize,
        runs: &[(ObjectId, ObjectId)],
    ) -> mongodb::error::Result<Vec<(ObjectId, Document)>> {
        let Some(spec) = self.sources.iter().nth(idx) else {
            return Ok(Vec::new());
        };
        let coll = self.db.collection::<Document>(&spec.collection);
        let mut out = Vec::new();
        for chunk in runs.chunks(FETCH_RANGES) {
            let mut ranges: Vec<Document> = chunk
                .iter()
                .map(|&(first, last)| {
                    if first == last {
                        doc! {"_id": first}
                    } else {
                        doc! {"_id": {"$gte": first, "$lte": last}}
                    }
                })
                .collect();
            let filter = match ranges.len() {
                1 => ranges.remove(0),
                _ => doc! {"$or": ranges},
            };
            self.stats.queries.fetch_add(1, Ordering::Relaxed);
            let mut cursor = coll.find(filter).sort(doc! {"_id": 1}).await?;
            while cursor.advance().await? {
                self.stats.documents_fetched.fetch_add(1, Ordering::Relaxed);
                let doc = cursor.deserialize_current()?;
                // Rules out a repeat whatever the server returns.
                if let Ok(id) = doc.get_object_id("_id") {
                    if !self.seen.contains(&(id, idx)) {
                        out.push((id, doc));
                    }
                }
            }
        }
        Ok(out)
    }

    /// One polling round: the new documents as events, in delivery order.
    ///
    /// Only documents whose `_id` second is at least the settle time old are delivered (and
    /// those beyond the clock horizon, as late ones, see below). By then every write of that
    /// second has committed, bar one slower than the settle time, so each poll delivers
    /// whole seconds in `_id` order, and the same documents in the same order on every
    /// gateway: a polling id without late documents means "everything up to this `_id`"
    /// wherever it is resumed. Without settling, ObjectIds made in different processes —
    /// which sort by process within a second — made most polls deliver some documents late,
    /// counted in an order only that gateway knew.
    pub async fn poll(&mut self) -> mongodb::error::Result<Vec<Event>> {
        let frontier = (!self.settle.is_zero()).then(|| {
            let settle = self.settle.as_secs().min(u64::from(u32::MAX)) as u32;
            oid_at(self.now().saturating_sub(settle))
        });
        self.poll_until(frontier).await
    }

    /// A round that delivers everything committed, settled or not: the last one before a
    /// change stream takes over.
    pub async fn poll_all(&mut self) -> mongodb::error::Result<Vec<Event>> {
        self.poll_until(None).await
    }

    async fn poll_until(
        &mut self,
        frontier: Option<ObjectId>,
    ) -> mongodb::error::Result<Vec<Event>> {
        self.stats.polls.fetch_add(1, Ordering::Relaxed);
        // Beyond the clock horizon a document waits for nothing: it is delivered late at once.
        // The horizon is read as each `_id` is, not once per poll: a poll can take seconds
        // (a busy window, a failing MongoDB), and a document created meanwhile would look
        // like one from a clock running ahead and overtake those before it that had not
        // settled yet (the chaos soak, seed 2026: defect 16).
        let due = |id: &ObjectId, horizon: &dyn Fn() -> u32| {
            frontier.is_none_or(|f| *id < f) || oid_secs(id) > horizon()
        };
        let mut fresh: Vec<(ObjectId, usize, Document)> = Vec::new();
        for idx in 0..self.sources.iter().count() {
            // Unseen `_id`s with no seen one between them: one range each.
            let mut runs: Vec<(ObjectId, ObjectId)> = Vec::new();
            // The same `_id`s one by one, in `_id` order: what this poll may deliver.
            let mut listed: Vec<ObjectId> = Vec::new();
            let mut extends = false;
            let mut skipped = 0;
            #[cfg(test)]
            {
                let hook = self.before_scan.get_mut().map(Option::take).unwrap_or(None);
                if let Some(hook) = hook {
                    hook.await;
                }
            }
            let (seen, not_before) = (&self.seen, self.not_before);
            let clock = || self.horizon();
            self.scan_window(idx, |id| {
                let Some(id) = id else {
                    skipped += 1;
                    return;
                };
                let before_start = not_before.is_some_and(|b| id < b);
                if seen.contains(&(id, idx)) || !due(&id, &clock) || before_start {
                    extends = false;
                } else {
                    listed.push(id);
                    match runs.last_mut() {
                        Some(run) if extends => run.1 = id,
                        _ => runs.push((id, id)),
                    }
                    extends = true;
                }
            })
            .await?;
            self.stats
                .non_objectid_skipped
                .fetch_add(skipped, Ordering::Relaxed);
            #[cfg(test)]
            {
                let hook = self.after_scan.get_mut().map(Option::take).unwrap_or(None);
                if let Some(hook) = hook {
                    hook.await;
                }
            }
            let mut docs = self.fetch(idx, &runs).await?;
            // A range also holds documents committed since the re-read. Delivering one of
            // them now would put it before a document committed earlier whose `_id` lies
            // between seen ones, outside every range, which this poll did not list either
            // (a publish whose insert was slow across a switch to polling, the chaos soak:
            // defect 11) — and its polling id would then claim "everything up to here"
            // without it. The next re-read lists both.
            let fetched = docs.len();
            docs.retain(|(id, _)| listed.binary_search(id).is_ok());
            if docs.len() != listed.len() {
                tracing::debug!(
                    source = idx,
                    listed = listed.len(),
                    fetched,
                    kept = docs.len(),
                    "a fetch found documents committed since the re-read (left for the next poll) or missed listed ones (deleted since)"
                );
            }
            fresh.extend(docs.into_iter().map(|(id, doc)| (id, idx, doc)));
        }
        fresh.sort_by_key(|a| (a.0.bytes(), a.1));
        self.stats
            .documents_found
            .fetch_add(fresh.len() as u64, Ordering::Relaxed);
        if !fresh.is_empty() && tracing::enabled!(tracing::Level::TRACE) {
            let ids: Vec<String> = fresh.iter().map(|(id, i, _)| format!("{i}:{id}")).collect();
            tracing::trace!(
                origin = format_args!("{:08X}", self.origin),
                high = ?self.high,
                frontier = ?frontier,
                ids = %ids.join(","),
                "poll"
            );
        }
        let horizon = self.horizon();
        let mut events = Vec::with_capacity(fresh.len());
        for (id, idx, doc) in fresh {
            // One writer whose clock runs ahead must not move the window past everyone
            // else's documents: beyond the horizon, a document is delivered as a late one
            // (the cursor stays) and re-read with the window until time catches up with it.
            if self.high.is_none_or(|h| id > h) && oid_secs(&id) <= horizon {
                self.high = Some(id);
                self.late = 0;
            } else {
                self.late = self.late.saturating_add(1);
            }
            self.seen.insert((id, idx));
            let Some(spec) = self.sources.iter().nth(idx) else {
                continue;
            };
            events.push(Event::for_source(self.position(), spec, Op::Insert, &doc));
        }
        // Forget what can no longer be re-read.
        if let Some(low) = self.window_low() {
            self.seen = self.seen.split_off(&(low, 0));
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A standalone mongo-sim (no change streams: what polling is for) and a database on it.
    async fn standalone_sim(db: &str) -> (mongo_sim::Sim, Database) {
        let sim = mongo_sim::Sim::start(mongo_sim::SimConfig {
            standalone: true,
            ..Default::default()
        })
        .await
        .expect("start mongo-sim");
        let client = mongodb::Client::with_uri_str(sim.uri())
            .await
            .expect("a client for mongo-sim");
        (sim, client.database(db))
    }

    /// Found by the chaos soak (defect 11): a publish whose insert was slow across a switch
    /// to polling committed between a poll's re-read and its fetch, with an `_id` between
    /// documents already delivered; the publish after it committed in the same moment with an
    /// `_id` inside the fetch's range of new ones. The fetch returned the later one, the next
    /// poll the earlier one, late: every reader got them out of order. (The earlier code
    /// delivered 5, 6, 7 and then 2.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_document_committed_during_a_poll_waits_for_the_next_with_those_before_it() {
        let (sim, db) = standalone_sim("poll_fetch_race").await;
        let logs = db.collection::<Document>("logs");
        let secs = now_secs() - 3;
        let id = move |n: u8| {
            let mut b = [0u8; 12];
            b[..4].copy_from_slice(&secs.to_be_bytes());
            b[11] = n;
            ObjectId::from_bytes(b)
        };
        let log = move |n: u8| doc! {"_id": id(n), "workspace_id": "w1", "workflow_id": "f1"};
        let delivered = |evs: &[Event]| -> Vec<u8> {
            evs.iter()
                .map(|e| {
                    (1..=9u8)
                        .find(|n| e.key == Some(document_key("logs", &Bson::ObjectId(id(*n)))))
                        .expect("one of the test's documents")
                })
                .collect()
        };
        let stats = Arc::new(PollStats::default());
        let mut poller =
            Poller::start_now(db, SourceSpecs::default(), Duration::from_secs(10), stats)
                .await
                .expect("start polling");

        logs.insert_many([log(1), log(3)]).await.expect("insert");
        assert_eq!(delivered(&poller.poll().await.expect("poll")), [1, 3]);
        // Listed by the next re-read as one range of new `_id`s, 5 to 7.
        logs.insert_many([log(5), log(7)]).await.expect("insert");
        let between = logs.clone();
        *poller.after_scan.get_mut().expect("not poisoned") = Some(Box::pin(async move {
            // Committed after the re-read, in this order: 2 between delivered ones, then 6
            // inside the range.
            between.insert_one(log(2)).await.expect("insert");
            between.insert_one(log(6)).await.expect("insert");
        }));
        let first = delivered(&poller.poll().await.expect("poll"));
        let second = delivered(&poller.poll().await.expect("poll"));
        assert_eq!(
            (first, second),
            (vec![5, 7], vec![2, 6]),
            "6 was committed after 2 and must not be delivered before it"
        );
        sim.shutdown().await;
    }

    /// Found by the chaos soak (defect 16): a poll that took seconds (MongoDB failing
    /// getMores under a fault) judged the clock horizon at its start, so a publish made while
    /// it ran looked like one from a clock running ahead and was delivered at once, late —
    /// before the publishes committed before it that had not settled yet. Every reader of the
    /// channel got them out of order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_document_created_during_a_slow_poll_does_not_overtake_unsettled_ones() {
        let (sim, db) = standalone_sim("poll_slow_horizon").await;
        let logs = db.collection::<Document>("logs");
        let secs = now_secs();
        let id = move |ahead: u32| {
            let mut b = [0u8; 12];
            b[..4].copy_from_slice(&(secs + ahead).to_be_bytes());
            b[11] = 1;
            ObjectId::from_bytes(b)
        };
        let log =
            move |ahead: u32| doc! {"_id": id(ahead), "workspace_id": "w1", "workflow_id": "f1"};
        let delivered = |evs: &[Event]| -> Vec<u32> {
            evs.iter()
                .map(|e| {
                    (0..10u32)
                        .find(|a| e.key == Some(document_key("logs", &Bson::ObjectId(id(*a)))))
                        .expect("one of the test's documents")
                })
                .collect()
        };
        let stats = Arc::new(PollStats::default());
        let mut poller =
            Poller::start_now(db, SourceSpecs::default(), Duration::from_secs(10), stats)
                .await
                .expect("start polling")
                .settling(Duration::from_secs(1));
        let clock = Arc::clone(&poller.clock_ahead);

        // Not settled yet: made this second.
        logs.insert_one(log(0)).await.expect("insert");
        let later = logs.clone();
        let slow = Arc::clone(&clock);
        *poller.before_scan.get_mut().expect("not poisoned") = Some(Box::pin(async move {
            // The poll takes 3 s; meanwhile a document is made and committed, after the first.
            slow.store(3, Ordering::Relaxed);
            later.insert_one(log(3)).await.expect("insert");
        }));
        let first = delivered(&poller.poll().await.expect("poll"));
        clock.store(5, Ordering::Relaxed);
        let second = delivered(&poller.poll().await.expect("poll"));
        assert_eq!(
            (first, second),
            (vec![], vec![0, 3]),
            "the document made during the poll was committed after the unsettled one and must not be delivered before it"
        );
        sim.shutdown().await;
    }

    #[test]
    fn window_bounds_are_whole_seconds() {
        let o = oid_at(1_700_000_000);
        assert_eq!(oid_secs(&o), 1_700_000_000);
        assert!(oid_at(5) < oid_at(6));
        let real = ObjectId::new();
        assert!(oid_at(oid_secs(&real)) <= real);
        assert!(oid_at(oid_secs(&real) + 1) > real);
        assert!(oid_last(oid_secs(&real)) >= real);
        assert!(oid_last(oid_secs(&real)) < oid_at(oid_secs(&real) + 1));
        assert_eq!(oid_secs(&oid_last(7)), 7);
    }
}
