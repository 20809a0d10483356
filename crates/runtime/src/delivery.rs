//! Reaction workers: one task per reaction, fed through a bounded queue, so a slow reaction
//! slows the pipelines (backpressure) instead of growing memory.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use liveresults_core::{Checkpoint, ResultStore};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::config::RetryPolicy;
use crate::reaction::{Delivery, Reaction};
use crate::retry::store_retry;

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

/// Failures by `(reaction, query)`; a failed pair receives nothing until the query is reset.
#[derive(Debug, Default)]
pub(crate) struct Failures {
    list: Mutex<Vec<ReactionFailure>>,
}

impl Failures {
    pub(crate) fn record(&self, reaction_id: &str, query_id: &str, message: String) {
        tracing::error!(reaction_id, query_id, error = %message, "reaction failed for query");
        if let Ok(mut list) = self.list.lock() {
            list.retain(|f| !(f.reaction_id == reaction_id && f.query_id == query_id));
            list.push(ReactionFailure {
                reaction_id: reaction_id.to_owned(),
                query_id: query_id.to_owned(),
                message,
            });
        }
    }

    pub(crate) fn clear(&self, reaction_id: &str, query_id: &str) {
        if let Ok(mut list) = self.list.lock() {
            list.retain(|f| !(f.reaction_id == reaction_id && f.query_id == query_id));
        }
    }

    pub(crate) fn contains(&self, reaction_id: &str, query_id: &str) -> bool {
        self.list
            .lock()
            .map(|l| {
                l.iter()
                    .any(|f| f.reaction_id == reaction_id && f.query_id == query_id)
            })
            .unwrap_or(false)
    }

    pub(crate) fn all(&self) -> Vec<ReactionFailure> {
        self.list.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

/// Delivers one delivery to a reaction with retries, then checkpoints durable reactions.
pub(crate) async fn deliver_one(
    reaction: &dyn Reaction,
    store: &dyn ResultStore,
    retry: RetryPolicy,
    failures: &Failures,
    delivery: &Delivery,
) {
    let (id, query_id) = (reaction.id(), delivery.query_id());
    if let Delivery::Reset { .. } = delivery {
        failures.clear(id, query_id);
    } else if failures.contains(id, query_id) {
        return;
    }
    let mut backoff = retry.initial_backoff;
    let mut attempt = 1;
    loop {
        match reaction.deliver(delivery).await {
            Ok(()) => break,
            Err(e) if attempt < retry.max_attempts.max(1) => {
                tracing::warn!(reaction_id = id, query_id, attempt, error = %e, "reaction failed, retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(retry.max_backoff);
                attempt += 1;
            }
            Err(e) => {
                failures.record(id, query_id, e.message);
                return;
            }
        }
    }
    if !reaction.durable() {
        return;
    }
    let sequence = match delivery {
        Delivery::Change(change) => Some(change.span.last),
        Delivery::SnapshotDone { sequence, .. } => *sequence,
        Delivery::Reset { .. } | Delivery::SnapshotRows { .. } => return,
    };
    let checkpoint = Checkpoint {
        sequence,
        config_hash: reaction.config_hash(),
    };
    let saved = store_retry(retry, "save_checkpoint", || {
        store.save_checkpoint(id, query_id, checkpoint)
    })
    .await;
    if let Err(e) = saved {
        failures.record(id, query_id, format!("saving checkpoint: {e}"));
    }
}

/// What a reaction worker's queue carries.
pub(crate) enum Work {
    /// Hand this to the reaction.
    Deliver(Delivery),
    /// Answer once everything queued before has been handled. A pipeline waits on this before
    /// clearing its query: a change of the old epoch still queued would otherwise save its
    /// checkpoint after the clear deleted the checkpoints, and a restart would then trust a
    /// position of the old epoch.
    Barrier(oneshot::Sender<()>),
}

/// Spawns the worker of one reaction; it ends when every sender is gone and its queue drained.
pub(crate) fn spawn_worker(
    reaction: Arc<dyn Reaction>,
    store: Arc<dyn ResultStore>,
    retry: RetryPolicy,
    failures: Arc<Failures>,
    capacity: usize,
) -> (mpsc::Sender<Work>, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Work>(capacity);
    let task = tokio::spawn(async move {
        while let Some(work) = rx.recv().await {
            match work {
                Work::Deliver(delivery) => {
                    deliver_one(&*reaction, &*store, retry, &failures, &delivery).await
                }
                Work::Barrier(done) => {
                    let _ = done.send(());
                }
            }
        }
    });
    (tx, task)
}

/// Ids must be unique: checkpoints are keyed by them.
pub(crate) fn check_unique_ids(reactions: &[Arc<dyn Reaction>]) -> Result<(), String> {
    let mut seen = HashSet::new();
    for r in reactions {
        if !seen.insert(r.id()) {
            return Err(r.id().to_owned());
        }
    }
    Ok(())
}
