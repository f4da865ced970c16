//! The referrers index: manifests whose `subject` is a given digest.

use rusqlite::{params, Connection};

use super::error::db;
use crate::meta::sql_common::{corrupt, parse_digest, referrer};
use crate::meta::MetaError;
use crate::oci::{Descriptor, RepoName};

pub(crate) fn referrers(
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
                serde_json::from_str(&text)
                    .map_err(|e| corrupt(format_args!("manifest annotations: {e}")))
            })
            .transpose()?;
        referrer(
            media_type,
            parse_digest(&digest)?,
            size,
            artifact_type,
            annotations,
        )
    })
    .collect()
}
