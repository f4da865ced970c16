//! Starting real registries in-process.

use super::{fresh_database_url, ipfs_url, unique_name};

/// A registry served in-process on a free loopback port, on a fresh database and the test
/// IPFS node.
pub struct TestRegistry {
    pub server: ipfs_registry::server::RunningServer,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    pub database_url: String,
    pub config: ipfs_registry::config::Config,
}

impl TestRegistry {
    /// `host:port`, as skopeo's `docker://` references want it.
    pub fn host(&self) -> String {
        self.server.local_addr.to_string()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }
}

/// Whether test registries keep blobs in the embedded store instead of the IPFS node
/// (`IPFS_REGISTRY_TEST_BLOB_STORE=embedded`; the test script runs the storage-agnostic
/// suites both ways).
pub fn embedded_blobs() -> bool {
    std::env::var("IPFS_REGISTRY_TEST_BLOB_STORE").is_ok_and(|v| v == "embedded")
}

/// Whether test registries keep metadata in the embedded SQLite store (under their data
/// directory) instead of PostgreSQL (`IPFS_REGISTRY_TEST_META_STORE=embedded`).
pub fn embedded_metadata() -> bool {
    std::env::var("IPFS_REGISTRY_TEST_META_STORE").is_ok_and(|v| v == "embedded")
}

/// The configuration a test registry starts from: a fresh database, the test IPFS node (or
/// an embedded store of its own), a free port, short timeouts.
pub async fn test_config() -> ipfs_registry::config::Config {
    use ipfs_registry::config::{Config, DatabaseConfig, IpfsConfig};
    let defaults = Config::default();
    // Only the PostgreSQL pass needs a database; replicas started from this configuration
    // share it and the data directory.
    let database_url = if embedded_metadata() {
        None
    } else {
        Some(fresh_database_url().await)
    };
    let data_dir = std::env::temp_dir()
        .join("ipfs-registry-tests")
        .join(unique_name());
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir,
        database: DatabaseConfig {
            url: database_url,
            pool_size: 8,
            ..defaults.database
        },
        ipfs: IpfsConfig {
            url: (!embedded_blobs()).then(ipfs_url),
            ..defaults.ipfs
        },
        ..defaults
    }
}

pub async fn start_registry() -> TestRegistry {
    start_registry_with(|_| {}).await
}

/// Starts a registry after `adjust` has had its say on the configuration.
pub async fn start_registry_with(
    adjust: impl FnOnce(&mut ipfs_registry::config::Config),
) -> TestRegistry {
    let mut config = test_config().await;
    adjust(&mut config);
    start_registry_from(config).await
}

/// Starts a registry on exactly this configuration (e.g. a second replica on the same
/// database).
pub async fn start_registry_from(config: ipfs_registry::config::Config) -> TestRegistry {
    let database_url = config.database.url.clone().unwrap_or_default();
    let server = ipfs_registry::server::start(config.clone())
        .await
        .expect("start the registry");
    let base = server.base_url();
    TestRegistry {
        server,
        base,
        database_url,
        config,
    }
}

/// Starts a registry whose configuration names its own port (in `public_url`, say), so the
/// port is chosen before the start: one the kernel just gave out and released. Should
/// something take it before the registry binds it, the bind fails and another is tried; a
/// server that starts listens where its configuration says.
pub async fn start_registry_on_a_known_port(
    adjust: impl Fn(&mut ipfs_registry::config::Config, u16),
) -> TestRegistry {
    let base = test_config().await;
    for _ in 0..20 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut config = base.clone();
        config.listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        adjust(&mut config, port);
        match ipfs_registry::server::start(config.clone()).await {
            Ok(server) => {
                return TestRegistry {
                    base: server.base_url(),
                    server,
                    database_url: config.database.url.clone().unwrap_or_default(),
                    config,
                }
            }
            Err(e) if taken(&e) => continue,
            Err(e) => panic!("start the registry: {e:#}"),
        }
    }
    panic!("20 ports in a row were taken before the registry could bind them")
}

fn taken(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::AddrInUse)
    })
}

/// The CID the registry's import profile gives `data` (computed as the IPFS node would).
pub fn cid_of_blob(data: &[u8]) -> cid::Cid {
    let mut builder = ipfs_registry::blobs::unixfs::DagBuilder::new(
        ipfs_registry::blobs::ImportProfile::default().chunk_size,
    );
    let mut blocks = Vec::new();
    builder.push(data, &mut blocks);
    builder.finish(&mut blocks).root
}

/// Whether the registry's blob store holds `data`: pinned in the IPFS node, or a file of
/// the embedded store.
pub async fn blob_store_holds(registry: &TestRegistry, data: &[u8]) -> bool {
    let cid = cid_of_blob(data);
    if registry.config.ipfs.url.is_none() {
        return registry
            .config
            .data_dir
            .join("blobs/data")
            .join(cid.to_string())
            .exists();
    }
    let url = ipfs_url()
        .join(&format!("api/v0/pin/ls?arg={cid}&type=recursive"))
        .unwrap();
    let response = reqwest::Client::new().post(url).send().await.unwrap();
    if !response.status().is_success() {
        return false;
    }
    let body: serde_json::Value = response.json().await.unwrap();
    // Nodes differ in the multibase they answer with; compare CIDs, not strings.
    body["Keys"].as_object().is_some_and(|keys| {
        keys.keys()
            .any(|key| key.parse::<cid::Cid>().is_ok_and(|key| key == cid))
    })
}
