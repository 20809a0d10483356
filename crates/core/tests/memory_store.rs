//! The conformance suite and model test against the in-memory store.

use liveresults_core::testing::{run_model_test, MemoryHarness, ModelConfig};

liveresults_core::conformance_suite!(MemoryHarness);

#[test]
fn memory_store_matches_the_model() {
    run_model_test(|| MemoryHarness, ModelConfig::default());
}
liveresults_core::lease_suite!(MemoryHarness);
