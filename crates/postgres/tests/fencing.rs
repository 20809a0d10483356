//! Fenced clears and removals on a real server, beyond the shared lease cases: the plain
//! clear and removal are refused under a live lease; the fence is checked inside the clear's
//! transaction with the lease row locked, so a takeover waits for a clear that checked the
//! old lease; and a schema written by a build at format 1 (unfenced functions) is migrated
//! to the fenced ones with its data.

use std::time::{Duration, Instant};

use liveresults_core::lease::{LeaseClaim, LeaseOutcome, Leases};
use liveresults_core::testing::rows_of;
use liveresults_core::{Checkpoint, Commit, ResultStore, RowMutation, SequenceSpan, StoreError};
use liveresults_postgres::testing::{unique_schema, PgServer};
use liveresults_postgres::tokio_postgres::{self, Client, NoTls};
use liveresults_postgres::{PgStore, PgStoreOptions, PG_FORMAT_VERSION};

const CP: Checkpoint = Checkpoint {
    sequence: Some(1),
    config_hash: 7,
};

async fn connect(schema: &str) -> PgStore {
    PgServer::shared()
        .connect(PgStoreOptions::new().schema(schema))
        .await
}

/// A plain client on the shared server, for SQL outside any store.
async fn raw_client() -> Client {
    let (client, connection) = tokio_postgres::connect(&PgServer::shared().url(), NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
}

fn claim(holder: &'static str, ttl: Duration) -> LeaseClaim<'static> {
    LeaseClaim {
        holder,
        address: "http://test",
        ttl,
    }
}

async fn granted(store: &PgStore, holder: &'static str, ttl: Duration) -> u64 {
    match store.acquire("q", claim(holder, ttl)).await.unwrap() {
        LeaseOutcome::Granted { token } => token,
        held => panic!("lease not granted: {held:?}"),
    }
}

/// The refusal's live lease, or a panic naming what came instead.
fn live_of<T: std::fmt::Debug>(result: Result<T, StoreError>) -> Option<(String, u64)> {
    match result {
        Err(StoreError::Fenced { live, .. }) => live,
        other => panic!("expected Fenced, got {other:?}"),
    }
}

/// Whether another session waits on a lock while running a statement that contains `text`
/// (callers include the schema name, so other tests on the shared server do not count).
async fn waits_on_lock(client: &Client, text: &str) -> bool {
    let row = client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE wait_event_type = 'Lock' AND strpos(query, $1) > 0 AND pid <> pg_backend_pid()",
            &[&text],
        )
        .await
        .unwrap();
    row.get::<_, i64>(0) > 0
}

async fn until_waiting(client: &Client, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !waits_on_lock(client, text).await {
        assert!(Instant::now() < deadline, "{text} never waited on a lock");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Offline tools use the plain clear and removal: under a live lease they change nothing
/// and name the owner; once the lease is released they work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_clear_and_remove_are_refused_under_a_live_lease() {
    let store = connect(&unique_schema()).await;
    let token = granted(&store, "a", Duration::from_secs(60)).await;
    let rows = [RowMutation::upsert(1, b"a")];
    let commit = Commit::sequenced(&rows, SequenceSpan::single(1), b"p").with_fence(token);
    store.commit("q", commit).await.unwrap();
    store.save_checkpoint("r", "q", CP).await.unwrap();
    let before = store.query_info("q").await.unwrap();

    let owner = Some(("a".to_owned(), token));
    assert_eq!(live_of(store.clear_query("q").await), owner);
    assert_eq!(live_of(store.remove_query("q").await), owner);
    assert_eq!(store.query_info("q").await.unwrap(), before);
    assert_eq!(store.checkpoint("r", "q").await.unwrap(), Some(CP));
    assert_eq!(rows_of(&store, "q").await.len(), 1);

    store.release("q", token).await.unwrap();
    assert_eq!(store.clear_query("q").await.unwrap().epoch, 1);
    store.remove_query("q").await.unwrap();
    assert!(store.list_queries().await.unwrap().is_empty());
    // Without a live lease a token is refused, naming no lease.
    assert_eq!(
        live_of(store.clear_query_fenced("q", Some(token)).await),
        None
    );
}

/// The clear checks the lease and keeps the lease row locked until it commits: a clear that
/// passed the fence and then waits (here on the meta row, locked by another transaction)
/// holds back an acquire after the lease expired, and the new owner starts from the cleared
/// query. Checking the lease first and clearing in another transaction would let the
/// acquire through at once, and the late clear would wipe the new owner's query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_waits_for_a_clear_that_checked_the_old_lease() {
    let schema = unique_schema();
    let store = connect(&schema).await;
    let ttl = Duration::from_millis(400);
    let old = granted(&store, "a", ttl).await;
    let rows = [RowMutation::upsert(1, b"a")];
    let commit = Commit::sequenced(&rows, SequenceSpan::single(1), b"p").with_fence(old);
    store.commit("q", commit).await.unwrap();

    let blocker = raw_client().await;
    blocker.batch_execute("BEGIN").await.unwrap();
    blocker
        .execute(
            &format!("SELECT 1 FROM \"{schema}\".queries WHERE query_id = $1 FOR UPDATE"),
            &[&b"q".as_slice()],
        )
        .await
        .unwrap();
    let watcher = raw_client().await;

    let clear = tokio::spawn({
        let store = store.clone();
        async move { store.clear_query_fenced("q", Some(old)).await }
    });
    until_waiting(&watcher, &format!("{schema}\".clear_query")).await;
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    assert_eq!(
        store.holder("q").await.unwrap(),
        None,
        "the old lease expired"
    );
    let acquire = tokio::spawn({
        let store = store.clone();
        async move { granted(&store, "b", Duration::from_secs(60)).await }
    });
    until_waiting(&watcher, &format!("{schema}\".acquire_lease")).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !acquire.is_finished(),
        "the acquire did not wait for the clear"
    );

    blocker.batch_execute("ROLLBACK").await.unwrap();
    let cleared = clear
        .await
        .unwrap()
        .expect("the clear checked a live lease");
    let new = acquire.await.unwrap();
    assert!(new > old);
    assert_eq!((cleared.epoch, cleared.sequence), (1, None));
    // The new owner's first commit lands on the cleared query, and the old token is dead.
    let rows = [RowMutation::upsert(2, b"b")];
    let commit = Commit::sequenced(&rows, SequenceSpan::single(1), b"p").with_fence(new);
    store.commit("q", commit).await.unwrap();
    assert_eq!(
        live_of(store.clear_query_fenced("q", Some(old)).await),
        Some(("b".to_owned(), new))
    );
    assert_eq!(
        rows_of(&store, "q").await.into_iter().collect::<Vec<_>>(),
        vec![(2, b"b".to_vec())]
    );
}

/// A schema as a format-1 build left it (its migration only, its unfenced functions, a
/// committed row and a live lease) is migrated on connect: the data is kept, the unfenced
/// functions are gone, and the clear is fenced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_format_1_schema_is_migrated_to_fenced_clears() {
    let schema = unique_schema();
    let s = format!("\"{schema}\"");
    let v1 = include_str!("../src/migrations/v1.sql")
        .replace("{schema}", &s)
        .replace("{channel}", &format!("{schema}_notices"));
    let client = raw_client().await;
    client
        .batch_execute(&format!(
            "BEGIN; CREATE SCHEMA {s}; \
             CREATE TABLE {s}.migrations (version integer PRIMARY KEY, \
                 description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now()); \
             {v1}; \
             INSERT INTO {s}.migrations (version, description) VALUES (1, 'format 1'); COMMIT"
        ))
        .await
        .unwrap();
    // Sequence 1 and signature 1 are stored as 1 - 2^63.
    let one = i64::MIN + 1;
    client
        .query_one(
            &format!(
                "SELECT r_status FROM {s}.commit_batch('q'::bytea, 'q', NULL, true, $1, $1, \
                 'p'::bytea, 1024, 1000000, ARRAY[$1]::bigint[], ARRAY['a'::bytea], \
                 ARRAY[]::bigint[])"
            ),
            &[&one],
        )
        .await
        .unwrap();
    client
        .query_one(
            &format!("SELECT * FROM {s}.acquire_lease('q'::bytea, 'a', 'http://a', 60000)"),
            &[],
        )
        .await
        .unwrap();

    let store = connect(&schema).await;
    let versions: Vec<i32> = client
        .query(
            &format!("SELECT version FROM {s}.migrations ORDER BY version"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let expected: Vec<i32> = (1..=PG_FORMAT_VERSION as i32).collect();
    assert_eq!(versions, expected);
    let unfenced = client
        .query_one(
            "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
             WHERE n.nspname = $1 AND p.proname IN ('clear_query', 'remove_query') \
             AND p.pronargs = 2",
            &[&schema],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(unfenced, 0, "the unfenced functions of format 1 are gone");

    let info = store.query_info("q").await.unwrap();
    assert_eq!((info.sequence, info.row_count, info.epoch), (Some(1), 1, 0));
    assert_eq!(
        rows_of(&store, "q").await.into_iter().collect::<Vec<_>>(),
        vec![(1, b"a".to_vec())]
    );
    assert_eq!(
        live_of(store.clear_query("q").await),
        Some(("a".to_owned(), 1))
    );
    let cleared = store.clear_query_fenced("q", Some(1)).await.unwrap();
    assert_eq!((cleared.epoch, cleared.row_count), (1, 0));
}
