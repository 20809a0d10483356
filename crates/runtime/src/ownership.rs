//! Which queries this host writes, when several hosts share one store.
//!
//! Each query is written by one host at a time: the holder of its lease (see
//! `liveresults_core::lease`). A query's pipeline is only created once this host holds the
//! lease, every write it makes (commit, clear, removal) carries the lease's fencing token, a
//! background task renews the leases held every third of their length (many at once, so a
//! host owning thousands of queries renews them all in time), and the pipeline stops as soon
//! as the lease is gone — told by a failed renewal, or by the store fencing a write. The
//! fencing is what makes this safe: a host that was paused past its lease (and so cannot
//! know it lost it) has its next write refused by the store itself, inside the write's atomic
//! step; the renewals only make the loss visible early, so the host stops before a client
//! waits on a commit that cannot land.
//!
//! Asking for a lease twice under one host name hands out a new token and fences the first
//! (that is how a restarted host takes its queries back at once), so this host asks for a
//! query's lease only while no pipeline of it runs, one request at a time per query (the
//! per-query gates below).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use liveresults_core::lease::{LeaseClaim, LeaseOutcome, Leases};
use liveresults_core::{ResultStore, StoreError};
use tokio::sync::{watch, Mutex as AsyncMutex, OwnedMutexGuard};
use tokio::task::{JoinHandle, JoinSet};
use tracing::Instrument;

use crate::config::{HostConfig, HostIdentity, RetryPolicy};
use crate::error::SubmitError;
use crate::retry::store_retry;

/// Lease renewals one renewal round keeps in flight at once (see [`Ownership::renew_all`]).
const RENEWALS_IN_FLIGHT: usize = 64;

/// The leases this host holds, and how to get and keep them.
pub(crate) struct Ownership {
    store: Arc<dyn ResultStore>,
    host: HostConfig,
    retry: RetryPolicy,
    held: Mutex<HashMap<String, Held>>,
    /// One gate per query whose lease is being asked for (removed once nobody waits).
    gates: Mutex<HashMap<String, Arc<AsyncMutex<()>>>>,
}

/// One lease this host holds.
struct Held {
    token: u64,
    /// Set to `true` when the lease is lost; the query's pipeline waits on it.
    lost: watch::Sender<bool>,
    /// When the store last confirmed the lease (grant or renewal).
    confirmed: Instant,
}

/// What a pipeline holds of its query's lease: the token for its commits, and the signal
/// that the lease was lost.
pub(crate) struct Lease {
    pub(crate) token: u64,
    lost: watch::Receiver<bool>,
}

impl Lease {
    /// Resolves once the lease is lost (or no longer tracked, which only happens once it is
    /// given up: then it must not be written under either).
    pub(crate) async fn lost(&mut self) {
        let _ = self.lost.wait_for(|lost| *lost).await;
    }
}

/// Held while asking for one query's lease; lets the next asker in when dropped.
pub(crate) struct Gate<'a> {
    guard: Option<OwnedMutexGuard<()>>,
    query_id: String,
    ownership: &'a Ownership,
}

impl Drop for Gate<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut gates = lock(&self.ownership.gates);
        // Waiters take their clone of the gate under this lock, so a count of one (the map's)
        // means nobody waits or can start waiting on this gate: it can go.
        if gates
            .get(&self.query_id)
            .is_some_and(|g| Arc::strong_count(g) == 1)
        {
            gates.remove(&self.query_id);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain maps, never left half updated by a panic: a poisoned lock is still usable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Ownership {
    /// Ownership on `store` as `host`; `None` when the store has no leases (a store only one
    /// process opens needs none).
    pub(crate) fn new(
        store: &Arc<dyn ResultStore>,
        host: Option<&HostConfig>,
        retry: RetryPolicy,
    ) -> Option<Ownership> {
        let host = host?;
        store.leases()?;
        Some(Ownership {
            store: Arc::clone(store),
            host: host.clone(),
            retry,
            held: Mutex::default(),
            gates: Mutex::default(),
        })
    }

    fn leases(&self) -> Result<&dyn Leases, StoreError> {
        self.store.leases().ok_or(StoreError::Backend {
            backend: "runtime",
            class: liveresults_core::ErrorClass::Permanent,
            message: "the store no longer offers leases".into(),
        })
    }

    /// This host's identity.
    pub(crate) fn identity(&self) -> &HostIdentity {
        &self.host.identity
    }

    /// The lease length.
    pub(crate) fn ttl(&self) -> Duration {
        self.host.lease_ttl
    }

    /// Waits until no other task of this host is asking for `query_id`'s lease.
    pub(crate) async fn gate(&self, query_id: &str) -> Gate<'_> {
        let gate = Arc::clone(lock(&self.gates).entry(query_id.to_owned()).or_default());
        let guard = gate.lock_owned().await;
        Gate {
            guard: Some(guard),
            query_id: query_id.to_owned(),
            ownership: self,
        }
    }

    /// Asks for the query's lease: granted (the pipeline may start), or held by another host
    /// (`NotOwner`, naming it). Call it behind the query's [`Ownership::gate`].
    pub(crate) async fn acquire(&self, query_id: &str) -> Result<Lease, SubmitError> {
        let identity = &self.host.identity;
        let span = tracing::info_span!("lease_acquire", query_id, host = %identity.name);
        async {
            let store_error = |source| SubmitError::Store {
                query_id: query_id.to_owned(),
                committed: None,
                source,
            };
            let leases = self.leases().map_err(store_error)?;
            let claim = LeaseClaim {
                holder: &identity.name,
                address: &identity.address,
                ttl: self.host.lease_ttl,
            };
            let outcome = store_retry(self.retry, "acquire_lease", || {
                leases.acquire(query_id, claim)
            })
            .await
            .map_err(store_error)?;
            match outcome {
                LeaseOutcome::Granted { token } => {
                    let (lost, watcher) = watch::channel(false);
                    let held = Held {
                        token,
                        lost,
                        confirmed: Instant::now(),
                    };
                    lock(&self.held).insert(query_id.to_owned(), held);
                    tracing::info!(token, "lease acquired");
                    Ok(Lease {
                        token,
                        lost: watcher,
                    })
                }
                LeaseOutcome::Held(holder) => {
                    tracing::debug!(holder = %holder.holder, remaining = ?holder.remaining, "lease held by another host");
                    Err(SubmitError::NotOwner {
                        query_id: query_id.to_owned(),
                        holder: holder.holder,
                        address: holder.address,
                    })
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Marks the lease with `token` lost: its pipeline is told, and the query is no longer
    /// counted as owned. A newer lease of the query is left alone.
    pub(crate) fn lose(&self, query_id: &str, token: u64, why: &str) {
        let mut held = lock(&self.held);
        if held.get(query_id).is_some_and(|h| h.token == token) {
            if let Some(h) = held.remove(query_id) {
                let _ = h.lost.send(true);
            }
            tracing::warn!(query_id, token, why, "lease lost");
        }
    }

    /// Renews every lease held, once, [`RENEWALS_IN_FLIGHT`] at a time: one after the other,
    /// a host owning thousands of queries would need thousands of round trips per round, and
    /// a round longer than the lease loses leases a healthy host should keep. Warns when a
    /// round takes longer than the renewal period (a third of the lease): the leases are then
    /// closer to expiring than they should be.
    async fn renew_all(self: &Arc<Self>) {
        if self.leases().is_err() {
            return;
        }
        let held: Vec<(String, u64)> = (lock(&self.held).iter())
            .map(|(query_id, h)| (query_id.clone(), h.token))
            .collect();
        let count = held.len();
        let started = Instant::now();
        let mut waiting = held.into_iter();
        let mut running = JoinSet::new();
        loop {
            while running.len() < RENEWALS_IN_FLIGHT {
                let Some((query_id, token)) = waiting.next() else {
                    break;
                };
                let ownership = Arc::clone(self);
                running.spawn(async move { ownership.renew_one(&query_id, token).await });
            }
            // `None`: nothing left running, and (the loop above filled the set) nothing
            // left waiting either. A renewal that panicked is retried next round.
            if running.join_next().await.is_none() {
                break;
            }
        }
        let took = started.elapsed();
        let period = self.host.lease_ttl / 3;
        if took > period {
            tracing::warn!(
                leases = count,
                took_ms = took.as_millis() as u64,
                period_ms = period.as_millis() as u64,
                "renewing the leases took longer than the renewal period: they come closer to \
                 expiring each round (the store is slow, or this host owns too many queries)"
            );
        }
    }

    /// Renews one lease. One the store no longer has is lost at once; one that could not be
    /// renewed for a whole lease length (the store unreachable) is given up too, because by
    /// then it may have expired and gone to another host.
    async fn renew_one(&self, query_id: &str, token: u64) {
        let Ok(leases) = self.leases() else { return };
        let ttl = self.host.lease_ttl;
        match leases.renew(query_id, token, ttl).await {
            Ok(true) => {
                if let Some(h) = lock(&self.held).get_mut(query_id) {
                    if h.token == token {
                        h.confirmed = Instant::now();
                    }
                }
            }
            Ok(false) => self.lose(query_id, token, "the store no longer has this lease"),
            Err(e) => {
                let stale = lock(&self.held)
                    .get(query_id)
                    .is_some_and(|h| h.token == token && h.confirmed.elapsed() >= ttl);
                tracing::warn!(query_id, error = %e, stale, "lease renewal failed");
                if stale {
                    self.lose(query_id, token, "not renewed for a whole lease length");
                }
            }
        }
    }

    /// Gives up one lease (a pipeline that could not start after all).
    pub(crate) async fn release(&self, query_id: &str, token: u64) {
        let removed = {
            let mut held = lock(&self.held);
            match held.get(query_id) {
                Some(h) if h.token == token => held.remove(query_id),
                _ => None,
            }
        };
        if removed.is_some() {
            self.release_in_store(query_id, token).await;
        }
    }

    /// Gives up every lease held, so other hosts can take the queries at once instead of
    /// after expiry. Called at shutdown, once no pipeline commits any more.
    pub(crate) async fn release_all(&self) {
        let held: Vec<(String, Held)> = lock(&self.held).drain().collect();
        for (query_id, h) in held {
            self.release_in_store(&query_id, h.token).await;
        }
    }

    async fn release_in_store(&self, query_id: &str, token: u64) {
        let span = tracing::info_span!("lease_release", query_id, token);
        let released = async {
            let leases = self.leases()?;
            store_retry(self.retry, "release_lease", || {
                leases.release(query_id, token)
            })
            .await
        }
        .instrument(span)
        .await;
        match released {
            Ok(()) => tracing::info!(query_id, token, "lease released"),
            // It expires by itself; another host waits for that instead.
            Err(e) => tracing::warn!(query_id, token, error = %e, "releasing a lease failed"),
        }
    }

    /// Whether this host holds the query's lease.
    pub(crate) fn owns(&self, query_id: &str) -> bool {
        lock(&self.held).contains_key(query_id)
    }

    /// The queries whose lease this host holds, by id.
    pub(crate) fn owned(&self) -> Vec<String> {
        let mut owned: Vec<String> = lock(&self.held).keys().cloned().collect();
        owned.sort();
        owned
    }
}

/// Renews the leases of `ownership` every third of their length until it is dropped (or the
/// task aborted, which is how a runtime stops it).
pub(crate) fn spawn_renewals(ownership: &Arc<Ownership>) -> JoinHandle<()> {
    let every = ownership.ttl() / 3;
    let weak: Weak<Ownership> = Arc::downgrade(ownership);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(ownership) = weak.upgrade() else {
                return;
            };
            ownership.renew_all().await;
        }
    })
}
