//! liveresults in five steps: stream Drasi result diffs into an embedded RocksDB store through
//! the reaction runtime, restart, rebuild a reaction from a snapshot (no history replayed), and
//! watch AutoReset recover from an upstream sequence gap.
//!
//! Reactions get each commit after it is durable, asynchronously: before reading what a
//! reaction shows, the example waits with `RuntimeHandle::reactions_caught_up`, so every number
//! it prints is true when printed, on every run.
//!
//! Run: `scripts/quickstart.sh` (or `cargo run --release --example quickstart`).

use std::collections::BTreeSet;
use std::sync::Arc;

use liveresults::core::formats::parse_event;
use liveresults::core::signature::KeyColumns;
use liveresults::runtime::reactions::{MaterializedView, NdjsonLog};
use liveresults::runtime::{
    run_ndjson, QueryConfig, RecoveryPolicy, Runtime, RuntimeConfig, DEFAULT_MAX_LINE_BYTES,
};
use liveresults::{ResultStore, RocksStore, RocksStoreOptions};
use serde_json::{json, Value};

const ROOMS: &str = "hot-rooms";
const ORDERS: &str = "orders-per-customer";

/// A realistic upstream: a Drasi platform query of rooms above 25 °C (keyed by room), and a
/// drasi-lib aggregation of open orders per customer (with upstream row signatures).
fn upstream_events() -> String {
    let mut lines = Vec::new();
    for (seq, room, temp) in [
        (1, "101", 26.5),
        (2, "102", 27.0),
        (3, "201", 25.5),
        (4, "202", 29.1),
    ] {
        lines.push(json!({"kind": "change", "queryId": ROOMS, "sequence": seq, "sourceTimeMs": 1_700_000_000_000u64 + seq,
            "addedResults": [{"room": room, "temp": temp}], "updatedResults": [], "deletedResults": []}));
    }
    lines.push(json!({"kind": "change", "queryId": ROOMS, "sequence": 5, "sourceTimeMs": 1_700_000_000_005u64,
        "addedResults": [], "deletedResults": [{"room": "102", "temp": 24.0}],
        "updatedResults": [{"before": {"room": "101", "temp": 26.5}, "after": {"room": "101", "temp": 28.0}}]}));
    let customers = ["ada", "bob", "cy", "dee"];
    for seq in 1..=40u64 {
        let who = customers[(seq % 4) as usize];
        let n = seq / 4 + 1;
        lines.push(json!({"query_id": ORDERS, "sequence": seq, "timestamp": 1_700_000_000_000u64 + seq,
            "results": [{"type": "aggregation", "before": if n > 1 { json!({"customer": who, "open_orders": n - 1}) } else { json!(null) },
                         "after": {"customer": who, "open_orders": n}, "grouping_keys": ["customer"]}]}));
    }
    lines.iter().map(|l| format!("{l}\n")).collect()
}

fn config() -> RuntimeConfig {
    let rooms = QueryConfig {
        key_columns: KeyColumns::Columns(vec!["room".into()]),
        policy: RecoveryPolicy::AutoReset,
    };
    RuntimeConfig::new().query(ROOMS, rooms)
}

async fn print_queries(store: &dyn ResultStore) -> Result<(), Error> {
    for q in store.list_queries().await? {
        println!(
            "    {:<22} sequence {:>3}   {} rows",
            q.query_id,
            q.sequence.map_or("-".into(), |s| s.to_string()),
            q.row_count
        );
    }
    Ok(())
}

type Error = Box<dyn std::error::Error>;

/// Waits until every reaction has handled everything committed so far on both queries: what
/// the dashboard shows afterwards includes every acknowledged commit.
async fn reactions_caught_up(runtime: &Runtime) -> Result<(), Error> {
    for query in [ROOMS, ORDERS] {
        runtime.handle().reactions_caught_up(query).await?;
    }
    Ok(())
}

/// A running host: the store, the runtime and its two reactions.
struct Host {
    store: Arc<RocksStore>,
    runtime: Runtime,
    view: Arc<MaterializedView>,
}

/// Opens the store and starts the runtime with a fresh dashboard view and the audit log.
async fn start(dir: &std::path::Path) -> Result<Host, Error> {
    let store = Arc::new(RocksStore::open(dir.join("store"), RocksStoreOptions::new()).await?);
    let view = Arc::new(MaterializedView::new("dashboard"));
    let log = Arc::new(NdjsonLog::open("audit-log", dir.join("audit.ndjson")).await?);
    let runtime = Runtime::start(store.clone(), config(), vec![view.clone(), log]).await?;
    Ok(Host {
        store,
        runtime,
        view,
    })
}

/// Drains the runtime, then closes the store cleanly.
async fn stop(host: Host) -> Result<(), Error> {
    host.runtime.shutdown().await?;
    Arc::try_unwrap(host.store)
        .map_err(|_| "store still shared")?
        .close()
        .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    println!(
        "1. Streaming Drasi result diffs into {}",
        dir.path().join("store").display()
    );
    let host = start(dir.path()).await?;
    let (store, runtime, view) = (&host.store, &host.runtime, &host.view);
    let input = upstream_events();
    let report = run_ndjson(
        input.as_bytes(),
        &runtime.handle(),
        DEFAULT_MAX_LINE_BYTES,
        |_| {},
    )
    .await?;
    println!(
        "   {} events committed; the store now holds:",
        report.submitted
    );
    print_queries(&**store).await?;
    reactions_caught_up(runtime).await?;
    let before = view.all_rows();
    println!(
        "   the dashboard has caught up: {} hot rooms, {} customers with open orders",
        view.query(ROOMS).rows.len(),
        view.query(ORDERS).rows.len()
    );
    stop(host).await?;

    println!("\n2. Restart: a fresh dashboard is rebuilt from a point-in-time snapshot");
    let host = start(dir.path()).await?;
    let (store, runtime, view) = (&host.store, &host.runtime, &host.view);
    // Recovery finishes before `start` returns: no waiting needed here.
    let after = view.all_rows();
    for (query, rows) in &after {
        println!(
            "    {:<22} {} rows rebuilt at sequence {}",
            query,
            rows.len(),
            view.query(query)
                .sequence
                .map_or("-".into(), |s| s.to_string())
        );
    }
    println!(
        "   rebuilt dashboard equals the one before the restart: {}",
        before == after
    );
    for (_, row) in view.query(ROOMS).rows {
        println!("    hot room: {row}");
    }

    println!("\n3. Replaying the same input is idempotent (everything is already committed)");
    let again = run_ndjson(
        input.as_bytes(),
        &runtime.handle(),
        DEFAULT_MAX_LINE_BYTES,
        |_| {},
    )
    .await?;
    println!(
        "   {} events skipped as already committed, {} submitted",
        again.resumed_past, again.submitted
    );

    println!("\n4. Upstream skips sequences 6..9 for {ROOMS} (policy AutoReset)");
    let mut requests = runtime.handle().bootstrap_requests();
    let gap = json!({"kind": "change", "queryId": ROOMS, "sequence": 10, "sourceTimeMs": 1_700_000_000_010u64,
        "addedResults": [{"room": "301", "temp": 30.2}], "updatedResults": [], "deletedResults": []});
    runtime
        .handle()
        .submit_and_wait(parse_event(&gap.to_string())?)
        .await?;
    println!(
        "   cleared and re-bootstrap requested for {:?}",
        requests.recv().await?
    );
    let status = runtime.handle().status(ROOMS).ok_or("no status")?;
    println!(
        "   {ROOMS}: epoch {}, sequence {}, row count {} (only what arrived after the reset)",
        status.epoch,
        status.sequence.map_or("-".into(), |s| s.to_string()),
        status.row_count
    );
    // The reset and the new commit reach the reactions after the commit is acknowledged.
    let position = runtime.handle().reactions_caught_up(ROOMS).await?;
    println!(
        "   reactions caught up with epoch {}, sequence {}:",
        position.epoch,
        position.sequence.map_or("-".into(), |s| s.to_string())
    );
    let status = runtime.handle().status(ROOMS).ok_or("no status")?;
    for reaction in &status.reactions {
        println!(
            "    {:<22} epoch {}, sequence {}, lag {}",
            reaction.reaction,
            reaction.epoch,
            reaction.sequence.map_or("-".into(), |s| s.to_string()),
            reaction.lag
        );
    }
    println!(
        "   dashboard rows for {ROOMS} after the reset: {}",
        view.query(ROOMS).rows.len()
    );
    print_queries(&**store).await?;
    stop(host).await?;

    let audit = std::fs::read_to_string(dir.path().join("audit.ndjson"))?;
    let (logged, twice, resets) = audit_summary(&audit)?;
    println!(
        "\n5. The audit-log reaction logged {logged} committed sequences (group commit folds queued events into one line per commit) and {resets} reset; {twice} logged twice across the restart"
    );
    Ok(())
}

/// Reads the audit log back: committed sequences logged, how many of them more than once
/// (per query and epoch), and resets logged.
fn audit_summary(audit: &str) -> Result<(usize, usize, usize), Error> {
    let mut seen = BTreeSet::new();
    let (mut logged, mut twice, mut resets) = (0, 0, 0);
    for line in audit.lines() {
        let line: Value = serde_json::from_str(line)?;
        match line["type"].as_str() {
            Some("reset") => resets += 1,
            Some("change") => {
                let (first, last) = (line["first_sequence"].as_u64(), line["sequence"].as_u64());
                let (Some(first), Some(last)) = (first, last) else {
                    return Err(format!("change line without its sequences: {line}").into());
                };
                for sequence in first..=last {
                    let key = (
                        line["query_id"].to_string(),
                        line["epoch"].as_u64(),
                        sequence,
                    );
                    logged += 1;
                    if !seen.insert(key) {
                        twice += 1;
                    }
                }
            }
            _ => {}
        }
    }
    Ok((logged, twice, resets))
}
