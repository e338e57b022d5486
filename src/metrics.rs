//! Every Prometheus metric of the gateway: names, help texts and label values live here and
//! nowhere else, so the places that count (hub, stream handler, catch-up, backlog, supervisor,
//! gate) each call one method.
//!
//! The registry belongs to the hub, not to the process: tests run several gateways in one
//! process, and each `/metrics` must describe its own gateway. (That is also why this uses the
//! `prometheus` crate, whose registries are values, rather than `metrics`, whose recorder is
//! global.)
//!
//! Counters kept elsewhere as atomics (refusals by limit) and gauges that describe a state
//! (catch-ups running and queued, the resume headroom) are sampled when `/metrics` is scraped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

/// Why a connection ended (`reason` of `mongo_sse_connections_closed_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client went away (EOF, reset, a failed write).
    Client,
    /// Its queue overflowed, or it stopped reading during a catch-up.
    SlowConsumer,
    /// Its token expired (`auth_expired` was sent).
    AuthExpired,
    /// The gateway is shutting down.
    Shutdown,
    /// Closed by `DELETE /admin/connections/{id}`.
    Admin,
    /// A catch-up failed, or the source restarted after a gap.
    Error,
}

impl CloseReason {
    pub const ALL: [CloseReason; 6] = [
        CloseReason::Client,
        CloseReason::SlowConsumer,
        CloseReason::AuthExpired,
        CloseReason::Shutdown,
        CloseReason::Admin,
        CloseReason::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Client => "client",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::AuthExpired => "auth_expired",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Admin => "admin",
            CloseReason::Error => "error",
        }
    }
}

/// How a resuming connection caught up (`path` of `mongo_sse_resumes_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumePath {
    /// From the in-memory ring.
    Ring,
    /// Through a catch-up (change stream or polling query).
    CatchUp,
    /// Impossible exactly: a `gap` event was sent.
    Gap,
}

impl ResumePath {
    pub fn as_str(self) -> &'static str {
        match self {
            ResumePath::Ring => "ring",
            ResumePath::CatchUp => "catch_up",
            ResumePath::Gap => "gap",
        }
    }
}

/// Refusals by limit, as `crate::limits::LimitStats` counts them (sampled at scrape).
#[derive(Debug, Default, Clone, Copy)]
pub struct LimitCounts {
    pub connections: u64,
    pub connections_per_subject: u64,
    pub rate_per_ip: u64,
    pub rate_per_subject: u64,
    pub url_bytes: u64,
    pub header_bytes: u64,
}

/// What `/metrics` samples when scraped.
#[derive(Debug, Default, Clone, Copy)]
pub struct Sample {
    pub catchups_running: usize,
    pub catchups_queued: usize,
    pub backlogs_running: usize,
    pub limits: LimitCounts,
    /// Seconds between the oldest position held by a connected client and the oplog's first
    /// entry; `None` when the oplog cannot be read.
    pub headroom_secs: Option<f64>,
    /// Seconds between the oplog's first entry and now; `None` when it cannot be read.
    pub oplog_window_secs: Option<f64>,
}

pub struct Metrics {
    registry: Registry,
    connections_open: IntGauge,
    connections_opened: IntCounter,
    connections_closed: IntCounterVec,
    events_in: IntCounterVec,
    deliveries: IntCounter,
    bytes_out: IntCounter,
    fanout_latency: Histogram,
    watcher_lag: Gauge,
    mode: IntGaugeVec,
    mode_switches: IntCounter,
    resumes: IntCounterVec,
    auth_failures: IntCounterVec,
    limit_rejections: IntCounterVec,
    catchups_running: IntGauge,
    catchups_queued: IntGauge,
    backlogs_running: IntGauge,
    resume_headroom: Gauge,
    oplog_window: Gauge,
    /// Serializes sampling, so two concurrent scrapes cannot add a delta twice.
    sampling: Mutex<()>,
    /// The "oplog not readable" line is logged once.
    oplog_warned: AtomicBool,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// Fan-out latency buckets, in seconds: from a fast local fan-out to a poll interval.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let name = |n: &str| format!("mongo_sse_{n}");
        // Registering fresh metrics with unique names in a fresh registry cannot fail; the
        // `expect`s document that, they do not handle input.
        macro_rules! reg {
            ($m:expr) => {{
                let m = $m.expect("metric definition");
                registry
                    .register(Box::new(m.clone()))
                    .expect("unique metric name");
                m
            }};
        }
        let counter = |n: &str, h: &str| IntCounter::new(name(n), h);
        let counter_vec =
            |n: &str, h: &str, l: &str| IntCounterVec::new(Opts::new(name(n), h), &[l]);
        let gauge = |n: &str, h: &str| IntGauge::new(name(n), h);
        let m = Metrics {
            connections_open: reg!(gauge("connections_open", "Open SSE connections.")),
            connections_opened: reg!(counter(
                "connections_opened_total",
                "SSE connections opened (streams that started)."
            )),
            connections_closed: reg!(counter_vec(
                "connections_closed_total",
                "SSE connections closed, by reason.",
                "reason"
            )),
            events_in: reg!(counter_vec(
                "events_in_total",
                "Events received from MongoDB, by source collection.",
                "source"
            )),
            deliveries: reg!(counter(
                "deliveries_total",
                "Data events written to connections."
            )),
            bytes_out: reg!(counter(
                "bytes_out_total",
                "Bytes written to SSE connections."
            )),
            fanout_latency: reg!(Histogram::with_opts(
                HistogramOpts::new(
                    name("fanout_latency_seconds"),
                    "From the change event's MongoDB wallTime to the event written to a live connection."
                )
                .buckets(LATENCY_BUCKETS.to_vec())
            )),
            watcher_lag: reg!(Gauge::new(
                name("watcher_lag_seconds"),
                "Age of the latest change event (now minus its wallTime) when the watcher received it."
            )),
            mode: reg!(IntGaugeVec::new(
                Opts::new(
                    name("mode"),
                    "How the gateway is fed: 1 for the current mode, 0 for the other."
                ),
                &["mode"]
            )),
            mode_switches: reg!(counter(
                "mode_switches_total",
                "Switches between change streams and polling."
            )),
            resumes: reg!(counter_vec(
                "resumes_total",
                "Connections that resumed from a Last-Event-ID, by path.",
                "path"
            )),
            auth_failures: reg!(counter_vec(
                "auth_failures_total",
                "Requests refused by access control, by reason.",
                "reason"
            )),
            limit_rejections: reg!(counter_vec(
                "limit_rejections_total",
                "Requests refused by a limit, by limit.",
                "limit"
            )),
            catchups_running: reg!(gauge("catchups_running", "Catch-ups running.")),
            catchups_queued: reg!(gauge("catchups_queued", "Catch-ups waiting for a slot.")),
            backlogs_running: reg!(gauge("backlogs_running", "Backlogs querying or streaming.")),
            resume_headroom: reg!(Gauge::new(
                name("resume_headroom_seconds"),
                "Oldest position held by a connected client minus the oplog's first entry; a client reconnecting from a position older than the oplog gets a gap. -1 when the oplog cannot be read."
            )),
            oplog_window: reg!(Gauge::new(
                name("oplog_window_seconds"),
                "Now minus the oplog's first entry. -1 when the oplog cannot be read."
            )),
            registry,
            sampling: Mutex::new(()),
            oplog_warned: AtomicBool::new(false),
        };
        // Every label value exists from the start, so a rate() over it has a zero to start
        // from and a dashboard shows the series before the first occurrence.
        for r in CloseReason::ALL {
            m.connections_closed.with_label_values(&[r.as_str()]);
        }
        for p in [ResumePath::Ring, ResumePath::CatchUp, ResumePath::Gap] {
            m.resumes.with_label_values(&[p.as_str()]);
        }
        for mode in ["change_stream", "polling"] {
            m.mode.with_label_values(&[mode]);
        }
        m.resume_headroom.set(-1.0);
        m.oplog_window.set(-1.0);
        m
    }

    pub fn connection_opened(&self) {
        self.connections_opened.inc();
        self.connections_open.inc();
    }

    pub fn connection_closed(&self, reason: CloseReason) {
        self.connections_open.dec();
        self.connections_closed
            .with_label_values(&[reason.as_str()])
            .inc();
    }

    /// An event from MongoDB, of source collection `source` (a configured name: bounded).
    pub fn event_in(&self, source: &str, wall_time: Option<SystemTime>) {
        self.events_in.with_label_values(&[source]).inc();
        if let Some(age) = wall_time.and_then(age_secs) {
            self.watcher_lag.set(age);
        }
    }

    /// A data event written to a connection; live ones also measure the fan-out latency.
    pub fn delivered(&self, live_wall_time: Option<SystemTime>) {
        self.deliveries.inc();
        if let Some(age) = live_wall_time.and_then(age_secs) {
            self.fanout_latency.observe(age);
        }
    }

    pub fn bytes_out(&self, n: usize) {
        self.bytes_out.inc_by(n as u64);
    }

    /// The source runs in `mode` (`Mode::name()`); `switched` when it changed kind.
    pub fn mode(&self, mode: &'static str, switched: bool) {
        for m in ["change_stream", "polling"] {
            self.mode.with_label_values(&[m]).set(i64::from(m == mode));
        }
        if switched {
            self.mode_switches.inc();
        }
    }

    pub fn resumed(&self, path: ResumePath) {
        self.resumes.with_label_values(&[path.as_str()]).inc();
    }

    /// A refusal by access control; `reason` is the error code (a fixed set).
    pub fn auth_failed(&self, reason: &'static str) {
        self.auth_failures.with_label_values(&[reason]).inc();
    }

    /// A refusal by a limit counted here rather than in `LimitStats` (the catch-up queue,
    /// channels per connection).
    pub fn limit_rejected(&self, limit: &'static str) {
        self.limit_rejections.with_label_values(&[limit]).inc();
    }

    /// Counts a refused stream request by its error code, where access control or a limit
    /// refused it (the limits in `crate::limits` count themselves; see [`Sample`]).
    pub fn refused(&self, status: u16, code: &'static str) {
        match (status, code) {
            (401 | 403, _) => self.auth_failed(code),
            (_, "catchup_busy") => self.limit_rejected("catchup_queue"),
            (_, "too_many_channels") => self.limit_rejected("channels_per_connection"),
            _ => {}
        }
    }

    /// Logs, once per process lifetime of this registry, that the oplog cannot be read.
    pub fn oplog_unreadable(&self, why: &str) {
        if !self.oplog_warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "cannot read local.oplog.rs ({why}): mongo_sse_resume_headroom_seconds is -1; grant read on `local` to see how close reconnecting clients are to a gap"
            );
        }
    }

    /// The text exposition, after updating the sampled values.
    pub fn render(&self, sample: &Sample) -> String {
        {
            let _one = self.sampling.lock().unwrap_or_else(|p| p.into_inner());
            self.catchups_running.set(sample.catchups_running as i64);
            self.catchups_queued.set(sample.catchups_queued as i64);
            self.backlogs_running.set(sample.backlogs_running as i64);
            self.resume_headroom
                .set(sample.headroom_secs.unwrap_or(-1.0));
            self.oplog_window
                .set(sample.oplog_window_secs.unwrap_or(-1.0));
            let l = sample.limits;
            for (limit, total) in [
                ("connections", l.connections),
                ("connections_per_subject", l.connections_per_subject),
                ("rate_per_ip", l.rate_per_ip),
                ("rate_per_subject", l.rate_per_subject),
                ("url_bytes", l.url_bytes),
                ("header_bytes", l.header_bytes),
            ] {
                let c = self.limit_rejections.with_label_values(&[limit]);
                c.inc_by(total.saturating_sub(c.get()));
            }
        }
        let mut out = Vec::new();
        // Encoding into a Vec fails only for a metric family without metrics, which the
        // registry does not produce.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!("encoding metrics: {e}");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// Seconds since `t` (0 for a clock a little ahead of ours).
fn age_secs(t: SystemTime) -> Option<f64> {
    Some(
        SystemTime::now()
            .duration_since(t)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0),
    )
}

/// `Content-Type` of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_conventions_and_labels_exist_from_the_start() {
        let m = Metrics::new();
        m.connection_opened();
        m.connection_closed(CloseReason::SlowConsumer);
        m.event_in("logs", Some(SystemTime::now()));
        m.delivered(Some(SystemTime::now()));
        m.mode("polling", true);
        let text = m.render(&Sample::default());
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("mongo_sse_"), "{line}");
        }
        assert!(text.contains("mongo_sse_connections_closed_total{reason=\"slow_consumer\"} 1"));
        assert!(text.contains("mongo_sse_connections_closed_total{reason=\"admin\"} 0"));
        assert!(text.contains("mongo_sse_mode{mode=\"polling\"} 1"));
        assert!(text.contains("mongo_sse_mode{mode=\"change_stream\"} 0"));
        assert!(text.contains("mongo_sse_fanout_latency_seconds_count 1"));
        assert!(text.contains("mongo_sse_resume_headroom_seconds -1"));
    }

    #[test]
    fn sampled_limit_counters_only_move_forward() {
        let m = Metrics::new();
        let mut s = Sample::default();
        s.limits.rate_per_ip = 3;
        m.render(&s);
        let text = m.render(&s);
        assert!(text.contains("mongo_sse_limit_rejections_total{limit=\"rate_per_ip\"} 3"));
    }
}
