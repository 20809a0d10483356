//! Helpers shared by the root package's integration tests.

pub mod hosts;
pub mod serve;
