//! Notifications: what the registry tells configured endpoints (docs/notifications.md).
//!
//! An event is built by the operation that makes the change, as one object of
//! distribution's envelope (`events[]`: `id`, `timestamp`, `action`, `target`, `request`,
//! `actor`, `source`) plus the blob's `cid`, and handed to the metadata store as one
//! [`Notice`] per endpoint that wants it, recorded in the change's own transaction. The
//! [`deliver`] loop sends what is recorded.

pub mod deliver;

use std::sync::OnceLock;
use std::time::SystemTime;

use serde_json::{json, Map, Value};

use crate::auth::permission::Pattern;
use crate::config::{EventKind, NotificationEndpoint};
use crate::meta::outbox::Notice;
use crate::oci::{Digest, RepoName};

/// The request behind a change, as the envelope reports it.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub request_id: String,
    /// The client's address (as the trusted proxies report it).
    pub addr: String,
    pub host: String,
    pub method: String,
    pub user_agent: String,
    /// The authenticated user, when there is one.
    pub actor: Option<String>,
}

/// The envelope's `action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Push,
    Pull,
    Delete,
    /// A blob linked from another repository (reported to endpoints that want pushes).
    Mount,
    /// A manifest or blob a mirror fetched from its upstream and stored.
    Mirror,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Push => "push",
            Action::Pull => "pull",
            Action::Delete => "delete",
            Action::Mount => "mount",
            Action::Mirror => "mirror",
        }
    }

    fn kind(self) -> EventKind {
        match self {
            Action::Push | Action::Mount => EventKind::Push,
            Action::Pull => EventKind::Pull,
            Action::Delete => EventKind::Delete,
            Action::Mirror => EventKind::Mirror,
        }
    }
}

/// What an event is about.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    pub repository: &'a RepoName,
    /// Manifest or blob (for the `url`).
    pub is_manifest: bool,
    pub digest: Option<&'a Digest>,
    pub media_type: Option<&'a str>,
    pub size: Option<u64>,
    pub tag: Option<&'a str>,
    pub cid: Option<cid::Cid>,
    pub from_repository: Option<&'a RepoName>,
}

impl<'a> Target<'a> {
    pub fn manifest(repository: &'a RepoName, digest: &'a Digest) -> Target<'a> {
        Target {
            repository,
            is_manifest: true,
            digest: Some(digest),
            media_type: None,
            size: None,
            tag: None,
            cid: None,
            from_repository: None,
        }
    }

    pub fn blob(repository: &'a RepoName, digest: &'a Digest) -> Target<'a> {
        Target {
            is_manifest: false,
            ..Target::manifest(repository, digest)
        }
    }

    /// A tag alone (a tag deleted).
    pub fn tag(repository: &'a RepoName, tag: &'a str) -> Target<'a> {
        Target {
            repository,
            is_manifest: true,
            digest: None,
            media_type: None,
            size: None,
            tag: Some(tag),
            cid: None,
            from_repository: None,
        }
    }
}

struct Endpoint {
    name: String,
    kinds: Vec<EventKind>,
    /// Empty: every repository.
    repositories: Vec<Pattern>,
}

/// Turns changes into notices for the endpoints that want them.
pub struct Notifier {
    endpoints: Vec<Endpoint>,
    /// The registry's base URL for `target.url`: `public_url`, else the address the server
    /// bound (set once it has, see [`Notifier::bound_at`]).
    base_url: OnceLock<String>,
    /// The server's address, as `source.addr`.
    source_addr: OnceLock<String>,
    instance_id: String,
}

impl Notifier {
    /// Over the configured endpoints (validated at load: unparseable patterns match
    /// nothing rather than everything).
    pub fn new(endpoints: &[NotificationEndpoint], public_url: Option<&url::Url>) -> Notifier {
        let base_url = OnceLock::new();
        if let Some(url) = public_url {
            let _ = base_url.set(url.as_str().trim_end_matches('/').to_owned());
        }
        Notifier {
            endpoints: endpoints
                .iter()
                .map(|e| Endpoint {
                    name: e.name.clone(),
                    kinds: e.events.clone(),
                    repositories: e
                        .repositories
                        .iter()
                        .filter_map(|p| p.parse().ok())
                        .collect(),
                })
                .collect(),
            base_url,
            source_addr: OnceLock::new(),
            instance_id: uuid::Uuid::new_v4().to_string(),
        }
    }

    /// The server bound `addr`: the events' `source.addr`, and their URLs' base unless
    /// `public_url` gave one.
    pub fn bound_at(&self, addr: std::net::SocketAddr) {
        let _ = self.source_addr.set(addr.to_string());
        let _ = self.base_url.set(format!("http://{addr}"));
    }

    /// This process's identity in `source.instanceID` and in outbox claims.
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// Whether any endpoint wants `action` in `repository` (so pulls cost nothing when none
    /// does).
    pub fn wants(&self, action: Action, repository: &RepoName) -> bool {
        self.endpoints
            .iter()
            .any(|e| Self::endpoint_wants(e, action, repository))
    }

    fn endpoint_wants(endpoint: &Endpoint, action: Action, repository: &RepoName) -> bool {
        endpoint.kinds.contains(&action.kind())
            && (endpoint.repositories.is_empty()
                || endpoint
                    .repositories
                    .iter()
                    .any(|p| p.matches(repository.as_str())))
    }

    /// One notice per endpoint that wants the event (none when no endpoint does).
    pub fn notices(&self, action: Action, target: &Target<'_>, origin: &Origin) -> Vec<Notice> {
        let wanting: Vec<&Endpoint> = self
            .endpoints
            .iter()
            .filter(|e| Self::endpoint_wants(e, action, target.repository))
            .collect();
        if wanting.is_empty() {
            return Vec::new();
        }
        let event = self.event(action, target, origin).to_string();
        wanting
            .into_iter()
            .map(|endpoint| Notice {
                endpoint: endpoint.name.clone(),
                event: event.clone(),
            })
            .collect()
    }

    fn event(&self, action: Action, target: &Target<'_>, origin: &Origin) -> Value {
        let mut t = Map::new();
        if let Some(media_type) = target.media_type {
            t.insert("mediaType".into(), json!(media_type));
        }
        if let Some(size) = target.size {
            t.insert("size".into(), json!(size));
            t.insert("length".into(), json!(size));
        }
        if let Some(digest) = target.digest {
            t.insert("digest".into(), json!(digest.to_string()));
            let kind = if target.is_manifest {
                "manifests"
            } else {
                "blobs"
            };
            t.insert(
                "url".into(),
                json!(format!(
                    "{}/v2/{}/{kind}/{digest}",
                    self.base_url.get().map_or("", String::as_str),
                    target.repository
                )),
            );
        }
        t.insert("repository".into(), json!(target.repository.as_str()));
        if let Some(tag) = target.tag {
            t.insert("tag".into(), json!(tag));
        }
        if let Some(from) = target.from_repository {
            t.insert("fromRepository".into(), json!(from.as_str()));
        }
        if let Some(cid) = &target.cid {
            t.insert("cid".into(), json!(cid.to_string()));
        }
        let mut actor = Map::new();
        if let Some(name) = &origin.actor {
            actor.insert("name".into(), json!(name));
        }
        json!({
            "id": uuid::Uuid::new_v4().to_string(),
            "timestamp": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            "action": action.name(),
            "target": t,
            "request": {
                "id": origin.request_id,
                "addr": origin.addr,
                "host": origin.host,
                "method": origin.method,
                "useragent": origin.user_agent,
            },
            "actor": actor,
            "source": {
                "addr": self.source_addr.get().map_or("", String::as_str),
                "instanceID": self.instance_id,
            },
        })
    }
}
