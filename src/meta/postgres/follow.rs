//! `[[federation.follow]]` rules' state (migrations/V10__follow.sql).

use std::time::SystemTime;

use cid::Cid;
use deadpool_postgres::GenericClient;

use super::sql::{self, get};
use crate::meta::sql_common::{parse_cid, to_u64};
use crate::meta::{FollowState, FollowedTag, MetaError};
use crate::oci::{RepoName, Tag};

pub(crate) async fn state<C: GenericClient>(c: &C, rule: &str) -> Result<FollowState, MetaError> {
    let row = sql::query_opt(
        c,
        "SELECT last_root, last_success, last_error, error_at FROM follow_rules WHERE rule = $1",
        &[&rule],
    )
    .await?;
    let mut state = FollowState::default();
    if let Some(row) = row {
        state.last_root = get::<Option<String>>(&row, 0)?
            .map(|text| parse_cid(&text))
            .transpose()?;
        state.last_success = get::<Option<SystemTime>>(&row, 1)?;
        state.last_error = get(&row, 2)?;
        state.error_at = get::<Option<SystemTime>>(&row, 3)?;
    }
    let row = sql::query_opt(
        c,
        "SELECT count(*) FROM followed_tags WHERE rule = $1",
        &[&rule],
    )
    .await?;
    if let Some(row) = row {
        state.tags = to_u64(get::<i64>(&row, 0)?, "count")?;
    }
    Ok(state)
}

pub(crate) async fn success<C: GenericClient>(
    c: &C,
    rule: &str,
    root: &Cid,
) -> Result<(), MetaError> {
    sql::execute(
        c,
        "INSERT INTO follow_rules (rule, last_root, last_success) VALUES ($1, $2, now()) \
         ON CONFLICT (rule) DO UPDATE SET last_root = EXCLUDED.last_root, \
         last_success = EXCLUDED.last_success, last_error = NULL, error_at = NULL",
        &[&rule, &root.to_string()],
    )
    .await?;
    Ok(())
}

pub(crate) async fn error<C: GenericClient>(
    c: &C,
    rule: &str,
    error: &str,
) -> Result<(), MetaError> {
    sql::execute(
        c,
        "INSERT INTO follow_rules (rule, last_error, error_at) VALUES ($1, $2, now()) \
         ON CONFLICT (rule) DO UPDATE SET last_error = EXCLUDED.last_error, \
         error_at = EXCLUDED.error_at",
        &[&rule, &error],
    )
    .await?;
    Ok(())
}

pub(crate) async fn tags<C: GenericClient>(
    c: &C,
    rule: &str,
) -> Result<Vec<FollowedTag>, MetaError> {
    let rows = sql::query(
        c,
        "SELECT repository, tag, layout_cid, manifest_digest FROM followed_tags \
         WHERE rule = $1 ORDER BY repository, tag",
        &[&rule],
    )
    .await?;
    rows.iter()
        .map(|row| {
            let repo: String = get(row, 0)?;
            let tag: String = get(row, 1)?;
            let (repo, tag) = crate::meta::sql_common::stored_repo_tag(&repo, &tag)?;
            Ok(FollowedTag {
                repo,
                tag,
                layout: sql::cid(row, 2)?,
                manifest: sql::digest(row, 3)?,
            })
        })
        .collect()
}

pub(crate) async fn record_tag<C: GenericClient>(
    c: &C,
    rule: &str,
    tag: &FollowedTag,
) -> Result<(), MetaError> {
    sql::execute(
        c,
        "INSERT INTO followed_tags (rule, repository, tag, layout_cid, manifest_digest) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (rule, repository, tag) DO UPDATE SET layout_cid = EXCLUDED.layout_cid, \
         manifest_digest = EXCLUDED.manifest_digest, imported_at = now()",
        &[
            &rule,
            &tag.repo.as_str(),
            &tag.tag.as_str(),
            &tag.layout.to_string(),
            &tag.manifest.to_string(),
        ],
    )
    .await?;
    Ok(())
}

pub(crate) async fn forget_tag<C: GenericClient>(
    c: &C,
    rule: &str,
    repo: &RepoName,
    tag: &Tag,
) -> Result<(), MetaError> {
    sql::execute(
        c,
        "DELETE FROM followed_tags WHERE rule = $1 AND repository = $2 AND tag = $3",
        &[&rule, &repo.as_str(), &tag.as_str()],
    )
    .await?;
    Ok(())
}
