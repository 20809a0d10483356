//! Both Drasi input formats: parsing every variant and mapping it to row operations.

use liveresults_core::formats::{
    parse_event, parse_ndjson_line, ControlSignal, Diff, Event, ResultBatch, RowOp,
};
use liveresults_core::row::Value;
use liveresults_core::signature::{row_signature, KeyColumns};
use serde_json::json;

use crate::v;

/// One event per line, every variant of both formats.
pub(crate) const FIXTURE: &str = include_str!("../golden/drasi_events.ndjson");

fn fixture_events() -> Vec<Event> {
    FIXTURE
        .lines()
        .enumerate()
        .map(|(i, line)| parse_ndjson_line(i + 1, line).unwrap_or_else(|err| panic!("{err}")))
        .collect()
}

fn batch(event: &Event) -> &ResultBatch {
    match event {
        Event::Change(batch) => batch,
        other => panic!("expected a change, got {other:?}"),
    }
}

fn ops<'a>(diffs: &'a [Diff], keys: &KeyColumns) -> Vec<RowOp<'a>> {
    let mut out = Vec::new();
    for diff in diffs {
        diff.mutations(keys, &mut out);
    }
    out
}

fn whole(row: &Value) -> u64 {
    row_signature(row, &KeyColumns::WholeRow)
}

#[test]
fn drasi_lib_every_variant() {
    let events = fixture_events();
    let first = batch(&events[0]);
    assert_eq!((first.query_id.as_str(), first.sequence), ("orders", 1));
    // An RFC 3339 timestamp is accepted but not interpreted.
    assert_eq!(first.timestamp_ms, None);
    assert_eq!(first.metadata, Some(json!({"tracking": {"source": "pg"}})));
    assert_eq!(
        first.diffs,
        vec![
            Diff::Add {
                data: v(r#"{"id":1,"total":9.5}"#),
                signature: Some(11)
            },
            Diff::Delete {
                data: v(r#"{"id":2,"total":3}"#),
                signature: Some(12)
            },
            Diff::Update {
                before: v(r#"{"id":3,"total":4}"#),
                after: v(r#"{"id":3,"total":5}"#),
                grouping_keys: Some(vec!["id".to_owned()]),
                signature: Some(13),
            },
            Diff::Aggregation {
                before: None,
                after: v(r#"{"region":"eu","n":1}"#),
                grouping_keys: None,
                signature: Some(14),
            },
            Diff::Aggregation {
                before: Some(v(r#"{"region":"us","n":1}"#)),
                after: v(r#"{"region":"us","n":2}"#),
                grouping_keys: None,
                signature: Some(15),
            },
            Diff::Noop,
        ]
    );
    let second = batch(&events[1]);
    assert_eq!(
        (second.sequence, second.timestamp_ms),
        (2, Some(1_740_830_400_000))
    );
    assert!(second.diffs.is_empty() && second.metadata.is_none());
}

#[test]
fn drasi_lib_maps_with_upstream_signatures() {
    let events = fixture_events();
    let diffs = &batch(&events[0]).diffs;
    // Upstream signatures win over any configured key columns; UPDATE collapses to one upsert.
    for keys in [
        KeyColumns::WholeRow,
        KeyColumns::Columns(vec!["id".to_owned()]),
    ] {
        assert_eq!(
            ops(diffs, &keys),
            vec![
                RowOp::Upsert {
                    signature: 11,
                    row: &v(r#"{"id":1,"total":9.5}"#)
                },
                RowOp::Delete { signature: 12 },
                RowOp::Upsert {
                    signature: 13,
                    row: &v(r#"{"id":3,"total":5}"#)
                },
                RowOp::Upsert {
                    signature: 14,
                    row: &v(r#"{"region":"eu","n":1}"#)
                },
                RowOp::Upsert {
                    signature: 15,
                    row: &v(r#"{"region":"us","n":2}"#)
                },
            ]
        );
    }
}

#[test]
fn drasi_lib_without_signatures_computes_them() {
    let event = parse_event(
        r#"{"query_id":"q","sequence":3,"results":[
            {"type":"ADD","data":{"id":1}},
            {"type":"DELETE","data":{"id":2}},
            {"type":"UPDATE","data":{"id":3,"x":2},"before":{"id":3,"x":1},"after":{"id":3,"x":2}},
            {"type":"aggregation","before":{"g":1,"n":1},"after":{"g":1,"n":2}},
            {"type":"aggregation","after":{"g":2,"n":5},"grouping_keys":["g"]}]}"#,
    )
    .unwrap_or_else(|err| panic!("{err}"));
    let diffs = &batch(&event).diffs;
    let (b3, a3) = (v(r#"{"id":3,"x":1}"#), v(r#"{"id":3,"x":2}"#));
    let (b1, a1, a2) = (
        v(r#"{"g":1,"n":1}"#),
        v(r#"{"g":1,"n":2}"#),
        v(r#"{"g":2,"n":5}"#),
    );
    let by_g = KeyColumns::Columns(vec!["g".to_owned()]);
    assert_eq!(
        ops(diffs, &KeyColumns::WholeRow),
        vec![
            RowOp::Upsert {
                signature: whole(&v(r#"{"id":1}"#)),
                row: &v(r#"{"id":1}"#)
            },
            RowOp::Delete {
                signature: whole(&v(r#"{"id":2}"#))
            },
            // Whole-row identity: the update replaces one row by another.
            RowOp::Delete {
                signature: whole(&b3)
            },
            RowOp::Upsert {
                signature: whole(&a3),
                row: &a3
            },
            // An aggregate without signature or grouping keys must not leave its old value.
            RowOp::Delete {
                signature: whole(&b1)
            },
            RowOp::Upsert {
                signature: whole(&a1),
                row: &a1
            },
            RowOp::Upsert {
                signature: row_signature(&a2, &by_g),
                row: &a2
            },
        ]
    );
    // Keyed by id, the update keeps its identity: one upsert.
    let by_id = KeyColumns::Columns(vec!["id".to_owned()]);
    assert_eq!(
        ops(&diffs[2..3], &by_id),
        vec![RowOp::Upsert {
            signature: row_signature(&a3, &by_id),
            row: &a3
        }]
    );
}

#[test]
fn platform_change_every_list() {
    let events = fixture_events();
    let change = batch(&events[2]);
    assert_eq!((change.query_id.as_str(), change.sequence), ("rooms", 7));
    assert_eq!(change.timestamp_ms, Some(1_740_830_400_123));
    assert_eq!(change.metadata, Some(json!({"tracking": {}})));
    let (c, b19, b20) = (
        v(r#"{"room":"c","temp":18}"#),
        v(r#"{"room":"b","temp":19}"#),
        v(r#"{"room":"b","temp":20}"#),
    );
    let (f_before, f_after, a) = (
        v(r#"{"floor":1,"avg":19.5}"#),
        v(r#"{"floor":1,"avg":20.0}"#),
        v(r#"{"room":"a","temp":21}"#),
    );
    // Deleted, then updated, then added; no platform row carries a signature.
    assert_eq!(
        change.diffs,
        vec![
            Diff::Delete {
                data: c.clone(),
                signature: None
            },
            Diff::Update {
                before: b19.clone(),
                after: b20.clone(),
                grouping_keys: None,
                signature: None
            },
            Diff::Update {
                before: f_before,
                after: f_after.clone(),
                grouping_keys: Some(vec!["floor".to_owned()]),
                signature: None,
            },
            Diff::Add {
                data: a.clone(),
                signature: None
            },
        ]
    );
    let floor = KeyColumns::Columns(vec!["floor".to_owned()]);
    assert_eq!(
        ops(&change.diffs, &KeyColumns::WholeRow),
        vec![
            RowOp::Delete {
                signature: whole(&c)
            },
            RowOp::Delete {
                signature: whole(&b19)
            },
            RowOp::Upsert {
                signature: whole(&b20),
                row: &b20
            },
            // Grouping keys identify the aggregate: before and after agree, one upsert.
            RowOp::Upsert {
                signature: row_signature(&f_after, &floor),
                row: &f_after
            },
            RowOp::Upsert {
                signature: whole(&a),
                row: &a
            },
        ]
    );
    let room = KeyColumns::Columns(vec!["room".to_owned()]);
    assert_eq!(
        ops(&change.diffs[1..2], &room),
        vec![RowOp::Upsert {
            signature: row_signature(&b20, &room),
            row: &b20
        }]
    );
}

/// Drasi's platform omits `before` on aggregation updates: the grouping keys name the
/// aggregate, so the update replaces its row with one upsert under that signature.
#[test]
fn platform_update_without_before_upserts_the_aggregate() {
    let line = r#"{"kind":"change","queryId":"q","sequence":3,"updatedResults":[{"after":{"floor":1,"avg":20.5},"groupingKeys":["floor"]},{"before":null,"after":{"room":"x"}}]}"#;
    let event = parse_ndjson_line(1, line).unwrap_or_else(|err| panic!("{err}"));
    let change = batch(&event);
    let (aggregate, room) = (v(r#"{"floor":1,"avg":20.5}"#), v(r#"{"room":"x"}"#));
    assert_eq!(
        change.diffs,
        vec![
            Diff::Aggregation {
                before: None,
                after: aggregate.clone(),
                grouping_keys: Some(vec!["floor".to_owned()]),
                signature: None,
            },
            Diff::Aggregation {
                before: None,
                after: room.clone(),
                grouping_keys: None,
                signature: None,
            },
        ]
    );
    let floor = KeyColumns::Columns(vec!["floor".to_owned()]);
    assert_eq!(
        ops(&change.diffs, &KeyColumns::WholeRow),
        vec![
            RowOp::Upsert {
                signature: row_signature(&aggregate, &floor),
                row: &aggregate
            },
            RowOp::Upsert {
                signature: whole(&room),
                row: &room
            },
        ]
    );
}

#[test]
fn platform_control_every_signal() {
    let events = fixture_events();
    let signals: Vec<(u64, Option<u64>, ControlSignal)> = events[3..]
        .iter()
        .map(|event| match event {
            Event::Control {
                query_id,
                sequence,
                timestamp_ms,
                signal,
            } => {
                assert_eq!(query_id, "rooms");
                assert_eq!((event.query_id(), event.sequence()), ("rooms", *sequence));
                (*sequence, *timestamp_ms, *signal)
            }
            other => panic!("expected control, got {other:?}"),
        })
        .collect();
    assert_eq!(
        signals,
        vec![
            (8, Some(1_740_830_400_200), ControlSignal::BootstrapStarted),
            (
                9,
                Some(1_740_830_400_300),
                ControlSignal::BootstrapCompleted
            ),
            (10, None, ControlSignal::Running),
            (11, None, ControlSignal::Stopped),
            (12, Some(1_740_830_400_500), ControlSignal::Deleted),
        ]
    );
    assert_eq!(
        ControlSignal::BootstrapCompleted.as_str(),
        "bootstrapCompleted"
    );
}

#[test]
fn noop_maps_to_nothing() {
    assert!(ops(&[Diff::Noop], &KeyColumns::WholeRow).is_empty());
}
