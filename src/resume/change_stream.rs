//! Catching up in change-stream mode: a reconnect whose position is older than the history
//! ring reads what it missed with a change stream of its own (`resumeAfter` its position,
//! narrowed to its channels), up to the head it subscribed at; from there its live queue
//! continues with no gap and no duplicate.

use std::time::Duration;

use bson::Document;
use mongodb::Database;

use super::replay::{Producer, Replay};
use super::slots::Slots;
use super::CatchUpError;
use crate::channel::Channel;
use crate::position::{Position, ResumePoint};
use crate::routing::SourceSpecs;
use crate::source;
use crate::source::change_stream::{self, Resume};
use crate::tasks::Tasks;

const BATCH: u32 = 256;

/// Invalidates (a dropped database) a catch-up continues across before giving up.
const MAX_INVALIDATES: usize = 16;

pub struct ChangeStreamCatchUp {
    pub db: Database,
    pub sources: SourceSpecs,
    pub tasks: Tasks,
    pub stall: Duration,
}

impl ChangeStreamCatchUp {
    /// Opens a catch-up from `from` to `until` for `channels`. Returns once MongoDB accepted
    /// the resume, so that a bad position is still answered with a 4xx before streaming.
    pub async fn start(
        &self,
        slots: &Slots,
        from: &Position,
        until: &Position,
        channels: &[Channel],
    ) -> Result<Replay, CatchUpError> {
        let Some(point) = from.resume_point() else {
            return Err(CatchUpError::Unusable(
                "not a change-stream position".into(),
            ));
        };
        let Some(pipeline) = source::pipeline::for_channels(&self.sources, channels) else {
            // No source routes to these channels: nothing to catch up on.
            return Ok(Replay::empty());
        };
        let permit = slots.take().await?;
        let (opened_tx, opened_rx) = tokio::sync::oneshot::channel();
        let (replay, producer) = Replay::channel(self.stall, self.tasks.shutdown_signal());
        let task = Task {
            db: self.db.clone(),
            sources: self.sources.clone(),
            pipeline,
            until: until.clone(),
            channels: channels.to_vec(),
        };
        self.tasks.spawn(async move {
            let _permit = permit;
            task.run(point, opened_tx, producer).await;
        });
        match opened_rx.await {
            Ok(Ok(())) => Ok(replay),
            Ok(Err(e)) if source::is_history_lost(&e) => Err(CatchUpError::HistoryLost),
            Ok(Err(e)) if source::is_unusable_token(&e) => {
                Err(CatchUpError::Unusable(e.to_string()))
            }
            Ok(Err(e)) => Err(CatchUpError::Failed(e.to_string())),
            Err(_) => Err(CatchUpError::Failed("catch-up task ended".into())),
        }
    }
}

struct Task {
    db: Database,
    sources: SourceSpecs,
    pipeline: Vec<Document>,
    until: Position,
    channels: Vec<Channel>,
}

type Opened = tokio::sync::oneshot::Sender<mongodb::error::Result<()>>;

impl Task {
    async fn open(
        &self,
        resume: Resume,
    ) -> mongodb::error::Result<mongodb::change_stream::ChangeStream<Document>> {
        let watch = self
            .db
            .watch()
            .pipeline(self.pipeline.clone())
            .full_document(mongodb::options::FullDocumentType::UpdateLookup)
            .max_await_time(Duration::from_millis(200))
            .batch_size(BATCH);
        resume.open(watch).await
    }

    async fn run(self, point: ResumePoint, opened: Opened, mut out: Producer) {
        let first = match point {
            ResumePoint::After(d) => match bson::from_document(d) {
                Ok(t) => Resume::After(t),
                Err(e) => {
                    let _ = opened.send(Err(mongodb::error::Error::custom(format!(
                        "not a resume token: {e}"
                    ))));
                    return;
                }
            },
            ResumePoint::AtOperationTime(ts) => Resume::AtOperationTime(ts),
        };
        let mut stream = match self.open(first).await {
            Ok(s) => {
                let _ = opened.send(Ok(()));
                s
            }
            Err(e) => {
                let _ = opened.send(Err(e));
                return;
            }
        };
        let mut invalidates = 0;
        loop {
            // Done once MongoDB's position has reached the subscription head.
            let reached = stream
                .resume_token()
                .as_ref()
                .and_then(change_stream::position_of)
                .is_some_and(|p| p >= self.until);
            if reached {
                return out.done();
            }
            if change_stream::is_over(&stream) {
                // Replayed into an invalidate (a dropped database): continue after it, as
                // the live watcher did.
                invalidates += 1;
                let reopened = match stream.resume_token() {
                    Some(t) if invalidates <= MAX_INVALIDATES => {
                        self.open(Resume::StartAfter(t)).await
                    }
                    _ => Err(mongodb::error::Error::custom(
                        "the catch-up stream ended at an invalidate",
                    )),
                };
                match reopened {
                    Ok(s) => stream = s,
                    Err(e) => return out.fail(e.to_string()).await,
                }
                continue;
            }
            let next = tokio::select! {
                n = stream.next_if_any() => n,
                _ = out.out.abandoned() => return,
            };
            let raw = match next {
                Ok(Some(raw)) => raw,
                Ok(None) => continue,
                Err(e) => return out.fail(e.to_string()).await,
            };
            let ev = match change_stream::to_event(&self.sources, &raw) {
                Ok(Some(ev)) => ev,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!("catch-up skipping a change event: {e}");
                    continue;
                }
            };
            if ev.position > self.until {
                return out.done();
            }
            if !self.channels.iter().any(|c| ev.channel.is_within(c)) {
                continue;
            }
            if !out.send(ev).await {
                return;
            }
        }
    }
}
