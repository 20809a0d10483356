//! Test support for the runtime (feature `testing`): event builders for both Drasi formats,
//! store readers, random event streams with their plain model, test reactions, and the
//! restart-equivalence property, written once over a [`StoreFactory`] so that every backend
//! runs the same one (this crate on the in-memory store, the root package on RocksDB).
//!
//! Everything here panics on failure, as test code should: it is not for production use.

mod events;
mod reactors;
mod restart;
mod state;
mod streams;

pub use events::*;
pub use reactors::*;
pub use restart::*;
pub use state::*;
pub use streams::*;
