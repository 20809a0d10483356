//! Durable Streams for liveresults: append-only byte streams at `/v1/stream/{name}`, spoken
//! over HTTP as the Durable Streams protocol (create, append, close, delete, metadata,
//! catch-up / long-poll / SSE reads, idempotent producers, TTLs and forks).
//!
//! The crate has one job, the protocol, in three layers:
//!
//! - [`store`]: what a backend keeps and writes atomically ([`StreamStore`]), with an
//!   in-memory backend ([`MemoryStreamStore`], `serve --memory`) and a RocksDB one
//!   ([`RocksStreamStore`], `serve --data DIR`, in `DIR/streams`);
//! - the engine ([`engine`], [`create`], [`append`], [`read`]): the protocol's rules over a
//!   store, with every stream's meta in memory and live readers woken per stream;
//! - [`http`]: the axum handlers, mounted by `liveresults-server` behind its access control.
//!
//! [`Streams`] ties a store, the engine and the settings together; [`router`] serves it.

pub mod append;
mod base64;
pub mod create;
pub mod engine;
pub mod error;
mod follow;
pub mod http;
pub mod json;
pub mod memory;
pub mod meta;
pub mod metrics;
pub mod offset;
pub mod read;
pub mod rocks;
pub mod store;
pub mod subscription;
pub mod time;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use append::{AppendRequest, AppendStatus, Appended};
pub use create::{CreateRequest, Created, ForkRequest};
pub use engine::Engine;
pub use error::StreamError;
pub use http::router;
pub use memory::MemoryStreamStore;
pub use rocks::RocksStreamStore;
pub use store::{Change, StoreError, StreamStore};

/// Longest duration any setting may have: one day, so no deadline arithmetic can overflow.
const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

/// Default of [`StreamsConfig::max_streams`].
pub const DEFAULT_MAX_STREAMS: usize = 100_000;
/// Default of [`StreamsConfig::max_producers`].
pub const DEFAULT_MAX_PRODUCERS: usize = 10_000;

/// Settings of the streams service.
#[derive(Clone, Debug)]
pub struct StreamsConfig {
    /// How long a long-poll waits for data before answering 204 (default 30 s).
    pub long_poll_timeout: Duration,
    /// How long one SSE connection lasts before the server ends it; clients reconnect from
    /// their last offset (default 60 s, as the protocol suggests for CDN collapsing).
    pub sse_max_duration: Duration,
    /// Interval of SSE keep-alive comments while nothing is appended (default 15 s).
    pub sse_keep_alive: Duration,
    /// Largest append or create body in bytes (default 16 MiB): a body is held in memory until
    /// it is written atomically, so this bounds what one request can hold.
    pub max_append_bytes: usize,
    /// Bytes per read response — a catch-up or long-poll body, one SSE data event (default
    /// 4 MiB; a JSON response always carries at least one whole append).
    pub max_read_bytes: usize,
    /// Interval of the expiry sweep (default 1 s).
    pub sweep_interval: Duration,
    /// Streams the service holds at most (default 100,000; soft-deleted ones that forks
    /// still read count): every stream's meta lives in memory and its data on disk, so a
    /// client with the write role must not be able to create millions. A create beyond it
    /// answers 403 (`too-many-streams`) and creates nothing; re-creating an existing stream
    /// still succeeds. On a shared store the count is this host's view of the streams.
    pub max_streams: usize,
    /// Idempotent producers one stream keeps state for at most (default 10,000): each
    /// producer id's state is kept as long as the stream. A producer's first append beyond
    /// it answers 403 (`too-many-producers`) and appends nothing; known producers go on.
    /// Enforced where the store counts producers (memory, RocksDB).
    pub max_producers: usize,
    /// Caps of the subscription API (subscriptions per server, streams per subscription).
    pub subscriptions: subscription::SubscriptionLimits,
}

impl Default for StreamsConfig {
    fn default() -> Self {
        StreamsConfig {
            long_poll_timeout: Duration::from_secs(30),
            sse_max_duration: Duration::from_secs(60),
            sse_keep_alive: Duration::from_secs(15),
            max_append_bytes: 16 << 20,
            max_read_bytes: 4 << 20,
            sweep_interval: Duration::from_secs(1),
            max_streams: DEFAULT_MAX_STREAMS,
            max_producers: DEFAULT_MAX_PRODUCERS,
            subscriptions: subscription::SubscriptionLimits::default(),
        }
    }
}

impl StreamsConfig {
    /// Sets [`StreamsConfig::long_poll_timeout`].
    #[must_use]
    pub fn long_poll_timeout(mut self, timeout: Duration) -> Self {
        self.long_poll_timeout = timeout.min(MAX_DURATION);
        self
    }

    /// Sets [`StreamsConfig::sse_max_duration`].
    #[must_use]
    pub fn sse_max_duration(mut self, duration: Duration) -> Self {
        self.sse_max_duration = duration.min(MAX_DURATION);
        self
    }

    /// Sets [`StreamsConfig::sse_keep_alive`] (at least 10 ms).
    #[must_use]
    pub fn sse_keep_alive(mut self, interval: Duration) -> Self {
        self.sse_keep_alive = interval.clamp(Duration::from_millis(10), MAX_DURATION);
        self
    }

    /// Sets [`StreamsConfig::max_append_bytes`] (at least 1).
    #[must_use]
    pub fn max_append_bytes(mut self, bytes: usize) -> Self {
        self.max_append_bytes = bytes.max(1);
        self
    }

    /// Sets [`StreamsConfig::max_read_bytes`] (at least 1).
    #[must_use]
    pub fn max_read_bytes(mut self, bytes: usize) -> Self {
        self.max_read_bytes = bytes.max(1);
        self
    }

    /// Sets [`StreamsConfig::max_streams`] (at least 1).
    #[must_use]
    pub fn max_streams(mut self, streams: usize) -> Self {
        self.max_streams = streams.max(1);
        self
    }

    /// Sets [`StreamsConfig::max_producers`] (at least 1).
    #[must_use]
    pub fn max_producers(mut self, producers: usize) -> Self {
        self.max_producers = producers.max(1);
        self
    }

    /// Sets [`StreamsConfig::sweep_interval`] (at least 10 ms).
    #[must_use]
    pub fn sweep_interval(mut self, interval: Duration) -> Self {
        self.sweep_interval = interval.clamp(Duration::from_millis(10), MAX_DURATION);
        self
    }
}

/// The streams service: engine, settings and the expiry sweeper. Cheap to clone.
#[derive(Clone)]
pub struct Streams {
    pub(crate) engine: Arc<Engine>,
    pub(crate) config: Arc<StreamsConfig>,
    pub(crate) metrics: Arc<metrics::StreamMetrics>,
    stop: CancellationToken,
    pub(crate) subscriptions: Arc<subscription::Subscriptions>,
}

impl std::fmt::Debug for Streams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streams")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Streams {
    /// Loads every stream of `store` and starts the expiry sweeper (on the current tokio
    /// runtime; it stops at [`Streams::close`]).
    pub async fn open(
        store: Arc<dyn StreamStore>,
        config: StreamsConfig,
    ) -> Result<Streams, StoreError> {
        // A shared store's changes, subscribed before the load so none falls in between.
        let changes = store.changes();
        let engine = Arc::new(Engine::open(store).await?);
        let stop = CancellationToken::new();
        if let Some(changes) = changes {
            follow::spawn(Arc::downgrade(&engine), changes, stop.clone());
        }
        let sweeper = Arc::downgrade(&engine);
        let (interval, stopped) = (config.sweep_interval, stop.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = stopped.cancelled() => return,
                }
                let Some(engine) = sweeper.upgrade() else {
                    return;
                };
                if let Err(e) = engine.sweep().await {
                    tracing::warn!(error = %e, "stream expiry sweep failed; retrying");
                }
            }
        });
        let subscriptions = subscription::Subscriptions::open(
            Arc::clone(&engine),
            config.subscriptions,
            stop.clone(),
        )
        .await?;
        Ok(Streams {
            engine,
            config: Arc::new(config),
            metrics: Arc::default(),
            stop,
            subscriptions,
        })
    }

    /// An in-memory service (nothing survives the process).
    pub async fn memory(config: StreamsConfig) -> Result<Streams, StoreError> {
        Streams::open(Arc::new(MemoryStreamStore::new()), config).await
    }

    /// The engine, for direct (non-HTTP) use.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The settings.
    pub fn config(&self) -> &StreamsConfig {
        &self.config
    }

    /// The subscription API's service.
    pub fn subscriptions(&self) -> &Arc<subscription::Subscriptions> {
        &self.subscriptions
    }

    /// The service's counters now, for a metrics scrape.
    pub fn counts(&self) -> metrics::StreamCounts {
        self.metrics.counts(self.engine.stream_count())
    }

    /// Stops the sweeper and makes every acknowledged write durable.
    pub async fn close(&self) -> Result<(), StoreError> {
        self.stop.cancel();
        self.engine.store.close().await
    }
}
