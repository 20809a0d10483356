//! `liveresults consume`: Drasi result events from Redis Streams through a consumer group into
//! the store, until Ctrl-C / SIGTERM.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use liveresults::runtime::Runtime;
use liveresults::{MemoryStore, RocksStore, RocksStoreOptions};
use liveresults_redis_streams::{
    StreamSource, StreamSourceConfig, StreamSpec, DEFAULT_MAX_DELIVERIES, DEFAULT_MAX_ENTRY_BYTES,
    MAX_BATCH,
};
use tokio::io::AsyncWriteExt;

use super::config::{runtime_config, PipelineArgs};
use super::retention::RetentionArgs;
use super::serve::{in_range, shutdown_signal};
use super::store::Opened;
use super::CliResult;

/// Arguments of `consume`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The RocksDB data directory (created if missing). Every commit is fsynced before its
    /// entries are acknowledged, so an acknowledged event survives a power loss.
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present = "memory",
        conflicts_with = "memory"
    )]
    data: Option<PathBuf>,
    /// Keep everything in memory: for throwaway runs. The group still acknowledges what it
    /// consumed, so those events are not read again by it after the exit.
    #[arg(long)]
    memory: bool,
    /// The Redis server holding the streams.
    #[arg(long, value_name = "URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// A stream to consume: `NAME` (events of any query) or `NAME=QUERY` (only QUERY's
    /// events; others are dead-lettered). Repeatable.
    #[arg(long = "stream", value_name = "NAME[=QUERY]")]
    streams: Vec<StreamSpec>,
    /// A Drasi query whose results stream, `QUERY-results`, to consume (the same as
    /// `--stream QUERY-results=QUERY`). Repeatable.
    #[arg(long = "query", value_name = "QUERY")]
    queries: Vec<String>,
    /// The consumer group (created on each stream if missing, reading from its start).
    #[arg(long, default_value = "liveresults")]
    group: String,
    /// This consumer's name in the group. Keep it stable across restarts: what it read but
    /// did not acknowledge is read again by the next run with the same name. Give stand-bys
    /// (other processes consuming the same streams and group) other names.
    #[arg(long, default_value = "liveresults")]
    consumer: String,
    /// Time-to-live of the lock that lets one consumer of the group read these streams, in
    /// milliseconds (30 to 3,600,000); renewed every third of it. Another process consuming
    /// the same streams and group waits as a stand-by and takes over when this one stops
    /// (at once) or dies (when the lock expires, as does a restart after a crash).
    #[arg(long, value_name = "MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(30..=3_600_000))]
    lock_ttl_ms: u64,
    /// Deliveries after which an entry the runtime refuses for good (its query stopped by a
    /// sequence gap, or deleted upstream) is moved to the dead-letter stream (1 to 1,000).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_DELIVERIES,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    max_deliveries: u32,
    /// How long a stream pauses after the runtime refused one of its entries before trying
    /// again, in milliseconds (1 to 3,600,000); doubles while refusals go on, up to a minute
    /// (or this, if longer). The other streams go on meanwhile.
    #[arg(long, value_name = "MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    refusal_pause_ms: u64,
    /// Most entries in flight (read, not yet acknowledged) over all streams (from the number
    /// of streams to 100,000).
    #[arg(long, default_value_t = 256, value_parser = in_range(1, MAX_BATCH))]
    batch: usize,
    /// How long one read waits for new entries, in milliseconds (1 to 3,600,000).
    #[arg(long, value_name = "MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    block_ms: u64,
    /// How long, in milliseconds, an entry must have been pending with another consumer
    /// before this one takes it over (that consumer is then taken for dead); also how often
    /// such entries are looked for (1 to 86,400,000).
    #[arg(long, value_name = "MS", default_value_t = 60_000,
          value_parser = clap::value_parser!(u64).range(1..=86_400_000))]
    claim_idle_ms: u64,
    /// Largest entry accepted, in bytes; larger ones are dead-lettered (1 B to 1 GiB).
    #[arg(long, default_value_t = DEFAULT_MAX_ENTRY_BYTES, value_parser = in_range(1, 1 << 30))]
    max_entry_bytes: usize,
    #[command(flatten)]
    retention: RetentionArgs,
    #[command(flatten)]
    pipeline: PipelineArgs,
}

/// Consumes until Ctrl-C / SIGTERM (then what is in flight is committed and acknowledged)
/// or until Redis refuses a command for good. A refused event pauses its stream only.
pub async fn run(args: Args) -> CliResult {
    let config = runtime_config(&args.pipeline)?;
    let mut streams = args.streams;
    streams.extend(args.queries.iter().map(|q| StreamSpec::drasi_query(q)));
    if streams.is_empty() {
        return Err("nothing to consume: give --stream NAME[=QUERY] or --query QUERY".into());
    }
    let mut source_config = StreamSourceConfig::new(streams, args.group, args.consumer);
    source_config.batch = args.batch;
    source_config.block = Duration::from_millis(args.block_ms);
    source_config.claim_idle = Duration::from_millis(args.claim_idle_ms);
    source_config.max_entry_bytes = args.max_entry_bytes;
    source_config.lock_ttl = Duration::from_millis(args.lock_ttl_ms);
    source_config.max_deliveries = args.max_deliveries;
    source_config.refusal_pause = Duration::from_millis(args.refusal_pause_ms);
    let source = StreamSource::new(&args.redis_url, source_config).map_err(|e| e.to_string())?;
    let store = match &args.data {
        Some(dir) if !args.memory => {
            let options = (RocksStoreOptions::new().sync_commits(true))
                .outbox_retention(args.retention.retention());
            RocksStore::open(dir, options)
                .await
                .map(Opened::Rocks)
                .map_err(|e| format!("opening {}: {e}", dir.display()))?
        }
        _ => Opened::Memory(Arc::new(MemoryStore::with_retention(
            args.retention.retention(),
        ))),
    };
    let runtime = Runtime::start(store.shared(), config, Vec::new())
        .await
        .map_err(|e| format!("starting the runtime: {e}"))?;
    let handle = runtime.handle();
    // On stdout, flushed: a parent process knows the store is open and consuming began.
    let names: Vec<&str> = (source.config().streams.iter())
        .map(|s| s.stream.as_str())
        .collect();
    let line = format!(
        "consuming {} as {}/{}\n",
        names.join(", "),
        source.config().group,
        source.config().consumer
    );
    let mut stdout = tokio::io::stdout();
    stdout
        .write_all(line.as_bytes())
        .await
        .and(stdout.flush().await)
        .map_err(|e| format!("writing to stdout: {e}"))?;
    let result = source.run(&handle, shutdown_signal()).await;
    // Whatever happened, what was committed is made durable and the store closed cleanly.
    let stopped = runtime.shutdown().await;
    let closed = store.close().await;
    let report = result.map_err(|e| format!("consuming stopped: {e}"))?;
    stopped.map_err(|e| format!("stopping the runtime: {e}"))?;
    closed?;
    println!(
        "consumed {} entries: {} committed, {} already committed, {} dead-lettered, {} claimed \
         from stopped consumers, {} refusals",
        report.read,
        report.committed,
        report.already_committed,
        report.dead_lettered,
        report.claimed,
        report.refused
    );
    Ok(())
}
