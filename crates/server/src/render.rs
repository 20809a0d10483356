//! JSON shapes the server emits: change-feed messages, snapshot lines, query summaries.
//!
//! Row signatures are JSON numbers (u64, exact in serde_json), as drasi-lib writes them.

use liveresults_core::codec::row::decode_row;
use liveresults_core::{QueryInfo, RowChunk, StoreError};
use liveresults_runtime::{ChangeEvent, CommittedChange, QueryState, QueryStatus, RowChange};
use serde_json::{json, Value as Json};

use crate::offset::Offset;

/// One change-feed message: one committed outbox entry.
///
/// `offset` is the position right after this entry, so a client that processed part of a
/// response can resume from the last message it handled.
pub fn change(change: &CommittedChange) -> Json {
    let offset = Offset {
        epoch: change.epoch,
        sequence: Some(change.span.last),
    };
    let events: Vec<Json> = change.events.iter().map(event).collect();
    json!({
        "offset": offset.to_string(),
        "epoch": change.epoch,
        "first_sequence": change.span.first,
        "sequence": change.span.last,
        "events": events,
    })
}

fn event(event: &ChangeEvent) -> Json {
    match event {
        ChangeEvent::Rows { sequence, changes } => {
            let changes: Vec<Json> = changes
                .iter()
                .map(|c| match c {
                    RowChange::Upsert { signature, row } => {
                        json!({"op": "upsert", "signature": signature, "row": row.to_json()})
                    }
                    RowChange::Delete { signature } => {
                        json!({"op": "delete", "signature": signature})
                    }
                })
                .collect();
            json!({"type": "rows", "sequence": sequence, "changes": changes})
        }
        ChangeEvent::Control { sequence, signal } => {
            json!({"type": "control", "sequence": sequence, "signal": signal.as_str()})
        }
    }
}

/// The first line of a snapshot: what the rows correspond to, and the change-feed offset to
/// continue from.
pub fn snapshot_header(info: &QueryInfo) -> Json {
    json!({
        "query_id": info.query_id,
        "sequence": info.sequence,
        "row_count": info.row_count,
        "epoch": info.epoch,
        "offset": Offset::tail(info).to_string(),
    })
}

/// One snapshot row line: `{"signature", "row"}`.
pub fn snapshot_row(query_id: &str, signature: u64, data: &[u8]) -> Result<Json, StoreError> {
    let row = decode_row(data).map_err(|e| StoreError::corrupt_row(query_id, signature, e))?;
    Ok(json!({"signature": signature, "row": row.into_json()}))
}

/// The NDJSON lines of one chunk of snapshot rows, a [`snapshot_row`] each.
///
/// Decoding and rendering a chunk is CPU work proportional to its size (thousands of rows):
/// the snapshot handler runs it on the blocking pool, one bounded chunk at a time.
pub fn snapshot_lines(query_id: &str, chunk: &RowChunk) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::with_capacity(
        chunk
            .data_bytes()
            .saturating_mul(2)
            .saturating_add(chunk.len().saturating_mul(32)),
    );
    for (signature, data) in chunk.iter() {
        let line = snapshot_row(query_id, signature, data)?;
        serde_json::to_writer(&mut out, &line)
            .map_err(|e| StoreError::corrupt_row(query_id, signature, e))?;
        out.push(b'\n');
    }
    Ok(out)
}

/// A query's summary for `GET /queries` and `GET /queries/{id}`: the store's numbers (the
/// truth), the runtime's state and counters when it has seen the query.
pub fn query(info: &QueryInfo, status: Option<&QueryStatus>) -> Json {
    let mut out = json!({
        "query_id": info.query_id,
        "sequence": info.sequence,
        "row_count": info.row_count,
        "epoch": info.epoch,
        "offset": Offset::tail(info).to_string(),
        "state": "running",
    });
    if let (Some(status), Some(map)) = (status, out.as_object_mut()) {
        if let QueryState::Stopped(reason) = &status.state {
            map.insert("state".into(), "stopped".into());
            map.insert("stop_reason".into(), reason.to_string().into());
        }
        map.insert("commits".into(), status.commits.into());
        map.insert("skipped".into(), status.skipped.into());
        map.insert("gaps".into(), status.gaps.into());
        map.insert(
            "upstream".into(),
            status.upstream.map(|s| s.as_str()).into(),
        );
        map.insert(
            "awaiting_bootstrap".into(),
            status.awaiting_bootstrap.into(),
        );
        // Reactions get commits after they are durable, each at its own pace: how far each
        // one has handled this query, and how many committed sequences it still has to.
        let reactions: Vec<Json> = (status.reactions.iter())
            .map(|r| {
                json!({"reaction": r.reaction, "epoch": r.epoch, "sequence": r.sequence,
                       "lag": r.lag, "failure": r.failure})
            })
            .collect();
        map.insert("reactions".into(), reactions.into());
    }
    out
}

/// The store's view of a query the runtime knows only from its registry.
pub fn info_of(status: &QueryStatus) -> QueryInfo {
    QueryInfo {
        query_id: status.query_id.clone(),
        sequence: status.sequence,
        row_count: status.row_count,
        epoch: status.epoch,
    }
}
