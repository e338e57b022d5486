//! CORS for pages served from other origins (`SSE_CORS_ORIGINS`).
//!
//! An allow-list of exact origins (`https://logs.example.com`, no paths, no patterns). A listed
//! origin gets `Access-Control-Allow-Origin: <that origin>` and
//! `Access-Control-Allow-Credentials: true`, so `new EventSource(url, {withCredentials: true})`
//! and `fetch(…, {credentials: "include"})` carry the session cookie. `*` allows every origin
//! without credentials, and only with `SSE_AUTH=none`: with tokens, a wildcard would let any
//! site read streams with a visitor's cookie (browsers refuse `*` with credentials anyway).
//!
//! Preflights (`OPTIONS` with `Access-Control-Request-Method`) are answered here: 204 for a
//! listed origin, 403 with a JSON body for any other. Actual requests from unlisted origins
//! pass through without CORS headers — the browser then withholds the response from the page;
//! same-origin requests need no CORS at all.
//!
//! Written here rather than with actix-cors because that crate's refusals are plain-text 400s,
//! and every refusal of this service is a JSON 4xx.

use std::fmt;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};

use super::error::ApiError;
use super::AppState;

/// Methods the API uses.
const ALLOW_METHODS: &str = "GET, POST, DELETE, OPTIONS";
/// Request headers a cross-origin client may send (fetch-based SSE clients send the first two).
const ALLOW_HEADERS: &str = "Authorization, Last-Event-ID, Content-Type, Cache-Control";
/// Response headers a cross-origin page may read.
const EXPOSE_HEADERS: &str = "Retry-After, WWW-Authenticate";
/// How long a browser may cache a preflight answer.
const MAX_AGE_SECS: &str = "600";

/// `SSE_CORS_ORIGINS`.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum CorsOrigins {
    /// Unset or empty: no cross-origin access.
    #[default]
    None,
    /// `*`: any origin, never with credentials.
    Any,
    /// Exact origins, lowercase, as browsers serialize them.
    List(Vec<String>),
}

impl fmt::Debug for CorsOrigins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CorsOrigins::None => f.write_str("none"),
            CorsOrigins::Any => f.write_str("*"),
            CorsOrigins::List(l) => write!(f, "{}", l.join(",")),
        }
    }
}

impl CorsOrigins {
    /// Parses a comma-separated list of `scheme://host[:port]`, or `*` alone. `auth_enabled`
    /// forbids `*`.
    pub fn parse(raw: Option<&str>, auth_enabled: bool) -> Result<CorsOrigins, String> {
        let raw = raw.unwrap_or("").trim();
        if raw.is_empty() {
            return Ok(CorsOrigins::None);
        }
        if raw == "*" {
            if auth_enabled {
                return Err(
                    "\"*\" is only allowed with SSE_AUTH=none; list the exact origins of your pages"
                        .to_string(),
                );
            }
            return Ok(CorsOrigins::Any);
        }
        let mut list = Vec::new();
        for item in raw.split(',').map(str::trim) {
            let origin = parse_origin(item)?;
            if !list.contains(&origin) {
                list.push(origin);
            }
        }
        Ok(CorsOrigins::List(list))
    }

    /// The `Access-Control-Allow-Origin` value for a request from `origin`, and whether
    /// credentials are allowed; `None` when the origin is not allowed.
    pub fn allow(&self, origin: &str) -> Option<(String, bool)> {
        match self {
            CorsOrigins::None => None,
            CorsOrigins::Any => Some(("*".to_string(), false)),
            CorsOrigins::List(l) => l
                .iter()
                .any(|o| o == origin)
                .then(|| (origin.to_string(), true)),
        }
    }
}

fn parse_origin(s: &str) -> Result<String, String> {
    let bad = |why: &str| Err(format!("{s:?} is not an origin: {why}"));
    if s == "*" {
        return bad("\"*\" must be the whole value");
    }
    let Some((scheme, rest)) = s.split_once("://") else {
        return bad("expected scheme://host[:port]");
    };
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return bad("the scheme must be http or https");
    }
    if rest.is_empty() {
        return bad("the host is missing");
    }
    if rest.contains(['/', '?', '#', '@', ' ', '*']) {
        return bad("no path, query, credentials, spaces or wildcards (and no trailing slash)");
    }
    if !rest
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
    {
        return bad("the host has characters an origin cannot have (use the punycode form)");
    }
    Ok(format!("{scheme}://{}", rest.to_ascii_lowercase()))
}

fn is_preflight(req: &ServiceRequest) -> bool {
    req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The middleware. Reads the policy from the app's [`AppState`].
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .map(str::to_string);
    let (Some(origin), Some(state)) = (origin, req.app_data::<web::Data<AppState>>().cloned())
    else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    let allowed = state.gate.cors.allow(&origin);
    if is_preflight(&req) {
        let resp = match &allowed {
            Some((allow_origin, credentials)) => {
                let mut r = HttpResponse::NoContent();
                r.insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin.as_str()))
                    .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, ALLOW_METHODS))
                    .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOW_HEADERS))
                    .insert_header((header::ACCESS_CONTROL_MAX_AGE, MAX_AGE_SECS))
                    .insert_header((
                        header::VARY,
                        "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
                    ));
                if *credentials {
                    r.insert_header((header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true"));
                }
                r.finish()
            }
            None => HttpResponse::from_error(ApiError::new(
                StatusCode::FORBIDDEN,
                "cors_origin_not_allowed",
                "this origin is not in SSE_CORS_ORIGINS",
            )),
        };
        return Ok(req.into_response(resp).map_into_right_body());
    }
    let mut res = next.call(req).await?;
    if let Some((allow_origin, credentials)) = allowed {
        let h = res.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&allow_origin) {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        }
        if credentials {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSE_HEADERS),
        );
        h.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    Ok(res.map_into_left_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exact_origins() {
        assert_eq!(CorsOrigins::parse(None, true), Ok(CorsOrigins::None));
        assert_eq!(CorsOrigins::parse(Some(" "), true), Ok(CorsOrigins::None));
        assert_eq!(
            CorsOrigins::parse(
                Some("https://Logs.Example.com, http://localhost:3000,https://logs.example.com"),
                true
            ),
            Ok(CorsOrigins::List(vec![
                "https://logs.example.com".into(),
                "http://localhost:3000".into()
            ]))
        );
        assert_eq!(CorsOrigins::parse(Some("*"), false), Ok(CorsOrigins::Any));
        assert!(CorsOrigins::parse(Some("*"), true)
            .unwrap_err()
            .contains("SSE_AUTH=none"));
        for bad in [
            "https://a.example/",
            "https://a.example/path",
            "a.example",
            "ftp://a.example",
            "https://*.example",
            "https://a.example,*",
            "https://",
            "https://a.example,",
            "https://user@a.example",
        ] {
            assert!(CorsOrigins::parse(Some(bad), false).is_err(), "{bad}");
        }
    }

    #[test]
    fn allow_decisions() {
        let l = CorsOrigins::parse(Some("https://a.example"), true).unwrap();
        assert_eq!(
            l.allow("https://a.example"),
            Some(("https://a.example".into(), true))
        );
        assert_eq!(l.allow("https://a.example.evil"), None);
        assert_eq!(l.allow("http://a.example"), None);
        assert_eq!(l.allow("null"), None);
        assert_eq!(CorsOrigins::Any.allow("null"), Some(("*".into(), false)));
        assert_eq!(CorsOrigins::None.allow("https://a.example"), None);
    }
}
