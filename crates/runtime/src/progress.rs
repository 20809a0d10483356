//! How far each reaction has got on each query, and whether it failed there.
//!
//! Reactions run behind the commits (each in its own worker, fed through a queue), so "is it
//! committed" and "has the dashboard seen it" are different questions. Every reaction publishes
//! its per-query position through a `watch` channel after each delivery it finishes; waiters
//! (`RuntimeHandle::reactions_caught_up`) sleep on that channel instead of polling, and the
//! status reports each reaction's lag from the same numbers. Failures live here too, so that a
//! waiter learns of a failure through the same channel and never waits for a reaction that
//! will receive nothing more.

use std::collections::HashMap;

use tokio::sync::watch;

use crate::error::RuntimeError;
use crate::status::{Position, ReactionLag};

/// A reaction that failed for one query, as reported by the runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReactionFailure {
    /// The reaction.
    pub reaction_id: String,
    /// The query it failed on.
    pub query_id: String,
    /// What went wrong.
    pub message: String,
}

/// A failure of one reaction on one query.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Failure {
    /// The epoch of the delivery that failed: a reset to a later epoch, already on its way,
    /// clears the failure, so only waiters for this epoch or an earlier one must give up.
    epoch: u64,
    message: String,
}

/// One reaction on one query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct QueryProgress {
    /// The newest position the reaction has fully handled (delivered and, for durable
    /// reactions, checkpointed).
    position: Position,
    failure: Option<Failure>,
}

type Queries = HashMap<String, QueryProgress>;

/// Creates the progress channel of one reaction.
pub(crate) fn progress_channel(reaction_id: &str) -> (ProgressWriter, ProgressReader) {
    let (tx, rx) = watch::channel(Queries::new());
    (
        ProgressWriter { tx },
        ProgressReader {
            reaction_id: reaction_id.to_owned(),
            rx,
        },
    )
}

/// Publishes one reaction's progress. Only the reaction's delivery path writes it (recovery at
/// start, then its worker, which owns it): when the worker ends, waiters see the channel close
/// and know nothing more will come.
pub(crate) struct ProgressWriter {
    tx: watch::Sender<Queries>,
}

impl ProgressWriter {
    /// The newest position the reaction has handled on `query_id`.
    pub(crate) fn position(&self, query_id: &str) -> Position {
        self.tx
            .borrow()
            .get(query_id)
            .map(|p| p.position)
            .unwrap_or_default()
    }

    /// Records that the reaction has fully handled `query_id` up to `position`.
    pub(crate) fn record(&self, query_id: &str, position: Position) {
        self.tx.send_if_modified(|queries| {
            // Looked up before inserting: `entry` would copy the id on every delivery.
            if !queries.contains_key(query_id) {
                queries.insert(query_id.to_owned(), QueryProgress::default());
            }
            let Some(entry) = queries.get_mut(query_id) else {
                return false;
            };
            let changed = entry.position != position;
            entry.position = position;
            changed
        });
    }

    /// Marks the reaction failed for `query_id` in `epoch`: it receives nothing more for the
    /// query until a reset.
    pub(crate) fn fail(&self, reaction_id: &str, query_id: &str, epoch: u64, message: String) {
        tracing::error!(reaction_id, query_id, epoch, error = %message, "reaction failed for query");
        self.tx.send_modify(|queries| {
            queries.entry(query_id.to_owned()).or_default().failure =
                Some(Failure { epoch, message });
        });
    }

    /// Forgets a failure: a reset gives the reaction a fresh start on the query.
    pub(crate) fn clear_failure(&self, query_id: &str) {
        self.tx.send_if_modified(|queries| {
            queries
                .get_mut(query_id)
                .and_then(|p| p.failure.take())
                .is_some()
        });
    }

    /// Forgets the query (it was removed): its position and failure go, so statuses and
    /// failure lists no longer name it.
    pub(crate) fn forget(&self, query_id: &str) {
        self.tx
            .send_if_modified(|queries| queries.remove(query_id).is_some());
    }

    /// Whether the reaction has failed for `query_id`.
    pub(crate) fn failed(&self, query_id: &str) -> bool {
        self.tx
            .borrow()
            .get(query_id)
            .is_some_and(|p| p.failure.is_some())
    }
}

/// Reads one reaction's progress.
#[derive(Clone)]
pub(crate) struct ProgressReader {
    reaction_id: String,
    rx: watch::Receiver<Queries>,
}

impl ProgressReader {
    /// The reaction's progress on `query_id` next to the query's committed position.
    pub(crate) fn lag(&self, query_id: &str, committed: Position) -> ReactionLag {
        let progress = self.rx.borrow().get(query_id).cloned().unwrap_or_default();
        ReactionLag {
            reaction: self.reaction_id.clone(),
            epoch: progress.position.epoch,
            sequence: progress.position.sequence,
            lag: ReactionLag::sequences_behind(progress.position, committed),
            failure: progress.failure.map(|f| f.message),
        }
    }

    /// Every query the reaction has failed on, by query id.
    pub(crate) fn failures(&self) -> Vec<ReactionFailure> {
        let mut failures: Vec<_> = self
            .rx
            .borrow()
            .iter()
            .filter_map(|(query_id, p)| {
                p.failure.as_ref().map(|f| ReactionFailure {
                    reaction_id: self.reaction_id.clone(),
                    query_id: query_id.clone(),
                    message: f.message.clone(),
                })
            })
            .collect();
        failures.sort_by(|a, b| a.query_id.cmp(&b.query_id));
        failures
    }

    /// Waits until the reaction has handled `query_id` up to `target`. Fails when the reaction
    /// has failed for the query in `target`'s epoch (or a later one), or when its worker ended
    /// short of `target`.
    pub(crate) async fn wait_for(
        &mut self,
        query_id: &str,
        target: Position,
    ) -> Result<(), RuntimeError> {
        let mut open = true;
        loop {
            {
                let queries = self.rx.borrow_and_update();
                let progress = queries.get(query_id);
                // Position first: a reaction that reached the target and failed on a later
                // commit has done what the caller waits for.
                if progress.map(|p| p.position).unwrap_or_default() >= target {
                    return Ok(());
                }
                if let Some(failure) = progress.and_then(|p| p.failure.as_ref()) {
                    if failure.epoch >= target.epoch {
                        return Err(RuntimeError::ReactionFailed {
                            reaction_id: self.reaction_id.clone(),
                            query_id: query_id.to_owned(),
                            message: failure.message.clone(),
                        });
                    }
                }
            }
            if !open {
                return Err(RuntimeError::ReactionStopped {
                    reaction_id: self.reaction_id.clone(),
                    query_id: query_id.to_owned(),
                });
            }
            // Fails once the worker is gone; its last update is still read once more above.
            open = self.rx.changed().await.is_ok();
        }
    }
}
