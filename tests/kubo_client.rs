//! What only `KuboStore` shows, against a real node (`scripts/ipfs-node.sh start`; URL from
//! `IPFS_REGISTRY_TEST_IPFS_URL`, default http://127.0.0.1:45001): that the node's own
//! importer agrees with ours, timeouts and unreachable nodes, pin progress, and pins that
//! fail on a damaged (private) node. What every blob store promises is in contract_blobs.rs.

mod common;

use std::io;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cid::Cid;
use futures::{stream, StreamExt};
use ipfs_registry::blobs::kubo::{raw_cid_v1_from_sha256, KuboStore, RAW_CODEC};
use ipfs_registry::blobs::{BlobError, BlobStore, ByteStream, ImportProfile};
use sha2::{Digest, Sha256};

use common::private_node::PrivateNode;

const CHUNK: usize = 256 * 1024;

fn store_with(url: url::Url, timeout: Duration) -> KuboStore {
    common::kubo::store_at(url, timeout, ImportProfile::default())
}

/// The bytes as a stream of 64 KiB pieces.
fn byte_stream(data: Vec<u8>) -> ByteStream {
    let data = Bytes::from(data);
    let pieces: Vec<Result<Bytes, io::Error>> = (0..data.len())
        .step_by(64 * 1024)
        .map(|start| Ok(data.slice(start..(start + 64 * 1024).min(data.len()))))
        .collect();
    Box::pin(stream::iter(pieces))
}

async fn rpc_at(node: &url::Url, command: &str, query: &[(&str, &str)]) -> reqwest::Response {
    let url = node.join(&format!("api/v0/{command}")).unwrap();
    reqwest::Client::new()
        .post(url)
        .query(query)
        .send()
        .await
        .expect("rpc")
}

/// The CID `data` would get under the default profile, without storing anything.
async fn only_hash(data: &[u8]) -> Cid {
    common::kubo::node_only_hash(data.to_vec(), &ImportProfile::default()).await
}

fn sha256(data: &[u8]) -> Vec<u8> {
    Sha256::digest(data).to_vec()
}

/// The contract suites compare every store's CIDs with our importer (`DagBuilder`); here
/// the node's own importer is compared with it: around the chunk size, and past one node's
/// 174 links (small leaves, so a two-level tree stays small).
#[tokio::test]
async fn the_nodes_own_importer_gives_our_cids() {
    let default = ImportProfile::default();
    let small = ImportProfile { chunk_size: 1024 };
    let seed = common::unique_seed();
    for (profile, len) in [
        (&default, 0),
        (&default, 1),
        (&default, CHUNK),
        (&default, CHUNK + 1),
        (&default, 3 * CHUNK + 5),
        (&small, 180 * 1024 + 17),
    ] {
        let data = common::pseudo_random(seed ^ len as u64, len);
        let mut builder = ipfs_registry::blobs::unixfs::DagBuilder::new(profile.chunk_size);
        let mut blocks = Vec::new();
        builder.push(&data, &mut blocks);
        let ours = builder.finish(&mut blocks).root;
        assert_eq!(
            common::kubo::node_only_hash(data, profile).await,
            ours,
            "{len} bytes"
        );
    }
}

/// A blob of one chunk is one raw leaf: its CID is the sha256 of its bytes.
#[tokio::test]
async fn raw_cid_v1_from_sha256_names_a_single_leaf() {
    assert_eq!(
        raw_cid_v1_from_sha256(&sha256(b"hello world\n")).unwrap(),
        Cid::try_from("bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4").unwrap()
    );
    let data = common::pseudo_random(common::unique_seed(), CHUNK);
    let expected = raw_cid_v1_from_sha256(&sha256(&data)).unwrap();
    assert_eq!(only_hash(&data).await, expected);
    assert_eq!(expected.codec(), RAW_CODEC);
}

#[tokio::test]
async fn missing_cid_fails_within_the_timeout() {
    let timeout = Duration::from_secs(2);
    let store = store_with(common::ipfs_url(), timeout);
    let missing =
        raw_cid_v1_from_sha256(&sha256(&common::pseudo_random(common::unique_seed(), 100)))
            .unwrap();

    let start = Instant::now();
    let err = match store.cat(&missing, 0, None).await {
        Ok(_) => panic!("cat of a missing CID must fail"),
        Err(e) => e,
    };
    let elapsed = start.elapsed();
    assert!(
        matches!(err, BlobError::NotFound(c) if c == missing),
        "expected NotFound, got {err:?}"
    );
    assert!(
        elapsed < timeout + Duration::from_secs(3),
        "took {elapsed:?}"
    );

    assert!(!store.is_pinned(&missing).await.unwrap());
    store.unpin(&missing).await.expect("unpin of a missing CID");
}

#[tokio::test]
async fn unreachable_node_is_unavailable_promptly() {
    let store = store_with(
        "http://127.0.0.1:1".parse().unwrap(),
        Duration::from_secs(5),
    );
    let cid = raw_cid_v1_from_sha256(&sha256(b"x")).unwrap();
    let start = Instant::now();
    assert!(matches!(store.ping().await, Err(BlobError::Unavailable(_))));
    assert!(matches!(
        store.add(byte_stream(b"abc".to_vec())).await,
        Err(BlobError::Unavailable(_))
    ));
    assert!(matches!(
        store.cat(&cid, 0, None).await,
        Err(BlobError::Unavailable(_))
    ));
    assert!(matches!(
        store.is_pinned(&cid).await,
        Err(BlobError::Unavailable(_))
    ));
    assert!(matches!(
        store.unpin(&cid).await,
        Err(BlobError::Unavailable(_))
    ));
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}

/// A "node" that accepts connections and never reads nor answers.
async fn black_hole() -> (url::Url, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap())
        .parse()
        .unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (url, task)
}

#[tokio::test]
async fn a_node_that_stops_answering_is_unavailable_after_the_timeout() {
    let timeout = Duration::from_secs(1);
    let (url, task) = black_hole().await;
    let store = store_with(url, timeout);
    let cid = raw_cid_v1_from_sha256(&sha256(b"x")).unwrap();

    // A body larger than the socket buffers: the node stops reading mid-body.
    let start = Instant::now();
    let err = store
        .add(byte_stream(common::pseudo_random(1, 32 * 1024 * 1024)))
        .await
        .unwrap_err();
    assert!(matches!(err, BlobError::Unavailable(_)), "{err:?}");
    assert!(start.elapsed() < 5 * timeout, "{:?}", start.elapsed());

    // A small body: sent completely, then no answer.
    let start = Instant::now();
    let err = store.add(byte_stream(b"abc".to_vec())).await.unwrap_err();
    assert!(matches!(err, BlobError::Unavailable(_)), "{err:?}");
    assert!(start.elapsed() < 5 * timeout, "{:?}", start.elapsed());

    let start = Instant::now();
    assert!(matches!(
        store.cat(&cid, 0, None).await,
        Err(BlobError::Unavailable(_))
    ));
    assert!(matches!(store.ping().await, Err(BlobError::Unavailable(_))));
    assert!(start.elapsed() < 10 * timeout, "{:?}", start.elapsed());
    task.abort();
}

#[tokio::test]
async fn a_slow_input_is_not_a_node_timeout() {
    let timeout = Duration::from_secs(1);
    let store = store_with(common::ipfs_url(), timeout);
    let data = common::pseudo_random(common::unique_seed(), 2 * CHUNK);
    let expected = only_hash(&data).await;
    let (first, second) = data.split_at(CHUNK);
    let (first, second) = (Bytes::from(first.to_vec()), Bytes::from(second.to_vec()));
    let input =
        stream::once(async move { Ok::<_, io::Error>(first) }).chain(stream::once(async move {
            tokio::time::sleep(3 * timeout).await;
            Ok(second)
        }));
    let stored = store
        .add(Box::pin(input))
        .await
        .expect("slow input is fine");
    assert_eq!(stored.cid, expected);
    assert_eq!(stored.size, 2 * CHUNK as u64);
}

/// A stand-in for Kubo's `pin/add?progress=true` (js-ipfs reports no progress): answers
/// every request with `lines`, one every `every`, then ends the stream.
async fn kubo_pin_stand_in(
    lines: Vec<String>,
    every: Duration,
) -> (url::Url, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap())
        .parse()
        .unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let lines = lines.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                            Transfer-Encoding: chunked\r\n\r\n";
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                for line in lines {
                    tokio::time::sleep(every).await;
                    let line = format!("{line}\n");
                    let chunk = format!("{:x}\r\n{line}\r\n", line.len());
                    if socket.write_all(chunk.as_bytes()).await.is_err() {
                        return;
                    }
                }
                let _ = socket.write_all(b"0\r\n\r\n").await;
            });
        }
    });
    (url, task)
}

/// Kubo walks a large DAG for longer than the control-call timeout: the pin succeeds as
/// long as the count of blocks walked keeps growing, and fails once it stops.
#[tokio::test]
async fn a_pin_lasts_as_long_as_the_node_makes_progress() {
    let timeout = Duration::from_secs(1);
    let cid = raw_cid_v1_from_sha256(&sha256(b"progress")).unwrap();

    // Progress every 300 ms for 4 × the timeout, then the pin.
    let mut lines: Vec<String> = (1..=14)
        .map(|n| format!(r#"{{"Progress":{n},"Bytes":{}}}"#, n * 262_144))
        .collect();
    lines.push(format!(r#"{{"Pins":["{cid}"]}}"#));
    let (url, task) = kubo_pin_stand_in(lines, Duration::from_millis(300)).await;
    let start = Instant::now();
    store_with(url, timeout)
        .pin(&cid)
        .await
        .expect("a pin that keeps progressing succeeds");
    assert!(start.elapsed() > 3 * timeout, "{:?}", start.elapsed());
    task.abort();

    // The same count over and over (Kubo waiting for a missing block): no progress.
    let lines: Vec<String> = (0..40).map(|_| r#"{"Progress":3}"#.to_owned()).collect();
    let (url, task) = kubo_pin_stand_in(lines, Duration::from_millis(300)).await;
    let start = Instant::now();
    let err = store_with(url, timeout).pin(&cid).await.unwrap_err();
    assert!(
        matches!(&err, BlobError::Unavailable(m) if m.contains("no progress")),
        "{err:?}"
    );
    assert!(start.elapsed() < 6 * timeout, "{:?}", start.elapsed());
    task.abort();

    // A stream that ends without the pin (Kubo's error went into a trailer) is a failure.
    let (url, task) = kubo_pin_stand_in(vec![r#"{"Progress":1}"#.to_owned()], Duration::ZERO).await;
    assert!(store_with(url, timeout).pin(&cid).await.is_err());
    task.abort();
}

/// A registry on the test node whose IPFS calls give up after 3 s without progress.
async fn registry_with_short_ipfs_timeout(node: &url::Url) -> common::TestRegistry {
    let node = node.clone();
    common::StorePair::PostgresIpfsNode
        .start_registry_with(move |config| {
            config.ipfs.url = Some(node);
            config.ipfs.timeout = Duration::from_secs(3);
        })
        .await
}

/// Makes the node lose one block of `root`'s DAG: drops the pin, then the block.
async fn lose_block(node: &url::Url, root: &Cid, block: &Cid) {
    let unpinned = rpc_at(node, "pin/rm", &[("arg", &root.to_string())]).await;
    assert!(unpinned.status().is_success(), "pin/rm {root}");
    let removed = rpc_at(node, "block/rm", &[("arg", &block.to_string())]).await;
    assert!(removed.status().is_success(), "block/rm {block}");
    let answer = removed.text().await.unwrap();
    assert!(!answer.contains("Error"), "block/rm {block}: {answer}");
}

/// Completing a chunked upload joins the chunks, whose pins keep the joined blob's leaves;
/// when a chunk lost its pin (and a block) the push fails as retryable, and nothing is
/// recorded.
#[tokio::test]
async fn a_chunked_push_whose_pin_fails_records_nothing() {
    const MIB: usize = 1024 * 1024;
    let node = PrivateNode::start();
    let registry = registry_with_short_ipfs_timeout(&node.url).await;
    let oci = common::oci::Oci::new(&registry.base);
    let data = common::pseudo_random(common::unique_seed(), 2 * MIB + 1000);
    let digest = common::oci::sha256(&data);
    let mut location = oci.start_upload("kubo/pin-fails").await;
    for (i, chunk) in data[..2 * MIB].chunks(MIB).enumerate() {
        let response = oci.patch_chunk(&location, i * MIB, chunk).await;
        let response = common::oci::expect_status(response, 202).await;
        location = common::oci::header(&response, "location");
    }
    let second = only_hash(&data[MIB..2 * MIB]).await;
    let leaf = raw_cid_v1_from_sha256(&sha256(&data[MIB..MIB + CHUNK])).unwrap();
    lose_block(&node.url, &second, &leaf).await;

    let response = tokio::time::timeout(
        Duration::from_secs(120),
        oci.put_upload(&location, &digest, data[2 * MIB..].to_vec()),
    )
    .await
    .expect("the PUT is answered");
    let status = response.status().as_u16();
    let body = response.text().await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("pin"), "{body}");
    let head = oci
        .head(&format!("/v2/kubo/pin-fails/blobs/{digest}"))
        .await;
    assert_eq!(
        head.status().as_u16(),
        404,
        "a blob whose pin failed is not recorded"
    );
}

/// A joined root is not walked: its leaves are the parts', kept by the parts' pins. A part
/// that is not pinned (here: one written with `block/put` whose leaves the node never had)
/// fails the join at once instead of answering a root the node cannot serve.
#[tokio::test]
async fn a_join_of_a_part_not_pinned_is_an_error() {
    let timeout = Duration::from_secs(3);
    let node = PrivateNode::start();
    let store = store_with(node.url.clone(), timeout);
    let first = store
        .add(byte_stream(common::pseudo_random(
            common::unique_seed(),
            2 * CHUNK,
        )))
        .await
        .unwrap()
        .cid;
    let seed = common::unique_seed();
    let missing: Vec<(Cid, u64)> = (0..2u64)
        .map(|i| {
            let bytes = sha256(&common::pseudo_random(seed ^ (i + 1), 64));
            (raw_cid_v1_from_sha256(&bytes).unwrap(), CHUNK as u64)
        })
        .collect();
    let mut builder = ipfs_registry::blobs::unixfs::DagBuilder::new(CHUNK as u32);
    let mut blocks = Vec::new();
    for (leaf, len) in missing {
        builder.push_leaf(leaf, len, &mut blocks);
    }
    let part = builder.finish(&mut blocks);
    let Some(ipfs_registry::blobs::unixfs::Block::Node { bytes, .. }) = blocks.last() else {
        panic!("two leaves make a node")
    };
    common::kubo::put_block(&node.url, &part.root, bytes).await;

    let start = Instant::now();
    let err = store
        .concat(&[first, part.root])
        .await
        .expect_err("a part is not pinned");
    assert!(
        matches!(&err, BlobError::Unavailable(m) if m.contains(&part.root.to_string())),
        "{err:?}"
    );
    assert!(start.elapsed() < 10 * timeout, "{:?}", start.elapsed());
    store.unpin(&first).await.unwrap();
}

/// The CIDs of `cids` the node lists as pinned `kind` (`direct`, `recursive`).
async fn pinned_as(node: &url::Url, kind: &str, cids: &[Cid]) -> Vec<Cid> {
    let mut listed = Vec::new();
    for cid in cids {
        let arg = cid.to_string();
        let answer = rpc_at(node, "pin/ls", &[("arg", arg.as_str()), ("type", kind)]).await;
        if answer.status().is_success() {
            listed.push(*cid);
        }
    }
    listed
}

/// A join pins only its new nodes, directly (the node reads no leaf); `pin` of the root
/// makes the pin recursive, and `unpin` drops the other nodes' direct pins, after which
/// the blob is whole without the parts.
#[tokio::test]
async fn a_join_pins_its_nodes_directly_until_the_root_is_pinned() {
    let node = common::ipfs_url();
    let store = store_with(node.clone(), Duration::from_secs(30));
    // 180 leaves: the root over two nodes.
    let data = common::pseudo_random(common::unique_seed(), 180 * CHUNK);
    let mut parts = Vec::new();
    for piece in data.chunks(36 * CHUNK) {
        parts.push(store.add(byte_stream(piece.to_vec())).await.unwrap().cid);
    }
    let joined = store.concat(&parts).await.unwrap().expect("aligned parts");
    let root = joined.stored.cid;
    let nodes = joined.direct.expect("an IPFS node pins a join in part");
    assert_eq!(nodes.len(), 2);
    let all: Vec<Cid> = nodes.iter().copied().chain([root]).collect();
    assert_eq!(pinned_as(&node, "direct", &all).await, all);
    let listed = store.direct_pins().await.unwrap();
    assert!(all.iter().all(|cid| listed.contains(cid)), "{listed:?}");
    assert!(!store.is_pinned(&root).await.unwrap());

    store.pin(&root).await.unwrap();
    assert!(store.is_pinned(&root).await.unwrap());
    assert_eq!(pinned_as(&node, "direct", &[root]).await, vec![]);
    for cid in nodes.iter().chain(&parts) {
        store.unpin(cid).await.unwrap();
    }
    assert_eq!(pinned_as(&node, "direct", &nodes).await, vec![]);
    let listed = store.direct_pins().await.unwrap();
    assert!(!all.iter().any(|cid| listed.contains(cid)), "{listed:?}");
    assert_eq!(pinned_as(&node, "recursive", &parts).await, vec![]);
    let mut read = Vec::new();
    let mut body = store.cat(&root, 0, None).await.unwrap();
    while let Some(piece) = body.next().await {
        read.extend_from_slice(&piece.unwrap());
    }
    assert!(read == data, "the joined blob reads back whole");
    store.unpin(&root).await.unwrap();
}
