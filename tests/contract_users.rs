//! The `UserStore` contract, on every metadata store (common::backends): users and their
//! password hashes, grants, public patterns, robot tokens and the filtered catalog.

#[macro_use]
mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::backends::MetaBackend;
use common::meta::{blob, page, repo};
use ipfs_registry::meta::users::{RepoFilter, RobotToken, StoredGrant};
use ipfs_registry::meta::Page;
use uuid::Uuid;

on_every_meta_store!(
    users_are_created_once_listed_in_name_order_and_removed,
    set_password_replaces_the_hash_and_moves_the_change_time,
    grants_add_up_and_revoke_takes_some_or_all,
    removing_a_user_takes_their_grants_and_robot_tokens,
    public_patterns_are_set_and_cleared,
    robot_tokens_round_trip_for_known_users,
    catalog_filtered_applies_the_filter_before_the_page,
);

fn permissions(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

/// Stores keep times to the millisecond at least; whole seconds round-trip everywhere.
fn whole_seconds(time: SystemTime) -> SystemTime {
    let since = time.duration_since(SystemTime::UNIX_EPOCH).unwrap();
    SystemTime::UNIX_EPOCH + Duration::from_secs(since.as_secs())
}

async fn users_are_created_once_listed_in_name_order_and_removed(store: Arc<dyn MetaBackend>) {
    assert_eq!(store.users().await.expect("users"), vec![]);
    assert_eq!(store.user("alice").await.expect("user"), None);

    assert!(store
        .create_user("bob", "$argon2id$bob", false)
        .await
        .unwrap());
    assert!(store
        .create_user("alice", "$argon2id$alice", true)
        .await
        .unwrap());
    // A taken name: refused, and the first user is unchanged.
    assert!(!store
        .create_user("bob", "$argon2id$other", true)
        .await
        .unwrap());
    let bob = store.user("bob").await.unwrap().expect("bob");
    assert_eq!(bob.name, "bob");
    assert_eq!(bob.password_hash, "$argon2id$bob");
    assert!(!bob.admin);
    let alice = store.user("alice").await.unwrap().expect("alice");
    assert!(alice.admin);
    assert_ne!(alice.id, bob.id);
    assert_eq!(
        store.users().await.unwrap(),
        vec![("alice".to_owned(), true), ("bob".to_owned(), false)]
    );

    assert!(store.remove_user("bob").await.unwrap());
    assert!(!store.remove_user("bob").await.unwrap());
    assert!(!store.remove_user("nobody").await.unwrap());
    assert_eq!(store.user("bob").await.unwrap(), None);
    assert_eq!(
        store.users().await.unwrap(),
        vec![("alice".to_owned(), true)]
    );
    // The name is free again, for a new user.
    assert!(store
        .create_user("bob", "$argon2id$new", false)
        .await
        .unwrap());
    let new_bob = store.user("bob").await.unwrap().expect("bob again");
    assert_eq!(new_bob.password_hash, "$argon2id$new");
    assert_eq!(store.grants(new_bob.id).await.unwrap(), vec![]);
}

async fn set_password_replaces_the_hash_and_moves_the_change_time(store: Arc<dyn MetaBackend>) {
    assert!(store
        .create_user("carol", "$argon2id$one", false)
        .await
        .unwrap());
    let before = store.user("carol").await.unwrap().expect("carol");
    // Refresh tokens issued before the change are refused: the change time must move past
    // anything issued earlier, at the stores' millisecond resolution.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let issued = SystemTime::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(store.set_password("carol", "$argon2id$two").await.unwrap());
    let after = store.user("carol").await.unwrap().expect("carol");
    assert_eq!(after.password_hash, "$argon2id$two");
    assert_eq!(after.id, before.id);
    assert!(
        after.password_changed_at > issued,
        "{:?} is not after {issued:?}",
        after.password_changed_at
    );
    assert!(!store.set_password("nobody", "$argon2id$x").await.unwrap());
}

async fn grants_add_up_and_revoke_takes_some_or_all(store: Arc<dyn MetaBackend>) {
    assert!(store
        .create_user("dave", "$argon2id$d", false)
        .await
        .unwrap());
    let id = store.user("dave").await.unwrap().expect("dave").id;
    assert!(!store
        .grant("nobody", "team/*", &permissions(&["pull"]))
        .await
        .unwrap());

    assert!(store
        .grant("dave", "team/*", &permissions(&["push", "pull"]))
        .await
        .unwrap());
    // Granting again adds to what is there, without duplicates.
    assert!(store
        .grant("dave", "team/*", &permissions(&["pull", "delete"]))
        .await
        .unwrap());
    assert!(store
        .grant("dave", "app", &permissions(&["pull"]))
        .await
        .unwrap());
    assert_eq!(
        store.grants(id).await.unwrap(),
        vec![
            StoredGrant {
                pattern: "app".to_owned(),
                permissions: permissions(&["pull"]),
            },
            StoredGrant {
                pattern: "team/*".to_owned(),
                permissions: permissions(&["delete", "pull", "push"]),
            },
        ]
    );

    // Some permissions: the rest stay.
    assert!(store
        .revoke("dave", "team/*", Some(&permissions(&["push"])))
        .await
        .unwrap());
    // Permissions the user does not have there: nothing changes.
    assert!(!store
        .revoke("dave", "team/*", Some(&permissions(&["admin"])))
        .await
        .unwrap());
    assert!(!store
        .revoke("dave", "elsewhere", Some(&permissions(&["pull"])))
        .await
        .unwrap());
    assert!(!store.revoke("nobody", "team/*", None).await.unwrap());
    assert_eq!(
        store.grants(id).await.unwrap()[1],
        StoredGrant {
            pattern: "team/*".to_owned(),
            permissions: permissions(&["delete", "pull"]),
        }
    );
    // Revoking the last permissions of a pattern removes the pattern.
    assert!(store
        .revoke("dave", "app", Some(&permissions(&["pull"])))
        .await
        .unwrap());
    // All of them at once.
    assert!(store.revoke("dave", "team/*", None).await.unwrap());
    assert!(!store.revoke("dave", "team/*", None).await.unwrap());
    assert_eq!(store.grants(id).await.unwrap(), vec![]);
}

fn token(user_id: i64, scopes: &str) -> RobotToken {
    RobotToken {
        id: Uuid::new_v4(),
        user_id,
        secret_sha256: vec![7; 32],
        scopes: scopes.to_owned(),
        expires_at: whole_seconds(SystemTime::now() + Duration::from_secs(3600)),
    }
}

async fn removing_a_user_takes_their_grants_and_robot_tokens(store: Arc<dyn MetaBackend>) {
    assert!(store
        .create_user("erin", "$argon2id$e", false)
        .await
        .unwrap());
    assert!(store
        .create_user("frank", "$argon2id$f", false)
        .await
        .unwrap());
    let erin = store.user("erin").await.unwrap().expect("erin").id;
    let frank = store.user("frank").await.unwrap().expect("frank").id;
    for user in ["erin", "frank"] {
        assert!(store
            .grant(user, "x/*", &permissions(&["pull"]))
            .await
            .unwrap());
    }
    let erins = token(erin, "repository:x/a:pull");
    let franks = token(frank, "repository:x/b:pull");
    assert!(store.create_robot_token("erin", &erins).await.unwrap());
    assert!(store.create_robot_token("frank", &franks).await.unwrap());

    assert!(store.remove_user("erin").await.unwrap());
    assert_eq!(store.grants(erin).await.unwrap(), vec![]);
    assert_eq!(store.robot_token(erins.id).await.unwrap(), None);
    // Another user's are untouched.
    assert_eq!(store.grants(frank).await.unwrap().len(), 1);
    assert_eq!(store.robot_token(franks.id).await.unwrap(), Some(franks));
}

async fn public_patterns_are_set_and_cleared(store: Arc<dyn MetaBackend>) {
    assert_eq!(store.public_patterns().await.unwrap(), Vec::<String>::new());
    assert!(store.set_public("library/*", true).await.unwrap());
    assert!(store.set_public("docs", true).await.unwrap());
    assert!(
        !store.set_public("docs", true).await.unwrap(),
        "already public"
    );
    assert_eq!(
        store.public_patterns().await.unwrap(),
        vec!["docs".to_owned(), "library/*".to_owned()]
    );
    assert!(store.set_public("docs", false).await.unwrap());
    assert!(
        !store.set_public("docs", false).await.unwrap(),
        "not public"
    );
    assert!(!store.set_public("never", false).await.unwrap());
    assert_eq!(
        store.public_patterns().await.unwrap(),
        vec!["library/*".to_owned()]
    );
}

async fn robot_tokens_round_trip_for_known_users(store: Arc<dyn MetaBackend>) {
    assert!(store
        .create_user("robot-owner", "$argon2id$r", false)
        .await
        .unwrap());
    let owner = store.user("robot-owner").await.unwrap().expect("owner").id;
    let stored = token(owner, "repository:app:pull,push repository:lib/*:pull");
    assert!(store
        .create_robot_token("robot-owner", &stored)
        .await
        .unwrap());
    assert_eq!(
        store.robot_token(stored.id).await.unwrap(),
        Some(stored.clone())
    );
    assert_eq!(store.robot_token(Uuid::new_v4()).await.unwrap(), None);
    // For an unknown user nothing is stored.
    let orphan = token(owner, "repository:app:pull");
    assert!(!store.create_robot_token("nobody", &orphan).await.unwrap());
    assert_eq!(store.robot_token(orphan.id).await.unwrap(), None);
}

async fn catalog_filtered_applies_the_filter_before_the_page(store: Arc<dyn MetaBackend>) {
    for name in ["a/1", "a/2", "b/1", "b/2", "c", "team/x", "teams"] {
        store
            .commit_blob(&repo(name), blob(name.as_bytes()))
            .await
            .expect("commit");
    }
    let all = RepoFilter {
        all: true,
        ..RepoFilter::default()
    };
    assert_eq!(
        store
            .catalog_filtered(&Page::default(), &all)
            .await
            .unwrap(),
        store.catalog(&Page::default()).await.unwrap()
    );
    assert_eq!(
        store
            .catalog_filtered(&Page::default(), &RepoFilter::default())
            .await
            .unwrap(),
        Vec::<String>::new(),
        "an empty filter admits nothing"
    );
    let some = RepoFilter {
        all: false,
        names: vec!["c".to_owned(), "missing".to_owned()],
        prefixes: vec!["b/".to_owned(), "team/".to_owned()],
    };
    assert_eq!(
        store
            .catalog_filtered(&Page::default(), &some)
            .await
            .unwrap(),
        ["b/1", "b/2", "c", "team/x"]
    );
    // Pages hold n visible names: the filter is applied before the limit.
    assert_eq!(
        store
            .catalog_filtered(&page(Some(2), None), &some)
            .await
            .unwrap(),
        ["b/1", "b/2"]
    );
    assert_eq!(
        store
            .catalog_filtered(&page(Some(2), Some("b/2")), &some)
            .await
            .unwrap(),
        ["c", "team/x"]
    );
    assert_eq!(
        store
            .catalog_filtered(&page(Some(2), Some("team/x")), &some)
            .await
            .unwrap(),
        Vec::<String>::new()
    );
}
