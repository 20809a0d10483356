//! Differential property test: drasi-core's own in-memory `LiveResultsWriter` is the reference;
//! the liveresults memory and RocksDB stores, seen through drasi-core's trait ([`DrasiWriter`]),
//! are driven with the same random mutation batches and clears, and after every step each
//! query's snapshot and row count must be the reference's.

use std::sync::Arc;

use drasi_core::in_memory_index::in_memory_live_results_writer::InMemoryLiveResultsWriter;
use drasi_core::interface::{LiveResultsWriter, RowMutation};
use liveresults_core::testing::env_number;
use liveresults_core::MemoryStore;
use liveresults_drasi::DrasiWriter;
use liveresults_rocksdb::{RocksStore, RocksStoreOptions};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

const QUERIES: [&str; 2] = ["big", "spent"];

#[derive(Debug, Clone)]
enum Step {
    /// One batch for one query; signatures are drawn from a small range so that batches
    /// overwrite, delete and re-insert the same rows, and repeat a signature within a batch.
    Apply {
        query: usize,
        mutations: Vec<(u64, Option<Vec<u8>>)>,
    },
    Clear {
        query: usize,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        10 => (0..QUERIES.len(), vec((0..24u64, option::of(vec(any::<u8>(), 0..16))), 0..12))
            .prop_map(|(query, mutations)| Step::Apply { query, mutations }),
        1 => (0..QUERIES.len()).prop_map(|query| Step::Clear { query }),
    ]
}

async fn sorted_snapshot(
    writer: &dyn LiveResultsWriter,
    query: &str,
) -> Result<Vec<(u64, Vec<u8>)>, TestCaseError> {
    let mut rows = writer
        .read_snapshot(query)
        .await
        .map_err(|e| TestCaseError::fail(format!("read_snapshot: {e}")))?;
    rows.sort();
    Ok(rows)
}

async fn run(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
    let rocks = RocksStore::open(dir.path(), RocksStoreOptions::new())
        .await
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let reference = InMemoryLiveResultsWriter::new();
    let ours: [(&str, Arc<dyn LiveResultsWriter>); 2] = [
        (
            "memory",
            DrasiWriter::new(Arc::new(MemoryStore::new())).into_dyn(),
        ),
        ("rocksdb", DrasiWriter::new(Arc::new(rocks)).into_dyn()),
    ];
    for (i, step) in steps.iter().enumerate() {
        match step {
            Step::Apply { query, mutations } => {
                let batch: Vec<RowMutation<'_>> = mutations
                    .iter()
                    .map(|(row_signature, data)| RowMutation {
                        row_signature: *row_signature,
                        data: data.as_deref(),
                    })
                    .collect();
                reference
                    .apply_mutations(QUERIES[*query], &batch)
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                for (name, writer) in &ours {
                    writer
                        .apply_mutations(QUERIES[*query], &batch)
                        .await
                        .map_err(|e| TestCaseError::fail(format!("{name}: {e}")))?;
                }
            }
            Step::Clear { query } => {
                reference
                    .clear(QUERIES[*query])
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                for (name, writer) in &ours {
                    writer
                        .clear(QUERIES[*query])
                        .await
                        .map_err(|e| TestCaseError::fail(format!("{name}: {e}")))?;
                }
            }
        }
        for query in QUERIES {
            let expected = sorted_snapshot(&reference, query).await?;
            let expected_count = reference
                .row_count(query)
                .await
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(expected_count, expected.len());
            for (name, writer) in &ours {
                let got = sorted_snapshot(&**writer, query).await?;
                prop_assert_eq!(
                    &got,
                    &expected,
                    "{} snapshot of {} after step {}",
                    name,
                    query,
                    i
                );
                let count = writer
                    .row_count(query)
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(
                    count,
                    expected_count,
                    "{} row_count of {} after step {}",
                    name,
                    query,
                    i
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(env_number("PROPTEST_CASES", 48)))]

    #[test]
    fn stores_match_drasi_in_memory_writer(steps in vec(step(), 1..48)) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        runtime.block_on(run(steps))?;
    }
}
