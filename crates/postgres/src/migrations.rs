//! The schema, created and migrated by the store itself.
//!
//! `<schema>.migrations` records every migration applied (version, description, time). On
//! connect the store takes a transaction-scoped advisory lock on the schema's name (so that
//! hosts starting together do not race), creates the schema and that table if missing, and
//! applies, in order and in the same transaction, every migration above the recorded
//! version. A schema recording a version above [`PG_FORMAT_VERSION`] was written by a newer
//! build: [`StoreError::UnsupportedFormat`], and nothing is touched.

use liveresults_core::StoreError;
use tokio_postgres::Client;

use crate::error::from_pg;

/// The newest schema version this build writes and reads.
pub const PG_FORMAT_VERSION: u32 = 3;

/// Every migration: version, description, SQL (with `{schema}` and `{channel}` to fill in).
/// Applied migrations are never edited: a change is a new one, so a schema created by any
/// build reaches the same state.
const MIGRATIONS: [(u32, &str, &str); 3] = [
    (
        1,
        "tables queries, rows, outbox, reclaim, checkpoints, leases, writable_probe; functions \
         commit_batch, clear_query, remove_query, acquire_lease, reclaim_step",
        include_str!("migrations/v1.sql"),
    ),
    (
        2,
        "clears and removals fenced: function fence_check; clear_query and remove_query take \
         the fencing token and check it with the lease row locked",
        include_str!("migrations/v2.sql"),
    ),
    (
        3,
        "reclaim_step deletes by row address (ctid) collected by an index scan on (qid, \
         epoch), whatever the planner statistics say",
        include_str!("migrations/v3.sql"),
    ),
];

/// The schema name as a quoted identifier (names are validated to need no escaping).
pub(crate) fn quoted(schema: &str) -> String {
    format!("\"{schema}\"")
}

/// The NOTIFY channel of a schema's commit notices.
pub(crate) fn channel(schema: &str) -> String {
    format!("{schema}_notices")
}

/// Brings `schema` to [`PG_FORMAT_VERSION`]; returns the version found before.
pub(crate) async fn migrate(client: &mut Client, schema: &str) -> Result<u32, StoreError> {
    let s = quoted(schema);
    let tx = client.transaction().await.map_err(from_pg)?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        &[&format!("liveresults:{schema}")],
    )
    .await
    .map_err(from_pg)?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {s}; \
         CREATE TABLE IF NOT EXISTS {s}.migrations (\
             version integer PRIMARY KEY, \
             description text NOT NULL, \
             applied_at timestamptz NOT NULL DEFAULT now())"
    ))
    .await
    .map_err(from_pg)?;
    let row = tx
        .query_one(&format!("SELECT max(version) FROM {s}.migrations"), &[])
        .await
        .map_err(from_pg)?;
    let found: Option<i32> = row.try_get(0).map_err(from_pg)?;
    let found = match found {
        None => 0,
        Some(v) => u32::try_from(v).map_err(|_| {
            StoreError::corrupt(format!("{s}.migrations"), format_args!("version {v}"))
        })?,
    };
    if found > PG_FORMAT_VERSION {
        return Err(StoreError::UnsupportedFormat {
            found,
            supported: PG_FORMAT_VERSION,
        });
    }
    for (version, description, sql) in MIGRATIONS {
        if version <= found {
            continue;
        }
        let sql = sql
            .replace("{schema}", &s)
            .replace("{channel}", &channel(schema));
        tx.batch_execute(&sql).await.map_err(from_pg)?;
        tx.execute(
            &format!("INSERT INTO {s}.migrations (version, description) VALUES ($1, $2)"),
            &[&(version as i32), &description],
        )
        .await
        .map_err(from_pg)?;
    }
    tx.commit().await.map_err(from_pg)?;
    Ok(found)
}
