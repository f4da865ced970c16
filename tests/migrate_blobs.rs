//! `ipfs-registry migrate-blobs`: an embedded store's blobs into the real IPFS node, under
//! the same CIDs; a profile that would change a CID stops it with nothing changed.

mod common;

use std::process::Output;
use std::time::Duration;

use bytes::Bytes;
use cid::Cid;
use ipfs_registry::blobs::embedded::EmbeddedStore;
use ipfs_registry::blobs::kubo::KuboStore;
use ipfs_registry::blobs::{BlobStore, ImportProfile};

fn node() -> KuboStore {
    common::kubo::store(Duration::from_secs(60), ImportProfile::default())
}

fn migrate_blobs(data_dir: &std::path::Path, extra: &[(&str, &str)]) -> Output {
    common::cli::registry_command()
        .arg("migrate-blobs")
        .env("IPFS_REGISTRY_DATA_DIR", data_dir)
        .env("IPFS_REGISTRY_IPFS__URL", common::ipfs_url().as_str())
        .envs(extra.iter().copied())
        .output()
        .expect("run ipfs-registry migrate-blobs")
}

/// An embedded store under `<dir>/blobs` holding `blobs`; returns their CIDs.
async fn embedded_with(dir: &std::path::Path, blobs: &[Vec<u8>]) -> Vec<Cid> {
    let store = EmbeddedStore::open(&dir.join("blobs"), ImportProfile::default()).unwrap();
    let mut cids = Vec::new();
    for data in blobs {
        let stored = store
            .add(common::odd_pieces(&Bytes::from(data.clone())))
            .await
            .unwrap();
        cids.push(stored.cid);
    }
    cids
}

async fn cat_all(store: &KuboStore, cid: &Cid) -> Vec<u8> {
    common::kubo::read_all(store.cat(cid, 0, None).await.unwrap()).await
}

#[tokio::test]
async fn every_blob_arrives_under_the_same_cid() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = vec![
        common::oci::random_bytes(0),
        common::oci::random_bytes(1000),
        common::oci::random_bytes(3 * 262_144 + 5),
    ];
    let cids = embedded_with(dir.path(), &blobs).await;

    let out = migrate_blobs(dir.path(), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("every CID unchanged"), "{stdout}");

    let node = node();
    for (cid, data) in cids.iter().zip(&blobs) {
        assert!(
            node.is_pinned(cid).await.unwrap(),
            "{cid} pinned in the node"
        );
        assert_eq!(&cat_all(&node, cid).await, data, "{cid}");
    }
    // A second run finds everything there already.
    let again = migrate_blobs(dir.path(), &[]);
    assert!(again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("0 blobs copied"),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
    // The empty blob's raw CID may be shared with other tests: leave it pinned.
    for cid in &cids[1..] {
        node.unpin(cid).await.unwrap();
    }
}

#[tokio::test]
async fn a_cid_that_would_change_stops_the_move_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // Stored with 256 KiB chunks; the command is told 1 MiB, which gives another DAG.
    let blobs = vec![
        common::oci::random_bytes(500),
        common::oci::random_bytes(2 * 262_144 + 1),
    ];
    let cids = embedded_with(dir.path(), &blobs).await;
    let node = node();
    let out = migrate_blobs(
        dir.path(),
        &[("IPFS_REGISTRY_IMPORT_PROFILE__CHUNK_SIZE", "1048576")],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("stored in 262144-byte chunks, and import_profile.chunk_size is 1048576")
            && stderr.contains("nothing was changed"),
        "{stderr}"
    );
    // The small blob (same CID under either chunk size) was copied first and taken back;
    // the large one's foreign CID was unpinned again.
    for cid in &cids {
        assert!(!node.is_pinned(cid).await.unwrap(), "{cid} left pinned");
    }
    let mut wrong = ipfs_registry::blobs::unixfs::DagBuilder::new(1_048_576);
    let mut blocks = Vec::new();
    wrong.push(&blobs[1], &mut blocks);
    let foreign = wrong.finish(&mut blocks).root;
    assert!(
        !node.is_pinned(&foreign).await.unwrap(),
        "{foreign} left pinned"
    );
}

#[test]
fn without_an_embedded_store_it_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = migrate_blobs(dir.path(), &[]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no embedded blob store"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An image layout stored in the embedded store (`put_dag`, linking a stored layer) moves
/// to the node after the layer, under the same root, pinned there with everything it links.
#[tokio::test]
async fn an_image_layout_moves_after_the_blobs_it_links() {
    use ipfs_registry::blobs::layout::{build, Content, Image};
    use ipfs_registry::oci::Digest;
    let dir = tempfile::tempdir().unwrap();
    let layer = common::oci::random_bytes(2 * 262_144 + 9);
    let cids = embedded_with(dir.path(), std::slice::from_ref(&layer)).await;
    let store = EmbeddedStore::open(&dir.path().join("blobs"), ImportProfile::default()).unwrap();
    let root_block = store.block(&cids[0]).await.unwrap();
    let manifest = common::oci::random_bytes(400);
    let digest = Digest::sha256_of(&manifest);
    let image = Image {
        tag: "latest".into(),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        digest: digest.clone(),
        size: manifest.len() as u64,
        blobs: [
            (digest, Content::Bytes(Bytes::from(manifest))),
            (
                Digest::sha256_of(&layer),
                Content::Stored {
                    cid: cids[0],
                    dag_size: ipfs_registry::blobs::unixfs::cumulative_size(&cids[0], &root_block)
                        .unwrap(),
                },
            ),
        ]
        .into(),
    };
    let layout = build(&image, ImportProfile::default().chunk_size).unwrap();
    store.put_dag(&layout.root, layout.blocks).await.unwrap();
    drop(store);

    let out = migrate_blobs(dir.path(), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let node = node();
    assert!(node.is_pinned(&layout.root).await.unwrap());
    assert_eq!(cat_all(&node, &cids[0]).await, layer);
    node.unpin(&layout.root).await.unwrap();
    node.unpin(&cids[0]).await.unwrap();
}
