//! What the blob store holds against what the metadata records.
//!
//! After a crash or a restore from backup the two can disagree: content pinned that no
//! record knows (a push cut short before its commit, or metadata that lost its latest
//! writes), and records whose content is not pinned (a blob store that lost data). The
//! registry must say so rather than serve around it; `ipfs-registry verify` reports both
//! and can record unknown content again, and `serve` checks an embedded data directory
//! when it starts.

use std::collections::HashSet;

use cid::Cid;
use futures::StreamExt;

use super::{Registry, RegistryError, Result};
use crate::blobs::unixfs::as_v1;
use crate::meta::BlobRecord;
use crate::oci::{Algorithm, RepoName};
use crate::registry::hashing::{Hasher, Rebuild};

/// CIDs asked about, and blob records read, per metadata query.
const BATCH: usize = 1000;

/// One comparison of the blob store with the metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    /// Roots pinned in the blob store.
    pub pinned: usize,
    /// Blob records in the metadata.
    pub records: usize,
    /// Records whose content is not pinned: pulls of these blobs fail.
    pub missing: Vec<BlobRecord>,
    /// Pinned roots that no blob, upload chunk or unpin queue entry records.
    pub unrecorded: Vec<Cid>,
    /// Direct pins no pending pin holds: the root and new nodes of a join whose upload was
    /// never completed (its process stopped between the pins and the commit).
    pub unrecorded_direct: Vec<Cid>,
}

/// What re-recording one unrecorded root did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reindexed {
    /// Recorded as this blob, linked into the repository.
    Recorded(BlobRecord),
    /// Its bytes do not hash to its CID under this registry's import profile (corrupt, or
    /// imported by something else): left alone.
    Mismatch { cid: Cid, computed: Cid },
    /// An image layout no record knows (its records were lost with the metadata): unpinned,
    /// since it cannot be recorded without its tag's manifest, and publishing the image
    /// again after its manifest is pushed again rebuilds the same root.
    LayoutDropped(Cid),
    /// Not a file (a directory, say: an IPFS node's own `init` documents), so no blob's
    /// bytes: left alone.
    NotAFile(Cid),
}

impl Registry {
    /// Compares every pinned root with every blob record. Pushes running meanwhile can
    /// show as unrecorded (added, not yet committed): run it on a quiet registry for an
    /// exact answer.
    pub async fn inventory(&self) -> Result<Inventory> {
        let pinned = self.blobs.pinned().await?;
        let unrecorded = self.unrecorded_among(&pinned).await?;
        let unrecorded_direct = self
            .unrecorded_among(&self.blobs.direct_pins().await?)
            .await?;
        let pinned_set: HashSet<Cid> = pinned.iter().copied().collect();
        let mut missing = Vec::new();
        let mut records = 0;
        let mut after = None;
        loop {
            let page = self.gc.blob_records(after.as_ref(), BATCH as u32).await?;
            records += page.len();
            after = page.last().map(|record| record.digest.clone());
            let full = page.len() == BATCH;
            missing.extend(
                page.into_iter()
                    .filter(|record| !pinned_set.contains(&as_v1(&record.cid))),
            );
            if !full {
                break;
            }
        }
        Ok(Inventory {
            pinned: pinned.len(),
            records,
            missing,
            unrecorded,
            unrecorded_direct,
        })
    }

    /// Whether the metadata records any blob at all.
    pub async fn records_any_blob(&self) -> Result<bool> {
        Ok(!self.gc.blob_records(None, 1).await?.is_empty())
    }

    /// Pinned roots the metadata does not know of.
    pub async fn unrecorded_content(&self) -> Result<Vec<Cid>> {
        let pinned = self.blobs.pinned().await?;
        self.unrecorded_among(&pinned).await
    }

    async fn unrecorded_among(&self, pinned: &[Cid]) -> Result<Vec<Cid>> {
        let mut unrecorded = Vec::new();
        for batch in pinned.chunks(BATCH) {
            let recorded = self.gc.recorded_cids(batch).await?;
            unrecorded.extend(batch.iter().filter(|cid| !recorded.contains(cid)));
        }
        Ok(unrecorded)
    }

    /// Drops a direct pin no record holds (see [`Inventory::unrecorded_direct`]): never a
    /// blob of its own, only part of a join that was not completed, whose client pushes the
    /// blob again. Under the CID's unpin lease, so a pin a record has come to hold since the
    /// inventory stays. True when it was dropped.
    pub async fn drop_unrecorded_direct(&self, cid: &Cid) -> Result<bool> {
        self.unpin_unused(cid).await
    }

    /// Records a pinned root as a blob linked into `repo`, after reading it back and
    /// checking that its bytes are what its CID says under this registry's import profile.
    /// The link is like an upload without a manifest: GC keeps it for `gc.grace_period`,
    /// long enough to push the manifests that use it again.
    pub async fn reindex(&self, repo: &RepoName, root: &Cid) -> Result<Reindexed> {
        if root.codec() == crate::blobs::kubo::DAG_PB_CODEC {
            let block = self.blobs.block(root).await?;
            if crate::blobs::layout::is_layout_root(&block) {
                self.unpin_unused(root).await?;
                tracing::info!(event = "layout_dropped", ipfs_cid = %root);
                return Ok(Reindexed::LayoutDropped(*root));
            }
            if !crate::blobs::unixfs::is_file_node(&block) {
                return Ok(Reindexed::NotAFile(*root));
            }
        }
        let profile = self.blobs.profile().clone();
        let mut bytes = self.blobs.cat(root, 0, None).await?;
        let mut rebuild = Rebuild::new(Hasher::new(Algorithm::Sha256), Some(&profile));
        while let Some(piece) = bytes.next().await {
            let piece = piece.map_err(|e| {
                RegistryError::Unavailable(format!("reading {root} from the blob store: {e}"))
            })?;
            rebuild.push(piece).await?;
        }
        let (digest, dag) = rebuild.finish_with_dag().await?;
        if as_v1(&dag.root) != as_v1(root) {
            return Ok(Reindexed::Mismatch {
                cid: *root,
                computed: dag.root,
            });
        }
        let record = BlobRecord {
            digest,
            cid: dag.root,
            size: dag.file_size,
            import_profile: profile.id(),
        };
        let stored = self.meta.commit_blob(repo, record).await?;
        tracing::info!(
            event = "blob_reindexed",
            repository = %repo,
            digest = %stored.digest,
            ipfs_cid = %stored.cid,
            size = stored.size,
        );
        Ok(Reindexed::Recorded(stored))
    }
}
