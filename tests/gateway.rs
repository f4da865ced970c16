//! The built-in IPFS gateway (`/ipfs/<cid>`) and `X-Ipfs-Path` on blob responses, with the
//! embedded blob store and with the IPFS node.

mod common;

use cid::Cid;
use common::oci::{assert_error, header, Oci};
use common::TestRegistry;
use sha2::{Digest, Sha256};

async fn embedded_registry() -> (TestRegistry, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_owned();
    let registry = common::StorePair::PostgresIpfsNode
        .start_registry_with(move |config| {
            config.ipfs.url = None;
            config.data_dir = data_dir;
        })
        .await;
    (registry, dir)
}

/// Pushes a blob and returns the CID its pull announces.
async fn push(oci: &Oci, repo: &str, data: &[u8]) -> Cid {
    let blob = oci.push_blob(repo, data).await;
    let response = oci.get(&format!("/v2/{repo}/blobs/{}", blob.digest)).await;
    assert_eq!(response.status(), 200);
    let path = header(&response, "x-ipfs-path");
    let cid = path
        .strip_prefix("/ipfs/")
        .expect("X-Ipfs-Path is /ipfs/<cid>");
    let cid = Cid::try_from(cid).expect("a CID");
    assert_eq!(response.bytes().await.unwrap(), data);
    let head = oci.head(&format!("/v2/{repo}/blobs/{}", blob.digest)).await;
    assert_eq!(header(&head, "x-ipfs-path"), path);
    cid
}

async fn gateway_checks(registry: &TestRegistry) {
    let oci = Oci::new(&registry.base);
    let small = common::oci::random_bytes(1000);
    let large = common::oci::random_bytes(3 * 262_144 + 77);
    let small_cid = push(&oci, "gw/small", &small).await;
    let large_cid = push(&oci, "gw/large", &large).await;

    // The bytes, whole and ranged, with the digest and immutable caching.
    let response = oci.get(&format!("/ipfs/{large_cid}")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "content-length"), large.len().to_string());
    assert_eq!(
        header(&response, "x-ipfs-path"),
        format!("/ipfs/{large_cid}")
    );
    assert!(header(&response, "cache-control").contains("immutable"));
    assert_eq!(
        header(&response, "docker-content-digest"),
        common::oci::sha256(&large)
    );
    assert_eq!(response.bytes().await.unwrap(), large);
    let ranged = oci
        .request(reqwest::Method::GET, &format!("/ipfs/{large_cid}"))
        .header("Range", "bytes=262140-262150")
        .send()
        .await
        .unwrap();
    assert_eq!(ranged.status(), 206);
    assert_eq!(ranged.bytes().await.unwrap(), &large[262_140..=262_150]);
    let head = oci.head(&format!("/ipfs/{small_cid}")).await;
    assert_eq!(head.status(), 200);
    assert_eq!(header(&head, "content-length"), "1000");

    // One block: a small blob's root is its raw bytes; a large one's is a dag-pb node, and
    // both hash to their CID.
    let raw = oci.get(&format!("/ipfs/{small_cid}?format=raw")).await;
    assert_eq!(raw.status(), 200);
    assert_eq!(header(&raw, "content-type"), "application/vnd.ipld.raw");
    assert_eq!(raw.bytes().await.unwrap(), small);
    let node = oci
        .request(reqwest::Method::GET, &format!("/ipfs/{large_cid}"))
        .header("Accept", "application/vnd.ipld.raw")
        .send()
        .await
        .unwrap();
    assert_eq!(node.status(), 200);
    let node = node.bytes().await.unwrap();
    assert_eq!(Sha256::digest(&node).as_slice(), large_cid.hash().digest());
    // The same dag-pb block by its CIDv0 (`Qm…`), and the file by it too.
    let v0 = Cid::new_v0(*large_cid.hash()).unwrap();
    let by_v0 = oci.get(&format!("/ipfs/{v0}?format=raw")).await;
    assert_eq!(by_v0.status(), 200);
    assert_eq!(by_v0.bytes().await.unwrap(), node);
    let file_by_v0 = oci.get(&format!("/ipfs/{v0}")).await;
    assert_eq!(file_by_v0.status(), 200);
    assert_eq!(file_by_v0.bytes().await.unwrap(), large);
    // A CID under another hash function names nothing stored here: 404, never a 500.
    let sha512 = Cid::new_v1(
        0x55,
        multihash::Multihash::<64>::wrap(0x13, &[7u8; 64]).unwrap(),
    );
    for path in [
        format!("/ipfs/{sha512}?format=raw"),
        format!("/ipfs/{sha512}"),
    ] {
        assert_error(oci.get(&path).await, 404, "BLOB_UNKNOWN").await;
    }

    // The whole DAG as a CAR, which the IPFS node accepts under the same root.
    let car = oci
        .request(reqwest::Method::GET, &format!("/ipfs/{large_cid}"))
        .header("Accept", "application/vnd.ipld.car")
        .send()
        .await
        .unwrap();
    assert_eq!(car.status(), 200);
    assert!(header(&car, "content-type").starts_with("application/vnd.ipld.car"));
    let car = car.bytes().await.unwrap().to_vec();
    assert_eq!(common::ipfs_dag_import(car).await, large_cid);
    let same = oci.get(&format!("/ipfs/{large_cid}?format=car")).await;
    assert_eq!(same.status(), 200);

    // What is not stored, and what is not a CID or a format.
    let unknown = ipfs_registry::blobs::unixfs::cid_of(0x55, b"nobody pushed this");
    assert_error(
        oci.get(&format!("/ipfs/{unknown}")).await,
        404,
        "BLOB_UNKNOWN",
    )
    .await;
    assert_error(
        oci.get(&format!("/ipfs/{unknown}?format=car")).await,
        404,
        "BLOB_UNKNOWN",
    )
    .await;
    assert_error(oci.get("/ipfs/not-a-cid").await, 400, "CID_INVALID").await;
    assert_error(
        oci.get(&format!("/ipfs/{small_cid}?format=tar")).await,
        400,
        "UNSUPPORTED",
    )
    .await;
}

#[tokio::test]
async fn gateway_over_the_embedded_store() {
    let (registry, dir) = embedded_registry().await;
    gateway_checks(&registry).await;
    // The blobs are files under the data directory, named by CID.
    let stored = std::fs::read_dir(dir.path().join("blobs/data"))
        .unwrap()
        .count();
    assert_eq!(stored, 2);
}

#[tokio::test]
async fn gateway_over_the_ipfs_node() {
    let registry = common::StorePair::PostgresIpfsNode.start_registry().await;
    gateway_checks(&registry).await;
}

/// Blobs in the embedded store get the CID the IPFS node gives the same bytes.
#[tokio::test]
async fn both_stores_announce_the_same_cid() {
    let (embedded, _dir) = embedded_registry().await;
    let kubo = common::StorePair::PostgresIpfsNode.start_registry().await;
    let data = common::oci::random_bytes(2 * 262_144 + 9);
    let a = push(&Oci::new(&embedded.base), "same/cid", &data).await;
    let b = push(&Oci::new(&kubo.base), "same/cid", &data).await;
    assert_eq!(a, b);
}

/// A block whose stored bytes no longer match its CID is refused, never served as that CID.
#[tokio::test]
async fn a_corrupt_block_is_not_served() {
    let (registry, dir) = embedded_registry().await;
    let oci = Oci::new(&registry.base);
    let data = common::oci::random_bytes(1000);
    let cid = push(&oci, "corrupt/app", &data).await;
    let file = dir.path().join("blobs/data").join(cid.to_string());
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&file, &bytes).unwrap();
    let response = oci.get(&format!("/ipfs/{cid}?format=raw")).await;
    assert!(response.status().is_server_error(), "{}", response.status());
    assert_ne!(response.bytes().await.unwrap().as_ref(), &bytes[..]);
    registry.server.stop().await;
}
