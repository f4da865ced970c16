//! Maps pool and PostgreSQL errors onto `MetaError`.

use std::error::Error as _;

use deadpool_postgres::PoolError;
use tokio_postgres::error::SqlState;

use crate::error_chain::with_sources;
use crate::meta::MetaError;

/// A connection could not be had from the pool: always "unavailable", except for misuse.
pub(crate) fn pool(e: PoolError) -> MetaError {
    match e {
        PoolError::Timeout(kind) => MetaError::Unavailable(format!(
            "timed out waiting for a database connection ({kind:?})"
        )),
        PoolError::Backend(e) => MetaError::Unavailable(format!(
            "cannot connect to the database: {}",
            with_sources(&e)
        )),
        PoolError::Closed => MetaError::Unavailable("the connection pool is closed".into()),
        PoolError::NoRuntimeSpecified => {
            MetaError::Backend("the connection pool has no runtime".into())
        }
        PoolError::PostCreateHook(e) => {
            MetaError::Unavailable(format!("new database connection rejected: {e}"))
        }
    }
}

/// A statement failed: lost connections and timeouts are "unavailable", the rest "backend".
pub(crate) fn db(e: tokio_postgres::Error) -> MetaError {
    if is_unavailable(&e) {
        MetaError::Unavailable(describe(&e))
    } else {
        MetaError::Backend(describe(&e))
    }
}

fn is_unavailable(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        Some(code) => {
            code.code().starts_with("08") // connection exception
                || *code == SqlState::QUERY_CANCELED // statement_timeout
                || *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
                || *code == SqlState::TOO_MANY_CONNECTIONS
        }
        // No server error: an I/O failure talking to the server.
        None => e.source().is_some_and(|s| s.is::<std::io::Error>()),
    }
}

fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {} ({})", db.severity(), db.message(), db.code().code()),
        None => with_sources(e),
    }
}
