//! The accept loop: HTTP/1.1 connections with a header read timeout, under a connection cap,
//! with graceful shutdown.
//!
//! `axum::serve` takes no configuration, and hyper's header read timeout does nothing
//! without a timer, which it does not set: a client sending its headers a byte at a time held
//! its connection forever. Here every connection gets hyper's timer and the configured
//! timeout, and holds one permit of a semaphore while it is open; when none is free the loop
//! stops accepting (new clients wait in the kernel's backlog instead of taking file
//! descriptors the process needs).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// Accepts connections until `stop` is cancelled, then waits until every connection it
/// accepted has closed (they finish their request in flight and close; handlers watch the
/// same signal to end live readers).
pub(crate) async fn accept_loop(
    listener: TcpListener,
    router: Router,
    max_connections: usize,
    header_read_timeout: Duration,
    stop: CancellationToken,
) {
    let permits = max_connections.clamp(1, crate::limits::MAX_CONNECTIONS);
    let open = Arc::new(Semaphore::new(permits));
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&open).acquire_owned() => permit,
            () = stop.cancelled() => break,
        };
        let Ok(permit) = permit else { break };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => break,
        };
        match accepted {
            Ok((stream, _)) => {
                let router = router.clone();
                let stop = stop.clone();
                tokio::spawn(connection(
                    stream,
                    router,
                    header_read_timeout,
                    stop,
                    permit,
                ));
            }
            Err(e) if is_connection_error(&e) => {}
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::error!(error = %e, "accepting a connection failed; retrying in 1 s");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = stop.cancelled() => break,
                }
            }
        }
    }
    drop(listener);
    // Every permit back means every connection closed.
    let all = u32::try_from(permits).unwrap_or(u32::MAX);
    let _closed = open.acquire_many(all).await;
}

/// Serves one connection, ending it gracefully (after the request in flight) on `stop`.
async fn connection(
    stream: TcpStream,
    router: Router,
    header_read_timeout: Duration,
    stop: CancellationToken,
    permit: OwnedSemaphorePermit,
) {
    // Answers are written whole; Nagle's algorithm would only hold the next small write (an
    // SSE event, the body after the head) back until the client's delayed ACK.
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "TCP_NODELAY not set");
    }
    let service = TowerToHyperService::new(router);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.as_mut().await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
    drop(permit);
}

/// Errors of one connection (the peer gave up before it was accepted), not of the listener.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        e.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    )
}
