//! Reading the query's committed position from the store: when the pipeline starts (after
//! a restart, or on taking the query over from another host) and when a stopped query is
//! resumed.

use liveresults_core::codec::changes::{decode_changes, ChangeItem};
use liveresults_core::formats::ControlSignal;
use liveresults_core::{QueryInfo, StoreError};

use super::Pipeline;
use crate::error::{StopReason, SubmitError};
use crate::retry::store_retry;
use crate::status::QueryState;

impl Pipeline {
    /// Reads the query's committed position and publishes it; a query whose last commit
    /// was a `deleted` signal stays stopped.
    pub(super) async fn load(&mut self) -> Result<QueryInfo, StoreError> {
        let (store, retry) = (&self.context.store, self.context.retry);
        let info = store_retry(retry, "query_info", || store.query_info(&self.query_id)).await?;
        self.committed = info.sequence;
        self.epoch = info.epoch;
        let taken_over = self.lease.is_some();
        self.context.registry.update(&self.query_id, |s| {
            s.sequence = info.sequence;
            s.row_count = info.row_count;
            s.epoch = info.epoch;
            if taken_over {
                // An earlier incarnation here may have stopped on losing the lease.
                s.state = QueryState::Running;
            }
        });
        if self.last_commit_was_deletion(info.sequence).await? {
            self.context.registry.update(&self.query_id, |s| {
                s.upstream = Some(ControlSignal::Deleted);
            });
            self.stop(StopReason::Deleted);
        }
        Ok(info)
    }

    /// Restarts a stopped query from the store's committed position (see
    /// `RuntimeHandle::resume`). If the store cannot be read the query stays stopped, with
    /// the reason it had.
    pub(super) async fn resume(&mut self) -> Result<QueryInfo, SubmitError> {
        self.flush().await;
        let Some(previous) = self.stopped.take() else {
            let (store, retry) = (&self.context.store, self.context.retry);
            return store_retry(retry, "query_info", || store.query_info(&self.query_id))
                .await
                .map_err(|source| self.store_error(source));
        };
        if previous == StopReason::Deleted {
            self.stopped = Some(previous.clone());
            return Err(self.stopped_error(&previous));
        }
        match self.load().await {
            Ok(info) => {
                if self.stopped.is_none() {
                    tracing::info!(committed = ?self.committed, was = %previous, "query resumed");
                    self.context
                        .registry
                        .update(&self.query_id, |s| s.state = QueryState::Running);
                }
                Ok(info)
            }
            Err(source) => {
                self.stopped = Some(previous);
                Err(self.store_error(source))
            }
        }
    }

    /// Whether the query's newest commit is a `deleted` signal (see the `Deleted` arm of
    /// `accept`): then it was deprovisioned before a restart and stays so until cleared.
    async fn last_commit_was_deletion(&self, sequence: Option<u64>) -> Result<bool, StoreError> {
        let Some(sequence) = sequence else {
            return Ok(false);
        };
        let (store, retry) = (&self.context.store, self.context.retry);
        let after = sequence.checked_sub(1);
        let newest = match store_retry(retry, "read_outbox", || {
            store.read_outbox(&self.query_id, after, 1)
        })
        .await
        {
            Ok(entries) => entries,
            // The newest entry is never evicted, but a rows-only history may have none.
            Err(StoreError::OutboxGap { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        let Some(entry) = newest.first().filter(|e| e.span.last == sequence) else {
            return Ok(false);
        };
        let items = decode_changes(&entry.payload)
            .map_err(|e| StoreError::corrupt_outbox_entry(&self.query_id, sequence, e))?;
        Ok(matches!(
            items.last(),
            Some(ChangeItem::Control {
                signal: ControlSignal::Deleted,
                ..
            })
        ))
    }
}
