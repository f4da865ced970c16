//! Blobs (one row per digest) and their links into repositories.

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::error::db;
use super::repos;
use super::sql::now_millis;
use crate::meta::sql_common::{parse_cid, parse_digest, to_i64, to_u64};
use crate::meta::{BlobRecord, MetaError};
use crate::oci::{Digest, RepoName};

const COLUMNS: &str = "b.digest, b.cid, b.size, b.import_profile";

pub(super) fn record(row: &Row) -> rusqlite::Result<(String, String, i64, String)> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
}

pub(super) fn to_record(
    (digest, cid, size, import_profile): (String, String, i64, String),
) -> Result<BlobRecord, MetaError> {
    Ok(BlobRecord {
        digest: parse_digest(&digest)?,
        cid: parse_cid(&cid)?,
        size: to_u64(size, "blob size")?,
        import_profile,
    })
}

/// A blob by its digest.
pub(super) fn get(c: &Connection, digest: &str) -> Result<Option<BlobRecord>, MetaError> {
    one(
        c,
        &format!("SELECT {COLUMNS} FROM blobs b WHERE b.digest = ?1"),
        digest,
    )
}

/// A blob stored under `cid` (any one, should several digests share it).
pub(super) fn by_cid(c: &Connection, cid: &str) -> Result<Option<BlobRecord>, MetaError> {
    one(
        c,
        &format!("SELECT {COLUMNS} FROM blobs b WHERE b.cid = ?1 LIMIT 1"),
        cid,
    )
}

fn one(c: &Connection, sql: &str, key: &str) -> Result<Option<BlobRecord>, MetaError> {
    c.prepare_cached(sql)
        .map_err(db)?
        .query_row([key], record)
        .optional()
        .map_err(db)?
        .map(to_record)
        .transpose()
}

/// The blob as seen from `repo`: only when linked there and not quarantined.
pub(super) fn linked(
    c: &Connection,
    repo: &RepoName,
    digest: &Digest,
) -> Result<Option<BlobRecord>, MetaError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM repositories r \
         JOIN repository_blobs rb ON rb.repository_id = r.id \
         JOIN blobs b ON b.digest = rb.digest \
         WHERE r.name = ?1 AND rb.digest = ?2 \
         AND NOT EXISTS (SELECT 1 FROM quarantined_blobs q WHERE q.digest = b.digest)"
    );
    c.prepare_cached(&sql)
        .map_err(db)?
        .query_row(params![repo.as_str(), digest.to_string()], record)
        .optional()
        .map_err(db)?
        .map(to_record)
        .transpose()
}

/// Records the blob unless its digest is stored already, links it into `repo`, and returns
/// the stored record. Inside a write transaction.
pub(super) fn commit(
    c: &Connection,
    repo: &RepoName,
    blob: &BlobRecord,
) -> Result<BlobRecord, MetaError> {
    let repo_id = repos::ensure(c, repo)?;
    let digest = blob.digest.to_string();
    c.prepare_cached(
        "INSERT INTO blobs (digest, cid, size, import_profile, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (digest) DO NOTHING",
    )
    .map_err(db)?
    .execute(params![
        digest,
        blob.cid.to_string(),
        to_i64(blob.size, "blob size")?,
        blob.import_profile,
        now_millis()
    ])
    .map_err(db)?;
    let stored = get(c, &digest)?.ok_or_else(|| {
        MetaError::Backend(format!("blob {digest} vanished while being committed"))
    })?;
    link(c, repo_id, &digest)?;
    Ok(stored)
}

pub(super) fn link(c: &Connection, repo_id: i64, digest: &str) -> Result<(), MetaError> {
    c.prepare_cached(
        // Pushing or mounting again restarts the link's grace period, as on PostgreSQL.
        "INSERT INTO repository_blobs (repository_id, digest, created_at) VALUES (?1, ?2, ?3) \
         ON CONFLICT (repository_id, digest) DO UPDATE SET created_at = excluded.created_at",
    )
    .map_err(db)?
    .execute(params![repo_id, digest, now_millis()])
    .map(drop)
    .map_err(db)
}
