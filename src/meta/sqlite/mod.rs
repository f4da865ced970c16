//! The embedded `MetadataStore`: SQLite (bundled) in WAL mode, with its own refinery
//! migrations (`migrations-embedded/meta/`), for running without PostgreSQL.
//!
//! One writer connection runs every write as a `BEGIN IMMEDIATE` transaction, so writes are
//! serialised: each read-check-write sequence the PostgreSQL store guards with row locks
//! (a manifest's references, an upload's byte count) holds here because no other write can
//! interleave. Reads use a few connections of their own and, under WAL, never wait for the
//! writer. SQLite calls block, so they run on tokio's blocking pool.

mod blobs;
mod error;
mod follow;
mod gc;
mod integrity;
mod layouts;
mod manifest_cache;
mod manifests;
mod migrate;
mod mirror;
mod outbox;
mod referrers;
mod repos;
mod sql;
mod uploads;
mod users;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use cid::Cid;
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};
use uuid::Uuid;

use self::error::{db, lock_error};
use self::sql::{limit, names};
use super::outbox::{Notice, OutboxCounts, OutboxEntry, OutboxStore, Retry};
use super::sql_common::{completed_chunks, released_chunks};
use super::{
    BlobRecord, ImageLayout, MetaError, MetadataStore, NewManifest, Page, PendingPin,
    ProtectedTags, Quarantined, RepoOrigin, StoredManifest, Upload, UploadChunk,
};
use crate::file_lock::LockFile;
use crate::oci::{Descriptor, Digest, Reference, RepoName, Tag};

/// Read connections: enough for the blocking pool to serve concurrent pulls.
const READERS: usize = 4;
/// How long a statement waits for a lock held by another process (another registry on
/// the same file) before the request fails as unavailable.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    /// Which reader to wait for when all are busy (round robin).
    next_reader: AtomicUsize,
    /// Connections running a statement, and calls waiting for a connection (metrics).
    busy: AtomicUsize,
    waiting: AtomicUsize,
    /// One GC run at a time; recording a CID shares the CID lock and an unpin holds it
    /// alone (see gc.rs), so no unpin runs between a commit and the moment its row is
    /// visible — across every process using the data directory.
    cid_lock: LockFile,
    gc_lock: LockFile,
    manifests: manifest_cache::ManifestCache,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

/// `<database file>.<suffix>`, the lock files that stand in for PostgreSQL's advisory
/// locks across the processes sharing the data directory.
fn lock_beside(database: &Path, suffix: &str) -> Result<LockFile, MetaError> {
    let mut name = database.as_os_str().to_owned();
    name.push(format!(".{suffix}"));
    let path = std::path::PathBuf::from(name);
    LockFile::create(path.clone())
        .map_err(|e| MetaError::Backend(format!("creating {}: {e}", path.display())))
}

fn configure(connection: &Connection) -> Result<(), MetaError> {
    connection.busy_timeout(BUSY_TIMEOUT).map_err(db)?;
    // Without the query planner stability guarantee, planning a join marks its `col = ?`
    // parameters as plan-changing, and then every reuse of the statement from rusqlite's
    // cache (which clears the bindings) recompiles it: a manifest GET's three-table join
    // was parsed and planned again on every call. Nothing here depends on plans chosen by
    // a bound value (no LIKE on an index, no ANALYZE samples).
    connection
        .set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .map_err(db)?;
    connection
        .pragma_update(None, "foreign_keys", "ON")
        .map_err(db)?;
    // FULL: in WAL mode each commit syncs the WAL, so an acknowledged write survives a
    // power cut (NORMAL syncs only at checkpoints and loses the latest commits).
    connection
        .pragma_update(None, "synchronous", "FULL")
        .map_err(db)?;
    Ok(())
}

/// Adds one to a gauge for as long as it lives.
struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    fn new(gauge: &'a AtomicUsize) -> Counted<'a> {
        gauge.fetch_add(1, Ordering::Relaxed);
        Counted(gauge)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Inner {
    /// Locks `connection`, counted as waiting while another call has it.
    fn acquire<'a>(&'a self, connection: &'a Mutex<Connection>) -> MutexGuard<'a, Connection> {
        if let Ok(free) = connection.try_lock() {
            return free;
        }
        let _waiting = Counted::new(&self.waiting);
        lock(connection)
    }
}

fn lock(connection: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    // SQLite rolls back a transaction whose owner panicked, so the connection stays usable.
    connection
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl SqliteStore {
    /// Opens (creating and migrating if needed) the database file at `path`.
    pub fn open(path: &Path) -> Result<SqliteStore, MetaError> {
        crate::durable::prepare_database_file(path)
            .map_err(|e| MetaError::Backend(format!("creating {}: {e}", path.display())))?;
        let mut writer = Connection::open(path).map_err(db)?;
        // WAL: readers never wait for the writer, and a crash loses no committed write.
        writer
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(db)?;
        configure(&writer)?;
        migrate::migrate(&mut writer)?;
        // SQLite syncs the directory for its journals, not for the database file it creates.
        crate::durable::sync_database_file(path)
            .map_err(|e| MetaError::Backend(format!("syncing {}: {e}", path.display())))?;
        let readers = (0..READERS)
            .map(|_| {
                let reader = Connection::open_with_flags(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map_err(db)?;
                configure(&reader)?;
                Ok(Mutex::new(reader))
            })
            .collect::<Result<Vec<_>, MetaError>>()?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                writer: Mutex::new(writer),
                readers,
                next_reader: AtomicUsize::new(0),
                busy: AtomicUsize::new(0),
                waiting: AtomicUsize::new(0),
                cid_lock: lock_beside(path, "cid-lock")?,
                gc_lock: lock_beside(path, "gc-lock")?,
                manifests: manifest_cache::ManifestCache::open(path)?,
            }),
        })
    }

    /// Runs a read on a free read connection (waiting for one only if all are busy).
    async fn read<T: Send + 'static>(
        &self,
        query: impl FnOnce(&Connection) -> Result<T, MetaError> + Send + 'static,
    ) -> Result<T, MetaError> {
        let inner = self.inner.clone();
        blocking(move || {
            let free = inner
                .readers
                .iter()
                .find_map(|reader| reader.try_lock().ok());
            let connection = match free {
                Some(connection) => connection,
                None => {
                    let slot =
                        inner.next_reader.fetch_add(1, Ordering::Relaxed) % inner.readers.len();
                    inner.acquire(&inner.readers[slot])
                }
            };
            let _busy = Counted::new(&inner.busy);
            query(&connection)
        })
        .await
    }

    /// Runs `work` in one write transaction, committed when it returns `Ok` with `true`
    /// as its second value (so a refused write changes nothing).
    async fn write_if<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Transaction<'_>) -> Result<(T, bool), MetaError> + Send + 'static,
    ) -> Result<T, MetaError> {
        self.write_with(false, work).await
    }

    /// A write that records CIDs: it holds the CID lock shared until it has committed.
    async fn write_recording<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Transaction<'_>) -> Result<(T, bool), MetaError> + Send + 'static,
    ) -> Result<T, MetaError> {
        self.write_with(true, work).await
    }

    async fn write_with<T: Send + 'static>(
        &self,
        recording: bool,
        work: impl FnOnce(&Transaction<'_>) -> Result<(T, bool), MetaError> + Send + 'static,
    ) -> Result<T, MetaError> {
        let inner = self.inner.clone();
        blocking(move || {
            let _recording = recording
                .then(|| {
                    inner
                        .cid_lock
                        .shared()
                        .map_err(|e| lock_error(&inner.cid_lock, e))
                })
                .transpose()?;
            let mut connection = inner.acquire(&inner.writer);
            let _busy = Counted::new(&inner.busy);
            let tx = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db)?;
            let (value, commit) = work(&tx)?;
            if commit {
                tx.commit().map_err(db)?;
            }
            Ok(value)
        })
        .await
    }

    async fn write<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Transaction<'_>) -> Result<T, MetaError> + Send + 'static,
    ) -> Result<T, MetaError> {
        self.write_if(move |tx| work(tx).map(|value| (value, true)))
            .await
    }
}

impl SqliteStore {
    /// Runs a `DELETE` of one row by `key` (?1) in the repository named `repo` (?2); whether
    /// a row went.
    /// ...and records `notices` with it when a row went.
    async fn delete_in_repository(
        &self,
        sql: &'static str,
        key: String,
        repo: &RepoName,
        notices: &[Notice],
    ) -> Result<bool, MetaError> {
        let (repo, notices) = (repo.clone(), notices.to_vec());
        self.write(move |tx| {
            let removed = tx.execute(sql, [key.as_str(), repo.as_str()]).map_err(db)? > 0;
            outbox::record_if(tx, removed, &notices)
        })
        .await
    }
}

async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, MetaError> + Send + 'static,
) -> Result<T, MetaError> {
    tokio::task::spawn_blocking(call)
        .await
        .map_err(|e| MetaError::Backend(format!("SQLite task: {e}")))?
}

#[async_trait]
impl super::status::StoreStatus for SqliteStore {
    async fn schema_current(&self) -> Result<bool, MetaError> {
        self.read(migrate::current).await
    }

    /// The writer and the readers, as a pool of fixed size.
    fn pool_use(&self) -> Option<super::status::PoolUse> {
        let connections = self.inner.readers.len() + 1;
        let busy = self.inner.busy.load(Ordering::Relaxed);
        Some(super::status::PoolUse {
            max: connections,
            open: connections,
            idle: connections.saturating_sub(busy),
            waiting: self.inner.waiting.load(Ordering::Relaxed),
        })
    }
}

#[async_trait]
impl MetadataStore for SqliteStore {
    async fn ping(&self) -> Result<(), MetaError> {
        self.read(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(db))
            .await
    }

    async fn blob(&self, digest: &Digest) -> Result<Option<BlobRecord>, MetaError> {
        let digest = digest.to_string();
        self.read(move |c| blobs::get(c, &digest)).await
    }

    async fn blob_by_cid(&self, cid: &Cid) -> Result<Option<BlobRecord>, MetaError> {
        let cid = cid.to_string();
        self.read(move |c| blobs::by_cid(c, &cid)).await
    }

    async fn repositories_with_cid(&self, cid: &Cid) -> Result<Vec<String>, MetaError> {
        let cid = cid.to_string();
        self.read(move |c| {
            names(
                c,
                "SELECT r.name FROM blobs b \
                 JOIN repository_blobs rb ON rb.digest = b.digest \
                 JOIN repositories r ON r.id = rb.repository_id \
                 WHERE b.cid = ?1 \
                 UNION SELECT r.name FROM image_layouts l \
                 JOIN repositories r ON r.id = l.repository_id WHERE l.cid = ?1 \
                 ORDER BY 1",
                &[&cid],
            )
        })
        .await
    }

    async fn repository_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<BlobRecord>, MetaError> {
        let (repo, digest) = (repo.clone(), digest.clone());
        self.read(move |c| blobs::linked(c, &repo, &digest)).await
    }

    async fn commit_blob_with_notices(
        &self,
        repo: &RepoName,
        blob: BlobRecord,
        notices: &[Notice],
    ) -> Result<BlobRecord, MetaError> {
        let (repo, notices) = (repo.clone(), notices.to_vec());
        self.write_recording(move |tx| {
            let stored = blobs::commit(tx, &repo, &blob)?;
            outbox::record(tx, &notices)?;
            Ok((stored, true))
        })
        .await
    }

    async fn mount_blob_with_notices(
        &self,
        from: &RepoName,
        to: &RepoName,
        digest: &Digest,
        notices: &[Notice],
    ) -> Result<Option<BlobRecord>, MetaError> {
        let (from, to, digest) = (from.clone(), to.clone(), digest.clone());
        let notices = notices.to_vec();
        self.write_if(move |tx| {
            let Some(record) = blobs::linked(tx, &from, &digest)? else {
                return Ok((None, false));
            };
            let to_id = repos::ensure(tx, &to)?;
            blobs::link(tx, to_id, &record.digest.to_string())?;
            outbox::record(tx, &notices)?;
            Ok((Some(record), true))
        })
        .await
    }

    async fn quarantine_blob(&self, digest: &Digest, reason: &str) -> Result<bool, MetaError> {
        let (digest, reason) = (digest.to_string(), reason.to_owned());
        self.write(move |tx| integrity::quarantine(tx, &digest, &reason))
            .await
    }

    async fn release_blob(&self, digest: &Digest) -> Result<bool, MetaError> {
        let digest = digest.to_string();
        self.write(move |tx| integrity::release(tx, &digest)).await
    }

    async fn is_quarantined(&self, digest: &Digest) -> Result<bool, MetaError> {
        let digest = digest.to_string();
        self.read(move |c| integrity::is_quarantined(c, &digest))
            .await
    }

    async fn quarantined_blobs(&self) -> Result<Vec<Quarantined>, MetaError> {
        self.read(integrity::all).await
    }

    async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, MetaError> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        self.write(move |tx| integrity::try_lease(tx, &name, &holder, ttl))
            .await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), MetaError> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        self.write(move |tx| integrity::release_lease(tx, &name, &holder))
            .await
    }

    async fn unlink_blob_with_notices(
        &self,
        repo: &RepoName,
        digest: &Digest,
        notices: &[Notice],
    ) -> Result<bool, MetaError> {
        self.delete_in_repository(
            "DELETE FROM repository_blobs WHERE digest = ?1 \
             AND repository_id = (SELECT id FROM repositories WHERE name = ?2)",
            digest.to_string(),
            repo,
            notices,
        )
        .await
    }

    async fn manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Option<StoredManifest>, MetaError> {
        let read_at = match self.inner.manifests.get(repo, reference)? {
            Ok(cached) => return Ok(Some(cached)),
            Err(version) => version,
        };
        let (key_repo, key_reference) = (repo.clone(), reference.clone());
        let found = self
            .read(move |c| manifests::get(c, &key_repo, &key_reference))
            .await?;
        if let Some(manifest) = &found {
            self.inner
                .manifests
                .insert(read_at, repo, reference, manifest);
        }
        Ok(found)
    }

    async fn put_manifest_with(
        &self,
        repo: &RepoName,
        manifest: NewManifest,
        tag: Option<&Tag>,
        protected: &ProtectedTags,
        notices: &[Notice],
    ) -> Result<(), MetaError> {
        let (repo, tag, protected) = (repo.clone(), tag.cloned(), protected.clone());
        let notices = notices.to_vec();
        self.write(move |tx| {
            manifests::put(tx, &repo, &manifest, tag.as_ref(), &protected)?;
            outbox::record(tx, &notices)
        })
        .await
    }

    async fn repository_origin(&self, repo: &RepoName) -> Result<RepoOrigin, MetaError> {
        let repo = repo.clone();
        self.read(move |c| mirror::origin(c, &repo)).await
    }

    async fn put_mirrored_manifest(
        &self,
        repo: &RepoName,
        upstream: &str,
        manifest: NewManifest,
        tag: Option<&Tag>,
        notices: &[Notice],
    ) -> Result<(), MetaError> {
        let (repo, upstream, tag) = (repo.clone(), upstream.to_owned(), tag.cloned());
        let notices = notices.to_vec();
        self.write(move |tx| {
            mirror::put(tx, &repo, &upstream, &manifest, tag.as_ref())?;
            outbox::record(tx, &notices)
        })
        .await
    }

    async fn mirrored_tag_checked(
        &self,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<Option<std::time::SystemTime>, MetaError> {
        let (repo, tag) = (repo.clone(), tag.clone());
        self.read(move |c| mirror::tag_checked(c, &repo, &tag))
            .await
    }

    async fn confirm_mirrored_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
        digest: &Digest,
    ) -> Result<bool, MetaError> {
        let (repo, tag, digest) = (repo.clone(), tag.clone(), digest.clone());
        self.write(move |tx| mirror::confirm_tag(tx, &repo, &tag, &digest))
            .await
    }

    async fn delete_manifest_with(
        &self,
        repo: &RepoName,
        digest: &Digest,
        protected: &ProtectedTags,
        notices: &[Notice],
    ) -> Result<bool, MetaError> {
        let (repo, digest, protected) = (repo.clone(), digest.clone(), protected.clone());
        let notices = notices.to_vec();
        self.write(move |tx| {
            let deleted = manifests::delete(tx, &repo, &digest, &protected)?;
            outbox::record_if(tx, deleted, &notices)
        })
        .await
    }

    async fn delete_tag_with(
        &self,
        repo: &RepoName,
        tag: &Tag,
        protected: &ProtectedTags,
        notices: &[Notice],
    ) -> Result<bool, MetaError> {
        let (repo, tag, protected) = (repo.clone(), tag.clone(), protected.clone());
        let notices = notices.to_vec();
        self.write(move |tx| {
            let deleted = manifests::delete_tag(tx, &repo, &tag, None, &protected)?;
            outbox::record_if(tx, deleted, &notices)
        })
        .await
    }

    async fn delete_tag_pointing_at(
        &self,
        repo: &RepoName,
        tag: &Tag,
        manifest: &Digest,
        protected: &ProtectedTags,
        notices: &[Notice],
    ) -> Result<bool, MetaError> {
        let (repo, tag, manifest) = (repo.clone(), tag.clone(), manifest.clone());
        let (protected, notices) = (protected.clone(), notices.to_vec());
        self.write(move |tx| {
            let deleted = manifests::delete_tag(tx, &repo, &tag, Some(&manifest), &protected)?;
            outbox::record_if(tx, deleted, &notices)
        })
        .await
    }

    async fn record_layout(
        &self,
        repo: &RepoName,
        tag: &Tag,
        manifest: &Digest,
        cid: &Cid,
    ) -> Result<bool, MetaError> {
        let (repo, tag, manifest, cid) = (repo.clone(), tag.clone(), manifest.clone(), *cid);
        self.write_recording(move |tx| {
            let recorded = layouts::record(tx, &repo, &tag, &manifest, &cid)?;
            Ok((recorded, recorded))
        })
        .await
    }

    async fn image_layout(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Option<ImageLayout>, MetaError> {
        let (repo, reference) = (repo.clone(), reference.clone());
        self.read(move |c| layouts::get(c, &repo, &reference)).await
    }

    async fn unpublished_tags(
        &self,
        repo: &RepoName,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Tag>, MetaError> {
        let (repo, after) = (repo.clone(), after.map(str::to_owned));
        self.read(move |c| layouts::unpublished(c, &repo, after.as_deref(), limit))
            .await
    }

    async fn queue_layout(
        &self,
        repo: &RepoName,
        tag: &Tag,
        manifest: &Digest,
    ) -> Result<(), MetaError> {
        let (repo, tag, manifest) = (repo.clone(), tag.clone(), manifest.clone());
        self.write(move |tx| layouts::queue(tx, &repo, &tag, &manifest))
            .await
    }

    async fn claim_layouts(
        &self,
        limit: u32,
        lease: std::time::Duration,
    ) -> Result<Vec<super::QueuedLayout>, MetaError> {
        // Asked on a reader first: an idle publisher polls every few seconds, and a write
        // transaction would take the one writer from the pushes for nothing.
        if !self.read(layouts::any_due).await? {
            return Ok(Vec::new());
        }
        self.write(move |tx| layouts::claim(tx, limit, lease)).await
    }

    async fn retry_layout(
        &self,
        entry: &super::QueuedLayout,
        backoff: std::time::Duration,
    ) -> Result<(), MetaError> {
        let entry = entry.clone();
        self.write(move |tx| layouts::retry(tx, &entry, backoff))
            .await
    }

    async fn dequeue_layout(&self, entry: &super::QueuedLayout) -> Result<(), MetaError> {
        let entry = entry.clone();
        self.write(move |tx| layouts::dequeue(tx, &entry)).await
    }

    async fn queued_layouts(&self) -> Result<u64, MetaError> {
        self.read(layouts::count).await
    }

    async fn published_images(&self) -> Result<Vec<super::PublishedImage>, MetaError> {
        self.read(layouts::published).await
    }

    async fn published_images_version(&self) -> Result<(u64, i64), MetaError> {
        self.read(layouts::published_version).await
    }

    async fn federation_index(&self) -> Result<Option<super::FederationIndex>, MetaError> {
        self.read(layouts::federation_index).await
    }

    async fn record_federation_index(&self, cid: &Cid) -> Result<(), MetaError> {
        let cid = *cid;
        self.write_recording(move |tx| {
            layouts::record_federation_index(tx, &cid)?;
            Ok(((), true))
        })
        .await
    }

    async fn record_ipns(&self, name: &str, cid: &Cid) -> Result<(), MetaError> {
        let (name, cid) = (name.to_owned(), *cid);
        self.write(move |tx| layouts::record_ipns(tx, &name, &cid))
            .await
    }

    async fn follow_state(&self, rule: &str) -> Result<super::FollowState, MetaError> {
        let rule = rule.to_owned();
        self.read(move |c| follow::state(c, &rule)).await
    }

    async fn record_follow_success(&self, rule: &str, root: &Cid) -> Result<(), MetaError> {
        let (rule, root) = (rule.to_owned(), *root);
        self.write(move |tx| follow::success(tx, &rule, &root))
            .await
    }

    async fn record_follow_error(&self, rule: &str, error: &str) -> Result<(), MetaError> {
        let (rule, error) = (rule.to_owned(), error.to_owned());
        self.write(move |tx| follow::error(tx, &rule, &error)).await
    }

    async fn followed_tags(&self, rule: &str) -> Result<Vec<super::FollowedTag>, MetaError> {
        let rule = rule.to_owned();
        self.read(move |c| follow::tags(c, &rule)).await
    }

    async fn record_followed_tag(
        &self,
        rule: &str,
        tag: &super::FollowedTag,
    ) -> Result<(), MetaError> {
        let (rule, tag) = (rule.to_owned(), tag.clone());
        self.write(move |tx| follow::record_tag(tx, &rule, &tag))
            .await
    }

    async fn forget_followed_tag(
        &self,
        rule: &str,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<(), MetaError> {
        let (rule, repo, tag) = (rule.to_owned(), repo.clone(), tag.clone());
        self.write(move |tx| follow::forget_tag(tx, &rule, &repo, &tag))
            .await
    }

    async fn tags(&self, repo: &RepoName, page: &Page) -> Result<Option<Vec<String>>, MetaError> {
        let (repo, page) = (repo.clone(), page.clone());
        self.read(move |c| {
            let Some(id) = repos::id(c, &repo)? else {
                return Ok(None);
            };
            let after = page.last.clone().unwrap_or_default();
            names(
                c,
                "SELECT name FROM tags WHERE repository_id = ?1 AND name > ?2 \
                 ORDER BY name LIMIT ?3",
                &[&id, &after, &limit(&page)],
            )
            .map(Some)
        })
        .await
    }

    async fn catalog(&self, page: &Page) -> Result<Vec<String>, MetaError> {
        let page = page.clone();
        self.read(move |c| repos::catalog(c, &page)).await
    }

    async fn repository_summaries(
        &self,
        page: &Page,
        filter: &super::users::RepoFilter,
        search: &str,
    ) -> Result<Vec<super::RepositorySummary>, MetaError> {
        let (page, filter, search) = (page.clone(), filter.clone(), search.to_owned());
        self.read(move |c| repos::summaries(c, &page, &filter, &search))
            .await
    }

    async fn tag_summaries(
        &self,
        repo: &RepoName,
        page: &Page,
    ) -> Result<Option<Vec<super::TagSummary>>, MetaError> {
        let (repo, page) = (repo.clone(), page.clone());
        self.read(move |c| repos::tag_summaries(c, &repo, &page))
            .await
    }

    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Descriptor>, MetaError> {
        let (repo, subject) = (repo.clone(), subject.to_string());
        let artifact_type = artifact_type.map(str::to_owned);
        self.read(move |c| referrers::referrers(c, &repo, &subject, artifact_type.as_deref()))
            .await
    }

    async fn create_upload(
        &self,
        repo: &RepoName,
        hash_state: Vec<u8>,
    ) -> Result<Upload, MetaError> {
        let repo = repo.clone();
        self.write(move |tx| uploads::create(tx, &repo, hash_state))
            .await
    }

    async fn upload(&self, repo: &RepoName, id: Uuid) -> Result<Option<Upload>, MetaError> {
        let repo = repo.clone();
        self.read(move |c| uploads::get(c, &repo, id)).await
    }

    async fn append_upload_chunk(
        &self,
        id: Uuid,
        chunk: UploadChunk,
        hash_state: Vec<u8>,
    ) -> Result<bool, MetaError> {
        self.write_recording(move |tx| {
            let appended = uploads::append(tx, id, &chunk, &hash_state)?;
            Ok((appended, appended))
        })
        .await
    }

    async fn advance_upload(
        &self,
        id: Uuid,
        offset: u64,
        size: u64,
        hash_state: Vec<u8>,
    ) -> Result<bool, MetaError> {
        self.write_if(move |tx| {
            let advanced = uploads::advance(tx, id, offset, size, &hash_state)?;
            Ok((advanced, advanced))
        })
        .await
    }

    async fn upload_chunks(&self, id: Uuid) -> Result<Vec<UploadChunk>, MetaError> {
        self.read(move |c| uploads::chunks(c, id)).await
    }

    async fn complete_upload_with_notices(
        &self,
        id: Uuid,
        repo: &RepoName,
        blob: BlobRecord,
        pending: Option<&PendingPin>,
        notices: &[Notice],
    ) -> Result<(BlobRecord, Vec<UploadChunk>), MetaError> {
        let (repo, notices, pending) = (repo.clone(), notices.to_vec(), pending.cloned());
        self.write_recording(move |tx| {
            let chunks = uploads::end(tx, id, Some(&repo))?;
            let stored = blobs::commit(tx, &repo, &blob)?;
            let (held, queued) = completed_chunks(&chunks, &stored.cid, pending.as_ref());
            if let Some(pending) = &pending {
                gc::hold_for_pin(tx, &pending.root, &held)?;
            }
            gc::queue_unpins(tx, &queued)?;
            outbox::record(tx, &notices)?;
            Ok(((stored, chunks), true))
        })
        .await
    }

    async fn delete_upload(&self, id: Uuid) -> Result<Vec<UploadChunk>, MetaError> {
        self.write(move |tx| {
            let chunks = uploads::end(tx, id, None)?;
            gc::queue_unpins(tx, &released_chunks(&chunks, None))?;
            Ok(chunks)
        })
        .await
    }
}

#[async_trait]
impl OutboxStore for SqliteStore {
    async fn record_notices(&self, notices: &[Notice]) -> Result<(), MetaError> {
        let notices = notices.to_vec();
        self.write(move |tx| outbox::record(tx, &notices)).await
    }

    async fn claim_notices(
        &self,
        endpoint: &str,
        holder: &str,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>, MetaError> {
        let (endpoint, holder) = (endpoint.to_owned(), holder.to_owned());
        self.write(move |tx| outbox::claim(tx, &endpoint, &holder, lease, limit))
            .await
    }

    async fn notices_delivered(&self, holder: &str, ids: &[i64]) -> Result<(), MetaError> {
        let (holder, ids) = (holder.to_owned(), ids.to_vec());
        self.write(move |tx| outbox::delivered(tx, &holder, &ids))
            .await
    }

    async fn notices_failed(
        &self,
        holder: &str,
        outcomes: &[(i64, Retry)],
        error: &str,
    ) -> Result<(), MetaError> {
        let (holder, outcomes, error) = (holder.to_owned(), outcomes.to_vec(), error.to_owned());
        self.write(move |tx| outbox::failed(tx, &holder, &outcomes, &error))
            .await
    }

    async fn notices(
        &self,
        failed_only: bool,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>, MetaError> {
        self.read(move |c| outbox::list(c, failed_only, after, limit))
            .await
    }

    async fn replay_notices(&self, endpoint: Option<&str>, ids: &[i64]) -> Result<u64, MetaError> {
        let (endpoint, ids) = (endpoint.map(str::to_owned), ids.to_vec());
        self.write(move |tx| outbox::replay(tx, endpoint.as_deref(), &ids))
            .await
    }

    async fn purge_notices(
        &self,
        endpoint: Option<&str>,
        ids: &[i64],
        pending: bool,
    ) -> Result<u64, MetaError> {
        let (endpoint, ids) = (endpoint.map(str::to_owned), ids.to_vec());
        self.write(move |tx| outbox::purge(tx, endpoint.as_deref(), &ids, pending))
            .await
    }

    async fn notice_counts(&self) -> Result<Vec<(String, OutboxCounts)>, MetaError> {
        self.read(outbox::counts).await
    }
}
