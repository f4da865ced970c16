//! Configuration: defaults, then a TOML file, then `IPFS_REGISTRY_*` environment variables
//! (nested keys joined by `__`, e.g. `IPFS_REGISTRY_DATABASE__POOL_SIZE`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::blobs::ImportProfile;
use crate::registry::rules::{ImmutableRule, RetentionRule, Rules};

mod follow;
mod ip_range;
mod mirror;
mod notifications;
mod redact;
pub use follow::{FollowRule, FollowSource};
pub use ip_range::IpRange;
pub use mirror::MirrorConfig;
pub use notifications::{EventKind, NotificationEndpoint, NotificationsConfig};
pub use redact::REDACTED;

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
    /// Where the registry keeps what it stores itself: the embedded metadata store and blob
    /// store (when no database / IPFS node is configured) and the generated token signing
    /// key.
    pub data_dir: PathBuf,
    /// Which metadata store runs; its connection settings are under `database`.
    #[serde(default)]
    pub metadata: MetadataConfig,
    pub database: DatabaseConfig,
    /// Which blob store runs; the IPFS node's settings are under `ipfs`.
    #[serde(default)]
    pub blobs: BlobsConfig,
    pub ipfs: IpfsConfig,
    pub import_profile: ImportProfile,
    pub limits: LimitsConfig,
    pub gateway: GatewayConfig,
    /// Whether DELETE of manifests, tags and blobs is allowed.
    pub delete_enabled: bool,
    pub auth: AuthConfig,
    /// How long a stopping server lets in-flight requests finish.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    pub logging: LoggingConfig,
    pub gc: GcConfig,
    pub integrity: IntegrityConfig,
    /// Where events go (`[[notifications.endpoint]]`, docs/notifications.md).
    #[serde(default)]
    pub notifications: NotificationsConfig,
    /// `[[mirror]]`: upstream registries served as pull-through mirrors (docs/mirror.md).
    #[serde(default)]
    pub mirror: Vec<MirrorConfig>,
    /// `[[immutable]]`: tags that pushes may not move nor deletes remove.
    #[serde(default)]
    pub immutable: Vec<ImmutableRule>,
    /// `[[retention]]`: what GC keeps per repository.
    #[serde(default)]
    pub retention: Vec<RetentionRule>,
    /// Importing images by CID from other registries (docs/federation.md).
    #[serde(default)]
    pub federation: FederationConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationConfig {
    /// Trustless gateways (`<url>/ipfs/<cid>?format=car|raw`) imports read layouts from,
    /// tried in order. Empty: imports go through the IPFS node (`ipfs.url`); the embedded
    /// store then cannot import.
    #[serde(default)]
    pub gateways: Vec<Url>,
    /// How long a gateway may take to connect, to answer, or pause inside a body.
    #[serde(
        default = "FederationConfig::default_timeout",
        with = "humantime_serde"
    )]
    pub timeout: Duration,
    /// Keep the public index of published images (`<repository>:<tag>` → image layout)
    /// and, in Kubo mode, publish its root under this registry's IPNS name
    /// (docs/federation.md).
    #[serde(default)]
    pub publish: bool,
    /// The IPFS node keystore key the index is published under.
    #[serde(default = "FederationConfig::default_ipns_key")]
    pub ipns_key: String,
    /// `[[federation.follow]]`: other registries' indexes this one replicates.
    #[serde(default)]
    pub follow: Vec<FollowRule>,
}

impl FederationConfig {
    fn default_timeout() -> Duration {
        Duration::from_secs(30)
    }

    fn default_ipns_key() -> String {
        "ipfs-registry".to_owned()
    }
}

impl Default for FederationConfig {
    fn default() -> Self {
        FederationConfig {
            gateways: Vec::new(),
            timeout: FederationConfig::default_timeout(),
            publish: false,
            ipns_key: FederationConfig::default_ipns_key(),
            follow: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingConfig {
    pub format: LogFormat,
    /// An `EnvFilter` directive (`info`, `warn,ipfs_registry=debug`). `IPFS_REGISTRY_LOG`,
    /// when set, wins.
    pub level: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcConfig {
    /// Period of the online GC in `serve` (0 = no online GC; `ipfs-registry gc` still works).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Unreferenced blobs and blob links younger than this are kept.
    #[serde(with = "humantime_serde")]
    pub grace_period: Duration,
    /// Upload sessions idle longer than this are ended and their chunks unpinned.
    #[serde(with = "humantime_serde")]
    pub upload_expiry: Duration,
    /// When set, untagged manifests older than this that no tag reaches are deleted.
    #[serde(default, with = "humantime_serde")]
    pub untagged_retention: Option<Duration>,
}

impl GcConfig {
    pub fn policy(&self) -> crate::meta::gc::SweepPolicy {
        crate::meta::gc::SweepPolicy {
            grace_period: self.grace_period,
            untagged_retention: self.untagged_retention,
            upload_expiry: self.upload_expiry,
            ..crate::meta::gc::SweepPolicy::default()
        }
    }
}

/// When stored bytes are checked against their digest (docs/operations.md, "Integrity").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntegrityConfig {
    /// Re-hash every full blob pull and abort a response whose bytes do not match. Off by
    /// default: every push is verified before it is recorded, and clients verify what they
    /// pull; the scrub finds what rots in between.
    pub verify_on_pull: bool,
    /// When set, `serve` scrubs every blob this often (one replica at a time).
    #[serde(default, with = "humantime_serde")]
    pub scrub_interval: Option<Duration>,
    /// Bytes per second a scrub reads at most (0 = unlimited).
    pub scrub_rate: u64,
}

impl Default for IntegrityConfig {
    fn default() -> Self {
        IntegrityConfig {
            verify_on_pull: false,
            scrub_interval: None,
            scrub_rate: 100 * 1024 * 1024,
        }
    }
}

/// Docker token authentication (`docs/architecture.md`, "Authentication").
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Off: every request is anonymous and allowed (the registry core alone).
    pub enabled: bool,
    /// The `service` of the challenge and the `aud` of every token.
    pub service: String,
    /// The `iss` of every token.
    pub issuer: String,
    /// The token endpoint announced in challenges; `<public_url or request host>/token`
    /// when unset.
    #[serde(default)]
    pub realm: Option<Url>,
    /// Lifetime of registry tokens; revocations take effect within it.
    #[serde(with = "humantime_serde")]
    pub token_ttl: Duration,
    /// PEM private key (EC P-256 or RSA) that signs tokens. A secret.
    #[serde(default)]
    pub signing_key: Option<String>,
    /// File with the PEM private key, when not given inline.
    #[serde(default)]
    pub signing_key_file: Option<PathBuf>,
    /// Peers whose `X-Forwarded-For` is believed when telling clients apart for login
    /// throttling and `limits.per_client_percent`, as addresses or CIDR ranges
    /// (`10.0.0.5`, `10.0.0.0/8`); everyone else is identified by the connection's address.
    #[serde(default)]
    pub trusted_proxies: Vec<IpRange>,
    /// Password checks (argon2, 19 MiB and tens of milliseconds each) run at once; more
    /// logins wait a few seconds for one to end, then get 429. Unset: the number of cores.
    #[serde(default)]
    pub max_concurrent_password_checks: Option<usize>,
    /// How long a login with a user name and password, once checked, is taken as checked
    /// again without argon2 (while the user's password is unchanged). 0 turns this off.
    #[serde(with = "humantime_serde")]
    pub login_cache_ttl: Duration,
    /// How long a web UI login lasts (the session cookie); a password change or the user's
    /// removal ends it sooner.
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("enabled", &self.enabled)
            .field("service", &self.service)
            .field("issuer", &self.issuer)
            .field("realm", &self.realm)
            .field("token_ttl", &self.token_ttl)
            .field(
                "signing_key",
                &self.signing_key.as_ref().map(|_| "<redacted>"),
            )
            .field("signing_key_file", &self.signing_key_file)
            .field("trusted_proxies", &self.trusted_proxies)
            .field(
                "max_concurrent_password_checks",
                &self.max_concurrent_password_checks,
            )
            .field("login_cache_ttl", &self.login_cache_ttl)
            .field("session_ttl", &self.session_ttl)
            .finish()
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            enabled: false,
            service: "ipfs-registry".to_owned(),
            issuer: "ipfs-registry".to_owned(),
            realm: None,
            token_ttl: Duration::from_secs(300),
            signing_key: None,
            signing_key_file: None,
            trusted_proxies: Vec::new(),
            max_concurrent_password_checks: None,
            login_cache_ttl: Duration::from_secs(60),
            session_ttl: Duration::from_secs(12 * 3600),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetadataKind {
    /// A SQLite file under `data_dir`.
    Sqlite,
    /// The PostgreSQL database at `database.url`.
    Postgres,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobsKind {
    /// Files under `data_dir/blobs`, with the CIDs an IPFS node would give.
    Embedded,
    /// The Kubo-compatible node whose RPC API is at `ipfs.url`.
    Kubo,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataConfig {
    /// Unset: `postgres` when `database.url` is set, else `sqlite` (the shorthand every
    /// deployment written before the setting existed relies on).
    #[serde(default)]
    pub kind: Option<MetadataKind>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlobsConfig {
    /// Unset: `kubo` when `ipfs.url` is set, else `embedded`.
    #[serde(default)]
    pub kind: Option<BlobsKind>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgres://user:password@host:port/db`; `?sslmode=` as in libpq (`disable`,
    /// `prefer` (the default), `require`, `verify-ca`, `verify-full`).
    #[serde(default)]
    pub url: Option<String>,
    /// PEM file of CA certificates trusted, beside the system's roots, when `sslmode` is
    /// `verify-ca` or `verify-full`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    pub pool_size: usize,
    /// How long a request waits for a connection (and a new connection to open).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Server-side limit on any one statement.
    #[serde(with = "humantime_serde")]
    pub statement_timeout: Duration,
    /// Client-side limit on one metadata call, from asking for a connection (which alone
    /// may take up to `timeout`) to the answer, whatever the route; past it the call fails
    /// as unavailable (503). Unlike `statement_timeout` it also holds when the server stops
    /// answering.
    #[serde(with = "humantime_serde")]
    pub operation_timeout: Duration,
    /// The same limit on garbage collection and inventory calls (a sweep runs long
    /// transactions).
    #[serde(with = "humantime_serde")]
    pub gc_operation_timeout: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpfsConfig {
    /// Base URL of the Kubo RPC API, e.g. `http://127.0.0.1:5001`. When unset, blobs are
    /// kept in the embedded store under `data_dir`, with the same CIDs.
    #[serde(default)]
    pub url: Option<Url>,
    /// PEM file of CA certificates trusted, beside the system's roots, for an `https://`
    /// URL.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Limit for a control call (pin, stat) and for any pause inside a byte stream.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// The IPFS gateway that layer links point at (`<url>/ipfs/<cid>`), e.g.
    /// `https://ipfs.io`. Unset: the registry's own gateway.
    #[serde(default)]
    pub url: Option<Url>,
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
    /// Requests handled at once (health, readiness and metrics excepted); more get 429.
    pub max_concurrent_requests: usize,
    /// Limit on a request that does not stream a blob (manifests, listings, upload
    /// control); past it the request gets 503. Blob bodies are bounded by the IPFS timeouts.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// A connection whose client sends nothing of a request body, or takes none of a
    /// response, for this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Blob bodies being sent at once (pulls and gateway reads); more get 429.
    pub max_concurrent_downloads: usize,
    /// The share, in percent, of each of the limits on requests, uploads and downloads that
    /// one client address may hold; past it that client gets 429 while others are served.
    pub per_client_percent: u8,
    /// How long a new connection has to send its first request's headers.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// How long an idle connection is kept open for another request (0 = closed after each
    /// response).
    #[serde(with = "humantime_serde")]
    pub keep_alive: Duration,
    /// How long a connection being closed may take to acknowledge its last bytes.
    #[serde(with = "humantime_serde")]
    pub disconnect_timeout: Duration,
    /// Connections open at once, per worker thread; further clients wait to be accepted.
    pub max_connections: usize,
    /// Connections the kernel queues before the server accepts them.
    pub backlog: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 5000)),
            public_url: None,
            data_dir: PathBuf::from("./data"),
            metadata: MetadataConfig::default(),
            blobs: BlobsConfig::default(),
            database: DatabaseConfig {
                url: None,
                ca_file: None,
                pool_size: 16,
                timeout: Duration::from_secs(5),
                statement_timeout: Duration::from_secs(30),
                operation_timeout: Duration::from_secs(10),
                gc_operation_timeout: Duration::from_secs(10 * 60),
            },
            ipfs: IpfsConfig {
                url: None,
                ca_file: None,
                connect_timeout: Duration::from_secs(5),
                timeout: Duration::from_secs(30),
            },
            import_profile: ImportProfile::default(),
            limits: LimitsConfig {
                max_manifest_size: 4 * 1024 * 1024,
                max_blob_size: 0,
                chunk_min_length: 1024 * 1024,
                max_concurrent_uploads: 128,
                max_concurrent_requests: 1024,
                request_timeout: Duration::from_secs(60),
                idle_timeout: Duration::from_secs(30),
                max_concurrent_downloads: 512,
                per_client_percent: 25,
                header_timeout: Duration::from_secs(5),
                keep_alive: Duration::from_secs(5),
                disconnect_timeout: Duration::from_secs(1),
                max_connections: 25_000,
                backlog: 1024,
            },
            gateway: GatewayConfig::default(),
            delete_enabled: true,
            auth: AuthConfig::default(),
            shutdown_timeout: Duration::from_secs(30),
            logging: LoggingConfig {
                format: LogFormat::Text,
                level: "info".to_owned(),
            },
            gc: GcConfig {
                interval: Duration::ZERO,
                grace_period: Duration::from_secs(60 * 60),
                upload_expiry: Duration::from_secs(24 * 60 * 60),
                untagged_retention: None,
            },
            integrity: IntegrityConfig::default(),
            notifications: NotificationsConfig::default(),
            mirror: Vec::new(),
            immutable: Vec::new(),
            retention: Vec::new(),
            federation: FederationConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The message already includes figment's whole account, so it is not also a `source`
    /// (which would print it twice in an error chain).
    #[error("configuration: {0}")]
    Parse(Box<figment::Error>),
    #[error("configuration setting `{setting}`: {message}")]
    Invalid {
        setting: &'static str,
        message: String,
    },
}

impl From<Box<figment::Error>> for ConfigError {
    fn from(e: Box<figment::Error>) -> Self {
        ConfigError::Parse(e)
    }
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
        let mut config: Config = figment.extract().map_err(Box::new)?;
        config.validate()?;
        // Written back so that `ipfs-registry config` shows which stores run.
        config.metadata.kind = Some(config.metadata_kind());
        config.blobs.kind = Some(config.blobs_kind());
        Ok(config)
    }

    /// The `[[immutable]]` and `[[retention]]` rules.
    pub fn rules(&self) -> Rules {
        Rules {
            immutable: self.immutable.clone(),
            retention: self.retention.clone(),
        }
    }

    /// The metadata store that runs: `metadata.kind`, or the one `database.url` implies.
    /// [`Config::validate`] refuses a kind the URL contradicts.
    pub fn metadata_kind(&self) -> MetadataKind {
        self.metadata.kind.unwrap_or(match self.database.url {
            Some(_) => MetadataKind::Postgres,
            None => MetadataKind::Sqlite,
        })
    }

    /// The blob store that runs: `blobs.kind`, or the one `ipfs.url` implies.
    /// [`Config::validate`] refuses a kind the URL contradicts.
    pub fn blobs_kind(&self) -> BlobsKind {
        self.blobs.kind.unwrap_or(match self.ipfs.url {
            Some(_) => BlobsKind::Kubo,
            None => BlobsKind::Embedded,
        })
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |setting, message: &str| {
            Err(ConfigError::Invalid {
                setting,
                message: message.to_owned(),
            })
        };
        check_store_kind(
            "metadata.kind",
            self.metadata
                .kind
                .map(|kind| kind == MetadataKind::Postgres),
            ["sqlite", "postgres"],
            "database.url",
            self.database.url.is_some(),
        )?;
        check_store_kind(
            "blobs.kind",
            self.blobs.kind.map(|kind| kind == BlobsKind::Kubo),
            ["embedded", "kubo"],
            "ipfs.url",
            self.ipfs.url.is_some(),
        )?;
        if let Err(e) = self.notifications.validate() {
            return invalid("notifications.endpoint", &e);
        }
        if let Err(e) = mirror::validate(&self.mirror) {
            return invalid("mirror", &e);
        }
        if self.integrity.scrub_interval.is_some_and(|i| i.is_zero()) {
            return invalid(
                "integrity.scrub_interval",
                "must be greater than zero (leave it unset for no periodic scrub)",
            );
        }
        if self.database.pool_size == 0 {
            return invalid("database.pool_size", "must be at least 1");
        }
        if self.database.timeout.is_zero() {
            return invalid("database.timeout", "must be greater than zero");
        }
        if self.database.operation_timeout.is_zero() {
            return invalid("database.operation_timeout", "must be greater than zero");
        }
        if self.database.gc_operation_timeout.is_zero() {
            return invalid("database.gc_operation_timeout", "must be greater than zero");
        }
        if let Some(url) = &self.database.url {
            let check = match crate::meta::postgres::tls::parse_url(url) {
                Ok((_, check)) => check,
                Err(e) => {
                    return invalid(
                        "database.url",
                        &format!("is not a valid PostgreSQL connection URL: {e}"),
                    )
                }
            };
            if self.database.ca_file.is_some()
                && check == crate::meta::postgres::tls::CertificateCheck::None
            {
                return invalid(
                    "database.ca_file",
                    "is used only to verify the server's certificate: add \
                     sslmode=verify-full (or verify-ca) to database.url",
                );
            }
        }
        if let Some(path) = &self.database.ca_file {
            if let Err(e) = crate::tls::read_ca_file(path) {
                return invalid("database.ca_file", &e);
            }
        }
        if let Some(url) = &self.ipfs.url {
            if !matches!(url.scheme(), "http" | "https") {
                return invalid("ipfs.url", "must be an http:// or https:// URL");
            }
        }
        if let Some(path) = &self.ipfs.ca_file {
            if let Err(e) = crate::tls::read_ca_file(path) {
                return invalid("ipfs.ca_file", &e);
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
        if let Some(url) = &self.gateway.url {
            if !matches!(url.scheme(), "http" | "https") {
                return invalid("gateway.url", "must be an http:// or https:// URL");
            }
        }
        if self
            .federation
            .gateways
            .iter()
            .any(|url| !matches!(url.scheme(), "http" | "https"))
        {
            return invalid("federation.gateways", "must be http:// or https:// URLs");
        }
        if self.federation.timeout.is_zero() {
            return invalid("federation.timeout", "must be > 0");
        }
        let key = &self.federation.ipns_key;
        if key.is_empty()
            || key == "self"
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return invalid(
                "federation.ipns_key",
                "must be a key name of letters, digits, '-', '_' and '.', not \"self\" (the node's own identity)",
            );
        }
        if let Err((at, message)) = follow::validate(&self.federation.follow) {
            return invalid("federation.follow", &format!("{at}: {message}"));
        }
        if self.blobs_kind() == BlobsKind::Embedded {
            for (i, rule) in self.federation.follow.iter().enumerate() {
                let message = match rule.source() {
                    Ok(FollowSource::Ipns(_)) => {
                        "an /ipns/ source needs an IPFS node (ipfs.url) to resolve it: follow \
                         the publishing registry's URL, or an /ipfs/ root"
                    }
                    Ok(FollowSource::Ipfs(_)) if self.federation.gateways.is_empty() => {
                        "an /ipfs/ source needs an IPFS node (ipfs.url) or federation.gateways \
                         to read it from"
                    }
                    _ => continue,
                };
                return invalid(
                    "federation.follow",
                    &format!("federation.follow[{i}]: {message}"),
                );
            }
        }
        if self.data_dir.as_os_str().is_empty() {
            return invalid("data_dir", "must not be empty");
        }
        if self.limits.max_concurrent_uploads == 0 {
            return invalid("limits.max_concurrent_uploads", "must be at least 1");
        }
        if self.limits.max_concurrent_requests == 0 {
            return invalid("limits.max_concurrent_requests", "must be at least 1");
        }
        if self.limits.request_timeout.is_zero() {
            return invalid("limits.request_timeout", "must be greater than zero");
        }
        if self.limits.idle_timeout.is_zero() {
            return invalid("limits.idle_timeout", "must be greater than zero");
        }
        if self.limits.max_concurrent_downloads == 0 {
            return invalid("limits.max_concurrent_downloads", "must be at least 1");
        }
        if !(1..=100).contains(&self.limits.per_client_percent) {
            return invalid("limits.per_client_percent", "must be from 1 to 100");
        }
        if self.limits.header_timeout.is_zero() {
            return invalid("limits.header_timeout", "must be greater than zero");
        }
        if self.limits.max_connections == 0 {
            return invalid("limits.max_connections", "must be at least 1");
        }
        if self.limits.backlog == 0 {
            return invalid("limits.backlog", "must be at least 1");
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.logging.level) {
            return invalid("logging.level", &format!("is not a log filter: {e}"));
        }
        if self.gc.upload_expiry.is_zero() {
            return invalid("gc.upload_expiry", "must be greater than zero");
        }
        if self.limits.max_manifest_size == 0 {
            return invalid("limits.max_manifest_size", "must be greater than zero");
        }
        if self.auth.token_ttl.as_secs() == 0 {
            return invalid("auth.token_ttl", "must be at least one second");
        }
        if self.auth.session_ttl.as_secs() == 0 {
            return invalid("auth.session_ttl", "must be at least one second");
        }
        if self.auth.max_concurrent_password_checks == Some(0) {
            return invalid("auth.max_concurrent_password_checks", "must be at least 1");
        }
        if self.auth.service.is_empty() {
            return invalid("auth.service", "must not be empty");
        }
        if self.auth.issuer.is_empty() {
            return invalid("auth.issuer", "must not be empty");
        }
        if self.auth.signing_key.is_some() && self.auth.signing_key_file.is_some() {
            return invalid(
                "auth.signing_key",
                "set either auth.signing_key or auth.signing_key_file, not both",
            );
        }
        if let Some(url) = &self.auth.realm {
            if !matches!(url.scheme(), "http" | "https") {
                return invalid("auth.realm", "must be an http:// or https:// URL");
            }
        }
        self.rules().validate().map_err(|e| ConfigError::Invalid {
            setting: e.setting,
            message: e.message,
        })?;
        Ok(())
    }
}

/// Refuses a store kind that `url_setting` contradicts: the external store (`kinds[1]`,
/// `external` true) without its URL, or the embedded one (`kinds[0]`) beside a URL.
fn check_store_kind(
    setting: &'static str,
    external: Option<bool>,
    kinds: [&str; 2],
    url_setting: &str,
    url_set: bool,
) -> Result<(), ConfigError> {
    let [embedded, external_kind] = kinds;
    let message = match (external, url_set) {
        (Some(true), false) => format!(
            "is \"{external_kind}\", which needs {url_setting}: set {url_setting}, or \
             {setting} = \"{embedded}\" for the embedded store"
        ),
        (Some(false), true) => format!(
            "is \"{embedded}\", but {url_setting} is set: unset {url_setting}, or set \
             {setting} = \"{external_kind}\" to use it"
        ),
        _ => return Ok(()),
    };
    Err(ConfigError::Invalid { setting, message })
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
            jail.set_env("IPFS_REGISTRY_LOGGING__FORMAT", "json");
            jail.set_env("IPFS_REGISTRY_GC__INTERVAL", "10m");
            jail.set_env("IPFS_REGISTRY_GC__UNTAGGED_RETENTION", "7days");
            jail.set_env("IPFS_REGISTRY_SHUTDOWN_TIMEOUT", "5s");
            jail.set_env("IPFS_REGISTRY_LIMITS__MAX_CONCURRENT_REQUESTS", "7");
            jail.set_env("IPFS_REGISTRY_LIMITS__IDLE_TIMEOUT", "10s");
            jail.set_env("IPFS_REGISTRY_LIMITS__KEEP_ALIVE", "0s");
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
            assert_eq!(config.logging.format, LogFormat::Json);
            assert_eq!(config.logging.level, "info");
            assert_eq!(config.gc.interval, Duration::from_secs(600));
            assert_eq!(config.gc.grace_period, Duration::from_secs(3600));
            assert_eq!(
                config.gc.untagged_retention,
                Some(Duration::from_secs(7 * 24 * 3600))
            );
            assert_eq!(config.shutdown_timeout, Duration::from_secs(5));
            assert_eq!(config.limits.max_concurrent_requests, 7);
            assert_eq!(config.limits.idle_timeout, Duration::from_secs(10));
            assert_eq!(config.limits.keep_alive, Duration::ZERO);
            assert_eq!(config.limits.max_concurrent_downloads, 512);
            assert_eq!(config.limits.per_client_percent, 25);
            Ok(())
        });
    }

    #[test]
    fn immutable_and_retention_rules_load_validate_and_show() {
        Jail::expect_with(|jail| {
            assert!(Config::load(None).unwrap().rules() == Rules::default());
            jail.create_file(
                "registry.toml",
                r#"
                [[immutable]]
                repositories = "team/*"
                tags = ["v*", "stable"]

                [[retention]]
                repositories = "ci/*"
                keep_last = 5
                keep_tags = ["release-*"]
                untagged_older_than = "7days"
                "#,
            )?;
            let config = Config::load(Some(Path::new("registry.toml"))).unwrap();
            let rules = config.rules();
            assert!(rules.protected_tags("team/app").covers("v1.0"));
            assert!(!rules.protected_tags("ci/app").covers("v1.0"));
            let retention = rules.retention_for("ci/app").unwrap();
            assert_eq!(retention.keep_last, Some(5));
            assert_eq!(
                retention.untagged_older_than,
                Some(Duration::from_secs(7 * 24 * 3600))
            );
            // `ipfs-registry config` shows them, in a form that loads back the same.
            let shown = config.to_redacted_toml().unwrap();
            assert!(
                shown.contains("[[immutable]]") && shown.contains("[[retention]]"),
                "{shown}"
            );
            jail.create_file("again.toml", &shown)?;
            let again = Config::load(Some(Path::new("again.toml"))).unwrap();
            assert_eq!(again.rules(), rules);
            Ok(())
        });

        // The environment form: the rules as a TOML array of inline tables.
        Jail::expect_with(|jail| {
            jail.set_env(
                "IPFS_REGISTRY_IMMUTABLE",
                r#"[{repositories = "team/*", tags = ["v*"]}]"#,
            );
            jail.set_env(
                "IPFS_REGISTRY_RETENTION",
                r#"[{repositories = "ci/*", keep_last = 3, untagged_older_than = "1day"}]"#,
            );
            let rules = Config::load(None).unwrap().rules();
            assert!(rules.protected_tags("team/a").covers("v2"));
            assert_eq!(rules.retention_for("ci/a").unwrap().keep_last, Some(3));
            Ok(())
        });

        let refused = |toml: &'static str| {
            load_err(move |jail| {
                jail.create_file("registry.toml", toml)?;
                Ok(())
            })
        };
        let message = refused("[[immutable]]\nrepositories = \"team/*\"\ntags = [\"v/*\"]\n");
        assert!(
            message.contains("immutable") && message.contains("tags"),
            "{message}"
        );
        assert!(message.contains("'/' cannot occur in a tag"), "{message}");
        let message = refused("[[immutable]]\nrepositories = \"Team/*\"\ntags = [\"v*\"]\n");
        assert!(message.contains("repositories"), "{message}");
        let message = refused("[[immutable]]\nrepositories = \"team/*\"\ntags = []\n");
        assert!(message.contains("`immutable.tags`"), "{message}");
        let message =
            refused("[[retention]]\nrepositories = \"ci/*\"\nuntagged_older_than = \"a week\"\n");
        assert!(message.contains("untagged_older_than"), "{message}");
        let message = refused("[[retention]]\nrepositories = \"ci/*\"\nkeep_last = 0\n");
        assert!(message.contains("`retention.keep_last`"), "{message}");
        let message = refused("[[retention]]\nrepositories = \"ci/*\"\n");
        assert!(message.contains("`retention.repositories`"), "{message}");
        let message = refused("[[retention]]\nrepositories = \"ci/*\"\nkeep_lats = 3\n");
        assert!(message.contains("keep_lats"), "{message}");
    }

    #[test]
    fn mirrors_load_validate_and_show_without_their_password() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "registry.toml",
                r#"
                [[mirror]]
                upstream = "https://registry-1.docker.io"
                prefix = "dockerhub/"
                host = "docker.io"
                default = true
                username = "someone"
                password = "hub-secret"
                repositories = ["library/*"]
                manifest_ttl = "10m"
                "#,
            )?;
            let config = Config::load(Some(Path::new("registry.toml"))).unwrap();
            let mirror = &config.mirror[0];
            assert_eq!(mirror.host(), "docker.io");
            assert_eq!(mirror.manifest_ttl, Duration::from_secs(600));
            assert!(mirror.serves("library/alpine") && !mirror.serves("bitnami/redis"));
            let shown = config.to_redacted_toml().unwrap();
            assert!(shown.contains("[[mirror]]"), "{shown}");
            assert!(!shown.contains("hub-secret"), "{shown}");
            assert!(!format!("{config:?}").contains("hub-secret"));
            Ok(())
        });
        let message = load_err(|jail| {
            jail.create_file(
                "registry.toml",
                "[[mirror]]\nupstream = \"https://a.example\"\nprefix = \"nope\"\n",
            )?;
            Ok(())
        });
        assert!(
            message.contains("`mirror`") && message.contains("must end with '/'"),
            "{message}"
        );
    }

    #[test]
    fn follow_rules_load_show_and_are_refused_by_index() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "registry.toml",
                r#"
                [[federation.follow]]
                source = "https://a.example"
                repositories = ["team/*"]
                prefix = "a/"
                interval = "30s"
                delete = true
                "#,
            )?;
            let config = Config::load(Some(Path::new("registry.toml"))).unwrap();
            let rule = &config.federation.follow[0];
            assert_eq!(rule.interval, Duration::from_secs(30));
            assert!(rule.delete && rule.follows("team/app"));
            let shown = config.to_redacted_toml().unwrap();
            assert!(shown.contains("[[federation.follow]]"), "{shown}");
            Ok(())
        });
        let message = load_err(|jail| {
            jail.create_file(
                "registry.toml",
                "[[federation.follow]]\nsource = \"https://a.example\"\n\
                 [[federation.follow]]\nsource = \"https://b.example\"\nprefix = \"B/\"\n",
            )?;
            Ok(())
        });
        assert!(
            message.contains("`federation.follow`") && message.contains("federation.follow[1]"),
            "{message}"
        );
        // The embedded store resolves no IPNS name.
        let message = load_err(|jail| {
            jail.create_file(
                "registry.toml",
                "[[federation.follow]]\nsource = \"/ipns/k51abc\"\n",
            )?;
            Ok(())
        });
        assert!(
            message.contains("federation.follow[0]") && message.contains("IPFS node"),
            "{message}"
        );
    }

    #[test]
    fn integrity_settings() {
        Jail::expect_with(|jail| {
            let config = Config::load(None).unwrap();
            assert!(
                !config.integrity.verify_on_pull,
                "pulls are not re-hashed by default"
            );
            assert_eq!(config.integrity.scrub_interval, None);
            assert_eq!(config.integrity.scrub_rate, 100 * 1024 * 1024);
            jail.set_env("IPFS_REGISTRY_INTEGRITY__VERIFY_ON_PULL", "true");
            jail.set_env("IPFS_REGISTRY_INTEGRITY__SCRUB_INTERVAL", "1day");
            jail.set_env("IPFS_REGISTRY_INTEGRITY__SCRUB_RATE", "0");
            let config = Config::load(None).unwrap();
            assert!(config.integrity.verify_on_pull);
            assert_eq!(
                config.integrity.scrub_interval,
                Some(Duration::from_secs(24 * 3600))
            );
            assert_eq!(config.integrity.scrub_rate, 0);
            Ok(())
        });
    }

    #[test]
    fn auth_settings_from_the_environment() {
        Jail::expect_with(|jail| {
            let config = Config::load(None).unwrap();
            assert!(!config.auth.enabled, "auth is off by default");
            assert_eq!(config.auth.service, "ipfs-registry");
            assert_eq!(config.auth.token_ttl, Duration::from_secs(300));
            assert_eq!(config.auth.max_concurrent_password_checks, None);
            assert_eq!(config.auth.login_cache_ttl, Duration::from_secs(60));
            assert_eq!(config.auth.session_ttl, Duration::from_secs(12 * 3600));
            assert_eq!(config.data_dir, PathBuf::from("./data"));

            jail.set_env("IPFS_REGISTRY_AUTH__ENABLED", "true");
            jail.set_env("IPFS_REGISTRY_AUTH__SERVICE", "registry.example.com");
            jail.set_env("IPFS_REGISTRY_AUTH__ISSUER", "issuer.example.com");
            jail.set_env(
                "IPFS_REGISTRY_AUTH__REALM",
                "https://auth.example.com/token",
            );
            jail.set_env("IPFS_REGISTRY_AUTH__TOKEN_TTL", "10m");
            jail.set_env(
                "IPFS_REGISTRY_AUTH__SIGNING_KEY",
                "-----BEGIN PRIVATE KEY-----",
            );
            jail.set_env(
                "IPFS_REGISTRY_AUTH__TRUSTED_PROXIES",
                "[10.0.0.0/8, 10.0.0.5, \"::1\", fd00::/8]",
            );
            jail.set_env("IPFS_REGISTRY_AUTH__MAX_CONCURRENT_PASSWORD_CHECKS", "3");
            jail.set_env("IPFS_REGISTRY_AUTH__LOGIN_CACHE_TTL", "0s");
            jail.set_env("IPFS_REGISTRY_DATA_DIR", "/var/lib/registry");
            let config = Config::load(None).unwrap();
            assert!(config.auth.enabled);
            assert_eq!(config.auth.max_concurrent_password_checks, Some(3));
            assert_eq!(config.auth.login_cache_ttl, Duration::ZERO);
            assert_eq!(config.auth.service, "registry.example.com");
            assert_eq!(config.auth.issuer, "issuer.example.com");
            assert_eq!(
                config.auth.realm.as_ref().map(Url::as_str),
                Some("https://auth.example.com/token")
            );
            assert_eq!(config.auth.token_ttl, Duration::from_secs(600));
            assert_eq!(
                config.auth.trusted_proxies,
                ["10.0.0.0/8", "10.0.0.5", "::1", "fd00::/8"]
                    .map(|r| r.parse::<IpRange>().unwrap())
                    .to_vec()
            );
            assert_eq!(config.data_dir, PathBuf::from("/var/lib/registry"));
            let shown = format!("{config:?}");
            assert!(!shown.contains("BEGIN PRIVATE KEY"), "the key is redacted");
            Ok(())
        });
    }

    #[test]
    fn invalid_auth_settings_are_named() {
        let message = load_err(|jail| {
            jail.set_env("IPFS_REGISTRY_AUTH__TOKEN_TTL", "0s");
            Ok(())
        });
        assert!(message.contains("auth.token_ttl"), "{message}");
        let message = load_err(|jail| {
            jail.set_env("IPFS_REGISTRY_AUTH__MAX_CONCURRENT_PASSWORD_CHECKS", "0");
            Ok(())
        });
        assert!(
            message.contains("auth.max_concurrent_password_checks"),
            "{message}"
        );
        let message = load_err(|jail| {
            jail.set_env("IPFS_REGISTRY_AUTH__SIGNING_KEY", "x");
            jail.set_env("IPFS_REGISTRY_AUTH__SIGNING_KEY_FILE", "/k.pem");
            Ok(())
        });
        assert!(message.contains("auth.signing_key"), "{message}");
        let message = load_err(|jail| {
            jail.set_env("IPFS_REGISTRY_AUTH__REALM", "ftp://x/token");
            Ok(())
        });
        assert!(message.contains("auth.realm"), "{message}");
        let message = load_err(|jail| {
            jail.set_env("IPFS_REGISTRY_AUTH__TRUSTED_PROXIES", "[10.0.0.5/8]");
            Ok(())
        });
        assert!(
            message.to_lowercase().contains("auth.trusted_proxies")
                && message.contains("the range is 10.0.0.0/8"),
            "{message}"
        );
        let message = load_err(|jail| {
            jail.set_env("IPFS_REGISTRY_AUTH__TRUSTED_PROXIES", "[proxy.internal]");
            Ok(())
        });
        assert!(
            message.to_lowercase().contains("auth.trusted_proxies")
                && message.contains("not an IP address"),
            "{message}"
        );
    }

    #[test]
    fn trusted_proxies_from_a_file_and_written_back() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "registry.toml",
                r#"
                [auth]
                trusted_proxies = ["10.0.0.0/8", "192.168.1.7", "fd00::/8"]
                "#,
            )?;
            let config = Config::load(Some(Path::new("registry.toml"))).unwrap();
            let proxies = &config.auth.trusted_proxies;
            let trusted = |ip: &str| proxies.iter().any(|r| r.contains(ip.parse().unwrap()));
            assert!(trusted("10.233.64.9"));
            assert!(trusted("192.168.1.7"));
            assert!(!trusted("192.168.1.8"));
            // `ipfs-registry config` prints a file that loads back to the same ranges.
            let shown = config.to_redacted_toml().unwrap();
            for entry in [r#""10.0.0.0/8""#, r#""192.168.1.7""#, r#""fd00::/8""#] {
                assert!(shown.contains(entry), "{shown}");
            }
            jail.create_file("again.toml", &shown)?;
            let again = Config::load(Some(Path::new("again.toml"))).unwrap();
            assert_eq!(&again.auth.trusted_proxies, proxies);
            // The environment form, empty too.
            jail.set_env("IPFS_REGISTRY_AUTH__TRUSTED_PROXIES", "[]");
            assert!(Config::load(None).unwrap().auth.trusted_proxies.is_empty());
            Ok(())
        });
    }

    #[test]
    fn tls_settings() {
        Jail::expect_with(|jail| {
            let ca = rcgen::generate_simple_self_signed(vec!["db.internal".to_owned()]).unwrap();
            jail.create_file("ca.pem", &ca.cert.pem())?;
            jail.set_env(
                "IPFS_REGISTRY_DATABASE__URL",
                "postgres://u@db.internal/r?sslmode=verify-full",
            );
            jail.set_env("IPFS_REGISTRY_DATABASE__CA_FILE", "ca.pem");
            jail.set_env("IPFS_REGISTRY_IPFS__URL", "https://kubo.internal:5001");
            jail.set_env("IPFS_REGISTRY_IPFS__CA_FILE", "ca.pem");
            let config = Config::load(None).unwrap();
            assert_eq!(config.database.ca_file, Some(PathBuf::from("ca.pem")));
            assert_eq!(config.ipfs.ca_file, Some(PathBuf::from("ca.pem")));
            Ok(())
        });

        let message = load_err(|jail| {
            jail.set_env("IPFS_REGISTRY_IPFS__CA_FILE", "missing.pem");
            Ok(())
        });
        assert!(message.contains("`ipfs.ca_file`"), "{message}");
        assert!(message.contains("missing.pem"), "{message}");

        let message = load_err(|jail| {
            jail.create_file("empty.pem", "nothing here")?;
            jail.set_env(
                "IPFS_REGISTRY_DATABASE__URL",
                "postgres://u@db/r?sslmode=verify-ca",
            );
            jail.set_env("IPFS_REGISTRY_DATABASE__CA_FILE", "empty.pem");
            Ok(())
        });
        assert!(message.contains("`database.ca_file`"), "{message}");
        assert!(message.contains("no PEM certificate"), "{message}");

        // A CA file with a mode that never looks at the certificate is refused, not ignored.
        let message = load_err(|jail| {
            jail.set_env(
                "IPFS_REGISTRY_DATABASE__URL",
                "postgres://u@db/r?sslmode=require",
            );
            jail.set_env("IPFS_REGISTRY_DATABASE__CA_FILE", "ca.pem");
            Ok(())
        });
        assert!(message.contains("`database.ca_file`"), "{message}");
        assert!(message.contains("verify-full"), "{message}");

        let message = load_err(|jail| {
            jail.set_env(
                "IPFS_REGISTRY_DATABASE__URL",
                "postgres://u:secret@db/r?sslmode=verify",
            );
            Ok(())
        });
        assert!(message.contains("`database.url`"), "{message}");
        assert!(message.contains("sslmode"), "{message}");
        assert!(!message.contains("secret"), "{message}");
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
            jail.set_env("IPFS_REGISTRY_DATABASE__OPERATION_TIMEOUT", "0s");
            Ok(())
        });
        assert!(message.contains("database.operation_timeout"), "{message}");

        let message = load_err(|jail| {
            jail.set_env("IPFS_REGISTRY_LIMITS__PER_CLIENT_PERCENT", "0");
            Ok(())
        });
        assert!(message.contains("limits.per_client_percent"), "{message}");

        let message = load_err(|jail| {
            jail.set_env("IPFS_REGISTRY_LIMITS__IDLE_TIMEOUT", "0s");
            Ok(())
        });
        assert!(message.contains("limits.idle_timeout"), "{message}");

        let message = load_err(|jail| {
            jail.set_env("IPFS_REGISTRY_INTEGRITY__SCRUB_INTERVAL", "0s");
            Ok(())
        });
        assert!(message.contains("integrity.scrub_interval"), "{message}");

        let message = load_err(|jail| {
            jail.set_env("IPFS_REGISTRY_LOGGING__LEVEL", "info,[[[");
            Ok(())
        });
        assert!(message.contains("logging.level"), "{message}");

        let message = load_err(|jail| {
            jail.set_env("IPFS_REGISTRY_LOGGING__FORMAT", "xml");
            Ok(())
        });
        assert!(
            message.to_lowercase().contains("logging.format"),
            "{message}"
        );

        let message = load_err(|jail| {
            jail.create_file("registry.toml", "listen = \"127.0.0.1:5000\"\nbogus = 1\n")?;
            Ok(())
        });
        assert!(message.contains("bogus"), "{message}");
    }
}
