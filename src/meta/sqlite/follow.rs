//! `[[federation.follow]]` rules' state (migrations-embedded/meta/V10__follow.sql).

use cid::Cid;
use rusqlite::{params, Connection, OptionalExtension};

use super::error::db;
use super::sql::{from_millis, now_millis};
use crate::meta::sql_common::{parse_cid, parse_digest, to_u64};
use crate::meta::{FollowState, FollowedTag, MetaError};
use crate::oci::{RepoName, Tag};

type StateRow = (Option<String>, Option<i64>, Option<String>, Option<i64>);

pub(super) fn state(c: &Connection, rule: &str) -> Result<FollowState, MetaError> {
    let row: Option<StateRow> = c
        .prepare_cached(
            "SELECT last_root, last_success, last_error, error_at FROM follow_rules \
             WHERE rule = ?1",
        )
        .map_err(db)?
        .query_row([rule], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })
        .optional()
        .map_err(db)?;
    let mut state = FollowState::default();
    if let Some((root, success, error, error_at)) = row {
        state.last_root = root.map(|text| parse_cid(&text)).transpose()?;
        state.last_success = success.map(from_millis);
        state.last_error = error;
        state.error_at = error_at.map(from_millis);
    }
    let tags: i64 = c
        .prepare_cached("SELECT count(*) FROM followed_tags WHERE rule = ?1")
        .map_err(db)?
        .query_row([rule], |row| row.get(0))
        .map_err(db)?;
    state.tags = to_u64(tags, "count")?;
    Ok(state)
}

pub(super) fn success(c: &Connection, rule: &str, root: &Cid) -> Result<(), MetaError> {
    c.prepare_cached(
        "INSERT INTO follow_rules (rule, last_root, last_success) VALUES (?1, ?2, ?3) \
         ON CONFLICT (rule) DO UPDATE SET last_root = excluded.last_root, \
         last_success = excluded.last_success, last_error = NULL, error_at = NULL",
    )
    .map_err(db)?
    .execute(params![rule, root.to_string(), now_millis()])
    .map_err(db)?;
    Ok(())
}

pub(super) fn error(c: &Connection, rule: &str, error: &str) -> Result<(), MetaError> {
    c.prepare_cached(
        "INSERT INTO follow_rules (rule, last_error, error_at) VALUES (?1, ?2, ?3) \
         ON CONFLICT (rule) DO UPDATE SET last_error = excluded.last_error, \
         error_at = excluded.error_at",
    )
    .map_err(db)?
    .execute(params![rule, error, now_millis()])
    .map_err(db)?;
    Ok(())
}

pub(super) fn tags(c: &Connection, rule: &str) -> Result<Vec<FollowedTag>, MetaError> {
    let mut statement = c
        .prepare_cached(
            "SELECT repository, tag, layout_cid, manifest_digest FROM followed_tags \
             WHERE rule = ?1 ORDER BY repository, tag",
        )
        .map_err(db)?;
    let rows = statement
        .query_map([rule], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
            ))
        })
        .map_err(db)?;
    let mut tags = Vec::new();
    for row in rows {
        let (repo, tag, layout, manifest) = row.map_err(db)?;
        let (repo, tag) = crate::meta::sql_common::stored_repo_tag(&repo, &tag)?;
        tags.push(FollowedTag {
            repo,
            tag,
            layout: parse_cid(&layout)?,
            manifest: parse_digest(&manifest)?,
        });
    }
    Ok(tags)
}

pub(super) fn record_tag(c: &Connection, rule: &str, tag: &FollowedTag) -> Result<(), MetaError> {
    c.prepare_cached(
        "INSERT INTO followed_tags \
         (rule, repository, tag, layout_cid, manifest_digest, imported_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
         ON CONFLICT (rule, repository, tag) DO UPDATE SET layout_cid = excluded.layout_cid, \
         manifest_digest = excluded.manifest_digest, imported_at = excluded.imported_at",
    )
    .map_err(db)?
    .execute(params![
        rule,
        tag.repo.as_str(),
        tag.tag.as_str(),
        tag.layout.to_string(),
        tag.manifest.to_string(),
        now_millis()
    ])
    .map_err(db)?;
    Ok(())
}

pub(super) fn forget_tag(
    c: &Connection,
    rule: &str,
    repo: &RepoName,
    tag: &Tag,
) -> Result<(), MetaError> {
    c.prepare_cached("DELETE FROM followed_tags WHERE rule = ?1 AND repository = ?2 AND tag = ?3")
        .map_err(db)?
        .execute(params![rule, repo.as_str(), tag.as_str()])
        .map_err(db)?;
    Ok(())
}
