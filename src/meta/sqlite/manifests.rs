//! Manifests, their references, tags and the referrers index.

use bytes::Bytes;
use rusqlite::{params, Connection, OptionalExtension};

use super::error::db;
use super::repos;
use super::sql::now_millis;
use crate::meta::sql_common::{kind_name, parse_digest, require_references, to_i64};
use crate::meta::{MetaError, NewManifest, ProtectedTags, StoredManifest};
use crate::oci::{Digest, Reference, ReferenceKind, RepoName, Tag};

type ManifestRow = (String, String, Vec<u8>, Option<String>);

const BY_DIGEST: &str = "SELECT m.digest, m.media_type, m.content, m.subject_digest \
     FROM repositories r JOIN manifests m ON m.repository_id = r.id \
     WHERE r.name = ?1 AND m.digest = ?2";
const BY_TAG: &str = "SELECT m.digest, m.media_type, m.content, m.subject_digest \
     FROM repositories r \
     JOIN tags t ON t.repository_id = r.id \
     JOIN manifests m ON m.repository_id = t.repository_id AND m.digest = t.manifest_digest \
     WHERE r.name = ?1 AND t.name = ?2";

pub(super) fn get(
    c: &Connection,
    repo: &RepoName,
    reference: &Reference,
) -> Result<Option<StoredManifest>, MetaError> {
    let (sql, key) = match reference {
        Reference::Digest(digest) => (BY_DIGEST, digest.to_string()),
        Reference::Tag(tag) => (BY_TAG, tag.as_str().to_owned()),
    };
    let row: Option<ManifestRow> = c
        .prepare_cached(sql)
        .map_err(db)?
        .query_row(params![repo.as_str(), key], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })
        .optional()
        .map_err(db)?;
    let Some((digest, media_type, content, subject)) = row else {
        return Ok(None);
    };
    Ok(Some(StoredManifest {
        digest: parse_digest(&digest)?,
        media_type,
        content: Bytes::from(content),
        subject: subject.as_deref().map(parse_digest).transpose()?,
    }))
}

/// Stores the manifest with its references and moves the tag; refuses, changing nothing,
/// when a reference is not in the repository or the tag is protected and points elsewhere.
/// Inside a write transaction (which serialises it against every other write, so what was
/// checked stays true until commit).
pub(super) fn put(
    c: &Connection,
    repo: &RepoName,
    manifest: &NewManifest,
    tag: Option<&Tag>,
    protected: &ProtectedTags,
) -> Result<(), MetaError> {
    let repo_id = repos::ensure(c, repo)?;
    check_references(c, repo_id, &manifest.references)?;
    write(c, repo_id, manifest, tag, protected)
}

/// Stores the manifest and its references and moves the tag, checking no reference: a
/// push's after its check, a mirror's (whose blobs come later) alone.
pub(super) fn write(
    c: &Connection,
    repo_id: i64,
    manifest: &NewManifest,
    tag: Option<&Tag>,
    protected: &ProtectedTags,
) -> Result<(), MetaError> {
    let digest = manifest.digest.to_string();
    if let Some(tag) = tag.filter(|t| protected.covers(t.as_str())) {
        let current: Option<String> = c
            .prepare_cached(
                "SELECT manifest_digest FROM tags WHERE repository_id = ?1 AND name = ?2",
            )
            .map_err(db)?
            .query_row(params![repo_id, tag.as_str()], |row| row.get(0))
            .optional()
            .map_err(db)?;
        if current.is_some_and(|current| current != digest) {
            return Err(MetaError::TagImmutable(tag.to_string()));
        }
    }
    let inserted = c
        .execute(
            "INSERT INTO manifests (repository_id, digest, media_type, artifact_type, content, \
             parsed, size, subject_digest, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
             ON CONFLICT (repository_id, digest) DO NOTHING",
            params![
                repo_id,
                digest,
                manifest.media_type,
                manifest.artifact_type,
                manifest.content.as_ref(),
                manifest.json.to_string(),
                to_i64(manifest.content.len() as u64, "manifest size")?,
                manifest.subject.as_ref().map(Digest::to_string),
                now_millis()
            ],
        )
        .map_err(db)?;
    if inserted == 1 {
        let mut statement = c
            .prepare_cached(
                "INSERT INTO manifest_references \
                 (repository_id, manifest_digest, referenced_digest, kind) \
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
            )
            .map_err(db)?;
        for (referenced, kind) in &manifest.references {
            statement
                .execute(params![
                    repo_id,
                    digest,
                    referenced.to_string(),
                    kind_name(*kind)
                ])
                .map_err(db)?;
        }
    }
    if let Some(tag) = tag {
        c.execute(
            "INSERT INTO tags (repository_id, name, manifest_digest, updated_at) \
             VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (repository_id, name) DO UPDATE \
             SET manifest_digest = excluded.manifest_digest, updated_at = excluded.updated_at \
             WHERE tags.manifest_digest <> excluded.manifest_digest",
            params![repo_id, tag.as_str(), digest, now_millis()],
        )
        .map_err(db)?;
    }
    Ok(())
}

fn check_references(
    c: &Connection,
    repo_id: i64,
    references: &[(Digest, ReferenceKind)],
) -> Result<(), MetaError> {
    let mut blob_link = c
        .prepare_cached(
            "SELECT 1 FROM repository_blobs rb WHERE rb.repository_id = ?1 AND rb.digest = ?2 \
             AND NOT EXISTS (SELECT 1 FROM quarantined_blobs q WHERE q.digest = rb.digest)",
        )
        .map_err(db)?;
    let mut manifest = c
        .prepare_cached("SELECT 1 FROM manifests WHERE repository_id = ?1 AND digest = ?2")
        .map_err(db)?;
    require_references(references, |digest, kind| {
        let statement = match kind {
            ReferenceKind::Blob => &mut blob_link,
            ReferenceKind::Manifest => &mut manifest,
        };
        statement
            .exists(params![repo_id, digest.to_string()])
            .map_err(db)
    })
}

/// Deletes the manifest (and, by cascade, its tags) unless a protected tag points at it.
/// Inside a write transaction, so no tag can be added between the check and the delete.
pub(super) fn delete(
    c: &Connection,
    repo: &RepoName,
    digest: &Digest,
    protected: &ProtectedTags,
) -> Result<bool, MetaError> {
    let Some(repo_id) = repos::id(c, repo)? else {
        return Ok(false);
    };
    let digest = digest.to_string();
    if !protected.0.is_empty() {
        let mut statement = c
            .prepare_cached(
                "SELECT name FROM tags WHERE repository_id = ?1 AND manifest_digest = ?2 \
                 ORDER BY name",
            )
            .map_err(db)?;
        let tags: Vec<String> = statement
            .query_map(params![repo_id, digest], |row| row.get(0))
            .map_err(db)?
            .collect::<Result<_, _>>()
            .map_err(db)?;
        if let Some(tag) = protected.first_covered(tags.iter().map(String::as_str)) {
            return Err(MetaError::TagImmutable(tag.to_owned()));
        }
    }
    let removed = c
        .execute(
            "DELETE FROM manifests WHERE repository_id = ?1 AND digest = ?2",
            params![repo_id, digest],
        )
        .map_err(db)?;
    Ok(removed > 0)
}

/// Deletes the tag unless it is protected (then `TagImmutable` when it exists).
/// Deletes `tag` (only while it points at `pointing_at`, when given).
pub(super) fn delete_tag(
    c: &Connection,
    repo: &RepoName,
    tag: &Tag,
    pointing_at: Option<&Digest>,
    protected: &ProtectedTags,
) -> Result<bool, MetaError> {
    let Some(repo_id) = repos::id(c, repo)? else {
        return Ok(false);
    };
    if protected.covers(tag.as_str()) {
        let exists = c
            .prepare_cached("SELECT 1 FROM tags WHERE repository_id = ?1 AND name = ?2")
            .map_err(db)?
            .exists(params![repo_id, tag.as_str()])
            .map_err(db)?;
        return if exists {
            Err(MetaError::TagImmutable(tag.to_string()))
        } else {
            Ok(false)
        };
    }
    let removed = c
        .execute(
            "DELETE FROM tags WHERE repository_id = ?1 AND name = ?2 \
             AND (?3 IS NULL OR manifest_digest = ?3)",
            params![repo_id, tag.as_str(), pointing_at.map(ToString::to_string)],
        )
        .map_err(db)?;
    Ok(removed > 0)
}

#[cfg(test)]
mod tests {
    use rusqlite::StatementStatus;

    use super::*;
    use crate::meta::sqlite::SqliteStore;

    /// Each manifest read reuses the join compiled the first time (see `configure`: by
    /// default SQLite recompiled it on every reuse from the statement cache).
    #[test]
    fn manifest_reads_reuse_the_compiled_join() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db.sqlite")).unwrap();
        let c = super::super::lock(&store.inner.readers[0]);
        let repo: RepoName = "a/b".parse().unwrap();
        let digest: Digest = format!("sha256:{}", "0".repeat(64)).parse().unwrap();
        for reference in [
            Reference::Tag("latest".parse().unwrap()),
            Reference::Digest(digest),
        ] {
            for _ in 0..3 {
                assert!(get(&c, &repo, &reference).unwrap().is_none());
            }
        }
        for sql in [BY_TAG, BY_DIGEST] {
            let statement = c.prepare_cached(sql).unwrap();
            assert_eq!(statement.get_status(StatementStatus::RePrepare), 0, "{sql}");
        }
    }
}
