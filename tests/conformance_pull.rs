//! OCI Distribution Spec v1.1 conformance: the base endpoint and pulling blobs (full,
//! ranged, unknown, per-repository visibility).

mod common;

use common::oci::*;
use common::StorePair;

async fn registry(stores: StorePair) -> (common::TestRegistry, Oci) {
    let registry = stores.start_registry().await;
    let oci = Oci::new(&registry.base);
    (registry, oci)
}

common::on_each_store_pair!(base_endpoint_reports_the_api_version);
async fn base_endpoint_reports_the_api_version(stores: StorePair) {
    let (registry, oci) = registry(stores).await;
    for path in ["/v2/", "/v2"] {
        let response = expect_status(oci.get(path).await, 200).await;
        assert_eq!(
            header(&response, "docker-distribution-api-version"),
            "registry/2.0",
            "GET {path}"
        );
    }
    let head = expect_status(oci.head("/v2/").await, 200).await;
    assert_eq!(
        header(&head, "docker-distribution-api-version"),
        "registry/2.0"
    );
    registry.server.stop().await;
}

common::on_each_store_pair!(blob_get_and_head);
async fn blob_get_and_head(stores: StorePair) {
    let (registry, oci) = registry(stores).await;
    let blob = oci.push_random_blob("pull/blob", 300_000).await;
    let path = format!("/v2/pull/blob/blobs/{}", blob.digest);

    let head = expect_status(oci.head(&path).await, 200).await;
    assert_eq!(header(&head, "content-length"), "300000");
    assert_eq!(header(&head, "docker-content-digest"), blob.digest);
    assert_eq!(header(&head, "accept-ranges"), "bytes");
    assert!(head.bytes().await.unwrap().is_empty(), "HEAD has no body");

    let get = expect_status(oci.get(&path).await, 200).await;
    assert_eq!(header(&get, "content-length"), "300000");
    assert_eq!(header(&get, "docker-content-digest"), blob.digest);
    assert_eq!(header(&get, "accept-ranges"), "bytes");
    let body = get.bytes().await.unwrap();
    assert!(body == blob.data, "blob bytes differ");

    // The empty blob is a blob like any other.
    let empty = oci.push_blob("pull/blob", b"").await;
    let path = format!("/v2/pull/blob/blobs/{}", empty.digest);
    let get = expect_status(oci.get(&path).await, 200).await;
    assert_eq!(header(&get, "content-length"), "0");
    assert!(get.bytes().await.unwrap().is_empty());
    registry.server.stop().await;
}

async fn range(oci: &Oci, path: &str, spec: &str) -> reqwest::Response {
    oci.request(reqwest::Method::GET, path)
        .header("Range", spec)
        .send()
        .await
        .unwrap()
}

common::on_each_store_pair!(blob_range_requests);
async fn blob_range_requests(stores: StorePair) {
    let (registry, oci) = registry(stores).await;
    // Larger than one 256 KiB import chunk, so ranges cross chunk boundaries.
    let size = 600_000usize;
    let blob = oci.push_random_blob("pull/range", size).await;
    let data = &blob.data;
    let path = format!("/v2/pull/range/blobs/{}", blob.digest);

    let cases: [(&str, usize, usize); 6] = [
        ("bytes=0-9", 0, 9),
        ("bytes=5-", 5, size - 1),
        ("bytes=-3", size - 3, size - 1),
        ("bytes=262140-262150", 262_140, 262_150),
        ("bytes=599999-599999", size - 1, size - 1),
        // An end past the blob is cut to the blob.
        ("bytes=10-99999999", 10, size - 1),
    ];
    for (spec, start, end) in cases {
        let response = expect_status(range(&oci, &path, spec).await, 206).await;
        assert_eq!(
            header(&response, "content-range"),
            format!("bytes {start}-{end}/{size}"),
            "{spec}"
        );
        assert_eq!(
            header(&response, "content-length"),
            (end - start + 1).to_string(),
            "{spec}"
        );
        assert_eq!(header(&response, "docker-content-digest"), blob.digest);
        let body = response.bytes().await.unwrap();
        assert!(body == data[start..=end], "{spec}: wrong bytes");
    }

    for spec in ["bytes=600000-", "bytes=700000-700010", "bytes=-0"] {
        let response = range(&oci, &path, spec).await;
        assert_eq!(response.status(), 416, "{spec}");
        assert_eq!(
            header(&response, "content-range"),
            format!("bytes */{size}"),
            "{spec}"
        );
        assert_error(response, 416, "SIZE_INVALID").await;
    }
    registry.server.stop().await;
}

common::on_each_store_pair!(unknown_blob_is_404);
async fn unknown_blob_is_404(stores: StorePair) {
    let (registry, oci) = registry(stores).await;
    oci.push_random_blob("pull/unknown", 10).await;
    let path = format!("/v2/pull/unknown/blobs/{}", unknown_digest());
    assert_eq!(oci.head(&path).await.status(), 404);
    assert_error(oci.get(&path).await, 404, "BLOB_UNKNOWN").await;
    // Also in a repository that does not exist at all.
    let path = format!("/v2/pull/nowhere/blobs/{}", unknown_digest());
    assert_eq!(oci.head(&path).await.status(), 404);
    assert_error(oci.get(&path).await, 404, "BLOB_UNKNOWN").await;
    registry.server.stop().await;
}

common::on_each_store_pair!(blobs_are_visible_only_in_their_repository);
async fn blobs_are_visible_only_in_their_repository(stores: StorePair) {
    let (registry, oci) = registry(stores).await;
    let blob = oci.push_random_blob("pull/a", 2000).await;
    oci.push_random_blob("pull/b", 10).await;

    let in_b = format!("/v2/pull/b/blobs/{}", blob.digest);
    assert_eq!(oci.head(&in_b).await.status(), 404);
    assert_error(oci.get(&in_b).await, 404, "BLOB_UNKNOWN").await;
    assert_error(range(&oci, &in_b, "bytes=0-9").await, 404, "BLOB_UNKNOWN").await;

    let mounted = oci
        .http
        .post(oci.with_query(
            "/v2/pull/b/blobs/uploads/",
            &[("mount", &blob.digest), ("from", "pull/a")],
        ))
        .send()
        .await
        .unwrap();
    expect_status(mounted, 201).await;
    let got = expect_status(oci.get(&in_b).await, 200).await;
    assert!(got.bytes().await.unwrap() == blob.data);
    registry.server.stop().await;
}
