//! A rebuild from Drasi's snapshot: the diff from our rows to Drasi's (see [`crate::reconcile`]),
//! computed off the executor, and its ONE commit through the runtime.

use drasi_lib::queries::output_state::SnapshotStream;
use liveresults_core::formats::{Event, ResultBatch};
use liveresults_core::QueryInfo;
use liveresults_runtime::{Applied, RuntimeHandle};
use serde_json::json;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::DrasiReactionError;
use crate::reconcile::{Reconciled, SnapshotDiff};

/// Rows per chunk when reading our own rows for a rebuild.
const SNAPSHOT_CHUNK_ROWS: usize = 4096;

/// Drasi's rows compared per blocking task. The comparison encodes every row and looks it up in
/// a map of all of ours: in proportion to the query's size, so it runs on the blocking pool, a
/// chunk at a time, and an executor thread only moves rows between the stream and the pool.
pub(crate) const DIFF_CHUNK_ROWS: usize = 4096;

/// Our query's state (committed sequence, epoch) and the diff from our rows to `snapshot`'s.
pub(crate) async fn diff_with(
    handle: &RuntimeHandle,
    query_id: &str,
    mut snapshot: SnapshotStream,
) -> Result<(QueryInfo, Reconciled), DrasiReactionError> {
    let store_error = |source| DrasiReactionError::Store {
        query_id: query_id.to_owned(),
        source,
    };
    let task_error = |source| DrasiReactionError::Diff {
        query_id: query_id.to_owned(),
        source,
    };
    let ours = handle
        .store()
        .snapshot(query_id, SNAPSHOT_CHUNK_ROWS)
        .await
        .map_err(store_error)?;
    let info = ours.info().clone();
    let rows = ours.collect_rows().await.map_err(store_error)?;
    let id = query_id.to_owned();
    let mut diff = tokio::task::spawn_blocking(move || SnapshotDiff::new(&id, rows))
        .await
        .map_err(task_error)?;
    let mut chunk = Vec::with_capacity(DIFF_CHUNK_ROWS);
    loop {
        let next = snapshot.next_keyed().await;
        let done = next.is_none();
        chunk.extend(next);
        if chunk.len() >= DIFF_CHUNK_ROWS || (done && !chunk.is_empty()) {
            let rows = std::mem::replace(&mut chunk, Vec::with_capacity(DIFF_CHUNK_ROWS));
            diff = tokio::task::spawn_blocking(move || {
                for (signature, row) in rows {
                    diff.push(signature, row);
                }
                diff
            })
            .await
            .map_err(task_error)?;
            // A snapshot held in memory never makes the stream wait: give the executor's
            // other tasks their turn between chunks even when the pool answered at once.
            tokio::task::yield_now().await;
        }
        if done {
            break;
        }
    }
    let reconciled = tokio::task::spawn_blocking(move || diff.finish())
        .await
        .map_err(task_error)?;
    Ok((info, reconciled))
}

/// Commits a rebuild right after our committed sequence (at Drasi's `as_of_sequence` when
/// nothing is committed yet), as ONE commit through the runtime, ordered with the query's
/// other events and delivered to its reactions like any commit.
pub(crate) async fn commit_rebuild(
    handle: &RuntimeHandle,
    query_id: &str,
    committed: Option<u64>,
    as_of: u64,
    config_hash: u64,
    reconciled: &Reconciled,
) -> Result<u64, DrasiReactionError> {
    let sequence = match committed {
        None => as_of,
        // Sequence u64::MAX cannot be followed: the runtime refuses the commit as a
        // regression, which is the honest answer.
        Some(c) => c.saturating_add(1),
    };
    let batch = ResultBatch {
        query_id: query_id.to_owned(),
        sequence,
        timestamp_ms: now_ms(),
        diffs: reconciled.diffs.clone(),
        metadata: Some(json!({
            "liveresults_rebuild": {
                "drasi_as_of_sequence": as_of,
                "drasi_config_hash": config_hash,
                "deleted": reconciled.deleted,
                "unchanged": reconciled.unchanged,
            }
        })),
    };
    match handle
        .commit_batch(query_id, vec![Event::Change(batch)])
        .await?
    {
        Applied::Committed { sequence } => Ok(sequence),
        // Skipped or deprovisioned: the runtime's committed sequence moved under us, or the
        // query was deleted. Nothing was written; the caller attaches again.
        other => Err(DrasiReactionError::RebuildNotApplied {
            query_id: query_id.to_owned(),
            outcome: format!("{other:?}"),
        }),
    }
}

fn now_ms() -> Option<u64> {
    let elapsed = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
    u64::try_from(elapsed.as_millis()).ok()
}
