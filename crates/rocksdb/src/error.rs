//! Mapping RocksDB errors onto the store's error classes.

use liveresults_core::{ErrorClass, StoreError};
use rocksdb::ErrorKind;

/// What RocksDB's status text says for `ENOSPC` (its `NoSpace` subcode) and for a configured
/// space limit (`SpaceLimit`).
const NO_SPACE_MARKERS: [&str; 2] = ["No space left on device", "Space limit"];

/// Classifies a RocksDB error: busy/timeouts are transient, corruption is reported as such,
/// a held LOCK file means another process owns the directory.
///
/// A full disk is transient too. RocksDB turns the first failed write into a background
/// error that refuses every later write (it goes read-only), but it does not stay there:
/// its file manager checks the free space every 5 seconds and resumes writes by itself once
/// at least one write buffer (`write_buffer_bytes`) is free again. The same operation can
/// then succeed, so it is worth retrying and must not count as a permanent failure.
pub(crate) fn from_rocksdb(err: rocksdb::Error, path: &str) -> StoreError {
    classify(&err.kind(), err.into_string(), path)
}

fn classify(kind: &ErrorKind, message: String, path: &str) -> StoreError {
    let transient = |message| StoreError::Backend {
        backend: "rocksdb",
        class: ErrorClass::Transient,
        message,
    };
    match *kind {
        ErrorKind::Corruption => StoreError::corrupt(format!("rocksdb data at {path}"), message),
        ErrorKind::Busy | ErrorKind::TimedOut | ErrorKind::TryAgain | ErrorKind::Incomplete => {
            transient(message)
        }
        ErrorKind::IOError if is_no_space(&message) => transient(message),
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

fn is_no_space(message: &str) -> bool {
    NO_SPACE_MARKERS.iter().any(|m| message.contains(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_transient_other_io_errors_are_not() {
        // The texts RocksDB gives a failed WAL append and, afterwards, every refused write.
        for message in [
            "IO error: No space left on device: While appending to file: /d/000012.log: No space left on device",
            "IO error: No space left on device: While appending to file: /d/000012.log",
        ] {
            let e = classify(&ErrorKind::IOError, message.into(), "/d");
            assert!(e.is_transient(), "{e}");
        }
        let e = classify(
            &ErrorKind::IOError,
            "IO error: Input/output error".into(),
            "/d",
        );
        assert!(!e.is_transient(), "{e}");
        let e = classify(
            &ErrorKind::IOError,
            "IO error: lock hold by current process".into(),
            "/d",
        );
        assert!(matches!(e, StoreError::Locked { .. }), "{e}");
    }
}
