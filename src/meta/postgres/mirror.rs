//! Pull-through mirrors: which repositories are mirrored, and when each tag was checked.

use std::time::SystemTime;

use deadpool_postgres::GenericClient;

use super::sql::{self, get};
use super::{manifests, repos};
use crate::meta::{MetaError, NewManifest, ProtectedTags, RepoOrigin};
use crate::oci::{Digest, RepoName, Tag};

pub(crate) async fn origin<C: GenericClient>(
    c: &C,
    repo: &RepoName,
) -> Result<RepoOrigin, MetaError> {
    let row = sql::query_opt(
        c,
        "SELECT m.repository_id IS NOT NULL FROM repositories r \
         LEFT JOIN mirrored_repositories m ON m.repository_id = r.id WHERE r.name = $1",
        &[&repo.as_str()],
    )
    .await?;
    Ok(match row {
        None => RepoOrigin::Absent,
        Some(row) if get::<bool>(&row, 0)? => RepoOrigin::Mirrored,
        Some(_) => RepoOrigin::Pushed,
    })
}

/// The whole store of a fetched manifest; call inside a transaction.
pub(crate) async fn put<C: GenericClient>(
    c: &C,
    repo: &RepoName,
    upstream: &str,
    manifest: &NewManifest,
    tag: Option<&Tag>,
) -> Result<(), MetaError> {
    let repo_id = repos::ensure(c, repo).await?;
    sql::execute(
        c,
        "INSERT INTO mirrored_repositories (repository_id, upstream) VALUES ($1, $2) \
         ON CONFLICT (repository_id) DO UPDATE SET upstream = EXCLUDED.upstream \
         WHERE mirrored_repositories.upstream <> EXCLUDED.upstream",
        &[&repo_id, &upstream],
    )
    .await?;
    manifests::write(c, repo_id, manifest, tag, &ProtectedTags::none()).await?;
    if let Some(tag) = tag {
        sql::execute(
            c,
            "INSERT INTO mirrored_tags (repository_id, name) VALUES ($1, $2) \
             ON CONFLICT (repository_id, name) DO UPDATE SET checked_at = now()",
            &[&repo_id, &tag.as_str()],
        )
        .await?;
    }
    Ok(())
}

pub(crate) async fn tag_checked<C: GenericClient>(
    c: &C,
    repo: &RepoName,
    tag: &Tag,
) -> Result<Option<SystemTime>, MetaError> {
    let row = sql::query_opt(
        c,
        "SELECT mt.checked_at FROM repositories r \
         JOIN mirrored_tags mt ON mt.repository_id = r.id \
         WHERE r.name = $1 AND mt.name = $2",
        &[&repo.as_str(), &tag.as_str()],
    )
    .await?;
    row.map(|r| get::<SystemTime>(&r, 0)).transpose()
}

pub(crate) async fn confirm_tag<C: GenericClient>(
    c: &C,
    repo: &RepoName,
    tag: &Tag,
    digest: &Digest,
) -> Result<bool, MetaError> {
    let n = sql::execute(
        c,
        "UPDATE mirrored_tags mt SET checked_at = now() \
         FROM repositories r, tags t \
         WHERE r.name = $1 AND mt.repository_id = r.id AND mt.name = $2 \
           AND t.repository_id = r.id AND t.name = mt.name AND t.manifest_digest = $3",
        &[&repo.as_str(), &tag.as_str(), &digest.to_string()],
    )
    .await?;
    Ok(n > 0)
}
