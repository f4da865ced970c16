//! Blobs (one row per digest) and their links into repositories.

use cid::Cid;
use deadpool_postgres::GenericClient;

use super::repos;
use super::sql::{self, blob_record};
use crate::meta::sql_common::to_i64;
use crate::meta::{BlobRecord, MetaError};
use crate::oci::{Digest, RepoName};

pub(crate) async fn get<C: GenericClient>(
    c: &C,
    digest: &Digest,
) -> Result<Option<BlobRecord>, MetaError> {
    let row = sql::query_opt(
        c,
        "SELECT digest, cid, size, import_profile FROM blobs WHERE digest = $1",
        &[&digest.to_string()],
    )
    .await?;
    row.map(|r| blob_record(&r, 0)).transpose()
}

/// A blob whose bytes are the DAG under `cid` (several digests can share one only if their
/// bytes are identical, so any of them describes the content).
pub(crate) async fn by_cid<C: GenericClient>(
    c: &C,
    cid: &Cid,
) -> Result<Option<BlobRecord>, MetaError> {
    let row = sql::query_opt(
        c,
        "SELECT digest, cid, size, import_profile FROM blobs WHERE cid = $1 LIMIT 1",
        &[&cid.to_string()],
    )
    .await?;
    row.map(|r| blob_record(&r, 0)).transpose()
}

/// The blob as seen from `repo` (unless quarantined). With `lock`, the blob row is held (FOR KEY SHARE) until the
/// transaction ends, so it cannot be deleted meanwhile.
pub(crate) async fn linked<C: GenericClient>(
    c: &C,
    repo: &RepoName,
    digest: &Digest,
    lock: bool,
) -> Result<Option<BlobRecord>, MetaError> {
    let sql = if lock {
        "SELECT b.digest, b.cid, b.size, b.import_profile \
         FROM repositories r \
         JOIN repository_blobs rb ON rb.repository_id = r.id \
         JOIN blobs b ON b.digest = rb.digest \
         WHERE r.name = $1 AND rb.digest = $2 \
         AND NOT EXISTS (SELECT 1 FROM quarantined_blobs q WHERE q.digest = b.digest) \
         FOR KEY SHARE OF b"
    } else {
        "SELECT b.digest, b.cid, b.size, b.import_profile \
         FROM repositories r \
         JOIN repository_blobs rb ON rb.repository_id = r.id \
         JOIN blobs b ON b.digest = rb.digest \
         WHERE r.name = $1 AND rb.digest = $2 \
         AND NOT EXISTS (SELECT 1 FROM quarantined_blobs q WHERE q.digest = b.digest)"
    };
    let row = sql::query_opt(c, sql, &[&repo.as_str(), &digest.to_string()]).await?;
    row.map(|r| blob_record(&r, 0)).transpose()
}

/// Records the blob unless its digest is stored already, links it into `repo` (creating the
/// repository), and returns the stored record. Call inside a transaction.
pub(crate) async fn commit<C: GenericClient>(
    c: &C,
    repo: &RepoName,
    blob: BlobRecord,
) -> Result<BlobRecord, MetaError> {
    let repo_id = repos::ensure(c, repo).await?;
    let digest = blob.digest.to_string();
    super::gc::lock_cid_shared(c, &blob.cid).await?;
    // GC may delete an unlinked row between our INSERT (which saw it) and our SELECT: the
    // next round then inserts it afresh.
    let mut found = None;
    for _ in 0..3 {
        sql::execute(
            c,
            "INSERT INTO blobs (digest, cid, size, import_profile) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (digest) DO NOTHING",
            &[
                &digest,
                &blob.cid.to_string(),
                &to_i64(blob.size, "blob size")?,
                &blob.import_profile,
            ],
        )
        .await?;
        // A new statement: sees the row whether we or a concurrent commit inserted it.
        found = sql::query_opt(
            c,
            "SELECT digest, cid, size, import_profile FROM blobs WHERE digest = $1 FOR KEY SHARE",
            &[&digest],
        )
        .await?;
        if found.is_some() {
            break;
        }
    }
    let row = found.ok_or_else(|| {
        MetaError::Backend(format!(
            "blob {digest} was deleted repeatedly while being committed"
        ))
    })?;
    let stored = blob_record(&row, 0)?;
    link(c, repo_id, &digest).await?;
    Ok(stored)
}

pub(crate) async fn link<C: GenericClient>(
    c: &C,
    repo_id: i64,
    digest: &str,
) -> Result<(), MetaError> {
    sql::execute(
        c,
        // Pushing or mounting again restarts the link's grace period (see gc.rs).
        "INSERT INTO repository_blobs (repository_id, digest) VALUES ($1, $2) \
         ON CONFLICT (repository_id, digest) DO UPDATE SET created_at = now()",
        &[&repo_id, &digest],
    )
    .await?;
    Ok(())
}

pub(crate) async fn unlink<C: GenericClient>(
    c: &C,
    repo: &RepoName,
    digest: &Digest,
) -> Result<bool, MetaError> {
    let n = sql::execute(
        c,
        "DELETE FROM repository_blobs rb USING repositories r \
         WHERE rb.repository_id = r.id AND r.name = $1 AND rb.digest = $2",
        &[&repo.as_str(), &digest.to_string()],
    )
    .await?;
    Ok(n > 0)
}

pub(crate) async fn cid_in_use<C: GenericClient>(c: &C, cid: &Cid) -> Result<bool, MetaError> {
    let row = sql::query_opt(
        c,
        "SELECT EXISTS (SELECT 1 FROM blobs WHERE cid = $1) \
             OR EXISTS (SELECT 1 FROM upload_chunks WHERE cid = $1) \
             OR EXISTS (SELECT 1 FROM image_layouts WHERE cid = $1) \
             OR EXISTS (SELECT 1 FROM federation_index WHERE cid = $1) \
             OR EXISTS (SELECT 1 FROM pending_pins WHERE cid = $1)",
        &[&cid.to_string()],
    )
    .await?
    .ok_or_else(|| MetaError::Backend("EXISTS returned no row".into()))?;
    sql::get(&row, 0)
}
