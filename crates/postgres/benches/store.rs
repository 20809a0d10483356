//! PostgreSQL store benchmark, against one server it starts (`fsync=on`, so every
//! transaction pays a WAL flush as in production), every number next to a baseline measured
//! in the same run on the same database:
//!
//! - `raw unnest`: the same rows as one plain `INSERT … SELECT FROM unnest($1, $2)` per batch
//!   into a table with the same primary key, one transaction each — what writing the rows
//!   costs with no fence, sequence, count, outbox or notice at all.
//!
//! Then, on one large query: row_count, a snapshot read in chunks, a clear (what the caller
//! waits for, and how long the background reclaimer then takes to free the rows).
//!
//! Run with `cargo bench -p liveresults-postgres --bench store`. `BENCH_ROWS` sets the size
//! of the large query (default 1,000,000 rows).

use std::time::{Duration, Instant};

use liveresults_core::{Commit, ResultStore, RowMutation, SequenceSpan};
use liveresults_postgres::deadpool_postgres::Object;
use liveresults_postgres::testing::PgServer;
use liveresults_postgres::{PgStore, PgStoreOptions};

const ROW_BYTES: usize = 100;
/// Rounds per configuration; contenders alternate within a round and the median is printed.
const ROUNDS: usize = 3;

/// Signatures spread like hashes, so no contender benefits from sequential keys.
fn signature(i: u64) -> u64 {
    let mut x = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn human(rate: f64) -> String {
    if rate >= 1e6 {
        format!("{:.2}M", rate / 1e6)
    } else if rate >= 1e3 {
        format!("{:.1}k", rate / 1e3)
    } else {
        format!("{rate:.0}")
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// Seconds to write `batches` batches of `batch` new rows through the store.
async fn run_store(store: &PgStore, query: &str, batch: usize, batches: u64) -> f64 {
    let value = vec![7u8; ROW_BYTES];
    let t = Instant::now();
    for b in 0..batches {
        let muts: Vec<_> = (0..batch as u64)
            .map(|i| RowMutation::upsert(signature(b * batch as u64 + i), &value))
            .collect();
        let span = SequenceSpan::single(b + 1);
        store
            .commit(query, Commit::sequenced(&muts, span, &[]))
            .await
            .unwrap();
    }
    let elapsed = t.elapsed().as_secs_f64();
    let count = store.query_info(query).await.unwrap().row_count;
    assert_eq!(count, batch as u64 * batches);
    elapsed
}

/// Seconds for the same rows as one raw `unnest` insert (one transaction) per batch.
async fn run_raw(client: &Object, key: i64, batch: usize, batches: u64) -> f64 {
    let value = vec![7u8; ROW_BYTES];
    let statement = client
        .prepare_cached(
            "INSERT INTO bench_raw.rows (qid, sig, data) \
             SELECT $1, s, d FROM unnest($2::bigint[], $3::bytea[]) AS u (s, d)",
        )
        .await
        .unwrap();
    let t = Instant::now();
    for b in 0..batches {
        let sigs: Vec<i64> = (0..batch as u64)
            .map(|i| signature(b * batch as u64 + i) as i64)
            .collect();
        let data: Vec<&[u8]> = vec![&value; batch];
        client
            .execute(&statement, &[&key, &sigs, &data])
            .await
            .unwrap();
    }
    t.elapsed().as_secs_f64()
}

/// Waits until the reclaimer has freed every cleared row; returns how long that took.
async fn reclaimed(client: &Object, schema: &str) -> Duration {
    let t = Instant::now();
    let sql = format!("SELECT count(*) FROM \"{schema}\".reclaim");
    loop {
        let left: i64 = client.query_one(&sql, &[]).await.unwrap().get(0);
        if left == 0 {
            return t.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let server = tokio::task::block_in_place(PgServer::start_durable);
    let schema = "bench";
    let store = server.connect(PgStoreOptions::new().schema(schema)).await;
    let client = store.pool().get().await.unwrap();
    client
        .batch_execute(
            "CREATE SCHEMA bench_raw; \
             CREATE TABLE bench_raw.rows (qid bigint, sig bigint, data bytea NOT NULL, \
                                          PRIMARY KEY (qid, sig))",
        )
        .await
        .unwrap();
    let version: String = client
        .query_one("SHOW server_version", &[])
        .await
        .unwrap()
        .get(0);
    println!(
        "PostgreSQL {version} (fsync=on, synchronous_commit=on), {ROW_BYTES}-byte rows, median of {ROUNDS} alternating rounds"
    );
    println!(
        "{:>6} {:>8} | {:>22} | {:>22} | {:>9}",
        "batch", "rows", "store commits/s rows/s", "raw unnest txn/s rows/s", "store/raw"
    );
    let mut key = 0i64;
    for (batch, batches) in [(1usize, 3000u64), (100, 500), (1000, 100)] {
        let (mut store_s, mut raw_s) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            key += 1;
            store_s.push(run_store(&store, &format!("q{key}"), batch, batches).await);
            raw_s.push(run_raw(&client, key, batch, batches).await);
        }
        let (st, rt) = (median(store_s), median(raw_s));
        let rows = batch as f64 * batches as f64;
        println!(
            "{batch:>6} {:>8} | {:>9}  {:>11} | {:>9}  {:>11} | {:>8.2}x",
            batch as u64 * batches,
            human(batches as f64 / st),
            human(rows / st),
            human(batches as f64 / rt),
            human(rows / rt),
            rt / st,
        );
    }

    let large: u64 = std::env::var("BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let chunk = 10_000u64;
    let t = Instant::now();
    let value = vec![7u8; ROW_BYTES];
    for b in 0..large.div_ceil(chunk) {
        let muts: Vec<_> = (b * chunk..((b + 1) * chunk).min(large))
            .map(|i| RowMutation::upsert(signature(i), &value))
            .collect();
        store
            .commit(
                "large",
                Commit::sequenced(&muts, SequenceSpan::single(b + 1), &[]),
            )
            .await
            .unwrap();
    }
    let load = t.elapsed();
    store
        .commit(
            "small",
            Commit::sequenced(
                &[RowMutation::upsert(1, &value)],
                SequenceSpan::single(1),
                &[],
            ),
        )
        .await
        .unwrap();
    let mut counts = Vec::new();
    let mut small_counts = Vec::new();
    for _ in 0..21 {
        let t = Instant::now();
        assert_eq!(store.query_info("large").await.unwrap().row_count, large);
        counts.push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        assert_eq!(store.query_info("small").await.unwrap().row_count, 1);
        small_counts.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let t = Instant::now();
    let mut snapshot = store.snapshot("large", 4096).await.unwrap();
    let mut read = 0u64;
    while let Some(chunk) = snapshot.next_chunk().await.unwrap() {
        read += chunk.len() as u64;
    }
    let snap = t.elapsed();
    assert_eq!(read, large);
    println!(
        "large query: {large} rows loaded in {:.1}s (commits of {chunk}); row_count median {:.0} µs (1-row query: {:.0} µs); snapshot of {large} rows {:.2}s (chunks of 4096)",
        load.as_secs_f64(),
        median(counts),
        median(small_counts),
        snap.as_secs_f64(),
    );
    let t = Instant::now();
    store.clear_query("large").await.unwrap();
    let clear_large = t.elapsed();
    let reclaim = reclaimed(&client, schema).await;
    let t = Instant::now();
    store.clear_query("small").await.unwrap();
    let clear_small = t.elapsed();
    println!(
        "clear: {large} rows {} for the caller (the background reclaimer freed them in {:.1}s, 10000-row transactions); 1 row {}",
        ms(clear_large),
        reclaim.as_secs_f64(),
        ms(clear_small),
    );
    drop(client);
    store.close().await.unwrap();
}
