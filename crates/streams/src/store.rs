//! The storage contract of Durable Streams: what a backend must keep and what it must do
//! atomically. The protocol's rules (producers, sequences, closure, forks, expiry) live once,
//! in the engine; a backend only stores and returns bytes.
//!
//! A backend holds, per stream name, a [`StreamMeta`]; per stream id, its records (each the
//! payload of one append, keyed by the position of its first byte) and its producers' states;
//! and the next stream id to hand out. Every change is one [`WriteSet`] applied atomically —
//! an append's records, the stream's new meta and the producer's new state become durable
//! together or not at all, so a crash can neither keep an append while forgetting that the
//! producer sent it (a retry would duplicate it) nor the reverse (a retry would be dropped).

use async_trait::async_trait;
use bytes::Bytes;

use crate::meta::{ProducerState, StreamMeta};

/// A storage failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The backend failed (I/O, full disk, …); the operation did not happen.
    #[error("stream store: {0}")]
    Backend(String),
    /// A stored record cannot be read back.
    #[error("stream store is corrupt: {0}")]
    Corrupt(String),
    /// The store was closed.
    #[error("stream store is closed")]
    Closed,
    /// A shared store refused a write set because a stream's stored meta (or the next id) is
    /// not what [`WriteSet::expected`] says: another process wrote first. Nothing was written;
    /// the engine reloads what it expected and decides again.
    #[error("stream store: another host changed {0} first")]
    Conflict(String),
}

impl StoreError {
    /// Whether this is a [`StoreError::Conflict`].
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Conflict(_))
    }
}

/// A change made through another handle of a shared store, as [`StreamStore::changes`]
/// reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// The meta of this stream changed (created, appended, closed, deleted, …).
    Stream(String),
    /// Changes may have been missed (the notice channel dropped or lagged): re-check every
    /// stream.
    Lost,
}

/// Everything a backend holds about streams, read once when the engine starts.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Every stream (soft-deleted ones included), by name.
    pub streams: Vec<(String, StreamMeta)>,
    /// The next unused stream id.
    pub next_id: u64,
}

/// One record of a stream: the payload of one append, starting at `start`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Position of the record's first byte.
    pub start: u64,
    /// The bytes (JSON mode: the append's messages joined by `,`).
    pub bytes: Bytes,
}

impl Record {
    /// Position after the record's last byte.
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.bytes.len() as u64)
    }
}

/// One atomic change.
#[derive(Debug, Default)]
pub struct WriteSet {
    /// Metas to put (`Some`) or delete (`None`), by stream name.
    pub metas: Vec<(String, Option<StreamMeta>)>,
    /// Records to put: stream id and record.
    pub records: Vec<(u64, Record)>,
    /// Producer states to put: stream id, producer id, state.
    pub producers: Vec<(u64, String, ProducerState)>,
    /// Stream ids whose records and producer states are all deleted.
    pub drop_streams: Vec<u64>,
    /// The new next stream id, when ids were handed out.
    pub next_id: Option<u64>,
    /// What the engine based the change on: each named stream's meta as it believes it is
    /// stored (`None`: no such stream). A [shared](StreamStore::shared) store applies the set
    /// only if every one still matches, else fails with [`StoreError::Conflict`]; a store
    /// with a single writer may ignore it.
    pub expected: Vec<(String, Option<StreamMeta>)>,
    /// The next stream id the engine believes is stored, checked like [`WriteSet::expected`]
    /// (set by creates, which hand out that id).
    pub expected_next_id: Option<u64>,
}

/// A durable home for streams. Implementations must be safe to call concurrently; the engine
/// never sends two writes for one stream at once.
#[async_trait]
pub trait StreamStore: Send + Sync + 'static {
    /// Every stream's meta and the next id.
    async fn load(&self) -> Result<Loaded, StoreError>;

    /// The state of `producer` on stream `id`, if it has written there.
    async fn producer(&self, id: u64, producer: &str) -> Result<Option<ProducerState>, StoreError>;

    /// How many producers have state on stream `id`, counting at most `at_most` (a caller
    /// comparing with a cap needs no more). `None`: this backend does not count (the
    /// per-stream producer cap is then not enforced).
    async fn producer_count(&self, id: u64, at_most: usize) -> Result<Option<usize>, StoreError> {
        let _ = (id, at_most);
        Ok(None)
    }

    /// Applies `set` atomically (and durably, for a durable backend) before returning.
    async fn write(&self, set: WriteSet) -> Result<(), StoreError>;

    /// Records of stream `id` that hold bytes of `[from, to)`, in order: the one containing
    /// `from` (if any), then the following ones starting before `to`. Stops after the record
    /// that brings the total past `max_bytes` (so at least one is returned when any exists).
    async fn read(
        &self,
        id: u64,
        from: u64,
        to: u64,
        max_bytes: usize,
    ) -> Result<Vec<Record>, StoreError>;

    /// Makes every acknowledged write durable and releases the backend.
    async fn close(&self) -> Result<(), StoreError>;

    /// Whether other processes write to this store too (`serve --redis` on several hosts).
    /// The engine then checks every write against [`WriteSet::expected`], reloads a stream's
    /// meta before answering a request for it, and follows [`StreamStore::changes`]. Memory
    /// and RocksDB stores have one writer: the engine's cache is the truth and none of that
    /// runs.
    fn shared(&self) -> bool {
        false
    }

    /// The stored meta of each of `names`, in order (`None`: no such stream). The default
    /// reads everything; shared stores read just these.
    async fn load_metas(&self, names: &[String]) -> Result<Vec<Option<StreamMeta>>, StoreError> {
        let loaded = self.load().await?;
        let all: std::collections::HashMap<String, StreamMeta> =
            loaded.streams.into_iter().collect();
        Ok(names.iter().map(|n| all.get(n).cloned()).collect())
    }

    /// The stored next stream id.
    async fn load_next_id(&self) -> Result<u64, StoreError> {
        Ok(self.load().await?.next_id)
    }

    /// Where subscriptions (the subscription API) are kept, in this same store so they are as
    /// durable and as shared as the streams. `None`: in process memory.
    fn subscriptions(&self) -> Option<std::sync::Arc<dyn crate::subscription::SubscriptionStore>> {
        None
    }

    /// Changes made through other handles (shared stores), from the moment of the call on:
    /// the engine subscribes before it loads, so every change is in the load or reported.
    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<Change>> {
        None
    }
}
