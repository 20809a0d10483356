//! Mapping Redis client errors onto the store's error classes.

use liveresults_core::{ErrorClass, StoreError};
use redis::{RedisError, RetryMethod};

/// Backend name in [`StoreError::Backend`].
pub(crate) const BACKEND: &str = "redis";

/// Server error codes that clear up by themselves: a script running too long (`BUSY`), a
/// server loading its data (`LOADING`), a replica without its primary (`MASTERDOWN`), a
/// cluster in flux (`TRYAGAIN`, `CLUSTERDOWN`), too few replicas for `min-replicas-to-write`
/// (`NOREPLICAS`).
const TRANSIENT_CODES: [&str; 6] = [
    "BUSY",
    "LOADING",
    "MASTERDOWN",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "NOREPLICAS",
];

/// Whether a client error clears up by itself: lost or refused connections, timeouts and the
/// server states above (the caller retries with backoff; a connection manager reconnects
/// meanwhile). Anything else — a script error, a wrong-type key, a refused command — is
/// permanent. Public so that every Redis client in the workspace (the store, the Redis
/// Streams source) classifies errors the same way.
pub fn is_transient(err: &RedisError) -> bool {
    let transient_code = err.code().is_some_and(|c| TRANSIENT_CODES.contains(&c));
    transient_code
        || err.is_io_error()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || !matches!(err.retry_method(), RetryMethod::NoRetry)
}

/// Classifies a client error for the store ([`is_transient`]).
#[allow(clippy::needless_pass_by_value)] // by value so that `.map_err(from_redis)` reads well
pub(crate) fn from_redis(err: RedisError) -> StoreError {
    let class = if is_transient(&err) {
        ErrorClass::Transient
    } else {
        ErrorClass::Permanent
    };
    StoreError::Backend {
        backend: BACKEND,
        class,
        message: err.to_string(),
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
