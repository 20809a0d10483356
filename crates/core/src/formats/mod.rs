//! The two Drasi result formats, parsed into one model.
//!
//! Upstream continuous queries speak one of two dialects (both are specified in
//! `docs/FORMAT.md`, section "Input formats and the diff mapping"):
//!
//! - **drasi-lib** `QueryResult` ([`drasi_lib`]): `{"query_id", "sequence", "timestamp",
//!   "results": [ResultDiff], "metadata"}`, each diff tagged by `"type"` and carrying a
//!   `row_signature`;
//! - **Drasi platform** events ([`platform`]): `{"kind": "change" | "control", "queryId",
//!   "sequence", "sourceTimeMs", ...}`, rows without signatures.
//!
//! [`parse_event`] tells them apart and returns an [`Event`]; [`Diff::mutations`] turns a diff
//! into the row operations a store applies. Fields this crate does not know are ignored, so
//! newer upstream versions that add fields still parse.
//!
//! Where things live:
//!
//! - `event.rs`: the event model both formats parse into ([`Event`], [`ResultBatch`],
//!   [`Diff`], [`ControlSignal`]);
//! - `diff_mapping.rs`: the diff-to-mutation mapping ([`Diff::mutations`], [`RowOp`]);
//! - `fast.rs`: the fast path, serde straight into the model for well-formed events;
//! - `json_walk.rs`, [`drasi_lib`], [`platform`]: the slow path, which walks a parsed
//!   `serde_json::Value` by hand so that every error names the JSON path of the offending
//!   field (`results[3].type`, `updatedResults[0].after`);
//! - `strict.rs`: the check both paths run first (integers beyond 64 bits, duplicate keys);
//! - `error.rs`: [`FormatError`] and [`LineError`].

mod diff_mapping;
pub mod drasi_lib;
mod error;
mod event;
mod fast;
mod json_walk;
pub mod platform;
mod strict;

use serde_json::Value as Json;

pub use diff_mapping::RowOp;
pub use error::{FormatError, LineError};
pub use event::{ControlSignal, Diff, Event, ResultBatch};

use error::invalid_json;
use json_walk::json_kind;

/// Parses one event, in either format, from JSON text.
///
/// Detection: an object with `"kind"` is a Drasi platform event; an object with `"query_id"`
/// and `"results"` is a drasi-lib query result; anything else is
/// [`FormatError::UnknownFormat`]. Integers beyond the 64-bit range and duplicate keys are
/// refused first, for both parsing paths ([`FormatError::NumberOutOfRange`],
/// [`FormatError::DuplicateKey`]). Never panics, whatever `text` holds.
pub fn parse_event(text: &str) -> Result<Event, FormatError> {
    strict::check(text)?;
    if let Some(event) = fast::try_parse(text) {
        return Ok(event);
    }
    let json: Json = serde_json::from_str(text).map_err(|err| invalid_json(&err))?;
    parse_event_value(json)
}

/// Like [`parse_event`], for JSON that is already parsed (an HTTP body, a stream entry).
/// Parsed JSON has already lost duplicate keys and exact big integers: prefer
/// [`parse_event`] on the text where there is one.
pub fn parse_event_value(json: Json) -> Result<Event, FormatError> {
    let object = match json {
        Json::Object(object) => object,
        other => {
            return Err(FormatError::UnknownFormat {
                found: format!("a json {}", json_kind(&other)),
            })
        }
    };
    if object.contains_key("kind") {
        platform::parse_platform_event(object)
    } else if object.contains_key("query_id") && object.contains_key("results") {
        drasi_lib::parse_query_result(object).map(Event::Change)
    } else {
        Err(FormatError::UnknownFormat {
            found: "an object without \"kind\", \"query_id\" or \"results\"".to_owned(),
        })
    }
}

/// [`parse_event`] for line `line_no` of NDJSON input; the error carries the line number.
pub fn parse_ndjson_line(line_no: usize, line: &str) -> Result<Event, LineError> {
    parse_event(line).map_err(|source| LineError {
        line: line_no,
        source,
    })
}
