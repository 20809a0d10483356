//! Store faults injected through a wrapping store: transient errors are retried, permanent
//! ones stop the query with a classified reason.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use liveresults_core::{
    Checkpoint, Commit, CommitReceipt, ErrorClass, MemoryStore, OutboxEntry, QueryInfo,
    ResultStore, Snapshot, StoreError,
};
use liveresults_runtime::{
    Applied, QueryState, RetryPolicy, Runtime, RuntimeConfig, StopReason, SubmitError,
};

use liveresults_runtime::testing::*;

/// Delegates to a `MemoryStore`, failing the next `fail_commits` commits with `class`.
struct Faulty {
    inner: MemoryStore,
    fail_commits: AtomicUsize,
    class: ErrorClass,
    attempts: AtomicUsize,
    /// Commits that are applied, then reported as transient failures (a timeout after the
    /// write landed).
    land_then_fail: AtomicUsize,
    /// Set: the commit that lands then fails also fences every later attempt (the lease moved
    /// while its reply was lost).
    fence_after_landing: AtomicBool,
    fenced: AtomicBool,
}

impl Faulty {
    fn new(fail_commits: usize, class: ErrorClass) -> Self {
        Faulty {
            inner: MemoryStore::new(),
            fail_commits: AtomicUsize::new(fail_commits),
            class,
            attempts: AtomicUsize::new(0),
            land_then_fail: AtomicUsize::new(0),
            fence_after_landing: AtomicBool::new(false),
            fenced: AtomicBool::new(false),
        }
    }
}

#[async_trait]
impl ResultStore for Faulty {
    async fn commit(
        &self,
        query_id: &str,
        commit: Commit<'_>,
    ) -> Result<CommitReceipt, StoreError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        if self.fenced.load(Ordering::SeqCst) {
            return Err(StoreError::Fenced {
                query_id: query_id.to_owned(),
                fence: commit.fence,
                live: Some(("other-host".into(), 2)),
            });
        }
        let left = self.fail_commits.load(Ordering::SeqCst);
        if left > 0 {
            self.fail_commits.store(left - 1, Ordering::SeqCst);
            return Err(StoreError::Backend {
                backend: "faulty",
                class: self.class,
                message: format!("injected failure ({left} left)"),
            });
        }
        let receipt = self.inner.commit(query_id, commit).await?;
        if self.land_then_fail.load(Ordering::SeqCst) > 0 {
            self.land_then_fail.fetch_sub(1, Ordering::SeqCst);
            if self.fence_after_landing.load(Ordering::SeqCst) {
                self.fenced.store(true, Ordering::SeqCst);
            }
            return Err(StoreError::Backend {
                backend: "faulty",
                class: ErrorClass::Transient,
                message: "timed out (but the write landed)".into(),
            });
        }
        Ok(receipt)
    }
    async fn query_info(&self, query_id: &str) -> Result<QueryInfo, StoreError> {
        self.inner.query_info(query_id).await
    }
    async fn clear_query(&self, query_id: &str) -> Result<QueryInfo, StoreError> {
        self.inner.clear_query(query_id).await
    }
    async fn remove_query(&self, query_id: &str) -> Result<(), StoreError> {
        self.inner.remove_query(query_id).await
    }
    async fn snapshot(&self, query_id: &str, chunk_rows: usize) -> Result<Snapshot, StoreError> {
        self.inner.snapshot(query_id, chunk_rows).await
    }
    async fn read_outbox(
        &self,
        query_id: &str,
        after: Option<u64>,
        max: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        self.inner.read_outbox(query_id, after, max).await
    }
    async fn checkpoint(
        &self,
        reaction_id: &str,
        query_id: &str,
    ) -> Result<Option<Checkpoint>, StoreError> {
        self.inner.checkpoint(reaction_id, query_id).await
    }
    async fn save_checkpoint(
        &self,
        reaction_id: &str,
        query_id: &str,
        checkpoint: Checkpoint,
    ) -> Result<(), StoreError> {
        self.inner
            .save_checkpoint(reaction_id, query_id, checkpoint)
            .await
    }
    async fn delete_checkpoint(&self, reaction_id: &str, query_id: &str) -> Result<(), StoreError> {
        self.inner.delete_checkpoint(reaction_id, query_id).await
    }
    async fn list_queries(&self) -> Result<Vec<QueryInfo>, StoreError> {
        self.inner.list_queries().await
    }
    async fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush().await
    }
}

fn fast_retry(max_attempts: u32) -> RuntimeConfig {
    RuntimeConfig::new().retry(RetryPolicy {
        max_attempts,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(4),
    })
}

async fn run(store: &Arc<Faulty>, config: RuntimeConfig) -> Runtime {
    let dyn_store: Arc<dyn ResultStore> = store.clone();
    let view = Arc::new(liveresults_runtime::reactions::MaterializedView::new(
        "view",
    ));
    Runtime::start(dyn_store, config, vec![view]).await.unwrap()
}

#[tokio::test]
async fn transient_commit_errors_are_retried_until_the_commit_lands() {
    let store = Arc::new(Faulty::new(0, ErrorClass::Transient));
    let rt = run(&store, fast_retry(8)).await;
    let h = rt.handle();
    h.submit_and_wait(lib_add("q", 1, 1, 1)).await.unwrap();
    store.fail_commits.store(5, Ordering::SeqCst);
    let before = store.attempts.load(Ordering::SeqCst);
    assert_eq!(
        h.submit_and_wait(lib_add("q", 2, 2, 2)).await.unwrap(),
        Applied::Committed { sequence: 2 }
    );
    assert_eq!(
        store.attempts.load(Ordering::SeqCst) - before,
        6,
        "5 failures, then success"
    );
    assert_eq!(stored_sequence(&store.inner, "q").await, Some(2));
    assert_eq!(store_rows(&store.inner, "q").await.len(), 2);
    assert_eq!(h.status("q").unwrap().state, QueryState::Running);
    rt.shutdown().await.unwrap();
}

#[tokio::test]
async fn transient_errors_beyond_the_retry_budget_stop_the_query() {
    let store = Arc::new(Faulty::new(100, ErrorClass::Transient));
    let rt = run(&store, fast_retry(3)).await;
    let err = rt
        .handle()
        .submit_and_wait(lib_add("q", 1, 1, 1))
        .await
        .unwrap_err();
    assert!(matches!(err, SubmitError::Store { .. }), "{err}");
    assert_eq!(store.attempts.load(Ordering::SeqCst), 3);
    assert!(matches!(
        rt.handle().status("q").unwrap().state,
        QueryState::Stopped(StopReason::Store(_))
    ));
    rt.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_permanent_error_stops_the_query_at_once_and_others_go_on() {
    let store = Arc::new(Faulty::new(0, ErrorClass::Permanent));
    let rt = run(&store, fast_retry(8)).await;
    let h = rt.handle();
    h.submit_and_wait(lib_add("q", 1, 1, 1)).await.unwrap();
    store.fail_commits.store(1, Ordering::SeqCst);
    let before = store.attempts.load(Ordering::SeqCst);
    let err = h.submit_and_wait(lib_add("q", 2, 2, 2)).await.unwrap_err();
    match &err {
        SubmitError::Store {
            query_id,
            committed,
            source,
        } => {
            assert_eq!(query_id, "q");
            assert_eq!(*committed, Some(1));
            assert!(!source.is_transient());
        }
        other => panic!("expected a store error, got {other}"),
    }
    assert_eq!(
        store.attempts.load(Ordering::SeqCst) - before,
        1,
        "no retry of a permanent error"
    );
    let status = h.status("q").unwrap();
    match status.state {
        QueryState::Stopped(StopReason::Store(message)) => {
            assert!(message.contains("injected failure"), "{message}");
        }
        other => panic!("expected a store stop, got {other:?}"),
    }
    let refused = h.submit_and_wait(lib_add("q", 2, 2, 2)).await.unwrap_err();
    assert!(
        matches!(refused, SubmitError::QueryStopped { .. }),
        "{refused}"
    );
    assert_eq!(stored_sequence(&store.inner, "q").await, Some(1));
    h.submit_and_wait(lib_add("other", 1, 1, 1)).await.unwrap();
    rt.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_failed_attempt_that_landed_counts_as_committed() {
    // Regression: the retry of a commit whose failed attempt had in fact landed met
    // `SequenceRegression` and stopped the query.
    let store = Arc::new(Faulty::new(0, ErrorClass::Transient));
    let rt = run(&store, fast_retry(4)).await;
    let h = rt.handle();
    h.submit_and_wait(lib_add("q", 1, 1, 1)).await.unwrap();
    store.land_then_fail.store(1, Ordering::SeqCst);
    assert_eq!(
        h.submit_and_wait(lib_add("q", 2, 2, 2)).await.unwrap(),
        Applied::Committed { sequence: 2 }
    );
    let status = h.status("q").unwrap();
    assert_eq!(status.state, QueryState::Running);
    assert_eq!((status.sequence, status.row_count), (Some(2), 2));
    h.submit_and_wait(lib_add("q", 3, 3, 3)).await.unwrap();
    assert_eq!(stored_sequence(&store.inner, "q").await, Some(3));
    rt.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_landed_attempt_whose_retry_is_fenced_counts_as_committed() {
    // The first attempt lands, its reply is lost, and meanwhile the lease moved: the retry is
    // fenced. The commit is in the store, so it must be reported as committed (sequence 2),
    // not as "nothing committed"; the next commit is the one the fence refuses.
    let store = Arc::new(Faulty::new(0, ErrorClass::Transient));
    let rt = run(&store, fast_retry(4)).await;
    let h = rt.handle();
    h.submit_and_wait(lib_add("q", 1, 1, 1)).await.unwrap();
    store.land_then_fail.store(1, Ordering::SeqCst);
    store.fence_after_landing.store(true, Ordering::SeqCst);
    assert_eq!(
        h.submit_and_wait(lib_add("q", 2, 2, 2)).await.unwrap(),
        Applied::Committed { sequence: 2 }
    );
    assert_eq!(stored_sequence(&store.inner, "q").await, Some(2));
    let refused = h.submit_and_wait(lib_add("q", 3, 3, 3)).await.unwrap_err();
    assert!(
        matches!(refused, SubmitError::QueryStopped { .. }),
        "{refused}"
    );
    assert_eq!(stored_sequence(&store.inner, "q").await, Some(2));
    rt.shutdown().await.unwrap();
}

#[tokio::test]
async fn resume_restarts_a_query_stopped_by_the_store_at_its_committed_position() {
    let store = Arc::new(Faulty::new(0, ErrorClass::Permanent));
    let rt = run(&store, fast_retry(2)).await;
    let h = rt.handle();
    h.submit_and_wait(lib_add("q", 1, 1, 1)).await.unwrap();
    store.fail_commits.store(1, Ordering::SeqCst);
    h.submit_and_wait(lib_add("q", 2, 2, 2)).await.unwrap_err();
    assert!(matches!(
        h.status("q").unwrap().state,
        QueryState::Stopped(StopReason::Store(_))
    ));
    // The cause is gone: resume re-reads the committed position, keeps the rows.
    let info = h.resume("q").await.unwrap();
    assert_eq!((info.sequence, info.row_count), (Some(1), 1));
    assert_eq!(h.status("q").unwrap().state, QueryState::Running);
    assert_eq!(
        h.submit_and_wait(lib_add("q", 2, 2, 2)).await.unwrap(),
        Applied::Committed { sequence: 2 }
    );
    assert_eq!(store_rows(&store.inner, "q").await.len(), 2);
    // Resuming a running query changes nothing.
    let info = h.resume("q").await.unwrap();
    assert_eq!(info.sequence, Some(2));
    rt.shutdown().await.unwrap();
}
