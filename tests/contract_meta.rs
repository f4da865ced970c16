//! The `MetadataStore` contract, on every metadata store (common::backends): blobs and
//! their links, manifests, tags and references, listings, referrers, upload sessions.
//! Written against the traits only; what only PostgreSQL shows (schema, plans, locks,
//! timeouts) is in postgres_internals.rs.

#[macro_use]
mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::backends::MetaBackend;
use common::meta::*;
use ipfs_registry::meta::gc::SweepPolicy;
use ipfs_registry::meta::users::RepoFilter;
use ipfs_registry::meta::{
    BlobRecord, FollowState, FollowedTag, MetaError, Page, ProtectedTags, RepoOrigin, UploadChunk,
};
use ipfs_registry::oci::{Digest, Reference};
use serde_json::json;
use uuid::Uuid;

on_every_meta_store!(
    advance_upload_counts_bytes_without_a_chunk,
    commit_blob_links_and_deduplicates,
    large_and_empty_blob_sizes_round_trip,
    mount_blob_requires_a_link_in_the_source,
    unlink_blob_removes_only_the_link,
    put_manifest_stores_exact_bytes_and_tag,
    put_manifest_with_missing_references_changes_nothing,
    index_requires_child_manifests_in_the_repository,
    delete_manifest_cascades_to_tags_and_delete_tag_keeps_the_manifest,
    moving_a_tag_points_it_at_the_new_manifest,
    a_conditional_tag_delete_removes_the_tag_only_where_it_points,
    an_immutable_tag_is_created_and_pushed_again_but_never_moved,
    concurrent_pushes_cannot_both_set_an_immutable_tag,
    immutable_tags_refuse_deletes_that_would_remove_them,
    a_delete_racing_a_push_never_removes_the_immutable_tag_it_sets,
    tags_paginate_in_bytewise_order,
    catalog_lists_existing_repositories_in_order,
    repository_summaries_count_tags_bytes_and_the_last_push,
    tag_summaries_give_each_tag_its_manifest_size_and_push_time,
    referrers_by_subject_with_and_without_filter,
    upload_session_lifecycle,
    concurrent_appends_at_the_same_offset_only_one_wins,
    complete_upload_returns_the_earlier_record_for_a_known_digest,
    complete_upload_from_another_repository_does_not_end_the_session,
    delete_upload_returns_chunks_and_ends_the_session,
    a_quarantined_blob_is_seen_nowhere_until_released,
    leases_exclude_other_holders_until_they_expire,
    image_layouts_live_as_long_as_their_tags_point_at_their_manifests,
    a_layout_cid_recorded_anywhere_is_in_use,
    the_layout_queue_is_claimed_once_retried_and_follows_its_tag,
    the_public_index_lists_published_images_and_queues_the_root_it_replaces,
    mirrored_manifests_need_no_blobs_and_gc_keeps_what_was_fetched,
    mirrored_tags_record_when_the_upstream_last_confirmed_them,
    follow_rules_keep_their_state_and_tags_per_rule,
);

// ---------- blobs ----------

async fn commit_blob_links_and_deduplicates(store: Arc<dyn MetaBackend>) {
    let a = repo("team/a");
    let b = repo("team/b");
    let record = blob(b"layer bytes");

    assert!(!listed(&*store, &a).await);
    assert_eq!(store.blob(&record.digest).await.expect("blob"), None);

    let stored = store.commit_blob(&a, record.clone()).await.expect("commit");
    assert_eq!(stored, record);
    assert!(listed(&*store, &a).await);
    assert_eq!(
        store.blob(&record.digest).await.expect("blob"),
        Some(record.clone())
    );
    assert_eq!(
        store.repository_blob(&a, &record.digest).await.expect("rb"),
        Some(record.clone())
    );
    // Knowing the digest is not access.
    assert_eq!(
        store.repository_blob(&b, &record.digest).await.expect("rb"),
        None
    );

    // Same digest again with another CID/profile: the earlier record wins and is returned.
    let mut other = record.clone();
    other.cid = cid_of(b"something else");
    other.import_profile = "other-profile".into();
    let stored = store.commit_blob(&b, other).await.expect("commit again");
    assert_eq!(stored, record);
    assert_eq!(
        store.blob(&record.digest).await.expect("blob"),
        Some(record.clone())
    );
    assert_eq!(
        store.repository_blob(&b, &record.digest).await.expect("rb"),
        Some(record.clone())
    );
    // Committing twice into the same repository is fine.
    store
        .commit_blob(&a, record.clone())
        .await
        .expect("commit twice");

    // CIDs round-trip in their canonical (base32, v1) form.
    assert!(stored.cid.to_string().starts_with('b'));
}

async fn large_and_empty_blob_sizes_round_trip(store: Arc<dyn MetaBackend>) {
    let r = repo("sizes");
    let mut big = blob(b"big");
    big.size = 5 * 1024 * 1024 * 1024 * 1024; // 5 TiB
    assert_eq!(store.commit_blob(&r, big.clone()).await.expect("big"), big);
    let empty = blob(b"");
    assert_eq!(
        store.commit_blob(&r, empty.clone()).await.expect("empty"),
        empty
    );
    assert_eq!(store.blob(&big.digest).await.expect("blob"), Some(big));
    let mut huge = blob(b"huge");
    huge.size = u64::MAX;
    assert!(store.commit_blob(&r, huge).await.is_err());
}

async fn mount_blob_requires_a_link_in_the_source(store: Arc<dyn MetaBackend>) {
    let from = repo("from");
    let to = repo("to");
    let elsewhere = repo("elsewhere");
    let record = blob(b"mountable");
    store
        .commit_blob(&elsewhere, record.clone())
        .await
        .expect("commit");

    // Stored, but not linked in `from`: no mount, and `to` is neither created nor linked.
    assert_eq!(
        store
            .mount_blob(&from, &to, &record.digest)
            .await
            .expect("mount"),
        None
    );
    assert_eq!(
        store
            .repository_blob(&to, &record.digest)
            .await
            .expect("rb"),
        None
    );
    assert!(!listed(&*store, &to).await);

    store
        .commit_blob(&from, record.clone())
        .await
        .expect("commit");
    assert_eq!(
        store
            .mount_blob(&from, &to, &record.digest)
            .await
            .expect("mount"),
        Some(record.clone())
    );
    assert_eq!(
        store
            .repository_blob(&to, &record.digest)
            .await
            .expect("rb"),
        Some(record.clone())
    );
    // Mounting again is harmless.
    assert_eq!(
        store
            .mount_blob(&from, &to, &record.digest)
            .await
            .expect("mount"),
        Some(record.clone())
    );
    // Unknown digest.
    let unknown = Digest::sha256_of(b"unknown");
    assert_eq!(
        store.mount_blob(&from, &to, &unknown).await.expect("mount"),
        None
    );
}

async fn unlink_blob_removes_only_the_link(store: Arc<dyn MetaBackend>) {
    let a = repo("a");
    let b = repo("b");
    let record = blob(b"linked twice");
    store.commit_blob(&a, record.clone()).await.expect("commit");
    store.commit_blob(&b, record.clone()).await.expect("commit");

    assert!(store.unlink_blob(&a, &record.digest).await.expect("unlink"));
    assert!(!store
        .unlink_blob(&a, &record.digest)
        .await
        .expect("unlink again"));
    assert!(!store
        .unlink_blob(&repo("nope"), &record.digest)
        .await
        .expect("unlink"));
    assert_eq!(
        store.repository_blob(&a, &record.digest).await.expect("rb"),
        None
    );
    assert_eq!(
        store.repository_blob(&b, &record.digest).await.expect("rb"),
        Some(record.clone())
    );
    assert_eq!(
        store.blob(&record.digest).await.expect("blob"),
        Some(record)
    );
}

// ---------- manifests and tags ----------

async fn put_manifest_stores_exact_bytes_and_tag(store: Arc<dyn MetaBackend>) {
    let r = repo("library/app");
    let m = pushed_image(&*store, &r, "1").await;
    store
        .put_manifest(&r, m.clone(), Some(&tag("v1")))
        .await
        .expect("put");

    let got = store
        .manifest(&r, &Reference::Digest(m.digest.clone()))
        .await
        .expect("get")
        .expect("present");
    assert_eq!(got.content, m.content, "exact bytes");
    assert_eq!(got.digest, m.digest);
    assert_eq!(got.media_type, IMAGE_MANIFEST);
    assert_eq!(got.subject, None);
    let got = store
        .manifest(&r, &Reference::Tag(tag("v1")))
        .await
        .expect("get")
        .expect("present");
    assert_eq!(got.content, m.content);
    assert_eq!(got.digest, m.digest);

    // Not visible from another repository, and unknown tags are absent.
    assert_eq!(by_digest(&*store, &repo("other"), &m.digest).await, None);
    assert_eq!(by_tag(&*store, &r, "v2").await, None);

    // Re-pushing identical bytes (with and without a tag) is fine.
    store
        .put_manifest(&r, m.clone(), None)
        .await
        .expect("re-put");
    store
        .put_manifest(&r, m.clone(), Some(&tag("v1")))
        .await
        .expect("re-put tag");
    store
        .put_manifest(&r, m.clone(), Some(&tag("also")))
        .await
        .expect("re-put other tag");
    assert_eq!(
        all_tags(&*store, &r).await,
        Some(vec!["also".into(), "v1".into()])
    );
}

/// The blobs nothing references, as a sweep with no grace period sees them (a dry run:
/// nothing changes). How the manifests' references are observed through the traits.
async fn unreferenced(store: &dyn MetaBackend) -> Vec<Digest> {
    // Blob rows carry a creation time that may be as coarse as a millisecond; a sweep
    // takes only those strictly older than its start.
    tokio::time::sleep(Duration::from_millis(2)).await;
    let policy = SweepPolicy {
        grace_period: Duration::ZERO,
        untagged_retention: None,
        upload_expiry: Duration::from_secs(3600),
        ..SweepPolicy::default()
    };
    let swept = store.sweep(&policy, true).await.expect("dry-run sweep");
    let mut digests: Vec<Digest> = swept.blobs.into_iter().map(|b| b.digest).collect();
    digests.sort_by_key(|d| d.to_string());
    digests
}

fn sorted(mut digests: Vec<Digest>) -> Vec<Digest> {
    digests.sort_by_key(|d| d.to_string());
    digests
}

async fn put_manifest_with_missing_references_changes_nothing(store: Arc<dyn MetaBackend>) {
    let r = repo("strict");
    let elsewhere = repo("elsewhere");

    // Layer present only in another repository: knowing the digest is not enough.
    let config = blob(b"cfg");
    let layer = blob(b"layer");
    let absent = blob(b"never pushed");
    store.commit_blob(&r, config.clone()).await.expect("config");
    store
        .commit_blob(&elsewhere, layer.clone())
        .await
        .expect("layer");
    let m = image(&config, &[&layer, &absent]);

    // A first good manifest under the tag, to check the tag does not move.
    let good = pushed_image(&*store, &r, "good").await;
    store
        .put_manifest(&r, good.clone(), Some(&tag("latest")))
        .await
        .expect("put good");

    match store
        .put_manifest(&r, m.clone(), Some(&tag("latest")))
        .await
    {
        Err(MetaError::MissingReferences(missing)) => {
            assert_eq!(missing, vec![layer.digest.clone(), absent.digest.clone()]);
        }
        other => panic!("expected MissingReferences, got {other:?}"),
    }
    assert_eq!(by_digest(&*store, &r, &m.digest).await, None);
    assert_eq!(
        by_tag(&*store, &r, "latest").await,
        Some(good.digest.clone())
    );
    // None of the refused manifest's references was recorded: its config is unreferenced.
    assert_eq!(
        unreferenced(&*store).await,
        sorted(vec![config.digest.clone(), layer.digest.clone()])
    );

    // A failed push into a new repository does not create it.
    let fresh = repo("fresh");
    let err = store.put_manifest(&fresh, m.clone(), Some(&tag("x"))).await;
    assert!(matches!(err, Err(MetaError::MissingReferences(ref d)) if d.len() == 3));
    assert!(!listed(&*store, &fresh).await);

    // Once everything is linked, the same push succeeds, and references all three blobs.
    store
        .mount_blob(&elsewhere, &r, &layer.digest)
        .await
        .expect("mount");
    store.commit_blob(&r, absent.clone()).await.expect("commit");
    store
        .put_manifest(&r, m.clone(), Some(&tag("latest")))
        .await
        .expect("put");
    assert_eq!(by_tag(&*store, &r, "latest").await, Some(m.digest.clone()));
    assert_eq!(unreferenced(&*store).await, vec![]);
}

async fn index_requires_child_manifests_in_the_repository(store: Arc<dyn MetaBackend>) {
    let r = repo("multi");
    let amd64 = pushed_image(&*store, &r, "amd64").await;
    let arm64 = pushed_image(&*store, &r, "arm64").await;
    let idx = index(&[&amd64, &arm64]);

    store
        .put_manifest(&r, amd64.clone(), None)
        .await
        .expect("amd64");
    match store
        .put_manifest(&r, idx.clone(), Some(&tag("multi")))
        .await
    {
        Err(MetaError::MissingReferences(missing)) => {
            assert_eq!(missing, vec![arm64.digest.clone()])
        }
        other => panic!("expected MissingReferences, got {other:?}"),
    }
    assert_eq!(by_tag(&*store, &r, "multi").await, None);

    // A blob with the child's digest does not count as the child manifest.
    store
        .commit_blob(
            &r,
            BlobRecord {
                digest: arm64.digest.clone(),
                ..blob(&arm64.content)
            },
        )
        .await
        .expect("blob with manifest digest");
    assert!(matches!(
        store.put_manifest(&r, idx.clone(), None).await,
        Err(MetaError::MissingReferences(_))
    ));

    store
        .put_manifest(&r, arm64.clone(), None)
        .await
        .expect("arm64");
    store
        .put_manifest(&r, idx.clone(), Some(&tag("multi")))
        .await
        .expect("index");
    assert_eq!(
        by_digest(&*store, &r, &idx.digest).await,
        Some(idx.content.clone())
    );
    // The index references both children as manifests: the tag keeps them through a
    // sweep that takes every untagged manifest nothing reaches.
    tokio::time::sleep(Duration::from_millis(2)).await;
    let everything = SweepPolicy {
        grace_period: Duration::ZERO,
        untagged_retention: Some(Duration::ZERO),
        upload_expiry: Duration::from_secs(3600),
        ..SweepPolicy::default()
    };
    let swept = store.sweep(&everything, true).await.expect("dry run");
    assert_eq!(swept.manifests, vec![]);
}

async fn delete_manifest_cascades_to_tags_and_delete_tag_keeps_the_manifest(
    store: Arc<dyn MetaBackend>,
) {
    let r = repo("deleting");
    let one = pushed_image(&*store, &r, "one").await;
    let two = pushed_image(&*store, &r, "two").await;
    store
        .put_manifest(&r, one.clone(), Some(&tag("a")))
        .await
        .expect("put");
    store
        .put_manifest(&r, one.clone(), Some(&tag("b")))
        .await
        .expect("put");
    store
        .put_manifest(&r, two.clone(), Some(&tag("c")))
        .await
        .expect("put");

    // delete_tag removes only the tag.
    assert!(store.delete_tag(&r, &tag("c")).await.expect("delete tag"));
    assert!(!store
        .delete_tag(&r, &tag("c"))
        .await
        .expect("delete tag again"));
    assert!(!store
        .delete_tag(&repo("nope"), &tag("a"))
        .await
        .expect("delete tag"));
    assert_eq!(by_tag(&*store, &r, "c").await, None);
    assert_eq!(
        by_digest(&*store, &r, &two.digest).await,
        Some(two.content.clone())
    );

    // delete_manifest removes the manifest, its tags and its references.
    assert!(store
        .delete_manifest(&r, &one.digest)
        .await
        .expect("delete"));
    assert!(!store
        .delete_manifest(&r, &one.digest)
        .await
        .expect("delete again"));
    assert!(!store
        .delete_manifest(&repo("nope"), &two.digest)
        .await
        .expect("delete"));
    assert_eq!(by_digest(&*store, &r, &one.digest).await, None);
    assert_eq!(by_tag(&*store, &r, "a").await, None);
    assert_eq!(by_tag(&*store, &r, "b").await, None);
    assert_eq!(
        unreferenced(&*store).await,
        sorted(one.references.iter().map(|(d, _)| d.clone()).collect()),
        "the deleted manifest's references went with it; the untagged one's stay"
    );
    // The blobs stay linked (GC decides about them later).
    assert!(store
        .repository_blob(&r, &one.references[0].0)
        .await
        .expect("rb")
        .is_some());
    // The repository still exists, with no tags.
    assert_eq!(all_tags(&*store, &r).await, Some(vec![]));
}

async fn a_conditional_tag_delete_removes_the_tag_only_where_it_points(
    store: Arc<dyn MetaBackend>,
) {
    let r = repo("conditional/app");
    let one = pushed_image(&*store, &r, "one").await;
    let two = pushed_image(&*store, &r, "two").await;
    store
        .put_manifest(&r, two.clone(), Some(&tag("latest")))
        .await
        .unwrap();
    let none = ProtectedTags::none();
    // A push moved the tag from `one` to `two`: a delete meant for `one` changes nothing.
    assert!(!store
        .delete_tag_pointing_at(&r, &tag("latest"), &one.digest, &none, &[])
        .await
        .unwrap());
    assert!(store
        .manifest(&r, &Reference::Tag(tag("latest")))
        .await
        .unwrap()
        .is_some());
    assert!(store
        .delete_tag_pointing_at(&r, &tag("latest"), &two.digest, &none, &[])
        .await
        .unwrap());
    assert!(store
        .manifest(&r, &Reference::Tag(tag("latest")))
        .await
        .unwrap()
        .is_none());
    assert!(!store
        .delete_tag_pointing_at(&r, &tag("latest"), &two.digest, &none, &[])
        .await
        .unwrap());
}

async fn moving_a_tag_points_it_at_the_new_manifest(store: Arc<dyn MetaBackend>) {
    let r = repo("moving");
    let one = pushed_image(&*store, &r, "one").await;
    let two = pushed_image(&*store, &r, "two").await;
    store
        .put_manifest(&r, one.clone(), Some(&tag("latest")))
        .await
        .expect("one");
    store
        .put_manifest(&r, one.clone(), Some(&tag("stable")))
        .await
        .expect("one");
    assert_eq!(
        by_tag(&*store, &r, "latest").await,
        Some(one.digest.clone())
    );

    store
        .put_manifest(&r, two.clone(), Some(&tag("latest")))
        .await
        .expect("two");
    assert_eq!(
        by_tag(&*store, &r, "latest").await,
        Some(two.digest.clone())
    );
    assert_eq!(
        by_tag(&*store, &r, "stable").await,
        Some(one.digest.clone())
    );
    // The old manifest is still there by digest.
    assert_eq!(
        by_digest(&*store, &r, &one.digest).await,
        Some(one.content.clone())
    );
    assert_eq!(
        all_tags(&*store, &r).await,
        Some(vec!["latest".into(), "stable".into()])
    );
}

// ---------- immutable tags ----------

fn protect(patterns: &[&str]) -> ProtectedTags {
    ProtectedTags(
        patterns
            .iter()
            .map(|p| p.parse().expect("pattern"))
            .collect(),
    )
}

fn is_immutable(result: Result<impl std::fmt::Debug, MetaError>, expected_tag: &str) -> bool {
    matches!(result, Err(MetaError::TagImmutable(ref t)) if t == expected_tag)
}

async fn an_immutable_tag_is_created_and_pushed_again_but_never_moved(store: Arc<dyn MetaBackend>) {
    let r = repo("immutable/put");
    let v = protect(&["v*"]);
    let one = pushed_image(&*store, &r, "one").await;
    let two = pushed_image(&*store, &r, "two").await;
    store
        .put_manifest_with(&r, one.clone(), Some(&tag("v1")), &v, &[])
        .await
        .expect("a new protected tag is created");
    store
        .put_manifest_with(&r, one.clone(), Some(&tag("v1")), &v, &[])
        .await
        .expect("the same manifest under it again is accepted");
    let moved = store
        .put_manifest_with(&r, two.clone(), Some(&tag("v1")), &v, &[])
        .await;
    assert!(is_immutable(moved, "v1"));
    assert_eq!(by_tag(&*store, &r, "v1").await, Some(one.digest.clone()));
    assert_eq!(
        by_digest(&*store, &r, &two.digest).await,
        None,
        "a refused push stores nothing"
    );
    // Tags the patterns do not cover move as before, and a push by digest is no move.
    store
        .put_manifest_with(&r, two.clone(), Some(&tag("latest")), &v, &[])
        .await
        .expect("latest");
    store
        .put_manifest_with(&r, one.clone(), Some(&tag("latest")), &v, &[])
        .await
        .expect("latest moves");
    store
        .put_manifest_with(&r, two.clone(), None, &v, &[])
        .await
        .expect("by digest");
    // Without protection (no rule covers it any more) the tag moves.
    store
        .put_manifest(&r, two.clone(), Some(&tag("v1")))
        .await
        .expect("unprotected move");
    assert_eq!(by_tag(&*store, &r, "v1").await, Some(two.digest.clone()));
}

async fn concurrent_pushes_cannot_both_set_an_immutable_tag(store: Arc<dyn MetaBackend>) {
    let r = repo("immutable/race");
    let mut manifests = Vec::new();
    for i in 0..8 {
        manifests.push(pushed_image(&*store, &r, &format!("racer {i}")).await);
    }
    let attempts: Vec<_> = manifests
        .iter()
        .cloned()
        .map(|m| {
            let (store, r) = (store.clone(), r.clone());
            tokio::spawn(async move {
                let digest = m.digest.clone();
                let result = store
                    .put_manifest_with(&r, m, Some(&tag("v1")), &protect(&["v1"]), &[])
                    .await;
                (digest, result)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for attempt in attempts {
        let (digest, result) = attempt.await.expect("join");
        match result {
            Ok(()) => winners.push(digest),
            Err(e) => assert!(is_immutable(Err::<(), _>(e), "v1")),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one push sets the tag");
    assert_eq!(by_tag(&*store, &r, "v1").await, Some(winners[0].clone()));
}

async fn immutable_tags_refuse_deletes_that_would_remove_them(store: Arc<dyn MetaBackend>) {
    let r = repo("immutable/delete");
    let v = protect(&["v*"]);
    let one = pushed_image(&*store, &r, "one").await;
    let two = pushed_image(&*store, &r, "two").await;
    store
        .put_manifest(&r, one.clone(), Some(&tag("v1")))
        .await
        .expect("v1");
    store
        .put_manifest(&r, one.clone(), Some(&tag("latest")))
        .await
        .expect("latest");
    store
        .put_manifest(&r, two.clone(), Some(&tag("dev")))
        .await
        .expect("dev");

    assert!(is_immutable(
        store.delete_tag_with(&r, &tag("v1"), &v, &[]).await,
        "v1"
    ));
    assert!(is_immutable(
        store.delete_manifest_with(&r, &one.digest, &v, &[]).await,
        "v1"
    ));
    assert_eq!(by_tag(&*store, &r, "v1").await, Some(one.digest.clone()));
    assert_eq!(
        by_tag(&*store, &r, "latest").await,
        Some(one.digest.clone())
    );
    // What no protected tag points at goes as before; a protected name that is not there
    // is simply not found.
    assert!(store
        .delete_tag_with(&r, &tag("latest"), &v, &[])
        .await
        .expect("latest"));
    assert!(store
        .delete_manifest_with(&r, &two.digest, &v, &[])
        .await
        .expect("two"));
    assert!(!store
        .delete_tag_with(&r, &tag("v2"), &v, &[])
        .await
        .expect("absent"));
    assert!(!store
        .delete_manifest_with(&repo("immutable/none"), &one.digest, &v, &[])
        .await
        .expect("no repository"));
    // The override: no protection.
    assert!(store
        .delete_manifest_with(&r, &one.digest, &ProtectedTags::none(), &[])
        .await
        .expect("override"));
    assert_eq!(by_tag(&*store, &r, "v1").await, None);
}

async fn a_delete_racing_a_push_never_removes_the_immutable_tag_it_sets(
    store: Arc<dyn MetaBackend>,
) {
    let r = repo("immutable/delete-race");
    let v = protect(&["v*"]);
    for round in 0..10 {
        let m = pushed_image(&*store, &r, &format!("round {round}")).await;
        store.put_manifest(&r, m.clone(), None).await.expect("put");
        let name = format!("v{round}");
        let push = {
            let (store, r, m, v, name) =
                (store.clone(), r.clone(), m.clone(), v.clone(), name.clone());
            tokio::spawn(async move {
                store
                    .put_manifest_with(&r, m, Some(&tag(&name)), &v, &[])
                    .await
            })
        };
        let delete = {
            let (store, r, digest, v) = (store.clone(), r.clone(), m.digest.clone(), v.clone());
            tokio::spawn(async move { store.delete_manifest_with(&r, &digest, &v, &[]).await })
        };
        // The blobs stay linked whatever the delete does, so the push always succeeds.
        push.await.expect("join").expect("push");
        let deleted = delete.await.expect("join");
        match deleted {
            // The delete went first; the push stored the manifest again under its tag.
            Ok(_) => assert_eq!(by_tag(&*store, &r, &name).await, Some(m.digest.clone())),
            Err(MetaError::TagImmutable(t)) => assert_eq!(t, name),
            Err(e) => panic!("delete: {e}"),
        }
        assert_eq!(
            by_tag(&*store, &r, &name).await,
            Some(m.digest.clone()),
            "round {round}: the pushed immutable tag survives"
        );
    }
}

// ---------- listing ----------

async fn tags_paginate_in_bytewise_order(store: Arc<dyn MetaBackend>) {
    let r = repo("paged");
    let m = pushed_image(&*store, &r, "m").await;
    // Bytewise: digits < uppercase < '_' < lowercase.
    let names = ["b", "a", "Z", "_x", "10", "2", "a-1", "a.1"];
    for name in names {
        store
            .put_manifest(&r, m.clone(), Some(&tag(name)))
            .await
            .expect("put");
    }
    let mut expected: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    expected.sort(); // Rust's String order is bytewise.
    assert_eq!(expected, ["10", "2", "Z", "_x", "a", "a-1", "a.1", "b"]);

    assert_eq!(all_tags(&*store, &r).await, Some(expected.clone()));

    // Walk in pages of 3.
    let mut seen = Vec::new();
    let mut last: Option<String> = None;
    let mut pages = 0;
    loop {
        let got = store
            .tags(&r, &page(Some(3), last.as_deref()))
            .await
            .expect("tags")
            .expect("repo exists");
        assert!(got.len() <= 3);
        pages += 1;
        if got.is_empty() {
            break;
        }
        last = got.last().cloned();
        seen.extend(got);
    }
    assert_eq!(seen, expected);
    assert_eq!(pages, 4, "3 + 3 + 2 + empty");

    // `last` need not be an existing tag: strictly after it.
    assert_eq!(
        store
            .tags(&r, &page(Some(2), Some("_")))
            .await
            .expect("tags"),
        Some(vec!["_x".into(), "a".into()])
    );
    assert_eq!(
        store.tags(&r, &page(None, Some("a"))).await.expect("tags"),
        Some(vec!["a-1".into(), "a.1".into(), "b".into()])
    );
    assert_eq!(
        store.tags(&r, &page(Some(0), None)).await.expect("tags"),
        Some(vec![])
    );
    assert_eq!(
        store
            .tags(&r, &page(Some(100), Some("b")))
            .await
            .expect("tags"),
        Some(vec![])
    );

    // No repository: None. A repository without tags: Some(empty).
    assert_eq!(
        store
            .tags(&repo("nope"), &Page::default())
            .await
            .expect("tags"),
        None
    );
    let bare = repo("bare");
    store.commit_blob(&bare, blob(b"x")).await.expect("commit");
    assert_eq!(all_tags(&*store, &bare).await, Some(vec![]));
}

async fn catalog_lists_existing_repositories_in_order(store: Arc<dyn MetaBackend>) {
    assert_eq!(
        store.catalog(&Page::default()).await.expect("catalog"),
        Vec::<String>::new()
    );
    let names = [
        "zeta", "alpha/b", "alpha", "alpha-b", "alpha.b", "beta/x/y", "0",
    ];
    for name in names {
        store
            .commit_blob(&repo(name), blob(name.as_bytes()))
            .await
            .expect("commit");
    }
    // Looking at other repositories does not create them.
    assert_eq!(
        store
            .tags(&repo("ghost"), &Page::default())
            .await
            .expect("tags"),
        None
    );
    assert!(store
        .mount_blob(&repo("ghost"), &repo("ghost2"), &Digest::sha256_of(b"0"))
        .await
        .expect("mount")
        .is_none());
    assert!(store
        .upload(&repo("ghost"), Uuid::new_v4())
        .await
        .expect("upload")
        .is_none());

    let mut expected: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(
        expected,
        ["0", "alpha", "alpha-b", "alpha.b", "alpha/b", "beta/x/y", "zeta"]
    );
    assert_eq!(
        store.catalog(&Page::default()).await.expect("catalog"),
        expected
    );

    let first = store.catalog(&page(Some(3), None)).await.expect("catalog");
    assert_eq!(first, ["0", "alpha", "alpha-b"]);
    let second = store
        .catalog(&page(Some(3), Some("alpha-b")))
        .await
        .expect("catalog");
    assert_eq!(second, ["alpha.b", "alpha/b", "beta/x/y"]);
    let third = store
        .catalog(&page(Some(3), Some("beta/x/y")))
        .await
        .expect("catalog");
    assert_eq!(third, ["zeta"]);
    let done = store
        .catalog(&page(Some(3), Some("zeta")))
        .await
        .expect("catalog");
    assert!(done.is_empty());
    assert_eq!(
        store
            .catalog(&page(None, Some("alpha/a")))
            .await
            .expect("catalog"),
        ["alpha/b", "beta/x/y", "zeta"]
    );
}

// ---------- referrers ----------

/// Whether `time` is within a few seconds of `around` (the database's clock and ours).
fn about(time: Option<SystemTime>, around: SystemTime) -> bool {
    let Some(time) = time else { return false };
    let gap = match time.duration_since(around) {
        Ok(d) => d,
        Err(e) => e.duration(),
    };
    gap < Duration::from_secs(5)
}

async fn repository_summaries_count_tags_bytes_and_the_last_push(store: Arc<dyn MetaBackend>) {
    let every = RepoFilter {
        all: true,
        ..RepoFilter::default()
    };
    let names = |list: &[ipfs_registry::meta::RepositorySummary]| -> Vec<String> {
        list.iter().map(|s| s.name.clone()).collect()
    };
    let alpha = repo("sum/alpha");
    let image = pushed_image(&*store, &alpha, "a").await;
    store
        .put_manifest(&alpha, image.clone(), Some(&tag("one")))
        .await
        .expect("one");
    store
        .put_manifest(&alpha, image.clone(), Some(&tag("two")))
        .await
        .expect("two");
    // A blob with no manifest yet still takes room.
    let beta = repo("sum/beta");
    store
        .commit_blob(&beta, blob(b"twelve bytes"))
        .await
        .expect("beta blob");
    let gamma = repo("other/gamma");
    let image_g = pushed_image(&*store, &gamma, "g").await;
    store
        .put_manifest(&gamma, image_g, None)
        .await
        .expect("gamma");

    let all = store
        .repository_summaries(&page(None, None), &every, "")
        .await
        .expect("summaries");
    assert_eq!(names(&all), ["other/gamma", "sum/alpha", "sum/beta"]);
    let (g, a, b) = (&all[0], &all[1], &all[2]);
    // "config a" and "layer a"; a repository's blob counts once however many tags use it.
    assert_eq!((a.tags, a.size), (2, 15));
    assert!(about(a.last_push, SystemTime::now()), "{:?}", a.last_push);
    assert_eq!((b.tags, b.size, b.last_push), (0, 12, None));
    // Pushed by digest: no tag, but a push all the same.
    assert_eq!((g.tags, g.size), (0, 15));
    assert!(about(g.last_push, SystemTime::now()), "{:?}", g.last_push);

    // Searched by part of the name, filtered by access, in pages.
    let search = |filter: RepoFilter, text: &'static str, p: Page| {
        let store = Arc::clone(&store);
        async move {
            let found = store
                .repository_summaries(&p, &filter, text)
                .await
                .expect("summaries");
            names(&found)
        }
    };
    assert_eq!(
        search(every.clone(), "alp", page(None, None)).await,
        ["sum/alpha"]
    );
    assert_eq!(
        search(every.clone(), "sum/", page(None, None)).await,
        ["sum/alpha", "sum/beta"]
    );
    assert!(search(every.clone(), "zeta", page(None, None))
        .await
        .is_empty());
    assert_eq!(
        search(every.clone(), "", page(Some(1), Some("other/gamma"))).await,
        ["sum/alpha"]
    );
    let some = RepoFilter {
        all: false,
        names: vec!["other/gamma".into()],
        prefixes: vec!["sum/b".into()],
    };
    assert_eq!(
        search(some.clone(), "", page(None, None)).await,
        ["other/gamma", "sum/beta"]
    );
    assert_eq!(
        search(some, "a", page(None, None)).await,
        ["other/gamma", "sum/beta"]
    );
    assert!(search(RepoFilter::default(), "", page(None, None))
        .await
        .is_empty());

    // Moving a tag is a push.
    let before = store
        .repository_summaries(&page(Some(1), Some("other/gamma")), &every, "")
        .await
        .expect("before")[0]
        .last_push
        .expect("pushed");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let newer = pushed_image(&*store, &alpha, "a2").await;
    store
        .put_manifest(&alpha, newer, Some(&tag("one")))
        .await
        .expect("move");
    let after = store
        .repository_summaries(&page(Some(1), Some("other/gamma")), &every, "")
        .await
        .expect("after");
    assert!(after[0].last_push.expect("pushed") > before);
    assert_eq!(after[0].tags, 2);
}

async fn tag_summaries_give_each_tag_its_manifest_size_and_push_time(store: Arc<dyn MetaBackend>) {
    let r = repo("tagsum");
    assert_eq!(
        store
            .tag_summaries(&r, &page(None, None))
            .await
            .expect("unknown"),
        None
    );
    let (config1, config2, shared) = (blob(b"config 1"), blob(b"config two"), blob(b"layer"));
    for b in [&config1, &config2, &shared] {
        store.commit_blob(&r, b.clone()).await.expect("blob");
    }
    let amd64 = image(&config1, &[&shared]);
    let arm64 = image(&config2, &[&shared]);
    store
        .put_manifest(&r, amd64.clone(), Some(&tag("amd64")))
        .await
        .expect("amd64");
    store
        .put_manifest(&r, arm64.clone(), None)
        .await
        .expect("arm64");
    let idx = index(&[&amd64, &arm64]);
    store
        .put_manifest(&r, idx.clone(), Some(&tag("multi")))
        .await
        .expect("index");

    let tags = store
        .tag_summaries(&r, &page(None, None))
        .await
        .expect("tags")
        .expect("a repository");
    assert_eq!(tags.len(), 2);
    let (one, multi) = (&tags[0], &tags[1]);
    assert_eq!(one.name, "amd64");
    assert_eq!(one.digest, amd64.digest);
    assert_eq!(one.media_type, amd64.media_type);
    assert_eq!(one.size, 8 + 5);
    assert!(about(Some(one.pushed_at), SystemTime::now()));
    assert_eq!(multi.name, "multi");
    assert_eq!(multi.digest, idx.digest);
    assert_eq!(multi.media_type, idx.media_type);
    // Both images' configs, and the layer they share once.
    assert_eq!(multi.size, 8 + 10 + 5);

    let first = store
        .tag_summaries(&r, &page(Some(1), None))
        .await
        .expect("first")
        .expect("a repository");
    assert_eq!(first, vec![one.clone()]);
    let rest = store
        .tag_summaries(&r, &page(Some(1), Some("amd64")))
        .await
        .expect("rest")
        .expect("a repository");
    assert_eq!(rest, vec![multi.clone()]);
}

async fn referrers_by_subject_with_and_without_filter(store: Arc<dyn MetaBackend>) {
    let r = repo("signed");
    let subject = pushed_image(&*store, &r, "subject").await;
    store
        .put_manifest(&r, subject.clone(), Some(&tag("v1")))
        .await
        .expect("subject");

    let sig_cfg = blob(b"sig config");
    let sbom_cfg = blob(b"sbom config");
    store.commit_blob(&r, sig_cfg.clone()).await.expect("cfg");
    store.commit_blob(&r, sbom_cfg.clone()).await.expect("cfg");
    let sig = image_with(
        &sig_cfg,
        &[],
        Some(&subject.digest),
        Some("application/vnd.dev.cosign.signature"),
        Some(json!({ "org.opencontainers.image.created": "2024-01-01T00:00:00Z", "k": "v" })),
    );
    let sbom = image_with(
        &sbom_cfg,
        &[],
        Some(&subject.digest),
        Some("application/spdx+json"),
        None,
    );
    let unrelated = image_with(
        &sbom_cfg,
        &[&sig_cfg],
        None,
        Some("application/spdx+json"),
        None,
    );
    for m in [&sig, &sbom, &unrelated] {
        store
            .put_manifest(&r, (*m).clone(), None)
            .await
            .expect("put");
    }
    // A referrer in another repository does not show up here.
    let other = repo("other");
    store
        .commit_blob(&other, sig_cfg.clone())
        .await
        .expect("cfg");
    let foreign = image_with(&sig_cfg, &[], Some(&subject.digest), Some("x/y"), None);
    store
        .put_manifest(&other, foreign, None)
        .await
        .expect("foreign");

    // The referrer is stored with its subject.
    let got = store
        .manifest(&r, &Reference::Digest(sig.digest.clone()))
        .await
        .expect("get")
        .expect("present");
    assert_eq!(got.subject, Some(subject.digest.clone()));

    let all = store
        .referrers(&r, &subject.digest, None)
        .await
        .expect("referrers");
    let mut expected = vec![sig.digest.clone(), sbom.digest.clone()];
    expected.sort_by_key(|d| d.to_string());
    assert_eq!(
        all.iter().map(|d| d.digest.clone()).collect::<Vec<_>>(),
        expected
    );

    let sig_desc = all.iter().find(|d| d.digest == sig.digest).expect("sig");
    assert_eq!(sig_desc.media_type, IMAGE_MANIFEST);
    assert_eq!(sig_desc.size, sig.content.len() as i64);
    assert_eq!(
        sig_desc.artifact_type.as_deref(),
        Some("application/vnd.dev.cosign.signature")
    );
    let annotations = sig_desc.annotations.as_ref().expect("annotations");
    assert_eq!(annotations.get("k").map(String::as_str), Some("v"));
    assert_eq!(annotations.len(), 2);
    let sbom_desc = all.iter().find(|d| d.digest == sbom.digest).expect("sbom");
    assert_eq!(sbom_desc.annotations, None);

    let filtered = store
        .referrers(&r, &subject.digest, Some("application/spdx+json"))
        .await
        .expect("referrers");
    assert_eq!(filtered.len(), 1);
    assert_eq!(filtered[0].digest, sbom.digest);
    assert!(store
        .referrers(&r, &subject.digest, Some("nothing/like-this"))
        .await
        .expect("referrers")
        .is_empty());
    // Unknown subject, unknown repository.
    assert!(store
        .referrers(&r, &Digest::sha256_of(b"?"), None)
        .await
        .expect("referrers")
        .is_empty());
    assert!(store
        .referrers(&repo("nope"), &subject.digest, None)
        .await
        .expect("referrers")
        .is_empty());

    // Deleting a referrer removes it from the index.
    store
        .delete_manifest(&r, &sig.digest)
        .await
        .expect("delete");
    let all = store
        .referrers(&r, &subject.digest, None)
        .await
        .expect("referrers");
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].digest, sbom.digest);
}

// ---------- uploads ----------

async fn upload_session_lifecycle(store: Arc<dyn MetaBackend>) {
    let r = repo("uploads");
    let started = std::time::SystemTime::now() - Duration::from_secs(60);
    let upload = store
        .create_upload(&r, vec![1, 2, 3])
        .await
        .expect("create");
    assert_eq!(upload.repository, r);
    assert_eq!(upload.bytes_received, 0);
    assert_eq!(upload.chunk_count, 0);
    assert_eq!(upload.hash_state, vec![1, 2, 3]);
    assert!(upload.started_at > started);
    assert!(listed(&*store, &r).await, "created with the session");

    let got = store
        .upload(&r, upload.id)
        .await
        .expect("upload")
        .expect("present");
    assert_eq!(got.id, upload.id);
    assert_eq!(got.started_at, upload.started_at);
    // Only from its own repository.
    store
        .create_upload(&repo("other"), vec![])
        .await
        .expect("other");
    assert!(store
        .upload(&repo("other"), upload.id)
        .await
        .expect("upload")
        .is_none());
    assert!(store
        .upload(&r, Uuid::new_v4())
        .await
        .expect("upload")
        .is_none());

    let c1 = UploadChunk {
        offset: 0,
        size: 10,
        cid: cid_of(b"c1"),
    };
    let c2 = UploadChunk {
        offset: 10,
        size: 5,
        cid: cid_of(b"c2"),
    };
    let c3 = UploadChunk {
        offset: 15,
        size: 1,
        cid: cid_of(b"c3"),
    };
    assert!(store
        .append_upload_chunk(upload.id, c1.clone(), vec![4])
        .await
        .expect("c1"));
    // Stale offset (someone else appended first): rejected, nothing changes.
    let stale = UploadChunk {
        offset: 0,
        size: 7,
        cid: cid_of(b"stale"),
    };
    assert!(!store
        .append_upload_chunk(upload.id, stale, vec![9])
        .await
        .expect("stale"));
    // An offset beyond what was received: rejected too.
    let ahead = UploadChunk {
        offset: 11,
        size: 7,
        cid: cid_of(b"ahead"),
    };
    assert!(!store
        .append_upload_chunk(upload.id, ahead, vec![9])
        .await
        .expect("ahead"));
    let chunks = store.upload_chunks(upload.id).await.expect("chunks");
    assert!(chunks.iter().all(|c| c.cid != cid_of(b"stale")));
    let got = store
        .upload(&r, upload.id)
        .await
        .expect("upload")
        .expect("present");
    assert_eq!(
        (got.bytes_received, got.chunk_count, got.hash_state),
        (10, 1, vec![4])
    );

    assert!(store
        .append_upload_chunk(upload.id, c2.clone(), vec![5])
        .await
        .expect("c2"));
    // A chunk of no bytes only advances the hash state.
    let empty = UploadChunk {
        offset: 15,
        size: 0,
        cid: cid_of(b""),
    };
    assert!(store
        .append_upload_chunk(upload.id, empty, vec![6])
        .await
        .expect("empty"));
    assert!(store
        .append_upload_chunk(upload.id, c3.clone(), vec![7])
        .await
        .expect("c3"));
    let got = store
        .upload(&r, upload.id)
        .await
        .expect("upload")
        .expect("present");
    assert_eq!(
        (got.bytes_received, got.chunk_count, got.hash_state),
        (16, 3, vec![7])
    );
    assert_eq!(
        store.upload_chunks(upload.id).await.expect("chunks"),
        vec![c1.clone(), c2.clone(), c3.clone()]
    );
    // Unknown session.
    let ghost = Uuid::new_v4();
    let c = UploadChunk {
        offset: 0,
        size: 1,
        cid: cid_of(b"g"),
    };
    assert!(!store
        .append_upload_chunk(ghost, c, vec![])
        .await
        .expect("ghost"));
    assert!(store.upload_chunks(ghost).await.expect("chunks").is_empty());

    // Completing commits the blob and ends the session.
    let record = blob(b"the assembled blob");
    let (stored, chunks) = store
        .complete_upload(upload.id, &r, record.clone())
        .await
        .expect("complete");
    assert_eq!(stored, record);
    assert_eq!(chunks, vec![c1.clone(), c2.clone(), c3.clone()]);
    assert!(store.upload(&r, upload.id).await.expect("upload").is_none());
    assert!(store
        .upload_chunks(upload.id)
        .await
        .expect("chunks")
        .is_empty());
    assert_eq!(
        store.repository_blob(&r, &record.digest).await.expect("rb"),
        Some(record.clone())
    );
    // The ended session accepts nothing more.
    let late = UploadChunk {
        offset: 16,
        size: 1,
        cid: cid_of(b"late"),
    };
    assert!(!store
        .append_upload_chunk(upload.id, late, vec![])
        .await
        .expect("late"));
    assert!(store
        .delete_upload(upload.id)
        .await
        .expect("delete")
        .is_empty());
}

async fn concurrent_appends_at_the_same_offset_only_one_wins(store: Arc<dyn MetaBackend>) {
    let r = repo("cas");
    let upload = store.create_upload(&r, vec![]).await.expect("create");
    let attempts = (0..8u8).map(|i| {
        let store = store.clone();
        let id = upload.id;
        tokio::spawn(async move {
            let chunk = UploadChunk {
                offset: 0,
                size: 4,
                cid: cid_of(&[i]),
            };
            store.append_upload_chunk(id, chunk, vec![i]).await
        })
    });
    let mut winners = 0;
    for attempt in attempts.collect::<Vec<_>>() {
        if attempt.await.expect("join").expect("append") {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
    let got = store
        .upload(&r, upload.id)
        .await
        .expect("upload")
        .expect("present");
    assert_eq!((got.bytes_received, got.chunk_count), (4, 1));
    assert_eq!(
        store.upload_chunks(upload.id).await.expect("chunks").len(),
        1
    );
}

async fn complete_upload_returns_the_earlier_record_for_a_known_digest(
    store: Arc<dyn MetaBackend>,
) {
    let a = repo("a");
    let b = repo("b");
    let record = blob(b"same bytes");
    store.commit_blob(&a, record.clone()).await.expect("commit");

    let upload = store.create_upload(&b, vec![]).await.expect("create");
    let chunk = UploadChunk {
        offset: 0,
        size: 10,
        cid: cid_of(b"chunk"),
    };
    assert!(store
        .append_upload_chunk(upload.id, chunk.clone(), vec![])
        .await
        .expect("append"));
    let mut again = record.clone();
    again.cid = cid_of(b"another cid");
    let (stored, chunks) = store
        .complete_upload(upload.id, &b, again)
        .await
        .expect("complete");
    assert_eq!(stored, record);
    assert_eq!(chunks, vec![chunk]);
    assert_eq!(
        store.repository_blob(&b, &record.digest).await.expect("rb"),
        Some(record)
    );
}

async fn complete_upload_from_another_repository_does_not_end_the_session(
    store: Arc<dyn MetaBackend>,
) {
    let r = repo("mine");
    let upload = store.create_upload(&r, vec![]).await.expect("create");
    let chunk = UploadChunk {
        offset: 0,
        size: 3,
        cid: cid_of(b"abc"),
    };
    assert!(store
        .append_upload_chunk(upload.id, chunk.clone(), vec![])
        .await
        .expect("append"));
    let (_, chunks) = store
        .complete_upload(upload.id, &repo("theirs"), blob(b"abc"))
        .await
        .expect("complete");
    assert!(chunks.is_empty());
    assert!(store.upload(&r, upload.id).await.expect("upload").is_some());
    let kept = store.upload_chunks(upload.id).await.expect("chunks");
    assert!(kept.iter().any(|c| c.cid == chunk.cid));
}

async fn delete_upload_returns_chunks_and_ends_the_session(store: Arc<dyn MetaBackend>) {
    let r = repo("cancel");
    let upload = store.create_upload(&r, vec![]).await.expect("create");
    let c1 = UploadChunk {
        offset: 0,
        size: 2,
        cid: cid_of(b"ab"),
    };
    let c2 = UploadChunk {
        offset: 2,
        size: 2,
        cid: cid_of(b"cd"),
    };
    assert!(store
        .append_upload_chunk(upload.id, c1.clone(), vec![])
        .await
        .expect("c1"));
    assert!(store
        .append_upload_chunk(upload.id, c2.clone(), vec![])
        .await
        .expect("c2"));
    assert_eq!(
        store.delete_upload(upload.id).await.expect("delete"),
        vec![c1, c2]
    );
    assert!(store.upload(&r, upload.id).await.expect("upload").is_none());
    assert!(store
        .delete_upload(upload.id)
        .await
        .expect("delete again")
        .is_empty());
    assert!(store
        .delete_upload(Uuid::new_v4())
        .await
        .expect("unknown")
        .is_empty());
    // An empty session deletes fine too.
    let empty = store.create_upload(&r, vec![]).await.expect("create");
    assert!(store
        .delete_upload(empty.id)
        .await
        .expect("delete")
        .is_empty());
    assert!(store.upload(&r, empty.id).await.expect("upload").is_none());
}

/// A session whose bytes the blob store keeps: `advance_upload` counts them (compare-and-swap
/// on the count, like a chunk) and records no chunk; completing it commits the blob.
async fn advance_upload_counts_bytes_without_a_chunk(store: Arc<dyn MetaBackend>) {
    let r = repo("in-place");
    let upload = store.create_upload(&r, vec![1]).await.expect("create");
    assert!(store
        .advance_upload(upload.id, 0, 8, vec![2])
        .await
        .expect("first"));
    // Stale and ahead offsets: rejected, nothing changes.
    assert!(!store
        .advance_upload(upload.id, 0, 3, vec![9])
        .await
        .expect("stale"));
    assert!(!store
        .advance_upload(upload.id, 9, 3, vec![9])
        .await
        .expect("ahead"));
    assert!(store
        .advance_upload(upload.id, 8, 4, vec![3])
        .await
        .expect("second"));
    let got = store.upload(&r, upload.id).await.unwrap().unwrap();
    assert_eq!(got.bytes_received, 12);
    assert_eq!(got.hash_state, vec![3]);
    assert_eq!(got.chunk_count, 0);
    assert!(store.upload_chunks(upload.id).await.unwrap().is_empty());
    assert!(!store
        .advance_upload(Uuid::new_v4(), 0, 1, vec![])
        .await
        .expect("unknown session"));

    let record = blob(b"in-place");
    let (stored, chunks) = store
        .complete_upload(upload.id, &r, record.clone())
        .await
        .expect("complete");
    assert_eq!(stored, record);
    assert!(chunks.is_empty());
    assert!(store.upload(&r, upload.id).await.unwrap().is_none());
    assert!(!store
        .advance_upload(upload.id, 12, 1, vec![])
        .await
        .expect("ended session"));
}

// ---------- integrity ----------

async fn a_quarantined_blob_is_seen_nowhere_until_released(store: Arc<dyn MetaBackend>) {
    let a = repo("quarantine/a");
    let b = repo("quarantine/b");
    let record = blob(b"bytes that rotted");
    let other = blob(b"bytes that did not");

    assert!(!store
        .quarantine_blob(&record.digest, "unrecorded")
        .await
        .expect("quarantine"));
    assert!(!store.is_quarantined(&record.digest).await.expect("is"));
    store.commit_blob(&a, record.clone()).await.expect("commit");
    store.commit_blob(&a, other.clone()).await.expect("commit");

    let before = std::time::SystemTime::now() - Duration::from_secs(60);
    assert!(store
        .quarantine_blob(&record.digest, "its bytes hash to something else")
        .await
        .expect("quarantine"));
    assert!(!store
        .quarantine_blob(&record.digest, "again")
        .await
        .expect("quarantine again"));
    assert!(store.is_quarantined(&record.digest).await.expect("is"));
    assert!(!store.is_quarantined(&other.digest).await.expect("is"));
    assert_eq!(
        store.repository_blob(&a, &record.digest).await.expect("rb"),
        None
    );
    assert_eq!(
        store
            .mount_blob(&a, &b, &record.digest)
            .await
            .expect("mount"),
        None
    );
    // Still recorded: a push of the digest knows it, and heals it.
    assert_eq!(
        store.blob(&record.digest).await.expect("blob"),
        Some(record.clone())
    );
    assert_eq!(
        store.repository_blob(&a, &other.digest).await.expect("rb"),
        Some(other.clone())
    );
    // A manifest cannot reference it: its bytes cannot be served.
    let referencing = image(&other, &[&record]);
    match store
        .put_manifest(&a, referencing.clone(), Some(&tag("q")))
        .await
    {
        Err(MetaError::MissingReferences(missing)) => {
            assert_eq!(missing, vec![record.digest.clone()]);
        }
        other => panic!("expected MissingReferences, got {other:?}"),
    }
    let listed = store.quarantined_blobs().await.expect("list");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].digest, record.digest);
    assert_eq!(listed[0].reason, "its bytes hash to something else");
    assert!(listed[0].since > before, "{listed:?}");

    assert!(store.release_blob(&record.digest).await.expect("release"));
    assert!(!store.release_blob(&record.digest).await.expect("again"));
    assert!(store.quarantined_blobs().await.expect("list").is_empty());
    assert_eq!(
        store.repository_blob(&a, &record.digest).await.expect("rb"),
        Some(record.clone())
    );
    assert_eq!(
        store
            .mount_blob(&a, &b, &record.digest)
            .await
            .expect("mount"),
        Some(record.clone())
    );
    store
        .put_manifest(&a, referencing, Some(&tag("q")))
        .await
        .expect("released: referenceable again");
}

async fn leases_exclude_other_holders_until_they_expire(store: Arc<dyn MetaBackend>) {
    let minute = Duration::from_secs(60);
    assert!(store.try_lease("scrub", "one", minute).await.expect("take"));
    assert!(store
        .try_lease("scrub", "one", minute)
        .await
        .expect("renew"));
    assert!(!store.try_lease("scrub", "two", minute).await.expect("held"));
    assert!(store
        .try_lease("other", "two", minute)
        .await
        .expect("another name"));
    store
        .release_lease("scrub", "two")
        .await
        .expect("not the holder");
    assert!(!store
        .try_lease("scrub", "two", minute)
        .await
        .expect("still held"));
    store.release_lease("scrub", "one").await.expect("release");
    assert!(store.try_lease("scrub", "two", minute).await.expect("free"));

    // A lease that has expired is anyone's.
    let instant = Duration::from_millis(1);
    assert!(store
        .try_lease("short", "one", instant)
        .await
        .expect("take"));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(store
        .try_lease("short", "two", minute)
        .await
        .expect("expired"));
    assert!(!store.try_lease("short", "one", minute).await.expect("held"));
}

// ---------- image layouts ----------

async fn the_public_index_lists_published_images_and_queues_the_root_it_replaces(
    store: Arc<dyn MetaBackend>,
) {
    use ipfs_registry::meta::PublishedImage;
    let (app, other) = (repo("index/app"), repo("index/other"));
    let one = pushed_image(&*store, &app, "one").await;
    let two = pushed_image(&*store, &other, "two").await;
    store
        .put_manifest(&app, one.clone(), Some(&tag("v1")))
        .await
        .unwrap();
    store
        .put_manifest(&other, two.clone(), Some(&tag("latest")))
        .await
        .unwrap();
    let [a, b, c, d] = [b"a", b"b", b"c", b"d"].map(|seed| cid_of(&seed[..]));
    assert_eq!(store.published_images().await.unwrap(), vec![]);
    let empty = store.published_images_version().await.unwrap();

    assert!(store
        .record_layout(&app, &tag("v1"), &one.digest, &a)
        .await
        .unwrap());
    let after_one = store.published_images_version().await.unwrap();
    assert_ne!(after_one, empty);
    assert!(store
        .record_layout(&other, &tag("latest"), &two.digest, &b)
        .await
        .unwrap());
    let after_two = store.published_images_version().await.unwrap();
    assert_ne!(after_two, after_one);
    assert_eq!(
        store.published_images().await.unwrap(),
        vec![
            PublishedImage {
                repo: app.clone(),
                tag: tag("v1"),
                cid: a
            },
            PublishedImage {
                repo: other.clone(),
                tag: tag("latest"),
                cid: b
            },
        ]
    );

    assert_eq!(store.federation_index().await.unwrap(), None);
    store.record_federation_index(&c).await.unwrap();
    let index = store.federation_index().await.unwrap().expect("recorded");
    assert_eq!((index.cid, index.ipns), (c, None));
    assert!(store.recorded_cids(&[c]).await.unwrap().contains(&c));
    assert!(queued(&*store).await.is_empty());
    store.record_ipns("k51name", &c).await.unwrap();
    let ipns = store
        .federation_index()
        .await
        .unwrap()
        .and_then(|index| index.ipns)
        .expect("an IPNS record");
    assert_eq!((ipns.name.as_str(), ipns.cid), ("k51name", c));
    // Recording the same root again changes nothing; another queues the one it replaces,
    // and the IPNS record still says what was published.
    store.record_federation_index(&c).await.unwrap();
    assert!(queued(&*store).await.is_empty());
    store.record_federation_index(&d).await.unwrap();
    let index = store.federation_index().await.unwrap().expect("recorded");
    assert_eq!(index.cid, d);
    assert_eq!(index.ipns.map(|ipns| ipns.cid), Some(c));
    assert_eq!(queued(&*store).await, [c].into());

    // A deleted tag leaves the list, and the version says so.
    assert!(store.delete_tag(&app, &tag("v1")).await.unwrap());
    assert_ne!(store.published_images_version().await.unwrap(), after_two);
    assert_eq!(
        store
            .published_images()
            .await
            .unwrap()
            .into_iter()
            .map(|image| image.repo)
            .collect::<Vec<_>>(),
        vec![other]
    );
}

async fn queued(store: &dyn MetaBackend) -> std::collections::HashSet<cid::Cid> {
    store.unpin_queue(100).await.unwrap().into_iter().collect()
}

async fn image_layouts_live_as_long_as_their_tags_point_at_their_manifests(
    store: Arc<dyn MetaBackend>,
) {
    use ipfs_registry::meta::ImageLayout;
    let r = repo("layouts/app");
    let one = pushed_image(&*store, &r, "one").await;
    let two = pushed_image(&*store, &r, "two").await;
    for t in ["latest", "stable"] {
        store
            .put_manifest(&r, one.clone(), Some(&tag(t)))
            .await
            .unwrap();
    }
    let [a, b, c, d] = [b"a", b"b", b"c", b"d"].map(|seed| cid_of(&seed[..]));
    let latest = Reference::Tag(tag("latest"));
    assert_eq!(store.image_layout(&r, &latest).await.unwrap(), None);
    assert_eq!(
        store.unpublished_tags(&r, None, 10).await.unwrap(),
        vec![tag("latest"), tag("stable")]
    );

    assert!(store
        .record_layout(&r, &tag("latest"), &one.digest, &a)
        .await
        .unwrap());
    let recorded = ImageLayout {
        tag: "latest".into(),
        manifest: one.digest.clone(),
        cid: a,
    };
    assert_eq!(
        store.image_layout(&r, &latest).await.unwrap(),
        Some(recorded.clone())
    );
    // By digest: the first tag with a layout.
    assert_eq!(
        store
            .image_layout(&r, &Reference::Digest(one.digest.clone()))
            .await
            .unwrap(),
        Some(recorded)
    );
    assert_eq!(
        store.unpublished_tags(&r, None, 10).await.unwrap(),
        vec![tag("stable")]
    );
    assert_eq!(
        store
            .unpublished_tags(&r, Some("stable"), 10)
            .await
            .unwrap(),
        vec![]
    );
    assert_eq!(
        store.repositories_with_cid(&a).await.unwrap(),
        vec!["layouts/app".to_owned()]
    );
    assert!(store.recorded_cids(&[a, b]).await.unwrap().contains(&a));
    assert!(!store.recorded_cids(&[a, b]).await.unwrap().contains(&b));
    // A tag that does not point at the manifest (any more) records nothing.
    assert!(!store
        .record_layout(&r, &tag("latest"), &two.digest, &b)
        .await
        .unwrap());
    assert!(!store
        .record_layout(&r, &tag("gone"), &one.digest, &b)
        .await
        .unwrap());
    assert!(queued(&*store).await.is_empty());

    // Moving the tag drops its layout and queues the CID.
    store
        .put_manifest(&r, two.clone(), Some(&tag("latest")))
        .await
        .unwrap();
    assert_eq!(store.image_layout(&r, &latest).await.unwrap(), None);
    assert_eq!(queued(&*store).await, [a].into());
    // Pushing the same manifest under the tag again moves nothing.
    assert!(store
        .record_layout(&r, &tag("latest"), &two.digest, &b)
        .await
        .unwrap());
    store
        .put_manifest(&r, two.clone(), Some(&tag("latest")))
        .await
        .unwrap();
    assert_eq!(
        store
            .image_layout(&r, &latest)
            .await
            .unwrap()
            .map(|l| l.cid),
        Some(b)
    );
    // Recording another layout for the tag replaces the old one, which is queued.
    assert!(store
        .record_layout(&r, &tag("latest"), &two.digest, &c)
        .await
        .unwrap());
    assert_eq!(queued(&*store).await, [a, b].into());
    // Deleting the tag, or the manifest under a tag, drops theirs.
    assert!(store.delete_tag(&r, &tag("latest")).await.unwrap());
    assert_eq!(queued(&*store).await, [a, b, c].into());
    assert!(store
        .record_layout(&r, &tag("stable"), &one.digest, &d)
        .await
        .unwrap());
    assert!(store.delete_manifest(&r, &one.digest).await.unwrap());
    assert_eq!(queued(&*store).await, [a, b, c, d].into());
    assert_eq!(
        store
            .image_layout(&r, &Reference::Tag(tag("stable")))
            .await
            .unwrap(),
        None
    );
    assert!(store.repositories_with_cid(&d).await.unwrap().is_empty());
}

/// The same image tagged alike in two repositories has one layout CID: dropping it in one
/// leaves it in use for the other, so the unpin that follows the queue entry is skipped.
async fn a_layout_cid_recorded_anywhere_is_in_use(store: Arc<dyn MetaBackend>) {
    let (r1, r2) = (repo("layouts/one"), repo("layouts/two"));
    let cid = cid_of(b"the same layout");
    for r in [&r1, &r2] {
        let image = pushed_image(&*store, r, "same").await;
        store
            .put_manifest(r, image.clone(), Some(&tag("v1")))
            .await
            .unwrap();
        assert!(store
            .record_layout(r, &tag("v1"), &image.digest, &cid)
            .await
            .unwrap());
    }
    assert_eq!(
        store.repositories_with_cid(&cid).await.unwrap(),
        vec!["layouts/one".to_owned(), "layouts/two".to_owned()]
    );
    assert!(store.delete_tag(&r1, &tag("v1")).await.unwrap());
    assert_eq!(queued(&*store).await, [cid].into());
    let mut lease = store.unpin_lease(&cid).await.unwrap();
    assert!(lease.in_use().await.unwrap());
    drop(lease);
    assert!(store.delete_tag(&r2, &tag("v1")).await.unwrap());
    let mut lease = store.unpin_lease(&cid).await.unwrap();
    assert!(!lease.in_use().await.unwrap());
}

/// The publishing queue (src/registry/publish.rs): an entry names the manifest its push
/// tagged, is claimed by one publisher at a time until its lease runs out, and goes when
/// published, given up on, replaced by a newer push of the tag, or with the tag.
async fn the_layout_queue_is_claimed_once_retried_and_follows_its_tag(store: Arc<dyn MetaBackend>) {
    let r = repo("queue/app");
    let one = pushed_image(&*store, &r, "one").await;
    let two = pushed_image(&*store, &r, "two").await;
    for t in ["a", "b"] {
        store
            .put_manifest(&r, one.clone(), Some(&tag(t)))
            .await
            .unwrap();
    }
    let lease = Duration::from_secs(60);
    assert_eq!(store.claim_layouts(10, lease).await.unwrap(), vec![]);
    // Only while the tag points at the manifest.
    store
        .queue_layout(&r, &tag("a"), &two.digest)
        .await
        .unwrap();
    store
        .queue_layout(&r, &tag("gone"), &one.digest)
        .await
        .unwrap();
    assert_eq!(store.queued_layouts().await.unwrap(), 0);

    store
        .queue_layout(&r, &tag("a"), &one.digest)
        .await
        .unwrap();
    store
        .queue_layout(&r, &tag("b"), &one.digest)
        .await
        .unwrap();
    assert_eq!(store.queued_layouts().await.unwrap(), 2);
    let claimed = store.claim_layouts(1, lease).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let rest = store.claim_layouts(10, lease).await.unwrap();
    assert_eq!(rest.len(), 1, "a claimed entry is not claimed again");
    assert_ne!(claimed[0].tag, rest[0].tag);
    assert_eq!(store.claim_layouts(10, lease).await.unwrap(), vec![]);
    let a = [claimed, rest]
        .concat()
        .into_iter()
        .find(|e| e.tag == tag("a"))
        .unwrap();
    assert_eq!((&a.repo, &a.manifest, a.attempts), (&r, &one.digest, 0));

    // A failed attempt: due again after its backoff, counted.
    store.retry_layout(&a, Duration::ZERO).await.unwrap();
    let again = store.claim_layouts(10, lease).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((&again[0].tag, again[0].attempts), (&tag("a"), 1));

    // Pushed again while being published: the publisher's outcome leaves the new entry,
    // due at once with no failed attempt.
    store
        .put_manifest(&r, two.clone(), Some(&tag("a")))
        .await
        .unwrap();
    store
        .queue_layout(&r, &tag("a"), &two.digest)
        .await
        .unwrap();
    store.retry_layout(&again[0], lease).await.unwrap();
    store.dequeue_layout(&again[0]).await.unwrap();
    let newer = store.claim_layouts(10, lease).await.unwrap();
    assert_eq!(newer.len(), 1);
    assert_eq!(
        (&newer[0].tag, &newer[0].manifest, newer[0].attempts),
        (&tag("a"), &two.digest, 0)
    );
    store.dequeue_layout(&newer[0]).await.unwrap();
    assert_eq!(
        store.queued_layouts().await.unwrap(),
        1,
        "b is still queued"
    );

    // A deleted tag takes its entry along.
    assert!(store.delete_tag(&r, &tag("b")).await.unwrap());
    assert_eq!(store.queued_layouts().await.unwrap(), 0);

    // An expired claim is claimed again (a publisher that died).
    store
        .queue_layout(&r, &tag("a"), &two.digest)
        .await
        .unwrap();
    let first = store
        .claim_layouts(10, Duration::from_millis(200))
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let taken = store.claim_layouts(10, lease).await.unwrap();
        if !taken.is_empty() {
            assert_eq!(taken[0].tag, tag("a"));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the claim never ran out"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------- pull-through mirrors ----------

const UPSTREAM: &str = "http://upstream.example/v2/library/app";

async fn mirrored_manifests_need_no_blobs_and_gc_keeps_what_was_fetched(
    store: Arc<dyn MetaBackend>,
) {
    let r = repo("hub/library/app");
    let pushed = repo("local/app");
    assert_eq!(
        store.repository_origin(&r).await.unwrap(),
        RepoOrigin::Absent
    );
    let config = blob(b"mirrored config");
    let layer = blob(b"mirrored layer");
    let never = blob(b"a layer nobody pulls");
    let m = image(&config, &[&layer, &never]);
    // None of its blobs is here: a push would be refused, a mirror's store is not.
    store
        .put_mirrored_manifest(&r, UPSTREAM, m.clone(), Some(&tag("latest")), &[])
        .await
        .expect("store a mirrored manifest without its blobs");
    assert_eq!(
        store.repository_origin(&r).await.unwrap(),
        RepoOrigin::Mirrored
    );
    assert_eq!(by_tag(&*store, &r, "latest").await, Some(m.digest.clone()));
    assert_eq!(
        by_digest(&*store, &r, &m.digest).await.as_deref(),
        Some(m.content.as_ref())
    );
    // An index whose children come later, each by digest.
    let child = image(&config, &[&layer]);
    let idx = index(&[&child]);
    store
        .put_mirrored_manifest(&r, UPSTREAM, idx.clone(), Some(&tag("multi")), &[])
        .await
        .expect("an index without its children");
    store
        .put_mirrored_manifest(&r, UPSTREAM, child.clone(), None, &[])
        .await
        .expect("a child by digest");
    assert!(by_digest(&*store, &r, &child.digest).await.is_some());

    // A pushed repository stays pushed.
    store.commit_blob(&pushed, blob(b"x")).await.expect("push");
    assert_eq!(
        store.repository_origin(&pushed).await.unwrap(),
        RepoOrigin::Pushed
    );

    // Blobs fetched later are linked as a push links them; GC keeps those the manifests
    // reference and takes a stray one, and the blob never fetched breaks nothing.
    store.commit_blob(&r, config.clone()).await.expect("config");
    store.commit_blob(&r, layer.clone()).await.expect("layer");
    let stray = blob(b"fetched, referenced by nothing");
    store.commit_blob(&r, stray.clone()).await.expect("stray");
    let mut expected = vec![stray.digest.clone()];
    expected.extend(
        store
            .blob(&blob(b"x").digest)
            .await
            .unwrap()
            .map(|b| b.digest),
    );
    assert_eq!(unreferenced(&*store).await, sorted(expected));
    let swept = store
        .sweep(
            &SweepPolicy {
                grace_period: Duration::ZERO,
                untagged_retention: Some(Duration::ZERO),
                upload_expiry: Duration::from_secs(3600),
                ..SweepPolicy::default()
            },
            false,
        )
        .await
        .expect("sweep");
    assert!(
        swept.manifests.iter().all(|m| m.repository != r.as_str()),
        "tagged mirrored manifests and an index's children are kept: {swept:?}"
    );
    assert_eq!(by_tag(&*store, &r, "latest").await, Some(m.digest.clone()));
    assert!(store
        .repository_blob(&r, &layer.digest)
        .await
        .unwrap()
        .is_some());
    assert!(store
        .repository_blob(&r, &stray.digest)
        .await
        .unwrap()
        .is_none());
}

async fn mirrored_tags_record_when_the_upstream_last_confirmed_them(store: Arc<dyn MetaBackend>) {
    let r = repo("hub/library/tagged");
    let first = image(&blob(b"c1"), &[&blob(b"l1")]);
    let second = image(&blob(b"c2"), &[&blob(b"l2")]);
    assert_eq!(
        store.mirrored_tag_checked(&r, &tag("v1")).await.unwrap(),
        None
    );
    let before = SystemTime::now() - Duration::from_secs(1);
    store
        .put_mirrored_manifest(&r, UPSTREAM, first.clone(), Some(&tag("v1")), &[])
        .await
        .unwrap();
    let checked = store
        .mirrored_tag_checked(&r, &tag("v1"))
        .await
        .unwrap()
        .expect("checked when fetched");
    assert!(checked >= before, "{checked:?} is now");
    // Confirmed only while it points at what the upstream confirmed.
    assert!(store
        .confirm_mirrored_tag(&r, &tag("v1"), &first.digest)
        .await
        .unwrap());
    assert!(!store
        .confirm_mirrored_tag(&r, &tag("v1"), &second.digest)
        .await
        .unwrap());
    assert!(!store
        .confirm_mirrored_tag(&r, &tag("other"), &first.digest)
        .await
        .unwrap());
    // Moved upstream: stored again, the tag follows.
    store
        .put_mirrored_manifest(&r, UPSTREAM, second.clone(), Some(&tag("v1")), &[])
        .await
        .unwrap();
    assert_eq!(by_tag(&*store, &r, "v1").await, Some(second.digest.clone()));
    assert!(!store
        .confirm_mirrored_tag(&r, &tag("v1"), &first.digest)
        .await
        .unwrap());
    // A pushed repository's tags were never checked; a deleted tag forgets its check.
    let pushed = repo("local/tagged");
    let local = pushed_image(&*store, &pushed, "p").await;
    store
        .put_manifest(&pushed, local, Some(&tag("v1")))
        .await
        .unwrap();
    assert_eq!(
        store
            .mirrored_tag_checked(&pushed, &tag("v1"))
            .await
            .unwrap(),
        None
    );
    assert!(store.delete_tag(&r, &tag("v1")).await.unwrap());
    assert_eq!(
        store.mirrored_tag_checked(&r, &tag("v1")).await.unwrap(),
        None
    );
}

// ---------- follow rules ----------

async fn follow_rules_keep_their_state_and_tags_per_rule(store: Arc<dyn MetaBackend>) {
    // A rule never run has an empty state.
    assert_eq!(
        store.follow_state("a").await.unwrap(),
        FollowState::default()
    );
    let before = SystemTime::now() - Duration::from_secs(5);
    let root = cid_of(b"index one");
    store
        .record_follow_error("a", "source unreachable")
        .await
        .unwrap();
    let state = store.follow_state("a").await.unwrap();
    assert_eq!(state.last_error.as_deref(), Some("source unreachable"));
    assert!(state.error_at.is_some_and(|at| at > before));
    assert_eq!((state.last_root, state.last_success), (None, None));
    // A success records the root and clears the error; a later error keeps the success.
    store.record_follow_success("a", &root).await.unwrap();
    let state = store.follow_state("a").await.unwrap();
    assert_eq!(state.last_root, Some(root));
    assert!(state.last_success.is_some_and(|at| at > before));
    assert_eq!((state.last_error, state.error_at), (None, None));
    store
        .record_follow_error("a", "2 tags failed")
        .await
        .unwrap();
    let state = store.follow_state("a").await.unwrap();
    assert_eq!(state.last_root, Some(root));
    assert!(state.last_success.is_some());
    assert_eq!(state.last_error.as_deref(), Some("2 tags failed"));
    // Rules are separate.
    assert_eq!(
        store.follow_state("b").await.unwrap(),
        FollowState::default()
    );

    let followed = |r: &str, t: &str, seed: &[u8]| FollowedTag {
        repo: repo(r),
        tag: tag(t),
        layout: cid_of(seed),
        manifest: Digest::sha256_of(seed),
    };
    let v1 = followed("mirror/team/app", "v1", b"one");
    let v2 = followed("mirror/team/app", "v2", b"two");
    let other = followed("mirror/team/lib", "v1", b"lib");
    for t in [&v2, &other, &v1] {
        store.record_followed_tag("a", t).await.unwrap();
    }
    store.record_followed_tag("b", &v1).await.unwrap();
    assert_eq!(
        store.followed_tags("a").await.unwrap(),
        vec![v1.clone(), v2.clone(), other.clone()]
    );
    assert_eq!(store.follow_state("a").await.unwrap().tags, 3);
    // Recording a tag again replaces what it was imported from.
    let moved = followed("mirror/team/app", "v1", b"moved");
    store.record_followed_tag("a", &moved).await.unwrap();
    assert_eq!(
        store.followed_tags("a").await.unwrap(),
        vec![moved.clone(), v2.clone(), other.clone()]
    );
    store
        .forget_followed_tag("a", &v2.repo, &v2.tag)
        .await
        .unwrap();
    // Forgetting what is not recorded is no error.
    store
        .forget_followed_tag("a", &v2.repo, &v2.tag)
        .await
        .unwrap();
    assert_eq!(store.followed_tags("a").await.unwrap(), vec![moved, other]);
    assert_eq!(store.followed_tags("b").await.unwrap(), vec![v1]);
    assert_eq!(store.follow_state("b").await.unwrap().tags, 1);
}
