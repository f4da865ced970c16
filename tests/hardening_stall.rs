//! A backend that stops answering without closing its connections (a partition, a frozen
//! primary, a hung IPFS node) must not hang requests (issue 13): they answer 503 within the
//! configured limits, and what was under way continues once the backend is back. Each
//! backend sits behind a TCP proxy the test pauses.

mod common;

use std::future::Future;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use common::oci::*;
use common::stall_proxy::StallProxy;

/// How long a stalled request may take beyond the configured limit.
const SLACK: Duration = Duration::from_secs(1);

/// Runs a request that must answer within `bound`. A hang is cut at a multiple of it, so
/// the code before the deadlines fails here instead of waiting for the backend.
async fn within<F: Future<Output = reqwest::Response>>(
    what: &str,
    bound: Duration,
    request: F,
) -> reqwest::Response {
    let started = Instant::now();
    let response = tokio::time::timeout(3 * bound, request)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {:?}", 3 * bound));
    let took = started.elapsed();
    eprintln!("{what}: {} after {took:?}", response.status());
    assert!(took <= bound, "{what}: took {took:?}, more than {bound:?}");
    response
}

fn socket_addr(url: &url::Url) -> SocketAddr {
    let host = url.host_str().expect("a host");
    let port = url.port_or_known_default().expect("a port");
    (host, port)
        .to_socket_addrs()
        .unwrap()
        .next()
        .expect("an address")
}

/// The test configuration with PostgreSQL reached through a proxy the test can stall, and
/// deadlines of 3 s.
async fn behind_a_database_proxy() -> (ipfs_registry::config::Config, StallProxy) {
    let mut config = common::StorePair::PostgresIpfsNode.test_config().await;
    let database = config.database.url.as_deref().expect("a PostgreSQL URL");
    let mut url = url::Url::parse(database).unwrap();
    let proxy = StallProxy::start(socket_addr(&url)).await;
    url.set_port(Some(proxy.addr.port())).unwrap();
    config.database.url = Some(url.to_string());
    config.database.timeout = Duration::from_secs(3);
    config.database.operation_timeout = Duration::from_secs(3);
    (config, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_database_answers_503_and_the_upload_resumes() {
    let (mut config, proxy) = behind_a_database_proxy().await;
    // One upload slot: a stalled upload that kept it would turn the next one into a 429.
    config.limits.max_concurrent_uploads = 1;
    let bound = config.database.timeout + SLACK;
    let registry = common::start_registry_from(config).await;
    let oci = Oci::new(&registry.base);
    let repo = "stall/db";
    let image = oci.push_image(repo, Some("v1"), 1).await;

    let data = random_bytes(3000);
    let digest = sha256(&data);
    let (first, second) = data.split_at(1000);
    let location = oci.start_upload(repo).await;
    expect_status(oci.patch_chunk(&location, 0, first).await, 202).await;

    proxy.pause();
    let post = within("POST upload", bound, async {
        oci.request(reqwest::Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
            .send()
            .await
            .unwrap()
    })
    .await;
    assert_unavailable(post).await;
    let patch = within(
        "PATCH",
        bound,
        oci.patch_chunk(&location, first.len(), second),
    )
    .await;
    assert_unavailable(patch).await;
    let put = within(
        "PUT",
        bound,
        oci.put_upload(&location, &digest, second.to_vec()),
    )
    .await;
    assert_unavailable(put).await;
    let manifest = within(
        "GET manifest",
        bound,
        oci.get(&format!("/v2/{repo}/manifests/v1")),
    )
    .await;
    assert_unavailable(manifest).await;
    let blob = within(
        "HEAD blob",
        bound,
        oci.head(&format!("/v2/{repo}/blobs/{}", image.layers[0].digest)),
    )
    .await;
    assert_eq!(blob.status(), 503);

    // Back: the session holds exactly the chunk stored before the stall, and completes.
    proxy.resume();
    let status = expect_status(oci.get(&location).await, 204).await;
    assert_eq!(header(&status, "range"), format!("0-{}", first.len() - 1));
    expect_status(oci.patch_chunk(&location, first.len(), second).await, 202).await;
    let done = oci.put_upload(&location, &digest, Vec::new()).await;
    let done = expect_status(done, 201).await;
    assert_eq!(header(&done, "docker-content-digest"), digest);
    let pulled = expect_status(oci.get(&format!("/v2/{repo}/blobs/{digest}")).await, 200).await;
    assert!(pulled.bytes().await.unwrap() == data);
    let manifest = oci.get(&format!("/v2/{repo}/manifests/v1")).await;
    let manifest = expect_status(manifest, 200).await;
    assert!(manifest.bytes().await.unwrap() == image.manifest.content);
    oci.push_blob(repo, b"after the stall").await;

    registry.server.stop().await;
}

/// Connections a partition silently cut (the server is reachable again, the old TCP
/// connections are not) go at the first deadline instead of each failing a request in turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_lost_in_a_partition_are_replaced_not_reused() {
    let (mut config, proxy) = behind_a_database_proxy().await;
    config.database.pool_size = 8;
    let bound = config.database.timeout + SLACK;
    let registry = common::start_registry_from(config).await;
    let oci = Oci::new(&registry.base);
    let repo = "stall/lost";
    oci.push_image(repo, Some("v1"), 1).await;
    let manifest = format!("/v2/{repo}/manifests/v1");

    // Requests at once until the pool holds several connections.
    for _ in 0..100 {
        if proxy.open_connections() >= 4 {
            break;
        }
        let answers = futures::future::join_all((0..8).map(|_| oci.get(&manifest))).await;
        for answer in answers {
            expect_status(answer, 200).await;
        }
    }
    let lost = proxy.open_connections();
    assert!(lost >= 3, "only {lost} pooled connections");

    proxy.freeze_open_connections();
    let first = within("GET manifest, lost connection", bound, oci.get(&manifest)).await;
    assert_unavailable(first).await;
    for i in 0..lost {
        let answer = within(&format!("GET manifest {i}"), bound, oci.get(&manifest)).await;
        expect_status(answer, 200).await;
    }

    proxy.resume();
    registry.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_ipfs_node_answers_503_and_pushes_resume() {
    let mut config = common::StorePair::PostgresIpfsNode.test_config().await;
    let mut url = config.ipfs.url.clone().expect("the IPFS node's URL");
    let proxy = StallProxy::start(socket_addr(&url)).await;
    url.set_port(Some(proxy.addr.port())).unwrap();
    config.ipfs.url = Some(url);
    config.ipfs.timeout = Duration::from_secs(2);
    config.limits.max_concurrent_uploads = 1;
    // Control calls give the node's own timeout answer (which tells a missing block from a
    // dead node) a grace second before giving up themselves.
    let bound = config.ipfs.timeout + Duration::from_secs(1) + SLACK;
    let registry = common::start_registry_from(config).await;
    let oci = Oci::new(&registry.base);
    let repo = "stall/ipfs";
    let image = oci.push_image(repo, Some("v1"), 1).await;
    let layer = format!("/v2/{repo}/blobs/{}", image.layers[0].digest);

    let data = random_bytes(3000);
    let digest = sha256(&data);
    let (first, second) = data.split_at(1000);
    let location = oci.start_upload(repo).await;
    expect_status(oci.patch_chunk(&location, 0, first).await, 202).await;

    proxy.pause();
    // block/stat before the bytes.
    let get = within("GET blob", bound, oci.get(&layer)).await;
    assert_unavailable(get).await;
    // version.
    let ready = within("GET /readyz", bound, async {
        reqwest::get(registry.url("/readyz")).await.unwrap()
    })
    .await;
    assert_eq!(ready.status(), 503);
    // add: no progress for ipfs.timeout.
    let patch = within(
        "PATCH",
        bound,
        oci.patch_chunk(&location, first.len(), second),
    )
    .await;
    assert_unavailable(patch).await;
    // Manifests live in the database.
    let manifest = oci.get(&format!("/v2/{repo}/manifests/v1")).await;
    expect_status(manifest, 200).await;

    proxy.resume();
    let status = expect_status(oci.get(&location).await, 204).await;
    assert_eq!(header(&status, "range"), format!("0-{}", first.len() - 1));
    expect_status(oci.patch_chunk(&location, first.len(), second).await, 202).await;
    let done = oci.put_upload(&location, &digest, Vec::new()).await;
    expect_status(done, 201).await;
    let pulled = expect_status(oci.get(&format!("/v2/{repo}/blobs/{digest}")).await, 200).await;
    assert!(pulled.bytes().await.unwrap() == data);
    let layer_bytes = expect_status(oci.get(&layer).await, 200).await;
    assert!(layer_bytes.bytes().await.unwrap() == image.layers[0].data);

    registry.server.stop().await;
}
