//! mongo-sse: tail MongoDB with change streams and fan documents out over Server-Sent Events.
//!
//! Modules read in the order data flows: configuration; what a change becomes on its way to a
//! browser (source -> routing -> position -> event); where it goes (router, history, hub);
//! how a reconnect catches up (resume); and the HTTP surface.

pub mod backoff;
pub mod config;

pub mod source;

pub mod channel;
pub mod routing;

pub mod position;

pub mod doc_json;
pub mod event;
pub mod sse;

pub mod delivered;
pub mod history;
pub mod hub;
pub mod rates;
pub mod router;

pub mod resume;
pub mod tasks;

pub mod auth;
pub mod limits;

pub mod gateway;
pub mod http;

// Commands besides `serve`: a diagnosis of the deployment, and an all-in-one demo.
pub mod check;
pub mod demo;
pub mod indexes;
pub mod logs;
pub mod metrics;
pub mod migrate;
pub mod oplog;
