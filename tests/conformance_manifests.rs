//! OCI Distribution Spec v1.1 conformance: pushing and pulling manifests of every kind the
//! registry supports, and the ways a manifest push is refused.

mod common;

use common::oci::*;
use common::StorePair;
use serde_json::json;

async fn registry(stores: StorePair) -> (common::TestRegistry, Oci) {
    let registry = stores.start_registry().await;
    let oci = Oci::new(&registry.base);
    (registry, oci)
}

/// GET and HEAD of `reference` give back exactly `manifest`.
async fn assert_manifest(oci: &Oci, repo: &str, reference: &str, manifest: &Manifest) {
    let path = format!("/v2/{repo}/manifests/{reference}");
    let get = oci
        .request(reqwest::Method::GET, &path)
        .header(
            "Accept",
            [
                OCI_MANIFEST,
                OCI_INDEX,
                DOCKER_MANIFEST,
                DOCKER_MANIFEST_LIST,
            ]
            .join(", "),
        )
        .send()
        .await
        .unwrap();
    let get = expect_status(get, 200).await;
    assert_eq!(header(&get, "content-type"), manifest.media_type, "{path}");
    assert_eq!(
        header(&get, "docker-content-digest"),
        manifest.digest,
        "{path}"
    );
    assert_eq!(
        header(&get, "content-length"),
        manifest.content.len().to_string()
    );
    let body = get.bytes().await.unwrap();
    assert!(
        body == manifest.content,
        "{path}: bytes differ:\n{}\nvs pushed\n{}",
        String::from_utf8_lossy(&body),
        String::from_utf8_lossy(&manifest.content)
    );

    let head = expect_status(oci.head(&path).await, 200).await;
    assert_eq!(header(&head, "content-type"), manifest.media_type);
    assert_eq!(header(&head, "docker-content-digest"), manifest.digest);
    assert_eq!(
        header(&head, "content-length"),
        manifest.content.len().to_string()
    );
    assert!(head.bytes().await.unwrap().is_empty(), "HEAD has no body");
}

/// Neither the tag nor the digest of a refused push is there.
async fn assert_not_stored(oci: &Oci, repo: &str, tag: Option<&str>, digest: &str) {
    for reference in tag.into_iter().chain([digest]) {
        let path = format!("/v2/{repo}/manifests/{reference}");
        assert_eq!(oci.head(&path).await.status(), 404, "HEAD {path}");
        assert_error(oci.get(&path).await, 404, "MANIFEST_UNKNOWN").await;
    }
    if let Some(tag) = tag {
        let response = oci.get(&format!("/v2/{repo}/tags/list")).await;
        if response.status() == 200 {
            let body: serde_json::Value = response.json().await.unwrap();
            let tags = body["tags"].as_array().cloned().unwrap_or_default();
            assert!(!tags.iter().any(|t| t == tag), "tag {tag} listed: {body}");
        } else {
            assert_error(response, 404, "NAME_UNKNOWN").await;
        }
    }
}

common::on_each_store_pair!(oci_image_manifest_by_tag_and_by_digest);
async fn oci_image_manifest_by_tag_and_by_digest(stores: StorePair) {
    let (registry, oci) = registry(stores).await;
    let repo = "man/image";
    let image = oci.push_image(repo, Some("v1"), 2).await;
    assert_manifest(&oci, repo, "v1", &image.manifest).await;
    assert_manifest(&oci, repo, &image.manifest.digest, &image.manifest).await;

    // By digest: no tag is created.
    let other = oci.push_image(repo, None, 1).await;
    assert_manifest(&oci, repo, &other.manifest.digest, &other.manifest).await;
    let (tags, _) = oci.tags(&format!("/v2/{repo}/tags/list")).await;
    assert_eq!(tags, vec!["v1"]);

    // Moving the tag: it now names the other manifest; the first stays by digest.
    oci.push_manifest(repo, "v1", &other.manifest).await;
    assert_manifest(&oci, repo, "v1", &other.manifest).await;
    assert_manifest(&oci, repo, &image.manifest.digest, &image.manifest).await;

    // Pushing the same manifest again is idempotent.
    oci.push_manifest(repo, "v1", &other.manifest).await;
    oci.push_manifest(repo, &other.manifest.digest, &other.manifest)
        .await;
    registry.server.stop().await;
}

common::on_each_store_pair!(manifest_without_media_type_field_takes_the_content_type);
async fn manifest_without_media_type_field_takes_the_content_type(stores: StorePair) {
    let (registry, oci) = registry(stores).await;
    let repo = "man/nomediatype";
    let config = oci.push_random_blob(repo, 50).await;
    let json = json!({
        "schemaVersion": 2,
        "config": descriptor(OCI_CONFIG, &config.data),
        "layers": [],
    });
    let manifest = Manifest::new(OCI_MANIFEST, &json);
    oci.push_manifest(repo, "latest", &manifest).await;
    assert_manifest(&oci, repo, "latest", &manifest).await;
    registry.server.stop().await;
}

common::on_each_store_pair!(oci_index_with_existing_children);
async fn oci_index_with_existing_children(stores: StorePair) {
    let (registry, oci) = registry(stores).await;
    let repo = "man/index";
    let amd64 = oci.push_image(repo, None, 1).await;
    let arm64 = oci.push_image(repo, None, 1).await;
    let index = Manifest::new(
        OCI_INDEX,
        &json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": amd64.manifest.digest,
                    "size": amd64.manifest.content.len(),
                    "platform": {"architecture": "amd64", "os": "linux"},
                },
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": arm64.manifest.digest,
                    "size": arm64.manifest.content.len(),
                    "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"},
                },
            ],
            "annotations": {"org.opencontainers.image.ref.name": "multi"},
        }),
    );
    oci.push_manifest(repo, "multi", &index).await;
    assert_manifest(&oci, repo, "multi", &index).await;
    assert_manifest(&oci, repo, &index.digest, &index).await;
    // The children are still served as themselves.
    assert_manifest(&oci, repo, &amd64.manifest.digest, &amd64.manifest).await;
    registry.server.stop().await;
}

common::on_each_store_pair!(index_with_a_missing_child_is_refused);
async fn index_with_a_missing_child_is_refused(stores: StorePair) {
    let (registry, oci) = registry(stores).await;
    let repo = "man/badindex";
    let present = oci.push_image(repo, None, 1).await;
    // A child that exists only in another repository does not count.
    let elsewhere = oci.push_image("man/elsewhere", None, 1).await;
    for missing in [unknown_digest(), elsewhere.manifest.digest.clone()] {
        let index = Manifest::new(
            OCI_INDEX,
            &json!({
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": [
                    present.manifest.descriptor(),
                    {"mediaType": OCI_MANIFEST, "digest": missing, "size": 100},
                ],
            }),
        );
        let refused = oci
            .put_manifest(repo, "multi", OCI_INDEX, &index.content)
            .await;
        assert_error(refused, 400, "MANIFEST_BLOB_UNKNOWN").await;
        assert_not_stored(&oci, repo, Some("multi"), &index.digest).await;
    }
    registry.server.stop().await;
}

common::on_each_store_pair!(docker_schema2_manifest_and_manifest_list);
async fn docker_schema2_manifest_and_manifest_list(stores: StorePair) {
    let (registry, oci) = registry(stores).await;
    let repo = "man/docker";
    let config = oci
        .push_blob(
            repo,
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
        )
        .await;
    let layer = oci.push_random_blob(repo, 4096).await;
    let manifest = Manifest::new(
        DOCKER_MANIFEST,
        &json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": descriptor(DOCKER_CONFIG, &config.data),
            "layers": [descriptor(DOCKER_LAYER, &layer.data)],
        }),
    );
    oci.push_manifest(repo, "schema2", &manifest).await;
    assert_manifest(&oci, repo, "schema2", &manifest).await;

    let list = Manifest::new(
        DOCKER_MANIFEST_LIST,
        &json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST_LIST,
            "manifests": [{
                "mediaType": DOCKER_MANIFEST,
                "digest": manifest.digest,
                "size": manifest.content.len(),
                "platform": {"architecture": "amd64", "os": "linux"},
            }],
        }),
    );
    oci.push_manifest(repo, "list", &list).await;
    assert_manifest(&oci, repo, "list", &list).await;
    assert_manifest(&oci, repo, &list.digest, &list).await;
    registry.server.stop().await;
}

common::on_each_store_pair!(artifact_manifest_round_trips_exactly);
async fn artifact_manifest_round_trips_exactly(stores: StorePair) {
    let (registry, oci) = registry(stores).await;
    let repo = "man/artifact";
    let empty = oci.push_blob(repo, EMPTY_JSON).await;
    assert_eq!(empty.digest, EMPTY_JSON_DIGEST);
    let json = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.sbom.v1+json",
        "config": {
            "mediaType": OCI_EMPTY,
            "digest": EMPTY_JSON_DIGEST,
            "size": 2,
            "data": "e30=",
        },
        "layers": [],
        "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
        "x-custom-field": {"nested": [1, 2, {"deep": true}], "unicode": "äö✓"},
    });
    // Exact bytes, odd spacing included.
    let mut content = serde_json::to_vec_pretty(&json).unwrap();
    content.extend_from_slice(b"\n\n");
    let manifest = Manifest {
        digest: sha256(&content),
        media_type: OCI_MANIFEST.to_owned(),
        content,
    };
    oci.push_manifest(repo, "sbom", &manifest).await;
    assert_manifest(&oci, repo, "sbom", &manifest).await;
    assert_manifest(&oci, repo, &manifest.digest, &manifest).await;
    registry.server.stop().await;
}

common::on_each_store_pair!(manifest_with_a_missing_blob_is_refused);
async fn manifest_with_a_missing_blob_is_refused(stores: StorePair) {
    let (registry, oci) = registry(stores).await;
    let repo = "man/missing";
    let config = oci.push_random_blob(repo, 100).await;
    let layer = oci.push_random_blob(repo, 100).await;
    let absent = Blob {
        data: random_bytes(100),
        digest: String::new(),
    };
    // In another repository only: not visible here, so just as missing.
    let foreign = oci.push_random_blob("man/foreign", 100).await;
    let cases = [
        image_manifest(&config, &[layer.clone(), absent.clone()], None),
        image_manifest(&absent, std::slice::from_ref(&layer), None),
        image_manifest(&config, &[foreign], None),
    ];
    for manifest in cases {
        let refused = oci
            .put_manifest(repo, "broken", OCI_MANIFEST, &manifest.content)
            .await;
        assert_error(refused, 400, "MANIFEST_BLOB_UNKNOWN").await;
        assert_not_stored(&oci, repo, Some("broken"), &manifest.digest).await;
        let by_digest = oci
            .put_manifest(repo, &manifest.digest, OCI_MANIFEST, &manifest.content)
            .await;
        assert_error(by_digest, 400, "MANIFEST_BLOB_UNKNOWN").await;
        assert_not_stored(&oci, repo, None, &manifest.digest).await;
    }
    registry.server.stop().await;
}

common::on_each_store_pair!(invalid_manifests_are_manifest_invalid);
async fn invalid_manifests_are_manifest_invalid(stores: StorePair) {
    let (registry, oci) = registry(stores).await;
    let repo = "man/invalid";
    let config = oci.push_random_blob(repo, 100).await;
    let valid = image_manifest(&config, &[], None);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (OCI_MANIFEST, b"{not json".to_vec()),
        (OCI_MANIFEST, b"[]".to_vec()),
        (OCI_MANIFEST, br#"{"schemaVersion":1}"#.to_vec()),
        (
            OCI_MANIFEST,
            br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#
                .to_vec(),
        ),
        // Declared as an index, but it is an image manifest.
        (OCI_INDEX, valid.content.clone()),
        // A descriptor with a malformed digest.
        (
            OCI_MANIFEST,
            serde_json::to_vec(&json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": "sha256:zz", "size": 1},
                "layers": [],
            }))
            .unwrap(),
        ),
    ];
    for (content_type, content) in cases {
        let refused = oci.put_manifest(repo, "bad", content_type, &content).await;
        assert_error(refused, 400, "MANIFEST_INVALID").await;
        assert_not_stored(&oci, repo, Some("bad"), &sha256(&content)).await;
    }
    registry.server.stop().await;
}

common::on_each_store_pair!(manifest_put_by_the_wrong_digest_is_digest_invalid);
async fn manifest_put_by_the_wrong_digest_is_digest_invalid(stores: StorePair) {
    let (registry, oci) = registry(stores).await;
    let repo = "man/wrongdigest";
    let config = oci.push_random_blob(repo, 100).await;
    let manifest = image_manifest(&config, &[], None);
    let wrong = unknown_digest();
    let refused = oci
        .put_manifest(repo, &wrong, OCI_MANIFEST, &manifest.content)
        .await;
    assert_error(refused, 400, "DIGEST_INVALID").await;
    assert_not_stored(&oci, repo, None, &wrong).await;
    assert_not_stored(&oci, repo, None, &manifest.digest).await;
    registry.server.stop().await;
}

common::on_each_store_pair!(manifest_over_the_size_limit_is_413);
async fn manifest_over_the_size_limit_is_413(stores: StorePair) {
    let registry = stores
        .start_registry_with(|c| c.limits.max_manifest_size = 2048)
        .await;
    let oci = Oci::new(&registry.base);
    let repo = "man/limit";
    let config = oci.push_random_blob(repo, 100).await;
    let big = Manifest::new(
        OCI_MANIFEST,
        &json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor(OCI_CONFIG, &config.data),
            "layers": [],
            "annotations": {"padding": "x".repeat(4096)},
        }),
    );
    let refused = oci
        .put_manifest(repo, "big", OCI_MANIFEST, &big.content)
        .await;
    assert_error(refused, 413, "SIZE_INVALID").await;

    // The same without a Content-Length (chunked transfer encoding).
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        big.content.chunks(500).map(|c| Ok(c.to_vec())).collect();
    let streamed = oci
        .request(reqwest::Method::PUT, &format!("/v2/{repo}/manifests/big"))
        .header("Content-Type", OCI_MANIFEST)
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_error(streamed, 413, "SIZE_INVALID").await;
    assert_not_stored(&oci, repo, Some("big"), &big.digest).await;

    // Under the limit is fine.
    let small = image_manifest(&config, &[], None);
    assert!(small.content.len() <= 2048);
    oci.push_manifest(repo, "small", &small).await;
    registry.server.stop().await;
}

common::on_each_store_pair!(subject_is_answered_with_oci_subject);
async fn subject_is_answered_with_oci_subject(stores: StorePair) {
    let (registry, oci) = registry(stores).await;
    let repo = "man/subject";
    let image = oci.push_image(repo, Some("v1"), 1).await;
    oci.push_blob(repo, EMPTY_JSON).await;
    let artifact = artifact_manifest(
        "application/vnd.example.signature",
        Some(&image.manifest),
        json!({"k": "v"}),
    );
    let pushed = oci
        .put_manifest(repo, &artifact.digest, OCI_MANIFEST, &artifact.content)
        .await;
    let pushed = expect_status(pushed, 201).await;
    assert_eq!(header(&pushed, "oci-subject"), image.manifest.digest);
    assert_eq!(header(&pushed, "docker-content-digest"), artifact.digest);

    // A manifest without a subject gets no OCI-Subject.
    let plain = image_manifest(&image.config, &[], None);
    let pushed = oci
        .put_manifest(repo, "plain", OCI_MANIFEST, &plain.content)
        .await;
    let pushed = expect_status(pushed, 201).await;
    assert_eq!(opt_header(&pushed, "oci-subject"), None);
    registry.server.stop().await;
}

common::on_each_store_pair!(unknown_manifests_are_manifest_unknown);
async fn unknown_manifests_are_manifest_unknown(stores: StorePair) {
    let (registry, oci) = registry(stores).await;
    let repo = "man/unknown";
    oci.push_image(repo, Some("present"), 1).await;
    for reference in ["absent".to_owned(), unknown_digest()] {
        let path = format!("/v2/{repo}/manifests/{reference}");
        assert_eq!(oci.head(&path).await.status(), 404, "HEAD {path}");
        assert_error(oci.get(&path).await, 404, "MANIFEST_UNKNOWN").await;
    }
    // In a repository that does not exist, either code is right.
    let response = oci.get("/v2/man/nothing/manifests/latest").await;
    let body = assert_error_any(response, 404).await;
    let code = body["errors"][0]["code"].as_str().unwrap().to_owned();
    assert!(
        code == "MANIFEST_UNKNOWN" || code == "NAME_UNKNOWN",
        "{code}"
    );
    registry.server.stop().await;
}

common::on_each_store_pair!(references_that_name_nothing_are_unknown_but_cannot_be_pushed);
/// A reference that is neither a tag nor a digest names no manifest: looking it up is 404
/// `MANIFEST_UNKNOWN` (what the OCI conformance suite expects), while pushing under it is a
/// malformed request (400).
async fn references_that_name_nothing_are_unknown_but_cannot_be_pushed(stores: StorePair) {
    let (registry, oci) = registry(stores).await;
    let repo = "man/badref";
    let image = oci.push_image(repo, Some("present"), 1).await;
    let long_tag = "t".repeat(129);
    for (reference, push_code) in [
        ("bad!tag", "MANIFEST_INVALID"),
        (".dot-first", "MANIFEST_INVALID"),
        (long_tag.as_str(), "MANIFEST_INVALID"),
        ("sha256:abc", "DIGEST_INVALID"),
        ("sha256:", "DIGEST_INVALID"),
    ] {
        let path = format!("/v2/{repo}/manifests/{reference}");
        assert_error(oci.get(&path).await, 404, "MANIFEST_UNKNOWN").await;
        assert_eq!(oci.head(&path).await.status(), 404, "HEAD {path}");
        let layers = format!("/v2/_ext/{repo}/manifests/{reference}/layers");
        assert_error(oci.get(&layers).await, 404, "MANIFEST_UNKNOWN").await;
        let pushed = oci
            .put_manifest(repo, reference, OCI_MANIFEST, &image.manifest.content)
            .await;
        assert_error(pushed, 400, push_code).await;
    }
    // The name is still checked first.
    assert_error(
        oci.get("/v2/Man/BadRef/manifests/bad!tag").await,
        400,
        "NAME_INVALID",
    )
    .await;
    registry.server.stop().await;
}

/// A 404 with an OCI error body, whatever its code.
async fn assert_error_any(response: reqwest::Response, status: u16) -> serde_json::Value {
    let response = expect_status(response, status).await;
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["errors"][0]["code"].is_string(), "{body}");
    body
}
