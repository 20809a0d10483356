//! Store options.

use std::time::Duration;

use liveresults_core::OutboxRetention;

/// What [`ResultStore::flush`](liveresults_core::ResultStore::flush) waits for.
///
/// Redis acknowledges a write once it is in the server's memory; whether that survives a
/// power loss is the server's configuration, not the client's. With `appendonly yes` and
/// `appendfsync always` the server fsyncs the AOF before it answers, so every acknowledged
/// commit is already durable and [`FlushMode::RoundTrip`] is enough. With
/// `appendfsync everysec` (the default when AOF is on) up to about a second of acknowledged
/// commits can be lost; [`FlushMode::WaitAof`] makes `flush` wait until they are fsynced.
/// Without AOF (RDB snapshots only, or no persistence) nothing the client does makes a
/// commit durable on that server; [`FlushMode::WaitReplicas`] at least waits until replicas
/// hold it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FlushMode {
    /// One `PING` round trip: every earlier command of this store's connection has been
    /// executed. Durable only as far as the server's own persistence settings make it.
    RoundTrip,
    /// `WAIT replicas timeout`: fails (transient) unless at least `replicas` replicas
    /// acknowledged every earlier write of the connection within `timeout`.
    WaitReplicas {
        /// Replicas that must acknowledge.
        replicas: u32,
        /// How long to wait.
        timeout: Duration,
    },
    /// `WAITAOF local replicas timeout` (Redis 7.2+, Valkey 8+): fails (transient) unless the
    /// local AOF (`local = true`) and `replicas` replicas' AOFs fsynced every earlier write.
    WaitAof {
        /// Whether the server's own AOF must be fsynced.
        local: bool,
        /// Replicas whose AOF must be fsynced.
        replicas: u32,
        /// How long to wait.
        timeout: Duration,
    },
}

/// How a [`RedisStore`](crate::RedisStore) connects and what it keeps.
#[derive(Debug, Clone)]
pub struct RedisStoreOptions {
    pub(crate) namespace: String,
    pub(crate) outbox_retention: OutboxRetention,
    pub(crate) change_log_retention: OutboxRetention,
    pub(crate) snapshot_reader_ttl: Duration,
    pub(crate) snapshot_attempts: u32,
    pub(crate) scan_batch: usize,
    pub(crate) flush: FlushMode,
    pub(crate) response_timeout: Duration,
    pub(crate) connection_timeout: Duration,
    pub(crate) reconnect_retries: usize,
}

impl Default for RedisStoreOptions {
    fn default() -> Self {
        RedisStoreOptions {
            namespace: "lr".into(),
            outbox_retention: OutboxRetention::default(),
            change_log_retention: OutboxRetention {
                max_entries: 65_536,
                max_bytes: 256 << 20,
            },
            snapshot_reader_ttl: Duration::from_secs(30),
            snapshot_attempts: 8,
            scan_batch: 1024,
            flush: FlushMode::RoundTrip,
            response_timeout: Duration::from_secs(30),
            connection_timeout: Duration::from_secs(5),
            reconnect_retries: 3,
        }
    }
}

impl RedisStoreOptions {
    /// The defaults: namespace `lr`, 1,024 outbox entries / 64 MiB per query, flush by round
    /// trip.
    pub fn new() -> Self {
        Self::default()
    }

    /// Prefix of every key (default `lr`), so several stores can share one Redis database.
    /// Must be non-empty and hold no `{` or `}`.
    #[must_use]
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// How many committed batches each query's outbox keeps.
    #[must_use]
    pub fn outbox_retention(mut self, retention: OutboxRetention) -> Self {
        self.outbox_retention = retention;
        self
    }

    /// How much of the change log a query keeps while a snapshot of it is being read
    /// (default 65,536 commits / 256 MiB). A snapshot whose scan outlasts this window starts
    /// over; the log exists only while snapshots are read and is dropped by the first commit
    /// after the last reader signed off (or its registration expired).
    #[must_use]
    pub fn change_log_retention(mut self, retention: OutboxRetention) -> Self {
        self.change_log_retention = retention;
        self
    }

    /// How long a snapshot reader's registration ("commits: keep logging for me") lives
    /// without being extended (default 30 s; the scan extends it every third of that). A
    /// reader stalled longer starts over; a reader that died stops costing commits after it.
    #[must_use]
    pub fn snapshot_reader_ttl(mut self, ttl: Duration) -> Self {
        self.snapshot_reader_ttl = ttl;
        self
    }

    /// How many times a snapshot starts over (the query was cleared, or the change log no
    /// longer covered the scan) before it fails with a transient error (default 8).
    #[must_use]
    pub fn snapshot_attempts(mut self, attempts: u32) -> Self {
        self.snapshot_attempts = attempts.max(1);
        self
    }

    /// Rows asked for per `HSCAN` call (default 1,024): what one call costs the server.
    #[must_use]
    pub fn scan_batch(mut self, rows: usize) -> Self {
        self.scan_batch = rows.max(1);
        self
    }

    /// What `flush` waits for (default [`FlushMode::RoundTrip`]).
    #[must_use]
    pub fn flush_mode(mut self, mode: FlushMode) -> Self {
        self.flush = mode;
        self
    }

    /// How long one command may wait for its answer (default 30 s); a timeout is a transient
    /// error.
    #[must_use]
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// Connection attempts (50 ms apart, doubling, at most 1 s) before a call made while the
    /// server is unreachable fails with a transient error (default 3). Calls wait for these
    /// attempts, so keep it small: the runtime retries transient errors with its own backoff,
    /// and a call stuck in reconnects would hold up shutdown. Each later call tries again.
    #[must_use]
    pub fn reconnect_retries(mut self, retries: usize) -> Self {
        self.reconnect_retries = retries;
        self
    }

    /// How long connecting may take (default 5 s).
    #[must_use]
    pub fn connection_timeout(mut self, timeout: Duration) -> Self {
        self.connection_timeout = timeout;
        self
    }
}
