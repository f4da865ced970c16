//! Manifests, their references, tags and the referrers index.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use rusqlite::{params, Connection, OptionalExtension};

use super::{corrupt, db, ensure_repository, now_millis, parse_digest, to_i64};
use crate::meta::{MetaError, NewManifest, StoredManifest};
use crate::oci::{Descriptor, Digest, Reference, ReferenceKind, RepoName, Tag};

type ManifestRow = (String, String, Vec<u8>, Option<String>);

pub(super) fn get(
    c: &Connection,
    repo: &RepoName,
    reference: &Reference,
) -> Result<Option<StoredManifest>, MetaError> {
    let (sql, key) = match reference {
        Reference::Digest(digest) => (
            "SELECT m.digest, m.media_type, m.content, m.subject_digest \
             FROM repositories r JOIN manifests m ON m.repository_id = r.id \
             WHERE r.name = ?1 AND m.digest = ?2",
            digest.to_string(),
        ),
        Reference::Tag(tag) => (
            "SELECT m.digest, m.media_type, m.content, m.subject_digest \
             FROM repositories r \
             JOIN tags t ON t.repository_id = r.id \
             JOIN manifests m ON m.repository_id = t.repository_id AND m.digest = t.manifest_digest \
             WHERE r.name = ?1 AND t.name = ?2",
            tag.as_str().to_owned(),
        ),
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

fn kind_name(kind: ReferenceKind) -> &'static str {
    match kind {
        ReferenceKind::Blob => "blob",
        ReferenceKind::Manifest => "manifest",
    }
}

/// Stores the manifest with its references and moves the tag; refuses, changing nothing,
/// when a reference is not in the repository. Inside a write transaction (which serialises
/// it against every delete, so what was checked stays true until commit).
pub(super) fn put(
    c: &Connection,
    repo: &RepoName,
    manifest: &NewManifest,
    tag: Option<&Tag>,
) -> Result<(), MetaError> {
    let repo_id = ensure_repository(c, repo)?;
    check_references(c, repo_id, &manifest.references)?;
    let digest = manifest.digest.to_string();
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
        .prepare_cached("SELECT 1 FROM repository_blobs WHERE repository_id = ?1 AND digest = ?2")
        .map_err(db)?;
    let mut manifest = c
        .prepare_cached("SELECT 1 FROM manifests WHERE repository_id = ?1 AND digest = ?2")
        .map_err(db)?;
    let mut checked = BTreeSet::new();
    let mut missing: Vec<Digest> = Vec::new();
    for (digest, kind) in references {
        if !checked.insert((digest.to_string(), kind_name(*kind))) {
            continue;
        }
        let statement = match kind {
            ReferenceKind::Blob => &mut blob_link,
            ReferenceKind::Manifest => &mut manifest,
        };
        let present = statement
            .exists(params![repo_id, digest.to_string()])
            .map_err(db)?;
        if !present && !missing.contains(digest) {
            missing.push(digest.clone());
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(MetaError::MissingReferences(missing))
    }
}

pub(super) fn referrers(
    c: &Connection,
    repo: &RepoName,
    subject: &str,
    artifact_type: Option<&str>,
) -> Result<Vec<Descriptor>, MetaError> {
    // One range scan of manifests_referrers_idx, already in digest order.
    let mut statement = c
        .prepare_cached(
            "SELECT m.media_type, m.digest, m.size, m.artifact_type, \
                    json_extract(m.parsed, '$.annotations') \
             FROM manifests m \
             WHERE m.repository_id = (SELECT id FROM repositories WHERE name = ?1) \
               AND m.subject_digest = ?2 \
               AND (?3 IS NULL OR m.artifact_type = ?3) \
             ORDER BY m.digest",
        )
        .map_err(db)?;
    let rows = statement
        .query_map(params![repo.as_str(), subject, artifact_type], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, i64>(2)?,
                row.get::<_, Option<String>>(3)?,
                row.get::<_, Option<String>>(4)?,
            ))
        })
        .map_err(db)?;
    rows.map(|row| {
        let (media_type, digest, size, artifact_type, annotations) = row.map_err(db)?;
        let annotations = annotations
            .map(|text| {
                serde_json::from_str::<BTreeMap<String, String>>(&text)
                    .map_err(|e| corrupt(format_args!("manifest annotations: {e}")))
            })
            .transpose()?;
        Ok(Descriptor {
            media_type,
            digest: parse_digest(&digest)?,
            size,
            artifact_type,
            annotations,
            urls: None,
            platform: None,
            data: None,
        })
    })
    .collect()
}
