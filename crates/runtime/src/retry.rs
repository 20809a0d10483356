//! Retrying transient failures with exponential backoff.

use std::future::Future;

use liveresults_core::StoreError;

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
