//! Store options.

use std::path::PathBuf;
use std::time::Duration;

use liveresults_core::OutboxRetention;

use crate::error::ConfigError;

/// Longest schema name accepted: the NOTIFY channel `<schema>_notices` must stay within
/// PostgreSQL's 63-byte identifiers.
pub const MAX_SCHEMA_BYTES: usize = 48;

/// How a [`PgStore`](crate::PgStore) connects and what it keeps.
#[derive(Debug, Clone)]
pub struct PgStoreOptions {
    pub(crate) schema: String,
    pub(crate) outbox_retention: OutboxRetention,
    pub(crate) pool_size: usize,
    pub(crate) connect_timeout: Duration,
    pub(crate) wait_timeout: Duration,
    pub(crate) snapshot_idle_timeout: Duration,
    pub(crate) reclaim_batch: u32,
    pub(crate) reclaim_every: Duration,
    pub(crate) tls_ca_file: Option<PathBuf>,
}

impl Default for PgStoreOptions {
    fn default() -> Self {
        PgStoreOptions {
            schema: "liveresults".into(),
            outbox_retention: OutboxRetention::default(),
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
            wait_timeout: Duration::from_secs(30),
            snapshot_idle_timeout: Duration::from_secs(60),
            reclaim_batch: 10_000,
            reclaim_every: Duration::from_secs(30),
            tls_ca_file: None,
        }
    }
}

impl PgStoreOptions {
    /// The defaults: schema `liveresults`, 1,024 outbox entries / 64 MiB per query, 16
    /// pooled connections.
    pub fn new() -> Self {
        Self::default()
    }

    /// The schema holding the store's tables and functions (default `liveresults`; created
    /// if missing), so several stores can share one database. `[a-z_][a-z0-9_]*`, at most
    /// [`MAX_SCHEMA_BYTES`] bytes, not starting with `pg_`.
    #[must_use]
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// How many committed batches each query's outbox keeps (not stored: an open-time
    /// option, as for every backend).
    #[must_use]
    pub fn outbox_retention(mut self, retention: OutboxRetention) -> Self {
        self.outbox_retention = retention;
        self
    }

    /// Most connections this handle opens (default 16, at least 2). A snapshot holds one
    /// while it is read; commits, reads and the reclaimer share the rest. The commit-notice
    /// listener has its own, outside the pool.
    #[must_use]
    pub fn pool_size(mut self, connections: usize) -> Self {
        self.pool_size = connections.max(2);
        self
    }

    /// How long opening a connection may take (default 5 s); a timeout is transient.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a call waits for a free pooled connection (default 30 s); a timeout is
    /// transient.
    #[must_use]
    pub fn wait_timeout(mut self, timeout: Duration) -> Self {
        self.wait_timeout = timeout;
        self
    }

    /// How long a snapshot may sit between two chunk reads (default 60 s). The snapshot's
    /// `REPEATABLE READ` transaction keeps old row versions from being vacuumed while it is
    /// open, so a reader that stalls must not hold it forever: past this, the server ends
    /// the session (`idle_in_transaction_session_timeout`) and the next chunk fails with a
    /// transient error; the reader takes a new snapshot.
    #[must_use]
    pub fn snapshot_idle_timeout(mut self, timeout: Duration) -> Self {
        self.snapshot_idle_timeout = timeout;
        self
    }

    /// Rows the background reclaimer deletes per transaction when it frees a cleared or
    /// removed query's rows (default 10,000), and how often it looks for work left by
    /// other handles or hosts (default 30 s; clears through this handle wake it at once).
    #[must_use]
    pub fn reclaim(mut self, batch_rows: u32, every: Duration) -> Self {
        self.reclaim_batch = batch_rows.max(1);
        self.reclaim_every = every;
        self
    }

    /// The CA certificates (a PEM file) the server's certificate must chain to, instead of
    /// the system's roots; the URL's `sslrootcert=FILE` does the same and this wins over it.
    /// With a CA the certificate is verified under `sslmode=prefer` too (see the crate docs,
    /// "TLS"). Needs the `tls` feature: without it, connecting fails with
    /// [`ConfigError::TlsNotBuilt`].
    #[must_use]
    pub fn tls_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls_ca_file = Some(path.into());
        self
    }
}

/// Rejects schema names the store will not interpolate into SQL.
pub(crate) fn validate_schema(name: &str) -> Result<(), ConfigError> {
    let invalid = |reason| ConfigError::InvalidSchema {
        name: name.chars().take(80).collect(),
        reason,
    };
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return Err(invalid("must not be empty"));
    };
    if name.len() > MAX_SCHEMA_BYTES {
        return Err(invalid("longer than 48 bytes"));
    }
    if !(first.is_ascii_lowercase() || first == '_')
        || !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(invalid("must match [a-z_][a-z0-9_]*"));
    }
    if name.starts_with("pg_") {
        return Err(invalid(
            "names starting with pg_ are reserved by PostgreSQL",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names() {
        for ok in ["liveresults", "_x", "t123_4", &"a".repeat(48)] {
            assert!(validate_schema(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1a", "A", "a-b", "a\"b", "pg_x", "ü", &"a".repeat(49)] {
            assert!(validate_schema(bad).is_err(), "{bad}");
        }
    }
}
