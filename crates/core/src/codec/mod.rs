//! Every byte encoding liveresults stores, in one place, each behind a format version.
//!
//! Keeping the encodings here (and nowhere else) means a backend only moves opaque bytes, and
//! swapping the codec never touches store logic.

pub mod changes;
pub mod records;
pub mod row;
