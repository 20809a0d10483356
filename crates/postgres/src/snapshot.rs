//! Point-in-time snapshots: a `REPEATABLE READ, READ ONLY` transaction and a cursor.
//!
//! The meta row (sequence, row count, epoch) and every row come from the transaction's one
//! MVCC snapshot, taken by its first statement, so the snapshot is exact at its sequence
//! however many commits land while it is read — and no commit waits for it. Rows are
//! fetched from a server-side cursor `chunk_rows` at a time, so the client holds one chunk,
//! never the whole query.
//!
//! The price is a pooled connection held from `snapshot` until the last chunk (or until the
//! snapshot is dropped), and, while the transaction is open, row versions the server may not
//! vacuum. Hence the session's `idle_in_transaction_session_timeout`
//! ([`PgStoreOptions::snapshot_idle_timeout`](crate::PgStoreOptions::snapshot_idle_timeout)):
//! a reader that stops asking for chunks loses its snapshot instead of holding it forever.
//! A snapshot dropped before its end detaches its connection from the pool (the server then
//! rolls the transaction back), so no later caller can find itself inside it.

use async_trait::async_trait;
use deadpool_postgres::Object;
use liveresults_core::{QueryInfo, RowChunk, Snapshot, SnapshotChunks, StoreError};

use crate::codec::{counter_from_sql, u64_from_sql};
use crate::error::from_pg;
use crate::sql::Sql;

/// Opens the snapshot's transaction on `client`, reads the meta row and, for a live query,
/// declares the cursor.
pub(crate) async fn open(
    client: Object,
    sql: &Sql,
    query_id: &str,
    chunk_rows: usize,
    idle_timeout_ms: u64,
) -> Result<Snapshot, StoreError> {
    // SET LOCAL takes no parameters: the number is formatted from a u64, nothing else.
    client
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; \
             SET LOCAL idle_in_transaction_session_timeout = {idle_timeout_ms}"
        ))
        .await
        .map_err(from_pg)?;
    let mut chunks = PgChunks {
        client: Some(client),
        fetch: format!(
            "FETCH FORWARD {} FROM liveresults_snapshot",
            chunk_rows.max(1)
        ),
        chunk_rows: chunk_rows.max(1),
    };
    let info = chunks.declare(sql, query_id).await;
    match info {
        Ok(Some(info)) => Ok(Snapshot::new(info, Box::new(chunks))),
        Ok(None) => {
            chunks.finish().await?;
            Ok(Snapshot::new(QueryInfo::empty(query_id), Box::new(chunks)))
        }
        Err(err) => {
            chunks.abandon();
            Err(err)
        }
    }
}

/// The cursor of one open snapshot; `client` is `None` once the snapshot is exhausted.
struct PgChunks {
    client: Option<Object>,
    fetch: String,
    chunk_rows: usize,
}

impl PgChunks {
    /// Reads the meta row; for a live query declares the cursor over its current epoch.
    async fn declare(
        &mut self,
        sql: &Sql,
        query_id: &str,
    ) -> Result<Option<QueryInfo>, StoreError> {
        let Some(client) = self.client.as_ref() else {
            return Ok(None);
        };
        let meta = client
            .prepare_cached(&sql.snapshot_meta)
            .await
            .map_err(from_pg)?;
        let Some(row) = client
            .query_opt(&meta, &[&query_id.as_bytes()])
            .await
            .map_err(from_pg)?
        else {
            return Ok(None);
        };
        let qid: i64 = row.try_get(0).map_err(from_pg)?;
        let seq: Option<i64> = row.try_get(1).map_err(from_pg)?;
        let count: i64 = row.try_get(2).map_err(from_pg)?;
        let epoch: i64 = row.try_get(3).map_err(from_pg)?;
        let what = || format!("meta record of query {query_id:?}");
        let info = QueryInfo {
            query_id: query_id.to_owned(),
            sequence: seq.map(u64_from_sql),
            row_count: counter_from_sql(what, count)?,
            epoch: counter_from_sql(what, epoch)?,
        };
        let cursor = client
            .prepare_cached(&sql.snapshot_cursor)
            .await
            .map_err(from_pg)?;
        client
            .execute(&cursor, &[&qid, &epoch])
            .await
            .map_err(from_pg)?;
        Ok(Some(info))
    }

    /// Ends the transaction and hands the connection back to the pool.
    async fn finish(&mut self) -> Result<(), StoreError> {
        if let Some(client) = self.client.take() {
            if let Err(err) = client.batch_execute("COMMIT").await {
                drop(Object::take(client));
                return Err(from_pg(err));
            }
        }
        Ok(())
    }

    /// Drops the connection instead of returning it mid-transaction.
    fn abandon(&mut self) {
        if let Some(client) = self.client.take() {
            drop(Object::take(client));
        }
    }
}

impl Drop for PgChunks {
    fn drop(&mut self) {
        self.abandon();
    }
}

#[async_trait]
impl SnapshotChunks for PgChunks {
    async fn next_chunk(&mut self) -> Result<Option<RowChunk>, StoreError> {
        let Some(client) = self.client.as_ref() else {
            return Ok(None);
        };
        let fetched = match client.prepare_cached(&self.fetch).await {
            Ok(statement) => client.query(&statement, &[]).await,
            Err(err) => Err(err),
        };
        let rows = match fetched {
            Ok(rows) => rows,
            Err(err) => {
                self.abandon();
                return Err(from_pg(err));
            }
        };
        let mut chunk = RowChunk::with_capacity(rows.len());
        for row in &rows {
            let decoded = row
                .try_get::<_, i64>(0)
                .and_then(|sig| Ok((sig, row.try_get::<_, &[u8]>(1)?)));
            match decoded {
                Ok((sig, data)) => chunk.push(u64_from_sql(sig), data),
                Err(err) => {
                    self.abandon();
                    return Err(from_pg(err));
                }
            }
        }
        if rows.len() < self.chunk_rows {
            self.finish().await?;
        }
        Ok((!chunk.is_empty()).then_some(chunk))
    }
}
