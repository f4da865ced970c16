//! `[[mirror]]`: upstream registries served as pull-through mirrors (docs/mirror.md).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

use crate::oci::RepoPattern;

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorConfig {
    /// The upstream registry's base URL (`https://registry-1.docker.io`); `/v2/...` is
    /// appended to it.
    pub upstream: Url,
    /// Local names starting with this (`dockerhub/`) are mirrored: `dockerhub/library/alpine`
    /// is the upstream's `library/alpine`. Mirrored content is stored under it whichever way
    /// it was asked for.
    #[serde(default)]
    pub prefix: Option<String>,
    /// The registry host containerd names in `?ns=` for this upstream (`docker.io`); by
    /// default the upstream URL's host.
    #[serde(default)]
    pub host: Option<String>,
    /// Answers docker's `registry-mirrors` requests: unprefixed names not held locally.
    #[serde(default)]
    pub default: bool,
    /// Upstream credentials (Basic, or for the token flow); the password is redacted by
    /// `ipfs-registry config`.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// Upstream repositories this mirror may serve (globs); none = every one.
    #[serde(default)]
    pub repositories: Vec<RepoPattern>,
    /// How long a tag fetched from the upstream is served before it is checked again.
    #[serde(with = "humantime_serde", default = "default_manifest_ttl")]
    pub manifest_ttl: Duration,
    /// One upstream request's limit to connect and to answer (a blob's body is bounded
    /// by `read_timeout` between pieces instead).
    #[serde(with = "humantime_serde", default = "default_timeout")]
    pub timeout: Duration,
    /// The longest pause between two pieces of an upstream blob before the fetch fails.
    #[serde(with = "humantime_serde", default = "default_read_timeout")]
    pub read_timeout: Duration,
}

fn default_manifest_ttl() -> Duration {
    Duration::from_secs(5 * 60)
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_read_timeout() -> Duration {
    Duration::from_secs(60)
}

impl std::fmt::Debug for MirrorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MirrorConfig")
            .field("upstream", &self.upstream.as_str())
            .field("prefix", &self.prefix)
            .field("host", &self.host)
            .field("default", &self.default)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("repositories", &self.repositories)
            .field("manifest_ttl", &self.manifest_ttl)
            .finish_non_exhaustive()
    }
}

impl MirrorConfig {
    /// The host containerd's `?ns=` names this upstream by.
    pub fn host(&self) -> String {
        match &self.host {
            Some(host) => host.clone(),
            None => match (self.upstream.host_str(), self.upstream.port()) {
                (Some(host), Some(port)) => format!("{host}:{port}"),
                (Some(host), None) => host.to_owned(),
                (None, _) => String::new(),
            },
        }
    }

    /// Whether this mirror may serve the upstream repository `name`.
    pub fn serves(&self, name: &str) -> bool {
        self.repositories.is_empty() || self.repositories.iter().any(|p| p.matches(name))
    }
}

/// Refuses what would fail only when a request comes. Errors name the entry.
pub fn validate(mirrors: &[MirrorConfig]) -> Result<(), String> {
    let mut prefixes = std::collections::HashSet::new();
    let mut hosts = std::collections::HashSet::new();
    let mut defaults = 0;
    for mirror in mirrors {
        let at = format!("mirror {}", mirror.upstream);
        if !matches!(mirror.upstream.scheme(), "http" | "https") {
            return Err(format!("{at}: upstream must be http:// or https://"));
        }
        if mirror.upstream.host_str().is_none() {
            return Err(format!("{at}: upstream has no host"));
        }
        if mirror.upstream.query().is_some() || mirror.upstream.fragment().is_some() {
            return Err(format!("{at}: upstream must have no query or fragment"));
        }
        if !mirror.upstream.username().is_empty() || mirror.upstream.password().is_some() {
            return Err(format!(
                "{at}: put the upstream's credentials in username and password, not the URL"
            ));
        }
        if let Some(prefix) = &mirror.prefix {
            check_prefix(prefix).map_err(|e| format!("{at}: prefix {prefix:?} {e}"))?;
            if !prefixes.insert(prefix.as_str()) {
                return Err(format!("{at}: prefix {prefix:?} is used by two mirrors"));
            }
        }
        let host = mirror.host();
        if host.is_empty() || host.contains('/') {
            return Err(format!("{at}: host {host:?} is not a registry host name"));
        }
        if !hosts.insert(host.clone()) {
            return Err(format!(
                "{at}: host {host:?} names two mirrors (set host on one of them)"
            ));
        }
        if mirror.default {
            defaults += 1;
        }
        if mirror.password.is_some() && mirror.username.is_none() {
            return Err(format!("{at}: password is set but username is not"));
        }
        if mirror.manifest_ttl.is_zero() {
            return Err(format!(
                "{at}: manifest_ttl must be greater than zero (tags would be fetched on every pull)"
            ));
        }
        if mirror.timeout.is_zero() || mirror.read_timeout.is_zero() {
            return Err(format!(
                "{at}: timeout and read_timeout must be greater than zero"
            ));
        }
    }
    if defaults > 1 {
        return Err("at most one mirror may be the default (default = true)".into());
    }
    Ok(())
}

/// A prefix is one or more name components followed by `/`, so that a prefixed name is a
/// valid repository name whenever the upstream's is.
pub(super) fn check_prefix(prefix: &str) -> Result<(), String> {
    let Some(components) = prefix.strip_suffix('/') else {
        return Err("must end with '/' (e.g. \"dockerhub/\")".into());
    };
    let probe = format!("{components}/x");
    probe
        .parse::<crate::oci::RepoName>()
        .map(|_| ())
        .map_err(|_| "is not the start of a valid repository name (lowercase components)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mirror(toml_text: &str) -> MirrorConfig {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn defaults_and_host() {
        let m = mirror("upstream = \"https://registry-1.docker.io\"");
        assert_eq!(m.manifest_ttl, Duration::from_secs(300));
        assert_eq!(m.host(), "registry-1.docker.io");
        assert!(m.serves("library/alpine"));
        let m = mirror("upstream = \"http://127.0.0.1:5000\"\nhost = \"docker.io\"\nrepositories = [\"library/*\"]");
        assert_eq!(m.host(), "docker.io");
        assert!(m.serves("library/alpine"));
        assert!(!m.serves("someone/else"));
        let m = mirror("upstream = \"http://127.0.0.1:5000\"");
        assert_eq!(m.host(), "127.0.0.1:5000");
    }

    #[test]
    fn refuses_what_cannot_work() {
        let check = |entries: &[&str]| {
            let mirrors: Vec<MirrorConfig> = entries.iter().map(|t| mirror(t)).collect();
            validate(&mirrors)
        };
        assert!(check(&["upstream = \"https://r.example\"\nprefix = \"hub/\""]).is_ok());
        let err = check(&["upstream = \"https://r.example\"\nprefix = \"hub\""]).unwrap_err();
        assert!(err.contains("must end with '/'"), "{err}");
        let err = check(&["upstream = \"https://r.example\"\nprefix = \"Hub/\""]).unwrap_err();
        assert!(err.contains("valid repository name"), "{err}");
        let err = check(&["upstream = \"ftp://r.example\""]).unwrap_err();
        assert!(err.contains("http"), "{err}");
        let err = check(&[
            "upstream = \"https://a.example\"\ndefault = true",
            "upstream = \"https://b.example\"\ndefault = true",
        ])
        .unwrap_err();
        assert!(err.contains("at most one"), "{err}");
        let err = check(&[
            "upstream = \"https://a.example\"\nprefix = \"a/\"",
            "upstream = \"https://b.example\"\nprefix = \"a/\"",
        ])
        .unwrap_err();
        assert!(err.contains("two mirrors"), "{err}");
        let err = check(&["upstream = \"https://u:p@a.example\""]).unwrap_err();
        assert!(err.contains("credentials"), "{err}");
        let err = check(&["upstream = \"https://a.example\"\nmanifest_ttl = \"0s\""]).unwrap_err();
        assert!(err.contains("manifest_ttl"), "{err}");
        let err = check(&["upstream = \"https://a.example\"\npassword = \"x\""]).unwrap_err();
        assert!(err.contains("username"), "{err}");
        let bad = toml::from_str::<MirrorConfig>(
            "upstream = \"https://a.example\"\nrepositories = [\"BAD PATTERN\"]",
        );
        assert!(bad.is_err(), "a malformed pattern is refused at load");
    }
}
