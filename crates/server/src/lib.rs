//! The liveresults HTTP server.
//!
//! Upstream continuous queries POST their result diffs as NDJSON; each chunk of lines becomes
//! one atomic commit through the runtime. Readers get a point-in-time snapshot
//! (`/queries/{id}/snapshot`, with the offset it corresponds to) and then follow the query's
//! committed batches as a Durable Streams change feed (`/queries/{id}/changes`: catch-up,
//! long-poll or SSE). When the feed can no longer serve a reader's offset (the outbox moved on,
//! or the query was cleared), the answer is a 409 telling it to refetch the snapshot — never a
//! silent gap.
//!
//! [`app`] builds the router so tests can drive it; [`serve`] runs it on a listener with
//! graceful shutdown.
//!
//! | route | handler module |
//! |---|---|
//! | `POST /queries/{id}/events` | [`ingest`] |
//! | `GET /queries`, `GET`/`DELETE /queries/{id}` | [`queries`] |
//! | `GET /queries/{id}/snapshot` | [`snapshot`] |
//! | `GET /queries/{id}/changes` | [`changes`] (catch-up, long-poll) and [`sse`] |
//! | `GET /metrics` | [`metrics`] |
//! | `GET /healthz` | [`health`] |

pub mod changes;
mod counters;
pub mod error;
mod feed;
pub mod health;
pub mod ingest;
pub mod metrics;
pub mod offset;
pub mod queries;
pub mod render;
pub mod snapshot;
pub mod sse;
mod state;

use std::future::{Future, IntoFuture};

use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;

pub use counters::ServerMetrics;
pub use error::ApiError;
pub use offset::{Offset, Start};
pub use state::{AppState, DEFAULT_CHUNK_BYTES, DEFAULT_CHUNK_LINES, DEFAULT_MAX_BODY_BYTES};

/// The router with every route, its state, request tracing and HTTP metrics.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/metrics", get(metrics::metrics))
        .route("/queries", get(queries::list))
        .route("/queries/{id}", get(queries::stats).delete(queries::clear))
        .route("/queries/{id}/events", post(ingest::ingest))
        .route("/queries/{id}/snapshot", get(snapshot::snapshot))
        .route("/queries/{id}/changes", get(changes::changes))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::count_requests,
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Serves [`app`] on `listener` until `shutdown` completes, then shuts down gracefully: no new
/// connections; live readers (long-polls, SSE streams) are told to end through the state's
/// shutdown signal; ingest requests finish the chunk in flight and answer 503 with the
/// committed sequence. Returns once every connection is closed, or once the state's shutdown
/// grace period has passed (a client that stopped reading a streamed snapshot cannot hold the
/// process); the caller then shuts the runtime down and closes the store.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let signal = state.shutdown_token();
    let (started, grace) = (signal.clone(), state.inner.shutdown_grace);
    let router = app(state);
    let graceful = axum::serve(listener, router).with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!("shutting down: ending live readers, finishing in-flight chunks");
        signal.cancel();
    });
    tokio::select! {
        result = graceful.into_future() => result,
        () = async {
            started.cancelled().await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!(?grace, "connections still open after the shutdown grace period: dropping them");
            Ok(())
        }
    }
}
