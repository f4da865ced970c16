//! Per-repository permissions enforced end to end: a permission matrix (user × action ×
//! repository) driven through the HTTP API with tokens from `/token`; public repositories
//! for anonymous pulls; the catalog filtered by pull rights (with pagination); mounts,
//! referrers and robot tokens under the same rules.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::auth::*;
use common::oci::*;
use common::StorePair;
use ipfs_registry::auth::admin;
use serde_json::{json, Value};

const PASSWORD: &str = "s3cret-password";

/// Pushes an image to each repository (as an admin) and tags one manifest per user for
/// that user to try to delete.
async fn seed(registry: &AuthRegistry, repos: &[&str], users: &[&str]) -> BTreeMap<String, Image> {
    let scopes: Vec<String> = repos
        .iter()
        .map(|r| format!("repository:{r}:pull,push"))
        .collect();
    let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
    let admin = registry.client(Some(("root", PASSWORD)), &scopes).await;
    let mut images = BTreeMap::new();
    for repo in repos {
        let image = admin.push_image(repo, Some("latest"), 1).await;
        for user in users {
            admin
                .push_manifest(repo, &format!("del-{user}"), &image.manifest)
                .await;
        }
        images.insert((*repo).to_owned(), image);
    }
    images
}

common::on_each_store_pair!(permission_matrix);
async fn permission_matrix(stores: StorePair) {
    let registry = start_auth_registry(stores).await;
    registry.add_user("root", PASSWORD, true).await;
    for user in ["alice", "bob", "carol", "dave", "erin"] {
        registry.add_user(user, PASSWORD, false).await;
    }
    registry.grant("alice", "team/*", "pull,push").await;
    registry.grant("bob", "team/app", "pull").await;
    registry.grant("carol", "team/app", "pull,delete").await;
    registry.grant("erin", "ops/*", "admin").await;
    registry.make_public("pub/*").await;

    let repos = ["team/app", "pub/lib", "ops/db"];
    let users = ["root", "alice", "bob", "carol", "dave", "erin", "anonymous"];
    let images = seed(&registry, &repos, &users).await;

    // Who may do what; everything else must be refused.
    let allowed: &[(&str, &str, &str)] = &[
        ("root", "team/app", "pull"),
        ("root", "team/app", "push"),
        ("root", "team/app", "delete"),
        ("root", "pub/lib", "pull"),
        ("root", "pub/lib", "push"),
        ("root", "pub/lib", "delete"),
        ("root", "ops/db", "pull"),
        ("root", "ops/db", "push"),
        ("root", "ops/db", "delete"),
        ("alice", "team/app", "pull"),
        ("alice", "team/app", "push"),
        ("alice", "pub/lib", "pull"),
        ("bob", "team/app", "pull"),
        ("bob", "pub/lib", "pull"),
        ("carol", "team/app", "pull"),
        ("carol", "team/app", "delete"),
        ("carol", "pub/lib", "pull"),
        ("dave", "pub/lib", "pull"),
        ("erin", "pub/lib", "pull"),
        ("erin", "ops/db", "pull"),
        ("erin", "ops/db", "push"),
        ("erin", "ops/db", "delete"),
        ("anonymous", "pub/lib", "pull"),
    ];

    let mut failures = Vec::new();
    for user in users {
        let credentials = (user != "anonymous").then_some((user, PASSWORD));
        for repo in repos {
            let scope = format!("repository:{repo}:pull,push,delete");
            let token = registry.token(credentials, &[&scope]).await;
            // The token carries exactly the allowed actions.
            let granted: Vec<String> = claims(&token)["access"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|a| a["actions"].as_array().unwrap().clone())
                .map(|a| a.as_str().unwrap().to_owned())
                .collect();
            let expected: Vec<String> = ["delete", "pull", "push"]
                .iter()
                .filter(|a| allowed.contains(&(user, repo, **a)))
                .map(|a| (*a).to_owned())
                .collect();
            if granted != expected {
                failures.push(format!(
                    "{user} {repo}: granted {granted:?}, expected {expected:?}"
                ));
            }
            let client = bearer_client(registry.base(), &token);
            for action in ["pull", "push", "delete"] {
                let response = match action {
                    "pull" => client.get(&format!("/v2/{repo}/manifests/latest")).await,
                    "push" => {
                        let data = random_bytes(100);
                        client.post_blob(repo, &data, &sha256(&data)).await
                    }
                    _ => {
                        client
                            .delete(&format!("/v2/{repo}/manifests/del-{user}"))
                            .await
                    }
                };
                let status = response.status().as_u16();
                let want = if allowed.contains(&(user, repo, action)) {
                    match action {
                        "pull" => 200,
                        "push" => 201,
                        _ => 202,
                    }
                } else if user == "anonymous" {
                    401
                } else {
                    403
                };
                if status != want {
                    failures.push(format!("{user} {action} {repo}: {status}, expected {want}"));
                    continue;
                }
                if status == 401 {
                    let challenge = header(&response, "www-authenticate");
                    assert!(
                        challenge.contains("error=\"insufficient_scope\""),
                        "{challenge}"
                    );
                }
                if status == 403 {
                    let body: Value = response.json().await.unwrap();
                    assert_eq!(body["errors"][0]["code"], "DENIED");
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "permission matrix:\n{}",
        failures.join("\n")
    );

    // Pulled content is the pushed content.
    let bob = registry
        .client(Some(("bob", PASSWORD)), &["repository:team/app:pull"])
        .await;
    let layer = &images["team/app"].layers[0];
    let pulled = expect_status(
        bob.get(&format!("/v2/team/app/blobs/{}", layer.digest))
            .await,
        200,
    )
    .await;
    assert_eq!(pulled.bytes().await.unwrap(), layer.data);
    registry.registry.server.stop().await;
}

common::on_each_store_pair!(a_token_for_another_repository_is_insufficient_scope_not_denied);
async fn a_token_for_another_repository_is_insufficient_scope_not_denied(stores: StorePair) {
    let registry = start_auth_registry(stores).await;
    registry.add_user("alice", PASSWORD, false).await;
    registry.grant("alice", "team/*", "pull,push").await;
    let client = registry
        .client(Some(("alice", PASSWORD)), &["repository:team/one:pull"])
        .await;
    // Alice may pull team/two, but this token is for team/one: ask for a new token.
    let response = client.get("/v2/team/two/tags/list").await;
    assert_eq!(response.status(), 401);
    let challenge = header(&response, "www-authenticate");
    assert!(
        challenge.contains("scope=\"repository:team/two:pull\""),
        "{challenge}"
    );
    assert!(
        challenge.contains("error=\"insufficient_scope\""),
        "{challenge}"
    );
    // She may never delete there: forbidden.
    let response = client.delete("/v2/team/two/manifests/latest").await;
    assert_error(response, 403, "DENIED").await;
    registry.registry.server.stop().await;
}

common::on_each_store_pair!(invalid_repository_names_are_name_invalid_for_everyone);
/// An invalid repository name is 400 `NAME_INVALID` as with auth off, whoever asks: whether
/// a name is valid is no secret, and no permission could ever cover it (not 401 or 403).
async fn invalid_repository_names_are_name_invalid_for_everyone(stores: StorePair) {
    let registry = start_auth_registry(stores).await;
    registry.add_user("alice", PASSWORD, false).await;
    registry.grant("alice", "team/*", "pull,push,delete").await;
    let alice = registry
        .client(
            Some(("alice", PASSWORD)),
            &["repository:team/app:pull,push"],
        )
        .await;
    let anonymous = Oci::new(registry.base());
    let digest = unknown_digest();
    for client in [&alice, &anonymous] {
        for (method, path) in [
            ("GET", "/v2/Team/App/manifests/latest".to_owned()),
            ("HEAD", "/v2/team/-app/manifests/latest".to_owned()),
            ("PUT", "/v2/team//app/manifests/latest".to_owned()),
            ("DELETE", "/v2/Team/App/manifests/latest".to_owned()),
            ("GET", format!("/v2/Team/App/blobs/{digest}")),
            ("POST", "/v2/Team/App/blobs/uploads/".to_owned()),
            ("GET", "/v2/Team/App/tags/list".to_owned()),
            ("GET", format!("/v2/Team/App/referrers/{digest}")),
            (
                "GET",
                "/v2/_ext/Team/App/manifests/latest/layers".to_owned(),
            ),
        ] {
            let response = client
                .request(method.parse().unwrap(), &path)
                .send()
                .await
                .unwrap();
            if method == "HEAD" {
                assert_eq!(response.status(), 400, "HEAD {path}");
            } else {
                assert_error(response, 400, "NAME_INVALID").await;
            }
        }
    }
    // A valid name she may not use is still refused.
    let response = alice.delete("/v2/other/app/manifests/latest").await;
    assert_error(response, 403, "DENIED").await;
    registry.registry.server.stop().await;
}

common::on_each_store_pair!(anonymous_pulls_public_repositories_only);
async fn anonymous_pulls_public_repositories_only(stores: StorePair) {
    let registry = start_auth_registry(stores).await;
    registry.add_user("root", PASSWORD, true).await;
    let images = seed(&registry, &["pub/app", "private/app"], &[]).await;
    registry.make_public("pub/app").await;

    let public = registry.client(None, &["repository:pub/app:pull"]).await;
    let pulled = expect_status(public.get("/v2/pub/app/manifests/latest").await, 200).await;
    assert_eq!(
        pulled.bytes().await.unwrap(),
        images["pub/app"].manifest.content
    );
    expect_status(public.get("/v2/pub/app/tags/list").await, 200).await;
    // Anonymous push to a public repository is still refused.
    let data = random_bytes(10);
    assert_eq!(
        public
            .post_blob("pub/app", &data, &sha256(&data))
            .await
            .status(),
        401
    );

    let private = registry
        .client(None, &["repository:private/app:pull"])
        .await;
    assert_eq!(
        claims(&registry.token(None, &["repository:private/app:pull"]).await)["access"],
        json!([])
    );
    let response = private.get("/v2/private/app/manifests/latest").await;
    assert_eq!(response.status(), 401);
    let response = private
        .get(&format!(
            "/v2/private/app/blobs/{}",
            images["private/app"].layers[0].digest
        ))
        .await;
    assert_eq!(response.status(), 401);

    // Made private again: new anonymous tokens no longer carry it.
    admin::set_public(registry.store.as_ref(), "pub/app", false)
        .await
        .unwrap();
    let token = registry.token(None, &["repository:pub/app:pull"]).await;
    assert_eq!(claims(&token)["access"], json!([]));
    registry.registry.server.stop().await;
}

async fn catalog_pages(client: &Oci, n: usize) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut location = format!("/v2/_catalog?n={n}");
    loop {
        let response = expect_status(client.get(&location).await, 200).await;
        let link = opt_header(&response, "link");
        let body: Value = response.json().await.unwrap();
        pages.push(
            body["repositories"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap().to_owned())
                .collect(),
        );
        match link {
            Some(link) => location = next_link(&link),
            None => return pages,
        }
    }
}

common::on_each_store_pair!(catalog_lists_only_what_the_caller_may_pull);
async fn catalog_lists_only_what_the_caller_may_pull(stores: StorePair) {
    let registry = start_auth_registry(stores).await;
    registry.add_user("root", PASSWORD, true).await;
    registry.add_user("alice", PASSWORD, false).await;
    registry.add_user("pusher", PASSWORD, false).await;
    let repos = ["a/1", "a/2", "b/1", "c/1", "c/2", "c/3", "d/1", "pub/x"];
    seed(&registry, &repos, &[]).await;
    registry.grant("alice", "a/*", "pull").await;
    registry.grant("alice", "c/2", "pull").await;
    registry.grant("alice", "c/3", "pull").await;
    registry.grant("alice", "d/*", "push").await;
    registry.grant("pusher", "*", "push").await;
    registry.make_public("pub/*").await;

    let alice = registry
        .client(Some(("alice", PASSWORD)), &["registry:catalog:*"])
        .await;
    assert_eq!(
        claims(
            &registry
                .token(Some(("alice", PASSWORD)), &["registry:catalog:*"])
                .await
        )["access"],
        json!([{"type": "registry", "name": "catalog", "actions": ["*"]}])
    );
    // Filtered in the query: every page but the last holds exactly n names.
    assert_eq!(
        catalog_pages(&alice, 2).await,
        vec![vec!["a/1", "a/2"], vec!["c/2", "c/3"], vec!["pub/x"],]
    );
    let anonymous = registry.client(None, &["registry:catalog:*"]).await;
    assert_eq!(catalog_pages(&anonymous, 2).await, vec![vec!["pub/x"]]);
    let pusher = registry.client(Some(("pusher", PASSWORD)), &[]).await;
    assert_eq!(catalog_pages(&pusher, 5).await, vec![vec!["pub/x"]]);
    let root = registry.client(Some(("root", PASSWORD)), &[]).await;
    let all: Vec<String> = catalog_pages(&root, 3).await.concat();
    assert_eq!(all, repos);
    registry.registry.server.stop().await;
}

common::on_each_store_pair!(mount_needs_pull_on_the_source);
async fn mount_needs_pull_on_the_source(stores: StorePair) {
    let registry = start_auth_registry(stores).await;
    registry.add_user("root", PASSWORD, true).await;
    registry.add_user("alice", PASSWORD, false).await;
    let images = seed(&registry, &["secret/app", "team/base"], &[]).await;
    registry.grant("alice", "team/*", "pull,push").await;
    let client = registry
        .client(
            Some(("alice", PASSWORD)),
            &[
                "repository:team/new:pull,push",
                "repository:secret/app:pull",
                "repository:team/base:pull",
            ],
        )
        .await;
    let mount = |digest: &str, from: &str| {
        client.with_query(
            "/v2/team/new/blobs/uploads/",
            &[("mount", digest), ("from", from)],
        )
    };
    // From a repository she may not read: a plain upload session, as if it were absent.
    let secret = &images["secret/app"].layers[0].digest;
    let response = client
        .http
        .post(mount(secret, "secret/app"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert!(header(&response, "location").contains("/blobs/uploads/"));
    assert_eq!(
        client
            .head(&format!("/v2/team/new/blobs/{secret}"))
            .await
            .status(),
        404,
        "nothing was mounted"
    );
    // From one she may read: mounted.
    let base = &images["team/base"].layers[0].digest;
    let response = client
        .http
        .post(mount(base, "team/base"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    expect_status(
        client.head(&format!("/v2/team/new/blobs/{base}")).await,
        200,
    )
    .await;
    registry.registry.server.stop().await;
}

common::on_each_store_pair!(referrers_obey_pull_rights);
async fn referrers_obey_pull_rights(stores: StorePair) {
    let registry = start_auth_registry(stores).await;
    registry.add_user("root", PASSWORD, true).await;
    registry.add_user("bob", PASSWORD, false).await;
    let images = seed(&registry, &["team/app"], &[]).await;
    let digest = &images["team/app"].manifest.digest;
    let path = format!("/v2/team/app/referrers/{digest}");
    let bob = registry
        .client(Some(("bob", PASSWORD)), &["repository:team/app:pull"])
        .await;
    assert_error(bob.get(&path).await, 403, "DENIED").await;
    registry.grant("bob", "team/app", "pull").await;
    let bob = registry
        .client(Some(("bob", PASSWORD)), &["repository:team/app:pull"])
        .await;
    let index: Value = expect_status(bob.get(&path).await, 200)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(index["manifests"], json!([]));
    registry.registry.server.stop().await;
}

common::on_each_store_pair!(robot_tokens_are_limited_and_die_with_their_user);
async fn robot_tokens_are_limited_and_die_with_their_user(stores: StorePair) {
    let registry = start_auth_registry(stores).await;
    registry.add_user("ci", PASSWORD, false).await;
    registry.grant("ci", "team/*", "pull,push,delete").await;
    let robot = registry
        .robot_token(
            "ci",
            &["repository:team/app:pull,push"],
            Duration::from_secs(3600),
        )
        .await;
    assert!(!robot.contains(PASSWORD));

    let token = registry
        .token(
            Some(("ci", &robot)),
            &[
                "repository:team/app:pull,push,delete",
                "repository:team/other:pull",
            ],
        )
        .await;
    // The user's rights, cut down to the robot token's scopes.
    assert_eq!(
        claims(&token)["access"],
        json!([{"type": "repository", "name": "team/app", "actions": ["pull", "push"]}])
    );
    bearer_client(registry.base(), &token)
        .push_image("team/app", Some("ci"), 1)
        .await;

    // The catalog lists what the user may pull within the robot's scopes, page by page:
    // names outside them, even a whole read's worth, do not cut a page short.
    let owner = registry
        .client(
            Some(("ci", PASSWORD)),
            &[
                "repository:team/a:push,pull",
                "repository:team/aa:push,pull",
                "repository:team/b:push,pull",
            ],
        )
        .await;
    for repo in ["team/a", "team/aa", "team/b"] {
        owner.push_image(repo, Some("1"), 1).await;
    }
    let everything = registry
        .client(Some(("ci", PASSWORD)), &["registry:catalog:*"])
        .await;
    let listed: Value = everything.get("/v2/_catalog").await.json().await.unwrap();
    assert_eq!(
        listed["repositories"],
        json!(["team/a", "team/aa", "team/app", "team/b"])
    );
    let limited = registry
        .client(Some(("ci", &robot)), &["registry:catalog:*"])
        .await;
    for query in ["?n=1", ""] {
        let page = limited.get(&format!("/v2/_catalog{query}")).await;
        assert!(!page.headers().contains_key("link"), "nothing more to see");
        let page: Value = page.json().await.unwrap();
        assert_eq!(page["repositories"], json!(["team/app"]), "{query}");
    }

    // No refresh token for robots, even when asked.
    let body: Value = registry
        .token_response(Some(("ci", &robot)), &[], &[("offline_token", "true")])
        .await
        .json()
        .await
        .unwrap();
    assert!(body.get("refresh_token").is_none(), "{body}");
    // Another user's name with the robot token fails; so does a mangled token.
    registry.add_user("other", PASSWORD, false).await;
    let response = registry
        .token_response(Some(("other", &robot)), &[], &[])
        .await;
    assert_eq!(response.status(), 401);
    let mangled = format!("{}x", robot);
    let response = registry
        .token_response(Some(("ci", &mangled)), &[], &[])
        .await;
    assert_eq!(response.status(), 401);

    // An expired robot token is refused.
    let expired = registry
        .robot_token("ci", &["repository:team/app:pull"], Duration::from_secs(0))
        .await;
    let response = registry
        .token_response(Some(("ci", &expired)), &[], &[])
        .await;
    assert_eq!(response.status(), 401);

    admin::remove_user(registry.store.as_ref(), "ci")
        .await
        .unwrap();
    let response = registry
        .token_response(Some(("ci", &robot)), &[], &[])
        .await;
    assert_eq!(response.status(), 401, "revoked with its user");
    registry.registry.server.stop().await;
}

common::on_each_store_pair!(revoked_permissions_are_not_granted_again);
async fn revoked_permissions_are_not_granted_again(stores: StorePair) {
    let registry = start_auth_registry(stores).await;
    registry.add_user("alice", PASSWORD, false).await;
    registry.grant("alice", "team/*", "pull,push").await;
    admin::revoke(registry.store.as_ref(), "alice", "team/*", Some("push"))
        .await
        .unwrap();
    let token = registry
        .token(
            Some(("alice", PASSWORD)),
            &["repository:team/app:pull,push"],
        )
        .await;
    assert_eq!(
        claims(&token)["access"],
        json!([{"type": "repository", "name": "team/app", "actions": ["pull"]}])
    );
    admin::revoke(registry.store.as_ref(), "alice", "team/*", None)
        .await
        .unwrap();
    let token = registry
        .token(
            Some(("alice", PASSWORD)),
            &["repository:team/app:pull,push"],
        )
        .await;
    assert_eq!(claims(&token)["access"], json!([]));
    assert!(
        admin::revoke(registry.store.as_ref(), "alice", "team/*", None)
            .await
            .is_err()
    );
    registry.registry.server.stop().await;
}
