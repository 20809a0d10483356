//! Reactions: delivery only after durability, the materialized view as a mirror of the store,
//! and rebuilding reactions on restart (outbox catch-up, snapshot rebuild, Strict failure).

use std::collections::BTreeMap;
use std::sync::Arc;

use liveresults_core::{Checkpoint, MemoryStore, OutboxRetention, ResultStore};
use liveresults_runtime::reactions::{MaterializedView, NdjsonLog};
use liveresults_runtime::testing::*;
use liveresults_runtime::{QueryConfig, RecoveryPolicy, RuntimeConfig};
use serde_json::Value as Json;

use super::start;

fn config(policy: RecoveryPolicy) -> RuntimeConfig {
    RuntimeConfig::new().default_query(QueryConfig {
        policy,
        ..QueryConfig::default()
    })
}

async fn feed(
    store: &Arc<MemoryStore>,
    config: RuntimeConfig,
    reactions: Vec<Arc<dyn liveresults_runtime::Reaction>>,
    query: &str,
    seqs: std::ops::RangeInclusive<u64>,
) {
    let rt = start(store, config, reactions).await;
    let h = rt.handle();
    for s in seqs {
        h.submit_and_wait(lib_add(query, s, s % 4, s as i64))
            .await
            .unwrap();
    }
    rt.shutdown().await.unwrap();
}

#[tokio::test]
async fn reactions_see_a_change_only_after_it_is_durable() {
    let store = Arc::new(MemoryStore::new());
    let shared: Arc<dyn ResultStore> = store.clone();
    let rec = Arc::new(Recorder::new("rec").checking(shared));
    let view = Arc::new(MaterializedView::new("view"));
    let rt = start(
        &store,
        RuntimeConfig::new(),
        vec![rec.clone(), view.clone()],
    )
    .await;
    let h = rt.handle();
    let (events, model) = stream(
        "q",
        &[
            Op::LibAdd(1, 1),
            Op::PlatAdd(2, 2),
            Op::LibUpdate(1, 5),
            Op::PlatGroupedUpdate(3, 1, 2),
            Op::LibAggregation(4, 4),
            Op::PlatUpdate(2, 2, 3),
            Op::LibDelete(1),
            Op::Duplicate(2),
            Op::LibAdd(5, 5),
        ],
    );
    for e in events {
        h.submit(e).await.unwrap();
    }
    rt.shutdown().await.unwrap();
    assert!(
        rec.violations.lock().unwrap().is_empty(),
        "{:?}",
        rec.violations.lock().unwrap()
    );
    assert!(!rec.changes().is_empty());
    let stored = store_rows(&*store, "q").await;
    assert_eq!(stored, model_values(&model));
    assert_eq!(view.query("q").rows, stored);
    assert_eq!(
        view.query("q").sequence,
        stored_sequence(&*store, "q").await
    );
}

#[tokio::test]
async fn durable_reaction_catches_up_from_the_outbox_after_its_checkpoint() {
    let store = Arc::new(MemoryStore::new());
    let first = Arc::new(Recorder::new("d").durable(7));
    feed(
        &store,
        RuntimeConfig::new(),
        vec![first.clone()],
        "q",
        1..=5,
    )
    .await;
    assert_eq!(
        store.checkpoint("d", "q").await.unwrap(),
        Some(Checkpoint {
            sequence: Some(5),
            config_hash: 7
        })
    );
    // The reaction is away while 6..=10 are committed.
    feed(&store, RuntimeConfig::new(), vec![], "q", 6..=10).await;
    let again = Arc::new(Recorder::new("d").durable(7));
    let rt = start(&store, RuntimeConfig::new(), vec![again.clone()]).await;
    let caught_up: Vec<_> = again.changes().iter().map(|c| (c.2, c.3)).collect();
    assert_eq!(caught_up, (6..=10).map(|s| (s, s)).collect::<Vec<_>>());
    assert!(
        again.seen().iter().all(|s| matches!(s, Seen::Change(..))),
        "no rebuild"
    );
    assert!(rt.handle().reaction_failures().is_empty());
    rt.shutdown().await.unwrap();
    assert_eq!(
        store.checkpoint("d", "q").await.unwrap().unwrap().sequence,
        Some(10)
    );
}

#[tokio::test]
async fn a_changed_configuration_rebuilds_from_the_snapshot() {
    let store = Arc::new(MemoryStore::new());
    feed(
        &store,
        RuntimeConfig::new(),
        vec![Arc::new(Recorder::new("d").durable(1))],
        "q",
        1..=3,
    )
    .await;
    let changed = Arc::new(Recorder::new("d").durable(2));
    let rt = start(
        &store,
        config(RecoveryPolicy::AutoReset),
        vec![changed.clone()],
    )
    .await;
    rt.shutdown().await.unwrap();
    assert_eq!(
        changed.seen(),
        vec![
            Seen::Reset("q".into(), 0),
            Seen::SnapshotRows("q".into(), 3),
            Seen::SnapshotDone("q".into(), Some(3)),
        ]
    );
    assert_eq!(
        store.checkpoint("d", "q").await.unwrap(),
        Some(Checkpoint {
            sequence: Some(3),
            config_hash: 2
        })
    );
}

/// A store whose outbox keeps 3 entries, a durable reaction checkpointed at 2, and 10 commits.
async fn checkpoint_behind_the_outbox() -> Arc<MemoryStore> {
    let store = Arc::new(MemoryStore::with_retention(OutboxRetention {
        max_entries: 3,
        max_bytes: 1 << 20,
    }));
    feed(
        &store,
        RuntimeConfig::new(),
        vec![Arc::new(Recorder::new("d").durable(0))],
        "q",
        1..=2,
    )
    .await;
    feed(&store, RuntimeConfig::new(), vec![], "q", 3..=10).await;
    assert_eq!(
        store.checkpoint("d", "q").await.unwrap().unwrap().sequence,
        Some(2)
    );
    store
}

#[tokio::test]
async fn checkpoint_older_than_the_outbox_rebuilds_from_a_snapshot_under_auto_reset() {
    let store = checkpoint_behind_the_outbox().await;
    let d = Arc::new(Recorder::new("d").durable(0));
    let rt = start(&store, config(RecoveryPolicy::AutoReset), vec![d.clone()]).await;
    assert!(rt.handle().reaction_failures().is_empty());
    let rows = store_rows(&*store, "q").await.len();
    assert_eq!(
        d.seen(),
        vec![
            Seen::Reset("q".into(), 0),
            Seen::SnapshotRows("q".into(), rows),
            Seen::SnapshotDone("q".into(), Some(10)),
        ]
    );
    rt.handle()
        .submit_and_wait(lib_add("q", 11, 9, 9))
        .await
        .unwrap();
    rt.shutdown().await.unwrap();
    assert_eq!(d.changes(), vec![("q".into(), 0, 11, 11)]);
    assert_eq!(
        store.checkpoint("d", "q").await.unwrap().unwrap().sequence,
        Some(11)
    );
}

#[tokio::test]
async fn checkpoint_older_than_the_outbox_is_a_recorded_failure_under_strict() {
    let store = checkpoint_behind_the_outbox().await;
    let d = Arc::new(Recorder::new("d").durable(0));
    let other = Arc::new(Recorder::new("other"));
    let rt = start(
        &store,
        config(RecoveryPolicy::Strict),
        vec![d.clone(), other.clone()],
    )
    .await;
    let failures = rt.handle().reaction_failures();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(
        (
            failures[0].reaction_id.as_str(),
            failures[0].query_id.as_str()
        ),
        ("d", "q")
    );
    assert!(
        failures[0].message.contains("outbox"),
        "{}",
        failures[0].message
    );
    assert!(
        d.seen().is_empty(),
        "a failed reaction is not rebuilt under Strict"
    );
    // It receives nothing more for that query; the others carry on.
    rt.handle()
        .submit_and_wait(lib_add("q", 11, 9, 9))
        .await
        .unwrap();
    rt.shutdown().await.unwrap();
    assert!(d.seen().is_empty());
    assert!(other.changes().contains(&("q".into(), 0, 11, 11)));
    assert_eq!(
        store.checkpoint("d", "q").await.unwrap().unwrap().sequence,
        Some(2)
    );
}

#[tokio::test]
async fn checkpoint_ahead_of_the_store_rebuilds() {
    // Regression: a checkpoint beyond the store's sequence (the store lost a suffix) was
    // "caught up" from an empty outbox read, keeping rows the store no longer has.
    let store = Arc::new(MemoryStore::new());
    feed(&store, RuntimeConfig::new(), vec![], "q", 1..=3).await;
    store
        .save_checkpoint(
            "d",
            "q",
            Checkpoint {
                sequence: Some(9),
                config_hash: 0,
            },
        )
        .await
        .unwrap();
    let d = Arc::new(Recorder::new("d").durable(0));
    let rt = start(&store, config(RecoveryPolicy::AutoReset), vec![d.clone()]).await;
    rt.shutdown().await.unwrap();
    assert_eq!(
        d.seen().last(),
        Some(&Seen::SnapshotDone("q".into(), Some(3)))
    );
}

#[tokio::test]
async fn non_durable_reaction_rebuilds_from_the_snapshot() {
    let store = Arc::new(MemoryStore::new());
    let before = Arc::new(MaterializedView::new("view"));
    let (events, model) = stream(
        "q",
        &[
            Op::LibAdd(1, 1),
            Op::PlatAdd(1, 1),
            Op::LibUpdate(1, 3),
            Op::LibAdd(2, 2),
            Op::LibDelete(2),
        ],
    );
    let rt = start(&store, config(RecoveryPolicy::Strict), vec![before.clone()]).await;
    for e in events {
        rt.handle().submit(e).await.unwrap();
    }
    rt.shutdown().await.unwrap();
    let after = Arc::new(MaterializedView::new("view"));
    let rt = start(&store, config(RecoveryPolicy::Strict), vec![after.clone()]).await;
    assert_eq!(after.query("q"), before.query("q"));
    assert_eq!(after.query("q").rows, model_values(&model));
    assert!(
        rt.handle().reaction_failures().is_empty(),
        "non-durable reactions rebuild even under Strict"
    );
    rt.shutdown().await.unwrap();
}

fn log_lines(path: &std::path::Path) -> Vec<Json> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "log ends with a complete line"
    );
    text.lines()
        .map(|l| serde_json::from_str(l).expect("every line parses"))
        .collect()
}

/// Every sequence covered by a change line, per (query, epoch), at most once.
fn assert_no_duplicate_changes(lines: &[Json]) -> BTreeMap<(String, u64), Vec<u64>> {
    let mut seen: BTreeMap<(String, u64), Vec<u64>> = BTreeMap::new();
    for l in lines.iter().filter(|l| l["type"] == "change") {
        let key = (
            l["query_id"].as_str().unwrap().to_owned(),
            l["epoch"].as_u64().unwrap(),
        );
        let list = seen.entry(key).or_default();
        for s in l["first_sequence"].as_u64().unwrap()..=l["sequence"].as_u64().unwrap() {
            assert!(!list.contains(&s), "sequence {s} logged twice: {lines:?}");
            list.push(s);
        }
    }
    seen
}

async fn ndjson_log_across_a_restart(torn: bool) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.ndjson");
    let store = Arc::new(MemoryStore::new());
    let log = Arc::new(NdjsonLog::open("log", &path).await.unwrap());
    feed(&store, RuntimeConfig::new(), vec![log], "q", 1..=5).await;
    // A crash after the log wrote 3..=5 but before their checkpoints were saved.
    let hash = store
        .checkpoint("log", "q")
        .await
        .unwrap()
        .unwrap()
        .config_hash;
    store
        .save_checkpoint(
            "log",
            "q",
            Checkpoint {
                sequence: Some(2),
                config_hash: hash,
            },
        )
        .await
        .unwrap();
    if torn {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(br#"{"type":"change","query_id":"q","epoch":0,"first_seq"#)
            .unwrap();
    }
    let log = Arc::new(NdjsonLog::open("log", &path).await.unwrap());
    feed(&store, RuntimeConfig::new(), vec![log], "q", 6..=8).await;
    let lines = log_lines(&path);
    let seen = assert_no_duplicate_changes(&lines);
    assert_eq!(seen[&("q".to_owned(), 0)], (1..=8).collect::<Vec<_>>());
    // Replaying the log reproduces the store.
    let mut replay = BTreeMap::new();
    for l in &lines {
        apply_log_line(&mut replay, l);
    }
    let stored: BTreeMap<u64, Json> = store_rows(&*store, "q")
        .await
        .into_iter()
        .map(|(k, v)| (k, v.to_json()))
        .collect();
    assert_eq!(replay["q"], stored);
}

#[tokio::test]
async fn ndjson_log_writes_no_duplicate_line_across_a_restart() {
    ndjson_log_across_a_restart(false).await;
}

#[tokio::test]
async fn ndjson_log_cuts_a_torn_last_line_and_writes_no_duplicate() {
    ndjson_log_across_a_restart(true).await;
}

#[tokio::test]
async fn a_durable_reaction_that_missed_a_clear_is_reset_before_catching_up() {
    // Regression: the clear deleted the reaction's checkpoint; with no checkpoint it caught up
    // from the new epoch's outbox on top of the old epoch's rows.
    let store = Arc::new(MemoryStore::new());
    let durable = Arc::new(DurableView::new("d"));
    feed(
        &store,
        RuntimeConfig::new(),
        vec![durable.clone()],
        "q",
        1..=3,
    )
    .await;
    assert_eq!(durable.view.query("q").rows.len(), 3);
    // The query is cleared and refilled while the reaction is away.
    let rt = start(&store, RuntimeConfig::new(), vec![]).await;
    rt.handle().clear_query("q").await.unwrap();
    rt.handle()
        .submit_and_wait(lib_add("q", 1, 40, 40))
        .await
        .unwrap();
    rt.shutdown().await.unwrap();
    assert_eq!(store.checkpoint("d", "q").await.unwrap(), None);
    let rt = start(&store, RuntimeConfig::new(), vec![durable.clone()]).await;
    rt.shutdown().await.unwrap();
    assert_eq!(durable.view.query("q").rows, store_rows(&*store, "q").await);
    assert_eq!(durable.view.query("q").epoch, 1);
}

#[tokio::test]
async fn ndjson_log_config_hash_is_the_documented_xxh3_of_its_path() {
    // Regression: std's DefaultHasher may change between Rust releases, which would make
    // every NdjsonLog checkpoint look stale after a toolchain upgrade.
    use liveresults_core::row::Value;
    use liveresults_core::signature::hash_value;
    use liveresults_runtime::Reaction;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.ndjson");
    let log = NdjsonLog::open("log", &path).await.unwrap();
    let expected = hash_value(&Value::String(path.to_string_lossy().into_owned()));
    assert_eq!(log.config_hash(), expected);
}

#[tokio::test]
async fn a_clear_waits_for_lagging_reactions_so_no_stale_checkpoint_survives_it() {
    // Regression: a slow durable reaction still working through the old epoch's changes saved
    // their checkpoints after the clear had deleted the checkpoints, so a restart would have
    // trusted a position of the old epoch.
    let store = Arc::new(MemoryStore::new());
    let slow = Arc::new(
        Recorder::new("d")
            .durable(0)
            .slow(std::time::Duration::from_millis(2)),
    );
    let config = RuntimeConfig::new()
        .group_commit(1, std::time::Duration::ZERO)
        .reaction_queue_capacity(64);
    let rt = start(&store, config, vec![slow.clone()]).await;
    let h = rt.handle();
    for s in 1..=30 {
        h.submit(lib_add("q", s, s, 0)).await.unwrap();
    }
    h.clear_query("q").await.unwrap();
    rt.shutdown().await.unwrap();
    assert_eq!(store.checkpoint("d", "q").await.unwrap(), None);
    let seen = slow.seen();
    assert_eq!(seen.last(), Some(&Seen::Reset("q".into(), 1)));
    assert_eq!(slow.changes().len(), 30);
}
