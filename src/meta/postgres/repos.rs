//! Repositories: lookup, creation on first use, catalog.

use std::time::SystemTime;

use deadpool_postgres::GenericClient;

use super::sql::{self, get};
use crate::meta::users::RepoFilter;
use crate::meta::{MetaError, Page, RepositorySummary, TagSummary};
use crate::oci::RepoName;

pub(crate) async fn id<C: GenericClient>(c: &C, repo: &RepoName) -> Result<Option<i64>, MetaError> {
    let row = sql::query_opt(
        c,
        "SELECT id FROM repositories WHERE name = $1",
        &[&repo.as_str()],
    )
    .await?;
    row.map(|r| get(&r, 0)).transpose()
}

/// The repository's id, creating it if needed.
///
/// Under READ COMMITTED each statement sees what committed before it, so when a concurrent
/// transaction creates the same name first, our INSERT waits for it, does nothing, and the
/// next SELECT sees its row.
pub(crate) async fn ensure<C: GenericClient>(c: &C, repo: &RepoName) -> Result<i64, MetaError> {
    for _ in 0..3 {
        if let Some(id) = id(c, repo).await? {
            return Ok(id);
        }
        let inserted = sql::query_opt(
            c,
            "INSERT INTO repositories (name) VALUES ($1) ON CONFLICT (name) DO NOTHING RETURNING id",
            &[&repo.as_str()],
        )
        .await?;
        if let Some(row) = inserted {
            return get(&row, 0);
        }
    }
    Err(MetaError::Backend(format!(
        "repository {repo} could neither be found nor created"
    )))
}

pub(crate) async fn catalog<C: GenericClient>(
    c: &C,
    page: &Page,
) -> Result<Vec<String>, MetaError> {
    let after = page.last.as_deref().unwrap_or("");
    let limit = page.n.map(i64::from);
    // `name > ''` holds for every row (names are never empty), so the first page is the
    // same index range scan as the others. `LIMIT NULL` means no limit.
    let rows = sql::query(
        c,
        "SELECT name FROM repositories WHERE name > $1 ORDER BY name LIMIT $2",
        &[&after, &limit],
    )
    .await?;
    rows.iter().map(|r| get(r, 0)).collect()
}

/// The repositories' summaries for a listing; see [`crate::meta::MetadataStore::repository_summaries`].
pub(crate) async fn summaries<C: GenericClient>(
    c: &C,
    page: &Page,
    filter: &RepoFilter,
    search: &str,
) -> Result<Vec<RepositorySummary>, MetaError> {
    let after = page.last.as_deref().unwrap_or("");
    let limit = page.n.map(i64::from);
    // The catalog's keyset scan and access filter; each row's figures come from the
    // per-repository indexes of tags, manifests and blob links.
    let rows = sql::query(
        c,
        "SELECT r.name,
                (SELECT count(*) FROM tags t WHERE t.repository_id = r.id),
                (SELECT coalesce(sum(b.size), 0)::bigint
                   FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest
                  WHERE rb.repository_id = r.id),
                greatest((SELECT max(t.updated_at) FROM tags t WHERE t.repository_id = r.id),
                         (SELECT max(m.created_at) FROM manifests m
                           WHERE m.repository_id = r.id))
         FROM repositories r
         WHERE r.name > $1
           AND ($3 OR r.name = ANY($4::text[])
                OR EXISTS (SELECT 1 FROM unnest($5::text[]) p WHERE starts_with(r.name, p)))
           AND strpos(r.name, $6) > 0
         ORDER BY r.name LIMIT $2",
        &[
            &after,
            &limit,
            &filter.all,
            &filter.names,
            &filter.prefixes,
            &search,
        ],
    )
    .await?;
    rows.iter()
        .map(|r| {
            Ok(RepositorySummary {
                name: get(r, 0)?,
                tags: get::<i64>(r, 1)?.max(0) as u64,
                size: get::<i64>(r, 2)?.max(0) as u64,
                last_push: get::<Option<SystemTime>>(r, 3)?,
            })
        })
        .collect()
}

/// A page of the repository's tags; see [`crate::meta::MetadataStore::tag_summaries`].
pub(crate) async fn tag_summaries<C: GenericClient>(
    c: &C,
    repo: &RepoName,
    page: &Page,
) -> Result<Option<Vec<TagSummary>>, MetaError> {
    let Some(repo_id) = id(c, repo).await? else {
        return Ok(None);
    };
    let after = page.last.as_deref().unwrap_or("");
    let limit = page.n.map(i64::from);
    // `reach` follows each tag's manifest to its children (an index's images; UNION ends
    // the walk however manifests refer to each other), whose blobs are then summed once.
    let rows = sql::query(
        c,
        "WITH RECURSIVE page AS (
             SELECT t.name, t.manifest_digest, t.updated_at FROM tags t
              WHERE t.repository_id = $1 AND t.name > $2 ORDER BY t.name LIMIT $3
         ), reach(tag, digest) AS (
             SELECT name, manifest_digest FROM page
             UNION
             SELECT reach.tag, mr.referenced_digest FROM reach
               JOIN manifest_references mr
                 ON mr.repository_id = $1 AND mr.manifest_digest = reach.digest
                AND mr.kind = 'manifest'
         )
         SELECT p.name, p.manifest_digest, m.media_type, p.updated_at,
                (SELECT coalesce(sum(b.size), 0)::bigint FROM blobs b
                  WHERE b.digest IN (
                      SELECT mr.referenced_digest FROM reach r
                        JOIN manifest_references mr
                          ON mr.repository_id = $1 AND mr.manifest_digest = r.digest
                         AND mr.kind = 'blob'
                       WHERE r.tag = p.name))
           FROM page p
           JOIN manifests m ON m.repository_id = $1 AND m.digest = p.manifest_digest
          ORDER BY p.name",
        &[&repo_id, &after, &limit],
    )
    .await?;
    rows.iter()
        .map(|r| {
            Ok(TagSummary {
                name: get(r, 0)?,
                digest: sql::digest(r, 1)?,
                media_type: get(r, 2)?,
                pushed_at: get(r, 3)?,
                size: get::<i64>(r, 4)?.max(0) as u64,
            })
        })
        .collect::<Result<_, MetaError>>()
        .map(Some)
}
