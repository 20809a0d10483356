//! The HTTP face: `/v1/stream/{name}` with `PUT` (create), `POST` (append/close), `GET`
//! (catch-up, long-poll, SSE), `HEAD` (metadata), `DELETE` and `OPTIONS` (preflight).
//!
//! Errors are `application/problem+json` documents with the same shape and type prefix as the
//! rest of the server's, plus the headers the protocol attaches to them (`Stream-Closed` and
//! the final offset on appends to closed streams, the producer headers on fencing and gaps).
//! Every response carries `X-Content-Type-Options: nosniff` and
//! `Cross-Origin-Resource-Policy: cross-origin` (the protocol's browser-security headers).
//! Access control is the embedding server's: it runs before these handlers.

mod fanout;
pub mod headers;
mod read;
mod sse;
pub mod subscription;
mod write;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::error::StreamError;
use crate::store::StoreError;
use crate::Streams;
use headers::*;

/// What the handlers share.
#[derive(Clone)]
pub(crate) struct HttpState {
    pub(crate) streams: Streams,
    /// Cancelled when the server shuts down: live readers end.
    pub(crate) shutdown: CancellationToken,
    /// Long-poll answers shared by the readers one commit wakes.
    pub(crate) fanout: std::sync::Arc<fanout::Fanout>,
}

/// The routes of `streams`, for any outer router state; live reads end when `shutdown` is
/// cancelled.
pub fn router<S: Clone + Send + Sync + 'static>(
    streams: Streams,
    shutdown: CancellationToken,
) -> Router<S> {
    let state = HttpState {
        streams,
        shutdown,
        fanout: std::sync::Arc::default(),
    };
    Router::new()
        .route("/v1/stream/{*name}", any(dispatch))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

/// Routes by method (one route, so unknown methods get a problem document like the rest).
async fn dispatch(State(state): State<HttpState>, request: axum::extract::Request) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    // The reserved control prefix is routed before any stream (the protocol's §6); its
    // requests count under the last operation, "other".
    if subscription::is_control(&path) && method != axum::http::Method::OPTIONS {
        let response = subscription::handle(&state, request).await;
        let other = crate::metrics::OPERATIONS.len() - 1;
        (state.streams.metrics).record(other, response.status().as_u16(), None);
        return response;
    }
    let appending = (method == axum::http::Method::POST)
        .then(|| request.headers().get(header::CONTENT_LENGTH))
        .flatten()
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let result = match method.as_str() {
        "GET" => read::get(&state, request).await,
        "HEAD" => read::head(&state, request).await,
        "PUT" => write::put(&state, request).await,
        "POST" => write::post(&state, request).await,
        "DELETE" => write::delete(&state, request).await,
        "OPTIONS" => Ok(preflight()),
        _ => {
            let mut response = problem_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                &format!("{method} is not a stream operation"),
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(ALLOWED_METHODS));
            Ok(response)
        }
    };
    // Subscriptions wake on writes: tell them which stream changed.
    let wrote = matches!(method.as_str(), "PUT" | "POST");
    if wrote && result.as_ref().is_ok_and(|r| r.status().is_success()) {
        if let Ok(name) = stream_name(&path) {
            state.streams.subscriptions.touched(name);
        }
    }
    let response = result.unwrap_or_else(|e| {
        let stream = path.strip_prefix("/v1/stream/").unwrap_or(&path);
        error_response(&e, stream)
    });
    let operation = crate::metrics::operation(method.as_str());
    (state.streams.metrics).record(operation, response.status().as_u16(), appending);
    response
}

const ALLOWED_METHODS: &str = "GET, HEAD, POST, PUT, DELETE, OPTIONS";

/// Request headers of the protocol a browser may send (what a CORS preflight must allow).
pub const CORS_REQUEST_HEADERS: [&str; 13] = [
    "authorization",
    "content-type",
    "if-none-match",
    STREAM_SEQ,
    STREAM_TTL,
    STREAM_EXPIRES_AT,
    STREAM_CLOSED,
    STREAM_FORKED_FROM,
    STREAM_FORK_OFFSET,
    STREAM_FORK_SUB_OFFSET,
    PRODUCER_ID,
    PRODUCER_EPOCH,
    PRODUCER_SEQ,
];

/// Response headers of the protocol a browser page must be allowed to read.
pub const CORS_RESPONSE_HEADERS: [&str; 13] = [
    STREAM_NEXT_OFFSET,
    STREAM_UP_TO_DATE,
    STREAM_CURSOR,
    STREAM_CLOSED,
    STREAM_TTL,
    STREAM_EXPIRES_AT,
    STREAM_SSE_DATA_ENCODING,
    PRODUCER_EPOCH,
    PRODUCER_SEQ,
    PRODUCER_EXPECTED_SEQ,
    PRODUCER_RECEIVED_SEQ,
    "etag",
    "location",
];

/// The answer to a CORS preflight that reaches the handlers (the server's CORS layer answers
/// first when origins are configured): which methods and headers the routes take. It names no
/// allowed origin, so without configured origins a browser still refuses the real request.
fn preflight() -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let h = response.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(ALLOWED_METHODS),
    );
    set(
        h,
        "access-control-allow-headers",
        &CORS_REQUEST_HEADERS.join(", "),
    );
    set(
        h,
        "access-control-expose-headers",
        &CORS_RESPONSE_HEADERS.join(", "),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    response
}

async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("cross-origin"),
    );
    response
}

/// A problem document, as the rest of the server writes them.
fn problem_response(status: StatusCode, kind: &str, detail: &str) -> Response {
    let body = serde_json::json!({
        "type": format!("urn:liveresults:problem:{kind}"),
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

/// The response for `error`, with the protocol's headers for it.
/// Store failures get a generic detail: their text (Redis errors, script replies, key names)
/// is for the operator's log, not for clients.
pub(crate) fn error_response(error: &StreamError, stream: &str) -> Response {
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let detail = match error {
        StreamError::Store(e) => {
            tracing::error!(stream, error = %e, "stream request failed in the store");
            match e {
                StoreError::Corrupt(_) => "the stream's stored data cannot be read".to_owned(),
                _ => "the stream store is unavailable; retry".to_owned(),
            }
        }
        _ => {
            if status.is_server_error() {
                tracing::warn!(stream, error = %error, "stream request failed");
            }
            error.to_string()
        }
    };
    let mut response = problem_response(status, error.kind(), &detail);
    let h = response.headers_mut();
    match error {
        StreamError::Closed { tail } => {
            h.insert(STREAM_CLOSED, HeaderValue::from_static("true"));
            set(h, STREAM_NEXT_OFFSET, &crate::offset::format_offset(*tail));
        }
        StreamError::StaleEpoch { current, .. } => set(h, PRODUCER_EPOCH, &current.to_string()),
        StreamError::SeqGap { expected, received } => {
            set(h, PRODUCER_EXPECTED_SEQ, &expected.to_string());
            set(h, PRODUCER_RECEIVED_SEQ, &received.to_string());
        }
        _ => {}
    }
    response
}

/// Sets a header whose value is ours (offsets, numbers, content types already validated).
pub(crate) fn set(headers: &mut axum::http::HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static(name), value);
    }
}

/// Reads a request body of at most `limit` bytes (413 beyond, before reading it all when the
/// client announces its length).
pub(crate) async fn read_body(
    body: Body,
    announced: Option<u64>,
    limit: usize,
) -> Result<Bytes, StreamError> {
    if announced.is_some_and(|n| n > limit as u64) {
        return Err(StreamError::TooLarge { limit });
    }
    // Sized once when announced (it is at most `limit` then): no regrowth copies, and a JSON
    // record sliced from the body holds no spare capacity.
    let mut out = BytesMut::with_capacity(announced.map_or(0, |n| n as usize));
    let mut frames = body.into_data_stream();
    while let Some(frame) = frames.next().await {
        let frame = frame.map_err(|e| StreamError::BadRequest(format!("reading the body: {e}")))?;
        if out.len().saturating_add(frame.len()) > limit {
            return Err(StreamError::TooLarge { limit });
        }
        out.extend_from_slice(&frame);
    }
    if out.capacity() - out.len() > out.len() / 4 {
        // Grown by doubling (no length announced): stored slices would pin the spare half.
        return Ok(Bytes::copy_from_slice(&out));
    }
    Ok(out.freeze())
}

/// The announced `Content-Length`, if any.
pub(crate) fn content_length(headers: &axum::http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn detail(error: StreamError) -> (u16, String) {
        let response = error_response(&error, "s");
        let status = response.status().as_u16();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn store_failures_do_not_show_their_internals() {
        let internal = "redis: NOSCRIPT lrs:{s}:meta reply [1, 2]";
        let (status, body) = detail(StoreError::Backend(internal.into()).into()).await;
        assert_eq!(status, 503);
        assert!(
            !body.contains("NOSCRIPT") && !body.contains("lrs:"),
            "{body}"
        );
        assert!(body.contains("store-unavailable"), "{body}");
        let (status, body) = detail(StoreError::Corrupt(internal.into()).into()).await;
        assert_eq!(status, 500);
        assert!(
            !body.contains("NOSCRIPT") && body.contains("store-corrupt"),
            "{body}"
        );
        // Client errors keep their detail.
        let (status, body) = detail(StreamError::NotFound("abc".into())).await;
        assert_eq!(status, 404);
        assert!(body.contains("abc"), "{body}");
    }
}
