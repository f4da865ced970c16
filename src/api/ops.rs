//! Operational endpoints outside `/v2`: liveness, readiness, metrics. No authentication.

use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use serde_json::json;

use super::AppState;

/// Each readiness check gets at most this long, so a probe answers within it.
const READINESS_LIMIT: Duration = Duration::from_secs(2);

/// The process is alive and serving HTTP; touches nothing else.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// 200 when the database and the IPFS node answer, the schema is current and no metadata
/// loss was found on start; otherwise 503 naming what failed.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let readiness = state.registry.readiness(READINESS_LIMIT).await;
    let check = |failure: &Option<String>| match failure {
        None => json!("ok"),
        Some(message) => json!(message),
    };
    let body = json!({
        "status": if readiness.ready() { "ready" } else { "unavailable" },
        "checks": {
            "database": check(&readiness.database),
            "ipfs": check(&readiness.ipfs),
            "migrations": check(&readiness.migrations),
            "metadata": check(&readiness.metadata),
        }
    });
    if readiness.ready() {
        HttpResponse::Ok().json(body)
    } else {
        tracing::warn!(event = "not_ready", checks = %body["checks"]);
        HttpResponse::ServiceUnavailable().json(body)
    }
}

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    state.registry.sample_gauges();
    HttpResponse::Ok()
        .insert_header((
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ))
        .body(state.registry.metrics().encode())
}
