//! The binary's operational side: JSON logs with request ids and blob fields, the log level
//! from configuration and environment, graceful exit on SIGTERM, and `gc` (with retention
//! rules: `--dry-run`'s listing), on each store pair (the child processes use the test
//! registry's stores).

mod common;

use common::cli::{
    gc_command, registry_command, serve_command, stores_env, succeeded, Served, SERVE_QUIET_LOG,
};
use common::oci::{random_bytes, sha256, Oci};
use common::StorePair;
use serde_json::Value;

/// `serve` as a child process on the stores of `config`, with the logging settings of `env`.
async fn serve(config: &ipfs_registry::config::Config, env: &[(&str, &str)]) -> Served {
    Served::start(
        serve_command()
            .envs(stores_env(config))
            .env_remove("IPFS_REGISTRY_LOG")
            .envs(env.iter().copied()),
    )
    .await
}

fn json_lines(log: &str) -> Vec<Value> {
    log.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn find<'a>(lines: &'a [Value], event: &str, request_id: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["event"] == event && l["span"]["request_id"] == request_id)
        .unwrap_or_else(|| panic!("no {event} event for request {request_id} in {lines:#?}"))
}

common::on_each_store_pair!(json_logs_carry_request_ids_and_blob_fields);
async fn json_logs_carry_request_ids_and_blob_fields(stores: StorePair) {
    let stores = stores.test_config().await;
    let served = serve(&stores, &[("IPFS_REGISTRY_LOGGING__FORMAT", "json")]).await;
    let http = reqwest::Client::new();
    let data = random_bytes(3000);
    let digest = sha256(&data);
    let pushed = http
        .post(format!(
            "{}/v2/logs/app/blobs/uploads/?digest={digest}",
            served.base
        ))
        .header("x-request-id", "push-1")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(pushed.status(), 201);
    assert_eq!(pushed.headers()["x-request-id"], "push-1");
    let pulled = http
        .get(format!("{}/v2/logs/app/blobs/{digest}", served.base))
        .header("x-request-id", "pull-1")
        .send()
        .await
        .unwrap();
    assert_eq!(pulled.bytes().await.unwrap(), data);

    let (clean_exit, stdout, log) = served.stop();
    assert!(clean_exit, "SIGTERM ends serve gracefully");
    assert_eq!(stdout, "", "the log goes to stderr");
    let lines = json_lines(&log);

    let request = find(&lines, "request", "push-1");
    assert_eq!(request["status"], 201);
    assert_eq!(request["method"], "POST");
    assert!(request["duration_ms"].is_u64());
    let push = find(&lines, "blob_push", "push-1");
    assert_eq!(push["repository"], "logs/app");
    assert_eq!(push["digest"], digest);
    assert_eq!(push["size"], 3000);
    assert!(push["duration_ms"].is_u64());
    let cid = push["ipfs_cid"].as_str().expect("ipfs_cid");
    assert!(cid.starts_with("bafk"), "{cid}");
    let pull = find(&lines, "blob_pull", "pull-1");
    assert_eq!(pull["digest"], digest);
    assert_eq!(pull["ipfs_cid"], cid);
    assert_eq!(pull["size"], 3000);
    assert_eq!(pull["complete"], true);
}

common::on_each_store_pair!(log_level_comes_from_configuration_and_the_environment_wins);
async fn log_level_comes_from_configuration_and_the_environment_wins(stores: StorePair) {
    let stores = stores.test_config().await;
    // `warn`, but for the server's own address (which the test reads from the log).
    let quiet = serve(
        &stores,
        &[
            ("IPFS_REGISTRY_LOGGING__FORMAT", "json"),
            ("IPFS_REGISTRY_LOGGING__LEVEL", SERVE_QUIET_LOG),
        ],
    )
    .await;
    reqwest::get(format!("{}/v2/", quiet.base)).await.unwrap();
    let (_, _, log) = quiet.stop();
    let lines = json_lines(&log);
    assert!(
        lines
            .iter()
            .all(|l| l["level"] != "INFO" || l["target"] == "ipfs_registry::server"),
        "info events at level warn: {lines:#?}"
    );

    let loud = serve(
        &stores,
        &[
            ("IPFS_REGISTRY_LOGGING__FORMAT", "json"),
            ("IPFS_REGISTRY_LOGGING__LEVEL", SERVE_QUIET_LOG),
            ("IPFS_REGISTRY_LOG", "info"),
        ],
    )
    .await;
    reqwest::get(format!("{}/v2/", loud.base)).await.unwrap();
    let (_, _, log) = loud.stop();
    let lines = json_lines(&log);
    assert!(
        lines
            .iter()
            .any(|l| l["event"] == "request" && l["level"] == "INFO"),
        "IPFS_REGISTRY_LOG=info did not win: {lines:#?}"
    );
}

common::on_each_store_pair!(gc_subcommand_prints_progress_and_a_report);
async fn gc_subcommand_prints_progress_and_a_report(stores: StorePair) {
    let registry = stores.start_registry().await;
    let oci = Oci::new(&registry.base);
    let kept = oci.push_image("cli/app", Some("v1"), 1).await;
    let loose = oci.push_random_blob("cli/app", 4321).await;

    let stdout = succeeded(&gc_command(&registry.config, &["--dry-run"]));
    assert!(
        stdout.contains("gc: sweeping metadata (dry run)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("would free: 0 manifests (0 bytes), 1 blobs (4321 bytes)"),
        "{stdout}"
    );
    let head = oci
        .head(&format!("/v2/cli/app/blobs/{}", loose.digest))
        .await;
    assert_eq!(head.status(), 200, "a dry run deleted the blob");

    let stdout = succeeded(&gc_command(&registry.config, &[]));
    assert!(
        stdout.contains("gc: unpinning released content"),
        "{stdout}"
    );
    assert!(
        stdout.contains("freed: 0 manifests (0 bytes), 1 blobs (4321 bytes)"),
        "{stdout}"
    );
    assert!(stdout.contains("unpinned 1 CIDs (0 failed"), "{stdout}");
    let head = oci
        .head(&format!("/v2/cli/app/blobs/{}", loose.digest))
        .await;
    assert_eq!(head.status(), 404);
    let head = oci
        .head(&format!("/v2/cli/app/blobs/{}", kept.layers[0].digest))
        .await;
    assert_eq!(head.status(), 200);
    registry.server.stop().await;
}

common::on_each_store_pair!(gc_dry_run_lists_what_retention_rules_would_remove);
async fn gc_dry_run_lists_what_retention_rules_would_remove(stores: StorePair) {
    let registry = stores.start_registry().await;
    let oci = Oci::new(&registry.base);
    let old = oci.push_image("ci/app", Some("build-1"), 1).await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    oci.push_image("ci/app", Some("build-2"), 1).await;
    oci.push_image("other/app", Some("build-1"), 1).await;
    let gc = |args: &[&str]| {
        registry_command()
            .envs(stores_env(&registry.config))
            .env("IPFS_REGISTRY_GC__GRACE_PERIOD", "0s")
            .env(
                "IPFS_REGISTRY_RETENTION",
                r#"[{repositories = "ci/*", keep_last = 1, untagged_older_than = "0s"}]"#,
            )
            .arg("gc")
            .args(args)
            .output()
            .expect("run ipfs-registry gc")
    };

    let stdout = succeeded(&gc(&["--dry-run"]));
    let listed: Vec<&str> = stdout.lines().filter(|l| l.starts_with("would-")).collect();
    let mut expected = vec![
        format!("would-remove tag ci/app build-1 {}", old.manifest.digest),
        format!(
            "would-delete manifest ci/app {} {}",
            old.manifest.digest,
            old.manifest.content.len()
        ),
    ];
    for blob in [&old.config, &old.layers[0]] {
        expected.push(format!(
            "would-delete blob {} {} {}",
            blob.digest,
            common::cid_of_blob(&blob.data),
            blob.data.len()
        ));
    }
    let mut sorted_listing: Vec<String> = listed.iter().map(|l| (*l).to_owned()).collect();
    sorted_listing[2..].sort();
    expected[2..].sort();
    assert_eq!(sorted_listing, expected, "{stdout}");
    assert!(stdout.contains("1 tags (retention)"), "{stdout}");
    assert_eq!(oci.tags("/v2/ci/app/tags/list").await.0.len(), 2);

    let stdout = succeeded(&gc(&[]));
    assert!(
        !stdout.contains("would-"),
        "a real run lists nothing: {stdout}"
    );
    assert!(stdout.contains("freed: 1 manifests"), "{stdout}");
    assert_eq!(oci.tags("/v2/ci/app/tags/list").await.0, ["build-2"]);
    assert_eq!(oci.tags("/v2/other/app/tags/list").await.0, ["build-1"]);
    registry.server.stop().await;
}
