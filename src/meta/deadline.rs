//! A metadata store wrapper that gives every call a deadline, whatever the route.
//!
//! A database that accepts connections but stops answering (a partition, a frozen primary)
//! never fails a query: PostgreSQL's `statement_timeout` runs on the server that is not
//! answering, and the pool's `database.timeout` bounds only getting a connection. Without
//! a deadline here a request waits until the database comes back, holding its upload slot.
//! With it the call fails as [`MetaError::Unavailable`] (503) after
//! `database.operation_timeout`, connection wait included (garbage collection and inventory
//! calls: `database.gc_operation_timeout`).
//!
//! An abandoned call is dropped where it stands. That cannot half-apply anything: each
//! multi-statement operation is one transaction, which tokio-postgres rolls back when it is
//! dropped uncommitted (a `COMMIT` already sent either lands whole or not at all), and
//! SQLite work runs to its end on the blocking pool. So a 503 means "not known to have
//! happened": a write already sent may still land, whole, once the database answers. A
//! retry sees it (an upload's GET reports the offset, a manifest put again is the same),
//! or GC tidies it (a session opened for a client that gave up expires). The store is then
//! told to close its idle connections ([`StoreStatus::discard_idle_connections`]), so the
//! stuck connection is not handed to the next request.

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use cid::Cid;
use uuid::Uuid;

use super::gc::{GcLease, GcStore, SweepPolicy, Swept, UnpinLease};
use super::status::{PoolUse, StoreStatus};
use super::users::{RepoFilter, RobotToken, StoredGrant, User, UserStore};
use super::{
    BlobRecord, MetaError, MetadataStore, NewManifest, Page, StoredManifest, Upload, UploadChunk,
};
use crate::config::DatabaseConfig;
use crate::oci::{Descriptor, Digest, Reference, RepoName, Tag};

pub struct Deadlines<S> {
    inner: S,
    /// Limit on a call made for a request (and by the admin commands).
    call: Duration,
    /// Limit on a garbage collection or inventory call.
    gc: Duration,
}

impl<S: StoreStatus> Deadlines<S> {
    pub fn new(inner: S, config: &DatabaseConfig) -> Deadlines<S> {
        Deadlines {
            inner,
            call: config.operation_timeout,
            gc: config.gc_operation_timeout,
        }
    }

    async fn within<T>(
        &self,
        limit: Duration,
        operation: &'static str,
        call: impl Future<Output = Result<T, MetaError>>,
    ) -> Result<T, MetaError> {
        // Bound in a statement of its own: the abandoned call (and the connection it holds,
        // which goes back to the pool) is dropped before the idle connections are closed.
        let outcome = tokio::time::timeout(limit, call).await;
        outcome.unwrap_or_else(|_| {
            self.inner.discard_idle_connections();
            Err(timed_out(operation, limit))
        })
    }

    async fn request<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, MetaError>>,
    ) -> Result<T, MetaError> {
        self.within(self.call, operation, call).await
    }

    async fn gc<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, MetaError>>,
    ) -> Result<T, MetaError> {
        self.within(self.gc, operation, call).await
    }
}

fn timed_out(operation: &str, limit: Duration) -> MetaError {
    MetaError::Unavailable(format!(
        "the database did not answer `{operation}` within {limit:?}"
    ))
}

#[async_trait]
impl<S: MetadataStore + StoreStatus> MetadataStore for Deadlines<S> {
    async fn ping(&self) -> Result<(), MetaError> {
        self.request("ping", self.inner.ping()).await
    }

    async fn blob(&self, digest: &Digest) -> Result<Option<BlobRecord>, MetaError> {
        self.request("blob", self.inner.blob(digest)).await
    }

    async fn blob_by_cid(&self, cid: &Cid) -> Result<Option<BlobRecord>, MetaError> {
        self.request("blob_by_cid", self.inner.blob_by_cid(cid))
            .await
    }

    async fn repositories_with_cid(&self, cid: &Cid) -> Result<Vec<String>, MetaError> {
        self.request(
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
        self.request("repository_blob", self.inner.repository_blob(repo, digest))
            .await
    }

    async fn commit_blob(
        &self,
        repo: &RepoName,
        blob: BlobRecord,
    ) -> Result<BlobRecord, MetaError> {
        self.request("commit_blob", self.inner.commit_blob(repo, blob))
            .await
    }

    async fn mount_blob(
        &self,
        from: &RepoName,
        to: &RepoName,
        digest: &Digest,
    ) -> Result<Option<BlobRecord>, MetaError> {
        self.request("mount_blob", self.inner.mount_blob(from, to, digest))
            .await
    }

    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool, MetaError> {
        self.request("unlink_blob", self.inner.unlink_blob(repo, digest))
            .await
    }

    async fn manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Option<StoredManifest>, MetaError> {
        self.request("manifest", self.inner.manifest(repo, reference))
            .await
    }

    async fn put_manifest(
        &self,
        repo: &RepoName,
        manifest: NewManifest,
        tag: Option<&Tag>,
    ) -> Result<(), MetaError> {
        self.request("put_manifest", self.inner.put_manifest(repo, manifest, tag))
            .await
    }

    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool, MetaError> {
        self.request("delete_manifest", self.inner.delete_manifest(repo, digest))
            .await
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool, MetaError> {
        self.request("delete_tag", self.inner.delete_tag(repo, tag))
            .await
    }

    async fn tags(&self, repo: &RepoName, page: &Page) -> Result<Option<Vec<String>>, MetaError> {
        self.request("tags", self.inner.tags(repo, page)).await
    }

    async fn catalog(&self, page: &Page) -> Result<Vec<String>, MetaError> {
        self.request("catalog", self.inner.catalog(page)).await
    }

    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Descriptor>, MetaError> {
        self.request(
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
        self.request("create_upload", self.inner.create_upload(repo, hash_state))
            .await
    }

    async fn upload(&self, repo: &RepoName, id: Uuid) -> Result<Option<Upload>, MetaError> {
        self.request("upload", self.inner.upload(repo, id)).await
    }

    async fn append_upload_chunk(
        &self,
        id: Uuid,
        chunk: UploadChunk,
        hash_state: Vec<u8>,
    ) -> Result<bool, MetaError> {
        self.request(
            "append_upload_chunk",
            self.inner.append_upload_chunk(id, chunk, hash_state),
        )
        .await
    }

    async fn upload_chunks(&self, id: Uuid) -> Result<Vec<UploadChunk>, MetaError> {
        self.request("upload_chunks", self.inner.upload_chunks(id))
            .await
    }

    async fn complete_upload(
        &self,
        id: Uuid,
        repo: &RepoName,
        blob: BlobRecord,
    ) -> Result<(BlobRecord, Vec<UploadChunk>), MetaError> {
        self.request(
            "complete_upload",
            self.inner.complete_upload(id, repo, blob),
        )
        .await
    }

    async fn delete_upload(&self, id: Uuid) -> Result<Vec<UploadChunk>, MetaError> {
        self.request("delete_upload", self.inner.delete_upload(id))
            .await
    }
}

#[async_trait]
impl<S: UserStore + StoreStatus> UserStore for Deadlines<S> {
    async fn create_user(
        &self,
        name: &str,
        password_hash: &str,
        admin: bool,
    ) -> Result<bool, MetaError> {
        self.request(
            "create_user",
            self.inner.create_user(name, password_hash, admin),
        )
        .await
    }

    async fn remove_user(&self, name: &str) -> Result<bool, MetaError> {
        self.request("remove_user", self.inner.remove_user(name))
            .await
    }

    async fn set_password(&self, name: &str, password_hash: &str) -> Result<bool, MetaError> {
        self.request("set_password", self.inner.set_password(name, password_hash))
            .await
    }

    async fn user(&self, name: &str) -> Result<Option<User>, MetaError> {
        self.request("user", self.inner.user(name)).await
    }

    async fn users(&self) -> Result<Vec<(String, bool)>, MetaError> {
        self.request("users", self.inner.users()).await
    }

    async fn grants(&self, user_id: i64) -> Result<Vec<StoredGrant>, MetaError> {
        self.request("grants", self.inner.grants(user_id)).await
    }

    async fn grant(
        &self,
        user: &str,
        pattern: &str,
        permissions: &[String],
    ) -> Result<bool, MetaError> {
        self.request("grant", self.inner.grant(user, pattern, permissions))
            .await
    }

    async fn revoke(
        &self,
        user: &str,
        pattern: &str,
        permissions: Option<&[String]>,
    ) -> Result<bool, MetaError> {
        self.request("revoke", self.inner.revoke(user, pattern, permissions))
            .await
    }

    async fn public_patterns(&self) -> Result<Vec<String>, MetaError> {
        self.request("public_patterns", self.inner.public_patterns())
            .await
    }

    async fn set_public(&self, pattern: &str, public: bool) -> Result<bool, MetaError> {
        self.request("set_public", self.inner.set_public(pattern, public))
            .await
    }

    async fn create_robot_token(&self, user: &str, token: &RobotToken) -> Result<bool, MetaError> {
        self.request(
            "create_robot_token",
            self.inner.create_robot_token(user, token),
        )
        .await
    }

    async fn robot_token(&self, id: Uuid) -> Result<Option<RobotToken>, MetaError> {
        self.request("robot_token", self.inner.robot_token(id))
            .await
    }

    async fn catalog_filtered(
        &self,
        page: &Page,
        filter: &RepoFilter,
    ) -> Result<Vec<String>, MetaError> {
        self.request(
            "catalog_filtered",
            self.inner.catalog_filtered(page, filter),
        )
        .await
    }
}

#[async_trait]
impl<S: GcStore + StoreStatus> GcStore for Deadlines<S> {
    async fn try_gc_lease(&self) -> Result<Option<Box<dyn GcLease>>, MetaError> {
        let lease = self.gc("try_gc_lease", self.inner.try_gc_lease()).await?;
        Ok(lease.map(|inner| {
            Box::new(GcLeaseWithin {
                inner,
                limit: self.gc,
            }) as Box<dyn GcLease>
        }))
    }

    async fn sweep(&self, policy: &SweepPolicy, dry_run: bool) -> Result<Swept, MetaError> {
        self.gc("sweep", self.inner.sweep(policy, dry_run)).await
    }

    async fn unpin_queue(&self, limit: u32) -> Result<Vec<Cid>, MetaError> {
        self.gc("unpin_queue", self.inner.unpin_queue(limit)).await
    }

    async fn dequeue_unpin(&self, cid: &Cid) -> Result<(), MetaError> {
        self.gc("dequeue_unpin", self.inner.dequeue_unpin(cid))
            .await
    }

    /// Taken on a request path too (releasing a deleted blob's pin), so the request limit.
    async fn unpin_lease(&self, cid: &Cid) -> Result<Box<dyn UnpinLease>, MetaError> {
        let inner = self
            .request("unpin_lease", self.inner.unpin_lease(cid))
            .await?;
        Ok(Box::new(UnpinLeaseWithin {
            inner,
            limit: self.call,
        }))
    }

    async fn recorded_cids(&self, cids: &[Cid]) -> Result<HashSet<Cid>, MetaError> {
        self.gc("recorded_cids", self.inner.recorded_cids(cids))
            .await
    }

    async fn blob_records(
        &self,
        after: Option<&Digest>,
        limit: u32,
    ) -> Result<Vec<BlobRecord>, MetaError> {
        self.gc("blob_records", self.inner.blob_records(after, limit))
            .await
    }
}

#[async_trait]
impl<S: StoreStatus> StoreStatus for Deadlines<S> {
    async fn schema_current(&self) -> Result<bool, MetaError> {
        self.request("schema_current", self.inner.schema_current())
            .await
    }

    fn pool_use(&self) -> Option<PoolUse> {
        self.inner.pool_use()
    }

    fn discard_idle_connections(&self) {
        self.inner.discard_idle_connections();
    }
}

struct GcLeaseWithin {
    inner: Box<dyn GcLease>,
    limit: Duration,
}

#[async_trait]
impl GcLease for GcLeaseWithin {
    async fn release(self: Box<Self>) {
        // Given up on, the lease is dropped, which releases it once the database answers.
        let _ = tokio::time::timeout(self.limit, self.inner.release()).await;
    }
}

struct UnpinLeaseWithin {
    inner: Box<dyn UnpinLease>,
    limit: Duration,
}

#[async_trait]
impl UnpinLease for UnpinLeaseWithin {
    async fn in_use(&mut self) -> Result<bool, MetaError> {
        let limit = self.limit;
        tokio::time::timeout(limit, self.inner.in_use())
            .await
            .unwrap_or_else(|_| Err(timed_out("unpin_lease.in_use", limit)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Counts how often it was told to drop its idle connections.
    #[derive(Default)]
    struct Pool {
        discarded: AtomicUsize,
    }

    #[async_trait]
    impl StoreStatus for Pool {
        async fn schema_current(&self) -> Result<bool, MetaError> {
            Ok(true)
        }

        fn pool_use(&self) -> Option<PoolUse> {
            None
        }

        fn discard_idle_connections(&self) {
            self.discarded.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn deadlines() -> Deadlines<Pool> {
        Deadlines {
            inner: Pool::default(),
            call: Duration::from_millis(100),
            gc: Duration::from_secs(60),
        }
    }

    #[tokio::test]
    async fn a_call_that_never_answers_is_unavailable_and_idle_connections_go() {
        let store = deadlines();
        let started = std::time::Instant::now();
        let result: Result<(), MetaError> = store.request("manifest", std::future::pending()).await;
        match result {
            Err(MetaError::Unavailable(message)) => {
                assert!(message.contains("`manifest`"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(store.inner.discarded.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn answers_and_errors_within_the_limit_pass_through() {
        let store = deadlines();
        assert_eq!(store.request("tags", async { Ok(7) }).await.unwrap(), 7);
        let refused: Result<(), MetaError> = store
            .gc("sweep", async { Err(MetaError::Backend("no".into())) })
            .await;
        assert!(matches!(refused, Err(MetaError::Backend(_))));
        assert_eq!(store.inner.discarded.load(Ordering::SeqCst), 0);
    }
}
