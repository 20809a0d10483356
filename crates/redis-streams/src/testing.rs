//! Test support (feature `testing`): Drasi result streams as Redis entries with the rows a
//! query must hold after them, and the few stream commands the tests drive by hand. Shared by
//! this crate's tests and the root package's test of the `consume` subcommand.
//!
//! Everything here panics on failure, as test code should: it is not for production use.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use liveresults_runtime::testing::whole_sig;
use redis::aio::MultiplexedConnection;
use serde_json::{json, Value as Json};

pub use liveresults_redis::testing::RedisServer;

/// A query's events as stream entries (the `data` field's text, in order; sequences from 1)
/// and the rows the query holds after all of them, by signature.
#[derive(Debug, Clone)]
pub struct Workload {
    /// The query.
    pub query: String,
    /// Each entry's `data` text.
    pub entries: Vec<String>,
    /// The rows after every entry, by signature.
    pub model: BTreeMap<u64, Json>,
}

/// `n` events of `query` from `seed`: Drasi platform events (adds, updates, deletes of rows
/// `{"id", "v"}`, whole-row signatures) and drasi-lib results (signature `k`), every other one
/// in a CloudEvent envelope as Drasi publishes them, the others bare.
pub fn workload(query: &str, n: u64, seed: u64) -> Workload {
    let mut rng = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    let mut next = move |below: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % below.max(1)
    };
    let mut model = BTreeMap::new();
    let mut platform_rows: Vec<Json> = Vec::new();
    let mut entries = Vec::new();
    for sequence in 1..=n {
        let v = i64::try_from(next(1000)).unwrap_or(0);
        let event = match next(5) {
            0 if !platform_rows.is_empty() => {
                let i = next(platform_rows.len() as u64) as usize;
                let gone = platform_rows.swap_remove(i);
                model.remove(&whole_sig(&gone));
                platform(query, sequence, &[], &[], &[gone])
            }
            1 if !platform_rows.is_empty() => {
                let i = next(platform_rows.len() as u64) as usize;
                let before = platform_rows[i].clone();
                let after = json!({"id": before["id"], "v": v});
                model.remove(&whole_sig(&before));
                model.insert(whole_sig(&after), after.clone());
                platform_rows[i] = after.clone();
                platform(
                    query,
                    sequence,
                    &[],
                    &[json!({"before": before, "after": after})],
                    &[],
                )
            }
            2 => {
                let k = next(8);
                let row = json!({"k": k, "v": v});
                model.insert(k, row.clone());
                json!({"query_id": query, "sequence": sequence, "timestamp": 1_740_830_400_000u64,
                       "results": [{"type": "ADD", "data": row, "row_signature": k}]})
            }
            3 => {
                let k = next(8);
                model.remove(&k);
                json!({"query_id": query, "sequence": sequence, "timestamp": 1_740_830_400_000u64,
                       "results": [{"type": "DELETE", "data": {"k": k}, "row_signature": k}]})
            }
            _ => {
                let row = json!({"id": sequence, "v": v});
                model.insert(whole_sig(&row), row.clone());
                platform_rows.push(row.clone());
                platform(query, sequence, &[row], &[], &[])
            }
        };
        let text = event.to_string();
        entries.push(if sequence % 2 == 0 {
            envelope(&text, &format!("{query}-results"))
        } else {
            text
        });
    }
    Workload {
        query: query.to_owned(),
        entries,
        model,
    }
}

/// A Drasi platform change event.
pub fn platform(
    query: &str,
    sequence: u64,
    added: &[Json],
    updated: &[Json],
    deleted: &[Json],
) -> Json {
    json!({"kind": "change", "queryId": query, "sequence": sequence,
           "sourceTimeMs": 1_740_830_400_000u64, "addedResults": added,
           "updatedResults": updated, "deletedResults": deleted})
}

/// `event` (JSON text) in the Dapr CloudEvent envelope Drasi's platform reaction writes.
pub fn envelope(event: &str, topic: &str) -> String {
    format!(
        r#"{{"data":{event},"datacontenttype":"application/json","id":"0b6c4a5e-1f0e-4c36-9d5e-2f4f1b7c9a11","pubsubname":"drasi-pubsub","source":"drasi-core","specversion":"1.0","time":"2025-03-01T12:00:00.000Z","topic":"{topic}","type":"com.dapr.event.sent"}}"#
    )
}

/// A plain connection to the test server.
pub async fn connect(server: &RedisServer) -> MultiplexedConnection {
    redis::Client::open(server.url())
        .expect("test server URL")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to the test redis-server")
}

/// `XADD stream * <field> <text>`; the entry's id.
pub async fn xadd(
    conn: &mut MultiplexedConnection,
    stream: &str,
    field: &str,
    text: &str,
) -> String {
    redis::cmd("XADD")
        .arg(stream)
        .arg("*")
        .arg(field)
        .arg(text)
        .query_async(conn)
        .await
        .expect("XADD")
}

/// Every entry of `entries` to `stream`, in field `data`.
pub async fn publish(conn: &mut MultiplexedConnection, stream: &str, entries: &[String]) {
    for text in entries {
        xadd(conn, stream, "data", text).await;
    }
}

/// How many entries of `stream` are pending in `group` (0 when the group does not exist).
pub async fn pending_count(conn: &mut MultiplexedConnection, stream: &str, group: &str) -> u64 {
    let summary: redis::RedisResult<redis::Value> = redis::cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .query_async(conn)
        .await;
    match summary {
        Ok(redis::Value::Array(items)) => match items.first() {
            Some(redis::Value::Int(n)) => u64::try_from(*n).expect("a pending count"),
            other => panic!("unexpected XPENDING summary {other:?}"),
        },
        Ok(other) => panic!("unexpected XPENDING reply {other:?}"),
        Err(e) if e.code() == Some("NOGROUP") => 0,
        Err(e) => panic!("XPENDING: {e}"),
    }
}

/// The group's lag (entries of `stream` not yet delivered to it; Redis 7).
pub async fn group_lag(conn: &mut MultiplexedConnection, stream: &str, group: &str) -> Option<u64> {
    let groups: Vec<redis::Value> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(conn)
        .await
        .ok()?;
    for info in groups {
        let pairs: Vec<(String, redis::Value)> = match info {
            redis::Value::Map(pairs) => pairs
                .into_iter()
                .filter_map(|(k, v)| redis::from_redis_value::<String>(k).ok().map(|k| (k, v)))
                .collect(),
            redis::Value::Array(flat) => flat
                .chunks(2)
                .filter_map(|kv| {
                    let k = redis::from_redis_value::<String>(kv.first()?.clone()).ok()?;
                    Some((k, kv.get(1)?.clone()))
                })
                .collect(),
            _ => continue,
        };
        let field = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let name = field("name").and_then(|v| redis::from_redis_value::<String>(v).ok());
        if name.as_deref() == Some(group) {
            return field("lag").and_then(|v| redis::from_redis_value::<u64>(v).ok());
        }
    }
    None
}

/// The entries of `stream` as (id, fields) pairs, oldest first (bytes that are not UTF-8
/// replaced).
pub async fn entries(
    conn: &mut MultiplexedConnection,
    stream: &str,
) -> Vec<(String, BTreeMap<String, String>)> {
    type Raw = (String, Vec<(Vec<u8>, Vec<u8>)>);
    let raw: Vec<Raw> = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(conn)
        .await
        .expect("XRANGE");
    raw.into_iter()
        .map(|(id, fields)| {
            let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
            let fields = fields.into_iter().map(|(f, v)| (text(f), text(v)));
            (id, fields.collect())
        })
        .collect()
}

/// Polls `check` every 20 ms until it holds; panics naming `what` after `within`.
pub async fn wait_until<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The ids of the entries of `stream` pending in `group`, oldest first, with the consumer
/// holding each and how many times each was delivered.
pub async fn pending_entries(
    conn: &mut MultiplexedConnection,
    stream: &str,
    group: &str,
) -> Vec<(String, String, u64)> {
    let raw: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .arg("-")
        .arg("+")
        .arg(100_000)
        .query_async(conn)
        .await
        .expect("XPENDING");
    raw.into_iter()
        .map(|(id, consumer, _idle, deliveries)| (id, consumer, deliveries))
        .collect()
}

/// Who holds the consumer lock of `stream` in `group` (`None` when no one does).
pub async fn lock_holder(
    conn: &mut MultiplexedConnection,
    stream: &str,
    group: &str,
) -> Option<String> {
    redis::cmd("GET")
        .arg(crate::lock_key(stream, group))
        .query_async(conn)
        .await
        .expect("GET the lock")
}
