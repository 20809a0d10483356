//! `GET /queries/{id}/changes?offset=…[&live=long-poll|sse][&cursor=…]`: each query's
//! committed batches as a Durable Streams stream in JSON mode.
//!
//! Every message is one committed outbox entry (see [`crate::render::change`]). A read starts
//! after `offset` and returns at most a batch of entries with `Stream-Next-Offset` (where the
//! next read starts) and, when it reached the tail, `Stream-Up-To-Date: true`.
//!
//! - **Catch-up** (no `live`): answers at once; `ETag` and `If-None-Match` → 304.
//! - **`live=long-poll`**: at the tail, waits up to the timeout for the next commit, then 204
//!   with the same offset. It subscribes to the query's position *before* reading, so a commit
//!   landing between the read and the wait still wakes it, and it holds nothing of the store
//!   while parked.
//! - **`live=sse`**: see [`crate::sse`].
//!
//! Offsets whose batches have left the outbox, that belong to an older epoch (the query was
//! cleared) or that lie beyond the tail answer 409 `must-refetch` with the current offset: the
//! client must rebuild from the snapshot, whose header names the offset to continue from.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use liveresults_core::StoreError;
use liveresults_runtime::CommittedChange;
use serde::Deserialize;
use serde_json::Value as Json;
use tokio::time::Instant;

use crate::error::ApiError;
use crate::offset::{Offset, Start};
use crate::queries::known_info;
use crate::render;
use crate::state::{AppState, Inner};

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
/// Start of cursor time (2024-10-09T00:00:00Z), as the protocol defines it.
const CURSOR_EPOCH_UNIX_SECS: u64 = 1_728_432_000;
/// Length of one cursor interval.
const CURSOR_INTERVAL_SECS: u64 = 20;
/// Largest jitter added to a cursor a client echoes from the future.
const CURSOR_MAX_JITTER_SECS: u64 = 3600;
/// Reads retried when a clear races one (the epoch changed between its two halves).
const READ_ATTEMPTS: usize = 3;

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

/// One read of the feed.
#[derive(Debug)]
pub(crate) struct Read {
    /// Rendered messages, oldest first.
    pub(crate) messages: Vec<Json>,
    /// Where the next read starts.
    pub(crate) next: Offset,
    /// Whether `next` is the query's tail.
    pub(crate) up_to_date: bool,
}

fn must_refetch(detail: String, tail: Offset) -> ApiError {
    ApiError::MustRefetch {
        detail,
        offset: tail.to_string(),
    }
}

/// Reads up to a batch of committed entries after `start`.
pub(crate) async fn read(inner: &Inner, query_id: &str, start: Start) -> Result<Read, ApiError> {
    let store = inner.runtime.store();
    for _ in 0..READ_ATTEMPTS {
        let info = store.query_info(query_id).await?;
        let tail = Offset::tail(&info);
        let at_tail = Read {
            messages: Vec::new(),
            next: tail,
            up_to_date: true,
        };
        let after = match start {
            Start::Now => return Ok(at_tail),
            Start::Beginning => None,
            Start::At(offset) if offset.epoch != info.epoch => {
                return Err(must_refetch(
                    format!(
                        "offset {offset} belongs to epoch {} of query {query_id:?}, which was \
                         cleared since (epoch {})",
                        offset.epoch, info.epoch
                    ),
                    tail,
                ))
            }
            Start::At(offset) if offset > tail => {
                return Err(must_refetch(
                    format!("offset {offset} is beyond the tail {tail} of query {query_id:?}"),
                    tail,
                ))
            }
            Start::At(offset) if offset == tail => return Ok(at_tail),
            Start::At(offset) => offset.sequence,
        };
        let entries = match store
            .read_outbox(query_id, after, inner.changes_batch)
            .await
        {
            Ok(entries) => entries,
            Err(StoreError::OutboxGap {
                evicted_through, ..
            }) => {
                return Err(must_refetch(
                    format!(
                        "the outbox of query {query_id:?} no longer holds the batches after this \
                         offset (evicted through sequence {evicted_through})"
                    ),
                    tail,
                ))
            }
            Err(e) => return Err(e.into()),
        };
        let now = store.query_info(query_id).await?;
        if now.epoch != info.epoch {
            continue; // cleared while reading: the entries may belong to the new epoch
        }
        let last = entries.last().map(|entry| entry.span.last);
        let messages = render_entries(query_id, info.epoch, entries).await?;
        let next = match (last, start) {
            (Some(last), _) => Offset {
                epoch: info.epoch,
                sequence: Some(last),
            },
            (None, Start::At(offset)) => offset,
            (None, _) => tail,
        };
        return Ok(Read {
            messages,
            next,
            up_to_date: next >= Offset::tail(&now),
        });
    }
    Err(ApiError::Internal(format!(
        "query {query_id:?} was cleared {READ_ATTEMPTS} times while being read"
    )))
}

/// Decodes and renders outbox entries on the blocking pool: up to a response's worth of
/// batches is CPU work that would otherwise stall every request sharing the executor thread.
async fn render_entries(
    query_id: &str,
    epoch: u64,
    entries: Vec<liveresults_core::OutboxEntry>,
) -> Result<Vec<serde_json::Value>, ApiError> {
    let query_id = query_id.to_owned();
    let rendered = tokio::task::spawn_blocking(move || {
        entries
            .iter()
            .map(|entry| {
                CommittedChange::from_outbox(&query_id, epoch, entry).map(|c| render::change(&c))
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| ApiError::Internal(format!("rendering task failed: {e}")))?;
    Ok(rendered?)
}

/// The long-poll cursor: the current 20-second interval number, or — when the client echoes a
/// cursor at or past it — the client's cursor plus jitter, so cursors only move forward and
/// cached empty responses cannot loop.
pub(crate) fn cursor(client: Option<&str>) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let current = now.as_secs().saturating_sub(CURSOR_EPOCH_UNIX_SECS) / CURSOR_INTERVAL_SECS;
    match client.and_then(|c| c.parse::<u64>().ok()) {
        Some(echoed) if echoed >= current => {
            // Sub-second clock bits are random enough to spread clients apart.
            let jitter_secs = 1 + u64::from(now.subsec_nanos()) % CURSOR_MAX_JITTER_SECS;
            let jitter = (jitter_secs / CURSOR_INTERVAL_SECS).max(1);
            echoed.saturating_add(jitter).to_string()
        }
        _ => current.to_string(),
    }
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
    read: Read,
    etag: Option<String>,
    cursor: Option<String>,
    request: &HeaderMap,
) -> Response {
    let not_modified = etag.as_deref().is_some_and(|e| etag_matches(request, e));
    let mut response = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let body = Json::Array(read.messages).to_string();
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
fn no_content(next: Offset, cursor: String) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert(STREAM_NEXT_OFFSET, header_value(&next.to_string()));
    headers.insert(STREAM_UP_TO_DATE, HeaderValue::from_static("true"));
    headers.insert(STREAM_CURSOR, header_value(&cursor));
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
            known_info(&state, &query_id).await?;
            let read = read(&state.inner, &query_id, start).await?;
            let etag = (start != Start::Now).then(|| etag(raw, read.next));
            Ok(data_response(read, etag, None, &headers))
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
    known_info(state, query_id).await?;
    // Subscribe BEFORE reading: a commit landing after the read still marks `position`.
    let mut position = inner.runtime.watch(query_id);
    let first = read(inner, query_id, start).await?;
    if !first.messages.is_empty() {
        let etag = etag(raw, first.next);
        return Ok(data_response(
            first,
            Some(etag),
            Some(cursor(client_cursor)),
            headers,
        ));
    }
    let tail = first.next;
    let _parked = inner.metrics.long_poll();
    let deadline = Instant::now() + inner.long_poll_timeout;
    loop {
        tokio::select! {
            biased;
            () = inner.shutdown.cancelled() => return Ok(no_content(tail, cursor(client_cursor))),
            () = tokio::time::sleep_until(deadline) => return Ok(no_content(tail, cursor(client_cursor))),
            changed = position.changed() => {
                if changed.is_err() {
                    return Ok(no_content(tail, cursor(client_cursor)));
                }
            }
        }
        let read = read(inner, query_id, Start::At(tail)).await?;
        if !read.messages.is_empty() {
            let etag = etag(&tail.to_string(), read.next);
            return Ok(data_response(
                read,
                Some(etag),
                Some(cursor(client_cursor)),
                headers,
            ));
        }
    }
}
