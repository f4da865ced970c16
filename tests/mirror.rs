//! Pull-through mirrors (docs/mirror.md) against real upstreams on loopback: this registry
//! as the upstream, with auth on (the Docker token flow) or off. The mirror under test
//! runs on each store pair; the upstream runs on the embedded stores, whose files a test
//! can damage to play an upstream sending wrong bytes.

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::auth::{bearer_client, start_auth_registry, AuthRegistry};
use common::oci::*;
use common::skopeo::Skopeo;
use common::{blob_store_holds, cid_of_blob, StorePair, TestRegistry};
use ipfs_registry::config::MirrorConfig;

common::on_each_store_pair!(pulls_through_the_token_flow_and_serves_what_it_stored);
common::on_each_store_pair!(
    a_moved_tag_is_seen_after_the_ttl_and_cached_content_outlives_the_upstream
);
common::on_each_store_pair!(concurrent_pulls_of_an_uncached_layer_fetch_it_once);
common::on_each_store_pair!(bytes_that_do_not_match_the_digest_are_not_stored);
common::on_each_store_pair!(docker_and_containerd_mirror_requests_are_routed);
common::on_store_pairs!([postgres_ipfs_node: PostgresIpfsNode] skopeo_pulls_by_prefix);
common::on_store_pairs!([embedded: Embedded] a_rate_limiting_upstream_gives_its_retry_after);
common::on_each_store_pair!(cncf_distribution_as_an_anonymous_upstream);
common::on_each_store_pair!(containerd_pulls_through_hosts_toml);
common::on_each_store_pair!(what_a_mirror_stores_is_notified);
common::on_store_pairs!([postgres_ipfs_node: PostgresIpfsNode] docker_pulls_through_registry_mirrors);

const USER: &str = "mirror-bot";
const PASSWORD: &str = "mirror-secret";

fn mirror(upstream: &str) -> MirrorConfig {
    toml::from_str(&format!("upstream = \"{upstream}\"")).unwrap()
}

/// An upstream with auth on: `USER` may pull `library/*`, `pusher` may push there.
async fn auth_upstream() -> (AuthRegistry, Oci) {
    let upstream = start_auth_registry(StorePair::Embedded).await;
    upstream.add_user(USER, PASSWORD, false).await;
    upstream.grant(USER, "library/*", "pull").await;
    upstream.add_user("pusher", "push-secret", false).await;
    upstream.grant("pusher", "library/*", "pull,push").await;
    let token = upstream
        .token(
            Some(("pusher", "push-secret")),
            &["repository:library/app:pull,push"],
        )
        .await;
    let client = bearer_client(upstream.base(), &token);
    (upstream, client)
}

/// An upstream anyone may push to and pull from.
async fn open_upstream() -> (TestRegistry, Oci) {
    let upstream = StorePair::Embedded.start_registry().await;
    let client = Oci::new(&upstream.base);
    (upstream, client)
}

async fn mirror_registry(stores: StorePair, mirrors: Vec<MirrorConfig>) -> (TestRegistry, Oci) {
    let registry = stores
        .start_registry_with(move |config| config.mirror = mirrors)
        .await;
    let client = Oci::new(&registry.base);
    (registry, client)
}

async fn body_of(response: reqwest::Response) -> Vec<u8> {
    expect_status(response, 200)
        .await
        .bytes()
        .await
        .unwrap()
        .to_vec()
}

/// Pulls `location` and checks it is served from the blob store (its CID known), whole.
async fn served_from_store(client: &Oci, location: &str, data: &[u8]) {
    let stored = expect_status(client.get(location).await, 200).await;
    assert_eq!(
        header(&stored, "x-ipfs-path"),
        format!("/ipfs/{}", cid_of_blob(data))
    );
    assert!(
        stored.bytes().await.unwrap() == data,
        "{location}: the stored bytes"
    );
}

/// A counter of `registry`'s metrics (`name{labels}`), 0 when absent.
async fn counter(registry: &TestRegistry, series: &str) -> u64 {
    let sample = registry.metric(&format!("ipfs_registry_{series}")).await;
    sample.unwrap_or(0.0) as u64
}

/// Requests the upstream answered 200, by `method` and route, from its metrics.
async fn upstream_requests(upstream: &TestRegistry, method: &str, route: &str) -> u64 {
    let series =
        format!("http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"200\"}}");
    counter(upstream, &series).await
}

/// What the mirror `registry` counted of `kind` with `outcome`.
async fn mirror_fetches(registry: &TestRegistry, kind: &str, outcome: &str) -> u64 {
    let series = format!("mirror_fetches_total{{kind=\"{kind}\",outcome=\"{outcome}\"}}");
    counter(registry, &series).await
}

async fn pulls_through_the_token_flow_and_serves_what_it_stored(stores: StorePair) {
    let (upstream, push) = auth_upstream().await;
    let image = push.push_image("library/app", Some("1"), 2).await;
    let mut entry = mirror(upstream.base());
    entry.prefix = Some("hub/".into());
    entry.username = Some(USER.into());
    entry.password = Some(PASSWORD.into());
    entry.repositories = vec!["library/*".parse().unwrap()];
    let (registry, client) = mirror_registry(stores, vec![entry]).await;

    // The manifest by tag, then by digest, exactly as the upstream has it.
    let response = expect_status(client.get("/v2/hub/library/app/manifests/1").await, 200).await;
    assert_eq!(
        header(&response, "docker-content-digest"),
        image.manifest.digest
    );
    assert_eq!(header(&response, "content-type"), OCI_MANIFEST);
    assert_eq!(response.bytes().await.unwrap(), image.manifest.content);
    let by_digest = format!("/v2/hub/library/app/manifests/{}", image.manifest.digest);
    assert_eq!(
        body_of(client.get(&by_digest).await).await,
        image.manifest.content
    );
    expect_status(client.head(&by_digest).await, 200).await;

    // HEAD of a blob not held: the upstream's size, nothing fetched.
    let layer = &image.layers[0];
    let location = format!("/v2/hub/library/app/blobs/{}", layer.digest);
    let response = expect_status(client.head(&location).await, 200).await;
    assert_eq!(
        header(&response, "content-length"),
        layer.data.len().to_string()
    );
    assert_eq!(header(&response, "docker-content-digest"), layer.digest);
    assert_eq!(opt_header(&response, "x-ipfs-path"), None);

    // Blobs: the first pull streams from the upstream (no CID yet), the next is served
    // from the blob store like any stored blob.
    for blob in std::iter::once(&image.config).chain(&image.layers) {
        let location = format!("/v2/hub/library/app/blobs/{}", blob.digest);
        let first = expect_status(client.get(&location).await, 200).await;
        assert_eq!(header(&first, "docker-content-digest"), blob.digest);
        assert_eq!(first.bytes().await.unwrap(), blob.data);
        served_from_store(&client, &location, &blob.data).await;
    }

    // Absent upstream: the spec's 404s. Outside the mirror's repositories: NAME_UNKNOWN.
    let response = client.get("/v2/hub/library/app/manifests/nope").await;
    assert_error(response, 404, "MANIFEST_UNKNOWN").await;
    let location = format!("/v2/hub/library/app/blobs/{}", unknown_digest());
    assert_error(client.get(&location).await, 404, "BLOB_UNKNOWN").await;
    let response = client.get("/v2/hub/other/app/manifests/1").await;
    assert_error(response, 404, "NAME_UNKNOWN").await;

    // Read-only: no push, no delete.
    let response = client
        .request(reqwest::Method::POST, "/v2/hub/library/app/blobs/uploads/")
        .send()
        .await
        .unwrap();
    assert_error(response, 405, "UNSUPPORTED").await;
    let response = client
        .put_manifest(
            "hub/library/app",
            "2",
            &image.manifest.media_type,
            &image.manifest.content,
        )
        .await;
    assert_error(response, 405, "UNSUPPORTED").await;
    assert_error(client.delete(&by_digest).await, 405, "UNSUPPORTED").await;

    // A stored blob found damaged (quarantined) is fetched again, which heals it.
    let stores_of_mirror = ipfs_registry::server::metadata_stores(&registry.config)
        .await
        .unwrap();
    let digest: ipfs_registry::oci::Digest = layer.digest.parse().unwrap();
    assert!(stores_of_mirror
        .meta
        .quarantine_blob(&digest, "damaged, as the scrub would find")
        .await
        .unwrap());
    let location = format!("/v2/hub/library/app/blobs/{}", layer.digest);
    assert!(body_of(client.get(&location).await).await == layer.data);
    served_from_store(&client, &location, &layer.data).await;
    assert!(!stores_of_mirror.meta.is_quarantined(&digest).await.unwrap());

    // Without the credentials the upstream refuses the mirror: nothing to pull.
    let mut anonymous = mirror(upstream.base());
    anonymous.prefix = Some("anon/".into());
    let (_other, client) = mirror_registry(stores, vec![anonymous]).await;
    let response = client.get("/v2/anon/library/app/manifests/1").await;
    assert_error(response, 404, "MANIFEST_UNKNOWN").await;
}

async fn a_moved_tag_is_seen_after_the_ttl_and_cached_content_outlives_the_upstream(
    stores: StorePair,
) {
    let (upstream, push) = open_upstream().await;
    let first = push.push_image("library/moving", Some("v1"), 1).await;
    let ttl = Duration::from_secs(2);
    let mut entry = mirror(&upstream.base);
    entry.prefix = Some("hub/".into());
    entry.manifest_ttl = ttl;
    let (registry, client) = mirror_registry(stores, vec![entry]).await;
    let tag = "/v2/hub/library/moving/manifests/v1";

    let fetched = Instant::now();
    let response = expect_status(client.get(tag).await, 200).await;
    assert_eq!(
        header(&response, "docker-content-digest"),
        first.manifest.digest
    );
    for blob in std::iter::once(&first.config).chain(&first.layers) {
        let location = format!("/v2/hub/library/moving/blobs/{}", blob.digest);
        assert_eq!(body_of(client.get(&location).await).await, blob.data);
    }

    // The tag moves upstream: within the TTL the mirror does not ask, after it it does.
    let second = push.push_image("library/moving", Some("v1"), 1).await;
    let response = expect_status(client.get(tag).await, 200).await;
    if fetched.elapsed() < ttl {
        assert_eq!(
            header(&response, "docker-content-digest"),
            first.manifest.digest
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let response = expect_status(client.get(tag).await, 200).await;
        if header(&response, "docker-content-digest") == second.manifest.digest {
            assert!(
                fetched.elapsed() >= ttl,
                "the tag was revalidated before its TTL"
            );
            assert_eq!(response.bytes().await.unwrap(), second.manifest.content);
            break;
        }
        assert!(Instant::now() < deadline, "the moved tag was never seen");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let layer = &second.layers[0];
    let location = format!("/v2/hub/library/moving/blobs/{}", layer.digest);
    assert_eq!(body_of(client.get(&location).await).await, layer.data);
    let revalidated = Instant::now();

    // The upstream goes away: what was stored is still served, the tag marked stale once
    // its TTL has passed; what was never fetched is unavailable.
    upstream.server.stop().await;
    while revalidated.elapsed() < ttl {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let response = expect_status(client.get(tag).await, 200).await;
    assert_eq!(
        header(&response, "docker-content-digest"),
        second.manifest.digest
    );
    assert!(
        header(&response, "warning").contains("110"),
        "a stale answer says so"
    );
    assert!(mirror_fetches(&registry, "manifest", "stale").await >= 1);
    assert_eq!(response.bytes().await.unwrap(), second.manifest.content);
    let by_digest = format!("/v2/hub/library/moving/manifests/{}", first.manifest.digest);
    assert_eq!(
        body_of(client.get(&by_digest).await).await,
        first.manifest.content
    );
    assert_eq!(body_of(client.get(&location).await).await, layer.data);
    let response = client.get("/v2/hub/library/moving/manifests/never").await;
    assert_error(response, 503, "UNAVAILABLE").await;
    let location = format!("/v2/hub/library/moving/blobs/{}", second.config.digest);
    assert_error(client.get(&location).await, 503, "UNAVAILABLE").await;
}

async fn concurrent_pulls_of_an_uncached_layer_fetch_it_once(stores: StorePair) {
    let (upstream, push) = open_upstream().await;
    let layer = push
        .push_blob("library/big", &random_bytes(64 * 1024 * 1024))
        .await;
    let mut entry = mirror(&upstream.base);
    entry.prefix = Some("hub/".into());
    let (registry, client) = mirror_registry(stores, vec![entry]).await;
    let location = format!("/v2/hub/library/big/blobs/{}", layer.digest);
    let before = upstream_requests(&upstream, "GET", "blob").await;

    let pulls = (0..3).map(|_| {
        let client = client.clone();
        let location = location.clone();
        async move { body_of(client.get(&location).await).await }
    });
    for pulled in futures::future::join_all(pulls).await {
        assert!(pulled == layer.data, "every client gets the whole layer");
    }
    // Recorded when the upstream's response ends, which may trail the last byte.
    let deadline = Instant::now() + Duration::from_secs(10);
    while upstream_requests(&upstream, "GET", "blob").await == before {
        assert!(
            Instant::now() < deadline,
            "the upstream never counted the fetch"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        upstream_requests(&upstream, "GET", "blob").await - before,
        1,
        "one upstream fetch for three concurrent pulls"
    );
    assert!(blob_store_holds(&registry, &layer.data).await);
    served_from_store(&client, &location, &layer.data).await;
    assert_eq!(mirror_fetches(&registry, "blob", "fetched").await, 1);
    assert_eq!(
        upstream_requests(&upstream, "GET", "blob").await - before,
        1
    );
}

async fn bytes_that_do_not_match_the_digest_are_not_stored(stores: StorePair) {
    let (upstream, push) = open_upstream().await;
    let data = random_bytes(1024 * 1024 + 17);
    let layer = push.push_blob("library/bad", &data).await;
    // Damage the upstream's stored copy: it serves the wrong bytes as the blob.
    let file = upstream
        .config
        .data_dir
        .join("blobs/data")
        .join(cid_of_blob(&data).to_string());
    let mut damaged = std::fs::read(&file).unwrap();
    assert_eq!(
        damaged, data,
        "the embedded store keeps a blob as its bytes"
    );
    damaged[700_000] ^= 0xff;
    std::fs::write(&file, &damaged).unwrap();

    let mut entry = mirror(&upstream.base);
    entry.prefix = Some("hub/".into());
    let (registry, client) = mirror_registry(stores, vec![entry]).await;
    let location = format!("/v2/hub/library/bad/blobs/{}", layer.digest);
    for _ in 0..2 {
        let response = client.get(&location).await;
        // Headers may already be out (the stream started); then the body is cut short.
        if response.status() == 200 {
            let body = response.bytes().await;
            assert!(
                body.as_ref().map_or(true, |b| b.len() < data.len()),
                "a corrupt blob is never delivered whole"
            );
        } else {
            assert_eq!(response.status(), 503);
        }
    }
    assert!(!blob_store_holds(&registry, &data).await);
    assert!(!blob_store_holds(&registry, &damaged).await);
    // Counted when the fetch's task ends, just after the client's stream was cut.
    let deadline = Instant::now() + Duration::from_secs(10);
    while mirror_fetches(&registry, "blob", "failed").await == 0 {
        assert!(
            Instant::now() < deadline,
            "the failed fetch was never counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(mirror_fetches(&registry, "blob", "fetched").await, 0);

    // Repaired upstream: the next pull stores it.
    std::fs::write(&file, &data).unwrap();
    assert!(body_of(client.get(&location).await).await == data);
    // The first client has its last byte before the blob is recorded; the next request
    // waits for the record (or finds it).
    served_from_store(&client, &location, &data).await;
    assert!(blob_store_holds(&registry, &data).await);
}

async fn docker_and_containerd_mirror_requests_are_routed(stores: StorePair) {
    let (upstream, push) = open_upstream().await;
    let image = push.push_image("library/routed", Some("1"), 1).await;
    let (other, other_push) = open_upstream().await;
    let elsewhere = other_push.push_image("team/app", Some("1"), 1).await;
    // The default mirror answers docker's registry-mirrors requests; the other only
    // containerd's ?ns= for its host.
    let mut default = mirror(&upstream.base);
    default.prefix = Some("hub/".into());
    default.default = true;
    default.host = Some("docker.io".into());
    let mut by_host = mirror(&other.base);
    by_host.host = Some("quay.example".into());
    let (_registry, client) = mirror_registry(stores, vec![default, by_host]).await;

    let response = expect_status(client.get("/v2/library/routed/manifests/1").await, 200).await;
    assert_eq!(
        header(&response, "docker-content-digest"),
        image.manifest.digest
    );
    let location = format!("/v2/library/routed/blobs/{}", image.layers[0].digest);
    assert_eq!(
        body_of(client.get(&location).await).await,
        image.layers[0].data
    );
    // Stored under the prefix, whichever way it was asked for.
    let location = format!("/v2/hub/library/routed/manifests/{}", image.manifest.digest);
    assert_eq!(
        body_of(client.get(&location).await).await,
        image.manifest.content
    );
    let response = client
        .get("/v2/library/routed/manifests/1?ns=docker.io")
        .await;
    assert_eq!(body_of(response).await, image.manifest.content);

    let response = client.get("/v2/team/app/manifests/1?ns=quay.example").await;
    assert_eq!(body_of(response).await, elsewhere.manifest.content);

    // An index: its children are fetched when asked for, by digest.
    let (amd64, _, index) = push.push_platform_index("library/multi").await;
    let response = client.get("/v2/hub/library/multi/manifests/multi").await;
    assert_eq!(body_of(response).await, index.content);
    let child = format!("/v2/hub/library/multi/manifests/{}", amd64.manifest.digest);
    assert_eq!(
        body_of(client.get(&child).await).await,
        amd64.manifest.content
    );

    // A repository pushed here is never shadowed by the default mirror.
    let local = client.push_image("library/mine", Some("1"), 1).await;
    let response = client.get("/v2/library/mine/manifests/1").await;
    assert_eq!(body_of(response).await, local.manifest.content);
    // ...and a mirrored one is read-only under its own name too.
    let response = client
        .request(
            reqwest::Method::POST,
            "/v2/hub/library/routed/blobs/uploads/",
        )
        .send()
        .await
        .unwrap();
    assert_error(response, 405, "UNSUPPORTED").await;
}

async fn skopeo_pulls_by_prefix(stores: StorePair) {
    let (upstream, push) = auth_upstream().await;
    let image = push.push_image("library/app", Some("1"), 3).await;
    let mut entry = mirror(upstream.base());
    entry.prefix = Some("hub/".into());
    entry.username = Some(USER.into());
    entry.password = Some(PASSWORD.into());
    let (registry, _client) = mirror_registry(stores, vec![entry]).await;
    let skopeo = Skopeo::new();
    let pulled = tempfile::tempdir().unwrap();
    let source = format!("docker://{}/hub/library/app:1", registry.host());
    let destination = format!("oci:{}:1", pulled.path().display());
    skopeo
        .copy(&source, &destination, &["--preserve-digests"])
        .await;
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(pulled.path().join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], image.manifest.digest);
    for blob in std::iter::once(&image.config).chain(&image.layers) {
        let path = pulled
            .path()
            .join("blobs/sha256")
            .join(blob.digest.trim_start_matches("sha256:"));
        assert!(std::fs::read(path).unwrap() == blob.data);
    }
}

/// An upstream that answers every request 429 with `Retry-After: 7`.
fn rate_limiting_upstream() -> (String, actix_web::dev::ServerHandle) {
    use actix_web::{web, App, HttpResponse, HttpServer};
    let server = HttpServer::new(|| {
        App::new().default_service(web::to(|| async {
            HttpResponse::TooManyRequests()
                .insert_header(("Retry-After", "7"))
                .finish()
        }))
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .unwrap();
    let address = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    tokio::spawn(server);
    (format!("http://{address}"), handle)
}

async fn a_rate_limiting_upstream_gives_its_retry_after(stores: StorePair) {
    let (url, handle) = rate_limiting_upstream();
    let mut entry = mirror(&url);
    entry.prefix = Some("hub/".into());
    let (_registry, client) = mirror_registry(stores, vec![entry]).await;
    for location in [
        "/v2/hub/library/app/manifests/1".to_owned(),
        format!("/v2/hub/library/app/blobs/{}", unknown_digest()),
    ] {
        let response = client.get(&location).await;
        assert_eq!(header(&response, "retry-after"), "7", "{location}");
        assert_error(response, 503, "UNAVAILABLE").await;
    }
    handle.stop(false).await;
}

/// A port of the range these tests may use for servers they start themselves (47000–47499),
/// free when asked.
fn free_port() -> u16 {
    let start = 47_000 + (std::process::id() % 500) as u16;
    (0..500)
        .map(|i| 47_000 + (start - 47_000 + i) % 500)
        .find(|&port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok())
        .expect("a free port in 47000-47499")
}

/// CNCF distribution (`docker-registry`) on filesystem storage under `dir`, once it
/// answers; killed when dropped.
async fn start_distribution(dir: &std::path::Path) -> (tokio::process::Child, String) {
    let root = dir.join("data");
    std::fs::create_dir_all(&root).unwrap();
    for _ in 0..10 {
        let port = free_port();
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: 127.0.0.1:{port}\n",
                root.display()
            ),
        )
        .unwrap();
        let mut child = tokio::process::Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("docker-registry (apt-get install -y docker-registry)");
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if child.try_wait().unwrap().is_some() {
                break; // the port was taken meanwhile: another one
            }
            if let Ok(response) = reqwest::get(format!("{base}/v2/")).await {
                if response.status() == 200 {
                    return (child, base);
                }
            }
            assert!(Instant::now() < deadline, "distribution did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    panic!("distribution could not bind a port");
}

async fn cncf_distribution_as_an_anonymous_upstream(stores: StorePair) {
    let dir = tempfile::tempdir().unwrap();
    let (_distribution, base) = start_distribution(dir.path()).await;
    // Pushed by hand: this distribution answers a GET without an Accept header for OCI
    // manifests 404, which the push helper's read-back would take for a failure.
    let upstream = Oci::new(&base);
    let repo = "library/from-distribution";
    let config = upstream
        .push_blob(repo, br#"{"architecture":"amd64","os":"linux"}"#)
        .await;
    let layers = vec![
        upstream.push_random_blob(repo, 300_000).await,
        upstream.push_random_blob(repo, 1000).await,
    ];
    let manifest = image_manifest(&config, &layers, None);
    let response = upstream
        .put_manifest(repo, "1", &manifest.media_type, &manifest.content)
        .await;
    expect_status(response, 201).await;
    let image = Image {
        config,
        layers,
        manifest,
    };
    let mut entry = mirror(&base);
    entry.prefix = Some("cncf/".into());
    let (registry, client) = mirror_registry(stores, vec![entry]).await;
    let response = client
        .get("/v2/cncf/library/from-distribution/manifests/1")
        .await;
    let response = expect_status(response, 200).await;
    assert_eq!(
        header(&response, "docker-content-digest"),
        image.manifest.digest
    );
    assert_eq!(response.bytes().await.unwrap(), image.manifest.content);
    for blob in std::iter::once(&image.config).chain(&image.layers) {
        let location = format!("/v2/cncf/library/from-distribution/blobs/{}", blob.digest);
        assert!(body_of(client.get(&location).await).await == blob.data);
        // Once recorded, served from the store (the next request waits for the record).
        served_from_store(&client, &location, &blob.data).await;
        assert!(blob_store_holds(&registry, &blob.data).await);
    }
    let response = client
        .get("/v2/cncf/library/from-distribution/manifests/2")
        .await;
    assert_error(response, 404, "MANIFEST_UNKNOWN").await;
}

async fn containerd_pulls_through_hosts_toml(stores: StorePair) {
    let Some(ctr) = common::clients::containerd().await else {
        return;
    };
    let (upstream, push) = open_upstream().await;
    let image = push.push_image("library/through-ctr", Some("1"), 2).await;
    let mut entry = mirror(&upstream.base);
    entry.prefix = Some("hub/".into());
    entry.host = Some("docker.io".into());
    let (registry, _client) = mirror_registry(stores, vec![entry]).await;
    // containerd asks the mirror first, with ?ns=docker.io (the server is never reached:
    // the test machine has no Internet).
    let hosts = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(hosts.path().join("docker.io")).unwrap();
    std::fs::write(
        hosts.path().join("docker.io/hosts.toml"),
        format!(
            "server = \"https://registry-1.docker.io\"\n\n\
             [host.\"{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            registry.base
        ),
    )
    .unwrap();
    let hosts_dir = hosts.path().to_str().unwrap();
    ctr.ok(&[
        "content",
        "fetch",
        "--hosts-dir",
        hosts_dir,
        "docker.io/library/through-ctr:1",
    ])
    .await;
    let listed = ctr.ok(&["content", "ls", "--quiet"]).await.stdout;
    for blob in std::iter::once(&image.config).chain(&image.layers) {
        assert!(
            listed.contains(&blob.digest),
            "containerd holds {}",
            blob.digest
        );
    }
    assert!(listed.contains(&image.manifest.digest));
    // The mirror stored what containerd pulled, under its prefix.
    let client = Oci::new(&registry.base);
    for blob in &image.layers {
        let location = format!("/v2/hub/library/through-ctr/blobs/{}", blob.digest);
        served_from_store(&client, &location, &blob.data).await;
    }
}

async fn docker_pulls_through_registry_mirrors(stores: StorePair) {
    let (upstream, _) = open_upstream().await;
    let mut entry = mirror(&upstream.base);
    entry.prefix = Some("hub/".into());
    entry.default = true;
    let (registry, _client) = mirror_registry(stores, vec![entry]).await;
    let settings = serde_json::json!({
        "registry-mirrors": [registry.base],
        "insecure-registries": [registry.host()],
    });
    let Some(docker) = common::clients::docker_with(settings).await else {
        return;
    };
    // A fresh image, pushed to the upstream under library/.
    let name = format!("mirrored-{}", std::process::id());
    let at_upstream = format!("{}/library/{name}:1", upstream.host());
    let files = common::clients::rootfs("etc/mirrored");
    let files: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(path, data)| (path.as_str(), data.as_slice()))
        .collect();
    let id = docker.build(&at_upstream, None, None, &files).await;
    let pushed = docker.push(&at_upstream).await;
    docker.rmi(&[&at_upstream]).await;

    // As a Docker Hub image: docker asks its mirror, whose default mirror asks the upstream
    // (the machine has no Internet, so Docker Hub itself would fail).
    let hub_name = format!("{name}:1");
    docker.ok(&["pull", &hub_name]).await;
    assert_eq!(docker.image_id(&hub_name).await, Some(id));
    let stored =
        common::clients::stored_manifest(&registry.base, &format!("hub/library/{name}"), "1")
            .await
            .expect("the mirror stored the manifest under its prefix");
    assert_eq!(stored.digest, pushed.digest);
}

async fn what_a_mirror_stores_is_notified(stores: StorePair) {
    use ipfs_registry::config::EventKind;
    let receiver = common::receiver::Receiver::start();
    let (upstream, push) = open_upstream().await;
    let image = push.push_image("library/told", Some("1"), 1).await;
    let mut entry = mirror(&upstream.base);
    entry.prefix = Some("hub/".into());
    let endpoint = receiver.endpoint("mirrors", &[EventKind::Mirror]);
    let registry = stores
        .start_registry_with(move |config| {
            config.mirror = vec![entry];
            config.notifications.endpoint = vec![endpoint];
        })
        .await;
    let client = Oci::new(&registry.base);
    expect_status(client.get("/v2/hub/library/told/manifests/1").await, 200).await;
    let layer = &image.layers[0];
    let location = format!("/v2/hub/library/told/blobs/{}", layer.digest);
    assert!(body_of(client.get(&location).await).await == layer.data);
    // Served from the store now: stored once, told once.
    expect_status(client.get(&location).await, 200).await;
    expect_status(client.get("/v2/hub/library/told/manifests/1").await, 200).await;

    let events = receiver.wait_for(2).await;
    assert_eq!(events.len(), 2, "{events:#?}");
    assert!(
        events.iter().all(|e| e["action"] == "mirror"),
        "{events:#?}"
    );
    let manifest = events
        .iter()
        .find(|e| e["target"]["digest"] == image.manifest.digest.as_str())
        .expect("the manifest's event");
    assert_eq!(manifest["target"]["repository"], "hub/library/told");
    assert_eq!(manifest["target"]["tag"], "1");
    let blob = events
        .iter()
        .find(|e| e["target"]["digest"] == layer.digest.as_str())
        .expect("the layer's event");
    assert_eq!(blob["target"]["cid"], cid_of_blob(&layer.data).to_string());
}
