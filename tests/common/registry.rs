//! Starting real registries in-process.

use super::{fresh_database_url, ipfs_url, unique_name};

/// A registry served in-process on a free loopback port, on the stores of a `StorePair`.
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

    /// One sample of its `/metrics` (`name{labels}`, see [`super::metric_sample`]).
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let text = reqwest::get(self.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        super::metric_sample(&text, series)
    }
}

/// The metadata store and blob store a test registry runs on. A suite names the pair for
/// each registry it starts; `on_each_store_pair!` runs a test once on every pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorePair {
    /// A fresh PostgreSQL database and the test IPFS node (`IPFS_REGISTRY_TEST_DATABASE_URL`,
    /// `IPFS_REGISTRY_TEST_IPFS_URL`).
    PostgresIpfsNode,
    /// The embedded default: SQLite and the embedded blob store, under the registry's data
    /// directory.
    Embedded,
}

impl StorePair {
    /// The configuration a test registry starts from: this pair's stores (a fresh database,
    /// or none), a data directory of its own, a free port, short timeouts.
    pub async fn test_config(self) -> ipfs_registry::config::Config {
        use ipfs_registry::config::{Config, DatabaseConfig, IpfsConfig};
        let defaults = Config::default();
        // Replicas started from this configuration share its database and data directory.
        let (database_url, ipfs) = match self {
            Self::PostgresIpfsNode => (Some(fresh_database_url().await), Some(ipfs_url())),
            Self::Embedded => (None, None),
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
                url: ipfs,
                ..defaults.ipfs
            },
            ..defaults
        }
    }

    pub async fn start_registry(self) -> TestRegistry {
        self.start_registry_with(|_| {}).await
    }

    /// Starts a registry on this pair after `adjust` has had its say on the configuration.
    pub async fn start_registry_with(
        self,
        adjust: impl FnOnce(&mut ipfs_registry::config::Config),
    ) -> TestRegistry {
        let mut config = self.test_config().await;
        adjust(&mut config);
        start_registry_from(config).await
    }

    /// Starts a registry whose configuration names its own port (in `public_url`, say), so
    /// the port is chosen before the start: one the kernel just gave out and released.
    /// Should something take it before the registry binds it, the bind fails and another is
    /// tried; a server that starts listens where its configuration says.
    pub async fn start_registry_on_a_known_port(
        self,
        adjust: impl Fn(&mut ipfs_registry::config::Config, u16),
    ) -> TestRegistry {
        let base = self.test_config().await;
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
}

/// Defines `<test>::postgres_ipfs_node` and `<test>::embedded`, tests that run `test`, an
/// `async fn(StorePair)`, on each pair: this is the one list of the pairs. The runtime is
/// `tokio::test`'s multi-threaded one with two workers unless its arguments follow the name.
#[allow(unused_macros)]
macro_rules! on_each_store_pair {
    ($test:ident $(, $($runtime:tt)+)?) => {
        $crate::common::on_store_pairs!(
            [postgres_ipfs_node: PostgresIpfsNode, embedded: Embedded] $test $(, $($runtime)+)?
        );
    };
}
#[allow(unused_imports)]
pub(crate) use on_each_store_pair;

/// Defines `<test>::<pair>` for each of the pairs listed, e.g. `[embedded: Embedded]`: for a
/// test that checks one pair's specifics and makes no sense on the other.
#[allow(unused_macros)]
macro_rules! on_store_pairs {
    ([$($name:ident: $pair:ident),+] $test:ident) => {
        $crate::common::on_store_pairs!(
            [$($name: $pair),+] $test, flavor = "multi_thread", worker_threads = 2
        );
    };
    ([$($name:ident: $pair:ident),+] $test:ident, $($runtime:tt)+) => {
        $crate::common::on_store_pairs!(@tests [$($name: $pair),+] $test ($($runtime)+));
    };
    // The runtime as one token tree, so that each pair's test can repeat it.
    (@tests [$($name:ident: $pair:ident),+] $test:ident $runtime:tt) => {
        mod $test {
            $(
                #[::tokio::test $runtime]
                async fn $name() {
                    super::$test($crate::common::StorePair::$pair).await
                }
            )+
        }
    };
}
#[allow(unused_imports)]
pub(crate) use on_store_pairs;

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
/// The files of the upload sessions the embedded blob store keeps in place (`uploads/`):
/// none on an IPFS node, which stores each chunk as it arrives.
pub fn upload_files(registry: &TestRegistry) -> Vec<std::path::PathBuf> {
    let dir = registry.config.data_dir.join("blobs/uploads");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .collect();
    files.sort();
    files
}

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
