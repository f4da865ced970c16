//! The registry's public index (docs/federation.md): one UnixFS directory naming every
//! published image as `<repository path>:<tag>` ([`crate::blobs::public_index`]), rebuilt
//! from the recorded image layouts a moment after they change, pinned, recorded, and (Kubo
//! mode) published under this registry's IPNS name, so that other registries can follow it.
//!
//! Every replica runs the builder: the index is computed from the metadata alone, so
//! replicas that see the same layouts compute the same root and record it alike. Only
//! repositories anonymous users may pull are listed (with auth off, all), whatever was
//! published while a repository was public.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use cid::Cid;
use futures::future::BoxFuture;
use futures::StreamExt;
use tokio::sync::Notify;

use super::{Registry, RegistryError, Result};
use crate::blobs::public_index::{self, Entry};
use crate::blobs::unixfs::{as_v1, cumulative_size};
use crate::blobs::BlobError;
use crate::meta::FederationIndex;

/// How often the builder asks whether the recorded layouts changed (a publish in this
/// process wakes it at once).
const POLL: Duration = Duration::from_secs(2);
/// How often the index is rebuilt even when no layout changed: which repositories are
/// public can change without one. A rebuild that changes nothing reads the layout records
/// and writes nothing.
const REFRESH: Duration = Duration::from_secs(10);
/// Layout roots read at once for their sizes.
const PARALLEL_READS: usize = 8;
/// The first retry's delay after a failed IPNS publication, doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Which repositories anonymous users may pull, asked once per rebuild; `None` when that
/// cannot be told now (the user store failing), and then nothing is rebuilt.
pub type Visibility =
    Arc<dyn Fn() -> BoxFuture<'static, Option<Box<dyn Fn(&str) -> bool + Send>>> + Send + Sync>;

/// What the builder keeps between rounds.
#[derive(Default)]
pub struct IndexState {
    /// The directory blocks of the last two indexes this process built (the current one
    /// and the one it replaced): public by construction, so the gateway serves them to
    /// anyone. The replaced one stays served until the next change, so a reader who got
    /// its root just before a rebuild can finish its walk.
    blocks: RwLock<[HashSet<Cid>; 2]>,
    /// Layout roots' cumulative sizes, which never change (a CID names fixed content).
    sizes: Mutex<HashMap<Cid, u64>>,
    /// Wakes the builder after a layout was published here.
    built: Notify,
    /// Wakes the IPNS publisher after a new root was recorded.
    recorded: Notify,
}

impl IndexState {
    pub fn wake(&self) {
        self.built.notify_one();
    }
}

/// `GET /v2/_ext/federation`'s view of the index.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IndexStatus {
    pub publish: bool,
    pub root: Option<String>,
    pub ipns: Option<String>,
    pub updated_at: Option<String>,
    pub ipns_root: Option<String>,
    pub ipns_published_at: Option<String>,
}

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

impl Registry {
    /// The index builder and (with an IPNS key) its publisher, until aborted.
    pub fn spawn_index(
        self: &Arc<Self>,
        visibility: Visibility,
        ipns_key: String,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let builder = {
            let registry = self.clone();
            tokio::spawn(async move { registry.run_index_builder(visibility).await })
        };
        let publisher = {
            let registry = self.clone();
            tokio::spawn(async move { registry.run_ipns_publisher(&ipns_key).await })
        };
        vec![builder, publisher]
    }

    /// The index as recorded, for `GET /v2/_ext/federation`.
    pub async fn index_status(&self) -> Result<IndexStatus> {
        let publish = self.settings.publish_index;
        let index = if publish {
            self.meta.federation_index().await?
        } else {
            None
        };
        let ipns = index.as_ref().and_then(|index| index.ipns.as_ref());
        Ok(IndexStatus {
            publish,
            root: index.as_ref().map(|index| format!("/ipfs/{}", index.cid)),
            ipns: ipns.map(|ipns| format!("/ipns/{}", ipns.name)),
            updated_at: index.as_ref().map(|index| rfc3339(index.built_at)),
            ipns_root: ipns.map(|ipns| format!("/ipfs/{}", ipns.cid)),
            ipns_published_at: ipns.map(|ipns| rfc3339(ipns.published_at)),
        })
    }

    /// Whether `cid` is a directory block of the current index (served to anyone).
    pub fn is_index_block(&self, cid: &Cid) -> bool {
        self.index
            .blocks
            .read()
            .is_ok_and(|sets| sets.iter().any(|blocks| blocks.contains(&as_v1(cid))))
    }

    async fn run_index_builder(&self, visibility: Visibility) {
        let mut built_for: Option<(u64, i64)> = None;
        let mut built_at = tokio::time::Instant::now();
        loop {
            let version = match self.meta.published_images_version().await {
                Ok(version) => Some(version),
                Err(e) => {
                    tracing::warn!(event = "index_check_failed", error = %e);
                    None
                }
            };
            let due = built_for.is_none() || version != built_for || built_at.elapsed() >= REFRESH;
            if version.is_some() && due {
                match self.rebuild_index(&visibility).await {
                    Ok(()) => {
                        built_for = version;
                        built_at = tokio::time::Instant::now();
                    }
                    Err(e) => {
                        self.metrics.record_index_build("failed");
                        tracing::warn!(event = "index_build_failed", error = %e, "retried shortly");
                    }
                }
            }
            let _ = tokio::time::timeout(POLL, self.index.built.notified()).await;
        }
    }

    /// Builds the index from the recorded layouts, stores and pins it, and records it.
    async fn rebuild_index(&self, visibility: &Visibility) -> Result<()> {
        let started = std::time::Instant::now();
        let public = visibility().await.ok_or_else(|| {
            RegistryError::Unavailable("which repositories are public cannot be told".into())
        })?;
        let images: Vec<_> = self
            .meta
            .published_images()
            .await?
            .into_iter()
            .filter(|image| public(image.repo.as_str()))
            .collect();
        drop(public);
        let sizes = self
            .layout_sizes(images.iter().map(|image| image.cid).collect())
            .await?;
        let entries = images.into_iter().filter_map(|image| {
            // A layout unpinned since it was listed (its tag just moved) is left out: the
            // next round sees the record gone.
            let dag_size = *sizes.get(&image.cid)?;
            Some(Entry {
                repository: image.repo.as_str().to_owned(),
                tag: image.tag.as_str().to_owned(),
                layout: image.cid,
                dag_size,
            })
        });
        let index = public_index::build(entries);
        let images = index.images;
        let previous = self.meta.federation_index().await?;
        let blocks: HashSet<Cid> = index.blocks.iter().map(|(cid, _)| *cid).collect();
        let root = index.root;
        let changed = previous.as_ref().map(|p| p.cid) != Some(root);
        if changed {
            self.blobs
                .put_dag_replacing(previous.as_ref().map(|p| &p.cid), &root, index.blocks)
                .await?;
            self.meta.record_federation_index(&root).await?;
            self.ensure_index_pinned(&root).await?;
            self.metrics.record_index_build("built");
            tracing::info!(
                event = "index_built",
                ipfs_cid = %root,
                images,
                omitted = index.omitted,
                duration_ms = started.elapsed().as_millis() as u64,
            );
        } else {
            self.metrics.record_index_build("unchanged");
        }
        if let Ok(mut sets) = self.index.blocks.write() {
            if changed {
                sets.swap(0, 1);
            }
            sets[0] = blocks;
        }
        self.metrics.index_images.set(images as i64);
        self.metrics.index_omitted.set(index.omitted as i64);
        if index.omitted > 0 {
            tracing::warn!(
                event = "index_images_omitted",
                omitted = index.omitted,
                "a repository has more tags than one index directory holds; the first in name order are listed",
            );
        }
        self.index.recorded.notify_one();
        Ok(())
    }

    /// As for a layout (see `ensure_layout_pinned`): a GC run may have unpinned the same
    /// root (an earlier index that was the same) between storing it and the record.
    async fn ensure_index_pinned(&self, root: &Cid) -> Result<()> {
        if !self.blobs.is_pinned(root).await? && self.pin_recorded(root).await? {
            tracing::info!(event = "repin", ipfs_cid = %root, "index recorded while being unpinned: pinned again");
        }
        Ok(())
    }

    /// The cumulative sizes of layout roots, from the cache or their root blocks; a root
    /// no longer stored is missing from the answer.
    async fn layout_sizes(&self, roots: Vec<Cid>) -> Result<HashMap<Cid, u64>> {
        let known: HashMap<Cid, u64> = match self.index.sizes.lock() {
            Ok(sizes) => roots
                .iter()
                .filter_map(|cid| Some((*cid, *sizes.get(cid)?)))
                .collect(),
            Err(_) => HashMap::new(),
        };
        let missing: Vec<Cid> = roots
            .into_iter()
            .filter(|cid| !known.contains_key(cid))
            .collect();
        let mut read = futures::stream::iter(missing)
            .map(|cid| async move {
                let size = match self.blobs.block(&cid).await {
                    Ok(block) => Some(cumulative_size(&cid, &block).map_err(|e| {
                        RegistryError::Internal(format!("stored layout root {cid}: {e}"))
                    })?),
                    Err(BlobError::NotFound(_)) => None,
                    Err(e) => return Err(RegistryError::from(e)),
                };
                Ok((cid, size))
            })
            .buffer_unordered(PARALLEL_READS);
        let mut sizes = known;
        let mut fresh = Vec::new();
        while let Some(result) = read.next().await {
            if let (cid, Some(size)) = result? {
                fresh.push((cid, size));
            }
        }
        if let Ok(mut cache) = self.index.sizes.lock() {
            // Bounded by the layouts recorded at once: forget the ones no longer listed.
            if cache.len() > 2 * (sizes.len() + fresh.len()) + 1024 {
                cache.retain(|cid, _| sizes.contains_key(cid));
            }
            cache.extend(fresh.iter().copied());
        }
        sizes.extend(fresh);
        Ok(sizes)
    }

    /// Publishes each recorded root under the IPNS name once, retrying failures.
    async fn run_ipns_publisher(&self, key: &str) {
        let mut failures = 0u32;
        loop {
            let delay = match self.publish_index_name(key).await {
                Ok(()) => {
                    failures = 0;
                    None
                }
                Err(e) => {
                    failures += 1;
                    let delay = FIRST_BACKOFF
                        .saturating_mul(1u32.checked_shl(failures - 1).unwrap_or(u32::MAX))
                        .min(MAX_BACKOFF);
                    self.metrics.record_ipns_publish("failed");
                    tracing::warn!(event = "ipns_publish_failed", error = %e, retry_in_ms = delay.as_millis() as u64);
                    Some(delay)
                }
            };
            match delay {
                Some(delay) => tokio::time::sleep(delay).await,
                None => self.index.recorded.notified().await,
            }
        }
    }

    /// Publishes the recorded root unless its IPNS record already names it.
    async fn publish_index_name(&self, key: &str) -> Result<()> {
        let Some(FederationIndex { cid, ipns, .. }) = self.meta.federation_index().await? else {
            return Ok(());
        };
        if ipns.is_some_and(|ipns| ipns.cid == cid) {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let Some(name) = self.blobs.publish_name(key, &cid).await? else {
            // No IPNS in this blob store: the index is served over HTTP only.
            return Ok(());
        };
        self.meta.record_ipns(&name, &cid).await?;
        self.metrics.record_ipns_publish("published");
        tracing::info!(
            event = "ipns_published",
            ipns_name = %name,
            ipfs_cid = %cid,
            duration_ms = started.elapsed().as_millis() as u64,
        );
        Ok(())
    }
}
