//! Statement helpers (prepared once per connection) and row decoding.

use cid::Cid;
use deadpool_postgres::GenericClient;
use tokio_postgres::types::{FromSql, ToSql};
use tokio_postgres::Row;

use super::error::db;
use crate::meta::sql_common::{corrupt, parse_cid, parse_digest, to_u64};
use crate::meta::{BlobRecord, MetaError, UploadChunk};
use crate::oci::Digest;

pub(crate) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

pub(crate) async fn query<C: GenericClient>(
    c: &C,
    sql: &str,
    params: Params<'_>,
) -> Result<Vec<Row>, MetaError> {
    let statement = c.prepare_cached(sql).await.map_err(db)?;
    c.query(&statement, params).await.map_err(db)
}

pub(crate) async fn query_opt<C: GenericClient>(
    c: &C,
    sql: &str,
    params: Params<'_>,
) -> Result<Option<Row>, MetaError> {
    let statement = c.prepare_cached(sql).await.map_err(db)?;
    c.query_opt(&statement, params).await.map_err(db)
}

pub(crate) async fn execute<C: GenericClient>(
    c: &C,
    sql: &str,
    params: Params<'_>,
) -> Result<u64, MetaError> {
    let statement = c.prepare_cached(sql).await.map_err(db)?;
    c.execute(&statement, params).await.map_err(db)
}

/// A column, or `Corrupt` when it cannot be read as `T`.
pub(crate) fn get<'a, T: FromSql<'a>>(row: &'a Row, idx: usize) -> Result<T, MetaError> {
    row.try_get(idx)
        .map_err(|e| corrupt(format_args!("column {idx}: {e}")))
}

pub(crate) fn digest(row: &Row, idx: usize) -> Result<Digest, MetaError> {
    parse_digest(get(row, idx)?)
}

pub(crate) fn opt_digest(row: &Row, idx: usize) -> Result<Option<Digest>, MetaError> {
    get::<Option<&str>>(row, idx)?.map(parse_digest).transpose()
}

pub(crate) fn cid(row: &Row, idx: usize) -> Result<Cid, MetaError> {
    parse_cid(get(row, idx)?)
}

/// A non-negative `bigint` as `u64`.
pub(crate) fn size(row: &Row, idx: usize) -> Result<u64, MetaError> {
    to_u64(get(row, idx)?, "size")
}

/// Columns `digest, cid, size, import_profile` starting at `at`.
pub(crate) fn blob_record(row: &Row, at: usize) -> Result<BlobRecord, MetaError> {
    Ok(BlobRecord {
        digest: digest(row, at)?,
        cid: cid(row, at + 1)?,
        size: size(row, at + 2)?,
        import_profile: get(row, at + 3)?,
    })
}

/// Columns `byte_offset, size, cid`.
pub(crate) fn upload_chunk(row: &Row) -> Result<UploadChunk, MetaError> {
    Ok(UploadChunk {
        offset: size(row, 0)?,
        size: size(row, 1)?,
        cid: cid(row, 2)?,
    })
}
