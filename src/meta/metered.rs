//! The metadata store wrapper every store runs behind ([`super::open`]): each call of
//! [`MetadataStore`], [`UserStore`], [`GcStore`] and [`StoreStatus`] is held to a deadline,
//! whatever the route, and timed into the metrics (`db_queries`, `db_errors`,
//! `db_query_duration_seconds` by operation), the wait for a connection and a call given up
//! on included. One wrapper for both, so a new trait method is one forwarding line.
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
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use cid::Cid;
use uuid::Uuid;

use super::gc::{GcLease, GcStore, SweepPolicy, Swept, TagRecord, UnpinLease};
use super::outbox::{Notice, OutboxCounts, OutboxEntry, OutboxStore, Retry};
use super::status::{PoolUse, StoreStatus};
use super::users::{RepoFilter, RobotToken, StoredGrant, User, UserStore};
use super::{
    BlobRecord, FollowState, FollowedTag, ImageLayout, MetaError, MetadataStore, NewManifest, Page,
    PendingPin, ProtectedTags, Quarantined, QueuedLayout, RepoOrigin, RepositorySummary,
    StoredManifest, TagSummary, Upload, UploadChunk,
};
use crate::config::DatabaseConfig;
use crate::metrics::Metrics;
use crate::oci::{Descriptor, Digest, Reference, RepoName, Tag};

pub struct Metered<S> {
    inner: S,
    metrics: Arc<Metrics>,
    /// Limit on a call made for a request (and by the admin commands).
    call: Duration,
    /// Limit on a garbage collection or inventory call.
    gc: Duration,
}

impl<S: StoreStatus> Metered<S> {
    pub fn new(inner: S, config: &DatabaseConfig, metrics: Arc<Metrics>) -> Metered<S> {
        Metered {
            inner,
            metrics,
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
        timed_within(&self.metrics, limit, operation, call, || {
            self.inner.discard_idle_connections()
        })
        .await
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

/// Runs `call` for at most `limit` (calling `give_up` when it is abandoned) and records it.
async fn timed_within<T>(
    metrics: &Metrics,
    limit: Duration,
    operation: &'static str,
    call: impl Future<Output = Result<T, MetaError>>,
    give_up: impl FnOnce(),
) -> Result<T, MetaError> {
    let started = Instant::now();
    // Bound in a statement of its own: the abandoned call (and the connection it holds,
    // which goes back to the pool) is dropped before the idle connections are closed.
    let outcome = tokio::time::timeout(limit, call).await;
    let result = outcome.unwrap_or_else(|_| {
        give_up();
        Err(timed_out(operation, limit))
    });
    // A refused manifest is an answer, not a database failure.
    let ok = matches!(result, Ok(_) | Err(MetaError::MissingReferences(_)));
    metrics.record_db(operation, ok, started.elapsed());
    result
}

fn timed_out(operation: &str, limit: Duration) -> MetaError {
    MetaError::Unavailable(format!(
        "the database did not answer `{operation}` within {limit:?}"
    ))
}

#[async_trait]
impl<S: MetadataStore + StoreStatus> MetadataStore for Metered<S> {
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

    async fn commit_blob_with_notices(
        &self,
        repo: &RepoName,
        blob: BlobRecord,
        notices: &[Notice],
    ) -> Result<BlobRecord, MetaError> {
        self.request(
            "commit_blob",
            self.inner.commit_blob_with_notices(repo, blob, notices),
        )
        .await
    }

    async fn mount_blob_with_notices(
        &self,
        from: &RepoName,
        to: &RepoName,
        digest: &Digest,
        notices: &[Notice],
    ) -> Result<Option<BlobRecord>, MetaError> {
        self.request(
            "mount_blob",
            self.inner
                .mount_blob_with_notices(from, to, digest, notices),
        )
        .await
    }

    async fn unlink_blob_with_notices(
        &self,
        repo: &RepoName,
        digest: &Digest,
        notices: &[Notice],
    ) -> Result<bool, MetaError> {
        self.request(
            "unlink_blob",
            self.inner.unlink_blob_with_notices(repo, digest, notices),
        )
        .await
    }

    async fn quarantine_blob(&self, digest: &Digest, reason: &str) -> Result<bool, MetaError> {
        self.request(
            "quarantine_blob",
            self.inner.quarantine_blob(digest, reason),
        )
        .await
    }

    async fn release_blob(&self, digest: &Digest) -> Result<bool, MetaError> {
        self.request("release_blob", self.inner.release_blob(digest))
            .await
    }

    async fn is_quarantined(&self, digest: &Digest) -> Result<bool, MetaError> {
        self.request("is_quarantined", self.inner.is_quarantined(digest))
            .await
    }

    async fn quarantined_blobs(&self) -> Result<Vec<Quarantined>, MetaError> {
        self.within(self.gc, "quarantined_blobs", self.inner.quarantined_blobs())
            .await
    }

    async fn try_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, MetaError> {
        self.request("try_lease", self.inner.try_lease(name, holder, ttl))
            .await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), MetaError> {
        self.request("release_lease", self.inner.release_lease(name, holder))
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

    async fn put_manifest_with(
        &self,
        repo: &RepoName,
        manifest: NewManifest,
        tag: Option<&Tag>,
        protected: &ProtectedTags,
        notices: &[Notice],
    ) -> Result<(), MetaError> {
        self.request(
            "put_manifest",
            self.inner
                .put_manifest_with(repo, manifest, tag, protected, notices),
        )
        .await
    }

    async fn repository_origin(&self, repo: &RepoName) -> Result<RepoOrigin, MetaError> {
        self.request("repository_origin", self.inner.repository_origin(repo))
            .await
    }

    async fn put_mirrored_manifest(
        &self,
        repo: &RepoName,
        upstream: &str,
        manifest: NewManifest,
        tag: Option<&Tag>,
        notices: &[Notice],
    ) -> Result<(), MetaError> {
        self.request(
            "put_mirrored_manifest",
            self.inner
                .put_mirrored_manifest(repo, upstream, manifest, tag, notices),
        )
        .await
    }

    async fn mirrored_tag_checked(
        &self,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<Option<SystemTime>, MetaError> {
        self.request(
            "mirrored_tag_checked",
            self.inner.mirrored_tag_checked(repo, tag),
        )
        .await
    }

    async fn confirm_mirrored_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
        digest: &Digest,
    ) -> Result<bool, MetaError> {
        self.request(
            "confirm_mirrored_tag",
            self.inner.confirm_mirrored_tag(repo, tag, digest),
        )
        .await
    }

    async fn delete_manifest_with(
        &self,
        repo: &RepoName,
        digest: &Digest,
        protected: &ProtectedTags,
        notices: &[Notice],
    ) -> Result<bool, MetaError> {
        self.request(
            "delete_manifest",
            self.inner
                .delete_manifest_with(repo, digest, protected, notices),
        )
        .await
    }

    async fn delete_tag_with(
        &self,
        repo: &RepoName,
        tag: &Tag,
        protected: &ProtectedTags,
        notices: &[Notice],
    ) -> Result<bool, MetaError> {
        self.request(
            "delete_tag",
            self.inner.delete_tag_with(repo, tag, protected, notices),
        )
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
        self.request(
            "delete_tag",
            self.inner
                .delete_tag_pointing_at(repo, tag, manifest, protected, notices),
        )
        .await
    }

    async fn record_layout(
        &self,
        repo: &RepoName,
        tag: &Tag,
        manifest: &Digest,
        cid: &Cid,
    ) -> Result<bool, MetaError> {
        self.request(
            "record_layout",
            self.inner.record_layout(repo, tag, manifest, cid),
        )
        .await
    }

    async fn image_layout(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Option<ImageLayout>, MetaError> {
        self.request("image_layout", self.inner.image_layout(repo, reference))
            .await
    }

    async fn unpublished_tags(
        &self,
        repo: &RepoName,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Tag>, MetaError> {
        self.request(
            "unpublished_tags",
            self.inner.unpublished_tags(repo, after, limit),
        )
        .await
    }

    async fn queue_layout(
        &self,
        repo: &RepoName,
        tag: &Tag,
        manifest: &Digest,
    ) -> Result<(), MetaError> {
        self.request("queue_layout", self.inner.queue_layout(repo, tag, manifest))
            .await
    }

    async fn claim_layouts(
        &self,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<QueuedLayout>, MetaError> {
        self.request("claim_layouts", self.inner.claim_layouts(limit, lease))
            .await
    }

    async fn retry_layout(&self, entry: &QueuedLayout, backoff: Duration) -> Result<(), MetaError> {
        self.request("retry_layout", self.inner.retry_layout(entry, backoff))
            .await
    }

    async fn dequeue_layout(&self, entry: &QueuedLayout) -> Result<(), MetaError> {
        self.request("dequeue_layout", self.inner.dequeue_layout(entry))
            .await
    }

    async fn queued_layouts(&self) -> Result<u64, MetaError> {
        self.request("queued_layouts", self.inner.queued_layouts())
            .await
    }

    async fn published_images(&self) -> Result<Vec<super::PublishedImage>, MetaError> {
        self.request("published_images", self.inner.published_images())
            .await
    }

    async fn published_images_version(&self) -> Result<(u64, i64), MetaError> {
        self.request(
            "published_images_version",
            self.inner.published_images_version(),
        )
        .await
    }

    async fn federation_index(&self) -> Result<Option<super::FederationIndex>, MetaError> {
        self.request("federation_index", self.inner.federation_index())
            .await
    }

    async fn record_federation_index(&self, cid: &Cid) -> Result<(), MetaError> {
        self.request(
            "record_federation_index",
            self.inner.record_federation_index(cid),
        )
        .await
    }

    async fn record_ipns(&self, name: &str, cid: &Cid) -> Result<(), MetaError> {
        self.request("record_ipns", self.inner.record_ipns(name, cid))
            .await
    }

    async fn follow_state(&self, rule: &str) -> Result<FollowState, MetaError> {
        self.request("follow_state", self.inner.follow_state(rule))
            .await
    }

    async fn record_follow_success(&self, rule: &str, root: &Cid) -> Result<(), MetaError> {
        self.request(
            "record_follow_success",
            self.inner.record_follow_success(rule, root),
        )
        .await
    }

    async fn record_follow_error(&self, rule: &str, error: &str) -> Result<(), MetaError> {
        self.request(
            "record_follow_error",
            self.inner.record_follow_error(rule, error),
        )
        .await
    }

    async fn followed_tags(&self, rule: &str) -> Result<Vec<FollowedTag>, MetaError> {
        self.request("followed_tags", self.inner.followed_tags(rule))
            .await
    }

    async fn record_followed_tag(&self, rule: &str, tag: &FollowedTag) -> Result<(), MetaError> {
        self.request(
            "record_followed_tag",
            self.inner.record_followed_tag(rule, tag),
        )
        .await
    }

    async fn forget_followed_tag(
        &self,
        rule: &str,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<(), MetaError> {
        self.request(
            "forget_followed_tag",
            self.inner.forget_followed_tag(rule, repo, tag),
        )
        .await
    }

    async fn tags(&self, repo: &RepoName, page: &Page) -> Result<Option<Vec<String>>, MetaError> {
        self.request("tags", self.inner.tags(repo, page)).await
    }

    async fn catalog(&self, page: &Page) -> Result<Vec<String>, MetaError> {
        self.request("catalog", self.inner.catalog(page)).await
    }

    async fn repository_summaries(
        &self,
        page: &Page,
        filter: &RepoFilter,
        search: &str,
    ) -> Result<Vec<RepositorySummary>, MetaError> {
        self.request(
            "repository_summaries",
            self.inner.repository_summaries(page, filter, search),
        )
        .await
    }

    async fn tag_summaries(
        &self,
        repo: &RepoName,
        page: &Page,
    ) -> Result<Option<Vec<TagSummary>>, MetaError> {
        self.request("tag_summaries", self.inner.tag_summaries(repo, page))
            .await
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

    async fn advance_upload(
        &self,
        id: Uuid,
        offset: u64,
        size: u64,
        hash_state: Vec<u8>,
    ) -> Result<bool, MetaError> {
        self.request(
            "advance_upload",
            self.inner.advance_upload(id, offset, size, hash_state),
        )
        .await
    }

    async fn upload_chunks(&self, id: Uuid) -> Result<Vec<UploadChunk>, MetaError> {
        self.request("upload_chunks", self.inner.upload_chunks(id))
            .await
    }

    async fn complete_upload_with_notices(
        &self,
        id: Uuid,
        repo: &RepoName,
        blob: BlobRecord,
        pending: Option<&PendingPin>,
        notices: &[Notice],
    ) -> Result<(BlobRecord, Vec<UploadChunk>), MetaError> {
        self.request(
            "complete_upload",
            self.inner
                .complete_upload_with_notices(id, repo, blob, pending, notices),
        )
        .await
    }

    async fn delete_upload(&self, id: Uuid) -> Result<Vec<UploadChunk>, MetaError> {
        self.request("delete_upload", self.inner.delete_upload(id))
            .await
    }
}

#[async_trait]
impl<S: UserStore + StoreStatus> UserStore for Metered<S> {
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
impl<S: GcStore + StoreStatus> GcStore for Metered<S> {
    async fn try_gc_lease(&self) -> Result<Option<Box<dyn GcLease>>, MetaError> {
        let lease = self.gc("try_gc_lease", self.inner.try_gc_lease()).await?;
        Ok(lease.map(|inner| {
            Box::new(GcLeaseWithin {
                inner,
                limit: self.gc,
                metrics: self.metrics.clone(),
            }) as Box<dyn GcLease>
        }))
    }

    async fn sweep(&self, policy: &SweepPolicy, dry_run: bool) -> Result<Swept, MetaError> {
        self.gc("sweep", self.inner.sweep(policy, dry_run)).await
    }

    async fn tag_records(&self, repo: &RepoName) -> Result<Vec<TagRecord>, MetaError> {
        self.gc("tag_records", self.inner.tag_records(repo)).await
    }

    async fn unpin_queue(&self, limit: u32) -> Result<Vec<Cid>, MetaError> {
        self.gc("unpin_queue", self.inner.unpin_queue(limit)).await
    }

    /// Called on a request path too (an ended upload's chunks), so the request limit.
    async fn dequeue_unpins(&self, cids: &[Cid]) -> Result<(), MetaError> {
        self.request("dequeue_unpins", self.inner.dequeue_unpins(cids))
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
            metrics: self.metrics.clone(),
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

    async fn pending_pin_roots(&self, limit: u32) -> Result<Vec<Cid>, MetaError> {
        self.gc("pending_pin_roots", self.inner.pending_pin_roots(limit))
            .await
    }

    async fn finish_pending_pin(&self, root: &Cid) -> Result<Vec<Cid>, MetaError> {
        self.gc("finish_pending_pin", self.inner.finish_pending_pin(root))
            .await
    }
}

#[async_trait]
impl<S: StoreStatus> StoreStatus for Metered<S> {
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
    metrics: Arc<Metrics>,
}

#[async_trait]
impl GcLease for GcLeaseWithin {
    async fn release(self: Box<Self>) {
        let GcLeaseWithin {
            inner,
            limit,
            metrics,
        } = *self;
        let release = async {
            inner.release().await;
            Ok(())
        };
        // Given up on, the lease is dropped, which releases it once the database answers.
        let _ = timed_within(&metrics, limit, "gc_lease.release", release, || {}).await;
    }
}

struct UnpinLeaseWithin {
    inner: Box<dyn UnpinLease>,
    limit: Duration,
    metrics: Arc<Metrics>,
}

#[async_trait]
impl UnpinLease for UnpinLeaseWithin {
    async fn in_use(&mut self) -> Result<bool, MetaError> {
        let in_use = self.inner.in_use();
        timed_within(
            &self.metrics,
            self.limit,
            "unpin_lease.in_use",
            in_use,
            || {},
        )
        .await
    }
}

#[async_trait]
impl<S: OutboxStore + StoreStatus> OutboxStore for Metered<S> {
    async fn record_notices(&self, notices: &[Notice]) -> Result<(), MetaError> {
        self.request("record_notices", self.inner.record_notices(notices))
            .await
    }

    async fn claim_notices(
        &self,
        endpoint: &str,
        holder: &str,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>, MetaError> {
        self.request(
            "claim_notices",
            self.inner.claim_notices(endpoint, holder, lease, limit),
        )
        .await
    }

    async fn notices_delivered(&self, holder: &str, ids: &[i64]) -> Result<(), MetaError> {
        self.request(
            "notices_delivered",
            self.inner.notices_delivered(holder, ids),
        )
        .await
    }

    async fn notices_failed(
        &self,
        holder: &str,
        outcomes: &[(i64, Retry)],
        error: &str,
    ) -> Result<(), MetaError> {
        self.request(
            "notices_failed",
            self.inner.notices_failed(holder, outcomes, error),
        )
        .await
    }

    async fn notices(
        &self,
        failed_only: bool,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>, MetaError> {
        self.request("notices", self.inner.notices(failed_only, after, limit))
            .await
    }

    async fn replay_notices(&self, endpoint: Option<&str>, ids: &[i64]) -> Result<u64, MetaError> {
        self.request("replay_notices", self.inner.replay_notices(endpoint, ids))
            .await
    }

    async fn purge_notices(
        &self,
        endpoint: Option<&str>,
        ids: &[i64],
        pending: bool,
    ) -> Result<u64, MetaError> {
        self.request(
            "purge_notices",
            self.inner.purge_notices(endpoint, ids, pending),
        )
        .await
    }

    async fn notice_counts(&self) -> Result<Vec<(String, OutboxCounts)>, MetaError> {
        self.request("notice_counts", self.inner.notice_counts())
            .await
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

    fn metered() -> Metered<Pool> {
        Metered {
            inner: Pool::default(),
            metrics: Arc::new(Metrics::new()),
            call: Duration::from_millis(100),
            gc: Duration::from_secs(60),
        }
    }

    #[tokio::test]
    async fn a_call_that_never_answers_is_unavailable_and_idle_connections_go() {
        let store = metered();
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
        let shown = store.metrics.encode();
        assert!(
            shown.contains(r#"ipfs_registry_db_errors_total{operation="manifest"} 1"#),
            "{shown}"
        );
    }

    #[tokio::test]
    async fn answers_and_errors_within_the_limit_pass_through() {
        let store = metered();
        assert_eq!(store.request("tags", async { Ok(7) }).await.unwrap(), 7);
        let refused: Result<(), MetaError> = store
            .gc("sweep", async { Err(MetaError::Backend("no".into())) })
            .await;
        assert!(matches!(refused, Err(MetaError::Backend(_))));
        let missing: Result<(), MetaError> = store
            .request("put_manifest", async {
                Err(MetaError::MissingReferences(Vec::new()))
            })
            .await;
        assert!(matches!(missing, Err(MetaError::MissingReferences(_))));
        assert_eq!(store.inner.discarded.load(Ordering::SeqCst), 0);

        let shown = store.metrics.encode();
        for counted in [
            r#"ipfs_registry_db_queries_total{operation="tags"} 1"#,
            r#"ipfs_registry_db_queries_total{operation="sweep"} 1"#,
            r#"ipfs_registry_db_errors_total{operation="sweep"} 1"#,
            r#"ipfs_registry_db_queries_total{operation="put_manifest"} 1"#,
        ] {
            assert!(shown.contains(counted), "{counted}: {shown}");
        }
        for answered in ["tags", "put_manifest"] {
            let error = format!(r#"ipfs_registry_db_errors_total{{operation="{answered}"}}"#);
            assert!(!shown.contains(&error), "{answered} is no error: {shown}");
        }
    }
}
