//! The DAG builder (`blobs::unixfs`) against a real IPFS node: for the same bytes and import
//! profile it must compute exactly the root CID the node's importer returns.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::kubo::node_only_hash;
use ipfs_registry::blobs::kubo::KuboStore;
use ipfs_registry::blobs::unixfs::{Block, DagBuilder};
use ipfs_registry::blobs::{BlobStore, ImportProfile};

fn store(chunk_size: u32) -> KuboStore {
    common::kubo::store(Duration::from_secs(60), ImportProfile { chunk_size })
}

/// Deterministic bytes that differ per `seed` and per run (so the node has not seen them).
fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    common::pseudo_random(seed ^ common::unique_seed(), len)
}

fn build(chunk_size: u32, data: &Bytes) -> (ipfs_registry::blobs::unixfs::Dag, Vec<Block>) {
    let mut builder = DagBuilder::new(chunk_size);
    let mut blocks = Vec::new();
    for piece in data.chunks(65_521) {
        builder.push(piece, &mut blocks);
    }
    let dag = builder.finish(&mut blocks);
    assert_eq!(dag.file_size, data.len() as u64);
    (dag, blocks)
}

async fn assert_same_cid_as_the_node(chunk_size: u32, len: usize) {
    let data = Bytes::from(pseudo_random(len as u64 ^ u64::from(chunk_size), len));
    let (dag, blocks) = build(chunk_size, &data);

    let store = store(chunk_size);
    let stored = store
        .add(common::odd_pieces(&data))
        .await
        .expect("add to the node");
    assert_eq!(
        dag.root, stored.cid,
        "{len} bytes in {chunk_size}-byte chunks: computed root differs from the node's"
    );
    // Every interior node we would serve is byte-identical to the node's block.
    let nodes: Vec<_> = blocks
        .iter()
        .filter_map(|b| match b {
            Block::Node { cid, bytes } => Some((cid, bytes)),
            Block::Leaf { .. } => None,
        })
        .take(3)
        .collect();
    for (cid, bytes) in nodes {
        let url = common::ipfs_url().join("api/v0/block/get").unwrap();
        let answer = reqwest::Client::new()
            .post(url)
            .query(&[("arg", cid.to_string()), ("timeout", "10s".into())])
            .send()
            .await
            .expect("block/get");
        assert!(answer.status().is_success(), "block/get {cid}");
        assert_eq!(&answer.bytes().await.unwrap(), bytes, "block {cid}");
    }
    store.unpin(&stored.cid).await.expect("unpin");
}

#[tokio::test]
async fn empty_input() {
    assert_same_cid_as_the_node(262_144, 0).await;
}

#[tokio::test]
async fn one_byte() {
    assert_same_cid_as_the_node(262_144, 1).await;
}

#[tokio::test]
async fn exactly_one_chunk() {
    assert_same_cid_as_the_node(262_144, 262_144).await;
}

#[tokio::test]
async fn one_chunk_and_one_byte() {
    assert_same_cid_as_the_node(262_144, 262_145).await;
}

#[tokio::test]
async fn fifty_mib() {
    assert_same_cid_as_the_node(262_144, 50 * 1024 * 1024).await;
}

#[tokio::test]
async fn one_mib_chunks() {
    assert_same_cid_as_the_node(1024 * 1024, 5 * 1024 * 1024 + 3).await;
}

/// 1 KiB chunks: 174 leaves fill a node exactly; one more leaf makes a second level, and
/// 174 × 174 + 1 leaves a third.
#[tokio::test]
async fn tree_levels_with_small_chunks() {
    assert_same_cid_as_the_node(1024, 174 * 1024).await;
    assert_same_cid_as_the_node(1024, 174 * 1024 + 1).await;
    let len = 174 * 174 * 1024 + 1;
    let data = Bytes::from(pseudo_random(3, len));
    let (dag, _) = build(1024, &data);
    assert_eq!(
        dag.root,
        node_only_hash(data, &ImportProfile { chunk_size: 1024 }).await
    );
}

/// The same bytes get the same CID on every node whatever its import defaults: 175 chunks
/// of 256 KiB (one more than fit under one node with 174 links), a fixed pattern, and the
/// root every importer with the recorded profile computes. Kubo 0.35+ configured with
/// `Import.UnixFSFileMaxLinks = 1024` would put all 175 leaves under one node and answer
/// another root, unless `add` sends `max-file-links=174`, which the profile does.
#[tokio::test]
async fn a_175_chunk_blob_has_its_recorded_cid() {
    const ROOT: &str = "bafybeie73j3heycdgkdsehpoe6cxh2y3iywtf6djpi3dzqrywevvjmazny";
    let profile = ImportProfile::default();
    let len = 175 * profile.chunk_size as usize;
    let data = Bytes::from((0..len).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    assert!(profile
        .add_params()
        .contains(&("max-file-links", "174".to_owned())));
    let (dag, _) = build(profile.chunk_size, &data);
    let node_root = node_only_hash(data, &profile).await;
    assert_eq!(dag.root, node_root, "our importer and the node's agree");
    assert_eq!(dag.root.to_string(), ROOT);
}
