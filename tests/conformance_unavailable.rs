//! When the IPFS node cannot be reached, blob requests fail fast with 503 UNAVAILABLE and
//! an OCI error body — never a hang.

mod common;

use std::future::Future;
use std::time::{Duration, Instant};

use common::oci::*;

/// A node that refuses connections.
const DEAD_NODE: &str = "http://127.0.0.1:1";

fn dead_node(config: &mut ipfs_registry::config::Config) {
    config.ipfs.url = Some(DEAD_NODE.parse().unwrap());
    config.ipfs.timeout = Duration::from_secs(2);
    config.ipfs.connect_timeout = Duration::from_secs(1);
}

/// Runs a request, failing the test if it takes longer than a few seconds.
async fn quickly<F: Future<Output = reqwest::Response>>(
    what: &str,
    request: F,
) -> reqwest::Response {
    let started = Instant::now();
    let response = tokio::time::timeout(Duration::from_secs(20), request)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within 20 s"));
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "{what}: took {took:?}");
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_push_is_503_when_the_node_is_down() {
    let registry = common::StorePair::PostgresIpfsNode
        .start_registry_with(dead_node)
        .await;
    let oci = Oci::new(&registry.base);
    let repo = "down/push";
    let data = random_bytes(5000);
    let digest = sha256(&data);

    let single = quickly("POST ?digest=", oci.post_blob(repo, &data, &digest)).await;
    assert_unavailable(single).await;

    // Opening a session needs only the database; sending bytes needs the node.
    let location = oci.start_upload(repo).await;
    let put = quickly("PUT", oci.put_upload(&location, &digest, data.clone())).await;
    assert_unavailable(put).await;

    let location = oci.start_upload(repo).await;
    let patch = quickly("PATCH", oci.patch_chunk(&location, 0, &data)).await;
    assert_unavailable(patch).await;
    // The failed chunk was not recorded.
    let status = expect_status(oci.get(&location).await, 204).await;
    assert_eq!(header(&status, "range"), "0-0");

    assert_eq!(
        oci.head(&format!("/v2/{repo}/blobs/{digest}"))
            .await
            .status(),
        404
    );
    registry.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_pull_is_503_when_the_node_is_down() {
    let healthy = common::StorePair::PostgresIpfsNode.start_registry().await;
    let oci = Oci::new(&healthy.base);
    let repo = "down/pull";
    let image = oci.push_image(repo, Some("v1"), 1).await;
    let layer = &image.layers[0];

    // A replica on the same database whose IPFS node is unreachable.
    let mut config = healthy.config.clone();
    dead_node(&mut config);
    let broken = common::start_registry_from(config).await;
    let down = Oci::new(&broken.base);
    let path = format!("/v2/{repo}/blobs/{}", layer.digest);

    let get = quickly("GET blob", down.get(&path)).await;
    assert_unavailable(get).await;
    let ranged = quickly("GET blob range", async {
        down.request(reqwest::Method::GET, &path)
            .header("Range", "bytes=0-9")
            .send()
            .await
            .unwrap()
    })
    .await;
    assert_unavailable(ranged).await;

    // Manifests live in the database: still served.
    let manifest = down.get(&format!("/v2/{repo}/manifests/v1")).await;
    let manifest = expect_status(manifest, 200).await;
    assert!(manifest.bytes().await.unwrap() == image.manifest.content);

    broken.server.stop().await;
    healthy.server.stop().await;
}

/// `ipfs.url` pointing at something that is not the node's RPC API (here another HTTP
/// server, as a gateway port or a proxy path would be): its 404s say nothing about the
/// content, so a pull of a stored blob is 503, not BLOB_UNKNOWN, and readiness fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ipfs_url_is_unavailable_not_blob_unknown() {
    let healthy = common::StorePair::PostgresIpfsNode.start_registry().await;
    let oci = Oci::new(&healthy.base);
    let repo = "wrong/url";
    let image = oci.push_image(repo, Some("v1"), 1).await;

    let mut config = healthy.config.clone();
    config.ipfs.url = Some(
        format!("{}/not-the-rpc-api/", healthy.base)
            .parse()
            .unwrap(),
    );
    let misconfigured = common::start_registry_from(config).await;
    let wrong = Oci::new(&misconfigured.base);
    let path = format!("/v2/{repo}/blobs/{}", image.layers[0].digest);
    let get = quickly("GET blob", wrong.get(&path)).await;
    assert_unavailable(get).await;

    let ready = reqwest::get(misconfigured.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.unwrap();
    let ipfs = body["checks"]["ipfs"].as_str().unwrap_or_default();
    assert!(ipfs.contains("not a Kubo RPC error"), "{body}");

    misconfigured.server.stop().await;
    healthy.server.stop().await;
}
