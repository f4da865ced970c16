//! A [`BlobStore`] wrapper that records every call into the metrics: one choke point for
//! all IPFS RPC traffic, whichever store is behind it.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use cid::Cid;

use super::{BlobError, BlobStore, ByteStream, ImportProfile, StoredBytes};
use crate::metrics::Metrics;

pub struct MeteredBlobStore {
    inner: Arc<dyn BlobStore>,
    metrics: Arc<Metrics>,
}

impl MeteredBlobStore {
    pub fn new(inner: Arc<dyn BlobStore>, metrics: Arc<Metrics>) -> MeteredBlobStore {
        MeteredBlobStore { inner, metrics }
    }

    async fn timed<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, BlobError>>,
    ) -> Result<T, BlobError> {
        let started = Instant::now();
        let result = call.await;
        self.metrics
            .record_ipfs(operation, result.is_ok(), started.elapsed());
        result
    }
}

#[async_trait]
impl BlobStore for MeteredBlobStore {
    fn profile(&self) -> &ImportProfile {
        self.inner.profile()
    }

    async fn ping(&self) -> Result<(), BlobError> {
        self.timed("ping", self.inner.ping()).await
    }

    async fn add(&self, data: ByteStream) -> Result<StoredBytes, BlobError> {
        self.timed("add", self.inner.add(data)).await
    }

    async fn concat(&self, parts: &[Cid]) -> Result<Option<super::Joined>, BlobError> {
        self.timed("concat", self.inner.concat(parts)).await
    }

    async fn upload_file(
        &self,
        id: uuid::Uuid,
    ) -> Result<Option<Box<dyn super::UploadFile>>, BlobError> {
        self.timed("upload_file", self.inner.upload_file(id)).await
    }

    async fn expire_upload_files(&self, idle: std::time::Duration) -> Result<usize, BlobError> {
        self.timed("expire_upload_files", self.inner.expire_upload_files(idle))
            .await
    }

    async fn cat(
        &self,
        cid: &Cid,
        offset: u64,
        length: Option<u64>,
    ) -> Result<ByteStream, BlobError> {
        self.timed("cat", self.inner.cat(cid, offset, length)).await
    }

    async fn pin(&self, cid: &Cid) -> Result<(), BlobError> {
        self.timed("pin", self.inner.pin(cid)).await
    }

    async fn unpin(&self, cid: &Cid) -> Result<(), BlobError> {
        self.timed("unpin", self.inner.unpin(cid)).await
    }

    async fn evict(&self, cid: &Cid) -> Result<(), BlobError> {
        self.timed("evict", self.inner.evict(cid)).await
    }

    async fn is_pinned(&self, cid: &Cid) -> Result<bool, BlobError> {
        self.timed("is_pinned", self.inner.is_pinned(cid)).await
    }

    async fn pinned(&self) -> Result<Vec<Cid>, BlobError> {
        self.timed("pinned", self.inner.pinned()).await
    }

    async fn direct_pins(&self) -> Result<Vec<Cid>, BlobError> {
        self.timed("direct_pins", self.inner.direct_pins()).await
    }

    async fn block(&self, cid: &Cid) -> Result<bytes::Bytes, BlobError> {
        self.timed("block", self.inner.block(cid)).await
    }

    async fn put_dag(&self, root: &Cid, blocks: Vec<(Cid, Bytes)>) -> Result<(), BlobError> {
        self.timed("put_dag", self.inner.put_dag(root, blocks))
            .await
    }

    async fn car(&self, root: &Cid) -> Result<ByteStream, BlobError> {
        self.timed("car", self.inner.car(root)).await
    }

    async fn fetch_block(&self, cid: &Cid) -> Result<Bytes, BlobError> {
        self.timed("fetch_block", self.inner.fetch_block(cid)).await
    }

    async fn put_dag_replacing(
        &self,
        previous: Option<&Cid>,
        root: &Cid,
        blocks: Vec<(Cid, Bytes)>,
    ) -> Result<(), BlobError> {
        self.timed(
            "put_dag",
            self.inner.put_dag_replacing(previous, root, blocks),
        )
        .await
    }

    async fn roots_holding(&self, cid: &Cid) -> Result<Vec<Cid>, BlobError> {
        self.timed("roots_holding", self.inner.roots_holding(cid))
            .await
    }

    async fn publish_name(&self, key: &str, root: &Cid) -> Result<Option<String>, BlobError> {
        self.timed("publish_name", self.inner.publish_name(key, root))
            .await
    }

    async fn resolve_name(&self, name: &str) -> Result<Cid, BlobError> {
        self.timed("resolve_name", self.inner.resolve_name(name))
            .await
    }
}
