//! Insert-to-receipt latency of mongo-sse with many SSE clients.
//!
//! ```text
//! cargo build --release -p mongo-sim     # optional: otherwise the bench runs the sim itself
//! cargo bench --bench latency -- [--clients 1000] [--events 2000] [--rate 200]
//! ```
//!
//! By default three processes take part, so that no figure is skewed by a shared runtime:
//! mongo-sim (`target/release/mongo-sim`, or this bench re-executed as a sim when that binary
//! has not been built), the gateway (`target/release/mongo-sse serve`, which `cargo bench`
//! builds), and this process, which holds the SSE clients and the writer. `--in-process` runs
//! sim and gateway inside this process instead (on their own runtime), and `MONGODB_URI`
//! replaces the sim with a real replica set.
//!
//! 1. Start the sim and the gateway, wait for `/readyz`.
//! 2. Open `--clients` SSE connections, each subscribed to one workflow channel
//!    `logs:w<k>:f<j>`; every `--workspace-every`-th also to a workspace channel `logs:w<k>`.
//!    A connection counts as connected once its first frame (`retry:`) has arrived, which the
//!    gateway sends only after the subscription is registered.
//! 3. Warm up, read `serverStatus.opcounters`, then insert `--events` documents at `--rate` per
//!    second from a writer on its own thread, round-robin over the workflows. Each document
//!    carries `sent_at`, microseconds since the epoch taken right before its insert.
//! 4. Every client parses every event and records receipt time − `sent_at`; the run ends when
//!    every client has its expected count, or after `--drain-timeout-secs`.
//! 5. Report latency percentiles over all deliveries, deliveries/expected, duplicates and
//!    ordering, the MongoDB operations during the run, and CPU time per process.
//!
//! Both timestamps come from one monotonic clock in this process (anchored to the epoch once),
//! so NTP adjustments cannot bend the figures. Everything is bounded: connection, writing and
//! draining have deadlines, and a watchdog ends the run (and its child processes) if a phase
//! hangs anyway.

use std::collections::VecDeque;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use bson::{doc, Document};
use clap::Parser;
use serde::Deserialize;
use tokio::io::AsyncBufReadExt;
use tokio::sync::{oneshot, watch, Semaphore};

#[derive(Parser, Debug, Clone)]
#[command(
    name = "latency",
    about = "Insert-to-receipt latency of mongo-sse with many SSE clients"
)]
struct Args {
    /// SSE connections to hold open.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Documents the writer inserts during the measurement.
    #[arg(long, default_value_t = 2000)]
    events: usize,
    /// Inserts per second (a fixed schedule, not a closed loop).
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Workflow channels the events and clients are spread over.
    #[arg(long, default_value_t = 50)]
    workflows: usize,
    /// Workspaces the workflows belong to (workflow j is in workspace j mod this).
    #[arg(long, default_value_t = 10)]
    workspaces: usize,
    /// Every Nth client also subscribes to a workspace channel (0: none does).
    #[arg(long, default_value_t = 5)]
    workspace_every: usize,
    /// Documents inserted before the measurement, on a channel no client listens to.
    #[arg(long, default_value_t = 50)]
    warmup: usize,
    /// Run mongo-sim and the gateway inside this process (on their own runtime) instead of as
    /// separate processes. Ignored for mongo-sim when MONGODB_URI is set.
    #[arg(long)]
    in_process: bool,
    /// The mongo-sim binary (default: mongo-sim beside the mongo-sse binary, if built).
    #[arg(long)]
    sim_bin: Option<PathBuf>,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// Deadline for all clients to be connected.
    #[arg(long, default_value_t = 120)]
    connect_timeout_secs: u64,
    /// After the last insert, how long to wait for every client to receive everything.
    #[arg(long, default_value_t = 30)]
    drain_timeout_secs: u64,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
    /// Internal: run as the mongo-sim child process.
    #[arg(long, hide = true)]
    serve_sim: bool,
}

/// The collection and routing the gateway is configured with (its default source).
const COLLECTION: &str = "logs";
const SOURCES: &str = "logs:logs:workspace_id/workflow_id";

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.serve_sim {
        return serve_sim();
    }
    if !args.bench {
        // Run as a test (`cargo test --benches`): a small smoke run, not a measurement.
        args.clients = args.clients.min(20);
        args.events = args.events.min(40);
        args.rate = args.rate.max(100.0);
        println!("not run by `cargo bench`: smoke run with {} clients, {} events (use `cargo bench --bench latency` to measure)", args.clients, args.events);
    }
    validate(&args)?;
    clock_now_us(); // anchor the clock before anything measures
    raise_nofile_limit(args.clients);
    let budget = Duration::from_secs(args.connect_timeout_secs + args.drain_timeout_secs + 90)
        + Duration::from_secs_f64(args.events as f64 / args.rate);
    start_watchdog(budget);

    // Sim and gateway (in-process mode) get their own runtime so that client work cannot delay
    // them directly; the clients get the default multi-threaded one.
    let server_rt = if args.in_process {
        Some(
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("server")
                .build()?,
        )
    } else {
        None
    };
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("clients")
        .build()?;
    let result = client_rt.block_on(run(args, server_rt.as_ref().map(|rt| rt.handle().clone())));
    client_rt.shutdown_timeout(Duration::from_secs(5));
    if let Some(rt) = server_rt {
        rt.shutdown_timeout(Duration::from_secs(5));
    }
    result
}

fn validate(a: &Args) -> anyhow::Result<()> {
    if a.clients == 0 || a.clients > 100_000 {
        bail!("--clients must be 1..=100000");
    }
    if a.events == 0 || a.events > 10_000_000 {
        bail!("--events must be 1..=10000000");
    }
    if !(a.rate > 0.0 && a.rate <= 100_000.0) {
        bail!("--rate must be in (0, 100000]");
    }
    if a.workflows == 0 || a.workspaces == 0 || a.workspaces > a.workflows {
        bail!("need 1 <= --workspaces <= --workflows");
    }
    if a.connect_concurrency == 0 {
        bail!("--connect-concurrency must be at least 1");
    }
    Ok(())
}

// ---- topology: which events go to which client ----

fn workflow_of_event(a: &Args, i: usize) -> usize {
    i % a.workflows
}

fn workspace_of_workflow(a: &Args, wf: usize) -> usize {
    wf % a.workspaces
}

/// A client's subscription: its workflow, and maybe a workspace.
#[derive(Clone, Copy)]
struct Subscription {
    workflow: usize,
    workspace: Option<usize>,
}

fn subscription_of(a: &Args, c: usize) -> Subscription {
    let workspace = (a.workspace_every > 0 && c % a.workspace_every == 0)
        .then(|| (c / a.workspace_every) % a.workspaces);
    Subscription {
        workflow: c % a.workflows,
        workspace,
    }
}

impl Subscription {
    fn wants(&self, a: &Args, event: usize) -> bool {
        let wf = workflow_of_event(a, event);
        wf == self.workflow || self.workspace == Some(workspace_of_workflow(a, wf))
    }

    fn query(&self, a: &Args) -> String {
        let wf = self.workflow;
        let mut q = format!("channel=logs:w{}:f{}", workspace_of_workflow(a, wf), wf);
        if let Some(ws) = self.workspace {
            q.push_str(&format!("&channel=logs:w{ws}"));
        }
        q
    }
}

// ---- clock ----

/// Microseconds since the epoch, from a monotonic clock anchored to the wall clock once.
fn clock_now_us() -> i64 {
    static ANCHOR: OnceLock<(Instant, i64)> = OnceLock::new();
    let (base, epoch_us) = ANCHOR.get_or_init(|| {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("the clock is after 1970");
        (Instant::now(), wall.as_micros() as i64)
    });
    epoch_us + base.elapsed().as_micros() as i64
}

// ---- process plumbing ----

/// Child processes to kill if the watchdog fires.
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn start_watchdog(budget: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(budget);
        eprintln!("latency: watchdog: the run exceeded {budget:?}; killing children and exiting");
        for pid in CHILDREN.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            // SAFETY: kill(2) with a pid we spawned and a valid signal number.
            unsafe { libc::kill(*pid as libc::pid_t, libc::SIGKILL) };
        }
        std::process::exit(3);
    });
}

/// One SSE client needs one descriptor here, and the gateway (a child, which inherits this
/// limit) three per connection: the socket and the two duplicates it keeps (to close a slow
/// consumer, and to notice a client going away).
fn raise_nofile_limit(clients: usize) {
    let want = (clients as u64) * 3 + 512;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid resource and a pointer to a live rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            println!("RLIMIT_NOFILE: cannot read it; leaving it alone");
            return;
        }
        let before = lim.rlim_cur;
        if before >= want {
            println!("RLIMIT_NOFILE: soft limit {before} >= {want} needed; unchanged");
            return;
        }
        lim.rlim_cur = want.min(lim.rlim_max);
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
            println!(
                "RLIMIT_NOFILE: raised the soft limit from {before} to {} (hard limit {}); children inherit it",
                lim.rlim_cur, lim.rlim_max
            );
        } else {
            println!("RLIMIT_NOFILE: could not raise the soft limit from {before}");
        }
        if lim.rlim_cur < want {
            println!(
                "RLIMIT_NOFILE: warning: {} < {want}; connections may fail with EMFILE",
                lim.rlim_cur
            );
        }
    }
}

fn spawn_child(cmd: &mut tokio::process::Command) -> anyhow::Result<tokio::process::Child> {
    cmd.kill_on_drop(true);
    // SAFETY: the closure only calls prctl, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            // The child dies with this process, even if the bench is killed.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    if let Some(pid) = child.id() {
        CHILDREN.lock().unwrap_or_else(|p| p.into_inner()).push(pid);
    }
    Ok(child)
}

/// SIGTERM, then SIGKILL if it has not exited within `grace`.
async fn stop_child(name: &str, child: &mut tokio::process::Child, grace: Duration) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    }
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(Ok(status)) if !status.success() => println!("{name} exited with {status}"),
        Ok(_) => {}
        Err(_) => {
            println!("{name} did not exit within {grace:?} of SIGTERM; killing it");
            let _ = child.kill().await;
        }
    }
}

/// The `--serve-sim` child: mongo-sim's own `main`, for when its binary is not built.
fn serve_sim() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let sim = mongo_sim::Sim::start(mongo_sim::SimConfig::default()).await?;
        println!("mongo-sim listening on {}", sim.addr());
        std::io::stdout().flush()?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        sim.shutdown().await;
        Ok(())
    })
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn gateway_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mongo-sse"))
}

fn log_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("latency")
}

/// Per-process CPU time from /proc, in seconds: (user, system).
fn cpu_seconds(pid: u32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    // SAFETY: sysconf with a valid name.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((utime / hz, stime / hz))
}

/// The 1-, 5- and 15-minute load averages: other work on the machine skews every figure.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "n/a".into())
}

/// Resident memory from /proc, in MiB.
fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// What runs the sim and the gateway, and how to stop them.
struct Servers {
    mongodb_uri: String,
    db: String,
    gateway: SocketAddr,
    sim_child: Option<tokio::process::Child>,
    gateway_child: Option<tokio::process::Child>,
    in_process: Option<(tokio::runtime::Handle, InProcess)>,
    /// Whether the database is a real server (dropped at the end).
    real_mongodb: bool,
    sim_pid: Option<u32>,
    gateway_pid: Option<u32>,
}

struct InProcess {
    sim: Option<mongo_sim::Sim>,
    gateway: mongo_sse::gateway::Gateway,
}

async fn start_servers(
    a: &Args,
    server_rt: Option<tokio::runtime::Handle>,
) -> anyhow::Result<Servers> {
    std::fs::create_dir_all(log_dir())?;
    let env_uri = std::env::var("MONGODB_URI").ok().filter(|s| !s.is_empty());
    let real_mongodb = env_uri.is_some();
    let db = if real_mongodb {
        format!("mongo_sse_bench_{}", std::process::id())
    } else {
        "bench".to_string()
    };
    let port = free_port()?;
    let gateway = SocketAddr::from(([127, 0, 0, 1], port));
    let gateway_env = |uri: &str| -> Vec<(String, String)> {
        let mut vars: Vec<(String, String)> = vec![
            ("SSE_AUTH".into(), "none".into()),
            ("SSE_BIND".into(), gateway.to_string()),
            ("MONGODB_URI".into(), uri.into()),
            ("MONGODB_DB".into(), db.clone()),
            ("SSE_SOURCES".into(), SOURCES.into()),
        ];
        // Every bench client connects from 127.0.0.1, so the per-IP connect rate limit would
        // refuse most of them: off unless set in the environment.
        if std::env::var_os("SSE_CONNECT_RATE_PER_IP").is_none() {
            vars.push(("SSE_CONNECT_RATE_PER_IP".into(), "0".into()));
        }
        vars
    };

    if let Some(rt) = server_rt {
        let (sim, uri) = match env_uri {
            Some(uri) => (None, uri),
            None => {
                let sim = rt
                    .spawn(mongo_sim::Sim::start(mongo_sim::SimConfig::default()))
                    .await??;
                let uri = sim.uri();
                (Some(sim), uri)
            }
        };
        println!("mongo-sim: in this process ({uri})");
        let mut vars = gateway_env(&uri);
        // Other SSE_* settings from the environment apply, as they would to the binary.
        for (k, v) in std::env::vars() {
            if k.starts_with("SSE_") && !vars.iter().any(|(n, _)| n == &k) {
                vars.push((k, v));
            }
        }
        let config = mongo_sse::config::Config::from_iter(vars)?;
        let gw = rt
            .spawn(mongo_sse::gateway::Gateway::start(config))
            .await??;
        println!("gateway: in this process, http://{}", gw.addr);
        return Ok(Servers {
            mongodb_uri: uri,
            db,
            gateway: gw.addr,
            sim_child: None,
            gateway_child: None,
            in_process: Some((rt, InProcess { sim, gateway: gw })),
            real_mongodb,
            sim_pid: None,
            gateway_pid: None,
        });
    }

    let (sim_child, uri) = match env_uri {
        Some(uri) => {
            println!("MongoDB: MONGODB_URI from the environment (a real server; database {db})");
            (None, uri)
        }
        None => {
            let built = a
                .sim_bin
                .clone()
                .unwrap_or_else(|| gateway_bin().with_file_name("mongo-sim"));
            let mut cmd = if built.is_file() {
                println!("mongo-sim: {} (separate process)", built.display());
                tokio::process::Command::new(&built)
            } else if a.sim_bin.is_some() {
                bail!("--sim-bin {}: no such file", built.display());
            } else {
                let me = std::env::current_exe()?;
                println!(
                    "mongo-sim: {} not built; running this bench as the sim in a separate process ({} --serve-sim)",
                    built.display(),
                    me.display()
                );
                let mut c = tokio::process::Command::new(me);
                c.arg("--serve-sim");
                c
            };
            if built.is_file() {
                cmd.args(["--bind", "127.0.0.1:0"]);
            }
            let log = std::fs::File::create(log_dir().join("mongo-sim.log"))?;
            cmd.stdout(Stdio::piped()).stderr(log).stdin(Stdio::null());
            let mut child = spawn_child(&mut cmd).context("cannot start mongo-sim")?;
            let stdout = child.stdout.take().context("mongo-sim stdout")?;
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
                .await
                .context("mongo-sim did not report its address within 20 s")??
                .context("mongo-sim exited before listening")?;
            let addr = line
                .strip_prefix("mongo-sim listening on ")
                .with_context(|| format!("unexpected mongo-sim output: {line:?}"))?
                .trim()
                .to_string();
            // Keep reading stdout so the child never blocks on a full pipe.
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            (Some(child), format!("mongodb://{addr}/?replicaSet=rs0"))
        }
    };

    let mut cmd = tokio::process::Command::new(gateway_bin());
    cmd.arg("serve");
    for (k, v) in gateway_env(&uri) {
        cmd.env(k, v);
    }
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "info,actix_server=warn");
    }
    let log_path = log_dir().join("gateway.log");
    cmd.stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path)?)
        .stdin(Stdio::null());
    let gateway_child = spawn_child(&mut cmd).context("cannot start the gateway")?;
    println!(
        "gateway: {} serve on http://{gateway} (separate process; log {})",
        gateway_bin().display(),
        log_path.display()
    );
    Ok(Servers {
        mongodb_uri: uri,
        db,
        gateway,
        sim_pid: sim_child.as_ref().and_then(|c| c.id()),
        gateway_pid: gateway_child.id(),
        sim_child,
        gateway_child: Some(gateway_child),
        in_process: None,
        real_mongodb,
    })
}

impl Servers {
    async fn stop(mut self) {
        if let Some(mut gw) = self.gateway_child.take() {
            stop_child("gateway", &mut gw, Duration::from_secs(12)).await;
        }
        if let Some(mut sim) = self.sim_child.take() {
            stop_child("mongo-sim", &mut sim, Duration::from_secs(5)).await;
        }
        if let Some((rt, ip)) = self.in_process.take() {
            let _ = rt
                .spawn(async move {
                    let _ =
                        tokio::time::timeout(Duration::from_secs(12), ip.gateway.shutdown()).await;
                    if let Some(sim) = ip.sim {
                        sim.shutdown().await;
                    }
                })
                .await;
        }
    }
}

async fn wait_ready(http: &reqwest::Client, gateway: SocketAddr) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(30);
    let mut last = String::from("no answer");
    while Instant::now() < deadline {
        match http
            .get(format!("http://{gateway}/readyz"))
            .timeout(Duration::from_secs(3))
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => return Ok(started.elapsed()),
            Ok(r) => last = format!("{} {}", r.status(), r.text().await.unwrap_or_default()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the gateway was not ready within 30 s: {last}")
}

// ---- clients ----

#[derive(Deserialize)]
struct Payload {
    doc: Doc,
}

#[derive(Deserialize)]
struct Doc {
    seq: i64,
    sent_at: i64,
}

#[derive(Default)]
struct ClientResult {
    latencies_us: Vec<u32>,
    received: u64,
    duplicates: u64,
    out_of_order: u64,
    unparsable: u64,
    error: Option<String>,
}

struct Shared {
    connected: AtomicUsize,
    failed: AtomicUsize,
    complete: AtomicUsize,
}

/// One SSE connection: connect, report the first frame, then record every event until
/// `stop`.
async fn client(
    http: reqwest::Client,
    url: String,
    expect: u64,
    shared: Arc<Shared>,
    connecting: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) -> ClientResult {
    let mut out = ClientResult::default();
    let permit = connecting.acquire_owned().await;
    let resp = match http.get(&url).send().await {
        Ok(r) if r.status().is_success() => r,
        Ok(r) => {
            shared.failed.fetch_add(1, Ordering::Relaxed);
            let status = r.status();
            let body = r.text().await.unwrap_or_default();
            out.error = Some(format!(
                "HTTP {status}: {}",
                body.chars().take(300).collect::<String>()
            ));
            return out;
        }
        Err(e) => {
            shared.failed.fetch_add(1, Ordering::Relaxed);
            out.error = Some(format!("connect: {e}"));
            return out;
        }
    };
    let mut resp = resp;
    let mut permit = Some(permit);
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut seen_first = false;
    let mut last_seq: i64 = -1;
    let mut complete = expect == 0;
    if complete {
        shared.complete.fetch_add(1, Ordering::Relaxed);
    }
    loop {
        let chunk = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            c = resp.chunk() => c,
        };
        let now = clock_now_us();
        let chunk = match chunk {
            Ok(Some(c)) => c,
            Ok(None) => {
                out.error = Some("the gateway ended the stream".into());
                break;
            }
            Err(e) => {
                out.error = Some(format!("read: {e}"));
                break;
            }
        };
        buf.extend_from_slice(&chunk);
        // Frames end with an empty line; the gateway writes LF line ends.
        let mut start = 0;
        while let Some(end) = find_frame_end(&buf[start..]) {
            let frame = &buf[start..start + end];
            start += end + 2;
            if !seen_first {
                seen_first = true;
                permit.take();
                if frame.starts_with(b"retry:") {
                    shared.connected.fetch_add(1, Ordering::Relaxed);
                } else {
                    shared.failed.fetch_add(1, Ordering::Relaxed);
                    out.error = Some("the first frame was not `retry:`".into());
                }
            }
            for line in frame.split(|b| *b == b'\n') {
                let Some(data) = line.strip_prefix(b"data:") else {
                    continue;
                };
                let data = data.strip_prefix(b" ").unwrap_or(data);
                match serde_json::from_slice::<Payload>(data) {
                    Ok(p) => {
                        out.latencies_us
                            .push((now - p.doc.sent_at).clamp(0, u32::MAX as i64) as u32);
                        if p.doc.seq == last_seq {
                            out.duplicates += 1;
                        } else if p.doc.seq < last_seq {
                            out.out_of_order += 1;
                        }
                        last_seq = last_seq.max(p.doc.seq);
                        out.received += 1;
                        if !complete && out.received >= expect {
                            complete = true;
                            shared.complete.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(_) => out.unparsable += 1,
                }
            }
        }
        buf.drain(..start);
    }
    if !seen_first {
        shared.failed.fetch_add(1, Ordering::Relaxed);
    }
    out
}

fn find_frame_end(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\n\n")
}

// ---- writer ----

struct WriterReport {
    ops_before: Document,
    ops_after: Document,
    inserted: usize,
    write_secs: f64,
    insert_us: Vec<u32>,
    max_behind_ms: f64,
}

/// Runs on its own thread and current-thread runtime, so that client work cannot delay the
/// moment `sent_at` is taken and the insert it stamps.
fn writer_thread(
    a: Args,
    uri: String,
    db: String,
    go: oneshot::Receiver<()>,
    ready: oneshot::Sender<anyhow::Result<()>>,
    done: oneshot::Sender<()>,
    drained: oneshot::Receiver<()>,
) -> anyhow::Result<WriterReport> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let setup = async {
            let client = mongodb::Client::with_uri_str(&uri).await?;
            let coll = client.database(&db).collection::<Document>(COLLECTION);
            // Warm the whole path (insert, change stream, gateway routing) on a channel no
            // client listens to.
            for i in 0..a.warmup {
                coll.insert_one(doc! {"workspace_id": "warmup", "workflow_id": "warmup", "seq": i as i64, "sent_at": clock_now_us()})
                    .await?;
            }
            anyhow::Ok((client, coll))
        };
        let (client, coll) = match setup.await {
            Ok(x) => {
                let _ = ready.send(Ok(()));
                x
            }
            Err(e) => {
                let _ = ready.send(Err(anyhow::anyhow!("writer setup: {e:#}")));
                bail!("writer setup failed");
            }
        };
        go.await.context("the bench gave up before writing")?;
        // Let the warm-up's events pass through before counting operations.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let admin = client.database("admin");
        let ops_before = opcounters(&admin).await?;
        let period = Duration::from_secs_f64(1.0 / a.rate);
        let t0 = tokio::time::Instant::now();
        let mut insert_us = Vec::with_capacity(a.events);
        let mut max_behind = Duration::ZERO;
        for i in 0..a.events {
            let due = t0 + period.mul_f64(i as f64);
            // tokio's timer has a 1 ms resolution and even an elapsed deadline waits for the
            // next tick: sleeping only when ahead lets rates above 1000/s keep their schedule.
            let now = tokio::time::Instant::now();
            if due > now {
                tokio::time::sleep_until(due).await;
            }
            max_behind = max_behind.max(tokio::time::Instant::now().saturating_duration_since(due));
            let wf = workflow_of_event(&a, i);
            let ws = workspace_of_workflow(&a, wf);
            let sent_at = clock_now_us();
            coll.insert_one(doc! {
                "workspace_id": format!("w{ws}"),
                "workflow_id": format!("f{wf}"),
                "seq": i as i64,
                "sent_at": sent_at,
                "level": "info",
                "msg": "step finished",
            })
            .await?;
            insert_us.push((clock_now_us() - sent_at).clamp(0, u32::MAX as i64) as u32);
        }
        let write_secs = t0.elapsed().as_secs_f64();
        let _ = done.send(());
        let _ = drained.await;
        let ops_after = opcounters(&admin).await?;
        Ok(WriterReport {
            ops_before,
            ops_after,
            inserted: a.events,
            write_secs,
            insert_us,
            max_behind_ms: max_behind.as_secs_f64() * 1e3,
        })
    })
}

async fn opcounters(admin: &mongodb::Database) -> anyhow::Result<Document> {
    let status = admin.run_command(doc! {"serverStatus": 1}).await?;
    Ok(status.get_document("opcounters")?.clone())
}

fn counter(d: &Document, k: &str) -> i64 {
    match d.get(k) {
        Some(bson::Bson::Int32(v)) => *v as i64,
        Some(bson::Bson::Int64(v)) => *v,
        Some(bson::Bson::Double(v)) => *v as i64,
        _ => 0,
    }
}

// ---- the run ----

async fn run(a: Args, server_rt: Option<tokio::runtime::Handle>) -> anyhow::Result<()> {
    println!(
        "latency: {} clients, {} events at {}/s over {} workflows in {} workspaces (every {}th client also on a workspace channel)",
        a.clients, a.events, a.rate, a.workflows, a.workspaces, a.workspace_every
    );
    let servers = start_servers(&a, server_rt).await?;
    let outcome = measure(&a, &servers).await;
    if servers.real_mongodb {
        if let Ok(c) = mongodb::Client::with_uri_str(&servers.mongodb_uri).await {
            let _ =
                tokio::time::timeout(Duration::from_secs(10), c.database(&servers.db).drop()).await;
        }
    }
    servers.stop().await;
    outcome
}

async fn measure(a: &Args, servers: &Servers) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(0)
        .build()?;
    let ready_in = wait_ready(&http, servers.gateway).await?;
    println!("gateway ready after {:.2} s", ready_in.as_secs_f64());

    // The writer connects and warms up while the clients connect.
    let (go_tx, go_rx) = oneshot::channel();
    let (ready_tx, ready_rx) = oneshot::channel();
    let (done_tx, done_rx) = oneshot::channel();
    let (drained_tx, drained_rx) = oneshot::channel();
    let writer = {
        let (a, uri, db) = (a.clone(), servers.mongodb_uri.clone(), servers.db.clone());
        std::thread::Builder::new()
            .name("writer".into())
            .spawn(move || writer_thread(a, uri, db, go_rx, ready_tx, done_tx, drained_rx))?
    };

    let shared = Arc::new(Shared {
        connected: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        complete: AtomicUsize::new(0),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let connecting = Arc::new(Semaphore::new(a.connect_concurrency));
    let mut expected_total = 0u64;
    let mut tasks = Vec::with_capacity(a.clients);
    let connect_started = Instant::now();
    for c in 0..a.clients {
        let sub = subscription_of(a, c);
        let expect = (0..a.events).filter(|&i| sub.wants(a, i)).count() as u64;
        expected_total += expect;
        let url = format!("http://{}/v1/stream?{}", servers.gateway, sub.query(a));
        tasks.push(tokio::spawn(client(
            http.clone(),
            url,
            expect,
            Arc::clone(&shared),
            Arc::clone(&connecting),
            stop_rx.clone(),
        )));
    }
    let connect_deadline = connect_started + Duration::from_secs(a.connect_timeout_secs);
    loop {
        let (ok, failed) = (
            shared.connected.load(Ordering::Relaxed),
            shared.failed.load(Ordering::Relaxed),
        );
        if ok + failed >= a.clients {
            break;
        }
        if Instant::now() > connect_deadline {
            let _ = stop_tx.send(true);
            bail!(
                "only {ok} of {} clients connected within {} s",
                a.clients,
                a.connect_timeout_secs
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let connect_secs = connect_started.elapsed().as_secs_f64();
    let failed = shared.failed.load(Ordering::Relaxed);
    println!(
        "connected: {} of {} clients in {connect_secs:.2} s ({failed} failed)",
        shared.connected.load(Ordering::Relaxed),
        a.clients
    );
    if failed > 0 {
        let _ = stop_tx.send(true);
        for t in tasks {
            if let Ok(r) = t.await {
                if let Some(e) = r.error {
                    println!("  client error: {e}");
                    break;
                }
            }
        }
        bail!("{failed} clients could not connect");
    }
    let writer_ready = tokio::time::timeout(Duration::from_secs(60), ready_rx)
        .await
        .context("the writer was not ready within 60 s")?
        .context("the writer thread died")?;
    writer_ready?;

    let gw_rss_connected = servers.gateway_pid.and_then(rss_mib);
    let me = std::process::id();
    let cpu = |pid: Option<u32>| pid.and_then(cpu_seconds);
    let cpu_before = (
        cpu(servers.gateway_pid),
        cpu(servers.sim_pid),
        cpu(Some(me)),
    );
    let load_before = loadavg();
    let wall_started = Instant::now();
    let _ = go_tx.send(());

    // The writer's schedule, plus its own 0.5 s settling pause, bounds this wait.
    let write_budget = Duration::from_secs_f64(a.events as f64 / a.rate * 3.0 + 60.0);
    let wrote = tokio::time::timeout(write_budget, done_rx).await;
    let drain_started = Instant::now();
    let drain_deadline = drain_started + Duration::from_secs(a.drain_timeout_secs);
    if matches!(wrote, Ok(Ok(()))) {
        while shared.complete.load(Ordering::Relaxed) < a.clients && Instant::now() < drain_deadline
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let drain_secs = drain_started.elapsed().as_secs_f64();
    let wall_secs = wall_started.elapsed().as_secs_f64();
    let cpu_after = (
        cpu(servers.gateway_pid),
        cpu(servers.sim_pid),
        cpu(Some(me)),
    );
    let gw_rss_end = servers.gateway_pid.and_then(rss_mib);
    let load_after = loadavg();
    let _ = drained_tx.send(());
    let _ = stop_tx.send(true);

    let mut latencies: Vec<u32> = Vec::with_capacity(expected_total as usize);
    let (mut received, mut dups, mut disorder, mut unparsable) = (0u64, 0u64, 0u64, 0u64);
    let mut errors: VecDeque<String> = VecDeque::new();
    let mut errored = 0usize;
    for t in tasks {
        let r = tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .context("a client did not stop within 10 s")?
            .context("a client task panicked")?;
        latencies.extend_from_slice(&r.latencies_us);
        received += r.received;
        dups += r.duplicates;
        disorder += r.out_of_order;
        unparsable += r.unparsable;
        if let Some(e) = r.error {
            errored += 1;
            if errors.len() < 3 {
                errors.push_back(e);
            }
        }
    }
    let writer = tokio::task::spawn_blocking(move || writer.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the writer thread panicked"))??;

    // ---- report ----
    latencies.sort_unstable();
    let mut insert_us = writer.insert_us.clone();
    insert_us.sort_unstable();
    let mode = if servers.in_process.is_some() {
        "in-process (sim, gateway and clients in one process, separate runtimes)"
    } else if servers.real_mongodb {
        "separate processes (real MongoDB, gateway binary, clients here)"
    } else {
        "separate processes (mongo-sim, gateway binary, clients here)"
    };
    println!();
    println!("mode:        {mode}");
    println!(
        "writer:      {} inserts in {:.2} s ({:.1}/s, target {}/s); insert round trip p50 {} p99 {}; max behind schedule {:.2} ms",
        writer.inserted,
        writer.write_secs,
        writer.inserted as f64 / writer.write_secs,
        a.rate,
        ms(pct(&insert_us, 0.50)),
        ms(pct(&insert_us, 0.99)),
        writer.max_behind_ms
    );
    println!(
        "delivered:   {received} of {expected_total} expected ({:.3}%); duplicates {dups}, out of order {disorder}, unparsable {unparsable}; clients complete {} of {}; drain {drain_secs:.2} s",
        100.0 * received as f64 / expected_total.max(1) as f64,
        shared.complete.load(Ordering::Relaxed),
        a.clients
    );
    if errored > 0 {
        println!("client errors: {errored} (first: {:?})", errors);
    }
    println!(
        "latency:     p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (n = {}, insert-to-receipt)",
        ms(pct(&latencies, 0.50)),
        ms(pct(&latencies, 0.90)),
        ms(pct(&latencies, 0.99)),
        ms(pct(&latencies, 0.999)),
        ms(latencies.last().copied()),
        latencies.len()
    );
    let keys = ["insert", "query", "update", "delete", "getmore", "command"];
    let deltas: Vec<(String, i64)> = keys
        .iter()
        .map(|k| {
            (
                k.to_string(),
                counter(&writer.ops_after, k) - counter(&writer.ops_before, k),
            )
        })
        .collect();
    println!(
        "opcounters:  {} (serverStatus delta over the run, every client of the server included)",
        deltas
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let d = |a: Option<(f64, f64)>, b: Option<(f64, f64)>| match (a, b) {
        (Some(a), Some(b)) => {
            let (user, sys) = (b.0 - a.0, b.1 - a.1);
            format!(
                "{:.2} s = {user:.2} user + {sys:.2} sys ({:.0}% of a core)",
                user + sys,
                100.0 * (user + sys) / wall_secs
            )
        }
        _ => "n/a".to_string(),
    };
    println!(
        "cpu:         gateway {}, mongo-sim {}, bench {} over {wall_secs:.2} s",
        d(cpu_before.0, cpu_after.0),
        d(cpu_before.1, cpu_after.1),
        d(cpu_before.2, cpu_after.2)
    );
    println!(
        "machine:     load average {load_before} before, {load_after} after ({} CPUs); other work on the machine skews the figures",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    if let (Some(c), Some(e)) = (gw_rss_connected, gw_rss_end) {
        println!("gateway rss: {c:.1} MiB with clients connected, {e:.1} MiB at the end");
    }
    println!(
        "RESULT clients={} events={} rate={} p50_ms={} p90_ms={} p99_ms={} max_ms={} delivered={} expected={} {} connect_s={connect_secs:.2}",
        a.clients,
        a.events,
        a.rate,
        ms_num(pct(&latencies, 0.50)),
        ms_num(pct(&latencies, 0.90)),
        ms_num(pct(&latencies, 0.99)),
        ms_num(latencies.last().copied()),
        received,
        expected_total,
        deltas
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    if received != expected_total || dups > 0 || disorder > 0 {
        bail!("not every event was delivered exactly once and in order");
    }
    Ok(())
}

/// Nearest-rank percentile.
fn pct(sorted: &[u32], q: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn ms(us: Option<u32>) -> String {
    format!("{}ms", ms_num(us))
}

fn ms_num(us: Option<u32>) -> String {
    match us {
        Some(us) => format!("{:.2}", us as f64 / 1000.0),
        None => "n/a".into(),
    }
}
