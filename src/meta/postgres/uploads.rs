//! Upload sessions and the chunks already stored for them.

use deadpool_postgres::GenericClient;
use uuid::Uuid;

use super::sql::{self, get, upload_chunk};
use super::{blobs, gc, repos};
use crate::meta::sql_common::{chunk_span, completed_chunks, new_upload, released_chunks, to_i64};
use crate::meta::{BlobRecord, MetaError, PendingPin, Upload, UploadChunk};
use crate::oci::RepoName;

pub(crate) async fn create<C: GenericClient>(
    c: &C,
    repo: &RepoName,
    hash_state: Vec<u8>,
) -> Result<Upload, MetaError> {
    let repo_id = repos::ensure(c, repo).await?;
    let id = Uuid::new_v4();
    let row = sql::query_opt(
        c,
        "INSERT INTO upload_sessions (id, repository_id, hash_state) VALUES ($1, $2, $3) \
         RETURNING started_at",
        &[&id, &repo_id, &hash_state],
    )
    .await?
    .ok_or_else(|| MetaError::Backend("INSERT RETURNING returned no row".into()))?;
    Ok(new_upload(id, repo, hash_state, get(&row, 0)?))
}

pub(crate) async fn get_upload<C: GenericClient>(
    c: &C,
    repo: &RepoName,
    id: Uuid,
) -> Result<Option<Upload>, MetaError> {
    let row = sql::query_opt(
        c,
        "SELECT s.bytes_received, s.hash_state, s.chunk_count, s.started_at \
         FROM upload_sessions s JOIN repositories r ON r.id = s.repository_id \
         WHERE s.id = $1 AND r.name = $2",
        &[&id, &repo.as_str()],
    )
    .await?;
    let Some(row) = row else { return Ok(None) };
    let chunk_count: i32 = get(&row, 2)?;
    Ok(Some(Upload {
        id,
        repository: repo.clone(),
        bytes_received: sql::size(&row, 0)?,
        hash_state: get(&row, 1)?,
        chunk_count: u32::try_from(chunk_count)
            .map_err(|_| MetaError::Corrupt(format!("negative chunk count {chunk_count}")))?,
        started_at: get(&row, 3)?,
    }))
}

/// Compare-and-swap on `bytes_received`; call inside a transaction. A chunk of no bytes only
/// advances the hash state: it is not recorded (it holds nothing to keep pinned).
pub(crate) async fn append<C: GenericClient>(
    c: &C,
    id: Uuid,
    chunk: &UploadChunk,
    hash_state: &[u8],
) -> Result<bool, MetaError> {
    let (offset, size) = chunk_span(chunk)?;
    let updated = sql::execute(
        c,
        "UPDATE upload_sessions \
         SET bytes_received = bytes_received + $3, hash_state = $4, \
             chunk_count = chunk_count + CASE WHEN $3 > 0 THEN 1 ELSE 0 END, updated_at = now() \
         WHERE id = $1 AND bytes_received = $2",
        &[&id, &offset, &size, &hash_state],
    )
    .await?;
    if updated == 0 {
        return Ok(false);
    }
    if chunk.size > 0 {
        super::gc::lock_cid_shared(c, &chunk.cid).await?;
        sql::execute(
            c,
            "INSERT INTO upload_chunks (upload_id, byte_offset, size, cid) VALUES ($1, $2, $3, $4)",
            &[&id, &offset, &size, &chunk.cid.to_string()],
        )
        .await?;
    }
    Ok(true)
}

/// Counts bytes kept by the blob store if the session holds exactly `offset` bytes (one
/// statement: its compare-and-swap needs no transaction).
pub(crate) async fn advance<C: GenericClient>(
    c: &C,
    id: Uuid,
    offset: u64,
    size: u64,
    hash_state: &[u8],
) -> Result<bool, MetaError> {
    let (offset, size) = (
        to_i64(offset, "upload offset")?,
        to_i64(size, "chunk size")?,
    );
    let updated = sql::execute(
        c,
        "UPDATE upload_sessions \
         SET bytes_received = bytes_received + $3, hash_state = $4, updated_at = now() \
         WHERE id = $1 AND bytes_received = $2",
        &[&id, &offset, &size, &hash_state],
    )
    .await?;
    Ok(updated == 1)
}

pub(crate) async fn chunks<C: GenericClient>(
    c: &C,
    id: Uuid,
) -> Result<Vec<UploadChunk>, MetaError> {
    let rows = sql::query(
        c,
        "SELECT byte_offset, size, cid FROM upload_chunks WHERE upload_id = $1 ORDER BY byte_offset",
        &[&id],
    )
    .await?;
    rows.iter().map(upload_chunk).collect()
}

/// Ends the session (when `repo` is given, only if it belongs there) and returns its chunks.
/// Call inside a transaction. The session row is locked first, so no append can land between
/// reading the chunks and deleting them.
async fn end<C: GenericClient>(
    c: &C,
    id: Uuid,
    repo: Option<&RepoName>,
) -> Result<Vec<UploadChunk>, MetaError> {
    let locked =
        match repo {
            Some(repo) => sql::query_opt(
                c,
                "SELECT 1 FROM upload_sessions s JOIN repositories r ON r.id = s.repository_id \
                 WHERE s.id = $1 AND r.name = $2 FOR UPDATE OF s",
                &[&id, &repo.as_str()],
            )
            .await?,
            None => {
                sql::query_opt(
                    c,
                    "SELECT 1 FROM upload_sessions WHERE id = $1 FOR UPDATE",
                    &[&id],
                )
                .await?
            }
        };
    if locked.is_none() {
        return Ok(Vec::new());
    }
    let rows = sql::query(
        c,
        "DELETE FROM upload_chunks WHERE upload_id = $1 RETURNING byte_offset, size, cid",
        &[&id],
    )
    .await?;
    let mut chunks = rows
        .iter()
        .map(upload_chunk)
        .collect::<Result<Vec<_>, _>>()?;
    chunks.sort_by_key(|c| c.offset);
    sql::execute(c, "DELETE FROM upload_sessions WHERE id = $1", &[&id]).await?;
    Ok(chunks)
}

/// Call inside a transaction. When the session is already gone (completed or cancelled
/// elsewhere) the blob is still committed and no chunks are returned.
pub(crate) async fn complete<C: GenericClient>(
    c: &C,
    id: Uuid,
    repo: &RepoName,
    blob: BlobRecord,
    pending: Option<&PendingPin>,
) -> Result<(BlobRecord, Vec<UploadChunk>), MetaError> {
    let chunks = end(c, id, Some(repo)).await?;
    let stored = blobs::commit(c, repo, blob).await?;
    let (held, queued) = completed_chunks(&chunks, &stored.cid, pending);
    if let Some(pending) = pending {
        gc::hold_for_pin(c, &pending.root, &held).await?;
    }
    gc::queue_unpins(c, &queued).await?;
    Ok((stored, chunks))
}

/// Call inside a transaction.
pub(crate) async fn delete<C: GenericClient>(
    c: &C,
    id: Uuid,
) -> Result<Vec<UploadChunk>, MetaError> {
    let chunks = end(c, id, None).await?;
    gc::queue_unpins(c, &released_chunks(&chunks, None)).await?;
    Ok(chunks)
}
