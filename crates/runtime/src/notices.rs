//! Following the commits other hosts make, so change-feed readers on this host wake for them.
//!
//! When several hosts share a store, a query is committed by whichever host owns it, but its
//! change feed may be read on any host. Readers wait on the runtime's per-query position
//! watch (`RuntimeHandle::watch`); on a host that does not own the query nothing local ever
//! moves it. The store's commit notices do: each one moves the query's watched position
//! forward, and a gap in the notices (the subscriber fell behind, the store reconnected)
//! wakes every watcher, since any query may then have changed unseen.

use std::sync::Weak;

use liveresults_core::lease::CommitNotice;
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
                Ok(notice) if notice.query_id.is_empty() => {
                    tracing::warn!("commit notices lost: waking every change-feed reader");
                    context.registry.wake_all();
                }
                Ok(notice) => {
                    let position = Position {
                        epoch: notice.epoch,
                        sequence: notice.sequence,
                    };
                    context.registry.observe(&notice.query_id, position);
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
