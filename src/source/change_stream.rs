//! The live source: one database-level change stream covering every configured collection, so
//! that one position space orders all of them. The driver resumes by itself after resumable
//! errors; the supervisor reopens after anything else (see `supervisor.rs`).

use std::sync::Arc;
use std::time::Duration;

use bson::Document;
use mongodb::change_stream::event::ResumeToken;
use mongodb::change_stream::ChangeStream;
use mongodb::options::FullDocumentType;
use mongodb::Database;
use tokio::sync::watch;

use crate::event::{Event, Op};
use crate::hub::Hub;
use crate::position::Position;
use crate::routing::SourceSpecs;

/// How long one getMore waits for events. Short enough that the head (and so `id:`-only
/// heartbeats and backlog hand-offs) follows a quiet database closely.
const MAX_AWAIT: Duration = Duration::from_millis(500);

pub struct Watcher {
    pub db: Database,
    pub sources: SourceSpecs,
    pub hub: Arc<Hub>,
}

/// A change-stream event turned into something routable, or nothing (a deleted document's
/// update, an operation we do not stream).
pub fn to_event(sources: &SourceSpecs, raw: &Document) -> Result<Option<Event>, String> {
    let token = raw
        .get_document("_id")
        .map_err(|_| "change event without _id".to_string())?;
    let position =
        Position::from_resume_token(token).map_err(|e| format!("unusable resume token: {e}"))?;
    let op = match raw
        .get_str("operationType")
        .ok()
        .and_then(Op::from_operation_type)
    {
        Some(op) => op,
        None => return Ok(None),
    };
    let coll = raw
        .get_document("ns")
        .ok()
        .and_then(|ns| ns.get_str("coll").ok())
        .unwrap_or_default();
    let (Some(spec), Ok(doc)) = (sources.get(coll), raw.get_document("fullDocument")) else {
        return Ok(None);
    };
    let mut ev = Event::for_source(position, spec, op, doc);
    ev.wall_time = raw
        .get_datetime("wallTime")
        .ok()
        .map(|t| t.to_system_time());
    Ok(Some(ev))
}

pub fn position_of(token: &ResumeToken) -> Option<Position> {
    let doc = bson::to_document(token).ok()?;
    Position::from_resume_token(&doc).ok()
}

pub fn token_of(position: &Position) -> Option<ResumeToken> {
    bson::from_document(position.to_resume_token()?).ok()
}

/// Where the watcher's stream starts.
#[derive(Debug, Clone, Default)]
pub enum Resume {
    /// Now.
    #[default]
    Now,
    /// After this token (the driver's own, exactly where the last stream stopped).
    After(ResumeToken),
    /// After an `invalidate` (the database was dropped): MongoDB refuses `resumeAfter` an
    /// invalidate but continues with `startAfter` it, losing nothing that came after.
    StartAfter(ResumeToken),
    /// At a cluster time (a catch-up from a position that is a time, not a token).
    AtOperationTime(bson::Timestamp),
}

impl Resume {
    pub fn is_now(&self) -> bool {
        matches!(self, Resume::Now)
    }

    /// Opens `watch` from here: the live watcher and the catch-ups open their streams alike.
    pub async fn open(
        self,
        watch: mongodb::action::Watch<'_>,
    ) -> mongodb::error::Result<ChangeStream<Document>> {
        let stream = match self {
            Resume::Now => watch.await?,
            Resume::After(t) => watch.resume_after(t).await?,
            Resume::StartAfter(t) => watch.start_after(t).await?,
            Resume::AtOperationTime(ts) => watch.start_at_operation_time(ts).await?,
        };
        Ok(stream.with_type::<Document>())
    }
}

/// Why [`Watcher::pump`] returned.
#[derive(Debug)]
pub enum PumpEnd {
    Shutdown,
    /// The stream delivered an `invalidate` and is closed; it continues with
    /// [`Resume::StartAfter`] its token.
    Invalidated(ResumeToken),
    /// An error the driver did not resume from.
    Failed(mongodb::error::Error),
}

/// Whether a change stream that yields nothing more is over for good: after an `invalidate`
/// the driver's stream is no longer alive and `next_if_any` answers `None` at once, forever —
/// a loop that only waits for events spins on it.
pub fn is_over<T>(stream: &ChangeStream<T>) -> bool
where
    T: serde::de::DeserializeOwned + Unpin + Send + Sync,
{
    !stream.is_alive()
}

impl Watcher {
    pub async fn open(&self, resume: Resume) -> mongodb::error::Result<ChangeStream<Document>> {
        let watch = self
            .db
            .watch()
            .pipeline(super::pipeline::live(&self.sources))
            .full_document(FullDocumentType::UpdateLookup)
            .max_await_time(MAX_AWAIT);
        resume.open(watch).await
    }

    /// Publishes the stream's events until shutdown (`Ok`) or an error the driver did not
    /// resume from (`Err`). `resume` follows every token, so the caller reopens from exactly
    /// where this stopped. `skip` holds inserts already delivered by the polling source just
    /// before a switch back to change streams; it expires with the overlap window.
    pub async fn pump(
        &self,
        stream: &mut ChangeStream<Document>,
        resume: &mut Resume,
        skip: &mut Option<Skip>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> PumpEnd {
        loop {
            if is_over(stream) {
                return match stream.resume_token() {
                    Some(t) => PumpEnd::Invalidated(t),
                    None => PumpEnd::Failed(mongodb::error::Error::custom(
                        "the change stream closed without a resume token",
                    )),
                };
            }
            let next = tokio::select! {
                r = stream.next_if_any() => r,
                _ = shutdown.wait_for(|s| *s) => return PumpEnd::Shutdown,
            };
            let next = match next {
                Ok(n) => n,
                Err(e) => return PumpEnd::Failed(e),
            };
            if let Some(raw) = next {
                match to_event(&self.sources, &raw) {
                    Ok(Some(ev)) => {
                        // Inserts the poller delivered just before the switch are not repeated.
                        if !skip.as_ref().is_some_and(|s| s.contains(&ev)) {
                            self.hub.publish(ev);
                        }
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!("skipping a change event: {e}"),
                }
            }
            if skip.as_ref().is_some_and(|s| s.expired()) {
                *skip = None;
            }
            if let Some(t) = stream.resume_token() {
                if let Some(p) = position_of(&t) {
                    self.hub.advance(p);
                }
                *resume = Resume::After(t);
            }
        }
    }
}

/// Inserts the polling source delivered just before a switch to change streams: the stream
/// starts at the switch, and may repeat them.
pub struct Skip {
    keys: std::collections::HashSet<Arc<str>>,
    until: std::time::Instant,
}

impl Skip {
    pub fn new(keys: std::collections::HashSet<Arc<str>>, for_how_long: Duration) -> Skip {
        Skip {
            keys,
            until: std::time::Instant::now() + for_how_long,
        }
    }

    fn contains(&self, ev: &Event) -> bool {
        ev.op == Op::Insert && ev.key.as_ref().is_some_and(|k| self.keys.contains(k))
    }

    fn expired(&self) -> bool {
        std::time::Instant::now() >= self.until
    }
}
