//! What a query's State Protocol stream holds after an offset, apart from HTTP.
//!
//! The stream of a query in epoch `E` is a snapshot taken at some sequence `S` (between
//! `snapshot-start` and `snapshot-end` control messages, one `insert` per row) followed by
//! every committed change after `S`, one `upsert` or `delete` message per row operation, each
//! carrying its commit's sequence as `txid`. Offsets name `(E, position)`, the position being
//! the committed sequence plus one (0 before the first commit), so they sort like commits and
//! survive restarts. A reader starting at `-1`, or at an offset the outbox no longer covers, or
//! of an older epoch (the query was cleared, or AutoReset cleared it), gets a fresh snapshot —
//! after a `reset` control message when it named an offset — and then the changes after it:
//! the stream can always be served from `-1`, whatever the outbox retains.

use liveresults_core::codec::row::decode_row;
use liveresults_core::{OutboxEntry, QueryInfo, RowChunk, Snapshot, StoreError};
use liveresults_runtime::{ChangeEvent, CommittedChange, RowChange};
use serde_json::json;
use tokio::sync::Semaphore;

use crate::state::AppState;

/// Reads that fetch and render changes at once, process-wide (each briefly holds about its
/// byte budget twice: entries and their rendering).
static READ_SLOTS: Semaphore = Semaphore::const_new(4);
/// Most outbox entries fetched in one page.
const MAX_PAGE: usize = 1024;

/// A position in a query's State Protocol stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct QueryOffset {
    /// The query's epoch.
    pub(crate) epoch: u64,
    /// The committed sequence plus one (0: nothing committed in this epoch).
    pub(crate) position: u64,
}

impl QueryOffset {
    /// The offset right after everything `info` describes.
    pub(crate) fn tail(info: &QueryInfo) -> Self {
        QueryOffset {
            epoch: info.epoch,
            position: info.sequence.map_or(0, |s| s.saturating_add(1)),
        }
    }

    /// The offset after the commit ending at `sequence`.
    fn after(epoch: u64, sequence: u64) -> Self {
        QueryOffset {
            epoch,
            position: sequence.saturating_add(1),
        }
    }

    /// The last committed sequence this offset is after (`None`: before the first).
    fn sequence(self) -> Option<u64> {
        self.position.checked_sub(1)
    }

    /// Parses the text form; `None` when malformed.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let (epoch, position) = text.split_once('_')?;
        let digits = |s: &str| {
            (s.len() == 16 && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse().ok())
                .flatten()
        };
        Some(QueryOffset {
            epoch: digits(epoch)?,
            position: digits(position)?,
        })
    }
}

impl std::fmt::Display for QueryOffset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016}_{:016}", self.epoch, self.position)
    }
}

/// Where a read starts.
#[derive(Clone, Copy, Debug)]
pub(crate) enum From {
    Beginning,
    Now,
    At(QueryOffset),
}

/// What a read found.
pub(crate) enum Found {
    /// A snapshot to send (after a `reset` when `reset`), then the changes after it.
    Snapshot { snapshot: Snapshot, reset: bool },
    /// Change messages (JSON texts) up to `next`.
    Changes {
        messages: Vec<String>,
        next: QueryOffset,
        up_to_date: bool,
    },
    /// Nothing after the offset: it is the tail.
    Tail(QueryOffset),
}

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LogError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Internal(String),
}

/// Reads `query_id`'s stream from `from`: at most `max_bytes` of change messages (at least one
/// commit's), or a snapshot to stream.
pub(crate) async fn read(
    state: &AppState,
    query_id: &str,
    from: From,
    max_bytes: usize,
) -> Result<Found, LogError> {
    let store = state.inner.runtime.store();
    let info = store.query_info(query_id).await?;
    let tail = QueryOffset::tail(&info);
    let snapshot = |reset| async move {
        let chunk_rows = state.inner.snapshot_chunk_rows;
        let snapshot = store.snapshot(query_id, chunk_rows).await?;
        Ok::<_, LogError>(Found::Snapshot { snapshot, reset })
    };
    let offset = match from {
        From::Beginning => return snapshot(false).await,
        From::Now => return Ok(Found::Tail(tail)),
        From::At(offset) if offset == tail => return Ok(Found::Tail(tail)),
        From::At(offset) if offset.epoch != info.epoch || offset > tail => {
            return snapshot(true).await
        }
        From::At(offset) => offset,
    };
    match changes_after(state, query_id, offset, max_bytes).await? {
        // The outbox no longer covers the offset, or the query was cleared while reading.
        None => snapshot(true).await,
        Some(changes) if changes.next == offset => Ok(Found::Tail(offset)),
        Some(Changes {
            messages,
            next,
            up_to_date,
        }) => Ok(Found::Changes {
            messages,
            next,
            up_to_date,
        }),
    }
}

/// Change messages after an offset, as [`changes_after`] read them.
pub(crate) struct Changes {
    /// JSON texts, oldest first (possibly none: commits without row changes render nothing).
    pub(crate) messages: Vec<String>,
    /// The offset after the last commit read (the start offset when none was).
    pub(crate) next: QueryOffset,
    /// Whether `next` is the query's tail.
    pub(crate) up_to_date: bool,
}

/// Reads and renders the commits after `offset` (in its epoch) up to `max_bytes` of messages
/// (at least one commit's), as many outbox pages as the budget takes, so a catch-up reader
/// gets up to the tail in one response when it fits. `None` when the outbox no longer holds
/// the commit right after `offset`, or the query left `offset`'s epoch (cleared) meanwhile:
/// the reader needs a fresh snapshot.
pub(crate) async fn changes_after(
    state: &AppState,
    query_id: &str,
    offset: QueryOffset,
    max_bytes: usize,
) -> Result<Option<Changes>, LogError> {
    let store = state.inner.runtime.store();
    let _slot = READ_SLOTS
        .acquire()
        .await
        .map_err(|_| LogError::Internal("read slots closed".into()))?;
    // Pages sized from the largest payload seen so far, so the entries held at once stay near
    // the byte budget however large each is.
    let (mut messages, mut used, mut last) = (Vec::new(), 0usize, None);
    let (mut page, mut largest) = (1usize, 1usize);
    loop {
        let entries = match store
            .read_outbox(query_id, last.or(offset.sequence()), page)
            .await
        {
            Ok(entries) => entries,
            Err(StoreError::OutboxGap { .. }) if last.is_none() => return Ok(None),
            Err(StoreError::OutboxGap { .. }) => break, // the next read answers it
            Err(e) => return Err(e.into()),
        };
        let fetched = entries.len();
        largest = (entries.iter().map(|e| e.payload.len())).fold(largest, usize::max);
        let room = max_bytes.saturating_sub(used);
        let rendered =
            render_changes(query_id, offset.epoch, entries, room, last.is_none()).await?;
        let taken = rendered.entries;
        used = used.saturating_add(rendered.bytes);
        messages.extend(rendered.messages);
        last = rendered.last.or(last);
        if taken < fetched || fetched < page || used >= max_bytes {
            break;
        }
        page = (max_bytes.saturating_sub(used) / largest).clamp(1, MAX_PAGE);
    }
    let now = QueryOffset::tail(&store.query_info(query_id).await?);
    if now.epoch != offset.epoch {
        // Cleared while reading: the entries may be the new epoch's.
        return Ok(None);
    }
    let next = last.map_or(offset, |last| QueryOffset::after(offset.epoch, last));
    Ok(Some(Changes {
        messages,
        next,
        up_to_date: next >= now,
    }))
}

/// Rendered outbox entries.
struct Rendered {
    messages: Vec<String>,
    /// The last sequence the taken entries cover.
    last: Option<u64>,
    /// How many entries were taken.
    entries: usize,
    /// Bytes of the messages, separators included.
    bytes: usize,
}

/// Renders outbox entries as change messages on the blocking pool, stopping before the entry
/// that would pass `room` bytes (unless `need_one` and none was taken yet).
async fn render_changes(
    query_id: &str,
    epoch: u64,
    entries: Vec<OutboxEntry>,
    room: usize,
    need_one: bool,
) -> Result<Rendered, LogError> {
    let query_id = query_id.to_owned();
    let rendered = tokio::task::spawn_blocking(move || {
        let mut out = Rendered {
            messages: Vec::new(),
            last: None,
            entries: 0,
            bytes: 0,
        };
        for entry in &entries {
            let change = CommittedChange::from_outbox(&query_id, epoch, entry)?;
            let texts = change_messages(&query_id, &change);
            let cost: usize = texts.iter().map(|t| t.len() + 1).sum();
            if out.bytes.saturating_add(cost) > room && !(need_one && out.entries == 0) {
                break;
            }
            out.bytes = out.bytes.saturating_add(cost);
            out.messages.extend(texts);
            out.last = Some(entry.span.last);
            out.entries += 1;
        }
        Ok::<_, StoreError>(out)
    })
    .await
    .map_err(|e| LogError::Internal(format!("rendering task failed: {e}")))?;
    Ok(rendered?)
}

/// The State Protocol messages of one commit: an `upsert` or `delete` per row operation
/// (lifecycle signals have no State Protocol counterpart and are left out).
fn change_messages(query_id: &str, change: &CommittedChange) -> Vec<String> {
    let txid = change.span.last.to_string();
    let mut out = Vec::new();
    for event in &change.events {
        let ChangeEvent::Rows { changes, .. } = event else {
            continue;
        };
        for row_change in changes {
            let message = match row_change {
                RowChange::Upsert { signature, row } => json!({
                    "type": query_id,
                    "key": signature.to_string(),
                    "value": row.to_json(),
                    "headers": {"operation": "upsert", "txid": txid},
                }),
                RowChange::Delete { signature } => json!({
                    "type": query_id,
                    "key": signature.to_string(),
                    "headers": {"operation": "delete", "txid": txid},
                }),
            };
            out.push(message.to_string());
        }
    }
    out
}

/// A control message (`snapshot-start`, `snapshot-end`, `reset`) with the offset it concerns.
pub(crate) fn control(kind: &str, offset: QueryOffset) -> String {
    json!({"headers": {"control": kind, "offset": offset.to_string()}}).to_string()
}

/// The `insert` messages of one chunk of snapshot rows, decoded on the blocking pool.
pub(crate) async fn snapshot_messages(
    query_id: &str,
    chunk: RowChunk,
) -> Result<Vec<String>, LogError> {
    let query_id = query_id.to_owned();
    let rendered = tokio::task::spawn_blocking(move || {
        let mut out = Vec::with_capacity(chunk.len());
        for (signature, data) in chunk.iter() {
            let row =
                decode_row(data).map_err(|e| StoreError::corrupt_row(&query_id, signature, e))?;
            let message = json!({
                "type": query_id,
                "key": signature.to_string(),
                "value": row.into_json(),
                "headers": {"operation": "insert"},
            });
            out.push(message.to_string());
        }
        Ok::<_, StoreError>(out)
    })
    .await
    .map_err(|e| LogError::Internal(format!("rendering task failed: {e}")))?;
    Ok(rendered?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_sort_like_commits_and_round_trip() {
        let a = QueryOffset {
            epoch: 1,
            position: 0,
        };
        let b = QueryOffset::after(1, 9);
        let c = QueryOffset {
            epoch: 2,
            position: 0,
        };
        assert!(a.to_string() < b.to_string() && b.to_string() < c.to_string());
        assert_eq!(QueryOffset::parse(&b.to_string()), Some(b));
        assert_eq!(b.sequence(), Some(9));
        assert_eq!(a.sequence(), None);
        for bad in [
            "",
            "1_2",
            "0000000000000001-0000000000000002",
            "000000000000000x_0000000000000000",
        ] {
            assert_eq!(QueryOffset::parse(bad), None, "{bad:?}");
        }
    }
}
