//! The stream commands one consumer sends, each with its arguments in one place and its reply
//! read by the `reply` module. Errors carry the command and the stream, for the source to
//! classify (retry the transient ones, recreate a vanished group, stop on the rest).

use std::sync::LazyLock;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{Script, Value};

use crate::config::millis;
use crate::error::StreamSourceError;
use crate::reply::{self, Claimed, Entry, PendingEntry};

/// A consumer's connection and identity.
pub(crate) struct Commands {
    pub conn: ConnectionManager,
    pub group: String,
    pub consumer: String,
}

/// Most ids one XACK carries.
const ACK_CHUNK: usize = 1024;

fn redis_error(
    command: &'static str,
    stream: &str,
) -> impl FnOnce(redis::RedisError) -> StreamSourceError {
    let stream = stream.to_owned();
    move |source| StreamSourceError::Redis {
        command,
        stream,
        source,
    }
}

fn reply_error(command: &'static str) -> impl FnOnce(String) -> StreamSourceError {
    move |detail| StreamSourceError::Reply { command, detail }
}

impl Commands {
    /// `XGROUP CREATE <stream> <group> 0 MKSTREAM`: the group starts at the beginning of the
    /// stream, so a new group reads what was published before it existed (events already
    /// committed are acknowledged without being submitted again). An existing group is kept.
    pub async fn create_group(&mut self, stream: &str) -> Result<(), StreamSourceError> {
        let created: Result<Value, _> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(stream)
            .arg(&self.group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut self.conn)
            .await;
        match created {
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            other => other
                .map(drop)
                .map_err(redis_error("XGROUP CREATE", stream)),
        }
    }

    /// `XREADGROUP … COUNT <count> [BLOCK <ms>] STREAMS <streams…> <ids…>`: with id `>` new
    /// entries, with an id of a pending entry this consumer's own pending entries after it.
    pub async fn read(
        &mut self,
        streams: &[&str],
        ids: &[&str],
        count: usize,
        block: Option<Duration>,
    ) -> Result<Vec<(String, Vec<Entry>)>, StreamSourceError> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(count);
        if let Some(block) = block {
            cmd.arg("BLOCK").arg(millis(block));
        }
        cmd.arg("STREAMS").arg(streams).arg(ids);
        let value: Value = cmd
            .query_async(&mut self.conn)
            .await
            .map_err(redis_error("XREADGROUP", &streams.join(", ")))?;
        reply::read_reply(value).map_err(reply_error("XREADGROUP"))
    }

    /// `XAUTOCLAIM <stream> <group> <consumer> <min idle> <cursor> COUNT <count> [JUSTID]`:
    /// takes over entries pending with any consumer for at least `min_idle`.
    pub async fn autoclaim(
        &mut self,
        stream: &str,
        min_idle: Duration,
        cursor: &str,
        count: usize,
        just_ids: bool,
    ) -> Result<Claimed, StreamSourceError> {
        let mut cmd = redis::cmd("XAUTOCLAIM");
        cmd.arg(stream)
            .arg(&self.group)
            .arg(&self.consumer)
            .arg(millis(min_idle))
            .arg(cursor)
            .arg("COUNT")
            .arg(count);
        if just_ids {
            cmd.arg("JUSTID");
        }
        let value: Value = cmd
            .query_async(&mut self.conn)
            .await
            .map_err(redis_error("XAUTOCLAIM", stream))?;
        reply::autoclaim_reply(value, just_ids).map_err(reply_error("XAUTOCLAIM"))
    }

    /// `XPENDING <stream> <group> - + <count>`: the oldest pending entries, whoever holds them.
    pub async fn oldest_pending(
        &mut self,
        stream: &str,
        count: usize,
    ) -> Result<Vec<PendingEntry>, StreamSourceError> {
        let value: Value = redis::cmd("XPENDING")
            .arg(stream)
            .arg(&self.group)
            .arg("-")
            .arg("+")
            .arg(count)
            .query_async(&mut self.conn)
            .await
            .map_err(redis_error("XPENDING", stream))?;
        reply::pending_reply(value).map_err(reply_error("XPENDING"))
    }

    /// `XPENDING <stream> <group> <id> <id> 1`: the entry `id` if it is pending (with its
    /// delivery count).
    pub async fn pending_entry(
        &mut self,
        stream: &str,
        id: &str,
    ) -> Result<Option<PendingEntry>, StreamSourceError> {
        let value: Value = redis::cmd("XPENDING")
            .arg(stream)
            .arg(&self.group)
            .arg(id)
            .arg(id)
            .arg(1)
            .query_async(&mut self.conn)
            .await
            .map_err(redis_error("XPENDING", stream))?;
        let pending = reply::pending_reply(value).map_err(reply_error("XPENDING"))?;
        Ok(pending.into_iter().find(|p| p.id == id))
    }

    /// `XRANGE <stream> <id> <id>`: the entry `id`, `None` when it was deleted (or trimmed).
    pub async fn entry(
        &mut self,
        stream: &str,
        id: &str,
    ) -> Result<Option<Entry>, StreamSourceError> {
        let value: Value = redis::cmd("XRANGE")
            .arg(stream)
            .arg(id)
            .arg(id)
            .query_async(&mut self.conn)
            .await
            .map_err(redis_error("XRANGE", stream))?;
        let entries = reply::entries(value).map_err(reply_error("XRANGE"))?;
        Ok(entries.into_iter().find(|e| e.id == id))
    }

    /// `XACK <stream> <group> <ids…>`, in chunks. Acknowledging an id twice is harmless.
    pub async fn ack(&mut self, stream: &str, ids: &[String]) -> Result<(), StreamSourceError> {
        for chunk in ids.chunks(ACK_CHUNK) {
            let _: Value = redis::cmd("XACK")
                .arg(stream)
                .arg(&self.group)
                .arg(chunk)
                .query_async(&mut self.conn)
                .await
                .map_err(redis_error("XACK", stream))?;
        }
        Ok(())
    }

    /// Moves an entry to `dead_letter`: the entry (its fields after `deadletter-*` fields
    /// saying where it came from and why) is added there, and the original acknowledged only
    /// once that succeeded, so the entry is either moved or still pending, never lost.
    ///
    /// Both happen in one script ([`DEAD_LETTER`]): an error of the `XADD` (the dead-letter
    /// key holds something that is not a stream, memory is full) aborts the script before the
    /// `XACK`. A MULTI/EXEC would not do: Redis runs every queued command even when one fails
    /// at EXEC time, so the `XACK` would drop an entry the `XADD` never stored. An entry with
    /// more fields than a script can take as arguments is moved by an `XADD` and then, only if
    /// it succeeded, an `XACK`: a crash between them leaves it in both places (it is
    /// dead-lettered again when redelivered), still never lost.
    /// (In a Redis Cluster the two streams would have to share a hash slot for the script.)
    pub async fn dead_letter(
        &mut self,
        stream: &str,
        dead_letter: &str,
        id: &str,
        fields: &[(Vec<u8>, Vec<u8>)],
        reason: &str,
    ) -> Result<(), StreamSourceError> {
        let origin: [(&str, &str); 5] = [
            ("deadletter-stream", stream),
            ("deadletter-id", id),
            ("deadletter-reason", reason),
            ("deadletter-group", &self.group),
            ("deadletter-consumer", &self.consumer),
        ];
        if fields.len() <= MAX_SCRIPT_FIELDS {
            let mut invocation = DEAD_LETTER_SCRIPT.key(stream);
            invocation.key(dead_letter).arg(&self.group).arg(id);
            for (field, value) in origin {
                invocation.arg(field).arg(value);
            }
            for (field, value) in fields {
                invocation.arg(field.as_slice()).arg(value.as_slice());
            }
            let _: Value = invocation
                .invoke_async(&mut self.conn)
                .await
                .map_err(redis_error("XADD+XACK (dead letter)", stream))?;
            return Ok(());
        }
        let mut xadd = redis::cmd("XADD");
        xadd.arg(dead_letter).arg("*");
        for (field, value) in origin {
            xadd.arg(field).arg(value);
        }
        for (field, value) in fields {
            xadd.arg(field.as_slice()).arg(value.as_slice());
        }
        let _: Value = xadd
            .query_async(&mut self.conn)
            .await
            .map_err(redis_error("XADD (dead letter)", stream))?;
        self.ack(stream, &[id.to_owned()]).await
    }
}

/// Adds an entry to the dead-letter stream, then acknowledges the original; an error of the
/// `XADD` ends the script before the `XACK`.
///
/// KEYS: 1 the stream, 2 its dead-letter stream. ARGV: 1 group, 2 id, 3… fields and values.
const DEAD_LETTER: &str = r"
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3))
return redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
";

static DEAD_LETTER_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(DEAD_LETTER));

/// Most fields of an entry moved by the script: Lua's `unpack` fails past about 8000 values
/// (its C stack), and each field is two.
const MAX_SCRIPT_FIELDS: usize = 3000;
