//! Moving an embedded store's blobs into an IPFS node: each blob is added (and pinned)
//! there and must come out under the CID it has here, which is what lets the metadata keep
//! every row as it is. A CID that differs stops the move and takes back what it added.

use std::path::PathBuf;

use cid::Cid;

use super::embedded::EmbeddedStore;
use super::open::{self, OpenError};
use super::unixfs::MAX_LINKS;
use super::{BlobError, BlobStore};
use crate::config::{BlobsKind, Config};

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("blob {expected} came out of the IPFS node as {actual}: {cause}; nothing was changed")]
    CidMismatch {
        expected: Cid,
        actual: Cid,
        /// What differs, as far as the two DAGs tell.
        cause: String,
    },
    #[error("{0}")]
    Store(#[from] BlobError),
    #[error("configuration setting `ipfs.url` names the node to copy the blobs to")]
    NoNode,
    #[error("no embedded blob store in {} (data_dir)", .0.display())]
    NoEmbeddedStore(PathBuf),
    #[error(transparent)]
    Open(#[from] OpenError),
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MigrateReport {
    /// Blobs added to the node.
    pub copied: usize,
    /// Blobs the node already had pinned.
    pub present: usize,
    pub bytes: u64,
}

/// Copies the embedded blob store under `data_dir` into the IPFS node at `ipfs.url`,
/// calling `progress` after each blob.
pub async fn into_configured_node(
    config: &Config,
    progress: impl FnMut(&Cid, usize, usize),
) -> Result<MigrateReport, MigrateError> {
    if config.blobs_kind() != BlobsKind::Kubo {
        return Err(MigrateError::NoNode);
    }
    let dir = open::embedded_dir(config);
    if !dir.join("blocks.sqlite").exists() {
        return Err(MigrateError::NoEmbeddedStore(dir));
    }
    let from = open::embedded(config)?;
    let to = open::kubo(config)?;
    copy_all(&from, &to, progress).await
}

/// Copies every blob of `from` into `to`, calling `progress` after each.
pub async fn copy_all(
    from: &EmbeddedStore,
    to: &dyn BlobStore,
    mut progress: impl FnMut(&Cid, usize, usize),
) -> Result<MigrateReport, MigrateError> {
    let mut roots = from.roots().await?;
    // DAGs stored by `put_dag` (image layouts) link blobs, which must be on the node first:
    // blobs go before them.
    let mut dags = Vec::new();
    for root in &roots {
        if let Some(blocks) = from.dag_blocks(root).await? {
            dags.push((*root, blocks));
        }
    }
    roots.retain(|root| !dags.iter().any(|(dag, _)| dag == root));
    roots.extend(dags.iter().map(|(dag, _)| *dag));
    let mut report = MigrateReport::default();
    let mut added = Vec::new();
    for (done, root) in roots.iter().enumerate() {
        let outcome = match dags.iter().find(|(dag, _)| dag == root) {
            Some((_, blocks)) => copy_dag(to, root, blocks.clone()).await,
            None => copy_one(from, to, root).await,
        };
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

/// Stores and pins one DAG stored by `put_dag`; `None` when the node had it pinned already.
async fn copy_dag(
    to: &dyn BlobStore,
    root: &Cid,
    blocks: Vec<(Cid, bytes::Bytes)>,
) -> Result<Option<u64>, MigrateError> {
    if to.is_pinned(root).await? {
        return Ok(None);
    }
    let bytes = blocks.iter().map(|(_, block)| block.len() as u64).sum();
    to.put_dag(root, blocks).await?;
    Ok(Some(bytes))
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
            cause: mismatch_cause(from, to, root, &stored.cid).await,
        });
    }
    Ok(Some(stored.size))
}

/// Why the node computed another root for the same bytes, from the stored DAG and the
/// node's root block.
async fn mismatch_cause(
    from: &EmbeddedStore,
    to: &dyn BlobStore,
    root: &Cid,
    actual: &Cid,
) -> String {
    let configured = to.profile().chunk_size;
    if let Ok(Some((stored, leaves))) = from.leaves(root).await {
        let configured = u64::from(configured);
        if stored > configured || (leaves > 1 && stored != configured) {
            return format!(
                "the blobs were stored in {stored}-byte chunks, and import_profile.chunk_size is \
                 {configured}: set it to {stored}"
            );
        }
    }
    if actual.codec() != root.codec() || actual.hash().code() != root.hash().code() {
        return format!(
            "the node answered codec {:#x} with hash {:#x} where the profile gives {:#x} with \
             {:#x}: it ignores cid-version, raw-leaves or hash",
            actual.codec(),
            actual.hash().code(),
            root.codec(),
            root.hash().code()
        );
    }
    let links = match to.block(actual).await {
        Ok(block) => ipld_dagpb::PbNode::from_bytes(block)
            .map(|node| node.links.len())
            .ok(),
        Err(_) => None,
    };
    match links {
        Some(links) if links > MAX_LINKS => format!(
            "the node put {links} links under one node where the profile allows {MAX_LINKS}: it \
             ignores max-file-links (a node or proxy that drops the option, with \
             Import.UnixFSFileMaxLinks set)"
        ),
        _ => "the node's importer builds another DAG than the recorded profile (its chunker \
              or layout options are ignored, or import_profile.chunk_size differs from the \
              chunks the blobs were stored in)"
            .to_owned(),
    }
}
