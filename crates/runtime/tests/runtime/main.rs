//! Integration tests of the reaction runtime, one module per area, all on the in-memory store
//! (this crate must test without RocksDB; the root package runs the RocksDB variants). Shared
//! helpers and test reactions come from `liveresults_runtime::testing`.

mod backpressure;
mod caught_up;
mod faults;
mod fencing;
mod hosts;
mod policies;
mod reactions;
mod remove;
mod restart;
mod sequencing;
mod shutdown;
mod sources;

use std::sync::Arc;

use liveresults_core::{MemoryStore, ResultStore};
use liveresults_runtime::{Reaction, Runtime, RuntimeConfig};

/// A runtime on `store` with `reactions`.
async fn start(
    store: &Arc<MemoryStore>,
    config: RuntimeConfig,
    reactions: Vec<Arc<dyn Reaction>>,
) -> Runtime {
    let store: Arc<dyn ResultStore> = Arc::clone(store) as Arc<dyn ResultStore>;
    Runtime::start(store, config, reactions)
        .await
        .expect("runtime starts")
}
