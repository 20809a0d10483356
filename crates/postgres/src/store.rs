//! The store: the pool, connect and close, and the [`ResultStore`] operations. Commits,
//! clears and removals are calls of the schema's functions (`migrations/v*.sql`); snapshots,
//! leases, notices and the reclaimer have their own modules.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use deadpool_postgres::{ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use liveresults_core::contract_rules::{
    check_sequence, last_wins, validate_query_id, validate_reaction_id,
};
use liveresults_core::error::SpanDisplay;
use liveresults_core::lease::{CommitNotice, Leases};
use liveresults_core::outbox_window::OutboxWindow;
use liveresults_core::{
    Checkpoint, Commit, CommitReceipt, OutboxEntry, QueryInfo, ResultStore, SequenceSpan, Snapshot,
    StoreError,
};
use tokio::sync::broadcast;
use tokio_postgres::{Config, Row};

use crate::codec::{counter_from_sql, limit_to_sql, notice_id, u64_from_sql, u64_to_sql};
use crate::error::{from_pg, from_pg_for, from_pool, permanent, ConfigError};
use crate::lease::token_to_sql;
use crate::migrations::{self, channel};
use crate::notices::{self, Notices};
use crate::options::{validate_schema, PgStoreOptions};
use crate::reclaim::Reclaimer;
use crate::snapshot;
use crate::sql::Sql;
use crate::tls::{take_sslrootcert, Tls};

/// A [`ResultStore`] on PostgreSQL. Cheap to clone; clones share one connection pool, one
/// notice listener and one reclaimer.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    options: PgStoreOptions,
    sql: Sql,
    closed: AtomicBool,
    notices: Notices,
    reclaimer: Reclaimer,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("schema", &self.inner.options.schema)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user[:password]@host[:port]/db`, or
    /// the `key=value` form), creates or migrates the store's schema, starts the notice
    /// listener and the reclaimer. The URL's `sslmode` (`disable`, `prefer`, `require`) and
    /// `sslrootcert=FILE` choose TLS (feature `tls`; see the crate docs, "TLS").
    ///
    /// Fails with [`StoreError::UnsupportedFormat`] when the schema was written by a newer
    /// build, with a permanent error when TLS is asked for and not built in
    /// ([`ConfigError::TlsNotBuilt`]) or the server's certificate is refused, and with a
    /// transient error when the server cannot be reached.
    pub async fn connect(url: &str, options: PgStoreOptions) -> Result<PgStore, StoreError> {
        validate_schema(&options.schema)?;
        let (url, url_ca_file) = take_sslrootcert(url)?;
        let mut config =
            Config::from_str(&url).map_err(|e| ConfigError::InvalidUrl(e.to_string()))?;
        let tls = Tls::for_config(&config, options.tls_ca_file.clone().or(url_ca_file)).await?;
        config.connect_timeout(options.connect_timeout);
        if config.get_application_name().is_none() {
            config.application_name("liveresults");
        }
        let manager = tls.manager(
            config.clone(),
            ManagerConfig {
                // `Fast` only checks that the connection is open: every statement the store
                // sends leaves the session as it found it (snapshots detach theirs).
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.wait_timeout))
            .create_timeout(Some(options.connect_timeout))
            .build()
            .map_err(|e| permanent(format!("connection pool: {e}")))?;
        {
            let mut client = pool.get().await.map_err(from_pool)?;
            migrations::migrate(&mut client, &options.schema).await?;
        }
        let notices = notices::start(
            config,
            tls,
            channel(&options.schema),
            options.connect_timeout,
        )
        .await?;
        let sql = Sql::new(&options.schema);
        let reclaimer = Reclaimer::start(
            pool.clone(),
            sql.reclaim_step.clone(),
            options.reclaim_batch,
            options.reclaim_every,
        );
        Ok(PgStore {
            inner: Arc::new(Inner {
                pool,
                options,
                sql,
                closed: AtomicBool::new(false),
                notices,
                reclaimer,
            }),
        })
    }

    /// Flushes and closes this handle: further calls on any clone fail with
    /// [`StoreError::Closed`], commit notice receivers see `Closed`, the background tasks
    /// stop and the pool's connections close.
    pub async fn close(self) -> Result<(), StoreError> {
        let flushed = self.flush().await;
        self.inner.closed.store(true, Ordering::Release);
        self.inner.notices.stop();
        self.inner.reclaimer.stop();
        self.inner.pool.close();
        flushed
    }

    /// The schema this store lives in.
    pub fn schema(&self) -> &str {
        &self.inner.options.schema
    }

    /// The connection pool (for tools and benchmarks that run their own SQL next to the
    /// store).
    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// A pooled connection, or [`StoreError::Closed`].
    pub(crate) async fn client(&self) -> Result<Object, StoreError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        self.inner.pool.get().await.map_err(from_pool)
    }

    pub(crate) fn sql(&self) -> &Sql {
        &self.inner.sql
    }

    /// Runs one of the fenced functions that answer `(status, new epoch, live holder, live
    /// token)` (clear, remove): the fence is checked in the function's own transaction, with
    /// the lease row locked, so the lease cannot move between the check and the write. The
    /// epoch is `None` for a query the store does not know.
    async fn fenced_epoch_call(
        &self,
        sql: &str,
        query_id: &str,
        fence: Option<u64>,
    ) -> Result<Option<u64>, StoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await.map_err(from_pg)?;
        let row = client
            .query_one(
                &statement,
                &[
                    &query_id.as_bytes(),
                    &notice_id(query_id),
                    &fence.map(token_to_sql),
                ],
            )
            .await
            .map_err(|e| from_pg_for(query_id, e))?;
        let status: &str = row.try_get(0).map_err(from_pg)?;
        match status {
            "ok" => {}
            "fenced" => return Err(fence_refusal(&row, 2, query_id, fence)),
            other => return Err(permanent(format!("{sql} answered {other:?}"))),
        }
        let epoch: Option<i64> = row.try_get(1).map_err(from_pg)?;
        let epoch = epoch
            .map(|e| counter_from_sql(|| meta_what(query_id), e))
            .transpose()?;
        if epoch.is_some() {
            self.inner.reclaimer.wake();
        }
        Ok(epoch)
    }
}

/// [`StoreError::Fenced`] from a refusal whose live lease (holder, token; both NULL when no
/// lease is live) is in columns `at` and `at + 1`; a column that does not decode is that
/// error instead.
fn fence_refusal(row: &Row, at: usize, query_id: &str, fence: Option<u64>) -> StoreError {
    let live = || -> Result<Option<(String, u64)>, StoreError> {
        let holder: Option<String> = row.try_get(at).map_err(from_pg)?;
        let token: Option<i64> = row.try_get(at + 1).map_err(from_pg)?;
        Ok(match (holder, token) {
            (Some(holder), Some(token)) => Some((
                holder,
                counter_from_sql(|| format!("lease of query {query_id:?}"), token)?,
            )),
            _ => None,
        })
    };
    match live() {
        Ok(live) => StoreError::Fenced {
            query_id: query_id.to_owned(),
            fence,
            live,
        },
        Err(err) => err,
    }
}

fn meta_what(query_id: &str) -> String {
    format!("meta record of query {query_id:?}")
}

/// Decodes `(seq, row_count, epoch)` columns starting at `at`.
fn info_from(row: &Row, at: usize, query_id: String) -> Result<QueryInfo, StoreError> {
    let seq: Option<i64> = row.try_get(at).map_err(from_pg)?;
    let count: i64 = row.try_get(at + 1).map_err(from_pg)?;
    let epoch: i64 = row.try_get(at + 2).map_err(from_pg)?;
    Ok(QueryInfo {
        sequence: seq.map(u64_from_sql),
        row_count: counter_from_sql(|| meta_what(&query_id), count)?,
        epoch: counter_from_sql(|| meta_what(&query_id), epoch)?,
        query_id,
    })
}

#[async_trait]
impl ResultStore for PgStore {
    async fn commit(
        &self,
        query_id: &str,
        commit: Commit<'_>,
    ) -> Result<CommitReceipt, StoreError> {
        validate_query_id(query_id)?;
        if let Some(span) = commit.sequence {
            // The span's own shape; whether it follows the committed sequence is checked
            // by the commit function against the locked meta row.
            check_sequence(query_id, None, span)?;
        }
        let effective = last_wins(commit.mutations);
        let mut up_sigs = Vec::with_capacity(effective.len());
        let mut up_data: Vec<&[u8]> = Vec::with_capacity(effective.len());
        let mut del_sigs = Vec::new();
        for m in &effective {
            match m.data {
                Some(data) => {
                    up_sigs.push(u64_to_sql(m.row_signature));
                    up_data.push(data);
                }
                None => del_sigs.push(u64_to_sql(m.row_signature)),
            }
        }
        let span = commit.sequence.unwrap_or(SequenceSpan::single(0));
        let retention = self.inner.options.outbox_retention;
        let fence = commit.fence.map(token_to_sql);
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&self.inner.sql.commit)
            .await
            .map_err(from_pg)?;
        let row = client
            .query_one(
                &statement,
                &[
                    &query_id.as_bytes(),
                    &notice_id(query_id),
                    &fence,
                    &commit.sequence.is_some(),
                    &u64_to_sql(span.first),
                    &u64_to_sql(span.last),
                    &commit.payload,
                    &limit_to_sql(retention.max_entries.max(1) as u64),
                    &limit_to_sql(retention.max_bytes),
                    &up_sigs,
                    &up_data,
                    &del_sigs,
                ],
            )
            .await
            .map_err(|e| from_pg_for(query_id, e))?;
        let status: &str = row.try_get(0).map_err(from_pg)?;
        let seq: Option<i64> = row.try_get(1).map_err(from_pg)?;
        let what = || meta_what(query_id);
        match status {
            "ok" => {
                let count = |at: usize| -> Result<u64, StoreError> {
                    let n: i64 = row.try_get(at).map_err(from_pg)?;
                    counter_from_sql(what, n)
                };
                Ok(CommitReceipt {
                    sequence: seq.map(u64_from_sql),
                    row_count: count(2)?,
                    inserted: count(3)?,
                    deleted: count(4)?,
                })
            }
            "regression" => Err(StoreError::SequenceRegression {
                query_id: query_id.to_owned(),
                committed: seq.map(u64_from_sql),
                attempted: SpanDisplay {
                    first: span.first,
                    last: span.last,
                },
            }),
            "fenced" => Err(fence_refusal(&row, 6, query_id, commit.fence)),
            other => Err(permanent(format!("commit_batch answered {other:?}"))),
        }
    }

    async fn query_info(&self, query_id: &str) -> Result<QueryInfo, StoreError> {
        validate_query_id(query_id)?;
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&self.inner.sql.query_info)
            .await
            .map_err(from_pg)?;
        match client
            .query_opt(&statement, &[&query_id.as_bytes()])
            .await
            .map_err(from_pg)?
        {
            Some(row) => info_from(&row, 0, query_id.to_owned()),
            None => Ok(QueryInfo::empty(query_id)),
        }
    }

    /// Fenced without a token: refused while any host holds the query's lease.
    async fn clear_query(&self, query_id: &str) -> Result<QueryInfo, StoreError> {
        self.clear_query_fenced(query_id, None).await
    }

    /// Fenced without a token: refused while any host holds the query's lease.
    async fn remove_query(&self, query_id: &str) -> Result<(), StoreError> {
        self.remove_query_fenced(query_id, None).await
    }

    /// One call of the schema's `clear_query` function, which checks the fence with the
    /// lease row locked and clears in the same transaction.
    async fn clear_query_fenced(
        &self,
        query_id: &str,
        fence: Option<u64>,
    ) -> Result<QueryInfo, StoreError> {
        validate_query_id(query_id)?;
        let sql = &self.inner.sql.clear;
        Ok(match self.fenced_epoch_call(sql, query_id, fence).await? {
            Some(epoch) => QueryInfo {
                query_id: query_id.to_owned(),
                sequence: None,
                row_count: 0,
                epoch,
            },
            None => QueryInfo::empty(query_id),
        })
    }

    /// One call of the schema's `remove_query` function (fence and removal in one
    /// transaction, as for clears).
    async fn remove_query_fenced(
        &self,
        query_id: &str,
        fence: Option<u64>,
    ) -> Result<(), StoreError> {
        validate_query_id(query_id)?;
        let sql = &self.inner.sql.remove;
        self.fenced_epoch_call(sql, query_id, fence).await?;
        Ok(())
    }

    async fn snapshot(&self, query_id: &str, chunk_rows: usize) -> Result<Snapshot, StoreError> {
        validate_query_id(query_id)?;
        let client = self.client().await?;
        let idle_ms = u64::try_from(self.inner.options.snapshot_idle_timeout.as_millis())
            .unwrap_or(u64::MAX)
            .clamp(1, i32::MAX as u64);
        snapshot::open(client, &self.inner.sql, query_id, chunk_rows, idle_ms).await
    }

    async fn read_outbox(
        &self,
        query_id: &str,
        after: Option<u64>,
        max_entries: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        validate_query_id(query_id)?;
        // Entries wanted have last > after, i.e. last >= after + 1; nothing follows u64::MAX,
        // but the gap check still applies, so that case reads no entry.
        let (from, limit) = match after {
            None => (0, max_entries),
            Some(u64::MAX) => (u64::MAX, 0),
            Some(a) => (a + 1, max_entries),
        };
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&self.inner.sql.read_outbox)
            .await
            .map_err(from_pg)?;
        let rows = client
            .query(
                &statement,
                &[
                    &query_id.as_bytes(),
                    &u64_to_sql(from),
                    &limit_to_sql(limit as u64),
                ],
            )
            .await
            .map_err(from_pg)?;
        let Some(first) = rows.first() else {
            return Ok(Vec::new());
        };
        let evicted: Option<i64> = first.try_get(0).map_err(from_pg)?;
        OutboxWindow::new(evicted.map(u64_from_sql)).check_read(query_id, after)?;
        let mut entries = Vec::with_capacity(rows.len());
        for row in &rows {
            let first_seq: Option<i64> = row.try_get(1).map_err(from_pg)?;
            let last_seq: Option<i64> = row.try_get(2).map_err(from_pg)?;
            let (Some(first_seq), Some(last_seq)) = (first_seq, last_seq) else {
                continue; // the LEFT JOIN's row for a query without entries
            };
            entries.push(OutboxEntry {
                span: SequenceSpan {
                    first: u64_from_sql(first_seq),
                    last: u64_from_sql(last_seq),
                },
                payload: row.try_get(3).map_err(from_pg)?,
            });
        }
        Ok(entries)
    }

    async fn checkpoint(
        &self,
        reaction_id: &str,
        query_id: &str,
    ) -> Result<Option<Checkpoint>, StoreError> {
        validate_query_id(query_id)?;
        validate_reaction_id(reaction_id)?;
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&self.inner.sql.checkpoint)
            .await
            .map_err(from_pg)?;
        let Some(row) = client
            .query_opt(&statement, &[&query_id.as_bytes(), &reaction_id.as_bytes()])
            .await
            .map_err(from_pg)?
        else {
            return Ok(None);
        };
        let seq: Option<i64> = row.try_get(0).map_err(from_pg)?;
        let hash: i64 = row.try_get(1).map_err(from_pg)?;
        Ok(Some(Checkpoint {
            sequence: seq.map(u64_from_sql),
            config_hash: u64_from_sql(hash),
        }))
    }

    async fn save_checkpoint(
        &self,
        reaction_id: &str,
        query_id: &str,
        checkpoint: Checkpoint,
    ) -> Result<(), StoreError> {
        validate_query_id(query_id)?;
        validate_reaction_id(reaction_id)?;
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&self.inner.sql.save_checkpoint)
            .await
            .map_err(from_pg)?;
        client
            .execute(
                &statement,
                &[
                    &query_id.as_bytes(),
                    &reaction_id.as_bytes(),
                    &checkpoint.sequence.map(u64_to_sql),
                    &u64_to_sql(checkpoint.config_hash),
                ],
            )
            .await
            .map_err(from_pg)?;
        Ok(())
    }

    async fn delete_checkpoint(&self, reaction_id: &str, query_id: &str) -> Result<(), StoreError> {
        validate_query_id(query_id)?;
        validate_reaction_id(reaction_id)?;
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&self.inner.sql.delete_checkpoint)
            .await
            .map_err(from_pg)?;
        client
            .execute(&statement, &[&query_id.as_bytes(), &reaction_id.as_bytes()])
            .await
            .map_err(from_pg)?;
        Ok(())
    }

    async fn list_queries(&self) -> Result<Vec<QueryInfo>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&self.inner.sql.list_queries)
            .await
            .map_err(from_pg)?;
        let rows = client.query(&statement, &[]).await.map_err(from_pg)?;
        rows.iter()
            .map(|row| {
                let id: Vec<u8> = row.try_get(0).map_err(from_pg)?;
                let id = String::from_utf8(id)
                    .map_err(|e| StoreError::corrupt("query id in the queries table", e))?;
                info_from(row, 1, id)
            })
            .collect()
    }

    /// With the server's default `synchronous_commit = on`, a commit is acknowledged only
    /// once its WAL is flushed, so every acknowledged commit is already durable. Sessions,
    /// roles or databases set to `off` acknowledge earlier; `flush` then commits a small
    /// write with `synchronous_commit = on`, which flushes the WAL through it and so through
    /// every earlier commit (the WAL is one sequence). With synchronous standbys configured,
    /// that commit also waits for them as the setting says.
    async fn flush(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        if let Err(err) = client.batch_execute(&self.inner.sql.flush).await {
            // The failed transaction must not go back to the pool.
            drop(Object::take(client));
            return Err(from_pg(err));
        }
        Ok(())
    }

    /// A real write (an upsert of the probe row), so a server that refuses writes — a hot
    /// standby, a read-only transaction default, a full disk — makes this fail with its
    /// message.
    async fn check_writable(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&self.inner.sql.probe)
            .await
            .map_err(from_pg)?;
        client.execute(&statement, &[]).await.map_err(from_pg)?;
        Ok(())
    }

    fn leases(&self) -> Option<&dyn Leases> {
        Some(self)
    }

    /// Notices from every handle on this schema, through this handle's listening
    /// connection. A notice with an empty query id means notices may have been lost (see
    /// the `notices` module).
    fn commit_notices(&self) -> Option<broadcast::Receiver<CommitNotice>> {
        Some(self.inner.notices.receiver())
    }
}
