//! The image layout DAG (`blobs::layout`) against a real IPFS node: the root we compute,
//! with layers linked by their CIDs and cumulative sizes, must be the root the node's
//! importer gives the same directory tree added file by file.

mod common;

use std::collections::BTreeMap;

use bytes::Bytes;
use cid::Cid;
use ipfs_registry::blobs::layout::{self, Content, Image};
use ipfs_registry::blobs::unixfs::{cumulative_size, Block, DagBuilder};
use ipfs_registry::blobs::ImportProfile;
use ipfs_registry::oci::Digest;

/// A stored blob's root and cumulative size, as the registry knows them after `add`.
fn stored(data: &[u8], chunk_size: u32) -> Content {
    let mut builder = DagBuilder::new(chunk_size);
    let mut blocks = Vec::new();
    builder.push(data, &mut blocks);
    let dag = builder.finish(&mut blocks);
    let dag_size = match blocks.last() {
        Some(Block::Node { cid, bytes }) => cumulative_size(cid, bytes).unwrap(),
        _ => data.len() as u64,
    };
    Content::Stored {
        cid: dag.root,
        dag_size,
    }
}

/// The root the node's importer gives `files` (path → bytes) under a directory `layout`,
/// without storing anything.
async fn node_root(files: &BTreeMap<String, Vec<u8>>, profile: &ImportProfile) -> Cid {
    let mut form = reqwest::multipart::Form::new();
    let mut dirs = std::collections::BTreeSet::new();
    for path in files.keys() {
        let mut parts: Vec<&str> = path.split('/').collect();
        parts.pop();
        for end in 1..=parts.len() {
            dirs.insert(parts[..end].join("/"));
        }
    }
    dirs.insert(String::new());
    for dir in dirs {
        let name = if dir.is_empty() {
            "layout".to_owned()
        } else {
            format!("layout/{dir}")
        };
        let part = reqwest::multipart::Part::bytes(Vec::new())
            .file_name(name)
            .mime_str("application/x-directory")
            .unwrap();
        form = form.part("file", part);
    }
    for (path, data) in files {
        let part = reqwest::multipart::Part::bytes(data.clone())
            .file_name(format!("layout/{path}"))
            .mime_str("application/octet-stream")
            .unwrap();
        form = form.part("file", part);
    }
    let mut query = profile.add_params();
    query.extend([
        ("only-hash", "true".to_owned()),
        ("pin", "false".to_owned()),
    ]);
    let answer = reqwest::Client::new()
        .post(common::ipfs_url().join("api/v0/add").unwrap())
        .query(&query)
        .multipart(form)
        .send()
        .await
        .expect("add")
        .text()
        .await
        .expect("add answer");
    let root = answer
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).expect("json line"))
        .find(|entry| entry["Name"] == "layout")
        .unwrap_or_else(|| panic!("no entry for the directory in {answer}"));
    Cid::try_from(root["Hash"].as_str().expect("Hash")).expect("a CID")
}

/// An image of a manifest, a config and layers of the given sizes, as both the layout
/// builder and the node see it.
async fn assert_same_root_as_the_node(chunk_size: u32, layer_sizes: &[usize]) {
    let profile = ImportProfile { chunk_size };
    let seed = common::unique_seed();
    let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":{seed}}}"#).into_bytes();
    let layers: Vec<Vec<u8>> = layer_sizes
        .iter()
        .enumerate()
        .map(|(i, len)| common::pseudo_random(seed ^ i as u64, *len))
        .collect();
    let descriptor = |media: &str, data: &[u8]| {
        format!(
            r#"{{"mediaType":"{media}","digest":"{}","size":{}}}"#,
            Digest::sha256_of(data),
            data.len()
        )
    };
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[{}]}}"#,
        descriptor("application/vnd.oci.image.config.v1+json", &config),
        layers
            .iter()
            .map(|l| descriptor("application/vnd.oci.image.layer.v1.tar+gzip", l))
            .collect::<Vec<_>>()
            .join(",")
    )
    .into_bytes();
    let manifest_digest = Digest::sha256_of(&manifest);
    let tag = "v1.0-golden";

    let mut blobs = BTreeMap::new();
    blobs.insert(
        manifest_digest.clone(),
        Content::Bytes(Bytes::from(manifest.clone())),
    );
    blobs.insert(Digest::sha256_of(&config), stored(&config, chunk_size));
    for layer in &layers {
        blobs.insert(Digest::sha256_of(layer), stored(layer, chunk_size));
    }
    let image = Image {
        tag: tag.into(),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        digest: manifest_digest.clone(),
        size: manifest.len() as u64,
        blobs,
    };
    let computed = layout::build(&image, chunk_size).expect("layout");

    let mut files = BTreeMap::new();
    files.insert("oci-layout".to_owned(), layout::OCI_LAYOUT.to_vec());
    files.insert(
        "index.json".to_owned(),
        layout::index_json(
            "application/vnd.oci.image.manifest.v1+json",
            &manifest_digest,
            manifest.len() as u64,
            tag,
        ),
    );
    for data in [&manifest, &config].into_iter().chain(&layers) {
        files.insert(
            format!("blobs/sha256/{}", Digest::sha256_of(data).hex()),
            data.clone(),
        );
    }
    assert_eq!(
        computed.root,
        node_root(&files, &profile).await,
        "layout root for chunks of {chunk_size} and layers of {layer_sizes:?}"
    );
}

/// Layers of one chunk, more than one chunk, and a second tree level; a manifest over one
/// chunk (1 KiB chunks).
#[tokio::test]
async fn small_chunks_with_multi_level_layers() {
    assert_same_root_as_the_node(1024, &[0, 1024, 5000, 174 * 1024 + 1]).await;
}

#[tokio::test]
async fn default_profile() {
    let chunk = ImportProfile::default().chunk_size as usize;
    assert_same_root_as_the_node(chunk as u32, &[100, chunk + 1, 3 * chunk]).await;
}
