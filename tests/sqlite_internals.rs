//! What only the embedded SQLite metadata store shows, through a registry on it: its GC and
//! CID locks are files that a `gc` command beside `serve` shares, and its creation times
//! (milliseconds in the file) restart with a push. GC on every store is in gc.rs and
//! contract_gc.rs.

mod common;

use std::time::Duration;

use common::oci::{expect_status, random_bytes, Image, Oci};
use common::TestRegistry;
use ipfs_registry::meta::gc::SweepPolicy;
use ipfs_registry::registry::gc::GcReport;

async fn embedded() -> (TestRegistry, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_owned();
    let registry = common::StorePair::Embedded
        .start_registry_with(move |config| config.data_dir = data_dir)
        .await;
    (registry, dir)
}

fn policy(grace: Duration, retention: Option<Duration>, expiry: Duration) -> SweepPolicy {
    SweepPolicy {
        grace_period: grace,
        untagged_retention: retention,
        upload_expiry: expiry,
        ..SweepPolicy::default()
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

/// Manifests are answered from memory while the file is unchanged: every commit, by this
/// registry or by another process writing the file directly, must show on the next GET.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_answered_from_memory_sees_every_commit() {
    let (registry, _dir) = embedded().await;
    let oci = Oci::new(&registry.base);
    let repo = "cached/app";
    let first = oci.push_image(repo, Some("v1"), 1).await;
    let second = oci.push_image(repo, None, 1).await;
    let first_digest = first.manifest.digest.to_string();
    let second_digest = second.manifest.digest.to_string();
    for _ in 0..3 {
        assert_eq!(
            digest_at(&oci, repo, "v1").await.as_deref(),
            Some(first_digest.as_str())
        );
    }

    // Another process moves the tag, then removes it.
    let other = rusqlite::Connection::open(registry.config.data_dir.join("metadata.sqlite"))
        .expect("open metadata.sqlite");
    other.busy_timeout(Duration::from_secs(5)).unwrap();
    let moved = other
        .execute(
            "UPDATE tags SET manifest_digest = ?1 WHERE name = 'v1'",
            [&second_digest],
        )
        .unwrap();
    assert_eq!(moved, 1);
    assert_eq!(
        digest_at(&oci, repo, "v1").await.as_deref(),
        Some(second_digest.as_str())
    );
    other
        .execute("DELETE FROM tags WHERE name = 'v1'", [])
        .unwrap();
    assert_eq!(digest_at(&oci, repo, "v1").await, None);

    // This registry's own writes: a tag pushed, moved, and a manifest deleted.
    oci.push_manifest(repo, "v2", &first.manifest).await;
    assert_eq!(
        digest_at(&oci, repo, "v2").await.as_deref(),
        Some(first_digest.as_str())
    );
    oci.push_manifest(repo, "v2", &second.manifest).await;
    assert_eq!(
        digest_at(&oci, repo, "v2").await.as_deref(),
        Some(second_digest.as_str())
    );
    let by_digest = format!("/v2/{repo}/manifests/{second_digest}");
    expect_status(oci.get(&by_digest).await, 200).await;
    expect_status(oci.delete(&by_digest).await, 202).await;
    expect_status(oci.get(&by_digest).await, 404).await;
    assert_eq!(digest_at(&oci, repo, "v2").await, None);
}

/// The digest a GET of the manifest answers with, or `None` for a 404.
async fn digest_at(oci: &Oci, repo: &str, reference: &str) -> Option<String> {
    let response = oci.get(&format!("/v2/{repo}/manifests/{reference}")).await;
    match response.status().as_u16() {
        200 => Some(
            response.headers()["docker-content-digest"]
                .to_str()
                .unwrap()
                .to_owned(),
        ),
        404 => None,
        other => panic!("GET {reference}: {other}"),
    }
}
