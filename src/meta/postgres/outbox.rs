//! The notifications outbox (migrations/V5__notifications.sql).

use std::time::Duration;

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::sql::{self, get};
use crate::meta::outbox::{Notice, OutboxCounts, OutboxEntry, Retry};
use crate::meta::sql_common::{millis, outbox_entry, to_u64};
use crate::meta::MetaError;

const ENTRY_COLUMNS: &str = "id, endpoint, event, attempts, \
     (extract(epoch FROM created_at) * 1000)::bigint, failed_at IS NOT NULL, last_error";

/// Records `notices` (inside the caller's transaction, when it has one).
pub(crate) async fn record<C: GenericClient>(c: &C, notices: &[Notice]) -> Result<(), MetaError> {
    if notices.is_empty() {
        return Ok(());
    }
    let endpoints: Vec<&str> = notices.iter().map(|n| n.endpoint.as_str()).collect();
    let events: Vec<&str> = notices.iter().map(|n| n.event.as_str()).collect();
    sql::execute(
        c,
        "INSERT INTO notification_outbox (endpoint, event) \
         SELECT * FROM unnest($1::text[], $2::text[])",
        &[&endpoints, &events],
    )
    .await?;
    Ok(())
}

/// Records `notices` when `happened` (a change that may find nothing to change); returns
/// `happened`.
pub(crate) async fn record_if<C: GenericClient>(
    c: &C,
    happened: bool,
    notices: &[Notice],
) -> Result<bool, MetaError> {
    if happened {
        record(c, notices).await?;
    }
    Ok(happened)
}

fn entry(row: &Row) -> Result<OutboxEntry, MetaError> {
    outbox_entry(
        get(row, 0)?,
        get(row, 1)?,
        get(row, 2)?,
        i64::from(get::<i32>(row, 3)?),
        get(row, 4)?,
        get(row, 5)?,
        get(row, 6)?,
    )
}

pub(crate) async fn claim<C: GenericClient>(
    c: &C,
    endpoint: &str,
    holder: &str,
    lease: Duration,
    limit: u32,
) -> Result<Vec<OutboxEntry>, MetaError> {
    let sql = format!(
        "UPDATE notification_outbox \
         SET claimed_by = $2, claimed_until = now() + $3 * interval '1 millisecond' \
         WHERE id IN (SELECT id FROM notification_outbox \
             WHERE endpoint = $1 AND failed_at IS NULL AND next_attempt <= now() \
             AND (claimed_until IS NULL OR claimed_until < now()) \
             ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED) \
         RETURNING {ENTRY_COLUMNS}"
    );
    let rows = sql::query(
        c,
        &sql,
        &[
            &endpoint,
            &holder,
            &(millis(lease) as f64),
            &i64::from(limit),
        ],
    )
    .await?;
    let mut entries = rows.iter().map(entry).collect::<Result<Vec<_>, _>>()?;
    entries.sort_by_key(|e| e.id);
    Ok(entries)
}

pub(crate) async fn delivered<C: GenericClient>(
    c: &C,
    holder: &str,
    ids: &[i64],
) -> Result<(), MetaError> {
    sql::execute(
        c,
        "DELETE FROM notification_outbox WHERE id = ANY($1) AND claimed_by = $2",
        &[&ids, &holder],
    )
    .await?;
    Ok(())
}

pub(crate) async fn failed<C: GenericClient>(
    c: &C,
    holder: &str,
    outcomes: &[(i64, Retry)],
    error: &str,
) -> Result<(), MetaError> {
    for (id, retry) in outcomes {
        let (give_up, delay) = match retry {
            Retry::After(delay) => (false, millis(*delay) as f64),
            Retry::GiveUp => (true, 0.0),
        };
        sql::execute(
            c,
            "UPDATE notification_outbox SET attempts = attempts + 1, last_error = $3, \
             claimed_by = NULL, claimed_until = NULL, \
             next_attempt = now() + $4 * interval '1 millisecond', \
             failed_at = CASE WHEN $5 THEN now() END \
             WHERE id = $1 AND claimed_by = $2",
            &[id, &holder, &error, &delay, &give_up],
        )
        .await?;
    }
    Ok(())
}

pub(crate) async fn list<C: GenericClient>(
    c: &C,
    failed_only: bool,
    after: Option<i64>,
    limit: u32,
) -> Result<Vec<OutboxEntry>, MetaError> {
    let sql = format!(
        "SELECT {ENTRY_COLUMNS} FROM notification_outbox \
         WHERE id > $1 AND (NOT $2 OR failed_at IS NOT NULL) ORDER BY id LIMIT $3"
    );
    let rows = sql::query(
        c,
        &sql,
        &[&after.unwrap_or(0), &failed_only, &i64::from(limit)],
    )
    .await?;
    rows.iter().map(entry).collect()
}

pub(crate) async fn replay<C: GenericClient>(
    c: &C,
    endpoint: Option<&str>,
    ids: &[i64],
) -> Result<u64, MetaError> {
    sql::execute(
        c,
        "UPDATE notification_outbox SET failed_at = NULL, attempts = 0, next_attempt = now(), \
         claimed_by = NULL, claimed_until = NULL \
         WHERE failed_at IS NOT NULL AND ($1::text IS NULL OR endpoint = $1) \
         AND (cardinality($2::bigint[]) = 0 OR id = ANY($2))",
        &[&endpoint, &ids],
    )
    .await
}

pub(crate) async fn purge<C: GenericClient>(
    c: &C,
    endpoint: Option<&str>,
    ids: &[i64],
    pending: bool,
) -> Result<u64, MetaError> {
    sql::execute(
        c,
        "DELETE FROM notification_outbox \
         WHERE ($3 OR failed_at IS NOT NULL) AND ($1::text IS NULL OR endpoint = $1) \
         AND (cardinality($2::bigint[]) = 0 OR id = ANY($2))",
        &[&endpoint, &ids, &pending],
    )
    .await
}

pub(crate) async fn counts<C: GenericClient>(
    c: &C,
) -> Result<Vec<(String, OutboxCounts)>, MetaError> {
    let rows = sql::query(
        c,
        "SELECT endpoint, count(*) FILTER (WHERE failed_at IS NULL), \
         count(*) FILTER (WHERE failed_at IS NOT NULL) \
         FROM notification_outbox GROUP BY endpoint ORDER BY endpoint",
        &[],
    )
    .await?;
    rows.iter()
        .map(|row| {
            Ok((
                get(row, 0)?,
                OutboxCounts {
                    pending: to_u64(get(row, 1)?, "outbox count")?,
                    failed: to_u64(get(row, 2)?, "outbox count")?,
                },
            ))
        })
        .collect()
}
