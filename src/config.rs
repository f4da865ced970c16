//! Configuration: defaults, then a TOML file, then `IPFS_REGISTRY_*` environment variables
//! (nested keys joined by `__`, e.g. `IPFS_REGISTRY_DATABASE__POOL_SIZE`).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::blobs::ImportProfile;

pub const ENV_PREFIX: &str = "IPFS_REGISTRY_";

/// Variables under the prefix that are not settings: the config file path, the log filter
/// (read before configuration, so that loading it can be logged), and the test suite's own.
fn is_setting(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key != "config" && key != "log" && !key.starts_with("test_")
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server binds.
    pub listen: SocketAddr,
    /// The URL clients reach the registry at, used in `Location` and `Link` headers.
    /// When unset, locations are relative paths (which every OCI client resolves).
    #[serde(default)]
    pub public_url: Option<Url>,
    pub database: DatabaseConfig,
    pub ipfs: IpfsConfig,
    pub import_profile: ImportProfile,
    pub limits: LimitsConfig,
    /// Whether DELETE of manifests, tags and blobs is allowed.
    pub delete_enabled: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgres://user:password@host:port/db`.
    #[serde(default)]
    pub url: Option<String>,
    pub pool_size: usize,
    /// How long a request waits for a connection (and a new connection to open).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Server-side limit on any one statement.
    #[serde(with = "humantime_serde")]
    pub statement_timeout: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpfsConfig {
    /// Base URL of the Kubo RPC API, e.g. `http://127.0.0.1:5001`.
    #[serde(default)]
    pub url: Option<Url>,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Limit for a control call (pin, stat) and for any pause inside a byte stream.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest manifest accepted, in bytes; larger pushes get 413.
    pub max_manifest_size: usize,
    /// Largest blob accepted, in bytes (0 = unlimited).
    pub max_blob_size: u64,
    /// Smallest chunk a client should send (advertised as `OCI-Chunk-Min-Length`; 0 = not
    /// advertised). Smaller chunks are still accepted, but each costs an IPFS add.
    pub chunk_min_length: u64,
    /// Uploads streaming at once; more get 429 TOOMANYREQUESTS.
    pub max_concurrent_uploads: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 5000)),
            public_url: None,
            database: DatabaseConfig {
                url: None,
                pool_size: 16,
                timeout: Duration::from_secs(5),
                statement_timeout: Duration::from_secs(30),
            },
            ipfs: IpfsConfig {
                url: None,
                connect_timeout: Duration::from_secs(5),
                timeout: Duration::from_secs(30),
            },
            import_profile: ImportProfile::default(),
            limits: LimitsConfig {
                max_manifest_size: 4 * 1024 * 1024,
                max_blob_size: 0,
                chunk_min_length: 1024 * 1024,
                max_concurrent_uploads: 128,
            },
            delete_enabled: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Parse(#[from] Box<figment::Error>),
    #[error("configuration setting `{setting}`: {message}")]
    Invalid {
        setting: &'static str,
        message: String,
    },
}

impl Config {
    /// Defaults ← optional TOML file ← environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError::Invalid {
                    setting: "--config",
                    message: format!("file {} does not exist", file.display()),
                });
            }
            figment = figment.merge(Toml::file(file));
        }
        figment = figment.merge(
            Env::prefixed(ENV_PREFIX)
                .filter(|key| is_setting(key.as_str()))
                .split("__"),
        );
        let config: Config = figment.extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |setting, message: &str| {
            Err(ConfigError::Invalid {
                setting,
                message: message.to_owned(),
            })
        };
        if self.database.pool_size == 0 {
            return invalid("database.pool_size", "must be at least 1");
        }
        if self.database.timeout.is_zero() {
            return invalid("database.timeout", "must be greater than zero");
        }
        if let Some(url) = &self.database.url {
            if url.parse::<tokio_postgres::Config>().is_err() {
                return invalid("database.url", "is not a valid PostgreSQL connection URL");
            }
        }
        if let Some(url) = &self.ipfs.url {
            if !matches!(url.scheme(), "http" | "https") {
                return invalid("ipfs.url", "must be an http:// or https:// URL");
            }
        }
        if self.ipfs.timeout.is_zero() || self.ipfs.connect_timeout.is_zero() {
            return invalid("ipfs.timeout", "timeouts must be greater than zero");
        }
        if let Some(url) = &self.public_url {
            if !matches!(url.scheme(), "http" | "https") {
                return invalid("public_url", "must be an http:// or https:// URL");
            }
        }
        if let Err(e) = self.import_profile.validate() {
            return invalid("import_profile.chunk_size", &e.to_string());
        }
        if self.limits.max_concurrent_uploads == 0 {
            return invalid("limits.max_concurrent_uploads", "must be at least 1");
        }
        if self.limits.max_manifest_size == 0 {
            return invalid("limits.max_manifest_size", "must be greater than zero");
        }
        Ok(())
    }
}

#[cfg(test)]
// figment's `Jail` closures return `figment::Error`, a large type we do not choose.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    fn load_err(jail_setup: impl FnOnce(&mut Jail) -> figment::error::Result<()>) -> String {
        let mut message = String::new();
        Jail::expect_with(|jail| {
            jail_setup(jail)?;
            let file = Path::new("registry.toml");
            let file = file.exists().then_some(file);
            message = Config::load(file)
                .expect_err("config must be refused")
                .to_string();
            Ok(())
        });
        message
    }

    #[test]
    fn defaults_then_file_then_environment() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "registry.toml",
                r#"
                listen = "0.0.0.0:6000"
                delete_enabled = false
                [database]
                url = "postgres://file@db/registry"
                pool_size = 4
                [ipfs]
                url = "http://kubo:5001"
                timeout = "10s"
                [import_profile]
                chunk_size = 1048576
                "#,
            )?;
            jail.set_env("IPFS_REGISTRY_DATABASE__POOL_SIZE", "32");
            jail.set_env("IPFS_REGISTRY_LIMITS__MAX_MANIFEST_SIZE", "1024");
            jail.set_env("IPFS_REGISTRY_LOG", "debug");
            jail.set_env("IPFS_REGISTRY_TEST_DATABASE_URL", "postgres://test");
            let config = Config::load(Some(Path::new("registry.toml"))).unwrap();
            assert_eq!(config.listen.port(), 6000);
            assert!(!config.delete_enabled);
            assert_eq!(
                config.database.url.as_deref(),
                Some("postgres://file@db/registry")
            );
            assert_eq!(
                config.database.pool_size, 32,
                "environment wins over the file"
            );
            assert_eq!(config.ipfs.timeout, Duration::from_secs(10));
            assert_eq!(config.import_profile.chunk_size, 1024 * 1024);
            assert_eq!(config.limits.max_manifest_size, 1024);
            assert_eq!(
                config.limits.max_blob_size, 0,
                "unset settings keep defaults"
            );
            Ok(())
        });
    }

    #[test]
    fn invalid_settings_are_named() {
        let message = load_err(|jail| {
            jail.set_env("IPFS_REGISTRY_IMPORT_PROFILE__CHUNK_SIZE", "4194304");
            Ok(())
        });
        assert!(message.contains("import_profile.chunk_size"), "{message}");

        let message = load_err(|jail| {
            jail.set_env("IPFS_REGISTRY_DATABASE__POOL_SIZE", "0");
            Ok(())
        });
        assert!(message.contains("database.pool_size"), "{message}");

        let message = load_err(|jail| {
            jail.set_env("IPFS_REGISTRY_IPFS__URL", "ftp://kubo");
            Ok(())
        });
        assert!(message.contains("ipfs.url"), "{message}");

        let message = load_err(|jail| {
            jail.set_env("IPFS_REGISTRY_DATABASE__TIMEOUT", "soon");
            Ok(())
        });
        assert!(
            message.to_lowercase().contains("database.timeout"),
            "{message}"
        );

        let message = load_err(|jail| {
            jail.create_file("registry.toml", "listen = \"127.0.0.1:5000\"\nbogus = 1\n")?;
            Ok(())
        });
        assert!(message.contains("bogus"), "{message}");
    }
}
