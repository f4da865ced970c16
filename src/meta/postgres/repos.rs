//! Repositories: lookup, creation on first use, catalog.

use deadpool_postgres::GenericClient;

use super::sql::{self, get};
use crate::meta::{MetaError, Page};
use crate::oci::RepoName;

pub(crate) async fn id<C: GenericClient>(c: &C, repo: &RepoName) -> Result<Option<i64>, MetaError> {
    let row = sql::query_opt(
        c,
        "SELECT id FROM repositories WHERE name = $1",
        &[&repo.as_str()],
    )
    .await?;
    row.map(|r| get(&r, 0)).transpose()
}

/// The repository's id, creating it if needed.
///
/// Under READ COMMITTED each statement sees what committed before it, so when a concurrent
/// transaction creates the same name first, our INSERT waits for it, does nothing, and the
/// next SELECT sees its row.
pub(crate) async fn ensure<C: GenericClient>(c: &C, repo: &RepoName) -> Result<i64, MetaError> {
    for _ in 0..3 {
        if let Some(id) = id(c, repo).await? {
            return Ok(id);
        }
        let inserted = sql::query_opt(
            c,
            "INSERT INTO repositories (name) VALUES ($1) ON CONFLICT (name) DO NOTHING RETURNING id",
            &[&repo.as_str()],
        )
        .await?;
        if let Some(row) = inserted {
            return get(&row, 0);
        }
    }
    Err(MetaError::Backend(format!(
        "repository {repo} could neither be found nor created"
    )))
}

pub(crate) async fn catalog<C: GenericClient>(
    c: &C,
    page: &Page,
) -> Result<Vec<String>, MetaError> {
    let after = page.last.as_deref().unwrap_or("");
    let limit = page.n.map(i64::from);
    // `name > ''` holds for every row (names are never empty), so the first page is the
    // same index range scan as the others. `LIMIT NULL` means no limit.
    let rows = sql::query(
        c,
        "SELECT name FROM repositories WHERE name > $1 ORDER BY name LIMIT $2",
        &[&after, &limit],
    )
    .await?;
    rows.iter().map(|r| get(r, 0)).collect()
}
