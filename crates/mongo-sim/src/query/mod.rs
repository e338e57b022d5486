//! The query language: BSON comparison order, dotted paths, filters, sorts, projections,
//! update operators and the aggregation stages mongo-sim supports. Pure functions over
//! `bson::Document`, so they are tested here without any server.

pub mod compare;
pub mod diff;
pub mod expr;
pub mod filter;
pub mod group;
pub mod path;
pub mod pipeline;
pub mod projection;
pub mod sort;
pub mod update;
