//! Manifests through a mirror: by digest immutable; by tag served from the store until the
//! mirror's `manifest_ttl` has passed since the upstream last confirmed it, then checked
//! with a HEAD (digest compared) and fetched again only when it moved. A stored one is
//! served when the upstream cannot be asked (stale-if-error).

use std::time::SystemTime;

use super::upstream::UpstreamError;
use super::{upstream_error, Mirrored};
use crate::meta::{NewManifest, StoredManifest};
use crate::oci::{manifest, Digest, Reference, Tag};
use crate::registry::notify::{Action, Origin, Target};
use crate::registry::{Registry, RegistryError, Result};

/// A manifest served through a mirror.
pub struct MirroredManifest {
    pub manifest: StoredManifest,
    /// Why a stored copy was served without the upstream's confirmation, when it was.
    pub stale: Option<String>,
}

impl MirroredManifest {
    fn fresh(manifest: StoredManifest) -> MirroredManifest {
        MirroredManifest {
            manifest,
            stale: None,
        }
    }
}

impl Registry {
    pub async fn get_mirrored_manifest(
        &self,
        name: &Mirrored,
        reference: &Reference,
        origin: &Origin,
    ) -> Result<MirroredManifest> {
        name.serves()?;
        let stored = self.meta.manifest(&name.local, reference).await?;
        match reference {
            Reference::Digest(digest) => match stored {
                Some(stored) => Ok(MirroredManifest::fresh(stored)),
                None => match self
                    .fetch_manifest(name, reference, Some(digest), origin)
                    .await
                {
                    Ok(fetched) => Ok(MirroredManifest::fresh(fetched)),
                    Err(e) => {
                        self.metrics.record_mirror("manifest", "failed");
                        Err(e.into())
                    }
                },
            },
            Reference::Tag(tag) => self.mirrored_tag(name, tag, stored, origin).await,
        }
    }

    async fn mirrored_tag(
        &self,
        name: &Mirrored,
        tag: &Tag,
        stored: Option<StoredManifest>,
        origin: &Origin,
    ) -> Result<MirroredManifest> {
        let ttl = name.mirror.config.manifest_ttl;
        if let Some(stored) = &stored {
            let checked = self.meta.mirrored_tag_checked(&name.local, tag).await?;
            let fresh = checked
                .and_then(|at| SystemTime::now().duration_since(at).ok())
                .is_some_and(|age| age < ttl);
            if fresh {
                return Ok(MirroredManifest::fresh(stored.clone()));
            }
        }
        let upstream = &name.mirror.upstream;
        let current = match &stored {
            Some(_) => upstream.manifest_digest(&name.upstream, tag.as_str()).await,
            None => Ok(None),
        };
        let outcome = match (current, stored) {
            (Ok(Some(digest)), Some(stored)) if digest == stored.digest => {
                self.meta
                    .confirm_mirrored_tag(&name.local, tag, &digest)
                    .await?;
                return Ok(MirroredManifest::fresh(stored));
            }
            (Ok(_), stored) => (
                self.fetch_manifest(name, &Reference::Tag(tag.clone()), None, origin)
                    .await,
                stored,
            ),
            (Err(e), stored) => (Err(Fetch::Upstream(e)), stored),
        };
        match outcome {
            (Ok(fetched), _) => Ok(MirroredManifest::fresh(fetched)),
            (Err(e), Some(stored)) if stale_allowed(&e) => {
                self.metrics.record_mirror("manifest", "stale");
                let reason = e.to_string();
                tracing::warn!(
                    event = "mirror_stale",
                    repository = %name.local,
                    tag = %tag,
                    digest = %stored.digest,
                    error = %reason,
                    "upstream unavailable: serving the stored manifest"
                );
                Ok(MirroredManifest {
                    manifest: stored,
                    stale: Some(reason),
                })
            }
            (Err(e), _) => {
                self.metrics.record_mirror("manifest", "failed");
                Err(map(e))
            }
        }
    }

    /// GETs the manifest from the upstream, checks it is the one asked for, parses it and
    /// stores it (a tag pointed at it).
    async fn fetch_manifest(
        &self,
        name: &Mirrored,
        reference: &Reference,
        expected: Option<&Digest>,
        origin: &Origin,
    ) -> Result<StoredManifest, Fetch> {
        let upstream = &name.mirror.upstream;
        let fetched = upstream
            .manifest(&name.upstream, &reference.to_string())
            .await?;
        // By digest, the bytes must hash to it; by tag, to the digest the upstream names.
        let digest = match expected.or(fetched.digest.as_ref()) {
            Some(expected) => {
                let actual = Digest::of(expected.algorithm(), &fetched.content);
                if actual != *expected {
                    return Err(Fetch::Upstream(UpstreamError::Invalid(format!(
                        "manifest {expected} hashes to {actual}"
                    ))));
                }
                actual
            }
            None => Digest::sha256_of(&fetched.content),
        };
        let parsed =
            manifest::parse(&fetched.content, fetched.content_type.as_deref()).map_err(|e| {
                Fetch::Upstream(UpstreamError::Invalid(format!(
                    "manifest {digest} cannot be served: {e}"
                )))
            })?;
        let tag = match reference {
            Reference::Tag(tag) => Some(tag),
            Reference::Digest(_) => None,
        };
        let new = NewManifest {
            digest: digest.clone(),
            media_type: parsed.media_type.clone(),
            content: fetched.content.clone(),
            json: parsed.json,
            artifact_type: parsed.artifact_type,
            subject: parsed.subject.as_ref().map(|s| s.digest.clone()),
            references: parsed.references,
        };
        let url = upstream.repository_url(&name.upstream);
        let target = Target {
            media_type: Some(&new.media_type),
            size: Some(new.content.len() as u64),
            tag: tag.map(Tag::as_str),
            ..Target::manifest(&name.local, &digest)
        };
        let notices = self.notifier.notices(Action::Mirror, &target, origin);
        self.meta
            .put_mirrored_manifest(&name.local, &url, new.clone(), tag, &notices)
            .await
            .map_err(|e| Fetch::Local(e.into()))?;
        self.woken(&notices);
        self.metrics.record_mirror("manifest", "fetched");
        tracing::info!(
            event = "mirror_manifest_fetched",
            repository = %name.local,
            upstream = %url,
            reference = %reference,
            digest = %digest,
            size = new.content.len(),
        );
        Ok(StoredManifest {
            digest,
            media_type: new.media_type,
            content: new.content,
            subject: new.subject,
        })
    }
}

/// Why a fetch failed: the upstream, or this registry's own stores.
#[derive(Debug, thiserror::Error)]
enum Fetch {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Local(RegistryError),
}

/// Whether a stored copy may stand in: when the upstream could not answer, not when it
/// answered that the tag is gone or refused us (it decides what exists).
fn stale_allowed(e: &Fetch) -> bool {
    matches!(
        e,
        Fetch::Upstream(UpstreamError::Unavailable { .. } | UpstreamError::Invalid(_))
    )
}

fn map(e: Fetch) -> RegistryError {
    match e {
        Fetch::Upstream(e) => upstream_error(e, RegistryError::ManifestUnknown),
        Fetch::Local(e) => e,
    }
}

impl From<Fetch> for RegistryError {
    fn from(e: Fetch) -> Self {
        map(e)
    }
}
