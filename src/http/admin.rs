//! `GET /metrics` (Prometheus text format) and the admin endpoints behind `SSE_ADMIN_TOKEN`:
//! `GET /admin/connections`, `GET /admin/channels`, `DELETE /admin/connections/{id}`.
//!
//! Lists are paginated by key: `?limit=N` (1–1000, default 1000) and `?after=<key>`, the
//! `next` member of the previous page (a connection id; a channel name); `next` is `null` on
//! the last page. Keys rather than offsets, so that connections opening and closing between
//! two pages neither repeat a row nor skip one that was there all along.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::error::ApiError;
use super::AppState;
use crate::auth::admin::AdminToken;
use crate::metrics::{CloseReason, LimitCounts, Sample};

/// The most rows a page holds (and the default).
pub const MAX_PAGE: usize = 1000;
/// How long a scrape waits for the oplog's first entry.
const OPLOG_TIMEOUT: Duration = Duration::from_secs(2);

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", web::get().to(metrics))
        .route("/admin/connections", web::get().to(connections))
        .route("/admin/connections/{id}", web::delete().to(close))
        .route("/admin/channels", web::get().to(channels));
}

/// The admin-token guard, counting refusals.
fn admin(req: &HttpRequest, state: &AppState) -> Result<(), ApiError> {
    let token = req
        .app_data::<web::Data<AdminToken>>()
        .map(|t| t.get_ref().clone())
        .unwrap_or_default();
    token.check(req).inspect_err(|e| {
        if e.status == StatusCode::UNAUTHORIZED {
            state.hub.metrics.auth_failed("admin_token");
        }
    })
}

async fn metrics(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if !state.metrics_public {
        admin(&req, &state)?;
    }
    let (running, queued) = state.resume.catchups_running_and_queued();
    let (backlogs_running, _) = state.resume.backlogs_running_and_queued();
    let l = &state.gate.limits.stats;
    let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let limits = LimitCounts {
        connections: get(&l.refused_connections),
        connections_per_subject: get(&l.refused_connections_per_subject),
        rate_per_ip: get(&l.refused_rate_per_ip),
        rate_per_subject: get(&l.refused_rate_per_subject),
        url_bytes: get(&l.refused_url_too_long),
        header_bytes: get(&l.refused_headers_too_large),
    };
    let (headroom_secs, oplog_window_secs) = headroom(&state).await;
    let text = state.hub.metrics.render(&Sample {
        catchups_running: running,
        catchups_queued: queued,
        backlogs_running,
        limits,
        headroom_secs,
        oplog_window_secs,
    });
    Ok(HttpResponse::Ok()
        .insert_header(("Content-Type", crate::metrics::CONTENT_TYPE))
        .insert_header(("Cache-Control", "no-store"))
        .body(text))
}

/// The resume headroom and the oplog window, in seconds; `None` where the oplog cannot be
/// read (logged once).
async fn headroom(state: &AppState) -> (Option<f64>, Option<f64>) {
    let client = state.db.client().clone();
    // MongoDB I/O runs on the runtime that owns the driver, not on an HTTP worker.
    let read = state
        .runtime
        .spawn(async move { crate::oplog::oldest_oplog_time(&client).await });
    let first = match tokio::time::timeout(OPLOG_TIMEOUT, read).await {
        Ok(Ok(Ok(Some(ts)))) => ts,
        Ok(Ok(Ok(None))) => {
            state
                .hub
                .metrics
                .oplog_unreadable("no oplog: not a replica set");
            return (None, None);
        }
        Ok(Ok(Err(e))) => {
            state.hub.metrics.oplog_unreadable(&format!("{e:#}"));
            return (None, None);
        }
        Ok(Err(e)) => {
            state.hub.metrics.oplog_unreadable(&e.to_string());
            return (None, None);
        }
        Err(_) => {
            state.hub.metrics.oplog_unreadable("no answer within 2 s");
            return (None, None);
        }
    };
    let first_secs = ts_secs(u64::from(first.time) << 32 | u64::from(first.increment));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let oldest = state.hub.oldest_held().map(ts_secs).unwrap_or(now);
    (Some(oldest - first_secs), Some(now - first_secs))
}

/// Seconds of a cluster time packed as `time << 32 | increment`.
fn ts_secs(t: u64) -> f64 {
    (t >> 32) as f64
}

struct Page {
    limit: usize,
    after: Option<String>,
}

fn page(req: &HttpRequest) -> Result<Page, ApiError> {
    let mut p = Page {
        limit: MAX_PAGE,
        after: None,
    };
    for (k, v) in form_urlencoded::parse(req.query_string().as_bytes()) {
        match &*k {
            "limit" => {
                p.limit = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad_request(
                            "invalid_limit",
                            format!("limit must be an integer from 1 to {MAX_PAGE}"),
                        )
                    })?
            }
            "after" => p.after = Some(v.into_owned()),
            _ => {}
        }
    }
    Ok(p)
}

fn rfc3339(t: SystemTime) -> String {
    bson::DateTime::from_system_time(t)
        .try_to_rfc3339_string()
        .unwrap_or_default()
}

async fn connections(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    admin(&req, &state)?;
    let p = page(&req)?;
    let after = match p.after.as_deref() {
        None => 0,
        Some(a) => a
            .parse::<u64>()
            .map_err(|_| ApiError::bad_request("invalid_after", "after must be a connection id"))?,
    };
    let (rows, more) = state.hub.connections(after, p.limit);
    let next = more
        .then(|| rows.last().map(|r| r.id.to_string()))
        .flatten();
    let items: Vec<_> = rows
        .iter()
        .map(|r| {
            json!({
                "id": r.id.to_string(),
                "subject": r.info.subject.as_deref(),
                "channels": r.channels.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
                "connected_since": rfc3339(r.info.since),
                "events_sent": r.info.events_sent.load(Ordering::Relaxed),
                "queue_depth": r.queue_depth,
                "remote_addr": r.info.remote.map(|a| a.to_string()),
                "resume": r.info.resume.get().copied().unwrap_or("opening"),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({"connections": items, "next": next})))
}

async fn channels(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    admin(&req, &state)?;
    let p = page(&req)?;
    let (rows, more) = state
        .hub
        .channels(p.after.as_deref().unwrap_or(""), p.limit);
    let next = more
        .then(|| rows.last().map(|r| r.channel.clone()))
        .flatten();
    let items: Vec<_> = rows
        .iter()
        .map(|r| {
            json!({
                "channel": r.channel,
                "subscribers": r.subscribers,
                "events_last_minute": r.events_last_minute,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({"channels": items, "next": next})))
}

async fn close(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    admin(&req, &state)?;
    let unknown = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_connection",
            "no open connection has this id",
        )
    };
    let id = path.parse::<u64>().map_err(|_| unknown())?;
    let (info, channels) = state
        .hub
        .close(id, CloseReason::Admin)
        .ok_or_else(unknown)?;
    // Counted and logged now: the stream's own end may come only when actix notices the
    // shut socket. A stream that was still opening is counted by its own end, if it opens.
    if info.resume.get().is_some() && info.finish() {
        state.hub.metrics.connection_closed(CloseReason::Admin);
        let channels: Vec<&str> = channels.iter().map(|c| c.as_str()).collect();
        tracing::info!(
            conn = id,
            subject = info.subject.as_deref().unwrap_or("-"),
            channels = %channels.join(","),
            duration_ms = info.since.elapsed().map_or(0, |d| d.as_millis() as u64),
            reason = CloseReason::Admin.as_str(),
            events_sent = info.events_sent.load(Ordering::Relaxed),
            "connection closed"
        );
    }
    Ok(HttpResponse::Ok().json(json!({"closed": id.to_string()})))
}
