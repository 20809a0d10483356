//! The consumer: reads entries, submits their events, acknowledges them once committed.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use liveresults_redis::is_transient;
use liveresults_runtime::{CommittedSequences, RuntimeHandle};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::time::Instant;

use crate::commands::Commands;
use crate::config::{millis, StreamSourceConfig};
use crate::decode::decode_entry;
use crate::error::{EntryError, StreamSourceError};
use crate::inflight::{Counters, InFlight, StreamReport};
use crate::reply::Entry;

/// How much longer than a blocking read a reply may take before the connection is taken for
/// lost.
const RESPONSE_MARGIN: Duration = Duration::from_secs(30);
/// First and longest wait before retrying after a lost connection or a busy server.
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(5);

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
    /// Lost connections and busy servers are retried with backoff for as long as it takes; a
    /// group deleted under it (a server restarted without persistence) is created again.
    /// It fails when the runtime refuses an event (the entry stays pending) or Redis refuses
    /// a command for good.
    pub async fn run(
        &self,
        handle: &RuntimeHandle,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<StreamReport, StreamSourceError> {
        let mut shutdown = Shutdown::new(shutdown);
        let Some(conn) = self.connect(&mut shutdown).await? else {
            return Ok(self.report());
        };
        let names: Vec<&str> = self
            .config
            .streams
            .iter()
            .map(|s| s.stream.as_str())
            .collect();
        tracing::info!(
            streams = ?names,
            group = %self.config.group,
            consumer = %self.config.consumer,
            "consuming redis streams"
        );
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
            dead_letters: self
                .config
                .streams
                .iter()
                .map(|s| s.dead_letter_stream())
                .collect(),
            names,
            waited_for_others: false,
            retry: RETRY_MIN,
        };
        let outcome = loop {
            match run.session(&mut shutdown).await {
                Ok(()) => break Ok(()),
                Err(e) if retryable(&e) => {
                    tracing::warn!(error = %e, retry_in = ?run.retry, "redis stream source retrying");
                    // Answers keep coming without Redis; their acknowledgements wait.
                    run.inflight.settle_all(run.counters).await;
                    if !shutdown.sleep(run.retry).await {
                        break Ok(());
                    }
                    run.retry = (run.retry * 2).min(RETRY_MAX);
                }
                Err(e) => break Err(e),
            }
        };
        // Whatever ended the run: wait for every answer and acknowledge what was committed.
        run.inflight.settle_all(run.counters).await;
        if let Err(e) = run.flush_acks().await {
            // Nothing is lost: those entries are read again and acknowledged without being
            // submitted, since their events are committed.
            tracing::warn!(error = %e, unacknowledged = run.inflight.acks_waiting(),
                "could not acknowledge every committed entry before stopping");
        }
        outcome?;
        run.check_refused()?;
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

/// Errors a new session cures: a lost connection, a busy or loading server, and a group (or
/// stream) that disappeared, which the session creates again.
fn retryable(e: &StreamSourceError) -> bool {
    match e {
        StreamSourceError::Redis { source, .. } => {
            is_transient(source) || matches!(source.code(), Some("NOGROUP" | "UNBLOCKED"))
        }
        _ => false,
    }
}

/// The caller's shutdown signal, remembered once it fired.
struct Shutdown<'a> {
    signal: Pin<Box<dyn Future<Output = ()> + Send + 'a>>,
    fired: bool,
}

impl<'a> Shutdown<'a> {
    fn new(signal: impl Future<Output = ()> + Send + 'a) -> Self {
        Shutdown {
            signal: Box::pin(signal),
            fired: false,
        }
    }

    /// Runs `work` unless the signal fires first (`None`; `work` is dropped).
    async fn guard<T>(&mut self, work: impl Future<Output = T>) -> Option<T> {
        if self.fired {
            return None;
        }
        tokio::select! {
            biased;
            () = &mut self.signal => {
                self.fired = true;
                None
            }
            out = work => Some(out),
        }
    }

    /// Whether the signal has fired, looking without waiting.
    fn fired_now(&mut self) -> bool {
        if !self.fired && (&mut self.signal).now_or_never().is_some() {
            self.fired = true;
        }
        self.fired
    }

    /// Sleeps `d`; `false` when the signal fired instead.
    async fn sleep(&mut self, d: Duration) -> bool {
        self.guard(tokio::time::sleep(d)).await.is_some()
    }
}

/// One run's state.
struct Run<'a> {
    config: &'a StreamSourceConfig,
    handle: &'a RuntimeHandle,
    counters: &'a Counters,
    redis: Commands,
    inflight: InFlight,
    /// The stream names, in configuration order (entries refer to streams by index).
    names: Vec<&'a str>,
    dead_letters: Vec<String>,
    /// Whether the start-up wait for other consumers' pending entries is done.
    waited_for_others: bool,
    /// The wait before the next retry.
    retry: Duration,
}

impl Run<'_> {
    /// From (re)connection to shutdown: groups, other consumers' entries, this consumer's
    /// pending entries in id order, then new entries. Rerun after a retryable error, so every
    /// step is safe to repeat.
    async fn session(&mut self, shutdown: &mut Shutdown<'_>) -> Result<(), StreamSourceError> {
        for name in &self.names {
            self.redis.create_group(name).await?;
        }
        self.flush_acks().await?;
        if !self.waited_for_others {
            self.wait_for_other_consumers(shutdown).await?;
            self.waited_for_others = true;
        }
        self.claim_ids().await?;
        self.read_own_pending(shutdown).await?;
        self.consume(shutdown).await
    }

    /// At start, entries pending with other consumers may be the oldest of the stream, and a
    /// query's events must be committed in order: reading new entries first would make a gap
    /// (which stops a `Strict` query). So wait — at most `claim_idle` in all — until the oldest
    /// pending entries of other consumers can be claimed (or were acknowledged by their live
    /// owner).
    async fn wait_for_other_consumers(
        &mut self,
        shutdown: &mut Shutdown<'_>,
    ) -> Result<(), StreamSourceError> {
        let claim_idle = millis(self.config.claim_idle);
        let deadline = Instant::now() + self.config.claim_idle;
        for name in &self.names {
            loop {
                let oldest = self.redis.oldest_pending(name, self.config.batch).await?;
                let soonest = (oldest.iter())
                    .filter(|p| p.consumer != self.config.consumer && p.idle_ms < claim_idle)
                    .map(|p| claim_idle - p.idle_ms)
                    .min();
                let left = deadline.saturating_duration_since(Instant::now());
                let Some(soonest) = soonest.filter(|_| !left.is_zero()) else {
                    break;
                };
                let wait = Duration::from_millis(soonest.saturating_add(10)).min(left);
                tracing::info!(
                    stream = name,
                    ?wait,
                    "entries pending with other consumers: waiting until they can be claimed"
                );
                if !shutdown.sleep(wait).await {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Takes over (ids only) every entry pending for at least `claim_idle` with any consumer,
    /// so that the read of this consumer's pending entries that follows sees them in id order.
    async fn claim_ids(&mut self) -> Result<(), StreamSourceError> {
        for name in &self.names {
            let mut cursor = "0-0".to_owned();
            loop {
                let claimed = (self.redis)
                    .autoclaim(
                        name,
                        self.config.claim_idle,
                        &cursor,
                        self.config.batch,
                        true,
                    )
                    .await?;
                note_claimed(self.counters, name, claimed.entries.len(), claimed.deleted);
                if claimed.cursor == "0-0" || claimed.cursor == cursor {
                    break;
                }
                cursor = claimed.cursor;
            }
        }
        Ok(())
    }

    /// This consumer's pending entries (read before a crash or a lost connection, or just
    /// claimed), oldest first.
    async fn read_own_pending(
        &mut self,
        shutdown: &mut Shutdown<'_>,
    ) -> Result<(), StreamSourceError> {
        for index in 0..self.names.len() {
            let mut after = "0".to_owned();
            while !shutdown.fired_now() {
                let room = self.make_room().await?;
                let read = (self.redis)
                    .read(&[self.names[index]], &[after.as_str()], room, None)
                    .await?;
                let entries: Vec<Entry> = read.into_iter().flat_map(|(_, e)| e).collect();
                let Some(last) = entries.last() else {
                    break;
                };
                after.clone_from(&last.id);
                self.handle_entries(index, entries).await?;
            }
        }
        Ok(())
    }

    /// New entries until shutdown, with the periodic claim of dead consumers' entries.
    async fn consume(&mut self, shutdown: &mut Shutdown<'_>) -> Result<(), StreamSourceError> {
        let every = self.config.claim_interval();
        let mut next_claim = Instant::now() + every;
        let new_ids = vec![">"; self.names.len()];
        loop {
            self.inflight.settle_ready(self.counters);
            self.check_refused()?;
            self.flush_acks().await?;
            if shutdown.fired_now() {
                return Ok(());
            }
            if Instant::now() >= next_claim {
                self.claim_entries().await?;
                next_claim = Instant::now() + every;
                continue;
            }
            let room = self.config.batch - self.inflight.len();
            if room < self.names.len() {
                shutdown
                    .guard(self.inflight.settle_next(self.counters))
                    .await;
                continue;
            }
            let count = room / self.names.len();
            let read = if self.inflight.is_empty() {
                // Nothing waits for an acknowledgement: block, but not past the next claim.
                let block = (self.config.block)
                    .min(next_claim.saturating_duration_since(Instant::now()))
                    .max(Duration::from_millis(1));
                let reading = self.redis.read(&self.names, &new_ids, count, Some(block));
                match shutdown.guard(reading).await {
                    Some(read) => read?,
                    None => continue,
                }
            } else {
                self.redis.read(&self.names, &new_ids, count, None).await?
            };
            self.retry = RETRY_MIN;
            let mut any = false;
            for (name, entries) in read {
                let Some(index) = self.names.iter().position(|n| *n == name) else {
                    return Err(StreamSourceError::Reply {
                        command: "XREADGROUP",
                        detail: format!("entries of stream {name:?}, which was not read"),
                    });
                };
                any |= !entries.is_empty();
                self.handle_entries(index, entries).await?;
            }
            if !any && !self.inflight.is_empty() {
                // Nothing new: wait a little for an answer to acknowledge, then look again.
                let answer = tokio::time::timeout(
                    self.config.block,
                    self.inflight.settle_next(self.counters),
                );
                shutdown.guard(answer).await;
            }
        }
    }

    /// Claims and handles the entries of consumers idle for `claim_idle` (dead ones).
    async fn claim_entries(&mut self) -> Result<(), StreamSourceError> {
        for index in 0..self.names.len() {
            let mut cursor = "0-0".to_owned();
            loop {
                let room = self.make_room().await?;
                let claimed = (self.redis)
                    .autoclaim(
                        self.names[index],
                        self.config.claim_idle,
                        &cursor,
                        room,
                        false,
                    )
                    .await?;
                let (claimed_n, deleted) = (claimed.entries.len(), claimed.deleted);
                note_claimed(self.counters, self.names[index], claimed_n, deleted);
                self.handle_entries(index, claimed.entries).await?;
                if claimed.cursor == "0-0" || claimed.cursor == cursor {
                    break;
                }
                cursor = claimed.cursor;
            }
        }
        Ok(())
    }

    /// Waits until fewer than `batch` entries are in flight, sending the acknowledgements
    /// due; returns the room.
    async fn make_room(&mut self) -> Result<usize, StreamSourceError> {
        self.inflight.settle_ready(self.counters);
        while self.inflight.len() >= self.config.batch {
            self.inflight.settle_next(self.counters).await;
        }
        self.check_refused()?;
        self.flush_acks().await?;
        Ok(self.config.batch - self.inflight.len())
    }

    /// Handles entries of stream `index` in order. What is committed is looked up afresh for
    /// each read, so a clear made meanwhile is seen.
    async fn handle_entries(
        &mut self,
        index: usize,
        entries: Vec<Entry>,
    ) -> Result<(), StreamSourceError> {
        let mut committed = CommittedSequences::new();
        for entry in entries {
            self.handle_entry(index, entry, &mut committed).await?;
        }
        self.check_refused()
    }

    /// One entry: dead-lettered if it is no event of the stream's query; acknowledged at once
    /// if its event is already committed; otherwise submitted, and acknowledged when the
    /// runtime answers that it is committed.
    async fn handle_entry(
        &mut self,
        index: usize,
        entry: Entry,
        committed: &mut CommittedSequences,
    ) -> Result<(), StreamSourceError> {
        Counters::add(&self.counters.read, 1);
        let Some(fields) = entry.fields else {
            Counters::add(&self.counters.vanished, 1);
            self.inflight.ack(index, entry.id);
            return Ok(());
        };
        let spec = &self.config.streams[index];
        let decoded = decode_entry(&fields, &self.config.field, self.config.max_entry_bytes)
            .and_then(|event| match &spec.query_id {
                Some(expected) if event.query_id() != expected => Err(EntryError::WrongQuery {
                    expected: expected.clone(),
                    found: event.query_id().to_owned(),
                }),
                _ => Ok(event),
            });
        let event = match decoded {
            Ok(event) => event,
            Err(reason) => {
                let dead_letter = &self.dead_letters[index];
                tracing::warn!(stream = %spec.stream, id = %entry.id, %reason, %dead_letter,
                    "entry is not an event: moved to the dead-letter stream");
                let reason = reason.to_string();
                (self.redis)
                    .dead_letter(&spec.stream, dead_letter, &entry.id, &fields, &reason)
                    .await?;
                Counters::add(&self.counters.dead_lettered, 1);
                return Ok(());
            }
        };
        let refused = |source| StreamSourceError::Submit {
            stream: spec.stream.clone(),
            id: entry.id.clone(),
            source: Box::new(source),
        };
        if committed
            .covers(self.handle, &event)
            .await
            .map_err(refused)?
        {
            Counters::add(&self.counters.already_committed, 1);
            self.inflight.ack(index, entry.id);
            return Ok(());
        }
        let pending = self.handle.submit_tracked(event).await.map_err(refused)?;
        self.inflight.push(index, entry.id, pending);
        Ok(())
    }

    /// Sends the acknowledgements due.
    async fn flush_acks(&mut self) -> Result<(), StreamSourceError> {
        for (name, ids) in self.names.iter().zip(self.inflight.acks.iter_mut()) {
            if !ids.is_empty() {
                self.redis.ack(name, ids).await?;
                ids.clear();
            }
        }
        Ok(())
    }

    /// The first refusal the runtime answered, as the run's error.
    fn check_refused(&mut self) -> Result<(), StreamSourceError> {
        match self.inflight.refused.take() {
            Some((index, id, source)) => Err(StreamSourceError::Submit {
                stream: self.names[index].to_owned(),
                id,
                source: Box::new(source),
            }),
            None => Ok(()),
        }
    }
}

/// Counts a claim: the entries taken over, and the pending entries Redis found deleted from
/// the stream (and dropped from the pending list itself).
fn note_claimed(counters: &Counters, stream: &str, claimed: usize, deleted: usize) {
    Counters::add(&counters.vanished, deleted as u64);
    if claimed > 0 {
        tracing::info!(
            stream,
            claimed,
            "claimed entries of a consumer that stopped acknowledging"
        );
        Counters::add(&counters.claimed, claimed as u64);
    }
}
