//! What a pipeline does when several hosts share the store: it starts only once this host
//! holds the query's lease (the runtime's handle takes it), brings the reactions up to date
//! on what other hosts committed, fences every write (commits, clears, removals) with the
//! lease's token, and stops cleanly as soon as the lease is gone — every queued and later
//! submit answered, none left waiting — so that the runtime forgets the query and a later
//! submit asks for the lease again.

use liveresults_core::{QueryInfo, StoreError};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use super::Pipeline;
use crate::envelope::Envelope;
use crate::error::{StopReason, SubmitError};
use crate::worker::{Recover, Work};

impl Pipeline {
    /// The next queued envelope, or `None` when the queue closed or the lease was lost (then
    /// the pipeline is stopped and `lease_lost` set).
    pub(super) async fn next(&mut self, rx: &mut mpsc::Receiver<Envelope>) -> Option<Envelope> {
        match &mut self.lease {
            None => return rx.recv().await,
            Some(lease) => tokio::select! {
                biased;
                () = lease.lost() => {}
                env = rx.recv() => return env,
            },
        }
        self.on_lease_lost("the lease was not renewed");
        None
    }

    /// Brings every reaction up to date on the query just taken over, before any event is
    /// accepted: the previous owner (or this host before it lost the lease) may have
    /// committed what the reactions here never saw. It is the recovery a restart runs —
    /// checkpoint and outbox, or a snapshot, per the query's policy — against the store as
    /// it is now.
    pub(super) async fn recover_reactions(&mut self, info: &QueryInfo) {
        if self.lease.is_none() || self.reactions.is_empty() {
            return;
        }
        let span = tracing::info_span!("takeover_recovery", query_id = %self.query_id, epoch = info.epoch, sequence = ?info.sequence);
        async {
            let mut waits = Vec::with_capacity(self.reactions.len());
            for tx in &self.reactions {
                let (done, wait) = oneshot::channel();
                let recover = Recover {
                    info: info.clone(),
                    policy: self.config.policy,
                    chunk_rows: self.context.snapshot_chunk_rows,
                    done,
                };
                if tx.send(Work::Recover(Box::new(recover))).await.is_ok() {
                    waits.push(wait);
                }
            }
            for wait in waits {
                let _ = wait.await;
            }
            tracing::info!("reactions recovered");
        }
        .instrument(span)
        .await;
    }

    /// Stops the query for good on this host: the lease is gone (`why`).
    pub(super) fn on_lease_lost(&mut self, why: &str) {
        if self.lease_lost {
            return;
        }
        let token = self.lease.as_ref().map(|l| l.token);
        let span = tracing::warn_span!("lease_lost", query_id = %self.query_id, ?token, why);
        let _entered = span.enter();
        self.lease_lost = true;
        if let (Some(ownership), Some(token)) = (&self.context.ownership, token) {
            ownership.lose(&self.query_id, token, why);
        }
        self.stop(StopReason::LeaseLost);
    }

    /// The answer to a failed store operation: a fenced write means the lease is gone (the
    /// query stops with `LeaseLost`); anything else is the store's error.
    pub(super) fn failure(&mut self, source: StoreError) -> SubmitError {
        if let StoreError::Fenced { .. } = source {
            self.on_lease_lost("the store fenced a write");
            return self.stopped_error(&StopReason::LeaseLost);
        }
        self.store_error(source)
    }

    /// The fencing token every write of this pipeline carries (commits, clears, removals):
    /// the lease's, or none when this runtime is the store's only writer.
    pub(super) fn fence(&self) -> Option<u64> {
        self.lease.as_ref().map(|lease| lease.token)
    }

    /// Answers an envelope the pipeline will not handle, with the reason it stopped.
    pub(super) fn refuse(&self, env: Envelope) {
        let reason = self.stopped.clone().unwrap_or(StopReason::LeaseLost);
        let error = || self.stopped_error(&reason);
        match env {
            Envelope::Event(_, Some(ack)) => {
                let _ = ack.send(Err(error()));
            }
            Envelope::Event(_, None) => {}
            Envelope::Batch(_, ack) => {
                let _ = ack.send(Err(error()));
            }
            Envelope::Clear(ack) | Envelope::Resume(ack) | Envelope::Remove(ack) => {
                let _ = ack.send(Err(error()));
            }
        }
    }

    /// After the lease is lost: refuses whatever is still queued, and closes the queue so the
    /// runtime's handle sees the pipeline is gone and asks for the lease again on the next
    /// submit.
    pub(super) async fn retire(&mut self, rx: &mut mpsc::Receiver<Envelope>) {
        rx.close();
        self.answer_acks(Err(self.stopped_error(&StopReason::LeaseLost)));
        while let Some(env) = rx.recv().await {
            self.refuse(env);
        }
    }
}
