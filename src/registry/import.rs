//! Importing an image by the CID of its OCI Image Layout (docs/federation.md): read the
//! layout from a source that is not trusted ([`crate::blobs::remote`]), verify everything
//! against CIDs and digests, store the blobs, then put the manifests children first and
//! the tag last, so that a failure at any point leaves no tag and no manifest whose
//! references are missing. What an earlier (or interrupted) import stored is skipped.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use cid::Cid;
use futures::{StreamExt, TryStreamExt};
use serde::Deserialize;

use super::hashing::{Hasher, Rebuild};
use super::notify::Origin;
use super::{ManifestPush, Registry, RegistryError, Result};
use crate::blobs::kubo::{DAG_PB_CODEC, SHA2_256};
use crate::blobs::layout::{is_layout_root, REF_NAME};
use crate::blobs::remote::{read_small, DagSource, Gateways, NodeSource};
use crate::blobs::unixfs::{as_v1, directory_links};
use crate::blobs::BlobError;
use crate::meta::BlobRecord;
use crate::oci::{manifest, Digest, Reference, ReferenceKind, RepoName, Tag};

/// Manifests one import reads at most (an index and its children).
const MAX_MANIFESTS: usize = 1000;

/// Blobs fetched at once.
const PARALLEL_FETCHES: usize = 3;

/// The largest `oci-layout` file read.
const MAX_OCI_LAYOUT: usize = 4096;

/// Where imports read layouts from (the configuration decides, see
/// [`crate::server::import_source`]).
#[derive(Clone)]
pub enum ImportSource {
    /// The IPFS node the blobs are stored in, which fetches from the IPFS network.
    Node,
    /// Trustless HTTP gateways (`federation.gateways`).
    Gateways(Gateways),
    /// Neither: the embedded store with no gateway configured.
    Unconfigured,
}

/// What an import did.
#[derive(Debug, Clone)]
pub struct Imported {
    pub root: Cid,
    pub tag: Tag,
    pub digest: Digest,
    pub media_type: String,
    /// Manifests of the image (the tagged one and an index's children), and of them those
    /// already in the repository.
    pub manifests: usize,
    pub manifests_present: usize,
    /// Distinct blobs (configs, layers) of the manifests this import puts (a manifest
    /// already in the repository brings its blobs with it), those of them already in the
    /// repository, and the bytes of those stored by this import.
    pub blobs: usize,
    pub blobs_present: usize,
    pub bytes_fetched: u64,
    /// The tag already pointed at this manifest: nothing changed.
    pub unchanged: bool,
}

/// One step of an import, for a progress display.
#[derive(Debug, Clone)]
pub enum ImportProgress {
    /// The layout is read and verified: this many blobs are to be fetched (of `total`).
    Planned {
        fetch: usize,
        total: usize,
        bytes: u64,
    },
    /// A blob is stored (`done` of the planned fetches).
    Fetched {
        digest: Digest,
        size: u64,
        done: usize,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OciLayout {
    image_layout_version: String,
}

#[derive(Deserialize)]
struct LayoutIndex {
    manifests: Vec<IndexEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexEntry {
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// A manifest of the image: its descriptor's media type, and its bytes when this import
/// puts it (`None` when the repository has it already).
struct Manifest {
    digest: Digest,
    media_type: String,
    content: Bytes,
    present: bool,
}

fn invalid(message: impl Into<String>) -> RegistryError {
    RegistryError::LayoutInvalid(message.into())
}

/// A blob's bytes that are not what the layout says they are: the layout's fault.
fn refusal(what: &str, e: RegistryError) -> RegistryError {
    match e {
        RegistryError::DigestInvalid(m)
        | RegistryError::SizeInvalid(m)
        | RegistryError::BlobUploadInvalid(m) => invalid(format!("{what}: {m}")),
        RegistryError::TooLarge(m) => RegistryError::TooLarge(format!("{what}: {m}")),
        e => e,
    }
}

/// A source's failure: what it sent or lacks is the layout's fault (400), a source that
/// cannot be reached is not (503).
fn source_error(what: &str, e: BlobError) -> RegistryError {
    match e {
        BlobError::Unavailable(m) => {
            RegistryError::Unavailable(format!("import source: {what}: {m}"))
        }
        BlobError::NotFound(cid) => invalid(format!(
            "{what}: block {cid} could not be found at the source"
        )),
        e => invalid(format!("{what}: {e}")),
    }
}

impl Registry {
    /// Imports the image whose layout is `root` into `repo`, tagged `tag` (default: the
    /// layout's `org.opencontainers.image.ref.name`).
    pub async fn import_image(
        &self,
        source: &ImportSource,
        root: &Cid,
        repo: &RepoName,
        tag: Option<Tag>,
        origin: &Origin,
        progress: &(dyn Fn(ImportProgress) + Send + Sync),
    ) -> Result<Imported> {
        let started = std::time::Instant::now();
        if root.codec() != DAG_PB_CODEC || root.hash().code() != SHA2_256 {
            return Err(invalid(format!(
                "{root} is not an image layout: a layout's root is a dag-pb directory under sha2-256"
            )));
        }
        let root = as_v1(root);
        let (source, through_node): (Arc<dyn DagSource>, bool) = match source {
            ImportSource::Gateways(gateways) => (Arc::new(gateways.clone()), false),
            ImportSource::Node => (Arc::new(NodeSource::new(self.blobs.clone())), true),
            ImportSource::Unconfigured => {
                return Err(RegistryError::Unsupported(
                    "imports need a source: an IPFS node (ipfs.url) or trustless gateways \
                     (federation.gateways)"
                        .into(),
                ))
            }
        };
        let importer = Importer {
            registry: self,
            source,
            through_node,
            repo,
            origin,
            progress,
        };
        let imported = importer.import(&root, tag).await;
        let imported = match imported {
            Ok(imported) => imported,
            Err(e) => {
                let refused = matches!(
                    e,
                    RegistryError::LayoutInvalid(_)
                        | RegistryError::ManifestInvalid(_)
                        | RegistryError::ManifestBlobUnknown(_)
                        | RegistryError::TagImmutable(_)
                        | RegistryError::TooLarge(_)
                );
                let outcome = if refused { "refused" } else { "failed" };
                self.metrics.record_image_imported(outcome);
                tracing::warn!(
                    event = "image_import_failed",
                    repository = %repo,
                    ipfs_cid = %root,
                    outcome,
                    error = %e,
                );
                return Err(e);
            }
        };
        self.metrics.record_image_imported(if imported.unchanged {
            "unchanged"
        } else {
            "imported"
        });
        tracing::info!(
            event = "image_import",
            repository = %repo,
            tag = %imported.tag,
            digest = %imported.digest,
            ipfs_cid = %root,
            blobs = imported.blobs,
            blobs_present = imported.blobs_present,
            bytes = imported.bytes_fetched,
            unchanged = imported.unchanged,
            duration_ms = started.elapsed().as_millis() as u64,
        );
        Ok(imported)
    }

    /// Kubo mode, a file of the layout the node holds (under the layout's pin): records the
    /// file's own DAG as the blob instead of adding the bytes again, once they are read
    /// back and match `digest` and `size`, and the DAG is the one this registry's import
    /// profile gives those bytes (the CID an `add` here would answer). So an import reads
    /// each blob once and the node imports nothing a second time. False, having stored
    /// nothing, when the DAG was built otherwise (another chunk size: the caller adds the
    /// bytes, which gives the profile's CID) or the digest is known here already (the
    /// push path links it, or heals a quarantined blob).
    async fn adopt_in_place(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        cid: &Cid,
    ) -> Result<bool> {
        if !matches!(self.known_blob(digest).await?, (None, false)) {
            return Ok(false);
        }
        let profile = self.blobs.profile().clone();
        let mut bytes = self
            .blobs
            .cat(cid, 0, None)
            .await
            .map_err(|e| source_error(&format!("blob {digest}"), e))?;
        let mut rebuild = Rebuild::new(Hasher::new(digest.algorithm()), Some(&profile));
        let mut read = 0u64;
        while let Some(piece) = bytes.next().await {
            let piece = piece.map_err(|e| {
                RegistryError::Unavailable(format!("reading {cid} from the IPFS node: {e}"))
            })?;
            read += piece.len() as u64;
            if read > size {
                return Err(RegistryError::SizeInvalid(format!(
                    "the layout's file holds more than {size} bytes"
                )));
            }
            rebuild.push(piece).await?;
        }
        let (actual, dag) = rebuild.finish_with_dag().await?;
        if read < size {
            return Err(RegistryError::SizeInvalid(format!(
                "the layout's file holds {read} bytes, not {size}"
            )));
        }
        if actual != *digest {
            return Err(RegistryError::DigestInvalid(format!(
                "the layout's file hashes to {actual}"
            )));
        }
        if as_v1(&dag.root) != as_v1(cid) {
            return Ok(false);
        }
        // A recursive pin of its own, as an add would leave: the layout's pin goes when the
        // import ends.
        self.blobs.pin(&dag.root).await?;
        self.metrics.blob_bytes_in.inc_by(size);
        let record = BlobRecord {
            digest: digest.clone(),
            cid: dag.root,
            size,
            import_profile: profile.id(),
        };
        let committed = self.meta.commit_blob_with_notices(repo, record, &[]).await;
        self.settle(dag.root, committed).await?;
        Ok(true)
    }

    /// Kubo mode: pins the layout's root, so that the node fetches every block from the
    /// network at once, and then reads locally. True when this import pinned it (and
    /// releases it when done); false when it was pinned already.
    async fn fetch_into_node(&self, root: &Cid) -> Result<bool> {
        if self.blobs.is_pinned(root).await? {
            return Ok(false);
        }
        self.blobs
            .pin(root)
            .await
            .map_err(|e| source_error(&format!("fetching {root} through the IPFS node"), e))?;
        Ok(true)
    }
}

/// The manifest `index.json` names: digest, media type, size.
type Top = (Digest, String, u64);

/// One import's steps, on one source into one repository.
struct Importer<'a> {
    registry: &'a Registry,
    source: Arc<dyn DagSource>,
    /// Kubo mode: the node fetches the layout's whole DAG (by pinning its root) before
    /// its files are read.
    through_node: bool,
    repo: &'a RepoName,
    origin: &'a Origin,
    progress: &'a (dyn Fn(ImportProgress) + Send + Sync),
}

impl Importer<'_> {
    async fn import(&self, root: &Cid, tag: Option<Tag>) -> Result<Imported> {
        let (top, tag, files) = self.read_layout(root, tag).await?;
        let (manifests, blobs) = self.read_manifests(&top, &files).await?;
        let fetch = self.missing_blobs(&blobs, &files).await?;
        // Only now, with the layout checked and every blob within the limits, is the whole
        // DAG fetched.
        let pinned = match self.through_node && !fetch.is_empty() {
            true => self.registry.fetch_into_node(root).await?,
            false => false,
        };
        let stored = match self.store_blobs(&fetch, blobs.len()).await {
            Ok(bytes) => self
                .put_manifests(&manifests, &top.0, &tag)
                .await
                .map(|unchanged| (bytes, unchanged)),
            Err(e) => Err(e),
        };
        if pinned {
            // The layout's own blocks (its directories, index.json) were only needed for
            // reading; publishing the imported tag pins the same root again when it is the
            // same layout.
            self.registry.release(root).await;
        }
        let (bytes_fetched, unchanged) = stored?;
        let fetched = fetch.len();
        Ok(Imported {
            root: *root,
            tag,
            digest: top.0,
            media_type: top.1,
            manifests: manifests.len(),
            manifests_present: manifests.iter().filter(|m| m.present).count(),
            blobs: blobs.len(),
            blobs_present: blobs.len() - fetched,
            bytes_fetched,
            unchanged,
        })
    }

    /// Checks the root, `oci-layout` and `index.json`; returns the manifest to import, its
    /// tag, and every file of `blobs/` by digest.
    async fn read_layout(
        &self,
        root: &Cid,
        tag: Option<Tag>,
    ) -> Result<(Top, Tag, HashMap<Digest, Cid>)> {
        let source = self.source.as_ref();
        let root_block = source
            .block(root)
            .await
            .map_err(|e| source_error("the layout's root", e))?;
        if !is_layout_root(&root_block) {
            return Err(invalid(format!(
                "{root} is not an OCI image layout: its root must be a directory of exactly \
                 blobs, index.json and oci-layout"
            )));
        }
        let entries: HashMap<String, Cid> = directory_links(&root_block)
            .unwrap_or_default()
            .into_iter()
            .collect();
        let entry = |name: &str| {
            entries
                .get(name)
                .copied()
                .ok_or_else(|| invalid(format!("the layout has no {name}")))
        };
        let oci_layout = read_small(source, &entry("oci-layout")?, MAX_OCI_LAYOUT)
            .await
            .map_err(|e| source_error("oci-layout", e))?;
        match serde_json::from_slice::<OciLayout>(&oci_layout) {
            Ok(layout) if layout.image_layout_version == "1.0.0" => {}
            Ok(layout) => {
                return Err(invalid(format!(
                    "oci-layout: imageLayoutVersion {:?} is not 1.0.0",
                    layout.image_layout_version
                )))
            }
            Err(e) => return Err(invalid(format!("oci-layout: {e}"))),
        }
        let max_manifest = self.registry.settings.max_manifest_size;
        let index = read_small(source, &entry("index.json")?, max_manifest)
            .await
            .map_err(|e| source_error("index.json", e))?;
        let index: LayoutIndex =
            serde_json::from_slice(&index).map_err(|e| invalid(format!("index.json: {e}")))?;
        let (top, tag) = choose(&index, tag)?;
        let files = self.blob_files(&entry("blobs")?).await?;
        Ok((top, tag, files))
    }

    /// Every file of `blobs/<algorithm>/` by the digest it is named by.
    async fn blob_files(&self, blobs: &Cid) -> Result<HashMap<Digest, Cid>> {
        let directory = |block: &[u8], what: &str| {
            directory_links(block).ok_or_else(|| {
                invalid(format!(
                    "{what} is not a plain UnixFS directory (sharded directories are not read)"
                ))
            })
        };
        let block = self
            .source
            .block(blobs)
            .await
            .map_err(|e| source_error("blobs/", e))?;
        let mut files = HashMap::new();
        for (algorithm, cid) in directory(&block, "blobs/")? {
            let what = format!("blobs/{algorithm}/");
            let block = self
                .source
                .block(&cid)
                .await
                .map_err(|e| source_error(&what, e))?;
            for (hex, file) in directory(&block, &what)? {
                // Files of unknown algorithms, or misnamed, are never referenced.
                if let Ok(digest) = format!("{algorithm}:{hex}").parse::<Digest>() {
                    files.insert(digest, file);
                }
            }
        }
        Ok(files)
    }

    /// The manifests from `top` down, parents before children, each checked against its
    /// descriptor and parsed as a push would be; and the blobs (with their sizes) those not
    /// yet in the repository reference.
    async fn read_manifests(
        &self,
        top: &Top,
        files: &HashMap<Digest, Cid>,
    ) -> Result<(Vec<Manifest>, BTreeMap<Digest, u64>)> {
        let max_manifest = self.registry.settings.max_manifest_size;
        let mut manifests: Vec<Manifest> = Vec::new();
        let mut blobs: BTreeMap<Digest, u64> = BTreeMap::new();
        let mut pending = vec![top.clone()];
        let mut seen = BTreeSet::new();
        while let Some((digest, media_type, size)) = pending.pop() {
            if !seen.insert(digest.clone()) {
                continue;
            }
            if seen.len() > MAX_MANIFESTS {
                return Err(invalid(format!(
                    "the image has more than {MAX_MANIFESTS} manifests"
                )));
            }
            if let Some(stored) = self
                .registry
                .meta
                .manifest(self.repo, &Reference::Digest(digest.clone()))
                .await?
            {
                // In the repository already, and with it everything it references.
                manifests.push(Manifest {
                    digest,
                    media_type: stored.media_type,
                    content: stored.content,
                    present: true,
                });
                continue;
            }
            if size > max_manifest as u64 {
                return Err(invalid(format!(
                    "manifest {digest}: {size} bytes, over this registry's limit of {max_manifest}"
                )));
            }
            let cid = files
                .get(&digest)
                .ok_or_else(|| invalid(format!("manifest {digest} is not in the layout")))?;
            let content = read_small(self.source.as_ref(), cid, max_manifest)
                .await
                .map_err(|e| source_error(&format!("manifest {digest}"), e))?;
            check_bytes(&digest, size, &content)?;
            let parsed = manifest::parse(&content, Some(&media_type))
                .map_err(|e| invalid(format!("manifest {digest}: {e}")))?;
            references(&digest, &parsed, &mut pending, &mut blobs)?;
            manifests.push(Manifest {
                digest,
                media_type,
                content,
                present: false,
            });
        }
        Ok((manifests, blobs))
    }

    /// The blobs the repository lacks (digest, size, file in the layout), each within
    /// `limits.max_blob_size`.
    async fn missing_blobs(
        &self,
        blobs: &BTreeMap<Digest, u64>,
        files: &HashMap<Digest, Cid>,
    ) -> Result<Vec<(Digest, u64, Cid)>> {
        let mut fetch = Vec::new();
        for (digest, size) in blobs {
            if self
                .registry
                .meta
                .repository_blob(self.repo, digest)
                .await?
                .is_some()
            {
                continue;
            }
            let cid = files.get(digest).ok_or_else(|| {
                invalid(format!(
                    "blob {digest} is neither in the layout nor in repository {}",
                    self.repo
                ))
            })?;
            if let Some(max) = self.registry.max_blob_size() {
                if *size > max {
                    return Err(RegistryError::TooLarge(format!(
                        "blob {digest}: {size} bytes, over this registry's maximum blob size of {max}"
                    )));
                }
            }
            fetch.push((digest.clone(), *size, *cid));
        }
        Ok(fetch)
    }

    /// Stores `fetch` (of `total` blobs), each read from the layout and verified against
    /// its digest and size; returns their bytes.
    async fn store_blobs(&self, fetch: &[(Digest, u64, Cid)], total: usize) -> Result<u64> {
        let bytes = fetch.iter().map(|(_, size, _)| size).sum();
        (self.progress)(ImportProgress::Planned {
            fetch: fetch.len(),
            total,
            bytes,
        });
        let done = std::sync::atomic::AtomicUsize::new(0);
        let stores: Vec<_> = fetch
            .iter()
            .map(|(digest, size, cid)| {
                let done = &done;
                async move {
                    self.store_blob(digest, *size, cid).await?;
                    let done = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    (self.progress)(ImportProgress::Fetched {
                        digest: digest.clone(),
                        size: *size,
                        done,
                    });
                    Ok::<_, RegistryError>(())
                }
            })
            .collect();
        futures::stream::iter(stores)
            .buffer_unordered(PARALLEL_FETCHES)
            .try_collect::<()>()
            .await?;
        Ok(bytes)
    }

    /// One blob, streamed from the source into the blob store as a push is: recorded and
    /// linked only once its bytes match `digest` and `size`. Through the node, a file the
    /// node holds already as this registry would store it is recorded in place instead.
    async fn store_blob(&self, digest: &Digest, size: u64, cid: &Cid) -> Result<()> {
        let what = format!("blob {digest}");
        if self.through_node
            && self
                .registry
                .adopt_in_place(self.repo, digest, size, cid)
                .await
                .map_err(|e| refusal(&what, e))?
        {
            return Ok(());
        }
        let body = self
            .source
            .file(cid)
            .await
            .map_err(|e| source_error(&what, e))?;
        self.registry
            .store_verified(self.repo, digest, body, Some(size), None)
            .await
            .map_err(|e| refusal(&what, e))?;
        Ok(())
    }

    /// Puts the manifests the repository lacks, children first, each as a push; then the
    /// tag, with `top`, last. True when the tag already pointed at `top` (nothing put).
    async fn put_manifests(&self, manifests: &[Manifest], top: &Digest, tag: &Tag) -> Result<bool> {
        let push = |m: &Manifest| ManifestPush {
            content: m.content.clone(),
            content_type: Some(m.media_type.clone()),
        };
        for m in manifests
            .iter()
            .rev()
            .filter(|m| !m.present && m.digest != *top)
        {
            let reference = Reference::Digest(m.digest.clone());
            self.registry
                .put_manifest(self.repo, &reference, push(m), self.origin)
                .await?;
        }
        let reference = Reference::Tag(tag.clone());
        let tagged = self.registry.meta.manifest(self.repo, &reference).await?;
        if tagged.is_some_and(|t| t.digest == *top) {
            return Ok(true);
        }
        let top = manifests
            .iter()
            .find(|m| m.digest == *top)
            .ok_or_else(|| RegistryError::Internal("the tagged manifest was not read".into()))?;
        self.registry
            .put_manifest(self.repo, &reference, push(top), self.origin)
            .await?;
        Ok(false)
    }
}

/// Adds what `parsed` (the manifest `digest`) references: child manifests to `pending`,
/// blobs with their sizes to `blobs`.
fn references(
    digest: &Digest,
    parsed: &manifest::ParsedManifest,
    pending: &mut Vec<Top>,
    blobs: &mut BTreeMap<Digest, u64>,
) -> Result<()> {
    let size = |reference: &Digest, size: i64| {
        u64::try_from(size).map_err(|_| {
            invalid(format!(
                "manifest {digest}: a negative size for {reference}"
            ))
        })
    };
    let children: BTreeMap<&Digest, &manifest::Descriptor> =
        parsed.manifests.iter().map(|d| (&d.digest, d)).collect();
    let sizes: BTreeMap<&Digest, i64> = parsed
        .config
        .iter()
        .chain(&parsed.layers)
        .map(|d| (&d.digest, d.size))
        .collect();
    for (reference, kind) in &parsed.references {
        match kind {
            ReferenceKind::Manifest => {
                let child = children.get(reference).ok_or_else(|| {
                    invalid(format!(
                        "manifest {digest}: child {reference} without a descriptor"
                    ))
                })?;
                let bytes = size(reference, child.size)?;
                pending.push((reference.clone(), child.media_type.clone(), bytes));
            }
            ReferenceKind::Blob => {
                let declared = sizes.get(reference).copied().ok_or_else(|| {
                    invalid(format!(
                        "manifest {digest}: no descriptor for blob {reference}"
                    ))
                })?;
                blobs.insert(reference.clone(), size(reference, declared)?);
            }
        }
    }
    Ok(())
}

/// The manifest of `index.json` to import, and the tag: the one named `tag`, or when no
/// entry is named so (or no tag is asked for), the only entry.
fn choose(index: &LayoutIndex, tag: Option<Tag>) -> Result<(Top, Tag)> {
    let named = |entry: &IndexEntry| entry.annotations.get(REF_NAME).cloned();
    let entry = match &tag {
        Some(tag) => index
            .manifests
            .iter()
            .find(|e| named(e).as_deref() == Some(tag.as_str()))
            .or(match index.manifests.as_slice() {
                [only] => Some(only),
                _ => None,
            }),
        None => match index.manifests.as_slice() {
            [only] => Some(only),
            _ => None,
        },
    };
    let entry = entry.ok_or_else(|| {
        invalid(format!(
            "index.json lists {} manifests: name the one to import by its tag",
            index.manifests.len()
        ))
    })?;
    let tag = match tag {
        Some(tag) => tag,
        None => named(entry)
            .ok_or_else(|| invalid(format!("index.json names no tag ({REF_NAME}): give one")))?
            .parse()
            .map_err(|e| invalid(format!("index.json: {REF_NAME}: {e}")))?,
    };
    let digest: Digest = entry
        .digest
        .parse()
        .map_err(|e| invalid(format!("index.json: digest {:?}: {e}", entry.digest)))?;
    Ok(((digest, entry.media_type.clone(), entry.size), tag))
}

/// Bytes read for a descriptor: its size and digest.
fn check_bytes(digest: &Digest, size: u64, content: &[u8]) -> Result<()> {
    if content.len() as u64 != size {
        return Err(invalid(format!(
            "{digest}: {} bytes in the layout, {size} in its descriptor",
            content.len()
        )));
    }
    let actual = Digest::of(digest.algorithm(), content);
    if actual != *digest {
        return Err(invalid(format!(
            "{digest}: the layout's bytes hash to {actual}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(entries: &[(&str, Option<&str>)]) -> LayoutIndex {
        LayoutIndex {
            manifests: entries
                .iter()
                .map(|(data, name)| IndexEntry {
                    media_type: crate::oci::media::OCI_MANIFEST.into(),
                    digest: Digest::sha256_of(data.as_bytes()).to_string(),
                    size: data.len() as u64,
                    annotations: name
                        .map(|n| BTreeMap::from([(REF_NAME.to_owned(), n.to_owned())]))
                        .unwrap_or_default(),
                })
                .collect(),
        }
    }

    fn tag(name: &str) -> Tag {
        name.parse().unwrap()
    }

    #[test]
    fn the_tag_defaults_to_the_only_entrys_name() {
        let ((digest, _, size), chosen) = choose(&index(&[("a", Some("v1"))]), None).unwrap();
        assert_eq!(chosen, tag("v1"));
        assert_eq!(digest, Digest::sha256_of(b"a"));
        assert_eq!(size, 1);
        // Another tag may be asked for: the only entry, tagged so.
        let (_, chosen) = choose(&index(&[("a", Some("v1"))]), Some(tag("prod"))).unwrap();
        assert_eq!(chosen, tag("prod"));
    }

    #[test]
    fn several_entries_need_a_tag_that_names_one() {
        let two = index(&[("a", Some("v1")), ("b", Some("v2"))]);
        let ((digest, _, _), _) = choose(&two, Some(tag("v2"))).unwrap();
        assert_eq!(digest, Digest::sha256_of(b"b"));
        assert!(matches!(
            choose(&two, None),
            Err(RegistryError::LayoutInvalid(_))
        ));
        assert!(matches!(
            choose(&two, Some(tag("v3"))),
            Err(RegistryError::LayoutInvalid(_))
        ));
    }

    #[test]
    fn an_unnamed_entry_needs_a_tag_and_a_bad_digest_is_refused() {
        assert!(matches!(
            choose(&index(&[("a", None)]), None),
            Err(RegistryError::LayoutInvalid(m)) if m.contains("names no tag")
        ));
        let mut bad = index(&[("a", Some("v1"))]);
        bad.manifests[0].digest = "sha256:nothex".into();
        assert!(matches!(
            choose(&bad, None),
            Err(RegistryError::LayoutInvalid(_))
        ));
    }

    #[test]
    fn bytes_are_checked_against_size_and_digest() {
        let digest = Digest::sha256_of(b"abc");
        assert!(check_bytes(&digest, 3, b"abc").is_ok());
        assert!(check_bytes(&digest, 4, b"abc").is_err());
        assert!(check_bytes(&digest, 3, b"abd").is_err());
    }
}
