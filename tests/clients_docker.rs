//! The real Docker CLI and engine (Debian's docker.io: a dockerd of this test binary's own, see
//! tests/common/clients.rs) against in-process registries on each store pair: push, re-push,
//! `docker manifest inspect`, pull after the local copy is gone, pull by digest, layers shared with
//! another repository (cross-repository mounts), a deleted tag, a multi-platform list (`docker
//! manifest create/annotate/push`), an immutable tag refusing a move, and with authentication on: login and logout, refused anonymous
//! push and pull, a wrong password, a robot token as the password, a push outside the grants.
//!
//! Images are built here (no base image can be pulled): `FROM scratch` plus busybox and files of
//! fresh random bytes, so every image has layers no other test or run pushed.
//!
//! Needs docker.io and busybox-static (scripts/ensure-tools.sh) and root, PostgreSQL and the test
//! IPFS node. Without docker the tests skip loudly, unless `CI` is set.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::auth::start_auth_registry;
use common::clients::{self, stored_blob, stored_manifest, Docker};
use common::images::{random_bytes, sha256_digest};
use common::StorePair;
use common::TestRegistry;
use serde_json::Value;

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const PASSWORD: &str = "docker-password";

/// busybox and two files of fresh random bytes: three layers.
fn three_layers() -> Vec<(String, Vec<u8>)> {
    let mut files = clients::rootfs("etc/marker-a");
    files.push(("srv/data-b".to_owned(), random_bytes(96 * 1024)));
    files
}

fn as_refs(files: &[(String, Vec<u8>)]) -> Vec<(&str, &[u8])> {
    files
        .iter()
        .map(|(path, data)| (path.as_str(), data.as_slice()))
        .collect()
}

fn layer_digests(manifest: &Value) -> Vec<String> {
    manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|layer| layer["digest"].as_str().unwrap().to_owned())
        .collect()
}

/// Every layer and the config of `manifest` are served by the registry, hash to their
/// digests, and sit in its blob store (pinned in the IPFS node, or the embedded store).
async fn assert_blobs_stored(registry: &TestRegistry, repo: &str, manifest: &Value) {
    let mut digests = layer_digests(manifest);
    digests.push(manifest["config"]["digest"].as_str().unwrap().to_owned());
    for digest in digests {
        let data = stored_blob(&registry.base, repo, &digest).await;
        assert_eq!(sha256_digest(&data), digest, "{repo}: blob bytes");
        assert!(
            common::blob_store_holds(registry, &data).await,
            "{repo}: blob {digest} is not in the blob store"
        );
    }
}

/// Pushes a fresh three-layer image as `<registry>/<repo>:<tag>`; returns its image id
/// and the pushed manifest digest.
async fn build_and_push(docker: &Docker, image: &str) -> (String, String) {
    let files = three_layers();
    let id = docker.build(image, None, None, &as_refs(&files)).await;
    let pushed = docker.push(image).await;
    assert_eq!(pushed.layers.len(), 3, "{}", pushed.output);
    (id, pushed.digest)
}

common::on_each_store_pair!(push_inspect_repush_and_pull_by_tag_and_digest);
async fn push_inspect_repush_and_pull_by_tag_and_digest(stores: StorePair) {
    let Some(docker) = clients::docker().await else {
        return;
    };
    let registry = stores.start_registry().await;
    let host = registry.host();
    let image = format!("{host}/docker/app:v1");
    let files = three_layers();
    let id = docker.build(&image, None, None, &as_refs(&files)).await;

    let pushed = docker.push(&image).await;
    assert_eq!(pushed.layers.len(), 3, "{}", pushed.output);
    assert!(
        pushed.layers.values().all(|status| status == "Pushed"),
        "every layer is new to this registry:\n{}",
        pushed.output
    );
    let stored = stored_manifest(&registry.base, "docker/app", "v1")
        .await
        .expect("the pushed tag");
    assert_eq!(stored.digest, pushed.digest);
    assert_eq!(stored.digest, sha256_digest(&stored.body));
    assert_eq!(stored.content_type, DOCKER_MANIFEST);
    let manifest = stored.json();
    assert_eq!(
        manifest["config"]["digest"],
        id.as_str(),
        "config = image id"
    );
    assert_blobs_stored(&registry, "docker/app", &manifest).await;

    // Again: the registry already has every layer, so nothing moves.
    let again = docker.push(&image).await;
    assert_eq!(again.digest, pushed.digest);
    assert!(
        again
            .layers
            .values()
            .all(|status| status == "Layer already exists"),
        "{}",
        again.output
    );

    let inspected = docker
        .ok(&["manifest", "inspect", "--insecure", &image])
        .await;
    let inspected: Value = serde_json::from_str(&inspected.stdout).unwrap();
    assert_eq!(inspected["mediaType"], DOCKER_MANIFEST);
    assert_eq!(inspected["config"], manifest["config"]);
    assert_eq!(layer_digests(&inspected), layer_digests(&manifest));

    // Pull after the local copy is gone: the same image comes back.
    docker.rmi(&[&image]).await;
    assert_eq!(docker.image_id(&image).await, None, "rmi left the image");
    let pull = docker.ok(&["pull", &image]).await;
    assert!(
        pull.stdout.contains(&format!("Digest: {}", pushed.digest))
            && pull.stdout.contains("Downloaded newer image"),
        "{pull}"
    );
    assert_eq!(docker.image_id(&image).await.as_deref(), Some(id.as_str()));

    // By digest.
    docker.rmi(&[&image]).await;
    let by_digest = format!("{host}/docker/app@{}", pushed.digest);
    docker.ok(&["pull", &by_digest]).await;
    assert_eq!(
        docker.image_id(&by_digest).await.as_deref(),
        Some(id.as_str())
    );
    let repo_digests = docker.inspect(&by_digest).await["RepoDigests"].clone();
    assert_eq!(repo_digests, serde_json::json!([by_digest]));
    docker.rmi(&[&by_digest]).await;
    registry.server.stop().await;
}

common::on_each_store_pair!(layers_shared_with_another_repository_are_mounted_not_uploaded);
async fn layers_shared_with_another_repository_are_mounted_not_uploaded(stores: StorePair) {
    let Some(docker) = clients::docker().await else {
        return;
    };
    let registry = stores.start_registry().await;
    let host = registry.host();
    let base = format!("{host}/docker/base:v1");
    let derived = format!("{host}/docker/derived:v1");
    let (_, base_digest) = build_and_push(&docker, &base).await;
    let extra = random_bytes(32 * 1024);
    let derived_id = docker
        .build(&derived, Some(&base), None, &[("srv/extra", &extra)])
        .await;

    let pushed = docker.push(&derived).await;
    let statuses: Vec<&str> = pushed.layers.values().map(String::as_str).collect();
    let mounted = statuses
        .iter()
        .filter(|status| **status == "Mounted from docker/base")
        .count();
    let uploaded = statuses
        .iter()
        .filter(|status| **status == "Pushed")
        .count();
    assert_eq!(
        (mounted, uploaded),
        (3, 1),
        "the base's three layers mounted, the new one pushed:\n{}",
        pushed.output
    );

    let base_manifest = stored_manifest(&registry.base, "docker/base", "v1")
        .await
        .unwrap();
    assert_eq!(base_manifest.digest, base_digest);
    let derived_manifest = stored_manifest(&registry.base, "docker/derived", "v1")
        .await
        .unwrap()
        .json();
    let base_layers = layer_digests(&base_manifest.json());
    let derived_layers = layer_digests(&derived_manifest);
    assert_eq!(derived_layers[..3], base_layers[..], "shared layers");
    assert_blobs_stored(&registry, "docker/derived", &derived_manifest).await;

    docker.rmi(&[&derived, &base]).await;
    docker.ok(&["pull", &derived]).await;
    assert_eq!(
        docker.image_id(&derived).await.as_deref(),
        Some(derived_id.as_str())
    );
    docker.rmi(&[&derived]).await;
    registry.server.stop().await;
}

common::on_each_store_pair!(a_deleted_tag_no_longer_pulls);
async fn a_deleted_tag_no_longer_pulls(stores: StorePair) {
    let Some(docker) = clients::docker().await else {
        return;
    };
    let registry = stores.start_registry().await;
    let host = registry.host();
    let v1 = format!("{host}/docker/gone:v1");
    let v2 = format!("{host}/docker/gone:v2");
    let (id, digest) = build_and_push(&docker, &v1).await;
    docker.ok(&["tag", &v1, &v2]).await;
    docker.push(&v2).await;

    let response = reqwest::Client::new()
        .delete(registry.url("/v2/docker/gone/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202, "DELETE the tag");
    docker.rmi(&[&v1, &v2]).await;

    let pull = docker.run(&["pull", &v1]).await;
    assert!(!pull.success(), "the deleted tag still pulls:\n{pull}");
    assert!(
        pull.mentions_any(&["manifest unknown", "not found"]),
        "{pull}"
    );
    assert_eq!(docker.image_id(&v1).await, None);
    // Only the tag went: the other tag and the digest still pull.
    docker.ok(&["pull", &v2]).await;
    let by_digest = format!("{host}/docker/gone@{digest}");
    docker.ok(&["pull", &by_digest]).await;
    assert_eq!(docker.image_id(&v2).await.as_deref(), Some(id.as_str()));
    // Its last tag takes the digest reference with it.
    docker.rmi(&[&v2]).await;
    registry.server.stop().await;
}

common::on_each_store_pair!(an_immutable_tag_refuses_a_move_with_a_readable_message);
async fn an_immutable_tag_refuses_a_move_with_a_readable_message(stores: StorePair) {
    let Some(docker) = clients::docker().await else {
        return;
    };
    let registry = stores
        .start_registry_with(|config| {
            config.immutable = vec![ipfs_registry::registry::rules::ImmutableRule {
                repositories: "docker/*".parse().unwrap(),
                tags: vec!["v*".parse().unwrap()],
            }];
        })
        .await;
    let host = registry.host();
    let v1 = format!("{host}/docker/pinned:v1");
    let (_, digest) = build_and_push(&docker, &v1).await;
    // The same image again under the tag: accepted.
    assert_eq!(docker.push(&v1).await.digest, digest);

    // Another image under the tag: refused, and docker says why.
    let files = three_layers();
    docker.build(&v1, None, None, &as_refs(&files)).await;
    let started = std::time::Instant::now();
    let push = docker.run(&["push", &v1]).await;
    assert!(!push.success(), "an immutable tag moved:\n{push}");
    assert!(
        push.mentions_any(&["tag v1 of docker/pinned is immutable"]),
        "{push}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the refusal took {:?}:\n{push}",
        started.elapsed()
    );
    let stored = stored_manifest(&registry.base, "docker/pinned", "v1")
        .await
        .expect("v1 is still there");
    assert_eq!(stored.digest, digest, "v1 still names the first image");
    docker.rmi(&[&v1]).await;
    registry.server.stop().await;
}

common::on_each_store_pair!(multi_platform_list_pushes_and_pulls_each_platform);
async fn multi_platform_list_pushes_and_pulls_each_platform(stores: StorePair) {
    let Some(docker) = clients::docker().await else {
        return;
    };
    let registry = stores.start_registry().await;
    let host = registry.host();
    let repo = format!("{host}/docker/multi");
    let (amd64, arm64, list) = (
        format!("{repo}:amd64"),
        format!("{repo}:arm64"),
        format!("{repo}:list"),
    );
    let amd64_files = clients::rootfs("etc/amd64");
    let amd64_id = docker
        .build(&amd64, None, Some("linux/amd64"), &as_refs(&amd64_files))
        .await;
    let arm64_marker = random_bytes(16 * 1024);
    let arm64_id = docker
        .build(
            &arm64,
            None,
            Some("linux/arm64"),
            &[("etc/arm64", &arm64_marker)],
        )
        .await;
    let amd64_digest = docker.push(&amd64).await.digest;
    let arm64_digest = docker.push(&arm64).await.digest;

    docker
        .ok(&["manifest", "create", "--insecure", &list, &amd64, &arm64])
        .await;
    docker
        .ok(&[
            "manifest",
            "annotate",
            &list,
            &arm64,
            "--os",
            "linux",
            "--arch",
            "arm64",
            "--variant",
            "v8",
        ])
        .await;
    let pushed = docker.ok(&["manifest", "push", "--insecure", &list]).await;
    let list_digest = pushed.stdout.trim().lines().last().unwrap_or_default();

    let stored = stored_manifest(&registry.base, "docker/multi", "list")
        .await
        .expect("the pushed list");
    assert_eq!(stored.content_type, DOCKER_MANIFEST_LIST);
    assert_eq!(stored.digest, list_digest, "{pushed}");
    let platforms: BTreeSet<(String, String, String)> = stored.json()["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            let platform = &entry["platform"];
            (
                entry["digest"].as_str().unwrap().to_owned(),
                platform["architecture"].as_str().unwrap().to_owned(),
                platform["variant"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        platforms,
        BTreeSet::from([
            (amd64_digest, "amd64".to_owned(), String::new()),
            (arm64_digest, "arm64".to_owned(), "v8".to_owned()),
        ])
    );
    let inspected = docker
        .ok(&["manifest", "inspect", "--insecure", &list])
        .await;
    let inspected: Value = serde_json::from_str(&inspected.stdout).unwrap();
    assert_eq!(inspected, stored.json(), "docker manifest inspect");

    // Each platform pulls its own image through the list.
    docker.rmi(&[&amd64, &arm64]).await;
    for (platform, id) in [("linux/arm64", &arm64_id), ("linux/amd64", &amd64_id)] {
        docker.ok(&["pull", "--platform", platform, &list]).await;
        assert_eq!(
            docker.image_id(&list).await.as_ref(),
            Some(id),
            "{platform}"
        );
        docker.rmi(&[&list]).await;
    }
    registry.server.stop().await;
}

/// alice may push and pull `team/*` and only pull `shared/*`; ci's robot token is scoped
/// to `team/ci`; root is an admin.
async fn users_and_robot(stores: StorePair) -> (common::auth::AuthRegistry, String) {
    let registry = start_auth_registry(stores).await;
    registry.add_user("root", PASSWORD, true).await;
    registry.add_user("alice", PASSWORD, false).await;
    registry.grant("alice", "team/*", "pull,push").await;
    registry.grant("alice", "shared/*", "pull").await;
    registry.add_user("ci", PASSWORD, false).await;
    registry.grant("ci", "team/*", "pull,push").await;
    let robot = registry
        .robot_token(
            "ci",
            &["repository:team/ci:pull,push"],
            Duration::from_secs(600),
        )
        .await;
    (registry, robot)
}

/// What the clients print when the registry refuses them.
const REFUSED: [&str; 3] = ["unauthorized", "authentication required", "denied"];

common::on_each_store_pair!(login_logout_refusals_and_robot_tokens);
async fn login_logout_refusals_and_robot_tokens(stores: StorePair) {
    let Some(docker) = clients::docker().await else {
        return;
    };
    let (registry, robot) = users_and_robot(stores).await;
    let host = registry.registry.host();
    let app = format!("{host}/team/app:v1");
    let app_id = docker
        .import(&app, &clients::tar(&clients::rootfs("etc/marker")))
        .await;

    let push = docker.run(&["push", &app]).await;
    assert!(!push.success(), "anonymous push:\n{push}");
    assert!(push.mentions_any(&REFUSED), "{push}");

    let login = docker.login(&host, "alice", "not-her-password").await;
    assert!(!login.success(), "a wrong password logged in:\n{login}");
    assert!(login.mentions_any(&REFUSED), "{login}");
    assert!(docker.logins().get(&host).is_none(), "{}", docker.logins());

    let login = docker.check(docker.login(&host, "alice", PASSWORD).await);
    assert!(login.stdout.contains("Login Succeeded"), "{login}");
    assert!(docker.logins().get(&host).is_some(), "{}", docker.logins());
    let pushed = docker.push(&app).await;
    assert!(
        pushed.layers.values().all(|status| status == "Pushed"),
        "{}",
        pushed.output
    );

    // Outside her grants: she may pull shared/app, which root pushed, but not push to it.
    // (Layers that are already there leave the manifest as the refused request; see
    // a_push_without_any_grant_is_refused_at_once for a repository she may not even read.)
    docker.check(docker.login(&host, "root", PASSWORD).await);
    let shared = format!("{host}/shared/app:v1");
    docker.ok(&["tag", &app, &shared]).await;
    docker.push(&shared).await;
    docker.check(docker.login(&host, "alice", PASSWORD).await);
    let shared_v2 = format!("{host}/shared/app:v2");
    docker.ok(&["tag", &app, &shared_v2]).await;
    let push = docker.run(&["push", &shared_v2]).await;
    assert!(!push.success(), "a push outside alice's grants:\n{push}");
    assert!(push.mentions_any(&REFUSED), "{push}");
    docker.rmi(&[&app, &shared, &shared_v2]).await;
    docker.ok(&["pull", &app]).await;
    assert_eq!(
        docker.image_id(&app).await.as_deref(),
        Some(app_id.as_str())
    );
    docker.ok(&["pull", &shared]).await;

    let logout = docker.ok(&["logout", &host]).await;
    assert!(
        logout.stdout.contains("Removing login credentials"),
        "{logout}"
    );
    assert!(docker.logins().get(&host).is_none(), "{}", docker.logins());
    docker.rmi(&[&app, &shared]).await;
    let pull = docker.run(&["pull", &app]).await;
    assert!(
        !pull.success(),
        "anonymous pull of a private image:\n{pull}"
    );
    assert!(pull.mentions_any(&REFUSED), "{pull}");

    // A robot token is a password, for its scope only.
    docker.check(docker.login(&host, "ci", &robot).await);
    let ci = format!("{host}/team/ci:v1");
    let ci_id = docker
        .import(&ci, &clients::tar(&clients::rootfs("etc/marker")))
        .await;
    docker.push(&ci).await;
    let pull = docker.run(&["pull", &app]).await;
    assert!(
        !pull.success(),
        "the robot pulled outside its scope:\n{pull}"
    );
    docker.ok(&["tag", &ci, &app]).await;
    let push = docker.run(&["push", &app]).await;
    assert!(
        !push.success(),
        "the robot pushed outside its scope:\n{push}"
    );
    assert!(push.mentions_any(&REFUSED), "{push}");
    docker.rmi(&[&ci, &app]).await;
    docker.ok(&["pull", &ci]).await;
    assert_eq!(docker.image_id(&ci).await.as_deref(), Some(ci_id.as_str()));
    docker.ok(&["logout", &host]).await;
    docker.rmi(&[&ci]).await;
    registry.registry.server.stop().await;
}

common::on_each_store_pair!(a_push_without_any_grant_is_refused_at_once);
/// dockerd 20.10 retries a layer upload refused with 403 DENIED five times, with back-off
/// (about 50 s), when the error's `detail` is null: the client then decodes the error as a
/// bare code, which its retry check does not take as final. The registry sends `{}`, so it
/// stops at once with "denied: requested access to the resource is denied".
async fn a_push_without_any_grant_is_refused_at_once(stores: StorePair) {
    let Some(docker) = clients::docker().await else {
        return;
    };
    let (registry, _) = users_and_robot(stores).await;
    let host = registry.registry.host();
    let image = format!("{host}/elsewhere/app:v1");
    docker
        .import(&image, &clients::tar(&clients::rootfs("etc/marker")))
        .await;
    docker.check(docker.login(&host, "alice", PASSWORD).await);
    let started = std::time::Instant::now();
    let push = docker.run(&["push", &image]).await;
    assert!(!push.success(), "a push outside alice's grants:\n{push}");
    assert!(push.mentions_any(&REFUSED), "{push}");
    assert!(
        !push.stdout.contains("Retrying") && started.elapsed() < Duration::from_secs(10),
        "the refusal took {:?}, with retries:\n{push}",
        started.elapsed()
    );
    docker.ok(&["logout", &host]).await;
    docker.rmi(&[&image]).await;
    registry.registry.server.stop().await;
}
