//! Quarantined blobs and named leases (migrations-embedded/meta/V4__quarantine.sql).

use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use super::error::db;
use super::sql::{from_millis, now_millis};
use crate::meta::sql_common::parse_digest;
use crate::meta::{MetaError, Quarantined};

pub(super) fn quarantine(c: &Connection, digest: &str, reason: &str) -> Result<bool, MetaError> {
    let n = c
        .prepare_cached(
            "INSERT INTO quarantined_blobs (digest, reason, quarantined_at) \
             SELECT digest, ?2, ?3 FROM blobs WHERE digest = ?1 \
             ON CONFLICT (digest) DO NOTHING",
        )
        .map_err(db)?
        .execute(params![digest, reason, now_millis()])
        .map_err(db)?;
    Ok(n > 0)
}

pub(super) fn release(c: &Connection, digest: &str) -> Result<bool, MetaError> {
    let n = c
        .prepare_cached("DELETE FROM quarantined_blobs WHERE digest = ?1")
        .map_err(db)?
        .execute([digest])
        .map_err(db)?;
    Ok(n > 0)
}

pub(super) fn is_quarantined(c: &Connection, digest: &str) -> Result<bool, MetaError> {
    Ok(
        c.prepare_cached("SELECT 1 FROM quarantined_blobs WHERE digest = ?1")
            .map_err(db)?
            .query_row([digest], |_| Ok(()))
            .optional()
            .map_err(db)?
            .is_some(),
    )
}

pub(super) fn all(c: &Connection) -> Result<Vec<Quarantined>, MetaError> {
    let mut statement = c
        .prepare_cached(
            "SELECT digest, reason, quarantined_at FROM quarantined_blobs ORDER BY digest",
        )
        .map_err(db)?;
    let rows = statement
        .query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, i64>(2)?,
            ))
        })
        .map_err(db)?;
    rows.map(|row| {
        let (digest, reason, since) = row.map_err(db)?;
        Ok(Quarantined {
            digest: parse_digest(&digest)?,
            reason,
            since: from_millis(since),
        })
    })
    .collect()
}

pub(super) fn try_lease(
    c: &Connection,
    name: &str,
    holder: &str,
    ttl: Duration,
) -> Result<bool, MetaError> {
    let now = now_millis();
    let expires = now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
    let n = c
        .prepare_cached(
            "INSERT INTO leases (name, holder, expires_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (name) DO UPDATE \
             SET holder = excluded.holder, expires_at = excluded.expires_at \
             WHERE leases.holder = excluded.holder OR leases.expires_at < ?4",
        )
        .map_err(db)?
        .execute(params![name, holder, expires, now])
        .map_err(db)?;
    Ok(n > 0)
}

pub(super) fn release_lease(c: &Connection, name: &str, holder: &str) -> Result<(), MetaError> {
    c.prepare_cached("DELETE FROM leases WHERE name = ?1 AND holder = ?2")
        .map_err(db)?
        .execute([name, holder])
        .map_err(db)?;
    Ok(())
}
