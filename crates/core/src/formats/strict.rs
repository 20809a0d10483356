//! What a JSON parser would let slip silently, refused before either parsing path runs:
//!
//! - **integers outside the 64-bit range** (below `i64::MIN` or above `u64::MAX`):
//!   `serde_json` turns them into the nearest float, so `18446744073709551617` and
//!   `18446744073709551618` become the same number and two rows keyed by them merge;
//! - **duplicate keys** in one object: `serde_json` keeps the last, so a second `sequence`
//!   or a second `id` in a row would win without a word.
//!
//! Both are a [`FormatError`] naming the JSON path, as every other input error does
//! (`docs/FORMAT.md`, "Numbers and duplicate keys"). One scan over the text, no allocation
//! for keys without escapes; text that is not valid JSON is left for the parser to report.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt::Write as _;

use super::error::FormatError;

enum Frame<'a> {
    Object {
        keys: HashSet<Cow<'a, str>>,
        key: Option<Cow<'a, str>>,
        expect_key: bool,
    },
    Array {
        index: usize,
    },
}

/// The JSON path of the current position (`results[0].data.id`).
fn path(stack: &[Frame<'_>]) -> String {
    let mut out = String::new();
    for frame in stack {
        match frame {
            Frame::Object { key: Some(key), .. } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Frame::Object { key: None, .. } => {}
            Frame::Array { index } => {
                // Writing to a String cannot fail.
                let _ = write!(out, "[{index}]");
            }
        }
    }
    out
}

/// The end (index of the closing quote) of the string starting at `start` (its opening quote).
fn string_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// Whether an integer literal (no fraction, no exponent) fits `i64` or `u64`.
fn integer_fits(literal: &str) -> bool {
    if literal.starts_with('-') {
        literal.parse::<i64>().is_ok()
    } else {
        literal.parse::<u64>().is_ok()
    }
}

/// Checks `text` for integers beyond 64 bits and duplicate keys; `Ok` also for text that is
/// not JSON (the parser reports that).
pub(crate) fn check(text: &str) -> Result<(), FormatError> {
    let bytes = text.as_bytes();
    let mut stack: Vec<Frame<'_>> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'{' => stack.push(Frame::Object {
                keys: HashSet::new(),
                key: None,
                expect_key: true,
            }),
            b'[' => stack.push(Frame::Array { index: 0 }),
            b'}' | b']' => {
                stack.pop();
            }
            b',' => match stack.last_mut() {
                Some(Frame::Array { index }) => *index = index.saturating_add(1),
                Some(Frame::Object { expect_key, .. }) => *expect_key = true,
                None => return Ok(()),
            },
            b'"' => {
                let Some(end) = string_end(bytes, i) else {
                    return Ok(());
                };
                let is_key = matches!(
                    stack.last(),
                    Some(Frame::Object {
                        expect_key: true,
                        ..
                    })
                );
                if is_key {
                    let raw = &text[i + 1..end];
                    let name: Cow<'_, str> = if raw.contains('\\') {
                        match serde_json::from_str::<String>(&text[i..=end]) {
                            Ok(decoded) => Cow::Owned(decoded),
                            Err(_) => return Ok(()),
                        }
                    } else {
                        Cow::Borrowed(raw)
                    };
                    // The object's own path: its parents', without its current key.
                    let object_path = path(&stack[..stack.len() - 1]);
                    if let Some(Frame::Object {
                        keys,
                        key,
                        expect_key,
                    }) = stack.last_mut()
                    {
                        if !keys.insert(name.clone()) {
                            return Err(FormatError::DuplicateKey {
                                object: object_path,
                                key: name.into_owned(),
                            });
                        }
                        *key = Some(name);
                        *expect_key = false;
                    }
                }
                i = end;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                let mut integer = true;
                while i < bytes.len() {
                    match bytes[i] {
                        b'0'..=b'9' | b'-' | b'+' => {}
                        b'.' | b'e' | b'E' => integer = false,
                        _ => break,
                    }
                    i += 1;
                }
                let literal = &text[start..i];
                if integer && !integer_fits(literal) {
                    return Err(FormatError::NumberOutOfRange {
                        field: path(&stack),
                        number: literal.chars().take(64).collect(),
                    });
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_integers_and_duplicate_keys_are_named_by_path() {
        let e = check(r#"{"a":[1,{"id":18446744073709551616}]}"#).unwrap_err();
        assert_eq!(e.field(), Some("a[1].id"), "{e}");
        let e = check(r#"{"x":-9223372036854775809}"#).unwrap_err();
        assert_eq!(e.field(), Some("x"), "{e}");
        let e = check(r#"{"r":{"id":1,"\u0069d":2}}"#).unwrap_err();
        assert_eq!(
            e,
            FormatError::DuplicateKey {
                object: "r".into(),
                key: "id".into()
            }
        );
        let e = check(r#"{"sequence":1,"sequence":2}"#).unwrap_err();
        assert!(e.to_string().contains("`sequence`"), "{e}");
        // In range, floats, keys in sibling objects, strings that look like numbers: fine.
        for ok in [
            r#"{"a":18446744073709551615,"b":-9223372036854775808,"c":1e30,"d":1.5}"#,
            r#"[{"id":1},{"id":2}]"#,
            r#"{"s":"18446744073709551617","t":"a,\"b\":{"}"#,
            "not json at all {",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
    }
}
