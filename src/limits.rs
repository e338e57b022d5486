//! Limits that keep one client, one subject or one burst of reconnects from taking the
//! gateway down: connections in total and per subject (held for a stream's lifetime), new
//! connections per second per client IP and per subject (token buckets, via governor's GCRA),
//! and request URL and header sizes.
//!
//! Over a count or rate limit the answer is 429 with `Retry-After`; over a size limit, 414 or
//! 431. Every refusal is counted in [`LimitStats`] for the metrics endpoint.
//!
//! The client IP is the TCP peer address. Behind a reverse proxy every client shares the
//! proxy's address: raise `SSE_CONNECT_RATE_PER_IP` (or set it to 0) there; forwarded headers
//! are not trusted, since any client can send them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::HttpRequest;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::http::error::ApiError;

/// Defaults, documented in the README. `SSE_MAX_CONNECTIONS` has none of its own: unset, it
/// is derived from the open-file limit ([`connection_cap`]); this is the fallback when that
/// limit cannot be read.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
pub const DEFAULT_MAX_CONNECTIONS_PER_SUBJECT: usize = 16;
pub const DEFAULT_CONNECT_RATE_PER_IP: u32 = 50;
pub const DEFAULT_CONNECT_BURST_PER_IP: u32 = 500;
pub const DEFAULT_CONNECT_RATE_PER_SUBJECT: u32 = 5;
pub const DEFAULT_CONNECT_BURST_PER_SUBJECT: u32 = 20;
pub const DEFAULT_MAX_URL_BYTES: usize = 8 * 1024;
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;

/// actix-web answers heads over 128 KiB itself (a bodyless 431), so ours must stay below.
pub const MAX_HEADER_BYTES_LIMIT: usize = 64 * 1024;

/// File descriptors needed besides the client connections: MongoDB pools (the watcher's and
/// each catch-up's), the listener, logs, the runtime.
pub const FD_RESERVE: u64 = 256;

/// Retry-After for a full connection table: a few seconds lets closing tabs free slots.
const FULL_RETRY_AFTER_SECS: u64 = 5;

/// Keyed buckets are pruned of idle keys when they hold more than this many.
const PRUNE_ABOVE: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    /// `SSE_MAX_CONNECTIONS`: open streams in total. Unset, [`apply_open_file_limit`]
    /// derives it from the open-file limit at start (until then it holds
    /// [`DEFAULT_MAX_CONNECTIONS`]).
    pub max_connections: usize,
    /// Whether `SSE_MAX_CONNECTIONS` was set (an explicit cap is kept as it is).
    pub max_connections_set: bool,
    /// `SSE_MAX_CONNECTIONS_PER_SUBJECT`: open streams per token subject.
    pub max_connections_per_subject: usize,
    /// `SSE_CONNECT_RATE_PER_IP` (per second; 0 disables) and `SSE_CONNECT_BURST_PER_IP`.
    pub connect_rate_per_ip: u32,
    pub connect_burst_per_ip: u32,
    /// `SSE_CONNECT_RATE_PER_SUBJECT` (per second; 0 disables) and
    /// `SSE_CONNECT_BURST_PER_SUBJECT`.
    pub connect_rate_per_subject: u32,
    pub connect_burst_per_subject: u32,
    /// `SSE_MAX_URL_BYTES`: request target (path and query).
    pub max_url_bytes: usize,
    /// `SSE_MAX_HEADER_BYTES`: all header names and values together.
    pub max_header_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_set: false,
            max_connections_per_subject: DEFAULT_MAX_CONNECTIONS_PER_SUBJECT,
            connect_rate_per_ip: DEFAULT_CONNECT_RATE_PER_IP,
            connect_burst_per_ip: DEFAULT_CONNECT_BURST_PER_IP,
            connect_rate_per_subject: DEFAULT_CONNECT_RATE_PER_SUBJECT,
            connect_burst_per_subject: DEFAULT_CONNECT_BURST_PER_SUBJECT,
            max_url_bytes: DEFAULT_MAX_URL_BYTES,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
        }
    }
}

/// Refusals, by limit.
#[derive(Debug, Default)]
pub struct LimitStats {
    pub refused_connections: AtomicU64,
    pub refused_connections_per_subject: AtomicU64,
    pub refused_rate_per_ip: AtomicU64,
    pub refused_rate_per_subject: AtomicU64,
    pub refused_url_too_long: AtomicU64,
    pub refused_headers_too_large: AtomicU64,
}

/// Which limit refused a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitError {
    Connections { max: usize },
    ConnectionsPerSubject { max: usize },
    RatePerIp { retry_after: Duration },
    RatePerSubject { retry_after: Duration },
    UrlTooLong { len: usize, max: usize },
    HeadersTooLarge { len: usize, max: usize },
}

fn ceil_secs(d: Duration) -> u64 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    s.max(1)
}

impl From<LimitError> for ApiError {
    fn from(e: LimitError) -> ApiError {
        match e {
            LimitError::Connections { max } => ApiError::too_many_requests(
                "too_many_connections",
                format!("this gateway serves at most {max} streams (SSE_MAX_CONNECTIONS); retry shortly"),
                FULL_RETRY_AFTER_SECS,
            ),
            LimitError::ConnectionsPerSubject { max } => ApiError::too_many_requests(
                "too_many_connections_for_subject",
                format!(
                    "at most {max} streams per subject (SSE_MAX_CONNECTIONS_PER_SUBJECT); close one or share one connection across channels"
                ),
                FULL_RETRY_AFTER_SECS,
            ),
            LimitError::RatePerIp { retry_after } => ApiError::too_many_requests(
                "rate_limited",
                "too many new connections from this address (SSE_CONNECT_RATE_PER_IP)",
                ceil_secs(retry_after),
            ),
            LimitError::RatePerSubject { retry_after } => ApiError::too_many_requests(
                "rate_limited",
                "too many new connections for this subject (SSE_CONNECT_RATE_PER_SUBJECT)",
                ceil_secs(retry_after),
            ),
            LimitError::UrlTooLong { len, max } => ApiError::new(
                StatusCode::URI_TOO_LONG,
                "url_too_long",
                format!("the URL is {len} bytes, at most {max} are accepted (SSE_MAX_URL_BYTES)"),
            ),
            LimitError::HeadersTooLarge { len, max } => ApiError::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
                format!(
                    "the request headers are {len} bytes, at most {max} are accepted (SSE_MAX_HEADER_BYTES)"
                ),
            ),
        }
    }
}

/// A token bucket per key; `None` when the rate is 0 (disabled).
struct Buckets<K: std::hash::Hash + Eq + Clone> {
    limiter: Option<DefaultKeyedRateLimiter<K>>,
}

impl<K: std::hash::Hash + Eq + Clone> Buckets<K> {
    fn new(rate: u32, burst: u32) -> Self {
        let limiter = NonZeroU32::new(rate).map(|r| {
            let burst = NonZeroU32::new(burst).unwrap_or(r);
            DefaultKeyedRateLimiter::keyed(Quota::per_second(r).allow_burst(burst))
        });
        Buckets { limiter }
    }

    /// Takes a token, or says how long until one is available.
    fn take(&self, key: &K) -> Result<(), Duration> {
        let Some(l) = &self.limiter else {
            return Ok(());
        };
        if l.len() > PRUNE_ABOVE {
            // Keys whose bucket is full again carry no information: drop them.
            l.retain_recent();
        }
        l.check_key(key)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

pub struct Limits {
    cfg: LimitsConfig,
    open: AtomicUsize,
    per_subject: Mutex<HashMap<Arc<str>, usize>>,
    per_ip_rate: Buckets<IpAddr>,
    per_subject_rate: Buckets<Arc<str>>,
    pub stats: LimitStats,
}

/// One open stream's share of the connection limits, released on drop.
pub struct ConnectionPermit {
    limits: Arc<Limits>,
    subject: Option<Arc<str>>,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.limits.open.fetch_sub(1, Ordering::AcqRel);
        if let Some(s) = &self.subject {
            let mut m = self.limits.subjects();
            if let Some(n) = m.get_mut(s) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    m.remove(s);
                }
            }
        }
    }
}

impl Limits {
    pub fn new(cfg: LimitsConfig) -> Arc<Limits> {
        Arc::new(Limits {
            per_ip_rate: Buckets::new(cfg.connect_rate_per_ip, cfg.connect_burst_per_ip),
            per_subject_rate: Buckets::new(
                cfg.connect_rate_per_subject,
                cfg.connect_burst_per_subject,
            ),
            cfg,
            open: AtomicUsize::new(0),
            per_subject: Mutex::new(HashMap::new()),
            stats: LimitStats::default(),
        })
    }

    pub fn config(&self) -> &LimitsConfig {
        &self.cfg
    }

    fn subjects(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, usize>> {
        // Nothing panics under this lock; a poisoned map is still a valid map.
        self.per_subject.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Open streams right now.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// A new connection from `ip`.
    pub fn rate_ip(&self, ip: IpAddr) -> Result<(), LimitError> {
        self.per_ip_rate.take(&ip).map_err(|retry_after| {
            Self::count(&self.stats.refused_rate_per_ip);
            LimitError::RatePerIp { retry_after }
        })
    }

    /// A new connection for `subject`.
    pub fn rate_subject(&self, subject: &Arc<str>) -> Result<(), LimitError> {
        self.per_subject_rate.take(subject).map_err(|retry_after| {
            Self::count(&self.stats.refused_rate_per_subject);
            LimitError::RatePerSubject { retry_after }
        })
    }

    /// Reserves a place for one stream, in total and for `subject`.
    pub fn acquire(
        self: &Arc<Self>,
        subject: Option<&Arc<str>>,
    ) -> Result<ConnectionPermit, LimitError> {
        let max = self.cfg.max_connections;
        if self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_err()
        {
            Self::count(&self.stats.refused_connections);
            return Err(LimitError::Connections { max });
        }
        // From here on, the permit's drop gives the place back on every path.
        let mut permit = ConnectionPermit {
            limits: Arc::clone(self),
            subject: None,
        };
        if let Some(s) = subject {
            let max = self.cfg.max_connections_per_subject;
            let mut m = self.subjects();
            let n = m.entry(Arc::clone(s)).or_insert(0);
            if *n >= max {
                if *n == 0 {
                    m.remove(s);
                }
                drop(m);
                Self::count(&self.stats.refused_connections_per_subject);
                return Err(LimitError::ConnectionsPerSubject { max });
            }
            *n += 1;
            permit.subject = Some(Arc::clone(s));
        }
        Ok(permit)
    }

    /// URL and header sizes.
    pub fn check_sizes(&self, req: &HttpRequest) -> Result<(), LimitError> {
        let uri = req.uri();
        let len = uri.path_and_query().map_or(0, |pq| pq.as_str().len())
            + uri.authority().map_or(0, |a| a.as_str().len());
        if len > self.cfg.max_url_bytes {
            Self::count(&self.stats.refused_url_too_long);
            return Err(LimitError::UrlTooLong {
                len,
                max: self.cfg.max_url_bytes,
            });
        }
        // As on the wire: "name: value\r\n".
        let len: usize = req
            .headers()
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum();
        if len > self.cfg.max_header_bytes {
            Self::count(&self.stats.refused_headers_too_large);
            return Err(LimitError::HeadersTooLarge {
                len,
                max: self.cfg.max_header_bytes,
            });
        }
        Ok(())
    }
}

/// Descriptors one SSE connection holds: its socket, no more (`http::peer` watches it and
/// closes it by that descriptor).
pub const FDS_PER_CONNECTION: u64 = 1;

/// The connection cap derived from the open-file limit never exceeds this when
/// `SSE_MAX_CONNECTIONS` is unset: beyond it memory, not descriptors, is what runs out first,
/// and a cap that high should be a decision (set it explicitly).
pub const DERIVED_MAX_CONNECTIONS_CEILING: usize = 100_000;

/// The process's open-file limit (`RLIMIT_NOFILE`); `u64::MAX` stands for unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    /// The soft limit found at start.
    pub before: u64,
    /// The soft limit now (after [`raise_open_files`]).
    pub soft: u64,
    pub hard: u64,
}

#[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux, not everywhere
fn rlim(n: libc::rlim_t) -> u64 {
    if n == libc::RLIM_INFINITY {
        u64::MAX
    } else {
        n as u64
    }
}

/// Raises the soft open-file limit to the hard one (any process may), so that the
/// connection cap can be derived from the most this process is allowed. If the kernel
/// refuses (an unlimited hard limit above what it supports, for one), the soft limit stays.
pub fn raise_open_files() -> std::io::Result<OpenFiles> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct through a valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let before = rlim(lim.rlim_cur);
    let hard = rlim(lim.rlim_max);
    let mut soft = before;
    if lim.rlim_cur != lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads one rlimit struct through a valid pointer.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            soft = hard;
        }
    }
    Ok(OpenFiles { before, soft, hard })
}

/// Streams that `open_files` descriptors carry once [`FD_RESERVE`] is kept aside for
/// MongoDB connections, the listener, logs and the runtime.
pub fn connections_within(open_files: u64) -> usize {
    let n = open_files.saturating_sub(FD_RESERVE) / FDS_PER_CONNECTION;
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// What the connection cap is, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionCap {
    /// The cap in force (`SSE_MAX_CONNECTIONS`, or derived).
    pub max_connections: usize,
    /// Streams the open-file limit carries (`None`: the limit could not be read).
    pub fits: Option<usize>,
    /// Whether `SSE_MAX_CONNECTIONS` was set.
    pub explicit: bool,
    /// Set when an explicit cap is above what the limit carries, or the limit is unreadable.
    pub warning: Option<String>,
}

/// The rule: with `SSE_MAX_CONNECTIONS` unset the cap is what the (raised) soft open-file
/// limit carries, `(soft - FD_RESERVE) / FDS_PER_CONNECTION`, at most
/// [`DERIVED_MAX_CONNECTIONS_CEILING`] and at least 1 — no warning, whatever the machine. An
/// explicit value is kept, with a warning when the limit cannot carry it.
pub fn connection_cap(
    explicit: Option<usize>,
    limit: &std::io::Result<OpenFiles>,
) -> ConnectionCap {
    let fits = limit.as_ref().ok().map(|l| connections_within(l.soft));
    match (explicit, limit) {
        (Some(n), Ok(l)) => {
            let needed = (n as u64).saturating_mul(FDS_PER_CONNECTION).saturating_add(FD_RESERVE);
            let warning = (needed > l.soft).then(|| {
                format!(
                    "the open-file limit (RLIMIT_NOFILE) is {} (hard {}), but SSE_MAX_CONNECTIONS={n} needs about {needed}: \
                     connections beyond {} will fail to be accepted. Raise the limit (ulimit -n, LimitNOFILE=) or lower \
                     SSE_MAX_CONNECTIONS (unset, it is derived from the limit)",
                    show_limit(l.soft),
                    show_limit(l.hard),
                    connections_within(l.soft),
                )
            });
            ConnectionCap {
                max_connections: n,
                fits,
                explicit: true,
                warning,
            }
        }
        (Some(n), Err(e)) => ConnectionCap {
            max_connections: n,
            fits,
            explicit: true,
            warning: Some(format!(
                "cannot read the open-file limit (RLIMIT_NOFILE): {e}; SSE_MAX_CONNECTIONS={n} needs about {}",
                (n as u64).saturating_mul(FDS_PER_CONNECTION).saturating_add(FD_RESERVE)
            )),
        },
        (None, Ok(l)) => ConnectionCap {
            max_connections: connections_within(l.soft).clamp(1, DERIVED_MAX_CONNECTIONS_CEILING),
            fits,
            explicit: false,
            warning: None,
        },
        (None, Err(e)) => ConnectionCap {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            fits,
            explicit: false,
            warning: Some(format!(
                "cannot read the open-file limit (RLIMIT_NOFILE): {e}; capping streams at {DEFAULT_MAX_CONNECTIONS} \
                 (set SSE_MAX_CONNECTIONS to choose)"
            )),
        },
    }
}

/// A limit for messages: a number, or `unlimited`.
pub fn show_limit(n: u64) -> String {
    if n == u64::MAX {
        "unlimited".to_owned()
    } else {
        n.to_string()
    }
}

/// At start: raises the soft open-file limit and settles `cfg.max_connections` by
/// [`connection_cap`]. Logs what it did; returns the decision.
pub fn apply_open_file_limit(cfg: &mut LimitsConfig) -> ConnectionCap {
    let limit = raise_open_files();
    if let Ok(l) = &limit {
        if l.soft != l.before {
            tracing::info!(
                from = %show_limit(l.before),
                to = %show_limit(l.soft),
                "raised the open-file limit to the hard limit"
            );
        }
    }
    let cap = connection_cap(
        cfg.max_connections_set.then_some(cfg.max_connections),
        &limit,
    );
    cfg.max_connections = cap.max_connections;
    match &cap.warning {
        Some(w) => tracing::warn!("{w}"),
        None if !cap.explicit => tracing::info!(
            max_connections = cap.max_connections,
            "SSE_MAX_CONNECTIONS unset: derived from the open-file limit"
        ),
        None => {}
    }
    cap
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn limits(f: impl FnOnce(&mut LimitsConfig)) -> Arc<Limits> {
        let mut cfg = LimitsConfig::default();
        f(&mut cfg);
        Limits::new(cfg)
    }

    #[test]
    fn connection_permits_are_counted_and_released() {
        let l = limits(|c| {
            c.max_connections = 3;
            c.max_connections_per_subject = 2;
        });
        let a: Arc<str> = Arc::from("a");
        let b: Arc<str> = Arc::from("b");
        let p1 = l.acquire(Some(&a)).unwrap();
        let _p2 = l.acquire(Some(&a)).unwrap();
        assert_eq!(
            l.acquire(Some(&a)).err(),
            Some(LimitError::ConnectionsPerSubject { max: 2 })
        );
        assert_eq!(l.open_connections(), 2);
        let _p3 = l.acquire(Some(&b)).unwrap();
        assert_eq!(
            l.acquire(None).err(),
            Some(LimitError::Connections { max: 3 })
        );
        drop(p1);
        assert_eq!(l.open_connections(), 2);
        let _p4 = l.acquire(Some(&a)).unwrap();
        assert_eq!(Stats(&l).get(), (1, 1));
    }

    struct Stats<'a>(&'a Limits);
    impl Stats<'_> {
        fn get(&self) -> (u64, u64) {
            (
                self.0.stats.refused_connections.load(Ordering::Relaxed),
                self.0
                    .stats
                    .refused_connections_per_subject
                    .load(Ordering::Relaxed),
            )
        }
    }

    #[test]
    fn subjects_are_forgotten_when_their_last_stream_ends() {
        let l = limits(|_| {});
        let a: Arc<str> = Arc::from("a");
        let p = l.acquire(Some(&a)).unwrap();
        assert_eq!(l.subjects().len(), 1);
        drop(p);
        assert!(l.subjects().is_empty());
        let l = limits(|c| c.max_connections_per_subject = 0);
        assert!(l.acquire(Some(&a)).is_err());
        assert!(l.subjects().is_empty());
        assert_eq!(l.open_connections(), 0);
    }

    #[test]
    fn token_buckets_refuse_bursts_with_a_retry_after() {
        let l = limits(|c| {
            c.connect_rate_per_ip = 1;
            c.connect_burst_per_ip = 3;
            c.connect_rate_per_subject = 0;
        });
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..3 {
            l.rate_ip(ip).unwrap();
        }
        let e = l.rate_ip(ip).unwrap_err();
        let LimitError::RatePerIp { retry_after } = e else {
            panic!("{e:?}")
        };
        assert!(retry_after <= Duration::from_secs(1));
        let api = ApiError::from(LimitError::RatePerIp { retry_after });
        assert_eq!(api.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(api.retry_after_secs, Some(1));
        // Another address has its own bucket; a disabled rate never refuses.
        l.rate_ip("::1".parse().unwrap()).unwrap();
        let s: Arc<str> = Arc::from("s");
        for _ in 0..1000 {
            l.rate_subject(&s).unwrap();
        }
    }

    #[test]
    fn sizes() {
        let l = limits(|c| {
            c.max_url_bytes = 20;
            c.max_header_bytes = 40;
        });
        let ok = TestRequest::default()
            .uri("/v1/stream?a=b")
            .to_http_request();
        assert!(l.check_sizes(&ok).is_ok());
        let long = TestRequest::default()
            .uri("/v1/stream?channel=abcdef")
            .to_http_request();
        let e = ApiError::from(l.check_sizes(&long).unwrap_err());
        assert_eq!(e.status, StatusCode::URI_TOO_LONG);
        let big = TestRequest::default()
            .insert_header(("x-big", "y".repeat(40)))
            .to_http_request();
        let e = ApiError::from(l.check_sizes(&big).unwrap_err());
        assert_eq!(e.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }

    #[test]
    fn open_files() {
        let l = raise_open_files().unwrap();
        assert!(l.soft >= l.before && l.soft <= l.hard, "{l:?}");
        // Raising again changes nothing.
        assert_eq!(raise_open_files().unwrap().soft, l.soft);
    }

    #[test]
    fn connection_cap_rule() {
        let lim = |soft: u64, hard: u64| -> std::io::Result<OpenFiles> {
            Ok(OpenFiles {
                before: soft,
                soft,
                hard,
            })
        };
        // Unset: derived, never a warning.
        let c = connection_cap(None, &lim(1024, 1024));
        assert_eq!(c.max_connections, 1024 - 256);
        assert_eq!((c.warning, c.explicit), (None, false));
        assert_eq!(connection_cap(None, &lim(100, 100)).max_connections, 1);
        let c = connection_cap(None, &lim(u64::MAX, u64::MAX));
        assert_eq!(c.max_connections, DERIVED_MAX_CONNECTIONS_CEILING);
        assert_eq!(c.warning, None);
        // Explicit and within the limit: kept, no warning; above it: kept, with a warning.
        let c = connection_cap(Some(256), &lim(1024, 4096));
        assert_eq!((c.max_connections, c.warning), (256, None));
        let c = connection_cap(Some(10_000), &lim(1024, 4096));
        assert_eq!(c.max_connections, 10_000);
        let w = c.warning.unwrap();
        assert!(
            w.contains("SSE_MAX_CONNECTIONS=10000") && w.contains("1024"),
            "{w}"
        );
        // Unreadable: the old default, with a warning.
        let e = Err(std::io::Error::other("nope"));
        let c = connection_cap(None, &e);
        assert_eq!(c.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert!(c.warning.is_some());
    }

    #[test]
    fn applying_the_limit_settles_the_cap() {
        let mut cfg = LimitsConfig::default();
        let cap = apply_open_file_limit(&mut cfg);
        assert_eq!(cap.warning, None, "a default start never warns");
        assert_eq!(cfg.max_connections, cap.max_connections);
        assert!(cfg.max_connections >= 1);
        let mut cfg = LimitsConfig {
            max_connections: 7,
            max_connections_set: true,
            ..LimitsConfig::default()
        };
        apply_open_file_limit(&mut cfg);
        assert_eq!(cfg.max_connections, 7);
    }
}
