//! Garbage-collection queries, kept apart from [`super::MetadataStore`] so that the request
//! path's trait stays small and another store can implement GC on its own terms.
//!
//! The contract every implementation keeps (the argument is in docs/architecture.md):
//! - a row is deleted only after it is locked against concurrent pushes and re-checked in a
//!   statement that sees every push committed before the lock was taken; rows a push holds
//!   are skipped, not waited for;
//! - a CID is unpinned only under an [`UnpinLease`], which excludes every transaction that
//!   records that CID until the unpin has finished.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use cid::Cid;
use uuid::Uuid;

use super::{BlobRecord, MetaError, UploadChunk};
use crate::oci::{Digest, RepoName};

/// What a sweep may delete.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepPolicy {
    /// Blob links and blobs younger than this are kept even when nothing references them
    /// (an upload whose manifest has not been pushed yet).
    pub grace_period: Duration,
    /// Untagged manifests older than this that no tag reaches (through an index or as a
    /// referrer) are deleted. `None` keeps every manifest.
    pub untagged_retention: Option<Duration>,
    /// Upload sessions idle longer than this are ended.
    pub upload_expiry: Duration,
    /// Per repository (by name), what replaces `untagged_retention` there (`[[retention]]`
    /// rules' `untagged_older_than`).
    pub untagged_by_repository: Vec<(String, Duration)>,
    /// Tags to remove first (chosen by the `[[retention]]` rules), each only if it still
    /// points where it did when chosen, pushed at the same time: a push since then wins.
    pub remove_tags: Vec<TagRemoval>,
}

impl SweepPolicy {
    /// Whether any untagged manifest may be deleted at all.
    pub fn deletes_manifests(&self) -> bool {
        self.untagged_retention.is_some() || !self.untagged_by_repository.is_empty()
    }
}

/// A tag as retention sees it: where it points and when it was last pushed (moved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagRecord {
    pub tag: String,
    pub digest: Digest,
    pub updated_at: SystemTime,
}

/// A tag of one repository that a sweep removes (or removed, or would remove).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagRemoval {
    pub repository: String,
    pub record: TagRecord,
}

/// A manifest a sweep deleted (or would delete, in a dry run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweptManifest {
    pub repository: String,
    pub digest: Digest,
    pub size: u64,
}

/// An upload session a sweep ended, with the chunks whose pins may now be dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweptUpload {
    pub id: Uuid,
    pub chunks: Vec<UploadChunk>,
}

/// What the metadata part of a sweep removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Swept {
    /// Tags removed by `SweepPolicy::remove_tags` (those a push had not moved since).
    pub tags: Vec<TagRemoval>,
    pub uploads: Vec<SweptUpload>,
    pub manifests: Vec<SweptManifest>,
    /// Repository links to blobs removed.
    pub links: u64,
    /// Blob rows removed. Their CIDs, and those of the expired uploads' chunks, are queued
    /// for unpinning in the same transaction.
    pub blobs: Vec<BlobRecord>,
}

/// Held by the one GC run allowed at a time across all replicas. Dropping it releases it
/// eventually; `release` does so before returning, so the next run can start at once.
#[async_trait]
pub trait GcLease: Send {
    async fn release(self: Box<Self>);
}

/// Held while a CID is being unpinned; dropping it releases (without it, a push recording
/// the same CID waits).
#[async_trait]
pub trait UnpinLease: Send {
    /// Whether any record (a blob, a live upload chunk, a layout, the public index, or a
    /// pending pin's hold) still holds the CID (checked under the lease).
    async fn in_use(&mut self) -> Result<bool, MetaError>;
}

#[async_trait]
pub trait GcStore: Send + Sync + 'static {
    /// The cross-replica GC lock, or `None` when another run holds it.
    async fn try_gc_lease(&self) -> Result<Option<Box<dyn GcLease>>, MetaError>;

    /// Deletes what the policy allows, in this order: the tags it names, expired upload
    /// sessions, unreachable untagged manifests, unreferenced repository links, blobs with no link and no
    /// reference. With `dry_run` everything is computed the same way and then rolled back.
    async fn sweep(&self, policy: &SweepPolicy, dry_run: bool) -> Result<Swept, MetaError>;

    /// Every tag of the repository, with its digest and push time, in no particular order
    /// (empty when the repository does not exist).
    async fn tag_records(&self, repo: &RepoName) -> Result<Vec<TagRecord>, MetaError>;

    /// CIDs queued for unpinning by earlier sweeps (oldest first, at most `limit`).
    async fn unpin_queue(&self, limit: u32) -> Result<Vec<Cid>, MetaError>;

    /// Removes CIDs from the queue, in one write: their pins are gone, or something records
    /// them again. CIDs not queued are ignored.
    async fn dequeue_unpins(&self, cids: &[Cid]) -> Result<(), MetaError>;

    /// Excludes every recording of `cid` until the lease is dropped.
    async fn unpin_lease(&self, cid: &Cid) -> Result<Box<dyn UnpinLease>, MetaError>;

    /// Which of `cids` the metadata keeps track of: recorded by a blob or a live upload
    /// chunk, or queued for unpinning. Content a blob store holds under any other CID is
    /// unknown to the registry (a push cut short, or metadata lost).
    async fn recorded_cids(&self, cids: &[Cid]) -> Result<HashSet<Cid>, MetaError>;

    /// Roots of joined blobs still waiting for their recursive pin (oldest first, at most
    /// `limit`).
    async fn pending_pin_roots(&self, limit: u32) -> Result<Vec<Cid>, MetaError>;

    /// Ends the wait of `root` (pinned recursively now, or no longer recorded): drops what
    /// held its leaves and nodes and queues those CIDs for unpinning, in one write. Returns
    /// them (empty when nothing was held for `root`).
    async fn finish_pending_pin(&self, root: &Cid) -> Result<Vec<Cid>, MetaError>;

    /// Blob records in digest order, strictly after `after`, at most `limit`: a scan of
    /// every blob, one page at a time.
    async fn blob_records(
        &self,
        after: Option<&Digest>,
        limit: u32,
    ) -> Result<Vec<BlobRecord>, MetaError>;
}
