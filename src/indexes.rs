//! The indexes the gateway's queries need, derived from the configuration. `migrate` creates
//! them (see `migrations/` and [`crate::migrate`]); `check` reports the missing ones. Both ask
//! [`required_indexes`], so what is created and what is checked cannot drift apart.
//!
//! The queries (`backlog.rs`, the polling catch-up) are "documents routed to these channels,
//! by `_id`": an equality on the leading routing fields, then a range or sort on `_id`. One
//! compound index per source, its routing fields in channel order then `_id`, serves every
//! channel depth (an equality on a prefix of the key). The live poll itself (`_id >= x`) uses
//! the `_id` index every collection has. The events collection is routed by its stored
//! `channels` array (multikey), and expires by `published_at` (TTL).

use bson::{doc, Bson, Document};
use serde::Serialize;

use crate::config::Config;
use crate::routing::{CHANNELS_FIELD, PUBLISHED_AT_FIELD};

/// Name of the TTL index on the events collection.
pub const EVENTS_TTL_INDEX: &str = "published_at_ttl";

/// One index as `createIndexes` takes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequiredIndex {
    pub collection: String,
    /// Key pattern, fields in order, each `1`.
    pub key: Document,
    pub name: String,
    /// TTL in seconds, for a TTL index.
    #[serde(rename = "expireAfterSeconds", skip_serializing_if = "Option::is_none")]
    pub expire_after_secs: Option<u64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unique: bool,
    /// Why the gateway needs it, for humans (`check`, `migrate --dry-run`).
    #[serde(skip)]
    pub purpose: &'static str,
}

impl RequiredIndex {
    /// The entry of a `createIndexes` command's `indexes` array.
    pub fn to_command_spec(&self) -> Document {
        let mut d = doc! {"key": self.key.clone(), "name": self.name.clone()};
        if let Some(ttl) = self.expire_after_secs {
            d.insert("expireAfterSeconds", ttl as i64);
        }
        if self.unique {
            d.insert("unique", true);
        }
        d
    }

    /// Whether an index `listIndexes` returned has this key pattern (whatever its name: an
    /// operator may have created it by hand).
    pub fn same_key(&self, listed: &Document) -> bool {
        listed
            .get_document("key")
            .map(|k| same_key(k, &self.key))
            .unwrap_or(false)
    }

    /// `expireAfterSeconds` of a listed index, as a number.
    pub fn listed_ttl(listed: &Document) -> Option<i64> {
        match listed.get("expireAfterSeconds")? {
            Bson::Int32(n) => Some(i64::from(*n)),
            Bson::Int64(n) => Some(*n),
            Bson::Double(f) => Some(*f as i64),
            _ => None,
        }
    }
}

/// Key patterns compare by field order and direction, whatever numeric type spells `1`.
fn same_key(a: &Document, b: &Document) -> bool {
    let num = |v: &Bson| match v {
        Bson::Int32(n) => Some(f64::from(*n)),
        Bson::Int64(n) => Some(*n as f64),
        Bson::Double(f) => Some(*f),
        _ => None,
    };
    a.len() == b.len()
        && a.iter().zip(b.iter()).all(|((ka, va), (kb, vb))| {
            ka == kb
                && match (num(va), num(vb)) {
                    (Some(x), Some(y)) => x == y,
                    _ => va == vb,
                }
        })
}

/// MongoDB's default index name: `field_1_other_1`.
pub fn index_name(key: &Document) -> String {
    key.iter()
        .map(|(k, v)| match v {
            Bson::Int32(n) => format!("{k}_{n}"),
            Bson::Int64(n) => format!("{k}_{n}"),
            other => format!("{k}_{other}"),
        })
        .collect::<Vec<_>>()
        .join("_")
}

/// The index each configured source's backlog and polling-catch-up queries need: its routing
/// fields then `_id` (sources without routing fields need only `_id`, which exists). The
/// events collection's is `channels` then `_id`, plus its TTL index on `published_at`.
pub fn required_indexes(config: &Config) -> Vec<RequiredIndex> {
    let mut out = Vec::new();
    for spec in config.sources.iter() {
        let fields: Vec<&str> = if spec.published {
            vec![CHANNELS_FIELD]
        } else {
            spec.fields.iter().map(String::as_str).collect()
        };
        if fields.is_empty() {
            continue;
        }
        let mut key = Document::new();
        for f in fields {
            key.insert(f, 1_i32);
        }
        key.insert("_id", 1_i32);
        out.push(RequiredIndex {
            collection: spec.collection.clone(),
            name: index_name(&key),
            key,
            expire_after_secs: None,
            unique: false,
            purpose: "backlog and polling catch-up queries by channel",
        });
    }
    out.push(events_ttl_index(config));
    out
}

/// The TTL index of the events collection.
pub fn events_ttl_index(config: &Config) -> RequiredIndex {
    RequiredIndex {
        collection: config.events_collection.clone(),
        key: doc! {PUBLISHED_AT_FIELD: 1_i32},
        name: EVENTS_TTL_INDEX.to_owned(),
        expire_after_secs: Some(config.events_ttl_secs),
        unique: false,
        purpose: "published events expire after SSE_EVENTS_TTL_SECS",
    }
}

/// The source indexes only (what the `$source_indexes` step of a migration stands for).
pub fn source_indexes(config: &Config) -> Vec<RequiredIndex> {
    required_indexes(config)
        .into_iter()
        .filter(|i| i.expire_after_secs.is_none())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Config {
        let mut all = vec![("SSE_AUTH".to_owned(), "none".to_owned())];
        all.extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Config::from_iter(all).unwrap()
    }

    #[test]
    fn one_index_per_routed_source_plus_the_events_collection() {
        let c = config(&[
            (
                "SSE_SOURCES",
                "logs:logs:workspace_id/workflow_id,jobs:j:meta.ws,bare:b",
            ),
            ("SSE_EVENTS_TTL_SECS", "60"),
        ]);
        let idx = required_indexes(&c);
        let got: Vec<(&str, &str)> = idx
            .iter()
            .map(|i| (i.collection.as_str(), i.name.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("logs", "workspace_id_1_workflow_id_1__id_1"),
                ("jobs", "meta.ws_1__id_1"),
                ("sse_events", "channels_1__id_1"),
                ("sse_events", "published_at_ttl"),
            ]
        );
        assert_eq!(
            idx[0].key,
            doc! {"workspace_id": 1, "workflow_id": 1, "_id": 1}
        );
        assert_eq!(idx[3].expire_after_secs, Some(60));
        assert_eq!(
            idx[3].to_command_spec(),
            doc! {"key": {"published_at": 1}, "name": "published_at_ttl", "expireAfterSeconds": 60_i64}
        );
        assert_eq!(source_indexes(&c).len(), 3);
        assert!(
            idx[0].same_key(&doc! {"key": {"workspace_id": 1.0, "workflow_id": 1_i64, "_id": 1}})
        );
        assert!(!idx[0].same_key(&doc! {"key": {"workflow_id": 1, "workspace_id": 1, "_id": 1}}));
    }
}
