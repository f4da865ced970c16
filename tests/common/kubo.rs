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
