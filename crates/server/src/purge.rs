//! `DELETE /queries/{id}`: clears the query, or with `?purge=true` would remove it entirely.
//!
//! Purging needs a "remove query" operation that neither the store contract nor the runtime
//! has yet: a clear keeps the query's id, epoch and status entry (readers holding an old
//! offset must still be told to refetch), so it cannot free a slot under `--max-queries`.
//! Until that operation exists, `purge=true` answers 501 and changes nothing, rather than
//! clearing and letting the client believe the query is gone.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::problem::problem;
use crate::queries;
use crate::state::AppState;

/// The query string of a DELETE.
#[derive(Debug, Deserialize)]
pub struct DeleteParams {
    /// Remove the query entirely instead of clearing it.
    #[serde(default)]
    purge: bool,
}

/// Clears (`purge` absent or false) or refuses to purge (`purge=true`, not supported yet).
pub async fn delete(
    state: State<AppState>,
    query_id: Path<String>,
    Query(params): Query<DeleteParams>,
) -> Response {
    if params.purge {
        return problem(
            StatusCode::NOT_IMPLEMENTED,
            "purge-unsupported",
            "Purge not supported",
            "removing a query entirely needs a remove operation the store does not have yet; \
             nothing was changed (DELETE without purge clears the query's rows and history)",
        );
    }
    queries::clear(state, query_id).await.into_response()
}
