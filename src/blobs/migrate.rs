//! Moving an embedded store's blobs into an IPFS node: each blob is added (and pinned)
//! there and must come out under the CID it has here, which is what lets the metadata keep
//! every row as it is. A CID that differs stops the move and takes back what it added.

use cid::Cid;

use super::embedded::EmbeddedStore;
use super::{BlobError, BlobStore};

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(
        "blob {expected} came out of the IPFS node as {actual}: its import profile differs \
         from the one the blobs were stored with (import_profile.chunk_size); nothing was \
         changed"
    )]
    CidMismatch { expected: Cid, actual: Cid },
    #[error("{0}")]
    Store(#[from] BlobError),
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MigrateReport {
    /// Blobs added to the node.
    pub copied: usize,
    /// Blobs the node already had pinned.
    pub present: usize,
    pub bytes: u64,
}

/// Copies every blob of `from` into `to`, calling `progress` after each.
pub async fn copy_all(
    from: &EmbeddedStore,
    to: &dyn BlobStore,
    mut progress: impl FnMut(&Cid, usize, usize),
) -> Result<MigrateReport, MigrateError> {
    let roots = from.roots().await?;
    let mut report = MigrateReport::default();
    let mut added = Vec::new();
    for (done, root) in roots.iter().enumerate() {
        let outcome = copy_one(from, to, root).await;
        match outcome {
            Ok(Some(bytes)) => {
                added.push(*root);
                report.copied += 1;
                report.bytes += bytes;
            }
            Ok(None) => report.present += 1,
            Err(e) => {
                // "Nothing changed": drop the pins this run made (content already there
                // before it keeps its pin).
                if let MigrateError::CidMismatch { actual, .. } = &e {
                    added.push(*actual);
                }
                for cid in &added {
                    if let Err(undo) = to.unpin(cid).await {
                        tracing::warn!(event = "migrate_undo_failed", ipfs_cid = %cid, error = %undo);
                    }
                }
                return Err(e);
            }
        }
        progress(root, done + 1, roots.len());
    }
    Ok(report)
}

/// Adds one blob; `None` when the node had it pinned already.
async fn copy_one(
    from: &EmbeddedStore,
    to: &dyn BlobStore,
    root: &Cid,
) -> Result<Option<u64>, MigrateError> {
    if to.is_pinned(root).await? {
        return Ok(None);
    }
    let bytes = from.cat(root, 0, None).await?;
    let stored = to.add(bytes).await?;
    if stored.cid != *root {
        return Err(MigrateError::CidMismatch {
            expected: *root,
            actual: stored.cid,
        });
    }
    Ok(Some(stored.size))
}
