//! The writer thread: every commit, clear and removal of a store goes through one dedicated
//! thread, fed by a bounded queue.
//!
//! Why one thread: a commit of a few rows costs RocksDB a few microseconds, less than handing
//! it to the blocking pool and back. The writer takes every commit queued when it comes
//! round (any query, up to [`MAX_GROUP_COMMITS`] / [`MAX_GROUP_BYTES`]) and writes them as one
//! group (see `engine::group`): one WAL write and, with `sync_commits(true)`, one fsync for
//! all of them. Under load the queue fills while a group is written, so groups grow exactly
//! when it pays. Between groups the thread polls the queue for [`SPIN`] before it sleeps, so
//! a caller committing back to back finds it awake and pays no wake-up. With
//! `sync_commits(true)` a group smaller than the last one waits briefly for the callers the
//! last group answered (see [`gather`]), so concurrent callers keep sharing fsyncs.
//!
//! Order: jobs are taken in queue order, and a clear or removal ends the group before it, so
//! it applies after every commit queued before it and before every one queued after it;
//! commits to one query land in the order they were queued. Callers never block: they wait
//! for queue room and for their answer asynchronously.
//!
//! The thread holds the engine weakly (a strong reference only while it works), so dropping
//! the last store handle closes the database as before; the thread ends once every handle is
//! gone or the store is closed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use liveresults_core::{CommitReceipt, ErrorClass, QueryInfo, StoreError};
use tokio::sync::mpsc::{self, error::TryRecvError};
use tokio::sync::oneshot;

use crate::engine::{Engine, GroupCommit};
use crate::owned::OwnedCommit;

/// Jobs that may wait in the queue; a caller beyond that waits (asynchronously) for room.
const QUEUE_JOBS: usize = 1024;
/// Most commits written as one group.
const MAX_GROUP_COMMITS: usize = 512;
/// Bytes (rows and outbox payloads) after which a group takes no further commit, so one
/// write stays a bounded amount of memory and latency.
const MAX_GROUP_BYTES: usize = 16 << 20;
/// How long the thread polls for the next job before it sleeps.
const SPIN: Duration = Duration::from_micros(50);
/// Longest a synced group waits for more commits (see [`gather`]).
const SYNC_GATHER: Duration = Duration::from_micros(200);
/// How long a committing caller polls for its answer before it sleeps.
const ANSWER_POLL: Duration = Duration::from_micros(50);

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum Job {
    Commit(CommitJob),
    Clear(String, Reply<QueryInfo>),
    Remove(String, Reply<()>),
    /// Ends the thread once everything queued before it is done.
    Stop(oneshot::Sender<()>),
}

struct CommitJob {
    query_id: String,
    commit: OwnedCommit,
    reply: Reply<CommitReceipt>,
}

/// The queue to a store's writer thread. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Writer {
    tx: mpsc::Sender<Job>,
    /// Commits sent and not yet answered, over all clones.
    in_flight: Arc<AtomicUsize>,
}

/// Counts one commit in flight for as long as it lives (also when its caller gives up).
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        InFlight(count)
    }

    /// Whether this is the only commit in flight.
    fn alone(&self) -> bool {
        self.0.load(Ordering::Relaxed) <= 1
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Writer {
    /// Starts the writer thread of `engine`.
    pub(crate) fn spawn(engine: &Arc<Engine>) -> Result<Writer, StoreError> {
        let (tx, rx) = mpsc::channel(QUEUE_JOBS);
        let weak = Arc::downgrade(engine);
        let sync = engine.options.sync_commits;
        std::thread::Builder::new()
            .name("liveresults-writer".into())
            .spawn(move || run(&weak, rx, sync))
            .map_err(|err| StoreError::Backend {
                backend: "rocksdb",
                class: ErrorClass::Permanent,
                message: format!("cannot start the writer thread: {err}"),
            })?;
        Ok(Writer {
            tx,
            in_flight: Arc::default(),
        })
    }

    /// Queues a commit and waits for its outcome.
    pub(crate) async fn commit(
        &self,
        query_id: String,
        commit: OwnedCommit,
    ) -> Result<CommitReceipt, StoreError> {
        let (reply, answer) = oneshot::channel();
        let job = Job::Commit(CommitJob {
            query_id,
            commit,
            reply,
        });
        let in_flight = InFlight::enter(&self.in_flight);
        self.tx.send(job).await.map_err(|_| StoreError::Closed)?;
        answered(answer, &in_flight).await
    }

    /// Queues a clear, ordered with the commits around it.
    pub(crate) async fn clear(&self, query_id: String) -> Result<QueryInfo, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job::Clear(query_id, reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Queues a removal, ordered with the commits around it.
    pub(crate) async fn remove(&self, query_id: String) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job::Remove(query_id, reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Lets everything queued so far finish, then ends the thread: later jobs fail with
    /// [`StoreError::Closed`]. Returns once the thread holds no reference to the engine.
    pub(crate) async fn stop(&self) {
        let (done, finished) = oneshot::channel();
        if self.tx.send(Job::Stop(done)).await.is_ok() {
            let _ = finished.await;
        }
    }
}

/// Waits for a commit's answer.
///
/// A lone commit (none other in flight) polls for its answer between yields to the executor
/// for up to [`ANSWER_POLL`] before it sleeps: a small commit is answered within a few
/// microseconds, less than waking a parked executor thread costs, and a caller committing
/// back to back is exactly the case nothing else can hide. The executor is never blocked:
/// every poll that finds nothing yields, so other tasks run in between. With several
/// commits in flight callers sleep at once, leaving the cores to the writer, whose groups
/// then grow.
async fn answered<T>(
    mut answer: oneshot::Receiver<Result<T, StoreError>>,
    in_flight: &InFlight<'_>,
) -> Result<T, StoreError> {
    let mut start = None;
    while in_flight.alone() {
        match answer.try_recv() {
            Ok(result) => return result,
            Err(oneshot::error::TryRecvError::Closed) => return Err(StoreError::Closed),
            Err(oneshot::error::TryRecvError::Empty) => {}
        }
        if start.get_or_insert_with(Instant::now).elapsed() >= ANSWER_POLL {
            break;
        }
        tokio::task::yield_now().await;
    }
    answer.await.map_err(|_| StoreError::Closed)?
}

fn run(engine: &Weak<Engine>, mut rx: mpsc::Receiver<Job>, sync: bool) {
    let mut carried = None;
    let mut pace = Pace::default();
    let mut group: Vec<CommitJob> = Vec::new();
    loop {
        let job = match carried.take() {
            Some(job) => job,
            None => match next_job(&mut rx) {
                Some(job) => job,
                None => return,
            },
        };
        // Answers dropped unsent (the engine is gone) reach their callers as `Closed`.
        match job {
            Job::Commit(first) => {
                group.push(first);
                carried = gather(&mut rx, &mut group, sync.then_some(&mut pace));
                let Some(engine) = engine.upgrade() else {
                    return;
                };
                let commits: Vec<GroupCommit<'_>> = group
                    .iter()
                    .map(|job| (job.query_id.as_str(), &job.commit))
                    .collect();
                let started = Instant::now();
                let results = guarded(|| engine.commit_group(&commits))
                    .unwrap_or_else(|err| commits.iter().map(|_| Err(panicked(&err))).collect());
                pace.record(commits.len(), started.elapsed());
                drop(commits);
                drop(engine);
                for (job, result) in group.drain(..).zip(results) {
                    let _ = job.reply.send(result);
                }
            }
            Job::Clear(query_id, reply) => {
                let Some(engine) = engine.upgrade() else {
                    return;
                };
                let result =
                    guarded(|| engine.clear(&query_id)).unwrap_or_else(|e| Err(panicked(&e)));
                drop(engine);
                let _ = reply.send(result);
            }
            Job::Remove(query_id, reply) => {
                let Some(engine) = engine.upgrade() else {
                    return;
                };
                let result =
                    guarded(|| engine.remove(&query_id)).unwrap_or_else(|e| Err(panicked(&e)));
                drop(engine);
                let _ = reply.send(result);
            }
            Job::Stop(done) => {
                // Jobs queued behind the stop are dropped with the queue: `Closed`.
                rx.close();
                drop(rx);
                let _ = done.send(());
                return;
            }
        }
    }
}

/// Runs one job, catching a panic so that it fails that job (as a panic on the blocking
/// pool did before there was a writer thread) instead of ending the thread and with it every
/// later commit. Locks the job held are poisoned and say so to later jobs that take them.
fn guarded<T>(job: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default()
    })
}

fn panicked(message: &str) -> StoreError {
    StoreError::Backend {
        backend: "rocksdb",
        class: ErrorClass::Permanent,
        message: format!("the store's writer panicked: {message}"),
    }
}

/// What the last group was like, for gathering the next one under `sync_commits(true)`.
#[derive(Default)]
struct Pace {
    commits: usize,
    took: Duration,
}

impl Pace {
    fn record(&mut self, commits: usize, took: Duration) {
        self.commits = commits;
        self.took = took;
    }
}

/// Adds every commit queued now to `group` (up to the group limits); returns a clear,
/// removal or stop met on the way, which ends the group.
///
/// With `pace` (fsync per group), a group smaller than the last one waits a little for the
/// rest: the callers answered by the last group are usually just submitting their next
/// commit, and one fsync costs far more than the wait. The wait is at most [`SYNC_GATHER`]
/// and at most half of what the last group took, and ends as soon as the group is as large
/// as the last one; a lone caller (groups of one) never waits.
fn gather(
    rx: &mut mpsc::Receiver<Job>,
    group: &mut Vec<CommitJob>,
    pace: Option<&mut Pace>,
) -> Option<Job> {
    let mut bytes: usize = group.iter().map(|job| job.commit.weight()).sum();
    let (target, until) = match pace {
        Some(pace) => (
            pace.commits,
            Instant::now() + SYNC_GATHER.min(pace.took / 2),
        ),
        None => (0, Instant::now()),
    };
    while group.len() < MAX_GROUP_COMMITS && bytes < MAX_GROUP_BYTES {
        match rx.try_recv() {
            Ok(Job::Commit(job)) => {
                bytes = bytes.saturating_add(job.commit.weight());
                group.push(job);
            }
            Ok(other) => return Some(other),
            Err(TryRecvError::Empty) if group.len() < target && Instant::now() < until => {
                std::thread::yield_now();
            }
            Err(_) => break,
        }
    }
    None
}

/// The next job: polled for [`SPIN`] (yielding the core to anyone who needs it), then waited
/// for asleep. `None` once every sender is gone.
fn next_job(rx: &mut mpsc::Receiver<Job>) -> Option<Job> {
    let start = Instant::now();
    loop {
        match rx.try_recv() {
            Ok(job) => return Some(job),
            Err(TryRecvError::Disconnected) => return None,
            Err(TryRecvError::Empty) if start.elapsed() < SPIN => std::thread::yield_now(),
            Err(TryRecvError::Empty) => return rx.blocking_recv(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A panicking job becomes that job's error, and the thread's loop goes on.
    #[test]
    fn a_panicking_job_fails_alone() {
        let err = guarded(|| -> u32 { panic!("boom") }).unwrap_err();
        assert_eq!(err, "boom");
        let err = panicked(&err);
        assert!(
            !err.is_transient() && err.to_string().contains("boom"),
            "{err}"
        );
        assert_eq!(guarded(|| 7), Ok(7));
    }
}
