//! The store: connection, commits through the commit script, and the plain reads. Clears,
//! removals, leases and commit notices have their own modules below.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use liveresults_core::contract_rules::{last_wins, validate_query_id};
use liveresults_core::lease::{CommitNotice, Leases};
use liveresults_core::outbox_window::OutboxWindow;
use liveresults_core::{
    Checkpoint, Commit, CommitReceipt, OutboxEntry, QueryInfo, ResultStore, Snapshot, StoreError,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::broadcast;

use crate::error::{from_redis, permanent, transient};
use crate::keys::{self, QueryKeys};
use crate::options::{FlushMode, RedisStoreOptions};
use crate::records::{self, Fields, Meta, META_FIELDS};
use crate::reply::{self, CommitReply};
use crate::scripts::Scripts;
use crate::server_config;
use crate::snapshot::{self, Counters, SnapshotStats};

mod clear;
mod lease;
mod notices;
mod remove;
mod sweep;

use notices::Notices;

/// The store format this build writes and reads (key layout, records, scripts).
pub const REDIS_FORMAT_VERSION: u32 = 1;

/// Query ids listed per `ZRANGE` page by `list_queries`.
const LIST_PAGE: isize = 1000;

/// A [`ResultStore`] on Redis (or a Redis-compatible server). Cheap to clone; clones share one
/// multiplexed connection, which reconnects by itself after the server comes back.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    conn: ConnectionManager,
    options: RedisStoreOptions,
    scripts: Scripts,
    /// Queries this handle has put in the query index (one `ZADD` per query per handle).
    listed: Mutex<HashSet<String>>,
    /// Makes trash key names and snapshot reader tokens unique across handles and processes.
    token_prefix: String,
    token_counter: AtomicU64,
    closed: AtomicBool,
    snapshots: Counters,
    /// The Pub/Sub channel the scripts publish commit notices on.
    notice_channel: String,
    /// This handle's subscription to that channel.
    notices: Notices,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("namespace", &self.inner.options.namespace)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to the server at `url` (`redis://[user:password@]host:port[/db]`) and checks
    /// (or, in an empty database, records) the store format version.
    ///
    /// Fails with [`StoreError::UnsupportedFormat`] when the namespace was written by another
    /// format version, and with a transient error when the server cannot be reached.
    pub async fn connect(url: &str, options: RedisStoreOptions) -> Result<RedisStore, StoreError> {
        keys::validate_namespace(&options.namespace)?;
        let client =
            redis::Client::open(url).map_err(|e| permanent(format!("invalid Redis URL: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(options.response_timeout))
            .set_connection_timeout(Some(options.connection_timeout))
            .set_number_of_retries(options.reconnect_retries)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1));
        let mut conn = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(from_redis)?;
        let format_key = keys::format_key(&options.namespace);
        let (found,): (Option<String>,) = redis::pipe()
            .cmd("SET")
            .arg(&format_key)
            .arg(REDIS_FORMAT_VERSION)
            .arg("NX")
            .ignore()
            .cmd("GET")
            .arg(&format_key)
            .query_async(&mut conn)
            .await
            .map_err(from_redis)?;
        let found = found.unwrap_or_default();
        match found.parse::<u32>() {
            Ok(REDIS_FORMAT_VERSION) => {}
            Ok(other) => {
                return Err(StoreError::UnsupportedFormat {
                    found: other,
                    supported: REDIS_FORMAT_VERSION,
                })
            }
            Err(_) => {
                return Err(StoreError::corrupt(
                    format!("format record {format_key:?}"),
                    format_args!("{found:?} is not a version number"),
                ))
            }
        }
        server_config::warn_on_eviction(&mut conn).await;
        let notice_channel = keys::notice_channel(&options.namespace);
        let notices = notices::start(
            client,
            notice_channel.clone(),
            options.connection_timeout,
            options.response_timeout,
        )
        .await?;
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let store = RedisStore {
            inner: Arc::new(Inner {
                conn,
                options,
                scripts: Scripts::new(),
                listed: Mutex::default(),
                token_prefix: format!("{nanos:x}-{:x}", std::process::id()),
                token_counter: AtomicU64::new(0),
                closed: AtomicBool::new(false),
                snapshots: Counters::default(),
                notice_channel,
                notices,
            }),
        };
        store.spawn_sweep();
        Ok(store)
    }

    /// Flushes (see [`FlushMode`]) and closes this handle: further calls on any clone fail
    /// with [`StoreError::Closed`], and commit notice receivers see `Closed`. The connection
    /// closes when the last clone is dropped.
    pub async fn close(self) -> Result<(), StoreError> {
        let flushed = self.flush().await;
        self.inner.closed.store(true, Ordering::Release);
        self.inner.notices.stop();
        flushed
    }

    /// What this handle's snapshots have done so far (shared by its clones).
    pub fn snapshot_stats(&self) -> SnapshotStats {
        self.inner.snapshots.stats()
    }

    /// The connection, or [`StoreError::Closed`].
    fn conn(&self) -> Result<ConnectionManager, StoreError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        Ok(self.inner.conn.clone())
    }

    /// A name no other clear or snapshot of any handle uses.
    fn unique_token(&self) -> String {
        let n = self.inner.token_counter.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n:x}", self.inner.token_prefix)
    }

    fn keys(&self, query_id: &str) -> Result<QueryKeys, StoreError> {
        QueryKeys::new(&self.inner.options.namespace, query_id)
    }

    /// Puts `query_id` in the query index before its first commit through this handle.
    ///
    /// The index is its own key (another Cluster slot than the query's), so it cannot be
    /// written by the commit script; writing it first means a committed query is always
    /// listed. An id whose commit then failed is listed without a meta hash, and listing
    /// skips it.
    async fn register(
        &self,
        query_id: &str,
        con: &mut ConnectionManager,
    ) -> Result<(), StoreError> {
        let known = self
            .inner
            .listed
            .lock()
            .map(|listed| listed.contains(query_id))
            .unwrap_or(false);
        if known {
            return Ok(());
        }
        let index = keys::query_index(&self.inner.options.namespace);
        let _: i64 = redis::cmd("ZADD")
            .arg(index)
            .arg("NX")
            .arg(0)
            .arg(query_id)
            .query_async(con)
            .await
            .map_err(from_redis)?;
        if let Ok(mut listed) = self.inner.listed.lock() {
            listed.insert(query_id.to_owned());
        }
        Ok(())
    }

    async fn read_meta(
        &self,
        con: &mut ConnectionManager,
        query_id: &str,
        keys: &QueryKeys,
    ) -> Result<Option<Meta>, StoreError> {
        let fields: Fields = redis::cmd("HMGET")
            .arg(keys.meta())
            .arg(&META_FIELDS[..])
            .query_async(con)
            .await
            .map_err(from_redis)?;
        Meta::decode(query_id, &fields)
    }

    /// Unlinks the keys a clear renamed away, then forgets them. A failure here leaves them
    /// in the trash set for the next clear; the clear itself has already happened.
    async fn empty_trash(
        &self,
        con: &mut ConnectionManager,
        keys: &QueryKeys,
        pending: Vec<Vec<u8>>,
    ) {
        if pending.is_empty() {
            return;
        }
        let result: Result<(), redis::RedisError> = redis::pipe()
            .cmd("UNLINK")
            .arg(&pending)
            .ignore()
            .cmd("SREM")
            .arg(keys.trash())
            .arg(&pending)
            .ignore()
            .query_async(con)
            .await;
        if let Err(err) = result {
            tracing::warn!(%err, "unlinking cleared keys failed; the next clear retries");
        }
    }
}

#[async_trait]
impl ResultStore for RedisStore {
    async fn commit(
        &self,
        query_id: &str,
        commit: Commit<'_>,
    ) -> Result<CommitReceipt, StoreError> {
        let keys = self.keys(query_id)?;
        let mut con = self.conn()?;
        let options = &self.inner.options;
        let effective = last_wins(commit.mutations);
        let upserts: Vec<_> = effective.iter().filter(|m| m.data.is_some()).collect();
        let mut invocation = self.inner.scripts.commit.prepare_invoke();
        invocation
            .key(keys.meta())
            .key(keys.rows())
            .key(keys.outbox())
            .key(keys.log())
            .key(keys.snapshots())
            .key(keys.lease());
        let (first, last) = commit.sequence.map_or(([0u8; 8], [0u8; 8]), |s| {
            (s.first.to_be_bytes(), s.last.to_be_bytes())
        });
        invocation
            .arg(if commit.sequence.is_some() { "1" } else { "0" })
            .arg(&first[..])
            .arg(&last[..])
            .arg(commit.payload)
            .arg(options.outbox_retention.max_entries.max(1))
            .arg(options.outbox_retention.max_bytes)
            .arg(options.change_log_retention.max_entries.max(1))
            .arg(options.change_log_retention.max_bytes)
            .arg(upserts.len())
            .arg(commit.fence.map_or_else(String::new, |t| t.to_string()))
            .arg(&self.inner.notice_channel)
            .arg(query_id);
        for m in &upserts {
            invocation
                .arg(&m.row_signature.to_be_bytes()[..])
                .arg(m.data.unwrap_or_default());
        }
        for m in effective.iter().filter(|m| m.data.is_none()) {
            invocation.arg(&m.row_signature.to_be_bytes()[..]);
        }
        self.register(query_id, &mut con).await?;
        let value: redis::Value = invocation
            .invoke_async(&mut con)
            .await
            .map_err(from_redis)?;
        match reply::commit(query_id, &value)? {
            CommitReply::Done(receipt) => Ok(receipt),
            CommitReply::Regression(committed) => Err(StoreError::SequenceRegression {
                query_id: query_id.to_owned(),
                committed,
                attempted: liveresults_core::error::SpanDisplay {
                    first: u64::from_be_bytes(first),
                    last: u64::from_be_bytes(last),
                },
            }),
            CommitReply::Fenced(live) => Err(StoreError::Fenced {
                query_id: query_id.to_owned(),
                fence: commit.fence,
                live,
            }),
        }
    }

    async fn query_info(&self, query_id: &str) -> Result<QueryInfo, StoreError> {
        let keys = self.keys(query_id)?;
        let mut con = self.conn()?;
        Ok(self
            .read_meta(&mut con, query_id, &keys)
            .await?
            .map_or_else(|| QueryInfo::empty(query_id), |m| m.info(query_id)))
    }

    async fn clear_query(&self, query_id: &str) -> Result<QueryInfo, StoreError> {
        self.clear(query_id, None).await
    }

    /// Fenced inside the clear script (see `scripts::CLEAR`).
    async fn clear_query_fenced(
        &self,
        query_id: &str,
        fence: Option<u64>,
    ) -> Result<QueryInfo, StoreError> {
        self.clear(query_id, fence).await
    }

    async fn remove_query(&self, query_id: &str) -> Result<(), StoreError> {
        self.remove(query_id, None).await
    }

    /// Fenced inside the removal script (see `scripts::REMOVE`).
    async fn remove_query_fenced(
        &self,
        query_id: &str,
        fence: Option<u64>,
    ) -> Result<(), StoreError> {
        self.remove(query_id, fence).await
    }

    async fn snapshot(&self, query_id: &str, chunk_rows: usize) -> Result<Snapshot, StoreError> {
        let keys = self.keys(query_id)?;
        let con = self.conn()?;
        let (info, rows) = snapshot::read(
            &con,
            &keys,
            query_id,
            &self.unique_token(),
            &self.inner.options,
            &self.inner.scripts,
            &self.inner.snapshots,
        )
        .await?;
        Ok(Snapshot::new(
            info,
            Box::new(snapshot::AssembledChunks::new(rows, chunk_rows)),
        ))
    }

    async fn read_outbox(
        &self,
        query_id: &str,
        after: Option<u64>,
        max_entries: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let keys = self.keys(query_id)?;
        let mut con = self.conn()?;
        // The first entry wanted has last sequence > after: members start with it, big-endian.
        let start = match after {
            None => b"-".to_vec(),
            Some(u64::MAX) => return self.check_gap_only(&mut con, query_id, &keys, after).await,
            Some(a) => {
                let mut s = b"[".to_vec();
                s.extend_from_slice(&(a + 1).to_be_bytes());
                s
            }
        };
        // One MULTI/EXEC: the eviction mark and the entries come from the same moment, so a
        // commit evicting in between cannot turn a gap into a silent partial answer.
        let (fields, members): (Fields, Vec<Vec<u8>>) = redis::pipe()
            .atomic()
            .cmd("HMGET")
            .arg(keys.meta())
            .arg(&META_FIELDS[..])
            .cmd("ZRANGEBYLEX")
            .arg(keys.outbox())
            .arg(start)
            .arg("+")
            .arg("LIMIT")
            .arg(0)
            // The server parses the count as a signed 64-bit number.
            .arg(max_entries.min(i64::MAX as usize))
            .query_async(&mut con)
            .await
            .map_err(from_redis)?;
        let Some(meta) = Meta::decode(query_id, &fields)? else {
            return Ok(Vec::new());
        };
        OutboxWindow::new(meta.evicted_through).check_read(query_id, after)?;
        if max_entries == 0 {
            return Ok(Vec::new());
        }
        members
            .into_iter()
            .map(|m| records::decode_outbox(query_id, m))
            .collect()
    }

    async fn checkpoint(
        &self,
        reaction_id: &str,
        query_id: &str,
    ) -> Result<Option<Checkpoint>, StoreError> {
        let keys = keys::checkpoint_keys(&self.inner.options.namespace, reaction_id, query_id)?;
        let mut con = self.conn()?;
        let raw: Option<Vec<u8>> = redis::cmd("HGET")
            .arg(keys.checkpoints())
            .arg(reaction_id)
            .query_async(&mut con)
            .await
            .map_err(from_redis)?;
        raw.map(|raw| records::decode_checkpoint(reaction_id, query_id, &raw))
            .transpose()
    }

    async fn save_checkpoint(
        &self,
        reaction_id: &str,
        query_id: &str,
        checkpoint: Checkpoint,
    ) -> Result<(), StoreError> {
        let keys = keys::checkpoint_keys(&self.inner.options.namespace, reaction_id, query_id)?;
        let mut con = self.conn()?;
        let _: i64 = redis::cmd("HSET")
            .arg(keys.checkpoints())
            .arg(reaction_id)
            .arg(records::encode_checkpoint(checkpoint))
            .query_async(&mut con)
            .await
            .map_err(from_redis)?;
        Ok(())
    }

    async fn delete_checkpoint(&self, reaction_id: &str, query_id: &str) -> Result<(), StoreError> {
        let keys = keys::checkpoint_keys(&self.inner.options.namespace, reaction_id, query_id)?;
        let mut con = self.conn()?;
        let _: i64 = redis::cmd("HDEL")
            .arg(keys.checkpoints())
            .arg(reaction_id)
            .query_async(&mut con)
            .await
            .map_err(from_redis)?;
        Ok(())
    }

    async fn list_queries(&self) -> Result<Vec<QueryInfo>, StoreError> {
        let mut con = self.conn()?;
        let index = keys::query_index(&self.inner.options.namespace);
        let mut out = Vec::new();
        let mut start: isize = 0;
        loop {
            let ids = index_page(&mut con, &index, start).await?;
            let mut pipe = redis::pipe();
            let mut page_keys = Vec::with_capacity(ids.len());
            for id in &ids {
                // An id that no longer validates was never committed (commits validate first).
                let Ok(keys) = self.keys(id) else { continue };
                pipe.cmd("HMGET").arg(keys.meta()).arg(&META_FIELDS[..]);
                page_keys.push(id);
            }
            let metas: Vec<Fields> = if page_keys.is_empty() {
                Vec::new()
            } else {
                pipe.query_async(&mut con).await.map_err(from_redis)?
            };
            for (id, fields) in page_keys.into_iter().zip(metas) {
                if let Some(meta) = Meta::decode(id, &fields)? {
                    out.push(meta.info(id));
                }
            }
            if (ids.len() as isize) < LIST_PAGE {
                return Ok(out);
            }
            start += LIST_PAGE;
        }
    }

    async fn flush(&self) -> Result<(), StoreError> {
        let mut con = self.conn()?;
        match self.inner.options.flush {
            FlushMode::RoundTrip => {
                let _: String = redis::cmd("PING")
                    .query_async(&mut con)
                    .await
                    .map_err(from_redis)?;
            }
            FlushMode::WaitReplicas { replicas, timeout } => {
                let acked: u64 = redis::cmd("WAIT")
                    .arg(replicas)
                    .arg(timeout.as_millis() as u64)
                    .query_async(&mut con)
                    .await
                    .map_err(from_redis)?;
                if acked < u64::from(replicas) {
                    return Err(transient(format!(
                        "WAIT: {acked} of {replicas} replicas acknowledged within {timeout:?}"
                    )));
                }
            }
            FlushMode::WaitAof {
                local,
                replicas,
                timeout,
            } => {
                let (local_done, replicas_done): (u64, u64) = redis::cmd("WAITAOF")
                    .arg(u8::from(local))
                    .arg(replicas)
                    .arg(timeout.as_millis() as u64)
                    .query_async(&mut con)
                    .await
                    .map_err(from_redis)?;
                if local_done < u64::from(local) || replicas_done < u64::from(replicas) {
                    return Err(transient(format!(
                        "WAITAOF: local {local_done}, replicas {replicas_done} of {replicas} fsynced within {timeout:?}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// A real write the server refuses exactly when it refuses commits (see
    /// `server_config::probe_writable`).
    async fn check_writable(&self) -> Result<(), StoreError> {
        let mut con = self.conn()?;
        let probe = keys::writable_probe(&self.inner.options.namespace);
        server_config::probe_writable(&mut con, &probe, &self.inner.token_prefix).await
    }

    fn leases(&self) -> Option<&dyn Leases> {
        Some(self)
    }

    /// Notices from every handle on this namespace, through this handle's Pub/Sub
    /// subscription. A notice with an empty query id means the subscription was lost and
    /// restored: notices may have been missed (see the `notices` module).
    fn commit_notices(&self) -> Option<broadcast::Receiver<CommitNotice>> {
        Some(self.inner.notices.receiver())
    }
}

impl RedisStore {
    /// `read_outbox` after `u64::MAX`: nothing can follow, but a gap is still a gap.
    async fn check_gap_only(
        &self,
        con: &mut ConnectionManager,
        query_id: &str,
        keys: &QueryKeys,
        after: Option<u64>,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        validate_query_id(query_id)?;
        if let Some(meta) = self.read_meta(con, query_id, keys).await? {
            OutboxWindow::new(meta.evicted_through).check_read(query_id, after)?;
        }
        Ok(Vec::new())
    }
}

/// One page of the query index from rank `start` ([`LIST_PAGE`] ids at most). All scores are
/// 0, so the index is ordered by id bytes: UTF-8 byte order is the order of Rust strings. The
/// index only grows (`ZADD NX`), so paging by rank never skips an id.
async fn index_page(
    con: &mut ConnectionManager,
    index: &str,
    start: isize,
) -> Result<Vec<String>, StoreError> {
    redis::cmd("ZRANGE")
        .arg(index)
        .arg(start)
        .arg(start + LIST_PAGE - 1)
        .query_async(con)
        .await
        .map_err(from_redis)
}
