//! The Lua scripts that change a query: a commit, a clear and a removal. Each runs atomically
//! on the server (Redis executes one script at a time) and touches only keys of one query, all
//! named in `KEYS`, so it works in a Redis Cluster slot too. The commit, clear and removal
//! scripts also `PUBLISH` a commit notice (see `store::notices`) as their last step; a
//! channel is not a key, and a cluster forwards a `PUBLISH` to every node.
//!
//! Why all-or-nothing holds although Redis does not roll a script back: every check that can
//! refuse a commit (a fencing token that is not the live lease's, sequence regression, a
//! corrupt meta record, counts past 2^53) runs before the first write, and Redis refuses a
//! writing script for lack of memory before it starts (`OOM command not allowed`). The only
//! failures left between writes are ones no store this crate wrote can produce (a foreign
//! value of the wrong type under one of its keys). Redis 7 replicates and appends scripts to
//! the AOF as their effects wrapped in MULTI/EXEC, so replicas and a restarted server see a
//! commit whole or not at all.
//!
//! Numbers: Lua 5.1 has only doubles, exact up to 2^53. Sequences are u64 and may reach
//! `u64::MAX`, so they never become Lua numbers: they travel and are stored as 8-byte
//! big-endian strings and are compared byte by byte (not with `<`, which uses the server's
//! locale collation). Counts, byte totals, versions and epochs are Lua numbers; the scripts
//! refuse (as corrupt) any that would pass 2^53, and write them with `%.0f` so they are stored
//! as plain decimal integers.

use redis::Script;

/// Reply tag of a successful script.
pub(crate) const OK: &[u8] = b"ok";
/// Reply tag of a refused sequence: `{"regression", committed or ""}`.
pub(crate) const REGRESSION: &[u8] = b"regression";
/// Reply tag of a meta record the script cannot use: `{"corrupt", detail}`.
pub(crate) const CORRUPT: &[u8] = b"corrupt";
/// Reply tag of a clear of a query the store does not know.
pub(crate) const UNKNOWN: &[u8] = b"unknown";
/// Reply tag of a commit, clear or removal refused by its fencing token: `{"fenced", live
/// holder or "", live token or ""}`.
pub(crate) const FENCED: &[u8] = b"fenced";

/// A commit.
///
/// KEYS: 1 meta, 2 rows, 3 outbox, 4 log, 5 snapshot readers, 6 lease.
/// ARGV: 1 `"1"` for a sequenced commit else `"0"`, 2 first sequence and 3 last sequence
/// (8-byte big-endian), 4 payload, 5/6 outbox max entries/bytes, 7/8 change-log max
/// entries/bytes, 9 number of upserts U, 10 the commit's fencing token in decimal (`""` for
/// none), 11 the notice channel, 12 the query id, then U (signature, row) pairs, then the
/// signatures to delete. Signatures are distinct (the client applies last-write-wins first),
/// so one multi-field `HSET` returns exactly the rows inserted and one `HDEL` the rows deleted.
///
/// The fence is checked first, before anything else is read or written (the rule of
/// `liveresults_core::lease::check_fence`): the token must equal the live lease's, or both
/// be absent. An expired lease is an absent key (Redis expires it by its own clock). Tokens
/// are canonical decimal strings on both sides, so string equality is number equality. A
/// commit that went through publishes its notice (`notices` module) in the same atomic step.
///
/// Reply: `{"ok", row count, inserted, deleted, sequence or ""}`, or a refusal tag.
const COMMIT: &str = r#"
local meta, rows, outbox, log, readers = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local LIMIT = 9007199254740992
-- Arguments per HSET/HDEL call: Lua's unpack is limited to ~8,000 values, and one call per
-- 1,000 rows is far cheaper than one per row. Even, so (signature, row) pairs stay whole.
local CHUNK = 2000
local function before(a, b)
  for i = 1, 8 do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return false
end
local function int(s)
  if not s then return 0 end
  local n = tonumber(s)
  if not n or n < 0 or n >= LIMIT or n ~= math.floor(n) then return nil end
  return n
end
local function fmt(n) return string.format('%.0f', n) end
local live = redis.call('HMGET', KEYS[6], 'holder', 'token')
if (live[2] or '') ~= ARGV[10] then return {'fenced', live[1] or '', live[2] or ''} end
local m = redis.call('HMGET', meta, 'seq', 'rows', 'ver', 'obytes', 'lbytes', 'epoch')
local seq, count, ver, obytes, lbytes, epoch = m[1], int(m[2]), int(m[3]), int(m[4]), int(m[5]), m[6] or '0'
if seq and #seq ~= 8 then return {'corrupt', 'stored sequence is not 8 bytes'} end
if not (count and ver and obytes and lbytes and int(epoch)) then
  return {'corrupt', 'a stored number is not an integer below 2^53'}
end
-- The count is exact by construction (HSET/HDEL report what they changed); checking it
-- against HLEN (O(1)) before writing anything catches a count someone else changed, and
-- keeps the arithmetic below from ever going negative.
local held = redis.call('HLEN', rows)
if held ~= count then
  return {'corrupt', 'row count ' .. fmt(count) .. ' but ' .. fmt(held) .. ' rows stored'}
end
local sequenced = ARGV[1] == '1'
if sequenced and (before(ARGV[3], ARGV[2]) or (seq and not before(seq, ARGV[2]))) then
  return {'regression', seq or ''}
end
local upserts = tonumber(ARGV[9])
if count + upserts >= LIMIT or ver + 1 >= LIMIT then
  return {'corrupt', 'row count or version would pass 2^53'}
end
local first_up, last_up = 13, 12 + 2 * upserts
local inserted, deleted = 0, 0
local i = first_up
while i <= last_up do
  local j = math.min(i + CHUNK - 1, last_up)
  inserted = inserted + redis.call('HSET', rows, unpack(ARGV, i, j))
  i = j + 1
end
i = last_up + 1
while i <= #ARGV do
  local j = math.min(i + CHUNK - 1, #ARGV)
  deleted = deleted + redis.call('HDEL', rows, unpack(ARGV, i, j))
  i = j + 1
end
count = count + inserted - deleted
ver = ver + 1
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
if redis.call('ZCOUNT', readers, '(' .. fmt(now), '+inf') > 0 then
  -- A snapshot is being read: log this commit's mutations so the reader can replay them.
  local parts = {fmt(ver), ':'}
  for k = first_up, last_up, 2 do
    local n = #ARGV[k + 1]
    parts[#parts + 1] = 'u' .. ARGV[k] .. string.char(math.floor(n / 16777216) % 256,
      math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256) .. ARGV[k + 1]
  end
  for k = last_up + 1, #ARGV do parts[#parts + 1] = 'd' .. ARGV[k] end
  local entry = table.concat(parts)
  redis.call('ZADD', log, ver, entry)
  lbytes = lbytes + #entry
  local n = redis.call('ZCARD', log)
  while n > 1 and (n > tonumber(ARGV[7]) or lbytes > tonumber(ARGV[8])) do
    local popped = redis.call('ZPOPMIN', log)
    lbytes = lbytes - #popped[1]
    n = n - 1
  end
elseif lbytes > 0 then
  -- No reader left: drop the log (freed in the background) and readers that expired
  -- without signing off.
  redis.call('UNLINK', log)
  redis.call('ZREMRANGEBYSCORE', readers, '-inf', fmt(now))
  lbytes = 0
end
if sequenced then
  redis.call('ZADD', outbox, 0, ARGV[3] .. ARGV[2] .. ARGV[4])
  obytes = obytes + #ARGV[4]
  local n = redis.call('ZCARD', outbox)
  local evicted = nil
  -- All scores are 0, so ZPOPMIN takes the lexicographically smallest: the oldest sequence.
  -- The new entry has the largest sequence and always stays.
  while n > 1 and (n > tonumber(ARGV[5]) or obytes > tonumber(ARGV[6])) do
    local popped = redis.call('ZPOPMIN', outbox)
    obytes = obytes - (#popped[1] - 16)
    evicted = string.sub(popped[1], 1, 8)
    n = n - 1
  end
  seq = ARGV[3]
  redis.call('HSET', meta, 'seq', seq)
  if evicted then redis.call('HSET', meta, 'evicted', evicted) end
end
redis.call('HSET', meta, 'rows', fmt(count), 'ver', fmt(ver), 'obytes', fmt(obytes),
  'lbytes', fmt(lbytes), 'epoch', epoch)
local hex = ''
if seq then hex = string.format(string.rep('%02x', 8), string.byte(seq, 1, 8)) end
redis.call('PUBLISH', ARGV[11], epoch .. ':' .. hex .. ':' .. ARGV[12])
return {'ok', count, inserted, deleted, seq or ''}
"#;

/// A clear.
///
/// KEYS: 1 meta, 2 rows, 3 outbox, 4 log, 5 checkpoints, 6 trash set, 7..10 the names rows,
/// outbox, log and checkpoints are renamed to, 11 lease. ARGV: 1 the notice channel, 2 the
/// query id, 3 the clear's fencing token in decimal (`""` for none). A clear that happened
/// publishes its notice (new epoch, no sequence). It reads the lease but never changes it or
/// the fence counter.
///
/// The fence is checked first, exactly as the commit script checks it (see [`COMMIT`]): in the
/// same atomic step as the clear, so a holder whose lease ran out (or an offline tool, with no
/// token, while a lease is live) cannot clear the query under the live owner.
///
/// Renames are O(1) whatever the size of the key; the caller unlinks the renamed keys after
/// the script (UNLINK frees them on a background thread). The trash set remembers them so a
/// caller that dies in between leaves nothing behind for good: the next clear unlinks them.
///
/// Reply: `{"ok", new epoch, every trash key pending}`, `{"unknown"}`, `{"fenced", …}` or
/// `{"corrupt", …}`. A meta hash without `rows` is a removed query's marker (see [`REMOVE`]):
/// unknown too.
const CLEAR: &str = r#"
local LIMIT = 9007199254740992
local live = redis.call('HMGET', KEYS[11], 'holder', 'token')
if (live[2] or '') ~= ARGV[3] then return {'fenced', live[1] or '', live[2] or ''} end
if redis.call('HEXISTS', KEYS[1], 'rows') == 0 then return {'unknown'} end
local raw = redis.call('HGET', KEYS[1], 'epoch') or '0'
local epoch = tonumber(raw)
if not epoch or epoch < 0 or epoch ~= math.floor(epoch) or epoch + 1 >= LIMIT then
  return {'corrupt', 'epoch ' .. raw .. ' cannot be incremented'}
end
local e = string.format('%.0f', epoch + 1)
for k = 2, 5 do
  if redis.call('EXISTS', KEYS[k]) == 1 then
    redis.call('RENAME', KEYS[k], KEYS[k + 5])
    redis.call('SADD', KEYS[6], KEYS[k + 5])
  end
end
redis.call('HDEL', KEYS[1], 'seq', 'evicted')
redis.call('HSET', KEYS[1], 'epoch', e, 'rows', '0', 'obytes', '0', 'lbytes', '0')
redis.call('PUBLISH', ARGV[1], e .. '::' .. ARGV[2])
return {'ok', e, redis.call('SMEMBERS', KEYS[6])}
"#;

/// A removal: the query's keys go the way a clear sends them (renamed to trash keys the caller
/// unlinks), and the meta hash becomes the query's **removed marker**: every field that
/// describes the query (`seq`, `rows`, `obytes`, `lbytes`, `evicted`) is deleted, `epoch`
/// becomes the epoch after the removed query's last one, and `ver` (the change log's clock)
/// stays, as do fields this script does not know. Every commit writes `rows`, so a hash
/// without it reads as an unknown query everywhere, and the next commit — which takes the
/// epoch from the hash — starts the re-created query at an epoch the removed one never used:
/// a change-feed offset taken before the removal cannot look valid again.
///
/// KEYS: 1 meta, 2 rows, 3 outbox, 4 log, 5 checkpoints, 6 snapshot readers, 7 trash set,
/// 8..12 the names rows, outbox, log, checkpoints and snapshot readers are renamed to, 13
/// lease. ARGV: 1 the notice channel, 2 the query id, 3 the removal's fencing token in decimal
/// (`""` for none). The fence is checked first, as in [`CLEAR`]. Removing a known query
/// publishes a notice of what the query now reads as (epoch 0, no sequence); the lease and the
/// fence counter are never changed, so fencing tokens keep growing if the id is used again.
///
/// For a query without `rows` (unknown, or removed already) only checkpoints saved for it and
/// readers' registrations are renamed away, and the hash is left as it is.
///
/// Reply: `{"ok" or "unknown", every trash key pending}`, `{"fenced", …}` or
/// `{"corrupt", …}`.
const REMOVE: &str = r#"
local LIMIT = 9007199254740992
local live = redis.call('HMGET', KEYS[13], 'holder', 'token')
if (live[2] or '') ~= ARGV[3] then return {'fenced', live[1] or '', live[2] or ''} end
local known = redis.call('HEXISTS', KEYS[1], 'rows') == 1
local next_epoch = nil
if known then
  local raw = redis.call('HGET', KEYS[1], 'epoch') or '0'
  local epoch = tonumber(raw)
  if not epoch or epoch < 0 or epoch ~= math.floor(epoch) or epoch + 1 >= LIMIT then
    return {'corrupt', 'epoch ' .. raw .. ' cannot be incremented'}
  end
  next_epoch = string.format('%.0f', epoch + 1)
end
for k = 2, 6 do
  if redis.call('EXISTS', KEYS[k]) == 1 then
    redis.call('RENAME', KEYS[k], KEYS[k + 6])
    redis.call('SADD', KEYS[7], KEYS[k + 6])
  end
end
if known then
  redis.call('HDEL', KEYS[1], 'seq', 'rows', 'obytes', 'lbytes', 'evicted')
  redis.call('HSET', KEYS[1], 'epoch', next_epoch)
  redis.call('PUBLISH', ARGV[1], '0::' .. ARGV[2])
end
return {known and 'ok' or 'unknown', redis.call('SMEMBERS', KEYS[7])}
"#;

/// A snapshot reader signs on: registers `token` until server time + `ttl` ms and reads the
/// meta hash in the same atomic step, so every commit after the read sees the reader.
///
/// KEYS: 1 snapshot readers, 2 meta. ARGV: 1 token, 2 ttl in ms, 3.. the meta fields to read.
/// Reply: the fields' values. The deadline uses the server's clock (`TIME`), the one commits
/// compare it with, so client clocks never matter.
const SNAPSHOT_BEGIN: &str = r#"
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
redis.call('ZADD', KEYS[1], string.format('%.0f', now + tonumber(ARGV[2])), ARGV[1])
return redis.call('HMGET', KEYS[2], unpack(ARGV, 3))
"#;

/// A snapshot reader extends its registration; `XX` never re-registers a reader whose entry
/// expired (commits may have skipped logging meanwhile: the reader must start over, and the
/// missing versions in the log tell it so). Reply: 1 when extended, 0 otherwise.
///
/// KEYS: 1 snapshot readers. ARGV: 1 token, 2 ttl in ms.
const SNAPSHOT_RENEW: &str = r#"
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local deadline = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not deadline or tonumber(deadline) <= now then return 0 end
redis.call('ZADD', KEYS[1], 'XX', string.format('%.0f', now + tonumber(ARGV[2])), ARGV[1])
return 1
"#;

/// The scripts, hashed once; `invoke_async` sends EVALSHA and falls back to loading the
/// script when the server answers NOSCRIPT (after a restart or SCRIPT FLUSH).
#[derive(Debug)]
pub(crate) struct Scripts {
    pub(crate) commit: Script,
    pub(crate) clear: Script,
    pub(crate) remove: Script,
    pub(crate) snapshot_begin: Script,
    pub(crate) snapshot_renew: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Scripts {
            commit: Script::new(COMMIT),
            clear: Script::new(CLEAR),
            remove: Script::new(REMOVE),
            snapshot_begin: Script::new(SNAPSHOT_BEGIN),
            snapshot_renew: Script::new(SNAPSHOT_RENEW),
        }
    }
}
