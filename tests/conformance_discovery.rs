//! OCI Distribution Spec v1.1 conformance: content discovery — tag listing, catalog and
//! the referrers API.

mod common;

use common::oci::*;
use common::StorePair;
use serde_json::{json, Value};

async fn registry(stores: StorePair) -> (common::TestRegistry, Oci) {
    let registry = stores.start_registry().await;
    let oci = Oci::new(&registry.base);
    (registry, oci)
}

/// Tags the spec's grammar allows, in no particular order; bytewise order differs from
/// a locale's order for several of them.
const TAGS: [&str; 12] = [
    "v1.10", "latest", "ab", "Ab", "a_b", "a.b", "a-b", "aB", "_x", "0", "v1.2", "V2",
];

fn sorted(items: &[&str]) -> Vec<String> {
    let mut items: Vec<String> = items.iter().map(|s| s.to_string()).collect();
    items.sort();
    items
}

/// Follows `Link` headers from `first`; returns the pages.
async fn walk(oci: &Oci, first: &str, key: &str) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut next = Some(first.to_owned());
    while let Some(location) = next.take() {
        assert!(pages.len() < 100, "pagination does not end");
        let response = expect_status(oci.get(&location).await, 200).await;
        next = opt_header(&response, "link").map(|l| next_link(&l));
        let body: Value = response.json().await.unwrap();
        let page = body[key]
            .as_array()
            .unwrap_or_else(|| panic!("{location}: no {key} array: {body}"))
            .iter()
            .map(|t| t.as_str().unwrap().to_owned())
            .collect();
        pages.push(page);
    }
    pages
}

common::on_each_store_pair!(tags_list_is_sorted_and_paginated);
async fn tags_list_is_sorted_and_paginated(stores: StorePair) {
    let (registry, oci) = registry(stores).await;
    let repo = "disc/tags";
    let image = oci.push_image(repo, None, 1).await;
    for tag in TAGS {
        oci.push_manifest(repo, tag, &image.manifest).await;
    }
    let expected = sorted(&TAGS);

    let response = expect_status(oci.get(&format!("/v2/{repo}/tags/list")).await, 200).await;
    assert_eq!(opt_header(&response, "link"), None);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["name"], repo);
    assert_eq!(body["tags"], json!(expected));

    // Page sizes that divide the count exactly, and ones that do not.
    for n in [1usize, 2, 3, 5, 12, 13] {
        let pages = walk(&oci, &format!("/v2/{repo}/tags/list?n={n}"), "tags").await;
        let expected_pages = expected.len().div_ceil(n);
        assert_eq!(pages.len(), expected_pages, "n={n}: {pages:?}");
        for page in &pages[..pages.len() - 1] {
            assert_eq!(page.len(), n, "n={n}: {pages:?}");
        }
        assert_eq!(pages.concat(), expected, "n={n}");
    }

    // `last` on its own, and together with `n`.
    let (tags, link) = oci.tags(&format!("/v2/{repo}/tags/list?last=ab")).await;
    let after: Vec<String> = expected
        .iter()
        .filter(|t| t.as_str() > "ab")
        .cloned()
        .collect();
    assert_eq!(tags, after);
    assert_eq!(link, None);
    let (tags, link) = oci.tags(&format!("/v2/{repo}/tags/list?n=2&last=ab")).await;
    assert_eq!(tags, after[..2]);
    let link = next_link(&link.expect("a Link to the next page"));
    let next = oci.url(&link);
    let query: Vec<(String, String)> = next.query_pairs().into_owned().collect();
    assert!(query.contains(&("n".into(), "2".into())), "{link}");
    assert!(query.contains(&("last".into(), after[1].clone())), "{link}");
    assert!(
        next.path().ends_with(&format!("/v2/{repo}/tags/list")),
        "{link}"
    );

    // `last` past the end: an empty page.
    let (tags, link) = oci.tags(&format!("/v2/{repo}/tags/list?last=zzz")).await;
    assert!(tags.is_empty());
    assert_eq!(link, None);

    assert_error(
        oci.get(&format!("/v2/{repo}/tags/list?n=many")).await,
        400,
        "PAGINATION_NUMBER_INVALID",
    )
    .await;
    registry.server.stop().await;
}

common::on_each_store_pair!(tags_of_an_unknown_repository_are_name_unknown);
async fn tags_of_an_unknown_repository_are_name_unknown(stores: StorePair) {
    let (registry, oci) = registry(stores).await;
    assert_error(
        oci.get("/v2/disc/nothing/tags/list").await,
        404,
        "NAME_UNKNOWN",
    )
    .await;
    registry.server.stop().await;
}

common::on_each_store_pair!(catalog_is_sorted_and_paginated);
async fn catalog_is_sorted_and_paginated(stores: StorePair) {
    let (registry, oci) = registry(stores).await;
    let repos = ["zeta", "a/b", "a-b", "a", "a.b/c", "b/x/y", "a_b", "m"];
    for repo in repos {
        oci.push_image(repo, Some("latest"), 0).await;
    }
    let expected = sorted(&repos);

    let response = expect_status(oci.get("/v2/_catalog").await, 200).await;
    assert_eq!(opt_header(&response, "link"), None);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["repositories"], json!(expected));

    for n in [1usize, 3, 4, 8, 9] {
        let pages = walk(&oci, &format!("/v2/_catalog?n={n}"), "repositories").await;
        assert_eq!(pages.len(), expected.len().div_ceil(n), "n={n}: {pages:?}");
        for page in &pages[..pages.len() - 1] {
            assert_eq!(page.len(), n, "n={n}: {pages:?}");
        }
        assert_eq!(pages.concat(), expected, "n={n}");
    }
    let response = expect_status(oci.get("/v2/_catalog?n=2&last=a-b").await, 200).await;
    let link = next_link(&header(&response, "link"));
    let body: Value = response.json().await.unwrap();
    let after: Vec<String> = expected
        .iter()
        .filter(|r| r.as_str() > "a-b")
        .cloned()
        .collect();
    assert_eq!(body["repositories"], json!(after[..2]));
    assert!(oci.url(&link).path().ends_with("/v2/_catalog"), "{link}");
    registry.server.stop().await;
}

/// GET the referrers of `subject`, asserting the index shape; the manifests listed.
async fn referrers(oci: &Oci, location: &str) -> (reqwest::header::HeaderMap, Vec<Value>) {
    let response = expect_status(oci.get(location).await, 200).await;
    assert_eq!(header(&response, "content-type"), OCI_INDEX);
    let headers = response.headers().clone();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["schemaVersion"], 2, "{body}");
    assert_eq!(body["mediaType"], OCI_INDEX, "{body}");
    let manifests = body["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("manifests must be a list: {body}"))
        .clone();
    (headers, manifests)
}

fn by_digest<'a>(manifests: &'a [Value], digest: &str) -> &'a Value {
    manifests
        .iter()
        .find(|m| m["digest"] == digest)
        .unwrap_or_else(|| panic!("{digest} not listed: {manifests:?}"))
}

common::on_each_store_pair!(referrers_api);
async fn referrers_api(stores: StorePair) {
    let (registry, oci) = registry(stores).await;
    let repo = "disc/referrers";
    let image = oci.push_image(repo, Some("v1"), 1).await;
    oci.push_blob(repo, EMPTY_JSON).await;
    let subject = &image.manifest.digest;
    let path = format!("/v2/{repo}/referrers/{subject}");

    // None yet: an empty index.
    let (headers, manifests) = referrers(&oci, &path).await;
    assert!(manifests.is_empty());
    assert!(headers.get("oci-filters-applied").is_none());
    // A digest nothing refers to, also an empty index.
    let (_, manifests) =
        referrers(&oci, &format!("/v2/{repo}/referrers/{}", unknown_digest())).await;
    assert!(manifests.is_empty());

    // Two signatures, an SBOM whose artifactType comes from its config, and an index.
    let sig_a = artifact_manifest(
        "application/vnd.example.signature",
        Some(&image.manifest),
        json!({"org.example.name": "sig-a"}),
    );
    let sig_b = artifact_manifest(
        "application/vnd.example.signature",
        Some(&image.manifest),
        json!({"org.example.name": "sig-b"}),
    );
    let sbom_config = oci.push_blob(repo, br#"{"sbom":true}"#).await;
    let sbom = Manifest::new(
        OCI_MANIFEST,
        &json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor("application/vnd.example.sbom.config", &sbom_config.data),
            "layers": [],
            "subject": image.manifest.descriptor(),
            "annotations": {"org.example.name": "sbom"},
        }),
    );
    let child = oci.push_image(repo, None, 0).await;
    let index = Manifest::new(
        OCI_INDEX,
        &json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "artifactType": "application/vnd.example.bundle",
            "manifests": [child.manifest.descriptor()],
            "subject": image.manifest.descriptor(),
            "annotations": {"org.example.name": "bundle"},
        }),
    );
    for manifest in [&sig_a, &sig_b, &sbom, &index] {
        let pushed = oci
            .put_manifest(
                repo,
                &manifest.digest,
                &manifest.media_type,
                &manifest.content,
            )
            .await;
        let pushed = expect_status(pushed, 201).await;
        assert_eq!(header(&pushed, "oci-subject"), *subject);
    }
    // Not a referrer: a manifest with no subject.
    let unrelated = oci.push_image(repo, Some("other"), 0).await;

    let (headers, manifests) = referrers(&oci, &path).await;
    assert!(headers.get("oci-filters-applied").is_none());
    assert_eq!(manifests.len(), 4, "{manifests:?}");
    assert!(!manifests
        .iter()
        .any(|m| m["digest"] == unrelated.manifest.digest));
    for (manifest, artifact_type, name) in [
        (&sig_a, "application/vnd.example.signature", "sig-a"),
        (&sig_b, "application/vnd.example.signature", "sig-b"),
        (&sbom, "application/vnd.example.sbom.config", "sbom"),
        (&index, "application/vnd.example.bundle", "bundle"),
    ] {
        let listed = by_digest(&manifests, &manifest.digest);
        assert_eq!(listed["mediaType"], manifest.media_type, "{listed}");
        assert_eq!(listed["size"], manifest.content.len(), "{listed}");
        assert_eq!(listed["artifactType"], artifact_type, "{listed}");
        assert_eq!(listed["annotations"], json!({"org.example.name": name}));
    }

    // Filtered by artifactType.
    let (headers, manifests) = referrers(
        &oci,
        &format!("{path}?artifactType=application/vnd.example.signature"),
    )
    .await;
    assert_eq!(
        headers
            .get("oci-filters-applied")
            .map(|v| v.to_str().unwrap()),
        Some("artifactType")
    );
    let mut digests: Vec<&str> = manifests
        .iter()
        .map(|m| m["digest"].as_str().unwrap())
        .collect();
    digests.sort();
    let mut want = vec![sig_a.digest.as_str(), sig_b.digest.as_str()];
    want.sort();
    assert_eq!(digests, want);
    let (headers, manifests) =
        referrers(&oci, &format!("{path}?artifactType=application/none")).await;
    assert!(headers.get("oci-filters-applied").is_some());
    assert!(manifests.is_empty());

    // Referrers are per repository.
    oci.push_blob("disc/otherrepo", EMPTY_JSON).await;
    let (_, manifests) = referrers(&oci, &format!("/v2/disc/otherrepo/referrers/{subject}")).await;
    assert!(manifests.is_empty(), "{manifests:?}");

    // An invalid digest.
    assert_error(
        oci.get(&format!("/v2/{repo}/referrers/sha256:nothex"))
            .await,
        400,
        "DIGEST_INVALID",
    )
    .await;
    assert_error(
        oci.get(&format!("/v2/{repo}/referrers/v1")).await,
        400,
        "DIGEST_INVALID",
    )
    .await;
    registry.server.stop().await;
}

common::on_each_store_pair!(referrers_to_a_subject_not_pushed_yet);
async fn referrers_to_a_subject_not_pushed_yet(stores: StorePair) {
    // The spec lets a referrer be pushed before its subject.
    let (registry, oci) = registry(stores).await;
    let repo = "disc/early";
    oci.push_blob(repo, EMPTY_JSON).await;
    let config = oci.push_random_blob(repo, 30).await;
    let future = image_manifest(&config, &[], None);
    let sig = artifact_manifest(
        "application/vnd.example.sig",
        Some(&future),
        json!({"a": "b"}),
    );
    let pushed = oci
        .put_manifest(repo, &sig.digest, OCI_MANIFEST, &sig.content)
        .await;
    let pushed = expect_status(pushed, 201).await;
    assert_eq!(header(&pushed, "oci-subject"), future.digest);
    let (_, manifests) = referrers(&oci, &format!("/v2/{repo}/referrers/{}", future.digest)).await;
    assert_eq!(manifests.len(), 1);
    assert_eq!(manifests[0]["digest"], sig.digest);
    assert_eq!(manifests[0]["artifactType"], "application/vnd.example.sig");
    registry.server.stop().await;
}
