//! Integration tests of the gateway against MongoDB (mongo-sim in-process, or `MONGODB_URI`),
//! one module per concern. They share one test binary so the heavy dependency graph is linked
//! once.

#[path = "../common/mod.rs"]
mod common;

mod backlog;
mod bad_input;
mod binary;
mod budgets;
mod descriptors;
mod dropped_connections;
mod exactly_once;
mod half_close;
mod hardening;
mod heartbeat;
mod history_lost;
mod instances;
mod process;
mod readme;
mod restart;
mod routing;
mod slow_consumer;
