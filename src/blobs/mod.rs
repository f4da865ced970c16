//! Where blob bytes live. `kubo` is the production store (an IPFS node over its RPC API);
//! `embedded` keeps them in files under a data directory, with the same CIDs. [`open`]
//! gives the one the configuration names.

pub mod embedded;
pub mod kubo;
pub mod layout;
pub mod metered;
pub mod migrate;
mod open;
mod profile;
pub mod public_index;
pub mod remote;
pub mod unixfs;
pub mod verified_car;

use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use cid::Cid;
use futures::Stream;

pub use open::{open, OpenError};
pub use profile::{ImportProfile, ProfileError};

/// A stream of blob bytes. Errors are I/O errors so the stream can come from an HTTP body,
/// a file or the IPFS node alike.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static>>;

/// The result of storing bytes: their CID under the store's import profile, and their length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBytes {
    pub cid: Cid,
    pub size: u64,
}

/// What [`BlobStore::concat`] stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    pub stored: StoredBytes,
    /// `None`: pinned like `add`. `Some(nodes)`: the root and these interior nodes are
    /// pinned only directly, and the leaves are the parts' own blocks, held by nothing but
    /// the parts' pins. A recursive pin walks every block of the blob (as long as reading
    /// it); the caller makes it later with [`BlobStore::pin`] of the root, and keeps the
    /// parts pinned until then. [`BlobStore::unpin`] drops the direct pins.
    pub direct: Option<Vec<Cid>>,
}

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The store could not be reached or did not answer in time.
    #[error("blob store unavailable: {0}")]
    Unavailable(String),
    /// The content is not in the store (or could not be found before the timeout).
    #[error("content {0} not found in the blob store")]
    NotFound(Cid),
    /// The input stream failed (client went away, size limit); nothing was stored.
    #[error("input stream failed: {0}")]
    Input(String),
    /// Another request holds what this one needs (an upload session's file).
    #[error("busy: {0}")]
    Busy(String),
    /// The store answered, but with something unexpected.
    #[error("blob store error: {0}")]
    Backend(String),
}

/// Checks what [`BlobStore::put_dag`] is given: every block is the one its CID names, under
/// a codec a UnixFS DAG uses, and the root is among them.
pub(crate) fn check_blocks(root: &Cid, blocks: &[(Cid, Bytes)]) -> Result<(), BlobError> {
    for (cid, bytes) in blocks {
        if ![kubo::RAW_CODEC, kubo::DAG_PB_CODEC].contains(&cid.codec()) {
            return Err(BlobError::Input(format!(
                "block {cid}: codec {:#x} is neither raw nor dag-pb",
                cid.codec()
            )));
        }
        if unixfs::names_block(cid, bytes) != Some(true) {
            return Err(BlobError::Input(format!(
                "block {cid}: the bytes do not match the CID"
            )));
        }
    }
    if !blocks.iter().any(|(cid, _)| cid == root) {
        return Err(BlobError::Input(format!(
            "root {root} is not among the blocks"
        )));
    }
    Ok(())
}

/// The links of `blocks`' dag-pb nodes that are not among them: the roots of stored DAGs
/// the new one links, as CIDv1.
pub(crate) fn linked_roots(blocks: &[(Cid, Bytes)]) -> Result<Vec<Cid>, BlobError> {
    let new: std::collections::HashSet<Cid> =
        blocks.iter().map(|(cid, _)| unixfs::as_v1(cid)).collect();
    let mut linked = std::collections::BTreeSet::new();
    for (cid, bytes) in blocks {
        if cid.codec() != kubo::DAG_PB_CODEC {
            continue;
        }
        let node = ipld_dagpb::PbNode::from_bytes(bytes.clone())
            .map_err(|e| BlobError::Input(format!("block {cid} is not dag-pb: {e}")))?;
        for link in node.links {
            let child = unixfs::as_v1(&link.cid);
            if !new.contains(&child) {
                linked.insert(child);
            }
        }
    }
    Ok(linked.into_iter().collect())
}

/// An upload session's bytes kept by the store ([`BlobStore::upload_file`]), held
/// exclusively by its owner.
#[async_trait]
pub trait UploadFile: Send {
    /// Bytes the session's file holds (durably, and past what the session counts when an
    /// append failed after writing).
    fn size(&self) -> u64;

    /// Writes `data` at `offset`, first dropping whatever the file holds past it (what an
    /// append whose session never counted it left); durable when it returns. Returns the
    /// file's new length.
    async fn append(&mut self, offset: u64, data: ByteStream) -> Result<u64, BlobError>;

    /// Stores (and pins) the file's first `size` bytes as a blob, as `add` would, and ends the
    /// session's file.
    async fn finish(self: Box<Self>, size: u64) -> Result<StoredBytes, BlobError>;

    /// Deletes the session's file.
    async fn discard(self: Box<Self>) -> Result<(), BlobError>;
}

#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// The import profile every `add` uses; recorded with each blob.
    fn profile(&self) -> &ImportProfile;

    /// Cheap reachability check.
    async fn ping(&self) -> Result<(), BlobError>;

    /// Stores the bytes under the import profile and pins them. When the input stream
    /// yields an error, the add is abandoned and nothing is pinned.
    async fn add(&self, data: ByteStream) -> Result<StoredBytes, BlobError>;

    /// Stores the concatenation of the stored blobs `parts` when the store can do so
    /// without the bytes passing through the caller; `None` when it cannot, and the caller
    /// then streams them into `add`. The parts stay stored, and pinned: the result may be
    /// pinned only in part (see [`Joined::direct`]) until [`BlobStore::pin`] of its root.
    async fn concat(&self, _parts: &[Cid]) -> Result<Option<Joined>, BlobError> {
        Ok(None)
    }

    /// The upload session `id`'s file, when the store keeps a session's bytes itself: every
    /// chunk written in place into one file and its DAG's leaves hashed as they arrive, so
    /// completing the upload writes no byte again. Held exclusively (across processes) until
    /// dropped. `Ok(None)` when the store does not keep sessions (the caller then stores
    /// each chunk with `add`); `Err(Busy)` when another request holds the session.
    async fn upload_file(&self, _id: uuid::Uuid) -> Result<Option<Box<dyn UploadFile>>, BlobError> {
        Ok(None)
    }

    /// Deletes the session files nobody has written for `idle` (sessions abandoned midway);
    /// returns how many. The metadata store expires the sessions themselves.
    async fn expire_upload_files(&self, _idle: std::time::Duration) -> Result<usize, BlobError> {
        Ok(0)
    }

    /// Stores `blocks` (raw or dag-pb, each checked against its CID) and pins the DAG under
    /// `root`, one of them, recursively. Its other links must be DAGs already stored here
    /// (pinned blobs): an image layout links its layers this way, so no byte of a layer is
    /// stored twice. Refused with `NotFound` when a linked DAG is not held. Storing a
    /// root already pinned is not an error.
    async fn put_dag(&self, root: &Cid, blocks: Vec<(Cid, Bytes)>) -> Result<(), BlobError>;

    /// Streams `length` bytes (all remaining when `None`) starting at `offset`.
    async fn cat(
        &self,
        cid: &Cid,
        offset: u64,
        length: Option<u64>,
    ) -> Result<ByteStream, BlobError>;

    /// Pins content already in the store (recursively). Pinning something pinned is not an
    /// error.
    ///
    /// Content unpinned a moment ago can be pinned back: the pin restores it whole, or
    /// fails with `NotFound`, after which adding the same bytes again stores them under the
    /// same CID. `Registry::ensure_pinned` relies on this when an unpin (GC, a released
    /// upload chunk) finished between an add and the commit that recorded the same bytes.
    async fn pin(&self, cid: &Cid) -> Result<(), BlobError>;

    /// Removes the pin. Unpinning something not pinned is not an error. The content may
    /// stay readable for a while (until the node's GC, or the embedded store's trash is
    /// emptied), so that a pin can still restore it.
    async fn unpin(&self, cid: &Cid) -> Result<(), BlobError>;

    /// Removes the content under `cid` now, bad bytes included: unpins it and deletes those
    /// of its blocks nothing else pinned uses, so that adding the same bytes again writes
    /// them afresh (a store keeps a block it believes it has). Unlike `unpin`, nothing is
    /// kept for a pin to restore. Evicting what is not stored is not an error. Best effort
    /// below the root on an IPFS node: blocks it cannot list (missing, or an unreadable
    /// node above them) stay until its repository GC.
    async fn evict(&self, cid: &Cid) -> Result<(), BlobError>;

    /// Whether the content is pinned (recursively).
    async fn is_pinned(&self, cid: &Cid) -> Result<bool, BlobError>;

    /// Every root pinned here (recursively), as CIDv1: the embedded store's blobs; on an
    /// IPFS node, every recursive pin, including those of other users of a shared node.
    async fn pinned(&self) -> Result<Vec<Cid>, BlobError>;

    /// Every CID pinned on its own block alone (an IPFS node's direct pins), as CIDv1. This
    /// registry makes such pins only while a joined upload waits for its root's recursive
    /// pin (`pending_pins`); one no record holds was left by a process stopped in between.
    /// Empty for a store without such pins (the embedded one).
    async fn direct_pins(&self) -> Result<Vec<Cid>, BlobError> {
        Ok(Vec::new())
    }

    /// One block (of any stored DAG) by its CID, checked against it. `NotFound` when this
    /// store does not hold it: never fetched from elsewhere.
    async fn block(&self, cid: &Cid) -> Result<Bytes, BlobError>;

    /// The DAG under a stored root as a CARv1 stream, root first, depth-first.
    async fn car(&self, root: &Cid) -> Result<ByteStream, BlobError>;

    /// One block by its CID, checked against it, fetched from the network when this store
    /// can (an IPFS node) and not held here; otherwise as [`BlobStore::block`]. For reading
    /// a DAG before deciding to fetch all of it (an image layout to import).
    async fn fetch_block(&self, cid: &Cid) -> Result<Bytes, BlobError> {
        self.block(cid).await
    }

    /// As [`BlobStore::put_dag`] for a DAG that shares most of its blocks with `previous`
    /// (pinned; its pin is left as it is, for the caller to release or keep): `blocks`
    /// holds every block of the new DAG but the pinned roots it links, and a store that can
    /// pin the new root by walking only what differs from the old one (Kubo's
    /// `pin/update`) does. The public index is such a DAG (a new root over thousands of
    /// unchanged image layouts), and so is the layout of a new tag of an image that has
    /// one (a new root and `index.json` over the same files).
    async fn put_dag_replacing(
        &self,
        _previous: Option<&Cid>,
        root: &Cid,
        blocks: Vec<(Cid, Bytes)>,
    ) -> Result<(), BlobError> {
        self.put_dag(root, blocks).await
    }

    /// The pinned roots whose stored DAGs hold the block `cid` (a few at most), where the
    /// store can tell without walking DAGs (the embedded store's block index); empty where
    /// it cannot (an IPFS node). Lets the gateway authorise a DAG's inner blocks by the
    /// blob or layout they belong to.
    async fn roots_holding(&self, _cid: &Cid) -> Result<Vec<Cid>, BlobError> {
        Ok(Vec::new())
    }

    /// Publishes `root` under the IPNS name of `key` (created on first use) in the IPFS
    /// node's keystore; returns the name (`k51…`). `None`: this store has no IPNS (the
    /// embedded store).
    async fn publish_name(&self, _key: &str, _root: &Cid) -> Result<Option<String>, BlobError> {
        Ok(None)
    }

    /// The CID an IPNS name (`k51…`, or a DNSLink domain) points at now, as the IPFS
    /// network says. A store with no network (the embedded one) cannot resolve names.
    async fn resolve_name(&self, name: &str) -> Result<Cid, BlobError> {
        Err(BlobError::Backend(format!(
            "unsupported: /ipns/{name} cannot be resolved without an IPFS node (ipfs.url); \
             follow the publishing registry's URL or an /ipfs/ root instead"
        )))
    }
}
