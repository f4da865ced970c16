//! `ipfs-registry verify` on each store pair: a record whose content the
//! blob store lost is reported, and the command fails; the scrub pins it again when only
//! its pin was lost.

mod common;

use common::cid_of_blob;
use common::cli::verify_json;
use common::oci::Oci;
use common::StorePair;
use serde_json::Value;

fn digests(report: &Value, key: &str) -> Vec<String> {
    report[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key} in {report}"))
        .iter()
        .map(|entry| entry["digest"].as_str().unwrap().to_owned())
        .collect()
}

common::on_each_store_pair!(
    verify_reports_a_record_whose_content_is_gone,
    flavor = "current_thread"
);
async fn verify_reports_a_record_whose_content_is_gone(stores: StorePair) {
    let registry = stores.start_registry().await;
    let oci = Oci::new(&registry.base);
    let image = oci.push_image("verify/app", Some("1"), 2).await;
    // A quiet registry: its image layout published (pinned and recorded).
    oci.published_layout("verify/app", "1").await;

    let (succeeded, report) = verify_json(&registry.config, &[]);
    assert_eq!(report["records"], 3, "{report}");
    assert!(digests(&report, "missing").is_empty(), "{report}");
    if registry.config.ipfs.url.is_none() {
        // The data directory is this registry's alone; a test IPFS node holds other
        // tests' pins, which verify rightly lists as unknown to this registry.
        assert!(succeeded, "{report}");
        assert_eq!(report["unrecorded"], serde_json::json!([]), "{report}");
    }

    let lost = &image.layers[0];
    let cid = cid_of_blob(&lost.data);
    match &registry.config.ipfs.url {
        None => std::fs::remove_file(
            registry
                .config
                .data_dir
                .join("blobs/data")
                .join(cid.to_string()),
        )
        .unwrap(),
        Some(url) => {
            let unpin = url
                .join(&format!("api/v0/pin/rm?arg={cid}&recursive=true"))
                .unwrap();
            let answer = reqwest::Client::new().post(unpin).send().await.unwrap();
            assert!(
                answer.status().is_success(),
                "{}",
                answer.text().await.unwrap()
            );
        }
    }
    // The inventory alone: the scrub would pin an unpinned blob again (below).
    let (succeeded, report) = verify_json(&registry.config, &["--no-scrub"]);
    assert!(
        !succeeded,
        "a record without content is a disagreement: {report}"
    );
    assert_eq!(
        digests(&report, "missing"),
        vec![lost.digest.clone()],
        "{report}"
    );

    let (_, report) = verify_json(&registry.config, &[]);
    if registry.config.ipfs.url.is_none() {
        // The file is gone: unreadable, quarantined, still a record without content.
        assert_eq!(
            digests(&report["scrub"], "missing"),
            vec![lost.digest.clone()]
        );
        assert_eq!(digests(&report, "missing"), vec![lost.digest.clone()]);
    } else {
        // Only the pin was gone, the blocks are still on the node: pinned again.
        assert_eq!(
            report["scrub"]["repinned"],
            serde_json::json!([lost.digest]),
            "{report}"
        );
        assert!(digests(&report, "missing").is_empty(), "{report}");
    }
}

/// A chunked push whose join never committed (its process stopped between the join's
/// direct pins and the commit; here the join is made on the store alone) leaves direct pins
/// no record holds: verify reports them, and `--reindex` drops them, as it drops an image
/// layout no record knows. On a node of its own: `--reindex` drops every such pin there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_pins_of_a_join_never_completed_are_reported_and_dropped() {
    use futures::stream;
    use ipfs_registry::blobs::{BlobStore, ByteStream, ImportProfile};

    let node = common::private_node::PrivateNode::start();
    let registry = StorePair::PostgresIpfsNode
        .start_registry_with(|config| config.ipfs.url = Some(node.url.clone()))
        .await;
    let store = common::kubo::store_at(
        node.url.clone(),
        std::time::Duration::from_secs(30),
        ImportProfile::default(),
    );
    let chunk = ImportProfile::default().chunk_size as usize;
    let data = common::pseudo_random(common::unique_seed(), 4 * chunk);
    let mut parts = Vec::new();
    for part in data.chunks(2 * chunk) {
        let body: ByteStream = Box::pin(stream::iter([Ok(bytes::Bytes::copy_from_slice(part))]));
        parts.push(store.add(body).await.unwrap().cid);
    }
    let joined = store.concat(&parts).await.unwrap().expect("aligned parts");
    let root = joined.stored.cid.to_string();
    assert_eq!(store.direct_pins().await.unwrap(), vec![joined.stored.cid]);

    let (succeeded, report) = verify_json(&registry.config, &["--no-scrub"]);
    assert!(!succeeded, "{report}");
    assert_eq!(
        report["unrecorded_direct"],
        serde_json::json!([root]),
        "{report}"
    );

    // A directory pinned on the node (as a node's own `init` documents are) is no blob's
    // bytes: `--reindex` leaves it alone, and goes on.
    let (directory, block, _) = ipfs_registry::blobs::unixfs::directory_node(&[(
        "part".to_owned(),
        parts[0],
        2 * chunk as u64,
    )]);
    common::kubo::put_block(&node.url, &directory, &block).await;
    store.pin(&directory).await.unwrap();

    let (_, report) = verify_json(&registry.config, &["--no-scrub", "--reindex", "lost/found"]);
    assert_eq!(
        report["dropped_direct"],
        serde_json::json!([root]),
        "{report}"
    );
    assert_eq!(store.direct_pins().await.unwrap(), vec![]);
    let not_files = report["not_files"].as_array().expect("not_files");
    assert!(
        not_files.contains(&serde_json::json!(directory.to_string())),
        "{report}"
    );
    // The parts were pinned blobs of the profile: recorded.
    assert_eq!(
        report["reindexed"].as_array().map(Vec::len),
        Some(2),
        "{report}"
    );
    let (_, report) = verify_json(&registry.config, &["--no-scrub"]);
    assert_eq!(
        report["unrecorded_direct"],
        serde_json::json!([]),
        "{report}"
    );
    registry.server.stop().await;
}
