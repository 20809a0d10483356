//! PostgreSQL store benchmark, against one server it starts (`fsync=on`, so every
//! transaction pays a WAL flush as in production), every number next to baselines measured
//! in the same run on the same database:
//!
//! - `raw unnest`: the same rows as one plain `INSERT … SELECT FROM unnest($1, $2)` per batch
//!   into a table with the same kind of primary key, one transaction each — what writing the
//!   rows costs with no upsert, fence, sequence, count, outbox or notice at all;
//! - `raw COPY`: the same rows through binary `COPY` into a session temp table, then one
//!   `INSERT … SELECT` from it, one transaction each — the other way of shipping a batch the
//!   store could use (it does not: this never beat unnest, see the README).
//!
//! Then where a batch-1000 commit's time goes (the raw insert with the store's steps added
//! one at a time), and, on one large query: row_count, a snapshot read in chunks, a clear
//! (what the caller waits for, and how long the background reclaimer then takes to free the
//! rows).
//!
//! Run with `cargo bench -p liveresults-postgres --bench store`. `BENCH_ROWS` sets the size
//! of the large query (default 1,000,000 rows).

use std::time::{Duration, Instant};

use liveresults_core::{Commit, ResultStore, RowMutation, SequenceSpan};
use liveresults_postgres::deadpool_postgres::Object;
use liveresults_postgres::testing::PgServer;
use liveresults_postgres::tokio_postgres::binary_copy::BinaryCopyInWriter;
use liveresults_postgres::tokio_postgres::types::Type;
use liveresults_postgres::{PgStore, PgStoreOptions};

const ROW_BYTES: usize = 100;
/// Rounds per configuration; contenders alternate within a round and the median is printed.
const ROUNDS: usize = 3;
/// Rounds of the batch-1000 breakdown, whose steps differ by less than the first table's.
const PROFILE_ROUNDS: usize = 5;

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

/// A raw way of writing one batch of rows into `bench_raw.rows`, one transaction each.
#[derive(Clone, Copy, PartialEq)]
enum Raw {
    /// `INSERT … SELECT FROM unnest($2, $3)`: the baseline.
    Unnest,
    /// The same with `ON CONFLICT DO UPDATE` (speculative insertion, as an upsert needs).
    Upsert,
    /// The upsert counting the rows it created (`RETURNING xmax = 0`), as the store did.
    UpsertCounted,
    /// `UPDATE … FROM unnest`, then `INSERT … WHERE NOT EXISTS`: an upsert without
    /// speculative insertion (safe only when nothing else writes the same keys at once).
    UpdateThenInsert,
    /// Binary `COPY` into a temp table, then `INSERT … SELECT` from it.
    Copy,
}

impl Raw {
    fn sql(self) -> &'static str {
        match self {
            Raw::Unnest | Raw::Copy => {
                "INSERT INTO bench_raw.rows (qid, sig, data) \
                 SELECT $1, s, d FROM unnest($2::bigint[], $3::bytea[]) AS u (s, d)"
            }
            Raw::Upsert => {
                "INSERT INTO bench_raw.rows (qid, sig, data) \
                 SELECT $1, s, d FROM unnest($2::bigint[], $3::bytea[]) AS u (s, d) \
                 ON CONFLICT (qid, sig) DO UPDATE SET data = EXCLUDED.data"
            }
            Raw::UpsertCounted => {
                "WITH up AS (INSERT INTO bench_raw.rows (qid, sig, data) \
                 SELECT $1, s, d FROM unnest($2::bigint[], $3::bytea[]) AS u (s, d) \
                 ON CONFLICT (qid, sig) DO UPDATE SET data = EXCLUDED.data \
                 RETURNING (xmax = '0'::xid) AS created) \
                 SELECT count(*) FILTER (WHERE created) FROM up"
            }
            Raw::UpdateThenInsert => {
                "WITH u AS (SELECT s, d FROM unnest($2::bigint[], $3::bytea[]) AS u (s, d)), \
                 upd AS (UPDATE bench_raw.rows r SET data = u.d FROM u \
                         WHERE r.qid = $1 AND r.sig = u.s RETURNING r.sig) \
                 INSERT INTO bench_raw.rows (qid, sig, data) \
                 SELECT $1, s, d FROM u WHERE NOT EXISTS \
                   (SELECT 1 FROM bench_raw.rows r WHERE r.qid = $1 AND r.sig = u.s)"
            }
        }
    }
}

/// Seconds for the same rows written the `how` way, one transaction per batch.
async fn run_raw(client: &mut Object, how: Raw, key: i64, batch: usize, batches: u64) -> f64 {
    let value = vec![7u8; ROW_BYTES];
    if how == Raw::Copy {
        return run_copy(client, key, batch, batches, &value).await;
    }
    let statement = client.prepare_cached(how.sql()).await.unwrap();
    let t = Instant::now();
    for b in 0..batches {
        let sigs: Vec<i64> = (0..batch as u64)
            .map(|i| signature(b * batch as u64 + i) as i64)
            .collect();
        let data: Vec<&[u8]> = vec![&value; batch];
        client
            .query(&statement, &[&key, &sigs, &data])
            .await
            .unwrap();
    }
    t.elapsed().as_secs_f64()
}

/// Binary `COPY` of each batch into a session temp table (emptied at commit), then one
/// `INSERT … SELECT` from it, in one transaction: four round trips (BEGIN, COPY, INSERT,
/// COMMIT) against the unnest insert's one, but no array to build and decode.
async fn run_copy(client: &mut Object, key: i64, batch: usize, batches: u64, value: &[u8]) -> f64 {
    client
        .batch_execute(
            "CREATE TEMP TABLE IF NOT EXISTS bench_stage (sig bigint NOT NULL, \
             data bytea NOT NULL) ON COMMIT DELETE ROWS",
        )
        .await
        .unwrap();
    let copy = client
        .prepare_cached("COPY bench_stage (sig, data) FROM STDIN (FORMAT binary)")
        .await
        .unwrap();
    let insert = client
        .prepare_cached(
            "INSERT INTO bench_raw.rows (qid, sig, data) SELECT $1, sig, data FROM bench_stage",
        )
        .await
        .unwrap();
    let t = Instant::now();
    for b in 0..batches {
        let tx = client.transaction().await.unwrap();
        let sink = tx.copy_in(&copy).await.unwrap();
        let writer = BinaryCopyInWriter::new(sink, &[Type::INT8, Type::BYTEA]);
        futures_util::pin_mut!(writer);
        for i in 0..batch as u64 {
            let sig = signature(b * batch as u64 + i) as i64;
            writer.as_mut().write(&[&sig, &value]).await.unwrap();
        }
        writer.finish().await.unwrap();
        tx.execute(&insert, &[&key]).await.unwrap();
        tx.commit().await.unwrap();
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
    let mut client = store.pool().get().await.unwrap();
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
        "{:>6} {:>8} | {:>22} | {:>22} | {:>22} | {:>9} | {:>9}",
        "batch",
        "rows",
        "store commits/s rows/s",
        "raw unnest txn/s rows/s",
        "raw COPY txn/s rows/s",
        "store/raw",
        "COPY/raw"
    );
    let mut key = 0i64;
    for (batch, batches) in [(1usize, 3000u64), (100, 500), (1000, 100), (10_000, 20)] {
        let (mut store_s, mut raw_s, mut copy_s) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            key += 1;
            store_s.push(run_store(&store, &format!("q{key}"), batch, batches).await);
            raw_s.push(run_raw(&mut client, Raw::Unnest, key, batch, batches).await);
            key += 1;
            copy_s.push(run_raw(&mut client, Raw::Copy, key, batch, batches).await);
        }
        let (st, rt, ct) = (median(store_s), median(raw_s), median(copy_s));
        let rows = batch as f64 * batches as f64;
        let pair = |secs: f64| {
            format!(
                "{:>9}  {:>11}",
                human(batches as f64 / secs),
                human(rows / secs)
            )
        };
        println!(
            "{batch:>6} {:>8} | {} | {} | {} | {:>8.2}x | {:>8.2}x",
            batch as u64 * batches,
            pair(st),
            pair(rt),
            pair(ct),
            rt / st,
            rt / ct,
        );
    }

    // Where a batch-1000 commit's time goes: the raw statement with one more of the
    // store's steps at a time, then the store itself (fence, meta row, count, outbox,
    // NOTIFY in one function call).
    let steps = [
        ("raw unnest INSERT", Some(Raw::Unnest)),
        ("+ ON CONFLICT DO UPDATE", Some(Raw::Upsert)),
        ("+ counting created rows", Some(Raw::UpsertCounted)),
        (
            "UPDATE then INSERT WHERE NOT EXISTS",
            Some(Raw::UpdateThenInsert),
        ),
        ("store commit", None),
    ];
    let (batch, batches) = (1000usize, 100u64);
    let mut times = vec![Vec::new(); steps.len()];
    for _ in 0..PROFILE_ROUNDS {
        for (at, (_, how)) in steps.iter().enumerate() {
            key += 1;
            times[at].push(match how {
                Some(how) => run_raw(&mut client, *how, key, batch, batches).await,
                None => run_store(&store, &format!("q{key}"), batch, batches).await,
            });
        }
    }
    let base = median(times[0].clone());
    println!(
        "where a batch-{batch} commit's time goes ({batches} transactions each, median of {PROFILE_ROUNDS} rounds):"
    );
    for ((name, _), secs) in steps.iter().zip(times) {
        let secs = median(secs);
        println!(
            "  {name:<36} {:>9} rows/s  {:>6.2} ms/txn  {:>5.2}x raw",
            human((batch as u64 * batches) as f64 / secs),
            secs * 1e3 / batches as f64,
            base / secs,
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
        "large query: {large} rows loaded in {:.1}s (commits of {chunk}); row_count median {:.0} µs (1-row query: {:.0} µs); snapshot of {large} rows {:.2}s = {} rows/s (chunks of 4096)",
        load.as_secs_f64(),
        median(counts),
        median(small_counts),
        snap.as_secs_f64(),
        human(large as f64 / snap.as_secs_f64()),
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
