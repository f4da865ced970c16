//! PostgreSQL metadata store: a deadpool connection pool, one module per concern.
//!
//! Every multi-statement operation runs in one READ COMMITTED transaction; rows a decision
//! depends on are locked (`FOR KEY SHARE` / `FOR UPDATE`) so the decision holds until commit.

mod blobs;
mod error;
mod follow;
mod gc;
mod integrity;
mod layouts;
mod manifests;
mod migrate;
mod mirror;
mod outbox;
mod referrers;
mod repos;
mod sql;
pub mod tls;
mod uploads;
mod users;

use async_trait::async_trait;
use cid::Cid;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use uuid::Uuid;

use self::error::db;
use super::outbox::{Notice, OutboxCounts, OutboxEntry, OutboxStore, Retry};
use super::{
    BlobRecord, ImageLayout, MetaError, MetadataStore, NewManifest, Page, PendingPin,
    ProtectedTags, Quarantined, RepoOrigin, StoredManifest, Upload, UploadChunk,
};
use crate::config::DatabaseConfig;
use crate::oci::{Descriptor, Digest, Reference, RepoName, Tag};

/// The production `MetadataStore`. Cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("status", &self.pool.status())
            .finish()
    }
}

impl PostgresStore {
    /// Builds the pool and opens one connection to check the database is reachable.
    ///
    /// `config.timeout` bounds both the wait for a pooled connection and the opening of a
    /// new one, so an unreachable database yields `Unavailable` instead of a hang; every
    /// connection runs with `statement_timeout = config.statement_timeout`. TLS follows the
    /// URL's `sslmode` ([`tls`]).
    pub async fn connect(config: &DatabaseConfig) -> Result<PostgresStore, MetaError> {
        let url = config
            .url
            .as_deref()
            .ok_or_else(|| MetaError::Backend("no database URL configured".into()))?;
        let (mut pg, check) = tls::parse_url(url)
            .map_err(|e| MetaError::Backend(format!("invalid database URL: {e}")))?;
        let tls = tls::connector(check, config.ca_file.as_deref())
            .map_err(|e| MetaError::Backend(format!("database TLS (database.ca_file): {e}")))?;
        let limit = format!(
            "-c statement_timeout={}",
            config.statement_timeout.as_millis()
        );
        let options = match pg.get_options() {
            Some(existing) if !existing.trim().is_empty() => format!("{existing} {limit}"),
            _ => limit,
        };
        pg.options(options);
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(config.timeout);
        }
        if pg.get_application_name().is_none() {
            pg.application_name("ipfs-registry");
        }
        let manager = Manager::from_config(
            pg,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size.max(1))
            .wait_timeout(Some(config.timeout))
            .create_timeout(Some(config.timeout))
            .recycle_timeout(Some(config.timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| MetaError::Backend(format!("cannot build the connection pool: {e}")))?;
        let store = PostgresStore { pool };
        drop(store.client().await?);
        Ok(store)
    }

    /// Applies the embedded migrations (`migrations/`). Safe to call from several replicas
    /// at once: they are serialised by a PostgreSQL advisory lock.
    pub async fn migrate(&self) -> Result<(), MetaError> {
        migrate::migrate(&self.pool).await
    }

    /// Whether every embedded migration has been applied (for the readiness probe).
    pub async fn applied_migrations_current(&self) -> Result<bool, MetaError> {
        migrate::current(&self.pool).await
    }

    async fn client(&self) -> Result<Object, MetaError> {
        self.pool.get().await.map_err(error::pool)
    }
}

#[async_trait]
impl MetadataStore for PostgresStore {
    async fn ping(&self) -> Result<(), MetaError> {
        let client = self.client().await?;
        sql::query_opt(&client, "SELECT 1", &[]).await?;
        Ok(())
    }

    async fn blob(&self, digest: &Digest) -> Result<Option<BlobRecord>, MetaError> {
        blobs::get(&self.client().await?, digest).await
    }

    async fn blob_by_cid(&self, cid: &Cid) -> Result<Option<BlobRecord>, MetaError> {
        blobs::by_cid(&self.client().await?, cid).await
    }

    async fn repositories_with_cid(&self, cid: &Cid) -> Result<Vec<String>, MetaError> {
        let client = self.client().await?;
        let rows = sql::query(
            &client,
            "SELECT r.name FROM blobs b \
             JOIN repository_blobs rb ON rb.digest = b.digest \
             JOIN repositories r ON r.id = rb.repository_id \
             WHERE b.cid = $1 \
             UNION SELECT r.name FROM image_layouts l \
             JOIN repositories r ON r.id = l.repository_id WHERE l.cid = $1 \
             ORDER BY 1",
            &[&cid.to_string()],
        )
        .await?;
        rows.iter().map(|r| sql::get(r, 0)).collect()
    }

    async fn repository_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<BlobRecord>, MetaError> {
        blobs::linked(&self.client().await?, repo, digest, false).await
    }

    async fn commit_blob_with_notices(
        &self,
        repo: &RepoName,
        blob: BlobRecord,
        notices: &[Notice],
    ) -> Result<BlobRecord, MetaError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let stored = blobs::commit(&tx, repo, blob).await?;
        outbox::record(&tx, notices).await?;
        tx.commit().await.map_err(db)?;
        Ok(stored)
    }

    async fn mount_blob_with_notices(
        &self,
        from: &RepoName,
        to: &RepoName,
        digest: &Digest,
        notices: &[Notice],
    ) -> Result<Option<BlobRecord>, MetaError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let Some(record) = blobs::linked(&tx, from, digest, true).await? else {
            return Ok(None);
        };
        let to_id = repos::ensure(&tx, to).await?;
        blobs::link(&tx, to_id, &record.digest.to_string()).await?;
        outbox::record(&tx, notices).await?;
        tx.commit().await.map_err(db)?;
        Ok(Some(record))
    }

    async fn unlink_blob_with_notices(
        &self,
        repo: &RepoName,
        digest: &Digest,
        notices: &[Notice],
    ) -> Result<bool, MetaError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let unlinked = blobs::unlink(&tx, repo, digest).await?;
        let unlinked = outbox::record_if(&tx, unlinked, notices).await?;
        tx.commit().await.map_err(db)?;
        Ok(unlinked)
    }

    async fn quarantine_blob(&self, digest: &Digest, reason: &str) -> Result<bool, MetaError> {
        integrity::quarantine(&self.client().await?, digest, reason).await
    }

    async fn release_blob(&self, digest: &Digest) -> Result<bool, MetaError> {
        integrity::release(&self.client().await?, digest).await
    }

    async fn is_quarantined(&self, digest: &Digest) -> Result<bool, MetaError> {
        integrity::is_quarantined(&self.client().await?, digest).await
    }

    async fn quarantined_blobs(&self) -> Result<Vec<Quarantined>, MetaError> {
        integrity::all(&self.client().await?).await
    }

    async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, MetaError> {
        integrity::try_lease(&self.client().await?, name, holder, ttl).await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), MetaError> {
        integrity::release_lease(&self.client().await?, name, holder).await
    }

    async fn manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Option<StoredManifest>, MetaError> {
        manifests::get_manifest(&self.client().await?, repo, reference).await
    }

    async fn put_manifest_with(
        &self,
        repo: &RepoName,
        manifest: NewManifest,
        tag: Option<&Tag>,
        protected: &ProtectedTags,
        notices: &[Notice],
    ) -> Result<(), MetaError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        manifests::put(&tx, repo, &manifest, tag, protected).await?;
        outbox::record(&tx, notices).await?;
        tx.commit().await.map_err(db)
    }

    async fn repository_origin(&self, repo: &RepoName) -> Result<RepoOrigin, MetaError> {
        mirror::origin(&self.client().await?, repo).await
    }

    async fn put_mirrored_manifest(
        &self,
        repo: &RepoName,
        upstream: &str,
        manifest: NewManifest,
        tag: Option<&Tag>,
        notices: &[Notice],
    ) -> Result<(), MetaError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        mirror::put(&tx, repo, upstream, &manifest, tag).await?;
        outbox::record(&tx, notices).await?;
        tx.commit().await.map_err(db)
    }

    async fn mirrored_tag_checked(
        &self,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<Option<std::time::SystemTime>, MetaError> {
        mirror::tag_checked(&self.client().await?, repo, tag).await
    }

    async fn confirm_mirrored_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
        digest: &Digest,
    ) -> Result<bool, MetaError> {
        mirror::confirm_tag(&self.client().await?, repo, tag, digest).await
    }

    async fn delete_manifest_with(
        &self,
        repo: &RepoName,
        digest: &Digest,
        protected: &ProtectedTags,
        notices: &[Notice],
    ) -> Result<bool, MetaError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let deleted = manifests::delete(&tx, repo, digest, protected).await?;
        let deleted = outbox::record_if(&tx, deleted, notices).await?;
        tx.commit().await.map_err(db)?;
        Ok(deleted)
    }

    async fn delete_tag_with(
        &self,
        repo: &RepoName,
        tag: &Tag,
        protected: &ProtectedTags,
        notices: &[Notice],
    ) -> Result<bool, MetaError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let deleted = manifests::delete_tag(&tx, repo, tag, None, protected).await?;
        let deleted = outbox::record_if(&tx, deleted, notices).await?;
        tx.commit().await.map_err(db)?;
        Ok(deleted)
    }

    async fn delete_tag_pointing_at(
        &self,
        repo: &RepoName,
        tag: &Tag,
        manifest: &Digest,
        protected: &ProtectedTags,
        notices: &[Notice],
    ) -> Result<bool, MetaError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let deleted = manifests::delete_tag(&tx, repo, tag, Some(manifest), protected).await?;
        let deleted = outbox::record_if(&tx, deleted, notices).await?;
        tx.commit().await.map_err(db)?;
        Ok(deleted)
    }

    async fn record_layout(
        &self,
        repo: &RepoName,
        tag: &Tag,
        manifest: &Digest,
        cid: &Cid,
    ) -> Result<bool, MetaError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let recorded = layouts::record(&tx, repo, tag, manifest, cid).await?;
        tx.commit().await.map_err(db)?;
        Ok(recorded)
    }

    async fn image_layout(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Option<ImageLayout>, MetaError> {
        layouts::get(&self.client().await?, repo, reference).await
    }

    async fn unpublished_tags(
        &self,
        repo: &RepoName,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Tag>, MetaError> {
        layouts::unpublished(&self.client().await?, repo, after, limit).await
    }

    async fn queue_layout(
        &self,
        repo: &RepoName,
        tag: &Tag,
        manifest: &Digest,
    ) -> Result<(), MetaError> {
        layouts::queue(&self.client().await?, repo, tag, manifest).await
    }

    async fn claim_layouts(
        &self,
        limit: u32,
        lease: std::time::Duration,
    ) -> Result<Vec<super::QueuedLayout>, MetaError> {
        layouts::claim(&self.client().await?, limit, lease).await
    }

    async fn retry_layout(
        &self,
        entry: &super::QueuedLayout,
        backoff: std::time::Duration,
    ) -> Result<(), MetaError> {
        layouts::retry(&self.client().await?, entry, backoff).await
    }

    async fn dequeue_layout(&self, entry: &super::QueuedLayout) -> Result<(), MetaError> {
        layouts::dequeue(&self.client().await?, entry).await
    }

    async fn queued_layouts(&self) -> Result<u64, MetaError> {
        layouts::count(&self.client().await?).await
    }

    async fn published_images(&self) -> Result<Vec<super::PublishedImage>, MetaError> {
        layouts::published(&self.client().await?).await
    }

    async fn published_images_version(&self) -> Result<(u64, i64), MetaError> {
        layouts::published_version(&self.client().await?).await
    }

    async fn federation_index(&self) -> Result<Option<super::FederationIndex>, MetaError> {
        layouts::federation_index(&self.client().await?).await
    }

    async fn record_federation_index(&self, cid: &Cid) -> Result<(), MetaError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        layouts::record_federation_index(&tx, cid).await?;
        tx.commit().await.map_err(db)
    }

    async fn record_ipns(&self, name: &str, cid: &Cid) -> Result<(), MetaError> {
        layouts::record_ipns(&self.client().await?, name, cid).await
    }

    async fn follow_state(&self, rule: &str) -> Result<super::FollowState, MetaError> {
        follow::state(&self.client().await?, rule).await
    }

    async fn record_follow_success(&self, rule: &str, root: &Cid) -> Result<(), MetaError> {
        follow::success(&self.client().await?, rule, root).await
    }

    async fn record_follow_error(&self, rule: &str, error: &str) -> Result<(), MetaError> {
        follow::error(&self.client().await?, rule, error).await
    }

    async fn followed_tags(&self, rule: &str) -> Result<Vec<super::FollowedTag>, MetaError> {
        follow::tags(&self.client().await?, rule).await
    }

    async fn record_followed_tag(
        &self,
        rule: &str,
        tag: &super::FollowedTag,
    ) -> Result<(), MetaError> {
        follow::record_tag(&self.client().await?, rule, tag).await
    }

    async fn forget_followed_tag(
        &self,
        rule: &str,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<(), MetaError> {
        follow::forget_tag(&self.client().await?, rule, repo, tag).await
    }

    async fn tags(&self, repo: &RepoName, page: &Page) -> Result<Option<Vec<String>>, MetaError> {
        manifests::tags(&self.client().await?, repo, page).await
    }

    async fn catalog(&self, page: &Page) -> Result<Vec<String>, MetaError> {
        repos::catalog(&self.client().await?, page).await
    }

    async fn repository_summaries(
        &self,
        page: &Page,
        filter: &super::users::RepoFilter,
        search: &str,
    ) -> Result<Vec<super::RepositorySummary>, MetaError> {
        repos::summaries(&self.client().await?, page, filter, search).await
    }

    async fn tag_summaries(
        &self,
        repo: &RepoName,
        page: &Page,
    ) -> Result<Option<Vec<super::TagSummary>>, MetaError> {
        repos::tag_summaries(&self.client().await?, repo, page).await
    }

    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Descriptor>, MetaError> {
        referrers::referrers(&self.client().await?, repo, subject, artifact_type).await
    }

    async fn create_upload(
        &self,
        repo: &RepoName,
        hash_state: Vec<u8>,
    ) -> Result<Upload, MetaError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let upload = uploads::create(&tx, repo, hash_state).await?;
        tx.commit().await.map_err(db)?;
        Ok(upload)
    }

    async fn upload(&self, repo: &RepoName, id: Uuid) -> Result<Option<Upload>, MetaError> {
        uploads::get_upload(&self.client().await?, repo, id).await
    }

    async fn append_upload_chunk(
        &self,
        id: Uuid,
        chunk: UploadChunk,
        hash_state: Vec<u8>,
    ) -> Result<bool, MetaError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let appended = uploads::append(&tx, id, &chunk, &hash_state).await?;
        if appended {
            tx.commit().await.map_err(db)?;
        }
        Ok(appended)
    }

    async fn advance_upload(
        &self,
        id: Uuid,
        offset: u64,
        size: u64,
        hash_state: Vec<u8>,
    ) -> Result<bool, MetaError> {
        uploads::advance(&self.client().await?, id, offset, size, &hash_state).await
    }

    async fn upload_chunks(&self, id: Uuid) -> Result<Vec<UploadChunk>, MetaError> {
        uploads::chunks(&self.client().await?, id).await
    }

    async fn complete_upload_with_notices(
        &self,
        id: Uuid,
        repo: &RepoName,
        blob: BlobRecord,
        pending: Option<&PendingPin>,
        notices: &[Notice],
    ) -> Result<(BlobRecord, Vec<UploadChunk>), MetaError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let done = uploads::complete(&tx, id, repo, blob, pending).await?;
        outbox::record(&tx, notices).await?;
        tx.commit().await.map_err(db)?;
        Ok(done)
    }

    async fn delete_upload(&self, id: Uuid) -> Result<Vec<UploadChunk>, MetaError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let chunks = uploads::delete(&tx, id).await?;
        tx.commit().await.map_err(db)?;
        Ok(chunks)
    }
}

#[async_trait]
impl super::status::StoreStatus for PostgresStore {
    async fn schema_current(&self) -> Result<bool, MetaError> {
        self.applied_migrations_current().await
    }

    fn pool_use(&self) -> Option<super::status::PoolUse> {
        let status = self.pool.status();
        Some(super::status::PoolUse {
            max: status.max_size,
            open: status.size,
            idle: status.available,
            waiting: status.waiting,
        })
    }

    fn discard_idle_connections(&self) {
        // Dropping a connection whose query is still in flight is safe: its connection task
        // still sends what was queued (the ROLLBACK of an abandoned transaction included)
        // before closing, and the server rolls back whatever a lost session left open.
        self.pool.retain(|_, _| false);
    }
}

#[async_trait]
impl OutboxStore for PostgresStore {
    async fn record_notices(&self, notices: &[Notice]) -> Result<(), MetaError> {
        outbox::record(&self.client().await?, notices).await
    }

    async fn claim_notices(
        &self,
        endpoint: &str,
        holder: &str,
        lease: std::time::Duration,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>, MetaError> {
        outbox::claim(&self.client().await?, endpoint, holder, lease, limit).await
    }

    async fn notices_delivered(&self, holder: &str, ids: &[i64]) -> Result<(), MetaError> {
        outbox::delivered(&self.client().await?, holder, ids).await
    }

    async fn notices_failed(
        &self,
        holder: &str,
        outcomes: &[(i64, Retry)],
        error: &str,
    ) -> Result<(), MetaError> {
        outbox::failed(&self.client().await?, holder, outcomes, error).await
    }

    async fn notices(
        &self,
        failed_only: bool,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>, MetaError> {
        outbox::list(&self.client().await?, failed_only, after, limit).await
    }

    async fn replay_notices(&self, endpoint: Option<&str>, ids: &[i64]) -> Result<u64, MetaError> {
        outbox::replay(&self.client().await?, endpoint, ids).await
    }

    async fn purge_notices(
        &self,
        endpoint: Option<&str>,
        ids: &[i64],
        pending: bool,
    ) -> Result<u64, MetaError> {
        outbox::purge(&self.client().await?, endpoint, ids, pending).await
    }

    async fn notice_counts(&self) -> Result<Vec<(String, OutboxCounts)>, MetaError> {
        outbox::counts(&self.client().await?).await
    }
}
