//! Garbage collection on the embedded SQLite store.
//!
//! Every write here is a `BEGIN IMMEDIATE` transaction, one writer at a time even across
//! processes, so a sweep step is one transaction that no push can interleave with: a
//! manifest put either committed before (its references are seen and keep what they use)
//! or runs after (and finds a swept blob missing: MANIFEST_BLOB_UNKNOWN). The CID file lock
//! (file_lock.rs) plays the part of PostgreSQL's advisory lock: recording a CID takes its
//! shared side, an unpin the exclusive side, so no unpin runs between a commit and the
//! moment its row is visible.

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use cid::Cid;
use rusqlite::{params, Connection};
use uuid::Uuid;

use super::error::{db, lock_error};
use super::sql::{from_millis, now_millis, to_millis};
use super::{blocking, SqliteStore};
use crate::file_lock::Held;
use crate::meta::gc::{
    GcLease, GcStore, SweepPolicy, Swept, SweptManifest, SweptUpload, TagRecord, TagRemoval,
    UnpinLease,
};
use crate::meta::sql_common::{corrupt, live_manifests, parse_cid, parse_digest, to_u64};
use crate::meta::{BlobRecord, MetaError};
use crate::oci::{Digest, RepoName};

fn cutoff(age: Duration) -> i64 {
    now_millis().saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX))
}

struct SqliteGcLease(#[allow(dead_code)] Held);

#[async_trait]
impl GcLease for SqliteGcLease {
    async fn release(self: Box<Self>) {}
}

struct SqliteUnpinLease {
    store: SqliteStore,
    cid: String,
    _exclusive: Held,
}

#[async_trait]
impl UnpinLease for SqliteUnpinLease {
    async fn in_use(&mut self) -> Result<bool, MetaError> {
        let cid = self.cid.clone();
        self.store.read(move |c| cid_in_use(c, &cid)).await
    }
}

pub(super) fn cid_in_use(c: &Connection, cid: &str) -> Result<bool, MetaError> {
    c.query_row(
        "SELECT EXISTS (SELECT 1 FROM blobs WHERE cid = ?1) \
             OR EXISTS (SELECT 1 FROM upload_chunks WHERE cid = ?1) \
             OR EXISTS (SELECT 1 FROM image_layouts WHERE cid = ?1) \
             OR EXISTS (SELECT 1 FROM federation_index WHERE cid = ?1) \
             OR EXISTS (SELECT 1 FROM pending_pins WHERE cid = ?1)",
        [cid],
        |row| row.get(0),
    )
    .map_err(db)
}

pub(super) fn queue_unpins(c: &Connection, cids: &[String]) -> Result<(), MetaError> {
    let mut statement = c
        .prepare_cached(
            "INSERT INTO gc_unpin_queue (cid, queued_at) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
        )
        .map_err(db)?;
    for cid in cids {
        statement.execute(params![cid, now_millis()]).map_err(db)?;
    }
    Ok(())
}

/// The CIDs a query of one CID column answers, its `?1` the row limit.
fn listed_cids(c: &Connection, sql: &str, limit: u32) -> Result<Vec<Cid>, MetaError> {
    let mut statement = c.prepare_cached(sql).map_err(db)?;
    let rows = statement
        .query_map([i64::from(limit)], |row| row.get::<_, String>(0))
        .map_err(db)?;
    rows.map(|row| parse_cid(&row.map_err(db)?)).collect()
}

/// Holds `cids` for the pending pin of `root` (see V11__pending_pins.sql).
pub(super) fn hold_for_pin(c: &Connection, root: &Cid, cids: &[String]) -> Result<(), MetaError> {
    let mut statement = c
        .prepare_cached(
            "INSERT INTO pending_pins (root, cid, held_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT DO NOTHING",
        )
        .map_err(db)?;
    let (root, now) = (root.to_string(), now_millis());
    for cid in cids {
        statement.execute(params![root, cid, now]).map_err(db)?;
    }
    Ok(())
}

fn expire_uploads(c: &Connection, expiry: Duration) -> Result<Vec<SweptUpload>, MetaError> {
    let ids: Vec<String> = {
        let mut statement = c
            .prepare("SELECT id FROM upload_sessions WHERE updated_at < ?1")
            .map_err(db)?;
        let rows = statement
            .query_map([cutoff(expiry)], |row| row.get(0))
            .map_err(db)?;
        rows.collect::<Result<_, _>>().map_err(db)?
    };
    let mut swept = Vec::with_capacity(ids.len());
    for id in ids {
        let id = Uuid::parse_str(&id).map_err(|e| corrupt(format_args!("upload id: {e}")))?;
        let chunks = super::uploads::end(c, id, None)?;
        let cids: Vec<String> = chunks.iter().map(|c| c.cid.to_string()).collect();
        queue_unpins(c, &cids)?;
        swept.push(SweptUpload { id, chunks });
    }
    Ok(swept)
}

/// Removes the tags named, each only while it still points at the digest and carries the
/// push time it was chosen with (the write transaction keeps pushes out meanwhile).
fn remove_tags(c: &Connection, removals: &[TagRemoval]) -> Result<Vec<TagRemoval>, MetaError> {
    let mut statement = c
        .prepare_cached(
            "DELETE FROM tags WHERE name = ?2 AND manifest_digest = ?3 AND updated_at = ?4 \
             AND repository_id = (SELECT id FROM repositories WHERE name = ?1)",
        )
        .map_err(db)?;
    let mut removed = Vec::new();
    for removal in removals {
        let record = &removal.record;
        let n = statement
            .execute(params![
                removal.repository,
                record.tag,
                record.digest.to_string(),
                to_millis(record.updated_at)
            ])
            .map_err(db)?;
        if n > 0 {
            removed.push(removal.clone());
        }
    }
    Ok(removed)
}

/// Deletes the manifests GC does not keep (see [`live_manifests`]).
fn delete_manifests(c: &Connection, policy: &SweepPolicy) -> Result<Vec<SweptManifest>, MetaError> {
    // Per repository, the creation time before which an untagged manifest goes: `?2` is a
    // JSON array of [name, cutoff] pairs; `?1` the cutoff elsewhere (NULL: none goes).
    let overrides = serde_json::Value::from(
        policy
            .untagged_by_repository
            .iter()
            .map(|(name, age)| serde_json::json!([name, cutoff(*age)]))
            .collect::<Vec<_>>(),
    )
    .to_string();
    let default = policy.untagged_retention.map(cutoff);
    let doomed: Vec<(i64, String, String, i64)> = {
        let mut statement = c
            .prepare(&format!(
                "{} SELECT m.repository_id, r.name, m.digest, m.size \
                 FROM manifests m JOIN repositories r ON r.id = m.repository_id \
                 WHERE NOT EXISTS (SELECT 1 FROM live l \
                                   WHERE l.repository_id = m.repository_id \
                                     AND l.digest = m.digest)",
                live_manifests(
                    "expiry (repository_id, cutoff) AS ( \
                        SELECT r.id, json_extract(j.value, '$[1]') FROM json_each(?2) j \
                        JOIN repositories r ON r.name = json_extract(j.value, '$[0]') \
                     ),",
                    "COALESCE(manifests.created_at >= COALESCE( \
                        (SELECT x.cutoff FROM expiry x \
                         WHERE x.repository_id = manifests.repository_id), ?1), 1)"
                )
            ))
            .map_err(db)?;
        let rows = statement
            .query_map(params![default, overrides], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })
            .map_err(db)?;
        rows.collect::<Result<_, _>>().map_err(db)?
    };
    let mut swept = Vec::with_capacity(doomed.len());
    for (repo_id, repository, digest, size) in doomed {
        c.execute(
            "DELETE FROM manifests WHERE repository_id = ?1 AND digest = ?2",
            params![repo_id, digest],
        )
        .map_err(db)?;
        swept.push(SweptManifest {
            repository,
            digest: parse_digest(&digest)?,
            size: to_u64(size, "manifest size")?,
        });
    }
    Ok(swept)
}

fn delete_links(c: &Connection, grace: Duration) -> Result<u64, MetaError> {
    let removed = c
        .execute(
            "DELETE FROM repository_blobs AS rb \
             WHERE rb.created_at < ?1 \
               AND NOT EXISTS (SELECT 1 FROM manifest_references r \
                               WHERE r.repository_id = rb.repository_id \
                                 AND r.referenced_digest = rb.digest AND r.kind = 'blob')",
            [cutoff(grace)],
        )
        .map_err(db)?;
    Ok(removed as u64)
}

fn delete_blobs(c: &Connection, grace: Duration) -> Result<Vec<BlobRecord>, MetaError> {
    // One statement: under BEGIN IMMEDIATE no push can link a blob between the check and
    // the delete (PostgreSQL needs row locks for that; see postgres/gc.rs).
    let swept: Vec<BlobRecord> = {
        let mut statement = c
            .prepare_cached(
                "DELETE FROM blobs AS b \
                 WHERE b.created_at < ?1 \
                   AND NOT EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest) \
                   AND NOT EXISTS (SELECT 1 FROM manifest_references r \
                                   WHERE r.referenced_digest = b.digest AND r.kind = 'blob') \
                 RETURNING digest, cid, size, import_profile",
            )
            .map_err(db)?;
        let rows = statement
            .query_map([cutoff(grace)], super::blobs::record)
            .map_err(db)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db)?;
        rows.into_iter()
            .map(super::blobs::to_record)
            .collect::<Result<_, _>>()?
    };
    let cids: Vec<String> = swept.iter().map(|b| b.cid.to_string()).collect();
    queue_unpins(c, &cids)?;
    Ok(swept)
}

fn sweep_steps(c: &Connection, policy: &SweepPolicy) -> Result<Swept, MetaError> {
    let mut swept = Swept {
        tags: remove_tags(c, &policy.remove_tags)?,
        uploads: expire_uploads(c, policy.upload_expiry)?,
        ..Swept::default()
    };
    if policy.deletes_manifests() {
        swept.manifests = delete_manifests(c, policy)?;
    }
    swept.links = delete_links(c, policy.grace_period)?;
    swept.blobs = delete_blobs(c, policy.grace_period)?;
    Ok(swept)
}

#[async_trait]
impl GcStore for SqliteStore {
    async fn try_gc_lease(&self) -> Result<Option<Box<dyn GcLease>>, MetaError> {
        let store = self.clone();
        let held = blocking(move || {
            let lock = &store.inner.gc_lock;
            lock.try_exclusive().map_err(|e| lock_error(lock, e))
        })
        .await?;
        Ok(held.map(|held| Box::new(SqliteGcLease(held)) as Box<dyn GcLease>))
    }

    async fn sweep(&self, policy: &SweepPolicy, dry_run: bool) -> Result<Swept, MetaError> {
        let policy = policy.clone();
        // One transaction: a dry run rolls it back, so later steps still see what earlier
        // ones would delete.
        self.write_if(move |tx| Ok((sweep_steps(tx, &policy)?, !dry_run)))
            .await
    }

    async fn tag_records(&self, repo: &RepoName) -> Result<Vec<TagRecord>, MetaError> {
        let repo = repo.clone();
        self.read(move |c| {
            let mut statement = c
                .prepare_cached(
                    "SELECT t.name, t.manifest_digest, t.updated_at \
                     FROM tags t JOIN repositories r ON r.id = t.repository_id \
                     WHERE r.name = ?1",
                )
                .map_err(db)?;
            let rows = statement
                .query_map([repo.as_str()], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, i64>(2)?,
                    ))
                })
                .map_err(db)?;
            rows.map(|row| {
                let (tag, digest, updated_at) = row.map_err(db)?;
                Ok(TagRecord {
                    tag,
                    digest: parse_digest(&digest)?,
                    updated_at: from_millis(updated_at),
                })
            })
            .collect()
        })
        .await
    }

    async fn unpin_queue(&self, limit: u32) -> Result<Vec<Cid>, MetaError> {
        self.read(move |c| {
            listed_cids(
                c,
                "SELECT cid FROM gc_unpin_queue ORDER BY queued_at, cid LIMIT ?1",
                limit,
            )
        })
        .await
    }

    async fn pending_pin_roots(&self, limit: u32) -> Result<Vec<Cid>, MetaError> {
        self.read(move |c| {
            listed_cids(
                c,
                "SELECT root FROM pending_pins GROUP BY root \
                 ORDER BY min(held_at), root LIMIT ?1",
                limit,
            )
        })
        .await
    }

    async fn finish_pending_pin(&self, root: &Cid) -> Result<Vec<Cid>, MetaError> {
        let root = root.to_string();
        self.write(move |tx| {
            let held: Vec<String> = {
                let mut statement = tx
                    .prepare_cached("DELETE FROM pending_pins WHERE root = ?1 RETURNING cid")
                    .map_err(db)?;
                let rows = statement.query_map([&root], |row| row.get(0)).map_err(db)?;
                rows.collect::<Result<_, _>>().map_err(db)?
            };
            queue_unpins(tx, &held)?;
            held.iter().map(|cid| parse_cid(cid)).collect()
        })
        .await
    }

    async fn dequeue_unpins(&self, cids: &[Cid]) -> Result<(), MetaError> {
        if cids.is_empty() {
            return Ok(());
        }
        let cids: Vec<String> = cids.iter().map(ToString::to_string).collect();
        self.write(move |tx| {
            let mut statement = tx
                .prepare_cached("DELETE FROM gc_unpin_queue WHERE cid = ?1")
                .map_err(db)?;
            for cid in cids {
                statement.execute([cid]).map_err(db)?;
            }
            Ok(())
        })
        .await
    }

    async fn unpin_lease(&self, cid: &Cid) -> Result<Box<dyn UnpinLease>, MetaError> {
        let store = self.clone();
        let exclusive = blocking(move || {
            let lock = &store.inner.cid_lock;
            lock.exclusive().map_err(|e| lock_error(lock, e))
        })
        .await?;
        Ok(Box::new(SqliteUnpinLease {
            store: self.clone(),
            cid: cid.to_string(),
            _exclusive: exclusive,
        }))
    }

    async fn recorded_cids(&self, cids: &[Cid]) -> Result<HashSet<Cid>, MetaError> {
        let cids = cids.to_vec();
        self.read(move |c| {
            let mut statement = c
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM blobs WHERE cid = ?1) \
                         OR EXISTS (SELECT 1 FROM upload_chunks WHERE cid = ?1) \
                         OR EXISTS (SELECT 1 FROM image_layouts WHERE cid = ?1) \
                         OR EXISTS (SELECT 1 FROM federation_index WHERE cid = ?1) \
                         OR EXISTS (SELECT 1 FROM pending_pins WHERE cid = ?1) \
                         OR EXISTS (SELECT 1 FROM gc_unpin_queue WHERE cid = ?1)",
                )
                .map_err(db)?;
            let mut recorded = HashSet::new();
            for cid in cids {
                let known: bool = statement
                    .query_row([cid.to_string()], |row| row.get(0))
                    .map_err(db)?;
                if known {
                    recorded.insert(cid);
                }
            }
            Ok(recorded)
        })
        .await
    }

    async fn blob_records(
        &self,
        after: Option<&Digest>,
        limit: u32,
    ) -> Result<Vec<BlobRecord>, MetaError> {
        let after = after.map(ToString::to_string).unwrap_or_default();
        self.read(move |c| {
            let mut statement = c
                .prepare_cached(
                    "SELECT b.digest, b.cid, b.size, b.import_profile FROM blobs b \
                     WHERE b.digest > ?1 ORDER BY b.digest LIMIT ?2",
                )
                .map_err(db)?;
            let rows = statement
                .query_map(params![after, i64::from(limit)], super::blobs::record)
                .map_err(db)?;
            rows.map(|row| super::blobs::to_record(row.map_err(db)?))
                .collect()
        })
        .await
    }
}
