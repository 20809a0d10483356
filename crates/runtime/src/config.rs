//! Runtime and per-query configuration.

use std::collections::HashMap;
use std::time::Duration;

use liveresults_core::signature::KeyColumns;

/// What a query does when upstream skips sequences (Drasi's recovery policies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecoveryPolicy {
    /// Stop the query with a clear error; other queries go on. Reactions that cannot catch up
    /// from the outbox fail instead of rebuilding.
    #[default]
    Strict,
    /// Clear the query, reset its reactions and ask upstream to re-bootstrap; reactions that
    /// cannot catch up rebuild from a snapshot.
    AutoReset,
    /// Log the gap and carry on from the new sequence.
    AutoSkipGap,
}

/// What `submit` does when a query's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backpressure {
    /// Wait for room: the source slows down to the pipeline's pace.
    #[default]
    Block,
    /// Fail at once with `SubmitError::Overloaded`.
    Reject,
}

/// How one query is processed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryConfig {
    /// Which columns identify a row when upstream gives no signature (default: the whole row).
    pub key_columns: KeyColumns,
    /// Gap handling.
    pub policy: RecoveryPolicy,
}

/// Retry of transient store errors with exponential backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    /// Wait before the second attempt; doubled each time.
    pub initial_backoff: Duration,
    /// Upper bound of one wait.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// 8 attempts, 10 ms doubling up to 1 s.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_secs(1),
        }
    }
}

/// The shortest lease accepted: renewals run every third of it, and a shorter lease would
/// expire between a renewal and the next under ordinary scheduling delays.
pub const MIN_LEASE_TTL: Duration = Duration::from_millis(30);

/// Runtime configuration. Setters take `self` so a configuration reads as one chain.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub(crate) queue_capacity: usize,
    pub(crate) reaction_queue_capacity: usize,
    pub(crate) backpressure: Backpressure,
    pub(crate) group_commit_events: usize,
    pub(crate) group_commit_delay: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) snapshot_chunk_rows: usize,
    pub(crate) default_query: QueryConfig,
    pub(crate) queries: HashMap<String, QueryConfig>,
    pub(crate) host: Option<HostConfig>,
}

/// Who this runtime is among the hosts sharing one store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostIdentity {
    /// A name unique among the hosts sharing the store, and stable across restarts: a host
    /// restarted under the same name takes its queries back at once instead of waiting for
    /// its old leases to expire.
    pub name: String,
    /// Where other hosts' clients can reach this host (its HTTP base URL, say): a client that
    /// writes to the wrong host is told to go there.
    pub address: String,
}

impl HostIdentity {
    /// A host called `name`, reachable at `address`.
    pub fn new(name: impl Into<String>, address: impl Into<String>) -> Self {
        HostIdentity {
            name: name.into(),
            address: address.into(),
        }
    }
}

/// The host identity and the lease length of a runtime that shares its store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostConfig {
    pub(crate) identity: HostIdentity,
    pub(crate) lease_ttl: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            queue_capacity: 1024,
            reaction_queue_capacity: 64,
            backpressure: Backpressure::Block,
            group_commit_events: 256,
            group_commit_delay: Duration::ZERO,
            retry: RetryPolicy::default(),
            snapshot_chunk_rows: 4096,
            default_query: QueryConfig::default(),
            queries: HashMap::new(),
            host: None,
        }
    }
}

impl RuntimeConfig {
    /// Defaults: 1,024 queued events per query, 64 queued commits per reaction, blocking
    /// backpressure, group commit of up to 256 queued events without waiting, default retry,
    /// 4,096-row snapshot chunks, Strict whole-row queries.
    pub fn new() -> Self {
        RuntimeConfig::default()
    }

    /// Events queued per query before backpressure applies (default 1,024).
    #[must_use]
    pub fn queue_capacity(mut self, events: usize) -> Self {
        self.queue_capacity = events.max(1);
        self
    }

    /// Committed changes queued per reaction before the pipelines wait for it (default 64).
    #[must_use]
    pub fn reaction_queue_capacity(mut self, changes: usize) -> Self {
        self.reaction_queue_capacity = changes.max(1);
        self
    }

    /// Block or reject when a query's queue is full (default block).
    #[must_use]
    pub fn backpressure(mut self, policy: Backpressure) -> Self {
        self.backpressure = policy;
        self
    }

    /// Group commit: fold up to `events` consecutive events of one query into one atomic commit,
    /// waiting at most `delay` for more once one has arrived (default 256 events, no wait: only
    /// what is already queued is folded, so an idle query commits immediately).
    #[must_use]
    pub fn group_commit(mut self, events: usize, delay: Duration) -> Self {
        self.group_commit_events = events.max(1);
        self.group_commit_delay = delay;
        self
    }

    /// Retry of transient store errors (default: 8 attempts, 10 ms doubling to 1 s).
    #[must_use]
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Rows per chunk when reactions rebuild from a snapshot (default 4,096).
    #[must_use]
    pub fn snapshot_chunk_rows(mut self, rows: usize) -> Self {
        self.snapshot_chunk_rows = rows.max(1);
        self
    }

    /// The configuration of queries without their own (default: whole-row keys, Strict).
    #[must_use]
    pub fn default_query(mut self, config: QueryConfig) -> Self {
        self.default_query = config;
        self
    }

    /// The configuration of one query.
    #[must_use]
    pub fn query(mut self, query_id: impl Into<String>, config: QueryConfig) -> Self {
        self.queries.insert(query_id.into(), config);
        self
    }

    /// Run as one of several hosts sharing the store: each query is written by one host at a
    /// time, the holder of its lease (`lease_ttl` long, renewed every third of it). Takes
    /// effect only on a store with leases ([`ResultStore::leases`]); a store only one
    /// process opens (RocksDB) needs none and ignores this.
    ///
    /// In this mode a reaction follows the queries this host owns: it is brought up to date
    /// on a query (from its checkpoint, the outbox or a snapshot, per the query's policy)
    /// each time the host takes the query's lease, not at start.
    ///
    /// [`ResultStore::leases`]: liveresults_core::ResultStore::leases
    #[must_use]
    pub fn host(mut self, identity: HostIdentity, lease_ttl: Duration) -> Self {
        self.host = Some(HostConfig {
            identity,
            lease_ttl: lease_ttl.max(MIN_LEASE_TTL),
        });
        self
    }

    /// The configuration in force for `query_id`.
    pub fn query_config(&self, query_id: &str) -> &QueryConfig {
        self.queries.get(query_id).unwrap_or(&self.default_query)
    }
}
