//! The fast path of [`super::parse_event`]: serde deserializes well-formed events straight
//! into the row model, skipping the intermediate `serde_json::Value` tree (about half the
//! parse cost on ingest). It accepts only what the slow path accepts with the same result;
//! anything it does not like — including every malformed event — falls back to the slow path,
//! whose job is to say exactly what is wrong and where.

use serde::de::{self, Deserializer, IgnoredAny, Visitor};
use serde::Deserialize;
use serde_json::Value as Json;

use super::{ControlSignal, Diff, Event, ResultBatch};
use crate::row::Value;

/// A millisecond timestamp as the slow path reads it: a number is kept, a string or null is
/// accepted and yields `None`, anything else fails.
#[derive(Default)]
struct Timestamp(Option<u64>);

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Timestamp;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("milliseconds or a date string")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Timestamp, E> {
                Ok(Timestamp(Some(v)))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Timestamp, E> {
                Ok(Timestamp(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Timestamp, E> {
                Ok(Timestamp(None))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
struct QueryResult {
    kind: Option<IgnoredAny>,
    query_id: String,
    sequence: u64,
    #[serde(default)]
    timestamp: Option<Timestamp>,
    results: Vec<ResultDiff>,
    metadata: Option<Json>,
}

#[derive(Deserialize)]
struct ResultDiff {
    #[serde(rename = "type")]
    kind: String,
    data: Option<Value>,
    before: Option<Value>,
    after: Option<Value>,
    grouping_keys: Option<Vec<String>>,
    row_signature: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PlatformEvent {
    kind: String,
    query_id: String,
    sequence: u64,
    #[serde(default)]
    source_time_ms: Option<Timestamp>,
    added_results: Option<Vec<Value>>,
    updated_results: Option<Vec<PlatformUpdate>>,
    deleted_results: Option<Vec<Value>>,
    control_signal: Option<PlatformSignal>,
    metadata: Option<Json>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PlatformUpdate {
    before: Value,
    after: Value,
    grouping_keys: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct PlatformSignal {
    kind: String,
}

fn row(value: Option<Value>) -> Option<Value> {
    value.filter(|v| matches!(v, Value::Object(_)))
}

/// Parses `text` if it is a well-formed event of either format; `None` sends the caller to the
/// slow path.
pub(crate) fn try_parse(text: &str) -> Option<Event> {
    // Both formats are objects whose first key is normally the discriminating one.
    let platform = text
        .trim_start()
        .strip_prefix('{')?
        .trim_start()
        .starts_with("\"kind\"");
    if platform {
        platform_event(serde_json::from_str(text).ok()?)
    } else {
        query_result(serde_json::from_str(text).ok()?)
    }
}

fn query_result(q: QueryResult) -> Option<Event> {
    if q.kind.is_some() {
        return None; // "kind" wins detection: the slow path decides
    }
    let mut diffs = Vec::with_capacity(q.results.len());
    for d in q.results {
        let signature = d.row_signature;
        diffs.push(match d.kind.as_str() {
            "ADD" => Diff::Add {
                data: row(d.data)?,
                signature,
            },
            "DELETE" => Diff::Delete {
                data: row(d.data)?,
                signature,
            },
            "UPDATE" => Diff::Update {
                before: row(d.before)?,
                after: row(d.after)?,
                grouping_keys: d.grouping_keys,
                signature,
            },
            "aggregation" => Diff::Aggregation {
                before: match d.before {
                    Some(b) => Some(row(Some(b))?),
                    None => None,
                },
                after: row(d.after)?,
                grouping_keys: d.grouping_keys,
                signature,
            },
            "noop" => Diff::Noop,
            _ => return None,
        });
    }
    Some(Event::Change(ResultBatch {
        query_id: q.query_id,
        sequence: q.sequence,
        timestamp_ms: q.timestamp.and_then(|t| t.0),
        diffs,
        metadata: q.metadata.filter(|m| !m.is_null()),
    }))
}

fn platform_event(p: PlatformEvent) -> Option<Event> {
    let timestamp_ms = p.source_time_ms.and_then(|t| t.0);
    match p.kind.as_str() {
        "change" => {
            let mut diffs = Vec::new();
            for data in p.deleted_results.unwrap_or_default() {
                diffs.push(Diff::Delete {
                    data: row(Some(data))?,
                    signature: None,
                });
            }
            for u in p.updated_results.unwrap_or_default() {
                diffs.push(Diff::Update {
                    before: row(Some(u.before))?,
                    after: row(Some(u.after))?,
                    grouping_keys: u.grouping_keys,
                    signature: None,
                });
            }
            for data in p.added_results.unwrap_or_default() {
                diffs.push(Diff::Add {
                    data: row(Some(data))?,
                    signature: None,
                });
            }
            Some(Event::Change(ResultBatch {
                query_id: p.query_id,
                sequence: p.sequence,
                timestamp_ms,
                diffs,
                metadata: p.metadata.filter(|m| !m.is_null()),
            }))
        }
        "control" => {
            let signal = match p.control_signal?.kind.as_str() {
                "bootstrapStarted" => ControlSignal::BootstrapStarted,
                "bootstrapCompleted" => ControlSignal::BootstrapCompleted,
                "running" => ControlSignal::Running,
                "stopped" => ControlSignal::Stopped,
                "deleted" => ControlSignal::Deleted,
                _ => return None,
            };
            Some(Event::Control {
                query_id: p.query_id,
                sequence: p.sequence,
                timestamp_ms,
                signal,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slow(line: &str) -> Option<Event> {
        super::super::parse_event_value(serde_json::from_str(line).ok()?).ok()
    }

    #[test]
    fn fast_path_agrees_with_the_slow_path() {
        let golden = include_str!("../../tests/golden/drasi_events.ndjson");
        let extra = [
            r#"{"query_id":"q","sequence":1,"timestamp":null,"results":[{"type":"ADD","data":{"a":18446744073709551615,"b":-0.0,"c":[1,{"d":null}]},"row_signature":7}]}"#,
            r#"{"query_id":"q","sequence":2,"timestamp":-5,"results":[]}"#,
            r#"{"query_id":"q","sequence":3,"results":[{"type":"ADD","data":null}]}"#,
            r#"{"query_id":"q","sequence":3,"results":[{"type":"ADD","data":{"x":1},"data":{"x":2}}]}"#,
            r#"{"query_id":"q","kind":"change","sequence":3,"results":[]}"#,
            r#"{"kind":"change","queryId":"r","sequence":4,"addedResults":null,"updatedResults":[{"before":{"a":1},"after":null}]}"#,
            r#"{"kind":"control","queryId":"r","sequence":5,"controlSignal":{"kind":"paused"}}"#,
            r#"{"sequence":6,"kind":"change","queryId":"r","addedResults":[{"a":1}]}"#,
        ];
        let mut fast_hits = 0;
        for line in golden.lines().chain(extra) {
            if let Some(fast) = try_parse(line) {
                fast_hits += 1;
                assert_eq!(Some(fast), slow(line), "fast path disagrees on {line}");
            }
        }
        assert!(
            fast_hits >= 5,
            "the fast path should take well-formed events ({fast_hits})"
        );
        // What the fast path refuses must be the slow path's business, not silently different.
        assert!(try_parse(extra[1]).is_none() && slow(extra[1]).is_none());
        assert!(try_parse(extra[2]).is_none() && slow(extra[2]).is_none());
        assert!(try_parse(extra[3]).is_none());
        assert!(try_parse(extra[4]).is_none());
    }
}
