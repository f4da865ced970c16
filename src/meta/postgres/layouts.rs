//! Image layouts published in IPFS (migrations/V6__image_layouts.sql).

use cid::Cid;
use deadpool_postgres::GenericClient;

use super::sql;
use crate::meta::{ImageLayout, MetaError};
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
