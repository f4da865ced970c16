//! Real-client round trips: skopeo pushes generated images (OCI, Docker schema2, a
//! multi-platform OCI index; layers of 10+ MiB of random bytes) to an in-process registry
//! and pulls them back; every manifest and blob must come back byte-for-byte. Then the
//! bytes are checked where they live: each layer's CID (from the registry's database) is
//! pinned on the IPFS node and `cat` gives bytes hashing to the layer's digest (on the
//! embedded stores: it is the CID the node would give, and the gateway serves those bytes),
//! on each store pair. Pushing the
//! same image to other repositories (a full re-upload through a second replica, and
//! cross-repository mounts) must not store any blob twice nor drop any pin. An immutable
//! tag refuses skopeo's attempt to move it, with a message skopeo shows.
//!
//! Needs skopeo (scripts/ensure-tools.sh), PostgreSQL and the test IPFS node.

mod common;

use common::sql::Sql;
use common::StorePair;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use common::images::*;
use common::skopeo::Skopeo;
use sha2::{Digest as _, Sha256};
use tempfile::TempDir;

/// Registry logs for debugging: `IPFS_REGISTRY_LOG=debug cargo test --test skopeo_roundtrip`.
fn init_tracing() {
    if let Ok(filter) = std::env::var("IPFS_REGISTRY_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// Asserts equal bytes without dumping megabytes into the failure message.
fn assert_same_bytes(what: &str, expected: &[u8], actual: &[u8]) {
    if expected != actual {
        panic!(
            "{what}: bytes differ: expected {} bytes ({}), got {} bytes ({}){}",
            expected.len(),
            sha256_digest(expected),
            actual.len(),
            sha256_digest(actual),
            if actual.len() < 4096 {
                format!(": {}", String::from_utf8_lossy(actual))
            } else {
                String::new()
            }
        );
    }
}

fn oci_ref(dir: &Path, tag: &str) -> String {
    format!("oci:{}:{tag}", dir.display())
}

fn docker_ref(registry: &common::TestRegistry, repo: &str, reference: &str) -> String {
    if reference.starts_with("sha256:") {
        format!("docker://{}/{repo}@{reference}", registry.host())
    } else {
        format!("docker://{}/{repo}:{reference}", registry.host())
    }
}

/// The three-layer OCI image of the round trip: 10 MiB (gzip), 12 MiB (plain tar),
/// 16 MiB (gzip) of random bytes.
fn big_oci_image() -> Image {
    make_image(
        "amd64",
        "linux",
        &[
            LayerSpec::gzip(10 * MIB),
            LayerSpec::tar(12 * MIB),
            LayerSpec::gzip(16 * MIB),
        ],
        false,
    )
}

/// Writes `image` as an OCI layout tagged `tag` in a new temporary directory.
fn oci_source(image: &Image, tag: &str) -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix("skopeo-src-")
        .tempdir()
        .unwrap();
    write_oci_layout(dir.path(), tag, &image.manifest, image.blobs());
    dir
}

/// Asserts that the OCI layout at `dir` holds exactly `root` under `tag` plus `blobs`,
/// all byte-identical, and nothing else.
fn assert_oci_layout(dir: &Path, tag: &str, root: &Blob, blobs: &[&Blob]) {
    let layout = OciLayout::open(dir);
    let descriptor = layout.tagged(tag);
    assert_eq!(descriptor["digest"], root.digest.as_str(), "{descriptor}");
    assert_eq!(
        descriptor["mediaType"],
        root.media_type.as_str(),
        "{descriptor}"
    );
    assert_eq!(descriptor["size"], root.data.len(), "{descriptor}");

    let mut expected: BTreeMap<&str, &Blob> = BTreeMap::new();
    expected.insert(&root.digest, root);
    for blob in blobs {
        expected.insert(&blob.digest, blob);
    }
    let actual = layout.all_blobs();
    assert_eq!(
        actual.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        expected.keys().copied().collect::<BTreeSet<_>>(),
        "the pulled layout holds other blobs than the pushed image"
    );
    for (digest, blob) in &expected {
        assert_same_bytes(
            &format!("pulled blob {digest} ({})", blob.media_type),
            &blob.data,
            &actual[*digest],
        );
    }
}

/// A row of the `blobs` table.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BlobRow {
    cid: String,
    size: i64,
    import_profile: String,
}

/// The whole `blobs` table, `digest → row`.
async fn blob_rows(db: &Sql) -> BTreeMap<String, BlobRow> {
    let rows = db
        .rows(
            "SELECT digest, cid, CAST(size AS TEXT), import_profile FROM blobs",
            &[],
        )
        .await;
    let mut table = BTreeMap::new();
    for row in rows {
        let text = |i: usize| row[i].clone().unwrap_or_default();
        let digest = text(0);
        let previous = table.insert(
            digest.clone(),
            BlobRow {
                cid: text(1),
                size: text(2).parse().expect("a size"),
                import_profile: text(3),
            },
        );
        assert!(previous.is_none(), "two blob rows for {digest}");
    }
    table
}

/// Repositories (by name) a blob is linked to.
async fn blob_links(db: &Sql, digest: &str) -> BTreeSet<String> {
    db.rows(
        "SELECT r.name FROM repository_blobs l JOIN repositories r ON r.id = l.repository_id \
         WHERE l.digest = $1",
        &[digest],
    )
    .await
    .into_iter()
    .filter_map(|row| row[0].clone())
    .collect()
}

fn ipfs_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

/// POSTs an RPC call to the IPFS node.
async fn ipfs_call(path_and_query: &str) -> reqwest::Response {
    let url = common::ipfs_url()
        .join(path_and_query)
        .expect("IPFS RPC URL");
    ipfs_client()
        .post(url.clone())
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"))
}

/// Whether the IPFS node lists `cid` among its recursive pins. Accepts both response shapes:
/// `{"Keys":{"<cid>":{"Type":"recursive"}}}` and streamed `{"Cid":"<cid>","Type":..}` lines.
async fn ipfs_pinned_recursively(cid: &cid::Cid) -> Result<(), String> {
    let response = ipfs_call(&format!("api/v0/pin/ls?arg={cid}&type=recursive")).await;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if !status.is_success() {
        return Err(format!("pin/ls answered {status}: {text}"));
    }
    let same = |s: &str| s.parse::<cid::Cid>().is_ok_and(|c| c == *cid);
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let value: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| format!("pin/ls line is not JSON ({e}): {line}"))?;
        if let Some(keys) = value["Keys"].as_object() {
            if keys
                .iter()
                .any(|(k, v)| same(k) && v["Type"].as_str().is_none_or(|t| t == "recursive"))
            {
                return Ok(());
            }
        }
        if value["Cid"].as_str().is_some_and(same)
            && value["Type"].as_str().is_none_or(|t| t == "recursive")
        {
            return Ok(());
        }
    }
    Err(format!("pin/ls does not list {cid} as recursive: {text}"))
}

/// `cat`s `cid` from the IPFS node, returning the sha256 digest and length of its bytes.
async fn ipfs_cat_digest(cid: &cid::Cid) -> (String, u64) {
    let mut response = ipfs_call(&format!("api/v0/cat?arg={cid}")).await;
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        panic!("cat {cid} answered {status}: {text}");
    }
    let mut hasher = Sha256::new();
    let mut length = 0u64;
    while let Some(chunk) = response
        .chunk()
        .await
        .unwrap_or_else(|e| panic!("cat {cid}: {e}"))
    {
        length += chunk.len() as u64;
        hasher.update(&chunk);
    }
    (format!("sha256:{}", hex::encode(hasher.finalize())), length)
}

/// Each blob has its row (size, import profile, a CIDv1), its CID is pinned recursively on
/// the IPFS node, and `cat` of the CID gives exactly the blob's bytes (by sha256 and length).
/// A blob no larger than one chunk is a raw-codec CID whose multihash is its sha256 digest.
async fn assert_stored_in_ipfs(registry: &common::TestRegistry, db: &Sql, blobs: &[&Blob]) {
    let rows = blob_rows(db).await;
    let chunk_size = u64::from(registry.config.import_profile.chunk_size);
    for blob in blobs {
        let row = rows.get(&blob.digest).unwrap_or_else(|| {
            panic!(
                "no blobs row for {} ({}); rows: {rows:?}",
                blob.digest, blob.media_type
            )
        });
        assert_eq!(row.size, blob.data.len() as i64, "{}: size", blob.digest);
        assert!(
            !row.import_profile.is_empty(),
            "{}: no import profile",
            blob.digest
        );
        let cid: cid::Cid = row
            .cid
            .parse()
            .unwrap_or_else(|e| panic!("{}: stored CID {:?} ({e})", blob.digest, row.cid));
        assert_eq!(cid.version(), cid::Version::V1, "{}: {cid}", blob.digest);
        if blob.data.len() as u64 <= chunk_size {
            assert_eq!(cid.codec(), 0x55, "{}: {cid} is not raw", blob.digest);
            assert_eq!(
                cid.hash().code(),
                0x12,
                "{}: {cid} is not sha2-256",
                blob.digest
            );
            assert_eq!(
                hex::encode(cid.hash().digest()),
                digest_hex(&blob.digest),
                "{}: {cid} hashes other bytes",
                blob.digest
            );
        }
        if registry.config.ipfs.url.is_none() {
            // Embedded store: the CID the IPFS node would give these bytes, and the bytes
            // behind it through the built-in gateway.
            assert_eq!(cid, common::cid_of_blob(&blob.data), "{}", blob.digest);
            let served = reqwest::get(registry.url(&format!("/ipfs/{cid}")))
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            assert_eq!(sha256_digest(&served), blob.digest, "gateway {cid}");
            continue;
        }
        if let Err(e) = ipfs_pinned_recursively(&cid).await {
            panic!("{} (CID {cid}) is not pinned: {e}", blob.digest);
        }
        let (digest, length) = ipfs_cat_digest(&cid).await;
        assert_eq!(length, blob.data.len() as u64, "cat {cid}: length");
        assert_eq!(digest, blob.digest, "cat {cid}: sha256 of the bytes");
    }
}

#[test]
fn generated_layers_are_valid_tar_and_gzip() {
    // The image writer itself: gunzip and tar (the system tools) must accept the layers, and
    // the diff_id must be the uncompressed tar's digest.
    let layer = make_layer(7, LayerSpec::gzip(300_000), false);
    let dir = tempfile::tempdir().unwrap();
    let gz = dir.path().join("layer.tar.gz");
    std::fs::write(&gz, &layer.blob.data).unwrap();
    let gunzip = std::process::Command::new("gzip")
        .arg("-dc")
        .arg(&gz)
        .output()
        .expect("run gzip");
    assert!(
        gunzip.status.success(),
        "gzip -dc: {}",
        String::from_utf8_lossy(&gunzip.stderr)
    );
    assert_eq!(sha256_digest(&gunzip.stdout), layer.diff_id);
    let tar_file = dir.path().join("layer.tar");
    std::fs::write(&tar_file, &gunzip.stdout).unwrap();
    let list = std::process::Command::new("tar")
        .arg("-tvf")
        .arg(&tar_file)
        .output()
        .expect("run tar");
    assert!(
        list.status.success(),
        "tar -t: {}",
        String::from_utf8_lossy(&list.stderr)
    );
    let listing = String::from_utf8_lossy(&list.stdout);
    assert!(
        listing.contains("file-7.bin") && listing.contains("300000"),
        "{listing}"
    );
    let extract = dir.path().join("x");
    std::fs::create_dir(&extract).unwrap();
    let status = std::process::Command::new("tar")
        .arg("-xf")
        .arg(&tar_file)
        .arg("-C")
        .arg(&extract)
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        std::fs::metadata(extract.join("file-7.bin")).unwrap().len(),
        300_000
    );

    // The config's diff_ids follow the layers.
    let image = make_image(
        "arm64",
        "linux",
        &[LayerSpec::tar(1000), LayerSpec::gzip(2000)],
        false,
    );
    let config: serde_json::Value = serde_json::from_slice(&image.config.data).unwrap();
    assert_eq!(config["architecture"], "arm64");
    assert_eq!(config["os"], "linux");
    let diff_ids: Vec<&str> = config["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert_eq!(
        diff_ids,
        [&image.layers[0].diff_id, &image.layers[1].diff_id]
    );
    assert_eq!(image.layers[0].diff_id, image.layers[0].blob.digest);
}

common::on_each_store_pair!(
    oci_image_round_trip,
    flavor = "multi_thread",
    worker_threads = 4
);
async fn oci_image_round_trip(stores: StorePair) {
    init_tracing();
    let started = Instant::now();
    let registry = stores.start_registry().await;
    let skopeo = Skopeo::new();
    let image = big_oci_image();
    let source = oci_source(&image, "v1");
    let repo = "skopeo/oci-image";
    eprintln!(
        "{} ; image generated in {:?}",
        common::skopeo::version(),
        started.elapsed()
    );

    let push = Instant::now();
    skopeo
        .copy(
            &oci_ref(source.path(), "v1"),
            &docker_ref(&registry, repo, "v1"),
            &["--preserve-digests"],
        )
        .await;
    let push = push.elapsed();

    let pulled = tempfile::tempdir().unwrap();
    let pull = Instant::now();
    skopeo
        .copy(
            &docker_ref(&registry, repo, "v1"),
            &oci_ref(pulled.path(), "v1"),
            &["--preserve-digests"],
        )
        .await;
    let pull = pull.elapsed();
    assert_oci_layout(pulled.path(), "v1", &image.manifest, &image.blobs());

    // Pulling by digest gives the same image.
    let by_digest = tempfile::tempdir().unwrap();
    skopeo
        .copy(
            &docker_ref(&registry, repo, &image.manifest.digest),
            &oci_ref(by_digest.path(), "pinned"),
            &["--preserve-digests"],
        )
        .await;
    assert_oci_layout(by_digest.path(), "pinned", &image.manifest, &image.blobs());

    // inspect --raw: the manifest's exact bytes, by tag and by digest; --config: the config.
    let raw = skopeo
        .inspect_raw(&docker_ref(&registry, repo, "v1"), false)
        .await;
    assert_same_bytes("inspect --raw by tag", &image.manifest.data, &raw);
    let raw = skopeo
        .inspect_raw(&docker_ref(&registry, repo, &image.manifest.digest), false)
        .await;
    assert_same_bytes("inspect --raw by digest", &image.manifest.data, &raw);
    let config = skopeo
        .inspect_raw(&docker_ref(&registry, repo, "v1"), true)
        .await;
    assert_same_bytes("inspect --config --raw", &image.config.data, &config);

    // A second tag, copied registry to registry (every blob is already there).
    skopeo
        .copy(
            &docker_ref(&registry, repo, "v1"),
            &docker_ref(&registry, repo, "latest"),
            &["--preserve-digests"],
        )
        .await;
    let raw = skopeo
        .inspect_raw(&docker_ref(&registry, repo, "latest"), false)
        .await;
    assert_same_bytes(
        "inspect --raw of the copied tag",
        &image.manifest.data,
        &raw,
    );

    let (repository, tags) = skopeo.list_tags(&registry.host(), repo).await;
    assert!(
        repository.ends_with(repo),
        "list-tags names repository {repository:?}"
    );
    let tags: BTreeSet<String> = tags.into_iter().collect();
    assert_eq!(
        tags,
        BTreeSet::from(["latest".to_owned(), "v1".to_owned()]),
        "list-tags"
    );

    let total: usize = image.blobs().iter().map(|b| b.data.len()).sum();
    eprintln!(
        "oci_image_round_trip: {:.1} MiB; push {push:?}, pull {pull:?}, whole test {:?}",
        total as f64 / MIB as f64,
        started.elapsed()
    );
}

common::on_each_store_pair!(
    oci_layers_are_pinned_and_readable_in_ipfs,
    flavor = "multi_thread",
    worker_threads = 4
);
async fn oci_layers_are_pinned_and_readable_in_ipfs(stores: StorePair) {
    init_tracing();
    let registry = stores.start_registry().await;
    let skopeo = Skopeo::new();
    let image = big_oci_image();
    let source = oci_source(&image, "v1");
    skopeo
        .copy(
            &oci_ref(source.path(), "v1"),
            &docker_ref(&registry, "skopeo/pinned", "v1"),
            &["--preserve-digests"],
        )
        .await;

    let db = common::sql::metadata(&registry).await;
    assert_stored_in_ipfs(&registry, &db, &image.blobs()).await;
    for blob in image.blobs() {
        assert_eq!(
            blob_links(&db, &blob.digest).await,
            BTreeSet::from(["skopeo/pinned".to_owned()]),
            "{}: repository links",
            blob.digest
        );
    }
}

common::on_each_store_pair!(
    second_push_to_another_repo_stores_each_blob_once,
    flavor = "multi_thread",
    worker_threads = 4
);
async fn second_push_to_another_repo_stores_each_blob_once(stores: StorePair) {
    init_tracing();
    let registry = stores.start_registry().await;
    let image = big_oci_image();
    let source = oci_source(&image, "v1");
    let first = Skopeo::new();
    first
        .copy(
            &oci_ref(source.path(), "v1"),
            &docker_ref(&registry, "dedup/first", "v1"),
            &["--preserve-digests"],
        )
        .await;
    let db = common::sql::metadata(&registry).await;
    let before = blob_rows(&db).await;
    let expected: BTreeSet<&str> = image.blobs().iter().map(|b| b.digest.as_str()).collect();
    assert_eq!(
        before.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        expected,
        "blob rows after the first push"
    );

    // skopeo remembers where it pushed blobs (running as root, in the system-wide
    // /var/lib/containers/cache, whatever HOME says) and mounts them from there when it pushes
    // to the same registry again. A second replica on the same database and IPFS node is a
    // registry it has never seen, so there it uploads every byte again...
    let replica = common::start_registry_from(registry.config.clone()).await;
    let second = Instant::now();
    Skopeo::new()
        .copy(
            &oci_ref(source.path(), "v1"),
            &docker_ref(&replica, "dedup/second", "v1"),
            &["--preserve-digests"],
        )
        .await;
    let second = second.elapsed();
    // ...and through the first replica it mounts them from `dedup/first` instead.
    first
        .copy(
            &oci_ref(source.path(), "v1"),
            &docker_ref(&registry, "dedup/third", "v1"),
            &["--preserve-digests"],
        )
        .await;
    eprintln!("second push of the same image (full upload to a second replica) took {second:?}");

    let after = blob_rows(&db).await;
    assert_eq!(
        after, before,
        "pushing the same image again changed the blob rows"
    );
    for blob in image.blobs() {
        assert_eq!(
            blob_links(&db, &blob.digest).await,
            BTreeSet::from([
                "dedup/first".to_owned(),
                "dedup/second".to_owned(),
                "dedup/third".to_owned()
            ]),
            "{}: repository links",
            blob.digest
        );
    }
    // Finishing the duplicate uploads must not have dropped the pins the blob rows rely on.
    assert_stored_in_ipfs(&registry, &db, &image.blobs()).await;
    let open = db
        .value("SELECT CAST(count(*) AS TEXT) FROM upload_sessions", &[])
        .await;
    assert_eq!(open, "0", "upload sessions left open after the pushes");

    // Every repository serves the image.
    for repo in ["dedup/first", "dedup/second", "dedup/third"] {
        let pulled = tempfile::tempdir().unwrap();
        first
            .copy(
                &docker_ref(&registry, repo, "v1"),
                &oci_ref(pulled.path(), "v1"),
                &["--preserve-digests"],
            )
            .await;
        assert_oci_layout(pulled.path(), "v1", &image.manifest, &image.blobs());
    }
}

common::on_each_store_pair!(
    docker_schema2_round_trip,
    flavor = "multi_thread",
    worker_threads = 4
);
async fn docker_schema2_round_trip(stores: StorePair) {
    init_tracing();
    let registry = stores.start_registry().await;
    let skopeo = Skopeo::new();
    let image = make_image(
        "amd64",
        "linux",
        &[LayerSpec::gzip(10 * MIB), LayerSpec::gzip(11 * MIB)],
        true,
    );
    let source = tempfile::tempdir().unwrap();
    write_dir_layout(source.path(), &image);
    let repo = "skopeo/docker-image";

    skopeo
        .copy(
            &format!("dir:{}", source.path().display()),
            &docker_ref(&registry, repo, "v2"),
            &["--preserve-digests"],
        )
        .await;
    let pulled = tempfile::tempdir().unwrap();
    skopeo
        .copy(
            &docker_ref(&registry, repo, "v2"),
            &format!("dir:{}", pulled.path().display()),
            &["--preserve-digests"],
        )
        .await;

    let files = read_dir_layout(pulled.path());
    let manifest = files.get("manifest.json").expect("pulled manifest.json");
    assert_same_bytes("pulled manifest.json", &image.manifest.data, manifest);
    let parsed: serde_json::Value = serde_json::from_slice(manifest).unwrap();
    assert_eq!(parsed["mediaType"], DOCKER_MANIFEST);
    let mut expected_files: BTreeSet<String> = image
        .blobs()
        .iter()
        .map(|b| digest_hex(&b.digest).to_owned())
        .collect();
    expected_files.insert("manifest.json".to_owned());
    expected_files.insert("version".to_owned());
    assert_eq!(
        files.keys().cloned().collect::<BTreeSet<_>>(),
        expected_files,
        "files of the pulled dir: layout"
    );
    for blob in image.blobs() {
        assert_same_bytes(
            &format!("pulled blob {} ({})", blob.digest, blob.media_type),
            &blob.data,
            &files[digest_hex(&blob.digest)],
        );
    }

    let raw = skopeo
        .inspect_raw(&docker_ref(&registry, repo, "v2"), false)
        .await;
    assert_same_bytes("inspect --raw", &image.manifest.data, &raw);

    // The registry keeps the Docker media type.
    let response = reqwest::Client::new()
        .get(registry.url(&format!("/v2/{repo}/manifests/v2")))
        .header("accept", DOCKER_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        DOCKER_MANIFEST
    );
    assert_eq!(
        response.headers()["docker-content-digest"]
            .to_str()
            .unwrap(),
        image.manifest.digest
    );
}

common::on_each_store_pair!(
    multi_platform_index_round_trip,
    flavor = "multi_thread",
    worker_threads = 4
);
async fn multi_platform_index_round_trip(stores: StorePair) {
    init_tracing();
    let registry = stores.start_registry().await;
    let skopeo = Skopeo::new();
    // Both platforms share their first layer, as real multi-platform images often do.
    let shared = make_layer(0, LayerSpec::gzip(10 * MIB), false);
    let amd64 = make_image_from_layers(
        "amd64",
        "linux",
        vec![
            shared.clone(),
            make_layer(1, LayerSpec::tar(12 * MIB), false),
        ],
        false,
    );
    let arm64 = make_image_from_layers(
        "arm64",
        "linux",
        vec![shared, make_layer(1, LayerSpec::gzip(11 * MIB), false)],
        false,
    );
    let index = make_index(&[amd64.clone(), arm64.clone()]);
    let mut contents: Vec<&Blob> = vec![&amd64.manifest, &arm64.manifest];
    contents.extend(amd64.blobs());
    contents.extend(arm64.blobs());
    let source = tempfile::tempdir().unwrap();
    write_oci_layout(source.path(), "multi", &index, contents.iter().copied());
    let repo = "skopeo/multi-platform";

    skopeo
        .copy(
            &oci_ref(source.path(), "multi"),
            &docker_ref(&registry, repo, "multi"),
            &["--all", "--preserve-digests"],
        )
        .await;
    let pulled = tempfile::tempdir().unwrap();
    skopeo
        .copy(
            &docker_ref(&registry, repo, "multi"),
            &oci_ref(pulled.path(), "multi"),
            &["--all", "--preserve-digests"],
        )
        .await;
    assert_oci_layout(pulled.path(), "multi", &index, &contents);

    let raw = skopeo
        .inspect_raw(&docker_ref(&registry, repo, "multi"), false)
        .await;
    assert_same_bytes("inspect --raw of the index", &index.data, &raw);
    for image in [&amd64, &arm64] {
        let raw = skopeo
            .inspect_raw(&docker_ref(&registry, repo, &image.manifest.digest), false)
            .await;
        assert_same_bytes(
            &format!("inspect --raw of the {} manifest", image.architecture),
            &image.manifest.data,
            &raw,
        );
    }
    let (_, tags) = skopeo.list_tags(&registry.host(), repo).await;
    assert_eq!(tags, ["multi"], "list-tags");
}

common::on_each_store_pair!(an_immutable_tag_refuses_a_move_from_skopeo);
async fn an_immutable_tag_refuses_a_move_from_skopeo(stores: StorePair) {
    init_tracing();
    let registry = stores
        .start_registry_with(|config| {
            config.immutable = vec![ipfs_registry::registry::rules::ImmutableRule {
                repositories: "skopeo/*".parse().unwrap(),
                tags: vec!["v*".parse().unwrap()],
            }];
        })
        .await;
    let skopeo = Skopeo::new();
    let repo = "skopeo/pinned";
    let first = make_image("amd64", "linux", &[LayerSpec::gzip(64 * 1024)], false);
    let second = make_image("amd64", "linux", &[LayerSpec::gzip(64 * 1024)], false);
    let (first_dir, second_dir) = (oci_source(&first, "v1"), oci_source(&second, "v1"));
    let destination = docker_ref(&registry, repo, "v1");
    skopeo
        .copy(&oci_ref(first_dir.path(), "v1"), &destination, &[])
        .await;
    // The same image again: accepted.
    skopeo
        .copy(&oci_ref(first_dir.path(), "v1"), &destination, &[])
        .await;

    let source = oci_ref(second_dir.path(), "v1");
    let refused = skopeo
        .run_unchecked(&[
            "copy",
            "--dest-tls-verify=false",
            "--dest-no-creds",
            "--retry-times",
            "0",
            &source,
            &destination,
        ])
        .await;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success(),
        "an immutable tag moved: {stderr}"
    );
    assert!(
        stderr.contains("tag v1 of skopeo/pinned is immutable"),
        "skopeo does not show why: {stderr}"
    );
    let raw = skopeo.inspect_raw(&destination, false).await;
    assert_same_bytes("v1 after the refused move", &first.manifest.data, &raw);
}
