//! The test IPFS node as a blob store, for suites that work below the registry.

use std::time::Duration;

use futures::StreamExt;
use ipfs_registry::blobs::kubo::KuboStore;
use ipfs_registry::blobs::{ByteStream, ImportProfile};
use ipfs_registry::config::IpfsConfig;

/// A client of the node at `url`.
pub fn store_at(url: url::Url, timeout: Duration, profile: ImportProfile) -> KuboStore {
    let config = IpfsConfig {
        url: Some(url.clone()),
        ca_file: None,
        connect_timeout: Duration::from_secs(2),
        timeout,
    };
    KuboStore::new(&config, url, profile).expect("an IPFS client")
}

/// A client of the test node.
pub fn store(timeout: Duration, profile: ImportProfile) -> KuboStore {
    store_at(super::ipfs_url(), timeout, profile)
}

/// Every byte of a stream.
pub async fn read_all(mut body: ByteStream) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(piece) = body.next().await {
        out.extend_from_slice(&piece.expect("stream piece"));
    }
    out
}

/// The root CID the node's own importer gives `data` under `profile`, without storing
/// anything (`add` with `only-hash`): also for trees of tens of thousands of blocks, which
/// js-ipfs cannot write at once (it opens a file per block).
pub async fn node_only_hash(data: impl Into<bytes::Bytes>, profile: &ImportProfile) -> cid::Cid {
    let part = reqwest::multipart::Part::stream(data.into())
        .file_name("blob")
        .mime_str("application/octet-stream")
        .unwrap();
    let mut query = profile.add_params();
    query.extend([
        ("only-hash", "true".to_owned()),
        ("pin", "false".to_owned()),
    ]);
    let url = super::ipfs_url().join("api/v0/add").unwrap();
    let answer: serde_json::Value = reqwest::Client::new()
        .post(url)
        .query(&query)
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .expect("add only-hash")
        .json()
        .await
        .expect("add answer");
    cid::Cid::try_from(answer["Hash"].as_str().expect("Hash")).expect("a CID")
}

/// Writes one block into the node at `url` with `block/put`, unpinned; its codec is the
/// CID's (dag-pb or raw).
pub async fn put_block(url: &url::Url, cid: &cid::Cid, bytes: &[u8]) {
    let codec = if cid.codec() == ipfs_registry::blobs::kubo::DAG_PB_CODEC {
        "dag-pb"
    } else {
        "raw"
    };
    let block = reqwest::multipart::Part::bytes(bytes.to_vec())
        .file_name("block")
        .mime_str("application/octet-stream")
        .expect("a MIME type");
    let put = reqwest::Client::new()
        .post(url.join("api/v0/block/put").expect("a URL"))
        .query(&[("cid-codec", codec), ("mhtype", "sha2-256")])
        .multipart(reqwest::multipart::Form::new().part("file", block))
        .send()
        .await
        .expect("block/put");
    assert!(
        put.status().is_success(),
        "block/put {cid}: {}",
        put.status()
    );
}
