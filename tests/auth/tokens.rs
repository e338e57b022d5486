//! Where tokens come from (header, the cookie set by `/v1/session`, the query when allowed) and
//! every way a token is refused: 401 with a JSON body and a `WWW-Authenticate` challenge.
//! Channels the token does not grant: 403 naming them, and nothing streamed.

use base64::Engine;
use jsonwebtoken::Algorithm;
use reqwest::Method;
use serde_json::json;

use crate::common::*;
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_cookie_and_query_tokens() {
    let mongo = Mongo::start("auth_paths").await;
    let gw = jwt_gateway(&mongo, &[]).await;
    let base = base_url(&gw);
    let tok = token("alice", &["logs:w1"]);

    // 1. Authorization: Bearer.
    let mut by_header = Stream::subscribe(&base, &["logs:w1"], &[bearer(&tok)]).await;

    // 2. The cookie from POST /v1/session, sent by itself (as an EventSource would).
    let r = request(Method::POST, &base, "/v1/session", &[bearer(&tok)]).await;
    assert_eq!(r.status, 204, "{}", r.body);
    let cookies: Vec<&str> = r
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert_eq!(cookies.len(), 2, "{cookies:?}");
    for c in &cookies {
        assert!(c.starts_with(&format!("sse_token={tok};")), "{c}");
        for attr in [
            "HttpOnly",
            "Secure",
            "SameSite=Strict",
            "Max-Age=",
            "Expires=",
        ] {
            assert!(c.contains(attr), "{attr} missing: {c}");
        }
    }
    assert!(cookies.iter().any(|c| c.contains("Path=/v1/stream")));
    assert!(cookies
        .iter()
        .any(|c| c.contains("Path=/wfm/workflow/workspace")));
    let value = cookies[0]
        .split(';')
        .next()
        .and_then(|kv| kv.split_once('='))
        .map(|(_, v)| v.to_string())
        .unwrap();
    let mut by_cookie = Stream::subscribe(&base, &["logs:w1:f1"], &[cookie(&value)]).await;
    let mut compat = Stream::open(
        &base,
        "/wfm/workflow/workspace/w1/workflow/f1/logs/stream",
        &[cookie(&value)],
    )
    .await
    .unwrap_or_else(|e| panic!("compat route with the cookie: {} {}", e.status, e.body));

    // 3. The query parameter is refused while SSE_ALLOW_QUERY_TOKEN is off, with directions.
    let path = format!(
        "{}&access_token={tok}",
        stream_path(&["logs:w1"], None, None)
    );
    let r = get(&base, &path, &[]).await;
    let v = assert_401("query token while disabled", &r);
    assert_eq!(v["error"], "query_token_disabled");
    let msg = v["message"].as_str().unwrap();
    assert!(
        msg.contains("/v1/session") && msg.contains("Authorization"),
        "{msg}"
    );
    assert!(!r.body.contains(&tok));

    mongo.insert("w1", "f1", 1).await;
    for s in [&mut by_header, &mut by_cookie, &mut compat] {
        let ev = s.next_event(WAIT).await.expect("an event");
        assert_eq!(ev.seq(), 1);
    }

    // DELETE /v1/session clears the cookie on both paths.
    let r = request(Method::DELETE, &base, "/v1/session", &[]).await;
    assert_eq!(r.status, 204);
    let cleared: Vec<&str> = r
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert_eq!(cleared.len(), 2);
    assert!(
        cleared.iter().all(|c| c.contains("Max-Age=0")),
        "{cleared:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_token_when_allowed_and_insecure_cookie() {
    let mongo = Mongo::start("auth_query").await;
    let gw = jwt_gateway(
        &mongo,
        &[
            ("SSE_ALLOW_QUERY_TOKEN", "true"),
            ("SSE_COOKIE_INSECURE", "true"),
        ],
    )
    .await;
    let base = base_url(&gw);
    let tok = token("bob", &["logs"]);
    // The shared client sends no headers at all: the query is the only credential.
    let path = format!(
        "{}&access_token={tok}",
        stream_path(&["logs:w2"], None, None)
    );
    let mut s = Sse::open(&base, &path, None)
        .await
        .unwrap_or_else(|e| panic!("{} {}", e.status, e.body));
    s.expect_retry().await;
    mongo.insert("w2", "f1", 7).await;
    assert_eq!(s.next_event(WAIT).await.expect("an event").seq(), 7);
    // A bad query token is still a 401.
    let bad = format!(
        "{}&access_token=not.a.token",
        stream_path(&["logs"], None, None)
    );
    assert_401("bad query token", &get(&base, &bad, &[]).await);

    let r = request(Method::POST, &base, "/v1/session", &[bearer(&tok)]).await;
    assert_eq!(r.status, 204);
    for c in r.headers.get_all("set-cookie") {
        let c = c.to_str().unwrap();
        assert!(!c.contains("Secure"), "SSE_COOKIE_INSECURE=true: {c}");
        assert!(c.contains("HttpOnly"), "{c}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_401_with_a_challenge() {
    let mongo = Mongo::start("auth_bad").await;
    let gw = jwt_gateway(
        &mongo,
        &[
            ("SSE_JWT_ISSUER", "https://idp.test"),
            ("SSE_JWT_AUDIENCE", "mongo-sse"),
        ],
    )
    .await;
    let base = base_url(&gw);
    let n = now();
    let good = json!({"sub": "u", "exp": n + 600, "iss": "https://idp.test", "aud": "mongo-sse", "channels": ["logs"]});
    // Sanity: the good claims pass.
    let path = stream_path(&["logs:w1"], None, None);
    Stream::open(&base, &path, &[bearer(&hs256(&good))])
        .await
        .unwrap_or_else(|e| panic!("good token: {} {}", e.status, e.body));

    let with = |k: &str, v: serde_json::Value| {
        let mut c = good.clone();
        c[k] = v;
        c
    };
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let alg_none = format!(
        "{}.{}.",
        b64(r#"{"alg":"none","typ":"JWT"}"#),
        b64(&good.to_string())
    );
    let pem = std::fs::read(fixture("test-only-rsa-public.pem")).unwrap();
    type Headers = Vec<(String, String)>;
    let cases: Vec<(&str, Headers, &str)> = vec![
        ("no token", vec![], "unauthorized"),
        (
            "wrong signature",
            vec![bearer(&hs256_with(
                &good,
                b"another-secret-0123456789abcdef0123",
            ))],
            "invalid_token",
        ),
        ("alg none", vec![bearer(&alg_none)], "invalid_token"),
        (
            "RS256-signed against an HS256 gateway",
            vec![bearer(&sign_pem(
                Algorithm::RS256,
                "test-only-rsa-private.pem",
                &good,
            ))],
            "invalid_token",
        ),
        (
            "expired",
            vec![bearer(&hs256(&with("exp", json!(n - 10))))],
            "invalid_token",
        ),
        (
            "not yet valid",
            vec![bearer(&hs256(&with("nbf", json!(n + 3600))))],
            "invalid_token",
        ),
        (
            "issued in the future",
            vec![bearer(&hs256(&with("iat", json!(n + 3600))))],
            "invalid_token",
        ),
        (
            "wrong audience",
            vec![bearer(&hs256(&with("aud", json!("other"))))],
            "invalid_token",
        ),
        (
            "wrong issuer",
            vec![bearer(&hs256(&with("iss", json!("https://evil"))))],
            "invalid_token",
        ),
        ("garbage", vec![bearer("garbage")], "invalid_token"),
        ("garbage cookie", vec![cookie("a.b.c")], "invalid_token"),
        (
            "basic auth",
            vec![("authorization".into(), "Basic dTpw".into())],
            "invalid_authorization",
        ),
        (
            "HMAC with the public key as secret",
            vec![bearer(&hs256_with(&good, &pem))],
            "invalid_token",
        ),
    ];
    for (what, headers, code) in cases {
        let r = match Stream::open(&base, &path, &headers).await {
            Ok(_) => panic!("{what}: admitted"),
            Err(r) => r,
        };
        let v = assert_401(what, &r);
        assert_eq!(v["error"], code, "{what}: {v}");
        let challenge = r.headers["www-authenticate"].to_str().unwrap();
        if code != "unauthorized" {
            assert!(challenge.contains("error="), "{what}: {challenge}");
        }
        // The session endpoint refuses the same tokens the same way.
        if let Some(h) = headers.iter().find(|(k, _)| k == "authorization") {
            let r = request(Method::POST, &base, "/v1/session", std::slice::from_ref(h)).await;
            assert_401(&format!("session: {what}"), &r);
            assert!(r.headers.get("set-cookie").is_none(), "{what}");
        }
    }
    // /v1/session takes only the header: a cookie cannot mint a cookie.
    let r = request(Method::POST, &base, "/v1/session", &[cookie(&hs256(&good))]).await;
    assert_401("session from a cookie", &r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_and_es256_with_public_key_files() {
    let mongo = Mongo::start("auth_pk").await;
    let rsa = jwt_gateway(
        &mongo,
        &[
            ("SSE_JWT_SECRET", ""),
            ("SSE_JWT_ALGORITHM", "RS256"),
            (
                "SSE_JWT_PUBLIC_KEY_FILE",
                &fixture("test-only-rsa-public.pem"),
            ),
        ],
    )
    .await;
    let ec = jwt_gateway(
        &mongo,
        &[
            ("SSE_JWT_SECRET", ""),
            ("SSE_JWT_ALGORITHM", "ES256"),
            (
                "SSE_JWT_PUBLIC_KEY_FILE",
                &fixture("test-only-ec-public.pem"),
            ),
        ],
    )
    .await;
    let c = claims("carol", &["logs:w1"], 600);
    let path = stream_path(&["logs:w1"], None, None);
    let rs = sign_pem(Algorithm::RS256, "test-only-rsa-private.pem", &c);
    let es = sign_pem(Algorithm::ES256, "test-only-ec-private.pem", &c);
    let other_rs = sign_pem(Algorithm::RS256, "test-only-other-rsa-private.pem", &c);
    let mut a = Stream::open(&base_url(&rsa), &path, &[bearer(&rs)])
        .await
        .unwrap();
    let mut b = Stream::open(&base_url(&ec), &path, &[bearer(&es)])
        .await
        .unwrap();
    // Each gateway accepts only its own algorithm and key.
    for (gw, tok, what) in [
        (&rsa, &es, "ES256 at the RS256 gateway"),
        (&rsa, &other_rs, "RS256 by another key"),
        (&rsa, &hs256(&c), "HS256 at the RS256 gateway"),
        (
            &rsa,
            &hs256_with(
                &c,
                &std::fs::read(fixture("test-only-rsa-public.pem")).unwrap(),
            ),
            "HS256 keyed with the RS256 public key",
        ),
        (&ec, &rs, "RS256 at the ES256 gateway"),
    ] {
        match Stream::open(&base_url(gw), &path, &[bearer(tok)]).await {
            Ok(_) => panic!("{what}: admitted"),
            Err(r) => {
                assert_401(what, &r);
            }
        }
    }
    mongo.insert("w1", "f1", 3).await;
    assert_eq!(a.next_event(WAIT).await.unwrap().seq(), 3);
    assert_eq!(b.next_event(WAIT).await.unwrap().seq(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncovered_channels_are_403_and_nothing_streams() {
    let mongo = Mongo::start("auth_403").await;
    let gw = jwt_gateway(&mongo, &[]).await;
    let base = base_url(&gw);
    let tok = token("dave", &["logs:w1", "logs:*:shared"]);
    let cases: &[(&[&str], &[&str])] = &[
        (&["logs:w2"], &["logs:w2"]),
        (&["logs"], &["logs"]),
        (
            &["logs:w1:f1", "logs:w10", "logs:w2:f1"],
            &["logs:w10", "logs:w2:f1"],
        ),
        (&["logs:w3"], &["logs:w3"]),
    ];
    for (asked, refused) in cases {
        let path = stream_path(asked, None, None);
        let r = Stream::open(&base, &path, &[bearer(&tok)]).await;
        let Err(r) = r else {
            panic!("{asked:?}: admitted")
        };
        assert_eq!(r.status, 403, "{asked:?}: {}", r.body);
        let v = assert_json_4xx("403", &r);
        assert_eq!(v["error"], "forbidden_channels");
        assert_eq!(v["channels"], json!(refused), "{asked:?}");
        assert!(!r
            .headers
            .get("content-type")
            .is_some_and(|c| c.to_str().unwrap_or("").contains("event-stream")));
    }
    let r = get(
        &base,
        "/wfm/workflow/workspace/w2/workflow/f1/logs/stream",
        &[("authorization", format!("Bearer {tok}").as_bytes())],
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    // Wildcard grants: any workspace's `shared` workflow, nothing else of it.
    let mut s = Stream::subscribe(&base, &["logs:w7:shared", "logs:w1"], &[bearer(&tok)]).await;
    mongo.insert("w7", "other", 1).await;
    mongo.insert("w7", "shared", 2).await;
    assert_eq!(s.next_event(WAIT).await.unwrap().seq(), 2);
    // A token without a channels claim grants nothing.
    let none = hs256(&json!({"sub": "e", "exp": now() + 60}));
    let r = Stream::open(&base, &stream_path(&["logs"], None, None), &[bearer(&none)]).await;
    assert_eq!(r.err().map(|r| r.status), Some(403));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_without_auth_is_404() {
    let mongo = Mongo::start("auth_session_off").await;
    let gw = start_gateway(&mongo, &[]).await;
    let r = request(
        Method::POST,
        &base_url(&gw),
        "/v1/session",
        &[bearer(&token("x", &["logs"]))],
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(assert_json_4xx("session off", &r)["error"], "auth_disabled");
    // Streams need no token then, and a token in the query is simply ignored.
    let path = format!(
        "{}&access_token=ignored",
        stream_path(&["logs"], None, None)
    );
    Sse::open(&base_url(&gw), &path, None).await.unwrap();
}

/// Hardening #8.12: `exp` is the client's number. One beyond `i64::MAX` (or `SystemTime`'s
/// range) once panicked the worker; it must mean "far future" on the stream and in the
/// session cookie, never a panic or a cookie that expires in 1970.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exp_beyond_any_clock_is_far_future_not_a_panic() {
    let mongo = Mongo::start("auth_huge_exp").await;
    let gw = jwt_gateway(&mongo, &[]).await;
    let base = base_url(&gw);
    for exp in [json!(u64::MAX), json!(i64::MAX as u64 + 1), json!(1e19)] {
        let tok = hs256(&json!({"sub": "alice", "exp": exp, "channels": ["logs:w1"]}));
        let mut s = Stream::subscribe(&base, &["logs:w1"], &[bearer(&tok)]).await;
        mongo.insert("w1", "f1", 1).await;
        assert_eq!(s.next_event(WAIT).await.unwrap().seq(), 1, "exp {exp}");
        drop(s);
        let r = request(Method::POST, &base, "/v1/session", &[bearer(&tok)]).await;
        assert_eq!(r.status, 204, "exp {exp}: {}", r.body);
        for c in r.headers.get_all("set-cookie") {
            let c = c.to_str().unwrap();
            assert!(c.contains("Expires=Fri, 31 Dec 9999"), "exp {exp}: {c}");
            assert!(!c.contains("Max-Age=0;"), "exp {exp}: {c}");
        }
        mongo.logs().delete_many(bson::doc! {}).await.unwrap();
    }
    gw.shutdown().await;
}
