//! Access control: who is asking (a verified token), and what they may subscribe to.
//!
//! - [`token`]: where a token comes from (header, cookie, query) and how it is kept out of logs;
//! - [`jwt`]: verifying it (one configured algorithm, strict time claims);
//! - [`grant`]: what its `channels` and `publish` claims allow;
//! - [`admin`]: the separate shared-secret check for admin endpoints.
//!
//! [`Authenticator`] ties the first three together for the HTTP layer: request in, identity
//! (or a 401) out; identity and channels in, nothing (or a 403 naming the refused channels)
//! out.

pub mod admin;
pub mod grant;
pub mod jwt;
pub mod token;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::http::StatusCode;
use actix_web::HttpRequest;
use serde_json::json;

use crate::channel::Channel;
use crate::config::{AuthMode, Config};
use crate::http::error::ApiError;
use grant::Grant;
use jwt::JwtVerifier;
use token::TokenSource;

/// The realm announced in `WWW-Authenticate`.
pub const REALM: &str = "mongo-sse";

/// The verified claims of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// `sub`: who this is; connection limits count per subject.
    pub sub: String,
    /// `exp`, in seconds since the epoch: streams end then.
    pub exp: u64,
    /// `channels`: what may be subscribed to.
    pub channels: Vec<Grant>,
    /// `publish`: where the publish API may write (a later issue).
    pub publish: Vec<Grant>,
}

/// Why a request is not authenticated: a 401 with a `WWW-Authenticate: Bearer` challenge
/// (RFC 6750). `description` is for humans and never contains the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthError {
    /// The RFC 6750 error code: `invalid_request`, `invalid_token`, or none when no token was
    /// sent at all.
    pub error: Option<&'static str>,
    /// The JSON `error` code of our body.
    pub code: &'static str,
    pub description: String,
}

impl AuthError {
    pub fn missing() -> AuthError {
        AuthError {
            error: None,
            code: "unauthorized",
            description: "this endpoint needs an access token: send `Authorization: Bearer <token>`, \
                          or POST it once to /v1/session to get a cookie an EventSource sends by itself"
                .to_string(),
        }
    }

    pub fn invalid_token(description: impl Into<String>) -> AuthError {
        AuthError {
            error: Some("invalid_token"),
            code: "invalid_token",
            description: description.into(),
        }
    }

    pub fn invalid_request(code: &'static str, description: impl Into<String>) -> AuthError {
        AuthError {
            error: Some("invalid_request"),
            code,
            description: description.into(),
        }
    }

    /// The challenge header value. The description is reduced to characters allowed in a
    /// quoted string there (RFC 6750, section 3).
    pub fn challenge(&self, realm: &str) -> String {
        let mut v = format!("Bearer realm=\"{realm}\"");
        if let Some(e) = self.error {
            let d: String = self
                .description
                .chars()
                .map(|c| match c {
                    '"' | '\\' => '\'',
                    ' '..='~' => c,
                    _ => '?',
                })
                .collect();
            v.push_str(&format!(", error=\"{e}\", error_description=\"{d}\""));
        }
        v
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> ApiError {
        let challenge = e.challenge(REALM);
        ApiError::new(StatusCode::UNAUTHORIZED, e.code, e.description).with_challenge(challenge)
    }
}

/// Who is asking, once authenticated.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `None` when access control is off.
    pub subject: Option<Arc<str>>,
    /// `None` when access control is off: everything is allowed.
    pub grants: Option<Arc<[Grant]>>,
    /// The token's `publish` grants (`POST /v1/publish`); `None` when access control is off.
    pub publish: Option<Arc<[Grant]>>,
    /// The token's `exp` (seconds since the epoch).
    pub expires_at: Option<u64>,
    /// Where the token came from.
    pub source: Option<TokenSource>,
}

impl Identity {
    /// Anyone, when `SSE_AUTH=none`.
    pub fn anonymous() -> Identity {
        Identity {
            subject: None,
            grants: None,
            publish: None,
            expires_at: None,
            source: None,
        }
    }

    /// Allows `channels` only if every one is covered by a grant; otherwise a 403 that names
    /// each refused channel, so nothing is streamed and the caller knows what to fix.
    pub fn authorize(&self, channels: &[Channel]) -> Result<(), ApiError> {
        refuse_uncovered(self.grants.as_deref(), channels, "grant")
    }

    /// Allows publishing to `channels` only if the token's `publish` grants cover every one;
    /// otherwise a 403 naming each channel it may not publish to.
    pub fn authorize_publish(&self, channels: &[Channel]) -> Result<(), ApiError> {
        refuse_uncovered(self.publish.as_deref(), channels, "allow publishing to")
    }

    /// How long until the token expires (zero if it already has).
    ///
    /// `exp` is the client's number: one beyond what `SystemTime` can hold (a token signed
    /// with `exp` near `u64::MAX`) means "never within this process's life", not a panic.
    pub fn remaining(&self) -> Option<Duration> {
        let exp = self.expires_at?;
        let Some(exp) = UNIX_EPOCH.checked_add(Duration::from_secs(exp)) else {
            return Some(FAR_FUTURE);
        };
        Some(
            exp.duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
                .min(FAR_FUTURE),
        )
    }
}

/// `Ok` when access control is off (`grants` is `None`) or `grants` cover every channel; a 403
/// naming the others otherwise.
fn refuse_uncovered(
    grants: Option<&[Grant]>,
    channels: &[Channel],
    verb: &str,
) -> Result<(), ApiError> {
    let Some(grants) = grants else {
        return Ok(());
    };
    let refused = grant::uncovered(grants, channels);
    if refused.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = refused.iter().map(|c| c.as_str()).collect();
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden_channels",
        format!(
            "the token does not {verb} {}: {}",
            if names.len() == 1 {
                "this channel"
            } else {
                "these channels"
            },
            names.join(", ")
        ),
    )
    .with_field("channels", json!(names)))
}

/// Longer than any stream lives; what a token that expires later than this is cut down to, so
/// that adding it to an `Instant` cannot overflow.
const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Turns requests into identities, as configured by `SSE_AUTH`.
pub enum Authenticator {
    /// `SSE_AUTH=none`.
    Disabled,
    /// `SSE_AUTH=jwt`.
    Jwt {
        verifier: Box<JwtVerifier>,
        allow_query_token: bool,
    },
}

impl Authenticator {
    pub fn from_config(config: &Config) -> Result<Authenticator, String> {
        match (config.auth, &config.jwt) {
            (AuthMode::None, _) => Ok(Authenticator::Disabled),
            (AuthMode::Jwt, Some(jwt)) => Ok(Authenticator::Jwt {
                verifier: Box::new(JwtVerifier::new(jwt)?),
                allow_query_token: config.allow_query_token,
            }),
            (AuthMode::Jwt, None) => Err("SSE_AUTH=jwt without SSE_JWT_* settings".to_string()),
        }
    }

    pub fn is_enabled(&self) -> bool {
        matches!(self, Authenticator::Jwt { .. })
    }

    /// Authenticates a stream request: the token from the header, the cookie, or (if allowed)
    /// the query string.
    pub fn authenticate(&self, req: &HttpRequest) -> Result<Identity, AuthError> {
        match self {
            Authenticator::Disabled => Ok(Identity::anonymous()),
            Authenticator::Jwt {
                verifier,
                allow_query_token,
            } => {
                let Some((tok, source)) = token::find(req, *allow_query_token)? else {
                    return Err(AuthError::missing());
                };
                let claims = verifier.verify(&tok)?;
                Ok(identity(claims, source))
            }
        }
    }

    /// Authenticates from `Authorization: Bearer` only (`POST /v1/session`: a cookie or a URL
    /// must not be able to mint a cookie). `None` when access control is off.
    pub fn authenticate_bearer(
        &self,
        req: &HttpRequest,
    ) -> Result<Option<(String, Claims)>, AuthError> {
        match self {
            Authenticator::Disabled => Ok(None),
            Authenticator::Jwt { verifier, .. } => match token::bearer(req)? {
                Some(tok) => {
                    let claims = verifier.verify(&tok)?;
                    Ok(Some((tok, claims)))
                }
                None => Err(AuthError::missing()),
            },
        }
    }
}

fn identity(claims: Claims, source: TokenSource) -> Identity {
    Identity {
        subject: Some(Arc::from(claims.sub)),
        grants: Some(Arc::from(claims.channels)),
        publish: Some(Arc::from(claims.publish)),
        expires_at: Some(claims.exp),
        source: Some(source),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_are_rfc6750_quoted_strings() {
        assert_eq!(
            AuthError::missing().challenge(REALM),
            "Bearer realm=\"mongo-sse\""
        );
        assert_eq!(
            AuthError::invalid_token("bad \"sig\"\\ é\n").challenge(REALM),
            "Bearer realm=\"mongo-sse\", error=\"invalid_token\", error_description=\"bad 'sig'' ??\""
        );
    }

    #[test]
    fn authorize_names_refused_channels() {
        let id = Identity {
            subject: Some(Arc::from("u")),
            grants: Some(Arc::from(vec![Grant::parse("logs:w1").unwrap()])),
            publish: Some(Arc::from(vec![Grant::parse("events").unwrap()])),
            expires_at: None,
            source: None,
        };
        let ch = |s: &str| Channel::parse(s).unwrap();
        assert!(id.authorize(&[ch("logs:w1:f1"), ch("logs:w1")]).is_ok());
        let e = id
            .authorize(&[ch("logs:w1:f1"), ch("logs:w2"), ch("logs")])
            .unwrap_err();
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        assert_eq!(e.field("channels"), Some(&json!(["logs:w2", "logs"])));
        assert!(e.message.contains("logs:w2, logs"));
        assert!(Identity::anonymous().authorize(&[ch("x")]).is_ok());
        // Publishing is granted separately.
        assert!(id.authorize_publish(&[ch("events:a")]).is_ok());
        let e = id.authorize_publish(&[ch("logs:w1")]).unwrap_err();
        assert_eq!(e.field("channels"), Some(&json!(["logs:w1"])));
        assert!(e.message.contains("publishing"), "{}", e.message);
        assert!(Identity::anonymous().authorize_publish(&[ch("x")]).is_ok());
    }
}
