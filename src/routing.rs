//! Which channel a document belongs to.
//!
//! Each watched collection is a *source* with a channel prefix and up to three routing fields,
//! configured as `SSE_SOURCES=collection:prefix:field/field,...`. The default
//! `logs:logs:workspace_id/workflow_id` sends a log document with `workspace_id: "w1"` and
//! `workflow_id: "f1"` to `logs:w1:f1`.
//!
//! Writers change nothing, so documents are not guaranteed to carry every routing field. A
//! document missing a routing field goes to the longest channel it has fields for: a log line
//! without `workflow_id` lands on `logs:w1`, which workspace subscribers still see. Routing never
//! fails; at worst a document lands on the bare prefix.

use std::fmt;

use bson::{Bson, Document};

use crate::channel::{self, Channel, MAX_SEGMENTS};

/// Routing fields per source: one channel segment is the prefix.
pub const MAX_FIELDS: usize = MAX_SEGMENTS - 1;

/// One watched collection and how its documents map to channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSpec {
    /// Collection name in the configured database.
    pub collection: String,
    /// First channel segment for this collection's documents.
    pub prefix: String,
    /// Dotted field paths (`workspace_id`, `meta.ws`), in channel order.
    pub fields: Vec<String>,
    /// The publish API's events collection: each document carries its channel
    /// ([`CHANNEL_FIELD`], with its ancestors in [`CHANNELS_FIELD`] for queries) and its payload
    /// ([`DATA_FIELD`]) instead of being routed by fields. `prefix` is then only the fallback
    /// for a document written there by other means without a valid channel.
    pub published: bool,
}

/// The channel a published document was sent to, as given.
pub const CHANNEL_FIELD: &str = "channel";
/// That channel and its ancestors (`a:b:c`, `a:b`, `a`): an equality match on this array is
/// "routed to this channel or below it", and one index (`channels`, `_id`) serves it.
pub const CHANNELS_FIELD: &str = "channels";
/// What subscribers receive as `doc`: the `data` of the publish request.
pub const DATA_FIELD: &str = "data";
/// When the gateway stored it; the TTL index expires documents by this date.
pub const PUBLISHED_AT_FIELD: &str = "published_at";
/// The channel of a document in the events collection that has no valid `channel`.
pub const UNROUTED: &str = "_unrouted";
/// The default `SSE_EVENTS_COLLECTION`.
pub const DEFAULT_EVENTS_COLLECTION: &str = "sse_events";

/// A `SSE_SOURCES` value that cannot be used. The message names the offending entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSpecError(String);

impl fmt::Display for SourceSpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SourceSpecError {}

fn err(entry: &str, why: impl fmt::Display) -> SourceSpecError {
    SourceSpecError(format!("source {entry:?}: {why}"))
}

/// MongoDB collection name rules that matter for a collection we only read: non-empty, no
/// `$` or NUL, not a `system.` collection, and short enough for a namespace.
fn check_collection(entry: &str, name: &str) -> Result<(), SourceSpecError> {
    if name.is_empty() {
        return Err(err(entry, "collection name is empty"));
    }
    if name.contains('$') || name.contains('\0') {
        return Err(err(entry, "collection name must not contain '$' or NUL"));
    }
    if name.starts_with("system.") {
        return Err(err(entry, "system collections cannot be watched"));
    }
    if name.len() > 255 {
        return Err(err(entry, "collection name is longer than 255 bytes"));
    }
    Ok(())
}

fn check_field(entry: &str, path: &str) -> Result<(), SourceSpecError> {
    if path.is_empty() {
        return Err(err(entry, "empty field name"));
    }
    for part in path.split('.') {
        if part.is_empty() {
            return Err(err(entry, format!("field path {path:?} has an empty part")));
        }
        if part.starts_with('$') || part.contains('\0') {
            return Err(err(
                entry,
                format!("field path {path:?} must not start a part with '$' or contain NUL"),
            ));
        }
    }
    Ok(())
}

impl SourceSpec {
    /// Parses one entry: `collection:prefix` or `collection:prefix:field/field/field`.
    pub fn parse(entry: &str) -> Result<SourceSpec, SourceSpecError> {
        let mut parts = entry.splitn(3, ':');
        let collection = parts.next().unwrap_or_default();
        let Some(prefix) = parts.next() else {
            return Err(err(entry, "expected collection:channel_prefix:field/field"));
        };
        check_collection(entry, collection)?;
        if !channel::is_segment(prefix) {
            return Err(err(
                entry,
                format!(
                    "channel prefix {prefix:?} must be 1 to {} characters of A-Z a-z 0-9 _ . -",
                    channel::MAX_SEGMENT_LEN
                ),
            ));
        }
        let fields: Vec<String> = match parts.next() {
            None => Vec::new(),
            Some(list) => list.split('/').map(str::to_owned).collect(),
        };
        for f in &fields {
            check_field(entry, f)?;
        }
        if fields.len() > MAX_FIELDS {
            return Err(err(
                entry,
                format!(
                    "{} routing fields, at most {MAX_FIELDS} (channels have at most {MAX_SEGMENTS} segments)",
                    fields.len()
                ),
            ));
        }
        Ok(SourceSpec {
            collection: collection.to_owned(),
            prefix: prefix.to_owned(),
            fields,
            published: false,
        })
    }

    /// The events collection of the publish API as a source: its documents name their channel.
    pub fn published(collection: &str) -> Result<SourceSpec, SourceSpecError> {
        check_collection(collection, collection)?;
        Ok(SourceSpec {
            collection: collection.to_owned(),
            prefix: UNROUTED.to_owned(),
            fields: Vec::new(),
            published: true,
        })
    }

    /// The document the publish API stores for one event.
    pub fn published_document(
        id: bson::oid::ObjectId,
        channel: &Channel,
        data: Bson,
        at: bson::DateTime,
    ) -> Document {
        let ancestors: Vec<Bson> = channel
            .ancestors_and_self()
            .map(|a| Bson::String(a.to_owned()))
            .collect();
        bson::doc! {
            "_id": id,
            CHANNEL_FIELD: channel.as_str(),
            CHANNELS_FIELD: ancestors,
            DATA_FIELD: data,
            PUBLISHED_AT_FIELD: at,
        }
    }

    /// What subscribers receive as `doc`: the whole document, or for the events collection
    /// its `data` (`null` when it has none).
    pub fn payload(&self, doc: &Document) -> serde_json::Value {
        if self.published {
            doc.get(DATA_FIELD)
                .map(crate::doc_json::bson_to_json)
                .unwrap_or(serde_json::Value::Null)
        } else {
            crate::doc_json::to_json(doc)
        }
    }

    /// The channel for `doc`: the prefix, then the value of each routing field in order,
    /// stopping at the first field that is missing, null, of an unsupported type, or whose
    /// value is not a valid channel segment.
    ///
    /// A `SourceSpec` built by hand rather than by [`SourceSpec::parse`] must have a valid
    /// prefix and at most [`MAX_FIELDS`] fields.
    ///
    /// Supported values: strings as they are, ObjectIds as lowercase hex, Int32 and Int64 in
    /// decimal. Anything else (doubles, dates, arrays...) has no single obvious spelling, so it
    /// ends the channel rather than guessing.
    pub fn channel_for(&self, doc: &Document) -> Channel {
        if self.published {
            return doc
                .get_str(CHANNEL_FIELD)
                .ok()
                .and_then(|c| Channel::parse(c).ok())
                .unwrap_or_else(|| Channel::new_unchecked(self.prefix.clone()));
        }
        let mut name = self.prefix.clone();
        for path in &self.fields {
            let Some(seg) = lookup(doc, path).and_then(segment_value) else {
                break;
            };
            if !channel::is_segment(&seg) {
                break;
            }
            name.push(channel::SEPARATOR);
            name.push_str(&seg);
        }
        // The prefix was checked by `parse`, each appended value by `is_segment`, and there
        // are at most three fields, so the name is valid by construction.
        Channel::new_unchecked(name)
    }
}

impl SourceSpec {
    /// The MongoDB filter matching exactly the documents [`SourceSpec::channel_for`] routes
    /// to `channel` or below it, with every field path prefixed by `path_prefix` (e.g.
    /// `"fullDocument."` inside a change stream). `None` when no document of this source can
    /// land there (another prefix, or deeper than the routing fields go).
    ///
    /// A segment may have come from a string, an ObjectId (lowercase hex) or an integer, so
    /// each segment matches any of the values that spell it.
    pub fn filter_for(&self, channel: &Channel, path_prefix: &str) -> Option<Document> {
        if self.published {
            let mut filter = Document::new();
            filter.insert(format!("{path_prefix}{CHANNELS_FIELD}"), channel.as_str());
            return Some(filter);
        }
        let mut segments = channel.segments();
        if segments.next()? != self.prefix {
            return None;
        }
        let mut filter = Document::new();
        for (i, seg) in segments.enumerate() {
            let field = self.fields.get(i)?;
            let mut spellings = vec![Bson::String(seg.to_owned())];
            if seg.len() == 24 && seg.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                if let Ok(oid) = bson::oid::ObjectId::parse_str(seg) {
                    spellings.push(Bson::ObjectId(oid));
                }
            }
            if let Ok(n) = seg.parse::<i64>() {
                if n.to_string() == seg {
                    spellings.push(Bson::Int64(n));
                }
            }
            let value = if spellings.len() == 1 {
                spellings.remove(0)
            } else {
                Bson::Document(bson::doc! {"$in": spellings})
            };
            filter.insert(format!("{path_prefix}{field}"), value);
        }
        Some(filter)
    }
}

impl SourceSpec {
    /// [`SourceSpec::filter_for`] over several channels, as the alternatives of an `$or`;
    /// `None` when this source can route nothing to any of them.
    pub fn filter_for_any(&self, channels: &[Channel], path_prefix: &str) -> Option<Vec<Bson>> {
        let any_of: Vec<Bson> = channels
            .iter()
            .filter_map(|c| self.filter_for(c, path_prefix))
            .map(Bson::Document)
            .collect();
        (!any_of.is_empty()).then_some(any_of)
    }
}

impl fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.collection, self.prefix)?;
        if !self.fields.is_empty() {
            write!(f, ":{}", self.fields.join("/"))?;
        }
        Ok(())
    }
}

/// Follows a dotted path through embedded documents. Arrays are not traversed: a field that
/// matches several values cannot name one channel.
fn lookup<'a>(doc: &'a Document, path: &str) -> Option<&'a Bson> {
    let mut parts = path.split('.');
    let mut value = doc.get(parts.next()?)?;
    for part in parts {
        value = value.as_document()?.get(part)?;
    }
    Some(value)
}

fn segment_value(value: &Bson) -> Option<String> {
    match value {
        Bson::String(s) => Some(s.clone()),
        Bson::ObjectId(oid) => Some(oid.to_hex()),
        Bson::Int32(i) => Some(i.to_string()),
        Bson::Int64(i) => Some(i.to_string()),
        _ => None,
    }
}

/// All configured sources, in configuration order, with lookup by collection name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSpecs(Vec<SourceSpec>);

/// The default `SSE_SOURCES`.
pub const DEFAULT_SOURCES: &str = "logs:logs:workspace_id/workflow_id";

impl SourceSpecs {
    /// Parses a comma-separated list of entries (whitespace around entries is ignored).
    /// At least one source is required and a collection may appear only once. Two collections
    /// may share a prefix; their documents then share channels.
    pub fn parse(s: &str) -> Result<SourceSpecs, SourceSpecError> {
        let mut specs: Vec<SourceSpec> = Vec::new();
        if s.trim().is_empty() {
            return Err(SourceSpecError("no sources configured".to_owned()));
        }
        for entry in s.split(',').map(str::trim) {
            if entry.is_empty() {
                return Err(SourceSpecError(
                    "empty entry in the comma-separated list".to_owned(),
                ));
            }
            let spec = SourceSpec::parse(entry)?;
            if specs.iter().any(|o| o.collection == spec.collection) {
                return Err(err(
                    entry,
                    format!("collection {:?} is listed twice", spec.collection),
                ));
            }
            specs.push(spec);
        }
        Ok(SourceSpecs(specs))
    }

    /// Adds the publish API's events collection, which must not also be in `SSE_SOURCES`.
    pub fn with_published(mut self, collection: &str) -> Result<SourceSpecs, SourceSpecError> {
        let spec = SourceSpec::published(collection)?;
        if self.get(collection).is_some() {
            return Err(SourceSpecError(format!(
                "collection {collection:?} is the events collection of the publish API and cannot also be a source of SSE_SOURCES"
            )));
        }
        self.0.push(spec);
        Ok(self)
    }

    /// The publish API's events collection, when configured.
    pub fn published(&self) -> Option<&SourceSpec> {
        self.0.iter().find(|s| s.published)
    }

    /// The source for a collection, if it is watched.
    pub fn get(&self, collection: &str) -> Option<&SourceSpec> {
        self.0.iter().find(|s| s.collection == collection)
    }

    /// Sources in configuration order.
    pub fn iter(&self) -> std::slice::Iter<'_, SourceSpec> {
        self.0.iter()
    }

    /// Watched collection names, e.g. for a `$match` on `ns.coll`.
    pub fn collections(&self) -> impl Iterator<Item = &str> + '_ {
        self.0.iter().map(|s| s.collection.as_str())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Default for SourceSpecs {
    fn default() -> Self {
        SourceSpecs(vec![SourceSpec {
            collection: "logs".to_owned(),
            prefix: "logs".to_owned(),
            fields: vec!["workspace_id".to_owned(), "workflow_id".to_owned()],
            published: false,
        }])
    }
}

impl std::str::FromStr for SourceSpecs {
    type Err = SourceSpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SourceSpecs::parse(s)
    }
}

impl fmt::Display for SourceSpecs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // As `SSE_SOURCES` spells them: the events collection is configured on its own.
        for (i, s) in self.0.iter().filter(|s| !s.published).enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{s}")?;
        }
        Ok(())
    }
}

impl<'a> IntoIterator for &'a SourceSpecs {
    type Item = &'a SourceSpec;
    type IntoIter = std::slice::Iter<'a, SourceSpec>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{doc, oid::ObjectId};

    #[test]
    fn filter_for_inverts_channel_for() {
        let spec = logs();
        let ch = |s: &str| Channel::parse(s).unwrap();
        assert_eq!(spec.filter_for(&ch("logs"), ""), Some(Document::new()));
        assert_eq!(
            spec.filter_for(&ch("logs:w1:f1"), "fullDocument."),
            Some(bson::doc! {"fullDocument.workspace_id": "w1", "fullDocument.workflow_id": "f1"})
        );
        assert_eq!(
            spec.filter_for(&ch("logs:7"), ""),
            Some(bson::doc! {"workspace_id": {"$in": ["7", 7_i64]}})
        );
        assert_eq!(spec.filter_for(&ch("other:w1"), ""), None);
        assert_eq!(spec.filter_for(&ch("logs:w1:f1:x"), ""), None);
        let oid = bson::oid::ObjectId::new();
        let doc = bson::doc! {"workspace_id": oid, "workflow_id": 3_i32};
        let routed = spec.channel_for(&doc);
        let filter = spec.filter_for(&routed, "").unwrap();
        assert_eq!(
            filter,
            bson::doc! {"workspace_id": {"$in": [oid.to_hex(), oid]}, "workflow_id": {"$in": ["3", 3_i64]}}
        );
    }

    fn logs() -> SourceSpec {
        SourceSpec::parse("logs:logs:workspace_id/workflow_id").unwrap()
    }

    #[test]
    fn default_matches_constant() {
        assert_eq!(
            SourceSpecs::parse(DEFAULT_SOURCES).unwrap(),
            SourceSpecs::default()
        );
        assert_eq!(SourceSpecs::default().to_string(), DEFAULT_SOURCES);
    }

    #[test]
    fn parses_lists() {
        let s =
            SourceSpecs::parse(" logs:logs:workspace_id/workflow_id , jobs:j:meta.ws ,events:ev")
                .unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s.get("jobs").unwrap().fields, ["meta.ws"]);
        assert_eq!(s.get("events").unwrap().prefix, "ev");
        assert!(s.get("events").unwrap().fields.is_empty());
        assert!(s.get("nope").is_none());
        assert_eq!(
            s.collections().collect::<Vec<_>>(),
            ["logs", "jobs", "events"]
        );
        assert_eq!(
            s.to_string(),
            "logs:logs:workspace_id/workflow_id,jobs:j:meta.ws,events:ev"
        );
    }

    #[test]
    fn rejects_bad_lists() {
        let cases = [
            ("", "no sources"),
            ("logs", "expected collection:channel_prefix"),
            (":logs:a", "collection name is empty"),
            ("lo$gs:logs:a", "'$'"),
            ("system.views:s:a", "system collections"),
            ("logs::a", "channel prefix"),
            ("logs:l g:a", "channel prefix"),
            ("logs:logs:a//b", "empty field name"),
            ("logs:logs:", "empty field name"),
            ("logs:logs:a..b", "empty part"),
            ("logs:logs:$a", "'$'"),
            ("logs:logs:a/b/c/d", "at most 3"),
            ("logs:logs:a,logs:other:b", "listed twice"),
            ("logs:logs:a,,jobs:j", "empty entry"),
        ];
        for (input, want) in cases {
            let e = SourceSpecs::parse(input).unwrap_err().to_string();
            assert!(e.contains(want), "{input:?}: {e}");
        }
    }

    #[test]
    fn colon_in_field_list_is_part_of_the_field_name() {
        // MongoDB allows ':' in field names; only the first two colons separate.
        let s = SourceSpecs::parse("logs:lo:gs:a").unwrap();
        assert_eq!(s.get("logs").unwrap().fields, ["gs:a"]);
    }

    #[test]
    fn routes_full_and_partial() {
        let s = logs();
        let c = |d: Document| s.channel_for(&d).to_string();
        assert_eq!(
            c(doc! {"workspace_id": "w1", "workflow_id": "f1"}),
            "logs:w1:f1"
        );
        assert_eq!(c(doc! {"workspace_id": "w1"}), "logs:w1");
        assert_eq!(
            c(doc! {"workspace_id": "w1", "workflow_id": null}),
            "logs:w1"
        );
        // Stops at the first missing field even if a later one is present.
        assert_eq!(c(doc! {"workflow_id": "f1"}), "logs");
        assert_eq!(c(doc! {}), "logs");
    }

    #[test]
    fn routes_value_types() {
        let s = logs();
        let oid = ObjectId::parse_str("65a1b2c3d4e5f60718293a4b").unwrap();
        let c = |d: Document| s.channel_for(&d).to_string();
        assert_eq!(
            c(doc! {"workspace_id": oid, "workflow_id": 7_i32}),
            "logs:65a1b2c3d4e5f60718293a4b:7"
        );
        assert_eq!(
            c(doc! {"workspace_id": -3_i64, "workflow_id": 1.5}),
            "logs:-3"
        );
        assert_eq!(c(doc! {"workspace_id": true}), "logs");
        assert_eq!(c(doc! {"workspace_id": ["w1"]}), "logs");
        assert_eq!(c(doc! {"workspace_id": {"a": 1}}), "logs");
        // Values that are not valid segments stop the channel.
        assert_eq!(
            c(doc! {"workspace_id": "w1", "workflow_id": "a:b"}),
            "logs:w1"
        );
        assert_eq!(c(doc! {"workspace_id": ""}), "logs");
        assert_eq!(c(doc! {"workspace_id": "w 1"}), "logs");
        assert_eq!(c(doc! {"workspace_id": "x".repeat(129)}), "logs");
    }

    #[test]
    fn routes_dotted_paths() {
        let s = SourceSpec::parse("jobs:jobs:meta.ws/meta.run.id").unwrap();
        let d = doc! {"meta": {"ws": "w1", "run": {"id": 42}}};
        assert_eq!(s.channel_for(&d).as_str(), "jobs:w1:42");
        let d = doc! {"meta": {"ws": "w1", "run": [{"id": 42}]}};
        assert_eq!(s.channel_for(&d).as_str(), "jobs:w1");
        let d = doc! {"meta": "w1"};
        assert_eq!(s.channel_for(&d).as_str(), "jobs");
    }

    #[test]
    fn published_documents_name_their_channel() {
        let specs = SourceSpecs::default().with_published("sse_events").unwrap();
        let spec = specs.published().unwrap();
        let ch = Channel::parse("jobs:w1:f1").unwrap();
        let d = SourceSpec::published_document(
            ObjectId::new(),
            &ch,
            Bson::Array(vec![1_i64.into()]),
            bson::DateTime::now(),
        );
        assert_eq!(spec.channel_for(&d), ch);
        assert_eq!(spec.payload(&d), serde_json::json!([1]));
        assert_eq!(d.get_array(CHANNELS_FIELD).unwrap().len(), 3);
        assert_eq!(
            spec.filter_for(&Channel::parse("jobs:w1").unwrap(), "fullDocument."),
            Some(doc! {"fullDocument.channels": "jobs:w1"})
        );
        // Written by other means, without a usable channel: the fallback, never a panic.
        assert_eq!(
            spec.channel_for(&doc! {"channel": "a b"}).as_str(),
            UNROUTED
        );
        assert_eq!(spec.payload(&doc! {}), serde_json::Value::Null);
        // SSE_SOURCES spelling leaves it out; a clash with a source is refused.
        assert_eq!(specs.to_string(), DEFAULT_SOURCES);
        assert!(SourceSpecs::default().with_published("logs").is_err());
        assert!(SourceSpecs::default().with_published("a$b").is_err());
    }

    #[test]
    fn three_fields_make_four_segments() {
        let s = SourceSpec::parse("t:t:a/b/c").unwrap();
        let d = doc! {"a": "1", "b": "2", "c": "3"};
        assert_eq!(s.channel_for(&d).as_str(), "t:1:2:3");
    }
}
