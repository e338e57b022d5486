//! `/healthz`: the process is up. `/readyz`: it can do its job — MongoDB answers and the
//! change feed is running — so a load balancer only sends browsers to instances that stream.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::error::ApiError;
use super::AppState;
use crate::hub::SourceState;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if state.hub.is_shutting_down() {
        return Err(ApiError::unavailable("not_ready", "shutting down", 1));
    }
    match state.hub.state() {
        SourceState::Running => {}
        SourceState::Starting => {
            return Err(ApiError::unavailable(
                "not_ready",
                "the change feed has not started yet",
                1,
            ))
        }
        SourceState::Down(why) => {
            return Err(ApiError::unavailable(
                "not_ready",
                format!("change feed down: {why}"),
                1,
            ))
        }
    }
    let db = state.db.clone();
    let ping = state
        .runtime
        .spawn(async move { db.run_command(bson::doc! {"ping": 1}).await });
    match tokio::time::timeout(Duration::from_secs(2), ping).await {
        Ok(Ok(Ok(_))) => Ok(HttpResponse::Ok().json(json!({"status": "ready"}))),
        Ok(Ok(Err(e))) => Err(ApiError::unavailable(
            "not_ready",
            format!("MongoDB ping failed: {e}"),
            1,
        )),
        _ => Err(ApiError::unavailable(
            "not_ready",
            "MongoDB did not answer a ping within 2 s",
            1,
        )),
    }
}
