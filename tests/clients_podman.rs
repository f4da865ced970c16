//! The real podman (Debian's 4.3; storage, configuration and logins of each test's own, see
//! tests/common/clients.rs) against in-process registries on each store pair: push, re-push, pull
//! after the local copy is gone, pull by digest, a zstd-compressed image, a multi-platform OCI
//! index (`podman manifest`), and with authentication on: login and logout, refusals, a robot token
//! as the password.
//!
//! Images are imported here (no base image can be pulled): busybox and a file of fresh random
//! bytes, so no layer is one another test or run already pushed (podman, as root, remembers pushed
//! layers host-wide, in /var/lib/containers/cache).
//!
//! Needs podman and busybox-static (scripts/ensure-tools.sh) and root, PostgreSQL and the test IPFS
//! node. Without podman the tests skip loudly, unless `CI` is set.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::auth::start_auth_registry;
use common::clients::{self, stored_blob, stored_manifest, Podman};
use common::images::sha256_digest;
use common::StorePair;
use common::TestRegistry;

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const ZSTD_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
const PASSWORD: &str = "podman-password";
/// What podman prints when the registry refuses it (403 is all it says of a refused HEAD).
const REFUSED: [&str; 5] = [
    "unauthorized",
    "authentication required",
    "denied",
    "invalid username/password",
    "403 (forbidden)",
];

/// A fresh one-layer image, imported as `localhost/<name>` for `arch`; returns its id.
async fn fresh_image(podman: &Podman, name: &str, arch: &str) -> String {
    let rootfs = clients::tar(&clients::rootfs("etc/marker"));
    podman
        .import(&format!("localhost/{name}"), arch, &rootfs)
        .await
}

/// Pushes with `--digestfile`; returns the manifest digest podman pushed.
async fn push(podman: &Podman, source: &str, destination: &str, extra: &[&str]) -> String {
    let digest_file = tempfile::NamedTempFile::new().unwrap();
    let mut args = vec!["--digestfile", digest_file.path().to_str().unwrap()];
    args.extend(extra);
    let output = podman.push(source, destination, &args).await;
    assert!(output.success(), "{output}");
    std::fs::read_to_string(digest_file.path())
        .unwrap()
        .trim()
        .to_owned()
}

/// Every blob the manifest names is served, hashes to its digest and is in the blob store.
async fn assert_blobs_stored(registry: &TestRegistry, repo: &str, manifest: &serde_json::Value) {
    let mut descriptors = manifest["layers"].as_array().unwrap().clone();
    descriptors.push(manifest["config"].clone());
    for descriptor in descriptors {
        let digest = descriptor["digest"].as_str().unwrap();
        let data = stored_blob(&registry.base, repo, digest).await;
        assert_eq!(sha256_digest(&data), digest);
        assert!(
            common::blob_store_holds(registry, &data).await,
            "{repo}: blob {digest} is not in the blob store"
        );
    }
}

common::on_each_store_pair!(push_repush_and_pull_by_tag_and_digest);
async fn push_repush_and_pull_by_tag_and_digest(stores: StorePair) {
    let Some(podman) = clients::podman().await else {
        return;
    };
    let registry = stores.start_registry().await;
    let host = registry.host();
    let id = fresh_image(&podman, "app:v1", "amd64").await;
    let image = format!("{host}/podman/app:v1");

    let digest = push(&podman, "localhost/app:v1", &image, &[]).await;
    let stored = stored_manifest(&registry.base, "podman/app", "v1")
        .await
        .expect("the pushed tag");
    assert_eq!(stored.digest, digest);
    let manifest = stored.json();
    assert_eq!(
        manifest["config"]["digest"],
        format!("sha256:{id}"),
        "config = image id"
    );
    assert_blobs_stored(&registry, "podman/app", &manifest).await;

    let again = podman
        .push("localhost/app:v1", &image, &["--log-level", "debug"])
        .await;
    assert!(again.success(), "{again}");
    // (Its log says so only at debug level.)
    assert!(
        again.stderr.contains("(already present)") && !again.stderr.contains("/blobs/uploads/"),
        "the registry has every blob, nothing is uploaded again:\n{again}"
    );

    podman.ok(&["rmi", "localhost/app:v1"]).await;
    assert_eq!(podman.image_id(&image).await, None);
    let pull = podman.pull(&image, &[]).await;
    assert!(pull.success(), "{pull}");
    assert_eq!(podman.image_id(&image).await, Some(id.clone()));

    podman.ok(&["rmi", &image]).await;
    let by_digest = format!("{host}/podman/app@{digest}");
    let pull = podman.pull(&by_digest, &[]).await;
    assert!(pull.success(), "{pull}");
    assert_eq!(podman.image_id(&by_digest).await, Some(id));
    registry.server.stop().await;
}

common::on_each_store_pair!(zstd_compressed_image_pushes_and_pulls);
async fn zstd_compressed_image_pushes_and_pulls(stores: StorePair) {
    let Some(podman) = clients::podman().await else {
        return;
    };
    let registry = stores.start_registry().await;
    let host = registry.host();
    let id = fresh_image(&podman, "zstd:v1", "amd64").await;
    let image = format!("{host}/podman/zstd:v1");

    // zstd layers need an OCI manifest (Docker's schema 2 has no media type for them).
    let digest = push(
        &podman,
        "localhost/zstd:v1",
        &image,
        &["--format", "oci", "--compression-format", "zstd"],
    )
    .await;
    let stored = stored_manifest(&registry.base, "podman/zstd", "v1")
        .await
        .expect("the pushed tag");
    assert_eq!(stored.digest, digest);
    let manifest = stored.json();
    for layer in manifest["layers"].as_array().unwrap() {
        assert_eq!(layer["mediaType"], ZSTD_LAYER, "{manifest}");
        let data = stored_blob(
            &registry.base,
            "podman/zstd",
            layer["digest"].as_str().unwrap(),
        )
        .await;
        assert_eq!(data[..4], [0x28, 0xb5, 0x2f, 0xfd], "a zstd frame");
    }
    assert_blobs_stored(&registry, "podman/zstd", &manifest).await;

    podman.ok(&["rmi", "localhost/zstd:v1"]).await;
    let pull = podman.pull(&image, &[]).await;
    assert!(pull.success(), "{pull}");
    assert_eq!(podman.image_id(&image).await, Some(id));
    registry.server.stop().await;
}

common::on_each_store_pair!(manifest_list_pushes_as_an_oci_index_and_pulls_each_platform);
async fn manifest_list_pushes_as_an_oci_index_and_pulls_each_platform(stores: StorePair) {
    let Some(podman) = clients::podman().await else {
        return;
    };
    let registry = stores.start_registry().await;
    let host = registry.host();
    let amd64 = fresh_image(&podman, "multi:amd64", "amd64").await;
    let arm64 = fresh_image(&podman, "multi:arm64", "arm64").await;
    podman
        .ok(&["manifest", "create", "localhost/multi:list"])
        .await;
    for tag in ["amd64", "arm64"] {
        let image = format!("containers-storage:localhost/multi:{tag}");
        podman
            .ok(&["manifest", "add", "localhost/multi:list", &image])
            .await;
    }
    let list = format!("{host}/podman/multi:list");
    let digest = push_list(&podman, &list).await;

    let stored = stored_manifest(&registry.base, "podman/multi", "list")
        .await
        .expect("the pushed index");
    assert_eq!(stored.content_type, OCI_INDEX);
    assert_eq!(stored.digest, digest);
    let index = stored.json();
    let platforms: BTreeSet<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(platforms, BTreeSet::from(["amd64", "arm64"]), "{index}");
    for entry in index["manifests"].as_array().unwrap() {
        let manifest = stored_manifest(
            &registry.base,
            "podman/multi",
            entry["digest"].as_str().unwrap(),
        )
        .await
        .expect("each platform's manifest");
        assert_blobs_stored(&registry, "podman/multi", &manifest.json()).await;
    }

    podman.ok(&["manifest", "rm", "localhost/multi:list"]).await;
    podman
        .ok(&["rmi", "localhost/multi:amd64", "localhost/multi:arm64"])
        .await;
    for (arch, id) in [("arm64", &arm64), ("amd64", &amd64)] {
        let pull = podman.pull(&list, &["--arch", arch]).await;
        assert!(pull.success(), "{pull}");
        assert_eq!(podman.image_id(&list).await.as_ref(), Some(id), "{arch}");
        podman.ok(&["rmi", &list]).await;
    }
    registry.server.stop().await;
}

/// `podman manifest push --all` of the local list `localhost/multi:list` to `list`;
/// returns the index digest.
async fn push_list(podman: &Podman, list: &str) -> String {
    let digest_file = tempfile::NamedTempFile::new().unwrap();
    let output = podman
        .ok(&[
            "manifest",
            "push",
            "--all",
            "--format",
            "oci",
            "--tls-verify=false",
            "--digestfile",
            digest_file.path().to_str().unwrap(),
            "localhost/multi:list",
            &format!("docker://{list}"),
        ])
        .await;
    let digest = std::fs::read_to_string(digest_file.path()).unwrap();
    assert!(digest.starts_with("sha256:"), "{output}");
    digest.trim().to_owned()
}

common::on_each_store_pair!(login_logout_refusals_and_robot_tokens);
async fn login_logout_refusals_and_robot_tokens(stores: StorePair) {
    let Some(podman) = clients::podman().await else {
        return;
    };
    let registry = start_auth_registry(stores).await;
    registry.add_user("alice", PASSWORD, false).await;
    registry.grant("alice", "team/*", "pull,push").await;
    registry.add_user("ci", PASSWORD, false).await;
    registry.grant("ci", "team/*", "pull,push").await;
    let robot = registry
        .robot_token(
            "ci",
            &["repository:team/ci:pull,push"],
            Duration::from_secs(600),
        )
        .await;
    let host = registry.registry.host();
    let id = fresh_image(&podman, "app:v1", "amd64").await;
    let app = format!("{host}/team/app:v1");
    let login = |user: &'static str, password: String| {
        let host = host.clone();
        let podman = &podman;
        async move {
            podman
                .run_with_stdin(
                    &[
                        "login",
                        "--tls-verify=false",
                        "--username",
                        user,
                        "--password-stdin",
                        &host,
                    ],
                    password.as_bytes(),
                )
                .await
        }
    };

    let push = podman.push("localhost/app:v1", &app, &[]).await;
    assert!(!push.success(), "anonymous push:\n{push}");
    assert!(push.mentions_any(&REFUSED), "{push}");

    let out = login("alice", "not-her-password".to_owned()).await;
    assert!(!out.success(), "a wrong password logged in:\n{out}");
    assert!(out.mentions_any(&REFUSED), "{out}");
    assert!(podman.logins().get(&host).is_none(), "{}", podman.logins());

    let out = login("alice", PASSWORD.to_owned()).await;
    assert!(out.success(), "{out}");
    assert!(out.stdout.contains("Login Succeeded"), "{out}");
    assert!(podman.logins().get(&host).is_some(), "{}", podman.logins());
    let out = podman.push("localhost/app:v1", &app, &[]).await;
    assert!(out.success(), "{out}");
    let outside = format!("{host}/other/app:v1");
    let push = podman.push("localhost/app:v1", &outside, &[]).await;
    assert!(!push.success(), "a push outside alice's grants:\n{push}");
    assert!(push.mentions_any(&REFUSED), "{push}");
    podman.ok(&["rmi", "localhost/app:v1"]).await;
    let pull = podman.pull(&app, &[]).await;
    assert!(pull.success(), "{pull}");
    assert_eq!(podman.image_id(&app).await, Some(id));

    podman.ok(&["logout", &host]).await;
    assert!(podman.logins().get(&host).is_none(), "{}", podman.logins());
    podman.ok(&["rmi", &app]).await;
    let pull = podman.pull(&app, &[]).await;
    assert!(
        !pull.success(),
        "anonymous pull of a private image:\n{pull}"
    );
    assert!(pull.mentions_any(&REFUSED), "{pull}");

    // A robot token is a password, for its scope only.
    let out = login("ci", robot).await;
    assert!(out.success(), "{out}");
    fresh_image(&podman, "ci:v1", "amd64").await;
    let out = podman
        .push("localhost/ci:v1", &format!("{host}/team/ci:v1"), &[])
        .await;
    assert!(out.success(), "{out}");
    let push = podman.push("localhost/ci:v1", &app, &[]).await;
    assert!(
        !push.success(),
        "the robot pushed outside its scope:\n{push}"
    );
    assert!(push.mentions_any(&REFUSED), "{push}");
    podman.ok(&["logout", "--all"]).await;
    registry.registry.server.stop().await;
}
