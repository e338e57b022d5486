//! Chooses the source and switches at run time (`SSE_MODE`).
//!
//! - `change_stream`: change streams only; failures are retried with backoff, forever.
//! - `polling`: polling only.
//! - `auto`: change streams, unless MongoDB answers that they are not available here
//!   ([`super::CHANGE_STREAMS_UNAVAILABLE`]); then polling, probing every
//!   `SSE_PROBE_INTERVAL_SECS` and switching back when a change stream opens. Transient
//!   errors (network, elections) never cause a switch.
//!
//! A switch loses and repeats nothing. Change stream -> polling: the poller re-reads the
//! overlap window before the stream's last cluster time and skips what the history ring shows
//! was delivered. Polling -> change stream: the stream is opened first, then one last poll
//! delivers everything committed before it, and the stream skips those inserts if it repeats
//! them. In both directions the hub tells every connection with a `mode` event that carries
//! the new kind of position, so the connection's de-duplication continues across the switch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::Document;
use mongodb::change_stream::ChangeStream;
use tokio::sync::watch;

use super::change_stream::{position_of, PumpEnd, Resume, Skip, Watcher};
use super::polling::{PollStats, Poller};
use super::{is_history_lost, unavailable_reason, Mode};
use crate::backoff::Backoff;
use crate::hub::SourceState;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A stream that stayed open this long was healthy: the backoff starts again from its floor.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// Failing for this long without a healthy stream in between turns `/readyz` to 503.
pub const FAILING_AFTER: Duration = Duration::from_secs(5);

/// How long the change stream has been failing without a healthy stretch in between.
#[derive(Debug, Default)]
struct Failing {
    since: Option<Instant>,
    last: Option<String>,
}

impl Failing {
    /// Records a failure; the reason to report once it has gone on long enough.
    fn failed(&mut self, e: &mongodb::error::Error) -> Option<String> {
        self.since.get_or_insert_with(Instant::now);
        self.last = Some(format!("the change stream keeps failing: {e}"));
        self.still()
    }

    /// Still failing for longer than [`FAILING_AFTER`]: why.
    fn still(&self) -> Option<String> {
        let since = self.since?;
        (since.elapsed() >= FAILING_AFTER)
            .then(|| self.last.clone())
            .flatten()
    }

    fn recovered(&mut self) {
        *self = Failing::default();
    }
}

/// `SSE_MODE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceMode {
    Auto,
    ChangeStream,
    Polling,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceConfig {
    pub mode: SourceMode,
    pub probe_interval: Duration,
    pub poll_interval: Duration,
    pub poll_overlap: Duration,
    /// `SSE_POLL_SETTLE_MS`: how old a document's `_id` must be before a poll delivers it
    /// (see `Poller::poll`).
    pub poll_settle: Duration,
}

/// Counters for the metrics endpoint: polls, documents found, switches (the current mode is
/// the hub's).
#[derive(Debug, Default)]
pub struct SourceStats {
    pub poll: Arc<PollStats>,
    pub switches: AtomicU64,
}

pub struct Supervisor {
    pub watcher: Watcher,
    pub config: SourceConfig,
    pub stats: Arc<SourceStats>,
}

enum PollExit {
    Shutdown,
    ChangeStreamsBack(Box<ChangeStream<Document>>, Skip),
}

impl Supervisor {
    fn polling_mode(&self) -> Mode {
        Mode::Polling {
            interval_ms: self.config.poll_interval.as_millis() as u64,
        }
    }

    async fn sleep_or_stop(d: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => false,
            _ = shutdown.wait_for(|s| *s) => true,
        }
    }

    /// Runs until shutdown.
    ///
    /// Every reopen waits a backoff that doubles (with jitter) while the stream keeps failing
    /// and resets once a stream has stayed up for [`STABLE_AFTER`]: a `getMore` that fails at
    /// once (an event over 16 MiB, a server refusing the cursor) must cost MongoDB a few calls
    /// a second, not thousands. After [`FAILING_AFTER`] of failures the hub says so and
    /// `/readyz` answers 503, so a load balancer stops sending browsers here.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let hub = Arc::clone(&self.watcher.hub);
        if self.config.mode != SourceMode::ChangeStream {
            // A poller (taking over, or catching a client up) must know what was delivered
            // within its overlap window, however busy that window was.
            hub.track_delivered(self.config.poll_overlap);
        }
        let mut polling = self.config.mode == SourceMode::Polling;
        let mut resume = Resume::Now;
        let mut skip: Option<Skip> = None;
        let mut opened: Option<Box<ChangeStream<Document>>> = None;
        let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
        let mut failing = Failing::default();
        loop {
            if *shutdown.borrow() {
                return;
            }
            if polling {
                match self.poll_until_switch(&mut shutdown).await {
                    None => continue, // failed to start: backoff was applied inside
                    Some(PollExit::Shutdown) => return,
                    Some(PollExit::ChangeStreamsBack(stream, s)) => {
                        resume = stream.resume_token().map_or(Resume::Now, Resume::After);
                        opened = Some(stream);
                        skip = Some(s);
                        polling = false;
                        self.stats.switches.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(
                            "change streams are available again: switching back from polling"
                        );
                    }
                }
                continue;
            }
            let result = match opened.take() {
                Some(s) => Ok(s),
                None => tokio::select! {
                    r = self.watcher.open(resume.clone()) => r.map(Box::new),
                    _ = shutdown.wait_for(|s| *s) => return,
                },
            };
            let mut stream = match result {
                Ok(s) => s,
                Err(e) if !resume.is_now() && is_history_lost(&e) => {
                    tracing::error!("the change stream's resume point fell off the oplog; restarting from now and telling clients about the gap");
                    resume = Resume::Now;
                    match self.watcher.open(Resume::Now).await {
                        Ok(s) => {
                            if let Some(p) = s.resume_token().as_ref().and_then(position_of) {
                                hub.source_restarted_with_gap(p);
                            }
                            Box::new(s)
                        }
                        Err(e) => {
                            hub.set_state(SourceState::Down(e.to_string()));
                            continue;
                        }
                    }
                }
                Err(e) => {
                    if let (SourceMode::Auto, Some(why)) =
                        (self.config.mode, unavailable_reason(&e))
                    {
                        tracing::warn!("change streams are not available ({why}): switching to polling every {:?}", self.config.poll_interval);
                        polling = true;
                        self.stats.switches.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let delay = backoff.next_delay();
                    tracing::warn!("cannot open the change stream: {e}; retrying in {delay:?}");
                    hub.set_state(SourceState::Down(e.to_string()));
                    if Self::sleep_or_stop(delay, &mut shutdown).await {
                        return;
                    }
                    continue;
                }
            };
            // The head: the stream's own token, or, on a first start whose token is missing
            // or unusable, nothing to publish against yet.
            let Some(start) = stream.resume_token().as_ref().and_then(position_of) else {
                let delay = backoff.next_delay();
                hub.set_state(SourceState::Down(
                    "the change stream returned no usable resume token".into(),
                ));
                if Self::sleep_or_stop(delay, &mut shutdown).await {
                    return;
                }
                continue;
            };
            hub.source_started(start, Mode::ChangeStream);
            if let Some(why) = failing.still() {
                hub.set_state(SourceState::Down(why));
            }
            tracing::debug!("change stream open");
            let end = {
                let pump = self
                    .watcher
                    .pump(&mut stream, &mut resume, &mut skip, &mut shutdown);
                tokio::pin!(pump);
                tokio::select! {
                end = &mut pump => end,
                _ = tokio::time::sleep(STABLE_AFTER) => {
                    // Up for long enough: healthy again.
                    backoff.reset();
                    if failing.still().is_some() {
                        hub.set_state(SourceState::Running);
                    }
                    failing.recovered();
                    pump.await
                }
                }
            };
            match end {
                PumpEnd::Shutdown => return,
                PumpEnd::Invalidated(token) => {
                    // A dropped database (or collection, on a collection stream): nothing is
                    // lost, the stream continues right after the invalidate.
                    tracing::warn!("the change stream was invalidated (database dropped or renamed); continuing after it");
                    resume = Resume::StartAfter(token);
                    continue;
                }
                PumpEnd::Failed(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(
                        "change stream failed: {e}; reopening from the last position in {delay:?}"
                    );
                    if let Some(why) = failing.failed(&e) {
                        hub.set_state(SourceState::Down(why));
                    }
                    if Self::sleep_or_stop(delay, &mut shutdown).await {
                        return;
                    }
                }
            }
        }
    }

    /// Polls until shutdown or until a probe finds change streams available again. `None`
    /// when the poller could not start (MongoDB down): the caller loops.
    async fn poll_until_switch(&self, shutdown: &mut watch::Receiver<bool>) -> Option<PollExit> {
        let hub = &self.watcher.hub;
        let db = self.watcher.db.clone();
        let sources = self.watcher.sources.clone();
        let overlap = self.config.poll_overlap;
        let stats = Arc::clone(&self.stats.poll);
        let started = match hub.head().and_then(|p| p.cluster_time()) {
            Some(t) => {
                let delivered = hub.recent_keys();
                Poller::after_change_stream(db, sources, overlap, stats, t.time, &delivered)
                    .await
                    .map(|p| p.not_before(hub.began_secs(), t.time))
            }
            None => Poller::start_now(db, sources, overlap, stats).await,
        };
        let mut poller = match started {
            Ok(p) => p.settling(self.config.poll_settle),
            Err(e) => {
                tracing::warn!("cannot start polling: {e}");
                hub.set_state(SourceState::Down(e.to_string()));
                if Self::sleep_or_stop(BACKOFF_MAX, shutdown).await {
                    return Some(PollExit::Shutdown);
                }
                return None;
            }
        };
        hub.source_started(poller.position(), self.polling_mode());
        hub.record_delivered(poller.take_baseline());
        let probing = self.config.mode == SourceMode::Auto;
        let mut next_probe = Instant::now() + self.config.probe_interval;
        loop {
            match poller.poll().await {
                Ok(events) => {
                    for ev in events {
                        hub.publish(ev);
                    }
                    hub.advance(poller.position());
                    hub.set_state(SourceState::Running);
                }
                Err(e) => {
                    tracing::warn!("poll failed: {e}");
                    hub.set_state(SourceState::Down(e.to_string()));
                }
            }
            if probing && Instant::now() >= next_probe {
                next_probe = Instant::now() + self.config.probe_interval;
                match self.watcher.open(Resume::Now).await {
                    Ok(stream) => {
                        // Everything committed before the stream opened, delivered by polling:
                        // settled or not, the change stream starts after it.
                        match poller.poll_all().await {
                            Ok(events) => {
                                for ev in events {
                                    hub.publish(ev);
                                }
                                let skip = Skip::new(poller.delivered_keys(), overlap);
                                return Some(PollExit::ChangeStreamsBack(Box::new(stream), skip));
                            }
                            Err(e) => tracing::warn!(
                                "final poll before switching back failed: {e}; staying on polling"
                            ),
                        }
                    }
                    Err(e) => tracing::debug!("change streams still unavailable: {e}"),
                }
            }
            if Self::sleep_or_stop(self.config.poll_interval, shutdown).await {
                return Some(PollExit::Shutdown);
            }
        }
    }
}
