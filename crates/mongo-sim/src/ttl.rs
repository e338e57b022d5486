//! The TTL monitor: like mongod's `TTLMonitor`, a background pass every `ttlMonitorSleepSecs`
//! (60 s by default) deletes the documents whose TTL-indexed date field is older than the
//! index's `expireAfterSeconds`. Deletions go through the oplog like any other delete, so change
//! streams report them, and an embedded demo that writes forever stays bounded.

use crate::oplog::{EntryExtra, OpKind};
use crate::query::path;
use crate::state::{Shared, State};
use bson::{Bson, DateTime};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// MongoDB's default `ttlMonitorSleepSecs`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// The date a TTL index reads from a document: the field's date, or the earliest date of an
/// array (as MongoDB does); anything else never expires.
fn expiry_date(v: &Bson) -> Option<DateTime> {
    match v {
        Bson::DateTime(d) => Some(*d),
        Bson::Array(a) => a
            .iter()
            .filter_map(|x| match x {
                Bson::DateTime(d) => Some(*d),
                _ => None,
            })
            .min(),
        _ => None,
    }
}

/// `expireAfterSeconds` of an index, in milliseconds, if it is a TTL index MongoDB honours
/// (a single-field key and a numeric value).
fn ttl_millis(index: &crate::store::IndexSpec) -> Option<i64> {
    if index.key.len() != 1 {
        return None;
    }
    let secs = match index.options.get("expireAfterSeconds")? {
        Bson::Int32(i) => *i as f64,
        Bson::Int64(i) => *i as f64,
        Bson::Double(d) => *d,
        _ => return None,
    };
    (secs >= 0.0 && secs.is_finite()).then_some((secs * 1000.0) as i64)
}

/// One pass: deletes every expired document and returns how many went.
pub fn expire(st: &mut State, now: DateTime) -> usize {
    let mut doomed = Vec::new();
    for (db, database) in &st.dbs {
        for (name, c) in &database.collections {
            for index in &c.indexes {
                let (Some(ms), Some(field)) = (ttl_millis(index), index.key.keys().next()) else {
                    continue;
                };
                for (rec, d) in c.iter() {
                    let expired = path::get(d, field).and_then(expiry_date).is_some_and(|at| {
                        at.timestamp_millis().saturating_add(ms) <= now.timestamp_millis()
                    });
                    if expired {
                        doomed.push((db.clone(), name.clone(), rec));
                    }
                }
            }
        }
    }
    let mut n = 0;
    for (db, coll, rec) in doomed {
        let Some(c) = st.collection_mut(&db, &coll) else {
            continue;
        };
        let images = c.pre_images_enabled();
        // Two TTL indexes may name the same document; it goes once.
        let Some(doc) = c.remove(rec) else {
            continue;
        };
        let key = doc.get("_id").cloned().unwrap_or(Bson::Null);
        let extra = EntryExtra {
            pre_image: images.then_some(doc),
            ..EntryExtra::default()
        };
        st.log_with(&db, &coll, OpKind::Delete { key }, extra);
        n += 1;
    }
    n
}

/// Runs passes until shutdown, at the interval `interval` holds (it may change at run time).
pub async fn monitor(
    shared: Arc<Shared>,
    mut interval: watch::Receiver<Duration>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let wait = *interval.borrow_and_update();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {
                let (n, head) = {
                    let mut st = shared.lock();
                    let n = expire(&mut st, DateTime::now());
                    (n, st.oplog.head_seq())
                };
                if n > 0 {
                    tracing::debug!("TTL monitor deleted {n} documents");
                    shared.publish_head(head);
                }
            }
            // A new interval starts counting from now.
            Ok(()) = interval.changed() => {}
            _ = crate::state::stopped(&mut shutdown) => break,
        }
    }
}
