//! `DELETE /queries/{id}`: clears the query, or with `?purge=true` removes it entirely.
//!
//! A clear keeps the query: its id, its status and its epoch (incremented), so it still
//! counts against `--max-queries`. A **purge** removes it: the runtime stops its pipeline
//! (events queued behind the purge are refused, not left waiting), its reactions are told to
//! reset and then forget it, its status and metrics labels go, and the store deletes its rows,
//! outbox, checkpoints and meta record (`ResultStore::remove_query`). It then reads as a query
//! never written: 404 on every route, absent from `GET /queries`, and its slot under
//! `--max-queries` is free.
//!
//! Readers holding a change-feed offset from before the purge get the answer a reader of a
//! cleared query gets: 409 `must-refetch` (see [`crate::queries::known_for_feed`]), and the
//! snapshot they refetch answers 404. The store keeps a per-id epoch floor, so if the id is
//! written again, the new query starts at an epoch above every epoch of the purged one and
//! such an offset can never be mistaken for a position in the new query.
//!
//! Answers (admin role, like a clear):
//! - `200` with `{"query_id", "purged": true, "sequence", "row_count", "epoch", "offset"}`:
//!   the state the query had when it was removed (`offset` is its tail then);
//! - `404` problem+json when neither the runtime nor the store knows the query (never
//!   written, or purged already): a purge of nothing is reported, not silently accepted;
//! - the usual problem+json answers otherwise (503 shutting down or store unavailable, 507
//!   disk full, 500).

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::offset::Offset;
use crate::queries::{self, known_info};
use crate::state::AppState;

/// The query string of a DELETE.
#[derive(Debug, Deserialize)]
pub struct DeleteParams {
    /// Remove the query entirely instead of clearing it.
    #[serde(default)]
    purge: bool,
}

/// Clears (`purge` absent or false) or removes (`purge=true`) a query.
pub async fn delete(
    state: State<AppState>,
    query_id: Path<String>,
    Query(params): Query<DeleteParams>,
) -> Response {
    if params.purge {
        return purge(state, query_id).await.into_response();
    }
    queries::clear(state, query_id).await.into_response()
}

/// Removes a query entirely, ordered with its queued events (see the module docs).
pub async fn purge(
    State(state): State<AppState>,
    Path(query_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    known_info(&state, &query_id).await?;
    let removed = state.inner.runtime.remove_query(&query_id).await?;
    tracing::info!(
        query_id = %query_id,
        epoch = removed.epoch,
        sequence = ?removed.sequence,
        rows = removed.row_count,
        "query purged"
    );
    Ok(Json(json!({
        "query_id": query_id,
        "purged": true,
        "sequence": removed.sequence,
        "row_count": removed.row_count,
        "epoch": removed.epoch,
        "offset": Offset::tail(&removed).to_string(),
    })))
}
