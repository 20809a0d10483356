//! The runtime: recovers reactions, routes events to per-query pipelines, shuts down cleanly.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use liveresults_core::formats::Event;
use liveresults_core::{QueryInfo, ResultStore};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::config::{Backpressure, HostIdentity, RuntimeConfig};
use crate::delivery;
use crate::envelope::{Applied, Envelope};
use crate::error::{RuntimeError, StopReason, SubmitError};
use crate::metrics::{MetricsSnapshot, RuntimeMetrics};
use crate::notices;
use crate::ownership::{self, Lease, Ownership};
use crate::pipeline::{Pipeline, PipelineContext};
use crate::progress::{progress_channel, ProgressReader, ReactionFailure};
use crate::reaction::Reaction;
use crate::recovery;
use crate::status::{Position, QueryStatus, Registry};
use crate::worker::{self, Work};

/// Times a submit tries again when the pipeline it found retired in the meantime (its lease
/// was lost): each try asks for the lease anew, so more than one retry means leases keep
/// moving, and the caller is better told so.
const RETIRED_PIPELINE_TRIES: usize = 3;

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
    /// The commit-notice follower: aborted at shutdown and on drop.
    background: Mutex<Vec<JoinHandle<()>>>,
    /// The lease renewals: aborted at shutdown, and on drop, so that a dropped runtime stops
    /// renewing as a crashed host would.
    renewals: Mutex<Option<JoinHandle<()>>>,
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
        let ownership = Ownership::new(&store, config.host.as_ref(), config.retry).map(Arc::new);
        // Sharing the store, reactions follow the queries this host owns and recover each
        // one when its lease is taken (see `RuntimeConfig::host`); recovering every stored
        // query here would only be redone then.
        let recover_now: &[_] = if ownership.is_some() { &[] } else { &queries };
        for info in recover_now {
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
            let (tx, task) = worker::spawn_worker(
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
            host = ownership.as_ref().map(|o| o.identity().name.as_str()),
            "runtime started"
        );
        let notices = store.commit_notices();
        let context = Arc::new(PipelineContext {
            store,
            retry: config.retry,
            group_commit_events: config.group_commit_events,
            group_commit_delay: config.group_commit_delay,
            registry,
            metrics: RuntimeMetrics::default(),
            bootstrap_requests: broadcast::channel(64).0,
            ownership,
            snapshot_chunk_rows: config.snapshot_chunk_rows,
        });
        let mut background = Vec::new();
        let renewals = context.ownership.as_ref().map(ownership::spawn_renewals);
        if let Some(rx) = notices {
            background.push(notices::spawn_follower(rx, Arc::downgrade(&context)));
        }
        let shared = Arc::new(Shared {
            context,
            config,
            progress: readers,
            reaction_senders: Mutex::new(Some(senders)),
            pipelines: Mutex::new(HashMap::new()),
            pipeline_tasks: Mutex::new(Vec::new()),
            shutting_down: AtomicBool::new(false),
            background: Mutex::new(background),
            renewals: Mutex::new(renewals),
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
    /// reaction drain, gives up this host's leases (so other hosts take its queries at once
    /// instead of after expiry), then flushes the store.
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
        shared.stop_background();
        if let Some(ownership) = &shared.context.ownership {
            ownership.release_all().await;
        }
        shared.context.store.flush().await?;
        tracing::info!("runtime stopped");
        Ok(())
    }
}

impl Drop for Runtime {
    /// Without a `shutdown`, still close every queue so the tasks end instead of leaking, and
    /// stop renewing leases. Leases are not released (that needs the store, asynchronously):
    /// they expire, exactly as a crashed host's do.
    fn drop(&mut self) {
        let mut pipelines = lock(&self.shared.pipelines);
        self.shared.shutting_down.store(true, Ordering::SeqCst);
        pipelines.clear();
        drop(pipelines);
        drop(lock(&self.shared.reaction_senders).take());
        self.shared.stop_background();
    }
}

impl Shared {
    fn stop_background(&self) {
        let renewals = lock(&self.renewals).take();
        for task in lock(&self.background).drain(..).chain(renewals) {
            task.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The runtime's own locks guard plain maps; a panic elsewhere cannot leave them half
    // updated, so a poisoned lock is still safe to use.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl RuntimeHandle {
    /// The query's pipeline queue if one is running; fails once shutdown began.
    fn live_sender(&self, query_id: &str) -> Result<Option<mpsc::Sender<Envelope>>, SubmitError> {
        let pipelines = lock(&self.shared.pipelines);
        if self.shared.shutting_down.load(Ordering::SeqCst) {
            return Err(SubmitError::ShuttingDown);
        }
        // A closed queue is a pipeline that retired after losing its lease.
        Ok(pipelines
            .get(query_id)
            .filter(|tx| !tx.is_closed())
            .cloned())
    }

    /// The query's pipeline queue, starting the pipeline if none runs. Sharing the store, the
    /// query's lease is taken first (one request at a time per query: asking twice would
    /// fence the first grant); held by another host, this fails with `NotOwner` and nothing
    /// of the query is set up here.
    async fn sender(&self, query_id: &str) -> Result<mpsc::Sender<Envelope>, SubmitError> {
        if let Some(tx) = self.live_sender(query_id)? {
            return Ok(tx);
        }
        let Some(ownership) = &self.shared.context.ownership else {
            return self.spawn_pipeline(query_id, None);
        };
        let _gate = ownership.gate(query_id).await;
        if let Some(tx) = self.live_sender(query_id)? {
            return Ok(tx);
        }
        let lease = ownership.acquire(query_id).await?;
        let token = lease.token;
        let spawned = self.spawn_pipeline(query_id, Some(lease));
        if spawned.is_err() {
            ownership.release(query_id, token).await;
        }
        spawned
    }

    fn spawn_pipeline(
        &self,
        query_id: &str,
        lease: Option<Lease>,
    ) -> Result<mpsc::Sender<Envelope>, SubmitError> {
        let mut pipelines = lock(&self.shared.pipelines);
        // Checked under the pipelines lock, which `shutdown` holds while setting the flag: a
        // pipeline created after shutdown drained the map would never be closed, and its
        // reaction senders would keep the reaction workers (and so `shutdown`) waiting forever.
        if self.shared.shutting_down.load(Ordering::SeqCst) {
            return Err(SubmitError::ShuttingDown);
        }
        if let Some(tx) = pipelines.get(query_id).filter(|tx| !tx.is_closed()) {
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
            lease,
        );
        let mut tasks = lock(&self.shared.pipeline_tasks);
        // Pipelines that retired (a removed query, a lost lease) are done: keep live ones only.
        tasks.retain(|task| !task.is_finished());
        tasks.push(tokio::spawn(pipeline.run(rx)));
        drop(tasks);
        pipelines.insert(query_id.to_owned(), tx.clone());
        Ok(tx)
    }

    /// Queues `envelope` on its query's pipeline: the query `query_id` names, or for an event
    /// the query the event names (callers pass `""` then; see [`Envelope::query_id`]).
    async fn enqueue(&self, query_id: &str, mut envelope: Envelope) -> Result<(), SubmitError> {
        for _ in 0..RETIRED_PIPELINE_TRIES {
            let tx = self.sender(envelope.query_id(query_id)).await?;
            envelope = match self.shared.config.backpressure {
                Backpressure::Block => match tx.send(envelope).await {
                    Ok(()) => return Ok(()),
                    Err(mpsc::error::SendError(envelope)) => envelope,
                },
                Backpressure::Reject => match tx.try_send(envelope) {
                    Ok(()) => return Ok(()),
                    Err(mpsc::error::TrySendError::Full(envelope)) => {
                        return Err(SubmitError::Overloaded {
                            query_id: envelope.query_id(query_id).to_owned(),
                        })
                    }
                    Err(mpsc::error::TrySendError::Closed(envelope)) => envelope,
                },
            };
            // The queue closed under us: shutdown, or the pipeline retired — its query was
            // removed, or (sharing the store) it lost the lease — and the next try starts a
            // new one (asking for the lease again).
            if self.shared.shutting_down.load(Ordering::SeqCst) {
                return Err(SubmitError::ShuttingDown);
            }
        }
        let query_id = envelope.query_id(query_id);
        Err(SubmitError::QueryStopped {
            query_id: query_id.to_owned(),
            reason: StopReason::LeaseLost,
            committed: self.status(query_id).and_then(|s| s.sequence),
        })
    }

    /// Queues an event for its query (waiting for room, or failing with `Overloaded`, per the
    /// backpressure policy). It is committed asynchronously.
    pub async fn submit(&self, event: Event) -> Result<(), SubmitError> {
        self.enqueue("", Envelope::Event(Box::new(event), None))
            .await
    }

    /// Queues an event and waits until it is committed (or skipped, or refused).
    pub async fn submit_and_wait(&self, event: Event) -> Result<Applied, SubmitError> {
        self.submit_tracked(event).await?.wait().await
    }

    /// Queues an event and returns a handle on its outcome, without waiting for it.
    pub async fn submit_tracked(&self, event: Event) -> Result<Pending, SubmitError> {
        let (ack, rx) = oneshot::channel();
        self.enqueue("", Envelope::Event(Box::new(event), Some(ack)))
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

    /// Removes a query entirely, ordered with its queued events: what was queued before is
    /// committed first, then reactions finish what they were given, the store removes the
    /// query ([`ResultStore::remove_query`]: rows, outbox, checkpoints, meta), reactions are
    /// told to reset and their progress on it is forgotten, and its status goes (change-feed
    /// watchers of its position see the watch close). The query's pipeline ends: events
    /// queued behind the removal are refused with [`StopReason::Removed`] rather than left
    /// waiting, and the next submit for the id starts afresh, re-creating the query at an
    /// epoch above every epoch of the removed one (the store keeps that floor).
    ///
    /// Returns what the query was just before the removal. Removing a query neither the
    /// runtime nor the store knows changes nothing and returns the empty state. A removal the
    /// store refuses changes nothing either, and the query goes on as before.
    ///
    /// [`ResultStore::remove_query`]: liveresults_core::ResultStore::remove_query
    pub async fn remove_query(&self, query_id: &str) -> Result<QueryInfo, SubmitError> {
        let (ack, rx) = oneshot::channel();
        self.enqueue(query_id, Envelope::Remove(ack)).await?;
        let removed = rx.await.map_err(|_| SubmitError::ShuttingDown)??;
        // The pipeline closed its queue before answering; a submit may have started a new
        // one since, which stays.
        let mut pipelines = lock(&self.shared.pipelines);
        if pipelines.get(query_id).is_some_and(mpsc::Sender::is_closed) {
            pipelines.remove(query_id);
        }
        Ok(removed)
    }

    /// Submissions (events, batches, clears, resumes, removals) waiting in the query's
    /// pipeline queue, not yet taken by its pipeline: 0 when no pipeline runs for it. How far
    /// behind a query's pipeline is, and how a test knows a request is queued behind another.
    pub fn queued(&self, query_id: &str) -> usize {
        lock(&self.shared.pipelines)
            .get(query_id)
            .map_or(0, |tx| tx.max_capacity().saturating_sub(tx.capacity()))
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
        if let Some(ownership) = &self.shared.context.ownership {
            if !ownership.owns(query_id) {
                return Err(RuntimeError::NotOwned {
                    query_id: query_id.to_owned(),
                });
            }
        }
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

    /// This host's identity when it shares the store with other hosts (configured with
    /// [`RuntimeConfig::host`] on a store with leases); `None` otherwise.
    pub fn host(&self) -> Option<&HostIdentity> {
        (self.shared.context.ownership.as_ref()).map(|o| o.identity())
    }

    /// The queries whose lease this host holds, by id (empty when it does not share the
    /// store).
    pub fn owned_queries(&self) -> Vec<String> {
        (self.shared.context.ownership.as_ref()).map_or_else(Vec::new, |o| o.owned())
    }

    /// Test support: stops renewing this host's leases, as if the process were paused — its
    /// pipelines keep running and committing with tokens that expire, which is how a test
    /// shows that the store fences a paused owner.
    #[cfg(feature = "testing")]
    pub fn stop_lease_renewals(&self) {
        if let Some(task) = lock(&self.shared.renewals).take() {
            task.abort();
        }
    }

    /// Whether this host writes `query_id`: it holds its lease, or it does not share the
    /// store (then it writes every query).
    pub fn owns(&self, query_id: &str) -> bool {
        (self.shared.context.ownership.as_ref()).is_none_or(|o| o.owns(query_id))
    }
}
