//! Retrying transient failures with exponential backoff.

use std::future::Future;

use liveresults_core::{Commit, CommitReceipt, ResultStore, StoreError};

use crate::config::RetryPolicy;

/// Runs `op` until it succeeds, fails permanently, or the attempts run out.
pub(crate) async fn store_retry<T, F, Fut>(
    policy: RetryPolicy,
    what: &str,
    mut op: F,
) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut backoff = policy.initial_backoff;
    let mut attempt = 1;
    loop {
        match op().await {
            Err(e) if e.is_transient() && attempt < policy.max_attempts.max(1) => {
                tracing::warn!(operation = what, attempt, error = %e, "transient store error, retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(policy.max_backoff);
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Commits with retries. An attempt can fail after its write landed (a timeout reported once
/// the batch was already applied); its retry then meets `SequenceRegression` with the store
/// already at this commit's last sequence. Each query has one writer, this pipeline, so that
/// sequence can only be this very commit: it counts as done instead of stopping the query.
pub(crate) async fn commit_retrying(
    store: &dyn ResultStore,
    policy: RetryPolicy,
    query_id: &str,
    commit: Commit<'_>,
) -> Result<CommitReceipt, StoreError> {
    let mut attempts = 0u32;
    let result = store_retry(policy, "commit", || {
        attempts += 1;
        store.commit(query_id, commit)
    })
    .await;
    match result {
        Err(StoreError::SequenceRegression {
            committed: Some(committed),
            ..
        }) if attempts > 1 && commit.sequence.is_some_and(|s| s.last == committed) => {
            tracing::warn!(
                query_id,
                sequence = committed,
                "a failed commit attempt had landed; counting it as committed"
            );
            let info = store_retry(policy, "query_info", || store.query_info(query_id)).await?;
            Ok(CommitReceipt {
                sequence: info.sequence,
                row_count: info.row_count,
                inserted: 0,
                deleted: 0,
            })
        }
        other => other,
    }
}
