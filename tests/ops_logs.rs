//! The binary's logs (issue 9, item 5): `SSE_LOG_FORMAT=json` writes one JSON object per line
//! with the connection open/close fields, an unknown format stops it with exit code 2, and no
//! token, admin token or connection-string password reaches the output of a run that uses
//! them. These run `mongo-sse serve` itself, as operators do, against mongo-sim.

#[path = "common/mod.rs"]
mod common;

use std::process::Stdio;
use std::sync::{Arc, Mutex};

use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

const ADMIN: &str = "ops-logs-admin-token-0123456789";
const SECRET: &str = "ops-logs-hs256-secret-0123456789abcdef";
const PASSWORD: &str = "Pa55w0rd-never-logged";

fn token(sub: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": sub, "exp": now + 3600, "channels": ["logs"]}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign a test token")
}

/// A running `mongo-sse serve` and every line it wrote to stderr.
struct Gw {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    rx: mpsc::UnboundedReceiver<String>,
}

impl Gw {
    fn spawn(vars: &[(&str, &str)]) -> Gw {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mongo-sse"));
        cmd.arg("serve")
            .env_clear()
            .env("SSE_BIND", "127.0.0.1:0")
            .env("SSE_CONNECT_RATE_PER_IP", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("run mongo-sse");
        let stderr = child.stderr.take().expect("stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::unbounded_channel();
        let all = Arc::clone(&lines);
        tokio::spawn(async move {
            let mut r = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = r.next_line().await {
                all.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(line.clone());
                let _ = tx.send(line);
            }
        });
        Gw { child, lines, rx }
    }

    /// The next JSON line whose `message` starts with `prefix`.
    async fn line(&mut self, prefix: &str) -> Value {
        within(WAIT, &format!("a log line `{prefix}…`"), async {
            loop {
                let line = self
                    .rx
                    .recv()
                    .await
                    .unwrap_or_else(|| panic!("the gateway exited before logging `{prefix}`"));
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {line}"));
                if v["message"].as_str().is_some_and(|m| m.starts_with(prefix)) {
                    return v;
                }
            }
        })
        .await
    }

    /// Stops the process and returns everything it logged.
    async fn stop(mut self) -> Vec<String> {
        let _ = self.child.start_kill();
        let _ = within(WAIT, "the gateway to exit", self.child.wait()).await;
        // The reader ends at EOF; what it read is in `lines`.
        while self.rx.recv().await.is_some() {}
        let lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        lines.clone()
    }
}

fn assert_no_secrets(lines: &[String], secrets: &[&str]) {
    assert!(!lines.is_empty());
    for line in lines {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {line}"));
        assert!(v.is_object(), "{line}");
        for s in secrets {
            assert!(!line.contains(s), "a secret in the logs: {line}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_carry_the_connection_fields_and_no_token() {
    let mongo = Mongo::start("ops_logs_json").await;
    let jwt = token("alice");
    let mut gw = Gw::spawn(&[
        ("SSE_LOG_FORMAT", "json"),
        ("RUST_LOG", "trace"),
        ("SSE_AUTH", "jwt"),
        ("SSE_JWT_SECRET", SECRET),
        ("SSE_ADMIN_TOKEN", ADMIN),
        ("SSE_METRICS_PUBLIC", "false"),
        ("MONGODB_URI", &mongo.uri),
        ("MONGODB_DB", &mongo.db_name),
    ]);
    let serving = gw.line("mongo-sse serving").await;
    let addr = serving["addr"].as_str().expect("addr").to_string();
    let base = format!("http://{addr}");
    wait_ready(&base).await;

    let path = stream_path(&["logs:w1"], None, None);
    let hdr = vec![("authorization".to_string(), format!("Bearer {jwt}"))];
    let mut sse = Sse::open_with_headers(&base, &path, &hdr)
        .await
        .unwrap_or_else(|e| panic!("{} {}", e.status, e.body));
    sse.expect_retry().await;
    let opened = gw.line("connection opened").await;
    assert_eq!(opened["subject"], "alice");
    assert_eq!(opened["channels"], "logs:w1");
    assert_eq!(opened["resume"], "live");
    mongo.insert("w1", "f1", 1).await;
    assert_eq!(sse.events(1, WAIT).await[0].seq(), 1);
    // The admin token on a private /metrics, and a token in a refused query.
    let auth = format!("Bearer {ADMIN}");
    let m = get(&base, "/metrics", &[("authorization", auth.as_bytes())]).await;
    assert_eq!(m.status, 200);
    let refused = get(&base, &format!("{path}&access_token={jwt}"), &[]).await;
    assert_eq!(refused.status, 401);
    drop(sse);

    let closed = gw.line("connection closed").await;
    assert_eq!(closed["subject"], "alice");
    assert_eq!(closed["channels"], "logs:w1");
    assert_eq!(closed["reason"], "client");
    assert_eq!(closed["events_sent"], 1);
    assert!(closed["duration_ms"].is_u64(), "{closed}");
    assert_eq!(closed["level"], "INFO");
    assert!(closed["timestamp"].is_string());

    let lines = gw.stop().await;
    assert_no_secrets(&lines, &[&jwt, ADMIN, SECRET]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_uri_password_and_tokens_never_reach_the_logs() {
    if skip_unless_sim(
        "a_uri_password_never_reaches_the_logs",
        "puts its own credentials in the URI",
    ) {
        return;
    }
    let mongo = Mongo::start("ops_logs_password").await;
    // mongo-sim has no users: the driver's authentication fails, and the gateway logs why,
    // over and over, with the connection string's host in the messages.
    let uri = mongo
        .uri
        .replacen("mongodb://", &format!("mongodb://opsuser:{PASSWORD}@"), 1);
    let uri = format!("{uri}&serverSelectionTimeoutMS=300&connectTimeoutMS=300");
    let jwt = token("bob");
    let mut gw = Gw::spawn(&[
        ("SSE_LOG_FORMAT", "json"),
        ("RUST_LOG", "trace"),
        ("SSE_AUTH", "jwt"),
        ("SSE_JWT_SECRET", SECRET),
        ("SSE_ADMIN_TOKEN", ADMIN),
        ("MONGODB_URI", &uri),
        ("MONGODB_DB", &mongo.db_name),
    ]);
    let serving = gw.line("mongo-sse serving").await;
    let base = format!("http://{}", serving["addr"].as_str().expect("addr"));
    gw.line("cannot open the change stream").await;
    let path = stream_path(&["logs:w1"], None, None);
    let auth = format!("Bearer {jwt}");
    let r = get(&base, &path, &[("authorization", auth.as_bytes())]).await;
    assert_eq!(r.status, 503, "not ready without MongoDB: {}", r.body);
    let admin = format!("Bearer {ADMIN}");
    let m = get(&base, "/metrics", &[("authorization", admin.as_bytes())]).await;
    assert_eq!(m.status, 200);
    assert!(
        m.body.contains("mongo_sse_resume_headroom_seconds -1"),
        "{}",
        m.body
    );
    gw.line("cannot read local.oplog.rs").await;
    let lines = gw.stop().await;
    assert_no_secrets(&lines, &[PASSWORD, &jwt, ADMIN, SECRET]);
    // The failure itself is logged (so the test looked where a password would have leaked).
    assert!(lines
        .iter()
        .any(|l| l.contains("cannot open the change stream")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_log_format_stops_the_binary_with_exit_code_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_mongo-sse"))
        .arg("serve")
        .env_clear()
        .env("SSE_LOG_FORMAT", "xml")
        .env("SSE_AUTH", "none")
        .stdin(Stdio::null())
        .output();
    let out = within(WAIT, "mongo-sse to exit", out)
        .await
        .expect("run mongo-sse");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("SSE_LOG_FORMAT"), "{stderr}");
}
