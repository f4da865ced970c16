//! An image as an OCI Image Layout in UnixFS: the directory `oci-layout`, `index.json`,
//! `blobs/<algorithm>/<hex>`, computed without a node. Its root is the image CID.
//!
//! Deterministic by construction, so every registry holding the same image computes the
//! same root: the two JSON files are serialised one fixed way ([`index_json`],
//! [`OCI_LAYOUT`]); manifests are files built by [`DagBuilder`] under the import profile;
//! configs and layers are linked by the CIDs they were stored under (never added again);
//! directories are plain UnixFS directories as Kubo's and js-ipfs's importers write them
//! ([`unixfs::directory_node`]).
//!
//! Importers switch a directory to a HAMT shard past a threshold (js-ipfs 0.66: 1000
//! entries; Kubo: an estimated 256 KiB of names and CIDs). A layout whose directory would
//! cross either is refused ([`LayoutError::TooManyBlobs`]) rather than given a CID that
//! another importer would not agree with.

use std::collections::BTreeMap;

use bytes::Bytes;
use cid::Cid;
use serde::Serialize;

use super::unixfs::{self, Block, DagBuilder};
use crate::oci::Digest;

/// The `oci-layout` file, byte for byte.
pub const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// The annotation naming a manifest of `index.json` (what `skopeo copy oci:<dir>:<tag>`
/// looks up).
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// js-ipfs 0.66 shards a directory of this many entries.
pub const MAX_DIRECTORY_ENTRIES: usize = 999;

/// Kubo shards a directory whose estimated size (names plus CIDs of its links) reaches this.
pub const HAMT_SHARDING_SIZE: usize = 256 * 1024;

/// One file of `blobs/<algorithm>/`.
#[derive(Debug, Clone)]
pub enum Content {
    /// Bytes to store as a file under the import profile (a manifest).
    Bytes(Bytes),
    /// A DAG already stored (a config or layer): its root and cumulative size.
    Stored { cid: Cid, dag_size: u64 },
}

/// What a layout is made of.
#[derive(Debug, Clone)]
pub struct Image {
    /// The tag `index.json` names the manifest by.
    pub tag: String,
    /// The tagged manifest's media type, digest and size, as its descriptor in `index.json`.
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    /// Every blob of the layout by digest: the tagged manifest, child manifests, configs
    /// and layers.
    pub blobs: BTreeMap<Digest, Content>,
}

/// A computed layout: its root and the blocks it adds to what is already stored, each
/// block once, children before parents, the root last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub root: Cid,
    pub blocks: Vec<(Cid, Bytes)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error(
        "the image has {entries} blobs of one algorithm: a directory that large would be a \
         HAMT shard, which layouts are not built as (at most {MAX_DIRECTORY_ENTRIES} entries \
         and {HAMT_SHARDING_SIZE} bytes of names and CIDs)"
    )]
    TooManyBlobs { entries: usize },
    #[error("the tagged manifest {0} is not among the layout's blobs")]
    ManifestMissing(Digest),
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Index<'a> {
    schema_version: u32,
    media_type: &'a str,
    manifests: [IndexEntry<'a>; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IndexEntry<'a> {
    media_type: &'a str,
    digest: String,
    size: u64,
    annotations: BTreeMap<&'a str, &'a str>,
}

/// `index.json`: compact JSON, keys in this order: `schemaVersion`, `mediaType`,
/// `manifests`; the one descriptor's `mediaType`, `digest`, `size`, `annotations` (only
/// [`REF_NAME`]). Strings escaped as serde_json does (only `"`, `\` and control characters).
pub fn index_json(media_type: &str, digest: &Digest, size: u64, tag: &str) -> Vec<u8> {
    let index = Index {
        schema_version: 2,
        media_type: crate::oci::media::OCI_INDEX,
        manifests: [IndexEntry {
            media_type,
            digest: digest.to_string(),
            size,
            annotations: BTreeMap::from([(REF_NAME, tag)]),
        }],
    };
    // Serialising plain structs of strings and numbers cannot fail.
    serde_json::to_vec(&index).unwrap_or_default()
}

/// Whether an encoded root block is the root of an image layout: a UnixFS directory of
/// exactly `blobs`, `index.json` and `oci-layout`.
pub fn is_layout_root(block: &[u8]) -> bool {
    unixfs::directory_entries(block)
        .is_some_and(|names| names == ["blobs", "index.json", "oci-layout"])
}

/// Computes the layout of `image` with files cut in `chunk_size` chunks.
pub fn build(image: &Image, chunk_size: u32) -> Result<Layout, LayoutError> {
    if !image.blobs.contains_key(&image.digest) {
        return Err(LayoutError::ManifestMissing(image.digest.clone()));
    }
    let mut blocks = Blocks::default();
    let mut by_algorithm: BTreeMap<&str, Vec<(String, Cid, u64)>> = BTreeMap::new();
    for (digest, content) in &image.blobs {
        let (cid, size) = match content {
            Content::Bytes(bytes) => blocks.file(bytes, chunk_size),
            Content::Stored { cid, dag_size } => (*cid, *dag_size),
        };
        by_algorithm
            .entry(digest.algorithm().name())
            .or_default()
            .push((digest.hex().to_owned(), cid, size));
    }
    let mut algorithms = Vec::new();
    for (algorithm, entries) in by_algorithm {
        let (cid, size) = blocks.directory(&entries)?;
        algorithms.push((algorithm.to_owned(), cid, size));
    }
    let (blobs, blobs_size) = blocks.directory(&algorithms)?;
    let index = index_json(&image.media_type, &image.digest, image.size, &image.tag);
    let (index, index_size) = blocks.file(&index, chunk_size);
    let (oci_layout, oci_layout_size) = blocks.file(OCI_LAYOUT, chunk_size);
    let (root, _) = blocks.directory(&[
        ("blobs".to_owned(), blobs, blobs_size),
        ("index.json".to_owned(), index, index_size),
        ("oci-layout".to_owned(), oci_layout, oci_layout_size),
    ])?;
    Ok(Layout {
        root,
        blocks: blocks.list,
    })
}

/// New blocks in order, each once.
#[derive(Default)]
struct Blocks {
    list: Vec<(Cid, Bytes)>,
    seen: std::collections::HashSet<Cid>,
}

impl Blocks {
    fn push(&mut self, cid: Cid, bytes: Bytes) {
        if self.seen.insert(cid) {
            self.list.push((cid, bytes));
        }
    }

    /// A file's DAG: its root and cumulative size.
    fn file(&mut self, content: &[u8], chunk_size: u32) -> (Cid, u64) {
        let mut builder = DagBuilder::new(chunk_size);
        let mut out = Vec::new();
        builder.push(content, &mut out);
        let dag = builder.finish(&mut out);
        let mut root_size = 0;
        for block in out {
            let (cid, bytes) = match block {
                Block::Leaf { cid, offset, len } => {
                    let range = offset as usize..(offset + len) as usize;
                    (cid, Bytes::copy_from_slice(&content[range]))
                }
                Block::Node { cid, bytes } => (cid, bytes),
            };
            if cid == dag.root {
                // Our own encoding: its links all carry sizes.
                root_size = unixfs::cumulative_size(&cid, &bytes).unwrap_or_default();
            }
            self.push(cid, bytes);
        }
        (dag.root, root_size)
    }

    fn directory(&mut self, entries: &[(String, Cid, u64)]) -> Result<(Cid, u64), LayoutError> {
        let estimate: usize = entries
            .iter()
            .map(|(name, cid, _)| name.len() + cid.encoded_len())
            .sum();
        if entries.len() > MAX_DIRECTORY_ENTRIES || estimate >= HAMT_SHARDING_SIZE {
            return Err(LayoutError::TooManyBlobs {
                entries: entries.len(),
            });
        }
        let (cid, bytes, size) = unixfs::directory_node(entries);
        self.push(cid, bytes);
        Ok((cid, size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blobs::kubo::{DAG_PB_CODEC, RAW_CODEC};

    fn digest(data: &[u8]) -> Digest {
        Digest::sha256_of(data)
    }

    fn image(manifest: &[u8], layers: &[(Cid, u64)]) -> Image {
        let mut blobs = BTreeMap::new();
        blobs.insert(
            digest(manifest),
            Content::Bytes(Bytes::copy_from_slice(manifest)),
        );
        for (i, (cid, dag_size)) in layers.iter().enumerate() {
            blobs.insert(
                digest(format!("layer {i}").as_bytes()),
                Content::Stored {
                    cid: *cid,
                    dag_size: *dag_size,
                },
            );
        }
        Image {
            tag: "v1".into(),
            media_type: crate::oci::media::OCI_MANIFEST.into(),
            digest: digest(manifest),
            size: manifest.len() as u64,
            blobs,
        }
    }

    #[test]
    fn index_json_is_compact_with_a_fixed_key_order() {
        let d = digest(b"m");
        let json = index_json("application/vnd.oci.image.manifest.v1+json", &d, 7, "a\"b");
        assert_eq!(
            String::from_utf8(json).unwrap(),
            format!(
                "{{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\
                 \"manifests\":[{{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\
                 \"digest\":\"{d}\",\"size\":7,\"annotations\":\
                 {{\"org.opencontainers.image.ref.name\":\"a\\\"b\"}}}}]}}"
            )
        );
    }

    #[test]
    fn the_same_image_gives_the_same_root_and_another_tag_another() {
        let layer = unixfs::cid_of(RAW_CODEC, b"layer");
        let a = build(&image(b"{}", &[(layer, 5)]), 1024).unwrap();
        let b = build(&image(b"{}", &[(layer, 5)]), 1024).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.blocks.last().unwrap().0, a.root);
        assert_eq!(a.root.codec(), DAG_PB_CODEC);
        assert!(is_layout_root(&a.blocks.last().unwrap().1));
        assert!(!is_layout_root(&a.blocks[0].1));
        // The layer is linked, not added.
        assert!(a.blocks.iter().all(|(cid, _)| *cid != layer));
        let mut other = image(b"{}", &[(layer, 5)]);
        other.tag = "v2".into();
        assert_ne!(build(&other, 1024).unwrap().root, a.root);
    }

    #[test]
    fn every_block_is_named_by_its_cid() {
        let manifest: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let layout = build(&image(&manifest, &[]), 1024).unwrap();
        // A 5000-byte manifest in 1 KiB chunks (five leaves and a node), two directories,
        // index.json, oci-layout and the root.
        assert_eq!(layout.blocks.len(), 6 + 2 + 2 + 1);
        for (cid, bytes) in &layout.blocks {
            assert_eq!(unixfs::names_block(cid, bytes), Some(true));
        }
    }

    #[test]
    fn too_many_blobs_are_refused_not_sharded() {
        let layers: Vec<(Cid, u64)> = (0..MAX_DIRECTORY_ENTRIES as u32)
            .map(|i| (unixfs::cid_of(RAW_CODEC, &i.to_be_bytes()), 4))
            .collect();
        // With the manifest: one entry more than a flat directory may hold.
        assert_eq!(
            build(&image(b"{}", &layers), 1024),
            Err(LayoutError::TooManyBlobs {
                entries: MAX_DIRECTORY_ENTRIES + 1
            })
        );
        assert!(build(&image(b"{}", &layers[1..]), 1024).is_ok());
    }

    #[test]
    fn a_missing_tagged_manifest_is_refused() {
        let mut image = image(b"{}", &[]);
        image.blobs.clear();
        assert!(matches!(
            build(&image, 1024),
            Err(LayoutError::ManifestMissing(_))
        ));
    }
}
