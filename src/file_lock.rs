//! Advisory file locks (`flock`) for the embedded stores.
//!
//! A data directory can be used by more than one process at once — `serve` and the `gc`
//! command an operator runs beside it — so the locks that keep the embedded stores'
//! guarantees are locks on files, not in-process mutexes. Every holder opens the file anew:
//! locks taken through separate open files conflict even within one process, so the same
//! locks also order the tasks of one registry. Taking a lock may block: call from a
//! blocking thread.

use std::fs::{File, TryLockError};
use std::io;
use std::path::{Path, PathBuf};

/// A lock file (created if missing).
#[derive(Debug, Clone)]
pub struct LockFile {
    path: PathBuf,
}

/// A held lock, released when dropped (closing the file releases it).
#[derive(Debug)]
pub struct Held(#[allow(dead_code)] File);

impl LockFile {
    pub fn create(path: PathBuf) -> io::Result<LockFile> {
        let lock = LockFile { path };
        lock.open()?;
        Ok(lock)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn open(&self) -> io::Result<File> {
        crate::durable::private_file()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.path)
    }

    /// Waits while anyone holds the lock exclusively.
    pub fn shared(&self) -> io::Result<Held> {
        let file = self.open()?;
        file.lock_shared()?;
        Ok(Held(file))
    }

    /// Waits while anyone holds the lock.
    pub fn exclusive(&self) -> io::Result<Held> {
        let file = self.open()?;
        file.lock()?;
        Ok(Held(file))
    }

    /// The lock, or `None` when someone holds it.
    pub fn try_exclusive(&self) -> io::Result<Option<Held>> {
        let file = self.open()?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Held(file))),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_holders_exclude_an_exclusive_one_across_open_files() {
        let dir = tempfile::tempdir().unwrap();
        let lock = LockFile::create(dir.path().join("x.lock")).unwrap();
        let first = lock.shared().unwrap();
        let second = lock.shared().unwrap();
        assert!(lock.try_exclusive().unwrap().is_none());
        drop((first, second));
        let alone = lock.exclusive().unwrap();
        let probe = File::open(lock.path()).unwrap();
        assert!(matches!(
            probe.try_lock_shared(),
            Err(TryLockError::WouldBlock)
        ));
        assert!(lock.try_exclusive().unwrap().is_none());
        drop(alone);
        assert!(probe.try_lock_shared().is_ok());
    }
}
