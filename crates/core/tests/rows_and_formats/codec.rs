//! Stored row bytes: golden encodings, round trips, and hostile input.

use liveresults_core::codec::row::{
    decode_row, encode_row, encode_row_into, RowCodecError, MAX_NESTING_DEPTH, ROW_FORMAT_VERSION,
};
use liveresults_core::row::Value;
use proptest::prelude::*;

use crate::{arb_value, hex, same, v};

/// Pinned bytes of version 1. If one of these fails, the on-disk format changed: stored rows
/// written by earlier builds would be misread. Bump `ROW_FORMAT_VERSION` and keep a decoder for
/// the old version instead of editing these.
#[test]
fn golden_bytes_version_1() {
    let cases: &[(Value, &str)] = &[
        (Value::Null, "0100"),
        (Value::Bool(true), "010101"),
        (Value::Int(-1), "010201"),                  // zigzag: -1 -> 1
        (Value::Int(300), "0102fb5802"),             // zigzag 600 as u16 varint
        (Value::Float(1.5), "0103000000000000f83f"), // IEEE bits, little-endian
        (Value::from("h\u{e9}"), "01040368c3a9"),    // byte length 3, UTF-8
        (Value::List(vec![]), "010500"),
        (v("{}"), "010600"),
        (
            v(r#"{"id":7,"name":"ada","tags":["x",null],"score":2.5,"ok":false}"#),
            // object, 5 entries, keys ascending: id, name, ok, score, tags
            "010605\
             026964020e\
             046e616d650403616461\
             026f6b0100\
             0573636f7265030000000000000440\
             0474616773050204017800",
        ),
    ];
    for (value, expected) in cases {
        assert_eq!(&hex(&encode_row(value)), expected, "encoding of {value}");
        assert_eq!(decode_row(&encode_row(value)).as_ref(), Ok(value));
    }
    // Rows without an integer above i64::MAX keep the version 1 bytes above; one with such an
    // integer is version 2 (tag 7, varint: 253 announces a little-endian u64).
    assert_eq!(ROW_FORMAT_VERSION, 2);
    let big = Value::UInt(u64::MAX);
    assert_eq!(hex(&encode_row(&big)), "0207fdffffffffffffffff");
    assert_eq!(decode_row(&encode_row(&big)), Ok(big));
}

/// The documented layout claims to be exactly bincode's derived encoding of a mirror enum;
/// this keeps the hand-written codec honest against bincode itself.
#[derive(bincode::Encode)]
enum StoredValue {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
    List(Vec<StoredValue>),
    Object(Vec<(String, StoredValue)>),
    UInt(u64),
}

fn mirror(value: &Value) -> StoredValue {
    match value {
        Value::Null => StoredValue::Null,
        Value::Bool(b) => StoredValue::Bool(*b),
        Value::Int(i) => StoredValue::Int(*i),
        Value::UInt(u) => StoredValue::UInt(*u),
        Value::Float(f) => StoredValue::Float(*f),
        Value::String(s) => StoredValue::String(s.clone()),
        Value::List(items) => StoredValue::List(items.iter().map(mirror).collect()),
        Value::Object(map) => {
            StoredValue::Object(map.iter().map(|(k, v)| (k.clone(), mirror(v))).collect())
        }
    }
}

#[test]
fn encode_into_appends() {
    let mut buf = vec![0xaa];
    encode_row_into(&Value::Int(-1), &mut buf);
    assert_eq!(buf, [0xaa, 0x01, 0x02, 0x01]);
}

#[test]
fn errors_are_distinguished() {
    assert_eq!(decode_row(&[]), Err(RowCodecError::Empty));
    assert_eq!(
        decode_row(&[3, 0]),
        Err(RowCodecError::UnknownVersion { found: 3 })
    );
    assert_eq!(
        decode_row(&[1]),
        Err(RowCodecError::Truncated { offset: 1 })
    );
    // String claims 3 bytes, has 1.
    assert_eq!(
        decode_row(&[1, 4, 3, b'a']),
        Err(RowCodecError::Truncated { offset: 3 })
    );
    assert_eq!(
        decode_row(&[1, 0, 0, 0]),
        Err(RowCodecError::TrailingBytes { count: 2 })
    );
    let malformed = |bytes: &[u8], needle: &str| match decode_row(bytes) {
        Err(err @ RowCodecError::Malformed { .. }) => {
            assert!(err.to_string().contains(needle), "{err} lacks {needle}");
        }
        other => panic!("expected malformed for {bytes:?}, got {other:?}"),
    };
    malformed(&[1, 7], "unknown value tag 7");
    malformed(&[1, 1, 2], "invalid boolean byte 0x02");
    malformed(&[1, 4, 1, 0xff], "not valid utf-8");
    // {"b": null, "a": null}: keys out of order.
    malformed(&[1, 6, 2, 1, b'b', 0, 1, b'a', 0], "out of order");
    // {"a": null, "a": null}: repeated key.
    malformed(&[1, 6, 2, 1, b'a', 0, 1, b'a', 0], "repeated");
}

#[test]
fn error_messages_are_lowercase_without_trailing_period() {
    let errors = [
        decode_row(&[]),
        decode_row(&[9]),
        decode_row(&[1]),
        decode_row(&[1, 9]),
        decode_row(&[1, 0, 0]),
    ];
    for err in errors.into_iter().filter_map(Result::err) {
        let text = err.to_string();
        assert!(text.starts_with(|c: char| !c.is_uppercase()), "{text}");
        assert!(!text.ends_with('.'), "{text}");
    }
}

#[test]
fn lying_lengths_run_out_of_input_not_memory() {
    // A list and a string each claiming u64::MAX elements/bytes.
    let mut list = vec![1, 5, 253];
    list.extend_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(
        decode_row(&list),
        Err(RowCodecError::Truncated { .. })
    ));
    let mut string = vec![1, 4, 253];
    string.extend_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(
        decode_row(&string),
        Err(RowCodecError::Truncated { .. })
    ));
}

fn nested_lists(depth: usize) -> Vec<u8> {
    let mut bytes = vec![1];
    for _ in 0..depth {
        bytes.extend_from_slice(&[5, 1]); // a list of one element
    }
    bytes.push(0); // null
    bytes
}

#[test]
fn nesting_is_bounded() {
    let deepest = decode_row(&nested_lists(MAX_NESTING_DEPTH));
    assert!(deepest.is_ok(), "{deepest:?}");
    assert_eq!(
        deepest.map(|value| encode_row(&value)),
        Ok(nested_lists(MAX_NESTING_DEPTH))
    );
    assert!(matches!(
        decode_row(&nested_lists(MAX_NESTING_DEPTH + 1)),
        Err(RowCodecError::TooDeep { .. })
    ));
    // Far beyond: must be refused, not overflow the stack.
    assert!(matches!(
        decode_row(&nested_lists(1_000_000)),
        Err(RowCodecError::TooDeep { .. })
    ));
}

proptest! {
    /// encode → decode gives the value back, bit for bit (NaN payloads included).
    #[test]
    fn round_trip(value in arb_value()) {
        let bytes = encode_row(&value);
        let back = decode_row(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(same(&back, &value), "{:?} != {:?}", back, value);
        prop_assert_eq!(encode_row(&back), bytes);
    }

    /// The payload after the version byte is what bincode derives for the mirror enum.
    #[test]
    fn payload_is_bincode_of_the_mirror_enum(value in arb_value()) {
        let derived = bincode::encode_to_vec(mirror(&value), bincode::config::standard())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let bytes = encode_row(&value);
        prop_assert_eq!(&bytes[1..], &derived[..]);
    }

    /// Arbitrary bytes never panic, with or without a valid version byte.
    #[test]
    fn random_bytes_never_panic(mut bytes in prop::collection::vec(any::<u8>(), 0..96), versioned in any::<bool>()) {
        if versioned {
            bytes.insert(0, ROW_FORMAT_VERSION);
        }
        if let Ok(value) = decode_row(&bytes) {
            // Whatever decodes must encode again (varints may be re-encoded shorter).
            let again = decode_row(&encode_row(&value)).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(same(&again, &value));
        }
    }

    /// Damaged real rows (one byte changed, or cut short) never panic.
    #[test]
    fn damaged_rows_never_panic(value in arb_value(), at in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<bool>()) {
        let mut bytes = encode_row(&value);
        let i = at.index(bytes.len());
        if cut {
            bytes.truncate(i);
        } else {
            bytes[i] = byte;
        }
        let _ = decode_row(&bytes);
    }
}
