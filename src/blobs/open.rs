//! Opening the blob store the configuration names (`blobs.kind`).

use std::path::PathBuf;
use std::sync::Arc;

use super::embedded::{EmbeddedStore, TRASH_GRACE};
use super::kubo::KuboStore;
use super::metered::MeteredBlobStore;
use super::{BlobError, BlobStore};
use crate::config::{BlobsKind, Config};
use crate::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("setting up the IPFS client (ipfs.url)")]
    Kubo(#[source] BlobError),
    #[error("opening the embedded blob store in {}", .0.display())]
    Embedded(PathBuf, #[source] BlobError),
}

/// The store `blobs.kind` names, every call timed into `metrics`.
pub fn open(config: &Config, metrics: Arc<Metrics>) -> Result<Arc<dyn BlobStore>, OpenError> {
    let store: Arc<dyn BlobStore> = match config.blobs_kind() {
        BlobsKind::Kubo => Arc::new(kubo(config)?),
        BlobsKind::Embedded => {
            let dir = embedded_dir(config);
            tracing::info!(event = "blob_store", store = "embedded", directory = %dir.display());
            // A trashed file must outlive the metadata call of a commit racing its unpin,
            // which re-pins it right after.
            let grace = TRASH_GRACE.max(config.database.operation_timeout * 2);
            Arc::new(embedded(config)?.with_trash_grace(grace))
        }
    };
    Ok(Arc::new(MeteredBlobStore::new(store, metrics)))
}

/// The node at `ipfs.url`.
pub(super) fn kubo(config: &Config) -> Result<KuboStore, OpenError> {
    let url =
        config.ipfs.url.clone().ok_or_else(|| {
            OpenError::Kubo(BlobError::Backend("no IPFS RPC URL configured".into()))
        })?;
    KuboStore::new(&config.ipfs, url, config.import_profile.clone()).map_err(OpenError::Kubo)
}

/// Where the embedded store keeps its files.
pub(super) fn embedded_dir(config: &Config) -> PathBuf {
    config.data_dir.join("blobs")
}

/// The embedded store under `data_dir`, created if needed.
pub(super) fn embedded(config: &Config) -> Result<EmbeddedStore, OpenError> {
    let dir = embedded_dir(config);
    EmbeddedStore::open(&dir, config.import_profile.clone())
        .map_err(|e| OpenError::Embedded(dir, e))
}
