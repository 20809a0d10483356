//! [`LiveResultsReaction`]: a drasi-lib reaction that keeps each of its queries' results in a
//! liveresults store, through the liveresults runtime.
//!
//! # Sequences
//!
//! Drasi numbers each query's results from 1, per process: an in-memory drasi-lib that restarts
//! counts from 1 again while our store, if durable, still holds sequence N. Taking Drasi's numbers
//! as ours would make every result of the new process look like a redelivery of an old one and
//! be skipped (the loss Drasi itself had upstream). So the reaction *attaches* to each query:
//! it reconciles our rows with Drasi's snapshot (see [`crate::reconcile`]) and remembers the pair
//! (Drasi's `as_of_sequence`, our committed sequence) it attached at. A later Drasi sequence `s`
//! becomes ours as `ours_at_attach + (s - drasi_at_attach)`, so our sequences only ever grow and
//! the runtime's rule "at or below committed is a redelivery" stays true. Until the first
//! restart the two numberings are the same.
//!
//! The reaction attaches on every `start` (every start may follow an upstream restart: a new
//! drasi-lib, a new process), in drasi-lib's `bootstrap` hook, and whenever Drasi's sequence
//! jumps past the next one. Results at or below the attach point or the last one taken are
//! redeliveries (drasi-lib replays its outbox after a reaction restart) and are skipped.
//!
//! # Other writers
//!
//! The runtime may have other writers on the same query (the HTTP API's clear and ingest, when
//! it is served on the same runtime). A clear empties the query under us and a foreign commit
//! takes sequences our mapping would use next, after which the runtime answers our results as
//! redeliveries. So an attachment also remembers the query's epoch, and the reaction attaches
//! again when the epoch changed, when the committed sequence is past the last one we handed
//! over, and when a result we handed over was not committed (skipped, refused, or its commit
//! failed after it was queued). Those answers, and failed attaches, are also acted on in the
//! background (see [`crate::repair`]), so a query that receives no further result still
//! converges on Drasi's state.
//!
//! # Backpressure
//!
//! `enqueue_query_result` returns once the result is *queued* in the query's bounded runtime
//! queue, waiting for room when it is full (the runtime's default `Backpressure::Block`). drasi-lib
//! awaits it per query, so a slow store slows Drasi's delivery to this reaction instead of
//! growing a buffer. The commit itself happens asynchronously, in group commits.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use drasi_lib::channels::{ComponentStatus, QueryResult};
use drasi_lib::context::ReactionRuntimeContext;
use drasi_lib::queries::output_state::SnapshotStream;
use drasi_lib::reactions::BootstrapContext;
use drasi_lib::{Reaction, ReactionBase, ReactionBaseParams, ReactionRecoveryPolicy};
use liveresults_core::formats::Event;
use liveresults_runtime::{Pending, Position, QueryState, RuntimeHandle, SubmitError};
use serde_json::json;
use tokio::sync::{mpsc, watch, Mutex};
use tokio::task::JoinHandle;

use crate::attachment::Attachment;
use crate::convert::to_batch;
use crate::error::DrasiReactionError;
use crate::rebuild::{commit_rebuild, diff_with};
use crate::repair::{self, Heal, Signals, OUTCOME_QUEUE};

/// One query's state in the reaction, under its lock.
#[derive(Debug)]
struct LinkState {
    attached: Option<Attachment>,
    /// The query's committed position in the runtime: a cheap read per result.
    position: watch::Receiver<Position>,
    /// Results handed to the runtime so far (compared with the answers counted in `Signals`).
    submitted: u64,
    /// The drain task's queue, between `start` and `stop`.
    outcomes: Option<mpsc::Sender<Pending>>,
    /// The repair task's requests, between `start` and `stop`.
    repairs: Option<mpsc::Sender<()>>,
}

#[derive(Debug)]
struct Link {
    query_id: String,
    state: Mutex<LinkState>,
    signals: Arc<Signals>,
}

/// How a reconciliation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Our rows already equalled Drasi's snapshot: nothing was written.
    Continue,
    /// The snapshot's diff was committed as one commit.
    Rebuild,
}

/// Counters of what the reaction did, for tests and diagnostics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReactionStats {
    /// Results queued into the runtime.
    pub results: u64,
    /// Results skipped as redeliveries (at or below what was already taken).
    pub redeliveries: u64,
    /// Reconciliations that found our rows equal to Drasi's.
    pub continues: u64,
    /// Reconciliations that committed a diff.
    pub rebuilds: u64,
}

#[derive(Debug, Default)]
struct Counters {
    results: AtomicU64,
    redeliveries: AtomicU64,
    continues: AtomicU64,
    rebuilds: AtomicU64,
}

/// A drasi-lib reaction that stores its queries' results in liveresults.
///
/// Build it with the handle of a started [`liveresults_runtime::Runtime`] and add it to
/// drasi-lib like any reaction; the runtime's store then holds every query's current rows,
/// outbox and change feed (serve them with `liveresults-server`).
///
/// Cloning is cheap and shares everything: keep a clone to read [`LiveResultsReaction::stats`]
/// or to add the same reaction to the next drasi-lib after a restart.
#[derive(Clone)]
pub struct LiveResultsReaction {
    inner: Arc<Inner>,
}

/// Everything a clone shares; the repair tasks hold it weakly.
struct Inner {
    base: ReactionBase,
    handle: RuntimeHandle,
    links: HashMap<String, Link>,
    counters: Counters,
    /// The per-query background tasks (see [`crate::repair`]), between `start` and `stop`.
    workers: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for LiveResultsReaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveResultsReaction")
            .field("id", &self.inner.base.id)
            .field("queries", &self.inner.base.queries)
            .finish_non_exhaustive()
    }
}

impl LiveResultsReaction {
    /// A reaction `id` subscribed to `queries`, committing through `handle`.
    pub fn new<Q: Into<String>>(
        id: impl Into<String>,
        queries: impl IntoIterator<Item = Q>,
        handle: RuntimeHandle,
    ) -> Self {
        let queries: Vec<String> = queries.into_iter().map(Into::into).collect();
        let links = queries
            .iter()
            .map(|q| {
                let state = LinkState {
                    attached: None,
                    position: handle.watch(q),
                    submitted: 0,
                    outcomes: None,
                    repairs: None,
                };
                let link = Link {
                    query_id: q.clone(),
                    state: Mutex::new(state),
                    signals: Arc::new(Signals::default()),
                };
                (q.clone(), link)
            })
            .collect();
        let params = ReactionBaseParams::new(id, queries)
            .with_recovery_policy(ReactionRecoveryPolicy::AutoReset);
        LiveResultsReaction {
            inner: Arc::new(Inner {
                base: ReactionBase::new(params),
                handle,
                links,
                counters: Counters::default(),
                workers: std::sync::Mutex::new(Vec::new()),
            }),
        }
    }

    /// What the reaction has done so far.
    pub fn stats(&self) -> ReactionStats {
        let c = &self.inner.counters;
        ReactionStats {
            results: c.results.load(Ordering::Relaxed),
            redeliveries: c.redeliveries.load(Ordering::Relaxed),
            continues: c.continues.load(Ordering::Relaxed),
            rebuilds: c.rebuilds.load(Ordering::Relaxed),
        }
    }

    /// Waits until every result handed to the runtime so far is answered: committed, or not
    /// (which marks its query for a re-attach; see [`crate::repair`]).
    pub async fn settle(&self) {
        for link in self.inner.links.values() {
            let submitted = link.state.lock().await.submitted;
            link.signals.wait_answered(submitted).await;
        }
    }

    /// Starts each query's drain and repair tasks, unless they are running.
    async fn start_workers(&self) {
        if !lock(&self.inner.workers).is_empty() {
            return;
        }
        let mut workers = Vec::with_capacity(self.inner.links.len() * 2);
        for (query_id, link) in &self.inner.links {
            let (outcomes, outcomes_rx) = mpsc::channel(OUTCOME_QUEUE);
            let (repairs, repairs_rx) = mpsc::channel(1);
            let mut state = link.state.lock().await;
            workers.push(tokio::spawn(repair::drain(
                query_id.clone(),
                outcomes_rx,
                Arc::clone(&link.signals),
                repairs.clone(),
            )));
            workers.push(tokio::spawn(repair::repair(
                Arc::downgrade(&self.inner),
                query_id.clone(),
                repairs_rx,
                state.position.clone(),
            )));
            state.outcomes = Some(outcomes);
            state.repairs = Some(repairs);
        }
        lock(&self.inner.workers).extend(workers);
    }

    /// Stops the background tasks (after [`LiveResultsReaction::settle`]).
    async fn stop_workers(&self) {
        let workers: Vec<_> = lock(&self.inner.workers).drain(..).collect();
        for worker in &workers {
            worker.abort();
        }
        for worker in workers {
            let _ = worker.await;
        }
        for link in self.inner.links.values() {
            let mut state = link.state.lock().await;
            state.outcomes = None;
            state.repairs = None;
            link.signals.forget_unanswered(state.submitted);
        }
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Guards a plain list of task handles: a panic elsewhere cannot leave it half updated.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Inner {
    /// Takes one result of one of our queries.
    async fn take(&self, result: QueryResult) -> Result<(), DrasiReactionError> {
        let Some(link) = self.links.get(&result.query_id) else {
            tracing::warn!(query_id = %result.query_id, "result of a query this reaction does not subscribe to");
            return Ok(());
        };
        let mut state = link.state.lock().await;
        let query_id = result.query_id.as_str();
        let sequence = result.sequence;
        let attachment = match state.attached {
            Some(a) if sequence <= a.last => {
                self.counters.redeliveries.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            // The next one, unless what we hold can no longer be trusted to be Drasi's state
            // minus this result: an earlier result was not committed (dirty), the query was
            // cleared, or another writer committed past us.
            Some(a)
                if Some(sequence) == a.last.checked_add(1)
                    && !link.signals.is_dirty()
                    && a.holds(*state.position.borrow()) =>
            {
                a
            }
            // Not attached since the last start, or Drasi skipped sequences, or the above:
            // re-attach.
            _ => {
                let (a, _) = self.attach(&mut state, link, query_id, None).await?;
                if sequence <= a.last {
                    self.counters.redeliveries.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                if Some(sequence) != a.last.checked_add(1) {
                    self.failed(&mut state, link);
                    return Err(DrasiReactionError::AheadOfSnapshot {
                        query_id: query_id.to_owned(),
                        drasi_sequence: sequence,
                        as_of_sequence: a.drasi_base,
                    });
                }
                a
            }
        };
        let ours =
            attachment
                .ours(sequence)
                .ok_or_else(|| DrasiReactionError::SequenceOverflow {
                    query_id: query_id.to_owned(),
                    drasi_sequence: sequence,
                })?;
        let mut batch = to_batch(result);
        batch.sequence = ours;
        match self.handle.submit_tracked(Event::Change(batch)).await {
            Ok(pending) => {
                state.attached = Some(Attachment {
                    last: sequence,
                    ..attachment
                });
                self.counters.results.fetch_add(1, Ordering::Relaxed);
                Self::track(&mut state, link, pending).await;
                Ok(())
            }
            Err(e) => {
                // The result is lost to us: re-attach from a snapshot, now and at the next one.
                self.failed(&mut state, link);
                Err(e.into())
            }
        }
    }

    /// Hands the answer to a queued result to the drain task (waiting for room: backpressure),
    /// or, when it is not running, waits for the answer here.
    async fn track(state: &mut LinkState, link: &Link, pending: Pending) {
        state.submitted = state.submitted.saturating_add(1);
        let pending = match &state.outcomes {
            Some(outcomes) => match outcomes.send(pending).await {
                Ok(()) => return,
                Err(mpsc::error::SendError(pending)) => pending,
            },
            None => pending,
        };
        link.signals
            .answer(&link.query_id, pending.wait().await, state.repairs.as_ref());
    }

    /// Forgets the attachment after a failure and asks for a repair in the background: the
    /// query must not stay stale until Drasi happens to send its next result.
    fn failed(&self, state: &mut LinkState, link: &Link) {
        state.attached = None;
        link.signals.mark_dirty(state.repairs.as_ref());
    }

    fn stopped(&self, query_id: &str) -> bool {
        // Once per attach, not per result: the status is a copy of the query's whole record.
        matches!(
            self.handle.status(query_id).map(|s| s.state),
            Some(QueryState::Stopped(_))
        )
    }

    async fn fetch_snapshot(&self, query_id: &str) -> Result<SnapshotStream, DrasiReactionError> {
        let fetcher = self
            .base
            .context()
            .await
            .and_then(|c| c.snapshot_fetcher)
            .ok_or_else(|| DrasiReactionError::NotInitialized {
                reaction_id: self.base.id.clone(),
            })?;
        fetcher
            .fetch_snapshot(query_id)
            .await
            .map_err(|source| DrasiReactionError::Fetch {
                query_id: query_id.to_owned(),
                source,
            })
    }

    /// Attaches to `snapshot` (fetched when `None`); on failure the query is marked for a
    /// repair.
    async fn attach(
        &self,
        state: &mut LinkState,
        link: &Link,
        query_id: &str,
        snapshot: Option<SnapshotStream>,
    ) -> Result<(Attachment, Decision), DrasiReactionError> {
        let snapshot = match snapshot {
            Some(snapshot) => Ok(snapshot),
            None => self.fetch_snapshot(query_id).await,
        };
        let result = match snapshot {
            Ok(snapshot) => self.reconcile(state, link, query_id, snapshot).await,
            Err(e) => Err(e),
        };
        if result.is_err() {
            self.failed(state, link);
        }
        result
    }

    /// Attaches `state` to Drasi's `snapshot`: continue when our rows equal it, otherwise commit
    /// the diff as one commit (see [`crate::reconcile`]).
    async fn reconcile(
        &self,
        state: &mut LinkState,
        link: &Link,
        query_id: &str,
        snapshot: SnapshotStream,
    ) -> Result<(Attachment, Decision), DrasiReactionError> {
        // Our rows must include everything already queued before they are compared, and every
        // answer about the old attachment must be in before its mark is cleared.
        link.signals.wait_answered(state.submitted).await;
        link.signals.clear_dirty();
        state.attached = None;
        let mut snapshot = snapshot;
        let mut cleared = false;
        let (as_of, config_hash, before, reconciled, outcome) = loop {
            // A query the runtime stopped (after an earlier failure) accepts nothing until it is
            // cleared; Drasi still has it, so clear it (once) and rebuild it whole.
            if !cleared && self.stopped(query_id) {
                tracing::warn!(
                    query_id,
                    "query is stopped; clearing it to rebuild from Drasi"
                );
                self.handle.clear_query(query_id).await?;
                cleared = true;
            }
            let as_of = snapshot.as_of_sequence;
            let config_hash = snapshot.config_hash;
            let (before, reconciled) = diff_with(&self.handle, query_id, snapshot).await?;
            if reconciled.diffs.is_empty() {
                self.counters.continues.fetch_add(1, Ordering::Relaxed);
                let after = before.sequence;
                break (
                    as_of,
                    config_hash,
                    before,
                    reconciled,
                    (after, Decision::Continue),
                );
            }
            match commit_rebuild(
                &self.handle,
                query_id,
                before.sequence,
                as_of,
                config_hash,
                &reconciled,
            )
            .await
            {
                Ok(sequence) => {
                    self.counters.rebuilds.fetch_add(1, Ordering::Relaxed);
                    break (
                        as_of,
                        config_hash,
                        before,
                        reconciled,
                        (Some(sequence), Decision::Rebuild),
                    );
                }
                // Stopped between the check above and the commit: same remedy.
                Err(DrasiReactionError::Submit(SubmitError::QueryStopped { reason, .. }))
                    if !cleared =>
                {
                    tracing::warn!(query_id, %reason, "query was stopped; clearing it to rebuild from Drasi");
                    self.handle.clear_query(query_id).await?;
                    cleared = true;
                    snapshot = self.fetch_snapshot(query_id).await?;
                }
                Err(e) => return Err(e),
            }
        };
        let attachment = Attachment {
            drasi_base: as_of,
            ours_base: outcome.0,
            last: as_of,
            epoch: before.epoch,
        };
        tracing::info!(
            query_id,
            decision = ?outcome.1,
            drasi_as_of_sequence = as_of,
            drasi_config_hash = config_hash,
            committed_before = ?before.sequence,
            committed_after = ?outcome.0,
            epoch = before.epoch,
            changed = (reconciled.diffs.len() as u64).saturating_sub(reconciled.deleted),
            deleted = reconciled.deleted,
            unchanged = reconciled.unchanged,
            "attached to Drasi query"
        );
        state.attached = Some(attachment);
        Ok((attachment, outcome.1))
    }
}

#[async_trait]
impl Heal for Inner {
    async fn heal(&self, query_id: &str) -> Result<(), DrasiReactionError> {
        let Some(link) = self.links.get(query_id) else {
            return Ok(());
        };
        let mut state = link.state.lock().await;
        let position = *state.position.borrow();
        let due = link.signals.is_dirty() || state.attached.is_some_and(|a| !a.holds(position));
        if !due {
            return Ok(());
        }
        self.attach(&mut state, link, query_id, None).await?;
        Ok(())
    }
}

#[async_trait]
impl Reaction for LiveResultsReaction {
    fn id(&self) -> &str {
        self.inner.base.get_id()
    }

    fn type_name(&self) -> &str {
        "liveresults"
    }

    fn properties(&self) -> HashMap<String, serde_json::Value> {
        HashMap::from([("queries".to_owned(), json!(self.inner.base.queries))])
    }

    fn query_ids(&self) -> Vec<String> {
        self.inner.base.get_queries().to_vec()
    }

    async fn initialize(&self, context: ReactionRuntimeContext) {
        self.inner.base.initialize(context).await;
    }

    async fn start(&self) -> anyhow::Result<()> {
        // Every start may follow an upstream restart: attach again before taking results.
        for link in self.inner.links.values() {
            link.state.lock().await.attached = None;
        }
        self.start_workers().await;
        self.inner
            .base
            .set_status(
                ComponentStatus::Running,
                Some("liveresults reaction started".into()),
            )
            .await;
        Ok(())
    }

    async fn stop(&self) -> anyhow::Result<()> {
        self.settle().await;
        self.stop_workers().await;
        self.inner
            .base
            .set_status(
                ComponentStatus::Stopped,
                Some("liveresults reaction stopped".into()),
            )
            .await;
        Ok(())
    }

    async fn status(&self) -> ComponentStatus {
        self.inner.base.get_status().await
    }

    async fn enqueue_query_result(&self, result: QueryResult) -> anyhow::Result<()> {
        self.inner.take(result).await.map_err(anyhow::Error::new)
    }

    /// Our store is the reaction's durable state; drasi-lib's state store need not be.
    fn is_durable(&self) -> bool {
        false
    }

    fn needs_snapshot_on_fresh_start(&self) -> bool {
        true
    }

    /// A gap drasi-lib cannot fill from its outbox is repaired by a rebuild from its snapshot.
    fn default_recovery_policy(&self) -> ReactionRecoveryPolicy {
        ReactionRecoveryPolicy::AutoReset
    }

    async fn bootstrap(&self, ctx: BootstrapContext) -> anyhow::Result<()> {
        let inner = &self.inner;
        let Some(link) = inner.links.get(&ctx.query_id) else {
            return Ok(());
        };
        let mut state = link.state.lock().await;
        let snapshot = match ctx.fetch_snapshot().await {
            Ok(snapshot) => snapshot,
            Err(source) => {
                inner.failed(&mut state, link);
                return Err(DrasiReactionError::Fetch {
                    query_id: ctx.query_id.clone(),
                    source,
                }
                .into());
            }
        };
        inner
            .attach(&mut state, link, &ctx.query_id, Some(snapshot))
            .await?;
        Ok(())
    }
}
