//! Model-based property test: random commits, clears and reopens run against a backend and a
//! plain in-test model; after every step both must agree on rows, counts, sequences, epochs
//! and the outbox.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use super::helpers::rows_of;
use super::Harness;
use crate::{Commit, OutboxRetention, ResultStore, RowMutation, SequenceSpan};

const QUERIES: [&str; 3] = ["m0", "m00", "m1"];
const RETENTION: OutboxRetention = OutboxRetention {
    max_entries: 4,
    max_bytes: u64::MAX,
};

/// How many random cases to run and how long each is.
#[derive(Debug, Clone, Copy)]
pub struct ModelConfig {
    /// Number of random operation sequences.
    pub cases: u32,
    /// Maximum operations per sequence.
    pub max_ops: usize,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            cases: 48,
            max_ops: 40,
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Commit {
        query: usize,
        mutations: Vec<(u64, Option<u8>)>,
        sequenced: bool,
        skip: u64,
    },
    Clear {
        query: usize,
    },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let mutation = (0u64..24, proptest::option::weighted(0.7, any::<u8>()));
    prop_oneof![
        8 => (0..QUERIES.len(), proptest::collection::vec(mutation, 0..12), any::<bool>(), 0u64..3)
            .prop_map(|(query, mutations, sequenced, skip)| Op::Commit { query, mutations, sequenced, skip }),
        1 => (0..QUERIES.len()).prop_map(|query| Op::Clear { query }),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Debug, Default, Clone)]
struct ModelQuery {
    rows: BTreeMap<u64, Vec<u8>>,
    sequence: Option<u64>,
    epoch: u64,
    outbox: Vec<(u64, Vec<u8>)>,
    evicted_through: Option<u64>,
    /// Committed to at least once: a clear then counts (bumps the epoch).
    known: bool,
}

/// Runs the model test against stores made by `make` (one fresh harness per case).
pub fn run_model_test<H: Harness, F: Fn() -> H>(make: F, config: ModelConfig) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("test runtime");
    let mut runner = TestRunner::new(Config {
        cases: config.cases,
        failure_persistence: None,
        ..Config::default()
    });
    let ops = proptest::collection::vec(op(), 1..config.max_ops);
    let result = runner.run(&ops, |ops| {
        runtime.block_on(run_ops(make(), ops));
        Ok(())
    });
    if let Err(e) = result {
        panic!("model test failed: {e}");
    }
}

async fn run_ops<H: Harness>(mut h: H, ops: Vec<Op>) {
    let mut store = h.open(RETENTION).await;
    let mut model: Vec<ModelQuery> = vec![ModelQuery::default(); QUERIES.len()];
    for op in ops {
        match op {
            Op::Commit {
                query,
                mutations,
                sequenced,
                skip,
            } => {
                let m = &mut model[query];
                m.known = true;
                let data: Vec<Vec<u8>> = mutations
                    .iter()
                    .map(|(s, v)| vec![v.unwrap_or(0); 1 + (*s as usize % 5)])
                    .collect();
                let muts: Vec<_> = mutations
                    .iter()
                    .zip(&data)
                    .map(|((sig, v), d)| RowMutation {
                        row_signature: *sig,
                        data: v.map(|_| d.as_slice()),
                    })
                    .collect();
                for mu in &muts {
                    match mu.data {
                        Some(d) => m.rows.insert(mu.row_signature, d.to_vec()),
                        None => m.rows.remove(&mu.row_signature),
                    };
                }
                let commit = if sequenced {
                    let first = m.sequence.map_or(1, |s| s + 1) + skip;
                    let span = SequenceSpan {
                        first,
                        last: first + skip,
                    };
                    m.sequence = Some(span.last);
                    m.outbox.push((span.last, span.last.to_be_bytes().to_vec()));
                    while m.outbox.len() > RETENTION.max_entries {
                        m.evicted_through = Some(m.outbox.remove(0).0);
                    }
                    Commit::sequenced(
                        &muts,
                        span,
                        m.outbox.last().map(|e| e.1.as_slice()).unwrap_or(&[]),
                    )
                } else {
                    Commit::rows(&muts)
                };
                let receipt = store.commit(QUERIES[query], commit).await.unwrap();
                assert_eq!(receipt.row_count, m.rows.len() as u64);
            }
            Op::Clear { query } => {
                let m = &mut model[query];
                store.clear_query(QUERIES[query]).await.unwrap();
                if m.known {
                    *m = ModelQuery {
                        epoch: m.epoch + 1,
                        known: true,
                        ..ModelQuery::default()
                    };
                }
            }
            Op::Reopen => store = h.reopen(store).await,
        }
        check(&store, &model).await;
    }
}

async fn check<S: ResultStore>(store: &S, model: &[ModelQuery]) {
    for (id, m) in QUERIES.iter().zip(model) {
        assert_eq!(rows_of(store, id).await, m.rows, "rows of {id}");
        let info = store.query_info(id).await.unwrap();
        assert_eq!(info.row_count, m.rows.len() as u64, "row count of {id}");
        assert_eq!(
            (info.sequence, info.epoch),
            (m.sequence, m.epoch),
            "sequence/epoch of {id}"
        );
        let outbox = store.read_outbox(id, m.evicted_through, 100).await.unwrap();
        let got: Vec<_> = outbox
            .into_iter()
            .map(|e| (e.span.last, e.payload))
            .collect();
        assert_eq!(got, m.outbox, "outbox of {id}");
    }
}
