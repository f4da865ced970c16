//! Publishing tagged images as OCI Image Layouts in the blob store (docs/federation.md):
//! the layout is computed from the stored manifests and blob records
//! ([`crate::blobs::layout`]), its new blocks stored and its root pinned
//! ([`crate::blobs::BlobStore::put_dag`]), then recorded for the tag. The record lives as
//! long as the tag points at the manifest; the metadata queues the root for unpinning when
//! it goes, and GC unpins it like any released content.

use std::collections::{BTreeMap, BTreeSet};

use cid::Cid;
use futures::{StreamExt, TryStreamExt};

use super::{Registry, RegistryError, Result};
use crate::blobs::layout::{self, Content, Image, LayoutError};
use crate::blobs::unixfs::cumulative_size;
use crate::meta::ImageLayout;
use crate::oci::{manifest, Digest, Reference, RepoName, Tag};

/// Config and layer records and root blocks looked up at once.
const PARALLEL_LOOKUPS: usize = 8;

/// Manifests read per layout at most (an index and its children): a bound on the work
/// one publish does for a hostile index of indexes.
const MAX_MANIFESTS: usize = 1000;

impl From<LayoutError> for RegistryError {
    fn from(e: LayoutError) -> Self {
        RegistryError::Unsupported(e.to_string())
    }
}

impl Registry {
    /// Publishes the image `tag` points at and records its layout; returns the image CID,
    /// or `None` when the tag moved (or went) meanwhile and nothing was recorded.
    pub async fn publish_layout(&self, repo: &RepoName, tag: &Tag) -> Result<Option<Cid>> {
        let top = self
            .meta
            .manifest(repo, &Reference::Tag(tag.clone()))
            .await?
            .ok_or(RegistryError::ManifestUnknown)?;
        let manifest = top.digest.clone();
        let published = self.publish_manifest_layout(repo, tag, top).await?;
        if published.is_some() {
            // Published here (`ipfs-registry publish`, an import): a queue entry for the
            // same image has nothing left to do.
            let entry = crate::meta::QueuedLayout {
                repo: repo.clone(),
                tag: tag.clone(),
                manifest,
                attempts: 0,
            };
            if let Err(e) = self.meta.dequeue_layout(&entry).await {
                tracing::warn!(event = "layout_queue_update_failed", repository = %repo, tag = %tag, error = %e);
            }
        }
        Ok(published)
    }

    /// Publishes `manifest` as the image of `tag`, as a push queued it; `None` when the
    /// tag points elsewhere now (or the manifest is gone) and nothing was recorded.
    pub(super) async fn publish_queued_layout(
        &self,
        repo: &RepoName,
        tag: &Tag,
        manifest: &Digest,
    ) -> Result<Option<Cid>> {
        match self
            .meta
            .manifest(repo, &Reference::Digest(manifest.clone()))
            .await?
        {
            Some(top) => self.publish_manifest_layout(repo, tag, top).await,
            None => Ok(None),
        }
    }

    async fn publish_manifest_layout(
        &self,
        repo: &RepoName,
        tag: &Tag,
        top: crate::meta::StoredManifest,
    ) -> Result<Option<Cid>> {
        let started = std::time::Instant::now();
        let mut blobs = BTreeMap::new();
        let mut linked = BTreeSet::new();
        let mut pending = vec![top.digest.clone()];
        let mut seen = BTreeSet::new();
        while let Some(digest) = pending.pop() {
            if !seen.insert(digest.clone()) {
                continue;
            }
            if seen.len() > MAX_MANIFESTS {
                return Err(RegistryError::Unsupported(format!(
                    "an image layout holds at most {MAX_MANIFESTS} manifests"
                )));
            }
            let stored = if digest == top.digest {
                top.clone()
            } else {
                self.meta
                    .manifest(repo, &Reference::Digest(digest.clone()))
                    .await?
                    .ok_or(RegistryError::ManifestUnknown)?
            };
            let parsed = manifest::parse(&stored.content, Some(&stored.media_type))
                .map_err(|e| RegistryError::Internal(format!("stored manifest {digest}: {e}")))?;
            // Non-distributable layers are not in the registry; clients fetch them from
            // their URLs, from a layout as from a registry.
            let external: BTreeSet<&Digest> = parsed.external_layers.iter().collect();
            linked.extend(
                parsed
                    .config
                    .iter()
                    .chain(&parsed.layers)
                    .map(|descriptor| &descriptor.digest)
                    .filter(|digest| !external.contains(digest))
                    .cloned(),
            );
            pending.extend(parsed.manifests.iter().map(|d| d.digest.clone()));
            blobs.insert(digest, Content::Bytes(stored.content.clone()));
        }
        let lookups: Vec<_> = linked
            .iter()
            .map(|digest| async move {
                Ok::<_, RegistryError>((digest.clone(), self.linked_blob(repo, digest).await?))
            })
            .collect();
        let resolved: Vec<(Digest, Content)> = futures::stream::iter(lookups)
            .buffer_unordered(PARALLEL_LOOKUPS)
            .try_collect()
            .await?;
        blobs.extend(resolved);
        let image = Image {
            tag: tag.as_str().to_owned(),
            media_type: top.media_type.clone(),
            digest: top.digest.clone(),
            size: top.content.len() as u64,
            blobs,
        };
        let layout = layout::build(&image, self.blobs.profile().chunk_size)?;
        let root = layout.root;
        // Another tag of the same manifest has a layout already: all but the new root and
        // `index.json` are its blocks, so a store that pins by difference walks two blocks
        // instead of the whole image (Kubo's `pin/update`). Without it, a burst of tags of
        // one image keeps the node reading the image once per tag.
        let sibling = self
            .meta
            .image_layout(repo, &Reference::Digest(top.digest.clone()))
            .await?
            .map(|sibling| sibling.cid)
            .filter(|cid| *cid != root);
        self.blobs
            .put_dag_replacing(sibling.as_ref(), &root, layout.blocks)
            .await?;
        if !self
            .meta
            .record_layout(repo, tag, &top.digest, &root)
            .await?
        {
            // The tag moved: this layout is nobody's (unless recorded elsewhere).
            self.release(&root).await;
            return Ok(None);
        }
        self.ensure_layout_pinned(&root).await?;
        tracing::info!(
            event = "layout_published",
            repository = %repo,
            tag = %tag,
            digest = %top.digest,
            ipfs_cid = %root,
            duration_ms = started.elapsed().as_millis() as u64,
        );
        Ok(Some(root))
    }

    /// Queues the image a push tagged for publishing (src/registry/publish.rs), before the
    /// push answers: once acknowledged, a push's image is published even if this process
    /// dies first. `public` says whether anonymous users may pull the repository: a layout
    /// is public by CID, so a private image's is never published. A failure to queue is
    /// logged and counted, never the push's (`ipfs-registry publish` publishes the tag).
    pub async fn publish_after_push(
        &self,
        repo: &RepoName,
        tag: &Tag,
        manifest: &Digest,
        public: bool,
    ) {
        if !public {
            self.metrics.record_layout_published("private");
            return;
        }
        match self.meta.queue_layout(repo, tag, manifest).await {
            Ok(()) => self.publisher.wake(),
            Err(e) => {
                self.metrics.record_layout_published("failed");
                tracing::warn!(
                    event = "layout_queue_failed",
                    repository = %repo,
                    tag = %tag,
                    error = %e,
                    "the push succeeded; `ipfs-registry publish` publishes its image",
                );
            }
        }
    }

    /// The layout recorded for `reference` (see [`crate::meta::MetadataStore::image_layout`]).
    pub async fn image_layout(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<ImageLayout> {
        self.meta
            .image_layout(repo, reference)
            .await?
            .ok_or(RegistryError::LayoutUnknown)
    }

    /// Tags of `repo` without a layout, a page at a time (for `ipfs-registry publish`).
    pub async fn unpublished_tags(
        &self,
        repo: &RepoName,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Tag>> {
        Ok(self.meta.unpublished_tags(repo, after, limit).await?)
    }

    /// As [`Registry::ensure_pinned`] for a blob: a GC run may have unpinned the same root
    /// (queued when another tag dropped the same layout) between `put_dag` and the record;
    /// it is pinned again under its lease. Failing that, publishing fails (logged and
    /// counted by the caller).
    async fn ensure_layout_pinned(&self, root: &Cid) -> Result<()> {
        match self.blobs.is_pinned(root).await {
            Ok(true) => Ok(()),
            Ok(false) => {
                if self.pin_recorded(root).await? {
                    tracing::info!(event = "repin", ipfs_cid = %root, "layout recorded while being unpinned: pinned again");
                }
                Ok(())
            }
            Err(e) => {
                tracing::warn!(event = "pin_check_failed", ipfs_cid = %root, error = %e, "could not verify the pin of a published layout");
                Ok(())
            }
        }
    }

    /// A config or layer as a layout links it: its stored root and cumulative size.
    async fn linked_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Content> {
        let record = self
            .meta
            .repository_blob(repo, digest)
            .await?
            .ok_or_else(|| RegistryError::BlobUnknown(digest.clone()))?;
        let root = self.blobs.block(&record.cid).await?;
        let dag_size = cumulative_size(&record.cid, &root).map_err(|e| {
            RegistryError::Internal(format!("stored root {} of {digest}: {e}", record.cid))
        })?;
        Ok(Content::Stored {
            cid: record.cid,
            dag_size,
        })
    }
}
