//! skopeo against an auth-enabled registry: it follows the Bearer challenge to `/token`
//! with `--dest-creds`/`--src-creds` (a password or a robot token), pushes and pulls
//! byte-for-byte; anonymous pulls work for public repositories only; refused operations
//! fail.
//!
//! Needs skopeo (scripts/ensure-tools.sh), PostgreSQL and the test IPFS node.

mod common;

use std::time::Duration;

use common::auth::*;
use common::images::*;
use common::skopeo::Skopeo;
use common::StorePair;

const PASSWORD: &str = "skopeo-password";

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn assert_pulled(dir: &std::path::Path, image: &Image) {
    let layout = OciLayout::open(dir);
    let pulled = layout.all_blobs();
    for blob in image.blobs() {
        assert!(
            pulled.get(&blob.digest) == Some(&blob.data),
            "blob {} did not come back byte-for-byte (pulled: {:?})",
            blob.digest,
            pulled.iter().map(|(d, b)| (d, b.len())).collect::<Vec<_>>()
        );
    }
}

common::on_each_store_pair!(skopeo_pushes_and_pulls_with_credentials);
async fn skopeo_pushes_and_pulls_with_credentials(stores: StorePair) {
    let registry = start_auth_registry(stores).await;
    registry.add_user("root", PASSWORD, true).await;
    registry.add_user("pusher", PASSWORD, false).await;
    registry.add_user("reader", PASSWORD, false).await;
    registry.add_user("ci", PASSWORD, false).await;
    registry.grant("pusher", "team/*", "pull,push").await;
    registry.grant("reader", "team/app", "pull").await;
    registry.grant("ci", "team/*", "pull,push").await;
    registry.make_public("pub/*").await;
    let host = registry.registry.host();
    let skopeo = Skopeo::new();

    let image = make_image(
        "amd64",
        "linux",
        &[LayerSpec::gzip(256 * 1024), LayerSpec::tar(600 * 1024)],
        false,
    );
    let source = tempfile::tempdir().unwrap();
    write_oci_layout(source.path(), "v1", &image.manifest, image.blobs());
    let source = format!("oci:{}:v1", source.path().display());
    let team_app = format!("docker://{host}/team/app:v1");
    let pub_lib = format!("docker://{host}/pub/lib:v1");
    let creds = |user: &str| format!("{user}:{PASSWORD}");

    // Without credentials, and with a user who may only pull: refused.
    let out = skopeo.copy_with_creds(&source, &team_app, None, None).await;
    assert!(!out.status.success(), "anonymous push must fail");
    let out = skopeo
        .copy_with_creds(&source, &team_app, None, Some(&creds("reader")))
        .await;
    assert!(!out.status.success(), "reader must not push");
    let out = skopeo
        .copy_with_creds(&source, &team_app, None, Some("pusher:wrong-password"))
        .await;
    assert!(!out.status.success(), "a wrong password must fail");

    let out = skopeo
        .copy_with_creds(&source, &team_app, None, Some(&creds("pusher")))
        .await;
    assert!(out.status.success(), "push: {}", stderr(&out));
    let out = skopeo
        .copy_with_creds(&source, &pub_lib, None, Some(&creds("root")))
        .await;
    assert!(out.status.success(), "push: {}", stderr(&out));

    // Pull with credentials.
    let pulled = tempfile::tempdir().unwrap();
    let out = skopeo
        .copy_with_creds(
            &team_app,
            &format!("oci:{}:v1", pulled.path().display()),
            Some(&creds("reader")),
            None,
        )
        .await;
    assert!(out.status.success(), "pull: {}", stderr(&out));
    assert_pulled(pulled.path(), &image);

    // Anonymous: the public repository yes, the private one no.
    let public = tempfile::tempdir().unwrap();
    let out = skopeo
        .copy_with_creds(
            &pub_lib,
            &format!("oci:{}:v1", public.path().display()),
            None,
            None,
        )
        .await;
    assert!(
        out.status.success(),
        "anonymous public pull: {}",
        stderr(&out)
    );
    assert_pulled(public.path(), &image);
    let private = tempfile::tempdir().unwrap();
    let out = skopeo
        .copy_with_creds(
            &team_app,
            &format!("oci:{}:v1", private.path().display()),
            None,
            None,
        )
        .await;
    assert!(!out.status.success(), "anonymous private pull must fail");

    // A CI robot token works as the password, within its scope only.
    let robot = registry
        .robot_token(
            "ci",
            &["repository:team/ci:pull,push"],
            Duration::from_secs(600),
        )
        .await;
    let robot_creds = format!("ci:{robot}");
    let out = skopeo
        .copy_with_creds(
            &source,
            &format!("docker://{host}/team/ci:v1"),
            None,
            Some(&robot_creds),
        )
        .await;
    assert!(out.status.success(), "robot push: {}", stderr(&out));
    let out = skopeo
        .copy_with_creds(
            &source,
            &format!("docker://{host}/team/other:v1"),
            None,
            Some(&robot_creds),
        )
        .await;
    assert!(
        !out.status.success(),
        "robot push outside its scope must fail"
    );
    registry.registry.server.stop().await;
}
