//! The real containerd (Debian's 1.6, a daemon of this test binary's own, see
//! tests/common/clients.rs) and its `ctr` against in-process registries on each store pair: push,
//! pull after the local content is gone (unpacked with the native snapshotter), pull by digest, a
//! push to a second repository, a multi-platform OCI index pulled for one platform, and with
//! authentication on: `--user` with a password or a robot token, refusals.
//!
//! Images are generated (tests/common/images.rs: random layers, so no two tests or runs share one),
//! written as an OCI archive and imported with `ctr images import`.
//!
//! Needs containerd (scripts/ensure-tools.sh) and root, PostgreSQL and the test IPFS node. Without
//! containerd the tests skip loudly, unless `CI` is set.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::auth::start_auth_registry;
use common::clients::{self, stored_manifest, Ctr};
use common::images::*;
use common::StorePair;

const PASSWORD: &str = "containerd-password";

/// `image` (its manifest, or an index over `images`) as an OCI archive, for `ctr import`.
fn oci_archive(root: &Blob, blobs: &[&Blob]) -> tempfile::NamedTempFile {
    let layout = tempfile::tempdir().unwrap();
    write_oci_layout(layout.path(), "v1", root, blobs.iter().copied());
    let archive = tempfile::NamedTempFile::new().unwrap();
    let status = std::process::Command::new("tar")
        .arg("-C")
        .arg(layout.path())
        .arg("-cf")
        .arg(archive.path())
        .arg(".")
        .status()
        .expect("run tar");
    assert!(status.success(), "tar of the OCI layout");
    archive
}

/// Imports the archive as `<name>:v1`.
async fn import(ctr: &Ctr, archive: &tempfile::NamedTempFile, name: &str, all_platforms: bool) {
    let path = archive.path().to_str().unwrap();
    let mut args = vec!["images", "import", "--base-name", name];
    if all_platforms {
        args.push("--all-platforms");
    }
    args.push(path);
    ctr.ok(&args).await;
}

/// The digests of the content containerd holds.
async fn content(ctr: &Ctr) -> BTreeSet<String> {
    ctr.ok(&["content", "ls", "--quiet"])
        .await
        .stdout
        .lines()
        .map(str::to_owned)
        .collect()
}

async fn content_bytes(ctr: &Ctr, digest: &str) -> Vec<u8> {
    // Not through `Ctr::run`: its `Output` holds text, and blobs are bytes.
    let output = ctr
        .command(&["content", "get", digest])
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "ctr content get {digest}");
    output.stdout
}

/// Removes the image and, synchronously, the content only it held.
async fn remove(ctr: &Ctr, reference: &str) {
    ctr.ok(&["images", "rm", "--sync", reference]).await;
}

common::on_each_store_pair!(push_and_pull_by_tag_and_digest);
async fn push_and_pull_by_tag_and_digest(stores: StorePair) {
    let Some(ctr) = clients::containerd().await else {
        return;
    };
    let registry = stores.start_registry().await;
    let host = registry.host();
    let image = make_image(
        "amd64",
        "linux",
        &[LayerSpec::gzip(256 * 1024), LayerSpec::tar(128 * 1024)],
        false,
    );
    let archive = oci_archive(&image.manifest, &image.blobs());
    let name = format!("{host}/ctr/app");
    let tagged = format!("{name}:v1");
    import(&ctr, &archive, &name, false).await;

    ctr.ok(&["images", "push", "--plain-http", &tagged]).await;
    let stored = stored_manifest(&registry.base, "ctr/app", "v1")
        .await
        .expect("the pushed tag");
    assert_eq!(stored.digest, image.manifest.digest);
    assert!(stored.body == image.manifest.data, "the manifest's bytes");
    for blob in image.blobs() {
        assert!(
            common::blob_store_holds(&registry, &blob.data).await,
            "blob {} is not in the blob store",
            blob.digest
        );
    }

    // Pull after the local content is gone: every byte comes back from the registry.
    remove(&ctr, &tagged).await;
    let left = content(&ctr).await;
    assert!(
        image
            .blobs()
            .iter()
            .all(|blob| !left.contains(&blob.digest)),
        "content left after rm --sync: {left:?}"
    );
    ctr.ok(&["images", "pull", "--plain-http", &tagged]).await;
    for blob in std::iter::once(&image.manifest).chain(image.blobs()) {
        assert!(
            content_bytes(&ctr, &blob.digest).await == blob.data,
            "pulled {} differs",
            blob.digest
        );
    }

    let by_digest = format!("{name}@{}", image.manifest.digest);
    remove(&ctr, &tagged).await;
    ctr.ok(&["images", "pull", "--plain-http", &by_digest])
        .await;
    let listed = ctr.ok(&["images", "ls"]).await;
    assert!(listed.stdout.contains(&image.manifest.digest), "{listed}");

    // To a second repository (containerd may mount the blobs from the first).
    let copy = format!("{host}/ctr/copy:v1");
    ctr.ok(&["images", "tag", &by_digest, &copy]).await;
    ctr.ok(&["images", "push", "--plain-http", &copy]).await;
    let stored = stored_manifest(&registry.base, "ctr/copy", "v1")
        .await
        .expect("the copy");
    assert_eq!(stored.digest, image.manifest.digest);
    registry.server.stop().await;
}

common::on_each_store_pair!(multi_platform_index_pushes_and_pulls_one_platform);
async fn multi_platform_index_pushes_and_pulls_one_platform(stores: StorePair) {
    let Some(ctr) = clients::containerd().await else {
        return;
    };
    let registry = stores.start_registry().await;
    let host = registry.host();
    // The platforms share their first layer, as real multi-platform images often do.
    let shared = make_layer(0, LayerSpec::gzip(128 * 1024), false);
    let amd64 = make_image_from_layers(
        "amd64",
        "linux",
        vec![
            shared.clone(),
            make_layer(1, LayerSpec::gzip(64 * 1024), false),
        ],
        false,
    );
    let arm64 = make_image_from_layers(
        "arm64",
        "linux",
        vec![shared, make_layer(1, LayerSpec::gzip(64 * 1024), false)],
        false,
    );
    let index = make_index(&[amd64.clone(), arm64.clone()]);
    let mut blobs = vec![&amd64.manifest, &arm64.manifest];
    blobs.extend(amd64.blobs());
    blobs.extend(arm64.blobs());
    let archive = oci_archive(&index, &blobs);
    let name = format!("{host}/ctr/multi");
    let tagged = format!("{name}:v1");
    import(&ctr, &archive, &name, true).await;

    ctr.ok(&["images", "push", "--plain-http", &tagged]).await;
    let stored = stored_manifest(&registry.base, "ctr/multi", "v1")
        .await
        .expect("the pushed index");
    assert_eq!(stored.digest, index.digest);
    assert!(stored.body == index.data, "the index's bytes");
    for image in [&amd64, &arm64] {
        let manifest = stored_manifest(&registry.base, "ctr/multi", &image.manifest.digest)
            .await
            .expect("each platform's manifest");
        assert!(manifest.body == image.manifest.data);
    }

    remove(&ctr, &tagged).await;
    ctr.ok(&[
        "images",
        "pull",
        "--plain-http",
        "--platform",
        "linux/arm64",
        &tagged,
    ])
    .await;
    let held = content(&ctr).await;
    for blob in std::iter::once(&arm64.manifest).chain(arm64.blobs()) {
        assert!(
            held.contains(&blob.digest),
            "arm64 {} not pulled",
            blob.digest
        );
    }
    assert!(
        !held.contains(&amd64.manifest.digest) && !held.contains(&amd64.layers[1].blob.digest),
        "the amd64 image was pulled too: {held:?}"
    );
    registry.server.stop().await;
}

common::on_each_store_pair!(credentials_and_robot_tokens);
async fn credentials_and_robot_tokens(stores: StorePair) {
    let Some(ctr) = clients::containerd().await else {
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
    let image = make_image("amd64", "linux", &[LayerSpec::gzip(64 * 1024)], false);
    let archive = oci_archive(&image.manifest, &image.blobs());
    let name = format!("{host}/team/app");
    let app = format!("{name}:v1");
    import(&ctr, &archive, &name, false).await;
    let alice = format!("alice:{PASSWORD}");
    let refused = ["unauthorized", "denied", "forbidden", "insufficient_scope"];

    let push = |user: Option<String>, reference: String| {
        let ctr = &ctr;
        async move {
            let mut args = vec!["images", "push", "--plain-http"];
            if let Some(user) = &user {
                args.extend(["--user", user]);
            }
            args.push(&reference);
            ctr.run(&args).await
        }
    };
    let out = push(None, app.clone()).await;
    assert!(!out.success(), "anonymous push:\n{out}");
    assert!(out.mentions_any(&refused), "{out}");
    let out = push(Some("alice:not-her-password".to_owned()), app.clone()).await;
    assert!(!out.success(), "a wrong password:\n{out}");
    assert!(out.mentions_any(&refused), "{out}");
    let out = push(Some(alice.clone()), app.clone()).await;
    assert!(out.success(), "{out}");
    let outside = format!("{host}/other/app:v1");
    ctr.ok(&["images", "tag", &app, &outside]).await;
    let out = push(Some(alice.clone()), outside.clone()).await;
    assert!(!out.success(), "a push outside alice's grants:\n{out}");
    assert!(out.mentions_any(&refused), "{out}");

    remove(&ctr, &outside).await;
    remove(&ctr, &app).await;
    let out = ctr.run(&["images", "pull", "--plain-http", &app]).await;
    assert!(!out.success(), "anonymous pull of a private image:\n{out}");
    assert!(out.mentions_any(&refused), "{out}");
    ctr.ok(&["images", "pull", "--plain-http", "--user", &alice, &app])
        .await;

    // A robot token is a password, for its scope only.
    let robot = format!("ci:{robot}");
    let ci = format!("{host}/team/ci:v1");
    ctr.ok(&["images", "tag", &app, &ci]).await;
    let out = push(Some(robot.clone()), ci.clone()).await;
    assert!(out.success(), "{out}");
    let out = push(Some(robot), app.clone()).await;
    assert!(!out.success(), "the robot pushed outside its scope:\n{out}");
    assert!(out.mentions_any(&refused), "{out}");
    registry.registry.server.stop().await;
}
