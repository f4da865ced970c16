//! Shared integration-test plumbing: real services only.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};

pub mod auth;
#[macro_use]
pub mod backends;
pub mod browser;
pub mod cli;
pub mod clients;
pub mod federation;
pub mod follow;
pub mod images;
pub mod kubo;
pub mod memory;
pub mod meta;
pub mod oci;
pub mod powercut;
pub mod private_node;
pub mod receiver;
pub mod skopeo;
pub mod sql;
pub mod stall_proxy;

/// Admin connection used to create one fresh database per test.
pub fn admin_database_url() -> String {
    std::env::var("IPFS_REGISTRY_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// The IPFS node's RPC base URL (the test script starts a js-ipfs node there; point it at
/// a Kubo node to run the same tests against Kubo).
pub fn ipfs_url() -> url::Url {
    std::env::var("IPFS_REGISTRY_TEST_IPFS_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:45001".to_owned())
        .parse()
        .expect("IPFS_REGISTRY_TEST_IPFS_URL is a URL")
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name no other test of any run uses (a database's, a data directory's).
pub fn unique_name() -> String {
    format!(
        "ipfs_registry_test_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    )
}

/// Creates an empty database with a unique name and returns its URL.
pub async fn fresh_database_url() -> String {
    let admin = admin_database_url();
    let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .expect("connect to the test PostgreSQL server (IPFS_REGISTRY_TEST_DATABASE_URL)");
    tokio::spawn(conn);
    let name = unique_name();
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create test database");
    let mut url = url::Url::parse(&admin).expect("admin URL");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

mod registry;
#[allow(unused_imports)]
pub use registry::*;

/// Peak resident memory of a process (`VmHWM` of /proc/<pid>/status), in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status")
}

/// The value of one sample line (`name{labels} value`) in a Prometheus exposition.
pub fn metric_sample(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

/// Imports a CAR into the test IPFS node (`dag/import`, roots pinned); returns its root.
pub async fn ipfs_dag_import(car: Vec<u8>) -> cid::Cid {
    let part = reqwest::multipart::Part::bytes(car)
        .file_name("dag.car")
        .mime_str("application/octet-stream")
        .unwrap();
    let url = ipfs_url().join("api/v0/dag/import").unwrap();
    let response = reqwest::Client::new()
        .post(url)
        .query(&[("pin-roots", "true")])
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .expect("dag/import");
    let status = response.status();
    let text = response.text().await.unwrap();
    assert!(status.is_success(), "dag/import refused the CAR: {text}");
    let answer: serde_json::Value = serde_json::from_str(
        text.lines()
            .find(|l| l.contains("Root"))
            .expect("a Root line"),
    )
    .unwrap();
    assert_eq!(answer["Root"]["PinErrorMsg"], "", "{text}");
    cid::Cid::try_from(answer["Root"]["Cid"]["/"].as_str().unwrap()).unwrap()
}

/// `data` as a stream of pieces of an odd size, so chunk boundaries never line up with what
/// arrives.
pub fn odd_pieces(data: &bytes::Bytes) -> ipfs_registry::blobs::ByteStream {
    const PIECE: usize = 65_521;
    let pieces: Vec<Result<bytes::Bytes, std::io::Error>> = (0..data.len())
        .step_by(PIECE)
        .map(|start| Ok(data.slice(start..(start + PIECE).min(data.len()))))
        .collect();
    Box::pin(futures::stream::iter(pieces))
}

/// Deterministic, incompressible-looking bytes (xorshift), different per `seed`.
pub fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A seed nobody else uses (other test runs against the same node included).
pub fn unique_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    nanos ^ (u64::from(std::process::id()) << 32)
}
