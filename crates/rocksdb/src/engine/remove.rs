//! Removing a query entirely, and the marker that keeps its epochs from being reused.
//!
//! A removal is one batch, like a clear: range deletes of the query's rows, outbox and
//! checkpoints, the delete of its meta record, and the put of its **removed marker** (key
//! `prefix ++ 0x00` in the meta column family, value `[1][next epoch: u64 BE]`). The cost does
//! not depend on the query's size.
//!
//! Why a marker at all: change-feed offsets are `(epoch, sequence)`. A query re-created under
//! the same id after a plain delete would start again at epoch 0, and a reader still holding
//! an offset of the removed query's epoch 0 would be served the new query's history as if it
//! continued the old one. The marker holds the epoch after the removed query's last one; the
//! first commit of a re-created query starts there and deletes the marker in its own batch,
//! so a marker and a meta record never exist together and the epoch only ever grows. Markers
//! stay for ids that are never re-created: 9 bytes of value per removed id.

use liveresults_core::codec::records::{self, MetaRecord};
use liveresults_core::contract_rules::next_epoch;
use liveresults_core::signature_set::SignatureSet;
use liveresults_core::StoreError;
use rocksdb::WriteBatch;

use super::{
    poisoned, Engine, CF_CHECKPOINTS, CF_META, CF_OUTBOX, CF_ROWS, FORMAT_KEY, STORE_FORMAT_VERSION,
};
use crate::keys::QueryPrefix;
use crate::state::SignatureIndex;

impl Engine {
    /// Removes everything of a query (rows, outbox, checkpoints, meta record) and leaves its
    /// removed marker. A query without a meta record has at most checkpoints (saved for a
    /// query never committed to): those are deleted, and no marker is written, since nothing
    /// of it was ever readable.
    pub(crate) fn remove(&self, query_id: &str) -> Result<(), StoreError> {
        let Some(handle) = self.handle(query_id)? else {
            return self.delete_checkpoints(&QueryPrefix::new(query_id)?);
        };
        let mut state = handle.state.lock().map_err(poisoned)?;
        // From disk, under the commit lock: a cached handle may belong to a query whose first
        // commit failed, or that was removed already.
        let Some(meta) = self.read_meta(query_id, &handle.prefix, None)? else {
            return self.delete_checkpoints(&handle.prefix);
        };
        // The only step that can fail comes before the write: a failed removal changes nothing.
        let floor = next_epoch(query_id, meta.epoch)?;
        let (start, end) = (handle.prefix.as_bytes(), handle.prefix.successor());
        let mut batch = WriteBatch::default();
        for cf in [CF_ROWS, CF_OUTBOX, CF_CHECKPOINTS] {
            batch.delete_range_cf(self.cf(cf)?, start, &end);
        }
        let meta_cf = self.cf(CF_META)?;
        // Markers need format 2: older builds must refuse this store from now on.
        batch.put(FORMAT_KEY, STORE_FORMAT_VERSION.to_be_bytes());
        batch.delete_cf(meta_cf, start);
        batch.put_cf(
            meta_cf,
            handle.prefix.removed_key(),
            records::encode_removed(floor),
        );
        self.db
            .write_opt(batch, &self.write_options)
            .map_err(|e| self.rocks(e))?;
        // The handle stays cached in the removed state, so a commit already waiting on its
        // lock starts the next incarnation at the floor instead of writing the old state back.
        *handle.published.lock().map_err(poisoned)? = None;
        if let SignatureIndex::Loaded(set) = &state.index {
            self.budget.release(set.len() as u64);
        }
        state.index = SignatureIndex::Loaded(SignatureSet::default());
        state.window.clear();
        state.meta = MetaRecord {
            epoch: floor,
            ..MetaRecord::default()
        };
        state.removed_marker = true;
        Ok(())
    }

    /// The epoch a re-created query starts at, when the id was removed before.
    pub(crate) fn read_removed(
        &self,
        query_id: &str,
        prefix: &QueryPrefix,
    ) -> Result<Option<u64>, StoreError> {
        let raw = self
            .db
            .get_cf(self.cf(CF_META)?, prefix.removed_key())
            .map_err(|e| self.rocks(e))?;
        raw.map(|bytes| {
            records::decode_removed(&bytes).map_err(|e| {
                StoreError::corrupt(format!("removed marker of query {query_id:?}"), e)
            })
        })
        .transpose()
    }

    fn delete_checkpoints(&self, prefix: &QueryPrefix) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        let end = prefix.successor();
        batch.delete_range_cf(self.cf(CF_CHECKPOINTS)?, prefix.as_bytes(), &end);
        self.db
            .write_opt(batch, &self.write_options)
            .map_err(|e| self.rocks(e))
    }
}
