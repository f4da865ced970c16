//! A [`MetadataStore`] wrapper that records each operation's latency and failures.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use cid::Cid;
use uuid::Uuid;

use super::{
    BlobRecord, MetaError, MetadataStore, NewManifest, Page, StoredManifest, Upload, UploadChunk,
};
use crate::metrics::Metrics;
use crate::oci::{Descriptor, Digest, Reference, RepoName, Tag};

pub struct MeteredMetadataStore {
    inner: Arc<dyn MetadataStore>,
    metrics: Arc<Metrics>,
}

impl MeteredMetadataStore {
    pub fn new(inner: Arc<dyn MetadataStore>, metrics: Arc<Metrics>) -> MeteredMetadataStore {
        MeteredMetadataStore { inner, metrics }
    }

    async fn timed<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, MetaError>>,
    ) -> Result<T, MetaError> {
        let started = Instant::now();
        let result = call.await;
        // A refused manifest is an answer, not a database failure.
        let ok = matches!(result, Ok(_) | Err(MetaError::MissingReferences(_)));
        self.metrics.record_db(operation, ok, started.elapsed());
        result
    }
}

#[async_trait]
impl MetadataStore for MeteredMetadataStore {
    async fn ping(&self) -> Result<(), MetaError> {
        self.timed("ping", self.inner.ping()).await
    }

    async fn blob(&self, digest: &Digest) -> Result<Option<BlobRecord>, MetaError> {
        self.timed("blob", self.inner.blob(digest)).await
    }

    async fn blob_by_cid(&self, cid: &Cid) -> Result<Option<BlobRecord>, MetaError> {
        self.timed("blob_by_cid", self.inner.blob_by_cid(cid)).await
    }

    async fn repositories_with_cid(&self, cid: &Cid) -> Result<Vec<String>, MetaError> {
        self.timed(
            "repositories_with_cid",
            self.inner.repositories_with_cid(cid),
        )
        .await
    }

    async fn repository_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<BlobRecord>, MetaError> {
        self.timed("repository_blob", self.inner.repository_blob(repo, digest))
            .await
    }

    async fn commit_blob(
        &self,
        repo: &RepoName,
        blob: BlobRecord,
    ) -> Result<BlobRecord, MetaError> {
        self.timed("commit_blob", self.inner.commit_blob(repo, blob))
            .await
    }

    async fn mount_blob(
        &self,
        from: &RepoName,
        to: &RepoName,
        digest: &Digest,
    ) -> Result<Option<BlobRecord>, MetaError> {
        self.timed("mount_blob", self.inner.mount_blob(from, to, digest))
            .await
    }

    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool, MetaError> {
        self.timed("unlink_blob", self.inner.unlink_blob(repo, digest))
            .await
    }

    async fn manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Option<StoredManifest>, MetaError> {
        self.timed("manifest", self.inner.manifest(repo, reference))
            .await
    }

    async fn put_manifest(
        &self,
        repo: &RepoName,
        manifest: NewManifest,
        tag: Option<&Tag>,
    ) -> Result<(), MetaError> {
        self.timed("put_manifest", self.inner.put_manifest(repo, manifest, tag))
            .await
    }

    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool, MetaError> {
        self.timed("delete_manifest", self.inner.delete_manifest(repo, digest))
            .await
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool, MetaError> {
        self.timed("delete_tag", self.inner.delete_tag(repo, tag))
            .await
    }

    async fn tags(&self, repo: &RepoName, page: &Page) -> Result<Option<Vec<String>>, MetaError> {
        self.timed("tags", self.inner.tags(repo, page)).await
    }

    async fn catalog(&self, page: &Page) -> Result<Vec<String>, MetaError> {
        self.timed("catalog", self.inner.catalog(page)).await
    }

    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Descriptor>, MetaError> {
        self.timed(
            "referrers",
            self.inner.referrers(repo, subject, artifact_type),
        )
        .await
    }

    async fn create_upload(
        &self,
        repo: &RepoName,
        hash_state: Vec<u8>,
    ) -> Result<Upload, MetaError> {
        self.timed("create_upload", self.inner.create_upload(repo, hash_state))
            .await
    }

    async fn upload(&self, repo: &RepoName, id: Uuid) -> Result<Option<Upload>, MetaError> {
        self.timed("upload", self.inner.upload(repo, id)).await
    }

    async fn append_upload_chunk(
        &self,
        id: Uuid,
        chunk: UploadChunk,
        hash_state: Vec<u8>,
    ) -> Result<bool, MetaError> {
        self.timed(
            "append_upload_chunk",
            self.inner.append_upload_chunk(id, chunk, hash_state),
        )
        .await
    }

    async fn upload_chunks(&self, id: Uuid) -> Result<Vec<UploadChunk>, MetaError> {
        self.timed("upload_chunks", self.inner.upload_chunks(id))
            .await
    }

    async fn complete_upload(
        &self,
        id: Uuid,
        repo: &RepoName,
        blob: BlobRecord,
    ) -> Result<(BlobRecord, Vec<UploadChunk>), MetaError> {
        self.timed(
            "complete_upload",
            self.inner.complete_upload(id, repo, blob),
        )
        .await
    }

    async fn delete_upload(&self, id: Uuid) -> Result<Vec<UploadChunk>, MetaError> {
        self.timed("delete_upload", self.inner.delete_upload(id))
            .await
    }
}
