//! The in-memory store: the full contract without durability, for tests and throwaway runs.
//!
//! Rows live in a copy-on-write `Arc<BTreeMap>`: a snapshot is an `Arc` clone (O(1), truly
//! point-in-time), and only a commit that lands while a snapshot is still being read pays for
//! copying the map.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use crate::contract_rules::{
    check_sequence, last_wins, next_epoch, validate_query_id, validate_reaction_id,
};
use crate::error::{ErrorClass, StoreError};
use crate::model::{
    Checkpoint, Commit, CommitReceipt, OutboxEntry, OutboxRetention, QueryInfo, RowChunk,
};
use crate::outbox_window::OutboxWindow;
use crate::store::{ResultStore, Snapshot, SnapshotChunks};

type Rows = Arc<BTreeMap<u64, Vec<u8>>>;

/// An in-memory [`ResultStore`]. Cheap to create; everything is lost when it is dropped.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
    retention: OutboxRetention,
}

#[derive(Debug, Default)]
struct State {
    queries: BTreeMap<String, QueryData>,
    /// Keyed by `(query_id, reaction_id)` so a clear can drop a query's checkpoints by range.
    checkpoints: BTreeMap<(String, String), Checkpoint>,
}

#[derive(Debug, Default)]
struct QueryData {
    rows: Rows,
    sequence: Option<u64>,
    epoch: u64,
    window: OutboxWindow,
    outbox: VecDeque<OutboxEntry>,
}

impl QueryData {
    fn info(&self, query_id: &str) -> QueryInfo {
        QueryInfo {
            query_id: query_id.to_owned(),
            sequence: self.sequence,
            row_count: self.rows.len() as u64,
            epoch: self.epoch,
        }
    }
}

impl MemoryStore {
    /// An empty store with the default outbox retention.
    pub fn new() -> Self {
        MemoryStore::default()
    }

    /// An empty store keeping `retention` worth of outbox entries per query.
    #[must_use]
    pub fn with_retention(retention: OutboxRetention) -> Self {
        MemoryStore {
            state: Mutex::default(),
            retention,
        }
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>, StoreError> {
        // A poisoned lock means a panic mid-operation; refusing further use is the only answer
        // that cannot expose a half-applied commit.
        self.state.lock().map_err(|_| StoreError::Backend {
            backend: "memory",
            class: ErrorClass::Permanent,
            message: "store lock poisoned by an earlier panic".into(),
        })
    }
}

#[async_trait]
impl ResultStore for MemoryStore {
    async fn commit(
        &self,
        query_id: &str,
        commit: Commit<'_>,
    ) -> Result<CommitReceipt, StoreError> {
        validate_query_id(query_id)?;
        let mut state = self.lock()?;
        if let Some(span) = commit.sequence {
            let committed = state.queries.get(query_id).and_then(|q| q.sequence);
            check_sequence(query_id, committed, span)?;
        }
        // Nothing below can fail, so the commit is all-or-nothing.
        let q = state.queries.entry(query_id.to_owned()).or_default();
        let rows = Arc::make_mut(&mut q.rows);
        let (mut inserted, mut deleted) = (0, 0);
        for m in last_wins(commit.mutations) {
            match m.data {
                Some(data) => {
                    inserted += u64::from(rows.insert(m.row_signature, data.to_vec()).is_none());
                }
                None => deleted += u64::from(rows.remove(&m.row_signature).is_some()),
            }
        }
        if let Some(span) = commit.sequence {
            let bytes = commit.payload.len() as u64;
            let plan = q.window.plan_push(bytes, self.retention);
            q.outbox.drain(..plan.evict.len());
            q.window.apply_push(span, bytes, &plan);
            q.outbox.push_back(OutboxEntry {
                span,
                payload: commit.payload.to_vec(),
            });
            q.sequence = Some(span.last);
        }
        Ok(CommitReceipt {
            sequence: q.sequence,
            row_count: q.rows.len() as u64,
            inserted,
            deleted,
        })
    }

    async fn query_info(&self, query_id: &str) -> Result<QueryInfo, StoreError> {
        validate_query_id(query_id)?;
        let state = self.lock()?;
        Ok(state
            .queries
            .get(query_id)
            .map_or_else(|| QueryInfo::empty(query_id), |q| q.info(query_id)))
    }

    async fn clear_query(&self, query_id: &str) -> Result<QueryInfo, StoreError> {
        validate_query_id(query_id)?;
        let mut state = self.lock()?;
        let State {
            queries,
            checkpoints,
        } = &mut *state;
        let Some(q) = queries.get_mut(query_id) else {
            return Ok(QueryInfo::empty(query_id));
        };
        // The only step that can fail comes first, so a failed clear changes nothing.
        q.epoch = next_epoch(query_id, q.epoch)?;
        q.rows = Rows::default();
        q.sequence = None;
        q.window.clear();
        q.outbox.clear();
        checkpoints.retain(|(query, _), _| query != query_id);
        Ok(q.info(query_id))
    }

    async fn snapshot(&self, query_id: &str, chunk_rows: usize) -> Result<Snapshot, StoreError> {
        validate_query_id(query_id)?;
        let state = self.lock()?;
        let (info, rows) = match state.queries.get(query_id) {
            Some(q) => (q.info(query_id), Arc::clone(&q.rows)),
            None => (QueryInfo::empty(query_id), Rows::default()),
        };
        let chunks = MemoryChunks {
            rows,
            after: None,
            chunk_rows: chunk_rows.max(1),
        };
        Ok(Snapshot::new(info, Box::new(chunks)))
    }

    async fn read_outbox(
        &self,
        query_id: &str,
        after: Option<u64>,
        max_entries: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        validate_query_id(query_id)?;
        let state = self.lock()?;
        let Some(q) = state.queries.get(query_id) else {
            return Ok(Vec::new());
        };
        q.window.check_read(query_id, after)?;
        Ok(q.outbox
            .iter()
            .filter(|e| after.is_none_or(|a| e.span.last > a))
            .take(max_entries)
            .cloned()
            .collect())
    }

    async fn checkpoint(
        &self,
        reaction_id: &str,
        query_id: &str,
    ) -> Result<Option<Checkpoint>, StoreError> {
        validate_query_id(query_id)?;
        validate_reaction_id(reaction_id)?;
        let state = self.lock()?;
        Ok(state
            .checkpoints
            .get(&(query_id.to_owned(), reaction_id.to_owned()))
            .copied())
    }

    async fn save_checkpoint(
        &self,
        reaction_id: &str,
        query_id: &str,
        checkpoint: Checkpoint,
    ) -> Result<(), StoreError> {
        validate_query_id(query_id)?;
        validate_reaction_id(reaction_id)?;
        let mut state = self.lock()?;
        state
            .checkpoints
            .insert((query_id.to_owned(), reaction_id.to_owned()), checkpoint);
        Ok(())
    }

    async fn delete_checkpoint(&self, reaction_id: &str, query_id: &str) -> Result<(), StoreError> {
        validate_query_id(query_id)?;
        validate_reaction_id(reaction_id)?;
        let mut state = self.lock()?;
        state
            .checkpoints
            .remove(&(query_id.to_owned(), reaction_id.to_owned()));
        Ok(())
    }

    async fn list_queries(&self) -> Result<Vec<QueryInfo>, StoreError> {
        let state = self.lock()?;
        Ok(state.queries.iter().map(|(id, q)| q.info(id)).collect())
    }

    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Walks a frozen copy of a query's rows, resuming after the last signature returned.
struct MemoryChunks {
    rows: Rows,
    after: Option<u64>,
    chunk_rows: usize,
}

#[async_trait]
impl SnapshotChunks for MemoryChunks {
    async fn next_chunk(&mut self) -> Result<Option<RowChunk>, StoreError> {
        let start = self.after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut chunk = RowChunk::with_capacity(self.chunk_rows.min(self.rows.len()));
        for (&sig, data) in self
            .rows
            .range((start, Bound::Unbounded))
            .take(self.chunk_rows)
        {
            chunk.push(sig, data);
            self.after = Some(sig);
        }
        Ok((!chunk.is_empty()).then_some(chunk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{RowMutation, SequenceSpan};

    /// An epoch that cannot grow is a corrupt record: the clear fails and changes nothing.
    #[tokio::test]
    async fn clear_at_the_last_epoch_is_corrupt_and_changes_nothing() {
        let store = MemoryStore::new();
        let rows = [RowMutation::upsert(1, b"a")];
        store
            .commit("q", Commit::sequenced(&rows, SequenceSpan::single(3), b"p"))
            .await
            .unwrap();
        store.lock().unwrap().queries.get_mut("q").unwrap().epoch = u64::MAX;
        let before = store.query_info("q").await.unwrap();
        let err = store.clear_query("q").await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("\"q\""), "names the query: {err}");
        assert_eq!(store.query_info("q").await.unwrap(), before);
        assert_eq!(before.epoch, u64::MAX);
        assert_eq!(store.read_outbox("q", None, 10).await.unwrap().len(), 1);
    }
}
