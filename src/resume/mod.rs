//! How a new connection catches up to the live feed: the one place that owns resuming, for
//! both streaming modes.
//!
//! The hub registers the connection and says where it stands (`hub::Start`): live from the
//! head, a replay from memory, or older than memory. From there this module decides what the
//! connection is sent before its live queue: the ring's events, a catch-up from MongoDB, a
//! backlog, or a `gap` when no exact resume is possible — and refuses only when waiting would
//! help (busy, MongoDB down) or the id is unusable.
//!
//! What differs between change streams and polling is behind [`ModeResume`], one
//! implementation per mode; [`Resumer`] picks it by the kind of the positions involved, and
//! nothing above this module branches on the mode.

pub mod backlog;
pub mod change_stream;
pub mod gap;
pub mod out;
pub mod polling;
pub mod replay;
pub mod slots;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bson::{Bson, Timestamp};
use bytes::Bytes;
use mongodb::{Client, Database};

use self::backlog::{ArrivesLive, BacklogError, Backlogs};
use self::change_stream::ChangeStreamCatchUp;
use self::gap::GapReason;
use self::polling::PollingCatchUp;
use self::replay::Replay;
use self::slots::{NoSlot, Slots};
use crate::channel::Channel;
use crate::delivered::Snapshot;
use crate::event::{document_key, Event};
use crate::hub::{Hub, Start, Subscription};
use crate::metrics::ResumePath;
use crate::position::{sources_fingerprint, Position, PositionKind};
use crate::routing::SourceSpecs;
use crate::source::polling::{oid_secs, window_start};
use crate::sse;
use crate::tasks::Tasks;

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
    /// A polling position more than [`polling::MAX_POLL_CATCHUP`] documents behind.
    TooFarBehind,
}

impl From<NoSlot> for CatchUpError {
    fn from(e: NoSlot) -> Self {
        match e {
            NoSlot::Busy => CatchUpError::Busy,
            NoSlot::Closed => CatchUpError::Failed("shutting down".into()),
        }
    }
}

/// What each streaming mode contributes to resuming.
pub trait ModeResume {
    /// Replays what `channels` missed after `from` up to `until`, both positions of this
    /// mode; `delivered` is the hub's record of the polling window, taken with `until`.
    fn catch_up(
        &self,
        slots: &Slots,
        from: &Position,
        until: &Position,
        channels: &[Channel],
        delivered: Option<Snapshot>,
    ) -> impl std::future::Future<Output = Result<Replay, CatchUpError>>;

    /// A backlog's hand-over to the live queue: once it returns, every backlog row the live
    /// feed delivers after the subscription head is either queued or reported by the answer.
    fn handoff(
        &self,
        hub: &Hub,
        head: &Position,
        operation_time: Option<Timestamp>,
    ) -> impl std::future::Future<Output = ArrivesLive>;
}

impl ModeResume for ChangeStreamCatchUp {
    async fn catch_up(
        &self,
        slots: &Slots,
        from: &Position,
        until: &Position,
        channels: &[Channel],
        _delivered: Option<Snapshot>,
    ) -> Result<Replay, CatchUpError> {
        self.start(slots, from, until, channels).await
    }

    /// Waits until the live feed has passed the backlog query's time, so every row the query
    /// saw after the head is in the queue by now (a resume token begins with its cluster
    /// time).
    async fn handoff(&self, hub: &Hub, _head: &Position, t: Option<Timestamp>) -> ArrivesLive {
        if let Some(t) = t {
            let passed = |p: &Position| {
                p.cluster_time()
                    .is_some_and(|c| (c.time, c.increment) >= (t.time, t.increment))
            };
            if tokio::time::timeout(backlog::HANDOFF_WAIT, hub.wait_head(passed))
                .await
                .is_err()
            {
                tracing::warn!("backlog: the live feed did not pass the query time in time; de-duplicating with what arrived");
            }
        }
        Box::new(|_, _| false)
    }
}

impl ModeResume for PollingCatchUp {
    async fn catch_up(
        &self,
        slots: &Slots,
        from: &Position,
        until: &Position,
        channels: &[Channel],
        delivered: Option<Snapshot>,
    ) -> Result<Replay, CatchUpError> {
        let (Some(from), Some(until)) = (from.polling(), until.polling()) else {
            return Err(CatchUpError::ModeChanged);
        };
        self.start(slots, from, until, channels, delivered.unwrap_or_default())
            .await
    }

    /// Polling positions carry no cluster time: a row the poller has not delivered yet (inside
    /// its overlap window and not in its record) will arrive live, so it is left out. The
    /// record is read before the queue is drained, so a delivery racing this is caught by one
    /// check or the other.
    async fn handoff(&self, hub: &Hub, head: &Position, _t: Option<Timestamp>) -> ArrivesLive {
        let delivered: HashSet<Arc<str>> = hub.recent_keys();
        let high_secs = head
            .polling()
            .and_then(|c| c.high())
            .map(|h| oid_secs(&h))
            .unwrap_or(0);
        let low = window_start(high_secs, self.overlap);
        Box::new(move |coll, id| match id {
            Bson::ObjectId(oid) => *oid >= low && !delivered.contains(&document_key(coll, id)),
            _ => false,
        })
    }
}

/// A change-stream position no further ahead of this gateway's clock than a poller's cursor
/// may be: one another gateway's stream reached, which this one's reaches too. Beyond it (a
/// restored cluster, a stepped clock, a forged id) waiting could mean silence for hours.
fn change_stream_reachable(pos: &Position) -> bool {
    pos.kind() == PositionKind::ChangeStream
        && pos
            .cluster_time()
            .is_some_and(|t| crate::source::polling::secs_within_horizon(t.time))
}

/// How a connection starts, once resumed.
pub struct Resumed {
    /// For the admin list and the logs: `live`, `backlog`, `ring`, `catch_up` or `gap`.
    pub label: &'static str,
    /// Frames before anything else (the mode, a gap).
    pub frames: Vec<Bytes>,
    /// Events from memory, in order.
    pub events: Vec<Arc<Event>>,
    /// A catch-up or backlog streaming from MongoDB.
    pub replay: Option<Replay>,
    /// The position the connection continues after.
    pub last_sent: Position,
    /// A resume position ahead of the head: wait a little for the head to reach it.
    pub ahead: Option<Position>,
    /// Resuming another poller's position: documents with an ObjectId `_id` up to its cursor
    /// are not sent (see `hub::Subscription::seen_through`). The client has them — or, after
    /// a `late_order_unknown` gap, may have any of them — and none is repeated.
    pub seen_through: Option<bson::oid::ObjectId>,
}

/// Why a stream cannot start now.
#[derive(Debug)]
pub enum Refusal {
    /// Waiting helps: too many catch-ups or backlogs at once (`code` says which).
    Busy(&'static str),
    /// The id is not one MongoDB can resume from.
    Unusable(String),
    /// MongoDB failed; waiting may help. The message says what failed.
    Failed(String),
}

pub struct ResumeConfig {
    /// `SSE_CATCHUP_CONCURRENCY` and `SSE_CATCHUP_QUEUE`.
    pub catchup_concurrency: usize,
    pub catchup_queue: usize,
    /// `SSE_BACKLOG_CONCURRENCY`; its waiting line is `SSE_CATCHUP_QUEUE` too.
    pub backlog_concurrency: usize,
    /// `SSE_CATCHUP_STALL_SECS`, for catch-ups and backlogs alike.
    pub stall: Duration,
    /// `SSE_POLL_OVERLAP_MS`.
    pub poll_overlap: Duration,
}

pub struct Resumer {
    change_stream: ChangeStreamCatchUp,
    polling: PollingCatchUp,
    backlogs: Backlogs,
    catchup_slots: Slots,
    fingerprint: u32,
}

impl Resumer {
    pub fn new(
        client: Client,
        db: Database,
        sources: SourceSpecs,
        tasks: Tasks,
        config: ResumeConfig,
    ) -> Resumer {
        Resumer {
            fingerprint: sources_fingerprint(sources.collections()),
            change_stream: ChangeStreamCatchUp {
                db: db.clone(),
                sources: sources.clone(),
                tasks: tasks.clone(),
                stall: config.stall,
            },
            polling: PollingCatchUp {
                db: db.clone(),
                sources: sources.clone(),
                tasks: tasks.clone(),
                stall: config.stall,
                overlap: config.poll_overlap,
            },
            backlogs: Backlogs {
                client,
                db,
                sources,
                tasks,
                stall: config.stall,
                slots: Slots::new(config.backlog_concurrency, config.catchup_queue),
            },
            catchup_slots: Slots::new(config.catchup_concurrency, config.catchup_queue),
        }
    }

    pub fn catchups_running_and_queued(&self) -> (usize, usize) {
        self.catchup_slots.running_and_queued()
    }

    pub fn backlogs_running_and_queued(&self) -> (usize, usize) {
        self.backlogs.slots.running_and_queued()
    }

    /// Decides how `sub` starts: `resume` is the client's `Last-Event-ID`, `backlog` its
    /// `?backlog=` (for a fresh connection only).
    pub async fn open(
        &self,
        hub: &Hub,
        sub: &mut Subscription,
        resume: Option<&Position>,
        backlog: usize,
    ) -> Result<Resumed, Refusal> {
        // A late count of another poller's: resume from what the hub made of it (see
        // `hub::Recount`) and say so below, unless a gap is sent anyway.
        let recount = sub.recount.take();
        let resume = recount.as_ref().map(|rc| &rc.from).or(resume);
        let mut r = Resumed {
            label: "live",
            frames: Vec::new(),
            events: Vec::new(),
            replay: None,
            last_sent: sub.head.clone(),
            ahead: None,
            seen_through: sub.seen_through,
        };
        if let Some(mode @ crate::source::Mode::Polling { .. }) = hub.mode() {
            r.frames
                .push(sse::named_frame("mode", None, &mode.to_json()));
        }
        let path = match std::mem::replace(&mut sub.start, Start::Live) {
            Start::Live => {
                if let Some(pos) = resume.filter(|p| **p > sub.head) {
                    // Ahead of this gateway: another instance may be a few milliseconds
                    // further along, or the id is from a restored cluster or a stepped clock.
                    r.last_sent = pos.clone();
                    // Another poller's cursor (within the clock horizon) needs neither the
                    // wait nor a gap: documents up to it are not sent, those after it are,
                    // whenever this gateway's polls get there. The client keeps its id until
                    // then — a gap's id (this head, behind the cursor) made a reconnect
                    // elsewhere repeat what it had (the chaos soak). The same holds for a
                    // change-stream id within the horizon, from a gateway whose stream got
                    // further: every gateway names an event by the same resume token, so the
                    // events up to it are exactly what the client has, and the stream skips
                    // them (positions only move forward).
                    if sub.seen_through.is_none() && !change_stream_reachable(pos) {
                        r.ahead = Some(pos.clone());
                    }
                }
                if resume.is_none() && backlog > 0 {
                    r.label = "backlog";
                    r.replay = Some(self.backlog(hub, sub, backlog).await?);
                }
                ResumePath::Ring
            }
            Start::Replay(events) => {
                r.last_sent = resume.cloned().unwrap_or_else(|| sub.head.clone());
                r.events = events;
                ResumePath::Ring
            }
            Start::CatchUp { from, delivered } => {
                let delivered = delivered.map(|d| *d);
                match self.catch_up(sub, &from, delivered).await {
                    Ok(replay) => {
                        hub.count_catchup(true);
                        tracing::info!(
                            conn = sub.conn,
                            from = %from,
                            until = %sub.head,
                            channels = %crate::channel::join(&sub.channels),
                            "catch-up started"
                        );
                        r.last_sent = from;
                        r.replay = Some(replay);
                        ResumePath::CatchUp
                    }
                    Err(CatchUpError::Busy) => {
                        hub.count_catchup(false);
                        return Err(Refusal::Busy("catchup_busy"));
                    }
                    Err(CatchUpError::HistoryLost) => {
                        self.gap(hub, sub, &from, GapReason::HistoryLost, &mut r)
                    }
                    Err(CatchUpError::TooFarBehind) => {
                        self.gap(hub, sub, &from, GapReason::TooFarBehind, &mut r)
                    }
                    Err(CatchUpError::ModeChanged) => {
                        self.gap(hub, sub, &from, GapReason::ModeChanged, &mut r)
                    }
                    Err(CatchUpError::Unusable(why)) => return Err(Refusal::Unusable(why)),
                    Err(CatchUpError::Failed(why)) => {
                        return Err(Refusal::Failed(format!("catch-up failed: {why}")))
                    }
                }
            }
        };
        if let Some(rc) = recount.as_ref().filter(|_| path != ResumePath::Gap) {
            hub.count_gap();
            r.frames
                .push(gap::frame(GapReason::LateOrderUnknown, &rc.asked, &rc.from));
        }
        if resume.is_some() {
            hub.metrics.resumed(path);
            r.label = path.as_str();
        }
        Ok(r)
    }

    /// The client is told it cannot be resumed exactly, and continues from the head.
    fn gap(
        &self,
        hub: &Hub,
        sub: &Subscription,
        from: &Position,
        reason: GapReason,
        r: &mut Resumed,
    ) -> ResumePath {
        hub.count_gap();
        r.frames.push(gap::frame(reason, from, &sub.head));
        r.last_sent = sub.head.clone();
        ResumePath::Gap
    }

    /// A catch-up by the mode of the positions: one of the same kind as the head is replayed
    /// by that mode; one of the other kind cannot be replayed across modes (`mode_changed`),
    /// unless it is from a gateway watching other collections altogether (unusable).
    async fn catch_up(
        &self,
        sub: &Subscription,
        from: &Position,
        delivered: Option<Snapshot>,
    ) -> Result<Replay, CatchUpError> {
        let (slots, until, channels) = (&self.catchup_slots, &sub.head, &sub.channels[..]);
        match (from.kind(), until.kind()) {
            (PositionKind::ChangeStream, PositionKind::ChangeStream) => {
                self.change_stream
                    .catch_up(slots, from, until, channels, delivered)
                    .await
            }
            (PositionKind::Polling, PositionKind::Polling) => {
                self.polling
                    .catch_up(slots, from, until, channels, delivered)
                    .await
            }
            (PositionKind::Polling, _)
                if from.polling().map(|c| c.fingerprint()) != Some(self.fingerprint) =>
            {
                Err(CatchUpError::Unusable(
                    "a polling position from a gateway watching other collections".into(),
                ))
            }
            _ => Err(CatchUpError::ModeChanged),
        }
    }

    async fn backlog(
        &self,
        hub: &Hub,
        sub: &mut Subscription,
        n: usize,
    ) -> Result<Replay, Refusal> {
        let head = sub.head.clone();
        let opened = match head.kind() {
            PositionKind::ChangeStream => {
                let cs = &self.change_stream;
                self.backlogs
                    .open(sub, n, |t| cs.handoff(hub, &head, t))
                    .await
            }
            PositionKind::Polling => {
                let p = &self.polling;
                self.backlogs
                    .open(sub, n, |t| p.handoff(hub, &head, t))
                    .await
            }
        };
        opened.map_err(|e| match e {
            BacklogError::Busy => Refusal::Busy("backlog_busy"),
            BacklogError::Failed(why) => Refusal::Failed(format!("backlog query failed: {why}")),
        })
    }
}
