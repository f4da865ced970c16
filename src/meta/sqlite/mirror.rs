//! Pull-through mirrors: which repositories are mirrored, and when each tag was checked.

use std::time::SystemTime;

use rusqlite::{params, Connection, OptionalExtension};

use super::error::db;
use super::sql::{from_millis, now_millis};
use super::{manifests, repos};
use crate::meta::{MetaError, NewManifest, ProtectedTags, RepoOrigin};
use crate::oci::{Digest, RepoName, Tag};

pub(super) fn origin(c: &Connection, repo: &RepoName) -> Result<RepoOrigin, MetaError> {
    let row: Option<bool> = c
        .prepare_cached(
            "SELECT m.repository_id IS NOT NULL FROM repositories r \
             LEFT JOIN mirrored_repositories m ON m.repository_id = r.id WHERE r.name = ?1",
        )
        .map_err(db)?
        .query_row([repo.as_str()], |row| row.get(0))
        .optional()
        .map_err(db)?;
    Ok(match row {
        None => RepoOrigin::Absent,
        Some(true) => RepoOrigin::Mirrored,
        Some(false) => RepoOrigin::Pushed,
    })
}

/// The whole store of a fetched manifest, inside a write transaction.
pub(super) fn put(
    c: &Connection,
    repo: &RepoName,
    upstream: &str,
    manifest: &NewManifest,
    tag: Option<&Tag>,
) -> Result<(), MetaError> {
    let repo_id = repos::ensure(c, repo)?;
    let now = now_millis();
    c.prepare_cached(
        "INSERT INTO mirrored_repositories (repository_id, upstream, created_at) \
         VALUES (?1, ?2, ?3) \
         ON CONFLICT (repository_id) DO UPDATE SET upstream = excluded.upstream",
    )
    .map_err(db)?
    .execute(params![repo_id, upstream, now])
    .map_err(db)?;
    manifests::write(c, repo_id, manifest, tag, &ProtectedTags::none())?;
    if let Some(tag) = tag {
        c.prepare_cached(
            "INSERT INTO mirrored_tags (repository_id, name, checked_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (repository_id, name) DO UPDATE SET checked_at = excluded.checked_at",
        )
        .map_err(db)?
        .execute(params![repo_id, tag.as_str(), now])
        .map_err(db)?;
    }
    Ok(())
}

pub(super) fn tag_checked(
    c: &Connection,
    repo: &RepoName,
    tag: &Tag,
) -> Result<Option<SystemTime>, MetaError> {
    let millis: Option<i64> = c
        .prepare_cached(
            "SELECT mt.checked_at FROM repositories r \
             JOIN mirrored_tags mt ON mt.repository_id = r.id \
             WHERE r.name = ?1 AND mt.name = ?2",
        )
        .map_err(db)?
        .query_row(params![repo.as_str(), tag.as_str()], |row| row.get(0))
        .optional()
        .map_err(db)?;
    Ok(millis.map(from_millis))
}

pub(super) fn confirm_tag(
    c: &Connection,
    repo: &RepoName,
    tag: &Tag,
    digest: &Digest,
) -> Result<bool, MetaError> {
    let n = c
        .prepare_cached(
            "UPDATE mirrored_tags SET checked_at = ?4 \
             WHERE repository_id = (SELECT id FROM repositories WHERE name = ?1) AND name = ?2 \
               AND EXISTS (SELECT 1 FROM tags t WHERE t.repository_id = mirrored_tags.repository_id \
                           AND t.name = mirrored_tags.name AND t.manifest_digest = ?3)",
        )
        .map_err(db)?
        .execute(params![repo.as_str(), tag.as_str(), digest.to_string(), now_millis()])
        .map_err(db)?;
    Ok(n > 0)
}
