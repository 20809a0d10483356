//! Helpers the conformance cases share; [`rows_of`] and [`commit_at`] are public for backends'
//! own tests.

use std::collections::BTreeMap;

use super::Harness;
use crate::{Commit, OutboxRetention, ResultStore, RowMutation, SequenceSpan};

/// The query most cases use.
pub(super) const Q: &str = "q1";

/// Opens the harness's store with the default outbox retention.
pub(super) async fn open<H: Harness>(h: &mut H) -> H::Store {
    h.open(OutboxRetention::default()).await
}

/// Every row of `query_id`, read through a chunked snapshot, as a sorted map.
pub async fn rows_of<S: ResultStore + ?Sized>(store: &S, query_id: &str) -> BTreeMap<u64, Vec<u8>> {
    let pairs = store
        .snapshot(query_id, 3)
        .await
        .unwrap()
        .collect_rows()
        .await
        .unwrap();
    let len = pairs.len();
    let map: BTreeMap<_, _> = pairs.into_iter().collect();
    assert_eq!(map.len(), len, "snapshot returned a signature twice");
    map
}

/// The query's row count, as `query_info` reports it.
pub(super) async fn count<S: ResultStore + ?Sized>(store: &S, query_id: &str) -> u64 {
    store.query_info(query_id).await.unwrap().row_count
}

/// Commits `mutations` as sequence `seq` with payload `p<seq>`.
pub async fn commit_at<S: ResultStore + ?Sized>(
    store: &S,
    query_id: &str,
    seq: u64,
    mutations: &[RowMutation<'_>],
) {
    let payload = format!("p{seq}");
    store
        .commit(
            query_id,
            Commit::sequenced(mutations, SequenceSpan::single(seq), payload.as_bytes()),
        )
        .await
        .unwrap();
}

/// Rows as a map, to compare with [`rows_of`].
pub(super) fn map(entries: &[(u64, &[u8])]) -> BTreeMap<u64, Vec<u8>> {
    entries.iter().map(|(s, d)| (*s, d.to_vec())).collect()
}
