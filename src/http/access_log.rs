//! The access log: one `debug` line per request on target `mongo_sse::access` (method, path,
//! query, status, client, time to the response head; a stream's line is written when it
//! starts). actix-web's own `Logger` is not used because it logs the raw query string, where an
//! `access_token` may be: here the query goes through [`redact_query`] and no header is logged
//! at all (`Authorization` and `Cookie` carry tokens).

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;

use crate::auth::token::redact_query;

pub const TARGET: &str = "mongo_sse::access";

pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if !tracing::enabled!(target: TARGET, tracing::Level::DEBUG) {
        return next.call(req).await;
    }
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.path().to_string();
    let query = redact_query(req.query_string()).into_owned();
    let peer = req
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    let res = next.call(req).await;
    let status = match &res {
        Ok(r) => r.status().as_u16(),
        Err(e) => e.as_response_error().status_code().as_u16(),
    };
    tracing::debug!(
        target: TARGET,
        %method,
        %path,
        %query,
        status,
        %peer,
        ms = started.elapsed().as_millis() as u64,
        "request"
    );
    res
}
