//! The store traits: Drasi's seed trait and the richer contract the runtime uses.

use async_trait::async_trait;
use tokio::sync::broadcast;

use crate::error::{IndexError, StoreError};
use crate::lease::{check_fence, CommitNotice, Leases};
use crate::model::{
    Checkpoint, Commit, CommitReceipt, OutboxEntry, QueryInfo, RowChunk, RowMutation,
};

/// Rows per chunk when the seed trait's `read_snapshot` collects a whole snapshot.
const SEED_SNAPSHOT_CHUNK_ROWS: usize = 4096;

/// Persistent live results storage for query snapshot recovery (Drasi's seed trait).
///
/// Every [`ResultStore`] implements it through a blanket impl; it is the view of the store
/// that knows nothing of sequences, outboxes or checkpoints.
#[async_trait]
pub trait LiveResultsWriter: Send + Sync {
    /// Applies a batch of row mutations atomically: all of them or none.
    ///
    /// `Some(bytes)` upserts, `None` deletes (deleting an absent row is fine). When a signature
    /// appears twice in one batch, the last mutation wins.
    async fn apply_mutations(
        &self,
        query_id: &str,
        mutations: &[RowMutation<'_>],
    ) -> Result<(), IndexError>;

    /// Reads every live row of a query as `(row_signature, data)` pairs, in unspecified order.
    /// An unknown query reads as empty.
    async fn read_snapshot(&self, query_id: &str) -> Result<Vec<(u64, Vec<u8>)>, IndexError>;

    /// Removes everything of one query; other queries are untouched.
    async fn clear(&self, query_id: &str) -> Result<(), IndexError>;

    /// The exact number of live rows of a query.
    async fn row_count(&self, query_id: &str) -> Result<usize, IndexError>;
}

/// The full store contract (described in prose in `docs/FORMAT.md`, section "Store contract").
///
/// Commits to one query are serialised; commits to different queries may run in parallel.
/// Implementations never block the async executor: blocking work runs on a blocking pool.
#[async_trait]
pub trait ResultStore: Send + Sync {
    /// Applies one commit atomically: its row mutations, its sequence span and its outbox entry
    /// become visible and durable together or not at all.
    ///
    /// A sequenced commit must start after the query's committed sequence
    /// ([`StoreError::SequenceRegression`] otherwise); gaps are allowed, since skipping them is
    /// the runtime's policy decision, not the store's.
    async fn commit(&self, query_id: &str, commit: Commit<'_>)
        -> Result<CommitReceipt, StoreError>;

    /// Sequence, exact row count and epoch of one query; an unknown query reads as empty.
    async fn query_info(&self, query_id: &str) -> Result<QueryInfo, StoreError>;

    /// Removes the query's rows, outbox and reaction checkpoints, resets its sequence to `None`
    /// and increments its epoch, without scanning rows. Returns the new state.
    ///
    /// On a store several hosts share (one with [`ResultStore::leases`]) this is
    /// [`ResultStore::clear_query_fenced`] without a token: refused with
    /// [`StoreError::Fenced`] while any host holds the query's lease.
    async fn clear_query(&self, query_id: &str) -> Result<QueryInfo, StoreError>;

    /// Removes the query entirely: its rows, meta record, outbox and reaction checkpoints go,
    /// it reads as unknown ([`QueryInfo::empty`]) and `list_queries` no longer lists it. Like a
    /// clear it does not scan rows (range deletes, renamed-away keys), and it is atomic: a
    /// failed removal changes nothing.
    ///
    /// What stays is a tiny per-id marker holding the epoch after the removed query's last
    /// one: change-feed offsets are `(epoch, sequence)`, so a query re-created under the same
    /// id starts at that epoch, and an offset taken before the removal is recognisably stale
    /// (must refetch), exactly as after a clear. Removing a query the store does not know
    /// deletes any checkpoints saved for it and leaves no marker.
    ///
    /// Fenced like [`ResultStore::clear_query`] on a store with leases (see
    /// [`ResultStore::remove_query_fenced`]).
    async fn remove_query(&self, query_id: &str) -> Result<(), StoreError>;

    /// [`ResultStore::clear_query`] under the fencing rule of commits
    /// ([`check_fence`]): with `fence: Some(t)` the clear happens only while a live lease
    /// with token `t` exists, with `None` only while no lease is live; otherwise it changes
    /// nothing and fails with [`StoreError::Fenced`]. The lease's holder passes its token, so
    /// a host paused past its lease cannot clear the query under its new owner; an offline
    /// tool passes `None`, so it cannot clear under a running owner.
    ///
    /// Backends with leases override this to check the fence inside the clear's atomic step
    /// (and make their plain `clear_query` this with `None`). The default serves the others:
    /// without [`ResultStore::leases`] no lease can be live, so it is the rule against no
    /// lease, then the plain clear; a backend with leases that has not overridden it yet gets
    /// the rule against [`Leases::holder`] read just before — the same outcome, but not
    /// atomic, so a lease can still move in between.
    async fn clear_query_fenced(
        &self,
        query_id: &str,
        fence: Option<u64>,
    ) -> Result<QueryInfo, StoreError> {
        check_fence_outside(self, query_id, fence).await?;
        self.clear_query(query_id).await
    }

    /// [`ResultStore::remove_query`] under the fencing rule of commits, exactly as
    /// [`ResultStore::clear_query_fenced`] is for clears (the same default).
    async fn remove_query_fenced(
        &self,
        query_id: &str,
        fence: Option<u64>,
    ) -> Result<(), StoreError> {
        check_fence_outside(self, query_id, fence).await?;
        self.remove_query(query_id).await
    }

    /// A point-in-time snapshot: the rows and the sequence they correspond to, from one
    /// consistent view, delivered in chunks of at most `chunk_rows` rows so that a large query
    /// never has to sit in memory at once.
    async fn snapshot(&self, query_id: &str, chunk_rows: usize) -> Result<Snapshot, StoreError>;

    /// Up to `max_entries` outbox entries whose span ends after `after` (`None`: from the start
    /// of the query's history), oldest first.
    ///
    /// Returns [`StoreError::OutboxGap`] when entries right after `after` have been evicted:
    /// never a silent partial answer.
    async fn read_outbox(
        &self,
        query_id: &str,
        after: Option<u64>,
        max_entries: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError>;

    /// The durable checkpoint of a reaction in a query, if any.
    async fn checkpoint(
        &self,
        reaction_id: &str,
        query_id: &str,
    ) -> Result<Option<Checkpoint>, StoreError>;

    /// Durably records a reaction's checkpoint in a query.
    async fn save_checkpoint(
        &self,
        reaction_id: &str,
        query_id: &str,
        checkpoint: Checkpoint,
    ) -> Result<(), StoreError>;

    /// Removes a reaction's checkpoint in a query (absent is fine).
    async fn delete_checkpoint(&self, reaction_id: &str, query_id: &str) -> Result<(), StoreError>;

    /// Every query the store knows (one that was ever committed to, including cleared ones),
    /// ordered by id.
    async fn list_queries(&self) -> Result<Vec<QueryInfo>, StoreError>;

    /// Makes every acknowledged commit durable against power loss (syncs the WAL) and
    /// releases background work. The store remains usable.
    async fn flush(&self) -> Result<(), StoreError>;

    /// Whether the store accepts writes right now, found out by a write that changes nothing
    /// a reader can see. Readiness probes ask this: a store that went read-only after a
    /// failed write (a full disk) must make the server unready, not look healthy. Backends
    /// that cannot fail this way keep the default.
    async fn check_writable(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// The store's leases when several hosts may share it (`None`: one process owns the
    /// store, as with RocksDB's directory lock, and no lease is needed).
    fn leases(&self) -> Option<&dyn Leases> {
        None
    }

    /// A subscription to the commits and clears of every query, from every host sharing the
    /// store (this one included), so readers on any host wake when a query changes. `None`
    /// for stores only one process writes: that process's runtime knows its own commits.
    ///
    /// A receiver must assume every query may have changed when notices were lost, which it
    /// learns in one of two ways: it lagged (`RecvError::Lagged`), or it received the
    /// **lost-notices marker**, a notice whose `query_id` is empty (no query has that id). A
    /// backend whose notices travel over a connection (Redis Pub/Sub) sends the marker once
    /// the connection dropped and its subscription is back: what was published in between is
    /// gone, and since the marker follows the restored subscription, re-reading then misses
    /// nothing. `RecvError::Closed` means the store was closed or dropped.
    fn commit_notices(&self) -> Option<broadcast::Receiver<CommitNotice>> {
        None
    }
}

/// The fencing rule checked before (not inside) a write: against no lease for a store without
/// leases, else against the live lease read now. The provided `*_fenced` methods use it.
async fn check_fence_outside<S: ResultStore + ?Sized>(
    store: &S,
    query_id: &str,
    fence: Option<u64>,
) -> Result<(), StoreError> {
    let live = match store.leases() {
        Some(leases) => leases.holder(query_id).await?,
        None => None,
    };
    check_fence(
        query_id,
        fence,
        live.as_ref().map(|h| (h.holder.as_str(), h.token)),
    )
}

/// The source of a snapshot's chunks; each backend provides its own.
#[async_trait]
pub trait SnapshotChunks: Send {
    /// The next chunk, or `None` when the snapshot is exhausted.
    async fn next_chunk(&mut self) -> Result<Option<RowChunk>, StoreError>;
}

/// A point-in-time snapshot of one query, read chunk by chunk.
pub struct Snapshot {
    info: QueryInfo,
    chunks: Box<dyn SnapshotChunks>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl Snapshot {
    /// Pairs the state the snapshot was taken at with the source of its rows.
    pub fn new(info: QueryInfo, chunks: Box<dyn SnapshotChunks>) -> Self {
        Snapshot { info, chunks }
    }

    /// The sequence, row count and epoch the rows correspond to.
    pub fn info(&self) -> &QueryInfo {
        &self.info
    }

    /// The next chunk of rows, or `None` when all rows have been read.
    pub async fn next_chunk(&mut self) -> Result<Option<RowChunk>, StoreError> {
        self.chunks.next_chunk().await
    }

    /// Reads every remaining row into memory (for small queries and tests).
    pub async fn collect_rows(mut self) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        // The count comes from disk: never let a corrupt one size an allocation.
        let hint = usize::try_from(self.info.row_count)
            .unwrap_or(0)
            .min(1 << 20);
        let mut rows = Vec::with_capacity(hint);
        while let Some(chunk) = self.next_chunk().await? {
            rows.extend(chunk.iter().map(|(s, d)| (s, d.to_vec())));
        }
        Ok(rows)
    }
}

#[async_trait]
impl<S: ResultStore + ?Sized> LiveResultsWriter for S {
    async fn apply_mutations(
        &self,
        query_id: &str,
        mutations: &[RowMutation<'_>],
    ) -> Result<(), IndexError> {
        self.commit(query_id, Commit::rows(mutations))
            .await
            .map(|_| ())
    }

    async fn read_snapshot(&self, query_id: &str) -> Result<Vec<(u64, Vec<u8>)>, IndexError> {
        self.snapshot(query_id, SEED_SNAPSHOT_CHUNK_ROWS)
            .await?
            .collect_rows()
            .await
    }

    async fn clear(&self, query_id: &str) -> Result<(), IndexError> {
        self.clear_query(query_id).await.map(|_| ())
    }

    async fn row_count(&self, query_id: &str) -> Result<usize, IndexError> {
        let count = self.query_info(query_id).await?.row_count;
        usize::try_from(count).map_err(|_| {
            StoreError::corrupt_meta(
                query_id,
                format_args!("row count {count} does not fit in usize"),
            )
        })
    }
}
