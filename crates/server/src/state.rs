//! The state every handler shares: the runtime, the limits, and the shutdown signal.

use std::sync::Arc;
use std::time::Duration;

use liveresults_runtime::RuntimeHandle;
use tokio_util::sync::CancellationToken;

use crate::auth::Security;
use crate::counters::ServerMetrics;
use crate::limits::{clamp_duration, Limits, MAX_CONNECTIONS};

/// Default ingest body limit: 1 GiB. Bodies are streamed, so this bounds a request's
/// duration and disk growth, not its memory.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1 << 30;
/// Default lines per ingest chunk (one atomic commit each).
pub const DEFAULT_CHUNK_LINES: usize = 1000;
/// Default bytes after which an ingest chunk is committed even if it has fewer lines: with
/// the line cap alone, 1,000 lines of up to 16 MiB each could sit in memory at once.
pub const DEFAULT_CHUNK_BYTES: usize = 8 << 20;
/// Default longest wait of a long-poll before it answers 204.
const DEFAULT_LONG_POLL_TIMEOUT: Duration = Duration::from_secs(30);
/// Default interval of SSE keep-alive comments.
const DEFAULT_SSE_KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Default lifetime of one SSE connection (the protocol asks servers to close about every
/// minute so clients can collapse onto caches; they reconnect from their last offset).
const DEFAULT_SSE_MAX_DURATION: Duration = Duration::from_secs(60);
/// Default time connections get to finish after shutdown starts before they are dropped: a
/// client that stops reading a snapshot must not hold the process forever.
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Default outbox entries per change-feed response.
const DEFAULT_CHANGES_BATCH: usize = 256;
/// Default bytes of messages per change-feed response (catch-up, long-poll, one SSE data
/// event): bounds what one client that stops reading can hold in the server's memory.
pub const DEFAULT_CHANGES_MAX_BYTES: usize = 4 << 20;
/// Default rows per snapshot chunk read from the store.
const DEFAULT_SNAPSHOT_CHUNK_ROWS: usize = 4096;

#[derive(Clone)]
pub(crate) struct Inner {
    pub(crate) runtime: RuntimeHandle,
    pub(crate) max_body_bytes: u64,
    pub(crate) max_line_bytes: usize,
    pub(crate) chunk_lines: usize,
    pub(crate) chunk_bytes: usize,
    pub(crate) long_poll_timeout: Duration,
    pub(crate) sse_keep_alive: Duration,
    pub(crate) sse_max_duration: Duration,
    pub(crate) changes_batch: usize,
    pub(crate) changes_max_bytes: usize,
    pub(crate) snapshot_chunk_rows: usize,
    pub(crate) shutdown_grace: Duration,
    pub(crate) shutdown: CancellationToken,
    pub(crate) metrics: Arc<ServerMetrics>,
    pub(crate) security: Arc<Security>,
    pub(crate) limits: Limits,
    pub(crate) streams: Option<liveresults_streams::Streams>,
}

/// What the handlers share. Cheap to clone; setters take `self` so a configuration reads as
/// one chain.
#[derive(Clone)]
pub struct AppState {
    pub(crate) inner: Arc<Inner>,
}

impl AppState {
    /// State over a running runtime with the defaults: 1 GiB bodies, 16 MiB lines, chunks of
    /// 1,000 lines or 8 MiB, 30 s long-polls, 15 s SSE keep-alives, 60 s SSE connections, 256 batches per
    /// change-feed response, 4,096-row snapshot chunks.
    pub fn new(runtime: RuntimeHandle) -> Self {
        AppState {
            inner: Arc::new(Inner {
                runtime,
                max_body_bytes: DEFAULT_MAX_BODY_BYTES,
                max_line_bytes: liveresults_runtime::DEFAULT_MAX_LINE_BYTES,
                chunk_lines: DEFAULT_CHUNK_LINES,
                chunk_bytes: DEFAULT_CHUNK_BYTES,
                long_poll_timeout: DEFAULT_LONG_POLL_TIMEOUT,
                sse_keep_alive: DEFAULT_SSE_KEEP_ALIVE,
                sse_max_duration: DEFAULT_SSE_MAX_DURATION,
                changes_batch: DEFAULT_CHANGES_BATCH,
                changes_max_bytes: DEFAULT_CHANGES_MAX_BYTES,
                snapshot_chunk_rows: DEFAULT_SNAPSHOT_CHUNK_ROWS,
                shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
                shutdown: CancellationToken::new(),
                metrics: Arc::default(),
                security: Arc::default(),
                limits: Limits::default(),
                streams: None,
            }),
        }
    }

    fn edit(mut self, f: impl FnOnce(&mut Inner)) -> Self {
        // Configuring after cloning copies the settings, so earlier clones keep theirs.
        f(Arc::make_mut(&mut self.inner));
        self
    }

    /// Largest ingest body in bytes (default 1 GiB); larger bodies get 413.
    #[must_use]
    pub fn max_body_bytes(self, bytes: u64) -> Self {
        self.edit(|i| i.max_body_bytes = bytes)
    }

    /// Longest ingest line in bytes (default 16 MiB); a longer line gets 400 naming it.
    #[must_use]
    pub fn max_line_bytes(self, bytes: usize) -> Self {
        self.edit(|i| i.max_line_bytes = bytes.max(1))
    }

    /// Lines per ingest chunk, each one atomic commit (default 1,000).
    #[must_use]
    pub fn chunk_lines(self, lines: usize) -> Self {
        self.edit(|i| i.chunk_lines = lines.max(1))
    }

    /// Bytes after which an ingest chunk is committed at the next line end, whatever its line
    /// count (default 8 MiB): one chunk's memory is bounded by this plus one line.
    #[must_use]
    pub fn chunk_bytes(self, bytes: usize) -> Self {
        self.edit(|i| i.chunk_bytes = bytes.max(1))
    }

    /// How long open connections may take to finish once shutdown starts (default 10 s);
    /// `serve` returns after that even if a client is still (not) reading.
    #[must_use]
    pub fn shutdown_grace(self, grace: Duration) -> Self {
        self.edit(|i| i.shutdown_grace = clamp_duration(grace))
    }

    /// How long a long-poll waits for a commit before answering 204 (default 30 s).
    #[must_use]
    pub fn long_poll_timeout(self, timeout: Duration) -> Self {
        self.edit(|i| i.long_poll_timeout = clamp_duration(timeout))
    }

    /// Interval of SSE keep-alive comments (default 15 s).
    #[must_use]
    pub fn sse_keep_alive(self, interval: Duration) -> Self {
        self.edit(|i| i.sse_keep_alive = clamp_duration(interval.max(Duration::from_millis(10))))
    }

    /// How long one SSE connection stays open before the server ends it (default 60 s).
    #[must_use]
    pub fn sse_max_duration(self, duration: Duration) -> Self {
        self.edit(|i| i.sse_max_duration = clamp_duration(duration))
    }

    /// Outbox entries (committed batches) per live change-feed response — long-poll, one SSE
    /// data event (default 256). Catch-up responses are bounded by bytes only
    /// ([`AppState::changes_max_bytes`]): a client in catch-up mode may read just one.
    #[must_use]
    pub fn changes_batch(self, entries: usize) -> Self {
        self.edit(|i| i.changes_batch = entries.max(1))
    }

    /// Bytes of rendered messages per change-feed response — a catch-up or long-poll body,
    /// one SSE data event (default 4 MiB). A response always carries at least one message,
    /// however large; the next read continues where it stopped.
    #[must_use]
    pub fn changes_max_bytes(self, bytes: usize) -> Self {
        self.edit(|i| i.changes_max_bytes = bytes.max(1))
    }

    /// Rows per snapshot chunk read from the store (default 4,096).
    #[must_use]
    pub fn snapshot_chunk_rows(self, rows: usize) -> Self {
        self.edit(|i| i.snapshot_chunk_rows = rows.max(1))
    }

    /// Who may do what, from which Host and Origin (default: open, any Host, no CORS).
    #[must_use]
    pub fn security(self, security: Security) -> Self {
        self.edit(|i| i.security = Arc::new(security))
    }

    /// Time a client gets to send a request's headers before its connection is closed
    /// (default 30 s; at most one day, like every duration here).
    #[must_use]
    pub fn header_read_timeout(self, timeout: Duration) -> Self {
        let timeout = clamp_duration(timeout.max(Duration::from_millis(1)));
        self.edit(|i| i.limits.header_read_timeout = timeout)
    }

    /// Longest pause between two pieces of a request body before the request fails
    /// (default 60 s): idle time, so a long upload that keeps sending is never cut off.
    #[must_use]
    pub fn body_read_timeout(self, timeout: Duration) -> Self {
        let timeout = clamp_duration(timeout.max(Duration::from_millis(1)));
        self.edit(|i| i.limits.body_read_timeout = timeout)
    }

    /// Connections served at once (default 1,024, at most 2^20); further clients wait in
    /// the listen backlog until one closes.
    #[must_use]
    pub fn max_connections(self, connections: usize) -> Self {
        self.edit(|i| i.limits.max_connections = connections.clamp(1, MAX_CONNECTIONS))
    }

    /// Queries the server holds (default 10,000): a first write to a new query beyond it
    /// gets 403 and stores nothing. A purge (`DELETE /queries/{id}?purge=true`) frees a
    /// query's slot; a clear keeps it.
    #[must_use]
    pub fn max_queries(self, queries: usize) -> Self {
        self.edit(|i| i.limits.max_queries = queries)
    }

    /// Longest query id in bytes after percent-decoding (default 256, at most the store's
    /// 65,535); a longer id gets 400 on every route.
    #[must_use]
    pub fn max_query_id_bytes(self, bytes: usize) -> Self {
        let bytes = bytes.clamp(1, liveresults_core::rules::MAX_QUERY_ID_BYTES);
        self.edit(|i| i.limits.max_query_id_bytes = bytes)
    }

    /// Serves Durable Streams at `/v1/stream/{name}` from `streams` (default: none, so those
    /// paths answer 404).
    #[must_use]
    pub fn streams(self, streams: liveresults_streams::Streams) -> Self {
        self.edit(|i| i.streams = Some(streams))
    }

    /// Uses `token` as the shutdown signal (default: a fresh one; `serve` cancels it).
    #[must_use]
    pub fn shutdown(self, token: CancellationToken) -> Self {
        self.edit(|i| i.shutdown = token)
    }

    /// The shutdown signal: cancelling it ends live readers and stops ingest after the chunk
    /// in flight.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }

    /// The runtime the server feeds.
    pub fn runtime(&self) -> &RuntimeHandle {
        &self.inner.runtime
    }

    /// The server's own counters.
    pub fn metrics(&self) -> &ServerMetrics {
        &self.inner.metrics
    }
}
