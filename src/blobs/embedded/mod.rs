//! The embedded [`BlobStore`]: blobs as files under a data directory, for running without
//! an IPFS node. Each blob is stored once, under its CID; while it streams in, its UnixFS
//! DAG is computed with the import profile the Kubo path uses (`blobs::unixfs`), so a layer
//! has the same CID in both modes, and every block of that DAG is recorded in a block
//! index, so the built-in gateway can serve any of them (and the whole DAG as a CAR).
//!
//! Layout under the directory: `data/<cid>` (the bytes), `tmp/<id>/` (adds in progress of
//! one open store, renamed into `data/` only once complete; the store holds `tmp/<id>.lock`
//! while open, so whoever opens the directory next removes what a crashed process left),
//! `trash/` (unpinned blobs, deleted [`TRASH_GRACE`] after they were unpinned),
//! `uploads/<session>` and `uploads/<session>.leaves` (upload sessions written in place,
//! see `session.rs`; renamed into `data/` on completion), `blocks.sqlite` (the index) and `commit.lock`. "Pinned" means the file is in `data/`.
//!
//! More than one process may open the store (`serve` and a `gc` command beside it): the
//! index is SQLite, file moves are renames, and the commit lock is a file lock.
//!
//! A DAG stored by [`BlobStore::put_dag`] (an image layout) has no bytes of its own: its
//! blocks are kept whole in the index, its links to stored blobs are followed to their
//! own roots, and its `data/<cid>` is an empty file that marks it pinned, so unpinning,
//! the trash and eviction treat it as any blob.
//!
//! Why a trash: like a Kubo node, which keeps unpinned blocks until its own repo GC, an
//! unpinned blob can be pinned back for a while. The registry relies on that when a push of
//! the same bytes commits while garbage collection unpins them: its pin check after the
//! commit brings the file back instead of leaving a row without bytes.

mod car;
mod concat;
mod index;
mod read;
mod session;

use std::collections::HashMap;
use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use cid::Cid;
use futures::StreamExt;
use ipld_dagpb::PbNode;
use tempfile::TempPath;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufWriter};
use uuid::Uuid;

use self::index::{BlockIndex, Location};
use crate::blobs::kubo::DAG_PB_CODEC;
use crate::blobs::unixfs::{as_v1, names_block, Block, DagBuilder};
use crate::blobs::{BlobError, BlobStore, ByteStream, ImportProfile, Joined, StoredBytes};
use crate::file_lock::{Held, LockFile};

/// Read and write buffer for blob files: a chunk at the default profile.
const IO_BUFFER: usize = 256 * 1024;
/// How long a request waits for an upload session another holder has locked.
const SESSION_LOCK_PATIENCE: Duration = Duration::from_secs(1);

/// How long an unpinned blob stays restorable before its file and index rows go. What
/// needs it back is a commit racing the unpin (see the module documentation), which
/// re-pins right after its transaction: bounded by the metadata call deadlines, far
/// below this. Longer would only keep disk in use, e.g. a chunked upload's chunks after
/// the blob was assembled from them.
pub const TRASH_GRACE: Duration = Duration::from_secs(2 * 60);

/// The longest a process goes between looks through the trash (while it unpins).
const PURGE_INTERVAL: Duration = Duration::from_secs(60);

/// A file directly in `tmp/` (written by versions before per-store directories) untouched
/// this long is a crash's leftover, not an add in progress of such a version.
const TMP_LEFTOVER_AGE: Duration = Duration::from_secs(60 * 60);

#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    data: PathBuf,
    tmp: PathBuf,
    trash: PathBuf,
    /// Upload sessions' files (`session.rs`).
    uploads: PathBuf,
    trash_grace: Duration,
    /// When this process last looked through the trash.
    last_purge: std::sync::Mutex<Option<std::time::Instant>>,
    /// Whether a purge is already scheduled for when the oldest trashed file expires.
    purge_scheduled: std::sync::atomic::AtomicBool,
    /// Held while the store is open: its `tmp/` directory is in use.
    _tmp_lock: Held,
    profile: ImportProfile,
    index: BlockIndex,
    /// Serialises what makes a blob visible or invisible (index rows + file), so a
    /// concurrent add and unpin of the same content cannot leave one without the other —
    /// in any process using the directory.
    commit: LockFile,
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> BlobError {
    BlobError::Unavailable(format!(
        "embedded blob store: {what} {}: {e}",
        path.display()
    ))
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store under `dir`.
    pub fn open(dir: &Path, profile: ImportProfile) -> Result<EmbeddedStore, BlobError> {
        let data = dir.join("data");
        let tmp_root = dir.join("tmp");
        let trash = dir.join("trash");
        let uploads = dir.join("uploads");
        for path in [&data, &tmp_root, &trash, &uploads] {
            crate::durable::create_dir_all(path).map_err(|e| io_error("creating", path, e))?;
        }
        let commit_lock = dir.join("commit.lock");
        let commit = LockFile::create(commit_lock.clone())
            .map_err(|e| io_error("creating", &commit_lock, e))?;
        let (tmp, tmp_lock) = {
            // Under the commit lock, so no store is between creating its lock file and
            // locking it while this one sweeps.
            let _commit = commit
                .exclusive()
                .map_err(|e| io_error("locking", &commit_lock, e))?;
            sweep_tmp(&tmp_root);
            let id = Uuid::new_v4().to_string();
            let lock_path = tmp_root.join(format!("{id}.lock"));
            let held = LockFile::create(lock_path.clone())
                .and_then(|lock| lock.exclusive())
                .map_err(|e| io_error("locking", &lock_path, e))?;
            let tmp = tmp_root.join(id);
            crate::durable::create_dir_all(&tmp).map_err(|e| io_error("creating", &tmp, e))?;
            (tmp, held)
        };
        let index = BlockIndex::open(&dir.join("blocks.sqlite"))?;
        Ok(EmbeddedStore {
            inner: Arc::new(Inner {
                data,
                tmp,
                trash,
                uploads,
                trash_grace: TRASH_GRACE,
                last_purge: std::sync::Mutex::new(None),
                purge_scheduled: std::sync::atomic::AtomicBool::new(false),
                _tmp_lock: tmp_lock,
                profile,
                index,
                commit,
            }),
        })
    }

    /// The same store with another trash grace period (tests shorten it).
    pub fn with_trash_grace(self, grace: Duration) -> EmbeddedStore {
        match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => {
                inner.trash_grace = grace;
                EmbeddedStore {
                    inner: Arc::new(inner),
                }
            }
            Err(inner) => EmbeddedStore { inner },
        }
    }

    /// Whether the trash is due for a look: at most once a minute (or per grace period, if
    /// shorter), since a purge lists the whole trash under the commit lock and a GC run or a
    /// chunked upload unpins many CIDs in a row.
    fn purge_due(&self) -> bool {
        let interval = self.inner.trash_grace.min(PURGE_INTERVAL);
        let mut last = self
            .inner
            .last_purge
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let due = last.is_none_or(|at| at.elapsed() >= interval);
        if due {
            *last = Some(std::time::Instant::now());
        }
        due
    }

    /// Deletes trashed blobs older than the grace period, with their index rows (unless the
    /// same content was stored again meanwhile). Call with the commit lock held. Returns
    /// how long until the next remaining one expires.
    async fn purge_trash(&self) -> Result<Option<Duration>, BlobError> {
        let mut entries = match tokio::fs::read_dir(&self.inner.trash).await {
            Ok(entries) => entries,
            Err(e) => return Err(io_error("listing", &self.inner.trash, e)),
        };
        let mut next: Option<Duration> = None;
        while let Ok(Some(entry)) = entries.next_entry().await {
            let age = entry
                .metadata()
                .await
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .unwrap_or_default();
            if age < self.inner.trash_grace {
                let left = self.inner.trash_grace - age;
                next = Some(next.map_or(left, |n| n.min(left)));
                continue;
            }
            let path = entry.path();
            let Some(root) = entry
                .file_name()
                .to_str()
                .and_then(|name| Cid::try_from(name).ok())
            else {
                let _ = tokio::fs::remove_file(&path).await;
                continue;
            };
            tokio::fs::remove_file(&path)
                .await
                .map_err(|e| io_error("removing", &path, e))?;
            if !tokio::fs::try_exists(self.path_of(&root))
                .await
                .unwrap_or(false)
            {
                self.with_index(move |index| index.remove(&root)).await?;
            }
        }
        Ok(next)
    }

    /// Purges the trash once its oldest file has expired, then again for the next, so
    /// unpinned files go on time even when nothing else is unpinned after them.
    fn schedule_purge(&self, after: Duration) {
        use std::sync::atomic::Ordering;
        if self.inner.purge_scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.inner.purge_scheduled.store(false, Ordering::Release);
            return;
        };
        // Weak: a closed store is not kept open by its own timer.
        let inner = Arc::downgrade(&self.inner);
        runtime.spawn(async move {
            let mut after = after;
            loop {
                // A moment past the expiry, so a file is not found a hair too young.
                tokio::time::sleep(after + Duration::from_millis(50)).await;
                let Some(inner) = inner.upgrade() else { return };
                let store = EmbeddedStore { inner };
                let purged = match store.lock_commit().await {
                    Ok(_commit) => store.purge_trash().await,
                    Err(e) => Err(e),
                };
                match purged {
                    Ok(Some(next)) => after = next,
                    Ok(None) => {
                        store.inner.purge_scheduled.store(false, Ordering::Release);
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(event = "trash_purge_failed", error = %e);
                        after = PURGE_INTERVAL;
                    }
                }
            }
        });
    }

    /// The largest leaf of a stored DAG and how many leaves it has: with more than one, the
    /// largest is the chunk size it was imported with. `None` when the root is not stored.
    pub async fn leaves(&self, root: &Cid) -> Result<Option<(u64, usize)>, BlobError> {
        let wanted = *root;
        let dag = self.with_index(move |index| index.dag(&wanted)).await?;
        let lengths: Vec<u64> = dag
            .values()
            .filter_map(|location| match location {
                Location::Leaf { length, .. } => Some(*length),
                Location::Node { .. } => None,
            })
            .collect();
        Ok(lengths
            .iter()
            .max()
            .map(|largest| (*largest, lengths.len())))
    }

    /// The blocks of a DAG stored by [`BlobStore::put_dag`] (kept whole, without a file's
    /// bytes); `None` for a blob's DAG or a root not stored.
    pub async fn dag_blocks(&self, root: &Cid) -> Result<Option<Vec<(Cid, Bytes)>>, BlobError> {
        let wanted = *root;
        let dag = self.with_index(move |index| index.dag(&wanted)).await?;
        let mut blocks = Vec::with_capacity(dag.len());
        for (cid, location) in dag {
            match location {
                Location::Node { bytes, .. } => blocks.push((cid, bytes)),
                Location::Leaf { .. } => return Ok(None),
            }
        }
        // A blob's DAG always has a leaf; a DAG without any is one `put_dag` stored.
        Ok((!blocks.is_empty()).then_some(blocks))
    }

    /// The root CID of every blob stored here.
    pub async fn roots(&self) -> Result<Vec<Cid>, BlobError> {
        self.with_index(|index| index.roots()).await
    }

    /// A new file name in this store's `tmp/` directory, removed when dropped unless it
    /// was placed: an add that fails, or whose request is dropped, leaves nothing behind.
    fn new_tmp(&self) -> Result<TempPath, BlobError> {
        let path = self.inner.tmp.join(Uuid::new_v4().to_string());
        TempPath::try_from_path(&path).map_err(|e| io_error("naming", &path, e))
    }

    fn path_of(&self, cid: &Cid) -> PathBuf {
        self.inner.data.join(cid.to_string())
    }

    /// Takes the commit lock (waiting on a blocking thread).
    async fn lock_commit(&self) -> Result<Held, BlobError> {
        let lock = self.inner.commit.clone();
        tokio::task::spawn_blocking(move || {
            lock.exclusive()
                .map_err(|e| io_error("locking", lock.path(), e))
        })
        .await
        .map_err(|e| BlobError::Backend(format!("embedded store lock task: {e}")))?
    }

    /// Runs an index call on the blocking pool.
    async fn with_index<T: Send + 'static>(
        &self,
        call: impl FnOnce(&BlockIndex) -> Result<T, BlobError> + Send + 'static,
    ) -> Result<T, BlobError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || call(&inner.index))
            .await
            .map_err(|e| BlobError::Backend(format!("embedded block index task: {e}")))?
    }

    /// Writes the input to `path` while building its DAG.
    async fn write(
        &self,
        path: &Path,
        mut data: ByteStream,
    ) -> Result<(crate::blobs::unixfs::Dag, Vec<crate::blobs::unixfs::Block>), BlobError> {
        let file = tokio::fs::OpenOptions::from(crate::durable::private_file())
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .await
            .map_err(|e| io_error("creating", path, e))?;
        let mut file = BufWriter::with_capacity(IO_BUFFER, file);
        let mut builder = DagBuilder::new(self.inner.profile.chunk_size);
        let mut blocks = Vec::new();
        while let Some(piece) = data.next().await {
            let piece = piece.map_err(|e| BlobError::Input(e.to_string()))?;
            builder.push(&piece, &mut blocks);
            file.write_all(&piece)
                .await
                .map_err(|e| io_error("writing", path, e))?;
        }
        file.flush()
            .await
            .map_err(|e| io_error("writing", path, e))?;
        // Stored means durable: the registry records the blob as soon as add returns.
        file.get_ref()
            .sync_all()
            .await
            .map_err(|e| io_error("syncing", path, e))?;
        let dag = builder.finish(&mut blocks);
        Ok((dag, blocks))
    }

    /// Makes a complete file in `tmp/` the stored blob `dag`: its blocks indexed, then the
    /// file renamed into place (under the commit lock, against a concurrent unpin).
    async fn place(
        &self,
        tmp: TempPath,
        dag: crate::blobs::unixfs::Dag,
        blocks: Vec<crate::blobs::unixfs::Block>,
    ) -> Result<StoredBytes, BlobError> {
        let stored = self.place_file(&tmp, dag, blocks).await?;
        // Renamed away: nothing left to remove.
        let _ = tmp.keep();
        Ok(stored)
    }

    /// [`EmbeddedStore::place`] for a durable file anywhere in the store's directory.
    async fn place_file(
        &self,
        file: &Path,
        dag: crate::blobs::unixfs::Dag,
        blocks: Vec<crate::blobs::unixfs::Block>,
    ) -> Result<StoredBytes, BlobError> {
        let target = self.path_of(&dag.root);
        let _commit = self.lock_commit().await?;
        let root = dag.root;
        let size = dag.file_size;
        let indexed = self
            .with_index(move |index| index.insert(&root, size, &blocks))
            .await;
        indexed?;
        // Renaming over an existing file of the same CID replaces identical bytes.
        durable_rename(file, &target)
            .await
            .map_err(|e| io_error("placing", &target, e))?;
        Ok(StoredBytes {
            cid: dag.root,
            size: dag.file_size,
        })
    }

    /// Reads `length` bytes at `offset` of a stored file.
    async fn read_range(&self, root: &Cid, offset: u64, length: u64) -> Result<Bytes, BlobError> {
        let path = self.path_of(root);
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(BlobError::NotFound(*root))
            }
            Err(e) => return Err(io_error("opening", &path, e)),
        };
        file.seek(SeekFrom::Start(offset))
            .await
            .map_err(|e| io_error("seeking", &path, e))?;
        let mut bytes = vec![0; length as usize];
        file.read_exact(&mut bytes)
            .await
            .map_err(|e| io_error("reading", &path, e))?;
        Ok(Bytes::from(bytes))
    }
}

/// Removes what crashed stores left in `tmp/`: the directory of every store whose lock
/// nobody holds, and loose files of older versions once they are an hour old. Best effort:
/// what cannot be removed now is tried again at the next open.
fn sweep_tmp(tmp_root: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp_root) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            // A directory whose lock file is gone was half swept before.
            if !path.with_extension("lock").exists() {
                let _ = std::fs::remove_dir_all(&path);
            }
            continue;
        }
        if path.extension().is_some_and(|e| e == "lock") {
            let lock = LockFile::create(path.clone());
            if let Ok(Some(_held)) = lock.and_then(|l| l.try_exclusive()) {
                let _ = std::fs::remove_dir_all(path.with_extension(""));
                let _ = std::fs::remove_file(&path);
            }
            continue;
        }
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age >= TMP_LEFTOVER_AGE);
        if stale {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// [`crate::durable::rename`] on a blocking thread.
async fn durable_rename(from: &Path, to: &Path) -> std::io::Result<()> {
    let (from, to) = (from.to_path_buf(), to.to_path_buf());
    tokio::task::spawn_blocking(move || crate::durable::rename(&from, &to))
        .await
        .map_err(std::io::Error::other)?
}

/// The roots of stored DAGs that a DAG read from the index links (those of a DAG stored
/// by `put_dag`): empty for a blob's own DAG, whose every link is one of its blocks.
fn linked_roots_of(dag: &HashMap<Cid, Location>) -> Result<Vec<Cid>, BlobError> {
    let mut linked = std::collections::BTreeSet::new();
    for (cid, location) in dag {
        let Location::Node { bytes, .. } = location else {
            continue;
        };
        if cid.codec() != DAG_PB_CODEC {
            continue;
        }
        let node = PbNode::from_bytes(bytes.clone())
            .map_err(|e| BlobError::Backend(format!("stored node {cid}: {e}")))?;
        linked.extend(
            node.links
                .iter()
                .map(|link| as_v1(&link.cid))
                .filter(|child| !dag.contains_key(child)),
        );
    }
    Ok(linked.into_iter().collect())
}

#[async_trait]
impl BlobStore for EmbeddedStore {
    fn profile(&self) -> &ImportProfile {
        &self.inner.profile
    }

    async fn ping(&self) -> Result<(), BlobError> {
        tokio::fs::metadata(&self.inner.data)
            .await
            .map(drop)
            .map_err(|e| io_error("checking", &self.inner.data, e))
    }

    async fn add(&self, data: ByteStream) -> Result<StoredBytes, BlobError> {
        let tmp = self.new_tmp()?;
        let (dag, blocks) = self.write(&tmp, data).await?;
        self.place(tmp, dag, blocks).await
    }

    async fn concat(&self, parts: &[Cid]) -> Result<Option<Joined>, BlobError> {
        let chunk_size = self.inner.profile.chunk_size;
        let owned = parts.to_vec();
        let leaves = self
            .with_index(move |index| concat::leaves_of(index, &owned, u64::from(chunk_size)))
            .await?;
        let Some(leaves) = leaves else {
            return Ok(None);
        };
        let (dag, blocks) = crate::blobs::unixfs::dag_over(chunk_size, &leaves);
        let files: Vec<PathBuf> = parts.iter().map(|p| self.path_of(p)).collect();
        let tmp = self.new_tmp()?;
        let target = tmp.to_path_buf();
        let joined = tokio::task::spawn_blocking(move || concat::join_files(&files, &target))
            .await
            .map_err(|e| BlobError::Backend(format!("embedded store join task: {e}")))?;
        let failed = match joined {
            // The files must hold what their DAGs say, or the leaves would lie.
            Ok(written) if written == dag.file_size => None,
            Ok(written) => Some(BlobError::Backend(format!(
                "joined parts hold {written} bytes, their DAGs {}",
                dag.file_size
            ))),
            Err(e) => Some(io_error("joining into", &tmp, e)),
        };
        if let Some(e) = failed {
            return Err(e);
        }
        let stored = self.place(tmp, dag, blocks).await?;
        Ok(Some(Joined {
            stored,
            direct: None,
        }))
    }

    async fn upload_file(
        &self,
        id: Uuid,
    ) -> Result<Option<Box<dyn crate::blobs::UploadFile>>, BlobError> {
        let waiting_since = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(2);
        loop {
            let store = self.clone();
            let dir = self.inner.uploads.clone();
            let opened = tokio::task::spawn_blocking(move || session::open(store, &dir, id))
                .await
                .map_err(|e| BlobError::Backend(format!("embedded store upload task: {e}")))??;
            match opened {
                session::Opened::Locked(session) => {
                    return Ok(Some(Box::new(session) as Box<dyn crate::blobs::UploadFile>))
                }
                session::Opened::Gone => {
                    return Err(BlobError::Busy(format!("upload {id} is in use")))
                }
                // A holder that has just let go can keep the lock a moment longer (see
                // `session`); one that really works on the session holds it far longer.
                session::Opened::Held if waiting_since.elapsed() < SESSION_LOCK_PATIENCE => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                session::Opened::Held => {
                    tracing::info!(event = "upload_session_busy", upload = %id);
                    return Err(BlobError::Busy(format!("upload {id} is in use")));
                }
            }
        }
    }

    async fn expire_upload_files(&self, idle: Duration) -> Result<usize, BlobError> {
        let dir = self.inner.uploads.clone();
        tokio::task::spawn_blocking(move || session::expire(&dir, idle))
            .await
            .map_err(|e| BlobError::Backend(format!("embedded store upload task: {e}")))?
    }

    async fn put_dag(&self, root: &Cid, blocks: Vec<(Cid, Bytes)>) -> Result<(), BlobError> {
        crate::blobs::check_blocks(root, &blocks)?;
        let linked = crate::blobs::linked_roots(&blocks)?;
        let blocks: Vec<Block> = blocks
            .into_iter()
            .map(|(cid, bytes)| Block::Node {
                cid: as_v1(&cid),
                bytes,
            })
            .collect();
        let root = as_v1(root);
        let marker = self.new_tmp()?;
        let empty = marker.to_path_buf();
        tokio::task::spawn_blocking(move || {
            crate::durable::private_file()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&empty)
                .and_then(|file| file.sync_all())
        })
        .await
        .map_err(|e| BlobError::Backend(format!("embedded store write task: {e}")))?
        .map_err(|e| io_error("creating", &marker, e))?;
        let target = self.path_of(&root);
        let _commit = self.lock_commit().await?;
        // Under the commit lock: a linked blob cannot be unpinned between this check and
        // the new root being placed.
        for child in &linked {
            if !self.is_pinned(child).await? {
                return Err(BlobError::NotFound(*child));
            }
        }
        self.with_index(move |index| index.insert(&root, 0, &blocks))
            .await?;
        durable_rename(&marker, &target)
            .await
            .map_err(|e| io_error("placing", &target, e))?;
        let _ = marker.keep();
        Ok(())
    }

    async fn cat(
        &self,
        cid: &Cid,
        offset: u64,
        length: Option<u64>,
    ) -> Result<ByteStream, BlobError> {
        let path = self.path_of(cid);
        let file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(BlobError::NotFound(*cid))
            }
            Err(e) => return Err(io_error("opening", &path, e)),
        };
        let size = file
            .metadata()
            .await
            .map_err(|e| io_error("reading", &path, e))?
            .len();
        let available = size.saturating_sub(offset);
        let length = match length {
            Some(length) if length > available => {
                return Err(BlobError::Backend(format!(
                    "{cid} holds {size} bytes, {length} asked from offset {offset}"
                )))
            }
            Some(length) => length,
            None => available,
        };
        Ok(read::stream(file.into_std().await, offset, length))
    }

    async fn pin(&self, cid: &Cid) -> Result<(), BlobError> {
        let path = self.path_of(cid);
        let _commit = self.lock_commit().await?;
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return Ok(());
        }
        // Unpinned but not yet purged: bring it back.
        let trashed = self.inner.trash.join(cid.to_string());
        match durable_rename(&trashed, &path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(BlobError::NotFound(*cid)),
            Err(e) => Err(io_error("pinning", &trashed, e)),
        }
    }

    async fn unpin(&self, cid: &Cid) -> Result<(), BlobError> {
        let path = self.path_of(cid);
        let trashed = self.inner.trash.join(cid.to_string());
        let _commit = self.lock_commit().await?;
        // Durable before GC forgets the CID, or a power cut would bring back a file that
        // no record knows.
        match durable_rename(&path, &trashed).await {
            Ok(()) => {
                // The trash clock starts now, not when the bytes were written.
                let stamp = trashed.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    std::fs::File::options()
                        .write(true)
                        .open(&stamp)
                        .and_then(|f| f.set_modified(SystemTime::now()))
                })
                .await;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("unpinning", &path, e)),
        }
        let next = if self.purge_due() {
            self.purge_trash().await?
        } else {
            Some(self.inner.trash_grace)
        };
        if let Some(next) = next {
            self.schedule_purge(next);
        }
        Ok(())
    }

    async fn evict(&self, cid: &Cid) -> Result<(), BlobError> {
        let _commit = self.lock_commit().await?;
        for path in [self.path_of(cid), self.inner.trash.join(cid.to_string())] {
            match tokio::fs::remove_file(&path).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error("evicting", &path, e)),
            }
        }
        // Only this root's rows: another DAG holding the same blocks keeps its own.
        let root = *cid;
        self.with_index(move |index| index.remove(&root)).await
    }

    async fn is_pinned(&self, cid: &Cid) -> Result<bool, BlobError> {
        let path = self.path_of(cid);
        tokio::fs::try_exists(&path)
            .await
            .map_err(|e| io_error("checking", &path, e))
    }

    async fn pinned(&self) -> Result<Vec<Cid>, BlobError> {
        let data = self.inner.data.clone();
        tokio::task::spawn_blocking(move || {
            let entries = std::fs::read_dir(&data).map_err(|e| io_error("listing", &data, e))?;
            let mut roots = Vec::new();
            for entry in entries {
                let entry = entry.map_err(|e| io_error("listing", &data, e))?;
                // Only this store writes here, and only files named by their CID.
                if let Some(root) = entry
                    .file_name()
                    .to_str()
                    .and_then(|name| Cid::try_from(name).ok())
                {
                    roots.push(root);
                }
            }
            Ok(roots)
        })
        .await
        .map_err(|e| BlobError::Backend(format!("embedded store listing task: {e}")))?
    }

    async fn roots_holding(&self, cid: &Cid) -> Result<Vec<Cid>, BlobError> {
        let wanted = *cid;
        let locations = self.with_index(move |index| index.locate(&wanted)).await?;
        let mut roots = Vec::new();
        for location in locations {
            let root = match location {
                Location::Node { root, .. } | Location::Leaf { root, .. } => root,
            };
            if !roots.contains(&root) && self.is_pinned(&root).await? {
                roots.push(root);
            }
        }
        Ok(roots)
    }

    async fn block(&self, cid: &Cid) -> Result<Bytes, BlobError> {
        let wanted = *cid;
        let locations = self.with_index(move |index| index.locate(&wanted)).await?;
        for location in locations {
            let bytes = match location {
                // Only blocks of pinned DAGs are served, as for leaves below.
                Location::Node { root, bytes } => {
                    if !self.is_pinned(&root).await? {
                        continue;
                    }
                    bytes
                }
                Location::Leaf {
                    root,
                    offset,
                    length,
                } => match self.read_range(&root, offset, length).await {
                    Ok(bytes) => bytes,
                    // That DAG is unpinned; another may hold the same block.
                    Err(BlobError::NotFound(_)) => continue,
                    Err(e) => return Err(e),
                },
            };
            // A block is only ever served as what its CID says it is.
            if names_block(cid, &bytes) != Some(true) {
                return Err(BlobError::Backend(format!(
                    "stored block {cid} does not match its CID (corrupt data directory?)"
                )));
            }
            return Ok(bytes);
        }
        Err(BlobError::NotFound(*cid))
    }

    async fn car(&self, root: &Cid) -> Result<ByteStream, BlobError> {
        if !self.is_pinned(root).await? {
            return Err(BlobError::NotFound(*root));
        }
        let wanted = *root;
        let mut dag = self.with_index(move |index| index.dag(&wanted)).await?;
        if dag.is_empty() {
            return Err(BlobError::NotFound(*root));
        }
        // A DAG stored by `put_dag` links stored blobs: their blocks are under their roots.
        for child in linked_roots_of(&dag)? {
            if !self.is_pinned(&child).await? {
                return Err(BlobError::NotFound(child));
            }
            let linked = self.with_index(move |index| index.dag(&child)).await?;
            dag.extend(linked);
        }
        car::export(*root, &dag, self.inner.data.clone())
    }
}
