//! `?backlog=N`: the last N documents of the requested channels, oldest first, then live —
//! with no gap and no duplicate even while writers race the query.
//!
//! The connection subscribes first (head H: every later event reaches its queue), then
//! queries. A document inserted after H may show up in both the query and the queue. So after
//! the query the gateway waits until the live feed has passed the query's `operationTime` (a
//! resume token begins with its cluster time), takes the queued inserts, and drops those
//! documents from the backlog: they are delivered once, live, with their exact positions.
//! Polling positions carry no cluster time; there a row the poller has not delivered yet
//! (inside its overlap window and not in memory) is left out of the backlog instead, because
//! the poller will deliver it live.

use std::cmp::Ordering;
use std::time::Duration;

use bson::{doc, Bson, Document, Timestamp};
use futures::TryStreamExt;
use mongodb::{Client, Database};

use crate::channel::Channel;
use crate::routing::SourceSpecs;
use crate::tasks::Tasks;

pub const MAX_BACKLOG: usize = 1000;
/// How long a backlog waits for the live feed to pass the query before de-duplicating with
/// what it has (and logging that it did).
pub const HANDOFF_WAIT: Duration = Duration::from_secs(5);

pub struct Backlogs {
    client: Client,
    db: Database,
    sources: SourceSpecs,
    tasks: Tasks,
}

/// A document of the backlog and the collection it came from.
pub struct Row {
    pub collection: String,
    pub doc: Document,
}

pub struct Fetched {
    /// Oldest first.
    pub rows: Vec<Row>,
    /// The query's `operationTime`: everything it saw committed at or before this.
    pub operation_time: Option<Timestamp>,
}

impl Backlogs {
    pub fn new(client: Client, db: Database, sources: SourceSpecs, tasks: Tasks) -> Self {
        Backlogs {
            client,
            db,
            sources,
            tasks,
        }
    }

    /// The last `n` documents routed to `channels` (or below them), across sources.
    pub async fn fetch(&self, channels: &[Channel], n: usize) -> Result<Fetched, String> {
        let n = n.min(MAX_BACKLOG);
        let mut queries: Vec<(String, Document)> = Vec::new();
        for spec in self.sources.iter() {
            if let Some(any_of) = spec.filter_for_any(channels, "") {
                queries.push((spec.collection.clone(), doc! {"$or": any_of}));
            }
        }
        if queries.is_empty() || n == 0 {
            return Ok(Fetched {
                rows: Vec::new(),
                operation_time: None,
            });
        }
        let client = self.client.clone();
        let db = self.db.clone();
        let task = self.tasks.spawn(async move {
            let mut session = client.start_session().await.map_err(|e| e.to_string())?;
            let mut rows: Vec<Row> = Vec::new();
            for (coll, filter) in queries {
                let mut cursor = db
                    .collection::<Document>(&coll)
                    .find(filter)
                    .sort(doc! {"_id": -1})
                    .limit(n as i64)
                    .batch_size(n as u32)
                    .session(&mut session)
                    .await
                    .map_err(|e| e.to_string())?;
                let docs: Vec<Document> = cursor
                    .stream(&mut session)
                    .try_collect()
                    .await
                    .map_err(|e| e.to_string())?;
                rows.extend(docs.into_iter().map(|doc| Row {
                    collection: coll.clone(),
                    doc,
                }));
            }
            Ok::<_, String>((rows, session.operation_time()))
        });
        let (mut rows, operation_time) = task.await.map_err(|e| e.to_string())??;
        // Newest first across sources, keep n, then oldest first.
        rows.sort_by(|a, b| compare_ids(b.doc.get("_id"), a.doc.get("_id")));
        rows.truncate(n);
        rows.reverse();
        Ok(Fetched {
            rows,
            operation_time,
        })
    }
}

/// `_id` order for merging sources: ObjectIds (the common case) by their bytes, which start
/// with their creation time; anything else by its display form, which is at least stable.
fn compare_ids(a: Option<&Bson>, b: Option<&Bson>) -> Ordering {
    match (a, b) {
        (Some(Bson::ObjectId(a)), Some(Bson::ObjectId(b))) => a.bytes().cmp(&b.bytes()),
        (Some(a), Some(b)) => a.to_string().cmp(&b.to_string()),
        (a, b) => a.is_some().cmp(&b.is_some()),
    }
}
