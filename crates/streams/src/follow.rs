//! Following a shared store: the task that applies other hosts' changes to this host's
//! engine, so readers parked here wake when another host appends, and streams created or
//! deleted elsewhere appear and disappear here without a request for them.
//!
//! Notices are fire-and-forget (Redis Pub/Sub loses what is published while the subscriber
//! reconnects), so the task does not rely on them alone: a [`Change::Lost`] (the store's
//! subscription dropped) or a lagging receiver re-checks every stream, and every
//! [`RECHECK_EVERY`] the streams with live readers are compared with the store in one read
//! (every stream, after a change this host failed to apply).
//! A reader is therefore woken within about a second even if its notice never came — well
//! inside a long-poll's timeout — and every request reloads its stream anyway
//! ([`Engine::refresh`]).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Weak;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;
use crate::store::Change;

/// How often streams with live readers are compared with the store (the fallback for a
/// lost notice).
pub const RECHECK_EVERY: Duration = Duration::from_secs(1);

/// Streams refreshed at once after a burst of notices.
const CONCURRENCY: usize = 16;

/// Starts the task (on the current tokio runtime); it ends at `stop`, when the engine is
/// dropped, or when the store closes its change channel.
pub(crate) fn spawn(
    engine: Weak<Engine>,
    mut changes: broadcast::Receiver<Change>,
    stop: CancellationToken,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(RECHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A change this host failed to apply (the store answered with an error): the next
        // tick re-checks every stream, since the one that failed may have no live reader for
        // the watched-only re-check to look at.
        let failed = AtomicBool::new(false);
        loop {
            let mut names = BTreeSet::new();
            let mut all = false;
            let mut watched = false;
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {
                    watched = true;
                    all = failed.swap(false, Ordering::Relaxed);
                }
                change = changes.recv() => match change {
                    Ok(Change::Stream(name)) => {
                        names.insert(name);
                    }
                    Ok(Change::Lost) | Err(RecvError::Lagged(_)) => all = true,
                    Err(RecvError::Closed) => return,
                },
            }
            // Apply a burst in one go: each stream once, several at a time.
            loop {
                match changes.try_recv() {
                    Ok(Change::Stream(name)) => {
                        names.insert(name);
                    }
                    Ok(Change::Lost) | Err(TryRecvError::Lagged(_)) => all = true,
                    Err(TryRecvError::Empty | TryRecvError::Closed) => break,
                }
            }
            let Some(engine) = engine.upgrade() else {
                return;
            };
            if all || watched {
                if let Err(e) = engine.recheck(all).await {
                    tracing::warn!(error = %e, all, "re-checking streams against the store failed");
                    failed.store(true, Ordering::Relaxed);
                }
            }
            if !all {
                let (engine, failed) = (&engine, &failed);
                futures_util::stream::iter(names)
                    .for_each_concurrent(CONCURRENCY, |name| async move {
                        if let Err(e) = engine.refresh(&name).await {
                            tracing::warn!(stream = %name, error = %e,
                                "applying another host's change failed; the re-check retries");
                            failed.store(true, Ordering::Relaxed);
                        }
                    })
                    .await;
            }
        }
    });
}
