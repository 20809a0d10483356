//! liveresults embedded in Drasi: a drasi-lib with an application source and two continuous
//! queries, `LiveResultsReaction` keeping their results in a RocksDB store, and the liveresults
//! HTTP server on that same store, while the program pushes Order changes.
//!
//! Run: `cargo run --release --features drasi --example drasi_embedded -- [STORE_DIR] [ADDR] [CHANGES]`
//! (defaults: `drasi-embedded-store`, `127.0.0.1:8080`, push until Ctrl-C), then:
//!
//! ```text
//! curl -s localhost:8080/queries/big/snapshot
//! curl -s 'localhost:8080/queries/spent/changes?offset=-1&live=long-poll'
//! ```
//!
//! Logs go to stderr: a subscriber is installed before `DrasiLib::build()`, which would
//! otherwise install its own, writing to stdout.

use std::collections::HashMap;
use std::error::Error;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use drasi_lib::{DrasiLib, Query};
use drasi_source_application::{
    ApplicationSource, ApplicationSourceConfig, ApplicationSourceHandle, PropertyMapBuilder,
};
use liveresults::runtime::{Runtime, RuntimeConfig};
use liveresults::server::{serve, AppState};
use liveresults::{ResultStore, RocksStore, RocksStoreOptions};
use liveresults_drasi::LiveResultsReaction;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

const BIG: &str = "MATCH (o:Order) WHERE o.total > 100 RETURN o.id AS id, o.total AS total";
const SPENT: &str = "MATCH (o:Order) RETURN o.customer AS customer, sum(o.total) AS spent";

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .unwrap_or_else(|| "drasi-embedded-store".to_owned());
    let addr: SocketAddr = args.next().as_deref().unwrap_or("127.0.0.1:8080").parse()?;
    let changes: Option<u64> = args.next().map(|n| n.parse()).transpose()?;

    // 1. The liveresults store and runtime.
    let store = Arc::new(RocksStore::open(&dir, RocksStoreOptions::new()).await?);
    // drasi-lib hands over one result at a time; a 1 ms window lets group commit fold them
    // (the throughput bench in crates/drasi measures the difference).
    let config = RuntimeConfig::new().group_commit(256, Duration::from_millis(1));
    let runtime = Runtime::start(
        Arc::clone(&store) as Arc<dyn ResultStore>,
        config,
        Vec::new(),
    )
    .await?;

    // 2. drasi-lib: the source the program pushes into, the queries, and the reaction.
    let source_config = ApplicationSourceConfig {
        properties: HashMap::new(),
        durability: None,
    };
    let (source, orders) = ApplicationSource::new("orders", source_config)?;
    let reaction = LiveResultsReaction::new("liveresults", ["big", "spent"], runtime.handle());
    let drasi = DrasiLib::builder()
        .with_id("shop")
        .with_source(source)
        .with_query(
            Query::cypher("big")
                .query(BIG)
                .from_source("orders")
                .build(),
        )
        .with_query(
            Query::cypher("spent")
                .query(SPENT)
                .from_source("orders")
                .build(),
        )
        .with_reaction(reaction.clone())
        .build()
        .await?;
    drasi.start().await?;

    // 3. The HTTP server on the same store, until Ctrl-C. Its writes are the reaction's
    //    business too: after `DELETE /queries/big` (a clear) or an ingest into a query the
    //    reaction feeds, the reaction re-attaches the query to Drasi's snapshot by itself.
    let listener = TcpListener::bind(addr).await?;
    eprintln!("serving http://{addr}  (try: curl -s {addr}/queries/big/snapshot)");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        listener,
        AppState::new(runtime.handle()),
        async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = stop_rx => {}
            }
        },
    ));

    // 4. The program's own work: Order changes, one every 100 ms.
    let mut pushed = 0u64;
    while changes.is_none_or(|n| pushed < n) && !server.is_finished() {
        push_change(&orders, pushed).await?;
        pushed += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    reaction.settle().await;
    eprintln!("pushed {pushed} changes; {:?}", reaction.stats());
    let _ = stop_tx.send(());
    server.await??;
    drasi.shutdown().await?;
    runtime.shutdown().await?;
    // Syncs the WAL and writes the memtables out (the handle is shared, closing a clone is enough).
    RocksStore::clone(&store).close().await?;
    Ok(())
}

/// Change `n` of a small shop: orders o0..o19 are created, then re-priced, now and then deleted.
async fn push_change(orders: &ApplicationSourceHandle, n: u64) -> Result<(), Box<dyn Error>> {
    let id = format!("o{}", n % 20);
    let customer = ["ada", "bob", "cy"][(n % 3) as usize];
    let total = ((n * 37) % 250) as f64;
    let props = PropertyMapBuilder::new()
        .with_string("id", &id)
        .with_string("customer", customer)
        .with_float("total", total)
        .build();
    match (n / 20, n % 7) {
        (0, _) => {
            orders
                .send_node_insert(id.as_str(), vec!["Order"], props)
                .await?;
        }
        (_, 0) => {
            orders.send_delete(id.as_str(), vec!["Order"]).await?;
            orders
                .send_node_insert(id.as_str(), vec!["Order"], props)
                .await?;
        }
        _ => {
            orders
                .send_node_update(id.as_str(), vec!["Order"], props)
                .await?;
        }
    }
    Ok(())
}
