//! drasi-lib's `QueryResult`: what an embedded drasi-lib query hands its reactions.
//!
//! ```text
//! { "query_id": "q1", "sequence": 7, "timestamp": "2025-01-01T00:00:00Z" | 1735689600000,
//!   "results": [
//!     { "type": "ADD",         "data": {row},                                 "row_signature": 42 },
//!     { "type": "DELETE",      "data": {row},                                 "row_signature": 42 },
//!     { "type": "UPDATE",      "data": {row}, "before": {row}, "after": {row},
//!                              "grouping_keys": ["k"] (optional),             "row_signature": 42 },
//!     { "type": "aggregation", "before": {row} | null (optional), "after": {row},
//!                                                                             "row_signature": 42 },
//!     { "type": "noop" } ],
//!   "metadata": { ... } }
//! ```
//!
//! Leniency, each for a reason:
//! - `row_signature` may be absent; the signature is then computed ([`super::Diff::mutations`]),
//!   which lets hand-written or foreign producers use this format.
//! - `timestamp` may be absent, `null`, a number of milliseconds, or a string. drasi-lib
//!   serialises a date as an RFC 3339 string; parsing dates is not this crate's job, so a
//!   string yields `timestamp_ms: None` instead of an error.
//! - `UPDATE`'s `data` duplicates `after` and is not read.

use serde_json::{Map as JsonMap, Value as Json};

use super::event::{Diff, ResultBatch};
use super::json_walk::{
    as_u64, into_array, into_columns, into_object, into_row, into_string, into_timestamp_ms,
    quoted, take, take_required, wrong_type, Path,
};
use super::FormatError;

/// The accepted values of a result diff's `"type"`.
const DIFF_TYPES: &str = "\"ADD\", \"DELETE\", \"UPDATE\", \"aggregation\", \"noop\"";

/// Parses a drasi-lib `QueryResult` object (see the module docs).
pub fn parse_query_result(mut object: JsonMap<String, Json>) -> Result<ResultBatch, FormatError> {
    let root = Path::Root;
    let query_id = into_string(
        take_required(&mut object, &root, "query_id")?,
        &root.field("query_id"),
    )?;
    let sequence = as_u64(
        &take_required(&mut object, &root, "sequence")?,
        &root.field("sequence"),
    )?;
    let timestamp_ms = match take(&mut object, "timestamp") {
        Some(json) => into_timestamp_ms(json, &root.field("timestamp"))?,
        None => None,
    };
    let results_path = root.field("results");
    let results = into_array(take_required(&mut object, &root, "results")?, &results_path)?;
    let diffs = results
        .into_iter()
        .enumerate()
        .map(|(i, json)| {
            let path = results_path.index(i);
            parse_result_diff(into_object(json, &path)?, &path)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ResultBatch {
        query_id,
        sequence,
        timestamp_ms,
        diffs,
        metadata: take(&mut object, "metadata"),
    })
}

/// Parses one `ResultDiff` found at `path`.
fn parse_result_diff(
    mut object: JsonMap<String, Json>,
    path: &Path<'_>,
) -> Result<Diff, FormatError> {
    let type_path = path.field("type");
    let kind = match take_required(&mut object, path, "type")? {
        Json::String(kind) => kind,
        other => return Err(wrong_type(&type_path, "a string", &other)),
    };
    let signature = match take(&mut object, "row_signature") {
        Some(json) => Some(as_u64(&json, &path.field("row_signature"))?),
        None => None,
    };
    let mut row = |name: &'static str| -> Result<_, FormatError> {
        into_row(take_required(&mut object, path, name)?, &path.field(name))
    };
    let diff = match kind.as_str() {
        "ADD" => Diff::Add {
            data: row("data")?,
            signature,
        },
        "DELETE" => Diff::Delete {
            data: row("data")?,
            signature,
        },
        "UPDATE" => Diff::Update {
            before: row("before")?,
            after: row("after")?,
            grouping_keys: grouping_keys(&mut object, path)?,
            signature,
        },
        "aggregation" => Diff::Aggregation {
            before: match take(&mut object, "before") {
                Some(json) => Some(into_row(json, &path.field("before"))?),
                None => None,
            },
            after: into_row(
                take_required(&mut object, path, "after")?,
                &path.field("after"),
            )?,
            grouping_keys: grouping_keys(&mut object, path)?,
            signature,
        },
        "noop" => Diff::Noop,
        _ => {
            return Err(FormatError::UnknownVariant {
                field: type_path.render(),
                value: quoted(&kind),
                expected: DIFF_TYPES,
            })
        }
    };
    Ok(diff)
}

fn grouping_keys(
    object: &mut JsonMap<String, Json>,
    path: &Path<'_>,
) -> Result<Option<Vec<String>>, FormatError> {
    take(object, "grouping_keys")
        .map(|json| into_columns(json, &path.field("grouping_keys")))
        .transpose()
}
