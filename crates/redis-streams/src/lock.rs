//! The consumer lock: at most one consumer of a group reads a stream at a time.
//!
//! A consumer group hands each new entry (`XREADGROUP … >`) to whichever consumer asks first,
//! so two live consumers of one stream would each get part of a query's events — gaps for
//! both. The lock makes every other consumer a stand-by: each stream has a key
//! `<stream>:liveresults-lock:<group>` holding the owner (the consumer's name and a nonce of
//! the process) with a time-to-live; a consumer takes the keys of all its streams in one
//! script, all or none (`SET … PX` on each when none is held by another owner: the
//! `SET NX PX` rule over the set, so consumers of overlapping stream sets exclude each other
//! too), renews them every third of the TTL with a compare-and-renew script, and deletes them
//! with a compare-and-delete script when it stops. Expiry runs on the server's clock.
//!
//! The holder never relies on a lock it cannot prove: it counts its validity from the moment
//! it *sent* the last successful acquire or renewal (the server's expiry is later), and stops
//! starting reads a third of the TTL before that, cutting blocking reads to fit. When a
//! renewal finds another owner, or no renewal succeeded in time, the lock counts as lost.

use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::Script;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::millis;
use crate::error::StreamSourceError;
use crate::shutdown::Shutdown;

/// Takes every key when none is held by another owner. KEYS: the locks. ARGV: 1 owner,
/// 2 ttl in ms. Reply: `{"ok"}` or `{"held", key, holder, ms left}`.
const ACQUIRE: &str = r"
for _, key in ipairs(KEYS) do
  local holder = redis.call('GET', key)
  if holder and holder ~= ARGV[1] then
    return {'held', key, holder, tostring(redis.call('PTTL', key))}
  end
end
for _, key in ipairs(KEYS) do
  redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
end
return {'ok'}
";

/// Extends every key if all still hold the owner. KEYS: the locks. ARGV: 1 owner, 2 ttl in
/// ms. Reply: 1 when renewed, 0 when any key is gone or held by another owner.
const RENEW: &str = r"
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) ~= ARGV[1] then return 0 end
end
for _, key in ipairs(KEYS) do
  redis.call('PEXPIRE', key, ARGV[2])
end
return 1
";

/// Deletes the keys holding the owner. KEYS: the locks. ARGV: 1 owner. Reply: how many.
const RELEASE: &str = r"
local released = 0
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('DEL', key)
    released = released + 1
  end
end
return released
";

static ACQUIRE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(ACQUIRE));
static RENEW_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(RENEW));
static RELEASE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(RELEASE));

/// First and longest wait before retrying a lock command that failed transiently.
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// The longest a stand-by waits between two attempts to take the lock.
const STAND_BY_POLL: Duration = Duration::from_millis(500);

/// The lock key of `stream` for `group`.
pub fn lock_key(stream: &str, group: &str) -> String {
    format!("{stream}:liveresults-lock:{group}")
}

/// One consumer's lock over its streams.
pub(crate) struct StreamLock {
    keys: Vec<String>,
    owner: String,
    ttl: Duration,
}

/// What an attempt to take the lock found.
enum Attempt {
    Granted,
    Held {
        key: String,
        holder: String,
        left_ms: String,
    },
}

/// Whether the lock can still be relied on.
#[derive(Debug, Clone, Copy)]
enum Validity {
    /// Held (as far as this process can prove) until then.
    Until(Instant),
    /// Taken by another owner, or not renewed in time.
    Lost,
}

fn lock_error(
    command: &'static str,
    keys: &[String],
) -> impl FnOnce(redis::RedisError) -> StreamSourceError {
    let stream = keys.join(", ");
    move |source| StreamSourceError::Redis {
        command,
        stream,
        source,
    }
}

impl StreamLock {
    /// The lock of `streams` in `group` for `consumer`; the owner adds a nonce of this process
    /// so that a crashed run's lock is never mistaken for the next run's.
    pub fn new(streams: &[&str], group: &str, consumer: &str, ttl: Duration) -> Self {
        let nonce = RandomState::new().hash_one(std::process::id());
        StreamLock {
            keys: streams.iter().map(|s| lock_key(s, group)).collect(),
            owner: format!("{consumer} (pid {}, {nonce:016x})", std::process::id()),
            ttl,
        }
    }

    /// The longest a read may block while the lock is valid until `until`: what is left,
    /// less a third of the TTL (the margin for the read's reply and the clocks' drift).
    fn usable(&self, until: Instant) -> Duration {
        until
            .saturating_duration_since(Instant::now())
            .saturating_sub(self.ttl / 3)
    }

    async fn attempt(&self, conn: &mut ConnectionManager) -> Result<Attempt, StreamSourceError> {
        let mut invocation = ACQUIRE_SCRIPT.prepare_invoke();
        for key in &self.keys {
            invocation.key(key);
        }
        invocation.arg(&self.owner).arg(millis(self.ttl));
        let reply: Vec<String> = invocation
            .invoke_async(conn)
            .await
            .map_err(lock_error("lock acquire script", &self.keys))?;
        let mut parts = reply.into_iter();
        match (
            parts.next().as_deref(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) {
            (Some("ok"), None, None, None) => Ok(Attempt::Granted),
            (Some("held"), Some(key), Some(holder), Some(left_ms)) => Ok(Attempt::Held {
                key,
                holder,
                left_ms,
            }),
            (tag, ..) => Err(StreamSourceError::Reply {
                command: "lock acquire script",
                detail: format!("unexpected reply tag {tag:?}"),
            }),
        }
    }

    async fn renew(&self, conn: &mut ConnectionManager) -> Result<bool, StreamSourceError> {
        let mut invocation = RENEW_SCRIPT.prepare_invoke();
        for key in &self.keys {
            invocation.key(key);
        }
        invocation.arg(&self.owner).arg(millis(self.ttl));
        let renewed: i64 = invocation
            .invoke_async(conn)
            .await
            .map_err(lock_error("lock renew script", &self.keys))?;
        Ok(renewed == 1)
    }

    /// Gives the lock back (the keys still holding this owner), so a stand-by takes over at
    /// once instead of after the TTL.
    pub async fn release(&self, conn: &mut ConnectionManager) -> Result<(), StreamSourceError> {
        let mut invocation = RELEASE_SCRIPT.prepare_invoke();
        for key in &self.keys {
            invocation.key(key);
        }
        invocation.arg(&self.owner);
        let _: i64 = invocation
            .invoke_async(conn)
            .await
            .map_err(lock_error("lock release script", &self.keys))?;
        Ok(())
    }

    /// Waits as a stand-by until the lock is taken, then keeps it renewed in a task; `None`
    /// when `shutdown` fired first. Transient errors are retried; others end the wait.
    pub async fn acquire(
        self: &Arc<Self>,
        conn: &ConnectionManager,
        shutdown: &mut Shutdown<'_>,
    ) -> Result<Option<LockKeeper>, StreamSourceError> {
        let mut retry = RETRY_MIN;
        let mut announced: Option<String> = None;
        loop {
            let sent = Instant::now();
            let Some(attempt) = shutdown.guard(self.attempt(&mut conn.clone())).await else {
                return Ok(None);
            };
            let wait = match attempt {
                Ok(Attempt::Granted) => {
                    tracing::info!(owner = %self.owner, "took the consumer lock: reading");
                    return Ok(Some(self.keep(conn.clone(), sent + self.ttl)));
                }
                Ok(Attempt::Held {
                    key,
                    holder,
                    left_ms,
                }) => {
                    if announced.as_deref() != Some(holder.as_str()) {
                        tracing::info!(%key, %holder, %left_ms,
                            "stand-by: another consumer holds the lock of these streams; \
                             reading starts when it releases the lock or lets it expire");
                        announced = Some(holder);
                    }
                    retry = RETRY_MIN;
                    // Often enough that a released lock is taken at once, whatever the TTL.
                    (self.ttl / 3).min(STAND_BY_POLL)
                }
                Err(e) if e.is_transient() => {
                    tracing::warn!(error = %e, retry_in = ?retry, "cannot take the consumer lock yet");
                    let wait = retry;
                    retry = (retry * 2).min(RETRY_MAX);
                    wait
                }
                Err(e) => return Err(e),
            };
            if !shutdown.sleep(wait).await {
                return Ok(None);
            }
        }
    }

    /// Starts renewing the lock, valid until `until`.
    fn keep(self: &Arc<Self>, conn: ConnectionManager, until: Instant) -> LockKeeper {
        let (tx, rx) = watch::channel(Validity::Until(until));
        let task = tokio::spawn(Arc::clone(self).renewals(conn, tx, until));
        LockKeeper {
            lock: Arc::clone(self),
            task,
            validity: rx,
        }
    }

    /// Renews every third of the TTL until a renewal finds the lock gone, or none succeeded
    /// before it could have expired (then reports it lost and ends).
    async fn renewals(
        self: Arc<Self>,
        mut conn: ConnectionManager,
        tx: watch::Sender<Validity>,
        mut until: Instant,
    ) {
        let every = self.ttl / 3;
        let mut next = Instant::now() + every;
        loop {
            tokio::time::sleep_until(next).await;
            let sent = Instant::now();
            let failure = match tokio::time::timeout(every, self.renew(&mut conn)).await {
                Ok(Ok(true)) => {
                    until = sent + self.ttl;
                    let _ = tx.send(Validity::Until(until));
                    next = sent + every;
                    continue;
                }
                Ok(Ok(false)) => {
                    tracing::warn!(owner = %self.owner,
                        "consumer lock lost (expired or taken by another consumer): \
                         stopping reads, going back to stand-by");
                    let _ = tx.send(Validity::Lost);
                    return;
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no answer within {every:?}"),
            };
            if Instant::now() + RETRY_MIN >= until {
                tracing::warn!(error = %failure,
                    "consumer lock not renewed before it could expire: stopping reads, \
                     going back to stand-by");
                let _ = tx.send(Validity::Lost);
                return;
            }
            tracing::warn!(error = %failure, "consumer lock renewal failed; retrying");
            // A few more tries before the lock could expire, without flooding the log.
            next = Instant::now() + (every / 4).max(RETRY_MIN);
        }
    }
}

/// A held lock, renewed by a task that ends when this is dropped (so a run abandoned without
/// a clean stop stops renewing, and its lock expires).
pub(crate) struct LockKeeper {
    lock: Arc<StreamLock>,
    task: JoinHandle<()>,
    validity: watch::Receiver<Validity>,
}

impl LockKeeper {
    /// How long a read may block from now; `None` when the lock is lost or too close to
    /// expiry to start a read.
    pub fn usable(&self) -> Option<Duration> {
        match *self.validity.borrow() {
            Validity::Until(until) => Some(self.lock.usable(until)).filter(|d| !d.is_zero()),
            Validity::Lost => None,
        }
    }

    /// Stops renewing and gives the lock back.
    pub async fn release(self, conn: &mut ConnectionManager) -> Result<(), StreamSourceError> {
        self.task.abort();
        self.lock.release(conn).await
    }
}

impl Drop for LockKeeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}
