//! One change, routed and serialized.
//!
//! An event is built once when the watcher reads a change and then shared (`Arc<Event>`) by
//! the router, every subscriber queue and the history ring. The SSE frame is rendered at
//! construction so that fan-out to N browsers never re-serializes the document.

use std::fmt;

use bson::Document;
use bytes::Bytes;
use serde::Serialize;
use std::sync::Arc;

use crate::channel::Channel;
use crate::doc_json;
use crate::position::Position;
use crate::routing::SourceSpec;
use crate::sse;

/// The kind of write that produced the document. Deletes carry no document and are not
/// streamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Insert,
    Update,
    Replace,
}

impl Op {
    /// Maps a change event's `operationType`; `None` for operations that are not streamed
    /// (`delete`, `drop`, `invalidate`, ...).
    pub fn from_operation_type(op: &str) -> Option<Op> {
        match op {
            "insert" => Some(Op::Insert),
            "update" => Some(Op::Update),
            "replace" => Some(Op::Replace),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Insert => "insert",
            Op::Update => "update",
            Op::Replace => "replace",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A routed change, with its wire bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Where this change sits in the history; also the SSE `id`.
    pub position: Position,
    /// The most specific channel the document routes to.
    pub channel: Channel,
    pub op: Op,
    /// `collection` NUL `_id`, when the event was built from a stored document: lets a
    /// backlog recognise an insert it already served from a query.
    pub key: Option<Arc<str>>,
    /// A control message for every connection (a mode switch), not a document: it resets the
    /// connection's last position to its own, of the new kind.
    pub control: bool,
    /// The change event's `wallTime` (MongoDB 6.0+), for the fan-out latency metric.
    pub wall_time: Option<std::time::SystemTime>,
    /// `id: <position>\ndata: {"channel":…,"op":…,"doc":{…}}\n\n`.
    pub frame: Bytes,
}

#[derive(Serialize)]
struct Payload<'a> {
    channel: &'a Channel,
    op: Op,
    doc: serde_json::Value,
}

impl Event {
    /// Serializes `doc` (see [`doc_json`]) into the JSON payload
    /// `{"channel":"…","op":"insert","doc":{…}}` and frames it with the position as id.
    pub fn new(position: Position, channel: Channel, op: Op, doc: &Document) -> Event {
        Event::with_payload(position, channel, op, doc_json::to_json(doc))
    }

    /// Like [`Event::new`] with the `doc` member already converted.
    pub fn with_payload(
        position: Position,
        channel: Channel,
        op: Op,
        doc: serde_json::Value,
    ) -> Event {
        let payload = Payload {
            channel: &channel,
            op,
            doc,
        };
        // Serializing a `Value` with string keys into a String cannot fail; should it ever,
        // an empty object still yields a well-formed frame rather than a panic.
        let json = serde_json::to_string(&payload).unwrap_or_else(|_| "{}".to_owned());
        let frame = sse::data_frame(position.encode(), &json);
        Event {
            position,
            channel,
            op,
            key: None,
            control: false,
            wall_time: None,
            frame,
        }
    }

    /// A named control event (`event: <name>`) carrying `position` as its id.
    pub fn control(position: Position, name: &str, json: &str) -> Event {
        let frame = sse::named_frame(name, Some(position.encode()), json);
        Event {
            position,
            channel: Channel::new_unchecked("_control".to_owned()),
            op: Op::Insert,
            key: None,
            control: true,
            wall_time: None,
            frame,
        }
    }

    /// A stored document of `spec`'s collection, routed and shaped as that source says (the
    /// events collection's documents carry their channel and payload). Every path that turns
    /// a document into an event (live, polling, catch-up, backlog) goes through here.
    pub fn for_source(position: Position, spec: &SourceSpec, op: Op, doc: &Document) -> Event {
        let mut ev = Event::with_payload(position, spec.channel_for(doc), op, spec.payload(doc));
        ev.key = doc.get("_id").map(|id| document_key(&spec.collection, id));
        ev
    }

    /// Like [`Event::new`], remembering which stored document (collection and `_id`) it is.
    pub fn for_document(
        position: Position,
        collection: &str,
        channel: Channel,
        op: Op,
        doc: &Document,
    ) -> Event {
        let mut ev = Event::new(position, channel, op, doc);
        ev.key = doc.get("_id").map(|id| document_key(collection, id));
        ev
    }
}

/// The identity of a stored document across collections.
pub fn document_key(collection: &str, id: &bson::Bson) -> Arc<str> {
    Arc::from(format!("{collection}\u{0}{id}"))
}

/// The collection a [`document_key`] names.
pub fn key_collection(key: &str) -> &str {
    key.split('\u{0}').next().unwrap_or_default()
}

/// The ObjectId a [`document_key`] was made from, when the `_id` is one.
pub fn key_object_id(key: &str) -> Option<bson::oid::ObjectId> {
    let (_, id) = key.split_once('\u{0}')?;
    let hex = id.strip_prefix("ObjectId(\"")?.strip_suffix("\")")?;
    bson::oid::ObjectId::parse_str(hex).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn frames_payload_once() {
        let pos = Position::decode("c.82AB").unwrap();
        let ch = Channel::parse("logs:w1:f1").unwrap();
        let ev = Event::new(
            pos.clone(),
            ch.clone(),
            Op::Insert,
            &doc! {"msg": "line\none", "n": 1_i32},
        );
        assert_eq!(ev.position, pos);
        assert_eq!(ev.channel, ch);
        assert_eq!(
            &ev.frame[..],
            br#"id: c.82AB
data: {"channel":"logs:w1:f1","op":"insert","doc":{"msg":"line\none","n":1}}

"#
        );
    }

    #[test]
    fn keys_give_back_their_object_id() {
        let id = bson::oid::ObjectId::new();
        let key = document_key("logs", &bson::Bson::ObjectId(id));
        assert_eq!(key_object_id(&key), Some(id));
        assert_eq!(
            key_object_id(&document_key("logs", &bson::Bson::Int32(7))),
            None
        );
        assert_eq!(
            key_object_id(&document_key("logs", &bson::Bson::String(id.to_hex()))),
            None
        );
    }

    #[test]
    fn ops() {
        assert_eq!(Op::from_operation_type("update"), Some(Op::Update));
        assert_eq!(Op::from_operation_type("replace"), Some(Op::Replace));
        assert_eq!(Op::from_operation_type("insert"), Some(Op::Insert));
        assert_eq!(Op::from_operation_type("delete"), None);
        assert_eq!(Op::Replace.to_string(), "replace");
    }
}
