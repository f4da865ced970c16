//! Importing an image by its image CID (docs/federation.md), end to end on each store pair:
//! skopeo pushes to registry A, A publishes the image's layout, registry B (its own
//! metadata) imports it by CID — in Kubo mode through the IPFS node, in embedded mode from
//! A's trustless gateway — and skopeo pulls it from B byte-exact. Importing again changes
//! nothing. Sources that lie are refused with nothing tagged: a gateway serving a block
//! that does not match its CID, a CAR cut short, a missing block, a layout whose blob does
//! not match its digest, and a root that is no layout.
//!
//! Needs skopeo (scripts/ensure-tools.sh), PostgreSQL and the test IPFS node.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use cid::Cid;
use common::federation::{client, image_cid, push, small_image, PlatformIndex};
use common::images::*;
use common::skopeo::Skopeo;
use common::{cid_of_blob, StorePair, TestRegistry};
use futures::StreamExt;
use ipfs_registry::blobs::kubo::DAG_PB_CODEC;
use ipfs_registry::blobs::layout::{self, Content};
use ipfs_registry::oci::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

common::on_each_store_pair!(an_image_imports_by_cid_into_another_registry_byte_exact);
common::on_each_store_pair!(a_multi_platform_index_imports_with_every_platform);
common::on_each_store_pair!(lying_sources_are_refused_and_nothing_is_tagged);
common::on_each_store_pair!(the_cli_imports_and_says_why_it_refuses);
common::on_store_pairs!(
    [postgres_ipfs_node: PostgresIpfsNode]
    a_layout_chunked_otherwise_is_stored_under_this_registrys_profile
);

/// `POST /v2/_ext/<repo>/import?cid=…[&tag=…]`: status and body.
async fn import(
    registry: &TestRegistry,
    repo: &str,
    cid: &Cid,
    tag: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut query = vec![("cid", cid.to_string())];
    if let Some(tag) = tag {
        query.push(("tag", tag.to_owned()));
    }
    let answer = client()
        .post(registry.url(&format!("/v2/_ext/{repo}/import")))
        .query(&query)
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    (status, answer.json().await.unwrap_or_default())
}

/// [`small_image`] plus a layer of zeros whose DAG repeats one chunk: a CAR sends that
/// block once, and the importer reads it again for each place it fills.
fn image_with_repeated_chunks() -> Image {
    let base = small_image();
    let tar = tar_with_file("zeros.bin", &vec![0; 900 * 1024]);
    let zeros = Layer {
        diff_id: sha256_digest(&tar),
        blob: Blob::new(OCI_LAYER_TAR, tar),
    };
    let mut layers = base.layers.clone();
    layers.push(zeros);
    make_image_from_layers("amd64", "linux", layers, false)
}

/// B: its own metadata; in embedded mode it reads from `gateway` (A's, unless a test
/// gateway stands in). In Kubo mode without a gateway it reads through the node.
async fn start_b(pair: StorePair, gateway: Option<String>) -> TestRegistry {
    pair.start_registry_with(|config| {
        if let Some(gateway) = gateway {
            config.federation.gateways = vec![gateway.parse().unwrap()];
        }
    })
    .await
}

fn gateway_for(pair: StorePair, a: &TestRegistry) -> Option<String> {
    match pair {
        StorePair::PostgresIpfsNode => None,
        StorePair::Embedded => Some(a.base.clone()),
    }
}

/// `ipfs_calls_total{operation=…}` of `registry` (0 before the first call).
async fn ipfs_calls(registry: &TestRegistry, operation: &str) -> f64 {
    let series = format!("ipfs_registry_ipfs_calls_total{{operation=\"{operation}\"}}");
    registry.metric(&series).await.unwrap_or(0.0)
}

/// The CID `registry` stores blob `digest` of `repo` under (its `X-Ipfs-Path`).
async fn stored_cid(registry: &TestRegistry, repo: &str, digest: &str) -> Cid {
    let answer = client()
        .head(registry.url(&format!("/v2/{repo}/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200, "HEAD {repo}@{digest}");
    let path = answer.headers()["x-ipfs-path"].to_str().unwrap().to_owned();
    path.trim_start_matches("/ipfs/").parse().unwrap()
}

/// Every blob of `image` in `repo` of `registry` is stored under the CID the default import
/// profile gives its bytes.
async fn assert_stored_under_the_default_profile(
    registry: &TestRegistry,
    repo: &str,
    image: &Image,
) {
    for blob in image.blobs() {
        assert_eq!(
            stored_cid(registry, repo, blob.digest.as_str()).await,
            cid_of_blob(&blob.data),
            "{}: stored under the default profile",
            blob.digest
        );
    }
}

/// `images_imported_total{outcome=…}` of `registry`.
async fn imports(registry: &TestRegistry, outcome: &str) -> f64 {
    let series = format!("ipfs_registry_images_imported_total{{outcome=\"{outcome}\"}}");
    registry
        .metric(&series)
        .await
        .unwrap_or_else(|| panic!("{series}"))
}

async fn status_of(registry: &TestRegistry, path: &str) -> u16 {
    client()
        .get(registry.url(path))
        .header(
            "Accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json",
        )
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn an_image_imports_by_cid_into_another_registry_byte_exact(pair: StorePair) {
    let a = pair.start_registry().await;
    let skopeo = Skopeo::new();
    let image = image_with_repeated_chunks();
    push(&skopeo, &a, &image, "fed/app:v1").await;
    let cid = image_cid(&a, "fed/app", "v1").await;

    let b = start_b(pair, gateway_for(pair, &a)).await;
    let (status, body) = import(&b, "mirror/app", &cid, None).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["tag"], "v1", "{body}");
    assert_eq!(body["digest"], image.manifest.digest.as_str(), "{body}");
    assert_eq!(body["blobs"], 4, "{body}");
    assert_eq!(body["blobsPresent"], 0, "{body}");
    assert_eq!(body["unchanged"], false, "{body}");
    if matches!(pair, StorePair::PostgresIpfsNode) {
        // Through the node, the layout's files are B's blobs as they stand: read once to
        // be checked, pinned, and never added again.
        assert_eq!(ipfs_calls(&b, "add").await, 0.0, "B added bytes");
        assert_stored_under_the_default_profile(&b, "mirror/app", &image).await;
    }

    // skopeo pulls it from B, byte-exact.
    let dir = tempfile::tempdir().unwrap();
    let pulled = dir.path().join("pulled");
    skopeo
        .copy(
            &format!("docker://{}/mirror/app:v1", b.host()),
            &format!("oci:{}:v1", pulled.display()),
            &["--preserve-digests"],
        )
        .await;
    let pulled = OciLayout::open(&pulled);
    assert_eq!(
        pulled.tagged("v1")["digest"],
        image.manifest.digest.as_str()
    );
    assert!(pulled.blob(&image.manifest.digest) == image.manifest.data);
    for blob in image.blobs() {
        assert!(pulled.blob(&blob.digest) == blob.data, "{}", blob.digest);
    }
    // B publishes the same image under the same tag: the same image CID.
    assert_eq!(image_cid(&b, "mirror/app", "v1").await, cid);

    // Again: nothing to do, nothing changes.
    let (status, again) = import(&b, "mirror/app", &cid, None).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["unchanged"], true, "{again}");
    // The manifest is there, and with it everything it references: nothing is looked at.
    assert_eq!(again["manifestsPresent"], 1, "{again}");
    assert_eq!(again["blobs"], 0, "{again}");
    assert_eq!(again["bytesFetched"], 0, "{again}");
    // Under another tag: the manifest and blobs are there already; only the tag is new.
    let (status, other) = import(&b, "mirror/app", &cid, Some("stable")).await;
    assert_eq!(status, 201, "{other}");
    assert_eq!(other["tag"], "stable", "{other}");
    assert_eq!(other["bytesFetched"], 0, "{other}");
    assert_eq!(status_of(&b, "/v2/mirror/app/manifests/stable").await, 200);
    assert_eq!(imports(&b, "imported").await, 2.0);
    assert_eq!(imports(&b, "unchanged").await, 1.0);

    // Bad requests name what is wrong.
    let answer = client()
        .post(b.url("/v2/_ext/mirror/app/import"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
}

async fn a_multi_platform_index_imports_with_every_platform(pair: StorePair) {
    let a = pair.start_registry().await;
    let skopeo = Skopeo::new();
    let platforms = PlatformIndex::new();
    platforms.push(&skopeo, &a, "fed/multi:multi").await;
    let cid = image_cid(&a, "fed/multi", "multi").await;

    let b = start_b(pair, gateway_for(pair, &a)).await;
    let (status, body) = import(&b, "fed/multi", &cid, None).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["manifests"], 3, "{body}");
    // Two configs, three distinct layers (one shared by both platforms).
    assert_eq!(body["blobs"], 5, "{body}");

    let dir = tempfile::tempdir().unwrap();
    let pulled = dir.path().join("pulled");
    skopeo
        .copy(
            &format!("docker://{}/fed/multi:multi", b.host()),
            &format!("oci:{}:multi", pulled.display()),
            &["--all", "--preserve-digests"],
        )
        .await;
    let pulled = OciLayout::open(&pulled);
    let index = &platforms.index;
    assert_eq!(pulled.tagged("multi")["digest"], index.digest.as_str());
    for blob in platforms.contents().into_iter().chain([index]) {
        assert!(pulled.blob(&blob.digest) == blob.data, "{}", blob.digest);
    }
}

/// How the test gateway lies.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lie {
    /// Serves what it holds, faithfully.
    None,
    /// Flips a byte of this block wherever it serves it (alone, or in a CAR).
    Corrupt(Cid),
    /// Cuts every CAR short by a few bytes.
    TruncateCars,
}

/// A trustless gateway over a map of blocks (`?format=raw` and `?format=car`), speaking
/// just enough HTTP/1.1 (one request per connection), that can lie.
struct TestGateway {
    base: String,
    lie: Arc<std::sync::Mutex<Lie>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestGateway {
    async fn start(blocks: HashMap<Cid, Vec<u8>>, lie: Lie) -> TestGateway {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let blocks = Arc::new(blocks);
        let lie = Arc::new(std::sync::Mutex::new(lie));
        let lying = lie.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let blocks = blocks.clone();
                let lie = *lying.lock().unwrap();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let target = head.split(' ').nth(1).unwrap_or_default().to_owned();
                    let (status, body) = answer(&blocks, lie, &target).await;
                    let reply = format!(
                        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(reply.as_bytes()).await;
                    let _ = stream.write_all(&body).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        TestGateway { base, lie, task }
    }

    /// From now on, lies so (or not).
    fn set_lie(&self, lie: Lie) {
        *self.lie.lock().unwrap() = lie;
    }
}

async fn answer(blocks: &HashMap<Cid, Vec<u8>>, lie: Lie, target: &str) -> (&'static str, Vec<u8>) {
    let Some(rest) = target.strip_prefix("/ipfs/") else {
        return ("404 Not Found", Vec::new());
    };
    let (cid, query) = rest.split_once('?').unwrap_or((rest, ""));
    let Ok(cid) = cid.parse::<Cid>() else {
        return ("400 Bad Request", Vec::new());
    };
    let served = |cid: &Cid| {
        blocks.get(cid).map(|block| {
            let mut block = block.clone();
            if lie == Lie::Corrupt(*cid) {
                let last = block.len() - 1;
                block[last] ^= 0xff;
            }
            block
        })
    };
    if query.contains("format=raw") {
        return match served(&cid) {
            Some(block) => ("200 OK", block),
            None => ("404 Not Found", Vec::new()),
        };
    }
    if !query.contains("format=car") || !blocks.contains_key(&cid) {
        return ("404 Not Found", Vec::new());
    }
    // Root first, depth first, each block once; a block it lacks is left out.
    let mut car = Vec::new();
    let mut writer = iroh_car::CarWriter::new(iroh_car::CarHeader::new_v1(vec![cid]), &mut car);
    let mut seen = HashSet::new();
    let mut stack = vec![cid];
    while let Some(next) = stack.pop() {
        if !seen.insert(next) {
            continue;
        }
        let Some(block) = served(&next) else { continue };
        if next.codec() == DAG_PB_CODEC {
            let node = ipld_dagpb::PbNode::from_bytes(Bytes::from(blocks[&next].clone())).unwrap();
            stack.extend(node.links.iter().rev().map(|l| l.cid));
        }
        writer.write(next, &block).await.unwrap();
    }
    writer.finish().await.unwrap();
    if lie == Lie::TruncateCars {
        car.truncate(car.len() - 7);
    }
    ("200 OK", car)
}

/// Every block of the DAG under `root`, from `registry`'s gateway as one verified CAR.
async fn blocks_of(registry: &TestRegistry, root: &Cid) -> HashMap<Cid, Vec<u8>> {
    let answer = client()
        .get(registry.url(&format!("/ipfs/{root}?format=car")))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let body = Box::pin(
        answer
            .bytes_stream()
            .map(|p| p.map_err(std::io::Error::other)),
    );
    let mut verified = ipfs_registry::blobs::verified_car::verified(*root, body);
    let mut car = Vec::new();
    while let Some(piece) = verified.next().await {
        car.extend_from_slice(&piece.unwrap());
    }
    let mut reader = iroh_car::CarReader::new(std::io::Cursor::new(car))
        .await
        .unwrap();
    let mut blocks = HashMap::new();
    while let Some((cid, block)) = reader.next_block().await.unwrap() {
        blocks.insert(cid, block);
    }
    blocks
}

/// The leaves (raw blocks) of the DAG under `root`.
fn leaves_of(blocks: &HashMap<Cid, Vec<u8>>, root: &Cid) -> Vec<Cid> {
    let mut leaves = Vec::new();
    let mut stack = vec![*root];
    while let Some(cid) = stack.pop() {
        if cid.codec() == DAG_PB_CODEC {
            let node = ipld_dagpb::PbNode::from_bytes(Bytes::from(blocks[&cid].clone())).unwrap();
            stack.extend(node.links.iter().map(|l| l.cid));
        } else {
            leaves.push(cid);
        }
    }
    leaves
}

/// Asserts an import of `cid` from `gateway` is refused as LAYOUT_INVALID (its message
/// containing `reason`) and leaves nothing tagged in `repo`; returns the registry it
/// started for it.
async fn refused(
    pair: StorePair,
    gateway: &TestGateway,
    cid: &Cid,
    repo: &str,
    reason: &str,
) -> TestRegistry {
    let b = start_b(pair, Some(gateway.base.clone())).await;
    let (status, body) = import(&b, repo, cid, Some("v1")).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errors"][0]["code"], "LAYOUT_INVALID", "{body}");
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains(reason), "{reason:?} not in {body}");
    assert_eq!(
        status_of(&b, &format!("/v2/{repo}/manifests/v1")).await,
        404
    );
    assert_eq!(imports(&b, "refused").await, 1.0);
    let tags = client()
        .get(b.url(&format!("/v2/{repo}/tags/list")))
        .send()
        .await
        .unwrap();
    let tags: serde_json::Value = tags.json().await.unwrap_or_default();
    assert!(
        tags["tags"].as_array().is_none_or(|t| t.is_empty()),
        "{tags}"
    );
    b
}

async fn lying_sources_are_refused_and_nothing_is_tagged(pair: StorePair) {
    let a = pair.start_registry().await;
    let skopeo = Skopeo::new();
    let image = small_image();
    push(&skopeo, &a, &image, "fed/app:v1").await;
    let cid = image_cid(&a, "fed/app", "v1").await;
    let blocks = blocks_of(&a, &cid).await;

    // Honest, the test gateway is a source like any other.
    let honest = TestGateway::start(blocks.clone(), Lie::None).await;
    let b = start_b(pair, Some(honest.base.clone())).await;
    let (status, body) = import(&b, "ok/app", &cid, None).await;
    assert_eq!(status, 201, "{body}");

    // A layer over this registry's limit is refused before any blob is fetched.
    let small = pair
        .start_registry_with(|config| {
            config.federation.gateways = vec![honest.base.parse().unwrap()];
            config.limits.max_blob_size = 100 * 1024;
        })
        .await;
    let (status, body) = import(&small, "big/app", &cid, None).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["errors"][0]["code"], "SIZE_INVALID", "{body}");
    assert_eq!(imports(&small, "refused").await, 1.0);
    for blob in image.blobs() {
        let path = format!("/v2/big/app/blobs/{}", blob.digest);
        assert_eq!(status_of(&small, &path).await, 404, "{path}");
    }

    // One leaf of the large layer, served wrong (alone and inside the layer's CAR).
    let layer = &image.layers[0].blob;
    let layer_root = blocks_root_of(&blocks, &cid, &layer.digest);
    let leaf = leaves_of(&blocks, &layer_root)[1];
    let corrupt = TestGateway::start(blocks.clone(), Lie::Corrupt(leaf)).await;
    let b = refused(
        pair,
        &corrupt,
        &cid,
        "corrupt/app",
        "does not match its CID",
    )
    .await;
    // The source mends its ways: the same import resumes (what the refused one stored is
    // skipped) and the image is whole.
    corrupt.set_lie(Lie::None);
    let (status, body) = import(&b, "corrupt/app", &cid, Some("v1")).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["blobs"], 3, "{body}");
    for blob in image.blobs().into_iter().chain([&image.manifest]) {
        let path = if blob.digest == image.manifest.digest {
            "/v2/corrupt/app/manifests/v1".to_owned()
        } else {
            format!("/v2/corrupt/app/blobs/{}", blob.digest)
        };
        let answer = client()
            .get(b.url(&path))
            .header("Accept", image.manifest.media_type.as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "{path}");
        assert!(answer.bytes().await.unwrap() == blob.data, "{path}");
    }

    // Every CAR cut short.
    let truncated = TestGateway::start(blocks.clone(), Lie::TruncateCars).await;
    refused(pair, &truncated, &cid, "cut/app", "CAR").await;

    // A block missing.
    let mut missing = blocks.clone();
    missing.remove(&leaf);
    let missing = TestGateway::start(missing, Lie::None).await;
    refused(pair, &missing, &cid, "missing/app", &leaf.to_string()).await;

    // A layout whose layer file is not the layer: every block matches its CID, the bytes
    // do not match the digest they are filed under.
    let forged = forged_layout(&image, &layer.digest, a.config.import_profile.chunk_size);
    let forged_blocks: HashMap<Cid, Vec<u8>> = forged
        .blocks
        .iter()
        .map(|(cid, bytes)| (*cid, bytes.to_vec()))
        .collect();
    let forger = TestGateway::start(forged_blocks, Lie::None).await;
    refused(pair, &forger, &forged.root, "forged/app", &layer.digest).await;

    // A directory that is not a layout.
    let (other, other_block, _) =
        ipfs_registry::blobs::unixfs::directory_node(&[("hello".to_owned(), leaf, 1)]);
    let mut not_layout = blocks.clone();
    not_layout.insert(other, other_block.to_vec());
    let plain = TestGateway::start(not_layout, Lie::None).await;
    refused(pair, &plain, &other, "plain/app", "not an OCI image layout").await;
}

/// `image`'s layout with one byte of the blob `forged` changed, filed under its digest all
/// the same: every block matches its CID, one file does not match its name.
fn forged_layout(image: &Image, forged: &str, chunk_size: u32) -> layout::Layout {
    let mut files = std::collections::BTreeMap::new();
    files.insert(
        Digest::sha256_of(&image.manifest.data),
        Content::Bytes(Bytes::from(image.manifest.data.clone())),
    );
    for blob in image.blobs() {
        let mut data = blob.data.clone();
        if blob.digest == forged {
            data[100] ^= 1;
        }
        files.insert(
            blob.digest.parse().unwrap(),
            Content::Bytes(Bytes::from(data)),
        );
    }
    layout::build(
        &layout::Image {
            tag: "v1".into(),
            media_type: image.manifest.media_type.clone(),
            digest: Digest::sha256_of(&image.manifest.data),
            size: image.manifest.data.len() as u64,
            blobs: files,
        },
        chunk_size,
    )
    .unwrap()
}

/// The root of the file `blobs/sha256/<hex of digest>` in the layout under `root`.
fn blocks_root_of(blocks: &HashMap<Cid, Vec<u8>>, root: &Cid, digest: &str) -> Cid {
    let link = |cid: &Cid, name: &str| {
        let node = ipld_dagpb::PbNode::from_bytes(Bytes::from(blocks[cid].clone())).unwrap();
        node.links
            .iter()
            .find(|l| l.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("{name} in {cid}"))
            .cid
    };
    let blobs = link(root, "blobs");
    let sha256 = link(&blobs, "sha256");
    link(&sha256, digest_hex(digest))
}

/// `ipfs-registry import <cid> <repo>[:<tag>]` on B's stores (B running): the tag from the
/// layout, then one given; a CID that is no layout exits non-zero saying so.
async fn the_cli_imports_and_says_why_it_refuses(pair: StorePair) {
    let a = pair.start_registry().await;
    let skopeo = Skopeo::new();
    let image = small_image();
    push(&skopeo, &a, &image, "fed/app:v1").await;
    let cid = image_cid(&a, "fed/app", "v1").await;
    let gateway = gateway_for(pair, &a);
    let b = start_b(pair, gateway.clone()).await;
    let run = |args: &[&str]| {
        let mut command = common::cli::registry_command();
        command.envs(common::cli::stores_env(&b.config));
        if let Some(gateway) = &gateway {
            command.env(
                "IPFS_REGISTRY_FEDERATION__GATEWAYS",
                format!("[\"{gateway}\"]"),
            );
        }
        command.arg("import").args(args);
        async move {
            tokio::task::spawn_blocking(move || command.output().expect("run ipfs-registry import"))
                .await
                .unwrap()
        }
    };
    let cid_arg = cid.to_string();
    let out = run(&[&cid_arg, "cli/app"]).await;
    let stdout = common::cli::succeeded(&out);
    assert_eq!(
        stdout.trim(),
        format!("cli/app:v1 {}", image.manifest.digest)
    );
    let out = run(&[&cid_arg, "cli/app:stable"]).await;
    let stdout = common::cli::succeeded(&out);
    assert_eq!(
        stdout.trim(),
        format!("cli/app:stable {}", image.manifest.digest)
    );
    for tag in ["v1", "stable"] {
        assert_eq!(
            status_of(&b, &format!("/v2/cli/app/manifests/{tag}")).await,
            200
        );
    }
    // The CLI publishes what it imported, under the same image CID.
    assert_eq!(image_cid(&b, "cli/app", "v1").await, cid);

    // A layer's CID is no layout: refused, with the reason.
    let layer = cid_of_blob(&image.layers[1].blob.data).to_string();
    let out = run(&[&layer, "cli/nope:v1"]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is not an image layout"), "{stderr}");
    assert_eq!(status_of(&b, "/v2/cli/nope/manifests/v1").await, 404);
}

/// Two registries that share nothing but the IPFS network: A on node 1, B on node 2 (its
/// own database), the nodes connected over loopback. Push to A, stop A's registry process
/// (only node 1 is left), import by CID on B, pull from B byte-exact: the blocks came over
/// IPFS, not A's HTTP. Measures the seconds from the push on A to pullable on B for a
/// ~10 MiB image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_crosses_between_two_nodes_while_its_registry_is_stopped() {
    use common::private_node::PrivateNode;
    let (node1, node2) = tokio::join!(
        tokio::task::spawn_blocking(PrivateNode::start_on_swarm),
        tokio::task::spawn_blocking(PrivateNode::start_on_swarm),
    );
    let (node1, node2) = (node1.unwrap(), node2.unwrap());
    node2.connect(&node1).await;
    let on = |node: &PrivateNode| {
        let url = node.url.clone();
        move |config: &mut ipfs_registry::config::Config| config.ipfs.url = Some(url)
    };
    let a = StorePair::PostgresIpfsNode
        .start_registry_with(on(&node1))
        .await;
    let skopeo = Skopeo::new();
    let image = make_image(
        "amd64",
        "linux",
        &[LayerSpec::gzip(6 << 20), LayerSpec::gzip(4 << 20)],
        false,
    );
    let started = Instant::now();
    push(&skopeo, &a, &image, "fed/big:v1").await;
    let pushed = started.elapsed();
    let cid = image_cid(&a, "fed/big", "v1").await;
    let published = started.elapsed();
    let a_base = a.base.clone();
    a.server.stop().await;
    assert!(
        client().get(format!("{a_base}/v2/")).send().await.is_err(),
        "A's registry still answers"
    );

    let b = StorePair::PostgresIpfsNode
        .start_registry_with(on(&node2))
        .await;
    let before_import = started.elapsed();
    let (status, body) = import(&b, "fed/big", &cid, None).await;
    assert_eq!(status, 201, "{body}");
    let imported = started.elapsed();
    assert!(body["bytesFetched"].as_u64().unwrap() > 10 << 20, "{body}");
    let dir = tempfile::tempdir().unwrap();
    let pulled = dir.path().join("pulled");
    skopeo
        .copy(
            &format!("docker://{}/fed/big:v1", b.host()),
            &format!("oci:{}:v1", pulled.display()),
            &["--preserve-digests"],
        )
        .await;
    let pullable = started.elapsed();
    let pulled = OciLayout::open(&pulled);
    assert!(pulled.blob(&image.manifest.digest) == image.manifest.data);
    for blob in image.blobs() {
        assert!(pulled.blob(&blob.digest) == blob.data, "{}", blob.digest);
    }
    // B publishes the image itself, under the same image CID: node 2 now holds and
    // announces the same blocks.
    assert_eq!(image_cid(&b, "fed/big", "v1").await, cid);
    eprintln!(
        "two nodes, {} bytes: pushed to A in {:.1} s, published at {:.1} s, B started at \
         {:.1} s, imported at {:.1} s (import {:.1} s), pulled from B at {:.1} s",
        image.blobs().iter().map(|b| b.data.len()).sum::<usize>() + image.manifest.data.len(),
        pushed.as_secs_f64(),
        published.as_secs_f64(),
        before_import.as_secs_f64(),
        imported.as_secs_f64(),
        (imported - before_import).as_secs_f64(),
        pullable.as_secs_f64(),
    );
}

/// A layout whose files were added under another chunk size (another registry's import
/// profile): the node holds them, but not as this registry stores blobs, so they are added
/// again under this registry's profile rather than recorded as they are.
async fn a_layout_chunked_otherwise_is_stored_under_this_registrys_profile(pair: StorePair) {
    let a = pair
        .start_registry_with(|config| config.import_profile.chunk_size = 64 * 1024)
        .await;
    let skopeo = Skopeo::new();
    let image = image_with_repeated_chunks();
    push(&skopeo, &a, &image, "chunked/app:v1").await;
    let cid = image_cid(&a, "chunked/app", "v1").await;
    let big = image
        .blobs()
        .into_iter()
        .max_by_key(|blob| blob.data.len())
        .unwrap();
    assert!(big.data.len() > 256 * 1024, "a layer of several chunks");
    let theirs = stored_cid(&a, "chunked/app", big.digest.as_str()).await;
    assert_ne!(theirs, cid_of_blob(&big.data), "A chunks otherwise");

    let b = start_b(pair, None).await;
    let (status, body) = import(&b, "mirror/chunked", &cid, None).await;
    assert_eq!(status, 201, "{body}");
    assert!(
        ipfs_calls(&b, "add").await >= 1.0,
        "B added the bytes again"
    );
    assert_stored_under_the_default_profile(&b, "mirror/chunked", &image).await;
    let pulled = client()
        .get(b.url(&format!("/v2/mirror/chunked/blobs/{}", big.digest)))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(pulled == big.data, "B serves the layer byte for byte");

    // Through the node, a file read back is checked as any source's: a layout whose layer
    // file is not the layer (all its blocks on the node, under this registry's profile) is
    // refused, and nothing tagged. A registry of its own: one that holds the layer already
    // would check the file against its record instead.
    let b = start_b(pair, None).await;
    let layer = &image.layers[0].blob;
    let forged = forged_layout(&image, &layer.digest, b.config.import_profile.chunk_size);
    put_blocks(&b, &forged.blocks).await;
    let (status, body) = import(&b, "forged/app", &forged.root, Some("v1")).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errors"][0]["code"], "LAYOUT_INVALID", "{body}");
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains(&layer.digest), "{body}");
    assert_eq!(
        status_of(&b, &format!("/v2/forged/app/blobs/{}", layer.digest)).await,
        404
    );
    assert_eq!(status_of(&b, "/v2/forged/app/manifests/v1").await, 404);
}

/// Writes `blocks` into `registry`'s IPFS node, unpinned.
async fn put_blocks(registry: &TestRegistry, blocks: &[(Cid, Bytes)]) {
    let node = registry.config.ipfs.url.as_ref().expect("an IPFS node");
    for (cid, bytes) in blocks {
        common::kubo::put_block(node, cid, bytes).await;
    }
}
