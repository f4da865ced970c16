//! Starting real registries in-process.

use super::{fresh_database_url, ipfs_url};

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

/// The configuration a test registry starts from: a fresh database, the test IPFS node,
/// a free port, short timeouts.
pub async fn test_config() -> ipfs_registry::config::Config {
    use ipfs_registry::config::{Config, DatabaseConfig, IpfsConfig};
    let defaults = Config::default();
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database: DatabaseConfig {
            url: Some(fresh_database_url().await),
            pool_size: 8,
            ..defaults.database
        },
        ipfs: IpfsConfig {
            url: Some(ipfs_url()),
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
