//! The scrub (`ipfs-registry verify`, and `Registry::scrub` in `serve`): bytes damaged in
//! the blob store after a verified push are found, reported (text and JSON), quarantined
//! (pulls answer 404 and say why), counted in the metrics, and healed by a push of the
//! same bytes. On the embedded store by overwriting a blob file; on an IPFS node by
//! damaging a block in a node of the test's own (never the shared one).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::cid_of_blob;
use common::cli::{verify_command, verify_json};
use common::oci::{self, Oci};
use common::private_node::PrivateNode;
use common::{StorePair, TestRegistry};
use ipfs_registry::registry::ScrubOptions;
use serde_json::Value;

/// Spans three 256 KiB leaves: a DAG with a root node, as real layers have.
const SIZE: usize = 700_000;

fn scrub_digests(report: &Value, key: &str) -> Vec<String> {
    report["scrub"][key]
        .as_array()
        .unwrap_or_else(|| panic!("scrub.{key} in {report}"))
        .iter()
        .map(|entry| entry["digest"].as_str().unwrap().to_owned())
        .collect()
}

async fn metric(registry: &TestRegistry, name: &str) -> f64 {
    registry
        .metric(name)
        .await
        .unwrap_or_else(|| panic!("no sample {name}"))
}

async fn assert_quarantined(client: &Oci, repo: &str, digest: &str) {
    let path = format!("/v2/{repo}/blobs/{digest}");
    let body = oci::assert_error(client.get(&path).await, 404, "BLOB_UNKNOWN").await;
    assert_eq!(body["errors"][0]["detail"]["quarantined"], true, "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("quarantined"),
        "{body}"
    );
    assert_eq!(client.head(&path).await.status(), 404);
}

async fn assert_pulls_exactly(client: &Oci, repo: &str, blob: &oci::Blob) {
    let response = client
        .get(&format!("/v2/{repo}/blobs/{}", blob.digest))
        .await;
    let response = oci::expect_status(response, 200).await;
    assert!(response.bytes().await.unwrap() == blob.data);
}

fn blob_file(registry: &TestRegistry, data: &[u8]) -> PathBuf {
    registry
        .config
        .data_dir
        .join("blobs/data")
        .join(cid_of_blob(data).to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_blob_file_is_found_quarantined_and_healed() {
    let registry = StorePair::Embedded.start_registry().await;
    let client = Oci::new(&registry.base);
    let damaged = client.push_random_blob("scrub/app", SIZE).await;
    let sound = client.push_random_blob("scrub/app", SIZE).await;

    let (succeeded, report) = verify_json(&registry.config, &[]);
    assert!(succeeded, "{report}");
    assert_eq!(report["scrub"]["checked"], 2, "{report}");
    assert_eq!(report["scrub"]["bytes"], 2 * SIZE as u64, "{report}");
    assert!(report["scrub"]["gb_per_second"].is_number(), "{report}");
    assert!(report["scrub"]["seconds"].is_number(), "{report}");

    // One byte flipped in the second leaf: same size, wrong digest.
    let file = blob_file(&registry, &damaged.data);
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[300_000] ^= 0x40;
    std::fs::write(&file, &bytes).unwrap();

    let (succeeded, report) = verify_json(&registry.config, &[]);
    assert!(!succeeded, "a corrupt blob fails verify: {report}");
    assert_eq!(
        scrub_digests(&report, "corrupt"),
        vec![damaged.digest.clone()],
        "{report}"
    );
    assert!(scrub_digests(&report, "missing").is_empty(), "{report}");
    let reason = report["scrub"]["corrupt"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("hash to"), "{report}");
    // Its bad bytes are gone, so that a push stores them afresh.
    assert!(!file.exists());

    assert_quarantined(&client, "scrub/app", &damaged.digest).await;
    assert_pulls_exactly(&client, "scrub/app", &sound).await;
    // Another repository cannot mount it either: the client uploads it instead.
    let mount = client
        .http
        .post(client.with_query(
            "/v2/scrub/other/blobs/uploads/",
            &[("mount", damaged.digest.as_str()), ("from", "scrub/app")],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(mount.status(), 202, "a quarantined blob is not mounted");

    // The serving replica's own scrub: the blob stays quarantined (its bytes are gone),
    // and the metrics say so.
    let report = registry
        .server
        .registry
        .scrub(&ScrubOptions::default(), &())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.checked, 2);
    assert_eq!(report.missing.len(), 1, "{report:?}");
    assert_eq!(
        metric(&registry, "ipfs_registry_blobs_quarantined").await,
        1.0
    );
    assert_eq!(
        metric(&registry, "ipfs_registry_scrub_blobs_total").await,
        2.0
    );
    assert_eq!(
        metric(&registry, "ipfs_registry_scrub_bytes_total").await,
        SIZE as f64
    );

    // A push of the same bytes is verified, stores them again and lifts the quarantine.
    client.push_blob("scrub/app", &damaged.data).await;
    assert_pulls_exactly(&client, "scrub/app", &damaged).await;
    assert_eq!(
        metric(&registry, "ipfs_registry_blobs_quarantined").await,
        0.0
    );
    let (succeeded, report) = verify_json(&registry.config, &[]);
    assert!(succeeded, "healed: {report}");
    assert_eq!(report["scrub"]["checked"], 2, "{report}");

    // Cut short this time, found by the text report; a chunked push heals it too.
    let file = blob_file(&registry, &sound.data);
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..SIZE - 1000]).unwrap();
    let out = verify_command(&registry.config, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!("corrupt {}", sound.digest)),
        "{stdout}"
    );
    assert!(stdout.contains("holds 699000 bytes"), "{stdout}");
    assert!(stdout.contains("scrub: 2 blobs"), "{stdout}");
    assert_quarantined(&client, "scrub/app", &sound.digest).await;
    let location = client.start_upload("scrub/app").await;
    let response = client
        .patch_chunk(&location, 0, &sound.data[..400_000])
        .await;
    let location = oci::header(&response, "location");
    let response = client
        .patch_chunk(&location, 400_000, &sound.data[400_000..])
        .await;
    let location = oci::header(&response, "location");
    let response = client
        .put_upload(&location, &sound.digest, Vec::new())
        .await;
    oci::expect_status(response, 201).await;
    assert_pulls_exactly(&client, "scrub/app", &sound).await;
    let (succeeded, report) = verify_json(&registry.config, &[]);
    assert!(succeeded, "healed: {report}");
    registry.server.stop().await;
}

/// The block file of `block` (its exact bytes) in a js-ipfs repository's flatfs store.
fn block_file(repo: &Path, block: &[u8]) -> PathBuf {
    let mut found = Vec::new();
    let mut dirs = vec![repo.join("blocks")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                dirs.push(path);
            } else if meta.len() == block.len() as u64 && std::fs::read(&path).unwrap() == block {
                found.push(path);
            }
        }
    }
    assert_eq!(found.len(), 1, "one block file holds the leaf: {found:?}");
    found.remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_block_in_the_ipfs_node_is_found() {
    // Stopped when dropped, also when an assertion fails.
    let node = PrivateNode::start();
    let registry = StorePair::PostgresIpfsNode
        .start_registry_with(|config| {
            config.ipfs.url = Some(node.url.clone());
            config.ipfs.timeout = Duration::from_secs(5);
        })
        .await;
    let client = Oci::new(&registry.base);
    let damaged = client.push_random_blob("scrub/node", SIZE).await;
    let sound = client.push_random_blob("scrub/node", SIZE).await;
    // (A fresh js-ipfs repository pins its own files, which verify lists as unrecorded.)
    let (_, report) = verify_json(&registry.config, &[]);
    assert_eq!(report["scrub"]["checked"], 2, "{report}");
    assert!(scrub_digests(&report, "corrupt").is_empty(), "{report}");
    assert!(scrub_digests(&report, "missing").is_empty(), "{report}");

    let file = block_file(node.repo(), &damaged.data[262_144..2 * 262_144]);
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[1000] ^= 0x40;
    std::fs::write(&file, &bytes).unwrap();

    let (succeeded, report) = verify_json(&registry.config, &[]);
    assert!(!succeeded, "a damaged block fails verify: {report}");
    // Served wrong (corrupt) or refused by a node that checks what it reads (unreadable).
    let mut found = scrub_digests(&report, "corrupt");
    found.extend(scrub_digests(&report, "missing"));
    assert_eq!(found, vec![damaged.digest.clone()], "{report}");
    assert_quarantined(&client, "scrub/node", &damaged.digest).await;
    assert_pulls_exactly(&client, "scrub/node", &sound).await;
    registry.server.stop().await;
}

/// `serve` with `integrity.scrub_interval` scrubs on its own (and finds damage).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_scrubs_every_interval() {
    let registry = StorePair::Embedded
        .start_registry_with(|config| {
            config.integrity.scrub_interval = Some(Duration::from_millis(200))
        })
        .await;
    let client = Oci::new(&registry.base);
    let damaged = client.push_random_blob("scrub/serve", SIZE).await;
    let file = blob_file(&registry, &damaged.data);
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&file, &bytes).unwrap();

    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while metric(&registry, "ipfs_registry_scrub_corrupt_total").await < 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no scrub found the damage within a minute"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_quarantined(&client, "scrub/serve", &damaged.digest).await;
    registry.server.stop().await;
}

/// One RPC call to a node of the test's own; its answer's status and body.
async fn node_rpc(node: &PrivateNode, command: &str, args: &[(&str, &str)]) -> (u16, String) {
    let url = node.url.join(&format!("api/v0/{command}")).unwrap();
    let response = reqwest::Client::new()
        .post(url)
        .query(args)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{command}: {e}"));
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

async fn is_pinned_on(node: &PrivateNode, cid: &cid::Cid) -> bool {
    let cid = cid.to_string();
    // (js-ipfs answers CIDv1 in base58btc unless asked.)
    let query = [
        ("arg", cid.as_str()),
        ("type", "recursive"),
        ("cid-base", "base32"),
    ];
    let (status, body) = node_rpc(node, "pin/ls", &query).await;
    status == 200 && body.contains(&cid)
}

async fn unpin_on(node: &PrivateNode, cid: &cid::Cid) {
    let cid = cid.to_string();
    let (status, body) = node_rpc(node, "pin/rm", &[("arg", &cid)]).await;
    assert_eq!(status, 200, "pin/rm {cid}: {body}");
}

/// A recorded blob whose pin is gone (an operator's `pin rm`, or a re-pin that failed) is
/// pinned again by the scrub while its blocks are there. When the pin cannot be restored
/// (blocks gone), a push relying on the stored content fails with 503 and the blob is
/// quarantined: no pull, no manifest can use it until a push stores its bytes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_that_lost_its_pin_is_pinned_again_or_quarantined() {
    let node = PrivateNode::start();
    let registry = StorePair::PostgresIpfsNode
        .start_registry_with(|config| {
            config.ipfs.url = Some(node.url.clone());
            config.ipfs.timeout = Duration::from_secs(3);
        })
        .await;
    let client = Oci::new(&registry.base);
    let repo = "scrub/pins";

    // Blocks still there: the scrub pins it again, and verify no longer misses it.
    let unpinned = client.push_random_blob(repo, SIZE).await;
    let unpinned_cid = cid_of_blob(&unpinned.data);
    assert!(is_pinned_on(&node, &unpinned_cid).await);
    unpin_on(&node, &unpinned_cid).await;
    assert!(!is_pinned_on(&node, &unpinned_cid).await);
    let (_, report) = verify_json(&registry.config, &[]);
    assert_eq!(
        scrub_digests_of(&report, "repinned"),
        vec![unpinned.digest.clone()],
        "{report}"
    );
    assert_eq!(report["missing"], serde_json::json!([]), "{report}");
    assert!(is_pinned_on(&node, &unpinned_cid).await);
    assert_pulls_exactly(&client, repo, &unpinned).await;

    // Blocks gone as well: a push of the known digest cannot restore the pin.
    let lost = client.push_random_blob(repo, SIZE).await;
    let lost_cid = cid_of_blob(&lost.data);
    unpin_on(&node, &lost_cid).await;
    let leaf = ipfs_registry::blobs::unixfs::cid_of(
        ipfs_registry::blobs::kubo::RAW_CODEC,
        &lost.data[262_144..2 * 262_144],
    )
    .to_string();
    let (status, body) = node_rpc(&node, "block/rm", &[("arg", &leaf)]).await;
    assert!(status == 200 && !body.contains("Error"), "block/rm: {body}");

    oci::assert_unavailable(client.upload_as(repo, &lost.data, &lost.digest).await).await;
    assert_quarantined(&client, repo, &lost.digest).await;
    let config = client.push_blob(repo, b"{}").await;
    let manifest = oci::image_manifest(&config, std::slice::from_ref(&lost), None);
    let refused = client
        .put_manifest(repo, "lost", &manifest.media_type, &manifest.content)
        .await;
    oci::assert_error(refused, 400, "MANIFEST_BLOB_UNKNOWN").await;

    // The client's retry stores the bytes again: pinned, served, referenceable.
    client.push_blob(repo, &lost.data).await;
    assert_pulls_exactly(&client, repo, &lost).await;
    assert!(is_pinned_on(&node, &lost_cid).await);
    client.push_manifest(repo, "lost", &manifest).await;
    registry.server.stop().await;
}

fn scrub_digests_of(report: &Value, key: &str) -> Vec<String> {
    report["scrub"][key]
        .as_array()
        .unwrap_or_else(|| panic!("scrub.{key} in {report}"))
        .iter()
        .map(|digest| digest.as_str().unwrap().to_owned())
        .collect()
}
