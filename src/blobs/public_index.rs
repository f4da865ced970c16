//! The registry's public index as UnixFS directories (docs/federation.md): every published
//! image under `<repository path>:<tag>`, computed without a node.
//!
//! Repository `team/app` tagged `v1` is the path `team/app:v1`: a directory per repository
//! path component, and in the last one's parent an entry `<component>:<tag>` linking the
//! image layout. A repository component never contains `:`, so the entries of one
//! repository's tags never collide with another repository's directory (`team/app` tagged
//! `x` and repository `team/app/x` are `team/app:x` and `team/app/x:…`): a name with `:` is
//! an image, a name without a directory.
//!
//! Directories are plain UnixFS directories (no HAMT sharding): what a reader of the index
//! needs is that every block is checked against its CID, not that another importer would
//! compute the same root. A directory's node is kept under [`MAX_DIRECTORY_BYTES`] so every
//! node travels as one block over bitswap and `block/put`; a repository with more tags than
//! that holds lists the first ones in name order, and the others are counted as omitted.

use std::collections::BTreeMap;

use bytes::Bytes;
use cid::Cid;

use super::unixfs;

/// The largest directory node written: Kubo's `block/put` takes blocks up to 1 MiB without
/// `--allow-big-block`, and bitswap moves blocks up to 2 MiB.
pub const MAX_DIRECTORY_BYTES: usize = 1 << 20;

/// Bytes a link takes in a dag-pb node besides its name and CID: field tags, lengths and
/// the `Tsize` varint, with room to spare.
const LINK_OVERHEAD: usize = 24;

/// One published image: where it goes in the index and its layout's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub repository: String,
    pub tag: String,
    pub layout: Cid,
    /// The layout's cumulative DAG size (its link's `Tsize`).
    pub dag_size: u64,
}

/// A computed index: its root, every directory block (children before parents, the root
/// last), how many images it lists and how many did not fit their directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    pub root: Cid,
    pub blocks: Vec<(Cid, Bytes)>,
    pub images: usize,
    pub omitted: usize,
}

#[derive(Default)]
struct Directory {
    directories: BTreeMap<String, Directory>,
    images: BTreeMap<String, (Cid, u64)>,
}

/// The index of `entries` (an empty directory when there are none).
pub fn build(entries: impl IntoIterator<Item = Entry>) -> Index {
    let mut top = Directory::default();
    for entry in entries {
        let mut components: Vec<&str> = entry.repository.split('/').collect();
        let Some(last) = components.pop() else {
            continue;
        };
        let mut directory = &mut top;
        for component in components {
            directory = directory
                .directories
                .entry(component.to_owned())
                .or_default();
        }
        directory.images.insert(
            format!("{last}:{}", entry.tag),
            (entry.layout, entry.dag_size),
        );
    }
    let mut index = Index {
        root: Cid::default(),
        blocks: Vec::new(),
        images: 0,
        omitted: 0,
    };
    let (root, _) = encode(top, &mut index);
    index.root = root;
    index
}

/// Encodes `directory` after its subdirectories; returns its CID and cumulative size.
fn encode(directory: Directory, index: &mut Index) -> (Cid, u64) {
    let mut links = Vec::new();
    for (name, child) in directory.directories {
        let (cid, size) = encode(child, index);
        links.push((name, cid, size));
    }
    // Subdirectories first (each is a whole repository subtree), then as many images as fit.
    let mut budget = MAX_DIRECTORY_BYTES.saturating_sub(64);
    for (name, cid, _) in &links {
        budget = budget.saturating_sub(link_bytes(name, cid));
    }
    for (name, (cid, size)) in directory.images {
        let bytes = link_bytes(&name, &cid);
        if bytes > budget {
            index.omitted += 1;
            continue;
        }
        budget -= bytes;
        index.images += 1;
        links.push((name, cid, size));
    }
    let (cid, bytes, size) = unixfs::directory_node(&links);
    index.blocks.push((cid, bytes));
    (cid, size)
}

fn link_bytes(name: &str, cid: &Cid) -> usize {
    name.len() + cid.encoded_len() + LINK_OVERHEAD
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blobs::kubo::RAW_CODEC;

    fn entry(repository: &str, tag: &str) -> Entry {
        Entry {
            repository: repository.into(),
            tag: tag.into(),
            layout: unixfs::cid_of(RAW_CODEC, format!("{repository}:{tag}").as_bytes()),
            dag_size: 100,
        }
    }

    /// The index as (path, layout) pairs, read back from its blocks.
    fn paths(index: &Index) -> Vec<(String, Cid)> {
        let blocks: BTreeMap<Cid, Bytes> = index.blocks.iter().cloned().collect();
        let mut found = Vec::new();
        let mut pending = vec![(String::new(), index.root)];
        while let Some((prefix, cid)) = pending.pop() {
            let links = unixfs::directory_links(&blocks[&cid]).unwrap();
            for (name, child) in links {
                let path = format!("{prefix}{name}");
                if name.contains(':') {
                    found.push((path, child));
                } else {
                    pending.push((format!("{path}/"), child));
                }
            }
        }
        found.sort();
        found
    }

    #[test]
    fn images_are_named_by_repository_path_and_tag_without_collisions() {
        let entries = vec![
            entry("team/app", "v1"),
            entry("team/app", "x"),
            entry("team/app/x", "latest"),
            entry("alpine", "3"),
        ];
        let index = build(entries.clone());
        let mut expected: Vec<(String, Cid)> = entries
            .iter()
            .map(|e| (format!("{}:{}", e.repository, e.tag), e.layout))
            .collect();
        expected.sort();
        assert_eq!(paths(&index), expected);
        assert_eq!((index.images, index.omitted), (4, 0));
        assert_eq!(index.blocks.last().unwrap().0, index.root);
        for (cid, bytes) in &index.blocks {
            assert_eq!(unixfs::names_block(cid, bytes), Some(true));
        }
        // The same images in another order: the same root.
        let mut reversed = entries;
        reversed.reverse();
        assert_eq!(build(reversed).root, index.root);
    }

    #[test]
    fn another_layout_gives_another_root_and_no_images_an_empty_directory() {
        let a = build(vec![entry("app", "v1")]);
        let mut moved = entry("app", "v1");
        moved.layout = unixfs::cid_of(RAW_CODEC, b"another");
        assert_ne!(build(vec![moved]).root, a.root);
        let empty = build(Vec::new());
        assert_eq!(
            empty.root.to_string(),
            // What `ipfs object new unixfs-dir` answers, as CIDv1.
            "bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354"
        );
    }

    #[test]
    fn a_directory_too_large_for_one_block_lists_what_fits() {
        let tags: Vec<Entry> = (0..40_000)
            .map(|i| entry("big", &format!("tag-{i:06}")))
            .collect();
        let index = build(tags);
        let root = &index.blocks.last().unwrap().1;
        assert!(root.len() <= MAX_DIRECTORY_BYTES, "{}", root.len());
        assert!(index.omitted > 0);
        assert_eq!(paths(&index).len(), index.images);
        assert_eq!(index.images + index.omitted, 40_000);
        // The first tags in name order are the ones kept.
        assert_eq!(paths(&index)[0].0, "big:tag-000000");
    }
}
