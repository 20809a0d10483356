//! Drasi platform events: what the Drasi platform's query containers publish to reactions.
//!
//! ```text
//! { "kind": "change", "queryId": "q1", "sequence": 7, "sourceTimeMs": 1735689600000,
//!   "addedResults":   [ {row}, ... ],
//!   "updatedResults": [ { "before": {row} (optional), "after": {row},
//!                         "groupingKeys": ["k"] (optional) } ],
//!   "deletedResults": [ {row}, ... ],
//!   "metadata": { ... } (optional) }
//!
//! { "kind": "control", "queryId": "q1", "sequence": 8, "sourceTimeMs": 1735689600000,
//!   "controlSignal": { "kind": "bootstrapStarted" | "bootstrapCompleted" | "running"
//!                            | "stopped" | "deleted" } }
//! ```
//!
//! Platform rows carry no signature; [`super::Diff::mutations`] computes one. A missing or
//! `null` result list counts as empty, and `sourceTimeMs` may be absent.
//!
//! Drasi's platform leaves `before` out of the updates of aggregating queries (the aggregate
//! is named by its `groupingKeys`). Such an update becomes a [`Diff::Aggregation`] without a
//! previous value: an upsert under the grouping-key signature, which replaces the aggregate's
//! old row. Without `before` *and* without `groupingKeys` nothing names the previous row, so
//! the update can only upsert `after` under its own signature.
//!
//! The three lists of a change event become one ordered diff list: **deleted, then updated,
//! then added**. A row an event both deletes and adds is in the result set after the event,
//! and applying deletes first (with last-wins batches) leaves it there.

use serde_json::{Map as JsonMap, Value as Json};

use super::event::{ControlSignal, Diff, Event, ResultBatch};
use super::json_walk::{
    as_u64, into_array, into_columns, into_object, into_row, into_string, into_timestamp_ms,
    quoted, take, take_required, Path,
};
use super::FormatError;

const EVENT_KINDS: &str = "\"change\", \"control\"";
const SIGNAL_KINDS: &str =
    "\"bootstrapStarted\", \"bootstrapCompleted\", \"running\", \"stopped\", \"deleted\"";

/// Parses a Drasi platform event object (see the module docs).
pub fn parse_platform_event(mut object: JsonMap<String, Json>) -> Result<Event, FormatError> {
    let root = Path::Root;
    let kind_path = root.field("kind");
    let kind = into_string(take_required(&mut object, &root, "kind")?, &kind_path)?;
    let query_id = into_string(
        take_required(&mut object, &root, "queryId")?,
        &root.field("queryId"),
    )?;
    let sequence = as_u64(
        &take_required(&mut object, &root, "sequence")?,
        &root.field("sequence"),
    )?;
    let timestamp_ms = match take(&mut object, "sourceTimeMs") {
        Some(json) => into_timestamp_ms(json, &root.field("sourceTimeMs"))?,
        None => None,
    };
    match kind.as_str() {
        "change" => {
            let mut diffs = Vec::new();
            let deleted = root.field("deletedResults");
            for (i, json) in result_list(&mut object, "deletedResults", &deleted)?
                .into_iter()
                .enumerate()
            {
                diffs.push(Diff::Delete {
                    data: into_row(json, &deleted.index(i))?,
                    signature: None,
                });
            }
            let updated = root.field("updatedResults");
            for (i, json) in result_list(&mut object, "updatedResults", &updated)?
                .into_iter()
                .enumerate()
            {
                diffs.push(parse_update(json, &updated.index(i))?);
            }
            let added = root.field("addedResults");
            for (i, json) in result_list(&mut object, "addedResults", &added)?
                .into_iter()
                .enumerate()
            {
                diffs.push(Diff::Add {
                    data: into_row(json, &added.index(i))?,
                    signature: None,
                });
            }
            Ok(Event::Change(ResultBatch {
                query_id,
                sequence,
                timestamp_ms,
                diffs,
                metadata: take(&mut object, "metadata"),
            }))
        }
        "control" => {
            let signal_path = root.field("controlSignal");
            let mut signal = into_object(
                take_required(&mut object, &root, "controlSignal")?,
                &signal_path,
            )?;
            let signal_kind_path = signal_path.field("kind");
            let signal = match into_string(
                take_required(&mut signal, &signal_path, "kind")?,
                &signal_kind_path,
            )?
            .as_str()
            {
                "bootstrapStarted" => ControlSignal::BootstrapStarted,
                "bootstrapCompleted" => ControlSignal::BootstrapCompleted,
                "running" => ControlSignal::Running,
                "stopped" => ControlSignal::Stopped,
                "deleted" => ControlSignal::Deleted,
                other => {
                    return Err(FormatError::UnknownVariant {
                        field: signal_kind_path.render(),
                        value: quoted(other),
                        expected: SIGNAL_KINDS,
                    })
                }
            };
            Ok(Event::Control {
                query_id,
                sequence,
                timestamp_ms,
                signal,
            })
        }
        other => Err(FormatError::UnknownVariant {
            field: kind_path.render(),
            value: quoted(other),
            expected: EVENT_KINDS,
        }),
    }
}

/// One `updatedResults` entry.
fn parse_update(json: Json, path: &Path<'_>) -> Result<Diff, FormatError> {
    let mut object = into_object(json, path)?;
    let before = take(&mut object, "before")
        .map(|json| into_row(json, &path.field("before")))
        .transpose()?;
    let after = into_row(
        take_required(&mut object, path, "after")?,
        &path.field("after"),
    )?;
    let grouping_keys = take(&mut object, "groupingKeys")
        .map(|json| into_columns(json, &path.field("groupingKeys")))
        .transpose()?;
    Ok(match before {
        Some(before) => Diff::Update {
            before,
            after,
            grouping_keys,
            signature: None,
        },
        None => Diff::Aggregation {
            before: None,
            after,
            grouping_keys,
            signature: None,
        },
    })
}

/// The result list `name` (found at `path`); absent or `null` is empty.
fn result_list(
    object: &mut JsonMap<String, Json>,
    name: &str,
    path: &Path<'_>,
) -> Result<Vec<Json>, FormatError> {
    match take(object, name) {
        Some(json) => into_array(json, path),
        None => Ok(Vec::new()),
    }
}
