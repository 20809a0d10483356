//! drasi-lib's `QueryResult` converted straight into the liveresults event model.
//!
//! The runtime already parses drasi-lib's `QueryResult` from JSON (`liveresults_core::formats`);
//! inside the process there is no JSON to parse: the reaction is handed the typed value, and
//! serialising it only to parse it back would cost a text encoder and a parser per result for
//! nothing. Only the row values are converted (`serde_json::Value` into [`Value`], which keeps
//! integers and floats apart exactly as the JSON path does), so both paths store the same bytes.

use drasi_lib::channels::{QueryResult, ResultDiff};
use liveresults_core::formats::{Diff, Event, ResultBatch};
use liveresults_core::row::Value;
use serde_json::Value as Json;

/// Converts one `QueryResult`, keeping Drasi's sequence (the reaction maps it afterwards).
///
/// Profiling data is dropped: it describes Drasi's processing of the result, not the result.
pub fn to_batch(result: QueryResult) -> ResultBatch {
    let QueryResult {
        query_id,
        sequence,
        timestamp,
        results,
        metadata,
        ..
    } = result;
    ResultBatch {
        query_id,
        sequence,
        // A date before 1970 has no place in a millisecond counter; it is dropped, not wrapped.
        timestamp_ms: u64::try_from(timestamp.timestamp_millis()).ok(),
        diffs: results.into_iter().map(to_diff).collect(),
        metadata: if metadata.is_empty() {
            None
        } else {
            Some(Json::Object(metadata.into_iter().collect()))
        },
    }
}

/// [`to_batch`] wrapped as the runtime's [`Event`].
pub fn to_event(result: QueryResult) -> Event {
    Event::Change(to_batch(result))
}

/// The row's identity, exactly as drasi-lib stamped it, `0` included.
///
/// drasi-lib's typed `ResultDiff` always carries the engine's signature, and Drasi's own result
/// set (the snapshot the reaction reconciles with) is keyed by that number whatever it is. Only
/// the JSON wire format uses `0` for "missing" (a serde default), and that format is parsed
/// elsewhere. Reading `0` as absent here would store the row under a signature computed from
/// its content while the snapshot names it `0`, so every attach would delete and re-add it.
fn signature(row_signature: u64) -> Option<u64> {
    Some(row_signature)
}

fn to_diff(diff: ResultDiff) -> Diff {
    match diff {
        ResultDiff::Add {
            data,
            row_signature,
        } => Diff::Add {
            data: Value::from(data),
            signature: signature(row_signature),
        },
        ResultDiff::Delete {
            data,
            row_signature,
        } => Diff::Delete {
            data: Value::from(data),
            signature: signature(row_signature),
        },
        // `data` duplicates `after` (the JSON parser ignores it too).
        ResultDiff::Update {
            before,
            after,
            grouping_keys,
            row_signature,
            ..
        } => Diff::Update {
            before: Value::from(before),
            after: Value::from(after),
            grouping_keys,
            signature: signature(row_signature),
        },
        ResultDiff::Aggregation {
            before,
            after,
            row_signature,
        } => Diff::Aggregation {
            before: before.map(Value::from),
            after: Value::from(after),
            grouping_keys: None,
            signature: signature(row_signature),
        },
        ResultDiff::Noop => Diff::Noop,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use liveresults_core::formats::parse_event;
    use serde_json::json;

    use super::*;

    fn sample() -> QueryResult {
        let mut metadata = HashMap::new();
        metadata.insert("source_id".to_owned(), json!("orders"));
        QueryResult::new(
            "big".to_owned(),
            4,
            chrono_now(),
            vec![
                ResultDiff::Add {
                    data: json!({"id": "o1", "total": 150.0}),
                    row_signature: 11,
                },
                ResultDiff::Update {
                    data: json!({"id": "o2", "total": 175.0}),
                    before: json!({"id": "o2", "total": 150.0}),
                    after: json!({"id": "o2", "total": 175.0}),
                    grouping_keys: None,
                    row_signature: 12,
                },
                ResultDiff::Aggregation {
                    before: None,
                    after: json!({"customer": "bob", "spent": 120}),
                    row_signature: 13,
                },
                ResultDiff::Delete {
                    data: json!({"id": "o3", "total": 101.5}),
                    row_signature: 14,
                },
                ResultDiff::Noop,
            ],
            metadata,
        )
    }

    fn chrono_now() -> chrono::DateTime<chrono::Utc> {
        serde_json::from_value(json!("2026-11-26T12:44:38.479Z")).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn direct_conversion_equals_the_json_path() {
        let result = sample();
        let json = serde_json::to_string(&result).unwrap_or_else(|e| panic!("{e}"));
        let Event::Change(mut parsed) = parse_event(&json).unwrap_or_else(|e| panic!("{e}")) else {
            panic!("a QueryResult parses as a change");
        };
        // The JSON path leaves RFC 3339 dates unparsed; the typed value has the instant.
        assert_eq!(parsed.timestamp_ms, None);
        parsed.timestamp_ms = Some(1_795_697_078_479);
        assert_eq!(to_batch(result), parsed);
    }

    #[test]
    fn zero_signature_is_kept_as_drasi_keys_it() {
        let mut result = sample();
        result.results = vec![ResultDiff::Add {
            data: json!({"id": 1}),
            row_signature: 0,
        }];
        let batch = to_batch(result);
        assert_eq!(
            batch.diffs,
            vec![Diff::Add {
                data: Value::from(json!({"id": 1})),
                signature: Some(0)
            }]
        );
        assert_eq!(batch.timestamp_ms, Some(1_795_697_078_479));
    }
}
