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

/// Classifies a client error: lost or refused connections, timeouts and the server states
/// above are transient (the runtime retries them with backoff; the connection manager
/// reconnects meanwhile); anything else — a script error, a wrong-type key, a refused
/// command — is permanent.
#[allow(clippy::needless_pass_by_value)] // by value so that `.map_err(from_redis)` reads well
pub(crate) fn from_redis(err: RedisError) -> StoreError {
    let transient_code = err.code().is_some_and(|c| TRANSIENT_CODES.contains(&c));
    let class = if transient_code
        || err.is_io_error()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || !matches!(err.retry_method(), RetryMethod::NoRetry)
    {
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
