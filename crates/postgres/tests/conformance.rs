//! The shared conformance suite, the lease cases and the model test against the PostgreSQL
//! store — all on one server this process starts, each harness in a schema of its own —
//! plus what only this backend has: migrations, schemas side by side, the reclaimer, the
//! bounds of the stored numbers.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use liveresults_core::testing::{commit_at, env_number, run_model_test, Harness, ModelConfig};
use liveresults_core::{
    Commit, LiveResultsWriter, OutboxRetention, ResultStore, RowMutation, SequenceSpan, StoreError,
};
use liveresults_postgres::testing::{unique_schema, PgServer};
use liveresults_postgres::{PgStore, PgStoreOptions, PG_FORMAT_VERSION};

/// A fresh schema on the shared server per harness; `reopen` closes the store (its pool,
/// listener and reclaimer) and connects a new one, as a restarted host would.
struct PgHarness {
    options: PgStoreOptions,
}

impl PgHarness {
    fn new() -> Self {
        PgHarness {
            options: PgStoreOptions::new().schema(unique_schema()).pool_size(4),
        }
    }
}

#[async_trait]
impl Harness for PgHarness {
    type Store = PgStore;

    async fn open(&mut self, retention: OutboxRetention) -> PgStore {
        self.options = self.options.clone().outbox_retention(retention);
        PgServer::shared().connect(self.options.clone()).await
    }

    async fn reopen(&mut self, store: PgStore) -> PgStore {
        store.close().await.expect("close");
        PgServer::shared().connect(self.options.clone()).await
    }

    fn durable(&self) -> bool {
        true
    }
}

liveresults_core::conformance_suite!(PgHarness::new());
liveresults_core::lease_suite!(PgHarness::new());

#[test]
fn postgres_store_matches_the_model() {
    let config = ModelConfig {
        cases: env_number("PROPTEST_CASES", 32),
        ..ModelConfig::default()
    };
    run_model_test(PgHarness::new, config);
}

async fn connect(schema: &str) -> PgStore {
    PgServer::shared()
        .connect(PgStoreOptions::new().schema(schema))
        .await
}

/// Runs `sql` on the shared server outside any store.
async fn execute(sql: &str) {
    let store = connect(&unique_schema()).await;
    let client = store.pool().get().await.unwrap();
    client.batch_execute(sql).await.unwrap();
}

/// Two schemas in one database are two independent stores; reconnecting to a schema finds
/// its data, and a schema written by a newer build is refused without being touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemas_are_independent_and_versioned() {
    let (a, b) = (unique_schema(), unique_schema());
    let store_a = connect(&a).await;
    let store_b = connect(&b).await;
    commit_at(&store_a, "q", 1, &[RowMutation::upsert(1, b"a")]).await;
    assert_eq!(store_b.query_info("q").await.unwrap().sequence, None);
    assert!(store_b.list_queries().await.unwrap().is_empty());
    store_a.close().await.unwrap();
    let again = connect(&a).await;
    assert_eq!(again.query_info("q").await.unwrap().sequence, Some(1));

    execute(&format!(
        "INSERT INTO \"{b}\".migrations (version, description) VALUES (99, 'future')"
    ))
    .await;
    let err = PgStore::connect(
        &PgServer::shared().url(),
        PgStoreOptions::new().schema(b.as_str()),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, StoreError::UnsupportedFormat { found: 99, supported } if supported == PG_FORMAT_VERSION),
        "{err}"
    );
    for bad in ["", "Bad", "pg_x", "a;b"] {
        let err = PgStore::connect(&PgServer::shared().url(), PgStoreOptions::new().schema(bad))
            .await
            .unwrap_err();
        assert!(!err.is_transient(), "{bad:?}: {err}");
    }
}

/// Sequences use the whole u64 range and keep their order in SQL (the top bit is not lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequences_above_i64_max_keep_their_order() {
    let s = connect(&unique_schema()).await;
    let big = 1u64 << 63;
    commit_at(&s, "q", big - 1, &[RowMutation::upsert(u64::MAX, b"top")]).await;
    commit_at(&s, "q", big + 1, &[RowMutation::upsert(0, b"bottom")]).await;
    let err = s
        .commit("q", Commit::sequenced(&[], SequenceSpan::single(big), b"x"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::SequenceRegression { committed: Some(c), .. } if c == big + 1),
        "{err}"
    );
    let outbox = s.read_outbox("q", Some(big - 1), 10).await.unwrap();
    assert_eq!(
        outbox.iter().map(|e| e.span.last).collect::<Vec<_>>(),
        [big + 1]
    );
    let mut rows = s
        .snapshot("q", 10)
        .await
        .unwrap()
        .collect_rows()
        .await
        .unwrap();
    rows.sort();
    assert_eq!(
        rows,
        vec![(0, b"bottom".to_vec()), (u64::MAX, b"top".to_vec())]
    );
}

/// A clear returns at once and the reclaimer frees the old epoch's rows and outbox in the
/// background; the new epoch never sees them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_is_reclaimed_in_the_background() {
    let schema = unique_schema();
    let s = PgServer::shared()
        .connect(
            PgStoreOptions::new()
                .schema(schema.as_str())
                .reclaim(700, Duration::from_secs(3600)),
        )
        .await;
    let rows: Vec<_> = (0..5000u64)
        .map(|i| RowMutation::upsert(i, b"row"))
        .collect();
    commit_at(&s, "q", 1, &rows).await;
    let info = s.clear_query("q").await.unwrap();
    assert_eq!((info.epoch, info.row_count), (1, 0));
    commit_at(&s, "q", 1, &[RowMutation::upsert(7, b"new")]).await;
    let client = s.pool().get().await.unwrap();
    let count_sql = format!("SELECT count(*) FROM \"{schema}\".rows");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n: i64 = client.query_one(&count_sql, &[]).await.unwrap().get(0);
        if n == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "{n} rows left after 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let left: i64 = client
        .query_one(&format!("SELECT count(*) FROM \"{schema}\".reclaim"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
    assert_eq!(s.row_count("q").await.unwrap(), 1);
}

/// The stored counters are plain BIGINTs: an epoch that cannot grow (or a negative count,
/// which no history produces) is `Corrupt`, and the clear changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_counters_are_refused() {
    let schema = unique_schema();
    let s = connect(&schema).await;
    commit_at(&s, "q", 3, &[RowMutation::upsert(1, b"a")]).await;
    let client = s.pool().get().await.unwrap();
    client
        .batch_execute(&format!(
            "UPDATE \"{schema}\".queries SET epoch = 9223372036854775807"
        ))
        .await
        .unwrap();
    let before = s.query_info("q").await.unwrap();
    let err = s.clear_query("q").await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("\"q\""), "names the query: {err}");
    assert_eq!(s.query_info("q").await.unwrap(), before);
    let err = s.remove_query("q").await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert_eq!(s.list_queries().await.unwrap(), [before]);
    // A row count the table's CHECK refuses cannot be stored; one that says fewer rows than
    // a delete removes fails the commit as corrupt.
    client
        .batch_execute(&format!(
            "UPDATE \"{schema}\".queries SET row_count = 0, epoch = 0"
        ))
        .await
        .unwrap();
    let err = s
        .apply_mutations("q", &[RowMutation::delete(1)])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert_eq!(
        s.snapshot("q", 10)
            .await
            .unwrap()
            .collect_rows()
            .await
            .unwrap()
            .len(),
        1
    );
}

/// A snapshot abandoned half-way gives its connection up (the pool must not hand out a
/// connection inside its transaction), and one left idle past the timeout fails
/// transiently instead of holding its transaction open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_and_idle_snapshots_let_go() {
    let s = PgServer::shared()
        .connect(
            PgStoreOptions::new()
                .schema(unique_schema())
                .pool_size(2)
                .snapshot_idle_timeout(Duration::from_millis(300)),
        )
        .await;
    let rows: Vec<_> = (0..100u64).map(|i| RowMutation::upsert(i, b"r")).collect();
    commit_at(&s, "q", 1, &rows).await;
    for _ in 0..5 {
        let mut snap = s.snapshot("q", 10).await.unwrap();
        assert_eq!(snap.next_chunk().await.unwrap().unwrap().len(), 10);
        drop(snap);
    }
    commit_at(&s, "q", 2, &[RowMutation::delete(0)]).await;
    assert_eq!(
        s.snapshot("q", 1000)
            .await
            .unwrap()
            .collect_rows()
            .await
            .unwrap()
            .len(),
        99
    );
    let mut snap = s.snapshot("q", 10).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let err = snap.next_chunk().await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert_eq!(s.row_count("q").await.unwrap(), 99);
}

/// When the listening connection dies (here: terminated by the server), the handle
/// reconnects and delivers the lost-notices marker, then notices flow again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_listener_reconnects_and_sends_the_marker() {
    let schema = unique_schema();
    let s = connect(&schema).await;
    let mut notices = s.commit_notices().unwrap();
    let client = s.pool().get().await.unwrap();
    let killed: i64 = client
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE query = $1 AND pid <> pg_backend_pid()",
            &[&format!("LISTEN \"{schema}_notices\"")],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(killed, 1, "one listening connection per handle");
    let marker = tokio::time::timeout(Duration::from_secs(30), notices.recv())
        .await
        .expect("a marker within 30 s")
        .unwrap();
    assert_eq!(marker.query_id, "", "{marker:?}");
    commit_at(&s, "q", 4, &[]).await;
    let notice = tokio::time::timeout(Duration::from_secs(30), notices.recv())
        .await
        .expect("a notice within 30 s")
        .unwrap();
    assert_eq!((notice.query_id.as_str(), notice.sequence), ("q", Some(4)));
}
