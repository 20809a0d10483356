//! `--outbox-retention` / `--outbox-retention-bytes`: how much change history the store keeps
//! per query, for the commands that commit (`serve`, `replay`, `consume`).
//!
//! The outbox is what the change feed (`/queries/{id}/changes`) and a State Protocol reader
//! resuming from an offset read from: an offset older than what it keeps answers 409
//! must-refetch (the query stream sends a fresh snapshot instead). Every command that commits
//! prunes the outbox to its own setting, so an offline `replay` into a store that a server
//! keeps a long history of must be given the same values, or it trims that history.

use liveresults::OutboxRetention;

use super::serve::in_range;

/// Most entries a query's outbox may be set to keep: beyond this a memory or Redis store
/// could hold gigabytes per query, which is what the byte limit is for.
const MAX_ENTRIES: usize = 10_000_000;
/// Bounds of the per-query byte limit: 1 KiB to 1 TiB.
const MIN_BYTES: usize = 1 << 10;
const MAX_BYTES: usize = 1 << 40;

/// How much change history each query keeps.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct RetentionArgs {
    /// Committed batches each query's outbox keeps for the change feed and resuming readers;
    /// an offset older than that answers 409 must-refetch (1 to 10,000,000). Give commands
    /// that commit to the same store (serve, replay, consume) the same value.
    #[arg(long, value_name = "N", default_value_t = OutboxRetention::default().max_entries,
          value_parser = in_range(1, MAX_ENTRIES))]
    pub outbox_retention: usize,
    /// Payload bytes each query's outbox keeps at most, whichever limit is reached first
    /// (1 KiB to 1 TiB; the newest batch is always kept).
    #[arg(long, value_name = "BYTES", default_value_t = default_bytes(),
          value_parser = in_range(MIN_BYTES, MAX_BYTES))]
    pub outbox_retention_bytes: usize,
}

fn default_bytes() -> usize {
    usize::try_from(OutboxRetention::default().max_bytes).unwrap_or(MAX_BYTES)
}

impl RetentionArgs {
    /// The store setting.
    pub fn retention(&self) -> OutboxRetention {
        OutboxRetention {
            max_entries: self.outbox_retention,
            max_bytes: u64::try_from(self.outbox_retention_bytes).unwrap_or(u64::MAX),
        }
    }
}
