//! The two background tasks each query of the reaction runs between `start` and `stop`, so that
//! a divergence from Drasi is repaired even when no further result arrives to trigger it.
//!
//! - [`drain`] awaits the runtime's answer to every result handed over, in order. A result the
//!   reaction mapped to a fresh sequence must be *committed*: an answer of "skipped" (another
//!   writer committed that sequence first), "deprovisioned" or an error (the commit failed
//!   after it was queued, the query stopped) means our rows no longer follow Drasi's, so it
//!   marks the query [`Signals::dirty`] and asks for a repair. It never takes the query's lock,
//!   so a full outcome queue (which makes the reaction wait while holding it) always drains.
//! - [`repair`] re-attaches the query (see [`Heal`]) when asked to, and when the query's epoch
//!   changes (someone cleared it), retrying a failed re-attach with a capped exponential
//!   backoff. It holds the reaction only weakly, so a dropped reaction ends it, and it gives up
//!   when the runtime shuts down.
//!
//! Neither keeps unbounded state: the outcome queue and the request queue are bounded (a
//! request is a wake-up, so one pending is enough), and each holds one backoff delay.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use liveresults_runtime::{Applied, Pending, Position, SubmitError};
use tokio::sync::{mpsc, watch};

use crate::error::DrasiReactionError;

/// Results whose answers may wait in the outcome queue before the reaction waits for room.
pub(crate) const OUTCOME_QUEUE: usize = 1024;

/// The first retry of a failed re-attach, doubled after each failure up to [`LAST_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(50);
/// The longest wait between two re-attach attempts.
const LAST_RETRY: Duration = Duration::from_secs(5);

/// What re-attaches one query to Drasi's snapshot.
#[async_trait]
pub(crate) trait Heal: Send + Sync + 'static {
    /// Re-attaches `query_id` if it is dirty or its epoch changed since it was attached; does
    /// nothing otherwise.
    async fn heal(&self, query_id: &str) -> Result<(), DrasiReactionError>;
}

/// What the drain task tells the reaction about one query, without its lock.
#[derive(Debug)]
pub(crate) struct Signals {
    /// Set when our rows may have left Drasi's (an unexpected answer, a failed attach); cleared
    /// by the next attach, which first waits for every earlier answer.
    dirty: AtomicBool,
    /// How many results have been answered (the reaction counts those it handed over).
    answered: watch::Sender<u64>,
}

impl Default for Signals {
    fn default() -> Self {
        Signals {
            dirty: AtomicBool::new(false),
            answered: watch::Sender::new(0),
        }
    }
}

impl Signals {
    pub(crate) fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::Acquire)
    }

    /// Marks the query dirty and asks `repairs` (when running) for a repair.
    pub(crate) fn mark_dirty(&self, repairs: Option<&mpsc::Sender<()>>) {
        self.dirty.store(true, Ordering::Release);
        if let Some(repairs) = repairs {
            // Full: a repair is already asked for, which is all a request says.
            let _ = repairs.try_send(());
        }
    }

    /// Clears the mark; only once every result handed over so far is answered (see
    /// [`Signals::wait_answered`]), or a late answer about the old attachment would be lost.
    pub(crate) fn clear_dirty(&self) {
        self.dirty.store(false, Ordering::Release);
    }

    /// Waits until `submitted` results have been answered.
    pub(crate) async fn wait_answered(&self, submitted: u64) {
        let mut answered = self.answered.subscribe();
        // The sender lives in `self`, so the watch cannot close while this waits.
        let _ = answered.wait_for(|&n| n >= submitted).await;
    }

    /// Counts answers nobody will give (their drain task was stopped), marking the query dirty
    /// when there were any: their outcome is unknown.
    pub(crate) fn forget_unanswered(&self, submitted: u64) {
        if *self.answered.borrow() < submitted {
            self.mark_dirty(None);
            self.answered.send_replace(submitted);
        }
    }

    /// Takes the runtime's answer to one result the reaction expected to be committed.
    pub(crate) fn answer(
        &self,
        query_id: &str,
        outcome: Result<Applied, SubmitError>,
        repairs: Option<&mpsc::Sender<()>>,
    ) {
        match outcome {
            Ok(Applied::Committed { .. }) => {}
            Ok(other) => {
                tracing::warn!(query_id, outcome = ?other,
                    "a result was not committed (another writer moved the query); re-attaching");
                self.mark_dirty(repairs);
            }
            Err(e) => {
                tracing::warn!(query_id, error = %e, "a result was not committed; re-attaching");
                self.mark_dirty(repairs);
            }
        }
        // After the mark: whoever waits for this answer sees the mark too.
        self.answered.send_modify(|n| *n = n.saturating_add(1));
    }
}

/// Awaits the answer to every result handed over through `outcomes`, in order, until the
/// reaction drops the sender (at `stop`, or when the reaction is dropped).
pub(crate) async fn drain(
    query_id: String,
    mut outcomes: mpsc::Receiver<Pending>,
    signals: Arc<Signals>,
    repairs: mpsc::Sender<()>,
) {
    while let Some(pending) = outcomes.recv().await {
        signals.answer(&query_id, pending.wait().await, Some(&repairs));
    }
}

/// Re-attaches `query_id` on request and when its epoch changes, until the requests' senders
/// are gone (the reaction stopped or was dropped) or the runtime shuts down.
pub(crate) async fn repair<H: Heal>(
    healer: Weak<H>,
    query_id: String,
    mut requests: mpsc::Receiver<()>,
    mut position: watch::Receiver<Position>,
) {
    let mut epoch = position.borrow_and_update().epoch;
    loop {
        tokio::select! {
            request = requests.recv() => {
                if request.is_none() {
                    return;
                }
            }
            changed = position.changed() => {
                if changed.is_err() {
                    return;
                }
                // Every commit moves the position; only a clear changes the epoch.
                let now = position.borrow_and_update().epoch;
                if now == epoch {
                    continue;
                }
                epoch = now;
            }
        }
        let mut delay = FIRST_RETRY;
        loop {
            let Some(healer) = healer.upgrade() else {
                return;
            };
            let result = healer.heal(&query_id).await;
            drop(healer);
            match result {
                Ok(()) => break,
                Err(e) if e.is_shutdown() => return,
                Err(e) => {
                    tracing::warn!(query_id, error = %e, retry_in = ?delay, "re-attach failed; retrying");
                }
            }
            tokio::time::sleep(delay).await;
            delay = delay.saturating_mul(2).min(LAST_RETRY);
        }
    }
}
