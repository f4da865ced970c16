//! The registry core: push, pull, mount, delete and uploads, over a metadata store and a
//! blob store. Knows nothing of HTTP.

mod blobs;
mod browse;
mod error;
mod federation;
mod follow;
mod gateway;
pub mod gc;
pub mod hashing;
mod health;
mod import;
mod inventory;
mod layout;
mod manifests;
pub mod mirror;
pub mod notify;
mod publish;
mod releaser;
pub mod rules;
pub mod scrub;
mod uploads;

use std::sync::Arc;

use cid::Cid;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::blobs::BlobStore;
use crate::meta::gc::GcStore;
use crate::meta::outbox::{Notice, OutboxStore};
use crate::meta::status::StoreStatus;
use crate::meta::MetadataStore;
use crate::metrics::Metrics;
use crate::oci::RepoName;

pub use blobs::{BlobContent, BlobRange};
pub use browse::{platform_name, ConfigSummary, LayerView, ManifestView, Role};
pub use error::{RegistryError, Result};
pub use federation::{IndexStatus, Visibility};
pub use follow::{FollowStatus, FollowTask};
pub use health::Readiness;
pub use import::{ImportProgress, ImportSource, Imported};
pub use inventory::{Inventory, Reindexed};
pub use manifests::{ManifestPush, PushedManifest};
pub use mirror::{Mirrored, MirroredBlob, MirroredBlobHead, MirroredManifest, Route};
pub use notify::{Action, Notifier, Origin};
pub use scrub::{Finding, ScrubObserver, ScrubOptions, ScrubReport};
pub use uploads::UploadStatus;

// What the HTTP layer hands to and gets from the core, so that it needs no store module.
pub use crate::blobs::ByteStream;
pub use crate::meta::users::RepoFilter;
pub use crate::meta::{BlobRecord, ImageLayout, Page, RepositorySummary, TagSummary};

/// The core's tunables (a subset of the configuration).
#[derive(Debug, Clone)]
pub struct Settings {
    pub max_manifest_size: usize,
    /// 0 = unlimited.
    pub max_blob_size: u64,
    pub delete_enabled: bool,
    pub max_concurrent_uploads: usize,
    /// Re-hash full pulls (`integrity.verify_on_pull`).
    pub verify_on_pull: bool,
    /// `[[immutable]]` and `[[retention]]`.
    pub rules: rules::Rules,
    /// `federation.publish`: the public index is kept (src/registry/federation.rs).
    pub publish_index: bool,
}

/// The stores the core works on.
#[derive(Clone)]
pub struct Stores {
    pub meta: Arc<dyn MetadataStore>,
    pub gc: Arc<dyn GcStore>,
    pub status: Arc<dyn StoreStatus>,
    pub outbox: Arc<dyn OutboxStore>,
    pub blobs: Arc<dyn BlobStore>,
}

pub struct Registry {
    meta: Arc<dyn MetadataStore>,
    gc: Arc<dyn GcStore>,
    status: Arc<dyn StoreStatus>,
    blobs: Arc<dyn BlobStore>,
    outbox: Arc<dyn OutboxStore>,
    notifier: Notifier,
    /// Wakes this process's notification delivery after it recorded events.
    wake: Arc<notify::deliver::Wake>,
    /// Wakes this process's layout publisher after a push queued an image.
    publisher: publish::Wake,
    /// Unpins completed uploads' chunks after the push answered.
    releaser: releaser::Releaser,
    /// The public index's builder state.
    index: federation::IndexState,
    settings: Settings,
    metrics: Arc<Metrics>,
    /// One permit per upload request streaming bytes into the blob store.
    uploads: Arc<Semaphore>,
    /// Set on start when the blob store holds content and the metadata records none: the
    /// metadata was lost or replaced (see [`Registry::check_stores_agree`]).
    metadata_lost: std::sync::Mutex<Option<String>>,
    /// `[[mirror]]` (see [`Registry::with_mirrors`]); none by default.
    mirrors: mirror::Mirrors,
    /// `[[federation.follow]]` rules' names and sources (see [`Registry::with_follow_rules`]).
    follow_rules: Vec<(String, String)>,
}

impl Registry {
    pub fn new(
        stores: Stores,
        settings: Settings,
        metrics: Arc<Metrics>,
        notifier: Notifier,
    ) -> Registry {
        let uploads = Arc::new(Semaphore::new(settings.max_concurrent_uploads));
        Registry {
            meta: stores.meta,
            gc: stores.gc,
            status: stores.status,
            blobs: stores.blobs,
            outbox: stores.outbox,
            notifier,
            wake: Arc::default(),
            publisher: publish::Wake::default(),
            releaser: releaser::Releaser::default(),
            index: federation::IndexState::default(),
            settings,
            metrics,
            uploads,
            metadata_lost: std::sync::Mutex::new(None),
            mirrors: mirror::Mirrors::default(),
            follow_rules: Vec::new(),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Upload requests streaming right now.
    pub fn uploads_in_progress(&self) -> usize {
        self.settings
            .max_concurrent_uploads
            .saturating_sub(self.uploads.available_permits())
    }

    fn max_blob_size(&self) -> Option<u64> {
        (self.settings.max_blob_size > 0).then_some(self.settings.max_blob_size)
    }

    fn upload_permit(&self) -> Result<OwnedSemaphorePermit> {
        self.uploads
            .clone()
            .try_acquire_owned()
            .map_err(|_| RegistryError::TooManyRequests)
    }

    /// Whether manifests and tags may be deleted here (`storage.delete_enabled`).
    pub fn deletes_enabled(&self) -> bool {
        self.settings.delete_enabled
    }

    fn ensure_deletes_enabled(&self) -> Result<()> {
        if self.settings.delete_enabled {
            Ok(())
        } else {
            Err(RegistryError::Unsupported(
                "deletes are disabled on this registry".into(),
            ))
        }
    }

    /// The notifications outbox and what wakes this process's delivery loops.
    pub fn outbox(&self) -> (&Arc<dyn OutboxStore>, &Arc<notify::deliver::Wake>) {
        (&self.outbox, &self.wake)
    }

    /// The server bound `addr` (see [`Notifier::bound_at`]).
    pub fn bound_at(&self, addr: std::net::SocketAddr) {
        self.notifier.bound_at(addr);
    }

    /// This process's identity in notifications and outbox claims.
    pub fn instance_id(&self) -> &str {
        self.notifier.instance_id()
    }

    /// The notices of a blob event, when `origin` is given (and some endpoint wants it).
    fn blob_notices(
        &self,
        action: Action,
        repo: &RepoName,
        record: &BlobRecord,
        origin: Option<&Origin>,
    ) -> Vec<Notice> {
        let Some(origin) = origin else {
            return Vec::new();
        };
        let target = notify::Target {
            media_type: Some("application/octet-stream"),
            size: Some(record.size),
            cid: Some(record.cid),
            ..notify::Target::blob(repo, &record.digest)
        };
        self.notifier.notices(action, &target, origin)
    }

    /// Records the notices of a pull (logged, not fatal, when that fails).
    async fn record_pull(&self, notices: &[Notice]) {
        if notices.is_empty() {
            return;
        }
        match self.outbox.record_notices(notices).await {
            Ok(()) => self.woken(notices),
            Err(e) => {
                tracing::warn!(event = "notification_record_failed", error = %e, "a pull event was not recorded")
            }
        }
    }

    /// Call after notices were recorded.
    fn woken(&self, notices: &[Notice]) {
        if !notices.is_empty() {
            self.wake.wake();
        }
    }

    /// The one log event per blob operation.
    fn blob_event(
        &self,
        event: &'static str,
        repo: &RepoName,
        record: &BlobRecord,
        started: std::time::Instant,
    ) {
        tracing::info!(
            event,
            repository = %repo,
            digest = %record.digest,
            ipfs_cid = %record.cid,
            size = record.size,
            duration_ms = started.elapsed().as_millis() as u64,
        );
    }

    /// Drops the pin on bytes nothing references any more. Failure only leaks a pin (GC
    /// collects it later), so it is logged rather than failing the request.
    async fn release(&self, cid: &Cid) {
        if let Err(e) = self.unpin_unused(cid).await {
            tracing::warn!(event = "unpin_failed", ipfs_cid = %cid, error = %e, "could not release content");
        }
    }

    /// [`Registry::release`] of CIDs the metadata queued for unpinning when it forgot them
    /// (an ended upload's chunks), then their queue entries in one write; what fails stays
    /// queued for GC.
    async fn release_queued(&self, cids: impl IntoIterator<Item = Cid>) {
        let mut released = Vec::new();
        for cid in cids {
            match self.unpin_unused(&cid).await {
                Ok(_) => released.push(cid),
                Err(e) => {
                    tracing::warn!(event = "unpin_failed", ipfs_cid = %cid, error = %e, "could not release content: left queued for the next GC run");
                }
            }
        }
        if let Err(e) = self.gc.dequeue_unpins(&released).await {
            tracing::warn!(event = "unpin_dequeue_failed", error = %e, "released content left queued for the next GC run");
        }
    }

    /// Unpins `cid` unless the metadata still records it. The check and the unpin run under
    /// the CID's unpin lease, which holds back every transaction recording that CID, so a
    /// push of the same bytes either is seen by the check or commits after the unpin (and
    /// then re-pins, see [`Registry::ensure_pinned`]). True when it was unpinned.
    async fn unpin_unused(&self, cid: &Cid) -> Result<bool> {
        let mut lease = self.gc.unpin_lease(cid).await?;
        if lease.in_use().await? {
            return Ok(false);
        }
        self.blobs.unpin(cid).await?;
        drop(lease);
        Ok(true)
    }

    /// Called after a commit recorded `record`: from then on no unpin of its CID can start,
    /// but one may have finished between our add and our commit (a concurrent release of
    /// the same bytes, or GC), so the pin is restored if it is gone. A known digest is pushed
    /// without the IPFS node, so a node that cannot say whether the pin is there is logged,
    /// not fatal. But content known to be unpinned that cannot be pinned again would be
    /// collected by the node's next repo GC: the blob is quarantined (unknown to pulls and
    /// manifests until a push stores it again) and the push fails with 503, so the client's
    /// retry stores the bytes afresh.
    async fn ensure_pinned(&self, record: &BlobRecord) -> Result<()> {
        match self.blobs.is_pinned(&record.cid).await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(event = "pin_check_failed", ipfs_cid = %record.cid, error = %e, "could not verify the pin of committed content");
                return Ok(());
            }
        }
        match self.pin_recorded(&record.cid).await {
            Ok(true) => {
                tracing::info!(event = "repin", ipfs_cid = %record.cid, "content recorded while being unpinned: pinned again");
                Ok(())
            }
            Ok(false) => Ok(()),
            Err(e) => {
                let reason = format!("its content was unpinned and could not be pinned again: {e}");
                self.quarantine_unpinned(record, &reason).await;
                Err(RegistryError::Unavailable(format!(
                    "blob {}: {reason}; push it again",
                    record.digest
                )))
            }
        }
    }

    /// Pins `cid` again if the metadata still records it, under the CID's unpin lease (so
    /// never after a GC run forgot it, which would leave a pin no record knows). True when
    /// it pinned.
    async fn pin_recorded(&self, cid: &Cid) -> Result<bool> {
        let mut lease = self.gc.unpin_lease(cid).await?;
        if !lease.in_use().await? {
            return Ok(false);
        }
        self.blobs.pin(cid).await?;
        drop(lease);
        Ok(true)
    }

    /// Quarantines a recorded blob whose content lost its pin for good (its bytes are not
    /// known to be wrong, so they are not evicted). Logged, not fatal, when the metadata
    /// cannot be written: the caller already fails.
    async fn quarantine_unpinned(&self, record: &BlobRecord, reason: &str) {
        tracing::error!(event = "blob_unpinned", digest = %record.digest, ipfs_cid = %record.cid, reason, "stored blob lost its pin: quarantined");
        match self.meta.quarantine_blob(&record.digest, reason).await {
            Ok(_) => self.count_quarantined().await,
            Err(e) => {
                tracing::warn!(event = "quarantine_failed", digest = %record.digest, error = %e, "the blob stays linked while its content is unpinned");
            }
        }
    }
}
