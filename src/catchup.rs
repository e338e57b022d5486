//! Catch-up streams: a reconnect whose position is older than the history ring reads what it
//! missed from MongoDB with its own change stream (`resumeAfter` its position, narrowed to its
//! channels), up to the head it subscribed at; from there the live queue continues with no gap
//! and no duplicate. They are bounded: after a gateway restart every browser reconnects at
//! once, and one change stream per browser is exactly the load this design exists to avoid.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bson::Document;
use mongodb::Database;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use crate::channel::Channel;
use crate::event::Event;
use crate::position::Position;
use crate::routing::SourceSpecs;
use crate::source::{self, change_stream};

const BATCH: usize = 256;

pub struct CatchUps {
    db: Database,
    sources: SourceSpecs,
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
    /// MongoDB work runs on the runtime that owns the driver's connections.
    runtime: Handle,
}

#[derive(Debug)]
pub enum CatchUpError {
    /// Every slot is busy and the waiting line is full.
    Busy,
    /// The position is no longer in the oplog: tell the client about the gap.
    HistoryLost,
    /// MongoDB cannot resume from this position at all (a foreign or corrupt id).
    Unusable(String),
    /// MongoDB is unreachable or failed otherwise.
    Failed(String),
}

/// A running catch-up: events after the position, in order, ending at the subscription head.
pub struct CatchUp {
    pub events: mpsc::Receiver<Result<Arc<Event>, String>>,
}

impl CatchUps {
    pub fn new(
        db: Database,
        sources: SourceSpecs,
        concurrency: usize,
        max_waiting: usize,
        runtime: Handle,
    ) -> Self {
        CatchUps {
            db,
            sources,
            slots: Arc::new(Semaphore::new(concurrency.max(1))),
            waiting: AtomicUsize::new(0),
            max_waiting,
            runtime,
        }
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
        let Some(token) = change_stream::token_of(from) else {
            return Err(CatchUpError::Unusable(
                "not a change-stream position".into(),
            ));
        };
        let (tx, rx) = mpsc::channel(BATCH);
        let Some(pipeline) = source::pipeline::for_channels(&self.sources, channels) else {
            // No source routes to these channels: nothing to catch up on.
            return Ok(CatchUp { events: rx });
        };
        let (opened_tx, opened_rx) = oneshot::channel();
        let db = self.db.clone();
        let sources = self.sources.clone();
        let until = until.clone();
        let channels: Vec<Channel> = channels.to_vec();
        self.runtime.spawn(async move {
            let _permit = permit;
            let opened = db
                .watch()
                .pipeline(pipeline)
                .full_document(mongodb::options::FullDocumentType::UpdateLookup)
                .max_await_time(Duration::from_millis(200))
                .batch_size(BATCH as u32)
                .resume_after(token)
                .await;
            let mut stream = match opened {
                Ok(s) => {
                    let _ = opened_tx.send(Ok(()));
                    s.with_type::<Document>()
                }
                Err(e) => {
                    let _ = opened_tx.send(Err(e));
                    return;
                }
            };
            loop {
                // Done once MongoDB's position has reached the subscription head.
                if let Some(p) = stream
                    .resume_token()
                    .as_ref()
                    .and_then(change_stream::position_of)
                {
                    if p >= until {
                        return;
                    }
                }
                let raw = match stream.next_if_any().await {
                    Ok(Some(raw)) => raw,
                    Ok(None) => continue,
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string())).await;
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
                    return;
                }
                if !channels.iter().any(|c| ev.channel.is_within(c)) {
                    continue;
                }
                if tx.send(Ok(Arc::new(ev))).await.is_err() {
                    return; // the client went away
                }
            }
        });
        match opened_rx.await {
            Ok(Ok(())) => Ok(CatchUp { events: rx }),
            Ok(Err(e)) if source::is_history_lost(&e) => Err(CatchUpError::HistoryLost),
            Ok(Err(e)) if source::is_unusable_token(&e) => {
                Err(CatchUpError::Unusable(e.to_string()))
            }
            Ok(Err(e)) => Err(CatchUpError::Failed(e.to_string())),
            Err(_) => Err(CatchUpError::Failed("catch-up task ended".into())),
        }
    }
}
