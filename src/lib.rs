//! mongo-sse: tail MongoDB with change streams and fan documents out over Server-Sent Events.
//!
//! Modules read in the order data flows: configuration, then what a change becomes on its way
//! to a browser (source routing -> position -> event) and where it goes (router, history).

pub mod config;

pub mod channel;
pub mod routing;

pub mod position;

pub mod doc_json;
pub mod event;
pub mod sse;

pub mod history;
pub mod router;
