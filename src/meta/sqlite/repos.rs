//! Repositories: lookup, creation on first use, catalog.

use rusqlite::{Connection, OptionalExtension};

use super::error::db;
use super::sql::{limit, names, now_millis};
use crate::meta::{MetaError, Page};
use crate::oci::RepoName;

/// The repository's id, if it exists.
pub(crate) fn id(c: &Connection, repo: &RepoName) -> Result<Option<i64>, MetaError> {
    c.prepare_cached("SELECT id FROM repositories WHERE name = ?1")
        .map_err(db)?
        .query_row([repo.as_str()], |row| row.get(0))
        .optional()
        .map_err(db)
}

/// The repository's id, creating it if needed (inside a write transaction).
pub(crate) fn ensure(c: &Connection, repo: &RepoName) -> Result<i64, MetaError> {
    // Looked up first: pushes go to existing repositories far more often than new ones.
    if let Some(id) = id(c, repo)? {
        return Ok(id);
    }
    c.prepare_cached("INSERT INTO repositories (name, created_at) VALUES (?1, ?2) RETURNING id")
        .map_err(db)?
        .query_row(rusqlite::params![repo.as_str(), now_millis()], |row| {
            row.get(0)
        })
        .map_err(db)
}

pub(crate) fn catalog(c: &Connection, page: &Page) -> Result<Vec<String>, MetaError> {
    let after = page.last.clone().unwrap_or_default();
    names(
        c,
        "SELECT name FROM repositories WHERE name > ?1 ORDER BY name LIMIT ?2",
        &[&after, &limit(page)],
    )
}
