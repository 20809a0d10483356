//! The two Lua scripts of the Redis stream store: a write set, and a bounded read.
//!
//! **Write** (one [`WriteSet`], all-or-nothing): every check — the expected next id, every
//! expected stream meta (compared byte for byte with the stored record; a stream's meta
//! changes with every write that matters to another host, and never returns to an earlier
//! value while producers could have moved: the tail only grows, a close is never undone) —
//! runs before the first write (as does a check that no key it writes holds a value of
//! another type, which would fail a command halfway), and Redis refuses a writing script for
//! lack of memory before it starts, so a refused set changes nothing and an accepted one is
//! applied whole. Redis 7 replicates a script and appends it to the AOF as its effects
//! wrapped in MULTI/EXEC, so a replica or a restarted server sees it whole too. Then, in the order the memory store
//! applies them: dropped streams' record and producer keys are `UNLINK`ed, metas set or
//! deleted, records added, producer states set, the next id set; last, one `PUBLISH` per
//! changed stream tells the other hosts.
//!
//! **Read** (one stream's records in `[from, to)`): the record holding `from` (the greatest
//! member below `from + 1`, kept only if it reaches past `from`), then members from `from + 1`
//! up to `to`, 64 at a time, until the byte budget is spent — so a reply carries at most the
//! budget plus one record, whatever the stream holds. Positions are u64 and may pass 2^53, so
//! they never become Lua numbers: members start with the position as 8 big-endian bytes and
//! are ordered by `ZRANGEBYLEX` (every score is 0), exact for any u64.

use bytes::Bytes;
use liveresults_streams::store::{Record, StoreError, WriteSet};
use redis::{Script, ScriptInvocation, Value};

use super::keys::Keys;

/// Reply tag of an applied write set.
const OK: &[u8] = b"ok";
/// Reply tag of a refused one: `{"conflict", what differed}`.
const CONFLICT: &[u8] = b"conflict";
/// Reply tag of a set refused because a key holds another type: `{"corrupt", which}`.
const CORRUPT: &[u8] = b"corrupt";

/// KEYS: 1 meta hash, 2 next id, then the record and producer keys the sections name by
/// index. ARGV: 1 notice channel, 2 sender token, 3 expected next id (`""`: unchecked), 4 new
/// next id (`""`: unchanged), 5-9 the counts E, M, D, R, P, then E (name, expected meta or
/// `""` for none), M (name, meta or `""` to delete), D (records key index, producers key
/// index), R (records key index, member), P (producers key index, producer id, state).
const WRITE: &str = r#"
local meta, nextkey = KEYS[1], KEYS[2]
local ne, nm, nd, nr, np = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]),
  tonumber(ARGV[8]), tonumber(ARGV[9])
if ARGV[3] ~= '' then
  local stored = redis.call('GET', nextkey) or '0'
  if stored ~= ARGV[3] then return {'conflict', 'the next stream id'} end
end
local a = 10
for i = 1, ne do
  local have = redis.call('HGET', meta, ARGV[a]) or ''
  if have ~= ARGV[a + 1] then return {'conflict', 'stream ' .. ARGV[a]} end
  a = a + 2
end
local metas = a
a = a + 2 * nm
-- A key of another type (not written by this store) would fail its command halfway through
-- the writes below; refuse the whole set before the first write instead.
local function kind(key, want)
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= want then return key .. ' holds a ' .. t .. ', not a ' .. want end
end
local bad = kind(meta, 'hash') or kind(nextkey, 'string')
local r = a + 2 * nd
for i = 1, nr do bad = bad or kind(KEYS[tonumber(ARGV[r + 2 * (i - 1)])], 'zset') end
r = r + 2 * nr
for i = 1, np do bad = bad or kind(KEYS[tonumber(ARGV[r + 3 * (i - 1)])], 'hash') end
if bad then return {'corrupt', bad} end
for i = 1, nd do
  redis.call('UNLINK', KEYS[tonumber(ARGV[a])], KEYS[tonumber(ARGV[a + 1])])
  a = a + 2
end
for i = 0, nm - 1 do
  local name, value = ARGV[metas + 2 * i], ARGV[metas + 2 * i + 1]
  if value == '' then redis.call('HDEL', meta, name) else redis.call('HSET', meta, name, value) end
end
for i = 1, nr do
  redis.call('ZADD', KEYS[tonumber(ARGV[a])], 0, ARGV[a + 1])
  a = a + 2
end
for i = 1, np do
  redis.call('HSET', KEYS[tonumber(ARGV[a])], ARGV[a + 1], ARGV[a + 2])
  a = a + 3
end
if ARGV[4] ~= '' then redis.call('SET', nextkey, ARGV[4]) end
for i = 0, nm - 1 do
  redis.call('PUBLISH', ARGV[1], ARGV[2] .. ':' .. ARGV[metas + 2 * i])
end
return {'ok'}
"#;

/// KEYS: 1 records. ARGV: 1 `from`, 2 `from + 1`, 3 `to` (8 bytes big-endian each), 4 the
/// byte budget. Reply: the members read, in order.
const READ: &str = r#"
local key, budget = KEYS[1], tonumber(ARGV[4])
local BATCH = 64
-- a - b for 8-byte big-endian a >= b, or nil when it is 2^48 or more (past any record).
local function diff(a, b)
  local borrow, out = 0, {}
  for i = 8, 1, -1 do
    local x = string.byte(a, i) - string.byte(b, i) - borrow
    if x < 0 then x = x + 256; borrow = 1 else borrow = 0 end
    out[i] = x
  end
  if out[1] ~= 0 or out[2] ~= 0 then return nil end
  local n = 0
  for i = 3, 8 do n = n * 256 + out[i] end
  return n
end
local out, total = {}, 0
local first = redis.call('ZREVRANGEBYLEX', key, '(' .. ARGV[2], '-', 'LIMIT', 0, 1)[1]
if first and total < budget then
  local gap = diff(ARGV[1], string.sub(first, 1, 8))
  if gap and gap < #first - 8 then
    out[1] = first
    total = #first - 8
  end
end
local cursor, upper = '[' .. ARGV[2], '(' .. ARGV[3]
while total < budget do
  local batch = redis.call('ZRANGEBYLEX', key, cursor, upper, 'LIMIT', 0, BATCH)
  for _, m in ipairs(batch) do
    if total >= budget then break end
    out[#out + 1] = m
    total = total + #m - 8
  end
  if #batch < BATCH then break end
  cursor = '(' .. batch[#batch]
end
return out
"#;

/// The scripts, hashed once per store.
pub(super) struct Scripts {
    write: Script,
    read: Script,
}

impl Scripts {
    pub(super) fn new() -> Scripts {
        Scripts {
            write: Script::new(WRITE),
            read: Script::new(READ),
        }
    }

    /// The invocation applying `set`, with the notice sent as `sender`.
    pub(super) fn write(
        &self,
        keys: &Keys,
        set: &WriteSet,
        channel: &str,
        sender: &str,
    ) -> ScriptInvocation<'_> {
        let mut call = self.write.prepare_invoke();
        call.key(keys.meta()).key(keys.next_id());
        // KEYS 3.. : per-stream keys, each named once.
        let mut named: Vec<String> = Vec::new();
        let mut index = |key: String| -> usize {
            let at = match named.iter().position(|k| *k == key) {
                Some(at) => at,
                None => {
                    named.push(key);
                    named.len() - 1
                }
            };
            at + 3
        };
        let drops: Vec<(usize, usize)> = (set.drop_streams.iter())
            .map(|&id| (index(keys.records(id)), index(keys.producers(id))))
            .collect();
        let records: Vec<usize> = (set.records.iter())
            .map(|(id, _)| index(keys.records(*id)))
            .collect();
        let producers: Vec<usize> = (set.producers.iter())
            .map(|(id, _, _)| index(keys.producers(*id)))
            .collect();
        for key in &named {
            call.key(key);
        }
        let decimal = |n: Option<u64>| n.map_or_else(String::new, |n| n.to_string());
        call.arg(channel)
            .arg(sender)
            .arg(decimal(set.expected_next_id))
            .arg(decimal(set.next_id))
            .arg(set.expected.len())
            .arg(set.metas.len())
            .arg(drops.len())
            .arg(records.len())
            .arg(producers.len());
        for (name, meta) in &set.expected {
            call.arg(name.as_bytes())
                .arg(meta.as_ref().map(|m| m.encode()).unwrap_or_default());
        }
        for (name, meta) in &set.metas {
            call.arg(name.as_bytes())
                .arg(meta.as_ref().map(|m| m.encode()).unwrap_or_default());
        }
        for (records_key, producers_key) in drops {
            call.arg(records_key).arg(producers_key);
        }
        for (key, (_, record)) in records.into_iter().zip(&set.records) {
            let mut member = Vec::with_capacity(8 + record.bytes.len());
            member.extend_from_slice(&record.start.to_be_bytes());
            member.extend_from_slice(&record.bytes);
            call.arg(key).arg(member);
        }
        for (key, (_, producer, state)) in producers.into_iter().zip(&set.producers) {
            call.arg(key).arg(producer.as_bytes()).arg(state.encode());
        }
        call
    }

    /// The invocation reading `[from, to)` of the records at `key`, within `budget` bytes.
    pub(super) fn read(
        &self,
        key: &str,
        from: u64,
        to: u64,
        budget: usize,
    ) -> ScriptInvocation<'_> {
        let mut call = self.read.prepare_invoke();
        call.key(key)
            .arg(&from.to_be_bytes()[..])
            .arg(&from.saturating_add(1).to_be_bytes()[..])
            .arg(&to.to_be_bytes()[..])
            .arg(budget);
        call
    }
}

/// The write script's reply: `Ok(())`, or the conflict it reported.
pub(super) fn write_reply(value: &Value) -> Result<(), StoreError> {
    let unexpected = || {
        StoreError::Backend(format!(
            "unexpected reply from the stream write script: {value:?}"
        ))
    };
    let Value::Array(items) = value else {
        return Err(unexpected());
    };
    match items.as_slice() {
        [Value::BulkString(tag)] if tag == OK => Ok(()),
        [Value::BulkString(tag), Value::BulkString(what)] if tag == CONFLICT => Err(
            StoreError::Conflict(String::from_utf8_lossy(what).into_owned()),
        ),
        [Value::BulkString(tag), Value::BulkString(what)] if tag == CORRUPT => Err(
            StoreError::Corrupt(String::from_utf8_lossy(what).into_owned()),
        ),
        _ => Err(unexpected()),
    }
}

/// The read script's reply as records.
pub(super) fn read_reply(value: Value) -> Result<Vec<Record>, StoreError> {
    let Value::Array(items) = value else {
        return Err(StoreError::Backend(format!(
            "unexpected reply from the stream read script: {value:?}"
        )));
    };
    items.into_iter().map(record).collect()
}

/// A stored member: 8-byte big-endian start, then the record's bytes.
fn record(value: Value) -> Result<Record, StoreError> {
    let Value::BulkString(member) = value else {
        return Err(StoreError::Corrupt(format!("a stream record is {value:?}")));
    };
    let start = member
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StoreError::Corrupt(format!("a stream record of {} bytes", member.len())))?;
    Ok(Record {
        start,
        bytes: Bytes::from(member).slice(8..),
    })
}
