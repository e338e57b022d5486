//! Configuration from the environment, validated once at start.
//!
//! Every setting is an environment variable with a default, except `SSE_AUTH`: running without
//! access control must be a decision, not an accident, so it has to be spelled out. A bad value
//! stops the process with `invalid <VAR>: <why>` (exit status 2) instead of surfacing later as
//! a confusing runtime failure.
//!
//! envy collects the variables, but every field is read as a string and parsed here: envy's
//! own type errors do not always name the variable (an unknown enum variant, for instance), and
//! the operator needs to know which variable to fix. Unknown `SSE_*` variables are ignored here;
//! the caller may warn about them.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::auth::admin::AdminToken;
use crate::auth::jwt::{JwtConfig, JwtVars, DEFAULT_LEEWAY_SECS};
use crate::http::cors::CorsOrigins;
use crate::limits::{self, LimitsConfig};
use crate::logs::LogFormat;
use crate::routing::{SourceSpecs, DEFAULT_EVENTS_COLLECTION, DEFAULT_SOURCES};
use crate::source::supervisor::{SourceConfig, SourceMode};

pub const DEFAULT_MONGODB_URI: &str = "mongodb://127.0.0.1:27017/?directConnection=true";
pub const DEFAULT_MONGODB_DB: &str = "datashop";
pub const DEFAULT_BIND: &str = "127.0.0.1:8080";

const MIB: u64 = 1024 * 1024;
/// `SSE_HISTORY_BYTES`: 64 MiB keeps the 10 000 default events of ordinary log lines (a few
/// KiB each) and bounds the ring when the documents are large.
pub const DEFAULT_HISTORY_BYTES: u64 = 64 * MIB;
/// `SSE_QUEUE_BYTES`: 8 MiB is far above what 1024 ordinary log lines weigh, so it only binds
/// for large documents, where it is several seconds of a slow browser's download and one
/// second of a fast one's; beyond that a stuck reader would pin memory for nothing, while a
/// disconnect costs it only a resume from the ring.
pub const DEFAULT_QUEUE_BYTES: u64 = 8 * MIB;
/// Upper bound of the byte budgets (64 GiB): anything above is a typo, not a plan.
const MAX_BUDGET_BYTES: u64 = 64 * 1024 * MIB;

/// How subscribers are authorized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Bearer JWTs grant channels.
    Jwt,
    /// No access control: anyone can subscribe to anything.
    None,
}

/// Validated configuration.
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    /// `MONGODB_URI`. May contain credentials: log [`Config::redacted_uri`] instead.
    pub mongodb_uri: String,
    /// `MONGODB_DB`: the database whose collections are watched.
    pub mongodb_db: String,
    /// `SSE_BIND`: HTTP listen address.
    pub bind: SocketAddr,
    /// `SSE_SOURCES`: watched collections and their routing.
    pub sources: SourceSpecs,
    /// `SSE_HEARTBEAT_SECS`: interval of comment frames on idle streams.
    pub heartbeat: Duration,
    /// `SSE_RETRY_MS`: reconnection delay announced to browsers (`retry:`).
    pub retry_ms: u64,
    /// `SSE_QUEUE_LEN`: events buffered per connection before it counts as too slow.
    pub queue_len: usize,
    /// `SSE_QUEUE_BYTES`: bytes of events buffered per connection before it counts as too
    /// slow (an event alone larger than this is still delivered to a connection that has
    /// nothing else waiting).
    pub queue_bytes: usize,
    /// `SSE_HISTORY_EVENTS`: capacity of the in-memory history ring (0 disables it).
    pub history_events: usize,
    /// `SSE_HISTORY_BYTES`: bytes of events the history ring keeps at most; an event larger
    /// than this is delivered live but not kept.
    pub history_bytes: usize,
    /// `SSE_MAX_CHANNELS`: channels one connection may subscribe to.
    pub max_channels: usize,
    /// `SSE_CATCHUP_CONCURRENCY`: catch-up change streams open at once.
    pub catchup_concurrency: usize,
    /// `SSE_CATCHUP_QUEUE`: catch-ups that may wait for a slot before new ones get 503.
    pub catchup_queue: usize,
    /// `SSE_CATCHUP_STALL_SECS`: how long a catch-up waits for its reader before it gives
    /// up its slot and the connection ends (the client resumes).
    pub catchup_stall: Duration,
    /// `SSE_BACKLOG_CONCURRENCY`: `?backlog=` queries and streams running at once; more wait
    /// in a line of `SSE_CATCHUP_QUEUE`, beyond which new ones get `backlog_busy`.
    pub backlog_concurrency: usize,
    /// `SSE_MODE`, `SSE_PROBE_INTERVAL_SECS`, `SSE_POLL_INTERVAL_MS`, `SSE_POLL_OVERLAP_MS`,
    /// `SSE_POLL_SETTLE_MS`.
    pub source: SourceConfig,
    /// `SSE_AUTH`.
    pub auth: AuthMode,
    /// `SSE_JWT_*`: how tokens are verified; set exactly when `auth` is `Jwt`.
    pub jwt: Option<JwtConfig>,
    /// `SSE_ALLOW_QUERY_TOKEN`: accept `?access_token=` (default false: URLs leak).
    pub allow_query_token: bool,
    /// `SSE_COOKIE_INSECURE`: session cookie without `Secure`, for local plain http.
    pub cookie_insecure: bool,
    /// `SSE_MAX_CONNECTIONS*`, `SSE_CONNECT_*`, `SSE_MAX_URL_BYTES`, `SSE_MAX_HEADER_BYTES`.
    pub limits: LimitsConfig,
    /// `SSE_CORS_ORIGINS`.
    pub cors_origins: CorsOrigins,
    /// `SSE_ADMIN_TOKEN` (kept as a digest only).
    pub admin_token: AdminToken,
    /// `SSE_EVENTS_COLLECTION`: where `POST /v1/publish` writes; always a source too (the
    /// last entry of `sources`).
    pub events_collection: String,
    /// `SSE_EVENTS_TTL_SECS`: how long published events are kept (the TTL index `migrate`
    /// creates).
    pub events_ttl_secs: u64,
    /// `SSE_METRICS_PUBLIC` (default true): `/metrics` without the admin token.
    pub metrics_public: bool,
    /// `SSE_LOG_FORMAT`: `text` (default) or `json`.
    pub log_format: LogFormat,
}

/// A variable that is missing or invalid. Displays as `invalid <VAR>: <message>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub var: String,
    pub message: String,
}

impl ConfigError {
    fn new(var: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            var: var.to_owned(),
            message: message.into(),
        }
    }

    /// Maps an envy error back to the variable it is about. envy names the field (the
    /// variable lowercased) in "missing value for field <f>" and "... provided by <f>".
    fn from_envy(e: envy::Error) -> ConfigError {
        match e {
            envy::Error::MissingValue(field) => {
                ConfigError::new(&field.to_ascii_uppercase(), "not set")
            }
            envy::Error::Custom(msg) => {
                if let Some((why, field)) = msg.rsplit_once(" provided by ") {
                    return ConfigError::new(&field.to_ascii_uppercase(), why);
                }
                // serde's own messages quote the field: "duplicate field `sse_auth`".
                let quoted = msg.split('`').nth(1).map(str::to_ascii_uppercase);
                match quoted {
                    Some(var) if VARS.contains(&var.as_str()) => ConfigError::new(&var, msg),
                    _ => ConfigError::new("environment", msg),
                }
            }
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {}: {}", self.var, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every variable this module reads.
pub const VARS: &[&str] = &[
    "MONGODB_URI",
    "MONGODB_DB",
    "SSE_BIND",
    "SSE_SOURCES",
    "SSE_HEARTBEAT_SECS",
    "SSE_RETRY_MS",
    "SSE_QUEUE_LEN",
    "SSE_QUEUE_BYTES",
    "SSE_HISTORY_EVENTS",
    "SSE_HISTORY_BYTES",
    "SSE_MAX_CHANNELS",
    "SSE_CATCHUP_CONCURRENCY",
    "SSE_CATCHUP_QUEUE",
    "SSE_CATCHUP_STALL_SECS",
    "SSE_BACKLOG_CONCURRENCY",
    "SSE_MODE",
    "SSE_PROBE_INTERVAL_SECS",
    "SSE_POLL_INTERVAL_MS",
    "SSE_POLL_OVERLAP_MS",
    "SSE_POLL_SETTLE_MS",
    "SSE_AUTH",
    "SSE_JWT_ALGORITHM",
    "SSE_JWT_SECRET",
    "SSE_JWT_PUBLIC_KEY_FILE",
    "SSE_JWT_LEEWAY_SECS",
    "SSE_JWT_ISSUER",
    "SSE_JWT_AUDIENCE",
    "SSE_ALLOW_QUERY_TOKEN",
    "SSE_COOKIE_INSECURE",
    "SSE_METRICS_PUBLIC",
    "SSE_LOG_FORMAT",
    "SSE_MAX_CONNECTIONS",
    "SSE_MAX_CONNECTIONS_PER_SUBJECT",
    "SSE_CONNECT_RATE_PER_IP",
    "SSE_CONNECT_BURST_PER_IP",
    "SSE_CONNECT_RATE_PER_SUBJECT",
    "SSE_CONNECT_BURST_PER_SUBJECT",
    "SSE_MAX_URL_BYTES",
    "SSE_MAX_HEADER_BYTES",
    "SSE_CORS_ORIGINS",
    "SSE_ADMIN_TOKEN",
    "SSE_EVENTS_COLLECTION",
    "SSE_EVENTS_TTL_SECS",
];

/// The variables as envy sees them (names lowercased), all as raw strings.
#[derive(Deserialize)]
struct Raw {
    mongodb_uri: Option<String>,
    mongodb_db: Option<String>,
    sse_bind: Option<String>,
    sse_sources: Option<String>,
    sse_heartbeat_secs: Option<String>,
    sse_retry_ms: Option<String>,
    sse_queue_len: Option<String>,
    sse_queue_bytes: Option<String>,
    sse_history_events: Option<String>,
    sse_history_bytes: Option<String>,
    sse_max_channels: Option<String>,
    sse_catchup_concurrency: Option<String>,
    sse_catchup_queue: Option<String>,
    sse_catchup_stall_secs: Option<String>,
    sse_backlog_concurrency: Option<String>,
    sse_mode: Option<String>,
    sse_probe_interval_secs: Option<String>,
    sse_poll_interval_ms: Option<String>,
    sse_poll_overlap_ms: Option<String>,
    sse_poll_settle_ms: Option<String>,
    sse_auth: Option<String>,
    sse_jwt_algorithm: Option<String>,
    sse_jwt_secret: Option<String>,
    sse_jwt_public_key_file: Option<String>,
    sse_jwt_leeway_secs: Option<String>,
    sse_jwt_issuer: Option<String>,
    sse_jwt_audience: Option<String>,
    sse_allow_query_token: Option<String>,
    sse_cookie_insecure: Option<String>,
    sse_max_connections: Option<String>,
    sse_max_connections_per_subject: Option<String>,
    sse_connect_rate_per_ip: Option<String>,
    sse_connect_burst_per_ip: Option<String>,
    sse_connect_rate_per_subject: Option<String>,
    sse_connect_burst_per_subject: Option<String>,
    sse_max_url_bytes: Option<String>,
    sse_max_header_bytes: Option<String>,
    sse_cors_origins: Option<String>,
    sse_admin_token: Option<String>,
    sse_events_collection: Option<String>,
    sse_events_ttl_secs: Option<String>,
    sse_metrics_public: Option<String>,
    sse_log_format: Option<String>,
}

fn int(var: &str, raw: Option<&str>, default: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
    let Some(s) = raw else { return Ok(default) };
    match s.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(ConfigError::new(
            var,
            format!("expected an integer from {min} to {max}, got {s:?}"),
        )),
    }
}

fn size(
    var: &str,
    raw: Option<&str>,
    default: u64,
    min: u64,
    max: u64,
) -> Result<usize, ConfigError> {
    let n = int(var, raw, default, min, max)?;
    usize::try_from(n).map_err(|_| ConfigError::new(var, "too large for this platform"))
}

fn boolean(var: &str, raw: Option<&str>) -> Result<bool, ConfigError> {
    match raw {
        None | Some("") | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some(other) => Err(ConfigError::new(
            var,
            format!("expected true or false, got {other:?}"),
        )),
    }
}

/// `SSE_LOG_FORMAT` alone: the binary reads it before anything else, to set up logging.
pub fn log_format(raw: Option<&str>) -> Result<LogFormat, ConfigError> {
    match raw {
        None | Some("") => Ok(LogFormat::Text),
        Some(s) => s
            .parse()
            .map_err(|why: String| ConfigError::new("SSE_LOG_FORMAT", why)),
    }
}

fn rate(var: &str, raw: Option<&str>, default: u32) -> Result<u32, ConfigError> {
    // Bounded well inside u32: a rate of 0 disables the bucket.
    int(var, raw, u64::from(default), 0, 1_000_000).map(|n| n as u32)
}

/// The access-control and limit settings, read together (`*` in `SSE_CORS_ORIGINS` depends
/// on `SSE_AUTH`).
struct Access {
    auth: AuthMode,
    jwt: Option<JwtConfig>,
    allow_query_token: bool,
    cookie_insecure: bool,
    limits: LimitsConfig,
    cors_origins: CorsOrigins,
    admin_token: AdminToken,
}

impl Access {
    fn from_raw(raw: &Raw) -> Result<Access, ConfigError> {
        let auth = auth(raw.sse_auth.as_deref())?;
        Ok(Access {
            auth,
            jwt: match auth {
                AuthMode::Jwt => Some(jwt(raw)?),
                AuthMode::None => None,
            },
            allow_query_token: boolean(
                "SSE_ALLOW_QUERY_TOKEN",
                raw.sse_allow_query_token.as_deref(),
            )?,
            cookie_insecure: boolean("SSE_COOKIE_INSECURE", raw.sse_cookie_insecure.as_deref())?,
            limits: limits(raw)?,
            cors_origins: CorsOrigins::parse(
                raw.sse_cors_origins.as_deref(),
                auth == AuthMode::Jwt,
            )
            .map_err(|why| ConfigError::new("SSE_CORS_ORIGINS", why))?,
            admin_token: AdminToken::parse(raw.sse_admin_token.as_deref())
                .map_err(|why| ConfigError::new("SSE_ADMIN_TOKEN", why))?,
        })
    }
}

/// The `SSE_JWT_*` variables, read only with `SSE_AUTH=jwt`.
fn jwt(raw: &Raw) -> Result<JwtConfig, ConfigError> {
    let leeway_secs = int(
        "SSE_JWT_LEEWAY_SECS",
        raw.sse_jwt_leeway_secs.as_deref(),
        DEFAULT_LEEWAY_SECS,
        0,
        600,
    )?;
    JwtConfig::from_vars(JwtVars {
        algorithm: raw.sse_jwt_algorithm.as_deref(),
        secret: raw.sse_jwt_secret.as_deref(),
        public_key_file: raw.sse_jwt_public_key_file.as_deref(),
        leeway_secs,
        issuer: raw.sse_jwt_issuer.as_deref(),
        audience: raw.sse_jwt_audience.as_deref(),
    })
    .map_err(|(var, why)| ConfigError::new(var, why))
}

fn limits(raw: &Raw) -> Result<LimitsConfig, ConfigError> {
    let burst_ip = rate(
        "SSE_CONNECT_BURST_PER_IP",
        raw.sse_connect_burst_per_ip.as_deref(),
        limits::DEFAULT_CONNECT_BURST_PER_IP,
    )?;
    let burst_subject = rate(
        "SSE_CONNECT_BURST_PER_SUBJECT",
        raw.sse_connect_burst_per_subject.as_deref(),
        limits::DEFAULT_CONNECT_BURST_PER_SUBJECT,
    )?;
    if burst_ip == 0 || burst_subject == 0 {
        let var = if burst_ip == 0 {
            "SSE_CONNECT_BURST_PER_IP"
        } else {
            "SSE_CONNECT_BURST_PER_SUBJECT"
        };
        return Err(ConfigError::new(
            var,
            "must be at least 1 (set the matching SSE_CONNECT_RATE_* to 0 to disable the limit)",
        ));
    }
    Ok(LimitsConfig {
        max_connections: size(
            "SSE_MAX_CONNECTIONS",
            raw.sse_max_connections.as_deref(),
            limits::DEFAULT_MAX_CONNECTIONS as u64,
            1,
            10_000_000,
        )?,
        max_connections_set: raw.sse_max_connections.is_some(),
        max_connections_per_subject: size(
            "SSE_MAX_CONNECTIONS_PER_SUBJECT",
            raw.sse_max_connections_per_subject.as_deref(),
            limits::DEFAULT_MAX_CONNECTIONS_PER_SUBJECT as u64,
            1,
            10_000_000,
        )?,
        connect_rate_per_ip: rate(
            "SSE_CONNECT_RATE_PER_IP",
            raw.sse_connect_rate_per_ip.as_deref(),
            limits::DEFAULT_CONNECT_RATE_PER_IP,
        )?,
        connect_burst_per_ip: burst_ip,
        connect_rate_per_subject: rate(
            "SSE_CONNECT_RATE_PER_SUBJECT",
            raw.sse_connect_rate_per_subject.as_deref(),
            limits::DEFAULT_CONNECT_RATE_PER_SUBJECT,
        )?,
        connect_burst_per_subject: burst_subject,
        max_url_bytes: size(
            "SSE_MAX_URL_BYTES",
            raw.sse_max_url_bytes.as_deref(),
            limits::DEFAULT_MAX_URL_BYTES as u64,
            256,
            limits::MAX_HEADER_BYTES_LIMIT as u64,
        )?,
        max_header_bytes: size(
            "SSE_MAX_HEADER_BYTES",
            raw.sse_max_header_bytes.as_deref(),
            limits::DEFAULT_MAX_HEADER_BYTES as u64,
            1024,
            limits::MAX_HEADER_BYTES_LIMIT as u64,
        )?,
    })
}

fn mongodb_uri(raw: Option<String>) -> Result<String, ConfigError> {
    let uri = raw.unwrap_or_else(|| DEFAULT_MONGODB_URI.to_owned());
    // The value is not echoed back: it may hold a password.
    if !(uri.starts_with("mongodb://") || uri.starts_with("mongodb+srv://")) {
        return Err(ConfigError::new(
            "MONGODB_URI",
            "must start with mongodb:// or mongodb+srv://",
        ));
    }
    Ok(uri)
}

/// MongoDB's database name rules (the stricter Windows set, so a name works everywhere).
fn mongodb_db(raw: Option<String>) -> Result<String, ConfigError> {
    let db = raw.unwrap_or_else(|| DEFAULT_MONGODB_DB.to_owned());
    if db.is_empty() {
        return Err(ConfigError::new("MONGODB_DB", "is empty"));
    }
    if db.len() >= 64 {
        return Err(ConfigError::new(
            "MONGODB_DB",
            format!(
                "{db:?} is {} bytes, database names are shorter than 64",
                db.len()
            ),
        ));
    }
    if let Some(c) = db.chars().find(|c| "/\\. \"$*<>:|?\0".contains(*c)) {
        return Err(ConfigError::new(
            "MONGODB_DB",
            format!("{db:?} contains {c:?}, which database names cannot contain"),
        ));
    }
    Ok(db)
}

fn auth(raw: Option<&str>) -> Result<AuthMode, ConfigError> {
    match raw {
        Some("jwt") => Ok(AuthMode::Jwt),
        Some("none") => Ok(AuthMode::None),
        Some(other) => Err(ConfigError::new(
            "SSE_AUTH",
            format!("expected \"jwt\" or \"none\", got {other:?}"),
        )),
        None => Err(ConfigError::new(
            "SSE_AUTH",
            "not set; choose explicitly: SSE_AUTH=jwt to require bearer tokens, \
             or SSE_AUTH=none to let anyone subscribe to any channel",
        )),
    }
}

impl Config {
    /// Reads the process environment. Variables that are not valid UTF-8 are skipped rather
    /// than aborting (`std::env::vars` would panic on them); one of ours being skipped then
    /// shows up as its default or, for `SSE_AUTH`, as "not set".
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_iter(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        )
    }

    /// Reads the given variables, e.g. in tests.
    #[allow(clippy::should_implement_trait)] // fallible, unlike FromIterator
    pub fn from_iter(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        // Only our exact (uppercase) names reach envy, last value winning: envy lowercases
        // keys, so `sse_auth` or a repeated name would otherwise be a "duplicate field" error
        // that names no variable.
        let mut ours: HashMap<String, String> = HashMap::new();
        for (k, v) in vars {
            if VARS.contains(&k.as_str()) {
                ours.insert(k, v);
            }
        }
        let raw: Raw = envy::from_iter(ours).map_err(ConfigError::from_envy)?;
        let bind_str = raw.sse_bind.as_deref().unwrap_or(DEFAULT_BIND);
        let bind = bind_str.parse::<SocketAddr>().map_err(|_| {
            ConfigError::new(
                "SSE_BIND",
                format!(
                    "expected a socket address like 127.0.0.1:8080 or [::]:8080, got {bind_str:?}"
                ),
            )
        })?;
        let sources = SourceSpecs::parse(raw.sse_sources.as_deref().unwrap_or(DEFAULT_SOURCES))
            .map_err(|e| ConfigError::new("SSE_SOURCES", e.to_string()))?;
        let events_collection = raw
            .sse_events_collection
            .clone()
            .unwrap_or_else(|| DEFAULT_EVENTS_COLLECTION.to_owned());
        let sources = sources
            .with_published(&events_collection)
            .map_err(|e| ConfigError::new("SSE_EVENTS_COLLECTION", e.to_string()))?;
        let events_ttl_secs = int(
            "SSE_EVENTS_TTL_SECS",
            raw.sse_events_ttl_secs.as_deref(),
            86_400,
            1,
            // MongoDB's bound for expireAfterSeconds (2^31 - 1).
            2_147_483_647,
        )?;
        let access = Access::from_raw(&raw)?;
        let source = source_config(&raw)?;
        Ok(Config {
            mongodb_uri: mongodb_uri(raw.mongodb_uri)?,
            mongodb_db: mongodb_db(raw.mongodb_db)?,
            bind,
            sources,
            heartbeat: Duration::from_secs(int(
                "SSE_HEARTBEAT_SECS",
                raw.sse_heartbeat_secs.as_deref(),
                15,
                1,
                3600,
            )?),
            retry_ms: int(
                "SSE_RETRY_MS",
                raw.sse_retry_ms.as_deref(),
                3000,
                0,
                600_000,
            )?,
            queue_len: size(
                "SSE_QUEUE_LEN",
                raw.sse_queue_len.as_deref(),
                1024,
                1,
                1_000_000,
            )?,
            queue_bytes: size(
                "SSE_QUEUE_BYTES",
                raw.sse_queue_bytes.as_deref(),
                DEFAULT_QUEUE_BYTES,
                1024,
                MAX_BUDGET_BYTES,
            )?,
            history_events: size(
                "SSE_HISTORY_EVENTS",
                raw.sse_history_events.as_deref(),
                10_000,
                0,
                10_000_000,
            )?,
            history_bytes: size(
                "SSE_HISTORY_BYTES",
                raw.sse_history_bytes.as_deref(),
                DEFAULT_HISTORY_BYTES,
                0,
                MAX_BUDGET_BYTES,
            )?,
            max_channels: size(
                "SSE_MAX_CHANNELS",
                raw.sse_max_channels.as_deref(),
                32,
                1,
                1024,
            )?,
            catchup_concurrency: size(
                "SSE_CATCHUP_CONCURRENCY",
                raw.sse_catchup_concurrency.as_deref(),
                8,
                1,
                1024,
            )?,
            catchup_queue: size(
                "SSE_CATCHUP_QUEUE",
                raw.sse_catchup_queue.as_deref(),
                64,
                0,
                1_000_000,
            )?,
            catchup_stall: Duration::from_secs(int(
                "SSE_CATCHUP_STALL_SECS",
                raw.sse_catchup_stall_secs.as_deref(),
                15,
                1,
                3600,
            )?),
            backlog_concurrency: size(
                "SSE_BACKLOG_CONCURRENCY",
                raw.sse_backlog_concurrency.as_deref(),
                8,
                1,
                1024,
            )?,
            source,
            auth: access.auth,
            jwt: access.jwt,
            allow_query_token: access.allow_query_token,
            cookie_insecure: access.cookie_insecure,
            limits: access.limits,
            cors_origins: access.cors_origins,
            admin_token: access.admin_token,
            events_collection,
            events_ttl_secs,
            metrics_public: match raw.sse_metrics_public.as_deref() {
                None | Some("") => true,
                v => boolean("SSE_METRICS_PUBLIC", v)?,
            },
            log_format: log_format(raw.sse_log_format.as_deref())?,
        })
    }

    /// `MONGODB_URI` with any `user:password@` replaced by `***@`, for logs.
    pub fn redacted_uri(&self) -> String {
        redact(&self.mongodb_uri)
    }
}

fn source_config(raw: &Raw) -> Result<SourceConfig, ConfigError> {
    let mode = match raw.sse_mode.as_deref() {
        None | Some("auto") => SourceMode::Auto,
        Some("change_stream") => SourceMode::ChangeStream,
        Some("polling") => SourceMode::Polling,
        Some(other) => {
            return Err(ConfigError::new(
                "SSE_MODE",
                format!("expected auto, change_stream or polling, got {other:?}"),
            ))
        }
    };
    let poll_interval = int(
        "SSE_POLL_INTERVAL_MS",
        raw.sse_poll_interval_ms.as_deref(),
        5000,
        50,
        3_600_000,
    )?;
    let poll_overlap = int(
        "SSE_POLL_OVERLAP_MS",
        raw.sse_poll_overlap_ms.as_deref(),
        10_000,
        0,
        86_400_000,
    )?;
    let poll_settle = int(
        "SSE_POLL_SETTLE_MS",
        raw.sse_poll_settle_ms.as_deref(),
        1000,
        0,
        3_600_000,
    )?;
    if poll_settle > poll_overlap {
        return Err(ConfigError::new(
            "SSE_POLL_SETTLE_MS",
            format!("must not exceed SSE_POLL_OVERLAP_MS ({poll_overlap}), got {poll_settle}"),
        ));
    }
    Ok(SourceConfig {
        mode,
        probe_interval: Duration::from_secs(int(
            "SSE_PROBE_INTERVAL_SECS",
            raw.sse_probe_interval_secs.as_deref(),
            60,
            1,
            86_400,
        )?),
        poll_interval: Duration::from_millis(poll_interval),
        // The window works in whole seconds (ObjectIds carry seconds): round up.
        poll_overlap: Duration::from_secs(poll_overlap.div_ceil(1000)),
        poll_settle: Duration::from_secs(poll_settle.div_ceil(1000)),
    })
}

fn redact(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return uri.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => uri.to_owned(),
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("mongodb_uri", &self.redacted_uri())
            .field("mongodb_db", &self.mongodb_db)
            .field("bind", &self.bind)
            .field("sources", &self.sources.to_string())
            .field("heartbeat", &self.heartbeat)
            .field("retry_ms", &self.retry_ms)
            .field("queue_len", &self.queue_len)
            .field("queue_bytes", &self.queue_bytes)
            .field("history_events", &self.history_events)
            .field("history_bytes", &self.history_bytes)
            .field("max_channels", &self.max_channels)
            .field("catchup_concurrency", &self.catchup_concurrency)
            .field("catchup_queue", &self.catchup_queue)
            .field("catchup_stall", &self.catchup_stall)
            .field("backlog_concurrency", &self.backlog_concurrency)
            .field("source", &self.source)
            .field("auth", &self.auth)
            .field("jwt", &self.jwt)
            .field("allow_query_token", &self.allow_query_token)
            .field("cookie_insecure", &self.cookie_insecure)
            .field("limits", &self.limits)
            .field("events_collection", &self.events_collection)
            .field("events_ttl_secs", &self.events_ttl_secs)
            .field("cors_origins", &self.cors_origins)
            .field("admin_token", &self.admin_token)
            .field("metrics_public", &self.metrics_public)
            .field("log_format", &self.log_format)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST_SECRET: &str = "test-only-secret-0123456789abcdef";

    #[test]
    fn access_control_defaults() {
        let c = with(&[]).unwrap();
        assert_eq!(c.jwt, None);
        assert!(!c.allow_query_token);
        assert!(!c.cookie_insecure);
        assert_eq!(c.limits, LimitsConfig::default());
        // Unset: a placeholder until the gateway derives it from the open-file limit.
        assert_eq!(c.limits.max_connections, 10_000);
        assert!(!c.limits.max_connections_set);
        assert_eq!(c.limits.max_connections_per_subject, 16);
        assert_eq!(c.cors_origins, CorsOrigins::None);
        assert!(!c.admin_token.is_set());
        let c = with(&[("SSE_AUTH", "jwt"), ("SSE_JWT_SECRET", TEST_SECRET)]).unwrap();
        let jwt = c.jwt.as_ref().unwrap();
        assert_eq!(jwt.algorithm, crate::auth::jwt::JwtAlgorithm::Hs256);
        assert_eq!(jwt.leeway_secs, 30);
        assert!(!format!("{c:?}").contains(TEST_SECRET));
    }

    #[test]
    fn access_control_overrides_and_rejections() {
        let c = with(&[
            ("SSE_AUTH", "jwt"),
            ("SSE_JWT_SECRET", TEST_SECRET),
            ("SSE_JWT_LEEWAY_SECS", "0"),
            ("SSE_JWT_ISSUER", "https://idp"),
            ("SSE_JWT_AUDIENCE", "sse"),
            ("SSE_ALLOW_QUERY_TOKEN", "true"),
            ("SSE_COOKIE_INSECURE", "1"),
            ("SSE_MAX_CONNECTIONS", "5"),
            ("SSE_MAX_CONNECTIONS_PER_SUBJECT", "2"),
            ("SSE_CONNECT_RATE_PER_IP", "0"),
            ("SSE_CONNECT_BURST_PER_SUBJECT", "3"),
            ("SSE_MAX_URL_BYTES", "1024"),
            ("SSE_MAX_HEADER_BYTES", "2048"),
            ("SSE_CORS_ORIGINS", "https://a.example"),
            ("SSE_ADMIN_TOKEN", "0123456789abcdef"),
        ])
        .unwrap();
        assert!(c.allow_query_token && c.cookie_insecure);
        assert_eq!(c.jwt.as_ref().unwrap().leeway_secs, 0);
        assert_eq!(c.limits.max_connections, 5);
        assert!(c.limits.max_connections_set);
        assert_eq!(c.limits.connect_rate_per_ip, 0);
        assert_eq!(c.limits.connect_burst_per_subject, 3);
        assert!(c.admin_token.is_set());
        let jwt = |vars: &[(&str, &str)]| {
            let mut all = vec![("SSE_AUTH", "jwt")];
            all.extend_from_slice(vars);
            with(&all).unwrap_err()
        };
        assert_eq!(jwt(&[]).var, "SSE_JWT_SECRET");
        assert_eq!(jwt(&[("SSE_JWT_SECRET", "short")]).var, "SSE_JWT_SECRET");
        assert!(!jwt(&[("SSE_JWT_SECRET", "short")])
            .to_string()
            .contains("short"));
        assert_eq!(
            jwt(&[
                ("SSE_JWT_SECRET", TEST_SECRET),
                ("SSE_JWT_ALGORITHM", "none")
            ])
            .var,
            "SSE_JWT_ALGORITHM"
        );
        assert_eq!(
            jwt(&[
                ("SSE_JWT_SECRET", TEST_SECRET),
                ("SSE_JWT_LEEWAY_SECS", "601")
            ])
            .var,
            "SSE_JWT_LEEWAY_SECS"
        );
        assert_eq!(
            jwt(&[("SSE_JWT_SECRET", TEST_SECRET), ("SSE_CORS_ORIGINS", "*")]).var,
            "SSE_CORS_ORIGINS"
        );
        rejects("SSE_ALLOW_QUERY_TOKEN", "yes", "expected true or false");
        rejects("SSE_COOKIE_INSECURE", "TRUE", "expected true or false");
        rejects("SSE_MAX_CONNECTIONS", "0", "expected an integer from");
        rejects(
            "SSE_MAX_CONNECTIONS_PER_SUBJECT",
            "0",
            "expected an integer from",
        );
        rejects("SSE_CONNECT_RATE_PER_IP", "-1", "expected an integer from");
        rejects("SSE_CONNECT_BURST_PER_IP", "0", "at least 1");
        rejects("SSE_CONNECT_BURST_PER_SUBJECT", "0", "at least 1");
        rejects("SSE_MAX_URL_BYTES", "100", "expected an integer from");
        rejects("SSE_MAX_HEADER_BYTES", "70000", "expected an integer from");
        rejects("SSE_CORS_ORIGINS", "https://a.example/", "not an origin");
        rejects("SSE_ADMIN_TOKEN", "short", "at least 16");
        rejects("SSE_EVENTS_COLLECTION", "logs", "cannot also be a source");
        rejects("SSE_EVENTS_COLLECTION", "system.x", "system collections");
        rejects("SSE_EVENTS_TTL_SECS", "0", "from 1 to");
        rejects("SSE_EVENTS_TTL_SECS", "day", "from 1 to");
        // With SSE_AUTH=none the JWT variables are not read at all.
        assert!(with(&[("SSE_JWT_SECRET", "short"), ("SSE_CORS_ORIGINS", "*")]).is_ok());
    }

    fn with(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut all = vec![("SSE_AUTH".to_owned(), "none".to_owned())];
        all.extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Config::from_iter(all)
    }

    fn rejects(var: &str, value: &str, want: &str) {
        let e = with(&[(var, value)]).unwrap_err();
        assert_eq!(e.var, var, "{var}={value:?}: {e}");
        assert!(e.message.contains(want), "{var}={value:?}: {e}");
        assert!(e.to_string().starts_with(&format!("invalid {var}: ")));
    }

    #[test]
    fn defaults() {
        let c = with(&[("UNRELATED", "x"), ("SSE_UNKNOWN", "y")]).unwrap();
        assert_eq!(
            c.mongodb_uri,
            "mongodb://127.0.0.1:27017/?directConnection=true"
        );
        assert_eq!(c.mongodb_db, "datashop");
        assert_eq!(c.bind, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(
            c.sources,
            SourceSpecs::default().with_published("sse_events").unwrap()
        );
        assert_eq!(c.events_collection, "sse_events");
        assert_eq!(c.events_ttl_secs, 86_400);
        assert_eq!(c.heartbeat, Duration::from_secs(15));
        assert_eq!(c.retry_ms, 3000);
        assert_eq!(c.queue_len, 1024);
        assert_eq!(c.queue_bytes, 8 * 1024 * 1024);
        assert_eq!(c.history_events, 10_000);
        assert_eq!(c.history_bytes, 64 * 1024 * 1024);
        assert_eq!(c.max_channels, 32);
        assert_eq!(c.catchup_concurrency, 8);
        assert_eq!(c.catchup_queue, 64);
        assert_eq!(c.auth, AuthMode::None);
    }

    #[test]
    fn overrides() {
        let c = with(&[
            ("MONGODB_URI", "mongodb+srv://u:p@cluster.example.net/"),
            ("MONGODB_DB", "other"),
            ("SSE_BIND", "[::]:9000"),
            ("SSE_SOURCES", "logs:l:ws,jobs:j"),
            ("SSE_HEARTBEAT_SECS", "3600"),
            ("SSE_RETRY_MS", "0"),
            ("SSE_QUEUE_LEN", "1"),
            ("SSE_QUEUE_BYTES", "1024"),
            ("SSE_HISTORY_EVENTS", "0"),
            ("SSE_HISTORY_BYTES", "0"),
            ("SSE_MAX_CHANNELS", "1024"),
            ("SSE_CATCHUP_CONCURRENCY", "1"),
            ("SSE_CATCHUP_QUEUE", "0"),
            ("SSE_AUTH", "jwt"),
            ("SSE_JWT_SECRET", TEST_SECRET),
        ])
        .unwrap();
        assert_eq!(c.mongodb_db, "other");
        assert_eq!(c.bind.port(), 9000);
        assert_eq!(c.sources.len(), 3, "two sources and the events collection");
        assert_eq!(c.heartbeat, Duration::from_secs(3600));
        assert_eq!(c.retry_ms, 0);
        assert_eq!(c.queue_len, 1);
        assert_eq!(c.queue_bytes, 1024);
        assert_eq!(c.history_events, 0);
        assert_eq!(c.history_bytes, 0);
        assert_eq!(c.max_channels, 1024);
        assert_eq!(c.catchup_concurrency, 1);
        assert_eq!(c.catchup_queue, 0);
        assert_eq!(c.auth, AuthMode::Jwt);
        assert_eq!(c.redacted_uri(), "mongodb+srv://***@cluster.example.net/");
        assert!(!format!("{c:?}").contains("u:p"));
    }

    #[test]
    fn auth_is_required() {
        let e = Config::from_iter(Vec::new()).unwrap_err();
        assert_eq!(e.var, "SSE_AUTH");
        assert!(e.message.contains("choose explicitly"), "{e}");
        rejects("SSE_AUTH", "JWT", "expected \"jwt\" or \"none\"");
        rejects("SSE_AUTH", "", "expected \"jwt\" or \"none\"");
    }

    #[test]
    fn numeric_rejections() {
        let cases: &[(&str, &[&str])] = &[
            (
                "SSE_HEARTBEAT_SECS",
                &["0", "3601", "", "abc", "-1", "1.5", " 15"],
            ),
            ("SSE_RETRY_MS", &["600001", "x", "99999999999999999999999"]),
            ("SSE_QUEUE_LEN", &["0", "1000001"]),
            ("SSE_HISTORY_EVENTS", &["10000001", "-5"]),
            ("SSE_QUEUE_BYTES", &["0", "1023", "64MiB", "68719476737"]),
            ("SSE_HISTORY_BYTES", &["-1", "1e6", "68719476737"]),
            ("SSE_MAX_CHANNELS", &["0", "1025"]),
            ("SSE_CATCHUP_CONCURRENCY", &["0", "1025"]),
            ("SSE_CATCHUP_QUEUE", &["1000001", "many"]),
        ];
        for (var, values) in cases {
            for v in *values {
                rejects(var, v, "expected an integer from");
            }
        }
        assert_eq!(
            with(&[("SSE_QUEUE_LEN", "0")]).unwrap_err().to_string(),
            "invalid SSE_QUEUE_LEN: expected an integer from 1 to 1000000, got \"0\""
        );
    }

    #[test]
    fn other_rejections() {
        rejects("SSE_BIND", "localhost:8080", "socket address");
        rejects("SSE_BIND", "127.0.0.1", "socket address");
        rejects("SSE_BIND", "", "socket address");
        rejects("SSE_SOURCES", "", "no sources");
        rejects("SSE_SOURCES", "logs:logs:a/b/c/d", "at most 3");
        rejects("SSE_SOURCES", "logs:l:a,logs:m:b", "listed twice");
        rejects("MONGODB_URI", "http://x", "mongodb://");
        rejects("MONGODB_URI", "", "mongodb://");
        rejects("MONGODB_DB", "", "empty");
        rejects("MONGODB_DB", "a.b", "'.'");
        rejects("MONGODB_DB", "a b", "' '");
        rejects("MONGODB_DB", &"d".repeat(64), "shorter than 64");
    }

    #[test]
    fn uri_is_not_echoed_in_errors() {
        let e = with(&[("MONGODB_URI", "mongodb:/secret@h")]).unwrap_err();
        assert!(!e.to_string().contains("secret"));
    }

    #[test]
    fn envy_errors_name_the_variable() {
        assert_eq!(
            ConfigError::from_envy(envy::Error::Custom(
                "invalid digit found in string while parsing value 'x' provided by sse_queue_len"
                    .into()
            )),
            ConfigError::new(
                "SSE_QUEUE_LEN",
                "invalid digit found in string while parsing value 'x'"
            )
        );
        assert_eq!(
            ConfigError::from_envy(envy::Error::Custom("duplicate field `sse_bind`".into())).var,
            "SSE_BIND"
        );
        assert_eq!(
            ConfigError::from_envy(envy::Error::MissingValue("sse_auth")).var,
            "SSE_AUTH"
        );
    }

    #[test]
    fn only_exact_names_count_and_last_wins() {
        let c = Config::from_iter(vec![
            ("sse_auth".to_owned(), "bogus".to_owned()),
            ("SSE_QUEUE_LEN".to_owned(), "5".to_owned()),
            ("SSE_QUEUE_LEN".to_owned(), "7".to_owned()),
            ("Sse_Bind".to_owned(), "nonsense".to_owned()),
            ("SSE_AUTH".to_owned(), "jwt".to_owned()),
            ("SSE_JWT_SECRET".to_owned(), TEST_SECRET.to_owned()),
        ])
        .unwrap();
        assert_eq!(c.auth, AuthMode::Jwt);
        assert_eq!(c.queue_len, 7);
        assert_eq!(c.bind.port(), 8080);
    }

    #[test]
    fn redaction() {
        assert_eq!(redact("mongodb://h:1/?a=b@c"), "mongodb://h:1/?a=b@c");
        assert_eq!(
            redact("mongodb://u:p@h:1,h2:2/db"),
            "mongodb://***@h:1,h2:2/db"
        );
        assert_eq!(redact("nonsense"), "nonsense");
    }
}
