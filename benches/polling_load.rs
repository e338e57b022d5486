//! MongoDB load of the polling fallback: queries per second at 1, 100 and 1000 SSE
//! connections, beside the proof of concept's approach (every connection polls MongoDB itself).
//!
//! ```text
//! cargo bench --bench polling_load -- [--clients 1,100,1000] [--interval-ms 1000] [--seconds 20]
//! ```
//!
//! Everything runs in this process: a standalone mongo-sim (change streams unavailable, so the
//! gateway in `SSE_MODE=auto` polls), the gateway, a writer inserting `--rate` log documents
//! per second, and the clients. Query counts come from the sim's `serverStatus.opcounters.query`
//! (MongoDB's own counter of `find`s), so sharing a process skews no figure here.
//!
//! For each connection count N:
//! 1. mongo-sse: N SSE connections on `logs:w1` (connected once their `retry:` frame arrived);
//!    count finds over `--seconds`, and polls with the gateway's `source_stats.poll.polls`.
//! 2. One query per connection (the proof of concept, simulated): N tasks, each running its own
//!    `find({workspace_id, _id: {$gt: last}})` every interval against the same sim, starting
//!    at a spread of moments within the first interval as browsers do. The gateway keeps
//!    polling meanwhile; its own finds (`source_stats.poll.queries`) are subtracted.
//!
//! Both approaches deliver the same documents; the report shows how many each client got, so a
//! figure from clients that were not actually served cannot pass unnoticed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bson::oid::ObjectId;
use bson::{doc, Document};
use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use mongo_sim::{Sim, SimConfig};
use mongo_sse::config::Config;
use mongo_sse::gateway::Gateway;
use mongo_sse::source::Mode;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "polling_load",
    about = "MongoDB queries per second of the polling fallback"
)]
struct Args {
    /// Connection counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1, 100, 1000])]
    clients: Vec<usize>,
    /// `SSE_POLL_INTERVAL_MS`, and the proof of concept's per-connection interval.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
    /// Measurement length per approach and connection count.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Log documents inserted per second throughout.
    #[arg(long, default_value_t = 5.0)]
    rate: f64,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

const DB: &str = "polling_load";

struct Row {
    clients: usize,
    gateway_finds: i64,
    gateway_polls: u64,
    gateway_secs: f64,
    gateway_delivered: (u64, u64),
    poc_finds: i64,
    poc_secs: f64,
    poc_delivered: (u64, u64),
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if !args.bench {
        // Run as a test (`cargo test --benches`): a smoke run, not a measurement.
        args.clients = vec![1, 5];
        args.seconds = args.seconds.min(2);
        args.interval_ms = args.interval_ms.min(200);
        println!("not run by `cargo bench`: smoke run (use `cargo bench --bench polling_load` to measure)");
    }
    if args.clients.is_empty() || args.interval_ms < 50 || args.seconds == 0 || args.rate <= 0.0 {
        bail!("--clients must list counts, --interval-ms be at least 50, --seconds and --rate positive");
    }
    raise_nofile_limit(args.clients.iter().copied().max().unwrap_or(1));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let rows = runtime.block_on(run(&args))?;
    report(&args, &rows);
    Ok(())
}

async fn run(args: &Args) -> anyhow::Result<Vec<Row>> {
    let sim = Sim::start(SimConfig {
        standalone: true,
        ..SimConfig::default()
    })
    .await
    .context("start mongo-sim")?;
    let client = mongodb::Client::with_uri_str(sim.uri()).await?;
    let admin = client.database("admin");
    let logs = client.database(DB).collection::<Document>("logs");
    let max = args.clients.iter().copied().max().unwrap_or(1);
    let interval = args.interval_ms.to_string();
    let limit = (max * 2 + 100).to_string();
    let config = Config::from_iter(
        [
            ("SSE_AUTH", "none"),
            ("MONGODB_URI", sim.uri().as_str()),
            ("MONGODB_DB", DB),
            ("SSE_BIND", "127.0.0.1:0"),
            ("SSE_POLL_INTERVAL_MS", interval.as_str()),
            ("SSE_CONNECT_RATE_PER_IP", "0"),
            ("SSE_CONNECT_RATE_PER_SUBJECT", "0"),
            ("SSE_MAX_CONNECTIONS", limit.as_str()),
            ("SSE_MAX_CONNECTIONS_PER_SUBJECT", limit.as_str()),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    )?;
    let gw = Gateway::start(config).await?;
    let base = format!("http://{}", gw.addr);
    let http = reqwest::Client::builder().no_proxy().build()?;
    wait_ready(&http, &base).await?;
    match gw.hub.mode() {
        Some(Mode::Polling { .. }) => {}
        other => bail!("the gateway should be polling a standalone server, it is in {other:?}"),
    }
    println!(
        "gateway polling every {} ms against a standalone mongo-sim; writer at {}/s",
        args.interval_ms, args.rate
    );

    let writing = Arc::new(AtomicBool::new(true));
    let writer = tokio::spawn(write(logs.clone(), args.rate, Arc::clone(&writing)));
    let interval = Duration::from_millis(args.interval_ms);
    let measure = Duration::from_secs(args.seconds);
    let mut rows = Vec::new();
    for &n in &args.clients {
        // mongo-sse: N SSE connections, one query per interval between them.
        let counts: Vec<Arc<AtomicU64>> = (0..n).map(|_| Arc::new(AtomicU64::new(0))).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let t = Instant::now();
        let readers: Vec<_> = futures::stream::iter(counts.iter().cloned())
            .map(|count| connect(http.clone(), base.clone(), count, Arc::clone(&stop)))
            .buffer_unordered(args.connect_concurrency)
            .try_collect()
            .await?;
        println!("{n} SSE connections open in {:.1?}", t.elapsed());
        tokio::time::sleep(interval).await; // settle: the first poll with everyone connected
        let polls = &gw.source_stats.poll.polls;
        let (q0, p0, t0) = (
            finds(&admin).await?,
            polls.load(Ordering::Relaxed),
            Instant::now(),
        );
        counts.iter().for_each(|c| c.store(0, Ordering::Relaxed));
        tokio::time::sleep(measure).await;
        let (q1, p1, secs) = (
            finds(&admin).await?,
            polls.load(Ordering::Relaxed),
            t0.elapsed().as_secs_f64(),
        );
        let delivered = min_max(&counts);
        stop.store(true, Ordering::Relaxed);
        drop(readers);
        let gateway = (q1 - q0, p1 - p0, secs, delivered);

        // The proof of concept: every connection polls MongoDB itself.
        let counts: Vec<Arc<AtomicU64>> = (0..n).map(|_| Arc::new(AtomicU64::new(0))).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = counts
            .iter()
            .enumerate()
            .map(|(i, count)| {
                let offset = interval.mul_f64((i as f64 * 0.618_034) % 1.0);
                tokio::spawn(poll_per_connection(
                    logs.clone(),
                    interval,
                    offset,
                    Arc::clone(count),
                    Arc::clone(&stop),
                ))
            })
            .collect();
        tokio::time::sleep(interval).await; // every task has started polling
                                            // The gateway keeps polling meanwhile: its own finds are not the proof of concept's.
        let own = &gw.source_stats.poll.queries;
        let (q0, g0, t0) = (
            finds(&admin).await?,
            own.load(Ordering::Relaxed),
            Instant::now(),
        );
        counts.iter().for_each(|c| c.store(0, Ordering::Relaxed));
        tokio::time::sleep(measure).await;
        let (q1, g1, secs) = (
            finds(&admin).await?,
            own.load(Ordering::Relaxed),
            t0.elapsed().as_secs_f64(),
        );
        let poc_delivered = min_max(&counts);
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await??;
        }
        rows.push(Row {
            clients: n,
            gateway_finds: gateway.0,
            gateway_polls: gateway.1,
            gateway_secs: gateway.2,
            gateway_delivered: gateway.3,
            poc_finds: (q1 - q0) - (g1 - g0) as i64,
            poc_secs: secs,
            poc_delivered,
        });
        println!("{n} clients measured");
    }
    writing.store(false, Ordering::Relaxed);
    writer.await??;
    gw.shutdown().await;
    sim.shutdown().await;
    Ok(rows)
}

fn min_max(counts: &[Arc<AtomicU64>]) -> (u64, u64) {
    let v = counts.iter().map(|c| c.load(Ordering::Relaxed));
    (v.clone().min().unwrap_or(0), v.max().unwrap_or(0))
}

async fn finds(admin: &mongodb::Database) -> anyhow::Result<i64> {
    let status = admin.run_command(doc! {"serverStatus": 1}).await?;
    let ops = status.get_document("opcounters")?;
    Ok(match ops.get("query") {
        Some(bson::Bson::Int32(v)) => i64::from(*v),
        Some(bson::Bson::Int64(v)) => *v,
        other => bail!("serverStatus.opcounters.query: {other:?}"),
    })
}

async fn wait_ready(http: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
            if r.status() == 200 {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("the gateway was not ready within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Inserts log documents into workspace `w1` at `rate` per second until told to stop.
async fn write(
    logs: mongodb::Collection<Document>,
    rate: f64,
    writing: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let period = Duration::from_secs_f64(1.0 / rate);
    let mut tick = tokio::time::interval(period);
    let mut seq = 0_i64;
    while writing.load(Ordering::Relaxed) {
        tick.tick().await;
        logs.insert_one(doc! {"workspace_id": "w1", "workflow_id": format!("f{}", seq % 10), "seq": seq, "msg": "a log line"})
            .await?;
        seq += 1;
    }
    Ok(())
}

/// Opens an SSE connection on `logs:w1`; once its `retry:` frame is in, a task counts the
/// data messages it carries until `stop`.
async fn connect(
    http: reqwest::Client,
    base: String,
    count: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let resp = http
        .get(format!("{base}/v1/stream?channel=logs%3Aw1"))
        .header("accept", "text/event-stream")
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!("GET /v1/stream: {}", resp.status());
    }
    let mut body = resp.bytes_stream();
    let mut lines = Lines::default();
    while lines.retry == 0 {
        match body.next().await {
            Some(chunk) => lines.feed(&chunk?),
            None => bail!("the stream ended before its retry: frame"),
        }
    }
    Ok(tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            match tokio::time::timeout(Duration::from_millis(200), body.next()).await {
                Ok(Some(Ok(chunk))) => {
                    lines.data = 0;
                    lines.feed(&chunk);
                    count.fetch_add(lines.data, Ordering::Relaxed);
                }
                Ok(_) => return,
                Err(_) => {}
            }
        }
    }))
}

/// Counts `retry:` and data lines across chunk boundaries.
#[derive(Default)]
struct Lines {
    partial: Vec<u8>,
    retry: u64,
    data: u64,
}

impl Lines {
    fn feed(&mut self, chunk: &[u8]) {
        for &b in chunk {
            if b == b'\n' {
                if self.partial.starts_with(b"retry:") {
                    self.retry += 1;
                } else if self.partial.starts_with(b"data: {\"channel\"") {
                    self.data += 1;
                }
                self.partial.clear();
            } else if self.partial.len() < 32 {
                self.partial.push(b);
            }
        }
    }
}

/// One simulated browser of the proof of concept: its own query every interval.
async fn poll_per_connection(
    logs: mongodb::Collection<Document>,
    interval: Duration,
    offset: Duration,
    count: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let mut last = ObjectId::new();
    tokio::time::sleep(offset).await;
    let mut tick = tokio::time::interval(interval);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let docs: Vec<Document> = logs
            .find(doc! {"workspace_id": "w1", "_id": {"$gt": last}})
            .sort(doc! {"_id": 1})
            .await?
            .try_collect()
            .await?;
        if let Some(id) = docs.last().and_then(|d| d.get_object_id("_id").ok()) {
            last = id;
        }
        count.fetch_add(docs.len() as u64, Ordering::Relaxed);
    }
    Ok(())
}

fn report(args: &Args, rows: &[Row]) {
    println!();
    println!(
        "## MongoDB queries per second, polling every {} ms, over {} s per row, writer at {}/s",
        args.interval_ms, args.seconds, args.rate
    );
    println!();
    println!("| SSE connections | mongo-sse: finds/s | finds per poll | one query per connection: finds/s | ratio | documents per client (mongo-sse / per connection) |");
    println!("|---:|---:|---:|---:|---:|---|");
    for r in rows {
        let gw = r.gateway_finds as f64 / r.gateway_secs;
        let poc = r.poc_finds as f64 / r.poc_secs;
        let per_poll = r.gateway_finds as f64 / r.gateway_polls.max(1) as f64;
        println!(
            "| {} | {gw:.2} | {per_poll:.2} ({} finds / {} polls) | {poc:.1} | {:.0}x | {}–{} / {}–{} |",
            r.clients,
            r.gateway_finds,
            r.gateway_polls,
            poc / gw.max(f64::EPSILON),
            r.gateway_delivered.0,
            r.gateway_delivered.1,
            r.poc_delivered.0,
            r.poc_delivered.1,
        );
    }
}

fn raise_nofile_limit(clients: usize) {
    let want = (clients as u64) * 3 + 512;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid resource and a pointer to a live rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
