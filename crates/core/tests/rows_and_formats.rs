//! Rows, the stored row codec, row signatures and the two Drasi input formats.
//!
//! One test binary, one module per area; shared generators live here.

mod rows_and_formats {
    pub mod codec;
    pub mod format_errors;
    pub mod formats;
    pub mod signature;
    pub mod values;
}

use liveresults_core::row::Value;
use proptest::prelude::*;

/// Parses JSON text into a [`Value`]; test inputs are literals, so failing loudly is right.
fn v(json: &str) -> Value {
    json.parse()
        .unwrap_or_else(|err| panic!("bad test json {json}: {err}"))
}

/// Lowercase hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Structural equality with floats compared by bits, so NaN payloads and `-0.0` count.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits(),
        (Value::List(xs), Value::List(ys)) => {
            xs.len() == ys.len() && xs.iter().zip(ys).all(|(x, y)| same(x, y))
        }
        (Value::Object(xs), Value::Object(ys)) => {
            xs.len() == ys.len()
                && xs
                    .iter()
                    .zip(ys)
                    .all(|((kx, x), (ky, y))| kx == ky && same(x, y))
        }
        _ => a == b,
    }
}

/// Any [`Value`], NaNs and infinities included, nested at most 4 levels.
fn arb_value() -> impl Strategy<Value = Value> {
    arb_value_with(any::<f64>().boxed())
}

/// Values JSON can carry: only finite floats.
fn arb_json_safe_value() -> impl Strategy<Value = Value> {
    arb_value_with(
        prop_oneof![
            any::<f64>().prop_filter("finite", |f| f.is_finite()),
            Just(-0.0)
        ]
        .boxed(),
    )
}

fn arb_value_with(floats: BoxedStrategy<f64>) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        prop_oneof![-3i64..3, Just(i64::MIN), Just(i64::MAX)].prop_map(Value::Int),
        (i64::MAX as u64 + 1..=u64::MAX).prop_map(Value::UInt),
        floats.prop_map(Value::Float),
        "\\PC{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::List),
            prop::collection::btree_map("[a-z\u{e9}]{0,4}", inner, 0..6).prop_map(Value::Object),
        ]
    })
}

/// Any `serde_json::Value` (numbers: any i64, any u64, finite floats).
fn arb_json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value as Json;
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        any::<i64>().prop_map(Json::from),
        any::<u64>().prop_map(Json::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Json::from),
        "\\PC{0,8}".prop_map(Json::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Json::Array),
            prop::collection::btree_map("\\PC{0,4}", inner, 0..6)
                .prop_map(|map| Json::Object(map.into_iter().collect())),
        ]
    })
}
