//! Removing a query: one script step, then the renamed-away keys are unlinked.
//!
//! The script checks the removal's fencing token against the lease first, in the same atomic
//! step, so only the lease's holder (or, without a live lease, a caller with no token) removes.
//!
//! The script (see `scripts::REMOVE`) renames the query's rows, outbox, change log,
//! checkpoints and snapshot readers to fresh trash keys — O(1) whatever their size — and turns
//! the meta hash into the removed marker that keeps the query's epochs from being reused. The
//! caller then `UNLINK`s the trash, which frees it on a background thread, exactly as after a
//! clear; trash a caller could not unlink is unlinked by the next clear or removal, or swept by the
//! next handle that connects (a purged query may never see another clear; see `sweep`).
//!
//! The id stays in the query index (`<ns>:queries`). The index lives in another Cluster slot,
//! so the script cannot remove it atomically, and a handle that registered the id before
//! (`RedisStore::register` remembers it per handle) would not register it again when the query
//! is re-created: the query would be missing from the list. Listing already skips ids whose
//! meta hash has no `rows`, so a removed id is not listed.

use liveresults_core::StoreError;

use super::RedisStore;
use crate::error::from_redis;
use crate::reply::{self, Removed};

/// The key kinds a removal renames away, in the order the script's `KEYS` name them.
const KINDS: [&str; 5] = ["rows", "outbox", "log", "checkpoints", "snapshots"];

impl RedisStore {
    /// [`liveresults_core::ResultStore::remove_query_fenced`] on Redis (`fence: None` is the
    /// plain `remove_query`): the script checks the fence before it changes anything.
    pub(super) async fn remove(
        &self,
        query_id: &str,
        fence: Option<u64>,
    ) -> Result<(), StoreError> {
        let keys = self.keys(query_id)?;
        let mut con = self.conn()?;
        let token = self.unique_token();
        let mut invocation = self.inner.scripts.remove.prepare_invoke();
        invocation
            .key(keys.meta())
            .key(keys.rows())
            .key(keys.outbox())
            .key(keys.log())
            .key(keys.checkpoints())
            .key(keys.snapshots())
            .key(keys.trash());
        for kind in KINDS {
            invocation.key(keys.trash_item(&token, kind));
        }
        invocation
            .key(keys.lease())
            .arg(&self.inner.notice_channel)
            .arg(query_id)
            .arg(fence.map_or_else(String::new, |t| t.to_string()));
        let value: redis::Value = invocation
            .invoke_async(&mut con)
            .await
            .map_err(from_redis)?;
        let Removed { known, pending } = reply::remove(query_id, fence, &value)?;
        self.empty_trash(&mut con, &keys, pending).await;
        if known {
            tracing::info!(query_id, "query removed");
        }
        Ok(())
    }
}
