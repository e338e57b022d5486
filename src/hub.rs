//! The hub: where the source's events meet the connections. It owns the router (who wants
//! which channel) and the history ring (what happened recently) behind one lock, so that
//! "subscribe and take the history up to the head" is atomic with respect to publishing: an
//! event is either in the history a new subscriber reads, or in its queue — never neither,
//! never both. That single property is what makes resume gap-free and duplicate-free.
//!
//! Only taking the history is under the lock: it is a snapshot (a few `Arc` clones, see
//! `crate::history`). Searching it and matching thousands of events against the subscriber's
//! channels happens after the lock is released, so a reconnect never holds up publishing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use crate::channel::Channel;
use crate::delivered::Delivered;
use crate::event::Event;
use crate::history::{Budget, History, Since};
use crate::metrics::{CloseReason, Metrics};
use crate::position::Position;
use crate::rates::ChannelRates;
use crate::router::{ConnId, Publish, QueueReceiver, Router, Targets};
use crate::source::Mode;

/// Closes a connection's socket from outside its response stream. A client that stops
/// reading stops the stream from being polled, so only the socket can end it.
pub type Closer = Box<dyn Fn() + Send + Sync>;

/// Counters for the metrics endpoint and for tests.
#[derive(Debug, Default)]
pub struct Stats {
    pub connections_total: AtomicU64,
    pub connections_open: AtomicU64,
    pub events_published: AtomicU64,
    pub deliveries: AtomicU64,
    pub slow_consumer_disconnects: AtomicU64,
    pub resumes_from_history: AtomicU64,
    pub catchups_started: AtomicU64,
    pub catchups_rejected: AtomicU64,
    pub gaps_sent: AtomicU64,
}

impl Stats {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    fn inc(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// What the admin endpoints show about a connection, and what it reports back while it runs
/// (events sent, the position it holds). Shared by the connection and the hub.
#[derive(Debug)]
pub struct ConnInfo {
    pub subject: Option<Arc<str>>,
    pub remote: Option<std::net::SocketAddr>,
    pub since: std::time::SystemTime,
    /// How it started: `live`, `backlog`, `ring`, `catch_up` or `gap` (set once its stream
    /// is answered).
    pub resume: std::sync::OnceLock<&'static str>,
    pub events_sent: AtomicU64,
    /// The cluster time (`time << 32 | increment`) of the last position it was sent; 0 for a
    /// polling position. Its oldest across connections is the resume headroom.
    pub held: AtomicU64,
    /// Set by whoever closed it from outside (slow consumer, admin, gap restart).
    closed_by: Mutex<Option<CloseReason>>,
    /// Its end has been counted and logged (by its stream, or by an admin close: the server
    /// side of a closed socket may linger until actix notices, and the admin asked now).
    finished: std::sync::atomic::AtomicBool,
}

impl ConnInfo {
    pub fn new(subject: Option<Arc<str>>, remote: Option<std::net::SocketAddr>) -> ConnInfo {
        ConnInfo {
            subject,
            remote,
            since: std::time::SystemTime::now(),
            resume: std::sync::OnceLock::new(),
            events_sent: AtomicU64::new(0),
            held: AtomicU64::new(0),
            closed_by: Mutex::new(None),
            finished: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// True for the first caller only: that one counts and logs the connection's end.
    pub fn finish(&self) -> bool {
        !self.finished.swap(true, Ordering::SeqCst)
    }

    /// Records the position the client now holds.
    pub fn hold(&self, pos: &Position) {
        let t = pos
            .cluster_time()
            .map_or(0, |c| (u64::from(c.time) << 32) | u64::from(c.increment));
        self.held.store(t, Ordering::Relaxed);
    }

    pub fn closed_by(&self) -> Option<CloseReason> {
        *self.closed_by.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn close_as(&self, reason: CloseReason) {
        self.closed_by
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(reason);
    }
}

/// A connection as `GET /admin/connections` lists it.
#[derive(Debug, Clone)]
pub struct ConnView {
    pub id: ConnId,
    pub info: Arc<ConnInfo>,
    pub channels: Box<[Channel]>,
    pub queue_depth: usize,
}

/// A channel as `GET /admin/channels` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelView {
    pub channel: String,
    pub subscribers: usize,
    pub events_last_minute: u64,
}

/// Whether the source is feeding the hub, for `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceState {
    Starting,
    Running,
    Down(String),
}

struct Inner {
    router: Router,
    /// `None` until the source has told us where it starts.
    history: Option<History>,
    closers: HashMap<ConnId, Closer>,
    channels: HashMap<ConnId, Box<[Channel]>>,
    infos: HashMap<ConnId, Arc<ConnInfo>>,
    rates: ChannelRates,
    state: SourceState,
    /// How the source is fed; `None` before it starts.
    mode: Option<Mode>,
    /// The documents delivered within the polling overlap window (see `crate::delivered`).
    delivered: Delivered,
    /// The latest poller's origin: whose late counts this gateway's memory holds (the current
    /// segment's when polling, the previous one's after switching back).
    poll_origin: Option<u32>,
    /// The cluster time (seconds) the change stream began streaming at, in this process or
    /// after its last gap: nothing committed before it was delivered here.
    began_secs: Option<u32>,
}

impl Inner {
    /// Closes `conn`'s socket from outside, saying why.
    fn close(&self, conn: ConnId, reason: CloseReason) {
        if let Some(info) = self.infos.get(&conn) {
            info.close_as(reason);
        }
        if let Some(close) = self.closers.get(&conn) {
            close();
        }
    }

    /// Drops the connections whose queue refused an event, closing those that were full (the
    /// slow-consumer rule: the browser resumes from its last id and loses nothing). Their
    /// count is for the stats, which are updated after the lock is released.
    fn close_overflowed(&mut self, out: &Publish) -> u64 {
        self.router.drop_failed(out);
        for conn in &out.overflowed {
            self.close(*conn, CloseReason::SlowConsumer);
            tracing::info!(conn, "slow consumer: queue full, closing the connection");
        }
        out.overflowed.len() as u64
    }

    /// What the source delivered recently: the window's documents when tracked, else what the
    /// ring still holds.
    fn delivered_keys(&self) -> std::collections::HashSet<Arc<str>> {
        if self.delivered.is_tracking() {
            return self.delivered.keys();
        }
        self.history
            .as_ref()
            .map(|h| h.events().filter_map(|e| e.key.clone()).collect())
            .unwrap_or_default()
    }

    /// What a polling catch-up needs: tracked deliveries, else what the ring still holds.
    fn delivered_snapshot(&self) -> crate::delivered::Snapshot {
        if self.delivered.is_tracking() {
            return self.delivered.snapshot();
        }
        let positions = self
            .history
            .as_ref()
            .map(|h| {
                h.events()
                    .filter_map(|e| Some((e.key.clone()?, e.position.clone())))
                    .collect()
            })
            .unwrap_or_default();
        crate::delivered::Snapshot {
            positions,
            ..Default::default()
        }
    }
}

pub struct Hub {
    inner: Mutex<Inner>,
    /// The queues the event being published goes to. Taken while holding `inner` and kept
    /// after releasing it until the event is offered to them and the head moved: events reach
    /// every queue in publishing order, while subscribing, heartbeats and admin requests only
    /// wait for the routing, not for thousands of wake-ups. Never take `inner` while holding
    /// it.
    fanout: Mutex<Targets>,
    /// What the history ring may hold (`SSE_HISTORY_EVENTS`, `SSE_HISTORY_BYTES`).
    history_capacity: Budget,
    /// What each connection's queue may hold (`SSE_QUEUE_LEN`, `SSE_QUEUE_BYTES`).
    queue_budget: Budget,
    next_conn: AtomicU64,
    pub stats: Stats,
    /// The Prometheus metrics of this gateway.
    pub metrics: Arc<Metrics>,
    /// The head position, for waiters (a backlog waits until the source has passed a time).
    head: watch::Sender<Option<Position>>,
    shutdown: watch::Sender<bool>,
    /// Runs in `subscribe` between releasing the lock and reading the snapshot, so tests can
    /// publish exactly there.
    #[cfg(test)]
    after_lock: Mutex<Option<TestHook>>,
    /// Runs in `fan_out` after the hub lock is released and before the event is offered.
    #[cfg(test)]
    during_fanout: Mutex<Option<TestHook>>,
}

#[cfg(test)]
type TestHook = Box<dyn Fn(&Hub) + Send + Sync>;

/// How a new subscriber catches up to the live feed.
#[derive(Debug)]
pub enum Start {
    /// Nothing to catch up: live from the head.
    Live,
    /// These events from memory, then live.
    Replay(Vec<Arc<Event>>),
    /// The position is older than memory: read MongoDB from `from` up to the head at
    /// subscription, then live. In polling mode `delivered` says what was delivered at which
    /// position, taken atomically with the head: a catch-up must place late documents where
    /// they were delivered, and must not deliver one the poller has not delivered yet (it
    /// will arrive live).
    CatchUp {
        from: Position,
        delivered: Option<Box<crate::delivered::Snapshot>>,
    },
}

/// A registered connection. Dropping it unsubscribes.
pub struct Subscription {
    hub: Arc<Hub>,
    pub conn: ConnId,
    /// The live events, bounded by the queue budget: taking one (`recv`, `try_recv`) gives
    /// its bytes back to the budget.
    pub rx: QueueReceiver,
    /// The head when the subscription was registered: every later event is in `rx`.
    pub head: Position,
    pub start: Start,
    pub channels: Box<[Channel]>,
    /// Set when the client's position counted late documents the way another poller did:
    /// what the connection resumed from instead (see [`Recount`]).
    pub recount: Option<Recount>,
    /// Set when the client's position is another poller's: its cursor. The client has every
    /// document up to it (settled polls deliver whole seconds in `_id` order on every
    /// gateway), but this gateway may have delivered some of them late, at later cursors of
    /// its own: the connection must not be sent any of them again.
    pub seen_through: Option<bson::oid::ObjectId>,
}

/// A polling position whose late count is another poller's (another gateway's, or an earlier
/// poller of this one): which late documents the client has is unknown. The connection
/// resumes after every late document this gateway delivered at that cursor (none is repeated)
/// and is told with a `gap` (`late_order_unknown`) that some may be missing.
#[derive(Debug, Clone)]
pub struct Recount {
    /// The client's `Last-Event-ID`.
    pub asked: Position,
    /// The same cursor, after all of this gateway's late documents there (or the head, if
    /// the head is not past them).
    pub from: Position,
}

impl Recount {
    fn of(pos: &Position, origin: Option<u32>, head: &Position) -> Option<Recount> {
        let c = pos.polling()?;
        if c.late() == 0 || c.is_from(origin) {
            return None;
        }
        let mut from = Position::Polling(crate::position::PollCursor::counted_by(
            c.fingerprint(),
            c.high(),
            u32::MAX,
            origin,
        ));
        // A cursor ahead of the head is kept (the connection continues at the head, filtered
        // by it; `Resumer::open`): the client's id must not move back to the head, where a
        // reconnect elsewhere would be sent what it had. Only one beyond the clock horizon,
        // which no filter uses, resumes from the head.
        if from > *head
            && !c
                .high()
                .is_some_and(|h| crate::source::polling::within_horizon(&h))
        {
            from = head.clone();
        }
        Some(Recount {
            asked: pos.clone(),
            from,
        })
    }
}

/// The cursor of a polling position from another poller than `origin`: see
/// [`Subscription::seen_through`]. Not one beyond the clock horizon, which no poller reached
/// (a forged id, a restored cluster): it would filter out everything until then.
fn foreign_cursor(pos: &Position, origin: Option<u32>) -> Option<bson::oid::ObjectId> {
    pos.polling()
        .filter(|c| !c.is_from(origin))?
        .high()
        .filter(crate::source::polling::within_horizon)
}

impl Subscription {
    /// The newest position whose events are all in this connection's queue, if any: the
    /// hub's head, unless the queue refused an event on the way there (the connection is
    /// about to be closed as a slow consumer and must not claim that event; a heartbeat
    /// that did moved its client past everything it missed).
    pub fn delivered_head(&self) -> Option<Position> {
        let head = self.hub.delivered_head();
        (!self.rx.refused()).then_some(head).flatten()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.unsubscribe(self.conn);
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum SubscribeError {
    /// The source has not started yet, or the gateway is shutting down.
    NotReady(String),
}

impl Hub {
    /// A hub whose ring holds at most `history` and whose connection queues each hold at most
    /// `queue` (a plain number: that many events, with no bound on bytes).
    pub fn new(history: impl Into<Budget>, queue: impl Into<Budget>) -> Arc<Hub> {
        let (head, _) = watch::channel(None);
        let (shutdown, _) = watch::channel(false);
        Arc::new(Hub {
            inner: Mutex::new(Inner {
                router: Router::new(),
                history: None,
                closers: HashMap::new(),
                channels: HashMap::new(),
                infos: HashMap::new(),
                rates: ChannelRates::default(),
                state: SourceState::Starting,
                mode: None,
                delivered: Delivered::default(),
                poll_origin: None,
                began_secs: None,
            }),
            fanout: Mutex::new(Targets::default()),
            history_capacity: history.into(),
            queue_budget: queue.into(),
            next_conn: AtomicU64::new(1),
            stats: Stats::default(),
            metrics: Arc::new(Metrics::new()),
            head,
            shutdown,
            #[cfg(test)]
            after_lock: Mutex::new(None),
            #[cfg(test)]
            during_fanout: Mutex::new(None),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing panics while holding this lock; if something ever did, the router and ring
        // are still structurally valid, so keep serving rather than poisoning every request.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Taken while holding [`Hub::lock`] (see `fanout`).
    fn fanout_lock(&self) -> MutexGuard<'_, Targets> {
        self.fanout.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Offers `ev` to the queues collected in `fan` (the hub lock released), moves the head
    /// to `head`, then drops the connections that refused it. Returns the outcome and how
    /// many were closed as slow consumers.
    fn fan_out(
        &self,
        mut fan: MutexGuard<'_, Targets>,
        ev: &Arc<Event>,
        head: Option<Position>,
    ) -> (Publish, u64) {
        #[cfg(test)]
        if let Some(hook) = self.during_fanout.lock().unwrap().take() {
            hook(self);
        }
        let out = fan.offer(ev);
        // After the queues have the event: a stream that reads this head finds every event
        // up to it in its queue (the heartbeat relies on it). Under `fanout`, so heads move
        // in publishing order.
        if let Some(head) = head {
            self.head.send_replace(Some(head));
        }
        drop(fan);
        let mut overflowed = 0;
        if !out.overflowed.is_empty() || !out.closed.is_empty() {
            overflowed = self.lock().close_overflowed(&out);
        }
        (out, overflowed)
    }

    /// The source (re)started at `start` in `mode`. The first start creates the history; a
    /// restart of the same kind continues it (the source resumed from its last position, so
    /// nothing is missing); a start of another kind is a mode switch: the history keeps the
    /// previous segment, and every connection gets a `mode` event whose id is `start`, so its
    /// de-duplication continues in the new kind of position.
    pub fn source_started(&self, start: Position, mode: Mode) {
        let mut inner = self.lock();
        let switched = match &mut inner.history {
            None => {
                inner.history = Some(History::new(self.history_capacity, start.clone()));
                inner.began_secs = start.cluster_time().map(|t| t.time);
                false
            }
            Some(h) if h.head().cmp_same_kind(&start).is_some() => {
                let _ = h.advance(start.clone());
                false
            }
            Some(h) => {
                h.switch(start.clone());
                inner.delivered.switched(start.clone());
                true
            }
        };
        if let Some(origin) = start.polling().and_then(|c| c.origin()) {
            inner.poll_origin = Some(origin);
        }
        inner.state = SourceState::Running;
        inner.mode = Some(mode);
        self.metrics.mode(mode.name(), switched);
        let head = inner.history.as_ref().map(|h| h.head().clone());
        let mut fan = self.fanout_lock();
        if !switched {
            drop(inner);
            self.head.send_replace(head);
            return;
        }
        let ev = Arc::new(Event::control(start.clone(), "mode", &mode.to_json()));
        inner.router.everyone(&mut fan);
        tracing::info!(
            mode = mode.name(),
            position = %start,
            connections = inner.closers.len(),
            "mode switch: the source now runs in {} mode; connections told",
            mode.name()
        );
        drop(inner);
        let (_, overflowed) = self.fan_out(fan, &ev, head);
        Stats::inc(&self.stats.slow_consumer_disconnects, overflowed);
    }

    pub fn mode(&self) -> Option<Mode> {
        self.lock().mode
    }

    /// The cluster time (seconds) this gateway's change stream began at — when the process
    /// started, or after its last gap — if it began with one: a poller taking over must not
    /// deliver what was committed before (see `Poller::after_change_stream`).
    pub fn began_secs(&self) -> Option<u32> {
        self.lock().began_secs
    }

    /// Keys (collection and `_id`) of the documents delivered recently: what a source taking
    /// over may have to avoid repeating, and what a polling catch-up or backlog may send. With
    /// [`Hub::track_delivered`], every document within the window; otherwise what the ring
    /// still holds.
    pub fn recent_keys(&self) -> std::collections::HashSet<Arc<str>> {
        self.lock().delivered_keys()
    }

    /// Keeps the documents delivered within `window` of the head (the polling overlap), so
    /// that [`Hub::recent_keys`] does not depend on the ring's capacity. Called by the source
    /// when polling may take over.
    pub fn track_delivered(&self, window: std::time::Duration) {
        self.lock().delivered.track(window);
    }

    /// Documents a starting source counts as delivered without publishing them (see
    /// `Poller::take_baseline`), each at the position it stands at.
    pub fn record_delivered(&self, delivered: Vec<(Arc<str>, Position)>) {
        let mut inner = self.lock();
        for (key, pos) in delivered {
            inner.delivered.record_key(key, pos);
        }
    }

    /// The source could not continue from its last position (it fell off the oplog): what
    /// happened in between is unknown. Memory restarts at `start`, and every open connection
    /// is closed so that it reconnects, finds its position too old, and is told about the gap.
    pub fn source_restarted_with_gap(&self, start: Position) {
        let mut inner = self.lock();
        match &mut inner.history {
            Some(h) => h.reset(start.clone()),
            None => inner.history = Some(History::new(self.history_capacity, start.clone())),
        }
        inner.began_secs = start.cluster_time().map(|t| t.time);
        inner.state = SourceState::Running;
        let conns: Vec<ConnId> = inner.closers.keys().copied().collect();
        for conn in conns {
            inner.router.unsubscribe(conn);
            inner.close(conn, CloseReason::Error);
        }
        let fan = self.fanout_lock();
        drop(inner);
        self.head.send_replace(Some(start));
        drop(fan);
    }

    pub fn set_state(&self, state: SourceState) {
        self.lock().state = state;
    }

    pub fn state(&self) -> SourceState {
        self.lock().state.clone()
    }

    /// Records an event and queues it for its subscribers. Events at or before the head
    /// (a source replaying after a resume) are dropped: they were published already.
    pub fn publish(&self, ev: Event) {
        let ev = Arc::new(ev);
        let mut inner = self.lock();
        let Some(history) = inner.history.as_mut() else {
            return;
        };
        if history.push(Arc::clone(&ev)).is_err() {
            tracing::debug!(position = %ev.position, "dropping an event at or before the head");
            return;
        }
        inner.delivered.record(&ev);
        inner.delivered.forget_before(&ev.position);
        inner.rates.record(ev.channel.as_str());
        let mut fan = self.fanout_lock();
        inner.router.targets(&ev, &mut fan);
        drop(inner);
        let (out, overflowed) = self.fan_out(fan, &ev, Some(ev.position.clone()));
        let source = ev.key.as_deref().map_or("", crate::event::key_collection);
        self.metrics.event_in(source, ev.wall_time);
        Stats::inc(&self.stats.events_published, 1);
        Stats::inc(&self.stats.deliveries, out.delivered as u64);
        Stats::inc(&self.stats.slow_consumer_disconnects, overflowed);
    }

    /// The source moved on without an event (a postBatchResumeToken).
    pub fn advance(&self, pos: Position) {
        let mut inner = self.lock();
        let moved = match inner.history.as_mut() {
            Some(h) => h.advance(pos.clone()).unwrap_or(false),
            None => false,
        };
        if !moved {
            return;
        }
        inner.delivered.forget_before(&pos);
        let fan = self.fanout_lock();
        drop(inner);
        self.head.send_replace(Some(pos));
        drop(fan);
    }

    /// The newest position the source has reached.
    pub fn head(&self) -> Option<Position> {
        self.lock().history.as_ref().map(|h| h.head().clone())
    }

    /// The newest position whose events are in every subscriber's queue: what a stream may
    /// tell its client it is at. Read from the watch channel, not the hub lock, so thousands
    /// of heartbeats never queue behind publishing.
    pub fn delivered_head(&self) -> Option<Position> {
        self.head.borrow().clone()
    }

    /// Waits until the head satisfies `pred` (or shutdown). Returns false on shutdown.
    pub async fn wait_head(&self, pred: impl Fn(&Position) -> bool) -> bool {
        let mut rx = self.head.subscribe();
        let mut stop = self.shutdown.subscribe();
        tokio::select! {
            r = rx.wait_for(|h| h.as_ref().is_some_and(&pred)) => r.is_ok(),
            _ = stop.wait_for(|s| *s) => false,
        }
    }

    /// Registers a connection for `channels`, resuming after `resume` if given.
    ///
    /// Under the lock: the head, a snapshot of the history and the connection's registration
    /// with the router, together — every event up to the head is in the snapshot, every later
    /// one will be in the queue. After the lock: the snapshot is searched and filtered.
    pub fn subscribe(
        self: &Arc<Self>,
        channels: Vec<Channel>,
        resume: Option<&Position>,
        closer: Closer,
    ) -> Result<Subscription, SubscribeError> {
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = crate::router::queue(self.queue_budget);
        let mut inner = self.lock();
        // Under the lock, as `begin_shutdown` sets it.
        if *self.shutdown.borrow() {
            return Err(SubscribeError::NotReady("shutting down".into()));
        }
        let Some(history) = inner.history.as_ref() else {
            let why = match &inner.state {
                SourceState::Down(e) => format!("not connected to MongoDB: {e}"),
                _ => "the change feed has not started yet".to_string(),
            };
            return Err(SubscribeError::NotReady(why));
        };
        let head = history.head().clone();
        let recount = resume.and_then(|pos| Recount::of(pos, inner.poll_origin, &head));
        let seen_through = resume.and_then(|pos| foreign_cursor(pos, inner.poll_origin));
        let resume = recount.as_ref().map(|r| &r.from).or(resume);
        let snapshot = resume.map(|pos| (pos, history.snapshot()));
        // A polling catch-up needs what was delivered where, taken with the head: decided
        // here from the same snapshot (a few comparisons), used below only on a catch-up.
        let delivered = match &snapshot {
            Some((pos, snap)) if head.polling().is_some() && !snap.reaches(pos) => {
                Some(Box::new(inner.delivered_snapshot()))
            }
            _ => None,
        };
        inner.router.subscribe(conn, &channels, tx);
        inner.closers.insert(conn, closer);
        let channels: Box<[Channel]> = channels.into_boxed_slice();
        inner.channels.insert(conn, channels.clone());
        drop(inner);
        #[cfg(test)]
        if let Some(hook) = self.after_lock.lock().unwrap().as_ref() {
            hook(self);
        }
        let start = match snapshot {
            None => Start::Live,
            Some((pos, snap)) => {
                match snap.since(pos, |ev| channels.iter().any(|c| ev.channel.is_within(c))) {
                    Since::Events(evs) if evs.is_empty() => Start::Live,
                    Since::Events(evs) => Start::Replay(evs),
                    Since::TooOld | Since::Incomparable => Start::CatchUp {
                        from: pos.clone(),
                        delivered,
                    },
                }
            }
        };
        Stats::inc(&self.stats.connections_total, 1);
        Stats::inc(&self.stats.connections_open, 1);
        match &start {
            Start::Replay(_) => Stats::inc(&self.stats.resumes_from_history, 1),
            Start::Live if resume.is_some() => Stats::inc(&self.stats.resumes_from_history, 1),
            _ => {}
        }
        Ok(Subscription {
            hub: Arc::clone(self),
            conn,
            rx,
            head,
            start,
            channels,
            recount,
            seen_through,
        })
    }

    fn unsubscribe(&self, conn: ConnId) {
        let mut inner = self.lock();
        inner.router.unsubscribe(conn);
        let had = inner.closers.remove(&conn).is_some();
        inner.channels.remove(&conn);
        inner.infos.remove(&conn);
        drop(inner);
        if had {
            self.stats.connections_open.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Returns once whoever holds the hub lock has let go. A connection whose queue ends was
    /// removed from the router by someone holding the lock (a slow-consumer close, an admin
    /// close, a gap restart), who records why before releasing it: waiting for the lock
    /// makes that reason visible (`ConnInfo::closed_by`) before the connection counts its end.
    pub fn settle(&self) {
        drop(self.lock());
    }

    /// Makes a subscribed connection visible to the admin endpoints and the resume headroom.
    pub fn attach(&self, conn: ConnId, info: Arc<ConnInfo>) {
        let mut inner = self.lock();
        if inner.closers.contains_key(&conn) {
            inner.infos.insert(conn, info);
        }
    }

    /// Closes a connection (`DELETE /admin/connections/{id}`): it stops receiving events and
    /// its socket is shut, so the client reconnects with its last id and misses nothing. It
    /// leaves the admin list at once. `None` for an unknown id.
    pub fn close(
        &self,
        conn: ConnId,
        reason: CloseReason,
    ) -> Option<(Arc<ConnInfo>, Box<[Channel]>)> {
        let mut inner = self.lock();
        let info = inner.infos.get(&conn).cloned()?;
        inner.router.unsubscribe(conn);
        inner.close(conn, reason);
        inner.infos.remove(&conn);
        let channels = inner.channels.get(&conn).cloned().unwrap_or_default();
        Some((info, channels))
    }

    /// Open connections with ids after `after`, by id, at most `limit`; and whether more follow.
    pub fn connections(&self, after: ConnId, limit: usize) -> (Vec<ConnView>, bool) {
        let inner = self.lock();
        let mut ids: Vec<ConnId> = inner.infos.keys().copied().filter(|c| *c > after).collect();
        ids.sort_unstable();
        let more = ids.len() > limit;
        ids.truncate(limit);
        let views = ids
            .into_iter()
            .filter_map(|id| {
                Some(ConnView {
                    id,
                    info: Arc::clone(inner.infos.get(&id)?),
                    channels: inner.channels.get(&id).cloned().unwrap_or_default(),
                    queue_depth: inner.router.queue_depth(id).unwrap_or(0),
                })
            })
            .collect();
        (views, more)
    }

    /// Channels with subscribers or with events in the last minute, by name, after `after`,
    /// at most `limit`; and whether more follow.
    pub fn channels(&self, after: &str, limit: usize) -> (Vec<ChannelView>, bool) {
        let inner = self.lock();
        let mut all: HashMap<&str, usize> = inner.router.subscribed().collect();
        for c in inner.rates.channels() {
            all.entry(c).or_insert(0);
        }
        let mut names: Vec<(&str, usize)> = all.into_iter().filter(|(c, _)| *c > after).collect();
        names.sort_unstable();
        let more = names.len() > limit;
        names.truncate(limit);
        let views = names
            .into_iter()
            .map(|(c, subscribers)| ChannelView {
                channel: c.to_string(),
                subscribers,
                events_last_minute: inner.rates.last_minute(c),
            })
            .collect();
        (views, more)
    }

    /// The oldest cluster time (`time << 32 | increment`) held by a connected client in
    /// change-stream mode, else the head's; `None` without one (polling).
    pub fn oldest_held(&self) -> Option<u64> {
        let inner = self.lock();
        let held = inner
            .infos
            .values()
            .map(|i| i.held.load(Ordering::Relaxed))
            .filter(|t| *t > 0)
            .min();
        held.or_else(|| {
            let c = inner.history.as_ref()?.head().cluster_time()?;
            Some((u64::from(c.time) << 32) | u64::from(c.increment))
        })
    }

    pub fn count_catchup(&self, started: bool) {
        if started {
            Stats::inc(&self.stats.catchups_started, 1);
        } else {
            Stats::inc(&self.stats.catchups_rejected, 1);
        }
    }

    pub fn count_gap(&self) {
        Stats::inc(&self.stats.gaps_sent, 1);
    }

    /// Ends every stream (clients reconnect elsewhere) and refuses new ones. A live stream
    /// learns it from its queue ending, not from the shutdown signal: ten thousand streams
    /// each waiting on one watch channel would share its lock on every event they are sent.
    pub fn begin_shutdown(&self) {
        let mut inner = self.lock();
        // Under the lock: a subscription either sees the flag or is registered, and dropped here.
        self.shutdown.send_replace(true);
        let conns: Vec<ConnId> = inner.closers.keys().copied().collect();
        for conn in conns {
            inner.router.unsubscribe(conn);
        }
    }

    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Op;
    use bson::doc;

    fn pos(n: u32) -> Position {
        Position::decode(&format!("c.82{n:08X}")).unwrap()
    }

    fn ev(n: u32, ch: &str) -> Event {
        Event::new(
            pos(n),
            Channel::parse(ch).unwrap(),
            Op::Insert,
            &doc! {"n": n},
        )
    }

    fn chans(c: &[&str]) -> Vec<Channel> {
        c.iter().map(|c| Channel::parse(c).unwrap()).collect()
    }

    #[test]
    fn subscribe_is_atomic_with_publish() {
        let hub = Hub::new(100, 16);
        assert!(matches!(
            hub.subscribe(chans(&["logs:w1"]), None, Box::new(|| {})),
            Err(SubscribeError::NotReady(_))
        ));
        hub.source_started(pos(1), Mode::ChangeStream);
        hub.publish(ev(2, "logs:w1:f1"));
        hub.publish(ev(3, "logs:w2:f1"));
        let mut sub = hub
            .subscribe(chans(&["logs:w1"]), Some(&pos(1)), Box::new(|| {}))
            .unwrap();
        match &sub.start {
            Start::Replay(evs) => assert_eq!(
                evs.iter().map(|e| e.position.clone()).collect::<Vec<_>>(),
                vec![pos(2)]
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(sub.head, pos(3));
        hub.publish(ev(4, "logs:w1:f2"));
        assert_eq!(sub.rx.try_recv().unwrap().position, pos(4));
        assert!(sub.rx.try_recv().is_err());
        // A replayed duplicate from a resumed source is dropped.
        hub.publish(ev(4, "logs:w1:f2"));
        assert!(sub.rx.try_recv().is_err());
    }

    #[test]
    fn old_positions_need_a_catch_up_and_slow_consumers_are_closed() {
        let hub = Hub::new(2, 1);
        hub.source_started(pos(10), Mode::ChangeStream);
        let closed = Arc::new(AtomicU64::new(0));
        let c2 = Arc::clone(&closed);
        let sub = hub
            .subscribe(
                chans(&["logs"]),
                Some(&pos(5)),
                Box::new(move || {
                    c2.fetch_add(1, Ordering::Relaxed);
                }),
            )
            .unwrap();
        assert!(matches!(sub.start, Start::CatchUp { .. }));
        hub.publish(ev(11, "logs:a"));
        hub.publish(ev(12, "logs:a"));
        assert_eq!(closed.load(Ordering::Relaxed), 1);
        assert_eq!(Stats::get(&hub.stats.slow_consumer_disconnects), 1);
        drop(sub);
        assert_eq!(Stats::get(&hub.stats.connections_open), 0);
    }

    fn positions(evs: &[Arc<Event>]) -> Vec<Position> {
        evs.iter().map(|e| e.position.clone()).collect()
    }

    fn drain(sub: &mut Subscription) -> Vec<Position> {
        let mut v = Vec::new();
        while let Ok(e) = sub.rx.try_recv() {
            v.push(e.position.clone());
        }
        v
    }

    /// The replay is read from a snapshot after the lock is released: events published
    /// meanwhile go to the queue and not the replay, and events the ring evicts meanwhile are
    /// still replayed — never neither, never both.
    #[test]
    fn the_replay_is_read_outside_the_lock_and_stays_exact() {
        let hub = Hub::new(5, 16);
        hub.source_started(pos(0), Mode::ChangeStream);
        for n in 1..=5 {
            hub.publish(ev(n, "logs:w1"));
        }
        *hub.after_lock.lock().unwrap() = Some(Box::new(|hub: &Hub| {
            // Would block (and fail) if the lock were still held.
            assert!(hub.inner.try_lock().is_ok(), "the hub lock is still held");
            for n in 6..=8 {
                hub.publish(ev(n, "logs:w1"));
            }
        }));
        let mut sub = hub
            .subscribe(chans(&["logs:w1"]), Some(&pos(1)), Box::new(|| {}))
            .unwrap();
        *hub.after_lock.lock().unwrap() = None;
        match &sub.start {
            Start::Replay(evs) => assert_eq!(positions(evs), (2..=5).map(pos).collect::<Vec<_>>()),
            other => panic!("{other:?}"),
        }
        assert_eq!(sub.head, pos(5));
        assert_eq!(drain(&mut sub), (6..=8).map(pos).collect::<Vec<_>>());
        // The ring itself has moved on: a new subscriber from 1 needs a catch-up now.
        let later = hub
            .subscribe(chans(&["logs:w1"]), Some(&pos(1)), Box::new(|| {}))
            .unwrap();
        assert!(
            matches!(later.start, Start::CatchUp { .. }),
            "{:?}",
            later.start
        );
    }

    /// Found by the chaos soak (seed 77): whole-workspace readers lost the last seconds of a
    /// run. A heartbeat tells the client the head once the queue is drained; a queue that
    /// refused an event (a slow consumer, closed a moment later) is drained without it, so the
    /// head must not be claimed there.
    #[test]
    fn a_queue_that_refused_an_event_is_not_told_the_head_past_it() {
        let hub = Hub::new(100, 2);
        hub.source_started(pos(1), Mode::ChangeStream);
        let mut sub = hub
            .subscribe(chans(&["logs:w1"]), None, Box::new(|| {}))
            .unwrap();
        hub.publish(ev(2, "logs:w1"));
        assert_eq!(sub.delivered_head(), Some(pos(2)));
        hub.publish(ev(3, "logs:w1"));
        hub.publish(ev(4, "logs:w1")); // refused: the queue holds two
        assert_eq!(hub.delivered_head(), Some(pos(4)));
        assert_eq!(drain(&mut sub), vec![pos(2), pos(3)]);
        assert_eq!(sub.delivered_head(), None, "4 never reached this queue");
    }

    /// Events are offered after the hub lock is released. A connection subscribing in that
    /// moment must find the event in the history it reads and not in its queue; one already
    /// subscribed finds it in its queue; the head it can be told moves only afterwards.
    #[test]
    fn subscribing_while_an_event_is_being_offered_gets_it_once() {
        let hub = Hub::new(100, 16);
        hub.source_started(pos(1), Mode::ChangeStream);
        hub.publish(ev(2, "logs:w1"));
        let mut before = hub
            .subscribe(chans(&["logs:w1"]), None, Box::new(|| {}))
            .unwrap();
        let during: Arc<Mutex<Option<Subscription>>> = Arc::default();
        {
            let during = Arc::clone(&during);
            // The hook is taken when it runs, so this Arc does not outlive it.
            let arc = Arc::clone(&hub);
            *hub.during_fanout.lock().unwrap() = Some(Box::new(move |hub: &Hub| {
                assert!(hub.inner.try_lock().is_ok(), "the hub lock is still held");
                assert_eq!(
                    hub.delivered_head(),
                    Some(pos(2)),
                    "the head moved too early"
                );
                *during.lock().unwrap() = Some(
                    arc.subscribe(chans(&["logs:w1"]), Some(&pos(2)), Box::new(|| {}))
                        .unwrap(),
                );
            }));
        }
        hub.publish(ev(3, "logs:w1"));
        assert_eq!(hub.delivered_head(), Some(pos(3)));
        let mut during = during
            .lock()
            .unwrap()
            .take()
            .expect("subscribed in the hook");
        match &during.start {
            Start::Replay(evs) => assert_eq!(positions(evs), vec![pos(3)]),
            other => panic!("{other:?}"),
        }
        assert!(drain(&mut during).is_empty(), "delivered twice");
        assert_eq!(drain(&mut before), vec![pos(3)]);
    }

    /// The byte budgets reach the ring and the queues.
    #[test]
    fn byte_budgets_bound_the_ring_and_the_queues() {
        let big = |n: u32| {
            Event::new(
                pos(n),
                Channel::parse("logs:w1").unwrap(),
                Op::Insert,
                &doc! {"pad": "x".repeat(10_000)},
            )
        };
        let one = crate::history::footprint(&big(1));
        let closed = Arc::new(AtomicU64::new(0));
        let c2 = Arc::clone(&closed);
        let hub = Hub::new(Budget::new(100, 3 * one), Budget::new(100, 2 * one));
        hub.source_started(pos(0), Mode::ChangeStream);
        let mut slow = hub
            .subscribe(
                chans(&["logs"]),
                None,
                Box::new(move || {
                    c2.fetch_add(1, Ordering::Relaxed);
                }),
            )
            .unwrap();
        for n in 1..=5 {
            hub.publish(big(n));
        }
        // The queue took two, the third closed it as a slow consumer.
        assert_eq!(closed.load(Ordering::Relaxed), 1);
        assert_eq!(Stats::get(&hub.stats.slow_consumer_disconnects), 1);
        assert_eq!(drain(&mut slow), vec![pos(1), pos(2)]);
        // The ring kept the last three: a resume from 2 replays, from 1 catches up.
        let r = hub
            .subscribe(chans(&["logs"]), Some(&pos(2)), Box::new(|| {}))
            .unwrap();
        match &r.start {
            Start::Replay(evs) => assert_eq!(positions(evs), vec![pos(3), pos(4), pos(5)]),
            other => panic!("{other:?}"),
        }
        let c = hub
            .subscribe(chans(&["logs"]), Some(&pos(1)), Box::new(|| {}))
            .unwrap();
        assert!(matches!(c.start, Start::CatchUp { .. }));
    }
}
