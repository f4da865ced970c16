//! `[[federation.follow]]` rules (docs/federation.md, "Following other registries"), with
//! real registries, real IPFS nodes and skopeo. A rule follows a registry's own public index
//! (over IPNS between nodes, or by the registry's URL), or an index built by hand in a
//! node's MFS (`files/mkdir`, `files/cp`: one made independently of the registry's code),
//! from an `/ipfs/` root or from a URL whose `GET /v2/_ext/federation` a stand-in answers.
//! Rules poll every second; the tests wait on the rules' status with deadlines.
//!
//! Needs skopeo (scripts/ensure-tools.sh), PostgreSQL and the test IPFS node.

mod common;

use std::time::{Duration, Instant};

use common::federation::{image_cid, push};
use common::follow::*;
use common::images::*;
use common::skopeo::Skopeo;
use common::{StorePair, TestRegistry};
use ipfs_registry::config::FollowRule;

common::on_store_pairs!([postgres_ipfs_node: PostgresIpfsNode] an_index_built_by_hand_is_followed_from_its_root);
common::on_store_pairs!([postgres_ipfs_node: PostgresIpfsNode] moved_tags_follow_and_removed_tags_go_only_with_delete);
common::on_store_pairs!([postgres_ipfs_node: PostgresIpfsNode] one_bad_entry_fails_alone_and_the_rule_says_so);
common::on_store_pairs!([postgres_ipfs_node: PostgresIpfsNode] a_restart_mid_pass_resumes_where_it_stopped);
common::on_store_pairs!([embedded: Embedded] two_embedded_registries_replicate_over_http);
common::on_store_pairs!([postgres_ipfs_node: PostgresIpfsNode] c_follows_b_which_follows_a_by_their_urls);
common::on_store_pairs!([embedded: Embedded] with_auth_only_admins_see_the_rules);
common::on_store_pairs!([postgres_ipfs_node: PostgresIpfsNode] replicas_import_each_tag_once);

/// Registries each with its own IPFS node and database: B (on a DHT server node, as A) follows
/// the IPNS name A publishes its index under, sees a tag moved on A, and replicates a
/// ~10 MiB image (timed, and the bytes A's node sends counted); C follows B's URL from a
/// node connected to B's only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_follows_an_ipns_name_across_two_nodes() {
    use common::private_node::PrivateNode;
    let (node1, node2) = tokio::join!(
        tokio::task::spawn_blocking(PrivateNode::start_dht_server),
        tokio::task::spawn_blocking(PrivateNode::start_dht_server),
    );
    let (node1, node2) = (node1.unwrap(), node2.unwrap());
    // B's node reaches A's through a proxy that counts what A's node sends it.
    let a_to_b = CountingProxy::start(node1.swarm_port.unwrap()).await;
    swarm_connect(&node2.url, a_to_b.port, &node1.peer_id().await).await;
    // A publishes its own index under its IPNS name, as any registry with
    // `federation.publish` does.
    let a = StorePair::PostgresIpfsNode
        .start_registry_with(|config| {
            config.ipfs.url = Some(node1.url.clone());
            config.federation.publish = true;
        })
        .await;
    let skopeo = Skopeo::new();
    let (one, two) = (tiny_image(), tiny_image());
    let v1 = publish(&skopeo, &a, &one, "fed/app:v1").await;
    let (first, name) = named_index(&a, &["fed/app:v1"], &[v1]).await;

    let b = StorePair::PostgresIpfsNode
        .start_registry_with(|config| {
            config.ipfs.url = Some(node2.url.clone());
            config.federation.follow = vec![rule("a", &format!("/ipns/{name}"), "", false)];
            // B publishes its own index, for C.
            config.federation.publish = true;
        })
        .await;
    let waited = Instant::now();
    wait_in_sync(&b, "a", &first, SYNC).await;
    eprintln!("first sync over IPNS: {:?}", waited.elapsed());
    assert_eq!(
        tagged(&b, "fed/app", "v1").await,
        Some(one.manifest.digest.clone())
    );

    // The tag moves on A; A's index is rebuilt and published again under the same name.
    let moved = publish(&skopeo, &a, &two, "fed/app:v1").await;
    let (second, same) = named_index(&a, &["fed/app:v1"], &[moved]).await;
    assert_eq!(same, name);
    wait_in_sync(&b, "a", &second, SYNC).await;
    assert_eq!(
        tagged(&b, "fed/app", "v1").await,
        Some(two.manifest.digest.clone())
    );

    // A ~10 MiB image, from the push on A to a tag on B (A's layout, index and IPNS
    // record published in between).
    let served_before = a_to_b.served();
    let big = make_image(
        "amd64",
        "linux",
        &[LayerSpec::gzip(6 << 20), LayerSpec::gzip(4 << 20)],
        false,
    );
    let started = Instant::now();
    let big_v1 = publish(&skopeo, &a, &big, "fed/big:v1").await;
    let (third, _) = named_index(&a, &["fed/app:v1", "fed/big:v1"], &[moved, big_v1]).await;
    let published = started.elapsed();
    wait_in_sync(&b, "a", &third, SYNC).await;
    let pullable = started.elapsed();
    assert_eq!(
        tagged(&b, "fed/big", "v1").await,
        Some(big.manifest.digest.clone())
    );
    let served_to_b = a_to_b.served() - served_before;
    let size: u64 = big.blobs().iter().map(|b| b.data.len() as u64).sum();
    assert!(
        served_to_b >= size,
        "{served_to_b} bytes received for {size}"
    );

    // C follows B by its URL: B's own index (its layouts of what it imported: the same
    // image CIDs). C's node is connected to B's only, through a counting proxy, and routes
    // nothing (no DHT): it cannot find A's node, so every block comes from B's.
    let b_app = image_cid(&b, "fed/app", "v1").await;
    let b_big = image_cid(&b, "fed/big", "v1").await;
    assert_eq!(
        (b_app, b_big),
        (moved, big_v1),
        "the same layouts, the same CIDs"
    );
    let b_root = index_with(&b, &["fed/app:v1", "fed/big:v1"], &[]).await;
    let node3 = tokio::task::spawn_blocking(PrivateNode::start_on_swarm)
        .await
        .unwrap();
    let b_to_c = CountingProxy::start(node2.swarm_port.unwrap()).await;
    swarm_connect(&node3.url, b_to_c.port, &node2.peer_id().await).await;
    let a_served_before_c = a_to_b.served();
    let c_started = Instant::now();
    let c = StorePair::PostgresIpfsNode
        .start_registry_with(|config| {
            config.ipfs.url = Some(node3.url.clone());
            config.federation.follow = vec![rule("b", &b.base, "", false)];
        })
        .await;
    wait_in_sync(&c, "b", &b_root, SYNC).await;
    let c_took = c_started.elapsed();
    assert_eq!(
        tagged(&c, "fed/big", "v1").await,
        Some(big.manifest.digest.clone())
    );
    let served_to_c = b_to_c.served();
    assert!(
        served_to_c >= size,
        "{served_to_c} bytes from B's node for {size}"
    );
    let a_served_during_c = a_to_b.served() - a_served_before_c;
    assert!(
        a_served_during_c < size / 10,
        "A's node served {a_served_during_c} bytes for C"
    );
    eprintln!(
        "10 MiB image ({size} bytes of blobs): pushed to A and published {published:?}, \
         tagged on B {pullable:?} after the push began; A's node served {served_to_b} bytes \
         to B's; C (following B) in sync {c_took:?} after its start, {served_to_c} bytes \
         from B's node, {a_served_during_c} more from A's"
    );
}

/// `registry`'s index once it names exactly `want` with `layouts` among its images and
/// its IPNS name points at it: the root and the name.
async fn named_index(
    registry: &TestRegistry,
    want: &[&str],
    layouts: &[cid::Cid],
) -> (cid::Cid, String) {
    let root = index_with(registry, want, layouts).await;
    let deadline = Instant::now() + SYNC;
    loop {
        let status = federation(registry).await;
        if status["ipns_root"] == format!("/ipfs/{root}") {
            let name = status["ipns"].as_str().expect("an IPNS name");
            return (root, name.trim_start_matches("/ipns/").to_owned());
        }
        assert!(Instant::now() < deadline, "{root} not under IPNS: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A pass's deadline on the shared 2-core machine.
const SYNC: Duration = Duration::from_secs(120);

fn tiny_image() -> Image {
    make_image("amd64", "linux", &[LayerSpec::tar(8 * 1024)], false)
}

fn rule(name: &str, source: &str, prefix: &str, delete: bool) -> FollowRule {
    FollowRule {
        name: Some(name.to_owned()),
        source: source.to_owned(),
        repositories: vec!["fed/*".parse().unwrap()],
        prefix: Some(prefix.to_owned()),
        interval: Duration::from_secs(1),
        delete,
    }
}

/// A registry that publishes its index (under an IPNS key of its own on a shared node).
async fn publishing(pair: StorePair, rules: Vec<FollowRule>) -> TestRegistry {
    let key = format!("follow-{}", common::unique_name());
    pair.start_registry_with(move |config| {
        config.federation.publish = true;
        config.federation.ipns_key = key;
        config.federation.follow = rules;
        config.delete_enabled = true;
    })
    .await
}

/// The index root `registry` publishes, once it names exactly `want` (`repo:tag`), and
/// among its layouts every one of `layouts` (polling).
async fn index_with(registry: &TestRegistry, want: &[&str], layouts: &[cid::Cid]) -> cid::Cid {
    let deadline = Instant::now() + SYNC;
    loop {
        let status = federation(registry).await;
        if let Some(root) = status["root"]
            .as_str()
            .and_then(|r| r.strip_prefix("/ipfs/"))
            .and_then(|c| c.parse::<cid::Cid>().ok())
        {
            let names = index_names(registry, &root).await;
            if want.iter().all(|w| names.iter().any(|(n, _)| n == w))
                && names.len() == want.len()
                && layouts.iter().all(|l| names.iter().any(|(_, c)| c == l))
            {
                return root;
            }
        }
        assert!(Instant::now() < deadline, "no index of {want:?}: {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `repo:tag` of every entry of the index under `root`, read from the registry's gateway.
async fn index_names(registry: &TestRegistry, root: &cid::Cid) -> Vec<(String, cid::Cid)> {
    let mut names = Vec::new();
    let mut pending = vec![(String::new(), *root)];
    while let Some((prefix, cid)) = pending.pop() {
        let block = common::federation::client()
            .get(registry.url(&format!("/ipfs/{cid}?format=raw")))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        for (name, child) in ipfs_registry::blobs::unixfs::directory_links(&block).unwrap() {
            if name.contains(':') {
                names.push((format!("{prefix}{name}"), child));
            } else {
                pending.push((format!("{prefix}{name}/"), child));
            }
        }
    }
    names
}

async fn start_b(pair: StorePair, rules: Vec<FollowRule>) -> TestRegistry {
    pair.start_registry_with(|config| config.federation.follow = rules)
        .await
}

/// `federation_follow_imports_total{rule, outcome}` of `registry`.
async fn follow_imports(registry: &TestRegistry, rule: &str, outcome: &str) -> f64 {
    let series = format!(
        "ipfs_registry_federation_follow_imports_total{{rule=\"{rule}\",outcome=\"{outcome}\"}}"
    );
    registry
        .metric(&series)
        .await
        .unwrap_or_else(|| panic!("{series}"))
}

/// Pushes `image` to A as `target` and returns its layout's root once published.
async fn publish(skopeo: &Skopeo, a: &TestRegistry, image: &Image, target: &str) -> cid::Cid {
    push(skopeo, a, image, target).await;
    let (repo, tag) = target.split_once(':').unwrap();
    image_cid(a, repo, tag).await
}

async fn an_index_built_by_hand_is_followed_from_its_root(pair: StorePair) {
    let a = pair.start_registry().await;
    let skopeo = Skopeo::new();
    let (app, lib, other) = (tiny_image(), tiny_image(), tiny_image());
    let app_v1 = publish(&skopeo, &a, &app, "fed/app:v1").await;
    let lib_v1 = publish(&skopeo, &a, &lib, "fed/team/lib:v1").await;
    let other_v1 = publish(&skopeo, &a, &other, "other/x:v1").await;
    let index = MfsIndex::new(common::ipfs_url());
    let root = index
        .set(&[
            ("fed/app:v1", &app_v1),
            ("fed/team/lib:v1", &lib_v1),
            ("other/x:v1", &other_v1),
        ])
        .await;

    let b = start_b(
        pair,
        vec![rule("a", &format!("/ipfs/{root}"), "mirror/", false)],
    )
    .await;
    let status = wait_in_sync(&b, "a", &root, SYNC).await;
    assert_eq!(status["tags_followed"], 2, "{status}");
    assert_eq!(status["last_error"], serde_json::Value::Null, "{status}");
    assert_eq!(status["source"], format!("/ipfs/{root}"));
    assert!(
        status["lag_seconds"].as_f64().is_some_and(|lag| lag < 60.0),
        "{status}"
    );
    assert_eq!(
        tagged(&b, "mirror/fed/app", "v1").await,
        Some(app.manifest.digest.clone())
    );
    assert_eq!(
        tagged(&b, "mirror/fed/team/lib", "v1").await,
        Some(lib.manifest.digest.clone())
    );
    // Not matched by `fed/*`: not even read.
    assert_eq!(tagged(&b, "mirror/other/x", "v1").await, None);
    assert_eq!(follow_imports(&b, "a", "imported").await, 2.0);
    assert!(b
        .metric("ipfs_registry_federation_follow_last_success_timestamp_seconds{rule=\"a\"}")
        .await
        .is_some_and(|t| t > 0.0));

    // Pulled byte for byte from B.
    let out = tempfile::tempdir().unwrap();
    skopeo
        .copy(
            &format!("docker://{}/mirror/fed/app:v1", b.host()),
            &format!("oci:{}:app", out.path().display()),
            &["--preserve-digests"],
        )
        .await;
    for blob in app.blobs() {
        let hex = blob.digest.strip_prefix("sha256:").unwrap();
        let pulled = std::fs::read(out.path().join("blobs/sha256").join(hex)).unwrap();
        assert_eq!(pulled, blob.data, "{}", blob.digest);
    }
    index.remove().await;
}

async fn moved_tags_follow_and_removed_tags_go_only_with_delete(pair: StorePair) {
    let a = pair.start_registry().await;
    let skopeo = Skopeo::new();
    let (one, two, three) = (tiny_image(), tiny_image(), tiny_image());
    let app_v1 = publish(&skopeo, &a, &one, "fed/app:v1").await;
    let app_v2 = publish(&skopeo, &a, &two, "fed/app:v2").await;
    let lib_v1 = publish(&skopeo, &a, &three, "fed/lib:v1").await;
    let source = FederationStandIn::start().await;
    let b = start_b(
        pair,
        vec![
            rule("del", &source.url, "d/", true),
            rule("keep", &source.url, "k/", false),
        ],
    )
    .await;

    // No index yet: the rule says why, and keeps asking.
    let deadline = Instant::now() + SYNC;
    loop {
        let status = rule_status(&b, "del").await;
        if status["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("no index"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "{status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let index = MfsIndex::new(common::ipfs_url());
    let first = index
        .set(&[
            ("fed/app:v1", &app_v1),
            ("fed/app:v2", &app_v2),
            ("fed/lib:v1", &lib_v1),
        ])
        .await;
    source.set_root(first);
    for name in ["del", "keep"] {
        let status = wait_in_sync(&b, name, &first, SYNC).await;
        assert_eq!(status["tags_followed"], 3, "{status}");
        assert_eq!(status["last_error"], serde_json::Value::Null, "{status}");
    }
    for prefix in ["d", "k"] {
        assert_eq!(
            tagged(&b, &format!("{prefix}/fed/app"), "v1").await,
            Some(one.manifest.digest.clone())
        );
    }
    // On A, v1 moves to the second image and v2 goes.
    let moved = publish(&skopeo, &a, &two, "fed/app:v1").await;
    assert_ne!(moved, app_v1);
    let second = index
        .set(&[("fed/app:v1", &moved), ("fed/lib:v1", &lib_v1)])
        .await;
    source.set_root(second);
    for name in ["del", "keep"] {
        wait_in_sync(&b, name, &second, SYNC).await;
    }
    for prefix in ["d", "k"] {
        assert_eq!(
            tagged(&b, &format!("{prefix}/fed/app"), "v1").await,
            Some(two.manifest.digest.clone()),
            "{prefix}: the moved tag"
        );
    }
    assert_eq!(tagged(&b, "d/fed/app", "v2").await, None, "deleted");
    assert_eq!(
        tagged(&b, "k/fed/app", "v2").await,
        Some(two.manifest.digest.clone()),
        "kept without delete"
    );
    assert_eq!(follow_imports(&b, "del", "deleted").await, 1.0);
    assert_eq!(follow_imports(&b, "keep", "deleted").await, 0.0);

    // Someone moves a followed tag here: the rule no longer owns what it points at, and
    // when a third index drops lib, only the tag that still points at what the rule
    // imported would go.
    push(&skopeo, &b, &one, "d/fed/lib:v1").await;
    let third = index.set(&[("fed/app:v1", &moved)]).await;
    source.set_root(third);
    for name in ["del", "keep"] {
        let status = wait_in_sync(&b, name, &third, SYNC).await;
        assert_eq!(status["tags_followed"], 1, "{status}");
    }
    assert_eq!(
        tagged(&b, "d/fed/lib", "v1").await,
        Some(one.manifest.digest.clone()),
        "a tag moved here is not the rule's to delete"
    );
    assert_eq!(
        tagged(&b, "k/fed/lib", "v1").await,
        Some(three.manifest.digest.clone())
    );
    assert_eq!(follow_imports(&b, "del", "deleted").await, 1.0);
    index.remove().await;
}

async fn one_bad_entry_fails_alone_and_the_rule_says_so(pair: StorePair) {
    let a = pair.start_registry().await;
    let skopeo = Skopeo::new();
    let image = tiny_image();
    let good = publish(&skopeo, &a, &image, "fed/app:v1").await;
    // A directory that is no image layout (the good layout's blobs/ directory).
    let bad = MfsIndex::new(common::ipfs_url());
    let not_a_layout = bad.set(&[("x:y", &good)]).await;
    let index = MfsIndex::new(common::ipfs_url());
    let root = index
        .set(&[("fed/app:v1", &good), ("fed/bad:v1", &not_a_layout)])
        .await;
    let b = start_b(pair, vec![rule("a", &format!("/ipfs/{root}"), "m/", false)]).await;
    let deadline = Instant::now() + SYNC;
    let status = loop {
        let status = rule_status(&b, "a").await;
        if status["last_error"].is_string() {
            break status;
        }
        assert!(Instant::now() < deadline, "{status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let error = status["last_error"].as_str().unwrap();
    assert!(
        error.contains("1 of 2 tags failed") && error.contains("m/fed/bad:v1"),
        "{error}"
    );
    // Not in sync: the root is not recorded, and the next poll tries again.
    assert_eq!(status["last_root"], serde_json::Value::Null, "{status}");
    assert_eq!(
        tagged(&b, "m/fed/app", "v1").await,
        Some(image.manifest.digest.clone())
    );
    assert_eq!(tagged(&b, "m/fed/bad", "v1").await, None);
    assert!(follow_imports(&b, "a", "failed").await >= 1.0);
    assert!(b
        .metric("ipfs_registry_federation_follow_errors_total{rule=\"a\"}")
        .await
        .is_some_and(|n| n >= 1.0));
    index.remove().await;
    bad.remove().await;
}

/// A pass cut short by a restart resumes where it stopped; a restart also puts back a
/// followed tag deleted here.
async fn a_restart_mid_pass_resumes_where_it_stopped(pair: StorePair) {
    let a = pair.start_registry().await;
    let skopeo = Skopeo::new();
    let mut tags = Vec::new();
    let mut images = Vec::new();
    for i in 0..6 {
        let image = make_image("amd64", "linux", &[LayerSpec::tar(300 * 1024)], false);
        let target = format!("fed/app{i}:v1");
        tags.push((target.clone(), publish(&skopeo, &a, &image, &target).await));
        images.push(image);
    }
    let index = MfsIndex::new(common::ipfs_url());
    let entries: Vec<(&str, &cid::Cid)> = tags.iter().map(|(t, c)| (t.as_str(), c)).collect();
    let root = index.set(&entries).await;
    let rules = vec![rule("a", &format!("/ipfs/{root}"), "m/", false)];
    let b = start_b(pair, rules).await;
    // Stopped as soon as the pass has imported something, most likely before it ends.
    let deadline = Instant::now() + SYNC;
    loop {
        if follow_imports(&b, "a", "imported").await >= 1.0 {
            break;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let config = b.config.clone();
    let done_before = follow_imports(&b, "a", "imported").await;
    b.server.stop().await;

    let b = common::start_registry_from(config).await;
    let status = wait_in_sync(&b, "a", &root, SYNC).await;
    assert_eq!(status["tags_followed"], 6, "{status}");
    for (i, image) in images.iter().enumerate() {
        assert_eq!(
            tagged(&b, &format!("m/fed/app{i}"), "v1").await,
            Some(image.manifest.digest.clone())
        );
    }
    // What the first process imported is not imported again.
    let imported_after = follow_imports(&b, "a", "imported").await;
    eprintln!("imported before the restart: {done_before}, after it: {imported_after}");
    assert!(
        imported_after <= 6.0 - done_before,
        "{done_before} imported before the restart, {imported_after} after"
    );

    // A followed tag deleted here comes back after a start (and every 10 intervals), the
    // source unchanged.
    let meta = ipfs_registry::server::metadata_stores(&b.config)
        .await
        .unwrap()
        .meta;
    let (repo, tag) = ("m/fed/app0".parse().unwrap(), "v1".parse().unwrap());
    assert!(meta.delete_tag(&repo, &tag).await.unwrap());
    assert_eq!(tagged(&b, "m/fed/app0", "v1").await, None);
    let config = b.config.clone();
    b.server.stop().await;
    let b = common::start_registry_from(config).await;
    let deadline = Instant::now() + SYNC;
    while tagged(&b, "m/fed/app0", "v1").await != Some(images[0].manifest.digest.clone()) {
        assert!(Instant::now() < deadline, "the deleted tag never came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    index.remove().await;
}

/// Two embedded registries, no IPFS node: B follows A's URL (A's index and blocks over
/// A's HTTP gateway). A source corrupting one block is refused with nothing tagged; then a
/// tag moved on A moves on B, and a tag deleted on A is deleted on B (`delete = true`).
async fn two_embedded_registries_replicate_over_http(pair: StorePair) {
    let a = publishing(pair, Vec::new()).await;
    let skopeo = Skopeo::new();
    let (one, two) = (tiny_image(), tiny_image());
    push(&skopeo, &a, &one, "fed/app:v1").await;
    push(&skopeo, &a, &two, "fed/app:v2").await;
    index_with(&a, &["fed/app:v1", "fed/app:v2"], &[]).await;
    let proxy = CorruptingProxy::start(a.base.clone()).await;
    // The manifest's file is one raw block, read alone: corrupted on the way.
    let manifest_block = common::cid_of_blob(&one.manifest.data);
    proxy.corrupt(Some(manifest_block));
    let b = start_b(pair, vec![rule("a", &proxy.url, "", true)]).await;
    let deadline = Instant::now() + SYNC;
    let status = loop {
        let status = rule_status(&b, "a").await;
        if status["last_error"].is_string() {
            break status;
        }
        assert!(Instant::now() < deadline, "{status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let error = status["last_error"].as_str().unwrap();
    assert!(
        error.contains("fed/app:v1") && error.contains("does not match its CID"),
        "{error}"
    );
    assert_eq!(tagged(&b, "fed/app", "v1").await, None, "nothing tagged");

    proxy.corrupt(None);
    let root = index_with(&a, &["fed/app:v1", "fed/app:v2"], &[]).await;
    let status = wait_in_sync(&b, "a", &root, SYNC).await;
    assert_eq!(status["tags_followed"], 2, "{status}");
    assert_eq!(
        tagged(&b, "fed/app", "v1").await,
        Some(one.manifest.digest.clone())
    );

    // Moved and deleted on A.
    push(&skopeo, &a, &two, "fed/app:v1").await;
    let deleted = common::federation::client()
        .delete(a.url("/v2/fed/app/manifests/v2"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 202);
    let moved = image_cid(&a, "fed/app", "v1").await;
    let changed = index_with(&a, &["fed/app:v1"], &[moved]).await;
    wait_in_sync(&b, "a", &changed, SYNC).await;
    assert_eq!(
        tagged(&b, "fed/app", "v1").await,
        Some(two.manifest.digest.clone())
    );
    assert_eq!(tagged(&b, "fed/app", "v2").await, None);
}

/// Three registries on PostgreSQL and the IPFS node, each publishing its index: B follows
/// A's URL, C follows B's; what A pushes reaches C through B, under the same image CIDs.
async fn c_follows_b_which_follows_a_by_their_urls(pair: StorePair) {
    let a = publishing(pair, Vec::new()).await;
    let b = publishing(pair, vec![rule("a", &a.base, "", false)]).await;
    let c = publishing(pair, vec![rule("b", &b.base, "", false)]).await;
    let skopeo = Skopeo::new();
    let image = tiny_image();
    let started = Instant::now();
    push(&skopeo, &a, &image, "fed/app:v1").await;
    let a_root = index_with(&a, &["fed/app:v1"], &[]).await;
    wait_in_sync(&b, "a", &a_root, SYNC).await;
    let b_root = index_with(&b, &["fed/app:v1"], &[]).await;
    assert_eq!(b_root, a_root, "the same images, the same index");
    wait_in_sync(&c, "b", &b_root, SYNC).await;
    eprintln!("A to C through B: {:?}", started.elapsed());
    assert_eq!(
        tagged(&c, "fed/app", "v1").await,
        Some(image.manifest.digest.clone())
    );
    assert_eq!(
        image_cid(&c, "fed/app", "v1").await,
        image_cid(&a, "fed/app", "v1").await
    );
}

/// With auth on, the rules' status (sources, errors) is shown to admins only; the index's
/// own fields stay public.
async fn with_auth_only_admins_see_the_rules(pair: StorePair) {
    let registry = common::auth::start_auth_registry_with(pair, |config| {
        config.federation.follow = vec![rule("a", "http://127.0.0.1:9", "", false)];
    })
    .await;
    registry.add_user("root", "root-password", true).await;
    registry.add_user("alice", "alice-password", false).await;
    registry.grant("alice", "*", "pull,push").await;
    let get = |token: Option<String>| {
        let url = format!("{}/v2/_ext/federation", registry.base());
        async move {
            let mut request = common::federation::client().get(url);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let answer = request.send().await.unwrap();
            assert_eq!(answer.status(), 200);
            answer.json::<serde_json::Value>().await.unwrap()
        }
    };
    let anonymous = get(None).await;
    assert!(anonymous.get("publish").is_some(), "{anonymous}");
    assert!(anonymous.get("follow").is_none(), "{anonymous}");
    let alice = registry.token(Some(("alice", "alice-password")), &[]).await;
    assert!(get(Some(alice)).await.get("follow").is_none());
    let root = registry.token(Some(("root", "root-password")), &[]).await;
    let deadline = Instant::now() + SYNC;
    loop {
        let body = get(Some(root.clone())).await;
        let rules = body["follow"]
            .as_array()
            .expect("follow, for an admin")
            .clone();
        assert_eq!(rules.len(), 1, "{body}");
        assert_eq!(rules[0]["name"], "a");
        // The source cannot be reached: the rule says so.
        if rules[0]["last_error"].is_string() {
            break;
        }
        assert!(Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Two replicas of B (one database, one node) run the same rule: the pass's lease lets one
/// import while the other waits, and then finds the rule in sync: every tag is imported
/// once in all.
async fn replicas_import_each_tag_once(pair: StorePair) {
    let a = pair.start_registry().await;
    let skopeo = Skopeo::new();
    let mut entries = Vec::new();
    for i in 0..3 {
        let target = format!("fed/app{i}:v1");
        let layout = publish(&skopeo, &a, &tiny_image(), &target).await;
        entries.push((target, layout));
    }
    let index = MfsIndex::new(common::ipfs_url());
    let listed: Vec<(&str, &cid::Cid)> = entries.iter().map(|(t, c)| (t.as_str(), c)).collect();
    let root = index.set(&listed).await;
    let rules = vec![rule("a", &format!("/ipfs/{root}"), "", false)];
    let mut config = pair.test_config().await;
    config.federation.follow = rules;
    let (one, two) = tokio::join!(
        common::start_registry_from(config.clone()),
        common::start_registry_from(config)
    );
    wait_in_sync(&one, "a", &root, SYNC).await;
    wait_in_sync(&two, "a", &root, SYNC).await;
    // Both replicas polled since (each records the root it found unchanged).
    let imported =
        follow_imports(&one, "a", "imported").await + follow_imports(&two, "a", "imported").await;
    assert_eq!(imported, 3.0, "each tag imported once across the replicas");
    index.remove().await;
}
