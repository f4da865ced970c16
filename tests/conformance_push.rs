//! OCI Distribution Spec v1.1 conformance: pushing blobs (monolithic, single-request,
//! chunked), upload sessions, mounts, digests, names and limits.

mod common;

use common::oci::*;
use common::StorePair;

async fn registry(stores: StorePair) -> (common::TestRegistry, Oci) {
    let registry = stores.start_registry().await;
    let oci = Oci::new(&registry.base);
    (registry, oci)
}

/// The blob is visible in `repo` with exactly `data`.
async fn assert_blob(oci: &Oci, repo: &str, digest: &str, data: &[u8]) {
    let path = format!("/v2/{repo}/blobs/{digest}");
    let head = expect_status(oci.head(&path).await, 200).await;
    assert_eq!(header(&head, "content-length"), data.len().to_string());
    assert_eq!(header(&head, "docker-content-digest"), digest);
    let get = expect_status(oci.get(&path).await, 200).await;
    assert_eq!(header(&get, "docker-content-digest"), digest);
    assert!(get.bytes().await.unwrap() == data, "blob bytes differ");
}

async fn assert_no_blob(oci: &Oci, repo: &str, digest: &str) {
    let path = format!("/v2/{repo}/blobs/{digest}");
    assert_eq!(oci.head(&path).await.status(), 404, "HEAD {path}");
    assert_error(oci.get(&path).await, 404, "BLOB_UNKNOWN").await;
}

common::on_each_store_pair!(monolithic_post_then_put);
async fn monolithic_post_then_put(stores: StorePair) {
    let (registry, oci) = registry(stores).await;
    let data = random_bytes(3000);
    let digest = sha256(&data);

    let started = oci
        .request(reqwest::Method::POST, "/v2/push/mono/blobs/uploads/")
        .send()
        .await
        .unwrap();
    let started = expect_status(started, 202).await;
    let location = header(&started, "location");
    assert!(!header(&started, "docker-upload-uuid").is_empty());

    let done = expect_status(oci.put_upload(&location, &digest, data.clone()).await, 201).await;
    assert_eq!(header(&done, "docker-content-digest"), digest);
    let blob_location = header(&done, "location");
    let pulled = expect_status(oci.get(&blob_location).await, 200).await;
    assert!(pulled.bytes().await.unwrap() == data);
    assert_blob(&oci, "push/mono", &digest, &data).await;
    registry.server.stop().await;
}

common::on_each_store_pair!(single_post_with_digest);
async fn single_post_with_digest(stores: StorePair) {
    let (registry, oci) = registry(stores).await;
    let data = random_bytes(5000);
    let digest = sha256(&data);
    let done = expect_status(oci.post_blob("push/single", &data, &digest).await, 201).await;
    assert_eq!(header(&done, "docker-content-digest"), digest);
    let pulled = expect_status(oci.get(&header(&done, "location")).await, 200).await;
    assert!(pulled.bytes().await.unwrap() == data);
    assert_blob(&oci, "push/single", &digest, &data).await;

    // The same content again (already stored) is accepted too.
    let again = oci.post_blob("push/single", &data, &digest).await;
    expect_status(again, 201).await;
    registry.server.stop().await;
}

common::on_each_store_pair!(chunked_post_patch_put);
async fn chunked_post_patch_put(stores: StorePair) {
    let (registry, oci) = registry(stores).await;
    // Chunks across the 256 KiB import chunk size, one not aligned.
    let data = random_bytes(700_000);
    let digest = sha256(&data);
    let mut location = oci.start_upload("push/chunked").await;
    let mut offset = 0;
    for chunk in data.chunks(300_001) {
        let patched = expect_status(oci.patch_chunk(&location, offset, chunk).await, 202).await;
        offset += chunk.len();
        assert_eq!(header(&patched, "range"), format!("0-{}", offset - 1));
        assert!(!header(&patched, "docker-upload-uuid").is_empty());
        location = header(&patched, "location");
    }
    let done = expect_status(oci.put_upload(&location, &digest, Vec::new()).await, 201).await;
    assert_eq!(header(&done, "docker-content-digest"), digest);
    assert_blob(&oci, "push/chunked", &digest, &data).await;
    registry.server.stop().await;
}

common::on_each_store_pair!(chunked_patch_without_content_range);
async fn chunked_patch_without_content_range(stores: StorePair) {
    // Streamed upload: PATCH bodies without Content-Range are appended in order.
    let (registry, oci) = registry(stores).await;
    let data = random_bytes(4000);
    let digest = sha256(&data);
    let location = oci.start_upload("push/streamed").await;
    let (a, b) = data.split_at(1500);
    let mut location = location;
    for piece in [a, b] {
        let patched = oci
            .request(reqwest::Method::PATCH, &location)
            .header("Content-Type", "application/octet-stream")
            .body(piece.to_vec())
            .send()
            .await
            .unwrap();
        let patched = expect_status(patched, 202).await;
        location = header(&patched, "location");
    }
    let done = oci.put_upload(&location, &digest, Vec::new()).await;
    expect_status(done, 201).await;
    assert_blob(&oci, "push/streamed", &digest, &data).await;
    registry.server.stop().await;
}

common::on_each_store_pair!(put_with_final_chunk);
async fn put_with_final_chunk(stores: StorePair) {
    let (registry, oci) = registry(stores).await;
    let data = random_bytes(10_000);
    let digest = sha256(&data);
    let (first, last) = data.split_at(6000);
    let location = oci.start_upload("push/final").await;
    let patched = expect_status(oci.patch_chunk(&location, 0, first).await, 202).await;
    let location = header(&patched, "location");
    // As the conformance suite does: the final chunk with its Content-Range on the PUT.
    let done = oci
        .http
        .put(oci.with_query(&location, &[("digest", &digest)]))
        .header("Content-Type", "application/octet-stream")
        .header("Content-Range", format!("6000-{}", data.len() - 1))
        .header("Content-Length", last.len())
        .body(last.to_vec())
        .send()
        .await
        .unwrap();
    let done = expect_status(done, 201).await;
    assert_eq!(header(&done, "docker-content-digest"), digest);
    assert_blob(&oci, "push/final", &digest, &data).await;
    registry.server.stop().await;
}

common::on_each_store_pair!(out_of_order_chunk_is_416_with_range);
async fn out_of_order_chunk_is_416_with_range(stores: StorePair) {
    let (registry, oci) = registry(stores).await;
    let data = random_bytes(3000);
    let digest = sha256(&data);
    let location = oci.start_upload("push/order").await;

    // A first chunk that does not start at 0.
    let skipped = oci.patch_chunk(&location, 1000, &data[1000..2000]).await;
    assert_eq!(skipped.status(), 416);
    assert_eq!(header(&skipped, "range"), "0-0");
    assert_error(skipped, 416, "BLOB_UPLOAD_INVALID").await;

    let patched = expect_status(oci.patch_chunk(&location, 0, &data[..1000]).await, 202).await;
    let location = header(&patched, "location");

    // Repeating the first chunk, and skipping ahead, are both out of order.
    for (offset, end) in [(0, 1000), (1500, 2500)] {
        let refused = oci.patch_chunk(&location, offset, &data[offset..end]).await;
        assert_eq!(refused.status(), 416, "chunk at {offset}");
        assert_eq!(header(&refused, "range"), "0-999", "chunk at {offset}");
        assert_error(refused, 416, "BLOB_UPLOAD_INVALID").await;
    }

    // The session is intact: it still holds 1000 bytes and completes normally.
    let status = expect_status(oci.get(&location).await, 204).await;
    assert_eq!(header(&status, "range"), "0-999");
    let patched = expect_status(oci.patch_chunk(&location, 1000, &data[1000..]).await, 202).await;
    let location = header(&patched, "location");
    let done = oci.put_upload(&location, &digest, Vec::new()).await;
    expect_status(done, 201).await;
    assert_blob(&oci, "push/order", &digest, &data).await;
    registry.server.stop().await;
}

common::on_each_store_pair!(upload_status_reports_progress);
async fn upload_status_reports_progress(stores: StorePair) {
    let (registry, oci) = registry(stores).await;
    let started = oci
        .request(reqwest::Method::POST, "/v2/push/status/blobs/uploads/")
        .send()
        .await
        .unwrap();
    let started = expect_status(started, 202).await;
    let location = header(&started, "location");
    let uuid = header(&started, "docker-upload-uuid");
    assert!(
        location.contains(&uuid),
        "Location {location} names the session {uuid}"
    );

    let status = expect_status(oci.get(&location).await, 204).await;
    assert_eq!(header(&status, "range"), "0-0");
    assert_eq!(header(&status, "docker-upload-uuid"), uuid);
    assert!(oci.url(&header(&status, "location")).path() == oci.url(&location).path());

    let chunk = random_bytes(1234);
    let patched = expect_status(oci.patch_chunk(&location, 0, &chunk).await, 202).await;
    let location = header(&patched, "location");
    let status = expect_status(oci.get(&location).await, 204).await;
    assert_eq!(header(&status, "range"), "0-1233");
    assert_eq!(header(&status, "docker-upload-uuid"), uuid);
    let next = header(&status, "location");
    // The Location from the status request is usable for the next chunk.
    let more = random_bytes(10);
    let patched = expect_status(oci.patch_chunk(&next, 1234, &more).await, 202).await;
    assert_eq!(header(&patched, "range"), "0-1243");
    registry.server.stop().await;
}

common::on_each_store_pair!(cancelled_upload_is_gone);
async fn cancelled_upload_is_gone(stores: StorePair) {
    let (registry, oci) = registry(stores).await;
    let location = oci.start_upload("push/cancel").await;
    let data = random_bytes(100);
    let patched = expect_status(oci.patch_chunk(&location, 0, &data).await, 202).await;
    let location = header(&patched, "location");

    let cancelled = oci.delete(&location).await;
    expect_status(cancelled, 204).await;

    assert_error(oci.get(&location).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
    assert_error(
        oci.patch_chunk(&location, 100, &data).await,
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
    assert_error(
        oci.put_upload(&location, &sha256(&data), Vec::new()).await,
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
    assert_error(oci.delete(&location).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
    assert_no_blob(&oci, "push/cancel", &sha256(&data)).await;

    // A session id that never existed, and one that is not a UUID.
    let unknown = format!("/v2/push/cancel/blobs/uploads/{}", uuid::Uuid::new_v4());
    assert_error(oci.get(&unknown).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
    assert_error(
        oci.get("/v2/push/cancel/blobs/uploads/not-a-uuid").await,
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
    registry.server.stop().await;
}

common::on_each_store_pair!(upload_session_belongs_to_its_repository);
async fn upload_session_belongs_to_its_repository(stores: StorePair) {
    let (registry, oci) = registry(stores).await;
    let location = oci.start_upload("push/owner").await;
    let id = location.rsplit('/').next().unwrap().to_owned();
    let foreign = format!("/v2/push/other/blobs/uploads/{id}");
    assert_error(oci.get(&foreign).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
    let data = random_bytes(10);
    assert_error(
        oci.put_upload(&foreign, &sha256(&data), data.clone()).await,
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
    assert_no_blob(&oci, "push/other", &sha256(&data)).await;
    registry.server.stop().await;
}

common::on_each_store_pair!(digest_mismatch_leaves_nothing_visible);
async fn digest_mismatch_leaves_nothing_visible(stores: StorePair) {
    let (registry, oci) = registry(stores).await;
    let repo = "push/mismatch";

    // Monolithic PUT.
    let data = random_bytes(2000);
    let claimed = unknown_digest();
    let refused = oci.upload_as(repo, &data, &claimed).await;
    assert_error(refused, 400, "DIGEST_INVALID").await;
    assert_no_blob(&oci, repo, &claimed).await;
    assert_no_blob(&oci, repo, &sha256(&data)).await;
    assert!(
        !common::blob_store_holds(&registry, &data).await,
        "mismatched content stays pinned"
    );

    // Single POST.
    let data = random_bytes(2000);
    let claimed = unknown_digest();
    let refused = oci.post_blob(repo, &data, &claimed).await;
    assert_error(refused, 400, "DIGEST_INVALID").await;
    assert_no_blob(&oci, repo, &claimed).await;
    assert_no_blob(&oci, repo, &sha256(&data)).await;
    assert!(
        !common::blob_store_holds(&registry, &data).await,
        "mismatched content stays pinned"
    );

    // Chunked, with the mismatch found at the PUT.
    let data = random_bytes(6000);
    let claimed = unknown_digest();
    let location = oci.start_upload(repo).await;
    let patched = expect_status(oci.patch_chunk(&location, 0, &data[..3000]).await, 202).await;
    let location = header(&patched, "location");
    let patched = expect_status(oci.patch_chunk(&location, 3000, &data[3000..]).await, 202).await;
    let location = header(&patched, "location");
    let refused = oci.put_upload(&location, &claimed, Vec::new()).await;
    assert_error(refused, 400, "DIGEST_INVALID").await;
    assert_no_blob(&oci, repo, &claimed).await;
    assert_no_blob(&oci, repo, &sha256(&data)).await;
    assert!(
        !common::blob_store_holds(&registry, &data[..3000]).await,
        "chunk stays pinned"
    );

    // A sha512 claim that does not match.
    let data = random_bytes(100);
    let claimed = sha512(&random_bytes(100));
    assert_error(
        oci.upload_as(repo, &data, &claimed).await,
        400,
        "DIGEST_INVALID",
    )
    .await;
    assert_no_blob(&oci, repo, &claimed).await;

    // Positive control for the pin check: a good push is pinned.
    let good = oci.push_random_blob(repo, 2000).await;
    assert!(
        common::blob_store_holds(&registry, &good.data).await,
        "pushed blob is pinned"
    );
    registry.server.stop().await;
}

common::on_each_store_pair!(malformed_digests_are_digest_invalid);
async fn malformed_digests_are_digest_invalid(stores: StorePair) {
    let (registry, oci) = registry(stores).await;
    let repo = "push/baddigest";
    let data = random_bytes(100);
    let good = sha256(&data);
    let bad = [
        "sha256:totallywrong".to_owned(),
        format!("sha256:{}", "A".repeat(64)),
        format!("sha256:{}", "a".repeat(63)),
        format!("sha256:{}", "a".repeat(65)),
        "md5:d41d8cd98f00b204e9800998ecf8427e".to_owned(),
        "nocolon".to_owned(),
        good.replace("sha256:", "sha512:"),
    ];
    for digest in &bad {
        assert_error(
            oci.upload_as(repo, &data, digest).await,
            400,
            "DIGEST_INVALID",
        )
        .await;
        assert_error(
            oci.post_blob(repo, &data, digest).await,
            400,
            "DIGEST_INVALID",
        )
        .await;
        assert_error(
            oci.get(&format!("/v2/{repo}/blobs/{digest}")).await,
            400,
            "DIGEST_INVALID",
        )
        .await;
        assert_eq!(
            oci.head(&format!("/v2/{repo}/blobs/{digest}"))
                .await
                .status(),
            400,
            "HEAD blob {digest}"
        );
        if digest.contains(':') {
            // A reference with a colon is a digest, never a tag. Pushing under a malformed
            // one is refused; looking one up finds no manifest (see conformance_manifests).
            assert_error(
                oci.put_manifest(repo, digest, OCI_MANIFEST, b"{}").await,
                400,
                "DIGEST_INVALID",
            )
            .await;
            assert_error(
                oci.get(&format!("/v2/{repo}/manifests/{digest}")).await,
                404,
                "MANIFEST_UNKNOWN",
            )
            .await;
        }
    }
    // PUT that completes an upload must name a digest.
    let location = oci.start_upload(repo).await;
    let missing = oci
        .request(reqwest::Method::PUT, &location)
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_error(missing, 400, "DIGEST_INVALID").await;
    assert_no_blob(&oci, repo, &good).await;
    registry.server.stop().await;
}

common::on_each_store_pair!(invalid_repository_names_are_name_invalid);
async fn invalid_repository_names_are_name_invalid(stores: StorePair) {
    let (registry, oci) = registry(stores).await;
    let digest = unknown_digest();
    let config = oci.push_random_blob("push/names", 10).await;
    let manifest = image_manifest(&config, &[], None);
    for name in ["Upper", "a/B", "a//b", "a/", "a/b/", "-a", "a..b", "a___b"] {
        let post = oci
            .request(reqwest::Method::POST, &format!("/v2/{name}/blobs/uploads/"))
            .send()
            .await
            .unwrap();
        assert_error(post, 400, "NAME_INVALID").await;
        assert_error(
            oci.post_blob(name, &config.data, &config.digest).await,
            400,
            "NAME_INVALID",
        )
        .await;
        assert_error(
            oci.get(&format!("/v2/{name}/blobs/{digest}")).await,
            400,
            "NAME_INVALID",
        )
        .await;
        assert_error(
            oci.get(&format!("/v2/{name}/manifests/latest")).await,
            400,
            "NAME_INVALID",
        )
        .await;
        assert_error(
            oci.put_manifest(name, "latest", OCI_MANIFEST, &manifest.content)
                .await,
            400,
            "NAME_INVALID",
        )
        .await;
        assert_error(
            oci.get(&format!("/v2/{name}/tags/list")).await,
            400,
            "NAME_INVALID",
        )
        .await;
        assert_error(
            oci.get(&format!("/v2/{name}/referrers/{digest}")).await,
            400,
            "NAME_INVALID",
        )
        .await;
        // Mounting from an invalid name.
        let mount = oci
            .http
            .post(oci.with_query(
                "/v2/push/names/blobs/uploads/",
                &[("mount", &config.digest), ("from", name)],
            ))
            .send()
            .await
            .unwrap();
        assert_error(mount, 400, "NAME_INVALID").await;
    }
    registry.server.stop().await;
}

common::on_each_store_pair!(sha512_digests_are_accepted);
async fn sha512_digests_are_accepted(stores: StorePair) {
    let (registry, oci) = registry(stores).await;
    let repo = "push/sha512";

    // Monolithic.
    let data = random_bytes(3000);
    let digest = sha512(&data);
    let done = expect_status(oci.upload_as(repo, &data, &digest).await, 201).await;
    assert_eq!(header(&done, "docker-content-digest"), digest);
    assert_blob(&oci, repo, &digest, &data).await;

    // Single POST.
    let data = random_bytes(3000);
    let digest = sha512(&data);
    let done = expect_status(oci.post_blob(repo, &data, &digest).await, 201).await;
    assert_eq!(header(&done, "docker-content-digest"), digest);
    assert_blob(&oci, repo, &digest, &data).await;

    // Chunked: the registry cannot keep a running sha256 for this one.
    let data = random_bytes(600_000);
    let digest = sha512(&data);
    let mut location = oci.start_upload(repo).await;
    let mut offset = 0;
    for chunk in data.chunks(280_000) {
        let patched = expect_status(oci.patch_chunk(&location, offset, chunk).await, 202).await;
        offset += chunk.len();
        location = header(&patched, "location");
    }
    let done = expect_status(oci.put_upload(&location, &digest, Vec::new()).await, 201).await;
    assert_eq!(header(&done, "docker-content-digest"), digest);
    assert_blob(&oci, repo, &digest, &data).await;
    // The sha256 of the same bytes was never pushed.
    assert_no_blob(&oci, repo, &sha256(&data)).await;
    registry.server.stop().await;
}

async fn mount(oci: &Oci, to: &str, digest: &str, from: Option<&str>) -> reqwest::Response {
    let mut query = vec![("mount", digest)];
    if let Some(from) = from {
        query.push(("from", from));
    }
    oci.http
        .post(oci.with_query(&format!("/v2/{to}/blobs/uploads/"), &query))
        .send()
        .await
        .unwrap()
}

common::on_each_store_pair!(cross_repository_mount);
async fn cross_repository_mount(stores: StorePair) {
    let (registry, oci) = registry(stores).await;
    let blob = oci.push_random_blob("mount/source", 4000).await;
    assert_no_blob(&oci, "mount/target", &blob.digest).await;

    let mounted = expect_status(
        mount(&oci, "mount/target", &blob.digest, Some("mount/source")).await,
        201,
    )
    .await;
    assert_eq!(header(&mounted, "docker-content-digest"), blob.digest);
    let location = header(&mounted, "location");
    let pulled = expect_status(oci.get(&location).await, 200).await;
    assert!(pulled.bytes().await.unwrap() == blob.data);
    assert_blob(&oci, "mount/target", &blob.digest, &blob.data).await;
    // The source keeps it.
    assert_blob(&oci, "mount/source", &blob.digest, &blob.data).await;
    registry.server.stop().await;
}

common::on_each_store_pair!(mount_falls_back_to_an_upload_session);
async fn mount_falls_back_to_an_upload_session(stores: StorePair) {
    let (registry, oci) = registry(stores).await;
    let blob = oci.push_random_blob("mount/has", 2000).await;

    let cases = [
        // `from` does not hold the blob (though another repository does).
        ("mount/t1", blob.digest.clone(), Some("mount/lacks")),
        // No `from` at all.
        ("mount/t2", blob.digest.clone(), None),
        // A digest nobody holds.
        ("mount/t3", unknown_digest(), Some("mount/has")),
    ];
    for (to, digest, from) in cases {
        let fallback = mount(&oci, to, &digest, from).await;
        let fallback = expect_status(fallback, 202).await;
        let location = header(&fallback, "location");
        assert!(!header(&fallback, "docker-upload-uuid").is_empty());
        // Knowing a digest is not access: nothing became visible.
        assert_no_blob(&oci, to, &digest).await;
        // The session is a real one: the client uploads the blob into it.
        let status = expect_status(oci.get(&location).await, 204).await;
        assert_eq!(header(&status, "range"), "0-0");
        let done = oci
            .put_upload(&location, &blob.digest, blob.data.clone())
            .await;
        expect_status(done, 201).await;
        assert_blob(&oci, to, &blob.digest, &blob.data).await;
    }

    // An invalid mount digest is refused.
    let bad = mount(&oci, "mount/t4", "sha256:nope", Some("mount/has")).await;
    assert_error(bad, 400, "DIGEST_INVALID").await;
    registry.server.stop().await;
}

common::on_each_store_pair!(chunk_min_length_is_advertised_when_configured);
async fn chunk_min_length_is_advertised_when_configured(stores: StorePair) {
    let registry = stores
        .start_registry_with(|c| c.limits.chunk_min_length = 12_345)
        .await;
    let oci = Oci::new(&registry.base);
    let started = oci
        .request(reqwest::Method::POST, "/v2/push/min/blobs/uploads/")
        .send()
        .await
        .unwrap();
    let started = expect_status(started, 202).await;
    assert_eq!(header(&started, "oci-chunk-min-length"), "12345");
    registry.server.stop().await;

    let registry = stores
        .start_registry_with(|c| c.limits.chunk_min_length = 0)
        .await;
    let oci = Oci::new(&registry.base);
    let started = oci
        .request(reqwest::Method::POST, "/v2/push/min/blobs/uploads/")
        .send()
        .await
        .unwrap();
    let started = expect_status(started, 202).await;
    assert_eq!(opt_header(&started, "oci-chunk-min-length"), None);
    registry.server.stop().await;
}

/// Runs a full push through the Locations exactly as the registry hands them out.
async fn push_following_locations(oci: &Oci, repo: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let data = random_bytes(5000);
    let digest = sha256(&data);
    let location = oci.start_upload(repo).await;
    seen.push(location.clone());
    let patched = expect_status(oci.patch_chunk(&location, 0, &data[..2000]).await, 202).await;
    let location = header(&patched, "location");
    seen.push(location.clone());
    let status = expect_status(oci.get(&location).await, 204).await;
    let location = header(&status, "location");
    seen.push(location.clone());
    let done = expect_status(
        oci.put_upload(&location, &digest, data[2000..].to_vec())
            .await,
        201,
    )
    .await;
    let blob_location = header(&done, "location");
    seen.push(blob_location.clone());
    let pulled = expect_status(oci.get(&blob_location).await, 200).await;
    assert!(pulled.bytes().await.unwrap() == data);

    let manifest = image_manifest(
        &Blob {
            data: data.clone(),
            digest: digest.clone(),
        },
        &[],
        None,
    );
    let pushed = oci
        .put_manifest(repo, "v1", OCI_MANIFEST, &manifest.content)
        .await;
    let pushed = expect_status(pushed, 201).await;
    let manifest_location = header(&pushed, "location");
    seen.push(manifest_location.clone());
    let pulled = expect_status(oci.get(&manifest_location).await, 200).await;
    assert!(pulled.bytes().await.unwrap() == manifest.content);
    seen
}

common::on_each_store_pair!(locations_are_usable_as_given);
async fn locations_are_usable_as_given(stores: StorePair) {
    // Default: relative locations, resolved against the request URL.
    let (registry, oci) = registry(stores).await;
    for location in push_following_locations(&oci, "push/rel").await {
        assert!(
            location.starts_with("/v2/push/rel/") || location.starts_with(&registry.base),
            "{location}"
        );
    }
    registry.server.stop().await;

    // With public_url: absolute locations on that URL.
    let registry = stores
        .start_registry_on_a_known_port(|c, port| {
            c.public_url = Some(format!("http://127.0.0.1:{port}/").parse().unwrap());
        })
        .await;
    let port = registry.server.local_addr.port();
    let oci = Oci::new(&registry.base);
    for location in push_following_locations(&oci, "push/abs").await {
        assert!(
            location.starts_with(&format!("http://127.0.0.1:{port}/v2/push/abs/")),
            "{location}"
        );
    }
    registry.server.stop().await;
}

common::on_each_store_pair!(completed_upload_location_is_gone);
async fn completed_upload_location_is_gone(stores: StorePair) {
    let (registry, oci) = registry(stores).await;
    let data = random_bytes(1000);
    let digest = sha256(&data);
    let location = oci.start_upload("push/reuse").await;
    expect_status(oci.put_upload(&location, &digest, data.clone()).await, 201).await;

    assert_error(oci.get(&location).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
    assert_error(
        oci.patch_chunk(&location, 0, &data).await,
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
    assert_error(
        oci.put_upload(&location, &digest, data.clone()).await,
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
    assert_error(oci.delete(&location).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
    // The blob itself is unaffected.
    assert_blob(&oci, "push/reuse", &digest, &data).await;
    registry.server.stop().await;
}

common::on_each_store_pair!(blob_over_the_size_limit_is_413);
async fn blob_over_the_size_limit_is_413(stores: StorePair) {
    let registry = stores
        .start_registry_with(|c| c.limits.max_blob_size = 1024)
        .await;
    let oci = Oci::new(&registry.base);
    let repo = "push/limit";

    // Exactly at the limit is fine.
    oci.push_random_blob(repo, 1024).await;

    let data = random_bytes(4096);
    let digest = sha256(&data);
    assert_error(
        oci.upload_as(repo, &data, &digest).await,
        413,
        "SIZE_INVALID",
    )
    .await;
    assert_error(
        oci.post_blob(repo, &data, &digest).await,
        413,
        "SIZE_INVALID",
    )
    .await;
    assert_no_blob(&oci, repo, &digest).await;

    // Chunked: the chunk that crosses the limit is refused.
    let location = oci.start_upload(repo).await;
    let patched = expect_status(oci.patch_chunk(&location, 0, &data[..800]).await, 202).await;
    let location = header(&patched, "location");
    assert_error(
        oci.patch_chunk(&location, 800, &data[800..1600]).await,
        413,
        "SIZE_INVALID",
    )
    .await;
    assert_no_blob(&oci, repo, &digest).await;
    registry.server.stop().await;
}
