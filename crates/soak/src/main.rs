//! `soak`: a chaos soak of mongo-sse that checks DESIGN.md's invariants 1 and 2 from outside.
//!
//! It starts the `mongo-sim` binary (or uses `--mongodb-uri`), N `mongo-sse serve` processes on
//! loopback ports, W writers inserting numbered documents through the official driver plus one
//! publishing through `POST /v1/publish`, and R readers that behave like a browser's
//! `EventSource` and move to another gateway on every reconnect. A nemesis applies one fault
//! every few seconds (see `nemesis.rs`). After the run, what each reader received on each
//! channel is compared with what MongoDB holds (`check.rs`), and each gateway's memory, open
//! descriptors and CPU over the run are summarised (`sample.rs`).
//!
//! Every loop is bounded in count and time; every address is 127.0.0.1. Exit codes: 0 clean,
//! 1 an invariant was violated, 2 the run could not be set up.

mod check;
mod nemesis;
mod procs;
mod raw;
mod reader;
mod rng;
mod sample;
mod sse;
mod writer;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use tokio::sync::{watch, Notify};

use crate::check::{check_channel, late_gaps, ChannelResult, Known};
use crate::nemesis::{Fault, Nemesis};
use crate::procs::{Gateway, Sim};
use crate::reader::{covers, lock, Reader};
use crate::rng::Rng;
use crate::sample::Sample;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "soak",
    about = "Chaos soak of mongo-sse: faults injected, delivery invariants checked (loopback only)"
)]
struct Args {
    /// Seconds of writing under faults (the settle after it is extra).
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// At most this many events written in all (the run ends when they are written).
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// EventSource-like readers.
    #[arg(long, default_value_t = 20)]
    readers: usize,
    /// Seed of every random choice (printed; a run is repeated from it and its fault log).
    #[arg(long)]
    seed: Option<u64>,
    /// `mongo-sse serve` processes (2 or 3 is the point; 1 to 8 accepted).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=8))]
    gateways: u64,
    /// Writer tasks inserting through the driver.
    #[arg(long, default_value_t = 4)]
    writers: usize,
    /// Channels the driver writers insert into (`logs:soak:c<k>`).
    #[arg(long, default_value_t = 24)]
    channels: usize,
    /// Driver inserts per second, all writers together.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Publishes per second through `POST /v1/publish` (0: none), over 4 channels `pub:soak:p<k>`.
    #[arg(long, default_value_t = 5.0)]
    publish_rate: f64,
    /// Mean milliseconds between faults.
    #[arg(long, default_value_t = 4000)]
    fault_every_ms: u64,
    /// Faults to choose from (default: all).
    #[arg(long, value_delimiter = ',')]
    faults: Option<Vec<Fault>>,
    /// At most this many seconds a slow reader stops reading (it reads again as soon as a
    /// gateway closes it as a slow consumer).
    #[arg(long, default_value_t = 30)]
    slow_pause_secs: u64,
    /// `replSetResizeOplog` size (MB) of the oplog-shrink fault (990 is MongoDB's minimum),
    /// and the size restored after.
    #[arg(long, default_value_t = 990.0)]
    oplog_shrink_mb: f64,
    #[arg(long, default_value_t = 51200.0)]
    oplog_restore_mb: f64,
    /// On mongo-sim, the oplog entries kept while shrunk (its `simMaxEvents` extension: a
    /// soak's oplog is far below any size MongoDB accepts, so only a count makes it bite).
    /// Restored to the sim's default (1 000 000) after.
    #[arg(long, default_value_t = 50)]
    oplog_shrink_events: u64,
    /// The gateways' `SSE_HISTORY_EVENTS` (small, so that resumes also go through catch-ups).
    #[arg(long, default_value_t = 2000)]
    history_events: u64,
    /// Seconds after the writers stop for readers to receive everything.
    #[arg(long, default_value_t = 60)]
    settle_secs: u64,
    /// Keep every event's id and name, in the loss examples, the ids received either side of
    /// the loss (memory: about 100 bytes per delivery).
    #[arg(long)]
    trace_ids: bool,
    /// A stream that sends nothing for this long (heartbeats every 5 s) is a hang.
    #[arg(long, default_value_t = 30)]
    stall_secs: u64,
    /// Appended to the gateways' `MONGODB_URI` (e.g. `&maxPoolSize=4`). Not needed any more for
    /// the driver defect of `tests/gateway/dropped_connections.rs`: the gateway now turns
    /// retryable reads off itself.
    #[arg(long, default_value = "")]
    gateway_uri_options: String,
    /// The gateways' `RUST_LOG`.
    #[arg(long, default_value = "info,actix_server=warn")]
    gateway_log: String,
    /// Use this MongoDB (127.0.0.1 only; fail points need enableTestCommands) instead of
    /// starting mongo-sim. Its database `soak` is dropped first.
    #[arg(long)]
    mongodb_uri: Option<String>,
    /// Where `mongo-sse` and `mongo-sim` are (default: beside this binary).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Directory for the logs, the fault log and `summary.json` (default: a new temp dir).
    #[arg(long)]
    out: Option<PathBuf>,
}

const DB: &str = "soak";
const PUB_CHANNELS: usize = 4;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("soak: cannot run: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn loopback_only(uri: &str) -> anyhow::Result<()> {
    let rest = uri
        .strip_prefix("mongodb://")
        .context("--mongodb-uri must start with mongodb://")?;
    let hosts = rest.split(['/', '?']).next().unwrap_or("");
    let hosts = hosts.rsplit('@').next().unwrap_or("");
    for h in hosts.split(',') {
        if !(h.starts_with("127.0.0.1:") || h == "127.0.0.1") {
            bail!("--mongodb-uri host {h} is not 127.0.0.1: the soak stays on loopback");
        }
    }
    Ok(())
}

fn find_bin(dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let p = dir.join(name);
    if !p.is_file() {
        bail!(
            "{} not found (build it, e.g. cargo build -p mongo-sse --bin mongo-sse -p mongo-sim --bin mongo-sim, or pass --bin-dir)",
            p.display()
        );
    }
    Ok(p)
}

async fn run(args: Args) -> anyhow::Result<bool> {
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64 % 1_000_000_000)
            .unwrap_or(1)
    });
    if args.readers == 0 || args.channels == 0 || args.writers == 0 || args.rate <= 0.0 {
        bail!("--readers, --channels, --writers and --rate must be above 0");
    }
    let out = match &args.out {
        Some(p) => p.clone(),
        None => std::env::temp_dir().join(format!("soak-{seed}-{}", std::process::id())),
    };
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no directory for this binary")?
            .to_path_buf(),
    };
    let gw_bin = find_bin(&bin_dir, "mongo-sse")?;
    println!(
        "soak: seed {seed}, {} s, at most {} events, {} readers, {} gateways, output in {}",
        args.duration,
        args.events,
        args.readers,
        args.gateways,
        out.display()
    );

    let started = Instant::now();
    let wall_start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (sim, uri) = match &args.mongodb_uri {
        Some(uri) => {
            loopback_only(uri)?;
            (None, uri.clone())
        }
        None => {
            let sim = Sim::start(&find_bin(&bin_dir, "mongo-sim")?, &out).await?;
            let uri = sim.uri.clone();
            (Some(sim), uri)
        }
    };
    let admin = writer::client(&uri, "soak-nemesis").await?;
    admin
        .database(DB)
        .drop()
        .await
        .context("cannot reach MongoDB")?;
    // Clear any fail point a previous run left behind on an external server.
    for name in ["failCommand", "failGetMoreAfterCursorCheckout"] {
        let _ = admin
            .database("admin")
            .run_command(bson::doc! {"configureFailPoint": name, "mode": "off"})
            .await;
    }

    let gateway_uri = format!("{uri}{}", args.gateway_uri_options);
    let env: Vec<(String, String)> = [
        ("MONGODB_URI", gateway_uri.as_str()),
        ("MONGODB_DB", DB),
        ("SSE_AUTH", "none"),
        ("SSE_CONNECT_RATE_PER_IP", "0"),
        ("SSE_RETRY_MS", "500"),
        ("SSE_HEARTBEAT_SECS", "5"),
        ("SSE_PROBE_INTERVAL_SECS", "2"),
        ("SSE_POLL_INTERVAL_MS", "500"),
        ("SSE_QUEUE_LEN", "256"),
        ("SSE_QUEUE_BYTES", "65536"),
        ("SSE_HISTORY_EVENTS", &args.history_events.to_string()),
        ("RUST_LOG", args.gateway_log.as_str()),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();

    // The indexes the backlog and polling queries use, as an operator would create them.
    let migrate = tokio::process::Command::new(&gw_bin)
        .arg("migrate")
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .status();
    match tokio::time::timeout(Duration::from_secs(60), migrate).await {
        Ok(Ok(s)) if s.success() => {}
        other => bail!("mongo-sse migrate failed: {other:?}"),
    }

    let http = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .build()?;
    let mut gateways = Vec::new();
    for i in 0..args.gateways as usize {
        let mut g = Gateway::new(i, &gw_bin, &out, env.clone())?;
        g.start()?;
        gateways.push(g);
    }
    for g in &mut gateways {
        g.wait_ready(&http, Duration::from_secs(60)).await?;
    }
    let ports: Vec<u16> = gateways.iter().map(|g| g.port).collect();
    let idle_baseline: Vec<Option<Sample>> = gateways
        .iter()
        .map(|g| {
            g.pid()
                .and_then(|p| sample::sample(p, started.elapsed().as_secs_f64()))
        })
        .collect();
    let gateways: Vec<Arc<tokio::sync::Mutex<Gateway>>> = gateways
        .into_iter()
        .map(|g| Arc::new(tokio::sync::Mutex::new(g)))
        .collect();

    // Readers, each on its own channels: two workflows and a published channel, or (one in
    // ten) a whole workspace.
    let progress = Arc::new(Notify::new());
    let (stop_readers, readers_stop) = watch::channel(false);
    let reader_http = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .build()?;
    let mut readers = Vec::new();
    let mut reader_tasks = Vec::new();
    for i in 0..args.readers {
        let channels = if i % 10 == 9 {
            vec![
                format!("logs:{}", writer::WORKSPACE),
                nemesis::BURST_CHANNEL.to_string(),
            ]
        } else {
            let mut c = vec![writer::log_channel(i % args.channels)];
            let second = writer::log_channel((i * 7 + 3) % args.channels);
            if !c.contains(&second) {
                c.push(second);
            }
            if args.publish_rate > 0.0 {
                c.push(writer::pub_channel(i % PUB_CHANNELS));
            }
            c
        };
        let r = Reader::new(i, channels, Arc::clone(&progress), started, i % 10 == 9);
        lock(&r.state).trace_ids = args.trace_ids;
        readers.push(Arc::clone(&r));
        reader_tasks.push(tokio::spawn(r.run(
            reader_http.clone(),
            ports.clone(),
            Rng::fork(seed, 1000 + i as u64),
            Duration::from_secs(args.stall_secs),
            readers_stop.clone(),
        )));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !readers.iter().all(|r| r.connected_once()) {
        if Instant::now() > deadline {
            bail!("not every reader connected within 60 s");
        }
        let _ = tokio::time::timeout(Duration::from_millis(200), progress.notified()).await;
    }
    println!(
        "soak: {} readers connected after {:.1} s",
        readers.len(),
        started.elapsed().as_secs_f64()
    );

    // Resource samples of every gateway, once a second.
    let samples: Arc<Mutex<Vec<(usize, Sample)>>> = Arc::default();
    let (stop_sampler, mut sampler_stop) = watch::channel(false);
    let sampler = {
        let (gws, samples) = (gateways.clone(), Arc::clone(&samples));
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(sample::INTERVAL) => {}
                    _ = sampler_stop.changed() => return,
                }
                for (i, g) in gws.iter().enumerate() {
                    let Ok(g) = g.try_lock() else { continue };
                    if let Some(s) = g
                        .pid()
                        .and_then(|p| sample::sample(p, started.elapsed().as_secs_f64()))
                    {
                        lock(&samples).push((i, s));
                    }
                }
            }
        })
    };

    // Writers.
    let stats = Arc::new(writer::WriteStats::default());
    let budget = Arc::new(AtomicU64::new(args.events));
    let (stop_writers, writers_stop) = watch::channel(false);
    let wclient = writer::client(&uri, "soak-writer").await?;
    let coll = wclient.database(DB).collection::<bson::Document>("logs");
    let mut writer_tasks = Vec::new();
    let per_writer = Duration::from_secs_f64(args.writers as f64 / args.rate);
    for w in 0..args.writers.min(args.channels) {
        let mine: Vec<usize> = (0..args.channels)
            .filter(|c| c % args.writers == w)
            .collect();
        writer_tasks.push(tokio::spawn(writer::mongo_writer(
            coll.clone(),
            mine,
            per_writer,
            Arc::clone(&budget),
            Arc::clone(&stats),
            writers_stop.clone(),
        )));
    }
    if args.publish_rate > 0.0 {
        writer_tasks.push(tokio::spawn(writer::publisher(
            http.clone(),
            ports.clone(),
            PUB_CHANNELS,
            Duration::from_secs_f64(1.0 / args.publish_rate),
            Arc::clone(&budget),
            Arc::clone(&stats),
            Rng::fork(seed, 2),
            writers_stop.clone(),
        )));
    }

    // The nemesis.
    let nemesis = Arc::new(Nemesis {
        gateways: gateways.clone(),
        admin: admin.clone(),
        http: http.clone(),
        readers: readers.clone(),
        started,
        enabled: args.faults.clone().unwrap_or_else(|| Fault::ALL.to_vec()),
        every: Duration::from_millis(args.fault_every_ms.max(100)),
        slow_pause: Duration::from_secs(args.slow_pause_secs),
        oplog_shrink_mb: args.oplog_shrink_mb,
        oplog_restore_mb: args.oplog_restore_mb,
        // Only the sim knows `simMaxEvents`; a real mongod refuses it (40415).
        oplog_shrink_events: sim.is_some().then_some(args.oplog_shrink_events),
        log: Mutex::default(),
        counters: Mutex::default(),
        errors: Mutex::default(),
        oplog_unavailable: Mutex::default(),
        burst_seq: Mutex::default(),
        writes: Arc::clone(&stats),
        history_events: args.history_events,
    });
    let (stop_nemesis, nemesis_stop) = watch::channel(false);
    let nemesis_task = tokio::spawn(Arc::clone(&nemesis).run(Rng::fork(seed, 1), nemesis_stop));

    // The run: until the duration has passed or the event budget is spent.
    let load_started = Instant::now();
    let run_end = tokio::time::Instant::now() + Duration::from_secs(args.duration);
    let mut all_writers = futures::future::join_all(writer_tasks);
    tokio::select! {
        _ = tokio::time::sleep_until(run_end) => {}
        _ = &mut all_writers => {}
    }
    let _ = stop_writers.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(60), all_writers).await;
    let load_secs = load_started.elapsed().as_secs_f64();
    let _ = stop_nemesis.send(true);
    if tokio::time::timeout(Duration::from_secs(120), nemesis_task)
        .await
        .is_err()
    {
        lock(&nemesis.errors).push("the nemesis did not finish its fault within 120 s".into());
    }
    nemesis.all_off().await;
    println!(
        "soak: writing stopped after {load_secs:.1} s: {} inserted, {} published",
        stats.inserted.load(Ordering::Relaxed),
        stats.published.load(Ordering::Relaxed)
    );
    // Every gateway up again (a fault may have ended badly).
    for g in &gateways {
        let mut g = g.lock().await;
        // /readyz says 503 until the change stream has been healthy for 10 s after failing.
        if g.wait_ready(&http, Duration::from_secs(30)).await.is_err() {
            let i = g.index;
            lock(&nemesis.errors).push(format!("gateway {i} was not ready after the run"));
            let _ = g.stop_with(libc::SIGKILL, Duration::from_secs(5)).await;
            g.start()?;
            g.wait_ready(&http, Duration::from_secs(60)).await?;
        }
    }

    // What MongoDB holds, then the settle: every live reader up to the last committed event.
    let (committed, written_at) = writer::committed(&admin, DB).await?;
    let total_committed: usize = committed.values().map(|v| v.len()).sum();
    let targets = |r: &Reader| -> Vec<(String, u64)> {
        committed
            .iter()
            .filter(|(ch, _)| r.channels.iter().any(|s| covers(s, ch)))
            .filter_map(|(ch, v)| v.last().map(|l| (ch.clone(), *l)))
            .collect()
    };
    let settle_started = Instant::now();
    let settle_deadline = settle_started + Duration::from_secs(args.settle_secs);
    let unsettled = loop {
        let waiting = progress.notified();
        let behind: Vec<usize> = readers
            .iter()
            .filter(|r| {
                let s = lock(&r.state);
                s.failed.is_none()
                    && targets(r)
                        .iter()
                        .any(|(ch, last)| s.max_seq.get(ch).is_none_or(|m| m < last))
            })
            .map(|r| r.id)
            .collect();
        if behind.is_empty() || Instant::now() >= settle_deadline {
            break behind;
        }
        let _ = tokio::time::timeout(Duration::from_millis(500), waiting).await;
    };
    let settle_secs = settle_started.elapsed().as_secs_f64();
    let loaded: Vec<Option<Sample>> = gateways
        .iter()
        .map(|g| g.try_lock().ok().and_then(|g| g.pid()))
        .map(|p| p.and_then(|p| sample::sample(p, started.elapsed().as_secs_f64())))
        .collect();
    let _ = stop_readers.send(true);
    for t in reader_tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    // Back to baseline: the readers are gone; give the gateways a few seconds to notice.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after: Vec<Option<Sample>> = gateways
        .iter()
        .map(|g| g.try_lock().ok().and_then(|g| g.pid()))
        .map(|p| p.and_then(|p| sample::sample(p, started.elapsed().as_secs_f64())))
        .collect();
    let _ = stop_sampler.send(true);
    let _ = sampler.await;

    // The checker.
    let mut totals = ChannelResult::default();
    let mut per_reader = Vec::new();
    let mut explain = Vec::new();
    let mut failed = Vec::new();
    let mut late = 0;
    let mut stalls = 0;
    let mut reconnects = 0;
    let mut busy = 0;
    let mut gaps: BTreeMap<String, u64> = BTreeMap::new();
    let mut bad_events = 0;
    // Per channel, what the checker needs to know besides the committed sequence numbers.
    let mut known: HashMap<String, Known> = HashMap::new();
    for (c, q) in lock(&stats.uncertain).iter() {
        known.entry(c.clone()).or_default().uncertain.insert(*q);
    }
    for ((c, q), id) in lock(&stats.pub_ids).iter() {
        known
            .entry(c.clone())
            .or_default()
            .ids
            .insert(*q, id.clone());
    }
    for ((c, q), secs) in &written_at {
        known
            .entry(c.clone())
            .or_default()
            .written_secs
            .insert(*q, *secs);
    }
    let no_knowledge = Known::default();
    for r in &readers {
        let s = lock(&r.state);
        let complete = s.failed.is_none();
        if let Some(f) = &s.failed {
            failed.push(format!("reader {}: {f}", r.id));
        }
        late += late_gaps(&s.entries);
        stalls += s.stalls;
        reconnects += s.connects.saturating_sub(1);
        busy += s.busy;
        bad_events += s.bad_events;
        for e in &s.entries {
            if let check::Entry::Gap { reason, .. } = e {
                *gaps.entry(reason.clone()).or_default() += 1;
            }
        }
        for (ch, _) in targets(r) {
            let known = known.get(&ch).unwrap_or(&no_knowledge);
            let res = check_channel(&s.entries, &ch, &committed[&ch], complete, known);
            for (seq, next) in res.lost_examples.iter().zip(&res.lost_next_entry) {
                // The connection the loss shows on, and the one before it.
                // Never followed by an event of the channel: the reader's last connections.
                let next = next.unwrap_or(s.entries.len());
                let k = s.conns.iter().rposition(|c| c.3 <= next);
                let around: Vec<String> = k
                    .into_iter()
                    .flat_map(|k| s.conns[k.saturating_sub(1)..=k].iter())
                    .map(|(t, port, id, _)| format!("{t:.1}s :{port} Last-Event-ID {id:?}"))
                    .collect();
                let when = written_at
                    .get(&(ch.clone(), *seq))
                    .map(|s| *s as i64 - wall_start as i64);
                // With `--trace-ids`: the ids of the channel's events either side of the loss.
                let before = s.entries[..next].iter().rposition(
                    |e| matches!(e, check::Entry::Event { channel, .. } if channel == &ch),
                );
                let ids = match (before.and_then(|b| s.id_at(b)), s.id_at(next)) {
                    (None, None) => String::new(),
                    (b, n) => format!("; ids either side {b:?} / {n:?}"),
                };
                explain.push(format!(
                    "reader {} {ch} lost {seq} (written {when:?} s into the run); next received on the connection(s) {around:?}{ids}",
                    r.id
                ));
            }
            for (seq, at) in &res.dup_examples {
                let first = s.entries.iter().position(
                    |e| matches!(e, check::Entry::Event { channel, seq: q, .. } if channel == &ch && q == seq),
                );
                let from = first.unwrap_or(*at);
                let between: Vec<String> = s.entries[from..*at]
                    .iter()
                    .enumerate()
                    .filter_map(|(i, e)| {
                        let i = from + i;
                        let t = s.time_of(i).unwrap_or(0.0);
                        match e {
                            check::Entry::Connected => Some(format!(
                                "{t:.1}s reconnect to :{}",
                                s.port_of(i).unwrap_or(0)
                            )),
                            check::Entry::Gap { reason, .. } => {
                                Some(format!("{t:.1}s gap {reason}"))
                            }
                            check::Entry::Mode(m) => Some(format!(
                                "{t:.1}s mode {m} at {}",
                                s.mode_ids.get(&i).map_or("?", String::as_str)
                            )),
                            check::Entry::Event { .. } => None,
                        }
                    })
                    .collect();
                explain.push(format!(
                    "reader {} {ch} got {seq} twice, {} entries apart (first ~{:.1}s on :{}, again ~{:.1}s on :{}), with between them {between:?}{}",
                    r.id,
                    at - from,
                    s.time_of(from).unwrap_or(0.0),
                    s.port_of(from).unwrap_or(0),
                    s.time_of(*at).unwrap_or(0.0),
                    s.port_of(*at).unwrap_or(0),
                    match (s.id_at(from), s.id_at(*at)) {
                        (None, None) => String::new(),
                        (a, b) => format!("; ids {a:?} / {b:?}"),
                    }
                ));
            }
            for o in &res.ooo_examples {
                let modes: Vec<String> = (o.after_at..o.at)
                    .filter_map(|i| match &s.entries[i] {
                        check::Entry::Connected => {
                            Some(format!("reconnect to :{}", s.port_of(i).unwrap_or(0)))
                        }
                        check::Entry::Gap { reason, .. } => Some(format!("gap {reason}")),
                        check::Entry::Mode(m) => Some(format!("mode {m}")),
                        check::Entry::Event { .. } => None,
                    })
                    .collect();
                explain.push(format!(
                    "reader {} {ch} got {} (polled {:?}) after {} (polled {:?}), {} entries apart, ~{:.1}s on :{} then ~{:.1}s on :{}, between them {modes:?}",
                    r.id,
                    o.seq,
                    o.polled,
                    o.after,
                    o.after_polled,
                    o.at - o.after_at,
                    s.time_of(o.after_at).unwrap_or(0.0),
                    s.port_of(o.after_at).unwrap_or(0),
                    s.time_of(o.at).unwrap_or(0.0),
                    s.port_of(o.at).unwrap_or(0),
                ));
            }
            if res.violations() > 0 {
                per_reader.push(format!(
                    "reader {} {ch}: received {}, lost {} (e.g. {:?}), duplicated {}, out of order {}{}",
                    r.id,
                    res.received,
                    res.lost,
                    res.lost_examples,
                    res.duplicated,
                    res.out_of_order,
                    if res.silent { ", nothing received" } else { "" }
                ));
            }
            totals.received += res.received;
            totals.lost += res.lost;
            totals.duplicated += res.duplicated;
            totals.out_of_order += res.out_of_order;
            totals.silent |= res.silent;
            for (k, v) in res.excused {
                *totals.excused.entry(k).or_default() += v;
            }
        }
    }
    // Panics in any gateway's log.
    let mut panics = Vec::new();
    for g in &gateways {
        let path = g.lock().await.log_path();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for l in text.lines().filter(|l| l.contains("panicked")) {
            panics.push(l.chars().take(300).collect::<String>());
        }
    }
    let nemesis_errors = lock(&nemesis.errors).clone();
    let counters = lock(&nemesis.counters).clone();
    let oplog_unavailable = lock(&nemesis.oplog_unavailable).clone();
    let silent_channels = per_reader
        .iter()
        .filter(|l| l.ends_with("nothing received"))
        .count();

    // Losses first: they are rarer than duplicates and would drown among them in a report
    // cut at 50 lines. Every line goes to `violations.log`.
    per_reader.sort_by_key(|p| u8::from(p.contains(", lost 0 (")));
    explain.sort_by_key(|e| u8::from(!e.contains(" lost ")));
    let violations = totals.lost
        + totals.duplicated
        + totals.out_of_order
        + silent_channels as u64
        + late
        + stalls
        + failed.len() as u64
        + panics.len() as u64
        + nemesis_errors.len() as u64;

    // Resources.
    let all_samples = lock(&samples).clone();
    let mut resources = Vec::new();
    for (i, g) in gateways.iter().enumerate() {
        let starts = g.lock().await.starts;
        let mine: Vec<&Sample> = all_samples
            .iter()
            .filter(|(gi, _)| *gi == i)
            .map(|(_, s)| s)
            .collect();
        let last_pid = mine.last().map(|s| s.pid);
        let life: Vec<&&Sample> = mine.iter().filter(|s| Some(s.pid) == last_pid).collect();
        let rss: Vec<(f64, f64)> = life.iter().map(|s| (s.t, s.rss_kib as f64)).collect();
        let fds: Vec<(f64, f64)> = life.iter().map(|s| (s.t, s.fds as f64)).collect();
        let cpu = match (life.first(), life.last()) {
            (Some(a), Some(b)) if b.t > a.t => (b.cpu_s - a.cpu_s) / (b.t - a.t) * 100.0,
            _ => 0.0,
        };
        resources.push(serde_json::json!({
            "gateway": i,
            "starts": starts,
            "idle_before_readers": idle_baseline[i].map(|s| serde_json::json!({"rss_kib": s.rss_kib, "fds": s.fds})),
            "samples_in_last_life": life.len(),
            "last_life_secs": match (life.first(), life.last()) { (Some(a), Some(b)) => b.t - a.t, _ => 0.0 },
            "rss_kib_first": life.first().map(|s| s.rss_kib),
            "rss_kib_max": life.iter().map(|s| s.rss_kib).max(),
            "rss_kib_slope_per_min": sample::slope_per_min(&rss),
            "fds_max": life.iter().map(|s| s.fds).max(),
            "fds_slope_per_min": sample::slope_per_min(&fds),
            "cpu_percent_mean": cpu,
            "at_end_of_settle": loaded[i].map(|s| serde_json::json!({"rss_kib": s.rss_kib, "fds": s.fds})),
            "after_readers_left": after[i].map(|s| serde_json::json!({"rss_kib": s.rss_kib, "fds": s.fds})),
        }));
    }

    let faults_log: Vec<serde_json::Value> = lock(&nemesis.log)
        .iter()
        .map(|f| serde_json::json!({"t": f.t, "fault": f.fault, "detail": f.detail}))
        .collect();
    let summary = serde_json::json!({
        "seed": seed,
        "args": format!("{args:?}"),
        "load_secs": load_secs,
        "settle_secs": settle_secs,
        "readers": readers.len(),
        "gateways": gateways.len(),
        "inserted": stats.inserted.load(Ordering::Relaxed),
        "insert_retries": stats.insert_retries.load(Ordering::Relaxed),
        "insert_given_up": stats.insert_given_up.load(Ordering::Relaxed),
        "published": stats.published.load(Ordering::Relaxed),
        "publish_failed": stats.publish_failed.load(Ordering::Relaxed),
        "committed": total_committed,
        "deliveries": totals.received,
        "reconnects": reconnects,
        "busy": busy,
        "gap_events": gaps,
        "excused_by_gaps": totals.excused,
        "lost": totals.lost,
        "duplicated": totals.duplicated,
        "out_of_order": totals.out_of_order,
        "silent_channels": silent_channels,
        "late_gaps": late,
        "stalls": stalls,
        "bad_events": bad_events,
        "failed_readers": failed,
        "unsettled_readers": unsettled,
        "panics": panics,
        "nemesis_errors": nemesis_errors,
        "faults": counters,
        "oplog_shrink_unavailable": oplog_unavailable,
        "violations": violations,
        "problems": per_reader.iter().take(50).collect::<Vec<_>>(),
        "explain": explain.iter().take(50).collect::<Vec<_>>(),
        "resources": resources,
        "fault_log": faults_log,
    });
    let text = serde_json::to_string_pretty(&summary)?;
    std::fs::write(out.join("summary.json"), &text)?;
    let log_text: String = lock(&nemesis.log)
        .iter()
        .map(|f| format!("{:8.1}s {} {}\n", f.t, f.fault, f.detail))
        .collect();
    std::fs::write(out.join("faults.log"), log_text)?;
    let all: String = per_reader
        .iter()
        .chain(&explain)
        .chain(&failed)
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(out.join("violations.log"), all)?;
    // Every reader's connections, to follow one through the gateways' logs.
    let mut conns_text = String::new();
    for r in &readers {
        let s = lock(&r.state);
        conns_text.push_str(&format!(
            "reader {} {:?}: {} entries, last ~{:.1}s\n",
            r.id,
            r.channels,
            s.entries.len(),
            s.time_of(s.entries.len()).unwrap_or(0.0)
        ));
        for (k, (t, port, id, at)) in s.conns.iter().enumerate() {
            let end = s.conns.get(k + 1).map_or(s.entries.len(), |c| c.3);
            // With `--trace-ids`: the ids the connection's first and last events came with.
            let (lo, hi) = (
                s.ids.partition_point(|(i, _)| *i < *at),
                s.ids.partition_point(|(i, _)| *i < end),
            );
            let traced: Vec<&str> = [lo, hi.wrapping_sub(1)]
                .into_iter()
                .filter(|k| (lo..hi).contains(k))
                .map(|k| s.ids[k].1.as_str())
                .collect();
            conns_text.push_str(&format!(
                "  {t:8.1}s :{port} entries {at}..{end} Last-Event-ID {id:?}{}\n",
                if traced.is_empty() {
                    String::new()
                } else {
                    format!(" events {traced:?}")
                }
            ));
        }
    }
    std::fs::write(out.join("readers.log"), conns_text)?;

    // The human summary.
    println!("\n==== soak summary (seed {seed}) ====");
    println!(
        "load {load_secs:.0} s, settle {settle_secs:.1} s; {} readers over {} gateways",
        readers.len(),
        gateways.len()
    );
    println!(
        "written: {} inserted ({} retries, {} given up), {} published ({} failed); {} committed in MongoDB",
        stats.inserted.load(Ordering::Relaxed),
        stats.insert_retries.load(Ordering::Relaxed),
        stats.insert_given_up.load(Ordering::Relaxed),
        stats.published.load(Ordering::Relaxed),
        stats.publish_failed.load(Ordering::Relaxed),
        total_committed
    );
    println!(
        "readers: {} deliveries, {reconnects} reconnects, {busy} busy, gaps {gaps:?}",
        totals.received
    );
    println!("faults: {counters:?}");
    if let Some(why) = &oplog_unavailable {
        println!("!!! oplog-shrink fault unavailable: {why}");
        println!("!!! (the run did not exercise history loss through replSetResizeOplog)");
    }
    println!(
        "checker: lost {}, duplicated {}, out of order {}, silent channels {silent_channels}, late gaps {late}, stalls {stalls}, failed readers {}, excused by gaps {:?}",
        totals.lost,
        totals.duplicated,
        totals.out_of_order,
        failed.len(),
        totals.excused
    );
    for r in &resources {
        println!("resources: {r}");
    }
    for p in per_reader.iter().take(20) {
        println!("  {p}");
    }
    for e in explain.iter().take(10) {
        println!("  {e}");
    }
    for f in failed.iter().take(20) {
        println!("  {f}");
    }
    for p in &panics {
        println!("  panic: {p}");
    }
    for e in &nemesis_errors {
        println!("  nemesis: {e}");
    }
    if !unsettled.is_empty() {
        println!("  readers still behind after the settle: {unsettled:?}");
    }
    println!(
        "fault log: {}; summary: {}",
        out.join("faults.log").display(),
        out.join("summary.json").display()
    );
    println!(
        "{}",
        if violations == 0 {
            "soak: PASS (no invariant violated)".to_string()
        } else {
            format!("soak: FAIL ({violations} violations); repeat with --seed {seed}")
        }
    );

    for g in &gateways {
        let _ = g
            .lock()
            .await
            .stop_with(libc::SIGTERM, Duration::from_secs(20))
            .await;
    }
    if let Some(sim) = sim {
        sim.stop().await;
    }
    Ok(violations == 0)
}
