//! Mapping RocksDB errors onto the store's error classes.

use liveresults_core::{ErrorClass, StoreError};
use rocksdb::ErrorKind;

/// Classifies a RocksDB error: busy/timeouts are transient, corruption is reported as such,
/// a held LOCK file means another process owns the directory.
pub(crate) fn from_rocksdb(err: rocksdb::Error, path: &str) -> StoreError {
    let message = err.clone().into_string();
    match err.kind() {
        ErrorKind::Corruption => StoreError::Corrupt {
            what: format!("rocksdb data at {path}"),
            detail: message,
        },
        ErrorKind::Busy | ErrorKind::TimedOut | ErrorKind::TryAgain | ErrorKind::Incomplete => {
            StoreError::Backend {
                backend: "rocksdb",
                class: ErrorClass::Transient,
                message,
            }
        }
        ErrorKind::IOError if message.contains("LOCK") || message.contains("lock") => {
            StoreError::Locked {
                path: path.to_owned(),
                detail: message,
            }
        }
        _ => StoreError::Backend {
            backend: "rocksdb",
            class: ErrorClass::Permanent,
            message,
        },
    }
}

/// A record that failed to decode, with the key it was read from.
pub(crate) fn corrupt_record(what: String, err: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        what,
        detail: err.to_string(),
    }
}
