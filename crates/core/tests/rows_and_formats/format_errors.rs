//! Input format errors: each names the exact field, and no input makes the parser panic.

use liveresults_core::formats::{
    parse_event, parse_event_value, parse_ndjson_line, Diff, Event, FormatError,
};
use liveresults_core::signature::KeyColumns;
use proptest::prelude::*;

use super::formats::FIXTURE;
use crate::arb_json;

fn err(text: &str) -> FormatError {
    match parse_event(text) {
        Err(err) => err,
        Ok(event) => panic!("expected an error for {text}, got {event:?}"),
    }
}

fn wrong_type(field: &str, expected: &str, found: &str) -> impl Fn(FormatError) {
    let (field, expected, found) = (field.to_owned(), expected.to_owned(), found.to_owned());
    move |err| match err {
        FormatError::WrongType {
            field: f,
            expected: e,
            found: x,
        } => {
            assert_eq!(
                (f.as_str(), e, x.as_str()),
                (field.as_str(), expected.as_str(), found.as_str())
            );
        }
        other => panic!("expected wrong type at {field}, got {other:?}"),
    }
}

#[test]
fn errors_name_the_field() {
    let missing = |text: &str, field: &str| {
        assert_eq!(
            err(text),
            FormatError::Missing {
                field: field.to_owned()
            }
        );
    };
    missing(r#"{"query_id":"q","results":[]}"#, "sequence");
    missing(r#"{"kind":"change","queryId":"q"}"#, "sequence");
    missing(r#"{"kind":"change","sequence":1}"#, "queryId");
    missing(
        r#"{"query_id":"q","sequence":1,"results":[{"type":"noop"},{"data":{}}]}"#,
        "results[1].type",
    );
    missing(
        r#"{"query_id":"q","sequence":1,"results":[{"type":"UPDATE","before":{}}]}"#,
        "results[0].after",
    );
    missing(
        r#"{"query_id":"q","sequence":1,"results":[{"type":"ADD"}]}"#,
        "results[0].data",
    );
    missing(
        r#"{"kind":"change","queryId":"q","sequence":1,"updatedResults":[{"before":{}}]}"#,
        "updatedResults[0].after",
    );
    missing(
        r#"{"kind":"control","queryId":"q","sequence":1}"#,
        "controlSignal",
    );
    missing(
        r#"{"kind":"control","queryId":"q","sequence":1,"controlSignal":{}}"#,
        "controlSignal.kind",
    );

    assert_eq!(
        err(r#"{"query_id":"q","sequence":1,"results":[{"type":"noop"},{"type":"RENAME"}]}"#),
        FormatError::UnknownVariant {
            field: "results[1].type".to_owned(),
            value: "\"RENAME\"".to_owned(),
            expected: "\"ADD\", \"DELETE\", \"UPDATE\", \"aggregation\", \"noop\"",
        }
    );
    let unknown = |text: &str, field: &str| match err(text) {
        FormatError::UnknownVariant { field: f, .. } => assert_eq!(f, field),
        other => panic!("expected unknown variant at {field}, got {other:?}"),
    };
    unknown(r#"{"kind":"changed","queryId":"q","sequence":1}"#, "kind");
    unknown(
        r#"{"kind":"control","queryId":"q","sequence":1,"controlSignal":{"kind":"paused"}}"#,
        "controlSignal.kind",
    );

    let u64_expected = "an unsigned 64-bit integer";
    wrong_type("sequence", u64_expected, "string \"5\"")(err(
        r#"{"query_id":"q","sequence":"5","results":[]}"#,
    ));
    wrong_type("sequence", u64_expected, "number -1")(err(
        r#"{"kind":"change","queryId":"q","sequence":-1}"#,
    ));
    wrong_type("sequence", u64_expected, "null")(err(
        r#"{"kind":"change","queryId":"q","sequence":null}"#,
    ));
    wrong_type("queryId", "a string", "number 7")(err(
        r#"{"kind":"change","queryId":7,"sequence":1}"#,
    ));
    wrong_type("results", "an array", "object")(err(
        r#"{"query_id":"q","sequence":1,"results":{}}"#,
    ));
    wrong_type("results[0].data", "an object (a row)", "array")(err(
        r#"{"query_id":"q","sequence":1,"results":[{"type":"ADD","data":[1]}]}"#,
    ));
    wrong_type("results[0].row_signature", u64_expected, "number 1.5")(err(
        r#"{"query_id":"q","sequence":1,"results":[{"type":"noop","row_signature":1.5}]}"#,
    ));
    wrong_type("results[0].type", "a string", "number 1")(err(
        r#"{"query_id":"q","sequence":1,"results":[{"type":1}]}"#,
    ));
    wrong_type("results[2]", "an object", "boolean true")(err(
        r#"{"query_id":"q","sequence":1,"results":[{"type":"noop"},{"type":"noop"},true]}"#,
    ));
    wrong_type("results[0].grouping_keys[1]", "a string", "number 2")(err(
        r#"{"query_id":"q","sequence":1,"results":[{"type":"UPDATE","before":{},"after":{},"grouping_keys":["a",2]}]}"#,
    ));
    wrong_type("updatedResults[0].groupingKeys[1]", "a string", "null")(err(
        r#"{"kind":"change","queryId":"q","sequence":1,"updatedResults":[{"before":{},"after":{},"groupingKeys":["a",null]}]}"#,
    ));
    wrong_type("addedResults[1]", "an object (a row)", "string \"x\"")(err(
        r#"{"kind":"change","queryId":"q","sequence":1,"addedResults":[{},"x"]}"#,
    ));
    wrong_type("updatedResults[0].before", "an object (a row)", "number 3")(err(
        r#"{"kind":"change","queryId":"q","sequence":1,"updatedResults":[{"before":3,"after":{}}]}"#,
    ));
    wrong_type(
        "timestamp",
        "milliseconds as an unsigned integer, or a date string",
        "boolean true",
    )(err(
        r#"{"query_id":"q","sequence":1,"timestamp":true,"results":[]}"#,
    ));
}

#[test]
fn invalid_json_and_unknown_formats() {
    match err(r#"{"query_id": }"#) {
        FormatError::InvalidJson { column, message } => {
            assert_eq!(column, 14);
            assert_eq!(message, "expected value");
        }
        other => panic!("expected invalid json, got {other:?}"),
    }
    for text in [
        "[1]",
        "42",
        "\"kind\"",
        r#"{"foo":1}"#,
        r#"{"query_id":"q"}"#,
        r#"{"results":[]}"#,
    ] {
        assert!(
            matches!(err(text), FormatError::UnknownFormat { .. }),
            "{text}"
        );
    }
    // Every proper prefix of a valid line is invalid json, never a panic or a wrong success.
    for line in FIXTURE.lines() {
        for end in (0..line.len()).filter(|&i| line.is_char_boundary(i)) {
            assert!(
                matches!(err(&line[..end]), FormatError::InvalidJson { .. }),
                "{}",
                &line[..end]
            );
        }
    }
}

#[test]
fn ndjson_lines_carry_their_number_and_messages_are_lowercase() {
    let error = parse_ndjson_line(17, r#"{"query_id":"q","results":[]}"#).err();
    let error = error.unwrap_or_else(|| panic!("expected an error"));
    assert_eq!(error.line, 17);
    assert_eq!(error.source.field(), Some("sequence"));
    assert_eq!(error.to_string(), "line 17: missing field `sequence`");
    for text in [
        "{",
        "[]",
        r#"{"kind":"x","queryId":"q","sequence":1}"#,
        r#"{"kind":"change","queryId":"q","sequence":"1"}"#,
    ] {
        let message = err(text).to_string();
        assert!(
            message.starts_with(|c: char| c.is_lowercase()) && !message.ends_with('.'),
            "{message}"
        );
    }
}

#[test]
fn huge_values_are_cut_in_messages() {
    let long = "x".repeat(10_000);
    let text = format!(r#"{{"query_id":"q","sequence":1,"results":[{{"type":"{long}"}}]}}"#);
    match err(&text) {
        FormatError::UnknownVariant { field, value, .. } => {
            assert_eq!(field, "results[0].type");
            assert_eq!(value, format!("\"{}\"...", "x".repeat(64)));
        }
        other => panic!("expected unknown variant, got {other:?}"),
    }
    assert!(err(&text).to_string().len() < 300);
}

#[test]
fn unknown_fields_are_ignored() {
    let event = parse_event(
        r#"{"query_id":"q","sequence":1,"results":[{"type":"noop","extra":1}],"future":true}"#,
    );
    assert_eq!(
        match event {
            Ok(Event::Change(batch)) => batch.diffs,
            other => panic!("{other:?}"),
        },
        vec![Diff::Noop]
    );
}

/// Field names of both formats, so random objects reach past the first check.
const VOCABULARY: &[&str] = &[
    "kind",
    "queryId",
    "query_id",
    "sequence",
    "results",
    "type",
    "data",
    "before",
    "after",
    "row_signature",
    "grouping_keys",
    "groupingKeys",
    "addedResults",
    "updatedResults",
    "deletedResults",
    "controlSignal",
    "sourceTimeMs",
    "timestamp",
    "metadata",
    "ADD",
    "UPDATE",
    "change",
    "control",
    "aggregation",
];

fn arb_event_like() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value as Json;
    let key = prop::sample::select(VOCABULARY).prop_map(str::to_owned);
    let leaf = prop_oneof![
        arb_json(),
        prop::sample::select(VOCABULARY).prop_map(|s| Json::String(s.to_owned())),
        (0u64..4).prop_map(Json::from),
    ];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Json::Array),
            prop::collection::btree_map(key.clone(), inner, 0..8)
                .prop_map(|map| Json::Object(map.into_iter().collect())),
        ]
    })
}

/// Every JSON pointer inside `json`.
fn pointers(json: &serde_json::Value, at: String, out: &mut Vec<String>) {
    match json {
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                pointers(item, format!("{at}/{i}"), out);
            }
        }
        serde_json::Value::Object(map) => {
            for (k, item) in map {
                pointers(item, format!("{at}/{k}"), out);
            }
        }
        _ => {}
    }
    out.push(at);
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        let _ = parse_event(&text);
    }

    #[test]
    fn arbitrary_event_like_json_never_panics(json in arb_event_like()) {
        let _ = parse_event(&json.to_string());
        if let Err(err) = parse_event_value(json) {
            prop_assert!(!err.to_string().is_empty());
        }
    }

    /// A valid fixture event with one value replaced by random JSON parses or fails cleanly.
    #[test]
    fn damaged_fixture_events_never_panic(line in 0usize..8, at in any::<prop::sample::Index>(), replacement in arb_json()) {
        let text = FIXTURE.lines().nth(line).unwrap_or_default();
        let mut json: serde_json::Value = serde_json::from_str(text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut all = Vec::new();
        pointers(&json, String::new(), &mut all);
        let pointer = all[at.index(all.len())].clone();
        if let Some(slot) = json.pointer_mut(&pointer) {
            *slot = replacement;
        }
        let mut out = Vec::new();
        if let Ok(Event::Change(batch)) = parse_event_value(json) {
            for diff in &batch.diffs {
                diff.mutations(&KeyColumns::WholeRow, &mut out);
            }
        }
    }
}

#[test]
fn integers_beyond_64_bits_and_duplicate_keys_are_refused_by_both_paths_golden() {
    let golden = include_str!("../golden/strict_input.tsv");
    let mut cases = 0;
    for line in golden
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (input, expected) = line.split_once('\t').expect("input TAB expected");
        let got = match parse_event(input) {
            Ok(_) => "ok".to_owned(),
            Err(e) => e.to_string(),
        };
        assert_eq!(got, expected, "{input}");
        cases += 1;
    }
    assert_eq!(cases, 7);
    // Two ids one apart stay two rows: the largest u64 and its predecessor.
    let line = |id: u64| {
        format!(
            r#"{{"query_id":"q","sequence":1,"results":[{{"type":"ADD","data":{{"id":{id}}}}}]}}"#
        )
    };
    let a = parse_event(&line(u64::MAX)).unwrap();
    let b = parse_event(&line(u64::MAX - 1)).unwrap();
    assert_ne!(a, b);
}
