//! `[[federation.follow]]`: replicating another registry's published images
//! (docs/federation.md, "Following other registries"). Every `serve` runs one task per
//! rule. Each poll resolves the rule's source to the root of a public index (a UnixFS
//! directory: `a/b/c:T` names the image layout of tag `T` of repository `a/b/c`); when
//! the root changed since the rule was last in sync, the pass walks the index and imports
//! by CID ([`Registry::import_image`]) every followed tag not already imported from its
//! layout. The rule's state is in the metadata store, so restarts and replicas resume
//! from it; a lease keeps two replicas from running the same rule's pass at once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cid::Cid;
use serde::Serialize;

use super::notify::{Action, Origin, Target};
use super::{ImportSource, Registry, RegistryError, Visibility};
use crate::blobs::remote::{DagSource, NodeSource};
use crate::blobs::unixfs::{as_v1, directory_links};
use crate::blobs::BlobError;
use crate::config::{FollowRule, FollowSource};
use crate::meta::FollowedTag;
use crate::oci::{Reference, RepoName, Tag};

/// How long a pass's claim keeps other replicas off the rule; renewed every [`RENEW`]
/// while the pass runs, so only a dead process's claim runs out (and is taken over).
const LEASE: Duration = Duration::from_secs(20);
const RENEW: Duration = Duration::from_secs(5);
/// The longest wait before a source that could not be read is asked again (the wait
/// doubles from the rule's interval up to this, or the interval when longer).
const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// Tag entries one index may hold: a bound on what a source can make a pass do.
const MAX_INDEX_TAGS: usize = 100_000;
/// Directories one walk reads at most: directories may link the same child under many
/// names, so without a bound a small hostile index could make a walk read a block an
/// exponential number of times.
const MAX_INDEX_DIRECTORIES: usize = 100_000;
/// The longest directory path read: a repository name's limit.
const MAX_REPO_PATH: usize = 255;
/// The largest `GET /v2/_ext/federation` answer read.
const MAX_FEDERATION_ANSWER: usize = 64 * 1024;

/// One rule as a task runs it.
pub struct FollowTask {
    pub rule: FollowRule,
    pub source: FollowSource,
    /// Where the index's blocks and the images are read from.
    pub import: ImportSource,
    /// A registry source's `GET /v2/_ext/federation` (a client with the system's roots).
    pub http: reqwest::Client,
    pub timeout: Duration,
}

/// A rule's status, for `GET /v2/_ext/federation`.
#[derive(Debug, Clone, Serialize)]
pub struct FollowStatus {
    pub name: String,
    pub source: String,
    /// RFC 3339.
    pub last_success: Option<String>,
    /// Seconds since the rule was last in sync; `None` before its first success.
    pub lag_seconds: Option<f64>,
    /// `/ipfs/<cid>`: the index root the rule was last in sync with.
    pub last_root: Option<String>,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    pub tags_followed: u64,
}

/// What a pass did with its tags.
#[derive(Debug, Default)]
struct Pass {
    imported: usize,
    unchanged: usize,
    failed: usize,
    deleted: usize,
    first_failure: Option<String>,
}

/// A tag of the index: source repository, tag, layout root.
type Entry = (String, Tag, Cid);

impl Registry {
    /// Records the configured rules, for [`Registry::follow_status`].
    pub fn with_follow_rules(mut self, rules: &[FollowRule]) -> Registry {
        self.follow_rules = rules
            .iter()
            .map(|r| (r.name().to_owned(), r.source.clone()))
            .collect();
        for (name, _) in &self.follow_rules {
            self.metrics.register_follow_rule(name);
        }
        self
    }

    /// Every configured rule's status, from the metadata store (so any replica answers
    /// alike).
    pub async fn follow_status(&self) -> super::Result<Vec<FollowStatus>> {
        let mut statuses = Vec::with_capacity(self.follow_rules.len());
        for (name, source) in &self.follow_rules {
            let state = self.meta.follow_state(name).await?;
            let rfc3339 = |t: SystemTime| humantime::format_rfc3339_seconds(t).to_string();
            statuses.push(FollowStatus {
                name: name.clone(),
                source: source.clone(),
                last_success: state.last_success.map(rfc3339),
                lag_seconds: state.last_success.map(lag),
                last_root: state.last_root.map(|cid| format!("/ipfs/{cid}")),
                last_error: state.last_error,
                last_error_at: state.error_at.map(rfc3339),
                tags_followed: state.tags,
            });
        }
        Ok(statuses)
    }

    /// One task per rule, until aborted.
    pub fn spawn_followers(
        self: &Arc<Self>,
        tasks: Vec<FollowTask>,
        visibility: Visibility,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        tasks
            .into_iter()
            .map(|task| {
                let registry = self.clone();
                let visibility = visibility.clone();
                tokio::spawn(async move { registry.run_rule(task, visibility).await })
            })
            .collect()
    }

    async fn run_rule(&self, task: FollowTask, visibility: Visibility) {
        let name = task.rule.name().to_owned();
        let lease = format!("follow:{name}");
        let holder = self.instance_id().to_owned();
        let mut failures: u32 = 0;
        // When this process last ran a whole pass: none yet after a start.
        let mut last_pass: Option<std::time::Instant> = None;
        loop {
            let claimed = match self.meta.try_lease(&lease, &holder, LEASE).await {
                Ok(claimed) => claimed,
                Err(e) => {
                    tracing::warn!(event = "follow_claim_failed", rule = %name, error = %e);
                    false
                }
            };
            if claimed {
                // The claim is renewed while the pass runs, however long its imports take.
                let poll = self.poll_rule(&task, &name, &visibility, &mut last_pass);
                tokio::pin!(poll);
                let outcome = loop {
                    tokio::select! {
                        outcome = &mut poll => break outcome,
                        () = tokio::time::sleep(RENEW) => {
                            if let Err(e) = self.meta.try_lease(&lease, &holder, LEASE).await {
                                tracing::warn!(event = "follow_claim_renew_failed", rule = %name, error = %e);
                            }
                        }
                    }
                };
                if let Err(e) = self.meta.release_lease(&lease, &holder).await {
                    tracing::warn!(event = "follow_release_failed", rule = %name, error = %e);
                }
                match outcome {
                    Ok(()) => failures = 0,
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        self.metrics
                            .follow_errors
                            .get_or_create(&crate::metrics::RuleLabels { rule: name.clone() })
                            .inc();
                        tracing::warn!(event = "follow_poll_failed", rule = %name, source = %task.rule.source, error = %e);
                        if let Err(e) = self.meta.record_follow_error(&name, &e).await {
                            tracing::warn!(event = "follow_state_failed", rule = %name, error = %e);
                        }
                    }
                }
            }
            self.update_follow_gauges(&name).await;
            tokio::time::sleep(backoff(task.rule.interval, failures)).await;
        }
    }

    async fn update_follow_gauges(&self, name: &str) {
        let Ok(state) = self.meta.follow_state(name).await else {
            return;
        };
        let labels = crate::metrics::RuleLabels {
            rule: name.to_owned(),
        };
        if let Some(at) = state.last_success {
            let since_epoch = at
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            self.metrics
                .follow_last_success
                .get_or_create(&labels)
                .set(since_epoch.as_secs_f64());
            self.metrics.follow_lag.get_or_create(&labels).set(lag(at));
        }
    }

    /// One poll: resolve the source; when its root changed since the rule was last in
    /// sync, a pass. An error (the source or the index unreadable, or tags that failed) is
    /// the rule's error.
    async fn poll_rule(
        &self,
        task: &FollowTask,
        name: &str,
        visibility: &Visibility,
        last_pass: &mut Option<std::time::Instant>,
    ) -> Result<(), String> {
        let root = self.resolve_source(task).await?;
        let state = self
            .meta
            .follow_state(name)
            .await
            .map_err(|e| e.to_string())?;
        let resync = resync_period(task.rule.interval);
        if state.last_root == Some(root) && last_pass.is_some_and(|at| at.elapsed() < resync) {
            return self
                .meta
                .record_follow_success(name, &root)
                .await
                .map_err(|e| e.to_string());
        }
        let started = std::time::Instant::now();
        let index = self.index_source(task)?;
        let entries = walk_index(index.as_ref(), &root, &task.rule).await?;
        let pass = self
            .follow_pass(task, name, &entries, visibility)
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(
            event = "follow_pass",
            rule = %name,
            ipfs_cid = %root,
            tags = entries.len(),
            imported = pass.imported,
            unchanged = pass.unchanged,
            failed = pass.failed,
            deleted = pass.deleted,
            duration_ms = started.elapsed().as_millis() as u64,
        );
        *last_pass = Some(started);
        if pass.failed > 0 {
            return Err(format!(
                "{} of {} tags failed; the first: {}",
                pass.failed,
                entries.len(),
                pass.first_failure.unwrap_or_default()
            ));
        }
        self.meta
            .record_follow_success(name, &root)
            .await
            .map_err(|e| e.to_string())
    }

    /// The index root the source names now.
    async fn resolve_source(&self, task: &FollowTask) -> Result<Cid, String> {
        match &task.source {
            FollowSource::Ipfs(cid) => Ok(as_v1(cid)),
            FollowSource::Ipns(name) => self
                .blobs
                .resolve_name(name)
                .await
                .map(|cid| as_v1(&cid))
                .map_err(|e| format!("resolving /ipns/{name}: {e}")),
            FollowSource::Registry(url) => {
                let endpoint = format!("{}/v2/_ext/federation", url.as_str().trim_end_matches('/'));
                registry_root(&task.http, &endpoint, task.timeout).await
            }
        }
    }

    fn index_source(&self, task: &FollowTask) -> Result<Arc<dyn DagSource>, String> {
        match &task.import {
            ImportSource::Node => Ok(Arc::new(NodeSource::new(self.blobs.clone()))),
            ImportSource::Gateways(gateways) => Ok(Arc::new(gateways.clone())),
            ImportSource::Unconfigured => Err(
                "no source of blocks: an IPFS node (ipfs.url), federation.gateways, or a \
                 registry URL as the source"
                    .into(),
            ),
        }
    }

    /// Imports what is new or moved, deletes (with `delete`) or forgets what is gone.
    async fn follow_pass(
        &self,
        task: &FollowTask,
        name: &str,
        entries: &[Entry],
        visibility: &Visibility,
    ) -> super::Result<Pass> {
        let rule = &task.rule;
        let origin = Origin {
            request_id: String::new(),
            addr: String::new(),
            host: String::new(),
            method: "FOLLOW".into(),
            user_agent: format!("ipfs-registry/{} follow {name}", env!("CARGO_PKG_VERSION")),
            actor: None,
        };
        let followed: HashMap<(RepoName, Tag), FollowedTag> = self
            .meta
            .followed_tags(name)
            .await?
            .into_iter()
            .map(|f| ((f.repo.clone(), f.tag.clone()), f))
            .collect();
        let mut pass = Pass::default();
        let mut seen = HashSet::new();
        let fail = |pass: &mut Pass, what: String| {
            pass.failed += 1;
            self.metrics.record_follow_import(name, "failed");
            if pass.first_failure.is_none() {
                pass.first_failure = Some(what);
            }
        };
        for (source_repo, tag, layout) in entries {
            let local = match rule.local_name(source_repo).parse::<RepoName>() {
                Ok(local) => local,
                Err(e) => {
                    tracing::warn!(event = "follow_tag_failed", rule = %name, repository = %source_repo, tag = %tag, error = %e);
                    fail(&mut pass, format!("{source_repo}:{tag}: {e}"));
                    continue;
                }
            };
            seen.insert((local.clone(), tag.clone()));
            let current = self
                .meta
                .manifest(&local, &Reference::Tag(tag.clone()))
                .await?
                .map(|m| m.digest);
            let record = followed.get(&(local.clone(), tag.clone()));
            if record.is_some_and(|f| f.layout == *layout && current.as_ref() == Some(&f.manifest))
            {
                pass.unchanged += 1;
                self.metrics.record_follow_import(name, "unchanged");
                continue;
            }
            let imported = self
                .import_image(
                    &task.import,
                    layout,
                    &local,
                    Some(tag.clone()),
                    &origin,
                    &|_| {},
                )
                .await;
            match imported {
                Ok(imported) => {
                    self.meta
                        .record_followed_tag(
                            name,
                            &FollowedTag {
                                repo: local.clone(),
                                tag: tag.clone(),
                                layout: *layout,
                                manifest: imported.digest.clone(),
                            },
                        )
                        .await?;
                    // Published here too (followers of this registry see it), also when the
                    // tag was already there: a pass cut short may have imported it without
                    // queueing it.
                    // Unknown (the user store failing): not published now; the index
                    // builder lists it once it can tell.
                    let public = match visibility().await {
                        Some(public) => public(local.as_str()),
                        None => false,
                    };
                    self.publish_after_push(&local, tag, &imported.digest, public)
                        .await;
                    let outcome = if imported.unchanged {
                        pass.unchanged += 1;
                        "unchanged"
                    } else {
                        pass.imported += 1;
                        "imported"
                    };
                    self.metrics.record_follow_import(name, outcome);
                }
                Err(e) => {
                    tracing::warn!(event = "follow_tag_failed", rule = %name, repository = %local, tag = %tag, ipfs_cid = %layout, error = %e);
                    fail(&mut pass, format!("{local}:{tag}: {e}"));
                }
            }
        }
        for ((repo, tag), record) in &followed {
            if seen.contains(&(repo.clone(), tag.clone())) {
                continue;
            }
            if rule.delete && self.delete_followed(repo, tag, record, &origin).await? {
                pass.deleted += 1;
                self.metrics.record_follow_import(name, "deleted");
            }
            // Without `delete` the tag stays, a local tag like any other from now on.
            self.meta.forget_followed_tag(name, repo, tag).await?;
        }
        Ok(pass)
    }

    /// Deletes a tag gone from the source, when it still points at what the rule imported.
    async fn delete_followed(
        &self,
        repo: &RepoName,
        tag: &Tag,
        record: &FollowedTag,
        origin: &Origin,
    ) -> super::Result<bool> {
        let target = Target::tag(repo, tag.as_str());
        let notices = self.notifier.notices(Action::Delete, &target, origin);
        let protected = self.settings.rules.protected_tags(repo.as_str());
        let deleted = self
            .meta
            .delete_tag_pointing_at(repo, tag, &record.manifest, &protected, &notices)
            .await
            .map_err(|e| self.immutable(repo, e, "deleted"));
        match deleted {
            Ok(deleted) => {
                if deleted {
                    self.woken(&notices);
                }
                Ok(deleted)
            }
            Err(RegistryError::TagImmutable(m)) => {
                tracing::info!(event = "follow_delete_refused", repository = %repo, tag = %tag, reason = %m);
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }
}

/// How long an unchanged root is trusted before a whole pass runs again (and once after every
/// start): a tag deleted or moved here by hand is put back without waiting for the source
/// to change.
fn resync_period(interval: Duration) -> Duration {
    interval.saturating_mul(10).max(Duration::from_secs(600))
}

/// Seconds from `at` to now.
fn lag(at: SystemTime) -> f64 {
    SystemTime::now()
        .duration_since(at)
        .unwrap_or_default()
        .as_secs_f64()
}

/// The wait before the next poll after `failures` failed ones in a row.
fn backoff(interval: Duration, failures: u32) -> Duration {
    if failures == 0 {
        return interval;
    }
    let doubled = interval.saturating_mul(1u32.checked_shl(failures).unwrap_or(u32::MAX));
    doubled.min(MAX_BACKOFF.max(interval))
}

/// The root a registry's `GET /v2/_ext/federation` names.
async fn registry_root(
    http: &reqwest::Client,
    endpoint: &str,
    timeout: Duration,
) -> Result<Cid, String> {
    let ask = async {
        let response = http
            .get(endpoint)
            .send()
            .await
            .map_err(|e| format!("{endpoint}: {}", crate::error_chain::with_sources(&e)))?;
        if !response.status().is_success() {
            return Err(format!("{endpoint}: HTTP {}", response.status()));
        }
        let mut body = Vec::new();
        let mut response = response;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("{endpoint}: {e}"))?
        {
            if body.len() + chunk.len() > MAX_FEDERATION_ANSWER {
                return Err(format!(
                    "{endpoint}: an answer over {MAX_FEDERATION_ANSWER} bytes"
                ));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    let body = tokio::time::timeout(timeout, ask)
        .await
        .map_err(|_| format!("{endpoint}: no answer within {timeout:?}"))??;
    root_of_answer(&body).map_err(|e| format!("{endpoint}: {e}"))
}

/// The CID of `{"root": "/ipfs/<cid>"}`.
fn root_of_answer(body: &[u8]) -> Result<Cid, String> {
    #[derive(serde::Deserialize)]
    struct Answer {
        root: Option<String>,
    }
    let answer: Answer = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let root = answer
        .root
        .ok_or("the registry publishes no index (yet): its root is null")?;
    let cid = root
        .strip_prefix("/ipfs/")
        .ok_or_else(|| format!("root {root:?} is not /ipfs/<cid>"))?;
    Cid::try_from(cid)
        .map(|cid| as_v1(&cid))
        .map_err(|e| format!("root {root:?}: {e}"))
}

/// Every followed tag of the index under `root`: directories are repository components,
/// an entry `<component>:<tag>` a tag's layout. Directories no pattern can match below
/// are not read. Any directory that cannot be read fails the walk: a pass never acts on
/// part of an index (it would take the rest for deleted).
async fn walk_index(
    source: &dyn DagSource,
    root: &Cid,
    rule: &FollowRule,
) -> Result<Vec<Entry>, String> {
    let mut entries = Vec::new();
    let mut pending = vec![(String::new(), as_v1(root))];
    let mut read = 0usize;
    while let Some((path, cid)) = pending.pop() {
        read += 1;
        if read > MAX_INDEX_DIRECTORIES {
            return Err(format!(
                "the index has more than {MAX_INDEX_DIRECTORIES} directories"
            ));
        }
        let what = if path.is_empty() {
            "the index's root".to_owned()
        } else {
            format!("index directory {path}/")
        };
        let block = source.block(&cid).await.map_err(|e| match e {
            BlobError::NotFound(_) => format!("{what} ({cid}): not found at the source"),
            e => format!("{what} ({cid}): {e}"),
        })?;
        let links = directory_links(&block).ok_or_else(|| {
            format!(
                "{what} ({cid}) is not a plain UnixFS directory (sharded directories are not read)"
            )
        })?;
        for (entry, child) in links {
            let child = as_v1(&child);
            let joined = |component: &str| match path.is_empty() {
                true => component.to_owned(),
                false => format!("{path}/{component}"),
            };
            match entry.split_once(':') {
                Some((component, tag)) => {
                    let repo = joined(component);
                    if !rule.follows(&repo) {
                        continue;
                    }
                    let Ok(tag) = tag.parse::<Tag>() else {
                        tracing::warn!(event = "follow_index_entry_skipped", entry = %entry, directory = %what);
                        continue;
                    };
                    if entries.len() >= MAX_INDEX_TAGS {
                        return Err(format!("the index has more than {MAX_INDEX_TAGS} tags"));
                    }
                    entries.push((repo, tag, child));
                }
                None => {
                    let below = joined(&entry);
                    if below.len() > MAX_REPO_PATH {
                        return Err(format!("{what}: a path longer than a repository name"));
                    }
                    if rule.may_follow_below(&below) {
                        pending.push((below, child));
                    }
                }
            }
        }
    }
    entries.sort_by(|a, b| (&a.0, a.1.as_str()).cmp(&(&b.0, b.1.as_str())));
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_interval() {
        let minute = Duration::from_secs(60);
        assert_eq!(backoff(minute, 0), minute);
        assert_eq!(backoff(minute, 1), minute * 2);
        assert_eq!(backoff(minute, 3), minute * 8);
        assert_eq!(backoff(minute, 30), MAX_BACKOFF);
        let hour = Duration::from_secs(3600);
        assert_eq!(backoff(hour, 5), hour);
    }

    /// A source that serves blocks from memory.
    struct Blocks(HashMap<Cid, bytes::Bytes>);

    #[async_trait::async_trait]
    impl DagSource for Blocks {
        async fn block(&self, cid: &Cid) -> Result<bytes::Bytes, BlobError> {
            self.0.get(cid).cloned().ok_or(BlobError::NotFound(*cid))
        }

        async fn file(&self, cid: &Cid) -> Result<crate::blobs::ByteStream, BlobError> {
            Err(BlobError::NotFound(*cid))
        }
    }

    #[tokio::test]
    async fn an_index_linking_one_directory_under_many_names_is_bounded() {
        use crate::blobs::unixfs::directory_node;
        // Each level links the one below twice: 2^40 paths over 41 blocks.
        let mut blocks = HashMap::new();
        let (mut below, bytes, mut size) = directory_node(&[]);
        blocks.insert(below, bytes);
        for _ in 0..40 {
            let (cid, bytes, dag_size) =
                directory_node(&[("a".to_owned(), below, size), ("b".to_owned(), below, size)]);
            blocks.insert(cid, bytes);
            (below, size) = (cid, dag_size);
        }
        let rule: FollowRule = toml::from_str("source = \"/ipfs/bafkqaaa\"").unwrap();
        let error = walk_index(&Blocks(blocks), &below, &rule)
            .await
            .unwrap_err();
        assert!(error.contains("directories"), "{error}");
    }

    #[test]
    fn the_root_of_a_federation_answer() {
        let cid = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4";
        let body = format!(r#"{{"root": "/ipfs/{cid}", "ipns": null, "updated_at": null}}"#);
        assert_eq!(root_of_answer(body.as_bytes()).unwrap().to_string(), cid);
        let none = root_of_answer(br#"{"root": null, "ipns": null}"#).unwrap_err();
        assert!(none.contains("no index"), "{none}");
        assert!(root_of_answer(br#"{"root": "bafy"}"#).is_err());
        assert!(root_of_answer(b"<html>").is_err());
    }
}
