//! What the access-control tests add to the shared harness: minting tokens (HS256 with a test
//! secret, RS256 and ES256 with the test-only keys in `tests/fixtures/`), gateways with
//! `SSE_AUTH=jwt`, and an SSE client that can send any headers (`Authorization`, `Cookie`,
//! `Origin`), which the shared one does not need to.

#![allow(dead_code)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mongo_sse::gateway::Gateway;
use serde_json::{json, Value};

use crate::common::*;

/// The HS256 secret of the test gateways. Test-only.
pub const SECRET: &str = "test-only-hs256-secret-0123456789abcdef";

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

pub fn hs256(claims: &Value) -> String {
    hs256_with(claims, SECRET.as_bytes())
}

pub fn hs256_with(claims: &Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .expect("sign HS256")
}

/// Signs with a PEM private key from `tests/fixtures/`.
pub fn sign_pem(alg: Algorithm, key_file: &str, claims: &Value) -> String {
    let pem = std::fs::read(fixture(key_file)).expect("read a test key");
    let key = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
        _ => EncodingKey::from_rsa_pem(&pem),
    }
    .expect("parse a test key");
    jsonwebtoken::encode(&Header::new(alg), claims, &key).expect("sign")
}

/// Claims for `sub` granting `channels`, valid for `ttl` seconds from now.
pub fn claims(sub: &str, channels: &[&str], ttl: u64) -> Value {
    json!({"sub": sub, "exp": now() + ttl, "iat": now(), "channels": channels})
}

/// An HS256 token for `sub` granting `channels` for ten minutes.
pub fn token(sub: &str, channels: &[&str]) -> String {
    hs256(&claims(sub, channels, 600))
}

/// A gateway with `SSE_AUTH=jwt` (HS256 with [`SECRET`]) and `vars` on top.
pub async fn jwt_gateway(mongo: &Mongo, vars: &[(&str, &str)]) -> Gateway {
    let mut all = vec![("SSE_AUTH", "jwt"), ("SSE_JWT_SECRET", SECRET)];
    all.extend_from_slice(vars);
    start_gateway(mongo, &all).await
}

pub fn bearer(token: &str) -> (String, String) {
    ("authorization".to_string(), format!("Bearer {token}"))
}

pub fn cookie(token: &str) -> (String, String) {
    ("cookie".to_string(), format!("sse_token={token}"))
}

/// Any request; the answer's status, headers and body.
pub async fn request(
    method: reqwest::Method,
    base: &str,
    path: &str,
    headers: &[(String, String)],
) -> HttpError {
    let mut req = http().request(method.clone(), format!("{base}{path}"));
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let resp = within(WAIT, &format!("{method} {path}"), req.send())
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = within(WAIT, "a body", resp.text())
        .await
        .unwrap_or_default();
    HttpError {
        status,
        headers,
        body,
    }
}

/// Asserts a 401 with a JSON body and a `WWW-Authenticate: Bearer` challenge; returns the body.
pub fn assert_401(what: &str, r: &HttpError) -> Value {
    assert_eq!(r.status, 401, "{what}: {}", r.body);
    let v = assert_json_4xx(what, r);
    let challenge = r
        .headers
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("{what}: no WWW-Authenticate"));
    assert!(
        challenge.starts_with("Bearer realm=\"mongo-sse\""),
        "{what}: {challenge}"
    );
    v
}

/// Asserts a load refusal with a `Retry-After` of at least one second: for the stream
/// client (which accepts `text/event-stream`) a `busy` stream, for others a JSON 429. Returns
/// `{"error", "message"}` either way (a busy event's `reason` is the 429's `error`).
pub fn assert_429(what: &str, r: &HttpError) -> Value {
    let v = match r.busy() {
        Some(b) => {
            let retry_ms = b["retry_ms"].as_u64().unwrap_or(0);
            assert!(retry_ms >= 1000, "{what}: busy retry_ms {b}");
            serde_json::json!({"error": b["reason"], "message": b["message"]})
        }
        None => {
            assert_eq!(r.status, 429, "{what}: {}", r.body);
            assert_json_4xx(what, r)
        }
    };
    let retry: u64 = r
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{what}: no numeric Retry-After"));
    assert!(retry >= 1, "{what}: Retry-After {retry}");
    v
}

/// An SSE connection opened with arbitrary headers, past its first `retry:` frame: the shared
/// harness client ([`Sse`]) with the request shapes access control needs.
pub struct Stream(Sse);

impl std::ops::Deref for Stream {
    type Target = Sse;
    fn deref(&self) -> &Sse {
        &self.0
    }
}

impl std::ops::DerefMut for Stream {
    fn deref_mut(&mut self) -> &mut Sse {
        &mut self.0
    }
}

impl Stream {
    /// GETs `path`; a non-2xx answer is an `Err`.
    pub async fn open(
        base: &str,
        path: &str,
        headers: &[(String, String)],
    ) -> Result<Stream, HttpError> {
        let mut sse = Sse::open_with_headers(base, path, headers).await?;
        sse.expect_retry().await;
        Ok(Stream(sse))
    }

    /// Like [`Stream::open`], panicking on refusal.
    pub async fn subscribe(base: &str, channels: &[&str], headers: &[(String, String)]) -> Stream {
        let path = stream_path(channels, None, None);
        Stream::open(base, &path, headers)
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {} {}", e.status, e.body))
    }
}

/// Opens streams until one is admitted (a place frees up once the server has noticed a closed
/// connection); fails the test after [`WAIT`].
pub async fn open_eventually(base: &str, path: &str, headers: &[(String, String)]) -> Stream {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match Stream::open(base, path, headers).await {
            Ok(s) => return s,
            Err(e) if e.is_load() && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("GET {path}: {} {}", e.status, e.body),
        }
    }
}
