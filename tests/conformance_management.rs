//! OCI Distribution Spec v1.1 conformance: content management — deleting tags, manifests
//! and blobs, and a registry with deletes disabled.

mod common;

use common::oci::*;
use common::StorePair;
use serde_json::json;

async fn registry(stores: StorePair) -> (common::TestRegistry, Oci) {
    let registry = stores.start_registry().await;
    let oci = Oci::new(&registry.base);
    (registry, oci)
}

common::on_each_store_pair!(delete_tag_keeps_the_manifest);
async fn delete_tag_keeps_the_manifest(stores: StorePair) {
    let (registry, oci) = registry(stores).await;
    let repo = "mgmt/tag";
    let image = oci.push_image(repo, Some("v1"), 1).await;
    oci.push_manifest(repo, "v2", &image.manifest).await;

    let deleted = oci.delete(&format!("/v2/{repo}/manifests/v1")).await;
    expect_status(deleted, 202).await;

    assert_error(
        oci.get(&format!("/v2/{repo}/manifests/v1")).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    let by_digest = oci
        .get(&format!("/v2/{repo}/manifests/{}", image.manifest.digest))
        .await;
    let by_digest = expect_status(by_digest, 200).await;
    assert!(by_digest.bytes().await.unwrap() == image.manifest.content);
    expect_status(oci.get(&format!("/v2/{repo}/manifests/v2")).await, 200).await;
    let (tags, _) = oci.tags(&format!("/v2/{repo}/tags/list")).await;
    assert_eq!(tags, vec!["v2"]);

    // Deleting it again: it is unknown now.
    assert_error(
        oci.delete(&format!("/v2/{repo}/manifests/v1")).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    registry.server.stop().await;
}

common::on_each_store_pair!(delete_manifest_by_digest_removes_its_tags);
async fn delete_manifest_by_digest_removes_its_tags(stores: StorePair) {
    let (registry, oci) = registry(stores).await;
    let repo = "mgmt/manifest";
    let image = oci.push_image(repo, Some("v1"), 1).await;
    oci.push_manifest(repo, "v1.0", &image.manifest).await;
    let keep = oci.push_image(repo, Some("keep"), 1).await;

    let path = format!("/v2/{repo}/manifests/{}", image.manifest.digest);
    expect_status(oci.delete(&path).await, 202).await;

    assert_eq!(oci.head(&path).await.status(), 404);
    assert_error(oci.get(&path).await, 404, "MANIFEST_UNKNOWN").await;
    for tag in ["v1", "v1.0"] {
        assert_error(
            oci.get(&format!("/v2/{repo}/manifests/{tag}")).await,
            404,
            "MANIFEST_UNKNOWN",
        )
        .await;
    }
    let (tags, _) = oci.tags(&format!("/v2/{repo}/tags/list")).await;
    assert_eq!(tags, vec!["keep"]);
    let kept = oci
        .get(&format!("/v2/{repo}/manifests/{}", keep.manifest.digest))
        .await;
    expect_status(kept, 200).await;

    assert_error(oci.delete(&path).await, 404, "MANIFEST_UNKNOWN").await;
    assert_error(
        oci.delete(&format!("/v2/{repo}/manifests/{}", unknown_digest()))
            .await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    registry.server.stop().await;
}

common::on_each_store_pair!(deleted_referrer_leaves_the_referrers_list);
async fn deleted_referrer_leaves_the_referrers_list(stores: StorePair) {
    let (registry, oci) = registry(stores).await;
    let repo = "mgmt/referrer";
    let image = oci.push_image(repo, Some("v1"), 0).await;
    oci.push_blob(repo, EMPTY_JSON).await;
    let sig = artifact_manifest(
        "application/vnd.example.sig",
        Some(&image.manifest),
        json!({}),
    );
    oci.push_manifest(repo, &sig.digest, &sig).await;
    let path = format!("/v2/{repo}/referrers/{}", image.manifest.digest);
    let listed: serde_json::Value = expect_status(oci.get(&path).await, 200)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["manifests"].as_array().unwrap().len(), 1);

    expect_status(
        oci.delete(&format!("/v2/{repo}/manifests/{}", sig.digest))
            .await,
        202,
    )
    .await;
    let listed: serde_json::Value = expect_status(oci.get(&path).await, 200)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["manifests"], json!([]));
    registry.server.stop().await;
}

common::on_each_store_pair!(delete_blob);
async fn delete_blob(stores: StorePair) {
    let (registry, oci) = registry(stores).await;
    let blob = oci.push_random_blob("mgmt/blob", 3000).await;
    // The same blob in another repository.
    let mounted = oci
        .http
        .post(oci.with_query(
            "/v2/mgmt/other/blobs/uploads/",
            &[("mount", &blob.digest), ("from", "mgmt/blob")],
        ))
        .send()
        .await
        .unwrap();
    expect_status(mounted, 201).await;

    let path = format!("/v2/mgmt/blob/blobs/{}", blob.digest);
    expect_status(oci.delete(&path).await, 202).await;
    assert_eq!(oci.head(&path).await.status(), 404);
    assert_error(oci.get(&path).await, 404, "BLOB_UNKNOWN").await;
    assert_error(oci.delete(&path).await, 404, "BLOB_UNKNOWN").await;

    // Only that repository lost it.
    let other = format!("/v2/mgmt/other/blobs/{}", blob.digest);
    let got = expect_status(oci.get(&other).await, 200).await;
    assert!(got.bytes().await.unwrap() == blob.data);

    assert_error(
        oci.delete(&format!("/v2/mgmt/blob/blobs/{}", unknown_digest()))
            .await,
        404,
        "BLOB_UNKNOWN",
    )
    .await;
    registry.server.stop().await;
}

common::on_each_store_pair!(deletes_disabled_are_unsupported);
async fn deletes_disabled_are_unsupported(stores: StorePair) {
    let registry = stores
        .start_registry_with(|c| c.delete_enabled = false)
        .await;
    let oci = Oci::new(&registry.base);
    let repo = "mgmt/nodelete";
    let image = oci.push_image(repo, Some("v1"), 1).await;
    let manifest_path = format!("/v2/{repo}/manifests/{}", image.manifest.digest);
    let blob_path = format!("/v2/{repo}/blobs/{}", image.layers[0].digest);
    for path in [
        format!("/v2/{repo}/manifests/v1"),
        manifest_path.clone(),
        blob_path.clone(),
    ] {
        assert_error(oci.delete(&path).await, 405, "UNSUPPORTED").await;
    }
    // Everything is still there.
    expect_status(oci.get(&format!("/v2/{repo}/manifests/v1")).await, 200).await;
    expect_status(oci.get(&manifest_path).await, 200).await;
    expect_status(oci.get(&blob_path).await, 200).await;
    registry.server.stop().await;
}
