//! Following the commits other hosts make, so change-feed readers on this host wake for them.
//!
//! When several hosts share a store, a query is committed by whichever host owns it, but its
//! change feed may be read on any host. Readers wait on the runtime's per-query position
//! watch (`RuntimeHandle::watch`); on a host that does not own the query nothing local ever
//! moves it. The store's commit notices do: each one moves the query's watched position
//! forward, and a gap in the notices (the subscriber fell behind, the store reconnected)
//! wakes every watcher, since any query may then have changed unseen.
//!
//! A removal on another host is followed too: every host registers every stored query at
//! start (and a reader's watch registers it as well), so without this a host that does not
//! own a purged query would go on reporting it. Its notice wakes the readers, and once the
//! store confirms the query is gone, the host forgets it unless it owns it.

use std::sync::Weak;

use liveresults_core::lease::CommitNotice;
use liveresults_core::QueryInfo;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::task::JoinHandle;

use crate::pipeline::PipelineContext;
use crate::status::Position;

/// Feeds `notices` into the registry of `context` until the store stops sending them, the
/// context is dropped, or the task is aborted (which is how a runtime stops it).
pub(crate) fn spawn_follower(
    mut notices: broadcast::Receiver<CommitNotice>,
    context: Weak<PipelineContext>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let received = notices.recv().await;
            let Some(context) = context.upgrade() else {
                return;
            };
            match received {
                // The store's lost-notices marker (see `ResultStore::commit_notices`).
                Ok(notice) if notice.is_lost() => {
                    tracing::warn!("commit notices lost: waking every change-feed reader");
                    context.registry.wake_all();
                }
                Ok(notice) => {
                    let position = Position {
                        epoch: notice.epoch,
                        sequence: notice.sequence,
                    };
                    // Wakes the query's readers first: a removal must reach parked ones
                    // whether or not the entry is then forgotten.
                    context.registry.observe(&notice.query_id, position);
                    if position == Position::default() {
                        forget_if_removed(&context, &notice.query_id).await;
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        missed,
                        "commit notices lost: waking every change-feed reader"
                    );
                    context.registry.wake_all();
                }
                Err(RecvError::Closed) => {
                    tracing::info!("the store stopped sending commit notices");
                    context.registry.wake_all();
                    return;
                }
            }
        }
    })
}

/// After a notice of epoch 0 and no sequence: forgets the query here if it was removed and
/// this host does not own it.
///
/// A removal announces what the query then reads as (epoch 0, no sequence, see
/// `ResultStore::remove_query`), but so does an unsequenced commit to a new query at epoch 0:
/// the store is asked, and only a query it reads as unknown is forgotten. An owned query is
/// this host's own pipeline's to forget (a removal runs there); a runtime that is the store's
/// only writer has no other host to follow.
async fn forget_if_removed(context: &PipelineContext, query_id: &str) {
    let Some(ownership) = &context.ownership else {
        return;
    };
    if ownership.owns(query_id) {
        return;
    }
    match context.store.query_info(query_id).await {
        Ok(info) if info == QueryInfo::empty(query_id) => {
            // Asked again under the registry's lock: a lease taken since belongs to a pipeline
            // that re-creates the query, and its status must stay.
            if context
                .registry
                .remove_unless(query_id, || ownership.owns(query_id))
            {
                tracing::info!(query_id, "query removed by another host: forgotten here");
            }
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(query_id, error = %e, "reading a query after its removal notice failed");
        }
    }
}
