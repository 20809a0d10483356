//! Limits that keep one client (or many) from exhausting the server: header and body read
//! timeouts, a connection cap, a cap on the number of queries and on the query id length.
//!
//! The timeouts and the connection cap are applied where connections are served
//! ([`crate::connections`]); the query caps by the [`admit`] middleware, before the ingest
//! handler runs, so a refused request stores nothing (not even a status entry).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use tokio::time::Instant;

use crate::problem::problem;
use crate::state::AppState;

/// Default time a client gets to send a request's headers (the whole head, from the first
/// poll of the connection): a client trickling bytes is cut off after it.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default longest pause between two pieces of a request body. Idle time, not total: a
/// 1 GiB ingest that keeps sending is never cut off.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Default number of connections served at once; more wait in the listen backlog.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default number of queries the server holds (each costs memory for its status and
/// pipeline even when idle).
pub const DEFAULT_MAX_QUERIES: usize = 10_000;
/// Default longest query id in bytes (after percent-decoding).
pub const DEFAULT_MAX_QUERY_ID_BYTES: usize = 256;
/// Longest duration any timeout may be set to: one day. Larger values are clamped, so no
/// `Instant + Duration` can overflow however a setter is called.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);
/// Most connections that may be configured (the cap is a semaphore of this many permits).
pub const MAX_CONNECTIONS: usize = 1 << 20;

/// The limits, as [`crate::AppState`] holds them.
#[derive(Clone, Debug)]
pub(crate) struct Limits {
    pub(crate) header_read_timeout: Duration,
    pub(crate) body_read_timeout: Duration,
    pub(crate) max_connections: usize,
    pub(crate) max_queries: usize,
    pub(crate) max_query_id_bytes: usize,
    /// New query ids whose first ingest is in flight: counted against `max_queries` until
    /// the runtime knows them, so concurrent first writes cannot pass the cap together.
    pub(crate) admitting: Arc<Mutex<HashSet<String>>>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_queries: DEFAULT_MAX_QUERIES,
            max_query_id_bytes: DEFAULT_MAX_QUERY_ID_BYTES,
            admitting: Arc::default(),
        }
    }
}

/// `duration` clamped to [`MAX_DURATION`].
pub(crate) fn clamp_duration(duration: Duration) -> Duration {
    duration.min(MAX_DURATION)
}

/// `now + after`, or `now +` [`MAX_DURATION`] when `after` is longer: a deadline that cannot
/// overflow whatever duration it is given.
pub(crate) fn deadline_after(after: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(after)
        .or_else(|| now.checked_add(MAX_DURATION))
        .unwrap_or(now)
}

/// The query id of a `/queries/{id}...` path, percent-decoded (raw bytes: the handler judges
/// UTF-8), or `None` for other paths.
fn query_id(path: &str) -> Option<Vec<u8>> {
    let rest = path.strip_prefix("/queries/")?;
    let raw = rest.split('/').next().unwrap_or_default().as_bytes();
    let mut id = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        let hex = raw.get(i.saturating_add(1)..i.saturating_add(3));
        let decoded = hex
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b, decoded) {
            (b'%', Some(byte)) => {
                id.push(byte);
                i = i.saturating_add(3);
            }
            _ => {
                id.push(b);
                i = i.saturating_add(1);
            }
        }
    }
    Some(id)
}

/// Removes an admitted id from the in-flight set when its first request ends, however it ends.
struct Admitted {
    set: Arc<Mutex<HashSet<String>>>,
    id: String,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut set = self.set.lock().unwrap_or_else(PoisonError::into_inner);
        set.remove(&self.id);
    }
}

/// The middleware: refuses query ids longer than the limit (400) on every `/queries/{id}`
/// route, and a first write to a new query when the server already holds `max_queries`
/// (403); either way before the handler runs, so nothing is stored.
pub(crate) async fn admit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limits = &state.inner.limits;
    let Some(id) = query_id(request.uri().path()) else {
        return next.run(request).await;
    };
    if id.len() > limits.max_query_id_bytes {
        return problem(
            StatusCode::BAD_REQUEST,
            "query-id-too-long",
            "Query id too long",
            format!(
                "the query id is {} bytes; the limit is {} (--max-query-id-bytes)",
                id.len(),
                limits.max_query_id_bytes
            ),
        );
    }
    let ingest = request.method() == Method::POST && request.uri().path().ends_with("/events");
    let Ok(id) = String::from_utf8(id) else {
        return next.run(request).await; // the handler refuses it without storing anything
    };
    if !ingest || state.inner.runtime.status(&id).is_some() {
        return next.run(request).await;
    }
    let admitted = {
        let mut set = limits
            .admitting
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let known = state.inner.runtime.statuses().len();
        let held = known.saturating_add(set.len());
        if !set.contains(&id) && held >= limits.max_queries {
            drop(set);
            return problem(
                StatusCode::FORBIDDEN,
                "query-limit",
                "Too many queries",
                format!(
                    "the server holds {known} queries, its limit (--max-queries {}); \
                     raise the limit to add more",
                    limits.max_queries
                ),
            );
        }
        set.insert(id.clone());
        Admitted {
            set: Arc::clone(&limits.admitting),
            id,
        }
    };
    let response = next.run(request).await;
    drop(admitted);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_ids_are_percent_decoded() {
        assert_eq!(query_id("/queries/a%2Fb/events"), Some(b"a/b".to_vec()));
        assert_eq!(query_id("/queries/%zz"), Some(b"%zz".to_vec()));
        assert_eq!(
            query_id("/queries/%e2%82%ac"),
            Some("€".as_bytes().to_vec())
        );
        assert_eq!(query_id("/metrics"), None);
    }

    #[test]
    fn deadlines_never_overflow() {
        let far = deadline_after(Duration::MAX);
        assert!(far > Instant::now());
        assert_eq!(clamp_duration(Duration::MAX), MAX_DURATION);
    }
}
