//! Reading while the lock is held: other consumers' entries first, then each stream's own
//! pending entries in id order, then new entries; refused entries pause their stream only.

use std::time::Duration;

use liveresults_runtime::{CommittedSequences, RuntimeHandle};
use tokio::time::Instant;

use crate::commands::Commands;
use crate::config::{millis, StreamSourceConfig};
use crate::decode::decode_entry;
use crate::error::{EntryError, StreamSourceError};
use crate::inflight::{Counters, InFlight};
use crate::lock::LockKeeper;
use crate::refusal::{self, Kind, Phase, StreamState};
use crate::reply::Entry;
use crate::shutdown::Shutdown;

/// First and longest wait before retrying after a lost connection or a busy server.
pub(crate) const RETRY_MIN: Duration = Duration::from_millis(50);
pub(crate) const RETRY_MAX: Duration = Duration::from_secs(5);

/// Why reading stopped without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The shutdown signal fired.
    Shutdown,
    /// The lock was lost (or could not be renewed in time).
    LockLost,
}

/// Errors a new session cures: a lost connection, a busy or loading server, and a group (or
/// stream) that disappeared, which the session creates again.
fn retryable(e: &StreamSourceError) -> bool {
    e.is_transient()
        || matches!(e, StreamSourceError::Redis { source, .. }
            if matches!(source.code(), Some("NOGROUP" | "UNBLOCKED")))
}

/// One run's state.
pub(crate) struct Run<'a> {
    pub config: &'a StreamSourceConfig,
    pub handle: &'a RuntimeHandle,
    pub counters: &'a Counters,
    pub redis: Commands,
    pub inflight: InFlight,
    /// The stream names, in configuration order (entries refer to streams by index).
    pub names: Vec<&'a str>,
    pub dead_letters: Vec<String>,
    /// Each stream's reading, by index.
    pub streams: Vec<StreamState>,
    /// Whether the wait for other consumers' entries is done since the lock was taken.
    pub waited_for_others: bool,
    /// The wait before the next retry.
    pub retry: Duration,
}

impl Run<'_> {
    /// Reads until shutdown or until the lock is lost, starting a new session after each
    /// error a new session cures.
    pub async fn while_locked(
        &mut self,
        shutdown: &mut Shutdown<'_>,
        lock: &LockKeeper,
    ) -> Result<Ended, StreamSourceError> {
        self.waited_for_others = false;
        loop {
            match self.session(shutdown, lock).await {
                Err(e) if retryable(&e) => {
                    tracing::warn!(error = %e, retry_in = ?self.retry, "redis stream source retrying");
                    // Answers keep coming without Redis; their acknowledgements wait.
                    self.settle_all().await?;
                    if !shutdown.sleep(self.retry).await {
                        return Ok(Ended::Shutdown);
                    }
                    self.retry = (self.retry * 2).min(RETRY_MAX);
                }
                other => return other,
            }
        }
    }

    /// From (re)connection on: groups, other consumers' entries, each stream's pending
    /// entries in id order, then new entries. Rerun after a retryable error, so every step is
    /// safe to repeat.
    async fn session(
        &mut self,
        shutdown: &mut Shutdown<'_>,
        lock: &LockKeeper,
    ) -> Result<Ended, StreamSourceError> {
        for name in &self.names {
            self.redis.create_group(name).await?;
        }
        self.flush_acks().await?;
        if !self.waited_for_others {
            self.wait_for_other_consumers(shutdown).await?;
            self.waited_for_others = true;
        }
        if lock.usable().is_none() {
            return Ok(Ended::LockLost);
        }
        self.claim_ids().await?;
        for state in &mut self.streams {
            if !state.is_paused() {
                state.probe();
            }
        }
        self.consume(shutdown, lock).await
    }

    /// After taking the lock, entries pending with other consumers (the previous holder's)
    /// may be the oldest of the stream, and a query's events must be committed in order:
    /// reading new entries first would make a gap (which stops a `Strict` query). So wait —
    /// at most `claim_idle` in all — until the oldest pending entries of other consumers can
    /// be claimed (or were acknowledged by their owner, finishing what it had in flight).
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

    /// Until shutdown or the lock's loss: pending entries of streams catching up, new entries
    /// of the others, paused streams resumed when their pause ends, and the periodic claim of
    /// dead consumers' entries.
    async fn consume(
        &mut self,
        shutdown: &mut Shutdown<'_>,
        lock: &LockKeeper,
    ) -> Result<Ended, StreamSourceError> {
        let every = self.config.claim_interval();
        let mut next_claim = Instant::now() + every;
        loop {
            self.settle_ready()?;
            self.flush_acks().await?;
            if shutdown.fired_now() {
                return Ok(Ended::Shutdown);
            }
            let Some(usable) = lock.usable() else {
                return Ok(Ended::LockLost);
            };
            self.resolve_pauses().await?;
            if Instant::now() >= next_claim {
                self.claim_entries().await?;
                next_claim = Instant::now() + every;
                continue;
            }
            if let Some(index) = self.catching_up() {
                self.read_pending(index).await?;
                continue;
            }
            // Nothing waits past the next claim or the end of a pause, nor past the lock.
            let wake = (self.streams.iter())
                .filter_map(|s| match s.phase {
                    Phase::Paused { until, .. } => until,
                    _ => None,
                })
                .fold(next_claim, Instant::min);
            let wait = (self.config.block)
                .min(wake.saturating_duration_since(Instant::now()))
                .min(usable)
                .max(Duration::from_millis(1));
            let live: Vec<usize> = (0..self.names.len())
                .filter(|&i| matches!(self.streams[i].phase, Phase::Live))
                .collect();
            let room = self.config.batch - self.inflight.len();
            if live.is_empty() || room < live.len() {
                self.wait_for_answer(shutdown, wait).await;
                continue;
            }
            let names: Vec<&str> = live.iter().map(|&i| self.names[i]).collect();
            let new_ids = vec![">"; live.len()];
            let count = room / live.len();
            let read = if self.inflight.is_empty() {
                // Nothing waits for an acknowledgement: block.
                let reading = self.redis.read(&names, &new_ids, count, Some(wait));
                match shutdown.guard(reading).await {
                    Some(read) => read?,
                    None => continue,
                }
            } else {
                self.redis.read(&names, &new_ids, count, None).await?
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
                self.wait_for_answer(shutdown, wait).await;
            }
        }
    }

    /// Waits up to `wait` for the next answer (or just `wait` when nothing is in flight).
    async fn wait_for_answer(&mut self, shutdown: &mut Shutdown<'_>, wait: Duration) {
        if self.inflight.is_empty() {
            shutdown.sleep(wait).await;
        } else {
            let answer = tokio::time::timeout(wait, self.inflight.settle_next(self.counters));
            shutdown.guard(answer).await;
        }
    }

    /// A stream whose pending entries can be read now: it is catching up, and either reads
    /// in pages or its one probe entry was answered.
    fn catching_up(&mut self) -> Option<usize> {
        for (index, state) in self.streams.iter_mut().enumerate() {
            let Phase::Pending { after, probe } = &mut state.phase else {
                continue;
            };
            if !*probe {
                return Some(index);
            }
            if self.inflight.of_stream(index) == 0 {
                if after != "0" {
                    // The probe passed: the rest in pages.
                    *probe = false;
                }
                return Some(index);
            }
        }
        None
    }

    /// The next page (one entry when probing) of stream `index`'s pending entries; when none
    /// is left, the stream reads new entries.
    async fn read_pending(&mut self, index: usize) -> Result<(), StreamSourceError> {
        let room = self.make_room().await?;
        let Phase::Pending { after, probe } = &self.streams[index].phase else {
            return Ok(()); // paused meanwhile
        };
        let count = if *probe { 1 } else { room };
        let after = after.clone();
        let read = (self.redis)
            .read(&[self.names[index]], &[after.as_str()], count, None)
            .await?;
        let entries: Vec<Entry> = read.into_iter().flat_map(|(_, e)| e).collect();
        match (&mut self.streams[index].phase, entries.last()) {
            (phase @ Phase::Pending { .. }, None) => *phase = Phase::Live,
            (Phase::Pending { after, .. }, Some(last)) => after.clone_from(&last.id),
            _ => {}
        }
        self.handle_entries(index, entries).await
    }

    /// Claims and handles the entries of consumers idle for `claim_idle` (dead ones), on
    /// streams reading new entries (a paused or catching-up stream's are claimed later).
    async fn claim_entries(&mut self) -> Result<(), StreamSourceError> {
        for index in 0..self.names.len() {
            let mut cursor = "0-0".to_owned();
            loop {
                let room = self.make_room().await?;
                if !matches!(self.streams[index].phase, Phase::Live) {
                    break;
                }
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
        self.settle_ready()?;
        while self.inflight.len() >= self.config.batch {
            self.inflight.settle_next(self.counters).await;
            self.note_refusals()?;
        }
        self.flush_acks().await?;
        Ok(self.config.batch - self.inflight.len())
    }

    /// Handles entries of stream `index` in order, until one is refused (the rest stay
    /// pending, read again after the pause). What is committed is looked up afresh for each
    /// read, so a clear made meanwhile is seen.
    async fn handle_entries(
        &mut self,
        index: usize,
        entries: Vec<Entry>,
    ) -> Result<(), StreamSourceError> {
        let mut committed = CommittedSequences::new();
        for entry in entries {
            if self.streams[index].is_paused() {
                break;
            }
            self.handle_entry(index, entry, &mut committed).await?;
        }
        self.note_refusals()
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
        let submitted = match committed.covers(self.handle, &event).await {
            Ok(true) => {
                Counters::add(&self.counters.already_committed, 1);
                self.inflight.ack(index, entry.id);
                return Ok(());
            }
            Ok(false) => self.handle.submit_tracked(event).await,
            Err(e) => Err(e),
        };
        match submitted {
            Ok(pending) => self.inflight.push(index, entry.id, pending),
            Err(e) => self.inflight.refused.push((index, entry.id, e)),
        }
        Ok(())
    }

    /// Takes every answer already there.
    fn settle_ready(&mut self) -> Result<(), StreamSourceError> {
        self.inflight.settle_ready(self.counters);
        self.note_refusals()
    }

    /// Waits for every answer.
    pub async fn settle_all(&mut self) -> Result<(), StreamSourceError> {
        self.inflight.settle_all(self.counters).await;
        self.note_refusals()
    }

    /// Pauses the streams of refused entries; a runtime going away ends the run. A stream
    /// with a commit since starts its next pause short again.
    fn note_refusals(&mut self) -> Result<(), StreamSourceError> {
        for (index, committed) in self.inflight.committed.iter_mut().enumerate() {
            if std::mem::take(committed) {
                self.streams[index].pause = self.config.refusal_pause;
            }
        }
        let mut fatal = None;
        for (index, id, error) in std::mem::take(&mut self.inflight.refused) {
            Counters::add(&self.counters.refused, 1);
            if refusal::kind(&error) == Kind::Fatal {
                fatal.get_or_insert((index, id, error));
            } else {
                self.streams[index].refused(id, error);
            }
        }
        match fatal {
            Some((index, id, error)) => Err(StreamSourceError::Submit {
                stream: self.names[index].to_owned(),
                id,
                source: Box::new(error),
            }),
            None => Ok(()),
        }
    }

    /// For each paused stream with nothing in flight: its head entry is dead-lettered if it
    /// was refused for good `max_deliveries` times (the stream then goes on at once), else
    /// the stream waits its pause out; a stream whose pause ended reads its pending entries
    /// again, one at a time.
    async fn resolve_pauses(&mut self) -> Result<(), StreamSourceError> {
        for index in 0..self.names.len() {
            if self.inflight.of_stream(index) > 0 {
                continue;
            }
            let state = &mut self.streams[index];
            let Phase::Paused { head, error, until } = &mut state.phase else {
                continue;
            };
            match until {
                Some(until) if Instant::now() >= *until => state.probe(),
                Some(_) => {}
                None => {
                    let permanent = refusal::kind(error) == Kind::Permanent;
                    let (head, error) = (head.clone(), error.to_string());
                    if permanent && self.dead_letter_refused(index, &head, &error).await? {
                        self.streams[index].probe();
                        continue;
                    }
                    let state = &mut self.streams[index];
                    let pause = state.pause;
                    state.pause = (pause * 2).min(self.config.max_refusal_pause());
                    if let Phase::Paused { until, .. } = &mut state.phase {
                        *until = Some(Instant::now() + pause);
                    }
                    tracing::warn!(stream = self.names[index], id = %head, %error,
                        retry_in = ?pause,
                        "the runtime refused an entry: its stream pauses, the others go on");
                }
            }
        }
        Ok(())
    }

    /// Moves the refused entry `id` of stream `index` to the dead-letter stream if Redis
    /// counted `max_deliveries` deliveries of it; whether it is gone from the pending list.
    async fn dead_letter_refused(
        &mut self,
        index: usize,
        id: &str,
        error: &str,
    ) -> Result<bool, StreamSourceError> {
        let name = self.names[index];
        let Some(pending) = self.redis.pending_entry(name, id).await? else {
            return Ok(true); // acknowledged meanwhile (its event found committed)
        };
        if pending.deliveries < u64::from(self.config.max_deliveries) {
            return Ok(false);
        }
        let Some(entry) = self.redis.entry(name, id).await? else {
            // Deleted from the stream while pending: nothing to keep.
            Counters::add(&self.counters.vanished, 1);
            self.redis.ack(name, &[id.to_owned()]).await?;
            return Ok(true);
        };
        let fields = entry.fields.unwrap_or_default();
        let reason = format!(
            "refused by the runtime after {} deliveries: {error}",
            pending.deliveries
        );
        let dead_letter = &self.dead_letters[index];
        tracing::warn!(stream = name, %id, %reason, %dead_letter,
            "entry refused for good: moved to the dead-letter stream");
        (self.redis)
            .dead_letter(name, dead_letter, id, &fields, &reason)
            .await?;
        Counters::add(&self.counters.dead_lettered, 1);
        Ok(true)
    }

    /// Sends the acknowledgements due.
    pub async fn flush_acks(&mut self) -> Result<(), StreamSourceError> {
        for (name, ids) in self.names.iter().zip(self.inflight.acks.iter_mut()) {
            if !ids.is_empty() {
                self.redis.ack(name, ids).await?;
                ids.clear();
            }
        }
        Ok(())
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
