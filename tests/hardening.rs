//! Requests that must stay cheap whatever was pushed (issue 13): measured on the registry
//! binary, with its peak memory read from /proc.

mod common;

use common::cli::{serve_command, Served};
use common::oci::{expect_status, Manifest, Oci, OCI_INDEX, OCI_MANIFEST};
use serde_json::{json, Value};

/// Peak resident memory of a process, in MiB.
fn peak_rss_mib(pid: u32) -> u64 {
    common::peak_rss_kib(pid) / 1024
}

/// The browse bomb: an index listing a child index 200 times, which lists the same leaf
/// manifest 200 times; the leaf carries a 1 MB annotation on the manifest and on its layer.
/// Expanded without bounds, one page view was 40,000 leaves (2–6 GB). Bounded: each
/// manifest is expanded once, the answer says what it left out, and memory stays flat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_tree_bomb_is_browsed_within_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(serve_command().env("IPFS_REGISTRY_DATA_DIR", dir.path())).await;
    let oci = Oci::new(&served.base);
    let repo = "bomb/app";

    let config = oci.push_blob(repo, b"{}").await;
    let layer = oci.push_blob(repo, b"a layer").await;
    let big = "x".repeat(1024 * 1024);
    let leaf = Manifest::new(
        OCI_MANIFEST,
        &json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": common::oci::descriptor("application/vnd.oci.image.config.v1+json", &config.data),
            "layers": [{
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": layer.digest,
                "size": layer.data.len(),
                "annotations": { "bomb": big },
            }],
            "annotations": { "bomb": big },
        }),
    );
    oci.push_manifest(repo, &leaf.digest, &leaf).await;
    let index_of = |child: &Manifest, media_type: &str| {
        Manifest::new(
            OCI_INDEX,
            &json!({
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": (0..200).map(|i| json!({
                    "mediaType": media_type,
                    "digest": child.digest,
                    "size": child.content.len(),
                    "platform": { "os": "linux", "architecture": format!("arch{i}") },
                })).collect::<Vec<_>>(),
            }),
        )
    };
    let child = index_of(&leaf, OCI_MANIFEST);
    oci.push_manifest(repo, &child.digest, &child).await;
    let top = index_of(&child, OCI_INDEX);
    oci.push_manifest(repo, "bomb", &top).await;

    let before = peak_rss_mib(served.pid());
    let started = std::time::Instant::now();
    let answer = oci
        .get(&format!("/v2/_ext/{repo}/manifests/bomb/layers"))
        .await;
    let answer: Value = expect_status(answer, 200).await.json().await.unwrap();
    let page = oci.get(&format!("/ui/image/{repo}@bomb")).await;
    let page = expect_status(page, 200).await.text().await.unwrap();
    let took = started.elapsed();
    let after = peak_rss_mib(served.pid());

    // Every entry of the top index is listed (within 256 manifests per answer); the child
    // index is expanded once, and its leaf once.
    let children = answer["manifests"].as_array().unwrap();
    assert_eq!(children.len(), 200, "{}", children.len());
    assert!(children[1]["repeated"].as_bool().unwrap_or(false));
    let expanded = &children[0];
    let grandchildren = expanded["manifests"].as_array().unwrap();
    assert_eq!(
        grandchildren.len() as u64 + expanded["moreManifests"].as_u64().unwrap_or(0),
        200
    );
    let leaf_view = &grandchildren[0];
    assert_eq!(leaf_view["digest"], leaf.digest.as_str());
    assert_eq!(
        leaf_view["layers"][1]["annotationsOmitted"], true,
        "{leaf_view}"
    );
    assert!(
        page.contains("linux/arch199"),
        "every platform of the top index is listed"
    );
    assert!(page.len() < 1024 * 1024, "a page of {} bytes", page.len());

    assert!(
        after.saturating_sub(before) < 100 && after < 200,
        "peak RSS {before} MiB before, {after} MiB after browsing the bomb"
    );
    assert!(
        took < std::time::Duration::from_secs(10),
        "browsing took {took:?}"
    );
}

/// What the registry creates under its data directory is its own: the directories 0700,
/// the databases (password hashes), their journals, blob files and locks 0600.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_directory_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let data_dir = root.path().join("data");
    let served = Served::start(serve_command().env("IPFS_REGISTRY_DATA_DIR", &data_dir)).await;
    Oci::new(&served.base)
        .push_image("private/app", Some("1"), 1)
        .await;
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    let mut checked = 0;
    let mut pending = vec![data_dir.clone()];
    while let Some(dir) = pending.pop() {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                assert_eq!(mode(&path), 0o600, "{}", path.display());
                checked += 1;
            }
        }
    }
    // metadata.sqlite (+ -wal, -shm), blocks.sqlite (+ journals), locks, three blob files.
    assert!(checked >= 8, "{checked} files");
    drop(served);
}

/// A file system unmounted when dropped.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// A full disk is the store being unavailable for now: 503, never a 500, nothing half
/// stored, and everything works again once space is freed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_unavailable_and_loses_nothing() {
    use std::io::Write;
    let root = tempfile::tempdir().unwrap();
    let mount = root.path().join("small");
    std::fs::create_dir(&mount).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(&mount)
        .status()
        .expect("run mount");
    assert!(mounted.success(), "mounting a small tmpfs needs root");
    let _mounted = Mounted(mount.clone());
    let data_dir = mount.join("data");
    let served = Served::start(serve_command().env("IPFS_REGISTRY_DATA_DIR", &data_dir)).await;
    let oci = Oci::new(&served.base);
    let repo = "full/app";
    let image = oci.push_image(repo, Some("1"), 1).await;

    let filler_path = mount.join("filler");
    let mut filler = std::fs::File::create(&filler_path).unwrap();
    let block = vec![0u8; 64 * 1024];
    while filler.write_all(&block).is_ok() {}
    let _ = filler.sync_all();

    let data = common::oci::random_bytes(300_000);
    let digest = common::oci::sha256(&data);
    let refused = oci.post_blob(repo, &data, &digest).await;
    assert_eq!(refused.status(), 503, "{}", refused.text().await.unwrap());
    let tagged = oci
        .put_manifest(
            repo,
            "2",
            &image.manifest.media_type,
            &image.manifest.content,
        )
        .await;
    assert!(
        [201, 503].contains(&tagged.status().as_u16()),
        "a tag on a full disk: {}",
        tagged.status()
    );
    let gone = oci.head(&format!("/v2/{repo}/blobs/{digest}")).await;
    assert_eq!(gone.status(), 404, "the refused blob is not half there");

    drop(filler);
    std::fs::remove_file(&filler_path).unwrap();
    oci.push_blob(repo, &data).await;
    let pulled = oci.get(&format!("/v2/{repo}/manifests/1")).await;
    let pulled = expect_status(pulled, 200).await;
    assert_eq!(pulled.bytes().await.unwrap(), image.manifest.content);
    drop(served);
}

/// The Bearer challenge names the registry itself: forwarding headers count only from a
/// trusted proxy, and nothing a client sends adds a parameter to the header.
#[tokio::test]
async fn challenges_are_not_steered_by_the_client() {
    async fn challenge(base: &str, headers: &[(&str, &str)]) -> String {
        let mut request = reqwest::Client::new().get(format!("{base}/v2/"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401);
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned()
    }
    let forwarded: [&[(&str, &str)]; 2] = [
        &[
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-proto", "https"),
        ],
        &[("forwarded", "host=evil.example;proto=https")],
    ];

    let direct = common::auth::start_auth_registry(common::StorePair::PostgresIpfsNode).await;
    let own_realm = format!("Bearer realm=\"{}/token\",", direct.base());
    for headers in forwarded {
        let header = challenge(direct.base(), headers).await;
        assert!(header.starts_with(&own_realm), "{headers:?}: {header}");
    }
    // A Host that is no host name falls back to the address the registry listens on.
    let header = challenge(direct.base(), &[("host", "r\",realm=\"http://evil")]).await;
    assert!(header.starts_with(&own_realm), "{header}");
    assert_eq!(header.matches("realm=").count(), 1, "{header}");

    let proxied =
        common::auth::start_auth_registry_with(common::StorePair::PostgresIpfsNode, |config| {
            config.auth.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
        })
        .await;
    for headers in forwarded {
        let header = challenge(proxied.base(), headers).await;
        assert!(
            header.starts_with("Bearer realm=\"https://evil.example/token\","),
            "{headers:?}: {header}"
        );
    }
}
