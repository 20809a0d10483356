//! Entries between their read and their acknowledgement: the submitted ones waiting for the
//! runtime's answer, the acknowledgements waiting to be sent, and the counters.

use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use liveresults_runtime::{Applied, Pending, SubmitError};

/// What a run did so far (see [`crate::StreamSource::report`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamReport {
    /// Entries read: new ones, this consumer's pending ones, claimed ones.
    pub read: u64,
    /// Entries acknowledged after the runtime committed their event durably.
    pub committed: u64,
    /// Entries acknowledged without committing anything: their event was already committed
    /// (a redelivery after a crash between a commit and its acknowledgement, a new group
    /// reading old history).
    pub already_committed: u64,
    /// Entries moved to the dead-letter stream (undecodable, too large, wrong query, refused
    /// by the runtime for good `max_deliveries` times).
    pub dead_lettered: u64,
    /// Refusals by the runtime: each left its entry pending and paused its stream.
    pub refused: u64,
    /// Entries claimed from consumers that stopped acknowledging them.
    pub claimed: u64,
    /// Pending entries deleted from the stream before they were read (acknowledged).
    pub vanished: u64,
}

/// The live counters behind [`StreamReport`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub read: AtomicU64,
    pub committed: AtomicU64,
    pub already_committed: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub refused: AtomicU64,
    pub claimed: AtomicU64,
    pub vanished: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn report(&self) -> StreamReport {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StreamReport {
            read: get(&self.read),
            committed: get(&self.committed),
            already_committed: get(&self.already_committed),
            dead_lettered: get(&self.dead_lettered),
            refused: get(&self.refused),
            claimed: get(&self.claimed),
            vanished: get(&self.vanished),
        }
    }
}

/// A submitted entry's answer: its stream (by index), its id, the runtime's outcome.
pub(crate) type Answer = (usize, String, Result<Applied, SubmitError>);

/// A refused entry: its stream (by index), its id, why.
pub(crate) type Refusal = (usize, String, SubmitError);

/// Submitted entries awaiting their answers, and acknowledgements awaiting their XACK.
pub(crate) struct InFlight {
    waiting: FuturesUnordered<BoxFuture<'static, Answer>>,
    /// Entries awaiting an answer, per stream (by index).
    per_stream: Vec<usize>,
    /// Ids to acknowledge, per stream (by index).
    pub acks: Vec<Vec<String>>,
    /// Refusals not yet looked at; their entries stay pending.
    pub refused: Vec<Refusal>,
    /// Per stream (by index): whether an entry was committed since the flag was cleared.
    pub committed: Vec<bool>,
}

impl InFlight {
    pub fn new(streams: usize) -> Self {
        InFlight {
            waiting: FuturesUnordered::new(),
            per_stream: vec![0; streams],
            acks: vec![Vec::new(); streams],
            refused: Vec::new(),
            committed: vec![false; streams],
        }
    }

    /// Entries of stream `index` submitted and not yet answered.
    pub fn of_stream(&self, index: usize) -> usize {
        self.per_stream.get(index).copied().unwrap_or(0)
    }

    /// Entries submitted and not yet answered.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Ids waiting for their XACK.
    pub fn acks_waiting(&self) -> usize {
        self.acks.iter().map(Vec::len).sum()
    }

    pub fn push(&mut self, stream: usize, id: String, pending: Pending) {
        if let Some(n) = self.per_stream.get_mut(stream) {
            *n += 1;
        }
        self.waiting
            .push(async move { (stream, id, pending.wait().await) }.boxed());
    }

    /// Queues the acknowledgement of an entry that needs no commit.
    pub fn ack(&mut self, stream: usize, id: String) {
        if let Some(acks) = self.acks.get_mut(stream) {
            acks.push(id);
        }
    }

    /// Takes every answer that has already arrived, without waiting.
    pub fn settle_ready(&mut self, counters: &Counters) {
        while let Some(Some(answer)) = self.waiting.next().now_or_never() {
            self.settle(answer, counters);
        }
    }

    /// Waits for the next answer (none if nothing is in flight).
    pub async fn settle_next(&mut self, counters: &Counters) {
        if let Some(answer) = self.waiting.next().await {
            self.settle(answer, counters);
        }
    }

    /// Waits for every answer.
    pub async fn settle_all(&mut self, counters: &Counters) {
        while let Some(answer) = self.waiting.next().await {
            self.settle(answer, counters);
        }
    }

    /// An answer: committed (or a redelivery the runtime recognised) is acknowledged; a
    /// refusal is kept, and its entry stays pending.
    fn settle(&mut self, (stream, id, outcome): Answer, counters: &Counters) {
        if let Some(n) = self.per_stream.get_mut(stream) {
            *n = n.saturating_sub(1);
        }
        match outcome {
            Ok(Applied::Committed { .. } | Applied::Deprovisioned) => {
                Counters::add(&counters.committed, 1);
                if let Some(flag) = self.committed.get_mut(stream) {
                    *flag = true;
                }
                self.ack(stream, id);
            }
            Ok(Applied::Skipped { .. }) => {
                Counters::add(&counters.already_committed, 1);
                self.ack(stream, id);
            }
            Err(e) => self.refused.push((stream, id, e)),
        }
    }
}
