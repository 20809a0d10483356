//! The in-memory store: the full contract without durability, for tests and throwaway runs.
//!
//! Rows live in a copy-on-write `Arc<BTreeMap>`: a snapshot is an `Arc` clone (O(1), truly
//! point-in-time), and only a commit that lands while a snapshot is still being read pays for
//! copying the map.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::broadcast;

use crate::contract_rules::{
    check_sequence, last_wins, next_epoch, validate_query_id, validate_reaction_id,
};
use crate::error::{ErrorClass, StoreError};
use crate::lease::{check_fence, CommitNotice, LeaseClaim, LeaseHolder, LeaseOutcome, Leases};
use crate::model::{
    Checkpoint, Commit, CommitReceipt, OutboxEntry, OutboxRetention, QueryInfo, RowChunk,
};
use crate::outbox_window::OutboxWindow;
use crate::store::{ResultStore, Snapshot, SnapshotChunks};

type Rows = Arc<BTreeMap<u64, Vec<u8>>>;

/// Notices kept for a slow subscriber before it starts losing them (it then sees `Lagged`).
const NOTICE_CAPACITY: usize = 1024;

/// An in-memory [`ResultStore`]. Cheap to create; everything is lost when it is dropped.
///
/// It also implements [`Leases`] and [`commit_notices`](ResultStore::commit_notices), so
/// that several runtimes in one process can share it the way hosts share a Redis store:
/// that is how the multi-host logic is tested without a server.
#[derive(Debug)]
pub struct MemoryStore {
    state: Mutex<State>,
    retention: OutboxRetention,
    notices: broadcast::Sender<CommitNotice>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::with_retention(OutboxRetention::default())
    }
}

#[derive(Debug, Default)]
struct State {
    queries: BTreeMap<String, QueryData>,
    /// Keyed by `(query_id, reaction_id)` so a clear can drop a query's checkpoints by range.
    checkpoints: BTreeMap<(String, String), Checkpoint>,
    /// Live (or expired, not yet replaced) leases by query id.
    leases: BTreeMap<String, MemoryLease>,
    /// The last fencing token issued per query id; never forgotten, so tokens never repeat.
    fence_tokens: BTreeMap<String, u64>,
    /// Removed query ids -> the epoch a re-created query starts at (see
    /// [`ResultStore::remove_query`]); dropped when the id is committed to again.
    removed: BTreeMap<String, u64>,
}

#[derive(Debug)]
struct MemoryLease {
    holder: String,
    address: String,
    token: u64,
    expires: Instant,
}

impl State {
    /// The query a commit writes to, created (at the epoch a removal left, if any) when new.
    fn query_for_write(&mut self, query_id: &str) -> &mut QueryData {
        let State {
            queries, removed, ..
        } = self;
        queries
            .entry(query_id.to_owned())
            .or_insert_with(|| QueryData {
                epoch: removed.remove(query_id).unwrap_or(0),
                ..QueryData::default()
            })
    }

    /// The fencing rule ([`check_fence`]) against the query's live lease, checked under the
    /// same lock as the write it guards, so the lease cannot move in between.
    fn check_fence(&self, query_id: &str, fence: Option<u64>) -> Result<(), StoreError> {
        let live = self
            .live_lease(query_id, Instant::now())
            .map(|l| (l.holder.as_str(), l.token));
        check_fence(query_id, fence, live)
    }

    /// The query's lease if it has not expired at `now`.
    fn live_lease(&self, query_id: &str, now: Instant) -> Option<&MemoryLease> {
        self.leases.get(query_id).filter(|l| l.expires > now)
    }
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
            notices: broadcast::channel(NOTICE_CAPACITY).0,
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
        state.check_fence(query_id, commit.fence)?;
        if let Some(span) = commit.sequence {
            let committed = state.queries.get(query_id).and_then(|q| q.sequence);
            check_sequence(query_id, committed, span)?;
        }
        // Nothing below can fail, so the commit is all-or-nothing.
        let q = state.query_for_write(query_id);
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
        self.notify(q.info(query_id));
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
        self.clear_query_fenced(query_id, None).await
    }

    async fn clear_query_fenced(
        &self,
        query_id: &str,
        fence: Option<u64>,
    ) -> Result<QueryInfo, StoreError> {
        validate_query_id(query_id)?;
        let mut state = self.lock()?;
        state.check_fence(query_id, fence)?;
        let State {
            queries,
            checkpoints,
            ..
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
        let info = q.info(query_id);
        self.notify(info.clone());
        Ok(info)
    }

    async fn remove_query(&self, query_id: &str) -> Result<(), StoreError> {
        self.remove_query_fenced(query_id, None).await
    }

    async fn remove_query_fenced(
        &self,
        query_id: &str,
        fence: Option<u64>,
    ) -> Result<(), StoreError> {
        validate_query_id(query_id)?;
        let mut state = self.lock()?;
        state.check_fence(query_id, fence)?;
        let floor = match state.queries.get(query_id) {
            // The only step that can fail comes first, so a failed removal changes nothing.
            Some(q) => Some(next_epoch(query_id, q.epoch)?),
            None => None,
        };
        state.checkpoints.retain(|(query, _), _| query != query_id);
        if let Some(floor) = floor {
            state.queries.remove(query_id);
            state.removed.insert(query_id.to_owned(), floor);
            self.notify(QueryInfo::empty(query_id));
        }
        Ok(())
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

    fn leases(&self) -> Option<&dyn Leases> {
        Some(self)
    }

    fn commit_notices(&self) -> Option<broadcast::Receiver<CommitNotice>> {
        Some(self.notices.subscribe())
    }
}

impl MemoryStore {
    /// Announces a write; having no subscriber is normal, so a send error is not one.
    fn notify(&self, info: QueryInfo) {
        let _ = self.notices.send(CommitNotice {
            query_id: info.query_id,
            epoch: info.epoch,
            sequence: info.sequence,
        });
    }
}

#[async_trait]
impl Leases for MemoryStore {
    async fn acquire(
        &self,
        query_id: &str,
        claim: LeaseClaim<'_>,
    ) -> Result<LeaseOutcome, StoreError> {
        validate_query_id(query_id)?;
        let now = Instant::now();
        let mut state = self.lock()?;
        if let Some(live) = state.live_lease(query_id, now) {
            if live.holder != claim.holder {
                return Ok(LeaseOutcome::Held(LeaseHolder {
                    holder: live.holder.clone(),
                    address: live.address.clone(),
                    token: live.token,
                    remaining: live.expires.saturating_duration_since(now),
                }));
            }
        }
        let last = state.fence_tokens.get(query_id).copied().unwrap_or(0);
        let token = last.checked_add(1).ok_or_else(|| {
            StoreError::corrupt(
                format!("fencing token of query {query_id:?}"),
                "at u64::MAX",
            )
        })?;
        let expires = deadline(now, claim.ttl);
        state.fence_tokens.insert(query_id.to_owned(), token);
        state.leases.insert(
            query_id.to_owned(),
            MemoryLease {
                holder: claim.holder.to_owned(),
                address: claim.address.to_owned(),
                token,
                expires,
            },
        );
        Ok(LeaseOutcome::Granted { token })
    }

    async fn renew(&self, query_id: &str, token: u64, ttl: Duration) -> Result<bool, StoreError> {
        validate_query_id(query_id)?;
        let now = Instant::now();
        let mut state = self.lock()?;
        match state.leases.get_mut(query_id) {
            Some(lease) if lease.token == token && lease.expires > now => {
                lease.expires = deadline(now, ttl);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn release(&self, query_id: &str, token: u64) -> Result<(), StoreError> {
        validate_query_id(query_id)?;
        let mut state = self.lock()?;
        if state.leases.get(query_id).is_some_and(|l| l.token == token) {
            state.leases.remove(query_id);
        }
        Ok(())
    }

    async fn holder(&self, query_id: &str) -> Result<Option<LeaseHolder>, StoreError> {
        validate_query_id(query_id)?;
        let now = Instant::now();
        let state = self.lock()?;
        Ok(state.live_lease(query_id, now).map(|l| LeaseHolder {
            holder: l.holder.clone(),
            address: l.address.clone(),
            token: l.token,
            remaining: l.expires.saturating_duration_since(now),
        }))
    }
}

/// `now + ttl`, saturating far in the future instead of overflowing on an absurd ttl.
fn deadline(now: Instant, ttl: Duration) -> Instant {
    now.checked_add(ttl)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
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

    /// The plain clear and removal are the fenced ones without a token: an operator's clear
    /// cannot land under a running owner.
    #[tokio::test]
    async fn plain_clear_and_remove_are_refused_under_a_live_lease() {
        let store = MemoryStore::new();
        let rows = [RowMutation::upsert(1, b"a")];
        store.commit("q", Commit::rows(&rows)).await.unwrap();
        let claim = LeaseClaim {
            holder: "a",
            address: "http://a",
            ttl: Duration::from_secs(60),
        };
        let LeaseOutcome::Granted { token } = store.acquire("q", claim).await.unwrap() else {
            panic!("the lease is free");
        };
        let before = store.query_info("q").await.unwrap();
        for err in [
            store.clear_query("q").await.map(|_| ()).unwrap_err(),
            store.remove_query("q").await.unwrap_err(),
        ] {
            let live = match &err {
                StoreError::Fenced {
                    fence: None, live, ..
                } => live.clone(),
                other => panic!("expected Fenced, got {other}"),
            };
            assert_eq!(live, Some(("a".to_owned(), token)));
        }
        assert_eq!(store.query_info("q").await.unwrap(), before);
        store.release("q", token).await.unwrap();
        assert_eq!(store.clear_query("q").await.unwrap().epoch, 1);
    }

    /// Removing a query at the last epoch has no epoch left to hand a re-created query: it
    /// fails as corrupt and changes nothing (the same rule as a clear).
    #[tokio::test]
    async fn remove_at_the_last_epoch_is_corrupt_and_changes_nothing() {
        let store = MemoryStore::new();
        let rows = [RowMutation::upsert(1, b"a")];
        store
            .commit("q", Commit::sequenced(&rows, SequenceSpan::single(3), b"p"))
            .await
            .unwrap();
        store.lock().unwrap().queries.get_mut("q").unwrap().epoch = u64::MAX;
        let before = store.query_info("q").await.unwrap();
        let err = store.remove_query("q").await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert_eq!(store.query_info("q").await.unwrap(), before);
        assert_eq!(store.list_queries().await.unwrap(), [before]);
    }
}
