//! What a person browsing the registry wants to see of an image: its manifest and, for
//! every descriptor in it (and in each child of an index), the digest, media type, size and
//! the CID its bytes have in IPFS.

use std::collections::HashSet;

use cid::Cid;

use super::{Page, RepoFilter, RepositorySummary, TagSummary};
use super::{Registry, RegistryError, Result};
use crate::oci::manifest;
use crate::oci::media::ManifestKind;
use crate::oci::{media, Descriptor, Digest, Reference, RepoName};

/// How deep index children are followed (an index of indexes is legal, a cycle is not
/// possible by digest, but the depth is still bounded).
const MAX_DEPTH: usize = 2;

/// What one answer shows at most, so that no manifest tree — an index listing the same child
/// thousands of times, children carrying megabytes of annotations — makes a request expensive
/// for whoever may pull: manifests listed (expanded or not), and blob descriptors.
const MAX_MANIFESTS: usize = 256;
const MAX_LAYERS: usize = 1024;
/// Annotations of a descriptor, and the platform of a child, above this many bytes of JSON
/// are left out of the view (and said to be).
const MAX_DETAIL_BYTES: usize = 16 * 1024;

/// The per-answer allowance, and the manifests already expanded in it.
struct Budget {
    manifests: usize,
    layers: usize,
    expanded: HashSet<Digest>,
}

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
    /// The descriptor's annotations were over [`MAX_DETAIL_BYTES`] and are left out.
    pub annotations_omitted: bool,
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
    /// Children and descriptors not listed: past what one answer shows.
    pub more_manifests: usize,
    pub more_layers: usize,
    /// Expanded earlier in the same answer (an index may list a child more than once): its
    /// layers and children are not listed again.
    pub repeated: bool,
}

impl Registry {
    /// A page of the repositories `filter` allows whose names contain `search`, with what a
    /// listing shows of each.
    pub async fn repository_summaries(
        &self,
        page: &Page,
        filter: &RepoFilter,
        search: &str,
    ) -> Result<Vec<RepositorySummary>> {
        Ok(self.meta.repository_summaries(page, filter, search).await?)
    }

    /// A page of `repo`'s tags with the digest, media type, size and push time of each.
    pub async fn tag_summaries(&self, repo: &RepoName, page: &Page) -> Result<Vec<TagSummary>> {
        self.meta
            .tag_summaries(repo, page)
            .await?
            .ok_or(RegistryError::NameUnknown)
    }

    /// The platforms an index lists (`os/architecture[/variant]`), in its order; empty for
    /// an image or an index without platforms.
    pub async fn platforms(&self, repo: &RepoName, digest: &Digest) -> Result<Vec<String>> {
        let stored = self
            .get_manifest(repo, &Reference::Digest(digest.clone()))
            .await?;
        let parsed = manifest::parse(&stored.content, Some(&stored.media_type))
            .map_err(|e| RegistryError::Internal(format!("stored manifest: {e}")))?;
        Ok(parsed
            .manifests
            .iter()
            .filter_map(|child| child.platform.as_ref().map(platform_name))
            .collect())
    }

    /// The summary of the image configuration `digest` in `repo`; `None` when it is over
    /// [`MAX_CONFIG_BYTES`] or not JSON (an artifact's config may be anything).
    pub async fn config_summary(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<ConfigSummary>> {
        use futures::StreamExt as _;
        let record = self.stat_blob(repo, digest).await?;
        if record.size > MAX_CONFIG_BYTES {
            return Ok(None);
        }
        let mut body = self.blob_content(record, None).await?.body;
        let mut bytes = Vec::new();
        while let Some(chunk) = body.next().await {
            let chunk =
                chunk.map_err(|e| RegistryError::Unavailable(format!("reading {digest}: {e}")))?;
            // The store may hold other bytes than the record says (the scrub finds those).
            if (bytes.len() + chunk.len()) as u64 > MAX_CONFIG_BYTES {
                return Ok(None);
            }
            bytes.extend_from_slice(&chunk);
        }
        if Digest::of(digest.algorithm(), &bytes) != *digest {
            return Ok(None);
        }
        Ok(serde_json::from_slice(&bytes)
            .ok()
            .map(|config| ConfigSummary::from_json(&config)))
    }

    /// The manifest `reference` in `repo`, with the CID of every blob it uses.
    pub async fn browse_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<ManifestView> {
        let mut budget = Budget {
            manifests: MAX_MANIFESTS - 1,
            layers: MAX_LAYERS,
            expanded: HashSet::new(),
        };
        self.view(repo, reference, None, 0, &mut budget).await
    }

    fn view<'a>(
        &'a self,
        repo: &'a RepoName,
        reference: &'a Reference,
        platform: Option<serde_json::Value>,
        depth: usize,
        budget: &'a mut Budget,
    ) -> futures::future::BoxFuture<'a, Result<ManifestView>> {
        Box::pin(async move {
            let stored = self.get_manifest(repo, reference).await?;
            let repeated = !budget.expanded.insert(stored.digest.clone());
            let mut view = ManifestView {
                digest: stored.digest,
                media_type: stored.media_type.clone(),
                size: stored.content.len() as u64,
                artifact_type: None,
                platform: platform.filter(|p| json_size(p) <= MAX_DETAIL_BYTES),
                layers: Vec::new(),
                manifests: Vec::new(),
                more_manifests: 0,
                more_layers: 0,
                repeated,
            };
            if repeated {
                return Ok(view);
            }
            let parsed = manifest::parse(&stored.content, Some(&stored.media_type))
                .map_err(|e| RegistryError::Internal(format!("stored manifest: {e}")))?;
            // The manifest's bytes are parsed; only the bounded view is kept.
            drop(stored.content);
            view.artifact_type = parsed.artifact_type;
            match parsed.kind {
                ManifestKind::Image => {
                    let described = parsed
                        .config
                        .into_iter()
                        .map(|d| (Role::Config, d))
                        .chain(parsed.layers.into_iter().map(|d| (Role::Layer, d)));
                    for (role, mut descriptor) in described {
                        if budget.layers == 0 {
                            view.more_layers += 1;
                            continue;
                        }
                        budget.layers -= 1;
                        let cid = if media::is_non_distributable(&descriptor.media_type) {
                            None
                        } else {
                            self.meta
                                .repository_blob(repo, &descriptor.digest)
                                .await?
                                .map(|record| record.cid)
                        };
                        let annotations_omitted =
                            descriptor.annotations.as_ref().is_some_and(|a| {
                                a.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
                                    > MAX_DETAIL_BYTES
                            });
                        if annotations_omitted {
                            descriptor.annotations = None;
                        }
                        // Not shown, and possibly large.
                        descriptor.data = None;
                        descriptor.urls = None;
                        view.layers.push(LayerView {
                            role,
                            descriptor,
                            cid,
                            annotations_omitted,
                        });
                    }
                }
                ManifestKind::Index if depth < MAX_DEPTH => {
                    // An index's own children are counted before any grandchild, so a
                    // large child cannot crowd its siblings out of the answer.
                    let listed = parsed.manifests.len().min(budget.manifests);
                    budget.manifests -= listed;
                    view.more_manifests = parsed.manifests.len() - listed;
                    for child in parsed.manifests.into_iter().take(listed) {
                        let reference = Reference::Digest(child.digest);
                        match self
                            .view(repo, &reference, child.platform, depth + 1, budget)
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

/// What a person wants to know of an image's configuration (OCI image config, or
/// Docker's, which has the same fields).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigSummary {
    /// `os/architecture[/variant]`.
    pub platform: String,
    pub created: Option<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub exposed_ports: Vec<String>,
    pub labels: Vec<(String, String)>,
    /// Each history entry's command, and whether it made a layer.
    pub history: Vec<(String, bool)>,
}

impl ConfigSummary {
    /// Reads what it can: fields missing or of another type are left empty.
    pub fn from_json(config: &serde_json::Value) -> ConfigSummary {
        let run = &config["config"];
        let strings = |value: &serde_json::Value| -> Vec<String> {
            value
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        let keys = |value: &serde_json::Value| -> Vec<String> {
            value
                .as_object()
                .map(|o| o.keys().cloned().collect())
                .unwrap_or_default()
        };
        ConfigSummary {
            platform: platform_name(config),
            created: config["created"].as_str().map(str::to_owned),
            entrypoint: strings(&run["Entrypoint"]),
            cmd: strings(&run["Cmd"]),
            exposed_ports: keys(&run["ExposedPorts"]),
            labels: run["Labels"]
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                        .collect()
                })
                .unwrap_or_default(),
            history: config["history"]
                .as_array()
                .map(|entries| {
                    entries
                        .iter()
                        .map(|h| {
                            (
                                h["created_by"].as_str().unwrap_or_default().to_owned(),
                                !h["empty_layer"].as_bool().unwrap_or(false),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// Image configurations above this many bytes are not read for the image page.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// `os/architecture[/variant]` of an OCI platform object.
pub fn platform_name(platform: &serde_json::Value) -> String {
    let field = |key: &str| platform.get(key).and_then(|v| v.as_str()).unwrap_or("");
    let mut name = format!("{}/{}", field("os"), field("architecture"));
    if !field("variant").is_empty() {
        name = format!("{name}/{}", field("variant"));
    }
    name
}

/// Bytes of `value` as JSON (0 if it cannot be serialised, which a parsed value always can).
fn json_size(value: &serde_json::Value) -> usize {
    serde_json::to_vec(value).map_or(0, |bytes| bytes.len())
}
