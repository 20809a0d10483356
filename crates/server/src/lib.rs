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
//! | `GET /queries`, `GET`/`DELETE /queries/{id}` | [`queries`] ([`purge`] for `?purge=true`) |
//! | `GET /queries/{id}/snapshot` | [`snapshot`] |
//! | `GET /queries/{id}/changes` | [`changes`] (catch-up, long-poll) and [`sse`] |
//! | `GET /metrics` | [`metrics`] |
//! | `POST /queries/{id}/resume` | [`queries`] |
//! | `GET /healthz`, `GET /readyz` | [`health`] |
//! | `PUT`/`POST`/`GET`/`HEAD`/`DELETE /v1/stream/{name}` | [`streams`] (Durable Streams) |
//! | `GET`/`HEAD /v1/stream/queries/{id}` | `state_stream` (a query as a State Protocol stream) |

pub mod auth;
pub mod changes;
mod connections;
pub mod console;
mod counters;
pub mod error;
mod feed;
pub mod health;
pub mod ingest;
pub mod limits;
pub mod metrics;
pub mod offset;
mod ownership;
mod problem;
pub mod purge;
pub mod queries;
pub mod render;
pub mod snapshot;
pub mod sse;
mod state;
mod state_stream;

use std::future::Future;

use axum::http::{header, HeaderValue, Method};
use axum::routing::{any, get, post};
use axum::Router;
use tokio::net::TcpListener;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::TraceLayer;

pub use auth::{Role, Security, TokenError, Tokens};
pub use counters::ServerMetrics;
pub use error::ApiError;
pub use liveresults_streams as streams;
pub use offset::{Offset, Start};
pub use state::{
    AppState, DEFAULT_CHANGES_MAX_BYTES, DEFAULT_CHUNK_BYTES, DEFAULT_CHUNK_LINES,
    DEFAULT_MAX_BODY_BYTES,
};

/// The router with every route, its state, request tracing and HTTP metrics, behind the
/// access checks ([`auth`]), the query limits ([`limits`]), the body read timeout and, when
/// origins are configured, CORS.
pub fn app(state: AppState) -> Router {
    let body_timeout = state.inner.limits.body_read_timeout;
    let cors = cors(&state.inner.security);
    let router = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::metrics))
        .route("/queries", get(queries::list))
        .route("/queries/{id}", get(queries::stats).delete(purge::delete))
        .route("/queries/{id}/events", post(ingest::ingest))
        .route("/queries/{id}/resume", post(queries::resume))
        .route("/queries/{id}/snapshot", get(snapshot::snapshot))
        .route("/queries/{id}/changes", get(changes::changes))
        .route("/v1/stream/queries/{*id}", any(state_stream::handle))
        .merge(stream_routes(&state))
        .merge(console::api_routes())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limits::admit,
        ))
        .layer(RequestBodyTimeoutLayer::new(body_timeout))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::guard,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::count_requests,
        ));
    // The console's files outside the guard: the page must load to ask for a token.
    let router = router.merge(console::asset_routes());
    // CORS outside the guard: preflights carry no token and are answered here.
    let router = match cors {
        Some(cors) => router.layer(cors),
        None => router,
    };
    router.layer(TraceLayer::new_for_http()).with_state(state)
}

/// The Durable Streams routes when the state has a streams service (their live readers end
/// with the server's shutdown signal).
fn stream_routes(state: &AppState) -> Router<AppState> {
    match &state.inner.streams {
        Some(streams) => streams::router(streams.clone(), state.shutdown_token()),
        None => Router::new(),
    }
}

/// The CORS layer for the configured origins, or `None` (no CORS headers at all) without.
fn cors(security: &Security) -> Option<CorsLayer> {
    let origins: Vec<HeaderValue> = (security.cors_origins.iter())
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    if origins.is_empty() {
        return None;
    }
    // The change feed's headers are among the streams' (the same protocol).
    let names = |names: &[&str]| -> Vec<header::HeaderName> {
        (names.iter())
            .filter_map(|n| header::HeaderName::from_bytes(n.as_bytes()).ok())
            .collect()
    };
    let methods = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
    ];
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods(methods)
            .allow_headers(names(&streams::http::CORS_REQUEST_HEADERS))
            .expose_headers(names(&streams::http::CORS_RESPONSE_HEADERS)),
    )
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
    let limits = state.inner.limits.clone();
    let router = app(state);
    let trigger = signal.clone();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down: ending live readers, finishing in-flight chunks");
        trigger.cancel();
    });
    let graceful = connections::accept_loop(
        listener,
        router,
        limits.max_connections,
        limits.header_read_timeout,
        signal,
    );
    tokio::select! {
        () = graceful => Ok(()),
        () = async {
            started.cancelled().await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!(?grace, "connections still open after the shutdown grace period: dropping them");
            Ok(())
        }
    }
}
