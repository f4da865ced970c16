//! Repositories: lookup, creation on first use, catalog.

use rusqlite::{Connection, OptionalExtension};

use super::error::db;
use super::sql::{from_millis, limit, names, now_millis};
use crate::meta::users::RepoFilter;
use crate::meta::{MetaError, Page, RepositorySummary, TagSummary};
use crate::oci::RepoName;

/// The repository's id, if it exists.
pub(crate) fn id(c: &Connection, repo: &RepoName) -> Result<Option<i64>, MetaError> {
    c.prepare_cached("SELECT id FROM repositories WHERE name = ?1")
        .map_err(db)?
        .query_row([repo.as_str()], |row| row.get(0))
        .optional()
        .map_err(db)
}

/// The repository's id, creating it if needed (inside a write transaction).
pub(crate) fn ensure(c: &Connection, repo: &RepoName) -> Result<i64, MetaError> {
    // Looked up first: pushes go to existing repositories far more often than new ones.
    if let Some(id) = id(c, repo)? {
        return Ok(id);
    }
    c.prepare_cached("INSERT INTO repositories (name, created_at) VALUES (?1, ?2) RETURNING id")
        .map_err(db)?
        .query_row(rusqlite::params![repo.as_str(), now_millis()], |row| {
            row.get(0)
        })
        .map_err(db)
}

pub(crate) fn catalog(c: &Connection, page: &Page) -> Result<Vec<String>, MetaError> {
    let after = page.last.clone().unwrap_or_default();
    names(
        c,
        "SELECT name FROM repositories WHERE name > ?1 ORDER BY name LIMIT ?2",
        &[&after, &limit(page)],
    )
}

/// The repositories' summaries for a listing; see [`crate::meta::MetadataStore::repository_summaries`].
pub(crate) fn summaries(
    c: &Connection,
    page: &Page,
    filter: &RepoFilter,
    search: &str,
) -> Result<Vec<RepositorySummary>, MetaError> {
    let after = page.last.clone().unwrap_or_default();
    let allowed = serde_json::to_string(&filter.names).unwrap_or_else(|_| "[]".into());
    let prefixes = serde_json::to_string(&filter.prefixes).unwrap_or_else(|_| "[]".into());
    // The catalog's keyset scan and access filter; each row's figures come from the
    // per-repository indexes of tags, manifests and blob links. SQLite's two-argument
    // max() is NULL when either is, hence the coalesces.
    let mut statement = c
        .prepare_cached(
            "SELECT r.name,
                    (SELECT count(*) FROM tags t WHERE t.repository_id = r.id),
                    (SELECT coalesce(sum(b.size), 0)
                       FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest
                      WHERE rb.repository_id = r.id),
                    (SELECT max(t.updated_at) FROM tags t WHERE t.repository_id = r.id),
                    (SELECT max(m.created_at) FROM manifests m WHERE m.repository_id = r.id)
             FROM repositories r
             WHERE r.name > ?1
               AND (?3 OR r.name IN (SELECT value FROM json_each(?4))
                    OR EXISTS (SELECT 1 FROM json_each(?5) p
                               WHERE substr(r.name, 1, length(p.value)) = p.value))
               AND instr(r.name, ?6) > 0
             ORDER BY r.name LIMIT ?2",
        )
        .map_err(db)?;
    let rows = statement
        .query_map(
            rusqlite::params![after, limit(page), filter.all, allowed, prefixes, search],
            |row| {
                let tagged: Option<i64> = row.get(3)?;
                let pushed: Option<i64> = row.get(4)?;
                Ok(RepositorySummary {
                    name: row.get(0)?,
                    tags: row.get::<_, i64>(1)?.max(0) as u64,
                    size: row.get::<_, i64>(2)?.max(0) as u64,
                    last_push: tagged.max(pushed).map(from_millis),
                })
            },
        )
        .map_err(db)?;
    rows.collect::<Result<_, _>>().map_err(db)
}

/// A page of the repository's tags; see [`crate::meta::MetadataStore::tag_summaries`].
pub(crate) fn tag_summaries(
    c: &Connection,
    repo: &RepoName,
    page: &Page,
) -> Result<Option<Vec<TagSummary>>, MetaError> {
    let Some(repo_id) = id(c, repo)? else {
        return Ok(None);
    };
    let after = page.last.clone().unwrap_or_default();
    // `reach` follows each tag's manifest to its children (an index's images; UNION ends
    // the walk however manifests refer to each other), whose blobs are then summed once.
    let mut statement = c
        .prepare_cached(
            "WITH RECURSIVE page AS (
                 SELECT t.name, t.manifest_digest, t.updated_at FROM tags t
                  WHERE t.repository_id = ?1 AND t.name > ?2 ORDER BY t.name LIMIT ?3
             ), reach(tag, digest) AS (
                 SELECT name, manifest_digest FROM page
                 UNION
                 SELECT reach.tag, mr.referenced_digest FROM reach
                   JOIN manifest_references mr
                     ON mr.repository_id = ?1 AND mr.manifest_digest = reach.digest
                    AND mr.kind = 'manifest'
             )
             SELECT p.name, p.manifest_digest, m.media_type, p.updated_at,
                    (SELECT coalesce(sum(b.size), 0) FROM blobs b
                      WHERE b.digest IN (
                          SELECT mr.referenced_digest FROM reach r
                            JOIN manifest_references mr
                              ON mr.repository_id = ?1 AND mr.manifest_digest = r.digest
                             AND mr.kind = 'blob'
                           WHERE r.tag = p.name))
               FROM page p
               JOIN manifests m ON m.repository_id = ?1 AND m.digest = p.manifest_digest
              ORDER BY p.name",
        )
        .map_err(db)?;
    let rows = statement
        .query_map(rusqlite::params![repo_id, after, limit(page)], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, i64>(3)?,
                row.get::<_, i64>(4)?,
            ))
        })
        .map_err(db)?;
    let mut tags = Vec::new();
    for row in rows {
        let (name, digest, media_type, pushed_at, size) = row.map_err(db)?;
        tags.push(TagSummary {
            name,
            digest: digest
                .parse()
                .map_err(|e| MetaError::Corrupt(format!("stored tag digest {digest:?}: {e}")))?,
            media_type,
            size: size.max(0) as u64,
            pushed_at: from_millis(pushed_at),
        });
    }
    Ok(Some(tags))
}
