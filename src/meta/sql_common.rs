//! What the PostgreSQL and SQLite stores share. Their SQL and locking differ on purpose
//! (row locks there, one serialised writer here), so they share no query layer: only how
//! stored text and integers become domain types, the rule for a manifest's missing
//! references, and the query that decides which manifests GC keeps.

use std::collections::{BTreeMap, BTreeSet};

use cid::Cid;

use super::{MetaError, Upload, UploadChunk};
use crate::oci::{Descriptor, Digest, ReferenceKind, RepoName};

/// A row that cannot be read back into domain types.
pub(crate) fn corrupt(what: impl std::fmt::Display) -> MetaError {
    MetaError::Corrupt(what.to_string())
}

pub(crate) fn parse_digest(text: &str) -> Result<Digest, MetaError> {
    text.parse()
        .map_err(|e| corrupt(format_args!("stored digest {text:?}: {e}")))
}

pub(crate) fn parse_cid(text: &str) -> Result<Cid, MetaError> {
    Cid::try_from(text).map_err(|e| corrupt(format_args!("stored CID {text:?}: {e}")))
}

/// A size or offset to store: both databases keep 64-bit signed integers.
pub(crate) fn to_i64(value: u64, what: &str) -> Result<i64, MetaError> {
    i64::try_from(value).map_err(|_| MetaError::Backend(format!("{what} {value} is too large")))
}

/// A stored size or offset, which is never negative unless the row is corrupt.
pub(crate) fn to_u64(value: i64, what: &str) -> Result<u64, MetaError> {
    u64::try_from(value).map_err(|_| corrupt(format_args!("negative {what} {value}")))
}

/// How `manifest_references.kind` names a reference kind.
pub(crate) fn kind_name(kind: ReferenceKind) -> &'static str {
    match kind {
        ReferenceKind::Blob => "blob",
        ReferenceKind::Manifest => "manifest",
    }
}

/// The distinct digests of one kind among a manifest's references.
pub(crate) fn referenced(
    references: &[(Digest, ReferenceKind)],
    kind: ReferenceKind,
) -> Vec<String> {
    let distinct: BTreeSet<String> = references
        .iter()
        .filter(|(_, k)| *k == kind)
        .map(|(d, _)| d.to_string())
        .collect();
    distinct.into_iter().collect()
}

/// Fails with `MissingReferences`, naming each absent digest once in the manifest's order,
/// unless `present` finds every reference in the repository. `present` is asked once per
/// distinct reference.
pub(crate) fn require_references(
    references: &[(Digest, ReferenceKind)],
    mut present: impl FnMut(&Digest, ReferenceKind) -> Result<bool, MetaError>,
) -> Result<(), MetaError> {
    let mut checked = BTreeSet::new();
    let mut missing: Vec<Digest> = Vec::new();
    for (digest, kind) in references {
        if !checked.insert((digest, kind_name(*kind))) {
            continue;
        }
        if !present(digest, *kind)? && !missing.contains(digest) {
            missing.push(digest.clone());
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(MetaError::MissingReferences(missing))
    }
}

/// A `WITH` clause defining `live (repository_id, digest)`: the manifests GC keeps. They
/// are the tagged ones, those for which `young` (an SQL condition on `manifests`, in the
/// database's own dialect, which may use the CTEs `ctes` defines) holds, and everything
/// reachable from them: an index's children, a manifest's referrers, and a referrer's
/// subject (a kept signature keeps what it signs).
pub(crate) fn live_manifests(ctes: &str, young: &str) -> String {
    format!(
        "WITH RECURSIVE {ctes} edges (repository_id, from_digest, to_digest) AS ( \
            SELECT repository_id, manifest_digest, referenced_digest \
            FROM manifest_references WHERE kind = 'manifest' \
            UNION ALL \
            SELECT repository_id, subject_digest, digest \
            FROM manifests WHERE subject_digest IS NOT NULL \
            UNION ALL \
            SELECT repository_id, digest, subject_digest \
            FROM manifests WHERE subject_digest IS NOT NULL \
        ), live (repository_id, digest) AS ( \
            SELECT repository_id, digest FROM manifests WHERE {young} \
            UNION \
            SELECT repository_id, manifest_digest FROM tags \
            UNION \
            SELECT e.repository_id, e.to_digest \
            FROM live l JOIN edges e \
              ON e.repository_id = l.repository_id AND e.from_digest = l.digest \
        ) "
    )
}

/// A referrer's descriptor from its manifest's stored columns; `annotations` is the
/// manifest's `annotations` member as stored (JSON), absent or null when it has none.
pub(crate) fn referrer(
    media_type: String,
    digest: Digest,
    size: i64,
    artifact_type: Option<String>,
    annotations: Option<serde_json::Value>,
) -> Result<Descriptor, MetaError> {
    let annotations = match annotations {
        None | Some(serde_json::Value::Null) => None,
        Some(value) => Some(
            serde_json::from_value::<BTreeMap<String, String>>(value)
                .map_err(|e| corrupt(format_args!("manifest annotations: {e}")))?,
        ),
    };
    Ok(Descriptor {
        media_type,
        digest,
        size,
        artifact_type,
        annotations,
        urls: None,
        platform: None,
        data: None,
    })
}

/// An upload chunk's offset and size as stored.
pub(crate) fn chunk_span(chunk: &UploadChunk) -> Result<(i64, i64), MetaError> {
    Ok((
        to_i64(chunk.offset, "chunk offset")?,
        to_i64(chunk.size, "chunk size")?,
    ))
}

/// A session just created: nothing received yet.
pub(crate) fn new_upload(
    id: uuid::Uuid,
    repository: &RepoName,
    hash_state: Vec<u8>,
    started_at: std::time::SystemTime,
) -> Upload {
    Upload {
        id,
        repository: repository.clone(),
        bytes_received: 0,
        hash_state,
        chunk_count: 0,
        started_at,
    }
}

/// The CIDs of an ended session's chunks to queue for unpinning: all but `kept` (the blob
/// the session produced, when one chunk was the whole blob).
/// What a completed upload's transaction holds for a pending pin (`(root, cid)` rows) and
/// what it queues for unpinning: the chunks (but the stored blob's own CID) are queued,
/// or held with the directly pinned nodes while the joined root that was stored waits for
/// its recursive pin. A root that was not stored (the digest was known under another
/// CID) goes to the queue with its nodes.
pub(crate) fn completed_chunks(
    chunks: &[UploadChunk],
    stored: &Cid,
    pending: Option<&super::PendingPin>,
) -> (Vec<String>, Vec<String>) {
    let released = released_chunks(chunks, Some(stored));
    match pending {
        None => (Vec::new(), released),
        Some(pending) => {
            let nodes = pending.direct.iter().map(ToString::to_string);
            if pending.root == *stored {
                (released.into_iter().chain(nodes).collect(), Vec::new())
            } else {
                let root = std::iter::once(pending.root.to_string());
                (
                    Vec::new(),
                    released.into_iter().chain(nodes).chain(root).collect(),
                )
            }
        }
    }
}

pub(crate) fn released_chunks(chunks: &[UploadChunk], kept: Option<&Cid>) -> Vec<String> {
    chunks
        .iter()
        .filter(|chunk| Some(&chunk.cid) != kept)
        .map(|chunk| chunk.cid.to_string())
        .collect()
}

/// An outbox row as read back by either store (creation time in Unix milliseconds).
pub(crate) fn outbox_entry(
    id: i64,
    endpoint: String,
    event: String,
    attempts: i64,
    created_millis: i64,
    failed: bool,
    last_error: Option<String>,
) -> Result<crate::meta::outbox::OutboxEntry, MetaError> {
    let created = std::time::UNIX_EPOCH
        + std::time::Duration::from_millis(to_u64(created_millis, "outbox created_at")?);
    Ok(crate::meta::outbox::OutboxEntry {
        id,
        endpoint,
        event,
        attempts: u32::try_from(attempts).map_err(|_| corrupt("outbox attempts"))?,
        created,
        failed,
        last_error,
    })
}

/// A duration as whole milliseconds for SQL arithmetic (saturating: a delay of centuries is
/// as good as never).
pub(crate) fn millis(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// A layout queue entry as stored: the names parsed back.
pub(crate) fn queued(
    repo: &str,
    tag: &str,
    manifest: crate::oci::Digest,
    attempts: i32,
) -> Result<crate::meta::QueuedLayout, MetaError> {
    let (repo, tag) = stored_repo_tag(repo, tag)?;
    Ok(crate::meta::QueuedLayout {
        repo,
        tag,
        manifest,
        attempts: u32::try_from(attempts).unwrap_or(0),
    })
}

/// A row of the published images (repository, tag, layout root).
pub(crate) fn published_image(
    repo: String,
    tag: String,
    cid: Cid,
) -> Result<crate::meta::PublishedImage, MetaError> {
    let (repo, tag) = stored_repo_tag(&repo, &tag)?;
    Ok(crate::meta::PublishedImage { repo, tag, cid })
}

/// A stored repository name and tag, parsed back (corrupt when they no longer parse).
pub(crate) fn stored_repo_tag(
    repo: &str,
    tag: &str,
) -> Result<(RepoName, crate::oci::Tag), MetaError> {
    Ok((
        repo.parse()
            .map_err(|e| corrupt(format!("stored repository {repo:?}: {e}")))?,
        tag.parse()
            .map_err(|e| corrupt(format!("stored tag {tag:?}: {e}")))?,
    ))
}
