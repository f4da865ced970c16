//! The notifications outbox (migrations-embedded/meta/V5__notifications.sql).

use std::time::Duration;

use rusqlite::{params, Connection, Row};

use super::error::db;
use super::sql::now_millis;
use crate::meta::outbox::{Notice, OutboxCounts, OutboxEntry, Retry};
use crate::meta::sql_common::{millis, outbox_entry, to_u64};
use crate::meta::MetaError;

const ENTRY_COLUMNS: &str =
    "id, endpoint, event, attempts, created_at, failed_at IS NOT NULL, last_error";

/// Records `notices` (inside the caller's transaction).
pub(crate) fn record(c: &Connection, notices: &[Notice]) -> Result<(), MetaError> {
    if notices.is_empty() {
        return Ok(());
    }
    let now = now_millis();
    let mut insert = c
        .prepare_cached(
            "INSERT INTO notification_outbox (endpoint, event, created_at, next_attempt) \
             VALUES (?1, ?2, ?3, ?3)",
        )
        .map_err(db)?;
    for notice in notices {
        insert
            .execute(params![notice.endpoint, notice.event, now])
            .map_err(db)?;
    }
    Ok(())
}

/// An entry's columns as SQLite gives them ([`ENTRY_COLUMNS`]).
type RawEntry = (i64, String, String, i64, i64, bool, Option<String>);

/// Records `notices` when `happened` (a change that may find nothing to change); returns
/// `happened`.
pub(crate) fn record_if(
    c: &Connection,
    happened: bool,
    notices: &[Notice],
) -> Result<bool, MetaError> {
    if happened {
        record(c, notices)?;
    }
    Ok(happened)
}

fn entry(row: &Row<'_>) -> rusqlite::Result<RawEntry> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
    ))
}

fn entries(
    rows: impl Iterator<Item = rusqlite::Result<RawEntry>>,
) -> Result<Vec<OutboxEntry>, MetaError> {
    rows.map(|row| {
        let (id, endpoint, event, attempts, created, failed, error) = row.map_err(db)?;
        outbox_entry(id, endpoint, event, attempts, created, failed, error)
    })
    .collect()
}

pub(crate) fn claim(
    c: &Connection,
    endpoint: &str,
    holder: &str,
    lease: Duration,
    limit: u32,
) -> Result<Vec<OutboxEntry>, MetaError> {
    let now = now_millis();
    let sql = format!(
        "UPDATE notification_outbox SET claimed_by = ?2, claimed_until = ?3 \
         WHERE id IN (SELECT id FROM notification_outbox \
             WHERE endpoint = ?1 AND failed_at IS NULL AND next_attempt <= ?4 \
             AND (claimed_until IS NULL OR claimed_until < ?4) \
             ORDER BY id LIMIT ?5) \
         RETURNING {ENTRY_COLUMNS}"
    );
    let mut statement = c.prepare_cached(&sql).map_err(db)?;
    let rows = statement
        .query_map(
            params![
                endpoint,
                holder,
                now.saturating_add(millis(lease)),
                now,
                i64::from(limit)
            ],
            entry,
        )
        .map_err(db)?;
    let mut claimed = entries(rows)?;
    claimed.sort_by_key(|e| e.id);
    Ok(claimed)
}

pub(crate) fn delivered(c: &Connection, holder: &str, ids: &[i64]) -> Result<(), MetaError> {
    let mut delete = c
        .prepare_cached("DELETE FROM notification_outbox WHERE id = ?1 AND claimed_by = ?2")
        .map_err(db)?;
    for id in ids {
        delete.execute(params![id, holder]).map_err(db)?;
    }
    Ok(())
}

pub(crate) fn failed(
    c: &Connection,
    holder: &str,
    outcomes: &[(i64, Retry)],
    error: &str,
) -> Result<(), MetaError> {
    let now = now_millis();
    let mut update = c
        .prepare_cached(
            "UPDATE notification_outbox SET attempts = attempts + 1, last_error = ?3, \
             claimed_by = NULL, claimed_until = NULL, next_attempt = ?4, failed_at = ?5 \
             WHERE id = ?1 AND claimed_by = ?2",
        )
        .map_err(db)?;
    for (id, retry) in outcomes {
        let (next, failed_at) = match retry {
            Retry::After(delay) => (now.saturating_add(millis(*delay)), None),
            Retry::GiveUp => (now, Some(now)),
        };
        update
            .execute(params![id, holder, error, next, failed_at])
            .map_err(db)?;
    }
    Ok(())
}

pub(crate) fn list(
    c: &Connection,
    failed_only: bool,
    after: Option<i64>,
    limit: u32,
) -> Result<Vec<OutboxEntry>, MetaError> {
    let sql = format!(
        "SELECT {ENTRY_COLUMNS} FROM notification_outbox \
         WHERE id > ?1 AND (NOT ?2 OR failed_at IS NOT NULL) ORDER BY id LIMIT ?3"
    );
    let mut statement = c.prepare_cached(&sql).map_err(db)?;
    let rows = statement
        .query_map(
            params![after.unwrap_or(0), failed_only, i64::from(limit)],
            entry,
        )
        .map_err(db)?;
    entries(rows)
}

pub(crate) fn replay(
    c: &Connection,
    endpoint: Option<&str>,
    ids: &[i64],
) -> Result<u64, MetaError> {
    let mut update = c
        .prepare_cached(
            "UPDATE notification_outbox SET failed_at = NULL, attempts = 0, next_attempt = ?1, \
             claimed_by = NULL, claimed_until = NULL \
             WHERE failed_at IS NOT NULL AND (?2 IS NULL OR endpoint = ?2) \
             AND (?3 IS NULL OR id = ?3)",
        )
        .map_err(db)?;
    let now = now_millis();
    let mut replayed = 0;
    if ids.is_empty() {
        replayed += update
            .execute(params![now, endpoint, None::<i64>])
            .map_err(db)?;
    } else {
        for id in ids {
            replayed += update.execute(params![now, endpoint, id]).map_err(db)?;
        }
    }
    Ok(replayed as u64)
}

pub(crate) fn purge(
    c: &Connection,
    endpoint: Option<&str>,
    ids: &[i64],
    pending: bool,
) -> Result<u64, MetaError> {
    let mut delete = c
        .prepare_cached(
            "DELETE FROM notification_outbox \
             WHERE (?1 OR failed_at IS NOT NULL) AND (?2 IS NULL OR endpoint = ?2) \
             AND (?3 IS NULL OR id = ?3)",
        )
        .map_err(db)?;
    let mut purged = 0;
    if ids.is_empty() {
        purged += delete
            .execute(params![pending, endpoint, None::<i64>])
            .map_err(db)?;
    } else {
        for id in ids {
            purged += delete.execute(params![pending, endpoint, id]).map_err(db)?;
        }
    }
    Ok(purged as u64)
}

pub(crate) fn counts(c: &Connection) -> Result<Vec<(String, OutboxCounts)>, MetaError> {
    let mut statement = c
        .prepare_cached(
            "SELECT endpoint, sum(failed_at IS NULL), sum(failed_at IS NOT NULL) \
             FROM notification_outbox GROUP BY endpoint ORDER BY endpoint",
        )
        .map_err(db)?;
    let rows = statement
        .query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, i64>(2)?,
            ))
        })
        .map_err(db)?;
    rows.map(|row| {
        let (endpoint, pending, failed) = row.map_err(db)?;
        Ok((
            endpoint,
            OutboxCounts {
                pending: to_u64(pending, "outbox count")?,
                failed: to_u64(failed, "outbox count")?,
            },
        ))
    })
    .collect()
}
