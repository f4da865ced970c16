//! Upload sessions kept by the embedded store: every chunk of a session is written in place
//! into one file, `uploads/<session>`, and the sha256 of each whole leaf (`chunk_size`
//! bytes) is appended to `uploads/<session>.leaves` as the bytes arrive. Completing the
//! upload then hashes at most one partial leaf, builds the interior nodes over the leaves
//! and renames the file into `data/`: no byte is read or written a second time.
//!
//! Both files are synced before an append returns, and the session's byte count is
//! committed (in the metadata store) only after that, so a restarted server continues a
//! session from its files. Whatever lies past the committed count (an append that failed
//! or crashed before its commit) is cut off by the next append.
//!
//! A session's file is locked (`flock`, across processes) while a request uses it, and the
//! caller re-reads the session's count under the lock: two requests can never write the
//! same session at once. A request finding the lock held retries it for a moment before it
//! is told the session is busy: a lock lives as long as any copy of its file descriptor,
//! and a process forking a child (a test harness spawning a client, say) lends the child
//! copies of every open descriptor until the child's `exec` closes them, so a request that
//! has just ended can still seem to hold its session for a few milliseconds.

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use cid::Cid;
use futures::StreamExt;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncSeekExt, AsyncWriteExt, BufWriter};
use uuid::Uuid;

use super::{io_error, EmbeddedStore, IO_BUFFER};
use crate::blobs::kubo::raw_cid_v1_from_sha256;
use crate::blobs::{BlobError, ByteStream, StoredBytes, UploadFile};

/// Bytes per leaf digest in the `.leaves` file.
const DIGEST: u64 = 32;

pub(super) struct Session {
    store: EmbeddedStore,
    path: PathBuf,
    leaves: PathBuf,
    /// The session's file, locked.
    file: Arc<std::fs::File>,
    len: u64,
}

fn leaves_path(path: &Path) -> PathBuf {
    path.with_extension("leaves")
}

fn blocking_error(e: tokio::task::JoinError) -> BlobError {
    BlobError::Backend(format!("embedded store upload task: {e}"))
}

/// What opening a session's file found.
pub(super) enum Opened {
    Locked(Session),
    /// Someone holds the lock.
    Held,
    /// Completed or discarded meanwhile.
    Gone,
}

/// Opens (creating) and locks the session's file, without waiting for the lock.
pub(super) fn open(store: EmbeddedStore, dir: &Path, id: Uuid) -> Result<Opened, BlobError> {
    let path = dir.join(id.to_string());
    let file = crate::durable::private_file()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| io_error("opening", &path, e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Ok(Opened::Held),
        Err(std::fs::TryLockError::Error(e)) => return Err(io_error("locking", &path, e)),
    }
    // Completed or discarded between the open and the lock: the name is gone (or new), and
    // what this handle has must not be written.
    let held = file.metadata().map_err(|e| io_error("reading", &path, e))?;
    let named = match std::fs::metadata(&path) {
        Ok(named) => named,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Opened::Gone),
        Err(e) => return Err(io_error("reading", &path, e)),
    };
    if (held.dev(), held.ino()) != (named.dev(), named.ino()) {
        return Ok(Opened::Gone);
    }
    Ok(Opened::Locked(Session {
        store,
        leaves: leaves_path(&path),
        path,
        file: Arc::new(file),
        len: held.len(),
    }))
}

impl Session {
    fn chunk_size(&self) -> u64 {
        u64::from(self.store.inner.profile.chunk_size.max(1))
    }

    /// Cuts both files back to `offset` bytes and returns the bytes of the partial leaf
    /// that ends there (to continue hashing it).
    fn rewind(&self, offset: u64) -> Result<Vec<u8>, BlobError> {
        let chunk = self.chunk_size();
        let whole = offset / chunk;
        if self.len != offset {
            self.file
                .set_len(offset)
                .map_err(|e| io_error("truncating", &self.path, e))?;
        }
        let leaves = crate::durable::private_file()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.leaves)
            .map_err(|e| io_error("opening", &self.leaves, e))?;
        let recorded = leaves
            .metadata()
            .map_err(|e| io_error("reading", &self.leaves, e))?
            .len();
        if recorded < whole * DIGEST {
            return Err(BlobError::Backend(format!(
                "{} records {} leaves of an upload of {offset} bytes",
                self.leaves.display(),
                recorded / DIGEST
            )));
        }
        if recorded != whole * DIGEST {
            leaves
                .set_len(whole * DIGEST)
                .map_err(|e| io_error("truncating", &self.leaves, e))?;
        }
        let mut partial = vec![0; (offset - whole * chunk) as usize];
        let mut file = &*self.file;
        file.seek(SeekFrom::Start(whole * chunk))
            .and_then(|_| file.read_exact(&mut partial))
            .map_err(|e| io_error("reading", &self.path, e))?;
        Ok(partial)
    }

    /// The leaves of the first `size` bytes, hashing the last one if it is partial.
    fn leaves_of(&self, size: u64) -> Result<Vec<(Cid, u64)>, BlobError> {
        let chunk = self.chunk_size();
        let whole = size / chunk;
        let mut digests = vec![0; (whole * DIGEST) as usize];
        std::fs::File::open(&self.leaves)
            .and_then(|mut f| f.read_exact(&mut digests))
            .map_err(|e| io_error("reading", &self.leaves, e))?;
        let mut leaves = Vec::with_capacity(whole as usize + 1);
        for digest in digests.chunks(DIGEST as usize) {
            leaves.push((leaf_cid(digest)?, chunk));
        }
        let tail = size - whole * chunk;
        if tail > 0 {
            let mut bytes = vec![0; tail as usize];
            let mut file = &*self.file;
            file.seek(SeekFrom::Start(whole * chunk))
                .and_then(|_| file.read_exact(&mut bytes))
                .map_err(|e| io_error("reading", &self.path, e))?;
            leaves.push((leaf_cid(&Sha256::digest(&bytes))?, tail));
        }
        Ok(leaves)
    }
}

fn leaf_cid(digest: &[u8]) -> Result<Cid, BlobError> {
    raw_cid_v1_from_sha256(digest).map_err(|e| BlobError::Backend(format!("leaf digest: {e}")))
}

#[async_trait]
impl UploadFile for Session {
    fn size(&self) -> u64 {
        self.len
    }

    async fn append(&mut self, offset: u64, mut data: ByteStream) -> Result<u64, BlobError> {
        if offset > self.len {
            return Err(BlobError::Backend(format!(
                "{} holds {} bytes, not the {offset} of its session",
                self.path.display(),
                self.len
            )));
        }
        let partial = {
            let session = self.shallow();
            tokio::task::spawn_blocking(move || session.rewind(offset))
                .await
                .map_err(blocking_error)??
        };
        self.len = offset;
        let chunk = self.chunk_size();
        let mut leaf = Sha256::new();
        leaf.update(&partial);
        let mut in_leaf = partial.len() as u64;
        let mut digests: Vec<u8> = Vec::new();
        let std_file = self
            .file
            .try_clone()
            .map_err(|e| io_error("opening", &self.path, e))?;
        let mut file = tokio::fs::File::from_std(std_file);
        file.seek(SeekFrom::Start(offset))
            .await
            .map_err(|e| io_error("seeking", &self.path, e))?;
        let mut file = BufWriter::with_capacity(IO_BUFFER, file);
        let mut written = 0u64;
        while let Some(piece) = data.next().await {
            let piece = piece.map_err(|e| BlobError::Input(e.to_string()))?;
            let mut rest: &[u8] = &piece;
            while !rest.is_empty() {
                let take = ((chunk - in_leaf) as usize).min(rest.len());
                leaf.update(&rest[..take]);
                in_leaf += take as u64;
                rest = &rest[take..];
                if in_leaf == chunk {
                    digests.extend_from_slice(&leaf.finalize_reset());
                    in_leaf = 0;
                }
            }
            file.write_all(&piece)
                .await
                .map_err(|e| io_error("writing", &self.path, e))?;
            written += piece.len() as u64;
        }
        file.flush()
            .await
            .map_err(|e| io_error("writing", &self.path, e))?;
        let (path, leaves) = (self.path.clone(), self.leaves.clone());
        let target = self.file.clone();
        tokio::task::spawn_blocking(move || -> Result<(), BlobError> {
            // Durable before the session counts these bytes: the count is what a restarted
            // server continues from.
            target
                .sync_data()
                .map_err(|e| io_error("syncing", &path, e))?;
            let mut out = std::fs::OpenOptions::new()
                .append(true)
                .open(&leaves)
                .map_err(|e| io_error("opening", &leaves, e))?;
            out.write_all(&digests)
                .and_then(|()| out.sync_data())
                .map_err(|e| io_error("writing", &leaves, e))?;
            // The first append may have created both files: their names must last too.
            if offset == 0 {
                crate::durable::sync_parent(&path).map_err(|e| io_error("syncing", &path, e))?;
            }
            Ok(())
        })
        .await
        .map_err(blocking_error)??;
        self.len = offset + written;
        Ok(self.len)
    }

    async fn finish(self: Box<Self>, size: u64) -> Result<StoredBytes, BlobError> {
        if size > self.len {
            return Err(BlobError::Backend(format!(
                "{} holds {} bytes, not the {size} of its session",
                self.path.display(),
                self.len
            )));
        }
        let session = self.shallow();
        let chunk_size = self.store.inner.profile.chunk_size;
        let (dag, blocks) = tokio::task::spawn_blocking(move || -> Result<_, BlobError> {
            if session.len != size {
                session
                    .file
                    .set_len(size)
                    .and_then(|()| session.file.sync_data())
                    .map_err(|e| io_error("truncating", &session.path, e))?;
            }
            let leaves = session.leaves_of(size)?;
            Ok(crate::blobs::unixfs::dag_over(chunk_size, &leaves))
        })
        .await
        .map_err(blocking_error)??;
        let stored = self.store.place_file(&self.path, dag, blocks).await?;
        // The leaf digests are no use any more; a leftover is swept with idle sessions.
        let _ = tokio::fs::remove_file(&self.leaves).await;
        Ok(stored)
    }

    async fn discard(self: Box<Self>) -> Result<(), BlobError> {
        for path in [&self.path, &self.leaves] {
            match tokio::fs::remove_file(path).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error("removing", path, e)),
            }
        }
        Ok(())
    }
}

impl Session {
    /// The same session for a blocking task (the lock stays with the shared file).
    fn shallow(&self) -> Session {
        Session {
            store: self.store.clone(),
            path: self.path.clone(),
            leaves: self.leaves.clone(),
            file: self.file.clone(),
            len: self.len,
        }
    }
}

/// Deletes the session files in `dir` untouched for `idle` and not in use; returns how many
/// sessions went.
pub(super) fn expire(dir: &Path, idle: Duration) -> Result<usize, BlobError> {
    let entries = std::fs::read_dir(dir).map_err(|e| io_error("listing", dir, e))?;
    let mut expired = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age >= idle);
        if !old {
            continue;
        }
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(id) = name.strip_suffix(".leaves") {
            // Its session file is gone (completed, or expired before): nothing reads it.
            if Uuid::parse_str(id).is_ok() && !path.with_extension("").exists() {
                let _ = std::fs::remove_file(&path);
            }
            continue;
        }
        if Uuid::parse_str(name).is_err() {
            continue;
        }
        let Ok(file) = std::fs::OpenOptions::new().write(true).open(&path) else {
            continue;
        };
        // In use by a request: not idle after all.
        if file.try_lock().is_err() {
            continue;
        }
        if std::fs::remove_file(&path).is_ok() {
            expired += 1;
        }
        let _ = std::fs::remove_file(leaves_path(&path));
    }
    Ok(expired)
}
