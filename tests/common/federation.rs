//! What the image-layout suites share (tests/layout.rs, tests/import.rs): the images they
//! push, and pushing them with skopeo.

use super::images::*;
use super::skopeo::Skopeo;
use super::TestRegistry;

/// An HTTP client for the suites' own requests (layouts, CARs, imports), with a timeout
/// long enough for a busy machine.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(120))
        .build()
        .unwrap()
}

/// The image CID of `reference` in `repo`, once the publisher published it (it runs after
/// the push answered).
pub async fn image_cid(registry: &TestRegistry, repo: &str, reference: &str) -> cid::Cid {
    let body = super::oci::Oci::new(registry.url("/").as_str())
        .published_layout(repo, reference)
        .await;
    let cid: cid::Cid = body["cid"].as_str().expect("cid").parse().expect("a CID");
    assert_eq!(body["path"], format!("/ipfs/{cid}"));
    cid
}

/// A small image with one layer over a chunk (a multi-block file in the layout).
pub fn small_image() -> Image {
    make_image(
        "amd64",
        "linux",
        &[LayerSpec::gzip(600 * 1024), LayerSpec::tar(20 * 1024)],
        false,
    )
}

/// `image` pushed to `registry` as `target` (`repo:tag`), digests preserved.
pub async fn push(skopeo: &Skopeo, registry: &TestRegistry, image: &Image, target: &str) {
    let source = tempfile::tempdir().unwrap();
    write_oci_layout(source.path(), "src", &image.manifest, image.blobs());
    skopeo
        .copy(
            &format!("oci:{}:src", source.path().display()),
            &format!("docker://{}/{target}", registry.host()),
            &["--preserve-digests"],
        )
        .await;
}

/// An index of two platforms sharing a layer: [`small_image`] and an arm64 image.
pub struct PlatformIndex {
    pub amd64: Image,
    pub arm64: Image,
    pub index: Blob,
}

impl PlatformIndex {
    pub fn new() -> PlatformIndex {
        let amd64 = small_image();
        let shared = amd64.layers[1].clone();
        let arm64 = make_image_from_layers(
            "arm64",
            "linux",
            vec![shared, make_layer(1, LayerSpec::gzip(300 * 1024), false)],
            false,
        );
        let index = make_index(&[amd64.clone(), arm64.clone()]);
        PlatformIndex {
            amd64,
            arm64,
            index,
        }
    }

    /// Both child manifests and every blob of both images (the shared layer twice).
    pub fn contents(&self) -> Vec<&Blob> {
        let mut contents: Vec<&Blob> = vec![&self.amd64.manifest, &self.arm64.manifest];
        contents.extend(self.amd64.blobs());
        contents.extend(self.arm64.blobs());
        contents
    }

    /// Pushes the index and everything in it (`skopeo copy --all`) as `target`
    /// (`repo:tag`).
    pub async fn push(&self, skopeo: &Skopeo, registry: &TestRegistry, target: &str) {
        let source = tempfile::tempdir().unwrap();
        write_oci_layout(source.path(), "multi", &self.index, self.contents());
        skopeo
            .copy(
                &format!("oci:{}:multi", source.path().display()),
                &format!("docker://{}/{target}", registry.host()),
                &["--all", "--preserve-digests"],
            )
            .await;
    }
}
