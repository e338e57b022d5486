//! Tokens never reach the logs. Every tracing event of the process — the gateway, actix, the
//! MongoDB driver, mongo-sim — is captured at TRACE level while requests carry tokens in every
//! place a token can be (header, cookie, allowed query, refused query, session POST, invalid
//! and expired tokens), and the capture must contain none of them. A binary of its own: it
//! installs the global subscriber.

#[path = "common/mod.rs"]
mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

const SECRET: &str = "test-only-hs256-secret-0123456789abcdef";

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

fn token(sub: &str, exp_from_now: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": sub, "exp": now + exp_from_now, "channels": ["logs"]}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

async fn send(method: reqwest::Method, url: String, headers: &[(&str, String)]) -> u16 {
    let mut req = http().request(method, url);
    for (k, v) in headers {
        req = req.header(*k, v.as_str());
    }
    let resp = within(WAIT, "a response", req.send())
        .await
        .expect("request");
    resp.status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_never_appear_in_logs() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let mongo = Mongo::start("auth_logs").await;
    let jwt = [
        ("SSE_AUTH", "jwt"),
        ("SSE_JWT_SECRET", SECRET),
        ("SSE_ALLOW_QUERY_TOKEN", "true"),
    ];
    let allowing = start_gateway(&mongo, &jwt).await;
    let refusing = start_gateway(&mongo, &jwt[..2]).await;
    let a = base_url(&allowing);
    let r = base_url(&refusing);
    let path = stream_path(&["logs"], None, None);

    let tokens: Vec<String> = (0..6).map(|i| token(&format!("user{i}"), 600)).collect();
    let expired = token("old", -60);
    let wrong = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "x", "exp": 4_000_000_000u64}),
        &EncodingKey::from_secret(b"not-the-secret-not-the-secret-!!"),
    )
    .unwrap();
    let get = reqwest::Method::GET;
    let post = reqwest::Method::POST;

    let mut statuses = vec![
        send(
            get.clone(),
            format!("{a}{path}"),
            &[("authorization", format!("Bearer {}", tokens[0]))],
        )
        .await,
        send(
            get.clone(),
            format!("{a}{path}"),
            &[("cookie", format!("sse_token={}", tokens[1]))],
        )
        .await,
        send(
            get.clone(),
            format!("{a}{path}&access_token={}", tokens[2]),
            &[],
        )
        .await,
        send(
            get.clone(),
            format!("{r}{path}&access_token={}", tokens[3]),
            &[],
        )
        .await,
        send(
            post.clone(),
            format!("{a}/v1/session"),
            &[("authorization", format!("Bearer {}", tokens[4]))],
        )
        .await,
        send(
            get.clone(),
            format!("{a}{path}&access_token={}&x=1", tokens[5]),
            &[("authorization", "Bearer garbage".into())],
        )
        .await,
        send(
            get.clone(),
            format!("{a}{path}"),
            &[("authorization", format!("Bearer {expired}"))],
        )
        .await,
        send(get.clone(), format!("{a}{path}&access_token={wrong}"), &[]).await,
    ];
    // The streams above were dropped at once; a real one also runs a while.
    let mut s = Sse::open(&a, &format!("{path}&access_token={}", tokens[2]), None)
        .await
        .unwrap();
    s.expect_retry().await;
    mongo.insert("w1", "f1", 1).await;
    s.next_event(WAIT).await.expect("an event");
    drop(s);
    statuses.sort();
    assert_eq!(statuses, vec![200, 200, 200, 204, 401, 401, 401, 401]);

    allowing.shutdown().await;
    refusing.shutdown().await;
    let logs = capture.text();
    // The capture works, and it saw the requests (with the query redacted).
    assert!(logs.contains("mongo_sse::access"), "no access log captured");
    assert!(
        logs.contains("access_token=REDACTED"),
        "redaction not visible"
    );
    for (i, t) in tokens.iter().chain([&expired, &wrong]).enumerate() {
        // The signature part alone would be enough to replay nothing, but the whole token, its
        // payload and its signature must all be absent.
        let parts: Vec<&str> = t.split('.').collect();
        for (what, needle) in [
            ("token", t.as_str()),
            ("payload", parts[1]),
            ("signature", parts[2]),
        ] {
            assert!(
                !logs.contains(needle),
                "the {what} of token {i} appears in the logs"
            );
        }
    }
    let mut out = std::io::stderr();
    let _ = writeln!(
        out,
        "captured {} bytes of logs, no token in them",
        logs.len()
    );
}
