//! The read-only IPFS gateway over stored blobs: a blob's bytes by the CID of its DAG, one
//! block of a DAG, or a whole DAG as a CAR (the trustless-gateway responses). Content is
//! addressed by CID alone, as on the IPFS network where every pinned layer is announced:
//! the gateway shows what the blob store holds, never what a repository would hide.

use bytes::Bytes;
use cid::Cid;

use super::{BlobContent, BlobRange, Registry, RegistryError, Result};
use crate::blobs::unixfs::as_v1;
use crate::blobs::{BlobError, ByteStream};
use crate::meta::BlobRecord;

/// The CID as blocks and blobs are stored under it: a CIDv0 (`Qm…`) names the same block as
/// its CIDv1; a hash function other than sha2-256 names nothing stored here.
fn stored_form(cid: &Cid) -> Result<Cid> {
    if cid.hash().code() != crate::blobs::kubo::SHA2_256 {
        return Err(RegistryError::ContentUnknown(*cid));
    }
    Ok(as_v1(cid))
}

impl Registry {
    async fn blob_by_cid(&self, cid: &Cid) -> Result<BlobRecord> {
        self.meta
            .blob_by_cid(&stored_form(cid)?)
            .await?
            .ok_or(RegistryError::ContentUnknown(*cid))
    }

    /// The repositories holding `cid`: as a blob's or image layout's root, or else (where
    /// the blob store can tell which stored DAGs hold a block) as a block inside one.
    pub async fn ipfs_repositories(&self, cid: &Cid) -> Result<Vec<String>> {
        let Ok(cid) = stored_form(cid) else {
            return Ok(Vec::new());
        };
        let mut repositories = self.meta.repositories_with_cid(&cid).await?;
        if repositories.is_empty() {
            for root in self.blobs.roots_holding(&cid).await? {
                if root != cid {
                    repositories.extend(self.meta.repositories_with_cid(&root).await?);
                }
            }
            repositories.sort();
            repositories.dedup();
        }
        Ok(repositories)
    }

    /// The bytes of the blob whose DAG root is `cid` (or a range of them).
    pub async fn ipfs_file(&self, cid: &Cid, range: Option<BlobRange>) -> Result<BlobContent> {
        let record = self.blob_by_cid(cid).await?;
        self.blob_content(record, range).await
    }

    /// The blob whose DAG root is `cid` (for HEAD).
    pub async fn ipfs_stat(&self, cid: &Cid) -> Result<BlobRecord> {
        self.blob_by_cid(cid).await
    }

    /// One block, checked against its CID.
    pub async fn ipfs_block(&self, cid: &Cid) -> Result<Bytes> {
        match self.blobs.block(&stored_form(cid)?).await {
            Ok(bytes) => Ok(bytes),
            Err(BlobError::NotFound(_)) => Err(RegistryError::ContentUnknown(*cid)),
            Err(e) => Err(e.into()),
        }
    }

    /// The DAG of a stored blob as a CARv1 stream.
    pub async fn ipfs_car(&self, cid: &Cid) -> Result<ByteStream> {
        let root = self.car_root(cid).await?;
        Ok(self.blobs.car(&root).await?)
    }

    /// The stored root a CAR of `cid` is exported from: a blob's, or an image layout's
    /// (the whole image in one CAR). Anything else is not served as a CAR.
    pub async fn car_root(&self, cid: &Cid) -> Result<Cid> {
        let stored = stored_form(cid)?;
        if let Some(record) = self.meta.blob_by_cid(&stored).await? {
            return Ok(record.cid);
        }
        // Not a blob: a CID some repository holds is then a recorded image layout.
        if self.meta.repositories_with_cid(&stored).await?.is_empty() {
            return Err(RegistryError::ContentUnknown(*cid));
        }
        Ok(stored)
    }
}
