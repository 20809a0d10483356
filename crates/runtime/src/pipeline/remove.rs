//! Removing the pipeline's query entirely (`RuntimeHandle::remove_query`, the server's purge).
//!
//! Ordered with the query's queued events, like a clear: what was accepted before the removal
//! is committed first (its submitters get their answer), reactions finish and checkpoint what
//! they were given, then the store removes the query (`ResultStore::remove_query`). For the
//! reactions it is a clear — they are told to reset, to the epoch a re-created query starts
//! at — after which their progress on the query is forgotten. The query's status (and with it
//! its metrics labels and change-feed position watch, whose readers then see the purge) goes,
//! a held lease is given up, and the pipeline retires: its queue is closed, and everything
//! still queued behind the removal is refused with [`StopReason::Removed`] instead of being
//! left waiting. The next submit for the id starts a new pipeline, which re-creates the query.
//!
//! A removal the store refuses changes nothing (the store's removal is atomic): the caller
//! gets the error and the pipeline goes on as before.

use liveresults_core::{QueryInfo, StoreError};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use super::Pipeline;
use crate::envelope::{Envelope, RemoveAck};
use crate::error::StopReason;
use crate::reaction::Delivery;
use crate::retry::store_retry;
use crate::worker::Work;

impl Pipeline {
    /// Removes the query; on success the pipeline is marked removed and answers `ack` once
    /// its queue is closed ([`Pipeline::finish_removal`]), so a submit that follows the answer
    /// finds the queue closed and starts a new pipeline.
    pub(super) async fn remove(&mut self, ack: RemoveAck) {
        self.flush().await;
        let span = tracing::info_span!("remove", query_id = %self.query_id);
        match self.remove_from_store().instrument(span).await {
            Ok(info) => {
                self.forget_everywhere(&info).await;
                self.removal = Some((ack, info));
            }
            Err(e) => {
                let error = self.failure(e);
                let _ = ack.send(Err(error));
            }
        }
    }

    /// Lets reactions finish, then removes the query from the store. Returns what the query
    /// was just before.
    async fn remove_from_store(&mut self) -> Result<QueryInfo, StoreError> {
        // Every reaction finishes (and checkpoints) what it was given before the store deletes
        // the checkpoints: a checkpoint saved afterwards would outlive the query and be
        // trusted by a re-created one at the next restart. See `Work::Barrier`.
        for tx in &self.reactions {
            let (done, wait) = oneshot::channel();
            if tx.send(Work::Barrier(done)).await.is_ok() {
                let _ = wait.await;
            }
        }
        let (store, retry) = (&self.context.store, self.context.retry);
        let info = store_retry(retry, "query_info", || store.query_info(&self.query_id)).await?;
        // Fenced inside the store's removal, like a commit: if the lease was lost since (even
        // right after the read above) nothing is removed, and the answer is `Fenced`.
        let fence = self.fence();
        store_retry(retry, "remove", || {
            store.remove_query_fenced(&self.query_id, fence)
        })
        .await?;
        tracing::info!(epoch = info.epoch, sequence = ?info.sequence, rows = info.row_count, "query removed");
        Ok(info)
    }

    /// Resets the reactions, then makes the runtime forget the query: reaction progress,
    /// status, position watch, lease.
    async fn forget_everywhere(&mut self, info: &QueryInfo) {
        // The epoch a re-created query starts at: the store's floor when it knew the query,
        // else 0. Never above it, so the new query's changes are not older than the reset.
        let epoch = if *info == QueryInfo::empty(&self.query_id) {
            info.epoch
        } else {
            info.epoch.saturating_add(1)
        };
        let reset = Delivery::Reset {
            query_id: self.query_id.clone(),
            epoch,
        };
        for tx in &self.reactions {
            let _ = tx.send(Work::Deliver(reset.clone())).await;
            let _ = tx.send(Work::Forget(self.query_id.clone())).await;
        }
        // Not `stop`: that would publish a status for the query again.
        self.stopped = Some(StopReason::Removed);
        self.committed = None;
        self.context.registry.remove(&self.query_id);
        if let (Some(ownership), Some(lease)) = (&self.context.ownership, &self.lease) {
            ownership.release(&self.query_id, lease.token).await;
        }
    }

    /// After the first commit of a query this pipeline found unknown (epoch 0, nothing
    /// committed): reads back the epoch the store gave it. A query re-created after a removal
    /// starts at the removed one's epoch floor, which a commit receipt does not report, and
    /// reactions and change-feed watchers must see the epoch the store has. One read per
    /// new query; if it fails the pipeline keeps epoch 0, and says so.
    pub(super) async fn learn_epoch(&mut self) {
        let (store, retry) = (&self.context.store, self.context.retry);
        match store_retry(retry, "query_info", || store.query_info(&self.query_id)).await {
            Ok(info) if info.epoch != self.epoch => {
                self.epoch = info.epoch;
                self.context
                    .registry
                    .update(&self.query_id, |s| s.epoch = info.epoch);
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "reading the epoch of a new query failed");
            }
        }
    }

    /// After a removal: closes the queue, answers the removal, then refuses whatever was
    /// still queued behind it (with [`StopReason::Removed`]).
    pub(super) async fn finish_removal(&mut self, rx: &mut mpsc::Receiver<Envelope>) {
        rx.close();
        if let Some((ack, info)) = self.removal.take() {
            let _ = ack.send(Ok(info));
        }
        while let Some(env) = rx.recv().await {
            self.refuse(env);
        }
    }
}
