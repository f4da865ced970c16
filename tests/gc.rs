//! The registry's garbage collection end to end, on every pair of stores (PostgreSQL and
//! the IPFS node; SQLite and the embedded blob store): what is kept (tagged images, an
//! index's children, referrers of kept manifests, young uploads), what goes (orphans past
//! retention, unreferenced blobs past grace, expired uploads, and their pins or files), dry
//! runs, one run at a time across replicas, and GC racing concurrent pushes without any
//! pushed image losing a blob. The `GcStore` contract itself is in contract_gc.rs.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::oci::{
    artifact_manifest, expect_status, header, image_manifest, random_bytes, Blob, Image, Manifest,
    Oci, EMPTY_JSON, OCI_INDEX,
};
use common::sql::Sql;
use common::{StorePair, TestRegistry};
use ipfs_registry::config::Config;
use ipfs_registry::meta::gc::{GcStore, SweepPolicy};
use ipfs_registry::meta::postgres::PostgresStore;
use ipfs_registry::meta::sqlite::SqliteStore;
use ipfs_registry::registry::gc::GcReport;
use ipfs_registry::registry::Registry;
use serde_json::json;

const REPO: &str = "gc/app";

/// The metadata's GC side as a second process sees it (another replica, or the `gc`
/// command beside `serve`).
async fn gc_store(config: &Config) -> Box<dyn GcStore> {
    match &config.database.url {
        Some(_) => Box::new(PostgresStore::connect(&config.database).await.unwrap()),
        None => Box::new(SqliteStore::open(&config.data_dir.join("metadata.sqlite")).unwrap()),
    }
}

fn policy(grace: Duration, retention: Option<Duration>) -> SweepPolicy {
    SweepPolicy {
        grace_period: grace,
        untagged_retention: retention,
        upload_expiry: Duration::from_secs(24 * 3600),
        ..SweepPolicy::default()
    }
}

async fn gc(registry: &Registry, policy: &SweepPolicy, dry_run: bool) -> GcReport {
    registry
        .collect_garbage(policy, dry_run, &|_| {})
        .await
        .expect("gc runs")
        .expect("no other gc holds the lock")
}

/// Row counts of every table GC touches, to compare before and after.
async fn snapshot(db: &Sql) -> Vec<String> {
    let mut counts = Vec::new();
    for table in [
        "manifests",
        "manifest_references",
        "tags",
        "blobs",
        "repository_blobs",
        "upload_sessions",
        "upload_chunks",
        "gc_unpin_queue",
    ] {
        counts.push(count(db, table).await);
    }
    counts
}

async fn count(db: &Sql, table: &str) -> String {
    db.value(&format!("SELECT CAST(count(*) AS TEXT) FROM {table}"), &[])
        .await
}

/// Pulls the blob and compares it byte for byte; checks the blob store holds it (pinned
/// on the node, a file of the embedded store).
async fn assert_blob_intact(oci: &Oci, registry: &TestRegistry, repo: &str, blob: &Blob) {
    let response = oci.get(&format!("/v2/{repo}/blobs/{}", blob.digest)).await;
    let response = expect_status(response, 200).await;
    let body = response.bytes().await.expect("blob body");
    assert!(
        body == blob.data,
        "blob {} came back different",
        blob.digest
    );
    assert!(
        common::blob_store_holds(registry, &blob.data).await,
        "blob {} ({}) is not held by the blob store",
        blob.digest,
        common::cid_of_blob(&blob.data)
    );
}

async fn assert_image_intact(oci: &Oci, registry: &TestRegistry, repo: &str, image: &Image) {
    let response = oci
        .get(&format!("/v2/{repo}/manifests/{}", image.manifest.digest))
        .await;
    let response = expect_status(response, 200).await;
    assert_eq!(response.bytes().await.unwrap(), image.manifest.content);
    assert_blob_intact(oci, registry, repo, &image.config).await;
    for layer in &image.layers {
        assert_blob_intact(oci, registry, repo, layer).await;
    }
}

async fn assert_manifest_present(oci: &Oci, repo: &str, manifest: &Manifest, present: bool) {
    let response = oci
        .head(&format!("/v2/{repo}/manifests/{}", manifest.digest))
        .await;
    assert_eq!(
        response.status().as_u16(),
        if present { 200 } else { 404 },
        "manifest {} presence",
        manifest.digest
    );
}

fn index_of(manifests: &[&Manifest]) -> Manifest {
    Manifest::new(
        OCI_INDEX,
        &json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": manifests.iter().map(|m| m.descriptor()).collect::<Vec<_>>(),
        }),
    )
}

common::on_each_store_pair!(retention_keeps_what_tags_reach_and_collects_orphans);

async fn retention_keeps_what_tags_reach_and_collects_orphans(stores: StorePair) {
    let registry = stores.start_registry().await;
    let oci = Oci::new(&registry.base);
    let db = common::sql::metadata(&registry).await;
    let core = registry.server.registry.clone();

    // A multi-arch index, tagged; its children are pushed by digest only.
    let amd64 = oci.push_image(REPO, None, 2).await;
    let arm64 = oci.push_image(REPO, None, 1).await;
    let index = index_of(&[&amd64.manifest, &arm64.manifest]);
    oci.push_manifest(REPO, "multi", &index).await;
    // A tagged image with a signature-like referrer (untagged itself).
    let tagged = oci.push_image(REPO, Some("v1"), 1).await;
    oci.push_blob(REPO, EMPTY_JSON).await;
    let signature = artifact_manifest(
        "application/vnd.example.signature",
        Some(&tagged.manifest),
        json!({"n": "1"}),
    );
    oci.push_manifest(REPO, &signature.digest, &signature).await;
    // A referrer of the index's child: reachable through the index.
    let sbom = artifact_manifest(
        "application/vnd.example.sbom",
        Some(&amd64.manifest),
        json!({"n": "2"}),
    );
    oci.push_manifest(REPO, &sbom.digest, &sbom).await;
    // An untagged orphan and a referrer of it: unreachable.
    let orphan = oci.push_image(REPO, None, 2).await;
    let orphan_note = artifact_manifest(
        "application/vnd.example.note",
        Some(&orphan.manifest),
        json!({"n": "3"}),
    );
    oci.push_manifest(REPO, &orphan_note.digest, &orphan_note)
        .await;

    // Without a retention window untagged manifests are kept.
    let report = gc(&core, &policy(Duration::ZERO, None), false).await;
    assert_eq!(report.deleted_manifests, 0, "{report}");
    assert_eq!(report.freed_blobs, 0, "{report}");
    assert_manifest_present(&oci, REPO, &orphan.manifest, true).await;

    let report = gc(&core, &policy(Duration::ZERO, Some(Duration::ZERO)), false).await;
    assert_eq!(
        report.deleted_manifests, 2,
        "orphan and its referrer: {report}"
    );
    assert_eq!(
        report.freed_blobs, 3,
        "the orphan's config and layers: {report}"
    );
    let orphan_bytes: u64 = orphan
        .layers
        .iter()
        .map(|l| l.data.len() as u64)
        .sum::<u64>()
        + orphan.config.data.len() as u64;
    assert_eq!(report.freed_bytes, orphan_bytes, "{report}");
    assert_eq!(report.unpinned, 3, "{report}");
    assert_eq!(
        report.manifest_bytes,
        (orphan.manifest.content.len() + orphan_note.content.len()) as u64
    );

    for kept in [&amd64, &arm64, &tagged] {
        assert_image_intact(&oci, &registry, REPO, kept).await;
    }
    for manifest in [&index, &signature, &sbom] {
        assert_manifest_present(&oci, REPO, manifest, true).await;
    }
    assert_manifest_present(&oci, REPO, &orphan.manifest, false).await;
    assert_manifest_present(&oci, REPO, &orphan_note, false).await;
    for layer in &orphan.layers {
        let response = oci
            .head(&format!("/v2/{REPO}/blobs/{}", layer.digest))
            .await;
        assert_eq!(response.status(), 404);
    }
    for blob in orphan.layers.iter().chain([&orphan.config]) {
        assert!(
            !common::blob_store_holds(&registry, &blob.data).await,
            "{} still held by the blob store",
            blob.digest
        );
    }
    assert_eq!(count(&db, "gc_unpin_queue").await, "0");
    let referrers: serde_json::Value = oci
        .get(&format!("/v2/{REPO}/referrers/{}", tagged.manifest.digest))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(referrers["manifests"].as_array().unwrap().len(), 1);

    // Untagging the index makes its whole tree collectable.
    expect_status(
        oci.delete(&format!("/v2/{REPO}/manifests/multi")).await,
        202,
    )
    .await;
    let report = gc(&core, &policy(Duration::ZERO, Some(Duration::ZERO)), false).await;
    assert_eq!(
        report.deleted_manifests, 4,
        "index, 2 children, sbom: {report}"
    );
    assert_image_intact(&oci, &registry, REPO, &tagged).await;
    assert_manifest_present(&oci, REPO, &signature, true).await;
    assert_manifest_present(&oci, REPO, &amd64.manifest, false).await;
    registry.server.stop().await;
}

common::on_each_store_pair!(dry_run_reports_without_changing_anything);

async fn dry_run_reports_without_changing_anything(stores: StorePair) {
    let registry = stores.start_registry().await;
    let oci = Oci::new(&registry.base);
    let db = common::sql::metadata(&registry).await;
    let core = registry.server.registry.clone();
    let orphan = oci.push_image(REPO, None, 2).await;
    let loose = oci.push_random_blob(REPO, 3000).await;
    let policy = policy(Duration::ZERO, Some(Duration::ZERO));

    let before = snapshot(&db).await;
    let dry = gc(&core, &policy, true).await;
    assert!(dry.dry_run);
    assert_eq!(dry.deleted_manifests, 1, "{dry}");
    assert_eq!(
        dry.freed_blobs, 4,
        "config, 2 layers, the loose blob: {dry}"
    );
    assert_eq!(dry.unpinned, 0);
    assert_eq!(
        snapshot(&db).await,
        before,
        "a dry run changed the database"
    );
    assert_image_intact(&oci, &registry, REPO, &orphan).await;
    assert_blob_intact(&oci, &registry, REPO, &loose).await;
    let metrics = registry.server.registry.metrics().encode();
    assert!(
        metrics.contains("ipfs_registry_gc_freed_bytes_total 0"),
        "a dry run counted freed bytes:\n{metrics}"
    );

    let real = gc(&core, &policy, false).await;
    assert_eq!(
        (real.deleted_manifests, real.freed_blobs, real.freed_bytes),
        (dry.deleted_manifests, dry.freed_blobs, dry.freed_bytes),
        "the dry run predicted the real run"
    );
    assert!(!common::blob_store_holds(&registry, &loose.data).await);
    let metrics = registry.server.registry.metrics().encode();
    assert!(
        metrics.contains(&format!(
            "ipfs_registry_gc_freed_bytes_total {}",
            real.freed_bytes
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("ipfs_registry_gc_runs_total{outcome=\"ok\"} 1"),
        "{metrics}"
    );
    registry.server.stop().await;
}

common::on_each_store_pair!(grace_period_keeps_fresh_uploads_and_deleted_content_goes_after_it);

async fn grace_period_keeps_fresh_uploads_and_deleted_content_goes_after_it(stores: StorePair) {
    let registry = stores.start_registry().await;
    let oci = Oci::new(&registry.base);
    let core = registry.server.registry.clone();
    let image = oci.push_image(REPO, Some("v1"), 1).await;
    let unreferenced = oci.push_random_blob(REPO, 2048).await;
    let default_policy = policy(Duration::from_secs(3600), None);

    let report = gc(&core, &default_policy, false).await;
    assert_eq!(
        (
            report.removed_links,
            report.freed_blobs,
            report.deleted_manifests
        ),
        (0, 0, 0),
        "{report}"
    );
    assert_blob_intact(&oci, &registry, REPO, &unreferenced).await;
    assert_image_intact(&oci, &registry, REPO, &image).await;

    // Deleting the manifest releases its blobs, once they are past the grace period.
    expect_status(
        oci.delete(&format!("/v2/{REPO}/manifests/{}", image.manifest.digest))
            .await,
        202,
    )
    .await;
    let report = gc(&core, &default_policy, false).await;
    assert_eq!(
        report.freed_blobs, 0,
        "still inside the grace period: {report}"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let report = gc(&core, &policy(Duration::from_secs(1), None), false).await;
    assert_eq!(report.freed_blobs, 3, "{report}");
    assert_eq!(report.removed_links, 3, "{report}");
    registry.server.stop().await;
}

common::on_each_store_pair!(expired_upload_sessions_are_ended_and_their_chunks_unpinned);

async fn expired_upload_sessions_are_ended_and_their_chunks_unpinned(stores: StorePair) {
    let registry = stores.start_registry().await;
    let oci = Oci::new(&registry.base);
    let core = registry.server.registry.clone();
    let stale = oci.start_upload(REPO).await;
    let chunk = random_bytes(5000);
    expect_status(oci.patch_chunk(&stale, 0, &chunk).await, 202).await;
    // The embedded store keeps the session's bytes in one file; a node stores the chunk.
    let in_place = registry.config.ipfs.url.is_none();
    if in_place {
        let files = common::upload_files(&registry);
        assert!(
            files.iter().any(|f| std::fs::read(f).unwrap() == chunk),
            "the chunk is in its session's file: {files:?}"
        );
    } else {
        assert!(
            common::blob_store_holds(&registry, &chunk).await,
            "the chunk is stored as it arrives"
        );
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let fresh = oci.start_upload(REPO).await;

    let mut expiring = policy(Duration::from_secs(3600), None);
    expiring.upload_expiry = Duration::from_secs(1);
    let report = gc(&core, &expiring, false).await;
    assert_eq!(report.expired_uploads, 1, "{report}");
    assert_eq!(report.unpinned, usize::from(!in_place), "{report}");
    assert!(!common::blob_store_holds(&registry, &chunk).await);
    assert_eq!(
        common::upload_files(&registry),
        Vec::<std::path::PathBuf>::new(),
        "the expired session's files are deleted"
    );
    assert_eq!(oci.get(&stale).await.status(), 404);
    assert_eq!(
        oci.get(&fresh).await.status(),
        204,
        "a fresh session survives"
    );
    registry.server.stop().await;
}

common::on_each_store_pair!(an_ended_upload_releases_its_chunks_and_leaves_nothing_queued);

/// A session's chunks are unpinned as soon as it ends, completed or cancelled, and the
/// unpin queue entries the metadata made for them (in case the registry crashed first) go
/// with them: nothing is left for GC.
async fn an_ended_upload_releases_its_chunks_and_leaves_nothing_queued(stores: StorePair) {
    let registry = stores.start_registry().await;
    let oci = Oci::new(&registry.base);
    let gc_store = gc_store(&registry.config).await;
    let (first, last) = (random_bytes(3000), random_bytes(4000));
    let whole = [first.as_slice(), last.as_slice()].concat();
    let location = oci.start_upload(REPO).await;
    let patched = expect_status(oci.patch_chunk(&location, 0, &first).await, 202).await;
    let location = header(&patched, "location");
    let patched = expect_status(oci.patch_chunk(&location, 3000, &last).await, 202).await;
    let location = header(&patched, "location");
    let done = oci
        .put_upload(&location, &common::oci::sha256(&whole), Vec::new())
        .await;
    expect_status(done, 201).await;
    assert!(common::blob_store_holds(&registry, &whole).await);

    let cancelled = oci.start_upload(REPO).await;
    let abandoned = random_bytes(5000);
    let patched = expect_status(oci.patch_chunk(&cancelled, 0, &abandoned).await, 202).await;
    expect_status(oci.delete(&header(&patched, "location")).await, 204).await;

    // A completed upload's chunks are unpinned just after the push answers; a cancelled
    // one's before the DELETE answers.
    assert!(!common::blob_store_holds(&registry, &abandoned).await);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut held = Vec::new();
        for chunk in [&first, &last] {
            held.push(common::blob_store_holds(&registry, chunk).await);
        }
        let queued = gc_store.unpin_queue(10).await.unwrap();
        if held == [false, false] && queued.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "chunks held {held:?}, still queued {queued:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        common::upload_files(&registry),
        Vec::<std::path::PathBuf>::new(),
        "no session file outlives its session"
    );
    registry.server.stop().await;
}

common::on_each_store_pair!(a_joined_upload_is_pinned_whole_and_releases_its_chunks);

/// A chunked push whose chunks are whole leaves is joined from them. On an IPFS node the
/// push answers before the joined blob's recursive pin is made (the chunks' pins keep its
/// leaves until then); soon after, the blob is pinned whole and nothing of the session is
/// left pinned, queued or held.
async fn a_joined_upload_is_pinned_whole_and_releases_its_chunks(stores: StorePair) {
    let registry = stores.start_registry().await;
    let oci = Oci::new(&registry.base);
    const LEAF: usize = 256 * 1024;
    let chunks = [
        random_bytes(2 * LEAF),
        random_bytes(2 * LEAF),
        random_bytes(1000),
    ];
    let whole = chunks.concat();
    let digest = common::oci::sha256(&whole);
    let mut location = oci.start_upload(REPO).await;
    let mut offset = 0;
    for chunk in &chunks[..2] {
        let patched = expect_status(oci.patch_chunk(&location, offset, chunk).await, 202).await;
        location = header(&patched, "location");
        offset += chunk.len();
    }
    let done = oci.put_upload(&location, &digest, chunks[2].clone()).await;
    expect_status(done, 201).await;
    let pulled = oci.get(&format!("/v2/{REPO}/blobs/{digest}")).await;
    assert!(expect_status(pulled, 200).await.bytes().await.unwrap() == whole);
    if registry.config.ipfs.url.is_some() {
        // (The embedded store keeps a session's bytes in one file: nothing to join.)
        let joins = registry
            .metric("ipfs_registry_ipfs_calls_total{operation=\"concat\"}")
            .await;
        assert_eq!(joins, Some(1.0), "the chunks were joined, not read back");
    }

    wait_until_only_the_whole_is_held(&registry, &whole, &chunks).await;
    registry.server.stop().await;
}

/// Waits (at most a minute) until the blob store holds `whole` and none of its `parts`,
/// and nothing is left queued for unpinning or waiting for a recursive pin.
async fn wait_until_only_the_whole_is_held(
    registry: &TestRegistry,
    whole: &[u8],
    parts: &[Vec<u8>],
) {
    let gc_store = gc_store(&registry.config).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut held = Vec::new();
        for part in parts {
            held.push(common::blob_store_holds(registry, part).await);
        }
        let whole_held = common::blob_store_holds(registry, whole).await;
        let queued = gc_store.unpin_queue(10).await.unwrap();
        let pending = gc_store.pending_pin_roots(10).await.unwrap();
        if whole_held && !held.contains(&true) && queued.is_empty() && pending.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "whole blob held {whole_held}, parts held {held:?}, queued {queued:?}, pending {pending:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

common::on_each_store_pair!(a_pending_pin_left_by_a_stopped_registry_is_finished_at_start);

/// A registry stopped after a joined upload was committed but before its recursive pin
/// (the state is made here as that registry would have left it) leaves the pin to the
/// next start: the blob ends pinned whole, and the chunks and nodes held for it released.
async fn a_pending_pin_left_by_a_stopped_registry_is_finished_at_start(stores: StorePair) {
    use common::backends::MetaBackend;
    let first = stores.start_registry().await;
    let config = first.config.clone();
    first.server.stop().await;

    let meta: Box<dyn MetaBackend> = match &config.database.url {
        Some(_) => Box::new(PostgresStore::connect(&config.database).await.unwrap()),
        None => Box::new(SqliteStore::open(&config.data_dir.join("metadata.sqlite")).unwrap()),
    };
    let blobs =
        ipfs_registry::blobs::open(&config, Arc::new(ipfs_registry::metrics::Metrics::new()))
            .unwrap();
    const LEAF: usize = 256 * 1024;
    let parts = [random_bytes(2 * LEAF), random_bytes(LEAF + 10)];
    let whole = parts.concat();
    let repo: ipfs_registry::oci::RepoName = REPO.parse().unwrap();
    let upload = meta.create_upload(&repo, vec![]).await.unwrap();
    let mut cids = Vec::new();
    let mut offset = 0;
    for part in &parts {
        let stored = blobs
            .add(Box::pin(futures::stream::iter([Ok(bytes::Bytes::from(
                part.clone(),
            ))])))
            .await
            .unwrap();
        let chunk = ipfs_registry::meta::UploadChunk {
            offset,
            size: stored.size,
            cid: stored.cid,
        };
        assert!(meta
            .append_upload_chunk(upload.id, chunk, vec![])
            .await
            .unwrap());
        cids.push(stored.cid);
        offset += stored.size;
    }
    let joined = blobs.concat(&cids).await.unwrap().expect("aligned parts");
    let pending = ipfs_registry::meta::PendingPin {
        root: joined.stored.cid,
        direct: joined.direct.unwrap_or_default(),
    };
    let record = ipfs_registry::meta::BlobRecord {
        digest: common::oci::sha256(&whole).parse().unwrap(),
        cid: joined.stored.cid,
        size: joined.stored.size,
        import_profile: blobs.profile().id(),
    };
    meta.complete_upload_with_notices(upload.id, &repo, record, Some(&pending), &[])
        .await
        .unwrap();
    assert_eq!(
        meta.pending_pin_roots(10).await.unwrap(),
        vec![pending.root]
    );
    drop((meta, blobs));

    let second = common::start_registry_from(config).await;
    wait_until_only_the_whole_is_held(&second, &whole, &parts).await;
    let oci = Oci::new(&second.base);
    let digest = common::oci::sha256(&whole);
    let pulled = oci.get(&format!("/v2/{REPO}/blobs/{digest}")).await;
    assert!(expect_status(pulled, 200).await.bytes().await.unwrap() == whole);
    second.server.stop().await;
}

common::on_each_store_pair!(one_collection_at_a_time_across_replicas);

async fn one_collection_at_a_time_across_replicas(stores: StorePair) {
    let first = stores.start_registry().await;
    let second = common::start_registry_from(first.config.clone()).await;
    // Hold the lock from the outside, as a run on another replica would.
    let outside = gc_store(&first.config).await;
    let holder = outside
        .try_gc_lease()
        .await
        .unwrap()
        .expect("no run holds the lock yet");
    let outcome = second
        .server
        .registry
        .collect_garbage(&policy(Duration::ZERO, None), false, &|_| {})
        .await
        .unwrap();
    assert!(
        outcome.is_none(),
        "ran despite another run holding the lock"
    );
    holder.release().await;
    let outcome = second
        .server
        .registry
        .collect_garbage(&policy(Duration::ZERO, None), false, &|_| {})
        .await
        .unwrap();
    assert!(outcome.is_some());
    first.server.stop().await;
    second.server.stop().await;
}

/// What one pusher got in the end.
struct Pushed {
    repo: String,
    image: Image,
    index: Manifest,
    attempts: usize,
}

/// Puts a manifest: true when stored, false when refused with MANIFEST_BLOB_UNKNOWN (GC
/// took something it references); anything else fails the test.
async fn put(oci: &Oci, repo: &str, reference: &str, manifest: &Manifest) -> bool {
    let response = oci
        .put_manifest(repo, reference, &manifest.media_type, &manifest.content)
        .await;
    match response.status().as_u16() {
        201 => true,
        400 => {
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(body["errors"][0]["code"], "MANIFEST_BLOB_UNKNOWN", "{body}");
            false
        }
        other => panic!(
            "manifest push answered {other}: {}",
            response.text().await.unwrap()
        ),
    }
}

/// Pushes a one-platform multi-arch image like a client does: blobs, a pause, the platform
/// manifest by digest, a pause, the index under the tag. When a manifest is refused
/// because GC took what it references meanwhile, the client starts over.
async fn push_racing(oci: Oci, repo: String, shared: Blob, pause_ms: u64) -> Pushed {
    let mut attempts = 0;
    loop {
        attempts += 1;
        // The collector stops after MAX_RACING_GC_RUNS, so every push goes through in the
        // end however busy the machine; the bound only stops a broken registry looping.
        assert!(attempts <= 1000, "a push kept being refused");
        let config = oci
            .push_blob(
                &repo,
                &serde_json::to_vec(&json!({"n": hex::encode(random_bytes(8))})).unwrap(),
            )
            .await;
        let own = oci.push_random_blob(&repo, 1500 + attempts * 7).await;
        // A layer over one IPFS chunk, so multi-block DAGs are unpinned and re-pinned too.
        let big = oci.push_random_blob(&repo, 300 * 1024).await;
        // The shared base layer: already stored, so this push only proves possession.
        let base = oci.push_blob(&repo, &shared.data).await;
        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        let layers = vec![base, own, big];
        let manifest = image_manifest(&config, &layers, None);
        if !put(&oci, &repo, &manifest.digest, &manifest).await {
            continue;
        }
        // Untagged until the index lands: with no retention window GC may take it.
        tokio::time::sleep(Duration::from_millis(pause_ms / 2)).await;
        let index = index_of(&[&manifest]);
        if !put(&oci, &repo, "latest", &index).await {
            continue;
        }
        return Pushed {
            repo,
            image: Image {
                config,
                layers,
                manifest,
            },
            index,
            attempts,
        };
    }
}

/// GC runs that race the pushes at most. A run takes seconds on a quiet machine, so the
/// pushes end first; on a busy one pushes slow down more than the sweeps, and unbounded
/// sweeps every few milliseconds could refuse a push's every attempt.
const MAX_RACING_GC_RUNS: usize = 40;

/// Runs pushers while GC sweeps over and over; returns the pushes and the GC reports.
async fn race(stores: StorePair, grace: Duration) -> (TestRegistry, Vec<Pushed>, Vec<GcReport>) {
    let registry = stores.start_registry().await;
    let oci = Oci::new(&registry.base);
    let core = registry.server.registry.clone();
    let shared = Blob {
        data: random_bytes(4000),
        digest: String::new(),
    };
    let shared = oci.push_blob("gc/base", &shared.data).await;
    let done = Arc::new(AtomicBool::new(false));
    let collector = {
        let done = done.clone();
        let core = core.clone();
        tokio::spawn(async move {
            let policy = policy(grace, Some(grace));
            let mut reports = Vec::new();
            while !done.load(Ordering::SeqCst) && reports.len() < MAX_RACING_GC_RUNS {
                reports.push(gc(&core, &policy, false).await);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            reports
        })
    };
    let mut pushers = Vec::new();
    for i in 0..24u64 {
        let repo = format!("gc/race{}", i % 4);
        pushers.push(tokio::spawn(push_racing(
            oci.clone(),
            repo,
            shared.clone(),
            (i * 7) % 25,
        )));
    }
    let mut pushed = Vec::new();
    for pusher in pushers {
        pushed.push(pusher.await.expect("pusher"));
    }
    done.store(true, Ordering::SeqCst);
    let reports = collector.await.expect("collector");
    (registry, pushed, reports)
}

common::on_each_store_pair!(gc_racing_pushes_never_loses_a_pushed_blob);

async fn gc_racing_pushes_never_loses_a_pushed_blob(stores: StorePair) {
    let (registry, pushed, reports) = race(stores, Duration::ZERO).await;
    let oci = Oci::new(&registry.base);
    let freed: usize = reports.iter().map(|r| r.freed_blobs).sum();
    let deleted: usize = reports.iter().map(|r| r.deleted_manifests).sum();
    let retried = pushed.iter().filter(|p| p.attempts > 1).count();
    eprintln!(
        "{} gc runs freed {freed} blobs and {deleted} manifests; \
         {retried} of {} pushes were refused at least once",
        reports.len(),
        pushed.len()
    );
    assert!(reports.len() >= 2, "GC must actually race the pushes");
    assert!(
        freed > 0,
        "with no grace period GC must have collected something"
    );
    assert!(
        retried > 0,
        "GC never swept between a push's blobs and its manifest: the race was not exercised"
    );
    // Whatever a stored manifest references is whole. Earlier pushes of a repository lost
    // their tag to later ones and may have been collected by the retention policy, but
    // only together with what they reference; an index's child never goes before it.
    for p in &pushed {
        let index = oci
            .head(&format!("/v2/{}/manifests/{}", p.repo, p.index.digest))
            .await;
        let child = oci
            .head(&format!(
                "/v2/{}/manifests/{}",
                p.repo, p.image.manifest.digest
            ))
            .await;
        if index.status() == 200 {
            assert_eq!(child.status(), 200, "an index outlived its child");
        }
        if child.status() == 200 {
            assert_image_intact(&oci, &registry, &p.repo, &p.image).await;
        }
    }
    // The tag of each repository points at a pushed index whose image is whole, before and
    // after one more sweep once the pushes are over.
    let core = registry.server.registry.clone();
    for round in 0..2 {
        if round == 1 {
            gc(&core, &policy(Duration::ZERO, Some(Duration::ZERO)), false).await;
        }
        for i in 0..4 {
            let repo = format!("gc/race{i}");
            let response = oci.get(&format!("/v2/{repo}/manifests/latest")).await;
            let response = expect_status(response, 200).await;
            let digest = common::oci::header(&response, "docker-content-digest");
            let p = pushed
                .iter()
                .find(|p| p.index.digest == digest)
                .expect("the tag points at a pushed index");
            assert_eq!(response.bytes().await.unwrap(), p.index.content);
            assert_image_intact(&oci, &registry, &repo, &p.image).await;
        }
    }
    registry.server.stop().await;
}

common::on_each_store_pair!(gc_racing_pushes_with_a_grace_period_collects_nothing);

async fn gc_racing_pushes_with_a_grace_period_collects_nothing(stores: StorePair) {
    let (registry, pushed, reports) = race(stores, Duration::from_secs(3600)).await;
    let oci = Oci::new(&registry.base);
    assert!(reports.len() >= 2, "GC must actually race the pushes");
    for report in &reports {
        assert_eq!(
            (
                report.removed_links,
                report.freed_blobs,
                report.deleted_manifests
            ),
            (0, 0, 0),
            "{report}"
        );
    }
    for p in &pushed {
        assert_eq!(p.attempts, 1, "no push is refused inside the grace period");
        assert_image_intact(&oci, &registry, &p.repo, &p.image).await;
    }
    registry.server.stop().await;
}

common::on_each_store_pair!(serve_collects_periodically_when_an_interval_is_set);

async fn serve_collects_periodically_when_an_interval_is_set(stores: StorePair) {
    // The grace period must outlast pushing one small image: with none, a sweep may land
    // between the layer upload and the manifest put and rightly collect the fresh layer.
    let registry = stores
        .start_registry_with(|c| {
            c.gc.interval = Duration::from_millis(200);
            c.gc.grace_period = Duration::from_secs(3);
        })
        .await;
    let oci = Oci::new(&registry.base);
    let image = oci.push_image(REPO, Some("v1"), 1).await;
    let loose = oci.push_random_blob(REPO, 1234).await;
    let started = std::time::Instant::now();
    loop {
        let head = oci
            .head(&format!("/v2/{REPO}/blobs/{}", loose.digest))
            .await;
        if head.status() == 404 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "online GC never collected the unreferenced blob"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_image_intact(&oci, &registry, REPO, &image).await;
    let metrics = registry.server.registry.metrics().encode();
    assert!(
        !metrics.contains("ipfs_registry_gc_runs_total{outcome=\"ok\"} 0"),
        "{metrics}"
    );
    registry.server.stop().await;
}
