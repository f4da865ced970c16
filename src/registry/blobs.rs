//! Pulling, mounting and deleting blobs.

use futures::stream;

use super::hashing::Verified;
use super::{Registry, RegistryError, Result};
use crate::blobs::ByteStream;
use crate::meta::BlobRecord;
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
        self.meta
            .repository_blob(repo, digest)
            .await?
            .ok_or_else(|| RegistryError::BlobUnknown(digest.clone()))
    }

    /// Streams a blob (or a range of it) from the blob store. A full read is verified
    /// against the digest as it streams.
    pub async fn get_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        range: Option<BlobRange>,
    ) -> Result<BlobContent> {
        let record = self.stat_blob(repo, digest).await?;
        let Some(range) = range else {
            let raw: ByteStream = if record.size == 0 {
                Box::pin(stream::empty())
            } else {
                self.blobs.cat(&record.cid, 0, Some(record.size)).await?
            };
            let body = Box::pin(Verified::new(raw, digest.clone(), record.size));
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
    pub async fn delete_blob(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        self.ensure_deletes_enabled()?;
        if self.meta.unlink_blob(repo, digest).await? {
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
    ) -> Result<Option<BlobRecord>> {
        Ok(self.meta.mount_blob(from, to, digest).await?)
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
