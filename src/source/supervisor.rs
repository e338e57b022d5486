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

use super::change_stream::{position_of, Skip, Watcher};
use super::polling::{PollStats, Poller};
use super::{is_history_lost, unavailable_reason, Mode};
use crate::hub::SourceState;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

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
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let hub = Arc::clone(&self.watcher.hub);
        if self.config.mode != SourceMode::ChangeStream {
            // A poller (taking over, or catching a client up) must know what was delivered
            // within its overlap window, however busy that window was.
            hub.track_delivered(self.config.poll_overlap);
        }
        let mut polling = self.config.mode == SourceMode::Polling;
        let mut resume = None;
        let mut skip: Option<Skip> = None;
        let mut opened: Option<Box<ChangeStream<Document>>> = None;
        let mut backoff = BACKOFF_MIN;
        loop {
            if *shutdown.borrow() {
                return;
            }
            if polling {
                match self.poll_until_switch(&mut shutdown).await {
                    None => continue, // failed to start: backoff was applied inside
                    Some(PollExit::Shutdown) => return,
                    Some(PollExit::ChangeStreamsBack(stream, s)) => {
                        resume = stream.resume_token();
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
                Err(e) if resume.is_some() && is_history_lost(&e) => {
                    tracing::error!("the change stream's resume point fell off the oplog; restarting from now and telling clients about the gap");
                    resume = None;
                    match self.watcher.open(None).await {
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
                    tracing::warn!("cannot open the change stream: {e}; retrying in {backoff:?}");
                    hub.set_state(SourceState::Down(e.to_string()));
                    if Self::sleep_or_stop(backoff, &mut shutdown).await {
                        return;
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
            let Some(start) = stream.resume_token().as_ref().and_then(position_of) else {
                hub.set_state(SourceState::Down(
                    "the change stream returned no usable resume token".into(),
                ));
                if Self::sleep_or_stop(backoff, &mut shutdown).await {
                    return;
                }
                continue;
            };
            hub.source_started(start, Mode::ChangeStream);
            tracing::info!("change stream open");
            backoff = BACKOFF_MIN;
            match self
                .watcher
                .pump(&mut stream, &mut resume, &mut skip, &mut shutdown)
                .await
            {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!("change stream failed: {e}; reopening from the last position")
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
                Poller::after_change_stream(db, sources, overlap, stats, t.time, &hub.recent_keys())
                    .await
            }
            None => Poller::start_now(db, sources, overlap, stats).await,
        };
        let mut poller = match started {
            Ok(p) => p,
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
                match self.watcher.open(None).await {
                    Ok(stream) => {
                        // Everything committed before the stream opened, delivered by polling.
                        match poller.poll().await {
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
