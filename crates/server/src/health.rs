//! `GET /healthz` (liveness) and `GET /readyz` (readiness).
//!
//! They answer different questions. Liveness: is the process serving requests — restarting
//! it would not help a full disk, so a store fault does not make it fail; it is named in the
//! body (`"status": "degraded"`) so nobody reads 200 as "all is well". Readiness: should
//! traffic be sent here — no while the store refuses writes (checked with a real,
//! invisible write), while any query is stopped by a store fault (until it is resumed or
//! cleared), or once shutdown has begun. Both answer 503 during shutdown, so load
//! balancers drain.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use liveresults_runtime::{QueryState, StopReason};
use serde_json::{json, Value};

use crate::state::AppState;

/// Why the server is not ready, one sentence each; empty when it is.
/// `probe_store` adds the write probe (readiness only: liveness must stay cheap and must not
/// wait behind the store's write line).
async fn unready_reasons(state: &AppState, probe_store: bool) -> Vec<String> {
    let runtime = &state.inner.runtime;
    let mut reasons = Vec::new();
    let probe = if probe_store {
        runtime.store().check_writable().await
    } else {
        Ok(())
    };
    if let Err(e) = probe {
        tracing::warn!(error = %e, "readiness: the store refuses writes");
        reasons.push(format!(
            "the store refuses writes ({}){}",
            crate::error::store_fault_summary(&e.to_string()),
            if e.is_transient() {
                "; it resumes by itself once the cause is gone"
            } else {
                ""
            }
        ));
    }
    for status in runtime.statuses() {
        if let QueryState::Stopped(StopReason::Store(message)) = &status.state {
            reasons.push(format!(
                "query {:?} is stopped by a store fault ({}): POST /queries/{{id}}/resume once \
                 the cause is gone, or clear it",
                status.query_id,
                crate::error::store_fault_summary(message)
            ));
        }
    }
    reasons
}

fn shutting_down() -> (StatusCode, Json<Value>) {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"status": "shutting down"})),
    )
}

/// Liveness: 200 while the process serves (`ok`, or `degraded` naming the queries a store
/// fault stopped), 503 once shutdown has begun. A host sharing its store adds `host`: its
/// name, address and the queries whose lease it holds.
pub async fn healthz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    if state.inner.shutdown.is_cancelled() {
        return shutting_down();
    }
    let reasons = unready_reasons(&state, false).await;
    let mut body = if reasons.is_empty() {
        json!({"status": "ok"})
    } else {
        json!({"status": "degraded", "reasons": reasons})
    };
    // Sharing the store: which host this is and which queries it writes.
    if let (Some(host), Some(map)) = (
        crate::ownership::host_json(&state.inner.runtime),
        body.as_object_mut(),
    ) {
        map.insert("host".into(), host);
    }
    (StatusCode::OK, Json(body))
}

/// Readiness: 200 `ready`, or 503 with every reason it is not.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    if state.inner.shutdown.is_cancelled() {
        return shutting_down();
    }
    let reasons = unready_reasons(&state, true).await;
    if reasons.is_empty() {
        (StatusCode::OK, Json(json!({"status": "ready"})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not ready", "reasons": reasons})),
        )
    }
}
