//! Point-in-time snapshots without blocking the server.
//!
//! A script copying a large query would block every client of the server for as long as it
//! runs (about a second per million rows), so a snapshot is assembled by the client from
//! short commands instead:
//!
//! 1. In one script step: register as a reader of the query (token -> deadline, on the
//!    server's clock) and read the meta hash: version `v0` (the count of commits ever applied)
//!    and epoch `e0`. Every commit from now on sees a live reader and appends its row
//!    mutations to the query's change log, keyed by its version.
//! 2. `HSCAN` the rows hash in batches, extending the registration every third of its TTL.
//!    HSCAN returns every row present for the whole scan (with its one value), may return a
//!    row twice (deduplicated here), and may or may not return rows changed during the scan.
//! 3. In one MULTI/EXEC: read the meta hash again — version `v1`, epoch `e1`, the sequence and
//!    row count at `v1` — and the first page of change-log entries after `v0`.
//! 4. Replay the entries `(v0, v1]` in order over the scanned rows. A row no commit touched
//!    during the scan has its scanned value (or was rightly absent); every row a commit did
//!    touch takes the value of its last mutation up to `v1`. The result is the query exactly
//!    at `v1`, paired with the sequence read at `v1`.
//!
//! The snapshot starts over when it cannot prove that: the query was cleared (`e1 != e0`), or
//! the change log does not hold every version in `(v0, v1]` (the log was trimmed by its
//! retention, or the reader stalled past its registration's TTL so a commit did not log).
//! After `snapshot_attempts` tries it fails with a transient error. A final check compares
//! the row count with the meta hash's exact count.
//!
//! Readers sign off when done, and the first commit that finds no live reader drops the log:
//! commits pay for logging only while a snapshot is actually being read. The assembled rows
//! sit in the client's memory until the caller has read them (about the query's size in row
//! bytes plus ~40 bytes per row).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use async_trait::async_trait;
use liveresults_core::signature_set::SignatureMap;
use liveresults_core::{QueryInfo, RowChunk, SnapshotChunks, StoreError};
use redis::aio::ConnectionManager;

use crate::error::{from_redis, transient};
use crate::keys::QueryKeys;
use crate::options::RedisStoreOptions;
use crate::records::{decode_log_entry, u64_be, Change, Fields, Meta, META_FIELDS};
use crate::scripts::Scripts;

/// Change-log entries fetched per command.
const LOG_PAGE: usize = 256;

/// What snapshots of one store handle have done, for tests and metrics: proof that the
/// replay path runs, and how often scans start over.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) completed: AtomicU64,
    pub(crate) restarts: AtomicU64,
    pub(crate) replayed_commits: AtomicU64,
}

/// A copy of a store handle's snapshot counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnapshotStats {
    /// Snapshots that completed.
    pub completed: u64,
    /// Attempts that started over (cleared during the scan, or the change log did not cover it).
    pub restarts: u64,
    /// Change-log entries (commits that landed during a scan) replayed over scanned rows.
    pub replayed_commits: u64,
}

impl Counters {
    pub(crate) fn stats(&self) -> SnapshotStats {
        SnapshotStats {
            completed: self.completed.load(Ordering::Relaxed),
            restarts: self.restarts.load(Ordering::Relaxed),
            replayed_commits: self.replayed_commits.load(Ordering::Relaxed),
        }
    }
}

/// Why an attempt must start over.
enum Attempt {
    Done(QueryInfo, SignatureMap<Vec<u8>>),
    Retry(String),
}

/// Reads a point-in-time snapshot of `query_id`: its state and every row. `token` names this
/// reader among the query's snapshot readers.
pub(crate) async fn read(
    conn: &ConnectionManager,
    keys: &QueryKeys,
    query_id: &str,
    token: &str,
    options: &RedisStoreOptions,
    scripts: &Scripts,
    counters: &Counters,
) -> Result<(QueryInfo, SignatureMap<Vec<u8>>), StoreError> {
    let reader = Reader {
        keys,
        query_id,
        token,
        options,
        scripts,
        ttl_ms: u64::try_from(options.snapshot_reader_ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1),
    };
    let result = reader.attempts(conn, counters).await;
    // Sign off whatever happened, so commits stop logging as soon as no reader is left (a
    // reader that cannot sign off expires by itself).
    let signed_off: Result<i64, _> = redis::cmd("ZREM")
        .arg(keys.snapshots())
        .arg(token)
        .query_async(&mut conn.clone())
        .await;
    if let Err(err) = signed_off {
        tracing::debug!(query_id, %err, "snapshot reader could not sign off; it expires");
    }
    result
}

/// One snapshot reader's fixed parameters.
struct Reader<'a> {
    keys: &'a QueryKeys,
    query_id: &'a str,
    token: &'a str,
    options: &'a RedisStoreOptions,
    scripts: &'a Scripts,
    ttl_ms: u64,
}

impl Reader<'_> {
    async fn attempts(
        &self,
        conn: &ConnectionManager,
        counters: &Counters,
    ) -> Result<(QueryInfo, SignatureMap<Vec<u8>>), StoreError> {
        let query_id = self.query_id;
        let mut last_reason = String::new();
        for attempt in 1..=self.options.snapshot_attempts {
            match self.attempt_once(conn.clone(), counters).await? {
                Attempt::Done(info, rows) => {
                    counters.completed.fetch_add(1, Ordering::Relaxed);
                    return Ok((info, rows));
                }
                Attempt::Retry(reason) => {
                    counters.restarts.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(query_id, attempt, %reason, "snapshot starts over");
                    last_reason = reason;
                }
            }
        }
        Err(transient(format!(
            "snapshot of query {query_id:?} started over {} times; last: {last_reason}",
            self.options.snapshot_attempts
        )))
    }

    async fn attempt_once(
        &self,
        mut con: ConnectionManager,
        counters: &Counters,
    ) -> Result<Attempt, StoreError> {
        let (keys, query_id, options) = (self.keys, self.query_id, self.options);
        let readers = keys.snapshots();
        let start: Fields = self
            .scripts
            .snapshot_begin
            .key(&readers)
            .key(keys.meta())
            .arg(self.token)
            .arg(self.ttl_ms)
            .arg(&META_FIELDS[..])
            .invoke_async(&mut con)
            .await
            .map_err(from_redis)?;
        let Some(m0) = Meta::decode(query_id, &start)? else {
            return Ok(Attempt::Done(
                QueryInfo::empty(query_id),
                SignatureMap::default(),
            ));
        };

        let mut rows = SignatureMap::default();
        rows.reserve(usize::try_from(m0.row_count).unwrap_or(0).min(1 << 20));
        let rows_key = keys.rows();
        let renew_every = options.snapshot_reader_ttl / 3;
        let mut renewed = Instant::now();
        let mut cursor: u64 = 0;
        loop {
            if renewed.elapsed() >= renew_every {
                let extended: i64 = self
                    .scripts
                    .snapshot_renew
                    .key(&readers)
                    .arg(self.token)
                    .arg(self.ttl_ms)
                    .invoke_async(&mut con)
                    .await
                    .map_err(from_redis)?;
                if extended == 0 {
                    return Ok(Attempt::Retry(
                        "the reader's registration expired during the scan".into(),
                    ));
                }
                renewed = Instant::now();
            }
            let (next, flat): (u64, Vec<Vec<u8>>) = redis::cmd("HSCAN")
                .arg(&rows_key)
                .arg(cursor)
                .arg("COUNT")
                .arg(options.scan_batch)
                .query_async(&mut con)
                .await
                .map_err(from_redis)?;
            let mut flat = flat.into_iter();
            while let (Some(field), Some(value)) = (flat.next(), flat.next()) {
                let sig = u64_be(&field)
                    .ok_or_else(|| StoreError::corrupt_key("row", query_id, &field))?;
                rows.insert(sig, value);
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        self.replay(con, m0, rows, counters).await
    }

    /// Steps 3 and 4: the state at the end of the scan, and the change log up to it.
    async fn replay(
        &self,
        mut con: ConnectionManager,
        m0: Meta,
        mut rows: SignatureMap<Vec<u8>>,
        counters: &Counters,
    ) -> Result<Attempt, StoreError> {
        let (keys, query_id) = (self.keys, self.query_id);
        let log_key = keys.log();
        let (end, mut page): (Fields, Vec<Vec<u8>>) = redis::pipe()
            .atomic()
            .cmd("HMGET")
            .arg(keys.meta())
            .arg(&META_FIELDS[..])
            .cmd("ZRANGEBYSCORE")
            .arg(&log_key)
            .arg(format!("({}", m0.version))
            .arg("+inf")
            .arg("LIMIT")
            .arg(0)
            .arg(LOG_PAGE)
            .query_async(&mut con)
            .await
            .map_err(from_redis)?;
        let Some(m1) = Meta::decode(query_id, &end)? else {
            return Ok(Attempt::Retry("the meta record disappeared".into()));
        };
        if m1.epoch != m0.epoch {
            return Ok(Attempt::Retry(format!(
                "cleared during the scan (epoch {} -> {})",
                m0.epoch, m1.epoch
            )));
        }
        // The next version the replay needs; every one up to v1 must be in the log.
        let mut expected = m0.version.saturating_add(1);
        loop {
            for entry in &page {
                let (version, changes) = decode_log_entry(query_id, entry)?;
                if version > m1.version {
                    break;
                }
                if version != expected {
                    return Ok(Attempt::Retry(format!(
                        "change log holds version {version} where {expected} was due"
                    )));
                }
                for change in changes {
                    match change {
                        Change::Upsert(sig, row) => rows.insert(sig, row.to_vec()),
                        Change::Delete(sig) => rows.remove(&sig),
                    };
                }
                expected = expected.saturating_add(1);
            }
            if expected > m1.version {
                break;
            }
            // Entries never change once written, so later pages need no atomicity: a page that
            // lost entries to trimming shows up as a missing version.
            page = redis::cmd("ZRANGEBYSCORE")
                .arg(&log_key)
                .arg(expected)
                .arg(m1.version)
                .arg("LIMIT")
                .arg(0)
                .arg(LOG_PAGE)
                .query_async(&mut con)
                .await
                .map_err(from_redis)?;
            if page.is_empty() {
                return Ok(Attempt::Retry(format!(
                    "change log no longer holds version {expected} (trimmed, or the reader stalled past its registration)"
                )));
            }
        }
        let replayed = m1.version.saturating_sub(m0.version);
        counters
            .replayed_commits
            .fetch_add(replayed, Ordering::Relaxed);
        if rows.len() as u64 != m1.row_count {
            return Err(StoreError::corrupt_meta(
                query_id,
                format_args!(
                    "snapshot at version {} assembled {} rows where the meta record counts {}",
                    m1.version,
                    rows.len(),
                    m1.row_count
                ),
            ));
        }
        Ok(Attempt::Done(m1.info(query_id), rows))
    }
}

/// Hands out an assembled snapshot's rows in chunks, giving each row's memory back as it goes.
pub(crate) struct AssembledChunks {
    rows: std::collections::hash_map::IntoIter<u64, Vec<u8>>,
    chunk_rows: usize,
}

impl AssembledChunks {
    pub(crate) fn new(rows: SignatureMap<Vec<u8>>, chunk_rows: usize) -> Self {
        AssembledChunks {
            rows: rows.into_iter(),
            chunk_rows: chunk_rows.max(1),
        }
    }
}

#[async_trait]
impl SnapshotChunks for AssembledChunks {
    async fn next_chunk(&mut self) -> Result<Option<RowChunk>, StoreError> {
        let mut chunk = RowChunk::with_capacity(self.chunk_rows.min(self.rows.len()));
        for (sig, row) in self.rows.by_ref().take(self.chunk_rows) {
            chunk.push(sig, &row);
        }
        Ok((!chunk.is_empty()).then_some(chunk))
    }
}
