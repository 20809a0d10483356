//! Mapping RocksDB errors onto the store's error classes.

use liveresults_core::{ErrorClass, StoreError};
use rocksdb::ErrorKind;

/// Classifies a RocksDB error: busy/timeouts are transient, corruption is reported as such,
/// a held LOCK file means another process owns the directory.
pub(crate) fn from_rocksdb(err: rocksdb::Error, path: &str) -> StoreError {
    let kind = err.kind();
    let message = err.into_string();
    match kind {
        ErrorKind::Corruption => StoreError::corrupt(format!("rocksdb data at {path}"), message),
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
