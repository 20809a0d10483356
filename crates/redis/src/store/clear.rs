//! Clearing a query: one script step, then the renamed-away keys are unlinked.
//!
//! The script (see `scripts::CLEAR`) checks the clear's fencing token against the query's
//! lease, then bumps the epoch, resets the meta hash and renames the rows, outbox, change log
//! and checkpoints to fresh trash keys — O(1) whatever their size — all in one atomic step: a
//! host whose lease ran out cannot clear the query under its next owner, however long it was
//! paused. The caller then `UNLINK`s the trash (freed on a background thread).

use liveresults_core::{QueryInfo, StoreError};

use super::RedisStore;
use crate::error::from_redis;
use crate::reply::{self, Cleared};

/// The key kinds a clear renames away, in the order the script's `KEYS` name them.
const KINDS: [&str; 4] = ["rows", "outbox", "log", "checkpoints"];

impl RedisStore {
    /// [`liveresults_core::ResultStore::clear_query_fenced`] on Redis (`fence: None` is the
    /// plain `clear_query`).
    pub(super) async fn clear(
        &self,
        query_id: &str,
        fence: Option<u64>,
    ) -> Result<QueryInfo, StoreError> {
        let keys = self.keys(query_id)?;
        let mut con = self.conn()?;
        let token = self.unique_token();
        let mut invocation = self.inner.scripts.clear.prepare_invoke();
        invocation
            .key(keys.meta())
            .key(keys.rows())
            .key(keys.outbox())
            .key(keys.log())
            .key(keys.checkpoints())
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
        let Some(Cleared { epoch, pending }) = reply::clear(query_id, fence, &value)? else {
            return Ok(QueryInfo::empty(query_id));
        };
        self.empty_trash(&mut con, &keys, pending).await;
        Ok(QueryInfo {
            query_id: query_id.to_owned(),
            sequence: None,
            row_count: 0,
            epoch,
        })
    }
}
