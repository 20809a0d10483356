//! `PUT` (create or fork), `POST` (append and/or close) and `DELETE`.

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::headers::*;
use super::{content_length, read_body, set, HttpState};
use crate::append::{AppendRequest, AppendStatus};
use crate::create::{CreateRequest, Created, ForkRequest};
use crate::error::StreamError;
use crate::meta::StreamMeta;
use crate::offset::format_offset;

/// Headers every successful write answer carries: the tail, and closure.
fn tail_headers(headers: &mut HeaderMap, meta: &StreamMeta) {
    set(headers, STREAM_NEXT_OFFSET, &format_offset(meta.tail));
    if meta.closed {
        headers.insert(STREAM_CLOSED, HeaderValue::from_static("true"));
    }
}

/// The absolute URL of the request, for `Location` (its scheme is unknown here: behind a TLS
/// terminator it is the one in `X-Forwarded-Proto`).
fn location(headers: &HeaderMap, path: &str) -> Option<String> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let proto = (headers.get("x-forwarded-proto"))
        .and_then(|v| v.to_str().ok())
        .filter(|p| matches!(*p, "http" | "https"))
        .unwrap_or("http");
    Some(format!("{proto}://{host}{path}"))
}

/// The 403 of a create of a new stream when the service holds `max_streams` already (a
/// re-create of an existing name is not refused: it creates nothing). Checked before the body
/// is read; concurrent creates of new names can pass the check together, so the cap can be
/// exceeded by the creates in flight at that moment, never more.
fn beyond_stream_cap(state: &HttpState, name: &str) -> Option<Response> {
    let engine = &state.streams.engine;
    let max = state.streams.config.max_streams;
    if engine.slot(name).is_some() || engine.stream_count() < max {
        return None;
    }
    let detail = format!(
        "the server holds its maximum of {max} streams (--max-streams); stream {name:?} was not \
         created. Delete streams or raise the limit"
    );
    tracing::warn!(
        stream = name,
        max,
        "stream create refused: too many streams"
    );
    Some(super::problem_response(
        StatusCode::FORBIDDEN,
        "too-many-streams",
        &detail,
    ))
}

pub(crate) async fn put(state: &HttpState, request: Request) -> Result<Response, StreamError> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let name = stream_name(&path)?;
    let headers = &parts.headers;
    let (ttl_secs, expires_at_ms) = expiry(headers)?;
    let fork = fork(headers)?.map(|(source, offset, sub_offset)| ForkRequest {
        source,
        offset,
        sub_offset,
    });
    let content_type = text(headers, header::CONTENT_TYPE.as_str())?
        .map(str::trim)
        .filter(|ct| !ct.is_empty())
        .map(str::to_owned);
    if let Some(refused) = beyond_stream_cap(state, name) {
        return Ok(refused);
    }
    let limit = state.streams.config.max_append_bytes;
    let body = read_body(body, content_length(headers), limit).await?;
    let create = CreateRequest {
        content_type,
        ttl_secs,
        expires_at_ms,
        closed: closed(headers),
        body,
        fork,
    };
    let (status, meta) = match state.streams.engine.create(name, create).await? {
        Created::New(meta) => (StatusCode::CREATED, meta),
        Created::Existing(meta) => (StatusCode::OK, meta),
    };
    let mut response = status.into_response();
    let out = response.headers_mut();
    tail_headers(out, &meta);
    set(out, "content-type", &meta.content_type);
    if status == StatusCode::CREATED {
        if let Some(url) = location(headers, &path) {
            set(out, "location", &url);
        }
    }
    Ok(response)
}

/// The 403 of a new producer's first append to a stream that keeps state for
/// `max_producers` producers already (each producer id's state lives as long as the stream,
/// so without a cap a client could grow it without end). Producers the stream knows are never
/// refused. Like the stream cap, checked before the append: new producers appending at the
/// same moment can pass together.
async fn beyond_producer_cap(
    state: &HttpState,
    name: &str,
    producer: &str,
) -> Result<Option<Response>, StreamError> {
    let engine = &state.streams.engine;
    let max = state.streams.config.max_producers;
    let (_, meta) = engine.lookup(name, false).await?;
    if engine.store.producer(meta.id, producer).await?.is_some() {
        return Ok(None);
    }
    match engine.store.producer_count(meta.id, max).await? {
        Some(count) if count >= max => {}
        _ => return Ok(None),
    }
    let detail = format!(
        "stream {name:?} keeps state for its maximum of {max} idempotent producers \
         (--max-stream-producers); the first append of producer {producer:?} was refused and \
         nothing was appended. Reuse a producer id or use another stream"
    );
    tracing::warn!(stream = name, max, "append refused: too many producers");
    Ok(Some(super::problem_response(
        StatusCode::FORBIDDEN,
        "too-many-producers",
        &detail,
    )))
}

pub(crate) async fn post(state: &HttpState, request: Request) -> Result<Response, StreamError> {
    let (parts, body) = request.into_parts();
    let name = stream_name(parts.uri.path())?;
    let headers = &parts.headers;
    let producer = producer(headers)?;
    let stream_seq = stream_seq(headers)?;
    let close = closed(headers);
    let content_type = text(headers, header::CONTENT_TYPE.as_str())?
        .map(str::trim)
        .filter(|ct| !ct.is_empty())
        .map(str::to_owned);
    if let Some(p) = &producer {
        if let Some(refused) = beyond_producer_cap(state, name, &p.id).await? {
            return Ok(refused);
        }
    }
    let limit = state.streams.config.max_append_bytes;
    let body = read_body(body, content_length(headers), limit).await?;
    let append = AppendRequest {
        body,
        content_type,
        close,
        stream_seq,
        producer: producer.clone(),
    };
    let appended = state.streams.engine.append(name, append).await?;
    let status = match (appended.status, &producer) {
        (AppendStatus::Appended, Some(_)) => StatusCode::OK,
        _ => StatusCode::NO_CONTENT,
    };
    let mut response = status.into_response();
    let out = response.headers_mut();
    tail_headers(out, &appended.meta);
    if let Some(state) = appended.producer.filter(|_| producer.is_some()) {
        set(out, PRODUCER_EPOCH, &state.epoch.to_string());
        set(out, PRODUCER_SEQ, &state.last_seq.to_string());
    }
    Ok(response)
}

pub(crate) async fn delete(state: &HttpState, request: Request) -> Result<Response, StreamError> {
    let name = stream_name(request.uri().path())?;
    state.streams.engine.delete(name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
