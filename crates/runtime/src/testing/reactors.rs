//! Test reactions: a recorder of deliveries (optionally slow, held at a gate, durable,
//! failing, or checking that each change is already committed) and a durable materialized
//! view.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::ReactionError;
use crate::reaction::{ChangeEvent, Delivery, Reaction};
use crate::reactions::MaterializedView;
use async_trait::async_trait;
use liveresults_core::ResultStore;
use tokio::sync::Semaphore;

/// A short, comparable description of one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// `Delivery::Reset` with its epoch.
    Reset(String, u64),
    /// `Delivery::SnapshotRows` with its row count.
    SnapshotRows(String, usize),
    /// `Delivery::SnapshotDone` with its sequence.
    SnapshotDone(String, Option<u64>),
    /// `Delivery::Change`: epoch, first and last sequence.
    Change(String, u64, u64, u64),
}

/// Records every delivery; optionally sleeps in each, waits at a gate, fails, or checks the
/// store.
pub struct Recorder {
    id: String,
    durable: bool,
    config_hash: u64,
    delay: Duration,
    gate: Option<Arc<Semaphore>>,
    fail_changes: bool,
    /// Every delivery handled, in order.
    pub seen: Mutex<Vec<Seen>>,
    /// Row events (upstream batches) delivered in changes, over all queries.
    pub events: AtomicUsize,
    /// When set, every `Change` must already be committed in this store when delivered.
    check_durable: Option<Arc<dyn ResultStore>>,
    /// Changes delivered before the store had them (see [`Recorder::checking`]).
    pub violations: Mutex<Vec<String>>,
}

impl Recorder {
    /// A non-durable recorder.
    pub fn new(id: &str) -> Self {
        Recorder {
            id: id.to_owned(),
            durable: false,
            config_hash: 0,
            delay: Duration::ZERO,
            gate: None,
            fail_changes: false,
            seen: Mutex::new(Vec::new()),
            events: AtomicUsize::new(0),
            check_durable: None,
            violations: Mutex::new(Vec::new()),
        }
    }

    /// Declares the recorder durable (it keeps checkpoints).
    pub fn durable(mut self, config_hash: u64) -> Self {
        self.durable = true;
        self.config_hash = config_hash;
        self
    }

    /// Sleeps this long in every delivery.
    pub fn slow(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Handles each delivery only after taking (and keeping) a permit of `gate`: the test
    /// decides exactly how many deliveries get through, with no timing involved.
    pub fn gated(mut self, gate: Arc<Semaphore>) -> Self {
        self.gate = Some(gate);
        self
    }

    /// Fails every `Change` delivery (after its delay); other deliveries succeed, so a reset
    /// still reaches it.
    pub fn failing_changes(mut self) -> Self {
        self.fail_changes = true;
        self
    }

    /// Checks, inside every `Change` delivery, that the store already holds its sequence.
    pub fn checking(mut self, store: Arc<dyn ResultStore>) -> Self {
        self.check_durable = Some(store);
        self
    }

    /// What it has seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The changes it has seen, as `(query, epoch, first, last)`.
    pub fn changes(&self) -> Vec<(String, u64, u64, u64)> {
        self.seen()
            .into_iter()
            .filter_map(|s| match s {
                Seen::Change(q, e, f, l) => Some((q, e, f, l)),
                _ => None,
            })
            .collect()
    }
}

#[async_trait]
impl Reaction for Recorder {
    fn id(&self) -> &str {
        &self.id
    }

    fn durable(&self) -> bool {
        self.durable
    }

    fn config_hash(&self) -> u64 {
        self.config_hash
    }

    async fn deliver(&self, delivery: &Delivery) -> Result<(), ReactionError> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        if let Some(gate) = &self.gate {
            match gate.acquire().await {
                Ok(permit) => permit.forget(),
                Err(e) => return Err(ReactionError::new(&self.id, e)),
            }
        }
        let seen = match delivery {
            Delivery::Reset { query_id, epoch } => Seen::Reset(query_id.clone(), *epoch),
            Delivery::SnapshotRows { query_id, rows } => {
                Seen::SnapshotRows(query_id.clone(), rows.len())
            }
            Delivery::SnapshotDone { query_id, sequence } => {
                Seen::SnapshotDone(query_id.clone(), *sequence)
            }
            Delivery::Change(change) => {
                if self.fail_changes {
                    return Err(ReactionError::new(
                        &self.id,
                        format!("refusing change {:?}", change.span),
                    ));
                }
                if let Some(store) = &self.check_durable {
                    let committed = store.query_info(&change.query_id).await.ok();
                    let ok = committed
                        .as_ref()
                        .and_then(|i| i.sequence)
                        .is_some_and(|s| s >= change.span.last);
                    if !ok {
                        self.violations.lock().unwrap().push(format!(
                            "change {:?} delivered while the store is at {committed:?}",
                            change.span
                        ));
                    }
                }
                let n = change
                    .events
                    .iter()
                    .filter(|e| matches!(e, ChangeEvent::Rows { .. }))
                    .count();
                self.events.fetch_add(n, Ordering::SeqCst);
                Seen::Change(
                    change.query_id.clone(),
                    change.epoch,
                    change.span.first,
                    change.span.last,
                )
            }
        };
        self.seen.lock().unwrap().push(seen);
        Ok(())
    }
}

/// A materialized view that declares itself durable: its state survives "restarts" because
/// the test keeps the same instance, so on start it catches up from the outbox.
pub struct DurableView {
    /// The view itself.
    pub view: MaterializedView,
}

impl DurableView {
    /// An empty durable view with id `id`.
    pub fn new(id: &str) -> Self {
        DurableView {
            view: MaterializedView::new(id),
        }
    }
}

#[async_trait]
impl Reaction for DurableView {
    fn id(&self) -> &str {
        self.view.id()
    }

    fn durable(&self) -> bool {
        true
    }

    async fn deliver(&self, delivery: &Delivery) -> Result<(), ReactionError> {
        self.view.deliver(delivery).await
    }
}
