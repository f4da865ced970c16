//! Garbage collection on the embedded default (SQLite metadata, blobs as files): what is
//! kept, what goes (its files deleted), dry runs, expired uploads, and GC racing pushes
//! without any pushed image losing a blob.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::oci::{
    artifact_manifest, expect_status, image_manifest, random_bytes, Image, Manifest, Oci,
    EMPTY_JSON, OCI_INDEX,
};
use common::TestRegistry;
use ipfs_registry::meta::gc::SweepPolicy;
use ipfs_registry::registry::gc::GcReport;
use serde_json::json;

async fn embedded() -> (TestRegistry, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_owned();
    let registry = common::start_registry_with(move |config| {
        config.database.url = None;
        config.ipfs.url = None;
        config.data_dir = data_dir;
    })
    .await;
    (registry, dir)
}

fn policy(grace: Duration, retention: Option<Duration>, expiry: Duration) -> SweepPolicy {
    SweepPolicy {
        grace_period: grace,
        untagged_retention: retention,
        upload_expiry: expiry,
    }
}

async fn gc(registry: &TestRegistry, policy: &SweepPolicy, dry_run: bool) -> GcReport {
    registry
        .server
        .registry
        .collect_garbage(policy, dry_run, &|_| {})
        .await
        .expect("gc runs")
        .expect("no other gc holds the lock")
}

async fn assert_pulls(oci: &Oci, repo: &str, image: &Image) {
    for blob in std::iter::once(&image.config).chain(image.layers.iter()) {
        let response = oci.get(&format!("/v2/{repo}/blobs/{}", blob.digest)).await;
        assert_eq!(response.status(), 200, "{repo} {}", blob.digest);
        assert!(
            response.bytes().await.unwrap() == blob.data,
            "{}",
            blob.digest
        );
    }
    let manifest = oci
        .get(&format!("/v2/{repo}/manifests/{}", image.manifest.digest))
        .await;
    assert_eq!(manifest.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_reachable_stays_and_the_rest_is_deleted_from_disk() {
    let (registry, _dir) = embedded().await;
    let oci = Oci::new(&registry.base);
    let repo = "gc/embedded";
    let kept = oci.push_image(repo, Some("kept"), 2).await;
    // A multi-platform index over an untagged child, and a referrer of the tagged image.
    let child = oci.push_image(repo, None, 1).await;
    let index = Manifest::new(
        OCI_INDEX,
        &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [child.manifest.descriptor()]}),
    );
    oci.push_manifest(repo, "multi", &index).await;
    oci.push_blob(repo, EMPTY_JSON).await;
    let signature = artifact_manifest("application/example.sig", Some(&kept.manifest), json!({}));
    oci.push_manifest(repo, &signature.digest, &signature).await;
    // An image whose tag goes away, and a blob nothing references.
    let orphan = oci.push_image(repo, Some("orphan"), 1).await;
    let loose = oci.push_blob(repo, &random_bytes(5000)).await;
    expect_status(
        oci.delete(&format!("/v2/{repo}/manifests/orphan")).await,
        202,
    )
    .await;

    let everything = policy(
        Duration::ZERO,
        Some(Duration::ZERO),
        Duration::from_secs(3600),
    );
    let predicted = gc(&registry, &everything, true).await;
    assert!(
        common::blob_store_holds(&registry, &loose.data).await,
        "a dry run deletes nothing"
    );
    let report = gc(&registry, &everything, false).await;
    assert_eq!(report.deleted_manifests, predicted.deleted_manifests);
    assert_eq!(report.freed_blobs, predicted.freed_blobs);
    assert_eq!(report.deleted_manifests, 1, "{report}");
    assert!(report.freed_blobs >= 3, "{report}");

    for blob in [&loose, &orphan.layers[0]] {
        assert!(
            !common::blob_store_holds(&registry, &blob.data).await,
            "{} still on disk",
            blob.digest
        );
        let gone = oci.head(&format!("/v2/{repo}/blobs/{}", blob.digest)).await;
        assert_eq!(gone.status(), 404);
    }
    assert_pulls(&oci, repo, &kept).await;
    assert_pulls(&oci, repo, &child).await;
    let referrers: serde_json::Value = oci
        .get(&format!("/v2/{repo}/referrers/{}", kept.manifest.digest))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(referrers["manifests"].as_array().unwrap().len(), 1);
    for blob in std::iter::once(&kept.config).chain(kept.layers.iter()) {
        assert!(common::blob_store_holds(&registry, &blob.data).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grace_keeps_young_blobs_and_expired_uploads_are_removed() {
    let (registry, _dir) = embedded().await;
    let oci = Oci::new(&registry.base);
    let repo = "gc/young";
    let young = oci.push_blob(repo, &random_bytes(3000)).await;
    let location = oci.start_upload(repo).await;
    let chunk = random_bytes(2000);
    expect_status(oci.patch_chunk(&location, 0, &chunk).await, 202).await;
    assert!(
        common::blob_store_holds(&registry, &chunk).await,
        "the chunk is stored as it arrives"
    );

    let report = gc(
        &registry,
        &policy(Duration::from_secs(3600), None, Duration::from_secs(3600)),
        false,
    )
    .await;
    assert_eq!(
        (report.freed_blobs, report.expired_uploads),
        (0, 0),
        "{report}"
    );
    assert!(common::blob_store_holds(&registry, &young.data).await);

    let report = gc(
        &registry,
        &policy(Duration::from_secs(3600), None, Duration::ZERO),
        false,
    )
    .await;
    assert_eq!(report.expired_uploads, 1, "{report}");
    assert!(
        !common::blob_store_holds(&registry, &chunk).await,
        "the expired upload's chunk is deleted"
    );
    let status = oci.get(&location).await;
    assert_eq!(status.status(), 404);
    assert!(common::blob_store_holds(&registry, &young.data).await);
}

/// Pushers and a GC loop with no grace period at once: a blob may be collected between its
/// upload and its manifest (the push is then refused with MANIFEST_BLOB_UNKNOWN), but every
/// manifest push that succeeded pulls back complete afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gc_racing_pushes_never_loses_a_pushed_image() {
    let (registry, _dir) = embedded().await;
    let registry = Arc::new(registry);
    let stop = Arc::new(AtomicBool::new(false));
    let sweeper = {
        let registry = registry.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut runs = 0;
            while !stop.load(Ordering::SeqCst) {
                gc(
                    &registry,
                    &policy(Duration::ZERO, None, Duration::from_secs(3600)),
                    false,
                )
                .await;
                runs += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            runs
        })
    };
    let pushers = (0..8).map(|p| {
        let oci = Oci::new(&registry.base);
        tokio::spawn(async move {
            let mut pushed = Vec::new();
            let mut refused = 0;
            for i in 0..6 {
                let repo = format!("race/p{p}");
                let config = oci.push_blob(&repo, &random_bytes(300 + i)).await;
                let layer = oci.push_blob(&repo, &random_bytes(70_000 + i)).await;
                tokio::time::sleep(Duration::from_millis(3 * i as u64)).await;
                let manifest = image_manifest(&config, std::slice::from_ref(&layer), None);
                let response = oci
                    .put_manifest(
                        &repo,
                        &format!("t{i}"),
                        &manifest.media_type,
                        &manifest.content,
                    )
                    .await;
                match response.status().as_u16() {
                    201 => pushed.push((repo, config, layer, manifest)),
                    400 => {
                        let body: serde_json::Value = response.json().await.unwrap();
                        assert_eq!(body["errors"][0]["code"], "MANIFEST_BLOB_UNKNOWN");
                        refused += 1;
                    }
                    other => panic!("manifest push answered {other}"),
                }
            }
            (pushed, refused)
        })
    });
    let results = futures::future::join_all(pushers).await;
    stop.store(true, Ordering::SeqCst);
    let runs = sweeper.await.unwrap();
    assert!(runs > 1, "the sweeper ran while pushes went on");
    // One more run once everything settled: it must not take anything a manifest needs.
    gc(
        &registry,
        &policy(Duration::ZERO, None, Duration::from_secs(3600)),
        false,
    )
    .await;

    let oci = Oci::new(&registry.base);
    let mut succeeded = 0;
    for result in results {
        let (pushed, _refused) = result.unwrap();
        for (repo, config, layer, manifest) in pushed {
            succeeded += 1;
            for blob in [&config, &layer] {
                let response = oci.get(&format!("/v2/{repo}/blobs/{}", blob.digest)).await;
                assert_eq!(response.status(), 200, "{repo} lost {}", blob.digest);
                assert!(response.bytes().await.unwrap() == blob.data);
                assert!(
                    common::blob_store_holds(&registry, &blob.data).await,
                    "{} not on disk",
                    blob.digest
                );
            }
            let pulled = oci
                .get(&format!("/v2/{repo}/manifests/{}", manifest.digest))
                .await;
            assert_eq!(pulled.status(), 200);
        }
    }
    assert!(succeeded > 0, "some pushes got through");
}

/// Opens one of the store's lock files as another process would.
fn lock_file(registry: &TestRegistry, which: &str) -> std::fs::File {
    let path = registry
        .config
        .data_dir
        .join(format!("metadata.sqlite.{which}-lock"));
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The GC and CID locks are file locks, so they hold between `serve` and a `gc` command
/// run beside it: one collection at a time, and no commit while another process unpins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gc_command_beside_serve_shares_its_locks() {
    let (registry, _dir) = embedded().await;
    let oci = Oci::new(&registry.base);
    let image = oci.push_image("beside/app", Some("v1"), 1).await;
    let loose = oci.push_blob("beside/app", &random_bytes(4321)).await;

    // Another process collecting: neither serve nor the command starts a second run.
    let gc_lock = lock_file(&registry, "gc");
    gc_lock.try_lock().expect("the gc lock is free");
    let held = registry
        .server
        .registry
        .collect_garbage(
            &policy(Duration::ZERO, None, Duration::from_secs(3600)),
            false,
            &|_| {},
        )
        .await
        .expect("gc answers");
    assert!(
        held.is_none(),
        "serve collected while another process held the lock"
    );
    let config = registry.config.clone();
    let out = tokio::task::spawn_blocking(move || common::cli::gc_command(&config, &[]))
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("another garbage collection is running"),
        "{stderr}"
    );
    drop(gc_lock);

    // Another process unpinning: a blob commit waits for it instead of racing it.
    let cid_lock = lock_file(&registry, "cid");
    cid_lock.lock().unwrap();
    let waiting = tokio::spawn({
        let oci = oci.clone();
        async move { oci.push_blob("beside/app", &random_bytes(999)).await }
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !waiting.is_finished(),
        "a commit ran during another process's unpin"
    );
    drop(cid_lock);
    let committed = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the commit goes on once the unpin is over")
        .unwrap();
    expect_status(
        oci.head(&format!("/v2/beside/app/blobs/{}", committed.digest))
            .await,
        200,
    )
    .await;

    // With the locks free the command collects beside the running registry.
    let config = registry.config.clone();
    let out = tokio::task::spawn_blocking(move || common::cli::gc_command(&config, &[]))
        .await
        .unwrap();
    let stdout = common::cli::succeeded(&out);
    assert!(
        stdout.contains("freed: 0 manifests (0 bytes), 2 blobs (5320 bytes)"),
        "{stdout}"
    );
    assert!(
        !common::blob_store_holds(&registry, &loose.data).await,
        "the loose blob's file stays"
    );
    let head = oci
        .head(&format!("/v2/beside/app/blobs/{}", loose.digest))
        .await;
    assert_eq!(head.status(), 404);
    assert_pulls(&oci, "beside/app", &image).await;
    registry.server.stop().await;
}

/// Pushing a blob again restarts its link's grace period (as on PostgreSQL), so a blob
/// re-uploaded just before its manifest is not swept in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushing_again_restarts_the_grace_period() {
    let (registry, _dir) = embedded().await;
    let oci = Oci::new(&registry.base);
    let data = random_bytes(2048);
    let blob = oci.push_blob("again/app", &data).await;
    let two_hours_ago = common::sql::metadata(&registry).await;
    for table in ["blobs", "repository_blobs"] {
        two_hours_ago
            .execute(
                &format!("UPDATE {table} SET created_at = created_at - 7200000"),
                &[],
            )
            .await;
    }
    oci.push_blob("again/app", &data).await;
    gc(
        &registry,
        &policy(Duration::from_secs(3600), None, Duration::from_secs(3600)),
        false,
    )
    .await;
    expect_status(
        oci.head(&format!("/v2/again/app/blobs/{}", blob.digest))
            .await,
        200,
    )
    .await;
    assert!(common::blob_store_holds(&registry, &data).await);
    registry.server.stop().await;
}
