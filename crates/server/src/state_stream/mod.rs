//! Query results as read-only Durable Streams in the State Protocol format
//! (`@durable-streams/state`): `GET`/`HEAD /v1/stream/queries/{id}`, catch-up, long-poll and
//! SSE, JSON mode. See [`log`] for what the stream holds.
//!
//! A snapshot is streamed chunk by chunk from the store's point-in-time view (a response body
//! or one SSE data event of any size, never held whole); change responses hold at most the
//! configured change-feed byte budget. A catch-up or long-poll response holding a snapshot
//! also carries the changes committed after it, up to that budget, and a change response as
//! many commits as the budget takes (no count): the official client reading with
//! `live: false` stops after one response, whatever `Stream-Up-To-Date` says. Writes answer
//! 405: a query's stream changes only through ingest.

mod log;
mod sse;
#[cfg(test)]
mod tests;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{stream, StreamExt};
use liveresults_core::Snapshot;
use liveresults_streams::http::headers::{STREAM_CURSOR, STREAM_NEXT_OFFSET, STREAM_UP_TO_DATE};

use crate::feed::cursor;
use crate::problem::problem;
use crate::queries::known_info;
use crate::state::AppState;
use log::{control, snapshot_messages, Found, From, LogError, QueryOffset};

/// The path prefix of query streams.
pub(crate) const PREFIX: &str = "/v1/stream/queries/";

/// The query id of a request path, percent-decoded.
fn query_id(path: &str) -> Option<String> {
    let raw = path.strip_prefix(PREFIX)?.as_bytes();
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        let hex = raw
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (b, hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok().filter(|id| !id.is_empty())
}

fn bad_request(detail: impl Into<String>) -> Response {
    problem(
        StatusCode::BAD_REQUEST,
        "bad-request",
        "Bad request",
        detail,
    )
}

fn failed(error: &LogError) -> Response {
    tracing::warn!(error = %error, "query stream read failed");
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "store-unavailable",
        "Store unavailable",
        error.to_string(),
    )
}

/// The query stream route: `GET` and `HEAD`; anything else is 405.
pub(crate) async fn handle(State(state): State<AppState>, request: Request) -> Response {
    let Some(query_id) = query_id(request.uri().path()) else {
        return bad_request("the query id is not valid UTF-8");
    };
    let max_id = state.inner.limits.max_query_id_bytes;
    if query_id.len() > max_id {
        return bad_request(format!(
            "the query id is {} bytes; the limit is {max_id} (--max-query-id-bytes)",
            query_id.len()
        ));
    }
    let method = request.method().clone();
    if method != Method::GET && method != Method::HEAD {
        let mut response = problem(
            StatusCode::METHOD_NOT_ALLOWED,
            "read-only-stream",
            "Read-only stream",
            format!(
                "{method}: a query's stream is read-only; it changes through \
                 POST /queries/{{id}}/events"
            ),
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let info = match known_info(&state, &query_id).await {
        Ok(info) => info,
        Err(e) => return e.into_response(),
    };
    if method == Method::HEAD {
        let mut response = StatusCode::OK.into_response();
        let h = response.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        set(h, STREAM_NEXT_OFFSET, &QueryOffset::tail(&info).to_string());
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return response;
    }
    let query = match parse_query(request.uri().query()) {
        Ok(query) => query,
        Err(detail) => return bad_request(detail),
    };
    match query.live {
        Live::Sse => sse::response(state, query_id, query.from, query.cursor),
        Live::No | Live::LongPoll => get(state, query_id, query).await,
    }
}

fn set(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Live {
    No,
    LongPoll,
    Sse,
}

struct Query {
    from: From,
    live: Live,
    cursor: Option<String>,
}

fn parse_query(query: Option<&str>) -> Result<Query, String> {
    let (mut offset, mut live, mut cursor) = (None, Live::No, None);
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "offset" if offset.is_some() => return Err("offset is given more than once".into()),
            "offset" => {
                offset = Some(match value {
                    "-1" => From::Beginning,
                    "now" => From::Now,
                    other => From::At(QueryOffset::parse(other).ok_or_else(|| {
                        format!("{other:?} is not an offset: expected -1, now or a returned offset")
                    })?),
                });
            }
            "live" => {
                live = match value {
                    "long-poll" => Live::LongPoll,
                    "sse" => Live::Sse,
                    "" | "false" => Live::No,
                    other => return Err(format!("live={other:?}: expected long-poll or sse")),
                }
            }
            "cursor" => cursor = Some(value.to_owned()),
            _ => {}
        }
    }
    if live != Live::No && offset.is_none() {
        return Err("live reads need an offset (-1 for the beginning)".into());
    }
    Ok(Query {
        from: offset.unwrap_or(From::Beginning),
        live,
        cursor,
    })
}

/// A JSON-array response of `messages`.
fn messages_response(messages: &[String], next: QueryOffset, up_to_date: bool) -> Response {
    let mut body = String::with_capacity(messages.iter().map(|m| m.len() + 1).sum::<usize>() + 2);
    body.push('[');
    for (i, message) in messages.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(message);
    }
    body.push(']');
    let mut response = (StatusCode::OK, body).into_response();
    position_headers(response.headers_mut(), next, up_to_date);
    response
}

fn position_headers(h: &mut HeaderMap, next: QueryOffset, up_to_date: bool) {
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    set(h, STREAM_NEXT_OFFSET, &next.to_string());
    if up_to_date {
        h.insert(STREAM_UP_TO_DATE, HeaderValue::from_static("true"));
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
}

/// The messages of a snapshot as a body stream: `[`, a `reset` when asked, `snapshot-start`,
/// one `insert` per row, `snapshot-end`, `]`; each item is `separator ++ message`.
pub(crate) fn snapshot_items(
    query_id: String,
    snapshot: Snapshot,
    reset: bool,
) -> impl futures_util::Stream<Item = Result<Vec<String>, LogError>> + Send {
    let at = QueryOffset::tail(snapshot.info());
    let mut head = Vec::new();
    if reset {
        head.push(control("reset", at));
    }
    head.push(control("snapshot-start", at));
    let head = stream::once(async move { Ok(head) });
    let rows = stream::try_unfold(
        (snapshot, query_id),
        |(mut snapshot, query_id)| async move {
            let Some(chunk) = snapshot.next_chunk().await? else {
                return Ok(None);
            };
            let messages = snapshot_messages(&query_id, chunk).await?;
            Ok(Some((messages, (snapshot, query_id))))
        },
    );
    let tail = stream::once(async move { Ok(vec![control("snapshot-end", at)]) });
    head.chain(rows).chain(tail)
}

/// A snapshot response, streamed, followed by `after`: the changes committed after the
/// snapshot that fit the byte budget, read before the response starts (its
/// `Stream-Next-Offset` must name where they end). A client reading with `live: false` stops
/// after one response, so without them it would miss what was committed while it connected.
fn snapshot_response(
    query_id: String,
    snapshot: Snapshot,
    reset: bool,
    after: Option<log::Changes>,
) -> Response {
    let at = QueryOffset::tail(snapshot.info());
    let (after, next, up_to_date) = match after {
        Some(c) => (c.messages, c.next, c.up_to_date),
        // The changes could not be read after it (cleared or evicted meanwhile): the next
        // read from the snapshot's offset sends a fresh one.
        None => (Vec::new(), at, false),
    };
    let mut first = true;
    let items = snapshot_items(query_id, snapshot, reset)
        .chain(stream::once(async move { Ok(after) }))
        .map(move |messages| {
            let messages = messages?;
            let mut out = String::new();
            if first {
                out.push('[');
            }
            for message in messages {
                if !first {
                    out.push(',');
                }
                first = false;
                out.push_str(&message);
            }
            Ok::<_, LogError>(Bytes::from(out))
        });
    let close = stream::once(async { Ok(Bytes::from_static(b"]")) });
    let body = items.chain(close).inspect(|item| {
        if let Err(e) = item {
            tracing::error!(error = %e, "query snapshot stream failed; response truncated");
        }
    });
    let mut response = (StatusCode::OK, Body::from_stream(body)).into_response();
    position_headers(response.headers_mut(), next, up_to_date);
    response
}

/// Catch-up and long-poll.
async fn get(state: AppState, query_id: String, query: Query) -> Response {
    let budget = state.inner.changes_max_bytes;
    let mut position = state.inner.runtime.watch(&query_id);
    let found = match log::read(&state, &query_id, query.from, budget).await {
        Ok(found) => found,
        Err(e) => return failed(&e),
    };
    let found = match (found, query.live) {
        (Found::Tail(at), Live::LongPoll) => {
            let timeout = state.inner.long_poll_timeout;
            let shutdown = state.shutdown_token();
            let woke = tokio::select! {
                changed = position.changed() => changed.is_ok(),
                () = tokio::time::sleep(timeout) => false,
                () = shutdown.cancelled() => false,
            };
            if !woke {
                let mut response = StatusCode::NO_CONTENT.into_response();
                let h = response.headers_mut();
                set(h, STREAM_NEXT_OFFSET, &at.to_string());
                h.insert(STREAM_UP_TO_DATE, HeaderValue::from_static("true"));
                set(h, STREAM_CURSOR, &cursor(query.cursor.as_deref()));
                h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                return response;
            }
            match log::read(&state, &query_id, From::At(at), budget).await {
                Ok(found) => found,
                Err(e) => return failed(&e),
            }
        }
        (found, _) => found,
    };
    let mut response = match found {
        Found::Snapshot { snapshot, reset } => {
            let at = QueryOffset::tail(snapshot.info());
            let after = match log::changes_after(&state, &query_id, at, budget).await {
                Ok(after) => after,
                Err(e) => return failed(&e),
            };
            snapshot_response(query_id, snapshot, reset, after)
        }
        Found::Changes {
            messages,
            next,
            up_to_date,
        } => messages_response(&messages, next, up_to_date),
        Found::Tail(at) => messages_response(&[], at, true),
    };
    if query.live == Live::LongPoll {
        set(
            response.headers_mut(),
            STREAM_CURSOR,
            &cursor(query.cursor.as_deref()),
        );
    }
    response
}
