//! The scrub: every recorded blob read back from the blob store and checked against its
//! record — size, digest, and the CID rebuilt under the blob's own import profile.
//!
//! Why: a full pull does not re-hash by default (`integrity.verify_on_pull`), since every
//! push was verified and clients verify what they pull. What rots on disk afterwards is
//! found here instead, at a bounded rate. A blob found corrupt is quarantined (no
//! repository sees it: pulls answer 404, so clients push it again) and its bad bytes are
//! evicted, so that the push stores them afresh and lifts the quarantine. A blob found
//! missing is quarantined but not evicted: an IPFS node that lost a block for good and one
//! that was merely slow to find it look alike, and a later scrub that reads it whole
//! releases it.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use cid::Cid;
use futures::StreamExt;

use super::hashing::{Hasher, Rebuild};
use super::{Registry, RegistryError, Result};
use crate::blobs::unixfs::as_v1;
use crate::blobs::{BlobError, ImportProfile};
use crate::meta::BlobRecord;
use crate::oci::Digest;

/// Blob records read per metadata query.
const PAGE: u32 = 1000;
/// The lease the periodic scrub in `serve` takes, so one replica scrubs at a time.
pub const SCRUB_LEASE: &str = "scrub";

#[derive(Debug, Clone, Default)]
pub struct ScrubOptions {
    /// Bytes per second read at most; `None` = as fast as the store answers.
    pub rate: Option<u64>,
    /// Take (and keep renewing) the cross-replica scrub lease as this holder for this long;
    /// the scrub does not run when another holder has it.
    pub lease: Option<(String, Duration)>,
}

/// A blob whose stored bytes are not what its record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub digest: Digest,
    pub cid: Cid,
    pub size: u64,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScrubReport {
    /// Blobs read back and checked.
    pub checked: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Readable but wrong (size, digest or CID): quarantined, bytes evicted.
    pub corrupt: Vec<Finding>,
    /// Not (wholly) readable from the blob store: quarantined.
    pub missing: Vec<Finding>,
    /// Quarantined blobs found sound again, and released.
    pub released: Vec<Digest>,
    /// Sound blobs whose content had lost its pin, pinned again.
    pub repinned: Vec<Digest>,
    pub elapsed: Duration,
}

impl ScrubReport {
    pub fn gigabytes_per_second(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            self.bytes as f64 / seconds / 1e9
        } else {
            0.0
        }
    }

    pub fn is_sound(&self) -> bool {
        self.corrupt.is_empty() && self.missing.is_empty()
    }
}

impl std::fmt::Display for ScrubReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} blobs ({} bytes) checked in {:.1} s ({:.2} GB/s): {} corrupt, {} missing, {} released from quarantine, {} pinned again",
            self.checked,
            self.bytes,
            self.elapsed.as_secs_f64(),
            self.gigabytes_per_second(),
            self.corrupt.len(),
            self.missing.len(),
            self.released.len(),
            self.repinned.len()
        )
    }
}

/// Told what a scrub does as it goes (a progress bar, logs).
pub trait ScrubObserver: Send + Sync {
    /// `bytes` more were read.
    fn read(&self, _bytes: u64) {}
    /// One blob is done.
    fn checked(&self, _record: &BlobRecord) {}
}

impl ScrubObserver for () {}

enum Verdict {
    Sound,
    Corrupt(String),
    Missing(String),
}

/// Reads at most `rate` bytes per second on average since the scrub began.
struct Pace {
    rate: Option<u64>,
    started: Instant,
    bytes: u64,
}

impl Pace {
    async fn account(&mut self, bytes: u64) {
        self.bytes += bytes;
        let Some(rate) = self.rate.filter(|r| *r > 0) else {
            return;
        };
        let due = Duration::from_secs_f64(self.bytes as f64 / rate as f64);
        let elapsed = self.started.elapsed();
        if due > elapsed {
            tokio::time::sleep(due - elapsed).await;
        }
    }
}

impl Registry {
    /// Checks every recorded blob (see the module documentation). `Ok(None)` when the
    /// options ask for the scrub lease and another replica holds it. Fails, without
    /// quarantining anything more, when a store becomes unreachable: a dead node is not a
    /// store full of missing blobs.
    pub async fn scrub(
        &self,
        options: &ScrubOptions,
        observer: &dyn ScrubObserver,
    ) -> Result<Option<ScrubReport>> {
        if let Some((holder, ttl)) = &options.lease {
            if !self.meta.try_lease(SCRUB_LEASE, holder, *ttl).await? {
                return Ok(None);
            }
        }
        let result = self.scrub_all(options, observer).await;
        if let Some((holder, _)) = &options.lease {
            if let Err(e) = self.meta.release_lease(SCRUB_LEASE, holder).await {
                tracing::warn!(event = "scrub_lease_release_failed", error = %e, "the scrub lease expires on its own");
            }
        }
        self.count_quarantined().await;
        result.map(Some)
    }

    /// How many blobs are recorded and their total size (for a progress bar).
    pub async fn blob_totals(&self) -> Result<(u64, u64)> {
        let (mut blobs, mut bytes) = (0, 0);
        let mut after = None;
        loop {
            let page = self.gc.blob_records(after.as_ref(), PAGE).await?;
            blobs += page.len() as u64;
            bytes += page.iter().map(|r| r.size).sum::<u64>();
            let full = page.len() == PAGE as usize;
            after = page.last().map(|r| r.digest.clone());
            if !full {
                return Ok((blobs, bytes));
            }
        }
    }

    /// Sets the `blobs_quarantined` gauge from the metadata (logged, not fatal, on failure).
    pub async fn count_quarantined(&self) {
        match self.meta.quarantined_blobs().await {
            Ok(all) => {
                self.metrics
                    .blobs_quarantined
                    .set(i64::try_from(all.len()).unwrap_or(i64::MAX));
            }
            Err(e) => tracing::warn!(event = "quarantine_count_failed", error = %e),
        }
    }

    async fn scrub_all(
        &self,
        options: &ScrubOptions,
        observer: &dyn ScrubObserver,
    ) -> Result<ScrubReport> {
        let started = Instant::now();
        let quarantined: HashSet<Digest> = self
            .meta
            .quarantined_blobs()
            .await?
            .into_iter()
            .map(|q| q.digest)
            .collect();
        let mut report = ScrubReport::default();
        let mut pace = Pace {
            rate: options.rate,
            started,
            bytes: 0,
        };
        let mut renewed = Instant::now();
        let mut after = None;
        loop {
            let page = self.gc.blob_records(after.as_ref(), PAGE).await?;
            let full = page.len() == PAGE as usize;
            after = page.last().map(|r| r.digest.clone());
            for record in page {
                if let Some((holder, ttl)) = &options.lease {
                    if renewed.elapsed() >= *ttl / 3 {
                        if !self.meta.try_lease(SCRUB_LEASE, holder, *ttl).await? {
                            return Err(RegistryError::Unavailable(
                                "scrub: the scrub lease was lost to another replica".into(),
                            ));
                        }
                        renewed = Instant::now();
                    }
                }
                let read_before = pace.bytes;
                let verdict = self.check(&record, &mut pace, observer).await?;
                report.checked += 1;
                report.bytes += pace.bytes - read_before;
                self.metrics.scrub_blobs.inc();
                let was_quarantined = quarantined.contains(&record.digest);
                match verdict {
                    Verdict::Sound => match self.keep_pinned(&record).await? {
                        Ok(repinned) => {
                            if repinned {
                                report.repinned.push(record.digest.clone());
                            }
                            if was_quarantined && self.meta.release_blob(&record.digest).await? {
                                tracing::info!(event = "blob_released", digest = %record.digest, ipfs_cid = %record.cid, "quarantined blob found sound: released");
                                report.released.push(record.digest.clone());
                            }
                        }
                        Err(reason) => {
                            let finding = self
                                .quarantine(&record, reason, false, was_quarantined)
                                .await?;
                            report.missing.push(finding);
                        }
                    },
                    Verdict::Corrupt(reason) => {
                        let finding = self
                            .quarantine(&record, reason, true, was_quarantined)
                            .await?;
                        report.corrupt.push(finding);
                    }
                    Verdict::Missing(reason) => {
                        let finding = self
                            .quarantine(&record, reason, false, was_quarantined)
                            .await?;
                        report.missing.push(finding);
                    }
                }
                observer.checked(&record);
            }
            if !full {
                break;
            }
        }
        report.elapsed = started.elapsed();
        tracing::info!(
            event = "scrub_report",
            checked = report.checked,
            bytes = report.bytes,
            corrupt = report.corrupt.len(),
            missing = report.missing.len(),
            released = report.released.len(),
            duration_ms = report.elapsed.as_millis() as u64,
        );
        Ok(report)
    }

    /// Makes sure a blob the scrub found sound stays stored: its content pinned again when
    /// the pin is gone (lost to an operator's `pin rm`, or a re-pin at push time that could
    /// not reach the node). `Ok(Ok(true))` when it re-pinned; `Ok(Err(reason))` when it could
    /// not, and the blob must be quarantined before the node's repo GC takes its blocks.
    /// Fails when the store cannot say whether it is pinned.
    async fn keep_pinned(&self, record: &BlobRecord) -> Result<std::result::Result<bool, String>> {
        if self.blobs.is_pinned(&record.cid).await? {
            return Ok(Ok(false));
        }
        match self.pin_recorded(&record.cid).await {
            Ok(repinned) => {
                if repinned {
                    tracing::warn!(event = "repin", digest = %record.digest, ipfs_cid = %record.cid, "the scrub found a recorded blob unpinned: pinned again");
                }
                Ok(Ok(repinned))
            }
            Err(e) => Ok(Err(format!(
                "its content is unpinned and could not be pinned again: {e}"
            ))),
        }
    }

    /// Quarantines a blob a scrub found bad (unless it already is) and, when its bytes are
    /// wrong rather than gone, evicts them.
    async fn quarantine(
        &self,
        record: &BlobRecord,
        reason: String,
        evict: bool,
        already: bool,
    ) -> Result<Finding> {
        if !already {
            let event = if evict {
                "blob_corrupt"
            } else {
                "blob_missing"
            };
            tracing::error!(
                event,
                digest = %record.digest,
                ipfs_cid = %record.cid,
                size = record.size,
                reason = %reason,
                "stored blob failed the scrub: quarantined"
            );
            self.metrics.scrub_corrupt.inc();
            self.meta.quarantine_blob(&record.digest, &reason).await?;
            if evict {
                if let Err(e) = self.blobs.evict(&record.cid).await {
                    tracing::warn!(event = "evict_failed", ipfs_cid = %record.cid, error = %e, "corrupt bytes left in the blob store");
                }
            }
        }
        Ok(Finding {
            digest: record.digest.clone(),
            cid: record.cid,
            size: record.size,
            reason,
        })
    }

    /// Reads one blob back and compares it with its record.
    async fn check(
        &self,
        record: &BlobRecord,
        pace: &mut Pace,
        observer: &dyn ScrubObserver,
    ) -> Result<Verdict> {
        let profile = ImportProfile::from_id(&record.import_profile);
        if profile.is_none() {
            tracing::warn!(event = "scrub_profile_unknown", digest = %record.digest, import_profile = %record.import_profile, "CID not checked: unknown import profile");
        }
        let mut rebuild = Rebuild::new(Hasher::new(record.digest.algorithm()), profile.as_ref());
        let mut read = 0u64;
        let mut bytes = match self.blobs.cat(&record.cid, 0, None).await {
            Ok(bytes) => bytes,
            Err(BlobError::NotFound(_)) => {
                return Ok(Verdict::Missing("not in the blob store".into()))
            }
            Err(e @ BlobError::Unavailable(_)) => {
                self.blob_store_reachable().await?;
                return Ok(Verdict::Missing(format!("unreadable: {e}")));
            }
            Err(e) => return Ok(Verdict::Corrupt(format!("unreadable: {e}"))),
        };
        while let Some(piece) = bytes.next().await {
            let piece = match piece {
                Ok(piece) => piece,
                Err(e) => {
                    self.blob_store_reachable().await?;
                    return Ok(Verdict::Missing(format!(
                        "read failed after {read} bytes: {e}"
                    )));
                }
            };
            let len = piece.len() as u64;
            read += len;
            if read > record.size {
                pace.account(len).await;
                return Ok(Verdict::Corrupt(format!(
                    "holds more than its recorded {} bytes",
                    record.size
                )));
            }
            rebuild.push(piece).await?;
            self.metrics.scrub_bytes.inc_by(len);
            observer.read(len);
            pace.account(len).await;
        }
        let (digest, dag) = rebuild.finish().await?;
        if read != record.size {
            return Ok(Verdict::Corrupt(format!(
                "holds {read} bytes, {} recorded",
                record.size
            )));
        }
        if digest != record.digest {
            return Ok(Verdict::Corrupt(format!("its bytes hash to {digest}")));
        }
        if let Some(dag) = dag {
            if as_v1(&dag.root) != as_v1(&record.cid) {
                return Ok(Verdict::Corrupt(format!(
                    "its bytes make CID {}, not the recorded one",
                    dag.root
                )));
            }
        }
        Ok(Verdict::Sound)
    }

    /// An error when the blob store does not answer at all (then nothing is quarantined).
    async fn blob_store_reachable(&self) -> Result<()> {
        self.blobs.ping().await.map_err(|e| {
            RegistryError::Unavailable(format!("scrub stopped: blob store unreachable: {e}"))
        })
    }
}
