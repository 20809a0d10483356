//! Row signatures: golden vectors of the canonical encoding, and its properties.

use liveresults_core::row::Value;
use liveresults_core::signature::{
    canonical_bytes, columns_signature, hash_value, row_signature, KeyColumns,
};
use proptest::prelude::*;
use xxhash_rust::xxh3::xxh3_64;

use crate::{arb_value, hex, v};

/// 2^63, the first float past `i64::MAX`.
const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;

fn canonical(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    canonical_bytes(value, &mut out);
    out
}

fn columns(names: &[&str]) -> KeyColumns {
    KeyColumns::Columns(names.iter().map(|s| s.to_string()).collect())
}

/// Pinned canonical bytes: a change here changes every computed signature, which orphans every
/// row stored under one.
#[test]
fn golden_canonical_bytes() {
    assert_eq!(
        hex(&canonical(&v(r#"{"a": [1, -0.0, 1.5, "b"]}"#))),
        "07\
         0100000000000000\
         05 0100000000000000 61\
         06 0400000000000000\
         03 0100000000000000\
         03 0000000000000000\
         04 000000000000f83f\
         05 0100000000000000 62"
            .replace(' ', "")
    );
    assert_eq!(
        hex(&canonical(&v("[null, false, true]"))),
        "06 0300000000000000 00 01 02".replace(' ', "")
    );
    assert_eq!(
        hex(&canonical(&Value::Float(f64::NAN))),
        "04000000000000f87f"
    );
    assert_eq!(hex(&canonical(&Value::Int(-2))), "03feffffffffffffff");
}

/// Pinned signatures (xxh3-64, seed 0). Same warning as above.
#[test]
fn golden_hashes() {
    let cases: &[(Value, u64)] = &[
        (Value::Null, 0xc44b_dff4_074e_ecdb),
        (Value::Int(0), 0xd1d3_0c5e_8136_b99d),
        (Value::Float(1.0), 0xa2a2_7a2a_65b0_9a01),
        (Value::from(""), 0xaa26_9631_f2ca_76e1),
        (Value::Float(0.5), 0xd1b2_275c_b0ca_0ddb),
        (v(r#"[1, "a", null, true]"#), 0xdaa5_e483_1bdd_a066),
        (v(r#"{"id": 1, "name": "ada"}"#), 0xf5dc_94bf_9689_ad0d),
    ];
    for (value, expected) in cases {
        assert_eq!(hash_value(value), *expected, "signature of {value}");
        assert_eq!(row_signature(value, &KeyColumns::WholeRow), *expected);
    }
    assert_eq!(
        row_signature(&v(r#"{"id": 1, "name": "ada"}"#), &columns(&["id"])),
        0xb21a_2302_841e_e3aa
    );
}

#[test]
fn integral_floats_hash_as_integers() {
    assert_eq!(hash_value(&v("1")), hash_value(&v("1.0")));
    assert_eq!(hash_value(&v("-0.0")), hash_value(&v("0.0")));
    assert_eq!(hash_value(&v("-0.0")), hash_value(&v("0")));
    assert_eq!(hash_value(&v("1e3")), hash_value(&v("1000")));
    assert_eq!(
        hash_value(&v("[1.0, {\"a\": 2.0}]")),
        hash_value(&v("[1, {\"a\": 2}]"))
    );
    // -2^63 is in range and integral; 2^63 is beyond i64 and hashes as the unsigned integer;
    // 2^64 is beyond u64 and stays a float.
    assert_eq!(
        hash_value(&Value::Float(-(2f64.powi(63)))),
        hash_value(&Value::Int(i64::MIN))
    );
    assert_eq!(
        hash_value(&Value::Float(2f64.powi(63))),
        hash_value(&Value::UInt(1 << 63))
    );
    assert_eq!(canonical(&Value::UInt(1 << 63))[0], 0x08);
    assert_eq!(canonical(&Value::Float(2f64.powi(64)))[0], 0x04);
    // Two ids above i64::MAX stay distinct (they merged when they were floats).
    assert_ne!(
        hash_value(&Value::UInt(u64::MAX)),
        hash_value(&Value::UInt(u64::MAX - 1))
    );
    assert_eq!(canonical(&Value::Float(f64::INFINITY))[0], 0x04);
    assert_ne!(
        hash_value(&Value::Float(f64::INFINITY)),
        hash_value(&Value::Float(f64::NEG_INFINITY))
    );
}

#[test]
fn every_nan_hashes_alike() {
    let quiet = Value::Float(f64::NAN);
    let negative = Value::Float(-f64::NAN);
    let payload = Value::Float(f64::from_bits(0x7ff0_0000_0000_0001));
    assert_eq!(hash_value(&quiet), hash_value(&negative));
    assert_eq!(hash_value(&quiet), hash_value(&payload));
}

#[test]
fn simple_values_that_must_differ() {
    let pairs = [
        ("\"1\"", "1"),
        ("[]", "{}"),
        ("null", "false"),
        ("false", "true"),
        ("0", "false"),
        ("\"\"", "null"),
        ("[null]", "[]"),
        ("{\"a\": null}", "{}"),
        ("[\"ab\"]", "[\"a\", \"b\"]"),
        ("[[1], 2]", "[1, [2]]"),
        ("{\"a\": \"b\"}", "[\"a\", \"b\"]"),
        ("0.5", "1"),
        ("-1", "18446744073709551615"),
    ];
    for (a, b) in pairs {
        assert_ne!(hash_value(&v(a)), hash_value(&v(b)), "{a} vs {b}");
    }
}

#[test]
fn key_columns_select_the_identity() {
    let row = v(r#"{"id": 1, "name": "ada", "age": 36}"#);
    let renamed = v(r#"{"id": 1, "name": "grace", "age": 36}"#);
    let id = columns(&["id"]);
    assert_eq!(row_signature(&row, &id), row_signature(&renamed, &id));
    assert_ne!(
        row_signature(&row, &KeyColumns::WholeRow),
        row_signature(&renamed, &KeyColumns::WholeRow)
    );
    // The signature of the projected object: order and repeats of the names do not matter.
    assert_eq!(row_signature(&row, &id), hash_value(&v(r#"{"id": 1}"#)));
    assert_eq!(
        row_signature(&row, &columns(&["name", "id", "name"])),
        row_signature(&row, &columns(&["id", "name"]))
    );
    // A missing column counts as null.
    assert_eq!(
        row_signature(&row, &columns(&["id", "zone"])),
        hash_value(&v(r#"{"id": 1, "zone": null}"#))
    );
    assert_ne!(
        row_signature(&row, &columns(&["id", "zone"])),
        row_signature(&row, &id)
    );
    // A row that is not an object has every key column null.
    assert_eq!(
        row_signature(&v("[1]"), &id),
        hash_value(&v(r#"{"id": null}"#))
    );
    assert_eq!(KeyColumns::default(), KeyColumns::WholeRow);
    let names = ["zone".to_owned(), "id".to_owned()];
    assert_eq!(
        columns_signature(&row, &names),
        row_signature(&row, &KeyColumns::Columns(names.to_vec()))
    );
}

proptest! {
    /// Streaming the hash and hashing the canonical bytes agree.
    #[test]
    fn hash_is_xxh3_of_canonical_bytes(value in arb_value()) {
        prop_assert_eq!(hash_value(&value), xxh3_64(&canonical(&value)));
    }

    /// The order in which an object's keys are written does not change its signature.
    #[test]
    fn object_key_order_does_not_matter(
        entries in prop::collection::btree_map("[a-z]{1,3}", -5i64..5, 1..8),
        rotate in any::<prop::sample::Index>(),
    ) {
        let mut pairs: Vec<String> = entries.iter().map(|(k, n)| format!("{k:?}: {n}")).collect();
        let forward = format!("{{{}}}", pairs.join(", "));
        pairs.reverse();
        let k = rotate.index(pairs.len());
        pairs.rotate_left(k);
        let shuffled = format!("{{{}}}", pairs.join(", "));
        prop_assert_eq!(hash_value(&v(&forward)), hash_value(&v(&shuffled)));
    }

    /// `n` and `n.0` agree for every integer a float holds exactly.
    #[test]
    fn int_and_integral_float_agree(n in -(1i64 << 53)..=(1i64 << 53)) {
        prop_assert_eq!(hash_value(&Value::Int(n)), hash_value(&Value::Float(n as f64)));
    }

    /// Any integral float in i64 range agrees with its integer.
    #[test]
    fn integral_floats_in_range_agree(
        f in prop_oneof![-TWO_POW_63..TWO_POW_63, -1e6..1e6f64]
            .prop_map(f64::trunc)
    ) {
        prop_assert_eq!(hash_value(&Value::Float(f)), hash_value(&Value::Int(f as i64)));
    }

    /// Distinct integers and distinct strings get distinct canonical bytes (injectivity on
    /// the simple cases; hash collisions are then 2^-64 events).
    #[test]
    fn distinct_scalars_differ(a in any::<i64>(), b in any::<i64>(), s in "\\PC{0,6}", t in "\\PC{0,6}") {
        prop_assume!(a != b && s != t);
        prop_assert_ne!(canonical(&Value::Int(a)), canonical(&Value::Int(b)));
        prop_assert_ne!(canonical(&Value::from(s.as_str())), canonical(&Value::from(t.as_str())));
        prop_assert_ne!(hash_value(&Value::from(a.to_string())), hash_value(&Value::Int(a)));
    }
}
