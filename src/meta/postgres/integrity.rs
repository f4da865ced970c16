//! Quarantined blobs and named leases (migrations/V4__quarantine.sql).

use std::time::{Duration, UNIX_EPOCH};

use deadpool_postgres::GenericClient;

use super::sql;
use crate::meta::sql_common::to_i64;
use crate::meta::{MetaError, Quarantined};
use crate::oci::Digest;

pub(crate) async fn quarantine<C: GenericClient>(
    c: &C,
    digest: &Digest,
    reason: &str,
) -> Result<bool, MetaError> {
    let n = sql::execute(
        c,
        "INSERT INTO quarantined_blobs (digest, reason) \
         SELECT digest, $2 FROM blobs WHERE digest = $1 \
         ON CONFLICT (digest) DO NOTHING",
        &[&digest.to_string(), &reason],
    )
    .await?;
    Ok(n > 0)
}

pub(crate) async fn release<C: GenericClient>(c: &C, digest: &Digest) -> Result<bool, MetaError> {
    let n = sql::execute(
        c,
        "DELETE FROM quarantined_blobs WHERE digest = $1",
        &[&digest.to_string()],
    )
    .await?;
    Ok(n > 0)
}

pub(crate) async fn is_quarantined<C: GenericClient>(
    c: &C,
    digest: &Digest,
) -> Result<bool, MetaError> {
    let row = sql::query_opt(
        c,
        "SELECT 1 FROM quarantined_blobs WHERE digest = $1",
        &[&digest.to_string()],
    )
    .await?;
    Ok(row.is_some())
}

pub(crate) async fn all<C: GenericClient>(c: &C) -> Result<Vec<Quarantined>, MetaError> {
    let rows = sql::query(
        c,
        "SELECT digest, reason, (extract(epoch FROM quarantined_at) * 1000)::bigint \
         FROM quarantined_blobs ORDER BY digest",
        &[],
    )
    .await?;
    rows.iter()
        .map(|row| {
            let millis: i64 = sql::get(row, 2)?;
            Ok(Quarantined {
                digest: sql::digest(row, 0)?,
                reason: sql::get(row, 1)?,
                since: UNIX_EPOCH + Duration::from_millis(u64::try_from(millis).unwrap_or(0)),
            })
        })
        .collect()
}

pub(crate) async fn try_lease<C: GenericClient>(
    c: &C,
    name: &str,
    holder: &str,
    ttl: Duration,
) -> Result<bool, MetaError> {
    let ttl_ms = to_i64(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX), "lease")?;
    let n = sql::execute(
        c,
        "INSERT INTO leases (name, holder, expires_at) \
         VALUES ($1, $2, now() + $3::bigint * interval '1 millisecond') \
         ON CONFLICT (name) DO UPDATE \
         SET holder = excluded.holder, expires_at = excluded.expires_at \
         WHERE leases.holder = excluded.holder OR leases.expires_at < now()",
        &[&name, &holder, &ttl_ms],
    )
    .await?;
    Ok(n > 0)
}

pub(crate) async fn release_lease<C: GenericClient>(
    c: &C,
    name: &str,
    holder: &str,
) -> Result<(), MetaError> {
    sql::execute(
        c,
        "DELETE FROM leases WHERE name = $1 AND holder = $2",
        &[&name, &holder],
    )
    .await?;
    Ok(())
}
