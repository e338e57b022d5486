//! `loadgen`: opens many SSE connections over a set of channels, drives numbered events through
//! MongoDB (the driver, batched) or any HTTP publish endpoint (mongo-sse's `/v1/publish`,
//! Nchan's `/pub`), and reports what each reader received: connect times, insert-to-receipt
//! latency percentiles, lost and duplicated events per connection, deliveries per second, the
//! server's RSS and this process's own CPU — so that a saturated client is never mistaken for
//! a slow server.
//!
//! Every event carries its send time (`sent_us`, wall clock: writer and readers share this
//! process) and a per-channel sequence number (`seq`). Every loop is bounded in count and
//! time; connections go to loopback addresses only.

mod proc_stat;
mod reader;
mod report;
mod writer;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;

use crate::reader::{Readers, Target};
use crate::report::Report;
use crate::writer::{Writer, WriterKind};

#[derive(Parser, Debug, Clone)]
#[command(name = "loadgen", about = "SSE fan-out load tool (loopback only)")]
pub struct Args {
    /// Subscribe URL; `{c}` becomes the channel index (e.g.
    /// `http://127.0.0.1:8080/v1/stream?channel=logs:bench:c{c}` or
    /// `http://127.0.0.1:8081/sub?ch=c{c}`).
    #[arg(long)]
    pub sub_url: String,
    /// SSE connections to open.
    #[arg(long, default_value_t = 100)]
    pub connections: usize,
    /// Channels, connections spread round-robin over them.
    #[arg(long, default_value_t = 1)]
    pub channels: usize,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 50)]
    pub connect_concurrency: usize,
    /// Loopback source addresses (127.0.0.1, .2, …): each gives another ~28 000 ephemeral ports.
    #[arg(long, default_value_t = 1)]
    pub source_ips: u8,
    /// How events are written: `mongo` (insert into MONGODB_URI), `http` (POST the event to
    /// `--pub-url`), `publish` (mongo-sse's `POST /v1/publish`).
    #[arg(long, default_value = "mongo")]
    pub writer: WriterKind,
    #[arg(
        long,
        default_value = "mongodb://127.0.0.1:27017/?directConnection=true"
    )]
    pub mongodb_uri: String,
    #[arg(long, default_value = "mongo_sse")]
    pub db: String,
    #[arg(long, default_value = "logs")]
    pub collection: String,
    /// The workspace of inserted documents (channel `logs:{workspace}:c{c}`).
    #[arg(long, default_value = "bench")]
    pub workspace: String,
    /// For `http`: the publish URL, `{c}` the channel index (Nchan: `.../pub?ch=c{c}`). For
    /// `publish`: mongo-sse's `/v1/publish` URL.
    #[arg(long)]
    pub pub_url: Option<String>,
    /// For `publish`: the channel, `{c}` the index.
    #[arg(long, default_value = "logs:bench:c{c}")]
    pub publish_channel: String,
    /// Writer tasks sharing the channels.
    #[arg(long, default_value_t = 2)]
    pub writers: usize,
    /// Events per channel.
    #[arg(long, default_value_t = 20)]
    pub events: usize,
    /// One event to every channel each interval.
    #[arg(long, default_value_t = 200)]
    pub interval_ms: u64,
    /// Bytes of padding per event.
    #[arg(long, default_value_t = 0)]
    pub pad: usize,
    /// How long readers may take to receive everything after the last event is sent.
    #[arg(long, default_value_t = 10_000)]
    pub settle_ms: u64,
    /// Server processes whose RSS is summed (repeatable).
    #[arg(long)]
    pub server_pid: Vec<u32>,
    /// Write the report as one JSON object here.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    /// A label for the report (e.g. `mongo-sse` or `nchan`).
    #[arg(long, default_value = "run")]
    pub label: String,
    /// Overall time limit.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    check(&args)?;
    proc_stat::raise_open_file_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let limit = Duration::from_secs(args.timeout_secs);
    let report = rt.block_on(async {
        tokio::time::timeout(limit, run(args.clone()))
            .await
            .map_err(|_| anyhow::anyhow!("the run took longer than --timeout-secs {limit:?}"))?
    })?;
    report.print();
    if let Some(path) = &args.json {
        std::fs::write(path, report.to_json().to_string())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if report.lost > 0 || report.duplicated > 0 || report.failed_connections > 0 {
        std::process::exit(3);
    }
    Ok(())
}

fn check(args: &Args) -> anyhow::Result<()> {
    if args.channels == 0 || args.connections == 0 {
        bail!("--channels and --connections must be at least 1");
    }
    if !args.sub_url.contains("{c}") && args.channels > 1 {
        bail!("--sub-url needs `{{c}}` when --channels is more than 1");
    }
    let loopback = |u: &str| {
        u.starts_with("http://127.")
            || u.starts_with("http://localhost")
            || u.starts_with("http://[::1]")
    };
    if !loopback(&args.sub_url) || args.pub_url.as_deref().is_some_and(|u| !loopback(u)) {
        bail!("loadgen talks to loopback addresses only");
    }
    if matches!(args.writer, WriterKind::Http | WriterKind::Publish) && args.pub_url.is_none() {
        bail!("--writer http and publish need --pub-url");
    }
    Ok(())
}

async fn run(args: Args) -> anyhow::Result<Report> {
    let rss_baseline = proc_stat::rss_kib(&args.server_pid);
    let sources: Vec<IpAddr> = (1..=args.source_ips.max(1))
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)))
        .collect();
    let target = Target {
        sub_url: args.sub_url.clone(),
        channels: args.channels,
        events_per_channel: args.events,
    };
    let readers = Arc::new(Readers::new(target, &sources)?);
    let connect_started = Instant::now();
    readers
        .connect_all(args.connections, args.connect_concurrency)
        .await;
    let connect_wall = connect_started.elapsed();
    let rss_connected = proc_stat::rss_kib(&args.server_pid);

    let writer = Writer::new(&args).await?;
    let cpu_before = proc_stat::cpu_time();
    let sampler = proc_stat::Sampler::start(args.server_pid.clone());
    let sent = writer
        .run(
            args.channels,
            args.events,
            Duration::from_millis(args.interval_ms),
            args.writers,
        )
        .await?;
    readers
        .wait_complete(Duration::from_millis(args.settle_ms))
        .await;
    let cpu = proc_stat::cpu_time().saturating_sub(cpu_before);
    let rss_peak = sampler.stop().await;
    let received = readers.finish();
    Ok(Report::new(
        &args,
        connect_wall,
        sent,
        received,
        cpu,
        [rss_baseline, rss_connected, rss_peak],
    ))
}
