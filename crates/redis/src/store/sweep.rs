//! Sweeping trash a crashed caller left behind.
//!
//! A clear or removal renames the query's keys to trash keys inside its script, and the
//! caller `UNLINK`s them right after. A process that dies in between leaves them, listed in
//! the query's trash set. The next clear or removal of that query unlinks them — but a purged
//! query may never see another one, so its rows would stay in Redis for good. Every handle
//! therefore sweeps once when it connects, in the background: it walks the query index (a
//! removed id stays there) and unlinks what each trash set lists.
//!
//! Sweeping races nothing: a trash key is created by the same script step that lists it, so
//! every listed key is garbage, and unlinking one twice (a clear's own caller and the sweep)
//! is a no-op.

use liveresults_core::StoreError;
use redis::aio::ConnectionManager;

use super::{index_page, RedisStore, LIST_PAGE};
use crate::error::from_redis;
use crate::keys::{self, QueryKeys};

impl RedisStore {
    /// Unlinks every trash key a clear or removal left listed (its caller died before the
    /// unlink). Returns how many keys were unlinked. Runs in pages of the query index, one
    /// pipelined round trip per page plus one per query that had trash.
    pub async fn sweep_trash(&self) -> Result<u64, StoreError> {
        let mut con = self.conn()?;
        let index = keys::query_index(&self.inner.options.namespace);
        let mut swept = 0u64;
        let mut start: isize = 0;
        loop {
            let ids = index_page(&mut con, &index, start).await?;
            let page: Vec<QueryKeys> = ids.iter().filter_map(|id| self.keys(id).ok()).collect();
            swept = swept.saturating_add(self.sweep_page(&mut con, &page).await?);
            if (ids.len() as isize) < LIST_PAGE {
                return Ok(swept);
            }
            start += LIST_PAGE;
        }
    }

    async fn sweep_page(
        &self,
        con: &mut ConnectionManager,
        page: &[QueryKeys],
    ) -> Result<u64, StoreError> {
        if page.is_empty() {
            return Ok(0);
        }
        let mut pipe = redis::pipe();
        for keys in page {
            pipe.cmd("SMEMBERS").arg(keys.trash());
        }
        let trash: Vec<Vec<Vec<u8>>> = pipe.query_async(con).await.map_err(from_redis)?;
        let mut swept = 0u64;
        for (keys, pending) in page.iter().zip(trash) {
            if pending.is_empty() {
                continue;
            }
            swept = swept.saturating_add(pending.len() as u64);
            self.empty_trash(con, keys, pending).await;
        }
        Ok(swept)
    }

    /// Starts [`RedisStore::sweep_trash`] on its own task; it logs what it did.
    pub(super) fn spawn_sweep(&self) {
        let store = self.clone();
        tokio::spawn(async move {
            match store.sweep_trash().await {
                Ok(0) => {}
                Ok(swept) => {
                    tracing::info!(swept, "unlinked trash a crashed clear or removal left");
                }
                // Closed meanwhile, or the server went away: the next handle sweeps again.
                Err(err) => tracing::warn!(%err, "sweeping leftover trash failed"),
            }
        });
    }
}
