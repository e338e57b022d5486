//! Criterion micro-benchmarks of the hot path, one event at a time:
//!
//! ```text
//! cargo bench --bench hot_path                 # all of them
//! cargo bench --bench hot_path -- route        # a subset, by name
//! ```
//!
//! - `route/<n>`: the router queues one event for `n` subscribers of its channel (and of its
//!   ancestors), each a real bounded queue that is drained between iterations, as a reader
//!   that keeps up drains it. This is the work done per event per subscriber.
//! - `frame`: a change event's document to its SSE frame (`Event::new`: JSON conversion,
//!   payload serialisation, framing).
//! - `doc_json`: a typical log document to JSON alone.
//! - `position/from_resume_token` (a change event's id: checked and encoded once, then kept
//!   as a string) and `position/decode` (a `Last-Event-ID` read back).
//!
//! Figures and the machine they come from are in docs/BENCHMARKS.md.

use std::sync::Arc;

use bson::{doc, oid::ObjectId, DateTime, Document};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use mongo_sse::channel::Channel;
use mongo_sse::event::{Event, Op};
use mongo_sse::history::Budget;
use mongo_sse::position::Position;
use mongo_sse::router::{queue, QueueReceiver, Router};

/// A resume token as MongoDB 7.0 writes one for an insert (`_data` of a real token's shape).
const TOKEN: &str =
    "8267A1B2C3000000012B042C0100296E5A1004C2D8E3A6B9A34F6E8D1B2C3D4E5F60718246645F69640064\
                     67A1B2C3D4E5F60718293A4B0004";

fn log_document() -> Document {
    doc! {
        "_id": ObjectId::new(),
        "workspace_id": "sales",
        "workflow_id": "nightly-etl",
        "job_id": "job-20261201-0042",
        "level": "info",
        "step": 3,
        "of": 7,
        "message": "loaded 12 480 rows from orders_2026_11 into the staging table",
        "host": "etl-worker-7",
        "ts": DateTime::now(),
        "attrs": {"rows": 12_480, "ms": 842, "table": "orders_2026_11"},
    }
}

fn position() -> Position {
    Position::decode(&format!("c.{TOKEN}")).expect("a valid position")
}

fn route(c: &mut Criterion) {
    let mut group = c.benchmark_group("route");
    for n in [1usize, 100, 10_000] {
        let mut router = Router::new();
        let levels = ["logs:sales:nightly-etl", "logs:sales", "logs"];
        let mut readers: Vec<QueueReceiver> = (0..n)
            .map(|i| {
                let (tx, rx) = queue(Budget::from(64));
                let ch = Channel::parse(levels[i % levels.len()]).expect("a channel");
                router.subscribe(i as u64, &[ch], tx);
                rx
            })
            .collect();
        let ev = Arc::new(Event::new(
            position(),
            Channel::parse("logs:sales:nightly-etl").expect("a channel"),
            Op::Insert,
            &log_document(),
        ));
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter_batched(
                || {
                    for r in readers.iter_mut() {
                        while r.try_recv().is_ok() {}
                    }
                },
                |()| router.publish(&ev),
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

fn frame(c: &mut Criterion) {
    let doc = log_document();
    let ch = Channel::parse("logs:sales:nightly-etl").expect("a channel");
    let pos = position();
    c.bench_function("frame", |b| {
        b.iter(|| Event::new(pos.clone(), ch.clone(), Op::Insert, &doc))
    });
    c.bench_function("doc_json", |b| {
        b.iter(|| mongo_sse::doc_json::to_json(&doc))
    });
}

fn positions(c: &mut Criterion) {
    let mut group = c.benchmark_group("position");
    let encoded = position().encode().to_owned();
    let token = doc! {"_data": TOKEN};
    group.bench_function("decode", |b| b.iter(|| Position::decode(&encoded)));
    group.bench_function("from_resume_token", |b| {
        b.iter(|| Position::from_resume_token(&token))
    });
    group.finish();
}

criterion_group!(benches, route, frame, positions);
criterion_main!(benches);
