//! Reading the oplog window: how far back a change stream can resume. A browser (or a
//! catch-up) asking for a position older than the oldest oplog entry gets a `gap` event, so
//! the window is what "reconnects lose nothing" means in hours.
//!
//! Both reads are the ones MongoDB's own tools make (`rs.printReplicationInfo()`): the first
//! and the last entry of `local.oplog.rs` in natural (insertion) order, projected to `ts`.
//! They need read access to the `local` database (`clusterMonitor`, `backup` or `root`). A
//! standalone server has no oplog (`None`); through `mongos` the collection is not there
//! either (each shard has its own).

use bson::{doc, Document, Timestamp};
use mongodb::Client;

async fn oplog_end(client: &Client, natural: i32) -> anyhow::Result<Option<Timestamp>> {
    let entry = client
        .database("local")
        .collection::<Document>("oplog.rs")
        .find_one(doc! {})
        .sort(doc! {"$natural": natural})
        .projection(doc! {"ts": 1, "_id": 0})
        .await?;
    match entry {
        None => Ok(None),
        Some(d) => match d.get_timestamp("ts") {
            Ok(ts) => Ok(Some(ts)),
            Err(_) => anyhow::bail!("an oplog entry without a timestamp `ts`: {d}"),
        },
    }
}

/// The cluster time of the oldest entry still in the oplog, `None` without an oplog.
pub async fn oldest_oplog_time(
    client: &mongodb::Client,
) -> anyhow::Result<Option<bson::Timestamp>> {
    oplog_end(client, 1).await
}

/// The cluster time of the newest entry in the oplog, `None` without an oplog.
pub async fn newest_oplog_time(client: &Client) -> anyhow::Result<Option<Timestamp>> {
    oplog_end(client, -1).await
}

/// The span between two oplog times, in hours (0 when `newest` is not after `oldest`).
pub fn window_hours(oldest: Timestamp, newest: Timestamp) -> f64 {
    f64::from(newest.time.saturating_sub(oldest.time)) / 3600.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window() {
        let t = |time| Timestamp { time, increment: 1 };
        assert_eq!(window_hours(t(0), t(7200)), 2.0);
        assert_eq!(window_hours(t(100), t(100)), 0.0);
        assert_eq!(window_hours(t(200), t(100)), 0.0);
    }
}
