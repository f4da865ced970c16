//! Every tagged image published as an OCI Image Layout in IPFS, end to end, on each store
//! pair: skopeo pushes an image, the layout's CID comes from the extension endpoint, the
//! layout comes back as one CAR (the node's `dag/export`, or the registry's gateway in
//! embedded mode), checked block by block and unpacked into a directory, and skopeo copies
//! that directory to another repository and back, byte-exact. Then the lifecycle: a moved
//! tag's old layout is no longer recorded, is no stray for `verify`, and GC unpins it.
//!
//! Needs skopeo (scripts/ensure-tools.sh), PostgreSQL and the test IPFS node.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cid::Cid;
use common::federation::{client, image_cid, push, small_image, PlatformIndex};
use common::images::*;
use common::skopeo::Skopeo;
use common::{StorePair, TestRegistry};
use futures::StreamExt;
use ipfs_registry::blobs::kubo::DAG_PB_CODEC;
use ipfs_registry::blobs::BlobStore;
use ipfs_registry::meta::gc::SweepPolicy;

common::on_each_store_pair!(a_pushed_image_is_a_layout_skopeo_copies_back_byte_exact);
common::on_each_store_pair!(a_multi_platform_index_is_one_layout_with_every_platform);
common::on_each_store_pair!(a_moved_tag_leaves_its_old_layout_to_gc);
common::on_each_store_pair!(each_tag_of_one_image_keeps_a_layout_of_its_own);
common::on_each_store_pair!(the_image_page_shows_the_image_cid_with_commands_to_copy_it);
common::on_each_store_pair!(private_images_are_not_published_until_public_and_publish_runs);

/// `GET /v2/_ext/<repo>/manifests/<reference>/layout`: status and body.
async fn layout_of(
    registry: &TestRegistry,
    repo: &str,
    reference: &str,
) -> (u16, serde_json::Value) {
    let answer = client()
        .get(registry.url(&format!("/v2/_ext/{repo}/manifests/{reference}/layout")))
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    (status, answer.json().await.unwrap_or_default())
}

/// The layout under `root` as one CAR: from the node (Kubo mode: any IPFS user could ask
/// it), or the registry's own trustless gateway (embedded mode).
async fn fetch_car(pair: StorePair, registry: &TestRegistry, root: &Cid) -> Bytes {
    let answer = match pair {
        StorePair::PostgresIpfsNode => {
            client()
                .post(common::ipfs_url().join("api/v0/dag/export").unwrap())
                .query(&[("arg", root.to_string())])
                .send()
                .await
        }
        StorePair::Embedded => {
            client()
                .get(registry.url(&format!("/ipfs/{root}?format=car")))
                .send()
                .await
        }
    }
    .unwrap();
    assert!(answer.status().is_success(), "{}", answer.status());
    // Checked as it passes: every block against its CID, every link's block present.
    let body = Box::pin(
        answer
            .bytes_stream()
            .map(|piece| piece.map_err(std::io::Error::other)),
    );
    let mut verified = ipfs_registry::blobs::verified_car::verified(*root, body);
    let mut car = Vec::new();
    while let Some(piece) = verified.next().await {
        car.extend_from_slice(&piece.expect("a complete, verified CAR"));
    }
    Bytes::from(car)
}

/// The blocks of a CAR by CID.
async fn car_blocks(car: Bytes) -> HashMap<Cid, Vec<u8>> {
    let mut reader = iroh_car::CarReader::new(std::io::Cursor::new(car.to_vec()))
        .await
        .expect("a CAR");
    let mut blocks = HashMap::new();
    while let Some((cid, block)) = reader.next_block().await.expect("a block") {
        blocks.insert(cid, block);
    }
    blocks
}

/// Writes the UnixFS DAG under `cid` to `path`: directories as directories, files as
/// their leaves' bytes in link order.
fn unpack(blocks: &HashMap<Cid, Vec<u8>>, cid: &Cid, path: &Path) {
    let block = &blocks[cid];
    if cid.codec() != DAG_PB_CODEC {
        std::fs::write(path, block).unwrap();
        return;
    }
    let node = ipld_dagpb::PbNode::from_bytes(Bytes::copy_from_slice(block)).unwrap();
    // UnixFS Data: field 1 (type) first; 1 = directory.
    let directory = node
        .data
        .as_deref()
        .is_some_and(|d| d.starts_with(&[0x08, 0x01]));
    if directory {
        std::fs::create_dir_all(path).unwrap();
        for link in &node.links {
            unpack(blocks, &link.cid, &path.join(link.name.as_deref().unwrap()));
        }
    } else {
        let mut bytes = Vec::new();
        collect_file(blocks, cid, &mut bytes);
        std::fs::write(path, bytes).unwrap();
    }
}

fn collect_file(blocks: &HashMap<Cid, Vec<u8>>, cid: &Cid, out: &mut Vec<u8>) {
    let block = &blocks[cid];
    if cid.codec() != DAG_PB_CODEC {
        out.extend_from_slice(block);
        return;
    }
    let node = ipld_dagpb::PbNode::from_bytes(Bytes::copy_from_slice(block)).unwrap();
    for link in &node.links {
        collect_file(blocks, &link.cid, out);
    }
}

async fn manifest_bytes(registry: &TestRegistry, repo: &str, reference: &str) -> Bytes {
    let answer = client()
        .get(registry.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header(
            "Accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    answer.bytes().await.unwrap()
}

async fn a_pushed_image_is_a_layout_skopeo_copies_back_byte_exact(pair: StorePair) {
    let registry = pair.start_registry().await;
    let skopeo = Skopeo::new();
    let image = small_image();
    push(&skopeo, &registry, &image, "fed/app:v1").await;

    let cid = image_cid(&registry, "fed/app", "v1").await;
    let (_, body) = layout_of(&registry, "fed/app", "v1").await;
    assert_eq!(body["digest"], image.manifest.digest.as_str(), "{body}");
    // By digest too; an untagged reference or an unknown tag has none.
    assert_eq!(
        image_cid(&registry, "fed/app", &image.manifest.digest).await,
        cid
    );
    // The web UI shows it with the commands to copy the image out.
    let page = client()
        .get(registry.url("/ui/image/fed/app@v1"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(&format!("ipfs get /ipfs/{cid} -o app")),
        "{page}"
    );
    assert!(page.contains("skopeo copy oci:app:v1 docker://"), "{page}");
    let (status, body) = layout_of(&registry, "fed/app", "nope").await;
    assert_eq!(status, 404);
    assert_eq!(body["errors"][0]["code"], "MANIFEST_UNKNOWN", "{body}");

    let blocks = car_blocks(fetch_car(pair, &registry, &cid).await).await;
    let dir = tempfile::tempdir().unwrap();
    let unpacked = dir.path().join("app");
    unpack(&blocks, &cid, &unpacked);
    let layout = OciLayout::open(&unpacked);
    assert_eq!(
        layout.tagged("v1")["digest"],
        image.manifest.digest.as_str()
    );
    assert_eq!(
        std::fs::read(unpacked.join("oci-layout")).unwrap(),
        br#"{"imageLayoutVersion":"1.0.0"}"#
    );
    let all = layout.all_blobs();
    assert_eq!(all.len(), 1 + image.blobs().len());
    assert!(all[&image.manifest.digest] == image.manifest.data);
    for blob in image.blobs() {
        assert!(all[&blob.digest] == blob.data, "{}", blob.digest);
    }

    // The layout is a source skopeo reads: to another repository, and back out again.
    skopeo
        .copy(
            &format!("oci:{}:v1", unpacked.display()),
            &format!("docker://{}/fed/copy:v1", registry.host()),
            &["--preserve-digests"],
        )
        .await;
    assert_eq!(
        manifest_bytes(&registry, "fed/copy", "v1").await,
        image.manifest.data
    );
    let back = dir.path().join("back");
    skopeo
        .copy(
            &format!("docker://{}/fed/copy:v1", registry.host()),
            &format!("oci:{}:v1", back.display()),
            &["--preserve-digests"],
        )
        .await;
    let back = OciLayout::open(&back);
    assert_eq!(back.tagged("v1")["digest"], image.manifest.digest.as_str());
    assert!(back.blob(&image.manifest.digest) == image.manifest.data);
    // The same image under the same tag: the same image CID, whatever the repository.
    assert_eq!(image_cid(&registry, "fed/copy", "v1").await, cid);
}

/// An index's layout holds the index, its children and all their blobs (a layer shared by
/// two platforms once): `skopeo copy --all` reads it back to a registry byte-exact.
async fn a_multi_platform_index_is_one_layout_with_every_platform(pair: StorePair) {
    let registry = pair.start_registry().await;
    let skopeo = Skopeo::new();
    let platforms = PlatformIndex::new();
    platforms.push(&skopeo, &registry, "fed/multi:multi").await;
    let PlatformIndex {
        amd64,
        arm64,
        index,
    } = &platforms;
    let contents = platforms.contents();

    let cid = image_cid(&registry, "fed/multi", "multi").await;
    let blocks = car_blocks(fetch_car(pair, &registry, &cid).await).await;
    let dir = tempfile::tempdir().unwrap();
    let unpacked = dir.path().join("multi");
    unpack(&blocks, &cid, &unpacked);
    let layout = OciLayout::open(&unpacked);
    assert_eq!(layout.tagged("multi")["digest"], index.digest.as_str());
    let all = layout.all_blobs();
    let expected: std::collections::BTreeSet<&str> = contents
        .iter()
        .map(|b| b.digest.as_str())
        .chain([index.digest.as_str()])
        .collect();
    assert_eq!(
        all.keys()
            .map(String::as_str)
            .collect::<std::collections::BTreeSet<_>>(),
        expected
    );
    for blob in contents.iter().copied().chain([index]) {
        assert!(all[&blob.digest] == blob.data, "{}", blob.digest);
    }

    skopeo
        .copy(
            &format!("oci:{}:multi", unpacked.display()),
            &format!("docker://{}/fed/multi-copy:multi", registry.host()),
            &["--all", "--preserve-digests"],
        )
        .await;
    assert_eq!(
        manifest_bytes(&registry, "fed/multi-copy", "multi").await,
        index.data
    );
    for child in [&amd64.manifest, &arm64.manifest] {
        assert_eq!(
            manifest_bytes(&registry, "fed/multi-copy", &child.digest).await,
            child.data
        );
    }
}

async fn a_moved_tag_leaves_its_old_layout_to_gc(pair: StorePair) {
    let registry = pair.start_registry().await;
    let store = blob_store(&registry);
    let skopeo = Skopeo::new();
    push(&skopeo, &registry, &small_image(), "fed/moving:latest").await;
    let old = image_cid(&registry, "fed/moving", "latest").await;
    assert!(store.is_pinned(&old).await.unwrap());

    push(&skopeo, &registry, &small_image(), "fed/moving:latest").await;
    let new = image_cid(&registry, "fed/moving", "latest").await;
    assert_ne!(new, old);
    // Until GC, the old root is pinned and known (queued for unpinning): no stray.
    let unrecorded = registry.server.registry.unrecorded_content().await.unwrap();
    assert!(
        !unrecorded.contains(&old) && !unrecorded.contains(&new),
        "{unrecorded:?}"
    );

    let report = collect_garbage(&registry).await;
    assert_eq!(report.unpin_failures, 0);
    assert!(!store.is_pinned(&old).await.unwrap(), "old layout unpinned");
    assert!(store.is_pinned(&new).await.unwrap(), "current layout kept");
    let unrecorded = registry.server.registry.unrecorded_content().await.unwrap();
    assert!(!unrecorded.contains(&new), "{unrecorded:?}");

    // A deleted tag's layout goes the same way.
    let deleted = client()
        .delete(registry.url("/v2/fed/moving/manifests/latest"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status().as_u16(), 202);
    let (status, _) = layout_of(&registry, "fed/moving", "latest").await;
    assert_eq!(status, 404);
    collect_garbage(&registry).await;
    assert!(
        !store.is_pinned(&new).await.unwrap(),
        "deleted tag's layout unpinned"
    );
}

/// The blob store `registry` runs on, opened anew beside it.
fn blob_store(registry: &TestRegistry) -> Arc<dyn BlobStore> {
    ipfs_registry::blobs::open(
        &registry.config,
        Arc::new(ipfs_registry::metrics::Metrics::new()),
    )
    .unwrap()
}

/// One GC run on `registry` that deletes no manifest and keeps recent links: it unpins
/// what tags that moved or went left behind.
async fn collect_garbage(registry: &TestRegistry) -> ipfs_registry::registry::gc::GcReport {
    let policy = SweepPolicy {
        grace_period: Duration::from_secs(3600),
        untagged_retention: None,
        upload_expiry: Duration::from_secs(24 * 3600),
        ..SweepPolicy::default()
    };
    registry
        .server
        .registry
        .collect_garbage(&policy, false, &|_| {})
        .await
        .unwrap()
        .expect("no other GC run")
}

/// The web UI's image page shows a published image's CID, with the commands that fetch
/// its layout from IPFS and copy it into a registry (and its CAR from the gateway).
async fn the_image_page_shows_the_image_cid_with_commands_to_copy_it(pair: StorePair) {
    let registry = pair.start_registry().await;
    push(&Skopeo::new(), &registry, &small_image(), "fed/shown:v1").await;
    let cid = image_cid(&registry, "fed/shown", "v1").await;
    let answer = client()
        .get(registry.url("/ui/image/fed/shown@v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    let page = answer.text().await.unwrap();
    for shown in [
        "In IPFS".to_owned(),
        format!("ipfs get /ipfs/{cid} -o shown"),
        "skopeo copy oci:shown:v1 docker://&lt;registry&gt;/fed/shown:v1".to_owned(),
        format!("/ipfs/{cid}?format=car"),
    ] {
        assert!(page.contains(&shown), "{shown}: {page}");
    }
}

/// A second tag of the same manifest gets its own layout, published next to the first
/// one's (on Kubo, pinned by difference from it: `pin/update`, which leaves the first pin
/// alone). The two share every file: when the first tag goes and GC unpins its layout, the
/// second stays pinned and whole.
async fn each_tag_of_one_image_keeps_a_layout_of_its_own(pair: StorePair) {
    let registry = pair.start_registry().await;
    let store = blob_store(&registry);
    let skopeo = Skopeo::new();
    let image = small_image();
    push(&skopeo, &registry, &image, "fed/twins:first").await;
    let first = image_cid(&registry, "fed/twins", "first").await;
    let retagged = client()
        .put(registry.url("/v2/fed/twins/manifests/second"))
        .header("Content-Type", image.manifest.media_type.as_str())
        .body(image.manifest.data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(retagged.status().as_u16(), 201);
    let second = image_cid(&registry, "fed/twins", "second").await;
    assert_ne!(first, second, "index.json names the tag");
    assert!(store.is_pinned(&first).await.unwrap());
    assert!(store.is_pinned(&second).await.unwrap());

    let deleted = client()
        .delete(registry.url("/v2/fed/twins/manifests/first"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status().as_u16(), 202);
    let report = collect_garbage(&registry).await;
    assert_eq!(report.unpin_failures, 0);
    assert!(
        !store.is_pinned(&first).await.unwrap(),
        "first layout unpinned"
    );
    assert!(
        store.is_pinned(&second).await.unwrap(),
        "second layout kept"
    );
    let blocks = car_blocks(fetch_car(pair, &registry, &second).await).await;
    let dir = tempfile::tempdir().unwrap();
    unpack(&blocks, &second, dir.path());
    for blob in image.blobs().into_iter().chain([&image.manifest]) {
        let path = dir
            .path()
            .join("blobs/sha256")
            .join(blob.digest.trim_start_matches("sha256:"));
        assert!(
            std::fs::read(&path).unwrap() == blob.data,
            "{}",
            path.display()
        );
    }
}

/// With auth on, a push to a private repository publishes nothing (a layout is public by
/// CID); once the repository is public, `ipfs-registry publish` publishes what was pushed
/// before, and anonymous callers get its image CID.
async fn private_images_are_not_published_until_public_and_publish_runs(pair: StorePair) {
    let auth = common::auth::start_auth_registry(pair).await;
    auth.add_user("admin", "admin-password", true).await;
    let admin = auth
        .client(
            Some(("admin", "admin-password")),
            &["repository:fed/private:pull,push"],
        )
        .await;
    let image = admin.push_image("fed/private", Some("v1"), 2).await;
    let location = "/v2/_ext/fed/private/manifests/v1/layout";
    let answer = admin.get(location).await;
    assert_eq!(answer.status().as_u16(), 404);
    let metrics = client()
        .get(auth.registry.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        common::metric_sample(
            &metrics,
            "ipfs_registry_layouts_published_total{outcome=\"private\"}"
        ),
        Some(1.0),
        "{metrics}"
    );

    auth.make_public("fed/*").await;
    let config = &auth.registry.config;
    let out = common::cli::registry_command()
        .envs(common::cli::stores_env(config))
        .env("IPFS_REGISTRY_AUTH__ENABLED", "true")
        .env("IPFS_REGISTRY_AUTH__SIGNING_KEY", &auth.key_pem)
        .arg("publish")
        .output()
        .expect("run ipfs-registry publish");
    let stdout = common::cli::succeeded(&out);
    let line = stdout.lines().next().unwrap_or_default();
    assert!(line.starts_with("fed/private:v1 "), "{stdout}");
    let cid: Cid = line["fed/private:v1 ".len()..].parse().expect("a CID");

    let anonymous = auth.client(None, &["repository:fed/private:pull"]).await;
    let answer = anonymous.get(location).await;
    assert_eq!(answer.status().as_u16(), 200);
    let body: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(body["cid"], cid.to_string());
    assert_eq!(body["digest"], image.manifest.digest.as_str());
    // Nothing left to publish.
    let again = common::cli::registry_command()
        .envs(common::cli::stores_env(config))
        .env("IPFS_REGISTRY_AUTH__ENABLED", "true")
        .env("IPFS_REGISTRY_AUTH__SIGNING_KEY", &auth.key_pem)
        .args(["publish", "fed/private"])
        .output()
        .expect("run ipfs-registry publish");
    assert_eq!(common::cli::succeeded(&again), "");
}

/// A tagged push answers before its image is published, from a durable queue: with the IPFS
/// node unreachable the push still succeeds, publishing is retried (counted, with backoff),
/// `ipfs-registry publish` publishes a queued image and drops its entry, and a registry
/// process stopped meanwhile leaves the image to the next one, which publishes it once the
/// node is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_is_queued_retried_and_survives_a_restart() {
    let node: std::net::SocketAddr = {
        let url = common::ipfs_url();
        let host = url.host_str().unwrap().to_owned();
        tokio::net::lookup_host((host, url.port().unwrap()))
            .await
            .unwrap()
            .next()
            .unwrap()
    };
    let proxy = common::stall_proxy::StallProxy::start(node).await;
    let registry = StorePair::PostgresIpfsNode
        .start_registry_with(|config| {
            config.ipfs.url = Some(format!("http://{}", proxy.addr).parse().unwrap());
            config.ipfs.timeout = Duration::from_secs(2);
        })
        .await;
    let oci = common::oci::Oci::new(&registry.base);
    let image = oci.push_image("fed/queued", Some("v1"), 2).await;
    let v1 = oci.published_layout("fed/queued", "v1").await;

    proxy.pause();
    // The manifest is in the metadata, its blobs recorded: the push needs no node.
    oci.push_manifest("fed/queued", "v2", &image.manifest).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while common::metric_sample(
        &oci.get("/metrics").await.text().await.unwrap(),
        "ipfs_registry_layouts_published_total{outcome=\"retried\"}",
    )
    .unwrap_or(0.0)
        < 1.0
    {
        assert!(std::time::Instant::now() < deadline, "no failed attempt");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, _) = layout_of(&registry, "fed/queued", "v2").await;
    assert_eq!(status, 404, "not published while the node is unreachable");

    // `ipfs-registry publish` (on a host that reaches the node) publishes a queued image
    // and drops its entry; the other entry stays for the publisher.
    for blob in std::iter::once(&image.config).chain(&image.layers) {
        let mounted = client()
            .post(registry.url(&format!(
                "/v2/fed/by-hand/blobs/uploads/?mount={}&from=fed/queued",
                blob.digest
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(mounted.status().as_u16(), 201);
    }
    oci.push_manifest("fed/by-hand", "v1", &image.manifest)
        .await;
    let out = common::cli::registry_command()
        .envs(common::cli::stores_env(&registry.config))
        .env("IPFS_REGISTRY_IPFS__URL", common::ipfs_url().as_str())
        .args(["publish", "fed/by-hand"])
        .output()
        .expect("run ipfs-registry publish");
    assert!(
        common::cli::succeeded(&out).starts_with("fed/by-hand:v1 "),
        "{out:?}"
    );
    let meta = ipfs_registry::server::metadata_stores(&registry.config)
        .await
        .unwrap()
        .meta;
    assert_eq!(
        meta.queued_layouts().await.unwrap(),
        1,
        "only fed/queued:v2"
    );

    // Another process takes over the queue; the node comes back.
    let config = registry.config.clone();
    registry.server.stop().await;
    proxy.resume();
    let restarted = common::start_registry_from(config).await;
    let oci = common::oci::Oci::new(&restarted.base);
    let v2 = oci.published_layout("fed/queued", "v2").await;
    assert_eq!(v2["digest"], v1["digest"]);
    assert_ne!(v2["cid"], v1["cid"], "the tag is part of the layout");
    // Counted again after the round that published it.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while common::metric_sample(
        &oci.get("/metrics").await.text().await.unwrap(),
        "ipfs_registry_layouts_queued",
    ) != Some(0.0)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "still counted as queued"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
