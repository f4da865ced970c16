//! A CARv1 stream checked as it passes: every block against its CID, every block one the DAG
//! under the root links to, and at the end no link left without its block. A `dag/export`
//! that ends early (the node lost a block, or the connection dropped) would otherwise go out
//! as a complete 200 response; here the stream fails instead, so the response is cut short
//! and the client sees an incomplete transfer.
//!
//! Bytes go out only once the section holding them is checked; a section is one block, so
//! at most one block (bounded by [`MAX_SECTION`]) is held.

use std::collections::HashSet;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use cid::Cid;
use futures::Stream;
use ipld_dagpb::PbNode;

use super::kubo::DAG_PB_CODEC;
use super::unixfs::names_block;
use super::ByteStream;

/// The largest CAR section accepted: a CID and a block (Kubo's limit is 2 MiB blocks).
pub(crate) const MAX_SECTION: u64 = 4 * 1024 * 1024;

/// Wraps `car`, the CAR of the DAG under `root`, so that it fails unless it is complete and
/// every block is what its CID says.
pub fn verified(root: Cid, car: ByteStream) -> ByteStream {
    Box::pin(VerifiedCar {
        inner: car,
        buffer: BytesMut::new(),
        header_done: false,
        wanted: HashSet::from([root]),
        seen: HashSet::new(),
        finished: false,
    })
}

struct VerifiedCar {
    inner: ByteStream,
    /// Received, not yet checked.
    buffer: BytesMut,
    header_done: bool,
    /// Linked to, not yet received.
    wanted: HashSet<Cid>,
    seen: HashSet<Cid>,
    finished: bool,
}

fn invalid(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}

/// An unsigned LEB128 varint at the start of `bytes`: its value and length, or `None` when
/// `bytes` ends inside it.
pub(crate) fn varint(bytes: &[u8]) -> Option<Result<(u64, usize), std::io::Error>> {
    let mut value: u64 = 0;
    for (i, byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some(Ok((value, i + 1)));
        }
    }
    if bytes.len() >= 10 {
        return Some(Err(invalid("CAR: varint longer than 10 bytes".into())));
    }
    None
}

impl VerifiedCar {
    /// Checks every complete section in the buffer; the bytes that may go out.
    fn check_complete_sections(&mut self) -> Result<usize, std::io::Error> {
        let buffer = std::mem::take(&mut self.buffer);
        let checked = self.check_sections(&buffer);
        self.buffer = buffer;
        checked
    }

    fn check_sections(&mut self, buffer: &[u8]) -> Result<usize, std::io::Error> {
        let mut checked = 0;
        loop {
            let rest = &buffer[checked..];
            let Some(prefix) = varint(rest) else {
                return Ok(checked);
            };
            let (length, prefix_len) = prefix?;
            if length > MAX_SECTION {
                return Err(invalid(format!("CAR: a section of {length} bytes")));
            }
            let end = prefix_len + length as usize;
            if rest.len() < end {
                return Ok(checked);
            }
            let section = &rest[prefix_len..end];
            if self.header_done {
                self.check_block(section)?;
            } else {
                // The header (roots, version) is the node's; the blocks prove the DAG.
                self.header_done = true;
            }
            checked += end;
        }
    }

    fn check_block(&mut self, section: &[u8]) -> Result<(), std::io::Error> {
        let mut reader = section;
        let cid = Cid::read_bytes(&mut reader)
            .map_err(|e| invalid(format!("CAR: a block's CID: {e}")))?;
        let block = reader;
        if names_block(&cid, block) != Some(true) {
            return Err(invalid(format!("CAR: block {cid} does not match its CID")));
        }
        if !self.wanted.remove(&cid) {
            if self.seen.contains(&cid) {
                return Ok(());
            }
            return Err(invalid(format!(
                "CAR: block {cid} is not linked from the DAG"
            )));
        }
        self.seen.insert(cid);
        if cid.codec() == DAG_PB_CODEC {
            let node = PbNode::from_bytes(Bytes::copy_from_slice(block))
                .map_err(|e| invalid(format!("CAR: node {cid}: {e}")))?;
            for link in node.links {
                if !self.seen.contains(&link.cid) {
                    self.wanted.insert(link.cid);
                }
            }
        }
        Ok(())
    }

    /// At the end of the input: complete, or why not.
    fn check_end(&self) -> Result<(), std::io::Error> {
        if !self.buffer.is_empty() {
            return Err(invalid(format!(
                "CAR: the export ended inside a section ({} bytes left over)",
                self.buffer.len()
            )));
        }
        if !self.header_done {
            return Err(invalid("CAR: the export ended before its header".into()));
        }
        if let Some(missing) = self.wanted.iter().next() {
            return Err(invalid(format!(
                "CAR: the export ended without {} linked blocks (e.g. {missing})",
                self.wanted.len()
            )));
        }
        Ok(())
    }
}

impl Stream for VerifiedCar {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.finished {
            return Poll::Ready(None);
        }
        loop {
            match this.inner.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => {
                    this.finished = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(chunk))) => {
                    this.buffer.extend_from_slice(&chunk);
                    let ready = match this.check_complete_sections() {
                        Ok(ready) => ready,
                        Err(e) => {
                            this.finished = true;
                            return Poll::Ready(Some(Err(e)));
                        }
                    };
                    if ready > 0 {
                        let out = this.buffer.split_to(ready).freeze();
                        return Poll::Ready(Some(Ok(out)));
                    }
                }
                Poll::Ready(None) => {
                    this.finished = true;
                    return match this.check_end() {
                        Ok(()) => Poll::Ready(None),
                        Err(e) => Poll::Ready(Some(Err(e))),
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blobs::unixfs::{Block, DagBuilder};
    use futures::StreamExt;
    use iroh_car::{CarHeader, CarWriter};

    /// A three-leaf file DAG (1 KiB chunks): its root, and its blocks in export order.
    fn dag() -> (Cid, Vec<(Cid, Vec<u8>)>) {
        let data: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        let mut builder = DagBuilder::new(1024);
        let mut blocks = Vec::new();
        builder.push(&data, &mut blocks);
        let dag = builder.finish(&mut blocks);
        let mut offset_blocks: Vec<(Cid, Vec<u8>)> = blocks
            .into_iter()
            .map(|block| match block {
                Block::Leaf { cid, offset, len } => {
                    (cid, data[offset as usize..(offset + len) as usize].to_vec())
                }
                Block::Node { cid, bytes } => (cid, bytes.to_vec()),
            })
            .collect();
        // Root first, as dag/export sends it.
        offset_blocks.rotate_right(1);
        assert_eq!(offset_blocks[0].0, dag.root);
        (dag.root, offset_blocks)
    }

    async fn car(root: Cid, blocks: &[(Cid, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut writer = CarWriter::new(CarHeader::new_v1(vec![root]), &mut out);
        for (cid, bytes) in blocks {
            writer.write(*cid, bytes).await.unwrap();
        }
        writer.finish().await.unwrap();
        out
    }

    /// Feeds `bytes` in small pieces (sections split across chunks) and collects the output.
    async fn pass(root: Cid, bytes: Vec<u8>) -> Result<Vec<u8>, std::io::Error> {
        let pieces: Vec<Result<Bytes, std::io::Error>> = bytes
            .chunks(7)
            .map(|piece| Ok(Bytes::copy_from_slice(piece)))
            .collect();
        let mut stream = verified(root, Box::pin(futures::stream::iter(pieces)));
        let mut out = Vec::new();
        while let Some(piece) = stream.next().await {
            out.extend_from_slice(&piece?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn a_complete_car_passes_unchanged() {
        let (root, blocks) = dag();
        let bytes = car(root, &blocks).await;
        assert_eq!(pass(root, bytes.clone()).await.unwrap(), bytes);
    }

    #[tokio::test]
    async fn a_car_missing_its_last_block_fails() {
        let (root, blocks) = dag();
        let bytes = car(root, &blocks[..blocks.len() - 1]).await;
        let error = pass(root, bytes).await.unwrap_err().to_string();
        assert!(error.contains("without 1 linked blocks"), "{error}");
    }

    #[tokio::test]
    async fn a_car_cut_inside_a_block_fails() {
        let (root, blocks) = dag();
        let mut bytes = car(root, &blocks).await;
        bytes.truncate(bytes.len() - 10);
        let error = pass(root, bytes).await.unwrap_err().to_string();
        assert!(error.contains("inside a section"), "{error}");
    }

    #[tokio::test]
    async fn a_corrupt_or_foreign_block_fails() {
        let (root, mut blocks) = dag();
        let last = blocks.len() - 1;
        blocks[last].1[0] ^= 1;
        let error = pass(root, car(root, &blocks).await)
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("does not match its CID"), "{error}");

        let (root, mut blocks) = dag();
        let stranger = b"not in this DAG".to_vec();
        blocks.push((crate::blobs::unixfs::cid_of(0x55, &stranger), stranger));
        let error = pass(root, car(root, &blocks).await)
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("not linked from the DAG"), "{error}");
    }
}
