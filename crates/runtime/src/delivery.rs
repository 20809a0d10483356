//! Handing one delivery to a reaction (retries, checkpoint, progress), the step both the
//! reaction workers (`worker`) and start-up recovery (`recovery`) take.

use std::collections::HashSet;
use std::sync::Arc;

use liveresults_core::{Checkpoint, ResultStore};

use crate::config::RetryPolicy;
use crate::progress::ProgressWriter;
use crate::reaction::{Delivery, Reaction};
use crate::retry::{store_retry, with_backoff};
use crate::status::Position;

/// Delivers one delivery to a reaction with retries, checkpoints durable reactions, then
/// publishes the reaction's new position. A reaction that failed for the query gets nothing
/// but resets until one succeeds.
pub(crate) async fn deliver_one(
    reaction: &dyn Reaction,
    store: &dyn ResultStore,
    retry: RetryPolicy,
    progress: &ProgressWriter,
    delivery: &Delivery,
) {
    let (id, query_id) = (reaction.id(), delivery.query_id());
    if let Delivery::Reset { .. } = delivery {
        progress.clear_failure(query_id);
    } else if progress.failed(query_id) {
        return;
    }
    // Where the reaction is once this delivery is handled (`None`: no new position). Snapshot
    // rows and the snapshot's end belong to the epoch of the reset that began the rebuild.
    let (epoch, reached) = match delivery {
        Delivery::Reset { epoch, .. } => (*epoch, Some(None)),
        Delivery::Change(change) => (change.epoch, Some(Some(change.span.last))),
        Delivery::SnapshotDone { sequence, .. } => {
            (progress.position(query_id).epoch, Some(*sequence))
        }
        Delivery::SnapshotRows { .. } => (progress.position(query_id).epoch, None),
    };
    let delivered = with_backoff(
        retry,
        || reaction.deliver(delivery),
        |e, attempt| {
            tracing::warn!(reaction_id = id, query_id, attempt, error = %e, "reaction failed, retrying");
            true
        },
    )
    .await;
    if let Err(e) = delivered {
        progress.fail(id, query_id, epoch, e.message);
        return;
    }
    let Some(sequence) = reached else {
        return;
    };
    if reaction.durable() && !matches!(delivery, Delivery::Reset { .. }) {
        let checkpoint = Checkpoint {
            sequence,
            config_hash: reaction.config_hash(),
        };
        let saved = store_retry(retry, "save_checkpoint", || {
            store.save_checkpoint(id, query_id, checkpoint)
        })
        .await;
        if let Err(e) = saved {
            progress.fail(id, query_id, epoch, format!("saving checkpoint: {e}"));
            return;
        }
    }
    progress.record(query_id, Position { epoch, sequence });
}

/// Ids must be unique: checkpoints are keyed by them.
pub(crate) fn check_unique_ids(reactions: &[Arc<dyn Reaction>]) -> Result<(), String> {
    let mut seen = HashSet::new();
    for r in reactions {
        if !seen.insert(r.id()) {
            return Err(r.id().to_owned());
        }
    }
    Ok(())
}
