//! `liveresults stats [QUERY]`: sequence, row count and epoch from the store.

use liveresults::{QueryInfo, ResultStore};

use super::store::{with_rocks, DataArgs};
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
    let query = args.query;
    let infos = with_rocks(&args.data.data, |store| async move {
        collect(&*store, query.as_deref()).await
    })
    .await?;
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
        None => store
            .list_queries()
            .await
            .map_err(|e| format!("listing queries: {e}")),
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
