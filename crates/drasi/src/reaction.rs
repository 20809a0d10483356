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
//! # Backpressure
//!
//! `enqueue_query_result` returns once the result is *queued* in the query's bounded runtime
//! queue, waiting for room when it is full (the runtime's default `Backpressure::Block`). drasi-lib
//! awaits it per query, so a slow store slows Drasi's delivery to this reaction instead of
//! growing a buffer. The commit itself happens asynchronously, in group commits.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use drasi_lib::channels::{ComponentStatus, QueryResult};
use drasi_lib::context::ReactionRuntimeContext;
use drasi_lib::queries::output_state::SnapshotStream;
use drasi_lib::reactions::BootstrapContext;
use drasi_lib::{Reaction, ReactionBase, ReactionBaseParams, ReactionRecoveryPolicy};
use liveresults_core::formats::{Event, ResultBatch};
use liveresults_runtime::{Applied, Pending, QueryState, RuntimeHandle, SubmitError};
use serde_json::json;
use tokio::sync::Mutex;

use crate::convert::to_batch;
use crate::error::DrasiReactionError;
use crate::reconcile::{Reconciled, SnapshotDiff};

/// Rows per chunk when reading our own rows for a rebuild.
const SNAPSHOT_CHUNK_ROWS: usize = 4096;

/// Where a query's two numberings meet (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Attachment {
    /// Drasi's `as_of_sequence` of the snapshot we reconciled with.
    drasi_base: u64,
    /// Our committed sequence right after reconciling; `None` when nothing was ever committed
    /// and nothing needed to be, in which case Drasi's numbers are used as they are.
    ours_base: Option<u64>,
    /// The last Drasi sequence taken (starts at `drasi_base`).
    last: u64,
}

impl Attachment {
    /// Our sequence for Drasi's `drasi_sequence` (which is after `drasi_base`).
    fn ours(&self, drasi_sequence: u64) -> Option<u64> {
        let delta = drasi_sequence.checked_sub(self.drasi_base)?;
        match self.ours_base {
            None => Some(drasi_sequence),
            Some(base) => base.checked_add(delta),
        }
    }
}

/// One query's state in the reaction.
#[derive(Debug, Default)]
struct Link {
    attached: Option<Attachment>,
    /// The newest result handed to the runtime: once it is answered, every earlier one is.
    last_pending: Option<Pending>,
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
    base: Arc<ReactionBase>,
    handle: RuntimeHandle,
    links: Arc<HashMap<String, Mutex<Link>>>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for LiveResultsReaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveResultsReaction")
            .field("id", &self.base.id)
            .field("queries", &self.base.queries)
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
            .map(|q| (q.clone(), Mutex::new(Link::default())))
            .collect();
        let params = ReactionBaseParams::new(id, queries)
            .with_recovery_policy(ReactionRecoveryPolicy::AutoReset);
        LiveResultsReaction {
            base: Arc::new(ReactionBase::new(params)),
            handle,
            links: Arc::new(links),
            counters: Arc::new(Counters::default()),
        }
    }

    /// What the reaction has done so far.
    pub fn stats(&self) -> ReactionStats {
        ReactionStats {
            results: self.counters.results.load(Ordering::Relaxed),
            redeliveries: self.counters.redeliveries.load(Ordering::Relaxed),
            continues: self.counters.continues.load(Ordering::Relaxed),
            rebuilds: self.counters.rebuilds.load(Ordering::Relaxed),
        }
    }

    /// Waits until every result handed to the runtime so far is committed (or refused).
    pub async fn settle(&self) {
        for link in self.links.values() {
            let pending = link.lock().await.last_pending.take();
            if let Some(pending) = pending {
                if let Err(e) = pending.wait().await {
                    tracing::warn!(error = %e, "a result was not committed");
                }
            }
        }
    }

    /// Takes one result of one of our queries.
    async fn take(&self, result: QueryResult) -> Result<(), DrasiReactionError> {
        let Some(link) = self.links.get(&result.query_id) else {
            tracing::warn!(query_id = %result.query_id, "result of a query this reaction does not subscribe to");
            return Ok(());
        };
        let mut link = link.lock().await;
        let query_id = result.query_id.as_str();
        let sequence = result.sequence;
        let attachment = match link.attached {
            Some(a) if sequence <= a.last => {
                self.counters.redeliveries.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            // The next one, unless the runtime stopped the query since (a commit that failed
            // beyond its retries): then everything after it would be refused too.
            Some(a) if Some(sequence) == a.last.checked_add(1) && !self.stopped(query_id) => a,
            // Not attached since the last start, Drasi skipped sequences, or the query stopped:
            // what we hold can no longer be trusted to be Drasi's state minus this result;
            // re-attach.
            _ => {
                let snapshot = self.fetch_snapshot(query_id).await?;
                let (a, _) = self.reconcile(&mut link, query_id, snapshot).await?;
                if sequence <= a.last {
                    self.counters.redeliveries.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                if Some(sequence) != a.last.checked_add(1) {
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
                link.last_pending = Some(pending);
                link.attached = Some(Attachment {
                    last: sequence,
                    ..attachment
                });
                self.counters.results.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                // The result is lost to us; the next one re-attaches from a snapshot.
                link.attached = None;
                Err(e.into())
            }
        }
    }

    fn stopped(&self, query_id: &str) -> bool {
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

    /// Attaches `link` to Drasi's `snapshot`: continue when our rows equal it, otherwise commit
    /// the diff as one commit (see [`crate::reconcile`]).
    async fn reconcile(
        &self,
        link: &mut Link,
        query_id: &str,
        snapshot: SnapshotStream,
    ) -> Result<(Attachment, Decision), DrasiReactionError> {
        // Our rows must include everything already queued before they are compared.
        if let Some(pending) = link.last_pending.take() {
            if let Err(e) = pending.wait().await {
                tracing::warn!(query_id, error = %e, "a queued result was not committed before the rebuild");
            }
        }
        link.attached = None;
        let mut snapshot = snapshot;
        let mut cleared = false;
        let (as_of, config_hash, committed, reconciled, outcome) = loop {
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
            let (committed, reconciled) = self.diff_with(query_id, snapshot).await?;
            if reconciled.diffs.is_empty() {
                self.counters.continues.fetch_add(1, Ordering::Relaxed);
                break (
                    as_of,
                    config_hash,
                    committed,
                    reconciled,
                    (committed, Decision::Continue),
                );
            }
            match self
                .commit_rebuild(query_id, committed, as_of, config_hash, &reconciled)
                .await
            {
                Ok(sequence) => {
                    self.counters.rebuilds.fetch_add(1, Ordering::Relaxed);
                    break (
                        as_of,
                        config_hash,
                        committed,
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
        };
        tracing::info!(
            query_id,
            decision = ?outcome.1,
            drasi_as_of_sequence = as_of,
            drasi_config_hash = config_hash,
            committed_before = ?committed,
            committed_after = ?outcome.0,
            changed = (reconciled.diffs.len() as u64).saturating_sub(reconciled.deleted),
            deleted = reconciled.deleted,
            unchanged = reconciled.unchanged,
            "attached to Drasi query"
        );
        link.attached = Some(attachment);
        Ok((attachment, outcome.1))
    }

    /// Our committed sequence and the diff from our rows to the snapshot's.
    async fn diff_with(
        &self,
        query_id: &str,
        mut snapshot: SnapshotStream,
    ) -> Result<(Option<u64>, Reconciled), DrasiReactionError> {
        let store_error = |source| DrasiReactionError::Store {
            query_id: query_id.to_owned(),
            source,
        };
        let ours = self
            .handle
            .store()
            .snapshot(query_id, SNAPSHOT_CHUNK_ROWS)
            .await
            .map_err(store_error)?;
        let committed = ours.info().sequence;
        let rows = ours.collect_rows().await.map_err(store_error)?;
        let mut diff = SnapshotDiff::new(query_id, rows);
        while let Some((signature, row)) = snapshot.next_keyed().await {
            diff.push(signature, row);
        }
        Ok((committed, diff.finish()))
    }

    /// Commits a rebuild right after our committed sequence (at Drasi's `as_of_sequence` when
    /// nothing is committed yet), as ONE commit through the runtime, ordered with the query's
    /// other events and delivered to its reactions like any commit.
    async fn commit_rebuild(
        &self,
        query_id: &str,
        committed: Option<u64>,
        as_of: u64,
        config_hash: u64,
        reconciled: &Reconciled,
    ) -> Result<u64, DrasiReactionError> {
        let sequence = match committed {
            None => as_of,
            // Sequence u64::MAX cannot be followed: the runtime refuses the commit as a
            // regression, which is the honest answer.
            Some(c) => c.saturating_add(1),
        };
        let batch = ResultBatch {
            query_id: query_id.to_owned(),
            sequence,
            timestamp_ms: now_ms(),
            diffs: reconciled.diffs.clone(),
            metadata: Some(json!({
                "liveresults_rebuild": {
                    "drasi_as_of_sequence": as_of,
                    "drasi_config_hash": config_hash,
                    "deleted": reconciled.deleted,
                    "unchanged": reconciled.unchanged,
                }
            })),
        };
        match self
            .handle
            .commit_batch(query_id, vec![Event::Change(batch)])
            .await?
        {
            Applied::Committed { sequence } => Ok(sequence),
            // Skipped or deprovisioned: the runtime's committed sequence moved under us, or the
            // query was deleted. Nothing was written; the next result attaches again.
            other => Err(DrasiReactionError::RebuildNotApplied {
                query_id: query_id.to_owned(),
                outcome: format!("{other:?}"),
            }),
        }
    }
}

fn now_ms() -> Option<u64> {
    let elapsed = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
    u64::try_from(elapsed.as_millis()).ok()
}

#[async_trait]
impl Reaction for LiveResultsReaction {
    fn id(&self) -> &str {
        self.base.get_id()
    }

    fn type_name(&self) -> &str {
        "liveresults"
    }

    fn properties(&self) -> HashMap<String, serde_json::Value> {
        HashMap::from([("queries".to_owned(), json!(self.base.queries))])
    }

    fn query_ids(&self) -> Vec<String> {
        self.base.get_queries().to_vec()
    }

    async fn initialize(&self, context: ReactionRuntimeContext) {
        self.base.initialize(context).await;
    }

    async fn start(&self) -> anyhow::Result<()> {
        // Every start may follow an upstream restart: attach again before taking results.
        for link in self.links.values() {
            link.lock().await.attached = None;
        }
        self.base
            .set_status(
                ComponentStatus::Running,
                Some("liveresults reaction started".into()),
            )
            .await;
        Ok(())
    }

    async fn stop(&self) -> anyhow::Result<()> {
        self.settle().await;
        self.base
            .set_status(
                ComponentStatus::Stopped,
                Some("liveresults reaction stopped".into()),
            )
            .await;
        Ok(())
    }

    async fn status(&self) -> ComponentStatus {
        self.base.get_status().await
    }

    async fn enqueue_query_result(&self, result: QueryResult) -> anyhow::Result<()> {
        self.take(result).await.map_err(anyhow::Error::new)
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
        let Some(link) = self.links.get(&ctx.query_id) else {
            return Ok(());
        };
        let snapshot = ctx
            .fetch_snapshot()
            .await
            .map_err(|source| DrasiReactionError::Fetch {
                query_id: ctx.query_id.clone(),
                source,
            })?;
        let mut link = link.lock().await;
        self.reconcile(&mut link, &ctx.query_id, snapshot).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_keeps_our_sequence_growing_across_an_upstream_restart() {
        // First attach: nothing committed, Drasi's numbers are used as they are.
        let fresh = Attachment {
            drasi_base: 0,
            ours_base: None,
            last: 0,
        };
        assert_eq!(fresh.ours(1), Some(1));
        // Drasi restarted at 0 while we had committed 50 and rebuilt at 51.
        let restarted = Attachment {
            drasi_base: 0,
            ours_base: Some(51),
            last: 0,
        };
        assert_eq!(restarted.ours(1), Some(52));
        assert_eq!(restarted.ours(10), Some(61));
        let overflow = Attachment {
            drasi_base: 0,
            ours_base: Some(u64::MAX),
            last: 0,
        };
        assert_eq!(overflow.ours(1), None);
    }
}
