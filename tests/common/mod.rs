//! Shared integration-test plumbing: real services only.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};

pub mod images;
pub mod oci;
pub mod skopeo;

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

/// Creates an empty database with a unique name and returns its URL.
pub async fn fresh_database_url() -> String {
    let admin = admin_database_url();
    let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .expect("connect to the test PostgreSQL server (IPFS_REGISTRY_TEST_DATABASE_URL)");
    tokio::spawn(conn);
    let name = format!(
        "ipfs_registry_test_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
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
