//! Failure behaviour against real services: with `integrity.verify_on_pull` a corrupt layer
//! is never served as complete (without it, the scrub finds it: tests/scrub.rs), and a
//! database that goes away turns into 503s, not hangs.

mod common;

use std::time::{Duration, Instant};

use common::oci::{self, Oci};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_layer_is_cut_short_not_served_when_pulls_verify() {
    let registry = common::StorePair::PostgresIpfsNode
        .start_registry_with(|config| config.integrity.verify_on_pull = true)
        .await;
    let client = Oci::new(&registry.base);
    // Two blobs of equal size spanning several IPFS chunks; then the metadata of the first
    // is made to point at the bytes of the second, as a corrupted node or row would.
    let good = client.push_random_blob("integrity/a", 700_000).await;
    let other = client.push_random_blob("integrity/a", 700_000).await;
    let db = common::sql::metadata(&registry).await;
    let moved = db
        .execute(
            "UPDATE blobs SET cid = (SELECT cid FROM blobs WHERE digest = $2) WHERE digest = $1",
            &[&good.digest, &other.digest],
        )
        .await;
    assert_eq!(moved, 1);

    let response = client
        .get(&format!("/v2/integrity/a/blobs/{}", good.digest))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.content_length(), Some(700_000));
    let body = response.bytes().await;
    assert!(
        body.is_err(),
        "a corrupt blob must not arrive as a complete body"
    );

    // The intact blob still streams completely.
    let response = client
        .get(&format!("/v2/integrity/a/blobs/{}", other.digest))
        .await;
    assert!(response.bytes().await.unwrap() == other.data);
    registry.server.stop().await;
}

/// A TCP relay to PostgreSQL that the test can cut.
struct Relay {
    port: u16,
    tasks: JoinSet<()>,
}

impl Relay {
    async fn start(target: String) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                connections.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Relay { port, tasks }
    }

    /// Closes the listener and every relayed connection.
    async fn cut(mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_is_503_within_the_timeout() {
    let mut config = common::StorePair::PostgresIpfsNode.test_config().await;
    let mut url = url::Url::parse(config.database.url.as_deref().unwrap()).unwrap();
    let target = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432));
    let relay = Relay::start(target).await;
    url.set_port(Some(relay.port)).unwrap();
    config.database.url = Some(url.to_string());
    config.database.timeout = Duration::from_secs(2);
    let registry = common::start_registry_from(config).await;
    let client = Oci::new(&registry.base);
    let blob = client.push_random_blob("outage/x", 1000).await;

    relay.cut().await;
    for path in [
        format!("/v2/outage/x/blobs/{}", blob.digest),
        "/v2/outage/x/tags/list".to_owned(),
        "/v2/outage/x/manifests/latest".to_owned(),
    ] {
        let started = Instant::now();
        let response = client.get(&path).await;
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{path} took {:?}",
            started.elapsed()
        );
        oci::assert_error(response, 503, "UNAVAILABLE").await;
    }
    let started = Instant::now();
    let response = client
        .post_blob("outage/x", b"abc", &oci::sha256(b"abc"))
        .await;
    assert!(started.elapsed() < Duration::from_secs(10));
    oci::assert_error(response, 503, "UNAVAILABLE").await;
    registry.server.stop().await;
}

/// A digest already stored is never added to IPFS again: a replica whose IPFS node is
/// down still accepts a push of known content (it only hashes the body to prove the client
/// has it), and still refuses a push that does not match the digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_digest_is_not_added_again() {
    let registry = common::StorePair::PostgresIpfsNode.start_registry().await;
    let client = Oci::new(&registry.base);
    let blob = client.push_random_blob("dedup/first", 300_000).await;

    let mut offline = registry.config.clone();
    offline.ipfs.url = Some("http://127.0.0.1:1".parse().unwrap());
    offline.ipfs.connect_timeout = Duration::from_millis(500);
    let offline = common::start_registry_from(offline).await;
    let offline_client = Oci::new(&offline.base);

    let response = offline_client
        .post_blob("dedup/second", &blob.data, &blob.digest)
        .await;
    assert_eq!(response.status(), 201, "known content needs no IPFS add");
    let response = offline_client
        .upload_as("dedup/third", &blob.data, &blob.digest)
        .await;
    assert_eq!(response.status(), 201);

    let mut forged = blob.data.clone();
    forged[0] ^= 1;
    let response = offline_client
        .post_blob("dedup/fourth", &forged, &blob.digest)
        .await;
    oci::assert_error(response, 400, "DIGEST_INVALID").await;
    let response = client
        .head(&format!("/v2/dedup/fourth/blobs/{}", blob.digest))
        .await;
    assert_eq!(response.status(), 404);

    // One row for the digest, linked where it was pushed.
    let db = common::sql::metadata(&registry).await;
    let rows = db
        .value(
            "SELECT CAST(count(*) AS TEXT) FROM blobs WHERE digest = $1",
            &[&blob.digest],
        )
        .await;
    assert_eq!(rows, "1");
    for repo in ["dedup/second", "dedup/third"] {
        let response = client
            .head(&format!("/v2/{repo}/blobs/{}", blob.digest))
            .await;
        assert_eq!(response.status(), 200, "{repo}");
    }
    offline.server.stop().await;
    registry.server.stop().await;
}
