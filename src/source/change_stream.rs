//! The live source: one database-level change stream covering every configured collection, so
//! that one position space orders all of them. The driver resumes by itself after resumable
//! errors; after anything else this loop reopens from the last token it saw, with backoff. A
//! last token that has fallen off the oplog cannot be resumed: the hub is told there is a gap
//! and the stream starts again from now.

use std::sync::Arc;
use std::time::Duration;

use bson::Document;
use mongodb::change_stream::event::ResumeToken;
use mongodb::change_stream::ChangeStream;
use mongodb::options::FullDocumentType;
use mongodb::Database;
use tokio::sync::watch;

use crate::event::{Event, Op};
use crate::hub::{Hub, SourceState};
use crate::position::Position;
use crate::routing::SourceSpecs;

/// How long one getMore waits for events. Short enough that the head (and so `id:`-only
/// heartbeats and backlog hand-offs) follows a quiet database closely.
const MAX_AWAIT: Duration = Duration::from_millis(500);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

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
    Ok(Some(Event::for_document(
        position,
        coll,
        spec.channel_for(doc),
        op,
        doc,
    )))
}

pub fn position_of(token: &ResumeToken) -> Option<Position> {
    let doc = bson::to_document(token).ok()?;
    Position::from_resume_token(&doc).ok()
}

pub fn token_of(position: &Position) -> Option<ResumeToken> {
    bson::from_document(position.to_resume_token()?).ok()
}

impl Watcher {
    async fn open(
        &self,
        resume: Option<ResumeToken>,
    ) -> mongodb::error::Result<ChangeStream<Document>> {
        let stream = self
            .db
            .watch()
            .pipeline(super::pipeline::live(&self.sources))
            .full_document(FullDocumentType::UpdateLookup)
            .max_await_time(MAX_AWAIT)
            .resume_after(resume)
            .await?;
        Ok(stream.with_type::<Document>())
    }

    /// Runs until shutdown.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut resume: Option<ResumeToken> = None;
        let mut backoff = BACKOFF_MIN;
        loop {
            if *shutdown.borrow() {
                return;
            }
            let opened = tokio::select! {
                r = self.open(resume.clone()) => r,
                _ = shutdown.wait_for(|s| *s) => return,
            };
            let mut stream = match opened {
                Ok(s) => s,
                Err(e) if resume.is_some() && super::is_history_lost(&e) => {
                    tracing::error!("the change stream's resume point fell off the oplog; restarting from now and telling clients about the gap");
                    resume = None;
                    match self.open(None).await {
                        Ok(s) => {
                            if let Some(p) = s.resume_token().as_ref().and_then(position_of) {
                                self.hub.source_restarted_with_gap(p);
                            }
                            s
                        }
                        Err(e) => {
                            self.hub.set_state(SourceState::Down(e.to_string()));
                            continue;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!("cannot open the change stream: {e}; retrying in {backoff:?}");
                    self.hub.set_state(SourceState::Down(e.to_string()));
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.wait_for(|s| *s) => return,
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
            match stream.resume_token().as_ref().and_then(position_of) {
                Some(start) => self.hub.source_started(start),
                None => {
                    self.hub.set_state(SourceState::Down(
                        "the change stream returned no resume token".into(),
                    ));
                    tokio::time::sleep(backoff).await;
                    continue;
                }
            }
            tracing::info!("change stream open");
            backoff = BACKOFF_MIN;
            loop {
                let next = tokio::select! {
                    r = stream.next_if_any() => r,
                    _ = shutdown.wait_for(|s| *s) => return,
                };
                match next {
                    Ok(Some(raw)) => match to_event(&self.sources, &raw) {
                        Ok(Some(ev)) => self.hub.publish(ev),
                        Ok(None) => {}
                        Err(e) => tracing::warn!("skipping a change event: {e}"),
                    },
                    Ok(None) => {}
                    Err(e) => {
                        // The driver already resumed once if the error was resumable.
                        tracing::warn!(
                            "change stream failed: {e}; reopening from the last position"
                        );
                        break;
                    }
                }
                if let Some(t) = stream.resume_token() {
                    if let Some(p) = position_of(&t) {
                        self.hub.advance(p);
                    }
                    resume = Some(t);
                }
            }
            drop(stream);
        }
    }
}
