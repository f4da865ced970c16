//! Pull-through mirrors (docs/mirror.md): manifests and blobs of an upstream registry,
//! fetched when a client first asks for them, verified, and stored like pushed ones.
//!
//! Which names a mirror answers is decided once per request ([`Registry::route`]); the
//! answer, a [`Mirrored`] name, carries the mirror, the local repository the content is
//! stored in and the upstream's name for it.

mod blobs;
mod manifests;
pub mod upstream;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{Registry, RegistryError, Result};
use crate::config::MirrorConfig;
use crate::meta::RepoOrigin;
use crate::oci::{Digest, RepoName};

pub use blobs::{MirroredBlob, MirroredBlobHead};
pub use manifests::MirroredManifest;
use upstream::{Upstream, UpstreamError};

/// One `[[mirror]]` entry and its upstream client.
pub struct Mirror {
    config: MirrorConfig,
    upstream: Upstream,
    host: String,
}

/// The configured mirrors, and the blob fetches in flight (one per repository and digest).
#[derive(Default)]
pub struct Mirrors {
    entries: Vec<Arc<Mirror>>,
    flights: Mutex<HashMap<(RepoName, Digest), blobs::Flight>>,
}

impl Mirrors {
    pub fn new(configs: &[MirrorConfig], max_manifest_size: usize) -> Result<Mirrors, String> {
        let entries = configs
            .iter()
            .map(|config| {
                Ok(Arc::new(Mirror {
                    upstream: Upstream::new(config, max_manifest_size)?,
                    host: config.host(),
                    config: config.clone(),
                }))
            })
            .collect::<Result<_, String>>()?;
        Ok(Mirrors {
            entries,
            flights: Mutex::default(),
        })
    }

    fn prefixed<'a>(&'a self, repo: &'a RepoName) -> Option<(&'a Arc<Mirror>, &'a str)> {
        self.entries.iter().find_map(|mirror| {
            let prefix = mirror.config.prefix.as_deref()?;
            let rest = repo.as_str().strip_prefix(prefix)?;
            Some((mirror, rest))
        })
    }
}

/// A repository name a mirror answers for.
#[derive(Clone)]
pub struct Mirrored {
    mirror: Arc<Mirror>,
    /// Where its content is stored here: the mirror's prefix and the upstream name.
    local: RepoName,
    upstream: RepoName,
}

impl Mirrored {
    /// The local repository holding the mirrored content.
    pub fn local(&self) -> &RepoName {
        &self.local
    }

    fn serves(&self) -> Result<()> {
        if self.mirror.config.serves(self.upstream.as_str()) {
            Ok(())
        } else {
            Err(RegistryError::NameUnknown)
        }
    }
}

/// Where a request's repository is served from.
pub enum Route {
    Local,
    Mirrored(Mirrored),
}

impl Registry {
    pub fn with_mirrors(mut self, mirrors: Mirrors) -> Registry {
        self.mirrors = mirrors;
        self
    }

    /// Which mirror, if any, answers a pull of `repo`: containerd's `?ns=<host>` names
    /// the mirror of that host; a name under a mirror's prefix is that mirror's; an
    /// unprefixed name not pushed here goes to the default mirror (docker's
    /// `registry-mirrors`).
    pub async fn route(&self, repo: &RepoName, ns: Option<&str>) -> Result<Route> {
        let mirrors = &self.mirrors;
        if mirrors.entries.is_empty() {
            return Ok(Route::Local);
        }
        if let Some(ns) = ns {
            if let Some(mirror) = mirrors.entries.iter().find(|m| m.host == ns) {
                return self.unprefixed(mirror, repo).await;
            }
        }
        if let Some((mirror, rest)) = mirrors.prefixed(repo) {
            let upstream: RepoName = rest.parse().map_err(|_| RegistryError::NameUnknown)?;
            return Ok(Route::Mirrored(Mirrored {
                mirror: mirror.clone(),
                local: repo.clone(),
                upstream,
            }));
        }
        match mirrors.entries.iter().find(|m| m.config.default) {
            Some(mirror) => self.unprefixed(mirror, repo).await,
            None => Ok(Route::Local),
        }
    }

    /// `repo` as the upstream's name for the mirror `mirror`, unless it is a repository
    /// pushed here (which a mirror never shadows).
    async fn unprefixed(&self, mirror: &Arc<Mirror>, repo: &RepoName) -> Result<Route> {
        let local: RepoName = match &mirror.config.prefix {
            Some(prefix) => format!("{prefix}{repo}")
                .parse()
                .map_err(|_| RegistryError::NameUnknown)?,
            None => repo.clone(),
        };
        if self.meta.repository_origin(repo).await? == RepoOrigin::Pushed
            || !mirror.config.serves(repo.as_str())
        {
            return Ok(Route::Local);
        }
        Ok(Route::Mirrored(Mirrored {
            mirror: mirror.clone(),
            local,
            upstream: repo.clone(),
        }))
    }

    /// Refuses a push or delete to a mirrored repository: its content is the upstream's.
    pub async fn ensure_writable(&self, repo: &RepoName) -> Result<()> {
        if self.mirrors.entries.is_empty() {
            return Ok(());
        }
        let mirrored = self.mirrors.prefixed(repo).is_some()
            || self.meta.repository_origin(repo).await? == RepoOrigin::Mirrored;
        if mirrored {
            return Err(RegistryError::Unsupported(format!(
                "{repo} is a read-only mirror of an upstream registry: push to another name"
            )));
        }
        Ok(())
    }
}

/// An upstream failure as the client is told of it.
fn upstream_error(e: UpstreamError, unknown: RegistryError) -> RegistryError {
    match e {
        UpstreamError::NotFound => unknown,
        // Docker Hub answers 401 for a repository that does not exist, so does distribution
        // for one its token does not cover: to the client, there is nothing to pull.
        UpstreamError::Denied(message) => {
            tracing::warn!(event = "mirror_upstream_denied", error = %message);
            unknown
        }
        UpstreamError::Unavailable {
            message,
            retry_after,
        } => RegistryError::UpstreamUnavailable {
            message: format!("the mirror's upstream is unavailable: {message}"),
            retry_after,
        },
        UpstreamError::Invalid(message) => RegistryError::UpstreamUnavailable {
            message: format!("the mirror's upstream answered wrongly: {message}"),
            retry_after: None,
        },
    }
}
