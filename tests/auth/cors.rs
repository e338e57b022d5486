//! CORS: exact listed origins get credentials; preflights are answered; unlisted origins get
//! nothing (a JSON 403 for preflights); `*` only without auth, and then without credentials.

use reqwest::Method;

use crate::common::*;
use crate::support::*;

const PAGE: &str = "https://logs.example.test";

fn origin(o: &str) -> (String, String) {
    ("origin".to_string(), o.to_string())
}

fn header<'a>(r: &'a HttpError, name: &str) -> Option<&'a str> {
    r.headers.get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listed_origins_with_credentials() {
    let mongo = Mongo::start("cors_list").await;
    let gw = jwt_gateway(
        &mongo,
        &[(
            "SSE_CORS_ORIGINS",
            "https://other.example.test, https://LOGS.example.test",
        )],
    )
    .await;
    let base = base_url(&gw);

    // Preflight for the session POST (Authorization makes it non-simple).
    let pre = [
        origin(PAGE),
        ("access-control-request-method".into(), "POST".into()),
        (
            "access-control-request-headers".into(),
            "authorization".into(),
        ),
    ];
    let r = request(Method::OPTIONS, &base, "/v1/session", &pre).await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(header(&r, "access-control-allow-origin"), Some(PAGE));
    assert_eq!(header(&r, "access-control-allow-credentials"), Some("true"));
    assert!(header(&r, "access-control-allow-methods")
        .unwrap()
        .contains("POST"));
    assert!(header(&r, "access-control-allow-headers")
        .unwrap()
        .contains("Authorization"));
    assert!(header(&r, "access-control-max-age").is_some());

    // A preflight from anywhere else: 403, JSON, no CORS headers.
    let mut evil = pre.clone();
    evil[0] = origin("https://evil.example.test");
    let r = request(Method::OPTIONS, &base, "/v1/session", &evil).await;
    assert_eq!(r.status, 403);
    assert_eq!(
        assert_json_4xx("preflight", &r)["error"],
        "cors_origin_not_allowed"
    );
    assert!(header(&r, "access-control-allow-origin").is_none());

    // Actual requests: the stream, the session, and refusals all carry the headers.
    let tok = token("fay", &["logs"]);
    let s = Stream::open(
        &base,
        &stream_path(&["logs"], None, None),
        &[origin(PAGE), bearer(&tok)],
    )
    .await
    .unwrap();
    assert_eq!(s.headers.get("access-control-allow-origin").unwrap(), PAGE);
    assert_eq!(
        s.headers.get("access-control-allow-credentials").unwrap(),
        "true"
    );
    let r = request(
        Method::POST,
        &base,
        "/v1/session",
        &[origin(PAGE), bearer(&tok)],
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(header(&r, "access-control-allow-origin"), Some(PAGE));
    let r = request(
        Method::GET,
        &base,
        &stream_path(&["logs"], None, None),
        &[origin(PAGE)],
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(header(&r, "access-control-allow-origin"), Some(PAGE));
    assert!(header(&r, "access-control-expose-headers")
        .unwrap()
        .contains("WWW-Authenticate"));

    // An unlisted origin's actual request gets no CORS headers (the browser withholds it).
    let r = request(
        Method::GET,
        &base,
        "/healthz",
        &[origin("https://evil.example.test")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(header(&r, "access-control-allow-origin").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_only_without_auth() {
    let mongo = Mongo::start("cors_any").await;
    let gw = start_gateway(&mongo, &[("SSE_CORS_ORIGINS", "*")]).await;
    let base = base_url(&gw);
    let r = request(
        Method::OPTIONS,
        &base,
        "/v1/stream",
        &[
            origin("https://anywhere.test"),
            ("access-control-request-method".into(), "GET".into()),
        ],
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(header(&r, "access-control-allow-origin"), Some("*"));
    assert!(header(&r, "access-control-allow-credentials").is_none());

    // With SSE_AUTH=jwt, `*` does not even start.
    let err = mongo_sse::config::Config::from_iter(
        [
            ("SSE_AUTH", "jwt"),
            ("SSE_JWT_SECRET", SECRET),
            ("SSE_CORS_ORIGINS", "*"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    )
    .unwrap_err();
    assert_eq!(err.var, "SSE_CORS_ORIGINS");
}
