//! `GET /queries/{id}/snapshot`: the query's rows at one point in time, as NDJSON.
//!
//! The first line is `{"query_id", "sequence", "row_count", "epoch", "offset"}`: the state the
//! rows correspond to and the change-feed offset to follow from. Then one
//! `{"signature", "row"}` line per row. Rows are streamed chunk by chunk from the store's
//! point-in-time view, so a 10M-row query never sits in memory, and each chunk is decoded and
//! rendered on the blocking pool, so a large snapshot never holds an executor thread for long.
//! A store failure mid-stream aborts the response (the client sees a truncated body, never a
//! wrong one).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::stream;
use liveresults_core::{Snapshot, StoreError};
use tokio::task::JoinError;

use crate::error::ApiError;
use crate::queries::known_info;
use crate::render;
use crate::state::AppState;

/// Why a snapshot stream stopped part-way (the response is then truncated, never wrong).
#[derive(Debug, thiserror::Error)]
enum StreamError {
    /// Reading or decoding the rows failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The blocking task rendering a chunk died.
    #[error("rendering task failed: {0}")]
    Render(#[from] JoinError),
}

/// Streams a snapshot.
pub async fn snapshot(
    State(state): State<AppState>,
    Path(query_id): Path<String>,
) -> Result<Response, ApiError> {
    known_info(&state, &query_id).await?;
    let snapshot = state
        .inner
        .runtime
        .store()
        .snapshot(&query_id, state.inner.snapshot_chunk_rows)
        .await?;
    let mut header_line = render::snapshot_header(snapshot.info()).to_string();
    header_line.push('\n');
    tracing::debug!(query_id = %query_id, sequence = ?snapshot.info().sequence, rows = snapshot.info().row_count, "snapshot");
    let head = stream::once(async move { Ok::<_, StreamError>(Bytes::from(header_line)) });
    let rows = stream::try_unfold(snapshot, move |mut snapshot: Snapshot| {
        let query_id = query_id.clone();
        async move {
            let Some(chunk) = snapshot.next_chunk().await? else {
                return Ok(None);
            };
            // One bounded chunk at a time: the executor only awaits.
            let lines =
                tokio::task::spawn_blocking(move || render::snapshot_lines(&query_id, &chunk))
                    .await??;
            Ok::<_, StreamError>(Some((Bytes::from(lines), snapshot)))
        }
    });
    let body = futures_util::StreamExt::chain(head, rows);
    let body = futures_util::TryStreamExt::inspect_err(body, |e| {
        tracing::error!(error = %e, "snapshot stream failed; response truncated");
    });
    let mut response = Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
