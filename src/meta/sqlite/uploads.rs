//! Upload sessions and the chunks already stored for them.

use rusqlite::{params, Connection, OptionalExtension};
use uuid::Uuid;

use super::error::db;
use super::repos;
use super::sql::{from_millis, now_millis};
use crate::meta::sql_common::{chunk_span, corrupt, new_upload, parse_cid, to_i64, to_u64};
use crate::meta::{MetaError, Upload, UploadChunk};
use crate::oci::RepoName;

pub(super) fn create(
    c: &Connection,
    repo: &RepoName,
    hash_state: Vec<u8>,
) -> Result<Upload, MetaError> {
    let repo_id = repos::ensure(c, repo)?;
    let id = Uuid::new_v4();
    let now = now_millis();
    c.execute(
        "INSERT INTO upload_sessions (id, repository_id, hash_state, started_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?4)",
        params![id.to_string(), repo_id, hash_state, now],
    )
    .map_err(db)?;
    Ok(new_upload(id, repo, hash_state, from_millis(now)))
}

pub(super) fn get(c: &Connection, repo: &RepoName, id: Uuid) -> Result<Option<Upload>, MetaError> {
    let row: Option<(i64, Vec<u8>, i64, i64)> = c
        .prepare_cached(
            "SELECT s.bytes_received, s.hash_state, s.chunk_count, s.started_at \
             FROM upload_sessions s JOIN repositories r ON r.id = s.repository_id \
             WHERE s.id = ?1 AND r.name = ?2",
        )
        .map_err(db)?
        .query_row(params![id.to_string(), repo.as_str()], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })
        .optional()
        .map_err(db)?;
    let Some((bytes_received, hash_state, chunk_count, started_at)) = row else {
        return Ok(None);
    };
    Ok(Some(Upload {
        id,
        repository: repo.clone(),
        bytes_received: to_u64(bytes_received, "bytes received")?,
        hash_state,
        chunk_count: u32::try_from(chunk_count)
            .map_err(|_| corrupt(format_args!("chunk count {chunk_count}")))?,
        started_at: from_millis(started_at),
    }))
}

/// Records a chunk if the session holds exactly `chunk.offset` bytes. Inside a write
/// transaction, which no other append can interleave with.
pub(super) fn append(
    c: &Connection,
    id: Uuid,
    chunk: &UploadChunk,
    hash_state: &[u8],
) -> Result<bool, MetaError> {
    let (offset, size) = chunk_span(chunk)?;
    let updated = c
        .prepare_cached(
            "UPDATE upload_sessions \
             SET bytes_received = bytes_received + ?3, hash_state = ?4, \
                 chunk_count = chunk_count + CASE WHEN ?3 > 0 THEN 1 ELSE 0 END, updated_at = ?5 \
             WHERE id = ?1 AND bytes_received = ?2",
        )
        .map_err(db)?
        .execute(params![
            id.to_string(),
            offset,
            size,
            hash_state,
            now_millis()
        ])
        .map_err(db)?;
    if updated == 0 {
        return Ok(false);
    }
    if chunk.size > 0 {
        c.prepare_cached(
            "INSERT INTO upload_chunks (upload_id, byte_offset, size, cid) VALUES (?1, ?2, ?3, ?4)",
        )
        .map_err(db)?
        .execute(params![id.to_string(), offset, size, chunk.cid.to_string()])
        .map_err(db)?;
    }
    Ok(true)
}

/// Counts bytes kept by the blob store if the session holds exactly `offset` bytes.
pub(super) fn advance(
    c: &Connection,
    id: Uuid,
    offset: u64,
    size: u64,
    hash_state: &[u8],
) -> Result<bool, MetaError> {
    let (offset, size) = (
        to_i64(offset, "upload offset")?,
        to_i64(size, "chunk size")?,
    );
    let updated = c
        .prepare_cached(
            "UPDATE upload_sessions \
             SET bytes_received = bytes_received + ?3, hash_state = ?4, updated_at = ?5 \
             WHERE id = ?1 AND bytes_received = ?2",
        )
        .map_err(db)?
        .execute(params![
            id.to_string(),
            offset,
            size,
            hash_state,
            now_millis()
        ])
        .map_err(db)?;
    Ok(updated == 1)
}

pub(super) fn chunks(c: &Connection, id: Uuid) -> Result<Vec<UploadChunk>, MetaError> {
    let mut statement = c
        .prepare_cached(
            "SELECT byte_offset, size, cid FROM upload_chunks WHERE upload_id = ?1 \
             ORDER BY byte_offset",
        )
        .map_err(db)?;
    let rows = statement
        .query_map([id.to_string()], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, String>(2)?,
            ))
        })
        .map_err(db)?;
    rows.map(|row| {
        let (offset, size, cid) = row.map_err(db)?;
        Ok(UploadChunk {
            offset: to_u64(offset, "chunk offset")?,
            size: to_u64(size, "chunk size")?,
            cid: parse_cid(&cid)?,
        })
    })
    .collect()
}

/// Ends the session (only when it belongs to `repo`, if given) and returns its chunks.
/// Empty when there is no such session. Inside a write transaction.
pub(super) fn end(
    c: &Connection,
    id: Uuid,
    repo: Option<&RepoName>,
) -> Result<Vec<UploadChunk>, MetaError> {
    let exists = match repo {
        Some(repo) => c
            .prepare_cached(
                "SELECT 1 FROM upload_sessions s JOIN repositories r ON r.id = s.repository_id \
                 WHERE s.id = ?1 AND r.name = ?2",
            )
            .map_err(db)?
            .exists(params![id.to_string(), repo.as_str()]),
        None => c
            .prepare_cached("SELECT 1 FROM upload_sessions WHERE id = ?1")
            .map_err(db)?
            .exists([id.to_string()]),
    }
    .map_err(db)?;
    if !exists {
        return Ok(Vec::new());
    }
    let chunks = chunks(c, id)?;
    c.execute(
        "DELETE FROM upload_sessions WHERE id = ?1",
        [id.to_string()],
    )
    .map_err(db)?;
    Ok(chunks)
}
