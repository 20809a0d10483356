//! Mapping PostgreSQL client and pool errors onto the store's error classes.

use std::error::Error as _;

use deadpool_postgres::PoolError;
use liveresults_core::{ErrorClass, StoreError};
use tokio_postgres::error::SqlState;

/// Backend name in [`StoreError::Backend`].
pub(crate) const BACKEND: &str = "postgres";

/// The SQLSTATE the store's functions raise for a stored record no valid history produces
/// (a row count that would go negative, an epoch or token counter at `i64::MAX`).
pub(crate) const CORRUPT_STATE: &str = "LR001";

/// Errors of setting a store up, before any database is involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The schema name is not one the store accepts.
    #[error("invalid schema name {name:?}: {reason}")]
    InvalidSchema {
        /// The rejected name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// The connection URL does not parse.
    #[error("invalid PostgreSQL URL: {0}")]
    InvalidUrl(String),
    /// The URL asks for TLS (`sslmode=require`, or a CA file) and this build has none: it
    /// refuses rather than connect in plain text.
    #[error(
        "the PostgreSQL URL asks for TLS ({asked}) but liveresults-postgres was built without \
         its `tls` feature; refusing to connect in plain text"
    )]
    TlsNotBuilt {
        /// What asked for TLS.
        asked: &'static str,
    },
    /// The CA file (`sslrootcert`, `PgStoreOptions::tls_ca_file`) cannot be used.
    #[error("PostgreSQL CA file {path}: {reason}")]
    CaFile {
        /// The file as given.
        path: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// Setting TLS up failed otherwise (no system roots, the provider refused).
    #[error("PostgreSQL TLS: {0}")]
    Tls(String),
}

impl From<ConfigError> for StoreError {
    fn from(err: ConfigError) -> Self {
        permanent(err.to_string())
    }
}

/// SQLSTATE classes and codes that clear up by themselves: lost connections (class 08),
/// serialization failures and deadlocks (40001, 40P01), too many connections or out of
/// memory/disk (class 53), a lock not available (55P03), a statement timeout or cancel
/// (57014), a server shutting down, crashing or starting (57P01-57P03), and a session the
/// server ended for idling in a transaction (25P03: a stalled snapshot reader, who takes a
/// new snapshot).
fn transient_state(code: &SqlState) -> bool {
    let code = code.code();
    code.starts_with("08")
        || code.starts_with("53")
        || matches!(
            code,
            "25P03" | "40001" | "40P01" | "55P03" | "57014" | "57P01" | "57P02" | "57P03"
        )
}

/// Whether a client error clears up by itself: the states above, and errors without a
/// server answer that come from the connection (closed, I/O, timeouts). Anything else — a
/// refused statement, a type mismatch while decoding — is permanent.
pub fn is_transient(err: &tokio_postgres::Error) -> bool {
    if let Some(code) = err.code() {
        return transient_state(code);
    }
    if err.is_closed() {
        return true;
    }
    let mut source = err.source();
    while let Some(cause) = source {
        // A certificate the client rejects (or a handshake the server refuses) stays so:
        // rustls reports it inside an io::Error, which would read as transient below.
        #[cfg(feature = "tls")]
        if cause.is::<rustls::Error>()
            || cause
                .downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::get_ref)
                .is_some_and(|inner| inner.is::<rustls::Error>())
        {
            return false;
        }
        if cause.is::<std::io::Error>() {
            return true;
        }
        source = cause.source();
    }
    // tokio-postgres exposes its error kinds only through the message: these are the kinds
    // Connect, Timeout and Io (the client's wording, see its `error` module).
    let text = err.to_string();
    [
        "error connecting to server",
        "timeout waiting for server",
        "error communicating",
    ]
    .iter()
    .any(|kind| text.starts_with(kind))
}

/// Classifies a client error for the store; the store's own corruption state becomes
/// [`StoreError::Corrupt`].
#[allow(clippy::needless_pass_by_value)] // by value so that `.map_err(from_pg)` reads well
pub(crate) fn from_pg(err: tokio_postgres::Error) -> StoreError {
    if let Some(db) = err.as_db_error() {
        if db.code().code() == CORRUPT_STATE {
            return StoreError::corrupt("PostgreSQL store record", db.message());
        }
    }
    let class = if is_transient(&err) {
        ErrorClass::Transient
    } else {
        ErrorClass::Permanent
    };
    let message = match err.as_db_error() {
        Some(db) => format!("{}: {} ({})", db.severity(), db.message(), db.code().code()),
        None => with_causes(&err),
    };
    StoreError::Backend {
        backend: BACKEND,
        class,
        message,
    }
}

/// The client error with its causes: tokio-postgres prints only its kind ("error performing
/// TLS handshake"), and the cause ("invalid peer certificate: UnknownIssuer") is what tells
/// an operator what to fix.
fn with_causes(err: &tokio_postgres::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let shown = cause.to_string();
        if !text.contains(&shown) {
            text.push_str(": ");
            text.push_str(&shown);
        }
        source = cause.source();
    }
    text
}

/// Like [`from_pg`], naming the query whose record is corrupt.
pub(crate) fn from_pg_for(query_id: &str, err: tokio_postgres::Error) -> StoreError {
    if let Some(db) = err.as_db_error() {
        if db.code().code() == CORRUPT_STATE {
            return StoreError::corrupt_meta(query_id, db.message());
        }
    }
    from_pg(err)
}

/// A pool error: waiting for or creating a connection.
pub(crate) fn from_pool(err: PoolError) -> StoreError {
    match err {
        PoolError::Backend(err) => from_pg(err),
        PoolError::Closed => StoreError::Closed,
        PoolError::Timeout(kind) => {
            transient(format!("no connection from the pool ({kind:?} timed out)"))
        }
        other => permanent(format!("connection pool: {other}")),
    }
}

/// A transient error of this backend with `message`.
pub(crate) fn transient(message: String) -> StoreError {
    StoreError::Backend {
        backend: BACKEND,
        class: ErrorClass::Transient,
        message,
    }
}

/// A permanent error of this backend with `message`.
pub(crate) fn permanent(message: String) -> StoreError {
    StoreError::Backend {
        backend: BACKEND,
        class: ErrorClass::Permanent,
        message,
    }
}
