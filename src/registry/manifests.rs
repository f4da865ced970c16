//! Manifests, tags, catalog and referrers.

use bytes::Bytes;

use super::notify::{Action, Origin, Target};
use super::{Registry, RegistryError, Result};
use crate::meta::{MetaError, NewManifest, Page, ProtectedTags, StoredManifest};
use crate::oci::{manifest, Descriptor, Digest, Reference, RepoName};

/// A manifest push as it arrives: exact bytes and the declared Content-Type.
pub struct ManifestPush {
    pub content: Bytes,
    pub content_type: Option<String>,
}

#[derive(Debug, Clone)]
pub struct PushedManifest {
    pub digest: Digest,
    pub subject: Option<Digest>,
}

impl Registry {
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        push: ManifestPush,
        origin: &Origin,
    ) -> Result<PushedManifest> {
        if push.content.len() > self.settings.max_manifest_size {
            return Err(RegistryError::TooLarge(format!(
                "manifest exceeds the limit of {} bytes",
                self.settings.max_manifest_size
            )));
        }
        let parsed = manifest::parse(&push.content, push.content_type.as_deref())
            .map_err(|e| RegistryError::ManifestInvalid(e.to_string()))?;
        let (digest, tag) = match reference {
            Reference::Digest(claimed) => {
                let actual = Digest::of(claimed.algorithm(), &push.content);
                if actual != *claimed {
                    return Err(RegistryError::DigestInvalid(format!(
                        "manifest hashes to {actual}, not {claimed}"
                    )));
                }
                (actual, None)
            }
            Reference::Tag(tag) => (Digest::sha256_of(&push.content), Some(tag)),
        };
        let subject = parsed.subject.as_ref().map(|s| s.digest.clone());
        let target = Target {
            media_type: Some(&parsed.media_type),
            size: Some(push.content.len() as u64),
            tag: tag.map(|t| t.as_str()),
            ..Target::manifest(repo, &digest)
        };
        let notices = self.notifier.notices(Action::Push, &target, origin);
        let new = NewManifest {
            digest: digest.clone(),
            media_type: parsed.media_type,
            content: push.content,
            json: parsed.json,
            artifact_type: parsed.artifact_type,
            subject: subject.clone(),
            references: parsed.references,
        };
        let protected = self.settings.rules.protected_tags(repo.as_str());
        self.meta
            .put_manifest_with(repo, new, tag, &protected, &notices)
            .await
            .map_err(|e| self.immutable(repo, e, "moved"))?;
        self.woken(&notices);
        Ok(PushedManifest { digest, subject })
    }

    pub async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<StoredManifest> {
        self.meta
            .manifest(repo, reference)
            .await?
            .ok_or(RegistryError::ManifestUnknown)
    }

    /// Records the pull of a manifest (by `reference`) for the endpoints that want pulls;
    /// see [`Registry::note_blob_pull`].
    pub async fn note_manifest_pull(
        &self,
        repo: &RepoName,
        reference: &Reference,
        manifest: &StoredManifest,
        origin: impl FnOnce() -> Origin,
    ) {
        if !self.notifier.wants(Action::Pull, repo) {
            return;
        }
        let target = Target {
            media_type: Some(&manifest.media_type),
            size: Some(manifest.content.len() as u64),
            tag: match reference {
                Reference::Tag(tag) => Some(tag.as_str()),
                Reference::Digest(_) => None,
            },
            ..Target::manifest(repo, &manifest.digest)
        };
        let notices = self.notifier.notices(Action::Pull, &target, &origin());
        self.record_pull(&notices).await;
    }

    /// By digest: deletes the manifest and its tags. By tag: deletes only the tag. Refused
    /// when that removes an immutable tag, unless `override_immutable` (an admin's).
    pub async fn delete_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        override_immutable: bool,
        origin: &Origin,
    ) -> Result<()> {
        self.ensure_deletes_enabled()?;
        let protected = if override_immutable {
            ProtectedTags::none()
        } else {
            self.settings.rules.protected_tags(repo.as_str())
        };
        let (deleted, notices) = match reference {
            Reference::Digest(digest) => {
                let target = Target::manifest(repo, digest);
                let notices = self.notifier.notices(Action::Delete, &target, origin);
                let deleted = self
                    .meta
                    .delete_manifest_with(repo, digest, &protected, &notices)
                    .await;
                (deleted, notices)
            }
            Reference::Tag(tag) => {
                let target = Target::tag(repo, tag.as_str());
                let notices = self.notifier.notices(Action::Delete, &target, origin);
                let deleted = self
                    .meta
                    .delete_tag_with(repo, tag, &protected, &notices)
                    .await;
                (deleted, notices)
            }
        };
        let deleted = deleted.map_err(|e| self.immutable(repo, e, "deleted"))?;
        if deleted {
            self.woken(&notices);
            Ok(())
        } else {
            Err(RegistryError::ManifestUnknown)
        }
    }

    /// A store's `TagImmutable` as the client should read it: which tag, which rule, and
    /// what to do instead.
    pub(super) fn immutable(&self, repo: &RepoName, e: MetaError, verb: &str) -> RegistryError {
        let MetaError::TagImmutable(tag) = e else {
            return e.into();
        };
        let rule = self
            .settings
            .rules
            .immutable_rule(repo.as_str(), &tag)
            .map(|r| format!(" by the rule {r}"))
            .unwrap_or_default();
        let advice = if verb == "moved" {
            "push under a new tag instead"
        } else {
            "an admin may delete it with ?override_immutable=true"
        };
        RegistryError::TagImmutable(format!(
            "tag {tag} of {repo} is immutable{rule} and cannot be {verb}: {advice}"
        ))
    }

    pub async fn tags(&self, repo: &RepoName, page: &Page) -> Result<Vec<String>> {
        self.meta
            .tags(repo, page)
            .await?
            .ok_or(RegistryError::NameUnknown)
    }

    pub async fn catalog(&self, page: &Page) -> Result<Vec<String>> {
        Ok(self.meta.catalog(page).await?)
    }

    pub async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Descriptor>> {
        Ok(self.meta.referrers(repo, subject, artifact_type).await?)
    }
}
