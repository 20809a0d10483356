//! [`RedisStreamStore`]: Durable Streams (`/v1/stream/*`) on Redis, so that every host of a
//! `serve --redis` deployment serves the same streams.
//!
//! Layout: the `keys` module (one hash tag for all streams; a meta hash, a next-id counter,
//! per stream a sorted set of records and a hash of producer states). Scripts: the `script`
//! module — each [`WriteSet`] is one atomic script (records, metas, producer states, drops and
//! the next id together, after checking every meta the engine expected), and a read is one
//! script bounded by the byte budget.
//!
//! Several hosts: the store is [`StreamStore::shared`], so the engine sends the metas it
//! decided on and the write script refuses the set (a conflict; nothing written) when another
//! host changed one of them first; the engine reloads and decides again. The script publishes
//! each changed stream's name; [`StreamStore::changes`] delivers other hosts' notices (the
//! `notices` module) so readers parked on one host wake when another appends.
//!
//! One thing stays per host: reads that keep a sliding-TTL stream alive are counted in the
//! reading host's memory and stored lazily (once they are a quarter of the TTL, at least a
//! second, ahead of the stored access time), so another host may expire a stream read only
//! elsewhere within that window — with TTLs of a few seconds or more it never does.
//!
//! # Commands it needs
//!
//! From the client: `EVALSHA` (`SCRIPT LOAD` / `EVAL` on `NOSCRIPT`, as redis-rs does), `SET NX`
//! and `GET` (the format record), `HGETALL`, `HMGET`, `HGET`, `MULTI`/`EXEC`, `PING`; on the
//! Pub/Sub connection `SUBSCRIBE` and `PING`. Inside the scripts: `GET`, `SET`, `TYPE`, `HGET`,
//! `HSET`, `HDEL`, `ZADD`, `ZRANGEBYLEX`, `ZREVRANGEBYLEX` (with `LIMIT`), `UNLINK`, `PUBLISH`. All of
//! them exist in Redis 5+, Valkey and KeyDB; Garnet lists them too (run it with Lua enabled).
//! Only Redis 7 is tested here. With ACLs the user needs the `<ns>:streams:*` keys and the
//! `<ns>:streams:notices` channel.
//!
//! Durability is the server's, as for the query store (`appendonly yes` with
//! `appendfsync always` makes every acknowledged append survive a power loss).

mod keys;
mod notices;
mod script;
mod subscriptions;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use liveresults_streams::meta::{ProducerState, StreamMeta};
use liveresults_streams::store::{Change, Loaded, Record, StoreError, StreamStore, WriteSet};
use liveresults_streams::subscription::SubscriptionStore;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::broadcast;

use crate::RedisStoreOptions;
use keys::Keys;
use notices::Notices;
use script::Scripts;

/// The stream store's format version (key layout, records, scripts).
pub const STREAMS_REDIS_FORMAT_VERSION: u32 = 1;

/// Durable Streams on Redis. Cheap to clone; clones share one multiplexed connection (which
/// reconnects by itself) and one notice subscription.
#[derive(Clone)]
pub struct RedisStreamStore {
    inner: Arc<Inner>,
}

struct Inner {
    conn: ConnectionManager,
    keys: Keys,
    scripts: Scripts,
    /// Names this handle in its notices, so it skips its own.
    sender: String,
    notices: Notices,
    closed: AtomicBool,
}

impl std::fmt::Debug for RedisStreamStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStreamStore")
            .field("sender", &self.inner.sender)
            .finish_non_exhaustive()
    }
}

fn backend(err: &redis::RedisError) -> StoreError {
    StoreError::Backend(format!("redis: {err}"))
}

/// Makes each handle's sender token unique within the process.
static HANDLES: AtomicU64 = AtomicU64::new(0);

impl RedisStreamStore {
    /// Connects to `url` with the namespace and timeouts of `options` (the query store's, so
    /// `serve --redis` keeps both under one namespace), checks or records the format version,
    /// and subscribes to other hosts' change notices.
    pub async fn connect(
        url: &str,
        options: &RedisStoreOptions,
    ) -> Result<RedisStreamStore, StoreError> {
        let namespace = &options.namespace;
        if namespace.is_empty() || namespace.contains(['{', '}']) {
            return Err(StoreError::Backend(format!(
                "key namespace {namespace:?} must be non-empty and hold no '{{' or '}}'"
            )));
        }
        let client = redis::Client::open(url)
            .map_err(|e| StoreError::Backend(format!("invalid Redis URL: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(options.response_timeout))
            .set_connection_timeout(Some(options.connection_timeout))
            .set_number_of_retries(options.reconnect_retries)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1));
        let mut conn = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(|e| backend(&e))?;
        let keys = Keys::new(namespace);
        let (found,): (Option<String>,) = redis::pipe()
            .cmd("SET")
            .arg(keys.format())
            .arg(STREAMS_REDIS_FORMAT_VERSION)
            .arg("NX")
            .ignore()
            .cmd("GET")
            .arg(keys.format())
            .query_async(&mut conn)
            .await
            .map_err(|e| backend(&e))?;
        let found = found.unwrap_or_default();
        if found != STREAMS_REDIS_FORMAT_VERSION.to_string() {
            return Err(StoreError::Corrupt(format!(
                "{}: stream store format {found:?} is not {STREAMS_REDIS_FORMAT_VERSION}",
                keys.format()
            )));
        }
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let sender = format!(
            "{nanos:x}-{:x}-{:x}",
            std::process::id(),
            HANDLES.fetch_add(1, Ordering::Relaxed)
        );
        let notices = notices::start(
            client,
            keys.channel().to_owned(),
            sender.clone(),
            options.connection_timeout,
        )
        .await?;
        Ok(RedisStreamStore {
            inner: Arc::new(Inner {
                conn,
                keys,
                scripts: Scripts::new(),
                sender,
                notices,
                closed: AtomicBool::new(false),
            }),
        })
    }

    fn conn(&self) -> Result<ConnectionManager, StoreError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        Ok(self.inner.conn.clone())
    }
}

fn decode_meta(name: &[u8], value: &[u8]) -> Result<(String, StreamMeta), StoreError> {
    let name = String::from_utf8(name.to_vec())
        .map_err(|_| StoreError::Corrupt("a stream name is not UTF-8".into()))?;
    let meta = StreamMeta::decode(value)
        .map_err(|e| StoreError::Corrupt(format!("stream {name:?}: {e}")))?;
    Ok((name, meta))
}

#[async_trait]
impl StreamStore for RedisStreamStore {
    async fn load(&self) -> Result<Loaded, StoreError> {
        let mut con = self.conn()?;
        let keys = &self.inner.keys;
        // One MULTI/EXEC: the metas and the id counter from the same moment.
        let (metas, next): (Vec<(Vec<u8>, Vec<u8>)>, Option<String>) = redis::pipe()
            .atomic()
            .cmd("HGETALL")
            .arg(keys.meta())
            .cmd("GET")
            .arg(keys.next_id())
            .query_async(&mut con)
            .await
            .map_err(|e| backend(&e))?;
        let next_id = match next {
            None => 0,
            Some(n) => n
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("next stream id {n:?}")))?,
        };
        let streams = (metas.iter())
            .map(|(name, value)| decode_meta(name, value))
            .collect::<Result<_, _>>()?;
        Ok(Loaded { streams, next_id })
    }

    async fn producer(&self, id: u64, producer: &str) -> Result<Option<ProducerState>, StoreError> {
        let mut con = self.conn()?;
        let value: Option<Vec<u8>> = redis::cmd("HGET")
            .arg(self.inner.keys.producers(id))
            .arg(producer)
            .query_async(&mut con)
            .await
            .map_err(|e| backend(&e))?;
        value
            .map(|v| ProducerState::decode(&v))
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("producer state of stream {id}: {e}")))
    }

    /// `HLEN` of the stream's producers hash: exact and O(1), so the per-stream producer cap
    /// holds on Redis as on the other backends.
    async fn producer_count(&self, id: u64, at_most: usize) -> Result<Option<usize>, StoreError> {
        let mut con = self.conn()?;
        let count: u64 = redis::cmd("HLEN")
            .arg(self.inner.keys.producers(id))
            .query_async(&mut con)
            .await
            .map_err(|e| backend(&e))?;
        Ok(Some(
            usize::try_from(count).unwrap_or(usize::MAX).min(at_most),
        ))
    }

    async fn write(&self, set: WriteSet) -> Result<(), StoreError> {
        let mut con = self.conn()?;
        let inner = &self.inner;
        let call = inner
            .scripts
            .write(&inner.keys, &set, inner.keys.channel(), &inner.sender);
        let reply: redis::Value = call.invoke_async(&mut con).await.map_err(|e| backend(&e))?;
        script::write_reply(&reply)
    }

    async fn read(
        &self,
        id: u64,
        from: u64,
        to: u64,
        max_bytes: usize,
    ) -> Result<Vec<Record>, StoreError> {
        if from >= to {
            return Ok(Vec::new());
        }
        let mut con = self.conn()?;
        let key = self.inner.keys.records(id);
        let call = self.inner.scripts.read(&key, from, to, max_bytes);
        let reply: redis::Value = call.invoke_async(&mut con).await.map_err(|e| backend(&e))?;
        script::read_reply(reply)
    }

    async fn close(&self) -> Result<(), StoreError> {
        let mut con = self.conn()?;
        // Every earlier command of the connection has run once PING answers.
        let pinged: Result<String, _> = redis::cmd("PING").query_async(&mut con).await;
        self.inner.closed.store(true, Ordering::Release);
        self.inner.notices.stop();
        pinged.map(drop).map_err(|e| backend(&e))
    }

    fn shared(&self) -> bool {
        true
    }

    async fn load_metas(&self, names: &[String]) -> Result<Vec<Option<StreamMeta>>, StoreError> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut con = self.conn()?;
        let values: Vec<Option<Vec<u8>>> = redis::cmd("HMGET")
            .arg(self.inner.keys.meta())
            .arg(names)
            .query_async(&mut con)
            .await
            .map_err(|e| backend(&e))?;
        if values.len() != names.len() {
            return Err(StoreError::Backend(format!(
                "HMGET of {} streams answered {}",
                names.len(),
                values.len()
            )));
        }
        (names.iter().zip(values))
            .map(|(name, value)| match value {
                None => Ok(None),
                Some(v) => decode_meta(name.as_bytes(), &v).map(|(_, m)| Some(m)),
            })
            .collect()
    }

    async fn load_next_id(&self) -> Result<u64, StoreError> {
        let mut con = self.conn()?;
        let next: Option<String> = redis::cmd("GET")
            .arg(self.inner.keys.next_id())
            .query_async(&mut con)
            .await
            .map_err(|e| backend(&e))?;
        next.map_or(Ok(0), |n| {
            n.parse()
                .map_err(|_| StoreError::Corrupt(format!("next stream id {n:?}")))
        })
    }

    fn changes(&self) -> Option<broadcast::Receiver<Change>> {
        Some(self.inner.notices.receiver())
    }

    /// Subscriptions live next to the streams (the `subscriptions` module), shared by every
    /// host like them.
    fn subscriptions(&self) -> Option<Arc<dyn SubscriptionStore>> {
        Some(Arc::new(self.clone()))
    }
}
