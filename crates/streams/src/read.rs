//! Reading: a stream's bytes from a position, stitched across fork boundaries (a fork's
//! positions before its fork point are its source's, read from the source's records), in
//! responses bounded in bytes; and waiting for the next commit of a stream.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::engine::{Engine, MAX_FORK_DEPTH};
use crate::error::StreamError;
use crate::meta::StreamMeta;
use crate::store::{Record, StoreError};

/// Bytes of one stream from `from` to `next`.
#[derive(Clone, Debug)]
pub struct Chunk {
    /// The stream as of the read.
    pub meta: Arc<StreamMeta>,
    /// First position read.
    pub from: u64,
    /// Position after the last byte returned.
    pub next: u64,
    /// The bytes, in order (JSON mode: records, each one or more messages joined by `,`).
    pub parts: Vec<Bytes>,
}

impl Chunk {
    /// Whether the chunk reaches the tail the stream had when it was read.
    pub fn up_to_date(&self) -> bool {
        self.next >= self.meta.tail
    }

    /// Whether the chunk reaches the final tail of a closed stream (EOF).
    pub fn closed(&self) -> bool {
        self.meta.closed && self.up_to_date()
    }
}

/// A contiguous run of positions read from one stream's own records.
struct Segment {
    id: u64,
    start: u64,
    end: u64,
}

/// How a wait for a commit ended.
pub enum Waited {
    /// The stream has bytes past the position, or is closed.
    Ready(Arc<StreamMeta>),
    /// Nothing happened within the timeout.
    TimedOut(Arc<StreamMeta>),
    /// The stream was deleted (or soft-deleted) meanwhile.
    Removed {
        /// Whether it was soft-deleted (410) rather than removed (404).
        gone: bool,
    },
    /// The server is shutting down.
    Shutdown,
}

impl Engine {
    /// The segments `meta`'s positions come from, oldest source first.
    fn segments(&self, meta: &Arc<StreamMeta>) -> Result<Vec<Segment>, StreamError> {
        let mut segments = Vec::new();
        let mut current = Arc::clone(meta);
        // A fork of a fork may diverge inside its source's inherited range, so every
        // ancestor contributes only up to the lowest fork point below it.
        let mut end = meta.tail;
        loop {
            segments.push(Segment {
                id: current.id,
                start: current.base.min(end),
                end,
            });
            let Some(fork) = &current.fork else { break };
            if segments.len() > MAX_FORK_DEPTH {
                return Err(StoreError::Corrupt("fork chain too long".into()).into());
            }
            end = end.min(current.base);
            let source = self.slot(&fork.source).and_then(|s| s.meta());
            current = source.filter(|s| s.id == fork.source_id).ok_or_else(|| {
                StreamError::NotFound(format!("{} (its fork source is gone)", fork.source))
            })?;
        }
        segments.reverse();
        Ok(segments)
    }

    /// Reads `meta`'s bytes from `from` (at most its tail), at most `max_bytes` of them — JSON
    /// records are never split, so a JSON chunk may exceed it by one record, and always holds at
    /// least one when any is there.
    pub async fn read_chunk(
        &self,
        meta: &Arc<StreamMeta>,
        from: u64,
        max_bytes: usize,
    ) -> Result<Chunk, StreamError> {
        match self.read_records(meta, from, max_bytes).await {
            Err(StreamError::Store(StoreError::Corrupt(detail))) if self.shared => {
                // Another host may have deleted (or expired) the stream, and dropped its
                // records, after this host loaded its meta: that is a 404, not corruption.
                let name = (self.all_slots().into_iter())
                    .find(|s| s.meta().is_some_and(|m| m.id == meta.id))
                    .map(|s| s.name.clone());
                match name {
                    Some(name) => match self.vanished(&name, meta.id).await? {
                        Some(gone) => Err(gone),
                        None => Err(StoreError::Corrupt(detail).into()),
                    },
                    // No slot holds it any more: this host has already applied its removal.
                    None => Err(StreamError::NotFound("(deleted while being read)".into())),
                }
            }
            other => other,
        }
    }

    /// Shared stores: what records of stream `id`, stored under `name`, that a meta promised
    /// but the store no longer has mean — `None` when `name` still holds that stream (then
    /// they are truly lost), else the 404 (or 410) the request gets.
    pub(crate) async fn vanished(
        &self,
        name: &str,
        id: u64,
    ) -> Result<Option<StreamError>, StreamError> {
        let stored = (self.store.load_metas(&[name.to_owned()]).await?)
            .pop()
            .flatten();
        Ok(match stored {
            Some(m) if m.id == id && m.soft_deleted => Some(StreamError::Gone(name.to_owned())),
            Some(m) if m.id == id => None,
            _ => Some(StreamError::NotFound(name.to_owned())),
        })
    }

    async fn read_records(
        &self,
        meta: &Arc<StreamMeta>,
        from: u64,
        max_bytes: usize,
    ) -> Result<Chunk, StreamError> {
        let json = meta.is_json();
        let mut parts: Vec<Bytes> = Vec::new();
        let mut position = from;
        let mut remaining = max_bytes.max(1);
        'segments: for segment in self.segments(meta)? {
            if segment.end <= position {
                continue;
            }
            while position < segment.end {
                let records = (self.store)
                    .read(segment.id, position, segment.end, remaining)
                    .await?;
                let before = position;
                if records.is_empty() {
                    return Err(missing(segment.id, position));
                }
                for Record { start, bytes } in records {
                    if start > position {
                        return Err(missing(segment.id, position));
                    }
                    let end = (start + bytes.len() as u64).min(segment.end);
                    if end <= position {
                        continue;
                    }
                    let mut slice =
                        bytes.slice((position - start) as usize..(end - start) as usize);
                    if slice.len() > remaining {
                        if json && !parts.is_empty() {
                            break 'segments;
                        }
                        if !json {
                            slice = slice.slice(..remaining);
                        }
                    }
                    position += slice.len() as u64;
                    remaining = remaining.saturating_sub(slice.len());
                    parts.push(slice);
                    if remaining == 0 {
                        break 'segments;
                    }
                }
                if position == before {
                    return Err(missing(segment.id, position));
                }
            }
        }
        Ok(Chunk {
            meta: Arc::clone(meta),
            from,
            next: position,
            parts,
        })
    }

    /// The record of `meta`'s chain that holds position `at`, cut at its segment's end.
    pub(crate) async fn record_at(
        &self,
        meta: &Arc<StreamMeta>,
        at: u64,
    ) -> Result<Option<Record>, StreamError> {
        for segment in self.segments(meta)? {
            if segment.start <= at && at < segment.end {
                let records = self.store.read(segment.id, at, segment.end, 1).await?;
                return Ok(records.into_iter().next().map(|mut r| {
                    let keep = segment
                        .end
                        .saturating_sub(r.start)
                        .min(r.bytes.len() as u64);
                    r.bytes.truncate(keep as usize);
                    r
                }));
            }
        }
        Ok(None)
    }
}

fn missing(id: u64, position: u64) -> StreamError {
    StoreError::Corrupt(format!("stream {id} has no record at position {position}")).into()
}

/// Waits until the stream behind `rx` has bytes past `position` or is closed, at most
/// `timeout`.
pub async fn wait_past(
    rx: &mut watch::Receiver<Option<Arc<StreamMeta>>>,
    position: u64,
    timeout: Duration,
    shutdown: &CancellationToken,
) -> Waited {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let meta = rx.borrow_and_update().clone();
        let meta = match meta {
            None => return Waited::Removed { gone: false },
            Some(m) if m.soft_deleted => return Waited::Removed { gone: true },
            Some(m) => m,
        };
        if meta.tail > position || meta.closed {
            return Waited::Ready(meta);
        }
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    return Waited::Removed { gone: false };
                }
            }
            () = tokio::time::sleep_until(deadline) => return Waited::TimedOut(meta),
            () = shutdown.cancelled() => return Waited::Shutdown,
        }
    }
}
