//! Where a token comes from, in order: `Authorization: Bearer`, else the `sse_token` cookie
//! (set by `POST /v1/session`, because a browser's EventSource cannot send headers), else —
//! only with `SSE_ALLOW_QUERY_TOKEN=true` — the `access_token` query parameter.
//!
//! Query tokens are off by default because URLs end up in proxy logs, browser history and
//! `Referer` headers. A request that carries one anyway is refused with a 401 that explains
//! the alternatives (even when it also has a header: the token has leaked into a URL, and the
//! client should learn that now rather than in an incident review).
//!
//! Nothing here logs; [`redact_query`] is what any logging of a query string must go through.

use std::borrow::Cow;

use actix_web::http::header;
use actix_web::HttpRequest;

use super::AuthError;

/// The cookie `POST /v1/session` sets.
pub const COOKIE: &str = "sse_token";

/// The query parameter accepted when `SSE_ALLOW_QUERY_TOKEN=true`.
pub const QUERY_PARAM: &str = "access_token";

/// Where a request's token was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    Header,
    Cookie,
    Query,
}

/// The `Authorization: Bearer` token, if there is an `Authorization` header. Another scheme,
/// or a malformed header, is a 401 (`invalid_request`) rather than "no token": silently
/// falling back to a cookie would hide the client's mistake.
pub fn bearer(req: &HttpRequest) -> Result<Option<String>, AuthError> {
    let Some(v) = req.headers().get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let malformed = || {
        AuthError::invalid_request(
            "invalid_authorization",
            "the Authorization header must be `Bearer <token>`",
        )
    };
    let v = v.to_str().map_err(|_| malformed())?;
    let (scheme, tok) = v.trim().split_once(' ').ok_or_else(malformed)?;
    let tok = tok.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || tok.is_empty() {
        return Err(malformed());
    }
    Ok(Some(tok.to_string()))
}

/// The token from the first place that has one. `Ok(None)` when there is none at all.
pub fn find(
    req: &HttpRequest,
    allow_query: bool,
) -> Result<Option<(String, TokenSource)>, AuthError> {
    let query = query_token(req.query_string());
    if query.is_some() && !allow_query {
        return Err(AuthError::invalid_request(
            "query_token_disabled",
            "tokens in the URL are disabled (SSE_ALLOW_QUERY_TOKEN=false): they leak into logs and \
             browser history. Send `Authorization: Bearer <token>`, or POST the token once to \
             /v1/session (Authorization: Bearer) to get an HttpOnly cookie that EventSource sends \
             by itself",
        ));
    }
    if let Some(t) = bearer(req)? {
        return Ok(Some((t, TokenSource::Header)));
    }
    if let Some(c) = req.cookie(COOKIE) {
        if !c.value().is_empty() {
            return Ok(Some((c.value().to_string(), TokenSource::Cookie)));
        }
    }
    Ok(query
        .filter(|t| !t.is_empty())
        .map(|t| (t.into_owned(), TokenSource::Query)))
}

/// The `access_token` query parameter, if present (the first one).
pub fn query_token(query: &str) -> Option<Cow<'_, str>> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == QUERY_PARAM)
        .map(|(_, v)| v)
}

/// The query string with every `access_token` value replaced by `REDACTED`, for logs. Other
/// parameters are kept byte for byte.
pub fn redact_query(query: &str) -> Cow<'_, str> {
    if !query.contains("access_token") && !query.contains('%') {
        return Cow::Borrowed(query);
    }
    let parts: Vec<Cow<'_, str>> = query
        .split('&')
        .map(|pair| {
            let key = pair.split_once('=').map_or(pair, |(k, _)| k);
            // Decode the key the way the parser does, so `access%5Ftoken=` is caught too.
            let decoded: String = form_urlencoded::parse(key.as_bytes())
                .next()
                .map(|(k, _)| k.into_owned())
                .unwrap_or_default();
            if decoded == QUERY_PARAM {
                Cow::Owned(format!("{key}=REDACTED"))
            } else {
                Cow::Borrowed(pair)
            }
        })
        .collect();
    Cow::Owned(parts.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn header_then_cookie_then_query() {
        let req = TestRequest::default()
            .insert_header(("Authorization", "Bearer h.h.h"))
            .cookie(actix_web::cookie::Cookie::new(COOKIE, "c.c.c"))
            .uri("/v1/stream?access_token=q.q.q")
            .to_http_request();
        assert_eq!(
            find(&req, true).unwrap(),
            Some(("h.h.h".to_string(), TokenSource::Header))
        );
        let req = TestRequest::default()
            .cookie(actix_web::cookie::Cookie::new(COOKIE, "c.c.c"))
            .uri("/v1/stream?access_token=q.q.q")
            .to_http_request();
        assert_eq!(
            find(&req, true).unwrap(),
            Some(("c.c.c".to_string(), TokenSource::Cookie))
        );
        let req = TestRequest::default()
            .uri("/v1/stream?channel=a&access_token=q.q.q")
            .to_http_request();
        assert_eq!(
            find(&req, true).unwrap(),
            Some(("q.q.q".to_string(), TokenSource::Query))
        );
        let req = TestRequest::default()
            .uri("/v1/stream?channel=a")
            .to_http_request();
        assert_eq!(find(&req, true).unwrap(), None);
    }

    #[test]
    fn query_tokens_are_refused_unless_allowed() {
        let req = TestRequest::default()
            .insert_header(("Authorization", "Bearer h.h.h"))
            .uri("/v1/stream?channel=a&access%5Ftoken=q")
            .to_http_request();
        let e = find(&req, false).unwrap_err();
        assert_eq!(e.code, "query_token_disabled");
        assert!(e.description.contains("/v1/session"));
    }

    #[test]
    fn malformed_authorization_is_an_error() {
        for v in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer   ", "token"] {
            let req = TestRequest::default()
                .insert_header(("Authorization", v))
                .to_http_request();
            assert_eq!(
                find(&req, false).unwrap_err().code,
                "invalid_authorization",
                "{v}"
            );
        }
        let req = TestRequest::default()
            .insert_header(("Authorization", "bearer   t.t.t "))
            .to_http_request();
        assert_eq!(bearer(&req).unwrap().as_deref(), Some("t.t.t"));
    }

    #[test]
    fn redaction() {
        assert_eq!(redact_query("channel=a&backlog=2"), "channel=a&backlog=2");
        assert_eq!(
            redact_query("channel=a&access_token=s3cr3t&x=1"),
            "channel=a&access_token=REDACTED&x=1"
        );
        assert_eq!(
            redact_query("access%5Ftoken=s3cr3t&access_token=t2"),
            "access%5Ftoken=REDACTED&access_token=REDACTED"
        );
        assert_eq!(redact_query("access_token"), "access_token=REDACTED");
        assert_eq!(redact_query("a=%ZZ&b"), "a=%ZZ&b");
    }
}
