//! One query's ordered pipeline: sequence rules, recovery policies, control signals and group
//! commit, then delivery of the durable commit to reactions.
//!
//! When several hosts share the store, a pipeline runs only while this host holds its
//! query's lease; what that adds (fenced commits, stopping on loss, recovery on takeover)
//! lives in the `lease` submodule.

mod lease;
mod load;
mod remove;

use std::sync::Arc;
use std::time::Duration;

use liveresults_core::formats::{ControlSignal, Event};
use liveresults_core::{Commit, QueryInfo, ResultStore, StoreError};
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::Instrument;

use crate::config::{QueryConfig, RecoveryPolicy, RetryPolicy};
use crate::envelope::{Ack, Applied, Envelope, RemoveAck};
use crate::error::{StopReason, SubmitError};
use crate::group::Group;
use crate::metrics::RuntimeMetrics;
use crate::ownership::{Lease, Ownership};
use crate::reaction::{CommittedChange, Delivery};
use crate::retry::{commit_retrying, store_retry};
use crate::status::{QueryState, Registry};
use crate::worker::Work;

/// What every pipeline needs from the runtime, and nothing more: the store, the knobs of
/// committing, and where to publish what happened. The runtime builds it once and shares it;
/// the pipeline never sees the runtime's own bookkeeping (its queues, tasks, reactions list).
pub(crate) struct PipelineContext {
    pub(crate) store: Arc<dyn ResultStore>,
    pub(crate) retry: RetryPolicy,
    /// Most events folded into one commit.
    pub(crate) group_commit_events: usize,
    /// How long a group waits for more events once one has arrived.
    pub(crate) group_commit_delay: Duration,
    /// Per-query status and committed positions.
    pub(crate) registry: Registry,
    pub(crate) metrics: RuntimeMetrics,
    /// Queries AutoReset cleared, for upstream to re-bootstrap.
    pub(crate) bootstrap_requests: broadcast::Sender<String>,
    /// The leases of this host when several hosts share the store (`None`: this runtime is
    /// the store's only writer).
    pub(crate) ownership: Option<Arc<Ownership>>,
    /// Rows per chunk when reactions rebuild from a snapshot on taking a query over.
    pub(crate) snapshot_chunk_rows: usize,
}

enum Order {
    Skip,
    Next,
    Gap,
}

pub(crate) struct Pipeline {
    query_id: String,
    config: QueryConfig,
    context: Arc<PipelineContext>,
    reactions: Vec<mpsc::Sender<Work>>,
    committed: Option<u64>,
    epoch: u64,
    stopped: Option<StopReason>,
    group: Group,
    acks: Vec<(Ack, Applied)>,
    /// Inside an atomic batch: the group must not be committed part way.
    in_batch: bool,
    /// The query's lease when several hosts share the store: its token fences every commit.
    lease: Option<Lease>,
    /// The lease is gone: nothing more is written, and the pipeline retires.
    lease_lost: bool,
    /// The query was removed (see the `remove` submodule): the answer to the removal, sent
    /// once the queue is closed, and what the query was.
    removal: Option<(RemoveAck, QueryInfo)>,
}

impl Pipeline {
    pub(crate) fn new(
        query_id: String,
        config: QueryConfig,
        context: Arc<PipelineContext>,
        reactions: Vec<mpsc::Sender<Work>>,
        lease: Option<Lease>,
    ) -> Self {
        let want_events = !reactions.is_empty();
        Pipeline {
            query_id,
            config,
            context,
            reactions,
            committed: None,
            epoch: 0,
            stopped: None,
            group: Group::new(want_events),
            acks: Vec::new(),
            in_batch: false,
            lease,
            lease_lost: false,
            removal: None,
        }
    }

    /// Whether the query was removed: the pipeline then only refuses, and retires.
    fn removed(&self) -> bool {
        self.stopped == Some(StopReason::Removed)
    }

    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<Envelope>) {
        let span = tracing::info_span!("pipeline", query_id = %self.query_id);
        async move {
            match self.load().await {
                Ok(info) => self.recover_reactions(&info).await,
                Err(e) => self.stop(StopReason::Store(e.to_string())),
            }
            let max = self.context.group_commit_events;
            let delay = self.context.group_commit_delay;
            let mut pending = Vec::with_capacity(max);
            while !self.lease_lost && !self.removed() {
                let Some(first) = self.next(&mut rx).await else {
                    break;
                };
                pending.push(first);
                // One deadline for the whole group: waiting `delay` per event would let a
                // steady trickle hold a group open for up to `max` times the delay.
                let deadline = tokio::time::Instant::now() + delay;
                while pending.len() < max {
                    match rx.try_recv() {
                        Ok(env) => pending.push(env),
                        Err(_) if delay.is_zero() => break,
                        Err(_) => match tokio::time::timeout_at(deadline, rx.recv()).await {
                            Ok(Some(env)) => pending.push(env),
                            _ => break,
                        },
                    }
                }
                for env in pending.drain(..) {
                    self.handle(env).await;
                }
                self.flush().await;
            }
            if self.removed() {
                self.finish_removal(&mut rx).await;
            } else if self.lease_lost {
                self.retire(&mut rx).await;
            }
            tracing::debug!("pipeline drained");
        }
        .instrument(span)
        .await;
    }

    fn store_error(&self, source: StoreError) -> SubmitError {
        SubmitError::Store {
            query_id: self.query_id.clone(),
            committed: self.committed,
            source,
        }
    }

    fn stopped_error(&self, reason: &StopReason) -> SubmitError {
        SubmitError::QueryStopped {
            query_id: self.query_id.clone(),
            reason: reason.clone(),
            committed: self.committed,
        }
    }

    fn stop(&mut self, reason: StopReason) {
        if reason == StopReason::LeaseLost {
            // Expected in a failover, not a fault of this host.
            tracing::warn!(committed = ?self.committed, "query stopped: lease lost");
        } else {
            tracing::error!(reason = %reason, committed = ?self.committed, "query stopped");
        }
        self.context.registry.update(&self.query_id, |s| {
            s.state = QueryState::Stopped(reason.clone());
        });
        self.stopped = Some(reason);
    }

    async fn handle(&mut self, env: Envelope) {
        if self.lease_lost || self.removed() {
            self.refuse(env);
            return;
        }
        match env {
            Envelope::Event(event, ack) => {
                let outcome = self.accept(*event).await;
                match (outcome, ack) {
                    (Ok(Some(applied)), Some(ack)) => {
                        let _ = ack.send(Ok(applied));
                    }
                    (Ok(None), Some(ack)) => {
                        self.acks.push((ack, Applied::Skipped { committed: None }));
                    }
                    (Err(e), Some(ack)) => {
                        let _ = ack.send(Err(e));
                    }
                    (_, None) => {}
                }
                // Only now, with the event's ack registered, may a full group be flushed: an
                // ack registered after its commit would be answered by a later one (or not
                // at all, with a wrong outcome).
                if self.group.events() >= self.context.group_commit_events {
                    self.flush().await;
                }
            }
            Envelope::Batch(events, ack) => {
                // A batch is its own commit: flush what came before, and nothing after joins it.
                self.flush().await;
                let mut result = Ok(Applied::Skipped {
                    committed: self.committed,
                });
                self.in_batch = true;
                for event in events {
                    match self.accept(event).await {
                        Ok(Some(applied)) => result = Ok(applied),
                        Ok(None) => {}
                        Err(e) => {
                            // Nothing of a rejected batch is committed.
                            self.group.take();
                            result = Err(e);
                            break;
                        }
                    }
                }
                self.in_batch = false;
                if result.is_ok() && !self.group.is_empty() {
                    self.acks.push((ack, Applied::Skipped { committed: None }));
                    self.flush().await;
                } else {
                    let _ = ack.send(result);
                }
            }
            Envelope::Clear(ack) => {
                self.flush().await;
                let result = self.reset("operator clear").await;
                if result.is_ok() {
                    self.stopped = None;
                    self.context
                        .registry
                        .update(&self.query_id, |s| s.state = QueryState::Running);
                }
                let _ = ack.send(result.map_err(|source| self.failure(source)));
            }
            Envelope::Resume(ack) => {
                let result = self.resume().await;
                let _ = ack.send(result);
            }
            Envelope::Remove(ack) => self.remove(ack).await,
        }
    }

    fn order(&self, sequence: u64) -> Order {
        match self.group.last().or(self.committed) {
            None => Order::Next,
            Some(c) if sequence <= c => Order::Skip,
            Some(c) if sequence == c + 1 => Order::Next,
            Some(_) => Order::Gap,
        }
    }

    /// Applies the sequence rules and policies to one event. `Ok(None)` means it joined the
    /// group and is answered at the next flush; `Ok(Some(..))` is an immediate answer.
    async fn accept(&mut self, event: Event) -> Result<Option<Applied>, SubmitError> {
        if let Some(reason) = &self.stopped {
            return Err(self.stopped_error(reason));
        }
        let sequence = event.sequence();
        match self.order(sequence) {
            Order::Skip => {
                self.context
                    .registry
                    .update(&self.query_id, |s| s.skipped += 1);
                return Ok(Some(Applied::Skipped {
                    committed: self.group.last().or(self.committed),
                }));
            }
            Order::Next => {}
            Order::Gap => {
                let committed = self.group.last().or(self.committed);
                self.context
                    .registry
                    .update(&self.query_id, |s| s.gaps += 1);
                // A signal that clears the query makes the missing events moot: `deleted`
                // (under every policy: the query is gone whatever was missed) and
                // `bootstrapStarted` under AutoReset. Applying the policy as well would stop
                // a deleted query as gapped instead of deprovisioning it, or clear twice and
                // ask upstream for a bootstrap it has already begun.
                let clears_anyway = match &event {
                    Event::Control { signal, .. } => {
                        *signal == ControlSignal::Deleted
                            || (*signal == ControlSignal::BootstrapStarted
                                && self.config.policy == RecoveryPolicy::AutoReset)
                    }
                    Event::Change(_) => false,
                };
                match self.config.policy {
                    _ if clears_anyway => {
                        tracing::warn!(
                            ?committed,
                            received = sequence,
                            "sequence gap before a clearing signal"
                        );
                    }
                    RecoveryPolicy::AutoSkipGap => {
                        tracing::warn!(?committed, received = sequence, "sequence gap skipped");
                    }
                    RecoveryPolicy::Strict => {
                        if self.in_batch {
                            self.group.take(); // the whole batch is rejected
                        } else {
                            self.flush().await;
                        }
                        let reason = StopReason::Gap {
                            committed,
                            received: sequence,
                        };
                        self.stop(reason.clone());
                        return Err(self.stopped_error(&reason));
                    }
                    RecoveryPolicy::AutoReset => {
                        self.flush_or_refuse().await?;
                        tracing::warn!(
                            ?committed,
                            received = sequence,
                            "sequence gap: resetting query"
                        );
                        self.reset_or_stop("sequence gap").await?;
                        self.context
                            .registry
                            .update(&self.query_id, |s| s.awaiting_bootstrap = true);
                        let _ = self.context.bootstrap_requests.send(self.query_id.clone());
                    }
                }
            }
        }
        match event {
            Event::Change(batch) => {
                self.group.add_rows(batch, &self.config.key_columns);
            }
            Event::Control {
                signal,
                timestamp_ms,
                ..
            } => match signal {
                ControlSignal::BootstrapStarted
                    if self.config.policy == RecoveryPolicy::AutoReset =>
                {
                    self.flush_or_refuse().await?;
                    self.reset_or_stop("bootstrap started").await?;
                    self.group.add_control(sequence, signal, timestamp_ms);
                }
                ControlSignal::Deleted => {
                    self.flush_or_refuse().await?;
                    self.reset_or_stop("query deleted").await?;
                    // The deletion is the first commit of the new epoch: the pipeline reads it
                    // back at load, so the query stays deprovisioned across restarts, and
                    // change-feed readers see it.
                    self.group.add_control(sequence, signal, timestamp_ms);
                    self.flush_or_refuse().await?;
                    self.stop(StopReason::Deleted);
                    return Ok(Some(Applied::Deprovisioned));
                }
                _ => self.group.add_control(sequence, signal, timestamp_ms),
            },
        }
        Ok(None)
    }

    /// Commits the group before a clear; if that commit failed the query is stopped and the
    /// event that asked for the clear is refused rather than applied to a stopped query.
    async fn flush_or_refuse(&mut self) -> Result<(), SubmitError> {
        self.flush().await;
        match &self.stopped {
            Some(reason) => Err(self.stopped_error(reason)),
            None => Ok(()),
        }
    }

    async fn reset_or_stop(&mut self, why: &str) -> Result<(), SubmitError> {
        match self.reset(why).await {
            Ok(_) => Ok(()),
            Err(e @ StoreError::Fenced { .. }) => Err(self.failure(e)),
            Err(e) => {
                let reason = StopReason::Store(e.to_string());
                self.stop(reason.clone());
                Err(self.stopped_error(&reason))
            }
        }
    }

    /// Clears the query in the store and tells every reaction to drop its state for it.
    async fn reset(&mut self, why: &str) -> Result<QueryInfo, StoreError> {
        let span = tracing::info_span!("reset", query_id = %self.query_id, why);
        // Let every reaction finish what it was given (and checkpoint it) before the clear
        // deletes the checkpoints; see `Work::Barrier`.
        for tx in &self.reactions {
            let (done, wait) = oneshot::channel();
            if tx.send(Work::Barrier(done)).await.is_ok() {
                let _ = wait.await;
            }
        }
        // Fenced like a commit, inside the store's clear: a lease lost meanwhile (however
        // long this host was paused) makes it change nothing and fail as `Fenced`.
        let (store, retry) = (&self.context.store, self.context.retry);
        let fence = self.fence();
        let info = store_retry(retry, "clear", || {
            store.clear_query_fenced(&self.query_id, fence)
        })
        .instrument(span)
        .await?;
        self.committed = None;
        self.epoch = info.epoch;
        self.context.registry.update(&self.query_id, |s| {
            s.sequence = None;
            s.row_count = 0;
            s.epoch = info.epoch;
        });
        let reset = Delivery::Reset {
            query_id: self.query_id.clone(),
            epoch: info.epoch,
        };
        for tx in &self.reactions {
            let _ = tx.send(Work::Deliver(reset.clone())).await;
        }
        Ok(info)
    }

    /// Commits the group as one atomic commit, then answers its events and delivers it.
    async fn flush(&mut self) {
        let Some(mut group) = self.group.take() else {
            self.answer_acks(Ok(()));
            return;
        };
        let span = tracing::debug_span!("group_commit", query_id = %self.query_id, first = group.span.first, last = group.span.last);
        let (store, retry) = (&self.context.store, self.context.retry);
        let mutations = group.mutations();
        let commit = Commit::sequenced(&mutations, group.span, &group.payload);
        let commit = match self.fence() {
            Some(token) => commit.with_fence(token),
            None => commit,
        };
        let result = commit_retrying(&**store, retry, &self.query_id, commit)
            .instrument(span)
            .await;
        let row_ops = mutations.len() as u64;
        drop(mutations);
        self.group.recycle(&mut group);
        let receipt = match result {
            Ok(receipt) => receipt,
            Err(e @ StoreError::Fenced { .. }) => {
                // Another host holds the lease now: nothing of this group was written.
                let error = self.failure(e);
                self.answer_acks(Err(error));
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "commit failed");
                let committed = self.committed;
                self.stop(StopReason::Store(e.to_string()));
                self.answer_acks(Err(SubmitError::Store {
                    query_id: self.query_id.clone(),
                    committed,
                    source: e,
                }));
                return;
            }
        };
        let first_of_query = self.committed.is_none() && self.epoch == 0;
        self.committed = Some(group.span.last);
        if first_of_query {
            self.learn_epoch().await;
        }
        let upstream = group.signals.last().copied();
        let source_time_ms = group.source_time_ms;
        let committed_at_ms = wall_clock_ms();
        self.context.registry.update(&self.query_id, |s| {
            s.sequence = receipt.sequence;
            s.row_count = receipt.row_count;
            s.commits += 1;
            s.source_time_ms = s.source_time_ms.max(source_time_ms);
            s.last_commit_ms = Some(committed_at_ms);
            if let Some(signal) = upstream {
                s.upstream = Some(signal);
                if signal == ControlSignal::BootstrapStarted {
                    s.awaiting_bootstrap = false;
                }
            }
        });
        self.context.metrics.record_commit(group.items, row_ops);
        let applied = Applied::Committed {
            sequence: group.span.last,
        };
        for (_, a) in &mut self.acks {
            *a = applied;
        }
        self.answer_acks(Ok(()));
        if !self.reactions.is_empty() {
            let change = Arc::new(CommittedChange {
                query_id: self.query_id.clone(),
                epoch: self.epoch,
                span: group.span,
                events: group.events,
            });
            for tx in &self.reactions {
                // Awaiting here is the backpressure: a slow reaction slows this query.
                let _ = tx
                    .send(Work::Deliver(Delivery::Change(Arc::clone(&change))))
                    .await;
            }
        }
    }

    fn answer_acks(&mut self, result: Result<(), SubmitError>) {
        match result {
            Ok(()) => {
                for (ack, applied) in self.acks.drain(..) {
                    let _ = ack.send(Ok(applied));
                }
            }
            Err(first) => {
                let mut first = Some(first);
                let reason = self
                    .stopped
                    .clone()
                    .unwrap_or(StopReason::Store(String::new()));
                for (ack, _) in self.acks.drain(..) {
                    let err = first.take().unwrap_or_else(|| SubmitError::QueryStopped {
                        query_id: self.query_id.clone(),
                        reason: reason.clone(),
                        committed: self.committed,
                    });
                    let _ = ack.send(Err(err));
                }
            }
        }
    }
}

/// Now, in ms since the Unix epoch (0 for a clock set before 1970).
fn wall_clock_ms() -> u64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}
