//! Blob uploads: monolithic, chunked and resumable on any replica.
//!
//! Each chunk is added to the blob store (pinned) as it arrives and recorded in the
//! metadata store together with the running sha256 state, so no replica holds upload
//! state in memory. On completion a one-chunk upload's CID is already the blob's CID
//! (same import profile, same bytes); a multi-chunk upload whose chunks are whole leaves
//! (sizes multiples of the chunk size, the last aside) gets its DAG from the chunks' leaves
//! (`BlobStore::concat`: only interior nodes are written, in time independent of the
//! blob's size); any other multi-chunk upload is re-added as one stream.

use std::io;

use futures::{stream, StreamExt, TryStreamExt};
use uuid::Uuid;

use super::hashing::{restore_sha256, save_sha256, Hasher, Meter};
use super::notify::{Action, Origin};
use super::{Registry, RegistryError, Result};
use crate::blobs::{BlobError, ByteStream, Joined, StoredBytes, UploadFile};
use crate::meta::{BlobRecord, PendingPin, Upload, UploadChunk};
use crate::oci::{Algorithm, Digest, RepoName};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadStatus {
    pub id: Uuid,
    pub bytes_received: u64,
}

impl From<&Upload> for UploadStatus {
    fn from(u: &Upload) -> Self {
        UploadStatus {
            id: u.id,
            bytes_received: u.bytes_received,
        }
    }
}

/// Why a metered stream was cut short.
enum Limit {
    /// The client declared a length (Content-Range / Content-Length).
    Declared(u64),
    /// The registry's maximum blob size.
    Configured(u64),
}

/// A blob assembled from an upload session, to be committed.
struct Assembled {
    record: BlobRecord,
    /// Set when the blob store joined the chunks and pinned the result only in part.
    pending: Option<PendingPin>,
}

impl From<BlobRecord> for Assembled {
    fn from(record: BlobRecord) -> Self {
        Assembled {
            record,
            pending: None,
        }
    }
}

impl Registry {
    pub async fn start_upload(&self, repo: &RepoName) -> Result<UploadStatus> {
        let upload = self
            .meta
            .create_upload(repo, save_sha256(&Default::default()))
            .await?;
        Ok(UploadStatus::from(&upload))
    }

    pub async fn upload_status(&self, repo: &RepoName, id: Uuid) -> Result<UploadStatus> {
        Ok(UploadStatus::from(&self.session(repo, id).await?))
    }

    /// PATCH: appends a chunk. `range` is the Content-Range (inclusive), if sent.
    pub async fn append_upload(
        &self,
        repo: &RepoName,
        id: Uuid,
        body: ByteStream,
        range: Option<(u64, u64)>,
        content_length: Option<u64>,
    ) -> Result<UploadStatus> {
        let _permit = self.upload_permit()?;
        let upload = self.session(repo, id).await?;
        let (upload, file) = self.lock_upload_file(upload).await?;
        let declared = match range {
            Some((start, _)) if start != upload.bytes_received => {
                return Err(RegistryError::ChunkOutOfOrder {
                    received: upload.bytes_received,
                })
            }
            Some((start, end)) if end < start => {
                return Err(RegistryError::BlobUploadInvalid(format!(
                    "Content-Range {start}-{end} is inverted"
                )))
            }
            Some((start, end)) => {
                let len = end - start + 1;
                if content_length.is_some_and(|cl| cl != len) {
                    return Err(RegistryError::SizeInvalid(format!(
                        "Content-Range covers {len} bytes but Content-Length is {}",
                        content_length.unwrap_or_default()
                    )));
                }
                Some(len)
            }
            None => content_length,
        };
        match file {
            Some(mut file) => {
                let status = self
                    .store_in_place(&upload, file.as_mut(), body, declared)
                    .await;
                if matches!(status, Err(RegistryError::BlobUploadUnknown)) {
                    // The session ended meanwhile (cancelled, expired): its file goes too.
                    discard(file).await;
                }
                status
            }
            None => self.store_chunk(&upload, body, declared).await,
        }
    }

    /// The session's file when the blob store keeps sessions in place (not for sessions
    /// begun with chunks stored as blobs), locked, with the session as read under the lock:
    /// no other request appends meanwhile, so the count read is the one to write at.
    async fn lock_upload_file(
        &self,
        upload: Upload,
    ) -> Result<(Upload, Option<Box<dyn UploadFile>>)> {
        if upload.chunk_count > 0 {
            return Ok((upload, None));
        }
        match self.blobs.upload_file(upload.id).await {
            Ok(None) => Ok((upload, None)),
            Ok(Some(file)) => {
                let current = self.session(&upload.repository, upload.id).await?;
                if current.chunk_count > 0 {
                    return Ok((current, None));
                }
                if file.size() < current.bytes_received {
                    // The bytes this session counted are not there (a data directory
                    // restored from an older copy, or not shared with this replica).
                    tracing::warn!(
                        event = "upload_file_short",
                        upload = %upload.id,
                        counted = current.bytes_received,
                        stored = file.size(),
                    );
                    return Err(RegistryError::BlobUploadUnknown);
                }
                Ok((current, Some(file)))
            }
            Err(BlobError::Busy(_)) => {
                // Another request on the same session (clients send one at a time).
                let current = self.session(&upload.repository, upload.id).await?;
                Err(RegistryError::ChunkOutOfOrder {
                    received: current.bytes_received,
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Appends one chunk to the session's file and counts it, continuing the session's hash.
    async fn store_in_place(
        &self,
        upload: &Upload,
        file: &mut dyn UploadFile,
        body: ByteStream,
        declared: Option<u64>,
    ) -> Result<UploadStatus> {
        let Some((meter, stream, limit)) = self.chunk_body(upload, body, declared).await? else {
            return Ok(UploadStatus::from(upload));
        };
        // What a failed append wrote past the count is cut off by the next one.
        file.append(upload.bytes_received, stream)
            .await
            .map_err(|e| input_error(e, &meter, &limit))?;
        self.metrics.blob_bytes_in.inc_by(meter.bytes());
        check_declared(&meter, declared)?;
        let Some(Hasher::Sha256(hasher)) = meter.take_hasher() else {
            return Err(RegistryError::Internal("upload hasher missing".into()));
        };
        let advanced = self
            .meta
            .advance_upload(
                upload.id,
                upload.bytes_received,
                meter.bytes(),
                save_sha256(&hasher),
            )
            .await?;
        if !advanced {
            // Under the file's lock nobody else appends: the session is gone.
            return Err(RegistryError::BlobUploadUnknown);
        }
        Ok(UploadStatus {
            id: upload.id,
            bytes_received: upload.bytes_received + meter.bytes(),
        })
    }

    /// Completes a session kept in place: the last chunk appended, the digest checked, the
    /// file made the blob.
    async fn complete_in_place(
        &self,
        origin: &Origin,
        upload: Upload,
        mut file: Box<dyn UploadFile>,
        digest: &Digest,
        body: ByteStream,
        content_length: Option<u64>,
    ) -> Result<BlobRecord> {
        let (id, repo) = (upload.id, upload.repository.clone());
        let status = self
            .store_in_place(&upload, file.as_mut(), body, content_length)
            .await?;
        let upload = if status.bytes_received != upload.bytes_received {
            self.session(&repo, id).await?
        } else {
            upload
        };
        let (existing, healing) = self.known_blob(digest).await?;
        if digest.algorithm() == Algorithm::Sha256 {
            let hasher = restore_sha256(&upload.hash_state)
                .ok_or_else(|| RegistryError::Internal("upload hash state is unreadable".into()))?;
            let actual = Hasher::Sha256(hasher).finish();
            if actual != *digest {
                self.end_session(id).await;
                discard(file).await;
                return Err(digest_mismatch(digest, &actual));
            }
            if let Some(existing) = existing {
                discard(file).await;
                return self
                    .finish_session(id, &repo, existing.into(), origin)
                    .await;
            }
            let stored = file.finish(upload.bytes_received).await?;
            return self
                .finish_new_blob(id, &repo, digest, stored, healing, origin)
                .await;
        }
        // Another algorithm: the running sha256 cannot answer, so the stored blob is read
        // back through the digest's hasher.
        let stored = file.finish(upload.bytes_received).await?;
        let (meter, stream, limit) = self.meter(
            self.blobs.cat(&stored.cid, 0, None).await?,
            Hasher::new(digest.algorithm()),
            0,
            None,
        );
        let checked = match drain(stream, &meter, &limit).await {
            Ok(()) => verify(&meter, digest),
            Err(e) => Err(e),
        };
        if let Err(e) = checked {
            self.release(&stored.cid).await;
            if matches!(e, RegistryError::DigestInvalid(_)) {
                self.end_session(id).await;
            }
            return Err(e);
        }
        match existing {
            Some(existing) => {
                if existing.cid != stored.cid {
                    self.release(&stored.cid).await;
                }
                self.finish_session(id, &repo, existing.into(), origin)
                    .await
            }
            None => {
                self.finish_new_blob(id, &repo, digest, stored, healing, origin)
                    .await
            }
        }
    }

    /// Records bytes a session stored as the blob `digest`, ends the session, and lifts the
    /// quarantine when the push re-stored a quarantined blob (`healing`).
    async fn finish_new_blob(
        &self,
        id: Uuid,
        repo: &RepoName,
        digest: &Digest,
        stored: StoredBytes,
        healing: bool,
        origin: &Origin,
    ) -> Result<BlobRecord> {
        let record = self.record(digest, stored.cid, stored.size);
        let finished = self.finish_session(id, repo, record.into(), origin).await?;
        if healing {
            self.heal(&finished, stored.cid).await;
        }
        Ok(finished)
    }

    /// PUT: completes the upload with an optional last chunk, verifies the digest and makes
    /// the blob visible in the repository. A mismatch ends the session and leaves nothing.
    pub async fn complete_upload(
        &self,
        repo: &RepoName,
        id: Uuid,
        digest: &Digest,
        body: ByteStream,
        content_length: Option<u64>,
        origin: &Origin,
    ) -> Result<BlobRecord> {
        let _permit = self.upload_permit()?;
        let started = std::time::Instant::now();
        let record = self
            .complete_session(repo, id, digest, body, content_length, origin)
            .await?;
        self.blob_event("blob_push", repo, &record, started);
        Ok(record)
    }

    async fn complete_session(
        &self,
        repo: &RepoName,
        id: Uuid,
        digest: &Digest,
        body: ByteStream,
        content_length: Option<u64>,
        origin: &Origin,
    ) -> Result<BlobRecord> {
        let upload = self.session(repo, id).await?;
        if upload.bytes_received == 0 {
            // Everything arrives in this request: stream it straight into the store.
            let stored = self
                .store_verified(repo, digest, body, content_length, None)
                .await;
            return match stored {
                Ok(record) => self.finish_session(id, repo, record.into(), origin).await,
                Err(e) => {
                    self.end_session(id).await;
                    Err(e)
                }
            };
        }
        let (upload, file) = self.lock_upload_file(upload).await?;
        if let Some(file) = file {
            return self
                .complete_in_place(origin, upload, file, digest, body, content_length)
                .await;
        }
        let upload = match self.store_chunk(&upload, body, content_length).await {
            Ok(status) if status.bytes_received != upload.bytes_received => {
                self.session(repo, id).await?
            }
            Ok(_) => upload,
            Err(e) => return Err(e),
        };
        match self.assemble(&upload, digest).await {
            Ok((assembled, healing)) => {
                let added = assembled.record.cid;
                let stored = self.finish_session(id, repo, assembled, origin).await?;
                if healing {
                    self.heal(&stored, added).await;
                }
                Ok(stored)
            }
            Err(e) => {
                if matches!(e, RegistryError::DigestInvalid(_)) {
                    self.end_session(id).await;
                }
                Err(e)
            }
        }
    }

    pub async fn cancel_upload(&self, repo: &RepoName, id: Uuid) -> Result<()> {
        let upload = self.session(repo, id).await?;
        self.end_session(id).await;
        if upload.chunk_count == 0 {
            // A file in use by a request is left to expire with idle sessions.
            if let Ok(Some(file)) = self.blobs.upload_file(id).await {
                discard(file).await;
            }
        }
        Ok(())
    }

    /// Single-request upload (`POST ?digest=`, or PUT on a fresh session): streams the body
    /// into the blob store while hashing it. A digest already stored is not added again;
    /// the body is only hashed to prove the client has the content.
    pub async fn store_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        body: ByteStream,
        content_length: Option<u64>,
        origin: &Origin,
    ) -> Result<BlobRecord> {
        let _permit = self.upload_permit()?;
        let started = std::time::Instant::now();
        let record = self
            .store_verified(repo, digest, body, content_length, Some(origin))
            .await?;
        self.blob_event("blob_push", repo, &record, started);
        Ok(record)
    }

    /// ...recording the push's notices when `notify` names its origin (not when an upload
    /// session's completion records them).
    pub(super) async fn store_verified(
        &self,
        repo: &RepoName,
        digest: &Digest,
        body: ByteStream,
        content_length: Option<u64>,
        notify: Option<&Origin>,
    ) -> Result<BlobRecord> {
        let (meter, stream, limit) =
            self.meter(body, Hasher::new(digest.algorithm()), 0, content_length);
        let (existing, healing) = self.known_blob(digest).await?;
        if let Some(existing) = existing {
            drain(stream, &meter, &limit).await?;
            self.metrics.blob_bytes_in.inc_by(meter.bytes());
            check_declared(&meter, content_length)?;
            verify(&meter, digest)?;
            let notices = self.blob_notices(Action::Push, repo, &existing, notify);
            let stored = self
                .meta
                .commit_blob_with_notices(repo, existing, &notices)
                .await?;
            self.woken(&notices);
            self.ensure_pinned(&stored).await?;
            return Ok(stored);
        }
        let stored = self
            .blobs
            .add(stream)
            .await
            .map_err(|e| input_error(e, &meter, &limit))?;
        self.metrics.blob_bytes_in.inc_by(meter.bytes());
        let checked = check_declared(&meter, content_length).and_then(|()| verify(&meter, digest));
        if let Err(e) = checked {
            self.release(&stored.cid).await;
            return Err(e);
        }
        let record = BlobRecord {
            digest: digest.clone(),
            cid: stored.cid,
            size: meter.bytes(),
            import_profile: self.blobs.profile().id(),
        };
        let notices = self.blob_notices(Action::Push, repo, &record, notify);
        let committed = self
            .meta
            .commit_blob_with_notices(repo, record, &notices)
            .await;
        if committed.is_ok() {
            self.woken(&notices);
        }
        let record = self.settle(stored.cid, committed).await?;
        if healing {
            self.heal(&record, stored.cid).await;
        }
        Ok(record)
    }

    /// The stored record of `digest`, unless it is quarantined: then `None` (its bytes are
    /// stored again like a new blob's) and `true`, so that the push heals it.
    pub(super) async fn known_blob(&self, digest: &Digest) -> Result<(Option<BlobRecord>, bool)> {
        match self.meta.blob(digest).await? {
            Some(_) if self.meta.is_quarantined(digest).await? => Ok((None, true)),
            existing => Ok((existing, false)),
        }
    }

    /// After a verified push stored a quarantined blob's bytes again (as `added`): lifts the
    /// quarantine. Bytes imported under another profile than the record's got another CID
    /// and do not repair the record's; then the quarantine stays and the scrub reports it.
    pub(super) async fn heal(&self, stored: &BlobRecord, added: cid::Cid) {
        if stored.cid != added {
            tracing::warn!(
                event = "blob_heal_failed",
                digest = %stored.digest,
                ipfs_cid = %stored.cid,
                added = %added,
                "the pushed bytes were stored under another CID (import profile changed): the blob stays quarantined"
            );
            return;
        }
        match self.meta.release_blob(&stored.digest).await {
            Ok(_) => {
                tracing::info!(event = "blob_healed", digest = %stored.digest, ipfs_cid = %stored.cid, "quarantined blob stored again, verified: released");
                self.count_quarantined().await;
            }
            Err(e) => {
                tracing::warn!(event = "blob_heal_failed", digest = %stored.digest, error = %e, "could not release the quarantine");
            }
        }
    }

    /// After committing a blob added as `added`: drops that pin when the digest turned out
    /// to be stored under another CID, makes sure the stored CID is pinned, and on failure
    /// drops what was added.
    pub(super) async fn settle(
        &self,
        added: cid::Cid,
        committed: std::result::Result<BlobRecord, crate::meta::MetaError>,
    ) -> Result<BlobRecord> {
        match committed {
            Ok(stored) => {
                if stored.cid != added {
                    // The digest was stored meanwhile under another CID (older profile).
                    self.release(&added).await;
                }
                self.ensure_pinned(&stored).await?;
                Ok(stored)
            }
            Err(e) => {
                self.release(&added).await;
                Err(e.into())
            }
        }
    }

    async fn session(&self, repo: &RepoName, id: Uuid) -> Result<Upload> {
        self.meta
            .upload(repo, id)
            .await?
            .ok_or(RegistryError::BlobUploadUnknown)
    }

    /// Adds one chunk to the blob store and records it, continuing the session's hash.
    async fn store_chunk(
        &self,
        upload: &Upload,
        body: ByteStream,
        declared: Option<u64>,
    ) -> Result<UploadStatus> {
        let Some((meter, stream, limit)) = self.chunk_body(upload, body, declared).await? else {
            return Ok(UploadStatus::from(upload));
        };
        let stored = self
            .blobs
            .add(stream)
            .await
            .map_err(|e| input_error(e, &meter, &limit))?;
        self.metrics.blob_bytes_in.inc_by(meter.bytes());
        if let Err(e) = check_declared(&meter, declared) {
            self.release(&stored.cid).await;
            return Err(e);
        }
        let Some(Hasher::Sha256(hasher)) = meter.take_hasher() else {
            return Err(RegistryError::Internal("upload hasher missing".into()));
        };
        let chunk = UploadChunk {
            offset: upload.bytes_received,
            size: meter.bytes(),
            cid: stored.cid,
        };
        let appended = self
            .meta
            .append_upload_chunk(upload.id, chunk.clone(), save_sha256(&hasher))
            .await;
        match appended {
            Ok(true) => Ok(UploadStatus {
                id: upload.id,
                bytes_received: upload.bytes_received + chunk.size,
            }),
            Ok(false) => {
                // Another request appended first (or the session ended meanwhile).
                self.release(&chunk.cid).await;
                let current = self.session(&upload.repository, upload.id).await?;
                Err(RegistryError::ChunkOutOfOrder {
                    received: current.bytes_received,
                })
            }
            Err(e) => {
                self.release(&chunk.cid).await;
                Err(e.into())
            }
        }
    }

    /// Verifies the session's bytes against `digest` and produces the blob record, and
    /// whether it heals a quarantined blob.
    async fn assemble(&self, upload: &Upload, digest: &Digest) -> Result<(Assembled, bool)> {
        let (existing, healing) = self.known_blob(digest).await?;
        self.assemble_known(upload, digest, existing)
            .await
            .map(|record| (record, healing))
    }

    async fn assemble_known(
        &self,
        upload: &Upload,
        digest: &Digest,
        existing: Option<BlobRecord>,
    ) -> Result<Assembled> {
        let chunks = self.meta.upload_chunks(upload.id).await?;
        let total: u64 = chunks.iter().map(|c| c.size).sum();
        if total != upload.bytes_received {
            return Err(RegistryError::Internal(format!(
                "upload {} records {} bytes but its chunks hold {total}",
                upload.id, upload.bytes_received
            )));
        }
        if digest.algorithm() == Algorithm::Sha256 {
            let hasher = restore_sha256(&upload.hash_state)
                .ok_or_else(|| RegistryError::Internal("upload hash state is unreadable".into()))?;
            let actual = Hasher::Sha256(hasher).finish();
            if actual != *digest {
                return Err(digest_mismatch(digest, &actual));
            }
            if let Some(existing) = existing {
                return Ok(existing.into());
            }
            if let [only] = chunks.as_slice() {
                return Ok(self.record(digest, only.cid, total).into());
            }
            // The digest is proven by the session's running hash; a store that can join
            // the chunks itself spares re-reading them (leaf-aligned chunks).
            let parts: Vec<cid::Cid> = chunks.iter().map(|c| c.cid).collect();
            if let Some(Joined { stored, direct }) = self.blobs.concat(&parts).await? {
                if stored.size != total {
                    self.release_queued(direct.into_iter().flatten()).await;
                    self.release(&stored.cid).await;
                    return Err(RegistryError::Internal(format!(
                        "the joined chunks of upload {} hold {} bytes, not {total}",
                        upload.id, stored.size
                    )));
                }
                return Ok(Assembled {
                    record: self.record(digest, stored.cid, total),
                    pending: direct.map(|direct| PendingPin {
                        root: stored.cid,
                        direct,
                    }),
                });
            }
        }
        // Re-read the chunks as one stream: hashing it when the session's running sha256
        // cannot answer (sha512), adding it when the blob needs its own CID.
        let (meter, stream, limit) = self.meter(
            self.concat(chunks),
            Hasher::new(digest.algorithm()),
            0,
            None,
        );
        if let Some(existing) = existing {
            drain(stream, &meter, &limit).await?;
            verify(&meter, digest)?;
            return Ok(existing.into());
        }
        let stored = self.blobs.add(stream).await?;
        if let Err(e) = verify(&meter, digest) {
            self.release(&stored.cid).await;
            return Err(e);
        }
        Ok(self.record(digest, stored.cid, meter.bytes()).into())
    }

    fn record(&self, digest: &Digest, cid: cid::Cid, size: u64) -> BlobRecord {
        BlobRecord {
            digest: digest.clone(),
            cid,
            size,
            import_profile: self.blobs.profile().id(),
        }
    }

    fn concat(&self, chunks: Vec<UploadChunk>) -> ByteStream {
        let blobs = self.blobs.clone();
        Box::pin(
            stream::iter(chunks)
                .then(move |chunk| {
                    let blobs = blobs.clone();
                    async move {
                        blobs
                            .cat(&chunk.cid, 0, Some(chunk.size))
                            .await
                            .map_err(io::Error::other)
                    }
                })
                .try_flatten(),
        )
    }

    /// Commits the blob and ends the session in one step, then drops the chunks' pins, or
    /// (a joined blob pinned only in part) has the blob pinned recursively first.
    async fn finish_session(
        &self,
        id: Uuid,
        repo: &RepoName,
        assembled: Assembled,
        origin: &Origin,
    ) -> Result<BlobRecord> {
        let Assembled { record, pending } = assembled;
        let cid = record.cid;
        let notices = self.blob_notices(Action::Push, repo, &record, Some(origin));
        let completed = self
            .meta
            .complete_upload_with_notices(id, repo, record, pending.as_ref(), &notices)
            .await;
        let (stored, chunks) = match completed {
            Ok(done) => done,
            Err(e) => {
                if let Some(pending) = pending {
                    self.release_queued(pending.direct).await;
                }
                return self.settle(cid, Err(e)).await;
            }
        };
        self.woken(&notices);
        match pending {
            // The metadata holds the chunks and nodes until the recursive pin is made.
            Some(pending) if pending.root == stored.cid => {
                self.pin_joined_later(stored.cid).await;
                Ok(stored)
            }
            pending => {
                let released = chunks
                    .iter()
                    .map(|c| c.cid)
                    .filter(|&cid| cid != stored.cid)
                    .chain(pending.into_iter().flat_map(|pending| pending.direct))
                    .collect();
                self.release_queued_later(released).await;
                self.settle(cid, Ok(stored)).await
            }
        }
    }

    /// Ends a session and drops its chunks' pins.
    async fn end_session(&self, id: Uuid) {
        match self.meta.delete_upload(id).await {
            Ok(chunks) => self.release_queued(chunks.iter().map(|c| c.cid)).await,
            Err(e) => tracing::warn!(event = "upload_cleanup_failed", upload = %id, error = %e),
        }
    }

    /// Wraps a body with hashing and the tighter of the declared and configured limits.
    /// A chunk's body counted, limited and hashed on from the session's state; `None` for
    /// an empty body, which only a declared non-zero length makes an error.
    async fn chunk_body(
        &self,
        upload: &Upload,
        body: ByteStream,
        declared: Option<u64>,
    ) -> Result<Option<(Meter, ByteStream, Option<Limit>)>> {
        let hasher = restore_sha256(&upload.hash_state)
            .ok_or_else(|| RegistryError::Internal("upload hash state is unreadable".into()))?;
        let Some(body) = non_empty(body).await? else {
            if declared.is_some_and(|d| d > 0) {
                return Err(RegistryError::SizeInvalid("the body is empty".into()));
            }
            return Ok(None);
        };
        Ok(Some(self.meter(
            body,
            Hasher::Sha256(hasher),
            upload.bytes_received,
            declared,
        )))
    }

    fn meter(
        &self,
        body: ByteStream,
        hasher: Hasher,
        already: u64,
        declared: Option<u64>,
    ) -> (Meter, ByteStream, Option<Limit>) {
        let configured = self
            .max_blob_size()
            .map(|max| Limit::Configured(max.saturating_sub(already)));
        let limit = match (declared.map(Limit::Declared), configured) {
            (Some(Limit::Declared(d)), Some(Limit::Configured(c))) if c < d => {
                Some(Limit::Configured(c))
            }
            (Some(d), _) => Some(d),
            (None, c) => c,
        };
        let bytes = limit.as_ref().map(|l| match l {
            Limit::Declared(n) | Limit::Configured(n) => *n,
        });
        let (meter, stream) = Meter::wrap(body, Some(hasher), bytes);
        (meter, stream, limit)
    }
}

/// Deletes a session's file; a failure leaves it to expire with idle sessions.
async fn discard(file: Box<dyn UploadFile>) {
    if let Err(e) = file.discard().await {
        tracing::warn!(event = "upload_file_cleanup_failed", error = %e);
    }
}

/// Waits for the first non-empty piece of a body; `None` when the body is empty.
async fn non_empty(mut body: ByteStream) -> Result<Option<ByteStream>> {
    loop {
        match body.next().await {
            None => return Ok(None),
            Some(Err(e)) => return Err(RegistryError::BlobUploadInvalid(e.to_string())),
            Some(Ok(piece)) if piece.is_empty() => continue,
            Some(Ok(piece)) => {
                let first = stream::once(futures::future::ready(Ok(piece)));
                return Ok(Some(Box::pin(first.chain(body))));
            }
        }
    }
}

/// Reads a metered stream to its end without storing it (its meter hashes it).
async fn drain(stream: ByteStream, meter: &Meter, limit: &Option<Limit>) -> Result<()> {
    stream
        .try_for_each(|_| futures::future::ready(Ok(())))
        .await
        .map_err(|e| input_error(BlobError::Input(e.to_string()), meter, limit))
}

fn input_error(e: BlobError, meter: &Meter, limit: &Option<Limit>) -> RegistryError {
    if meter.overflowed() {
        return match limit {
            Some(Limit::Declared(n)) => {
                RegistryError::SizeInvalid(format!("body is longer than the declared {n} bytes"))
            }
            Some(Limit::Configured(_)) | None => {
                RegistryError::TooLarge("blob exceeds the registry's maximum blob size".into())
            }
        };
    }
    e.into()
}

fn check_declared(meter: &Meter, declared: Option<u64>) -> Result<()> {
    match declared {
        Some(d) if d != meter.bytes() => Err(RegistryError::SizeInvalid(format!(
            "received {} bytes, declared {d}",
            meter.bytes()
        ))),
        _ => Ok(()),
    }
}

fn verify(meter: &Meter, digest: &Digest) -> Result<()> {
    let actual = meter
        .take_hasher()
        .ok_or_else(|| RegistryError::Internal("hasher missing".into()))?
        .finish();
    if actual != *digest {
        return Err(digest_mismatch(digest, &actual));
    }
    Ok(())
}

fn digest_mismatch(expected: &Digest, actual: &Digest) -> RegistryError {
    RegistryError::DigestInvalid(format!("content hashes to {actual}, not {expected}"))
}
