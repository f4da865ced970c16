//! The registry core: push, pull, mount, delete and uploads, over a metadata store and a
//! blob store. Knows nothing of HTTP.

mod blobs;
mod error;
pub mod hashing;
mod manifests;
mod uploads;

use std::sync::Arc;

use cid::Cid;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::blobs::BlobStore;
use crate::meta::MetadataStore;

pub use blobs::{BlobContent, BlobRange};
pub use error::{RegistryError, Result};
pub use manifests::{ManifestPush, PushedManifest};
pub use uploads::UploadStatus;

/// The core's tunables (a subset of the configuration).
#[derive(Debug, Clone)]
pub struct Settings {
    pub max_manifest_size: usize,
    /// 0 = unlimited.
    pub max_blob_size: u64,
    pub delete_enabled: bool,
    pub max_concurrent_uploads: usize,
}

pub struct Registry {
    meta: Arc<dyn MetadataStore>,
    blobs: Arc<dyn BlobStore>,
    settings: Settings,
    /// One permit per upload request streaming bytes into the blob store.
    uploads: Arc<Semaphore>,
}

impl Registry {
    pub fn new(
        meta: Arc<dyn MetadataStore>,
        blobs: Arc<dyn BlobStore>,
        settings: Settings,
    ) -> Registry {
        let uploads = Arc::new(Semaphore::new(settings.max_concurrent_uploads));
        Registry {
            meta,
            blobs,
            settings,
            uploads,
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn metadata(&self) -> &Arc<dyn MetadataStore> {
        &self.meta
    }

    pub fn blob_store(&self) -> &Arc<dyn BlobStore> {
        &self.blobs
    }

    fn max_blob_size(&self) -> Option<u64> {
        (self.settings.max_blob_size > 0).then_some(self.settings.max_blob_size)
    }

    /// Upload requests streaming right now.
    pub fn uploads_in_progress(&self) -> usize {
        self.settings.max_concurrent_uploads - self.uploads.available_permits()
    }

    fn upload_permit(&self) -> Result<OwnedSemaphorePermit> {
        self.uploads
            .clone()
            .try_acquire_owned()
            .map_err(|_| RegistryError::TooManyRequests)
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

    /// Drops the pin on bytes nothing references any more. Failure only leaks a pin (GC
    /// collects it later), so it is logged rather than failing the request.
    async fn release(&self, cid: &Cid) {
        match self.meta.cid_in_use(cid).await {
            Ok(true) => {}
            Ok(false) => {
                if let Err(e) = self.blobs.unpin(cid).await {
                    tracing::warn!(event = "unpin_failed", ipfs_cid = %cid, error = %e, "could not unpin released content");
                }
            }
            Err(e) => {
                tracing::warn!(event = "unpin_skipped", ipfs_cid = %cid, error = %e, "could not check whether content is still referenced");
            }
        }
    }
}
