//! The nemesis: every few seconds one fault, chosen at random from the run's seed, applied,
//! held for a while and undone, each with its own counter and a line in the fault log.
//! Faults run one at a time (MongoDB has one `failCommand` fail point), each bounded in time.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bson::{doc, Document};
use tokio::sync::watch;

use crate::check::Entry;
use crate::procs::Gateway;
use crate::reader::{lock, Reader};
use crate::rng::Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Fault {
    /// SIGKILL a gateway, then start it again.
    Sigkill,
    /// SIGTERM a gateway (it must exit within 20 s), then start it again.
    Sigterm,
    /// `failCommand` + `closeConnection` on the gateways' reads: every connection dropped.
    CloseConnections,
    /// `failCommand` with a resumable error code and `ResumableChangeStreamError` on getMore.
    ResumableError,
    /// `failCommand` + `blockConnection` on getMore.
    BlockedGetmore,
    /// Code 13 on `aggregate` (and once on getMore): change streams unavailable, the gateways
    /// poll; then back.
    ChangeStreamsUnavailable,
    /// A reader stops reading until the gateway drops it as a slow consumer.
    SlowReader,
    /// `replSetResizeOplog` below the readers' positions, then back.
    OplogShrink,
}

impl Fault {
    pub const ALL: [Fault; 8] = [
        Fault::Sigkill,
        Fault::Sigterm,
        Fault::CloseConnections,
        Fault::ResumableError,
        Fault::BlockedGetmore,
        Fault::ChangeStreamsUnavailable,
        Fault::SlowReader,
        Fault::OplogShrink,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::Sigkill => "sigkill_restart",
            Fault::Sigterm => "sigterm_restart",
            Fault::CloseConnections => "close_connections",
            Fault::ResumableError => "resumable_error",
            Fault::BlockedGetmore => "blocked_getmore",
            Fault::ChangeStreamsUnavailable => "change_streams_unavailable",
            Fault::SlowReader => "slow_reader",
            Fault::OplogShrink => "oplog_shrink",
        }
    }
}

/// MongoDB's resumable change-stream error codes (the driver's list).
const RESUMABLE: &[i32] = &[
    6, 7, 63, 89, 91, 133, 150, 189, 234, 262, 9001, 10107, 11600, 11602, 13388, 13435, 13436,
];

#[derive(Debug, Clone)]
pub struct FaultRecord {
    pub t: f64,
    pub fault: &'static str,
    pub detail: String,
}

pub struct Nemesis {
    pub gateways: Vec<Arc<tokio::sync::Mutex<Gateway>>>,
    pub admin: mongodb::Client,
    pub http: reqwest::Client,
    pub readers: Vec<Arc<Reader>>,
    pub started: Instant,
    pub enabled: Vec<Fault>,
    pub every: Duration,
    pub slow_pause: Duration,
    pub oplog_shrink_mb: f64,
    pub oplog_restore_mb: f64,
    /// mongo-sim's `simMaxEvents` while shrunk; `None` against a real server.
    pub oplog_shrink_events: Option<u64>,
    pub log: Mutex<Vec<FaultRecord>>,
    pub counters: Mutex<BTreeMap<String, u64>>,
    /// Invariant violations seen by the nemesis itself (a hang on SIGTERM, a gateway that does
    /// not come back).
    pub errors: Mutex<Vec<String>>,
    /// Why the oplog-shrink fault could not run, when MongoDB refused the command.
    pub oplog_unavailable: Mutex<Option<String>>,
    /// The next sequence number of the burst channel (see [`Nemesis::slow_reader`]).
    pub burst_seq: Mutex<u64>,
    /// The writers' counters: the oplog-shrink fault waits for a reader away to fall behind
    /// every gateway's memory.
    pub writes: Arc<crate::writer::WriteStats>,
    /// The gateways' `SSE_HISTORY_EVENTS`.
    pub history_events: u64,
}

/// The channel only slow-reader candidates subscribe to: while one is paused, the nemesis
/// publishes large events there, so its gateway's queue overflows in seconds rather than after
/// the kernel's socket buffers (megabytes on loopback) have filled.
pub const BURST_CHANNEL: &str = "pub:soak:burst";

impl Nemesis {
    fn record(&self, fault: &'static str, detail: String) {
        let t = self.started.elapsed().as_secs_f64();
        println!("[{t:7.1}s] fault {fault}: {detail}");
        lock(&self.log).push(FaultRecord { t, fault, detail });
    }

    fn count(&self, what: &str) {
        *lock(&self.counters).entry(what.to_string()).or_default() += 1;
    }

    fn error(&self, e: String) {
        eprintln!("soak: VIOLATION: {e}");
        lock(&self.errors).push(e);
    }

    pub async fn run(self: Arc<Self>, mut rng: Rng, mut stop: watch::Receiver<bool>) {
        let mut enabled = self.enabled.clone();
        let mut bag: Vec<Fault> = Vec::new();
        let every = self.every.as_millis() as u64;
        // Bounded by `stop`: each pass waits at least every/2 ms.
        while !enabled.is_empty() {
            let wait = Duration::from_millis(rng.between(every / 2, every * 3 / 2).max(1));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => break,
            }
            if *stop.borrow() {
                break;
            }
            // A shuffled bag: every enabled fault once per round, in a random order, so a
            // short run still sees each of them.
            if bag.is_empty() {
                bag = enabled.clone();
                for i in (1..bag.len()).rev() {
                    bag.swap(i, rng.below(i as u64 + 1) as usize);
                }
            }
            let Some(fault) = bag.pop() else { break };
            let applied = self.apply(fault, &mut rng).await;
            if applied {
                self.count(fault.name());
            } else if fault == Fault::OplogShrink {
                enabled.retain(|f| *f != Fault::OplogShrink);
            }
        }
        self.all_off().await;
    }

    async fn apply(&self, fault: Fault, rng: &mut Rng) -> bool {
        match fault {
            Fault::Sigkill => self.restart(libc::SIGKILL, rng).await,
            Fault::Sigterm => self.restart(libc::SIGTERM, rng).await,
            Fault::CloseConnections => {
                let times = rng.between(2, 6) as i32;
                let data = doc! {
                    "failCommands": ["getMore", "aggregate", "find"],
                    "closeConnection": true,
                };
                self.fail_for(fault, doc! {"times": times}, data, Duration::from_secs(3))
                    .await
            }
            Fault::ResumableError => {
                let code = RESUMABLE[rng.below(RESUMABLE.len() as u64) as usize];
                let times = rng.between(1, 4) as i32;
                let data = doc! {
                    "failCommands": ["getMore"],
                    "errorCode": code,
                    "errorLabels": ["ResumableChangeStreamError"],
                };
                self.fail_for(fault, doc! {"times": times}, data, Duration::from_secs(3))
                    .await
            }
            Fault::BlockedGetmore => {
                let ms = rng.between(2000, 8000) as i32;
                let times = rng.between(1, 3) as i32;
                let data = doc! {
                    "failCommands": ["getMore"],
                    "blockConnection": true,
                    "blockTimeMS": ms,
                };
                let hold = Duration::from_millis(ms as u64 + 2000);
                self.fail_for(fault, doc! {"times": times}, data, hold)
                    .await
            }
            Fault::ChangeStreamsUnavailable => self.change_streams_unavailable(rng).await,
            Fault::SlowReader => self.slow_reader(rng).await,
            Fault::OplogShrink => self.oplog_shrink(rng).await,
        }
    }

    async fn configure(&self, name: &str, mode: bson::Bson, data: Document) -> anyhow::Result<()> {
        let cmd = doc! {"configureFailPoint": name, "mode": mode, "data": data};
        tokio::time::timeout(
            Duration::from_secs(10),
            self.admin.database("admin").run_command(cmd),
        )
        .await??;
        Ok(())
    }

    /// Every fail point off (bounded retries: the nemesis's own connection may be the one a
    /// fault just closed).
    pub async fn all_off(&self) {
        for name in ["failCommand", "failGetMoreAfterCursorCheckout"] {
            for _ in 0..5 {
                if self.configure(name, "off".into(), doc! {}).await.is_ok() {
                    break;
                }
            }
        }
    }

    async fn fail_for(&self, fault: Fault, mode: Document, data: Document, hold: Duration) -> bool {
        let detail = format!("mode {mode}, data {data}, held {hold:?}");
        if let Err(e) = self.configure("failCommand", mode.into(), data).await {
            self.record(fault.name(), format!("could not configure: {e}"));
            return false;
        }
        tokio::time::sleep(hold).await;
        self.all_off().await;
        self.record(fault.name(), detail);
        true
    }

    fn victim(&self, rng: &mut Rng) -> usize {
        // Gateway 0 is never killed: its resource samples cover the whole run.
        if self.gateways.len() > 1 {
            1 + rng.below(self.gateways.len() as u64 - 1) as usize
        } else {
            0
        }
    }

    async fn restart(&self, sig: libc::c_int, rng: &mut Rng) -> bool {
        let i = self.victim(rng);
        let down = Duration::from_millis(rng.between(100, 2000));
        let name = if sig == libc::SIGKILL {
            Fault::Sigkill.name()
        } else {
            Fault::Sigterm.name()
        };
        let mut g = self.gateways[i].lock().await;
        let t0 = Instant::now();
        let limit = Duration::from_secs(if sig == libc::SIGKILL { 5 } else { 20 });
        if !g.stop_with(sig, limit).await {
            self.error(format!(
                "gateway {i} did not exit within {limit:?} of signal {sig} (killed)"
            ));
        }
        let exit = t0.elapsed();
        tokio::time::sleep(down).await;
        if let Err(e) = g.start() {
            self.error(format!("gateway {i} could not be restarted: {e}"));
            return false;
        }
        let t1 = Instant::now();
        if let Err(e) = g.wait_ready(&self.http, Duration::from_secs(60)).await {
            self.error(format!("gateway {i} did not come back: {e}"));
        }
        self.record(
            name,
            format!(
                "gateway {i} exited in {} ms, down {} ms, ready {} ms after start",
                exit.as_millis(),
                down.as_millis(),
                t1.elapsed().as_millis()
            ),
        );
        true
    }

    async fn modes(&self) -> Vec<String> {
        let mut out = Vec::new();
        for g in &self.gateways {
            let url = format!("{}/metrics", g.lock().await.url());
            let text = match tokio::time::timeout(
                Duration::from_secs(3),
                self.http.get(&url).send(),
            )
            .await
            {
                Ok(Ok(r)) => r.text().await.unwrap_or_default(),
                _ => String::new(),
            };
            let mode = if text.contains("mongo_sse_mode{mode=\"polling\"} 1") {
                "polling"
            } else if text.contains("mongo_sse_mode{mode=\"change_stream\"} 1") {
                "change_stream"
            } else {
                "unknown"
            };
            out.push(mode.to_string());
        }
        out
    }

    /// Waits (bounded) until every gateway reports `mode`; the modes seen last.
    async fn await_modes(&self, mode: &str, limit: Duration) -> (bool, Vec<String>) {
        let deadline = Instant::now() + limit;
        loop {
            let m = self.modes().await;
            if m.iter().all(|x| x == mode) {
                return (true, m);
            }
            if Instant::now() >= deadline {
                return (false, m);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn change_streams_unavailable(&self, rng: &mut Rng) -> bool {
        let fault = Fault::ChangeStreamsUnavailable;
        let n = self.gateways.len() as i32;
        let agg = doc! {"failCommands": ["aggregate"], "errorCode": 13};
        if let Err(e) = self.configure("failCommand", "alwaysOn".into(), agg).await {
            self.record(fault.name(), format!("could not configure: {e}"));
            return false;
        }
        // Each live change stream's next getMore fails once with 13, so it reopens, and the
        // reopening aggregate is refused: MongoDB says change streams are not available.
        let gm = doc! {"errorCode": 13};
        let _ = self
            .configure(
                "failGetMoreAfterCursorCheckout",
                doc! {"times": 2 * n}.into(),
                gm,
            )
            .await;
        let (all_polling, seen) = self.await_modes("polling", Duration::from_secs(20)).await;
        if all_polling {
            self.count("polling_switches_seen");
        }
        let hold = Duration::from_millis(rng.between(2000, 8000));
        tokio::time::sleep(hold).await;
        self.all_off().await;
        let (all_back, back) = self
            .await_modes("change_stream", Duration::from_secs(30))
            .await;
        if !all_back {
            self.error(format!(
                "gateways not back on change streams 30 s after they became available: {back:?}"
            ));
        }
        self.record(
            fault.name(),
            format!("modes under the fault {seen:?}, held {hold:?}, after {back:?}"),
        );
        true
    }

    /// One 48 KiB event on the burst channel, through a gateway's `/v1/publish`.
    async fn publish_burst_event(&self) -> bool {
        let seq = {
            let mut s = lock(&self.burst_seq);
            *s += 1;
            *s - 1
        };
        let body = serde_json::json!({
            "channel": BURST_CHANNEL,
            "data": {"seq": seq, "pad": "x".repeat(48 * 1024)},
        });
        let url = format!("{}/v1/publish", self.gateways[0].lock().await.url());
        matches!(
            tokio::time::timeout(
                Duration::from_secs(10),
                self.http
                    .post(url)
                    .header("content-type", "application/json")
                    .body(body.to_string())
                    .send(),
            )
            .await,
            Ok(Ok(r)) if r.status().as_u16() == 202
        )
    }

    /// Slow-consumer closes counted by the gateways' metrics, summed.
    async fn slow_closes(&self) -> u64 {
        let mut total = 0;
        for g in &self.gateways {
            let url = format!("{}/metrics", g.lock().await.url());
            if let Ok(Ok(r)) =
                tokio::time::timeout(Duration::from_secs(3), self.http.get(&url).send()).await
            {
                let text = r.text().await.unwrap_or_default();
                total += text
                    .lines()
                    .find_map(|l| {
                        l.strip_prefix(
                            "mongo_sse_connections_closed_total{reason=\"slow_consumer\"} ",
                        )
                    })
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .unwrap_or(0.0) as u64;
            }
        }
        total
    }

    /// A reader stops reading until a gateway closes a connection as a slow consumer (at most
    /// `slow_pause`), then reads again: it must resume with nothing lost.
    async fn slow_reader(&self, rng: &mut Rng) -> bool {
        let fault = Fault::SlowReader;
        let live = |r: &&Arc<Reader>| lock(&r.state).failed.is_none();
        let small: Vec<&Arc<Reader>> = self
            .readers
            .iter()
            .filter(|r| r.small_buffer)
            .filter(live)
            .collect();
        let pool: Vec<&Arc<Reader>> = if small.is_empty() {
            self.readers.iter().filter(live).collect()
        } else {
            small
        };
        if pool.is_empty() {
            return false;
        }
        let r = pool[rng.below(pool.len() as u64) as usize];
        let closes = self.slow_closes().await;
        let connects = lock(&r.state).connects;
        let t0 = Instant::now();
        r.pause();
        let deadline = t0 + self.slow_pause;
        let mut dropped = false;
        let mut burst = 0;
        // Bounded by the deadline and by 400 events of 48 KiB (about 19 MiB).
        while Instant::now() < deadline && burst < 400 {
            for _ in 0..20 {
                if self.publish_burst_event().await {
                    burst += 1;
                }
            }
            if self.slow_closes().await > closes {
                dropped = true;
                break;
            }
        }
        let paused = t0.elapsed();
        r.resume();
        if dropped {
            self.count("slow_reader_disconnected");
        }
        self.record(
            fault.name(),
            format!(
                "reader {} stopped reading for {} ms, {burst} large events published meanwhile: {} (connects before {connects})",
                r.id,
                paused.as_millis(),
                if dropped {
                    "closed by a gateway as a slow consumer"
                } else {
                    "not closed (its queue did not overflow in time)"
                }
            ),
        );
        true
    }

    /// `replSetResizeOplog` (MongoDB 3.6+: `size` in MB; on mongo-sim also `simMaxEvents`, which
    /// truncates at once). Refused, the fault is reported unavailable, loudly, and dropped from
    /// the run's choices.
    async fn oplog_shrink(&self, rng: &mut Rng) -> bool {
        let fault = Fault::OplogShrink;
        let admin = self.admin.database("admin");
        // A reader goes away until more has been written than any gateway remembers, so that
        // when it comes back its position is only in the oplog, which is then shrunk below it.
        let live: Vec<&Arc<Reader>> = self
            .readers
            .iter()
            .filter(|r| lock(&r.state).failed.is_none() && lock(&r.state).connects > 0)
            .collect();
        let stranded = (!live.is_empty()).then(|| live[rng.below(live.len() as u64) as usize]);
        let mut away_for = Duration::ZERO;
        if let Some(r) = stranded {
            let t0 = Instant::now();
            r.go_away();
            let target = self
                .writes
                .inserted
                .load(std::sync::atomic::Ordering::Relaxed)
                + self.history_events
                + 200;
            // Bounded: 60 s at most, whatever the write rate.
            while Instant::now() < t0 + Duration::from_secs(60)
                && self
                    .writes
                    .inserted
                    .load(std::sync::atomic::Ordering::Relaxed)
                    < target
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            away_for = t0.elapsed();
        }
        let mut cmd = doc! {"replSetResizeOplog": 1, "size": self.oplog_shrink_mb};
        let mut restore = doc! {"replSetResizeOplog": 1, "size": self.oplog_restore_mb};
        if let Some(n) = self.oplog_shrink_events {
            cmd.insert("simMaxEvents", n as i64);
            restore.insert("simMaxEvents", 1_000_000_i64);
        }
        match tokio::time::timeout(Duration::from_secs(10), admin.run_command(cmd)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                let why = match e.kind.as_ref() {
                    mongodb::error::ErrorKind::Command(c) => format!(
                        "MongoDB refused replSetResizeOplog: {} {}: {}",
                        c.code, c.code_name, c.message
                    ),
                    _ => format!("replSetResizeOplog failed: {e}"),
                };
                eprintln!("soak: oplog-shrink fault unavailable: {why}");
                *lock(&self.oplog_unavailable) = Some(why.clone());
                self.record(fault.name(), format!("UNAVAILABLE: {why}"));
                return false;
            }
            Err(_) => {
                let why = "replSetResizeOplog timed out after 10 s".to_string();
                *lock(&self.oplog_unavailable) = Some(why.clone());
                self.record(fault.name(), format!("UNAVAILABLE: {why}"));
                return false;
            }
        }
        let mut stranded_note = String::new();
        if let Some(r) = stranded {
            let (connects, seen) = {
                let st = lock(&r.state);
                (st.connects, st.entries.len())
            };
            r.come_back();
            // Its reconnect must be told about the gap (the first event of the connection).
            let t0 = Instant::now();
            let mut outcome = None;
            while t0.elapsed() < Duration::from_secs(20) && outcome.is_none() {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let st = lock(&r.state);
                if st.connects > connects {
                    outcome =
                        st.entries[seen.min(st.entries.len())..]
                            .iter()
                            .find_map(|e| match e {
                                Entry::Gap { reason, .. } => Some(format!("a `gap` ({reason})")),
                                Entry::Event { .. } => Some("an event before any gap".into()),
                                _ => None,
                            });
                }
            }
            let outcome = outcome.unwrap_or_else(|| "nothing within 20 s".into());
            if outcome.starts_with("a `gap`") {
                self.count("oplog_shrink_gap");
            }
            stranded_note = format!(
                "; reader {} away for {} ms came back to {outcome}",
                r.id,
                away_for.as_millis()
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let restored = matches!(
            tokio::time::timeout(Duration::from_secs(10), admin.run_command(restore)).await,
            Ok(Ok(_))
        );
        self.record(
            fault.name(),
            format!(
                "oplog resized to {} MB{}, restored to {} MB {}{stranded_note}",
                self.oplog_shrink_mb,
                self.oplog_shrink_events
                    .map_or(String::new(), |n| format!(" ({n} entries)")),
                self.oplog_restore_mb,
                if restored { "ok" } else { "FAILED" }
            ),
        );
        true
    }
}
