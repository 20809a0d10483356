//! Redis store benchmark, against one `redis-server` it starts (no persistence), every number
//! next to baselines measured in the same run on the same server:
//!
//! - `raw HSET`: the same rows as a pipeline of plain `HSET`s, one round trip per batch —
//!   what writing rows costs with no atomicity, sequence, count or outbox at all;
//! - `drasi garnet`: a re-creation of Drasi's Garnet writer — a pipeline of `HSET`/`HDEL` per
//!   mutation plus `HLEN` for the count, not atomic, no sequence kept with the rows.
//!
//! The store runs twice: with an empty outbox payload, and with a payload as large as the
//! batch's rows (what the runtime stores: the encoded result batch).
//!
//! Run with `cargo bench -p liveresults-redis --bench store`. `BENCH_ROWS` sets the size of
//! the large-query section (default 1,000,000 rows).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Instant;

use liveresults_core::{Commit, ResultStore, RowMutation, SequenceSpan};
use liveresults_redis::redis::{self, aio::MultiplexedConnection};
use liveresults_redis::{RedisStore, RedisStoreOptions};
use support::RedisServer;

const ROW_BYTES: usize = 100;
/// Rounds per configuration; contenders alternate within a round and the median is printed.
const ROUNDS: usize = 3;
/// Clears of the large query measured (each on a freshly loaded copy).
const CLEAR_ROUNDS: usize = 3;

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

async fn flushall(con: &mut MultiplexedConnection) {
    let _: () = redis::cmd("FLUSHALL").query_async(con).await.unwrap();
}

/// Seconds to write `batches` batches of `batch` new rows through the store.
async fn run_store(
    store: &RedisStore,
    query: &str,
    batch: usize,
    batches: u64,
    payload: bool,
) -> f64 {
    let value = vec![7u8; ROW_BYTES];
    let body = if payload {
        vec![9u8; batch * ROW_BYTES]
    } else {
        Vec::new()
    };
    let t = Instant::now();
    for b in 0..batches {
        let muts: Vec<_> = (0..batch as u64)
            .map(|i| RowMutation::upsert(signature(b * batch as u64 + i), &value))
            .collect();
        let span = SequenceSpan::single(b + 1);
        store
            .commit(query, Commit::sequenced(&muts, span, &body))
            .await
            .unwrap();
    }
    let elapsed = t.elapsed().as_secs_f64();
    let count = store.query_info(query).await.unwrap().row_count;
    assert_eq!(count, batch as u64 * batches);
    elapsed
}

/// Seconds for the same rows as pipelined `HSET`s (optionally with Drasi's trailing `HLEN`).
async fn run_raw(
    con: &mut MultiplexedConnection,
    key: &str,
    batch: usize,
    batches: u64,
    hlen: bool,
) -> f64 {
    let value = vec![7u8; ROW_BYTES];
    let t = Instant::now();
    for b in 0..batches {
        let mut pipe = redis::pipe();
        for i in 0..batch as u64 {
            pipe.cmd("HSET")
                .arg(key)
                .arg(&signature(b * batch as u64 + i).to_be_bytes()[..])
                .arg(&value)
                .ignore();
        }
        if hlen {
            pipe.cmd("HLEN").arg(key);
            let (_count,): (u64,) = pipe.query_async(con).await.unwrap();
        } else {
            let () = pipe.query_async(con).await.unwrap();
        }
    }
    t.elapsed().as_secs_f64()
}

struct Row {
    batch: usize,
    rows: u64,
    /// Rows/s of: store, store with payload, raw HSET, Drasi's Garnet pattern.
    rates: [f64; 4],
    /// Medians of the per-round ratios store/raw and store/garnet (rounds alternate, so
    /// machine noise hits each pair alike).
    store_vs_raw: f64,
    store_vs_drasi: f64,
}

async fn bench_batch(server: &RedisServer, store: &RedisStore, batch: usize, rows: u64) -> Row {
    let mut con = raw_connection(server).await;
    let batches = rows / batch as u64;
    let total = batches * batch as u64;
    let mut secs: [Vec<f64>; 4] = Default::default();
    let (mut vs_raw, mut vs_drasi) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        flushall(&mut con).await;
        let store_s = run_store(
            store,
            &format!("plain-{batch}-{round}"),
            batch,
            batches,
            false,
        )
        .await;
        flushall(&mut con).await;
        let payload_s = run_store(
            store,
            &format!("payload-{batch}-{round}"),
            batch,
            batches,
            true,
        )
        .await;
        flushall(&mut con).await;
        let raw_s = run_raw(
            &mut con,
            &format!("raw-{batch}-{round}"),
            batch,
            batches,
            false,
        )
        .await;
        flushall(&mut con).await;
        let drasi_s = run_raw(
            &mut con,
            &format!("drasi-{batch}-{round}"),
            batch,
            batches,
            true,
        )
        .await;
        for (column, s) in secs.iter_mut().zip([store_s, payload_s, raw_s, drasi_s]) {
            column.push(total as f64 / s);
        }
        vs_raw.push(raw_s / store_s);
        vs_drasi.push(drasi_s / store_s);
    }
    flushall(&mut con).await;
    Row {
        batch,
        rows: total,
        rates: secs.map(median),
        store_vs_raw: median(vs_raw),
        store_vs_drasi: median(vs_drasi),
    }
}

/// Microseconds the server spent executing the commands since the last `SLOWLOG RESET`
/// (every command is logged: the threshold is 0), not counting the slow log's own commands.
async fn server_time_us(con: &mut MultiplexedConnection) -> i64 {
    let entries: Vec<redis::Value> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(100)
        .query_async(con)
        .await
        .unwrap();
    let mut total = 0;
    for entry in entries {
        let redis::Value::Array(fields) = entry else {
            continue;
        };
        let (Some(redis::Value::Int(us)), Some(redis::Value::Array(argv))) =
            (fields.get(2), fields.get(3))
        else {
            continue;
        };
        let name = match argv.first() {
            Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).to_ascii_lowercase(),
            _ => String::new(),
        };
        if name != "slowlog" && name != "config" {
            total += us;
        }
    }
    total
}

async fn raw_connection(server: &RedisServer) -> MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let server = RedisServer::start();
    let version = {
        let mut con = raw_connection(&server).await;
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut con)
            .await
            .unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .unwrap_or("?")
            .to_owned()
    };
    println!(
        "redis-server {version}, rows of {ROW_BYTES} bytes, median of {ROUNDS} alternating rounds"
    );
    let store = RedisStore::connect(&server.url(), RedisStoreOptions::new())
        .await
        .unwrap();

    println!(
        "{:>6} {:>8} | {:>22} | {:>22} | {:>22} | {:>22} | {:>10} {:>12}",
        "batch",
        "rows",
        "store commits/s rows/s",
        "store+payload",
        "raw HSET pipeline",
        "drasi garnet pattern",
        "store/raw",
        "store/garnet"
    );
    for (batch, rows) in [(1usize, 20_000u64), (100, 200_000), (1000, 500_000)] {
        let r = bench_batch(&server, &store, batch, rows).await;
        let cell = |rate: f64| format!("{:>9} {:>12}", human(rate / r.batch as f64), human(rate));
        println!(
            "{:>6} {:>8} | {} | {} | {} | {} | {:>9.2}x {:>11.2}x",
            r.batch,
            r.rows,
            cell(r.rates[0]),
            cell(r.rates[1]),
            cell(r.rates[2]),
            cell(r.rates[3]),
            r.store_vs_raw,
            r.store_vs_drasi,
        );
    }

    // One large query: row_count and clear must not depend on its size.
    let big_rows: u64 = std::env::var("BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let load_start = Instant::now();
    run_store(&store, "big", 1000, big_rows / 1000, false).await;
    let load = load_start.elapsed();
    let mut count_times = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        let info = store.query_info("big").await.unwrap();
        count_times.push(t.elapsed().as_secs_f64() * 1e6);
        assert_eq!(info.row_count, big_rows / 1000 * 1000);
    }
    let small_rows = [RowMutation::upsert(1, b"x")];
    liveresults_core::testing::commit_at(&store, "small", 1, &small_rows).await;
    let mut small_times = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        store.query_info("small").await.unwrap();
        small_times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let t = Instant::now();
    let snapshot = store.snapshot("big", 4096).await.unwrap();
    let snapshot_rows = snapshot.collect_rows().await.unwrap().len();
    let snapshot_time = t.elapsed();
    let mut con = raw_connection(&server).await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("slowlog-log-slower-than")
        .arg(0)
        .query_async(&mut con)
        .await
        .unwrap();
    // Clears of the large query (reloaded each time) next to clears of a 1-row query, after a
    // pause so the load's after-effects settle; the server's own execution time comes from the
    // slow log (threshold 0: every command).
    let (mut clear_ms, mut clear_server, mut small_ms, mut small_server) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..CLEAR_ROUNDS {
        if round > 0 {
            run_store(&store, "big", 1000, big_rows / 1000, false).await;
            liveresults_core::testing::commit_at(&store, "small", 1, &small_rows).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        for (query, ms, server_us) in [
            ("big", &mut clear_ms, &mut clear_server),
            ("small", &mut small_ms, &mut small_server),
        ] {
            let _: () = redis::cmd("SLOWLOG")
                .arg("RESET")
                .query_async(&mut con)
                .await
                .unwrap();
            let t = Instant::now();
            let cleared = store.clear_query(query).await.unwrap();
            ms.push(t.elapsed().as_secs_f64() * 1e3);
            server_us.push(server_time_us(&mut con).await as f64);
            assert_eq!(cleared.row_count, 0);
        }
    }
    println!(
        "large query: {} rows loaded in {:.1}s; row_count median {:.0} µs (1-row query: {:.0} µs); \
         snapshot of {snapshot_rows} rows {:.2}s",
        big_rows / 1000 * 1000,
        load.as_secs_f64(),
        median(count_times),
        median(small_times),
        snapshot_time.as_secs_f64(),
    );
    println!(
        "clear (median of {CLEAR_ROUNDS}): {} rows {:.2} ms, {:.0} µs executing on the server; \
         1 row {:.2} ms, {:.0} µs on the server",
        big_rows / 1000 * 1000,
        median(clear_ms),
        median(clear_server),
        median(small_ms),
        median(small_server),
    );
}
