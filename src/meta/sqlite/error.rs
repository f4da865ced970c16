//! Maps SQLite and lock-file errors onto `MetaError`.

use crate::file_lock::LockFile;
use crate::meta::MetaError;

pub(crate) fn db(e: rusqlite::Error) -> MetaError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            MetaError::Unavailable(format!("SQLite database busy: {e}"))
        }
        // Nothing was written (the transaction rolled back); the write can be retried once
        // space is freed.
        Some(rusqlite::ErrorCode::DiskFull) => {
            MetaError::Unavailable(format!("SQLite database: disk full: {e}"))
        }
        _ => MetaError::Backend(format!("SQLite: {e}")),
    }
}

pub(crate) fn lock_error(lock: &LockFile, e: std::io::Error) -> MetaError {
    MetaError::Backend(format!("locking {}: {e}", lock.path().display()))
}
