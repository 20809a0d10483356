//! The async face of the engine. Commits, clears and removals go to the store's writer thread
//! (see the `writer` module), which writes every commit queued at once as one group. Every
//! other call that touches RocksDB runs on the blocking pool, with at most `max_blocking_jobs`
//! writes (checkpoints, flushes, probes) and as many reads at once; reads and writes wait in
//! separate lines so that a crowd of change-feed readers woken by one commit cannot queue
//! ahead of a checkpoint.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use liveresults_core::lease::check_fence;
use liveresults_core::{
    Checkpoint, Commit, CommitReceipt, ErrorClass, OutboxEntry, QueryInfo, ResultStore, Snapshot,
    StoreError,
};
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::engine::Engine;
use crate::options::RocksStoreOptions;
use crate::owned::OwnedCommit;
use crate::snapshot;
use crate::writer::Writer;

/// A [`ResultStore`] on RocksDB. Cheap to clone; clones share one database.
#[derive(Clone)]
pub struct RocksStore {
    engine: Arc<Engine>,
    writer: Writer,
    writes: Arc<Semaphore>,
    reads: Arc<Semaphore>,
    snapshot_slots: Arc<Semaphore>,
}

/// Which line a blocking job waits in.
#[derive(Clone, Copy)]
enum Line {
    Read,
    Write,
}

impl std::fmt::Debug for RocksStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksStore")
            .field("path", &self.engine.path)
            .finish_non_exhaustive()
    }
}

impl RocksStore {
    /// Opens (creating if needed) the store in directory `path`, from an async context.
    pub async fn open(
        path: impl AsRef<Path>,
        options: RocksStoreOptions,
    ) -> Result<RocksStore, StoreError> {
        let path = path.as_ref().to_owned();
        tokio::task::spawn_blocking(move || RocksStore::open_blocking(&path, options))
            .await
            .map_err(|e| join_error(&e))?
    }

    /// Opens (creating if needed) the store in directory `path`, blocking the calling thread.
    ///
    /// Fails with [`StoreError::Locked`] when another process or handle has the directory open,
    /// and with [`StoreError::UnsupportedFormat`] for a store written by another format version.
    pub fn open_blocking(
        path: &Path,
        options: RocksStoreOptions,
    ) -> Result<RocksStore, StoreError> {
        let span = tracing::info_span!("store_open", path = %path.display());
        let _enter = span.enter();
        let jobs = options.max_blocking_jobs;
        let snapshots = options.max_open_snapshots;
        let engine = Engine::open(path, options)?;
        let writer = Writer::spawn(&engine)?;
        tracing::info!("store opened");
        Ok(RocksStore {
            engine,
            writer,
            writes: Arc::new(Semaphore::new(jobs)),
            reads: Arc::new(Semaphore::new(jobs)),
            snapshot_slots: Arc::new(Semaphore::new(snapshots)),
        })
    }

    /// Closes the store after in-flight operations finish: every commit queued so far lands,
    /// later ones (from any clone) fail with [`StoreError::Closed`], background index scans
    /// stop, the WAL is synced and the memtables are written out, so the next open replays
    /// nothing (a crash instead leaves a WAL to replay, which costs time at open, never data).
    /// The database itself closes when the last clone and the last open snapshot are gone.
    pub async fn close(self) -> Result<(), StoreError> {
        self.writer.stop().await;
        self.blocking(Line::Write, |engine| {
            engine.stop_indexer();
            engine.flush()?;
            engine.flush_memtables()
        })
        .await?;
        self.writes.close();
        self.reads.close();
        Ok(())
    }

    /// Runs `f` on the blocking pool, holding a permit of `line`.
    async fn blocking<T, F>(&self, line: Line, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Engine) -> Result<T, StoreError> + Send + 'static,
    {
        let permits = match line {
            Line::Read => &self.reads,
            Line::Write => &self.writes,
        };
        let _permit = permits.acquire().await.map_err(|_| StoreError::Closed)?;
        let engine = Arc::clone(&self.engine);
        tokio::task::spawn_blocking(move || f(&engine))
            .await
            .map_err(|e| join_error(&e))?
    }
}

fn join_error(err: &tokio::task::JoinError) -> StoreError {
    StoreError::Backend {
        backend: "rocksdb",
        class: ErrorClass::Permanent,
        message: format!("blocking task failed: {err}"),
    }
}

#[async_trait]
impl ResultStore for RocksStore {
    async fn commit(
        &self,
        query_id: &str,
        commit: Commit<'_>,
    ) -> Result<CommitReceipt, StoreError> {
        let span = tracing::debug_span!(
            "commit",
            query_id = %query_id,
            sequence = ?commit.sequence.map(|s| s.last),
            mutations = commit.mutations.len()
        );
        // One process owns a RocksDB directory, so no lease can be live and no token valid.
        check_fence(query_id, commit.fence, None)?;
        let owned = OwnedCommit::new(&commit);
        self.writer
            .commit(query_id.to_owned(), owned)
            .instrument(span)
            .await
    }

    async fn query_info(&self, query_id: &str) -> Result<QueryInfo, StoreError> {
        // Fast path: a loaded query answers from memory without a thread hop.
        if let Some(handle) = self.engine.cached(query_id) {
            if let Ok(meta) = handle.published.lock() {
                return Ok(handle.published_info(meta.as_ref()));
            }
        }
        let id = query_id.to_owned();
        self.blocking(Line::Read, move |engine| engine.query_info(&id))
            .await
    }

    async fn clear_query(&self, query_id: &str) -> Result<QueryInfo, StoreError> {
        let span = tracing::info_span!("clear", query_id = %query_id);
        self.writer
            .clear(query_id.to_owned())
            .instrument(span)
            .await
    }

    async fn remove_query(&self, query_id: &str) -> Result<(), StoreError> {
        let span = tracing::info_span!("remove", query_id = %query_id);
        self.writer
            .remove(query_id.to_owned())
            .instrument(span)
            .await
    }

    async fn snapshot(&self, query_id: &str, chunk_rows: usize) -> Result<Snapshot, StoreError> {
        if self.writes.is_closed() {
            return Err(StoreError::Closed);
        }
        let (info, chunks) = snapshot::start(
            Arc::clone(&self.engine),
            Arc::clone(&self.snapshot_slots),
            query_id.to_owned(),
            chunk_rows,
        )
        .await?;
        Ok(Snapshot::new(info, Box::new(chunks)))
    }

    async fn read_outbox(
        &self,
        query_id: &str,
        after: Option<u64>,
        max_entries: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let id = query_id.to_owned();
        self.blocking(Line::Read, move |engine| {
            engine.read_outbox(&id, after, max_entries)
        })
        .await
    }

    async fn checkpoint(
        &self,
        reaction_id: &str,
        query_id: &str,
    ) -> Result<Option<Checkpoint>, StoreError> {
        let (r, q) = (reaction_id.to_owned(), query_id.to_owned());
        self.blocking(Line::Read, move |engine| engine.checkpoint(&r, &q))
            .await
    }

    async fn save_checkpoint(
        &self,
        reaction_id: &str,
        query_id: &str,
        checkpoint: Checkpoint,
    ) -> Result<(), StoreError> {
        let (r, q) = (reaction_id.to_owned(), query_id.to_owned());
        self.blocking(Line::Write, move |engine| {
            engine.save_checkpoint(&r, &q, Some(checkpoint))
        })
        .await
    }

    async fn delete_checkpoint(&self, reaction_id: &str, query_id: &str) -> Result<(), StoreError> {
        let (r, q) = (reaction_id.to_owned(), query_id.to_owned());
        self.blocking(Line::Write, move |engine| {
            engine.save_checkpoint(&r, &q, None)
        })
        .await
    }

    async fn list_queries(&self) -> Result<Vec<QueryInfo>, StoreError> {
        self.blocking(Line::Read, |engine| engine.list_queries())
            .await
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.blocking(Line::Write, |engine| engine.flush()).await
    }

    async fn check_writable(&self) -> Result<(), StoreError> {
        self.blocking(Line::Write, |engine| engine.check_writable())
            .await
    }
}
