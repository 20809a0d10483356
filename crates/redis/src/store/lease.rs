//! Leases with fencing tokens (the rules are `liveresults_core::lease`'s).
//!
//! A query's lease is a hash `<ns>:{<id>}:lease` (holder, address, token) with a `PEXPIRE` of
//! the lease's ttl, so expiry runs on the server's clock — the one the commit script checks
//! it against — and never on the hosts' clocks. Tokens come from `INCR` of the query's fence
//! counter `<ns>:{<id>}:fence`, which no clear or removal touches, so a token is never issued
//! twice for one query id. Acquire, renew and release are small scripts, each atomic; the
//! commit script checks the fence against the same hash before it writes anything.
//!
//! Tokens are Lua numbers inside the scripts, exact below 2^53: the acquire script refuses (as
//! corrupt) a counter past that, which no real use reaches. They are stored and compared as
//! canonical decimal strings, so the commit script's check is a string comparison.
//!
//! With replicas, Redis 7 replicates a script's `PEXPIRE` as an absolute `PEXPIREAT`, so a
//! promoted replica expires the lease at the same moment (up to the two servers' clock
//! difference).

use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use liveresults_core::lease::{LeaseClaim, LeaseHolder, LeaseOutcome, Leases};
use liveresults_core::StoreError;
use redis::Script;

use super::RedisStore;
use crate::error::{from_redis, permanent};

/// Takes the lease when it is absent (expired keys are absent) or held by the same holder.
///
/// KEYS: 1 lease, 2 fence counter. ARGV: 1 holder, 2 address, 3 ttl in ms.
/// Reply (all strings): `{"ok", token}`, `{"held", holder, address, token, ms left}` or
/// `{"corrupt", detail}`.
const ACQUIRE: &str = r#"
local live = redis.call('HMGET', KEYS[1], 'holder', 'address', 'token')
if live[1] and live[1] ~= ARGV[1] then
  local left = redis.call('PTTL', KEYS[1])
  if left < 0 then left = 0 end
  return {'held', live[1], live[2] or '', live[3] or '', string.format('%.0f', left)}
end
local token = redis.call('INCR', KEYS[2])
if token >= 9007199254740992 then
  return {'corrupt', 'fencing token counter passed 2^53'}
end
token = string.format('%.0f', token)
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'holder', ARGV[1], 'address', ARGV[2], 'token', token)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {'ok', token}
"#;

/// Extends the live lease with the given token. KEYS: 1 lease. ARGV: 1 token, 2 ttl in ms.
/// Reply: 1 when extended, 0 when no live lease has that token.
const RENEW: &str = r#"
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"#;

/// Deletes the live lease if it has the given token. KEYS: 1 lease. ARGV: 1 token.
/// Reply: 1 when released, 0 otherwise.
const RELEASE: &str = r#"
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
"#;

static ACQUIRE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(ACQUIRE));
static RENEW_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(RENEW));
static RELEASE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(RELEASE));

/// The longest ttl passed to the server: 100 years, far below where `PEXPIRE` overflows.
const MAX_TTL_MS: u128 = 100 * 365 * 24 * 3600 * 1000;

/// A ttl in whole milliseconds, at least 1 (`PEXPIRE 0` would delete the lease at once).
fn ttl_ms(ttl: Duration) -> u64 {
    // Clamped below u64::MAX, so the conversion cannot fail.
    u64::try_from(ttl.as_millis().clamp(1, MAX_TTL_MS)).unwrap_or(u64::MAX)
}

fn corrupt(query_id: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::corrupt(format!("lease of query {query_id:?}"), detail)
}

/// A stored string field of the lease.
fn text(query_id: &str, field: &str, raw: Vec<u8>) -> Result<String, StoreError> {
    String::from_utf8(raw).map_err(|_| corrupt(query_id, format_args!("{field} is not UTF-8")))
}

/// A stored decimal number (token or milliseconds).
fn number(query_id: &str, field: &str, raw: &[u8]) -> Result<u64, StoreError> {
    std::str::from_utf8(raw)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            corrupt(
                query_id,
                format_args!("{field} {:?} is not a number", String::from_utf8_lossy(raw)),
            )
        })
}

/// Decodes the acquire script's reply.
fn acquired(query_id: &str, reply: Vec<Vec<u8>>) -> Result<LeaseOutcome, StoreError> {
    let mut parts = reply.into_iter();
    let tag = parts.next().unwrap_or_default();
    let rest: Vec<Vec<u8>> = parts.collect();
    match (tag.as_slice(), <[Vec<u8>; 4]>::try_from(rest)) {
        (b"held", Ok([holder, address, token, left])) => Ok(LeaseOutcome::Held(LeaseHolder {
            holder: text(query_id, "holder", holder)?,
            address: text(query_id, "address", address)?,
            token: number(query_id, "token", &token)?,
            remaining: Duration::from_millis(number(query_id, "ttl", &left)?),
        })),
        (b"ok", Err(rest)) if rest.len() == 1 => Ok(LeaseOutcome::Granted {
            token: number(query_id, "token", &rest[0])?,
        }),
        (b"corrupt", Err(rest)) if rest.len() == 1 => {
            Err(corrupt(query_id, String::from_utf8_lossy(&rest[0])))
        }
        (tag, _) => Err(permanent(format!(
            "unexpected reply from the lease acquire script for query {query_id:?}: tag {:?}",
            String::from_utf8_lossy(tag)
        ))),
    }
}

#[async_trait]
impl Leases for RedisStore {
    async fn acquire(
        &self,
        query_id: &str,
        claim: LeaseClaim<'_>,
    ) -> Result<LeaseOutcome, StoreError> {
        let keys = self.keys(query_id)?;
        let mut con = self.conn()?;
        let reply: Vec<Vec<u8>> = ACQUIRE_SCRIPT
            .key(keys.lease())
            .key(keys.fence())
            .arg(claim.holder)
            .arg(claim.address)
            .arg(ttl_ms(claim.ttl))
            .invoke_async(&mut con)
            .await
            .map_err(from_redis)?;
        acquired(query_id, reply)
    }

    async fn renew(&self, query_id: &str, token: u64, ttl: Duration) -> Result<bool, StoreError> {
        let keys = self.keys(query_id)?;
        let mut con = self.conn()?;
        let renewed: i64 = RENEW_SCRIPT
            .key(keys.lease())
            .arg(token.to_string())
            .arg(ttl_ms(ttl))
            .invoke_async(&mut con)
            .await
            .map_err(from_redis)?;
        Ok(renewed == 1)
    }

    async fn release(&self, query_id: &str, token: u64) -> Result<(), StoreError> {
        let keys = self.keys(query_id)?;
        let mut con = self.conn()?;
        let _: i64 = RELEASE_SCRIPT
            .key(keys.lease())
            .arg(token.to_string())
            .invoke_async(&mut con)
            .await
            .map_err(from_redis)?;
        Ok(())
    }

    async fn holder(&self, query_id: &str) -> Result<Option<LeaseHolder>, StoreError> {
        let keys = self.keys(query_id)?;
        let mut con = self.conn()?;
        // One MULTI/EXEC: the fields and the time left from the same moment.
        let ((holder, address, token), left): (
            (Option<Vec<u8>>, Option<Vec<u8>>, Option<Vec<u8>>),
            i64,
        ) = redis::pipe()
            .atomic()
            .cmd("HMGET")
            .arg(keys.lease())
            .arg(&["holder", "address", "token"][..])
            .cmd("PTTL")
            .arg(keys.lease())
            .query_async(&mut con)
            .await
            .map_err(from_redis)?;
        let (Some(holder), Some(token)) = (holder, token) else {
            return Ok(None);
        };
        Ok(Some(LeaseHolder {
            holder: text(query_id, "holder", holder)?,
            address: text(query_id, "address", address.unwrap_or_default())?,
            token: number(query_id, "token", &token)?,
            // -1 (no expiry) cannot happen for a lease this store wrote; read it as none left.
            remaining: Duration::from_millis(u64::try_from(left).unwrap_or(0)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(parts: &[&[u8]]) -> Vec<Vec<u8>> {
        parts.iter().map(|p| p.to_vec()).collect()
    }

    #[test]
    fn acquire_replies_decode() {
        assert_eq!(
            acquired("q", reply(&[b"ok", b"12"])).unwrap(),
            LeaseOutcome::Granted { token: 12 }
        );
        let held = acquired("q", reply(&[b"held", b"a", b"http://a", b"3", b"1500"])).unwrap();
        assert_eq!(
            held,
            LeaseOutcome::Held(LeaseHolder {
                holder: "a".into(),
                address: "http://a".into(),
                token: 3,
                remaining: Duration::from_millis(1500),
            })
        );
        assert!(matches!(
            acquired("q", reply(&[b"corrupt", b"why"])),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(matches!(
            acquired("q", reply(&[b"ok", b"x"])),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(acquired("q", reply(&[b"ok"])).is_err());
        assert!(acquired("q", reply(&[])).is_err());
    }

    #[test]
    fn ttls_are_whole_positive_milliseconds() {
        assert_eq!(ttl_ms(Duration::ZERO), 1);
        assert_eq!(ttl_ms(Duration::from_micros(1500)), 1);
        assert_eq!(ttl_ms(Duration::from_secs(3)), 3000);
        assert_eq!(ttl_ms(Duration::MAX), MAX_TTL_MS as u64);
    }
}
