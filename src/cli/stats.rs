//! `liveresults stats [QUERY] [--json]`: sequence, row count and epoch from the store.
//!
//! The table's id column is at most [`ID_COLUMN_CHARS`] wide: longer ids are cut with an
//! ellipsis, so one huge id cannot pad every row of the table to its length (a 60,000-character
//! id among 15,000 queries once made 903 MB of output). `--json` prints every id in full.

use std::io::{BufWriter, Write};

use liveresults::{QueryInfo, ResultStore};

use super::store::{with_store, DataArgs};
use super::CliResult;

/// Arguments of `stats`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// One query (default: every query the store knows).
    query: Option<String>,
    /// Print a JSON array (full ids) instead of the table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    data: DataArgs,
}

fn sequence(info: &QueryInfo) -> String {
    info.sequence
        .map_or_else(|| "-".to_owned(), |s| s.to_string())
}

/// Widest id column of the table, in characters; longer ids end in an ellipsis.
pub const ID_COLUMN_CHARS: usize = 40;

/// `id` cut to `max` characters, the last of them an ellipsis, when it is longer.
fn fit(id: &str, max: usize) -> String {
    if id.chars().count() <= max {
        return id.to_owned();
    }
    let mut out: String = id.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Prints a table (query, sequence, rows, epoch) or, with `--json`, a JSON array.
pub async fn run(args: Args) -> CliResult {
    let query = args.query;
    let infos = with_store(&args.data, |store| async move {
        collect(&*store, query.as_deref()).await
    })
    .await?;
    let out = std::io::stdout();
    let mut out = BufWriter::new(out.lock());
    let written = if args.json {
        write_json(&mut out, &infos)
    } else {
        write_table(&mut out, &infos)
    };
    written
        .and_then(|()| out.flush())
        .map_err(|e| format!("writing the stats: {e}"))
}

fn write_json(out: &mut impl Write, infos: &[QueryInfo]) -> std::io::Result<()> {
    let rows: Vec<serde_json::Value> = infos
        .iter()
        .map(|i| {
            serde_json::json!({
                "query_id": i.query_id,
                "sequence": i.sequence,
                "rows": i.row_count,
                "epoch": i.epoch,
            })
        })
        .collect();
    serde_json::to_writer(&mut *out, &rows)?;
    writeln!(out)
}

fn write_table(out: &mut impl Write, infos: &[QueryInfo]) -> std::io::Result<()> {
    let width = infos
        .iter()
        .map(|i| i.query_id.chars().count())
        .max()
        .unwrap_or(0)
        .clamp(5, ID_COLUMN_CHARS);
    writeln!(
        out,
        "{:width$}  {:>20}  {:>12}  {:>5}",
        "QUERY", "SEQUENCE", "ROWS", "EPOCH"
    )?;
    for info in infos {
        writeln!(
            out,
            "{:width$}  {:>20}  {:>12}  {:>5}",
            fit(&info.query_id, width),
            sequence(info),
            info.row_count,
            info.epoch
        )?;
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
