//! liveresults in five steps: stream Drasi result diffs into an embedded RocksDB store through
//! the reaction runtime, restart, rebuild a reaction from a snapshot (no history replayed), and
//! watch AutoReset recover from an upstream sequence gap.
//!
//! Run: `scripts/quickstart.sh` (or `cargo run --release --example quickstart`).

use std::sync::Arc;

use liveresults::core::formats::parse_event;
use liveresults::core::signature::KeyColumns;
use liveresults::runtime::reactions::{MaterializedView, NdjsonLog};
use liveresults::runtime::{
    run_ndjson, QueryConfig, RecoveryPolicy, Runtime, RuntimeConfig, DEFAULT_MAX_LINE_BYTES,
};
use liveresults::{ResultStore, RocksStore, RocksStoreOptions};
use serde_json::json;

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
    let before = view.all_rows();
    stop(host).await?;

    println!("\n2. Restart: a fresh dashboard is rebuilt from a point-in-time snapshot");
    let host = start(dir.path()).await?;
    let (store, runtime, view) = (&host.store, &host.runtime, &host.view);
    let after = view.all_rows();
    for (query, rows) in &after {
        println!(
            "    {:<22} {} rows rebuilt at sequence {:?}",
            query,
            rows.len(),
            view.query(query).sequence
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
        "   {ROOMS}: epoch {}, sequence {:?}, row count {} (only what arrived after the reset)",
        status.epoch, status.sequence, status.row_count
    );
    println!(
        "   dashboard rows for {ROOMS} after the reset: {}",
        view.query(ROOMS).rows.len()
    );
    print_queries(&**store).await?;
    stop(host).await?;

    let audit = std::fs::read_to_string(dir.path().join("audit.ndjson"))?;
    println!("\n5. The audit-log reaction wrote {} lines (one per commit: group commit folds queued events), none twice across the restart", audit.lines().count());
    Ok(())
}
