//! The change feed itself, apart from HTTP: reading a query's committed outbox batches after an
//! offset, waiting for the next commit, and the Durable Streams cursor.
//!
//! Both transports — the catch-up/long-poll handler (`changes`) and the SSE stream (`sse`) —
//! call into this module, so the rules about offsets, gaps and clears live in one place and the
//! SSE stream does not depend on the handler that dispatches to it. Nothing here knows about
//! axum: errors are [`FeedError`], which the error module maps to HTTP answers.
//!
//! A read is at most one batch of entries (the configured `changes_batch`), rendered on the
//! blocking pool. An offset of an older epoch (the query was cleared), one beyond the tail, or
//! one whose batches have left the outbox is a [`FeedError::MustRefetch`]: the reader must
//! rebuild from the snapshot — the feed never skips over a gap silently.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use liveresults_core::{OutboxEntry, StoreError};
use liveresults_runtime::{CommittedChange, Position, RuntimeHandle};
use serde_json::Value as Json;
use tokio::sync::watch;

use crate::offset::{Offset, Start};
use crate::render;

/// Start of cursor time (2024-10-09T00:00:00Z), as the protocol defines it.
const CURSOR_EPOCH_UNIX_SECS: u64 = 1_728_432_000;
/// Length of one cursor interval.
const CURSOR_INTERVAL_SECS: u64 = 20;
/// Largest jitter added to a cursor a client echoes from the future.
const CURSOR_MAX_JITTER_SECS: u64 = 3600;
/// Reads retried when a clear races one (the epoch changed between its two halves).
const READ_ATTEMPTS: usize = 3;

/// Why the feed cannot serve a read.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// The offset cannot be served: entries after it left the outbox, it belongs to an older
    /// epoch of the query, or it lies beyond the tail. The reader must refetch the snapshot.
    #[error("{detail}")]
    MustRefetch {
        /// Why.
        detail: String,
        /// The query's current tail, to resume from after the snapshot.
        tail: Offset,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The feed's own failure (a rendering task died, clears kept racing a read).
    #[error("{0}")]
    Internal(String),
}

/// One read of the feed.
#[derive(Debug)]
pub(crate) struct Read {
    /// Rendered messages, oldest first.
    pub(crate) messages: Vec<Json>,
    /// Where the next read starts.
    pub(crate) next: Offset,
    /// Whether `next` is the query's tail.
    pub(crate) up_to_date: bool,
}

/// One query's change feed over the runtime.
#[derive(Clone, Copy)]
pub(crate) struct Feed<'a> {
    runtime: &'a RuntimeHandle,
    query_id: &'a str,
    /// Outbox entries per read.
    batch: usize,
}

impl<'a> Feed<'a> {
    pub(crate) fn new(runtime: &'a RuntimeHandle, query_id: &'a str, batch: usize) -> Self {
        Feed {
            runtime,
            query_id,
            batch,
        }
    }

    /// The query's committed position. Subscribe BEFORE the first read: a commit landing
    /// between that read and [`Feed::next_commit`] still marks the receiver changed, so no
    /// waiter sleeps through it.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Position> {
        self.runtime.watch(self.query_id)
    }

    /// Reads up to a batch of committed entries after `start`.
    pub(crate) async fn read(&self, start: Start) -> Result<Read, FeedError> {
        let (store, query_id) = (self.runtime.store(), self.query_id);
        for _ in 0..READ_ATTEMPTS {
            let info = store.query_info(query_id).await?;
            let tail = Offset::tail(&info);
            let at_tail = Read {
                messages: Vec::new(),
                next: tail,
                up_to_date: true,
            };
            let after = match start {
                Start::Now => return Ok(at_tail),
                Start::Beginning => None,
                Start::At(offset) if offset.epoch != info.epoch => {
                    return Err(FeedError::MustRefetch {
                        detail: format!(
                            "offset {offset} belongs to epoch {} of query {query_id:?}, which \
                             was cleared since (epoch {})",
                            offset.epoch, info.epoch
                        ),
                        tail,
                    })
                }
                Start::At(offset) if offset > tail => {
                    return Err(FeedError::MustRefetch {
                        detail: format!(
                            "offset {offset} is beyond the tail {tail} of query {query_id:?}"
                        ),
                        tail,
                    })
                }
                Start::At(offset) if offset == tail => return Ok(at_tail),
                Start::At(offset) => offset.sequence,
            };
            let entries = match store.read_outbox(query_id, after, self.batch).await {
                Ok(entries) => entries,
                Err(StoreError::OutboxGap {
                    evicted_through, ..
                }) => {
                    return Err(FeedError::MustRefetch {
                        detail: format!(
                            "the outbox of query {query_id:?} no longer holds the batches after \
                             this offset (evicted through sequence {evicted_through})"
                        ),
                        tail,
                    })
                }
                Err(e) => return Err(e.into()),
            };
            let now = store.query_info(query_id).await?;
            if now.epoch != info.epoch {
                continue; // cleared while reading: the entries may belong to the new epoch
            }
            let last = entries.last().map(|entry| entry.span.last);
            let messages = render_entries(query_id, info.epoch, entries).await?;
            let next = match (last, start) {
                (Some(last), _) => Offset {
                    epoch: info.epoch,
                    sequence: Some(last),
                },
                (None, Start::At(offset)) => offset,
                (None, _) => tail,
            };
            return Ok(Read {
                messages,
                next,
                up_to_date: next >= Offset::tail(&now),
            });
        }
        Err(FeedError::Internal(format!(
            "query {query_id:?} was cleared {READ_ATTEMPTS} times while being read"
        )))
    }

    /// Waits for a commit after `after` and reads from there: the first non-empty read, or
    /// `None` once `stop` completes (shutdown, a deadline, a departed client) or the runtime
    /// drops the query's position. `stop` wins over a commit that is ready at the same moment,
    /// so a stopping reader does not start another store read. Parked waiters hold nothing
    /// of the store.
    pub(crate) async fn next_commit(
        &self,
        position: &mut watch::Receiver<Position>,
        after: Offset,
        stop: impl Future<Output = ()>,
    ) -> Result<Option<Read>, FeedError> {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                biased;
                () = &mut stop => return Ok(None),
                changed = position.changed() => {
                    if changed.is_err() {
                        return Ok(None);
                    }
                }
            }
            let read = self.read(Start::At(after)).await?;
            if !read.messages.is_empty() {
                return Ok(Some(read));
            }
        }
    }
}

/// Decodes and renders outbox entries on the blocking pool: up to a response's worth of
/// batches is CPU work that would otherwise stall every request sharing the executor thread.
async fn render_entries(
    query_id: &str,
    epoch: u64,
    entries: Vec<OutboxEntry>,
) -> Result<Vec<Json>, FeedError> {
    let query_id = query_id.to_owned();
    let rendered = tokio::task::spawn_blocking(move || {
        entries
            .iter()
            .map(|entry| {
                CommittedChange::from_outbox(&query_id, epoch, entry).map(|c| render::change(&c))
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| FeedError::Internal(format!("rendering task failed: {e}")))?;
    Ok(rendered?)
}

/// The live cursor: the current 20-second interval number, or — when the client echoes a
/// cursor at or past it — the client's cursor plus jitter, so cursors only move forward and
/// cached empty responses cannot loop.
pub(crate) fn cursor(client: Option<&str>) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let current = now.as_secs().saturating_sub(CURSOR_EPOCH_UNIX_SECS) / CURSOR_INTERVAL_SECS;
    match client.and_then(|c| c.parse::<u64>().ok()) {
        Some(echoed) if echoed >= current => {
            // Sub-second clock bits are random enough to spread clients apart.
            let jitter_secs = 1 + u64::from(now.subsec_nanos()) % CURSOR_MAX_JITTER_SECS;
            let jitter = (jitter_secs / CURSOR_INTERVAL_SECS).max(1);
            echoed.saturating_add(jitter).to_string()
        }
        _ => current.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::cursor;

    #[test]
    fn cursors_only_move_forward() {
        let current: u64 = cursor(None).parse().expect("a number");
        // A stale or garbled echo gets the current interval (or the next one, should the
        // clock cross an interval boundary during the test).
        for echo in ["0", "garbage"] {
            let got: u64 = cursor(Some(echo)).parse().expect("a number");
            assert!(
                (current..=current + 1).contains(&got),
                "{echo}: {got} vs {current}"
            );
        }
        // An echo at or past the current interval moves past it.
        let echoed = current + 5;
        let next: u64 = cursor(Some(&echoed.to_string())).parse().expect("a number");
        assert!(next > echoed, "{next} <= {echoed}");
    }
}
