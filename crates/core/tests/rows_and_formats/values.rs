//! `Value`: the JSON data model with integers and floats apart.

use liveresults_core::row::{Map, Value};
use proptest::prelude::*;
use serde_json::json;

use crate::{arb_json, arb_json_safe_value, v};

#[test]
fn json_numbers_map_to_int_or_float() {
    assert_eq!(Value::from(json!(7)), Value::Int(7));
    assert_eq!(Value::from(json!(-7)), Value::Int(-7));
    assert_eq!(Value::from(json!(i64::MAX)), Value::Int(i64::MAX));
    assert_eq!(Value::from(json!(i64::MIN)), Value::Int(i64::MIN));
    // Above i64::MAX the integer is kept exactly as an unsigned integer.
    assert_eq!(Value::from(json!(u64::MAX)), Value::UInt(u64::MAX));
    assert_eq!(Value::from(json!(u64::MAX)).to_json(), json!(u64::MAX));
    assert_eq!(Value::from(json!(1.5)), Value::Float(1.5));
    // A float with an integral value stays a float: `1.0` is written back as `1.0`.
    assert_eq!(v("1.0"), Value::Float(1.0));
    assert_eq!(v("1.0").to_json().to_string(), "1.0");
    assert_eq!(v("1e3"), Value::Float(1000.0));
}

#[test]
fn json_round_trip_of_a_realistic_row() {
    let json = json!({
        "id": 42, "name": "Ada", "score": 99.5, "active": true, "manager": null,
        "tags": ["a", 1, 2.25, false, null, {"nested": [[], {}]}],
        "big": 9_007_199_254_740_993i64, "neg": -1, "unicode": "h\u{e9}\u{1f600}\"\\"
    });
    let value = Value::from(json.clone());
    assert_eq!(value.to_json(), json);
    assert_eq!(value.clone().into_json(), json);
    assert_eq!(Value::from(&json), value);
    assert_eq!(serde_json::Value::from(value), json);
}

#[test]
fn serializes_as_plain_json_not_tagged() {
    let value = v(r#"{"b": [1, 2.5, "x", null, true], "a": {}}"#);
    assert_eq!(
        serde_json::to_string(&value).unwrap_or_default(),
        r#"{"a":{},"b":[1,2.5,"x",null,true]}"#
    );
    assert_eq!(value.to_string(), r#"{"a":{},"b":[1,2.5,"x",null,true]}"#);
}

#[test]
fn non_finite_floats_become_json_null() {
    assert_eq!(Value::Float(f64::NAN).to_json(), serde_json::Value::Null);
    assert_eq!(
        Value::Float(f64::INFINITY).to_json(),
        serde_json::Value::Null
    );
}

#[test]
fn deserialize_agrees_with_conversion_from_serde_json() {
    let text = r#"{"x": 18446744073709551615, "y": [-0.0, 1, 1.0], "x2": "s"}"#;
    let direct: Value = text.parse().unwrap_or_default();
    let via_json = Value::from(serde_json::from_str::<serde_json::Value>(text).unwrap_or_default());
    assert_eq!(direct, via_json);
    assert_eq!(direct.get("x"), Some(&Value::UInt(u64::MAX)));
}

#[test]
fn repeated_keys_keep_the_last_value_like_serde_json() {
    assert_eq!(v(r#"{"a": 1, "a": 2}"#), v(r#"{"a": 2}"#));
}

#[test]
fn accessors() {
    let row = v(r#"{"id": 1, "n": null}"#);
    assert_eq!(row.get("id"), Some(&Value::Int(1)));
    assert_eq!(row.get("missing"), None);
    assert!(row.get("n").is_some_and(Value::is_null));
    assert_eq!(row.type_name(), "object");
    assert_eq!(Value::Int(1).get("id"), None);
    let built: Value = [("id", Value::Int(1)), ("n", Value::Null)]
        .into_iter()
        .collect();
    assert_eq!(built, row);
    assert_eq!(Value::from(Map::new()), v("{}"));
}

proptest! {
    /// Every JSON value survives `serde_json::Value` → `Value` → `serde_json::Value`,
    /// integers above `i64::MAX` included (they are `Value::UInt`).
    #[test]
    fn serde_json_round_trip(json in arb_json()) {
        prop_assert_eq!(Value::from(json.clone()).to_json(), json);
    }

    /// JSON text written from a `Value` parses back to the same `Value`. Floats may move by
    /// a few ulps: serde_json's default float parser is fast, not correctly rounded (its
    /// `float_roundtrip` feature changes that; see `values.proptest-regressions`).
    #[test]
    fn json_text_round_trip(value in arb_json_safe_value()) {
        let text = serde_json::to_string(&value).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back: Value = text.parse().map_err(|e: serde_json::Error| TestCaseError::fail(e.to_string()))?;
        prop_assert!(close(&back, &value), "{:?} != {:?}", back, value);
    }
}

/// Equal, except that floats may differ in their last bits.
fn close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => {
            x == y || (x - y).abs() <= 1e-14 * x.abs().max(y.abs())
        }
        (Value::List(xs), Value::List(ys)) => {
            xs.len() == ys.len() && xs.iter().zip(ys).all(|(x, y)| close(x, y))
        }
        (Value::Object(xs), Value::Object(ys)) => {
            xs.len() == ys.len()
                && xs
                    .iter()
                    .zip(ys)
                    .all(|((kx, x), (ky, y))| kx == ky && close(x, y))
        }
        _ => a == b,
    }
}
