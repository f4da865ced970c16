//! Schema migrations (refinery, `migrations/` embedded at build time).

use deadpool_postgres::Pool;

use super::error::{db, pool as pool_error};
use super::sql::{self, get};
use crate::meta::MetaError;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Advisory lock key serialising `migrate` across registry replicas ("ipfs-reg" in ASCII).
const MIGRATION_LOCK: i64 = 0x6970_6673_2d72_6567;

/// Applies pending migrations. Replicas starting together take turns on a session-level
/// advisory lock held on the very connection that migrates.
pub(crate) async fn migrate(pool: &Pool) -> Result<(), MetaError> {
    let object = pool.get().await.map_err(pool_error)?;
    // Detach the connection from the pool: it is closed when dropped, which releases the
    // advisory lock even if this future is cancelled or fails half-way, and the session
    // settings changed below never leak into the pool.
    let mut client = deadpool_postgres::Object::take(object);
    // Migrations and the wait for another replica's migration may take longer than the
    // per-statement limit that protects request handling.
    client
        .batch_execute("SET statement_timeout = 0")
        .await
        .map_err(db)?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(db)?;
    let report = embedded::migrations::runner()
        .set_abort_divergent(true)
        .run_async(&mut *client)
        .await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(db);
    let report = report.map_err(|e| MetaError::Backend(format!("migration failed: {e}")))?;
    unlocked?;
    for migration in report.applied_migrations() {
        tracing::info!(event = "migration_applied", migration = %migration);
    }
    Ok(())
}

/// Whether every embedded migration is applied (with the same checksum).
pub(crate) async fn current(pool: &Pool) -> Result<bool, MetaError> {
    let client = pool.get().await.map_err(pool_error)?;
    let row = sql::query_opt(
        &client,
        "SELECT to_regclass('refinery_schema_history') IS NOT NULL",
        &[],
    )
    .await?
    .ok_or_else(|| MetaError::Backend("to_regclass returned no row".into()))?;
    if !get::<bool>(&row, 0)? {
        return Ok(false);
    }
    let rows = sql::query(
        &client,
        "SELECT version, checksum FROM refinery_schema_history",
        &[],
    )
    .await?;
    let mut applied = Vec::with_capacity(rows.len());
    for row in &rows {
        let version: i32 = get(row, 0)?;
        let checksum: Option<String> = get(row, 1)?;
        applied.push((version, checksum));
    }
    let runner = embedded::migrations::runner();
    Ok(runner.get_migrations().iter().all(|m| {
        let checksum = m.checksum().to_string();
        applied
            .iter()
            .any(|(v, c)| *v == m.version() && c.as_deref() == Some(checksum.as_str()))
    }))
}
