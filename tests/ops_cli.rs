//! The binary's operational side: JSON logs with request ids and blob fields, the log level
//! from configuration and environment, graceful exit on SIGTERM, and `gc`. Storage-agnostic:
//! the child processes use the stores the test mode picks.

mod common;

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::cli::{gc_command, registry_command, stores_env, succeeded};
use common::oci::{random_bytes, sha256, Oci};
use serde_json::Value;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `serve` as a child process; stopped with SIGTERM by `stop`.
struct Served {
    child: Child,
    base: String,
}

async fn serve(config: &ipfs_registry::config::Config, env: &[(&str, &str)]) -> Served {
    let listen = format!("127.0.0.1:{}", free_port());
    let child = registry_command()
        .envs(stores_env(config))
        .env("IPFS_REGISTRY_LISTEN", &listen)
        .env_remove("IPFS_REGISTRY_LOG")
        .envs(env.iter().copied())
        .arg("serve")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ipfs-registry serve");
    let base = format!("http://{listen}");
    let started = Instant::now();
    loop {
        if let Ok(r) = reqwest::get(format!("{base}/healthz")).await {
            if r.status() == 200 {
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "serve did not come up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Served { child, base }
}

impl Served {
    /// SIGTERM, then the exit status and stdout.
    fn stop(mut self) -> (bool, String) {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(killed.success());
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut stdout = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        (status.success(), stdout)
    }
}

fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_request_ids_and_blob_fields() {
    let stores = common::test_config().await;
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

    let (clean_exit, stdout) = served.stop();
    assert!(clean_exit, "SIGTERM ends serve gracefully");
    let lines = json_lines(&stdout);

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_level_comes_from_configuration_and_the_environment_wins() {
    let stores = common::test_config().await;
    let quiet = serve(
        &stores,
        &[
            ("IPFS_REGISTRY_LOGGING__FORMAT", "json"),
            ("IPFS_REGISTRY_LOGGING__LEVEL", "warn"),
        ],
    )
    .await;
    reqwest::get(format!("{}/v2/", quiet.base)).await.unwrap();
    let (_, stdout) = quiet.stop();
    let lines = json_lines(&stdout);
    assert!(
        lines.iter().all(|l| l["level"] != "INFO"),
        "info events at level warn: {lines:#?}"
    );

    let loud = serve(
        &stores,
        &[
            ("IPFS_REGISTRY_LOGGING__FORMAT", "json"),
            ("IPFS_REGISTRY_LOGGING__LEVEL", "warn"),
            ("IPFS_REGISTRY_LOG", "info"),
        ],
    )
    .await;
    reqwest::get(format!("{}/v2/", loud.base)).await.unwrap();
    let (_, stdout) = loud.stop();
    let lines = json_lines(&stdout);
    assert!(
        lines
            .iter()
            .any(|l| l["event"] == "request" && l["level"] == "INFO"),
        "IPFS_REGISTRY_LOG=info did not win: {lines:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_subcommand_prints_progress_and_a_report() {
    let registry = common::start_registry().await;
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
