//! Manifests served from memory while the database has not changed.
//!
//! A manifest GET is the hottest request a registry answers, and with SQLite each one
//! otherwise costs a hop to the blocking pool and a query. Any process may write the
//! database file (a `gc` command beside `serve`, a second registry on the same data
//! directory), so an in-process record of our own writes is not enough to know when an
//! entry went stale. SQLite's `PRAGMA data_version` is: on one connection it changes
//! whenever any other connection, in this process or another, has committed to the file.
//! Every entry is valid for the data version read *before* its query ran, and the whole
//! cache is dropped the moment the version moves. A tag moved, a manifest deleted or
//! collected: every commit moves the version, so none of them can be answered from here
//! afterwards. Reading the version touches only SQLite's shared-memory index, so it runs
//! inline on the async worker.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OpenFlags};

use super::error::db;
use crate::meta::{MetaError, StoredManifest};
use crate::oci::{Reference, RepoName};

/// Manifest bytes kept at most; past it new entries are not cached until the next change.
const MAX_BYTES: usize = 32 << 20;

pub(super) struct ManifestCache {
    /// A read-only connection that never writes, so every commit is "another connection's".
    watch: Mutex<Connection>,
    entries: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    version: i64,
    bytes: usize,
    by_reference: HashMap<(RepoName, Reference), StoredManifest>,
}

/// The data version a lookup missed at; pass it back to [`ManifestCache::insert`].
#[derive(Clone, Copy)]
pub(super) struct Version(i64);

impl ManifestCache {
    pub(super) fn open(path: &std::path::Path) -> Result<ManifestCache, MetaError> {
        let watch = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(db)?;
        super::configure(&watch)?;
        Ok(ManifestCache {
            watch: Mutex::new(watch),
            entries: Mutex::new(Entries::default()),
        })
    }

    fn data_version(&self) -> Result<i64, MetaError> {
        lock(&self.watch)
            .prepare_cached("PRAGMA data_version")
            .and_then(|mut statement| statement.query_row([], |row| row.get(0)))
            .map_err(db)
    }

    /// The cached manifest when the database is unchanged since it was read; otherwise the
    /// version to record with what the caller reads next.
    pub(super) fn get(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Result<StoredManifest, Version>, MetaError> {
        let version = self.data_version()?;
        let mut entries = lock(&self.entries);
        if entries.version != version {
            *entries = Entries {
                version,
                ..Entries::default()
            };
            return Ok(Err(Version(version)));
        }
        // Keys are owned: a borrowed lookup would need a second map shape for little gain.
        match entries.by_reference.get(&(repo.clone(), reference.clone())) {
            Some(manifest) => Ok(Ok(manifest.clone())),
            None => Ok(Err(Version(version))),
        }
    }

    /// Caches what a query started after `read_at` returned, unless the database has
    /// changed since (the entry could then be older than the newest commit).
    pub(super) fn insert(
        &self,
        read_at: Version,
        repo: &RepoName,
        reference: &Reference,
        manifest: &StoredManifest,
    ) {
        let mut entries = lock(&self.entries);
        let size = manifest.content.len();
        if entries.version != read_at.0 || entries.bytes + size > MAX_BYTES {
            return;
        }
        let key = (repo.clone(), reference.clone());
        if entries.by_reference.insert(key, manifest.clone()).is_none() {
            entries.bytes += size;
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing in either critical section can leave its value half-changed.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The property the cache stands on: a commit by any other connection to the file
    /// (another process is just another connection) moves the watching connection's
    /// version, and reads do not.
    #[test]
    fn data_version_moves_with_every_other_connections_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let writer = Connection::open(&path).unwrap();
        writer.pragma_update(None, "journal_mode", "WAL").unwrap();
        writer.execute("CREATE TABLE t (x INTEGER)", []).unwrap();
        let cache = ManifestCache::open(&path).unwrap();
        let before = cache.data_version().unwrap();
        assert_eq!(before, cache.data_version().unwrap());
        let other_process = Connection::open(&path).unwrap();
        other_process
            .query_row("SELECT count(*) FROM t", [], |row| row.get::<_, i64>(0))
            .unwrap();
        assert_eq!(before, cache.data_version().unwrap());
        other_process
            .execute("INSERT INTO t VALUES (1)", [])
            .unwrap();
        let after_other = cache.data_version().unwrap();
        assert_ne!(before, after_other);
        writer.execute("INSERT INTO t VALUES (2)", []).unwrap();
        assert_ne!(after_other, cache.data_version().unwrap());
    }
}
