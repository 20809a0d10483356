//! `GET ?live=sse`: a stream's bytes as server-sent events (the protocol's §5.8).
//!
//! Every `data` event is followed by a `control` event carrying the next offset, the cursor
//! (while the stream is open), `upToDate` when the client has everything, and `streamClosed`
//! at the end of a closed stream, after which the connection ends. Text is split into one
//! `data:` line per line of the payload — at `\r\n`, `\r` and `\n` alike, the separators an
//! SSE parser honours — so stored bytes can never end an event or forge one. Binary streams
//! are sent as base64. The body is produced on demand (one read of at most `max_read_bytes`
//! per event), so a client that stops reading holds at most one event in memory.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::sync::watch;
use tokio::time::Instant;

use super::headers::STREAM_SSE_DATA_ENCODING;
use super::read::{body_bytes, cursor, is_text};
use super::HttpState;
use crate::engine::{Engine, Slot};
use crate::meta::StreamMeta;
use crate::offset::format_offset;

/// How the data events of one connection are encoded.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Text,
    Base64,
}

/// The state of one SSE connection between events.
struct Connection {
    engine: Arc<Engine>,
    rx: watch::Receiver<Option<Arc<StreamMeta>>>,
    position: u64,
    encoding: Encoding,
    cursor: Option<u64>,
    max_bytes: usize,
    keep_alive: Duration,
    deadline: Instant,
    shutdown: tokio_util::sync::CancellationToken,
    /// Whether the last control event said `upToDate` (and nothing was sent since).
    announced: bool,
    done: bool,
}

pub(crate) fn response(
    state: &HttpState,
    slot: &Slot,
    meta: &StreamMeta,
    position: u64,
    client_cursor: Option<u64>,
) -> Response {
    let config = &state.streams.config;
    let encoding = if is_text(&meta.content_type) {
        Encoding::Text
    } else {
        Encoding::Base64
    };
    let connection = Connection {
        engine: Arc::clone(&state.streams.engine),
        rx: slot.subscribe(),
        position,
        encoding,
        cursor: client_cursor,
        max_bytes: config.max_read_bytes,
        keep_alive: config.sse_keep_alive,
        deadline: Instant::now() + config.sse_max_duration,
        shutdown: state.shutdown.clone(),
        announced: false,
        done: false,
    };
    let events = futures_util::stream::unfold(connection, |mut c| async move {
        let event = c.next_event().await?;
        Some((Ok::<Bytes, std::convert::Infallible>(event), c))
    });
    let mut response = (StatusCode::OK, Body::from_stream(events)).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    if encoding == Encoding::Base64 {
        h.insert(STREAM_SSE_DATA_ENCODING, HeaderValue::from_static("base64"));
    }
    response
}

/// Appends `data:` lines for `payload`, split at every line break an SSE parser sees.
fn data_lines(payload: &[u8], out: &mut Vec<u8>) {
    let mut rest = payload;
    loop {
        let end = rest.iter().position(|&b| b == b'\n' || b == b'\r');
        let line = &rest[..end.unwrap_or(rest.len())];
        out.extend_from_slice(b"data:");
        // A parser drops one space after the colon; keep a leading space of the line.
        if line.first() == Some(&b' ') {
            out.push(b' ');
        }
        out.extend_from_slice(line);
        out.push(b'\n');
        let Some(end) = end else { break };
        let skip = if rest[end] == b'\r' && rest.get(end + 1) == Some(&b'\n') {
            2
        } else {
            1
        };
        rest = &rest[end + skip..];
    }
}

impl Connection {
    fn control(&mut self, next: u64, up_to_date: bool, closed: bool) -> String {
        let mut control = serde_json::Map::new();
        control.insert("streamNextOffset".into(), format_offset(next).into());
        if closed {
            control.insert("streamClosed".into(), true.into());
            control.insert("upToDate".into(), true.into());
        } else {
            let c = cursor(self.cursor);
            self.cursor = Some(c);
            control.insert("streamCursor".into(), c.to_string().into());
            if up_to_date {
                control.insert("upToDate".into(), true.into());
            }
        }
        self.announced = up_to_date || closed;
        format!(
            "event: control\ndata:{}\n\n",
            serde_json::Value::Object(control)
        )
    }

    /// The next event (or comment), or `None` when the connection should end.
    async fn next_event(&mut self) -> Option<Bytes> {
        loop {
            if self.done || Instant::now() >= self.deadline {
                return None;
            }
            let meta = self.rx.borrow_and_update().clone();
            let meta = match meta {
                Some(m) if !m.soft_deleted => m,
                _ => return None,
            };
            if self.position < meta.tail {
                let chunk = match self
                    .engine
                    .read_chunk(&meta, self.position, self.max_bytes)
                    .await
                {
                    Ok(chunk) => chunk,
                    Err(e) => {
                        tracing::warn!(error = %e, "SSE read failed; ending the connection");
                        return None;
                    }
                };
                let mut event = b"event: data\n".to_vec();
                let body = body_bytes(&chunk);
                match self.encoding {
                    Encoding::Text => data_lines(&body, &mut event),
                    Encoding::Base64 => {
                        event.extend_from_slice(b"data:");
                        crate::base64::encode_into(&body, &mut event);
                        event.push(b'\n');
                    }
                }
                event.push(b'\n');
                self.position = chunk.next;
                self.done = chunk.closed();
                let control = self.control(chunk.next, chunk.up_to_date(), chunk.closed());
                event.extend_from_slice(control.as_bytes());
                return Some(Bytes::from(event));
            }
            if meta.closed {
                self.done = true;
                return Some(Bytes::from(self.control(self.position, true, true)));
            }
            if !self.announced {
                return Some(Bytes::from(self.control(self.position, true, false)));
            }
            tokio::select! {
                changed = self.rx.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
                () = tokio::time::sleep(self.keep_alive) => {
                    return Some(Bytes::from_static(b": keep-alive\n\n"));
                }
                () = tokio::time::sleep_until(self.deadline) => return None,
                () = self.shutdown.cancelled() => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(payload: &str) -> String {
        let mut out = Vec::new();
        data_lines(payload.as_bytes(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn every_line_break_starts_a_data_line() {
        assert_eq!(lines("a"), "data:a\n");
        assert_eq!(lines("a\nb"), "data:a\ndata:b\n");
        assert_eq!(lines("a\r\n\r\nevent: x"), "data:a\ndata:\ndata:event: x\n");
        assert_eq!(lines("a\r\rb"), "data:a\ndata:\ndata:b\n");
        assert_eq!(lines(" lead"), "data:  lead\n");
        assert_eq!(lines(""), "data:\n");
    }
}
