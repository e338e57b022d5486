//! The operations features against MongoDB (mongo-sim in-process, or `MONGODB_URI`): the
//! publish API and `mongo-sse migrate`. One test binary, so the dependency graph is linked once.

#[path = "../common/mod.rs"]
mod common;

mod migrate;
mod publish;
