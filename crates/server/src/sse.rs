//! `live=sse` on the change feed: Server-Sent Events.
//!
//! `event: data` carries a JSON array of messages; `event: control` carries
//! `{"streamNextOffset", "streamCursor", "upToDate"}` after every data event and whenever the
//! reader reaches the tail. Keep-alive comments flow while idle. The stream ends when the
//! client goes away, after the configured connection lifetime (the client reconnects from its
//! last `streamNextOffset`), on server shutdown, or when the offset stops being readable
//! (the reconnect then gets the 409 must-refetch answer).
//!
//! Each stream is fed by its own task through a small bounded channel: the task parks on the
//! query's position watch (subscribed before the first read, so no commit is missed), holding
//! no store resources, and notices a departed client through the channel closing.
//!
//! Memory per stream is bounded: a data event is one bounded feed read (`changes_max_bytes`),
//! the channel holds one data and one control event, and the task waits for room in it before
//! it reads again — a client that stops reading pins what is queued, not a growing backlog
//! or one more read.

use std::convert::Infallible;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use liveresults_runtime::Position;
use serde_json::{json, Value as Json};
use tokio::sync::{mpsc, watch};

use crate::error::ApiError;
use crate::feed::{cursor, Feed, FeedError, Read};
use crate::offset::Start;
use crate::queries::known_for_feed;
use crate::state::AppState;

/// Events buffered between a stream's task and its connection: one read's data and control.
const SSE_BUFFER: usize = 2;

/// Starts an SSE stream; errors before the first event are ordinary HTTP errors.
pub(crate) async fn sse(
    state: AppState,
    query_id: String,
    start: Start,
    client_cursor: Option<String>,
) -> Result<Response, ApiError> {
    known_for_feed(&state, &query_id, start).await?;
    let inner = &*state.inner;
    let feed = Feed::new(
        &inner.runtime,
        &query_id,
        inner.changes_batch,
        inner.changes_max_bytes,
    );
    let position = feed.subscribe();
    let first = feed.read(start).await?;
    let (tx, rx) = mpsc::channel::<Event>(SSE_BUFFER);
    let keep_alive = inner.sse_keep_alive;
    tokio::spawn(follow(state, query_id, first, position, tx, client_cursor));
    let events = stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(keep_alive))
        .into_response())
}

/// Sends one read as events; `false` when the client is gone.
async fn emit(tx: &mpsc::Sender<Event>, read: Read, cursor: &str) -> bool {
    if !read.messages.is_empty() {
        let data = read.json_array();
        if tx
            .send(Event::default().event("data").data(data))
            .await
            .is_err()
        {
            return false;
        }
    }
    let mut control = json!({
        "streamNextOffset": read.next.to_string(),
        "streamCursor": cursor,
    });
    if read.up_to_date {
        control["upToDate"] = Json::Bool(true);
    }
    tx.send(Event::default().event("control").data(control.to_string()))
        .await
        .is_ok()
}

/// The stream's task: emits `first`, then every later read, until the stream has a reason
/// to end.
async fn follow(
    state: AppState,
    query_id: String,
    first: Read,
    mut position: watch::Receiver<Position>,
    tx: mpsc::Sender<Event>,
    mut client_cursor: Option<String>,
) {
    let inner = &*state.inner;
    let feed = Feed::new(
        &inner.runtime,
        &query_id,
        inner.changes_batch,
        inner.changes_max_bytes,
    );
    let _client = inner.metrics.sse_client();
    let deadline = crate::limits::deadline_after(inner.sse_max_duration);
    let mut current = first;
    loop {
        let next = current.next;
        let up_to_date = current.up_to_date;
        let cursor = cursor(client_cursor.as_deref());
        if !emit(&tx, current, &cursor).await {
            return;
        }
        client_cursor = Some(cursor);
        // Wait until the client has taken what was queued before reading more, so a client
        // that stopped reading does not make this task hold another read.
        let room = tokio::select! {
            room = tx.reserve_many(SSE_BUFFER) => room.is_ok(),
            () = inner.shutdown.cancelled() => false,
            () = tokio::time::sleep_until(deadline) => false,
        };
        if !room {
            return;
        }
        let read = if up_to_date {
            // At the tail: wait for the next commit, or for a reason to end the stream.
            let stop = async {
                tokio::select! {
                    () = inner.shutdown.cancelled() => {}
                    () = tx.closed() => {}
                    () = tokio::time::sleep_until(deadline) => {}
                }
            };
            feed.next_commit(&mut position, next, stop).await
        } else {
            // Still catching up: read the next batch at once.
            feed.read(Start::At(next)).await.map(Some)
        };
        current = match read {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => return end(&query_id, &e),
        };
    }
}

fn end(query_id: &str, error: &FeedError) {
    tracing::info!(query_id, error = %error, "sse stream ended: offset no longer readable");
}
