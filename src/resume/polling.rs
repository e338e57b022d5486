//! Catching up in polling mode: every document delivered after the client's position up to
//! the head it subscribed at, at the position it was delivered at, one query per source.
//!
//! `_id` alone cannot say which documents those are: a late document (committed after newer
//! ones) delivered after `from` has an `_id` below `from`'s cursor, and a document inside the
//! overlap window may not have been delivered yet (it arrives live, after `until`). So the
//! query starts one window below `from`'s cursor, and the delivered record (taken atomically
//! with `until`) decides: a document it places is sent if it was delivered after `from`; one
//! it does not place was delivered in `_id` order — or, inside the window, is still to come.

use std::cmp::Ordering as CmpOrdering;
use std::time::Duration;

use bson::oid::ObjectId;
use bson::{doc, Bson, Document};
use futures::TryStreamExt;
use mongodb::Database;

use super::replay::Replay;
use super::slots::Slots;
use super::CatchUpError;
use crate::channel::Channel;
use crate::delivered::Snapshot;
use crate::event::{document_key, Event, Op};
use crate::position::{PollCursor, Position};
use crate::routing::{SourceSpec, SourceSpecs};
use crate::source::polling::{oid_secs, window_start};
use crate::tasks::Tasks;

/// The most documents a polling catch-up replays (it must sort late documents, so it holds
/// them); a position further behind gets a `gap` (`too_far_behind`).
pub const MAX_POLL_CATCHUP: usize = 10_000;

pub struct PollingCatchUp {
    pub db: Database,
    pub sources: SourceSpecs,
    pub tasks: Tasks,
    pub stall: Duration,
    /// The polling overlap window (`SSE_POLL_OVERLAP_MS`).
    pub overlap: Duration,
}

impl PollingCatchUp {
    pub async fn start(
        &self,
        slots: &Slots,
        from: &PollCursor,
        until: &PollCursor,
        channels: &[Channel],
        delivered: Snapshot,
    ) -> Result<Replay, CatchUpError> {
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
        let Some(high) = until.high() else {
            return Ok(Replay::empty());
        };
        let permit = slots.take().await?;
        let window_below = |id: &ObjectId| window_start(oid_secs(id), self.overlap);
        let mut range = doc! {"$lte": high};
        if let Some(low) = from.high() {
            range.insert("$gte", window_below(&low));
        }
        let window_low = window_below(&high);
        let mut queries = Vec::new();
        for spec in self.sources.iter() {
            if let Some(any_of) = spec.filter_for_any(channels, "") {
                queries.push((spec.clone(), doc! {"_id": range.clone(), "$or": any_of}));
            }
        }
        let db = self.db.clone();
        let (fingerprint, origin) = (until.fingerprint(), until.origin());
        let (opened_tx, opened_rx) = tokio::sync::oneshot::channel();
        let (replay, mut out) = Replay::channel(self.stall, self.tasks.shutdown_signal());
        self.tasks.spawn(async move {
            let _permit = permit;
            let rows = match find_all(&db, queries).await {
                Ok(rows) => rows,
                Err(e) => {
                    let _ = opened_tx.send(Err(e));
                    return;
                }
            };
            let _ = opened_tx.send(Ok(()));
            let mut placed: Vec<(Position, SourceSpec, Document)> = Vec::with_capacity(rows.len());
            for (id, spec, doc) in rows {
                let key = document_key(&spec.collection, &Bson::ObjectId(id));
                if delivered.before_switch.contains(&key) {
                    continue; // delivered before this segment began, so before `from`
                }
                let pos = match delivered.positions.get(&key) {
                    Some(p) => p.clone(),
                    None if id >= window_low => continue, // not delivered yet: arrives live
                    None => {
                        Position::Polling(PollCursor::counted_by(fingerprint, Some(id), 0, origin))
                    }
                };
                if pos.cmp_same_kind(&from_pos) == Some(CmpOrdering::Greater) {
                    placed.push((pos, spec, doc));
                }
            }
            placed.sort_by(|a, b| a.0.cmp_same_kind(&b.0).unwrap_or(CmpOrdering::Equal));
            for (pos, spec, doc) in placed {
                if !out
                    .send(Event::for_source(pos, &spec, Op::Insert, &doc))
                    .await
                {
                    return;
                }
            }
            out.done();
        });
        match opened_rx.await {
            Ok(Ok(())) => Ok(replay),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(CatchUpError::Failed("catch-up task ended".into())),
        }
    }
}

/// The documents of every query, at most one more than [`MAX_POLL_CATCHUP`] in all: enough to
/// know the position is too far behind, never the whole collection (a forged `p.<fp>.-.0`
/// once read all of it).
async fn find_all(
    db: &Database,
    queries: Vec<(SourceSpec, Document)>,
) -> Result<Vec<(ObjectId, SourceSpec, Document)>, CatchUpError> {
    let mut rows = Vec::new();
    for (spec, filter) in queries {
        let room = (MAX_POLL_CATCHUP + 1).saturating_sub(rows.len());
        let docs: Vec<Document> = async {
            db.collection::<Document>(&spec.collection)
                .find(filter)
                .sort(doc! {"_id": 1})
                .limit(room as i64)
                .await?
                .try_collect()
                .await
        }
        .await
        .map_err(|e: mongodb::error::Error| CatchUpError::Failed(e.to_string()))?;
        rows.extend(
            docs.into_iter()
                .filter_map(|d| Some((d.get_object_id("_id").ok()?, spec.clone(), d))),
        );
        if rows.len() > MAX_POLL_CATCHUP {
            return Err(CatchUpError::TooFarBehind);
        }
    }
    Ok(rows)
}
