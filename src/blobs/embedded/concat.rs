//! Joining stored blobs into one (a chunked upload's chunks into its blob) without reading
//! them through the registry: when every part but the last is made of whole leaves, the
//! parts' leaves are the joined blob's leaves, so only its interior nodes are new, and the
//! files are joined by the kernel (`copy_file_range`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use cid::Cid;
use ipld_dagpb::PbNode;

use super::index::{BlockIndex, Location};
use crate::blobs::BlobError;

/// The leaves (CID, length) of each stored part, in order; `None` when a part other than
/// the last has a partial leaf (then the joined blob's leaves would differ).
pub(super) fn leaves_of(
    index: &BlockIndex,
    parts: &[Cid],
    chunk_size: u64,
) -> Result<Option<Vec<(Cid, u64)>>, BlobError> {
    let mut all = Vec::new();
    for part in parts {
        let dag = index.dag(part)?;
        if dag.is_empty() {
            return Err(BlobError::NotFound(*part));
        }
        let mut leaves = Vec::new();
        walk(&dag, part, &mut leaves)?;
        all.push(leaves);
    }
    Ok(crate::blobs::unixfs::aligned_leaves(all, chunk_size))
}

/// Appends the leaves under `cid`, left to right.
fn walk(
    dag: &HashMap<Cid, Location>,
    cid: &Cid,
    out: &mut Vec<(Cid, u64)>,
) -> Result<(), BlobError> {
    match dag.get(cid) {
        Some(Location::Leaf { length, .. }) => out.push((*cid, *length)),
        Some(Location::Node { bytes, .. }) => {
            let node = PbNode::from_bytes(bytes.clone()).map_err(|e| {
                BlobError::Backend(format!("stored node {cid} does not decode: {e}"))
            })?;
            for link in node.links {
                walk(dag, &link.cid, out)?;
            }
        }
        None => {
            return Err(BlobError::Backend(format!(
                "block {cid} is missing from the index of its DAG"
            )))
        }
    }
    Ok(())
}

/// Writes the files `parts` one after another to `target` and makes it durable; returns
/// the bytes written.
pub(super) fn join_files(parts: &[PathBuf], target: &Path) -> std::io::Result<u64> {
    let mut out = crate::durable::private_file()
        .write(true)
        .create(true)
        .truncate(true)
        .open(target)?;
    let mut written = 0;
    for part in parts {
        // File to file: std uses copy_file_range, so the bytes stay in the kernel.
        written += std::io::copy(&mut std::fs::File::open(part)?, &mut out)?;
    }
    out.sync_all()?;
    Ok(written)
}
