//! `POST /v1/session`: trade a Bearer token for a cookie, so that a page can authenticate an
//! `EventSource` (which cannot send headers) without putting the token in a URL.
//!
//! The cookie `sse_token` holds the token itself — any gateway instance can verify it, no
//! server-side session — and is:
//! - `HttpOnly`: page scripts (and so XSS) cannot read it back;
//! - `Secure`, unless `SSE_COOKIE_INSECURE=true` for local plain-http development;
//! - `SameSite=Strict`: only same-site requests carry it. The stream is read by the page's own
//!   EventSource, never reached by following a link from another site, so `Lax` would add
//!   nothing but exposure. Pages on another *site* (not just another origin) therefore cannot
//!   use the cookie; they send the token in a header (fetch-based clients) or, if enabled, in
//!   the query;
//! - scoped to the stream paths (`Path=/v1/stream`, and `Path=/wfm/workflow/workspace` for the
//!   compatibility route: one cookie per path, same value), so it is not sent anywhere else;
//! - expiring with the token (`Max-Age` and `Expires` from `exp`).
//!
//! `DELETE /v1/session` removes it (logout). Both answer 204.

use actix_web::cookie::time::{Duration as CookieDuration, OffsetDateTime};
use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};

use super::error::ApiError;
use super::AppState;
use crate::auth::jwt::now_secs;
use crate::auth::token::COOKIE;

/// The paths the cookie is sent to: the stream endpoints.
pub const COOKIE_PATHS: [&str; 2] = ["/v1/stream", "/wfm/workflow/workspace"];

/// 9999-12-31T23:59:59Z, the last date a cookie's `Expires` can name.
const LAST_COOKIE_DATE: u64 = 253_402_300_799;

fn cookie(value: &str, path: &'static str, exp: Option<u64>, secure: bool) -> Cookie<'static> {
    let mut b = Cookie::build(COOKIE, value.to_string())
        .path(path)
        .http_only(true)
        .secure(secure)
        .same_site(SameSite::Strict);
    match exp {
        Some(exp) => {
            // `exp` is the client's number; cookie dates end with year 9999, and time
            // arithmetic past that overflows, so a later `exp` is cut down to it.
            let exp = exp.min(LAST_COOKIE_DATE);
            let max_age = exp.saturating_sub(now_secs());
            b = b.max_age(CookieDuration::seconds(max_age as i64));
            if let Ok(at) = OffsetDateTime::from_unix_timestamp(exp as i64) {
                b = b.expires(at);
            }
        }
        None => {
            b = b
                .max_age(CookieDuration::ZERO)
                .expires(OffsetDateTime::UNIX_EPOCH);
        }
    }
    b.finish()
}

fn auth_disabled() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "auth_disabled",
        "SSE_AUTH=none: there are no sessions; open streams directly",
    )
}

pub async fn create(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let gate = &state.gate;
    gate.rate_ip(&req)?;
    let Some((token, claims)) = gate.auth.authenticate_bearer(&req)? else {
        return Err(auth_disabled());
    };
    let mut r = HttpResponse::NoContent();
    r.insert_header((header::CACHE_CONTROL, "no-store"));
    for path in COOKIE_PATHS {
        r.append_header((
            header::SET_COOKIE,
            cookie(&token, path, Some(claims.exp), gate.cookie_secure).to_string(),
        ));
    }
    Ok(r.finish())
}

pub async fn delete(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if !state.gate.auth.is_enabled() {
        return Err(auth_disabled());
    }
    let mut r = HttpResponse::NoContent();
    r.insert_header((header::CACHE_CONTROL, "no-store"));
    for path in COOKIE_PATHS {
        r.append_header((
            header::SET_COOKIE,
            cookie("", path, None, state.gate.cookie_secure).to_string(),
        ));
    }
    Ok(r.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_attributes() {
        let exp = now_secs() + 120;
        let c = cookie("a.b.c", "/v1/stream", Some(exp), true).to_string();
        assert!(c.starts_with("sse_token=a.b.c; "), "{c}");
        for part in [
            "HttpOnly",
            "Secure",
            "SameSite=Strict",
            "Path=/v1/stream",
            "Max-Age=1",
            "Expires=",
        ] {
            assert!(c.contains(part), "{part} missing in {c}");
        }
        let c = cookie("a.b.c", "/v1/stream", Some(exp), false).to_string();
        assert!(!c.contains("Secure"), "{c}");
        let gone = cookie("", "/v1/stream", None, true).to_string();
        assert!(gone.contains("Max-Age=0"), "{gone}");
        assert!(gone.contains("1970"), "{gone}");
    }
}
