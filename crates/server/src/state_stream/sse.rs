//! A query's State Protocol stream over SSE: a snapshot is one `data` event whose `data:` lines
//! are produced chunk by chunk (one message per line: their JSON texts hold no line breaks),
//! every `data` event is followed by a `control` event, and the connection then waits for the
//! query's next commit.

use std::pin::Pin;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use liveresults_runtime::Position;
use tokio::sync::watch;
use tokio::time::Instant;

use super::log::{self, Found, From, LogError, QueryOffset};
use super::snapshot_items;
use crate::feed::cursor;
use crate::state::AppState;

type Items = Pin<Box<dyn Stream<Item = Result<Vec<String>, LogError>> + Send>>;

/// One connection between events.
struct Connection {
    state: AppState,
    query_id: String,
    from: From,
    position: watch::Receiver<Position>,
    cursor: Option<String>,
    /// A snapshot being sent, and the offset after it.
    snapshot: Option<(Items, QueryOffset, bool)>,
    announced: bool,
    deadline: Instant,
}

pub(super) fn response(
    state: AppState,
    query_id: String,
    from: From,
    cursor: Option<String>,
) -> Response {
    let deadline = Instant::now() + state.inner.sse_max_duration;
    let connection = Connection {
        position: state.inner.runtime.watch(&query_id),
        state,
        query_id,
        from,
        cursor,
        snapshot: None,
        announced: false,
        deadline,
    };
    let events = futures_util::stream::unfold(connection, |mut c| async move {
        match c.next_event().await {
            Ok(Some(event)) => Some((Ok::<Bytes, LogError>(event), c)),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "query stream SSE read failed; ending the connection");
                None
            }
        }
    });
    let mut response = (StatusCode::OK, Body::from_stream(events)).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

impl Connection {
    fn control(&mut self, next: QueryOffset, up_to_date: bool) -> String {
        let c = cursor(self.cursor.as_deref());
        self.cursor = Some(c.clone());
        self.announced = up_to_date;
        let mut control = serde_json::json!({
            "streamNextOffset": next.to_string(),
            "streamCursor": c,
        });
        if up_to_date {
            control["upToDate"] = true.into();
        }
        format!("event: control\ndata:{control}\n\n")
    }

    async fn next_event(&mut self) -> Result<Option<Bytes>, LogError> {
        loop {
            if Instant::now() >= self.deadline || self.state.shutdown_token().is_cancelled() {
                return Ok(None);
            }
            if let Some((items, next, first)) = &mut self.snapshot {
                let mut out = String::new();
                if *first {
                    out.push_str("event: data\ndata:[\n");
                }
                match items.next().await {
                    Some(messages) => {
                        for message in messages? {
                            out.push_str(if *first { "data:" } else { "data:," });
                            *first = false;
                            out.push_str(&message);
                            out.push('\n');
                        }
                        return Ok(Some(Bytes::from(out)));
                    }
                    None => {
                        let next = *next;
                        self.snapshot = None;
                        self.from = From::At(next);
                        out.push_str("data:]\n\n");
                        let info = self.state.inner.runtime.store().query_info(&self.query_id);
                        let up_to_date = QueryOffset::tail(&info.await?) <= next;
                        out.push_str(&self.control(next, up_to_date));
                        return Ok(Some(Bytes::from(out)));
                    }
                }
            }
            let budget = self.state.inner.changes_max_bytes;
            let found = log::read(&self.state, &self.query_id, self.from, budget).await?;
            match found {
                Found::Snapshot { snapshot, reset } => {
                    let next = QueryOffset::tail(snapshot.info());
                    let items = snapshot_items(self.query_id.clone(), snapshot, reset);
                    self.snapshot = Some((Box::pin(items), next, true));
                }
                Found::Changes {
                    messages,
                    next,
                    up_to_date,
                } => {
                    self.from = From::At(next);
                    let mut out = String::from("event: data\ndata:[\n");
                    for (i, message) in messages.iter().enumerate() {
                        out.push_str(if i == 0 { "data:" } else { "data:," });
                        out.push_str(message);
                        out.push('\n');
                    }
                    out.push_str("data:]\n\n");
                    out.push_str(&self.control(next, up_to_date));
                    return Ok(Some(Bytes::from(out)));
                }
                Found::Tail(at) => {
                    self.from = From::At(at);
                    if !self.announced {
                        return Ok(Some(Bytes::from(self.control(at, true))));
                    }
                    let keep_alive = self.state.inner.sse_keep_alive;
                    let shutdown = self.state.shutdown_token();
                    tokio::select! {
                        changed = self.position.changed() => {
                            if changed.is_err() {
                                return Ok(None);
                            }
                        }
                        () = tokio::time::sleep(keep_alive) => {
                            return Ok(Some(Bytes::from_static(b": keep-alive\n\n")));
                        }
                        () = tokio::time::sleep_until(self.deadline) => return Ok(None),
                        () = shutdown.cancelled() => return Ok(None),
                    }
                }
            }
        }
    }
}
