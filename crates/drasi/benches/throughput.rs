//! Results per second through drasi-lib: with a no-op reaction (the engine alone) and with
//! `LiveResultsReaction` committing into RocksDB (default group commit, and with a 1 ms window)
//! and into memory, on the same seeded Order
//! workload; the ratio is what storing the results costs next to computing them.
//!
//! Run: `cargo test --release -p liveresults-drasi --bench throughput`
//! (`LIVERESULTS_DRASI_BENCH_OPS`, default 20,000 changes; `LIVERESULTS_DRASI_BENCH_ROUNDS`,
//! default 3, alternating, median reported).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::{drasi_rows, push, start_drasi, Op, Workload, QUERIES};
use drasi_lib::channels::{ComponentStatus, QueryResult};
use drasi_lib::context::ReactionRuntimeContext;
use drasi_lib::{DrasiLib, Reaction, ReactionBase, ReactionBaseParams};
use liveresults_core::testing::env_number;
use liveresults_core::{MemoryStore, ResultStore};
use liveresults_drasi::LiveResultsReaction;
use liveresults_rocksdb::{RocksStore, RocksStoreOptions};
use liveresults_runtime::{Runtime, RuntimeConfig};

/// Counts results and does nothing else.
#[derive(Clone)]
struct NoOp {
    base: Arc<ReactionBase>,
    results: Arc<AtomicU64>,
}

#[async_trait]
impl Reaction for NoOp {
    fn id(&self) -> &str {
        self.base.get_id()
    }
    fn type_name(&self) -> &str {
        "noop"
    }
    fn properties(&self) -> HashMap<String, serde_json::Value> {
        HashMap::new()
    }
    fn query_ids(&self) -> Vec<String> {
        self.base.get_queries().to_vec()
    }
    async fn initialize(&self, context: ReactionRuntimeContext) {
        self.base.initialize(context).await;
    }
    async fn start(&self) -> anyhow::Result<()> {
        self.base.set_status(ComponentStatus::Running, None).await;
        Ok(())
    }
    async fn stop(&self) -> anyhow::Result<()> {
        self.base.set_status(ComponentStatus::Stopped, None).await;
        Ok(())
    }
    async fn status(&self) -> ComponentStatus {
        self.base.get_status().await
    }
    async fn enqueue_query_result(&self, _result: QueryResult) -> anyhow::Result<()> {
        self.results.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Drasi's total results so far (its sequences count them: one per non-empty result).
async fn drasi_total(core: &DrasiLib) -> anyhow::Result<u64> {
    let mut total = 0;
    for query in QUERIES {
        total += drasi_rows(core, query).await?.0;
    }
    Ok(total)
}

/// Pushes `ops`, then waits until `delivered()` reaches Drasi's total and that total has not
/// moved for 50 ms. Returns (results, elapsed).
async fn drive<F, Fut>(
    core: &DrasiLib,
    source: &drasi_source_application::ApplicationSourceHandle,
    ops: &[Op],
    delivered: F,
) -> anyhow::Result<(u64, Duration)>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = u64>,
{
    let start = Instant::now();
    for op in ops {
        push(source, op).await?;
    }
    // (Drasi's total, when it last changed, when delivery first reached it)
    let mut last = (u64::MAX, Instant::now(), None::<Duration>);
    loop {
        let total = drasi_total(core).await?;
        if total != last.0 {
            last = (total, Instant::now(), None);
        }
        if delivered().await >= total {
            let done = *last.2.get_or_insert_with(|| start.elapsed());
            if last.1.elapsed() >= Duration::from_millis(50) {
                return Ok((total, done));
            }
        } else {
            last.2 = None;
        }
        if start.elapsed() > Duration::from_secs(600) {
            anyhow::bail!("no completion after 600 s");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn run_noop(ops: &[Op]) -> anyhow::Result<(u64, Duration)> {
    let results = Arc::new(AtomicU64::new(0));
    let base = ReactionBase::new(ReactionBaseParams::new(
        "noop",
        QUERIES.iter().map(|q| (*q).to_owned()).collect(),
    ));
    let reaction = NoOp {
        base: Arc::new(base),
        results: Arc::clone(&results),
    };
    let (core, source) = start_drasi(reaction).await?;
    let out = drive(&core, &source, ops, || {
        let n = results.load(Ordering::Relaxed);
        async move { n }
    })
    .await?;
    core.shutdown().await?;
    Ok(out)
}

async fn run_liveresults(
    store: Arc<dyn ResultStore>,
    config: RuntimeConfig,
    ops: &[Op],
) -> anyhow::Result<(u64, Duration)> {
    let runtime = Runtime::start(store, config, Vec::new()).await?;
    let handle = runtime.handle();
    let reaction = LiveResultsReaction::new("liveresults", QUERIES, runtime.handle());
    let (core, source) = start_drasi(reaction.clone()).await?;
    // Delivered = committed: the sum of the queries' committed sequences (ours equal Drasi's
    // in a run without restarts).
    let out = drive(&core, &source, ops, || {
        let committed: u64 = QUERIES
            .iter()
            .map(|q| handle.status(q).and_then(|s| s.sequence).unwrap_or(0))
            .sum();
        async move { committed }
    })
    .await?;
    core.shutdown().await?;
    runtime.shutdown().await?;
    Ok(out)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let n: usize = env_number("LIVERESULTS_DRASI_BENCH_OPS", 20_000);
    let rounds: usize = env_number("LIVERESULTS_DRASI_BENCH_ROUNDS", 3).max(1);
    let mut workload = Workload::new(0xBE4C_0001);
    let ops: Vec<Op> = (0..n).map(|_| workload.next_op()).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // no-op, RocksDB, RocksDB with a 1 ms group-commit window, memory
    let mut rates: [Vec<f64>; 4] = Default::default();
    let mut results = 0;
    let grouped = || RuntimeConfig::new().group_commit(256, Duration::from_millis(1));
    runtime.block_on(async {
        for round in 0..rounds {
            let mut line = format!("round {round}:");
            let (r, t) = run_noop(&ops).await?;
            results = r;
            rates[0].push(r as f64 / t.as_secs_f64());
            for (i, name) in [(1, "rocksdb"), (2, "rocksdb+1ms"), (3, "memory")] {
                let dir = tempfile::tempdir()?;
                let (store, config): (Arc<dyn ResultStore>, RuntimeConfig) = match i {
                    1 => (
                        Arc::new(RocksStore::open(dir.path(), RocksStoreOptions::new()).await?),
                        RuntimeConfig::new(),
                    ),
                    2 => (
                        Arc::new(RocksStore::open(dir.path(), RocksStoreOptions::new()).await?),
                        grouped(),
                    ),
                    _ => (Arc::new(MemoryStore::new()), RuntimeConfig::new()),
                };
                let (ri, ti) = run_liveresults(store, config, &ops).await?;
                anyhow::ensure!(ri == r, "result counts differ: no-op {r}, {name} {ri}");
                rates[i].push(ri as f64 / ti.as_secs_f64());
                line.push_str(&format!(" {name} {:.0}/s", rates[i][round]));
            }
            eprintln!("{line} (no-op {:.0}/s)", rates[0][round]);
        }
        anyhow::Ok(())
    })?;
    let [noop, rocks, grouped_rocks, memory] = rates.map(median);
    println!("{n} changes -> {results} results per run, median of {rounds} rounds:");
    println!(
        "  drasi-lib + {:<48} {noop:>9.0} results/s",
        "no-op reaction"
    );
    for (name, rate) in [
        ("LiveResultsReaction, RocksDB", rocks),
        (
            "LiveResultsReaction, RocksDB, group commit 1 ms",
            grouped_rocks,
        ),
        ("LiveResultsReaction, memory", memory),
    ] {
        println!(
            "  drasi-lib + {name:<48} {rate:>9.0} results/s  ({:.2}x)",
            rate / noop
        );
    }
    Ok(())
}
