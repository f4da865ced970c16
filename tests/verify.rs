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
