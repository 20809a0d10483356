//! drasi-core's own `LiveResultsWriter` trait, implemented by every liveresults store.
//!
//! liveresults keeps a copy of Drasi's seed trait ([`liveresults_core::LiveResultsWriter`]) so
//! that it builds without Drasi; this module closes the loop with the real one, so a drasi-core
//! engine (or anything else holding an `Arc<dyn drasi_core::interface::LiveResultsWriter>`) can
//! write into a liveresults store. The orphan rule forbids implementing a foreign trait for a
//! foreign type, hence the [`DrasiWriter`] wrapper.

use std::sync::Arc;

use async_trait::async_trait;
use drasi_core::interface::{
    IndexError as DrasiIndexError, LiveResultsWriter as DrasiLiveResultsWriter,
    RowMutation as DrasiRowMutation,
};
use liveresults_core::{ErrorClass, LiveResultsWriter, ResultStore, RowMutation, StoreError};

/// A liveresults store seen through drasi-core's `LiveResultsWriter`.
///
/// Every call goes through the store's own seed-trait implementation, so the guarantees are the
/// store's: a batch is applied atomically, `row_count` is exact and O(1), `clear` does not scan.
pub struct DrasiWriter<S: ?Sized> {
    store: Arc<S>,
}

impl<S: ?Sized> Clone for DrasiWriter<S> {
    fn clone(&self) -> Self {
        DrasiWriter {
            store: Arc::clone(&self.store),
        }
    }
}

impl<S: ?Sized> std::fmt::Debug for DrasiWriter<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DrasiWriter").finish_non_exhaustive()
    }
}

impl<S: ResultStore + ?Sized + 'static> DrasiWriter<S> {
    /// Wraps a store.
    pub fn new(store: Arc<S>) -> Self {
        DrasiWriter { store }
    }

    /// The wrapped store.
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    /// The writer as the trait object drasi-core's index backends hold.
    pub fn into_dyn(self) -> Arc<dyn DrasiLiveResultsWriter> {
        Arc::new(self)
    }
}

/// Maps a store error onto drasi-core's `IndexError`.
///
/// Drasi's variants carry less than ours, so the choice keeps what Drasi code can act on:
/// corrupt or unreadable data is `CorruptedData` (its detail is logged here, since the variant
/// cannot carry it); a closed, locked or transiently failing store is `ConnectionFailed` (the
/// variant Drasi treats as "the backend is not reachable right now"); everything else is
/// `Other`, which keeps the full [`StoreError`] as its `source()` for callers that downcast.
pub fn to_index_error(error: StoreError) -> DrasiIndexError {
    match error {
        StoreError::Corrupt { .. } | StoreError::UnsupportedFormat { .. } => {
            tracing::error!(error = %error, "liveresults store holds data it cannot read");
            DrasiIndexError::CorruptedData
        }
        StoreError::Closed | StoreError::Locked { .. } => DrasiIndexError::connection_failed(error),
        StoreError::Backend {
            class: ErrorClass::Transient,
            ..
        } => DrasiIndexError::connection_failed(error),
        other => DrasiIndexError::other(other),
    }
}

#[async_trait]
impl<S: ResultStore + ?Sized + 'static> DrasiLiveResultsWriter for DrasiWriter<S> {
    async fn apply_mutations(
        &self,
        query_id: &str,
        mutations: &[DrasiRowMutation<'_>],
    ) -> Result<(), DrasiIndexError> {
        // The two mutation types are field-for-field the same; only the nominal type differs.
        let ours: Vec<RowMutation<'_>> = mutations
            .iter()
            .map(|m| RowMutation {
                row_signature: m.row_signature,
                data: m.data,
            })
            .collect();
        LiveResultsWriter::apply_mutations(&*self.store, query_id, &ours)
            .await
            .map_err(to_index_error)
    }

    async fn read_snapshot(&self, query_id: &str) -> Result<Vec<(u64, Vec<u8>)>, DrasiIndexError> {
        LiveResultsWriter::read_snapshot(&*self.store, query_id)
            .await
            .map_err(to_index_error)
    }

    async fn clear(&self, query_id: &str) -> Result<(), DrasiIndexError> {
        LiveResultsWriter::clear(&*self.store, query_id)
            .await
            .map_err(to_index_error)
    }

    async fn row_count(&self, query_id: &str) -> Result<usize, DrasiIndexError> {
        LiveResultsWriter::row_count(&*self.store, query_id)
            .await
            .map_err(to_index_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_the_variant_drasi_acts_on() {
        let corrupt = StoreError::corrupt("row 1 of query \"q\"", "truncated");
        assert_eq!(to_index_error(corrupt), DrasiIndexError::CorruptedData);
        assert!(matches!(
            to_index_error(StoreError::Closed),
            DrasiIndexError::ConnectionFailed(_)
        ));
        let transient = StoreError::Backend {
            backend: "test",
            class: ErrorClass::Transient,
            message: "busy".to_owned(),
        };
        assert!(matches!(
            to_index_error(transient),
            DrasiIndexError::ConnectionFailed(_)
        ));
        let invalid = StoreError::invalid_query_id("", "empty");
        match to_index_error(invalid) {
            DrasiIndexError::Other(source) => {
                assert!(source.downcast_ref::<StoreError>().is_some(), "{source}");
            }
            other => panic!("expected Other, got {other:?}"),
        }
    }
}
