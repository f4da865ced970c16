//! Pulling, mounting and deleting blobs.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures::{stream, Stream};

use super::hashing::verified;
use super::notify::{Action, Origin, Target};
use super::{Registry, RegistryError, Result};
use crate::blobs::ByteStream;
use crate::meta::BlobRecord;
use crate::metrics::Metrics;
use crate::oci::{Digest, RepoName};

/// A byte range as a client asks for it (`Range: bytes=...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobRange {
    /// `bytes=start-` or `bytes=start-end` (end inclusive).
    From { start: u64, end: Option<u64> },
    /// `bytes=-n`: the last n bytes.
    Suffix(u64),
}

impl BlobRange {
    /// The inclusive byte range this selects in a blob of `size` bytes, if satisfiable.
    pub fn resolve(self, size: u64) -> Option<(u64, u64)> {
        match self {
            BlobRange::From { start, end } => {
                if start >= size {
                    return None;
                }
                let end = end.map_or(size - 1, |e| e.min(size - 1));
                (end >= start).then_some((start, end))
            }
            BlobRange::Suffix(0) => None,
            BlobRange::Suffix(n) => (size > 0).then(|| (size.saturating_sub(n), size - 1)),
        }
    }
}

pub struct BlobContent {
    pub record: BlobRecord,
    /// The inclusive range served, when a range was asked for.
    pub range: Option<(u64, u64)>,
    pub body: ByteStream,
}

impl Registry {
    pub async fn stat_blob(&self, repo: &RepoName, digest: &Digest) -> Result<BlobRecord> {
        if let Some(record) = self.meta.repository_blob(repo, digest).await? {
            return Ok(record);
        }
        // Only an unknown blob pays for this look.
        if self.meta.is_quarantined(digest).await? {
            return Err(RegistryError::BlobQuarantined(digest.clone()));
        }
        Err(RegistryError::BlobUnknown(digest.clone()))
    }

    /// Streams a blob (or a range of it) from the blob store. With `verify_on_pull`, a full
    /// read is verified against the digest as it streams.
    pub async fn get_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        range: Option<BlobRange>,
    ) -> Result<BlobContent> {
        let started = Instant::now();
        let content = self.open_blob(repo, digest, range).await?;
        let body = Box::pin(Served {
            inner: content.body,
            sent: 0,
            pull: Some(Pull {
                metrics: self.metrics.clone(),
                repository: repo.to_string(),
                record: content.record.clone(),
                started,
                span: tracing::Span::current(),
            }),
        });
        Ok(BlobContent { body, ..content })
    }

    async fn open_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        range: Option<BlobRange>,
    ) -> Result<BlobContent> {
        let record = self.stat_blob(repo, digest).await?;
        self.blob_content(record, range).await
    }

    /// Streams a stored blob (or a range of it). With `verify_on_pull`, a full read is
    /// verified against the digest as it streams; without, the bytes go out as stored: the
    /// push verified them, clients verify them again, and the scrub (`scrub.rs`) finds what
    /// changed on disk since.
    pub(super) async fn blob_content(
        &self,
        record: BlobRecord,
        range: Option<BlobRange>,
    ) -> Result<BlobContent> {
        let Some(range) = range else {
            let raw: ByteStream = if record.size == 0 {
                Box::pin(stream::empty())
            } else {
                self.blobs.cat(&record.cid, 0, Some(record.size)).await?
            };
            let body = if self.settings.verify_on_pull {
                verified(raw, record.digest.clone(), record.size)
            } else {
                raw
            };
            return Ok(BlobContent {
                record,
                range: None,
                body,
            });
        };
        let (start, end) = range
            .resolve(record.size)
            .ok_or(RegistryError::RangeNotSatisfiable { size: record.size })?;
        let body = self
            .blobs
            .cat(&record.cid, start, Some(end - start + 1))
            .await?;
        Ok(BlobContent {
            record,
            range: Some((start, end)),
            body,
        })
    }

    /// Unlinks the blob from the repository. Its bytes stay until garbage collection finds
    /// nothing else uses them.
    pub async fn delete_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        origin: &Origin,
    ) -> Result<()> {
        self.ensure_deletes_enabled()?;
        let started = Instant::now();
        let notices = self
            .notifier
            .notices(Action::Delete, &Target::blob(repo, digest), origin);
        if self
            .meta
            .unlink_blob_with_notices(repo, digest, &notices)
            .await?
        {
            self.woken(&notices);
            tracing::info!(
                event = "blob_delete",
                repository = %repo,
                digest = %digest,
                duration_ms = started.elapsed().as_millis() as u64,
            );
            Ok(())
        } else {
            Err(RegistryError::BlobUnknown(digest.clone()))
        }
    }

    /// Cross-repository mount: `None` when `from` does not hold the blob (the caller then
    /// falls back to a normal upload).
    pub async fn mount_blob(
        &self,
        from: &RepoName,
        to: &RepoName,
        digest: &Digest,
        origin: &Origin,
    ) -> Result<Option<BlobRecord>> {
        let started = Instant::now();
        let target = Target {
            from_repository: Some(from),
            media_type: Some("application/octet-stream"),
            ..Target::blob(to, digest)
        };
        let notices = self.notifier.notices(Action::Mount, &target, origin);
        let mounted = self
            .meta
            .mount_blob_with_notices(from, to, digest, &notices)
            .await?;
        if let Some(record) = &mounted {
            self.woken(&notices);
            self.blob_event("blob_mount", to, record, started);
        }
        Ok(mounted)
    }

    /// Records the pull of a blob for the endpoints that want pulls; `origin` is asked for
    /// only then, so a pull nobody listens to builds nothing. A pull is no change to report
    /// in a transaction, so a failure to record it is logged and the pull goes on.
    pub async fn note_blob_pull(
        &self,
        repo: &RepoName,
        record: &BlobRecord,
        origin: impl FnOnce() -> Origin,
    ) {
        if !self.notifier.wants(Action::Pull, repo) {
            return;
        }
        let notices = self.blob_notices(Action::Pull, repo, record, Some(&origin()));
        self.record_pull(&notices).await;
    }
}

/// What a pull reports when its body ends.
struct Pull {
    metrics: Arc<Metrics>,
    repository: String,
    record: BlobRecord,
    started: Instant,
    /// The request's span: the body is streamed after the handler has returned.
    span: tracing::Span,
}

pin_project_lite::pin_project! {
    /// A pull's body: counts the bytes sent and logs the pull once, when the body ends or
    /// is dropped (the client went away).
    struct Served {
        #[pin]
        inner: ByteStream,
        sent: u64,
        pull: Option<Pull>,
    }

    impl PinnedDrop for Served {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            report(this.pull.take(), *this.sent, false);
        }
    }
}

fn report(pull: Option<Pull>, sent: u64, complete: bool) {
    let Some(pull) = pull else { return };
    pull.span.in_scope(|| {
        tracing::info!(
            event = "blob_pull",
            repository = %pull.repository,
            digest = %pull.record.digest,
            ipfs_cid = %pull.record.cid,
            size = sent,
            complete,
            duration_ms = pull.started.elapsed().as_millis() as u64,
        );
    });
}

impl Stream for Served {
    type Item = std::result::Result<Bytes, std::io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.project();
        let item = this.inner.poll_next(cx);
        match &item {
            Poll::Ready(Some(Ok(bytes))) => {
                *this.sent += bytes.len() as u64;
                if let Some(pull) = this.pull.as_ref() {
                    pull.metrics.blob_bytes_out.inc_by(bytes.len() as u64);
                }
            }
            Poll::Ready(None) => report(this.pull.take(), *this.sent, true),
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
        }
        item
    }
}

#[cfg(test)]
mod tests {
    use super::BlobRange;

    #[test]
    fn resolves_ranges() {
        let from = |start, end| BlobRange::From { start, end };
        assert_eq!(from(0, None).resolve(10), Some((0, 9)));
        assert_eq!(from(2, Some(4)).resolve(10), Some((2, 4)));
        assert_eq!(from(2, Some(40)).resolve(10), Some((2, 9)));
        assert_eq!(from(10, None).resolve(10), None);
        assert_eq!(from(5, Some(4)).resolve(10), None);
        assert_eq!(BlobRange::Suffix(3).resolve(10), Some((7, 9)));
        assert_eq!(BlobRange::Suffix(30).resolve(10), Some((0, 9)));
        assert_eq!(BlobRange::Suffix(0).resolve(10), None);
        assert_eq!(from(0, None).resolve(0), None);
    }
}
