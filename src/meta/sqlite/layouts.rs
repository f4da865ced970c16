//! Image layouts published in IPFS (migrations-embedded/meta/V6__image_layouts.sql).

use std::time::Duration;

use cid::Cid;
use rusqlite::{params, Connection, OptionalExtension};

use super::error::db;
use super::sql::{from_millis, now_millis};
use crate::meta::sql_common::{corrupt, millis, parse_cid, parse_digest, queued};
use crate::meta::{ImageLayout, MetaError, QueuedLayout};
use crate::oci::{Digest, Reference, RepoName, Tag};

/// Call inside a write transaction that holds the CID lock shared (a recording write).
pub(super) fn record(
    c: &Connection,
    repo: &RepoName,
    tag: &Tag,
    manifest: &Digest,
    cid: &Cid,
) -> Result<bool, MetaError> {
    // One writer at a time: the tag cannot move between this check and the insert.
    let written = c
        .execute(
            "INSERT INTO image_layouts (repository_id, tag, manifest_digest, cid, published_at) \
             SELECT t.repository_id, t.name, t.manifest_digest, ?4, ?5 \
             FROM repositories r JOIN tags t ON t.repository_id = r.id \
             WHERE r.name = ?1 AND t.name = ?2 AND t.manifest_digest = ?3 \
             ON CONFLICT (repository_id, tag) DO UPDATE \
             SET manifest_digest = excluded.manifest_digest, cid = excluded.cid, \
                 published_at = excluded.published_at",
            params![
                repo.as_str(),
                tag.as_str(),
                manifest.to_string(),
                cid.to_string(),
                now_millis()
            ],
        )
        .map_err(db)?;
    Ok(written == 1)
}

pub(super) fn get(
    c: &Connection,
    repo: &RepoName,
    reference: &Reference,
) -> Result<Option<ImageLayout>, MetaError> {
    let (column, value) = match reference {
        Reference::Tag(tag) => ("l.tag", tag.as_str().to_owned()),
        Reference::Digest(digest) => ("l.manifest_digest", digest.to_string()),
    };
    let row = c
        .query_row(
            &format!(
                "SELECT l.tag, l.manifest_digest, l.cid \
                 FROM repositories r JOIN image_layouts l ON l.repository_id = r.id \
                 WHERE r.name = ?1 AND {column} = ?2 ORDER BY l.tag LIMIT 1"
            ),
            params![repo.as_str(), value],
            |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                ))
            },
        )
        .optional()
        .map_err(db)?;
    row.map(|(tag, manifest, cid)| {
        Ok(ImageLayout {
            tag,
            manifest: parse_digest(&manifest)?,
            cid: parse_cid(&cid)?,
        })
    })
    .transpose()
}

pub(super) fn unpublished(
    c: &Connection,
    repo: &RepoName,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<Tag>, MetaError> {
    let mut statement = c
        .prepare_cached(
            "SELECT t.name FROM repositories r JOIN tags t ON t.repository_id = r.id \
             LEFT JOIN image_layouts l ON l.repository_id = t.repository_id AND l.tag = t.name \
             WHERE r.name = ?1 AND t.name > ?2 AND l.tag IS NULL ORDER BY t.name LIMIT ?3",
        )
        .map_err(db)?;
    let rows = statement
        .query_map(
            params![repo.as_str(), after.unwrap_or(""), i64::from(limit)],
            |row| row.get::<_, String>(0),
        )
        .map_err(db)?;
    rows.map(|row| {
        let name = row.map_err(db)?;
        name.parse::<Tag>()
            .map_err(|e| corrupt(format!("stored tag {name:?}: {e}")))
    })
    .collect()
}

/// Call inside a write transaction.
pub(super) fn queue(
    c: &Connection,
    repo: &RepoName,
    tag: &Tag,
    manifest: &Digest,
) -> Result<(), MetaError> {
    let now = now_millis();
    c.execute(
        "INSERT INTO layout_queue (repository_id, tag, manifest_digest, queued_at, not_before) \
         SELECT t.repository_id, t.name, t.manifest_digest, ?4, ?4 \
         FROM repositories r JOIN tags t ON t.repository_id = r.id \
         WHERE r.name = ?1 AND t.name = ?2 AND t.manifest_digest = ?3 \
         ON CONFLICT (repository_id, tag) DO UPDATE \
         SET manifest_digest = excluded.manifest_digest, queued_at = excluded.queued_at, \
             attempts = 0, not_before = excluded.not_before",
        params![repo.as_str(), tag.as_str(), manifest.to_string(), now],
    )
    .map_err(db)?;
    Ok(())
}

/// Whether any queue entry is due now.
pub(super) fn any_due(c: &Connection) -> Result<bool, MetaError> {
    c.query_row(
        "SELECT EXISTS (SELECT 1 FROM layout_queue WHERE not_before <= ?1)",
        [now_millis()],
        |row| row.get(0),
    )
    .map_err(db)
}

/// Call inside a write transaction: one writer at a time, so what is selected is claimed.
pub(super) fn claim(
    c: &Connection,
    limit: u32,
    lease: Duration,
) -> Result<Vec<QueuedLayout>, MetaError> {
    let now = now_millis();
    let rows = {
        let mut statement = c
            .prepare_cached(
                "SELECT r.name, q.tag, q.manifest_digest, q.attempts, q.repository_id \
                 FROM layout_queue q JOIN repositories r ON r.id = q.repository_id \
                 WHERE q.not_before <= ?1 ORDER BY q.not_before LIMIT ?2",
            )
            .map_err(db)?;
        let rows = statement
            .query_map(params![now, i64::from(limit)], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, i32>(3)?,
                    row.get::<_, i64>(4)?,
                ))
            })
            .map_err(db)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(db)?
    };
    let until = now.saturating_add(millis(lease));
    let mut claimed = Vec::with_capacity(rows.len());
    for (repo, tag, manifest, attempts, repo_id) in rows {
        c.execute(
            "UPDATE layout_queue SET not_before = ?3 WHERE repository_id = ?1 AND tag = ?2",
            params![repo_id, tag, until],
        )
        .map_err(db)?;
        claimed.push(queued(&repo, &tag, parse_digest(&manifest)?, attempts)?);
    }
    Ok(claimed)
}

/// Call inside a write transaction.
pub(super) fn retry(
    c: &Connection,
    entry: &QueuedLayout,
    backoff: Duration,
) -> Result<(), MetaError> {
    c.execute(
        "UPDATE layout_queue SET attempts = attempts + 1, not_before = ?4 \
         WHERE repository_id = (SELECT id FROM repositories WHERE name = ?1) \
         AND tag = ?2 AND manifest_digest = ?3",
        params![
            entry.repo.as_str(),
            entry.tag.as_str(),
            entry.manifest.to_string(),
            now_millis().saturating_add(millis(backoff))
        ],
    )
    .map_err(db)?;
    Ok(())
}

/// Call inside a write transaction.
pub(super) fn dequeue(c: &Connection, entry: &QueuedLayout) -> Result<(), MetaError> {
    c.execute(
        "DELETE FROM layout_queue \
         WHERE repository_id = (SELECT id FROM repositories WHERE name = ?1) \
         AND tag = ?2 AND manifest_digest = ?3",
        params![
            entry.repo.as_str(),
            entry.tag.as_str(),
            entry.manifest.to_string()
        ],
    )
    .map_err(db)?;
    Ok(())
}

pub(super) fn count(c: &Connection) -> Result<u64, MetaError> {
    let count: i64 = c
        .query_row("SELECT count(*) FROM layout_queue", [], |row| row.get(0))
        .map_err(db)?;
    Ok(count.max(0) as u64)
}

pub(super) fn published(c: &Connection) -> Result<Vec<crate::meta::PublishedImage>, MetaError> {
    let mut statement = c
        .prepare_cached(
            "SELECT r.name, l.tag, l.cid FROM image_layouts l \
             JOIN repositories r ON r.id = l.repository_id ORDER BY r.name, l.tag",
        )
        .map_err(db)?;
    let rows = statement
        .query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
            ))
        })
        .map_err(db)?;
    rows.map(|row| {
        let (repo, tag, cid) = row.map_err(db)?;
        crate::meta::sql_common::published_image(repo, tag, parse_cid(&cid)?)
    })
    .collect()
}

pub(super) fn published_version(c: &Connection) -> Result<(u64, i64), MetaError> {
    let (count, latest): (i64, i64) = c
        .query_row(
            "SELECT count(*), coalesce(max(published_at), 0) FROM image_layouts",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .map_err(db)?;
    Ok((count.max(0) as u64, latest))
}

pub(super) fn federation_index(
    c: &Connection,
) -> Result<Option<crate::meta::FederationIndex>, MetaError> {
    type Row = (String, i64, Option<String>, Option<String>, Option<i64>);
    let row: Option<Row> = c
        .query_row(
            "SELECT cid, built_at, ipns_name, ipns_cid, ipns_published_at \
             FROM federation_index WHERE id = 1",
            [],
            |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                ))
            },
        )
        .optional()
        .map_err(db)?;
    let Some((cid, built_at, ipns_name, ipns_cid, ipns_at)) = row else {
        return Ok(None);
    };
    let ipns = match (ipns_name, ipns_cid, ipns_at) {
        (Some(name), Some(cid), Some(at)) => Some(crate::meta::IpnsRecord {
            name,
            cid: parse_cid(&cid)?,
            published_at: from_millis(at),
        }),
        _ => None,
    };
    Ok(Some(crate::meta::FederationIndex {
        cid: parse_cid(&cid)?,
        built_at: from_millis(built_at),
        ipns,
    }))
}

/// Call inside a write transaction that holds the CID lock shared (a recording write).
pub(super) fn record_federation_index(c: &Connection, cid: &Cid) -> Result<(), MetaError> {
    c.execute(
        "INSERT INTO federation_index (id, cid, built_at) VALUES (1, ?1, ?2) \
         ON CONFLICT (id) DO UPDATE SET cid = excluded.cid, built_at = excluded.built_at",
        params![cid.to_string(), now_millis()],
    )
    .map_err(db)?;
    Ok(())
}

/// Call inside a write transaction.
pub(super) fn record_ipns(c: &Connection, name: &str, cid: &Cid) -> Result<(), MetaError> {
    c.execute(
        "UPDATE federation_index SET ipns_name = ?1, ipns_cid = ?2, ipns_published_at = ?3 \
         WHERE id = 1",
        params![name, cid.to_string(), now_millis()],
    )
    .map_err(db)?;
    Ok(())
}
