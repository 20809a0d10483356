//! liveresults inside Drasi.
//!
//! Two ways in, for the two ways Drasi is embedded:
//!
//! - [`LiveResultsReaction`]: a drasi-lib `Reaction` that feeds every result of its queries into
//!   the liveresults runtime, so a liveresults store (memory or RocksDB) holds each query's
//!   current rows, an outbox and a change feed, recovered against Drasi's own snapshot after
//!   every restart (see the [`reaction`] module for the sequence rules).
//! - [`DrasiWriter`]: every liveresults store as drasi-core's own
//!   `drasi_core::interface::LiveResultsWriter`, for code that holds that trait object.

mod attachment;
pub mod convert;
mod error;
pub mod reaction;
mod rebuild;
pub mod reconcile;
mod repair;
mod writer;

pub use error::DrasiReactionError;
pub use reaction::{Decision, LiveResultsReaction, ReactionStats};
pub use writer::{to_index_error, DrasiWriter};
