//! The referrers index: manifests whose `subject` is a given digest.

use deadpool_postgres::GenericClient;

use super::sql::{self, get};
use crate::meta::sql_common::referrer;
use crate::meta::MetaError;
use crate::oci::{Descriptor, Digest, RepoName};

pub(crate) async fn referrers<C: GenericClient>(
    c: &C,
    repo: &RepoName,
    subject: &Digest,
    artifact_type: Option<&str>,
) -> Result<Vec<Descriptor>, MetaError> {
    // One range scan of manifests_referrers_idx (repository_id, subject_digest, digest),
    // already in digest order: no sort.
    let rows = sql::query(
        c,
        "SELECT m.media_type, m.digest, m.size, m.artifact_type, m.parsed -> 'annotations' \
         FROM manifests m \
         WHERE m.repository_id = (SELECT id FROM repositories WHERE name = $1) \
           AND m.subject_digest = $2 \
           AND ($3::text IS NULL OR m.artifact_type = $3::text) \
         ORDER BY m.digest",
        &[&repo.as_str(), &subject.to_string(), &artifact_type],
    )
    .await?;
    rows.iter()
        .map(|row| {
            referrer(
                get(row, 0)?,
                sql::digest(row, 1)?,
                get(row, 2)?,
                get(row, 3)?,
                get(row, 4)?,
            )
        })
        .collect()
}
