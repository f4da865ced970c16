//! A stored DAG as a CARv1 stream (the trustless-gateway `application/vnd.ipld.car`
//! response): the root first, then depth-first in link order, each block once — the order
//! `dag/export` and gateways use, so a client can verify blocks as they arrive.

use std::collections::{HashMap, HashSet};
use std::io::SeekFrom;
use std::path::PathBuf;

use bytes::Bytes;
use cid::Cid;
use futures::StreamExt;
use ipld_dagpb::PbNode;
use iroh_car::{CarHeader, CarWriter};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::index::Location;
use crate::blobs::kubo::DAG_PB_CODEC;
use crate::blobs::{BlobError, ByteStream};

/// Bytes buffered between the CAR writer task and the response.
const PIPE: usize = 256 * 1024;

/// The blocks of `dag` in export order.
fn export_order(
    root: Cid,
    dag: &HashMap<Cid, Location>,
) -> Result<Vec<(Cid, Location)>, BlobError> {
    let mut order = Vec::with_capacity(dag.len());
    let mut seen = HashSet::with_capacity(dag.len());
    let mut stack = vec![root];
    while let Some(cid) = stack.pop() {
        if !seen.insert(cid) {
            continue;
        }
        let location = dag.get(&cid).ok_or_else(|| {
            BlobError::Backend(format!("block {cid} of {root} is missing from the index"))
        })?;
        // Only dag-pb nodes have links; a raw block kept whole (a small file of a DAG stored
        // by `put_dag`) is a leaf.
        if let (Location::Node { bytes, .. }, DAG_PB_CODEC) = (location, cid.codec()) {
            let node = PbNode::from_bytes(bytes.clone())
                .map_err(|e| BlobError::Backend(format!("stored node {cid}: {e}")))?;
            stack.extend(node.links.iter().rev().map(|link| link.cid));
        }
        order.push((cid, location.clone()));
    }
    Ok(order)
}

/// Streams the CAR of the DAG under `root`, whose leaves are ranges of the files of their
/// roots in `data` (the root's own, and those of the DAGs it links).
pub(super) fn export(
    root: Cid,
    dag: &HashMap<Cid, Location>,
    data: PathBuf,
) -> Result<ByteStream, BlobError> {
    let order = export_order(root, dag)?;
    let (reader, writer) = tokio::io::duplex(PIPE);
    let task = tokio::spawn(async move {
        // Leaves come file by file in export order: one open file at a time.
        let mut source: Option<(Cid, tokio::fs::File)> = None;
        let mut car = CarWriter::new(CarHeader::new_v1(vec![root]), writer);
        for (cid, location) in order {
            let bytes = match location {
                Location::Node { bytes, .. } => bytes,
                Location::Leaf {
                    root: file_root,
                    offset,
                    length,
                } => {
                    let source = match &mut source {
                        Some((open, file)) if *open == file_root => file,
                        _ => {
                            let file =
                                tokio::fs::File::open(data.join(file_root.to_string())).await?;
                            &mut source.insert((file_root, file)).1
                        }
                    };
                    source.seek(SeekFrom::Start(offset)).await?;
                    let mut bytes = vec![0; length as usize];
                    source.read_exact(&mut bytes).await?;
                    Bytes::from(bytes)
                }
            };
            car.write(cid, &bytes)
                .await
                .map_err(std::io::Error::other)?;
        }
        car.finish().await.map_err(std::io::Error::other)?;
        Ok::<_, std::io::Error>(())
    });
    // The body ends with the writer; a failed export must not look like a complete CAR, so
    // its error becomes the stream's last item.
    let outcome = futures::stream::once(async move {
        match task.await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(Err(e)),
            Err(e) => Some(Err(std::io::Error::other(e.to_string()))),
        }
    })
    .filter_map(futures::future::ready);
    Ok(Box::pin(
        tokio_util::io::ReaderStream::with_capacity(reader, PIPE).chain(outcome),
    ))
}
