//! Restart equivalence on the in-memory store (property): the property itself lives in
//! `liveresults_runtime::testing::check_restarts`, shared with the RocksDB run of the root
//! package's `tests/runtime_restart.rs`.

use liveresults_runtime::testing::{block_on, check_restarts, scenario_strategy, MemoryStores};
use proptest::prelude::*;

proptest! {
    // `PROPTEST_CASES` raises the count for a longer hunt.
    #![proptest_config(ProptestConfig { cases: liveresults_core::testing::env_number("PROPTEST_CASES", 64), ..ProptestConfig::default() })]

    #[test]
    fn restarts_do_not_change_the_final_view(scenario in scenario_strategy(40)) {
        block_on(check_restarts(scenario, MemoryStores::default()));
    }
}
