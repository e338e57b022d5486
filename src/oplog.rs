//! The oplog's window: how far back MongoDB can still replay changes. A client resuming from
//! a position older than the oplog's first entry gets a `gap`; comparing the oldest position
//! held by a connected client with this tells an operator beforehand.

use bson::{doc, Document};

/// The timestamp of the oldest entry in `local.oplog.rs`, or `None` where there is no oplog
/// (a standalone server). Errors where the deployment does not let this user read it (no read
/// on `local`, Atlas shared tiers) or MongoDB is unreachable.
pub async fn oldest_oplog_time(
    client: &mongodb::Client,
) -> anyhow::Result<Option<bson::Timestamp>> {
    let first = client
        .database("local")
        .collection::<Document>("oplog.rs")
        .find_one(doc! {})
        .sort(doc! {"$natural": 1})
        .projection(doc! {"ts": 1, "_id": 0})
        .await?;
    match first {
        None => Ok(None),
        Some(entry) => match entry.get("ts") {
            Some(bson::Bson::Timestamp(ts)) => Ok(Some(*ts)),
            other => anyhow::bail!("the oplog's first entry has no timestamp `ts` ({other:?})"),
        },
    }
}
