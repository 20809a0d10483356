//! Rebuilding reactions at start: catch up from the outbox when a durable reaction's
//! checkpoint is still inside it, otherwise rebuild from a point-in-time snapshot — or, under
//! `Strict`, refuse with a clear error.

use std::sync::Arc;

use liveresults_core::codec::row::decode_row;
use liveresults_core::{QueryInfo, ResultStore, StoreError};

use crate::config::{RecoveryPolicy, RetryPolicy};
use crate::delivery::deliver_one;
use crate::progress::ProgressWriter;
use crate::reaction::{CommittedChange, Delivery, Reaction};
use crate::retry::store_retry;
use crate::status::Position;

/// Outbox entries read per round trip while catching up.
const CATCH_UP_BATCH: usize = 256;

/// How a reaction starts on a query.
enum Start {
    CatchUp(Option<u64>),
    Rebuild(String),
}

/// Brings one reaction up to date on one query before the runtime accepts events.
#[tracing::instrument(name = "recover", skip_all, fields(reaction_id = reaction.id(), query_id = %info.query_id))]
pub(crate) async fn recover(
    reaction: &dyn Reaction,
    store: &dyn ResultStore,
    info: &QueryInfo,
    policy: RecoveryPolicy,
    retry: RetryPolicy,
    chunk_rows: usize,
    progress: &ProgressWriter,
) -> Result<(), StoreError> {
    let query_id = info.query_id.as_str();
    let start = if reaction.durable() {
        match store_retry(retry, "checkpoint", || {
            store.checkpoint(reaction.id(), query_id)
        })
        .await?
        {
            Some(cp) if cp.config_hash != reaction.config_hash() => {
                Start::Rebuild("its configuration changed".into())
            }
            // A position the store never reached (the store lost a suffix of commits to a
            // power loss) cannot be caught up from: the outbox after it is simply empty, and
            // the reaction would keep rows the store no longer has.
            Some(cp) if cp.sequence.is_some() && cp.sequence > info.sequence => {
                Start::Rebuild(format!(
                    "its checkpoint {:?} is ahead of the store's sequence {:?}",
                    cp.sequence, info.sequence
                ))
            }
            Some(cp) => Start::CatchUp(cp.sequence),
            None => Start::CatchUp(None),
        }
    } else {
        Start::Rebuild("it keeps no state across restarts".into())
    };
    let reason = match start {
        Start::CatchUp(position) => {
            match catch_up(reaction, store, info, position, retry, progress).await {
                Ok(applied) => {
                    tracing::info!(applied, "caught up from the outbox");
                    caught_up(progress, info);
                    return Ok(());
                }
                Err(StoreError::OutboxGap {
                    evicted_through, ..
                }) => {
                    format!("its checkpoint {position:?} is older than the outbox (evicted through {evicted_through})")
                }
                Err(e) => return Err(e),
            }
        }
        Start::Rebuild(reason) => reason,
    };
    if policy == RecoveryPolicy::Strict && reaction.durable() {
        progress.fail(
            reaction.id(),
            query_id,
            info.epoch,
            format!("cannot recover under Strict: {reason}; clear the query or use AutoReset"),
        );
        return Ok(());
    }
    tracing::info!(%reason, "rebuilding from a snapshot");
    rebuild(reaction, store, query_id, retry, chunk_rows, progress).await?;
    caught_up(progress, info);
    Ok(())
}

/// Publishes that a recovered reaction is at the query's position: no event is accepted
/// during recovery, so that is where the store is. Catching up with nothing to replay
/// delivers nothing, and the position would otherwise stay unknown until the next commit.
fn caught_up(progress: &ProgressWriter, info: &QueryInfo) {
    if !progress.failed(&info.query_id) {
        let position = Position {
            epoch: info.epoch,
            sequence: info.sequence,
        };
        progress.record(&info.query_id, position);
    }
}

async fn catch_up(
    reaction: &dyn Reaction,
    store: &dyn ResultStore,
    info: &QueryInfo,
    mut position: Option<u64>,
    retry: RetryPolicy,
    progress: &ProgressWriter,
) -> Result<usize, StoreError> {
    let mut applied = 0;
    // No checkpoint in a query that has been cleared: the reaction may still hold rows of an
    // earlier epoch (the clear deleted its checkpoint, then the process died before the reset
    // reached it), so it is reset before the new epoch's history is replayed. In epoch 0
    // there was never a clear, and replaying the whole history over a partial copy of it
    // gives the same rows.
    let mut reset_first = position.is_none() && info.epoch > 0;
    loop {
        let query_id = info.query_id.as_str();
        let entries = store_retry(retry, "read_outbox", || {
            store.read_outbox(query_id, position, CATCH_UP_BATCH)
        })
        .await?;
        if std::mem::take(&mut reset_first) {
            let reset = Delivery::Reset {
                query_id: query_id.to_owned(),
                epoch: info.epoch,
            };
            deliver_one(reaction, store, retry, progress, &reset).await;
        }
        let Some(last) = entries.last() else {
            return Ok(applied);
        };
        position = Some(last.span.last);
        for entry in &entries {
            let change = CommittedChange::from_outbox(query_id, info.epoch, entry)?;
            deliver_one(
                reaction,
                store,
                retry,
                progress,
                &Delivery::Change(Arc::new(change)),
            )
            .await;
            applied += 1;
        }
    }
}

/// Replays a point-in-time snapshot into the reaction: reset, rows in chunks, done.
pub(crate) async fn rebuild(
    reaction: &dyn Reaction,
    store: &dyn ResultStore,
    query_id: &str,
    retry: RetryPolicy,
    chunk_rows: usize,
    progress: &ProgressWriter,
) -> Result<(), StoreError> {
    let mut snapshot =
        store_retry(retry, "snapshot", || store.snapshot(query_id, chunk_rows)).await?;
    let info = snapshot.info().clone();
    let reset = Delivery::Reset {
        query_id: query_id.to_owned(),
        epoch: info.epoch,
    };
    deliver_one(reaction, store, retry, progress, &reset).await;
    while let Some(chunk) = snapshot.next_chunk().await? {
        let mut rows = Vec::with_capacity(chunk.len());
        for (signature, bytes) in chunk.iter() {
            let row =
                decode_row(bytes).map_err(|e| StoreError::corrupt_row(query_id, signature, e))?;
            rows.push((signature, row));
        }
        let delivery = Delivery::SnapshotRows {
            query_id: query_id.to_owned(),
            rows: Arc::new(rows),
        };
        deliver_one(reaction, store, retry, progress, &delivery).await;
    }
    let done = Delivery::SnapshotDone {
        query_id: query_id.to_owned(),
        sequence: info.sequence,
    };
    deliver_one(reaction, store, retry, progress, &done).await;
    Ok(())
}
