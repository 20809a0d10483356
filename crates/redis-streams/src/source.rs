//! The consumer: reads entries, submits their events, acknowledges them once committed.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use liveresults_redis::is_transient;
use liveresults_runtime::RuntimeHandle;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::commands::Commands;
use crate::config::StreamSourceConfig;
use crate::error::StreamSourceError;
use crate::inflight::{Counters, InFlight, StreamReport};
use crate::lock::StreamLock;
use crate::refusal::StreamState;
use crate::session::{Ended, Run, RETRY_MAX, RETRY_MIN};
use crate::shutdown::Shutdown;

/// How much longer than a blocking read a reply may take before the connection is taken for
/// lost.
const RESPONSE_MARGIN: Duration = Duration::from_secs(30);

/// A Redis Streams source: consumes Drasi result events from streams through a consumer group
/// into a runtime (see the crate docs for the guarantees).
pub struct StreamSource {
    client: redis::Client,
    config: StreamSourceConfig,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for StreamSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamSource")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl StreamSource {
    /// A source reading from the server at `redis_url` (`redis://[user:password@]host:port[/db]`).
    /// Checks the configuration and the URL; connects only when run.
    pub fn new(redis_url: &str, config: StreamSourceConfig) -> Result<Self, StreamSourceError> {
        config.validate()?;
        let client = redis::Client::open(redis_url).map_err(StreamSourceError::Url)?;
        Ok(StreamSource {
            client,
            config,
            counters: Arc::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &StreamSourceConfig {
        &self.config
    }

    /// What the source has done so far (all runs together); readable while it runs.
    pub fn report(&self) -> StreamReport {
        self.counters.report()
    }

    /// Consumes until `shutdown` resolves (then what is in flight is committed and
    /// acknowledged before this returns) or until something retrying cannot cure happens.
    ///
    /// It first takes the streams' consumer lock, waiting as a stand-by while another
    /// consumer holds it; if the lock is lost, it stops reading, finishes and acknowledges
    /// what is in flight, and waits as a stand-by again. Lost connections and busy servers
    /// are retried with backoff for as long as it takes; a group deleted under it (a server
    /// restarted without persistence) is created again. An entry the runtime refuses pauses
    /// its stream only (see the crate docs). It fails when the runtime shuts down under it or
    /// Redis refuses a command for good.
    pub async fn run(
        &self,
        handle: &RuntimeHandle,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<StreamReport, StreamSourceError> {
        let mut shutdown = Shutdown::new(shutdown);
        // The lock has a connection of its own: a blocking read holds up every command
        // behind it on its connection, and renewals must not wait for one.
        let Some(conn) = self.connect(&mut shutdown).await? else {
            return Ok(self.report());
        };
        let Some(mut lock_conn) = self.connect(&mut shutdown).await? else {
            return Ok(self.report());
        };
        let names: Vec<&str> = (self.config.streams.iter())
            .map(|s| s.stream.as_str())
            .collect();
        tracing::info!(
            streams = ?names,
            group = %self.config.group,
            consumer = %self.config.consumer,
            "consuming redis streams"
        );
        let lock = Arc::new(StreamLock::new(
            &names,
            &self.config.group,
            &self.config.consumer,
            self.config.lock_ttl,
        ));
        let mut run = Run {
            config: &self.config,
            handle,
            counters: &self.counters,
            redis: Commands {
                conn,
                group: self.config.group.clone(),
                consumer: self.config.consumer.clone(),
            },
            inflight: InFlight::new(names.len()),
            dead_letters: (self.config.streams.iter())
                .map(|s| s.dead_letter_stream())
                .collect(),
            streams: (names.iter())
                .map(|_| StreamState::new(self.config.refusal_pause))
                .collect(),
            names,
            waited_for_others: false,
            retry: RETRY_MIN,
        };
        let outcome = loop {
            let keeper = match lock.acquire(&lock_conn, &mut shutdown).await {
                Ok(Some(keeper)) => keeper,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            };
            let ended = run.while_locked(&mut shutdown, &keeper).await;
            // Whatever ended it: wait for every answer and acknowledge what was committed,
            // then give the lock back so a stand-by takes over at once.
            let settled = run.settle_all().await;
            if let Err(e) = run.flush_acks().await {
                // Nothing is lost: those entries are read again and acknowledged without
                // being submitted, since their events are committed.
                tracing::warn!(error = %e, unacknowledged = run.inflight.acks_waiting(),
                    "could not acknowledge every committed entry");
            }
            if let Err(e) = keeper.release(&mut lock_conn).await {
                tracing::warn!(error = %e, "could not release the consumer lock (it expires)");
            }
            match ended.and_then(|ended| settled.map(|()| ended)) {
                Ok(Ended::Shutdown) => break Ok(()),
                Ok(Ended::LockLost) => {
                    tracing::warn!("consumer lock lost: in-flight entries settled, stand-by again");
                }
                Err(e) => break Err(e),
            }
        };
        outcome?;
        tracing::info!(report = ?self.report(), "redis stream source stopped");
        Ok(self.report())
    }

    /// Connects, retrying while the server cannot be reached; `None` on shutdown.
    async fn connect(
        &self,
        shutdown: &mut Shutdown<'_>,
    ) -> Result<Option<ConnectionManager>, StreamSourceError> {
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(self.config.block + RESPONSE_MARGIN))
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_min_delay(RETRY_MIN)
            .set_max_delay(RETRY_MAX);
        let mut retry = RETRY_MIN;
        loop {
            let connecting =
                ConnectionManager::new_with_config(self.client.clone(), config.clone());
            let Some(connected) = shutdown.guard(connecting).await else {
                return Ok(None);
            };
            match connected {
                Ok(conn) => return Ok(Some(conn)),
                Err(e) if is_transient(&e) => {
                    tracing::warn!(error = %e, retry_in = ?retry, "cannot reach redis yet");
                    if !shutdown.sleep(retry).await {
                        return Ok(None);
                    }
                    retry = (retry * 2).min(RETRY_MAX);
                }
                Err(source) => {
                    return Err(StreamSourceError::Redis {
                        command: "connect",
                        stream: String::new(),
                        source,
                    })
                }
            }
        }
    }
}
