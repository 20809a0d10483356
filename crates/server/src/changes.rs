//! `GET /queries/{id}/changes?offset=…[&live=long-poll|sse][&cursor=…]`: each query's
//! committed batches as a Durable Streams stream in JSON mode.
//!
//! This module is the HTTP side: parameters, headers, caching, status codes. What a read
//! returns and how a waiter learns of a commit is the `feed` module's, shared with SSE.
//!
//! Every message is one committed outbox entry (see [`crate::render::change`]). A read starts
//! after `offset` and returns at most the configured bytes (`changes_max_bytes`, but always
//! one message) — live reads also at most a batch of entries (`changes_batch`) — with
//! `Stream-Next-Offset` (where the next read starts) and, when it reached the tail,
//! `Stream-Up-To-Date: true`.
//!
//! - **Catch-up** (no `live`): answers at once, everything up to the tail that fits the byte
//!   bound (no entry count: a client in catch-up mode may stop after one response);
//!   `ETag` and `If-None-Match` → 304.
//! - **`live=long-poll`**: at the tail, waits up to the timeout for the next commit, then 204
//!   with the same offset. It subscribes to the query's position *before* reading, so a commit
//!   landing between the read and the wait still wakes it, and it holds nothing of the store
//!   while parked.
//! - **`live=sse`**: see [`crate::sse`].
//!
//! Offsets whose batches have left the outbox, that belong to an older epoch (the query was
//! cleared) or that lie beyond the tail answer 409 `must-refetch` with the current offset: the
//! client must rebuild from the snapshot, whose header names the offset to continue from. An
//! offset of a query that no longer exists (purged: `DELETE ?purge=true`) answers the same
//! 409, and the snapshot then answers 404.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::error::ApiError;
use crate::feed::{cursor, Feed, Read};
use crate::offset::{Offset, Start};
use crate::queries::known_for_feed;
use crate::state::AppState;

/// `Stream-Next-Offset`: where the next read starts.
pub const STREAM_NEXT_OFFSET: HeaderName = HeaderName::from_static("stream-next-offset");
/// `Stream-Up-To-Date`: present (`true`) when the response reached the tail.
pub const STREAM_UP_TO_DATE: HeaderName = HeaderName::from_static("stream-up-to-date");
/// `Stream-Cursor`: the CDN-collapsing cursor of live responses.
pub const STREAM_CURSOR: HeaderName = HeaderName::from_static("stream-cursor");

/// Cache policy of responses that will never change (history before the tail).
const CACHE_HISTORY: &str = "public, max-age=60, stale-while-revalidate=300";
/// Cache policy of responses at the tail: revalidate (ETag) every time.
const CACHE_TAIL: &str = "no-cache";

/// Query parameters of the change feed.
#[derive(Debug, Deserialize)]
pub struct ChangesParams {
    /// Where to start: `-1`, `now`, or an offset from this server (default `-1` for catch-up;
    /// required for live modes).
    pub offset: Option<String>,
    /// `long-poll` or `sse`; absent for catch-up.
    pub live: Option<String>,
    /// The cursor echoed from the previous live response.
    pub cursor: Option<String>,
}

fn header_value(value: &str) -> HeaderValue {
    // Offsets and cursors are ASCII digits, hex and `_`; quoted ETags of them too.
    HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

fn etag_matches(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|candidate| {
            let candidate = candidate.trim();
            candidate == etag || candidate.strip_prefix("W/") == Some(etag)
        })
}

/// A 200 (or 304) with the read's messages as a JSON array.
fn data_response(
    read: &Read,
    etag: Option<String>,
    cursor: Option<String>,
    request: &HeaderMap,
) -> Response {
    let not_modified = etag.as_deref().is_some_and(|e| etag_matches(request, e));
    let mut response = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let body = read.json_array();
        let mut r = (StatusCode::OK, body).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r
    };
    let headers = response.headers_mut();
    headers.insert(STREAM_NEXT_OFFSET, header_value(&read.next.to_string()));
    if read.up_to_date {
        headers.insert(STREAM_UP_TO_DATE, HeaderValue::from_static("true"));
    }
    if let Some(etag) = etag {
        headers.insert(header::ETAG, header_value(&etag));
    }
    if let Some(cursor) = cursor {
        headers.insert(STREAM_CURSOR, header_value(&cursor));
    }
    let cache = if read.up_to_date {
        CACHE_TAIL
    } else {
        CACHE_HISTORY
    };
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// The long-poll answer when nothing was committed in time: 204 at the same offset.
fn no_content(next: Offset, cursor: &str) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert(STREAM_NEXT_OFFSET, header_value(&next.to_string()));
    headers.insert(STREAM_UP_TO_DATE, HeaderValue::from_static("true"));
    headers.insert(STREAM_CURSOR, header_value(cursor));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn etag(start: &str, next: Offset) -> String {
    format!("\"{start}:{next}\"")
}

/// The change-feed handler.
pub async fn changes(
    State(state): State<AppState>,
    Path(query_id): Path<String>,
    Query(params): Query<ChangesParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let live = params.live.as_deref();
    let raw = match (params.offset.as_deref(), live) {
        (Some(raw), _) => raw,
        (None, None) => "-1",
        (None, Some(mode)) => {
            return Err(ApiError::BadRequest {
                detail: format!("the offset parameter is required with live={mode}"),
            })
        }
    };
    let start = Start::parse(raw).map_err(|e| ApiError::BadRequest {
        detail: e.to_string(),
    })?;
    match live {
        None => {
            known_for_feed(&state, &query_id, start).await?;
            let inner = &*state.inner;
            // Catch-up is sized by the byte bound alone: a client reading with `live: false`
            // (the official client's catch-up mode) stops after one response whether or not
            // it says `Stream-Up-To-Date`, so a response cut at a commit count would end its
            // read silently short of the tail.
            let read = Feed::new(
                &inner.runtime,
                &query_id,
                usize::MAX,
                inner.changes_max_bytes,
            )
            .read(start)
            .await?;
            let etag = (start != Start::Now).then(|| etag(raw, read.next));
            Ok(data_response(&read, etag, None, &headers))
        }
        Some("long-poll") => {
            long_poll(
                &state,
                &query_id,
                start,
                raw,
                params.cursor.as_deref(),
                &headers,
            )
            .await
        }
        Some("sse") => crate::sse::sse(state, query_id, start, params.cursor).await,
        Some(other) => Err(ApiError::BadRequest {
            detail: format!("unsupported live mode {other:?}: use long-poll or sse"),
        }),
    }
}

async fn long_poll(
    state: &AppState,
    query_id: &str,
    start: Start,
    raw: &str,
    client_cursor: Option<&str>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let inner = &*state.inner;
    known_for_feed(state, query_id, start).await?;
    let feed = Feed::new(
        &inner.runtime,
        query_id,
        inner.changes_batch,
        inner.changes_max_bytes,
    );
    let mut position = feed.subscribe();
    let first = feed.read(start).await?;
    if !first.messages.is_empty() {
        let etag = etag(raw, first.next);
        return Ok(data_response(
            &first,
            Some(etag),
            Some(cursor(client_cursor)),
            headers,
        ));
    }
    let tail = first.next;
    let _parked = inner.metrics.long_poll();
    let deadline = crate::limits::deadline_after(inner.long_poll_timeout);
    let stop = async {
        tokio::select! {
            () = inner.shutdown.cancelled() => {}
            () = tokio::time::sleep_until(deadline) => {}
        }
    };
    match feed.next_commit(&mut position, tail, stop).await? {
        Some(read) => {
            let etag = etag(&tail.to_string(), read.next);
            Ok(data_response(
                &read,
                Some(etag),
                Some(cursor(client_cursor)),
                headers,
            ))
        }
        None => Ok(no_content(tail, &cursor(client_cursor))),
    }
}
