//! The gate every stream passes before it is opened, in the order that makes refusals cheap:
//! the client IP's connection rate (before any cryptography), the token (401), the channels it
//! grants (403), the subject's connection rate, then a place among the open connections in
//! total and for the subject (429). What it hands back, a [`Pass`], lives as long as the
//! stream: it holds the connection places and knows when the token expires.
//!
//! URL and header sizes are checked earlier, for every request, by [`enforce_sizes`].

use std::sync::Arc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpRequest};

use super::cors::CorsOrigins;
use super::error::ApiError;
use super::AppState;
use crate::auth::admin::AdminToken;
use crate::auth::{Authenticator, Identity};
use crate::channel::Channel;
use crate::config::Config;
use crate::limits::{ConnectionPermit, Limits};

/// Access control and limits, as configured.
pub struct Gate {
    pub auth: Authenticator,
    pub limits: Arc<Limits>,
    pub cors: CorsOrigins,
    pub admin: AdminToken,
    /// Whether the session cookie is `Secure` (not with `SSE_COOKIE_INSECURE=true`).
    pub cookie_secure: bool,
}

/// An admitted stream.
pub struct Pass {
    pub identity: Identity,
    /// When the token expires: the stream ends then, after an `auth_expired` event.
    pub deadline: Option<tokio::time::Instant>,
    _permit: ConnectionPermit,
}

impl Gate {
    pub fn from_config(config: &Config) -> Result<Gate, String> {
        Ok(Gate {
            auth: Authenticator::from_config(config)?,
            limits: Limits::new(config.limits.clone()),
            cors: config.cors_origins.clone(),
            admin: config.admin_token.clone(),
            cookie_secure: !config.cookie_insecure,
        })
    }

    /// Rate-limits the client IP (a no-op for requests without a peer address, i.e. tests).
    pub fn rate_ip(&self, req: &HttpRequest) -> Result<(), ApiError> {
        if let Some(peer) = req.peer_addr() {
            self.limits.rate_ip(peer.ip())?;
        }
        Ok(())
    }

    /// Admits a stream for `channels`, or says why not.
    pub fn admit(&self, req: &HttpRequest, channels: &[Channel]) -> Result<Pass, ApiError> {
        self.rate_ip(req)?;
        let identity = self.auth.authenticate(req)?;
        identity.authorize(channels)?;
        if let Some(s) = &identity.subject {
            self.limits.rate_subject(s)?;
        }
        let permit = self.limits.acquire(identity.subject.as_ref())?;
        let deadline = identity
            .remaining()
            .map(|d| tokio::time::Instant::now() + d);
        Ok(Pass {
            identity,
            deadline,
            _permit: permit,
        })
    }
}

/// Middleware: 414 for a URL over `SSE_MAX_URL_BYTES`, 431 for headers over
/// `SSE_MAX_HEADER_BYTES`, both with a JSON body, before any handler runs.
pub async fn enforce_sizes(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    if let Some(state) = req.app_data::<web::Data<AppState>>() {
        if let Err(e) = state.gate.limits.check_sizes(req.request()) {
            let resp = actix_web::HttpResponse::from_error(ApiError::from(e));
            return Ok(req.into_response(resp).map_into_right_body());
        }
    }
    Ok(next.call(req).await?.map_into_left_body())
}
