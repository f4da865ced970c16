//! An acknowledged push survives a power cut, on the embedded default.
//!
//! The registry binary runs on a FUSE file system (tests/common/powercut.rs) that keeps
//! everything not synced in memory and drops it on a cut, as a machine losing power does:
//! file bytes not `fsync`ed, and directory entries (creations, renames) whose directory was
//! not synced. Each test kills the registry (and a `gc` beside it) with SIGKILL, cuts, starts
//! it again on what survived, and requires every acknowledged tag, manifest, blob and upload
//! chunk to be there, byte-exact, with nothing half-present.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::cli::{registry_command, serve_command, succeeded, Served};
use common::oci::{expect_status, header, Image, Oci};
use common::powercut::PowerCutFs;

/// The data directory, below the mount's root so the registry must create and sync it.
fn data_dir(fs: &PowerCutFs) -> PathBuf {
    fs.path().join("registry")
}

async fn serve(data_dir: &Path) -> Served {
    Served::start(serve_command().env("IPFS_REGISTRY_DATA_DIR", data_dir)).await
}

/// Kills the registry (SIGKILL: no shutdown, no last writes) and cuts the power.
fn power_cut(fs: &mut PowerCutFs, served: Served) {
    drop(served);
    fs.cut();
}

/// Pulls a tagged image by tag and by digest, and each of its blobs, byte-exact.
async fn assert_intact(oci: &Oci, repo: &str, tag: &str, image: &Image) {
    for reference in [tag, image.manifest.digest.as_str()] {
        let response = oci.get(&format!("/v2/{repo}/manifests/{reference}")).await;
        let response = expect_status(response, 200).await;
        assert_eq!(
            header(&response, "docker-content-digest"),
            image.manifest.digest
        );
        assert_eq!(
            response.bytes().await.unwrap(),
            image.manifest.content,
            "{repo}:{reference}"
        );
    }
    for blob in image.layers.iter().chain([&image.config]) {
        let response = oci.get(&format!("/v2/{repo}/blobs/{}", blob.digest)).await;
        let response = expect_status(response, 200).await;
        assert_eq!(
            response.bytes().await.unwrap(),
            blob.data,
            "{repo}@{}",
            blob.digest
        );
    }
}

/// Ready (no metadata loss suspected), and `verify` finds the blob files and the records
/// in agreement.
async fn assert_consistent(served: &Served, data_dir: &Path) {
    let ready = reqwest::get(format!("{}/readyz", served.base))
        .await
        .unwrap();
    let status = ready.status();
    assert_eq!(status, 200, "{}", ready.text().await.unwrap());
    let out = registry_command()
        .env("IPFS_REGISTRY_DATA_DIR", data_dir)
        .arg("verify")
        .output()
        .unwrap();
    let report = succeeded(&out);
    assert!(report.contains("0 records without content"), "{report}");
}

/// A file written and closed without a sync, which the cut must take: proof the cut is real.
fn unsynced_marker(fs: &PowerCutFs) -> PathBuf {
    let marker = fs.path().join("unsynced-marker");
    std::fs::write(&marker, b"gone after a power cut").unwrap();
    marker
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_pushes_survive_repeated_power_cuts() {
    let mut fs = PowerCutFs::mount();
    let dir = data_dir(&fs);
    let mut pushed: Vec<(String, String, Image)> = Vec::new();
    for round in 0..4 {
        let served = serve(&dir).await;
        let oci = Oci::new(&served.base);
        for i in 0..5 {
            let repo = format!("cut/app{}", i % 2);
            let tag = format!("r{round}-{i}");
            // Every push step answered 2xx (push_image asserts it): each is a promise.
            let image = oci.push_image(&repo, Some(&tag), 2).await;
            // Published before the cut: a cut between pinning a layout and recording it
            // leaves its root unrecorded until the restarted publisher records it, and
            // verify (below) wants a settled registry.
            oci.published_layout(&repo, &tag).await;
            pushed.push((repo, tag, image));
        }
        let marker = unsynced_marker(&fs);
        power_cut(&mut fs, served);
        assert!(!marker.exists(), "the cut dropped what was never synced");

        let served = serve(&dir).await;
        let oci = Oci::new(&served.base);
        for (repo, tag, image) in &pushed {
            assert_intact(&oci, repo, tag, image).await;
        }
        assert_consistent(&served, &dir).await;
        drop(served);
    }
    assert_eq!(pushed.len(), 20);
    let stats = fs.stats();
    assert!(
        stats.dir_syncs > 0 && stats.file_syncs > 0,
        "the registry synced files and directories: {stats:?}"
    );
}

/// A chunked upload cut between chunks resumes at the last acknowledged byte; a chunk that
/// was streaming when the power went is not half there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_upload_cut_short_resumes_at_its_acknowledged_bytes() {
    let mut fs = PowerCutFs::mount();
    let dir = data_dir(&fs);
    let repo = "cut/chunked";
    let data = common::oci::random_bytes(3 * 300_000);
    let chunks: Vec<&[u8]> = data.chunks(300_000).collect();

    let served = serve(&dir).await;
    let oci = Oci::new(&served.base);
    let mut location = oci.start_upload(repo).await;
    for (i, chunk) in chunks[..2].iter().enumerate() {
        let response = oci.patch_chunk(&location, i * 300_000, chunk).await;
        let response = expect_status(response, 202).await;
        assert_eq!(
            header(&response, "range"),
            format!("0-{}", (i + 1) * 300_000 - 1)
        );
        location = header(&response, "location");
    }
    // The third chunk starts streaming and the power goes before it is complete.
    let (sender, body) = futures::channel::mpsc::unbounded::<Result<Vec<u8>, std::io::Error>>();
    sender
        .unbounded_send(Ok(chunks[2][..100_000].to_vec()))
        .unwrap();
    let streaming = oci
        .request(reqwest::Method::PATCH, &location)
        .header("Content-Type", "application/octet-stream")
        .header("Content-Range", format!("600000-{}", 900_000 - 1))
        .header("Content-Length", 300_000)
        .body(reqwest::Body::wrap_stream(body))
        .send();
    let streaming = tokio::spawn(streaming);
    tokio::time::sleep(Duration::from_millis(300)).await;
    power_cut(&mut fs, served);
    drop(sender);
    // Killed mid-body: the client gets an error, or at best an error status; never a 202.
    if let Ok(Ok(response)) = streaming.await {
        assert_ne!(response.status(), 202);
    }

    let served = serve(&dir).await;
    let oci = Oci::new(&served.base);
    let status = oci.get(&location).await;
    let status = expect_status(status, 204).await;
    assert_eq!(
        header(&status, "range"),
        "0-599999",
        "the upload holds exactly the acknowledged chunks"
    );
    let response = oci.patch_chunk(&location, 600_000, chunks[2]).await;
    let response = expect_status(response, 202).await;
    let location = header(&response, "location");
    let digest = common::oci::sha256(&data);
    let response = oci.put_upload(&location, &digest, Vec::new()).await;
    expect_status(response, 201).await;
    let pulled = expect_status(oci.get(&format!("/v2/{repo}/blobs/{digest}")).await, 200).await;
    assert_eq!(pulled.bytes().await.unwrap(), data);

    // And the finished blob survives the next cut too.
    power_cut(&mut fs, served);
    let served = serve(&dir).await;
    let oci = Oci::new(&served.base);
    let pulled = expect_status(oci.get(&format!("/v2/{repo}/blobs/{digest}")).await, 200).await;
    assert_eq!(pulled.bytes().await.unwrap(), data);
    assert_consistent(&served, &dir).await;
}

/// A `gc` running beside `serve` when the power goes: every image still tagged is intact
/// afterwards, the collection finishes on the next run, and no file is left that no record
/// knows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_during_gc_loses_no_tagged_image() {
    let mut fs = PowerCutFs::mount();
    let dir = data_dir(&fs);
    let mut kept: Vec<(String, String, Image)> = Vec::new();
    // Cut at a different moment of each run, from before the sweep to its unpinning.
    for (round, delay_ms) in [0u64, 40, 120, 300].into_iter().enumerate() {
        let served = serve(&dir).await;
        let oci = Oci::new(&served.base);
        for i in 0..4 {
            let repo = "cut/gc";
            let tag = format!("r{round}-{i}");
            let image = oci.push_image(repo, Some(&tag), 2).await;
            // Settled before the cut (see acknowledged_pushes_survive_repeated_power_cuts).
            oci.published_layout(repo, &tag).await;
            if i % 2 == 0 {
                kept.push((repo.to_owned(), tag, image));
            } else {
                // Untagged and unreferenced: the manifest, its config and layers are garbage.
                let response = oci.delete(&format!("/v2/{repo}/manifests/{tag}")).await;
                expect_status(response, 202).await;
            }
        }
        let mut gc = gc_beside(&dir);
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        let _ = gc.kill();
        let _ = gc.wait();
        power_cut(&mut fs, served);

        let served = serve(&dir).await;
        let oci = Oci::new(&served.base);
        for (repo, tag, image) in &kept {
            assert_intact(&oci, repo, tag, image).await;
        }
        let finished = gc_beside(&dir).wait_with_output().unwrap();
        succeeded(&finished);
        for (repo, tag, image) in &kept {
            assert_intact(&oci, repo, tag, image).await;
        }
        assert_consistent(&served, &dir).await;
        drop(served);
    }
}

/// `ipfs-registry gc` on the data directory, collecting everything unreferenced at once.
fn gc_beside(data_dir: &Path) -> std::process::Child {
    registry_command()
        .env("IPFS_REGISTRY_DATA_DIR", data_dir)
        .env("IPFS_REGISTRY_GC__GRACE_PERIOD", "0s")
        .env("IPFS_REGISTRY_GC__UNTAGGED_RETENTION", "0s")
        .arg("gc")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start ipfs-registry gc")
}

/// Metadata lost while the blob files stayed (the failure this registry had before its
/// writes were synced): `serve` says so and is not ready, and `verify --reindex` records
/// the files again, after which it is ready and the blobs pull by digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_metadata_is_detected_and_the_blobs_can_be_reindexed() {
    let dir = tempfile::tempdir().unwrap();
    let served = serve(dir.path()).await;
    let oci = Oci::new(&served.base);
    let image = oci.push_image("lost/app", Some("1"), 2).await;
    oci.published_layout("lost/app", "1").await;
    drop(served);
    for file in [
        "metadata.sqlite",
        "metadata.sqlite-wal",
        "metadata.sqlite-shm",
    ] {
        let _ = std::fs::remove_file(dir.path().join(file));
    }

    let served = serve(dir.path()).await;
    let ready = reqwest::get(format!("{}/readyz", served.base))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.unwrap();
    let finding = body["checks"]["metadata"].as_str().unwrap_or_default();
    // The config, two layers and the tagged image's layout.
    assert!(finding.contains("holds 4"), "{body}");

    let out = registry_command()
        .env("IPFS_REGISTRY_DATA_DIR", dir.path())
        .arg("verify")
        .output()
        .unwrap();
    assert!(!out.status.success(), "unrecorded files are a disagreement");
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(report.matches("unrecorded ").count(), 4, "{report}");

    let out = registry_command()
        .env("IPFS_REGISTRY_DATA_DIR", dir.path())
        .args(["verify", "--reindex", "lost-and-found", "--json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_str(&succeeded(&out)).unwrap();
    assert_eq!(report["reindexed"].as_array().unwrap().len(), 3, "{report}");
    // The layout cannot be recorded without its tag: dropped, rebuilt when published again.
    assert_eq!(
        report["dropped_layouts"].as_array().unwrap().len(),
        1,
        "{report}"
    );

    let ready = reqwest::get(format!("{}/readyz", served.base))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200, "ready once blobs are recorded again");
    let oci = Oci::new(&served.base);
    for blob in image.layers.iter().chain([&image.config]) {
        let response = oci
            .get(&format!("/v2/lost-and-found/blobs/{}", blob.digest))
            .await;
        let response = expect_status(response, 200).await;
        assert_eq!(response.bytes().await.unwrap(), blob.data);
    }
    // The manifest was only in the metadata: pushing it again restores the tag.
    let oci_push = oci
        .put_manifest(
            "lost-and-found",
            "1",
            &image.manifest.media_type,
            &image.manifest.content,
        )
        .await;
    expect_status(oci_push, 201).await;
    // And publishes the same image layout again: the same image under the same tag.
    let layout = oci.published_layout("lost-and-found", "1").await;
    assert_eq!(layout["cid"], report["dropped_layouts"][0], "{layout}");
}
