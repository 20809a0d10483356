//! The change feed itself, apart from HTTP: reading a query's committed outbox batches after an
//! offset, waiting for the next commit, and the Durable Streams cursor.
//!
//! Both transports — the catch-up/long-poll handler (`changes`) and the SSE stream (`sse`) —
//! call into this module, so the rules about offsets, gaps and clears live in one place and the
//! SSE stream does not depend on the handler that dispatches to it. Nothing here knows about
//! axum: errors are [`FeedError`], which the error module maps to HTTP answers.
//!
//! A read is at most `changes_max_bytes` of rendered messages (but always one message) and,
//! for live reads, at most one batch of entries (`changes_batch`; catch-up reads have no entry
//! cap, so a client that stops after one response still reaches the tail), rendered on the
//! blocking pool. Entries are fetched from the store in pages sized from the payloads seen so
//! far, so a read holds about its byte budget of entries, never a whole batch of large ones:
//! what a client that stops reading can pin in memory is one bounded response. An offset of an older epoch (the query was cleared), one beyond the tail, or
//! one whose batches have left the outbox is a [`FeedError::MustRefetch`]: the reader must
//! rebuild from the snapshot — the feed never skips over a gap silently.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use liveresults_core::{OutboxEntry, QueryInfo, StoreError};
use liveresults_runtime::{CommittedChange, Position, RuntimeHandle};
use tokio::sync::{watch, Semaphore};

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
/// Feed reads that fetch and render at once, process-wide. A read briefly holds about twice its
/// byte budget (entries and their rendering); without a cap, 50 clients asking at once held
/// 50 times that together and the allocator kept the peak (RSS +1.1 GB for 50 clients of a
/// 4 MiB budget). Reads of small batches take microseconds, so the queue is short.
static READ_SLOTS: Semaphore = Semaphore::const_new(4);
/// Most outbox entries fetched from the store at once: a page sized from tiny payloads alone
/// could ask for millions of entries, whose per-entry overhead the byte budget does not see.
const MAX_PAGE: usize = 4096;

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
    /// Rendered messages (each a JSON text), oldest first.
    pub(crate) messages: Vec<String>,
    /// Where the next read starts.
    pub(crate) next: Offset,
    /// Whether `next` is the query's tail.
    pub(crate) up_to_date: bool,
}

impl Read {
    /// The messages as one JSON array text.
    pub(crate) fn json_array(&self) -> String {
        let bytes: usize = self.messages.iter().map(|m| m.len() + 1).sum();
        let mut out = String::with_capacity(bytes + 2);
        out.push('[');
        for (i, message) in self.messages.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(message);
        }
        out.push(']');
        out
    }
}

/// One query's change feed over the runtime.
#[derive(Clone, Copy)]
pub(crate) struct Feed<'a> {
    runtime: &'a RuntimeHandle,
    query_id: &'a str,
    /// Outbox entries per read (`usize::MAX` for catch-up: the byte budget alone bounds it).
    batch: usize,
    /// Bytes of rendered messages per read (at least one message is always returned).
    max_bytes: usize,
}

impl<'a> Feed<'a> {
    pub(crate) fn new(
        runtime: &'a RuntimeHandle,
        query_id: &'a str,
        batch: usize,
        max_bytes: usize,
    ) -> Self {
        Feed {
            runtime,
            query_id,
            batch,
            max_bytes,
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
                // What a purged query reads as (also a query that never committed anything).
                Start::At(offset) if offset != tail && info == QueryInfo::empty(query_id) => {
                    return Err(FeedError::MustRefetch {
                        detail: format!(
                            "offset {offset} cannot be served: query {query_id:?} holds nothing \
                             (it was purged, or never written)"
                        ),
                        tail,
                    })
                }
                Start::At(offset) if offset.epoch < info.epoch => {
                    return Err(FeedError::MustRefetch {
                        detail: format!(
                            "offset {offset} belongs to epoch {} of query {query_id:?}, which \
                             was cleared since (epoch {})",
                            offset.epoch, info.epoch
                        ),
                        tail,
                    })
                }
                Start::At(offset) if offset.epoch > info.epoch => {
                    return Err(FeedError::MustRefetch {
                        detail: format!(
                            "offset {offset} names epoch {} of query {query_id:?}, which it has \
                             not reached (current epoch {}): the offset does not come from this \
                             store",
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
            let (messages, last) = match self.read_pages(after, info.epoch).await {
                Ok(read) => read,
                Err(FeedError::Store(StoreError::OutboxGap {
                    evicted_through, ..
                })) => {
                    return Err(FeedError::MustRefetch {
                        detail: format!(
                            "the outbox of query {query_id:?} no longer holds the batches after \
                             this offset (evicted through sequence {evicted_through})"
                        ),
                        tail,
                    })
                }
                Err(e) => return Err(e),
            };
            let now = store.query_info(query_id).await?;
            if now.epoch != info.epoch {
                continue; // cleared while reading: the entries may belong to the new epoch
            }
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

    /// Reads and renders the entries after `after`, page by page, until the batch or the
    /// byte budget is spent or the outbox ends. The first page is one entry; later pages are
    /// sized from the largest payload seen so far to fit what is left of the budget, so the
    /// entries held at once stay near the budget however large each is. Returns the messages
    /// and the last sequence they cover. A gap met after the first page ends the read early
    /// (the next read reports it).
    async fn read_pages(
        &self,
        after: Option<u64>,
        epoch: u64,
    ) -> Result<(Vec<String>, Option<u64>), FeedError> {
        let _slot = READ_SLOTS
            .acquire()
            .await
            .map_err(|_| FeedError::Internal("feed read slots closed".to_owned()))?;
        let (store, query_id) = (self.runtime.store(), self.query_id);
        let mut messages = Vec::new();
        let mut used = 0usize;
        let mut last = after;
        let mut page = 1usize;
        let mut largest_payload = 1usize;
        while messages.len() < self.batch {
            let limit = page.min(self.batch - messages.len());
            let entries = match store.read_outbox(query_id, last, limit).await {
                Ok(entries) => entries,
                Err(e @ StoreError::OutboxGap { .. }) if messages.is_empty() => {
                    return Err(e.into())
                }
                Err(StoreError::OutboxGap { .. }) => break,
                Err(e) => return Err(e.into()),
            };
            let fetched = entries.len();
            largest_payload =
                (entries.iter().map(|e| e.payload.len())).fold(largest_payload, usize::max);
            let room = self.max_bytes.saturating_sub(used);
            let rendered =
                render_entries(query_id, epoch, entries, room, messages.is_empty()).await?;
            let taken = rendered.len();
            for (sequence, text) in rendered {
                used = used.saturating_add(text.len() + 1);
                last = Some(sequence);
                messages.push(text);
            }
            if taken < fetched || fetched < limit || used >= self.max_bytes {
                break; // the budget is spent, or the outbox has no more
            }
            page = (self.max_bytes.saturating_sub(used) / largest_payload).clamp(1, MAX_PAGE);
        }
        let last = if messages.is_empty() { None } else { last };
        Ok((messages, last))
    }

    /// Waits for a commit after `after` and reads from there: the first non-empty read, or
    /// `None` once `stop` completes (shutdown, a deadline, a departed client) or the runtime
    /// drops the query's position. `stop` wins over a commit that is ready at the same moment,
    /// so a stopping reader does not start another store read. Parked waiters hold nothing
    /// of the store.
    ///
    /// The runtime drops a query's position when the query is purged: one last read then
    /// tells the waiter what became of its offset (must-refetch), instead of an empty answer
    /// that would send it back to wait on a query that no longer exists.
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
                        let read = self.read(Start::At(after)).await?;
                        return Ok((!read.messages.is_empty()).then_some(read));
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
/// Stops before the entry that would take the messages past `room` bytes, unless no message
/// was taken yet (`need_one`). Returns each message with its entry's last sequence.
async fn render_entries(
    query_id: &str,
    epoch: u64,
    entries: Vec<OutboxEntry>,
    room: usize,
    need_one: bool,
) -> Result<Vec<(u64, String)>, FeedError> {
    let query_id = query_id.to_owned();
    let rendered = tokio::task::spawn_blocking(move || {
        let mut out = Vec::with_capacity(entries.len());
        let mut room = room;
        for entry in &entries {
            let change = CommittedChange::from_outbox(&query_id, epoch, entry)?;
            let text = render::change(&change).to_string();
            // One byte for the separator in the array the messages end up in.
            let cost = text.len().saturating_add(1);
            if cost > room && !(need_one && out.is_empty()) {
                break;
            }
            room = room.saturating_sub(cost);
            out.push((entry.span.last, text));
        }
        Ok::<_, StoreError>(out)
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
