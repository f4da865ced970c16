//! Upload sessions live in the metadata store and their bytes in the blob store, so an
//! upload begun on one replica continues on another, and survives a restart of the replica
//! that began it, on each store pair.

mod common;

use common::StorePair;

use rand::RngCore;
use sha2::{Digest as _, Sha256};

fn random_bytes(len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    rand::rng().fill_bytes(&mut data);
    data
}

fn digest_of(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn absolute(base: &str, location: &str) -> String {
    if location.starts_with("http") {
        location.to_owned()
    } else {
        format!("{base}{location}")
    }
}

fn location(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("location")
        .expect("Location header")
        .to_str()
        .unwrap()
        .to_owned()
}

common::on_each_store_pair!(chunked_upload_continues_on_another_replica_and_after_restart);
async fn chunked_upload_continues_on_another_replica_and_after_restart(stores: StorePair) {
    let first = stores.start_registry().await;
    let second = common::start_registry_from(first.config.clone()).await;
    let http = reqwest::Client::new();

    let data = random_bytes(3 * 1024 * 1024 + 12_345);
    let (a, rest) = data.split_at(1024 * 1024);
    let (b, c) = rest.split_at(1024 * 1024 + 7);

    // Chunk 1 on the first replica.
    let started = http
        .post(first.url("/v2/replicas/test/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 202);
    let path = location(&started);
    let patched = http
        .patch(absolute(&first.base, &path))
        .header("Content-Type", "application/octet-stream")
        .header("Content-Range", format!("0-{}", a.len() - 1))
        .body(a.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 202);
    let path = location(&patched);

    // The first replica goes away; a fresh process on the same configuration replaces it.
    let config = first.config.clone();
    first.server.stop().await;
    let restarted = common::start_registry_from(config).await;
    // A new client: the kernel may give the restarted replica the port the first one had,
    // and a connection pooled to the process that stopped must not be reused for it.
    let http = reqwest::Client::new();

    // Chunk 2 on the second replica, with the Location the first one handed out.
    let status = http
        .get(absolute(&second.base, &path))
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), 204);
    assert_eq!(
        status.headers()["range"],
        format!("0-{}", a.len() - 1).as_str()
    );
    let patched = http
        .patch(absolute(&second.base, &path))
        .header(
            "Content-Range",
            format!("{}-{}", a.len(), a.len() + b.len() - 1),
        )
        .body(b.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 202);
    assert_eq!(
        patched.headers()["range"],
        format!("0-{}", a.len() + b.len() - 1).as_str()
    );
    let path = location(&patched);

    // A stale chunk (offset already taken) is refused on the restarted replica.
    let stale = http
        .patch(absolute(&restarted.base, &path))
        .header("Content-Range", format!("0-{}", a.len() - 1))
        .body(a.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 416);

    // The last chunk and the digest on the restarted replica.
    let digest = digest_of(&data);
    let put_url = format!("{}?digest={digest}", absolute(&restarted.base, &path));
    let done = http.put(put_url).body(c.to_vec()).send().await.unwrap();
    assert_eq!(done.status(), 201, "{:?}", done.text().await);

    // Every replica serves the assembled blob, byte for byte.
    for replica in [&second, &restarted] {
        let blob = http
            .get(replica.url(&format!("/v2/replicas/test/blobs/{digest}")))
            .send()
            .await
            .unwrap();
        assert_eq!(blob.status(), 200);
        assert_eq!(blob.headers()["docker-content-digest"], digest.as_str());
        let body = blob.bytes().await.unwrap();
        assert_eq!(body.len(), data.len());
        assert!(body == data, "blob bytes differ");
    }

    second.server.stop().await;
    restarted.server.stop().await;
}

common::on_each_store_pair!(concurrent_chunks_for_the_same_offset_keep_exactly_one);
async fn concurrent_chunks_for_the_same_offset_keep_exactly_one(stores: StorePair) {
    let registry = stores.start_registry().await;
    let http = reqwest::Client::new();
    let started = http
        .post(registry.url("/v2/race/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let path = absolute(&registry.base, &location(&started));
    let one = random_bytes(300_000);
    let two = random_bytes(300_000);
    let send = |body: Vec<u8>| {
        http.patch(&path)
            .header("Content-Range", format!("0-{}", body.len() - 1))
            .body(body)
            .send()
    };
    let (r1, r2) = tokio::join!(send(one.clone()), send(two.clone()));
    let (s1, s2) = (r1.unwrap().status().as_u16(), r2.unwrap().status().as_u16());
    let mut statuses = [s1, s2];
    statuses.sort();
    assert_eq!(statuses, [202, 416], "exactly one chunk wins the offset");
    let winner = if s1 == 202 { &one } else { &two };

    let status = http.get(&path).send().await.unwrap();
    assert_eq!(status.headers()["range"], "0-299999");
    let digest = digest_of(winner);
    let done = http
        .put(format!("{path}?digest={digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 201);
    let blob = http
        .get(registry.url(&format!("/v2/race/blobs/{digest}")))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(blob == *winner, "the stored blob is the winning chunk");
    registry.server.stop().await;
}
