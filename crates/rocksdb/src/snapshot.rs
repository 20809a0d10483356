//! Point-in-time snapshots streamed in chunks.
//!
//! A RocksDB snapshot and its iterator borrow the database, so they cannot be parked inside an
//! async reader between chunks. Instead one blocking thread owns them for the snapshot's whole
//! life and hands chunks over a channel of capacity [`CHUNKS_IN_FLIGHT`]: memory stays bounded
//! by that many chunks however slow the reader, and dropping the reader ends the thread at its
//! next send. Threads are bounded by the store's snapshot slots, and a reader that stops
//! taking chunks for `snapshot_idle_timeout` gives its slot back: it then gets an error, and
//! the end of a stream is only ever reported after the thread marked it complete.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use liveresults_core::{ErrorClass, QueryInfo, RowChunk, SnapshotChunks, StoreError};
use rocksdb::ReadOptions;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::engine::{Engine, CF_ROWS};
use crate::keys::{self, QueryPrefix};

/// Chunks buffered between the reading thread and the consumer.
const CHUNKS_IN_FLIGHT: usize = 2;
/// Read-ahead for the sequential scan.
const SCAN_READAHEAD_BYTES: usize = 2 << 20;

type ChunkResult = Result<RowChunk, StoreError>;

fn transient(message: String) -> StoreError {
    StoreError::Backend {
        backend: "rocksdb",
        class: ErrorClass::Transient,
        message,
    }
}

/// The consumer side of a snapshot.
pub(crate) struct RocksChunks {
    rx: mpsc::Receiver<ChunkResult>,
    /// Set by the reading thread once every chunk has been handed over.
    complete: Arc<AtomicBool>,
    idle_timeout: Duration,
}

#[async_trait]
impl SnapshotChunks for RocksChunks {
    async fn next_chunk(&mut self) -> Result<Option<RowChunk>, StoreError> {
        match self.rx.recv().await {
            Some(chunk) => chunk.map(Some),
            None if self.complete.load(Ordering::Acquire) => Ok(None),
            None => Err(transient(format!(
                "snapshot abandoned: its reader took no chunk for {:?}",
                self.idle_timeout
            ))),
        }
    }
}

/// The reading thread's side: sends chunks, giving up on a reader idle for too long.
struct Sender {
    tx: mpsc::Sender<ChunkResult>,
    runtime: Handle,
    idle_timeout: Duration,
}

impl Sender {
    /// Hands one chunk over; false when the reader is gone or idle past the timeout.
    fn send(&self, chunk: ChunkResult) -> bool {
        let send = tokio::time::timeout(self.idle_timeout, self.tx.send(chunk));
        matches!(self.runtime.block_on(send), Ok(Ok(())))
    }
}

/// Starts a snapshot of `query_id`; returns the state it was taken at and its chunks.
pub(crate) async fn start(
    engine: Arc<Engine>,
    slots: Arc<Semaphore>,
    query_id: String,
    chunk_rows: usize,
) -> Result<(QueryInfo, RocksChunks), StoreError> {
    let prefix = QueryPrefix::new(&query_id)?;
    let (wait, idle_timeout) = (
        engine.options.snapshot_wait,
        engine.options.snapshot_idle_timeout,
    );
    // Held by the reading thread for the snapshot's whole life.
    let slot = match tokio::time::timeout(wait, slots.acquire_owned()).await {
        Ok(Ok(slot)) => slot,
        Ok(Err(_)) => return Err(StoreError::Closed),
        Err(_) => {
            return Err(transient(format!(
                "every snapshot slot stayed busy for {wait:?}"
            )))
        }
    };
    let (header_tx, header_rx) = oneshot::channel();
    let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
    let complete = Arc::new(AtomicBool::new(false));
    let sender = Sender {
        tx,
        runtime: Handle::current(),
        idle_timeout,
    };
    let done = Arc::clone(&complete);
    tokio::task::spawn_blocking(move || {
        if stream(
            &engine,
            &query_id,
            &prefix,
            chunk_rows.max(1),
            header_tx,
            &sender,
        ) {
            done.store(true, Ordering::Release);
        }
        // Release the database before the consumer can observe the end of the stream, so a
        // reader that drains a snapshot and then reopens the store finds it unlocked.
        drop(engine);
        drop(slot);
        drop(sender);
    });
    let info = header_rx.await.map_err(|_| StoreError::Closed)??;
    let chunks = RocksChunks {
        rx,
        complete,
        idle_timeout,
    };
    Ok((info, chunks))
}

/// Streams the rows; true when every chunk was handed over.
fn stream(
    engine: &Engine,
    query_id: &str,
    prefix: &QueryPrefix,
    chunk_rows: usize,
    header_tx: oneshot::Sender<Result<QueryInfo, StoreError>>,
    tx: &Sender,
) -> bool {
    let snapshot = engine.db.snapshot();
    let header = engine
        .read_meta(query_id, prefix, Some(&snapshot))
        .map(|meta| {
            let meta = meta.unwrap_or_default();
            QueryInfo {
                query_id: query_id.to_owned(),
                sequence: meta.sequence,
                row_count: meta.row_count,
                epoch: meta.epoch,
            }
        });
    let failed = header.is_err();
    if header_tx.send(header).is_err() || failed {
        return false;
    }
    let rows_cf = match engine.cf(CF_ROWS) {
        Ok(cf) => cf,
        Err(e) => return tx.send(Err(e)),
    };
    let mut read = ReadOptions::default();
    read.set_snapshot(&snapshot);
    read.set_iterate_upper_bound(prefix.successor());
    read.fill_cache(false);
    read.set_readahead_size(SCAN_READAHEAD_BYTES);
    let mut iter = engine.db.raw_iterator_cf_opt(rows_cf, read);
    iter.seek(prefix.as_bytes());
    let mut chunk = RowChunk::with_capacity(chunk_rows);
    while let Some((key, value)) = iter.item() {
        let Some(sig) = keys::split_key(key).and_then(|(_, rest)| keys::u64_suffix(rest)) else {
            return tx.send(Err(StoreError::corrupt_key("row", query_id, key)));
        };
        chunk.push(sig, value);
        if chunk.len() >= chunk_rows {
            let full = std::mem::replace(&mut chunk, RowChunk::with_capacity(chunk_rows));
            if !tx.send(Ok(full)) {
                return false; // the reader went away or stopped reading
            }
        }
        iter.next();
    }
    if let Err(e) = iter.status() {
        return tx.send(Err(engine.rocks(e)));
    }
    chunk.is_empty() || tx.send(Ok(chunk))
}
