//! `GET` (catch-up and long-poll; SSE is in [`super::sse`]) and `HEAD`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::fanout::Rendered;
use super::headers::*;
use super::{set, HttpState};
use crate::engine::Slot;
use crate::error::StreamError;
use crate::meta::StreamMeta;
use crate::offset::{format_offset, Start};
use crate::read::{wait_past, Chunk, Waited};
use crate::time::{format_rfc3339, now_ms};

/// Cache policy of immutable history (a chunk that ends before the tail never changes).
pub(crate) const CACHE_HISTORY: &str = "private, max-age=60, stale-while-revalidate=300";
/// Cache policy of answers that reach the tail (the next request may see more).
pub(crate) const CACHE_TAIL: &str = "no-cache";
/// Cache policy of answers naming the current tail only (`offset=now`, HEAD, 204s).
const CACHE_NONE: &str = "no-store";

/// Start of the cursor clock (2024-10-09T00:00:00Z) and its interval, as the protocol sets.
const CURSOR_EPOCH_SECS: u64 = 1_728_432_000;
const CURSOR_INTERVAL_SECS: u64 = 20;

/// The cursor of a live response: the current 20-second interval, or — when the client's
/// cursor is not behind it — the client's plus a jitter of 1 to 180 intervals, so a cursor
/// never repeats and cached empty answers cannot loop (the protocol's §10.1).
pub(crate) fn cursor(client: Option<u64>) -> u64 {
    let now = now_ms();
    let interval = (now / 1000).saturating_sub(CURSOR_EPOCH_SECS) / CURSOR_INTERVAL_SECS;
    match client {
        Some(c) if c >= interval => {
            // Jitter from the clock's low bits: unpredictable enough to spread clients.
            let jitter = (now ^ (now >> 7)) % (3600 / CURSOR_INTERVAL_SECS) + 1;
            c.saturating_add(jitter)
        }
        _ => interval,
    }
}

/// Whether the stream's content type is sent as text in SSE (`text/*`, `application/json`).
pub(crate) fn is_text(content_type: &str) -> bool {
    let media = crate::meta::media_type(content_type).to_ascii_lowercase();
    media.starts_with("text/") || media == "application/json"
}

/// A position for `start` in `meta`; 400 beyond the tail.
pub(crate) fn resolve(meta: &StreamMeta, start: Start) -> Result<u64, StreamError> {
    match start {
        Start::Beginning => Ok(0),
        Start::Now => Ok(meta.tail),
        Start::At(p) if p <= meta.tail => Ok(p),
        Start::At(_) => Err(StreamError::BadRequest(format!(
            "the offset is past the stream's tail ({})",
            format_offset(meta.tail)
        ))),
    }
}

/// The body of a chunk: JSON streams as one array, others as the bytes.
pub(crate) fn body_bytes(chunk: &Chunk) -> Bytes {
    if chunk.meta.is_json() {
        crate::json::render(&chunk.parts)
    } else if chunk.parts.len() == 1 {
        chunk.parts[0].clone()
    } else {
        let mut out = Vec::with_capacity(chunk.parts.iter().map(Bytes::len).sum());
        for part in &chunk.parts {
            out.extend_from_slice(part);
        }
        Bytes::from(out)
    }
}

pub(crate) fn etag(chunk: &Chunk) -> String {
    let closed = if chunk.closed() { ":c" } else { "" };
    format!(
        "\"{}:{}:{}{closed}\"",
        chunk.meta.id, chunk.from, chunk.next
    )
}

fn matches_etag(headers: &HeaderMap, etag: &str) -> bool {
    let Some(value) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    value
        .split(',')
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == etag || t == "*")
}

/// The headers of a read answer: offset, up-to-date, closure.
fn position_headers(h: &mut HeaderMap, next: u64, up_to_date: bool, closed: bool) {
    set(h, STREAM_NEXT_OFFSET, &format_offset(next));
    if up_to_date {
        h.insert(STREAM_UP_TO_DATE, HeaderValue::from_static("true"));
    }
    if closed {
        h.insert(STREAM_CLOSED, HeaderValue::from_static("true"));
    }
}

/// A 200 with a chunk.
fn chunk_response(chunk: &Chunk, request: &HeaderMap, now: bool, cursor: Option<u64>) -> Response {
    let tag = etag(chunk);
    let cacheable = !now && !chunk.up_to_date();
    let mut response = if !now && matches_etag(request, &tag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let body = if now && chunk.meta.is_json() {
            Bytes::from_static(b"[]")
        } else {
            body_bytes(chunk)
        };
        (StatusCode::OK, Body::from(body)).into_response()
    };
    let h = response.headers_mut();
    set(h, "content-type", &chunk.meta.content_type);
    position_headers(h, chunk.next, chunk.up_to_date(), chunk.closed());
    if !now {
        set(h, "etag", &tag);
    }
    let cache = match (now, cacheable) {
        (true, _) => CACHE_NONE,
        (false, true) => CACHE_HISTORY,
        (false, false) => CACHE_TAIL,
    };
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Some(c) = cursor.filter(|_| !chunk.closed()) {
        set(h, STREAM_CURSOR, &c.to_string());
    }
    response
}

/// A 204 of a long-poll that found nothing (or a closed stream at its tail).
fn empty_poll(meta: &StreamMeta, position: u64, client_cursor: Option<u64>) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let h = response.headers_mut();
    let closed = meta.closed && position >= meta.tail;
    position_headers(h, position, true, closed);
    if !closed {
        set(h, STREAM_CURSOR, &cursor(client_cursor).to_string());
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(CACHE_NONE));
    response
}

pub(crate) async fn get(state: &HttpState, request: Request) -> Result<Response, StreamError> {
    let name = stream_name(request.uri().path())?.to_owned();
    let query = read_query(request.uri().query())?;
    let (slot, meta) = state.streams.engine.lookup(&name, true).await?;
    let position = resolve(&meta, query.start)?;
    match query.live {
        Live::Sse => Ok(super::sse::response(
            state,
            &slot,
            &meta,
            position,
            query.cursor,
        )),
        Live::No => {
            let now = query.start == Start::Now;
            let max = if now {
                0
            } else {
                state.streams.config.max_read_bytes
            };
            let chunk = if now {
                Chunk {
                    meta: Arc::clone(&meta),
                    from: position,
                    next: position,
                    parts: Vec::new(),
                }
            } else {
                state
                    .streams
                    .engine
                    .read_chunk(&meta, position, max)
                    .await?
            };
            Ok(chunk_response(&chunk, request.headers(), now, None))
        }
        Live::LongPoll => long_poll(state, &slot, meta, position, query.cursor).await,
    }
}

async fn long_poll(
    state: &HttpState,
    slot: &Slot,
    meta: Arc<StreamMeta>,
    position: u64,
    client_cursor: Option<u64>,
) -> Result<Response, StreamError> {
    let config = &state.streams.config;
    let mut rx = slot.subscribe();
    let meta = if position < meta.tail || meta.closed {
        meta
    } else {
        match wait_past(&mut rx, position, config.long_poll_timeout, &state.shutdown).await {
            Waited::Ready(meta) => meta,
            Waited::TimedOut(meta) => return Ok(empty_poll(&meta, position, client_cursor)),
            Waited::Shutdown => return Ok(empty_poll(&meta, position, client_cursor)),
            Waited::Removed { gone: true } => return Err(StreamError::Gone(slot.name.clone())),
            Waited::Removed { gone: false } => {
                return Err(StreamError::NotFound(slot.name.clone()))
            }
        }
    };
    if position >= meta.tail {
        return Ok(empty_poll(&meta, position, client_cursor));
    }
    // A long-poll answers with data that was not there when it asked (it waited, or was
    // behind): the client's If-None-Match cannot match it, so never a 304. Readers woken by
    // the same commit share one read and rendering.
    let cursor = cursor(client_cursor);
    if let Some(rendered) = state.fanout.get(&meta, position) {
        return Ok(rendered.response(cursor));
    }
    let chunk = (state.streams.engine)
        .read_chunk(&meta, position, config.max_read_bytes)
        .await?;
    let rendered = Arc::new(Rendered::new(&meta, position, &chunk));
    state.fanout.keep(Arc::clone(&rendered));
    Ok(rendered.response(cursor))
}

pub(crate) async fn head(state: &HttpState, request: Request) -> Result<Response, StreamError> {
    let name = stream_name(request.uri().path())?;
    let (_, meta) = state.streams.engine.lookup(name, false).await?;
    let mut response = StatusCode::OK.into_response();
    let h = response.headers_mut();
    set(h, "content-type", &meta.content_type);
    set(h, STREAM_NEXT_OFFSET, &format_offset(meta.tail));
    if let Some(ttl) = meta.ttl_secs {
        set(h, STREAM_TTL, &ttl.to_string());
    }
    if let Some(at) = meta.expires_at_ms {
        set(h, STREAM_EXPIRES_AT, &format_rfc3339(at));
    }
    if meta.closed {
        h.insert(STREAM_CLOSED, HeaderValue::from_static("true"));
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(CACHE_NONE));
    Ok(response)
}
