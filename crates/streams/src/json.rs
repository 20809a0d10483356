//! JSON mode (`application/json` streams): an append's body is validated and flattened one
//! array level into messages, stored as one record — the messages' texts joined by `,` — so a
//! read renders any run of records as `[` + records joined by `,` + `]` without parsing them
//! again, and message boundaries survive (the protocol's §9.1).
//!
//! A compact array (`[a,b,c]`, what `JSON.stringify` sends) is its own record once the
//! brackets are off, so the record is then a slice of the body: no copy, no allocation.

use bytes::Bytes;
use serde_json::value::RawValue;

use crate::error::StreamError;

/// The record of a JSON-mode body: its messages joined by `,`, or `None` for an empty array
/// (which a create accepts and an append refuses). Shares the body's bytes when they already
/// are that record.
pub fn record(body: &Bytes) -> Result<Option<Bytes>, StreamError> {
    let invalid =
        |e: serde_json::Error| StreamError::BadRequest(format!("the body is not valid JSON: {e}"));
    let text = std::str::from_utf8(body)
        .map_err(|_| StreamError::BadRequest("the body is not valid UTF-8 JSON".into()))?;
    // Where a value parsed from `text` lies in the body (borrowed values point into it).
    let span = |value: &RawValue| {
        let from = (value.get().as_ptr() as usize).checked_sub(text.as_ptr() as usize)?;
        let to = from.checked_add(value.get().len())?;
        (to <= body.len()).then_some((from, to))
    };
    let value = text.trim_matches(|c: char| matches!(c, ' ' | '\t' | '\n' | '\r'));
    if !value.starts_with('[') {
        // Validated as one value (trailing garbage is an error), stored as sent.
        let value: &RawValue = serde_json::from_str(value).map_err(invalid)?;
        return Ok(Some(match span(value) {
            Some((from, to)) => share(body, from, to),
            None => Bytes::copy_from_slice(value.get().as_bytes()),
        }));
    }
    // One pass validates the array and finds its elements.
    let items: Vec<&RawValue> = serde_json::from_str(value).map_err(invalid)?;
    let (Some(first), Some(last)) = (items.first(), items.last()) else {
        return Ok(None);
    };
    // Compact: each element starts one byte (its comma) after the previous one ends.
    let spans: Option<Vec<(usize, usize)>> = items.iter().map(|i| span(i)).collect();
    let compact = spans
        .as_deref()
        .is_some_and(|s| s.windows(2).all(|w| w[1].0 == w[0].1 + 1));
    if let (true, Some((from, _)), Some((_, to))) = (compact, span(first), span(last)) {
        return Ok(Some(share(body, from, to)));
    }
    let len = items.iter().map(|i| i.get().len() + 1).sum::<usize>();
    let mut joined = Vec::with_capacity(len);
    for (n, item) in items.iter().enumerate() {
        if n > 0 {
            joined.push(b',');
        }
        joined.extend_from_slice(item.get().as_bytes());
    }
    Ok(Some(Bytes::from(joined)))
}

/// `body[from..to]`, sharing the body's allocation only when the record is most of it (at
/// most 64 bytes, or a quarter of the body, left over): a stored record pins the whole body,
/// so a short value padded with whitespace (`1` and 16 MiB of spaces) must not keep 16 MiB
/// alive per byte it stores.
fn share(body: &Bytes, from: usize, to: usize) -> Bytes {
    let len = to.saturating_sub(from);
    let slack = body.len().saturating_sub(len);
    if slack <= 64 || slack <= len / 3 {
        body.slice(from..to)
    } else {
        Bytes::copy_from_slice(&body[from..to])
    }
}

/// The byte length, within `record`, of its first `count` messages (without the comma after
/// them); `None` when the record holds fewer messages or is not a stored JSON record.
pub fn prefix_len(record: &[u8], count: u64) -> Option<u64> {
    if count == 0 {
        return Some(0);
    }
    let text = std::str::from_utf8(record).ok()?;
    let array = format!("[{text}]");
    let items: Vec<&RawValue> = serde_json::from_str(&array).ok()?;
    let count = usize::try_from(count).ok()?;
    if count > items.len() {
        return None;
    }
    // Stored records join the messages' exact texts with single commas.
    let len: usize = items[..count].iter().map(|i| i.get().len()).sum::<usize>() + (count - 1);
    Some(len as u64)
}

/// Renders records of a JSON stream as one array.
pub fn render(parts: &[Bytes]) -> Bytes {
    let len = parts.iter().map(|p| p.len() + 1).sum::<usize>() + 2;
    let mut out = Vec::with_capacity(len);
    out.push(b'[');
    for (n, part) in parts.iter().filter(|p| !p.is_empty()).enumerate() {
        if n > 0 {
            out.push(b',');
        }
        out.extend_from_slice(part);
    }
    out.push(b']');
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(body: &str) -> Option<String> {
        record(&Bytes::copy_from_slice(body.as_bytes()))
            .ok()
            .flatten()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    fn is_err(body: &[u8]) -> bool {
        record(&Bytes::copy_from_slice(body)).is_err()
    }

    #[test]
    fn flattens_exactly_one_level() {
        assert_eq!(rec(r#" {"a": 1} "#).as_deref(), Some(r#"{"a": 1}"#));
        assert_eq!(
            rec(r#"[{"a":1}, {"b":2}]"#).as_deref(),
            Some(r#"{"a":1},{"b":2}"#)
        );
        assert_eq!(rec("[[1,2],[3,4]]").as_deref(), Some("[1,2],[3,4]"));
        assert_eq!(rec("[[[1,2,3]]]").as_deref(), Some("[[1,2,3]]"));
        assert_eq!(rec("42").as_deref(), Some("42"));
        assert_eq!(rec("[]"), None);
        assert_eq!(rec(" [ ] "), None);
        assert!(is_err(b"{ invalid json }"));
        assert!(is_err(b"[1,]"));
        assert!(is_err(b"1 2"));
        assert!(is_err(b"[1] 2"));
    }

    #[test]
    fn compact_arrays_are_slices_of_the_body() {
        let body = Bytes::from_static(br#" [{"a":[1,{"b":null}]},"x,y",-1.5e3] "#);
        let stored = record(&body).ok().flatten().unwrap_or_default();
        assert_eq!(&stored[..], br#"{"a":[1,{"b":null}]},"x,y",-1.5e3"#);
        // The same bytes: nothing was copied.
        assert_eq!(stored.as_ptr(), body[2..].as_ptr());
        let single = Bytes::from_static(b" \"one\"\n");
        let stored = record(&single).ok().flatten().unwrap_or_default();
        assert_eq!(
            (&stored[..], stored.as_ptr()),
            (&b"\"one\""[..], single[1..].as_ptr())
        );
        // Whitespace between elements is dropped, wherever it is.
        for body in [
            "[ 1,2,3]",
            "[1 ,2,3]",
            "[1, 2,3]",
            "[1,2 ,3 ]",
            "[1,2,\n3]",
            "[1,2,3]",
        ] {
            assert_eq!(rec(body).as_deref(), Some("1,2,3"), "{body:?}");
        }
    }

    #[test]
    fn a_short_record_in_a_padded_body_does_not_pin_the_body() {
        let padding = " ".repeat(1 << 20);
        for body in [
            format!("1{padding}"),
            format!("[1]{padding}"),
            format!("{padding}[1,2]"),
        ] {
            let body = Bytes::from(body);
            let stored = record(&body).ok().flatten().unwrap_or_default();
            let inside = body.as_ptr_range().contains(&stored.as_ptr());
            assert!(
                !inside,
                "a {}-byte record shares a {}-byte body",
                stored.len(),
                body.len()
            );
        }
    }

    #[test]
    fn prefixes_and_rendering() {
        let stored = record(&Bytes::from_static(br#"[{"a":1}, "x,y", [1,2]]"#))
            .ok()
            .flatten()
            .unwrap_or_default();
        assert_eq!(prefix_len(&stored, 0), Some(0));
        assert_eq!(prefix_len(&stored, 1), Some(7));
        assert_eq!(prefix_len(&stored, 2), Some(13));
        assert_eq!(prefix_len(&stored, 3), Some(stored.len() as u64));
        assert_eq!(prefix_len(&stored, 4), None);
        let rendered = render(&[stored.slice(..7), Bytes::from_static(b"2")]);
        assert_eq!(&rendered[..], br#"[{"a":1},2]"#);
        assert_eq!(&render(&[])[..], b"[]");
    }
}
