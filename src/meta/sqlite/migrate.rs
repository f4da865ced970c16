//! Schema migrations (refinery, `migrations-embedded/meta/` embedded at build time).

use rusqlite::Connection;

use super::error::db;
use crate::meta::MetaError;

mod embedded {
    refinery::embed_migrations!("migrations-embedded/meta");
}

/// Brings the schema up to date; refuses a database whose applied migrations differ from
/// ours (a newer or foreign schema).
pub(crate) fn migrate(connection: &mut Connection) -> Result<(), MetaError> {
    embedded::migrations::runner()
        .set_abort_divergent(true)
        .run(connection)
        .map_err(|e| MetaError::Backend(format!("SQLite migrations: {e}")))?;
    Ok(())
}

/// Whether every migration this build knows is applied, unchanged.
pub(crate) fn current(c: &Connection) -> Result<bool, MetaError> {
    let applied: Vec<(i64, String)> = {
        let mut statement = c
            .prepare("SELECT version, checksum FROM refinery_schema_history")
            .map_err(db)?;
        let rows = statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .map_err(db)?;
        rows.collect::<Result<_, _>>().map_err(db)?
    };
    let runner = embedded::migrations::runner();
    Ok(runner.get_migrations().iter().all(|m| {
        applied.iter().any(|(version, checksum)| {
            *version == i64::from(m.version()) && *checksum == m.checksum().to_string()
        })
    }))
}
