//! Reaction workers: one task per reaction, fed through a bounded queue, so a slow reaction
//! slows the pipelines (backpressure) instead of growing memory.

use std::sync::Arc;

use liveresults_core::{QueryInfo, ResultStore};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::config::{RecoveryPolicy, RetryPolicy};
use crate::delivery::deliver_one;
use crate::progress::ProgressWriter;
use crate::reaction::{Delivery, Reaction};
use crate::recovery;

/// What a reaction worker's queue carries.
pub(crate) enum Work {
    /// Hand this to the reaction.
    Deliver(Delivery),
    /// Answer once everything queued before has been handled. A pipeline waits on this before
    /// clearing its query: a change of the old epoch still queued would otherwise save its
    /// checkpoint after the clear deleted the checkpoints, and a restart would then trust a
    /// position of the old epoch.
    Barrier(oneshot::Sender<()>),
    /// Bring the reaction up to date on a query whose lease this host just took (several
    /// hosts share the store): another host may have committed since the reaction last saw
    /// the query, so it recovers exactly as after a restart. Runs in the worker because the
    /// worker alone publishes the reaction's progress, and after everything queued before.
    Recover(Box<Recover>),
    /// Forget the reaction's progress (and failure) on a query that was removed; sent after
    /// the reset that dropped the reaction's state for it.
    Forget(String),
}

/// The query to recover, how, and where to say it is done.
pub(crate) struct Recover {
    pub(crate) info: QueryInfo,
    pub(crate) policy: RecoveryPolicy,
    pub(crate) chunk_rows: usize,
    pub(crate) done: oneshot::Sender<()>,
}

/// Spawns the worker of one reaction; it ends when every sender is gone and its queue drained.
pub(crate) fn spawn_worker(
    reaction: Arc<dyn Reaction>,
    store: Arc<dyn ResultStore>,
    retry: RetryPolicy,
    progress: ProgressWriter,
    capacity: usize,
) -> (mpsc::Sender<Work>, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Work>(capacity);
    let task = tokio::spawn(async move {
        while let Some(work) = rx.recv().await {
            match work {
                Work::Deliver(delivery) => {
                    deliver_one(&*reaction, &*store, retry, &progress, &delivery).await;
                }
                Work::Barrier(done) => {
                    let _ = done.send(());
                }
                Work::Forget(query_id) => progress.forget(&query_id),
                Work::Recover(recover) => {
                    let Recover {
                        info,
                        policy,
                        chunk_rows,
                        done,
                    } = *recover;
                    let recovered = recovery::recover(
                        &*reaction, &*store, &info, policy, retry, chunk_rows, &progress,
                    )
                    .await;
                    // The query goes on without this reaction rather than not at all; the
                    // failure shows in its status until a reset (a clear) retries it.
                    if let Err(e) = recovered {
                        progress.fail(
                            reaction.id(),
                            &info.query_id,
                            info.epoch,
                            format!("recovering after taking the query's lease: {e}"),
                        );
                    }
                    let _ = done.send(());
                }
            }
        }
    });
    (tx, task)
}
