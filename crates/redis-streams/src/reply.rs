//! Reading the replies of the stream commands (XREADGROUP, XAUTOCLAIM, XPENDING) out of
//! `redis::Value`, by hand: entries deleted while pending come back with no fields, and the
//! field values are kept as bytes (their size is checked before anything else looks at them).
//! Both protocol versions are read (RESP3 answers XREADGROUP with a map).

use redis::Value;

/// One stream entry.
#[derive(Debug)]
pub(crate) struct Entry {
    /// Its id (`<ms>-<seq>`).
    pub id: String,
    /// Its fields and values; `None` when the entry was deleted from the stream (XDEL, or
    /// trimmed) while it was pending.
    pub fields: Option<Vec<(Vec<u8>, Vec<u8>)>>,
}

/// One pending entry as XPENDING's extended form lists it.
#[derive(Debug)]
pub(crate) struct PendingEntry {
    /// Its id.
    pub id: String,
    /// The consumer holding it.
    pub consumer: String,
    /// Milliseconds since it was last delivered.
    pub idle_ms: u64,
    /// How many times it was delivered (read or claimed with its fields).
    pub deliveries: u64,
}

/// What XAUTOCLAIM answered.
#[derive(Debug)]
pub(crate) struct Claimed {
    /// Where the next call starts; `0-0` when the whole pending list was scanned.
    pub cursor: String,
    /// The entries claimed (with `JUSTID`: ids only, no fields).
    pub entries: Vec<Entry>,
    /// Pending entries found deleted from the stream, which Redis dropped from the pending
    /// list (Redis 7 reports them; 6.2 does not).
    pub deleted: usize,
}

fn text(value: Value) -> Result<String, String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes).map_err(|_| "a non-UTF-8 id".into()),
        Value::SimpleString(s) => Ok(s),
        Value::VerbatimString { text, .. } => Ok(text),
        other => Err(format!("expected a string, found {other:?}")),
    }
}

fn bytes(value: Value) -> Result<Vec<u8>, String> {
    match value {
        Value::BulkString(bytes) => Ok(bytes),
        Value::SimpleString(s) => Ok(s.into_bytes()),
        Value::VerbatimString { text, .. } => Ok(text.into_bytes()),
        other => Err(format!("expected a string, found {other:?}")),
    }
}

fn array(value: Value) -> Result<Vec<Value>, String> {
    match value {
        Value::Array(items) | Value::Set(items) => Ok(items),
        other => Err(format!("expected an array, found {other:?}")),
    }
}

fn integer(value: Value) -> Result<u64, String> {
    match value {
        Value::Int(n) => u64::try_from(n).map_err(|_| format!("a negative count {n}")),
        other => text(other)?
            .parse()
            .map_err(|e| format!("expected an integer: {e}")),
    }
}

/// `[id, [field, value, …]]`, or `[id, nil]` for an entry deleted while pending.
fn entry(value: Value) -> Result<Entry, String> {
    let mut parts = array(value)?.into_iter();
    let (Some(id), Some(fields), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err("an entry is not [id, fields]".into());
    };
    let id = text(id)?;
    let fields = match fields {
        Value::Nil => None,
        Value::Map(pairs) => Some(
            pairs
                .into_iter()
                .map(|(f, v)| Ok((bytes(f)?, bytes(v)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => {
            let flat = array(other)?;
            if flat.len() % 2 != 0 {
                return Err(format!("entry {id} has an odd number of field items"));
            }
            let mut pairs = Vec::with_capacity(flat.len() / 2);
            let mut flat = flat.into_iter();
            while let (Some(f), Some(v)) = (flat.next(), flat.next()) {
                pairs.push((bytes(f)?, bytes(v)?));
            }
            Some(pairs)
        }
    };
    Ok(Entry { id, fields })
}

pub(crate) fn entries(value: Value) -> Result<Vec<Entry>, String> {
    match value {
        Value::Nil => Ok(Vec::new()),
        other => array(other)?.into_iter().map(entry).collect(),
    }
}

/// XREADGROUP: each stream's name and entries (nothing when the read timed out).
pub(crate) fn read_reply(value: Value) -> Result<Vec<(String, Vec<Entry>)>, String> {
    match value {
        Value::Nil => Ok(Vec::new()),
        Value::Map(pairs) => pairs
            .into_iter()
            .map(|(name, items)| Ok((text(name)?, entries(items)?)))
            .collect(),
        other => array(other)?
            .into_iter()
            .map(|stream| {
                let mut parts = array(stream)?.into_iter();
                match (parts.next(), parts.next()) {
                    (Some(name), Some(items)) => Ok((text(name)?, entries(items)?)),
                    _ => Err("a stream is not [name, entries]".into()),
                }
            })
            .collect(),
    }
}

/// XAUTOCLAIM: `[cursor, entries, deleted ids]` (Redis 7; 6.2 has no third element). With
/// `JUSTID` the entries are bare ids. Deleted entries have already left the pending list.
pub(crate) fn autoclaim_reply(value: Value, just_ids: bool) -> Result<Claimed, String> {
    let mut parts = array(value)?.into_iter();
    let (Some(cursor), Some(items)) = (parts.next(), parts.next()) else {
        return Err("not [cursor, entries, …]".into());
    };
    let cursor = text(cursor)?;
    let deleted = match parts.next() {
        Some(ids) => array(ids)?.len(),
        None => 0,
    };
    let entries = if just_ids {
        array(items)?
            .into_iter()
            .map(|id| {
                Ok(Entry {
                    id: text(id)?,
                    fields: None,
                })
            })
            .collect::<Result<_, String>>()?
    } else {
        entries(items)?
    };
    Ok(Claimed {
        cursor,
        entries,
        deleted,
    })
}

/// XPENDING's extended form: `[[id, consumer, idle ms, deliveries], …]`.
pub(crate) fn pending_reply(value: Value) -> Result<Vec<PendingEntry>, String> {
    array(value)?
        .into_iter()
        .map(|item| {
            let mut parts = array(item)?.into_iter();
            let (Some(id), Some(consumer), Some(idle), Some(deliveries)) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err("a pending entry is not [id, consumer, idle, deliveries]".into());
            };
            Ok(PendingEntry {
                id: text(id)?,
                consumer: text(consumer)?,
                idle_ms: integer(idle)?,
                deliveries: integer(deliveries)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn reads_entries_including_deleted_ones() {
        let reply = Value::Array(vec![Value::Array(vec![
            s("q-results"),
            Value::Array(vec![
                Value::Array(vec![s("1-0"), Value::Array(vec![s("data"), s("{}")])]),
                Value::Array(vec![s("2-0"), Value::Nil]),
            ]),
        ])]);
        let streams = read_reply(reply).unwrap();
        assert_eq!(streams.len(), 1);
        let (name, entries) = &streams[0];
        assert_eq!(name, "q-results");
        assert_eq!(entries[0].id, "1-0");
        assert_eq!(
            entries[0].fields.as_deref(),
            Some(&[(b"data".to_vec(), b"{}".to_vec())][..])
        );
        assert!(entries[1].fields.is_none());
        assert!(read_reply(Value::Nil).unwrap().is_empty());
        let resp3 = Value::Map(vec![(s("a"), Value::Array(vec![]))]);
        assert_eq!(read_reply(resp3).unwrap()[0].0, "a");
    }

    #[test]
    fn reads_claims_and_pending_lists() {
        let reply = Value::Array(vec![
            s("0-0"),
            Value::Array(vec![s("1-0"), s("3-0")]),
            Value::Array(vec![s("2-0")]),
        ]);
        let claimed = autoclaim_reply(reply, true).unwrap();
        assert_eq!(claimed.cursor, "0-0");
        let ids: Vec<_> = claimed.entries.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["1-0", "3-0"]);
        assert_eq!(claimed.deleted, 1);
        let pending = pending_reply(Value::Array(vec![Value::Array(vec![
            s("1-0"),
            s("dead"),
            Value::Int(1500),
            Value::Int(3),
        ])]))
        .unwrap();
        assert_eq!(pending[0].id, "1-0");
        assert_eq!(pending[0].deliveries, 3);
        assert_eq!(pending[0].consumer, "dead");
        assert_eq!(pending[0].idle_ms, 1500);
    }

    #[test]
    fn refuses_other_shapes() {
        assert!(read_reply(Value::Int(3)).is_err());
        let odd = Value::Array(vec![Value::Array(vec![
            s("q"),
            Value::Array(vec![Value::Array(vec![
                s("1-0"),
                Value::Array(vec![s("f")]),
            ])]),
        ])]);
        assert!(read_reply(odd).is_err());
        assert!(autoclaim_reply(Value::Array(vec![s("0-0")]), false).is_err());
    }
}
