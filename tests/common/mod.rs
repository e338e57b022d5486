//! Harness for the gateway's integration tests: MongoDB (an in-process mongo-sim, or the server
//! named by `MONGODB_URI` with a database of its own per test), a writer inserting log
//! documents with the official driver, gateways started in-process, and a small SSE client on
//! reqwest with a hand-written event-stream parser.
//!
//! Nothing here synchronizes by sleeping: every wait is for something observable (a frame, an
//! HTTP status, a counter) and has a deadline that fails the test with a message saying what
//! was awaited.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bson::{doc, Document};
use futures::StreamExt;
use mongo_sim::{Sim, SimConfig};
use mongo_sse::config::Config;
use mongo_sse::gateway::Gateway;
use mongodb::{Client, Collection, Database};

/// Default bound for a single wait in a test.
pub const WAIT: Duration = Duration::from_secs(30);

/// Logs from the gateway and the sim when `RUST_LOG` is set (captured per test by libtest).
pub fn init_tracing() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// The real server to test against instead of mongo-sim, if any.
pub fn real_uri() -> Option<String> {
    std::env::var("MONGODB_URI").ok().filter(|u| !u.is_empty())
}

/// A test that only mongo-sim can run (a fault or a size a real server does not let us set):
/// with `MONGODB_URI` set it prints a loud SKIP and returns true, and under `CI=true` a skip is
/// a failure, so a suite can never pass by not running.
pub fn skip_unless_sim(test: &str, why: &str) -> bool {
    if real_uri().is_none() {
        return false;
    }
    let msg = format!("!!!!! SKIP {test}: {why} (MONGODB_URI is set) !!!!!");
    eprintln!("{msg}");
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{msg}; CI=true: a skipped test is a failure");
    }
    true
}

/// A name no other test (or earlier run) uses.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let prefix: String = prefix.chars().take(30).collect();
    format!("{prefix}_{}_{n}_{nanos:x}", std::process::id())
}

/// Awaits `fut`, failing the test with `what` if it takes longer than `within`.
pub async fn within<T>(within: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(within, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {within:?} waiting for {what}"),
    }
}

/// Polls `check` until it returns `Some`, for conditions that have no event to await (a
/// counter in another component). Fails the test with `what` after `within`.
pub async fn eventually<T>(
    within: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A tiny deterministic PRNG (xorshift64*), so a failing run can be replayed from its seed.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }
}

/// The seed for randomized tests: `TEST_SEED` when set, else the clock (printed, so a failure
/// can be replayed).
pub fn seed(test: &str) -> u64 {
    let seed = std::env::var("TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("{test}: TEST_SEED={seed}");
    seed
}

// ---------------------------------------------------------------------------------------------
// MongoDB

/// The MongoDB a test runs against, and the database it owns.
pub struct Mongo {
    /// `None` when testing a real server.
    pub sim: Option<Sim>,
    pub uri: String,
    pub client: Client,
    pub db_name: String,
    pub db: Database,
}

impl Mongo {
    pub async fn start(test: &str) -> Mongo {
        Self::with_sim_config(test, SimConfig::default()).await
    }

    /// `config` applies to the in-process sim only.
    pub async fn with_sim_config(test: &str, config: SimConfig) -> Mongo {
        init_tracing();
        let (uri, sim) = match real_uri() {
            Some(uri) => (uri, None),
            None => {
                let sim = Sim::start(config).await.expect("start mongo-sim");
                (sim.uri(), Some(sim))
            }
        };
        let client = Client::with_uri_str(&uri).await.expect("MongoDB client");
        let db_name = unique_name(test);
        let db = client.database(&db_name);
        Mongo {
            sim,
            uri,
            client,
            db_name,
            db,
        }
    }

    pub fn is_sim(&self) -> bool {
        self.sim.is_some()
    }

    pub fn logs(&self) -> Collection<Document> {
        self.db.collection("logs")
    }

    /// The connection string with `appName` set, so fail points can target one gateway's
    /// connections (`data.appName`) and leave the writer and other tests alone.
    pub fn uri_with_app_name(&self, app_name: &str) -> String {
        let uri = &self.uri;
        if uri.contains('?') {
            return format!("{uri}&appName={app_name}");
        }
        let after_scheme = uri.split_once("://").map(|(_, r)| r).unwrap_or(uri);
        if after_scheme.contains('/') {
            format!("{uri}?appName={app_name}")
        } else {
            format!("{uri}/?appName={app_name}")
        }
    }

    /// Inserts one log document `{workspace_id, workflow_id, seq}`.
    pub async fn insert(&self, ws: &str, wf: &str, seq: i64) {
        self.logs()
            .insert_one(log_doc(ws, wf, seq))
            .await
            .expect("insert a log document");
    }

    pub async fn insert_many(&self, docs: Vec<Document>) {
        if docs.is_empty() {
            return;
        }
        self.logs()
            .insert_many(docs)
            .await
            .expect("insert log documents");
    }

    /// `configureFailPoint`; returns how often the previous configuration fired (`count`).
    pub async fn fail_point(&self, cmd: Document) -> i64 {
        let reply = self
            .client
            .database("admin")
            .run_command(cmd)
            .await
            .expect("configureFailPoint (a real server needs enableTestCommands=1)");
        match reply.get("count") {
            Some(bson::Bson::Int32(n)) => i64::from(*n),
            Some(bson::Bson::Int64(n)) => *n,
            _ => 0,
        }
    }

    /// Every log document, in commit order. The tests write each workflow from one sequential
    /// writer, whose driver-generated ObjectIds increase in insert order.
    pub async fn all_logs(&self) -> Vec<Document> {
        let mut cursor = self
            .logs()
            .find(doc! {})
            .sort(doc! {"_id": 1})
            .await
            .expect("find logs");
        let mut out = Vec::new();
        while let Some(d) = cursor.next().await {
            out.push(d.expect("read a log document"));
        }
        out
    }
}

pub fn log_doc(ws: &str, wf: &str, seq: i64) -> Document {
    doc! {"workspace_id": ws, "workflow_id": wf, "seq": seq}
}

// ---------------------------------------------------------------------------------------------
// Gateway

/// Starts a gateway on `mongo` (its own database), on a free port, with `vars` overriding the
/// defaults, and waits until `/readyz` answers 200.
pub async fn start_gateway(mongo: &Mongo, vars: &[(&str, &str)]) -> Gateway {
    start_gateway_named(mongo, &unique_name("gw"), vars).await
}

/// Like [`start_gateway`], with the gateway's MongoDB connections named `app_name`.
pub async fn start_gateway_named(mongo: &Mongo, app_name: &str, vars: &[(&str, &str)]) -> Gateway {
    let mut all: Vec<(String, String)> = vec![
        ("SSE_AUTH".into(), "none".into()),
        ("MONGODB_URI".into(), mongo.uri_with_app_name(app_name)),
        ("MONGODB_DB".into(), mongo.db_name.clone()),
        ("SSE_BIND".into(), "127.0.0.1:0".into()),
        // Every test client connects from 127.0.0.1: per-IP connection rates are not what
        // these tests are about (tests that are set their own).
        ("SSE_CONNECT_RATE_PER_IP".into(), "0".into()),
    ];
    all.extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let config = Config::from_iter(all).expect("gateway configuration");
    let gw = Gateway::start(config).await.expect("start the gateway");
    wait_ready(&base_url(&gw)).await;
    gw
}

pub fn base_url(gw: &Gateway) -> String {
    format!("http://{}", gw.addr)
}

/// Polls `/readyz` until 200 (a readiness probe has nothing to await but its answer).
pub async fn wait_ready(base: &str) {
    let client = http();
    let url = format!("{base}/readyz");
    let deadline = Instant::now() + WAIT;
    loop {
        let last = match client.get(&url).send().await {
            Ok(r) if r.status() == 200 => return,
            Ok(r) => format!("{} {}", r.status(), r.text().await.unwrap_or_default()),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            panic!("gateway at {base} not ready within {WAIT:?}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An HTTP client for tests: no proxy from the environment, no pooled connections (a test
/// that drops a stream must really close it).
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("HTTP client")
}

/// `/v1/stream?channel=…[&lastEventId=…][&backlog=N]`.
pub fn stream_path(
    channels: &[&str],
    last_id_query: Option<&str>,
    backlog: Option<usize>,
) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for c in channels {
        q.append_pair("channel", c);
    }
    if let Some(id) = last_id_query {
        q.append_pair("lastEventId", id);
    }
    if let Some(n) = backlog {
        q.append_pair("backlog", &n.to_string());
    }
    format!("/v1/stream?{}", q.finish())
}

/// An error with its sources, for failure messages.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(e) = src {
        s.push_str(": ");
        s.push_str(&e.to_string());
        src = e.source();
    }
    s
}

/// A non-2xx answer, or a `busy` stream (status 200, the busy event's JSON as the body).
#[derive(Debug)]
pub struct HttpError {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl HttpError {
    /// The `busy` event's JSON, if this was a busy stream.
    pub fn busy(&self) -> Option<serde_json::Value> {
        if self.status != 200 {
            return None;
        }
        serde_json::from_str(&self.body).ok()
    }

    /// A refusal that retrying fixes: a JSON 503/429 or a busy stream.
    pub fn is_load(&self) -> bool {
        matches!(self.status, 429 | 503) || self.busy().is_some()
    }
}

/// A GET that is not a stream: status, headers and body.
pub async fn get(base: &str, path: &str, headers: &[(&str, &[u8])]) -> HttpError {
    let mut req = http().get(format!("{base}{path}"));
    for (k, v) in headers {
        req = req.header(
            *k,
            reqwest::header::HeaderValue::from_bytes(v).expect("header value"),
        );
    }
    let resp = within(WAIT, &format!("GET {path}"), req.send())
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {}", error_chain(&e)));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = within(WAIT, &format!("the body of GET {path}"), resp.text())
        .await
        .unwrap_or_default();
    HttpError {
        status,
        headers,
        body,
    }
}

// ---------------------------------------------------------------------------------------------
// SSE client

/// One thing read from an event stream, per the HTML Standard's event-stream interpretation.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// A `retry:` field with a valid number.
    Retry(u64),
    /// A comment line (`: text`).
    Comment(String),
    /// A message with no data but an `id:`: updates lastEventId, dispatches nothing.
    IdOnly(String),
    /// A dispatched message.
    Event(Ev),
}

/// A dispatched message.
#[derive(Debug, Clone, PartialEq)]
pub struct Ev {
    /// The lastEventId after this message (what `MessageEvent.lastEventId` shows).
    pub id: String,
    /// `message` unless an `event:` field named it.
    pub event: String,
    pub data: String,
}

/// The JSON of a data event.
#[derive(Debug, Clone, PartialEq)]
pub struct Msg {
    pub channel: String,
    pub op: String,
    pub doc: serde_json::Value,
}

impl Ev {
    pub fn msg(&self) -> Msg {
        let v: serde_json::Value = serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("event data is not JSON ({e}): {:?}", self.data));
        Msg {
            channel: v["channel"]
                .as_str()
                .unwrap_or_else(|| panic!("no channel in {v}"))
                .to_string(),
            op: v["op"]
                .as_str()
                .unwrap_or_else(|| panic!("no op in {v}"))
                .to_string(),
            doc: v["doc"].clone(),
        }
    }

    /// `(workflow_id, seq)` of the log document carried by this event.
    pub fn wf_seq(&self) -> (String, i64) {
        let m = self.msg();
        (
            m.doc["workflow_id"]
                .as_str()
                .unwrap_or_else(|| panic!("no workflow_id in {}", m.doc))
                .to_string(),
            m.doc["seq"]
                .as_i64()
                .unwrap_or_else(|| panic!("no seq in {}", m.doc)),
        )
    }

    pub fn seq(&self) -> i64 {
        self.wf_seq().1
    }
}

/// The incremental event-stream parser (HTML Standard 9.2.6): lines end at CR, LF or CRLF (also
/// across chunk boundaries), an empty line dispatches, `:` starts a comment, one space after
/// the colon is dropped, `id` containing NUL is ignored, `retry` must be all digits.
#[derive(Default)]
pub struct Parser {
    line: Vec<u8>,
    /// The previous byte was a CR: a following LF belongs to the same line break.
    after_cr: bool,
    started: bool,
    data: String,
    event_type: String,
    /// The last event ID buffer: set by an `id` field, persists across messages.
    id_buffer: String,
    /// The event source's last event ID string: the buffer as of the last dispatch (an
    /// incomplete message at the end of the stream does not count). What a reconnect sends.
    pub last_event_id: String,
    /// Whether the message being built had an `id` field.
    saw_id: bool,
    out: VecDeque<Item>,
}

impl Parser {
    pub fn new(last_event_id: &str) -> Parser {
        Parser {
            id_buffer: last_event_id.to_string(),
            last_event_id: last_event_id.to_string(),
            ..Parser::default()
        }
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if !self.started {
                self.started = true;
                // The standard lets a stream start with a UTF-8 BOM; the gateway never sends
                // one, so seeing it is a failure rather than something to skip.
                assert_ne!(b, 0xEF, "the stream starts with a BOM");
            }
            match b {
                b'\r' => {
                    self.end_line();
                    self.after_cr = true;
                }
                b'\n' if self.after_cr => self.after_cr = false,
                b'\n' => self.end_line(),
                _ => {
                    self.after_cr = false;
                    self.line.push(b);
                }
            }
        }
    }

    pub fn pop(&mut self) -> Option<Item> {
        self.out.pop_front()
    }

    fn end_line(&mut self) {
        let line = String::from_utf8_lossy(&std::mem::take(&mut self.line)).into_owned();
        if line.is_empty() {
            self.dispatch();
            return;
        }
        if let Some(comment) = line.strip_prefix(':') {
            let text = comment.strip_prefix(' ').unwrap_or(comment);
            self.out.push_back(Item::Comment(text.to_string()));
            return;
        }
        let (field, value) = match line.find(':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (line.as_str(), ""),
        };
        match field {
            "event" => self.event_type = value.to_string(),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            "id" if !value.contains('\0') => {
                self.id_buffer = value.to_string();
                self.saw_id = true;
            }
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                if let Ok(ms) = value.parse() {
                    self.out.push_back(Item::Retry(ms));
                }
            }
            _ => {}
        }
    }

    fn dispatch(&mut self) {
        self.last_event_id.clone_from(&self.id_buffer);
        let saw_id = std::mem::take(&mut self.saw_id);
        let event_type = std::mem::take(&mut self.event_type);
        if self.data.is_empty() {
            if saw_id {
                self.out.push_back(Item::IdOnly(self.last_event_id.clone()));
            }
            return;
        }
        let mut data = std::mem::take(&mut self.data);
        data.pop(); // the last LF
        self.out.push_back(Item::Event(Ev {
            id: self.last_event_id.clone(),
            event: if event_type.is_empty() {
                "message".into()
            } else {
                event_type
            },
            data,
        }));
    }
}

/// Why reading a stream stopped.
#[derive(Debug, Clone, PartialEq)]
pub enum End {
    /// The server ended the stream (or the connection broke).
    Ended(String),
    Timeout,
}

type Body = futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>;

/// An open SSE connection. Dropping it closes the connection.
pub struct Sse {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    body: Option<Body>,
    parser: Parser,
    pub ended: Option<String>,
}

impl Sse {
    /// GETs `path` on `base` with an optional `Last-Event-ID` header. A non-2xx answer is an
    /// `Err` with its body.
    pub async fn open(
        base: &str,
        path: &str,
        last_event_id: Option<&str>,
    ) -> Result<Sse, HttpError> {
        let headers: Vec<(String, String)> = last_event_id
            .map(|id| ("last-event-id".to_string(), id.to_string()))
            .into_iter()
            .collect();
        Sse::open_with_headers(base, path, &headers).await
    }

    /// GETs `path` with arbitrary request headers (tokens, cookies, origins); a
    /// `Last-Event-ID` among them also seeds the parser's last id.
    pub async fn open_with_headers(
        base: &str,
        path: &str,
        headers: &[(String, String)],
    ) -> Result<Sse, HttpError> {
        let mut req = http()
            .get(format!("{base}{path}"))
            .header("accept", "text/event-stream");
        let mut last_event_id = None;
        for (k, v) in headers {
            if k.eq_ignore_ascii_case("last-event-id") {
                last_event_id = Some(v.as_str());
            }
            req = req.header(k.as_str(), v.as_str());
        }
        let resp = match within(WAIT, &format!("the response to GET {path}"), req.send()).await {
            Ok(r) => r,
            Err(e) => {
                return Err(HttpError {
                    status: 0,
                    headers: Default::default(),
                    body: format!("request failed: {}", error_chain(&e)),
                })
            }
        };
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        // A `busy` answer (a load refusal told to an EventSource): a 200 stream that carries
        // `Retry-After`, one `busy` event, and ends. Returned as the refusal it is, with the
        // busy event's JSON as the body.
        if resp.status().is_success() && headers.contains_key("retry-after") {
            let bytes = within(WAIT, "a busy stream to end", resp.bytes())
                .await
                .unwrap_or_default();
            let mut parser = Parser::new("");
            parser.feed(&bytes);
            let mut items = Vec::new();
            while let Some(item) = parser.pop() {
                items.push(item);
            }
            let busy = items
                .iter()
                .find_map(|i| match i {
                    Item::Event(e) if e.event == "busy" => Some(e.data.clone()),
                    _ => None,
                })
                .unwrap_or_else(|| panic!("a 200 with Retry-After that is not busy: {items:?}"));
            assert!(
                matches!(items.first(), Some(Item::Retry(_))),
                "busy starts with retry: {items:?}"
            );
            return Err(HttpError {
                status,
                headers,
                body: busy,
            });
        }
        if !resp.status().is_success() {
            let body = within(WAIT, "an error body", resp.text())
                .await
                .unwrap_or_default();
            return Err(HttpError {
                status,
                headers,
                body,
            });
        }
        Ok(Sse {
            status,
            headers,
            body: Some(resp.bytes_stream().boxed()),
            parser: Parser::new(last_event_id.unwrap_or("")),
            ended: None,
        })
    }

    /// Opens `channels` resuming from `last_id` (as the `Last-Event-ID` header), and reads the
    /// `retry:` frame the gateway sends first: once it is here the subscription is registered,
    /// so everything written afterwards reaches this connection.
    pub async fn subscribe(base: &str, channels: &[&str], last_id: Option<&str>) -> Sse {
        let path = stream_path(channels, None, None);
        let mut sse = Sse::open(base, &path, last_id)
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {} {}", e.status, e.body));
        sse.expect_retry().await;
        sse
    }

    /// Opens `path` resuming from `last_id` (header) and reads the `retry:` frame.
    pub async fn resume(base: &str, path: &str, last_id: &str) -> Sse {
        let mut sse = Sse::open(base, path, Some(last_id))
            .await
            .unwrap_or_else(|e| panic!("GET {path} from {last_id}: {} {}", e.status, e.body));
        sse.expect_retry().await;
        sse
    }

    /// Reads the first item and checks it is `retry:`.
    pub async fn expect_retry(&mut self) -> u64 {
        match self.next(WAIT).await {
            Ok(Item::Retry(ms)) => ms,
            other => panic!("the first frame should be retry:, got {other:?}"),
        }
    }

    /// The browser's lastEventId: the id of the last message (with or without data) seen.
    pub fn last_event_id(&self) -> &str {
        &self.parser.last_event_id
    }

    /// The next item, waiting at most `within`.
    pub async fn next(&mut self, within: Duration) -> Result<Item, End> {
        match tokio::time::timeout(within, self.next_item()).await {
            Ok(r) => r,
            Err(_) => Err(End::Timeout),
        }
    }

    /// The next item, however long it takes (cancel-safe: nothing is lost if dropped).
    pub async fn next_item(&mut self) -> Result<Item, End> {
        loop {
            if let Some(item) = self.parser.pop() {
                return Ok(item);
            }
            if let Some(why) = &self.ended {
                return Err(End::Ended(why.clone()));
            }
            let Some(body) = self.body.as_mut() else {
                return Err(End::Ended("closed".into()));
            };
            match body.next().await {
                Some(Ok(chunk)) => self.parser.feed(&chunk),
                Some(Err(e)) => {
                    self.ended = Some(format!("body error: {e}"));
                    self.body = None;
                }
                None => {
                    self.ended = Some("end of stream".into());
                    self.body = None;
                }
            }
        }
    }

    /// The next dispatched message, skipping comments, `retry:` and `id:`-only frames.
    pub async fn next_event(&mut self, within: Duration) -> Result<Ev, End> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await? {
                Item::Event(ev) => return Ok(ev),
                _ => continue,
            }
        }
    }

    /// Exactly `n` messages, or a panic saying how many arrived.
    pub async fn events(&mut self, n: usize, within: Duration) -> Vec<Ev> {
        let deadline = tokio::time::Instant::now() + within;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await {
                Ok(ev) => out.push(ev),
                Err(e) => panic!(
                    "expected {n} events, got {} then {e:?}; last: {:?}",
                    out.len(),
                    out.last()
                ),
            }
        }
        out
    }

    /// Messages up to and including the first that satisfies `last`; on a timeout or the end
    /// of the stream, panics listing what did arrive.
    pub async fn events_until(&mut self, within: Duration, last: impl Fn(&Ev) -> bool) -> Vec<Ev> {
        let deadline = tokio::time::Instant::now() + within;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await {
                Ok(ev) => {
                    let done = last(&ev);
                    out.push(ev);
                    if done {
                        return out;
                    }
                }
                Err(e) => panic!(
                    "the awaited event did not arrive ({e:?}); got {}: {:?}",
                    out.len(),
                    out.iter()
                        .map(|e| e.data.chars().take(200).collect::<String>())
                        .collect::<Vec<_>>()
                ),
            }
        }
    }

    /// Asserts that no message arrives within `quiet` (only for negative checks: how long to
    /// wait for something that must not happen is a choice, not a synchronization).
    pub async fn expect_no_event(&mut self, quiet: Duration) {
        match self.next_event(quiet).await {
            Err(End::Timeout) => {}
            Ok(ev) => panic!("unexpected event {ev:?}"),
            Err(e) => panic!("stream ended: {e:?}"),
        }
    }

    /// Reads until the stream ends, returning the messages it still carried.
    pub async fn drain_to_end(&mut self, within: Duration) -> Vec<Ev> {
        let deadline = tokio::time::Instant::now() + within;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Ok(Item::Event(ev)) => out.push(ev),
                Ok(_) => {}
                Err(End::Ended(_)) => return out,
                Err(End::Timeout) => panic!(
                    "the stream did not end within {within:?} ({} events read)",
                    out.len()
                ),
            }
        }
    }
}

/// Reads messages starting with `sse` until one satisfies `last`, reconnecting to `base` with
/// the last event id whenever the server ends the stream (as a browser does). Returns the
/// messages and how many times it reconnected.
pub async fn read_resuming_until(
    base: &str,
    channels: &[&str],
    mut sse: Sse,
    within: Duration,
    mut last: impl FnMut(&Ev) -> bool,
) -> (Vec<Ev>, u32) {
    let deadline = tokio::time::Instant::now() + within;
    let mut out = Vec::new();
    let mut reconnects = 0;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match sse.next_event(left).await {
            Ok(ev) => {
                let done = last(&ev);
                out.push(ev);
                if done {
                    return (out, reconnects);
                }
            }
            Err(End::Timeout) => panic!(
                "the last event did not arrive on {channels:?} within {within:?} ({} read, {reconnects} reconnects): {:?}",
                out.len(),
                out.iter().map(|e| e.data.chars().take(200).collect::<String>()).collect::<Vec<_>>()
            ),
            Err(End::Ended(_)) => {
                let last = sse.last_event_id().to_string();
                let last = (!last.is_empty()).then_some(last);
                sse = loop {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "could not reconnect to {base} within {within:?}"
                    );
                    match Sse::open(base, &stream_path(channels, None, None), last.as_deref()).await {
                        Ok(mut s) => {
                            s.expect_retry().await;
                            break s;
                        }
                        // A browser retries after its reconnection delay.
                        Err(e) if e.is_load() => {
                            tokio::time::sleep(Duration::from_millis(50)).await
                        }
                        Err(e) => panic!("reconnecting from {last:?}: {} {}", e.status, e.body),
                    }
                };
                reconnects += 1;
            }
        }
    }
}

/// Asserts that a response is a 4xx with a JSON body `{error, message}`.
pub fn assert_json_4xx(what: &str, r: &HttpError) -> serde_json::Value {
    assert!(
        (400..500).contains(&r.status),
        "{what}: expected a 4xx, got {} {}",
        r.status,
        r.body
    );
    let ct = r
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(
        ct.starts_with("application/json"),
        "{what}: content-type {ct:?}"
    );
    let v: serde_json::Value = serde_json::from_str(&r.body)
        .unwrap_or_else(|e| panic!("{what}: body is not JSON ({e}): {:?}", r.body));
    assert!(v["error"].is_string(), "{what}: no error code in {v}");
    assert!(v["message"].is_string(), "{what}: no message in {v}");
    v
}

/// The `mongo-sse` binary with a clean environment: nothing from the developer's shell (a stray
/// `SSE_AUTH`) leaks in; stdout and stderr piped; killed if the test drops it.
pub fn mongo_sse(args: &[&str], vars: &[(&str, &str)]) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_mongo-sse"));
    c.args(args)
        .env_clear()
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in vars {
        c.env(k, v);
    }
    c
}

#[cfg(test)]
mod parser_tests {
    use super::*;

    #[test]
    fn parses_per_the_html_standard() {
        let mut p = Parser::new("");
        p.feed(b"retry: 3000\n\n: heartbeat\n\nid: a\ndata: {\"x\":1}\n\nid: b\n\n");
        p.feed(b"event: gap\r\nid: c\r\ndata: 1\r");
        p.feed(b"\ndata:2\r\rdata: x\n\n");
        let items: Vec<Item> = std::iter::from_fn(|| p.pop()).collect();
        assert_eq!(
            items,
            vec![
                Item::Retry(3000),
                Item::Comment("heartbeat".into()),
                Item::Event(Ev {
                    id: "a".into(),
                    event: "message".into(),
                    data: "{\"x\":1}".into()
                }),
                Item::IdOnly("b".into()),
                Item::Event(Ev {
                    id: "c".into(),
                    event: "gap".into(),
                    data: "1\n2".into()
                }),
                Item::Event(Ev {
                    id: "c".into(),
                    event: "message".into(),
                    data: "x".into()
                }),
            ]
        );
        assert_eq!(p.last_event_id, "c");
        // An id without the closing blank line is not the event source's id yet.
        p.feed(b"id: d\ndata: partial\n");
        assert_eq!(p.pop(), None);
        assert_eq!(p.last_event_id, "c");
    }
}
