//! The background reclaimer against stale planner statistics: the case the benchmark found,
//! where one reclaim step of migration 1 ran for minutes.
//!
//! The rows table is ANALYZEd while it holds one row, then a query gets 100,000 rows and is
//! cleared. With statistics that say "one row", migration 1's step (`sig IN (SELECT sig …
//! LIMIT n)`) was planned as a nested-loop semi join running the subquery once per outer
//! row: one 10,000-row step took 429 s here. The test requires every old row gone within
//! 30 s.

use std::time::{Duration, Instant};

use liveresults_core::testing::commit_at;
use liveresults_core::{LiveResultsWriter, ResultStore, RowMutation};
use liveresults_postgres::testing::{unique_schema, PgServer};
use liveresults_postgres::tokio_postgres;
use liveresults_postgres::PgStoreOptions;

/// Rows in the cleared query, committed 10,000 per commit.
const BIG: u64 = 100_000;
const PER_COMMIT: u64 = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reclaim_is_fast_when_statistics_predate_a_large_cleared_query() {
    let schema = unique_schema();
    let s = PgServer::shared()
        .connect(
            PgStoreOptions::new()
                .schema(schema.as_str())
                .reclaim(10_000, Duration::from_secs(3600)),
        )
        .await;
    let client = s.pool().get().await.unwrap();
    // Autovacuum would refresh the statistics once it notices the 100,000 inserts (within
    // its one-minute nap, so only sometimes within this test): off for this table, so the
    // statistics stay those of the one-row table, as they were when the bench hit this.
    client
        .batch_execute(&format!(
            "ALTER TABLE \"{schema}\".rows SET (autovacuum_enabled = off)"
        ))
        .await
        .unwrap();
    commit_at(&s, "small", 1, &[RowMutation::upsert(1, b"one")]).await;
    client
        .batch_execute(&format!("ANALYZE \"{schema}\".rows"))
        .await
        .unwrap();
    let stats: f32 = client
        .query_one(
            "SELECT reltuples FROM pg_class WHERE oid = $1::text::regclass",
            &[&format!("\"{schema}\".rows")],
        )
        .await
        .unwrap()
        .get(0);
    assert!(stats <= 1.0, "statistics after ANALYZE say {stats} rows");

    let data = [b'x'; 100];
    for (i, start) in (0..BIG).step_by(PER_COMMIT as usize).enumerate() {
        let rows: Vec<_> = (start..start + PER_COMMIT)
            .map(|sig| RowMutation::upsert(sig, &data))
            .collect();
        commit_at(&s, "big", i as u64 + 1, &rows).await;
    }
    assert_eq!(s.row_count("big").await.unwrap() as u64, BIG);
    let qid: i64 = client
        .query_one(
            &format!("SELECT qid FROM \"{schema}\".queries WHERE query_id = $1"),
            &[&b"big".as_slice()],
        )
        .await
        .unwrap()
        .get(0);

    let cleared = Instant::now();
    let info = s.clear_query("big").await.unwrap();
    assert_eq!((info.epoch, info.row_count), (1, 0));
    let old_rows =
        format!("SELECT count(*) FROM \"{schema}\".rows WHERE qid = {qid} AND epoch = 0");
    let left = wait_for_none(&client, &old_rows, cleared + Duration::from_secs(30)).await;
    assert_eq!(
        left, 0,
        "{left} of the cleared query's {BIG} rows left 30 s after the clear"
    );
    let freed_in = cleared.elapsed();
    let steps = BIG / 10_000;
    println!(
        "reclaimed {BIG} rows in {steps} steps of 10000 in {freed_in:.2?} ({:.1?} per step)",
        freed_in / steps as u32
    );
    // The last step (fewer rows than the batch) frees the outbox and unlists the epoch.
    let listed = format!("SELECT count(*) FROM \"{schema}\".reclaim");
    let left = wait_for_none(&client, &listed, Instant::now() + Duration::from_secs(10)).await;
    assert_eq!(left, 0, "the cleared epoch is still listed");
    assert_eq!(s.row_count("small").await.unwrap(), 1);
}

/// Polls a `count(*)` until it is 0 or `deadline` passes; returns the last count.
async fn wait_for_none(client: &tokio_postgres::Client, sql: &str, deadline: Instant) -> i64 {
    loop {
        let left: i64 = client.query_one(sql, &[]).await.unwrap().get(0);
        if left == 0 || Instant::now() >= deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
