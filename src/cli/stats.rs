//! `liveresults stats [QUERY]`: sequence, row count and epoch from the store.

use liveresults::{QueryInfo, ResultStore};

use super::store::{DataArgs, Opened};
use super::CliResult;

/// Arguments of `stats`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// One query (default: every query the store knows).
    query: Option<String>,
    #[command(flatten)]
    data: DataArgs,
}

fn sequence(info: &QueryInfo) -> String {
    info.sequence
        .map_or_else(|| "-".to_owned(), |s| s.to_string())
}

/// Prints a table: query, sequence, rows, epoch.
pub async fn run(args: Args) -> CliResult {
    let store = Opened::rocks(&args.data.data).await?;
    let shared = store.shared();
    let result = collect(&*shared, args.query.as_deref()).await;
    drop(shared);
    store.close().await?;
    let infos = result?;
    let width = infos
        .iter()
        .map(|i| i.query_id.len())
        .max()
        .unwrap_or(0)
        .max(5);
    println!(
        "{:width$}  {:>20}  {:>12}  {:>5}",
        "QUERY", "SEQUENCE", "ROWS", "EPOCH"
    );
    for info in &infos {
        println!(
            "{:width$}  {:>20}  {:>12}  {:>5}",
            info.query_id,
            sequence(info),
            info.row_count,
            info.epoch
        );
    }
    Ok(())
}

async fn collect(store: &dyn ResultStore, query: Option<&str>) -> CliResult<Vec<QueryInfo>> {
    match query {
        Some(id) => Ok(vec![known(store, id).await?]),
        None => {
            let mut all = store
                .list_queries()
                .await
                .map_err(|e| format!("listing queries: {e}"))?;
            // The RocksDB store lists in key order (length-prefixed ids): sort by id here.
            all.sort_by(|a, b| a.query_id.cmp(&b.query_id));
            Ok(all)
        }
    }
}

/// The query's state, or an error when the store has never seen it.
pub async fn known(store: &dyn ResultStore, query: &str) -> CliResult<QueryInfo> {
    let info = store
        .query_info(query)
        .await
        .map_err(|e| format!("reading query {query:?}: {e}"))?;
    if info.sequence.is_none() && info.epoch == 0 && info.row_count == 0 {
        return Err(format!("query {query:?} not found"));
    }
    Ok(info)
}
