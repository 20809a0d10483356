//! Point-in-time snapshots streamed in chunks.
//!
//! A RocksDB snapshot and its iterator borrow the database, so they cannot be parked inside an
//! async reader between chunks. Instead one blocking thread owns them for the snapshot's whole
//! life and hands chunks over a channel of capacity [`CHUNKS_IN_FLIGHT`]: memory stays bounded
//! by that many chunks however slow the reader, and dropping the reader ends the thread at its
//! next send.

use std::sync::Arc;

use async_trait::async_trait;
use liveresults_core::{QueryInfo, RowChunk, SnapshotChunks, StoreError};
use rocksdb::ReadOptions;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::engine::{Engine, CF_ROWS};
use crate::error::corrupt_record;
use crate::keys::{self, QueryPrefix};

/// Chunks buffered between the reading thread and the consumer.
const CHUNKS_IN_FLIGHT: usize = 2;
/// Read-ahead for the sequential scan.
const SCAN_READAHEAD_BYTES: usize = 2 << 20;

type ChunkResult = Result<RowChunk, StoreError>;

/// The consumer side of a snapshot.
pub(crate) struct RocksChunks {
    rx: mpsc::Receiver<ChunkResult>,
}

#[async_trait]
impl SnapshotChunks for RocksChunks {
    async fn next_chunk(&mut self) -> Result<Option<RowChunk>, StoreError> {
        self.rx.recv().await.transpose()
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
    // Held by the reading thread for the snapshot's whole life.
    let slot = slots
        .acquire_owned()
        .await
        .map_err(|_| StoreError::Closed)?;
    let (header_tx, header_rx) = oneshot::channel();
    let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
    tokio::task::spawn_blocking(move || {
        stream(
            &engine,
            &query_id,
            &prefix,
            chunk_rows.max(1),
            header_tx,
            &tx,
        );
        // Release the database before the consumer can observe the end of the stream, so a
        // reader that drains a snapshot and then reopens the store finds it unlocked.
        drop(engine);
        drop(slot);
        drop(tx);
    });
    let info = header_rx.await.map_err(|_| StoreError::Closed)??;
    Ok((info, RocksChunks { rx }))
}

fn stream(
    engine: &Engine,
    query_id: &str,
    prefix: &QueryPrefix,
    chunk_rows: usize,
    header_tx: oneshot::Sender<Result<QueryInfo, StoreError>>,
    tx: &mpsc::Sender<ChunkResult>,
) {
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
        return;
    }
    let rows_cf = match engine.cf(CF_ROWS) {
        Ok(cf) => cf,
        Err(e) => {
            let _ = tx.blocking_send(Err(e));
            return;
        }
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
            let err = corrupt_record(format!("row key of query {query_id:?}"), format!("{key:?}"));
            let _ = tx.blocking_send(Err(err));
            return;
        };
        chunk.push(sig, value);
        if chunk.len() >= chunk_rows {
            let full = std::mem::replace(&mut chunk, RowChunk::with_capacity(chunk_rows));
            if tx.blocking_send(Ok(full)).is_err() {
                return; // the reader went away
            }
        }
        iter.next();
    }
    if let Err(e) = iter.status() {
        let _ = tx.blocking_send(Err(engine.rocks(e)));
        return;
    }
    if !chunk.is_empty() {
        let _ = tx.blocking_send(Ok(chunk));
    }
}
