//! Statement helpers, and how times are stored (milliseconds since the Unix epoch).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::Connection;

use super::error::db;
use crate::meta::{MetaError, Page};

/// Milliseconds since the Unix epoch, as times are stored.
pub(crate) fn now_millis() -> i64 {
    to_millis(SystemTime::now())
}

pub(crate) fn to_millis(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub(crate) fn from_millis(millis: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(millis).unwrap_or(0))
}

pub(super) fn names(
    c: &Connection,
    sql: &str,
    params: &[&dyn rusqlite::ToSql],
) -> Result<Vec<String>, MetaError> {
    let mut statement = c.prepare_cached(sql).map_err(db)?;
    let rows = statement
        .query_map(params, |row| row.get::<_, String>(0))
        .map_err(db)?;
    rows.collect::<Result<_, _>>().map_err(db)
}

/// `LIMIT -1` is no limit in SQLite.
pub(super) fn limit(page: &Page) -> i64 {
    page.n.map_or(-1, i64::from)
}
