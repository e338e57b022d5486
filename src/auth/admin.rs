//! The admin guard: admin endpoints (metrics, connection lists… the operations issue) require
//! `Authorization: Bearer <SSE_ADMIN_TOKEN>`, independently of `SSE_AUTH`.
//!
//! The comparison is constant-time over SHA-256 digests of both values: comparing digests
//! hides the configured token's length as well as its contents, and `subtle` keeps the
//! compiler from turning the comparison back into an early-exit loop.
//!
//! Use it as an extractor: a handler that takes an [`Admin`] argument only runs for requests
//! carrying the token. The gateway registers the configured token as `web::Data<AdminToken>`.

use std::fmt;
use std::future::{ready, Ready};

use actix_web::http::StatusCode;
use actix_web::{dev::Payload, web, FromRequest, HttpRequest};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{token, AuthError};
use crate::http::error::ApiError;

/// Shortest accepted `SSE_ADMIN_TOKEN`.
pub const MIN_LEN: usize = 16;

/// The configured admin token, kept only as its digest.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct AdminToken(Option<[u8; 32]>);

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            Some(_) => "AdminToken(set, redacted)",
            None => "AdminToken(unset)",
        })
    }
}

fn digest(s: &[u8]) -> [u8; 32] {
    Sha256::digest(s).into()
}

impl AdminToken {
    /// `SSE_ADMIN_TOKEN`: unset (or empty) disables the admin endpoints; otherwise at least
    /// [`MIN_LEN`] bytes. The value is never echoed.
    pub fn parse(raw: Option<&str>) -> Result<AdminToken, String> {
        match raw {
            None | Some("") => Ok(AdminToken(None)),
            Some(s) if s.len() < MIN_LEN => Err(format!(
                "is {} bytes; use at least {MIN_LEN} random bytes",
                s.len()
            )),
            Some(s) if s.chars().any(|c| !c.is_ascii_graphic()) => Err(
                "must be printable ASCII without spaces (it travels in an Authorization header)"
                    .to_string(),
            ),
            Some(s) => Ok(AdminToken(Some(digest(s.as_bytes())))),
        }
    }

    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }

    /// Whether `presented` is the admin token, in time independent of both values.
    pub fn matches(&self, presented: &str) -> bool {
        match &self.0 {
            Some(want) => digest(presented.as_bytes()).ct_eq(want).into(),
            None => false,
        }
    }

    /// Lets the request through only with `Authorization: Bearer <SSE_ADMIN_TOKEN>`.
    pub fn check(&self, req: &HttpRequest) -> Result<(), ApiError> {
        if !self.is_set() {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "admin_disabled",
                "admin endpoints are disabled: set SSE_ADMIN_TOKEN to enable them",
            ));
        }
        let realm = "mongo-sse admin";
        let challenge = |e: AuthError| -> ApiError {
            let c = e.challenge(realm);
            ApiError::new(StatusCode::UNAUTHORIZED, e.code, e.description).with_challenge(c)
        };
        match token::bearer(req).map_err(challenge)? {
            Some(t) if self.matches(&t) => Ok(()),
            Some(_) => Err(challenge(AuthError::invalid_token(
                "not the admin token (SSE_ADMIN_TOKEN)",
            ))),
            None => Err(challenge(AuthError {
                error: None,
                code: "unauthorized",
                description: "admin endpoints need `Authorization: Bearer <SSE_ADMIN_TOKEN>`"
                    .to_string(),
            })),
        }
    }
}

/// Extractor: present in a handler's arguments, it admits only admin requests.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Ready<Result<Admin, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let result = match req.app_data::<web::Data<AdminToken>>() {
            Some(token) => token.check(req).map(|()| Admin),
            None => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "admin_disabled",
                "admin endpoints are not configured",
            )),
        };
        ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    const TOKEN: &str = "adm1n-t0ken-0123456789";

    #[test]
    fn parse_and_match() {
        assert!(!AdminToken::parse(None).unwrap().is_set());
        assert!(!AdminToken::parse(Some("")).unwrap().is_set());
        assert!(AdminToken::parse(Some("short")).is_err());
        assert!(AdminToken::parse(Some("with a space 0123456")).is_err());
        let t = AdminToken::parse(Some(TOKEN)).unwrap();
        assert!(t.matches(TOKEN));
        assert!(!t.matches(""));
        assert!(!t.matches(&TOKEN[..TOKEN.len() - 1]));
        assert!(!t.matches(&format!("{TOKEN}x")));
        assert!(!AdminToken::parse(None).unwrap().matches(""));
        assert!(!format!("{t:?}").contains(TOKEN));
    }

    #[test]
    fn check_statuses() {
        let t = AdminToken::parse(Some(TOKEN)).unwrap();
        let req = |auth: Option<&str>| {
            let mut r = TestRequest::default();
            if let Some(a) = auth {
                r = r.insert_header(("Authorization", a));
            }
            r.to_http_request()
        };
        assert!(t.check(&req(Some(&format!("Bearer {TOKEN}")))).is_ok());
        let e = t.check(&req(None)).unwrap_err();
        assert_eq!(e.status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            e.www_authenticate(),
            Some("Bearer realm=\"mongo-sse admin\"")
        );
        let e = t.check(&req(Some("Bearer nope"))).unwrap_err();
        assert_eq!(
            (e.status, e.code),
            (StatusCode::UNAUTHORIZED, "invalid_token")
        );
        let e = t.check(&req(Some(&format!("Basic {TOKEN}")))).unwrap_err();
        assert_eq!(e.status, StatusCode::UNAUTHORIZED);
        let off = AdminToken::parse(None).unwrap();
        let e = off
            .check(&req(Some(&format!("Bearer {TOKEN}"))))
            .unwrap_err();
        assert_eq!(
            (e.status, e.code),
            (StatusCode::FORBIDDEN, "admin_disabled")
        );
    }

    #[actix_web::test]
    async fn extractor_guards_a_handler() {
        use actix_web::{test, App, HttpResponse};
        let app = test::init_service(
            App::new()
                .app_data(web::Data::new(AdminToken::parse(Some(TOKEN)).unwrap()))
                .route(
                    "/admin/x",
                    web::get().to(|_: Admin| async { HttpResponse::Ok().body("secret stats") }),
                ),
        )
        .await;
        let call = |auth: Option<String>| {
            let mut r = test::TestRequest::get().uri("/admin/x");
            if let Some(a) = auth {
                r = r.insert_header(("Authorization", a));
            }
            r.to_request()
        };
        let ok = test::call_service(&app, call(Some(format!("Bearer {TOKEN}")))).await;
        assert_eq!(ok.status(), StatusCode::OK);
        let no = test::call_service(&app, call(Some("Bearer wrong".into()))).await;
        assert_eq!(no.status(), StatusCode::UNAUTHORIZED);
        assert!(no.headers().contains_key("www-authenticate"));
        let body: serde_json::Value = test::read_body_json(no).await;
        assert_eq!(body["error"], "invalid_token");
        let none = test::call_service(&app, call(None)).await;
        assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
    }
}
