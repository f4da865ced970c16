//! `[[notifications.endpoint]]`: where events go (docs/notifications.md).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

use crate::auth::permission::Pattern;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationsConfig {
    #[serde(default)]
    pub endpoint: Vec<NotificationEndpoint>,
}

/// What an endpoint is told of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// Manifests and blobs pushed, and blobs mounted from another repository.
    Push,
    /// Manifests, tags and blob links deleted.
    Delete,
    /// Manifests and blobs pulled (GET; HEAD is not a pull). Each is a database write.
    Pull,
    /// Manifests and blobs a pull-through mirror fetched from its upstream and stored.
    Mirror,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationEndpoint {
    /// Names the endpoint in metrics, logs and `ipfs-registry notifications`; unique.
    pub name: String,
    pub url: Url,
    #[serde(default = "default_events")]
    pub events: Vec<EventKind>,
    /// Repository patterns (`name`, `namespace/*`, `*`); none = every repository.
    #[serde(default)]
    pub repositories: Vec<String>,
    /// Sent with every delivery (e.g. `Authorization`); shown redacted by `config`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Key of the `X-Registry-Signature-256: sha256=<hex>` HMAC-SHA256 over the body.
    #[serde(default)]
    pub secret: Option<String>,
    /// One delivery attempt, connection included.
    #[serde(with = "humantime_serde", default = "default_timeout")]
    pub timeout: Duration,
    /// Attempts before an event is kept as failed (`notifications replay` sends it again).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Delay after the first failed attempt, doubled after each further one.
    #[serde(with = "humantime_serde", default = "default_backoff")]
    pub backoff: Duration,
    #[serde(with = "humantime_serde", default = "default_max_backoff")]
    pub max_backoff: Duration,
}

fn default_events() -> Vec<EventKind> {
    vec![EventKind::Push, EventKind::Delete]
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_max_attempts() -> u32 {
    10
}

fn default_backoff() -> Duration {
    Duration::from_secs(1)
}

fn default_max_backoff() -> Duration {
    Duration::from_secs(10 * 60)
}

impl std::fmt::Debug for NotificationEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotificationEndpoint")
            .field("name", &self.name)
            .field("url", &self.url.as_str())
            .field("events", &self.events)
            .field("repositories", &self.repositories)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}

impl NotificationsConfig {
    /// Refuses what would fail only at delivery time. Errors name the setting.
    pub fn validate(&self) -> Result<(), String> {
        let mut names = std::collections::HashSet::new();
        for endpoint in &self.endpoint {
            let at = format!("endpoint {:?}", endpoint.name);
            if endpoint.name.is_empty() || endpoint.name.chars().any(char::is_control) {
                return Err("every endpoint needs a name of printable characters".into());
            }
            if !names.insert(endpoint.name.as_str()) {
                return Err(format!("{at}: the name is used twice"));
            }
            if !matches!(endpoint.url.scheme(), "http" | "https") {
                return Err(format!("{at}: url must be http:// or https://"));
            }
            if endpoint.events.is_empty() {
                return Err(format!(
                    "{at}: events is empty (push, delete, pull, mirror)"
                ));
            }
            for pattern in &endpoint.repositories {
                pattern
                    .parse::<Pattern>()
                    .map_err(|e| format!("{at}: repositories: {e}"))?;
            }
            for (name, value) in &endpoint.headers {
                let valid = actix_web::http::header::HeaderName::try_from(name.as_str()).is_ok()
                    && actix_web::http::header::HeaderValue::try_from(value.as_str()).is_ok();
                if !valid {
                    return Err(format!("{at}: headers: {name:?} is not a valid header"));
                }
            }
            if endpoint.timeout.is_zero() {
                return Err(format!("{at}: timeout must be greater than zero"));
            }
            if endpoint.max_attempts == 0 {
                return Err(format!("{at}: max_attempts must be at least 1"));
            }
            if endpoint.backoff.is_zero() || endpoint.max_backoff < endpoint.backoff {
                return Err(format!(
                    "{at}: backoff must be greater than zero and at most max_backoff"
                ));
            }
        }
        Ok(())
    }
}
