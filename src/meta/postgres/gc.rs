//! Garbage collection on PostgreSQL.
//!
//! Every deletion is two statements in one READ COMMITTED transaction: the first selects
//! candidates and locks them `FOR UPDATE SKIP LOCKED`; the second deletes those that are
//! still unreferenced. A push locks what it references `FOR KEY SHARE` (which conflicts with
//! `FOR UPDATE`) until it commits, so for every candidate one of these holds:
//! - the push held the row first: the row is skipped and survives this run;
//! - the push committed before the lock was taken: the second statement's snapshot is newer
//!   than the lock, sees the push's references, and keeps the row;
//! - the push came after the lock: it waits for this transaction, then finds the row gone
//!   and fails with MANIFEST_BLOB_UNKNOWN (or, for an upload, re-inserts the row itself).

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use cid::Cid;
use deadpool_postgres::{ClientWrapper, GenericClient, Object, Pool};
use uuid::Uuid;

use super::error::{db, pool as pool_error};
use super::sql::{self, blob_record, get, upload_chunk};
use crate::meta::gc::{
    GcLease, GcStore, SweepPolicy, Swept, SweptManifest, SweptUpload, TagRecord, TagRemoval,
    UnpinLease,
};
use crate::meta::sql_common::live_manifests;
use crate::meta::{BlobRecord, MetaError};
use crate::oci::{Digest, RepoName};

/// Session advisory lock key for "a GC run is in progress" ("ipfs-gc!" in ASCII).
const GC_LOCK: i64 = 0x6970_6673_2d67_6321;
/// Seed for hashing a CID into an advisory lock key (keeps them apart from other users of
/// `hashtextextended`).
const CID_LOCK_SEED: i64 = 0x0063_6964;

/// Takes the shared side of a CID's lock: call in every transaction that records a CID
/// (blob commit, upload chunk), so no unpin of that CID runs until the record is visible.
pub(crate) async fn lock_cid_shared<C: GenericClient>(c: &C, cid: &Cid) -> Result<(), MetaError> {
    sql::query_opt(
        c,
        "SELECT pg_advisory_xact_lock_shared(hashtextextended($1, $2))",
        &[&cid.to_string(), &CID_LOCK_SEED],
    )
    .await?;
    Ok(())
}

/// Seconds as PostgreSQL's `make_interval(secs => ...)` takes them.
fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

pub(crate) struct PgGcLease {
    // The session holding the advisory lock; closed on drop, which releases it.
    client: ClientWrapper,
}

#[async_trait]
impl GcLease for PgGcLease {
    async fn release(self: Box<Self>) {
        // On failure the connection is closed when dropped, which releases the lock too.
        let _ = self
            .client
            .execute("SELECT pg_advisory_unlock($1)", &[&GC_LOCK])
            .await;
    }
}

pub(crate) async fn try_gc_lease(pool: &Pool) -> Result<Option<Box<dyn GcLease>>, MetaError> {
    let object = pool.get().await.map_err(pool_error)?;
    // Detached from the pool: closing the connection on drop releases the session lock even
    // when the run is cancelled half-way.
    let client = Object::take(object);
    let row = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&GC_LOCK])
        .await
        .map_err(db)?;
    let locked: bool = row.try_get(0).map_err(db)?;
    Ok(locked.then(|| Box::new(PgGcLease { client }) as Box<dyn GcLease>))
}

pub(crate) struct PgUnpinLease {
    client: Option<Object>,
    cid: Cid,
    /// A query was started and has not answered: the call was abandoned (at its deadline).
    in_flight: bool,
}

#[async_trait]
impl UnpinLease for PgUnpinLease {
    async fn in_use(&mut self) -> Result<bool, MetaError> {
        let client = self
            .client
            .as_ref()
            .ok_or_else(|| MetaError::Backend("unpin lease already released".into()))?;
        self.in_flight = true;
        let in_use = super::blobs::cid_in_use(client, &self.cid).await;
        self.in_flight = false;
        in_use
    }
}

impl Drop for PgUnpinLease {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        // A COMMIT behind a query that never answered would keep the connection out of the
        // pool for as long; closing it ends the transaction as well.
        if self.in_flight {
            drop(Object::take(client));
            return;
        }
        // Ending the transaction releases the lock; it needs an await, so it runs as a task.
        // Without a runtime the connection is closed instead, which releases it too.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if client.batch_execute("COMMIT").await.is_err() {
                        drop(Object::take(client));
                    }
                });
            }
            Err(_) => drop(Object::take(client)),
        }
    }
}

pub(crate) async fn unpin_lease(pool: &Pool, cid: &Cid) -> Result<Box<dyn UnpinLease>, MetaError> {
    let client = pool.get().await.map_err(pool_error)?;
    let mut lease = PgUnpinLease {
        client: None,
        cid: *cid,
        in_flight: true,
    };
    client.batch_execute("BEGIN").await.map_err(db)?;
    // From here on, dropping the lease ends the transaction.
    lease.client = Some(client);
    if let Some(client) = lease.client.as_ref() {
        let locked = sql::query_opt(
            client,
            "SELECT pg_advisory_xact_lock(hashtextextended($1, $2))",
            &[&lease.cid.to_string(), &CID_LOCK_SEED],
        )
        .await;
        lease.in_flight = false;
        locked?;
    }
    Ok(Box::new(lease))
}

pub(crate) async fn sweep(
    pool: &Pool,
    policy: &SweepPolicy,
    dry_run: bool,
) -> Result<Swept, MetaError> {
    // A sweep may take longer than the statement limit that protects requests, so it
    // lifts that limit on a connection of its own, closed afterwards: neither the setting
    // nor a sweep abandoned half-way at its deadline reaches a request's connection.
    let mut client = Object::take(pool.get().await.map_err(pool_error)?);
    client
        .batch_execute("SET statement_timeout = 0")
        .await
        .map_err(db)?;
    sweep_steps(&mut client, policy, dry_run).await
}

async fn sweep_steps(
    client: &mut ClientWrapper,
    policy: &SweepPolicy,
    dry_run: bool,
) -> Result<Swept, MetaError> {
    let mut swept = Swept::default();
    if dry_run {
        // One transaction, rolled back: later steps see what earlier steps would delete.
        let tx = client.transaction().await.map_err(db)?;
        swept.tags = remove_tags(&tx, &policy.remove_tags).await?;
        swept.uploads = expire_uploads(&tx, policy.upload_expiry).await?;
        if policy.deletes_manifests() {
            swept.manifests = delete_manifests(&tx, policy).await?;
        }
        swept.links = delete_links(&tx, policy.grace_period).await?;
        swept.blobs = delete_blobs(&tx, policy.grace_period).await?;
        tx.rollback().await.map_err(db)?;
        return Ok(swept);
    }
    // One transaction per step, so locks are held no longer than each step needs.
    if !policy.remove_tags.is_empty() {
        let tx = client.transaction().await.map_err(db)?;
        swept.tags = remove_tags(&tx, &policy.remove_tags).await?;
        tx.commit().await.map_err(db)?;
    }
    let tx = client.transaction().await.map_err(db)?;
    swept.uploads = expire_uploads(&tx, policy.upload_expiry).await?;
    tx.commit().await.map_err(db)?;
    if policy.deletes_manifests() {
        let tx = client.transaction().await.map_err(db)?;
        swept.manifests = delete_manifests(&tx, policy).await?;
        tx.commit().await.map_err(db)?;
    }
    let tx = client.transaction().await.map_err(db)?;
    swept.links = delete_links(&tx, policy.grace_period).await?;
    tx.commit().await.map_err(db)?;
    let tx = client.transaction().await.map_err(db)?;
    swept.blobs = delete_blobs(&tx, policy.grace_period).await?;
    tx.commit().await.map_err(db)?;
    Ok(swept)
}

/// Ends sessions idle past the expiry; an append in progress holds its session row, so it
/// is skipped (and then is no longer idle).
async fn expire_uploads<C: GenericClient>(
    c: &C,
    expiry: Duration,
) -> Result<Vec<SweptUpload>, MetaError> {
    let rows = sql::query(
        c,
        "SELECT id FROM upload_sessions \
         WHERE updated_at < now() - make_interval(secs => $1) \
         FOR UPDATE SKIP LOCKED",
        &[&secs(expiry)],
    )
    .await?;
    let ids: Vec<Uuid> = rows.iter().map(|r| get(r, 0)).collect::<Result<_, _>>()?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let chunk_rows = sql::query(
        c,
        "DELETE FROM upload_chunks WHERE upload_id = ANY($1) \
         RETURNING byte_offset, size, cid, upload_id",
        &[&ids],
    )
    .await?;
    sql::execute(c, "DELETE FROM upload_sessions WHERE id = ANY($1)", &[&ids]).await?;
    let cids: Vec<String> = chunk_rows
        .iter()
        .map(|r| get(r, 2))
        .collect::<Result<_, _>>()?;
    queue_unpins(c, &cids).await?;
    let mut uploads: Vec<SweptUpload> = ids
        .into_iter()
        .map(|id| SweptUpload {
            id,
            chunks: Vec::new(),
        })
        .collect();
    for row in &chunk_rows {
        let id: Uuid = get(row, 3)?;
        if let Some(upload) = uploads.iter_mut().find(|u| u.id == id) {
            upload.chunks.push(upload_chunk(row)?);
        }
    }
    for upload in &mut uploads {
        upload.chunks.sort_by_key(|c| c.offset);
    }
    Ok(uploads)
}

/// Removes the tags named, each only while it still points at the digest and carries the
/// push time it was chosen with. A push moving one holds its row; the delete waits for it
/// and then, re-reading the row, finds it moved and leaves it.
async fn remove_tags<C: GenericClient>(
    c: &C,
    removals: &[TagRemoval],
) -> Result<Vec<TagRemoval>, MetaError> {
    if removals.is_empty() {
        return Ok(Vec::new());
    }
    let repositories: Vec<&str> = removals.iter().map(|r| r.repository.as_str()).collect();
    let tags: Vec<&str> = removals.iter().map(|r| r.record.tag.as_str()).collect();
    let digests: Vec<String> = removals
        .iter()
        .map(|r| r.record.digest.to_string())
        .collect();
    let times: Vec<SystemTime> = removals.iter().map(|r| r.record.updated_at).collect();
    let rows = sql::query(
        c,
        "DELETE FROM tags t USING repositories r, \
             unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[]) \
             AS d (repository, name, digest, updated_at) \
         WHERE r.name = d.repository AND t.repository_id = r.id AND t.name = d.name \
           AND t.manifest_digest = d.digest AND t.updated_at = d.updated_at \
         RETURNING r.name, t.name, t.manifest_digest, t.updated_at",
        &[&repositories, &tags, &digests, &times],
    )
    .await?;
    rows.iter()
        .map(|row| {
            Ok(TagRemoval {
                repository: get(row, 0)?,
                record: TagRecord {
                    tag: get(row, 1)?,
                    digest: sql::digest(row, 2)?,
                    updated_at: get(row, 3)?,
                },
            })
        })
        .collect()
}

/// The manifests to keep (see [`live_manifests`]). `$1` is the untagged retention in
/// seconds (NULL: keep them), `$2` and `$3` the repositories whose own retention replaces it.
fn live_clause() -> String {
    live_manifests(
        "expiry (repository_id, secs) AS ( \
            SELECT r.id, o.secs FROM unnest($2::text[], $3::float8[]) AS o (name, secs) \
            JOIN repositories r ON r.name = o.name \
         ),",
        "COALESCE(manifests.created_at >= now() - make_interval(secs => COALESCE( \
            (SELECT x.secs FROM expiry x WHERE x.repository_id = manifests.repository_id), \
            $1)), true)",
    )
}

async fn delete_manifests<C: GenericClient>(
    c: &C,
    policy: &SweepPolicy,
) -> Result<Vec<SweptManifest>, MetaError> {
    let live = live_clause();
    let default = policy.untagged_retention.map(secs);
    let (names, overrides): (Vec<&str>, Vec<f64>) = policy
        .untagged_by_repository
        .iter()
        .map(|(name, d)| (name.as_str(), secs(*d)))
        .unzip();
    let candidates = sql::query(
        c,
        &format!(
            "{live} SELECT m.repository_id, m.digest FROM manifests m \
             WHERE NOT EXISTS (SELECT 1 FROM live l \
                               WHERE l.repository_id = m.repository_id AND l.digest = m.digest) \
             FOR UPDATE OF m SKIP LOCKED"
        ),
        &[&default, &names, &overrides],
    )
    .await?;
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let (ids, digests) = pairs(&candidates)?;
    // A new statement: its snapshot includes every push that committed before our locks.
    let rows = sql::query(
        c,
        &format!(
            "{live} DELETE FROM manifests m USING repositories r \
             WHERE r.id = m.repository_id \
               AND (m.repository_id, m.digest) IN \
                   (SELECT * FROM unnest($4::bigint[], $5::text[])) \
               AND NOT EXISTS (SELECT 1 FROM live l \
                               WHERE l.repository_id = m.repository_id AND l.digest = m.digest) \
             RETURNING r.name, m.digest, m.size"
        ),
        &[&default, &names, &overrides, &ids, &digests],
    )
    .await?;
    rows.iter()
        .map(|row| {
            Ok(SweptManifest {
                repository: get(row, 0)?,
                digest: sql::digest(row, 1)?,
                size: sql::size(row, 2)?,
            })
        })
        .collect()
}

/// Removes repository links past the grace period that no manifest of that repository
/// references. A manifest put holds the links it checks (`FOR KEY SHARE`).
async fn delete_links<C: GenericClient>(c: &C, grace: Duration) -> Result<u64, MetaError> {
    const UNREFERENCED: &str = "rb.created_at < now() - make_interval(secs => $1) \
         AND NOT EXISTS (SELECT 1 FROM manifest_references r \
                         WHERE r.repository_id = rb.repository_id \
                           AND r.referenced_digest = rb.digest AND r.kind = 'blob')";
    let candidates = sql::query(
        c,
        &format!(
            "SELECT rb.repository_id, rb.digest FROM repository_blobs rb \
             WHERE {UNREFERENCED} FOR UPDATE SKIP LOCKED"
        ),
        &[&secs(grace)],
    )
    .await?;
    if candidates.is_empty() {
        return Ok(0);
    }
    let (ids, digests) = pairs(&candidates)?;
    sql::execute(
        c,
        &format!(
            "DELETE FROM repository_blobs rb \
             WHERE (rb.repository_id, rb.digest) IN \
                   (SELECT * FROM unnest($2::bigint[], $3::text[])) \
               AND {UNREFERENCED}"
        ),
        &[&secs(grace), &ids, &digests],
    )
    .await
}

/// Removes blob rows past the grace period that no repository links and no manifest
/// references. A commit or mount holds the blob row (`FOR KEY SHARE`, or the link's
/// foreign-key check) until it has linked it.
async fn delete_blobs<C: GenericClient>(
    c: &C,
    grace: Duration,
) -> Result<Vec<crate::meta::BlobRecord>, MetaError> {
    const UNUSED: &str = "b.created_at < now() - make_interval(secs => $1) \
         AND NOT EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest) \
         AND NOT EXISTS (SELECT 1 FROM manifest_references r \
                         WHERE r.referenced_digest = b.digest AND r.kind = 'blob')";
    let candidates = sql::query(
        c,
        &format!("SELECT b.digest FROM blobs b WHERE {UNUSED} FOR UPDATE SKIP LOCKED"),
        &[&secs(grace)],
    )
    .await?;
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let digests: Vec<String> = candidates
        .iter()
        .map(|r| get(r, 0))
        .collect::<Result<_, _>>()?;
    let rows = sql::query(
        c,
        &format!(
            "DELETE FROM blobs b WHERE b.digest = ANY($2) AND {UNUSED} \
             RETURNING b.digest, b.cid, b.size, b.import_profile"
        ),
        &[&secs(grace), &digests],
    )
    .await?;
    let cids: Vec<String> = rows.iter().map(|r| get(r, 1)).collect::<Result<_, _>>()?;
    queue_unpins(c, &cids).await?;
    rows.iter().map(|r| blob_record(r, 0)).collect()
}

pub(crate) async fn queue_unpins<C: GenericClient>(
    c: &C,
    cids: &[String],
) -> Result<(), MetaError> {
    if cids.is_empty() {
        return Ok(());
    }
    sql::execute(
        c,
        "INSERT INTO gc_unpin_queue (cid) SELECT DISTINCT unnest($1::text[]) \
         ON CONFLICT (cid) DO NOTHING",
        &[&cids],
    )
    .await?;
    Ok(())
}

/// The CIDs a query of one CID column answers, its `$1` the row limit.
async fn listed_cids(pool: &Pool, sql: &str, limit: u32) -> Result<Vec<Cid>, MetaError> {
    let client = pool.get().await.map_err(pool_error)?;
    let rows = sql::query(&client, sql, &[&i64::from(limit)]).await?;
    rows.iter().map(|r| sql::cid(r, 0)).collect()
}

/// Holds `cids` for the pending pin of `root` (see V11__pending_pins.sql).
pub(crate) async fn hold_for_pin<C: GenericClient>(
    c: &C,
    root: &Cid,
    cids: &[String],
) -> Result<(), MetaError> {
    if cids.is_empty() {
        return Ok(());
    }
    sql::execute(
        c,
        "INSERT INTO pending_pins (root, cid) SELECT $1, unnest($2::text[]) \
         ON CONFLICT DO NOTHING",
        &[&root.to_string(), &cids],
    )
    .await?;
    Ok(())
}

/// `(repository_id, digest)` rows as two arrays for `unnest`.
fn pairs(rows: &[tokio_postgres::Row]) -> Result<(Vec<i64>, Vec<String>), MetaError> {
    let mut ids = Vec::with_capacity(rows.len());
    let mut digests = Vec::with_capacity(rows.len());
    for row in rows {
        ids.push(get::<i64>(row, 0)?);
        digests.push(get::<String>(row, 1)?);
    }
    Ok((ids, digests))
}

#[async_trait]
impl GcStore for super::PostgresStore {
    async fn try_gc_lease(&self) -> Result<Option<Box<dyn GcLease>>, MetaError> {
        try_gc_lease(&self.pool).await
    }

    async fn sweep(&self, policy: &SweepPolicy, dry_run: bool) -> Result<Swept, MetaError> {
        sweep(&self.pool, policy, dry_run).await
    }

    async fn tag_records(&self, repo: &RepoName) -> Result<Vec<TagRecord>, MetaError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let rows = sql::query(
            &client,
            "SELECT t.name, t.manifest_digest, t.updated_at \
             FROM tags t JOIN repositories r ON r.id = t.repository_id WHERE r.name = $1",
            &[&repo.as_str()],
        )
        .await?;
        rows.iter()
            .map(|row| {
                Ok(TagRecord {
                    tag: get(row, 0)?,
                    digest: sql::digest(row, 1)?,
                    updated_at: get(row, 2)?,
                })
            })
            .collect()
    }

    async fn unpin_queue(&self, limit: u32) -> Result<Vec<Cid>, MetaError> {
        listed_cids(
            &self.pool,
            "SELECT cid FROM gc_unpin_queue ORDER BY queued_at, cid LIMIT $1",
            limit,
        )
        .await
    }

    async fn dequeue_unpins(&self, cids: &[Cid]) -> Result<(), MetaError> {
        if cids.is_empty() {
            return Ok(());
        }
        let cids: Vec<String> = cids.iter().map(ToString::to_string).collect();
        let client = self.pool.get().await.map_err(pool_error)?;
        sql::execute(
            &client,
            "DELETE FROM gc_unpin_queue WHERE cid = ANY($1)",
            &[&cids],
        )
        .await?;
        Ok(())
    }

    async fn unpin_lease(&self, cid: &Cid) -> Result<Box<dyn UnpinLease>, MetaError> {
        unpin_lease(&self.pool, cid).await
    }

    async fn recorded_cids(&self, cids: &[Cid]) -> Result<HashSet<Cid>, MetaError> {
        let texts: Vec<String> = cids.iter().map(ToString::to_string).collect();
        let client = self.pool.get().await.map_err(pool_error)?;
        let rows = sql::query(
            &client,
            "SELECT cid FROM blobs WHERE cid = ANY($1) \
             UNION SELECT cid FROM upload_chunks WHERE cid = ANY($1) \
             UNION SELECT cid FROM image_layouts WHERE cid = ANY($1) \
             UNION SELECT cid FROM federation_index WHERE cid = ANY($1) \
             UNION SELECT cid FROM pending_pins WHERE cid = ANY($1) \
             UNION SELECT cid FROM gc_unpin_queue WHERE cid = ANY($1)",
            &[&texts],
        )
        .await?;
        rows.iter().map(|r| sql::cid(r, 0)).collect()
    }

    async fn pending_pin_roots(&self, limit: u32) -> Result<Vec<Cid>, MetaError> {
        listed_cids(
            &self.pool,
            "SELECT root FROM pending_pins GROUP BY root ORDER BY min(held_at), root LIMIT $1",
            limit,
        )
        .await
    }

    async fn finish_pending_pin(&self, root: &Cid) -> Result<Vec<Cid>, MetaError> {
        let mut client = self.pool.get().await.map_err(pool_error)?;
        let tx = client.transaction().await.map_err(db)?;
        let rows = sql::query(
            &tx,
            "DELETE FROM pending_pins WHERE root = $1 RETURNING cid",
            &[&root.to_string()],
        )
        .await?;
        let held: Vec<String> = rows.iter().map(|r| get(r, 0)).collect::<Result<_, _>>()?;
        queue_unpins(&tx, &held).await?;
        tx.commit().await.map_err(db)?;
        rows.iter().map(|r| sql::cid(r, 0)).collect()
    }

    async fn blob_records(
        &self,
        after: Option<&Digest>,
        limit: u32,
    ) -> Result<Vec<BlobRecord>, MetaError> {
        let after = after.map(ToString::to_string).unwrap_or_default();
        let client = self.pool.get().await.map_err(pool_error)?;
        let rows = sql::query(
            &client,
            "SELECT digest, cid, size, import_profile FROM blobs \
             WHERE digest > $1 ORDER BY digest LIMIT $2",
            &[&after, &i64::from(limit)],
        )
        .await?;
        rows.iter().map(|r| blob_record(r, 0)).collect()
    }
}
