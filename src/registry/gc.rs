//! Garbage collection: what is swept, in which order, and the report.
//!
//! The metadata store deletes rows (see [`crate::meta::gc`] for the locking contract);
//! this module then unpins the CIDs those deletions queued, each under its unpin lease and
//! only when nothing records the CID any more. An unpin that fails stays queued for the
//! next run; a blob is therefore never unpinned while a row needs it, and a pin is never
//! lost track of.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::{Registry, Result};
use crate::meta::gc::{SweepPolicy, Swept, TagRemoval};
use crate::meta::Page;
use crate::oci::RepoName;

/// Queue entries unpinned per batch.
const UNPIN_BATCH: u32 = 500;
/// Repositories listed per catalog page while applying retention rules.
const CATALOG_PAGE: u32 = 1000;

/// What one run did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub dry_run: bool,
    /// Tags removed by `[[retention]]` rules.
    pub removed_tags: usize,
    pub expired_uploads: usize,
    pub deleted_manifests: usize,
    /// Bytes of the deleted manifests themselves.
    pub manifest_bytes: u64,
    pub removed_links: u64,
    pub freed_blobs: usize,
    /// Bytes of the deleted blobs.
    pub freed_bytes: u64,
    /// CIDs unpinned in the blob store (blobs and upload chunks).
    pub unpinned: usize,
    /// CIDs whose unpin failed; they stay queued for the next run.
    pub unpin_failures: usize,
    pub duration: Duration,
    /// What the sweep removed, item by item (for `gc --dry-run` to list).
    pub swept: Swept,
}

impl std::fmt::Display for GcReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verb = if self.dry_run { "would free" } else { "freed" };
        write!(
            f,
            "{verb}: {} manifests ({} bytes), {} blobs ({} bytes), {} repository links, \
             {} expired upload sessions, {} tags (retention); unpinned {} CIDs ({} failed, \
             retried next run) in {:.1}s",
            self.deleted_manifests,
            self.manifest_bytes,
            self.freed_blobs,
            self.freed_bytes,
            self.removed_links,
            self.expired_uploads,
            self.removed_tags,
            self.unpinned,
            self.unpin_failures,
            self.duration.as_secs_f64()
        )
    }
}

impl Registry {
    /// Runs one garbage collection. `None` when another run (on any replica) holds the GC
    /// lock. `progress` is told about each phase as it starts.
    pub async fn collect_garbage(
        &self,
        policy: &SweepPolicy,
        dry_run: bool,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<Option<GcReport>> {
        let started = Instant::now();
        let Some(lease) = self.gc.try_gc_lease().await? else {
            self.metrics.record_gc_run("busy");
            return Ok(None);
        };
        let result = self.run_gc(policy, dry_run, progress, started).await;
        lease.release().await;
        let outcome = match (&result, dry_run) {
            (Err(_), _) => "failed",
            (Ok(_), true) => "dry_run",
            (Ok(_), false) => "ok",
        };
        self.metrics.record_gc_run(outcome);
        result.map(Some)
    }

    async fn run_gc(
        &self,
        policy: &SweepPolicy,
        dry_run: bool,
        progress: &(dyn Fn(&str) + Send + Sync),
        started: Instant,
    ) -> Result<GcReport> {
        let policy = &self.with_retention(policy).await?;
        if !self.settings.rules.retention.is_empty() {
            progress(&format!(
                "retention rules: {} tags to remove, {} repositories with their own untagged \
                 retention",
                policy.remove_tags.len(),
                policy.untagged_by_repository.len()
            ));
        }
        progress(&format!(
            "sweeping metadata{}: uploads idle > {}, blob links unreferenced > {}, {}",
            if dry_run { " (dry run)" } else { "" },
            humantime_serde::re::humantime::format_duration(policy.upload_expiry),
            humantime_serde::re::humantime::format_duration(policy.grace_period),
            match policy.untagged_retention {
                Some(r) => format!(
                    "untagged unreachable manifests > {}",
                    humantime_serde::re::humantime::format_duration(r)
                ),
                None => "untagged manifests kept".to_owned(),
            }
        ));
        let swept = self.gc.sweep(policy, dry_run).await?;
        let mut report = summarise(swept, dry_run);
        progress(&format!(
            "metadata: {} upload sessions, {} manifests, {} links, {} blobs",
            report.expired_uploads,
            report.deleted_manifests,
            report.removed_links,
            report.freed_blobs
        ));
        for removed in &report.swept.tags {
            tracing::info!(
                event = "tag_retention",
                dry_run,
                repository = %removed.repository,
                tag = %removed.record.tag,
                digest = %removed.record.digest,
            );
        }
        for manifest in &report.swept.manifests {
            tracing::info!(
                event = "manifest_gc",
                dry_run,
                repository = %manifest.repository,
                digest = %manifest.digest,
                size = manifest.size,
            );
        }
        for blob in &report.swept.blobs {
            tracing::info!(
                event = "blob_gc",
                dry_run,
                digest = %blob.digest,
                ipfs_cid = %blob.cid,
                size = blob.size,
            );
        }
        if !dry_run {
            self.metrics
                .gc_removed_tags
                .inc_by(report.removed_tags as u64);
            self.metrics.gc_freed_bytes.inc_by(report.freed_bytes);
            self.metrics
                .gc_freed_blobs
                .inc_by(report.freed_blobs as u64);
            self.metrics
                .gc_deleted_manifests
                .inc_by(report.deleted_manifests as u64);
            self.metrics
                .gc_expired_uploads
                .inc_by(report.expired_uploads as u64);
            progress("unpinning released content");
            self.drain_unpin_queue(&mut report, progress).await?;
            // Sessions kept in place by the blob store: the files of those idle as long as
            // the metadata's expiry (just swept, or abandoned by a crash).
            match self.blobs.expire_upload_files(policy.upload_expiry).await {
                Ok(0) => {}
                Ok(files) => tracing::info!(event = "upload_files_gc", files),
                Err(e) => tracing::warn!(event = "upload_files_gc_failed", error = %e),
            }
        }
        report.duration = started.elapsed();
        tracing::info!(
            event = "gc_done",
            dry_run,
            removed_tags = report.removed_tags,
            expired_uploads = report.expired_uploads,
            deleted_manifests = report.deleted_manifests,
            removed_links = report.removed_links,
            freed_blobs = report.freed_blobs,
            freed_bytes = report.freed_bytes,
            unpinned = report.unpinned,
            unpin_failures = report.unpin_failures,
            duration_ms = report.duration.as_millis() as u64,
        );
        Ok(report)
    }

    /// Unpins every queued CID nothing records; failures stay queued.
    async fn drain_unpin_queue(
        &self,
        report: &mut GcReport,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<()> {
        let mut failed = BTreeSet::new();
        loop {
            let queued = self
                .gc
                .unpin_queue(UNPIN_BATCH + failed.len() as u32)
                .await?;
            let batch: Vec<_> = queued.into_iter().filter(|c| !failed.contains(c)).collect();
            if batch.is_empty() {
                break;
            }
            let mut done = Vec::with_capacity(batch.len());
            for cid in batch {
                match self.unpin_unused(&cid).await {
                    Ok(unpinned) => {
                        if unpinned {
                            report.unpinned += 1;
                        }
                        done.push(cid);
                    }
                    Err(e) => {
                        tracing::warn!(event = "gc_unpin_failed", ipfs_cid = %cid, error = %e);
                        failed.insert(cid);
                    }
                }
            }
            // Dequeued once the batch is through: after a crash, unpinning again is harmless.
            self.gc.dequeue_unpins(&done).await?;
            progress(&format!("unpinned {} CIDs", report.unpinned));
        }
        report.unpin_failures = failed.len();
        Ok(())
    }
}

fn summarise(swept: Swept, dry_run: bool) -> GcReport {
    GcReport {
        dry_run,
        removed_tags: swept.tags.len(),
        expired_uploads: swept.uploads.len(),
        deleted_manifests: swept.manifests.len(),
        manifest_bytes: swept.manifests.iter().map(|m| m.size).sum(),
        removed_links: swept.links,
        freed_blobs: swept.blobs.len(),
        freed_bytes: swept.blobs.iter().map(|b| b.size).sum(),
        swept,
        ..GcReport::default()
    }
}

impl Registry {
    /// `policy` with the `[[retention]]` rules applied to every repository one covers:
    /// the tags to remove (never an immutable one) and the repository's own untagged
    /// retention. The tags are chosen from a listing taken now; the sweep removes each only
    /// if no push has moved it since.
    async fn with_retention(&self, policy: &SweepPolicy) -> Result<SweepPolicy> {
        let rules = &self.settings.rules;
        let mut policy = policy.clone();
        if rules.retention.is_empty() {
            return Ok(policy);
        }
        let mut page = Page {
            n: Some(CATALOG_PAGE),
            last: None,
        };
        loop {
            let names = self.meta.catalog(&page).await?;
            for name in &names {
                let Some(rule) = rules.retention_for(name) else {
                    continue;
                };
                if let Some(age) = rule.untagged_older_than {
                    policy.untagged_by_repository.push((name.clone(), age));
                }
                // Catalog names were validated when stored; one that no longer parses has
                // no tags a request could reach, so it is left alone.
                let Ok(repo) = name.parse::<RepoName>() else {
                    continue;
                };
                let tags = self.gc.tag_records(&repo).await?;
                let protected = rules.protected_tags(name);
                policy
                    .remove_tags
                    .extend(
                        rule.tags_to_remove(&tags, &protected)
                            .into_iter()
                            .map(|record| TagRemoval {
                                repository: name.clone(),
                                record,
                            }),
                    );
            }
            if names.len() < CATALOG_PAGE as usize {
                return Ok(policy);
            }
            page.last = names.last().cloned();
        }
    }
}
