//! `mongo-sse check`: reads the configuration `serve` would read, connects to MongoDB and
//! says, in terms a person can act on, whether `serve` would run fully — and if not, why and
//! what to change. Nothing here writes to MongoDB.
//!
//! Verdicts: **fail** means `serve` would not run fully (MongoDB unreachable; change streams
//! unavailable so the gateway would poll, or deliver nothing with `SSE_MODE=change_stream`;
//! an explicit `SSE_MAX_CONNECTIONS` the open-file limit cannot carry); **warn** is worth
//! knowing but changes nothing `serve` does (a short oplog window, privileges that cannot be
//! read). The process exits 1 when anything failed, else 0 (2 is a configuration error, found
//! before this module runs).

use std::fmt::Write as _;
use std::time::Duration;

use bson::{doc, Document};
use mongodb::options::ClientOptions;
use mongodb::Client;

use crate::auth::jwt::JwtKey;
use crate::config::{AuthMode, Config};
use crate::http::cors::CorsOrigins;
use crate::limits;
use crate::source::supervisor::SourceMode;

/// How long `check` waits to reach MongoDB, and for each command.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// An oplog window shorter than this is worth a warning: a browser closed over lunch would
/// come back to a `gap`.
const SHORT_OPLOG_HOURS: f64 = 1.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Info,
    Warn,
    Fail,
    /// Not checked (yet).
    Skip,
    /// A configuration value (printed without a verdict).
    Value,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Info => "info",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
            Status::Value => "",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Finding {
    pub status: Status,
    pub text: String,
}

#[derive(Debug, Clone)]
pub struct Section {
    pub title: &'static str,
    pub findings: Vec<Finding>,
}

impl Section {
    fn new(title: &'static str) -> Section {
        Section {
            title,
            findings: Vec::new(),
        }
    }

    fn add(&mut self, status: Status, text: impl Into<String>) {
        self.findings.push(Finding {
            status,
            text: text.into(),
        });
    }
}

/// The whole diagnosis, in the order it is printed.
#[derive(Debug, Clone)]
pub struct Report {
    pub sections: Vec<Section>,
}

impl Report {
    /// Findings of `status`, as `(section, text)`.
    pub fn with_status(&self, status: Status) -> impl Iterator<Item = (&'static str, &str)> {
        self.sections.iter().flat_map(move |s| {
            s.findings
                .iter()
                .filter(move |f| f.status == status)
                .map(move |f| (s.title, f.text.as_str()))
        })
    }

    /// 0 when `serve` would run fully, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        u8::from(self.with_status(Status::Fail).next().is_some())
    }

    pub fn render(&self) -> String {
        let mut out = String::from("mongo-sse check\n");
        for s in &self.sections {
            let _ = writeln!(out, "\n{}", s.title);
            for f in &s.findings {
                let mut lines = f.text.lines();
                let _ = writeln!(
                    out,
                    "  {:<5} {}",
                    f.status.label(),
                    lines.next().unwrap_or("")
                );
                for l in lines {
                    let _ = writeln!(out, "        {l}");
                }
            }
        }
        let fails: Vec<_> = self.with_status(Status::Fail).collect();
        let warns = self.with_status(Status::Warn).count();
        if fails.is_empty() {
            let _ = writeln!(
                out,
                "\nResult: serve would run fully ({warns} warning{}).",
                plural(warns)
            );
        } else {
            let _ = writeln!(
                out,
                "\nResult: serve would not run fully ({} problem{}, {warns} warning{}):",
                fails.len(),
                plural(fails.len()),
                plural(warns)
            );
            for (section, text) in fails {
                let _ = writeln!(out, "  - {section}: {}", text.lines().next().unwrap_or(""));
            }
        }
        out
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// What the `hello` reply says the deployment is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topology {
    ReplicaSet {
        name: String,
        primary: Option<String>,
    },
    Sharded,
    Standalone,
}

impl Topology {
    pub fn from_hello(hello: &Document) -> Topology {
        if let Ok(name) = hello.get_str("setName") {
            return Topology::ReplicaSet {
                name: name.to_owned(),
                primary: hello.get_str("primary").ok().map(str::to_owned),
            };
        }
        if hello.get_str("msg") == Ok("isdbgrid") {
            return Topology::Sharded;
        }
        Topology::Standalone
    }

    fn describe(&self) -> String {
        match self {
            Topology::ReplicaSet { name, primary } => match primary {
                Some(p) => format!("replica set {name} (primary {p})"),
                None => format!("replica set {name} (no primary right now)"),
            },
            Topology::Sharded => "sharded cluster (mongos)".to_owned(),
            Topology::Standalone => "standalone".to_owned(),
        }
    }
}

/// What `connectionStatus` (with `showPrivileges`) says about watching `db`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Privilege {
    /// Nobody is authenticated: access control is off (or the connection is anonymous, and
    /// the test stream will say so).
    NoUser,
    /// `users` hold `changeStream` and `find` on the database (or on any database).
    Granted { users: String },
    /// `users` are authenticated but lack it.
    Missing { users: String },
}

impl Privilege {
    /// MongoDB's `authInfo` shapes: `authenticatedUsers: [{user, db}]`,
    /// `authenticatedUserPrivileges: [{resource: {db, collection} | {cluster: true} |
    /// {anyResource: true}, actions: [...]}]`. A database-wide change stream needs
    /// `changeStream` and `find` on `{db: <db>, collection: ""}` (or `db: ""`, every database).
    pub fn from_connection_status(status: &Document, db: &str) -> Privilege {
        let auth = status.get_document("authInfo").ok();
        let users: Vec<String> = auth
            .and_then(|a| a.get_array("authenticatedUsers").ok())
            .map(|us| {
                us.iter()
                    .filter_map(|u| u.as_document())
                    .map(|u| {
                        format!(
                            "{}@{}",
                            u.get_str("user").unwrap_or("?"),
                            u.get_str("db").unwrap_or("?")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        if users.is_empty() {
            return Privilege::NoUser;
        }
        let users = users.join(", ");
        let privileges = auth
            .and_then(|a| a.get_array("authenticatedUserPrivileges").ok())
            .map(|p| p.iter().filter_map(|p| p.as_document()).collect::<Vec<_>>())
            .unwrap_or_default();
        let covers = |p: &Document| {
            let Ok(r) = p.get_document("resource") else {
                return false;
            };
            r.get_bool("anyResource").unwrap_or(false)
                || (r.get_str("collection") == Ok("")
                    && matches!(r.get_str("db"), Ok(d) if d == db || d.is_empty()))
        };
        let mut has_change_stream = false;
        let mut has_find = false;
        for p in privileges.iter().filter(|p| covers(p)) {
            for a in p.get_array("actions").into_iter().flatten() {
                match a.as_str() {
                    Some("anyAction") => {
                        has_change_stream = true;
                        has_find = true;
                    }
                    Some("changeStream") => has_change_stream = true,
                    Some("find") => has_find = true,
                    _ => {}
                }
            }
        }
        if has_change_stream && has_find {
            Privilege::Granted { users }
        } else {
            Privilege::Missing { users }
        }
    }
}

/// Runs every check.
pub async fn diagnose(config: &Config) -> Report {
    let mut sections = Vec::new();
    let mut mongo = Section::new("MongoDB");
    let mut streams = Section::new("Change streams");
    let mut oplog = Section::new("Oplog window");
    let mut connected = None;
    match connect(config).await {
        Err(e) => {
            mongo.add(
                Status::Fail,
                format!(
                    "cannot reach MongoDB at {}: {e:#}\ncheck MONGODB_URI, that the server runs and that this host may connect",
                    config.redacted_uri()
                ),
            );
            streams.add(Status::Skip, "not checked: MongoDB is unreachable");
            oplog.add(Status::Skip, "not checked: MongoDB is unreachable");
        }
        Ok((client, hello)) => {
            let topology = Topology::from_hello(&hello);
            let version = match command(&client, "admin", doc! {"buildInfo": 1}).await {
                Ok(b) => b
                    .get_str("version")
                    .unwrap_or("(unknown version)")
                    .to_owned(),
                Err(e) => format!("(version unknown: {e:#})"),
            };
            mongo.add(
                Status::Ok,
                format!(
                    "connected to {}: MongoDB {version}, {}; database {}",
                    config.redacted_uri(),
                    topology.describe(),
                    config.mongodb_db
                ),
            );
            check_change_streams(&client, config, &topology, &mut streams).await;
            check_oplog(&client, config, &topology, &mut oplog).await;
            connected = Some(client);
        }
    }
    sections.push(mongo);
    sections.push(streams);
    sections.push(oplog);
    sections.push(indexes_section(connected.as_ref(), config).await);
    sections.push(open_files_section(config));
    sections.push(configuration_section(config));
    Report { sections }
}

/// The indexes the sources' backlog and polling queries need (`indexes::required_indexes`,
/// what `mongo-sse migrate` creates): without them those queries scan whole collections.
async fn indexes_section(client: Option<&Client>, config: &Config) -> Section {
    let mut s = Section::new("Indexes");
    let Some(client) = client else {
        s.add(Status::Skip, "not checked: MongoDB is unreachable");
        return s;
    };
    let mut missing = 0;
    for required in crate::indexes::required_indexes(config) {
        let listed = list_indexes(client, &config.mongodb_db, &required.collection).await;
        let listed = match listed {
            Ok(l) => l,
            Err(e) => {
                s.add(
                    Status::Warn,
                    format!("cannot list the indexes of {}: {e:#}", required.collection),
                );
                continue;
            }
        };
        let what = format!(
            "{}.{} {} ({})",
            config.mongodb_db, required.collection, required.key, required.purpose
        );
        match listed.iter().find(|l| required.same_key(l)) {
            None => {
                missing += 1;
                s.add(Status::Fail, format!("missing: {what}"));
            }
            Some(l) => match (
                required.expire_after_secs,
                crate::indexes::RequiredIndex::listed_ttl(l),
            ) {
                (Some(want), Some(have)) if want as i64 != have => s.add(
                    Status::Warn,
                    format!(
                        "{what}: expires after {have} s, SSE_EVENTS_TTL_SECS says {want} s (change it with collMod)"
                    ),
                ),
                _ => s.add(Status::Ok, what),
            },
        }
    }
    if missing > 0 {
        s.add(
            Status::Info,
            format!("{missing} missing: run `mongo-sse migrate` (same environment) to create them"),
        );
    }
    s
}

/// `listIndexes`, all batches; a collection that does not exist yet has none.
async fn list_indexes(client: &Client, db: &str, coll: &str) -> anyhow::Result<Vec<Document>> {
    use futures::TryStreamExt;
    let collection = client.database(db).collection::<Document>(coll);
    let indexes = match tokio::time::timeout(COMMAND_TIMEOUT, collection.list_indexes()).await {
        Err(_) => anyhow::bail!("no answer within {COMMAND_TIMEOUT:?}"),
        Ok(Err(e)) if matches!(*e.kind, mongodb::error::ErrorKind::Command(ref c) if c.code == 26) => {
            return Ok(Vec::new())
        }
        Ok(r) => r?,
    };
    let models: Vec<mongodb::IndexModel> =
        tokio::time::timeout(COMMAND_TIMEOUT, indexes.try_collect())
            .await
            .map_err(|_| anyhow::anyhow!("no answer within {COMMAND_TIMEOUT:?}"))??;
    Ok(models
        .into_iter()
        .map(|m| {
            let mut d = doc! {"key": m.keys};
            if let Some(ttl) = m.options.and_then(|o| o.expire_after) {
                d.insert("expireAfterSeconds", ttl.as_secs() as i64);
            }
            d
        })
        .collect())
}

async fn connect(config: &Config) -> anyhow::Result<(Client, Document)> {
    let mut opts = tokio::time::timeout(COMMAND_TIMEOUT, ClientOptions::parse(&config.mongodb_uri))
        .await
        .map_err(|_| anyhow::anyhow!("resolving the connection string timed out"))??;
    opts.server_selection_timeout = Some(CONNECT_TIMEOUT);
    opts.connect_timeout = Some(CONNECT_TIMEOUT);
    if opts.app_name.is_none() {
        opts.app_name = Some("mongo-sse check".to_owned());
    }
    let client = Client::with_options(opts)?;
    let hello = command(&client, "admin", doc! {"hello": 1}).await?;
    Ok((client, hello))
}

async fn command(client: &Client, db: &str, cmd: Document) -> anyhow::Result<Document> {
    match tokio::time::timeout(COMMAND_TIMEOUT, client.database(db).run_command(cmd)).await {
        Ok(r) => Ok(r?),
        Err(_) => anyhow::bail!("no answer within {COMMAND_TIMEOUT:?}"),
    }
}

fn poll_interval(config: &Config) -> String {
    format!("{} ms", config.source.poll_interval.as_millis())
}

/// What would give this deployment change streams, by the error code that refused them.
fn advice(code: Option<i32>) -> &'static str {
    match code {
        Some(40573) => {
            "run MongoDB as a replica set: a single node is enough (mongod --replSet rs0, then rs.initiate())"
        }
        Some(13) => {
            "grant the user the changeStream and find actions on the database (the read role has both)"
        }
        _ => "use MongoDB 4.0 or later as a replica set or sharded cluster (WiredTiger storage)",
    }
}

async fn check_change_streams(
    client: &Client,
    config: &Config,
    topology: &Topology,
    s: &mut Section,
) {
    let db = &config.mongodb_db;
    match command(client, db, doc! {"connectionStatus": 1, "showPrivileges": true}).await {
        Ok(status) => match Privilege::from_connection_status(&status, db) {
            Privilege::NoUser => s.add(
                Status::Info,
                "no authenticated user (access control off, or credentials missing from MONGODB_URI): the test stream below decides",
            ),
            Privilege::Granted { users } => s.add(
                Status::Ok,
                format!("{users} may watch database {db} (changeStream and find)"),
            ),
            Privilege::Missing { users } => s.add(
                Status::Warn,
                format!(
                    "{users} lack the changeStream or find action on database {db} (connectionStatus); the test stream below decides"
                ),
            ),
        },
        Err(e) => s.add(
            Status::Warn,
            format!("cannot read privileges (connectionStatus): {e:#}"),
        ),
    }

    let opened = match tokio::time::timeout(
        COMMAND_TIMEOUT,
        client
            .database(db)
            .watch()
            .max_await_time(Duration::from_millis(100)),
    )
    .await
    {
        Ok(Ok(stream)) => {
            drop(stream);
            Ok(())
        }
        Ok(Err(e)) => Err((
            crate::source::server_code(&e),
            crate::source::unavailable_reason(&e),
            e.to_string(),
        )),
        Err(_) => Err((None, None, format!("no answer within {COMMAND_TIMEOUT:?}"))),
    };
    let mode = config.source.mode;
    match (opened, mode) {
        (Ok(()), SourceMode::Polling) => s.add(
            Status::Info,
            format!(
                "a test $changeStream on {db} opened, but SSE_MODE=polling: the gateway polls every {}",
                poll_interval(config)
            ),
        ),
        (Ok(()), _) => s.add(
            Status::Ok,
            format!("a test $changeStream on {db} opened: the gateway will use change streams"),
        ),
        (Err((code, Some(why), _)), SourceMode::Auto) => s.add(
            Status::Fail,
            format!(
                "the gateway will poll every {} instead of using change streams: {why}\nto get change streams: {}; or set SSE_MODE=polling to accept polling",
                poll_interval(config),
                advice(code)
            ),
        ),
        (Err((code, Some(why), _)), SourceMode::ChangeStream) => s.add(
            Status::Fail,
            format!(
                "SSE_MODE=change_stream, but change streams are unavailable: {why}; the gateway would deliver nothing\nto fix: {}; or set SSE_MODE=auto to poll",
                advice(code)
            ),
        ),
        (Err((_, Some(why), _)), SourceMode::Polling) => s.add(
            Status::Ok,
            format!(
                "SSE_MODE=polling: the gateway polls every {} (change streams are unavailable here anyway: {why})",
                poll_interval(config)
            ),
        ),
        (Err((_, None, e)), SourceMode::Polling) => s.add(
            Status::Warn,
            format!(
                "SSE_MODE=polling: the gateway polls every {}; a test $changeStream failed: {e}",
                poll_interval(config)
            ),
        ),
        (Err((_, None, e)), _) => s.add(
            Status::Fail,
            format!(
                "a test $changeStream on {db} failed: {e}\nthis is not an error that makes the gateway poll: it would retry until it clears"
            ),
        ),
    }
    if matches!(topology, Topology::Standalone) && mode != SourceMode::Polling {
        s.add(
            Status::Info,
            "a standalone server has no change streams (they read the replica set's oplog)",
        );
    }
}

async fn check_oplog(client: &Client, config: &Config, topology: &Topology, s: &mut Section) {
    match topology {
        Topology::Standalone => {
            s.add(
                Status::Info,
                "no oplog on a standalone server: resuming rests on polling ids",
            );
            return;
        }
        Topology::Sharded => {
            s.add(
                Status::Skip,
                "not read through mongos (each shard has its own oplog; check the shards)",
            );
            return;
        }
        Topology::ReplicaSet { .. } => {}
    }
    let ends = async {
        let oldest = crate::oplog::oldest_oplog_time(client).await?;
        let newest = crate::oplog::newest_oplog_time(client).await?;
        anyhow::Ok((oldest, newest))
    };
    let polling = config.source.mode == SourceMode::Polling;
    match tokio::time::timeout(COMMAND_TIMEOUT, ends).await {
        Err(_) => s.add(
            Status::Warn,
            format!("cannot read local.oplog.rs: no answer within {COMMAND_TIMEOUT:?}"),
        ),
        Ok(Err(e)) => s.add(
            Status::Warn,
            format!(
                "cannot read local.oplog.rs: {e:#}\nthe window needs read access to the local database (clusterMonitor role)"
            ),
        ),
        Ok(Ok((Some(oldest), Some(newest)))) => {
            let hours = crate::oplog::window_hours(oldest, newest);
            let text = format!(
                "{hours:.1} h (oldest entry {}, newest {}): a browser or catch-up resuming from further back gets a gap event",
                time(oldest),
                time(newest)
            );
            if polling {
                s.add(Status::Info, format!("{text} (unused: SSE_MODE=polling)"));
            } else if hours < SHORT_OPLOG_HOURS {
                s.add(
                    Status::Warn,
                    format!("{text}\nunder {SHORT_OPLOG_HOURS} h: grow the oplog (replSetResizeOplog) or set oplogMinRetentionHours"),
                );
            } else {
                s.add(Status::Ok, text);
            }
        }
        Ok(Ok(_)) => s.add(Status::Warn, "local.oplog.rs is empty"),
    }
}

fn time(ts: bson::Timestamp) -> String {
    bson::DateTime::from_millis(i64::from(ts.time) * 1000)
        .try_to_rfc3339_string()
        .unwrap_or_else(|_| ts.time.to_string())
}

fn open_files_section(config: &Config) -> Section {
    let mut s = Section::new("Open files");
    let limit = limits::raise_open_files();
    let lim = &config.limits;
    let cap = limits::connection_cap(
        lim.max_connections_set.then_some(lim.max_connections),
        &limit,
    );
    let found = match &limit {
        Ok(l) if l.before != l.soft => format!(
            "soft limit {} (hard {}), which serve raises to {}",
            limits::show_limit(l.before),
            limits::show_limit(l.hard),
            limits::show_limit(l.soft)
        ),
        Ok(l) => format!(
            "soft limit {} (hard {})",
            limits::show_limit(l.soft),
            limits::show_limit(l.hard)
        ),
        Err(e) => format!("the limit cannot be read: {e}"),
    };
    let carries = cap
        .fits
        .map(|n| format!(", which carries {n} streams"))
        .unwrap_or_default();
    match (&cap.warning, cap.explicit) {
        (Some(w), true) => s.add(Status::Fail, format!("{w}\n{found}{carries}")),
        (Some(w), false) => s.add(Status::Warn, format!("{found}\n{w}")),
        (None, true) => s.add(
            Status::Ok,
            format!(
                "{found}{carries}; SSE_MAX_CONNECTIONS={} fits",
                cap.max_connections
            ),
        ),
        (None, false) => s.add(
            Status::Ok,
            format!(
                "{found}{carries}; SSE_MAX_CONNECTIONS unset: serve caps streams at {}",
                cap.max_connections
            ),
        ),
    }
    s
}

/// The effective configuration, secrets never shown.
fn configuration_section(config: &Config) -> Section {
    let mut s = Section::new("Configuration (effective; secrets not shown)");
    let mut kv = |k: &str, v: String| s.add(Status::Value, format!("{k:<36}{v}"));
    kv("MONGODB_URI", config.redacted_uri());
    kv("MONGODB_DB", config.mongodb_db.clone());
    kv("SSE_BIND", config.bind.to_string());
    kv("SSE_SOURCES", config.sources.to_string());
    kv(
        "SSE_MODE",
        match config.source.mode {
            SourceMode::Auto => "auto",
            SourceMode::ChangeStream => "change_stream",
            SourceMode::Polling => "polling",
        }
        .to_owned(),
    );
    kv("SSE_POLL_INTERVAL_MS", poll_interval(config));
    kv(
        "SSE_AUTH",
        match config.auth {
            AuthMode::Jwt => "jwt".to_owned(),
            AuthMode::None => "none (every client may subscribe to every channel)".to_owned(),
        },
    );
    if let Some(jwt) = &config.jwt {
        kv("SSE_JWT_ALGORITHM", jwt.algorithm.name().to_owned());
        match &jwt.key {
            JwtKey::Secret(_) => kv("SSE_JWT_SECRET", "(set, not shown)".to_owned()),
            JwtKey::PublicKeyPem { path, .. } => {
                kv("SSE_JWT_PUBLIC_KEY_FILE", path.display().to_string())
            }
        }
        kv(
            "SSE_JWT_ISSUER",
            jwt.issuer.clone().unwrap_or_else(|| "(any)".into()),
        );
        kv(
            "SSE_JWT_AUDIENCE",
            jwt.audience.clone().unwrap_or_else(|| "(none)".into()),
        );
        kv("SSE_JWT_LEEWAY_SECS", jwt.leeway_secs.to_string());
    }
    kv(
        "SSE_ALLOW_QUERY_TOKEN",
        config.allow_query_token.to_string(),
    );
    kv("SSE_COOKIE_INSECURE", config.cookie_insecure.to_string());
    kv(
        "SSE_CORS_ORIGINS",
        match &config.cors_origins {
            CorsOrigins::None => "(none)".to_owned(),
            CorsOrigins::Any => "*".to_owned(),
            CorsOrigins::List(l) => l.join(","),
        },
    );
    kv(
        "SSE_ADMIN_TOKEN",
        if config.admin_token.is_set() {
            "(set, not shown)".to_owned()
        } else {
            "(unset: admin endpoints off)".to_owned()
        },
    );
    let l = &config.limits;
    kv(
        "SSE_MAX_CONNECTIONS",
        if l.max_connections_set {
            l.max_connections.to_string()
        } else {
            "(unset: from the open-file limit, above)".to_owned()
        },
    );
    kv(
        "SSE_MAX_CONNECTIONS_PER_SUBJECT",
        l.max_connections_per_subject.to_string(),
    );
    kv(
        "SSE_CONNECT_RATE/BURST_PER_IP",
        format!("{} / {}", l.connect_rate_per_ip, l.connect_burst_per_ip),
    );
    kv(
        "SSE_CONNECT_RATE/BURST_PER_SUBJECT",
        format!(
            "{} / {}",
            l.connect_rate_per_subject, l.connect_burst_per_subject
        ),
    );
    kv("SSE_HEARTBEAT_SECS", config.heartbeat.as_secs().to_string());
    kv("SSE_QUEUE_LEN", config.queue_len.to_string());
    kv("SSE_QUEUE_BYTES", config.queue_bytes.to_string());
    kv("SSE_HISTORY_EVENTS", config.history_events.to_string());
    kv("SSE_HISTORY_BYTES", config.history_bytes.to_string());
    kv(
        "SSE_CATCHUP_CONCURRENCY/QUEUE",
        format!("{} / {}", config.catchup_concurrency, config.catchup_queue),
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topology_from_hello() {
        assert_eq!(
            Topology::from_hello(&doc! {"setName": "rs0", "primary": "h:1"}),
            Topology::ReplicaSet {
                name: "rs0".into(),
                primary: Some("h:1".into())
            }
        );
        assert_eq!(
            Topology::from_hello(&doc! {"msg": "isdbgrid"}),
            Topology::Sharded
        );
        assert_eq!(
            Topology::from_hello(&doc! {"isWritablePrimary": true}),
            Topology::Standalone
        );
    }

    fn status(users: bson::Bson, privileges: bson::Bson) -> Document {
        doc! {"authInfo": {"authenticatedUsers": users, "authenticatedUserRoles": [], "authenticatedUserPrivileges": privileges}, "ok": 1}
    }

    #[test]
    fn privileges_from_connection_status() {
        let me = bson::bson!([{"user": "sse", "db": "admin"}]);
        assert_eq!(
            Privilege::from_connection_status(&status(bson::bson!([]), bson::bson!([])), "d"),
            Privilege::NoUser
        );
        let granted = |privs| Privilege::from_connection_status(&status(me.clone(), privs), "d");
        let users = "sse@admin".to_owned();
        assert_eq!(
            granted(
                bson::bson!([{"resource": {"db": "d", "collection": ""}, "actions": ["find", "changeStream", "listIndexes"]}])
            ),
            Privilege::Granted {
                users: users.clone()
            }
        );
        assert_eq!(
            granted(
                bson::bson!([{"resource": {"db": "", "collection": ""}, "actions": ["changeStream", "find"]}])
            ),
            Privilege::Granted {
                users: users.clone()
            }
        );
        assert_eq!(
            granted(bson::bson!([{"resource": {"anyResource": true}, "actions": ["anyAction"]}])),
            Privilege::Granted {
                users: users.clone()
            }
        );
        // find alone, another database, or one collection only: not enough for a
        // database-wide stream.
        for privs in [
            bson::bson!([{"resource": {"db": "d", "collection": ""}, "actions": ["find"]}]),
            bson::bson!([{"resource": {"db": "other", "collection": ""}, "actions": ["find", "changeStream"]}]),
            bson::bson!([{"resource": {"db": "d", "collection": "logs"}, "actions": ["find", "changeStream"]}]),
            bson::bson!([{"resource": {"cluster": true}, "actions": ["serverStatus"]}]),
        ] {
            assert_eq!(
                granted(privs),
                Privilege::Missing {
                    users: users.clone()
                }
            );
        }
    }

    #[test]
    fn exit_codes_and_rendering() {
        let mut a = Section::new("A");
        a.add(Status::Ok, "fine");
        a.add(Status::Warn, "hmm\nsecond line");
        let r = Report {
            sections: vec![a.clone()],
        };
        assert_eq!(r.exit_code(), 0);
        let text = r.render();
        assert!(
            text.contains("  warn  hmm\n        second line\n"),
            "{text}"
        );
        assert!(text.contains("serve would run fully (1 warning)"), "{text}");
        a.add(Status::Fail, "broken\ndetails");
        let r = Report { sections: vec![a] };
        assert_eq!(r.exit_code(), 1);
        assert!(r.render().contains("  - A: broken\n"), "{}", r.render());
    }
}
