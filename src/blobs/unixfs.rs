//! The UnixFS DAG of a blob under our import profile, computed without an IPFS node:
//! fixed-size chunks as raw-codec CIDv1 leaves, sha2-256, and the balanced layout with at
//! most [`MAX_LINKS`] links per node — the layout Kubo's (and js-ipfs's) importer builds for
//! `add --cid-version=1 --raw-leaves --chunker=size-N`. The same bytes therefore get the
//! same root CID here as on any node, which is what lets a store that keeps the bytes itself
//! serve them by CID.
//!
//! Bytes are pushed in as they stream; the builder keeps at most one chunk and one pending
//! link list per tree level, and hands back every block it completes: leaves as a range of
//! the input (the caller already holds those bytes), interior nodes as encoded dag-pb.

use bytes::{Bytes, BytesMut};
use cid::Cid;
use ipld_dagpb::{PbLink, PbNode};
use multihash::Multihash;
use prost::Message;
use sha2::{Digest, Sha256};

use super::kubo::{DAG_PB_CODEC, RAW_CODEC, SHA2_256};

/// Links per interior node of the balanced layout (Kubo's `DefaultLinksPerBlock`: what fits
/// a 256 KiB node with CIDv0 links and their sizes).
pub const MAX_LINKS: usize = 174;

/// One block of a blob's DAG, in the order the builder completes them (children before
/// their parent; the root last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block {
    /// A raw leaf: `len` bytes of the input at `offset`.
    Leaf { cid: Cid, offset: u64, len: u64 },
    /// An interior dag-pb node, encoded.
    Node { cid: Cid, bytes: Bytes },
}

impl Block {
    pub fn cid(&self) -> &Cid {
        match self {
            Block::Leaf { cid, .. } | Block::Node { cid, .. } => cid,
        }
    }
}

/// A finished DAG: its root and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dag {
    pub root: Cid,
    /// Bytes of file content (the blob's size).
    pub file_size: u64,
}

/// A child as its parent records it.
#[derive(Debug, Clone)]
struct Link {
    cid: Cid,
    /// Content bytes below the link (UnixFS `blocksizes` entry).
    file_size: u64,
    /// Encoded bytes of the whole subtree (dag-pb `Tsize`).
    dag_size: u64,
}

/// Streams bytes into a balanced UnixFS DAG. See the module documentation.
#[derive(Debug)]
pub struct DagBuilder {
    chunk_size: usize,
    chunk: BytesMut,
    /// Bytes of input turned into leaves so far.
    offset: u64,
    /// `levels[0]` holds leaves not yet under a node, `levels[1]` depth-1 nodes, and so on.
    levels: Vec<Vec<Link>>,
}

impl DagBuilder {
    /// `chunk_size` is the import profile's fixed chunk size (validated by the profile).
    pub fn new(chunk_size: u32) -> DagBuilder {
        let chunk_size = chunk_size.max(1) as usize;
        DagBuilder {
            chunk_size,
            chunk: BytesMut::with_capacity(chunk_size),
            offset: 0,
            levels: Vec::new(),
        }
    }

    /// Takes the next input bytes; completed blocks are appended to `out`.
    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<Block>) {
        while !data.is_empty() {
            let take = (self.chunk_size - self.chunk.len()).min(data.len());
            self.chunk.extend_from_slice(&data[..take]);
            data = &data[take..];
            // A full chunk becomes a leaf only once more input shows it is not the last one:
            // the last chunk decides whether the root is a leaf or a node.
            if self.chunk.len() == self.chunk_size && !data.is_empty() {
                self.flush_leaf(out);
            }
        }
    }

    /// Takes the next leaf whole, already hashed: a leaf of another DAG of this profile,
    /// so a blob made of stored blobs whose sizes are multiples of the chunk size gets its
    /// DAG without its bytes being read again. Only between whole leaves (never after a
    /// partial chunk given to [`DagBuilder::push`]).
    pub fn push_leaf(&mut self, cid: Cid, len: u64, out: &mut Vec<Block>) {
        if !self.chunk.is_empty() {
            self.flush_leaf(out);
        }
        self.record_leaf(cid, len, out);
    }

    /// Ends the input: completes the remaining nodes (appended to `out`, root last) and
    /// returns the root.
    pub fn finish(mut self, out: &mut Vec<Block>) -> Dag {
        // An empty input is one empty raw block, as the node imports it.
        if !self.chunk.is_empty() || self.offset == 0 {
            self.flush_leaf(out);
        }
        let file_size = self.offset;
        let mut level = 0;
        loop {
            let is_top = self.levels[level + 1..].iter().all(Vec::is_empty);
            if is_top && self.levels[level].len() == 1 {
                let root = self.levels[level][0].cid;
                return Dag { root, file_size };
            }
            let links = std::mem::take(&mut self.levels[level]);
            if !links.is_empty() {
                let parent = node(&links, out);
                self.add_link(level + 1, parent, out);
            }
            level += 1;
        }
    }

    fn flush_leaf(&mut self, out: &mut Vec<Block>) {
        let bytes = self.chunk.split().freeze();
        let len = bytes.len() as u64;
        let cid = cid_of(RAW_CODEC, &bytes);
        self.record_leaf(cid, len, out);
    }

    /// Appends a leaf of `len` input bytes at the current offset and links it in.
    fn record_leaf(&mut self, cid: Cid, len: u64, out: &mut Vec<Block>) {
        out.push(Block::Leaf {
            cid,
            offset: self.offset,
            len,
        });
        self.offset += len;
        self.add_link(
            0,
            Link {
                cid,
                file_size: len,
                dag_size: len,
            },
            out,
        );
    }

    /// Adds a child at `level`. A full level is first closed into one node a level up, so
    /// nodes fill left to right and every leaf ends at the same depth (the balanced layout).
    fn add_link(&mut self, level: usize, link: Link, out: &mut Vec<Block>) {
        if self.levels.len() <= level + 1 {
            self.levels.resize_with(level + 2, Vec::new);
        }
        if self.levels[level].len() == MAX_LINKS {
            let links = std::mem::take(&mut self.levels[level]);
            let parent = node(&links, out);
            self.add_link(level + 1, parent, out);
        }
        self.levels[level].push(link);
    }
}

/// The DAG of a blob made of whole leaves of other DAGs of this profile (see
/// [`DagBuilder::push_leaf`]): its interior nodes and root, without reading any leaf.
pub fn dag_over(chunk_size: u32, leaves: &[(Cid, u64)]) -> (Dag, Vec<Block>) {
    let mut builder = DagBuilder::new(chunk_size);
    let mut blocks = Vec::new();
    for (cid, len) in leaves {
        builder.push_leaf(*cid, *len, &mut blocks);
    }
    let dag = builder.finish(&mut blocks);
    (dag, blocks)
}

/// The leaves of stored parts, joined, when they can be the leaves of the joined blob:
/// every leaf of every part but the last is a whole chunk (the importer cuts the joined
/// bytes at multiples of `chunk_size`, so a short leaf anywhere else would be cut
/// differently). `None` otherwise.
pub fn aligned_leaves(parts: Vec<Vec<(Cid, u64)>>, chunk_size: u64) -> Option<Vec<(Cid, u64)>> {
    let count = parts.len();
    let mut all = Vec::new();
    for (i, leaves) in parts.into_iter().enumerate() {
        if i + 1 < count && leaves.iter().any(|(_, len)| *len != chunk_size) {
            return None;
        }
        all.extend(leaves);
    }
    Some(all)
}

/// The children of an encoded UnixFS file node, each with the file bytes below it (the
/// node's `blocksizes`). Refuses nodes that are not files or that carry bytes themselves
/// (a layout without raw leaves), whose links would not be the whole content.
pub fn file_links(block: &[u8]) -> Result<Vec<(Cid, u64)>, String> {
    let node = PbNode::from_bytes(Bytes::copy_from_slice(block)).map_err(|e| e.to_string())?;
    let data = node.data.ok_or("no UnixFS data")?;
    let data = UnixFsData::decode(data).map_err(|e| e.to_string())?;
    if data.r#type != DataType::File as i32 {
        return Err(format!("UnixFS type {}, not a file", data.r#type));
    }
    if data.data.as_ref().is_some_and(|d| !d.is_empty()) {
        return Err("the node carries file bytes itself".into());
    }
    if data.block_sizes.len() != node.links.len() {
        return Err(format!(
            "{} links but {} block sizes",
            node.links.len(),
            data.block_sizes.len()
        ));
    }
    Ok(node
        .links
        .into_iter()
        .map(|link| link.cid)
        .zip(data.block_sizes)
        .collect())
}

/// Encodes an interior file node over `links`, appends it to `out` and returns its link.
fn node(links: &[Link], out: &mut Vec<Block>) -> Link {
    let file_size = links.iter().map(|l| l.file_size).sum();
    let data = UnixFsData {
        r#type: DataType::File as i32,
        data: None,
        file_size: Some(file_size),
        block_sizes: links.iter().map(|l| l.file_size).collect(),
    };
    let pb = PbNode {
        links: links
            .iter()
            .map(|l| PbLink {
                cid: l.cid,
                // The importer writes an empty name, and it is part of the encoded bytes.
                name: Some(String::new()),
                size: Some(l.dag_size),
            })
            .collect(),
        data: Some(Bytes::from(data.encode_to_vec())),
    };
    let bytes = Bytes::from(pb.into_bytes());
    let cid = cid_of(DAG_PB_CODEC, &bytes);
    let dag_size = bytes.len() as u64 + links.iter().map(|l| l.dag_size).sum::<u64>();
    out.push(Block::Node {
        cid,
        bytes: bytes.clone(),
    });
    Link {
        cid,
        file_size,
        dag_size,
    }
}

/// Encodes a plain (non-sharded) UnixFS directory node over `entries` (name, child CID,
/// the child's cumulative DAG size), as Kubo's and js-ipfs's importers write one: links
/// sorted by name bytewise, each link's `Tsize` the child's cumulative size, `Data` a bare
/// UnixFS Directory. Returns its CID, bytes and its own cumulative size.
pub fn directory_node(entries: &[(String, Cid, u64)]) -> (Cid, Bytes, u64) {
    let mut sorted: Vec<&(String, Cid, u64)> = entries.iter().collect();
    sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let data = UnixFsData {
        r#type: DataType::Directory as i32,
        data: None,
        file_size: None,
        block_sizes: Vec::new(),
    };
    let pb = PbNode {
        links: sorted
            .iter()
            .map(|(name, cid, size)| PbLink {
                cid: *cid,
                name: Some(name.clone()),
                size: Some(*size),
            })
            .collect(),
        data: Some(Bytes::from(data.encode_to_vec())),
    };
    let bytes = Bytes::from(pb.into_bytes());
    let cid = cid_of(DAG_PB_CODEC, &bytes);
    let dag_size = bytes.len() as u64 + sorted.iter().map(|(_, _, size)| size).sum::<u64>();
    (cid, bytes, dag_size)
}

/// The cumulative DAG size of a stored root (what a parent directory records as the link's
/// `Tsize`): a raw block's length; for a dag-pb node, its length plus its links' `Tsize`s,
/// which the node records for its children.
pub fn cumulative_size(cid: &Cid, block: &[u8]) -> Result<u64, String> {
    if cid.codec() == RAW_CODEC {
        return Ok(block.len() as u64);
    }
    if cid.codec() != DAG_PB_CODEC {
        return Err(format!(
            "{cid}: codec {:#x} is neither raw nor dag-pb",
            cid.codec()
        ));
    }
    let node = PbNode::from_bytes(Bytes::copy_from_slice(block)).map_err(|e| e.to_string())?;
    let mut size = block.len() as u64;
    for link in &node.links {
        let tsize = link
            .size
            .ok_or_else(|| format!("{cid}: a link to {} has no Tsize", link.cid))?;
        size = size
            .checked_add(tsize)
            .ok_or_else(|| format!("{cid}: cumulative size overflows"))?;
    }
    Ok(size)
}

/// Whether an encoded dag-pb block is a UnixFS file node (what `add` makes of a file's
/// bytes), not a directory, a HAMT shard, a symlink or something else.
pub fn is_file_node(block: &[u8]) -> bool {
    let Ok(node) = PbNode::from_bytes(Bytes::copy_from_slice(block)) else {
        return false;
    };
    node.data
        .and_then(|data| UnixFsData::decode(data).ok())
        .is_some_and(|data| {
            data.r#type == DataType::File as i32 || data.r#type == DataType::Raw as i32
        })
}

/// The entry names of an encoded UnixFS directory node; `None` for anything else (a file
/// node, or not UnixFS).
pub fn directory_entries(block: &[u8]) -> Option<Vec<String>> {
    let node = PbNode::from_bytes(Bytes::copy_from_slice(block)).ok()?;
    let data = UnixFsData::decode(node.data?).ok()?;
    if data.r#type != DataType::Directory as i32 {
        return None;
    }
    node.links.into_iter().map(|link| link.name).collect()
}

/// The entries (name, child CID as v1) of an encoded plain UnixFS directory node; `None`
/// for anything else (a file, a HAMT shard, not UnixFS, an unnamed link).
pub fn directory_links(block: &[u8]) -> Option<Vec<(String, Cid)>> {
    let node = PbNode::from_bytes(Bytes::copy_from_slice(block)).ok()?;
    let data = UnixFsData::decode(node.data?).ok()?;
    if data.r#type != DataType::Directory as i32 {
        return None;
    }
    node.links
        .into_iter()
        .map(|link| Some((link.name?, as_v1(&link.cid))))
        .collect()
}

/// Whether `block` is the block `cid` names (CIDv0 or v1 alike): `None` when the CID's hash
/// function is not sha2-256, the only one this registry stores blocks under.
pub fn names_block(cid: &Cid, block: &[u8]) -> Option<bool> {
    (cid.hash().code() == SHA2_256).then(|| cid_of(cid.codec(), block).hash() == cid.hash())
}

/// The form blocks are stored and recorded under: CIDv1 with the same codec and multihash.
pub fn as_v1(cid: &Cid) -> Cid {
    Cid::new_v1(cid.codec(), *cid.hash())
}

/// The CIDv1 of a block under sha2-256.
pub fn cid_of(codec: u64, block: &[u8]) -> Cid {
    let digest = Sha256::digest(block);
    // A 32-byte digest always fits a multihash (its limit is 64).
    let hash = Multihash::wrap(SHA2_256, &digest).unwrap_or_default();
    Cid::new_v1(codec, hash)
}

/// The UnixFS `Data` message (proto2), declared for prost: only the fields file nodes use.
#[derive(Clone, PartialEq, prost::Message)]
struct UnixFsData {
    #[prost(enumeration = "DataType", required, tag = "1")]
    r#type: i32,
    #[prost(bytes = "vec", optional, tag = "2")]
    data: Option<Vec<u8>>,
    #[prost(uint64, optional, tag = "3")]
    file_size: Option<u64>,
    #[prost(uint64, repeated, packed = "false", tag = "4")]
    block_sizes: Vec<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
enum DataType {
    Raw = 0,
    Directory = 1,
    File = 2,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(data: &[u8], chunk_size: u32, piece: usize) -> (Dag, Vec<Block>) {
        let mut builder = DagBuilder::new(chunk_size);
        let mut blocks = Vec::new();
        for part in data.chunks(piece.max(1)) {
            builder.push(part, &mut blocks);
        }
        let dag = builder.finish(&mut blocks);
        (dag, blocks)
    }

    fn leaves(blocks: &[Block]) -> usize {
        blocks
            .iter()
            .filter(|b| matches!(b, Block::Leaf { .. }))
            .count()
    }

    /// Depth of the tree below `cid`, following first links.
    fn depth(blocks: &[Block], cid: &Cid) -> usize {
        match blocks.iter().find(|b| b.cid() == cid) {
            Some(Block::Node { bytes, .. }) => {
                let node = PbNode::from_bytes(bytes.clone()).unwrap();
                1 + depth(blocks, &node.links[0].cid)
            }
            _ => 0,
        }
    }

    #[test]
    fn golden_one_chunk_is_the_raw_block() {
        let (dag, blocks) = build(b"hello world\n", 262_144, 5);
        assert_eq!(
            dag.root.to_string(),
            "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"
        );
        assert_eq!(blocks.len(), 1);
        assert_eq!(dag.file_size, 12);
    }

    #[test]
    fn directory_entries_are_read_back_and_files_are_not_directories() {
        let child = cid_of(RAW_CODEC, b"x");
        let (_, bytes, _) =
            directory_node(&[("b".to_owned(), child, 1), ("a".to_owned(), child, 1)]);
        assert_eq!(
            directory_entries(&bytes),
            Some(vec!["a".to_owned(), "b".to_owned()])
        );
        let (_, blocks) = build(&[1u8; 3000], 1024, 100);
        let Some(Block::Node { bytes, .. }) = blocks.last() else {
            panic!("a file node")
        };
        assert_eq!(directory_entries(bytes), None);
        assert_eq!(directory_entries(b"not dag-pb"), None);
    }

    #[test]
    fn empty_input_is_one_empty_raw_block() {
        let (dag, blocks) = build(b"", 1024, 1);
        assert_eq!(dag.root.codec(), RAW_CODEC);
        assert_eq!(dag.root.hash().digest(), Sha256::digest(b"").as_slice());
        assert_eq!(
            blocks,
            vec![Block::Leaf {
                cid: dag.root,
                offset: 0,
                len: 0
            }]
        );
    }

    #[test]
    fn exactly_one_chunk_stays_raw_and_one_more_byte_makes_a_node() {
        let data = vec![7u8; 1025];
        let (dag, blocks) = build(&data[..1024], 1024, 100);
        assert_eq!(dag.root.codec(), RAW_CODEC);
        assert_eq!(blocks.len(), 1);

        let (dag, blocks) = build(&data, 1024, 100);
        assert_eq!(dag.root.codec(), DAG_PB_CODEC);
        assert_eq!(leaves(&blocks), 2);
        assert_eq!(blocks.last().unwrap().cid(), &dag.root);
        assert_eq!(dag.file_size, 1025);
    }

    #[test]
    fn the_tree_is_balanced_and_nodes_fill_left_to_right() {
        let chunk = 1024u32;
        // Full depth-1 root.
        let data = vec![1u8; MAX_LINKS * chunk as usize];
        let (dag, blocks) = build(&data, chunk, 4096);
        assert_eq!(depth(&blocks, &dag.root), 1);
        assert_eq!(blocks.len(), MAX_LINKS + 1);

        // One leaf more: a depth-2 root over a full node and a node with one leaf.
        let data = vec![1u8; MAX_LINKS * chunk as usize + 1];
        let (dag, blocks) = build(&data, chunk, 4096);
        assert_eq!(depth(&blocks, &dag.root), 2);
        let Some(Block::Node { bytes, .. }) = blocks.last() else {
            panic!("root is a node")
        };
        let root = PbNode::from_bytes(bytes.clone()).unwrap();
        assert_eq!(root.links.len(), 2);
        let sizes: Vec<u64> = root
            .links
            .iter()
            .map(|l| match blocks.iter().find(|b| b.cid() == &l.cid) {
                Some(Block::Node { bytes, .. }) => {
                    PbNode::from_bytes(bytes.clone()).unwrap().links.len() as u64
                }
                _ => 0,
            })
            .collect();
        assert_eq!(sizes, vec![MAX_LINKS as u64, 1]);
    }

    #[test]
    fn how_input_is_split_does_not_change_the_dag() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 31 % 251) as u8).collect();
        let (a, blocks_a) = build(&data, 1024, 1);
        let (b, blocks_b) = build(&data, 1024, 4093);
        let (c, _) = build(&data, 1024, data.len());
        assert_eq!(a, b);
        assert_eq!(b, c);
        assert_eq!(blocks_a, blocks_b);
    }

    #[test]
    fn leaves_cover_the_input_in_order() {
        let data = vec![3u8; 10 * 1024 + 17];
        let (_, blocks) = build(&data, 1024, 999);
        let mut next = 0;
        for block in &blocks {
            if let Block::Leaf { offset, len, cid } = block {
                assert_eq!(*offset, next);
                let bytes = &data[*offset as usize..(*offset + *len) as usize];
                assert_eq!(cid, &cid_of(RAW_CODEC, bytes));
                next += len;
            }
        }
        assert_eq!(next, data.len() as u64);
    }
}
