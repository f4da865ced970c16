//! What a person browsing the registry wants to see of an image: its manifest and, for
//! every descriptor in it (and in each child of an index), the digest, media type, size and
//! the CID its bytes have in IPFS.

use cid::Cid;

use super::{Registry, RegistryError, Result};
use crate::oci::manifest;
use crate::oci::media::ManifestKind;
use crate::oci::{media, Descriptor, Digest, Reference, RepoName};

/// How deep index children are followed (an index of indexes is legal, a cycle is not
/// possible by digest, but the depth is still bounded).
const MAX_DEPTH: usize = 2;

/// The role a descriptor plays in its manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Config,
    Layer,
}

#[derive(Debug, Clone)]
pub struct LayerView {
    pub role: Role,
    pub descriptor: Descriptor,
    /// Where the bytes are in IPFS; `None` for a layer the registry does not hold
    /// (non-distributable layers live elsewhere).
    pub cid: Option<Cid>,
}

#[derive(Debug, Clone)]
pub struct ManifestView {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub artifact_type: Option<String>,
    /// The platform an index gives this manifest, for a child.
    pub platform: Option<serde_json::Value>,
    pub layers: Vec<LayerView>,
    /// An index's children (those present in the repository).
    pub manifests: Vec<ManifestView>,
}

impl Registry {
    /// The manifest `reference` in `repo`, with the CID of every blob it uses.
    pub async fn browse_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<ManifestView> {
        self.view(repo, reference, None, 0).await
    }

    fn view<'a>(
        &'a self,
        repo: &'a RepoName,
        reference: &'a Reference,
        platform: Option<serde_json::Value>,
        depth: usize,
    ) -> futures::future::BoxFuture<'a, Result<ManifestView>> {
        Box::pin(async move {
            let stored = self.get_manifest(repo, reference).await?;
            let parsed = manifest::parse(&stored.content, Some(&stored.media_type))
                .map_err(|e| RegistryError::Internal(format!("stored manifest: {e}")))?;
            let mut view = ManifestView {
                digest: stored.digest,
                media_type: stored.media_type,
                size: stored.content.len() as u64,
                artifact_type: parsed.artifact_type,
                platform,
                layers: Vec::new(),
                manifests: Vec::new(),
            };
            match parsed.kind {
                ManifestKind::Image => {
                    let described = parsed
                        .config
                        .into_iter()
                        .map(|d| (Role::Config, d))
                        .chain(parsed.layers.into_iter().map(|d| (Role::Layer, d)));
                    for (role, descriptor) in described {
                        let cid = if media::is_non_distributable(&descriptor.media_type) {
                            None
                        } else {
                            self.meta
                                .repository_blob(repo, &descriptor.digest)
                                .await?
                                .map(|record| record.cid)
                        };
                        view.layers.push(LayerView {
                            role,
                            descriptor,
                            cid,
                        });
                    }
                }
                ManifestKind::Index if depth < MAX_DEPTH => {
                    for child in parsed.manifests {
                        let reference = Reference::Digest(child.digest.clone());
                        match self
                            .view(repo, &reference, child.platform.clone(), depth + 1)
                            .await
                        {
                            Ok(child) => view.manifests.push(child),
                            // A child deleted after the index was pushed: show the rest.
                            Err(RegistryError::ManifestUnknown) => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
                ManifestKind::Index => {}
            }
            Ok(view)
        })
    }
}
