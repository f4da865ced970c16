//! The `OutboxStore` contract, and the `…_with_notices` writes of `MetadataStore`, on every
//! metadata store (common::backends): notices are recorded in the transaction of their
//! change and only when it happens; claims keep replicas apart until they run out;
//! delivered entries go, failed ones wait, are given up on, and are replayed. Delivery end
//! to end (HTTP, signatures, restarts) is in notifications.rs.

#[macro_use]
mod common;

use std::sync::Arc;
use std::time::Duration;

use common::backends::MetaBackend;
use common::meta::*;
use ipfs_registry::meta::outbox::{Notice, OutboxCounts, Retry};
use ipfs_registry::meta::{MetaError, ProtectedTags};

on_every_meta_store!(
    notices_are_recorded_with_their_change_and_only_when_it_happens,
    a_claim_keeps_other_holders_out_until_it_runs_out,
    delivered_entries_go_and_failed_ones_wait_then_are_kept_until_replayed,
    entries_list_in_id_order_by_page,
    purges_take_failed_entries_and_pending_ones_only_when_asked,
);

const HOUR: Duration = Duration::from_secs(3600);

fn notice(endpoint: &str, event: &str) -> Notice {
    Notice {
        endpoint: endpoint.to_owned(),
        event: format!("{{\"id\":\"{event}\"}}"),
    }
}

/// One endpoint's line of `notice_counts`.
fn counted(endpoint: &str, pending: u64, failed: u64) -> (String, OutboxCounts) {
    (endpoint.to_owned(), OutboxCounts { pending, failed })
}

/// Records events "1", "2" and "3" for `endpoint`.
async fn record_three(store: &dyn MetaBackend, endpoint: &str) {
    let notices: Vec<Notice> = ["1", "2", "3"]
        .iter()
        .map(|e| notice(endpoint, e))
        .collect();
    store.record_notices(&notices).await.expect("record");
}

/// The events (their ids) recorded, in id order.
async fn recorded(store: &dyn MetaBackend) -> Vec<String> {
    store
        .notices(false, None, 1000)
        .await
        .expect("list")
        .into_iter()
        .map(|e| {
            let event: serde_json::Value = serde_json::from_str(&e.event).unwrap();
            event["id"].as_str().unwrap().to_owned()
        })
        .collect()
}

async fn notices_are_recorded_with_their_change_and_only_when_it_happens(
    store: Arc<dyn MetaBackend>,
) {
    let r = repo("outbox/app");
    let other = repo("outbox/other");
    let none = ProtectedTags::none();
    let config = blob(b"config");
    let layer = blob(b"layer");
    store
        .commit_blob_with_notices(&r, config.clone(), &[notice("a", "config")])
        .await
        .expect("commit");
    store
        .commit_blob_with_notices(
            &r,
            layer.clone(),
            &[notice("a", "layer"), notice("b", "layer")],
        )
        .await
        .expect("commit");

    // A refused manifest records nothing.
    let missing = image(&config, &[&blob(b"never pushed")]);
    let refused = store
        .put_manifest_with(
            &r,
            missing,
            Some(&tag("x")),
            &none,
            &[notice("a", "refused")],
        )
        .await;
    assert!(matches!(refused, Err(MetaError::MissingReferences(_))));
    let m = image(&config, &[&layer]);
    store
        .put_manifest_with(
            &r,
            m.clone(),
            Some(&tag("1")),
            &none,
            &[notice("a", "manifest")],
        )
        .await
        .expect("put");

    // Mounting from a repository without the blob, deleting what is not there: nothing.
    assert_eq!(
        store
            .mount_blob_with_notices(&other, &r, &layer.digest, &[notice("a", "no mount")])
            .await
            .expect("mount"),
        None
    );
    assert!(store
        .mount_blob_with_notices(&r, &other, &layer.digest, &[notice("a", "mount")])
        .await
        .expect("mount")
        .is_some());
    assert!(!store
        .delete_tag_with(&r, &tag("none"), &none, &[notice("a", "no tag")])
        .await
        .expect("delete tag"));
    assert!(store
        .delete_tag_with(&r, &tag("1"), &none, &[notice("a", "tag")])
        .await
        .expect("delete tag"));
    assert!(store
        .delete_manifest_with(&r, &m.digest, &none, &[notice("a", "manifest gone")])
        .await
        .expect("delete manifest"));
    assert!(!store
        .delete_manifest_with(&r, &m.digest, &none, &[notice("a", "again")])
        .await
        .expect("delete manifest"));
    assert!(store
        .unlink_blob_with_notices(&other, &layer.digest, &[notice("a", "unlink")])
        .await
        .expect("unlink"));
    assert!(!store
        .unlink_blob_with_notices(&other, &layer.digest, &[notice("a", "unlink again")])
        .await
        .expect("unlink"));

    let upload = store
        .create_upload(&r, Vec::new())
        .await
        .expect("create upload");
    let uploaded = blob(b"uploaded");
    store
        .complete_upload_with_notices(upload.id, &r, uploaded, None, &[notice("a", "upload")])
        .await
        .expect("complete");

    assert_eq!(
        recorded(&*store).await,
        [
            "config",
            "layer",
            "layer",
            "manifest",
            "mount",
            "tag",
            "manifest gone",
            "unlink",
            "upload"
        ]
    );
    // The plain forms record none.
    store.commit_blob(&r, blob(b"plain")).await.expect("commit");
    assert_eq!(recorded(&*store).await.len(), 9);
    let counts = store.notice_counts().await.expect("counts");
    assert_eq!(counts, vec![counted("a", 8, 0), counted("b", 1, 0),]);
}

async fn a_claim_keeps_other_holders_out_until_it_runs_out(store: Arc<dyn MetaBackend>) {
    record_three(&*store, "a").await;
    store
        .record_notices(&[notice("b", "b1")])
        .await
        .expect("record");

    let first = store
        .claim_notices("a", "one", HOUR, 2)
        .await
        .expect("claim");
    assert_eq!(first.len(), 2);
    assert!(first[0].id < first[1].id, "oldest first: {first:?}");
    assert_eq!(first[0].endpoint, "a");
    assert_eq!(first[0].attempts, 0);
    let second = store
        .claim_notices("a", "two", HOUR, 10)
        .await
        .expect("claim");
    assert_eq!(
        second.len(),
        1,
        "only what the first claim left: {second:?}"
    );
    assert!(second[0].id > first[1].id);
    assert!(store
        .claim_notices("a", "two", HOUR, 10)
        .await
        .expect("claim")
        .is_empty());
    // Another endpoint's entries are its own.
    assert_eq!(
        store
            .claim_notices("b", "one", HOUR, 10)
            .await
            .expect("claim")
            .len(),
        1
    );

    // A claim that runs out (its holder died) is taken by the next.
    store
        .record_notices(&[notice("c", "c1")])
        .await
        .expect("record");
    let short = store
        .claim_notices("c", "dead", Duration::from_millis(1), 10)
        .await
        .expect("claim");
    assert_eq!(short.len(), 1);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let taken = store
        .claim_notices("c", "alive", HOUR, 10)
        .await
        .expect("claim");
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].id, short[0].id);
    // The dead holder's acknowledgement no longer counts.
    store
        .notices_delivered("dead", &[short[0].id])
        .await
        .expect("delivered");
    assert_eq!(store.notices(false, None, 10).await.expect("list").len(), 5);
}

async fn delivered_entries_go_and_failed_ones_wait_then_are_kept_until_replayed(
    store: Arc<dyn MetaBackend>,
) {
    record_three(&*store, "a").await;
    let claimed = store
        .claim_notices("a", "me", HOUR, 10)
        .await
        .expect("claim");
    let [one, two, three] = [claimed[0].id, claimed[1].id, claimed[2].id];

    store
        .notices_delivered("me", &[one])
        .await
        .expect("delivered");
    store
        .notices_failed(
            "me",
            &[(two, Retry::After(HOUR)), (three, Retry::GiveUp)],
            "the endpoint answered 500",
        )
        .await
        .expect("failed");

    let left = store.notices(false, None, 10).await.expect("list");
    assert_eq!(left.iter().map(|e| e.id).collect::<Vec<_>>(), [two, three]);
    assert_eq!(left[0].attempts, 1);
    assert!(!left[0].failed);
    assert_eq!(
        left[0].last_error.as_deref(),
        Some("the endpoint answered 500")
    );
    assert!(left[1].failed);
    assert_eq!(
        store
            .notices(true, None, 10)
            .await
            .expect("list")
            .iter()
            .map(|e| e.id)
            .collect::<Vec<_>>(),
        [three]
    );
    assert_eq!(
        store.notice_counts().await.expect("counts"),
        vec![counted("a", 1, 1)]
    );
    // Neither is due: one waits an hour, the other is given up on.
    assert!(store
        .claim_notices("a", "me", HOUR, 10)
        .await
        .expect("claim")
        .is_empty());

    // A replay of another endpoint's or of other ids changes nothing.
    assert_eq!(
        store.replay_notices(Some("b"), &[]).await.expect("replay"),
        0
    );
    assert_eq!(store.replay_notices(None, &[two]).await.expect("replay"), 0);
    assert_eq!(
        store
            .replay_notices(Some("a"), &[three])
            .await
            .expect("replay"),
        1
    );
    let again = store
        .claim_notices("a", "me", HOUR, 10)
        .await
        .expect("claim");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, three);
    assert_eq!(again[0].attempts, 0, "a replay starts the attempts afresh");
    assert!(!again[0].failed);
    store
        .notices_delivered("me", &[three])
        .await
        .expect("delivered");
    assert_eq!(
        store.notice_counts().await.expect("counts"),
        vec![counted("a", 1, 0)]
    );
}

async fn purges_take_failed_entries_and_pending_ones_only_when_asked(store: Arc<dyn MetaBackend>) {
    record_three(&*store, "a").await;
    store
        .record_notices(&[notice("gone", "g1"), notice("gone", "g2")])
        .await
        .expect("record");
    let claimed = store
        .claim_notices("a", "me", HOUR, 10)
        .await
        .expect("claim");
    let outcomes: Vec<(i64, Retry)> = claimed[..2].iter().map(|e| (e.id, Retry::GiveUp)).collect();
    store
        .notices_failed("me", &outcomes, "down")
        .await
        .expect("failed");

    assert_eq!(
        store
            .purge_notices(Some("a"), &[claimed[0].id], false)
            .await
            .expect("purge"),
        1
    );
    // Pending entries stay unless asked for.
    assert_eq!(
        store.purge_notices(None, &[], false).await.expect("purge"),
        1
    );
    assert_eq!(
        store.notice_counts().await.expect("counts"),
        vec![counted("a", 1, 0), counted("gone", 2, 0),]
    );
    assert_eq!(
        store
            .purge_notices(Some("gone"), &[], true)
            .await
            .expect("purge"),
        2
    );
    assert_eq!(
        store.notice_counts().await.expect("counts"),
        vec![counted("a", 1, 0)]
    );
}

async fn entries_list_in_id_order_by_page(store: Arc<dyn MetaBackend>) {
    let notices: Vec<Notice> = (0..5).map(|i| notice("a", &i.to_string())).collect();
    store.record_notices(&notices).await.expect("record");
    let first = store.notices(false, None, 3).await.expect("list");
    assert_eq!(first.len(), 3);
    let rest = store
        .notices(false, Some(first[2].id), 3)
        .await
        .expect("list");
    assert_eq!(rest.len(), 2);
    let ids: Vec<i64> = first.iter().chain(&rest).map(|e| e.id).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(ids, sorted);
    assert!(rest
        .iter()
        .all(|e| e.created <= std::time::SystemTime::now()));
}
