//! `GET /queries`, `GET /queries/{id}`, `DELETE /queries/{id}`, `POST /queries/{id}/resume`.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::Json;
use liveresults_core::QueryInfo;
use serde_json::Value;

use crate::error::ApiError;
use crate::offset::{Offset, Start};
use crate::render;
use crate::state::AppState;

/// The store's state of a query, or 404 when neither the runtime nor the store knows it.
///
/// The store answers an unknown query as empty (epoch 0, no sequence, no rows), so "known"
/// means: the store holds anything of it, or this host writes it and its runtime has seen it
/// (a query whose first write was refused). The runtime's word counts only for queries this
/// host writes: sharing the store, a host registers queries it does not own too (every stored
/// one at start, and those its readers watch), and one the owner purged may still be there
/// for a moment — the store has the last word on those.
pub(crate) async fn known_info(state: &AppState, query_id: &str) -> Result<QueryInfo, ApiError> {
    let runtime = &state.inner.runtime;
    let info = runtime.store().query_info(query_id).await?;
    let stored = info.sequence.is_some() || info.epoch > 0 || info.row_count > 0;
    if stored || (runtime.owns(query_id) && runtime.status(query_id).is_some()) {
        Ok(info)
    } else {
        Err(ApiError::NotFound {
            query_id: query_id.to_owned(),
        })
    }
}

/// [`known_info`] for a change-feed read. A reader that names an offset of a query neither the
/// runtime nor the store knows has read the query before it was purged (or made the offset
/// up): it gets the answer a reader of a cleared query gets, 409 must-refetch, so a client
/// handles a purge the way it handles a clear — and the snapshot it refetches answers 404.
/// `-1` and `now` name no position, so they get the 404.
pub(crate) async fn known_for_feed(
    state: &AppState,
    query_id: &str,
    start: Start,
) -> Result<(), ApiError> {
    match (known_info(state, query_id).await, start) {
        (Err(ApiError::NotFound { .. }), Start::At(offset)) => Err(ApiError::MustRefetch {
            detail: format!(
                "offset {offset} cannot be served: query {query_id:?} does not exist (it was \
                 purged, or never written)"
            ),
            offset: Offset::tail(&QueryInfo::empty(query_id)).to_string(),
        }),
        (known, _) => known.map(|_| ()),
    }
}

/// Every query the store or the runtime knows, by id.
pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<Value>>, ApiError> {
    let runtime = &state.inner.runtime;
    let mut statuses: BTreeMap<String, _> = runtime
        .statuses()
        .into_iter()
        .map(|s| (s.query_id.clone(), s))
        .collect();
    let mut out = Vec::new();
    for info in runtime.store().list_queries().await? {
        let status = statuses.remove(&info.query_id);
        out.push((info.query_id.clone(), render::query(&info, status.as_ref())));
    }
    // Queries the runtime has seen that the store has not written yet (first chunk refused),
    // if this host writes them: another host's registered query missing from the store was
    // purged there.
    for status in statuses.into_values() {
        if !runtime.owns(&status.query_id) {
            continue;
        }
        let info = render::info_of(&status);
        out.push((info.query_id.clone(), render::query(&info, Some(&status))));
    }
    for (query_id, summary) in &mut out {
        crate::ownership::mark_owned(runtime, query_id, summary);
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Json(out.into_iter().map(|(_, v)| v).collect()))
}

/// One query's stats.
pub async fn stats(
    State(state): State<AppState>,
    Path(query_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let info = known_info(&state, &query_id).await?;
    let runtime = &state.inner.runtime;
    let status = runtime.status(&query_id);
    let mut summary = render::query(&info, status.as_ref());
    let owner = crate::ownership::owner_fields(runtime, &query_id).await?;
    if let Some(map) = summary.as_object_mut() {
        map.extend(owner);
    }
    Ok(Json(summary))
}

/// Clears a query (rows, outbox, checkpoints; its epoch increments), ordered with its queued
/// events; a stopped query accepts events again afterwards. Change-feed readers holding an
/// offset of the old epoch get the must-refetch answer.
pub async fn clear(
    State(state): State<AppState>,
    Path(query_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    known_info(&state, &query_id).await?;
    let runtime = &state.inner.runtime;
    let info = runtime.clear_query(&query_id).await?;
    tracing::info!(query_id = %query_id, epoch = info.epoch, "query cleared");
    let status = runtime.status(&query_id);
    Ok(Json(render::query(&info, status.as_ref())))
}

/// Restarts a stopped query where it stopped (its rows and committed sequence kept; upstream
/// resends from the next sequence), once the cause is gone. The store is asked first whether
/// it accepts writes: while it does not (the disk is still full) the answer says so — 507 or
/// 503 — instead of restarting a query whose next commit would stop it again. A running query
/// is answered as it is; a query deleted upstream stays stopped (409: clear it).
pub async fn resume(
    State(state): State<AppState>,
    Path(query_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    known_info(&state, &query_id).await?;
    let runtime = &state.inner.runtime;
    runtime.store().check_writable().await?;
    let info = runtime.resume(&query_id).await?;
    tracing::info!(query_id = %query_id, sequence = ?info.sequence, "query resumed");
    let status = runtime.status(&query_id);
    Ok(Json(render::query(&info, status.as_ref())))
}
