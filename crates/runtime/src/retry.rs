//! Retrying failures with exponential backoff: the runtime's one backoff loop, used for store
//! operations (transient errors only) and reaction deliveries (any error) alike.

use std::future::Future;

use liveresults_core::{Commit, CommitReceipt, QueryInfo, ResultStore, StoreError};

use crate::config::RetryPolicy;

/// Runs `op` until it succeeds, `retry` declines its error, or `policy.max_attempts` attempts
/// (at least one) are spent, waiting between attempts from `initial_backoff`, doubled each
/// time up to `max_backoff`. `retry(error, attempt)` is asked only while attempts remain, so it
/// is also the place to log the retry; the last error is returned as it is.
pub(crate) async fn with_backoff<T, E, F, Fut>(
    policy: RetryPolicy,
    mut op: F,
    retry: impl Fn(&E, u32) -> bool,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let attempts = policy.max_attempts.max(1);
    let mut backoff = policy.initial_backoff;
    let mut attempt = 1u32;
    loop {
        match op().await {
            Err(e) if attempt < attempts && retry(&e, attempt) => {
                tokio::time::sleep(backoff).await;
                // Saturating: `Duration * 2` panics on overflow, and `max_backoff` is the
                // caller's to choose.
                backoff = backoff.saturating_mul(2).min(policy.max_backoff);
                attempt += 1; // below `attempts`, a u32, so this cannot overflow
            }
            other => return other,
        }
    }
}

/// Runs a store operation until it succeeds, fails permanently, or the attempts run out.
pub(crate) async fn store_retry<T, F, Fut>(
    policy: RetryPolicy,
    what: &str,
    op: F,
) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    with_backoff(policy, op, |e: &StoreError, attempt| {
        let transient = e.is_transient();
        if transient {
            tracing::warn!(operation = what, attempt, error = %e, "transient store error, retrying");
        }
        transient
    })
    .await
}

/// Commits with retries. An attempt can fail after its write landed (a timeout reported once
/// the batch was already applied); its retry then meets `SequenceRegression` with the store
/// already at this commit's last sequence. Each query has one writer, this pipeline, so that
/// sequence can only be this very commit: it counts as done instead of stopping the query.
///
/// The retry may instead be `Fenced` (the lease moved while the first attempt's reply was
/// lost). Reporting that as "nothing committed" would be wrong if the first attempt landed —
/// under the old, valid token — so the committed sequence is read back (reads are not fenced)
/// and the commit counts as done when the store holds it; only otherwise is it `Fenced`.
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
            let info = store_retry(policy, "query_info", || store.query_info(query_id)).await?;
            Ok(landed_receipt(query_id, &info))
        }
        Err(fenced @ StoreError::Fenced { .. }) if attempts > 1 => {
            let Some(last) = commit.sequence.map(|s| s.last) else {
                return Err(fenced);
            };
            match store_retry(policy, "query_info", || store.query_info(query_id)).await {
                Ok(info) if info.sequence == Some(last) => Ok(landed_receipt(query_id, &info)),
                // Not landed, or the store cannot say: the fence is the answer.
                _ => Err(fenced),
            }
        }
        other => other,
    }
}

/// The receipt of a commit found already applied by an earlier, failed-looking attempt, from
/// the query's state read back after it.
fn landed_receipt(query_id: &str, info: &QueryInfo) -> CommitReceipt {
    tracing::warn!(
        query_id,
        sequence = info.sequence,
        "a failed commit attempt had landed; counting it as committed"
    );
    CommitReceipt {
        sequence: info.sequence,
        row_count: info.row_count,
        inserted: 0,
        deleted: 0,
    }
}
