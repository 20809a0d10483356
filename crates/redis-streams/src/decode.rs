//! One stream entry to one event: the size bound, the field, the CloudEvent envelope.
//!
//! Drasi's platform reaction (and Dapr's Redis pub/sub, which it mirrors) writes each result
//! event as one entry with one field, `data`, holding a CloudEvent 1.0 envelope in JSON:
//!
//! ```text
//! XADD orders-results * data '{"specversion": "1.0", "type": "com.dapr.event.sent",
//!     "datacontenttype": "application/json", "id": "…", "source": "…", "topic": "orders-results",
//!     "pubsubname": "drasi-pubsub", "time": "…",
//!     "data": {"kind": "change", "queryId": "orders", "sequence": 7, …}}'
//! ```
//!
//! A publisher in raw-payload mode writes the event itself instead. So: an object with
//! `specversion` is an envelope and its `data` is the event; anything else is a bare event in
//! one of the two formats `liveresults_core::formats` reads. The event is handed to the
//! parser as the exact text it arrived as (never re-serialised), so the strict checks —
//! duplicate keys, integers beyond 64 bits — hold for enveloped events too.

use liveresults_core::formats::{parse_event, Event};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::EntryError;

/// Decodes an entry — its fields and values, in the order Redis returned them: at most
/// `max_bytes` in all, the event in `field` (once), enveloped or bare.
pub fn decode_entry(
    fields: &[(Vec<u8>, Vec<u8>)],
    field: &str,
    max_bytes: usize,
) -> Result<Event, EntryError> {
    let bytes = fields.iter().fold(0usize, |sum, (f, v)| {
        sum.saturating_add(f.len()).saturating_add(v.len())
    });
    if bytes > max_bytes {
        return Err(EntryError::TooLarge {
            bytes,
            max: max_bytes,
        });
    }
    let mut values = fields.iter().filter(|(f, _)| f == field.as_bytes());
    let Some((_, value)) = values.next() else {
        return Err(EntryError::MissingField {
            field: field.to_owned(),
        });
    };
    if values.next().is_some() {
        return Err(EntryError::DuplicateField {
            field: field.to_owned(),
        });
    }
    let text = std::str::from_utf8(value).map_err(|_| EntryError::NotUtf8 {
        field: field.to_owned(),
    })?;
    decode_json(text)
}

/// What tells an envelope from a bare event, borrowed from the text without copying `data`.
#[derive(Deserialize)]
struct Probe<'a> {
    #[serde(borrow, default)]
    specversion: Option<&'a RawValue>,
    #[serde(default)]
    datacontenttype: Option<String>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(borrow, default)]
    data_base64: Option<&'a RawValue>,
}

/// Decodes the JSON of an entry's field: a CloudEvent envelope's `data`, or a bare event.
pub fn decode_json(text: &str) -> Result<Event, EntryError> {
    let probe = match serde_json::from_str::<Probe<'_>>(text) {
        Ok(probe) if probe.specversion.is_some() => probe,
        // Not an object, or no envelope: the parser says what is wrong, if anything.
        _ => return Ok(parse_event(text)?),
    };
    if let Some(content_type) = &probe.datacontenttype {
        if !is_json_media_type(content_type) {
            return Err(EntryError::Envelope(format!(
                "datacontenttype {content_type:?} is not JSON"
            )));
        }
    }
    let Some(data) = probe.data else {
        let found = if probe.data_base64.is_some() {
            "binary data (data_base64)"
        } else {
            "no data"
        };
        return Err(EntryError::Envelope(format!(
            "expected the event as JSON in \"data\", found {found}"
        )));
    };
    let raw = data.get();
    if raw.starts_with('"') {
        // A publisher that serialised the event to a string first: the string is the event.
        let inner: String = serde_json::from_str(raw).map_err(|e| {
            EntryError::Envelope(format!("\"data\" is not a valid JSON string: {e}"))
        })?;
        return Ok(parse_event(&inner)?);
    }
    Ok(parse_event(raw)?)
}

/// `application/json`, `text/json` or any `…+json` type, parameters ignored.
fn is_json_media_type(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence == "text/json" || essence.ends_with("+json")
}

#[cfg(test)]
mod tests {
    use liveresults_core::formats::FormatError;

    use super::*;

    const CHANGE: &str = r#"{"kind":"change","queryId":"q","sequence":7,"sourceTimeMs":1,
        "addedResults":[{"id":1}],"updatedResults":[],"deletedResults":[]}"#;
    const LIB: &str = r#"{"query_id":"q","sequence":3,"timestamp":1,
        "results":[{"type":"ADD","data":{"k":1},"row_signature":1}]}"#;

    fn envelope(data: &str) -> String {
        format!(
            r#"{{"data":{data},"datacontenttype":"application/json","id":"6f1c","pubsubname":
               "drasi-pubsub","source":"drasi-core","specversion":"1.0","time":
               "2025-01-01T00:00:00.000Z","topic":"q-results","type":"com.dapr.event.sent"}}"#
        )
    }

    fn entry(text: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        vec![(b"data".to_vec(), text.as_bytes().to_vec())]
    }

    fn decode(text: &str) -> Result<Event, EntryError> {
        decode_entry(&entry(text), "data", 1 << 20)
    }

    #[test]
    fn bare_events_of_both_formats() {
        let e = decode(CHANGE).unwrap();
        assert_eq!((e.query_id(), e.sequence()), ("q", 7));
        let e = decode(LIB).unwrap();
        assert_eq!((e.query_id(), e.sequence()), ("q", 3));
    }

    #[test]
    fn drasi_cloudevent_envelopes() {
        let e = decode(&envelope(CHANGE)).unwrap();
        assert_eq!((e.query_id(), e.sequence()), ("q", 7));
        let e = decode(&envelope(LIB)).unwrap();
        assert_eq!(e.sequence(), 3);
        // The event serialised to a string inside the envelope.
        let quoted = serde_json::to_string(CHANGE).unwrap();
        assert_eq!(decode(&envelope(&quoted)).unwrap().sequence(), 7);
        // Other JSON media types and parameters.
        let text = envelope(CHANGE).replace(
            "application/json",
            "application/cloudevents+json; charset=utf-8",
        );
        assert_eq!(decode(&text).unwrap().sequence(), 7);
    }

    #[test]
    fn strict_checks_hold_inside_the_envelope() {
        let dup = CHANGE.replace(r#""sequence":7"#, r#""sequence":7,"sequence":8"#);
        assert!(matches!(
            decode(&envelope(&dup)),
            Err(EntryError::Format(FormatError::DuplicateKey { .. }))
        ));
        let big = CHANGE.replace(r#""sequence":7"#, r#""sequence":18446744073709551617"#);
        assert!(matches!(
            decode(&envelope(&big)),
            Err(EntryError::Format(FormatError::NumberOutOfRange { .. }))
        ));
    }

    #[test]
    fn malformed_entries_say_why() {
        let cases = [
            (envelope("null"), "no data"),
            (
                envelope(CHANGE).replace(r#""data":"#, r#""data_base64":"AAAA","x":"#),
                "data_base64",
            ),
            (
                envelope(CHANGE).replace("application/json", "text/plain"),
                "not JSON",
            ),
            (envelope(r#""not an event""#), "invalid json"),
            (envelope("[1]"), "unrecognised"),
            ("{\"kind\":".to_owned(), "invalid json"),
            ("42".to_owned(), "unrecognised"),
        ];
        for (text, expected) in cases {
            let err = decode(&text).expect_err(&text).to_string();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn entry_shape_and_size() {
        let err = decode_entry(&entry(CHANGE), "payload", 1 << 20).unwrap_err();
        assert_eq!(
            err,
            EntryError::MissingField {
                field: "payload".into()
            }
        );
        let err = decode_entry(&entry(CHANGE), "data", 10).unwrap_err();
        assert!(matches!(err, EntryError::TooLarge { max: 10, .. }), "{err}");
        let twice = [entry(CHANGE), entry(CHANGE)].concat();
        assert!(decode_entry(&twice, "data", 1 << 20).is_err());
        let binary = vec![(b"data".to_vec(), vec![0xff, 0xfe])];
        assert_eq!(
            decode_entry(&binary, "data", 1 << 20).unwrap_err(),
            EntryError::NotUtf8 {
                field: "data".into()
            }
        );
        // Other fields are allowed (Dapr may add some) and count towards the size.
        let mut extra = entry(CHANGE);
        extra.push((b"traceparent".to_vec(), b"00-ab-cd-01".to_vec()));
        assert_eq!(decode_entry(&extra, "data", 1 << 20).unwrap().sequence(), 7);
    }
}
