//! The runtime: recovers reactions, routes events to per-query pipelines, shuts down cleanly.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use liveresults_core::formats::Event;
use liveresults_core::{QueryInfo, ResultStore};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::config::{Backpressure, RuntimeConfig};
use crate::delivery::{self, Work};
use crate::envelope::{Applied, Envelope};
use crate::error::{RuntimeError, SubmitError};
use crate::metrics::{MetricsSnapshot, RuntimeMetrics};
use crate::pipeline::{Pipeline, PipelineContext};
use crate::progress::{progress_channel, ProgressReader, ReactionFailure};
use crate::reaction::Reaction;
use crate::recovery;
use crate::status::{Position, QueryStatus, Registry};

/// State shared by the runtime and its handles.
struct Shared {
    /// What the pipelines see (store, commit knobs, status registry, metrics).
    context: Arc<PipelineContext>,
    config: RuntimeConfig,
    /// Each reaction's progress per query, in reaction order.
    progress: Vec<ProgressReader>,
    /// Taken at shutdown so the reaction workers see their queues close.
    reaction_senders: Mutex<Option<Vec<mpsc::Sender<Work>>>>,
    pipelines: Mutex<HashMap<String, mpsc::Sender<Envelope>>>,
    pipeline_tasks: Mutex<Vec<JoinHandle<()>>>,
    shutting_down: AtomicBool,
}

/// A running reaction runtime. Dropping it without [`Runtime::shutdown`] abandons queued work.
pub struct Runtime {
    shared: Arc<Shared>,
    reaction_tasks: Vec<JoinHandle<()>>,
}

/// A cheap, cloneable handle for submitting events and observing queries.
#[derive(Clone)]
pub struct RuntimeHandle {
    shared: Arc<Shared>,
}

/// The outcome of a submitted event, to be awaited later.
#[derive(Debug)]
pub struct Pending {
    rx: oneshot::Receiver<Result<Applied, SubmitError>>,
}

impl Pending {
    /// Waits for the event to be committed, skipped or refused.
    pub async fn wait(self) -> Result<Applied, SubmitError> {
        self.rx.await.map_err(|_| SubmitError::ShuttingDown)?
    }

    /// The outcome if it is already known, without waiting.
    pub(crate) fn try_result(&mut self) -> Option<Result<Applied, SubmitError>> {
        match self.rx.try_recv() {
            Ok(result) => Some(result),
            Err(oneshot::error::TryRecvError::Empty) => None,
            Err(oneshot::error::TryRecvError::Closed) => Some(Err(SubmitError::ShuttingDown)),
        }
    }
}

impl Runtime {
    /// Starts the runtime on `store`: every reaction is first brought up to date on every
    /// query the store knows (from the outbox or a snapshot, per policy), then events are
    /// accepted.
    pub async fn start(
        store: Arc<dyn ResultStore>,
        config: RuntimeConfig,
        reactions: Vec<Arc<dyn Reaction>>,
    ) -> Result<Runtime, RuntimeError> {
        delivery::check_unique_ids(&reactions).map_err(RuntimeError::DuplicateReaction)?;
        let (writers, readers): (Vec<_>, Vec<_>) =
            reactions.iter().map(|r| progress_channel(r.id())).unzip();
        let queries = store.list_queries().await?;
        for info in &queries {
            let policy = config.query_config(&info.query_id).policy;
            for (reaction, progress) in reactions.iter().zip(&writers) {
                recovery::recover(
                    &**reaction,
                    &*store,
                    info,
                    policy,
                    config.retry,
                    config.snapshot_chunk_rows,
                    progress,
                )
                .await?;
            }
        }
        let mut senders = Vec::with_capacity(reactions.len());
        let mut reaction_tasks = Vec::with_capacity(reactions.len());
        for (reaction, progress) in reactions.into_iter().zip(writers) {
            let (tx, task) = delivery::spawn_worker(
                reaction,
                Arc::clone(&store),
                config.retry,
                progress,
                config.reaction_queue_capacity,
            );
            senders.push(tx);
            reaction_tasks.push(task);
        }
        let registry = Registry::default();
        for info in &queries {
            registry.update(&info.query_id, |s| {
                s.sequence = info.sequence;
                s.row_count = info.row_count;
                s.epoch = info.epoch;
            });
        }
        tracing::info!(
            queries = queries.len(),
            reactions = senders.len(),
            "runtime started"
        );
        let context = Arc::new(PipelineContext {
            store,
            retry: config.retry,
            group_commit_events: config.group_commit_events,
            group_commit_delay: config.group_commit_delay,
            registry,
            metrics: RuntimeMetrics::default(),
            bootstrap_requests: broadcast::channel(64).0,
        });
        let shared = Arc::new(Shared {
            context,
            config,
            progress: readers,
            reaction_senders: Mutex::new(Some(senders)),
            pipelines: Mutex::new(HashMap::new()),
            pipeline_tasks: Mutex::new(Vec::new()),
            shutting_down: AtomicBool::new(false),
        });
        Ok(Runtime {
            shared,
            reaction_tasks,
        })
    }

    /// A handle for submitting events.
    pub fn handle(&self) -> RuntimeHandle {
        RuntimeHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Stops accepting events, lets every pipeline commit what it has queued, lets every
    /// reaction drain, then flushes the store.
    pub async fn shutdown(mut self) -> Result<(), RuntimeError> {
        let shared = Arc::clone(&self.shared);
        // Dropping the queue senders ends each pipeline once its queue is drained. The flag is
        // set under the same lock `sender` checks it under, so no pipeline appears afterwards.
        let senders: Vec<_> = {
            let mut pipelines = lock(&shared.pipelines);
            shared.shutting_down.store(true, Ordering::SeqCst);
            pipelines.drain().collect()
        };
        drop(senders);
        let tasks: Vec<_> = lock(&shared.pipeline_tasks).drain(..).collect();
        for task in tasks {
            let _ = task.await;
        }
        drop(lock(&shared.reaction_senders).take());
        for task in std::mem::take(&mut self.reaction_tasks) {
            let _ = task.await;
        }
        shared.context.store.flush().await?;
        tracing::info!("runtime stopped");
        Ok(())
    }
}

impl Drop for Runtime {
    /// Without a `shutdown`, still close every queue so the tasks end instead of leaking.
    fn drop(&mut self) {
        let mut pipelines = lock(&self.shared.pipelines);
        self.shared.shutting_down.store(true, Ordering::SeqCst);
        pipelines.clear();
        drop(pipelines);
        drop(lock(&self.shared.reaction_senders).take());
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The runtime's own locks guard plain maps; a panic elsewhere cannot leave them half
    // updated, so a poisoned lock is still safe to use.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl RuntimeHandle {
    fn sender(&self, query_id: &str) -> Result<mpsc::Sender<Envelope>, SubmitError> {
        let mut pipelines = lock(&self.shared.pipelines);
        // Checked under the pipelines lock, which `shutdown` holds while setting the flag: a
        // pipeline created after shutdown drained the map would never be closed, and its
        // reaction senders would keep the reaction workers (and so `shutdown`) waiting forever.
        if self.shared.shutting_down.load(Ordering::SeqCst) {
            return Err(SubmitError::ShuttingDown);
        }
        if let Some(tx) = pipelines.get(query_id) {
            return Ok(tx.clone());
        }
        let reactions = lock(&self.shared.reaction_senders)
            .clone()
            .ok_or(SubmitError::ShuttingDown)?;
        let (tx, rx) = mpsc::channel(self.shared.config.queue_capacity);
        let pipeline = Pipeline::new(
            query_id.to_owned(),
            self.shared.config.query_config(query_id).clone(),
            Arc::clone(&self.shared.context),
            reactions,
        );
        lock(&self.shared.pipeline_tasks).push(tokio::spawn(pipeline.run(rx)));
        pipelines.insert(query_id.to_owned(), tx.clone());
        Ok(tx)
    }

    async fn enqueue(&self, query_id: &str, envelope: Envelope) -> Result<(), SubmitError> {
        let tx = self.sender(query_id)?;
        match self.shared.config.backpressure {
            Backpressure::Block => tx
                .send(envelope)
                .await
                .map_err(|_| SubmitError::ShuttingDown),
            Backpressure::Reject => tx.try_send(envelope).map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => SubmitError::Overloaded {
                    query_id: query_id.to_owned(),
                },
                mpsc::error::TrySendError::Closed(_) => SubmitError::ShuttingDown,
            }),
        }
    }

    /// Queues an event for its query (waiting for room, or failing with `Overloaded`, per the
    /// backpressure policy). It is committed asynchronously.
    pub async fn submit(&self, event: Event) -> Result<(), SubmitError> {
        let query_id = event.query_id().to_owned();
        self.enqueue(&query_id, Envelope::Event(Box::new(event), None))
            .await
    }

    /// Queues an event and waits until it is committed (or skipped, or refused).
    pub async fn submit_and_wait(&self, event: Event) -> Result<Applied, SubmitError> {
        self.submit_tracked(event).await?.wait().await
    }

    /// Queues an event and returns a handle on its outcome, without waiting for it.
    pub async fn submit_tracked(&self, event: Event) -> Result<Pending, SubmitError> {
        let (ack, rx) = oneshot::channel();
        let query_id = event.query_id().to_owned();
        self.enqueue(&query_id, Envelope::Event(Box::new(event), Some(ack)))
            .await?;
        Ok(Pending { rx })
    }

    /// Commits `events` of one query as ONE atomic commit: all of them or, when one breaks
    /// the sequence rules under `Strict` or the store refuses, none. Lifecycle signals that
    /// clear the query (`deleted`, `bootstrapStarted` under AutoReset) and AutoReset gaps split
    /// the batch at that point.
    pub async fn commit_batch(
        &self,
        query_id: &str,
        events: Vec<Event>,
    ) -> Result<Applied, SubmitError> {
        if let Some(e) = events.iter().find(|e| e.query_id() != query_id) {
            return Err(SubmitError::WrongQuery {
                expected: query_id.to_owned(),
                found: e.query_id().to_owned(),
            });
        }
        let (ack, rx) = oneshot::channel();
        self.enqueue(query_id, Envelope::Batch(events, ack)).await?;
        rx.await.map_err(|_| SubmitError::ShuttingDown)?
    }

    /// Clears a query (rows, outbox, checkpoints), resets its reactions and, if it was stopped,
    /// lets it accept events again. Ordered with the query's queued events.
    pub async fn clear_query(&self, query_id: &str) -> Result<QueryInfo, SubmitError> {
        let (ack, rx) = oneshot::channel();
        self.enqueue(query_id, Envelope::Clear(ack)).await?;
        rx.await.map_err(|_| SubmitError::ShuttingDown)?
    }

    /// Restarts a stopped query without clearing it: its pipeline re-reads the committed
    /// position from the store and accepts events again from the next sequence. This is the
    /// way back after a store fault whose cause is gone (a disk that was full has space
    /// again): the acknowledged rows stay, and upstream resends what was refused. A query
    /// stopped because upstream deleted it stays stopped (only a clear restarts it); a
    /// running query is left as it is. Ordered with the query's queued events.
    pub async fn resume(&self, query_id: &str) -> Result<QueryInfo, SubmitError> {
        let (ack, rx) = oneshot::channel();
        self.enqueue(query_id, Envelope::Resume(ack)).await?;
        rx.await.map_err(|_| SubmitError::ShuttingDown)?
    }

    /// The status of one query, if the runtime has seen it, with every reaction's progress on it.
    pub fn status(&self, query_id: &str) -> Option<QueryStatus> {
        let mut status = self.shared.context.registry.get(query_id)?;
        self.fill_reactions(&mut status);
        Some(status)
    }

    /// The status of every query the runtime has seen, by id.
    pub fn statuses(&self) -> Vec<QueryStatus> {
        let mut all = self.shared.context.registry.all();
        for status in &mut all {
            self.fill_reactions(status);
        }
        all
    }

    fn fill_reactions(&self, status: &mut QueryStatus) {
        let committed = Position {
            epoch: status.epoch,
            sequence: status.sequence,
        };
        status.reactions = (self.shared.progress.iter())
            .map(|p| p.lag(&status.query_id, committed))
            .collect();
    }

    /// Waits until every reaction has handled `query_id` up to the position committed when
    /// this is called (that commit, or that clear), and returns that position. Commits are
    /// acknowledged once durable; reactions get them afterwards, asynchronously, so this is
    /// how to read a reaction's state (a view, a log) that includes everything acknowledged
    /// so far. It waits on each reaction's published progress, without polling.
    ///
    /// Fails, instead of waiting forever, when a reaction has failed for the query (naming
    /// it: it receives nothing more for the query until a reset) or when the runtime stopped
    /// a reaction's worker before it got there.
    pub async fn reactions_caught_up(&self, query_id: &str) -> Result<Position, RuntimeError> {
        let target = self.shared.context.registry.position(query_id);
        for progress in &self.shared.progress {
            progress.clone().wait_for(query_id, target).await?;
        }
        Ok(target)
    }

    /// A watch of the query's committed position. Subscribe first, then read: a commit that
    /// lands in between still marks the receiver changed.
    pub fn watch(&self, query_id: &str) -> watch::Receiver<Position> {
        self.shared.context.registry.watch(query_id)
    }

    /// Queries that AutoReset cleared and that upstream should re-bootstrap.
    pub fn bootstrap_requests(&self) -> broadcast::Receiver<String> {
        self.shared.context.bootstrap_requests.subscribe()
    }

    /// Reactions that failed, by reaction (in the runtime's order), then query.
    pub fn reaction_failures(&self) -> Vec<ReactionFailure> {
        (self.shared.progress.iter())
            .flat_map(ProgressReader::failures)
            .collect()
    }

    /// The runtime's counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.shared.context.metrics.snapshot()
    }

    /// The store under the runtime.
    pub fn store(&self) -> &Arc<dyn ResultStore> {
        &self.shared.context.store
    }
}
