//! The shared `redis-server` test support lives in the crate (feature `testing`), so other
//! crates' tests start servers the same way; the tests and benches here keep `support::…`.

pub use liveresults_redis::testing::*;
