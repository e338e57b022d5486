//! The HTTP surface, on actix-web. Handlers are thin: they parse, ask the hub, and stream the
//! frames it decides on. Unknown paths and methods get the same JSON error shape as
//! everything else.

pub mod access_log;
pub mod admin;
pub mod assets;
pub mod cors;
pub mod error;
pub mod gate;
pub mod health;
pub mod peer;
pub mod publish;
pub mod query;
pub mod session;
pub mod stream;

use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use mongodb::Database;
use tokio::runtime::Handle;

use crate::hub::Hub;
use crate::resume::Resumer;
use crate::routing::SourceSpecs;

/// What every handler shares.
pub struct AppState {
    pub hub: Arc<Hub>,
    /// How new connections catch up: ring, catch-up, backlog, gap.
    pub resume: Resumer,
    pub sources: SourceSpecs,
    pub db: Database,
    pub runtime: Handle,
    pub max_channels: usize,
    pub heartbeat: Duration,
    pub retry_ms: u64,
    /// Access control and limits.
    pub gate: gate::Gate,
    /// `SSE_METRICS_PUBLIC`: `/metrics` without the admin token.
    pub metrics_public: bool,
    /// Tells streams that their client has gone (`None` where epoll is unavailable).
    pub peers: Option<Arc<peer::PeerWatch>>,
}

pub use peer::ConnSocket;

pub fn routes(cfg: &mut web::ServiceConfig) {
    assets::routes(cfg);
    admin::routes(cfg);
    cfg.route("/v1/stream", web::get().to(stream::stream))
        .route(
            "/wfm/workflow/workspace/{ws}/workflow/{wf}/logs/stream",
            web::get().to(stream::compat_logs),
        )
        .route("/v1/publish", web::post().to(publish::publish))
        .route("/v1/session", web::post().to(session::create))
        .route("/v1/session", web::delete().to(session::delete))
        .route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .default_service(web::to(|| async {
            Err::<actix_web::HttpResponse, _>(error::ApiError::not_found())
        }));
}
