//! Integration tests of the reaction runtime, one module per area, all on the in-memory store
//! (this crate must test without RocksDB; the root package runs the RocksDB variants).

#[path = "runtime/reactors.rs"]
mod reactors;
#[path = "runtime/support.rs"]
mod support;

#[path = "runtime/backpressure.rs"]
mod backpressure;
#[path = "runtime/faults.rs"]
mod faults;
#[path = "runtime/policies.rs"]
mod policies;
#[path = "runtime/reactions.rs"]
mod reactions;
#[path = "runtime/restart.rs"]
mod restart;
#[path = "runtime/sequencing.rs"]
mod sequencing;
#[path = "runtime/shutdown.rs"]
mod shutdown;
#[path = "runtime/sources.rs"]
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
