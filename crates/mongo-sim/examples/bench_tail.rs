//! How fast mongo-sim carries writes into a change stream: the path mongo-sse depends on.
//!
//! ```text
//! cargo run --release -p mongo-sim --example bench_tail [-- --docs 100000 --batch 1000]
//! ```
//!
//! Starts an in-process sim, opens a collection change stream with the official driver, then
//! inserts `--docs` small log-like documents with `insert_many` in batches of `--batch` while a
//! second task tails them. Prints the insert time, the time until the last event arrived
//! (both measured from the first insert) and events per second. Every event is checked to
//! arrive once and in commit order.

use bson::{doc, Document};
use futures::StreamExt;
use mongo_sim::{Sim, SimConfig};
use mongodb::Client;
use std::time::Instant;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} wants a number, got {v}"))
        })
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let docs = arg("--docs", 100_000);
    let batch = arg("--batch", 1000).max(1);
    let sim = Sim::start(SimConfig::default()).await?;
    let client = Client::with_uri_str(sim.uri()).await?;
    let coll = client.database("bench").collection::<Document>("logs");
    coll.drop().await?;
    let mut stream = coll.watch().await?;

    let start = Instant::now();
    let tail = tokio::spawn(async move {
        let mut seen = 0usize;
        while seen < docs {
            let ev = match stream.next().await {
                Some(ev) => ev?,
                None => return Err("change stream ended early".into()),
            };
            let seq = ev
                .full_document
                .as_ref()
                .and_then(|d| d.get_i64("seq").ok())
                .ok_or("event without fullDocument.seq")?;
            if seq != seen as i64 {
                return Err(format!("event {seen} carried seq {seq}: out of order").into());
            }
            seen += 1;
        }
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Instant::now())
    });

    let mut next = 0usize;
    while next < docs {
        let n = batch.min(docs - next);
        let chunk: Vec<Document> = (next..next + n)
            .map(|i| {
                doc! {
                    "workspace_id": "w1",
                    "workflow_id": format!("f{}", i % 10),
                    "seq": i as i64,
                    "level": "info",
                    "msg": format!("step {i} done"),
                }
            })
            .collect();
        coll.insert_many(chunk).await?;
        next += n;
    }
    let inserted = start.elapsed();
    let last_event = tail.await??.duration_since(start);

    println!("mongo-sim bench_tail: {docs} documents, insert_many batches of {batch}, one collection change stream");
    println!(
        "  inserts done:       {:>8.3} s  ({:.0} docs/s)",
        inserted.as_secs_f64(),
        docs as f64 / inserted.as_secs_f64()
    );
    println!(
        "  last event arrived: {:>8.3} s after the first insert",
        last_event.as_secs_f64()
    );
    println!(
        "  tail throughput:    {:>8.0} events/s",
        docs as f64 / last_event.as_secs_f64()
    );
    client.shutdown().await;
    sim.shutdown().await;
    Ok(())
}
