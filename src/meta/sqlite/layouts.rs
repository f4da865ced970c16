//! Image layouts published in IPFS (migrations-embedded/meta/V6__image_layouts.sql).

use cid::Cid;
use rusqlite::{params, Connection, OptionalExtension};

use super::error::db;
use super::sql::now_millis;
use crate::meta::sql_common::{corrupt, parse_cid, parse_digest};
use crate::meta::{ImageLayout, MetaError};
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
