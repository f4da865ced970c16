//! The `GcStore` contract, on every metadata store (common::backends): what a sweep takes
//! under each policy, the unpin queue, the leases, and the scans GC and `verify` use.
//! The registry's garbage collection end to end (pins, HTTP, races with pushes) is in gc.rs.

#[macro_use]
mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use cid::Cid;
use common::backends::MetaBackend;
use common::meta::*;
use ipfs_registry::meta::gc::{
    SweepPolicy, Swept, SweptManifest, SweptUpload, TagRecord, TagRemoval,
};
use ipfs_registry::meta::{PendingPin, UploadChunk};
use ipfs_registry::oci::{Digest, Reference, RepoName};

on_every_meta_store!(
    the_grace_period_keeps_young_blobs_and_the_rest_goes,
    untagged_retention_takes_only_what_no_tag_reaches,
    expired_uploads_are_ended_and_their_chunks_queued,
    ending_an_upload_queues_its_chunks_but_not_its_blob,
    a_pending_pin_holds_chunks_and_nodes_until_finished,
    a_pending_pin_of_a_root_not_stored_holds_nothing,
    a_dry_run_reports_the_real_run_and_changes_nothing,
    the_unpin_queue_is_oldest_first_until_dequeued,
    an_unpin_lease_sees_blobs_and_live_upload_chunks,
    an_unpin_lease_holds_back_recording_its_cid,
    one_gc_lease_at_a_time,
    recorded_cids_are_blobs_live_chunks_and_queued_unpins,
    blob_records_page_through_every_blob_in_digest_order,
    tag_removals_take_only_tags_no_push_has_moved_since,
    untagged_retention_per_repository_replaces_the_default,
    a_kept_referrer_keeps_its_subject,
);

const HOUR: Duration = Duration::from_secs(3600);

fn policy(grace: Duration, retention: Option<Duration>, expiry: Duration) -> SweepPolicy {
    SweepPolicy {
        grace_period: grace,
        untagged_retention: retention,
        upload_expiry: expiry,
        ..SweepPolicy::default()
    }
}

/// A sweep that deletes what `policy` allows (not a dry run).
async fn sweep(store: &dyn MetaBackend, policy: &SweepPolicy) -> Swept {
    store.sweep(policy, false).await.expect("sweep")
}

/// Lets the clock pass what was just written: stores keep creation times to the
/// millisecond, and a sweep with no grace takes only rows strictly older than its start.
async fn tick() {
    tokio::time::sleep(Duration::from_millis(2)).await;
}

fn digests_of(blobs: &[ipfs_registry::meta::BlobRecord]) -> HashSet<Digest> {
    blobs.iter().map(|b| b.digest.clone()).collect()
}

async fn the_grace_period_keeps_young_blobs_and_the_rest_goes(store: Arc<dyn MetaBackend>) {
    let r = repo("gc/grace");
    let loose = blob(b"loose");
    let shared = blob(b"shared");
    store.commit_blob(&r, loose.clone()).await.unwrap();
    store.commit_blob(&r, shared.clone()).await.unwrap();
    store
        .commit_blob(&repo("gc/other"), shared.clone())
        .await
        .unwrap();
    let image = pushed_image(&*store, &r, "kept").await;
    store
        .put_manifest(&r, image.clone(), Some(&tag("v1")))
        .await
        .unwrap();
    tick().await;

    let swept = sweep(&*store, &policy(HOUR, None, HOUR)).await;
    assert_eq!((swept.links, swept.blobs.len()), (0, 0), "{swept:?}");

    let swept = sweep(&*store, &policy(Duration::ZERO, None, HOUR)).await;
    // Three unreferenced links (loose, and shared in both repositories); only the loose
    // blob's row goes with them, as every link of shared went too. The image's stay.
    assert_eq!(swept.links, 3, "{swept:?}");
    assert_eq!(
        digests_of(&swept.blobs),
        HashSet::from([loose.digest.clone(), shared.digest.clone()])
    );
    assert_eq!(
        swept.blobs.iter().find(|b| b.digest == loose.digest),
        Some(&loose)
    );
    assert_eq!(store.blob(&loose.digest).await.unwrap(), None);
    assert_eq!(
        store.repository_blob(&r, &shared.digest).await.unwrap(),
        None
    );
    for (digest, _) in &image.references {
        assert!(store.repository_blob(&r, digest).await.unwrap().is_some());
    }
    let queued: HashSet<Cid> = store.unpin_queue(100).await.unwrap().into_iter().collect();
    assert_eq!(queued, HashSet::from([loose.cid, shared.cid]));
}

async fn untagged_retention_takes_only_what_no_tag_reaches(store: Arc<dyn MetaBackend>) {
    let r = repo("gc/retention");
    // A tagged index over an untagged child, a referrer of the child, a tagged image, and
    // an untagged orphan with a referrer of its own.
    let child = pushed_image(&*store, &r, "child").await;
    store.put_manifest(&r, child.clone(), None).await.unwrap();
    let idx = index(&[&child]);
    store
        .put_manifest(&r, idx.clone(), Some(&tag("multi")))
        .await
        .unwrap();
    let note_config = blob(b"note config");
    store.commit_blob(&r, note_config.clone()).await.unwrap();
    let child_note = image_with(&note_config, &[], Some(&child.digest), Some("x/note"), None);
    store
        .put_manifest(&r, child_note.clone(), None)
        .await
        .unwrap();
    let tagged = pushed_image(&*store, &r, "tagged").await;
    store
        .put_manifest(&r, tagged.clone(), Some(&tag("v1")))
        .await
        .unwrap();
    let orphan = pushed_image(&*store, &r, "orphan").await;
    store.put_manifest(&r, orphan.clone(), None).await.unwrap();
    let orphan_note = image_with(
        &note_config,
        &[],
        Some(&orphan.digest),
        Some("x/note"),
        None,
    );
    store
        .put_manifest(&r, orphan_note.clone(), None)
        .await
        .unwrap();
    tick().await;

    // No retention window: every manifest stays.
    let swept = sweep(&*store, &policy(Duration::ZERO, None, HOUR)).await;
    assert!(swept.manifests.is_empty(), "{swept:?}");
    assert!(swept.blobs.is_empty(), "{swept:?}");
    // A long window keeps the young orphan.
    let swept = sweep(&*store, &policy(Duration::ZERO, Some(HOUR), HOUR)).await;
    assert!(swept.manifests.is_empty(), "{swept:?}");

    let swept = sweep(&*store, &policy(Duration::ZERO, Some(Duration::ZERO), HOUR)).await;
    let mut manifests = swept.manifests.clone();
    manifests.sort_by_key(|m| m.digest.to_string());
    let mut expected: Vec<SweptManifest> = [&orphan, &orphan_note]
        .iter()
        .map(|m| SweptManifest {
            repository: r.to_string(),
            digest: m.digest.clone(),
            size: m.content.len() as u64,
        })
        .collect();
    expected.sort_by_key(|m| m.digest.to_string());
    assert_eq!(manifests, expected);
    // The orphan's blobs went in the same sweep; the note's config is still referenced.
    assert_eq!(
        digests_of(&swept.blobs),
        orphan.references.iter().map(|(d, _)| d.clone()).collect()
    );
    for kept in [&child, &idx, &child_note, &tagged] {
        assert!(by_digest(&*store, &r, &kept.digest).await.is_some());
    }

    // Untagging the index makes its whole tree collectable.
    assert!(store.delete_tag(&r, &tag("multi")).await.unwrap());
    tick().await;
    let swept = sweep(&*store, &policy(Duration::ZERO, Some(Duration::ZERO), HOUR)).await;
    let gone: HashSet<Digest> = swept.manifests.into_iter().map(|m| m.digest).collect();
    assert_eq!(
        gone,
        HashSet::from([
            idx.digest.clone(),
            child.digest.clone(),
            child_note.digest.clone()
        ])
    );
    assert!(by_digest(&*store, &r, &tagged.digest).await.is_some());
}

fn chunk(offset: u64, data: &[u8]) -> UploadChunk {
    UploadChunk {
        offset,
        size: data.len() as u64,
        cid: cid_of(data),
    }
}

async fn expired_uploads_are_ended_and_their_chunks_queued(store: Arc<dyn MetaBackend>) {
    let r = repo("gc/uploads");
    let stale = store.create_upload(&r, vec![]).await.unwrap();
    let chunks = [chunk(0, b"first"), chunk(5, b"second")];
    for (i, c) in chunks.iter().enumerate() {
        assert!(store
            .append_upload_chunk(stale.id, c.clone(), vec![i as u8])
            .await
            .unwrap());
    }
    tick().await;
    let swept = sweep(&*store, &policy(HOUR, None, HOUR)).await;
    assert!(swept.uploads.is_empty(), "{swept:?}");

    let swept = sweep(&*store, &policy(HOUR, None, Duration::ZERO)).await;
    assert_eq!(
        swept.uploads,
        vec![SweptUpload {
            id: stale.id,
            chunks: chunks.to_vec(),
        }]
    );
    assert!(store.upload(&r, stale.id).await.unwrap().is_none());
    let queued: HashSet<Cid> = store.unpin_queue(10).await.unwrap().into_iter().collect();
    assert_eq!(queued, chunks.iter().map(|c| c.cid).collect());

    // A session that is used again is no longer idle.
    let fresh = store.create_upload(&r, vec![]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(store
        .append_upload_chunk(fresh.id, chunk(0, b"late"), vec![])
        .await
        .unwrap());
    let swept = sweep(&*store, &policy(HOUR, None, Duration::from_secs(1))).await;
    assert!(swept.uploads.is_empty(), "{swept:?}");
    assert!(store.upload(&r, fresh.id).await.unwrap().is_some());
}

async fn a_dry_run_reports_the_real_run_and_changes_nothing(store: Arc<dyn MetaBackend>) {
    let r = repo("gc/dry");
    let orphan = pushed_image(&*store, &r, "orphan").await;
    store.put_manifest(&r, orphan.clone(), None).await.unwrap();
    let loose = blob(b"loose");
    store.commit_blob(&r, loose.clone()).await.unwrap();
    let upload = store.create_upload(&r, vec![]).await.unwrap();
    assert!(store
        .append_upload_chunk(upload.id, chunk(0, b"chunk"), vec![])
        .await
        .unwrap());
    tick().await;
    let everything = policy(Duration::ZERO, Some(Duration::ZERO), Duration::ZERO);

    let dry = store.sweep(&everything, true).await.unwrap();
    assert_eq!(dry.manifests.len(), 1, "{dry:?}");
    assert_eq!(dry.uploads.len(), 1, "{dry:?}");
    // Later steps see what earlier ones would delete: the orphan's blobs go with it.
    assert_eq!(dry.blobs.len(), 3, "{dry:?}");
    assert!(by_digest(&*store, &r, &orphan.digest).await.is_some());
    assert_eq!(
        store.blob(&loose.digest).await.unwrap(),
        Some(loose.clone())
    );
    assert!(store.upload(&r, upload.id).await.unwrap().is_some());
    assert!(store.unpin_queue(10).await.unwrap().is_empty());

    let real = sweep(&*store, &everything).await;
    let sorted = |mut blobs: Vec<ipfs_registry::meta::BlobRecord>| {
        blobs.sort_by_key(|b| b.digest.to_string());
        blobs
    };
    assert_eq!(real.manifests, dry.manifests);
    assert_eq!(real.uploads, dry.uploads);
    assert_eq!(real.links, dry.links);
    assert_eq!(sorted(real.blobs), sorted(dry.blobs));
    assert_eq!(store.unpin_queue(10).await.unwrap().len(), 4);
    assert!(store
        .manifest(&r, &Reference::Digest(orphan.digest.clone()))
        .await
        .unwrap()
        .is_none());
}

/// Commits a blob nothing references and sweeps it: its CID is queued.
/// An ended session's chunks are queued for unpinning in the same transaction, so a crash
/// before the registry releases them leaves them to GC; the chunk that is itself the blob
/// (a one-chunk upload) is not.
async fn ending_an_upload_queues_its_chunks_but_not_its_blob(store: Arc<dyn MetaBackend>) {
    let r = repo("gc/ended");
    let queued = |store: Arc<dyn MetaBackend>| async move {
        let cids = store.unpin_queue(10).await.unwrap();
        cids.into_iter().collect::<HashSet<Cid>>()
    };

    let whole = blob(b"one chunk");
    let single = store.create_upload(&r, vec![]).await.unwrap();
    assert!(store
        .append_upload_chunk(single.id, chunk(0, b"one chunk"), vec![])
        .await
        .unwrap());
    store
        .complete_upload(single.id, &r, whole.clone())
        .await
        .unwrap();
    assert!(queued(store.clone()).await.is_empty());

    let joined = blob(b"two chunks");
    let parts = [chunk(0, b"two "), chunk(4, b"chunks")];
    let double = store.create_upload(&r, vec![]).await.unwrap();
    for part in &parts {
        assert!(store
            .append_upload_chunk(double.id, part.clone(), vec![])
            .await
            .unwrap());
    }
    let (_, returned) = store.complete_upload(double.id, &r, joined).await.unwrap();
    assert_eq!(returned, parts.to_vec());
    let expected: HashSet<Cid> = parts.iter().map(|c| c.cid).collect();
    assert_eq!(queued(store.clone()).await, expected);

    let abandoned = store.create_upload(&r, vec![]).await.unwrap();
    let left = chunk(0, b"abandoned");
    assert!(store
        .append_upload_chunk(abandoned.id, left.clone(), vec![])
        .await
        .unwrap());
    store.delete_upload(abandoned.id).await.unwrap();
    let mut expected = expected;
    expected.insert(left.cid);
    assert_eq!(queued(store.clone()).await, expected);
    // Ending a session that is gone queues nothing more.
    assert!(store.delete_upload(abandoned.id).await.unwrap().is_empty());
    assert_eq!(queued(store).await, expected);
}

async fn queue_one(store: &dyn MetaBackend, data: &[u8]) -> Cid {
    let record = blob(data);
    store
        .commit_blob(&repo("gc/queue"), record.clone())
        .await
        .unwrap();
    tick().await;
    let swept = sweep(store, &policy(Duration::ZERO, None, HOUR)).await;
    assert_eq!(swept.blobs, vec![record.clone()]);
    tick().await;
    record.cid
}

async fn the_unpin_queue_is_oldest_first_until_dequeued(store: Arc<dyn MetaBackend>) {
    assert!(store.unpin_queue(10).await.unwrap().is_empty());
    let first = queue_one(&*store, b"first").await;
    let second = queue_one(&*store, b"second").await;
    let third = queue_one(&*store, b"third").await;
    assert_eq!(
        store.unpin_queue(10).await.unwrap(),
        vec![first, second, third]
    );
    assert_eq!(store.unpin_queue(2).await.unwrap(), vec![first, second]);

    store.dequeue_unpins(&[second]).await.unwrap();
    assert_eq!(store.unpin_queue(10).await.unwrap(), vec![first, third]);
    // Dequeuing what is not queued, or nothing, is fine.
    store.dequeue_unpins(&[second]).await.unwrap();
    store.dequeue_unpins(&[]).await.unwrap();
    store
        .dequeue_unpins(&[cid_of(b"never queued"), first, third])
        .await
        .unwrap();
    assert!(store.unpin_queue(10).await.unwrap().is_empty());
}

/// The CIDs queued for unpinning.
async fn queued(store: &dyn MetaBackend) -> HashSet<Cid> {
    store.unpin_queue(100).await.unwrap().into_iter().collect()
}

/// A session of two chunks, ready to complete.
async fn two_chunk_upload(store: &dyn MetaBackend, r: &RepoName) -> (uuid::Uuid, Vec<UploadChunk>) {
    let parts = vec![chunk(0, b"two "), chunk(4, b"chunks")];
    let upload = store.create_upload(r, vec![]).await.unwrap();
    for part in &parts {
        assert!(store
            .append_upload_chunk(upload.id, part.clone(), vec![])
            .await
            .unwrap());
    }
    (upload.id, parts)
}

/// Completes session `id` as the blob `joined`, pinned in part (one direct interior node,
/// which is returned with the stored record).
async fn complete_joined(
    store: &dyn MetaBackend,
    r: &RepoName,
    id: uuid::Uuid,
    joined: &ipfs_registry::meta::BlobRecord,
) -> (ipfs_registry::meta::BlobRecord, Cid) {
    let node = cid_of(b"an interior node");
    let pending = PendingPin {
        root: joined.cid,
        direct: vec![node],
    };
    let (stored, _) = store
        .complete_upload_with_notices(id, r, joined.clone(), Some(&pending), &[])
        .await
        .unwrap();
    (stored, node)
}

/// A joined blob pinned only directly: its chunks and directly pinned nodes stay in use
/// (GC and the start-up check leave them) and unqueued until the recursive pin is made;
/// finishing queues them, once.
async fn a_pending_pin_holds_chunks_and_nodes_until_finished(store: Arc<dyn MetaBackend>) {
    let r = repo("gc/pending");
    let (id, parts) = two_chunk_upload(&*store, &r).await;
    let joined = blob(b"two chunks");
    let (stored, node) = complete_joined(&*store, &r, id, &joined).await;
    assert_eq!(stored, joined);
    assert!(queued(&*store).await.is_empty());
    let held: HashSet<Cid> = parts.iter().map(|c| c.cid).chain([node]).collect();
    for cid in &held {
        assert!(in_use(&*store, cid).await, "{cid} is held");
    }
    assert_eq!(
        store
            .recorded_cids(&Vec::from_iter(held.clone()))
            .await
            .unwrap(),
        held
    );
    assert_eq!(store.pending_pin_roots(10).await.unwrap(), vec![joined.cid]);

    let mut finished = store.finish_pending_pin(&joined.cid).await.unwrap();
    finished.sort();
    let mut expected = Vec::from_iter(held.clone());
    expected.sort();
    assert_eq!(finished, expected);
    assert_eq!(queued(&*store).await, held);
    for cid in &held {
        assert!(!in_use(&*store, cid).await, "{cid} is released");
    }
    assert!(in_use(&*store, &joined.cid).await);
    assert!(store.pending_pin_roots(10).await.unwrap().is_empty());
    assert!(store
        .finish_pending_pin(&joined.cid)
        .await
        .unwrap()
        .is_empty());
}

/// When the digest was stored meanwhile under another CID, the joined root is recorded by
/// nothing: it is queued with its chunks and nodes, and nothing waits for its pin.
async fn a_pending_pin_of_a_root_not_stored_holds_nothing(store: Arc<dyn MetaBackend>) {
    let r = repo("gc/pending-other");
    let joined = blob(b"two chunks");
    let earlier = ipfs_registry::meta::BlobRecord {
        cid: cid_of(b"the same bytes under an older profile"),
        ..joined.clone()
    };
    store.commit_blob(&r, earlier.clone()).await.unwrap();
    let (id, parts) = two_chunk_upload(&*store, &r).await;
    let (stored, node) = complete_joined(&*store, &r, id, &joined).await;
    assert_eq!(stored, earlier);
    let expected: HashSet<Cid> = parts
        .iter()
        .map(|c| c.cid)
        .chain([node, joined.cid])
        .collect();
    assert_eq!(queued(&*store).await, expected);
    assert!(store.pending_pin_roots(10).await.unwrap().is_empty());
    for cid in &expected {
        assert!(!in_use(&*store, cid).await, "{cid} is not held");
    }
}

/// Whether the store records `cid`, asked under its unpin lease (released at once).
async fn in_use(store: &dyn MetaBackend, cid: &Cid) -> bool {
    let mut lease = store.unpin_lease(cid).await.expect("unpin lease");
    lease.in_use().await.expect("in use")
}

async fn an_unpin_lease_sees_blobs_and_live_upload_chunks(store: Arc<dyn MetaBackend>) {
    let r = repo("gc/cids");
    let record = blob(b"blob bytes");
    let chunk_cid = cid_of(b"chunk bytes");

    assert!(!in_use(&*store, &record.cid).await);
    assert!(!in_use(&*store, &chunk_cid).await);

    store.commit_blob(&r, record.clone()).await.expect("commit");
    assert!(in_use(&*store, &record.cid).await);

    let upload = store.create_upload(&r, vec![0]).await.expect("create");
    let chunk = UploadChunk {
        offset: 0,
        size: 11,
        cid: chunk_cid,
    };
    assert!(store
        .append_upload_chunk(upload.id, chunk, vec![1])
        .await
        .expect("append"));
    assert!(in_use(&*store, &chunk_cid).await);

    store.delete_upload(upload.id).await.expect("delete");
    assert!(!in_use(&*store, &chunk_cid).await);
    // Unlinking does not delete the blob row: its CID is still needed.
    store.unlink_blob(&r, &record.digest).await.expect("unlink");
    assert!(in_use(&*store, &record.cid).await);
    // A completed upload's chunks are no longer live; the blob's CID is.
    let upload = store.create_upload(&r, vec![]).await.unwrap();
    let part = UploadChunk {
        offset: 0,
        size: 4,
        cid: cid_of(b"part"),
    };
    assert!(store
        .append_upload_chunk(upload.id, part.clone(), vec![])
        .await
        .unwrap());
    let assembled = blob(b"assembled");
    store
        .complete_upload(upload.id, &r, assembled.clone())
        .await
        .unwrap();
    assert!(!in_use(&*store, &part.cid).await);
    assert!(in_use(&*store, &assembled.cid).await);
    // Swept, the blob's CID is queued for unpinning but no longer in use.
    store.unlink_blob(&r, &assembled.digest).await.unwrap();
    tick().await;
    sweep(&*store, &policy(Duration::ZERO, None, HOUR)).await;
    assert!(!in_use(&*store, &assembled.cid).await);
}

async fn an_unpin_lease_holds_back_recording_its_cid(store: Arc<dyn MetaBackend>) {
    let r = repo("gc/lease");
    let record = blob(b"being unpinned");
    let lease = store.unpin_lease(&record.cid).await.unwrap();
    let commit = tokio::spawn({
        let store = store.clone();
        let r = r.clone();
        let record = record.clone();
        async move { store.commit_blob(&r, record).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !commit.is_finished(),
        "a commit recorded a CID while it was being unpinned"
    );
    drop(lease);
    let committed = tokio::time::timeout(Duration::from_secs(10), commit)
        .await
        .expect("the commit goes on once the lease is dropped")
        .unwrap()
        .unwrap();
    assert_eq!(committed, record);
    assert!(in_use(&*store, &record.cid).await);
}

async fn one_gc_lease_at_a_time(store: Arc<dyn MetaBackend>) {
    let first = store.try_gc_lease().await.unwrap().expect("a free lease");
    assert!(store.try_gc_lease().await.unwrap().is_none());
    first.release().await;
    // Released: the next run starts at once.
    let second = store.try_gc_lease().await.unwrap().expect("released");
    assert!(store.try_gc_lease().await.unwrap().is_none());
    // Dropped: released eventually (a run cancelled half-way).
    drop(second);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if store.try_gc_lease().await.unwrap().is_some() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a dropped GC lease was never released"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn recorded_cids_are_blobs_live_chunks_and_queued_unpins(store: Arc<dyn MetaBackend>) {
    let r = repo("gc/recorded");
    let record = blob(b"recorded blob");
    let chunk_cid = cid_of(b"recorded chunk");
    let unknown = cid_of(b"unknown");
    store.commit_blob(&r, record.clone()).await.unwrap();
    let upload = store.create_upload(&r, vec![]).await.unwrap();
    let c = UploadChunk {
        offset: 0,
        size: 3,
        cid: chunk_cid,
    };
    assert!(store
        .append_upload_chunk(upload.id, c, vec![])
        .await
        .unwrap());
    let all = [record.cid, chunk_cid, unknown];
    assert_eq!(
        store.recorded_cids(&all).await.unwrap(),
        HashSet::from([record.cid, chunk_cid])
    );
    assert!(store.recorded_cids(&[]).await.unwrap().is_empty());

    // Swept, the blob's CID stays known while it is queued, and so does the chunk of the
    // deleted session; dequeued, neither is.
    store.unlink_blob(&r, &record.digest).await.unwrap();
    store.delete_upload(upload.id).await.unwrap();
    tick().await;
    sweep(&*store, &policy(Duration::ZERO, None, HOUR)).await;
    assert_eq!(
        store.recorded_cids(&all).await.unwrap(),
        HashSet::from([record.cid, chunk_cid])
    );
    store
        .dequeue_unpins(&[record.cid, chunk_cid])
        .await
        .unwrap();
    assert!(store.recorded_cids(&all).await.unwrap().is_empty());
}

async fn blob_records_page_through_every_blob_in_digest_order(store: Arc<dyn MetaBackend>) {
    assert!(store.blob_records(None, 10).await.unwrap().is_empty());
    let mut records: Vec<_> = (0..5u8).map(|i| blob(&[i])).collect();
    for (i, record) in records.iter().enumerate() {
        let r = repo(&format!("gc/scan{}", i % 2));
        store.commit_blob(&r, record.clone()).await.unwrap();
    }
    // Linked twice, listed once.
    store
        .commit_blob(&repo("gc/scan9"), records[0].clone())
        .await
        .unwrap();
    records.sort_by_key(|r| r.digest.to_string());

    let mut seen = Vec::new();
    let mut after: Option<Digest> = None;
    loop {
        let page = store.blob_records(after.as_ref(), 2).await.unwrap();
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after = Some(last.digest.clone());
        seen.extend(page);
    }
    assert_eq!(seen, records);
    assert!(store
        .blob_records(Some(&records[4].digest), 10)
        .await
        .unwrap()
        .is_empty());
}

// ---------- retention ----------

/// The current record of `t` in `r`.
async fn record(store: &dyn MetaBackend, r: &ipfs_registry::oci::RepoName, t: &str) -> TagRecord {
    store
        .tag_records(r)
        .await
        .expect("tag records")
        .into_iter()
        .find(|rec| rec.tag == t)
        .expect("tag listed")
}

async fn tag_removals_take_only_tags_no_push_has_moved_since(store: Arc<dyn MetaBackend>) {
    let r = repo("gc/tags");
    let one = pushed_image(&*store, &r, "one").await;
    let two = pushed_image(&*store, &r, "two").await;
    for t in ["a", "b", "c"] {
        store
            .put_manifest(&r, one.clone(), Some(&tag(t)))
            .await
            .unwrap();
    }
    let mut listed = store.tag_records(&r).await.unwrap();
    listed.sort_by(|x, y| x.tag.cmp(&y.tag));
    assert_eq!(
        listed.iter().map(|t| t.tag.as_str()).collect::<Vec<_>>(),
        ["a", "b", "c"]
    );
    assert!(listed.iter().all(|t| t.digest == one.digest));
    assert!(store
        .tag_records(&repo("gc/none"))
        .await
        .unwrap()
        .is_empty());
    let chosen: Vec<TagRemoval> = listed[..2]
        .iter()
        .map(|record| TagRemoval {
            repository: r.to_string(),
            record: record.clone(),
        })
        .collect();
    // Pushed again to the same manifest: not a move, the record is unchanged.
    store
        .put_manifest(&r, one.clone(), Some(&tag("a")))
        .await
        .unwrap();
    assert_eq!(record(&*store, &r, "a").await, listed[0]);
    // `b` is moved after it was chosen.
    tick().await;
    store
        .put_manifest(&r, two.clone(), Some(&tag("b")))
        .await
        .unwrap();
    let policy = SweepPolicy {
        remove_tags: chosen.clone(),
        ..policy(HOUR, None, HOUR)
    };
    let dry = store.sweep(&policy, true).await.unwrap();
    assert_eq!(dry.tags, chosen[..1].to_vec());
    assert_eq!(all_tags(&*store, &r).await.unwrap(), ["a", "b", "c"]);
    let swept = sweep(&*store, &policy).await;
    assert_eq!(
        swept.tags,
        chosen[..1].to_vec(),
        "only the unmoved tag goes"
    );
    assert_eq!(all_tags(&*store, &r).await.unwrap(), ["b", "c"]);
    assert_eq!(by_tag(&*store, &r, "b").await, Some(two.digest.clone()));
    // Removing a tag leaves its manifest to the untagged rules.
    assert!(by_digest(&*store, &r, &one.digest).await.is_some());
}

async fn untagged_retention_per_repository_replaces_the_default(store: Arc<dyn MetaBackend>) {
    let short = repo("gc/short");
    let long = repo("gc/long");
    let other = repo("gc/other");
    let mut untagged = Vec::new();
    for r in [&short, &long, &other] {
        let m = pushed_image(&*store, r, "untagged").await;
        store.put_manifest(r, m.clone(), None).await.unwrap();
        untagged.push(m);
    }
    tick().await;
    // No default: only the repository with its own (zero) retention loses its manifest.
    let rules = SweepPolicy {
        untagged_by_repository: vec![
            (short.to_string(), Duration::ZERO),
            (long.to_string(), HOUR),
            ("gc/absent".to_owned(), Duration::ZERO),
        ],
        ..policy(HOUR, None, HOUR)
    };
    let swept = sweep(&*store, &rules).await;
    assert_eq!(
        swept.manifests,
        [SweptManifest {
            repository: short.to_string(),
            digest: untagged[0].digest.clone(),
            size: untagged[0].content.len() as u64,
        }]
    );
    // A zero default takes the third repository's too, but not the one with an hour.
    let rules = SweepPolicy {
        untagged_by_repository: vec![(long.to_string(), HOUR)],
        ..policy(HOUR, Some(Duration::ZERO), HOUR)
    };
    let swept = sweep(&*store, &rules).await;
    let gone: Vec<&str> = swept
        .manifests
        .iter()
        .map(|m| m.repository.as_str())
        .collect();
    assert_eq!(gone, ["gc/other"]);
    assert!(by_digest(&*store, &long, &untagged[1].digest)
        .await
        .is_some());
}

async fn a_kept_referrer_keeps_its_subject(store: Arc<dyn MetaBackend>) {
    let r = repo("gc/signed");
    let subject = pushed_image(&*store, &r, "signed").await;
    store.put_manifest(&r, subject.clone(), None).await.unwrap();
    let sig_config = blob(b"signature config");
    store.commit_blob(&r, sig_config.clone()).await.unwrap();
    let signature = image_with(&sig_config, &[], Some(&subject.digest), Some("x/sig"), None);
    // Tagged the way cosign tags signatures.
    store
        .put_manifest(&r, signature.clone(), Some(&tag("sha256-signed.sig")))
        .await
        .unwrap();
    tick().await;
    let swept = sweep(&*store, &policy(HOUR, Some(Duration::ZERO), HOUR)).await;
    assert!(swept.manifests.is_empty(), "{swept:?}");
    assert!(by_digest(&*store, &r, &subject.digest).await.is_some());
    // Untagged, the signature and its subject go together.
    assert!(store
        .delete_tag(&r, &tag("sha256-signed.sig"))
        .await
        .unwrap());
    tick().await;
    let swept = sweep(&*store, &policy(HOUR, Some(Duration::ZERO), HOUR)).await;
    let gone: HashSet<Digest> = swept.manifests.into_iter().map(|m| m.digest).collect();
    assert_eq!(gone, HashSet::from([subject.digest, signature.digest]));
}
