//! `GET /healthz`: 200 while serving, 503 once shutdown has begun (so load balancers drain).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use crate::state::AppState;

/// Liveness and readiness in one: the process answers, and it is not shutting down.
pub async fn healthz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    if state.inner.shutdown.is_cancelled() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "shutting down"})),
        )
    } else {
        (StatusCode::OK, Json(json!({"status": "ok"})))
    }
}
