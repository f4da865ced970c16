//! The registry's public index (`federation.publish`), end to end on each store pair: skopeo
//! pushes images, `GET /v2/_ext/federation` names the index root (and, in Kubo mode, the
//! IPNS name the node resolves to it), and the index read back block by block — each block
//! checked against its CID, from the registry's own gateway without a token and from the
//! IPFS node — names every published image as `<repository>:<tag>` → its image CID. A
//! deleted tag leaves the index, and GC unpins the index it replaced.
//!
//! Needs skopeo (scripts/ensure-tools.sh), PostgreSQL and the test IPFS node.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cid::Cid;
use common::federation::{client, image_cid, push, small_image};
use common::skopeo::Skopeo;
use common::{StorePair, TestRegistry};
use ipfs_registry::blobs::unixfs::{directory_links, names_block};
use ipfs_registry::blobs::BlobStore;
use ipfs_registry::meta::gc::SweepPolicy;

common::on_each_store_pair!(the_index_names_every_published_image_and_follows_deletes);
common::on_each_store_pair!(with_auth_the_index_is_public_and_lists_only_public_repositories);

async fn start(pair: StorePair) -> TestRegistry {
    let key = format!("index-{}", common::unique_name());
    pair.start_registry_with(move |config| {
        config.federation.publish = true;
        // Every test registry on the shared node publishes under a name of its own.
        config.federation.ipns_key = key;
    })
    .await
}

/// `GET /v2/_ext/federation`, without a token.
async fn federation(registry: &TestRegistry) -> serde_json::Value {
    let answer = client()
        .get(registry.url("/v2/_ext/federation"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    answer.json().await.unwrap()
}

/// One block from the registry's gateway (no token), checked against its CID.
async fn gateway_block(registry: &TestRegistry, cid: &Cid) -> Vec<u8> {
    let answer = client()
        .get(registry.url(&format!("/ipfs/{cid}?format=raw")))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 200, "block {cid}");
    let block = answer.bytes().await.unwrap().to_vec();
    assert_eq!(names_block(cid, &block), Some(true), "block {cid}");
    block
}

/// The images the index under `root` names: `<repository>:<tag>` → image CID.
async fn read_index(registry: &TestRegistry, root: &Cid) -> BTreeMap<String, Cid> {
    read_index_while_served(registry, root)
        .await
        .expect("the current index is served")
}

/// [`read_index`]; `None` when a block is no longer served (the index was replaced twice
/// since its root was read, on a busy machine).
async fn read_index_while_served(
    registry: &TestRegistry,
    root: &Cid,
) -> Option<BTreeMap<String, Cid>> {
    let mut images = BTreeMap::new();
    let mut pending = vec![(String::new(), *root)];
    while let Some((prefix, cid)) = pending.pop() {
        let answer = client()
            .get(registry.url(&format!("/ipfs/{cid}?format=raw")))
            .send()
            .await
            .unwrap();
        if answer.status().as_u16() != 200 {
            return None;
        }
        let block = answer.bytes().await.unwrap().to_vec();
        assert_eq!(names_block(&cid, &block), Some(true), "block {cid}");
        for (name, child) in directory_links(&block).expect("a plain UnixFS directory") {
            if name.contains(':') {
                images.insert(format!("{prefix}{name}"), child);
            } else {
                pending.push((format!("{prefix}{name}/"), child));
            }
        }
    }
    Some(images)
}

fn root_of(status: &serde_json::Value) -> Option<Cid> {
    status["root"]
        .as_str()?
        .strip_prefix("/ipfs/")?
        .parse()
        .ok()
}

/// Waits until the index names exactly `expected`; returns its root.
async fn index_naming(registry: &TestRegistry, expected: &BTreeMap<String, Cid>) -> Cid {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = federation(registry).await;
        if let Some(root) = root_of(&status) {
            if read_index_while_served(registry, &root).await.as_ref() == Some(expected) {
                return root;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the index never named {expected:?}: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn the_index_names_every_published_image_and_follows_deletes(pair: StorePair) {
    let registry = start(pair).await;
    let skopeo = Skopeo::new();
    // A repository that is another's tag name's path: `idx/app:sub` and `idx/app/sub:…`.
    for target in [
        "idx/app:v1",
        "idx/app:sub",
        "idx/app/sub:latest",
        "solo:1.0",
    ] {
        push(&skopeo, &registry, &small_image(), target).await;
    }
    let mut expected = BTreeMap::new();
    for (repo, tag) in [
        ("idx/app", "v1"),
        ("idx/app", "sub"),
        ("idx/app/sub", "latest"),
        ("solo", "1.0"),
    ] {
        expected.insert(
            format!("{repo}:{tag}"),
            image_cid(&registry, repo, tag).await,
        );
    }
    let first = index_naming(&registry, &expected).await;
    let status = federation(&registry).await;
    assert_eq!(status["publish"], true, "{status}");
    assert!(status["updated_at"].is_string(), "{status}");
    assert_eq!(
        registry
            .metric("ipfs_registry_federation_index_images")
            .await,
        Some(4.0)
    );

    match pair {
        StorePair::PostgresIpfsNode => {
            // On the IPFS network: the node has every block, and the IPNS name resolves to
            // the root.
            let answer = client()
                .post(common::ipfs_url().join("api/v0/block/get").unwrap())
                .query(&[("arg", first.to_string())])
                .send()
                .await
                .unwrap();
            assert!(answer.status().is_success());
            assert_eq!(
                names_block(&first, &answer.bytes().await.unwrap()),
                Some(true)
            );
            let name = published_name(&registry, &first).await;
            let resolved: serde_json::Value = client()
                .post(common::ipfs_url().join("api/v0/name/resolve").unwrap())
                .query(&[("arg", name.as_str())])
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(resolved["Path"], format!("/ipfs/{first}"), "{resolved}");
        }
        StorePair::Embedded => {
            // No IPNS without an IPFS node: the root is served over HTTP only.
            assert!(status["ipns"].is_null(), "{status}");
        }
    }

    // A deleted tag leaves the index; the index it replaced is unpinned by GC.
    let deleted = client()
        .delete(registry.url("/v2/idx/app/manifests/sub"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status().as_u16(), 202);
    expected.remove("idx/app:sub");
    let second = index_naming(&registry, &expected).await;
    assert_ne!(second, first);
    if pair == StorePair::PostgresIpfsNode {
        // The name follows the index.
        published_name(&registry, &second).await;
    }
    let store: Arc<dyn BlobStore> = ipfs_registry::blobs::open(
        &registry.config,
        Arc::new(ipfs_registry::metrics::Metrics::new()),
    )
    .unwrap();
    let unrecorded = registry.server.registry.unrecorded_content().await.unwrap();
    assert!(
        !unrecorded.contains(&first) && !unrecorded.contains(&second),
        "{unrecorded:?}"
    );
    let policy = SweepPolicy {
        grace_period: Duration::from_secs(3600),
        untagged_retention: None,
        upload_expiry: Duration::from_secs(24 * 3600),
        ..SweepPolicy::default()
    };
    registry
        .server
        .registry
        .collect_garbage(&policy, false, &|_| {})
        .await
        .unwrap()
        .expect("no other GC run");
    assert!(
        store.is_pinned(&second).await.unwrap(),
        "current index kept"
    );
    assert!(
        !store.is_pinned(&first).await.unwrap(),
        "replaced index unpinned"
    );
    assert_eq!(read_index(&registry, &second).await, expected);
}

/// Waits until the registry reports its IPNS name published naming `root`; returns the
/// `/ipns/…` path.
async fn published_name(registry: &TestRegistry, root: &Cid) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = federation(registry).await;
        if status["ipns_root"] == format!("/ipfs/{root}") {
            let name = status["ipns"].as_str().expect("an IPNS name").to_owned();
            assert!(name.starts_with("/ipns/"), "{status}");
            return name;
        }
        assert!(
            Instant::now() < deadline,
            "{root} never published under IPNS: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// With auth on, the federation endpoint and the index's blocks need no token, and only
/// repositories anonymous users may pull are listed: an image published while its
/// repository was public leaves the index once it is not.
async fn with_auth_the_index_is_public_and_lists_only_public_repositories(pair: StorePair) {
    let key = format!("index-{}", common::unique_name());
    let auth = common::auth::start_auth_registry_with(pair, move |config| {
        config.federation.publish = true;
        config.federation.ipns_key = key;
    })
    .await;
    auth.add_user("admin", "admin-password", true).await;
    auth.make_public("open/*").await;
    auth.make_public("closing/*").await;
    let admin = auth
        .client(
            Some(("admin", "admin-password")),
            &[
                "repository:open/app:pull,push",
                "repository:closing/app:pull,push",
                "repository:secret/app:pull,push",
            ],
        )
        .await;
    admin.push_image("open/app", Some("v1"), 1).await;
    admin.push_image("closing/app", Some("v1"), 1).await;
    admin.push_image("secret/app", Some("v1"), 1).await;
    let registry = &auth.registry;
    let cid_of = |repo: &'static str| {
        let admin = &admin;
        async move {
            let layout = admin.published_layout(repo, "v1").await;
            layout["cid"].as_str().unwrap().parse::<Cid>().unwrap()
        }
    };
    let open = cid_of("open/app").await;
    let closing = cid_of("closing/app").await;
    index_naming(
        registry,
        &BTreeMap::from([
            ("closing/app:v1".to_owned(), closing),
            ("open/app:v1".to_owned(), open),
        ]),
    )
    .await;

    // Blocks inside a public layout: served to anyone where the blob store knows which
    // DAG holds a block (embedded); on an IPFS node only the roots (the network has them).
    let blobs_directory = |layout: Cid| async move {
        let root = gateway_block(registry, &layout).await;
        directory_links(&root)
            .unwrap()
            .into_iter()
            .find_map(|(name, cid)| (name == "blobs").then_some(cid))
            .expect("a blobs directory")
    };
    let status_of = |cid: Cid| async move {
        client()
            .get(registry.url(&format!("/ipfs/{cid}?format=raw")))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    let inner_status = match pair {
        StorePair::Embedded => 200,
        StorePair::PostgresIpfsNode => 401,
    };
    let (open_blobs, closing_blobs) = (blobs_directory(open).await, blobs_directory(closing).await);
    assert_eq!(status_of(closing_blobs).await, inner_status);

    assert!(auth.store.set_public("closing/*", false).await.unwrap());
    // Rebuilt on the next refresh, seconds later.
    let root = index_naming(
        registry,
        &BTreeMap::from([("open/app:v1".to_owned(), open)]),
    )
    .await;
    // The layout of the repository that is private now is not served anonymously.
    let hidden = client()
        .get(registry.url(&format!("/ipfs/{closing}?format=raw")))
        .send()
        .await
        .unwrap();
    assert_eq!(hidden.status().as_u16(), 401);
    assert_eq!(status_of(open_blobs).await, inner_status);
    assert_eq!(status_of(closing_blobs).await, 401);
    // The index itself is anyone's.
    gateway_block(registry, &root).await;
}
