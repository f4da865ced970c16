//! Image layouts published in IPFS (migrations/V6__image_layouts.sql).

use std::time::Duration;

use cid::Cid;
use deadpool_postgres::GenericClient;

use super::sql;
use crate::meta::sql_common::{millis, queued};
use crate::meta::{ImageLayout, MetaError, QueuedLayout};
use crate::oci::{Digest, Reference, RepoName, Tag};

/// Call inside a transaction.
pub(crate) async fn record<C: GenericClient>(
    c: &C,
    repo: &RepoName,
    tag: &Tag,
    manifest: &Digest,
    cid: &Cid,
) -> Result<bool, MetaError> {
    super::gc::lock_cid_shared(c, cid).await?;
    // Locking the tag row: a concurrent move of the tag either committed before (no row
    // matches) or waits for this transaction and then drops the layout by the trigger.
    let Some(row) = sql::query_opt(
        c,
        "SELECT t.repository_id FROM repositories r JOIN tags t ON t.repository_id = r.id \
         WHERE r.name = $1 AND t.name = $2 AND t.manifest_digest = $3 FOR UPDATE OF t",
        &[&repo.as_str(), &tag.as_str(), &manifest.to_string()],
    )
    .await?
    else {
        return Ok(false);
    };
    let repo_id: i64 = sql::get(&row, 0)?;
    let written = sql::execute(
        c,
        "INSERT INTO image_layouts (repository_id, tag, manifest_digest, cid) \
         VALUES ($1, $2, $3, $4) \
         ON CONFLICT (repository_id, tag) DO UPDATE \
         SET manifest_digest = EXCLUDED.manifest_digest, cid = EXCLUDED.cid, published_at = now()",
        &[
            &repo_id,
            &tag.as_str(),
            &manifest.to_string(),
            &cid.to_string(),
        ],
    )
    .await?;
    Ok(written == 1)
}

pub(crate) async fn get<C: GenericClient>(
    c: &C,
    repo: &RepoName,
    reference: &Reference,
) -> Result<Option<ImageLayout>, MetaError> {
    let (column, value) = match reference {
        Reference::Tag(tag) => ("l.tag", tag.as_str().to_owned()),
        Reference::Digest(digest) => ("l.manifest_digest", digest.to_string()),
    };
    let row = sql::query_opt(
        c,
        &format!(
            "SELECT l.tag, l.manifest_digest, l.cid \
             FROM repositories r JOIN image_layouts l ON l.repository_id = r.id \
             WHERE r.name = $1 AND {column} = $2 ORDER BY l.tag LIMIT 1"
        ),
        &[&repo.as_str(), &value],
    )
    .await?;
    row.map(|row| {
        Ok(ImageLayout {
            tag: sql::get(&row, 0)?,
            manifest: sql::digest(&row, 1)?,
            cid: sql::cid(&row, 2)?,
        })
    })
    .transpose()
}

pub(crate) async fn unpublished<C: GenericClient>(
    c: &C,
    repo: &RepoName,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<Tag>, MetaError> {
    let rows = sql::query(
        c,
        "SELECT t.name FROM repositories r JOIN tags t ON t.repository_id = r.id \
         LEFT JOIN image_layouts l ON l.repository_id = t.repository_id AND l.tag = t.name \
         WHERE r.name = $1 AND t.name > $2 AND l.tag IS NULL ORDER BY t.name LIMIT $3",
        &[&repo.as_str(), &after.unwrap_or(""), &i64::from(limit)],
    )
    .await?;
    rows.iter()
        .map(|row| {
            let name: String = sql::get(row, 0)?;
            name.parse::<Tag>()
                .map_err(|e| crate::meta::sql_common::corrupt(format!("stored tag {name:?}: {e}")))
        })
        .collect()
}

pub(crate) async fn queue<C: GenericClient>(
    c: &C,
    repo: &RepoName,
    tag: &Tag,
    manifest: &Digest,
) -> Result<(), MetaError> {
    sql::execute(
        c,
        "INSERT INTO layout_queue (repository_id, tag, manifest_digest) \
         SELECT t.repository_id, t.name, t.manifest_digest \
         FROM repositories r JOIN tags t ON t.repository_id = r.id \
         WHERE r.name = $1 AND t.name = $2 AND t.manifest_digest = $3 \
         ON CONFLICT (repository_id, tag) DO UPDATE \
         SET manifest_digest = EXCLUDED.manifest_digest, queued_at = now(), attempts = 0, \
             not_before = now()",
        &[&repo.as_str(), &tag.as_str(), &manifest.to_string()],
    )
    .await?;
    Ok(())
}

pub(crate) async fn claim<C: GenericClient>(
    c: &C,
    limit: u32,
    lease: Duration,
) -> Result<Vec<QueuedLayout>, MetaError> {
    let rows = sql::query(
        c,
        "WITH claimed AS ( \
             UPDATE layout_queue q SET not_before = now() + $2 * interval '1 millisecond' \
             WHERE (q.repository_id, q.tag) IN ( \
                 SELECT repository_id, tag FROM layout_queue WHERE not_before <= now() \
                 ORDER BY not_before LIMIT $1 FOR UPDATE SKIP LOCKED) \
             RETURNING q.repository_id, q.tag, q.manifest_digest, q.attempts) \
         SELECT r.name, c.tag, c.manifest_digest, c.attempts \
         FROM claimed c JOIN repositories r ON r.id = c.repository_id",
        &[&i64::from(limit), &(millis(lease) as f64)],
    )
    .await?;
    rows.iter()
        .map(|row| {
            let (repo, tag): (String, String) = (sql::get(row, 0)?, sql::get(row, 1)?);
            let attempts: i32 = sql::get(row, 3)?;
            queued(&repo, &tag, sql::digest(row, 2)?, attempts)
        })
        .collect()
}

pub(crate) async fn retry<C: GenericClient>(
    c: &C,
    entry: &QueuedLayout,
    backoff: Duration,
) -> Result<(), MetaError> {
    sql::execute(
        c,
        "UPDATE layout_queue q SET attempts = attempts + 1, \
             not_before = now() + $4 * interval '1 millisecond' \
         FROM repositories r \
         WHERE r.id = q.repository_id AND r.name = $1 AND q.tag = $2 AND q.manifest_digest = $3",
        &[
            &entry.repo.as_str(),
            &entry.tag.as_str(),
            &entry.manifest.to_string(),
            &(millis(backoff) as f64),
        ],
    )
    .await?;
    Ok(())
}

pub(crate) async fn dequeue<C: GenericClient>(
    c: &C,
    entry: &QueuedLayout,
) -> Result<(), MetaError> {
    sql::execute(
        c,
        "DELETE FROM layout_queue q USING repositories r \
         WHERE r.id = q.repository_id AND r.name = $1 AND q.tag = $2 AND q.manifest_digest = $3",
        &[
            &entry.repo.as_str(),
            &entry.tag.as_str(),
            &entry.manifest.to_string(),
        ],
    )
    .await?;
    Ok(())
}

pub(crate) async fn count<C: GenericClient>(c: &C) -> Result<u64, MetaError> {
    let row = sql::query_opt(c, "SELECT count(*) FROM layout_queue", &[]).await?;
    let count: i64 = row.map(|row| sql::get(&row, 0)).transpose()?.unwrap_or(0);
    Ok(count.max(0) as u64)
}

pub(crate) async fn published<C: GenericClient>(
    c: &C,
) -> Result<Vec<crate::meta::PublishedImage>, MetaError> {
    let rows = sql::query(
        c,
        "SELECT r.name, l.tag, l.cid FROM image_layouts l \
         JOIN repositories r ON r.id = l.repository_id ORDER BY r.name, l.tag",
        &[],
    )
    .await?;
    rows.iter()
        .map(|row| {
            crate::meta::sql_common::published_image(
                sql::get::<String>(row, 0)?,
                sql::get::<String>(row, 1)?,
                sql::cid(row, 2)?,
            )
        })
        .collect()
}

pub(crate) async fn published_version<C: GenericClient>(c: &C) -> Result<(u64, i64), MetaError> {
    let row = sql::query_opt(
        c,
        "SELECT count(*)::bigint, \
                coalesce((extract(epoch FROM max(published_at)) * 1000000)::bigint, 0) \
         FROM image_layouts",
        &[],
    )
    .await?
    .ok_or_else(|| MetaError::Backend("count returned no row".into()))?;
    let count: i64 = sql::get(&row, 0)?;
    Ok((count.max(0) as u64, sql::get(&row, 1)?))
}

pub(crate) async fn federation_index<C: GenericClient>(
    c: &C,
) -> Result<Option<crate::meta::FederationIndex>, MetaError> {
    let row = sql::query_opt(
        c,
        "SELECT cid, built_at, ipns_name, ipns_cid, ipns_published_at \
         FROM federation_index WHERE id = 1",
        &[],
    )
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let ipns_name: Option<String> = sql::get(&row, 2)?;
    let ipns_cid: Option<String> = sql::get(&row, 3)?;
    let ipns_at: Option<std::time::SystemTime> = sql::get(&row, 4)?;
    let ipns = match (ipns_name, ipns_cid, ipns_at) {
        (Some(name), Some(cid), Some(published_at)) => Some(crate::meta::IpnsRecord {
            name,
            cid: crate::meta::sql_common::parse_cid(&cid)?,
            published_at,
        }),
        _ => None,
    };
    Ok(Some(crate::meta::FederationIndex {
        cid: sql::cid(&row, 0)?,
        built_at: sql::get(&row, 1)?,
        ipns,
    }))
}

/// Call inside a transaction.
pub(crate) async fn record_federation_index<C: GenericClient>(
    c: &C,
    cid: &Cid,
) -> Result<(), MetaError> {
    super::gc::lock_cid_shared(c, cid).await?;
    sql::execute(
        c,
        "INSERT INTO federation_index (id, cid) VALUES (1, $1) \
         ON CONFLICT (id) DO UPDATE SET cid = EXCLUDED.cid, built_at = now()",
        &[&cid.to_string()],
    )
    .await?;
    Ok(())
}

pub(crate) async fn record_ipns<C: GenericClient>(
    c: &C,
    name: &str,
    cid: &Cid,
) -> Result<(), MetaError> {
    sql::execute(
        c,
        "UPDATE federation_index SET ipns_name = $1, ipns_cid = $2, ipns_published_at = now() \
         WHERE id = 1",
        &[&name, &cid.to_string()],
    )
    .await?;
    Ok(())
}
