//! The background reclaimer: frees the rows and outbox entries of cleared and removed
//! epochs in small transactions, so that `clear_query` and `remove_query` stay O(1) for
//! their caller (they only move the epoch and list the old one in `<schema>.reclaim`).
//!
//! Each step is one call of the schema's `reclaim_step` function: at most `batch` rows of
//! one listed epoch, one short transaction, so vacuum and concurrent commits never wait
//! behind a million-row `DELETE`. The step's plan is pinned (migration 3: victims' `ctid`s
//! from an index scan on `(qid, epoch)`, deleted by a TID scan), so its cost follows the
//! rows it deletes, not the planner's statistics: 10,000 rows take milliseconds even when
//! the statistics say the table holds one row. A clear through this handle wakes the task at once; it
//! also looks every `every` for work listed by other handles or hosts, and at start for
//! work a previous process left. Several reclaimers share the list (`SKIP LOCKED`).
//! Garbage rows are never read: every read names the query's current epoch.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::Pool;
use liveresults_core::StoreError;
use tokio::sync::{oneshot, Notify};

use crate::error::{from_pg, from_pool};

/// The handle of one reclaimer task; dropping it (with the store) or [`Reclaimer::stop`]
/// ends the task after its current step.
pub(crate) struct Reclaimer {
    wake: Arc<Notify>,
    stop: Mutex<Option<oneshot::Sender<()>>>,
}

impl Reclaimer {
    /// Starts the task; `sql` is the statement calling `reclaim_step($1)`.
    pub(crate) fn start(pool: Pool, sql: String, batch: u32, every: Duration) -> Reclaimer {
        let wake = Arc::new(Notify::new());
        let (stop_tx, stop_rx) = oneshot::channel();
        tokio::spawn(run(pool, sql, batch, every, Arc::clone(&wake), stop_rx));
        Reclaimer {
            wake,
            stop: Mutex::new(Some(stop_tx)),
        }
    }

    /// Asks the task to look for work now (a clear or removal just listed some).
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// Ends the task.
    pub(crate) fn stop(&self) {
        if let Ok(mut stop) = self.stop.lock() {
            stop.take();
        }
    }
}

async fn run(
    pool: Pool,
    sql: String,
    batch: u32,
    every: Duration,
    wake: Arc<Notify>,
    mut stop: oneshot::Receiver<()>,
) {
    let batch = i32::try_from(batch).unwrap_or(i32::MAX);
    loop {
        loop {
            let step = tokio::select! {
                _ = &mut stop => return,
                step = step(&pool, &sql, batch) => step,
            };
            match step {
                Ok(true) => {}
                Ok(false) => break,
                Err(StoreError::Closed) => return,
                Err(err) => {
                    tracing::warn!(%err, "reclaiming cleared rows failed; retrying later");
                    break;
                }
            }
        }
        tokio::select! {
            _ = &mut stop => return,
            () = wake.notified() => {}
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// One `reclaim_step`; `Ok(false)` when there was nothing to do.
async fn step(pool: &Pool, sql: &str, batch: i32) -> Result<bool, StoreError> {
    let client = pool.get().await.map_err(from_pool)?;
    let statement = client.prepare_cached(sql).await.map_err(from_pg)?;
    let started = std::time::Instant::now();
    let row = client
        .query_one(&statement, &[&batch])
        .await
        .map_err(from_pg)?;
    let deleted: i64 = row.try_get(0).map_err(from_pg)?;
    if deleted > 0 {
        // The step's time is logged because it is the thing that once went wrong: with
        // stale statistics migration 1's step ran for minutes (migration 3 pins its plan).
        tracing::debug!(deleted, elapsed = ?started.elapsed(), "reclaimed cleared rows");
    }
    Ok(deleted >= 0)
}
