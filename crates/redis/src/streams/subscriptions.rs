//! Subscriptions (the Durable Streams subscription API) on Redis: one hash of records by id
//! and the signing key's seed, under the streams' hash tag (the `keys` module), so every
//! `serve --redis` host sees the same subscriptions and signs with the same key.
//!
//! A record changes by compare-and-swap: one script compares the stored record with the one
//! the host read and writes only if they are equal, so two hosts deciding about one
//! subscription at once (a claim on each, a callback racing a lease expiry) never both win.
//! The seed is written with `SET NX`: the first host to start creates it, the others read it.
//! Commands: `HGETALL`, `HGET`, `SET NX`, `GET`, and in the script `HGET`, `HSET`, `HDEL`.

use async_trait::async_trait;
use liveresults_streams::store::StoreError;
use liveresults_streams::subscription::store::seed_of;
use liveresults_streams::subscription::SubscriptionStore;
use redis::Script;

use super::{backend, RedisStreamStore};

/// Puts ARGV[4] (ARGV[3] = "1") or deletes (ARGV[3] = "0") field ARGV[1] of KEYS[1] if its
/// value is ARGV[2] (ARGV[5] = "1") or absent (ARGV[5] = "0"). Returns 1 when it did.
const SWAP: &str = r"
local current = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[5] == '1' then
  if current ~= ARGV[2] then return 0 end
elseif current then
  return 0
end
if ARGV[3] == '1' then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
else
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return 1
";

#[async_trait]
impl SubscriptionStore for RedisStreamStore {
    async fn load_all(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut con = self.conn()?;
        let all: Vec<(Vec<u8>, Vec<u8>)> = redis::cmd("HGETALL")
            .arg(self.inner.keys.subscriptions())
            .query_async(&mut con)
            .await
            .map_err(|e| backend(&e))?;
        Ok(all
            .into_iter()
            .map(|(id, record)| (String::from_utf8_lossy(&id).into_owned(), record))
            .collect())
    }

    async fn load(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut con = self.conn()?;
        redis::cmd("HGET")
            .arg(self.inner.keys.subscriptions())
            .arg(id)
            .query_async(&mut con)
            .await
            .map_err(|e| backend(&e))
    }

    async fn swap(
        &self,
        id: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, StoreError> {
        let mut con = self.conn()?;
        let flag = |b: bool| if b { "1" } else { "0" };
        let swapped: i64 = Script::new(SWAP)
            .key(self.inner.keys.subscriptions())
            .arg(id)
            .arg(expected.unwrap_or_default())
            .arg(flag(new.is_some()))
            .arg(new.unwrap_or_default())
            .arg(flag(expected.is_some()))
            .invoke_async(&mut con)
            .await
            .map_err(|e| backend(&e))?;
        Ok(swapped == 1)
    }

    async fn signing_seed(&self, candidate: [u8; 32]) -> Result<[u8; 32], StoreError> {
        let mut con = self.conn()?;
        let key = self.inner.keys.signing_key();
        let _: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(&candidate[..])
            .arg("NX")
            .query_async(&mut con)
            .await
            .map_err(|e| backend(&e))?;
        let stored: Option<Vec<u8>> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut con)
            .await
            .map_err(|e| backend(&e))?;
        let stored =
            stored.ok_or_else(|| StoreError::Backend("the signing key vanished".into()))?;
        seed_of(&stored)
    }
}
