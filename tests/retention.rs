//! `[[retention]]` and `[[immutable]]` end to end, on every pair of stores: images, indexes
//! and referrers built through the API, GC applying the rules (dry run, then for real; and
//! the online GC of `serve`), and the answers a client gets for a push or delete an
//! immutable tag refuses. The store contracts (atomicity included) are in contract_meta.rs
//! and contract_gc.rs; docker and skopeo meeting an immutable tag are in clients_docker.rs
//! and skopeo_roundtrip.rs.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::auth::start_auth_registry_with;
use common::oci::{
    artifact_manifest, assert_error, expect_status, Manifest, Oci, EMPTY_JSON, OCI_INDEX,
};
use common::StorePair;
use ipfs_registry::config::Config;
use ipfs_registry::meta::gc::SweepPolicy;
use ipfs_registry::registry::rules::{ImmutableRule, RetentionRule};
use serde_json::json;

const REPO: &str = "ret/app";
const OTHER: &str = "other/app";

fn retention_rules(config: &mut Config) {
    config.retention = vec![RetentionRule {
        repositories: "ret/*".parse().unwrap(),
        keep_last: Some(2),
        keep_tags: vec!["release-*".parse().unwrap()],
        untagged_older_than: Some(Duration::ZERO),
    }];
    config.immutable = vec![ImmutableRule {
        repositories: "ret/*".parse().unwrap(),
        tags: vec!["stable".parse().unwrap()],
    }];
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

/// Push times are kept to the millisecond: tags pushed in sequence get distinct ones.
async fn later() {
    tokio::time::sleep(Duration::from_millis(5)).await;
}

async fn present(oci: &Oci, repo: &str, manifest: &Manifest) -> bool {
    let response = oci
        .head(&format!("/v2/{repo}/manifests/{}", manifest.digest))
        .await;
    match response.status().as_u16() {
        200 => true,
        404 => false,
        other => panic!("HEAD {}: {other}", manifest.digest),
    }
}

async fn tags(oci: &Oci, repo: &str) -> BTreeSet<String> {
    oci.tags(&format!("/v2/{repo}/tags/list"))
        .await
        .0
        .into_iter()
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

common::on_each_store_pair!(retention_keeps_exactly_what_the_rules_say);

async fn retention_keeps_exactly_what_the_rules_say(stores: StorePair) {
    let registry = stores.start_registry_with(retention_rules).await;
    let oci = Oci::new(&registry.base);
    let core = registry.server.registry.clone();
    oci.push_blob(REPO, EMPTY_JSON).await;

    // Oldest first: a, release-1, release-sig, stable (immutable), b, then a tagged index
    // over two children pushed by digest, then c. The newest two are c and multi.
    let a = oci.push_image(REPO, Some("a"), 1).await;
    later().await;
    let release = oci.push_image(REPO, Some("release-1"), 1).await;
    // An untagged image whose signature is kept by its tag (so the image, its subject, is).
    let signed = oci.push_image(REPO, None, 1).await;
    let signature = artifact_manifest(
        "application/vnd.example.sig",
        Some(&signed.manifest),
        json!({"n": "3"}),
    );
    oci.push_manifest(REPO, "release-sig", &signature).await;
    later().await;
    let stable = oci.push_image(REPO, Some("stable"), 1).await;
    later().await;
    let b = oci.push_image(REPO, Some("b"), 1).await;
    later().await;
    let amd64 = oci.push_image(REPO, None, 1).await;
    let arm64 = oci.push_image(REPO, None, 1).await;
    let index = index_of(&[&amd64.manifest, &arm64.manifest]);
    oci.push_manifest(REPO, "multi", &index).await;
    later().await;
    let c = oci.push_image(REPO, Some("c"), 1).await;
    // Referrers: an SBOM of an index child and a signature of c, both untagged.
    let sbom = artifact_manifest(
        "application/vnd.example.sbom",
        Some(&amd64.manifest),
        json!({"n": "1"}),
    );
    oci.push_manifest(REPO, &sbom.digest, &sbom).await;
    let c_signature = artifact_manifest(
        "application/vnd.example.sig",
        Some(&c.manifest),
        json!({"n": "2"}),
    );
    oci.push_manifest(REPO, &c_signature.digest, &c_signature)
        .await;
    // A repository no rule covers: its tags and untagged manifests stay.
    let other_old = oci.push_image(OTHER, Some("old"), 1).await;
    let other_untagged = oci.push_image(OTHER, None, 1).await;
    later().await;

    let everything = tags(&oci, REPO).await;
    let no_default = SweepPolicy {
        grace_period: Duration::ZERO,
        untagged_retention: None,
        upload_expiry: Duration::from_secs(3600),
        ..SweepPolicy::default()
    };
    let dry = core
        .collect_garbage(&no_default, true, &|_| {})
        .await
        .unwrap()
        .unwrap();
    let would_remove: BTreeSet<String> = dry
        .swept
        .tags
        .iter()
        .map(|t| t.record.tag.clone())
        .collect();
    assert_eq!(would_remove, set(&["a", "b"]), "{dry}");
    let would_delete: BTreeSet<String> = dry
        .swept
        .manifests
        .iter()
        .map(|m| m.digest.to_string())
        .collect();
    let expected_deleted: BTreeSet<String> = [&a.manifest.digest, &b.manifest.digest]
        .into_iter()
        .cloned()
        .collect();
    assert_eq!(would_delete, expected_deleted, "{dry}");
    assert_eq!(
        tags(&oci, REPO).await,
        everything,
        "a dry run removes nothing"
    );
    assert!(present(&oci, REPO, &a.manifest).await);

    let report = core
        .collect_garbage(&no_default, false, &|_| {})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            report.removed_tags,
            report.deleted_manifests,
            report.freed_blobs
        ),
        (2, 2, 4),
        "the tags a and b, their images, each image's config and layer: {report}"
    );
    assert_eq!(
        tags(&oci, REPO).await,
        set(&["c", "multi", "release-1", "release-sig", "stable"])
    );
    for kept in [
        &c.manifest,
        &index,
        &amd64.manifest,
        &arm64.manifest,
        &sbom,
        &c_signature,
        &release.manifest,
        &stable.manifest,
        &signature,
        &signed.manifest,
    ] {
        assert!(present(&oci, REPO, kept).await, "{} was kept", kept.digest);
    }
    assert!(!present(&oci, REPO, &a.manifest).await);
    assert!(!present(&oci, REPO, &b.manifest).await);
    assert_eq!(tags(&oci, OTHER).await, set(&["old"]));
    assert!(present(&oci, OTHER, &other_old.manifest).await);
    assert!(present(&oci, OTHER, &other_untagged.manifest).await);
    let metrics = core.metrics().encode();
    assert!(
        metrics.contains("ipfs_registry_gc_removed_tags_total 2"),
        "{metrics}"
    );

    // The rules hold at the next run: nothing more goes.
    let again = core
        .collect_garbage(&no_default, false, &|_| {})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (again.removed_tags, again.deleted_manifests),
        (0, 0),
        "{again}"
    );
    registry.server.stop().await;
}

fn immutable_v(config: &mut Config) {
    config.immutable = vec![ImmutableRule {
        repositories: "team/*".parse().unwrap(),
        tags: vec!["v*".parse().unwrap()],
    }];
}

common::on_each_store_pair!(an_immutable_tag_refuses_moves_and_deletes_over_http);

async fn an_immutable_tag_refuses_moves_and_deletes_over_http(stores: StorePair) {
    let registry = stores.start_registry_with(immutable_v).await;
    let oci = Oci::new(&registry.base);
    let repo = "team/app";
    let one = oci.push_image(repo, Some("v1"), 1).await;
    // The same manifest again under the tag: accepted.
    oci.push_manifest(repo, "v1", &one.manifest).await;
    let two = oci.push_image(repo, Some("latest"), 1).await;
    let refused = oci
        .put_manifest(repo, "v1", &two.manifest.media_type, &two.manifest.content)
        .await;
    let body = assert_error(refused, 409, "TAG_INVALID").await;
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("tag v1 of team/app is immutable")
            && message.contains(r#"repositories = "team/*", tags = ["v*"]"#),
        "{message}"
    );
    let pulled = expect_status(oci.get(&format!("/v2/{repo}/manifests/v1")).await, 200).await;
    assert_eq!(pulled.bytes().await.unwrap(), one.manifest.content);
    // Tags no rule covers, and other repositories, move as usual.
    oci.push_manifest(repo, "latest", &one.manifest).await;
    oci.push_image("solo/app", Some("v1"), 1).await;
    oci.push_image("solo/app", Some("v1"), 1).await;

    for reference in ["v1".to_owned(), one.manifest.digest.clone()] {
        let refused = oci
            .delete(&format!("/v2/{repo}/manifests/{reference}"))
            .await;
        let body = assert_error(refused, 409, "TAG_INVALID").await;
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("override_immutable=true"),
            "{body}"
        );
    }
    let bad = oci
        .delete(&format!("/v2/{repo}/manifests/v1?override_immutable=yes"))
        .await;
    assert_error(bad, 400, "UNSUPPORTED").await;
    // With auth off everyone is an admin: the override is honoured.
    expect_status(
        oci.delete(&format!("/v2/{repo}/manifests/v1?override_immutable=true"))
            .await,
        202,
    )
    .await;
    expect_status(oci.get(&format!("/v2/{repo}/manifests/v1")).await, 404).await;
    // Gone, the tag may be created again, at another manifest.
    oci.push_manifest(repo, "v1", &two.manifest).await;
    registry.server.stop().await;
}

common::on_each_store_pair!(only_an_admin_may_override_an_immutable_tag);

async fn only_an_admin_may_override_an_immutable_tag(stores: StorePair) {
    let auth = start_auth_registry_with(stores, immutable_v).await;
    let repo = "team/app";
    auth.add_user("dev", "dev-password", false).await;
    auth.grant("dev", "team/*", "pull,push,delete").await;
    auth.add_user("lead", "lead-password", false).await;
    auth.grant("lead", "team/*", "admin").await;
    let scope = format!("repository:{repo}:pull,push,delete");
    let dev = auth.client(Some(("dev", "dev-password")), &[&scope]).await;
    let image = dev.push_image(repo, Some("v1"), 1).await;

    let url = format!("/v2/{repo}/manifests/v1?override_immutable=true");
    assert_error(dev.delete(&url).await, 403, "DENIED").await;
    assert_error(
        dev.delete(&format!("/v2/{repo}/manifests/v1")).await,
        409,
        "TAG_INVALID",
    )
    .await;
    let robot = auth
        .robot_token("lead", &[&scope], Duration::from_secs(600))
        .await;
    let robot_client = auth.client(Some(("lead", &robot)), &[&scope]).await;
    assert_error(robot_client.delete(&url).await, 403, "DENIED").await;
    let lead = auth
        .client(Some(("lead", "lead-password")), &[&scope])
        .await;
    let by_digest = format!(
        "/v2/{repo}/manifests/{}?override_immutable=true",
        image.manifest.digest
    );
    expect_status(lead.delete(&by_digest).await, 202).await;
    assert_error(
        dev.get(&format!("/v2/{repo}/manifests/{}", image.manifest.digest))
            .await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    auth.registry.server.stop().await;
}

common::on_each_store_pair!(online_gc_applies_the_retention_rules);

async fn online_gc_applies_the_retention_rules(stores: StorePair) {
    let registry = stores
        .start_registry_with(|config| {
            config.gc.interval = Duration::from_millis(200);
            config.retention = vec![RetentionRule {
                repositories: "ret/*".parse().unwrap(),
                keep_last: Some(1),
                keep_tags: Vec::new(),
                untagged_older_than: None,
            }];
        })
        .await;
    let oci = Oci::new(&registry.base);
    let old = oci.push_image(REPO, Some("old"), 1).await;
    later().await;
    oci.push_image(REPO, Some("new"), 1).await;
    let started = std::time::Instant::now();
    while tags(&oci, REPO).await != set(&["new"]) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "online GC never applied the rule: {:?}",
            tags(&oci, REPO).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Only the tag went: without an untagged retention the manifest stays.
    assert!(present(&oci, REPO, &old.manifest).await);
    registry.server.stop().await;
}
