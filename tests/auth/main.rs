//! Integration tests of access control, limits and CORS (`SSE_AUTH=jwt`), against MongoDB
//! (mongo-sim in-process, or `MONGODB_URI`). One binary, one module per concern; the
//! log-capturing test is a binary of its own (`tests/auth_logs.rs`) because it installs a
//! global tracing subscriber.

#[path = "../common/mod.rs"]
mod common;

mod support;

mod cors;
mod expiry;
mod limits;
mod tenants;
mod tokens;
