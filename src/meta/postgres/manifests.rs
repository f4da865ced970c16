//! Manifests, their references and tags.

use std::collections::BTreeSet;

use deadpool_postgres::GenericClient;

use super::repos;
use super::sql::{self, get};
use crate::meta::sql_common::{kind_name, referenced, require_references};
use crate::meta::{MetaError, NewManifest, Page, ProtectedTags, StoredManifest};
use crate::oci::{Digest, Reference, ReferenceKind, RepoName, Tag};

pub(crate) async fn get_manifest<C: GenericClient>(
    c: &C,
    repo: &RepoName,
    reference: &Reference,
) -> Result<Option<StoredManifest>, MetaError> {
    let row = match reference {
        Reference::Digest(digest) => {
            sql::query_opt(
                c,
                "SELECT m.digest, m.media_type, m.content, m.subject_digest \
                 FROM repositories r JOIN manifests m ON m.repository_id = r.id \
                 WHERE r.name = $1 AND m.digest = $2",
                &[&repo.as_str(), &digest.to_string()],
            )
            .await?
        }
        Reference::Tag(tag) => {
            sql::query_opt(
                c,
                "SELECT m.digest, m.media_type, m.content, m.subject_digest \
                 FROM repositories r \
                 JOIN tags t ON t.repository_id = r.id \
                 JOIN manifests m ON m.repository_id = t.repository_id AND m.digest = t.manifest_digest \
                 WHERE r.name = $1 AND t.name = $2",
                &[&repo.as_str(), &tag.as_str()],
            )
            .await?
        }
    };
    let Some(row) = row else { return Ok(None) };
    let content: Vec<u8> = get(&row, 2)?;
    Ok(Some(StoredManifest {
        digest: sql::digest(&row, 0)?,
        media_type: get(&row, 1)?,
        content: content.into(),
        subject: sql::opt_digest(&row, 3)?,
    }))
}

/// The whole push; call inside a transaction (an error leaves it to be rolled back).
pub(crate) async fn put<C: GenericClient>(
    c: &C,
    repo: &RepoName,
    manifest: &NewManifest,
    tag: Option<&Tag>,
    protected: &ProtectedTags,
) -> Result<(), MetaError> {
    let repo_id = repos::ensure(c, repo).await?;
    check_references(c, repo_id, &manifest.references).await?;
    write(c, repo_id, manifest, tag, protected).await
}

/// Stores the manifest and its references and moves the tag, checking no reference: a
/// push's after its check, a mirror's (whose blobs come later) alone.
pub(crate) async fn write<C: GenericClient>(
    c: &C,
    repo_id: i64,
    manifest: &NewManifest,
    tag: Option<&Tag>,
    protected: &ProtectedTags,
) -> Result<(), MetaError> {
    insert(c, repo_id, manifest).await?;
    let Some(tag) = tag else { return Ok(()) };
    let digest = manifest.digest.to_string();
    let immutable = protected.covers(tag.as_str());
    // An existing protected tag is not updated, but the conflict still locks its row, so
    // the read below sees the digest it keeps until this transaction ends: a concurrent
    // push that created or moved it first has committed (we waited for it) and is seen.
    let written = sql::query_opt(
        c,
        "INSERT INTO tags (repository_id, name, manifest_digest) VALUES ($1, $2, $3) \
         ON CONFLICT (repository_id, name) DO UPDATE \
         SET manifest_digest = EXCLUDED.manifest_digest, updated_at = now() \
         WHERE tags.manifest_digest <> EXCLUDED.manifest_digest AND NOT $4 \
         RETURNING 1",
        &[&repo_id, &tag.as_str(), &digest, &immutable],
    )
    .await?;
    if written.is_none() && immutable {
        let current = sql::query_opt(
            c,
            "SELECT manifest_digest FROM tags WHERE repository_id = $1 AND name = $2",
            &[&repo_id, &tag.as_str()],
        )
        .await?;
        if let Some(row) = current {
            if get::<String>(&row, 0)? != digest {
                return Err(MetaError::TagImmutable(tag.to_string()));
            }
        }
    }
    Ok(())
}

/// Fails with `MissingReferences` unless every reference is in the repository (a
/// quarantined blob is not: its bytes cannot be served). The rows
/// found stay locked (FOR KEY SHARE) until the transaction ends, so a concurrent unlink or
/// delete waits for this push instead of slipping in between check and commit.
async fn check_references<C: GenericClient>(
    c: &C,
    repo_id: i64,
    references: &[(Digest, ReferenceKind)],
) -> Result<(), MetaError> {
    let blobs = referenced(references, ReferenceKind::Blob);
    let manifests = referenced(references, ReferenceKind::Manifest);
    let mut found = BTreeSet::new();
    if !blobs.is_empty() {
        let rows = sql::query(
            c,
            "SELECT rb.digest FROM repository_blobs rb \
             WHERE rb.repository_id = $1 AND rb.digest = ANY($2) \
             AND NOT EXISTS (SELECT 1 FROM quarantined_blobs q WHERE q.digest = rb.digest) \
             FOR KEY SHARE OF rb",
            &[&repo_id, &blobs],
        )
        .await?;
        for row in &rows {
            found.insert((get::<String>(row, 0)?, kind_name(ReferenceKind::Blob)));
        }
    }
    if !manifests.is_empty() {
        let rows = sql::query(
            c,
            "SELECT digest FROM manifests WHERE repository_id = $1 AND digest = ANY($2) \
             FOR KEY SHARE",
            &[&repo_id, &manifests],
        )
        .await?;
        for row in &rows {
            found.insert((get::<String>(row, 0)?, kind_name(ReferenceKind::Manifest)));
        }
    }
    require_references(references, |digest, kind| {
        Ok(found.contains(&(digest.to_string(), kind_name(kind))))
    })
}

/// Inserts the manifest and its references; an identical manifest already there is kept
/// (and locked, so a concurrent delete cannot remove it before the tag points at it).
async fn insert<C: GenericClient>(c: &C, repo_id: i64, m: &NewManifest) -> Result<(), MetaError> {
    let digest = m.digest.to_string();
    let size = i64::try_from(m.content.len())
        .map_err(|_| MetaError::Backend("manifest too large".into()))?;
    let subject = m.subject.as_ref().map(Digest::to_string);
    for _ in 0..3 {
        let inserted = sql::query_opt(
            c,
            "INSERT INTO manifests \
             (repository_id, digest, media_type, artifact_type, content, parsed, size, subject_digest) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (repository_id, digest) DO NOTHING RETURNING 1",
            &[
                &repo_id,
                &digest,
                &m.media_type,
                &m.artifact_type,
                &m.content.as_ref(),
                &m.json,
                &size,
                &subject,
            ],
        )
        .await?;
        if inserted.is_some() {
            return insert_references(c, repo_id, &digest, &m.references).await;
        }
        let existing = sql::query_opt(
            c,
            "SELECT 1 FROM manifests WHERE repository_id = $1 AND digest = $2 FOR KEY SHARE",
            &[&repo_id, &digest],
        )
        .await?;
        if existing.is_some() {
            return Ok(());
        }
        // Deleted between our INSERT and SELECT: try again.
    }
    Err(MetaError::Backend(format!(
        "manifest {digest} was deleted repeatedly while being stored"
    )))
}

async fn insert_references<C: GenericClient>(
    c: &C,
    repo_id: i64,
    manifest_digest: &str,
    references: &[(Digest, ReferenceKind)],
) -> Result<(), MetaError> {
    if references.is_empty() {
        return Ok(());
    }
    let (digests, kinds): (Vec<String>, Vec<&str>) = references
        .iter()
        .map(|(d, k)| (d.to_string(), kind_name(*k)))
        .unzip();
    sql::execute(
        c,
        "INSERT INTO manifest_references (repository_id, manifest_digest, referenced_digest, kind) \
         SELECT $1, $2, r.digest, r.kind FROM unnest($3::text[], $4::text[]) AS r (digest, kind) \
         ON CONFLICT DO NOTHING",
        &[&repo_id, &manifest_digest, &digests, &kinds],
    )
    .await?;
    Ok(())
}

/// Deletes the manifest (and, by cascade, its tags) unless a protected tag points at it;
/// call inside a transaction. The manifest row is locked first, which waits for a push
/// tagging it (its foreign-key check holds the row) and holds back later ones, so the tags
/// read next are all the delete will remove.
pub(crate) async fn delete<C: GenericClient>(
    c: &C,
    repo: &RepoName,
    digest: &Digest,
    protected: &ProtectedTags,
) -> Result<bool, MetaError> {
    let Some(repo_id) = repos::id(c, repo).await? else {
        return Ok(false);
    };
    let digest = digest.to_string();
    if !protected.0.is_empty() {
        let locked = sql::query_opt(
            c,
            "SELECT 1 FROM manifests WHERE repository_id = $1 AND digest = $2 FOR UPDATE",
            &[&repo_id, &digest],
        )
        .await?;
        if locked.is_none() {
            return Ok(false);
        }
        let rows = sql::query(
            c,
            "SELECT name FROM tags WHERE repository_id = $1 AND manifest_digest = $2 \
             ORDER BY name",
            &[&repo_id, &digest],
        )
        .await?;
        let tags: Vec<String> = rows.iter().map(|r| get(r, 0)).collect::<Result<_, _>>()?;
        if let Some(tag) = protected.first_covered(tags.iter().map(String::as_str)) {
            return Err(MetaError::TagImmutable(tag.to_owned()));
        }
    }
    let n = sql::execute(
        c,
        "DELETE FROM manifests WHERE repository_id = $1 AND digest = $2",
        &[&repo_id, &digest],
    )
    .await?;
    Ok(n > 0)
}

/// Deletes the tag unless it is protected (then `TagImmutable` when it exists).
/// Deletes `tag` (only while it points at `pointing_at`, when given).
pub(crate) async fn delete_tag<C: GenericClient>(
    c: &C,
    repo: &RepoName,
    tag: &Tag,
    pointing_at: Option<&Digest>,
    protected: &ProtectedTags,
) -> Result<bool, MetaError> {
    if protected.covers(tag.as_str()) {
        let exists = sql::query_opt(
            c,
            "SELECT 1 FROM tags t JOIN repositories r ON r.id = t.repository_id \
             WHERE r.name = $1 AND t.name = $2",
            &[&repo.as_str(), &tag.as_str()],
        )
        .await?;
        return match exists {
            Some(_) => Err(MetaError::TagImmutable(tag.to_string())),
            None => Ok(false),
        };
    }
    let digest = pointing_at.map(ToString::to_string);
    let n = sql::execute(
        c,
        "DELETE FROM tags t USING repositories r \
         WHERE t.repository_id = r.id AND r.name = $1 AND t.name = $2 \
         AND ($3::text IS NULL OR t.manifest_digest = $3)",
        &[&repo.as_str(), &tag.as_str(), &digest],
    )
    .await?;
    Ok(n > 0)
}

pub(crate) async fn tags<C: GenericClient>(
    c: &C,
    repo: &RepoName,
    page: &Page,
) -> Result<Option<Vec<String>>, MetaError> {
    let Some(repo_id) = repos::id(c, repo).await? else {
        return Ok(None);
    };
    let after = page.last.as_deref().unwrap_or("");
    let limit = page.n.map(i64::from);
    // Tags are never empty, so `name > ''` is the first page; `LIMIT NULL` is no limit.
    let rows = sql::query(
        c,
        "SELECT name FROM tags WHERE repository_id = $1 AND name > $2 ORDER BY name LIMIT $3",
        &[&repo_id, &after, &limit],
    )
    .await?;
    rows.iter()
        .map(|r| get(r, 0))
        .collect::<Result<_, _>>()
        .map(Some)
}
